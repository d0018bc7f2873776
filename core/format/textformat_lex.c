/* The lexer of the protocol buffer text format (see textformat.h and textformat_internal.h):
 * tokens with line and column, '#' comments (remembering one that hid a closing '}' or '>', to
 * explain an unclosed block), numbers checked for being glued to a name, quoted strings and their
 * C escapes, and the "FILE:LINE:COL: message (at PATH)" errors every part of the parser writes. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "format/textformat_internal.h"

/* Writes "FILE:LINE:COL: <message>[ (at PATH)]" into the error buffer; returns DD_EPARSE. */
int dd__tf_perr(tf_parser *p, int line, int col, const char *fmt, ...) {
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
void dd__tf_tok_describe(const tf_token *t, char *buf, size_t len) {
  int shown = t->len > 40 ? 40 : (int)t->len;
  switch (t->kind) {
    case TF_EOF:
      snprintf(buf, len, "end of file");
      break;
    case TF_IDENT:
      snprintf(buf, len, "\"%.*s\"", shown, t->p);
      break;
    case TF_NUMBER:
      snprintf(buf, len, "number %.*s", shown, t->p);
      break;
    case TF_STRING:
      snprintf(buf, len, "string %.*s%s", shown, t->p, t->len > 40 ? "..." : "");
      break;
    case TF_SYM:
      snprintf(buf, len, "'%c'", t->sym);
      break;
  }
}

/* Skips blanks, line breaks (counting lines) and '#' comments from `s`; returns where the next
 * token starts. A comment that hides a '}' or '>' is remembered in p->hid_*. */
static const char *skip_blank(tf_parser *p, const char *s) {
  const char *e = p->end;
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
    return s;
  }
}

/* Scans the number starting at `s` into the token `t` (decimal, hex or octal digits; a fraction,
 * an exponent or an f suffix make it a float). A number glued to a name is an error. */
static int lex_number(tf_parser *p, tf_token *t, const char *s) {
  const char *q = s, *e = p->end;
  if (*s == '0' && q + 1 < e && (q[1] == 'x' || q[1] == 'X')) {
    q += 2;
    if (q >= e || !isxdigit((unsigned char)*q))
      return dd__tf_perr(p, t->line, t->col, "expected hex digits after \"0x\"");
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
    return dd__tf_perr(p, t->line, t->col,
                       "the number %.*s is glued to \"%.*s\": a number must be followed by a "
                       "space, a line break or a separator (was a line break lost?)",
                       (int)(q - s), s, (int)(r - q > 40 ? 40 : r - q), q);
  }
  t->kind = TF_NUMBER;
  t->len = (size_t)(q - s);
  p->cur = q;
  return 0;
}

/* Reads the next token into p->tok. Returns 0 or DD_EPARSE. */
int dd__tf_lex(tf_parser *p) {
  const char *s = skip_blank(p, p->cur), *e = p->end;
  tf_token *t = &p->tok;
  memset(t, 0, sizeof *t);
  t->p = s;
  t->line = p->line;
  t->col = (int)(s - p->line_start) + 1;
  if (s >= e) {
    t->kind = TF_EOF;
    p->cur = s;
    return 0;
  }
  unsigned char c = (unsigned char)*s;
  if (is_ident_start(c)) {
    const char *q = s;
    while (q < e && is_ident_char((unsigned char)*q)) q++;
    t->kind = TF_IDENT;
    t->len = (size_t)(q - s);
    p->cur = q;
    return 0;
  }
  if (isdigit(c) || (c == '.' && s + 1 < e && isdigit((unsigned char)s[1])))
    return lex_number(p, t, s);
  if (c == '"' || c == '\'') {
    const char *q = s + 1;
    while (q < e && *q != (char)c && *q != '\n') {
      if (*q == '\\' && q + 1 < e && q[1] != '\n') q++;
      q++;
    }
    if (q >= e || *q != (char)c)
      return dd__tf_perr(p, t->line, t->col,
                         "string not closed: a quoted string must end on its line");
    t->kind = TF_STRING;
    t->len = (size_t)(q + 1 - s);
    p->cur = q + 1;
    return 0;
  }
  if (strchr("{}<>:[],;-", c) && c != '\0') {
    t->kind = TF_SYM;
    t->sym = (char)c;
    t->len = 1;
    p->cur = s + 1;
    return 0;
  }
  if (isprint(c))
    return dd__tf_perr(p, t->line, t->col, "unexpected character '%c'", c);
  return dd__tf_perr(p, t->line, t->col, "unexpected byte 0x%02x", c);
}

/* Decodes the quoted literal `t` (quotes included), appending to the growable buffer at *buf. */
int dd__tf_unescape_append(tf_parser *p, const tf_token *t, char **buf, size_t *len,
                           size_t *cap) {
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
          v = v * 16 + (isdigit((unsigned char)*s) ? *s - '0'
                                                   : (tolower((unsigned char)*s) - 'a' + 10));
          s++;
          n++;
        }
        if (n == 0) return dd__tf_perr(p, t->line, col, "\\x must be followed by hex digits");
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
          if (v > 255) return dd__tf_perr(p, t->line, col, "octal escape \\%o is over 255", v);
          *o++ = (char)v;
        } else {
          return dd__tf_perr(p, t->line, col, "unknown escape sequence \\%c", *s);
        }
    }
  }
  *len = (size_t)(o - *buf);
  (*buf)[*len] = '\0';
  return 0;
}
