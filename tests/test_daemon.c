/* The daemon (`distilld --config FILE`) end to end against a real redis-server (the harness:
 * tests/test_daemon.h), the life of one job:
 *
 * 1. A job succeeds: its hash, its metrics stream (one entry per display), its events stream
 *    (state, teacher, test, snapshot) and the worker's hash with its TTL.
 * 2. Bad entries fail with `error` naming the field (unknown field, alpha out of range, over
 *    1 MiB, no job field, a bad id) while the next good job succeeds.
 * 3. A running job cancelled through its hash stops early with a snapshot at the stop.
 *
 * The daemon's other tests: tests/test_daemon_resume.c (4-6: a daemon or Redis lost mid-job),
 * tests/test_daemon_fleet.c (7: many jobs, several ranks and nodes), tests/test_daemon_client.c
 * (8-9: path escapes, the client verbs), tests/test_daemon_claims.c (10: claims in flight, a
 * stopped worker's lease). */
#define _GNU_SOURCE
#define TEST_PROC_NAME "test_daemon"
#include "test_daemon.h"

/* ---- 1. a job succeeds ------------------------------------------------------------------------------ */

DTEST(test_job_succeeds) {
  REQUIRE(begin("t1", 0));
  dmn *d = daemon_start("w1", 1, 10, 1);
  REQUIRE(d);
  REQUIRE(daemon_wait_up(d, 15));
  /* the worker's hash: who, with a TTL of three heartbeats */
  char wk[256], hk[256];
  snprintf(wk, sizeof wk, "%s", K("worker:w1"));
  snprintf(hk, sizeof hk, "%s", K("job:s1"));
  long long ttl = rint_cmd(-9, "TTL %s", wk);
  CHECKF(ttl >= 1 && ttl <= 3, "TTL %lld", ttl);
  char *v = hget(wk, "name");
  CHECK(v && !strcmp(v, "w1"));
  free(v);
  CHECK(hget_ll(wk, "pid", -1) == d->pid);
  CHECK(hget_ll(wk, "max_jobs", -1) == 1);
  v = hget(wk, "state");
  CHECK(v && !strcmp(v, "running"));
  free(v);
  CHECK(rint_cmd(0, "SISMEMBER %s w1", K("workers")) == 1);

  job_opts o = {.max_iter = 40, .display = 10, .test_interval = 20, .snapshot = 20, .teacher = 1};
  char text[4096];
  job_text(text, sizeof text, "s1", &o);
  double t0 = mono();
  REQUIRE(submit_raw("s1", text, strlen(text), NULL, 0));
  /* while it runs: the worker's hash names it */
  int seen_running = 0;
  const double end_seen_running = mono() + 10; /* bounded in count and time */
  for (int i = 0; i < 400 && !seen_running && mono() < end_seen_running; i++) {
    char *jobs = hget(wk, "jobs");
    seen_running = jobs && !strcmp(jobs, "s1");
    free(jobs);
    char *s = hget(K("job:s1"), "state");
    int fin = is_final(s);
    free(s);
    if (fin) break;
    sleep_ms(10);
  }
  char *state = wait_final("s1", 60);
  printf("     s1: %s after %.2f s (worker hash listed it while running: %s)\n", test__str(state), mono() - t0,
         seen_running ? "yes" : "missed");
  CHECKF(state && !strcmp(state, "succeeded"), "state %s", test__str(state));
  free(state);

  /* the hash, as documented */
  static const struct {
    const char *f, *want;
  } eq[] = {{"id", "s1"}, {"name", "s1"}, {"worker", "w1"}, {"attempt", "1"}, {"iter", "40"}, {"max_iter", "40"},
            {"resumed_from", "0"}, {"last_snapshot_iter", "40"}, {"last_snapshot", "out/s1/snapshots/s1_iter_40.caffemodel"},
            {"test_iter", "40"}};
  for (size_t i = 0; i < sizeof eq / sizeof eq[0]; i++) {
    char *x = hget(hk, eq[i].f);
    CHECKF(x && !strcmp(x, eq[i].want), "%s: \"%s\", want \"%s\"", eq[i].f, test__str(x), eq[i].want);
    free(x);
  }
  char *spec = hget(hk, "spec");
  CHECK(spec && !strcmp(spec, text));
  free(spec);
  static const char *const present[] = {"test_acc", "loss", "ce_loss", "kd_loss", "lr", "epoch", "img_per_s", "eta_s",
                                        "elapsed_s", "teacher_acc", "teacher_checksum", "submitted_at", "updated_at"};
  for (size_t i = 0; i < sizeof present / sizeof present[0]; i++) {
    char *x = hget(hk, present[i]);
    CHECKF(x && x[0], "%s missing", present[i]);
    free(x);
  }
  char *acc = hget(hk, "test_acc");
  CHECKF(acc && atof(acc) >= 0 && atof(acc) <= 1, "test_acc %s", test__str(acc));
  free(acc);
  char *sa = hget(hk, "started_at"), *fa = hget(hk, "finished_at");
  CHECKF(sa && fa && atof(sa) > 1e9 && atof(fa) >= atof(sa), "started_at %s finished_at %s", test__str(sa), test__str(fa));
  free(sa);
  free(fa);
  char *er = hget(hk, "error");
  CHECKF(!er, "error: %s", er);
  free(er);
  CHECK(exists_in("out/s1/snapshots/s1_iter_40.caffemodel") && exists_in("out/s1/snapshots/s1_iter_20.solverstate"));
  long long hk_ttl = rint_cmd(-9, "TTL %s", hk);
  CHECKF(hk_ttl > 3000 && hk_ttl <= 3600, "the finished job's hash TTL is %lld, want retention_s 3600", hk_ttl);
  /* jobs by state: s1 is in the succeeded set only */
  CHECK(rint_cmd(-1, "ZRANK %s s1", K("state:succeeded")) >= 0);
  CHECK(rint_cmd(-1, "ZCARD %s", K("state:running")) == 0 && rint_cmd(-1, "ZCARD %s", K("state:queued")) == 0);
  CHECK(rint_cmd(-9, "TTL %s", K("job:s1:metrics")) > 3000);
  CHECK(rint_cmd(-9, "TTL %s", K("job:s1:events")) > 3000);
  redisReply *zs = cmd("ZSCORE %s s1", K("index"));
  CHECK(zs && zs->type == REDIS_REPLY_STRING && atof(zs->str) > 1e9);
  if (zs) freeReplyObject(zs);
  /* acknowledged: nothing pending in the group */
  CHECK(pending_jobs() == 0);

  /* metrics: one entry per display, iters 0, 10, 20, 30 */
  redisReply *m = xrange(K("job:s1:metrics"));
  REQUIRE(m);
  CHECKF(m->elements == 4, "%zu metrics entries", m->elements);
  for (size_t i = 0; i < m->elements; i++) {
    const redisReply *e = m->element[i];
    const char *it = ef(e, "iter");
    CHECKF(it && atoi(it) == (int)i * 10, "metrics entry %zu: iter %s", i, test__str(it));
    CHECK(ef_is(e, "worker", "w1") && ef_is(e, "attempt", "1"));
    CHECK(ef(e, "loss") && ef(e, "ce_loss") && ef(e, "kd_loss") && ef(e, "lr") && ef(e, "epoch") && ef(e, "img_per_s"));
  }
  freeReplyObject(m);

  /* events: running first, succeeded last; the teacher, tests and snapshots between */
  redisReply *ev = xrange(K("job:s1:events"));
  REQUIRE(ev && ev->elements >= 4);
  CHECK(ef_is(ev->element[0], "type", "state") && ef_is(ev->element[0], "state", "running") &&
        ef_is(ev->element[0], "attempt", "1") && ef_is(ev->element[0], "worker", "w1"));
  const redisReply *last = ev->element[ev->elements - 1];
  CHECK(ef_is(last, "type", "state") && ef_is(last, "state", "succeeded") && ef_is(last, "iter", "40"));
  int n_teacher = 0, n_test = 0, n_snap = 0, n_succ = 0, snap_iters = 0, last_test = -1;
  for (size_t i = 0; i < ev->elements; i++) {
    const redisReply *e = ev->element[i];
    CHECK(ef(e, "worker") != NULL);
    if (ef_is(e, "type", "teacher")) {
      n_teacher++;
      CHECK(ef(e, "accuracy") && ef(e, "checksum"));
    }
    if (ef_is(e, "type", "test")) {
      n_test++;
      CHECK(ef(e, "iter") && ef(e, "accuracy"));
      if (ef(e, "iter")) last_test = atoi(ef(e, "iter"));
    }
    if (ef_is(e, "type", "snapshot")) {
      n_snap++;
      CHECK(ef(e, "model") && ef(e, "state"));
      if (ef(e, "iter")) snap_iters += atoi(ef(e, "iter"));
    }
    if (ef_is(e, "type", "state") && ef_is(e, "state", "succeeded")) n_succ++;
  }
  CHECKF(n_teacher == 1 && n_test >= 2 && last_test == 40 && n_snap == 2 && snap_iters == 60 && n_succ == 1,
         "%d teacher, %d test (last at %d), %d snapshot (iters sum %d), %d succeeded events", n_teacher, n_test, last_test,
         n_snap, snap_iters, n_succ);
  freeReplyObject(ev);

  /* a clean stop leaves the workers set */
  int st = daemon_term(d, 20000);
  CHECKF(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "wait status %d", st);
  CHECK(rint_cmd(-1, "EXISTS %s", wk) == 0);
  CHECK(rint_cmd(-1, "SISMEMBER %s w1", K("workers")) == 0);
}

/* ---- 2. bad entries fail, naming the field; the next good job runs -------------------------------- */

/* Waits for `id` to fail; checks `error` (hash and events) holds `needle`. */
static void expect_failed(const char *id, const char *needle) {
  char *st = wait_final(id, 30);
  CHECKF(st && !strcmp(st, "failed"), "%s: state %s", id, test__str(st));
  free(st);
  char *er = hget(K("job:%s", id), "error");
  CHECKF(test__contains(er, needle), "%s: error \"%s\" does not name \"%s\"", id, test__str(er), needle);
  redisReply *ev = xrange(K("job:%s:events", id));
  int ok = 0;
  for (size_t i = 0; ev && i < ev->elements; i++)
    if (ef_is(ev->element[i], "type", "state") && ef_is(ev->element[i], "state", "failed"))
      ok = er && ef(ev->element[i], "error") && !strcmp(ef(ev->element[i], "error"), er);
  CHECKF(ok, "%s: no `state failed` event with the error", id);
  if (ev) freeReplyObject(ev);
  free(er);
  CHECKF(count_events(id, "state", "running") == 1, "%s: ran %d times", id, count_events(id, "state", "running"));
}

DTEST(test_bad_jobs) {
  REQUIRE(begin("t2", 0));
  dmn *d = daemon_start("w2", 1, 10, 1);
  REQUIRE(d);
  REQUIRE(daemon_wait_up(d, 15));
  job_opts good = {.max_iter = 4, .display = 2};
  char text[4096];
  /* an unknown field */
  job_opts o = good;
  o.extra = "bogus_field: 3\n";
  job_text(text, sizeof text, "b_unknown", &o);
  REQUIRE(submit_raw("b_unknown", text, strlen(text), NULL, 0));
  /* alpha out of range */
  job_text(text, sizeof text, "b_alpha", &good);
  strcat(text, "distill { alpha: 1.5 }\n");
  REQUIRE(submit_raw("b_alpha", text, strlen(text), NULL, 0));
  /* over 1 MiB (a valid job padded with a comment) */
  size_t big_len = (1u << 20) + 100;
  char *big = malloc(big_len + 1);
  REQUIRE(big);
  job_text(big, big_len, "b_big", &good);
  size_t used = strlen(big);
  big[used++] = '#';
  memset(big + used, 'x', big_len - used);
  big[big_len - 1] = '\n';
  big[big_len] = '\0';
  int ok = submit_raw("b_big", big, big_len, NULL, 0);
  free(big);
  REQUIRE(ok);
  /* an entry without a job field */
  redisReply *r = cmd("XADD %s * id b_nojob", K("jobs"));
  REQUIRE(r && r->type == REDIS_REPLY_STRING);
  freeReplyObject(r);
  /* an id that is not one: the job runs under its entry id */
  char entry[64] = "";
  job_text(text, sizeof text, "b_id", &good);
  r = cmd("XADD %s * id %s job %s", K("jobs"), "no spaces allowed", text);
  REQUIRE(r && r->type == REDIS_REPLY_STRING);
  snprintf(entry, sizeof entry, "%s", r->str);
  freeReplyObject(r);
  /* the next good job */
  REQUIRE(submit_job("g_after", &good));

  expect_failed("b_unknown", "bogus_field");
  expect_failed("b_alpha", "distill.alpha");
  expect_failed("b_big", "job:");
  char *er = hget(K("job:b_big"), "error");
  CHECK_CONTAINS(er, "over the limit");
  free(er);
  expect_failed("b_nojob", "job:");
  expect_failed(entry, "id:");
  char *st = wait_final("g_after", 30);
  CHECKF(st && !strcmp(st, "succeeded"), "g_after: %s", test__str(st));
  free(st);
  CHECK(hget_ll(K("job:g_after"), "attempt", -1) == 1);
  /* nothing left pending, nothing trained for the bad ones */
  CHECK(pending_jobs() == 0);
  CHECK(!exists_in("out/b_unknown") && !exists_in("out/b_alpha") && !exists_in("out/b_big"));
  CHECK(rint_cmd(-1, "XLEN %s", K("job:b_alpha:metrics")) == 0);
}

/* ---- 3. cancel a running job --------------------------------------------------------------------------- */

DTEST(test_cancel_running) {
  REQUIRE(begin("t3", 0));
  dmn *d = daemon_start("w3", 1, 10, 1);
  REQUIRE(d);
  REQUIRE(daemon_wait_up(d, 15));
  job_opts o = {.max_iter = 200000, .display = 10, .snapshot = 0};
  REQUIRE(submit_job("c1", &o));
  REQUIRE(wait_field_at_least("c1", "iter", 50, 30));
  /* the worker's hash lists the running job (heartbeat_s 1) */
  int listed = 0;
  const double end_listed = mono() + 10; /* bounded in count and time */
  for (int i = 0; i < 300 && !listed && mono() < end_listed; i++) {
    char *jobs = hget(K("worker:w3"), "jobs");
    listed = jobs && !strcmp(jobs, "c1");
    free(jobs);
    if (!listed) sleep_ms(10);
  }
  CHECK(listed);
  redisReply *r = cmd("HSET %s cancel 1", K("job:c1"));
  REQUIRE(r);
  freeReplyObject(r);
  double t0 = mono();
  char *st = wait_final("c1", 30);
  double dt = mono() - t0;
  CHECKF(st && !strcmp(st, "cancelled"), "state %s", test__str(st));
  free(st);
  CHECKF(dt < 5, "cancelled %.2f s after the request", dt);
  long long it = hget_ll(K("job:c1"), "iter", -1);
  printf("     c1: cancelled at iter %lld, %.2f s after the request\n", it, dt);
  CHECK(it >= 50 && it < 200000);
  CHECK(hget_ll(K("job:c1"), "last_snapshot_iter", -1) == it);
  char rel[128];
  snprintf(rel, sizeof rel, "out/c1/snapshots/c1_iter_%lld.caffemodel", it);
  CHECKF(exists_in(rel), "%s missing", rel);
  snprintf(rel, sizeof rel, "out/c1/snapshots/c1_iter_%lld.solverstate", it);
  CHECKF(exists_in(rel), "%s missing", rel);
  CHECK(newest_snapshot("c1") == it);
  /* events: one snapshot at the stop, then `state cancelled` at that iteration */
  redisReply *ev = xrange(K("job:c1:events"));
  REQUIRE(ev && ev->elements >= 2);
  const redisReply *last = ev->element[ev->elements - 1], *snap = ev->element[ev->elements - 2];
  char its[32];
  snprintf(its, sizeof its, "%lld", it);
  CHECK(ef_is(last, "type", "state") && ef_is(last, "state", "cancelled") && ef_is(last, "iter", its));
  CHECK(ef_is(snap, "type", "snapshot") && ef_is(snap, "iter", its));
  freeReplyObject(ev);
  CHECK(count_events("c1", "state", "succeeded") == 0);
  /* the worker is free again: the next job runs */
  job_opts small = {.max_iter = 4, .display = 2};
  REQUIRE(submit_job("c2", &small));
  st = wait_final("c2", 30);
  CHECKF(st && !strcmp(st, "succeeded"), "c2: %s", test__str(st));
  free(st);
}

int main(void) {
  if (daemon_main_begin()) return 1;
  RUN(test_setup);
  RUN(test_job_succeeds);
  RUN(test_bad_jobs);
  RUN(test_cancel_running);
  return daemon_main_end();
}
