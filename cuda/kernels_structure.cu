/* CUDA kernels of the catalogue's structure layers (Reduction, ...): semantics in
 * core/base/backend.h, the CPU kernels in core/cpu/cpu_structure.c are the reference. Row sums
 * accumulate in double in a fixed order (one block per row, a fixed shared-memory tree), so a run
 * repeats bit for bit on a given device. Nothing here allocates. */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.h"

#define NT DD_CUDA_THREADS

static __global__ void reduce_forward_kernel(int op, int64_t outer, int64_t dim, float *y, const float *x,
                                             float coeff) {
  __shared__ double part[NT];
  for (int64_t i = blockIdx.x; i < outer; i += gridDim.x) {
    const float *r = x + i * dim;
    double s = 0;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
      double v = r[j];
      s += op == 2 ? fabs(v) : op == 3 ? v * v : v;
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = NT / 2; w > 0; w >>= 1) {
      if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      double t = part[0];
      if (op == 4 && dim > 0) t /= (double)dim;
      y[i] = (float)(coeff * t);
    }
    __syncthreads();
  }
}

extern "C" void dd_cuda_reduce_forward(dd_backend *be, int op, int64_t outer, int64_t dim, float *y,
                                       const float *x, float coeff) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (outer <= 0) return;
  int blocks = outer < 65535 ? (int)outer : 65535;
  reduce_forward_kernel<<<blocks, NT, 0, c->stream>>>(op, outer, dim, y, x, coeff);
  DD_CUDA_LAUNCHED(c);
}

static __global__ void reduce_backward_kernel(int op, int64_t outer, int64_t dim, float *dx, const float *dy,
                                              const float *x, float coeff) {
  int64_t n = outer * dim;
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    float g = __fmul_rn(coeff, dy[k / dim]);
    if (op == 4) g = __fdiv_rn(g, (float)dim);
    float v = x[k];
    dx[k] = op == 2 ? (v > 0 ? g : v < 0 ? -g : 0.0f) : op == 3 ? __fmul_rn(__fmul_rn(2.0f, v), g) : g;
  }
}

extern "C" void dd_cuda_reduce_backward(dd_backend *be, int op, int64_t outer, int64_t dim, float *dx,
                                        const float *dy, const float *x, float coeff) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (outer <= 0 || dim <= 0) return;
  reduce_backward_kernel<<<dd_cuda_blocks(c, outer * dim), NT, 0, c->stream>>>(op, outer, dim, dx, dy, x, coeff);
  DD_CUDA_LAUNCHED(c);
}
