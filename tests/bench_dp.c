/* bench_dp: data-parallel training on CPU ranks (core/comm/collective_cpu.c,
 * core/train/solver.c), for the all-reduce timeline of docs/performance.md. Not a ctest test.
 *
 *   bench_dp [--ranks N] [--iters K] [--bucket-mb M] [--threads T] NET.prototxt
 *
 * NET has an Input layer with tops "data" and "label" and the per-rank batch (scripts/gen_wrn.py
 * --mode bench --batch B/N). Each rank (a thread with a CPU backend of T workers) trains K steps on
 * synthetic data; then rank 0's last step is printed bucket by bucket: how many parameters, when
 * backward made the bucket final, when its all-reduce started and ended (ms from the start of
 * backward), and the step's backward length, so the overlap of communication with backward shows.
 * A last line "RESULT ranks=... step_ms=... backward_ms=... allreduce_ms=... overlap_ms=..." is for
 * scripts. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "format/caffe_io.h"
#include "comm/collective.h"
#include "net/net.h"
#include "train/solver.h"
#include "test_bench.h"

static int iters = 5, threads = 1;
static int64_t bucket_floats = 0;
static Caffe__NetParameter *netp;
static Caffe__SolverParameter *solverp;

typedef struct {
  dd_comm *comm;
  int rc;
  char err[1024];
  double step_s;
  int n_buckets;
  int count[256];
  double post[256], start[256], end[256];
} rank_t;

static int feed(void *ctx, dd_net *n, Caffe__Phase ph, double *wait) {
  (void)ctx, (void)ph;
  *wait = 0;
  dd_tensor *d = dd_net_blob(n, "data"), *l = dd_net_blob(n, "label");
  float *x = malloc((size_t)d->count * sizeof *x), *y = malloc((size_t)l->count * sizeof *y);
  for (int64_t i = 0; i < d->count; i++) x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
  for (int64_t i = 0; i < l->count; i++) y[i] = (float)(i % 10);
  dd_tensor_set_data(d, x);
  dd_tensor_set_data(l, y);
  free(x);
  free(y);
  return 0;
}

static void *rank_main(void *arg) {
  rank_t *r = arg;
  dd_backend *be = NULL;
  dd_solver *s = NULL;
  dd_solver_hooks hooks = {.before_forward = feed};
  if ((r->rc = dd_cpu_backend_create(&be, threads))) return NULL;
  if ((r->rc = dd_solver_create(&s, solverp, netp, be, 1, &hooks, r->err, sizeof r->err))) goto out;
  if (r->comm && (r->rc = dd_solver_set_comm(s, r->comm, bucket_floats, r->err, sizeof r->err))) goto out;
  if ((r->rc = dd_solver_step(s, 1, r->err, sizeof r->err))) goto out; /* warm-up */
  double t0 = now();
  if ((r->rc = dd_solver_step(s, iters, r->err, sizeof r->err))) goto out;
  r->step_s = (now() - t0) / iters;
  r->n_buckets = dd_solver_timeline(s, -1, NULL, NULL, NULL, NULL);
  for (int b = 0; b < r->n_buckets && b < 256; b++)
    dd_solver_timeline(s, b, &r->count[b], &r->post[b], &r->start[b], &r->end[b]);
out:
  dd_solver_destroy(s);
  dd_cpu_backend_destroy(be);
  return NULL;
}

int main(int argc, char **argv) {
  int ranks = 2;
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--ranks") && i + 1 < argc) ranks = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--bucket-mb") && i + 1 < argc) bucket_floats = (int64_t)(atof(argv[++i]) * 262144.0);
    else path = argv[i];
  }
  if (!path || ranks < 1 || ranks > 16) {
    fprintf(stderr, "usage: bench_dp [--ranks N] [--iters K] [--bucket-mb M] [--threads T] NET.prototxt\n");
    return 2;
  }
  char err[2048];
  if (dd_net_read_text(&netp, path, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  solverp = malloc(sizeof *solverp);
  caffe__solver_parameter__init(solverp);
  solverp->base_lr = 0.01f;
  solverp->momentum = 0.9f;
  solverp->weight_decay = 0.0005f;
  solverp->lr_policy = "fixed";
  solverp->max_iter = 1000000;
  dd_comm *comms[16] = {0};
  if (ranks > 1 && dd_cpu_comm_group_create(comms, ranks, 600000)) return 1;
  rank_t *r = calloc((size_t)ranks, sizeof *r);
  pthread_t th[16];
  for (int k = 0; k < ranks; k++) {
    r[k].comm = ranks > 1 ? comms[k] : NULL;
    pthread_create(&th[k], NULL, rank_main, &r[k]);
  }
  for (int k = 0; k < ranks; k++) pthread_join(th[k], NULL);
  for (int k = 0; k < ranks; k++)
    if (r[k].rc) {
      fprintf(stderr, "rank %d: %s\n", k, r[k].err);
      return 1;
    }
  printf("%s: %d rank(s), %d thread(s) each, step %.1f ms (mean of %d)\n", path, ranks, threads, 1e3 * r[0].step_s, iters);
  double bw = 0, ar = 0, overlap = 0;
  if (r[0].n_buckets) {
    bw = r[0].post[r[0].n_buckets - 1]; /* the last bucket is posted when backward ends */
    printf("rank 0's last step: backward %.2f ms; per bucket (ms from the start of backward):\n", 1e3 * bw);
    printf("  bucket  params  final at  all-reduce from  to\n");
    for (int b = 0; b < r[0].n_buckets; b++) {
      printf("  %6d  %6d  %8.2f  %15.2f  %6.2f\n", b, r[0].count[b], 1e3 * r[0].post[b], 1e3 * r[0].start[b], 1e3 * r[0].end[b]);
      ar += r[0].end[b] - r[0].start[b];
      double a = r[0].start[b], e = r[0].end[b] < bw ? r[0].end[b] : bw;
      if (e > a) overlap += e - a;
    }
  }
  printf("RESULT ranks=%d step_ms=%.2f backward_ms=%.2f allreduce_ms=%.2f overlap_ms=%.2f buckets=%d\n", ranks, 1e3 * r[0].step_s,
         1e3 * bw, 1e3 * ar, 1e3 * overlap, r[0].n_buckets);
  if (ranks > 1) dd_cpu_comm_group_destroy(comms, ranks);
  free(r);
  solverp->lr_policy = NULL;
  free(solverp);
  caffe__net_parameter__free_unpacked(netp, NULL);
  return 0;
}
