/* MVN (Caffe's MVNLayer): subtracts each item's mean (per channel, or over all channels with
 * mvn_param.across_channels), and with normalize_variance (default true) divides by the standard
 * deviation plus eps (1e-9), as Caffe adds it: (x - mean) / (sqrt(var) + eps). The per-row
 * deviation is kept for the backward. Not in place (the backward needs the output and the
 * top's gradient apart). */
#include <string.h>

#include "base/dd_error.h"
#include "net/layer.h"

typedef struct {
  float *sd;
  size_t sd_cap;
} mvn_priv;

static int mvn_shape(dd_shape_ctx *c) {
  const Caffe__LayerParameter *lp = c->lp;
  if (lp->n_top && lp->n_bottom && !strcmp(lp->top[0], lp->bottom[0]))
    return dd_shape_fail(c, "MVN cannot run in place (top \"%s\" is its bottom)", lp->top[0]);
  const dd_shape *b = &c->bottoms[0];
  if (dd_shape_known(b) && b->ndim < 2)
    return dd_shape_fail(c, "MVN needs a bottom with at least 2 axes (N, C, ...), this one has %d", b->ndim);
  c->tops[0] = *b;
  return 0;
}

static void rows_dim(const dd_layer *l, int64_t *rows, int64_t *dim) {
  const dd_tensor *b = l->bottom[0];
  int across = l->lp->mvn_param && l->lp->mvn_param->across_channels;
  *rows = across ? b->shape.dims[0] : b->shape.dims[0] * b->shape.dims[1];
  *dim = *rows ? b->count / *rows : 0;
}

static int nv(const dd_layer *l) { return !l->lp->mvn_param || l->lp->mvn_param->normalize_variance; }

static int mvn_setup(dd_layer *l, char *err, size_t errlen) {
  mvn_priv *p = l->priv;
  int r = dd__need_kernel(l, (const void *)l->be->ops->mvn_forward, "MVN", err, errlen);
  if (!r) r = dd__need_kernel(l, (const void *)l->be->ops->mvn_backward, "MVN", err, errlen);
  int64_t rows, dim;
  rows_dim(l, &rows, &dim);
  if (!r && dd__ensure_buffer(l->be, (void **)&p->sd, &p->sd_cap, (size_t)(rows ? rows : 1) * sizeof(float)))
    r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  return r;
}

static void mvn_forward(dd_layer *l) {
  mvn_priv *p = l->priv;
  int64_t rows, dim;
  rows_dim(l, &rows, &dim);
  if (rows && dim)
    l->be->ops->mvn_forward(l->be, rows, dim, nv(l), l->lp->mvn_param ? l->lp->mvn_param->eps : 1e-9f, l->top[0]->data,
                            p->sd, l->bottom[0]->data);
}

static void mvn_backward(dd_layer *l) {
  if (!l->propagate_down[0]) return;
  mvn_priv *p = l->priv;
  int64_t rows, dim;
  rows_dim(l, &rows, &dim);
  if (rows && dim)
    l->be->ops->mvn_backward(l->be, rows, dim, nv(l), l->bottom[0]->diff, l->top[0]->diff, l->top[0]->data, p->sd);
}

static void mvn_destroy(dd_layer *l) {
  mvn_priv *p = l->priv;
  if (p->sd) l->be->ops->free(l->be, p->sd);
}

const dd_layer_ops dd_layer_mvn = {
    .type = "MVN", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = mvn_shape, .priv_size = sizeof(mvn_priv), .setup = mvn_setup, .forward = mvn_forward,
    .backward = mvn_backward, .destroy = mvn_destroy};
