/* The daemon's configuration (DaemonConfig in proto/distill.proto, text format), read by the daemon,
 * the client verbs and `train --job --node`. The Redis key names are in common/keys.h. */
#ifndef DD_DCONFIG_H
#define DD_DCONFIG_H

#include <stddef.h>

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

/* The most devices a worker's config may list. */
#define DD_DCONFIG_MAX_DEVICES 64

#endif
