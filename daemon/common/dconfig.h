/* The daemon's configuration (DaemonConfig in proto/distill.proto, text format), read by the daemon,
 * the client verbs and `train --job --node`. The Redis key names are in common/keys.h. */
#ifndef DD_DCONFIG_H
#define DD_DCONFIG_H

#include <stddef.h>
#include <sys/socket.h>

#include "distill.pb-c.h"

/* Reads a DaemonConfig from `path` (text format; errors name file:line:col and the field). A NULL
 * `path` gives the defaults. Checks ranges (max_jobs >= 1, lease_s > heartbeat_s > 0, a valid
 * key_prefix). The caller frees with distilld__daemon_config__free_unpacked. */
int dd_dconfig_read(Distilld__DaemonConfig **out, const char *path, char *err, size_t errlen);

/* The Redis password from redis_password_env or redis_password_file (trailing newline removed);
 * *out = NULL when neither is set. Never from argv. Caller frees. */
int dd_dconfig_password(const Distilld__DaemonConfig *c, char **out, char *err, size_t errlen);

/* 1 when `device` names one of the worker's devices (the config's `device` list; a config that names
 * none has "cpu"), compared as dd_device_parse reads them (core/base/device.h: "cuda:0" and
 * "cuda:00" are one device); 0 when it names another, or is not a device name. */
int dd_dconfig_has_device(const Distilld__DaemonConfig *c, const char *device);
/* Its index in the config's `device` list (0 for "cpu" in a config that names none), or -1. */
int dd_dconfig_device_index(const Distilld__DaemonConfig *c, const char *device);

/* The address of the Prometheus endpoint (metrics_listen, docs/monitoring.md) into *out: *outlen
 * 0 when the field is empty (no endpoint). "PORT" alone and "localhost:PORT" are 127.0.0.1;
 * "A.B.C.D:PORT" and "[IPV6]:PORT" are those addresses (host names are not looked up, and ":PORT"
 * is refused: the address must say whether it is loopback or not). Returns 0, or DD_EINVAL with
 * err naming the field and the value. dd_dconfig_read has checked it already. */
int dd_dconfig_metrics_addr(const Distilld__DaemonConfig *c, struct sockaddr_storage *out, socklen_t *outlen, char *err,
                            size_t errlen);

/* The most devices a worker's config may list. */
#define DD_DCONFIG_MAX_DEVICES 64

#endif
