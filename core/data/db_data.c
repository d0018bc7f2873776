/* The Data layer's pipeline (see db_data.h).
 *
 * One prefetch thread owns the cursor: it claims the ring slot of the next batch when that slot
 * is free, fills it record by record (parse, decode, check, transform) outside the lock, and marks
 * it ready. A failing record ends the thread; the failure is kept with the batch it broke. */
#define _POSIX_C_SOURCE 200809L
#include "data/db_data.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/dd_error.h"
#include "base/rng.h"
#include "data/datum_read.h"
#include "data/db_read.h"
#include "data/transform.h"
#include "format/caffe_io.h"

typedef struct {
  float *data, *labels;
  int64_t batch; /* the batch it holds, -1 when free */
  int ready;
} slot;

struct dd_db_data {
  dd_db_data_config cfg;
  const char *source;
  dd_db_cursor *cur;
  dd_transform tf;
  float *mean;
  int mean_h, mean_w;
  int decode_channels; /* encoded records: 0 as stored, 1 gray, 3 colour */
  int crop;
  size_t sample_floats;
  int64_t skip, size, stride;
  /* data_param.shuffle (TRAIN): every key, and the permutation of the epoch being read */
  uint8_t **keys;
  size_t *klens;
  int64_t *perm, perm_epoch;

  pthread_mutex_t mu;
  pthread_cond_t work_cv, ready_cv;
  pthread_t tid;
  int started, stop;
  slot *slots;
  int depth;
  int64_t consume, held; /* the next batch to hand out; the one the trainer holds (-1: none) */
  int64_t fail_batch;    /* the batch a record broke (-1: none) */
  int fail_code;
  char fail_msg[1536];

  /* the prefetch thread's own buffers */
  dd_datum_buf dbuf;
  void *scratch;
  size_t scratch_cap;
};

/* ---- checks shared by the probe and the thread ---------------------------------------------- */

/* The key as text: printable bytes as they are, others as \xNN, at most 64 bytes shown. */
static void key_text(char *out, size_t n, const uint8_t *key, size_t klen) {
  size_t o = 0;
  for (size_t i = 0; i < klen && i < 64 && o + 5 < n; i++)
    o += (size_t)snprintf(out + o, n - o, key[i] >= 32 && key[i] < 127 && key[i] != '"' && key[i] != '\\' ? "%c" : "\\x%02x",
                          key[i]);
  if (klen > 64 && o + 4 < n) o += (size_t)snprintf(out + o, n - o, "...");
  out[o < n ? o : n - 1] = '\0';
}

static const char *backend_of(const Caffe__DataParameter *p) {
  return p->backend == CAFFE__DATA_PARAMETER__DB__LMDB ? "lmdb" : "leveldb";
}

/* data_param and transform_param checks that need no record. */
static int check_params(const Caffe__LayerParameter *lp, char *err, size_t errlen) {
  const Caffe__DataParameter *p = lp->data_param;
  const Caffe__TransformationParameter *t = lp->transform_param;
  if (!p || !p->source || !p->source[0])
    return dd_errorf(DD_EINVAL, err, errlen, "data_param { source: \"DB\" } is required");
  if (p->batch_size == 0) return dd_errorf(DD_EINVAL, err, errlen, "data_param.batch_size must be > 0");
  if (p->backend != CAFFE__DATA_PARAMETER__DB__LMDB && p->backend != CAFFE__DATA_PARAMETER__DB__LEVELDB)
    return dd_errorf(DD_EINVAL, err, errlen, "data_param.backend %d: LMDB or LEVELDB", (int)p->backend);
  if ((p->has_scale && p->scale != 1) || p->mean_file || p->crop_size || p->mirror)
    return dd_errorf(DD_EINVAL, err, errlen, "data_param.%s is deprecated and ignored by Caffe's Data layer: set it in "
                     "transform_param", p->mean_file ? "mean_file" : p->crop_size ? "crop_size" : p->mirror ? "mirror" : "scale");
  if (t && t->force_color && t->force_gray)
    return dd_errorf(DD_EINVAL, err, errlen, "transform_param sets both force_color and force_gray");
  if (t && t->mean_file && t->n_mean_value)
    return dd_errorf(DD_EINVAL, err, errlen, "transform_param: give mean_file or mean_value, not both");
  return 0;
}

/* The mean image of transform_param.mean_file: (C, H, W) floats in *out (the caller frees). */
static int load_mean(const char *path, int channels, float **out, int *mh, int *mw, char *err, size_t errlen) {
  Caffe__BlobProto *b = NULL;
  char msg[512];
  int r = dd_binaryproto_read(&b, path, msg, sizeof msg);
  if (r) return dd_errorf(r, err, errlen, "transform_param.mean_file: %s", msg);
  int64_t dims[DD_MAX_DIMS];
  int nd = dd_blob_proto_shape(b, dims);
  if ((r = dd_blob_proto_check(b, msg, sizeof msg))) {
    caffe__blob_proto__free_unpacked(b, NULL);
    return dd_errorf(r, err, errlen, "transform_param.mean_file \"%s\" %s", path, msg);
  }
  int64_t c = nd == 4 ? dims[1] : nd == 3 ? dims[0] : -1, h = nd >= 3 ? dims[nd - 2] : 0, w = nd >= 3 ? dims[nd - 1] : 0;
  if ((nd == 4 && dims[0] != 1) || c != channels || h <= 0 || w <= 0 || h > 1 << 16 || w > 1 << 16) {
    caffe__blob_proto__free_unpacked(b, NULL);
    return dd_errorf(DD_ESHAPE, err, errlen, "transform_param.mean_file \"%s\": a mean image must be 1 x %d x H x W for "
                     "records of %d channels", path, channels, channels);
  }
  *out = malloc((size_t)(c * h * w) * sizeof(float));
  if (!*out) {
    caffe__blob_proto__free_unpacked(b, NULL);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  for (int64_t i = 0; i < c * h * w; i++) (*out)[i] = b->n_double_data ? (float)b->double_data[i] : b->data[i];
  *mh = (int)h;
  *mw = (int)w;
  caffe__blob_proto__free_unpacked(b, NULL);
  return 0;
}

/* The current record as a sample; errors are prefixed with the source and the key. */
static int record_sample(dd_datum_sample *s, dd_db_cursor *cur, const char *source, int decode_channels,
                         dd_datum_buf *b, char *key, size_t keylen, char *err, size_t errlen) {
  const uint8_t *k, *v;
  size_t kl, vl;
  dd_db_cursor_get(cur, &k, &kl, &v, &vl);
  key_text(key, keylen, k, kl);
  dd_datum_view dv;
  char msg[768];
  int r = dd_datum_parse(&dv, v, vl, msg, sizeof msg);
  if (!r) r = dd_datum_sample_of(s, &dv, decode_channels, b, msg, sizeof msg);
  if (r) return dd_errorf(r, err, errlen, "data_param.source \"%s\": key \"%s\": %s", source, key, msg);
  return 0;
}

/* A record against the first one's shape, the crop and the mean. */
static int check_record(const dd_db_data *d, const dd_datum_sample *s, const char *key, char *err, size_t errlen) {
  const char *src = d->source;
  if (s->c != d->cfg.channels)
    return dd_errorf(DD_ESHAPE, err, errlen, "data_param.source \"%s\": key \"%s\": channels %d, but the first record "
                     "has %d", src, key, s->c, d->cfg.channels);
  if (!d->crop && (s->h != d->cfg.height || s->w != d->cfg.width))
    return dd_errorf(DD_ESHAPE, err, errlen, "data_param.source \"%s\": key \"%s\": height x width %dx%d, but the first "
                     "record's is %dx%d (without transform_param.crop_size every record has one shape)", src, key,
                     s->h, s->w, d->cfg.height, d->cfg.width);
  if (d->crop && (s->h + 2 * d->tf.pad < d->crop || s->w + 2 * d->tf.pad < d->crop))
    return dd_errorf(DD_ESHAPE, err, errlen, "data_param.source \"%s\": key \"%s\": height x width %dx%d is smaller than "
                     "transform_param.crop_size %d", src, key, s->h, s->w, d->crop);
  if (d->mean && (s->h != d->mean_h || s->w != d->mean_w))
    return dd_errorf(DD_ESHAPE, err, errlen, "data_param.source \"%s\": key \"%s\": height x width %dx%d, but "
                     "transform_param.mean_file is %dx%d", src, key, s->h, s->w, d->mean_h, d->mean_w);
  return 0;
}

static int decode_channels_of(const Caffe__LayerParameter *lp) {
  const Caffe__TransformationParameter *t = lp->transform_param;
  return t && t->force_color ? 3 : t && t->force_gray ? 1 : 0;
}

int dd_db_data_probe(const Caffe__LayerParameter *lp, int dims[3], char *err, size_t errlen) {
  int r = check_params(lp, err, errlen);
  if (r) return r;
  const Caffe__DataParameter *p = lp->data_param;
  const Caffe__TransformationParameter *t = lp->transform_param;
  dd_db_cursor *cur;
  char msg[768], key[300];
  if ((r = dd_db_cursor_open(&cur, backend_of(p), p->source, msg, sizeof msg)))
    return dd_errorf(r, err, errlen, "data_param.source: %s", msg);
  dd_datum_buf b = {0};
  dd_datum_sample s;
  r = record_sample(&s, cur, p->source, decode_channels_of(lp), &b, key, sizeof key, err, errlen);
  int crop = t ? (int)t->crop_size : 0;
  if (!r && crop && (s.h + 2 * (int)t->pad < crop || s.w + 2 * (int)t->pad < crop))
    r = dd_errorf(DD_ESHAPE, err, errlen, "data_param.source \"%s\": key \"%s\": height x width %dx%d is smaller than "
                  "transform_param.crop_size %d", p->source, key, s.h, s.w, crop);
  if (!r && t && t->n_mean_value > 1 && (int)t->n_mean_value != s.c)
    r = dd_errorf(DD_EINVAL, err, errlen, "transform_param has %zu mean_value entries for %d channels (data_param.source "
                  "\"%s\", key \"%s\"): give 1 or %d", t->n_mean_value, s.c, p->source, key, s.c);
  if (!r && t && t->mean_file) { /* Caffe's DataTransformer: the mean has the records' shape */
    float *mean = NULL;
    int mh, mw;
    r = load_mean(t->mean_file, s.c, &mean, &mh, &mw, err, errlen);
    if (!r && (mh != s.h || mw != s.w))
      r = dd_errorf(DD_ESHAPE, err, errlen, "data_param.source \"%s\": key \"%s\": height x width %dx%d, but "
                    "transform_param.mean_file is %dx%d", p->source, key, s.h, s.w, mh, mw);
    free(mean);
  }
  if (!r) {
    dims[0] = s.c;
    dims[1] = crop ? crop : s.h;
    dims[2] = crop ? crop : s.w;
  }
  dd_datum_buf_free(&b);
  dd_db_cursor_close(cur);
  return r;
}

/* ---- the prefetch thread ------------------------------------------------------------------- */

/* Reads every key once (data_param.shuffle), then goes back to the first record. */
static int read_keys(dd_db_data *d, char *err, size_t errlen) {
  int64_t n = d->size;
  d->keys = calloc((size_t)(n ? n : 1), sizeof *d->keys);
  d->klens = calloc((size_t)(n ? n : 1), sizeof *d->klens);
  d->perm = malloc((size_t)(n ? n : 1) * sizeof *d->perm);
  if (!d->keys || !d->klens || !d->perm) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory for %lld keys", (long long)n);
  d->perm_epoch = -1;
  for (int64_t i = 0; i < n; i++) {
    const uint8_t *k, *v;
    size_t kl, vl;
    dd_db_cursor_get(d->cur, &k, &kl, &v, &vl);
    if (!(d->keys[i] = malloc(kl ? kl : 1))) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
    memcpy(d->keys[i], k, kl);
    d->klens[i] = kl;
    int r = dd_db_cursor_next(d->cur, NULL, err, errlen);
    if (r) return r;
  }
  return dd_db_cursor_first(d->cur, err, errlen);
}

/* Shuffling: puts the cursor on the record at stream position `pos` (epoch pos / size, a
 * permutation drawn from the seed and the epoch, as ImageData's shuffle does). */
static int seek_position(dd_db_data *d, int64_t pos, char *err, size_t errlen) {
  int64_t n = d->size, e = pos / n;
  if (e != d->perm_epoch) {
    dd_rng rng;
    dd_rng_seed(&rng, dd_hash64(dd_seed_derive(d->cfg.seed, "shuffle"), (uint64_t)e));
    for (int64_t i = 0; i < n; i++) d->perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
      int64_t j = (int64_t)(dd_rng_next(&rng) % (uint64_t)(i + 1)), t = d->perm[i];
      d->perm[i] = d->perm[j];
      d->perm[j] = t;
    }
    d->perm_epoch = e;
  }
  int64_t idx = d->perm[pos % n];
  return dd_db_cursor_seek(d->cur, d->keys[idx], d->klens[idx], err, errlen);
}

/* Fills slot `s` with batch `b`. Returns 0 or DD_E* with the message. */
static int fill_batch(dd_db_data *d, slot *s, int64_t b, char *err, size_t errlen) {
  char key[300];
  for (int j = 0; j < d->cfg.batch; j++) {
    dd_datum_sample smp;
    int r = d->keys ? seek_position(d, b * d->stride + d->cfg.offset + j + d->skip, err, errlen) : 0;
    if (!r) r = record_sample(&smp, d->cur, d->source, d->decode_channels, &d->dbuf, key, sizeof key, err, errlen);
    if (!r) r = check_record(d, &smp, key, err, errlen);
    if (r) return r;
    size_t need = dd_transform_scratch_size(&d->tf, smp.w, smp.h);
    if (need > d->scratch_cap) {
      free(d->scratch);
      d->scratch_cap = 0;
      if (!(d->scratch = malloc(need))) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
      d->scratch_cap = need;
    }
    dd_rng rng;
    dd_rng_seed(&rng, dd_hash64(dd_seed_derive(d->cfg.seed, "data"), (uint64_t)(b * d->stride + d->cfg.offset + j + d->skip)));
    float *out = s->data + (size_t)j * d->sample_floats;
    char msg[768];
    r = smp.hwc ? dd_transform_apply(&d->tf, out, smp.hwc, smp.w, smp.h, &rng, d->scratch, msg, sizeof msg)
                : dd_transform_apply_chw(&d->tf, out, smp.u8, smp.f32, smp.w, smp.h, &rng, d->scratch, msg, sizeof msg);
    if (r) return dd_errorf(r, err, errlen, "data_param.source \"%s\": key \"%s\": %s", d->source, key, msg);
    s->labels[j] = (float)smp.label;
    if (!d->keys && (r = dd_db_cursor_next(d->cur, NULL, err, errlen))) return r;
  }
  /* the other ranks' records, up to this rank's next batch */
  for (int64_t k = d->cfg.batch; !d->keys && k < d->stride; k++) {
    int r = dd_db_cursor_next(d->cur, NULL, err, errlen);
    if (r) return r;
  }
  return 0;
}

static void *prefetch_main(void *arg) {
  dd_db_data *d = arg;
  char err[1536] = "";
  int r = 0;
  /* rand_skip, then the batches before start_batch (modulo the database), then this rank's offset */
  int64_t first = d->size > 0 && !d->keys ? (d->skip + d->cfg.start_batch * d->stride + d->cfg.offset) % d->size : 0;
  for (int64_t k = 0; k < first && !r; k++) r = dd_db_cursor_next(d->cur, NULL, err, sizeof err);
  int64_t b = d->consume;
  pthread_mutex_lock(&d->mu);
  while (!r) {
    slot *s = &d->slots[b % d->depth];
    while (!d->stop && s->batch != -1) pthread_cond_wait(&d->work_cv, &d->mu);
    if (d->stop) break;
    s->batch = b;
    s->ready = 0;
    pthread_mutex_unlock(&d->mu);
    r = fill_batch(d, s, b, err, sizeof err);
    pthread_mutex_lock(&d->mu);
    if (!r) {
      s->ready = 1;
      b++;
    }
    pthread_cond_broadcast(&d->ready_cv);
  }
  if (r) {
    d->fail_batch = b;
    d->fail_code = r;
    snprintf(d->fail_msg, sizeof d->fail_msg, "%s", err);
    pthread_cond_broadcast(&d->ready_cv);
  }
  pthread_mutex_unlock(&d->mu);
  return NULL;
}

/* ---- open / next / close ---------------------------------------------------------------------- */

static void *host_alloc(dd_db_data *d, size_t bytes) {
  if (d->cfg.be && d->cfg.be->ops->alloc_host) return d->cfg.be->ops->alloc_host(d->cfg.be, bytes);
  return calloc(1, bytes ? bytes : 1);
}
static void host_free(dd_db_data *d, void *p) {
  if (!p) return;
  if (d->cfg.be && d->cfg.be->ops->free_host)
    d->cfg.be->ops->free_host(d->cfg.be, p);
  else
    free(p);
}

int dd_db_data_open(dd_db_data **out, const Caffe__LayerParameter *lp, const dd_db_data_config *cfg, char *err,
                    size_t errlen) {
  *out = NULL;
  int r = check_params(lp, err, errlen);
  if (r) return r;
  const Caffe__DataParameter *p = lp->data_param;
  const Caffe__TransformationParameter *t = lp->transform_param;
  dd_db_data *d = calloc(1, sizeof *d);
  if (!d) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  d->cfg = *cfg;
  d->source = p->source;
  d->held = d->fail_batch = -1;
  d->decode_channels = decode_channels_of(lp);
  d->crop = t ? (int)t->crop_size : 0;
  pthread_mutex_init(&d->mu, NULL);
  pthread_cond_init(&d->work_cv, NULL);
  pthread_cond_init(&d->ready_cv, NULL);
  char msg[768];
  if ((r = dd_db_cursor_open(&d->cur, backend_of(p), p->source, msg, sizeof msg))) {
    r = dd_errorf(r, err, errlen, "data_param.source: %s", msg);
    goto fail;
  }
  if ((r = dd_transform_init(&d->tf, lp, cfg->channels, cfg->height, cfg->width, cfg->train, msg, sizeof msg))) {
    r = dd_errorf(r, err, errlen, "%s", msg);
    goto fail;
  }
  if (t && t->mean_file) {
    if ((r = load_mean(t->mean_file, cfg->channels, &d->mean, &d->mean_h, &d->mean_w, err, errlen))) goto fail;
    d->tf.mean_image = d->mean;
    d->tf.mean_h = d->mean_h;
    d->tf.mean_w = d->mean_w;
  }
  if (p->rand_skip) d->skip = (int64_t)(dd_seed_derive(cfg->seed, "rand_skip") % p->rand_skip);
  d->stride = cfg->stride > 0 ? cfg->stride : cfg->batch;
  d->consume = cfg->start_batch;
  if ((r = dd_db_cursor_count(d->cur, &d->size, msg, sizeof msg))) {
    r = dd_errorf(r, err, errlen, "data_param.source: %s", msg);
    goto fail;
  }
  if (p->shuffle && cfg->train && d->size > 0 && (r = read_keys(d, err, errlen))) goto fail;
  d->sample_floats = (size_t)cfg->channels * (size_t)cfg->height * (size_t)cfg->width;
  d->depth = cfg->prefetch > 0 ? cfg->prefetch : 4;
  if (!(d->slots = calloc((size_t)d->depth, sizeof *d->slots))) goto oom;
  for (int k = 0; k < d->depth; k++) {
    d->slots[k].batch = -1;
    d->slots[k].data = host_alloc(d, (size_t)cfg->batch * d->sample_floats * sizeof(float));
    d->slots[k].labels = host_alloc(d, (size_t)cfg->batch * sizeof(float));
    if (!d->slots[k].data || !d->slots[k].labels) goto oom;
  }
  if (pthread_create(&d->tid, NULL, prefetch_main, d) != 0) {
    r = dd_errorf(DD_ENOMEM, err, errlen, "cannot start the prefetch thread");
    goto fail;
  }
  d->started = 1;
  *out = d;
  return 0;
oom:
  r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory for the data pipeline");
fail:
  dd_db_data_close(d);
  return r;
}

int64_t dd_db_data_size(const dd_db_data *d) { return d->size; }

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

int dd_db_data_next(dd_db_data *d, const float **data, const float **labels, double *wait_ms, char *err,
                    size_t errlen) {
  pthread_mutex_lock(&d->mu);
  if (d->held >= 0) { /* hand the previous slot back */
    d->slots[d->held % d->depth].batch = -1;
    d->held = -1;
    pthread_cond_broadcast(&d->work_cv);
  }
  slot *s = &d->slots[d->consume % d->depth];
  double t0 = now_ms();
  while (!(s->batch == d->consume && s->ready) && !(d->fail_batch >= 0 && d->fail_batch <= d->consume))
    pthread_cond_wait(&d->ready_cv, &d->mu);
  if (wait_ms) *wait_ms = now_ms() - t0;
  if (!(s->batch == d->consume && s->ready)) {
    int r = dd_errorf(d->fail_code, err, errlen, "%s", d->fail_msg);
    pthread_mutex_unlock(&d->mu);
    return r;
  }
  *data = s->data;
  *labels = s->labels;
  d->held = d->consume++;
  pthread_mutex_unlock(&d->mu);
  return 0;
}

void dd_db_data_close(dd_db_data *d) {
  if (!d) return;
  pthread_mutex_lock(&d->mu);
  d->stop = 1;
  pthread_cond_broadcast(&d->work_cv);
  pthread_mutex_unlock(&d->mu);
  if (d->started) pthread_join(d->tid, NULL);
  if (d->slots)
    for (int k = 0; k < d->depth; k++) {
      host_free(d, d->slots[k].data);
      host_free(d, d->slots[k].labels);
    }
  free(d->slots);
  dd_db_cursor_close(d->cur);
  dd_datum_buf_free(&d->dbuf);
  free(d->scratch);
  free(d->mean);
  for (int64_t i = 0; d->keys && i < d->size; i++) free(d->keys[i]);
  free(d->keys);
  free(d->klens);
  free(d->perm);
  pthread_mutex_destroy(&d->mu);
  pthread_cond_destroy(&d->work_cv);
  pthread_cond_destroy(&d->ready_cv);
  free(d);
}
