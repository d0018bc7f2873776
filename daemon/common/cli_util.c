/* The output helpers of the verbs and the service (common/cli_util.h). */
#include "common/cli_util.h"

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
  if (!(s >= 0) || s > 1e7) {
    snprintf(buf, len, "--:--");
    return;
  }
  long v = (long)(s + 0.5);
  snprintf(buf, len, "%ld:%02ld:%02ld", v / 3600, (v / 60) % 60, v % 60);
}
