/* Multi-node data parallel end to end: `distilld train --job J --node K --config C --advertise
 * 127.0.0.1` processes meeting through a real redis-server on a random loopback port (started and
 * stopped here; without redis-server on PATH the tests are skipped), on a tiny distillation job (a
 * small conv teacher trained first by `distilld train`, a student of two convolutions without
 * BatchNorm, 8 x 8 images):
 *
 * 1. 2 nodes x 2 CPU ranks end as 1 process x 4 CPU ranks, up to the order of the sums (largest
 *    relative weight difference under 1e-5), both nodes exiting 0; node 1, started first, outlives
 *    a stale rendezvous text (a closed port) left in Redis; node 0 withdraws its text.
 * 2. kill -9 of node 1 mid-run: node 0 exits non-zero within seconds naming node 1 and the closed
 *    connection; both restarted with --resume finish, node 1 with a job copy whose output_dir is
 *    another, empty directory (only rank 0 reads and writes snapshots: node 1 gets the state over
 *    the wire), and end as 1 process x 4 ranks resumed from the same snapshot. And kill -9 of
 *    node 0 mid-run: node 1 exits non-zero within seconds, naming node 0's closed connection.
 *    SIGTERM to node 1: both nodes stop at the same iteration, node 0 snapshots it, both exit 0.
 * 3. Bad usage: --node out of range, no --node for a 2-node job, --node for a 1-node job (exit 2
 *    with a message); a node whose job names other teacher weights (the teacher checksum check
 *    fails both nodes); node 0 or node 1 alone gives up after rendezvous_timeout_s, naming why.
 *
 * Every process is started with fork/execv, every wait is bounded, and every child is killed at
 * exit (and by PR_SET_PDEATHSIG should the test die). DD_KEEP_TMP=1 keeps the scratch directory; a
 * failing test prints the tails of its processes' logs. */
#define _GNU_SOURCE
#include <dirent.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "test_images.h"
#include "test_models.h"
#define TEST_PROC_NAME "test_multinode"
#include "test_proc.h"
#include "test_redis.h"

static char tmp[128]; /* /tmp/dd_multinode.XXXXXX: the processes' working directory */
static char redis_exe[PATH_MAX];
static int setup_ok;

/* ---- small helpers ----------------------------------------------------------------------------- */

static void path_in(char *buf, size_t len, const char *rel) { snprintf(buf, len, "%s/%s", tmp, rel); }

static int exists_in(const char *rel) {
  char p[512];
  path_in(p, sizeof p, rel);
  return access(p, F_OK) == 0;
}

/* A whole file under tmp, NUL-terminated, in a static buffer ("" when missing). */
static const char *slurp_in(const char *rel) {
  static char buf[1 << 20];
  char p[512];
  path_in(p, sizeof p, rel);
  FILE *f = fopen(p, "r");
  size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  if (f) fclose(f);
  buf[n] = '\0';
  return buf;
}

/* The first line of log `rel` that contains `needle`, into line ("" when none). */
static void log_line(char *line, size_t len, const char *rel, const char *needle) {
  const char *s = slurp_in(rel), *p = strstr(s, needle);
  line[0] = '\0';
  if (!p) return;
  while (p > s && p[-1] != '\n') p--;
  size_t n = strcspn(p, "\n");
  snprintf(line, len, "%.*s", (int)(n < len ? n : len - 1), p);
}

/* The last line of log `rel` (the error, when the process failed), into line. */
static void last_line(char *line, size_t len, const char *rel) { test_last_line(slurp_in(rel), line, len); }

static int log_has(const char *rel, const char *needle) { return strstr(slurp_in(rel), needle) != NULL; }

/* 1 once log `rel` contains `needle`, within `ms`. */
static int wait_log(const char *rel, const char *needle, int ms) {
  double end = mono() + ms / 1000.0;
  while (mono() < end) {
    if (log_has(rel, needle)) return 1;
    sleep_ms(50);
  }
  return log_has(rel, needle);
}

/* Prints the last `lines` lines of log `rel` to stderr. */
static void print_tail(const char *rel, int lines) {
  char p[512];
  path_in(p, sizeof p, rel);
  test_print_tail(rel, p, lines);
}

static int copy_in(const char *from, const char *to) {
  char a[512], b[512];
  path_in(a, sizeof a, from);
  path_in(b, sizeof b, to);
  return test_copy_file(a, b);
}

static void mkdir_in(const char *rel) {
  char p[512];
  path_in(p, sizeof p, rel);
  mkdir(p, 0755);
}

/* The highest N of DIR/NAME_iter_N.solverstate (-1: none). */
static int newest_snapshot(const char *dir_rel, const char *name) {
  char dir[512];
  path_in(dir, sizeof dir, dir_rel);
  return test_newest_snapshot(dir, name);
}

/* Files in DIR (0 when it does not exist). */
static int count_files(const char *dir_rel) {
  char dir[512];
  path_in(dir, sizeof dir, dir_rel);
  return test_count_files(dir);
}

/* ---- the models ------------------------------------------------------------------------------------ */

static Caffe__NetParameter *read_model(const char *rel) {
  char path[512];
  path_in(path, sizeof path, rel);
  return test_read_model(path);
}

/* Largest relative difference over every blob of two models with the same layers. */
static double model_rel_diff(const char *rel_a, const char *rel_b) {
  Caffe__NetParameter *a = read_model(rel_a), *b = read_model(rel_b);
  double worst = test_model_diff(a, b, NULL);
  if (a) caffe__net_parameter__free_unpacked(a, NULL);
  if (b) caffe__net_parameter__free_unpacked(b, NULL);
  return worst;
}

/* ---- redis-server and the test's connection to it ---------------------------------------------------- */

static pid_t redis_pid;
static int redis_port;

/* redis-server on a free random port, and the test's connection to it (tests/test_redis.h). */
static int redis_start(void) {
  char dir[256];
  path_in(dir, sizeof dir, "redis");
  mkdir(dir, 0755);
  if (!redis_spawn(redis_exe, NULL, 0, 0, dir, "redis.log", NULL, &redis_pid, &redis_port)) return 0;
  rc_port = redis_port;
  return rc_connect();
}

static void redis_stop(void) {
  rc_close();
  redis_stop_pid(&redis_pid);
}

/* EXISTS key: 1, 0, or -1 when Redis did not answer. */
static long long redis_exists(const char *key) { return rint_cmd(-1, "EXISTS %s", key); }

/* ---- the nets, the teacher and the jobs --------------------------------------------------------------- */

/* A train_val net over img/ (batch 8: 2 images per rank on 4 ranks); no BatchNorm, so 4 ranks x 2
 * images are 1 rank x 8 up to the order of the sums. */
static void write_train_val(const char *rel, const char *name) {
  char p[512];
  path_in(p, sizeof p, rel);
  test_write_train_val(p, name, "train.txt", TEST_NET_BODY);
}

#define TEACHER_20 "teacher_out/snapshots/teacher_iter_20.caffemodel"
#define TEACHER_10 "teacher_out/snapshots/teacher_iter_10.caffemodel"

static int rdzv_timeout_s = 30; /* the jobs' rendezvous_timeout_s */

/* A distillation job file under tmp: `devices` CPU ranks per node, `nodes` nodes (1: no nodes
 * line); test_interval 0: no tests. */
static void write_job(const char *rel, const char *name, const char *out, const char *teacher, int max_iter,
                      int test_interval, int nodes, int devices) {
  char p[512], dev[256] = "", nd[64] = "";
  for (int k = 0; k < devices; k++) strcat(dev, "device: 'cpu' ");
  if (nodes > 1) snprintf(nd, sizeof nd, "nodes: %d rendezvous_timeout_s: %d\n", nodes, rdzv_timeout_s);
  path_in(p, sizeof p, rel);
  wfile(p,
        "name: '%s'\n"
        "teacher { net: 'teacher_deploy.prototxt' weights: '%s' }\n"
        "student { net: 'student.prototxt' }\n"
        "solver { base_lr: 0.05 momentum: 0.9 weight_decay: 0.0005 lr_policy: 'fixed' max_iter: %d display: 2"
        " test_iter: 2 test_interval: %d snapshot: 4 random_seed: 13 }\n"
        "distill { temperature: 2 alpha: 0.5 }\n"
        "output_dir: '%s'\n%s%s\n",
        name, teacher, max_iter, test_interval > 0 ? test_interval : 1000000000, out, nd, dev);
}

/* `distilld train --job JOB [--node K] --config mn.conf --advertise 127.0.0.1 --threads 1 [--resume]`
 * in tmp, output to LOG (node < 0: no --node). */
static pid_t start_train(const char *job, int node, int resume, const char *log) {
  char ns[16];
  snprintf(ns, sizeof ns, "%d", node);
  const char *argv[16];
  int n = 0;
  argv[n++] = DISTILLD_EXE;
  argv[n++] = "train";
  argv[n++] = "--job";
  argv[n++] = job;
  if (node >= 0) {
    argv[n++] = "--node";
    argv[n++] = ns;
  }
  argv[n++] = "--config";
  argv[n++] = "mn.conf";
  argv[n++] = "--advertise";
  argv[n++] = "127.0.0.1";
  argv[n++] = "--threads";
  argv[n++] = "1";
  if (resume) argv[n++] = "--resume";
  argv[n] = NULL;
  char lp[512];
  path_in(lp, sizeof lp, log);
  remove(lp);
  return spawn(argv, tmp, lp);
}

/* Runs `distilld train` to the end (bounded by ms); its exit code, or -1 when it was killed. */
static int run_train(const char *job, int node, int resume, const char *log, int ms) {
  pid_t pid = start_train(job, node, resume, log);
  if (pid <= 0) return -1;
  int st = wait_exit(pid, ms);
  if (st == -1) {
    fprintf(stderr, "%s: still running after %d ms: killed\n", log, ms);
    kill_wait(pid);
  }
  return exit_code(st);
}

/* Waits for node 0 and node 1 (bounded); their exit codes. */
static void wait_nodes(pid_t n0, pid_t n1, int ms, int *c0, int *c1) {
  double end = mono() + ms / 1000.0;
  int s0 = wait_exit(n0, ms);
  int left = (int)((end - mono()) * 1000);
  int s1 = wait_exit(n1, left > 5000 ? left : 5000);
  if (s0 == -1) kill_wait(n0);
  if (s1 == -1) kill_wait(n1);
  *c0 = exit_code(s0);
  *c1 = exit_code(s1);
}

/* ---- setup: redis-server, images, nets, the teacher ---------------------------------------------------- */

static void test_setup(void) {
  if (!find_exe(redis_exe, sizeof redis_exe, "redis-server")) {
    printf("SKIP: redis-server is not on PATH; the multi-node tests need one (apt install redis-server)\n");
    return;
  }
  REQUIRE(redis_start());
  char p[512];
  path_in(p, sizeof p, "mn.conf");
  REQUIRE(wfile(p, "redis_host: \"127.0.0.1\"\nredis_port: %d\nkey_prefix: \"mn\"\n", redis_port));
  REQUIRE(test_make_images(tmp) == 0);
  write_train_val("student.prototxt", "student");
  write_train_val("teacher_train.prototxt", "teacher");
  path_in(p, sizeof p, "teacher_deploy.prototxt");
  test_write_deploy(p, "teacher", TEST_NET_BODY);
  path_in(p, sizeof p, "teacher.job");
  wfile(p,
        "name: 'teacher'\nstudent { net: 'teacher_train.prototxt' }\n"
        "solver { base_lr: 0.1 momentum: 0.9 lr_policy: 'fixed' max_iter: 20 display: 10 snapshot: 10 random_seed: 3 }\n"
        "output_dir: 'teacher_out'\n");
  double t0 = mono();
  int code = run_train("teacher.job", -1, 0, "teacher.log", 60000);
  if (code != 0) print_tail("teacher.log", 20);
  CHECKF(code == 0, "the teacher's training: exit %d", code);
  REQUIRE(exists_in(TEACHER_20) && exists_in(TEACHER_10));
  printf("     redis-server on 127.0.0.1:%d; teacher trained (20 iterations) in %.2f s\n", redis_port, mono() - t0);
  setup_ok = 1;
}

#define NEED_SETUP()                    \
  do {                                  \
    if (!setup_ok) {                    \
      printf("SKIP %s\n", test__name);  \
      return;                           \
    }                                   \
  } while (0)

/* ---- 1. 2 nodes x 2 ranks = 1 process x 4 ranks --------------------------------------------------------- */

/* "X accuracy 0.1234" from a "job ...: done" line, or -1. */
static double accuracy_in(const char *line, const char *what) {
  char key[64];
  snprintf(key, sizeof key, "%s accuracy ", what);
  const char *p = strstr(line, key);
  return p ? atof(p + strlen(key)) : -1;
}

static void test_two_nodes_match_one(void) {
  NEED_SETUP();
  write_job("a2.job", "mna", "a_two", TEACHER_20, 20, 10, 2, 2);
  write_job("a1.job", "mna", "a_one", TEACHER_20, 20, 10, 1, 4);
  /* an earlier attempt's text, at a port nobody listens on: node 1 (first) must ask again */
  char stale[128];
  snprintf(stale, sizeof stale, "tcp 127.0.0.1 %d 00112233445566778899aabbccddeeff 2 2", closed_port());
  redisReply *r = redisCommand(rc, "HSET mn:rdzv:cli:mna text %s", stale);
  CHECK(r && r->type == REDIS_REPLY_INTEGER);
  if (r) freeReplyObject(r);
  double t0 = mono();
  pid_t n1 = start_train("a2.job", 1, 0, "a_node1.log");
  sleep_ms(1000);
  pid_t n0 = start_train("a2.job", 0, 0, "a_node0.log");
  REQUIRE(n0 > 0 && n1 > 0);
  int c0, c1;
  wait_nodes(n0, n1, 90000, &c0, &c1);
  double t_two = mono() - t0;
  CHECKF(c0 == 0 && c1 == 0, "node 0 exit %d, node 1 exit %d", c0, c1);
  CHECK(log_has("a_node0.log", "data parallel: node 0 of 2, 2 ranks on cpu, ... (4 ranks in all)"));
  CHECK(log_has("a_node1.log", "data parallel: node 1 of 2, 2 ranks on cpu, ... (4 ranks in all)"));
  CHECK(log_has("a_node0.log", "rendezvous through Redis at 127.0.0.1"));
  char l0[512], l1[512], l4[512];
  log_line(l0, sizeof l0, "a_node0.log", "job mna: done at iter 20");
  log_line(l1, sizeof l1, "a_node1.log", "job mna: done at iter 20");
  CHECKF(l0[0] && strstr(l0, "on 4 ranks"), "node 0: \"%s\"", l0);
  CHECKF(l1[0] && strstr(l1, "on 4 ranks"), "node 1: \"%s\"", l1);
  /* node 0 alone reports: node 1 prints no progress */
  CHECK(log_has("a_node0.log", "iter 18/20"));
  CHECK(!log_has("a_node1.log", "iter 18/20"));
  CHECK(redis_exists("mn:rdzv:cli:mna") == 0); /* node 0 withdrew its text once node 1 had joined */
  if (c0 || c1) {
    print_tail("a_node0.log", 30);
    print_tail("a_node1.log", 30);
  }
  /* the same job in one process, 4 ranks */
  t0 = mono();
  int c = run_train("a1.job", -1, 0, "a_one.log", 90000);
  double t_one = mono() - t0;
  CHECKF(c == 0, "one process x 4 ranks: exit %d", c);
  if (c) print_tail("a_one.log", 30);
  CHECK(log_has("a_one.log", "data parallel: 4 ranks on cpu"));
  log_line(l4, sizeof l4, "a_one.log", "job mna: done at iter 20");
  CHECKF(l4[0] && strstr(l4, "on 4 ranks"), "one process: \"%s\"", l4);
  double ta2 = accuracy_in(l0, "teacher"), ta1 = accuracy_in(l4, "teacher");
  double sa2 = accuracy_in(l0, "student"), sa1 = accuracy_in(l4, "student");
  CHECKF(ta2 >= 0 && ta2 == ta1, "teacher accuracy %g on 2 nodes, %g in one process", ta2, ta1);
  CHECKF(sa2 >= 0 && fabs(sa2 - sa1) < 1e-3, "student accuracy %g on 2 nodes, %g in one process", sa2, sa1);
  double d = model_rel_diff("a_two/snapshots/mna_iter_20.caffemodel", "a_one/snapshots/mna_iter_20.caffemodel");
  CHECKF(d < 1e-5, "2 nodes x 2 ranks end %.3g away from 1 process x 4 ranks", d);
  printf("     2 nodes x 2 ranks in %.1f s (node 1 first, past a stale text), 1 process x 4 ranks in %.1f s; teacher "
         "accuracy %.4f / %.4f, student %.4f / %.4f; weights after 20 steps (2.5 epochs): largest relative "
         "difference %.3g\n",
         t_two, t_one, ta2, ta1, sa2, sa1, d);
}

/* ---- 2. a node killed mid-run, then both resumed -------------------------------------------------------- */

static void test_node_killed_then_resume(void) {
  NEED_SETUP();
  write_job("b2.job", "mnb", "b_out", TEACHER_20, 1000000, 0, 2, 2);
  pid_t n0 = start_train("b2.job", 0, 0, "b_node0.log"), n1 = start_train("b2.job", 1, 0, "b_node1.log");
  REQUIRE(n0 > 0 && n1 > 0);
  int snap = wait_log("b_node0.log", "snapshot at iter 4:", 60000);
  if (!snap) {
    print_tail("b_node0.log", 30);
    print_tail("b_node1.log", 30);
  }
  REQUIRE(snap);
  double t_kill = mono();
  kill_wait(n1);
  int st0 = wait_exit(n0, 30000);
  double t_fail = mono() - t_kill;
  if (st0 == -1) kill_wait(n0);
  int c0 = exit_code(st0);
  CHECKF(c0 > 0, "node 0: exit %d after node 1 was killed (wait status %d)", c0, st0);
  CHECKF(t_fail < 5, "node 0 took %.1f s to fail", t_fail);
  char line[1024];
  last_line(line, sizeof line, "b_node0.log");
  CHECKF(strstr(line, "node 1") && strstr(line, "closed"), "node 0's error: \"%s\"", line);
  if (!line[0]) print_tail("b_node0.log", 30);
  int s = newest_snapshot("b_out/snapshots", "mnb");
  printf("     node 1 killed -9 once node 0 had snapshotted iter 4: node 0 exit %d after %.2f s: \"%s\"; "
         "newest snapshot: iter %d\n", c0, t_fail, line, s);
  REQUIRE(s >= 4);
  /* the reference: one process x 4 ranks resuming from a copy of that snapshot */
  char a[256], b[256];
  mkdir_in("b_ref");
  mkdir_in("b_ref/snapshots");
  for (int k = 0; k < 2; k++) {
    const char *ext = k ? "solverstate" : "caffemodel";
    snprintf(a, sizeof a, "b_out/snapshots/mnb_iter_%d.%s", s, ext);
    snprintf(b, sizeof b, "b_ref/snapshots/mnb_iter_%d.%s", s, ext);
    REQUIRE(copy_in(a, b));
  }
  /* both nodes again, --resume, to 4 iterations past the snapshot; node 1's copy of the job writes
   * to another directory, empty: only rank 0 reads the snapshot, node 1 gets the state over TCP */
  int end = s + 4;
  write_job("b2.job", "mnb", "b_out", TEACHER_20, end, 0, 2, 2);
  write_job("b2_node1.job", "mnb", "b_node1_out", TEACHER_20, end, 0, 2, 2);
  write_job("b1.job", "mnb", "b_ref", TEACHER_20, end, 0, 1, 4);
  double t0 = mono();
  n0 = start_train("b2.job", 0, 1, "b_node0_resume.log");
  n1 = start_train("b2_node1.job", 1, 1, "b_node1_resume.log");
  REQUIRE(n0 > 0 && n1 > 0);
  int c1;
  wait_nodes(n0, n1, 90000, &c0, &c1);
  double t_resume = mono() - t0;
  CHECKF(c0 == 0 && c1 == 0, "resumed: node 0 exit %d, node 1 exit %d", c0, c1);
  if (c0 || c1) {
    print_tail("b_node0_resume.log", 30);
    print_tail("b_node1_resume.log", 30);
  }
  char want[256];
  snprintf(want, sizeof want, "resumed from b_out/snapshots/mnb_iter_%d.solverstate", s);
  CHECK(log_has("b_node0_resume.log", want));
  /* iterations before the snapshot are not redone */
  for (int it = 0; it < s; it += 2) {
    snprintf(want, sizeof want, "iter %d/%d ", it, end);
    CHECKF(!log_has("b_node0_resume.log", want), "\"%s\" redone after the resume", want);
  }
  snprintf(want, sizeof want, "iter %d/%d ", s, end);
  CHECK(log_has("b_node0_resume.log", want));
  /* node 1 reports the iteration it ended at: the snapshot's + 4, though its own directory is empty */
  char l1[512];
  snprintf(want, sizeof want, "job mnb: done at iter %d", end);
  log_line(l1, sizeof l1, "b_node1_resume.log", want);
  CHECKF(l1[0] != '\0', "node 1 did not report \"%s\"", want);
  snprintf(want, sizeof want, "b_out/snapshots/mnb_iter_%d.caffemodel", end);
  CHECK(exists_in(want));
  CHECKF(count_files("b_node1_out/snapshots") == 0, "node 1 wrote %d files into its snapshots directory",
         count_files("b_node1_out/snapshots"));
  t0 = mono();
  int c = run_train("b1.job", -1, 1, "b_ref.log", 90000);
  double t_ref = mono() - t0;
  CHECKF(c == 0, "the reference resume: exit %d", c);
  if (c) print_tail("b_ref.log", 30);
  char fa[256], fb[256];
  snprintf(fa, sizeof fa, "b_out/snapshots/mnb_iter_%d.caffemodel", end);
  snprintf(fb, sizeof fb, "b_ref/snapshots/mnb_iter_%d.caffemodel", end);
  double d = model_rel_diff(fa, fb);
  CHECKF(d < 1e-5, "resumed on 2 nodes: %.3g away from 1 process x 4 ranks resumed", d);
  printf("     both resumed from iter %d to %d in %.1f s (node 1: \"%s\"); 1 process x 4 ranks resumed in %.1f s; "
         "largest relative difference %.3g\n",
         s, end, t_resume, l1, t_ref, d);
}

/* node 0, the middle of the star, killed -9: node 1 fails at once too */
static void test_node0_killed(void) {
  NEED_SETUP();
  write_job("k2.job", "mnk", "k_out", TEACHER_20, 1000000, 0, 2, 2);
  pid_t n0 = start_train("k2.job", 0, 0, "k_node0.log"), n1 = start_train("k2.job", 1, 0, "k_node1.log");
  REQUIRE(n0 > 0 && n1 > 0);
  int snap = wait_log("k_node0.log", "snapshot at iter 4:", 60000);
  if (!snap) print_tail("k_node1.log", 30);
  REQUIRE(snap);
  double t_kill = mono();
  kill_wait(n0);
  int st1 = wait_exit(n1, 30000);
  double t_fail = mono() - t_kill;
  if (st1 == -1) kill_wait(n1);
  int c1 = exit_code(st1);
  CHECKF(c1 > 0, "node 1: exit %d after node 0 was killed (wait status %d)", c1, st1);
  CHECKF(t_fail < 5, "node 1 took %.1f s to fail", t_fail);
  char line[1024];
  last_line(line, sizeof line, "k_node1.log");
  CHECKF(strstr(line, "node 0") && strstr(line, "closed"), "node 1's error: \"%s\"", line);
  printf("     node 0 killed -9 mid-run: node 1 exit %d after %.2f s: \"%s\"\n", c1, t_fail, line);
}

/* node 1 frozen (SIGSTOP: alive, its sockets open, reading nothing): node 0 fails once the job's
 * collective_timeout_s (2 s here) has passed, naming node 1, instead of waiting for ever */
static void test_node_frozen(void) {
  NEED_SETUP();
  write_job("f2.job", "mnf", "f_out", TEACHER_20, 1000000, 0, 2, 2);
  char p[512];
  path_in(p, sizeof p, "f2.job");
  FILE *f = fopen(p, "a");
  REQUIRE(f);
  fputs("collective_timeout_s: 2\n", f);
  fclose(f);
  pid_t n0 = start_train("f2.job", 0, 0, "f_node0.log"), n1 = start_train("f2.job", 1, 0, "f_node1.log");
  REQUIRE(n0 > 0 && n1 > 0);
  int snap = wait_log("f_node0.log", "snapshot at iter 4:", 60000);
  if (!snap) print_tail("f_node1.log", 30);
  REQUIRE(snap);
  double t_stop = mono();
  kill(n1, SIGSTOP);
  int st0 = wait_exit(n0, 30000);
  double t_fail = mono() - t_stop;
  if (st0 == -1) kill_wait(n0);
  kill(n1, SIGCONT);
  kill_wait(n1);
  int c0 = exit_code(st0);
  CHECKF(c0 > 0, "node 0: exit %d after node 1 froze (wait status %d)", c0, st0);
  CHECKF(t_fail >= 1.5 && t_fail < 10, "node 0 took %.1f s to fail", t_fail);
  char line[1024];
  last_line(line, sizeof line, "f_node0.log");
  CHECKF(strstr(line, "node 1") && strstr(line, "timeout"), "node 0's error: \"%s\"", line);
  printf("     node 1 frozen (SIGSTOP) mid-run: node 0 exit %d after %.2f s: \"%s\"\n", c0, t_fail, line);
}

/* SIGTERM to node 1, which reports nothing itself: the ranks vote, every node stops at the same
 * iteration, node 0 writes the snapshot there, and both exit 0 */
static void test_sigterm_stops_both(void) {
  NEED_SETUP();
  write_job("t2.job", "mnt", "t_out", TEACHER_20, 1000000, 0, 2, 2);
  pid_t n0 = start_train("t2.job", 0, 0, "t_node0.log"), n1 = start_train("t2.job", 1, 0, "t_node1.log");
  REQUIRE(n0 > 0 && n1 > 0);
  int snap = wait_log("t_node0.log", "snapshot at iter 4:", 60000);
  if (!snap) print_tail("t_node1.log", 30);
  REQUIRE(snap);
  double t_term = mono();
  kill(n1, SIGTERM);
  int c0, c1;
  wait_nodes(n0, n1, 30000, &c0, &c1);
  double t_stop = mono() - t_term;
  CHECKF(c0 == 0 && c1 == 0, "node 0 exit %d, node 1 exit %d", c0, c1);
  CHECKF(t_stop < 5, "the nodes took %.1f s to stop", t_stop);
  char l0[512], l1[512];
  log_line(l0, sizeof l0, "t_node0.log", "job mnt: stopped at iter ");
  log_line(l1, sizeof l1, "t_node1.log", "job mnt: stopped at iter ");
  int i0 = l0[0] ? atoi(l0 + strlen("job mnt: stopped at iter ")) : -1;
  int i1 = l1[0] ? atoi(l1 + strlen("job mnt: stopped at iter ")) : -2;
  CHECKF(i0 == i1 && i0 > 4, "node 0: \"%s\", node 1: \"%s\"", l0, l1);
  CHECKF(newest_snapshot("t_out/snapshots", "mnt") == i0, "newest snapshot %d, stopped at %d",
         newest_snapshot("t_out/snapshots", "mnt"), i0);
  printf("     SIGTERM to node 1: both stopped at iter %d and exited 0 within %.2f s; snapshot at iter %d\n", i0, t_stop,
         newest_snapshot("t_out/snapshots", "mnt"));
}

/* ---- 3. bad usage ------------------------------------------------------------------------------------- */

static void test_bad_usage(void) {
  NEED_SETUP();
  write_job("c2.job", "mnc", "c_out", TEACHER_20, 4, 0, 2, 2);
  write_job("c1.job", "mnc1", "c1_out", TEACHER_20, 4, 0, 1, 2);
  static const struct {
    const char *job;
    int node;
    const char *want;
  } cases[] = {
      {"c2.job", 2, "the job runs on 2 nodes: give --node 0 on the first machine and --node 1 on the other "
                    "(--node is out of range)"},
      {"c2.job", -1, "the job runs on 2 nodes: give --node 0 on the first machine and --node 1 on the other"},
      {"c1.job", 1, "--node 1, but the job runs on one node (set nodes: N in the job)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    double t0 = mono();
    int c = run_train(cases[i].job, cases[i].node, 0, "c_bad.log", 20000);
    double t = mono() - t0;
    char line[1024];
    last_line(line, sizeof line, "c_bad.log");
    CHECKF(c == 2, "case %zu: exit %d", i, c);
    CHECK_CONTAINS(line, cases[i].want);
    CHECKF(t < 10, "case %zu took %.1f s", i, t);
    char how[32] = "no --node";
    if (cases[i].node >= 0) snprintf(how, sizeof how, "--node %d", cases[i].node);
    printf("     %s %s: exit %d after %.2f s: \"%s\"\n", cases[i].job, how, c, t, line);
  }
  /* node 1's job names other teacher weights: the checksum check across ranks fails both nodes */
  write_job("c2_other.job", "mnc", "c_out_other", TEACHER_10, 4, 0, 2, 2);
  double t0 = mono();
  pid_t n0 = start_train("c2.job", 0, 0, "c_node0.log"), n1 = start_train("c2_other.job", 1, 0, "c_node1.log");
  REQUIRE(n0 > 0 && n1 > 0);
  int c0, c1;
  wait_nodes(n0, n1, 60000, &c0, &c1);
  double t = mono() - t0;
  CHECKF(c0 > 0 && c1 > 0, "node 0 exit %d, node 1 exit %d", c0, c1);
  char l0[1024], l1[1024];
  last_line(l0, sizeof l0, "c_node0.log");
  last_line(l1, sizeof l1, "c_node1.log");
  CHECK_CONTAINS(l0, "teacher: rank 2 loaded a teacher whose checksum differs from rank 0's");
  CHECK_CONTAINS(l1, "teacher: rank 2 loaded a teacher whose checksum differs from rank 0's");
  printf("     other teacher weights on node 1: exits %d / %d after %.1f s: \"%s\"\n", c0, c1, t, l0);
  /* a node alone: it gives up after the job's rendezvous_timeout_s, naming what it missed */
  rdzv_timeout_s = 2;
  write_job("c_alone.job", "mnalone", "c_alone_out", TEACHER_20, 4, 0, 2, 2);
  rdzv_timeout_s = 30;
  for (int node = 0; node < 2; node++) {
    t0 = mono();
    int c = run_train("c_alone.job", node, 0, "c_alone.log", 30000);
    t = mono() - t0;
    char line[1024];
    last_line(line, sizeof line, "c_alone.log");
    CHECKF(c == 2, "node %d alone: exit %d", node, c);
    CHECK_CONTAINS(line, node ? "rendezvous: node 1 could not join node 0 within 2 s (node 0 published nothing)"
                              : "rendezvous: 1 of 2 nodes joined within 2 s; missing node 1");
    CHECKF(t >= 1.9 && t < 10, "node %d alone gave up after %.1f s", node, t);
    printf("     node %d alone: exit %d after %.1f s: \"%s\"\n", node, c, t, line);
  }
  CHECK(redis_exists("mn:rdzv:cli:mnalone") == 0); /* node 0 withdrew its text when it gave up */
}

int main(void) {
  if (proc_main_begin(tmp, sizeof tmp, "multinode", 280, NULL)) return 1;
  RUN(test_setup);
  RUN(test_two_nodes_match_one);
  RUN(test_node_killed_then_resume);
  RUN(test_node0_killed);
  RUN(test_node_frozen);
  RUN(test_sigterm_stops_both);
  RUN(test_bad_usage);
  redis_stop();
  return proc_main_end(tmp, NULL);
}
