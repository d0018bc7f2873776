/* The CPU collectives (core/comm/collective_cpu.c) with 1 to 4 ranks, one thread each: allreduce
 * equals the sum over ranks 0..size-1 taken in that order, bit for bit, on every rank (n = 0,
 * n < size, a large odd n); hundreds of calls back to back; broadcast from every root; abort from a
 * rank or from another thread wakes every waiting rank with DD_EIO and the reason, and later calls
 * fail at once; a rank that never arrives makes the others time out; mismatched calls (n,
 * operation, root) fail on every rank with a message. Every wait here is bounded: a hang fails the
 * test. The TCP transport: tests/test_collective_tcp.c and tests/test_collective_rdzv.c. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "test_collective.h"

#define MAX_RANKS 4

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
  double t0 = mono_ms();
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
  double ms = mono_ms() - t0;
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
  double t0 = mono_ms();
  if (rank == 0 && !from_main) {
    sleep_ms(100);
    c->ops->abort(c, REASON);
    c->ops->abort(c, "a second reason, to be ignored");
    s->rc[rank] = DD_EIO;
    snprintf(s->err[rank], sizeof s->err[rank], "%s", REASON);
  } else {
    if (rank == 0) { /* from_main: rank 0 comes late, after the abort, and must fail at once */
      sleep_ms(300);
      t0 = mono_ms();
    }
    s->rc[rank] = c->ops->allreduce_sum(c, buf, 5, err, sizeof err);
    s->ms[rank] = mono_ms() - t0;
    snprintf(s->err[rank], sizeof s->err[rank], "%s", err);
    for (int i = 0; i < 5; i++)
      if (buf[i] != (float)(i + 1)) s->bad[rank]++; /* a failed call leaves the buffer alone */
  }
  /* later calls: DD_EIO at once, with the first reason */
  t0 = mono_ms();
  int rc = c->ops->allreduce_sum(c, buf, 5, err, sizeof err);
  int rc_b = c->ops->broadcast(c, buf, 5, 0, err, sizeof err);
  int rc_c = c->ops->barrier(c, err, sizeof err);
  s->ms2[rank] = mono_ms() - t0;
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
  double t0 = mono_ms();
  if (m->op == 0)
    s->rc[rank] = c->ops->allreduce_sum(c, buf, 3, err, sizeof err);
  else if (m->op == 1)
    s->rc[rank] = c->ops->broadcast(c, buf, 3, 0, err, sizeof err);
  else
    s->rc[rank] = c->ops->barrier(c, err, sizeof err);
  s->ms[rank] = mono_ms() - t0;
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
  double t0 = mono_ms();
  if (m->op[rank] == 0)
    s->rc[rank] = c->ops->allreduce_sum(c, buf, m->n[rank], err, sizeof err);
  else
    s->rc[rank] = c->ops->broadcast(c, buf, m->n[rank], m->root[rank], err, sizeof err);
  s->ms[rank] = mono_ms() - t0;
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

int main(void) {
  RUN(test_create_arguments);
  RUN(test_allreduce_ordered_sum);
  RUN(test_allreduce_repeated);
  RUN(test_broadcast);
  RUN(test_abort_wakes_everyone);
  RUN(test_missing_rank_times_out);
  RUN(test_mismatch_fails);
  return test_summary();
}
