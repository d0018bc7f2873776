/* The Redis schema's names, in one place: every key distilld reads or writes is "PREFIX:" + one of
 * the formats below (dd_key), plus the consumer group, the streams' caps, the job id rule and the
 * timestamps the hashes and events carry. docs/redis.md documents the keys one by one; this header
 * and that page change together. The daemon (service/), the client verbs (cli/) and
 * `train --job --node` (cli/cmd_job.c) all take their names from here. */
#ifndef DD_KEYS_H
#define DD_KEYS_H

#include <stddef.h>

/* ---- keys, after "PREFIX:" ------------------------------------------------------------------- */

#define DD_KEY_SEQ "seq"                 /* string: the last job number handed out (INCR) */
#define DD_KEY_JOBS "jobs"               /* stream, group DD_GROUP: the queue, one entry per job or join */
#define DD_KEY_INDEX "index"             /* sorted set: job ids by submit time */
#define DD_KEY_STATE "state:%s"          /* sorted set per state: queued, running, succeeded, failed, cancelled */
#define DD_KEY_JOB "job:%s"              /* hash: one job's state and latest metrics (by job id) */
#define DD_KEY_JOB_METRICS "job:%s:metrics" /* stream (DD_METRICS_MAXLEN): one entry per display */
#define DD_KEY_JOB_EVENTS "job:%s:events"   /* stream (DD_EVENTS_MAXLEN): states, tests, snapshots, logs */
#define DD_KEY_JOB_RDZV "job:%s:rdzv:%d" /* hash: the meeting point of a multi-node job's attempt */
#define DD_KEY_CLI_RDZV "rdzv:cli:%s"    /* hash: the meeting point of `train --job --node` (by job name) */
#define DD_KEY_WORKERS "workers"         /* set: the names of live workers */
#define DD_KEY_WORKER "worker:%s"        /* hash, TTL 3 x heartbeat_s: one worker (by worker name) */

/* "PREFIX:" + the formatted rest, e.g. dd_key(buf, len, cfg->key_prefix, DD_KEY_JOB, id). Returns
 * `buf`. Names longer than `len` are truncated (callers size buffers for prefix + id). */
const char *dd_key(char *buf, size_t len, const char *prefix, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* 0 when `prefix` is a key prefix: 1 to 64 of letters, digits and _-.:{}; 1 when its length is
 * wrong (or it is NULL), 2 when it holds another character. */
int dd_key_prefix_check(const char *prefix);

/* ---- the queue and the streams --------------------------------------------------------------- */

/* The consumer group every daemon reads the queue with. */
#define DD_GROUP "distilld"
/* A queued job's text may be at most this long (bytes). */
#define DD_MAX_JOB_BYTES (1 << 20)
/* Streams are capped (XADD MAXLEN ~): metrics entries and event entries per job. */
#define DD_METRICS_MAXLEN 100000
#define DD_EVENTS_MAXLEN 10000
/* A number above as a string literal, for the Lua scripts: DD_KEYS_STR(DD_EVENTS_MAXLEN) is "10000". */
#define DD_KEYS_STR(x) DD_KEYS__STR(x)
#define DD_KEYS__STR(x) #x

/* A job id is what `distilld submit` prints: [A-Za-z0-9_.-]{1,64}. Returns 1 when `id` is one. */
int dd_job_id_valid(const char *id);

/* Seconds since the epoch, with milliseconds: every *_at field and "now" argument ("%.3f"). */
double dd_now(void);

#endif
