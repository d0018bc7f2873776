/* CUDA kernels of the catalogue's loss layers (SigmoidCrossEntropyLoss, InfogainLoss,
 * MultinomialLogisticLoss, HingeLoss, ContrastiveLoss): semantics in core/base/backend.h; the
 * CPU kernels in core/cpu/cpu_losses.c are the reference and these follow their steps: each term
 * is computed in double and a gradient rounded to float once, so elementwise gradients are the
 * CPU's floats where the double math functions agree (InfogainLoss's row sums and the per-row
 * terms are summed in the CPU's order, one thread per position or row).
 *
 * The host-returning losses reduce deterministically: per-thread sums in grid-stride order, a
 * fixed shuffle tree per block, block partials in ctx->d_red summed in a fixed order by one
 * block, then copied to the pinned ctx->h_red (the stream is synchronised). No floating-point
 * atomics; a run repeats bit for bit on a given device. Nothing here allocates. */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.h"
#include "cuda_reduce.h"

#define NT DD_CUDA_THREADS
#define WARPS (NT / 32)
#define FULL 0xffffffffu
#define LOG_FLOOR 1e-20f /* Caffe's kLOG_THRESHOLD */

/* d_red layout: results in [0, RED_FIELDS), field f of block b at RED_PART + f * blocks + b */
#define RED_FIELDS 2
#define RED_PART 8
#define RED_MAX_BLOCKS 4096

#define GRID_STRIDE(i, n)                                                              \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);            \
       i += (int64_t)gridDim.x * blockDim.x)

/* Thread 0 writes the block's sums of a and b as its partials of fields 0 and 1. */
static __device__ void write_partials(double a, double b, double *part) {
  a = block_sum(a);
  b = block_sum(b);
  if (threadIdx.x == 0) {
    part[blockIdx.x] = a;
    part[gridDim.x + blockIdx.x] = b;
  }
}

static __global__ void red_finish_kernel(double *red, int nf, int blocks) {
  for (int f = 0; f < nf; f++) {
    const double *p = red + RED_PART + (int64_t)f * blocks;
    double s = 0.0;
    for (int b = threadIdx.x; b < blocks; b += NT) s += p[b];
    s = block_sum(s);
    if (threadIdx.x == 0) red[f] = s;
  }
}

static int red_blocks(const dd_cuda_ctx *c, int64_t work) {
  int b = dd_cuda_blocks(c, work);
  int cap = (DD_CUDA_RED_DOUBLES - RED_PART) / RED_FIELDS;
  if (cap > RED_MAX_BLOCKS) cap = RED_MAX_BLOCKS;
  return b < cap ? b : cap;
}

/* Sums the partials and brings fields 0 and 1 to c->h_red; -1 when the context has failed. */
static int red_finish(dd_cuda_ctx *c, int blocks) {
  red_finish_kernel<<<1, NT, 0, c->stream>>>(c->d_red, RED_FIELDS, blocks);
  DD_CUDA_LAUNCHED(c);
  DD_CUDA_CHECK(c, cudaMemcpyAsync(c->h_red, c->d_red, RED_FIELDS * sizeof(double), cudaMemcpyDeviceToHost,
                                   c->stream));
  DD_CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
  return c->failed ? -1 : 0;
}

/* Caffe's static_cast<int>(v) == ignore, defined for every float */
static __device__ __forceinline__ bool is_ignored(float v, int has_ignore, int ignore) {
  return has_ignore && v > -2147483649.0f && v < 2147483648.0f && (int)v == ignore;
}

/* ---- SigmoidCrossEntropyLoss ---------------------------------------------------------------- */

static __global__ void sigmoid_xent_fwd_kernel(int64_t n, const float *x, const float *t, int has_ignore,
                                               int ignore, double *part) {
  double loss = 0.0, count = 0.0;
  GRID_STRIDE(i, n) {
    if (is_ignored(t[i], has_ignore, ignore)) continue;
    double v = x[i];
    loss -= v * ((double)t[i] - (v >= 0 ? 1.0 : 0.0)) - log1p(exp(-fabs(v)));
    count += 1.0;
  }
  write_partials(loss, count, part);
}

extern "C" double dd_cuda_sigmoid_xent_forward(dd_backend *be, int64_t n, const float *x, const float *target,
                                               int has_ignore, int ignore_label, int64_t *valid) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  *valid = 0;
  if (n <= 0) return 0.0;
  int blocks = red_blocks(c, n);
  sigmoid_xent_fwd_kernel<<<blocks, NT, 0, c->stream>>>(n, x, target, has_ignore, ignore_label, c->d_red + RED_PART);
  DD_CUDA_LAUNCHED(c);
  if (red_finish(c, blocks)) return 0.0;
  *valid = (int64_t)c->h_red[1];
  return c->h_red[0];
}

static __global__ void sigmoid_xent_bwd_kernel(int64_t n, float *dx, const float *x, const float *t, int has_ignore,
                                               int ignore, float scale) {
  GRID_STRIDE(i, n) {
    if (is_ignored(t[i], has_ignore, ignore)) {
      dx[i] = 0.0f;
      continue;
    }
    double v = x[i], s;
    if (v >= 0) {
      s = 1.0 / (1.0 + exp(-v));
    } else {
      double e = exp(v);
      s = e / (1.0 + e);
    }
    dx[i] = (float)((s - (double)t[i]) * (double)scale);
  }
}

extern "C" void dd_cuda_sigmoid_xent_backward(dd_backend *be, int64_t n, float *dx, const float *x,
                                              const float *target, int has_ignore, int ignore_label, float scale) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return;
  sigmoid_xent_bwd_kernel<<<dd_cuda_blocks(c, n), NT, 0, c->stream>>>(n, dx, x, target, has_ignore, ignore_label,
                                                                      scale);
  DD_CUDA_LAUNCHED(c);
}

/* ---- InfogainLoss, MultinomialLogisticLoss -------------------------------------------------- */

static __device__ __forceinline__ double log_floored(float p) { return log((double)(p > LOG_FLOOR ? p : LOG_FLOOR)); }

/* one thread per (outer, inner) position */
static __global__ void infogain_fwd_kernel(int64_t outer, int64_t ch, int64_t inner, const float *prob,
                                           const float *label, const float *h, int has_ignore, int ignore,
                                           double *part) {
  double loss = 0.0, count = 0.0;
  GRID_STRIDE(pos, outer * inner) {
    float lv = label[pos];
    if (is_ignored(lv, has_ignore, ignore)) continue;
    int64_t y = (int64_t)lv;
    if (y < 0 || y >= ch) y = 0; /* validated by the layer before the call */
    int64_t o = div_nn(pos, inner), i = pos - o * inner;
    const float *p = prob + o * ch * inner + i;
    if (!h) {
      loss -= log_floored(p[y * inner]);
    } else {
      const float *row = h + y * ch;
      for (int64_t l = 0; l < ch; l++) loss -= (double)row[l] * log_floored(p[l * inner]);
    }
    count += 1.0;
  }
  write_partials(loss, count, part);
}

extern "C" double dd_cuda_infogain_forward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner,
                                           const float *prob, const float *label, const float *h, int has_ignore,
                                           int ignore_label, int64_t *valid) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  *valid = 0;
  if (outer <= 0 || channels <= 0 || inner <= 0) return 0.0;
  int blocks = red_blocks(c, outer * inner);
  infogain_fwd_kernel<<<blocks, NT, 0, c->stream>>>(outer, channels, inner, prob, label, h, has_ignore,
                                                    ignore_label, c->d_red + RED_PART);
  DD_CUDA_LAUNCHED(c);
  if (red_finish(c, blocks)) return 0.0;
  *valid = (int64_t)c->h_red[1];
  return c->h_red[0];
}

/* one thread per position: the row sum of H in the CPU's order, then the position's gradients */
static __global__ void infogain_bwd_kernel(int64_t outer, int64_t ch, int64_t inner, float *dx, const float *prob,
                                           const float *label, const float *h, int has_ignore, int ignore,
                                           float scale) {
  GRID_STRIDE(pos, outer * inner) {
    int64_t o = div_nn(pos, inner), i = pos - o * inner;
    const float *p = prob + o * ch * inner + i;
    float *d = dx + o * ch * inner + i;
    float lv = label[pos];
    if (is_ignored(lv, has_ignore, ignore)) {
      for (int64_t l = 0; l < ch; l++) d[l * inner] = 0.0f;
      continue;
    }
    int64_t y = (int64_t)lv;
    if (y < 0 || y >= ch) y = 0;
    const float *row = h ? h + y * ch : NULL;
    double rsum = 0.0;
    if (row)
      for (int64_t l = 0; l < ch; l++) rsum += row[l];
    else
      rsum = 1.0;
    for (int64_t l = 0; l < ch; l++) {
      double hl = row ? (double)row[l] : (l == y ? 1.0 : 0.0);
      d[l * inner] = (float)(((double)p[l * inner] * rsum - hl) * (double)scale);
    }
  }
}

extern "C" void dd_cuda_infogain_backward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *dx,
                                          const float *prob, const float *label, const float *h, int has_ignore,
                                          int ignore_label, float scale) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (outer <= 0 || channels <= 0 || inner <= 0) return;
  infogain_bwd_kernel<<<dd_cuda_blocks(c, outer * inner), NT, 0, c->stream>>>(outer, channels, inner, dx, prob, label,
                                                                              h, has_ignore, ignore_label, scale);
  DD_CUDA_LAUNCHED(c);
}

/* one thread per element: 0, or -scale / max(p, 1e-20) at the position's label */
static __global__ void multinomial_bwd_kernel(int64_t outer, int64_t ch, int64_t inner, float *dx, const float *prob,
                                              const float *label, float scale) {
  GRID_STRIDE(idx, outer * ch * inner) {
    int64_t q = div_nn(idx, inner), i = idx - q * inner, o = div_nn(q, ch), cc = q - o * ch;
    if ((int64_t)label[o * inner + i] != cc) {
      dx[idx] = 0.0f;
      continue;
    }
    float p = prob[idx] > LOG_FLOOR ? prob[idx] : LOG_FLOOR;
    dx[idx] = (float)(-(double)scale / (double)p);
  }
}

extern "C" void dd_cuda_multinomial_backward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner,
                                             float *dx, const float *prob, const float *label, float scale) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  int64_t total = outer * channels * inner;
  if (total <= 0) return;
  multinomial_bwd_kernel<<<dd_cuda_blocks(c, total), NT, 0, c->stream>>>(outer, channels, inner, dx, prob, label,
                                                                         scale);
  DD_CUDA_LAUNCHED(c);
}

/* ---- HingeLoss ------------------------------------------------------------------------------ */

static __device__ __forceinline__ double hinge_t(float x, int64_t c, int64_t y) {
  double v = 1.0 + (c == y ? -(double)x : (double)x);
  return v > 0 ? v : 0.0;
}

static __global__ void hinge_fwd_kernel(int64_t outer, int64_t ch, const float *x, const float *label, int norm,
                                        double *part) {
  double loss = 0.0;
  GRID_STRIDE(idx, outer * ch) {
    int64_t o = div_nn(idx, ch);
    double t = hinge_t(x[idx], idx - o * ch, (int64_t)label[o]);
    loss += norm == 2 ? t * t : t;
  }
  write_partials(loss, 0.0, part);
}

extern "C" double dd_cuda_hinge_forward(dd_backend *be, int64_t outer, int64_t channels, const float *x,
                                        const float *label, int norm) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (outer <= 0 || channels <= 0) return 0.0;
  int blocks = red_blocks(c, outer * channels);
  hinge_fwd_kernel<<<blocks, NT, 0, c->stream>>>(outer, channels, x, label, norm, c->d_red + RED_PART);
  DD_CUDA_LAUNCHED(c);
  if (red_finish(c, blocks)) return 0.0;
  return c->h_red[0];
}

static __global__ void hinge_bwd_kernel(int64_t outer, int64_t ch, float *dx, const float *x, const float *label,
                                        int norm, float scale) {
  GRID_STRIDE(idx, outer * ch) {
    int64_t o = div_nn(idx, ch), cc = idx - o * ch, y = (int64_t)label[o];
    double t = hinge_t(x[idx], cc, y), s = cc == y ? -1.0 : 1.0;
    double g = norm == 2 ? 2.0 * t : (t > 0 ? 1.0 : 0.0);
    dx[idx] = (float)(s * g * (double)scale);
  }
}

extern "C" void dd_cuda_hinge_backward(dd_backend *be, int64_t outer, int64_t channels, float *dx, const float *x,
                                       const float *label, int norm, float scale) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  int64_t total = outer * channels;
  if (total <= 0) return;
  hinge_bwd_kernel<<<dd_cuda_blocks(c, total), NT, 0, c->stream>>>(outer, channels, dx, x, label, norm, scale);
  DD_CUDA_LAUNCHED(c);
}

/* ---- ContrastiveLoss ------------------------------------------------------------------------ */

static __device__ __forceinline__ bool is_similar(float s) {
  return s > -2147483649.0f && s < 2147483648.0f && (int)s != 0;
}

/* |a - b|^2 of a row, by one warp (every lane gets it) */
static __device__ double warp_dist_sq(const float *a, const float *b, int64_t ch, int lane) {
  double q = 0.0;
  for (int64_t k = lane; k < ch; k += 32) {
    double d = (double)a[k] - b[k];
    q += d * d;
  }
  return warp_sum(q);
}

/* one warp per row; lane 0 holds the warp's rows' terms */
static __global__ void contrastive_fwd_kernel(int64_t n, int64_t ch, const float *a, const float *b,
                                              const float *sim, float margin, int legacy, double *part) {
  int lane = threadIdx.x & 31;
  int64_t warps = (int64_t)gridDim.x * WARPS;
  double loss = 0.0;
  for (int64_t r = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5); r < n; r += warps) {
    double q = warp_dist_sq(a + r * ch, b + r * ch, ch, lane);
    if (lane != 0) continue;
    if (is_similar(sim[r])) {
      loss += q;
    } else if (legacy) {
      loss += fmax((double)margin - q, 0.0);
    } else {
      double m = fmax((double)margin - sqrt(q), 0.0);
      loss += m * m;
    }
  }
  write_partials(loss, 0.0, part);
}

extern "C" double dd_cuda_contrastive_forward(dd_backend *be, int64_t n, int64_t channels, const float *a,
                                              const float *b, const float *sim, float margin, int legacy) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0) return 0.0;
  int blocks = red_blocks(c, n * 32);
  contrastive_fwd_kernel<<<blocks, NT, 0, c->stream>>>(n, channels, a, b, sim, margin, legacy, c->d_red + RED_PART);
  DD_CUDA_LAUNCHED(c);
  if (red_finish(c, blocks)) return 0.0;
  return c->h_red[0];
}

/* one warp per row: the row's coefficient, then its gradients */
static __global__ void contrastive_bwd_kernel(int64_t n, int64_t ch, float *da, float *db, const float *a,
                                              const float *b, const float *sim, float margin, int legacy,
                                              float scale) {
  int lane = threadIdx.x & 31;
  int64_t warps = (int64_t)gridDim.x * WARPS;
  for (int64_t r = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5); r < n; r += warps) {
    const float *ar = a + r * ch, *br = b + r * ch;
    double beta = scale;
    if (!is_similar(sim[r])) {
      double q = warp_dist_sq(ar, br, ch, lane), dist = sqrt(q);
      double m = legacy ? (double)margin - q : (double)margin - dist;
      beta = m > 0 ? (legacy ? -(double)scale : -(double)scale * m / (dist + 1e-4)) : 0.0;
    }
    for (int64_t k = lane; k < ch; k += 32) {
      float g = (float)(beta * ((double)ar[k] - br[k]));
      if (da) da[r * ch + k] = g;
      if (db) db[r * ch + k] = -g;
    }
  }
}

extern "C" void dd_cuda_contrastive_backward(dd_backend *be, int64_t n, int64_t channels, float *da, float *db,
                                             const float *a, const float *b, const float *sim, float margin,
                                             int legacy, float scale) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (n <= 0 || channels <= 0) return;
  contrastive_bwd_kernel<<<dd_cuda_blocks(c, n * 32), NT, 0, c->stream>>>(n, channels, da, db, a, b, sim, margin,
                                                                          legacy, scale);
  DD_CUDA_LAUNCHED(c);
}
