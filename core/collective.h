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
} dd_comm_ops;

struct dd_comm {
  const dd_comm_ops *ops;
  int rank, size;
  void *ctx;
};

/* A group of ranks in this process, one per device name ("cpu" ranks: the CPU collective;
 * "cuda:N" ranks: NCCL, in a build with the CUDA backend; no mixing). Each rank's thread then
 * binds its handle to the backend it created (dd_comm_bind: NCCL orders its sums on that backend's
 * stream; a no-op for CPU ranks). core/backends.c dispatches. Returns 0 or an error with a
 * message (DD_EUNSUPPORTED: GPU ranks in a build without CUDA, or NCCL not found). */
int dd_comm_group_create(dd_comm **comms, int size, const char *const *devices, int timeout_ms, char *err, size_t errlen);
int dd_comm_bind(dd_comm *c, struct dd_backend *be, char *err, size_t errlen);
void dd_comm_group_destroy(dd_comm **comms, int size);

/* The NCCL group (cuda/nccl_comm.cu): devices[r] is rank r's CUDA device. */
int dd_nccl_comm_group_create(dd_comm **comms, int size, const int *devices, char *err, size_t errlen);
int dd_nccl_comm_bind(dd_comm *c, struct dd_backend *be, char *err, size_t errlen);
void dd_nccl_comm_group_destroy(dd_comm **comms, int size);

/* A group of `size` CPU ranks in this process: comms[r] is rank r's handle, for rank r's thread.
 * timeout_ms bounds every wait (0: 60 s). Returns 0 or DD_ENOMEM / DD_EINVAL. */
int dd_cpu_comm_group_create(dd_comm **comms, int size, int timeout_ms);
/* After every rank's thread is done with its handle. */
void dd_cpu_comm_group_destroy(dd_comm **comms, int size);

#endif
