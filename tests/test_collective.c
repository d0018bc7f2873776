/* The CPU collectives (core/collective_cpu.c) with 1 to 4 ranks, one thread each: allreduce equals
 * the sum over ranks 0..size-1 taken in that order, bit for bit, on every rank (n = 0, n < size, a
 * large odd n); hundreds of calls back to back; broadcast from every root; abort from a rank or
 * from another thread wakes every waiting rank with DD_EIO and the reason, and later calls fail at
 * once; a rank that never arrives makes the others time out; mismatched calls (n, operation, root)
 * fail on every rank with a message.
 *
 * The TCP transport across nodes (core/collective_tcp.c), each node a thread of this process that
 * meets the others through an in-memory rendezvous, every socket on 127.0.0.1: over 2 nodes x 2
 * ranks and 3 x 1, allreduce of distinct data (n = 0, 1, 3, one 64K-float chunk, one float more,
 * several chunks) is node 0's local sum + node 1's + ... bit for bit on every rank (within 1e-6 of
 * the exact sum), broadcast from roots on every node, a barrier that holds everyone until the last,
 * a hundred mixed calls; handles carry global ranks; a mismatch between nodes fails every rank at
 * once, node 0's naming it; an abort on any rank of any node fails every rank of every node within
 * moments (the group timeout is 60 s), and a node that stays silent fails the others at the group
 * timeout, named; the rendezvous names a node that never came, survives stale texts (a dead port,
 * another nonce), and refuses a node index claimed twice and a joiner with other counts.
 * Every wait here is bounded: a hang fails the test. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "comm/collective.h"
#include "devices/devices.h"
#include "base/dd_error.h"
#include "test.h"

#define MAX_RANKS 4
/* How long a whole multi-rank scenario may take before the test calls it a hang. */
#define HANG_MS 20000

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void sleep_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&t, NULL);
}

/* xorshift, one stream per (rank, case): values of mixed sign and magnitude, so the order of a
 * float sum changes its bits. */
static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}
static float rng_float(uint64_t *s) {
  uint64_t x = rng_next(s);
  float u = (float)(x >> 40) / (float)(1u << 24) - 0.5f; /* [-0.5, 0.5) */
  static const float scale[] = {1e-3f, 1.0f, 1e3f, 1e6f};
  return u * scale[(x >> 8) & 3];
}

/* ---- running one function per rank, with a bounded wait for all of them -------------------- */

typedef struct scenario scenario;
typedef void (*rank_fn)(scenario *s, int rank);

/* What every rank's thread sees; each rank writes only its own slots of the result arrays, and the
 * main thread reads them after joining. */
struct scenario {
  dd_comm *comms[MAX_RANKS];
  int size;
  rank_fn fn;
  void *arg;
  /* per-rank results */
  int rc[MAX_RANKS];
  int bad[MAX_RANKS];  /* wrong results seen */
  int rc2[MAX_RANKS];  /* a later call's result */
  double ms[MAX_RANKS]; /* how long the interesting call took */
  double ms2[MAX_RANKS];
  char err[MAX_RANKS][512];
  char err2[MAX_RANKS][512];
  /* completion, for the bounded join */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
};

typedef struct {
  scenario *s;
  int rank;
} rank_arg;

static void *rank_main(void *p) {
  rank_arg *a = p;
  a->s->fn(a->s, a->rank);
  pthread_mutex_lock(&a->s->mu);
  a->s->done++;
  pthread_cond_signal(&a->s->cv);
  pthread_mutex_unlock(&a->s->mu);
  return NULL;
}

/* Creates a group of `size` ranks and runs fn on one thread per rank; returns when all are done.
 * A scenario that is not done within HANG_MS is a hang: reported and the process exits (its
 * threads still hold the scenario). `outside` (may be NULL) runs on the calling thread once the
 * ranks are started. Returns the wall time in ms. */
static double run_ranks(scenario *s, int size, int timeout_ms, rank_fn fn, void *arg,
                        void (*outside)(scenario *s)) {
  memset(s, 0, sizeof *s);
  s->size = size;
  s->fn = fn;
  s->arg = arg;
  if (dd_cpu_comm_group_create(s->comms, size, timeout_ms) != 0) {
    fprintf(stderr, "dd_cpu_comm_group_create(%d) failed\n", size);
    exit(1);
  }
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cv, &attr);
  pthread_condattr_destroy(&attr);
  pthread_t tids[MAX_RANKS];
  rank_arg args[MAX_RANKS];
  double t0 = now_ms();
  for (int r = 0; r < size; r++) {
    args[r] = (rank_arg){s, r};
    if (pthread_create(&tids[r], NULL, rank_main, &args[r]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      exit(1);
    }
  }
  if (outside) outside(s);
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += HANG_MS / 1000;
  pthread_mutex_lock(&s->mu);
  while (s->done < size)
    if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) != 0 && s->done < size) {
      fprintf(stderr, "%s: HANG: %d of %d ranks still running after %d ms\n", test__name,
              size - s->done, size, HANG_MS);
      exit(1);
    }
  pthread_mutex_unlock(&s->mu);
  for (int r = 0; r < size; r++) pthread_join(tids[r], NULL);
  double ms = now_ms() - t0;
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  dd_cpu_comm_group_destroy(s->comms, size);
  for (int r = 0; r < size; r++) CHECK(s->comms[r] == NULL);
  return ms;
}

static scenario S; /* one at a time */

/* ---- allreduce against the ordered serial sum ------------------------------------------------ */

static const int64_t kSizes[] = {0, 1, 2, 3, 5, 64, 511, 512, 513, 4099, 262147};
#define N_SIZES ((int)(sizeof kSizes / sizeof kSizes[0]))

typedef struct {
  float *in[N_SIZES][MAX_RANKS]; /* (n) each rank's input */
  float *want[N_SIZES];          /* (n) in[0] + in[1] + ... in that order */
} allreduce_case;

static void allreduce_rank(scenario *s, int rank) {
  allreduce_case *c = s->arg;
  char err[256];
  for (int k = 0; k < N_SIZES; k++) {
    int64_t n = kSizes[k];
    float *buf = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (n > 0) memcpy(buf, c->in[k][rank], (size_t)n * sizeof(float));
    int rc = s->comms[rank]->ops->allreduce_sum(s->comms[rank], buf, n, err, sizeof err);
    if (rc != 0) {
      s->rc[rank] = rc;
      snprintf(s->err[rank], sizeof s->err[rank], "%s", err);
    } else if (n > 0 && memcmp(buf, c->want[k], (size_t)n * sizeof(float)) != 0) {
      s->bad[rank]++;
    }
    free(buf);
  }
}

static void test_allreduce_ordered_sum(void) {
  allreduce_case c;
  int order_matters = 0;
  for (int size = 1; size <= MAX_RANKS; size++) {
    for (int k = 0; k < N_SIZES; k++) {
      int64_t n = kSizes[k];
      size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
      c.want[k] = malloc(bytes);
      for (int r = 0; r < size; r++) {
        c.in[k][r] = malloc(bytes);
        uint64_t seed = 0x9E3779B97F4A7C15ull ^ ((uint64_t)(r + 1) << 32) ^ (uint64_t)(k * 7 + size);
        for (int64_t i = 0; i < n; i++) c.in[k][r][i] = rng_float(&seed);
      }
      for (int64_t i = 0; i < n; i++) {
        float acc = c.in[k][0][i];
        for (int r = 1; r < size; r++) acc += c.in[k][r][i];
        c.want[k][i] = acc;
        /* the reversed order: the data must be such that the order shows in the bits */
        float rev = c.in[k][size - 1][i];
        for (int r = size - 2; r >= 0; r--) rev += c.in[k][r][i];
        if (memcmp(&rev, &acc, sizeof acc) != 0) order_matters = 1;
      }
    }
    double ms = run_ranks(&S, size, 0, allreduce_rank, &c, NULL);
    for (int r = 0; r < size; r++) {
      CHECKF(S.rc[r] == 0, "size %d rank %d: %s: %s", size, r, dd_strerror(S.rc[r]), S.err[r]);
      CHECKF(S.bad[r] == 0, "size %d rank %d: %d of %d sizes differ from the ordered sum", size, r,
             S.bad[r], N_SIZES);
    }
    printf("     %d rank(s): %d allreduces (n up to %lld) in %.1f ms\n", size, N_SIZES,
           (long long)kSizes[N_SIZES - 1], ms);
    for (int k = 0; k < N_SIZES; k++) {
      free(c.want[k]);
      for (int r = 0; r < size; r++) free(c.in[k][r]);
    }
  }
  CHECK(order_matters); /* otherwise the bit-for-bit check proves nothing about the order */
}

/* ---- many calls back to back: allreduce, broadcast and barrier interleaved --------------------- */

#define REPEATS 200

static void repeated_rank(scenario *s, int rank) {
  dd_comm *c = s->comms[rank];
  char err[256];
  float buf[8];
  for (int it = 0; it < REPEATS && s->rc[rank] == 0; it++) {
    int n = 1 + it % 8;
    /* integers well inside float precision: the exact sum is known */
    for (int i = 0; i < n; i++) buf[i] = (float)(rank * 1000 + it * 3 + i);
    int rc = c->ops->allreduce_sum(c, buf, n, err, sizeof err);
    if (rc == 0)
      for (int i = 0; i < n; i++) {
        float want = 0;
        for (int r = 0; r < s->size; r++) want += (float)(r * 1000 + it * 3 + i);
        if (buf[i] != want) s->bad[rank]++;
      }
    if (rc == 0 && it % 3 == 0) rc = c->ops->barrier(c, err, sizeof err);
    if (rc == 0 && it % 5 == 0) {
      int root = it % s->size;
      for (int i = 0; i < n; i++) buf[i] = (float)(rank * 100 + i);
      rc = c->ops->broadcast(c, buf, n, root, err, sizeof err);
      if (rc == 0)
        for (int i = 0; i < n; i++)
          if (buf[i] != (float)(root * 100 + i)) s->bad[rank]++;
    }
    if (rc != 0) {
      s->rc[rank] = rc;
      snprintf(s->err[rank], sizeof s->err[rank], "iteration %d: %s", it, err);
    }
  }
}

static void test_allreduce_repeated(void) {
  for (int size = 1; size <= MAX_RANKS; size++) {
    double ms = run_ranks(&S, size, 0, repeated_rank, NULL, NULL);
    for (int r = 0; r < size; r++) {
      CHECKF(S.rc[r] == 0, "size %d rank %d: %s", size, r, S.err[r]);
      CHECKF(S.bad[r] == 0, "size %d rank %d: %d wrong values", size, r, S.bad[r]);
    }
    printf("     %d rank(s): %d allreduces + barriers + broadcasts in %.1f ms\n", size, REPEATS, ms);
  }
}

/* ---- broadcast from every root ----------------------------------------------------------------- */

static void broadcast_rank(scenario *s, int rank) {
  dd_comm *c = s->comms[rank];
  static const int64_t ns[] = {0, 1, 3, 1001};
  char err[256];
  float buf[1001];
  for (int root = 0; root < s->size; root++)
    for (int k = 0; k < 4; k++) {
      int64_t n = ns[k];
      for (int64_t i = 0; i < n; i++) buf[i] = (float)rank + (float)i * 0.25f;
      int rc = c->ops->broadcast(c, buf, n, root, err, sizeof err);
      if (rc != 0) {
        s->rc[rank] = rc;
        snprintf(s->err[rank], sizeof s->err[rank], "%s", err);
        return;
      }
      for (int64_t i = 0; i < n; i++)
        if (buf[i] != (float)root + (float)i * 0.25f) s->bad[rank]++;
    }
}

static void test_broadcast(void) {
  for (int size = 1; size <= MAX_RANKS; size++) {
    run_ranks(&S, size, 0, broadcast_rank, NULL, NULL);
    for (int r = 0; r < size; r++) {
      CHECKF(S.rc[r] == 0, "size %d rank %d: %s", size, r, S.err[r]);
      CHECKF(S.bad[r] == 0, "size %d rank %d: %d wrong values", size, r, S.bad[r]);
    }
  }
}

/* ---- abort ---------------------------------------------------------------------------------------- */

#define REASON "rank 0: out of memory in conv1"

/* Rank 0 lets the others block in allreduce, then aborts (twice: the first reason stays); or, with
 * s->arg set, the others block, another thread aborts, and rank 0 calls allreduce only after that.
 * Every rank then checks that a later allreduce, broadcast and barrier fail at once. */
static void abort_rank(scenario *s, int rank) {
  dd_comm *c = s->comms[rank];
  int from_main = s->arg != NULL;
  float buf[5] = {1, 2, 3, 4, 5};
  char err[512] = "";
  double t0 = now_ms();
  if (rank == 0 && !from_main) {
    sleep_ms(100);
    c->ops->abort(c, REASON);
    c->ops->abort(c, "a second reason, to be ignored");
    s->rc[rank] = DD_EIO;
    snprintf(s->err[rank], sizeof s->err[rank], "%s", REASON);
  } else {
    if (rank == 0) { /* from_main: rank 0 comes late, after the abort, and must fail at once */
      sleep_ms(300);
      t0 = now_ms();
    }
    s->rc[rank] = c->ops->allreduce_sum(c, buf, 5, err, sizeof err);
    s->ms[rank] = now_ms() - t0;
    snprintf(s->err[rank], sizeof s->err[rank], "%s", err);
    for (int i = 0; i < 5; i++)
      if (buf[i] != (float)(i + 1)) s->bad[rank]++; /* a failed call leaves the buffer alone */
  }
  /* later calls: DD_EIO at once, with the first reason */
  t0 = now_ms();
  int rc = c->ops->allreduce_sum(c, buf, 5, err, sizeof err);
  int rc_b = c->ops->broadcast(c, buf, 5, 0, err, sizeof err);
  int rc_c = c->ops->barrier(c, err, sizeof err);
  s->ms2[rank] = now_ms() - t0;
  s->rc2[rank] = rc == DD_EIO && rc_b == DD_EIO && rc_c == DD_EIO ? DD_EIO : -100;
  snprintf(s->err2[rank], sizeof s->err2[rank], "%s", err);
}

/* Another thread (not a rank's) aborts while every rank waits in allreduce. */
static void abort_outside(scenario *s) {
  sleep_ms(100);
  s->comms[s->size - 1]->ops->abort(s->comms[s->size - 1], REASON);
}

static void check_abort(int size, const char *how) {
  int late = strcmp(how, "abort from outside") == 0; /* rank 0 called after the abort */
  for (int r = 0; r < size; r++) {
    CHECKF(S.rc[r] == DD_EIO, "%s, size %d rank %d: got %d", how, size, r, S.rc[r]);
    CHECK_CONTAINS(S.err[r], REASON);
    CHECKF(S.ms[r] < (late && r == 0 ? 100 : 2000),
           "%s, size %d rank %d: took %.0f ms to notice the abort", how, size, r, S.ms[r]);
    CHECKF(S.bad[r] == 0, "%s, size %d rank %d: a failed allreduce changed the buffer", how, size, r);
    CHECKF(S.rc2[r] == DD_EIO, "%s, size %d rank %d: a later call did not fail", how, size, r);
    CHECK_CONTAINS(S.err2[r], REASON);
    CHECKF(S.ms2[r] < 500, "%s, size %d rank %d: later calls took %.0f ms", how, size, r, S.ms2[r]);
  }
}

static void test_abort_wakes_everyone(void) {
  for (int size = 1; size <= MAX_RANKS; size++) {
    /* with 1 rank there is nobody to wake: only the later calls are checked */
    double ms = run_ranks(&S, size, 0, abort_rank, NULL, NULL);
    check_abort(size, "abort by rank 0");
    printf("     %d rank(s): rank 0 aborts after 100 ms; all returned in %.0f ms\n", size, ms);
  }
  for (int size = 2; size <= MAX_RANKS; size++) { /* 1 rank would not wait */
    /* the group's timeout is 60 s: only the abort can wake them in time */
    run_ranks(&S, size, 0, abort_rank, &S, abort_outside);
    check_abort(size, "abort from outside");
    printf("     %d rank(s): another thread aborts after 100 ms; waiting ranks returned in %.0f ms, "
           "rank 0 (called late) in %.1f ms\n", size, S.ms[1], S.ms[0]);
  }
}

/* ---- a rank that never arrives ------------------------------------------------------------------ */

#define SHORT_TIMEOUT_MS 300

/* Ranks >= s->arg's value return at once without calling anything; the others call the
 * collective named by `op` and must time out. */
typedef struct {
  int first_missing;
  int op; /* 0 allreduce, 1 broadcast, 2 barrier */
} missing_case;

static void missing_rank(scenario *s, int rank) {
  missing_case *m = s->arg;
  if (rank >= m->first_missing) return;
  dd_comm *c = s->comms[rank];
  float buf[3] = {1, 2, 3};
  char err[512] = "";
  double t0 = now_ms();
  if (m->op == 0)
    s->rc[rank] = c->ops->allreduce_sum(c, buf, 3, err, sizeof err);
  else if (m->op == 1)
    s->rc[rank] = c->ops->broadcast(c, buf, 3, 0, err, sizeof err);
  else
    s->rc[rank] = c->ops->barrier(c, err, sizeof err);
  s->ms[rank] = now_ms() - t0;
  snprintf(s->err[rank], sizeof s->err[rank], "%s", err);
  for (int i = 0; i < 3; i++)
    if (buf[i] != (float)(i + 1)) s->bad[rank]++;
  /* the group stays failed */
  s->rc2[rank] = c->ops->barrier(c, err, sizeof err);
  snprintf(s->err2[rank], sizeof s->err2[rank], "%s", err);
}

static void test_missing_rank_times_out(void) {
  static const struct {
    int size, first_missing, op;
    const char *want;
  } cases[] = {
      {2, 1, 0, " ms in allreduce for rank 1: timeout"},
      {3, 2, 0, " ms in allreduce for rank 2: timeout"},
      {4, 2, 0, " ms in allreduce for ranks 2, 3: timeout"},
      {4, 1, 1, " ms in broadcast for ranks 1, 2, 3: timeout"},
      {3, 1, 2, " ms in barrier for ranks 1, 2: timeout"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    missing_case m = {cases[k].first_missing, cases[k].op};
    double ms = run_ranks(&S, cases[k].size, SHORT_TIMEOUT_MS, missing_rank, &m, NULL);
    double longest = 0;
    for (int r = 0; r < m.first_missing; r++) {
      CHECKF(S.rc[r] == DD_EIO, "case %zu rank %d: got %d", k, r, S.rc[r]);
      CHECK_CONTAINS(S.err[r], cases[k].want);
      CHECK_CONTAINS(S.err[r], "waited ");
      /* the first rank to time out aborts the group; the others may have waited a little less */
      CHECKF(S.ms[r] < SHORT_TIMEOUT_MS + 1500, "case %zu rank %d: returned after %.0f ms (timeout %d ms)",
             k, r, S.ms[r], SHORT_TIMEOUT_MS);
      if (S.ms[r] > longest) longest = S.ms[r];
      CHECKF(S.bad[r] == 0, "case %zu rank %d: a failed call changed the buffer", k, r);
      CHECKF(S.rc2[r] == DD_EIO, "case %zu rank %d: the group did not stay failed", k, r);
      CHECK_CONTAINS(S.err2[r], cases[k].want);
    }
    CHECKF(longest >= SHORT_TIMEOUT_MS - 1, "case %zu: no rank waited the timeout (longest %.1f ms)", k,
           longest);
    printf("     %d of %d ranks present: \"%s\" after %.0f ms\n", m.first_missing, cases[k].size,
           S.err[0], ms);
  }
}

/* ---- mismatched calls: a caller bug, reported on every rank ------------------------------------- */

typedef struct {
  int64_t n[MAX_RANKS];
  int op[MAX_RANKS]; /* 0 allreduce, 1 broadcast */
  int root[MAX_RANKS];
} mismatch_case;

static void mismatch_rank(scenario *s, int rank) {
  mismatch_case *m = s->arg;
  dd_comm *c = s->comms[rank];
  float buf[16] = {0};
  char err[512] = "";
  double t0 = now_ms();
  if (m->op[rank] == 0)
    s->rc[rank] = c->ops->allreduce_sum(c, buf, m->n[rank], err, sizeof err);
  else
    s->rc[rank] = c->ops->broadcast(c, buf, m->n[rank], m->root[rank], err, sizeof err);
  s->ms[rank] = now_ms() - t0;
  snprintf(s->err[rank], sizeof s->err[rank], "%s", err);
}

static void test_mismatch_fails(void) {
  static const struct {
    int size;
    mismatch_case m;
    const char *want;
  } cases[] = {
      {2, {{10, 12}, {0, 0}, {0, 0}}, "allreduce size mismatch: rank 0 passed n=10, rank 1 passed n=12"},
      {3, {{10, 10, 12}, {0}, {0}}, "allreduce size mismatch: rank 0 passed n=10, rank 2 passed n=12"},
      {4, {{0, 0, 0, 16}, {0}, {0}}, "allreduce size mismatch: rank 0 passed n=0, rank 3 passed n=16"},
      {2, {{4, 4}, {0, 1}, {0}}, "collective mismatch: rank 0 called allreduce, rank 1 called broadcast"},
      {3, {{4, 4, 4}, {1, 1, 1}, {0, 1, 0}}, "broadcast root mismatch: rank 0 passed root=0, rank 1 passed root=1"},
      {2, {{4, 4}, {1, 1}, {2, 2}}, "broadcast: root 2 out of range for 2 ranks"},
      {2, {{-1, -1}, {0, 0}, {0}}, "allreduce: negative n=-1"},
      {1, {{4}, {1}, {1}}, "broadcast: root 1 out of range for 1 ranks"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    mismatch_case m = cases[k].m;
    /* the group's timeout is 60 s: the check, not a timeout, must end it */
    run_ranks(&S, cases[k].size, 0, mismatch_rank, &m, NULL);
    for (int r = 0; r < cases[k].size; r++) {
      CHECKF(S.rc[r] == DD_EIO, "case %zu rank %d: got %d", k, r, S.rc[r]);
      CHECK_CONTAINS(S.err[r], cases[k].want);
      CHECKF(S.ms[r] < 2000, "case %zu rank %d: took %.0f ms", k, r, S.ms[r]);
    }
  }
}

/* ---- creation ----------------------------------------------------------------------------------- */

static void test_create_arguments(void) {
  dd_comm *comms[MAX_RANKS];
  CHECK(dd_cpu_comm_group_create(comms, 0, 0) == DD_EINVAL);
  CHECK(dd_cpu_comm_group_create(comms, -1, 0) == DD_EINVAL);
  CHECK(dd_cpu_comm_group_create(comms, 2, -1) == DD_EINVAL);
  CHECK(dd_cpu_comm_group_create(NULL, 2, 0) == DD_EINVAL);
  REQUIRE(dd_cpu_comm_group_create(comms, 3, 0) == 0);
  for (int r = 0; r < 3; r++) {
    CHECK(comms[r]->rank == r);
    CHECK(comms[r]->size == 3);
    CHECK(comms[r]->ops == comms[0]->ops);
  }
  CHECK(strcmp(comms[0]->ops->name, "cpu") == 0);
  dd_cpu_comm_group_destroy(comms, 3);
}

/* ==== the TCP transport across nodes (core/collective_tcp.c) =======================================
 * Each node is a thread of this process: it creates its group with dd_tcp_comm_group_create through
 * an in-memory rendezvous (mem_rdzv), then runs one thread per local rank and destroys the group.
 * Every socket is on 127.0.0.1. A whole scenario is bounded by HANG_MS like the CPU ones. */

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

static int mem_publish(void *ctx, const char *text, char *err, size_t errlen) {
  mem_rdzv *z = ctx;
  (void)err, (void)errlen;
  pthread_mutex_lock(&z->mu);
  snprintf(z->text, sizeof z->text, "%s", text);
  z->have = 1;
  z->published++;
  pthread_mutex_unlock(&z->mu);
  return 0;
}

static int mem_fetch(void *ctx, char *text, size_t len, int wait_ms, char *err, size_t errlen) {
  mem_rdzv *z = ctx;
  double end = now_ms() + wait_ms;
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
    if (now_ms() >= end) break;
    sleep_ms(10);
  }
  return dd_errorf(DD_ENOTFOUND, err, errlen, "rendezvous: nothing published");
}

static void mem_withdraw(void *ctx) {
  mem_rdzv *z = ctx;
  pthread_mutex_lock(&z->mu);
  z->have = 0;
  z->withdrawn++;
  pthread_mutex_unlock(&z->mu);
}

static int mem_fetched(mem_rdzv *z) {
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
static void tcp_scenario_init(tcp_scenario *s, int nodes, int local) {
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

static void *tcp_rank_main(void *p) {
  tcp_rank_arg *a = p;
  a->s->fn(a->s, a->t, a->k, a->c);
  return NULL;
}

/* Waits (bounded by HANG_MS) until cond(s, x) holds; 0 when it never did. */
static int tcp_wait_for(tcp_scenario *s, int (*cond)(tcp_scenario *s, int x), int x) {
  double end = now_ms() + HANG_MS;
  while (!cond(s, x)) {
    if (now_ms() > end) return 0;
    sleep_ms(5);
  }
  return 1;
}
static int cond_fetched(tcp_scenario *s, int x) { return mem_fetched(&s->rz) >= x; }
static int cond_created(tcp_scenario *s, int x) {
  pthread_mutex_lock(&s->mu);
  int c = s->created[x];
  pthread_mutex_unlock(&s->mu);
  return c;
}

typedef struct {
  tcp_scenario *s;
  int t;
} tcp_node_arg;

static void *tcp_node_main(void *p) {
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
  double t0 = now_ms();
  int rc = sp->dispatch ? dd_comm_group_create_nodes(comms, sp->local, cpus, &rv, s->timeout_ms, s->create_err[t],
                                                     sizeof s->create_err[t])
                        : dd_tcp_comm_group_create(comms, sp->local, &rv, s->timeout_ms, s->create_err[t],
                                                   sizeof s->create_err[t]);
  s->create_ms[t] = now_ms() - t0;
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
static double run_nodes(tcp_scenario *s, int timeout_ms, tcp_rank_fn fn, void *arg) {
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
  double t0 = now_ms();
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
  double ms = now_ms() - t0;
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  pthread_mutex_destroy(&s->rz.mu);
  for (int t = 0; t < s->n_threads; t++)
    CHECKF(s->bad_handles[t] == 0, "node thread %d: %d bad handles (rank, size, ops) or waits", t, s->bad_handles[t]);
  return ms;
}

static tcp_scenario T; /* one at a time */

static int global_rank(const tcp_scenario *s, int t, int k) { return s->spec[t].node * s->spec[t].local + k; }

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
    tc->enter[g] = now_ms();
    rc = c->ops->barrier(c, err, sizeof err);
    tc->leave[g] = now_ms();
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
  double t0 = now_ms();
  int rc;
  if (s->spec[t].node != m->odd_node)
    rc = c->ops->allreduce_sum(c, buf, 10, err, sizeof err);
  else if (m->what_odd == 0)
    rc = c->ops->allreduce_sum(c, buf, 12, err, sizeof err);
  else if (m->what_odd == 1)
    rc = c->ops->broadcast(c, buf, 10, 0, err, sizeof err);
  else if (!(rc = c->ops->barrier(c, err, sizeof err)))
    rc = c->ops->allreduce_sum(c, buf, 10, err, sizeof err);
  s->ms[t][k] = now_ms() - t0;
  s->rc[t][k] = rc;
  snprintf(s->err[t][k], sizeof s->err[t][k], "%s", err);
  /* the group stays failed: at once */
  t0 = now_ms();
  s->rc2[t][k] = c->ops->barrier(c, err, sizeof err);
  s->ms2[t][k] = now_ms() - t0;
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
  double t0 = now_ms();
  if (s->spec[t].node == a->abort_node && k == a->abort_k) {
    sleep_ms(200);
    c->ops->abort(c, TCP_REASON);
    c->ops->abort(c, "a second reason, to be ignored");
    s->rc[t][k] = DD_EIO;
    s->ms[t][k] = 0;
    snprintf(s->err[t][k], sizeof s->err[t][k], "%s", TCP_REASON);
  } else {
    s->rc[t][k] = c->ops->allreduce_sum(c, buf, 5, err, sizeof err);
    s->ms[t][k] = now_ms() - t0 - 200; /* after the abort */
    snprintf(s->err[t][k], sizeof s->err[t][k], "%s", err);
  }
  t0 = now_ms();
  int r1 = c->ops->allreduce_sum(c, buf, 5, err, sizeof err), r2 = c->ops->broadcast(c, buf, 5, 0, err, sizeof err),
      r3 = c->ops->barrier(c, err, sizeof err);
  s->rc2[t][k] = r1 == DD_EIO && r2 == DD_EIO && r3 == DD_EIO ? DD_EIO : -100;
  s->ms2[t][k] = now_ms() - t0;
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
    double end = now_ms() + HANG_MS / 2;
    while (atomic_load(&s->returned) < others && now_ms() < end) sleep_ms(10);
    s->rc[t][k] = c->ops->barrier(c, err, sizeof err); /* too late: the group has failed */
    snprintf(s->err[t][k], sizeof s->err[t][k], "%s", err);
    return;
  }
  double t0 = now_ms();
  s->rc[t][k] = c->ops->allreduce_sum(c, buf, 3, err, sizeof err);
  s->ms[t][k] = now_ms() - t0;
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

/* ---- the rendezvous: missing nodes, stale texts, a node index taken twice, other counts ---------- */

#define TCP_RV_MS 1500

/* Every rank that got a group: one allreduce of (global rank + 1), which must sum to size(size+1)/2. */
static void tcp_sum_rank(tcp_scenario *s, int t, int k, dd_comm *c) {
  float v = (float)(c->rank + 1);
  char err[512] = "";
  s->rc[t][k] = c->ops->allreduce_sum(c, &v, 1, err, sizeof err);
  if (v != (float)(c->size * (c->size + 1) / 2)) s->bad[t][k]++;
  snprintf(s->err[t][k], sizeof s->err[t][k], "%s", err);
}

static void check_group_worked(const char *what, int n_threads, int skip) {
  for (int t = 0; t < n_threads; t++) {
    if (t == skip) continue;
    CHECKF(T.create_rc[t] == 0, "%s: node thread %d: %s", what, t, T.create_err[t]);
    for (int k = 0; k < T.spec[t].local; k++)
      CHECKF(T.rc[t][k] == 0 && T.bad[t][k] == 0, "%s: node thread %d rank %d: %d wrong, %s", what, t, k,
             T.bad[t][k], T.err[t][k]);
  }
}

/* A closed loopback port (bound a moment ago, then let go). */
static int closed_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

static void test_tcp_rendezvous_missing_node(void) {
  /* 3 nodes, node 2 never comes: node 0 gives up after the rendezvous timeout naming it, and tells
   * node 1, which was waiting for its welcome */
  tcp_scenario_init(&T, 3, 1);
  T.n_threads = 2;
  T.rv_timeout_ms = TCP_RV_MS;
  run_nodes(&T, 0, tcp_sum_rank, NULL);
  CHECKF(T.create_rc[0] == DD_EIO, "node 0: got %d", T.create_rc[0]);
  CHECK_CONTAINS(T.create_err[0], "rendezvous: 2 of 3 nodes joined within 1.5 s; missing node 2");
  CHECKF(T.create_ms[0] >= TCP_RV_MS - 50 && T.create_ms[0] < TCP_RV_MS + 1500, "node 0 gave up after %.0f ms",
         T.create_ms[0]);
  /* node 1 started with node 0, so its own deadline comes as node 0's: it gives up on its own */
  CHECKF(T.create_rc[1] != 0, "node 1 got a group");
  CHECKF(T.create_ms[1] < TCP_RV_MS + 1500, "node 1 gave up after %.0f ms", T.create_ms[1]);
  printf("     node 2 never came: node 0 after %.0f ms: \"%s\"; node 1 after %.0f ms: \"%s\"\n", T.create_ms[0],
         T.create_err[0], T.create_ms[1], T.create_err[1]);
  /* node 1 started 500 ms after node 0: node 0's refusal reaches it before its own deadline */
  tcp_scenario_init(&T, 3, 1);
  T.n_threads = 2;
  T.rv_timeout_ms = TCP_RV_MS;
  T.spec[1].delay_ms = 500;
  run_nodes(&T, 0, tcp_sum_rank, NULL);
  CHECKF(T.create_rc[0] == DD_EIO, "node 0: got %d", T.create_rc[0]);
  CHECK_CONTAINS(T.create_err[0], "missing node 2");
  CHECKF(T.create_rc[1] == DD_EINVAL, "node 1: got %d", T.create_rc[1]);
  CHECK_CONTAINS(T.create_err[1],
                 "rendezvous: node 0 refused node 1: rendezvous: 2 of 3 nodes joined within 1.5 s; missing node 2");
  CHECKF(T.create_ms[1] < TCP_RV_MS, "node 1 gave up after %.0f ms", T.create_ms[1]);
  printf("     node 2 never came, node 1 500 ms late: node 1 after %.0f ms: \"%s\"\n", T.create_ms[1], T.create_err[1]);
  /* 2 nodes, node 0 never comes */
  tcp_scenario_init(&T, 2, 2);
  T.spec[0] = T.spec[1]; /* the only node thread claims node 1 */
  T.n_threads = 1;
  T.rv_timeout_ms = TCP_RV_MS;
  run_nodes(&T, 0, tcp_sum_rank, NULL);
  CHECKF(T.create_rc[0] == DD_EIO, "node 1 alone: got %d", T.create_rc[0]);
  CHECK_CONTAINS(T.create_err[0], "rendezvous: node 1 could not join node 0 within 1.5 s (node 0 published nothing)");
  CHECKF(T.create_ms[0] >= TCP_RV_MS - 50 && T.create_ms[0] < TCP_RV_MS + 1500, "node 1 gave up after %.0f ms",
         T.create_ms[0]);
  printf("     node 0 never came: node 1 after %.0f ms: \"%s\"\n", T.create_ms[0], T.create_err[0]);
}

static void test_tcp_rendezvous_stale_text(void) {
  /* a text from an earlier attempt at a port nobody listens on: node 1 fetches it first and keeps
   * asking until node 0 (300 ms late) publishes its own */
  tcp_scenario_init(&T, 2, 2);
  int port = closed_port();
  REQUIRE(port > 0);
  snprintf(T.rz.text, sizeof T.rz.text, "tcp 127.0.0.1 %d 00112233445566778899aabbccddeeff 2 2", port);
  T.rz.have = 1;
  T.spec[0].delay_ms = 300;
  run_nodes(&T, 0, tcp_sum_rank, NULL);
  check_group_worked("stale text, closed port", 2, -1);
  CHECKF(T.rz.fetched >= 2, "node 1 fetched %d texts", T.rz.fetched);
  printf("     stale text (closed port %d): joined after %.0f ms, %d fetches\n", port, T.create_ms[1], T.rz.fetched);
  /* a text with another nonce at node 0's very address (the second fetch too): node 0 drops the
   * hello, node 1 asks again */
  tcp_scenario_init(&T, 2, 2);
  T.rz.bad_nonce = 2;
  run_nodes(&T, 0, tcp_sum_rank, NULL);
  check_group_worked("stale nonce", 2, -1);
  CHECKF(T.rz.fetched >= 3, "node 1 fetched %d texts", T.rz.fetched);
  printf("     stale nonce (twice): joined after %.0f ms, %d fetches\n", T.create_ms[1], T.rz.fetched);
  /* a stale text at a listener that never answers (an earlier node 0, frozen, its text still
   * there): node 0 answers every hello at once, so after 2 s of silence node 1 asks again */
  tcp_scenario_init(&T, 2, 2);
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  REQUIRE(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 4) == 0 &&
          getsockname(lfd, (struct sockaddr *)&a, &alen) == 0);
  snprintf(T.rz.text, sizeof T.rz.text, "tcp 127.0.0.1 %d 00112233445566778899aabbccddeeff 2 2", ntohs(a.sin_port));
  T.rz.have = 1;
  T.spec[0].delay_ms = 300;
  T.rv_timeout_ms = 8000;
  run_nodes(&T, 0, tcp_sum_rank, NULL);
  close(lfd);
  check_group_worked("stale text, silent listener", 2, -1);
  CHECKF(T.create_ms[1] >= 1900 && T.create_ms[1] < 6000, "node 1 joined after %.0f ms", T.create_ms[1]);
  printf("     stale text (a listener that never answers): joined after %.0f ms, %d fetches\n", T.create_ms[1],
         T.rz.fetched);
}

static void test_tcp_rendezvous_refusals(void) {
  /* two node threads claim node 1 of 3: the second (started once the first has fetched the text,
   * and 300 ms later) is refused; node 2 comes after that and the group of three works */
  tcp_scenario_init(&T, 3, 1);
  T.n_threads = 4;
  T.spec[2] = (tcp_node_spec){1, 3, 1, 300, 1, -1, 0};
  T.spec[3] = (tcp_node_spec){2, 3, 1, 0, 0, 2, 0};
  run_nodes(&T, 0, tcp_sum_rank, NULL);
  CHECKF(T.create_rc[2] == DD_EINVAL, "the second node 1: got %d: %s", T.create_rc[2], T.create_err[2]);
  CHECK_CONTAINS(T.create_err[2], "rendezvous: node 0 refused node 1: node 1 has already joined");
  CHECKF(T.create_ms[2] < 2000, "the second node 1 was refused after %.0f ms", T.create_ms[2]);
  check_group_worked("node 1 twice", 4, 2);
  printf("     node 1 claimed twice: the second after %.0f ms: \"%s\"\n", T.create_ms[2], T.create_err[2]);
  /* a joiner with another number of local ranks, or of nodes: refused, naming both counts; node 0
   * waits for the rendezvous timeout and names the node that never joined */
  static const struct {
    int nodes, local;
    const char *want;
  } other[] = {
      {2, 1, "rendezvous: node 0 runs 2 nodes x 2 ranks, this node 2 x 1"},
      {3, 2, "rendezvous: node 0 runs 2 nodes x 2 ranks, this node 3 x 2"},
  };
  for (int i = 0; i < 2; i++) {
    tcp_scenario_init(&T, 2, 2);
    T.spec[1].nodes = other[i].nodes;
    T.spec[1].local = other[i].local;
    T.rv_timeout_ms = TCP_RV_MS;
    run_nodes(&T, 0, tcp_sum_rank, NULL);
    CHECKF(T.create_rc[1] == DD_EINVAL, "node 1 (%d x %d): got %d", other[i].nodes, other[i].local, T.create_rc[1]);
    CHECK_CONTAINS(T.create_err[1], other[i].want);
    CHECKF(T.create_ms[1] < 1000, "node 1 was refused after %.0f ms", T.create_ms[1]);
    CHECKF(T.create_rc[0] == DD_EIO, "node 0: got %d", T.create_rc[0]);
    CHECK_CONTAINS(T.create_err[0], "missing node 1");
    printf("     node 1 claims %d x %d: \"%s\" after %.0f ms; node 0: \"%s\"\n", other[i].nodes, other[i].local,
           T.create_err[1], T.create_ms[1], T.create_err[0]);
  }
}

int main(void) {
  RUN(test_create_arguments);
  RUN(test_allreduce_ordered_sum);
  RUN(test_allreduce_repeated);
  RUN(test_broadcast);
  RUN(test_abort_wakes_everyone);
  RUN(test_missing_rank_times_out);
  RUN(test_mismatch_fails);
  RUN(test_tcp_create_arguments);
  RUN(test_tcp_collectives);
  RUN(test_tcp_mismatch_fails);
  RUN(test_tcp_abort);
  RUN(test_tcp_silent_node_times_out);
  RUN(test_tcp_rendezvous_missing_node);
  RUN(test_tcp_rendezvous_stale_text);
  RUN(test_tcp_rendezvous_refusals);
  return test_summary();
}
