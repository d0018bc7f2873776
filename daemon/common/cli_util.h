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

/* "H:MM:SS" of `s` seconds into buf ("--:--" when unknown or absurd). */
void dd_cli_fmt_duration(double s, char *buf, size_t len);

#endif
