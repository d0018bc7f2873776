/* The catalogue's structure layers on the CPU backend: Slice, Reshape, Crop, Tile, ArgMax,
 * Embed, Im2col. Forwards against index arithmetic written here (each top element located in the
 * bottom by hand), finite-difference gradients of every input and parameter that has one, the
 * indices that get none (Embed, Crop's reference), and the errors that name their field. */
#include "test_layers.h"

#define IN4(name, a, b, c, d) \
  "layer { name: '" name "' type: 'Input' top: '" name "' input_param { shape { dim: " #a " dim: " #b " dim: " #c " dim: " #d " } } }\n"

static void test_slice(void) {
  dd_net *n = make_net(IN4("x", 2, 5, 3, 2) "layer { name: 's' type: 'Slice' bottom: 'x' top: 'a' top: 'b' top: 'c' "
                       "slice_param { axis: 1 slice_point: 1 slice_point: 4 } }\n",
                       CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_uniform(n, "x", 1, -1, 1);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  const float *x = blob(n, "x")->data;
  const char *tops[3] = {"a", "b", "c"};
  int lo[3] = {0, 1, 4}, len[3] = {1, 3, 1};
  for (int t = 0; t < 3; t++) {
    dd_tensor *y = blob(n, tops[t]);
    CHECK(y->shape.dims[1] == len[t]);
    for (int b = 0; b < 2; b++)
      for (int c = 0; c < len[t]; c++)
        for (int k = 0; k < 6; k++) CHECK(y->data[(b * len[t] + c) * 6 + k] == x[(b * 5 + lo[t] + c) * 6 + k]);
  }
  dd_net_destroy(n);
  check_grad("Slice (equal parts, axis -1)",
             FB IN4("x", 2, 3, 2, 4) "layer { name: 's' type: 'Slice' bottom: 'x' top: 'a' top: 'b' slice_param { axis: -1 } }\n",
             GC);
  char err[600];
  CHECK(net_error(IN4("x", 2, 5, 3, 2) "layer { name: 's' type: 'Slice' bottom: 'x' top: 'a' top: 'b' "
                  "slice_param { slice_point: 3 slice_point: 4 } }\n", CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "slice_param.slice_point is given 2 times for 2 tops");
  CHECK(net_error(IN4("x", 2, 5, 3, 2) "layer { name: 's' type: 'Slice' bottom: 'x' top: 'a' top: 'b' }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "2 tops do not divide the slice axis 1 (size 5) evenly");
}

static void test_reshape(void) {
  dd_net *n = make_net(IN4("x", 2, 3, 4, 5) "layer { name: 'r' type: 'Reshape' bottom: 'x' top: 'y' "
                       "reshape_param { shape { dim: 0 dim: -1 dim: 2 } axis: 1 num_axes: 2 } }\n",
                       CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  dd_tensor *y = blob(n, "y");
  /* axes 1 and 2 (3, 4) become (3 copied, -1 inferred as 2, 2) */
  CHECK(y->shape.ndim == 5 && y->shape.dims[0] == 2 && y->shape.dims[1] == 3 && y->shape.dims[2] == 2 &&
        y->shape.dims[3] == 2 && y->shape.dims[4] == 5);
  set_uniform(n, "x", 2, -1, 1);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  CHECK(memcmp(y->data, blob(n, "x")->data, 120 * sizeof(float)) == 0);
  dd_net_destroy(n);
  check_grad("Reshape", FB IN4("x", 2, 3, 2, 2) "layer { name: 'r' type: 'Reshape' bottom: 'x' top: 'y' "
             "reshape_param { shape { dim: -1 dim: 4 } } }\n", GC);
  char err[600];
  CHECK(net_error(IN4("x", 2, 3, 4, 5) "layer { name: 'r' type: 'Reshape' bottom: 'x' top: 'y' "
                  "reshape_param { shape { dim: -1 dim: -1 } } }\n", CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "more than one -1 dim");
  CHECK(net_error(IN4("x", 2, 3, 4, 5) "layer { name: 'r' type: 'Reshape' bottom: 'x' top: 'y' "
                  "reshape_param { shape { dim: 7 dim: -1 } } }\n", CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "not divisible by the product of the given dims 7");
}

static void test_crop(void) {
  dd_net *n = make_net(FB IN4("x", 2, 3, 6, 5) IN4("ref", 1, 1, 3, 2)
                       "layer { name: 'c' type: 'Crop' bottom: 'x' bottom: 'ref' top: 'y' "
                       "crop_param { axis: 2 offset: 2 offset: 1 } }\n",
                       CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_uniform(n, "x", 3, -1, 1);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  const float *x = blob(n, "x")->data, *y = blob(n, "y")->data;
  for (int p = 0; p < 6; p++)
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 2; j++) CHECK(y[(p * 3 + i) * 2 + j] == x[(p * 6 + i + 2) * 5 + j + 1]);
  CHECK(!layer(n, "c")->propagate_down[1]); /* the reference gets no gradient */
  grad_check(n, GC, "Crop");
  dd_net_destroy(n);
  char err[600];
  CHECK(net_error(IN4("x", 2, 3, 6, 5) IN4("ref", 1, 1, 3, 2)
                  "layer { name: 'c' type: 'Crop' bottom: 'x' bottom: 'ref' top: 'y' crop_param { offset: 4 } }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "the crop of axis 2 is past the bottom: crop_param.offset 4 + size 3 > 6");
}

static void test_tile(void) {
  dd_net *n = make_net(IN4("x", 2, 3, 2, 1) "layer { name: 't' type: 'Tile' bottom: 'x' top: 'y' tile_param { axis: 1 tiles: 3 } }\n",
                       CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_uniform(n, "x", 4, -1, 1);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  const float *x = blob(n, "x")->data, *y = blob(n, "y")->data;
  CHECK(blob(n, "y")->shape.dims[1] == 9);
  for (int b = 0; b < 2; b++)
    for (int t = 0; t < 3; t++)
      for (int k = 0; k < 6; k++) CHECK(y[(b * 3 + t) * 6 + k] == x[b * 6 + k]);
  dd_net_destroy(n);
  check_grad("Tile", FB IN4("x", 2, 2, 3, 1) "layer { name: 't' type: 'Tile' bottom: 'x' top: 'y' tile_param { axis: 2 tiles: 2 } }\n",
             GC);
  char err[600];
  CHECK(net_error(IN4("x", 2, 3, 2, 1) "layer { name: 't' type: 'Tile' bottom: 'x' top: 'y' tile_param { tiles: 0 } }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "tile_param.tiles 0 must be > 0");
  CHECK(net_error(IN4("x", 2, 3, 2, 1) "layer { name: 't' type: 'Tile' bottom: 'x' top: 'y' }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "tile_param.tiles is required");
}

static void test_argmax(void) {
  /* ties: the higher index ranks first (Caffe's sort over (value, index) pairs) */
  const float x[10] = {0.5f, 2, -1, 2, 0.25f, /**/ 3, 1, 4, 1, 5};
  dd_net *n = make_net("layer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 5 } } }\n"
                       "layer { name: 'a' type: 'ArgMax' bottom: 'x' top: 'y' argmax_param { top_k: 3 out_max_val: true } }\n",
                       CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_values(n, "x", x);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  dd_tensor *y = blob(n, "y");
  CHECK(y->shape.ndim == 3 && y->shape.dims[0] == 2 && y->shape.dims[1] == 2 && y->shape.dims[2] == 3);
  const float want[12] = {3, 1, 0, 2, 2, 0.5f, /**/ 4, 2, 0, 5, 4, 3};
  for (int i = 0; i < 12; i++) CHECKF(y->data[i] == want[i], "y[%d] = %g, want %g", i, y->data[i], want[i]);
  dd_net_destroy(n);
  /* over an axis: the values themselves with out_max_val */
  n = make_net(IN4("x", 2, 3, 4, 1) "layer { name: 'a' type: 'ArgMax' bottom: 'x' top: 'y' argmax_param { axis: 1 } }\n",
               CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_uniform(n, "x", 6, -1, 1);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  const float *xv = blob(n, "x")->data, *yv = blob(n, "y")->data;
  for (int b = 0; b < 2; b++)
    for (int i = 0; i < 4; i++) {
      int best = 0;
      for (int c = 1; c < 3; c++)
        if (xv[(b * 3 + c) * 4 + i] > xv[(b * 3 + best) * 4 + i]) best = c;
      CHECK(yv[b * 4 + i] == (float)best);
    }
  dd_net_destroy(n);
  char err[600];
  CHECK(net_error("layer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 2 dim: 5 } } }\n"
                  "layer { name: 'a' type: 'ArgMax' bottom: 'x' top: 'y' argmax_param { top_k: 6 } }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "argmax_param.top_k 6 is more than the 5 values of each item");
}

static const char *EMBED = FB
    "layer { name: 'ids' type: 'Input' top: 'ids' input_param { shape { dim: 2 dim: 3 } } }\n"
    "layer { name: 'e' type: 'Embed' bottom: 'ids' top: 'y' embed_param { num_output: 4 input_dim: 5 "
    "weight_filler { type: 'uniform' min: -1 max: 1 } bias_filler { type: 'uniform' min: -1 max: 1 } } }\n";

static void test_embed(void) {
  dd_net *n = make_net(EMBED, CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  const float ids[6] = {4, 0, 4, 2, 1, 0};
  set_values(n, "ids", ids);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  dd_layer *l = layer(n, "e");
  const float *w = l->params[0]->data, *bias = l->params[1]->data, *y = blob(n, "y")->data;
  CHECK(blob(n, "y")->shape.ndim == 3 && blob(n, "y")->shape.dims[2] == 4);
  for (int j = 0; j < 6; j++)
    for (int c = 0; c < 4; c++) CHECK(y[j * 4 + c] == w[(int)ids[j] * 4 + c] + bias[c]);
  CHECK(!l->propagate_down[0]);
  grad_check(n, GC, "Embed (weights, bias)");
  dd_net_destroy(n);
  n = make_net(EMBED, CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  const float bad[6] = {0, 1, 5, 0, 0, 0};
  set_values(n, "ids", bad);
  CHECK(dd_net_forward(n, NULL) != 0);
  CHECK_CONTAINS(n->status_msg, "index 5 (position 2 of the bottom) is not a row of the embedding, which has 5");
  dd_net_destroy(n);
}

static void test_im2col(void) {
  dd_net *n = make_net(IN4("x", 1, 2, 4, 5) "layer { name: 'i' type: 'Im2col' bottom: 'x' top: 'y' "
                       "convolution_param { kernel_size: 3 pad: 1 stride: 2 dilation: 1 } }\n",
                       CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_uniform(n, "x", 7, -1, 1);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  dd_tensor *y = blob(n, "y");
  CHECK(y->shape.dims[1] == 18 && y->shape.dims[2] == 2 && y->shape.dims[3] == 3);
  const float *x = blob(n, "x")->data;
  for (int ch = 0; ch < 2; ch++)
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 3; j++)
        for (int oy = 0; oy < 2; oy++)
          for (int ox = 0; ox < 3; ox++) {
            int iy = oy * 2 - 1 + i, ix = ox * 2 - 1 + j;
            float want = iy >= 0 && iy < 4 && ix >= 0 && ix < 5 ? x[(ch * 4 + iy) * 5 + ix] : 0;
            CHECK(y->data[(((ch * 3 + i) * 3 + j) * 2 + oy) * 3 + ox] == want);
          }
  dd_net_destroy(n);
  check_grad("Im2col (dilation 2)", FB IN4("x", 2, 2, 5, 5) "layer { name: 'i' type: 'Im2col' bottom: 'x' top: 'y' "
             "convolution_param { kernel_size: 2 pad: 1 stride: 1 dilation: 2 } }\n", GC);
}

int main(void) {
  if (layers_begin()) return 1;
  RUN(test_slice);
  RUN(test_reshape);
  RUN(test_crop);
  RUN(test_tile);
  RUN(test_argmax);
  RUN(test_embed);
  RUN(test_im2col);
  return layers_end();
}
