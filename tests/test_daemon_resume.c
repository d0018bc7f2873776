/* The daemon end to end (the harness: tests/test_daemon.h): a daemon or Redis lost mid-job.
 *
 * 4. kill -9 mid-job: a second daemon takes the job over after lease_s and resumes from the last
 *    snapshot the first one wrote (attempt 2; nothing before that snapshot is redone).
 * 5. SIGTERM mid-job: the daemon exits 0 after handing the job back with a snapshot; another
 *    daemon resumes it.
 * 6. Redis restarted mid-job (AOF on): the job succeeds and its metrics have no gap. */
#define _GNU_SOURCE
#include <sys/time.h>

#define TEST_PROC_NAME "test_daemon_resume"
#include "test_daemon.h"

/* ---- 4. kill -9 mid-job: another daemon takes over ---------------------------------------------------- */

/* Checks a resumed job: attempt 2 by `worker`, one `resumed` event at `from`, and attempt 2's
 * metrics start at `from` (the iteration after the snapshot's last one; nothing before redone). */
static void check_resumed(const char *id, const char *worker, int from, int max_iter, int display) {
  char *st = wait_final(id, 90);
  CHECKF(st && !strcmp(st, "succeeded"), "%s: %s", id, test__str(st));
  free(st);
  CHECK(hget_ll(K("job:%s", id), "attempt", -1) == 2);
  CHECK(hget_ll(K("job:%s", id), "resumed_from", -1) == from);
  CHECK(hget_ll(K("job:%s", id), "iter", -1) == max_iter);
  char *w = hget(K("job:%s", id), "worker");
  CHECKF(w && !strcmp(w, worker), "worker %s", test__str(w));
  free(w);
  redisReply *ev = xrange(K("job:%s:events", id));
  REQUIRE(ev);
  int n_res = 0, res_iter = -1, n_succ = 0;
  for (size_t i = 0; i < ev->elements; i++) {
    const redisReply *e = ev->element[i];
    if (ef_is(e, "type", "resumed")) {
      n_res++;
      res_iter = ef(e, "iter") ? atoi(ef(e, "iter")) : -1;
      CHECK(ef_is(e, "attempt", "2") && ef_is(e, "worker", worker));
    }
    if (ef_is(e, "type", "state") && ef_is(e, "state", "succeeded")) n_succ++;
  }
  freeReplyObject(ev);
  CHECKF(n_res == 1 && res_iter == from, "%d resumed events, iter %d, want %d", n_res, res_iter, from);
  CHECK(n_succ == 1);
  redisReply *m = xrange(K("job:%s:metrics", id));
  REQUIRE(m);
  int min2 = INT_MAX, max2 = -1, n2 = 0, n1 = 0, bad = 0;
  for (size_t i = 0; i < m->elements; i++) {
    const char *a = ef(m->element[i], "attempt"), *it = ef(m->element[i], "iter");
    if (!a || !it) {
      bad++;
      continue;
    }
    int v = atoi(it);
    if (!strcmp(a, "2")) {
      n2++;
      min2 = v < min2 ? v : min2;
      max2 = v > max2 ? v : max2;
      if (!ef_is(m->element[i], "worker", worker)) bad++;
    } else if (!strcmp(a, "1")) {
      n1++;
    } else {
      bad++;
    }
  }
  freeReplyObject(m);
  int want_first = (from + display - 1) / display * display;
  int want_last = (max_iter - 1) / display * display;
  CHECKF(bad == 0 && n1 > 0 && min2 == want_first && max2 == want_last && n2 == (want_last - want_first) / display + 1,
         "%d bad, %d attempt-1 entries; attempt 2: %d entries, iters %d..%d, want %d..%d", bad, n1, n2, min2, max2, want_first,
         want_last);
}

DTEST(test_kill9_takeover) {
  REQUIRE(begin("t4", 0));
  dmn *a = daemon_start("wa", 1, 2, 1);
  REQUIRE(a);
  REQUIRE(daemon_wait_up(a, 15));
  job_opts o = {.max_iter = 5000, .display = 10, .snapshot = 20, .teacher = 1};
  REQUIRE(submit_job("k1", &o));
  REQUIRE(wait_field_at_least("k1", "last_snapshot_iter", 40, 60));
  daemon_kill9(a);
  CHECK(a->exited && WIFSIGNALED(a->status) && WTERMSIG(a->status) == SIGKILL);
  int s = newest_snapshot("k1");
  long long it_at_kill = hget_ll(K("job:k1"), "iter", -1);
  char *st = hget(K("job:k1"), "state");
  CHECKF(st && !strcmp(st, "running"), "state %s after the kill", test__str(st));
  free(st);
  printf("     k1: killed at iter ~%lld; newest snapshot on disk: iter %d\n", it_at_kill, s);
  REQUIRE(s >= 40 && s < 5000);
  CHECK(hget_ll(K("job:k1"), "last_snapshot_iter", -1) <= s);
  double t_kill = mono();
  dmn *b = daemon_start("wb", 1, 2, 1);
  REQUIRE(b);
  /* the takeover waits for the lease (2 s without renewal) */
  int taken = 0;
  const double end_taken = mono() + 20; /* bounded in count and time */
  for (int i = 0; i < 600 && !taken && mono() < end_taken; i++) {
    taken = hget_ll(K("job:k1"), "attempt", -1) == 2;
    if (!taken) sleep_ms(20);
  }
  double dt = mono() - t_kill;
  CHECKF(taken, "not taken over within %.1f s", dt);
  CHECKF(dt >= 1.0, "taken over %.2f s after the kill: before the lease ran out", dt);
  printf("     k1: taken over %.2f s after the kill\n", dt);
  check_resumed("k1", "wb", s, 5000, 10);
  CHECK(exists_in("out/k1/snapshots/k1_iter_5000.caffemodel"));
}

/* ---- 5. SIGTERM mid-job: hand-back, then another daemon resumes ------------------------------------------ */

DTEST(test_sigterm_handback) {
  REQUIRE(begin("t5", 0));
  dmn *a = daemon_start("wa", 1, 10, 1);
  REQUIRE(a);
  REQUIRE(daemon_wait_up(a, 15));
  job_opts o = {.max_iter = 3000, .display = 10, .snapshot = 1000};
  REQUIRE(submit_job("h1", &o));
  REQUIRE(wait_field_at_least("h1", "iter", 50, 60));
  char *entry1 = hget(K("job:h1"), "entry");
  double t0 = mono();
  int st = daemon_term(a, 15000);
  double dt = mono() - t0;
  CHECKF(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "wait status %d", st);
  CHECKF(dt < 10, "exited %.2f s after SIGTERM", dt);
  char *state = hget(K("job:h1"), "state");
  CHECKF(state && !strcmp(state, "queued"), "state %s after the hand-back", test__str(state));
  free(state);
  int h = newest_snapshot("h1");
  printf("     h1: handed back at iter %d, %.2f s after SIGTERM\n", h, dt);
  REQUIRE(h > 0 && h < 3000);
  CHECK(hget_ll(K("job:h1"), "last_snapshot_iter", -1) == h);
  /* the last event: back to queued at that iteration, by wa */
  redisReply *ev = xrange(K("job:h1:events"));
  REQUIRE(ev && ev->elements >= 1);
  const redisReply *last = ev->element[ev->elements - 1];
  char hs[32];
  snprintf(hs, sizeof hs, "%d", h);
  CHECK(ef_is(last, "type", "state") && ef_is(last, "state", "queued") && ef_is(last, "iter", hs) &&
        ef_is(last, "worker", "wa"));
  CHECK_CONTAINS(ef(last, "reason"), "handed back by wa");
  freeReplyObject(ev);
  /* a new entry with the same id; the old one acknowledged and deleted */
  char *entry2 = hget(K("job:h1"), "entry");
  CHECKF(entry1 && entry2 && strcmp(entry1, entry2), "entry %s -> %s", test__str(entry1), test__str(entry2));
  free(entry1);
  free(entry2);
  CHECK(rint_cmd(-1, "XLEN %s", K("jobs")) == 1);
  CHECK(pending_jobs() == 0);
  CHECK(rint_cmd(-1, "EXISTS %s", K("worker:wa")) == 0);
  CHECK(!test_log_has_sanitizer_report(a->log));
  /* another daemon resumes it */
  dmn *b = daemon_start("wb", 1, 10, 1);
  REQUIRE(b);
  check_resumed("h1", "wb", h, 3000, 10);
}

/* ---- 6. Redis restarted mid-job ---------------------------------------------------------------------------- */

static double wall_now(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (double)tv.tv_sec + 1e-6 * (double)tv.tv_usec;
}

/* The byte offset of the first line holding `needle` at or after `from` in a file (-1: none). */
static long file_find(const char *path, const char *needle, long from) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[4096];
  long pos = 0, found = -1;
  while (found < 0 && fgets(line, sizeof line, f)) {
    if (pos >= from && strstr(line, needle)) found = pos;
    pos += (long)strlen(line);
  }
  fclose(f);
  return found;
}

DTEST(test_redis_restart) {
  REQUIRE(begin("t6", 1));
  dmn *d = daemon_start("w6", 1, 10, 1);
  REQUIRE(d);
  REQUIRE(daemon_wait_up(d, 15));
  /* a short run first, to size the real job so it outlasts the outage by a few seconds */
  job_opts cal = {.max_iter = 500, .display = 10};
  REQUIRE(submit_job("r0", &cal));
  char *st = wait_final("r0", 60);
  CHECKF(st && !strcmp(st, "succeeded"), "r0: %s", test__str(st));
  free(st);
  char *el = hget(K("job:r0"), "elapsed_s"); /* at the last display, iter 490 */
  double per_iter = el && atof(el) > 0 ? atof(el) / 490 : 1e-3;
  free(el);
  int max_iter = (int)(6.0 / per_iter);
  if (max_iter < 2000) max_iter = 2000;
  if (max_iter > 300000) max_iter = 300000;
  /* at most ~1500 metrics entries: the whole run fits the daemon's buffer, outage or not */
  const int display = 10 * ((max_iter + 14999) / 15000);
  max_iter = max_iter / display * display;
  job_opts o = {.max_iter = max_iter, .display = display, .snapshot = max_iter / 4};
  REQUIRE(submit_job("r1", &o));
  REQUIRE(wait_field_at_least("r1", "iter", 3 * display, 60));
  long long it_down = hget_ll(K("job:r1"), "iter", -1);
  rc_close();
  double t_down = wall_now();
  int port = srv.port;
  CHECK(redis_stop());
  sleep_ms(1000);
  REQUIRE(redis_start(port, 1));
  double down_s = wall_now() - t_down;
  printf("     r1: %d iterations, display %d (%.3f ms each in r0); Redis down from iter %lld for %.2f s\n", max_iter, display,
         1000 * per_iter, it_down, down_s);
  st = wait_final("r1", 90);
  CHECKF(st && !strcmp(st, "succeeded"), "state %s", test__str(st));
  free(st);
  char *fa = hget(K("job:r1"), "finished_at");
  CHECKF(fa && atof(fa) > t_down, "finished_at %s: the job was over before Redis went down", test__str(fa));
  free(fa);
  CHECK(hget_ll(K("job:r1"), "attempt", -1) == 1);
  CHECK(hget_ll(K("job:r1"), "iter", -1) == max_iter);
  CHECK(hget_ll(K("job:r1"), "metrics_dropped", 0) == 0);
  /* Every displayed iteration, in order, with no gap and none twice: the daemon resends, after
   * the reconnect, what Redis had not answered when it went down, and an item that Redis ran just
   * before its shutdown (its reply lost) is skipped by the apply script's sequence check. */
  redisReply *m = xrange(K("job:r1:metrics"));
  REQUIRE(m);
  int n = max_iter / display, next = 0, dup = 0, bad_dup = 0, gap = 0, first_gap = -1;
  const redisReply *prev = NULL;
  for (size_t i = 0; i < m->elements; i++) {
    const redisReply *e = m->element[i];
    const char *it = ef(e, "iter");
    int v = it ? atoi(it) : -1;
    if (v == next) {
      next += display;
    } else if (v < next) {
      dup++;
      int same = prev && v == next - display && ef(prev, "loss") && ef(e, "loss") && !strcmp(ef(prev, "loss"), ef(e, "loss")) &&
                 ef(prev, "attempt") && ef(e, "attempt") && !strcmp(ef(prev, "attempt"), ef(e, "attempt"));
      bad_dup += !same || v < it_down - 20 * display;
      printf("     r1: note: metrics entry %s repeats iter %d (%s the previous entry): written twice around the outage\n",
             e->element[0]->str, v, same ? "a copy of" : "NOT a copy of");
    } else {
      if (first_gap < 0) first_gap = next;
      gap++;
      next = v + display;
    }
    prev = e;
  }
  CHECKF(gap == 0 && next == n * display, "metrics: %zu entries, %d gaps (first missing iter %d), last %d, want %d",
         m->elements, gap, first_gap, next - display, (n - 1) * display);
  CHECKF(dup == 0, "metrics: %d entries written twice (%d of them not a resent copy)", dup, bad_dup);
  freeReplyObject(m);
  CHECK(count_events("r1", "state", "succeeded") == 1);
  int n_snaps = max_iter / o.snapshot + (max_iter % o.snapshot != 0);
  CHECKF(count_events("r1", "snapshot", NULL) == n_snaps, "%d snapshot events, want %d", count_events("r1", "snapshot", NULL),
         n_snaps);
  /* the daemon saw the outage while r1 trained, and was back before r1 ended */
  long lost = file_find(d->log, "jobs keep training", 0);
  long back = lost >= 0 ? file_find(d->log, "connected to Redis", lost) : -1;
  long done = file_find(d->log, "job r1: succeeded", 0);
  CHECKF(lost >= 0 && back > lost, "the daemon's log shows no outage and reconnect");
  CHECKF(done > back, "r1 ended before the daemon reconnected (the job was too short to span the outage)");
}

int main(void) {
  if (daemon_main_begin()) return 1;
  RUN(test_setup);
  RUN(test_kill9_takeover);
  RUN(test_sigterm_handback);
  RUN(test_redis_restart);
  return daemon_main_end();
}
