/* LSTMUnit (Caffe's LSTMUnitLayer): one step of the LSTM cell, the building block of Caffe's
 * unrolled LSTM. Bottoms c_prev (1, N, H), gates (1, N, 4H) (pre-activations i, f, o, g), cont
 * (1, N); tops c (1, N, H), h (1, N, H); the formulas are backend.h's lstm_unit_forward (the
 * forget gate is cont * sigmoid, zero where cont is 0). Backward: c_prev and the gates; cont gets
 * no gradient. No parameters. */
#include <string.h>

#include "base/dd_error.h"
#include "net/layer.h"

static int lstm_unit_shape(dd_shape_ctx *c) {
  static const char *const names[3] = {"c_prev", "gates", "cont"};
  char s1[64];
  for (int t = 0; t < 2 && t < (int)c->lp->n_top; t++)
    if (t < (int)c->lp->n_bottom && !strcmp(c->lp->top[t], c->lp->bottom[t]))
      return dd_shape_fail(c, "LSTMUnit cannot run in place (top %d \"%s\" is bottom %d): backward reads both",
                           t, c->lp->top[t], t);
  c->n_params = 0;
  if (!dd_shape_bottoms_known(c)) {
    c->tops[0] = c->tops[1] = dd_shape_unknown();
    return 0;
  }
  const dd_shape *b = c->bottoms;
  int64_t N = b[0].ndim >= 2 ? b[0].dims[1] : -1;
  for (int i = 0; i < 3; i++) {
    int want = i == 2 ? 2 : 3;
    if (b[i].ndim != want || b[i].dims[0] != 1 || b[i].dims[1] != N)
      return dd_shape_fail(c, "bottom %d (%s) must be (1, N%s) with N = %lld, bottom 0's axis 1; it is %s", i,
                           names[i], i == 0 ? ", H" : i == 1 ? ", 4 H" : "", (long long)N,
                           dd_shape_str(&b[i], s1, sizeof s1));
  }
  if (b[1].dims[2] != 4 * b[0].dims[2])
    return dd_shape_fail(c, "bottom 1 (gates) has %lld gate inputs per stream, but 4 H = %lld (H = %lld, bottom 0's "
                         "axis 2)", (long long)b[1].dims[2], (long long)(4 * b[0].dims[2]), (long long)b[0].dims[2]);
  c->tops[0] = c->tops[1] = b[0];
  return 0;
}

static int lstm_unit_setup(dd_layer *l, char *err, size_t errlen) {
  if (dd__need_kernel(l, (const void *)l->be->ops->lstm_unit_forward, "LSTMUnit", err, errlen)) return DD_EUNSUPPORTED;
  return dd__need_kernel(l, (const void *)l->be->ops->lstm_unit_backward, "LSTMUnit backward", err, errlen);
}

static void lstm_unit_forward(dd_layer *l) {
  const dd_tensor *cp = l->bottom[0];
  l->be->ops->lstm_unit_forward(l->be, cp->shape.dims[1], cp->shape.dims[2], l->top[0]->data, l->top[1]->data,
                                cp->data, l->bottom[1]->data, l->bottom[2]->data);
}

static void lstm_unit_backward(dd_layer *l) {
  if (!l->propagate_down[0] && !l->propagate_down[1]) return;
  const dd_tensor *cp = l->bottom[0];
  l->be->ops->lstm_unit_backward(l->be, cp->shape.dims[1], cp->shape.dims[2],
                                 l->propagate_down[0] ? l->bottom[0]->diff : NULL,
                                 l->propagate_down[1] ? l->bottom[1]->diff : NULL, cp->data, l->bottom[1]->data,
                                 l->bottom[2]->data, l->top[0]->data, l->top[0]->diff, l->top[1]->diff);
}

const dd_layer_ops dd_layer_lstm_unit = {
    .type = "LSTMUnit", .min_bottoms = 3, .max_bottoms = 3, .min_tops = 2, .max_tops = 2,
    .shape = lstm_unit_shape, .setup = lstm_unit_setup, .forward = lstm_unit_forward,
    .backward = lstm_unit_backward};
