/* Eltwise: SUM (with per-bottom coeff), PROD or MAX over bottoms of one shape. */
#include "dd_error.h"
#include "layer.h"

static int eltwise_shape(dd_shape_ctx *c) {
  const Caffe__EltwiseParameter *p = c->lp->eltwise_param;
  if (p && p->n_coeff) {
    if (p->operation != CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__SUM)
      return dd_shape_fail(c, "eltwise coeff applies to SUM only");
    if ((int)p->n_coeff != c->nb)
      return dd_shape_fail(c, "eltwise has %zu coeff for %d bottoms: give one per bottom", p->n_coeff, c->nb);
  }
  c->tops[0] = c->bottoms[0];
  for (int i = 1; i < c->nb; i++) {
    if (!dd_shape_known(&c->bottoms[i])) {
      c->tops[0] = dd_shape_unknown();
      continue;
    }
    if (dd_shape_known(&c->bottoms[0]) && !dd_shape_equal(&c->bottoms[0], &c->bottoms[i])) {
      char a[64], b[64];
      return dd_shape_fail(c, "bottom %d has shape %s but bottom 0 has %s: eltwise needs equal shapes", i,
                           dd_shape_str(&c->bottoms[i], b, sizeof b), dd_shape_str(&c->bottoms[0], a, sizeof a));
    }
  }
  return 0;
}

const dd_layer_ops dd_layer_eltwise = {"Eltwise", 2, -1, 1, 1, 0, eltwise_shape};
