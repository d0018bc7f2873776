/* A rendezvous (core/collective.h) through Redis, for the nodes of a multi-node job: node 0 writes
 * its text into field "text" of a hash (with a TTL, so a crashed attempt leaves nothing behind for
 * long), the other nodes poll it with HGET, node 0 deletes it once everyone has joined. A hash and
 * HSET/HGET/EXPIRE/DEL, so the worker ACL user of deploy/users.acl needs nothing more. Each call
 * opens its own short synchronous connection (hiredis), from whichever thread runs the job. */
#ifndef DD_RDZV_H
#define DD_RDZV_H

#include "comm/collective.h"
#include "distill.pb-c.h"

typedef struct dd_redis_rdzv {
  char host[256];
  int port;
  char user[128];
  char *password; /* owned, wiped on close */
  char key[512];
  char published[512];
  int ttl_s;
} dd_redis_rdzv;

/* Fills *rv (node `node` of `nodes`, timeout, advertise host for the CPU transport: NULL for this
 * host's name) to meet through `key` on cfg's Redis with `password` (may be NULL; copied). */
int dd_redis_rdzv_init(dd_redis_rdzv *z, dd_rendezvous *rv, const Distilld__DaemonConfig *cfg, const char *password,
                       const char *key, int node, int nodes, int timeout_ms, const char *advertise, char *err,
                       size_t errlen);
void dd_redis_rdzv_close(dd_redis_rdzv *z);

/* The daemon's node 0 of a multi-node job: one queue entry per other node (XADD stream * id ID
 * join K attempt A), which other workers claim to join the job (docs/redis.md). */
int dd_redis_rdzv_post_joins(dd_redis_rdzv *z, const char *stream, const char *id, int attempt, int nodes, char *err,
                             size_t errlen);

#endif
