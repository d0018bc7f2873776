/* Datum records (see datum_write.h). */
#include "data/datum_write.h"

#include <stdlib.h>

#include "base/dd_error.h"
#include "caffe.pb-c.h"

static int pack(uint8_t **out, size_t *len, const Caffe__Datum *d, char *err, size_t errlen) {
  *len = caffe__datum__get_packed_size(d);
  *out = malloc(*len ? *len : 1);
  if (!*out) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  caffe__datum__pack(d, *out);
  return 0;
}

int dd_datum_pack_raw(uint8_t **out, size_t *len, const dd_image *img, int label, char *err, size_t errlen) {
  *out = NULL;
  if (!img->px || (img->c != 1 && img->c != 3) || img->w <= 0 || img->h <= 0)
    return dd_errorf(DD_EINVAL, err, errlen, "a raw Datum needs a decoded image of 1 or 3 channels");
  size_t plane = (size_t)img->w * (size_t)img->h, n = plane * (size_t)img->c;
  uint8_t *chw = malloc(n);
  if (!chw) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  /* (H, W, C) -> (C, H, W) */
  for (size_t p = 0; p < plane; p++)
    for (int c = 0; c < img->c; c++) chw[(size_t)c * plane + p] = img->px[p * (size_t)img->c + (size_t)c];
  Caffe__Datum d = CAFFE__DATUM__INIT;
  d.has_channels = d.has_height = d.has_width = d.has_data = d.has_label = d.has_encoded = 1;
  d.channels = img->c;
  d.height = img->h;
  d.width = img->w;
  d.data.data = chw;
  d.data.len = n;
  d.label = label;
  d.encoded = 0;
  int r = pack(out, len, &d, err, errlen);
  free(chw);
  return r;
}

int dd_datum_pack_encoded(uint8_t **out, size_t *len, const uint8_t *bytes, size_t n, int label, char *err,
                          size_t errlen) {
  Caffe__Datum d = CAFFE__DATUM__INIT;
  d.has_data = d.has_label = d.has_encoded = 1;
  d.data.data = (uint8_t *)bytes;
  d.data.len = n;
  d.label = label;
  d.encoded = 1;
  return pack(out, len, &d, err, errlen);
}
