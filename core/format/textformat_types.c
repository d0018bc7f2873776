/* Field types of the text format (see textformat_internal.h). The table `field_types` has one
 * row per protobuf-c type (ProtobufCType) and is the only place that tells the types apart: the
 * name a message uses for it ("field \"x\" takes a 32-bit integer"), the bytes one value takes in
 * a message, whether an integer is unsigned, how a scalar value is read from tokens and how it is
 * printed (a message value is a block, which the parser in textformat.c and the printer in
 * textformat_print.c walk themselves). They go through the three functions at the end of this
 * file. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "format/textformat_internal.h"

/* Where a value starts: at its '-' when it has one (`neg`), else at its token. */
typedef struct {
  int neg, line, col;
} value_at;

/* Reads the value (the current token, after the '-' that `at` records) into `v` and advances
 * past it. */
typedef int (*read_fn)(tf_parser *p, const ProtobufCFieldDescriptor *f, const value_at *at,
                       tf_value *v);
/* Prints the value at `v`. */
typedef void (*print_fn)(tf_strbuf *b, const ProtobufCFieldDescriptor *f, const void *v);

typedef struct {
  const char *name; /* in messages: "field \"x\" takes <name>" */
  size_t size;      /* bytes of one value in a message */
  int is_unsigned;  /* integers only */
  read_fn read;     /* NULL for messages: the parser reads those */
  print_fn print;   /* NULL for messages: the printer writes those as blocks */
} field_type;

static int read_int(tf_parser *, const ProtobufCFieldDescriptor *, const value_at *, tf_value *);
static int read_real(tf_parser *, const ProtobufCFieldDescriptor *, const value_at *, tf_value *);
static int read_bool(tf_parser *, const ProtobufCFieldDescriptor *, const value_at *, tf_value *);
static int read_enum(tf_parser *, const ProtobufCFieldDescriptor *, const value_at *, tf_value *);
static int read_string(tf_parser *, const ProtobufCFieldDescriptor *, const value_at *,
                       tf_value *);
static void print_i32(tf_strbuf *, const ProtobufCFieldDescriptor *, const void *);
static void print_u32(tf_strbuf *, const ProtobufCFieldDescriptor *, const void *);
static void print_i64(tf_strbuf *, const ProtobufCFieldDescriptor *, const void *);
static void print_u64(tf_strbuf *, const ProtobufCFieldDescriptor *, const void *);
static void print_float(tf_strbuf *, const ProtobufCFieldDescriptor *, const void *);
static void print_double(tf_strbuf *, const ProtobufCFieldDescriptor *, const void *);
static void print_bool(tf_strbuf *, const ProtobufCFieldDescriptor *, const void *);
static void print_enum(tf_strbuf *, const ProtobufCFieldDescriptor *, const void *);
static void print_str(tf_strbuf *, const ProtobufCFieldDescriptor *, const void *);
static void print_bytes(tf_strbuf *, const ProtobufCFieldDescriptor *, const void *);

#define I32 "a 32-bit integer"
#define U32 "an unsigned 32-bit integer"
#define I64 "a 64-bit integer"
#define U64 "an unsigned 64-bit integer"
static const field_type field_types[] = {
    [PROTOBUF_C_TYPE_INT32] = {I32, 4, 0, read_int, print_i32},
    [PROTOBUF_C_TYPE_SINT32] = {I32, 4, 0, read_int, print_i32},
    [PROTOBUF_C_TYPE_SFIXED32] = {I32, 4, 0, read_int, print_i32},
    [PROTOBUF_C_TYPE_INT64] = {I64, 8, 0, read_int, print_i64},
    [PROTOBUF_C_TYPE_SINT64] = {I64, 8, 0, read_int, print_i64},
    [PROTOBUF_C_TYPE_SFIXED64] = {I64, 8, 0, read_int, print_i64},
    [PROTOBUF_C_TYPE_UINT32] = {U32, 4, 1, read_int, print_u32},
    [PROTOBUF_C_TYPE_FIXED32] = {U32, 4, 1, read_int, print_u32},
    [PROTOBUF_C_TYPE_UINT64] = {U64, 8, 1, read_int, print_u64},
    [PROTOBUF_C_TYPE_FIXED64] = {U64, 8, 1, read_int, print_u64},
    [PROTOBUF_C_TYPE_FLOAT] = {"a float", sizeof(float), 0, read_real, print_float},
    [PROTOBUF_C_TYPE_DOUBLE] = {"a double", sizeof(double), 0, read_real, print_double},
    [PROTOBUF_C_TYPE_BOOL] = {"a bool (true or false)", sizeof(protobuf_c_boolean), 0, read_bool,
                              print_bool},
    [PROTOBUF_C_TYPE_ENUM] = {"an enum value", 4, 0, read_enum, print_enum},
    [PROTOBUF_C_TYPE_STRING] = {"a quoted string", sizeof(char *), 0, read_string, print_str},
    [PROTOBUF_C_TYPE_BYTES] = {"a quoted string of bytes", sizeof(ProtobufCBinaryData), 0,
                               read_string, print_bytes},
    [PROTOBUF_C_TYPE_MESSAGE] = {"a message in { }", sizeof(ProtobufCMessage *), 0, NULL, NULL},
};
#undef I32
#undef U32
#undef I64
#undef U64

/* The row of field `f`'s type (descriptors come from protoc-c, so the type is always a row). */
static const field_type *type_of(const ProtobufCFieldDescriptor *f) {
  DD_ASSERT((size_t)f->type < sizeof field_types / sizeof field_types[0] &&
            field_types[f->type].name != NULL);
  return &field_types[f->type];
}

/* ------------------------------------------------------------------------------------------- */
/* Reading                                                                                       */

/* "field "x" takes <type>, found <what>" at line:col. */
static int takes_error(tf_parser *p, const ProtobufCFieldDescriptor *f, int line, int col,
                       const char *what) {
  return dd__tf_perr(p, line, col, "field \"%s\" takes %s, found %s", f->name, type_of(f)->name,
                     what);
}

/* The same, found the token `t`, at `t`. */
static int wrong_token(tf_parser *p, const ProtobufCFieldDescriptor *f, const tf_token *t) {
  char what[64];
  dd__tf_tok_describe(t, what, sizeof what);
  return takes_error(p, f, t->line, t->col, what);
}

/* "[-]NUMBER is out of range for field "x" (<type>)" at the value. */
static int out_of_range(tf_parser *p, const ProtobufCFieldDescriptor *f, const value_at *at,
                        const tf_token *t) {
  return dd__tf_perr(p, at->line, at->col, "%s%.*s is out of range for field \"%s\" (%s)",
                     at->neg ? "-" : "", (int)t->len, t->p, f->name, type_of(f)->name);
}

static int invalid_digits(tf_parser *p, const ProtobufCFieldDescriptor *f, const tf_token *t) {
  return dd__tf_perr(p, t->line, t->col, "field \"%s\": invalid digits in number %.*s", f->name,
                     (int)t->len, t->p);
}

/* Parses an integer token (without its '-'): magnitude into *mag, base per prefix. Returns 0, 1
 * when the magnitude overflows 64 bits, 2 when a digit is not one of its base. */
static int parse_magnitude(const tf_token *t, uint64_t *mag) {
  const char *s = t->p, *e = t->p + t->len;
  int base = 10;
  if (t->len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s += 2;
  } else if (t->len > 1 && s[0] == '0') {
    base = 8;
    s += 1;
  }
  uint64_t v = 0;
  for (; s < e; s++) {
    int d = isdigit((unsigned char)*s) ? *s - '0' : tolower((unsigned char)*s) - 'a' + 10;
    if (d >= base) return 2;
    if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base) return 1;
    v = v * (uint64_t)base + (uint64_t)d;
  }
  *mag = v;
  return 0;
}

/* Integers of every width and signedness, range-checked per type. */
static int read_int(tf_parser *p, const ProtobufCFieldDescriptor *f, const value_at *at,
                    tf_value *v) {
  tf_token t = p->tok;
  const field_type *ty = type_of(f);
  if (t.kind != TF_NUMBER || t.is_float) return wrong_token(p, f, &t);
  uint64_t mag;
  int pr = parse_magnitude(&t, &mag);
  if (pr == 2) return invalid_digits(p, f, &t);
  int is_unsigned = ty->is_unsigned, is64 = ty->size == 8, neg = at->neg;
  uint64_t lim_pos = is_unsigned ? (is64 ? UINT64_MAX : UINT32_MAX)
                                 : (is64 ? (uint64_t)INT64_MAX : (uint64_t)INT32_MAX);
  uint64_t lim_neg = is_unsigned ? 0 : (is64 ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT32_MAX + 1);
  if (pr == 1 || (neg ? mag > lim_neg : mag > lim_pos)) {
    if (is_unsigned && neg)
      return dd__tf_perr(p, at->line, at->col,
                         "field \"%s\" takes %s and cannot be negative: %s%.*s", f->name,
                         ty->name, "-", (int)t.len, t.p);
    return out_of_range(p, f, at, &t);
  }
  if (is64) {
    if (is_unsigned)
      v->u.u64 = mag;
    else
      v->u.i64 = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
  } else {
    if (is_unsigned)
      v->u.u32 = (uint32_t)mag;
    else
      v->u.i32 = (int32_t)(neg ? -(int64_t)mag : (int64_t)mag);
  }
  return dd__tf_lex(p);
}

/* inf, infinity and nan, in any case, into *d; anything else is an error. */
static int real_from_word(tf_parser *p, const ProtobufCFieldDescriptor *f, const tf_token *t,
                          double *d) {
  char w[16] = {0};
  size_t n = t->len < sizeof w - 1 ? t->len : sizeof w - 1;
  for (size_t i = 0; i < n; i++) w[i] = (char)tolower((unsigned char)t->p[i]);
  if (t->len == 3 && !strcmp(w, "inf"))
    *d = INFINITY;
  else if (t->len == 8 && !strcmp(w, "infinity"))
    *d = INFINITY;
  else if (t->len == 3 && !strcmp(w, "nan"))
    *d = NAN;
  else
    return wrong_token(p, f, t);
  return 0;
}

/* A number token into *fv (a float field, `is_f`) or *d (a double field). */
static int real_from_number(tf_parser *p, const ProtobufCFieldDescriptor *f, const value_at *at,
                            const tf_token *t, int is_f, double *d, float *fv) {
  char buf[128];
  if (t->len >= sizeof buf)
    return dd__tf_perr(p, t->line, t->col, "field \"%s\": number too long", f->name);
  if (!t->is_float && t->len > 1 && t->p[0] == '0') {
    /* hex or octal, read as for an integer field */
    uint64_t mag;
    int pr = parse_magnitude(t, &mag);
    if (pr == 2) return invalid_digits(p, f, t);
    if (pr == 1) return out_of_range(p, f, at, t);
    *d = (double)mag;
    *fv = (float)mag;
    return 0;
  }
  memcpy(buf, t->p, t->len);
  size_t n = t->len;
  if (n > 0 && (buf[n - 1] == 'f' || buf[n - 1] == 'F')) n--;
  buf[n] = '\0';
  if (is_f)
    *fv = strtof(buf, NULL);
  else
    *d = strtod(buf, NULL);
  /* a number token never spells inf: inf here means the value overflowed */
  if (is_f ? isinf(*fv) : isinf(*d)) return out_of_range(p, f, at, t);
  return 0;
}

/* Floats and doubles. A float field reads the text with strtof (one rounding, so every float the
 * printer writes reads back bit-exactly, FLT_MAX included); a double field with strtod. */
static int read_real(tf_parser *p, const ProtobufCFieldDescriptor *f, const value_at *at,
                     tf_value *v) {
  tf_token t = p->tok;
  int is_f = f->type == PROTOBUF_C_TYPE_FLOAT, r;
  double d = 0;
  float fv = 0;
  if (t.kind == TF_IDENT) {
    if ((r = real_from_word(p, f, &t, &d))) return r;
    fv = (float)d;
  } else if (t.kind == TF_NUMBER) {
    if ((r = real_from_number(p, f, at, &t, is_f, &d, &fv))) return r;
  } else {
    return wrong_token(p, f, &t);
  }
  /* NaN is stored as the one canonical NaN, whatever its sign, so printing it ("nan") and
   * reading it back gives the same bits. */
  if (is_f)
    v->u.f = isnan(fv) ? NAN : at->neg ? -fv : fv;
  else
    v->u.d = isnan(d) ? (double)NAN : at->neg ? -d : d;
  return dd__tf_lex(p);
}

static int read_bool(tf_parser *p, const ProtobufCFieldDescriptor *f, const value_at *at,
                     tf_value *v) {
  tf_token t = p->tok;
  if (at->neg)
    return dd__tf_perr(p, at->line, at->col, "field \"%s\" takes a bool, found '-'", f->name);
  if (dd__tf_tok_is_ident(p, "true") || dd__tf_tok_is_ident(p, "True") ||
      dd__tf_tok_is_ident(p, "t"))
    v->u.b = 1;
  else if (dd__tf_tok_is_ident(p, "false") || dd__tf_tok_is_ident(p, "False") ||
           dd__tf_tok_is_ident(p, "f"))
    v->u.b = 0;
  else if (t.kind == TF_NUMBER && t.len == 1 && (t.p[0] == '0' || t.p[0] == '1'))
    v->u.b = t.p[0] == '1';
  else
    return wrong_token(p, f, &t); /* "takes a bool (true or false), found ..." */
  return dd__tf_lex(p);
}

/* An enum value by name; an unknown name lists the enum's values. */
static int enum_by_name(tf_parser *p, const ProtobufCFieldDescriptor *f, const tf_token *t,
                        tf_value *v) {
  const ProtobufCEnumDescriptor *ed = f->descriptor;
  char name[128];
  if (t->len >= sizeof name) return dd__tf_perr(p, t->line, t->col, "enum name too long");
  memcpy(name, t->p, t->len);
  name[t->len] = '\0';
  const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(ed, name);
  if (!ev) {
    char list[256] = "";
    size_t used = 0;
    for (unsigned i = 0; i < ed->n_values && used < sizeof list - 40; i++)
      used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "",
                               ed->values[i].name);
    return dd__tf_perr(p, t->line, t->col,
                       "\"%s\" is not a value of enum %s for field \"%s\" (one of: %s)", name,
                       ed->short_name, f->name, list);
  }
  v->u.i32 = ev->value;
  return 0;
}

/* An enum value by number (after an optional '-'); it must be one of the enum's values. */
static int enum_by_number(tf_parser *p, const ProtobufCFieldDescriptor *f, const value_at *at,
                          const tf_token *t, tf_value *v) {
  const ProtobufCEnumDescriptor *ed = f->descriptor;
  uint64_t mag;
  if (parse_magnitude(t, &mag) || mag > (uint64_t)INT32_MAX + at->neg)
    return dd__tf_perr(p, at->line, at->col, "enum number out of range for field \"%s\"",
                       f->name);
  int32_t num = (int32_t)(at->neg ? -(int64_t)mag : (int64_t)mag);
  if (!protobuf_c_enum_descriptor_get_value(ed, num))
    return dd__tf_perr(p, at->line, at->col, "%d is not a value of enum %s for field \"%s\"", num,
                       ed->short_name, f->name);
  v->u.i32 = num;
  return 0;
}

static int read_enum(tf_parser *p, const ProtobufCFieldDescriptor *f, const value_at *at,
                     tf_value *v) {
  tf_token t = p->tok;
  int r;
  if (t.kind == TF_IDENT && !at->neg) {
    if ((r = enum_by_name(p, f, &t, v))) return r;
  } else if (t.kind == TF_NUMBER && !t.is_float) {
    if ((r = enum_by_number(p, f, at, &t, v))) return r;
  } else {
    char what[64];
    dd__tf_tok_describe(&t, what, sizeof what);
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    return dd__tf_perr(p, at->neg ? at->line : t.line, at->neg ? at->col : t.col,
                       "field \"%s\" takes a value of enum %s, found %s", f->name, ed->short_name,
                       at->neg ? "'-'" : what);
  }
  return dd__tf_lex(p);
}

/* Strings and bytes: adjacent literals concatenate ("a" "b"); a string field may not hold a NUL
 * byte. Advances past the last literal itself. */
static int read_string(tf_parser *p, const ProtobufCFieldDescriptor *f, const value_at *at,
                       tf_value *v) {
  tf_token t = p->tok;
  int r;
  if (at->neg) return takes_error(p, f, at->line, at->col, "'-'");
  if (t.kind != TF_STRING) return wrong_token(p, f, &t);
  size_t cap = 0;
  for (;;) {
    if ((r = dd__tf_unescape_append(p, &p->tok, &v->s, &v->slen, &cap))) {
      free(v->s);
      v->s = NULL;
      return r == DD_ENOMEM ? dd__tf_perr(p, at->line, at->col, "out of memory"), DD_ENOMEM : r;
    }
    if ((r = dd__tf_lex(p))) {
      free(v->s);
      v->s = NULL;
      return r;
    }
    if (p->tok.kind != TF_STRING) break;
  }
  if (f->type == PROTOBUF_C_TYPE_STRING && strlen(v->s) != v->slen) {
    free(v->s);
    v->s = NULL;
    return dd__tf_perr(p, at->line, at->col, "field \"%s\": a string may not contain a NUL byte",
                       f->name);
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* Printing                                                                                      */

/* Shortest "%.*g" that reads back to the same value. */
static void print_real(tf_strbuf *b, double d, int is_float) {
  if (isnan(d)) {
    dd__tf_sb_put(b, "nan", 3);
    return;
  }
  if (isinf(d)) {
    dd__tf_sb_put(b, d < 0 ? "-inf" : "inf", d < 0 ? 4 : 3);
    return;
  }
  char tmp[64];
  for (int prec = is_float ? 6 : 15; prec <= (is_float ? 9 : 17); prec++) {
    snprintf(tmp, sizeof tmp, "%.*g", prec, d);
    if (is_float ? strtof(tmp, NULL) == (float)d : strtod(tmp, NULL) == d) break;
  }
  dd__tf_sb_put(b, tmp, strlen(tmp));
}

/* `n` bytes in double quotes, with C escapes for quotes, backslashes, control and non-ASCII
 * bytes. */
static void print_quoted(tf_strbuf *b, const uint8_t *s, size_t n) {
  dd__tf_sb_put(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    uint8_t c = s[i];
    switch (c) {
      case '\n': dd__tf_sb_put(b, "\\n", 2); break;
      case '\r': dd__tf_sb_put(b, "\\r", 2); break;
      case '\t': dd__tf_sb_put(b, "\\t", 2); break;
      case '"': dd__tf_sb_put(b, "\\\"", 2); break;
      case '\'': dd__tf_sb_put(b, "\\'", 2); break;
      case '\\': dd__tf_sb_put(b, "\\\\", 2); break;
      default:
        if (c < 0x20 || c >= 0x7f)
          dd__tf_sb_printf(b, "\\%03o", c);
        else
          dd__tf_sb_put(b, (const char *)&c, 1);
    }
  }
  dd__tf_sb_put(b, "\"", 1);
}

/* The printers of the table's rows: `f` matters to enums only. */
#define UNUSED_ARGS (void)f

static void print_i32(tf_strbuf *b, const ProtobufCFieldDescriptor *f, const void *v) {
  UNUSED_ARGS;
  dd__tf_sb_printf(b, "%" PRId32, *(const int32_t *)v);
}

static void print_u32(tf_strbuf *b, const ProtobufCFieldDescriptor *f, const void *v) {
  UNUSED_ARGS;
  dd__tf_sb_printf(b, "%" PRIu32, *(const uint32_t *)v);
}

static void print_i64(tf_strbuf *b, const ProtobufCFieldDescriptor *f, const void *v) {
  UNUSED_ARGS;
  dd__tf_sb_printf(b, "%" PRId64, *(const int64_t *)v);
}

static void print_u64(tf_strbuf *b, const ProtobufCFieldDescriptor *f, const void *v) {
  UNUSED_ARGS;
  dd__tf_sb_printf(b, "%" PRIu64, *(const uint64_t *)v);
}

static void print_float(tf_strbuf *b, const ProtobufCFieldDescriptor *f, const void *v) {
  UNUSED_ARGS;
  print_real(b, *(const float *)v, 1);
}

static void print_double(tf_strbuf *b, const ProtobufCFieldDescriptor *f, const void *v) {
  UNUSED_ARGS;
  print_real(b, *(const double *)v, 0);
}

static void print_bool(tf_strbuf *b, const ProtobufCFieldDescriptor *f, const void *v) {
  UNUSED_ARGS;
  dd__tf_sb_printf(b, "%s", *(const protobuf_c_boolean *)v ? "true" : "false");
}

/* By name; a number the enum does not know as the number. */
static void print_enum(tf_strbuf *b, const ProtobufCFieldDescriptor *f, const void *v) {
  int32_t e = *(const int32_t *)v;
  const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, e);
  if (ev)
    dd__tf_sb_printf(b, "%s", ev->name);
  else
    dd__tf_sb_printf(b, "%" PRId32, e);
}

static void print_str(tf_strbuf *b, const ProtobufCFieldDescriptor *f, const void *v) {
  UNUSED_ARGS;
  const char *s = *(char *const *)v;
  print_quoted(b, (const uint8_t *)(s ? s : ""), s ? strlen(s) : 0);
}

static void print_bytes(tf_strbuf *b, const ProtobufCFieldDescriptor *f, const void *v) {
  UNUSED_ARGS;
  const ProtobufCBinaryData *bd = v;
  print_quoted(b, bd->data, bd->len);
}

#undef UNUSED_ARGS

/* ------------------------------------------------------------------------------------------- */
/* What the parser and the printer call                                                          */

size_t dd__tf_elem_size(const ProtobufCFieldDescriptor *f) { return type_of(f)->size; }

int dd__tf_read_scalar(tf_parser *p, const ProtobufCFieldDescriptor *f, tf_value *v) {
  memset(v, 0, sizeof *v);
  value_at at = {0, p->tok.line, p->tok.col};
  if (dd__tf_tok_is_sym(p, '-')) {
    at.neg = 1;
    int r = dd__tf_lex(p);
    if (r) return r;
  }
  const field_type *ty = type_of(f);
  DD_ASSERT(ty->read != NULL && "read_scalar on a message field");
  return ty->read(p, f, &at, v);
}

void dd__tf_print_value(tf_strbuf *b, const ProtobufCFieldDescriptor *f, const void *v) {
  const field_type *ty = type_of(f);
  DD_ASSERT(ty->print != NULL && "print_value on a message field");
  ty->print(b, f, v);
}
