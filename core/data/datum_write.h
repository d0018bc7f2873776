/* Caffe Datum records as convert_imageset writes them (util/io.cpp's CVMatToDatum and
 * ReadFileToDatum): a raw Datum holds channels, height, width, the pixels as uint8 in (C, H, W)
 * order (colour planes B, G, R: cv::imread's order, which core/data/imgdec.h gives) and the label,
 * encoded false; an encoded Datum holds an image file's bytes (JPEG or PNG), the label and
 * encoded true, and no dims. Packed with protobuf-c from proto/caffe.proto's Datum. */
#ifndef DD_DATUM_WRITE_H
#define DD_DATUM_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "data/imgdec.h"

/* Packs a raw Datum of `img` (HWC, 1 or 3 channels) into a new malloc'ed buffer *out of *len bytes
 * (the caller frees it). Returns 0, DD_EINVAL (a bad image) or DD_ENOMEM. */
int dd_datum_pack_raw(uint8_t **out, size_t *len, const dd_image *img, int label, char *err, size_t errlen);

/* Packs an encoded Datum of the `n` image-file bytes at `bytes`. Returns 0 or DD_ENOMEM. */
int dd_datum_pack_encoded(uint8_t **out, size_t *len, const uint8_t *bytes, size_t n, int label, char *err,
                          size_t errlen);

#endif
