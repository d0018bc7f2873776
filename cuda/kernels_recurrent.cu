/* CUDA kernels of the catalogue's recurrent layers (RNN, LSTM, LSTMUnit): the LSTM cell and its
 * backward, the RNN's tanh pair. Semantics in core/base/backend.h; the CPU kernels in
 * core/cpu/cpu_recurrent.c are the reference. As there, the activations are evaluated in double
 * and rounded once to float, and the products and sums go through the _rn intrinsics in the CPU's
 * order (never contracted into FMAs), so each value matches the CPU's up to the last bit of the
 * device's double exp/tanh. One thread per (row, unit), grid-stride loops; nothing allocates. */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.h"

#define NT DD_CUDA_THREADS

#define GRID_STRIDE(i, n)                                                              \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);            \
       i += (int64_t)gridDim.x * blockDim.x)

static __device__ __forceinline__ float sig(float v) { return (float)(1.0 / (1.0 + exp(-(double)v))); }
static __device__ __forceinline__ float th(float v) {
  return (float)(2.0 / (1.0 + exp(-2.0 * (double)v)) - 1.0);
}
/* a * b * c * d, left to right, each product rounded */
static __device__ __forceinline__ float mul4(float a, float b, float c, float d) {
  return __fmul_rn(__fmul_rn(__fmul_rn(a, b), c), d);
}

static __global__ void lstm_fwd_kernel(int64_t n, int64_t dim, float *c, float *h, const float *c_prev,
                                       const float *gates, const float *cont) {
  GRID_STRIDE(e, n * dim) {
    int64_t r = e / dim, d = e % dim;
    const float *x = gates + r * 4 * dim;
    float k = cont[r];
    float i = sig(x[d]), f = k == 0 ? 0.0f : __fmul_rn(k, sig(x[dim + d]));
    float o = sig(x[2 * dim + d]), g = th(x[3 * dim + d]);
    float cv = __fadd_rn(__fmul_rn(f, c_prev[e]), __fmul_rn(i, g));
    c[e] = cv;
    h[e] = __fmul_rn(o, th(cv));
  }
}

extern "C" void dd_cuda_lstm_unit_forward(dd_backend *be, int64_t n, int64_t dim, float *c, float *h,
                                          const float *c_prev, const float *gates, const float *cont) {
  dd_cuda_ctx *cx = DD_CUDA_CTX(be);
  if (n <= 0 || dim <= 0) return;
  lstm_fwd_kernel<<<dd_cuda_blocks(cx, n * dim), NT, 0, cx->stream>>>(n, dim, c, h, c_prev, gates, cont);
  DD_CUDA_LAUNCHED(cx);
}

static __global__ void lstm_bwd_kernel(int64_t n, int64_t dim, float *dc_prev, float *dgates, const float *c_prev,
                                       const float *gates, const float *cont, const float *c, const float *dc,
                                       const float *dh) {
  GRID_STRIDE(e, n * dim) {
    int64_t r = e / dim, d = e % dim;
    const float *x = gates + r * 4 * dim;
    float k = cont[r];
    float i = sig(x[d]), f = k == 0 ? 0.0f : __fmul_rn(k, sig(x[dim + d]));
    float o = sig(x[2 * dim + d]), g = th(x[3 * dim + d]);
    float tc = th(c[e]), cp = c_prev[e], dhe = dh[e];
    float dct = __fadd_rn(dc ? dc[e] : 0.0f,
                          __fmul_rn(__fmul_rn(dhe, o), __fsub_rn(1.0f, __fmul_rn(tc, tc))));
    if (dgates) {
      float *dx = dgates + r * 4 * dim;
      dx[d] = mul4(dct, g, i, __fsub_rn(1.0f, i));
      dx[dim + d] = mul4(dct, cp, f, __fsub_rn(1.0f, f));
      dx[2 * dim + d] = mul4(dhe, tc, o, __fsub_rn(1.0f, o));
      dx[3 * dim + d] = __fmul_rn(__fmul_rn(dct, i), __fsub_rn(1.0f, __fmul_rn(g, g)));
    }
    if (dc_prev) dc_prev[e] = __fmul_rn(dct, f);
  }
}

extern "C" void dd_cuda_lstm_unit_backward(dd_backend *be, int64_t n, int64_t dim, float *dc_prev, float *dgates,
                                           const float *c_prev, const float *gates, const float *cont,
                                           const float *c, const float *dc, const float *dh) {
  dd_cuda_ctx *cx = DD_CUDA_CTX(be);
  if (n <= 0 || dim <= 0) return;
  lstm_bwd_kernel<<<dd_cuda_blocks(cx, n * dim), NT, 0, cx->stream>>>(n, dim, dc_prev, dgates, c_prev, gates,
                                                                      cont, c, dc, dh);
  DD_CUDA_LAUNCHED(cx);
}

static __global__ void tanh_fwd_kernel(int64_t n, float *y, const float *x) {
  GRID_STRIDE(i, n) y[i] = (float)tanh((double)x[i]);
}

extern "C" void dd_cuda_rnn_tanh_forward(dd_backend *be, int64_t n, float *y, const float *x) {
  dd_cuda_ctx *cx = DD_CUDA_CTX(be);
  if (n <= 0) return;
  tanh_fwd_kernel<<<dd_cuda_blocks(cx, n), NT, 0, cx->stream>>>(n, y, x);
  DD_CUDA_LAUNCHED(cx);
}

static __global__ void tanh_bwd_kernel(int64_t n, float *dx, const float *dy, const float *y) {
  GRID_STRIDE(i, n) {
    float v = y[i];
    dx[i] = __fmul_rn(dy[i], __fsub_rn(1.0f, __fmul_rn(v, v)));
  }
}

extern "C" void dd_cuda_rnn_tanh_backward(dd_backend *be, int64_t n, float *dx, const float *dy, const float *y) {
  dd_cuda_ctx *cx = DD_CUDA_CTX(be);
  if (n <= 0) return;
  tanh_bwd_kernel<<<dd_cuda_blocks(cx, n), NT, 0, cx->stream>>>(n, dx, dy, y);
  DD_CUDA_LAUNCHED(cx);
}
