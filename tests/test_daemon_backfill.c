/* The daemon end to end (the harness: tests/test_daemon.h): no metrics gap after an outage longer
 * than the lease (issue 16, defect 5).
 *
 * Worker wa reaches Redis through a forwarding proxy (a forked child); stopping the proxy
 * (SIGSTOP) cuts wa off from Redis while it trains on, as a Redis outage or a partition does,
 * with nothing disconnected. wa snapshots past the last metrics entry Redis got; then wa itself is
 * frozen (so the snapshot a takeover resumes from is fixed) and wb, which reaches Redis directly,
 * takes the job over once the lease has passed. wb resumes from the newest snapshot S and, before
 * its first iteration, backfills the iterations between the stream's last entry L and S from the
 * output directory's metrics.jsonl. Woken, wa finds it lost the job and writes nothing for it.
 * Checked: every iteration 0..max_iter-1 has exactly one metrics entry, the stream is in iteration
 * order, the entries L+1..S-1 (and only they) are marked backfilled, with wa's worker and attempt. */
#define _GNU_SOURCE
#include <errno.h>

#include <dirent.h>

#define TEST_PROC_NAME "test_daemon_backfill"
#include "test_daemon.h"
#include "test_proxy.h"

/* The iter of the metrics stream's last entry (-1: none or no answer). */
static long long last_metrics_iter(const char *id) {
  redisReply *r = cmd("XREVRANGE %s + - COUNT 1", K("job:%s:metrics", id));
  long long it = -1;
  if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
    const char *v = ef(r->element[0], "iter");
    if (v) it = atoll(v);
  }
  if (r) freeReplyObject(r);
  return it;
}

/* Waits (bounded) until every thread of process `pid` is stopped (state T in /proc); 1 when so. */
static int wait_stopped(pid_t pid, double timeout_s) {
  const double end = mono() + timeout_s; /* bounded in count and time */
  for (int i = 0; i < 100000 && mono() < end; i++) {
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int running = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
      if (e->d_name[0] == '.') continue;
      char p[400], st[512];
      snprintf(p, sizeof p, "%s/%s/stat", dir, e->d_name);
      FILE *f = fopen(p, "r");
      size_t n = f ? fread(st, 1, sizeof st - 1, f) : 0;
      if (f) fclose(f);
      st[n] = '\0';
      const char *c = strrchr(st, ')'); /* "pid (comm) S ..." */
      if (c && c[1] == ' ' && c[2] != 'T' && c[2] != 't') running = 1;
    }
    closedir(d);
    if (!running) return 1;
    sleep_ms(2);
  }
  return 0;
}

/* ---- no metrics gap after an outage longer than the lease --------------------------------------------- */

#define BF_ITERS 3000
#define BF_SNAPSHOT 20

DTEST(test_outage_longer_than_lease_no_gap) {
  REQUIRE(begin("bf", 0));
  int pport = test_proxy_start(0, &proxy_pid);
  REQUIRE(pport > 0);
  int real = srv.port;
  srv.port = pport;
  dmn *a = daemon_start("wa", 1, 2, 1);
  srv.port = real;
  REQUIRE(a);
  REQUIRE(daemon_wait_up(a, 15));
  job_opts o = {.max_iter = BF_ITERS, .display = 1, .snapshot = BF_SNAPSHOT};
  REQUIRE(submit_job("b1", &o));
  REQUIRE(wait_field_at_least("b1", "iter", 30, 60));
  /* wa loses Redis (nothing disconnects: its commands wait) and trains on */
  kill(proxy_pid, SIGSTOP);
  sleep_ms(150); /* what was on its way has been applied */
  long long L = last_metrics_iter("b1");
  /* until it has snapshotted well past what Redis got; then it is frozen where it is */
  int snap = -1;
  const double end_snap = mono() + 60; /* bounded in count and time */
  for (int i = 0; i < 6000 && mono() < end_snap; i++) {
    snap = newest_snapshot("b1");
    if (snap >= L + 3 * BF_SNAPSHOT || snap >= BF_ITERS) break;
    sleep_ms(5);
  }
  kill(a->pid, SIGSTOP);
  /* kill() only queues SIGSTOP: read the snapshot once wa is really stopped (every thread), or a
   * snapshot it finishes meanwhile would be the one wb resumes from */
  CHECKF(wait_stopped(a->pid, 10), "wa did not stop");
  snap = newest_snapshot("b1");
  printf("     b1: Redis has iterations up to %lld; wa cut off, snapshotted to %d, frozen\n", L, snap);
  if (L < 0 || snap < L + 2 || snap >= BF_ITERS) {
    kill(a->pid, SIGCONT);
    kill(proxy_pid, SIGCONT);
  }
  REQUIRE(L >= 0);
  REQUIRE(snap >= L + 2);
  REQUIRE(snap < BF_ITERS);
  /* wb takes the job over once the lease (2 s) has passed and runs it to the end */
  dmn *b = daemon_start("wb", 1, 2, 1);
  char *fin = b ? wait_final("b1", 120) : NULL;
  kill(a->pid, SIGCONT);
  kill(proxy_pid, SIGCONT);
  REQUIRE(b);
  CHECKF(fin && !strcmp(fin, "succeeded"), "b1: %s", test__str(fin));
  free(fin);
  CHECK(hget_ll(K("job:b1"), "attempt", -1) == 2);
  long long S = hget_ll(K("job:b1"), "resumed_from", -1);
  CHECKF(S == snap, "b1 resumed from %lld, want %d", S, snap);
  /* woken, wa finds it lost the job (its renewal, or its refused items) */
  int noticed = 0;
  const double end_noticed = mono() + 15; /* bounded in count and time */
  for (int i = 0; i < 1000 && !noticed && mono() < end_noticed; i++) {
    noticed = test_file_contains(a->log, "lost the job's lease") || test_file_contains(a->log, "no longer owns it");
    if (!noticed) sleep_ms(20);
  }
  CHECKF(noticed, "wa did not notice that it lost b1");
  sleep_ms(500); /* what wa still had buffered has been sent (and refused) */
  /* every iteration exactly once, in order; L+1..S-1 backfilled, from wa's attempt */
  redisReply *m = xrange(K("job:b1:metrics"));
  REQUIRE(m && m->type == REDIS_REPLY_ARRAY);
  static int seen[BF_ITERS];
  memset(seen, 0, sizeof seen);
  int bad_iter = 0, out_of_order = 0, bad_mark = 0, bad_owner = 0, n_backfilled = 0;
  long long prev = -1;
  for (size_t i = 0; i < m->elements; i++) {
    const redisReply *e = m->element[i];
    const char *v = ef(e, "iter");
    long long it = v ? atoll(v) : -1;
    if (it < 0 || it >= BF_ITERS) {
      bad_iter++;
      continue;
    }
    seen[it]++;
    if (it <= prev) out_of_order++;
    prev = it;
    int bf = ef_is(e, "backfilled", "1");
    n_backfilled += bf;
    if (bf != (it > L && it < S)) bad_mark++;
    int by_a = ef_is(e, "worker", "wa") && ef_is(e, "attempt", "1");
    int by_b = ef_is(e, "worker", "wb") && ef_is(e, "attempt", "2");
    if (it < S ? !by_a : !by_b) bad_owner++;
    if (bf && (!ef(e, "loss") || !ef(e, "lr") || !ef(e, "epoch") || !ef_is(e, "backfilled_by", "wb"))) bad_mark++;
  }
  int missing = 0, twice = 0, first_missing = -1, first_twice = -1;
  for (int it = 0; it < BF_ITERS; it++) {
    if (!seen[it] && missing++ == 0) first_missing = it;
    if (seen[it] > 1 && twice++ == 0) first_twice = it;
  }
  printf("     b1: %zu metrics entries, %d backfilled (iterations %lld-%lld)\n", m->elements, n_backfilled, L + 1, S - 1);
  freeReplyObject(m);
  CHECKF(missing == 0, "%d iterations have no metrics entry (the first: %d)", missing, first_missing);
  CHECKF(twice == 0, "%d iterations have more than one entry (the first: %d)", twice, first_twice);
  CHECKF(bad_iter == 0, "%d entries without a valid iter", bad_iter);
  CHECKF(out_of_order == 0, "%d entries out of iteration order", out_of_order);
  CHECKF(n_backfilled == S - L - 1, "%d backfilled entries, want %lld", n_backfilled, S - L - 1);
  CHECKF(bad_mark == 0, "%d entries marked wrongly (backfilled only L+1..S-1, with its fields)", bad_mark);
  CHECKF(bad_owner == 0, "%d entries name the wrong worker or attempt", bad_owner);
  CHECK(test_file_contains(b->log, "backfilled"));
  CHECK(count_events("b1", "log", NULL) >= 1);
}

int main(void) {
  if (daemon_main_begin()) return 1;
  RUN(test_setup);
  RUN(test_outage_longer_than_lease_no_gap);
  return daemon_main_end();
}
