/* Data-parallel training through the CPU collective (core/comm/collective.h, core/train/solver.c's
 * dd_solver_set_comm), one thread per rank:
 *   - N ranks with batch B/N each end where one rank with batch B ends (within 1e-5 relative:
 *     the sums are taken in another order), for a net without BatchNorm and for one whose
 *     BatchNorm uses stored statistics; and every rank holds the same bits as rank 0;
 *   - the replica check at snapshots passes, and rank 0 alone writes the files;
 *   - a rank that fails mid-training (its data source fails) fails every rank, with the reason,
 *     well within the group's timeout: no hang;
 *   - small buckets give several all-reduces per step, posted while backward still runs.
 * Inputs are a deterministic function of the global sample position, so every split of the batch
 * sees the same samples. */
#define _DEFAULT_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/backend.h"
#include "comm/collective.h"
#include "base/dd_error.h"
#include "net/net.h"
#include "base/rng.h"
#include "train/solver.h"
#include "test.h"
#include "format/textformat.h"

#define C 3
#define HW 8
#define CLASSES 5
#define GLOBAL_B 8
#define STEPS 12

static char tmp[128];

static const char *net_plain =
    "layer { name: 'in' type: 'Input' top: 'data' top: 'label' input_param { shape { dim: %d dim: 3 dim: 8 dim: 8 } shape { dim: %d } } }\n"
    "layer { name: 'c1' type: 'Convolution' bottom: 'data' top: 'c1' convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: 'msra' } } }\n"
    "layer { name: 'r1' type: 'ReLU' bottom: 'c1' top: 'c1' }\n"
    "%s"
    "layer { name: 'c2' type: 'Convolution' bottom: 'c1' top: 'c2' convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: 'msra' } } }\n"
    "layer { name: 'r2' type: 'ReLU' bottom: 'c2' top: 'c2' }\n"
    "layer { name: 'pool' type: 'Pooling' bottom: 'c2' top: 'pool' pooling_param { pool: AVE global_pooling: true } }\n"
    "layer { name: 'fc' type: 'InnerProduct' bottom: 'pool' top: 'fc' inner_product_param { num_output: 5 weight_filler { type: 'msra' } } }\n"
    "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n";

static const char *bn_block =
    "layer { name: 'bn' type: 'BatchNorm' bottom: 'c1' top: 'c1' batch_norm_param { use_global_stats: true } }\n"
    "layer { name: 'sc' type: 'Scale' bottom: 'c1' top: 'c1' scale_param { bias_term: true } }\n";

static const char *solver_text =
    "base_lr: 0.05 momentum: 0.9 weight_decay: 0.0005 lr_policy: 'fixed' max_iter: 100 display: 0 snapshot: 0 "
    "random_seed: 7 snapshot_prefix: '%s/%s'";

static Caffe__NetParameter *make_net(int batch, int with_bn) {
  char text[4096];
  snprintf(text, sizeof text, net_plain, batch, batch, with_bn ? bn_block : "");
  ProtobufCMessage *m = NULL;
  char err[1024];
  if (dd_text_parse(&m, &caffe__net_parameter__descriptor, text, strlen(text), "net", err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return NULL;
  }
  return (Caffe__NetParameter *)m;
}

static Caffe__SolverParameter *make_solver(const char *prefix) {
  char text[1024];
  snprintf(text, sizeof text, solver_text, tmp, prefix);
  ProtobufCMessage *m = NULL;
  char err[1024];
  if (dd_text_parse(&m, &caffe__solver_parameter__descriptor, text, strlen(text), "solver", err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return NULL;
  }
  return (Caffe__SolverParameter *)m;
}

/* Sample `pos` of the stream: pixels and label from a hash of the position. */
static void sample(int64_t pos, float *x, float *label) {
  for (int i = 0; i < C * HW * HW; i++) x[i] = (float)(dd_hash64((uint64_t)pos, (uint64_t)i) >> 40) / 16777216.0f - 0.5f;
  *label = (float)(dd_hash64((uint64_t)pos, 0xabcdefu) % CLASSES);
}

typedef struct {
  int rank, size, local_b;
  int steps_done;
  int fail_at; /* this rank's data source fails at this step (-1: never) */
} feeder;

static int feed(void *ctx, dd_net *n, Caffe__Phase ph, double *wait) {
  feeder *f = ctx;
  (void)ph;
  *wait = 0;
  if (f->steps_done == f->fail_at) return DD_EIO;
  float x[GLOBAL_B * C * HW * HW], lab[GLOBAL_B];
  for (int j = 0; j < f->local_b; j++)
    sample((int64_t)f->steps_done * GLOBAL_B + f->rank * f->local_b + j, x + (size_t)j * C * HW * HW, lab + j);
  dd_tensor_set_data(dd_net_blob(n, "data"), x);
  dd_tensor_set_data(dd_net_blob(n, "label"), lab);
  f->steps_done++;
  return 0;
}

/* Stored BatchNorm statistics that keep activations sane: mean 0, variance 1 (factor 1). */
static void set_bn_stats(dd_net *n) {
  int li = dd_net_layer_index(n, "bn");
  if (li < 0) return;
  dd_layer *l = &n->layers[li];
  float *v = calloc(8, sizeof *v);
  dd_tensor_set_data(l->params[0], v);
  for (int i = 0; i < 8; i++) v[i] = 1;
  dd_tensor_set_data(l->params[1], v);
  dd_tensor_set_data(l->params[2], v);
  free(v);
}

typedef struct {
  int rank, size, with_bn, fail_rank, fail_at;
  int64_t bucket_floats;
  dd_comm *comm;
  dd_backend *be;
  float *params; /* all parameters after training, concatenated */
  int64_t n_params;
  int rc;
  char err[1024];
  int n_buckets;
  double post[64], start[64], end[64];
  int snapshot;
} rank_job;

static void *rank_main(void *arg) {
  rank_job *j = arg;
  int local_b = GLOBAL_B / j->size;
  Caffe__NetParameter *np = make_net(local_b, j->with_bn);
  char prefix[64];
  snprintf(prefix, sizeof prefix, "dp%d_bn%d", j->size, j->with_bn);
  Caffe__SolverParameter *sp = make_solver(prefix);
  feeder f = {.rank = j->rank, .size = j->size, .local_b = local_b, .fail_at = j->rank == j->fail_rank ? j->fail_at : -1};
  dd_solver_hooks hooks = {.ctx = &f, .before_forward = feed};
  dd_solver *s = NULL;
  j->rc = -1;
  if (!np || !sp) goto out;
  if ((j->rc = dd_solver_create(&s, sp, np, j->be, 11, &hooks, j->err, sizeof j->err))) goto out;
  set_bn_stats(dd_solver_net(s));
  if (j->comm && (j->rc = dd_solver_set_comm(s, j->comm, j->bucket_floats, j->err, sizeof j->err))) goto out;
  j->rc = dd_solver_step(s, STEPS, j->err, sizeof j->err);
  if (!j->rc && j->snapshot) j->rc = dd_solver_snapshot(s, j->err, sizeof j->err);
  if (!j->rc) {
    dd_net *n = dd_solver_net(s);
    j->n_params = 0;
    for (size_t p = 0; p < n->n_params; p++) j->n_params += n->params[p].t->count;
    j->params = malloc((size_t)j->n_params * sizeof(float));
    int64_t off = 0;
    for (size_t p = 0; p < n->n_params; p++) {
      dd_tensor_get_data(n->params[p].t, j->params + off);
      off += n->params[p].t->count;
    }
    j->n_buckets = dd_solver_timeline(s, -1, NULL, NULL, NULL, NULL);
    for (int b = 0; b < j->n_buckets && b < 64; b++) dd_solver_timeline(s, b, NULL, &j->post[b], &j->start[b], &j->end[b]);
  }
out:
  dd_solver_destroy(s);
  if (np) caffe__net_parameter__free_unpacked(np, NULL);
  if (sp) caffe__solver_parameter__free_unpacked(sp, NULL);
  return NULL;
}

/* Runs `size` ranks (size 1: no collective at all, the reference). */
static void run_ranks(rank_job *jobs, int size, int with_bn, int64_t bucket_floats, int fail_rank, int fail_at, int snapshot,
                      int timeout_ms) {
  dd_comm *comms[8] = {0};
  if (size > 1 && dd_cpu_comm_group_create(comms, size, timeout_ms)) {
    fprintf(stderr, "cannot create the CPU collective\n");
    return;
  }
  pthread_t th[8];
  for (int r = 0; r < size; r++) {
    memset(&jobs[r], 0, sizeof jobs[r]);
    jobs[r] = (rank_job){.rank = r, .size = size, .with_bn = with_bn, .fail_rank = fail_rank, .fail_at = fail_at,
                         .bucket_floats = bucket_floats, .comm = size > 1 ? comms[r] : NULL, .snapshot = snapshot};
    dd_cpu_backend_create(&jobs[r].be, 1);
  }
  for (int r = 0; r < size; r++) pthread_create(&th[r], NULL, rank_main, &jobs[r]);
  for (int r = 0; r < size; r++) pthread_join(th[r], NULL);
  for (int r = 0; r < size; r++) dd_cpu_backend_destroy(jobs[r].be);
  if (size > 1) dd_cpu_comm_group_destroy(comms, size);
}

static double rel_diff(const float *a, const float *b, int64_t n) {
  double scale = 1e-6, d = 0;
  for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(a[i]));
  for (int64_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
  return d / scale;
}

static void equivalence(int with_bn) {
  rank_job ref[1], dp[8];
  run_ranks(ref, 1, with_bn, 0, -1, -1, 0, 5000);
  REQUIRE(ref[0].rc == 0);
  for (int size = 2; size <= 4; size *= 2) {
    run_ranks(dp, size, with_bn, 0, -1, -1, 0, 5000);
    for (int r = 0; r < size; r++) CHECKF(dp[r].rc == 0, "rank %d of %d: %s", r, size, dp[r].err);
    if (dp[0].rc) continue;
    for (int r = 1; r < size; r++)
      CHECKF(dp[r].params && memcmp(dp[r].params, dp[0].params, (size_t)dp[0].n_params * sizeof(float)) == 0,
             "rank %d of %d holds other parameters than rank 0", r, size);
    double d = rel_diff(ref[0].params, dp[0].params, ref[0].n_params);
    printf("     %s, %d ranks x batch %d vs 1 x %d after %d steps: largest relative difference %.3g\n",
           with_bn ? "BatchNorm (stored statistics)" : "no BatchNorm", size, GLOBAL_B / size, GLOBAL_B, STEPS, d);
    CHECKF(d <= 1e-5, "%d ranks differ from one rank by %.3g", size, d);
    for (int r = 0; r < size; r++) free(dp[r].params);
  }
  free(ref[0].params);
}

static void test_equivalence_plain(void) { equivalence(0); }
static void test_equivalence_batchnorm_global(void) { equivalence(1); }

static void test_snapshot_rank0_only(void) {
  rank_job dp[2];
  run_ranks(dp, 2, 0, 0, -1, -1, 1, 5000);
  for (int r = 0; r < 2; r++) CHECKF(dp[r].rc == 0, "rank %d: %s", r, dp[r].err);
  char p[256];
  snprintf(p, sizeof p, "%s/dp2_bn0_iter_%d.caffemodel", tmp, STEPS);
  CHECKF(access(p, F_OK) == 0, "%s missing", p);
  for (int r = 0; r < 2; r++) free(dp[r].params);
}

static void test_failed_rank_fails_all(void) {
  rank_job dp[3];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  /* a long timeout: the abort, not the timeout, must end the wait */
  run_ranks(dp, 3, 0, 0, 2, 5, 0, 20000);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double dt = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
  printf("     rank 2's data fails at step 5: every rank returned after %.2f s\n", dt);
  CHECKF(dp[2].rc != 0 && test__contains(dp[2].err, "data source failed"), "rank 2: %d %s", dp[2].rc, dp[2].err);
  for (int r = 0; r < 2; r++) {
    CHECKF(dp[r].rc != 0, "rank %d went on after rank 2 failed", r);
    CHECKF(test__contains(dp[r].err, "rank 2"), "rank %d's error does not name rank 2: %s", r, dp[r].err);
  }
  CHECKF(dt < 10, "the ranks took %.1f s to fail (the group's timeout is 20 s: the abort did not wake them)", dt);
  for (int r = 0; r < 3; r++) free(dp[r].params);
}

static void test_buckets_overlap_backward(void) {
  rank_job dp[2];
  run_ranks(dp, 2, 0, 1, -1, -1, 0, 5000); /* 1 float: one parameter per bucket */
  for (int r = 0; r < 2; r++) CHECKF(dp[r].rc == 0, "rank %d: %s", r, dp[r].err);
  CHECKF(dp[0].n_buckets >= 3, "%d buckets", dp[0].n_buckets);
  printf("     rank 0's last step, %d buckets (ms from the start of backward): posted / summed from / to\n", dp[0].n_buckets);
  for (int b = 0; b < dp[0].n_buckets && b < 64; b++) {
    printf("       bucket %d: %.3f / %.3f - %.3f\n", b, 1e3 * dp[0].post[b], 1e3 * dp[0].start[b], 1e3 * dp[0].end[b]);
    if (b) CHECK(dp[0].post[b] >= dp[0].post[b - 1]); /* handed over in order as backward went down */
    CHECK(dp[0].start[b] >= dp[0].post[b] && dp[0].end[b] >= dp[0].start[b]);
  }
  /* the first bucket is handed over before backward has finished the net */
  CHECK(dp[0].post[0] < dp[0].post[dp[0].n_buckets - 1]);
  /* buckets make no difference to the result */
  rank_job one[2];
  run_ranks(one, 2, 0, 0, -1, -1, 0, 5000);
  CHECK(one[0].params && dp[0].params && memcmp(one[0].params, dp[0].params, (size_t)dp[0].n_params * sizeof(float)) == 0);
  for (int r = 0; r < 2; r++) free(dp[r].params), free(one[r].params);
}

int main(void) {
  if (test_scratch_dir(tmp, sizeof tmp, "dp")) return 1;
  RUN(test_equivalence_plain);
  RUN(test_equivalence_batchnorm_global);
  RUN(test_snapshot_rank0_only);
  RUN(test_failed_rank_fails_all);
  RUN(test_buckets_overlap_backward);
  test_scratch_remove(tmp);
  return test_summary();
}
