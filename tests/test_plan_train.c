/* Training in the blocked layout (core/net/plan.h, dd_plan_build_blocked_train), on the CPU backend:
 * a small pre-activation residual student (a Split, a strided projection, Eltwise SUMs, the fused
 * BatchNorm + Scale + ReLU on blocked data, an exit to NCHW FP32 before the pooling) trained with
 * its activations and gradients blocked, against the FP32 NCHW reference (every layer its own
 * step, the own kernels).
 *
 * Bounds, relative to the largest magnitude of the reference's array:
 *   blocked FP32 (oneDNN's FP32 convolutions, where it runs them): loss, logits, every parameter
 *   gradient and moving sum of one step within 1e-5; 10 SGD steps: losses within 1e-5
 *   blocked bf16: loss within 1e-3, logits, gradients and moving sums within 3e-2 of the
 *   reference (bf16 activations and gradients: 8 bits of mantissa, as PyTorch's autocast keeps
 *   them); 10 SGD steps: losses within 1e-2
 *   both: two runs give the same bits; the BatchNorm moving sums stay FP32 and within the bounds
 * Where the CPU has no bf16 units (or oneDNN does not run FP32 convolutions) those parts are
 * skipped with a message. */
#define _POSIX_C_SOURCE 200809L
#include "test_layers.h"

#include "cpu/cpu_dnnl.h"

#define BNSR(name, in, out)                                                                                        \
  "layer { name: \"" name "_bn\" type: \"BatchNorm\" bottom: \"" in "\" top: \"" out "\" batch_norm_param { moving_average_fraction: 0.9 } }\n" \
  "layer { name: \"" name "_sc\" type: \"Scale\" bottom: \"" out "\" top: \"" out "\" scale_param { bias_term: true } }\n" \
  "layer { name: \"" name "_re\" type: \"ReLU\" bottom: \"" out "\" top: \"" out "\" }\n"
#define CONV(name, in, out, n, k, s, p)                                                                            \
  "layer { name: \"" name "\" type: \"Convolution\" bottom: \"" in "\" top: \"" out "\"\n"                         \
  "  convolution_param { num_output: " #n " kernel_size: " #k " stride: " #s " pad: " #p                           \
  " bias_term: false weight_filler { type: \"msra\" } } }\n"

static const char *student =
    "name: \"s\"\n" INPUT("data", "dim: 8 dim: 3 dim: 12 dim: 12") INPUT("label", "dim: 8")
    CONV("conv1", "data", "c1", 16, 3, 1, 1)
    BNSR("b1a", "c1", "p1")
    CONV("b1_conv1", "p1", "b1c1", 16, 3, 1, 1)
    BNSR("b1b", "b1c1", "p2")
    CONV("b1_conv2", "p2", "b1c2", 16, 3, 1, 1)
    "layer { name: \"sum1\" type: \"Eltwise\" bottom: \"b1c2\" bottom: \"c1\" top: \"s1\" }\n"
    BNSR("b2a", "s1", "p3")
    CONV("b2_conv1", "p3", "b2c1", 32, 3, 2, 1)
    BNSR("b2b", "b2c1", "p4")
    CONV("b2_conv2", "p4", "b2c2", 32, 3, 1, 1)
    CONV("b2_proj", "p3", "b2p", 32, 1, 2, 0)
    "layer { name: \"sum2\" type: \"Eltwise\" bottom: \"b2c2\" bottom: \"b2p\" top: \"s2\" }\n"
    BNSR("fin", "s2", "f")
    "layer { name: \"pool\" type: \"Pooling\" bottom: \"f\" top: \"pool\" pooling_param { pool: AVE global_pooling: true } }\n"
    "layer { name: \"fc\" type: \"InnerProduct\" bottom: \"pool\" top: \"fc\"\n"
    "  inner_product_param { num_output: 5 weight_filler { type: \"msra\" } } }\n"
    "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"fc\" bottom: \"label\" top: \"loss\" }\n";

/* A Split whose first reader needs NCHW (a Pooling) and whose second is blocked (a convolution):
 * the exit before the Pooling makes both tops NCHW, and the Split's backward must still add
 * gradients of one layout. */
static const char *split_first_nchw =
    "name: \"s2\"\n" INPUT("data", "dim: 8 dim: 3 dim: 12 dim: 12") INPUT("label", "dim: 8")
    CONV("conv1", "data", "c1", 16, 3, 1, 1)
    "layer { name: \"pa\" type: \"Pooling\" bottom: \"c1\" top: \"pa\" pooling_param { pool: MAX kernel_size: 1 stride: 1 } }\n"
    CONV("conv2", "c1", "c2", 16, 3, 1, 1)
    BNSR("b2", "c2", "p2")
    "layer { name: \"sum\" type: \"Eltwise\" bottom: \"pa\" bottom: \"p2\" top: \"s\" }\n"
    "layer { name: \"pool\" type: \"Pooling\" bottom: \"s\" top: \"pool\" pooling_param { pool: AVE global_pooling: true } }\n"
    "layer { name: \"fc\" type: \"InnerProduct\" bottom: \"pool\" top: \"fc\"\n"
    "  inner_product_param { num_output: 5 weight_filler { type: \"msra\" } } }\n"
    "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"fc\" bottom: \"label\" top: \"loss\" }\n";



static void inputs(dd_net *n, int it) {
  set_uniform(n, "data", 500 + it, -1, 1);
  set_labels(n, "label", 5, 600 + it, 0, 0);
}

/* One net in `precision` with the training plan in the blocked layout; NULL (a message printed)
 * where this CPU cannot run it. */
static dd_net *blocked_net_of(const char *text, int precision, int want_blocked) {
  char err[512];
  dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
  if (!n) {
    CHECKF(0, "the student net does not build");
    return NULL;
  }
  int nb = 0;
  if (dd_net_set_precision(n, precision, &nb, NULL, err, sizeof err)) {
    CHECKF(0, "%s", err);
    dd_net_destroy(n);
    return NULL;
  }
  CHECK(dd_plan_build_blocked_train(n, NULL, 0) == 0);
  if (!n->plan.n_blocked) {
    printf("     skipped %s: no blocked training plan on this CPU (%s)\n", precision ? "bf16" : "FP32",
           dd_dnnl_describe());
    dd_net_destroy(n);
    return NULL;
  }
  char desc[512];
  dd_plan_describe(n, desc, sizeof desc);
  printf("     %s: %s\n", precision ? "bf16" : "FP32", desc);
  CHECK(n->plan.blk_train && n->plan.blk_bf16 == (precision == DD_PRECISION_BF16));
  CHECKF(want_blocked < 0 || n->plan.n_blocked == (size_t)want_blocked, "%zu of %zu layers blocked", n->plan.n_blocked,
         n->n_layers);
  return n;
}

/* the student: all but the pooling, the InnerProduct and the loss (the Split included) */
static dd_net *blocked_net(int precision) { return blocked_net_of(student, precision, 30 - 3 - 2); }

static void against_reference_of(const char *text, int want_blocked, int precision, double b_loss, double b_grad,
                                 double b_steps) {
  dd_net *ref = make_net(text, CAFFE__PHASE__TRAIN), *bl = blocked_net_of(text, precision, want_blocked);
  REQUIRE(ref);
  if (!bl) {
    dd_net_destroy(ref);
    return;
  }
  REQUIRE(dd_plan_build(ref, 0) == 0);
  /* one step: the loss, the logits, every parameter's gradient, the moving sums */
  double l0, l1;
  inputs(ref, 0), inputs(bl, 0);
  dd_net_clear_param_diffs(ref), dd_net_clear_param_diffs(bl);
  REQUIRE(dd_net_forward(ref, &l0) == 0 && dd_net_forward(bl, &l1) == 0);
  dd_net_backward(ref), dd_net_backward(bl);
  double el = fabs(l1 - l0) / fmax(fabs(l0), 1e-3), ef = tensor_rel(blob(bl, "fc"), blob(ref, "fc"), 0), eg = 0;
  const char *worst = "";
  for (size_t p = 0; p < ref->n_params; p++) {
    double e = tensor_rel(bl->params[p].t, ref->params[p].t, ref->params[p].lr_mult != 0);
    if (e > eg) eg = e, worst = ref->params[p].t->name;
  }
  CHECKF(el <= b_loss, "loss %.6f against %.6f (%.2e)", l1, l0, el);
  CHECKF(ef <= b_grad, "logits differ by %.2e", ef);
  CHECKF(eg <= b_grad, "parameter gradients (and moving sums) differ by %.2e (%s)", eg, worst);
  printf("     one step: loss %.2e, logits %.2e, gradients and moving sums %.2e (%s)\n", el, ef, eg, worst);
  /* ten SGD steps */
  double sw = 0;
  for (int it = 1; it <= 10; it++) {
    inputs(ref, it), inputs(bl, it);
    sgd_step(ref, 0.05f, &l0);
    sgd_step(bl, 0.05f, &l1);
    sw = fmax(sw, fabs(l1 - l0) / fmax(fabs(l0), 1e-3));
  }
  CHECKF(sw <= b_steps, "10 SGD steps: losses differ by %.2e", sw);
  printf("     10 SGD steps: losses within %.2e (last %.5f against %.5f)\n", sw, l1, l0);
  dd_net_destroy(ref);
  dd_net_destroy(bl);
}

static void against_reference(int precision, double b_loss, double b_grad, double b_steps) {
  against_reference_of(student, 30 - 3 - 2, precision, b_loss, b_grad, b_steps);
}

static void test_blocked_fp32_training(void) { against_reference(DD_PRECISION_FP32, 1e-5, 1e-5, 1e-5); }
static void test_blocked_bf16_training(void) { against_reference(DD_PRECISION_BF16, 1e-3, 3e-2, 1e-2); }

/* conv1, the Split, conv2 (its input NCHW after the exit, its output blocked) and its
 * BatchNorm+Scale+ReLU blocked; the Pooling, the Eltwise (one bottom NCHW) and the rest not */
static void test_split_read_nchw_first(void) {
  against_reference_of(split_first_nchw, 6, DD_PRECISION_FP32, 1e-5, 1e-5, 1e-5);
  against_reference_of(split_first_nchw, 6, DD_PRECISION_BF16, 1e-3, 3e-2, 1e-2);
}

/* a frozen net (a teacher: the student without its loss) is left with its plan */
static void test_frozen_net_left_alone(void) {
  char *text = strdup(student);
  REQUIRE(text);
  *strstr(text, "layer { name: \"loss\"") = 0;
  dd_net *n = make_net(text, CAFFE__PHASE__TEST);
  free(text);
  REQUIRE(n);
  size_t steps = n->plan.n_steps;
  CHECK(dd_plan_build_blocked_train(n, NULL, 0) == 0);
  CHECK(n->plan.n_blocked == 0 && !n->plan.blk_train && n->plan.n_steps == steps);
  dd_net_destroy(n);
}

/* Two runs from the same start give the same bits; a rebuild of the plain plan gives the
 * convolutions their NCHW layouts back (the net then matches a net never blocked). */
static void test_blocked_deterministic_and_undone(void) {
  int precision = dd_dnnl_bf16_available() ? DD_PRECISION_BF16 : DD_PRECISION_FP32;
  dd_net *a = blocked_net(precision), *b = blocked_net(precision);
  if (!a || !b) {
    dd_net_destroy(a), dd_net_destroy(b);
    return;
  }
  for (int it = 0; it < 3; it++) {
    double la, lb;
    inputs(a, it), inputs(b, it);
    sgd_step(a, 0.05f, &la);
    sgd_step(b, 0.05f, &lb);
    CHECKF(la == lb, "step %d: losses %.9g and %.9g", it, la, lb);
  }
  for (size_t p = 0; p < a->n_params; p++) CHECK(tensor_rel(a->params[p].t, b->params[p].t, 0) == 0);
  REQUIRE(dd_plan_build(a, 1) == 0);
  CHECK(a->plan.n_blocked == 0 && !a->plan.blk_train);
  for (size_t i = 0; i < a->n_layers; i++)
    if (!strcmp(a->layers[i].ops->type, "Convolution")) {
      const dd_conv_desc *d = (const dd_conv_desc *)a->layers[i].priv;
      CHECK(!d->blk_in && !d->blk_out);
    }
  double l;
  inputs(a, 9);
  sgd_step(a, 0.05f, &l);
  CHECK(isfinite(l));
  dd_net_destroy(a);
  dd_net_destroy(b);
}

int main(void) {
  if (layers_begin()) return 1;
  RUN(test_blocked_fp32_training);
  RUN(test_blocked_bf16_training);
  RUN(test_split_read_nchw_first);
  RUN(test_frozen_net_left_alone);
  RUN(test_blocked_deterministic_and_undone);
  return layers_end();
}
