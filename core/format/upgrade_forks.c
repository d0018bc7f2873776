/* What distilld refuses in a Caffe net, with what to write instead (see upgrade.h): the BVLC
 * layer types it does not run (Python, WindowData, Filter), and the layer types and fields that Caffe
 * forks added to the schema. distilld reads BVLC Caffe's caffe.proto (master 9b891540; its own
 * extensions have field numbers from 1000 up), so a fork's field is an unknown field to the text
 * parser and a fork's layer type an unknown type to the net builder; these tables turn the bare
 * "unknown" into an explanation. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>

#include "format/upgrade.h"

#define NOT_BVLC "not a layer type of BVLC Caffe (it comes from a Caffe fork"

static const struct {
  const char *type, *why;
} refused_types[] = {
    {"Python",
     "Python layers run Python code inside Caffe (an embedded Python interpreter and the layer's module); distilld "
     "is C and runs no Python: write the layer with BVLC layer types, or compute its output beforehand and read it "
     "with HDF5Data"},
    {"WindowData",
     "WindowData reads R-CNN window files (the original R-CNN's deprecated data layer); distilld does not read them: "
     "crop the windows into images and read them with ImageData, or into an LMDB with `distilld convert-imageset` "
     "for Data"},
    {"Filter",
     "Filter passes on the items whose selector is non-zero, so its tops' batch size depends on the selector's values "
     "at run time; distilld's nets have static shapes, checked before anything is allocated: select the items "
     "before the net (in the data), or weight the loss by the selector instead"},
    {"ConvolutionDepthwise",
     NOT_BVLC "); use type \"Convolution\" with convolution_param { group: C } where C is the number of input "
     "channels (= num_output), which computes the same depthwise convolution"},
    {"DepthwiseConvolution",
     NOT_BVLC "); use type \"Convolution\" with convolution_param { group: C } where C is the number of input "
     "channels (= num_output), which computes the same depthwise convolution"},
    {"ReLU6", NOT_BVLC "); use type \"Clip\" with clip_param { min: 0 max: 6 }"},
    {"Upsample",
     NOT_BVLC ", SegNet's); for a bilinear upsampling use \"Deconvolution\" with group = channels, kernel 2f - f % 2, "
     "stride f, pad ceil((f - 1) / 2) and weight_filler { type: \"bilinear\" }; max-unpooling has no BVLC form"},
    {"Interp",
     NOT_BVLC ", PSPNet's / DeepLab's); for an integer factor use \"Deconvolution\" with a bilinear weight_filler"},
    {"ShuffleChannel", NOT_BVLC ", ShuffleNet's) and has no BVLC form"},
    {"Permute", NOT_BVLC ", SSD's) and has no BVLC form"},
    {"PriorBox", NOT_BVLC ", SSD's) and has no BVLC form"},
    {"DetectionOutput", NOT_BVLC ", SSD's) and has no BVLC form"},
    {"MultiBoxLoss", NOT_BVLC ", SSD's) and has no BVLC form"},
    {"AnnotatedData", NOT_BVLC ", SSD's); use Data or ImageData"},
    {"Normalize", NOT_BVLC ", SSD's); the nearest BVLC form is MVN with normalize_variance (over other axes)"},
    {"ROIPooling", NOT_BVLC ", Fast/Faster R-CNN's) and has no BVLC form"},
    {"PSROIPooling", NOT_BVLC ", R-FCN's) and has no BVLC form"},
    {"Proposal", NOT_BVLC ", Faster R-CNN's, usually a Python layer) and has no BVLC form"},
    {"Axpy", NOT_BVLC ", SENet's); use Scale (with axis 0 over the channel weights) and Eltwise SUM"},
    {"BatchReNorm", NOT_BVLC "); use BatchNorm followed by Scale with bias_term: true"},
    {"Mish", NOT_BVLC ") and has no BVLC form (BVLC has Swish, ELU, ReLU)"},
    {"HardSwish", NOT_BVLC ") and has no BVLC form (BVLC has Swish)"},
    {"Reorg", NOT_BVLC ", a YOLO port) and has no BVLC form"},
    {"Region", NOT_BVLC ", a YOLO port) and has no BVLC form"},
    {"Yolo", NOT_BVLC ", a YOLO port) and has no BVLC form"},
};

const char *dd_refused_layer_type(const char *type) {
  if (!type) return NULL;
  for (size_t i = 0; i < sizeof refused_types / sizeof refused_types[0]; i++)
    if (!strcmp(refused_types[i].type, type)) return refused_types[i].why;
  return NULL;
}

/* Fields of Caffe forks, by message. */
static const struct {
  const char *msg, *field, *hint;
} fork_fields[] = {
    {"ConvolutionParameter", "hole", "DeepLab's old name for dilation: write dilation: N"},
    {"ConvolutionParameter", "hole_h", "DeepLab's old name for dilation: write dilation: N (one per axis)"},
    {"ConvolutionParameter", "hole_w", "DeepLab's old name for dilation: write dilation: N (one per axis)"},
    {"BatchNormParameter", "scale_bias",
     "NVIDIA Caffe's BatchNorm with its own scale and bias; in BVLC Caffe follow BatchNorm by a Scale layer with "
     "bias_term: true"},
    {"LayerParameter", "forward_type", "NVIDIA Caffe's precision setting; delete it (distilld computes in float32)"},
    {"LayerParameter", "backward_type", "NVIDIA Caffe's precision setting; delete it (distilld computes in float32)"},
    {"LayerParameter", "forward_math", "NVIDIA Caffe's precision setting; delete it (distilld computes in float32)"},
    {"LayerParameter", "backward_math", "NVIDIA Caffe's precision setting; delete it (distilld computes in float32)"},
    {"TransformationParameter", "resize_param", "SSD's data augmentation, which has no BVLC form"},
    {"TransformationParameter", "distort_param", "SSD's data augmentation, which has no BVLC form"},
    {"TransformationParameter", "expand_param", "SSD's data augmentation, which has no BVLC form"},
    {"TransformationParameter", "noise_param", "SSD's data augmentation, which has no BVLC form"},
};

void dd_unknown_field_hint(const char *msg, const char *field, char *buf, size_t len) {
  if (!len) return;
  for (size_t i = 0; i < sizeof fork_fields / sizeof fork_fields[0]; i++)
    if (!strcmp(fork_fields[i].msg, msg) && !strcmp(fork_fields[i].field, field)) {
      snprintf(buf, len, "%s is not a field of BVLC Caffe's %s: it is %s", field, msg, fork_fields[i].hint);
      return;
    }
  size_t fl = strlen(field);
  if (fl > 6 && !strcmp(field + fl - 6, "_param") && !strcmp(msg, "LayerParameter")) {
    snprintf(buf, len,
             "%s is not a field of BVLC Caffe's LayerParameter: the parameters of a layer type that a Caffe fork "
             "added (distilld reads BVLC Caffe's caffe.proto)",
             field);
    return;
  }
  snprintf(buf, len,
           "%s is not a field of BVLC Caffe's %s (distilld reads BVLC Caffe's caffe.proto, master 9b891540); if "
           "the file comes from a Caffe fork, write it in BVLC's fields",
           field, msg);
}
