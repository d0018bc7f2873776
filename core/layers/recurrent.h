/* What RNN (rnn.c) and LSTM (lstm.c) share, Caffe's RecurrentLayer: the bottoms
 *   x (T, N, ...), cont (T, N) (the sequence-continuation markers), [x_static (N, ...)],
 *   and with recurrent_param.expose_hidden the initial states h_0 [, c_0] (1, N, H);
 * the tops y (T, N, H) and with expose_hidden the final states h_T [, c_T] (1, N, H);
 * the parameters W_x (G H, I), b (G H), [W_static (G H, S)], W_h (G H, H), then the RNN's output
 * pair; the input projection of every time step at once and its backward.
 *
 * Caffe's semantics kept here: without expose_hidden the state carries over between forward
 * passes (the first step of a pass starts from the last step of the previous one, zero at
 * first), so only cont = 0 starts a sequence afresh; cont gets no gradient; with expose_hidden
 * the exposed initial states get no gradient (Caffe's layer shares only their data with its
 * unrolled net, and writes zeros here where a gradient is asked for) and the diffs of the exposed
 * final states are not read (Caffe never passes them into its unrolled net). */
#ifndef DD_LAYERS_RECURRENT_H
#define DD_LAYERS_RECURRENT_H

#include "net/layer.h"

typedef struct {
  int64_t T, N, I, S, H; /* time steps, streams, x features, x_static features, num_output */
  int64_t G;             /* gate blocks: 1 (RNN), 4 (LSTM) */
  int n_state;           /* recurrent state blobs: 1 (RNN: h), 2 (LSTM: h, c) */
  int expose, has_static;
  int i_static, i_h0;    /* bottom indices of x_static and h_0 (-1: none) */
  int p_static, p_h;     /* parameter indices of W_static (-1: none) and W_h */
} dd_recur_dims;

/* The shape logic of RNN (n_state 1, gates 1, rnn 1: the output pair W_o, b_o follows) and LSTM
 * (n_state 2, gates 4, rnn 0). */
int dd__recur_shape(dd_shape_ctx *c, int n_state, int gates, int rnn);
/* Fillers: recurrent_param.weight_filler for the matrices, bias_filler for the biases (constant 0
 * where unset, as Caffe's unrolled InnerProduct layers get them). */
const Caffe__FillerParameter *dd__recur_filler(const Caffe__LayerParameter *lp, int index,
                                               Caffe__FillerParameter *dflt, int rnn);
/* The dimensions of a built layer. */
void dd__recur_dims(const dd_layer *l, int n_state, int gates, dd_recur_dims *d);
/* pre (T, N, G H) = x W_x^T + b (+ x_static W_static^T on every step); xs_w: (N, G H) scratch. */
void dd__recur_input_forward(dd_layer *l, const dd_recur_dims *d, float *pre, float *xs_w);
/* Backward of the above from dpre (T, N, G H): accumulates W_x's, b's and W_static's diffs, writes
 * x's and x_static's where asked; zeros the exposed initial states' diffs where asked. sum:
 * (N, G H) scratch. */
void dd__recur_input_backward(dd_layer *l, const dd_recur_dims *d, const float *dpre, float *sum);
/* For setup: sizes[k] floats each (k < n), carved from one backend slab (*slab, *cap) into ptr[k].
 * Returns 0 or DD_ENOMEM. */
int dd__recur_carve(dd_backend *be, void **slab, size_t *cap, const int64_t *sizes, float **ptr, int n);

#endif
