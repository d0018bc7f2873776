/* BatchReindex (Caffe's BatchReindexLayer): top[i] = bottom[0][index[i]] along the first axis,
 * where bottom[1] is a 1-D blob of indices into bottom[0]'s batch (repeats and omissions allowed).
 * Backward sums each top row's gradient into the bottom row it came from; rows no index names get
 * zero. The indices get no gradient (Caffe refuses to propagate to them).
 *
 * The indices are data: forward reads them back to the host (one small download, as Caffe reads
 * them on the CPU), checks each is an integer in [0, bottom[0]'s batch) (Caffe's check; a bad one
 * stops the net with a message naming it), then moves whole rows with the backend's copy and
 * axpby, so every backend runs it without a kernel of its own. */
#include <stdio.h>
#include <stdlib.h>

#include "base/dd_error.h"
#include "net/layer.h"

typedef struct {
  int64_t *index; /* host: the indices of the last forward */
  size_t cap;
} reindex_priv;

static int reindex_shape(dd_shape_ctx *c) {
  const dd_shape *b = &c->bottoms[0], *ix = &c->bottoms[1];
  if (dd_shape_known(ix) && ix->ndim != 1)
    return dd_shape_fail(c, "bottom[1] (the indices) must have 1 axis, it has %d", ix->ndim);
  if (!dd_shape_bottoms_known(c)) {
    c->tops[0] = dd_shape_unknown();
    return 0;
  }
  if (b->ndim < 1) return dd_shape_fail(c, "bottom[0] must have at least 1 axis");
  dd_shape t = *b;
  t.dims[0] = ix->dims[0];
  if (dd_shape_count_range(&t, 0, t.ndim) > DD_SHAPE_MAX_COUNT)
    return dd_shape_fail(c, "the top would hold more than %lld elements", (long long)DD_SHAPE_MAX_COUNT);
  c->tops[0] = t;
  return 0;
}

static int reindex_setup(dd_layer *l, char *err, size_t errlen) {
  reindex_priv *p = l->priv;
  size_t n = (size_t)l->bottom[1]->count;
  if (n <= p->cap && p->index) return 0;
  int64_t *ni = malloc((n ? n : 1) * sizeof *ni);
  if (!ni) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  free(p->index);
  p->index = ni;
  p->cap = n;
  return 0;
}

static void reindex_forward(dd_layer *l) {
  reindex_priv *p = l->priv;
  const dd_tensor *b = l->bottom[0], *ix = l->bottom[1];
  int64_t rows = b->shape.dims[0], inner = b->shape.ndim ? dd__count(b, 1, b->shape.ndim) : 1;
  float buf[256];
  for (int64_t k0 = 0; k0 < ix->count; k0 += 256) {
    int64_t n = ix->count - k0 < 256 ? ix->count - k0 : 256;
    l->be->ops->download(l->be, buf, ix->data + k0, (size_t)n * sizeof(float));
    for (int64_t k = 0; k < n; k++) {
      float v = buf[k];
      if (!(v >= 0 && v < (float)rows) || v != (float)(int64_t)v) {
        snprintf(l->status_msg, l->status_len,
                 "layer \"%s\": index %g (position %lld of bottom[1]) is not a row of bottom[0], which has %lld "
                 "(0 to %lld)",
                 l->name, v, (long long)(k0 + k), (long long)rows, (long long)rows - 1);
        *l->status = DD_EINVAL;
        return;
      }
      p->index[k0 + k] = (int64_t)v;
    }
  }
  for (int64_t i = 0; i < ix->count; i++)
    l->be->ops->copy(l->be, l->top[0]->data + i * inner, b->data + p->index[i] * inner, (size_t)inner * sizeof(float));
}

static void reindex_backward(dd_layer *l) {
  if (!l->propagate_down[0]) return;
  reindex_priv *p = l->priv;
  dd_tensor *b = l->bottom[0];
  int64_t inner = b->shape.ndim ? dd__count(b, 1, b->shape.ndim) : 1;
  l->be->ops->fill(l->be, b->diff, 0.0f, b->count);
  for (int64_t i = 0; i < l->bottom[1]->count; i++)
    l->be->ops->axpby(l->be, inner, 1.0f, l->top[0]->diff + i * inner, 1.0f, b->diff + p->index[i] * inner);
}

static void reindex_destroy(dd_layer *l) {
  reindex_priv *p = l->priv;
  free(p->index);
  p->index = NULL;
}

const dd_layer_ops dd_layer_batch_reindex = {
    .type = "BatchReindex", .min_bottoms = 2, .max_bottoms = 2, .min_tops = 1, .max_tops = 1,
    .shape = reindex_shape, .priv_size = sizeof(reindex_priv), .setup = reindex_setup,
    .forward = reindex_forward, .backward = reindex_backward, .destroy = reindex_destroy};
