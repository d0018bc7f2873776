/* The harness of the TCP transport's tests (tests/test_collective_tcp.c,
 * tests/test_collective_rdzv.c; core/comm/collective_tcp.c). Each node is a thread of this process:
 * it creates its group with dd_tcp_comm_group_create through an in-memory rendezvous (mem_rdzv),
 * then runs one thread per local rank and destroys the group. Every socket is on 127.0.0.1. A whole
 * scenario is bounded by HANG_MS like the CPU ones. */
#ifndef DD_TEST_COLLECTIVE_TCP_H
#define DD_TEST_COLLECTIVE_TCP_H

#include <stdatomic.h>

#include "test_collective.h"

#define TCP_THREADS 4 /* node threads at most (a duplicate claimer included) */
#define TCP_LOCAL 2   /* local ranks at most */

/* The rendezvous: node 0's text under a mutex; fetch polls it until its deadline (DD_ENOTFOUND
 * when none came). The first `bad_nonce` fetches get the text with its nonce altered (a stale text
 * from an earlier attempt, at the right address). */
typedef struct {
  pthread_mutex_t mu;
  char text[512];
  int have;      /* a text is there */
  int published; /* publish() calls */
  int fetched;   /* texts handed out */
  int withdrawn; /* withdraw() calls */
  int bad_nonce;
} mem_rdzv;

static inline int mem_publish(void *ctx, const char *text, char *err, size_t errlen) {
  mem_rdzv *z = ctx;
  (void)err, (void)errlen;
  pthread_mutex_lock(&z->mu);
  snprintf(z->text, sizeof z->text, "%s", text);
  z->have = 1;
  z->published++;
  pthread_mutex_unlock(&z->mu);
  return 0;
}

static inline int mem_fetch(void *ctx, char *text, size_t len, int wait_ms, char *err, size_t errlen) {
  mem_rdzv *z = ctx;
  double end = mono_ms() + wait_ms;
  for (;;) {
    pthread_mutex_lock(&z->mu);
    if (z->have) {
      snprintf(text, len, "%s", z->text);
      z->fetched++;
      if (z->bad_nonce > 0) { /* "tcp HOST PORT NONCE NODES LOCAL": flip the nonce's first digit */
        z->bad_nonce--;
        char *p = text;
        for (int sp = 0; sp < 3 && p; sp++) p = strchr(p + 1, ' ');
        if (p && p[1]) p[1] = p[1] == '0' ? '1' : '0';
      }
      pthread_mutex_unlock(&z->mu);
      return 0;
    }
    pthread_mutex_unlock(&z->mu);
    if (mono_ms() >= end) break;
    sleep_ms(10);
  }
  return dd_errorf(DD_ENOTFOUND, err, errlen, "rendezvous: nothing published");
}

static inline void mem_withdraw(void *ctx) {
  mem_rdzv *z = ctx;
  pthread_mutex_lock(&z->mu);
  z->have = 0;
  z->withdrawn++;
  pthread_mutex_unlock(&z->mu);
}

static inline int mem_fetched(mem_rdzv *z) {
  pthread_mutex_lock(&z->mu);
  int n = z->fetched;
  pthread_mutex_unlock(&z->mu);
  return n;
}

/* One node thread: what it claims and when it starts. */
typedef struct {
  int node, nodes, local; /* its rendezvous claims */
  int delay_ms;           /* starts this late (after the conditions below) */
  int after_fetch;        /* first waits until some joiner has fetched the text */
  int after;              /* first waits until node thread `after` has returned from creation (-1: no) */
  int dispatch;           /* through dd_comm_group_create_nodes (devices "cpu") instead */
} tcp_node_spec;

typedef struct tcp_scenario tcp_scenario;
typedef void (*tcp_rank_fn)(tcp_scenario *s, int t, int k, dd_comm *c);

struct tcp_scenario {
  int n_threads, timeout_ms, rv_timeout_ms;
  tcp_node_spec spec[TCP_THREADS];
  mem_rdzv rz;
  tcp_rank_fn fn;
  void *arg;
  /* per node thread */
  int create_rc[TCP_THREADS];
  char create_err[TCP_THREADS][512];
  double create_ms[TCP_THREADS];
  int created[TCP_THREADS]; /* creation returned (under mu) */
  int bad_handles[TCP_THREADS];
  /* per node thread and local rank */
  int rc[TCP_THREADS][TCP_LOCAL], rc2[TCP_THREADS][TCP_LOCAL], bad[TCP_THREADS][TCP_LOCAL];
  double ms[TCP_THREADS][TCP_LOCAL], ms2[TCP_THREADS][TCP_LOCAL], rel[TCP_THREADS][TCP_LOCAL];
  char err[TCP_THREADS][TCP_LOCAL][512], err2[TCP_THREADS][TCP_LOCAL][512];
  atomic_int returned; /* ranks done with their interesting call */
  /* completion, for the bounded join */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
};

/* Node threads 0..nodes-1 claim nodes 0..nodes-1 of nodes x local, all at once. */
static inline void tcp_scenario_init(tcp_scenario *s, int nodes, int local) {
  memset(s, 0, sizeof *s);
  s->n_threads = nodes;
  s->rv_timeout_ms = 10000;
  for (int t = 0; t < TCP_THREADS; t++) s->spec[t] = (tcp_node_spec){t, nodes, local, 0, 0, -1, 0};
}

typedef struct {
  tcp_scenario *s;
  int t, k;
  dd_comm *c;
} tcp_rank_arg;

static inline void *tcp_rank_main(void *p) {
  tcp_rank_arg *a = p;
  a->s->fn(a->s, a->t, a->k, a->c);
  return NULL;
}

/* Waits (bounded by HANG_MS) until cond(s, x) holds; 0 when it never did. */
static inline int tcp_wait_for(tcp_scenario *s, int (*cond)(tcp_scenario *s, int x), int x) {
  double end = mono_ms() + HANG_MS;
  while (!cond(s, x)) {
    if (mono_ms() > end) return 0;
    sleep_ms(5);
  }
  return 1;
}
static inline int cond_fetched(tcp_scenario *s, int x) { return mem_fetched(&s->rz) >= x; }
static inline int cond_created(tcp_scenario *s, int x) {
  pthread_mutex_lock(&s->mu);
  int c = s->created[x];
  pthread_mutex_unlock(&s->mu);
  return c;
}

typedef struct {
  tcp_scenario *s;
  int t;
} tcp_node_arg;

static inline void *tcp_node_main(void *p) {
  tcp_node_arg *a = p;
  tcp_scenario *s = a->s;
  int t = a->t;
  const tcp_node_spec *sp = &s->spec[t];
  if (sp->after >= 0 && !tcp_wait_for(s, cond_created, sp->after)) s->bad_handles[t]++;
  if (sp->after_fetch && !tcp_wait_for(s, cond_fetched, 1)) s->bad_handles[t]++;
  sleep_ms(sp->delay_ms);
  dd_rendezvous rv = {.nodes = sp->nodes, .node = sp->node, .host = "127.0.0.1", .timeout_ms = s->rv_timeout_ms,
                      .ctx = &s->rz, .publish = mem_publish, .fetch = mem_fetch, .withdraw = mem_withdraw};
  dd_comm *comms[TCP_LOCAL] = {0};
  static const char *const cpus[TCP_LOCAL] = {"cpu", "cpu"};
  double t0 = mono_ms();
  int rc = sp->dispatch ? dd_comm_group_create_nodes(comms, sp->local, cpus, &rv, s->timeout_ms, s->create_err[t],
                                                     sizeof s->create_err[t])
                        : dd_tcp_comm_group_create(comms, sp->local, &rv, s->timeout_ms, s->create_err[t],
                                                   sizeof s->create_err[t]);
  s->create_ms[t] = mono_ms() - t0;
  pthread_mutex_lock(&s->mu);
  s->create_rc[t] = rc;
  s->created[t] = 1;
  pthread_mutex_unlock(&s->mu);
  if (rc == 0) {
    /* global ranks: node * local + k of nodes * local, one group behind every handle */
    for (int k = 0; k < sp->local; k++)
      if (!comms[k] || comms[k]->rank != sp->node * sp->local + k || comms[k]->size != sp->nodes * sp->local ||
          strcmp(comms[k]->ops->name, "cpu-tcp") != 0 || comms[k]->ctx != comms[0]->ctx || comms[k]->ops != comms[0]->ops)
        s->bad_handles[t]++;
    pthread_t th[TCP_LOCAL];
    tcp_rank_arg ra[TCP_LOCAL];
    for (int k = 0; k < sp->local; k++) {
      ra[k] = (tcp_rank_arg){s, t, k, comms[k]};
      if (pthread_create(&th[k], NULL, tcp_rank_main, &ra[k]) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        exit(1);
      }
    }
    for (int k = 0; k < sp->local; k++) pthread_join(th[k], NULL);
    if (sp->dispatch)
      dd_comm_group_destroy(comms, sp->local);
    else
      dd_tcp_comm_group_destroy(comms, sp->local);
    for (int k = 0; k < sp->local; k++)
      if (comms[k]) s->bad_handles[t]++;
  }
  pthread_mutex_lock(&s->mu);
  s->done++;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/* Runs the scenario's node threads (fn on every local rank of every node that joined) and returns
 * once all are done, in ms; not done within HANG_MS is a hang: reported, and the process exits. */
static inline double run_nodes(tcp_scenario *s, int timeout_ms, tcp_rank_fn fn, void *arg) {
  s->timeout_ms = timeout_ms;
  s->fn = fn;
  s->arg = arg;
  pthread_mutex_init(&s->rz.mu, NULL);
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cv, &attr);
  pthread_condattr_destroy(&attr);
  pthread_t th[TCP_THREADS];
  tcp_node_arg na[TCP_THREADS];
  double t0 = mono_ms();
  for (int t = 0; t < s->n_threads; t++) {
    na[t] = (tcp_node_arg){s, t};
    if (pthread_create(&th[t], NULL, tcp_node_main, &na[t]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      exit(1);
    }
  }
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += HANG_MS / 1000;
  pthread_mutex_lock(&s->mu);
  while (s->done < s->n_threads)
    if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) != 0 && s->done < s->n_threads) {
      fprintf(stderr, "%s: HANG: %d of %d nodes still running after %d ms\n", test__name, s->n_threads - s->done,
              s->n_threads, HANG_MS);
      exit(1);
    }
  pthread_mutex_unlock(&s->mu);
  for (int t = 0; t < s->n_threads; t++) pthread_join(th[t], NULL);
  double ms = mono_ms() - t0;
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  pthread_mutex_destroy(&s->rz.mu);
  for (int t = 0; t < s->n_threads; t++)
    CHECKF(s->bad_handles[t] == 0, "node thread %d: %d bad handles (rank, size, ops) or waits", t, s->bad_handles[t]);
  return ms;
}

static tcp_scenario T; /* one at a time */

static inline int global_rank(const tcp_scenario *s, int t, int k) { return s->spec[t].node * s->spec[t].local + k; }

#endif
