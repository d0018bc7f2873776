/* Caffe's DataTransformer for decoded images, plus distilld's padding and jitter: one image
 * (HWC uint8, BGR or grey) -> one (C, H, W) float sample. Order: resize (bilinear, when
 * new_height/new_width are set) -> zero padding -> crop (random in TRAIN, centred in TEST) ->
 * mirror (random in TRAIN) -> jitter (TRAIN: brightness, contrast, colour; clamped to [0, 255]) ->
 * (pixel - mean) * scale, with the mean image indexed at the crop offset (Caffe's mean_file) or
 * per-channel mean_value.
 *
 * Every random choice comes from the caller's rng, drawn in a fixed order (crop row, crop
 * column, mirror, brightness, contrast, colour), so a sample's result depends only on how the
 * caller seeded that rng. */
#ifndef DD_TRANSFORM_H
#define DD_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#include "caffe.pb-c.h"
#include "base/rng.h"

typedef struct {
  int channels;          /* 1 or 3 */
  int new_h, new_w;      /* resize first (0: no resize) */
  int pad;               /* zero padding on each side, after the resize */
  int crop_h, crop_w;    /* 0: no crop (the image must then have the output size) */
  int out_h, out_w;      /* the sample's size */
  int train;             /* random crop, mirror and jitter */
  int mirror;
  float scale;
  int n_mean_values;     /* 0, 1 or channels */
  float mean_values[4];
  const float *mean_image; /* (C, mean_h, mean_w) or NULL */
  int mean_h, mean_w;
  int brightness, contrast, color;
  float brightness_delta, contrast_delta, color_delta;
} dd_transform;

/* Fills `t` from a layer's transform_param and image_data_param (with Caffe's deprecated
 * image_data_param crop_size/mirror/scale as fallbacks). The mean image, if any, is set by the
 * caller. Returns 0 or DD_EINVAL with a message. */
int dd_transform_init(dd_transform *t, const Caffe__LayerParameter *lp, int channels, int out_h, int out_w,
                      int train, char *err, size_t errlen);

/* Scratch space dd_transform_apply needs for an image of w x h (bytes). */
size_t dd_transform_scratch_size(const dd_transform *t, int w, int h);

/* Transforms one image `px` (h x w x channels, uint8) into `out` (channels x out_h x out_w).
 * Returns 0, or DD_ESHAPE with a message when the image is smaller than the crop (or, without a
 * crop, not the output size). `scratch` holds dd_transform_scratch_size bytes. */
int dd_transform_apply(const dd_transform *t, float *out, const uint8_t *px, int w, int h, dd_rng *rng,
                       void *scratch, char *err, size_t errlen);

/* The same for an image already in (C, H, W) planes, uint8 (`u8`) or float (`f32`, the other NULL),
 * as a raw Caffe Datum holds it; no resize. `scratch` holds dd_transform_scratch_size bytes. */
int dd_transform_apply_chw(const dd_transform *t, float *out, const uint8_t *u8, const float *f32, int w, int h,
                           dd_rng *rng, void *scratch, char *err, size_t errlen);

#endif
