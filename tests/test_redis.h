/* The test's own Redis connection (sync hiredis), shared by the tests that read what distilld
 * writes to Redis (tests/test_daemon*.c, tests/test_deploy_redis.c, tests/test_multinode.c): one
 * connection `rc` to 127.0.0.1:rc_port, authenticated as rc_user / rc_pw when rc_user is set, that
 * reconnects on the next command after an outage; keys under the prefix `pfx` (K); commands and
 * their replies (cmd, hget, hget_ll, rint_cmd, xrange, ef / ef_is for a stream entry's fields,
 * count_events); and the bounded waits on a job's hash (wait_final, wait_field_at_least).
 *
 * Include hiredis.h and tests/test_proc.h first. */
#ifndef DD_TEST_REDIS_H
#define DD_TEST_REDIS_H

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#ifndef HIREDIS_MAJOR
#error "include hiredis.h before test_redis.h"
#endif
#ifndef DD_TEST_PROC_H
#error "include test_proc.h before test_redis.h"
#endif

static redisContext *rc;
static int rc_port;                 /* where the test's redis-server listens */
static const char *rc_user, *rc_pw; /* AUTH rc_user rc_pw after connecting, when rc_user is set */
static char pfx[32];                /* the key prefix of the test (distilld's key_prefix) */

static inline void rc_close(void) {
  if (rc) redisFree(rc);
  rc = NULL;
}

/* Connects when not connected; 1 when connected. */
static inline int rc_connect(void) {
  if (rc && !rc->err) return 1;
  if (rc) redisFree(rc);
  struct timeval tv = {1, 0};
  rc = redisConnectWithTimeout("127.0.0.1", rc_port, tv);
  if (!rc || rc->err) {
    if (rc) redisFree(rc);
    rc = NULL;
    return 0;
  }
  struct timeval io = {10, 0};
  redisSetTimeout(rc, io);
  if (rc_user) {
    redisReply *r = redisCommand(rc, "AUTH %s %s", rc_user, rc_pw ? rc_pw : "");
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (!ok) fprintf(stderr, "AUTH %s: %s\n", rc_user, r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
    if (r) freeReplyObject(r);
    if (!ok) {
      rc_close();
      return 0;
    }
  }
  return 1;
}

/* One command (hiredis format); NULL when Redis is unreachable (the next call reconnects). */
static inline redisReply *cmd(const char *fmt, ...) {
  if (!rc_connect()) return NULL;
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(rc, fmt, ap);
  va_end(ap);
  if (!r) rc_close();
  return r;
}

/* "PREFIX:" + the rest, in one of 16 rotating buffers (copy a key that must live longer). */
static inline const char *K(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline const char *K(const char *fmt, ...) {
  static char bufs[16][256];
  static int next;
  char *b = bufs[next++ % 16];
  int n = snprintf(b, 256, "%s:", pfx);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b + n, 256 - (size_t)n, fmt, ap);
  va_end(ap);
  return b;
}

/* HGET as a malloc'd string; NULL when absent or unreachable. */
static inline char *hget(const char *key, const char *field) {
  redisReply *r = cmd("HGET %s %s", key, field);
  char *s = r && r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
  if (r) freeReplyObject(r);
  return s;
}

static inline long long hget_ll(const char *key, const char *field, long long dflt) {
  char *s = hget(key, field);
  long long v = s ? strtoll(s, NULL, 10) : dflt;
  free(s);
  return v;
}

/* A command's integer reply; `dflt` for any other reply or none. */
static inline long long rint_cmd(long long dflt, const char *fmt, ...) {
  if (!rc_connect()) return dflt;
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(rc, fmt, ap);
  va_end(ap);
  if (!r) {
    rc_close();
    return dflt;
  }
  long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : dflt;
  freeReplyObject(r);
  return v;
}

/* Waits (bounded) until the job's state is final; returns it (malloc'd) or NULL on timeout. */
static inline char *wait_final(const char *id, double timeout_s) {
  double end = mono() + timeout_s;
  for (int i = 0; i < (int)(timeout_s * 20) + 2 && mono() < end; i++) {
    char *s = hget(K("job:%s", id), "state");
    if (is_final(s)) return s;
    free(s);
    sleep_ms(50);
  }
  return NULL;
}

/* Waits (bounded) until the job's hash field `field` reaches at least `min` while the job runs.
 * Returns 1 then; 0 on timeout or when the job became final first. */
static inline int wait_field_at_least(const char *id, const char *field, long long min, double timeout_s) {
  double end = mono() + timeout_s;
  for (int i = 0; i < (int)(timeout_s * 100) + 2 && mono() < end; i++) {
    char *s = hget(K("job:%s", id), "state");
    int fin = is_final(s);
    free(s);
    if (fin) return 0;
    if (hget_ll(K("job:%s", id), field, -1) >= min) return 1;
    sleep_ms(10);
  }
  return 0;
}

/* Stream entries: XRANGE key - + (the caller frees the reply). */
static inline redisReply *xrange(const char *key) {
  redisReply *r = cmd("XRANGE %s - +", key);
  if (r && r->type != REDIS_REPLY_ARRAY) {
    freeReplyObject(r);
    r = NULL;
  }
  return r;
}

/* A field of one stream entry ([id, [k, v, ...]]); NULL when absent. */
static inline const char *ef(const redisReply *e, const char *field) {
  if (!e || e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[1]->type != REDIS_REPLY_ARRAY) return NULL;
  const redisReply *kv = e->element[1];
  for (size_t i = 0; i + 1 < kv->elements; i += 2)
    if (kv->element[i]->type == REDIS_REPLY_STRING && !strcmp(kv->element[i]->str, field))
      return kv->element[i + 1]->type == REDIS_REPLY_STRING ? kv->element[i + 1]->str : NULL;
  return NULL;
}

static inline int ef_is(const redisReply *e, const char *field, const char *want) {
  const char *v = ef(e, field);
  return v && !strcmp(v, want);
}

/* The number of the job's events of `type` (and, when `state` is given, with that state). */
static inline int count_events(const char *id, const char *type, const char *state) {
  redisReply *r = xrange(K("job:%s:events", id));
  int n = 0;
  for (size_t i = 0; r && i < r->elements; i++)
    if (ef_is(r->element[i], "type", type) && (!state || ef_is(r->element[i], "state", state))) n++;
  if (r) freeReplyObject(r);
  return n;
}

/* XPENDING's count for distilld's group on the queue PREFIX:jobs (-1: no answer). */
static inline long long pending_jobs(void) {
  redisReply *r = cmd("XPENDING %s distilld", K("jobs"));
  long long n = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_INTEGER
                    ? r->element[0]->integer
                    : -1;
  if (r) freeReplyObject(r);
  return n;
}

#endif
