/* The forms of the public Caffe nets users bring, in nets the project writes itself (small, so a
 * forward is quick): each uses the layer types, fields and upgrade forms of one family of public
 * models (BVLC AlexNet/CaffeNet with LRN and grouped convolutions; GoogLeNet's inception blocks,
 * auxiliary losses and top-5 accuracy; ResNet-50's deploy net with the net-level input fields;
 * SqueezeNet's fire modules and global pooling; MobileNet's depthwise convolutions with engine
 * settings; DenseNet's concatenations; the CIFAR-10 full net's WITHIN_CHANNEL LRN and AVE pooling;
 * MNIST's autoencoder (Sigmoid, Euclidean and sigmoid cross-entropy losses); the Siamese net
 * (shared parameters, Slice, ContrastiveLoss); a V1 LeNet with blobs_lr and weight_decay). Each is
 * read the way `distilld check` reads it, checked by the net builder, and run once forward and
 * backward from its own fillers; the outputs must be finite and the loss positive where there
 * is one. scripts/check_public_nets.py runs the public files themselves. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "format/caffe_io.h"
#include "test_layers.h"

/* Writes `text` to a file and reads it back through dd_net_read_text (upgrades included), builds
 * it for `phase`, fills the inputs (labels in [0, classes)), runs forward and backward; checks
 * every blob is finite; returns the loss (NAN on failure). */
static double run_text(const char *what, const char *text, Caffe__Phase phase, int classes) {
  char path[] = "/tmp/dd-public-form-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return NAN;
  FILE *f = fdopen(fd, "w");
  fputs(text, f);
  fclose(f);
  Caffe__NetParameter *p = NULL;
  char err[2048];
  int r = dd_net_read_text(&p, path, err, sizeof err);
  unlink(path);
  CHECKF(r == 0, "%s: read: %s", what, err);
  if (r) return NAN;
  dd_net *n = NULL;
  r = dd_net_create(&n, p, phase, be, 5, NULL, err, sizeof err);
  caffe__net_parameter__free_unpacked(p, NULL);
  CHECKF(r == 0, "%s: build: %s", what, err);
  if (r) return NAN;
  dd_rng rng;
  dd_rng_seed(&rng, 99);
  for (size_t i = 0; i < n->param->n_layer; i++) {
    const Caffe__LayerParameter *lp = n->param->layer[i];
    if (strcmp(lp->type, "Input")) continue;
    for (size_t k = 0; k < lp->n_top; k++) {
      dd_tensor *t = dd_net_blob(n, lp->top[k]);
      float *v = malloc((size_t)t->count * sizeof *v + 4);
      for (int64_t j = 0; j < t->count; j++)
        v[j] = strstr(lp->top[k], "label") || strstr(lp->top[k], "sim") ? (float)(dd_rng_next(&rng) % (uint64_t)classes)
                                                                          : (float)((double)(dd_rng_next(&rng) >> 11) / 9007199254740992.0);
      dd_tensor_set_data(t, v);
      free(v);
    }
  }
  double loss = NAN;
  r = dd_net_forward(n, &loss);
  CHECKF(r == 0, "%s: forward: %s", what, n->status_msg);
  if (r == 0) {
    dd_net_backward(n);
    for (size_t b = 0; b < n->n_blobs; b++) {
      float *v = dd_tensor_data_copy(n->blobs[b]);
      int finite = 1;
      for (int64_t j = 0; j < n->blobs[b]->count; j++) finite &= isfinite(v[j]) != 0;
      CHECKF(finite, "%s: blob %s holds a value that is not finite", what, n->blobs[b]->name);
      free(v);
    }
  }
  dd_net_destroy(n);
  return loss;
}

#define CONV(name, bottom, nout, k, s, p, extra)                                                              \
  "layer { name: \"" name "\" type: \"Convolution\" bottom: \"" bottom "\" top: \"" name "\" "                 \
  "convolution_param { num_output: " #nout " kernel_size: " #k " stride: " #s " pad: " #p " " extra            \
  " weight_filler { type: \"gaussian\" std: 0.1 } bias_filler { type: \"constant\" value: 0.1 } } }\n"
#define RELU(name) "layer { name: \"relu_" name "\" type: \"ReLU\" bottom: \"" name "\" top: \"" name "\" }\n"

/* AlexNet / CaffeNet: LRN across channels after ReLU, grouped convolutions, overlapping MAX
 * pooling, Dropout, InnerProduct, SoftmaxWithLoss and Accuracy, V2 train_val layout. */
static void test_alexnet_form(void) {
  const char *net =
      "name: \"alex\"\n"
      "layer { name: \"data\" type: \"Input\" top: \"data\" top: \"label\" input_param { shape { dim: 2 dim: 3 dim: 35 dim: 35 } shape { dim: 2 } } }\n"
      CONV("conv1", "data", 8, 5, 2, 0, "") RELU("conv1")
      "layer { name: \"norm1\" type: \"LRN\" bottom: \"conv1\" top: \"norm1\" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }\n"
      "layer { name: \"pool1\" type: \"Pooling\" bottom: \"norm1\" top: \"pool1\" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }\n"
      CONV("conv2", "pool1", 8, 3, 1, 1, "group: 2") RELU("conv2")
      "layer { name: \"norm2\" type: \"LRN\" bottom: \"conv2\" top: \"norm2\" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }\n"
      "layer { name: \"fc6\" type: \"InnerProduct\" bottom: \"norm2\" top: \"fc6\" param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 } "
      "inner_product_param { num_output: 16 weight_filler { type: \"gaussian\" std: 0.005 } bias_filler { type: \"constant\" value: 1 } } }\n"
      "layer { name: \"relu6\" type: \"ReLU\" bottom: \"fc6\" top: \"fc6\" }\n"
      "layer { name: \"drop6\" type: \"Dropout\" bottom: \"fc6\" top: \"fc6\" dropout_param { dropout_ratio: 0.5 } }\n"
      "layer { name: \"fc8\" type: \"InnerProduct\" bottom: \"fc6\" top: \"fc8\" inner_product_param { num_output: 5 weight_filler { type: \"gaussian\" std: 0.01 } } }\n"
      "layer { name: \"accuracy\" type: \"Accuracy\" bottom: \"fc8\" bottom: \"label\" top: \"accuracy\" include { phase: TEST } }\n"
      "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"fc8\" bottom: \"label\" top: \"loss\" }\n";
  CHECK(run_text("alexnet TRAIN", net, CAFFE__PHASE__TRAIN, 5) > 0);
  CHECK(run_text("alexnet TEST", net, CAFFE__PHASE__TEST, 5) > 0);
}

/* GoogLeNet: an inception block (1x1, 3x3, 5x5, pool projection, Concat), LRN, an auxiliary
 * loss with loss_weight 0.3, top-5 Accuracy, AVE pooling, Dropout 0.7, xavier fillers. */
static void test_googlenet_form(void) {
  const char *net =
      "name: \"goog\"\n"
      "layer { name: \"data\" type: \"Input\" top: \"data\" top: \"label\" input_param { shape { dim: 2 dim: 3 dim: 16 dim: 16 } shape { dim: 2 } } }\n"
      CONV("c1", "data", 8, 3, 1, 1, "") RELU("c1")
      "layer { name: \"n1\" type: \"LRN\" bottom: \"c1\" top: \"n1\" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }\n"
      CONV("i1x1", "n1", 4, 1, 1, 0, "") RELU("i1x1")
      CONV("i3x3", "n1", 4, 3, 1, 1, "") RELU("i3x3")
      CONV("i5x5", "n1", 4, 5, 1, 2, "") RELU("i5x5")
      "layer { name: \"ipool\" type: \"Pooling\" bottom: \"n1\" top: \"ipool\" pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }\n"
      CONV("iproj", "ipool", 4, 1, 1, 0, "") RELU("iproj")
      "layer { name: \"icat\" type: \"Concat\" bottom: \"i1x1\" bottom: \"i3x3\" bottom: \"i5x5\" bottom: \"iproj\" top: \"icat\" }\n"
      "layer { name: \"aux_pool\" type: \"Pooling\" bottom: \"icat\" top: \"aux_pool\" pooling_param { pool: AVE kernel_size: 5 stride: 3 } }\n"
      "layer { name: \"aux_fc\" type: \"InnerProduct\" bottom: \"aux_pool\" top: \"aux_fc\" inner_product_param { num_output: 7 weight_filler { type: \"xavier\" } } }\n"
      "layer { name: \"aux_loss\" type: \"SoftmaxWithLoss\" bottom: \"aux_fc\" bottom: \"label\" top: \"aux_loss\" loss_weight: 0.3 }\n"
      "layer { name: \"gpool\" type: \"Pooling\" bottom: \"icat\" top: \"gpool\" pooling_param { pool: AVE kernel_size: 16 stride: 1 } }\n"
      "layer { name: \"drop\" type: \"Dropout\" bottom: \"gpool\" top: \"gpool\" dropout_param { dropout_ratio: 0.7 } }\n"
      "layer { name: \"fc\" type: \"InnerProduct\" bottom: \"gpool\" top: \"fc\" inner_product_param { num_output: 7 weight_filler { type: \"xavier\" } } }\n"
      "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"fc\" bottom: \"label\" top: \"loss\" loss_weight: 1 }\n"
      "layer { name: \"top5\" type: \"Accuracy\" bottom: \"fc\" bottom: \"label\" top: \"top5\" accuracy_param { top_k: 5 } }\n";
  CHECK(run_text("googlenet", net, CAFFE__PHASE__TRAIN, 7) > 0);
}

/* ResNet-50's deploy net: the deprecated net-level input / input_dim fields, BatchNorm with
 * use_global_stats, Scale with bias_term, an Eltwise SUM shortcut, global AVE pooling, Softmax. */
static void test_resnet_deploy_form(void) {
  const char *net =
      "name: \"ResNet-mini\"\n"
      "input: \"data\"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 12\ninput_dim: 12\n"
      "layer { bottom: \"data\" top: \"conv1\" name: \"conv1\" type: \"Convolution\" convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1 bias_term: false } }\n"
      "layer { bottom: \"conv1\" top: \"conv1\" name: \"bn_conv1\" type: \"BatchNorm\" batch_norm_param { use_global_stats: true } }\n"
      "layer { bottom: \"conv1\" top: \"conv1\" name: \"scale_conv1\" type: \"Scale\" scale_param { bias_term: true } }\n"
      "layer { bottom: \"conv1\" top: \"conv1\" name: \"conv1_relu\" type: \"ReLU\" }\n"
      "layer { bottom: \"conv1\" top: \"res2a_branch2a\" name: \"res2a_branch2a\" type: \"Convolution\" convolution_param { num_output: 4 kernel_size: 1 pad: 0 stride: 1 bias_term: false } }\n"
      "layer { bottom: \"conv1\" bottom: \"res2a_branch2a\" top: \"res2a\" name: \"res2a\" type: \"Eltwise\" }\n"
      "layer { bottom: \"res2a\" top: \"pool5\" name: \"pool5\" type: \"Pooling\" pooling_param { kernel_size: 12 stride: 1 pool: AVE } }\n"
      "layer { bottom: \"pool5\" top: \"fc1000\" name: \"fc1000\" type: \"InnerProduct\" inner_product_param { num_output: 10 } }\n"
      "layer { bottom: \"fc1000\" top: \"prob\" name: \"prob\" type: \"Softmax\" }\n";
  run_text("resnet deploy (input_dim)", net, CAFFE__PHASE__TEST, 10);
  /* the input_shape form too */
  const char *shape_form =
      "input: \"data\"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n"
      "layer { bottom: \"data\" top: \"c\" name: \"c\" type: \"Convolution\" convolution_param { num_output: 2 kernel_size: 3 } }\n";
  run_text("input_shape", shape_form, CAFFE__PHASE__TEST, 1);
}

/* SqueezeNet: fire modules (squeeze 1x1, expand 1x1 and 3x3, Concat), ceil-rounded MAX pooling,
 * Dropout, a classifier convolution and global AVE pooling; MobileNet: depthwise convolutions
 * (group = channels, engine: CAFFE), BatchNorm + Scale, and DenseNet's Concat of growing blocks. */
static void test_squeeze_mobile_dense_forms(void) {
  const char *squeeze =
      "layer { name: \"data\" type: \"Input\" top: \"data\" top: \"label\" input_param { shape { dim: 2 dim: 3 dim: 17 dim: 17 } shape { dim: 2 } } }\n"
      CONV("conv1", "data", 8, 3, 2, 0, "") RELU("conv1")
      "layer { name: \"pool1\" type: \"Pooling\" bottom: \"conv1\" top: \"pool1\" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }\n"
      CONV("sq", "pool1", 4, 1, 1, 0, "") RELU("sq")
      CONV("e1", "sq", 4, 1, 1, 0, "") RELU("e1")
      CONV("e3", "sq", 4, 3, 1, 1, "") RELU("e3")
      "layer { name: \"fire\" type: \"Concat\" bottom: \"e1\" bottom: \"e3\" top: \"fire\" }\n"
      "layer { name: \"drop9\" type: \"Dropout\" bottom: \"fire\" top: \"fire\" dropout_param { dropout_ratio: 0.5 } }\n"
      CONV("conv10", "fire", 5, 1, 1, 0, "") RELU("conv10")
      "layer { name: \"pool10\" type: \"Pooling\" bottom: \"conv10\" top: \"pool10\" pooling_param { pool: AVE global_pooling: true } }\n"
      "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"pool10\" bottom: \"label\" top: \"loss\" }\n";
  CHECK(run_text("squeezenet", squeeze, CAFFE__PHASE__TRAIN, 5) > 0);
  const char *mobile =
      "layer { name: \"data\" type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }\n"
      CONV("conv1", "data", 8, 3, 2, 1, "bias_term: false")
      "layer { name: \"conv1/bn\" type: \"BatchNorm\" bottom: \"conv1\" top: \"conv1\" batch_norm_param { use_global_stats: true eps: 1e-5 } }\n"
      "layer { name: \"conv1/scale\" type: \"Scale\" bottom: \"conv1\" top: \"conv1\" scale_param { filler { value: 1 } bias_term: true bias_filler { value: 0 } } }\n"
      RELU("conv1")
      CONV("conv2_1/dw", "conv1", 8, 3, 1, 1, "group: 8 engine: CAFFE bias_term: false")
      RELU("conv2_1/dw")
      CONV("conv2_1/sep", "conv2_1/dw", 16, 1, 1, 0, "")
      "layer { name: \"pool6\" type: \"Pooling\" bottom: \"conv2_1/sep\" top: \"pool6\" pooling_param { pool: AVE global_pooling: true } }\n"
      CONV("fc7", "pool6", 10, 1, 1, 0, "")
      "layer { name: \"prob\" type: \"Softmax\" bottom: \"fc7\" top: \"prob\" }\n";
  run_text("mobilenet", mobile, CAFFE__PHASE__TEST, 1);
  const char *dense =
      "layer { name: \"data\" type: \"Input\" top: \"data\" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n"
      CONV("conv1", "data", 4, 3, 1, 1, "bias_term: false")
      "layer { name: \"bn1\" type: \"BatchNorm\" bottom: \"conv1\" top: \"bn1\" batch_norm_param { use_global_stats: false } }\n"
      "layer { name: \"sc1\" type: \"Scale\" bottom: \"bn1\" top: \"bn1\" scale_param { bias_term: true } }\n"
      RELU("bn1")
      CONV("x1", "bn1", 2, 3, 1, 1, "bias_term: false")
      "layer { name: \"drop1\" type: \"Dropout\" bottom: \"x1\" top: \"x1\" dropout_param { dropout_ratio: 0.2 } }\n"
      "layer { name: \"concat1\" type: \"Concat\" bottom: \"conv1\" bottom: \"x1\" top: \"concat1\" }\n"
      CONV("x2", "concat1", 2, 3, 1, 1, "bias_term: false")
      "layer { name: \"concat2\" type: \"Concat\" bottom: \"concat1\" bottom: \"x2\" top: \"concat2\" concat_param { axis: 1 } }\n"
      "layer { name: \"pool\" type: \"Pooling\" bottom: \"concat2\" top: \"pool\" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }\n";
  run_text("densenet", dense, CAFFE__PHASE__TRAIN, 1);
}

/* CIFAR-10 full: LRN WITHIN_CHANNEL, AVE pooling, Sigmoid; MNIST autoencoder: Flatten, Sigmoid,
 * SigmoidCrossEntropyLoss and EuclideanLoss with loss_weight 0 (reported, not trained). */
static void test_cifar_full_and_autoencoder_forms(void) {
  const char *cifar =
      "layer { name: \"data\" type: \"Input\" top: \"data\" top: \"label\" input_param { shape { dim: 2 dim: 3 dim: 16 dim: 16 } shape { dim: 2 } } }\n"
      CONV("conv1", "data", 8, 5, 1, 2, "")
      "layer { name: \"pool1\" type: \"Pooling\" bottom: \"conv1\" top: \"pool1\" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }\n"
      "layer { name: \"sig1\" type: \"Sigmoid\" bottom: \"pool1\" top: \"pool1\" }\n"
      "layer { name: \"norm1\" type: \"LRN\" bottom: \"pool1\" top: \"norm1\" lrn_param { local_size: 3 alpha: 5e-05 beta: 0.75 norm_region: WITHIN_CHANNEL } }\n"
      "layer { name: \"pool2\" type: \"Pooling\" bottom: \"norm1\" top: \"pool2\" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }\n"
      "layer { name: \"ip1\" type: \"InnerProduct\" bottom: \"pool2\" top: \"ip1\" param { lr_mult: 1 decay_mult: 250 } inner_product_param { num_output: 10 weight_filler { type: \"gaussian\" std: 0.01 } } }\n"
      "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"ip1\" bottom: \"label\" top: \"loss\" }\n";
  CHECK(run_text("cifar10 full", cifar, CAFFE__PHASE__TRAIN, 10) > 0);
  const char *auto_enc =
      "layer { name: \"data\" type: \"Input\" top: \"data\" input_param { shape { dim: 2 dim: 1 dim: 6 dim: 6 } } }\n"
      "layer { name: \"flatdata\" type: \"Flatten\" bottom: \"data\" top: \"flatdata\" }\n"
      "layer { name: \"encode1\" type: \"InnerProduct\" bottom: \"data\" top: \"encode1\" inner_product_param { num_output: 8 weight_filler { type: \"gaussian\" std: 1 sparse: 4 } } }\n"
      "layer { name: \"encode1neuron\" type: \"Sigmoid\" bottom: \"encode1\" top: \"encode1neuron\" }\n"
      "layer { name: \"decode1\" type: \"InnerProduct\" bottom: \"encode1neuron\" top: \"decode1\" inner_product_param { num_output: 36 weight_filler { type: \"gaussian\" std: 1 sparse: 4 } } }\n"
      "layer { name: \"loss\" type: \"SigmoidCrossEntropyLoss\" bottom: \"decode1\" bottom: \"flatdata\" top: \"cross_entropy_loss\" loss_weight: 1 }\n"
      "layer { name: \"decode1neuron\" type: \"Sigmoid\" bottom: \"decode1\" top: \"decode1neuron\" }\n"
      "layer { name: \"loss2\" type: \"EuclideanLoss\" bottom: \"decode1neuron\" bottom: \"flatdata\" top: \"l2_error\" loss_weight: 0 }\n";
  CHECK(run_text("mnist autoencoder", auto_enc, CAFFE__PHASE__TRAIN, 1) > 0);
}

/* The Siamese net: one pair input sliced into two images, two towers sharing parameters by
 * name, ContrastiveLoss on the feature pair and a similarity label. */
static void test_siamese_form(void) {
  const char *net =
      "layer { name: \"pair_data\" type: \"Input\" top: \"pair_data\" top: \"sim\" input_param { shape { dim: 2 dim: 2 dim: 8 dim: 8 } shape { dim: 2 } } }\n"
      "layer { name: \"slice_pair\" type: \"Slice\" bottom: \"pair_data\" top: \"data\" top: \"data_p\" slice_param { slice_dim: 1 slice_point: 1 } }\n"
      "layer { name: \"ip1\" type: \"InnerProduct\" bottom: \"data\" top: \"feat\" param { name: \"ip1_w\" lr_mult: 1 } param { name: \"ip1_b\" lr_mult: 2 } "
      "inner_product_param { num_output: 3 weight_filler { type: \"xavier\" } bias_filler { type: \"constant\" } } }\n"
      "layer { name: \"ip1_p\" type: \"InnerProduct\" bottom: \"data_p\" top: \"feat_p\" param { name: \"ip1_w\" lr_mult: 1 } param { name: \"ip1_b\" lr_mult: 2 } "
      "inner_product_param { num_output: 3 weight_filler { type: \"xavier\" } bias_filler { type: \"constant\" } } }\n"
      "layer { name: \"loss\" type: \"ContrastiveLoss\" bottom: \"feat\" bottom: \"feat_p\" bottom: \"sim\" top: \"loss\" contrastive_loss_param { margin: 1 } }\n";
  CHECK(run_text("siamese", net, CAFFE__PHASE__TRAIN, 2) >= 0);
}

/* A V1 LeNet (the 2014 format of BVLC's examples): enum types, blobs_lr, weight_decay, input
 * fields, and a V1 Accuracy with include rules. */
static void test_v1_lenet_form(void) {
  const char *net =
      "name: \"LeNet\"\n"
      "input: \"data\" input_dim: 2 input_dim: 1 input_dim: 12 input_dim: 12\n"
      "input: \"label\" input_dim: 2 input_dim: 1 input_dim: 1 input_dim: 1\n"
      "layers { name: \"conv1\" type: CONVOLUTION bottom: \"data\" top: \"conv1\" blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 "
      "convolution_param { num_output: 4 kernel_size: 5 stride: 1 weight_filler { type: \"xavier\" } bias_filler { type: \"constant\" } } }\n"
      "layers { name: \"pool1\" type: POOLING bottom: \"conv1\" top: \"pool1\" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
      "layers { name: \"ip1\" type: INNER_PRODUCT bottom: \"pool1\" top: \"ip1\" blobs_lr: 1 blobs_lr: 2 inner_product_param { num_output: 6 weight_filler { type: \"xavier\" } } }\n"
      "layers { name: \"relu1\" type: RELU bottom: \"ip1\" top: \"ip1\" }\n"
      "layers { name: \"ip2\" type: INNER_PRODUCT bottom: \"ip1\" top: \"ip2\" inner_product_param { num_output: 3 weight_filler { type: \"xavier\" } } }\n"
      "layers { name: \"accuracy\" type: ACCURACY bottom: \"ip2\" bottom: \"label\" top: \"accuracy\" include: { phase: TEST } }\n"
      "layers { name: \"loss\" type: SOFTMAX_LOSS bottom: \"ip2\" bottom: \"label\" top: \"loss\" }\n";
  CHECK(run_text("v1 lenet TRAIN", net, CAFFE__PHASE__TRAIN, 3) > 0);
  CHECK(run_text("v1 lenet TEST", net, CAFFE__PHASE__TEST, 3) > 0);
}

int main(void) {
  if (layers_begin()) return 1;
  RUN(test_alexnet_form);
  RUN(test_googlenet_form);
  RUN(test_resnet_deploy_form);
  RUN(test_squeeze_mobile_dense_forms);
  RUN(test_cifar_full_and_autoencoder_forms);
  RUN(test_siamese_form);
  RUN(test_v1_lenet_form);
  return layers_end();
}
