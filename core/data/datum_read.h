/* Reading Caffe Datum records (proto/caffe.proto's Datum: channels 1, height 2, width 3, data 4,
 * label 5, float_data 6, encoded 7) straight from the protobuf wire bytes, without allocating:
 * the data layer's prefetch thread parses every record this way.
 *
 * The parser follows protobuf's rules: a later occurrence of a scalar field replaces an earlier
 * one, float_data accumulates over packed and unpacked occurrences, unknown fields are skipped
 * (every wire type but groups), and a known field with the wrong wire type, a truncated field or
 * a group makes the record "not a Datum". int32 fields are read as protobuf does (the low 32 bits
 * of the varint). */
#ifndef DD_DATUM_READ_H
#define DD_DATUM_READ_H

#include <stddef.h>
#include <stdint.h>

#include "data/imgdec.h"

/* A parsed Datum: views into the record's bytes (valid while they are). */
typedef struct {
  int32_t channels, height, width, label;
  int encoded;
  const uint8_t *data; /* the data field (raw uint8 CHW pixels, or the image file when encoded) */
  size_t data_len;
  int64_t n_float;     /* float_data values */
  const uint8_t *buf;  /* the record (for dd_datum_floats) */
  size_t len;
} dd_datum_view;

/* Parses the `len` bytes at `buf` into `v`. Returns 0, or DD_ECORRUPT with a message naming the
 * byte offset and the field ("not a Datum: byte 12: field 6 (float_data) has wire type 0"). */
int dd_datum_parse(dd_datum_view *v, const uint8_t *buf, size_t len, char *err, size_t errlen);

/* Copies the v->n_float float_data values, in order, to `out`. */
void dd_datum_floats(const dd_datum_view *v, float *out);

/* A Datum made ready for the transformer: either CHW planes (raw uint8 `u8` or float_data `f32`)
 * or an HWC uint8 image (`hwc`, an encoded record decoded). */
typedef struct {
  int c, h, w, label;
  const uint8_t *u8;  /* (C, H, W) */
  const float *f32;   /* (C, H, W) */
  const uint8_t *hwc; /* (H, W, C) */
} dd_datum_sample;

/* Reusable buffers for dd_datum_sample_of (zero-initialise; dd_datum_buf_free releases). */
typedef struct {
  dd_image img;
  float *floats;
  size_t cap; /* floats allocated */
} dd_datum_buf;

/* Turns a parsed Datum into a sample. A raw record needs channels, height and width > 0 and
 * either data of channels * height * width bytes or (data empty) as many float_data values, as
 * Caffe's DataTransformer reads them; an encoded one is decoded with `channels` (0: as stored,
 * 1: gray, 3: BGR; Caffe's force_gray / force_color). Returns 0, or DD_ECORRUPT / DD_ESHAPE /
 * DD_ENOMEM with a message naming the field ("channels 0", "data has 40 bytes, channels x height x
 * width = 48"). */
int dd_datum_sample_of(dd_datum_sample *s, const dd_datum_view *v, int channels, dd_datum_buf *b, char *err,
                       size_t errlen);

void dd_datum_buf_free(dd_datum_buf *b);

#endif
