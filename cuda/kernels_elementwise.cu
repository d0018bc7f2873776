/* CUDA kernels for the elementwise operations of the backend table: fill, axpby, scale, dot, asum,
 * the per-channel affine map and its backward, ReLU, mul, the Eltwise MAX pair, dropout,
 * copy_rows, regularisation and the solver updates (semantics in core/base/backend.h; the CPU kernels
 * in core/cpu/cpu_kernels.c are the reference these reproduce).
 *
 * Everything runs on the context's stream: grid-stride loops of DD_CUDA_THREADS threads over
 * dd_cuda_blocks() blocks, int64 indices. Elementwise arithmetic goes through the _rn intrinsics
 * (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn), which nvcc never contracts into FMAs and which
 * stay IEEE under -use_fast_math: the CPU reference is built as strict C11 (no contraction), so
 * each elementwise result here is the same float, bit for bit, as the CPU's. Reductions (dot,
 * asum, channel_affine_backward's sums) accumulate in double, in a fixed order: per-thread sums
 * in grid-stride order, a fixed shuffle tree per block, block partials in ctx->d_red summed in
 * index order by a second kernel; a run repeats bit for bit on a given device. Nothing here
 * allocates. */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.h"

#define NT DD_CUDA_THREADS

/* the grid-stride loop over [0, n) */
#define GRID_STRIDE(i, n)                                                              \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);            \
       i += (int64_t)gridDim.x * blockDim.x)

static int grid_for(const dd_cuda_ctx *c, int64_t n) { return dd_cuda_blocks(c, n); }

/* Sums a and b over the block (blockDim.x == NT, a multiple of 32) in a fixed order; the sums are
 * valid in thread 0. Once per kernel (its shared arrays are not reset for a second call). */
static __device__ void block_sum2(double *a, double *b) {
  __shared__ double sa[NT / 32], sb[NT / 32];
  double va = *a, vb = *b;
  for (int off = 16; off > 0; off >>= 1) {
    va += __shfl_down_sync(0xffffffffu, va, off);
    vb += __shfl_down_sync(0xffffffffu, vb, off);
  }
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sa[warp] = va;
    sb[warp] = vb;
  }
  __syncthreads();
  if (warp == 0) {
    va = lane < NT / 32 ? sa[lane] : 0.0;
    vb = lane < NT / 32 ? sb[lane] : 0.0;
    for (int off = 16; off > 0; off >>= 1) {
      va += __shfl_down_sync(0xffffffffu, va, off);
      vb += __shfl_down_sync(0xffffffffu, vb, off);
    }
  }
  *a = va;
  *b = vb;
}

/* ---- BLAS-like ------------------------------------------------------------------------------ */

static __global__ void fill_kernel(float *x, float value, int64_t n) {
  GRID_STRIDE(i, n) x[i] = value;
}

extern "C" void dd_cuda_fill(dd_backend *be, float *x, float value, int64_t n) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  if (value == 0.0f) { /* as the CPU's memset: -0.0f fills +0.0f */
    DD_CUDA_CHECK(c, cudaMemsetAsync(x, 0, (size_t)n * sizeof *x, c->stream));
    return;
  }
  fill_kernel<<<grid_for(c, n), NT, 0, c->stream>>>(x, value, n);
  DD_CUDA_LAUNCHED(c);
}

/* y = alpha * x (beta == 0: y is not read), y += alpha * x (beta == 1), else alpha x + beta y:
 * the CPU's three cases */
static __global__ void axpby_kernel(int64_t n, float alpha, const float *x, float beta, float *y) {
  if (beta == 0.0f) {
    GRID_STRIDE(i, n) y[i] = __fmul_rn(alpha, x[i]);
  } else if (beta == 1.0f) {
    GRID_STRIDE(i, n) y[i] = __fadd_rn(y[i], __fmul_rn(alpha, x[i]));
  } else {
    GRID_STRIDE(i, n) y[i] = __fadd_rn(__fmul_rn(alpha, x[i]), __fmul_rn(beta, y[i]));
  }
}

extern "C" void dd_cuda_axpby(dd_backend *be, int64_t n, float alpha, const float *x, float beta, float *y) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  axpby_kernel<<<grid_for(c, n), NT, 0, c->stream>>>(n, alpha, x, beta, y);
  DD_CUDA_LAUNCHED(c);
}

extern "C" void dd_cuda_scale(dd_backend *be, int64_t n, float alpha, const float *x, float *y) {
  dd_cuda_axpby(be, n, alpha, x, 0.0f, y);
}

/* part[blockIdx.x] = this block's sum of x[i] * y[i] (ABS: of |x[i]|), products exact in double */
template <bool ABS>
static __global__ void dot_partial_kernel(int64_t n, const float *x, const float *y, double *part) {
  double s = 0.0, unused = 0.0;
  if (ABS) {
    GRID_STRIDE(i, n) s += fabs((double)x[i]);
  } else {
    GRID_STRIDE(i, n) s += (double)x[i] * (double)y[i];
  }
  block_sum2(&s, &unused);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

/* *out = sum of part[0 .. count) (one block; out may not alias part) */
static __global__ void sum_partials_kernel(const double *part, int count, double *out) {
  double s = 0.0, unused = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += part[i];
  block_sum2(&s, &unused);
  if (threadIdx.x == 0) *out = s;
}

/* Block partials in d_red[1 ..], their sum in d_red[0], copied to the host. */
static double dot_or_asum(dd_cuda_ctx *c, int64_t n, const float *x, const float *y) {
  if (n <= 0) return 0.0;
  int blocks = grid_for(c, n);
  if (blocks > DD_CUDA_RED_DOUBLES - 1) blocks = DD_CUDA_RED_DOUBLES - 1;
  if (y)
    dot_partial_kernel<false><<<blocks, NT, 0, c->stream>>>(n, x, y, c->d_red + 1);
  else
    dot_partial_kernel<true><<<blocks, NT, 0, c->stream>>>(n, x, NULL, c->d_red + 1);
  DD_CUDA_LAUNCHED(c);
  sum_partials_kernel<<<1, NT, 0, c->stream>>>(c->d_red + 1, blocks, c->d_red);
  DD_CUDA_LAUNCHED(c);
  DD_CUDA_CHECK(c, cudaMemcpyAsync(c->h_red, c->d_red, sizeof(double), cudaMemcpyDeviceToHost, c->stream));
  DD_CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
  return c->failed ? 0.0 : c->h_red[0];
}

extern "C" double dd_cuda_dot(dd_backend *be, int64_t n, const float *x, const float *y) {
  return dot_or_asum(DD_CUDA_CTX(be), n, x, y);
}

extern "C" double dd_cuda_asum(dd_backend *be, int64_t n, const float *x) {
  return dot_or_asum(DD_CUDA_CTX(be), n, x, NULL);
}

/* ---- per-channel scale and bias: x viewed as (outer, dim, inner) -------------------------------- */

/* y = x * scale[d] (+ bias[d], or + 0.0f when bias is NULL, as the CPU adds b = 0; add_bias == 0:
 * no addition at all, for dx = dy * scale). Each thread walks its grid-stride sequence keeping
 * (i, d) = (k % inner, (k / inner) % dim) up to date without dividing: the stride is
 * q * inner + r with q % dim == qd (computed on the host). */
static __global__ void affine_kernel(int64_t n, int64_t dim, int64_t inner, int64_t r, int64_t qd, float *y,
                                     const float *x, const float *scale, const float *bias, int add_bias) {
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= n) return;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  int64_t row = k / inner, i = k - row * inner, d = row % dim;
  for (; k < n; k += stride) {
    float v = __fmul_rn(x[k], scale ? scale[d] : 1.0f);
    y[k] = add_bias ? __fadd_rn(v, bias ? bias[d] : 0.0f) : v;
    i += r;
    int64_t carry = 0;
    if (i >= inner) {
      i -= inner;
      carry = 1;
    }
    d += qd + carry;
    if (d >= dim) d -= dim;
  }
}

static void affine_launch(dd_cuda_ctx *c, int64_t outer, int64_t dim, int64_t inner, float *y, const float *x,
                          const float *scale, const float *bias, int add_bias) {
  int64_t n = outer * dim * inner;
  int blocks = grid_for(c, n);
  int64_t stride = (int64_t)blocks * NT;
  affine_kernel<<<blocks, NT, 0, c->stream>>>(n, dim, inner, stride % inner, (stride / inner) % dim, y, x, scale,
                                              bias, add_bias);
  DD_CUDA_LAUNCHED(c);
}

extern "C" void dd_cuda_channel_affine(dd_backend *be, int64_t outer, int64_t dim, int64_t inner, float *y,
                                       const float *x, const float *scale, const float *bias) {
  if (outer <= 0 || dim <= 0 || inner <= 0) return;
  affine_launch(DD_CUDA_CTX(be), outer, dim, inner, y, x, scale, bias, 1);
}

/* Block (blockIdx.x, blockIdx.y) = (channel d0 + blockIdx.x, split s of gridDim.y): thread t
 * walks k = s * NT + t, stepping by gridDim.y * NT = q * inner + r over the channel's
 * outer x inner elements, (o, i) = (k / inner, k % inner). It sums dy * x and dy in double and
 * writes dx = dy * scale[d]. The block sums go to part (channel-major: scale sums at
 * part[c * splits + s], bias sums at part[(chunk + c) * splits + s], chunk = gridDim.x) or, with
 * part NULL (one split), straight into dscale/dbias. */
static __global__ void affine_bwd_kernel(int64_t outer, int64_t dim, int64_t inner, int64_t d0, int64_t q,
                                         int64_t r, float *dx, float *dscale, float *dbias, const float *dy,
                                         const float *x, const float *scale, double *part) {
  const int64_t d = d0 + blockIdx.x, splits = gridDim.y, row_stride = dim * inner;
  int64_t k = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
  int64_t o = k / inner, i = k - o * inner;
  const float s = scale ? scale[d] : 1.0f;
  double ss = 0.0, sb = 0.0;
  while (o < outer) {
    int64_t a = o * row_stride + d * inner + i;
    float g = dy[a];
    if (dscale) ss += (double)g * (double)x[a];
    if (dbias) sb += (double)g;
    if (dx) dx[a] = __fmul_rn(g, s);
    i += r;
    if (i >= inner) {
      i -= inner;
      o++;
    }
    o += q;
  }
  block_sum2(&ss, &sb);
  if (threadIdx.x != 0) return;
  if (part) {
    part[(int64_t)blockIdx.x * splits + blockIdx.y] = ss;
    part[((int64_t)gridDim.x + blockIdx.x) * splits + blockIdx.y] = sb;
    return;
  }
  if (dscale) dscale[d] = __fadd_rn(dscale[d], (float)ss);
  if (dbias) dbias[d] = __fadd_rn(dbias[d], (float)sb);
}

/* the split partials of channels d0 .. d0 + chunk, summed in split order */
static __global__ void affine_bwd_finish_kernel(int64_t chunk, int64_t d0, int64_t splits, const double *part,
                                                float *dscale, float *dbias) {
  GRID_STRIDE(j, chunk) {
    double ss = 0.0, sb = 0.0;
    for (int64_t s = 0; s < splits; s++) {
      ss += part[j * splits + s];
      sb += part[(chunk + j) * splits + s];
    }
    if (dscale) dscale[d0 + j] = __fadd_rn(dscale[d0 + j], (float)ss);
    if (dbias) dbias[d0 + j] = __fadd_rn(dbias[d0 + j], (float)sb);
  }
}

extern "C" void dd_cuda_channel_affine_backward(dd_backend *be, int64_t outer, int64_t dim, int64_t inner,
                                                float *dx, float *dscale, float *dbias, const float *dy,
                                                const float *x, const float *scale) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (outer <= 0 || dim <= 0 || inner <= 0) return;
  if (!dscale && !dbias) {
    if (dx) affine_launch(c, outer, dim, inner, dx, dy, scale, NULL, 0);
    return;
  }
  /* splits per channel: about dd_cuda_blocks blocks in all, no split without a full block of
   * elements, and the partials (2 * chunk * splits doubles) within d_red */
  int64_t per = outer * inner;
  int64_t splits = ((int64_t)grid_for(c, per * dim) + dim - 1) / dim;
  int64_t most = (per + NT - 1) / NT;
  if (splits > most) splits = most;
  if (splits > 65535) splits = 65535;
  if (splits > DD_CUDA_RED_DOUBLES / 2) splits = DD_CUDA_RED_DOUBLES / 2;
  if (splits < 1) splits = 1;
  int64_t chunk = splits > 1 ? DD_CUDA_RED_DOUBLES / (2 * splits) : INT32_MAX;
  if (chunk > INT32_MAX) chunk = INT32_MAX;
  int64_t step = splits * NT;
  for (int64_t d0 = 0; d0 < dim; d0 += chunk) {
    int64_t nd = dim - d0 < chunk ? dim - d0 : chunk;
    dim3 grid((unsigned)nd, (unsigned)splits);
    affine_bwd_kernel<<<grid, NT, 0, c->stream>>>(outer, dim, inner, d0, step / inner, step % inner, dx, dscale,
                                                  dbias, dy, x, scale, splits > 1 ? c->d_red : NULL);
    DD_CUDA_LAUNCHED(c);
    if (splits > 1) {
      affine_bwd_finish_kernel<<<grid_for(c, nd), NT, 0, c->stream>>>(nd, d0, splits, c->d_red, dscale, dbias);
      DD_CUDA_LAUNCHED(c);
    }
  }
}

/* ---- elementwise -------------------------------------------------------------------------- */

static __global__ void relu_kernel(int64_t n, float *y, const float *x, float slope) {
  GRID_STRIDE(i, n) {
    float v = x[i];
    y[i] = v > 0 ? v : __fmul_rn(v, slope);
  }
}

extern "C" void dd_cuda_relu_forward(dd_backend *be, int64_t n, float *y, const float *x, float slope) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  relu_kernel<<<grid_for(c, n), NT, 0, c->stream>>>(n, y, x, slope);
  DD_CUDA_LAUNCHED(c);
}

static __global__ void relu_bwd_kernel(int64_t n, float *dx, const float *dy, const float *x, float slope) {
  GRID_STRIDE(i, n) {
    float g = dy[i];
    dx[i] = x[i] > 0 ? g : __fmul_rn(g, slope);
  }
}

extern "C" void dd_cuda_relu_backward(dd_backend *be, int64_t n, float *dx, const float *dy, const float *x,
                                      float slope) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  relu_bwd_kernel<<<grid_for(c, n), NT, 0, c->stream>>>(n, dx, dy, x, slope);
  DD_CUDA_LAUNCHED(c);
}

static __global__ void mul_kernel(int64_t n, float *y, const float *a, const float *b) {
  GRID_STRIDE(i, n) y[i] = __fmul_rn(a[i], b[i]);
}

extern "C" void dd_cuda_mul(dd_backend *be, int64_t n, float *y, const float *a, const float *b) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  mul_kernel<<<grid_for(c, n), NT, 0, c->stream>>>(n, y, a, b);
  DD_CUDA_LAUNCHED(c);
}

static __global__ void max_update_kernel(int64_t n, float *y, int32_t *argmax, const float *x, int32_t index) {
  GRID_STRIDE(i, n) {
    float v = x[i];
    if (v > y[i]) {
      y[i] = v;
      argmax[i] = index;
    }
  }
}

extern "C" void dd_cuda_max_update(dd_backend *be, int64_t n, float *y, int32_t *argmax, const float *x,
                                   int32_t index) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  max_update_kernel<<<grid_for(c, n), NT, 0, c->stream>>>(n, y, argmax, x, index);
  DD_CUDA_LAUNCHED(c);
}

static __global__ void max_bwd_kernel(int64_t n, float *dx, const float *dy, const int32_t *argmax,
                                      int32_t index) {
  GRID_STRIDE(i, n) dx[i] = argmax[i] == index ? dy[i] : 0.0f;
}

extern "C" void dd_cuda_max_backward(dd_backend *be, int64_t n, float *dx, const float *dy,
                                     const int32_t *argmax, int32_t index) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  max_bwd_kernel<<<grid_for(c, n), NT, 0, c->stream>>>(n, dx, dy, argmax, index);
  DD_CUDA_LAUNCHED(c);
}

/* core/base/rng.h's dd_hash64 (SplitMix64 finaliser of seed and index), the same bits on the device */
static __device__ __forceinline__ uint64_t hash64(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* u = the hash's top 24 bits / 2^24 (exact in float); keep = u >= ratio; y = (x * keep) * scale */
static __global__ void dropout_kernel(int64_t n, float *y, float *mask, const float *x, uint64_t seed, float ratio,
                                      float scale) {
  GRID_STRIDE(i, n) {
    float u = __fmul_rn((float)(hash64(seed, (uint64_t)i) >> 40), 1.0f / 16777216.0f);
    float keep = u >= ratio ? 1.0f : 0.0f;
    float v = x[i];
    mask[i] = keep;
    y[i] = __fmul_rn(__fmul_rn(v, keep), scale);
  }
}

extern "C" void dd_cuda_dropout_forward(dd_backend *be, int64_t n, float *y, float *mask, const float *x,
                                        uint64_t seed, float ratio, float scale) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  dropout_kernel<<<grid_for(c, n), NT, 0, c->stream>>>(n, y, mask, x, seed, ratio, scale);
  DD_CUDA_LAUNCHED(c);
}

/* ---- strided copies --------------------------------------------------------------------------- */

/* k over rows x cols, (row, i) = (k / cols, k % cols) kept up to date as in affine_kernel: the
 * stride is q * cols + r */
static __global__ void copy_rows_kernel(int64_t n, int64_t cols, int64_t q, int64_t r, float *dst,
                                        int64_t dst_stride, const float *src, int64_t src_stride, int accumulate) {
  int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= n) return;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  int64_t row = k / cols, i = k - row * cols;
  for (; k < n; k += stride) {
    float v = src[row * src_stride + i];
    float *dp = dst + row * dst_stride + i;
    *dp = accumulate ? __fadd_rn(*dp, v) : v;
    i += r;
    if (i >= cols) {
      i -= cols;
      row++;
    }
    row += q;
  }
}

extern "C" void dd_cuda_copy_rows(dd_backend *be, int64_t rows, int64_t cols, float *dst, int64_t dst_stride,
                                  const float *src, int64_t src_stride, int accumulate) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (rows <= 0 || cols <= 0) return;
  if (!accumulate && (rows == 1 || (dst_stride == cols && src_stride == cols))) {
    DD_CUDA_CHECK(c, cudaMemcpyAsync(dst, src, (size_t)(rows * cols) * sizeof *dst, cudaMemcpyDeviceToDevice,
                                     c->stream));
    return;
  }
  int64_t n = rows * cols;
  int blocks = grid_for(c, n);
  int64_t stride = (int64_t)blocks * NT;
  copy_rows_kernel<<<blocks, NT, 0, c->stream>>>(n, cols, stride / cols, stride % cols, dst, dst_stride, src,
                                                 src_stride, accumulate);
  DD_CUDA_LAUNCHED(c);
}

/* ---- solvers ---------------------------------------------------------------------------------- */

/* L2: g += decay * w; L1: g += decay * sign(w) (sign(NaN) = 0, as the CPU's (w > 0) - (w < 0)) */
static __global__ void regularize_kernel(int64_t n, float *g, const float *w, float decay, int l1) {
  if (l1) {
    GRID_STRIDE(i, n) {
      float v = w[i];
      g[i] = __fadd_rn(g[i], __fmul_rn(decay, (float)((v > 0) - (v < 0))));
    }
  } else {
    GRID_STRIDE(i, n) g[i] = __fadd_rn(g[i], __fmul_rn(decay, w[i]));
  }
}

extern "C" void dd_cuda_regularize(dd_backend *be, int64_t n, float *g, const float *w, float decay, int l1) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  regularize_kernel<<<grid_for(c, n), NT, 0, c->stream>>>(n, g, w, decay, l1);
  DD_CUDA_LAUNCHED(c);
}

/* h = momentum h + rate g; g = h, or (1 + momentum) h - momentum h_prev (Nesterov); w -= g.
 * one_plus = 1 + momentum, rounded on the host as the CPU rounds it. */
static __global__ void sgd_kernel(int64_t n, float *w, float *g, float *h, float rate, float momentum,
                                  float one_plus, int nesterov) {
  GRID_STRIDE(i, n) {
    float prev = h[i];
    float hv = __fadd_rn(__fmul_rn(momentum, prev), __fmul_rn(rate, g[i]));
    float u = nesterov ? __fsub_rn(__fmul_rn(one_plus, hv), __fmul_rn(momentum, prev)) : hv;
    h[i] = hv;
    g[i] = u;
    w[i] = __fsub_rn(w[i], u);
  }
}

extern "C" void dd_cuda_sgd_update(dd_backend *be, int64_t n, float *w, float *g, float *h, float rate,
                                   float momentum, int nesterov) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  sgd_kernel<<<grid_for(c, n), NT, 0, c->stream>>>(n, w, g, h, rate, momentum, 1.0f + momentum, nesterov);
  DD_CUDA_LAUNCHED(c);
}

/* m = b1 m + (1 - b1) g; v = b2 v + ((1 - b2) g) g; g = (rate_corr m) / (sqrt(v) + eps); w -= g.
 * rate_corr = rate * corr and the (1 - b) factors are rounded on the host as the CPU rounds them. */
static __global__ void adam_kernel(int64_t n, float *w, float *g, float *m, float *v, float rate_corr, float b1,
                                   float one_minus_b1, float b2, float one_minus_b2, float eps) {
  GRID_STRIDE(i, n) {
    float gv = g[i];
    float mv = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(one_minus_b1, gv));
    float vv = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(one_minus_b2, gv), gv));
    float u = __fdiv_rn(__fmul_rn(rate_corr, mv), __fadd_rn(__fsqrt_rn(vv), eps));
    m[i] = mv;
    v[i] = vv;
    g[i] = u;
    w[i] = __fsub_rn(w[i], u);
  }
}

extern "C" void dd_cuda_adam_update(dd_backend *be, int64_t n, float *w, float *g, float *m, float *v, float rate,
                                    float beta1, float beta2, float eps, int t) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  /* the CPU's expression, evaluated by the same host libm */
  float corr = sqrtf(1.0f - powf(beta2, (float)t)) / (1.0f - powf(beta1, (float)t));
  adam_kernel<<<grid_for(c, n), NT, 0, c->stream>>>(n, w, g, m, v, rate * corr, beta1, 1.0f - beta1, beta2,
                                                    1.0f - beta2, eps);
  DD_CUDA_LAUNCHED(c);
}

/* AdaGrad h += g g; RMSProp h = decay h + ((1 - decay) g) g; g = (rate g) / (sqrt(h) + eps); w -= g */
static __global__ void adagrad_kernel(int64_t n, float *w, float *g, float *h, float rate, float eps,
                                      float rms_decay, float one_minus_decay, int rmsprop) {
  GRID_STRIDE(i, n) {
    float gv = g[i];
    float hv = rmsprop ? __fadd_rn(__fmul_rn(rms_decay, h[i]), __fmul_rn(__fmul_rn(one_minus_decay, gv), gv))
                       : __fadd_rn(h[i], __fmul_rn(gv, gv));
    float u = __fdiv_rn(__fmul_rn(rate, gv), __fadd_rn(__fsqrt_rn(hv), eps));
    h[i] = hv;
    g[i] = u;
    w[i] = __fsub_rn(w[i], u);
  }
}

extern "C" void dd_cuda_adagrad_update(dd_backend *be, int64_t n, float *w, float *g, float *h, float rate,
                                       float eps, float rms_decay, int rmsprop) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  adagrad_kernel<<<grid_for(c, n), NT, 0, c->stream>>>(n, w, g, h, rate, eps, rms_decay, 1.0f - rms_decay,
                                                       rmsprop);
  DD_CUDA_LAUNCHED(c);
}
