/* CUDA kernels of BatchNorm (Caffe's semantics, no affine part: bn_forward_train,
 * bn_forward_global, bn_backward) and of the execution plan's fused BatchNorm + Scale [+ ReLU]
 * step (bn_affine_relu_forward / _backward, core/base/backend.h "fused steps"); the CPU's
 * core/cpu/cpu_batchnorm.c is the reference.
 *
 * Statistics are the unfused layer's: the same partial sums in the same order (bn_sum_kernel,
 * bn_sqdev_kernel), so the fused step's mean, inv_std and moving sums are the unfused ones bit for
 * bit, and its forward output too: (x - mean) * inv_std, then * gamma + beta, then the ReLU, each
 * step rounded as the three layers round it (_rn intrinsics). Fused, a training forward reads x
 * three times and writes y once (unfused: BatchNorm's three passes, the Scale's and the ReLU's,
 * each reading and writing a blob); the backward reads dy, y and x twice and writes dx once. Its
 * gradients differ from the unfused ones by rounding only (the same sums, regrouped: dx =
 * inv_std (g gamma - gamma mean(g) - xhat gamma mean(g xhat)), g the ReLU's gradient).
 * Deterministic: block partials in double in ctx->d_red, summed in a fixed order; nothing
 * allocated. */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.h"
#include "cuda_reduce.h"

#define NT DD_CUDA_THREADS

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

/* What follows the normalisation in a fused step: * gamma[c] (NULL: nothing follows), + beta[c]
 * (NULL: no bias), then a ReLU with `slope` (relu), rounded as the Scale and ReLU layers round. */
typedef struct {
  const float *gamma, *beta;
  int relu;
  float slope;
} bn_affine;

static __device__ __forceinline__ float bn_map(const bn_affine &af, int64_t ch, float v) {
  if (!af.gamma) return v;
  v = __fmul_rn(v, af.gamma[ch]);
  if (af.beta) v = __fadd_rn(v, af.beta[ch]);
  if (af.relu && !(v > 0)) v = __fmul_rn(v, af.slope);
  return v;
}

/* The ReLU's gradient of one element from its output: dy where y > 0, else dy * slope. */
static __device__ __forceinline__ float relu_grad(const bn_affine &af, float dy, float y) {
  return af.relu && !(y > 0) ? __fmul_rn(dy, af.slope) : dy;
}

/* y = map((x - mean) * inv_std) from the batch statistics; split 0 stores mean, inv_std and moves
 * the running sums; the first block of the first slab moves the factor (update_factor). */
static __global__ void bn_train_norm_kernel(bn_geom g, bn_affine af, float *y, const float *x, const double *part0,
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
  bn_for(g, [&](int64_t o) { y[o] = bn_map(af, ch, __fmul_rn(__fsub_rn(x[o], mu), inv)); });
}

/* y = map((x - mean) * inv_std) from the stored statistics; split 0 stores mean and inv_std */
static __global__ void bn_global_kernel(bn_geom g, bn_affine af, float *y, const float *x, float *mean, float *inv_std,
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
  bn_for(g, [&](int64_t o) { y[o] = bn_map(af, ch, __fmul_rn(__fsub_rn(x[o], mu), inv)); });
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

/* The forward of BatchNorm [+ the affine map af]: batch statistics (train) or stored ones. */
static void bn_forward(dd_cuda_ctx *cx, int train, bn_affine af, int n, int c, int s, float *y, const float *x,
                       float *mean, float *inv_std, float *mean_sum, float *var_sum, float *factor, float maf,
                       float eps) {
  if (n <= 0 || c <= 0 || s <= 0) return;
  int64_t slab;
  bn_geom g = bn_plan(cx, n, c, s, train ? 2 : 0, &slab);
  for (int64_t c0 = 0; c0 < c; c0 += slab) {
    int64_t nk = c - c0 < slab ? c - c0 : slab;
    g.c0 = c0;
    if (!train) {
      bn_global_kernel<<<bn_grid(g, nk), NT, 0, cx->stream>>>(g, af, y, x, mean, inv_std, mean_sum, var_sum, factor,
                                                               eps);
      DD_CUDA_LAUNCHED(cx);
      continue;
    }
    double *p0 = cx->d_red, *p1 = cx->d_red + nk * g.splits;
    bn_sum_kernel<<<bn_grid(g, nk), NT, 0, cx->stream>>>(g, x, NULL, p0, NULL);
    DD_CUDA_LAUNCHED(cx);
    bn_sqdev_kernel<<<bn_grid(g, nk), NT, 0, cx->stream>>>(g, x, p0, p1);
    DD_CUDA_LAUNCHED(cx);
    bn_train_norm_kernel<<<bn_grid(g, nk), NT, 0, cx->stream>>>(g, af, y, x, p0, p1, mean, inv_std, mean_sum,
                                                                 var_sum, factor, maf, eps, c0 == 0);
    DD_CUDA_LAUNCHED(cx);
  }
}

extern "C" void dd_cuda_bn_forward_train(dd_backend *be, int n, int c, int s, float *y, const float *x, float *mean,
                                         float *inv_std, float *mean_sum, float *var_sum, float *factor, float maf,
                                         float eps) {
  bn_forward(DD_CUDA_CTX(be), 1, bn_affine{}, n, c, s, y, x, mean, inv_std, mean_sum, var_sum, factor, maf, eps);
}

extern "C" void dd_cuda_bn_forward_global(dd_backend *be, int n, int c, int s, float *y, const float *x, float *mean,
                                          float *inv_std, const float *mean_sum, const float *var_sum,
                                          const float *factor, float eps) {
  bn_forward(DD_CUDA_CTX(be), 0, bn_affine{}, n, c, s, y, x, mean, inv_std, (float *)mean_sum, (float *)var_sum,
             (float *)factor, 0.0f, eps);
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


/* ---- the fused step -------------------------------------------------------------------------- */

extern "C" void dd_cuda_bn_affine_relu_forward(dd_backend *be, const dd_bn_affine_desc *d, float *y, const float *x,
                                               float *mean, float *inv_std, float *mean_sum, float *var_sum,
                                               float *factor, const float *gamma, const float *beta) {
  bn_affine af = {gamma, beta, d->relu, d->slope};
  bn_forward(DD_CUDA_CTX(be), !d->global, af, d->n, d->c, d->s, y, x, mean, inv_std, mean_sum, var_sum, factor,
             d->maf, d->eps);
}

/* part0, part1: the share's sums of g and g * xhat, g = relu_grad(dy), xhat = (x - mean) inv_std
 * (rounded as the BatchNorm's forward rounds its output) */
static __global__ void bn_grad_sums_kernel(bn_geom g, bn_affine af, const float *dy, const float *y, const float *x,
                                           const float *mean, const float *inv_std, double *part0, double *part1) {
  int64_t ch = g.c0 + blockIdx.y;
  float mu = mean[ch], inv = inv_std[ch];
  double s0 = 0.0, s1 = 0.0;
  bn_for(g, [&](int64_t o) {
    float gr = relu_grad(af, dy[o], y[o]);
    s0 += (double)gr;
    s1 += (double)__fmul_rn(gr, __fmul_rn(__fsub_rn(x[o], mu), inv));
  });
  s0 = block_sum(s0);
  s1 = block_sum(s1);
  if (threadIdx.x == 0) {
    int64_t at = (int64_t)blockIdx.y * g.splits + blockIdx.x;
    part0[at] = s0;
    part1[at] = s1;
  }
}

/* From the sums (part0 NULL: none, stored statistics and no parameter gradients): split 0
 * accumulates dgamma += sum(g xhat) and dbeta += sum(g) (either may be NULL); dx (may be NULL) =
 * (g gamma - a - xhat b) inv_std with a = gamma mean(g), b = gamma mean(g xhat), or with the
 * stored statistics g gamma inv_std. */
static __global__ void bn_fused_bwd_kernel(bn_geom g, bn_affine af, int global, float *dx, float *dgamma,
                                           float *dbeta, const float *dy, const float *y, const float *x,
                                           const float *mean, const float *inv_std, const double *part0,
                                           const double *part1) {
  __shared__ float a_s, b_s;
  int64_t ch = g.c0 + blockIdx.y;
  float mu = mean[ch], inv = inv_std[ch], gamma = af.gamma[ch];
  if (part0) {
    double t0 = 0.0, t1 = 0.0;
    if (threadIdx.x < 32) {
      t0 = bn_total(part0, g);
      t1 = bn_total(part1, g);
    }
    if (threadIdx.x == 0) {
      if (blockIdx.x == 0 && dgamma) dgamma[ch] = __fadd_rn(dgamma[ch], (float)t1);
      if (blockIdx.x == 0 && dbeta) dbeta[ch] = __fadd_rn(dbeta[ch], (float)t0);
      a_s = (float)((double)gamma * t0 / (double)g.m);
      b_s = (float)((double)gamma * t1 / (double)g.m);
    }
    __syncthreads();
  }
  if (!dx) return;
  if (global) {
    bn_for(g, [&](int64_t o) { dx[o] = __fmul_rn(__fmul_rn(relu_grad(af, dy[o], y[o]), gamma), inv); });
    return;
  }
  float a = a_s, b = b_s;
  bn_for(g, [&](int64_t o) {
    float gr = relu_grad(af, dy[o], y[o]), xh = __fmul_rn(__fsub_rn(x[o], mu), inv);
    dx[o] = __fmul_rn(__fsub_rn(__fsub_rn(__fmul_rn(gr, gamma), a), __fmul_rn(xh, b)), inv);
  });
}

extern "C" void dd_cuda_bn_affine_relu_backward(dd_backend *be, const dd_bn_affine_desc *d, float *dx, float *dgamma,
                                                float *dbeta, const float *dy, const float *y, const float *x,
                                                const float *mean, const float *inv_std, const float *gamma) {
  dd_cuda_ctx *cx = DD_CUDA_CTX(be);
  if (d->n <= 0 || d->c <= 0 || d->s <= 0 || (!dx && !dgamma && !dbeta)) return;
  bn_affine af = {gamma, NULL, d->relu, d->slope};
  int sums = dgamma || dbeta || (dx && !d->global);
  int64_t slab;
  bn_geom g = bn_plan(cx, d->n, d->c, d->s, sums ? 2 : 0, &slab);
  for (int64_t c0 = 0; c0 < d->c; c0 += slab) {
    int64_t nk = d->c - c0 < slab ? d->c - c0 : slab;
    g.c0 = c0;
    double *p0 = NULL, *p1 = NULL;
    if (sums) {
      p0 = cx->d_red;
      p1 = cx->d_red + nk * g.splits;
      bn_grad_sums_kernel<<<bn_grid(g, nk), NT, 0, cx->stream>>>(g, af, dy, y, x, mean, inv_std, p0, p1);
      DD_CUDA_LAUNCHED(cx);
    }
    bn_fused_bwd_kernel<<<bn_grid(g, nk), NT, 0, cx->stream>>>(g, af, d->global, dx, dgamma, dbeta, dy, y, x, mean,
                                                                inv_std, p0, p1);
    DD_CUDA_LAUNCHED(cx);
  }
}
