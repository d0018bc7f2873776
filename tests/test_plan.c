/* The execution plan (core/net/plan.h): which runs of layers become fused steps, and the fused
 * steps against the FP32 unfused reference (every layer its own step), on the CPU backend.
 *
 * Bounds, relative to the largest magnitude of the reference array:
 *   forward outputs                                   1e-6 (the same formula, rounded alike)
 *   BatchNorm moving sums and factor                  identical (the same sums in the same order)
 *   gradients (inputs, parameters below and above)    2e-5 (sums of the same terms in another order)
 *   20 SGD steps of a small pre-activation ResNet: every loss within 1e-4 relative of the
 *   reference's, and the final weights within 1e-3
 * and the fused backward passes the finite-difference gradient check on its own. */
#define _POSIX_C_SOURCE 200809L
#include "test_layers.h"

#include "cpu/cpu_dnnl.h"

/* A conv (or, conv 0, an Input of its shape), then BatchNorm -> Scale [-> ReLU], then an
 * InnerProduct: `bn` is the batch_norm_param body, `bias` the Scale's bias_term, `relu` the ReLU
 * layer (or ""). */
static char *chain_net_conv(const char *bn, int bias, const char *relu, int conv) {
  static char buf[4096];
  snprintf(buf, sizeof buf,
           "name: \"chain\"\n" FB "%s%s"
           "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"c\" top: \"b\" batch_norm_param { %s } }\n"
           "layer { name: \"sc\" type: \"Scale\" bottom: \"b\" top: \"b\" scale_param { bias_term: %s\n"
           "  filler { type: \"uniform\" min: 0.5 max: 1.5 } bias_filler { type: \"uniform\" min: -0.5 max: 0.5 } } }\n"
           "%s"
           "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"b\" top: \"out\" inner_product_param { num_output: 5 " WF
           " } }\n",
           conv ? INPUT("x", "dim: 4 dim: 3 dim: 5 dim: 7") : INPUT("c", "dim: 2 dim: 6 dim: 2 dim: 3"),
           conv ? "layer { name: \"conv\" type: \"Convolution\" bottom: \"x\" top: \"c\"\n"
                  "  convolution_param { num_output: 6 kernel_size: 3 pad: 1 " WF " } }\n"
                : "",
           bn, bias ? "true" : "false", relu);
  return buf;
}

static char *chain_net(const char *bn, int bias, const char *relu) { return chain_net_conv(bn, bias, relu, 1); }

#define RELU "layer { name: \"re\" type: \"ReLU\" bottom: \"b\" top: \"b\" }\n"
#define LEAKY "layer { name: \"re\" type: \"ReLU\" bottom: \"b\" top: \"b\" relu_param { negative_slope: 0.1 } }\n"


static int tensor_same(const dd_tensor *a, const dd_tensor *b) {
  float *x = dd_tensor_data_copy(a), *y = dd_tensor_data_copy(b);
  int same = memcmp(x, y, (size_t)a->count * sizeof *x) == 0;
  free(x);
  free(y);
  return same;
}

/* The same random diff on both nets' `out` top. */
static void set_top_diff(dd_net *n, const char *name, uint64_t seed) {
  dd_tensor *t = blob(n, name);
  dd_rng r;
  dd_rng_seed(&r, seed);
  float *h = malloc((size_t)t->count * sizeof *h);
  uniform_fill(h, t->count, &r, -1, 1);
  dd_tensor_set_diff(t, h);
  free(h);
}

/* Builds the net twice (unfused reference, fused), runs two forward+backward passes with the same
 * inputs and compares everything the layers expose. */
static void compare(const char *what, const char *text, Caffe__Phase phase, int want_fused_layers) {
  dd_net *ref = make_net(text, phase), *fu = make_net(text, phase);
  REQUIRE(ref && fu);
  REQUIRE(dd_plan_build(ref, 0) == 0);
  CHECK(ref->plan.n_fused == 0 && ref->plan.n_steps == ref->n_layers);
  CHECKF(fu->plan.n_fused == (want_fused_layers ? 1u : 0u), "%s: %zu fused steps", what, fu->plan.n_fused);
  if (want_fused_layers) CHECK(fu->plan.n_steps == fu->n_layers - (size_t)want_fused_layers + 1);
  double worst_f = 0, worst_b = 0;
  for (int pass = 0; pass < 2; pass++) {
    dd_net *nets[2] = {ref, fu};
    for (int k = 0; k < 2; k++) {
      fill_inputs(nets[k], 100 + pass, -1, 1);
      dd_net_clear_param_diffs(nets[k]);
      REQUIRE(dd_net_forward(nets[k], NULL) == 0);
      set_top_diff(nets[k], "out", 200 + pass);
      dd_net_backward(nets[k]);
    }
    const char *fwd[] = {"b", "out"};
    for (int i = 0; i < 2; i++) worst_f = fmax(worst_f, tensor_rel(blob(fu, fwd[i]), blob(ref, fwd[i]), 0));
    for (int p = 0; p < 3; p++) /* the BatchNorm's moving sums and factor */
      CHECKF(tensor_same(layer(fu, "bn")->params[p], layer(ref, "bn")->params[p]), "%s: BatchNorm blob %d differs", what, p);
    worst_b = fmax(worst_b, tensor_rel(blob(fu, "x"), blob(ref, "x"), 1));
    for (size_t p = 0; p < ref->n_params; p++)
      worst_b = fmax(worst_b, tensor_rel(fu->params[p].t, ref->params[p].t, 1));
  }
  CHECKF(worst_f <= 1e-6, "%s: forward differs by %.2e", what, worst_f);
  CHECKF(worst_b <= 2e-5, "%s: gradients differ by %.2e", what, worst_b);
  printf("     %-52s forward %.1e, gradients %.1e\n", what, worst_f, worst_b);
  dd_net_destroy(ref);
  dd_net_destroy(fu);
}

static void test_bn_scale_relu_matches_unfused(void) {
  compare("batch statistics, bias, ReLU", chain_net("moving_average_fraction: 0.9", 1, RELU), CAFFE__PHASE__TRAIN, 3);
  compare("batch statistics, no bias, leaky ReLU", chain_net("eps: 0.001", 0, LEAKY), CAFFE__PHASE__TRAIN, 3);
  compare("batch statistics, bias, no ReLU", chain_net("", 1, ""), CAFFE__PHASE__TRAIN, 2);
  compare("stored statistics in TRAIN, ReLU", chain_net("use_global_stats: true", 1, RELU), CAFFE__PHASE__TRAIN, 3);
  compare("TEST phase (stored statistics), leaky ReLU", chain_net("", 1, LEAKY), CAFFE__PHASE__TEST, 3);
}

/* Runs the plan rules refuse: the result would differ from the layers'. */
static void test_unfusable_runs(void) {
  /* the BatchNorm in place: its input is gone before the backward needs it */
  const char *in_place =
      "name: \"p\"\n" INPUT("x", "dim: 2 dim: 3 dim: 4")
      "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"x\" }\n"
      "layer { name: \"sc\" type: \"Scale\" bottom: \"x\" top: \"x\" }\n";
  /* a Scale over two axes (not per channel) */
  const char *two_axes =
      "name: \"p\"\n" INPUT("x", "dim: 2 dim: 3 dim: 4")
      "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"b\" }\n"
      "layer { name: \"sc\" type: \"Scale\" bottom: \"b\" top: \"b\" scale_param { num_axes: 2 } }\n";
  /* a Scale that is not in place */
  const char *out_of_place =
      "name: \"p\"\n" INPUT("x", "dim: 2 dim: 3 dim: 4")
      "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"b\" }\n"
      "layer { name: \"sc\" type: \"Scale\" bottom: \"b\" top: \"s\" }\n";
  /* a loss weight on the Scale's top */
  const char *loss =
      "name: \"p\"\n" INPUT("x", "dim: 2 dim: 3 dim: 4")
      "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"b\" }\n"
      "layer { name: \"sc\" type: \"Scale\" bottom: \"b\" top: \"b\" loss_weight: 1 }\n";
  const char *nets[] = {in_place, two_axes, out_of_place, loss};
  for (int i = 0; i < 4; i++) {
    dd_net *n = make_net(nets[i], CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    CHECKF(n->plan.n_fused == 0, "net %d fused", i);
    CHECK(n->plan.n_steps == n->n_layers);
    dd_net_destroy(n);
  }
  /* DD_FUSE=0: every net unfused */
  setenv("DD_FUSE", "0", 1);
  dd_net *n = make_net(chain_net("", 1, RELU), CAFFE__PHASE__TRAIN);
  unsetenv("DD_FUSE");
  REQUIRE(n);
  CHECK(n->plan.n_fused == 0);
  char desc[256];
  dd_plan_describe(n, desc, sizeof desc);
  CHECK_CONTAINS(desc, "0 fused");
  REQUIRE(dd_plan_build(n, 1) == 0);
  CHECK(n->plan.n_fused == 1);
  dd_net_destroy(n);
}

/* The fused backward on its own against finite differences (inputs, gamma, beta, the weights). */
static void test_fused_gradient_check(void) {
  /* the run's input straight from a small Input (12 values per channel): behind a convolution and
   * batch statistics over many values, one weight moves every pre-activation, so a
   * finite-difference step crosses ReLU kinks that the one-sided test cannot see (the unfused
   * layers fail the same points) */
  const gc_opts fine = GC_KINK;
  check_grad("fused BatchNorm+Scale+ReLU", chain_net_conv("", 1, RELU, 0), fine);
  check_grad("fused BatchNorm+Scale+leaky ReLU, stored stats", chain_net_conv("use_global_stats: true", 1, LEAKY, 0),
             fine);
  check_grad("fused BatchNorm+Scale, no ReLU, after a convolution", chain_net("", 1, ""), GC);
}

/* A small pre-activation residual net (the WRN pattern: three fused runs), trained 20 SGD steps
 * fused and unfused from the same weights and data. */
static const char *resnet =
    "name: \"r\"\n" INPUT("data", "dim: 8 dim: 2 dim: 8 dim: 8") INPUT("label", "dim: 8")
    "layer { name: \"conv1\" type: \"Convolution\" bottom: \"data\" top: \"conv1\"\n"
    "  convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false weight_filler { type: \"msra\" } } }\n"
    "layer { name: \"bn1\" type: \"BatchNorm\" bottom: \"conv1\" top: \"pre\" batch_norm_param { moving_average_fraction: 0.9 } }\n"
    "layer { name: \"sc1\" type: \"Scale\" bottom: \"pre\" top: \"pre\" scale_param { bias_term: true } }\n"
    "layer { name: \"re1\" type: \"ReLU\" bottom: \"pre\" top: \"pre\" }\n"
    "layer { name: \"conv2\" type: \"Convolution\" bottom: \"pre\" top: \"conv2\"\n"
    "  convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false weight_filler { type: \"msra\" } } }\n"
    "layer { name: \"bn2\" type: \"BatchNorm\" bottom: \"conv2\" top: \"mid\" batch_norm_param { moving_average_fraction: 0.9 } }\n"
    "layer { name: \"sc2\" type: \"Scale\" bottom: \"mid\" top: \"mid\" scale_param { bias_term: true } }\n"
    "layer { name: \"re2\" type: \"ReLU\" bottom: \"mid\" top: \"mid\" }\n"
    "layer { name: \"conv3\" type: \"Convolution\" bottom: \"mid\" top: \"conv3\"\n"
    "  convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false weight_filler { type: \"msra\" } } }\n"
    "layer { name: \"sum\" type: \"Eltwise\" bottom: \"conv3\" bottom: \"conv1\" top: \"sum\" }\n"
    "layer { name: \"bn3\" type: \"BatchNorm\" bottom: \"sum\" top: \"fin\" batch_norm_param { moving_average_fraction: 0.9 } }\n"
    "layer { name: \"sc3\" type: \"Scale\" bottom: \"fin\" top: \"fin\" scale_param { bias_term: true } }\n"
    "layer { name: \"re3\" type: \"ReLU\" bottom: \"fin\" top: \"fin\" }\n"
    "layer { name: \"pool\" type: \"Pooling\" bottom: \"fin\" top: \"pool\" pooling_param { pool: AVE global_pooling: true } }\n"
    "layer { name: \"fc\" type: \"InnerProduct\" bottom: \"pool\" top: \"fc\"\n"
    "  inner_product_param { num_output: 4 weight_filler { type: \"msra\" } } }\n"
    "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"fc\" bottom: \"label\" top: \"loss\" }\n";


/* after_layer_backward sees every layer once, last first, as it does unfused (data parallel
 * training starts its all-reduces from it). */
static int hook_seen[64], hook_n, hook_order_ok;
static void hook(void *ctx, int layer) {
  (void)ctx;
  if (hook_n > 0 && layer != hook_seen[hook_n - 1] - 1) hook_order_ok = 0;
  if (hook_n < 64) hook_seen[hook_n++] = layer;
}

static void test_resnet_training_matches(void) {
  dd_net *ref = make_net(resnet, CAFFE__PHASE__TRAIN), *fu = make_net(resnet, CAFFE__PHASE__TRAIN);
  REQUIRE(ref && fu);
  REQUIRE(dd_plan_build(ref, 0) == 0);
  CHECK(fu->plan.n_fused == 3);
  CHECK(fu->plan.n_steps == fu->n_layers - 6);
  char desc[256];
  dd_plan_describe(fu, desc, sizeof desc);
  printf("     %s\n", desc);
  fu->after_layer_backward = hook;
  hook_order_ok = 1;
  double worst = 0;
  for (int it = 0; it < 20; it++) {
    double l0, l1;
    dd_net *nets[2] = {ref, fu};
    for (int k = 0; k < 2; k++) {
      set_uniform(nets[k], "data", 300 + it, -1, 1);
      set_labels(nets[k], "label", 4, 400 + it, 0, 0);
    }
    hook_n = 0;
    sgd_step(ref, 0.1f, &l0);
    sgd_step(fu, 0.1f, &l1);
    if (it == 0) {
      CHECK(hook_n == (int)fu->n_layers && hook_order_ok && hook_seen[0] == (int)fu->n_layers - 1);
    }
    worst = fmax(worst, fabs(l1 - l0) / fmax(fabs(l0), 1e-3));
    if (it == 19) printf("     loss after 20 steps: %.6f fused, %.6f unfused\n", l1, l0);
  }
  CHECKF(worst <= 1e-4, "losses differ by %.2e", worst);
  double wworst = 0;
  for (size_t p = 0; p < ref->n_params; p++) wworst = fmax(wworst, tensor_rel(fu->params[p].t, ref->params[p].t, 0));
  CHECKF(wworst <= 1e-3, "weights differ by %.2e after 20 steps", wworst);
  printf("     20 SGD steps: losses within %.1e, weights within %.1e\n", worst, wworst);
  dd_net_destroy(ref);
  dd_net_destroy(fu);
}

/* Two fused runs with the same inputs give the same bits (2 threads). */
static void test_fused_deterministic(void) {
  dd_net *a = make_net(resnet, CAFFE__PHASE__TRAIN), *b = make_net(resnet, CAFFE__PHASE__TRAIN);
  REQUIRE(a && b);
  for (int it = 0; it < 3; it++) {
    double la, lb;
    dd_net *nets[2] = {a, b};
    for (int k = 0; k < 2; k++) {
      set_uniform(nets[k], "data", 500 + it, -1, 1);
      set_labels(nets[k], "label", 4, 600 + it, 0, 0);
    }
    sgd_step(a, 0.1f, &la);
    sgd_step(b, 0.1f, &lb);
    CHECK(la == lb);
  }
  for (size_t p = 0; p < a->n_params; p++) CHECK(tensor_same(a->params[p].t, b->params[p].t));
  dd_net_destroy(a);
  dd_net_destroy(b);
}

/* bf16 convolutions (dd_net_set_precision): where the CPU has bf16 kernels, 20 SGD steps stay
 * within 5e-2 relative of the FP32 losses (bf16 inputs and weights keep 8 significant bits;
 * accumulation, BatchNorm and the update are FP32); where it has none, the plan runs FP32 and the
 * losses are the FP32 ones, bit for bit. Two bf16 runs give the same bits either way. */
static void test_bf16_plan(void) {
  dd_net *ref = make_net(resnet, CAFFE__PHASE__TRAIN), *a = make_net(resnet, CAFFE__PHASE__TRAIN),
         *b = make_net(resnet, CAFFE__PHASE__TRAIN);
  REQUIRE(ref && a && b);
  int na = -1, nb = -1;
  char err[512];
  REQUIRE_OK(dd_net_set_precision(a, DD_PRECISION_BF16, &na, NULL, err, sizeof err), err);
  REQUIRE_OK(dd_net_set_precision(b, DD_PRECISION_BF16, &nb, NULL, err, sizeof err), err);
  CHECK(na == nb && na >= 0 && na <= 3);
  char desc[512];
  dd_plan_describe(a, desc, sizeof desc);
  printf("     bf16 asked: %d of 3 convolutions in bf16; %s\n", na, desc);
  double worst = 0;
  for (int it = 0; it < 20; it++) {
    double l0, la, lb;
    dd_net *nets[3] = {ref, a, b};
    for (int k = 0; k < 3; k++) {
      set_uniform(nets[k], "data", 700 + it, -1, 1);
      set_labels(nets[k], "label", 4, 800 + it, 0, 0);
    }
    sgd_step(ref, 0.1f, &l0);
    sgd_step(a, 0.1f, &la);
    sgd_step(b, 0.1f, &lb);
    CHECK(la == lb);
    if (!na) CHECK(la == l0);
    worst = fmax(worst, fabs(la - l0) / fmax(fabs(l0), 1e-3));
  }
  if (na) {
    CHECKF(worst <= 5e-2, "bf16 losses differ from FP32 by %.2e", worst);
    printf("     20 SGD steps in bf16: losses within %.1e of FP32\n", worst);
  } else {
    printf("     skipped: no bf16 convolution on this CPU; the bf16 plan ran FP32 (losses identical)\n");
  }
  dd_net_destroy(ref);
  dd_net_destroy(a);
  dd_net_destroy(b);
}

/* Profiling (dd_plan_profile): the times land on the steps that ran, the report names each kind
 * of step once with its step count, and profiling changes no result. */
static void test_profile(void) {
  dd_net *a = make_net(resnet, CAFFE__PHASE__TRAIN), *b = make_net(resnet, CAFFE__PHASE__TRAIN);
  REQUIRE(a && b);
  REQUIRE(dd_plan_profile(a, 1) == 0);
  for (int it = 0; it < 2; it++) {
    double la, lb;
    dd_net *nets[2] = {a, b};
    for (int k = 0; k < 2; k++) {
      set_uniform(nets[k], "data", 900 + it, -1, 1);
      set_labels(nets[k], "label", 4, 950 + it, 0, 0);
    }
    sgd_step(a, 0.1f, &la);
    sgd_step(b, 0.1f, &lb);
    CHECK(la == lb);
  }
  double fwd = 0, bwd = 0;
  int conv_steps = 0, fused_steps = 0;
  for (size_t k = 0; k < a->plan.n_steps; k++) {
    const dd_plan_step *s = &a->plan.steps[k];
    CHECK(a->plan.fwd_s[k] >= 0 && a->plan.bwd_s[k] >= 0);
    fwd += a->plan.fwd_s[k], bwd += a->plan.bwd_s[k];
    if (s->kind == DD_STEP_BN_SCALE_RELU) fused_steps++;
    else if (!strcmp(a->layers[s->first].ops->type, "Convolution")) {
      conv_steps++;
      CHECK(a->plan.fwd_s[k] > 0 && a->plan.bwd_s[k] > 0); /* a convolution takes some time both ways */
    }
    if (!dd_plan_step_needs_backward(a, s)) CHECK(a->plan.bwd_s[k] == 0);
  }
  CHECK(fwd > 0 && bwd > 0 && conv_steps == 3 && fused_steps == (int)a->plan.n_fused);
  char rep[2048], want[64];
  dd_plan_profile_report(a, 2, rep, sizeof rep);
  printf("%s", rep);
  snprintf(want, sizeof want, "%3d steps", conv_steps);
  const char *c = strstr(rep, "Convolution fp32");
  CHECK(c && strstr(c, want) && strstr(c, "\n") > strstr(c, want));
  CHECK(strstr(rep, "BatchNorm+Scale") != NULL && strstr(rep, "total") != NULL);
  CHECK(c && strstr(c + 1, "Convolution fp32") == NULL); /* one line per kind */
  REQUIRE(dd_plan_profile(a, 0) == 0);
  CHECK(a->plan.fwd_s == NULL && a->plan.bwd_s == NULL);
  dd_plan_profile_report(a, 2, rep, sizeof rep);
  CHECK(rep[0] == 0);
  dd_net_destroy(a);
  dd_net_destroy(b);
}

/* A frozen, folded-teacher-like net (every parameter lr_mult 0: no backward): a stem with bias and
 * ReLU, a residual block with a strided 1x1 projection, a per-channel Scale + ReLU, pooling and
 * logits. */
#define FROZEN "param { lr_mult: 0 } param { lr_mult: 0 }"
static const char *frozen_net =
    "name: \"t\"\n" INPUT("data", "dim: 4 dim: 3 dim: 8 dim: 8")
    "layer { name: \"conv1\" type: \"Convolution\" bottom: \"data\" top: \"conv1\" " FROZEN "\n"
    "  convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: \"msra\" }"
    " bias_filler { type: \"uniform\" min: -0.2 max: 0.2 } } }\n"
    "layer { name: \"relu1\" type: \"ReLU\" bottom: \"conv1\" top: \"conv1\" }\n"
    "layer { name: \"conv2a\" type: \"Convolution\" bottom: \"conv1\" top: \"conv2a\" " FROZEN "\n"
    "  convolution_param { num_output: 32 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: \"msra\" }"
    " bias_filler { type: \"uniform\" min: -0.2 max: 0.2 } } }\n"
    "layer { name: \"relu2\" type: \"ReLU\" bottom: \"conv2a\" top: \"conv2a\" relu_param { negative_slope: 0.1 } }\n"
    "layer { name: \"conv2b\" type: \"Convolution\" bottom: \"conv2a\" top: \"conv2b\" param { lr_mult: 0 }\n"
    "  convolution_param { num_output: 32 kernel_size: 3 pad: 1 bias_term: false weight_filler { type: \"msra\" } } }\n"
    "layer { name: \"proj\" type: \"Convolution\" bottom: \"conv1\" top: \"proj\" param { lr_mult: 0 }\n"
    "  convolution_param { num_output: 32 kernel_size: 1 stride: 2 bias_term: false weight_filler { type: \"msra\" } } }\n"
    "layer { name: \"sum\" type: \"Eltwise\" bottom: \"conv2b\" bottom: \"proj\" top: \"sum\"\n"
    "  eltwise_param { coeff: 1 coeff: 0.5 } }\n"
    "layer { name: \"relu_s\" type: \"ReLU\" bottom: \"sum\" top: \"sum\" relu_param { negative_slope: 0.2 } }\n"
    "layer { name: \"sc\" type: \"Scale\" bottom: \"sum\" top: \"sc\" " FROZEN " scale_param { bias_term: true\n"
    "  filler { type: \"uniform\" min: 0.5 max: 1.5 } bias_filler { type: \"uniform\" min: -0.5 max: 0.5 } } }\n"
    "layer { name: \"relu3\" type: \"ReLU\" bottom: \"sc\" top: \"sc\" }\n"
    "layer { name: \"pool\" type: \"Pooling\" bottom: \"sc\" top: \"pool\" pooling_param { pool: AVE global_pooling: true } }\n"
    "layer { name: \"fc\" type: \"InnerProduct\" bottom: \"pool\" top: \"fc\" " FROZEN "\n"
    "  inner_product_param { num_output: 5 weight_filler { type: \"msra\" } } }\n";

/* Largest |a - ref| over a blob, relative to the reference's largest magnitude. */
static double blob_rel(dd_net *a, dd_net *ref, const char *name) { return tensor_rel(blob(a, name), blob(ref, name), 0); }

/* Inference in the blocked layout (dd_plan_build_blocked) against the FP32 reference net (every
 * layer its own step, NCHW): logits, the kept blob and the pooled activations in bf16 within 3e-2
 * of the reference's largest magnitude (bf16 keeps 8 significant bits: one rounding per layer,
 * 2^-9 relative, over five layers of sums), in FP32 within 1e-5 (sums in another order); two
 * forwards give the same bits; a net with a backward is left alone. */
static void test_bf16_blocked_frozen(void) {
  dd_net *ref = make_net(frozen_net, CAFFE__PHASE__TEST), *bf = make_net(frozen_net, CAFFE__PHASE__TEST),
         *un = make_net(frozen_net, CAFFE__PHASE__TEST), *fb = make_net(frozen_net, CAFFE__PHASE__TEST);
  REQUIRE(ref && bf && un && fb);
  REQUIRE(dd_plan_build(ref, 0) == 0);
  char err[512];
  int nb = 0;
  REQUIRE_OK(dd_net_set_precision(bf, DD_PRECISION_BF16, &nb, NULL, err, sizeof err), err);
  REQUIRE_OK(dd_net_set_precision(un, DD_PRECISION_BF16, NULL, NULL, err, sizeof err), err);
  const char *keep[] = {"sum"};
  REQUIRE(dd_plan_build_blocked(bf, keep, 1) == 0);
  REQUIRE(dd_plan_build_blocked(fb, keep, 1) == 0);
  CHECK(bf->plan.n_blocked == 0 || bf->plan.blk_bf16 == 1);
  CHECK(fb->plan.n_blocked == 0 || fb->plan.blk_bf16 == 0);
  int fp32_blk = dd_dnnl_fp32_on_dnnl();
  CHECKF(fb->plan.n_blocked == (fp32_blk ? 11u : 0u), "%zu layers on blocked FP32", fb->plan.n_blocked);
  char desc[512];
  dd_plan_describe(bf, desc, sizeof desc);
  printf("     %s\n", desc);
  if (!nb) {
    CHECK(bf->plan.n_blocked == 0);
    printf("     skipped: no bf16 convolution on this CPU, so no blocked bf16 plan (it stays FP32)\n");
  } else {
    /* conv1+relu1, Split, conv2a+relu2, conv2b, proj, sum+relu_s, sc+relu3 */
    CHECKF(bf->plan.n_blocked == 11, "%zu layers on blocked bf16", bf->plan.n_blocked);
  }
  dd_net *nets[4] = {ref, bf, un, fb};
  for (int k = 0; k < 4; k++) {
    set_uniform(nets[k], "data", 77, -1, 1);
    REQUIRE(dd_net_forward(nets[k], NULL) == 0);
  }
  const char *names[] = {"fc", "sum", "pool"};
  for (int i = 0; i < 3; i++) {
    double e = blob_rel(bf, ref, names[i]), eu = blob_rel(un, ref, names[i]);
    CHECKF(e <= 3e-2, "%s: blocked bf16 differs from FP32 by %.2e", names[i], e);
    CHECKF(eu <= 3e-2, "%s: bf16 convolutions differ from FP32 by %.2e", names[i], eu);
    double ef = blob_rel(fb, ref, names[i]);
    CHECKF(ef <= 1e-5, "%s: blocked FP32 differs from the reference by %.2e", names[i], ef);
    printf("     %-5s blocked bf16 %.1e, bf16 convolutions only %.1e, blocked FP32 %.1e (of the largest magnitude)\n",
           names[i], e, eu, ef);
  }
  float *first = dd_tensor_data_copy(blob(bf, "fc"));
  set_uniform(bf, "data", 77, -1, 1);
  REQUIRE(dd_net_forward(bf, NULL) == 0);
  float *second = dd_tensor_data_copy(blob(bf, "fc"));
  CHECK(memcmp(first, second, (size_t)blob(bf, "fc")->count * sizeof(float)) == 0);
  free(first), free(second);
  /* a net with a backward is left as it is */
  dd_net *tr = make_net(resnet, CAFFE__PHASE__TRAIN);
  REQUIRE(tr);
  REQUIRE_OK(dd_net_set_precision(tr, DD_PRECISION_BF16, NULL, NULL, err, sizeof err), err);
  size_t steps = tr->plan.n_steps;
  REQUIRE(dd_plan_build_blocked(tr, NULL, 0) == 0);
  CHECK(tr->plan.n_blocked == 0 && tr->plan.n_steps == steps);
  dd_net_destroy(tr);
  /* a change of precision takes the blocked plan back to the plain one */
  REQUIRE_OK(dd_net_set_precision(fb, DD_PRECISION_BF16, NULL, NULL, err, sizeof err), err);
  CHECK(fb->plan.n_blocked == 0);
  dd_net_destroy(ref);
  dd_net_destroy(bf);
  dd_net_destroy(un);
  dd_net_destroy(fb);
}

int main(void) {
  if (layers_begin()) return 1;
  RUN(test_bn_scale_relu_matches_unfused);
  RUN(test_unfusable_runs);
  RUN(test_fused_gradient_check);
  RUN(test_resnet_training_matches);
  RUN(test_fused_deterministic);
  RUN(test_bf16_plan);
  RUN(test_profile);
  RUN(test_bf16_blocked_frozen);
  return layers_end();
}
