/* CPU kernels of the catalogue's loss layers (EuclideanLoss uses the BLAS-like ops;
 * SigmoidCrossEntropyLoss, InfogainLoss, MultinomialLogisticLoss, HingeLoss and ContrastiveLoss
 * use these): semantics in base/backend.h. Plain loops in Caffe's order; sums accumulate in
 * double, each term computed in double and gradients rounded to float once, so a run is
 * bit-reproducible and the CUDA kernels (cuda/kernels_losses.cu) can follow the same steps. */
#include <math.h>

#include "cpu/cpu_kernels.h"

#define LOG_FLOOR 1e-20f /* Caffe's kLOG_THRESHOLD */

/* Caffe's `static_cast<int>(value) == ignore_label`, defined for every float (NaN and values
 * outside int's range are never ignored). */
static int is_ignored(float v, int has_ignore, int ignore) {
  return has_ignore && v > -2147483649.0f && v < 2147483648.0f && (int)v == ignore;
}

static double sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + exp(-x));
  double e = exp(x);
  return e / (1.0 + e);
}

double dd_cpu_sigmoid_xent_forward(dd_backend *be, int64_t n, const float *x, const float *target, int has_ignore,
                                   int ignore_label, int64_t *valid) {
  (void)be;
  double loss = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < n; i++) {
    if (is_ignored(target[i], has_ignore, ignore_label)) continue;
    double v = x[i];
    loss -= v * ((double)target[i] - (v >= 0 ? 1.0 : 0.0)) - log1p(exp(-fabs(v)));
    count++;
  }
  *valid = count;
  return loss;
}

void dd_cpu_sigmoid_xent_backward(dd_backend *be, int64_t n, float *dx, const float *x, const float *target,
                                  int has_ignore, int ignore_label, float scale) {
  (void)be;
  for (int64_t i = 0; i < n; i++)
    dx[i] = is_ignored(target[i], has_ignore, ignore_label)
                ? 0.0f
                : (float)((sigmoid(x[i]) - (double)target[i]) * (double)scale);
}

static double log_floored(float p) { return log((double)(p > LOG_FLOOR ? p : LOG_FLOOR)); }

double dd_cpu_infogain_forward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, const float *prob,
                               const float *label, const float *h, int has_ignore, int ignore_label, int64_t *valid) {
  (void)be;
  double loss = 0;
  int64_t count = 0;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      float lv = label[o * inner + i];
      if (is_ignored(lv, has_ignore, ignore_label)) continue;
      int64_t y = (int64_t)lv;
      const float *p = prob + o * channels * inner + i; /* p[l * inner]: class l */
      if (!h) {
        loss -= log_floored(p[y * inner]);
      } else {
        const float *row = h + y * channels;
        for (int64_t l = 0; l < channels; l++) loss -= (double)row[l] * log_floored(p[l * inner]);
      }
      count++;
    }
  *valid = count;
  return loss;
}

void dd_cpu_infogain_backward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *dx,
                              const float *prob, const float *label, const float *h, int has_ignore, int ignore_label,
                              float scale) {
  (void)be;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      float lv = label[o * inner + i];
      const float *p = prob + o * channels * inner + i;
      float *d = dx + o * channels * inner + i;
      if (is_ignored(lv, has_ignore, ignore_label)) {
        for (int64_t l = 0; l < channels; l++) d[l * inner] = 0.0f;
        continue;
      }
      int64_t y = (int64_t)lv;
      const float *row = h ? h + y * channels : NULL;
      double rsum = 0;
      if (row)
        for (int64_t l = 0; l < channels; l++) rsum += row[l];
      else
        rsum = 1.0;
      for (int64_t l = 0; l < channels; l++) {
        double hl = row ? (double)row[l] : (l == y ? 1.0 : 0.0);
        d[l * inner] = (float)(((double)p[l * inner] * rsum - hl) * (double)scale);
      }
    }
}

void dd_cpu_multinomial_backward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *dx,
                                 const float *prob, const float *label, float scale) {
  (void)be;
  for (int64_t k = 0; k < outer * channels * inner; k++) dx[k] = 0.0f;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      int64_t at = (o * channels + (int64_t)label[o * inner + i]) * inner + i;
      float p = prob[at] > LOG_FLOOR ? prob[at] : LOG_FLOOR;
      dx[at] = (float)(-(double)scale / (double)p);
    }
}

/* t = max(0, 1 + s x) for class c of a row whose label is y */
static double hinge_t(float x, int64_t c, int64_t y) {
  double v = 1.0 + (c == y ? -(double)x : (double)x);
  return v > 0 ? v : 0.0;
}

double dd_cpu_hinge_forward(dd_backend *be, int64_t outer, int64_t channels, const float *x, const float *label,
                            int norm) {
  (void)be;
  double loss = 0;
  for (int64_t o = 0; o < outer; o++) {
    int64_t y = (int64_t)label[o];
    for (int64_t c = 0; c < channels; c++) {
      double t = hinge_t(x[o * channels + c], c, y);
      loss += norm == 2 ? t * t : t;
    }
  }
  return loss;
}

void dd_cpu_hinge_backward(dd_backend *be, int64_t outer, int64_t channels, float *dx, const float *x,
                           const float *label, int norm, float scale) {
  (void)be;
  for (int64_t o = 0; o < outer; o++) {
    int64_t y = (int64_t)label[o];
    for (int64_t c = 0; c < channels; c++) {
      double t = hinge_t(x[o * channels + c], c, y), s = c == y ? -1.0 : 1.0;
      double g = norm == 2 ? 2.0 * t : (t > 0 ? 1.0 : 0.0);
      dx[o * channels + c] = (float)(s * g * (double)scale);
    }
  }
}

/* |a - b|^2 of one row */
static double row_dist_sq(const float *a, const float *b, int64_t channels) {
  double q = 0;
  for (int64_t c = 0; c < channels; c++) {
    double d = (double)a[c] - b[c];
    q += d * d;
  }
  return q;
}

static int is_similar(float s) { return s > -2147483649.0f && s < 2147483648.0f && (int)s != 0; }

double dd_cpu_contrastive_forward(dd_backend *be, int64_t n, int64_t channels, const float *a, const float *b,
                                  const float *sim, float margin, int legacy) {
  (void)be;
  double loss = 0;
  for (int64_t r = 0; r < n; r++) {
    double q = row_dist_sq(a + r * channels, b + r * channels, channels);
    if (is_similar(sim[r])) {
      loss += q;
    } else if (legacy) {
      loss += fmax((double)margin - q, 0.0);
    } else {
      double m = fmax((double)margin - sqrt(q), 0.0);
      loss += m * m;
    }
  }
  return loss;
}

void dd_cpu_contrastive_backward(dd_backend *be, int64_t n, int64_t channels, float *da, float *db, const float *a,
                                 const float *b, const float *sim, float margin, int legacy, float scale) {
  (void)be;
  for (int64_t r = 0; r < n; r++) {
    const float *ar = a + r * channels, *br = b + r * channels;
    double beta = scale;
    if (!is_similar(sim[r])) {
      double q = row_dist_sq(ar, br, channels), dist = sqrt(q);
      double m = legacy ? (double)margin - q : (double)margin - dist;
      beta = m > 0 ? (legacy ? -(double)scale : -(double)scale * m / (dist + 1e-4)) : 0.0;
    }
    for (int64_t c = 0; c < channels; c++) {
      float g = (float)(beta * ((double)ar[c] - br[c]));
      if (da) da[r * channels + c] = g;
      if (db) db[r * channels + c] = -g;
    }
  }
}
