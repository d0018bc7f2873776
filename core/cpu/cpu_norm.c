/* CPU kernels of the catalogue's normalization layers (LRN, MVN): semantics in base/backend.h.
 * Window sums run in float in channel (or row-major window) order, as Caffe's do; MVN's row sums
 * in double. One task per image (LRN) or per row (MVN) on the backend's pool. */
#include <math.h>

#include "cpu/cpu_kernels.h"

typedef struct {
  int across, n, c, h, w, size;
  float alpha, beta, k;
  float *y, *dx, *scale_out;
  const float *x, *dy, *yin, *scale;
  int64_t rows, dim;
  int nv;
  float eps;
  float *sd_out;
  const float *sd;
} norm_job;

static dd_threadpool *pool_of(dd_backend *be) { return ((dd_cpu_ctx *)be->ctx)->pool; }

/* the WITHIN_CHANNEL window of pixel (py, px): [y0, y1) x [x0, x1) inside the image, and its
 * area inside the padded image (Caffe's AVE pooling divisor) */
static void window(const norm_job *j, int py, int px, int *y0, int *y1, int *x0, int *x1, int *area) {
  int pad = (j->size - 1) / 2;
  int hs = py - pad, ws = px - pad, he = hs + j->size, we = ws + j->size;
  if (he > j->h + pad) he = j->h + pad;
  if (we > j->w + pad) we = j->w + pad;
  *area = (he - hs) * (we - ws);
  *y0 = hs < 0 ? 0 : hs;
  *x0 = ws < 0 ? 0 : ws;
  *y1 = he < j->h ? he : j->h;
  *x1 = we < j->w ? we : j->w;
}

static void lrn_fwd_task(void *ctx, int img, int thread) {
  (void)thread;
  norm_job *j = ctx;
  int64_t hw = (int64_t)j->h * j->w, pre = (j->size - 1) / 2;
  const float *x = j->x + (int64_t)img * j->c * hw;
  float *y = j->y + (int64_t)img * j->c * hw, *s = j->scale_out + (int64_t)img * j->c * hw;
  for (int ch = 0; ch < j->c; ch++)
    for (int64_t p = 0; p < hw; p++) {
      float acc = 0, sc;
      if (j->across) {
        for (int64_t q = ch - pre; q <= ch + pre; q++)
          if (q >= 0 && q < j->c) acc += x[q * hw + p] * x[q * hw + p];
        sc = j->k + j->alpha / (float)j->size * acc;
      } else {
        int y0, y1, x0, x1, area;
        window(j, (int)(p / j->w), (int)(p % j->w), &y0, &y1, &x0, &x1, &area);
        for (int yy = y0; yy < y1; yy++)
          for (int xx = x0; xx < x1; xx++) {
            float v = x[ch * hw + (int64_t)yy * j->w + xx];
            acc += v * v;
          }
        sc = 1.0f + j->alpha * (acc / (float)area);
      }
      s[ch * hw + p] = sc;
      y[ch * hw + p] = x[ch * hw + p] * powf(sc, -j->beta);
    }
}

void dd_cpu_lrn_forward(dd_backend *be, int across, int n, int c, int h, int w, int size, float alpha, float beta,
                        float k, float *y, float *scale, const float *x) {
  norm_job j = {.across = across, .n = n, .c = c, .h = h, .w = w, .size = size, .alpha = alpha, .beta = beta, .k = k,
                .y = y, .scale_out = scale, .x = x};
  dd_threadpool_run(pool_of(be), n, lrn_fwd_task, &j);
}

static void lrn_bwd_task(void *ctx, int img, int thread) {
  (void)thread;
  norm_job *j = ctx;
  int64_t hw = (int64_t)j->h * j->w, pre = (j->size - 1) / 2, off = (int64_t)img * j->c * hw;
  const float *x = j->x + off, *dy = j->dy + off, *y = j->yin + off, *s = j->scale + off;
  float *dx = j->dx + off;
  for (int ch = 0; ch < j->c; ch++)
    for (int64_t p = 0; p < hw; p++) {
      float acc = 0, ratio;
      if (j->across) {
        for (int64_t q = ch - pre; q <= ch + pre; q++)
          if (q >= 0 && q < j->c) acc += dy[q * hw + p] * y[q * hw + p] / s[q * hw + p];
        ratio = 2.0f * j->alpha * j->beta / (float)j->size;
      } else {
        /* the windows that hold pixel (py, px) are those centred within pad of it */
        int py = (int)(p / j->w), px = (int)(p % j->w), pad = (j->size - 1) / 2;
        for (int qy = py - (j->size - 1 - pad); qy <= py + pad; qy++)
          for (int qx = px - (j->size - 1 - pad); qx <= px + pad; qx++) {
            if (qy < 0 || qy >= j->h || qx < 0 || qx >= j->w) continue;
            int y0, y1, x0, x1, area;
            window(j, qy, qx, &y0, &y1, &x0, &x1, &area);
            if (py < y0 || py >= y1 || px < x0 || px >= x1) continue;
            int64_t q = ch * hw + (int64_t)qy * j->w + qx;
            acc += dy[q] * y[q] / (s[q] * (float)area);
          }
        ratio = 2.0f * j->alpha * j->beta;
      }
      int64_t i = ch * hw + p;
      dx[i] = dy[i] * powf(s[i], -j->beta) - ratio * x[i] * acc;
    }
}

void dd_cpu_lrn_backward(dd_backend *be, int across, int n, int c, int h, int w, int size, float alpha, float beta,
                         float *dx, const float *dy, const float *x, const float *y, const float *scale) {
  norm_job j = {.across = across, .n = n, .c = c, .h = h, .w = w, .size = size, .alpha = alpha, .beta = beta,
                .dx = dx, .dy = dy, .x = x, .yin = y, .scale = scale};
  dd_threadpool_run(pool_of(be), n, lrn_bwd_task, &j);
}

/* MVN: row sums in double (Caffe's are float: where the normalized gradient cancels, to the order
 * of eps / sd, the two differ by Caffe's rounding, amplified; tests/test_catalogue.c states the
 * bound for that case). */
static void mvn_fwd_task(void *ctx, int row, int thread) {
  (void)thread;
  norm_job *j = ctx;
  const float *x = j->x + row * j->dim;
  float *y = j->y + row * j->dim;
  double m = 0;
  for (int64_t i = 0; i < j->dim; i++) m += x[i];
  m /= (double)j->dim;
  for (int64_t i = 0; i < j->dim; i++) y[i] = (float)(x[i] - m);
  float sd = 1.0f;
  if (j->nv) {
    double v = 0;
    for (int64_t i = 0; i < j->dim; i++) v += (double)y[i] * y[i];
    sd = (float)sqrt(v / (double)j->dim) + j->eps;
    for (int64_t i = 0; i < j->dim; i++) y[i] /= sd;
  }
  if (j->sd_out) j->sd_out[row] = sd;
}

void dd_cpu_mvn_forward(dd_backend *be, int64_t rows, int64_t dim, int normalize_variance, float eps, float *y,
                        float *sd, const float *x) {
  norm_job j = {.rows = rows, .dim = dim, .nv = normalize_variance, .eps = eps, .y = y, .sd_out = sd, .x = x};
  dd_threadpool_run(pool_of(be), (int)rows, mvn_fwd_task, &j);
}

static void mvn_bwd_task(void *ctx, int row, int thread) {
  (void)thread;
  norm_job *j = ctx;
  const float *dy = j->dy + row * j->dim, *y = j->yin + row * j->dim;
  float *dx = j->dx + row * j->dim;
  double s1 = 0, s2 = 0;
  for (int64_t i = 0; i < j->dim; i++) {
    s1 += (double)dy[i] * y[i];
    s2 += dy[i];
  }
  double m1 = s1 / (double)j->dim, m2 = s2 / (double)j->dim;
  if (j->nv) {
    double sd = j->sd[row];
    for (int64_t i = 0; i < j->dim; i++) dx[i] = (float)((dy[i] - (m1 * y[i] + m2)) / sd);
  } else {
    for (int64_t i = 0; i < j->dim; i++) dx[i] = (float)(dy[i] - m2);
  }
}

void dd_cpu_mvn_backward(dd_backend *be, int64_t rows, int64_t dim, int normalize_variance, float *dx, const float *dy,
                         const float *y, const float *sd) {
  norm_job j = {.rows = rows, .dim = dim, .nv = normalize_variance, .dx = dx, .dy = dy, .yin = y, .sd = sd};
  dd_threadpool_run(pool_of(be), (int)rows, mvn_bwd_task, &j);
}
