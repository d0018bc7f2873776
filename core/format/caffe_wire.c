/* The protobuf wire-format walker behind every binary read (dd_wire_explain, see caffe_io.h).
 *
 * It walks a buffer's tags, varints, fixed-size values and length-delimited fields against the
 * message descriptor, checks each known field's wire type, packed arrays, strings and required
 * fields, recurses into sub-messages and names the field path on the way, so a damaged file is
 * explained by byte offset and field. It accepts a subset of what protobuf-c accepts (the fuzz
 * target tests/fuzz/fuzz_caffemodel.c checks that), so a buffer it passes always unpacks. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "format/caffe_io.h"
#include "format/caffe_io_internal.h"

#define WIRE_MAX_DEPTH 64
#define WIRE_MAX_FIELD 536870911u /* 2^29 - 1, the largest field number protobuf allows */

/* One field as it lies on the wire. Positions are offsets into the whole buffer. */
typedef struct {
  size_t tag_pos;     /* first byte of the tag */
  size_t val_pos;     /* first byte after the tag */
  size_t next;        /* first byte after the field (WF_OK only) */
  uint64_t declared;  /* wire type 2: the length it declares */
  size_t content;     /* wire type 2: first byte of the content */
  uint32_t num;       /* field number */
  unsigned wt;        /* wire type */
  uint8_t bad_byte;   /* WF_TAG_ZERO: the tag byte */
} wire_field;

/* What wire_next found. */
enum {
  WF_OK,
  WF_TAG_ZERO,   /* tag byte with field number 0 */
  WF_TAG_CUT,    /* the tag runs into the end of the data */
  WF_TAG_LONG,   /* tag longer than 5 bytes */
  WF_NUM_RANGE,  /* field number 0 or above 2^29-1 (multi-byte tag) */
  WF_GROUP,      /* wire type 3 or 4 */
  WF_BAD_WT,     /* wire type 6 or 7 */
  WF_VARINT_CUT, /* a varint value runs into the end of the data */
  WF_VARINT_LONG,/* a varint value longer than 10 bytes */
  WF_FIXED_CUT,  /* a 4- or 8-byte value runs into the end of the data */
  WF_LEN_CUT,    /* a length prefix runs into the end of the data */
  WF_LEN_LONG,   /* a length prefix longer than 5 bytes */
  WF_LEN_HUGE,   /* a length over INT_MAX (protobuf-c's limit, and protobuf's 2 GiB) */
  WF_LEN_OVER    /* the declared length runs past `end` */
};

/* Scans a varint of at most `max` bytes in p[0..avail). Returns its length and its value in *v,
 * or 0 when no byte ends it within min(avail, max) bytes. */
static size_t wire_varint(const uint8_t *p, size_t avail, size_t max, uint64_t *v) {
  size_t n = avail < max ? avail : max;
  uint64_t r = 0;
  for (size_t i = 0; i < n; i++) {
    r |= (uint64_t)(p[i] & 0x7f) << (7 * i); /* i < 10, so the shift is at most 63 */
    if (!(p[i] & 0x80)) {
      *v = r;
      return i + 1;
    }
  }
  return 0;
}

/* Reads the field starting at buf[pos] in a message that ends at `end`. Fills `f` as far as it
 * got and returns WF_OK or what is wrong. Mirrors protobuf-c's scan (tag of at most 5 bytes whose
 * first byte has a nonzero field number, varints of at most 10 bytes, length prefixes of at most
 * 5 bytes and INT_MAX), and adds protobuf's own field-number range. */
static int wire_next(const uint8_t *buf, size_t pos, size_t end, wire_field *f) {
  const uint8_t *p = buf + pos;
  size_t avail = end - pos;
  uint64_t v;
  f->tag_pos = f->val_pos = pos;
  f->num = 0;
  f->wt = 0;
  if ((p[0] & 0xf8) == 0) {
    f->bad_byte = p[0];
    return WF_TAG_ZERO;
  }
  size_t n = wire_varint(p, avail, 5, &v);
  if (!n) return avail < 5 ? WF_TAG_CUT : WF_TAG_LONG;
  f->wt = (unsigned)(v & 7);
  if ((v >> 3) == 0 || (v >> 3) > WIRE_MAX_FIELD) {
    f->num = (uint32_t)((v >> 3) & 0xffffffffu);
    return WF_NUM_RANGE;
  }
  f->num = (uint32_t)(v >> 3);
  pos += n;
  f->val_pos = pos;
  p = buf + pos;
  avail = end - pos;
  switch (f->wt) {
    case 0:
      n = wire_varint(p, avail, 10, &v);
      if (!n) return avail < 10 ? WF_VARINT_CUT : WF_VARINT_LONG;
      f->next = pos + n;
      return WF_OK;
    case 1:
      if (avail < 8) return WF_FIXED_CUT;
      f->next = pos + 8;
      return WF_OK;
    case 5:
      if (avail < 4) return WF_FIXED_CUT;
      f->next = pos + 4;
      return WF_OK;
    case 2:
      n = wire_varint(p, avail, 5, &v);
      if (!n) return avail < 5 ? WF_LEN_CUT : WF_LEN_LONG;
      f->declared = v;
      f->content = pos + n;
      if (v > INT_MAX) return WF_LEN_HUGE;
      if (v > end - f->content) return WF_LEN_OVER;
      f->next = f->content + (size_t)v;
      return WF_OK;
    case 3:
    case 4:
      return WF_GROUP;
    default:
      return WF_BAD_WT;
  }
}

typedef struct {
  const uint8_t *buf;
  size_t len; /* of the whole buffer */
  char *err;
  size_t errlen;
  char path[256]; /* field path of the message being walked, e.g. "layer[3].blobs[0]" */
  size_t path_len;
  char who[112];  /* the nearest enclosing message with a name, e.g. `layer "conv1"` */
} wire_ctx;

void dd__appendf(char *buf, size_t n, size_t *pos, const char *fmt, ...) {
  if (*pos >= n) return;
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(buf + *pos, n - *pos, fmt, ap);
  va_end(ap);
  if (k < 0) return;
  *pos = (size_t)k >= n - *pos ? n - 1 : *pos + (size_t)k;
}

/* "LayerParameter at layer[3] (layer "conv1")": the message being walked, for messages. */
static void wire_where(const wire_ctx *c, const ProtobufCMessageDescriptor *d, char *out,
                       size_t n) {
  size_t k = 0;
  out[0] = '\0';
  dd__appendf(out, n, &k, "%s", d->short_name);
  if (c->path_len) dd__appendf(out, n, &k, " at %s", c->path);
  if (c->who[0]) dd__appendf(out, n, &k, " (%s)", c->who);
}

/* Writes "byte P: <message> in WHERE<tail>"; returns DD_ECORRUPT. */
static int wire_fail(wire_ctx *c, size_t pos, const ProtobufCMessageDescriptor *d,
                     const char *tail, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int wire_fail(wire_ctx *c, size_t pos, const ProtobufCMessageDescriptor *d,
                     const char *tail, const char *fmt, ...) {
  if (!c->err || c->errlen == 0) return DD_ECORRUPT;
  char where[512];
  wire_where(c, d, where, sizeof where);
  size_t k = 0;
  c->err[0] = '\0';
  dd__appendf(c->err, c->errlen, &k, "byte %zu: ", pos);
  va_list ap;
  va_start(ap, fmt);
  if (k < c->errlen) {
    int m = vsnprintf(c->err + k, c->errlen - k, fmt, ap);
    if (m > 0) k = (size_t)m >= c->errlen - k ? c->errlen - 1 : k + (size_t)m;
  }
  va_end(ap);
  dd__appendf(c->err, c->errlen, &k, " in %s%s", where, tail);
  return DD_ECORRUPT;
}

/* Writes "byte P: field N (name) of WHERE <message>"; returns DD_ECORRUPT. */
static int wire_field_fail(wire_ctx *c, size_t pos, const ProtobufCMessageDescriptor *d,
                           uint32_t num, const ProtobufCFieldDescriptor *f, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int wire_field_fail(wire_ctx *c, size_t pos, const ProtobufCMessageDescriptor *d,
                           uint32_t num, const ProtobufCFieldDescriptor *f, const char *fmt, ...) {
  if (!c->err || c->errlen == 0) return DD_ECORRUPT;
  char where[512];
  wire_where(c, d, where, sizeof where);
  size_t k = 0;
  c->err[0] = '\0';
  if (f)
    dd__appendf(c->err, c->errlen, &k, "byte %zu: field %" PRIu32 " (%s) of %s ", pos, num, f->name,
           where);
  else
    dd__appendf(c->err, c->errlen, &k, "byte %zu: field %" PRIu32 " (unknown) of %s ", pos, num,
           where);
  va_list ap;
  va_start(ap, fmt);
  if (k < c->errlen) vsnprintf(c->err + k, c->errlen - k, fmt, ap);
  va_end(ap);
  return DD_ECORRUPT;
}

static const char *wire_type_name(unsigned wt) {
  switch (wt) {
    case 0: return "varint";
    case 1: return "64-bit";
    case 2: return "length-delimited";
    case 3: return "start group";
    case 4: return "end group";
    case 5: return "32-bit";
  }
  return "invalid";
}

/* One row per protobuf-c field type: its name in .proto files, the wire type one value of it is
 * written with (unpacked), and the bytes one value takes in a packed array (0: a varint). */
typedef struct {
  const char *name;
  unsigned wire_type;
  unsigned packed_width;
} pb_type;

static const pb_type pb_types[] = {
    [PROTOBUF_C_TYPE_INT32] = {"int32", 0, 0},
    [PROTOBUF_C_TYPE_SINT32] = {"sint32", 0, 0},
    [PROTOBUF_C_TYPE_SFIXED32] = {"sfixed32", 5, 4},
    [PROTOBUF_C_TYPE_INT64] = {"int64", 0, 0},
    [PROTOBUF_C_TYPE_SINT64] = {"sint64", 0, 0},
    [PROTOBUF_C_TYPE_SFIXED64] = {"sfixed64", 1, 8},
    [PROTOBUF_C_TYPE_UINT32] = {"uint32", 0, 0},
    [PROTOBUF_C_TYPE_FIXED32] = {"fixed32", 5, 4},
    [PROTOBUF_C_TYPE_UINT64] = {"uint64", 0, 0},
    [PROTOBUF_C_TYPE_FIXED64] = {"fixed64", 1, 8},
    [PROTOBUF_C_TYPE_FLOAT] = {"float", 5, 4},
    [PROTOBUF_C_TYPE_DOUBLE] = {"double", 1, 8},
    [PROTOBUF_C_TYPE_BOOL] = {"bool", 0, 0},
    [PROTOBUF_C_TYPE_ENUM] = {"enum", 0, 0},
    [PROTOBUF_C_TYPE_STRING] = {"string", 2, 0},
    [PROTOBUF_C_TYPE_BYTES] = {"bytes", 2, 0},
    [PROTOBUF_C_TYPE_MESSAGE] = {"message", 2, 0},
};

/* The row of type `t`; a type no row knows reads as an unknown varint type. */
static const pb_type *pb_type_of(ProtobufCType t) {
  static const pb_type unknown = {"unknown", 0, 0};
  if ((size_t)t < sizeof pb_types / sizeof pb_types[0] && pb_types[t].name) return &pb_types[t];
  return &unknown;
}

/* Looks for the `name` string field of a message of type `d` in buf[pos..end) without checking
 * anything else, and sets c->who to `FIELD "NAME"` when it finds one. */
static void wire_peek_name(wire_ctx *c, const ProtobufCMessageDescriptor *d, size_t pos,
                           size_t end, const char *field_name) {
  const ProtobufCFieldDescriptor *nf = protobuf_c_message_descriptor_get_field_by_name(d, "name");
  if (!nf || nf->type != PROTOBUF_C_TYPE_STRING) return;
  while (pos < end) {
    wire_field f;
    if (wire_next(c->buf, pos, end, &f) != WF_OK) return;
    if (f.num == nf->id && f.wt == 2) {
      char name[64];
      size_t n = (size_t)f.declared < sizeof name - 1 ? (size_t)f.declared : sizeof name - 1;
      for (size_t i = 0; i < n; i++) {
        uint8_t ch = c->buf[f.content + i];
        name[i] = (ch >= 0x20 && ch < 0x7f && ch != '"') ? (char)ch : '?';
      }
      name[n] = '\0';
      snprintf(c->who, sizeof c->who, "%s \"%s%s\"", field_name, name,
               (size_t)f.declared > n ? "..." : "");
      return;
    }
    pos = f.next;
  }
}

static int wire_walk(wire_ctx *c, const ProtobufCMessageDescriptor *d, size_t start, size_t end,
                     int depth);

/* Walks the sub-message of field `f` (occurrence `index` of it) in buf[start..end), with the
 * field path and name extended for messages. */
static int wire_descend(wire_ctx *c, const ProtobufCFieldDescriptor *f, uint32_t index,
                        size_t start, size_t end, int depth) {
  size_t saved_len = c->path_len;
  char saved_who[sizeof c->who];
  memcpy(saved_who, c->who, sizeof saved_who);
  if (f->label == PROTOBUF_C_LABEL_REPEATED)
    dd__appendf(c->path, sizeof c->path, &c->path_len, "%s%s[%" PRIu32 "]", saved_len ? "." : "",
           f->name, index);
  else
    dd__appendf(c->path, sizeof c->path, &c->path_len, "%s%s", saved_len ? "." : "", f->name);
  wire_peek_name(c, f->descriptor, start, end, f->name);
  int r = wire_walk(c, f->descriptor, start, end, depth + 1);
  c->path_len = saved_len;
  c->path[saved_len] = '\0';
  memcpy(c->who, saved_who, sizeof saved_who);
  return r;
}

/* Checks a packed repeated field's content (w->declared bytes at w->content) for the element
 * type of `f`: fixed-size elements fill it exactly, bools are bytes 0 or 1, varints all end. */
static int wire_check_packed(wire_ctx *c, const ProtobufCMessageDescriptor *d,
                             const ProtobufCFieldDescriptor *f, const wire_field *w) {
  size_t p = w->content, n = (size_t)w->declared, e = p + n;
  const pb_type *t = pb_type_of(f->type);
  if (t->packed_width) {
    if (n % t->packed_width)
      return wire_field_fail(c, w->tag_pos, d, w->num, f,
                             "is a packed %s array of %zu bytes, not a multiple of %u", t->name, n,
                             t->packed_width);
    return 0;
  }
  if (f->type == PROTOBUF_C_TYPE_BOOL) {
    for (; p < e; p++)
      if (c->buf[p] > 1)
        return wire_field_fail(c, w->tag_pos, d, w->num, f,
                               "is a packed bool array whose byte %zu is 0x%02x, not 0 or 1", p,
                               c->buf[p]);
    return 0;
  }
  while (p < e) {
    uint64_t v;
    size_t k = wire_varint(c->buf + p, e - p, 10, &v);
    if (!k)
      return wire_field_fail(c, w->tag_pos, d, w->num, f,
                             "is a packed %s array with a damaged varint at byte %zu", t->name, p);
    p += k;
  }
  return 0;
}

/* Checks a known field against its descriptor: wire type, packed content, strings, and recurses
 * into sub-messages. `index` is the occurrence number of the field in this message. */
static int wire_check_known(wire_ctx *c, const ProtobufCMessageDescriptor *d,
                            const ProtobufCFieldDescriptor *f, const wire_field *w,
                            uint32_t index, int depth) {
  if (f->label == PROTOBUF_C_LABEL_REPEATED && w->wt == 2 && pb_type_of(f->type)->wire_type != 2)
    return wire_check_packed(c, d, f, w);
  unsigned want = pb_type_of(f->type)->wire_type;
  if (w->wt != want)
    return wire_field_fail(c, w->tag_pos, d, w->num, f,
                           "has wire type %u (%s), but it is a %s field (wire type %u, %s)",
                           w->wt, wire_type_name(w->wt), pb_type_of(f->type)->name, want,
                           wire_type_name(want));
  if (f->type == PROTOBUF_C_TYPE_STRING) {
    const uint8_t *nul = memchr(c->buf + w->content, 0, (size_t)w->declared);
    if (nul)
      return wire_field_fail(c, w->tag_pos, d, w->num, f,
                             "is a string with a NUL byte at byte %zu (protobuf-c would cut "
                             "it there)",
                             (size_t)(nul - c->buf));
  }
  if (f->type == PROTOBUF_C_TYPE_MESSAGE)
    return wire_descend(c, f, index, w->content, w->next, depth);
  return 0;
}

/* Walks the message of type `d` in buf[start..end) (end <= c->len). Returns 0, DD_ECORRUPT with
 * the first problem in c->err, or DD_ENOMEM. */
static int wire_walk(wire_ctx *c, const ProtobufCMessageDescriptor *d, size_t start, size_t end,
                     int depth) {
  if (depth > WIRE_MAX_DEPTH)
    return wire_fail(c, start, d, "", "messages nest more than %d levels deep", WIRE_MAX_DEPTH);
  /* Occurrences so far of each field: repeated ones index the path, required ones are checked at
   * the end. */
  uint32_t *seen = NULL;
  if (d->n_fields) {
    seen = calloc(d->n_fields, sizeof *seen);
    if (!seen) return dd_errorf(DD_ENOMEM, c->err, c->errlen, "out of memory checking the data");
  }
  const int at_eof = end == c->len;
  const char *cut = at_eof ? " (truncated file?)" : "";
  char encl[80];
  snprintf(encl, sizeof encl, " of this %s", d->short_name);
  int r = 0;
  size_t pos = start;
  while (pos < end) {
    wire_field w;
    int st = wire_next(c->buf, pos, end, &w);
    const ProtobufCFieldDescriptor *f =
        (st == WF_OK || st >= WF_GROUP) ? protobuf_c_message_descriptor_get_field(d, w.num) : NULL;
    size_t left = end - w.val_pos;
    switch (st) {
      case WF_OK:
        break;
      case WF_TAG_ZERO:
        r = wire_fail(c, pos, d, w.bad_byte == 0 ? " (a zero byte where a field should start)" : "",
                      "invalid field tag byte 0x%02x (field number 0)", w.bad_byte);
        goto out;
      case WF_TAG_CUT:
        r = wire_fail(c, pos, d, cut, "a field tag is cut off by the end of the %s",
                      at_eof ? "data" : "message");
        goto out;
      case WF_TAG_LONG:
        r = wire_fail(c, pos, d, "", "a field tag is longer than 5 bytes");
        goto out;
      case WF_NUM_RANGE:
        r = wire_fail(c, pos, d, "", "field number %" PRIu32 " is out of range (1 to %u)", w.num,
                      WIRE_MAX_FIELD);
        goto out;
      case WF_GROUP:
        r = wire_field_fail(c, pos, d, w.num, f, "uses wire type %u (%s): groups are not supported",
                            w.wt, wire_type_name(w.wt));
        goto out;
      case WF_BAD_WT:
        r = wire_fail(c, pos, d, "", "invalid wire type %u (field %" PRIu32 ")", w.wt, w.num);
        goto out;
      case WF_VARINT_CUT:
        r = wire_field_fail(c, pos, d, w.num, f, "has its varint value cut off by the end%s%s",
                            at_eof ? " of the data" : encl, cut);
        goto out;
      case WF_VARINT_LONG:
        r = wire_field_fail(c, pos, d, w.num, f, "has a varint value longer than 10 bytes");
        goto out;
      case WF_FIXED_CUT:
        r = wire_field_fail(c, pos, d, w.num, f,
                            "needs a %u-byte value but only %zu bytes remain%s%s",
                            w.wt == 1 ? 8u : 4u, left, at_eof ? "" : encl, cut);
        goto out;
      case WF_LEN_CUT:
        r = wire_field_fail(c, pos, d, w.num, f,
                            "has its length prefix cut off by the end%s%s",
                            at_eof ? " of the data" : encl, cut);
        goto out;
      case WF_LEN_LONG:
        r = wire_field_fail(c, pos, d, w.num, f, "has a length prefix longer than 5 bytes");
        goto out;
      case WF_LEN_HUGE:
        r = wire_field_fail(c, pos, d, w.num, f,
                            "declares %" PRIu64 " bytes, more than the 2 GiB a message may hold",
                            w.declared);
        goto out;
      case WF_LEN_OVER: {
        /* At the end of the file, look inside a cut-off sub-message: the innermost field the
         * cut went through says more than its container. */
        if (at_eof && f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
          uint32_t idx = seen[f - d->fields];
          r = wire_descend(c, f, idx, w.content, end, depth);
          if (r) goto out;
        }
        r = wire_field_fail(c, pos, d, w.num, f,
                            "declares %" PRIu64 " bytes but only %zu remain%s%s", w.declared,
                            end - w.content, at_eof ? "" : encl, cut);
        goto out;
      }
    }
    if (f) {
      size_t fi = (size_t)(f - d->fields);
      r = wire_check_known(c, d, f, &w, seen[fi], depth);
      if (r) goto out;
      if (seen[fi] < UINT32_MAX) seen[fi]++;
    }
    pos = w.next;
  }
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->label == PROTOBUF_C_LABEL_REQUIRED && !f->default_value && !seen[i]) {
      r = wire_fail(c, end, d, "", "the message ends without its required field %u (%s)", f->id,
                    f->name);
      goto out;
    }
  }
out:
  free(seen);
  return r;
}

int dd_wire_explain(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
                    char *err, size_t errlen) {
  if (err && errlen) err[0] = '\0';
  wire_ctx c;
  memset(&c, 0, sizeof c);
  c.buf = buf;
  c.len = len;
  c.err = err;
  c.errlen = errlen;
  return wire_walk(&c, desc, 0, len, 0);
}
