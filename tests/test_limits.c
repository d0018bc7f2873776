/* Limits and divergence in the core (issue 16, defects 7, 8, 10):
 * 1. shape arithmetic never overflows: a Convolution with pad 100000000 is refused when the net
 *    is created, naming the layer, the blob and the size (the sanitizer build saw a signed
 *    overflow in dd_shape_count_range; the net was refused only when its allocation failed);
 *    counts saturate; a job's memory budget refuses a net past it before allocating;
 * 2. Accuracy never counts a position with a NaN score as correct (Caffe does);
 * 3. the solver refuses max_iter < 0 and a base_lr that is NaN, infinite or negative, and a run
 *    whose loss turns NaN ends "diverged at iteration N";
 * 4. the lints of a 200000-layer net are not quadratic (the duplicate-name lint sorts), and they
 *    say where distilld's Accuracy differs from Caffe's. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

#include "base/dd_error.h"
#include "base/backend.h"
#include "net/net.h"
#include "net/net_check.h"
#include "net/shape.h"
#include "train/solver.h"
#include "train/solver_check.h"
#include "test.h"
#include "test_nets.h"

static dd_backend *be;

#define NETP(t) ((Caffe__NetParameter *)test_parse(&caffe__net_parameter__descriptor, (t)))
#define SOLVERP(t) ((Caffe__SolverParameter *)test_parse(&caffe__solver_parameter__descriptor, (t)))

static const char *pad_net =
    "layer { name: 'in' type: 'Input' top: 'data' input_param { shape { dim: 64 dim: 3 dim: 28 dim: 28 } } }\n"
    "layer { name: 'conv1' type: 'Convolution' bottom: 'data' top: 'conv1'"
    " convolution_param { num_output: 16 kernel_size: 3 pad: 100000000 } }\n"
    "layer { name: 'fc' type: 'InnerProduct' bottom: 'conv1' top: 'fc' inner_product_param { num_output: 10 } }\n";

static void test_shape_counts_saturate(void) {
  dd_shape s = dd_shape_4(64, 16, 200000027, 200000027);
  CHECK(dd_shape_count(&s) == DD_COUNT_OVERFLOW);
  CHECK(dd_shape_count_range(&s, 1, 4) == 16 * (int64_t)200000027 * 200000027);
  dd_shape huge = dd_shape_4(1 << 30, 1 << 30, 1 << 30, 1);
  CHECK(dd_shape_count_range(&huge, 0, 3) == DD_COUNT_OVERFLOW);
  CHECK(dd_shape_count_range(&s, 2, 3) == 200000027);
  CHECK(dd_count_mul(DD_COUNT_OVERFLOW, 2) == DD_COUNT_OVERFLOW);
  CHECK(dd_count_mul(-1, 2) == -1);
  int64_t c = 0;
  CHECK(dd_shape_size_check(&s, DD_SHAPE_MAX_COUNT, &c) != 0 && c == DD_COUNT_OVERFLOW);
  dd_shape ok = dd_shape_4(2, 3, 4, 5);
  CHECK(dd_shape_size_check(&ok, DD_SHAPE_MAX_COUNT, &c) == 0 && c == 120);
  dd_shape big_dim = dd_shape_4(1, 1, 1, (int64_t)1 << 40);
  CHECK(dd_shape_size_check(&big_dim, INT64_MAX, NULL) != 0);
}

static void test_pad_net_refused(void) {
  Caffe__NetParameter *np = NETP(pad_net);
  REQUIRE(np);
  char err[1024] = "";
  dd_net *n = NULL;
  int r = dd_net_create(&n, np, CAFFE__PHASE__TRAIN, be, 1, NULL, err, sizeof err);
  CHECK(r == DD_ESHAPE);
  CHECK(n == NULL);
  CHECK_CONTAINS(err, "layer \"conv1\"");
  CHECK_CONTAINS(err, "top \"conv1\"");
  CHECK_CONTAINS(err, "64x16x200000026x200000026");
  CHECK_CONTAINS(err, "element count overflows");
  caffe__net_parameter__free_unpacked(np, NULL);
  /* a padded output past INT_MAX on one axis: the layer's shape logic refuses it */
  np = NETP("layer { name: 'in' type: 'Input' top: 'data' input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }\n"
            "layer { name: 'c' type: 'Convolution' bottom: 'data' top: 'c'"
            " convolution_param { num_output: 1 kernel_size: 1 pad: 4000000000 } }\n");
  REQUIRE(np);
  CHECK(dd_net_create(&n, np, CAFFE__PHASE__TRAIN, be, 1, NULL, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "output size");
  caffe__net_parameter__free_unpacked(np, NULL);
  /* a kernel extent that overflows int64 */
  np = NETP("layer { name: 'in' type: 'Input' top: 'data' input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }\n"
            "layer { name: 'c' type: 'Convolution' bottom: 'data' top: 'c'"
            " convolution_param { num_output: 1 kernel_size: 4000000000 dilation: 4000000000 } }\n");
  REQUIRE(np);
  CHECK(dd_net_create(&n, np, CAFFE__PHASE__TRAIN, be, 1, NULL, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "overflows");
  caffe__net_parameter__free_unpacked(np, NULL);
  /* an Input dim past INT_MAX */
  np = NETP("layer { name: 'in' type: 'Input' top: 'data' input_param { shape { dim: 1 dim: 9000000000000000000 } } }\n");
  REQUIRE(np);
  CHECK(dd_net_create(&n, np, CAFFE__PHASE__TRAIN, be, 1, NULL, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "dims must be 0 to 2147483647");
  caffe__net_parameter__free_unpacked(np, NULL);
}

static const char *small_net =
    "layer { name: 'in' type: 'Input' top: 'data' top: 'label' input_param { shape { dim: 4 dim: 6 } shape { dim: 4 } } }\n"
    "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc'"
    "  inner_product_param { num_output: 3 weight_filler { type: 'gaussian' std: 0.5 } } }\n"
    "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n"
    "layer { name: 'acc' type: 'Accuracy' bottom: 'fc' bottom: 'label' top: 'acc' }\n";

static void test_memory_budget(void) {
  Caffe__NetParameter *np = NETP(small_net);
  REQUIRE(np);
  char err[1024] = "";
  dd_net *n = NULL;
  /* blobs: data 24, label 4, fc 12, fc splits 2 x 12, loss 1, acc 1; params 18 + 3: data and diff */
  dd_mem_budget tight = {.max_bytes = 100};
  CHECK(dd_net_create_budget(&n, np, CAFFE__PHASE__TRAIN, be, 1, &tight, NULL, err, sizeof err) == DD_ENOMEM);
  CHECK(n == NULL);
  CHECK_CONTAINS(err, "more than the job's memory limit allows");
  CHECK(tight.used_bytes == 0);
  dd_mem_budget roomy = {.max_bytes = 1 << 20};
  REQUIRE_OK(dd_net_create_budget(&n, np, CAFFE__PHASE__TRAIN, be, 1, &roomy, NULL, err, sizeof err), err);
  CHECK(roomy.used_bytes > 0 && roomy.used_bytes < 2000);
  int64_t one = roomy.used_bytes;
  dd_net_destroy(n);
  /* the budget is shared: a second net charges it again */
  roomy = (dd_mem_budget){.max_bytes = one + one / 2}; /* charges are not given back: start afresh */
  dd_net *n2 = NULL;
  REQUIRE(dd_net_create_budget(&n, np, CAFFE__PHASE__TRAIN, be, 1, &roomy, NULL, err, sizeof err) == 0);
  CHECK(dd_net_create_budget(&n2, np, CAFFE__PHASE__TRAIN, be, 1, &roomy, NULL, err, sizeof err) == DD_ENOMEM);
  dd_net_destroy(n);
  dd_net_destroy(n2);
  caffe__net_parameter__free_unpacked(np, NULL);
}

/* 3 positions x 4 classes: the first has a NaN in a wrong class, the second NaN everywhere, the
 * third is clean and right. Only the third is correct (Caffe: all three). */
static void test_accuracy_nan_rows(void) {
  float x[12] = {5, 1, NAN, 0, NAN, NAN, NAN, NAN, 0, 0, 3, 1};
  float label[3] = {0, 1, 2};
  float *dx = be->ops->alloc(be, sizeof x), *dl = be->ops->alloc(be, sizeof label);
  REQUIRE(dx && dl);
  be->ops->upload(be, dx, x, sizeof x);
  be->ops->upload(be, dl, label, sizeof label);
  int64_t correct = -1, valid = -1;
  float pc_ok[4] = {0}, pc_all[4] = {0};
  be->ops->accuracy(be, 3, 4, 1, dx, dl, 1, 0, 0, &correct, &valid, pc_ok, pc_all);
  CHECK(valid == 3);
  CHECKF(correct == 1, "%lld correct", (long long)correct);
  CHECK(pc_ok[0] == 0 && pc_ok[1] == 0 && pc_ok[2] == 1);
  be->ops->accuracy(be, 3, 4, 1, dx, dl, 4, 0, 0, &correct, &valid, NULL, NULL); /* top 4: still no NaN row */
  CHECK(correct == 1);
  be->ops->free(be, dx);
  be->ops->free(be, dl);
}

static void test_solver_values_refused(void) {
  Caffe__NetParameter *np = NETP(small_net);
  REQUIRE(np);
  static const struct {
    const char *text, *want;
  } cases[] = {
      {"base_lr: 0.1 lr_policy: 'fixed' max_iter: -5", "max_iter must be >= 0, got -5"},
      {"base_lr: nan lr_policy: 'fixed' max_iter: 5", "base_lr must be a finite number >= 0, got nan"},
      {"base_lr: -inf lr_policy: 'fixed' max_iter: 5", "base_lr must be a finite number >= 0, got -inf"},
      {"base_lr: -1 lr_policy: 'fixed' max_iter: 5", "base_lr must be a finite number >= 0, got -1"},
      {"base_lr: 0.1 weight_decay: inf lr_policy: 'fixed' max_iter: 5", "weight_decay must be a finite number"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    Caffe__SolverParameter *sp = SOLVERP(cases[i].text);
    REQUIRE(sp);
    char err[1024] = "";
    dd_solver *s = NULL;
    CHECK(dd_solver_create(&s, sp, np, be, 1, NULL, err, sizeof err) == DD_EINVAL);
    CHECK(s == NULL);
    CHECK_CONTAINS(err, cases[i].want);
    dd_diags d = {0};
    dd_solver_check(sp, &d); /* `distilld check` calls them errors */
    CHECK(d.n_errors == 1);
    dd_diags_free(&d);
    caffe__solver_parameter__free_unpacked(sp, NULL);
  }
  caffe__net_parameter__free_unpacked(np, NULL);
}

static int feed_nan(void *ctx, dd_net *n, Caffe__Phase ph, double *wait) {
  int *calls = ctx;
  (void)ph;
  *wait = 0;
  float x[24], lab[4] = {0, 1, 2, 0};
  for (int i = 0; i < 24; i++) x[i] = *calls >= 3 ? NAN : (float)sin(0.3 * i);
  (*calls)++;
  dd_tensor_set_data(dd_net_blob(n, "data"), x);
  dd_tensor_set_data(dd_net_blob(n, "label"), lab);
  return 0;
}

/* NaN inputs from iteration 3 make the loss NaN (SoftmaxWithLoss clamps it to 87.34 and the
 * accuracy was 1): the run ends there, named, with the outputs. */
static void test_nan_run_diverges(void) {
  Caffe__NetParameter *np = NETP(small_net);
  Caffe__SolverParameter *sp = SOLVERP("base_lr: 0.1 lr_policy: 'fixed' max_iter: 10 display: 1");
  REQUIRE(np && sp);
  int calls = 0;
  dd_solver_hooks hooks = {.ctx = &calls, .before_forward = feed_nan};
  char err[1024] = "";
  dd_solver *s = NULL;
  REQUIRE(dd_solver_create(&s, sp, np, be, 1, &hooks, err, sizeof err) == 0);
  int r = dd_solver_solve(s, err, sizeof err);
  CHECK(r == DD_EINVAL);
  CHECK_CONTAINS(err, "diverged at iteration 3");
  CHECK_CONTAINS(err, "gradient norm nan");
  CHECK_CONTAINS(err, "acc 0");
  CHECK(dd_solver_iter(s) == 3);
  dd_solver_destroy(s);
  caffe__solver_parameter__free_unpacked(sp, NULL);
  caffe__net_parameter__free_unpacked(np, NULL);
}

/* The lints of `distilld check` on a 200000-layer net: the duplicate-name lint finds the one
 * planted namesake, and the whole check stays far from quadratic (it compared every name with every
 * earlier one: 2e10 comparisons here, minutes; sorted, well under a second on this machine). The
 * bound is loose (60 s) so a loaded machine cannot fail it, while the old code could not pass it. */
static void test_check_big_net_linear(void) {
  const int n = 200000;
  size_t cap = (size_t)n * 64 + 256, used = 0;
  char *text = malloc(cap);
  REQUIRE(text);
  used += (size_t)snprintf(text + used, cap - used,
                           "layer { name: 'in' type: 'Input' top: 'x' input_param { shape { dim: 1 dim: 1 } } }\n");
  for (int i = 0; i < n; i++)
    used += (size_t)snprintf(text + used, cap - used, "layer { name: 'l%d' type: 'ReLU' bottom: 'x' top: 'x' }\n",
                             i == n - 1 ? 17 : i);
  Caffe__NetParameter *net = test_parse_net(text);
  free(text);
  REQUIRE(net);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  dd_diags diags = {0};
  dd_net_graph *g = NULL;
  int r = dd_net_check(&g, net, CAFFE__PHASE__TRAIN, &diags);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
  CHECK(r == 0);
  int dups = 0;
  for (size_t k = 0; k < diags.n; k++)
    if (diags.v[k].msg && strstr(diags.v[k].msg, "are named \"l17\" (layers 18 and 200000)")) dups++;
  CHECKF(dups == 1, "%d duplicate-name warnings for l17", dups);
  printf("     dd_net_check of %d layers: %.2f s\n", n, s);
  CHECKF(s < 60, "dd_net_check took %.1f s", s);
  dd_net_graph_free(g);
  dd_diags_free(&diags);
  caffe__net_parameter__free_unpacked(net, NULL);
}

/* `distilld check` says where distilld's Accuracy differs from Caffe's (a NaN row counts wrong). */
static void test_check_mentions_accuracy_nan(void) {
  Caffe__NetParameter *net = test_parse_net(
      "layer { name: 'in' type: 'Input' top: 'x' top: 'label' input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }\n"
      "layer { name: 'acc' type: 'Accuracy' bottom: 'x' bottom: 'label' top: 'acc' }\n");
  REQUIRE(net);
  dd_diags diags = {0};
  CHECK(dd_net_check(NULL, net, CAFFE__PHASE__TEST, &diags) == 0);
  int found = 0;
  for (size_t k = 0; k < diags.n; k++)
    if (diags.v[k].level == DD_DIAG_NOTE && diags.v[k].where && !strcmp(diags.v[k].where, "acc") &&
        strstr(diags.v[k].msg, "NaN counts as wrong") && strstr(diags.v[k].msg, "Caffe counts it as right"))
      found++;
  CHECKF(found == 1, "%d notes about Accuracy and NaN", found);
  dd_diags_free(&diags);
  caffe__net_parameter__free_unpacked(net, NULL);
}

int main(void) {
  if (dd_cpu_backend_create(&be, 2)) return 1;
  RUN(test_shape_counts_saturate);
  RUN(test_pad_net_refused);
  RUN(test_memory_budget);
  RUN(test_accuracy_nan_rows);
  RUN(test_solver_values_refused);
  RUN(test_nan_run_diverges);
  RUN(test_check_big_net_linear);
  RUN(test_check_mentions_accuracy_nan);
  dd_cpu_backend_destroy(be);
  return test_summary();
}
