/* What every verb and the service print with: the "distilld: " error line, durations, the version.
 * The verbs (daemon/cli/) and the service's start-up (daemon/service/daemon.c) call these; nothing
 * here calls back into them. */
#ifndef DD_CLI_UTIL_H
#define DD_CLI_UTIL_H

#include <stddef.h>

#ifndef DD_VERSION
#define DD_VERSION "0.0.0"
#endif

/* Prints "distilld: " + message + newline to stderr. */
void dd_cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A whole decimal number in [lo, hi] (nothing else in s) into *out: 0, or -1 when s is not one. */
int dd_cli_parse_int(const char *s, long lo, long hi, int *out);

/* The duration of `s` seconds for a person to read, in the largest two units, each rounded to
 * the last unit shown (the one formatter of every duration the CLI and the service print: ETAs,
 * elapsed times, ages):
 *   s < 9.95        "0.4s", "9.9s"     (tenths)
 *   s < 59.5        "10s", "42s"
 *   s < 3599.5      "1m00s", "5m22s"   (322)
 *   s < 86370       "1h00m", "1h02m"   (3725: 1 h 2 min 5 s)
 *   longer          "1d00h", "3d07h"
 * Negative, NaN, infinite or absurd (over 10^9 s, 31 years) values, which mean "unknown", give
 * "-". `buf` gets at most `len` bytes, NUL included; 16 bytes always suffice. */
void dd_cli_fmt_duration(double s, char *buf, size_t len);

#endif
