/* The backfill of a resumed attempt (service/backfill.h): metrics.jsonl's train records read into
 * one slot per missing iteration, then sent as ITEM_BACKFILL items. Runs on the job's thread before
 * training starts; it allocates (a slot per iteration of the gap), as the job's setup does. */
#define _GNU_SOURCE
#include "service/backfill.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "common/keys.h"
#include "service/ring.h"

#define BF_MAX_PAIRS 40 /* fields of one record (the fixed ones and up to 16 loss terms, with room) */

/* Fields of a train record that are not metrics-entry fields, or are written in a fixed place. */
static int skipped_key(const char *k) {
  static const char *const keys[] = {"type", "iter", "max_iter", "epoch", "loss", "lr", "img_per_s", "data_wait_ms",
                                     "eta_s", "data_errors", "time", "elapsed_s"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    if (!strcmp(k, keys[i])) return 1;
  return 0;
}

typedef struct {
  char key[BF_MAX_PAIRS][96];
  char val[BF_MAX_PAIRS][64];
  int n;
} flat_obj;

/* Parses one line of metrics.jsonl: a flat JSON object of numbers, strings and null, as
 * core/train/distill.c writes it. 0 on success (values kept as their text; null becomes "nan",
 * as the live entries write a non-finite number), -1 for anything else. */
static int parse_flat(const char *s, flat_obj *o) {
  o->n = 0;
  if (*s++ != '{') return -1;
  for (;;) {
    if (*s == '}') return 0;
    if (*s++ != '"' || o->n >= BF_MAX_PAIRS) return -1;
    size_t kl = 0;
    while (*s && *s != '"') {
      if (*s == '\\' || kl + 1 >= sizeof o->key[0]) return -1;
      o->key[o->n][kl++] = *s++;
    }
    o->key[o->n][kl] = '\0';
    if (*s++ != '"' || *s++ != ':') return -1;
    size_t vl = 0;
    if (*s == '"') { /* a string: kept without its quotes (no escapes in the fields read here) */
      s++;
      while (*s && *s != '"') {
        if (*s == '\\') s++;
        if (!*s) return -1;
        if (vl + 1 < sizeof o->val[0]) o->val[o->n][vl++] = *s;
        s++;
      }
      if (*s++ != '"') return -1;
    } else {
      while (*s && *s != ',' && *s != '}') {
        if (vl + 1 >= sizeof o->val[0]) return -1;
        o->val[o->n][vl++] = *s++;
      }
      if (!vl) return -1;
    }
    o->val[o->n][vl] = '\0';
    if (!strcmp(o->val[o->n], "null")) snprintf(o->val[o->n], sizeof o->val[0], "nan");
    o->n++;
    if (*s == ',') s++;
    else if (*s != '}') return -1;
  }
}

static const char *obj_get(const flat_obj *o, const char *k) {
  for (int i = 0; i < o->n; i++)
    if (!strcmp(o->key[i], k)) return o->val[i];
  return NULL;
}

/* One record as the metrics entry's field/value strings, one after another, NUL-terminated (the
 * order of fill_progress: iter epoch lr loss, the loss terms, img_per_s data_wait_ms), then an
 * empty string. NULL when the line is not a train record. Ownership passes to the caller. */
static char *record_of(const flat_obj *o) {
  const char *type = obj_get(o, "type");
  if (!type || strcmp(type, "train")) return NULL;
  static const char *const head[] = {"iter", "epoch", "lr", "loss"}, *const tail[] = {"img_per_s", "data_wait_ms"};
  size_t len = 1;
  for (int i = 0; i < o->n; i++) len += strlen(o->key[i]) + strlen(o->val[i]) + 2;
  char *rec = malloc(len), *p = rec;
  if (!rec) return NULL;
#define PUT(k, v) (p = stpcpy(p, k) + 1, p = stpcpy(p, v) + 1)
  for (size_t i = 0; i < 4; i++) {
    const char *v = obj_get(o, head[i]);
    if (v) PUT(head[i], v);
  }
  for (int i = 0; i < o->n; i++)
    if (!skipped_key(o->key[i])) PUT(o->key[i], o->val[i]);
  for (size_t i = 0; i < 2; i++) {
    const char *v = obj_get(o, tail[i]);
    if (v) PUT(tail[i], v);
  }
#undef PUT
  *p = '\0';
  return rec;
}

/* Reads the train records with from <= iter <= to into slots[iter - from] (the last of an iter's
 * records wins). Only complete lines count: another worker may be appending to the file. */
static int read_records(FILE *f, int from, int to, char **slots, int *found) {
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  flat_obj *o = malloc(sizeof *o);
  if (!o) return DD_ENOMEM;
  while ((n = getline(&line, &cap, f)) > 0) {
    if (line[n - 1] != '\n') break; /* a line still being written */
    line[n - 1] = '\0';
    if (strncmp(line, "{\"type\":\"train\"", 15) || parse_flat(line, o)) continue;
    const char *iv = obj_get(o, "iter");
    char *end;
    long it = iv ? strtol(iv, &end, 10) : -1;
    if (!iv || *end || it < from || it > to) continue;
    char *rec = record_of(o);
    if (!rec) continue;
    if (!slots[it - from]) (*found)++;
    free(slots[it - from]);
    slots[it - from] = rec;
  }
  free(line);
  free(o);
  return 0;
}

/* The strings of a record plus the fields every backfilled entry carries. */
static int record_args(const char *rec, const char **args, int max) {
  int n = 0;
  for (const char *p = rec; *p && n < max; p += strlen(p) + 1) args[n++] = p;
  return n;
}

/* Sends the records of `slots` in ITEM_BACKFILL items, as many records to an item as fit. */
static void send_records(job_t *j, char **slots, int n_slots, backfill_result *res) {
  daemon_t *d = j->d;
  char attempt[16];
  snprintf(attempt, sizeof attempt, "%d", j->attempt - 1);
  const char *worker = j->prev_worker[0] ? j->prev_worker : "?";
  int k = 0;
  while (k < n_slots) {
    while (k < n_slots && !slots[k]) k++;
    if (k >= n_slots) break;
    ring_item *it = ring_reserve(&d->ring, PRIO_METRICS);
    if (!it) { /* the ring is full (Redis is slow or away): wait, unless the job is stopping */
      if (atomic_load(&j->stop) != STOP_NONE) return;
      usleep(20 * 1000);
      continue;
    }
    item_b b;
    ib_begin(&b, it, ITEM_BACKFILL, (int)(j - d->slots));
    int in_item = 0;
    for (; k < n_slots; k++) {
      if (!slots[k]) continue;
      const char *args[CMD_MAX_ARGS];
      int n = record_args(slots[k], args, CMD_MAX_ARGS - 8);
      const char *extra[] = {"worker", worker, "attempt", attempt, "backfilled", "1", "backfilled_by", d->worker};
      size_t bytes = 0;
      for (int a = 0; a < n; a++) bytes += strlen(args[a]) + 1;
      for (int a = 0; a < 8; a++) bytes += strlen(extra[a]) + 1;
      if (n < 2 || strcmp(args[0], "iter") || bytes > ITEM_BYTES) continue; /* cannot be sent: left out */
      if (it->n_cmds >= ITEM_MAX_CMDS || it->used + bytes > ITEM_BYTES) break; /* the next item */
      ib_cmd(&b);
      for (int a = 0; a < n; a++) ib_arg(&b, args[a]);
      for (int a = 0; a < 8; a++) ib_arg(&b, extra[a]);
      in_item++;
    }
    if (!in_item || !b.ok) {
      ring_commit(d, &d->ring, 0);
      if (!b.ok) return;
      continue;
    }
    it->seq = ++j->next_seq;
    ring_commit(d, &d->ring, 1);
    res->sent += in_item;
    res->items++;
  }
}

int backfill_run(job_t *j, const char *output_dir, int resumed_from, backfill_result *res, char *err, size_t errlen) {
  daemon_t *d = j->d;
  memset(res, 0, sizeof *res);
  res->from = j->backfill_after + 1 > 0 ? j->backfill_after + 1 : 0;
  res->to = resumed_from - 1;
  if (res->to - res->from + 1 > DD_METRICS_MAXLEN) res->from = res->to - DD_METRICS_MAXLEN + 1; /* the stream keeps no more */
  if (res->to < res->from) return 0;
  int dfd = -1;
  int r = dd_paths_open_output(&d->paths, "output_dir", output_dir, &dfd, err, errlen);
  if (r) return r;
  int fd = openat(dfd, "metrics.jsonl", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  int e = errno;
  close(dfd);
  if (fd < 0)
    return dd_errorf(e == ELOOP ? DD_EPERM : DD_EIO, err, errlen, "cannot read %s/metrics.jsonl: %s", output_dir,
                     e == ELOOP ? "a symlink: refused" : strerror(e));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return dd_errorf(DD_EPERM, err, errlen, "%s/metrics.jsonl is not a regular file: refused", output_dir);
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  FILE *f = fdopen(fd, "r");
  if (!f) {
    close(fd);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  int n_slots = res->to - res->from + 1;
  char **slots = calloc((size_t)n_slots, sizeof *slots);
  if (!slots) {
    fclose(f);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  r = read_records(f, res->from, res->to, slots, &res->found);
  if (!r && ferror(f)) r = dd_errorf(DD_EIO, err, errlen, "reading %s/metrics.jsonl: %s", output_dir, strerror(errno));
  else if (r) dd_errorf(r, err, errlen, "out of memory");
  fclose(f);
  if (!r) send_records(j, slots, n_slots, res);
  for (int i = 0; i < n_slots; i++) free(slots[i]);
  free(slots);
  return r;
}
