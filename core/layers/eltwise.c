/* Eltwise: SUM (with per-bottom coeff), PROD or MAX over bottoms of one shape. */
#include "base/dd_error.h"
#include "net/layer.h"

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

typedef struct {
  int32_t *argmax; /* MAX: which bottom won, per element (marked as max_mark says) */
  size_t cap;
  float *saved; /* MAX in place: a copy of bottom 0 */
  size_t saved_cap;
} eltwise_priv;

/* MAX marks each element's winner: bottom 1 as 0 (what a zeroed buffer holds), bottom 0 as 1,
 * bottom i >= 2 as i. */
static int32_t max_mark(int i) { return i == 0 ? 1 : i == 1 ? 0 : i; }

static int op_of(const dd_layer *l) {
  return l->lp->eltwise_param ? l->lp->eltwise_param->operation : CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__SUM;
}
static float coeff(const dd_layer *l, int i) {
  const Caffe__EltwiseParameter *p = l->lp->eltwise_param;
  return p && p->n_coeff ? p->coeff[i] : 1.0f;
}

static int eltwise_setup(dd_layer *l, char *err, size_t errlen) {
  eltwise_priv *ep = l->priv;
  if (op_of(l) == CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__MAX &&
      dd__ensure_buffer(l->be, (void **)&ep->argmax, &ep->cap, (size_t)l->top[0]->count * sizeof(int32_t)))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  for (int i = 0; i < l->nb; i++)
    if (l->bottom[i] == l->top[0] && (i > 0 || op_of(l) == CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__PROD))
      return dd_errorf(DD_EINVAL, err, errlen,
                       "Eltwise cannot run in place here (only SUM and MAX, on bottom 0): give the top its own name");
  if (op_of(l) == CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__MAX && l->bottom[0] == l->top[0] &&
      dd__ensure_buffer(l->be, (void **)&ep->saved, &ep->saved_cap, (size_t)l->top[0]->count * sizeof(float)))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  return 0;
}

static void eltwise_forward(dd_layer *l) {
  const dd_backend_ops *o = l->be->ops;
  int64_t n = l->top[0]->count;
  float *y = l->top[0]->data;
  switch (op_of(l)) {
    case CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__SUM:
      o->scale(l->be, n, coeff(l, 0), l->bottom[0]->data, y);
      for (int i = 1; i < l->nb; i++) o->axpby(l->be, n, coeff(l, i), l->bottom[i]->data, 1.0f, y);
      break;
    case CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__PROD:
      o->mul(l->be, n, y, l->bottom[0]->data, l->bottom[1]->data);
      for (int i = 2; i < l->nb; i++) o->mul(l->be, n, y, y, l->bottom[i]->data);
      break;
    default: { /* MAX, as Caffe: bottom 1 unless bottom 0 is strictly greater (a tie goes to
                  bottom 1), then bottom i >= 2 where it is strictly greater */
      eltwise_priv *ep = l->priv;
      const float *b0 = l->bottom[0]->data;
      if (ep->saved) {
        o->copy(l->be, ep->saved, b0, (size_t)n * sizeof(float));
        b0 = ep->saved;
      }
      o->copy(l->be, y, l->bottom[1]->data, (size_t)n * sizeof(float));
      o->fill(l->be, (float *)ep->argmax, 0.0f, n); /* all-zero bits: max_mark(1) */
      o->max_update(l->be, n, y, ep->argmax, b0, max_mark(0));
      for (int i = 2; i < l->nb; i++) o->max_update(l->be, n, y, ep->argmax, l->bottom[i]->data, max_mark(i));
    }
  }
}

static void eltwise_backward(dd_layer *l) {
  const dd_backend_ops *o = l->be->ops;
  int64_t n = l->top[0]->count;
  const float *dy = l->top[0]->diff;
  /* Bottom 0 last: in place, its diff is the top's diff. */
  for (int i = l->nb - 1; i >= 0; i--) {
    if (!l->propagate_down[i]) continue;
    float *dx = l->bottom[i]->diff;
    switch (op_of(l)) {
      case CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__SUM:
        o->scale(l->be, n, coeff(l, i), dy, dx);
        break;
      case CAFFE__ELTWISE_PARAMETER__ELTWISE_OP__PROD: { /* dx_i = dy * prod of the others */
        int first = 1;
        for (int j = 0; j < l->nb; j++) {
          if (j == i) continue;
          o->mul(l->be, n, dx, first ? dy : dx, l->bottom[j]->data);
          first = 0;
        }
        break;
      }
      default: {
        eltwise_priv *ep = l->priv;
        o->max_backward(l->be, n, dx, dy, ep->argmax, max_mark(i));
      }
    }
  }
}

static void eltwise_destroy(dd_layer *l) {
  eltwise_priv *ep = l->priv;
  if (ep->argmax) l->be->ops->free(l->be, ep->argmax);
  if (ep->saved) l->be->ops->free(l->be, ep->saved);
}

const dd_layer_ops dd_layer_eltwise = {
    .type = "Eltwise", .min_bottoms = 2, .max_bottoms = -1, .min_tops = 1, .max_tops = 1,
    .shape = eltwise_shape, .priv_size = sizeof(eltwise_priv), .setup = eltwise_setup,
    .forward = eltwise_forward, .backward = eltwise_backward, .destroy = eltwise_destroy};
