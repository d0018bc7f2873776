/* LMDB and LevelDB writers (see db_write.h). */
#define _POSIX_C_SOURCE 200809L
#include "data/db_write.h"

#include <errno.h>
#include <leveldb/c.h>
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/dd_error.h"

struct dd_db_writer {
  int is_lmdb;
  char *path;
  MDB_env *env;
  size_t map_size;
  leveldb_t *ldb;
  leveldb_options_t *lopt;
  /* the pending transaction: records back to back as (klen, vlen, key, value) */
  unsigned char *buf;
  size_t used, cap;
};

int dd_db_writer_open(dd_db_writer **out, const char *backend, const char *path, char *err, size_t errlen) {
  *out = NULL;
  int lmdb = !strcmp(backend, "lmdb");
  if (!lmdb && strcmp(backend, "leveldb"))
    return dd_errorf(DD_EINVAL, err, errlen, "unknown database backend \"%s\" (lmdb or leveldb)", backend);
  struct stat st;
  if (stat(path, &st) == 0) return dd_errorf(DD_EIO, err, errlen, "%s: already exists (a new database is written)", path);
  dd_db_writer *w = calloc(1, sizeof *w);
  if (!w || !(w->path = strdup(path))) {
    free(w);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  w->is_lmdb = lmdb;
  int r = 0;
  if (lmdb) {
    int rc;
    w->map_size = (size_t)1 << 26;
    if (mkdir(path, 0755) != 0) {
      r = dd_errorf(DD_EIO, err, errlen, "%s: cannot create the LMDB directory: %s", path, strerror(errno));
    } else if ((rc = mdb_env_create(&w->env)) || (rc = mdb_env_set_mapsize(w->env, w->map_size)) ||
               (rc = mdb_env_open(w->env, path, 0, 0664))) {
      r = dd_errorf(DD_EIO, err, errlen, "%s: cannot create the LMDB: %s", path, mdb_strerror(rc));
    }
  } else {
    char *e = NULL;
    w->lopt = leveldb_options_create();
    /* Caffe's options for a new LevelDB */
    leveldb_options_set_block_size(w->lopt, 65536);
    leveldb_options_set_write_buffer_size(w->lopt, 268435456);
    leveldb_options_set_max_open_files(w->lopt, 100);
    leveldb_options_set_error_if_exists(w->lopt, 1);
    leveldb_options_set_create_if_missing(w->lopt, 1);
    w->ldb = leveldb_open(w->lopt, path, &e);
    if (e) {
      r = dd_errorf(DD_EIO, err, errlen, "%s: cannot create the LevelDB: %s", path, e);
      leveldb_free(e);
    }
  }
  if (r) {
    dd_db_writer_close(w, 1, NULL, 0);
    return r;
  }
  *out = w;
  return 0;
}

int dd_db_writer_put(dd_db_writer *w, const char *key, size_t klen, const void *val, size_t vlen, char *err,
                     size_t errlen) {
  size_t need = 2 * sizeof(size_t) + klen + vlen;
  if (w->used + need > w->cap) {
    size_t cap = w->cap ? w->cap : 1 << 20;
    while (cap < w->used + need) cap *= 2;
    unsigned char *b = realloc(w->buf, cap);
    if (!b) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory buffering the records of %s", w->path);
    w->buf = b;
    w->cap = cap;
  }
  unsigned char *p = w->buf + w->used;
  memcpy(p, &klen, sizeof klen);
  memcpy(p + sizeof klen, &vlen, sizeof vlen);
  memcpy(p + 2 * sizeof klen, key, klen);
  memcpy(p + 2 * sizeof klen + klen, val, vlen);
  w->used += need;
  return 0;
}

/* One LMDB write of the pending records: 0, MDB_MAP_FULL (aborted) or another LMDB error. */
static int lmdb_write(dd_db_writer *w) {
  MDB_txn *txn;
  MDB_dbi dbi;
  int rc = mdb_txn_begin(w->env, NULL, 0, &txn);
  if (rc) return rc;
  if ((rc = mdb_dbi_open(txn, NULL, 0, &dbi))) goto abort;
  for (size_t off = 0; off < w->used;) {
    size_t kl, vl;
    memcpy(&kl, w->buf + off, sizeof kl);
    memcpy(&vl, w->buf + off + sizeof kl, sizeof vl);
    MDB_val k = {kl, w->buf + off + 2 * sizeof kl}, v = {vl, w->buf + off + 2 * sizeof kl + kl};
    if ((rc = mdb_put(txn, dbi, &k, &v, 0))) goto abort;
    off += 2 * sizeof kl + kl + vl;
  }
  return mdb_txn_commit(txn);
abort:
  mdb_txn_abort(txn);
  return rc;
}

int dd_db_writer_commit(dd_db_writer *w, char *err, size_t errlen) {
  if (w->used == 0) return 0;
  if (w->is_lmdb) {
    int rc;
    while ((rc = lmdb_write(w)) == MDB_MAP_FULL) {
      w->map_size *= 2;
      if ((rc = mdb_env_set_mapsize(w->env, w->map_size))) break;
    }
    if (rc) return dd_errorf(DD_EIO, err, errlen, "%s: LMDB write failed: %s", w->path, mdb_strerror(rc));
  } else {
    leveldb_writebatch_t *b = leveldb_writebatch_create();
    for (size_t off = 0; off < w->used;) {
      size_t kl, vl;
      memcpy(&kl, w->buf + off, sizeof kl);
      memcpy(&vl, w->buf + off + sizeof kl, sizeof vl);
      leveldb_writebatch_put(b, (const char *)w->buf + off + 2 * sizeof kl, kl,
                             (const char *)w->buf + off + 2 * sizeof kl + kl, vl);
      off += 2 * sizeof kl + kl + vl;
    }
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    char *e = NULL;
    leveldb_write(w->ldb, wo, b, &e);
    leveldb_writeoptions_destroy(wo);
    leveldb_writebatch_destroy(b);
    if (e) {
      int r = dd_errorf(DD_EIO, err, errlen, "%s: LevelDB write failed: %s", w->path, e);
      leveldb_free(e);
      return r;
    }
  }
  w->used = 0;
  return 0;
}

int dd_db_writer_close(dd_db_writer *w, int discard, char *err, size_t errlen) {
  if (!w) return 0;
  int r = discard ? 0 : dd_db_writer_commit(w, err, errlen);
  if (w->env) mdb_env_close(w->env);
  if (w->ldb) leveldb_close(w->ldb);
  if (w->lopt) leveldb_options_destroy(w->lopt);
  free(w->buf);
  free(w->path);
  free(w);
  return r;
}
