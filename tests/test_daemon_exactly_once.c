/* The daemon end to end (the harness: tests/test_daemon.h): exactly once under duplicate and
 * retried queue entries, bounded attempts, what an owner that lost its job logs, bad entries.
 *
 * 1. A second entry for a running job (a pipeline's retried XADD): refused, acknowledged and
 *    deleted with a 'duplicate' event; the job runs once (attempt 1, its iterations go on), the
 *    other daemon stays free. A new job XADDed twice runs once. A finished job's id reused by a raw
 *    XADD is refused with an event and a log line.
 * 2. A poison job (each worker that takes it dies): after max_attempts (3) takeovers the claim
 *    ends it failed with the attempts named; the killed workers leave P:workers.
 * 3. The job's hash deleted under its owner (Redis lost it): the owner logs that the job is gone,
 *    not that another worker took it, and takes the next job.
 *    Redis frozen for a whole job: every display interval is a metrics entry or counted in
 *    metrics_dropped.
 * 4. Bad entries: an id holding a NUL byte, two "job" fields: failed under the entry id with a
 *    named error; the ids they named are not touched. */
#define _GNU_SOURCE

#define TEST_PROC_NAME "test_daemon_exactly_once"
#include "test_daemon.h"

/* Waits (bounded) until job `id` runs on some worker with attempt `attempt` and iter >= `iter`;
 * writes the worker's name to `worker`. */
static int wait_running(const char *id, int attempt, long long iter, char *worker, size_t len, double timeout_s) {
  double end = mono() + timeout_s;
  for (int i = 0; i < (int)(timeout_s * 50) + 2 && mono() < end; i++) {
    char *s = hget(K("job:%s", id), "state"), *w = hget(K("job:%s", id), "worker");
    int ok = s && !strcmp(s, "running") && w && hget_ll(K("job:%s", id), "attempt", -1) == attempt &&
             hget_ll(K("job:%s", id), "iter", -1) >= iter;
    if (ok && worker) snprintf(worker, len, "%s", w);
    free(s);
    free(w);
    if (ok) return 1;
    sleep_ms(20);
  }
  return 0;
}

/* The `jobs` field of worker `name`'s hash (malloc'd; NULL when absent). */
static char *worker_jobs(const char *name) { return hget(K("worker:%s", name), "jobs"); }

/* The one 'duplicate' event of job `id` must name entry `entry` (NULL: any) and hold `reason`. */
static void check_duplicate_event(const char *id, const char *entry, const char *reason) {
  redisReply *ev = xrange(K("job:%s:events", id));
  int n = 0, named = 0, why = 0;
  for (size_t i = 0; ev && i < ev->elements; i++)
    if (ef_is(ev->element[i], "type", "duplicate")) {
      n++;
      named += !entry || ef_is(ev->element[i], "entry", entry);
      why += ef(ev->element[i], "reason") && strstr(ef(ev->element[i], "reason"), reason) != NULL;
    }
  if (ev) freeReplyObject(ev);
  CHECKF(n == 1 && named == 1 && why == 1, "%s: %d duplicate events, %d naming entry %s, %d saying \"%s\"", id, n, named,
         test__str(entry), why, reason);
}

/* ---- 1. duplicate and retried entries ----------------------------------------------------------------- */

DTEST(test_duplicate_entry_of_running_job) {
  REQUIRE(begin("x1", 0));
  dmn *a = daemon_start("wa", 1, 3, 1), *b = daemon_start("wb", 1, 3, 1);
  REQUIRE(a && b);
  REQUIRE(daemon_wait_up(a, 15) && daemon_wait_up(b, 15));
  job_opts o = {.max_iter = 200000, .display = 10, .snapshot = 50};
  char text[4096], e1[64], e2[64];
  job_text(text, sizeof text, "d1", &o);
  REQUIRE(submit_raw("d1", text, strlen(text), e1, sizeof e1));
  char owner[32];
  REQUIRE(wait_running("d1", 1, 20, owner, sizeof owner, 30));
  const char *other = !strcmp(owner, "wa") ? "wb" : "wa";
  /* the same entry again, as a pipeline that retries its XADD would */
  REQUIRE(submit_raw("d1", text, strlen(text), e2, sizeof e2));
  CHECKF(wait_events("d1", "duplicate", 1, 10), "no duplicate event for entry %s", e2);
  check_duplicate_event("d1", e2, "running on worker");
  long long it0 = hget_ll(K("job:d1"), "iter", -1);
  /* two leases later: still attempt 1 on the same worker, going on; the other worker idle */
  sleep_ms(7000);
  CHECK(hget_ll(K("job:d1"), "attempt", -1) == 1);
  char *w = hget(K("job:d1"), "worker"), *en = hget(K("job:d1"), "entry");
  CHECKF(w && !strcmp(w, owner), "worker %s, was %s", test__str(w), owner);
  CHECKF(en && !strcmp(en, e1), "entry %s, was %s", test__str(en), e1);
  free(w);
  free(en);
  long long it1 = hget_ll(K("job:d1"), "iter", -1);
  CHECKF(it1 > it0 + 50, "iterations stalled: %lld then %lld", it0, it1);
  char *oj = worker_jobs(other);
  CHECKF(oj && !oj[0], "worker %s runs \"%s\"", other, test__str(oj));
  free(oj);
  CHECK(queue_len() == 1);
  CHECK(pending_jobs() == 1);
  CHECK(count_events("d1", "state", "running") == 1);
  char *lg = test_file_contains(a->log, "refused") ? a->log : b->log;
  CHECKF(test_file_contains(lg, e2), "no log line names the refused entry %s", e2);
  /* the free worker takes the next job at once */
  job_opts s = {.max_iter = 4, .display = 2};
  REQUIRE(submit_job("d2", &s));
  char *st = wait_final("d2", 30);
  CHECKF(st && !strcmp(st, "succeeded"), "d2: %s", test__str(st));
  free(st);
  w = hget(K("job:d2"), "worker");
  CHECKF(w && !strcmp(w, other), "d2 ran on %s", test__str(w));
  free(w);
  redisReply *r = cmd("HSET %s cancel 1", K("job:d1"));
  if (r) freeReplyObject(r);
  st = wait_final("d1", 30);
  CHECKF(st && !strcmp(st, "cancelled"), "d1: %s", test__str(st));
  free(st);
  CHECK(hget_ll(K("job:d1"), "attempt", -1) == 1);
  CHECK(count_events("d1", "state", "running") == 1);
  CHECK(queue_len() == 0);
  CHECK(pending_jobs() == 0);
  /* a finished job's id reused by a raw XADD: refused with an event and a log line, not dropped */
  char e3[64];
  REQUIRE(submit_raw("d2", text, strlen(text), e3, sizeof e3));
  CHECKF(wait_events("d2", "duplicate", 1, 10), "no duplicate event for the reused id d2 (entry %s)", e3);
  check_duplicate_event("d2", e3, "succeeded already");
  st = hget(K("job:d2"), "state");
  CHECKF(st && !strcmp(st, "succeeded"), "d2 now %s", test__str(st));
  free(st);
  CHECK(hget_ll(K("job:d2"), "attempt", -1) == 1);
  CHECK(queue_len() == 0);
  CHECK(test_file_contains(a->log, e3) || test_file_contains(b->log, e3));
}

DTEST(test_retried_xadd_of_new_job) {
  REQUIRE(begin("x2", 0));
  dmn *a = daemon_start("wa", 1, 3, 1), *b = daemon_start("wb", 1, 3, 1);
  REQUIRE(a && b);
  REQUIRE(daemon_wait_up(a, 15) && daemon_wait_up(b, 15));
  job_opts o = {.max_iter = 300, .display = 10};
  char text[4096], e1[64], e2[64];
  job_text(text, sizeof text, "n1", &o);
  /* the pipeline's XADD, retried at once (its first answer was lost): two entries, no hash yet */
  REQUIRE(submit_raw("n1", text, strlen(text), e1, sizeof e1));
  REQUIRE(submit_raw("n1", text, strlen(text), e2, sizeof e2));
  char *st = wait_final("n1", 60);
  CHECKF(st && !strcmp(st, "succeeded"), "n1: %s", test__str(st));
  free(st);
  CHECK(wait_events("n1", "duplicate", 1, 10));
  check_duplicate_event("n1", NULL, "the job is");
  CHECK(hget_ll(K("job:n1"), "attempt", -1) == 1);
  CHECK(count_events("n1", "state", "running") == 1);
  CHECK(count_events("n1", "state", "succeeded") == 1);
  /* each iteration's metrics once */
  redisReply *m = xrange(K("job:n1:metrics"));
  CHECKF(m && m->elements == 30, "%zu metrics entries, want 30", m ? m->elements : 0);
  if (m) freeReplyObject(m);
  CHECK(queue_len() == 0);
  CHECK(pending_jobs() == 0);
}

/* ---- 2. a poison job: bounded attempts ---------------------------------------------------------------- */

DTEST(test_poison_job_bounded_attempts) {
  REQUIRE(begin("x3", 0));
  job_opts o = {.max_iter = 200000, .display = 10, .snapshot = 50};
  REQUIRE(submit_job("p1", &o));
  static const char *names[] = {"wa", "wb", "wc"};
  /* each worker that takes the job is killed -9 soon after: a job that kills its daemon */
  for (int k = 0; k < 3; k++) {
    dmn *d = daemon_start(names[k], 1, 2, 1);
    REQUIRE(d);
    char w[32];
    CHECKF(wait_running("p1", k + 1, 1, w, sizeof w, 30), "attempt %d never ran", k + 1);
    CHECKF(!strcmp(w, names[k]), "attempt %d on %s", k + 1, w);
    daemon_kill9(d);
  }
  dmn *last = daemon_start("wd", 1, 2, 1);
  REQUIRE(last);
  char *st = wait_final("p1", 30);
  CHECKF(st && !strcmp(st, "failed"), "p1: %s", test__str(st));
  free(st);
  CHECK(hget_ll(K("job:p1"), "attempt", -1) == 3);
  char *er = hget(K("job:p1"), "error");
  CHECK_CONTAINS(er, "gave up after 3 attempts (max_attempts 3)");
  CHECK_CONTAINS(er, "attempt 3 on worker wc stopped renewing its lease");
  free(er);
  CHECK(count_events("p1", "state", "running") == 3);
  CHECK(count_events("p1", "state", "failed") == 1);
  CHECK(queue_len() == 0);
  CHECK(pending_jobs() == 0);
  CHECK(test_file_contains(last->log, "gave up after 3 attempts"));
  /* wd is free: it runs the next job */
  job_opts s = {.max_iter = 4, .display = 2};
  REQUIRE(submit_job("p2", &s));
  st = wait_final("p2", 30);
  CHECKF(st && !strcmp(st, "succeeded"), "p2: %s", test__str(st));
  free(st);
  /* the killed workers leave P:workers once their hashes expire (3 heartbeats) */
  int pruned = 0;
  const double end = mono() + 10; /* bounded in count and time */
  for (int i = 0; i < 500 && !pruned && mono() < end; i++) {
    redisReply *r = cmd("SMEMBERS %s", K("workers"));
    pruned = r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 && !strcmp(r->element[0]->str, "wd");
    if (r) freeReplyObject(r);
    if (!pruned) sleep_ms(50);
  }
  CHECKF(pruned, "P:workers still lists killed workers");
}

/* ---- 3. the job vanished under its owner ------------------------------------------------------------ */

DTEST(test_owner_finds_job_gone) {
  REQUIRE(begin("x4", 0));
  dmn *a = daemon_start("wa", 1, 3, 1);
  REQUIRE(a);
  REQUIRE(daemon_wait_up(a, 15));
  job_opts o = {.max_iter = 200000, .display = 10};
  REQUIRE(submit_job("g1", &o));
  REQUIRE(wait_running("g1", 1, 20, NULL, 0, 30));
  /* what a Redis restart without persistence does to it, in one key */
  redisReply *r = cmd("DEL %s", K("job:g1"));
  if (r) freeReplyObject(r);
  int noticed = 0;
  const double end = mono() + 10; /* bounded in count and time */
  for (int i = 0; i < 500 && !noticed && mono() < end; i++) {
    noticed = test_file_contains(a->log, "lost the job's lease: the job is gone from Redis");
    if (!noticed) sleep_ms(20);
  }
  CHECKF(noticed, "wa did not log that g1 is gone");
  CHECK(!test_file_contains(a->log, "holds it now"));
  job_opts s = {.max_iter = 4, .display = 2};
  REQUIRE(submit_job("g2", &s));
  char *st = wait_final("g2", 30);
  CHECKF(st && !strcmp(st, "succeeded"), "g2: %s", test__str(st));
  free(st);
}

/* The worker's max_job_memory_mb caps what a job may take: a student whose parameters alone are
 * about 6 MiB (an InnerProduct of 200000 outputs) fails under a 2 MiB cap naming the limit, before
 * an iteration; the same job runs on a worker without a cap. */
DTEST(test_worker_memory_cap) {
  REQUIRE(begin("x6", 0));
  char p[512];
  path_in(p, sizeof p, "wide_student.prototxt");
  REQUIRE(test_write_train_val(p, "wide", "train.txt",
                               "layer { name: 's_pool' type: 'Pooling' bottom: 'data' top: 's_pool' pooling_param { pool: AVE "
                               "global_pooling: true } }\n"
                               "layer { name: 'fc' type: 'InnerProduct' bottom: 's_pool' top: 'fc' inner_product_param { "
                               "num_output: 200000 weight_filler { type: 'gaussian' std: 0.01 } } }\n") == 0);
  daemon_cfg_extra = "max_job_memory_mb: 2";
  dmn *a = daemon_start("wa", 1, 10, 1);
  daemon_cfg_extra = NULL;
  REQUIRE(a);
  REQUIRE(daemon_wait_up(a, 15));
  job_opts o = {.max_iter = 2, .display = 1, .student = "wide_student.prototxt"};
  REQUIRE(submit_job("m1", &o));
  char *st = wait_final("m1", 60);
  CHECKF(st && !strcmp(st, "failed"), "m1: %s", test__str(st));
  free(st);
  char *er = hget(K("job:m1"), "error");
  CHECK_CONTAINS(er, "memory limit");
  free(er);
  CHECK(hget_ll(K("job:m1"), "iter", 0) == 0);
  dmn *b = daemon_start("wb", 1, 10, 1);
  REQUIRE(b);
  REQUIRE(daemon_wait_up(b, 15));
  kill(a->pid, SIGTERM);
  daemon_reap(a, wait_exit(a->pid, 15000));
  REQUIRE(submit_job("m2", &o));
  st = wait_final("m2", 60);
  CHECKF(st && !strcmp(st, "succeeded"), "m2: %s", test__str(st));
  free(st);
}

/* ---- 3b. every dropped metrics entry counted --------------------------------------------------------- */

/* Redis frozen (SIGSTOP: nothing answers, nothing disconnects) from the job's start to its end: the
 * ring fills, later metrics are dropped, the job's last item gets in. Once Redis runs again every
 * display interval is either a metrics entry or counted in metrics_dropped, the drops after the
 * last accepted entry included. */
DTEST(test_metrics_dropped_counts_every_drop) {
  REQUIRE(begin("x6", 0));
  dmn *a = daemon_start("wa", 1, 30, 1);
  REQUIRE(a);
  REQUIRE(daemon_wait_up(a, 15));
  enum { ITERS = 6000 };
  job_opts o = {.max_iter = ITERS, .display = 1};
  REQUIRE(submit_job("m1", &o));
  REQUIRE(wait_running("m1", 1, 1, NULL, 0, 30));
  kill(srv.pid, SIGSTOP);
  int done = 0;
  const double end = mono() + 60; /* bounded in count and time */
  for (int i = 0; i < 6000 && !done && mono() < end; i++) {
    done = test_file_contains(a->log, "succeeded at iter");
    if (!done) sleep_ms(10);
  }
  kill(srv.pid, SIGCONT);
  REQUIRE(done);
  char *st = wait_final("m1", 30);
  CHECKF(st && !strcmp(st, "succeeded"), "m1: %s", test__str(st));
  free(st);
  long long dropped = hget_ll(K("job:m1"), "metrics_dropped", 0);
  long long kept = rint_cmd(-1, "XLEN %s", K("job:m1:metrics"));
  printf("     m1: %lld metrics entries kept, %lld dropped, of %d\n", kept, dropped, ITERS);
  CHECK(dropped > 0);
  CHECKF(kept + dropped == ITERS, "%lld kept + %lld dropped != %d display intervals", kept, dropped, ITERS);
}

/* ---- 4. bad entries ------------------------------------------------------------------------------------ */

/* The failure of a bad entry, recorded under its entry id `entry`: holds `want`. */
static void check_entry_failed(const char *entry, const char *want) {
  char *st = wait_final(entry, 30);
  CHECKF(st && !strcmp(st, "failed"), "entry %s: %s", entry, test__str(st));
  free(st);
  char *er = hget(K("job:%s", entry), "error");
  CHECK_CONTAINS(er, want);
  free(er);
}

DTEST(test_bad_entries_refused) {
  REQUIRE(begin("x5", 0));
  dmn *a = daemon_start("wa", 1, 3, 1);
  REQUIRE(a);
  REQUIRE(daemon_wait_up(a, 15));
  job_opts o = {.max_iter = 4, .display = 2};
  char text[4096];
  job_text(text, sizeof text, "b1", &o);
  redisReply *r = cmd("XADD %s * id %b job %b", K("jobs"), "ab\0cd", (size_t)5, text, strlen(text));
  REQUIRE(r && r->type == REDIS_REPLY_STRING);
  char e1[64];
  snprintf(e1, sizeof e1, "%s", r->str);
  freeReplyObject(r);
  r = cmd("XADD %s * id b2 job %b job %b", K("jobs"), text, strlen(text), text, strlen(text));
  REQUIRE(r && r->type == REDIS_REPLY_STRING);
  char e2[64];
  snprintf(e2, sizeof e2, "%s", r->str);
  freeReplyObject(r);
  check_entry_failed(e1, "holds a NUL byte");
  check_entry_failed(e2, "two \"job\" fields");
  CHECK(rint_cmd(-1, "EXISTS %s", K("job:ab")) == 0);
  CHECK(rint_cmd(-1, "EXISTS %s", K("job:b2")) == 0);
  CHECK(queue_len() == 0);
  REQUIRE(submit_job("b3", &o));
  char *st = wait_final("b3", 30);
  CHECKF(st && !strcmp(st, "succeeded"), "b3: %s", test__str(st));
  free(st);
}

int main(void) {
  if (daemon_main_begin()) return 1;
  RUN(test_setup);
  RUN(test_duplicate_entry_of_running_job);
  RUN(test_retried_xadd_of_new_job);
  RUN(test_poison_job_bounded_attempts);
  RUN(test_owner_finds_job_gone);
  RUN(test_worker_memory_cap);
  RUN(test_metrics_dropped_counts_every_drop);
  RUN(test_bad_entries_refused);
  return daemon_main_end();
}
