/* The TCP transport across nodes (core/comm/collective_tcp.c; the harness: tests/test_collective_tcp.h),
 * each node a thread of this process that meets the others through an in-memory rendezvous, every
 * socket on 127.0.0.1: over 2 nodes x 2 ranks and 3 x 1, allreduce of distinct data (n = 0, 1, 3,
 * one 64K-float chunk, one float more, several chunks) is node 0's local sum + node 1's + ... bit
 * for bit on every rank (within 1e-6 of the exact sum), broadcast from roots on every node, a
 * barrier that holds everyone until the last, a hundred mixed calls; handles carry global ranks; a
 * mismatch between nodes fails every rank at once, node 0's naming it; an abort on any rank of any
 * node fails every rank of every node within moments (the group timeout is 60 s), and a node that
 * stays silent fails the others at the group timeout, named. The rendezvous:
 * tests/test_collective_rdzv.c. Every wait here is bounded: a hang fails the test. */
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdint.h>

#include "test_collective_tcp.h"

/* ---- allreduce, broadcast, barrier and many calls back to back over 2 x 2 and 3 x 1 ------------- */

/* 0, 1, a few, one 64K-float chunk exactly, one float over it, and several chunks */
static const int64_t kTcpSizes[] = {0, 1, 3, 65536, 65537, 200003};
#define N_TCP_SIZES ((int)(sizeof kTcpSizes / sizeof kTcpSizes[0]))
#define TCP_RANKS (TCP_THREADS * TCP_LOCAL)

typedef struct {
  int size;
  float *in[N_TCP_SIZES][TCP_RANKS]; /* (n) each global rank's input */
  float *want[N_TCP_SIZES];          /* (n) node 0's local sum + node 1's + ... (collective.h's order) */
  double *exact[N_TCP_SIZES];        /* (n) the sum in double */
  double *mag[N_TCP_SIZES];          /* (n) the sum of magnitudes, for the relative error */
  float *out[N_TCP_SIZES][TCP_RANKS]; /* (n) what each rank got */
  double enter[TCP_RANKS], leave[TCP_RANKS]; /* barrier times */
} tcp_case;

static void tcp_collectives_rank(tcp_scenario *s, int t, int k, dd_comm *c) {
  tcp_case *tc = s->arg;
  int g = global_rank(s, t, k), size = c->size;
  char err[512] = "";
  int rc = 0;
  double worst = 0;
  /* allreduce of distinct data, every size */
  for (int i = 0; i < N_TCP_SIZES && !rc; i++) {
    int64_t n = kTcpSizes[i];
    float *buf = tc->out[i][g];
    if (n > 0) memcpy(buf, tc->in[i][g], (size_t)n * sizeof(float));
    if ((rc = c->ops->allreduce_sum(c, buf, n, err, sizeof err))) break;
    if (n > 0 && memcmp(buf, tc->want[i], (size_t)n * sizeof(float)) != 0) s->bad[t][k]++;
    for (int64_t e = 0; e < n; e++) {
      double d = fabs((double)buf[e] - tc->exact[i][e]) / (tc->mag[i][e] > 0 ? tc->mag[i][e] : 1);
      if (d > worst) worst = d;
    }
  }
  s->rel[t][k] = worst;
  /* broadcast from rank 0, a non-leader of node 0, node 1's leader, the last rank (the last node) */
  int roots[4] = {0, 1, size / s->spec[t].nodes, size - 1};
  static const int64_t bn[] = {0, 1, 70001};
  float *bbuf = tc->out[N_TCP_SIZES - 1][g]; /* 200003 floats: room enough */
  for (int r = 0; r < 4 && !rc; r++)
    for (int i = 0; i < 3 && !rc; i++) {
      for (int64_t e = 0; e < bn[i]; e++) bbuf[e] = (float)(g * 1000) + (float)e * 0.5f;
      if ((rc = c->ops->broadcast(c, bbuf, bn[i], roots[r], err, sizeof err))) break;
      for (int64_t e = 0; e < bn[i]; e++)
        if (bbuf[e] != (float)(roots[r] * 1000) + (float)e * 0.5f) {
          s->bad[t][k]++;
          break;
        }
    }
  /* barrier: rank g arrives 30*g ms late; nobody leaves before the last has come */
  if (!rc) {
    sleep_ms(30 * g);
    tc->enter[g] = mono_ms();
    rc = c->ops->barrier(c, err, sizeof err);
    tc->leave[g] = mono_ms();
  }
  /* many small calls back to back, exact integer sums */
  float buf[8];
  for (int it = 0; it < 100 && !rc; it++) {
    int n = 1 + it % 8;
    for (int e = 0; e < n; e++) buf[e] = (float)(g * 1000 + it * 3 + e);
    if ((rc = c->ops->allreduce_sum(c, buf, n, err, sizeof err))) break;
    for (int e = 0; e < n; e++) {
      float want = 0;
      for (int q = 0; q < size; q++) want += (float)(q * 1000 + it * 3 + e);
      if (buf[e] != want) s->bad[t][k]++;
    }
    if (it % 3 == 0 && (rc = c->ops->barrier(c, err, sizeof err))) break;
    if (it % 5 == 0) {
      int root = (it / 5) % size;
      for (int e = 0; e < n; e++) buf[e] = (float)(g * 100 + e);
      if ((rc = c->ops->broadcast(c, buf, n, root, err, sizeof err))) break;
      for (int e = 0; e < n; e++)
        if (buf[e] != (float)(root * 100 + e)) s->bad[t][k]++;
    }
  }
  s->rc[t][k] = rc;
  snprintf(s->err[t][k], sizeof s->err[t][k], "%s", err);
}

static void test_tcp_collectives(void) {
  static const int shapes[][2] = {{2, 2}, {3, 1}};
  for (int sh = 0; sh < 2; sh++) {
    int nodes = shapes[sh][0], local = shapes[sh][1], size = nodes * local;
    static tcp_case tc;
    memset(&tc, 0, sizeof tc);
    tc.size = size;
    int node_order_differs = 0;
    for (int i = 0; i < N_TCP_SIZES; i++) {
      int64_t n = kTcpSizes[i];
      size_t cnt = (size_t)(n > 0 ? n : 1);
      tc.want[i] = malloc(cnt * sizeof(float));
      tc.exact[i] = malloc(cnt * sizeof(double));
      tc.mag[i] = malloc(cnt * sizeof(double));
      for (int g = 0; g < size; g++) {
        tc.in[i][g] = malloc(cnt * sizeof(float));
        tc.out[i][g] = malloc((size_t)kTcpSizes[N_TCP_SIZES - 1] * sizeof(float));
        uint64_t seed = 0xD1B54A32D192ED03ull ^ ((uint64_t)(g + 1) << 32) ^ (uint64_t)(i * 13 + size);
        for (int64_t e = 0; e < n; e++) tc.in[i][g][e] = rng_float(&seed);
      }
      for (int64_t e = 0; e < n; e++) {
        float total = 0, flat = tc.in[i][0][e];
        double ex = 0, mg = 0;
        for (int m = 0; m < nodes; m++) {
          float acc = tc.in[i][m * local][e];
          for (int q = 1; q < local; q++) acc += tc.in[i][m * local + q][e];
          total = m == 0 ? acc : total + acc;
        }
        for (int g = 0; g < size; g++) {
          if (g > 0) flat += tc.in[i][g][e];
          ex += tc.in[i][g][e];
          mg += fabs(tc.in[i][g][e]);
        }
        tc.want[i][e] = total;
        tc.exact[i][e] = ex;
        tc.mag[i][e] = mg;
        if (memcmp(&flat, &total, sizeof flat) != 0) node_order_differs = 1;
      }
    }
    tcp_scenario_init(&T, nodes, local);
    if (nodes == 3) T.spec[2].dispatch = 1; /* node 2 through dd_comm_group_create_nodes */
    /* the group's timeout is 60 s: nothing here may come near it */
    double ms = run_nodes(&T, 0, tcp_collectives_rank, &tc);
    double worst = 0;
    for (int t = 0; t < nodes; t++) {
      CHECKF(T.create_rc[t] == 0, "%d x %d node %d: %s", nodes, local, t, T.create_err[t]);
      for (int k = 0; k < local; k++) {
        CHECKF(T.rc[t][k] == 0, "%d x %d node %d rank %d: %s", nodes, local, t, k, T.err[t][k]);
        CHECKF(T.bad[t][k] == 0, "%d x %d node %d rank %d: %d wrong results", nodes, local, t, k, T.bad[t][k]);
        CHECKF(T.rel[t][k] < 1e-6, "%d x %d node %d rank %d: relative error %.3g", nodes, local, t, k, T.rel[t][k]);
        if (T.rel[t][k] > worst) worst = T.rel[t][k];
      }
    }
    /* bit-identical on every rank */
    int differ = 0;
    for (int i = 0; i < N_TCP_SIZES; i++)
      for (int g = 1; g < size; g++)
        if (kTcpSizes[i] > 0 && memcmp(tc.out[i][g], tc.out[i][0], (size_t)kTcpSizes[i] * sizeof(float)) != 0) differ++;
    CHECKF(differ == 0, "%d x %d: %d (size, rank) results differ from rank 0's bits", nodes, local, differ);
    /* the barrier held everyone until the last (rank size-1, 30*(size-1) ms late) came */
    double last_in = 0, first_out = 1e300;
    for (int g = 0; g < size; g++) {
      if (tc.enter[g] > last_in) last_in = tc.enter[g];
      if (tc.leave[g] < first_out) first_out = tc.leave[g];
    }
    CHECKF(first_out >= last_in, "%d x %d: a rank left the barrier %.1f ms before the last arrived", nodes, local,
           last_in - first_out);
    CHECK(T.rz.published == 1 && T.rz.withdrawn == 1 && !T.rz.have); /* node 0 withdrew its text */
    if (local > 1) CHECK(node_order_differs); /* so the bit-for-bit check shows the node order */
    printf("     %d nodes x %d ranks: %d allreduces (n up to %lld, chunk 65536), 12 broadcasts, a barrier, 100 "
           "mixed calls in %.0f ms; largest relative error %.2g, every rank the same bits\n",
           nodes, local, N_TCP_SIZES, (long long)kTcpSizes[N_TCP_SIZES - 1], ms, worst);
    for (int i = 0; i < N_TCP_SIZES; i++) {
      free(tc.want[i]);
      free(tc.exact[i]);
      free(tc.mag[i]);
      for (int g = 0; g < size; g++) {
        free(tc.in[i][g]);
        free(tc.out[i][g]);
      }
    }
  }
}

/* ---- creation: arguments, one node, the handles ------------------------------------------------ */

static void test_tcp_create_arguments(void) {
  dd_comm *comms[TCP_LOCAL] = {0};
  char err[512];
  dd_rendezvous one = {.nodes = 1, .node = 0, .host = "127.0.0.1"};
  /* one node needs no rendezvous at all: a CPU group behind the TCP handles */
  REQUIRE(dd_tcp_comm_group_create(comms, 2, &one, 0, err, sizeof err) == 0);
  CHECK(comms[0]->rank == 0 && comms[1]->rank == 1 && comms[0]->size == 2 && comms[1]->size == 2);
  CHECK(strcmp(comms[0]->ops->name, "cpu-tcp") == 0);
  float buf[2] = {1, 2};
  CHECK(comms[0]->ops->broadcast(comms[0], buf, 2, 2, err, sizeof err) == DD_EINVAL); /* root out of range */
  CHECK_CONTAINS(err, "root 2 out of range for 2 ranks");
  dd_tcp_comm_group_destroy(comms, 2);
  CHECK(comms[0] == NULL && comms[1] == NULL);
  dd_rendezvous bad[] = {
      {.nodes = 2, .node = 2, .publish = mem_publish, .fetch = mem_fetch},  /* node out of range */
      {.nodes = 2, .node = -1, .publish = mem_publish, .fetch = mem_fetch}, /* negative */
      {.nodes = 0, .node = 0},                                              /* no nodes */
      {.nodes = 2, .node = 0, .fetch = mem_fetch},                          /* node 0 cannot publish */
      {.nodes = 2, .node = 1, .publish = mem_publish},                      /* node 1 cannot fetch */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    CHECKF(dd_tcp_comm_group_create(comms, 1, &bad[i], 0, err, sizeof err) == DD_EINVAL, "case %zu", i);
    CHECK_CONTAINS(err, "rendezvous: node ");
  }
  CHECK(dd_tcp_comm_group_create(comms, 0, &one, 0, err, sizeof err) == DD_EINVAL);
  CHECK(dd_tcp_comm_group_create(comms, 65, &one, 0, err, sizeof err) == DD_EINVAL);
  CHECK(dd_tcp_comm_group_create(comms, 1, NULL, 0, err, sizeof err) == DD_EINVAL);
}

/* ---- mismatched calls across nodes -------------------------------------------------------------------- */

typedef struct {
  int nodes, local, odd_node; /* node odd_node calls what_odd, the others allreduce(n=10) */
  int what_odd;               /* 0 allreduce(n=12), 1 broadcast(n=10, root 0), 2 barrier first */
  const char *want;           /* in node 0's ranks' message */
} tcp_mismatch;

static void tcp_mismatch_rank(tcp_scenario *s, int t, int k, dd_comm *c) {
  const tcp_mismatch *m = s->arg;
  float buf[16] = {0};
  char err[512] = "";
  double t0 = mono_ms();
  int rc;
  if (s->spec[t].node != m->odd_node)
    rc = c->ops->allreduce_sum(c, buf, 10, err, sizeof err);
  else if (m->what_odd == 0)
    rc = c->ops->allreduce_sum(c, buf, 12, err, sizeof err);
  else if (m->what_odd == 1)
    rc = c->ops->broadcast(c, buf, 10, 0, err, sizeof err);
  else if (!(rc = c->ops->barrier(c, err, sizeof err)))
    rc = c->ops->allreduce_sum(c, buf, 10, err, sizeof err);
  s->ms[t][k] = mono_ms() - t0;
  s->rc[t][k] = rc;
  snprintf(s->err[t][k], sizeof s->err[t][k], "%s", err);
  /* the group stays failed: at once */
  t0 = mono_ms();
  s->rc2[t][k] = c->ops->barrier(c, err, sizeof err);
  s->ms2[t][k] = mono_ms() - t0;
}

static void test_tcp_mismatch_fails(void) {
  static const tcp_mismatch cases[] = {
      {2, 2, 1, 0,
       "collective mismatch at step 0: node 0 called allreduce(n=10, root=0), node 1 called allreduce(n=12, root=0)"},
      {3, 1, 2, 0,
       "collective mismatch at step 0: node 0 called allreduce(n=10, root=0), node 2 called allreduce(n=12, root=0)"},
      {2, 2, 1, 1, "node 0 called allreduce(n=10, root=0), node 1 called broadcast(n=10, root=0)"},
      {3, 1, 1, 2, "node 0 called allreduce(n=10, root=0), node 1 called barrier(n=0, root=0) at step 0"},
      {2, 2, 0, 0, "node 0 called allreduce(n=12, root=0), node 1 called allreduce(n=10, root=0)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const tcp_mismatch *m = &cases[i];
    tcp_scenario_init(&T, m->nodes, m->local);
    /* the group's timeout is 60 s: node 0's check, not a timeout, must end it */
    double ms = run_nodes(&T, 0, tcp_mismatch_rank, (void *)m);
    for (int t = 0; t < m->nodes; t++) {
      REQUIRE(T.create_rc[t] == 0);
      for (int k = 0; k < m->local; k++) {
        CHECKF(T.rc[t][k] == DD_EIO, "case %zu node %d rank %d: got %d", i, t, k, T.rc[t][k]);
        CHECKF(T.ms[t][k] < 3000, "case %zu node %d rank %d: took %.0f ms", i, t, k, T.ms[t][k]);
        CHECKF(T.rc2[t][k] == DD_EIO && T.ms2[t][k] < 500, "case %zu node %d rank %d: a later call: %d after %.0f ms",
               i, t, k, T.rc2[t][k], T.ms2[t][k]);
        /* node 0 found the mismatch and says so; the other nodes see node 0 drop them */
        if (t == 0) {
          CHECK_CONTAINS(T.err[t][k], m->want);
        } else {
          CHECK_CONTAINS(T.err[t][k], "with node 0 failed (closed: node 0 failed or was stopped)");
        }
      }
    }
    printf("     %d x %d, node %d differs: \"%s\" / node %d: \"%s\" in %.0f ms\n", m->nodes, m->local, m->odd_node,
           T.err[0][0], m->nodes - 1, T.err[m->nodes - 1][0], ms);
  }
}

/* ---- a node aborts mid-collective; a node that stays silent ------------------------------------ */

#define TCP_REASON "node-local failure: out of memory in conv1"

typedef struct {
  int nodes, local, abort_node, abort_k; /* the rank that aborts, 200 ms after the others have entered */
} tcp_abort_case;

static void tcp_abort_rank(tcp_scenario *s, int t, int k, dd_comm *c) {
  const tcp_abort_case *a = s->arg;
  float buf[5] = {1, 2, 3, 4, 5};
  char err[512] = "";
  double t0 = mono_ms();
  if (s->spec[t].node == a->abort_node && k == a->abort_k) {
    sleep_ms(200);
    c->ops->abort(c, TCP_REASON);
    c->ops->abort(c, "a second reason, to be ignored");
    s->rc[t][k] = DD_EIO;
    s->ms[t][k] = 0;
    snprintf(s->err[t][k], sizeof s->err[t][k], "%s", TCP_REASON);
  } else {
    s->rc[t][k] = c->ops->allreduce_sum(c, buf, 5, err, sizeof err);
    s->ms[t][k] = mono_ms() - t0 - 200; /* after the abort */
    snprintf(s->err[t][k], sizeof s->err[t][k], "%s", err);
  }
  t0 = mono_ms();
  int r1 = c->ops->allreduce_sum(c, buf, 5, err, sizeof err), r2 = c->ops->broadcast(c, buf, 5, 0, err, sizeof err),
      r3 = c->ops->barrier(c, err, sizeof err);
  s->rc2[t][k] = r1 == DD_EIO && r2 == DD_EIO && r3 == DD_EIO ? DD_EIO : -100;
  s->ms2[t][k] = mono_ms() - t0;
  snprintf(s->err2[t][k], sizeof s->err2[t][k], "%s", err);
}

static void test_tcp_abort(void) {
  static const tcp_abort_case cases[] = {
      {2, 2, 1, 1}, /* a non-leader of node 1 */
      {2, 2, 1, 0},  /* node 1's leader */
      {2, 2, 0, 1},  /* a non-leader of node 0 */
      {2, 2, 0, 0},  /* node 0's leader, the middle of the star */
      {3, 1, 2, 0},  /* the last of three nodes */
      {3, 1, 1, 0},  /* the middle one */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const tcp_abort_case *a = &cases[i];
    tcp_scenario_init(&T, a->nodes, a->local);
    /* the group's timeout is 60 s: only the abort can end it in time */
    double ms = run_nodes(&T, 0, tcp_abort_rank, (void *)a);
    double slowest = 0;
    for (int t = 0; t < a->nodes; t++) {
      REQUIRE(T.create_rc[t] == 0);
      for (int k = 0; k < a->local; k++) {
        CHECKF(T.rc[t][k] == DD_EIO, "case %zu node %d rank %d: got %d", i, t, k, T.rc[t][k]);
        CHECKF(T.ms[t][k] < 2000, "case %zu node %d rank %d: returned %.0f ms after the abort", i, t, k, T.ms[t][k]);
        if (T.ms[t][k] > slowest) slowest = T.ms[t][k];
        CHECKF(T.rc2[t][k] == DD_EIO && T.ms2[t][k] < 500, "case %zu node %d rank %d: later calls: %d after %.0f ms", i,
               t, k, T.rc2[t][k], T.ms2[t][k]);
        if (t == a->abort_node) {
          CHECK_CONTAINS(T.err[t][k], TCP_REASON); /* the first reason, on the aborting node */
          CHECK_CONTAINS(T.err2[t][k], TCP_REASON);
        } else if (t == 0) {
          char want[64];
          snprintf(want, sizeof want, "node 0: node %d closed its connection during allreduce", a->abort_node);
          CHECK_CONTAINS(T.err[t][k], want);
        } else {
          CHECK_CONTAINS(T.err[t][k], "allreduce with node 0 failed (closed");
        }
      }
    }
    printf("     %d x %d, node %d rank %d aborts: every rank out within %.0f ms of it (%.0f ms in all); node %d: \"%s\"\n",
           a->nodes, a->local, a->abort_node, a->abort_k, slowest, ms, a->abort_node == 0 ? a->nodes - 1 : 0,
           T.err[a->abort_node == 0 ? a->nodes - 1 : 0][0]);
  }
}

#define TCP_SHORT_MS 600

/* Node 1 stays connected but never calls (until every other rank has returned). */
static void tcp_silent_rank(tcp_scenario *s, int t, int k, dd_comm *c) {
  float buf[3] = {1, 2, 3};
  char err[512] = "";
  int others = 0;
  for (int q = 0; q < s->n_threads; q++) others += q == 1 ? 0 : s->spec[q].local;
  if (s->spec[t].node == 1) {
    double end = mono_ms() + HANG_MS / 2;
    while (atomic_load(&s->returned) < others && mono_ms() < end) sleep_ms(10);
    s->rc[t][k] = c->ops->barrier(c, err, sizeof err); /* too late: the group has failed */
    snprintf(s->err[t][k], sizeof s->err[t][k], "%s", err);
    return;
  }
  double t0 = mono_ms();
  s->rc[t][k] = c->ops->allreduce_sum(c, buf, 3, err, sizeof err);
  s->ms[t][k] = mono_ms() - t0;
  snprintf(s->err[t][k], sizeof s->err[t][k], "%s", err);
  atomic_fetch_add(&s->returned, 1);
}

static void test_tcp_silent_node_times_out(void) {
  static const int shapes[][2] = {{2, 2}, {3, 1}};
  for (int sh = 0; sh < 2; sh++) {
    int nodes = shapes[sh][0], local = shapes[sh][1];
    tcp_scenario_init(&T, nodes, local);
    double ms = run_nodes(&T, TCP_SHORT_MS, tcp_silent_rank, NULL);
    for (int t = 0; t < nodes; t++) {
      REQUIRE(T.create_rc[t] == 0);
      for (int k = 0; k < local; k++) {
        CHECKF(T.rc[t][k] == DD_EIO, "%d x %d node %d rank %d: got %d", nodes, local, t, k, T.rc[t][k]);
        if (t == 1) continue;
        CHECKF(T.ms[t][k] >= TCP_SHORT_MS - 50 && T.ms[t][k] < TCP_SHORT_MS + 2000,
               "%d x %d node %d rank %d: returned after %.0f ms (timeout %d ms)", nodes, local, t, k, T.ms[t][k],
               TCP_SHORT_MS);
      }
    }
    /* node 0's leader names the silent node */
    char want[96];
    snprintf(want, sizeof want, "node 0 waited %d ms in allreduce for node 1: timeout", TCP_SHORT_MS);
    CHECK_CONTAINS(T.err[0][0], want);
    printf("     %d x %d, node 1 silent: \"%s\" after %.0f ms; node 1 then: \"%s\" (%.0f ms in all)\n", nodes, local,
           T.err[0][0], T.ms[0][0], T.err[1][0], ms);
  }
}

int main(void) {
  RUN(test_tcp_create_arguments);
  RUN(test_tcp_collectives);
  RUN(test_tcp_mismatch_fails);
  RUN(test_tcp_abort);
  RUN(test_tcp_silent_node_times_out);
  return test_summary();
}
