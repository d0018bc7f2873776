/* Private to the text format (textformat.h is the API): what its four files share.
 *
 *   textformat_lex.c     the lexer: tokens with line/column, string escapes, error messages
 *   textformat_strbuf.c  the growable buffer the printers write into
 *   textformat_types.c   one table row per protobuf-c field type: its name in messages, its
 *                        element size, how a scalar value of it is read from tokens and printed
 *   textformat.c         the parser over message descriptors (dd_text_parse, dd_text_parse_file)
 *   textformat_print.c   the printer over message descriptors (dd_text_print, _print_file)
 *
 * Calls go one way only (tests/test_layout checks that files call each other without cycles):
 * the parser and the printer call the types, the types call the lexer and the buffer.
 *
 * Nothing outside core/format/ includes this header. */
#ifndef DD_TEXTFORMAT_INTERNAL_H
#define DD_TEXTFORMAT_INTERNAL_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "format/textformat.h"

/* ---- lexer (textformat_lex.c) ---------------------------------------------------------------- */

typedef enum { TF_EOF, TF_IDENT, TF_NUMBER, TF_STRING, TF_SYM } tf_tok_kind;

typedef struct {
  tf_tok_kind kind;
  const char *p; /* start in the text (for TF_STRING: the opening quote) */
  size_t len;    /* bytes in the text */
  int line, col; /* 1-based */
  char sym;      /* for TF_SYM */
  int is_float;  /* TF_NUMBER: has '.', an exponent or an f suffix */
} tf_token;

#define TF_PATH_MAX 512
/* should_stop is asked when this many fields and list values have been read since the last time */
#define TF_STOP_EVERY 4096

/* The state of one dd_text_parse call: the text, the current token, the error buffer and the
 * field path of the message being parsed. */
typedef struct {
  const char *text, *end, *cur;
  int line;
  const char *line_start;
  const char *filename;
  char *err;
  size_t errlen;
  tf_token tok;
  /* The last '#' comment that hid a '}' or '>' (to explain an unclosed block). */
  int hid_line, hid_col, hid_count;
  char path[TF_PATH_MAX]; /* field path of the message being parsed, e.g. layer[2].param[0] */
  size_t path_len;
  int depth;
  dd_text_limits lim;     /* resolved: no zero members */
  size_t n_messages;      /* messages created, the outermost aside */
  size_t n_values;        /* values stored in repeated scalar fields */
  unsigned steps;         /* fields and list values since should_stop was last asked */
} tf_parser;

/* Writes "FILE:LINE:COL: <message>[ (at PATH)]" into the error buffer; returns DD_EPARSE. */
int dd__tf_perr(tf_parser *p, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Reads the next token into p->tok. Returns 0 or DD_EPARSE. */
int dd__tf_lex(tf_parser *p);

/* Describes a token for messages: `"name"`, `number 12`, `string "..."`, `'{'`, `end of file`. */
void dd__tf_tok_describe(const tf_token *t, char *buf, size_t len);

/* Decodes the quoted literal `t` (quotes included), appending to the growable buffer at *buf
 * (`*len` bytes used of `*cap`, NUL-terminated after). Returns 0, DD_ENOMEM or DD_EPARSE. */
int dd__tf_unescape_append(tf_parser *p, const tf_token *t, char **buf, size_t *len, size_t *cap);

static inline int dd__tf_tok_is_sym(const tf_parser *p, char c) {
  return p->tok.kind == TF_SYM && p->tok.sym == c;
}

static inline int dd__tf_tok_is_ident(const tf_parser *p, const char *word) {
  return p->tok.kind == TF_IDENT && strlen(word) == p->tok.len &&
         memcmp(p->tok.p, word, p->tok.len) == 0;
}

/* ---- printer buffer (textformat_strbuf.c) ---------------------------------------------------- */

/* A growable NUL-terminated string; `oom` records a failed allocation (later writes are
 * dropped). */
typedef struct {
  char *p;
  size_t len, cap;
  int oom;
} tf_strbuf;

void dd__tf_sb_put(tf_strbuf *b, const char *s, size_t n);
void dd__tf_sb_printf(tf_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dd__tf_sb_indent(tf_strbuf *b, int n);

/* ---- field types (textformat_types.c) -------------------------------------------------------- */

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
} tf_value;

/* Bytes one value of field `f` takes in a message (and in a repeated field's array). */
size_t dd__tf_elem_size(const ProtobufCFieldDescriptor *f);

/* Reads one scalar value (the current token, after an optional '-') for field `f` into `v`, and
 * advances past it. On failure `v->s` is NULL. Not for message fields. */
int dd__tf_read_scalar(tf_parser *p, const ProtobufCFieldDescriptor *f, tf_value *v);

/* Prints the scalar value of field `f` at `v`. Not for message fields (the printer writes those
 * as blocks). */
/* The text-format name of a field. protobuf-c's message structs have a member named `base`, so
 * a Caffe field of that name is spelled `base_` in proto/caffe.proto (Exp's and Log's base); the
 * text format reads and writes it as Caffe does, without the underscore. Writes into buf. */
const char *dd__tf_field_name(const ProtobufCFieldDescriptor *f, char *buf, size_t len);

void dd__tf_print_value(tf_strbuf *b, const ProtobufCFieldDescriptor *f, const void *v);

#endif
