/* Device helpers the CUDA kernels share (the .cu files under cuda/ only): 64-bit index division
 * and the fixed-order block and warp sums every deterministic reduction is built from. Each
 * translation unit gets its own copies (static). Blocks have DD_CUDA_THREADS threads. */
#ifndef DD_CUDA_REDUCE_H
#define DD_CUDA_REDUCE_H

#include <stdint.h>

#include "cuda_internal.h"

/* a / b for a >= 0, b > 0: 32-bit division when both fit (the common case), else 64-bit */
static __device__ __forceinline__ int64_t div_nn(int64_t a, int64_t b) {
  if (((uint64_t)a | (uint64_t)b) >> 32 == 0) return (int64_t)((uint32_t)a / (uint32_t)b);
  return a / b;
}

/* Sum of v over the block (blockDim.x == DD_CUDA_THREADS), valid in thread 0. Every thread of the
 * block calls it; it may be called repeatedly in one kernel. */
static __device__ double block_sum(double v) {
  __shared__ double s[DD_CUDA_THREADS / 32];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads(); /* the previous call's readers are done with s */
  if (lane == 0) s[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < DD_CUDA_THREADS / 32 ? s[lane] : 0.0;
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  }
  return v;
}

/* Sum of v over the warp, in every lane (a butterfly: the same order in every lane). */
static __device__ __forceinline__ double warp_sum(double v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

#endif
