/* Tensors (see tensor.h). */
#define _POSIX_C_SOURCE 200809L
#include "net/tensor.h"

#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"

dd_tensor *dd_tensor_create(dd_backend *be, const char *name) {
  dd_tensor *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->name = strdup(name ? name : "");
  if (!t->name) {
    free(t);
    return NULL;
  }
  t->be = be;
  t->shape.ndim = 0;
  return t;
}

int dd_tensor_reshape(dd_tensor *t, const dd_shape *shape) {
  if (!dd_shape_known(shape)) return DD_EINVAL;
  int64_t count;
  /* Caffe's Blob limit (count <= INT_MAX): also keeps count * sizeof(float) from overflowing */
  if (dd_shape_size_check(shape, DD_SHAPE_MAX_COUNT, &count)) return DD_ESHAPE;
  if (count > t->capacity) {
    DD_ASSERT(!t->shared && !t->data_shared);
    size_t bytes = (size_t)count * sizeof(float);
    float *d = t->be->ops->alloc(t->be, bytes), *g = t->be->ops->alloc(t->be, bytes);
    if (!d || !g) {
      if (d) t->be->ops->free(t->be, d);
      if (g) t->be->ops->free(t->be, g);
      return DD_ENOMEM;
    }
    if (t->data) {
      t->be->ops->copy(t->be, d, t->data, (size_t)t->count * sizeof(float));
      t->be->ops->free(t->be, t->data);
      t->be->ops->free(t->be, t->diff);
    }
    t->data = d;
    t->diff = g;
    t->capacity = count;
  }
  t->shape = *shape;
  t->count = count;
  return 0;
}

void dd_tensor_destroy(dd_tensor *t) {
  if (!t) return;
  if (!t->shared) {
    if (t->data && !t->data_shared) t->be->ops->free(t->be, t->data);
    if (t->diff) t->be->ops->free(t->be, t->diff);
  }
  free(t->name);
  free(t);
}

void dd_tensor_share(dd_tensor *t, const dd_tensor *src) {
  if (!t->shared) {
    if (t->data) t->be->ops->free(t->be, t->data);
    if (t->diff) t->be->ops->free(t->be, t->diff);
  }
  t->data = src->data;
  t->diff = src->diff;
  t->capacity = src->capacity;
  t->shape = src->shape;
  t->count = src->count;
  t->shared = 1;
}

void dd_tensor_share_data(dd_tensor *t, const dd_tensor *src) {
  DD_ASSERT(dd_shape_equal(&t->shape, &src->shape) && !t->shared);
  if (t->data && !t->data_shared) t->be->ops->free(t->be, t->data);
  t->data = src->data;
  t->data_shared = 1;
}

void dd_tensor_get_data(const dd_tensor *t, float *host) {
  t->be->ops->download(t->be, host, t->data, (size_t)t->count * sizeof(float));
}
void dd_tensor_set_data(dd_tensor *t, const float *host) {
  t->be->ops->upload(t->be, t->data, host, (size_t)t->count * sizeof(float));
}
void dd_tensor_get_diff(const dd_tensor *t, float *host) {
  t->be->ops->download(t->be, host, t->diff, (size_t)t->count * sizeof(float));
}
void dd_tensor_set_diff(dd_tensor *t, const float *host) {
  t->be->ops->upload(t->be, t->diff, host, (size_t)t->count * sizeof(float));
}

float *dd_tensor_data_copy(const dd_tensor *t) {
  float *h = malloc((size_t)(t->count ? t->count : 1) * sizeof *h);
  if (h) dd_tensor_get_data(t, h);
  return h;
}

float *dd_tensor_diff_copy(const dd_tensor *t) {
  float *h = malloc((size_t)(t->count ? t->count : 1) * sizeof *h);
  if (h) dd_tensor_get_diff(t, h);
  return h;
}
