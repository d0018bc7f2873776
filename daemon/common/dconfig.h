/* The daemon's configuration (DaemonConfig in proto/distill.proto, text format) and the Redis
 * schema both the daemon and the client verbs use: key names, the consumer group, limits. The key
 * schema is documented, key by key, in docs/redis.md; this header and that page change together. */
#ifndef DD_DCONFIG_H
#define DD_DCONFIG_H

#include <stddef.h>

#include "distill.pb-c.h"

/* The consumer group every daemon reads the queue with. */
#define DD_GROUP "distilld"
/* A queued job's text may be at most this long (bytes). */
#define DD_MAX_JOB_BYTES (1 << 20)
/* Streams are capped (XADD MAXLEN ~): metrics entries and event entries per job. */
#define DD_METRICS_MAXLEN 100000
#define DD_EVENTS_MAXLEN 10000

/* Reads a DaemonConfig from `path` (text format; errors name file:line:col and the field). A NULL
 * `path` gives the defaults. Checks ranges (max_jobs >= 1, lease_s > heartbeat_s > 0, a valid
 * key_prefix). The caller frees with distilld__daemon_config__free_unpacked. */
int dd_dconfig_read(Distilld__DaemonConfig **out, const char *path, char *err, size_t errlen);

/* The Redis password from redis_password_env or redis_password_file (trailing newline removed);
 * *out = NULL when neither is set. Never from argv. Caller frees. */
int dd_dconfig_password(const Distilld__DaemonConfig *c, char **out, char *err, size_t errlen);

/* "PREFIX:" + the formatted rest, e.g. dd_key(buf, len, cfg->key_prefix, "job:%s", id). Returns
 * `buf`. Names longer than `len` are truncated (callers size buffers for prefix + id). */
const char *dd_key(char *buf, size_t len, const char *prefix, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* A job id is what `distilld submit` prints: [A-Za-z0-9_.-]{1,64}. Returns 1 when `id` is one. */
int dd_job_id_valid(const char *id);

/* Seconds since the epoch, with milliseconds. */
double dd_now(void);

#endif
