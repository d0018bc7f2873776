/* The parser of the protocol buffer text format over protobuf-c descriptors (see textformat.h).
 *
 * A recursive-descent reader over the lexer's tokens (textformat_lex.c) that walks a
 * ProtobufCMessageDescriptor: each field name is looked up in the descriptor and its value, read
 * by its type's row in textformat_types.c, is stored at the offsets protobuf-c's generated structs
 * use. Everything is allocated with malloc, exactly as protobuf_c_message_unpack() would, so
 * protobuf_c_message_free_unpacked() frees a message built here, complete or not: every error
 * path frees the partial message that way. Invariant that makes this safe: a repeated field's
 * count is raised only after the new element is fully initialised, and a sub-message is linked
 * into its parent right after protobuf_c_message_init().
 *
 * Linear in its input: one pass over the tokens, a field found by the descriptor's binary search,
 * repeated arrays grown in powers of two. Bounded by dd_text_limits (textformat.h): the input's
 * size is checked before anything is read, the messages and repeated values are counted as they
 * are made, the depth as blocks open, and a caller's should_stop is asked every TF_STOP_EVERY
 * fields and list values.
 *
 * The printer (textformat_print.c) walks the same descriptors. */
#define _POSIX_C_SOURCE 200809L
#include "format/textformat.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/dd_error.h"
#include "format/fileio.h"
#include "format/textformat_internal.h"

/* ------------------------------------------------------------------------------------------- */
/* Limits                                                                                        */

#define BUILTIN_LIMITS                                                                        \
  {                                                                                           \
    .max_bytes = DD_TEXT_MAX_BYTES, .max_depth = DD_TEXT_MAX_DEPTH,                           \
    .max_messages = DD_TEXT_MAX_MESSAGES, .max_values = DD_TEXT_MAX_VALUES                    \
  }
static const dd_text_limits builtin_limits = BUILTIN_LIMITS;
static dd_text_limits default_limits = BUILTIN_LIMITS;

/* `l` with its zero members taken from `base` and the depth capped. */
static dd_text_limits resolve_limits(const dd_text_limits *l, const dd_text_limits *base) {
  dd_text_limits r = *l;
  if (!r.max_bytes) r.max_bytes = base->max_bytes;
  if (r.max_depth <= 0) r.max_depth = base->max_depth;
  if (r.max_depth > DD_TEXT_MAX_DEPTH_CAP) r.max_depth = DD_TEXT_MAX_DEPTH_CAP;
  if (!r.max_messages) r.max_messages = base->max_messages;
  if (!r.max_values) r.max_values = base->max_values;
  return r;
}

dd_text_limits dd_text_default_limits(void) { return default_limits; }

void dd_text_set_default_limits(const dd_text_limits *limits) {
  default_limits = limits ? resolve_limits(limits, &builtin_limits) : builtin_limits;
}

/* The error for an input of `len` bytes over max_bytes, at FILE:1:1. */
static int too_big(tf_parser *p, size_t len) {
  return dd__tf_perr(p, 1, 1,
                     "the input is %zu bytes, more than the text format's limit of %zu bytes "
                     "(max_bytes)",
                     len, p->lim.max_bytes);
}

/* Counts one more field or list value; asks the caller's should_stop every TF_STOP_EVERY. Returns
 * 0 or DD_ESTOPPED (with its message at the current token). */
static int step(tf_parser *p) {
  if (++p->steps < TF_STOP_EVERY || !p->lim.should_stop) return 0;
  p->steps = 0;
  if (!p->lim.should_stop(p->lim.stop_ctx)) return 0;
  dd__tf_perr(p, p->tok.line, p->tok.col, "stopped while parsing");
  return DD_ESTOPPED;
}

/* ------------------------------------------------------------------------------------------- */
/* Storing values                                                                                */

/* Appends one element of `size` bytes at `elem` to the repeated field `f` of `m`. The array grows
 * in powers of two (the count is all protobuf-c stores, so the capacity is the next power of
 * two of the count). */
static int append_repeated(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                           const void *elem) {
  size_t *n = (size_t *)((char *)m + f->quantifier_offset);
  void **arr = (void **)((char *)m + f->offset);
  size_t sz = dd__tf_elem_size(f);
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
static int store_value(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, tf_value *v) {
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
  memcpy(dst, src, dd__tf_elem_size(f));
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

static int parse_fields(tf_parser *p, ProtobufCMessage *m, char close, const tf_token *open,
                        const char *open_field);

static void path_push(tf_parser *p, const char *name, long index, size_t *saved) {
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

static void path_pop(tf_parser *p, size_t saved) {
  p->path_len = saved;
  p->path[saved] = '\0';
}

/* Current count of a repeated field (for path indexes). */
static size_t repeated_count(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  return *(const size_t *)((const char *)m + f->quantifier_offset);
}

/* Parses one sub-message value of field `f` (the current token is '{' or '<'). */
static int parse_message_value(tf_parser *p, ProtobufCMessage *m,
                               const ProtobufCFieldDescriptor *f) {
  if (!dd__tf_tok_is_sym(p, '{') && !dd__tf_tok_is_sym(p, '<')) {
    char what[64];
    dd__tf_tok_describe(&p->tok, what, sizeof what);
    return dd__tf_perr(p, p->tok.line, p->tok.col,
                       "field \"%s\" takes a message: expected '{', found %s", f->name, what);
  }
  if (p->depth >= p->lim.max_depth)
    return dd__tf_perr(p, p->tok.line, p->tok.col,
                       "messages nested more than %d deep (the text format's limit max_depth)",
                       p->lim.max_depth);
  if (p->n_messages >= p->lim.max_messages)
    return dd__tf_perr(p, p->tok.line, p->tok.col,
                       "more than %zu messages (the text format's limit max_messages)",
                       p->lim.max_messages);
  p->n_messages++;
  tf_token open = p->tok;
  char close = open.sym == '{' ? '}' : '>';
  const ProtobufCMessageDescriptor *sd = f->descriptor;
  ProtobufCMessage *sub = malloc(sd->sizeof_message);
  if (!sub) return dd__tf_perr(p, open.line, open.col, "out of memory"), DD_ENOMEM;
  protobuf_c_message_init(sd, sub);
  size_t saved;
  if (f->label == PROTOBUF_C_LABEL_REPEATED) {
    long idx = (long)repeated_count(m, f);
    if (append_repeated(m, f, &sub)) {
      free(sub);
      return dd__tf_perr(p, open.line, open.col, "out of memory"), DD_ENOMEM;
    }
    path_push(p, f->name, idx, &saved);
  } else {
    *(ProtobufCMessage **)((char *)m + f->offset) = sub;
    path_push(p, f->name, -1, &saved);
  }
  int r = dd__tf_lex(p);
  if (r == 0) {
    p->depth++;
    r = parse_fields(p, sub, close, &open, f->name);
    p->depth--;
  }
  if (r == 0) path_pop(p, saved);
  return r;
}

/* Parses one value of field `f`, a sub-message or a scalar, and stores it in `m`. */
static int parse_one_value(tf_parser *p, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  if (f->type == PROTOBUF_C_TYPE_MESSAGE) return parse_message_value(p, m, f);
  if (f->label == PROTOBUF_C_LABEL_REPEATED && p->n_values++ >= p->lim.max_values)
    return dd__tf_perr(p, p->tok.line, p->tok.col,
                       "more than %zu values in repeated fields (the text format's limit "
                       "max_values)",
                       p->lim.max_values);
  tf_value v;
  int r = dd__tf_read_scalar(p, f, &v);
  if (r) return r;
  if ((r = store_value(m, f, &v))) {
    free(v.s);
    return dd__tf_perr(p, p->tok.line, p->tok.col, "out of memory"), r;
  }
  return 0;
}

/* Parses a `[v, ...]` list of values of the repeated field `f` (the current token is '['). */
static int parse_list(tf_parser *p, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  int r;
  if (f->label != PROTOBUF_C_LABEL_REPEATED)
    return dd__tf_perr(p, p->tok.line, p->tok.col,
                       "field \"%s\" is not repeated, so it cannot take a [list]", f->name);
  tf_token open = p->tok;
  if ((r = dd__tf_lex(p))) return r;
  if (dd__tf_tok_is_sym(p, ']')) return dd__tf_lex(p);
  for (;;) {
    if ((r = step(p))) return r;
    if ((r = parse_one_value(p, m, f))) return r;
    if (dd__tf_tok_is_sym(p, ',')) {
      if ((r = dd__tf_lex(p))) return r;
      continue;
    }
    if (dd__tf_tok_is_sym(p, ']')) return dd__tf_lex(p);
    char what[64];
    dd__tf_tok_describe(&p->tok, what, sizeof what);
    if (p->tok.kind == TF_EOF)
      return dd__tf_perr(p, open.line, open.col,
                         "the list '[' for field \"%s\" is never closed with ']'", f->name);
    return dd__tf_perr(p, p->tok.line, p->tok.col,
                       "expected ',' or ']' in the list for field \"%s\", found %s", f->name,
                       what);
  }
}

/* Parses the value(s) after a field name: `: v`, `: [v, ...]`, `{...}`, `[{...}, ...]`. */
static int parse_field_value(tf_parser *p, ProtobufCMessage *m,
                             const ProtobufCFieldDescriptor *f) {
  int r, is_msg = f->type == PROTOBUF_C_TYPE_MESSAGE, had_colon = 0;
  if (dd__tf_tok_is_sym(p, ':')) {
    had_colon = 1;
    if ((r = dd__tf_lex(p))) return r;
  } else if (!is_msg && !dd__tf_tok_is_sym(p, '[')) {
    char what[64];
    dd__tf_tok_describe(&p->tok, what, sizeof what);
    return dd__tf_perr(p, p->tok.line, p->tok.col,
                       "expected ':' after field name \"%s\", found %s", f->name, what);
  }
  if (!had_colon && !is_msg) {
    /* protobuf allows "field [1, 2]" only for messages; ask for the ':' */
    return dd__tf_perr(p, p->tok.line, p->tok.col, "expected ':' after field name \"%s\"",
                       f->name);
  }
  if (dd__tf_tok_is_sym(p, '[')) return parse_list(p, m, f);
  return parse_one_value(p, m, f);
}

/* The error for the block opened at `open` (for field `open_field`, closed by `close`) when the
 * text ends inside it: reported at the block, with the block's own path, and with a note when a
 * '#' comment after the opening hid a closing symbol. */
static int unclosed_block(tf_parser *p, const tf_token *open, const char *open_field, char close) {
  char note[256] = "";
  if (p->hid_count > 0 &&
      (p->hid_line > open->line || (p->hid_line == open->line && p->hid_col > open->col)))
    snprintf(note, sizeof note,
             "; note: the '#' comment at line %d column %d runs to the end of its line and "
             "hides %d '%c' (was this text pasted on one line?)",
             p->hid_line, p->hid_col, p->hid_count, close);
  /* A file that ends with a line break ends on the line before the end-of-file token. */
  int last_line = p->tok.line - (p->tok.col == 1 && p->tok.line > 1);
  return dd__tf_perr(p, open->line, open->col,
                     "'%c' opened here for field \"%s\" is never closed: the file ends at line "
                     "%d%s",
                     open->sym, open_field, last_line, note);
}

/* The error for `name` (the token `at`), which is no field of `d`: suggests the nearest field
 * name when one is within an edit distance of 2. */
static int unknown_field(tf_parser *p, const ProtobufCMessageDescriptor *d, const char *name,
                         const tf_token *at) {
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
    return dd__tf_perr(p, at->line, at->col, "unknown field \"%s\" in %s (did you mean \"%s\"?)",
                       name, d->short_name, best);
  return dd__tf_perr(p, at->line, at->col, "unknown field \"%s\" in %s", name, d->short_name);
}

/* Looks up the field of `d` that the current token names, into *out. Returns 0, or DD_EPARSE
 * when the token is no field name, names no field of `d`, or names a oneof member. */
static int lookup_field(tf_parser *p, const ProtobufCMessageDescriptor *d,
                        const ProtobufCFieldDescriptor **out) {
  const tf_token *t = &p->tok;
  if (t->kind != TF_IDENT) {
    char what[64];
    dd__tf_tok_describe(t, what, sizeof what);
    return dd__tf_perr(p, t->line, t->col, "expected a field name of %s, found %s",
                       d->short_name, what);
  }
  char name[128];
  if (t->len >= sizeof name) return dd__tf_perr(p, t->line, t->col, "field name too long");
  memcpy(name, t->p, t->len);
  name[t->len] = '\0';
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, name);
  if (!f && t->len + 1 < sizeof name) { /* `base` is spelled `base_` (dd__tf_field_name) */
    char alt[sizeof name + 1];
    snprintf(alt, sizeof alt, "%s_", name);
    f = protobuf_c_message_descriptor_get_field_by_name(d, alt);
  }
  if (!f) return unknown_field(p, d, name, t);
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
    return dd__tf_perr(p, t->line, t->col, "field \"%s\": oneof fields are not supported", name);
  *out = f;
  return 0;
}

/* Parses fields into `m` until `close` ('}' or '>'), or until end of file when close is 0.
 * `open`/`open_field` locate the block for the unclosed-block message. */
static int parse_fields(tf_parser *p, ProtobufCMessage *m, char close, const tf_token *open,
                        const char *open_field) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  unsigned char seen_small[128];
  unsigned char *seen = seen_small;
  if (d->n_fields > sizeof seen_small) {
    seen = calloc(d->n_fields, 1);
    if (!seen) return dd__tf_perr(p, p->tok.line, p->tok.col, "out of memory"), DD_ENOMEM;
  } else {
    memset(seen, 0, d->n_fields);
  }
  int r = 0;
  for (;;) {
    if (p->tok.kind == TF_EOF) {
      if (!close) break;
      r = unclosed_block(p, open, open_field, close);
      goto out;
    }
    if (p->tok.kind == TF_SYM && (p->tok.sym == '}' || p->tok.sym == '>')) {
      if (p->tok.sym != close) {
        r = close ? dd__tf_perr(p, p->tok.line, p->tok.col,
                                "expected '%c' to close \"%s\" (opened at %d:%d), found '%c'",
                                close, open_field, open->line, open->col, p->tok.sym)
                  : dd__tf_perr(p, p->tok.line, p->tok.col,
                                "unexpected '%c': no block is open here", p->tok.sym);
        goto out;
      }
      break;
    }
    if ((r = step(p))) goto out;
    tf_token name_tok = p->tok;
    const ProtobufCFieldDescriptor *f = NULL;
    if ((r = lookup_field(p, d, &f))) goto out;
    unsigned fi = (unsigned)(f - d->fields);
    if (seen[fi] && f->label != PROTOBUF_C_LABEL_REPEATED) {
      r = dd__tf_perr(p, name_tok.line, name_tok.col,
                      "field \"%s\" of %s is given more than once, but it is not repeated",
                      f->name, d->short_name);
      goto out;
    }
    seen[fi] = 1;
    if ((r = dd__tf_lex(p))) goto out;
    if ((r = parse_field_value(p, m, f))) goto out;
    if (dd__tf_tok_is_sym(p, ',') || dd__tf_tok_is_sym(p, ';'))
      if ((r = dd__tf_lex(p))) goto out;
  }
  /* Required fields. */
  for (unsigned i = 0; i < d->n_fields; i++) {
    if (d->fields[i].label == PROTOBUF_C_LABEL_REQUIRED && !seen[i]) {
      r = dd__tf_perr(p, p->tok.line, p->tok.col, "required field \"%s\" of %s is missing",
                      d->fields[i].name, d->short_name);
      goto out;
    }
  }
  if (close) r = dd__tf_lex(p); /* past the closing symbol */
out:
  if (seen != seen_small) free(seen);
  return r;
}

/* A parser over `len` bytes of `text` within `limits` (NULL: the default limits). */
static void parser_init(tf_parser *p, const char *text, size_t len, const char *filename,
                        const dd_text_limits *limits, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  p->text = p->cur = p->line_start = text;
  p->end = text ? text + len : text;
  p->line = 1;
  p->filename = filename ? filename : "<text>";
  p->err = err;
  p->errlen = errlen;
  p->lim = limits ? resolve_limits(limits, &builtin_limits) : default_limits;
}

int dd_text_parse(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc, const char *text,
                  size_t len, const char *filename, char *err, size_t errlen) {
  return dd_text_parse_limited(out, desc, text, len, filename, NULL, err, errlen);
}

int dd_text_parse_limited(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                          const char *text, size_t len, const char *filename,
                          const dd_text_limits *limits, char *err, size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = '\0';
  tf_parser p;
  parser_init(&p, text, len, filename, limits, err, errlen);
  if (len > p.lim.max_bytes) return too_big(&p, len);
  ProtobufCMessage *m = malloc(desc->sizeof_message);
  if (!m) return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory", p.filename);
  protobuf_c_message_init(desc, m);
  int r = dd__tf_lex(&p);
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
  return dd_text_parse_file_limited(out, desc, path, NULL, err, errlen);
}

int dd_text_parse_file_limited(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                               const char *path, const dd_text_limits *limits, char *err,
                               size_t errlen) {
  char *buf;
  size_t len;
  *out = NULL;
  if (err && errlen) err[0] = '\0';
  /* a file over the limit is refused before it is read (and again after, should it have grown) */
  tf_parser p;
  parser_init(&p, NULL, 0, path, limits, err, errlen);
  struct stat st;
  if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (uintmax_t)st.st_size > p.lim.max_bytes)
    return too_big(&p, (size_t)st.st_size);
  int r = dd_read_file(&buf, &len, path, err, errlen);
  if (r) return r;
  r = dd_text_parse_limited(out, desc, buf, len, path, &p.lim, err, errlen);
  free(buf);
  return r;
}
