/* CPU kernels behind the backend table (semantics in backend.h). Plain loops over Caffe's
 * layouts, readable first; parallel over independent images, planes or channels through the
 * backend's pool. Reductions accumulate in double and per-thread partials are reduced in thread
 * order, so results are reproducible for a given thread count. */
#define _POSIX_C_SOURCE 200809L
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_kernels.h"
#include "base/rng.h"

static dd_threadpool *pool_of(dd_backend *be) { return ((dd_cpu_ctx *)be->ctx)->pool; }
static int threads_of(dd_backend *be) { return dd_threadpool_threads(pool_of(be)); }

/* Elementwise work split into one contiguous range per thread (results do not depend on the
 * split). Small arrays run inline. The range functions are compiled for AVX-512, AVX2 and the
 * baseline, picked at load time for the CPU at hand. */
typedef dd_range_fn range_fn;

/* par_range without the size threshold (the caller decided the work is worth splitting). */
static void par_range_min(dd_backend *be, int64_t n, range_fn fn, void *args) {
  dd_threadpool_range(pool_of(be), n, fn, args);
}

static void par_range(dd_backend *be, int64_t n, range_fn fn, void *args) {
  if (n < 65536) fn(args, 0, n);
  else dd_threadpool_range(pool_of(be), n, fn, args);
}

typedef struct {
  float *y;
  const float *x, *a, *b;
  float alpha, beta;
} ew_args;

/* ---- BLAS-like ------------------------------------------------------------------------------ */

void dd_cpu_fill(dd_backend *be, float *x, float value, int64_t n) {
  (void)be;
  if (value == 0.0f) {
    memset(x, 0, (size_t)n * sizeof *x);
    return;
  }
  for (int64_t i = 0; i < n; i++) x[i] = value;
}

DD_CLONES static void axpby_range(void *v, int64_t lo, int64_t hi) {
  ew_args *a = v;
  float *y = a->y, alpha = a->alpha, beta = a->beta;
  const float *x = a->x;
  if (beta == 0.0f)
    for (int64_t i = lo; i < hi; i++) y[i] = alpha * x[i];
  else if (beta == 1.0f)
    for (int64_t i = lo; i < hi; i++) y[i] += alpha * x[i];
  else
    for (int64_t i = lo; i < hi; i++) y[i] = alpha * x[i] + beta * y[i];
}

void dd_cpu_axpby(dd_backend *be, int64_t n, float alpha, const float *x, float beta, float *y) {
  ew_args a = {.y = y, .x = x, .alpha = alpha, .beta = beta};
  par_range(be, n, axpby_range, &a);
}

void dd_cpu_scale(dd_backend *be, int64_t n, float alpha, const float *x, float *y) {
  ew_args a = {.y = y, .x = x, .alpha = alpha, .beta = 0.0f};
  par_range(be, n, axpby_range, &a);
}

double dd_cpu_dot(dd_backend *be, int64_t n, const float *x, const float *y) {
  (void)be;
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += (double)x[i] * y[i];
  return s;
}

double dd_cpu_asum(dd_backend *be, int64_t n, const float *x) {
  (void)be;
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += fabs((double)x[i]);
  return s;
}

/* ---- convolution: core/cpu_conv.c -------------------------------------------------------- */

/* ---- pooling: one (n, c) plane per task ------------------------------------------------------ */

typedef struct {
  const dd_pool_desc *d;
  float *y, *dx;
  const float *x, *dy;
  int32_t *mask;
  const int32_t *cmask;
} pool_job;

static void pool_fwd_task(void *ctx, int plane, int t) {
  (void)t;
  pool_job *j = ctx;
  const dd_pool_desc *d = j->d;
  const float *x = j->x + (int64_t)plane * d->h * d->w;
  float *y = j->y + (int64_t)plane * d->out_h * d->out_w;
  int32_t *mask = j->mask ? j->mask + (int64_t)plane * d->out_h * d->out_w : NULL;
  for (int oh = 0; oh < d->out_h; oh++)
    for (int ow = 0; ow < d->out_w; ow++) {
      int hs = oh * d->sh - d->ph, ws = ow * d->sw - d->pw;
      int he, we;
      if (d->method == 0) {
        he = hs + d->kh < d->h ? hs + d->kh : d->h;
        we = ws + d->kw < d->w ? ws + d->kw : d->w;
        if (hs < 0) hs = 0;
        if (ws < 0) ws = 0;
        float best = -FLT_MAX;
        int arg = -1;
        for (int h = hs; h < he; h++)
          for (int w = ws; w < we; w++)
            if (x[h * d->w + w] > best) {
              best = x[h * d->w + w];
              arg = h * d->w + w;
            }
        y[oh * d->out_w + ow] = best;
        if (mask) mask[oh * d->out_w + ow] = arg;
      } else {
        he = hs + d->kh < d->h + d->ph ? hs + d->kh : d->h + d->ph;
        we = ws + d->kw < d->w + d->pw ? ws + d->kw : d->w + d->pw;
        int size = (he - hs) * (we - ws);
        if (hs < 0) hs = 0;
        if (ws < 0) ws = 0;
        if (he > d->h) he = d->h;
        if (we > d->w) we = d->w;
        float s = 0;
        for (int h = hs; h < he; h++)
          for (int w = ws; w < we; w++) s += x[h * d->w + w];
        y[oh * d->out_w + ow] = s / (float)size;
      }
    }
}

void dd_cpu_pool_forward(dd_backend *be, const dd_pool_desc *d, float *y, int32_t *mask,
                         const float *x) {
  pool_job j = {.d = d, .y = y, .x = x, .mask = mask};
  dd_threadpool_run(pool_of(be), d->n * d->c, pool_fwd_task, &j);
}

static void pool_bwd_task(void *ctx, int plane, int t) {
  (void)t;
  pool_job *j = ctx;
  const dd_pool_desc *d = j->d;
  float *dx = j->dx + (int64_t)plane * d->h * d->w;
  const float *dy = j->dy + (int64_t)plane * d->out_h * d->out_w;
  memset(dx, 0, (size_t)d->h * d->w * sizeof *dx);
  if (d->method == 0) {
    const int32_t *mask = j->cmask + (int64_t)plane * d->out_h * d->out_w;
    for (int i = 0; i < d->out_h * d->out_w; i++)
      if (mask[i] >= 0) dx[mask[i]] += dy[i];
    return;
  }
  for (int oh = 0; oh < d->out_h; oh++)
    for (int ow = 0; ow < d->out_w; ow++) {
      int hs = oh * d->sh - d->ph, ws = ow * d->sw - d->pw;
      int he = hs + d->kh < d->h + d->ph ? hs + d->kh : d->h + d->ph;
      int we = ws + d->kw < d->w + d->pw ? ws + d->kw : d->w + d->pw;
      int size = (he - hs) * (we - ws);
      if (hs < 0) hs = 0;
      if (ws < 0) ws = 0;
      if (he > d->h) he = d->h;
      if (we > d->w) we = d->w;
      float g = dy[oh * d->out_w + ow] / (float)size;
      for (int h = hs; h < he; h++)
        for (int w = ws; w < we; w++) dx[h * d->w + w] += g;
    }
}

void dd_cpu_pool_backward(dd_backend *be, const dd_pool_desc *d, float *dx, const float *dy,
                          const int32_t *mask) {
  pool_job j = {.d = d, .dx = dx, .dy = dy, .cmask = mask};
  dd_threadpool_run(pool_of(be), d->n * d->c, pool_bwd_task, &j);
}

/* ---- per-channel scale and bias --------------------------------------------------------------- */

typedef struct {
  int64_t outer, dim, inner;
  float *y, *dx, *dscale, *dbias;
  const float *x, *dy, *scale, *bias;
} affine_args;

/* rows r = o * dim + d in [lo, hi) */
DD_CLONES static void affine_range(void *v, int64_t lo, int64_t hi) {
  affine_args *a = v;
  for (int64_t r = lo; r < hi; r++) {
    int64_t d = r % a->dim;
    const float *xr = a->x + r * a->inner;
    float *yr = a->y + r * a->inner;
    float s = a->scale ? a->scale[d] : 1.0f, b = a->bias ? a->bias[d] : 0.0f;
    for (int64_t i = 0; i < a->inner; i++) yr[i] = xr[i] * s + b;
  }
}

void dd_cpu_channel_affine(dd_backend *be, int64_t outer, int64_t dim, int64_t inner, float *y,
                           const float *x, const float *scale, const float *bias) {
  affine_args a = {.outer = outer, .dim = dim, .inner = inner, .y = y, .x = x, .scale = scale, .bias = bias};
  if (outer * dim * inner < 65536)
    affine_range(&a, 0, outer * dim);
  else
    par_range(be, outer * dim, affine_range, &a);
}

/* channels d in [lo, hi): the sums over (outer, inner) and dx */
DD_CLONES static void affine_bwd_range(void *v, int64_t lo, int64_t hi) {
  affine_args *a = v;
  for (int64_t d = lo; d < hi; d++) {
    double ss = 0, sb = 0;
    float s = a->scale ? a->scale[d] : 1.0f;
    for (int64_t o = 0; o < a->outer; o++) {
      const float *dyr = a->dy + (o * a->dim + d) * a->inner;
      const float *xr = a->x ? a->x + (o * a->dim + d) * a->inner : NULL;
      float rs = 0, rb = 0;
      if (a->dscale)
        for (int64_t i = 0; i < a->inner; i++) rs += dyr[i] * xr[i];
      if (a->dbias)
        for (int64_t i = 0; i < a->inner; i++) rb += dyr[i];
      ss += rs;
      sb += rb;
      if (a->dx) {
        float *dxr = a->dx + (o * a->dim + d) * a->inner;
        for (int64_t i = 0; i < a->inner; i++) dxr[i] = dyr[i] * s;
      }
    }
    if (a->dscale) a->dscale[d] += (float)ss;
    if (a->dbias) a->dbias[d] += (float)sb;
  }
}

void dd_cpu_channel_affine_backward(dd_backend *be, int64_t outer, int64_t dim, int64_t inner,
                                    float *dx, float *dscale, float *dbias, const float *dy,
                                    const float *x, const float *scale) {
  affine_args a = {.outer = outer, .dim = dim, .inner = inner, .dx = dx, .dscale = dscale, .dbias = dbias,
                   .dy = dy, .x = x, .scale = scale};
  if (outer * dim * inner < 65536 || dim < threads_of(be))
    affine_bwd_range(&a, 0, dim);
  else
    par_range_min(be, dim, affine_bwd_range, &a);
}

/* ---- elementwise -------------------------------------------------------------------------- */

DD_CLONES static void relu_range(void *v, int64_t lo, int64_t hi) {
  ew_args *a = v;
  float *y = a->y;
  const float *x = a->x, slope = a->alpha;
  for (int64_t i = lo; i < hi; i++) y[i] = x[i] > 0 ? x[i] : x[i] * slope;
}

void dd_cpu_relu_forward(dd_backend *be, int64_t n, float *y, const float *x, float slope) {
  ew_args a = {.y = y, .x = x, .alpha = slope};
  par_range(be, n, relu_range, &a);
}

DD_CLONES static void relu_bwd_range(void *v, int64_t lo, int64_t hi) {
  ew_args *a = v;
  float *dx = a->y;
  const float *dy = a->a, *x = a->x, slope = a->alpha;
  for (int64_t i = lo; i < hi; i++) dx[i] = x[i] > 0 ? dy[i] : dy[i] * slope;
}

void dd_cpu_relu_backward(dd_backend *be, int64_t n, float *dx, const float *dy, const float *x,
                          float slope) {
  ew_args a = {.y = dx, .x = x, .a = dy, .alpha = slope};
  par_range(be, n, relu_bwd_range, &a);
}

DD_CLONES static void mul_range(void *v, int64_t lo, int64_t hi) {
  ew_args *a = v;
  for (int64_t i = lo; i < hi; i++) a->y[i] = a->a[i] * a->b[i];
}

void dd_cpu_mul(dd_backend *be, int64_t n, float *y, const float *a, const float *b) {
  ew_args args = {.y = y, .a = a, .b = b};
  par_range(be, n, mul_range, &args);
}

void dd_cpu_max_update(dd_backend *be, int64_t n, float *y, int32_t *argmax, const float *x,
                       int32_t index) {
  (void)be;
  for (int64_t i = 0; i < n; i++)
    if (x[i] > y[i]) {
      y[i] = x[i];
      argmax[i] = index;
    }
}

void dd_cpu_max_backward(dd_backend *be, int64_t n, float *dx, const float *dy,
                         const int32_t *argmax, int32_t index) {
  (void)be;
  for (int64_t i = 0; i < n; i++) dx[i] = argmax[i] == index ? dy[i] : 0.0f;
}

void dd_cpu_dropout_forward(dd_backend *be, int64_t n, float *y, float *mask, const float *x,
                            uint64_t seed, float ratio, float scale) {
  (void)be;
  for (int64_t i = 0; i < n; i++) {
    float u = (float)(dd_hash64(seed, (uint64_t)i) >> 40) * (1.0f / 16777216.0f);
    float keep = u >= ratio ? 1.0f : 0.0f;
    mask[i] = keep;
    y[i] = x[i] * keep * scale;
  }
}

/* ---- softmax and losses ------------------------------------------------------------------- */

void dd_cpu_softmax_forward(dd_backend *be, int64_t outer, int64_t ch, int64_t inner, float *y,
                            const float *x) {
  (void)be;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      const float *xp = x + o * ch * inner + i;
      float *yp = y + o * ch * inner + i;
      float mx = -FLT_MAX;
      for (int64_t c = 0; c < ch; c++)
        if (xp[c * inner] > mx) mx = xp[c * inner];
      float sum = 0;
      for (int64_t c = 0; c < ch; c++) {
        yp[c * inner] = expf(xp[c * inner] - mx);
        sum += yp[c * inner];
      }
      for (int64_t c = 0; c < ch; c++) yp[c * inner] /= sum;
    }
}

void dd_cpu_softmax_backward(dd_backend *be, int64_t outer, int64_t ch, int64_t inner, float *dx,
                             const float *dy, const float *y) {
  (void)be;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      const float *dyp = dy + o * ch * inner + i, *yp = y + o * ch * inner + i;
      float *dxp = dx + o * ch * inner + i;
      float dot = 0;
      for (int64_t c = 0; c < ch; c++) dot += dyp[c * inner] * yp[c * inner];
      for (int64_t c = 0; c < ch; c++) dxp[c * inner] = (dyp[c * inner] - dot) * yp[c * inner];
    }
}

double dd_cpu_xent_forward(dd_backend *be, int64_t outer, int64_t ch, int64_t inner,
                           const float *prob, const float *label, int has_ignore,
                           int ignore_label, int64_t *valid) {
  (void)be;
  double loss = 0;
  int64_t count = 0;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      int l = (int)label[o * inner + i];
      if (has_ignore && l == ignore_label) continue;
      if (l < 0 || l >= ch) l = 0; /* validated by the layer before the call */
      float p = prob[(o * ch + l) * inner + i];
      loss -= log(p > FLT_MIN ? p : FLT_MIN);
      count++;
    }
  *valid = count;
  return loss;
}

void dd_cpu_xent_backward(dd_backend *be, int64_t outer, int64_t ch, int64_t inner, float *dx,
                          const float *prob, const float *label, int has_ignore, int ignore_label,
                          float scale) {
  (void)be;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      int l = (int)label[o * inner + i];
      float *dxp = dx + o * ch * inner + i;
      const float *pp = prob + o * ch * inner + i;
      if (has_ignore && l == ignore_label) {
        for (int64_t c = 0; c < ch; c++) dxp[c * inner] = 0;
        continue;
      }
      for (int64_t c = 0; c < ch; c++) dxp[c * inner] = (pp[c * inner] - (c == l ? 1.0f : 0.0f)) * scale;
    }
}

void dd_cpu_accuracy(dd_backend *be, int64_t outer, int64_t ch, int64_t inner, const float *x,
                     const float *label, int top_k, int has_ignore, int ignore_label,
                     int64_t *correct, int64_t *valid, float *pc_correct, float *pc_total) {
  (void)be;
  int64_t ok = 0, n = 0;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      int l = (int)label[o * inner + i];
      if (has_ignore && l == ignore_label) continue;
      if (l < 0 || l >= ch) continue;
      n++;
      if (pc_total) pc_total[l] += 1;
      const float *xp = x + o * ch * inner + i;
      float v = xp[(int64_t)l * inner];
      /* Caffe 1.0 ranks (value, class) pairs with std::greater: a tie with a higher class ranks
       * above the true class. Unlike Caffe, a position with a NaN score is never correct (NaN
       * compares false, so Caffe ranks the true class first and a diverged net scores 1.0). */
      int better = 0, has_nan = 0;
      for (int64_t c = 0; c < ch; c++) {
        float u = xp[c * inner];
        has_nan |= u != u;
        if (u > v || (u == v && c > l)) better++;
      }
      if (better < top_k && !has_nan) {
        ok++;
        if (pc_correct) pc_correct[l] += 1;
      }
    }
  *correct = ok;
  *valid = n;
}

double dd_cpu_kd_forward_backward(dd_backend *be, int64_t outer, int64_t ch, const float *s,
                                  const float *t, float temp, float *ds, float scale) {
  (void)be;
  double total = 0;
  for (int64_t o = 0; o < outer; o++) {
    const float *sr = s + o * ch, *tr = t + o * ch;
    double ms = -DBL_MAX, mt = -DBL_MAX;
    for (int64_t c = 0; c < ch; c++) {
      if (sr[c] / temp > ms) ms = sr[c] / temp;
      if (tr[c] / temp > mt) mt = tr[c] / temp;
    }
    double zs = 0, zt = 0;
    for (int64_t c = 0; c < ch; c++) {
      zs += exp(sr[c] / temp - ms);
      zt += exp(tr[c] / temp - mt);
    }
    double lzs = log(zs), lzt = log(zt), kl = 0;
    for (int64_t c = 0; c < ch; c++) {
      double lq = sr[c] / temp - ms - lzs, lp = tr[c] / temp - mt - lzt, p = exp(lp);
      kl += p * (lp - lq);
      if (ds) ds[o * ch + c] = (float)(scale * temp * (exp(lq) - p));
    }
    total += (double)temp * temp * kl;
  }
  return total;
}

/* Normalised attention map of one image: q[j] = Q[j] / ||Q||, Q[j] = sum_c x[c][j]^2. Returns ||Q||. */
static double attention_map(double *q, const float *x, int64_t c, int64_t hw) {
  for (int64_t j = 0; j < hw; j++) q[j] = 0;
  for (int64_t k = 0; k < c; k++)
    for (int64_t j = 0; j < hw; j++) q[j] += (double)x[k * hw + j] * x[k * hw + j];
  double norm = 0;
  for (int64_t j = 0; j < hw; j++) norm += q[j] * q[j];
  norm = sqrt(norm);
  double inv = norm > 1e-12 ? 1.0 / norm : 0.0;
  for (int64_t j = 0; j < hw; j++) q[j] *= inv;
  return norm;
}

double dd_cpu_attention_forward_backward(dd_backend *be, int64_t n, int64_t cs, int64_t ct, int64_t hw,
                                         const float *s, const float *t, float *ds, float scale, void *ws) {
  (void)be;
  double total = 0, *qs = ws, *qt = qs + hw;
  for (int64_t i = 0; i < n; i++) {
    const float *si = s + i * cs * hw, *ti = t + i * ct * hw;
    double norm = attention_map(qs, si, cs, hw);
    attention_map(qt, ti, ct, hw);
    double l = 0, qg = 0;
    for (int64_t j = 0; j < hw; j++) {
      double d = qs[j] - qt[j];
      l += d * d;
    }
    total += l;
    if (!ds) continue;
    /* dL/dq = 2 (qs - qt); dL/dQ = (g - q (q . g)) / ||Q||; dQ/dx = 2 x */
    for (int64_t j = 0; j < hw; j++) qg += qs[j] * 2 * (qs[j] - qt[j]);
    double inv = norm > 1e-12 ? 1.0 / norm : 0.0;
    for (int64_t j = 0; j < hw; j++) {
      double gQ = (2 * (qs[j] - qt[j]) - qs[j] * qg) * inv;
      for (int64_t k = 0; k < cs; k++) ds[i * cs * hw + k * hw + j] = (float)(scale * gQ * 2 * si[k * hw + j]);
    }
  }
  return total;
}

void dd_cpu_copy_rows(dd_backend *be, int64_t rows, int64_t cols, float *dst, int64_t dst_stride,
                      const float *src, int64_t src_stride, int accumulate) {
  (void)be;
  for (int64_t r = 0; r < rows; r++) {
    float *d = dst + r * dst_stride;
    const float *s = src + r * src_stride;
    if (accumulate)
      for (int64_t i = 0; i < cols; i++) d[i] += s[i];
    else
      memcpy(d, s, (size_t)cols * sizeof *d);
  }
}

/* ---- solvers ---------------------------------------------------------------------------------- */

void dd_cpu_regularize(dd_backend *be, int64_t n, float *g, const float *w, float decay, int l1) {
  (void)be;
  if (l1)
    for (int64_t i = 0; i < n; i++) g[i] += decay * (float)((w[i] > 0) - (w[i] < 0));
  else
    for (int64_t i = 0; i < n; i++) g[i] += decay * w[i];
}

void dd_cpu_sgd_update(dd_backend *be, int64_t n, float *w, float *g, float *h, float rate,
                       float momentum, int nesterov) {
  (void)be;
  for (int64_t i = 0; i < n; i++) {
    float prev = h[i];
    h[i] = momentum * h[i] + rate * g[i];
    g[i] = nesterov ? (1.0f + momentum) * h[i] - momentum * prev : h[i];
    w[i] -= g[i];
  }
}

void dd_cpu_adam_update(dd_backend *be, int64_t n, float *w, float *g, float *m, float *v,
                        float rate, float b1, float b2, float eps, int t) {
  (void)be;
  float corr = sqrtf(1.0f - powf(b2, (float)t)) / (1.0f - powf(b1, (float)t));
  for (int64_t i = 0; i < n; i++) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    g[i] = rate * corr * m[i] / (sqrtf(v[i]) + eps);
    w[i] -= g[i];
  }
}

void dd_cpu_adagrad_update(dd_backend *be, int64_t n, float *w, float *g, float *h, float rate,
                           float eps, float rms_decay, int rmsprop) {
  (void)be;
  for (int64_t i = 0; i < n; i++) {
    if (rmsprop)
      h[i] = rms_decay * h[i] + (1.0f - rms_decay) * g[i] * g[i];
    else
      h[i] += g[i] * g[i];
    g[i] = rate * g[i] / (sqrtf(h[i]) + eps);
    w[i] -= g[i];
  }
}
