/* RNN (Caffe's RNNLayer), computed directly instead of Caffe's unrolled net, with its numbers:
 *   h_t = tanh(W_xh x_t + b_h [+ W_xh_static x_static] + W_hh (cont_t h_{t-1}))
 *   o_t = tanh(W_ho h_t + b_o)                                      (the top y, (T, N, H))
 * Parameters in Caffe's order: W_xh (H, I), b_h (H), [W_xh_static (H, S)], W_hh (H, H),
 * W_ho (H, H), b_o (H). Bottoms, tops, the carried state and expose_hidden: layers/recurrent.h.
 * Backward through time: every parameter, x and x_static. */
#include "base/dd_error.h"
#include "layers/recurrent.h"

typedef struct {
  dd_recur_dims d;
  void *slab;
  size_t cap;
  int64_t state_n; /* N the state was sized for (0: never) */
  float *hs;       /* (T, N, H) h_t */
  float *hc;       /* (T, N, H) cont_t * h_{t-1}, W_hh's input */
  float *o;        /* (T, N, H) the output o_t (y may be changed in place after us) */
  float *state;    /* (N, H) h_T of the last forward: where the next one starts */
  float *dz;       /* (T, N, H) d/d(W_ho h_t + b_o) */
  float *dh;       /* (T, N, H) d/dh_t, then d/d(the pre-activation of h_t) */
  float *scr;      /* (N, H) */
} rnn_priv;

static int rnn_shape(dd_shape_ctx *c) { return dd__recur_shape(c, 1, 1, 1); }

static const Caffe__FillerParameter *rnn_filler(const Caffe__LayerParameter *lp, int i,
                                                Caffe__FillerParameter *dflt) {
  return dd__recur_filler(lp, i, dflt, 1);
}

static int rnn_setup(dd_layer *l, char *err, size_t errlen) {
  rnn_priv *r = l->priv;
  if (dd__need_kernel(l, (const void *)l->be->ops->rnn_tanh_forward, "RNN (tanh)", err, errlen) ||
      dd__need_kernel(l, (const void *)l->be->ops->rnn_tanh_backward, "RNN backward (tanh)", err, errlen))
    return DD_EUNSUPPORTED;
  dd__recur_dims(l, 1, 1, &r->d);
  int64_t tnh = r->d.T * r->d.N * r->d.H, nh = r->d.N * r->d.H;
  const int64_t sizes[7] = {tnh, tnh, tnh, nh, tnh, tnh, nh};
  float **ptr[7] = {&r->hs, &r->hc, &r->o, &r->state, &r->dz, &r->dh, &r->scr};
  float *p[7];
  if (dd__recur_carve(l->be, &r->slab, &r->cap, sizes, p, 7))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory for the RNN's %lld time steps", (long long)r->d.T);
  for (int k = 0; k < 7; k++) *ptr[k] = p[k];
  if (r->state_n != r->d.N) l->be->ops->fill(l->be, r->state, 0.0f, nh); /* a new state starts at zero */
  r->state_n = r->d.N;
  return 0;
}

static void rnn_forward(dd_layer *l) {
  rnn_priv *r = l->priv;
  const dd_recur_dims *d = &r->d;
  dd_backend *be = l->be;
  int N = (int)d->N, H = (int)d->H, TN = (int)(d->T * d->N);
  int64_t nh = d->N * d->H;
  const float *cont = l->bottom[1]->data, *whh = l->params[d->p_h]->data;
  dd__recur_input_forward(l, d, r->hs, r->scr);
  const float *hp = d->expose ? l->bottom[d->i_h0]->data : r->state;
  for (int64_t t = 0; t < d->T; t++) {
    float *hc = r->hc + t * nh, *hs = r->hs + t * nh;
    be->ops->channel_affine(be, 1, N, H, hc, hp, cont + t * N, NULL); /* cont_t h_{t-1} */
    be->ops->gemm(be, 0, 1, N, H, H, 1.0f, hc, whh, 1.0f, hs);
    be->ops->rnn_tanh_forward(be, nh, hs, hs);
    hp = hs;
  }
  /* o (TN, H) = tanh(hs W_ho^T + b_o) */
  be->ops->gemm(be, 0, 1, TN, H, H, 1.0f, r->hs, l->params[d->p_h + 1]->data, 0.0f, r->o);
  be->ops->channel_affine(be, TN, H, 1, r->o, r->o, NULL, l->params[d->p_h + 2]->data);
  be->ops->rnn_tanh_forward(be, (int64_t)TN * H, r->o, r->o);
  be->ops->copy(be, l->top[0]->data, r->o, (size_t)TN * H * sizeof(float));
  be->ops->copy(be, d->expose ? l->top[1]->data : r->state, hp, (size_t)nh * sizeof(float));
}

static void rnn_backward(dd_layer *l) {
  rnn_priv *r = l->priv;
  const dd_recur_dims *d = &r->d;
  dd_backend *be = l->be;
  int N = (int)d->N, H = (int)d->H, TN = (int)(d->T * d->N);
  int64_t nh = d->N * d->H;
  const float *cont = l->bottom[1]->data, *whh = l->params[d->p_h]->data, *who = l->params[d->p_h + 1]->data;
  be->ops->rnn_tanh_backward(be, (int64_t)TN * H, r->dz, l->top[0]->diff, r->o);
  if (l->param_propagate_down[d->p_h + 1]) /* dW_ho (H, H) += dz^T hs */
    be->ops->gemm(be, 1, 0, H, H, TN, 1.0f, r->dz, r->hs, 1.0f, l->params[d->p_h + 1]->diff);
  if (l->param_propagate_down[d->p_h + 2])
    be->ops->channel_affine_backward(be, TN, H, 1, NULL, NULL, l->params[d->p_h + 2]->diff, r->dz, NULL, NULL);
  be->ops->gemm(be, 0, 0, TN, H, H, 1.0f, r->dz, who, 0.0f, r->dh); /* from the outputs */
  for (int64_t t = d->T - 1; t >= 0; t--) {
    float *dh = r->dh + t * nh;
    if (t + 1 < d->T) { /* from step t + 1: cont_{t+1} (da_{t+1} W_hh) */
      be->ops->channel_affine(be, 1, N, H, r->scr, r->dh + (t + 1) * nh, cont + (t + 1) * N, NULL);
      be->ops->gemm(be, 0, 0, N, H, H, 1.0f, r->scr, whh, 1.0f, dh);
    }
    be->ops->rnn_tanh_backward(be, nh, dh, dh, r->hs + t * nh);
  }
  if (l->param_propagate_down[d->p_h]) /* dW_hh (H, H) += da^T hc */
    be->ops->gemm(be, 1, 0, H, H, TN, 1.0f, r->dh, r->hc, 1.0f, l->params[d->p_h]->diff);
  dd__recur_input_backward(l, d, r->dh, r->scr);
}

static void rnn_destroy(dd_layer *l) {
  rnn_priv *r = l->priv;
  if (r->slab) l->be->ops->free(l->be, r->slab);
}

const dd_layer_ops dd_layer_rnn = {
    .type = "RNN", .min_bottoms = 2, .max_bottoms = 4, .min_tops = 1, .max_tops = 2,
    .shape = rnn_shape, .filler = rnn_filler, .priv_size = sizeof(rnn_priv), .setup = rnn_setup,
    .forward = rnn_forward, .backward = rnn_backward, .destroy = rnn_destroy};
