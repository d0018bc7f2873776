/* MemoryData (Caffe's MemoryDataLayer) from C: a data layer whose batches the caller supplies.
 * Tops: data (batch_size, channels, height, width) from memory_data_param, and label (batch_size).
 * Each forward takes the next batch_size samples of what the caller gave, cycling through them.
 *
 * Two ways to give samples, as in Caffe:
 *  - dd_memory_data_reset (Caffe's Reset): float arrays the caller owns, used as they are (no
 *    transform), read at each forward; they must stay valid until the next reset/add or until the
 *    net is destroyed.
 *  - dd_memory_data_add_images (Caffe's AddMatVector): decoded 8-bit images (dd_image: HWC, BGR or
 *    grey, as cv::Mat is), transformed by the layer's transform_param (crop, mirror, mean_value or
 *    mean_file, scale; random crop and mirror in TRAIN) into buffers the layer owns. As in Caffe,
 *    new images are refused until the previous ones have all been consumed by forwards.
 * In both, the sample count must be a positive multiple of batch_size. A forward before any data
 * fails the net with a message naming the layer.
 *
 * The layer: find it in a net with dd_net_layer_index (net/net.h) and pass &net->layers[i].
 * Caffe's set_batch_size has no counterpart (a net's shapes are fixed once built), nor has
 * AddDatumVector (Datum records belong to the Data layer's database reader). */
#ifndef DD_MEMORY_DATA_H
#define DD_MEMORY_DATA_H

#include "data/imgdec.h"
#include "net/layer.h"

/* The layer's ops (to recognise a MemoryData layer: l->ops == &dd_layer_memory_data). */
extern const dd_layer_ops dd_layer_memory_data;

/* Gives `n` samples: data (n, channels, height, width) and labels (n), owned by the caller.
 * Returns 0, or DD_EINVAL (not a MemoryData layer, NULL arrays, n not a positive multiple of
 * batch_size) with a message. */
int dd_memory_data_reset(dd_layer *l, const float *data, const float *labels, int n, char *err, size_t errlen);

/* Gives `n` images with their labels, transformed now into the layer's own buffers (the caller
 * keeps `images` and `labels`). Each image must have the layer's channels and, after the crop,
 * its height and width. Returns 0, DD_EINVAL (as above, or the previous data not consumed yet),
 * DD_ESHAPE (an image of the wrong size, naming its index) or DD_ENOMEM. */
int dd_memory_data_add_images(dd_layer *l, const dd_image *images, const int *labels, int n, char *err,
                              size_t errlen);

#endif
