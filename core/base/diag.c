/* Diagnostics list (see diag.h). */
#define _POSIX_C_SOURCE 200809L
#include "base/diag.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dd_diags_add(dd_diags *d, dd_diag_level level, const char *where, const char *fmt, ...) {
  if (level == DD_DIAG_ERROR) d->n_errors++;
  if (level == DD_DIAG_WARNING) d->n_warnings++;
  if (d->n == d->cap) {
    size_t ncap = d->cap ? d->cap * 2 : 8;
    dd_diag *nv = realloc(d->v, ncap * sizeof *nv);
    if (!nv) return;
    d->v = nv;
    d->cap = ncap;
  }
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  char *msg = malloc((size_t)n + 1);
  if (!msg) return;
  va_start(ap, fmt);
  vsnprintf(msg, (size_t)n + 1, fmt, ap);
  va_end(ap);
  char *w = where ? strdup(where) : NULL;
  if (where && !w) {
    free(msg);
    return;
  }
  d->v[d->n++] = (dd_diag){level, w, msg};
}

void dd_diags_free(dd_diags *d) {
  for (size_t i = 0; i < d->n; i++) {
    free(d->v[i].where);
    free(d->v[i].msg);
  }
  free(d->v);
  memset(d, 0, sizeof *d);
}
