/* bench_conv: times the CPU backend's convolution (forward, backward-data, backward-filter) on the
 * convolution shapes of WRN-16-k (pre-activation, 3x32x32 input, batch 64), and adds them up with
 * their multiplicity in the net: the convolution part of one training step. Not a ctest test.
 *
 *   bench_conv [--threads T] [--width K] [--iters N]
 *
 * Each pass is timed alone (median of N after one warm-up); GFLOP/s counts 2 FLOP per
 * multiply-add, N * out_c * out_h * out_w * (c / group) * kh * kw multiply-adds per pass. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/backend.h"
#include "cpu/cpu_blas.h"
#include "test_bench.h"

typedef struct {
  int c, hw, oc, k, s, times, bwd_data;
} shape;

static double median_ms(double *t, int n) { return median(t, n) * 1e3; }

int main(int argc, char **argv) {
  int threads = 2, width = 4, iters = 5, batch = 64;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--width") && i + 1 < argc)
      width = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
      iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
      batch = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_conv [--threads T] [--width K] [--iters N] [--batch B]\n");
      return 2;
    }
  }
  if (iters < 1 || iters > 100) iters = 5;
  char err[512];
  if (dd_cpu_ensure_fast_blas(err, sizeof err)) {
    fprintf(stderr, "bench_conv: %s\n", err);
    return 1;
  }
  dd_backend *be;
  if (dd_cpu_backend_create(&be, threads)) return 1;
  printf("%s\n", dd_cpu_backend_describe(be));
  int w1 = 16 * width, w2 = 32 * width, w3 = 64 * width;
  const shape shapes[] = {
      {3, 32, 16, 3, 1, 1, 0},   {16, 32, w1, 3, 1, 1, 1},  {w1, 32, w1, 3, 1, 3, 1}, {16, 32, w1, 1, 1, 1, 1},
      {w1, 32, w2, 3, 2, 1, 1},  {w2, 16, w2, 3, 1, 3, 1},  {w1, 32, w2, 1, 2, 1, 1}, {w2, 16, w3, 3, 2, 1, 1},
      {w3, 8, w3, 3, 1, 3, 1},   {w2, 16, w3, 1, 2, 1, 1},
  };
  double tot[3] = {0, 0, 0}, flop_tot = 0;
  printf("WRN-16-%d convolutions, batch %d, %d thread%s (ms per pass, GFLOP/s)\n", width, batch, threads,
         threads == 1 ? "" : "s");
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
    const shape *s = &shapes[si];
    int pad = s->k / 2, o = (s->hw + 2 * pad - s->k) / s->s + 1;
    dd_conv_desc d = {.n = batch, .c = s->c, .h = s->hw, .w = s->hw, .out_c = s->oc, .out_h = o, .out_w = o,
                      .kh = s->k, .kw = s->k, .sh = s->s, .sw = s->s, .ph = pad, .pw = pad, .dh = 1, .dw = 1,
                      .group = 1};
    size_t nx = (size_t)batch * s->c * s->hw * s->hw, ny = (size_t)batch * s->oc * o * o,
           nw = (size_t)s->oc * s->c * s->k * s->k;
    float *x = be->ops->alloc(be, nx * 4), *dx = be->ops->alloc(be, nx * 4), *y = be->ops->alloc(be, ny * 4),
          *w = be->ops->alloc(be, nw * 4), *dw = be->ops->alloc(be, nw * 4);
    void *ws = be->ops->alloc(be, be->ops->conv_workspace(be, &d));
    if (!x || !dx || !y || !w || !dw || !ws) return 1;
    for (size_t i = 0; i < nx; i++) x[i] = (float)((i * 7) % 13) * 0.1f - 0.6f;
    for (size_t i = 0; i < nw; i++) w[i] = (float)((i * 5) % 11) * 0.01f - 0.05f;
    double tf[100], tb[100], tw[100];
    for (int it = 0; it <= iters; it++) {
      double t0 = now();
      be->ops->conv_forward(be, &d, y, x, w, NULL, ws);
      double t1 = now();
      be->ops->conv_backward_filter(be, &d, dw, NULL, y, x, ws);
      double t2 = now();
      if (s->bwd_data) be->ops->conv_backward_data(be, &d, dx, y, w, ws);
      double t3 = now();
      if (it) {
        tf[it - 1] = t1 - t0;
        tw[it - 1] = t2 - t1;
        tb[it - 1] = t3 - t2;
      }
    }
    double flop = 2.0 * ny * s->c * s->k * s->k;
    double mf = median_ms(tf, iters), mw = median_ms(tw, iters), mb = median_ms(tb, iters);
    printf("  x%d %3dx%2dx%2d -> %3d k%d s%d: fwd %7.2f (%5.1f)  bwd-data %7.2f (%5.1f)  bwd-filter %7.2f (%5.1f)\n",
           s->times, s->c, s->hw, s->hw, s->oc, s->k, s->s, mf, flop / mf * 1e-6, mb,
           s->bwd_data ? flop / mb * 1e-6 : 0.0, mw, flop / mw * 1e-6);
    tot[0] += s->times * mf;
    tot[1] += s->times * mb;
    tot[2] += s->times * mw;
    flop_tot += s->times * flop * (2 + s->bwd_data);
    be->ops->free(be, x);
    be->ops->free(be, dx);
    be->ops->free(be, y);
    be->ops->free(be, w);
    be->ops->free(be, dw);
    be->ops->free(be, ws);
  }
  double all = tot[0] + tot[1] + tot[2];
  printf("  per step: fwd %.1f ms, bwd-data %.1f ms, bwd-filter %.1f ms, total %.1f ms, %.1f GFLOP/s\n", tot[0],
         tot[1], tot[2], all, flop_tot / all * 1e-6);
  printf("RESULT conv width=%d threads=%d ms=%.2f\n", width, threads, all);
  dd_cpu_backend_destroy(be);
  return 0;
}
