/* Caffe's upgrades of old nets and solvers (core/format/upgrade.c): each old form is upgraded to
 * exactly the current form written by hand (the two print the same text), builds the same net
 * and gives the same outputs, gradients and parameters; old .caffemodel weights load; `distilld
 * check --upgrade` writes a form that reads back and upgrades to itself (byte-identical); and the
 * refusals (Python, WindowData, fork layer types and fields, what Caffe's upgrade refuses) name
 * the layer or field and say why. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/caffe_io.h"
#include "format/upgrade.h"
#include "test_files.h"
#include "test_layers.h"

static char tmpdir[256];

/* `text` parsed and upgraded (NULL on failure, with the message printed); forms into *forms. */
static Caffe__NetParameter *upgraded(const char *text, dd_upgrade_report *rep) {
  Caffe__NetParameter *p = test_parse_net(text);
  if (!p) return NULL;
  char err[1024];
  int r = dd_net_upgrade(p, rep, err, sizeof err);
  CHECKF(r == 0, "upgrade: %s", err);
  if (r) {
    caffe__net_parameter__free_unpacked(p, NULL);
    return NULL;
  }
  return p;
}

/* The upgrade's error for `text` (0 when it upgrades). */
static int upgrade_error(const char *text, char *err, size_t errlen) {
  Caffe__NetParameter *p = test_parse_net(text);
  if (!p) return -1000;
  err[0] = '\0';
  int r = dd_net_upgrade(p, NULL, err, errlen);
  caffe__net_parameter__free_unpacked(p, NULL);
  return r;
}

/* The upgraded `old` prints exactly as `modern` (parsed, not upgraded). */
static void check_same_text(const char *what, const Caffe__NetParameter *up, const char *modern) {
  Caffe__NetParameter *m = test_parse_net(modern);
  REQUIRE(up && m);
  char *a = dd_text_print(&up->base), *b = dd_text_print(&m->base);
  CHECKF(a && b && !strcmp(a, b), "%s: the upgraded form differs:\n--- upgraded ---\n%s--- expected ---\n%s", what,
         a, b);
  free(a);
  free(b);
  caffe__net_parameter__free_unpacked(m, NULL);
}

/* Builds both nets (same seed), gives them the same inputs, runs forward and backward, and checks
 * every blob (data and diff) and every parameter (values, lr_mult, decay_mult) is the same. */
static void check_same_run(const char *what, const Caffe__NetParameter *a, const Caffe__NetParameter *b,
                           Caffe__Phase phase) {
  dd_net *na = NULL, *nb = NULL;
  char err[1024];
  int r = dd_net_create(&na, a, phase, be, 11, NULL, err, sizeof err);
  CHECKF(r == 0, "%s: build (upgraded): %s", what, err);
  r = r ? r : dd_net_create(&nb, b, phase, be, 11, NULL, err, sizeof err);
  CHECKF(r == 0, "%s: build (modern): %s", what, err);
  if (r) goto out;
  REQUIRE(na->n_blobs == nb->n_blobs && na->n_params == nb->n_params);
  fill_inputs(na, 5, -1, 1);
  fill_inputs(nb, 5, -1, 1);
  if (dd_net_blob(na, "label")) {
    set_labels(na, "label", 3, 9, 0, 0);
    set_labels(nb, "label", 3, 9, 0, 0);
  }
  double la = 0, lb = 0;
  CHECK(dd_net_forward(na, &la) == 0 && dd_net_forward(nb, &lb) == 0);
  CHECKF(la == lb, "%s: loss %g vs %g", what, la, lb);
  dd_net_backward(na);
  dd_net_backward(nb);
  for (size_t i = 0; i < na->n_blobs; i++) {
    dd_tensor *ta = na->blobs[i], *tb = nb->blobs[i];
    CHECKF(!strcmp(ta->name, tb->name) && ta->count == tb->count, "%s: blob %zu: %s vs %s", what, i, ta->name,
           tb->name);
    if (ta->count != tb->count) continue;
    float *da = dd_tensor_data_copy(ta), *db = dd_tensor_data_copy(tb);
    float *ga = dd_tensor_diff_copy(ta), *gb = dd_tensor_diff_copy(tb);
    CHECKF(!memcmp(da, db, (size_t)ta->count * sizeof *da), "%s: blob %s data differs", what, ta->name);
    CHECKF(!memcmp(ga, gb, (size_t)ta->count * sizeof *ga), "%s: blob %s diff differs", what, ta->name);
    free(da), free(db), free(ga), free(gb);
  }
  for (size_t i = 0; i < na->n_params; i++) {
    const dd_net_param *pa = &na->params[i], *pb = &nb->params[i];
    CHECKF(pa->lr_mult == pb->lr_mult && pa->decay_mult == pb->decay_mult, "%s: param %zu: lr %g/%g decay %g/%g",
           what, i, pa->lr_mult, pb->lr_mult, pa->decay_mult, pb->decay_mult);
    float *va = dd_tensor_data_copy(pa->t), *vb = dd_tensor_data_copy(pb->t);
    CHECKF(pa->t->count == pb->t->count && !memcmp(va, vb, (size_t)pa->t->count * sizeof *va),
           "%s: param %zu values differ", what, i);
    free(va), free(vb);
  }
out:
  dd_net_destroy(na);
  dd_net_destroy(nb);
}

/* ---- V1 ------------------------------------------------------------------------------------ */

static const char *v1_net =
    "name: \"v1\"\n"
    "force_backward: true\n"
    "input: \"data\" input_dim: 2 input_dim: 2 input_dim: 6 input_dim: 6\n"
    "input: \"label\" input_dim: 2 input_dim: 1 input_dim: 1 input_dim: 1\n"
    "layers { name: \"conv\" type: CONVOLUTION bottom: \"data\" top: \"conv\" blobs_lr: 1 blobs_lr: 2 "
    "weight_decay: 1 weight_decay: 0 param: \"cw\" blob_share_mode: PERMISSIVE "
    "convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: \"gaussian\" std: 0.3 } "
    "bias_filler { type: \"uniform\" min: -1 max: 1 } } }\n"
    "layers { name: \"relu\" type: RELU bottom: \"conv\" top: \"conv\" relu_param { negative_slope: 0.1 } }\n"
    "layers { name: \"pool\" type: POOLING bottom: \"conv\" top: \"pool\" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }\n"
    "layers { name: \"cat\" type: CONCAT bottom: \"pool\" bottom: \"pool\" top: \"cat\" }\n"
    "layers { name: \"ip\" type: INNER_PRODUCT bottom: \"cat\" top: \"ip\" blobs_lr: 0.5 "
    "inner_product_param { num_output: 3 weight_filler { type: \"xavier\" } } }\n"
    "layers { name: \"acc\" type: ACCURACY bottom: \"ip\" bottom: \"label\" top: \"acc\" include { phase: TEST } }\n"
    "layers { name: \"loss\" type: SOFTMAX_LOSS bottom: \"ip\" bottom: \"label\" top: \"loss\" loss_weight: 2 "
    "exclude { phase: TEST } }\n";

static const char *v1_modern =
    "name: \"v1\"\n"
    "force_backward: true\n"
    "layer { name: \"input\" type: \"Input\" top: \"data\" top: \"label\" "
    "input_param { shape { dim: 2 dim: 2 dim: 6 dim: 6 } shape { dim: 2 dim: 1 dim: 1 dim: 1 } } }\n"
    "layer { name: \"conv\" type: \"Convolution\" bottom: \"data\" top: \"conv\" "
    "param { name: \"cw\" share_mode: PERMISSIVE lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 } "
    "convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: \"gaussian\" std: 0.3 } "
    "bias_filler { type: \"uniform\" min: -1 max: 1 } } }\n"
    "layer { name: \"relu\" type: \"ReLU\" bottom: \"conv\" top: \"conv\" relu_param { negative_slope: 0.1 } }\n"
    "layer { name: \"pool\" type: \"Pooling\" bottom: \"conv\" top: \"pool\" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }\n"
    "layer { name: \"cat\" type: \"Concat\" bottom: \"pool\" bottom: \"pool\" top: \"cat\" }\n"
    "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"cat\" top: \"ip\" param { lr_mult: 0.5 } "
    "inner_product_param { num_output: 3 weight_filler { type: \"xavier\" } } }\n"
    "layer { name: \"acc\" type: \"Accuracy\" bottom: \"ip\" bottom: \"label\" top: \"acc\" include { phase: TEST } }\n"
    "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"ip\" bottom: \"label\" top: \"loss\" loss_weight: 2 "
    "exclude { phase: TEST } }\n";

static void test_v1_net(void) {
  dd_upgrade_report rep = {0};
  Caffe__NetParameter *up = upgraded(v1_net, &rep);
  REQUIRE(up);
  CHECK(rep.forms == (DD_UPGRADE_V1 | DD_UPGRADE_INPUT));
  CHECK(rep.notes_len == 0);
  CHECK(up->n_layers == 0 && up->n_input == 0 && up->n_input_dim == 0);
  check_same_text("v1", up, v1_modern);
  Caffe__NetParameter *m = test_parse_net(v1_modern);
  check_same_run("v1 TRAIN", up, m, CAFFE__PHASE__TRAIN);
  check_same_run("v1 TEST", up, m, CAFFE__PHASE__TEST);
  caffe__net_parameter__free_unpacked(m, NULL);
  /* A second upgrade finds nothing to do. */
  dd_upgrade_report again = {0};
  char err[256];
  CHECK(dd_net_upgrade(up, &again, err, sizeof err) == 0 && again.forms == 0);
  check_same_text("v1 twice", up, v1_modern);
  caffe__net_parameter__free_unpacked(up, NULL);

  char s[256];
  dd_upgrade_forms_str(DD_UPGRADE_V1 | DD_UPGRADE_INPUT, s, sizeof s);
  CHECK(!strcmp(s, "V1 layers, net-level input fields"));
  CHECK(!strcmp(dd_v1_layer_type_name(CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__SOFTMAX_LOSS), "SoftmaxWithLoss"));
  CHECK(!strcmp(dd_v1_layer_type_name(CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__DECONVOLUTION), "Deconvolution"));
  CHECK(dd_v1_layer_type_name(999) == NULL);
}

/* Every V1 type maps to Caffe's type string; a V1 Deconvolution keeps its convolution_param. */
static void test_v1_types(void) {
  dd_upgrade_report rep = {0};
  Caffe__NetParameter *up = upgraded(
      "layers { name: \"d\" type: DECONVOLUTION convolution_param { num_output: 2 kernel_size: 4 stride: 2 } }\n"
      "layers { name: \"e\" type: ELTWISE eltwise_param { operation: MAX } }\n"
      "layers { name: \"h\" type: HDF5_DATA hdf5_data_param { source: \"list.txt\" batch_size: 4 } }\n"
      "layers { name: \"t\" type: THRESHOLD threshold_param { threshold: 0.5 } }\n"
      "layers { name: \"n\" }\n",
      &rep);
  REQUIRE(up);
  check_same_text("v1 types", up,
                  "layer { name: \"d\" type: \"Deconvolution\" convolution_param { num_output: 2 kernel_size: 4 stride: 2 } }\n"
                  "layer { name: \"e\" type: \"Eltwise\" eltwise_param { operation: MAX } }\n"
                  "layer { name: \"h\" type: \"HDF5Data\" hdf5_data_param { source: \"list.txt\" batch_size: 4 } }\n"
                  "layer { name: \"t\" type: \"Threshold\" threshold_param { threshold: 0.5 } }\n"
                  "layer { name: \"n\" }\n");
  caffe__net_parameter__free_unpacked(up, NULL);
}

/* ---- the net-level input fields ------------------------------------------------------------ */

static void test_input_fields(void) {
  const char *body =
      "layer { name: \"sum\" type: \"Eltwise\" bottom: \"x\" bottom: \"y\" top: \"sum\" }\n"
      "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"sum\" top: \"ip\" inner_product_param { num_output: 2 " WF " } }\n";
  const char *modern_head =
      "force_backward: true\n"
      "layer { name: \"input\" type: \"Input\" top: \"x\" top: \"y\" input_param { shape { dim: 3 dim: 4 dim: 1 dim: 1 } "
      "shape { dim: 3 dim: 4 dim: 1 dim: 1 } } }\n";
  char old_dim[2048], old_shape[2048], modern[2048];
  snprintf(old_dim, sizeof old_dim,
           "force_backward: true\ninput: \"x\" input_dim: 3 input_dim: 4 input_dim: 1 input_dim: 1\n"
           "input: \"y\" input_dim: 3 input_dim: 4 input_dim: 1 input_dim: 1\n%s",
           body);
  snprintf(old_shape, sizeof old_shape,
           "force_backward: true\ninput: \"x\" input_shape { dim: 3 dim: 4 dim: 1 dim: 1 }\n"
           "input: \"y\" input_shape { dim: 3 dim: 4 dim: 1 dim: 1 }\n%s",
           body);
  snprintf(modern, sizeof modern, "%s%s", modern_head, body);
  Caffe__NetParameter *m = test_parse_net(modern);
  const char *olds[] = {old_dim, old_shape};
  for (int k = 0; k < 2; k++) {
    dd_upgrade_report rep = {0};
    Caffe__NetParameter *up = upgraded(olds[k], &rep);
    REQUIRE(up);
    CHECK(rep.forms == DD_UPGRADE_INPUT);
    check_same_text(k ? "input_shape" : "input_dim", up, modern);
    check_same_run(k ? "input_shape" : "input_dim", up, m, CAFFE__PHASE__TRAIN);
    caffe__net_parameter__free_unpacked(up, NULL);
  }
  caffe__net_parameter__free_unpacked(m, NULL);

  /* `input` alone (old .caffemodel files): dropped, no layer added. */
  dd_upgrade_report rep = {0};
  Caffe__NetParameter *up = upgraded("input: \"data\"\nlayer { name: \"r\" type: \"ReLU\" bottom: \"data\" top: \"r\" }\n", &rep);
  REQUIRE(up);
  CHECK(rep.forms == DD_UPGRADE_INPUT && up->n_layer == 1 && up->n_input == 0);
  caffe__net_parameter__free_unpacked(up, NULL);

  /* Too few dims or shapes: refused, naming the count. */
  char err[1024];
  CHECK(upgrade_error("input: \"a\" input: \"b\" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4\n", err,
                      sizeof err) == DD_EINVAL);
  CHECK_CONTAINS(err, "2 inputs but 4 input_dim values");
  CHECK(upgrade_error("input: \"a\" input: \"b\" input_shape { dim: 1 }\n", err, sizeof err) == DD_EINVAL);
  CHECK_CONTAINS(err, "2 inputs but 1 input_shape");
  /* Extra dims: ignored, as Caffe ignores them, with a note. */
  memset(&rep, 0, sizeof rep);
  up = upgraded("input: \"a\" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4 input_dim: 5 input_dim: 6 "
                "input_dim: 7 input_dim: 8\n",
                &rep);
  REQUIRE(up);
  CHECK(up->n_layer == 1 && up->layer[0]->input_param->n_shape == 1);
  CHECK_CONTAINS(rep.notes, "ignored");
  caffe__net_parameter__free_unpacked(up, NULL);
}

/* ---- V0 ------------------------------------------------------------------------------------ */

static const char *v0_net =
    "name: \"v0\"\n"
    "input: \"data\" input_dim: 2 input_dim: 2 input_dim: 5 input_dim: 5\n"
    "layers { layer { name: \"pad1\" type: \"padding\" pad: 1 } bottom: \"data\" top: \"pad1\" }\n"
    "layers { layer { name: \"conv1\" type: \"conv\" num_output: 3 kernelsize: 3 stride: 1 group: 1 "
    "weight_filler { type: \"gaussian\" std: 0.2 } bias_filler { type: \"constant\" value: 0.1 } "
    "blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 } bottom: \"pad1\" top: \"conv1\" }\n"
    "layers { layer { name: \"relu1\" type: \"relu\" } bottom: \"conv1\" top: \"conv1\" }\n"
    "layers { layer { name: \"pool1\" type: \"pool\" pool: MAX kernelsize: 2 stride: 2 } bottom: \"conv1\" top: \"pool1\" }\n"
    "layers { layer { name: \"fc\" type: \"innerproduct\" num_output: 4 biasterm: false "
    "weight_filler { type: \"xavier\" } } bottom: \"pool1\" top: \"fc\" }\n"
    "layers { layer { name: \"drop\" type: \"dropout\" dropout_ratio: 0.25 } bottom: \"fc\" top: \"fc\" }\n"
    "layers { layer { name: \"prob\" type: \"softmax\" } bottom: \"fc\" top: \"prob\" }\n";

static const char *v0_modern =
    "name: \"v0\"\n"
    "layer { name: \"input\" type: \"Input\" top: \"data\" input_param { shape { dim: 2 dim: 2 dim: 5 dim: 5 } } }\n"
    "layer { name: \"conv1\" type: \"Convolution\" bottom: \"data\" top: \"conv1\" "
    "param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 } "
    "convolution_param { num_output: 3 pad: 1 kernel_size: 3 group: 1 stride: 1 "
    "weight_filler { type: \"gaussian\" std: 0.2 } bias_filler { type: \"constant\" value: 0.1 } } }\n"
    "layer { name: \"relu1\" type: \"ReLU\" bottom: \"conv1\" top: \"conv1\" }\n"
    "layer { name: \"pool1\" type: \"Pooling\" bottom: \"conv1\" top: \"pool1\" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
    "layer { name: \"fc\" type: \"InnerProduct\" bottom: \"pool1\" top: \"fc\" "
    "inner_product_param { num_output: 4 bias_term: false weight_filler { type: \"xavier\" } } }\n"
    "layer { name: \"drop\" type: \"Dropout\" bottom: \"fc\" top: \"fc\" dropout_param { dropout_ratio: 0.25 } }\n"
    "layer { name: \"prob\" type: \"Softmax\" bottom: \"fc\" top: \"prob\" }\n";

static void test_v0_net(void) {
  dd_upgrade_report rep = {0};
  Caffe__NetParameter *up = upgraded(v0_net, &rep);
  REQUIRE(up);
  CHECK(rep.forms == (DD_UPGRADE_V0 | DD_UPGRADE_V0_PADDING | DD_UPGRADE_V1 | DD_UPGRADE_INPUT));
  CHECKF(rep.notes_len == 0, "%s", rep.notes);
  check_same_text("v0", up, v0_modern);
  Caffe__NetParameter *m = test_parse_net(v0_modern);
  check_same_run("v0 TRAIN", up, m, CAFFE__PHASE__TRAIN);
  check_same_run("v0 TEST", up, m, CAFFE__PHASE__TEST);
  caffe__net_parameter__free_unpacked(m, NULL);
  caffe__net_parameter__free_unpacked(up, NULL);

  /* The V0 data layers and the rest of the V0 fields. */
  memset(&rep, 0, sizeof rep);
  up = upgraded(
      "layers { layer { name: \"d\" type: \"data\" source: \"db\" batchsize: 8 rand_skip: 3 scale: 0.5 "
      "meanfile: \"m.binaryproto\" cropsize: 4 mirror: true } top: \"d\" top: \"l\" }\n"
      "layers { layer { name: \"i\" type: \"images\" source: \"list\" batchsize: 2 shuffle_images: true new_height: 6 "
      "new_width: 7 } top: \"i\" }\n"
      "layers { layer { name: \"w\" type: \"window_data\" source: \"win\" det_fg_threshold: 0.6 det_bg_threshold: 0.4 "
      "det_fg_fraction: 0.3 det_context_pad: 16 det_crop_mode: \"square\" } top: \"w\" }\n"
      "layers { layer { name: \"n\" type: \"lrn\" local_size: 3 alpha: 0.5 beta: 0.7 k: 2 } bottom: \"d\" top: \"n\" }\n"
      "layers { layer { name: \"c\" type: \"concat\" concat_dim: 0 } bottom: \"d\" bottom: \"n\" top: \"c\" }\n"
      "layers { layer { name: \"g\" type: \"infogain_loss\" source: \"H.binaryproto\" } bottom: \"c\" bottom: \"l\" }\n"
      "layers { layer { name: \"o\" type: \"hdf5_output\" hdf5_output_param { file_name: \"out.h5\" } } bottom: \"c\" }\n"
      "layers { layer { name: \"p\" type: \"pool\" pool: STOCHASTIC pad: 1 group: 2 } bottom: \"c\" top: \"p\" }\n",
      &rep);
  REQUIRE(up);
  check_same_text("v0 fields", up,
                  "layer { name: \"d\" type: \"Data\" top: \"d\" top: \"l\" "
                  "transform_param { scale: 0.5 mirror: true crop_size: 4 mean_file: \"m.binaryproto\" } "
                  "data_param { source: \"db\" batch_size: 8 rand_skip: 3 } }\n"
                  "layer { name: \"i\" type: \"ImageData\" top: \"i\" image_data_param { source: \"list\" batch_size: 2 "
                  "shuffle: true new_height: 6 new_width: 7 } }\n"
                  "layer { name: \"w\" type: \"WindowData\" top: \"w\" window_data_param { source: \"win\" fg_threshold: 0.6 "
                  "bg_threshold: 0.4 fg_fraction: 0.3 context_pad: 16 crop_mode: \"square\" } }\n"
                  "layer { name: \"n\" type: \"LRN\" bottom: \"d\" top: \"n\" lrn_param { local_size: 3 alpha: 0.5 beta: 0.7 k: 2 } }\n"
                  "layer { name: \"c\" type: \"Concat\" bottom: \"d\" bottom: \"n\" top: \"c\" concat_param { concat_dim: 0 } }\n"
                  "layer { name: \"g\" type: \"InfogainLoss\" bottom: \"c\" bottom: \"l\" infogain_loss_param { source: \"H.binaryproto\" } }\n"
                  "layer { name: \"o\" type: \"HDF5Output\" bottom: \"c\" hdf5_output_param { file_name: \"out.h5\" } }\n"
                  "layer { name: \"p\" type: \"Pooling\" bottom: \"c\" top: \"p\" pooling_param { pool: STOCHASTIC pad: 1 } }\n");
  /* group does not apply to pooling: dropped, as Caffe drops it, and said. */
  CHECK_CONTAINS(rep.notes, "V0 layer \"p\": field group does not apply to type \"pool\"");
  caffe__net_parameter__free_unpacked(up, NULL);

  /* What Caffe's V0 upgrade refuses (it aborts there). */
  char err[1024];
  CHECK(upgrade_error("layers { layer { name: \"x\" type: \"fancy\" } }\n", err, sizeof err) == DD_EINVAL);
  CHECK_CONTAINS(err, "V0 layer \"x\" (layers[0]) has type \"fancy\"");
  CHECK(upgrade_error("input: \"data\"\n"
                      "layers { layer { name: \"pad\" type: \"padding\" pad: 2 } bottom: \"data\" top: \"p\" }\n"
                      "layers { layer { name: \"r\" type: \"relu\" } bottom: \"p\" top: \"r\" }\n",
                      err, sizeof err) == DD_EINVAL);
  CHECK_CONTAINS(err, "V0 layer \"r\" (layers[1], type \"relu\") reads the padding layer \"pad\"");
  CHECK(upgrade_error("layers { layer { name: \"r\" type: \"relu\" } bottom: \"nowhere\" top: \"r\" }\n", err,
                      sizeof err) == DD_EINVAL);
  CHECK_CONTAINS(err, "bottom \"nowhere\"");
}

/* ---- the data layers' transformation fields ------------------------------------------------ */

static void test_transform_fields(void) {
  dd_upgrade_report rep = {0};
  Caffe__NetParameter *up = upgraded(
      "layers { name: \"d\" type: DATA top: \"d\" data_param { source: \"db\" batch_size: 4 backend: LMDB scale: 0.25 "
      "mean_file: \"m\" crop_size: 3 mirror: true } }\n"
      "layers { name: \"i\" type: IMAGE_DATA top: \"i\" transform_param { scale: 9 mean_value: 1 } "
      "image_data_param { source: \"list\" scale: 0.5 } }\n"
      "layers { name: \"w\" type: WINDOW_DATA top: \"w\" window_data_param { source: \"win\" crop_size: 5 } }\n"
      "layers { name: \"x\" type: DATA top: \"x\" data_param { source: \"db2\" } }\n",
      &rep);
  REQUIRE(up);
  CHECK(rep.forms == (DD_UPGRADE_DATA_TRANSFORM | DD_UPGRADE_V1));
  check_same_text("transform", up,
                  "layer { name: \"d\" type: \"Data\" top: \"d\" transform_param { scale: 0.25 mirror: true crop_size: 3 "
                  "mean_file: \"m\" } data_param { source: \"db\" batch_size: 4 backend: LMDB } }\n"
                  "layer { name: \"i\" type: \"ImageData\" top: \"i\" transform_param { scale: 0.5 mean_value: 1 } "
                  "image_data_param { source: \"list\" } }\n"
                  "layer { name: \"w\" type: \"WindowData\" top: \"w\" transform_param { crop_size: 5 } "
                  "window_data_param { source: \"win\" } }\n"
                  "layer { name: \"x\" type: \"Data\" top: \"x\" data_param { source: \"db2\" } }\n");
  caffe__net_parameter__free_unpacked(up, NULL);
}

/* ---- BatchNorm ----------------------------------------------------------------------------- */

static void test_batch_norm(void) {
  dd_upgrade_report rep = {0};
  Caffe__NetParameter *up = upgraded(
      "layer { name: \"bn\" type: \"BatchNorm\" param { lr_mult: 1 } param { lr_mult: 1 decay_mult: 1 } param { } }\n"
      "layer { name: \"bn2\" type: \"BatchNorm\" param { lr_mult: 1 } }\n",
      &rep);
  REQUIRE(up);
  CHECK(rep.forms == DD_UPGRADE_BATCHNORM);
  check_same_text("batchnorm", up,
                  "layer { name: \"bn\" type: \"BatchNorm\" param { lr_mult: 0 decay_mult: 0 } "
                  "param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 } }\n"
                  "layer { name: \"bn2\" type: \"BatchNorm\" param { lr_mult: 1 } }\n");
  caffe__net_parameter__free_unpacked(up, NULL);
  /* Already zero (as current nets often write it): nothing to report. */
  memset(&rep, 0, sizeof rep);
  up = upgraded("layer { name: \"bn\" type: \"BatchNorm\" param { lr_mult: 0 decay_mult: 0 } "
                "param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 } }\n",
                &rep);
  REQUIRE(up);
  CHECK(rep.forms == 0);
  caffe__net_parameter__free_unpacked(up, NULL);
}

/* ---- solvers ------------------------------------------------------------------------------- */

static void test_solver_type(void) {
  static const char *const names[] = {"SGD", "NESTEROV", "ADAGRAD", "RMSPROP", "ADADELTA", "ADAM"};
  static const char *const want[] = {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"};
  char err[1024], text[512];
  for (int k = 0; k < 6; k++) {
    snprintf(text, sizeof text, "base_lr: 0.1\nsolver_type: %s\n", names[k]);
    Caffe__SolverParameter *s = (Caffe__SolverParameter *)test_parse(&caffe__solver_parameter__descriptor, text);
    REQUIRE(s);
    dd_upgrade_report rep = {0};
    CHECK(dd_solver_upgrade(s, &rep, err, sizeof err) == 0);
    CHECK(rep.forms == DD_UPGRADE_SOLVER_TYPE);
    CHECKF(s->type && !strcmp(s->type, want[k]) && !s->has_solver_type, "%s -> %s", names[k], s->type);
    char *p = dd_text_print(&s->base);
    snprintf(text, sizeof text, "base_lr: 0.1\ntype: \"%s\"\n", want[k]);
    CHECKF(p && !strcmp(p, text), "printed: %s", p);
    free(p);
    caffe__solver_parameter__free_unpacked(s, NULL);
  }
  /* Both given: refused, as Caffe refuses it. */
  Caffe__SolverParameter *s =
      (Caffe__SolverParameter *)test_parse(&caffe__solver_parameter__descriptor, "solver_type: ADAM\ntype: \"SGD\"\n");
  REQUIRE(s);
  CHECK(dd_solver_upgrade(s, NULL, err, sizeof err) == DD_EINVAL);
  CHECK_CONTAINS(err, "both solver_type");
  caffe__solver_parameter__free_unpacked(s, NULL);

  /* Through the reader, with a V1 net inline and one in test_net_param. */
  char path[512];
  snprintf(path, sizeof path, "%s/solver.prototxt", tmpdir);
  wfile(path, "solver_type: NESTEROV\nbase_lr: 0.01\nmomentum: 0.9\n"
              "net_param { input: \"x\" input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1 "
              "layers { name: \"r\" type: RELU bottom: \"x\" top: \"r\" } }\n"
              "test_net_param { layers { name: \"s\" type: SIGMOID } }\n");
  dd_upgrade_report rep = {0};
  s = NULL;
  REQUIRE_OK(dd_solver_read_text_report(&s, -1, path, &rep, err, sizeof err), err);
  CHECK(rep.forms == (DD_UPGRADE_SOLVER_TYPE | DD_UPGRADE_V1 | DD_UPGRADE_INPUT));
  CHECK(!strcmp(s->type, "Nesterov"));
  CHECK(s->net_param->n_layer == 2 && !strcmp(s->net_param->layer[0]->type, "Input") &&
        !strcmp(s->net_param->layer[1]->type, "ReLU"));
  CHECK(s->n_test_net_param == 1 && !strcmp(s->test_net_param[0]->layer[0]->type, "Sigmoid"));
  caffe__solver_parameter__free_unpacked(s, NULL);
}

/* ---- weights ------------------------------------------------------------------------------- */

/* A V1 .caffemodel (and a V0 one) with blobs: read, upgraded, and loaded into the current net,
 * which then computes what the same net with the same weights written in the current form does. */
static void test_old_caffemodels(void) {
  const char *blobs_conv =
      "blobs { num: 2 channels: 1 height: 2 width: 2 data: 0.5 data: -1 data: 0.25 data: 2 data: 1 data: 1 "
      "data: -0.5 data: 0.75 } blobs { num: 1 channels: 1 height: 1 width: 2 data: 0.1 data: -0.2 }";
  const char *blobs_ip = "blobs { shape { dim: 3 dim: 8 } data: 1 data: 2 data: 3 data: 4 data: 5 data: 6 data: 7 "
                         "data: 8 data: -1 data: -2 data: -3 data: -4 data: -5 data: -6 data: -7 data: -8 data: 0.5 "
                         "data: 0.5 data: 0.5 data: 0.5 data: 0.25 data: 0.25 data: 0.25 data: 0.25 }";
  char v1[4096], v0[4096];
  snprintf(v1, sizeof v1,
           "name: \"w\"\nlayers { name: \"conv\" type: CONVOLUTION %s }\nlayers { name: \"ip\" type: INNER_PRODUCT %s }\n",
           blobs_conv, blobs_ip);
  snprintf(v0, sizeof v0,
           "name: \"w\"\nlayers { layer { name: \"conv\" type: \"conv\" %s } }\n"
           "layers { layer { name: \"ip\" type: \"innerproduct\" %s } }\n",
           blobs_conv, blobs_ip);
  const char *net =
      "force_backward: true\n" INPUT("data", "dim: 1 dim: 1 dim: 3 dim: 3")
      "layer { name: \"conv\" type: \"Convolution\" bottom: \"data\" top: \"conv\" convolution_param { num_output: 2 kernel_size: 2 } }\n"
      "layer { name: \"ip\" type: \"InnerProduct\" bottom: \"conv\" top: \"ip\" inner_product_param { num_output: 3 bias_term: false } }\n";
  char modern_w[4096];
  snprintf(modern_w, sizeof modern_w,
           "name: \"w\"\nlayer { name: \"conv\" type: \"Convolution\" %s }\nlayer { name: \"ip\" type: \"InnerProduct\" %s }\n",
           blobs_conv, blobs_ip);
  Caffe__NetParameter *ref = test_parse_net(modern_w);
  REQUIRE(ref);
  const char *texts[] = {v1, v0};
  for (int k = 0; k < 2; k++) {
    Caffe__NetParameter *p = test_parse_net(texts[k]);
    REQUIRE(p);
    size_t len;
    uint8_t *bin = test_pack(&p->base, &len);
    caffe__net_parameter__free_unpacked(p, NULL);
    char path[512], err[1024];
    snprintf(path, sizeof path, "%s/old%d.caffemodel", tmpdir, k);
    REQUIRE(test_write_bytes(path, bin, len) == 0);
    free(bin);
    Caffe__NetParameter *w = NULL;
    dd_upgrade_report rep = {0};
    REQUIRE_OK(dd_caffemodel_read_report(&w, path, &rep, err, sizeof err), err);
    CHECK(rep.forms == (k ? DD_UPGRADE_V0 | DD_UPGRADE_V1 : DD_UPGRADE_V1));
    CHECK(w->n_layers == 0 && w->n_layer == 2 && w->layer[0]->n_blobs == 2 && w->layer[1]->n_blobs == 1);
    check_same_text(k ? "v0 caffemodel" : "v1 caffemodel", w, modern_w);
    /* Loaded into the net: the same outputs as with the current-format weights. */
    dd_net *a = make_net(net, CAFFE__PHASE__TRAIN), *b = make_net(net, CAFFE__PHASE__TRAIN);
    REQUIRE(a && b);
    int skipped = -1;
    REQUIRE_OK(dd_net_copy_from(a, w, path, &skipped, err, sizeof err), err);
    CHECK(skipped == 0);
    REQUIRE_OK(dd_net_copy_from(b, ref, "ref", NULL, err, sizeof err), err);
    fill_inputs(a, 3, -1, 1);
    fill_inputs(b, 3, -1, 1);
    CHECK(dd_net_forward(a, NULL) == 0 && dd_net_forward(b, NULL) == 0);
    float *ya = dd_tensor_data_copy(blob(a, "ip")), *yb = dd_tensor_data_copy(blob(b, "ip"));
    CHECK(!memcmp(ya, yb, 3 * sizeof *ya));
    free(ya), free(yb);
    dd_net_destroy(a);
    dd_net_destroy(b);
    caffe__net_parameter__free_unpacked(w, NULL);
  }
  caffe__net_parameter__free_unpacked(ref, NULL);
}

/* ---- `distilld check --upgrade` ------------------------------------------------------------ */

static void test_check_upgrade_cli(void) {
  char in[512], out1[512], out2[512];
  snprintf(in, sizeof in, "%s/v1.prototxt", tmpdir);
  snprintf(out1, sizeof out1, "%s/v1_up.prototxt", tmpdir);
  snprintf(out2, sizeof out2, "%s/v1_up2.prototxt", tmpdir);
  wfile(in, "%s", v1_net);
  char *out = NULL;
  int st = test_distilld(&out, NULL, "check '%s' -q --upgrade '%s'", in, out1);
  CHECKF(st == 0, "status %d: %s", st, out);
  CHECK_CONTAINS(out, "upgraded: ");
  CHECK_CONTAINS(out, "(V1 layers, net-level input fields)");
  CHECK_CONTAINS(out, "wrote the current form to");
  free(out);
  /* The written form is the hand-written current form, parses, and upgrades to itself. */
  char *a = test_slurp(out1);
  REQUIRE(a);
  Caffe__NetParameter *m = test_parse_net(v1_modern);
  char *want = dd_text_print(&m->base);
  CHECK(want && !strcmp(a, want));
  free(want);
  caffe__net_parameter__free_unpacked(m, NULL);
  st = test_distilld(&out, NULL, "check '%s' -q --upgrade '%s'", out1, out2);
  CHECKF(st == 0, "status %d: %s", st, out);
  CHECK(!strstr(out, "upgraded: "));
  free(out);
  char *b = test_slurp(out2);
  CHECK(b && !strcmp(a, b));
  free(a);
  free(b);

  /* A solver alone: --upgrade writes the solver. */
  snprintf(in, sizeof in, "%s/s.prototxt", tmpdir);
  wfile(in, "solver_type: ADAM\nbase_lr: 0.001\nlr_policy: \"fixed\"\nmax_iter: 10\nnet_param { %s }\n", v1_net);
  st = test_distilld(&out, NULL, "check --solver '%s' -q --upgrade '%s'", in, out1);
  CHECKF(st <= 1, "status %d: %s", st, out);
  CHECK_CONTAINS(out, "solver_type enum");
  free(out);
  a = test_slurp(out1);
  CHECK(a && strstr(a, "type: \"Adam\"") && !strstr(a, "solver_type") && !strstr(a, "layers {"));
  free(a);

  /* A V0 field Caffe drops: a warning naming it. */
  snprintf(in, sizeof in, "%s/v0.prototxt", tmpdir);
  wfile(in, "input: \"data\" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4\n"
            "layers { layer { name: \"r\" type: \"relu\" num_output: 3 } bottom: \"data\" top: \"r\" }\n");
  st = test_distilld(&out, NULL, "check '%s' -q", in);
  CHECK(st == 1);
  CHECK_CONTAINS(out, "warning: ");
  CHECK_CONTAINS(out, "field num_output does not apply to type \"relu\"");
  free(out);
}

/* ---- refusals ------------------------------------------------------------------------------ */

static void test_refusals(void) {
  char err[4096];
  CHECK(net_error(INPUT("x", "dim: 1") "layer { name: \"py\" type: \"Python\" bottom: \"x\" top: \"y\" "
                  "python_param { module: \"m\" layer: \"L\" } }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "py");
  CHECK_CONTAINS(err, "\"Python\" refused");
  CHECK_CONTAINS(err, "Python interpreter");
  CHECK(net_error("layer { name: \"win\" type: \"WindowData\" top: \"d\" top: \"l\" window_data_param { source: \"w\" } }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "win");
  CHECK_CONTAINS(err, "R-CNN window files");
  CHECK(net_error(INPUT("x", "dim: 1 dim: 2 dim: 3 dim: 3") "layer { name: \"dw\" type: \"ConvolutionDepthwise\" "
                  "bottom: \"x\" top: \"y\" convolution_param { num_output: 2 kernel_size: 3 } }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "dw");
  CHECK_CONTAINS(err, "not a layer type of BVLC Caffe");
  CHECK_CONTAINS(err, "\"Convolution\" with convolution_param { group: C }");
  CHECK(dd_refused_layer_type("Convolution") == NULL && dd_refused_layer_type(NULL) == NULL);
  CHECK(dd_refused_layer_type("ReLU6") && strstr(dd_refused_layer_type("ReLU6"), "Clip"));
  CHECK(dd_refused_layer_type("Filter") && strstr(dd_refused_layer_type("Filter"), "static shapes"));

  /* Fork fields, through the reader. */
  char path[512];
  snprintf(path, sizeof path, "%s/ceil.prototxt", tmpdir);
  wfile(path, INPUT("x", "dim: 1 dim: 1 dim: 5 dim: 5")
              "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"p\"\n"
              "  pooling_param { pool: MAX kernel_size: 2 stride: 2 ceil_mode: false } }\n");
  Caffe__NetParameter *n = NULL;
  /* the forks' ceil_mode is accepted with its meaning (false: round_mode FLOOR): 5 -> 2, not 3 */
  CHECK(dd_net_read_text(&n, path, err, sizeof err) == 0 && n != NULL);
  if (n) {
    dd_net *net = NULL;
    CHECKF(dd_net_create(&net, n, CAFFE__PHASE__TEST, be, 1, NULL, err, sizeof err) == 0, "%s", err);
    if (net) CHECK(dd_net_blob(net, "p")->shape.dims[2] == 2);
    dd_net_destroy(net);
    caffe__net_parameter__free_unpacked(n, NULL);
    n = NULL;
  }
  wfile(path, INPUT("x", "dim: 1 dim: 1 dim: 5 dim: 5")
              "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"p\"\n"
              "  pooling_param { pool: MAX kernel_size: 2 stride: 2 ceil_mode: true round_mode: FLOOR } }\n");
  CHECK(dd_net_read_text(&n, path, err, sizeof err) == 0);
  if (n) {
    dd_net *net = NULL;
    CHECK(dd_net_create(&net, n, CAFFE__PHASE__TEST, be, 1, NULL, err, sizeof err) != 0);
    CHECK_CONTAINS(err, "give pooling_param.round_mode or the forks' ceil_mode, not both");
    dd_net_destroy(net);
    caffe__net_parameter__free_unpacked(n, NULL);
    n = NULL;
  }
  wfile(path, INPUT("x", "dim: 1 dim: 1 dim: 5 dim: 5")
              "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"p\"\n"
              "  convolution_param { hole: 2 } }\n");
  CHECK(dd_net_read_text(&n, path, err, sizeof err) == DD_EPARSE && n == NULL);
  CHECK_CONTAINS(err, "ceil.prototxt:3:");
  CHECK_CONTAINS(err, "unknown field \"hole\" in ConvolutionParameter");
  CHECK_CONTAINS(err, "hole is not a field of BVLC Caffe's ConvolutionParameter");
  CHECK_CONTAINS(err, "write dilation: N");
  wfile(path, "layer { name: \"q\" type: \"Convolution\" quantize_param { bits: 8 } }\n");
  CHECK(dd_net_read_text(&n, path, err, sizeof err) == DD_EPARSE);
  CHECK_CONTAINS(err, "quantize_param is not a field of BVLC Caffe's LayerParameter");
  wfile(path, "layer { name: \"q\" type: \"ReLU\" relu_param { six: true } }\n");
  CHECK(dd_net_read_text(&n, path, err, sizeof err) == DD_EPARSE);
  CHECK_CONTAINS(err, "six is not a field of BVLC Caffe's ReLUParameter");

  /* `layer` and `layers` in one net: refused, as Caffe refuses it. */
  CHECK(upgrade_error("layer { name: \"a\" type: \"ReLU\" }\nlayers { name: \"b\" type: RELU }\n", err, sizeof err) ==
        DD_EINVAL);
  CHECK_CONTAINS(err, "both current-format `layer` entries (1) and V1 `layers` entries (1)");
}

int main(void) {
  if (test_scratch_dir(tmpdir, sizeof tmpdir, "upgrade")) return 1;
  if (layers_begin()) return 1;
  RUN(test_v1_net);
  RUN(test_v1_types);
  RUN(test_input_fields);
  RUN(test_v0_net);
  RUN(test_transform_fields);
  RUN(test_batch_norm);
  RUN(test_solver_type);
  RUN(test_old_caffemodels);
  RUN(test_check_upgrade_cli);
  RUN(test_refusals);
  test_scratch_remove(tmpdir);
  return layers_end();
}
