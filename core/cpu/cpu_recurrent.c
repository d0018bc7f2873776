/* CPU kernels of the catalogue's recurrent layers (RNN, LSTM, LSTMUnit): the LSTM cell and its
 * backward, the RNN's tanh pair. Semantics in base/backend.h. The cell follows Caffe's
 * LSTMUnitLayer operation for operation: the activations are evaluated in double and rounded once
 * to float (as Caffe's sigmoid and its 2 sigmoid(2 x) - 1 tanh are), the products and sums in
 * float, left to right, as Caffe writes them. */
#include <math.h>

#include "cpu/cpu_kernels.h"

static float sig(float v) { return (float)(1.0 / (1.0 + exp(-(double)v))); }
static float th(float v) { return (float)(2.0 / (1.0 + exp(-2.0 * (double)v)) - 1.0); }

void dd_cpu_lstm_unit_forward(dd_backend *be, int64_t n, int64_t dim, float *c, float *h, const float *c_prev,
                              const float *gates, const float *cont) {
  (void)be;
  for (int64_t r = 0; r < n; r++) {
    const float *x = gates + r * 4 * dim; /* (4, dim): i, f, o, g */
    const float k = cont[r];
    for (int64_t d = 0; d < dim; d++) {
      float i = sig(x[d]), f = k == 0 ? 0.0f : k * sig(x[dim + d]);
      float o = sig(x[2 * dim + d]), g = th(x[3 * dim + d]);
      float cv = f * c_prev[r * dim + d] + i * g;
      c[r * dim + d] = cv;
      h[r * dim + d] = o * th(cv);
    }
  }
}

void dd_cpu_lstm_unit_backward(dd_backend *be, int64_t n, int64_t dim, float *dc_prev, float *dgates,
                               const float *c_prev, const float *gates, const float *cont, const float *c,
                               const float *dc, const float *dh) {
  (void)be;
  for (int64_t r = 0; r < n; r++) {
    const float *x = gates + r * 4 * dim;
    float *dx = dgates ? dgates + r * 4 * dim : NULL;
    const float k = cont[r];
    for (int64_t d = 0; d < dim; d++) {
      int64_t e = r * dim + d;
      float i = sig(x[d]), f = k == 0 ? 0.0f : k * sig(x[dim + d]);
      float o = sig(x[2 * dim + d]), g = th(x[3 * dim + d]);
      float tc = th(c[e]), cp = c_prev[e];
      float dct = (dc ? dc[e] : 0.0f) + dh[e] * o * (1 - tc * tc);
      if (dx) {
        dx[d] = dct * g * i * (1 - i);
        dx[dim + d] = dct * cp * f * (1 - f);
        dx[2 * dim + d] = dh[e] * tc * o * (1 - o);
        dx[3 * dim + d] = dct * i * (1 - g * g);
      }
      if (dc_prev) dc_prev[e] = dct * f;
    }
  }
}

void dd_cpu_rnn_tanh_forward(dd_backend *be, int64_t n, float *y, const float *x) {
  (void)be;
  for (int64_t i = 0; i < n; i++) y[i] = (float)tanh((double)x[i]);
}

void dd_cpu_rnn_tanh_backward(dd_backend *be, int64_t n, float *dx, const float *dy, const float *y) {
  (void)be;
  for (int64_t i = 0; i < n; i++) dx[i] = dy[i] * (1 - y[i] * y[i]);
}
