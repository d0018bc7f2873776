/* The CPU convolution (Caffe's semantics: groups, stride, pad, dilation; backend.h). */
#define _POSIX_C_SOURCE 200809L
#include <string.h>

#include "cpu_blas.h"
#include "cpu_kernels.h"

static dd_threadpool *pool_of(dd_backend *be) { return ((dd_cpu_ctx *)be->ctx)->pool; }
static int threads_of(dd_backend *be) { return dd_threadpool_threads(pool_of(be)); }

/* ---- convolution: im2col + GEMM, one image per task ------------------------------------------ */

static int conv_is_1x1(const dd_conv_desc *d) {
  return d->kh == 1 && d->kw == 1 && d->sh == 1 && d->sw == 1 && d->ph == 0 && d->pw == 0;
}

/* Per-thread workspace layout: [col: K * HW][dw partial: out_c * K][db partial: out_c] with
 * K = (c / group) * kh * kw. */
static int64_t conv_k(const dd_conv_desc *d) { return (int64_t)(d->c / d->group) * d->kh * d->kw; }
static int64_t conv_hw(const dd_conv_desc *d) { return (int64_t)d->out_h * d->out_w; }
static int64_t conv_ws_floats(const dd_conv_desc *d) {
  return conv_k(d) * conv_hw(d) + (int64_t)d->out_c * conv_k(d) + d->out_c;
}

size_t dd_cpu_conv_workspace(dd_backend *be, const dd_conv_desc *d) {
  return (size_t)threads_of(be) * (size_t)conv_ws_floats(d) * sizeof(float);
}

/* col (K, out_h * out_w) from the channels [c0, c0 + cg) of one image x (C, H, W). */
static void im2col(const dd_conv_desc *d, const float *x, int c0, int cg, float *col) {
  int64_t hw = conv_hw(d);
  for (int c = 0; c < cg; c++) {
    const float *xc = x + (int64_t)(c0 + c) * d->h * d->w;
    for (int ki = 0; ki < d->kh; ki++)
      for (int kj = 0; kj < d->kw; kj++) {
        float *row = col + ((int64_t)(c * d->kh + ki) * d->kw + kj) * hw;
        for (int oh = 0; oh < d->out_h; oh++) {
          int ih = oh * d->sh - d->ph + ki * d->dh;
          float *r = row + (int64_t)oh * d->out_w;
          if (ih < 0 || ih >= d->h) {
            memset(r, 0, (size_t)d->out_w * sizeof *r);
            continue;
          }
          const float *xr = xc + (int64_t)ih * d->w;
          int iw = -d->pw + kj * d->dw;
          if (d->sw == 1 && iw >= 0 && iw + d->out_w <= d->w) {
            memcpy(r, xr + iw, (size_t)d->out_w * sizeof *r);
            continue;
          }
          for (int ow = 0; ow < d->out_w; ow++, iw += d->sw) r[ow] = (iw >= 0 && iw < d->w) ? xr[iw] : 0.0f;
        }
      }
  }
}

/* Adds col (K, out_h * out_w) back into the channels [c0, c0 + cg) of one image dx. */
static void col2im_add(const dd_conv_desc *d, const float *col, int c0, int cg, float *dx) {
  int64_t hw = conv_hw(d);
  for (int c = 0; c < cg; c++) {
    float *xc = dx + (int64_t)(c0 + c) * d->h * d->w;
    for (int ki = 0; ki < d->kh; ki++)
      for (int kj = 0; kj < d->kw; kj++) {
        const float *row = col + ((int64_t)(c * d->kh + ki) * d->kw + kj) * hw;
        for (int oh = 0; oh < d->out_h; oh++) {
          int ih = oh * d->sh - d->ph + ki * d->dh;
          if (ih < 0 || ih >= d->h) continue;
          const float *r = row + (int64_t)oh * d->out_w;
          float *xr = xc + (int64_t)ih * d->w;
          int iw = -d->pw + kj * d->dw;
          for (int ow = 0; ow < d->out_w; ow++, iw += d->sw)
            if (iw >= 0 && iw < d->w) xr[iw] += r[ow];
        }
      }
  }
}

typedef struct {
  const dd_conv_desc *d;
  float *y, *dx, *dw, *dbias;
  const float *x, *w, *bias, *dy;
  float *ws;
} conv_job;

static void conv_fwd_task(void *ctx, int n, int t) {
  conv_job *j = ctx;
  const dd_conv_desc *d = j->d;
  int64_t hw = conv_hw(d), k = conv_k(d), ocg = d->out_c / d->group, cg = d->c / d->group;
  float *col = j->ws + (int64_t)t * conv_ws_floats(d);
  const float *x = j->x + (int64_t)n * d->c * d->h * d->w;
  float *y = j->y + (int64_t)n * d->out_c * hw;
  for (int g = 0; g < d->group; g++) {
    const float *src = x + (int64_t)g * cg * d->h * d->w;
    if (!conv_is_1x1(d)) {
      im2col(d, x, (int)(g * cg), (int)cg, col);
      src = col;
    }
    dd_sgemm(0, 0, (int)ocg, (int)hw, (int)k, 1.0f,
                j->w + g * ocg * k, (int)k, src, (int)hw, 0.0f, y + g * ocg * hw, (int)hw);
  }
  if (j->bias)
    for (int oc = 0; oc < d->out_c; oc++) {
      float b = j->bias[oc], *yr = y + oc * hw;
      for (int64_t i = 0; i < hw; i++) yr[i] += b;
    }
}

void dd_cpu_conv_forward(dd_backend *be, const dd_conv_desc *d, float *y, const float *x,
                         const float *w, const float *bias, void *ws) {
  conv_job j = {.d = d, .y = y, .x = x, .w = w, .bias = bias, .ws = ws};
  dd_threadpool_run(pool_of(be), d->n, conv_fwd_task, &j);
}

static void conv_bwd_data_task(void *ctx, int n, int t) {
  conv_job *j = ctx;
  const dd_conv_desc *d = j->d;
  int64_t hw = conv_hw(d), k = conv_k(d), ocg = d->out_c / d->group, cg = d->c / d->group;
  float *col = j->ws + (int64_t)t * conv_ws_floats(d);
  float *dx = j->dx + (int64_t)n * d->c * d->h * d->w;
  const float *dy = j->dy + (int64_t)n * d->out_c * hw;
  if (conv_is_1x1(d)) {
    for (int g = 0; g < d->group; g++)
      dd_sgemm(1, 0, (int)k, (int)hw, (int)ocg, 1.0f,
                  j->w + g * ocg * k, (int)k, dy + g * ocg * hw, (int)hw, 0.0f,
                  dx + (int64_t)g * cg * d->h * d->w, (int)hw);
    return;
  }
  memset(dx, 0, (size_t)d->c * d->h * d->w * sizeof *dx);
  for (int g = 0; g < d->group; g++) {
    dd_sgemm(1, 0, (int)k, (int)hw, (int)ocg, 1.0f,
                j->w + g * ocg * k, (int)k, dy + g * ocg * hw, (int)hw, 0.0f, col, (int)hw);
    col2im_add(d, col, (int)(g * cg), (int)cg, dx);
  }
}

void dd_cpu_conv_backward_data(dd_backend *be, const dd_conv_desc *d, float *dx, const float *dy,
                               const float *w, void *ws) {
  conv_job j = {.d = d, .dx = dx, .dy = dy, .w = w, .ws = ws};
  dd_threadpool_run(pool_of(be), d->n, conv_bwd_data_task, &j);
}

/* One task per thread: thread t handles images t, t + T, ... into its own partial sums. */
typedef struct {
  conv_job j;
  int threads;
} conv_filter_job;

static void conv_bwd_filter_task(void *ctx, int t, int thread) {
  (void)thread;
  conv_filter_job *fj = ctx;
  conv_job *j = &fj->j;
  const dd_conv_desc *d = j->d;
  int64_t hw = conv_hw(d), k = conv_k(d), ocg = d->out_c / d->group, cg = d->c / d->group;
  float *col = j->ws + (int64_t)t * conv_ws_floats(d);
  float *pdw = col + k * hw, *pdb = pdw + (int64_t)d->out_c * k;
  memset(pdw, 0, (size_t)(d->out_c * k + d->out_c) * sizeof *pdw);
  for (int n = t; n < d->n; n += fj->threads) {
    const float *x = j->x + (int64_t)n * d->c * d->h * d->w;
    const float *dy = j->dy + (int64_t)n * d->out_c * hw;
    for (int g = 0; g < d->group && j->dw; g++) {
      const float *src = x + (int64_t)g * cg * d->h * d->w;
      if (!conv_is_1x1(d)) {
        im2col(d, x, (int)(g * cg), (int)cg, col);
        src = col;
      }
      dd_sgemm(0, 1, (int)ocg, (int)k, (int)hw, 1.0f,
                    dy + g * ocg * hw, (int)hw, src, (int)hw, 1.0f, pdw + g * ocg * k, (int)k);
    }
    if (j->dbias)
      for (int oc = 0; oc < d->out_c; oc++) {
        const float *r = dy + oc * hw;
        double s = 0;
        for (int64_t i = 0; i < hw; i++) s += r[i];
        pdb[oc] += (float)s;
      }
  }
}

void dd_cpu_conv_backward_filter(dd_backend *be, const dd_conv_desc *d, float *dw, float *dbias,
                                 const float *dy, const float *x, void *ws) {
  int threads = threads_of(be);
  if (threads > d->n) threads = d->n;
  conv_filter_job fj = {{.d = d, .dw = dw, .dbias = dbias, .dy = dy, .x = x, .ws = ws}, threads};
  dd_threadpool_run(pool_of(be), threads, conv_bwd_filter_task, &fj);
  int64_t k = conv_k(d), hw = conv_hw(d), wcount = (int64_t)d->out_c * k;
  for (int t = 0; t < threads; t++) {
    const float *pdw = (const float *)ws + (int64_t)t * conv_ws_floats(d) + k * hw;
    if (dw)
      for (int64_t i = 0; i < wcount; i++) dw[i] += pdw[i];
    if (dbias)
      for (int oc = 0; oc < d->out_c; oc++) dbias[oc] += pdw[wcount + oc];
  }
}

