/* Named (shared) parameters, Caffe's param { name: ... } (its Siamese networks): a second layer
 * naming a parameter uses the first one's values and adds its gradient to it; only the owner is
 * learnable; shapes, share_mode and lr_mult / decay_mult are checked as Caffe checks them. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>

#include "test_layers.h"

#define TWO_IPS(param_a, param_b)                                                                                   \
  "layer { name: \"a\" type: \"Input\" top: \"a\" input_param { shape { dim: 2 dim: 3 } } }\n"                      \
  "layer { name: \"b\" type: \"Input\" top: \"b\" input_param { shape { dim: 2 dim: 3 } } }\n"                      \
  "layer { name: \"ipa\" type: \"InnerProduct\" bottom: \"a\" top: \"ya\" " param_a                                 \
  " inner_product_param { num_output: 4 weight_filler { type: \"gaussian\" std: 0.5 } bias_filler { type: \"gaussian\" std: 0.5 } } }\n" \
  "layer { name: \"ipb\" type: \"InnerProduct\" bottom: \"b\" top: \"yb\" " param_b                                 \
  " inner_product_param { num_output: 4 weight_filler { type: \"gaussian\" std: 0.5 } bias_filler { type: \"gaussian\" std: 0.5 } } }\n"

/* ya and yb from shared weights equal each other on equal inputs; the shared gradient is the sum
 * of both layers' gradients; the net has one learnable pair, not two. */
static void test_shared_values_and_gradient(void) {
  const char *text = TWO_IPS("param { name: \"w\" } param { name: \"bias\" }", "param { name: \"w\" } param { name: \"bias\" }");
  dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  CHECKF(n->n_params == 2, "learnable parameters: %zu", n->n_params);
  const float x[6] = {0.5f, -1, 2, 0.25f, 1.5f, -0.75f};
  set_values(n, "a", x);
  set_values(n, "b", x);
  double loss;
  REQUIRE(dd_net_forward(n, &loss) == 0);
  float ya[8], yb[8];
  dd_tensor_get_data(blob(n, "ya"), ya);
  dd_tensor_get_data(blob(n, "yb"), yb);
  CHECK(memcmp(ya, yb, sizeof ya) == 0);
  /* gradient: top diffs 1 on ya, 2 on yb: dW = 3 * sum_rows x (each output row), db = 3 * 2 */
  dd_net_clear_param_diffs(n);
  float one[8], two[8];
  for (int i = 0; i < 8; i++) one[i] = 1, two[i] = 2;
  dd_tensor_set_diff(blob(n, "ya"), one);
  dd_tensor_set_diff(blob(n, "yb"), two);
  for (int i = (int)n->n_layers - 1; i >= 0; i--)
    if (n->layers[i].ops->backward) n->layers[i].ops->backward(&n->layers[i]);
  float dw[12], db[4];
  dd_tensor_get_diff(n->params[0].t, dw);
  dd_tensor_get_diff(n->params[1].t, db);
  for (int o = 0; o < 4; o++) {
    CHECKF(fabsf(db[o] - 6) < 1e-6f, "db[%d] = %g", o, db[o]);
    for (int k = 0; k < 3; k++) {
      float want = 3 * (x[k] + x[3 + k]);
      CHECKF(fabsf(dw[o * 3 + k] - want) < 1e-5f, "dW[%d][%d] = %g, want %g", o, k, dw[o * 3 + k], want);
    }
  }
  /* the follower's tensor is the owner's memory */
  int lb = dd_net_layer_index(n, "ipb"), la = dd_net_layer_index(n, "ipa");
  CHECK(n->layers[lb].params[0]->data == n->layers[la].params[0]->data);
  CHECK(n->layers[lb].params[0]->diff == n->layers[la].params[0]->diff);
  dd_net_destroy(n);
}

/* Unnamed parameters stay separate: two learnable pairs with different values. */
static void test_unnamed_separate(void) {
  dd_net *n = make_net(TWO_IPS("", ""), CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  CHECK(n->n_params == 4);
  dd_net_destroy(n);
}

static void test_errors(void) {
  char err[1024];
  /* shape mismatch (STRICT): 4 x 3 against 4 x 6 */
  const char *mismatch =
      "layer { name: \"a\" type: \"Input\" top: \"a\" input_param { shape { dim: 2 dim: 3 } } }\n"
      "layer { name: \"b\" type: \"Input\" top: \"b\" input_param { shape { dim: 2 dim: 6 } } }\n"
      "layer { name: \"ipa\" type: \"InnerProduct\" bottom: \"a\" top: \"ya\" param { name: \"w\" } inner_product_param { num_output: 4 bias_term: false } }\n"
      "layer { name: \"ipb\" type: \"InnerProduct\" bottom: \"b\" top: \"yb\" param { name: \"w\" } inner_product_param { num_output: 4 bias_term: false } }\n";
  CHECK(net_error(mismatch, CAFFE__PHASE__TRAIN, err, sizeof err) == DD_ESHAPE);
  CHECK_CONTAINS(err, "layer \"ipb\": parameter 0 shares \"w\" with layer \"ipa\", but its shape 4x6 differs from the owner's 4x3");
  CHECK_CONTAINS(err, "STRICT");
  /* PERMISSIVE: 4 x 3 against 2 x 6 inputs giving a 2 x 6 weight? counts 12 and 12 */
  const char *permissive =
      "layer { name: \"a\" type: \"Input\" top: \"a\" input_param { shape { dim: 2 dim: 3 } } }\n"
      "layer { name: \"b\" type: \"Input\" top: \"b\" input_param { shape { dim: 2 dim: 6 } } }\n"
      "layer { name: \"ipa\" type: \"InnerProduct\" bottom: \"a\" top: \"ya\" param { name: \"w\" } inner_product_param { num_output: 4 bias_term: false } }\n"
      "layer { name: \"ipb\" type: \"InnerProduct\" bottom: \"b\" top: \"yb\" param { name: \"w\" share_mode: PERMISSIVE } inner_product_param { num_output: 2 bias_term: false } }\n";
  dd_net *n = make_net(permissive, CAFFE__PHASE__TRAIN);
  CHECK(n != NULL);
  if (n) {
    CHECK(n->n_params == 1);
    int lb = dd_net_layer_index(n, "ipb");
    CHECK(n->layers[lb].params[0]->shape.dims[0] == 2 && n->layers[lb].params[0]->shape.dims[1] == 6);
  }
  dd_net_destroy(n);
  /* lr_mult set on both, differing */
  const char *lr = TWO_IPS("param { name: \"w\" lr_mult: 1 }", "param { name: \"w\" lr_mult: 2 }");
  CHECK(net_error(lr, CAFFE__PHASE__TRAIN, err, sizeof err) == DD_EINVAL);
  CHECK_CONTAINS(err, "shared parameter \"w\" has lr_mult 2, layer \"ipa\" (its owner) 1");
  /* lr_mult set on the follower only: it becomes the owner's */
  n = make_net(TWO_IPS("param { name: \"w\" }", "param { name: \"w\" lr_mult: 0.5 decay_mult: 0 }"), CAFFE__PHASE__TRAIN);
  CHECK(n != NULL);
  if (n) CHECK(n->params[0].lr_mult == 0.5f && n->params[0].decay_mult == 0.0f);
  dd_net_destroy(n);
}

int main(void) {
  if (layers_begin()) return 1;
  RUN(test_shared_values_and_gradient);
  RUN(test_unnamed_separate);
  RUN(test_errors);
  return layers_end();
}
