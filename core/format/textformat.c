/* Protocol buffer text format over protobuf-c descriptors (see textformat.h).
 *
 * The parser is a small lexer (tokens with line/column) and a recursive-descent reader that walks
 * a ProtobufCMessageDescriptor: each field name is looked up in the descriptor and its value is
 * stored at the offsets protobuf-c's generated structs use. Everything is allocated with malloc,
 * exactly as protobuf_c_message_unpack() would, so protobuf_c_message_free_unpacked() frees a
 * message built here, complete or not: every error path frees the partial message that way.
 * Invariant that makes this safe: a repeated field's count is raised only after the new element is
 * fully initialised, and a sub-message is linked into its parent right after
 * protobuf_c_message_init().
 *
 * The printer walks the same descriptors and writes fields in field-number order. */
#define _POSIX_C_SOURCE 200809L
#include "format/textformat.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "format/fileio.h"

/* ------------------------------------------------------------------------------------------- */
/* Lexer                                                                                         */

typedef enum { T_EOF, T_IDENT, T_NUMBER, T_STRING, T_SYM } tok_kind;

typedef struct {
  tok_kind kind;
  const char *p; /* start in the text (for T_STRING: the opening quote) */
  size_t len;    /* bytes in the text */
  int line, col; /* 1-based */
  char sym;      /* for T_SYM */
  int is_float;  /* T_NUMBER: has '.', an exponent or an f suffix */
} token;

#define TF_MAX_DEPTH 64
#define TF_PATH_MAX 512

typedef struct {
  const char *text, *end, *cur;
  int line;
  const char *line_start;
  const char *filename;
  char *err;
  size_t errlen;
  token tok;
  /* The last '#' comment that hid a '}' or '>' (to explain an unclosed block). */
  int hid_line, hid_col, hid_count;
  char path[TF_PATH_MAX]; /* field path of the message being parsed, e.g. layer[2].param[0] */
  size_t path_len;
  int depth;
} parser;

static int perr(parser *p, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes "FILE:LINE:COL: <message>[ (at PATH)]" into the error buffer; returns DD_EPARSE. */
static int perr(parser *p, int line, int col, const char *fmt, ...) {
  if (!p->err || p->errlen == 0) return DD_EPARSE;
  int n = snprintf(p->err, p->errlen, "%s:%d:%d: ", p->filename, line, col);
  if (n < 0 || (size_t)n >= p->errlen) return DD_EPARSE;
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
  va_end(ap);
  if (m < 0 || (size_t)(n + m) >= p->errlen) return DD_EPARSE;
  if (p->path_len > 0)
    snprintf(p->err + n + m, p->errlen - (size_t)(n + m), " (at %s)", p->path);
  return DD_EPARSE;
}

static int is_ident_start(int c) { return isalpha(c) || c == '_'; }
static int is_ident_char(int c) { return isalnum(c) || c == '_'; }

/* Describes a token for messages: `"name"`, `number 12`, `string "..."`, `'{'`, `end of file`. */
static void tok_describe(const token *t, char *buf, size_t len) {
  int shown = t->len > 40 ? 40 : (int)t->len;
  switch (t->kind) {
    case T_EOF:
      snprintf(buf, len, "end of file");
      break;
    case T_IDENT:
      snprintf(buf, len, "\"%.*s\"", shown, t->p);
      break;
    case T_NUMBER:
      snprintf(buf, len, "number %.*s", shown, t->p);
      break;
    case T_STRING:
      snprintf(buf, len, "string %.*s%s", shown, t->p, t->len > 40 ? "..." : "");
      break;
    case T_SYM:
      snprintf(buf, len, "'%c'", t->sym);
      break;
  }
}

/* Reads the next token into p->tok. Returns 0 or DD_EPARSE. */
static int lex(parser *p) {
  const char *s = p->cur, *e = p->end;
  for (;;) {
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\f' || *s == '\v')) s++;
    if (s < e && *s == '\n') {
      s++;
      p->line++;
      p->line_start = s;
      continue;
    }
    if (s < e && *s == '#') {
      int cline = p->line, ccol = (int)(s - p->line_start) + 1, closers = 0;
      while (s < e && *s != '\n') {
        if (*s == '}' || *s == '>') closers++;
        s++;
      }
      if (closers > 0) {
        p->hid_line = cline;
        p->hid_col = ccol;
        p->hid_count = closers;
      }
      continue;
    }
    break;
  }
  token *t = &p->tok;
  memset(t, 0, sizeof *t);
  t->p = s;
  t->line = p->line;
  t->col = (int)(s - p->line_start) + 1;
  if (s >= e) {
    t->kind = T_EOF;
    p->cur = s;
    return 0;
  }
  unsigned char c = (unsigned char)*s;
  if (is_ident_start(c)) {
    const char *q = s;
    while (q < e && is_ident_char((unsigned char)*q)) q++;
    t->kind = T_IDENT;
    t->len = (size_t)(q - s);
    p->cur = q;
    return 0;
  }
  if (isdigit(c) || (c == '.' && s + 1 < e && isdigit((unsigned char)s[1]))) {
    const char *q = s;
    if (c == '0' && q + 1 < e && (q[1] == 'x' || q[1] == 'X')) {
      q += 2;
      if (q >= e || !isxdigit((unsigned char)*q))
        return perr(p, t->line, t->col, "expected hex digits after \"0x\"");
      while (q < e && isxdigit((unsigned char)*q)) q++;
    } else {
      while (q < e && isdigit((unsigned char)*q)) q++;
      if (q < e && *q == '.') {
        t->is_float = 1;
        q++;
        while (q < e && isdigit((unsigned char)*q)) q++;
      }
      if (q < e && (*q == 'e' || *q == 'E')) {
        const char *r = q + 1;
        if (r < e && (*r == '+' || *r == '-')) r++;
        if (r < e && isdigit((unsigned char)*r)) {
          t->is_float = 1;
          q = r;
          while (q < e && isdigit((unsigned char)*q)) q++;
        }
      }
      if (q < e && (*q == 'f' || *q == 'F') && !(q + 1 < e && is_ident_char((unsigned char)q[1]))) {
        t->is_float = 1;
        q++;
      }
    }
    if (q < e && (is_ident_char((unsigned char)*q) || *q == '.')) {
      const char *r = q;
      while (r < e && (is_ident_char((unsigned char)*r) || *r == '.')) r++;
      return perr(p, t->line, t->col,
                  "the number %.*s is glued to \"%.*s\": a number must be followed by a space, a "
                  "line break or a separator (was a line break lost?)",
                  (int)(q - s), s, (int)(r - q > 40 ? 40 : r - q), q);
    }
    t->kind = T_NUMBER;
    t->len = (size_t)(q - s);
    p->cur = q;
    return 0;
  }
  if (c == '"' || c == '\'') {
    const char *q = s + 1;
    while (q < e && *q != (char)c && *q != '\n') {
      if (*q == '\\' && q + 1 < e && q[1] != '\n') q++;
      q++;
    }
    if (q >= e || *q != (char)c)
      return perr(p, t->line, t->col, "string not closed: a quoted string must end on its line");
    t->kind = T_STRING;
    t->len = (size_t)(q + 1 - s);
    p->cur = q + 1;
    return 0;
  }
  if (strchr("{}<>:[],;-", c) && c != '\0') {
    t->kind = T_SYM;
    t->sym = (char)c;
    t->len = 1;
    p->cur = s + 1;
    return 0;
  }
  if (isprint(c))
    return perr(p, t->line, t->col, "unexpected character '%c'", c);
  return perr(p, t->line, t->col, "unexpected byte 0x%02x", c);
}

static int tok_is_sym(const parser *p, char c) { return p->tok.kind == T_SYM && p->tok.sym == c; }

static int tok_is_ident(const parser *p, const char *word) {
  return p->tok.kind == T_IDENT && strlen(word) == p->tok.len &&
         memcmp(p->tok.p, word, p->tok.len) == 0;
}

/* Decodes the quoted literal `t` (quotes included), appending to the growable buffer at *buf. */
static int unescape_append(parser *p, const token *t, char **buf, size_t *len, size_t *cap) {
  size_t need = *len + t->len + 1;
  if (need > *cap) {
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need) ncap *= 2;
    char *nb = realloc(*buf, ncap);
    if (!nb) return DD_ENOMEM;
    *buf = nb;
    *cap = ncap;
  }
  const char *s = t->p + 1, *e = t->p + t->len - 1;
  char *o = *buf + *len;
  while (s < e) {
    if (*s != '\\') {
      *o++ = *s++;
      continue;
    }
    int col = t->col + (int)(s - t->p); /* of the backslash */
    s++;
    switch (*s) {
      case 'a': *o++ = '\a'; s++; break;
      case 'b': *o++ = '\b'; s++; break;
      case 'f': *o++ = '\f'; s++; break;
      case 'n': *o++ = '\n'; s++; break;
      case 'r': *o++ = '\r'; s++; break;
      case 't': *o++ = '\t'; s++; break;
      case 'v': *o++ = '\v'; s++; break;
      case '\\': *o++ = '\\'; s++; break;
      case '\'': *o++ = '\''; s++; break;
      case '"': *o++ = '"'; s++; break;
      case '?': *o++ = '?'; s++; break;
      case 'x':
      case 'X': {
        s++;
        int v = 0, n = 0;
        while (s < e && n < 2 && isxdigit((unsigned char)*s)) {
          v = v * 16 + (isdigit((unsigned char)*s) ? *s - '0' : (tolower((unsigned char)*s) - 'a' + 10));
          s++;
          n++;
        }
        if (n == 0) return perr(p, t->line, col, "\\x must be followed by hex digits");
        *o++ = (char)v;
        break;
      }
      default:
        if (*s >= '0' && *s <= '7') {
          int v = 0, n = 0;
          while (s < e && n < 3 && *s >= '0' && *s <= '7') {
            v = v * 8 + (*s - '0');
            s++;
            n++;
          }
          if (v > 255) return perr(p, t->line, col, "octal escape \\%o is over 255", v);
          *o++ = (char)v;
        } else {
          return perr(p, t->line, col, "unknown escape sequence \\%c", *s);
        }
    }
  }
  *len = (size_t)(o - *buf);
  (*buf)[*len] = '\0';
  return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* Values                                                                                        */

static const char *type_name(const ProtobufCFieldDescriptor *f) {
  switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: return "a 32-bit integer";
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: return "an unsigned 32-bit integer";
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: return "a 64-bit integer";
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return "an unsigned 64-bit integer";
    case PROTOBUF_C_TYPE_FLOAT: return "a float";
    case PROTOBUF_C_TYPE_DOUBLE: return "a double";
    case PROTOBUF_C_TYPE_BOOL: return "a bool (true or false)";
    case PROTOBUF_C_TYPE_ENUM: return "an enum value";
    case PROTOBUF_C_TYPE_STRING: return "a quoted string";
    case PROTOBUF_C_TYPE_BYTES: return "a quoted string of bytes";
    case PROTOBUF_C_TYPE_MESSAGE: return "a message in { }";
  }
  return "a value";
}

static size_t elem_size(const ProtobufCFieldDescriptor *f) {
  switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM: return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return 8;
    case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
  }
  return 0;
}

/* A decoded value ready to be stored: scalars in `u`, strings/bytes in `s`/`slen` (malloc'd,
 * ownership passes to the message when stored). */
typedef struct {
  union {
    int32_t i32;
    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    float f;
    double d;
    protobuf_c_boolean b;
  } u;
  char *s;
  size_t slen;
} value;

/* Parses an integer token (optionally after '-'): magnitude into *mag, base per prefix.
 * Returns 0, or 1 when the magnitude overflows 64 bits. */
static int parse_magnitude(const token *t, uint64_t *mag) {
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

/* Reads one scalar value (the current token, after an optional '-') for field `f` into `v`, and
 * advances past it. */
static int read_scalar(parser *p, const ProtobufCFieldDescriptor *f, value *v) {
  memset(v, 0, sizeof *v);
  int neg = 0, line = p->tok.line, col = p->tok.col;
  char what[64];
  int r;
  if (tok_is_sym(p, '-')) {
    neg = 1;
    if ((r = lex(p))) return r;
  }
  token t = p->tok;
  switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
      if (t.kind != T_NUMBER || t.is_float) {
        tok_describe(&t, what, sizeof what);
        return perr(p, t.line, t.col, "field \"%s\" takes %s, found %s", f->name, type_name(f),
                    what);
      }
      uint64_t mag;
      int pr = parse_magnitude(&t, &mag);
      if (pr == 2)
        return perr(p, t.line, t.col, "field \"%s\": invalid digits in number %.*s", f->name,
                    (int)t.len, t.p);
      int is_unsigned = f->type == PROTOBUF_C_TYPE_UINT32 || f->type == PROTOBUF_C_TYPE_FIXED32 ||
                        f->type == PROTOBUF_C_TYPE_UINT64 || f->type == PROTOBUF_C_TYPE_FIXED64;
      int is64 = elem_size(f) == 8;
      uint64_t lim_pos = is_unsigned ? (is64 ? UINT64_MAX : UINT32_MAX)
                                     : (is64 ? (uint64_t)INT64_MAX : (uint64_t)INT32_MAX);
      uint64_t lim_neg = is_unsigned ? 0 : (is64 ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT32_MAX + 1);
      if (pr == 1 || (neg ? mag > lim_neg : mag > lim_pos)) {
        if (is_unsigned && neg)
          return perr(p, line, col, "field \"%s\" takes %s and cannot be negative: %s%.*s",
                      f->name, type_name(f), "-", (int)t.len, t.p);
        return perr(p, line, col, "%s%.*s is out of range for field \"%s\" (%s)", neg ? "-" : "",
                    (int)t.len, t.p, f->name, type_name(f));
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
      break;
    }
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
      /* A float field reads the text with strtof (one rounding, so every float the printer
       * writes reads back bit-exactly, FLT_MAX included); a double field with strtod. */
      int is_f = f->type == PROTOBUF_C_TYPE_FLOAT;
      double d = 0;
      float fv = 0;
      if (t.kind == T_IDENT) {
        char w[16] = {0};
        size_t n = t.len < sizeof w - 1 ? t.len : sizeof w - 1;
        for (size_t i = 0; i < n; i++) w[i] = (char)tolower((unsigned char)t.p[i]);
        if (t.len == 3 && !strcmp(w, "inf"))
          d = INFINITY;
        else if (t.len == 8 && !strcmp(w, "infinity"))
          d = INFINITY;
        else if (t.len == 3 && !strcmp(w, "nan"))
          d = NAN;
        else {
          tok_describe(&t, what, sizeof what);
          return perr(p, t.line, t.col, "field \"%s\" takes %s, found %s", f->name, type_name(f),
                      what);
        }
        fv = (float)d;
      } else if (t.kind == T_NUMBER) {
        char buf[128];
        if (t.len >= sizeof buf)
          return perr(p, t.line, t.col, "field \"%s\": number too long", f->name);
        if (!t.is_float && t.len > 1 && t.p[0] == '0') {
          /* hex or octal, read as for an integer field */
          uint64_t mag;
          int pr = parse_magnitude(&t, &mag);
          if (pr == 2)
            return perr(p, t.line, t.col, "field \"%s\": invalid digits in number %.*s", f->name,
                        (int)t.len, t.p);
          if (pr == 1)
            return perr(p, line, col, "%s%.*s is out of range for field \"%s\" (%s)",
                        neg ? "-" : "", (int)t.len, t.p, f->name, type_name(f));
          d = (double)mag;
          fv = (float)mag;
        } else {
          memcpy(buf, t.p, t.len);
          size_t n = t.len;
          if (n > 0 && (buf[n - 1] == 'f' || buf[n - 1] == 'F')) n--;
          buf[n] = '\0';
          if (is_f)
            fv = strtof(buf, NULL);
          else
            d = strtod(buf, NULL);
          /* a number token never spells inf: inf here means the value overflowed */
          if (is_f ? isinf(fv) : isinf(d))
            return perr(p, line, col, "%s%.*s is out of range for field \"%s\" (%s)",
                        neg ? "-" : "", (int)t.len, t.p, f->name, type_name(f));
        }
      } else {
        tok_describe(&t, what, sizeof what);
        return perr(p, t.line, t.col, "field \"%s\" takes %s, found %s", f->name, type_name(f),
                    what);
      }
      /* NaN is stored as the one canonical NaN, whatever its sign, so printing it ("nan") and
       * reading it back gives the same bits. */
      if (is_f)
        v->u.f = isnan(fv) ? NAN : neg ? -fv : fv;
      else
        v->u.d = isnan(d) ? (double)NAN : neg ? -d : d;
      break;
    }
    case PROTOBUF_C_TYPE_BOOL: {
      if (neg) return perr(p, line, col, "field \"%s\" takes a bool, found '-'", f->name);
      if (tok_is_ident(p, "true") || tok_is_ident(p, "True") || tok_is_ident(p, "t"))
        v->u.b = 1;
      else if (tok_is_ident(p, "false") || tok_is_ident(p, "False") || tok_is_ident(p, "f"))
        v->u.b = 0;
      else if (t.kind == T_NUMBER && t.len == 1 && (t.p[0] == '0' || t.p[0] == '1'))
        v->u.b = t.p[0] == '1';
      else {
        tok_describe(&t, what, sizeof what);
        return perr(p, t.line, t.col, "field \"%s\" takes a bool (true or false), found %s",
                    f->name, what);
      }
      break;
    }
    case PROTOBUF_C_TYPE_ENUM: {
      const ProtobufCEnumDescriptor *ed = f->descriptor;
      if (t.kind == T_IDENT && !neg) {
        char name[128];
        if (t.len >= sizeof name) return perr(p, t.line, t.col, "enum name too long");
        memcpy(name, t.p, t.len);
        name[t.len] = '\0';
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(ed, name);
        if (!ev) {
          char list[256] = "";
          size_t used = 0;
          for (unsigned i = 0; i < ed->n_values && used < sizeof list - 40; i++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "",
                                     ed->values[i].name);
          return perr(p, t.line, t.col, "\"%s\" is not a value of enum %s for field \"%s\" (one of: %s)",
                      name, ed->short_name, f->name, list);
        }
        v->u.i32 = ev->value;
      } else if (t.kind == T_NUMBER && !t.is_float) {
        uint64_t mag;
        if (parse_magnitude(&t, &mag) || mag > (uint64_t)INT32_MAX + neg)
          return perr(p, line, col, "enum number out of range for field \"%s\"", f->name);
        int32_t num = (int32_t)(neg ? -(int64_t)mag : (int64_t)mag);
        if (!protobuf_c_enum_descriptor_get_value(ed, num))
          return perr(p, line, col, "%d is not a value of enum %s for field \"%s\"", num,
                      ed->short_name, f->name);
        v->u.i32 = num;
      } else {
        tok_describe(&t, what, sizeof what);
        return perr(p, neg ? line : t.line, neg ? col : t.col,
                    "field \"%s\" takes a value of enum %s, found %s", f->name, ed->short_name,
                    neg ? "'-'" : what);
      }
      break;
    }
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES: {
      if (neg || t.kind != T_STRING) {
        tok_describe(&t, what, sizeof what);
        return perr(p, line, col, "field \"%s\" takes %s, found %s", f->name, type_name(f),
                    neg ? "'-'" : what);
      }
      size_t cap = 0;
      for (;;) { /* adjacent literals concatenate: "a" "b" */
        if ((r = unescape_append(p, &p->tok, &v->s, &v->slen, &cap))) {
          free(v->s);
          v->s = NULL;
          return r == DD_ENOMEM ? perr(p, line, col, "out of memory") , DD_ENOMEM : r;
        }
        if ((r = lex(p))) {
          free(v->s);
          v->s = NULL;
          return r;
        }
        if (p->tok.kind != T_STRING) break;
      }
      if (f->type == PROTOBUF_C_TYPE_STRING && strlen(v->s) != v->slen) {
        free(v->s);
        v->s = NULL;
        return perr(p, line, col, "field \"%s\": a string may not contain a NUL byte", f->name);
      }
      return 0; /* already advanced */
    }
    case PROTOBUF_C_TYPE_MESSAGE:
      DD_ASSERT(0 && "read_scalar on a message field");
  }
  return lex(p);
}

/* Appends one element of `size` bytes at `elem` to the repeated field `f` of `m`. The array grows
 * in powers of two (the count is all protobuf-c stores, so the capacity is the next power of
 * two of the count). */
static int append_repeated(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, const void *elem) {
  size_t *n = (size_t *)((char *)m + f->quantifier_offset);
  void **arr = (void **)((char *)m + f->offset);
  size_t sz = elem_size(f);
  if (*n == 0 || (*n & (*n - 1)) == 0) {
    size_t ncap = *n == 0 ? 1 : *n * 2;
    void *na = realloc(*arr, ncap * sz);
    if (!na) return DD_ENOMEM;
    *arr = na;
  }
  memcpy((char *)*arr + *n * sz, elem, sz);
  (*n)++;
  return 0;
}

/* Stores a decoded scalar (or takes ownership of a string) into field `f` of `m`. */
static int store_value(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, value *v) {
  void *dst = (char *)m + f->offset;
  const void *src = &v->u;
  ProtobufCBinaryData bd;
  if (f->type == PROTOBUF_C_TYPE_STRING) {
    src = &v->s;
  } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
    bd.len = v->slen;
    bd.data = (uint8_t *)v->s;
    src = &bd;
  }
  if (f->label == PROTOBUF_C_LABEL_REPEATED) {
    int r = append_repeated(m, f, src);
    if (r) return r;
    v->s = NULL;
    return 0;
  }
  memcpy(dst, src, elem_size(f));
  v->s = NULL;
  if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset &&
      f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
    *(protobuf_c_boolean *)((char *)m + f->quantifier_offset) = 1;
  return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* Messages                                                                                      */

static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 63 || lb > 63) return 99;
  size_t row[64];
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t prev = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t cur = row[j];
      size_t best = prev + (a[i - 1] != b[j - 1]);
      if (row[j] + 1 < best) best = row[j] + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      prev = cur;
    }
  }
  return row[lb];
}

static int parse_fields(parser *p, ProtobufCMessage *m, char close, const token *open,
                        const char *open_field);

static void path_push(parser *p, const char *name, long index, size_t *saved) {
  *saved = p->path_len;
  int n;
  if (index >= 0)
    n = snprintf(p->path + p->path_len, sizeof p->path - p->path_len, "%s%s[%ld]",
                 p->path_len ? "." : "", name, index);
  else
    n = snprintf(p->path + p->path_len, sizeof p->path - p->path_len, "%s%s",
                 p->path_len ? "." : "", name);
  if (n > 0) p->path_len += (size_t)n;
  if (p->path_len >= sizeof p->path) p->path_len = sizeof p->path - 1;
}

static void path_pop(parser *p, size_t saved) {
  p->path_len = saved;
  p->path[saved] = '\0';
}

/* Current count of a repeated field (for path indexes). */
static size_t repeated_count(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  return *(const size_t *)((const char *)m + f->quantifier_offset);
}

/* Parses one sub-message value of field `f` (current token is '{' or '<'). */
static int parse_message_value(parser *p, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  if (!tok_is_sym(p, '{') && !tok_is_sym(p, '<')) {
    char what[64];
    tok_describe(&p->tok, what, sizeof what);
    return perr(p, p->tok.line, p->tok.col, "field \"%s\" takes a message: expected '{', found %s",
                f->name, what);
  }
  if (p->depth >= TF_MAX_DEPTH)
    return perr(p, p->tok.line, p->tok.col, "messages nested more than %d deep", TF_MAX_DEPTH);
  token open = p->tok;
  char close = open.sym == '{' ? '}' : '>';
  const ProtobufCMessageDescriptor *sd = f->descriptor;
  ProtobufCMessage *sub = malloc(sd->sizeof_message);
  if (!sub) return perr(p, open.line, open.col, "out of memory"), DD_ENOMEM;
  protobuf_c_message_init(sd, sub);
  size_t saved;
  if (f->label == PROTOBUF_C_LABEL_REPEATED) {
    long idx = (long)repeated_count(m, f);
    if (append_repeated(m, f, &sub)) {
      free(sub);
      return perr(p, open.line, open.col, "out of memory"), DD_ENOMEM;
    }
    path_push(p, f->name, idx, &saved);
  } else {
    *(ProtobufCMessage **)((char *)m + f->offset) = sub;
    path_push(p, f->name, -1, &saved);
  }
  int r = lex(p);
  if (r == 0) {
    p->depth++;
    r = parse_fields(p, sub, close, &open, f->name);
    p->depth--;
  }
  if (r == 0) path_pop(p, saved);
  return r;
}

/* Parses the value(s) after a field name: `: v`, `: [v, ...]`, `{...}`, `[{...}, ...]`. */
static int parse_field_value(parser *p, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                             const token *name_tok) {
  int r, is_msg = f->type == PROTOBUF_C_TYPE_MESSAGE, had_colon = 0;
  if (tok_is_sym(p, ':')) {
    had_colon = 1;
    if ((r = lex(p))) return r;
  } else if (!is_msg && !tok_is_sym(p, '[')) {
    char what[64];
    tok_describe(&p->tok, what, sizeof what);
    return perr(p, p->tok.line, p->tok.col, "expected ':' after field name \"%s\", found %s",
                f->name, what);
  }
  if (!had_colon && !is_msg) {
    /* protobuf allows "field [1, 2]" only for messages; ask for the ':' */
    return perr(p, p->tok.line, p->tok.col, "expected ':' after field name \"%s\"", f->name);
  }
  if (tok_is_sym(p, '[')) {
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
      return perr(p, p->tok.line, p->tok.col,
                  "field \"%s\" is not repeated, so it cannot take a [list]", f->name);
    token open = p->tok;
    if ((r = lex(p))) return r;
    if (tok_is_sym(p, ']')) return lex(p);
    for (;;) {
      if (is_msg) {
        if ((r = parse_message_value(p, m, f))) return r;
      } else {
        value v;
        if ((r = read_scalar(p, f, &v))) return r;
        if ((r = store_value(m, f, &v))) {
          free(v.s);
          return perr(p, p->tok.line, p->tok.col, "out of memory"), r;
        }
      }
      if (tok_is_sym(p, ',')) {
        if ((r = lex(p))) return r;
        continue;
      }
      if (tok_is_sym(p, ']')) return lex(p);
      char what[64];
      tok_describe(&p->tok, what, sizeof what);
      if (p->tok.kind == T_EOF)
        return perr(p, open.line, open.col, "the list '[' for field \"%s\" is never closed with ']'",
                    f->name);
      return perr(p, p->tok.line, p->tok.col,
                  "expected ',' or ']' in the list for field \"%s\", found %s", f->name, what);
    }
  }
  (void)name_tok;
  if (is_msg) return parse_message_value(p, m, f);
  value v;
  if ((r = read_scalar(p, f, &v))) return r;
  if ((r = store_value(m, f, &v))) {
    free(v.s);
    return perr(p, p->tok.line, p->tok.col, "out of memory"), r;
  }
  return 0;
}

/* Parses fields into `m` until `close` ('}' or '>'), or until end of file when close is 0.
 * `open`/`open_field` locate the block for the unclosed-block message. */
static int parse_fields(parser *p, ProtobufCMessage *m, char close, const token *open,
                        const char *open_field) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  unsigned char seen_small[128];
  unsigned char *seen = seen_small;
  if (d->n_fields > sizeof seen_small) {
    seen = calloc(d->n_fields, 1);
    if (!seen) return perr(p, p->tok.line, p->tok.col, "out of memory"), DD_ENOMEM;
  } else {
    memset(seen, 0, d->n_fields);
  }
  int r = 0;
  for (;;) {
    if (p->tok.kind == T_EOF) {
      if (!close) break;
      /* The block opened at `open` never closed. */
      char note[256] = "";
      if (p->hid_count > 0 &&
          (p->hid_line > open->line || (p->hid_line == open->line && p->hid_col > open->col)))
        snprintf(note, sizeof note,
                 "; note: the '#' comment at line %d column %d runs to the end of its line and "
                 "hides %d '%c' (was this text pasted on one line?)",
                 p->hid_line, p->hid_col, p->hid_count, close);
      /* Report at the block, with the path of the block itself. A file that ends with a line
       * break ends on the line before the end-of-file token. */
      int last_line = p->tok.line - (p->tok.col == 1 && p->tok.line > 1);
      r = perr(p, open->line, open->col,
               "'%c' opened here for field \"%s\" is never closed: the file ends at line %d%s",
               open->sym, open_field, last_line, note);
      goto out;
    }
    if (p->tok.kind == T_SYM && (p->tok.sym == '}' || p->tok.sym == '>')) {
      if (p->tok.sym != close) {
        r = close ? perr(p, p->tok.line, p->tok.col, "expected '%c' to close \"%s\" (opened at %d:%d), found '%c'",
                         close, open_field, open->line, open->col, p->tok.sym)
                  : perr(p, p->tok.line, p->tok.col, "unexpected '%c': no block is open here",
                         p->tok.sym);
        goto out;
      }
      break;
    }
    if (p->tok.kind != T_IDENT) {
      char what[64];
      tok_describe(&p->tok, what, sizeof what);
      r = perr(p, p->tok.line, p->tok.col, "expected a field name of %s, found %s", d->short_name,
               what);
      goto out;
    }
    token name_tok = p->tok;
    char name[128];
    if (name_tok.len >= sizeof name) {
      r = perr(p, name_tok.line, name_tok.col, "field name too long");
      goto out;
    }
    memcpy(name, name_tok.p, name_tok.len);
    name[name_tok.len] = '\0';
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, name);
    if (!f) {
      const char *best = NULL;
      size_t bestd = 3;
      for (unsigned i = 0; i < d->n_fields; i++) {
        size_t ed = edit_distance(name, d->fields[i].name);
        if (ed < bestd) {
          bestd = ed;
          best = d->fields[i].name;
        }
      }
      if (best)
        r = perr(p, name_tok.line, name_tok.col, "unknown field \"%s\" in %s (did you mean \"%s\"?)",
                 name, d->short_name, best);
      else
        r = perr(p, name_tok.line, name_tok.col, "unknown field \"%s\" in %s", name, d->short_name);
      goto out;
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
      r = perr(p, name_tok.line, name_tok.col, "field \"%s\": oneof fields are not supported", name);
      goto out;
    }
    unsigned fi = (unsigned)(f - d->fields);
    if (seen[fi] && f->label != PROTOBUF_C_LABEL_REPEATED) {
      r = perr(p, name_tok.line, name_tok.col,
               "field \"%s\" of %s is given more than once, but it is not repeated", name,
               d->short_name);
      goto out;
    }
    seen[fi] = 1;
    if ((r = lex(p))) goto out;
    if ((r = parse_field_value(p, m, f, &name_tok))) goto out;
    if (tok_is_sym(p, ',') || tok_is_sym(p, ';'))
      if ((r = lex(p))) goto out;
  }
  /* Required fields. */
  for (unsigned i = 0; i < d->n_fields; i++) {
    if (d->fields[i].label == PROTOBUF_C_LABEL_REQUIRED && !seen[i]) {
      r = perr(p, p->tok.line, p->tok.col, "required field \"%s\" of %s is missing",
               d->fields[i].name, d->short_name);
      goto out;
    }
  }
  if (close) r = lex(p); /* past the closing symbol */
out:
  if (seen != seen_small) free(seen);
  return r;
}

int dd_text_parse(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc, const char *text,
                  size_t len, const char *filename, char *err, size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = '\0';
  parser p;
  memset(&p, 0, sizeof p);
  p.text = p.cur = p.line_start = text;
  p.end = text + len;
  p.line = 1;
  p.filename = filename ? filename : "<text>";
  p.err = err;
  p.errlen = errlen;
  ProtobufCMessage *m = malloc(desc->sizeof_message);
  if (!m) return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory", p.filename);
  protobuf_c_message_init(desc, m);
  int r = lex(&p);
  if (r == 0) r = parse_fields(&p, m, 0, NULL, NULL);
  if (r) {
    protobuf_c_message_free_unpacked(m, NULL);
    return r;
  }
  *out = m;
  return 0;
}

int dd_text_parse_file(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                       const char *path, char *err, size_t errlen) {
  char *buf;
  size_t len;
  *out = NULL;
  int r = dd_read_file(&buf, &len, path, err, errlen);
  if (r) return r;
  r = dd_text_parse(out, desc, buf, len, path, err, errlen);
  free(buf);
  return r;
}

/* ------------------------------------------------------------------------------------------- */
/* Printer                                                                                       */

typedef struct {
  char *p;
  size_t len, cap;
  int oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + n + 1) ncap *= 2;
    char *np = realloc(b->p, ncap);
    if (!np) {
      b->oom = 1;
      return;
    }
    b->p = np;
    b->cap = ncap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...) {
  char tmp[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  DD_ASSERT((size_t)n < sizeof tmp);
  sb_put(b, tmp, (size_t)n);
}

static void sb_indent(strbuf *b, int n) {
  static const char sp[] = "                                                                ";
  while (n > 0) {
    int k = n > 64 ? 64 : n;
    sb_put(b, sp, (size_t)k);
    n -= k;
  }
}

/* Shortest "%.*g" that reads back to the same value. */
static void print_real(strbuf *b, double d, int is_float) {
  if (isnan(d)) {
    sb_put(b, "nan", 3);
    return;
  }
  if (isinf(d)) {
    sb_put(b, d < 0 ? "-inf" : "inf", d < 0 ? 4 : 3);
    return;
  }
  char tmp[64];
  for (int prec = is_float ? 6 : 15; prec <= (is_float ? 9 : 17); prec++) {
    snprintf(tmp, sizeof tmp, "%.*g", prec, d);
    if (is_float ? strtof(tmp, NULL) == (float)d : strtod(tmp, NULL) == d) break;
  }
  sb_put(b, tmp, strlen(tmp));
}

static void print_string(strbuf *b, const uint8_t *s, size_t n) {
  sb_put(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    uint8_t c = s[i];
    switch (c) {
      case '\n': sb_put(b, "\\n", 2); break;
      case '\r': sb_put(b, "\\r", 2); break;
      case '\t': sb_put(b, "\\t", 2); break;
      case '"': sb_put(b, "\\\"", 2); break;
      case '\'': sb_put(b, "\\'", 2); break;
      case '\\': sb_put(b, "\\\\", 2); break;
      default:
        if (c < 0x20 || c >= 0x7f)
          sb_printf(b, "\\%03o", c);
        else
          sb_put(b, (const char *)&c, 1);
    }
  }
  sb_put(b, "\"", 1);
}

static void print_message(strbuf *b, const ProtobufCMessage *m, int indent);

static void print_value(strbuf *b, const ProtobufCFieldDescriptor *f, const void *v, int indent) {
  switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: sb_printf(b, "%" PRId32, *(const int32_t *)v); break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: sb_printf(b, "%" PRIu32, *(const uint32_t *)v); break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: sb_printf(b, "%" PRId64, *(const int64_t *)v); break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: sb_printf(b, "%" PRIu64, *(const uint64_t *)v); break;
    case PROTOBUF_C_TYPE_FLOAT: print_real(b, *(const float *)v, 1); break;
    case PROTOBUF_C_TYPE_DOUBLE: print_real(b, *(const double *)v, 0); break;
    case PROTOBUF_C_TYPE_BOOL: sb_printf(b, "%s", *(const protobuf_c_boolean *)v ? "true" : "false"); break;
    case PROTOBUF_C_TYPE_ENUM: {
      int32_t e = *(const int32_t *)v;
      const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, e);
      if (ev)
        sb_printf(b, "%s", ev->name);
      else
        sb_printf(b, "%" PRId32, e);
      break;
    }
    case PROTOBUF_C_TYPE_STRING: {
      const char *s = *(char *const *)v;
      print_string(b, (const uint8_t *)(s ? s : ""), s ? strlen(s) : 0);
      break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
      const ProtobufCBinaryData *bd = v;
      print_string(b, bd->data, bd->len);
      break;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
      sb_put(b, "{\n", 2);
      print_message(b, *(ProtobufCMessage *const *)v, indent + 2);
      sb_indent(b, indent);
      sb_put(b, "}", 1);
      break;
  }
}

/* Whether an optional/required field is present (repeated fields are handled by count). */
static int field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  const char *base = (const char *)m;
  if (f->label == PROTOBUF_C_LABEL_REQUIRED) return 1;
  if (f->type == PROTOBUF_C_TYPE_MESSAGE) return *(void *const *)(base + f->offset) != NULL;
  if (f->type == PROTOBUF_C_TYPE_STRING) {
    const char *s = *(char *const *)(base + f->offset);
    return s != NULL && s != (const char *)f->default_value;
  }
  if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset)
    return *(const protobuf_c_boolean *)(base + f->quantifier_offset) != 0;
  /* proto3-style (no presence): print when not zero */
  const unsigned char *v = (const unsigned char *)(base + f->offset);
  for (size_t i = 0; i < elem_size(f); i++)
    if (v[i]) return 1;
  return 0;
}

static void print_message(strbuf *b, const ProtobufCMessage *m, int indent) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const char *base = (const char *)m;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)(base + f->quantifier_offset);
      const char *arr = *(char *const *)(base + f->offset);
      for (size_t k = 0; k < n; k++) {
        sb_indent(b, indent);
        sb_printf(b, "%s%s", f->name, f->type == PROTOBUF_C_TYPE_MESSAGE ? " " : ": ");
        print_value(b, f, arr + k * elem_size(f), indent);
        sb_put(b, "\n", 1);
      }
    } else if (field_present(m, f)) {
      sb_indent(b, indent);
      sb_printf(b, "%s%s", f->name, f->type == PROTOBUF_C_TYPE_MESSAGE ? " " : ": ");
      print_value(b, f, base + f->offset, indent);
      sb_put(b, "\n", 1);
    }
  }
}

char *dd_text_print(const ProtobufCMessage *msg) {
  strbuf b = {0};
  sb_put(&b, "", 0);
  print_message(&b, msg, 0);
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  return b.p;
}

int dd_text_print_file(FILE *f, const ProtobufCMessage *msg, int indent) {
  strbuf b = {0};
  sb_put(&b, "", 0);
  print_message(&b, msg, indent);
  if (b.oom) {
    free(b.p);
    return DD_ENOMEM;
  }
  int r = fwrite(b.p, 1, b.len, f) == b.len ? 0 : DD_EIO;
  free(b.p);
  return r;
}
