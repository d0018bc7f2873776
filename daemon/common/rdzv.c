/* The Redis rendezvous (rdzv.h). */
#define _POSIX_C_SOURCE 200809L
#include "common/rdzv.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/dd_error.h"
#include "common/redis_sync.h"

static long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* A connection, authenticated; NULL with err filled. */
static redisContext *rz_connect(dd_redis_rdzv *z, char *err, size_t errlen) {
  redisContext *c = NULL;
  char why[1024];
  dd_redis_status s = dd_redis_connect(&c, z->host, z->port, z->user[0] ? z->user : NULL, z->password, why, sizeof why);
  if (s == DD_REDIS_UNREACHABLE)
    dd_errorf(DD_EIO, err, errlen, "rendezvous: cannot reach Redis at %s:%d: %s", z->host, z->port, why);
  else if (s != DD_REDIS_OK)
    dd_errorf(DD_EPERM, err, errlen, "rendezvous: Redis at %s:%d refused the credentials: %s", z->host, z->port, why);
  return c;
}

/* One command; the reply (caller frees) or NULL with err. */
static redisReply *rz_cmd(redisContext *c, int argc, const char **argv, char *err, size_t errlen) {
  redisReply *r = redisCommandArgv(c, argc, argv, NULL);
  if (!r) {
    dd_errorf(DD_EIO, err, errlen, "rendezvous: lost Redis: %s", c->errstr);
    return NULL;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    dd_errorf(DD_EIO, err, errlen, "rendezvous: Redis: %s", r->str);
    freeReplyObject(r);
    return NULL;
  }
  return r;
}

static int rz_publish(void *ctx, const char *text, char *err, size_t errlen) {
  dd_redis_rdzv *z = ctx;
  redisContext *c = rz_connect(z, err, errlen);
  if (!c) return DD_EIO;
  char ttl[16];
  snprintf(ttl, sizeof ttl, "%d", z->ttl_s);
  /* one transaction: never a text without its TTL */
  const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"};
  const char *del[] = {"DEL", z->key};
  const char *hset[] = {"HSET", z->key, "text", text};
  const char *exp[] = {"EXPIRE", z->key, ttl};
  redisReply *r = rz_cmd(c, 1, multi, err, errlen);
  if (r) freeReplyObject(r), r = rz_cmd(c, 2, del, err, errlen);
  if (r) freeReplyObject(r), r = rz_cmd(c, 4, hset, err, errlen);
  if (r) freeReplyObject(r), r = rz_cmd(c, 3, exp, err, errlen);
  if (r) freeReplyObject(r), r = rz_cmd(c, 1, exec, err, errlen);
  if (r && r->type != REDIS_REPLY_ARRAY) {
    dd_errorf(DD_EIO, err, errlen, "rendezvous: Redis did not run the transaction that publishes %s", z->key);
    freeReplyObject(r);
    r = NULL;
  }
  redisFree(c);
  if (!r) return DD_EIO;
  freeReplyObject(r);
  snprintf(z->published, sizeof z->published, "%s", text);
  return 0;
}

static int rz_fetch(void *ctx, char *text, size_t len, int wait_ms, char *err, size_t errlen) {
  dd_redis_rdzv *z = ctx;
  long deadline = now_ms() + wait_ms;
  char last[512] = "";
  redisContext *c = NULL;
  for (;;) {
    if (!c) c = rz_connect(z, last, sizeof last);
    if (c) {
      const char *hget[] = {"HGET", z->key, "text"};
      redisReply *r = rz_cmd(c, 3, hget, last, sizeof last);
      if (r && r->type == REDIS_REPLY_STRING && r->len > 0 && (size_t)r->len < len) {
        memcpy(text, r->str, (size_t)r->len);
        text[r->len] = '\0';
        freeReplyObject(r);
        redisFree(c);
        return 0;
      }
      if (r) {
        freeReplyObject(r);
        last[0] = '\0';
      } else {
        redisFree(c);
        c = NULL;
      }
    }
    if (now_ms() >= deadline) break;
    sleep_ms(100);
  }
  if (c) redisFree(c);
  if (last[0]) return dd_errorf(DD_EIO, err, errlen, "%s", last);
  return dd_errorf(DD_ENOTFOUND, err, errlen, "rendezvous: nothing in %s on %s:%d", z->key, z->host, z->port);
}

static void rz_withdraw(void *ctx) {
  dd_redis_rdzv *z = ctx;
  char e[256];
  redisContext *c = rz_connect(z, e, sizeof e);
  if (!c) return; /* the TTL removes it */
  const char *hget[] = {"HGET", z->key, "text"};
  redisReply *r = rz_cmd(c, 3, hget, e, sizeof e);
  if (r && r->type == REDIS_REPLY_STRING && !strcmp(r->str, z->published)) {
    const char *del[] = {"DEL", z->key};
    redisReply *d = rz_cmd(c, 2, del, e, sizeof e);
    if (d) freeReplyObject(d);
  }
  if (r) freeReplyObject(r);
  redisFree(c);
}

int dd_redis_rdzv_init(dd_redis_rdzv *z, dd_rendezvous *rv, const Distilld__DaemonConfig *cfg, const char *password,
                       const char *key, int node, int nodes, int timeout_ms, const char *advertise, char *err,
                       size_t errlen) {
  memset(z, 0, sizeof *z);
  snprintf(z->host, sizeof z->host, "%s", cfg->redis_host);
  z->port = cfg->redis_port;
  if (cfg->redis_user) snprintf(z->user, sizeof z->user, "%s", cfg->redis_user);
  if (password && !(z->password = strdup(password))) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  snprintf(z->key, sizeof z->key, "%s", key);
  z->ttl_s = timeout_ms / 1000 + 60;
  *rv = (dd_rendezvous){.nodes = nodes, .node = node, .host = advertise, .timeout_ms = timeout_ms, .ctx = z,
                        .publish = rz_publish, .fetch = rz_fetch, .withdraw = rz_withdraw};
  return 0;
}

void dd_redis_rdzv_close(dd_redis_rdzv *z) {
  if (z->password) {
    memset(z->password, 0, strlen(z->password));
    free(z->password);
  }
  z->password = NULL;
}

int dd_redis_rdzv_post_joins(dd_redis_rdzv *z, const char *stream, const char *id, int attempt, int nodes, char *err,
                             size_t errlen) {
  redisContext *c = rz_connect(z, err, errlen);
  if (!c) return DD_EIO;
  char a[16], k[16];
  snprintf(a, sizeof a, "%d", attempt);
  int r = 0;
  for (int node = 1; node < nodes && !r; node++) {
    snprintf(k, sizeof k, "%d", node);
    const char *argv[] = {"XADD", stream, "*", "id", id, "join", k, "attempt", a};
    redisReply *rep = rz_cmd(c, 9, argv, err, errlen);
    if (!rep) r = DD_EIO;
    else freeReplyObject(rep);
  }
  redisFree(c);
  return r;
}
