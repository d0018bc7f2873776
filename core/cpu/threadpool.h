/* A small fork-join thread pool for the CPU backend. Workers block on a condition variable
 * between jobs (they never spin), because decode threads and compute threads share few cores and
 * spin-waiting pools collapse under that contention. The calling thread takes part in every job. */
#ifndef DD_THREADPOOL_H
#define DD_THREADPOOL_H

#include <stdint.h>

typedef struct dd_threadpool dd_threadpool;

/* fn(ctx, task, thread): task in [0, n_tasks), thread in [0, threads) identifies the executing
 * thread (for per-thread scratch space). */
typedef void (*dd_task_fn)(void *ctx, int task, int thread);

/* Starts `threads - 1` workers (threads >= 1). Returns NULL when out of resources. */
dd_threadpool *dd_threadpool_create(int threads);
void dd_threadpool_destroy(dd_threadpool *p);
int dd_threadpool_threads(const dd_threadpool *p);

/* Runs fn for every task and returns when all are done. Tasks are handed out statically:
 * thread t runs tasks t, t + threads, ... so a given thread count always assigns the same tasks
 * to the same threads (deterministic per-thread partial sums). Not reentrant. */
void dd_threadpool_run(dd_threadpool *p, int n_tasks, dd_task_fn fn, void *ctx);

/* fn(ctx, lo, hi) over [0, n) in one contiguous range per thread (fewer when n is smaller), or
 * inline in one call when p is NULL, has one thread, or n < 2. */
typedef void (*dd_range_fn)(void *ctx, int64_t lo, int64_t hi);
void dd_threadpool_range(dd_threadpool *p, int64_t n, dd_range_fn fn, void *ctx);

#endif
