/* MemoryData (see memory_data.h): the caller's samples, batch by batch. */
#include "layers/memory_data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "data/transform.h"
#include "format/caffe_io.h"

static int memory_data_shape(dd_shape_ctx *c) {
  const Caffe__MemoryDataParameter *p = c->lp->memory_data_param;
  const Caffe__TransformationParameter *t = c->lp->transform_param;
  if (!p) return dd_shape_fail(c, "memory_data_param { batch_size channels height width } is required");
  const char *names[4] = {"batch_size", "channels", "height", "width"};
  uint32_t v[4] = {p->batch_size, p->channels, p->height, p->width};
  int64_t count = 1;
  for (int k = 0; k < 4; k++) {
    if (v[k] == 0) return dd_shape_fail(c, "memory_data_param.%s must be > 0", names[k]);
    count *= v[k];
  }
  if (count > DD_SHAPE_MAX_COUNT)
    return dd_shape_fail(c, "memory_data_param: the data top would have %lld elements (at most %lld)",
                         (long long)count, (long long)DD_SHAPE_MAX_COUNT);
  if (t && t->crop_size && (t->crop_size != p->height || t->crop_size != p->width))
    return dd_shape_fail(c, "transform_param.crop_size %u must equal memory_data_param.height and width (%ux%u)",
                         t->crop_size, p->height, p->width);
  if (t && t->mean_file && t->n_mean_value)
    return dd_shape_fail(c, "transform_param: give mean_file or mean_value, not both");
  c->tops[0] = dd_shape_4(p->batch_size, p->channels, p->height, p->width);
  int64_t n = p->batch_size;
  c->tops[1] = dd_shape_make(1, &n);
  return 0;
}

typedef struct {
  const float *data, *labels; /* the samples in use: the caller's (reset) or owned (add) */
  int n, pos;
  int has_new;                /* added images not all consumed yet */
  float *own_data, *own_labels;
  size_t own_cap; /* samples the owned buffers hold */
  float *mean;    /* transform_param.mean_file: (C, mean_h, mean_w) */
  int mean_h, mean_w;
  int64_t added; /* images added so far (seeds their random transforms) */
} memory_priv;

static int is_memory(const dd_layer *l, char *err, size_t errlen) {
  if (!l || l->ops != &dd_layer_memory_data)
    return dd_errorf(DD_EINVAL, err, errlen, "layer \"%s\" is not a MemoryData layer", l ? l->name : "(null)");
  return 0;
}

static int check_n(const dd_layer *l, int n, char *err, size_t errlen) {
  int batch = (int)l->top[0]->shape.dims[0];
  if (n <= 0 || n % batch)
    return dd_errorf(DD_EINVAL, err, errlen, "layer \"%s\": %d samples given: MemoryData needs a positive multiple of "
                     "its batch_size %d", l->name, n, batch);
  return 0;
}

int dd_memory_data_reset(dd_layer *l, const float *data, const float *labels, int n, char *err, size_t errlen) {
  int r = is_memory(l, err, errlen);
  if (r || (r = check_n(l, n, err, errlen))) return r;
  if (!data || !labels) return dd_errorf(DD_EINVAL, err, errlen, "layer \"%s\": NULL data or labels", l->name);
  memory_priv *mp = l->priv;
  mp->data = data;
  mp->labels = labels;
  mp->n = n;
  mp->pos = 0;
  return 0;
}

static int load_mean(dd_layer *l, const char *path, char *err, size_t errlen) {
  memory_priv *mp = l->priv;
  Caffe__BlobProto *b = NULL;
  int r = dd_binaryproto_read(&b, path, err, errlen);
  if (r) return r;
  int64_t dims[DD_MAX_DIMS];
  int nd = dd_blob_proto_shape(b, dims);
  int64_t ch = l->top[0]->shape.dims[1];
  if (nd != 4 || dims[0] != 1 || dims[1] != ch || (int64_t)(b->n_data + b->n_double_data) != ch * dims[2] * dims[3]) {
    caffe__blob_proto__free_unpacked(b, NULL);
    return dd_errorf(DD_ESHAPE, err, errlen, "transform_param.mean_file %s: a mean image must be 1 x %lld x H x W",
                     path, (long long)ch);
  }
  int64_t count = ch * dims[2] * dims[3];
  mp->mean = malloc((size_t)(count ? count : 1) * sizeof *mp->mean);
  if (mp->mean)
    for (int64_t i = 0; i < count; i++) mp->mean[i] = b->n_data ? b->data[i] : (float)b->double_data[i];
  mp->mean_h = (int)dims[2];
  mp->mean_w = (int)dims[3];
  caffe__blob_proto__free_unpacked(b, NULL);
  return mp->mean ? 0 : dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
}

static int memory_data_setup(dd_layer *l, char *err, size_t errlen) {
  memory_priv *mp = l->priv;
  const Caffe__TransformationParameter *t = l->lp->transform_param;
  if (t && t->mean_file && !mp->mean) return load_mean(l, t->mean_file, err, errlen);
  return 0;
}

/* Transforms image i into sample slot `slot` of the owned buffers. */
static int add_one(dd_layer *l, const dd_transform *tf, const dd_image *img, int i, float *out, void **scratch,
                   size_t *scap, char *err, size_t errlen) {
  memory_priv *mp = l->priv;
  if (!img->px || img->c != tf->channels)
    return dd_errorf(DD_ESHAPE, err, errlen, "layer \"%s\": image %d has %d channels, the layer %d", l->name, i,
                     img->c, tf->channels);
  size_t need = dd_transform_scratch_size(tf, img->w, img->h);
  if (need > *scap) {
    void *s = realloc(*scratch, need);
    if (!s) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
    *scratch = s;
    *scap = need;
  }
  dd_rng rng;
  dd_rng_seed(&rng, dd_hash64(l->seed, (uint64_t)(mp->added + i)));
  char why[256];
  int r = dd_transform_apply(tf, out, img->px, img->w, img->h, &rng, *scratch, why, sizeof why);
  if (r) return dd_errorf(r, err, errlen, "layer \"%s\": image %d (%dx%d): %s", l->name, i, img->w, img->h, why);
  return 0;
}

int dd_memory_data_add_images(dd_layer *l, const dd_image *images, const int *labels, int n, char *err,
                              size_t errlen) {
  int r = is_memory(l, err, errlen);
  if (r || (r = check_n(l, n, err, errlen))) return r;
  memory_priv *mp = l->priv;
  if (mp->has_new)
    return dd_errorf(DD_EINVAL, err, errlen, "layer \"%s\": the images added before are not all consumed yet", l->name);
  if (!images || !labels) return dd_errorf(DD_EINVAL, err, errlen, "layer \"%s\": NULL images or labels", l->name);
  const dd_shape *s = &l->top[0]->shape;
  int64_t size = s->dims[1] * s->dims[2] * s->dims[3];
  dd_transform tf;
  if ((r = dd_transform_init(&tf, l->lp, (int)s->dims[1], (int)s->dims[2], (int)s->dims[3],
                             l->phase == CAFFE__PHASE__TRAIN, err, errlen)))
    return r;
  tf.mean_image = mp->mean;
  tf.mean_h = mp->mean_h;
  tf.mean_w = mp->mean_w;
  if ((size_t)n > mp->own_cap) {
    float *d = realloc(mp->own_data, (size_t)n * (size_t)size * sizeof *d);
    if (d) mp->own_data = d;
    float *lb = d ? realloc(mp->own_labels, (size_t)n * sizeof *lb) : NULL;
    if (!d || !lb) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory for %d images", n);
    mp->own_labels = lb;
    mp->own_cap = (size_t)n;
  }
  void *scratch = NULL;
  size_t scap = 0;
  for (int i = 0; i < n && r == 0; i++) {
    r = add_one(l, &tf, &images[i], i, mp->own_data + (int64_t)i * size, &scratch, &scap, err, errlen);
    mp->own_labels[i] = (float)labels[i];
  }
  free(scratch);
  if (r) {
    mp->data = NULL; /* the owned buffers were partly overwritten */
    return r;
  }
  mp->added += n;
  mp->data = mp->own_data;
  mp->labels = mp->own_labels;
  mp->n = n;
  mp->pos = 0;
  mp->has_new = 1;
  return 0;
}

static void memory_data_forward(dd_layer *l) {
  memory_priv *mp = l->priv;
  if (!mp->data) {
    snprintf(l->status_msg, l->status_len,
             "layer \"%s\": MemoryData has no data: give it samples with dd_memory_data_reset or "
             "dd_memory_data_add_images before the forward", l->name);
    *l->status = DD_EINVAL;
    return;
  }
  int batch = (int)l->top[0]->shape.dims[0];
  int64_t size = l->top[0]->count / batch;
  l->be->ops->upload(l->be, l->top[0]->data, mp->data + (int64_t)mp->pos * size,
                     (size_t)l->top[0]->count * sizeof(float));
  l->be->ops->upload(l->be, l->top[1]->data, mp->labels + mp->pos, (size_t)batch * sizeof(float));
  mp->pos = (mp->pos + batch) % mp->n;
  if (mp->pos == 0) mp->has_new = 0;
}

static void memory_data_destroy(dd_layer *l) {
  memory_priv *mp = l->priv;
  free(mp->own_data);
  free(mp->own_labels);
  free(mp->mean);
}

const dd_layer_ops dd_layer_memory_data = {
    .type = "MemoryData", .min_bottoms = 0, .max_bottoms = 0, .min_tops = 2, .max_tops = 2,
    .shape = memory_data_shape, .priv_size = sizeof(memory_priv), .setup = memory_data_setup,
    .forward = memory_data_forward, .destroy = memory_data_destroy};
