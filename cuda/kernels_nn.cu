/* CUDA kernels for the layer operations of the backend table: pooling, BatchNorm (Caffe's, no
 * affine part), softmax, cross entropy, top-k accuracy, and the distillation (KD) and attention
 * transfer losses. Semantics in core/base/backend.h; the CPU kernels in core/cpu/cpu_kernels.c are the
 * reference these reproduce.
 *
 * Everything runs on the context's stream with DD_CUDA_THREADS threads a block and int64
 * indices. Float arithmetic the CPU does in float goes through the _rn intrinsics, which nvcc
 * never contracts into FMAs (and which stay IEEE under -use_fast_math), so each elementwise step
 * gives the CPU's float from the same inputs: pooling forward and backward, cross-entropy
 * backward and the BatchNorm maps given the statistics are the CPU's results bit for
 * bit; where a sum feeds them (softmax, BatchNorm statistics) only the summation order differs.
 * Sums accumulate in double in a fixed order: per-thread sums, a fixed shuffle tree per block,
 * block partials summed in a fixed order (per channel for BatchNorm, in ctx->d_red; the
 * host-returning losses and counts end in d_red[0 ..] and come back through the pinned
 * ctx->h_red). No floating-point atomics except Accuracy's per-class counts, which add exact
 * small integers (1.0f, exact below 2^24) and so give the same result in any order. A run
 * repeats bit for bit on a given device. Nothing here allocates.
 *
 * Layouts: pooling and BatchNorm take (N, C, H, W) / (N, C, S); softmax, the losses and accuracy
 * view x as (outer, channels, inner) and take labels as floats holding class indices (one per
 * (outer, inner) position), as the CPU does. */
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "cuda_internal.h"

#define NT DD_CUDA_THREADS
#define WARPS (NT / 32)
#define FULL 0xffffffffu

/* Host-returning reductions: results in d_red[0 .. RED_FIELDS), block partials from RED_PART on:
 * field f of block b at d_red[RED_PART + f * blocks + b]. */
#define RED_FIELDS 8
#define RED_PART 8
#define RED_MAX_BLOCKS 4096

#define GRID_STRIDE(i, n)                                                              \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);            \
       i += (int64_t)gridDim.x * blockDim.x)

/* a / b for a >= 0, b > 0: 32-bit division when both fit (the common case), else 64-bit */
static __device__ __forceinline__ int64_t div_nn(int64_t a, int64_t b) {
  if (((uint64_t)a | (uint64_t)b) >> 32 == 0) return (int64_t)((uint32_t)a / (uint32_t)b);
  return a / b;
}

/* Sum of v over the block (blockDim.x == NT), valid in thread 0. Every thread of the block calls
 * it; it may be called repeatedly in one kernel. */
static __device__ double block_sum(double v) {
  __shared__ double s[WARPS];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(FULL, v, off);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads(); /* the previous call's readers are done with s */
  if (lane == 0) s[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < WARPS ? s[lane] : 0.0;
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(FULL, v, off);
  }
  return v;
}

/* Sum of v over the warp, in every lane (a butterfly: the same order in every lane). */
static __device__ __forceinline__ double warp_sum(double v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL, v, off);
  return v;
}

static __device__ __forceinline__ float warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) {
    float o = __shfl_xor_sync(FULL, v, off);
    v = o > v ? o : v;
  }
  return v;
}

/* One block sums the partials of nf fields (see RED_PART) into red[0 .. nf). */
static __global__ void red_finish_kernel(double *red, int nf, int blocks) {
  for (int f = 0; f < nf; f++) {
    const double *p = red + RED_PART + (int64_t)f * blocks;
    double s = 0.0;
    for (int b = threadIdx.x; b < blocks; b += NT) s += p[b];
    s = block_sum(s);
    if (threadIdx.x == 0) red[f] = s;
  }
}

/* Blocks for a host-returning reduction of nf fields over `work` threads' worth of items. */
static int red_blocks(const dd_cuda_ctx *c, int64_t work, int nf) {
  int b = dd_cuda_blocks(c, work);
  int cap = (DD_CUDA_RED_DOUBLES - RED_PART) / nf;
  if (cap > RED_MAX_BLOCKS) cap = RED_MAX_BLOCKS;
  return b < cap ? b : cap;
}

/* Sums the partials and brings red[0 .. nf) to c->h_red, waiting for the stream. Returns 0, or -1
 * when the context has failed (the values are then not to be used). */
static int red_finish(dd_cuda_ctx *c, int nf, int blocks) {
  red_finish_kernel<<<1, NT, 0, c->stream>>>(c->d_red, nf, blocks);
  DD_CUDA_LAUNCHED(c);
  DD_CUDA_CHECK(c, cudaMemcpyAsync(c->h_red, c->d_red, (size_t)nf * sizeof(double), cudaMemcpyDeviceToHost,
                                   c->stream));
  DD_CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
  return c->failed ? -1 : 0;
}

/* ---- pooling ------------------------------------------------------------------------------------ */

/* One thread per output element (plane, oh, ow); the CPU's loops, window by window. */
static __global__ void pool_fwd_kernel(dd_pool_desc d, int64_t total, float *y, int32_t *mask, const float *x) {
  GRID_STRIDE(idx, total) {
    int64_t q = div_nn(idx, d.out_w);
    int ow = (int)(idx - q * d.out_w);
    int64_t plane = div_nn(q, d.out_h);
    int oh = (int)(q - plane * d.out_h);
    const float *xp = x + plane * d.h * d.w;
    int hs = oh * d.sh - d.ph, ws = ow * d.sw - d.pw, he, we;
    if (d.method == 0) {
      he = hs + d.kh < d.h ? hs + d.kh : d.h;
      we = ws + d.kw < d.w ? ws + d.kw : d.w;
      if (hs < 0) hs = 0;
      if (ws < 0) ws = 0;
      float best = -FLT_MAX;
      int arg = -1;
      for (int h = hs; h < he; h++)
        for (int w = ws; w < we; w++) {
          float v = xp[h * d.w + w];
          if (v > best) {
            best = v;
            arg = h * d.w + w;
          }
        }
      y[idx] = best;
      if (mask) mask[idx] = arg;
    } else {
      he = hs + d.kh < d.h + d.ph ? hs + d.kh : d.h + d.ph;
      we = ws + d.kw < d.w + d.pw ? ws + d.kw : d.w + d.pw;
      int size = (he - hs) * (we - ws);
      if (hs < 0) hs = 0;
      if (ws < 0) ws = 0;
      if (he > d.h) he = d.h;
      if (we > d.w) we = d.w;
      float s = 0.0f;
      for (int h = hs; h < he; h++)
        for (int w = ws; w < we; w++) s = __fadd_rn(s, xp[h * d.w + w]);
      y[idx] = __fdiv_rn(s, (float)size);
    }
  }
}

/* One thread per input element (plane, h, w), gathering from the outputs whose window holds it
 * (Caffe's CUDA formulation: no scatter, no atomics), in output order, as the CPU's scatter adds
 * them: the same float sums. */
static __global__ void pool_bwd_kernel(dd_pool_desc d, int64_t total, float *dx, const float *dy,
                                       const int32_t *mask) {
  GRID_STRIDE(idx, total) {
    int64_t q = div_nn(idx, d.w);
    int w = (int)(idx - q * d.w);
    int64_t plane = div_nn(q, d.h);
    int h = (int)(q - plane * d.h);
    /* outputs o with o * s - pad <= h < o * s - pad + k */
    int phs = h + d.ph < d.kh ? 0 : (h + d.ph - d.kh) / d.sh + 1;
    int phe = (h + d.ph) / d.sh + 1 < d.out_h ? (h + d.ph) / d.sh + 1 : d.out_h;
    int pws = w + d.pw < d.kw ? 0 : (w + d.pw - d.kw) / d.sw + 1;
    int pwe = (w + d.pw) / d.sw + 1 < d.out_w ? (w + d.pw) / d.sw + 1 : d.out_w;
    int64_t off = plane * d.out_h * d.out_w;
    const float *dyp = dy + off;
    float g = 0.0f;
    if (d.method == 0) {
      const int32_t *mp = mask + off;
      int self = h * d.w + w;
      for (int oh = phs; oh < phe; oh++)
        for (int ow = pws; ow < pwe; ow++)
          if (mp[oh * d.out_w + ow] == self) g = __fadd_rn(g, dyp[oh * d.out_w + ow]);
    } else {
      for (int oh = phs; oh < phe; oh++)
        for (int ow = pws; ow < pwe; ow++) {
          int hs = oh * d.sh - d.ph, ws = ow * d.sw - d.pw;
          int he = hs + d.kh < d.h + d.ph ? hs + d.kh : d.h + d.ph;
          int we = ws + d.kw < d.w + d.pw ? ws + d.kw : d.w + d.pw;
          g = __fadd_rn(g, __fdiv_rn(dyp[oh * d.out_w + ow], (float)((he - hs) * (we - ws))));
        }
    }
    dx[idx] = g;
  }
}

extern "C" void dd_cuda_pool_forward(dd_backend *be, const dd_pool_desc *d, float *y, int32_t *mask, const float *x) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  int64_t total = (int64_t)d->n * d->c * d->out_h * d->out_w;
  if (total <= 0) return;
  pool_fwd_kernel<<<dd_cuda_blocks(c, total), NT, 0, c->stream>>>(*d, total, y, d->method == 0 ? mask : NULL, x);
  DD_CUDA_LAUNCHED(c);
}

extern "C" void dd_cuda_pool_backward(dd_backend *be, const dd_pool_desc *d, float *dx, const float *dy,
                                      const int32_t *mask) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  int64_t total = (int64_t)d->n * d->c * d->h * d->w;
  if (total <= 0) return;
  if (d->method == 0 && !mask) { /* MAX backward needs the forward's argmax */
    dd_cuda_fail(c, "dd_cuda_pool_backward", __FILE__, __LINE__, "MAX pooling backward without a mask");
    return;
  }
  pool_bwd_kernel<<<dd_cuda_blocks(c, total), NT, 0, c->stream>>>(*d, total, dx, dy, mask);
  DD_CUDA_LAUNCHED(c);
}

/* ---- BatchNorm ---------------------------------------------------------------------------------- */

/* The per-channel work runs on a (splits, channels) grid: block (split, k) takes the share
 * [m * split / splits, m * (split + 1) / splits) of channel ch = c0 + k's m = N * S elements
 * (element j: image j / S, position j % S). Sums go to part[k * splits + split] per field
 * (double, in d_red), and each later block's first warp adds a channel's partials in one fixed
 * order, so every block of a channel sees the same statistics. Channels are processed in slabs
 * that keep the partials within d_red. */
typedef struct {
  int64_t n, c, s, m; /* m = n * s, elements per channel */
  int64_t c0, splits;
} bn_geom;

/* Calls f(offset) for this thread's elements of block (split, k)'s share of channel c0 + k. */
template <typename F>
static __device__ __forceinline__ void bn_for(const bn_geom &g, F f) {
  int64_t ch = g.c0 + blockIdx.y, split = blockIdx.x;
  int64_t j0 = g.m * split / g.splits, j1 = g.m * (split + 1) / g.splits;
  int64_t j = j0 + threadIdx.x;
  if (j >= j1) return;
  int64_t di = NT / g.s, dk = NT - di * g.s; /* a step of NT elements, in images and positions */
  int64_t i = j / g.s, k = j - i * g.s;
  for (; j < j1; j += NT) {
    f((i * g.c + ch) * g.s + k);
    i += di;
    k += dk;
    if (k >= g.s) {
      k -= g.s;
      i++;
    }
  }
}

/* Sum of channel k's partials, called by the block's first warp: lane sums in split order, then
 * a fixed butterfly, so every block of the channel gets the same double (in every lane). */
static __device__ __forceinline__ double bn_total(const double *part, const bn_geom &g) {
  const double *p = part + (int64_t)blockIdx.y * g.splits;
  double s = 0.0;
  for (int64_t t = threadIdx.x; t < g.splits; t += 32) s += p[t];
  return warp_sum(s);
}

/* part0: the share's sum of a (and, with part1, of a * b) */
static __global__ void bn_sum_kernel(bn_geom g, const float *a, const float *b, double *part0, double *part1) {
  double s0 = 0.0, s1 = 0.0;
  if (b)
    bn_for(g, [&](int64_t o) {
      float v = a[o];
      s0 += (double)v;
      s1 += (double)__fmul_rn(v, b[o]);
    });
  else
    bn_for(g, [&](int64_t o) { s0 += (double)a[o]; });
  s0 = block_sum(s0);
  if (part1) s1 = block_sum(s1);
  if (threadIdx.x == 0) {
    int64_t at = (int64_t)blockIdx.y * g.splits + blockIdx.x;
    part0[at] = s0;
    if (part1) part1[at] = s1;
  }
}

/* part1: the share's sum of squared deviations from the channel mean (from part0) */
static __global__ void bn_sqdev_kernel(bn_geom g, const float *x, const double *part0, double *part1) {
  __shared__ float mean_s;
  if (threadIdx.x < 32) {
    double t = bn_total(part0, g);
    if (threadIdx.x == 0) mean_s = (float)(t / (double)g.m);
  }
  __syncthreads();
  float mean = mean_s;
  double s = 0.0;
  bn_for(g, [&](int64_t o) {
    float dv = __fsub_rn(x[o], mean);
    s += (double)__fmul_rn(dv, dv);
  });
  s = block_sum(s);
  if (threadIdx.x == 0) part1[(int64_t)blockIdx.y * g.splits + blockIdx.x] = s;
}

/* y = (x - mean) * inv_std from the batch statistics; split 0 stores mean, inv_std and moves the
 * running sums; the first block of the first slab moves the factor (update_factor). */
static __global__ void bn_train_norm_kernel(bn_geom g, float *y, const float *x, const double *part0,
                                            const double *part1, float *mean, float *inv_std, float *mean_sum,
                                            float *var_sum, float *factor, float maf, float eps, int update_factor) {
  __shared__ float mean_s, inv_s;
  int64_t ch = g.c0 + blockIdx.y;
  double t0 = 0.0, t1 = 0.0;
  if (threadIdx.x < 32) {
    t0 = bn_total(part0, g);
    t1 = bn_total(part1, g);
  }
  if (threadIdx.x == 0) {
    float mu = (float)(t0 / (double)g.m);
    float var = (float)(t1 / (double)g.m);
    float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(var, eps)));
    mean_s = mu;
    inv_s = inv;
    if (blockIdx.x == 0) {
      float corr = g.m > 1 ? __fdiv_rn((float)g.m, (float)(g.m - 1)) : 1.0f;
      mean[ch] = mu;
      inv_std[ch] = inv;
      mean_sum[ch] = __fadd_rn(mu, __fmul_rn(maf, mean_sum[ch]));
      var_sum[ch] = __fadd_rn(__fmul_rn(corr, var), __fmul_rn(maf, var_sum[ch]));
      if (update_factor && blockIdx.y == 0) factor[0] = __fadd_rn(__fmul_rn(factor[0], maf), 1.0f);
    }
  }
  __syncthreads();
  float mu = mean_s, inv = inv_s;
  bn_for(g, [&](int64_t o) { y[o] = __fmul_rn(__fsub_rn(x[o], mu), inv); });
}

/* y = (x - mean) * inv_std from the stored statistics; split 0 stores mean and inv_std */
static __global__ void bn_global_kernel(bn_geom g, float *y, const float *x, float *mean, float *inv_std,
                                        const float *mean_sum, const float *var_sum, const float *factor, float eps) {
  int64_t ch = g.c0 + blockIdx.y;
  float f = factor[0];
  float sc = f == 0.0f ? 0.0f : __fdiv_rn(1.0f, f);
  float mu = __fmul_rn(mean_sum[ch], sc), var = __fmul_rn(var_sum[ch], sc);
  float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(var, eps)));
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    mean[ch] = mu;
    inv_std[ch] = inv;
  }
  bn_for(g, [&](int64_t o) { y[o] = __fmul_rn(__fsub_rn(x[o], mu), inv); });
}

/* dx = inv_std * (dy - mean(dy) - y * mean(dy * y)) from the partials, or (global) inv_std * dy */
static __global__ void bn_bwd_kernel(bn_geom g, float *dx, const float *dy, const float *y, const float *inv_std,
                                     const double *part0, const double *part1) {
  float inv = inv_std[g.c0 + blockIdx.y];
  if (!part0) {
    bn_for(g, [&](int64_t o) { dx[o] = __fmul_rn(dy[o], inv); });
    return;
  }
  __shared__ float mdy_s, mdyy_s;
  if (threadIdx.x < 32) {
    double t0 = bn_total(part0, g), t1 = bn_total(part1, g);
    if (threadIdx.x == 0) {
      mdy_s = (float)(t0 / (double)g.m);
      mdyy_s = (float)(t1 / (double)g.m);
    }
  }
  __syncthreads();
  float mdy = mdy_s, mdyy = mdyy_s;
  bn_for(g, [&](int64_t o) { dx[o] = __fmul_rn(__fsub_rn(__fsub_rn(dy[o], mdy), __fmul_rn(y[o], mdyy)), inv); });
}

/* At most this many splits per channel (each later block reads a channel's partials). */
#define BN_MAX_SPLITS 1024

/* Geometry for n x c x s: splits for about dd_cuda_blocks blocks in all with a full block of
 * elements each; *slab: channels a launch takes so that nf fields of partials fit in d_red. */
static bn_geom bn_plan(const dd_cuda_ctx *c, int n, int ch, int s, int nf, int64_t *slab) {
  bn_geom g;
  g.n = n;
  g.c = ch;
  g.s = s;
  g.m = (int64_t)n * s;
  g.c0 = 0;
  int64_t splits = ((int64_t)dd_cuda_blocks(c, g.m * ch) + ch - 1) / ch, most = (g.m + NT - 1) / NT;
  if (splits > most) splits = most;
  if (splits > BN_MAX_SPLITS) splits = BN_MAX_SPLITS;
  if (splits < 1) splits = 1;
  g.splits = splits;
  int64_t sl = nf > 0 ? DD_CUDA_RED_DOUBLES / (nf * splits) : 65535;
  if (sl > 65535) sl = 65535;
  if (sl < 1) sl = 1;
  *slab = sl;
  return g;
}

static dim3 bn_grid(const bn_geom &g, int64_t nk) { return dim3((unsigned)g.splits, (unsigned)nk); }

extern "C" void dd_cuda_bn_forward_train(dd_backend *be, int n, int c, int s, float *y, const float *x, float *mean,
                                         float *inv_std, float *mean_sum, float *var_sum, float *factor, float maf,
                                         float eps) {
  dd_cuda_ctx *cx = DD_CUDA_CTX(be);
  if (n <= 0 || c <= 0 || s <= 0) return;
  int64_t slab;
  bn_geom g = bn_plan(cx, n, c, s, 2, &slab);
  for (int64_t c0 = 0; c0 < c; c0 += slab) {
    int64_t nk = c - c0 < slab ? c - c0 : slab;
    double *p0 = cx->d_red, *p1 = cx->d_red + nk * g.splits;
    g.c0 = c0;
    bn_sum_kernel<<<bn_grid(g, nk), NT, 0, cx->stream>>>(g, x, NULL, p0, NULL);
    DD_CUDA_LAUNCHED(cx);
    bn_sqdev_kernel<<<bn_grid(g, nk), NT, 0, cx->stream>>>(g, x, p0, p1);
    DD_CUDA_LAUNCHED(cx);
    bn_train_norm_kernel<<<bn_grid(g, nk), NT, 0, cx->stream>>>(g, y, x, p0, p1, mean, inv_std, mean_sum, var_sum,
                                                                 factor, maf, eps, c0 == 0);
    DD_CUDA_LAUNCHED(cx);
  }
}

extern "C" void dd_cuda_bn_forward_global(dd_backend *be, int n, int c, int s, float *y, const float *x, float *mean,
                                          float *inv_std, const float *mean_sum, const float *var_sum,
                                          const float *factor, float eps) {
  dd_cuda_ctx *cx = DD_CUDA_CTX(be);
  if (n <= 0 || c <= 0 || s <= 0) return;
  int64_t slab;
  bn_geom g = bn_plan(cx, n, c, s, 0, &slab);
  for (int64_t c0 = 0; c0 < c; c0 += slab) {
    int64_t nk = c - c0 < slab ? c - c0 : slab;
    g.c0 = c0;
    bn_global_kernel<<<bn_grid(g, nk), NT, 0, cx->stream>>>(g, y, x, mean, inv_std, mean_sum, var_sum, factor, eps);
    DD_CUDA_LAUNCHED(cx);
  }
}

extern "C" void dd_cuda_bn_backward(dd_backend *be, int n, int c, int s, float *dx, const float *dy, const float *y,
                                    const float *inv_std, int global) {
  dd_cuda_ctx *cx = DD_CUDA_CTX(be);
  if (n <= 0 || c <= 0 || s <= 0) return;
  int64_t slab;
  bn_geom g = bn_plan(cx, n, c, s, global ? 0 : 2, &slab);
  for (int64_t c0 = 0; c0 < c; c0 += slab) {
    int64_t nk = c - c0 < slab ? c - c0 : slab;
    g.c0 = c0;
    if (global) {
      bn_bwd_kernel<<<bn_grid(g, nk), NT, 0, cx->stream>>>(g, dx, dy, NULL, inv_std, NULL, NULL);
      DD_CUDA_LAUNCHED(cx);
      continue;
    }
    double *p0 = cx->d_red, *p1 = cx->d_red + nk * g.splits;
    bn_sum_kernel<<<bn_grid(g, nk), NT, 0, cx->stream>>>(g, dy, y, p0, p1);
    DD_CUDA_LAUNCHED(cx);
    bn_bwd_kernel<<<bn_grid(g, nk), NT, 0, cx->stream>>>(g, dx, dy, y, inv_std, p0, p1);
    DD_CUDA_LAUNCHED(cx);
  }
}

/* ---- softmax ------------------------------------------------------------------------------------ */

/* e^v as the CPU's expf rounds it: exp in double, rounded once to float */
static __device__ __forceinline__ float exp_f(float v) { return (float)exp((double)v); }

/* inner == 1: one warp per row of `ch` channels */
static __global__ void softmax_rows_kernel(int64_t rows, int64_t ch, float *y, const float *x) {
  int lane = threadIdx.x & 31;
  int64_t warps = (int64_t)gridDim.x * WARPS;
  for (int64_t r = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5); r < rows; r += warps) {
    const float *xr = x + r * ch;
    float *yr = y + r * ch;
    float mx = -FLT_MAX;
    for (int64_t c = lane; c < ch; c += 32)
      if (xr[c] > mx) mx = xr[c];
    mx = warp_max(mx);
    double sum = 0.0;
    for (int64_t c = lane; c < ch; c += 32) {
      float e = exp_f(__fsub_rn(xr[c], mx));
      yr[c] = e;
      sum += (double)e;
    }
    float fs = (float)warp_sum(sum);
    for (int64_t c = lane; c < ch; c += 32) yr[c] = __fdiv_rn(yr[c], fs);
  }
}

/* inner > 1: one thread per (outer, inner) position, channels strided by inner */
static __global__ void softmax_cols_kernel(int64_t outer, int64_t ch, int64_t inner, float *y, const float *x) {
  GRID_STRIDE(pos, outer * inner) {
    int64_t o = div_nn(pos, inner), i = pos - o * inner;
    const float *xp = x + o * ch * inner + i;
    float *yp = y + o * ch * inner + i;
    float mx = -FLT_MAX;
    for (int64_t c = 0; c < ch; c++)
      if (xp[c * inner] > mx) mx = xp[c * inner];
    double sum = 0.0;
    for (int64_t c = 0; c < ch; c++) {
      float e = exp_f(__fsub_rn(xp[c * inner], mx));
      yp[c * inner] = e;
      sum += (double)e;
    }
    float fs = (float)sum;
    for (int64_t c = 0; c < ch; c++) yp[c * inner] = __fdiv_rn(yp[c * inner], fs);
  }
}

extern "C" void dd_cuda_softmax_forward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *y,
                                        const float *x) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (outer <= 0 || channels <= 0 || inner <= 0) return;
  if (inner == 1)
    softmax_rows_kernel<<<dd_cuda_blocks(c, outer * 32), NT, 0, c->stream>>>(outer, channels, y, x);
  else
    softmax_cols_kernel<<<dd_cuda_blocks(c, outer * inner), NT, 0, c->stream>>>(outer, channels, inner, y, x);
  DD_CUDA_LAUNCHED(c);
}

/* dx = (dy - sum_c(dy * y)) * y; inner == 1: one warp per row */
static __global__ void softmax_bwd_rows_kernel(int64_t rows, int64_t ch, float *dx, const float *dy, const float *y) {
  int lane = threadIdx.x & 31;
  int64_t warps = (int64_t)gridDim.x * WARPS;
  for (int64_t r = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5); r < rows; r += warps) {
    const float *dyr = dy + r * ch, *yr = y + r * ch;
    float *dxr = dx + r * ch;
    double dot = 0.0;
    for (int64_t c = lane; c < ch; c += 32) dot += (double)__fmul_rn(dyr[c], yr[c]);
    float fd = (float)warp_sum(dot);
    for (int64_t c = lane; c < ch; c += 32) dxr[c] = __fmul_rn(__fsub_rn(dyr[c], fd), yr[c]);
  }
}

static __global__ void softmax_bwd_cols_kernel(int64_t outer, int64_t ch, int64_t inner, float *dx, const float *dy,
                                               const float *y) {
  GRID_STRIDE(pos, outer * inner) {
    int64_t o = div_nn(pos, inner), i = pos - o * inner, base = o * ch * inner + i;
    double dot = 0.0;
    for (int64_t c = 0; c < ch; c++) dot += (double)__fmul_rn(dy[base + c * inner], y[base + c * inner]);
    float fd = (float)dot;
    for (int64_t c = 0; c < ch; c++) {
      int64_t at = base + c * inner;
      dx[at] = __fmul_rn(__fsub_rn(dy[at], fd), y[at]);
    }
  }
}

extern "C" void dd_cuda_softmax_backward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *dx,
                                         const float *dy, const float *y) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (outer <= 0 || channels <= 0 || inner <= 0) return;
  if (inner == 1)
    softmax_bwd_rows_kernel<<<dd_cuda_blocks(c, outer * 32), NT, 0, c->stream>>>(outer, channels, dx, dy, y);
  else
    softmax_bwd_cols_kernel<<<dd_cuda_blocks(c, outer * inner), NT, 0, c->stream>>>(outer, channels, inner, dx, dy,
                                                                                  y);
  DD_CUDA_LAUNCHED(c);
}

/* ---- cross entropy ------------------------------------------------------------------------------ */

/* per block: the sum of -log(max(prob[label], FLT_MIN)) and the count, over valid positions */
static __global__ void xent_fwd_kernel(int64_t outer, int64_t ch, int64_t inner, const float *prob,
                                       const float *label, int has_ignore, int ignore_label, double *part) {
  double loss = 0.0, count = 0.0;
  GRID_STRIDE(pos, outer * inner) {
    int l = (int)label[pos];
    if (has_ignore && l == ignore_label) continue;
    if (l < 0 || l >= ch) l = 0; /* validated by the layer before the call */
    int64_t o = div_nn(pos, inner), i = pos - o * inner;
    float p = prob[(o * ch + l) * inner + i];
    loss -= log((double)(p > FLT_MIN ? p : FLT_MIN));
    count += 1.0;
  }
  loss = block_sum(loss);
  count = block_sum(count);
  if (threadIdx.x == 0) {
    part[blockIdx.x] = loss;
    part[gridDim.x + blockIdx.x] = count;
  }
}

extern "C" double dd_cuda_xent_forward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner,
                                       const float *prob, const float *label, int has_ignore, int ignore_label,
                                       int64_t *valid) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  *valid = 0;
  if (outer <= 0 || channels <= 0 || inner <= 0) return 0.0;
  int blocks = red_blocks(c, outer * inner, 2);
  xent_fwd_kernel<<<blocks, NT, 0, c->stream>>>(outer, channels, inner, prob, label, has_ignore, ignore_label,
                                                c->d_red + RED_PART);
  DD_CUDA_LAUNCHED(c);
  if (red_finish(c, 2, blocks)) return 0.0;
  *valid = (int64_t)c->h_red[1];
  return c->h_red[0];
}

/* dx = (prob - onehot(label)) * scale; 0 at ignored positions. One thread per element. */
static __global__ void xent_bwd_kernel(int64_t outer, int64_t ch, int64_t inner, float *dx, const float *prob,
                                       const float *label, int has_ignore, int ignore_label, float scale) {
  GRID_STRIDE(idx, outer * ch * inner) {
    int64_t q = div_nn(idx, inner), i = idx - q * inner, o = div_nn(q, ch), cc = q - o * ch;
    int l = (int)label[o * inner + i];
    if (has_ignore && l == ignore_label) {
      dx[idx] = 0.0f;
      continue;
    }
    dx[idx] = __fmul_rn(__fsub_rn(prob[idx], cc == l ? 1.0f : 0.0f), scale);
  }
}

extern "C" void dd_cuda_xent_backward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *dx,
                                      const float *prob, const float *label, int has_ignore, int ignore_label,
                                      float scale) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  int64_t total = outer * channels * inner;
  if (total <= 0) return;
  xent_bwd_kernel<<<dd_cuda_blocks(c, total), NT, 0, c->stream>>>(outer, channels, inner, dx, prob, label,
                                                                  has_ignore, ignore_label, scale);
  DD_CUDA_LAUNCHED(c);
}

/* ---- accuracy ----------------------------------------------------------------------------------- */

/* One warp per (outer, inner) position: the classes ranking above the true one (Caffe 1.0's
 * (value, class) order: greater value, or an equal value with a higher class); a position with
 * a NaN score is never correct. Per block: the counts of correct and valid positions. */
static __global__ void accuracy_kernel(int64_t outer, int64_t ch, int64_t inner, const float *x, const float *label,
                                       int top_k, int has_ignore, int ignore_label, float *pc_correct,
                                       float *pc_total, double *part) {
  int lane = threadIdx.x & 31;
  int64_t warps = (int64_t)gridDim.x * WARPS, positions = outer * inner;
  double ok = 0.0, valid = 0.0; /* lane 0's counts */
  for (int64_t pos = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5); pos < positions; pos += warps) {
    int l = (int)label[pos];
    if (has_ignore && l == ignore_label) continue;
    if (l < 0 || l >= ch) continue;
    int64_t o = div_nn(pos, inner), i = pos - o * inner;
    const float *xp = x + o * ch * inner + i;
    float v = xp[(int64_t)l * inner];
    int better = 0, has_nan = 0;
    for (int64_t c = lane; c < ch; c += 32) {
      float u = xp[c * inner];
      has_nan |= u != u;
      better += (u > v || (u == v && c > l)) ? 1 : 0;
    }
    for (int off = 16; off > 0; off >>= 1) better += __shfl_xor_sync(FULL, better, off);
    has_nan = __any_sync(FULL, has_nan); /* a position with a NaN score is never correct (as on the CPU) */
    if (lane == 0) {
      valid += 1.0;
      if (pc_total) atomicAdd(pc_total + l, 1.0f); /* exact: small integers */
      if (better < top_k && !has_nan) {
        ok += 1.0;
        if (pc_correct) atomicAdd(pc_correct + l, 1.0f);
      }
    }
  }
  ok = block_sum(ok);
  valid = block_sum(valid);
  if (threadIdx.x == 0) {
    part[blockIdx.x] = ok;
    part[gridDim.x + blockIdx.x] = valid;
  }
}

extern "C" void dd_cuda_accuracy(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, const float *x,
                                 const float *label, int top_k, int has_ignore, int ignore_label, int64_t *correct,
                                 int64_t *valid, float *per_class_correct, float *per_class_total) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  *correct = 0;
  *valid = 0;
  if (outer <= 0 || channels <= 0 || inner <= 0) return;
  int blocks = red_blocks(c, outer * inner * 32, 2);
  accuracy_kernel<<<blocks, NT, 0, c->stream>>>(outer, channels, inner, x, label, top_k, has_ignore, ignore_label,
                                                per_class_correct, per_class_total, c->d_red + RED_PART);
  DD_CUDA_LAUNCHED(c);
  if (red_finish(c, 2, blocks)) return;
  *correct = (int64_t)c->h_red[0];
  *valid = (int64_t)c->h_red[1];
}

/* ---- distillation (KD) -------------------------------------------------------------------------- */

/* One warp per row: p = softmax(t / T), q = softmax(s / T) in double; the row's T^2 KL(p || q)
 * summed per warp (lane 0), then per block; ds = scale * T * (q - p). */
static __global__ void kd_kernel(int64_t rows, int64_t ch, const float *s, const float *t, float temp, float *ds,
                                 float scale, double *part) {
  int lane = threadIdx.x & 31;
  int64_t warps = (int64_t)gridDim.x * WARPS;
  double total = 0.0;
  double t2 = (double)temp * temp;
  double st = (double)__fmul_rn(scale, temp);
  for (int64_t r = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5); r < rows; r += warps) {
    const float *sr = s + r * ch, *tr = t + r * ch;
    double ms = -DBL_MAX, mt = -DBL_MAX;
    for (int64_t c = lane; c < ch; c += 32) {
      double a = (double)__fdiv_rn(sr[c], temp), b = (double)__fdiv_rn(tr[c], temp);
      if (a > ms) ms = a;
      if (b > mt) mt = b;
    }
    for (int off = 16; off > 0; off >>= 1) {
      double a = __shfl_xor_sync(FULL, ms, off), b = __shfl_xor_sync(FULL, mt, off);
      if (a > ms) ms = a;
      if (b > mt) mt = b;
    }
    double zs = 0.0, zt = 0.0;
    for (int64_t c = lane; c < ch; c += 32) {
      zs += exp((double)__fdiv_rn(sr[c], temp) - ms);
      zt += exp((double)__fdiv_rn(tr[c], temp) - mt);
    }
    double lzs = log(warp_sum(zs)), lzt = log(warp_sum(zt)), kl = 0.0;
    for (int64_t c = lane; c < ch; c += 32) {
      double lq = (double)__fdiv_rn(sr[c], temp) - ms - lzs, lp = (double)__fdiv_rn(tr[c], temp) - mt - lzt;
      double p = exp(lp);
      kl += p * (lp - lq);
      if (ds) ds[r * ch + c] = (float)(st * (exp(lq) - p));
    }
    kl = warp_sum(kl);
    if (lane == 0) total += t2 * kl;
  }
  total = block_sum(total);
  if (threadIdx.x == 0) part[blockIdx.x] = total;
}

extern "C" double dd_cuda_kd_forward_backward(dd_backend *be, int64_t outer, int64_t channels, const float *s,
                                              const float *t, float temperature, float *ds, float scale) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (outer <= 0 || channels <= 0) return 0.0;
  int blocks = red_blocks(c, outer * 32, 1);
  kd_kernel<<<blocks, NT, 0, c->stream>>>(outer, channels, s, t, temperature, ds, scale, c->d_red + RED_PART);
  DD_CUDA_LAUNCHED(c);
  if (red_finish(c, 1, blocks)) return 0.0;
  return c->h_red[0];
}

/* ---- attention transfer ------------------------------------------------------------------------- */

/* Q[j] = sum over channels of x[k][j]^2, in channel order (the CPU's order: the same double) */
static __device__ __forceinline__ double att_q(const float *x, int64_t ch, int64_t hw, int64_t j) {
  double q = 0.0;
  for (int64_t k = 0; k < ch; k++) {
    double v = (double)x[k * hw + j];
    q += v * v;
  }
  return q;
}

/* One block per image (blocks stride over images). Q maps are kept in shared memory when they fit
 * (cache: 2 * hw doubles of dynamic shared memory), else recomputed in each pass. Per block: the
 * sum of its images' ||q_s - q_t||^2. */
static __global__ void attention_kernel(int64_t n, int64_t cs, int64_t ct, int64_t hw, const float *s, const float *t,
                                        float *ds, float scale, int cache, double *part) {
  extern __shared__ double qmap[]; /* cache: Q_s then Q_t */
  __shared__ double inv_s, inv_t, qg_s;
  double total = 0.0;
  for (int64_t img = blockIdx.x; img < n; img += gridDim.x) {
    const float *si = s + img * cs * hw, *ti = t + img * ct * hw;
    /* norms */
    double ns = 0.0, nt = 0.0;
    for (int64_t j = threadIdx.x; j < hw; j += NT) {
      double a = att_q(si, cs, hw, j), b = att_q(ti, ct, hw, j);
      if (cache) {
        qmap[j] = a;
        qmap[hw + j] = b;
      }
      ns += a * a;
      nt += b * b;
    }
    ns = block_sum(ns);
    nt = block_sum(nt);
    if (threadIdx.x == 0) {
      ns = sqrt(ns);
      nt = sqrt(nt);
      inv_s = ns > 1e-12 ? 1.0 / ns : 0.0;
      inv_t = nt > 1e-12 ? 1.0 / nt : 0.0;
    }
    __syncthreads();
    double is = inv_s, it = inv_t;
    /* the loss and q_s . dL/dq_s */
    double l = 0.0, qg = 0.0;
    for (int64_t j = threadIdx.x; j < hw; j += NT) {
      double qs = (cache ? qmap[j] : att_q(si, cs, hw, j)) * is;
      double qt = (cache ? qmap[hw + j] : att_q(ti, ct, hw, j)) * it;
      double dd = qs - qt;
      l += dd * dd;
      qg += qs * 2 * dd;
    }
    l = block_sum(l);
    qg = block_sum(qg);
    if (threadIdx.x == 0) {
      total += l;
      qg_s = qg;
    }
    __syncthreads();
    if (ds) {
      /* dL/dQ = (g - q (q . g)) / ||Q||, g = 2 (q_s - q_t); dQ/dx = 2 x */
      double q_g = qg_s;
      float *dsi = ds + img * cs * hw;
      for (int64_t j = threadIdx.x; j < hw; j += NT) {
        double qs = (cache ? qmap[j] : att_q(si, cs, hw, j)) * is;
        double qt = (cache ? qmap[hw + j] : att_q(ti, ct, hw, j)) * it;
        double gq = (2 * (qs - qt) - qs * q_g) * is;
        double sg = (double)scale * gq;
        for (int64_t k = 0; k < cs; k++) dsi[k * hw + j] = (float)(sg * 2 * (double)si[k * hw + j]);
      }
    }
    __syncthreads(); /* qmap, inv_s, inv_t and qg_s are reused by the next image */
  }
  total = block_sum(total);
  if (threadIdx.x == 0) part[blockIdx.x] = total;
}

/* Dynamic shared memory for the Q maps: within the default 48 KiB less the static part. */
#define ATT_CACHE_BYTES (40 * 1024)

extern "C" double dd_cuda_attention_forward_backward(dd_backend *be, int64_t n, int64_t cs, int64_t ct, int64_t hw,
                                                     const float *s, const float *t, float *ds, float scale,
                                                     void *ws) {
  (void)ws; /* the maps live in shared memory or are recomputed; no workspace needed */
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0 || hw <= 0) return 0.0;
  int cache = (int64_t)(2 * hw * sizeof(double)) <= ATT_CACHE_BYTES;
  int blocks = red_blocks(c, n * NT, 1);
  size_t shm = cache ? (size_t)(2 * hw * sizeof(double)) : 0;
  attention_kernel<<<blocks, NT, shm, c->stream>>>(n, cs, ct, hw, s, t, ds, scale, cache, c->d_red + RED_PART);
  DD_CUDA_LAUNCHED(c);
  if (red_finish(c, 1, blocks)) return 0.0;
  return c->h_red[0];
}
