/* The shared part of RNN and LSTM (Caffe's RecurrentLayer): shape checks with Caffe's rules,
 * fillers, dimensions, the input projection of all time steps and its backward. See recurrent.h
 * for the semantics; rnn.c and lstm.c hold the time loops. */
#include <string.h>

#include "base/dd_error.h"
#include "layers/recurrent.h"

static const char *const state_names[2] = {"h_0", "c_0"};

/* Bottom and top counts for the layer's expose_hidden; 0 or an error. */
static int recur_arity(dd_shape_ctx *c, int n_state, int expose) {
  int base = 2 + (expose ? n_state : 0), tops = 1 + (expose ? n_state : 0);
  const char *states = n_state == 1 ? ", h_0" : ", h_0, c_0";
  if (c->nb != base && c->nb != base + 1)
    return dd_shape_fail(c, "with recurrent_param.expose_hidden %s the bottoms are x, cont, [x_static]%s: %d or %d "
                         "of them, this layer has %d", expose ? "true" : "false", expose ? states : "", base,
                         base + 1, c->nb);
  if (c->nt != tops)
    return dd_shape_fail(c, "with recurrent_param.expose_hidden %s the tops are y%s: %d of them, this layer has %d",
                         expose ? "true" : "false", expose ? (n_state == 1 ? ", h_T" : ", h_T, c_T") : "", tops,
                         c->nt);
  if (c->lp->n_top && c->lp->n_bottom && !strcmp(c->lp->top[0], c->lp->bottom[0]))
    return dd_shape_fail(c, "the layer cannot run in place (top \"%s\" is its bottom x): backward reads x",
                         c->lp->top[0]);
  return 0;
}

/* The bottoms' shapes against x's (T, N); 0 or an error. */
static int recur_check_bottoms(dd_shape_ctx *c, int n_state, int has_static, int64_t H) {
  const dd_shape *x = &c->bottoms[0], *k = &c->bottoms[1];
  char s1[64];
  if (!dd_shape_known(x)) return 0;
  if (x->ndim < 2)
    return dd_shape_fail(c, "bottom 0 (x) must have at least 2 axes (T, N, ...), it is %s",
                         dd_shape_str(x, s1, sizeof s1));
  int64_t T = x->dims[0], N = x->dims[1];
  if (dd_shape_known(k) && (k->ndim != 2 || k->dims[0] != T || k->dims[1] != N))
    return dd_shape_fail(c, "bottom 1 (cont, the sequence-continuation markers) must be (T, N) = (%lld, %lld), "
                         "x's first two axes; it is %s", (long long)T, (long long)N, dd_shape_str(k, s1, sizeof s1));
  if (has_static && dd_shape_known(&c->bottoms[2]) && (c->bottoms[2].ndim < 1 || c->bottoms[2].dims[0] != N))
    return dd_shape_fail(c, "bottom 2 (x_static) must be (N, ...) with N = %lld, x's axis 1; it is %s", (long long)N,
                         dd_shape_str(&c->bottoms[2], s1, sizeof s1));
  if (c->nb > 2 + has_static)
    for (int j = 0; j < n_state; j++) {
      const dd_shape *h = &c->bottoms[2 + has_static + j];
      if (dd_shape_known(h) && (h->ndim != 3 || h->dims[0] != 1 || h->dims[1] != N || h->dims[2] != H))
        return dd_shape_fail(c, "bottom %d (%s, the initial state with recurrent_param.expose_hidden) must be "
                             "(1, N, num_output) = (1, %lld, %lld); it is %s", 2 + has_static + j, state_names[j],
                             (long long)N, (long long)H, dd_shape_str(h, s1, sizeof s1));
    }
  return 0;
}

int dd__recur_shape(dd_shape_ctx *c, int n_state, int gates, int rnn) {
  const Caffe__RecurrentParameter *p = c->lp->recurrent_param;
  if (!p || p->num_output == 0)
    return dd_shape_fail(c, "recurrent_param.num_output must be > 0 (it is 0)");
  int expose = p->expose_hidden, r;
  if ((r = recur_arity(c, n_state, expose))) return r;
  int has_static = c->nb == 3 + (expose ? n_state : 0);
  int64_t H = p->num_output, GH = gates * H;
  if ((r = recur_check_bottoms(c, n_state, has_static, H))) return r;
  /* W_x, b, [W_static], W_h, [W_o, b_o] */
  c->n_params = (rnn ? 5 : 3) + has_static;
  const dd_shape *x = &c->bottoms[0];
  int i = 0;
  c->params[i++] = dd_shape_known(x) ? dd_shape_make(2, (int64_t[]){GH, dd_shape_count_range(x, 2, x->ndim)})
                                     : dd_shape_unknown();
  c->params[i++] = dd_shape_make(1, (int64_t[]){GH});
  if (has_static) {
    const dd_shape *s = &c->bottoms[2];
    c->params[i++] = dd_shape_known(s) ? dd_shape_make(2, (int64_t[]){GH, dd_shape_count_range(s, 1, s->ndim)})
                                       : dd_shape_unknown();
  }
  c->params[i++] = dd_shape_make(2, (int64_t[]){GH, H});
  if (rnn) {
    c->params[i++] = dd_shape_make(2, (int64_t[]){H, H});
    c->params[i++] = dd_shape_make(1, (int64_t[]){H});
  }
  int64_t N = dd_shape_known(x) ? x->dims[1] : -1;
  c->tops[0] = dd_shape_known(x) ? dd_shape_make(3, (int64_t[]){x->dims[0], N, H}) : dd_shape_unknown();
  for (int t = 1; t < c->nt; t++)
    c->tops[t] = dd_shape_known(x) ? dd_shape_make(3, (int64_t[]){1, N, H}) : dd_shape_unknown();
  return 0;
}

const Caffe__FillerParameter *dd__recur_filler(const Caffe__LayerParameter *lp, int index,
                                               Caffe__FillerParameter *dflt, int rnn) {
  const Caffe__RecurrentParameter *p = lp->recurrent_param;
  int n_state = rnn ? 1 : 2, expose = p && p->expose_hidden;
  int has_static = (int)lp->n_bottom == 3 + (expose ? n_state : 0);
  int last = (rnn ? 4 : 2) + has_static;
  int bias = index == 1 || (rnn && index == last);
  const Caffe__FillerParameter *f = p ? (bias ? p->bias_filler : p->weight_filler) : NULL;
  return f ? f : dflt;
}

void dd__recur_dims(const dd_layer *l, int n_state, int gates, dd_recur_dims *d) {
  const Caffe__RecurrentParameter *p = l->lp->recurrent_param;
  const dd_tensor *x = l->bottom[0];
  memset(d, 0, sizeof *d);
  d->T = x->shape.dims[0];
  d->N = x->shape.dims[1];
  d->I = dd__count(x, 2, x->shape.ndim);
  d->H = p->num_output;
  d->G = gates;
  d->n_state = n_state;
  d->expose = p->expose_hidden;
  d->has_static = l->nb == 3 + (d->expose ? n_state : 0);
  d->i_static = d->has_static ? 2 : -1;
  d->i_h0 = d->expose ? 2 + d->has_static : -1;
  d->S = d->has_static ? dd__count(l->bottom[2], 1, l->bottom[2]->shape.ndim) : 0;
  d->p_static = d->has_static ? 2 : -1;
  d->p_h = 2 + d->has_static;
}

void dd__recur_input_forward(dd_layer *l, const dd_recur_dims *d, float *pre, float *xs_w) {
  dd_backend *be = l->be;
  int TN = (int)(d->T * d->N), GH = (int)(d->G * d->H), N = (int)d->N;
  /* pre (TN, GH) = x (TN, I) W_x^T + b */
  be->ops->gemm(be, 0, 1, TN, GH, (int)d->I, 1.0f, l->bottom[0]->data, l->params[0]->data, 0.0f, pre);
  be->ops->channel_affine(be, TN, GH, 1, pre, pre, NULL, l->params[1]->data);
  if (!d->has_static) return;
  /* xs_w (N, GH) = x_static (N, S) W_static^T, added to every step */
  be->ops->gemm(be, 0, 1, N, GH, (int)d->S, 1.0f, l->bottom[2]->data, l->params[d->p_static]->data, 0.0f, xs_w);
  for (int64_t t = 0; t < d->T; t++) be->ops->axpby(be, (int64_t)N * GH, 1.0f, xs_w, 1.0f, pre + t * N * GH);
}

void dd__recur_input_backward(dd_layer *l, const dd_recur_dims *d, const float *dpre, float *sum) {
  dd_backend *be = l->be;
  int TN = (int)(d->T * d->N), GH = (int)(d->G * d->H), N = (int)d->N, I = (int)d->I, S = (int)d->S;
  const float *x = l->bottom[0]->data;
  if (l->param_propagate_down[0]) /* dW_x (GH, I) += dpre^T x */
    be->ops->gemm(be, 1, 0, GH, I, TN, 1.0f, dpre, x, 1.0f, l->params[0]->diff);
  if (l->param_propagate_down[1])
    be->ops->channel_affine_backward(be, TN, GH, 1, NULL, NULL, l->params[1]->diff, dpre, NULL, NULL);
  if (l->propagate_down[0]) /* dx (TN, I) = dpre W_x */
    be->ops->gemm(be, 0, 0, TN, I, GH, 1.0f, dpre, l->params[0]->data, 0.0f, l->bottom[0]->diff);
  if (d->has_static && (l->param_propagate_down[d->p_static] || l->propagate_down[2])) {
    /* sum (N, GH) = sum over t of dpre_t */
    be->ops->copy(be, sum, dpre, (size_t)N * GH * sizeof(float));
    for (int64_t t = 1; t < d->T; t++) be->ops->axpby(be, (int64_t)N * GH, 1.0f, dpre + t * N * GH, 1.0f, sum);
    if (l->param_propagate_down[d->p_static])
      be->ops->gemm(be, 1, 0, GH, S, N, 1.0f, sum, l->bottom[2]->data, 1.0f, l->params[d->p_static]->diff);
    if (l->propagate_down[2])
      be->ops->gemm(be, 0, 0, N, S, GH, 1.0f, sum, l->params[d->p_static]->data, 0.0f, l->bottom[2]->diff);
  }
  /* Caffe gives the exposed initial states no gradient */
  for (int j = 0; d->expose && j < d->n_state; j++)
    if (l->propagate_down[d->i_h0 + j])
      be->ops->fill(be, l->bottom[d->i_h0 + j]->diff, 0.0f, l->bottom[d->i_h0 + j]->count);
}

int dd__recur_carve(dd_backend *be, void **slab, size_t *cap, const int64_t *sizes, float **ptr, int n) {
  int64_t total = 0;
  for (int k = 0; k < n; k++) total += sizes[k] > 0 ? sizes[k] : 1;
  if (dd__ensure_buffer(be, slab, cap, (size_t)total * sizeof(float))) return DD_ENOMEM;
  float *p = *slab;
  for (int k = 0; k < n; k++) {
    ptr[k] = p;
    p += sizes[k] > 0 ? sizes[k] : 1;
  }
  return 0;
}
