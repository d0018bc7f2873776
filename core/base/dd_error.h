/* Error codes shared by everything in core/ (and the backends): 0 is success, failures are
 * negative DD_E* values, and dd_strerror() names them. Functions that can fail on user input also
 * fill a caller-provided message buffer with the detail a user needs (file:line:column, field path,
 * layer name); the code says what kind of failure it was. Library code never exits or aborts on
 * bad input. DD_ESTOPPED is no failure of the work itself: a caller's should_stop asked for a stop
 * before the work was done (while a trainer was being built, say). */
#ifndef DD_ERROR_H
#define DD_ERROR_H

#include <stddef.h>

#define DD_ERRNO_MAP(XX)                                           \
  XX(EIO, -1, "i/o error")                                         \
  XX(ENOMEM, -2, "out of memory")                                  \
  XX(EPARSE, -3, "parse error")                                    \
  XX(ECORRUPT, -4, "corrupt or truncated file")                    \
  XX(EINVAL, -5, "invalid argument")                               \
  XX(ESHAPE, -6, "shape mismatch")                                 \
  XX(EUNSUPPORTED, -7, "unsupported")                              \
  XX(ENOTFOUND, -8, "not found")                                  \
  XX(EPERM, -9, "not permitted")                                  \
  XX(ESTOPPED, -10, "stopped on request")

enum {
#define XX(name, val, str) DD_##name = val,
  DD_ERRNO_MAP(XX)
#undef XX
};

/* Returns a static string naming the error code `err` (0 gives "success"). */
const char *dd_strerror(int err);

/* Formats into `buf` (of `len` bytes, always NUL-terminated when len > 0), printf-style. Returns
 * `code` so a failure path can be `return dd_errorf(DD_EINVAL, err, errlen, "...", ...);`.
 * `buf` may be NULL, then nothing is written. */
int dd_errorf(int code, char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Internal invariant check that is never compiled out (not for user input). */
#define DD_ASSERT(x)                                                        \
  do {                                                                      \
    if (!(x)) dd__assert_fail(#x, __FILE__, __LINE__);                      \
  } while (0)
void dd__assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

#endif
