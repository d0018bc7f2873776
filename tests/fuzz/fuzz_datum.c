/* libFuzzer target for the Datum parser (core/data/datum_read.c), which the Data layer's prefetch
 * thread runs on every database record.
 *
 * Whatever the input, dd_datum_parse must return 0 or DD_ECORRUPT (with a "not a Datum" message)
 * without crashing or reading outside the record (ASan; the input is handed over in an exact-size
 * copy). Where it accepts a record, protobuf-c must unpack the same bytes as a Datum and agree on
 * every field (channels, height, width, label, encoded, data, float_data), and
 * dd_datum_sample_of must return 0, DD_ESHAPE, DD_ECORRUPT or DD_ENOMEM, with a sample whose
 * pixels lie inside the record (raw) or whose shape matches its size.
 *
 * Build: CC=clang cmake -DDD_FUZZ=ON -DDD_SANITIZE=ON; run:
 *   ./fuzz_datum -max_total_time=60 SCRATCH_DIR tests/fuzz/corpus/datum */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "caffe.pb-c.h"
#include "data/datum_read.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *detail) {
  fprintf(stderr, "fuzz_datum: %s: %s\n", what, detail ? detail : "");
  abort();
}

static void compare_with_protobuf_c(const dd_datum_view *v, const uint8_t *buf, size_t size) {
  Caffe__Datum *d = caffe__datum__unpack(NULL, size, buf);
  if (!d) fail("dd_datum_parse accepted what protobuf-c refuses", NULL);
  if (d->channels != v->channels || d->height != v->height || d->width != v->width || d->label != v->label ||
      (d->encoded != 0) != (v->encoded != 0))
    fail("a scalar field differs from protobuf-c's", NULL);
  if (d->data.len != v->data_len || (v->data_len && memcmp(d->data.data, v->data, v->data_len) != 0))
    fail("data differs from protobuf-c's", NULL);
  if ((int64_t)d->n_float_data != v->n_float) fail("float_data count differs from protobuf-c's", NULL);
  if (v->n_float > 0) {
    float *f = malloc((size_t)v->n_float * sizeof *f);
    if (!f) fail("out of memory", NULL);
    dd_datum_floats(v, f);
    if (memcmp(f, d->float_data, (size_t)v->n_float * sizeof *f) != 0) fail("float_data differs from protobuf-c's", NULL);
    free(f);
  }
  caffe__datum__free_unpacked(d, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *buf = malloc(size ? size : 1);
  if (!buf) return 0;
  if (size) memcpy(buf, data, size);
  char err[512];
  dd_datum_view v;
  int r = dd_datum_parse(&v, buf, size, err, sizeof err);
  if (r != 0 && r != DD_ECORRUPT) fail("unexpected error code", err);
  if (r != 0 && strncmp(err, "not a Datum: ", 13) != 0) fail("message without \"not a Datum\"", err);
  if (r == 0) {
    if (v.data_len && (v.data < buf || v.data + v.data_len > buf + size)) fail("data outside the record", NULL);
    compare_with_protobuf_c(&v, buf, size);
    dd_datum_sample s;
    dd_datum_buf b = {0};
    for (int ch = 0; ch <= 3; ch += 3) {
      int q = dd_datum_sample_of(&s, &v, ch, &b, err, sizeof err);
      if (q != 0 && q != DD_ESHAPE && q != DD_ECORRUPT && q != DD_ENOMEM) fail("unexpected sample error code", err);
      if (q == 0) {
        size_t n = (size_t)s.c * (size_t)s.h * (size_t)s.w;
        if (s.c <= 0 || s.h <= 0 || s.w <= 0) fail("a sample without a shape", NULL);
        if (s.u8 && (s.u8 < buf || s.u8 + n > buf + size)) fail("raw pixels outside the record", NULL);
        if (s.f32 && (int64_t)n != v.n_float) fail("float sample of the wrong size", NULL);
        if (!s.u8 && !s.f32 && !s.hwc) fail("a sample without pixels", NULL);
      }
    }
    dd_datum_buf_free(&b);
  }
  free(buf);
  return 0;
}
