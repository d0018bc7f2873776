/* BatchReindex (Caffe's BatchReindexLayer) on the CPU backend: the forward against rows picked by
 * hand (repeats and omitted rows), the backward's sums into repeated rows and zeros for omitted
 * ones, a finite-difference check of bottom[0]'s gradient, no gradient into the indices even with
 * force_backward, and the errors: indices that are not 1-D (at build, naming bottom[1]) and an
 * index out of range or not an integer (at forward, naming the index and its position). */
#include "test_layers.h"

static const char *NET = FB
    "layer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 3 dim: 2 dim: 2 } } }\n"
    "layer { name: 'ix' type: 'Input' top: 'ix' input_param { shape { dim: 5 } } }\n"
    "layer { name: 'r' type: 'BatchReindex' bottom: 'x' bottom: 'ix' top: 'y' }\n";

static void test_reindex_forward_backward(void) {
  dd_net *n = make_net(NET, CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  float x[12], ix[5] = {2, 0, 2, 2, 0};
  for (int i = 0; i < 12; i++) x[i] = (float)(i + 1) * 0.5f;
  set_values(n, "x", x);
  set_values(n, "ix", ix);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  dd_tensor *y = blob(n, "y");
  CHECK(y->shape.ndim == 3 && y->shape.dims[0] == 5 && y->shape.dims[1] == 2 && y->shape.dims[2] == 2);
  for (int i = 0; i < 5; i++)
    for (int k = 0; k < 4; k++) CHECKF(y->data[i * 4 + k] == x[(int)ix[i] * 4 + k], "y[%d][%d] = %g", i, k, y->data[i * 4 + k]);
  /* backward by hand: top diff (i, k) = 10 i + k; row 2 gets rows 0, 2, 3; row 0 gets 1, 4; row 1 none */
  for (int i = 0; i < 20; i++) y->diff[i] = (float)(10 * (i / 4) + i % 4);
  dd_tensor *xt = blob(n, "x"), *it = blob(n, "ix");
  for (int i = 0; i < 12; i++) xt->diff[i] = 99; /* overwritten, not accumulated */
  for (int i = 0; i < 5; i++) it->diff[i] = 7;
  dd_layer *l = layer(n, "r");
  REQUIRE(l && l->propagate_down[0]);
  CHECK(!l->propagate_down[1]);
  l->ops->backward(l);
  for (int k = 0; k < 4; k++) {
    CHECKF(xt->diff[0 * 4 + k] == (float)(10 + 40 + 2 * k), "dx[0][%d] = %g", k, xt->diff[k]);
    CHECKF(xt->diff[1 * 4 + k] == 0.0f, "dx[1][%d] = %g", k, xt->diff[4 + k]);
    CHECKF(xt->diff[2 * 4 + k] == (float)(0 + 20 + 30 + 3 * k), "dx[2][%d] = %g", k, xt->diff[8 + k]);
  }
  for (int i = 0; i < 5; i++) CHECK(it->diff[i] == 7); /* the indices get no gradient */
  dd_net_destroy(n);
}

static void test_reindex_gradient(void) {
  dd_net *n = make_net(NET, CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_uniform(n, "x", 3, -1, 1);
  float ix[5] = {1, 1, 0, 2, 1};
  set_values(n, "ix", ix);
  grad_check(n, GC, "BatchReindex");
  dd_net_destroy(n);
}

static void test_reindex_errors(void) {
  char err[600];
  CHECK(net_error("layer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 3 dim: 2 } } }\n"
                  "layer { name: 'ix' type: 'Input' top: 'ix' input_param { shape { dim: 2 dim: 2 } } }\n"
                  "layer { name: 'r' type: 'BatchReindex' bottom: 'x' bottom: 'ix' top: 'y' }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "r: ");
  CHECK_CONTAINS(err, "bottom[1] (the indices) must have 1 axis, it has 2");
  const float bad[][5] = {{0, 1, 3, 0, 0}, {0, -1, 0, 0, 0}, {0, 0, 0, 1.5f, 0}};
  const char *want[] = {"index 3 (position 2 of bottom[1]) is not a row of bottom[0], which has 3 (0 to 2)",
                        "index -1 (position 1", "index 1.5 (position 3"};
  for (int c = 0; c < 3; c++) {
    dd_net *n = make_net(NET, CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    set_values(n, "ix", bad[c]);
    CHECK(dd_net_forward(n, NULL) != 0);
    CHECK_CONTAINS(n->status_msg, want[c]);
    CHECK_CONTAINS(n->status_msg, "layer \"r\"");
    dd_net_destroy(n);
  }
}

int main(void) {
  if (layers_begin()) return 1;
  RUN(test_reindex_forward_backward);
  RUN(test_reindex_gradient);
  RUN(test_reindex_errors);
  return layers_end();
}
