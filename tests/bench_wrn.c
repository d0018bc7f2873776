/* bench_wrn: times one training step (forward, backward, SGD update with momentum and weight
 * decay) of TRAIN nets on the CPU backend, and the machine's sgemm ceiling with the kernels in use.
 * Not a ctest test: scripts/bench_cpu.sh runs it next to PyTorch (docs/performance.md).
 *
 *   bench_wrn [--threads T] [--iters N] [--warmup W] [--layers] [--no-gemm] NET.prototxt...
 *
 * Without a net it prints the sgemm ceiling only (OPENBLAS_CORETYPE=... bench_wrn compares
 * OpenBLAS's kernel families).
 * Nets need an Input layer with tops "data" and "label" (scripts/gen_wrn.py --mode bench writes
 * them); data is filled with a fixed pseudo-random pattern, labels with i mod classes.
 *
 * Reported per net: the median step over N iterations after W warm-up steps, images/s, and the
 * achieved GFLOP/s over the multiply-adds of Convolution and InnerProduct layers, counted as
 * 2 FLOP per multiply-add for each GEMM the step runs: forward, backward-filter (for weights
 * that learn) and backward-data (only where the bottom needs a gradient, so not for the first
 * convolution, whose bottom is the data). The usual "3 x forward" figure is printed next to it.
 * A profile gives the mean time per step of each layer type, forward and backward separately,
 * measured around each layer call (the CPU backend is synchronous). A last line per net,
 * "RESULT net=... ms=... img_s=...", is for scripts. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "format/caffe_io.h"
#include "cpu/cpu_blas.h"
#include "net/net.h"
#include "test_bench.h"

/* ---- the sgemm ceiling ----------------------------------------------------------------------- */

/* GFLOP/s of the backend's gemm for C (m x n) = A (m x k) B (k x n), best of 5 timed runs. */
static double gemm_gflops(dd_backend *be, int m, int n, int k) {
  float *a = be->ops->alloc(be, (size_t)m * k * sizeof(float));
  float *b = be->ops->alloc(be, (size_t)k * n * sizeof(float));
  float *c = be->ops->alloc(be, (size_t)m * n * sizeof(float));
  if (!a || !b || !c) return 0;
  for (int64_t i = 0; i < (int64_t)m * k; i++) a[i] = (float)(i % 7) * 0.1f;
  for (int64_t i = 0; i < (int64_t)k * n; i++) b[i] = (float)(i % 5) * 0.1f;
  double flop = 2.0 * m * n * k, best = 1e30;
  int reps = flop < 1e9 ? (int)(1e9 / flop) + 1 : 2;
  be->ops->gemm(be, 0, 0, m, n, k, 1.0f, a, b, 0.0f, c);
  for (int r = 0; r < 5; r++) {
    double t = now();
    for (int i = 0; i < reps; i++) be->ops->gemm(be, 0, 0, m, n, k, 1.0f, a, b, 0.0f, c);
    t = (now() - t) / reps;
    if (t < best) best = t;
  }
  be->ops->free(be, a);
  be->ops->free(be, b);
  be->ops->free(be, c);
  return flop / best * 1e-9;
}

static void print_ceiling(int threads) {
  int counts[2] = {1, threads};
  for (int i = 0; i < (threads > 1 ? 2 : 1); i++) {
    dd_backend *be;
    if (dd_cpu_backend_create(&be, counts[i])) return;
    printf("sgemm ceiling, %d thread%s: 1024x1024x1024 %.1f GFLOP/s; conv-shaped 128x256x1152 %.1f "
           "GFLOP/s\n",
           counts[i], counts[i] == 1 ? "" : "s", gemm_gflops(be, 1024, 1024, 1024),
           gemm_gflops(be, 128, 256, 1152));
    dd_cpu_backend_destroy(be);
  }
}

/* ---- one net ---------------------------------------------------------------------------------- */

typedef struct {
  const char *type;
  int count;
  double fwd, bwd; /* seconds summed over timed steps */
} type_time;

static int64_t out_channels(const dd_layer *l) {
  if (l->lp->convolution_param) return l->lp->convolution_param->num_output;
  if (l->lp->inner_product_param) return l->lp->inner_product_param->num_output;
  return 0;
}

/* Multiply-adds of one forward GEMM pass of a Convolution or InnerProduct layer (0 otherwise):
 * top elements times weights per output. */
static double layer_macs(const dd_layer *l) {
  if (strcmp(l->ops->type, "Convolution") && strcmp(l->ops->type, "InnerProduct")) return 0;
  int64_t oc = out_channels(l);
  if (oc <= 0 || l->n_params < 1) return 0;
  return (double)l->top[0]->count * (double)(l->params[0]->count / oc);
}

/* One net's run: the net, its synthetic data, the momentum history, and the clocks. */
typedef struct {
  dd_backend *be;
  const char *path;
  Caffe__NetParameter *p;
  dd_net *n;
  int iters, warmup, batch;
  float *h, **hist;   /* host staging; (n_params) momentum buffers */
  double *lf, *lb;    /* (n_layers) forward / backward seconds summed over the timed steps */
  double *step_s;     /* (warmup + iters) seconds per step */
  double loss;        /* of the last step */
} wrn_run;

static void wrn_free(wrn_run *w) {
  for (size_t i = 0; w->hist && i < w->n->n_params; i++)
    if (w->hist[i]) w->be->ops->free(w->be, w->hist[i]);
  free(w->hist);
  free(w->h);
  free(w->lf);
  free(w->lb);
  free(w->step_s);
  dd_net_destroy(w->n);
  if (w->p) caffe__net_parameter__free_unpacked(w->p, NULL);
}

/* Builds the TRAIN net at w->path, fills "data" with a fixed pseudo-random pattern and "label"
 * with i mod classes, and allocates the momentum history and the clocks. 0 on success. */
static int wrn_setup(wrn_run *w) {
  char err[2048];
  dd_backend *be = w->be;
  if (dd_net_read_text(&w->p, w->path, err, sizeof err) ||
      dd_net_create(&w->n, w->p, CAFFE__PHASE__TRAIN, be, 1, NULL, err, sizeof err)) {
    fprintf(stderr, "bench_wrn: %s\n", err);
    return 1;
  }
  dd_net *n = w->n;
  dd_tensor *data = dd_net_blob(n, "data"), *label = dd_net_blob(n, "label");
  int64_t classes = 0;
  for (size_t i = 0; i < n->n_layers; i++)
    if (!strcmp(n->layers[i].ops->type, "SoftmaxWithLoss")) classes = n->layers[i].bottom[0]->shape.dims[1];
  if (!data || !label || classes <= 0) {
    fprintf(stderr, "bench_wrn: %s: needs Input tops \"data\" and \"label\" and a SoftmaxWithLoss\n", w->path);
    return 1;
  }
  w->batch = (int)data->shape.dims[0];
  w->h = malloc((size_t)(data->count > label->count ? data->count : label->count) * sizeof *w->h);
  w->hist = calloc(n->n_params, sizeof *w->hist);
  w->lf = calloc(n->n_layers, sizeof *w->lf);
  w->lb = calloc(n->n_layers, sizeof *w->lb);
  w->step_s = calloc((size_t)(w->warmup + w->iters), sizeof *w->step_s);
  if (!w->h || !w->hist || !w->lf || !w->lb || !w->step_s) {
    fprintf(stderr, "bench_wrn: out of memory\n");
    return 1;
  }
  uint32_t s = 12345;
  for (int64_t i = 0; i < data->count; i++) {
    s = s * 1664525u + 1013904223u;
    w->h[i] = (float)(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
  }
  dd_tensor_set_data(data, w->h);
  for (int64_t i = 0; i < label->count; i++) w->h[i] = (float)(i % classes);
  dd_tensor_set_data(label, w->h);
  for (size_t i = 0; i < n->n_params; i++) {
    w->hist[i] = be->ops->alloc(be, (size_t)n->params[i].t->count * sizeof(float));
    if (!w->hist[i]) {
      fprintf(stderr, "bench_wrn: out of memory\n");
      return 1;
    }
  }
  return 0;
}

/* The warm-up and timed steps: dd_net_forward and dd_net_backward with a clock around each
 * layer, then SGD as Caffe's solver (lr 0.01, momentum 0.9, weight decay 5e-4). */
static void wrn_train(wrn_run *w) {
  dd_backend *be = w->be;
  dd_net *n = w->n;
  size_t nl = n->n_layers;
  for (int it = 0; it < w->warmup + w->iters; it++) {
    int timed = it >= w->warmup;
    double t0 = now();
    dd_net_clear_param_diffs(n);
    /* dd_net_forward and dd_net_backward, with a clock around each layer */
    double total = 0;
    for (size_t i = 0; i < nl; i++) {
      dd_layer *l = &n->layers[i];
      double a = now();
      l->ops->forward(l);
      if (timed) w->lf[i] += now() - a;
      for (int t = 0; t < l->nt; t++)
        if (l->loss_weight[t] != 0)
          total += be->ops->dot(be, l->top[t]->count, l->top[t]->data, l->top[t]->diff);
    }
    n->iter++;
    w->loss = total;
    for (size_t i = nl; i-- > 0;) {
      dd_layer *l = &n->layers[i];
      if (!n->graph->layers[i].need_backward || !l->ops->backward) continue;
      double a = now();
      l->ops->backward(l);
      if (timed) w->lb[i] += now() - a;
    }
    /* SGD as Caffe's solver: lr 0.01, momentum 0.9, weight decay 5e-4 */
    for (size_t i = 0; i < n->n_params; i++) {
      dd_net_param *np = &n->params[i];
      if (np->lr_mult == 0) continue;
      be->ops->regularize(be, np->t->count, np->t->diff, np->t->data, 5e-4f * np->decay_mult, 0);
      be->ops->sgd_update(be, np->t->count, np->t->data, np->t->diff, w->hist[i], 0.01f * np->lr_mult, 0.9f, 0);
    }
    w->step_s[it] = now() - t0;
  }
}

/* The mean time per step of each layer type, forward and backward, and their share. */
static void print_profile(const wrn_run *w, double med) {
  const dd_net *n = w->n;
  type_time types[64];
  int n_types = 0;
  double prof_total = 0;
  for (size_t i = 0; i < n->n_layers; i++) {
    const char *ty = n->layers[i].ops->type;
    int k = 0;
    while (k < n_types && strcmp(types[k].type, ty)) k++;
    if (k == n_types && n_types < 64) types[n_types++] = (type_time){ty, 0, 0, 0};
    if (k == n_types) continue;
    types[k].count++;
    types[k].fwd += w->lf[i] / w->iters;
    types[k].bwd += w->lb[i] / w->iters;
    prof_total += (w->lf[i] + w->lb[i]) / w->iters;
  }
  printf("  profile, mean ms per step (layers timed one by one; the rest of the step is the SGD\n"
         "  update and the loop):\n");
  printf("    %-16s %6s %9s %9s %9s %6s\n", "type", "layers", "forward", "backward", "total", "share");
  for (int k = 0; k < n_types; k++)
    printf("    %-16s %6d %9.2f %9.2f %9.2f %5.1f%%\n", types[k].type, types[k].count, types[k].fwd * 1e3,
           types[k].bwd * 1e3, (types[k].fwd + types[k].bwd) * 1e3,
           100 * (types[k].fwd + types[k].bwd) / prof_total);
  printf("    %-16s %6s %9s %9s %9.2f (step median %.2f)\n", "all layers", "", "", "", prof_total * 1e3, med * 1e3);
}

/* Each layer's ms per step, and the GFLOP/s over the GEMMs each pass runs. */
static void print_per_layer(const wrn_run *w) {
  const dd_net *n = w->n;
  printf("  per layer (ms per step; GFLOP/s over the GEMMs each pass runs):\n");
  for (size_t i = 0; i < n->n_layers; i++) {
    const dd_layer *l = &n->layers[i];
    double m = layer_macs(l), f = w->lf[i] / w->iters, b = w->lb[i] / w->iters;
    if (m > 0) {
      int nb = n->graph->layers[i].need_backward ? l->param_propagate_down[0] + l->propagate_down[0] : 0;
      char shape[64];
      printf("    %-22s %-12s fwd %7.2f (%5.1f GF/s) bwd %7.2f (%5.1f GF/s)  %s\n", l->name, l->ops->type,
             f * 1e3, 2 * m / f * 1e-9, b * 1e3, b > 0 ? 2 * m * nb / b * 1e-9 : 0.0,
             dd_shape_str(&l->bottom[0]->shape, shape, sizeof shape));
    } else {
      printf("    %-22s %-12s fwd %7.2f bwd %7.2f\n", l->name, l->ops->type, f * 1e3, b * 1e3);
    }
  }
}

/* Times the net at `path` (see the file's comment) and prints its report. 0 on success. */
static int bench_net(dd_backend *be, const char *path, int iters, int warmup, int per_layer) {
  wrn_run w = {.be = be, .path = path, .iters = iters, .warmup = warmup};
  if (wrn_setup(&w)) {
    wrn_free(&w);
    return 1;
  }
  wrn_train(&w);
  const dd_net *n = w.n;
  size_t nl = n->n_layers;
  /* FLOP counts */
  double macs_fwd = 0, macs_run = 0;
  for (size_t i = 0; i < nl; i++) {
    const dd_layer *l = &n->layers[i];
    double m = layer_macs(l);
    if (m == 0) continue;
    macs_fwd += m;
    macs_run += m;
    if (n->graph->layers[i].need_backward) {
      if (l->param_propagate_down[0]) macs_run += m;
      if (l->propagate_down[0]) macs_run += m;
    }
  }
  double *sorted = w.step_s + warmup;
  qsort(sorted, (size_t)iters, sizeof *sorted, cmp_double);
  double med = sorted[iters / 2];
  const Caffe__NetParameter *p = w.p;
  printf("\nnet %s (%s): batch %d, %zu layers, loss %.4f\n", p->name ? p->name : "?", path, w.batch, nl, w.loss);
  printf("  step (forward + backward + SGD): median %.1f ms over %d (min %.1f, max %.1f), %d warm-up\n",
         med * 1e3, iters, sorted[0] * 1e3, sorted[iters - 1] * 1e3, warmup);
  printf("  %.1f images/s\n", w.batch / med);
  printf("  conv + inner product: %.2f GFLOP/step run (fwd %.2f, 3 x fwd %.2f) -> %.1f GFLOP/s\n",
         2 * macs_run * 1e-9, 2 * macs_fwd * 1e-9, 6 * macs_fwd * 1e-9, 2 * macs_run / med * 1e-9);
  print_profile(&w, med);
  if (per_layer) print_per_layer(&w);
  printf("RESULT net=%s ms=%.2f img_s=%.2f gflops=%.2f\n", p->name ? p->name : path, med * 1e3, w.batch / med,
         2 * macs_run / med * 1e-9);
  wrn_free(&w);
  return 0;
}

int main(int argc, char **argv) {
  char err[512];
  /* First thing: OpenBLAS must get its kernels before it loads (core/cpu/cpu_blas.h). */
  if (dd_cpu_ensure_fast_blas(err, sizeof err)) {
    fprintf(stderr, "bench_wrn: %s\n", err);
    return 1;
  }
  int threads = 2, iters = 10, warmup = 2, per_layer = 0, gemm = 1, rc = 0, nets = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
      iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
      warmup = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--layers"))
      per_layer = 1;
    else if (!strcmp(argv[i], "--no-gemm"))
      gemm = 0;
    else if (argv[i][0] == '-') {
      fprintf(stderr,
              "usage: bench_wrn [--threads T] [--iters N] [--warmup W] [--layers] [--no-gemm] NET.prototxt...\n");
      return 2;
    }
  }
  if (threads < 1) threads = 1;
  if (iters < 1) iters = 1;
  if (warmup < 0) warmup = 0;
  dd_backend *be;
  if ((rc = dd_cpu_backend_create(&be, threads))) {
    fprintf(stderr, "bench_wrn: cannot create the CPU backend (%d)\n", rc);
    return 1;
  }
  printf("%s\n", dd_cpu_backend_describe(be));
  if (gemm) print_ceiling(threads);
  for (int i = 1; i < argc; i++) {
    if (argv[i][0] == '-') {
      if (strcmp(argv[i], "--layers") && strcmp(argv[i], "--no-gemm")) i++;
      continue;
    }
    rc |= bench_net(be, argv[i], iters, warmup, per_layer);
    nets++;
  }
  dd_cpu_backend_destroy(be);
  if (!nets && !gemm) fprintf(stderr, "bench_wrn: no net given (scripts/gen_wrn.py --mode bench writes one)\n");
  return rc || (!nets && !gemm);
}
