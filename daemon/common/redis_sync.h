/* The one synchronous connect + AUTH (hiredis's blocking API), for the client verbs (cli/client.c)
 * and the rendezvous of multi-node jobs (common/rdzv.c). The daemon's own connection is
 * asynchronous (service/loop.c). */
#ifndef DD_REDIS_SYNC_H
#define DD_REDIS_SYNC_H

#include <hiredis/hiredis.h>
#include <stddef.h>

typedef enum {
  DD_REDIS_OK = 0,
  DD_REDIS_UNREACHABLE, /* no connection: `detail` has hiredis's reason */
  DD_REDIS_LOST,        /* connected, then lost while authenticating: hiredis's reason */
  DD_REDIS_REFUSED      /* AUTH was answered with an error: Redis's reply */
} dd_redis_status;

/* Connects to host:port (2 s to connect), sets a 10 s timeout on every later command and, when
 * `password` is not NULL, authenticates: AUTH USER PASSWORD when `user` is not NULL, else AUTH
 * PASSWORD. Returns DD_REDIS_OK with *out (the caller frees it with redisFree), or the failure with
 * *out NULL and the reason in `detail` (the caller words the message). Copies nothing it is given. */
dd_redis_status dd_redis_connect(redisContext **out, const char *host, int port, const char *user, const char *password,
                                 char *detail, size_t len);

#endif
