/* The CPU backend's BatchNorm kernels (backend.h: bn_forward_train, bn_forward_global,
 * bn_backward) and the fused BatchNorm + Scale + ReLU step of the execution plan (backend.h,
 * "fused steps"), one task per channel. Unfused, a training forward of the three layers reads or
 * writes every element 12 times (statistics, normalise, the BatchNorm's saved output, the Scale's
 * saved input, the affine, the ReLU) and their backward 9 times; fused, the forward reads x three
 * times and writes y once, and the backward reads dy, y and x twice and writes dx once. Both
 * compute the statistics with the same row sums in the same order, so the moving sums they store
 * are identical. Blocked activations (d->blocked) go to cpu_blocked_train.c. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>

#include "cpu/cpu_kernels.h"

static dd_threadpool *pool_of(dd_backend *be) { return ((dd_cpu_ctx *)be->ctx)->pool; }

/* ---- BatchNorm: one channel per task -------------------------------------------------------- */

typedef struct {
  int n, c, s, global;
  float *y, *dx, *mean, *inv_std, *mean_sum, *var_sum, *factor;
  const float *x, *dy, *cy, *cmean_sum, *cvar_sum, *cfactor, *cinv_std;
  float maf, eps;
} bn_job;

/* Row reductions with 16 independent partial sums, so they vectorise without reassociation
 * flags (and give the same result on every CPU). */
DD_CLONES static float row_sum(const float *x, int n) {
  float acc[16] = {0}, s = 0;
  int k = 0;
  for (; k + 16 <= n; k += 16)
    for (int l = 0; l < 16; l++) acc[l] += x[k + l];
  for (int l = 0; l < 16; l++) s += acc[l];
  for (; k < n; k++) s += x[k];
  return s;
}

DD_CLONES static float row_sqdev(const float *x, int n, float m) {
  float acc[16] = {0}, s = 0;
  int k = 0;
  for (; k + 16 <= n; k += 16)
    for (int l = 0; l < 16; l++) acc[l] += (x[k + l] - m) * (x[k + l] - m);
  for (int l = 0; l < 16; l++) s += acc[l];
  for (; k < n; k++) s += (x[k] - m) * (x[k] - m);
  return s;
}

DD_CLONES static float row_dot(const float *a, const float *b, int n) {
  float acc[16] = {0}, s = 0;
  int k = 0;
  for (; k + 16 <= n; k += 16)
    for (int l = 0; l < 16; l++) acc[l] += a[k + l] * b[k + l];
  for (int l = 0; l < 16; l++) s += acc[l];
  for (; k < n; k++) s += a[k] * b[k];
  return s;
}

/* y = (x - m) * inv */
DD_CLONES static void row_normalize(float *y, const float *x, int n, float m, float inv) {
  for (int k = 0; k < n; k++) y[k] = (x[k] - m) * inv;
}

static void bn_train_task(void *ctx, int ch, int t) {
  (void)t;
  bn_job *j = ctx;
  int64_t m = (int64_t)j->n * j->s;
  double sum = 0;
  for (int i = 0; i < j->n; i++) sum += row_sum(j->x + ((int64_t)i * j->c + ch) * j->s, j->s);
  float mean = (float)(sum / (double)m);
  double sq = 0;
  for (int i = 0; i < j->n; i++) sq += row_sqdev(j->x + ((int64_t)i * j->c + ch) * j->s, j->s, mean);
  float var = (float)(sq / (double)m);
  float inv = 1.0f / sqrtf(var + j->eps);
  for (int i = 0; i < j->n; i++) {
    int64_t off = ((int64_t)i * j->c + ch) * j->s;
    row_normalize(j->y + off, j->x + off, j->s, mean, inv);
  }
  j->mean[ch] = mean;
  j->inv_std[ch] = inv;
  float corr = m > 1 ? (float)m / (float)(m - 1) : 1.0f;
  j->mean_sum[ch] = mean + j->maf * j->mean_sum[ch];
  j->var_sum[ch] = corr * var + j->maf * j->var_sum[ch];
}

void dd_cpu_bn_forward_train(dd_backend *be, int n, int c, int s, float *y, const float *x,
                             float *mean, float *inv_std, float *mean_sum, float *var_sum,
                             float *factor, float maf, float eps) {
  bn_job j = {.n = n, .c = c, .s = s, .y = y, .x = x, .mean = mean, .inv_std = inv_std,
              .mean_sum = mean_sum, .var_sum = var_sum, .maf = maf, .eps = eps};
  dd_threadpool_run(pool_of(be), c, bn_train_task, &j);
  factor[0] = factor[0] * maf + 1.0f;
}

static void bn_global_task(void *ctx, int ch, int t) {
  (void)t;
  bn_job *j = ctx;
  float sc = j->cfactor[0] == 0.0f ? 0.0f : 1.0f / j->cfactor[0];
  float mean = j->cmean_sum[ch] * sc, var = j->cvar_sum[ch] * sc;
  float inv = 1.0f / sqrtf(var + j->eps);
  for (int i = 0; i < j->n; i++) {
    int64_t off = ((int64_t)i * j->c + ch) * j->s;
    row_normalize(j->y + off, j->x + off, j->s, mean, inv);
  }
  j->mean[ch] = mean;
  j->inv_std[ch] = inv;
}

void dd_cpu_bn_forward_global(dd_backend *be, int n, int c, int s, float *y, const float *x,
                              float *mean, float *inv_std, const float *mean_sum,
                              const float *var_sum, const float *factor, float eps) {
  bn_job j = {.n = n, .c = c, .s = s, .y = y, .x = x, .mean = mean, .inv_std = inv_std,
              .cmean_sum = mean_sum, .cvar_sum = var_sum, .cfactor = factor, .eps = eps};
  dd_threadpool_run(pool_of(be), c, bn_global_task, &j);
}

DD_CLONES static void bn_bwd_row(float *dx, const float *dy, const float *y, int n, float mdy, float mdyy, float inv) {
  for (int k = 0; k < n; k++) dx[k] = (dy[k] - mdy - y[k] * mdyy) * inv;
}

static void bn_bwd_task(void *ctx, int ch, int t) {
  (void)t;
  bn_job *j = ctx;
  float inv = j->cinv_std[ch];
  if (j->global) {
    for (int i = 0; i < j->n; i++) {
      const float *dy = j->dy + ((int64_t)i * j->c + ch) * j->s;
      float *dx = j->dx + ((int64_t)i * j->c + ch) * j->s;
      for (int k = 0; k < j->s; k++) dx[k] = dy[k] * inv;
    }
    return;
  }
  int64_t m = (int64_t)j->n * j->s;
  double sdy = 0, sdyy = 0;
  for (int i = 0; i < j->n; i++) {
    int64_t off = ((int64_t)i * j->c + ch) * j->s;
    sdy += row_sum(j->dy + off, j->s);
    sdyy += row_dot(j->dy + off, j->cy + off, j->s);
  }
  float mdy = (float)(sdy / (double)m), mdyy = (float)(sdyy / (double)m);
  for (int i = 0; i < j->n; i++) {
    int64_t off = ((int64_t)i * j->c + ch) * j->s;
    bn_bwd_row(j->dx + off, j->dy + off, j->cy + off, j->s, mdy, mdyy, inv);
  }
}

void dd_cpu_bn_backward(dd_backend *be, int n, int c, int s, float *dx, const float *dy,
                        const float *y, const float *inv_std, int global) {
  bn_job j = {.n = n, .c = c, .s = s, .dx = dx, .dy = dy, .cy = y, .cinv_std = inv_std, .global = global};
  dd_threadpool_run(pool_of(be), c, bn_bwd_task, &j);
}

/* ---- the fused step ------------------------------------------------------------------------ */

typedef struct {
  const dd_bn_affine_desc *d;
  float *y, *dx, *mean, *inv_std, *mean_sum, *var_sum, *dgamma, *dbeta;
  const float *x, *dy, *cy, *cmean, *cinv, *cmean_sum, *cvar_sum, *cfactor, *gamma, *beta;
} fused_job;

/* y = relu((x - m) * inv * g + b) over one row */
DD_CLONES static void affine_row(float *y, const float *x, int n, float m, float inv, float g, float b, int relu,
                                 float slope) {
  if (!relu) {
    for (int k = 0; k < n; k++) y[k] = (x[k] - m) * inv * g + b;
    return;
  }
  for (int k = 0; k < n; k++) {
    float v = (x[k] - m) * inv * g + b;
    y[k] = v > 0 ? v : v * slope;
  }
}

static void fwd_task(void *ctx, int ch, int t) {
  (void)t;
  fused_job *j = ctx;
  const dd_bn_affine_desc *d = j->d;
  float mean, inv;
  if (d->global) {
    float sc = j->cfactor[0] == 0.0f ? 0.0f : 1.0f / j->cfactor[0];
    mean = j->cmean_sum[ch] * sc;
    inv = 1.0f / sqrtf(j->cvar_sum[ch] * sc + d->eps);
  } else { /* bn_forward_train's statistics, the same sums in the same order */
    int64_t m = (int64_t)d->n * d->s;
    double sum = 0, sq = 0;
    for (int i = 0; i < d->n; i++) sum += row_sum(j->x + ((int64_t)i * d->c + ch) * d->s, d->s);
    mean = (float)(sum / (double)m);
    for (int i = 0; i < d->n; i++) sq += row_sqdev(j->x + ((int64_t)i * d->c + ch) * d->s, d->s, mean);
    float var = (float)(sq / (double)m);
    inv = 1.0f / sqrtf(var + d->eps);
    float corr = m > 1 ? (float)m / (float)(m - 1) : 1.0f;
    j->mean_sum[ch] = mean + d->maf * j->mean_sum[ch];
    j->var_sum[ch] = corr * var + d->maf * j->var_sum[ch];
  }
  j->mean[ch] = mean;
  j->inv_std[ch] = inv;
  float g = j->gamma[ch], b = j->beta ? j->beta[ch] : 0.0f;
  for (int i = 0; i < d->n; i++) {
    int64_t off = ((int64_t)i * d->c + ch) * d->s;
    affine_row(j->y + off, j->x + off, d->s, mean, inv, g, b, d->relu, d->slope);
  }
}

void dd_cpu_bn_affine_relu_forward(dd_backend *be, const dd_bn_affine_desc *d, float *y, const float *x, float *mean,
                                   float *inv_std, float *mean_sum, float *var_sum, float *factor, const float *gamma,
                                   const float *beta) {
  if (d->blocked) {
    dd_cpu_bn_blk_forward(be, d, y, x, mean, inv_std, mean_sum, var_sum, factor, gamma, beta);
    return;
  }
  fused_job j = {.d = d, .y = y, .x = x, .mean = mean, .inv_std = inv_std, .mean_sum = mean_sum, .var_sum = var_sum,
                 .cmean_sum = mean_sum, .cvar_sum = var_sum, .cfactor = factor, .gamma = gamma, .beta = beta};
  dd_threadpool_run(pool_of(be), d->c, fwd_task, &j);
  if (!d->global) factor[0] = factor[0] * d->maf + 1.0f;
}

/* The ReLU's gradient of one element: dy where the output is positive, else dy * slope. */
#define RELU_GRAD(dy, y, relu, slope) ((relu) && !((y) > 0) ? (dy) * (slope) : (dy))

/* sums of g and g * xhat over one row, 16 partial sums each */
DD_CLONES static void grad_sums_row(const float *dy, const float *y, const float *x, int n, float m, float inv,
                                    int relu, float slope, float *sg, float *sgx) {
  float ag[16] = {0}, ax[16] = {0};
  int k = 0;
  for (; k + 16 <= n; k += 16)
    for (int l = 0; l < 16; l++) {
      float g = RELU_GRAD(dy[k + l], y[k + l], relu, slope);
      ag[l] += g;
      ax[l] += g * ((x[k + l] - m) * inv);
    }
  float s1 = 0, s2 = 0;
  for (int l = 0; l < 16; l++) {
    s1 += ag[l];
    s2 += ax[l];
  }
  for (; k < n; k++) {
    float g = RELU_GRAD(dy[k], y[k], relu, slope);
    s1 += g;
    s2 += g * ((x[k] - m) * inv);
  }
  *sg = s1;
  *sgx = s2;
}

/* dx = (g * gamma - a - xhat * b) * inv; global (a = b = 0 and no xhat): g * gamma * inv */
DD_CLONES static void dx_row(float *dx, const float *dy, const float *y, const float *x, int n, float m, float inv,
                             float gamma, float a, float b, int relu, float slope, int global) {
  if (global) {
    for (int k = 0; k < n; k++) dx[k] = RELU_GRAD(dy[k], y[k], relu, slope) * gamma * inv;
    return;
  }
  for (int k = 0; k < n; k++) {
    float g = RELU_GRAD(dy[k], y[k], relu, slope);
    dx[k] = (g * gamma - a - ((x[k] - m) * inv) * b) * inv;
  }
}

static void bwd_task(void *ctx, int ch, int t) {
  (void)t;
  fused_job *j = ctx;
  const dd_bn_affine_desc *d = j->d;
  float m = j->cmean[ch], inv = j->cinv[ch], gamma = j->gamma[ch];
  int64_t count = (int64_t)d->n * d->s;
  double sg = 0, sgx = 0;
  int need_sums = j->dgamma || j->dbeta || (j->dx && !d->global);
  if (need_sums)
    for (int i = 0; i < d->n; i++) {
      int64_t off = ((int64_t)i * d->c + ch) * d->s;
      float a, b;
      grad_sums_row(j->dy + off, j->cy + off, j->x + off, d->s, m, inv, d->relu, d->slope, &a, &b);
      sg += a;
      sgx += b;
    }
  if (j->dgamma) j->dgamma[ch] += (float)sgx;
  if (j->dbeta) j->dbeta[ch] += (float)sg;
  if (!j->dx) return;
  float a = (float)(gamma * sg / (double)count), b = (float)(gamma * sgx / (double)count);
  for (int i = 0; i < d->n; i++) {
    int64_t off = ((int64_t)i * d->c + ch) * d->s;
    dx_row(j->dx + off, j->dy + off, j->cy + off, j->x + off, d->s, m, inv, gamma, a, b, d->relu, d->slope, d->global);
  }
}

void dd_cpu_bn_affine_relu_backward(dd_backend *be, const dd_bn_affine_desc *d, float *dx, float *dgamma, float *dbeta,
                                    const float *dy, const float *y, const float *x, const float *mean,
                                    const float *inv_std, const float *gamma) {
  if (d->blocked) {
    dd_cpu_bn_blk_backward(be, d, dx, dgamma, dbeta, dy, y, x, mean, inv_std, gamma);
    return;
  }
  fused_job j = {.d = d, .dx = dx, .dgamma = dgamma, .dbeta = dbeta, .dy = dy, .cy = y, .x = x, .cmean = mean,
                 .cinv = inv_std, .gamma = gamma};
  dd_threadpool_run(pool_of(be), d->c, bwd_task, &j);
}
