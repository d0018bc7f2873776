/* The synchronous connect + AUTH (common/redis_sync.h). */
#include "common/redis_sync.h"

#include <stdio.h>
#include <sys/time.h>

dd_redis_status dd_redis_connect(redisContext **out, const char *host, int port, const char *user, const char *password,
                                 char *detail, size_t len) {
  struct timeval connect_tv = {2, 0}, io_tv = {10, 0};
  *out = NULL;
  redisContext *c = redisConnectWithTimeout(host, port, connect_tv);
  if (!c || c->err) {
    snprintf(detail, len, "%s", c ? c->errstr : "out of memory");
    if (c) redisFree(c);
    return DD_REDIS_UNREACHABLE;
  }
  redisSetTimeout(c, io_tv);
  if (password) {
    const char *argv[3] = {"AUTH", user ? user : password, password};
    redisReply *r = redisCommandArgv(c, user ? 3 : 2, argv, NULL);
    dd_redis_status s = !r ? DD_REDIS_LOST : r->type == REDIS_REPLY_ERROR ? DD_REDIS_REFUSED : DD_REDIS_OK;
    if (s != DD_REDIS_OK) snprintf(detail, len, "%s", r ? r->str : c->errstr);
    if (r) freeReplyObject(r);
    if (s != DD_REDIS_OK) {
      redisFree(c);
      return s;
    }
  }
  *out = c;
  return DD_REDIS_OK;
}
