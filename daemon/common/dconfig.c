/* The daemon's configuration file (common/dconfig.h). */
#define _POSIX_C_SOURCE 200809L
#include "common/dconfig.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/device.h"
#include "base/dd_error.h"
#include "common/keys.h"
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
  } else if (c->max_attempts < 1) {
    r = dd_errorf(DD_EINVAL, err, errlen, "%s: max_attempts must be at least 1, got %d", where, c->max_attempts);
  } else if (c->max_job_memory_mb < 0 || c->max_job_memory_mb > ((int64_t)1 << 30)) {
    r = dd_errorf(DD_EINVAL, err, errlen, "%s: max_job_memory_mb must be 0 (no limit) to 1073741824, got %lld", where,
                  (long long)c->max_job_memory_mb);
  } else if (c->max_jobs_per_device < 0) {
    r = dd_errorf(DD_EINVAL, err, errlen, "%s: max_jobs_per_device must be 0 (no limit) or more, got %d", where,
                  c->max_jobs_per_device);
  } else if (c->n_device > DD_DCONFIG_MAX_DEVICES) {
    r = dd_errorf(DD_EINVAL, err, errlen, "%s: device: %zu devices, at most %d", where, c->n_device,
                  DD_DCONFIG_MAX_DEVICES);
  } else if (c->redis_password_env && c->redis_password_file) {
    r = dd_errorf(DD_EINVAL, err, errlen, "%s: set redis_password_env or redis_password_file, not both", where);
  } else {
    int bad = dd_key_prefix_check(c->key_prefix);
    if (bad == 1) r = dd_errorf(DD_EINVAL, err, errlen, "%s: key_prefix must be 1 to 64 characters", where);
    if (bad == 2)
      r = dd_errorf(DD_EINVAL, err, errlen, "%s: key_prefix \"%s\" may hold letters, digits and _-.:{} only", where,
                    c->key_prefix);
    if (!r && c->metrics_listen && c->metrics_listen[0]) {
      struct sockaddr_storage sa;
      socklen_t len;
      char e[512];
      if (dd_dconfig_metrics_addr(c, &sa, &len, e, sizeof e)) r = dd_errorf(DD_EINVAL, err, errlen, "%s: %s", where, e);
    }
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

int dd_dconfig_device_index(const Distilld__DaemonConfig *c, const char *device) {
  int kind, index, k, i;
  if (dd_device_parse(device, &kind, &index, "device", NULL, 0)) return -1;
  if (c->n_device == 0) return kind == DD_DEVICE_CPU ? 0 : -1;
  for (size_t n = 0; n < c->n_device; n++)
    if (!dd_device_parse(c->device[n], &k, &i, "device", NULL, 0) && k == kind && i == index) return (int)n;
  return -1;
}

int dd_dconfig_has_device(const Distilld__DaemonConfig *c, const char *device) {
  return dd_dconfig_device_index(c, device) >= 0;
}

/* "65535" -> 65535; 0 for anything but 1 to 5 digits making 1..65535. */
static int parse_port(const char *s) {
  size_t n = strlen(s);
  if (n < 1 || n > 5 || strspn(s, "0123456789") != n) return 0;
  long v = strtol(s, NULL, 10);
  return v >= 1 && v <= 65535 ? (int)v : 0;
}

int dd_dconfig_metrics_addr(const Distilld__DaemonConfig *c, struct sockaddr_storage *out, socklen_t *outlen, char *err,
                            size_t errlen) {
  memset(out, 0, sizeof *out);
  *outlen = 0;
  const char *v = c->metrics_listen;
  if (!v || !v[0]) return 0;
  char host[64] = "127.0.0.1";
  const char *port_s = v;
  if (v[0] == '[') {
    const char *close = strchr(v, ']');
    if (!close || close[1] != ':' || (size_t)(close - v - 1) >= sizeof host)
      return dd_errorf(DD_EINVAL, err, errlen, "metrics_listen \"%s\": an IPv6 address is written [ADDRESS]:PORT", v);
    memcpy(host, v + 1, (size_t)(close - v - 1));
    host[close - v - 1] = '\0';
    port_s = close + 2;
  } else if (strchr(v, ':')) {
    const char *colon = strrchr(v, ':');
    if (colon == v)
      return dd_errorf(DD_EINVAL, err, errlen,
                       "metrics_listen \"%s\": name the address: 127.0.0.1%s (loopback only) or 0.0.0.0%s (every interface)",
                       v, v, v);
    if ((size_t)(colon - v) >= sizeof host)
      return dd_errorf(DD_EINVAL, err, errlen, "metrics_listen \"%s\": the address is too long", v);
    memcpy(host, v, (size_t)(colon - v));
    host[colon - v] = '\0';
    if (!strcmp(host, "localhost")) snprintf(host, sizeof host, "127.0.0.1");
    port_s = colon + 1;
  }
  int port = parse_port(port_s);
  if (!port)
    return dd_errorf(DD_EINVAL, err, errlen, "metrics_listen \"%s\": \"%s\" is not a port (1 to 65535); write HOST:PORT, "
                     "e.g. \"127.0.0.1:9464\"", v, port_s);
  if (v[0] == '[') {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
      return dd_errorf(DD_EINVAL, err, errlen, "metrics_listen \"%s\": \"%s\" is not an IPv6 address", v, host);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    *outlen = sizeof *a;
    return 0;
  }
  struct sockaddr_in *a = (struct sockaddr_in *)out;
  if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
    return dd_errorf(DD_EINVAL, err, errlen,
                     "metrics_listen \"%s\": \"%s\" is not an IP address (host names other than localhost are not "
                     "looked up: write e.g. 127.0.0.1, [::1] or 0.0.0.0)", v, host);
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)port);
  *outlen = sizeof *a;
  return 0;
}
