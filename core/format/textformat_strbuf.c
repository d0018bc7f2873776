/* The text format printer's output buffer (see textformat_internal.h): a growable NUL-terminated
 * string that the value printers (textformat_types.c) and the message printer
 * (textformat_print.c) write into. A failed allocation is recorded in `oom` and later writes are
 * dropped, so the printers never check for errors; dd_text_print looks once at the end. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "format/textformat_internal.h"

void dd__tf_sb_put(tf_strbuf *b, const char *s, size_t n) {
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

void dd__tf_sb_printf(tf_strbuf *b, const char *fmt, ...) {
  char tmp[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  DD_ASSERT((size_t)n < sizeof tmp);
  dd__tf_sb_put(b, tmp, (size_t)n);
}

void dd__tf_sb_indent(tf_strbuf *b, int n) {
  static const char sp[] = "                                                                ";
  while (n > 0) {
    int k = n > 64 ? 64 : n;
    dd__tf_sb_put(b, sp, (size_t)k);
    n -= k;
  }
}

const char *dd__tf_field_name(const ProtobufCFieldDescriptor *f, char *buf, size_t len) {
  size_t n = strlen(f->name);
  if (n < 2 || f->name[n - 1] != '_' || n >= len) return f->name;
  memcpy(buf, f->name, n - 1);
  buf[n - 1] = '\0';
  return buf;
}
