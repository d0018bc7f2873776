/* The output helpers of the verbs and the service (common/cli_util.h). */
#include "cli_util.h" /* by its own folder: tests/test_cli_help.c compiles this file in */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void dd_cli_error(const char *fmt, ...) {
  va_list ap;
  fputs("distilld: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

int dd_cli_parse_int(const char *s, long lo, long hi, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return -1;
  *out = (int)v;
  return 0;
}

void dd_cli_fmt_duration(double s, char *buf, size_t len) {
  if (!(s >= 0) || s > 1e9) {
    snprintf(buf, len, "-");
    return;
  }
  if (s < 9.95) {
    snprintf(buf, len, "%.1fs", s);
    return;
  }
  long v = (long)(s + 0.5); /* seconds */
  if (v < 60) {
    snprintf(buf, len, "%lds", v);
    return;
  }
  if (v < 3600) {
    snprintf(buf, len, "%ldm%02lds", v / 60, v % 60);
    return;
  }
  long m = (long)(s / 60 + 0.5); /* minutes */
  if (m < 24 * 60) {
    snprintf(buf, len, "%ldh%02ldm", m / 60, m % 60);
    return;
  }
  long h = (long)(s / 3600 + 0.5); /* hours */
  snprintf(buf, len, "%ldd%02ldh", h / 24, h % 24);
}
