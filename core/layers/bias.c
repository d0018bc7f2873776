/* Bias: y = x + bias, with Scale's axis/num_axes rule (see scale.c). */
#include "base/dd_error.h"
#include "net/layer.h"

int dd__second_bottom_fits(dd_shape_ctx *c, int axis, const char *what);                     /* scale.c */
int dd__axes_param_named(dd_shape_ctx *c, const char *param, int axis, int num_axes, dd_shape *out); /* scale.c */

static int bias_shape(dd_shape_ctx *c) {
  const Caffe__BiasParameter *p = c->lp->bias_param;
  int axis = p ? p->axis : 1, num_axes = p ? p->num_axes : 1;
  c->tops[0] = c->bottoms[0];
  if (c->nb == 2) {
    c->n_params = 0;
    return dd__second_bottom_fits(c, axis, "bias");
  }
  c->n_params = 1;
  return dd__axes_param_named(c, "bias_param", axis, num_axes, &c->params[0]);
}

static const Caffe__FillerParameter *bias_filler(const Caffe__LayerParameter *lp, int i,
                                                 Caffe__FillerParameter *dflt) {
  (void)i;
  return lp->bias_param && lp->bias_param->filler ? lp->bias_param->filler : dflt;
}

typedef struct {
  int64_t outer, dim, inner;
} bias_priv;

static int bias_setup(dd_layer *l, char *err, size_t errlen) {
  (void)err;
  (void)errlen;
  bias_priv *bp = l->priv;
  const Caffe__BiasParameter *p = l->lp->bias_param;
  const dd_shape *b = &l->bottom[0]->shape;
  int num_axes = l->nb == 2 ? l->bottom[1]->shape.ndim : (p ? p->num_axes : 1);
  int axis = l->nb == 2 && num_axes == 0 ? 0 : dd_shape_axis(b, p ? p->axis : 1); /* a scalar: axis 0 */
  int end = num_axes == -1 ? b->ndim : axis + num_axes;
  bp->outer = dd_shape_count_range(b, 0, axis);
  bp->dim = dd_shape_count_range(b, axis, end);
  bp->inner = dd_shape_count_range(b, end, b->ndim);
  return 0;
}

static void bias_forward(dd_layer *l) {
  bias_priv *bp = l->priv;
  const float *bias = l->nb == 2 ? l->bottom[1]->data : l->params[0]->data;
  l->be->ops->channel_affine(l->be, bp->outer, bp->dim, bp->inner, l->top[0]->data, l->bottom[0]->data, NULL, bias);
}

static void bias_backward(dd_layer *l) {
  bias_priv *bp = l->priv;
  float *dbias = NULL;
  if (l->nb == 2) {
    if (l->propagate_down[1]) {
      l->be->ops->fill(l->be, l->bottom[1]->diff, 0.0f, l->bottom[1]->count);
      dbias = l->bottom[1]->diff;
    }
  } else if (l->param_propagate_down[0]) {
    dbias = l->params[0]->diff;
  }
  l->be->ops->channel_affine_backward(l->be, bp->outer, bp->dim, bp->inner,
                                      l->propagate_down[0] ? l->bottom[0]->diff : NULL, NULL, dbias,
                                      l->top[0]->diff, NULL, NULL);
}

const dd_layer_ops dd_layer_bias = {
    .type = "Bias", .min_bottoms = 1, .max_bottoms = 2, .min_tops = 1, .max_tops = 1,
    .shape = bias_shape, .filler = bias_filler, .priv_size = sizeof(bias_priv), .setup = bias_setup,
    .forward = bias_forward, .backward = bias_backward};
