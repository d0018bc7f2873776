/* The ImageData pipeline (see data.h).
 *
 * Workers take (batch, slot) tasks in stream order from one cursor, under one mutex, and fill the
 * ring slot of that batch; a slot is reused only after the trainer has moved past it. The last
 * worker to finish a batch marks the slot ready and wakes the trainer. Decoding and transforming
 * happen outside the lock. */
#define _POSIX_C_SOURCE 200809L
#include "data/data.h"
#include "data/db_data.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "format/caffe_io.h"
#include "base/dd_error.h"
#include "format/fileio.h"
#include "data/imgdec.h"
#include "base/rng.h"
#include "data/transform.h"

#define PERM_CACHE 4
#define MAX_EXAMPLES 3

typedef struct {
  char *path; /* root_folder + list path */
  int label;
} entry;

typedef struct {
  float *data, *labels;
  int64_t batch; /* the batch it holds, -1 when free */
  int pending;   /* samples still being decoded */
  int ready;
} slot;

typedef struct {
  struct dd_data *d;
  int index;
} worker;

struct dd_data {
  dd_data_config cfg;
  dd_db_data *db; /* a Data layer's source: everything below is unused */
  entry *entries;
  int64_t n;
  int shuffle;
  int64_t skip;
  dd_transform tf;
  float *mean_image;
  size_t sample_floats;

  pthread_mutex_t mu;
  pthread_cond_t work_cv, ready_cv;
  pthread_t *tids;
  worker *workers;
  int n_threads, stop;

  slot *slots;
  int depth;
  int64_t consume_batch;              /* the next batch dd_data_next hands out */
  int64_t held_batch;                 /* the batch the trainer holds now (-1: none) */
  int64_t dispatch_batch;             /* the next task */
  int dispatch_sample;

  struct {
    int64_t epoch;
    int64_t *perm;
  } perms[PERM_CACHE];
  int perm_next;

  unsigned char *bad, *tried; /* per entry */
  int64_t errors, attempts;
  char examples[MAX_EXAMPLES][512];
  int n_examples;
  int fatal;
  char fatal_msg[1536];
};

static void logf_(struct dd_data *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct dd_data *d, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (d->cfg.log)
    d->cfg.log(d->cfg.log_ctx, msg);
  else
    fprintf(stderr, "distilld: %s\n", msg);
}

/* ---- the list file ----------------------------------------------------------------------- */

static int parse_list(struct dd_data *d, const char *path, const char *root, char *err, size_t errlen) {
  char *buf;
  size_t len;
  const char *field = d->cfg.field ? d->cfg.field : "ImageData";
  char what[512];
  snprintf(what, sizeof what, "%s image_data_param.source", field);
  int r = dd_path_check(d->cfg.policy, DD_PATH_READ, what, path, err, errlen);
  if (!r && root && root[0]) {
    snprintf(what, sizeof what, "%s image_data_param.root_folder", field);
    r = dd_path_check(d->cfg.policy, DD_PATH_READ, what, root, err, errlen);
  }
  if (r) return r;
  /* read once, from the descriptor the policy opened (a FIFO or device is refused, never waited on) */
  int fd;
  if ((r = dd_path_open(d->cfg.policy, DD_PATH_READ, 1, NULL, path, &fd, err, errlen))) return r;
  r = dd_read_fd(&buf, &len, fd, path, err, errlen);
  close(fd);
  if (r) return r;
  size_t cap = 1024;
  d->entries = malloc(cap * sizeof *d->entries);
  if (!d->entries) {
    free(buf);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory reading %s", path);
  }
  size_t root_len = root ? strlen(root) : 0;
  int line = 0;
  char *p = buf, *end = buf + len;
  while (p < end) {
    line++;
    char *eol = memchr(p, '\n', (size_t)(end - p));
    char *le = eol ? eol : end;
    char *next = eol ? eol + 1 : end;
    while (le > p && (le[-1] == '\r' || le[-1] == ' ' || le[-1] == '\t')) le--;
    if (le == p) { /* blank line */
      p = next;
      continue;
    }
    char *sp = le;
    while (sp > p && sp[-1] != ' ' && sp[-1] != '\t') sp--;
    if (sp == p) {
      r = dd_errorf(DD_EPARSE, err, errlen, "%s:%d: expected \"PATH LABEL\", found \"%.*s\"", path, line,
                    (int)(le - p > 80 ? 80 : le - p), p);
      goto fail;
    }
    char *lab_end;
    errno = 0;
    long lab = strtol(sp, &lab_end, 10);
    if (lab_end != le || errno || lab < 0 || lab > 1000000000L) {
      r = dd_errorf(DD_EPARSE, err, errlen, "%s:%d: the label \"%.*s\" is not a non-negative integer", path, line,
                    (int)(le - sp > 40 ? 40 : le - sp), sp);
      goto fail;
    }
    char *pe = sp;
    while (pe > p && (pe[-1] == ' ' || pe[-1] == '\t')) pe--;
    if ((size_t)d->n == cap) {
      cap *= 2;
      entry *ne = realloc(d->entries, cap * sizeof *ne);
      if (!ne) {
        r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory reading %s", path);
        goto fail;
      }
      d->entries = ne;
    }
    size_t plen = (size_t)(pe - p);
    char *full = malloc(root_len + plen + 1);
    if (!full) {
      r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory reading %s", path);
      goto fail;
    }
    if (root_len) memcpy(full, root, root_len);
    memcpy(full + root_len, p, plen);
    full[root_len + plen] = '\0';
    if (d->cfg.policy) {
      snprintf(what, sizeof what, "%s (%s:%d)", field, path, line);
      if ((r = dd_path_check(d->cfg.policy, DD_PATH_READ, what, full, err, errlen))) {
        free(full);
        goto fail;
      }
    }
    d->entries[d->n++] = (entry){full, (int)lab};
    p = next;
  }
  free(buf);
  if (d->n == 0) return dd_errorf(DD_EPARSE, err, errlen, "%s: the list is empty (no \"PATH LABEL\" lines)", path);
  return 0;
fail:
  free(buf);
  return r;
}

/* ---- ordering ------------------------------------------------------------------------------ */

/* The file index at position i of `epoch` (caller holds mu). NULL perm means list order. */
static const int64_t *epoch_perm(struct dd_data *d, int64_t epoch) {
  if (!d->shuffle) return NULL;
  for (int k = 0; k < PERM_CACHE; k++)
    if (d->perms[k].perm && d->perms[k].epoch == epoch) return d->perms[k].perm;
  int k = d->perm_next;
  d->perm_next = (d->perm_next + 1) % PERM_CACHE;
  int64_t *perm = d->perms[k].perm;
  if (!perm) perm = d->perms[k].perm = malloc((size_t)d->n * sizeof *perm);
  if (!perm) return NULL;
  d->perms[k].epoch = epoch;
  for (int64_t i = 0; i < d->n; i++) perm[i] = i;
  dd_rng r;
  dd_rng_seed(&r, dd_hash64(dd_seed_derive(d->cfg.seed, "shuffle"), (uint64_t)epoch));
  for (int64_t i = d->n - 1; i > 0; i--) {
    int64_t j = (int64_t)(dd_rng_next(&r) % (uint64_t)(i + 1));
    int64_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  return perm;
}

/* ---- workers -------------------------------------------------------------------------------- */

typedef struct {
  dd_image img;
  uint8_t *file;
  size_t file_cap;
  void *scratch;
  size_t scratch_cap;
} worker_buf;

/* Reads a whole file into the worker's buffer, opened through the policy (thread-safe; a FIFO or
 * device is refused without blocking). */
static int read_into(worker_buf *wb, const dd_path_policy *policy, const char *path, size_t *len, char *err,
                     size_t errlen) {
  int fd;
  int r = dd_path_open(policy, DD_PATH_READ, 1, NULL, path, &fd, err, errlen);
  if (r) return r;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return dd_errorf(DD_EIO, err, errlen, "cannot stat: %s", strerror(errno));
  }
  size_t want = (size_t)st.st_size;
  if (want > wb->file_cap) {
    uint8_t *nb = realloc(wb->file, want + 1);
    if (!nb) {
      close(fd);
      return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
    }
    wb->file = nb;
    wb->file_cap = want + 1;
  }
  size_t got = 0;
  while (got < want) {
    ssize_t n = read(fd, wb->file + got, want - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(fd);
  *len = got;
  return 0;
}

/* Decodes and transforms file `idx` into `out`. */
static int load_sample(struct dd_data *d, worker_buf *wb, int64_t idx, float *out, dd_rng *rng, char *err,
                       size_t errlen) {
  size_t len = 0;
  int r = read_into(wb, d->cfg.policy, d->entries[idx].path, &len, err, errlen);
  if (r) return r;
  if ((r = dd_image_decode(&wb->img, wb->file, len, d->cfg.channels, d->entries[idx].path, err, errlen))) return r;
  size_t need = dd_transform_scratch_size(&d->tf, wb->img.w, wb->img.h);
  if (need > wb->scratch_cap) {
    free(wb->scratch);
    wb->scratch = malloc(need);
    wb->scratch_cap = wb->scratch ? need : 0;
    if (!wb->scratch) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  return dd_transform_apply(&d->tf, out, wb->img.px, wb->img.w, wb->img.h, rng, wb->scratch, err, errlen);
}

/* errors > fraction * attempts, on counts: the fraction is taken in parts per million (0.01f is
 * 0.0099999998 as a float, which made 1 error in 100 "more than 0.01"). */
static int too_many_errors(int64_t errors, int64_t attempts, float fraction) {
  if (!(fraction >= 0)) fraction = 0;
  if (fraction >= 1) return 0;
  int64_t ppm = (int64_t)((double)fraction * 1e6 + 0.5), lhs, rhs; /* 0 to 1000000 */
  if (__builtin_mul_overflow(errors, (int64_t)1000000, &lhs) || __builtin_mul_overflow(ppm, attempts, &rhs))
    return (double)errors > (double)ppm * 1e-6 * (double)attempts; /* past 9e12 files */
  return lhs > rhs;
}

/* Turns the pipeline fatal when too many of the files tried so far failed (judged once 100 files,
 * or all of them, were tried), or when none decodes. Caller holds mu. */
static void check_fatal(struct dd_data *d) {
  if (d->fatal || d->errors == 0) return;
  int judged = d->attempts >= 100 || d->attempts == d->n;
  if (d->errors != d->n && !(judged && too_many_errors(d->errors, d->attempts, d->cfg.max_error_fraction))) return;
  d->fatal = 1;
  size_t used = (size_t)snprintf(d->fatal_msg, sizeof d->fatal_msg,
                                 d->errors == d->n ? "none of the %lld images in the list decode (%lld tried); e.g. "
                                                   : "%lld of %lld images tried failed to decode, more than "
                                                     "max_error_fraction allows; e.g. ",
                                 (long long)d->errors, (long long)d->attempts);
  for (int e = 0; e < d->n_examples && used < sizeof d->fatal_msg; e++)
    used += (size_t)snprintf(d->fatal_msg + used, sizeof d->fatal_msg - used, "%s%s", e ? "; " : "", d->examples[e]);
  pthread_cond_broadcast(&d->ready_cv);
  pthread_cond_broadcast(&d->work_cv);
}

/* Fills slot position j with stream position p; substitutes the next files of the epoch's order
 * for files that fail. Returns 0, or -1 when the pipeline turned fatal. */
static int fill_sample(struct dd_data *d, worker_buf *wb, int64_t p, float *out, float *label) {
  int64_t epoch = p / d->n, i = p % d->n;
  dd_rng base;
  dd_rng_seed(&base, dd_hash64(dd_hash64(d->cfg.seed, (uint64_t)epoch), (uint64_t)i));
  for (int64_t k = 0; k < d->n; k++) {
    pthread_mutex_lock(&d->mu);
    if (d->fatal || d->stop) {
      pthread_mutex_unlock(&d->mu);
      return -1;
    }
    const int64_t *perm = epoch_perm(d, epoch);
    int64_t pos = (i + k) % d->n, idx = perm ? perm[pos] : pos;
    int known_bad = d->bad[idx];
    pthread_mutex_unlock(&d->mu);
    if (known_bad) continue;
    char err[768];
    dd_rng rng = base; /* a substitute draws the same random choices */
    int r = load_sample(d, wb, idx, out, &rng, err, sizeof err);
    pthread_mutex_lock(&d->mu);
    if (!d->tried[idx]) {
      d->tried[idx] = 1;
      d->attempts++;
    }
    if (r == 0) {
      check_fatal(d);
      int fatal = d->fatal;
      pthread_mutex_unlock(&d->mu);
      *label = (float)d->entries[idx].label;
      return fatal ? -1 : 0;
    }
    if (!d->bad[idx]) {
      d->bad[idx] = 1;
      d->errors++;
      if (d->n_examples < MAX_EXAMPLES)
        snprintf(d->examples[d->n_examples++], sizeof d->examples[0], "%.300s (%.200s)", d->entries[idx].path, err);
      logf_(d, "warning: skipping %s: %s", d->entries[idx].path, err);
    }
    check_fatal(d);
    pthread_mutex_unlock(&d->mu);
  }
  return -1;
}

static void *worker_main(void *arg) {
  worker *w = arg;
  struct dd_data *d = w->d;
  worker_buf wb = {0};
  pthread_mutex_lock(&d->mu);
  for (;;) {
    slot *s = NULL;
    int64_t b = 0;
    int j = 0;
    while (!d->stop && !d->fatal) {
      b = d->dispatch_batch;
      s = &d->slots[b % d->depth];
      if (s->batch == b) break; /* claimed, samples left */
      if (s->batch == -1 && b < d->consume_batch + d->depth) {
        s->batch = b;
        s->pending = d->cfg.batch;
        s->ready = 0;
        break;
      }
      pthread_cond_wait(&d->work_cv, &d->mu);
    }
    if (d->stop || d->fatal) break;
    j = d->dispatch_sample++;
    if (d->dispatch_sample == d->cfg.batch) {
      d->dispatch_sample = 0;
      d->dispatch_batch++;
    }
    pthread_mutex_unlock(&d->mu);
    /* one rank of a data-parallel job takes its slice of each global batch (core/data.h) */
    int64_t p = b * (d->cfg.stride > 0 ? d->cfg.stride : d->cfg.batch) + d->cfg.offset + j + d->skip;
    int r = fill_sample(d, &wb, p, s->data + (size_t)j * d->sample_floats, &s->labels[j]);
    pthread_mutex_lock(&d->mu);
    if (r) break;
    if (--s->pending == 0) {
      s->ready = 1;
      pthread_cond_broadcast(&d->ready_cv);
    }
  }
  pthread_mutex_unlock(&d->mu);
  dd_image_free(&wb.img);
  free(wb.file);
  free(wb.scratch);
  return NULL;
}

/* ---- open / next / close ---------------------------------------------------------------------- */

static void *host_alloc(struct dd_data *d, size_t bytes) {
  if (d->cfg.be && d->cfg.be->ops->alloc_host) return d->cfg.be->ops->alloc_host(d->cfg.be, bytes);
  return calloc(1, bytes ? bytes : 1);
}
static void host_free(struct dd_data *d, void *p) {
  if (!p) return;
  if (d->cfg.be && d->cfg.be->ops->free_host)
    d->cfg.be->ops->free_host(d->cfg.be, p);
  else
    free(p);
}

static int load_mean(struct dd_data *d, const char *path, char *err, size_t errlen) {
  Caffe__BlobProto *b = NULL;
  char *buf;
  size_t len;
  int fd;
  int r = dd_path_open(d->cfg.policy, DD_PATH_READ, 1, NULL, path, &fd, err, errlen);
  if (r) return r;
  r = dd_read_fd(&buf, &len, fd, path, err, errlen);
  close(fd);
  if (r) return r;
  r = dd_binaryproto_parse(&b, (const uint8_t *)buf, len, path, err, errlen);
  free(buf);
  if (r) return r;
  int64_t dims[DD_MAX_DIMS];
  int nd = dd_blob_proto_shape(b, dims);
  int64_t c = nd == 4 ? dims[1] : nd == 3 ? dims[0] : -1, h = nd >= 3 ? dims[nd - 2] : 0, w = nd >= 3 ? dims[nd - 1] : 0;
  if ((nd == 4 && dims[0] != 1) || c != d->cfg.channels) {
    caffe__blob_proto__free_unpacked(b, NULL);
    return dd_errorf(DD_ESHAPE, err, errlen, "%s: a mean image must be 1 x %d x H x W for this data", path,
                     d->cfg.channels);
  }
  d->mean_image = malloc((size_t)(c * h * w) * sizeof(float));
  if (!d->mean_image) {
    caffe__blob_proto__free_unpacked(b, NULL);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  for (int64_t i = 0; i < c * h * w; i++) d->mean_image[i] = b->n_data ? b->data[i] : (float)b->double_data[i];
  d->tf.mean_image = d->mean_image;
  d->tf.mean_h = (int)h;
  d->tf.mean_w = (int)w;
  caffe__blob_proto__free_unpacked(b, NULL);
  return 0;
}

/* A Data layer (LMDB or LevelDB): the policy is asked for the database and the mean file, then
 * core/data/db_data.c's pipeline runs it. */
static int open_db(dd_data **out, const Caffe__LayerParameter *lp, const dd_data_config *cfg, char *err,
                   size_t errlen) {
  const Caffe__DataParameter *p = lp->data_param;
  char what[512];
  snprintf(what, sizeof what, "%s data_param.source", cfg->field ? cfg->field : "Data");
  int r = p && p->source ? dd_path_check(cfg->policy, DD_PATH_READ, what, p->source, err, errlen) : 0;
  if (!r && lp->transform_param && lp->transform_param->mean_file) {
    snprintf(what, sizeof what, "%s transform_param.mean_file", cfg->field ? cfg->field : "Data");
    r = dd_path_check(cfg->policy, DD_PATH_READ, what, lp->transform_param->mean_file, err, errlen);
  }
  if (r) return r;
  struct dd_data *d = calloc(1, sizeof *d);
  if (!d) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  d->cfg = *cfg;
  pthread_mutex_init(&d->mu, NULL);
  pthread_cond_init(&d->work_cv, NULL);
  pthread_cond_init(&d->ready_cv, NULL);
  dd_db_data_config dc = {.batch = cfg->batch, .channels = cfg->channels, .height = cfg->height, .width = cfg->width,
                          .train = cfg->train, .seed = cfg->seed, .prefetch = p && p->prefetch ? (int)p->prefetch : cfg->prefetch,
                          .be = cfg->be, .start_batch = cfg->start_batch, .stride = cfg->stride, .offset = cfg->offset};
  char msg[1536];
  if ((r = dd_db_data_open(&d->db, lp, &dc, msg, sizeof msg))) {
    dd_errorf(r, err, errlen, "%s: %s", cfg->field ? cfg->field : "Data", msg);
    dd_data_close(d);
    return r;
  }
  *out = d;
  return 0;
}

int dd_data_open(dd_data **out, const Caffe__LayerParameter *lp, const dd_data_config *cfg, char *err,
                 size_t errlen) {
  *out = NULL;
  if (lp->type && !strcmp(lp->type, "Data")) return open_db(out, lp, cfg, err, errlen);
  const Caffe__ImageDataParameter *ip = lp->image_data_param;
  if (!ip || !ip->source || !ip->source[0])
    return dd_errorf(DD_EINVAL, err, errlen, "image_data_param { source: \"LIST.txt\" } is required");
  struct dd_data *d = calloc(1, sizeof *d);
  if (!d) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  d->cfg = *cfg;
  d->held_batch = -1;
  d->consume_batch = d->dispatch_batch = cfg->start_batch > 0 ? cfg->start_batch : 0;
  pthread_mutex_init(&d->mu, NULL);
  pthread_cond_init(&d->work_cv, NULL);
  pthread_cond_init(&d->ready_cv, NULL);
  int r = parse_list(d, ip->source, ip->root_folder, err, errlen);
  if (r) goto fail;
  if ((r = dd_transform_init(&d->tf, lp, cfg->channels, cfg->height, cfg->width, cfg->train, err, errlen))) goto fail;
  const char *mean_file = lp->transform_param && lp->transform_param->mean_file ? lp->transform_param->mean_file
                          : ip->mean_file                                           ? ip->mean_file
                                                                                    : NULL;
  if (mean_file) {
    char what[512];
    snprintf(what, sizeof what, "%s %s", cfg->field ? cfg->field : "ImageData",
             lp->transform_param && lp->transform_param->mean_file ? "transform_param.mean_file" : "image_data_param.mean_file");
    if ((r = dd_path_check(cfg->policy, DD_PATH_READ, what, mean_file, err, errlen))) goto fail;
    if ((r = load_mean(d, mean_file, err, errlen))) goto fail;
  }
  d->shuffle = ip->shuffle && cfg->train;
  if (ip->rand_skip) d->skip = (int64_t)(dd_seed_derive(cfg->seed, "rand_skip") % ip->rand_skip);
  d->sample_floats = (size_t)cfg->channels * (size_t)cfg->height * (size_t)cfg->width;
  d->bad = calloc((size_t)d->n, 1);
  d->tried = calloc((size_t)d->n, 1);
  d->depth = cfg->prefetch > 0 ? cfg->prefetch : 4;
  d->slots = calloc((size_t)d->depth, sizeof *d->slots);
  if (!d->bad || !d->tried || !d->slots) goto oom;
  for (int k = 0; k < d->depth; k++) {
    d->slots[k].batch = -1;
    d->slots[k].data = host_alloc(d, (size_t)cfg->batch * d->sample_floats * sizeof(float));
    d->slots[k].labels = host_alloc(d, (size_t)cfg->batch * sizeof(float));
    if (!d->slots[k].data || !d->slots[k].labels) goto oom;
  }
  int threads = cfg->threads;
  if (threads <= 0) {
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    threads = nc > 0 ? (int)nc : 1;
  }
  d->tids = calloc((size_t)threads, sizeof *d->tids);
  d->workers = calloc((size_t)threads, sizeof *d->workers);
  if (!d->tids || !d->workers) goto oom;
  for (int t = 0; t < threads; t++) {
    d->workers[t] = (worker){d, t};
    if (pthread_create(&d->tids[t], NULL, worker_main, &d->workers[t]) != 0) {
      r = dd_errorf(DD_ENOMEM, err, errlen, "cannot start decode thread %d", t);
      goto fail;
    }
    d->n_threads++;
  }
  *out = d;
  return 0;
oom:
  r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory for the data pipeline");
fail:
  dd_data_close(d);
  return r;
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

int dd_data_next(dd_data *d, const float **data, const float **labels, double *wait_ms, char *err, size_t errlen) {
  if (d->db) return dd_db_data_next(d->db, data, labels, wait_ms, err, errlen);
  pthread_mutex_lock(&d->mu);
  if (d->held_batch >= 0) { /* hand the previous slot back */
    slot *old = &d->slots[d->held_batch % d->depth];
    old->batch = -1;
    old->ready = 0;
    d->held_batch = -1;
    pthread_cond_broadcast(&d->work_cv);
  }
  slot *s = &d->slots[d->consume_batch % d->depth];
  double t0 = now_ms();
  while (!d->fatal && !(s->batch == d->consume_batch && s->ready)) pthread_cond_wait(&d->ready_cv, &d->mu);
  if (wait_ms) *wait_ms = now_ms() - t0;
  if (d->fatal) {
    int r = dd_errorf(DD_ECORRUPT, err, errlen, "%s", d->fatal_msg);
    pthread_mutex_unlock(&d->mu);
    return r;
  }
  *data = s->data;
  *labels = s->labels;
  d->held_batch = d->consume_batch++;
  pthread_mutex_unlock(&d->mu);
  return 0;
}

int64_t dd_data_errors(const dd_data *d) {
  pthread_mutex_t *mu = (pthread_mutex_t *)&d->mu; /* the workers count under it */
  pthread_mutex_lock(mu);
  int64_t e = d->errors;
  pthread_mutex_unlock(mu);
  return e;
}
int64_t dd_data_attempts(const dd_data *d) {
  pthread_mutex_t *mu = (pthread_mutex_t *)&d->mu;
  pthread_mutex_lock(mu);
  int64_t a = d->attempts;
  pthread_mutex_unlock(mu);
  return a;
}
int64_t dd_data_size(const dd_data *d) { return d->db ? dd_db_data_size(d->db) : d->n; }

void dd_data_close(dd_data *d) {
  if (!d) return;
  dd_db_data_close(d->db);
  pthread_mutex_lock(&d->mu);
  d->stop = 1;
  pthread_cond_broadcast(&d->work_cv);
  pthread_cond_broadcast(&d->ready_cv);
  pthread_mutex_unlock(&d->mu);
  for (int t = 0; t < d->n_threads; t++) pthread_join(d->tids[t], NULL);
  free(d->tids);
  free(d->workers);
  if (d->slots)
    for (int k = 0; k < d->depth; k++) {
      host_free(d, d->slots[k].data);
      host_free(d, d->slots[k].labels);
    }
  free(d->slots);
  for (int k = 0; k < PERM_CACHE; k++) free(d->perms[k].perm);
  for (int64_t i = 0; i < d->n; i++) free(d->entries[i].path);
  free(d->entries);
  free(d->bad);
  free(d->tried);
  free(d->mean_image);
  pthread_mutex_destroy(&d->mu);
  pthread_cond_destroy(&d->work_cv);
  pthread_cond_destroy(&d->ready_cv);
  free(d);
}
