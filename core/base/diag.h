/* Diagnostics: a growable list of warnings and errors about a net, a solver or a job, each with
 * the layer (or field) it concerns. `distilld check` prints them; jobs log them at start. */
#ifndef DD_DIAG_H
#define DD_DIAG_H

#include <stddef.h>

typedef enum { DD_DIAG_NOTE = 0, DD_DIAG_WARNING = 1, DD_DIAG_ERROR = 2 } dd_diag_level;

typedef struct {
  dd_diag_level level;
  char *where; /* layer name or field path; may be NULL */
  char *msg;
} dd_diag;

typedef struct {
  dd_diag *v;
  size_t n, cap;
  int n_errors, n_warnings;
} dd_diags;

/* Appends a diagnostic (printf-style). Out of memory drops the message but still counts it. */
void dd_diags_add(dd_diags *d, dd_diag_level level, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Frees the messages and the list; `d` may be reused after. */
void dd_diags_free(dd_diags *d);

#endif
