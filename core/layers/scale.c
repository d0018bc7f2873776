/* Scale: y = x * scale (+ bias). Scale and Bias share Caffe's axis/num_axes rule: the parameter covers bottom axes
 * [axis, axis + num_axes) (num_axes -1: to the end). With two bottoms, the second bottom is the
 * scale (or bias) and no parameter is learned for it. */
#include <stdio.h>

#include "base/dd_error.h"
#include "net/layer.h"

/* Shape of the parameter over bottom[0]: fills *out. Returns 0 or an error. */
int dd__axes_param_shape(dd_shape_ctx *c, int axis, int num_axes, dd_shape *out) {
  const dd_shape *b = &c->bottoms[0];
  if (!dd_shape_known(b)) {
    *out = dd_shape_unknown();
    return 0;
  }
  int a = dd_shape_axis(b, axis);
  if (a < 0) return dd_shape_fail(c, "axis %d is out of range for a bottom with %d axes", axis, b->ndim);
  if (num_axes < -1) return dd_shape_fail(c, "num_axes must be >= -1");
  int end = num_axes == -1 ? b->ndim : a + num_axes;
  if (end > b->ndim)
    return dd_shape_fail(c, "axis %d + num_axes %d exceeds the bottom's %d axes", a, num_axes, b->ndim);
  *out = dd_shape_make(end - a, b->dims + a);
  return 0;
}

/* dd__axes_param_shape with its messages naming the field: `param` is "scale_param" or
 * "bias_param" (its messages start with "axis" or "num_axes"). */
int dd__axes_param_named(dd_shape_ctx *c, const char *param, int axis, int num_axes, dd_shape *out) {
  int r = dd__axes_param_shape(c, axis, num_axes, out);
  if (r && c->err && c->errlen) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s", c->err);
    dd_shape_fail(c, "%s.%s", param, msg);
  }
  return r;
}

/* Scale/Bias with two bottoms: bottom 1 must equal bottom 0's axes [axis, axis + its axes)
 * (a scalar fits anywhere), as Caffe checks. Returns 0 or an error. */
int dd__second_bottom_fits(dd_shape_ctx *c, int axis, const char *what) {
  const dd_shape *b1 = &c->bottoms[1];
  dd_shape want;
  int r;
  if (!dd_shape_known(&c->bottoms[0]) || !dd_shape_known(b1)) return 0;
  char param[16];
  snprintf(param, sizeof param, "%s_param", what);
  if ((r = dd__axes_param_named(c, param, b1->ndim ? axis : 0, b1->ndim, &want))) return r;
  if (!dd_shape_equal(&want, b1)) {
    char s1[64], s0[64], sw[64];
    return dd_shape_fail(c, "the %s (bottom 1) has shape %s, but bottom 0 (%s) has %s at axis %d", what,
                         dd_shape_str(b1, s1, sizeof s1), dd_shape_str(&c->bottoms[0], s0, sizeof s0),
                         dd_shape_str(&want, sw, sizeof sw), dd_shape_axis(&c->bottoms[0], axis));
  }
  return 0;
}

static int scale_shape(dd_shape_ctx *c) {
  const Caffe__ScaleParameter *p = c->lp->scale_param;
  int axis = p ? p->axis : 1, num_axes = p ? p->num_axes : 1, bias = p && p->bias_term;
  dd_shape ps;
  int r;
  c->tops[0] = c->bottoms[0];
  if (c->nb == 2) {
    ps = c->bottoms[1];
    c->n_params = bias ? 1 : 0;
    c->params[0] = ps;
    return dd__second_bottom_fits(c, axis, "scale");
  }
  if ((r = dd__axes_param_named(c, "scale_param", axis, num_axes, &ps))) return r;
  c->n_params = bias ? 2 : 1;
  c->params[0] = c->params[1] = ps;
  return 0;
}

/* Scale: constant 1 unless `filler` says otherwise; bias: constant 0 unless `bias_filler`. With
 * two bottoms the only parameter is the bias. */
static const Caffe__FillerParameter *scale_filler(const Caffe__LayerParameter *lp, int i,
                                                  Caffe__FillerParameter *dflt) {
  const Caffe__ScaleParameter *p = lp->scale_param;
  int is_bias = lp->n_bottom == 2 || i == 1;
  if (is_bias) return p && p->bias_filler ? p->bias_filler : dflt;
  if (p && p->filler) return p->filler;
  dflt->has_value = 1;
  dflt->value = 1.0f;
  return dflt;
}

typedef struct {
  int64_t outer, dim, inner;
  float *saved; /* a copy of the input when running in place (backward needs x) */
  size_t saved_cap;
} scale_priv;

static int scale_setup(dd_layer *l, char *err, size_t errlen) {
  scale_priv *sp = l->priv;
  const Caffe__ScaleParameter *p = l->lp->scale_param;
  const dd_shape *b = &l->bottom[0]->shape;
  int num_axes = l->nb == 2 ? l->bottom[1]->shape.ndim : (p ? p->num_axes : 1);
  int axis = l->nb == 2 && num_axes == 0 ? 0 : dd_shape_axis(b, p ? p->axis : 1); /* a scalar: axis 0 */
  int end = num_axes == -1 ? b->ndim : axis + num_axes;
  sp->outer = dd_shape_count_range(b, 0, axis);
  sp->dim = dd_shape_count_range(b, axis, end);
  sp->inner = dd_shape_count_range(b, end, b->ndim);
  if (l->top[0] == l->bottom[0] &&
      dd__ensure_buffer(l->be, (void **)&sp->saved, &sp->saved_cap, (size_t)l->bottom[0]->count * sizeof(float)))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  return 0;
}

static const float *scale_of(const dd_layer *l) {
  return l->nb == 2 ? l->bottom[1]->data : l->params[0]->data;
}
static dd_tensor *bias_of(const dd_layer *l) {
  const Caffe__ScaleParameter *p = l->lp->scale_param;
  if (!p || !p->bias_term) return NULL;
  return l->nb == 2 ? l->params[0] : l->params[1];
}

static void scale_forward(dd_layer *l) {
  scale_priv *sp = l->priv;
  if (sp->saved) l->be->ops->copy(l->be, sp->saved, l->bottom[0]->data, (size_t)l->bottom[0]->count * sizeof(float));
  dd_tensor *bias = bias_of(l);
  l->be->ops->channel_affine(l->be, sp->outer, sp->dim, sp->inner, l->top[0]->data,
                             l->bottom[0]->data, scale_of(l), bias ? bias->data : NULL);
}

static void scale_backward(dd_layer *l) {
  scale_priv *sp = l->priv;
  const float *x = sp->saved ? sp->saved : l->bottom[0]->data;
  dd_tensor *bias = bias_of(l);
  int bias_pd = bias && l->param_propagate_down[l->nb == 2 ? 0 : 1];
  float *dscale = NULL;
  if (l->nb == 2) {
    if (l->propagate_down[1]) {
      l->be->ops->fill(l->be, l->bottom[1]->diff, 0.0f, l->bottom[1]->count);
      dscale = l->bottom[1]->diff;
    }
  } else if (l->param_propagate_down[0]) {
    dscale = l->params[0]->diff;
  }
  l->be->ops->channel_affine_backward(l->be, sp->outer, sp->dim, sp->inner,
                                      l->propagate_down[0] ? l->bottom[0]->diff : NULL, dscale,
                                      bias_pd ? bias->diff : NULL, l->top[0]->diff, x, scale_of(l));
}

static void scale_destroy(dd_layer *l) {
  scale_priv *sp = l->priv;
  if (sp->saved) l->be->ops->free(l->be, sp->saved);
}

const dd_layer_ops dd_layer_scale = {
    .type = "Scale", .min_bottoms = 1, .max_bottoms = 2, .min_tops = 1, .max_tops = 1,
    .shape = scale_shape, .filler = scale_filler, .priv_size = sizeof(scale_priv),
    .setup = scale_setup, .forward = scale_forward, .backward = scale_backward,
    .destroy = scale_destroy};
