/* Datum records read from their wire bytes (see datum_read.h). */
#include "data/datum_read.h"

#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"

/* A varint at p[0..avail): its length (0 when it does not end within `max` bytes) and value. */
static size_t varint_max(const uint8_t *p, size_t avail, size_t max, uint64_t *v) {
  uint64_t r = 0;
  size_t n = avail < max ? avail : max;
  for (size_t i = 0; i < n; i++) {
    r |= (uint64_t)(p[i] & 0x7f) << (7 * i);
    if (!(p[i] & 0x80)) {
      *v = r;
      return i + 1;
    }
  }
  return 0;
}

static size_t varint(const uint8_t *p, size_t avail, uint64_t *v) { return varint_max(p, avail, 10, v); }

static const char *field_name(uint64_t num) {
  static const char *const names[] = {"", "channels", "height", "width", "data", "label", "float_data", "encoded"};
  return num >= 1 && num <= 7 ? names[num] : "unknown";
}

/* The wire type each known field takes (float_data: 5, or 2 when packed). */
static int wire_ok(uint64_t num, unsigned wt) {
  switch (num) {
  case 1: case 2: case 3: case 5: case 7: return wt == 0;
  case 4: return wt == 2;
  case 6: return wt == 5 || wt == 2;
  default: return 1;
  }
}

/* Walks the fields of buf[0..len): for each, calls back with (num, wt, value, payload, plen).
 * Returns 0, or DD_ECORRUPT with the offset of the bad field. */
typedef struct {
  dd_datum_view *v;
  float *out; /* dd_datum_floats: where float_data goes; NULL while parsing */
  int64_t nf;
} walk_ctx;

static void take(walk_ctx *w, uint64_t num, unsigned wt, uint64_t val, const uint8_t *pl, size_t plen) {
  dd_datum_view *v = w->v;
  switch (num) {
  case 1: v->channels = (int32_t)(uint32_t)val; break;
  case 2: v->height = (int32_t)(uint32_t)val; break;
  case 3: v->width = (int32_t)(uint32_t)val; break;
  case 5: v->label = (int32_t)(uint32_t)val; break;
  case 7: v->encoded = val != 0; break;
  case 4:
    v->data = pl;
    v->data_len = plen;
    break;
  case 6:
    if (wt == 5) {
      if (w->out) memcpy(&w->out[w->nf], pl, 4);
      w->nf++;
    } else {
      if (w->out) memcpy(&w->out[w->nf], pl, plen);
      w->nf += (int64_t)(plen / 4);
    }
    break;
  default: break;
  }
}

static int walk(walk_ctx *w, const uint8_t *buf, size_t len, char *err, size_t errlen) {
  size_t pos = 0;
  while (pos < len) {
    size_t at = pos;
    uint64_t tag, val = 0;
    size_t n = varint_max(buf + pos, len - pos, 5, &tag); /* a tag is a 32-bit varint */
    if (!n) return dd_errorf(DD_ECORRUPT, err, errlen, "not a Datum: byte %zu: a truncated or overlong tag", at);
    pos += n;
    uint64_t num = tag >> 3;
    unsigned wt = (unsigned)(tag & 7);
    if (num == 0 || num > 536870911u)
      return dd_errorf(DD_ECORRUPT, err, errlen, "not a Datum: byte %zu: field number %llu", at, (unsigned long long)num);
    if (!wire_ok(num, wt))
      return dd_errorf(DD_ECORRUPT, err, errlen, "not a Datum: byte %zu: field %llu (%s) has wire type %u", at,
                       (unsigned long long)num, field_name(num), wt);
    const uint8_t *pl = buf + pos;
    size_t plen = 0;
    switch (wt) {
    case 0:
      if (!(n = varint(buf + pos, len - pos, &val)))
        return dd_errorf(DD_ECORRUPT, err, errlen, "not a Datum: byte %zu: field %llu (%s): a truncated varint", at,
                         (unsigned long long)num, field_name(num));
      if (num == 7) { /* a bool: true when any bit is set (protobuf-c's rule, past 64 bits too) */
        val = 0;
        for (size_t i = 0; i < n; i++) val |= buf[pos + i] & 0x7f;
      }
      pos += n;
      break;
    case 1:
    case 5:
      plen = wt == 1 ? 8 : 4;
      if (len - pos < plen)
        return dd_errorf(DD_ECORRUPT, err, errlen, "not a Datum: byte %zu: field %llu (%s): truncated", at,
                         (unsigned long long)num, field_name(num));
      pos += plen;
      break;
    case 2: {
      uint64_t l;
      /* protobuf-c's limits: a length prefix of at most 5 bytes, at most INT_MAX */
      if (!(n = varint_max(buf + pos, len - pos, 5, &l)) || l > 2147483647u || l > len - pos - n)
        return dd_errorf(DD_ECORRUPT, err, errlen, "not a Datum: byte %zu: field %llu (%s): the length runs past the "
                         "end of the record (%zu bytes)", at, (unsigned long long)num, field_name(num), len);
      pl = buf + pos + n;
      plen = (size_t)l;
      pos += n + plen;
      if (num == 6 && plen % 4)
        return dd_errorf(DD_ECORRUPT, err, errlen, "not a Datum: byte %zu: packed float_data of %zu bytes, not a "
                         "multiple of 4", at, plen);
      break;
    }
    default:
      return dd_errorf(DD_ECORRUPT, err, errlen, "not a Datum: byte %zu: field %llu has wire type %u (a group or "
                       "invalid)", at, (unsigned long long)num, wt);
    }
    take(w, num, wt, val, pl, plen);
  }
  return 0;
}

int dd_datum_parse(dd_datum_view *v, const uint8_t *buf, size_t len, char *err, size_t errlen) {
  memset(v, 0, sizeof *v);
  v->buf = buf;
  v->len = len;
  walk_ctx w = {v, NULL, 0};
  int r = walk(&w, buf, len, err, errlen);
  v->n_float = w.nf;
  return r;
}

void dd_datum_floats(const dd_datum_view *v, float *out) {
  dd_datum_view copy = *v;
  walk_ctx w = {&copy, out, 0};
  (void)walk(&w, v->buf, v->len, NULL, 0);
}

int dd_datum_sample_of(dd_datum_sample *s, const dd_datum_view *v, int channels, dd_datum_buf *b, char *err,
                       size_t errlen) {
  memset(s, 0, sizeof *s);
  s->label = v->label;
  if (v->encoded) {
    int r = dd_image_decode(&b->img, v->data, v->data_len, channels, "the encoded image (data)", err, errlen);
    if (r) return r;
    s->c = b->img.c;
    s->h = b->img.h;
    s->w = b->img.w;
    s->hwc = b->img.px;
    return 0;
  }
  if (v->channels <= 0 || v->height <= 0 || v->width <= 0)
    return dd_errorf(DD_ESHAPE, err, errlen, "a raw Datum needs channels, height and width > 0: channels %d height %d "
                     "width %d", v->channels, v->height, v->width);
  int64_t n;
  if (__builtin_mul_overflow((int64_t)v->channels, (int64_t)v->height, &n) || __builtin_mul_overflow(n, (int64_t)v->width, &n))
    n = INT64_MAX;
  s->c = v->channels;
  s->h = v->height;
  s->w = v->width;
  if (v->data_len > 0) { /* Caffe reads data when it is not empty, float_data otherwise */
    if ((uint64_t)n != v->data_len)
      return dd_errorf(DD_ESHAPE, err, errlen, "data has %zu bytes, channels x height x width = %d x %d x %d", v->data_len,
                       v->channels, v->height, v->width);
    s->u8 = v->data;
    return 0;
  }
  if (v->n_float != n)
    return dd_errorf(DD_ESHAPE, err, errlen, "float_data has %lld values (and data is empty), channels x height x "
                     "width = %d x %d x %d", (long long)v->n_float, v->channels, v->height, v->width);
  if ((size_t)n > b->cap) {
    float *f = realloc(b->floats, (size_t)n * sizeof *f);
    if (!f) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory for %lld float_data values", (long long)n);
    b->floats = f;
    b->cap = (size_t)n;
  }
  dd_datum_floats(v, b->floats);
  s->f32 = b->floats;
  return 0;
}

void dd_datum_buf_free(dd_datum_buf *b) {
  dd_image_free(&b->img);
  free(b->floats);
  memset(b, 0, sizeof *b);
}
