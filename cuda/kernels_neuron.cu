/* CUDA kernels of the catalogue's neuron layers (Sigmoid ... Swish, PReLU): semantics in
 * core/base/backend.h; core/cpu/cpu_neuron.c is the reference, step for step (the same float
 * expressions; libdevice's tanhf/expf/logf/powf differ from glibc's by an ulp or two). PReLU's
 * slope gradient: one block per channel, a fixed-order double reduction. Nothing allocates. */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.h"

#define NT DD_CUDA_THREADS

#define GRID_STRIDE(i, n) \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

__device__ static float sigmoid_d(float v) { return 0.5f * tanhf(0.5f * v) + 0.5f; }

__device__ static float fwd1(dd_neuron_desc d, float v) {
  switch (d.kind) {
    case DD_NEURON_SIGMOID: return sigmoid_d(v);
    case DD_NEURON_TANH: return tanhf(v);
    case DD_NEURON_ELU: return v > 0 ? v : d.a * (expf(v) - 1.0f);
    case DD_NEURON_POWER:
      if (d.a * d.b == 0.0f) return d.a == 0.0f ? 1.0f : powf(d.c, d.a);
      return powf(d.b * v + d.c, d.a);
    case DD_NEURON_ABSVAL: return fabsf(v);
    case DD_NEURON_BNLL: return v > 0 ? v + logf(1.0f + expf(-v)) : logf(1.0f + expf(v));
    case DD_NEURON_EXP: return d.b * expf(d.a * v);
    case DD_NEURON_LOG: return d.c * logf(d.a * v + d.b);
    case DD_NEURON_THRESHOLD: return v > d.a ? 1.0f : 0.0f;
    case DD_NEURON_CLIP: return fmaxf(d.a, fminf(v, d.b));
    case DD_NEURON_SWISH: return v * sigmoid_d(d.a * v);
    default: return v;
  }
}

__device__ static float bwd1(dd_neuron_desc d, float g, float v, float y) {
  switch (d.kind) {
    case DD_NEURON_SIGMOID: return g * y * (1.0f - y);
    case DD_NEURON_TANH: return g * (1.0f - y * y);
    case DD_NEURON_ELU: return v > 0 ? g : g * (y + d.a);
    case DD_NEURON_POWER: {
      float ds = d.a * d.b;
      if (ds == 0.0f || d.a == 1.0f) return ds * g;
      if (d.a == 2.0f) return (ds * d.b * v + ds * d.c) * g;
      if (d.c == 0.0f) return (d.a * (y / v)) * g;
      return (ds * (y / (d.b * v + d.c))) * g;
    }
    case DD_NEURON_ABSVAL: return v > 0 ? g : v < 0 ? -g : 0.0f;
    case DD_NEURON_BNLL: {
      float e = expf(v < 50.0f ? v : 50.0f);
      return g * (e / (e + 1.0f));
    }
    case DD_NEURON_EXP: return (g * y) * d.a;
    case DD_NEURON_LOG: return ((1.0f / (d.a * v + d.b)) * (d.a * d.c)) * g;
    case DD_NEURON_THRESHOLD: return 0.0f;
    case DD_NEURON_CLIP: return v >= d.a && v <= d.b ? g : 0.0f;
    case DD_NEURON_SWISH: {
      float s = sigmoid_d(d.a * v);
      return g * (d.a * y + s * (1.0f - d.a * y));
    }
    default: return g;
  }
}

static __global__ void neuron_fwd_kernel(dd_neuron_desc d, int64_t n, float *y, const float *x) {
  GRID_STRIDE(i, n) y[i] = fwd1(d, x[i]);
}

static __global__ void neuron_bwd_kernel(dd_neuron_desc d, int64_t n, float *dx, const float *dy, const float *x,
                                         const float *y) {
  GRID_STRIDE(i, n) dx[i] = bwd1(d, dy[i], x[i], y[i]);
}

extern "C" void dd_cuda_neuron_forward(dd_backend *be, const dd_neuron_desc *d, int64_t n, float *y, const float *x) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  neuron_fwd_kernel<<<dd_cuda_blocks(c, n), NT, 0, c->stream>>>(*d, n, y, x);
  DD_CUDA_LAUNCHED(c);
}

extern "C" void dd_cuda_neuron_backward(dd_backend *be, const dd_neuron_desc *d, int64_t n, float *dx,
                                        const float *dy, const float *x, const float *y) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  neuron_bwd_kernel<<<dd_cuda_blocks(c, n), NT, 0, c->stream>>>(*d, n, dx, dy, x, y);
  DD_CUDA_LAUNCHED(c);
}

/* y (forward) or dx (backward, when dy != NULL) */
static __global__ void prelu_kernel(int64_t n, int64_t channels, int64_t inner, float *out, const float *dy,
                                    const float *x, const float *slope) {
  GRID_STRIDE(i, n) {
    float v = x[i], s = slope[(i / inner) % channels];
    out[i] = dy ? (v > 0 ? dy[i] : dy[i] * s) : (v > 0 ? v : s * v);
  }
}

/* one block per channel: its elements in a fixed strided order, a fixed shared-memory tree */
static __global__ void prelu_slope_kernel(int64_t n, int64_t channels, int64_t inner, float *dslope,
                                          const float *dy, const float *x) {
  __shared__ double part[NT];
  int64_t ch = blockIdx.x, plane = channels * inner, per = (n / plane) * inner;
  double s = 0;
  for (int64_t k = threadIdx.x; k < per; k += blockDim.x) {
    int64_t i = (k / inner) * plane + ch * inner + k % inner;
    if (x[i] <= 0) s += (double)dy[i] * x[i];
  }
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = NT / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) dslope[ch] += (float)part[0];
}

extern "C" void dd_cuda_prelu_forward(dd_backend *be, int64_t n, int64_t channels, int64_t inner, float *y,
                                      const float *x, const float *slope) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  prelu_kernel<<<dd_cuda_blocks(c, n), NT, 0, c->stream>>>(n, channels, inner, y, NULL, x, slope);
  DD_CUDA_LAUNCHED(c);
}

extern "C" void dd_cuda_prelu_backward(dd_backend *be, int64_t n, int64_t channels, int64_t inner, float *dx,
                                       float *dslope, const float *dy, const float *x, const float *slope) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  if (dslope) {
    prelu_slope_kernel<<<(unsigned)channels, NT, 0, c->stream>>>(n, channels, inner, dslope, dy, x);
    DD_CUDA_LAUNCHED(c);
  }
  if (dx) {
    prelu_kernel<<<dd_cuda_blocks(c, n), NT, 0, c->stream>>>(n, channels, inner, dx, dy, x, slope);
    DD_CUDA_LAUNCHED(c);
  }
}
