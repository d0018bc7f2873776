/* The daemon's configuration file and the Redis key helpers shared by the daemon and the client
 * verbs (daemon/dconfig.h). */
#define _POSIX_C_SOURCE 200809L
#include "common/dconfig.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/dd_error.h"
#include "format/fileio.h"
#include "format/textformat.h"

int dd_dconfig_read(Distilld__DaemonConfig **out, const char *path, char *err, size_t errlen) {
  *out = NULL;
  Distilld__DaemonConfig *c = NULL;
  int r;
  if (path)
    r = dd_text_parse_file((ProtobufCMessage **)&c, &distilld__daemon_config__descriptor, path, err, errlen);
  else
    r = dd_text_parse((ProtobufCMessage **)&c, &distilld__daemon_config__descriptor, "", 0, "(defaults)", err, errlen);
  if (r) return r;
  const char *where = path ? path : "(defaults)";
  if (c->max_jobs < 1) {
    r = dd_errorf(DD_EINVAL, err, errlen, "%s: max_jobs must be at least 1, got %d", where, c->max_jobs);
  } else if (c->heartbeat_s < 1) {
    r = dd_errorf(DD_EINVAL, err, errlen, "%s: heartbeat_s must be at least 1, got %d", where, c->heartbeat_s);
  } else if (c->lease_s < 2 * c->heartbeat_s) {
    r = dd_errorf(DD_EINVAL, err, errlen,
                  "%s: lease_s (%d) must be at least twice heartbeat_s (%d), or a live worker's jobs get taken over",
                  where, c->lease_s, c->heartbeat_s);
  } else if (c->redis_port < 1 || c->redis_port > 65535) {
    r = dd_errorf(DD_EINVAL, err, errlen, "%s: redis_port %d is not a port", where, c->redis_port);
  } else if (c->retention_s < 1) {
    r = dd_errorf(DD_EINVAL, err, errlen, "%s: retention_s must be positive, got %d", where, c->retention_s);
  } else if (c->drain_timeout_s < 1 || c->poll_ms < 10 || c->threads_per_job < 0) {
    r = dd_errorf(DD_EINVAL, err, errlen, "%s: drain_timeout_s (%d) must be at least 1, poll_ms (%d) at least 10, threads_per_job (%d) not negative",
                  where, c->drain_timeout_s, c->poll_ms, c->threads_per_job);
  } else if (c->redis_password_env && c->redis_password_file) {
    r = dd_errorf(DD_EINVAL, err, errlen, "%s: set redis_password_env or redis_password_file, not both", where);
  } else {
    const char *p = c->key_prefix;
    if (!p || !p[0] || strlen(p) > 64) r = dd_errorf(DD_EINVAL, err, errlen, "%s: key_prefix must be 1 to 64 characters", where);
    for (; !r && *p; p++)
      if (!(isalnum((unsigned char)*p) || strchr("_-.:{}", *p)))
        r = dd_errorf(DD_EINVAL, err, errlen, "%s: key_prefix \"%s\" may hold letters, digits and _-.:{} only", where,
                      c->key_prefix);
    if (!r && c->worker_name) {
      if (!dd_job_id_valid(c->worker_name))
        r = dd_errorf(DD_EINVAL, err, errlen, "%s: worker_name \"%s\" may hold letters, digits and _-. only (at most 64)",
                      where, c->worker_name);
    }
  }
  if (r) {
    distilld__daemon_config__free_unpacked(c, NULL);
    return r;
  }
  *out = c;
  return 0;
}

int dd_dconfig_password(const Distilld__DaemonConfig *c, char **out, char *err, size_t errlen) {
  *out = NULL;
  if (c->redis_password_env && c->redis_password_env[0]) {
    const char *v = getenv(c->redis_password_env);
    if (!v) return dd_errorf(DD_EINVAL, err, errlen, "redis_password_env: the environment variable %s is not set", c->redis_password_env);
    *out = strdup(v);
    return *out ? 0 : DD_ENOMEM;
  }
  if (c->redis_password_file && c->redis_password_file[0]) {
    char *buf = NULL;
    size_t len = 0;
    char e[512];
    if (dd_read_file(&buf, &len, c->redis_password_file, e, sizeof e))
      return dd_errorf(DD_EIO, err, errlen, "redis_password_file: %s", e);
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) buf[--len] = '\0';
    if (strlen(buf) != len) {
      free(buf);
      return dd_errorf(DD_EINVAL, err, errlen, "redis_password_file: \"%s\" holds a NUL byte", c->redis_password_file);
    }
    *out = buf;
  }
  return 0;
}

const char *dd_key(char *buf, size_t len, const char *prefix, const char *fmt, ...) {
  int n = snprintf(buf, len, "%s:", prefix);
  if (n < 0 || (size_t)n >= len) return buf;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + n, len - (size_t)n, fmt, ap);
  va_end(ap);
  return buf;
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
