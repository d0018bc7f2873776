/* Blocking fork-join thread pool (see threadpool.h). A job is published under the mutex with a
 * generation number; workers wake on `start`, run their static share of tasks, and the last one
 * to finish signals `done`. */
#define _POSIX_C_SOURCE 200809L
#include "cpu/threadpool.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct {
  struct dd_threadpool *pool;
  int index;
} worker_arg;

struct dd_threadpool {
  int threads;
  pthread_t *tids;
  worker_arg *args;
  pthread_mutex_t mu;
  pthread_cond_t start, done;
  unsigned long generation;
  int pending; /* workers still running the current job */
  int stop;
  dd_task_fn fn;
  void *ctx;
  int n_tasks;
};

static void run_share(struct dd_threadpool *p, int t) {
  for (int task = t; task < p->n_tasks; task += p->threads) p->fn(p->ctx, task, t);
}

static void *worker(void *arg) {
  worker_arg *a = arg;
  struct dd_threadpool *p = a->pool;
  unsigned long seen = 0;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->stop && p->generation == seen) pthread_cond_wait(&p->start, &p->mu);
    if (p->stop) break;
    seen = p->generation;
    pthread_mutex_unlock(&p->mu);
    run_share(p, a->index);
    pthread_mutex_lock(&p->mu);
    if (--p->pending == 0) pthread_cond_signal(&p->done);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

dd_threadpool *dd_threadpool_create(int threads) {
  if (threads < 1) threads = 1;
  struct dd_threadpool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->threads = threads;
  p->tids = calloc((size_t)threads, sizeof *p->tids);
  p->args = calloc((size_t)threads, sizeof *p->args);
  if (!p->tids || !p->args) goto fail;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->start, NULL);
  pthread_cond_init(&p->done, NULL);
  for (int i = 1; i < threads; i++) {
    p->args[i] = (worker_arg){p, i};
    if (pthread_create(&p->tids[i], NULL, worker, &p->args[i]) != 0) {
      p->threads = i; /* stop those started */
      dd_threadpool_destroy(p);
      return NULL;
    }
  }
  return p;
fail:
  free(p->tids);
  free(p->args);
  free(p);
  return NULL;
}

void dd_threadpool_destroy(dd_threadpool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->start);
  pthread_mutex_unlock(&p->mu);
  for (int i = 1; i < p->threads; i++) pthread_join(p->tids[i], NULL);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->start);
  pthread_cond_destroy(&p->done);
  free(p->tids);
  free(p->args);
  free(p);
}

int dd_threadpool_threads(const dd_threadpool *p) { return p->threads; }

typedef struct {
  dd_range_fn fn;
  void *ctx;
  int64_t n;
  int parts;
} range_job;

static void range_task(void *ctx, int task, int thread) {
  (void)thread;
  range_job *j = ctx;
  j->fn(j->ctx, j->n * task / j->parts, j->n * (task + 1) / j->parts);
}

void dd_threadpool_range(dd_threadpool *p, int64_t n, dd_range_fn fn, void *ctx) {
  if (n <= 0) return;
  if (!p || p->threads == 1 || n < 2) {
    fn(ctx, 0, n);
    return;
  }
  range_job j = {fn, ctx, n, p->threads < n ? p->threads : (int)n};
  dd_threadpool_run(p, j.parts, range_task, &j);
}

void dd_threadpool_run(dd_threadpool *p, int n_tasks, dd_task_fn fn, void *ctx) {
  if (n_tasks <= 0) return;
  if (p->threads == 1 || n_tasks == 1) {
    for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
    return;
  }
  pthread_mutex_lock(&p->mu);
  p->fn = fn;
  p->ctx = ctx;
  p->n_tasks = n_tasks;
  p->pending = p->threads - 1;
  p->generation++;
  pthread_cond_broadcast(&p->start);
  pthread_mutex_unlock(&p->mu);
  run_share(p, 0);
  pthread_mutex_lock(&p->mu);
  while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
  pthread_mutex_unlock(&p->mu);
}
