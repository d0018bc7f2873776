/* Layer correctness on the CPU backend, 1: finite-difference gradient checks of every layer's
 * backward (the checker: tests/test_layers.h), including the distillation loss against its
 * formula. Forward values: tests/test_layers_forward.c; in place, fillers, split insertion,
 * determinism and shape errors: tests/test_layers_nets.c. */
#define _POSIX_C_SOURCE 200809L
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "test_layers.h"

static void test_grad_convolution(void) {
  check_grad("conv 3x3 pad 1 bias",
             FB INPUT("x", "dim: 3 dim: 3 dim: 5 dim: 6")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 4 kernel_size: 3 pad: 1 " WF " } }", GC);
  check_grad("conv 3x3 stride 2 pad 1 no bias",
             FB INPUT("x", "dim: 2 dim: 3 dim: 7 dim: 6")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 3 kernel_size: 3 stride: 2 pad: 1 bias_term: false " WF " } }", GC);
  check_grad("conv 3x3 dilation 2 pad 2",
             FB INPUT("x", "dim: 2 dim: 2 dim: 7 dim: 7")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 3 kernel_size: 3 dilation: 2 pad: 2 " WF " } }", GC);
  check_grad("conv group 2",
             FB INPUT("x", "dim: 3 dim: 4 dim: 5 dim: 5")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 6 kernel_size: 3 pad: 1 group: 2 " WF " } }", GC);
  check_grad("conv kernel 3x2 pad 1x0 stride 2x1",
             FB INPUT("x", "dim: 2 dim: 3 dim: 6 dim: 5")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 4 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 stride_h: 2 stride_w: 1 " WF " } }", GC);
  check_grad("conv 1x1 (fast path)",
             FB INPUT("x", "dim: 3 dim: 3 dim: 4 dim: 5")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 4 kernel_size: 1 " WF " } }", GC);
  check_grad("conv 1x1 group 2 (fast path)",
             FB INPUT("x", "dim: 2 dim: 4 dim: 3 dim: 3")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 6 kernel_size: 1 group: 2 " WF " } }", GC);
  check_grad("conv 1x1 stride 2 (im2col path)",
             FB INPUT("x", "dim: 2 dim: 3 dim: 5 dim: 5")
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { "
             "num_output: 2 kernel_size: 1 stride: 2 " WF " } }", GC);
}

static void check_grad_distinct(const char *what, const char *text, const char *const *inputs, int k) {
  dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
  CHECKF(n != NULL, "%s: the net did not build", what);
  if (!n) return;
  set_distinct(n, inputs, k, 5, 0.05f);
  grad_check(n, GC_KINK, what);
  dd_net_destroy(n);
}

static void test_grad_pooling(void) {
  static const char *const x[] = {"x"};
  check_grad_distinct("pool MAX 3x3 stride 2 pad 1",
                      FB INPUT("x", "dim: 2 dim: 2 dim: 5 dim: 5")
                      "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { "
                      "pool: MAX kernel_size: 3 stride: 2 pad: 1 } }", x, 1);
  check_grad_distinct("pool MAX 2x2 stride 2 (ceil: partial windows)",
                      FB INPUT("x", "dim: 2 dim: 2 dim: 5 dim: 5")
                      "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { "
                      "pool: MAX kernel_size: 2 stride: 2 } }", x, 1);
  check_grad("pool AVE 3x3 stride 2 pad 1",
             FB INPUT("x", "dim: 2 dim: 2 dim: 6 dim: 6")
             "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { "
             "pool: AVE kernel_size: 3 stride: 2 pad: 1 } }", GC);
  check_grad("pool AVE 2x2 stride 2 (ceil: partial windows)",
             FB INPUT("x", "dim: 2 dim: 2 dim: 5 dim: 5")
             "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { "
             "pool: AVE kernel_size: 2 stride: 2 } }", GC);
  check_grad("pool AVE kernel 3x2 stride 2x1 pad 1x0",
             FB INPUT("x", "dim: 2 dim: 2 dim: 5 dim: 4")
             "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { "
             "pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 } }", GC);
  check_grad("pool global AVE",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { "
             "pool: AVE global_pooling: true } }", GC);
  check_grad_distinct("pool global MAX",
                      FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
                      "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { "
                      "pool: MAX global_pooling: true } }", x, 1);
}

static void test_grad_inner_product(void) {
  check_grad("ip bias",
             FB INPUT("x", "dim: 3 dim: 2 dim: 3 dim: 2")
             "layer { name: \"f\" type: \"InnerProduct\" bottom: \"x\" top: \"y\" inner_product_param { "
             "num_output: 5 " WF " } }", GC);
  check_grad("ip no bias",
             FB INPUT("x", "dim: 4 dim: 7")
             "layer { name: \"f\" type: \"InnerProduct\" bottom: \"x\" top: \"y\" inner_product_param { "
             "num_output: 3 bias_term: false " WF " } }", GC);
  check_grad("ip transpose",
             FB INPUT("x", "dim: 3 dim: 2 dim: 3 dim: 2")
             "layer { name: \"f\" type: \"InnerProduct\" bottom: \"x\" top: \"y\" inner_product_param { "
             "num_output: 5 transpose: true " WF " } }", GC);
  check_grad("ip axis 2 on 4-D",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 2")
             "layer { name: \"f\" type: \"InnerProduct\" bottom: \"x\" top: \"y\" inner_product_param { "
             "num_output: 5 axis: 2 " WF " } }", GC);
  /* the top shape: (2, 3, 5) */
  dd_net *n = make_net(FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 2")
                       "layer { name: \"f\" type: \"InnerProduct\" bottom: \"x\" top: \"y\" inner_product_param { "
                       "num_output: 5 axis: 2 } }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  dd_tensor *y = blob(n, "y");
  CHECK(y->shape.ndim == 3 && y->shape.dims[0] == 2 && y->shape.dims[1] == 3 && y->shape.dims[2] == 5);
  CHECK(n->layers[1].params[0]->shape.dims[0] == 5 && n->layers[1].params[0]->shape.dims[1] == 8);
  dd_net_destroy(n);
}

/* An InnerProduct big enough for the backend to split its GEMMs across threads, against direct
 * sums: forward, dx, dW (both weight layouts) and the bias gradient. */
static void test_inner_product_large(void) {
  enum { M = 64, K = 256, N = 192 };
  for (int tr = 0; tr < 2; tr++) {
    char text[1024];
    snprintf(text, sizeof text,
             FB INPUT("x", "dim: 64 dim: 4 dim: 8 dim: 8")
             "layer { name: \"f\" type: \"InnerProduct\" bottom: \"x\" top: \"y\" inner_product_param { "
             "num_output: 192 transpose: %s " WF " } }", tr ? "true" : "false");
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    set_uniform(n, "x", 70 + tr, -1, 1);
    dd_net_forward(n, NULL);
    dd_layer *l = layer(n, "f");
    float *x = dd_tensor_data_copy(blob(n, "x")), *w = dd_tensor_data_copy(l->params[0]), *b = dd_tensor_data_copy(l->params[1]);
    float *y = dd_tensor_data_copy(blob(n, "y")), *dy = malloc(M * N * sizeof *dy);
    float *want = malloc(M * N * sizeof *want);
    for (int m = 0; m < M; m++)
      for (int j = 0; j < N; j++) {
        double acc = b[j];
        for (int k = 0; k < K; k++) acc += (double)x[m * K + k] * (tr ? w[k * N + j] : w[j * K + k]);
        want[m * N + j] = (float)acc;
      }
    CHECKF(max_rel_diff(y, want, M * N) < 1e-5, "transpose %d: forward differs by %.3g", tr, max_rel_diff(y, want, M * N));
    dd_rng r;
    dd_rng_seed(&r, 3);
    uniform_fill(dy, M * N, &r, -1, 1);
    dd_tensor_set_diff(blob(n, "y"), dy);
    dd_net_clear_param_diffs(n);
    dd_net_backward(n);
    float *dx = dd_tensor_diff_copy(blob(n, "x")), *dw = dd_tensor_diff_copy(l->params[0]), *db = dd_tensor_diff_copy(l->params[1]);
    float *rdx = malloc(M * K * sizeof *rdx), *rdw = malloc(N * K * sizeof *rdw), rdb[N];
    for (int m = 0; m < M; m++)
      for (int k = 0; k < K; k++) {
        double acc = 0;
        for (int j = 0; j < N; j++) acc += (double)dy[m * N + j] * (tr ? w[k * N + j] : w[j * K + k]);
        rdx[m * K + k] = (float)acc;
      }
    for (int j = 0; j < N; j++) {
      double sb = 0;
      for (int m = 0; m < M; m++) sb += dy[m * N + j];
      rdb[j] = (float)sb;
      for (int k = 0; k < K; k++) {
        double acc = 0;
        for (int m = 0; m < M; m++) acc += (double)dy[m * N + j] * x[m * K + k];
        rdw[tr ? k * N + j : j * K + k] = (float)acc;
      }
    }
    CHECKF(max_rel_diff(dx, rdx, M * K) < 1e-5, "transpose %d: dx differs by %.3g", tr, max_rel_diff(dx, rdx, M * K));
    CHECKF(max_rel_diff(dw, rdw, N * K) < 1e-5, "transpose %d: dW differs by %.3g", tr, max_rel_diff(dw, rdw, N * K));
    CHECKF(max_rel_diff(db, rdb, N) < 1e-5, "transpose %d: db differs by %.3g", tr, max_rel_diff(db, rdb, N));
    free(x);
    free(w);
    free(b);
    free(y);
    free(dy);
    free(want);
    free(dx);
    free(dw);
    free(db);
    free(rdx);
    free(rdw);
    dd_net_destroy(n);
  }
}

static void test_grad_batch_norm(void) {
  check_grad("bn batch statistics",
             FB INPUT("x", "dim: 3 dim: 4 dim: 2 dim: 3")
             "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"y\" }", GC);
  check_grad("bn batch statistics, 2-D (N, C)",
             FB INPUT("x", "dim: 6 dim: 3")
             "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"y\" batch_norm_param { eps: 1e-3 } }", GC);
  /* stored statistics, non-zero */
  dd_net *n = make_net(FB INPUT("x", "dim: 3 dim: 4 dim: 2 dim: 3")
                       "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"y\" "
                       "batch_norm_param { use_global_stats: true } }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  dd_layer *l = layer(n, "bn");
  REQUIRE(l);
  float ms[4] = {0.5f, -1.0f, 2.0f, 0.25f}, vs[4] = {1.0f, 3.0f, 0.5f, 2.0f}, s = 2.5f;
  dd_tensor_set_data(l->params[0], ms);
  dd_tensor_set_data(l->params[1], vs);
  dd_tensor_set_data(l->params[2], &s);
  fill_inputs(n, 3, -2, 2);
  grad_check(n, GC, "bn use_global_stats: true");
  dd_net_destroy(n);
}

static void test_grad_scale(void) {
#define SF "filler { type: \"uniform\" min: 0.5 max: 1.5 } bias_filler { type: \"uniform\" min: -1 max: 1 }"
  check_grad("scale 1 bottom, bias_term",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" scale_param { bias_term: true " SF " } }", GC);
  check_grad("scale 1 bottom, no bias",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" scale_param { " SF " } }", GC);
  check_grad("scale axis 0 num_axes 2",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" scale_param { axis: 0 num_axes: 2 "
             "bias_term: true " SF " } }", GC);
  check_grad("scale axis 2 num_axes -1",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" scale_param { axis: 2 num_axes: -1 "
             "bias_term: true " SF " } }", GC);
  check_grad("scale num_axes 0 (a scalar)",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" scale_param { num_axes: 0 "
             "bias_term: true " SF " } }", GC);
  check_grad("scale axis -3 (canonical 1)",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" scale_param { axis: -3 " SF " } }", GC);
  check_grad("scale 2 bottoms",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5") INPUT("s", "dim: 3 dim: 4")
             "layer { name: \"sc\" type: \"Scale\" bottom: \"x\" bottom: \"s\" top: \"y\" }", GC);
  check_grad("scale 2 bottoms, bias_term",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5") INPUT("s", "dim: 3")
             "layer { name: \"sc\" type: \"Scale\" bottom: \"x\" bottom: \"s\" top: \"y\" scale_param { "
             "bias_term: true " SF " } }", GC);
  check_grad("scale 2 bottoms, axis 0",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5") INPUT("s", "dim: 2 dim: 3")
             "layer { name: \"sc\" type: \"Scale\" bottom: \"x\" bottom: \"s\" top: \"y\" scale_param { axis: 0 } }", GC);
  /* the parameter shapes */
  dd_net *n = make_net(INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
                       "layer { name: \"s\" type: \"Scale\" bottom: \"x\" top: \"y\" scale_param { axis: 2 num_axes: -1 "
                       "bias_term: true } }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  dd_layer *l = layer(n, "s");
  CHECK(l->n_params == 2 && l->params[0]->shape.ndim == 2 && l->params[0]->shape.dims[0] == 4 &&
        l->params[0]->shape.dims[1] == 5 && dd_shape_equal(&l->params[0]->shape, &l->params[1]->shape));
  float *s = dd_tensor_data_copy(l->params[0]), *b = dd_tensor_data_copy(l->params[1]);
  CHECK(s[0] == 1.0f && s[19] == 1.0f && b[0] == 0.0f && b[19] == 0.0f); /* Caffe's defaults: 1 and 0 */
  free(s);
  free(b);
  dd_net_destroy(n);
#undef SF
}

static void test_grad_bias(void) {
  check_grad("bias 1 bottom",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"b\" type: \"Bias\" bottom: \"x\" top: \"y\" bias_param { "
             "filler { type: \"uniform\" min: -1 max: 1 } } }", GC);
  check_grad("bias 1 bottom, axis 1 num_axes 2",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"b\" type: \"Bias\" bottom: \"x\" top: \"y\" bias_param { axis: 1 num_axes: 2 "
             "filler { type: \"uniform\" min: -1 max: 1 } } }", GC);
  check_grad("bias 2 bottoms",
             FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5") INPUT("b", "dim: 3 dim: 4")
             "layer { name: \"bi\" type: \"Bias\" bottom: \"x\" bottom: \"b\" top: \"y\" }", GC);
}

static void test_grad_relu(void) {
  check_grad("relu", FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"r\" type: \"ReLU\" bottom: \"x\" top: \"y\" }", GC_KINK);
  check_grad("relu negative_slope 0.1", FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"r\" type: \"ReLU\" bottom: \"x\" top: \"y\" relu_param { negative_slope: 0.1 } }",
             GC_KINK);
}

static void test_grad_eltwise(void) {
  check_grad("eltwise SUM coeff 0.5 -2 1.5",
             FB INPUT("a", "dim: 2 dim: 3 dim: 2 dim: 2") INPUT("b", "dim: 2 dim: 3 dim: 2 dim: 2")
             INPUT("c", "dim: 2 dim: 3 dim: 2 dim: 2")
             "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"c\" top: \"y\" "
             "eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 1.5 } }", GC);
  check_grad("eltwise SUM (default)",
             FB INPUT("a", "dim: 2 dim: 3") INPUT("b", "dim: 2 dim: 3")
             "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" top: \"y\" }", GC);
  check_grad("eltwise PROD 3 bottoms",
             FB INPUT("a", "dim: 2 dim: 3 dim: 2 dim: 2") INPUT("b", "dim: 2 dim: 3 dim: 2 dim: 2")
             INPUT("c", "dim: 2 dim: 3 dim: 2 dim: 2")
             "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"c\" top: \"y\" "
             "eltwise_param { operation: PROD } }", GC);
  static const char *const abc[] = {"a", "b", "c"};
  check_grad_distinct("eltwise MAX 3 bottoms",
                      FB INPUT("a", "dim: 2 dim: 3 dim: 2 dim: 2") INPUT("b", "dim: 2 dim: 3 dim: 2 dim: 2")
                      INPUT("c", "dim: 2 dim: 3 dim: 2 dim: 2")
                      "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"c\" top: \"y\" "
                      "eltwise_param { operation: MAX } }", abc, 3);
}

/* MAX ties go where Caffe sends them: between bottoms 0 and 1 to bottom 1 (Caffe tests a > b,
 * else takes b), from bottom 2 on to the earlier bottom (strictly greater wins). */
static void test_eltwise_max_ties(void) {
  for (int in_place = 0; in_place < 2; in_place++) {
    char text[1024];
    snprintf(text, sizeof text, FB INPUT("a", "dim: 4") INPUT("b", "dim: 4") INPUT("c", "dim: 4")
             "layer { name: \"e\" type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"c\" top: \"%s\" "
             "eltwise_param { operation: MAX } }", in_place ? "a" : "y");
    const char *top = in_place ? "a" : "y";
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    /* position 0: a == b; 1: a == b == c; 2: b == c > a; 3: a == c > b */
    float a[4] = {1, 2, 0, 5}, b[4] = {1, 2, 3, 1}, c[4] = {0, 2, 3, 5}, dy[4] = {10, 20, 30, 40};
    set_values(n, "a", a);
    set_values(n, "b", b);
    set_values(n, "c", c);
    dd_net_forward(n, NULL);
    float *y = dd_tensor_data_copy(blob(n, top));
    dd_tensor_set_diff(blob(n, top), dy);
    dd_net_backward(n);
    float *da = dd_tensor_diff_copy(blob(n, "a")), *db = dd_tensor_diff_copy(blob(n, "b")), *dc = dd_tensor_diff_copy(blob(n, "c"));
    const float wa[4] = {0, 0, 0, 40}, wb[4] = {10, 20, 30, 0}, wc[4] = {0, 0, 0, 0}, wy[4] = {1, 2, 3, 5};
    for (int i = 0; i < 4; i++) {
      CHECKF(y[i] == wy[i], "y[%d] = %g, want %g", i, y[i], wy[i]);
      CHECKF(da[i] == wa[i] && db[i] == wb[i] && dc[i] == wc[i], "%s position %d: gradients %g %g %g, Caffe gives %g %g %g",
             in_place ? "in place" : "", i, da[i], db[i], dc[i], wa[i], wb[i], wc[i]);
    }
    free(da);
    free(db);
    free(dc);
    free(y);
    dd_net_destroy(n);
  }
}

static void test_grad_softmax(void) {
  check_grad("softmax axis 1 on 4-D",
             FB INPUT("x", "dim: 2 dim: 4 dim: 3 dim: 2")
             "layer { name: \"s\" type: \"Softmax\" bottom: \"x\" top: \"y\" }", GC);
  check_grad("softmax axis -1 on 3-D",
             FB INPUT("x", "dim: 2 dim: 3 dim: 5")
             "layer { name: \"s\" type: \"Softmax\" bottom: \"x\" top: \"y\" softmax_param { axis: -1 } }", GC);
}

static const char *const sml_modes[] = {"normalization: FULL", "normalization: VALID",
                                        "normalization: BATCH_SIZE", "normalization: NONE",
                                        "normalize: false", "normalize: true", ""};

static void test_grad_softmax_loss(void) {
  for (size_t m = 0; m < sizeof sml_modes / sizeof sml_modes[0]; m++)
    for (int ign = 0; ign < 2; ign++) {
      char text[2048], what[128];
      snprintf(text, sizeof text,
               FB INPUT("x", "dim: 3 dim: 5 dim: 2 dim: 2") INPUT("label", "dim: 3 dim: 2 dim: 2")
               "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" "
               "loss_param { %s %s } }", sml_modes[m], ign ? "ignore_label: 2" : "");
      snprintf(what, sizeof what, "softmax loss {%s%s}", sml_modes[m], ign ? " ignore_label" : "");
      dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
      CHECKF(n != NULL, "%s", what);
      if (!n) continue;
      set_uniform(n, "x", 3 + m, -2, 2);
      set_labels(n, "label", 5, 9 + m, 0, 0);
      grad_check(n, GC, what);
      dd_net_destroy(n);
    }
  /* loss_weight 2, and a spatial softmax axis */
  dd_net *n = make_net(FB INPUT("x", "dim: 2 dim: 4 dim: 3") INPUT("label", "dim: 2 dim: 3")
                       "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" "
                       "loss_weight: 2 }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_uniform(n, "x", 4, -2, 2);
  set_labels(n, "label", 4, 5, 0, 0);
  grad_check(n, GC, "softmax loss, loss_weight 2");
  dd_net_destroy(n);
}

static void test_grad_concat(void) {
  check_grad("concat axis 0",
             FB INPUT("a", "dim: 2 dim: 3 dim: 2 dim: 2") INPUT("b", "dim: 1 dim: 3 dim: 2 dim: 2")
             "layer { name: \"c\" type: \"Concat\" bottom: \"a\" bottom: \"b\" top: \"y\" concat_param { axis: 0 } }", GC);
  check_grad("concat axis 1, 3 bottoms",
             FB INPUT("a", "dim: 2 dim: 3 dim: 2 dim: 2") INPUT("b", "dim: 2 dim: 1 dim: 2 dim: 2")
             INPUT("c", "dim: 2 dim: 2 dim: 2 dim: 2")
             "layer { name: \"c\" type: \"Concat\" bottom: \"a\" bottom: \"b\" bottom: \"c\" top: \"y\" }", GC);
  /* the values: rows of a, then of b, within each outer index */
  dd_net *n = make_net(FB INPUT("a", "dim: 2 dim: 2") INPUT("b", "dim: 2 dim: 1")
                       "layer { name: \"c\" type: \"Concat\" bottom: \"a\" bottom: \"b\" top: \"y\" }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  float a[4] = {1, 2, 3, 4}, b[2] = {5, 6}, want[6] = {1, 2, 5, 3, 4, 6};
  set_values(n, "a", a);
  set_values(n, "b", b);
  dd_net_forward(n, NULL);
  float *y = dd_tensor_data_copy(blob(n, "y"));
  CHECK(memcmp(y, want, sizeof want) == 0);
  free(y);
  dd_net_destroy(n);
}

static void test_grad_flatten_split(void) {
  check_grad("flatten", FB INPUT("x", "dim: 2 dim: 3 dim: 2 dim: 2")
             "layer { name: \"f\" type: \"Flatten\" bottom: \"x\" top: \"y\" }", GC);
  check_grad("split (explicit, 3 tops)", FB INPUT("x", "dim: 2 dim: 3 dim: 2")
             "layer { name: \"s\" type: \"Split\" bottom: \"x\" top: \"y0\" top: \"y1\" top: \"y2\" }", GC);
  dd_net *n = make_net(INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
                       "layer { name: \"f\" type: \"Flatten\" bottom: \"x\" top: \"y\" flatten_param { axis: 1 end_axis: 2 } }",
                       CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  dd_tensor *y = blob(n, "y");
  CHECK(y->shape.ndim == 3 && y->shape.dims[0] == 2 && y->shape.dims[1] == 12 && y->shape.dims[2] == 5);
  dd_net_destroy(n);
}

static void test_grad_dropout_fixed_mask(void) {
  /* with the mask held (no new iteration), dropout is linear: the checker applies */
  check_grad("dropout TRAIN (mask held)", FB INPUT("x", "dim: 2 dim: 3 dim: 4 dim: 5")
             "layer { name: \"d\" type: \"Dropout\" bottom: \"x\" top: \"y\" dropout_param { dropout_ratio: 0.3 } }", GC);
}

/* ---- KDLoss ------------------------------------------------------------------------------------ */

/* T^2 * KL(softmax(t/T) || softmax(s/T)) averaged over the rows, in double. */
static double kd_reference(const float *s, const float *t, int rows, int ch, double T) {
  double total = 0;
  for (int r = 0; r < rows; r++) {
    double zs = 0, zt = 0, ms = -INFINITY, mt = -INFINITY;
    for (int c = 0; c < ch; c++) {
      ms = fmax(ms, s[r * ch + c] / T);
      mt = fmax(mt, t[r * ch + c] / T);
    }
    for (int c = 0; c < ch; c++) {
      zs += exp(s[r * ch + c] / T - ms);
      zt += exp(t[r * ch + c] / T - mt);
    }
    double kl = 0;
    for (int c = 0; c < ch; c++) {
      double p = exp(t[r * ch + c] / T - mt) / zt, q = exp(s[r * ch + c] / T - ms) / zs;
      kl += p * log(p / q);
    }
    total += T * T * kl;
  }
  return total / rows;
}

static void test_kd_loss(void) {
  const double temps[] = {1.0, 2.0, 4.0};
  for (int k = 0; k < 3; k++) {
    char text[1024], what[64];
    snprintf(text, sizeof text,
             FB INPUT("s", "dim: 4 dim: 6") INPUT("t", "dim: 4 dim: 6")
             "layer { name: \"kd\" type: \"KDLoss\" bottom: \"s\" bottom: \"t\" top: \"kd\" "
             "distill_loss_param { temperature: %g } }", temps[k]);
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    set_uniform(n, "s", 20 + k, -3, 3);
    set_uniform(n, "t", 40 + k, -3, 3);
    double loss;
    dd_net_forward(n, &loss);
    float *s = dd_tensor_data_copy(blob(n, "s")), *t = dd_tensor_data_copy(blob(n, "t")), *top = dd_tensor_data_copy(blob(n, "kd"));
    double want = kd_reference(s, t, 4, 6, temps[k]);
    CHECKF(fabs(top[0] - want) <= 1e-5 * fmax(1, fabs(want)), "T=%g: loss %.8g, hand computation %.8g", temps[k],
           top[0], want);
    CHECKF(fabs(loss - want) <= 1e-5 * fmax(1, fabs(want)), "T=%g: net loss %.8g", temps[k], loss);
    free(s);
    free(t);
    free(top);
    snprintf(what, sizeof what, "kd loss T=%g (teacher gets none)", temps[k]);
    grad_check(n, GC, what);
    dd_net_destroy(n);
  }
  /* identical logits: zero loss and zero gradient */
  dd_net *n = make_net(FB INPUT("s", "dim: 2 dim: 3") INPUT("t", "dim: 2 dim: 3")
                       "layer { name: \"kd\" type: \"KDLoss\" bottom: \"s\" bottom: \"t\" top: \"kd\" loss_weight: 0.5 }",
                       CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  float v[6] = {1, 2, 3, -1, 0, 1};
  set_values(n, "s", v);
  set_values(n, "t", v);
  double loss;
  dd_net_forward(n, &loss);
  dd_net_backward(n);
  float *ds = dd_tensor_diff_copy(blob(n, "s"));
  CHECKF(fabs(loss) < 1e-6, "loss %g", loss);
  for (int i = 0; i < 6; i++) CHECKF(fabsf(ds[i]) < 1e-6f, "ds[%d] = %g", i, ds[i]);
  free(ds);
  /* loss_weight 0.5 scales the gradient */
  set_uniform(n, "s", 3, -2, 2);
  grad_check(n, GC, "kd loss, loss_weight 0.5");
  dd_net_destroy(n);
}

int main(void) {
  if (layers_begin()) return 1;
  RUN(test_grad_convolution);
  RUN(test_grad_pooling);
  RUN(test_grad_inner_product);
  RUN(test_inner_product_large);
  RUN(test_grad_batch_norm);
  RUN(test_grad_scale);
  RUN(test_grad_bias);
  RUN(test_grad_relu);
  RUN(test_grad_eltwise);
  RUN(test_eltwise_max_ties);
  RUN(test_grad_softmax);
  RUN(test_grad_softmax_loss);
  RUN(test_grad_concat);
  RUN(test_grad_flatten_split);
  RUN(test_grad_dropout_fixed_mask);
  RUN(test_kd_loss);
  return layers_end();
}
