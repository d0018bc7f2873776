/* LSTM (Caffe's LSTMLayer), computed directly instead of Caffe's unrolled net, with its numbers:
 *   gates_t = W_xc x_t + b_c [+ W_xc_static x_static] + W_hc (cont_t h_{t-1})   (N, 4H: i, f, o, g)
 *   c_t, h_t = LSTMUnit(c_{t-1}, gates_t, cont_t)     (backend.h's lstm_unit_forward)
 * the top y (T, N, H) holds h_1..h_T. Parameters in Caffe's order: W_xc (4H, I), b_c (4H),
 * [W_xc_static (4H, S)], W_hc (4H, H). Bottoms, tops, the carried state and expose_hidden:
 * layers/recurrent.h. Backward through time: every parameter, x and x_static. */
#include "base/dd_error.h"
#include "layers/recurrent.h"

typedef struct {
  dd_recur_dims d;
  void *slab;
  size_t cap;
  int64_t state_n;          /* N the state was sized for (0: never) */
  float *gates;             /* (T, N, 4H) pre-activations */
  float *cell;              /* (T, N, H) c_t */
  float *hc;                /* (T, N, H) cont_t * h_{t-1}, W_hc's input */
  float *c0;                /* (N, H) this pass's c_0 */
  float *state_h, *state_c; /* (N, H) h_T, c_T of the last forward: where the next one starts */
  float *dgates;            /* (T, N, 4H) */
  float *dh, *dc;           /* (N, H) the step's d/dh_t, d/dc_t */
  float *scr;               /* (N, 4H) */
} lstm_priv;

static int lstm_shape(dd_shape_ctx *c) { return dd__recur_shape(c, 2, 4, 0); }

static const Caffe__FillerParameter *lstm_filler(const Caffe__LayerParameter *lp, int i,
                                                 Caffe__FillerParameter *dflt) {
  return dd__recur_filler(lp, i, dflt, 0);
}

static int lstm_setup(dd_layer *l, char *err, size_t errlen) {
  lstm_priv *r = l->priv;
  if (dd__need_kernel(l, (const void *)l->be->ops->lstm_unit_forward, "LSTM (lstm_unit)", err, errlen) ||
      dd__need_kernel(l, (const void *)l->be->ops->lstm_unit_backward, "LSTM backward (lstm_unit)", err, errlen))
    return DD_EUNSUPPORTED;
  dd__recur_dims(l, 2, 4, &r->d);
  int64_t tnh = r->d.T * r->d.N * r->d.H, nh = r->d.N * r->d.H;
  const int64_t sizes[10] = {4 * tnh, tnh, tnh, nh, nh, nh, 4 * tnh, nh, nh, 4 * nh};
  float **ptr[10] = {&r->gates, &r->cell, &r->hc, &r->c0, &r->state_h, &r->state_c,
                     &r->dgates, &r->dh, &r->dc, &r->scr};
  float *p[10];
  if (dd__recur_carve(l->be, &r->slab, &r->cap, sizes, p, 10))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory for the LSTM's %lld time steps", (long long)r->d.T);
  for (int k = 0; k < 10; k++) *ptr[k] = p[k];
  if (r->state_n != r->d.N) { /* a new state starts at zero */
    l->be->ops->fill(l->be, r->state_h, 0.0f, nh);
    l->be->ops->fill(l->be, r->state_c, 0.0f, nh);
  }
  r->state_n = r->d.N;
  return 0;
}

static void lstm_forward(dd_layer *l) {
  lstm_priv *r = l->priv;
  const dd_recur_dims *d = &r->d;
  dd_backend *be = l->be;
  int N = (int)d->N, H = (int)d->H;
  int64_t nh = d->N * d->H;
  size_t nh_bytes = (size_t)nh * sizeof(float);
  const float *cont = l->bottom[1]->data, *whc = l->params[d->p_h]->data;
  float *y = l->top[0]->data;
  dd__recur_input_forward(l, d, r->gates, r->scr);
  const float *hp = d->expose ? l->bottom[d->i_h0]->data : r->state_h;
  be->ops->copy(be, r->c0, d->expose ? l->bottom[d->i_h0 + 1]->data : r->state_c, nh_bytes);
  const float *cp = r->c0;
  for (int64_t t = 0; t < d->T; t++) {
    float *hc = r->hc + t * nh, *g = r->gates + t * 4 * nh;
    be->ops->channel_affine(be, 1, N, H, hc, hp, cont + t * N, NULL); /* cont_t h_{t-1} */
    be->ops->gemm(be, 0, 1, N, 4 * H, H, 1.0f, hc, whc, 1.0f, g);
    be->ops->lstm_unit_forward(be, N, H, r->cell + t * nh, y + t * nh, cp, g, cont + t * N);
    hp = y + t * nh;
    cp = r->cell + t * nh;
  }
  be->ops->copy(be, d->expose ? l->top[1]->data : r->state_h, hp, nh_bytes);
  be->ops->copy(be, d->expose ? l->top[2]->data : r->state_c, cp, nh_bytes);
}

static void lstm_backward(dd_layer *l) {
  lstm_priv *r = l->priv;
  const dd_recur_dims *d = &r->d;
  dd_backend *be = l->be;
  int N = (int)d->N, H = (int)d->H, TN = (int)(d->T * d->N);
  int64_t nh = d->N * d->H;
  const float *cont = l->bottom[1]->data, *whc = l->params[d->p_h]->data, *dy = l->top[0]->diff;
  be->ops->fill(be, r->dc, 0.0f, nh); /* nothing flows back from past the last step */
  for (int64_t t = d->T - 1; t >= 0; t--) {
    be->ops->copy(be, r->dh, dy + t * nh, (size_t)nh * sizeof(float));
    if (t + 1 < d->T) { /* from step t + 1: cont_{t+1} (dgates_{t+1} W_hc) */
      be->ops->channel_affine(be, 1, N, 4 * H, r->scr, r->dgates + (t + 1) * 4 * nh, cont + (t + 1) * N, NULL);
      be->ops->gemm(be, 0, 0, N, H, 4 * H, 1.0f, r->scr, whc, 1.0f, r->dh);
    }
    const float *cp = t ? r->cell + (t - 1) * nh : r->c0;
    be->ops->lstm_unit_backward(be, N, H, r->dc, r->dgates + t * 4 * nh, cp, r->gates + t * 4 * nh,
                                cont + t * N, r->cell + t * nh, r->dc, r->dh);
  }
  if (l->param_propagate_down[d->p_h]) /* dW_hc (4H, H) += dgates^T hc */
    be->ops->gemm(be, 1, 0, 4 * H, H, TN, 1.0f, r->dgates, r->hc, 1.0f, l->params[d->p_h]->diff);
  dd__recur_input_backward(l, d, r->dgates, r->scr);
}

static void lstm_destroy(dd_layer *l) {
  lstm_priv *r = l->priv;
  if (r->slab) l->be->ops->free(l->be, r->slab);
}

const dd_layer_ops dd_layer_lstm = {
    .type = "LSTM", .min_bottoms = 2, .max_bottoms = 5, .min_tops = 1, .max_tops = 3,
    .shape = lstm_shape, .filler = lstm_filler, .priv_size = sizeof(lstm_priv), .setup = lstm_setup,
    .forward = lstm_forward, .backward = lstm_backward, .destroy = lstm_destroy};
