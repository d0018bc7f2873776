/* CPU kernels of the catalogue's neuron layers (Sigmoid ... Swish, PReLU): semantics in
 * base/backend.h. Elementwise work is split into one contiguous range per thread of the backend's
 * pool (large arrays only); PReLU's slope gradient sums each channel in double, in element order,
 * one channel per task, so results do not depend on the thread count. */
#include <math.h>

#include "cpu/cpu_kernels.h"

typedef struct {
  const dd_neuron_desc *d;
  int64_t n, channels, inner;
  float *y, *dx, *dslope;
  const float *x, *dy, *yin, *slope;
  int parts;
} neuron_job;

static void split(dd_backend *be, int64_t n, dd_task_fn fn, neuron_job *j) {
  dd_threadpool *pool = ((dd_cpu_ctx *)be->ctx)->pool;
  int threads = dd_threadpool_threads(pool);
  if (n < 32768 || threads == 1) {
    j->parts = 1;
    fn(j, 0, 0);
    return;
  }
  j->parts = threads;
  dd_threadpool_run(pool, threads, fn, j);
}

static float sigmoidf(float v) { return 0.5f * tanhf(0.5f * v) + 0.5f; }

static float fwd1(const dd_neuron_desc *d, float v) {
  switch (d->kind) {
    case DD_NEURON_SIGMOID: return sigmoidf(v);
    case DD_NEURON_TANH: return tanhf(v);
    case DD_NEURON_ELU: return v > 0 ? v : d->a * (expf(v) - 1.0f);
    case DD_NEURON_POWER:
      if (d->a * d->b == 0.0f) return d->a == 0.0f ? 1.0f : powf(d->c, d->a);
      return powf(d->b * v + d->c, d->a);
    case DD_NEURON_ABSVAL: return fabsf(v);
    case DD_NEURON_BNLL: return v > 0 ? v + logf(1.0f + expf(-v)) : logf(1.0f + expf(v));
    case DD_NEURON_EXP: return d->b * expf(d->a * v);
    case DD_NEURON_LOG: return d->c * logf(d->a * v + d->b);
    case DD_NEURON_THRESHOLD: return v > d->a ? 1.0f : 0.0f;
    case DD_NEURON_CLIP: return fmaxf(d->a, fminf(v, d->b));
    case DD_NEURON_SWISH: return v * sigmoidf(d->a * v);
    default: return v;
  }
}

static float bwd1(const dd_neuron_desc *d, float g, float v, float y) {
  switch (d->kind) {
    case DD_NEURON_SIGMOID: return g * y * (1.0f - y);
    case DD_NEURON_TANH: return g * (1.0f - y * y);
    case DD_NEURON_ELU: return v > 0 ? g : g * (y + d->a);
    case DD_NEURON_POWER: {
      float ds = d->a * d->b;
      if (ds == 0.0f || d->a == 1.0f) return ds * g;
      if (d->a == 2.0f) return (ds * d->b * v + ds * d->c) * g;
      if (d->c == 0.0f) return (d->a * (y / v)) * g;
      return (ds * (y / (d->b * v + d->c))) * g;
    }
    case DD_NEURON_ABSVAL: return v > 0 ? g : v < 0 ? -g : 0.0f;
    case DD_NEURON_BNLL: {
      float e = expf(v < 50.0f ? v : 50.0f);
      return g * (e / (e + 1.0f));
    }
    case DD_NEURON_EXP: return (g * y) * d->a;
    case DD_NEURON_LOG: return ((1.0f / (d->a * v + d->b)) * (d->a * d->c)) * g;
    case DD_NEURON_THRESHOLD: return 0.0f;
    case DD_NEURON_CLIP: return v >= d->a && v <= d->b ? g : 0.0f;
    case DD_NEURON_SWISH: {
      float s = sigmoidf(d->a * v);
      return g * (d->a * y + s * (1.0f - d->a * y));
    }
    default: return g;
  }
}

static void fwd_task(void *ctx, int task, int thread) {
  (void)thread;
  neuron_job *j = ctx;
  int64_t lo = j->n * task / j->parts, hi = j->n * (task + 1) / j->parts;
  for (int64_t i = lo; i < hi; i++) j->y[i] = fwd1(j->d, j->x[i]);
}

void dd_cpu_neuron_forward(dd_backend *be, const dd_neuron_desc *d, int64_t n, float *y, const float *x) {
  neuron_job j = {.d = d, .n = n, .y = y, .x = x};
  split(be, n, fwd_task, &j);
}

static void bwd_task(void *ctx, int task, int thread) {
  (void)thread;
  neuron_job *j = ctx;
  int64_t lo = j->n * task / j->parts, hi = j->n * (task + 1) / j->parts;
  for (int64_t i = lo; i < hi; i++) j->dx[i] = bwd1(j->d, j->dy[i], j->x[i], j->yin[i]);
}

void dd_cpu_neuron_backward(dd_backend *be, const dd_neuron_desc *d, int64_t n, float *dx, const float *dy,
                            const float *x, const float *y) {
  neuron_job j = {.d = d, .n = n, .dx = dx, .dy = dy, .x = x, .yin = y};
  split(be, n, bwd_task, &j);
}

static void prelu_task(void *ctx, int task, int thread) {
  (void)thread;
  neuron_job *j = ctx;
  int64_t lo = j->n * task / j->parts, hi = j->n * (task + 1) / j->parts;
  for (int64_t i = lo; i < hi; i++) {
    float v = j->x[i], s = j->slope[(i / j->inner) % j->channels];
    if (j->y)
      j->y[i] = v > 0 ? v : s * v;
    else
      j->dx[i] = v > 0 ? j->dy[i] : j->dy[i] * s;
  }
}

void dd_cpu_prelu_forward(dd_backend *be, int64_t n, int64_t channels, int64_t inner, float *y, const float *x,
                          const float *slope) {
  neuron_job j = {.n = n, .channels = channels, .inner = inner, .y = y, .x = x, .slope = slope};
  split(be, n, prelu_task, &j);
}

/* One channel per task: its elements in order, summed in double. */
static void slope_task(void *ctx, int c, int thread) {
  (void)thread;
  neuron_job *j = ctx;
  double s = 0;
  int64_t plane = j->channels * j->inner;
  for (int64_t o = 0; o < j->n; o += plane)
    for (int64_t k = 0; k < j->inner && o + c * j->inner + k < j->n; k++) {
      int64_t i = o + c * j->inner + k;
      if (j->x[i] <= 0) s += (double)j->dy[i] * j->x[i];
    }
  j->dslope[c] += (float)s;
}

void dd_cpu_prelu_backward(dd_backend *be, int64_t n, int64_t channels, int64_t inner, float *dx, float *dslope,
                           const float *dy, const float *x, const float *slope) {
  neuron_job j = {.n = n, .channels = channels, .inner = inner, .dx = dx, .dslope = dslope, .dy = dy, .x = x,
                  .slope = slope};
  if (dslope) {
    if (channels > 1 && n >= 32768)
      dd_threadpool_run(((dd_cpu_ctx *)be->ctx)->pool, (int)channels, slope_task, &j);
    else
      for (int64_t c = 0; c < channels; c++) slope_task(&j, (int)c, 0);
  }
  if (dx) split(be, n, prelu_task, &j);
}
