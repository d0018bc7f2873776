/* Caffe's file formats (see caffe_io.h): a protobuf wire-format walker that explains damaged
 * files, the strict binary reader built on it and protobuf-c, Caffe's blob checks, atomic writers,
 * the text readers with the V1 check, and the uniform view over both layer formats.
 *
 * The walker (wire_*) is the first thing every binary read runs. It accepts a subset of what
 * protobuf-c accepts (the fuzz target tests/fuzz/fuzz_caffemodel.c checks that), so a buffer it
 * passes always unpacks, and a buffer it refuses gets a message that says where and why. */
#define _POSIX_C_SOURCE 200809L
#include "format/caffe_io.h"

#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "format/fileio.h"
#include "format/textformat.h"

/* ============================================================================================ */
/* Wire-format walker                                                                           */
/* ============================================================================================ */

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

/* Appends printf-style to buf (of n bytes) at *pos, clamping at the end. */
static void append(char *buf, size_t n, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t n, size_t *pos, const char *fmt, ...) {
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
  append(out, n, &k, "%s", d->short_name);
  if (c->path_len) append(out, n, &k, " at %s", c->path);
  if (c->who[0]) append(out, n, &k, " (%s)", c->who);
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
  append(c->err, c->errlen, &k, "byte %zu: ", pos);
  va_list ap;
  va_start(ap, fmt);
  if (k < c->errlen) {
    int m = vsnprintf(c->err + k, c->errlen - k, fmt, ap);
    if (m > 0) k = (size_t)m >= c->errlen - k ? c->errlen - 1 : k + (size_t)m;
  }
  va_end(ap);
  append(c->err, c->errlen, &k, " in %s%s", where, tail);
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
    append(c->err, c->errlen, &k, "byte %zu: field %" PRIu32 " (%s) of %s ", pos, num, f->name,
           where);
  else
    append(c->err, c->errlen, &k, "byte %zu: field %" PRIu32 " (unknown) of %s ", pos, num,
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

static const char *pb_type_name(ProtobufCType t) {
  switch (t) {
    case PROTOBUF_C_TYPE_INT32: return "int32";
    case PROTOBUF_C_TYPE_SINT32: return "sint32";
    case PROTOBUF_C_TYPE_SFIXED32: return "sfixed32";
    case PROTOBUF_C_TYPE_INT64: return "int64";
    case PROTOBUF_C_TYPE_SINT64: return "sint64";
    case PROTOBUF_C_TYPE_SFIXED64: return "sfixed64";
    case PROTOBUF_C_TYPE_UINT32: return "uint32";
    case PROTOBUF_C_TYPE_FIXED32: return "fixed32";
    case PROTOBUF_C_TYPE_UINT64: return "uint64";
    case PROTOBUF_C_TYPE_FIXED64: return "fixed64";
    case PROTOBUF_C_TYPE_FLOAT: return "float";
    case PROTOBUF_C_TYPE_DOUBLE: return "double";
    case PROTOBUF_C_TYPE_BOOL: return "bool";
    case PROTOBUF_C_TYPE_ENUM: return "enum";
    case PROTOBUF_C_TYPE_STRING: return "string";
    case PROTOBUF_C_TYPE_BYTES: return "bytes";
    case PROTOBUF_C_TYPE_MESSAGE: return "message";
  }
  return "unknown";
}

/* The wire type a value of type `t` is written with (unpacked). */
static unsigned pb_wire_type(ProtobufCType t) {
  switch (t) {
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
      return 1;
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
      return 5;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE:
      return 2;
    default:
      return 0;
  }
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
    append(c->path, sizeof c->path, &c->path_len, "%s%s[%" PRIu32 "]", saved_len ? "." : "",
           f->name, index);
  else
    append(c->path, sizeof c->path, &c->path_len, "%s%s", saved_len ? "." : "", f->name);
  wire_peek_name(c, f->descriptor, start, end, f->name);
  int r = wire_walk(c, f->descriptor, start, end, depth + 1);
  c->path_len = saved_len;
  c->path[saved_len] = '\0';
  memcpy(c->who, saved_who, sizeof saved_who);
  return r;
}

/* Checks a packed repeated field's content buf[p..p+n) for element type `t`. */
static int wire_check_packed(wire_ctx *c, const ProtobufCMessageDescriptor *d,
                             const ProtobufCFieldDescriptor *f, const wire_field *w) {
  size_t p = w->content, n = (size_t)w->declared, e = p + n;
  switch (f->type) {
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
      if (n % 4)
        return wire_field_fail(c, w->tag_pos, d, w->num, f,
                               "is a packed %s array of %zu bytes, not a multiple of 4",
                               pb_type_name(f->type), n);
      return 0;
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
      if (n % 8)
        return wire_field_fail(c, w->tag_pos, d, w->num, f,
                               "is a packed %s array of %zu bytes, not a multiple of 8",
                               pb_type_name(f->type), n);
      return 0;
    case PROTOBUF_C_TYPE_BOOL:
      for (; p < e; p++)
        if (c->buf[p] > 1)
          return wire_field_fail(c, w->tag_pos, d, w->num, f,
                                 "is a packed bool array whose byte %zu is 0x%02x, not 0 or 1", p,
                                 c->buf[p]);
      return 0;
    default:
      while (p < e) {
        uint64_t v;
        size_t k = wire_varint(c->buf + p, e - p, 10, &v);
        if (!k)
          return wire_field_fail(c, w->tag_pos, d, w->num, f,
                                 "is a packed %s array with a damaged varint at byte %zu",
                                 pb_type_name(f->type), p);
        p += k;
      }
      return 0;
  }
}

/* Checks a known field against its descriptor: wire type, packed content, strings, and recurses
 * into sub-messages. `index` is the occurrence number of the field in this message. */
static int wire_check_known(wire_ctx *c, const ProtobufCMessageDescriptor *d,
                            const ProtobufCFieldDescriptor *f, const wire_field *w,
                            uint32_t index, int depth) {
  if (f->label == PROTOBUF_C_LABEL_REPEATED && w->wt == 2 && pb_wire_type(f->type) != 2)
    return wire_check_packed(c, d, f, w);
  unsigned want = pb_wire_type(f->type);
  if (w->wt != want)
    return wire_field_fail(c, w->tag_pos, d, w->num, f,
                           "has wire type %u (%s), but it is a %s field (wire type %u, %s)",
                           w->wt, wire_type_name(w->wt), pb_type_name(f->type), want,
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

/* ============================================================================================ */
/* Binary files                                                                                 */
/* ============================================================================================ */

/* True when `buf` reads like a protobuf text file: no control characters but whitespace in its
 * first 512 bytes, and it starts with a '#' comment or `identifier:` / `identifier {`. */
static int looks_like_text(const uint8_t *buf, size_t len) {
  size_t n = len < 512 ? len : 512, i = 0;
  for (size_t k = 0; k < n; k++) {
    uint8_t ch = buf[k];
    if ((ch < 0x20 && !isspace(ch)) || ch == 0x7f) return 0;
  }
  while (i < n && isspace(buf[i])) i++;
  if (i == n) return 0;
  if (buf[i] == '#') return 1;
  if (!isalpha(buf[i]) && buf[i] != '_') return 0;
  while (i < n && (isalnum(buf[i]) || buf[i] == '_')) i++;
  while (i < n && isspace(buf[i])) i++;
  return i < n && (buf[i] == ':' || buf[i] == '{' || buf[i] == '<');
}

/* True when `buf` does not read like text: a NUL or several control characters early on. */
static int looks_binary(const uint8_t *buf, size_t len) {
  size_t n = len < 512 ? len : 512, ctl = 0;
  for (size_t k = 0; k < n; k++) {
    if (buf[k] == 0) return 1;
    if ((buf[k] < 0x20 && !isspace(buf[k])) || buf[k] == 0x7f) ctl++;
  }
  return ctl >= 4 || (n > 0 && ctl * 10 >= n);
}

/* The error for a text file given where a binary one belongs. */
static int text_hint(const uint8_t *buf, size_t len, const char *name, const char *what,
                     char *err, size_t errlen) {
  size_t i = 0;
  while (i < len && isspace(buf[i])) i++;
  char first[48];
  size_t k = 0;
  for (; i < len && k < sizeof first - 1 && buf[i] != '\n' && buf[i] != '\r'; i++)
    first[k++] = (buf[i] >= 0x20 && buf[i] < 0x7f) ? (char)buf[i] : '?';
  first[k] = '\0';
  return dd_errorf(DD_ECORRUPT, err, errlen,
                   "%s: this looks like a text prototxt (it starts with `%s`), not a %s; was a "
                   ".prototxt given where the binary file belongs?",
                   name, first, what);
}

/* protobuf-c's allocator over malloc/free that remembers a failed allocation, so running out of
 * memory is not reported as a corrupt file. Messages it allocates are freed with the default
 * allocator (also malloc/free). */
typedef struct {
  int failed;
} track_state;

static void *track_alloc(void *data, size_t size) {
  void *p = malloc(size ? size : 1);
  if (!p) ((track_state *)data)->failed = 1;
  return p;
}

static void track_free(void *data, void *p) {
  (void)data;
  free(p);
}

int dd_proto_parse_binary(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                          const uint8_t *buf, size_t len, const char *name, const char *what,
                          char *err, size_t errlen) {
  *out = NULL;
  if (!name) name = "<memory>";
  if (!what) what = desc->short_name;
  if (len == 0)
    return dd_errorf(DD_ECORRUPT, err, errlen, "%s: empty file (0 bytes), expected a %s", name,
                     what);
  char detail[768];
  int r = dd_wire_explain(desc, buf, len, detail, sizeof detail);
  if (r == DD_ENOMEM)
    return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory checking %zu bytes", name, len);
  if (r) {
    if (looks_like_text(buf, len)) return text_hint(buf, len, name, what, err, errlen);
    return dd_errorf(DD_ECORRUPT, err, errlen, "%s: not a valid %s: %s", name, what, detail);
  }
  track_state st = {0};
  ProtobufCAllocator alloc = {track_alloc, track_free, &st};
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, &alloc, len, buf);
  if (!m) {
    if (st.failed)
      return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory decoding %zu bytes", name, len);
    return dd_errorf(DD_ECORRUPT, err, errlen, "%s: not a valid %s (protobuf-c cannot decode it)",
                     name, what);
  }
  *out = m;
  return 0;
}

int dd_proto_read_binary(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                         const char *path, char *err, size_t errlen) {
  *out = NULL;
  char *buf;
  size_t len;
  int r = dd_read_file(&buf, &len, path, err, errlen);
  if (r) return r;
  r = dd_proto_parse_binary(out, desc, (const uint8_t *)buf, len, path, NULL, err, errlen);
  free(buf);
  return r;
}

int dd_proto_write_binary(const ProtobufCMessage *msg, const char *path, char *err,
                          size_t errlen) {
  if (!msg || !protobuf_c_message_check(msg))
    return dd_errorf(DD_EINVAL, err, errlen,
                     "%s: refusing to write an incomplete %s (a NULL string or sub-message in a "
                     "repeated field, or a missing required field)",
                     path, msg && msg->descriptor ? msg->descriptor->short_name : "message");
  size_t size = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = malloc(size ? size : 1);
  if (!buf)
    return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory packing %zu bytes", path, size);
  size_t packed = protobuf_c_message_pack(msg, buf);
  DD_ASSERT(packed == size);
  int r = dd_write_file_atomic(path, buf, size, err, errlen);
  free(buf);
  return r;
}

/* ============================================================================================ */
/* Blobs                                                                                        */
/* ============================================================================================ */

/* dd_blob_proto_shape, also telling which dimension is negative (*bad) or how many dims there
 * are (*ndims_out, for the too-many case). */
static int blob_shape(const Caffe__BlobProto *b, int64_t dims[DD_MAX_DIMS], size_t *bad,
                      size_t *ndims_out) {
  if (b->has_num || b->has_channels || b->has_height || b->has_width) {
    /* Caffe's legacy 4-D shape: all four, absent ones 0. */
    int64_t legacy[4] = {b->num, b->channels, b->height, b->width};
    *ndims_out = 4;
    for (size_t i = 0; i < 4; i++) {
      if (legacy[i] < 0) {
        *bad = i;
        return DD_ECORRUPT;
      }
      dims[i] = legacy[i];
    }
    return 4;
  }
  size_t n = b->shape ? b->shape->n_dim : 0;
  *ndims_out = n;
  if (n > DD_MAX_DIMS) return DD_EUNSUPPORTED;
  for (size_t i = 0; i < n; i++) {
    if (b->shape->dim[i] < 0) {
      *bad = i;
      return DD_ECORRUPT;
    }
    dims[i] = b->shape->dim[i];
  }
  return (int)n;
}

int dd_blob_proto_shape(const Caffe__BlobProto *b, int64_t dims[DD_MAX_DIMS]) {
  size_t bad, nd;
  return blob_shape(b, dims, &bad, &nd);
}

/* "6x3x3x3", "() (a scalar)", with " (legacy num/channels/height/width)" for legacy shapes. */
static void shape_string(const Caffe__BlobProto *b, const int64_t *dims, int nd, char *out,
                         size_t n) {
  size_t k = 0;
  out[0] = '\0';
  if (nd == 0) {
    append(out, n, &k, "() (a scalar)");
    return;
  }
  for (int i = 0; i < nd; i++) append(out, n, &k, "%s%" PRId64, i ? "x" : "", dims[i]);
  if (b->has_num || b->has_channels || b->has_height || b->has_width)
    append(out, n, &k, " (legacy num/channels/height/width)");
}

int dd_blob_proto_check(const Caffe__BlobProto *b, char *msg, size_t msglen) {
  int64_t dims[DD_MAX_DIMS];
  size_t bad = 0, nd_all = 0;
  int nd = blob_shape(b, dims, &bad, &nd_all);
  if (nd == DD_EUNSUPPORTED)
    return dd_errorf(DD_EUNSUPPORTED, msg, msglen,
                     "has a shape of %zu dimensions; at most %d are supported", nd_all,
                     DD_MAX_DIMS);
  if (nd < 0) {
    int legacy = b->has_num || b->has_channels || b->has_height || b->has_width;
    static const char *const legacy_names[4] = {"num", "channels", "height", "width"};
    int64_t v = legacy ? (bad == 0 ? b->num : bad == 1 ? b->channels : bad == 2 ? b->height
                                                                                 : b->width)
                       : b->shape->dim[bad];
    if (legacy)
      return dd_errorf(DD_ECORRUPT, msg, msglen, "has a negative %s (%" PRId64 ")",
                       legacy_names[bad], v);
    return dd_errorf(DD_ECORRUPT, msg, msglen, "has a negative dimension %zu (%" PRId64 ")",
                     bad, v);
  }
  char shape[160];
  shape_string(b, dims, nd, shape, sizeof shape);
  /* Elements of the shape, with overflow caught (a zero dimension makes it 0). */
  uint64_t count = 1;
  int zero = 0, overflow = 0;
  for (int i = 0; i < nd; i++) {
    if (dims[i] == 0) zero = 1;
    else if (count > UINT64_MAX / (uint64_t)dims[i]) overflow = 1;
    else count *= (uint64_t)dims[i];
  }
  if (zero) count = 0;
  else if (overflow)
    return dd_errorf(DD_ECORRUPT, msg, msglen, "has a shape %s with more than 2^64 elements",
                     shape);
  const char *kind = b->n_double_data > 0 ? "double_data" : "data";
  size_t have = b->n_double_data > 0 ? b->n_double_data : b->n_data;
  if ((uint64_t)have != count)
    return dd_errorf(DD_ECORRUPT, msg, msglen,
                     "holds %zu %s values but its shape %s has %" PRIu64 " elements", have, kind,
                     shape, count);
  kind = b->n_double_diff > 0 ? "double_diff" : "diff";
  have = b->n_double_diff > 0 ? b->n_double_diff : b->n_diff;
  if (have > 0 && (uint64_t)have != count)
    return dd_errorf(DD_ECORRUPT, msg, msglen,
                     "holds %zu %s values but its shape %s has %" PRIu64 " elements", have, kind,
                     shape, count);
  return 0;
}

/* Checks every blob of every layer of `net`. On a problem returns `code` (or the check's own
 * DD_EUNSUPPORTED) with "NAME: PREFIXlayer "x" (layer[i], type T): blob j <problem>". */
static int net_check_blobs(const Caffe__NetParameter *net, const char *name, const char *prefix,
                           int code, char *err, size_t errlen) {
  char msg[384];
  for (size_t i = 0; i < net->n_layer; i++) {
    const Caffe__LayerParameter *l = net->layer[i];
    for (size_t j = 0; j < l->n_blobs; j++) {
      int r = dd_blob_proto_check(l->blobs[j], msg, sizeof msg);
      if (r)
        return dd_errorf(r == DD_ECORRUPT ? code : r, err, errlen,
                         "%s: %slayer \"%s\" (layer[%zu], type %s): blob %zu %s", name, prefix,
                         l->name ? l->name : "", i, l->type ? l->type : "?", j, msg);
    }
  }
  for (size_t i = 0; i < net->n_layers; i++) {
    const Caffe__V1LayerParameter *l = net->layers[i];
    for (size_t j = 0; j < l->n_blobs; j++) {
      int r = dd_blob_proto_check(l->blobs[j], msg, sizeof msg);
      if (r)
        return dd_errorf(r == DD_ECORRUPT ? code : r, err, errlen,
                         "%s: %slayer \"%s\" (V1 layers[%zu]): blob %zu %s", name, prefix,
                         l->name ? l->name : "", i, j, msg);
    }
  }
  return 0;
}

/* ---- typed files ----------------------------------------------------------------------------- */

#define WHAT_NET "binary NetParameter (.caffemodel)"
#define WHAT_BLOB "binary BlobProto (.binaryproto)"
#define WHAT_STATE "binary SolverState (.solverstate)"

int dd_caffemodel_parse(Caffe__NetParameter **out, const uint8_t *buf, size_t len,
                        const char *name, char *err, size_t errlen) {
  *out = NULL;
  if (!name) name = "<memory>";
  ProtobufCMessage *m;
  int r = dd_proto_parse_binary(&m, &caffe__net_parameter__descriptor, buf, len, name, WHAT_NET,
                                err, errlen);
  if (r) return r;
  Caffe__NetParameter *net = (Caffe__NetParameter *)m;
  if (net->n_layer == 0 && net->n_layers == 0 && looks_like_text(buf, len)) {
    r = text_hint(buf, len, name, WHAT_NET, err, errlen);
    goto fail;
  }
  r = net_check_blobs(net, name, "", DD_ECORRUPT, err, errlen);
  if (r) goto fail;
  *out = net;
  return 0;
fail:
  protobuf_c_message_free_unpacked(m, NULL);
  return r;
}

int dd_caffemodel_read(Caffe__NetParameter **out, const char *path, char *err, size_t errlen) {
  *out = NULL;
  char *buf;
  size_t len;
  int r = dd_read_file(&buf, &len, path, err, errlen);
  if (r) return r;
  r = dd_caffemodel_parse(out, (const uint8_t *)buf, len, path, err, errlen);
  free(buf);
  return r;
}

int dd_caffemodel_write(const Caffe__NetParameter *net, const char *path, char *err,
                        size_t errlen) {
  int r = net_check_blobs(net, path, "refusing to write: ", DD_EINVAL, err, errlen);
  if (r) return r;
  return dd_proto_write_binary(&net->base, path, err, errlen);
}

int dd_binaryproto_parse(Caffe__BlobProto **out, const uint8_t *buf, size_t len, const char *name,
                         char *err, size_t errlen) {
  *out = NULL;
  if (!name) name = "<memory>";
  ProtobufCMessage *m;
  int r = dd_proto_parse_binary(&m, &caffe__blob_proto__descriptor, buf, len, name, WHAT_BLOB,
                                err, errlen);
  if (r) return r;
  char msg[384];
  r = dd_blob_proto_check((Caffe__BlobProto *)m, msg, sizeof msg);
  if (r) {
    protobuf_c_message_free_unpacked(m, NULL);
    return dd_errorf(r, err, errlen, "%s: the blob %s", name, msg);
  }
  *out = (Caffe__BlobProto *)m;
  return 0;
}

int dd_binaryproto_read(Caffe__BlobProto **out, const char *path, char *err, size_t errlen) {
  *out = NULL;
  char *buf;
  size_t len;
  int r = dd_read_file(&buf, &len, path, err, errlen);
  if (r) return r;
  r = dd_binaryproto_parse(out, (const uint8_t *)buf, len, path, err, errlen);
  free(buf);
  return r;
}

int dd_binaryproto_write(const Caffe__BlobProto *blob, const char *path, char *err,
                         size_t errlen) {
  char msg[384];
  int r = dd_blob_proto_check(blob, msg, sizeof msg);
  if (r)
    return dd_errorf(r == DD_ECORRUPT ? DD_EINVAL : r, err, errlen,
                     "%s: refusing to write: the blob %s", path, msg);
  return dd_proto_write_binary(&blob->base, path, err, errlen);
}

/* Checks the history blobs of a solver state. */
static int state_check(const Caffe__SolverState *st, const char *name, const char *prefix,
                       int code, char *err, size_t errlen) {
  char msg[384];
  for (size_t i = 0; i < st->n_history; i++) {
    int r = dd_blob_proto_check(st->history[i], msg, sizeof msg);
    if (r)
      return dd_errorf(r == DD_ECORRUPT ? code : r, err, errlen, "%s: %shistory blob %zu %s", name,
                       prefix, i, msg);
  }
  return 0;
}

int dd_solverstate_parse(Caffe__SolverState **out, const uint8_t *buf, size_t len,
                         const char *name, char *err, size_t errlen) {
  *out = NULL;
  if (!name) name = "<memory>";
  ProtobufCMessage *m;
  int r = dd_proto_parse_binary(&m, &caffe__solver_state__descriptor, buf, len, name, WHAT_STATE,
                                err, errlen);
  if (r) return r;
  r = state_check((Caffe__SolverState *)m, name, "", DD_ECORRUPT, err, errlen);
  if (r) {
    protobuf_c_message_free_unpacked(m, NULL);
    return r;
  }
  *out = (Caffe__SolverState *)m;
  return 0;
}

int dd_solverstate_read(Caffe__SolverState **out, const char *path, char *err, size_t errlen) {
  *out = NULL;
  char *buf;
  size_t len;
  int r = dd_read_file(&buf, &len, path, err, errlen);
  if (r) return r;
  r = dd_solverstate_parse(out, (const uint8_t *)buf, len, path, err, errlen);
  free(buf);
  return r;
}

int dd_solverstate_write(const Caffe__SolverState *st, const char *path, char *err,
                         size_t errlen) {
  int r = state_check(st, path, "refusing to write: ", DD_EINVAL, err, errlen);
  if (r) return r;
  return dd_proto_write_binary(&st->base, path, err, errlen);
}

/* ============================================================================================ */
/* Text nets and solvers                                                                        */
/* ============================================================================================ */

/* The V1 refusal. `parser_msg` is the text parser's own message when it failed inside a V1 block
 * (NULL when the file parsed). */
static int v1_error(const char *path, const char *where, const char *parser_msg, char *err,
                    size_t errlen) {
  return dd_errorf(
      DD_EUNSUPPORTED, err, errlen,
      "%s: %s is a V1 net (the pre-2015 Caffe format: `layers { ... }` with enum types such as "
      "CONVOLUTION), which distilld does not read; convert it to the current format (`layer { "
      "... }`, type: \"Convolution\") with Caffe's tool: upgrade_net_proto_text %s NEW.prototxt "
      "(weights in V1 .caffemodel files are read as they are)%s%s",
      path, where, path, parser_msg ? "; the text parser stopped at " : "",
      parser_msg ? parser_msg : "");
}

/* True when a text-parser message shows it failed inside a V1 `layers` block. */
static int v1_parse_failure(const char *msg) {
  return strstr(msg, "V1LayerParameter") || strstr(msg, "(at layers[") ||
         strstr(msg, ".layers[");
}

/* Reads and parses a text file as `desc`; on a parse failure, recognises a V1 net and a binary
 * file. `*out` is set only on success. */
static int text_read(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                     const char *path, const char *v1_where, char *err, size_t errlen) {
  *out = NULL;
  char *buf;
  size_t len;
  int r = dd_read_file(&buf, &len, path, err, errlen);
  if (r) return r;
  char pmsg[1024];
  r = dd_text_parse(out, desc, buf, len, path, pmsg, sizeof pmsg);
  if (r == DD_EPARSE && v1_parse_failure(pmsg)) {
    r = v1_error(path, v1_where, pmsg, err, errlen);
  } else if (r == DD_EPARSE && looks_binary((const uint8_t *)buf, len)) {
    r = dd_errorf(DD_EPARSE, err, errlen,
                  "%s: this looks like a binary file (a .caffemodel or .binaryproto?), not a text "
                  "prototxt (the text parser says: %s)",
                  path, pmsg);
  } else if (r) {
    dd_errorf(r, err, errlen, "%s", pmsg);
  }
  free(buf);
  return r;
}

int dd_net_read_text(Caffe__NetParameter **out, const char *path, char *err, size_t errlen) {
  *out = NULL;
  ProtobufCMessage *m;
  int r = text_read(&m, &caffe__net_parameter__descriptor, path, "this", err, errlen);
  if (r) return r;
  Caffe__NetParameter *net = (Caffe__NetParameter *)m;
  if (net->n_layers > 0) {
    protobuf_c_message_free_unpacked(m, NULL);
    return v1_error(path, "this", NULL, err, errlen);
  }
  *out = net;
  return 0;
}

int dd_solver_read_text(Caffe__SolverParameter **out, const char *path, char *err,
                        size_t errlen) {
  *out = NULL;
  ProtobufCMessage *m;
  int r = text_read(&m, &caffe__solver_parameter__descriptor, path, "the net written in it", err,
                    errlen);
  if (r) return r;
  Caffe__SolverParameter *s = (Caffe__SolverParameter *)m;
  const char *v1 = NULL;
  if (s->net_param && s->net_param->n_layers) v1 = "net_param";
  if (s->train_net_param && s->train_net_param->n_layers) v1 = "train_net_param";
  for (size_t i = 0; !v1 && i < s->n_test_net_param; i++)
    if (s->test_net_param[i]->n_layers) v1 = "test_net_param";
  if (v1) {
    protobuf_c_message_free_unpacked(m, NULL);
    return v1_error(path, v1, NULL, err, errlen);
  }
  *out = s;
  return 0;
}

/* ============================================================================================ */
/* Weights of either layer format                                                               */
/* ============================================================================================ */

/* V1 layer types and the type strings Caffe's UpgradeV1LayerType gives them. */
#define DD_V1_TYPE_MAP(XX)                                                           \
  XX(ABSVAL, "AbsVal") XX(ACCURACY, "Accuracy") XX(ARGMAX, "ArgMax") XX(BNLL, "BNLL") \
  XX(CONCAT, "Concat") XX(CONTRASTIVE_LOSS, "ContrastiveLoss")                        \
  XX(CONVOLUTION, "Convolution") XX(DECONVOLUTION, "Deconvolution") XX(DATA, "Data")  \
  XX(DROPOUT, "Dropout") XX(DUMMY_DATA, "DummyData") XX(EUCLIDEAN_LOSS, "EuclideanLoss") \
  XX(ELTWISE, "Eltwise") XX(EXP, "Exp") XX(FLATTEN, "Flatten") XX(HDF5_DATA, "HDF5Data") \
  XX(HDF5_OUTPUT, "HDF5Output") XX(HINGE_LOSS, "HingeLoss") XX(IM2COL, "Im2col")      \
  XX(IMAGE_DATA, "ImageData") XX(INFOGAIN_LOSS, "InfogainLoss")                       \
  XX(INNER_PRODUCT, "InnerProduct") XX(LRN, "LRN") XX(MEMORY_DATA, "MemoryData")      \
  XX(MULTINOMIAL_LOGISTIC_LOSS, "MultinomialLogisticLoss") XX(MVN, "MVN")             \
  XX(POOLING, "Pooling") XX(POWER, "Power") XX(RELU, "ReLU") XX(SIGMOID, "Sigmoid")   \
  XX(SIGMOID_CROSS_ENTROPY_LOSS, "SigmoidCrossEntropyLoss") XX(SILENCE, "Silence")    \
  XX(SOFTMAX, "Softmax") XX(SOFTMAX_LOSS, "SoftmaxWithLoss") XX(SPLIT, "Split")       \
  XX(SLICE, "Slice") XX(TANH, "TanH") XX(WINDOW_DATA, "WindowData")                  \
  XX(THRESHOLD, "Threshold")

static const char *v1_type_name(int t) {
  switch (t) {
#define XX(e, s)                                  \
  case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__##e: \
    return s;
    DD_V1_TYPE_MAP(XX)
#undef XX
    default:
      return ""; /* NONE, or a value this schema does not know */
  }
}

int dd_weight_layers(dd_weight_layer **out, size_t *n, const Caffe__NetParameter *net, char *err,
                     size_t errlen) {
  *out = NULL;
  *n = 0;
  if (net->n_layer && net->n_layers)
    return dd_errorf(DD_ECORRUPT, err, errlen,
                     "net \"%s\" has both current-format `layer` entries (%zu) and V1 `layers` "
                     "entries (%zu); Caffe refuses such a net too",
                     net->name ? net->name : "", net->n_layer, net->n_layers);
  size_t cnt = net->n_layer + net->n_layers;
  if (cnt == 0) return 0;
  dd_weight_layer *w = calloc(cnt, sizeof *w);
  if (!w)
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory listing %zu layers of net \"%s\"", cnt,
                     net->name ? net->name : "");
  for (size_t i = 0; i < net->n_layer; i++) {
    const Caffe__LayerParameter *l = net->layer[i];
    w[i].name = l->name ? l->name : "";
    w[i].type = l->type ? l->type : "";
    w[i].n_blobs = l->n_blobs;
    w[i].blobs = l->blobs;
  }
  for (size_t i = 0; i < net->n_layers; i++) {
    const Caffe__V1LayerParameter *l = net->layers[i];
    w[i].name = l->name ? l->name : "";
    w[i].type = l->has_type ? v1_type_name((int)l->type) : "";
    w[i].n_blobs = l->n_blobs;
    w[i].blobs = l->blobs;
  }
  *out = w;
  *n = cnt;
  return 0;
}

ProtobufCMessage *dd_proto_copy(const ProtobufCMessage *m) {
  size_t len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return NULL;
  protobuf_c_message_pack(m, buf);
  ProtobufCMessage *c = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
  free(buf);
  return c;
}
