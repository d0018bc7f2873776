/* CUDA kernels for the layer operations of the backend table: pooling, softmax, cross entropy,
 * top-k accuracy, and the distillation (KD) and attention transfer losses (BatchNorm is in
 * cuda/kernels_batchnorm.cu). Semantics in core/base/backend.h; the CPU kernels in
 * core/cpu/cpu_kernels.c are the reference these reproduce.
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
#include "cuda_reduce.h"

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
