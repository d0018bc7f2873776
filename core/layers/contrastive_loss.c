/* ContrastiveLoss (Caffe; Hadsell, Chopra and LeCun 2006): (a, b, sim) -> sum over the N pairs
 * of d^2 (similar pairs: sim, truncated to an integer, not 0) or max(margin - d, 0)^2
 * (dissimilar pairs; contrastive_loss_param.legacy_version: max(margin - d^2, 0)), divided by
 * 2 N, d = |a - b| per pair. a and b are (N, C) or (N, C, 1, 1); sim holds one value per pair.
 * Both feature bottoms get Caffe's gradient (its dissimilar term divides by d + 1e-4); sim
 * gets none. */
#include "base/dd_error.h"
#include "layers/loss_util.h"

/* Caffe's checks: channels equal, height and width 1 (legacy accessors, at most 4 axes). */
static int contrastive_shape(dd_shape_ctx *c) {
  int r;
  if ((r = dd__loss_reshape(c, "first feature", "second feature"))) return r;
  if (!dd_shape_bottoms_known(c)) return 0;
  char s1[64], s2[64];
  for (int i = 0; i < 2; i++)
    if (dd__legacy_dim(&c->bottoms[i], 2) != 1 || dd__legacy_dim(&c->bottoms[i], 3) != 1)
      return dd_shape_fail(c, "bottom %d is %s: the features must be (N, C) or (N, C, 1, 1)", i,
                           dd_shape_str(&c->bottoms[i], s1, sizeof s1));
  if (dd__legacy_dim(&c->bottoms[0], 1) != dd__legacy_dim(&c->bottoms[1], 1))
    return dd_shape_fail(c, "the features %s and %s must have the same number of channels",
                         dd_shape_str(&c->bottoms[0], s1, sizeof s1), dd_shape_str(&c->bottoms[1], s2, sizeof s2));
  const dd_shape *sim = &c->bottoms[2];
  if (dd__legacy_dim(sim, 1) != 1 || dd__legacy_dim(sim, 2) != 1 || dd__legacy_dim(sim, 3) != 1 ||
      dd_shape_count(sim) != c->bottoms[0].dims[0])
    return dd_shape_fail(c, "the similarity bottom (bottom 2) is %s: it must be (N) or (N, 1, 1, 1), one value per pair "
                            "of %s",
                         dd_shape_str(sim, s1, sizeof s1), dd_shape_str(&c->bottoms[0], s2, sizeof s2));
  return 0;
}

static void params(const dd_layer *l, float *margin, int *legacy) {
  const Caffe__ContrastiveLossParameter *p = l->lp->contrastive_loss_param;
  *margin = p ? p->margin : 1.0f;
  *legacy = p ? p->legacy_version : 0;
}

static int contrastive_setup(dd_layer *l, char *err, size_t errlen) {
  if (dd__need_kernel(l, (const void *)l->be->ops->contrastive_forward, "ContrastiveLoss", err, errlen))
    return DD_EUNSUPPORTED;
  return dd__need_kernel(l, (const void *)l->be->ops->contrastive_backward, "ContrastiveLoss backward", err, errlen);
}

static void contrastive_forward(dd_layer *l) {
  float margin;
  int legacy;
  params(l, &margin, &legacy);
  int64_t n = l->bottom[0]->shape.dims[0], ch = n ? l->bottom[0]->count / n : 0;
  double loss = l->be->ops->contrastive_forward(l->be, n, ch, l->bottom[0]->data, l->bottom[1]->data,
                                                l->bottom[2]->data, margin, legacy);
  dd__set_scalar(l->top[0], (float)(n ? loss / (double)n / 2.0 : 0.0));
}

static void contrastive_backward(dd_layer *l) {
  if (!l->propagate_down[0] && !l->propagate_down[1]) return; /* sim never gets a gradient */
  float margin;
  int legacy;
  params(l, &margin, &legacy);
  int64_t n = l->bottom[0]->shape.dims[0], ch = n ? l->bottom[0]->count / n : 0;
  if (!n) return;
  l->be->ops->contrastive_backward(l->be, n, ch, l->propagate_down[0] ? l->bottom[0]->diff : NULL,
                                   l->propagate_down[1] ? l->bottom[1]->diff : NULL, l->bottom[0]->data,
                                   l->bottom[1]->data, l->bottom[2]->data, margin, legacy,
                                   dd__loss_top_diff(l) / (float)n);
}

const dd_layer_ops dd_layer_contrastive_loss = {
    .type = "ContrastiveLoss", .min_bottoms = 3, .max_bottoms = 3, .min_tops = 1, .max_tops = 1, .is_loss = 1,
    .shape = contrastive_shape, .setup = contrastive_setup, .forward = contrastive_forward,
    .backward = contrastive_backward};
