/* CPU kernels of the catalogue's structure layers (Reduction, Crop, ArgMax, Embed, Im2col; Slice,
 * Reshape and Tile use copy_rows and copy): semantics in base/backend.h. Plain loops, one thread. */
#include <math.h>

#include "cpu/cpu_kernels.h"

void dd_cpu_reduce_forward(dd_backend *be, int op, int64_t outer, int64_t dim, float *y, const float *x, float coeff) {
  (void)be;
  for (int64_t i = 0; i < outer; i++) {
    const float *r = x + i * dim;
    double s = 0;
    for (int64_t j = 0; j < dim; j++) s += op == 2 ? fabs((double)r[j]) : op == 3 ? (double)r[j] * r[j] : r[j];
    if (op == 4 && dim > 0) s /= (double)dim;
    y[i] = (float)(coeff * s);
  }
}

void dd_cpu_reduce_backward(dd_backend *be, int op, int64_t outer, int64_t dim, float *dx, const float *dy,
                            const float *x, float coeff) {
  (void)be;
  for (int64_t i = 0; i < outer; i++) {
    float g = coeff * dy[i];
    if (op == 4 && dim > 0) g /= (float)dim;
    const float *r = x + i * dim;
    float *o = dx + i * dim;
    for (int64_t j = 0; j < dim; j++)
      o[j] = op == 2 ? (r[j] > 0 ? g : r[j] < 0 ? -g : 0.0f) : op == 3 ? 2.0f * r[j] * g : g;
  }
}

/* ---- copy_nd: an odometer over every axis but the last, a plain loop over the last ---------- */
void dd_cpu_copy_nd(dd_backend *be, const dd_copy_nd_desc *d, float *dst, const float *src, int accumulate) {
  (void)be;
  if (d->ndim == 0) {
    dst[0] = accumulate ? dst[0] + src[0] : src[0];
    return;
  }
  for (int k = 0; k < d->ndim; k++)
    if (d->shape[k] <= 0) return;
  int last = d->ndim - 1;
  int64_t idx[DD_COPY_ND_MAX_DIMS] = {0}, n = d->shape[last], ds = d->dst_stride[last], ss = d->src_stride[last];
  for (;;) {
    int64_t od = 0, os = 0;
    for (int k = 0; k < last; k++) od += idx[k] * d->dst_stride[k], os += idx[k] * d->src_stride[k];
    float *o = dst + od;
    const float *s = src + os;
    if (accumulate)
      for (int64_t j = 0; j < n; j++) o[j * ds] += s[j * ss];
    else
      for (int64_t j = 0; j < n; j++) o[j * ds] = s[j * ss];
    int k = last - 1;
    while (k >= 0 && ++idx[k] == d->shape[k]) idx[k--] = 0;
    if (k < 0) return;
  }
}

/* ---- argmax_topk ------------------------------------------------------------------------------ */
/* Whether (a, ia) ranks above (b, ib): by value descending, the higher index first among equal
 * values (Caffe's std::greater on pairs); NaN above every number (Caffe leaves it unspecified). */
static int ranks_above(float a, int64_t ia, float b, int64_t ib) {
  int na = isnan(a), nb = isnan(b);
  if (na || nb) return na && nb ? ia > ib : na;
  return a > b || (a == b && ia > ib);
}

void dd_cpu_argmax_topk(dd_backend *be, int64_t outer, int64_t dim, int64_t inner, int k, const float *x, float *ind,
                        float *val, int64_t out_stride) {
  (void)be;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      const float *r = x + o * dim * inner + i;
      int64_t prev = -1; /* the previous rank's index: each rank is the best pair below it */
      for (int t = 0; t < k; t++) {
        int64_t best = -1;
        for (int64_t j = 0; j < dim; j++) {
          if (prev >= 0 && !ranks_above(r[prev * inner], prev, r[j * inner], j)) continue;
          if (best < 0 || ranks_above(r[j * inner], j, r[best * inner], best)) best = j;
        }
        int64_t at = o * out_stride + t * inner + i;
        if (ind) ind[at] = (float)best;
        if (val) val[at] = r[best * inner];
        prev = best;
      }
    }
}

/* ---- Embed ------------------------------------------------------------------------------------ */
/* The row an index names, or -1 when it is not an integer in [0, rows). */
static int64_t embed_row(float v, int64_t rows) {
  if (!(v >= 0 && v < (float)rows) || v != floorf(v)) return -1;
  return (int64_t)v;
}

void dd_cpu_embed_forward(dd_backend *be, int64_t m, int64_t n, int64_t rows, float *y, const float *idx,
                          const float *w, const float *bias) {
  (void)be;
  for (int64_t j = 0; j < m; j++) {
    int64_t r = embed_row(idx[j], rows);
    if (r < 0) continue;
    for (int64_t c = 0; c < n; c++) y[j * n + c] = w[r * n + c] + (bias ? bias[c] : 0.0f);
  }
}

void dd_cpu_embed_backward(dd_backend *be, int64_t m, int64_t n, int64_t rows, float *dw, float *dbias,
                           const float *dy, const float *idx) {
  (void)be;
  if (dw)
    for (int64_t j = 0; j < m; j++) {
      int64_t r = embed_row(idx[j], rows);
      if (r < 0) continue;
      for (int64_t c = 0; c < n; c++) dw[r * n + c] += dy[j * n + c];
    }
  if (dbias)
    for (int64_t c = 0; c < n; c++) {
      double s = 0;
      for (int64_t j = 0; j < m; j++) s += dy[j * n + c];
      dbias[c] += (float)s;
    }
}

/* ---- im2col / col2im -------------------------------------------------------------------------- */
void dd_cpu_im2col(dd_backend *be, const dd_conv_desc *d, float *col, const float *x) {
  (void)be;
  int64_t hw = (int64_t)d->h * d->w, ohw = (int64_t)d->out_h * d->out_w;
  for (int64_t b = 0; b < d->n; b++)
    for (int64_t ch = 0; ch < d->c; ch++) {
      const float *xp = x + (b * d->c + ch) * hw;
      for (int i = 0; i < d->kh; i++)
        for (int j = 0; j < d->kw; j++) {
          float *o = col + ((b * d->c + ch) * d->kh * d->kw + (int64_t)i * d->kw + j) * ohw;
          for (int oy = 0; oy < d->out_h; oy++) {
            int iy = oy * d->sh - d->ph + i * d->dh;
            for (int ox = 0; ox < d->out_w; ox++) {
              int ix = ox * d->sw - d->pw + j * d->dw;
              *o++ = iy >= 0 && iy < d->h && ix >= 0 && ix < d->w ? xp[(int64_t)iy * d->w + ix] : 0.0f;
            }
          }
        }
    }
}

void dd_cpu_col2im(dd_backend *be, const dd_conv_desc *d, float *dx, const float *col) {
  (void)be;
  int64_t hw = (int64_t)d->h * d->w;
  for (int64_t k = 0; k < (int64_t)d->n * d->c * hw; k++) dx[k] = 0.0f;
  const float *cp = col;
  for (int64_t b = 0; b < d->n; b++)
    for (int64_t ch = 0; ch < d->c; ch++) {
      float *xp = dx + (b * d->c + ch) * hw;
      for (int i = 0; i < d->kh; i++)
        for (int j = 0; j < d->kw; j++)
          for (int oy = 0; oy < d->out_h; oy++) {
            int iy = oy * d->sh - d->ph + i * d->dh;
            for (int ox = 0; ox < d->out_w; ox++, cp++) {
              int ix = ox * d->sw - d->pw + j * d->dw;
              if (iy >= 0 && iy < d->h && ix >= 0 && ix < d->w) xp[(int64_t)iy * d->w + ix] += *cp;
            }
          }
    }
}
