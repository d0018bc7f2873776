/* The daemon end to end (the harness: tests/test_daemon.h), beyond the issue:
 *
 * 10. SIGTERM while a claim's answer is still on its way (through a proxy that delays Redis's
 *     replies): the daemon exits 0 promptly and the job is not lost; a worker stopped (SIGSTOP)
 *     past its lease loses the job to another and, woken, stops writing it. */
#define _GNU_SOURCE
#include <errno.h>

#define TEST_PROC_NAME "test_daemon_claims"
#include "test_daemon.h"
#include "test_proxy.h"

/* ---- 10. beyond the issue: SIGTERM while a claim is in flight; a stopped worker's lost lease ----- */

/* A daemon reaching Redis through the delaying proxy (its config names the proxy's port). */
static dmn *daemon_start_via(const char *name, int port, int lease_s, int heartbeat_s) {
  int real = srv.port;
  srv.port = port;
  dmn *d = daemon_start(name, 1, lease_s, heartbeat_s);
  srv.port = real;
  return d;
}

/* SIGTERM while the daemon waits for the answer to a claim it has sent (XREADGROUP has handed it
 * the entry, or the claim script has made it the owner): the daemon must still exit 0 promptly,
 * and the job must not be lost (another daemon runs it). `after_claim_script`: 0 sends SIGTERM
 * while XREADGROUP's answer is in flight, 1 while the claim script's is. */
static void sigterm_during_claim(int after_claim_script) {
  int pport = test_proxy_start(400, &proxy_pid);
  REQUIRE(pport > 0);
  dmn *a = daemon_start_via("wa", pport, 2, 1);
  REQUIRE(a);
  REQUIRE(daemon_wait_up(a, 15));
  /* each variant an output_dir of its own: a first attempt refuses one that holds snapshots */
  job_opts o = {.max_iter = 200000, .display = 10, .snapshot = 0,
                .output_dir = after_claim_script ? "out/q1_claim_script" : "out/q1_readgroup"};
  REQUIRE(submit_job("q1", &o));
  /* wait (bounded) for Redis to have run the step, then signal before the answer arrives */
  int hit = 0;
  const double end_hit = mono() + 20; /* bounded in count and time */
  for (int i = 0; i < 2000 && !hit && mono() < end_hit; i++) {
    if (after_claim_script) {
      char *s = hget(K("job:q1"), "state");
      hit = s && !strcmp(s, "running");
      free(s);
    } else {
      redisReply *r = cmd("XPENDING %s distilld", K("jobs"));
      hit = r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_INTEGER &&
            r->element[0]->integer == 1 && rint_cmd(1, "EXISTS %s", K("job:q1")) == 0;
      if (r) freeReplyObject(r);
    }
    if (!hit) sleep_ms(2);
  }
  REQUIRE(hit);
  double t0 = mono();
  kill(a->pid, SIGTERM);
  int st = wait_exit(a->pid, 8000);
  double dt = mono() - t0;
  if (st == -1) {
    fprintf(stderr, "daemon wa still running %.1f s after SIGTERM: killing it\n", dt);
    kill_wait(a->pid);
  }
  daemon_reap(a, st);
  CHECKF(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM during the claim: wait status %d (%s %d) after %.1f s", st,
         st >= 0 && WIFSIGNALED(st) ? "signal" : "exit", st >= 0 && WIFSIGNALED(st) ? WTERMSIG(st) : st >= 0 ? WEXITSTATUS(st) : -1,
         dt);
  CHECKF(dt < 5, "exited %.1f s after SIGTERM", dt);
  kill_wait(proxy_pid);
  proxy_pid = 0;
  /* the job is not lost: another daemon gets it (a hand-back, or a takeover after the lease) */
  char *s0 = hget(K("job:q1"), "state");
  printf("     q1: state %s after wa's exit (%.2f s after SIGTERM)\n", test__str(s0), dt);
  free(s0);
  dmn *b = daemon_start("wb", 1, 2, 1);
  REQUIRE(b);
  int on_b = 0;
  const double end_on_b = mono() + 30; /* bounded in count and time */
  for (int i = 0; i < 1000 && !on_b && mono() < end_on_b; i++) {
    char *w = hget(K("job:q1"), "worker"), *s = hget(K("job:q1"), "state");
    on_b = w && !strcmp(w, "wb") && s && !strcmp(s, "running") && hget_ll(K("job:q1"), "iter", -1) >= 10;
    free(w);
    free(s);
    if (!on_b) sleep_ms(20);
  }
  CHECKF(on_b, "q1 never ran on wb");
  redisReply *r = cmd("HSET %s cancel 1", K("job:q1"));
  if (r) freeReplyObject(r);
  char *fin = wait_final("q1", 30);
  CHECKF(fin && !strcmp(fin, "cancelled"), "q1: %s", test__str(fin));
  free(fin);
}

DTEST(test_sigterm_during_readgroup) {
  REQUIRE(begin("t10", 0));
  sigterm_during_claim(0);
}

DTEST(test_sigterm_during_claim_script) {
  REQUIRE(begin("t11", 0));
  sigterm_during_claim(1);
}

/* A first attempt refuses an output_dir that holds another run's snapshots (it would resume
 * from them, or mix two runs' files); the daemon goes on with the next job. */
DTEST(test_first_attempt_refuses_used_output) {
  REQUIRE(begin("t13", 0));
  dmn *a = daemon_start("wa", 1, 10, 1);
  REQUIRE(a);
  REQUIRE(daemon_wait_up(a, 15));
  job_opts o = {.max_iter = 4, .display = 2, .output_dir = "out/used"};
  REQUIRE(submit_job("u1", &o));
  char *st = wait_final("u1", 60);
  CHECKF(st && !strcmp(st, "succeeded"), "u1: %s", test__str(st));
  free(st);
  REQUIRE(submit_job("u2", &o));
  st = wait_final("u2", 60);
  CHECKF(st && !strcmp(st, "failed"), "u2: %s", test__str(st));
  free(st);
  char *er = hget(K("job:u2"), "error");
  CHECK_CONTAINS(er, "output_dir: \"out/used\" already holds snapshots of an earlier run");
  free(er);
  CHECK(hget_ll(K("job:u2"), "iter", 0) == 0);
  job_opts fresh = {.max_iter = 2, .display = 1};
  REQUIRE(submit_job("u3", &fresh));
  st = wait_final("u3", 60);
  CHECKF(st && !strcmp(st, "succeeded"), "u3: %s", test__str(st));
  free(st);
}

/* A worker stopped (SIGSTOP) longer than the lease loses its job to another; woken again
 * (SIGCONT), it finds out at its next renewal and stops without writing the job's end: the job
 * succeeds exactly once, on the new worker. */
DTEST(test_stopped_worker_loses_lease) {
  REQUIRE(begin("t12", 0));
  dmn *a = daemon_start("wa", 1, 2, 1);
  REQUIRE(a);
  REQUIRE(daemon_wait_up(a, 15));
  job_opts o = {.max_iter = 200000, .display = 10, .snapshot = 50};
  REQUIRE(submit_job("z1", &o));
  REQUIRE(wait_field_at_least("z1", "last_snapshot_iter", 50, 30));
  kill(a->pid, SIGSTOP);
  dmn *b = daemon_start("wb", 1, 2, 1);
  REQUIRE(b);
  int taken = 0;
  const double end_taken = mono() + 20; /* bounded in count and time */
  for (int i = 0; i < 500 && !taken && mono() < end_taken; i++) {
    char *w = hget(K("job:z1"), "worker");
    taken = w && !strcmp(w, "wb") && hget_ll(K("job:z1"), "attempt", -1) == 2;
    free(w);
    if (!taken) sleep_ms(20);
  }
  kill(a->pid, SIGCONT);
  REQUIRE(taken);
  /* wa notices at its next renewal (heartbeat_s 1) */
  int noticed = 0;
  const double end_noticed = mono() + 10; /* bounded in count and time */
  for (int i = 0; i < 300 && !noticed && mono() < end_noticed; i++) {
    noticed = test_file_contains(a->log, "lost the job's lease");
    if (!noticed) sleep_ms(20);
  }
  CHECKF(noticed, "wa did not notice that it lost z1");
  CHECK(hget_ll(K("job:z1"), "attempt", -1) == 2);
  char *w = hget(K("job:z1"), "worker");
  CHECKF(w && !strcmp(w, "wb"), "worker %s", test__str(w));
  free(w);
  char *s = hget(K("job:z1"), "state");
  CHECKF(s && !strcmp(s, "running"), "state %s", test__str(s));
  free(s);
  /* wa is free again and healthy; wb's run ends by a cancel */
  redisReply *r = cmd("HSET %s cancel 1", K("job:z1"));
  if (r) freeReplyObject(r);
  char *fin = wait_final("z1", 30);
  CHECKF(fin && !strcmp(fin, "cancelled"), "z1: %s", test__str(fin));
  free(fin);
  CHECK(count_events("z1", "state", "cancelled") == 1);
  CHECK(count_events("z1", "state", "queued") == 0);
  redisReply *ev = xrange(K("job:z1:events"));
  int by_a_after = 0, seen_b = 0;
  for (size_t i = 0; ev && i < ev->elements; i++) {
    if (ef_is(ev->element[i], "type", "state") && ef_is(ev->element[i], "state", "running") && ef_is(ev->element[i], "worker", "wb"))
      seen_b = 1;
    if (seen_b && ef_is(ev->element[i], "worker", "wa") && ef_is(ev->element[i], "type", "state")) by_a_after++;
  }
  if (ev) freeReplyObject(ev);
  CHECKF(by_a_after == 0, "wa wrote %d state events after wb took z1 over", by_a_after);
  /* (informational) metrics wa wrote after wb's first: progress is not owner-checked */
  redisReply *m = xrange(K("job:z1:metrics"));
  int late = 0, seen2 = 0;
  for (size_t i = 0; m && i < m->elements; i++) {
    seen2 |= ef_is(m->element[i], "attempt", "2");
    late += seen2 && ef_is(m->element[i], "attempt", "1");
  }
  if (m) freeReplyObject(m);
  printf("     z1: %d attempt-1 metrics entries from wa after wb's first\n", late);
}

int main(void) {
  if (daemon_main_begin()) return 1;
  RUN(test_setup);
  RUN(test_sigterm_during_readgroup);
  RUN(test_sigterm_during_claim_script);
  RUN(test_stopped_worker_loses_lease);
  RUN(test_first_attempt_refuses_used_output);
  return daemon_main_end();
}
