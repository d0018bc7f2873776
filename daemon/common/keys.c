/* The Redis schema's names and rules (common/keys.h). */
#define _POSIX_C_SOURCE 200809L
#include "common/keys.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

const char *dd_key(char *buf, size_t len, const char *prefix, const char *fmt, ...) {
  int n = snprintf(buf, len, "%s:", prefix);
  if (n < 0 || (size_t)n >= len) return buf;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + n, len - (size_t)n, fmt, ap);
  va_end(ap);
  return buf;
}

int dd_key_prefix_check(const char *p) {
  if (!p || !p[0] || strlen(p) > 64) return 1;
  for (; *p; p++)
    if (!(isalnum((unsigned char)*p) || strchr("_-.:{}", *p))) return 2;
  return 0;
}

int dd_job_id_valid(const char *id) {
  size_t n = 0;
  for (const char *p = id; *p; p++, n++)
    if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.')) return 0;
  return n >= 1 && n <= 64;
}

double dd_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
