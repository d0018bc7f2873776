/* The layer registration table: prototxt `type` -> ops. One line per layer kind. */
#include <stdio.h>
#include <string.h>

#include "base/dd_error.h"
#include "net/layer.h"

#define DD_LAYER_TABLE(XX)             \
  XX("Input", input)                   \
  XX("ImageData", image_data)          \
  XX("Convolution", conv)              \
  XX("BatchNorm", batch_norm)          \
  XX("Scale", scale)                   \
  XX("Bias", bias)                     \
  XX("ReLU", relu)                     \
  XX("Pooling", pooling)               \
  XX("InnerProduct", inner_product)    \
  XX("Eltwise", eltwise)               \
  XX("Dropout", dropout)               \
  XX("Softmax", softmax)               \
  XX("SoftmaxWithLoss", softmax_loss)  \
  XX("Accuracy", accuracy)             \
  XX("Concat", concat)                 \
  XX("Flatten", flatten)               \
  XX("Split", split)                   \
  XX("Silence", silence)               \
  XX("KDLoss", kd_loss)                \
  XX("HintLoss", hint_loss)            \
  XX("AttentionLoss", attention_loss)  \
  /* catalogue: neuron */              \
  XX("Sigmoid", sigmoid)               \
  XX("TanH", tanh)                     \
  XX("ELU", elu)                       \
  XX("Power", power)                   \
  XX("AbsVal", absval)                 \
  XX("BNLL", bnll)                     \
  XX("Exp", exp)                       \
  XX("Log", log)                       \
  XX("Threshold", threshold)           \
  XX("Clip", clip)                     \
  XX("Swish", swish)                   \
  XX("PReLU", prelu)                   \
                                       \
  /* catalogue: structure */           \
  XX("Reduction", reduction)           \
  XX("Slice", slice)                   \
  XX("Reshape", reshape)               \
  XX("Crop", crop)                     \
  XX("Tile", tile)                     \
  XX("ArgMax", argmax)                 \
  XX("Embed", embed)                   \
  XX("Im2col", im2col)                 \
                                       \
  /* catalogue: normalization, conv */ \
  XX("LRN", lrn)                       \
  XX("Deconvolution", deconv)          \
  XX("MVN", mvn)                       \
  XX("SPP", spp)                       \
                                       \
  /* catalogue: losses, recurrent */   \
  /* losses */                         \
  XX("EuclideanLoss", euclidean_loss)  \
  XX("SigmoidCrossEntropyLoss", sigmoid_ce_loss) \
  XX("MultinomialLogisticLoss", multinomial_logistic_loss) \
  XX("HingeLoss", hinge_loss)          \
  XX("InfogainLoss", infogain_loss)    \
  XX("ContrastiveLoss", contrastive_loss) \
  /* recurrent */                      \
  XX("RNN", rnn)                       \
  XX("LSTM", lstm)                     \
  XX("LSTMUnit", lstm_unit)            \
                                       \
  /* catalogue: data */                \
  XX("Data", data)                     \
  /* data2 */                          \
  XX("DummyData", dummy_data)          \
  XX("Parameter", parameter)           \
  XX("HDF5Data", hdf5_data)            \
  XX("HDF5Output", hdf5_output)        \
  XX("MemoryData", memory_data)        \
                                       \
  /* catalogue: lead */                \
  XX("BatchReindex", batch_reindex)    \
                                       \
  /* end of the catalogue */

#define XX(type, name) extern const dd_layer_ops dd_layer_##name;
DD_LAYER_TABLE(XX)
#undef XX

static const dd_layer_ops *const layer_table[] = {
#define XX(type, name) &dd_layer_##name,
    DD_LAYER_TABLE(XX)
#undef XX
};

const dd_layer_ops *dd_layer_ops_find(const char *type) {
  if (!type) return NULL;
  for (size_t i = 0; i < sizeof layer_table / sizeof layer_table[0]; i++)
    if (strcmp(layer_table[i]->type, type) == 0) return layer_table[i];
  return NULL;
}

void dd_layer_types_list(char *buf, size_t len) {
  size_t used = 0;
  if (len) buf[0] = '\0';
  for (size_t i = 0; i < sizeof layer_table / sizeof layer_table[0] && used < len; i++)
    used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "", layer_table[i]->type);
}
