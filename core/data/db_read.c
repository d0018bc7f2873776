/* LMDB and LevelDB cursors (see db_read.h). */
#define _POSIX_C_SOURCE 200809L
#include "data/db_read.h"

#include <errno.h>
#include <leveldb/c.h>
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/dd_error.h"

struct dd_db_cursor {
  int is_lmdb;
  char *path;
  MDB_env *env;
  MDB_txn *txn;
  MDB_cursor *cur;
  MDB_val k, v;
  leveldb_t *ldb;
  leveldb_options_t *lopt;
  leveldb_readoptions_t *ropt;
  leveldb_iterator_t *it;
};

/* Opens the LMDB environment read-only; where the lock file cannot be written (a read-only
 * directory), again without locking, as Caffe does. */
static int lmdb_env(dd_db_cursor *c, char *err, size_t errlen) {
  int rc = 0;
  for (int attempt = 0; attempt < 2; attempt++) {
    if ((rc = mdb_env_create(&c->env))) break;
    rc = mdb_env_open(c->env, c->path, MDB_RDONLY | MDB_NOTLS | (attempt ? MDB_NOLOCK : 0), 0664);
    if (!rc) return 0;
    mdb_env_close(c->env);
    c->env = NULL;
    if (rc != EACCES) break;
  }
  if (rc == ENOENT)
    return dd_errorf(DD_ENOTFOUND, err, errlen, "%s: no LMDB here (data.mdb: %s)", c->path, mdb_strerror(rc));
  return dd_errorf(DD_EIO, err, errlen, "%s: cannot open the LMDB: %s", c->path, mdb_strerror(rc));
}

static int lmdb_open(dd_db_cursor *c, char *err, size_t errlen) {
  int r = lmdb_env(c, err, errlen), rc;
  if (r) return r;
  MDB_dbi dbi;
  if ((rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &c->txn)) || (rc = mdb_dbi_open(c->txn, NULL, 0, &dbi)) ||
      (rc = mdb_cursor_open(c->txn, dbi, &c->cur)))
    return dd_errorf(DD_EIO, err, errlen, "%s: cannot read the LMDB: %s", c->path, mdb_strerror(rc));
  return dd_db_cursor_first(c, err, errlen);
}

static int leveldb_open_(dd_db_cursor *c, char *err, size_t errlen) {
  char *e = NULL;
  c->lopt = leveldb_options_create();
  leveldb_options_set_create_if_missing(c->lopt, 0);
  leveldb_options_set_max_open_files(c->lopt, 100);
  c->ldb = leveldb_open(c->lopt, c->path, &e);
  if (e) {
    int code = strstr(e, "does not exist") ? DD_ENOTFOUND : DD_EIO;
    int r = dd_errorf(code, err, errlen, "%s: cannot open the LevelDB: %s", c->path, e);
    leveldb_free(e);
    return r;
  }
  c->ropt = leveldb_readoptions_create();
  leveldb_readoptions_set_fill_cache(c->ropt, 0);
  c->it = leveldb_create_iterator(c->ldb, c->ropt);
  return dd_db_cursor_first(c, err, errlen);
}

int dd_db_cursor_open(dd_db_cursor **out, const char *backend, const char *path, char *err, size_t errlen) {
  *out = NULL;
  int lmdb = !strcmp(backend, "lmdb");
  if (!lmdb && strcmp(backend, "leveldb"))
    return dd_errorf(DD_EINVAL, err, errlen, "unknown database backend \"%s\" (lmdb or leveldb)", backend);
  struct stat st;
  if (stat(path, &st) != 0)
    return dd_errorf(errno == ENOENT ? DD_ENOTFOUND : DD_EIO, err, errlen, "%s: cannot open the %s: %s", path,
                     lmdb ? "LMDB" : "LevelDB", strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return dd_errorf(DD_EIO, err, errlen, "%s: not a directory (an %s is a directory)", path, lmdb ? "LMDB" : "LevelDB");
  dd_db_cursor *c = calloc(1, sizeof *c);
  if (!c || !(c->path = strdup(path))) {
    free(c);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  c->is_lmdb = lmdb;
  int r = lmdb ? lmdb_open(c, err, errlen) : leveldb_open_(c, err, errlen);
  if (r) {
    dd_db_cursor_close(c);
    return r;
  }
  *out = c;
  return 0;
}

void dd_db_cursor_get(const dd_db_cursor *c, const uint8_t **key, size_t *klen, const uint8_t **val, size_t *vlen) {
  if (c->is_lmdb) {
    *key = c->k.mv_data;
    *klen = c->k.mv_size;
    *val = c->v.mv_data;
    *vlen = c->v.mv_size;
  } else {
    *key = (const uint8_t *)leveldb_iter_key(c->it, klen);
    *val = (const uint8_t *)leveldb_iter_value(c->it, vlen);
  }
}

/* The iterator's error after it stopped being valid (0: it reached the end). */
static int leveldb_iter_fail(dd_db_cursor *c, char *err, size_t errlen) {
  char *e = NULL;
  leveldb_iter_get_error(c->it, &e);
  if (!e) return 0;
  int r = dd_errorf(DD_EIO, err, errlen, "%s: reading the LevelDB: %s", c->path, e);
  leveldb_free(e);
  return r;
}

int dd_db_cursor_first(dd_db_cursor *c, char *err, size_t errlen) {
  if (c->is_lmdb) {
    int rc = mdb_cursor_get(c->cur, &c->k, &c->v, MDB_FIRST);
    if (rc == MDB_NOTFOUND) return dd_errorf(DD_ECORRUPT, err, errlen, "%s: the database holds no records", c->path);
    if (rc) return dd_errorf(DD_EIO, err, errlen, "%s: reading the LMDB: %s", c->path, mdb_strerror(rc));
    return 0;
  }
  leveldb_iter_seek_to_first(c->it);
  if (leveldb_iter_valid(c->it)) return 0;
  int r = leveldb_iter_fail(c, err, errlen);
  return r ? r : dd_errorf(DD_ECORRUPT, err, errlen, "%s: the database holds no records", c->path);
}

int dd_db_cursor_next(dd_db_cursor *c, int *wrapped, char *err, size_t errlen) {
  if (wrapped) *wrapped = 0;
  if (c->is_lmdb) {
    int rc = mdb_cursor_get(c->cur, &c->k, &c->v, MDB_NEXT);
    if (!rc) return 0;
    if (rc != MDB_NOTFOUND) return dd_errorf(DD_EIO, err, errlen, "%s: reading the LMDB: %s", c->path, mdb_strerror(rc));
  } else {
    leveldb_iter_next(c->it);
    if (leveldb_iter_valid(c->it)) return 0;
    int r = leveldb_iter_fail(c, err, errlen);
    if (r) return r;
  }
  if (wrapped) *wrapped = 1;
  return dd_db_cursor_first(c, err, errlen);
}

int dd_db_cursor_count(dd_db_cursor *c, int64_t *n, char *err, size_t errlen) {
  *n = 0;
  if (c->is_lmdb) {
    MDB_stat st;
    int rc = mdb_env_stat(c->env, &st);
    if (rc) return dd_errorf(DD_EIO, err, errlen, "%s: reading the LMDB: %s", c->path, mdb_strerror(rc));
    *n = (int64_t)st.ms_entries;
    return 0;
  }
  leveldb_iterator_t *it = leveldb_create_iterator(c->ldb, c->ropt);
  for (leveldb_iter_seek_to_first(it); leveldb_iter_valid(it); leveldb_iter_next(it)) (*n)++;
  char *e = NULL;
  leveldb_iter_get_error(it, &e);
  leveldb_iter_destroy(it);
  if (!e) return 0;
  int r = dd_errorf(DD_EIO, err, errlen, "%s: reading the LevelDB: %s", c->path, e);
  leveldb_free(e);
  return r;
}

int dd_db_cursor_seek(dd_db_cursor *c, const uint8_t *key, size_t klen, char *err, size_t errlen) {
  if (c->is_lmdb) {
    c->k.mv_data = (void *)key;
    c->k.mv_size = klen;
    int rc = mdb_cursor_get(c->cur, &c->k, &c->v, MDB_SET_KEY);
    if (rc == MDB_NOTFOUND) return dd_errorf(DD_ENOTFOUND, err, errlen, "%s: a record went missing", c->path);
    if (rc) return dd_errorf(DD_EIO, err, errlen, "%s: reading the LMDB: %s", c->path, mdb_strerror(rc));
    return 0;
  }
  leveldb_iter_seek(c->it, (const char *)key, klen);
  size_t kl = 0;
  const char *k = leveldb_iter_valid(c->it) ? leveldb_iter_key(c->it, &kl) : NULL;
  if (k && kl == klen && !memcmp(k, key, klen)) return 0;
  int r = leveldb_iter_fail(c, err, errlen);
  return r ? r : dd_errorf(DD_ENOTFOUND, err, errlen, "%s: a record went missing", c->path);
}

const char *dd_db_cursor_path(const dd_db_cursor *c) { return c->path; }

void dd_db_cursor_close(dd_db_cursor *c) {
  if (!c) return;
  if (c->cur) mdb_cursor_close(c->cur);
  if (c->txn) mdb_txn_abort(c->txn);
  if (c->env) mdb_env_close(c->env);
  if (c->it) leveldb_iter_destroy(c->it);
  if (c->ropt) leveldb_readoptions_destroy(c->ropt);
  if (c->ldb) leveldb_close(c->ldb);
  if (c->lopt) leveldb_options_destroy(c->lopt);
  free(c->path);
  free(c);
}
