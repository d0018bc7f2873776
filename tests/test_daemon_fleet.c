/* The daemon end to end (the harness: tests/test_daemon.h): many jobs, ranks and nodes.
 *
 * 7. 200 tiny jobs through two daemons: each succeeds exactly once; both workers take some.
 *    A data-parallel job (two CPU ranks) through one daemon; one job on two nodes (two workers
 *    meet through Redis), with node 1's worker lost mid-job; a worker that runs node 0 leaves its
 *    own join entry to another worker at once. A worker with max_jobs_per_device 1 and two slots
 *    runs one job on its device at a time: the second waits (a cancel ends its wait). */
#define _GNU_SOURCE
#define TEST_PROC_NAME "test_daemon_fleet"
#include "test_daemon.h"

/* ---- 7. many tiny jobs through two daemons --------------------------------------------------------------- */

#define N_MANY 200

DTEST(test_many_jobs) {
  REQUIRE(begin("t7", 0));
  dmn *a = daemon_start("wa", 1, 10, 1), *b = daemon_start("wb", 1, 10, 1);
  REQUIRE(a && b);
  REQUIRE(daemon_wait_up(a, 15) && daemon_wait_up(b, 15));
  /* all queued at once, pipelined */
  redisReply *r = cmd("XGROUP CREATE %s distilld 0 MKSTREAM", K("jobs"));
  if (r) freeReplyObject(r);
  REQUIRE(rc_connect());
  job_opts o = {.max_iter = 2, .display = 1, .test_interval = 0, .snapshot = 0};
  char text[4096], id[32];
  double t0 = mono();
  for (int i = 0; i < N_MANY; i++) {
    snprintf(id, sizeof id, "m%03d", i);
    job_text(text, sizeof text, id, &o);
    redisAppendCommand(rc, "XADD %s * id %s job %s", K("jobs"), id, text);
  }
  int queued = 0;
  for (int i = 0; i < N_MANY; i++) {
    void *rep = NULL;
    if (redisGetReply(rc, &rep) != REDIS_OK) break;
    queued += ((redisReply *)rep)->type == REDIS_REPLY_STRING;
    freeReplyObject(rep);
  }
  REQUIRE(queued == N_MANY);
  /* wait for all to be final (bounded) */
  int n_final = 0;
  double end = mono() + 150;
  for (int k = 0; k < 3000 && mono() < end; k++) {
    if (!rc_connect()) break;
    for (int i = 0; i < N_MANY; i++) redisAppendCommand(rc, "HGET %s:job:m%03d state", pfx, i);
    n_final = 0;
    for (int i = 0; i < N_MANY; i++) {
      void *rep = NULL;
      if (redisGetReply(rc, &rep) != REDIS_OK) break;
      n_final += is_final(((redisReply *)rep)->type == REDIS_REPLY_STRING ? ((redisReply *)rep)->str : NULL);
      freeReplyObject(rep);
    }
    if (n_final == N_MANY) break;
    sleep_ms(100);
  }
  double dt = mono() - t0;
  CHECKF(n_final == N_MANY, "%d of %d jobs final after %.1f s", n_final, N_MANY, dt);
  /* each succeeded exactly once, on its first attempt */
  int n_succ = 0, n_once = 0, by_a = 0, by_b = 0, n_att1 = 0;
  for (int i = 0; i < N_MANY && rc_connect(); i++) {
    snprintf(id, sizeof id, "m%03d", i);
    char *st = hget(K("job:%s", id), "state");
    n_succ += st && !strcmp(st, "succeeded");
    if (!(st && !strcmp(st, "succeeded")) && n_succ + 5 > i) {
      char *er = hget(K("job:%s", id), "error");
      fprintf(stderr, "%s: %s %s\n", id, test__str(st), test__str(er));
      free(er);
    }
    free(st);
    n_att1 += hget_ll(K("job:%s", id), "attempt", -1) == 1;
    char *w = hget(K("job:%s", id), "worker");
    by_a += w && !strcmp(w, "wa");
    by_b += w && !strcmp(w, "wb");
    free(w);
    n_once += count_events(id, "state", "succeeded") == 1 && count_events(id, "state", "running") == 1;
  }
  printf("     %d jobs in %.1f s (%.0f ms each): %d by wa, %d by wb\n", N_MANY, dt, 1000 * dt / N_MANY, by_a, by_b);
  CHECKF(n_succ == N_MANY && n_once == N_MANY && n_att1 == N_MANY, "%d succeeded, %d exactly once, %d on attempt 1", n_succ,
         n_once, n_att1);
  CHECKF(by_a + by_b == N_MANY && by_a > 0 && by_b > 0, "wa %d, wb %d", by_a, by_b);
  CHECKF(rint_cmd(-1, "ZCARD %s", K("state:succeeded")) == N_MANY && rint_cmd(-1, "ZCARD %s", K("state:running")) == 0 &&
             rint_cmd(-1, "ZCARD %s", K("state:queued")) == 0,
         "jobs by state: succeeded %lld, running %lld, queued %lld", rint_cmd(-1, "ZCARD %s", K("state:succeeded")),
         rint_cmd(-1, "ZCARD %s", K("state:running")), rint_cmd(-1, "ZCARD %s", K("state:queued")));
  CHECK(pending_jobs() == 0);
  /* finished jobs leave the queue: the stream does not grow with every job ever run */
  CHECKF(rint_cmd(-1, "XLEN %s", K("jobs")) == 0, "%lld entries left in the queue", rint_cmd(-1, "XLEN %s", K("jobs")));
}

/* ---- a data-parallel job (two CPU ranks) through the daemon ------------------------------------------- */

DTEST(test_data_parallel_job) {
  REQUIRE(begin("tdp", 0));
  dmn *d = daemon_start("wdp", 1, 10, 1);
  REQUIRE(d);
  REQUIRE(daemon_wait_up(d, 15));
  job_opts o = {.max_iter = 20, .display = 5, .test_interval = 10, .snapshot = 10, .teacher = 1,
                .extra = "device: 'cpu' device: 'cpu'"};
  REQUIRE(submit_job("dp1", &o));
  char *st = wait_final("dp1", 60);
  CHECKF(st && !strcmp(st, "succeeded"), "dp1: %s (%s)", test__str(st), test__str(hget(K("job:dp1"), "error")));
  free(st);
  /* rank 0 alone reported: one metrics entry per display, one succeeded event, the teacher once */
  CHECKF(rint_cmd(-1, "XLEN %s", K("job:dp1:metrics")) == 4, "%lld metrics entries", rint_cmd(-1, "XLEN %s", K("job:dp1:metrics")));
  CHECK(count_events("dp1", "state", "succeeded") == 1);
  CHECK(count_events("dp1", "teacher", NULL) == 1);
  CHECK(hget_ll(K("job:dp1"), "iter", -1) == 20);
  CHECK(test_file_contains(d->log, "data parallel on 2 ranks"));
}

/* ---- 7c. one job on two nodes: two workers meet through Redis; a node lost mid-job ---------------------- */

DTEST(test_multinode_job) {
  REQUIRE(begin("tmn", 0));
  dmn *a = daemon_start("wma", 1, 10, 1), *b = daemon_start("wmb", 1, 10, 1);
  REQUIRE(a && b);
  REQUIRE(daemon_wait_up(a, 15) && daemon_wait_up(b, 15));
  job_opts o = {.max_iter = 20, .display = 5, .test_interval = 10, .snapshot = 10, .teacher = 1,
                .extra = "nodes: 2 rendezvous_timeout_s: 30\n"};
  REQUIRE(submit_job("mn1", &o));
  char *st = wait_final("mn1", 60);
  CHECKF(st && !strcmp(st, "succeeded"), "mn1: %s (%s)", test__str(st), test__str(hget(K("job:mn1"), "error")));
  free(st);
  /* node 0 reported alone; node 1 ran on the other worker; nothing is left in the queue or Redis */
  CHECKF(rint_cmd(-1, "XLEN %s", K("job:mn1:metrics")) == 4, "%lld metrics entries", rint_cmd(-1, "XLEN %s", K("job:mn1:metrics")));
  CHECK(count_events("mn1", "state", "succeeded") == 1);
  char *w0 = hget(K("job:mn1"), "worker"), *w1 = hget(K("job:mn1"), "node:1");
  CHECKF(w0 && w1 && strcmp(w0, w1) && (!strcmp(w1, "wma") || !strcmp(w1, "wmb")), "node 0 on %s, node 1 on %s",
         test__str(w0), test__str(w1));
  free(w0);
  free(w1);
  CHECK(rint_cmd(-1, "XLEN %s", K("jobs")) == 0);
  CHECK(rint_cmd(-1, "EXISTS %s", K("job:mn1:rdzv:1")) == 0);
  CHECK(test_file_contains(a->log, "joining as node 1") || test_file_contains(b->log, "joining as node 1"));

  /* node 1's worker killed -9 mid-job: node 0 fails the attempt at once and hands the job back; a new
   * worker joins attempt 2, which resumes from the last snapshot; then a cancel stops every node */
  job_opts o2 = {.max_iter = 1000000, .display = 100, .test_interval = 100000, .snapshot = 100, .teacher = 1,
                 .extra = "nodes: 2 rendezvous_timeout_s: 30\n"};
  REQUIRE(submit_job("mn2", &o2));
  CHECK(wait_field_at_least("mn2", "last_snapshot_iter", 100, 60));
  char *j1 = hget(K("job:mn2"), "node:1");
  REQUIRE(j1);
  dmn *joiner = !strcmp(j1, "wma") ? a : b;
  free(j1);
  double t_kill = mono();
  daemon_kill9(joiner);
  dmn *c = daemon_start("wmc", 1, 10, 1);
  REQUIRE(c);
  CHECK(wait_field_at_least("mn2", "attempt", 2, 30));
  printf("     node 1 killed: attempt 2 claimed %.1f s later\n", mono() - t_kill);
  CHECK(wait_field_at_least("mn2", "resumed_from", 100, 60));
  CHECK(wait_field_at_least("mn2", "iter", hget_ll(K("job:mn2"), "resumed_from", 0) + 100, 60));
  redisReply *r = cmd("HSET %s cancel 1", K("job:mn2"));
  if (r) freeReplyObject(r);
  st = wait_final("mn2", 60);
  CHECKF(st && !strcmp(st, "cancelled"), "mn2: %s (%s)", test__str(st), test__str(hget(K("job:mn2"), "error")));
  free(st);
  CHECK(count_events("mn2", "state", "queued") == 1); /* the hand-back after the lost node */
  char *ev = NULL;
  {
    redisReply *x = cmd("XRANGE %s - +", K("job:mn2:events"));
    for (size_t i = 0; x && x->type == REDIS_REPLY_ARRAY && i < x->elements && !ev; i++) {
      const redisReply *f = x->element[i]->element[1];
      for (size_t k = 0; k + 1 < f->elements; k += 2)
        if (strstr(f->element[k + 1]->str, "handing the job back")) ev = strdup(f->element[k + 1]->str);
    }
    if (x) freeReplyObject(x);
  }
  CHECKF(ev && strstr(ev, "node") && strstr(ev, "closed"), "hand-back event: %s", test__str(ev));
  if (ev) printf("     %s\n", ev);
  free(ev);
}

/* A worker with a free slot that runs node 0 of a job reads its own join entry: it must leave it to
 * another worker at once, not after lease_s (30 s here) */
DTEST(test_multinode_own_join) {
  REQUIRE(begin("tmj", 0));
  dmn *a = daemon_start("wj2", 2, 30, 1);
  REQUIRE(a);
  REQUIRE(daemon_wait_up(a, 15));
  job_opts o = {.max_iter = 20, .display = 5, .test_interval = 10, .snapshot = 10, .teacher = 1,
                .extra = "nodes: 2 rendezvous_timeout_s: 60\n"};
  REQUIRE(submit_job("mj1", &o));
  /* node 0 runs on wj2, which has a slot free and polls every 50 ms: it has seen its join entry */
  double end = mono() + 30;
  char *w = NULL;
  while (mono() < end && !(w = hget(K("job:mj1"), "worker"))) sleep_ms(20);
  REQUIRE(w && !strcmp(w, "wj2"));
  free(w);
  sleep_ms(1000);
  CHECK(rint_cmd(-1, "XLEN %s", K("jobs")) == 2); /* the job's entry and its join entry, still there */
  double t0 = mono();
  dmn *b = daemon_start("wj1", 1, 30, 1);
  REQUIRE(b);
  char *st = wait_final("mj1", 60);
  double took = mono() - t0;
  CHECKF(st && !strcmp(st, "succeeded"), "mj1: %s (%s)", test__str(st), test__str(hget(K("job:mj1"), "error")));
  free(st);
  char *n1 = hget(K("job:mj1"), "node:1");
  CHECKF(n1 && !strcmp(n1, "wj1"), "node 1 ran on %s", test__str(n1));
  free(n1);
  CHECKF(took < 15, "the second worker took %.1f s to join and finish (lease_s is 30)", took);
  printf("     node 0's worker left its own join entry; the second worker joined and the job finished %.1f s after "
         "it started\n", took);
}

/* ---- max_jobs_per_device: a worker's second job waits for a share of its device -------------------- */

/* 1 when job id's events hold a log line starting with `prefix`. */
static int has_log(const char *id, const char *prefix) {
  redisReply *r = xrange(K("job:%s:events", id));
  int found = 0;
  for (size_t i = 0; r && i < r->elements && !found; i++) {
    const char *m = ef(r->element[i], "msg");
    found = ef_is(r->element[i], "type", "log") && m && !strncmp(m, prefix, strlen(prefix));
  }
  if (r) freeReplyObject(r);
  return found;
}

static int wait_log(const char *id, const char *prefix, double timeout_s) {
  double end = mono() + timeout_s;
  while (mono() < end && !has_log(id, prefix)) sleep_ms(20);
  return has_log(id, prefix);
}

DTEST(test_device_shares) {
  REQUIRE(begin("t7d", 0));
  daemon_cfg_extra = "max_jobs_per_device: 1\n";
  dmn *a = daemon_start("wd", 2, 10, 1);
  daemon_cfg_extra = NULL;
  REQUIRE(a && daemon_wait_up(a, 15));
  job_opts big = {.max_iter = 1000000, .display = 10, .test_interval = 0, .snapshot = 0};
  job_opts small = {.max_iter = 3, .display = 1, .test_interval = 0, .snapshot = 0};
  REQUIRE(submit_job("d1", &big));
  REQUIRE(wait_field_at_least("d1", "iter", 10, 30));
  /* d2 takes the free slot and waits: "cpu" runs d1, and one job per device is the limit */
  REQUIRE(submit_job("d2", &small));
  CHECK(wait_log("d2", "waiting: cpu already runs 1 of this worker's jobs (max_jobs_per_device 1)", 20));
  sleep_ms(500);
  CHECKF(hget_ll(K("job:d2"), "iter", 0) == 0, "d2 trained while d1 held the device: iter %lld",
         hget_ll(K("job:d2"), "iter", 0));
  /* a cancel ends the wait */
  redisReply *r = cmd("HSET %s cancel 1", K("job:d2"));
  if (r) freeReplyObject(r);
  char *st = wait_final("d2", 20);
  CHECKF(st && !strcmp(st, "cancelled"), "d2 cancelled while waiting: %s (%s)", test__str(st),
         test__str(hget(K("job:d2"), "error")));
  free(st);
  /* the next one waits too, and starts when d1 ends */
  REQUIRE(submit_job("d3", &small));
  CHECK(wait_log("d3", "waiting: cpu", 20));
  r = cmd("HSET %s cancel 1", K("job:d1"));
  if (r) freeReplyObject(r);
  st = wait_final("d1", 30);
  CHECKF(st && !strcmp(st, "cancelled"), "d1: %s", test__str(st));
  free(st);
  st = wait_final("d3", 60);
  CHECKF(st && !strcmp(st, "succeeded"), "d3: %s (%s)", test__str(st), test__str(hget(K("job:d3"), "error")));
  free(st);
  CHECK(has_log("d3", "a device share is free: starting"));
  CHECK(hget_ll(K("job:d3"), "iter", 0) == 3);
  printf("     two slots, one share of cpu: the second job waited, a cancel ended its wait, the third started when "
         "the first ended\n");
}

int main(void) {
  if (daemon_main_begin()) return 1;
  RUN(test_setup);
  RUN(test_many_jobs);
  RUN(test_data_parallel_job);
  RUN(test_multinode_job);
  RUN(test_multinode_own_join);
  RUN(test_device_shares);
  return daemon_main_end();
}
