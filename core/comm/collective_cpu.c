/* The CPU collectives (see collective.h): `size` ranks, one thread each, in one process, over host
 * memory. Every collective is two steps on one mutex and condition variable:
 *
 *   post:  each rank records what it passed (operation, buffer, n, root) and waits on a
 *          generation-counted barrier. The last rank to arrive checks that all ranks called the
 *          same operation with the same n and root; a mismatch is a caller bug and aborts the group.
 *          A rank that waits longer than the group's timeout aborts the group, naming the ranks
 *          that never came. abort() wakes every waiter; a failed group completes no more posts.
 *   drain: after the post barrier every rank works on the others' buffers (allreduce: rank r sums
 *          the slice [r*n/size, (r+1)*n/size) over ranks 0..size-1 in that order and writes it
 *          into every rank's buffer; broadcast: each rank copies root's buffer into its own), then
 *          waits until all ranks have finished, so no caller gets its buffer back (and frees it)
 *          while another rank still reads or writes it. This wait is not interrupted by abort or
 *          the timeout: every rank is by then inside this file doing bounded work.
 *
 * So a collective either fails before any buffer is touched (DD_EIO, buffers unchanged) or runs
 * to completion on every rank. The group allocates everything at creation; a call allocates
 * nothing. Waits block on the condition variable (CLOCK_MONOTONIC deadlines), never spin. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm/collective.h"
#include "base/dd_error.h"

enum { CPU__ALLREDUCE, CPU__BROADCAST, CPU__BARRIER };
static const char *const cpu__op_names[] = {"allreduce", "broadcast", "barrier"};

/* What one rank passed to the collective in progress. */
typedef struct {
  int op;     /* CPU__* */
  float *buf; /* (n) */
  int64_t n;
  int root;
} cpu__post;

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* generation advanced, or the group failed */
  int size;
  int timeout_ms;
  dd_comm *comms; /* (size) the handles given out */
  /* Under mu: */
  unsigned long generation; /* barriers completed (posts and drains) */
  int arrived;              /* ranks arrived at the barrier in progress */
  unsigned char *here;      /* (size) here[r]: rank r arrived at the barrier in progress */
  cpu__post *posts;         /* (size) written at post under mu, read after the post barrier */
  int failed;
  char reason[512]; /* the first abort's reason */
} cpu__group;

/* Elements summed per block: the partial sums live on the stack (L1) while each rank's block is
 * added in, in rank order. */
#define CPU__BLOCK 512

static void cpu__fail_locked(cpu__group *g, const char *why) {
  if (g->failed) return;
  g->failed = 1;
  snprintf(g->reason, sizeof g->reason, "%s", why && why[0] ? why : "collective group aborted");
  pthread_cond_broadcast(&g->cv);
}

static void cpu__abort(dd_comm *c, const char *why) {
  cpu__group *g = c->ctx;
  pthread_mutex_lock(&g->mu);
  cpu__fail_locked(g, why);
  pthread_mutex_unlock(&g->mu);
}

/* The barrier is complete: reset the arrivals and release the waiters. */
static void cpu__complete_locked(cpu__group *g) {
  g->arrived = 0;
  memset(g->here, 0, (size_t)g->size);
  g->generation++;
  pthread_cond_broadcast(&g->cv);
}

/* Called by the last rank to arrive at a post: 0 when every rank passed the same operation, n and
 * root, else fills `why` with the first difference from rank 0. */
static int cpu__check_posts(const cpu__group *g, char *why, size_t whylen) {
  const cpu__post *p0 = &g->posts[0];
  const char *op = cpu__op_names[p0->op];
  for (int r = 1; r < g->size; r++) {
    const cpu__post *p = &g->posts[r];
    if (p->op != p0->op)
      return dd_errorf(DD_EINVAL, why, whylen, "collective mismatch: rank 0 called %s, rank %d called %s",
                       op, r, cpu__op_names[p->op]);
    if (p->n != p0->n)
      return dd_errorf(DD_EINVAL, why, whylen,
                       "%s size mismatch: rank 0 passed n=%lld, rank %d passed n=%lld", op,
                       (long long)p0->n, r, (long long)p->n);
    if (p->root != p0->root)
      return dd_errorf(DD_EINVAL, why, whylen,
                       "%s root mismatch: rank 0 passed root=%d, rank %d passed root=%d", op,
                       p0->root, r, p->root);
  }
  if (p0->n < 0)
    return dd_errorf(DD_EINVAL, why, whylen, "%s: negative n=%lld", op, (long long)p0->n);
  if (p0->op == CPU__BROADCAST && (p0->root < 0 || p0->root >= g->size))
    return dd_errorf(DD_EINVAL, why, whylen, "broadcast: root %d out of range for %d ranks",
                     p0->root, g->size);
  for (int r = 0; r < g->size; r++)
    if (p0->n > 0 && !g->posts[r].buf)
      return dd_errorf(DD_EINVAL, why, whylen, "%s: rank %d passed a NULL buffer for n=%lld", op, r,
                       (long long)p0->n);
  return 0;
}

/* Writes "rank R waited T ms in OP for rank(s) ...: timeout" (the ranks that never arrived). */
static void cpu__timeout_reason(const cpu__group *g, int rank, long waited_ms, const char *op,
                                char *why, size_t whylen) {
  int missing = 0;
  for (int r = 0; r < g->size; r++) missing += !g->here[r];
  size_t len = (size_t)snprintf(why, whylen, "rank %d waited %ld ms in %s for rank%s", rank,
                                waited_ms, op, missing == 1 ? "" : "s");
  int listed = 0;
  for (int r = 0; r < g->size && len < whylen; r++) {
    if (g->here[r]) continue;
    if (listed == 16) {
      len += (size_t)snprintf(why + len, whylen - len, ", ...");
      break;
    }
    len += (size_t)snprintf(why + len, whylen - len, "%s %d", listed ? "," : "", r);
    listed++;
  }
  if (len < whylen) snprintf(why + len, whylen - len, ": timeout");
}

static long cpu__ms_since(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Rank `rank` posts `p` and waits for the others. Returns 0 when every rank has posted the same
 * call (the posts may then be read without the mutex until the drain), or DD_EIO with the reason
 * in err: the group had failed, failed while waiting (abort, timeout) or the posts mismatch. Once
 * a post barrier completes no rank fails it, so the ranks agree on whether the call goes ahead. */
static int cpu__post_wait(cpu__group *g, int rank, const cpu__post *p, char *err, size_t errlen) {
  const char *op = cpu__op_names[p->op];
  pthread_mutex_lock(&g->mu);
  if (g->failed) goto failed;
  g->posts[rank] = *p;
  g->here[rank] = 1;
  if (++g->arrived == g->size) {
    char why[sizeof g->reason];
    if (cpu__check_posts(g, why, sizeof why) != 0) {
      cpu__fail_locked(g, why);
      goto failed;
    }
    cpu__complete_locked(g);
    pthread_mutex_unlock(&g->mu);
    return 0;
  }
  unsigned long gen = g->generation;
  struct timespec t0, deadline;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  deadline.tv_sec = t0.tv_sec + g->timeout_ms / 1000;
  deadline.tv_nsec = t0.tv_nsec + (long)(g->timeout_ms % 1000) * 1000000;
  if (deadline.tv_nsec >= 1000000000) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000;
  }
  while (g->generation == gen && !g->failed) {
    int rc = pthread_cond_timedwait(&g->cv, &g->mu, &deadline);
    if (rc == ETIMEDOUT && g->generation == gen && !g->failed) {
      char why[sizeof g->reason];
      cpu__timeout_reason(g, rank, cpu__ms_since(&t0), op, why, sizeof why);
      cpu__fail_locked(g, why);
    }
  }
  if (g->generation != gen) { /* completed before any failure: the call goes ahead */
    pthread_mutex_unlock(&g->mu);
    return 0;
  }
failed:
  dd_errorf(DD_EIO, err, errlen, "%s", g->reason);
  pthread_mutex_unlock(&g->mu);
  return DD_EIO;
}

/* After the post barrier: waits until every rank is done with the others' buffers. Not cut short
 * by abort or the timeout (see the file comment); every rank gets here after bounded work. */
static void cpu__drain(cpu__group *g) {
  pthread_mutex_lock(&g->mu);
  unsigned long gen = g->generation;
  if (++g->arrived == g->size) {
    cpu__complete_locked(g);
  } else {
    while (g->generation == gen) pthread_cond_wait(&g->cv, &g->mu);
  }
  pthread_mutex_unlock(&g->mu);
}

static int cpu__allreduce_sum(dd_comm *c, float *buf, int64_t n, char *err, size_t errlen) {
  cpu__group *g = c->ctx;
  cpu__post p = {CPU__ALLREDUCE, buf, n, 0};
  int rc = cpu__post_wait(g, c->rank, &p, err, errlen);
  if (rc != 0 || g->size == 1) return rc;
  /* This rank's slice, summed over ranks 0..size-1 in that order, written into every buffer. */
  int64_t lo = n * c->rank / g->size, hi = n * (c->rank + 1) / g->size;
  float acc[CPU__BLOCK];
  for (int64_t i0 = lo; i0 < hi; i0 += CPU__BLOCK) {
    int64_t len = hi - i0 < CPU__BLOCK ? hi - i0 : CPU__BLOCK;
    const float *b0 = g->posts[0].buf + i0;
    for (int64_t i = 0; i < len; i++) acc[i] = b0[i];
    for (int r = 1; r < g->size; r++) {
      const float *br = g->posts[r].buf + i0;
      for (int64_t i = 0; i < len; i++) acc[i] += br[i];
    }
    for (int r = 0; r < g->size; r++) memcpy(g->posts[r].buf + i0, acc, (size_t)len * sizeof(float));
  }
  cpu__drain(g);
  return 0;
}

static int cpu__broadcast(dd_comm *c, float *buf, int64_t n, int root, char *err, size_t errlen) {
  cpu__group *g = c->ctx;
  cpu__post p = {CPU__BROADCAST, buf, n, root};
  int rc = cpu__post_wait(g, c->rank, &p, err, errlen);
  if (rc != 0 || g->size == 1) return rc;
  const float *src = g->posts[root].buf;
  if (c->rank != root && n > 0 && src != buf) memcpy(buf, src, (size_t)n * sizeof(float));
  cpu__drain(g);
  return 0;
}

static int cpu__barrier(dd_comm *c, char *err, size_t errlen) {
  cpu__post p = {CPU__BARRIER, NULL, 0, 0};
  return cpu__post_wait(c->ctx, c->rank, &p, err, errlen);
}

static const dd_comm_ops cpu__comm_ops = {
    .name = "cpu",
    .allreduce_sum = cpu__allreduce_sum,
    .broadcast = cpu__broadcast,
    .barrier = cpu__barrier,
    .abort = cpu__abort,
    .group_destroy = dd_cpu_comm_group_destroy,
};

int dd_cpu_comm_group_create(dd_comm **comms, int size, int timeout_ms) {
  if (!comms || size < 1 || timeout_ms < 0) return DD_EINVAL;
  cpu__group *g = calloc(1, sizeof *g);
  if (!g) return DD_ENOMEM;
  g->size = size;
  g->timeout_ms = timeout_ms > 0 ? timeout_ms : 60000;
  g->comms = calloc((size_t)size, sizeof *g->comms);
  g->here = calloc((size_t)size, sizeof *g->here);
  g->posts = calloc((size_t)size, sizeof *g->posts);
  if (!g->comms || !g->here || !g->posts) goto fail_alloc;
  if (pthread_mutex_init(&g->mu, NULL) != 0) goto fail_alloc;
  pthread_condattr_t attr;
  if (pthread_condattr_init(&attr) != 0) goto fail_mutex;
  int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  if (rc == 0) rc = pthread_cond_init(&g->cv, &attr);
  pthread_condattr_destroy(&attr);
  if (rc != 0) goto fail_mutex;
  for (int r = 0; r < size; r++) {
    g->comms[r] = (dd_comm){&cpu__comm_ops, r, size, g};
    comms[r] = &g->comms[r];
  }
  return 0;
fail_mutex:
  pthread_mutex_destroy(&g->mu);
fail_alloc:
  free(g->posts);
  free(g->here);
  free(g->comms);
  free(g);
  return DD_ENOMEM;
}

void dd_cpu_comm_group_destroy(dd_comm **comms, int size) {
  if (!comms || size < 1 || !comms[0]) return;
  cpu__group *g = comms[0]->ctx;
  pthread_cond_destroy(&g->cv);
  pthread_mutex_destroy(&g->mu);
  free(g->posts);
  free(g->here);
  free(g->comms);
  free(g);
  for (int r = 0; r < size; r++) comms[r] = NULL;
}
