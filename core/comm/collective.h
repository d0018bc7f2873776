/* Collectives for data-parallel training: the ranks of one job sum their gradients so every
 * replica takes the same step. An operations table, like the backends (core/backend.h): the CPU
 * implementation (core/collective_cpu.c: one thread per rank in one process, over host memory)
 * exists so the whole data-parallel path runs in CI without GPUs; NCCL fills the same table in
 * cuda/.
 *
 * Rules: every rank calls the same operations in the same order with the same sizes (as with
 * NCCL). Results are deterministic: a sum is always taken over ranks 0, 1, ..., size-1 in that
 * order, so every rank gets the same bits, run after run. A rank that fails calls abort(); every
 * rank waiting in (or later entering) a collective then returns DD_EIO with the reason, and so
 * does a rank that waits longer than the group's timeout (a rank that died without aborting):
 * training fails cleanly instead of hanging. A collective every rank has entered completes (an
 * abort then fails the next one); after DD_EIO a buffer's contents are undefined (the CPU group
 * leaves it unchanged, NCCL may not). The CPU group works on host memory: it pairs with the CPU
 * backend. The timeout counts from a rank's arrival, so ranks must reach each collective within
 * it of one another (slow first steps included). */
#ifndef DD_COLLECTIVE_H
#define DD_COLLECTIVE_H

#include <stddef.h>
#include <stdint.h>

typedef struct dd_comm dd_comm;
struct dd_backend;

typedef struct dd_comm_ops {
  const char *name;
  /* In place: buf (n floats, this rank's backend memory) becomes the sum over ranks. */
  int (*allreduce_sum)(dd_comm *c, float *buf, int64_t n, char *err, size_t errlen);
  /* buf on every rank becomes root's buf. */
  int (*broadcast)(dd_comm *c, float *buf, int64_t n, int root, char *err, size_t errlen);
  int (*barrier)(dd_comm *c, char *err, size_t errlen);
  /* Marks the group failed with `why`: every rank's pending and later collectives return DD_EIO
   * with it. Safe to call from any thread, more than once (the first reason is kept). */
  void (*abort)(dd_comm *c, const char *why);
  /* Ties rank c to the backend its thread created (NCCL orders its sums on that backend's stream).
   * May be NULL: nothing to bind (CPU ranks). */
  int (*bind)(dd_comm *c, struct dd_backend *be, char *err, size_t errlen);
  /* Frees the whole group comms[0..size-1], after every rank's thread is done with its handle. */
  void (*group_destroy)(dd_comm **comms, int size);
} dd_comm_ops;

struct dd_comm {
  const dd_comm_ops *ops;
  int rank, size;
  void *ctx;
};

/* A group is created from the ranks' device names by a device registry (core/base/device.h:
 * dd_devices.comm_group_create; the built-in one is core/devices/). Each rank's thread then binds
 * its handle to the backend it created, and the group is freed through its own table. */
static inline int dd_comm_bind(dd_comm *c, struct dd_backend *be, char *err, size_t errlen) {
  return c->ops->bind ? c->ops->bind(c, be, err, errlen) : 0;
}
static inline void dd_comm_group_destroy(dd_comm **comms, int size) {
  if (size >= 1 && comms[0]) comms[0]->ops->group_destroy(comms, size);
}

/* ---- several nodes ---------------------------------------------------------------------------------
 * A job may span `nodes` processes (usually daemons on several machines), each running `local`
 * ranks (the same number on every node): global rank = node * local + local rank, and every
 * handle's rank/size are global. The processes meet through a rendezvous the caller provides
 * (the daemon and `distilld train --node` use a Redis key; core/ knows nothing of Redis): node 0
 * publishes a short text (the NCCL unique id, or the CPU transport's address and a nonce), the
 * others fetch it. Creation returns once every node has joined, or fails after timeout_ms naming
 * the nodes that did not come. A node that dies later (its connection closes) or stops answering
 * (the group's timeout) fails every rank of every node: the job fails, it does not hang. */
typedef struct dd_rendezvous {
  int nodes, node;  /* this process is node `node` (0: the one that publishes) of `nodes` */
  const char *host; /* CPU ranks: the address node 0 listens on and publishes (NULL: this host's name) */
  int timeout_ms;   /* the whole rendezvous (0: 300 s) */
  void *ctx;
  /* node 0: makes `text` (NUL-terminated, under 512 bytes) available to the others. */
  int (*publish)(void *ctx, const char *text, char *err, size_t errlen);
  /* the others: node 0's text, waiting up to wait_ms for it; DD_ENOTFOUND when none came. A text
   * from an earlier attempt may come back: the joiner then finds nobody there and asks again. */
  int (*fetch)(void *ctx, char *text, size_t len, int wait_ms, char *err, size_t errlen);
  /* node 0, once every node has joined: the text may be withdrawn. May be NULL. */
  void (*withdraw)(void *ctx);
} dd_rendezvous;

/* The CPU transport across nodes (core/collective_tcp.c): within a node the CPU group above; across
 * nodes each node's local rank 0 talks to node 0's over TCP. A sum is node 0's local sum, plus node
 * 1's, plus node 2's ... in that order: every rank gets the same bits, run after run (the order
 * differs from one node's flat order, so results match a one-node run to rounding, not bits).
 * Little-endian hosts of one architecture. For testing the multi-node path and for small CPU jobs:
 * node 0 relays everything, so it is not built for speed. */
int dd_tcp_comm_group_create(dd_comm **comms, int local, const dd_rendezvous *rv, int timeout_ms, char *err,
                             size_t errlen);
void dd_tcp_comm_group_destroy(dd_comm **comms, int local);

/* A group of `size` CPU ranks in this process: comms[r] is rank r's handle, for rank r's thread.
 * timeout_ms bounds every wait (0: 60 s). Returns 0 or DD_ENOMEM / DD_EINVAL. */
int dd_cpu_comm_group_create(dd_comm **comms, int size, int timeout_ms);
/* After every rank's thread is done with its handle. */
void dd_cpu_comm_group_destroy(dd_comm **comms, int size);

#endif
