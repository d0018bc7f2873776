/* Error codes and message formatting (see dd_error.h). */
#include "base/dd_error.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

const char *dd_strerror(int err) {
  switch (err) {
    case 0:
      return "success";
#define XX(name, val, str) \
  case DD_##name:          \
    return str;
      DD_ERRNO_MAP(XX)
#undef XX
  }
  return "unknown error";
}

int dd_errorf(int code, char *buf, size_t len, const char *fmt, ...) {
  if (buf && len > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* An internal invariant broke: this is a bug in distilld, not bad input. Print where and stop the
 * process with SIGABRT so a core dump shows the state. */
void dd__assert_fail(const char *expr, const char *file, int line) {
  fprintf(stderr, "distilld: internal error: assertion `%s' failed at %s:%d\n", expr, file, line);
  fflush(stderr);
  raise(SIGABRT);
  _Exit(134);
}
