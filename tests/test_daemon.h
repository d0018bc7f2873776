/* The harness of the daemon tests (tests/test_daemon*.c): `distilld --config FILE` end to end
 * against a real redis-server on a random loopback port, both started and stopped here
 * (docs/redis.md is the contract checked).
 *
 * Every process is started with fork/execv (redis-server found on PATH; without it the tests are
 * skipped), killed at exit (and by PR_SET_PDEATHSIG should the test die), and every wait is
 * bounded. Each test gets a fresh redis-server and key prefix (begin), and ends, REQUIRE or not,
 * with finish() (DTEST). test_setup makes the images and nets and trains the teacher the jobs
 * distil from. DD_TEST_ONLY=NAME runs the tests whose name holds NAME. DD_KEEP_TMP=1 keeps the
 * scratch directory; a failing test prints the tails of its daemons' and redis-server's logs.
 *
 * Before including it, define TEST_PROC_NAME (the program's name). */
#ifndef DD_TEST_DAEMON_H
#define DD_TEST_DAEMON_H

#include <hiredis/hiredis.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "test_images.h"
#include "test_proc.h"
#include "test_redis.h"

static char root[128];    /* /tmp/dd_daemon.XXXXXX: holds "outside" files */
static char tmp[192];     /* root/work: the daemons' working directory and data root */
static char redis_exe[PATH_MAX];
static int setup_ok;

/* ---- small helpers ----------------------------------------------------------------------------- */

static inline void path_in(char *buf, size_t len, const char *rel) { snprintf(buf, len, "%s/%s", tmp, rel); }

static inline int exists_in(const char *rel) {
  char p[512];
  path_in(p, sizeof p, rel);
  return access(p, F_OK) == 0;
}

/* ---- redis-server ---------------------------------------------------------------------------------- */

typedef struct {
  pid_t pid;
  int port, aof;
  char dir[256], log[300];
} redis_srv;

static redis_srv srv;

/* Starts redis-server on `port` (0: a free random one) in srv.dir; the test's connection goes there. */
static inline int redis_start(int port, int aof) {
  srv.aof = aof;
  int ok = redis_spawn(redis_exe, NULL, port, aof, srv.dir, srv.log, NULL, &srv.pid, &srv.port);
  rc_port = srv.port;
  return ok;
}

/* SIGTERM (a clean shutdown that writes the AOF), bounded; SIGKILL when it does not exit. */
static inline int redis_stop(void) { return redis_stop_pid(&srv.pid); }

/* Queues a job the way a pipeline with only redis-cli would (docs/redis.md). Writes the entry id
 * to `entry` when given. */
static inline int submit_raw(const char *id, const char *text, size_t len, char *entry, size_t entry_len) {
  redisReply *r = cmd("XGROUP CREATE %s distilld 0 MKSTREAM", K("jobs"));
  if (!r) return 0;
  freeReplyObject(r);
  if (id)
    r = cmd("XADD %s * id %s job %b", K("jobs"), id, text, len);
  else
    r = cmd("XADD %s * job %b", K("jobs"), text, len);
  int ok = r && r->type == REDIS_REPLY_STRING;
  if (ok && entry) snprintf(entry, entry_len, "%s", r->str);
  if (!ok) fprintf(stderr, "XADD %s: %s\n", id ? id : "(no id)", r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
  if (r) freeReplyObject(r);
  return ok;
}

/* The number of entries in the queue PREFIX:jobs (-1: no answer). */
static inline long long queue_len(void) { return rint_cmd(-1, "XLEN %s", K("jobs")); }

/* Waits (bounded) until job `id` has at least `n` events of `type`; 1 then, 0 on timeout. */
static inline int wait_events(const char *id, const char *type, int n, double timeout_s) {
  double end = mono() + timeout_s;
  for (int i = 0; i < (int)(timeout_s * 50) + 2 && mono() < end; i++) {
    if (count_events(id, type, NULL) >= n) return 1;
    sleep_ms(20);
  }
  return 0;
}

/* ---- daemons ------------------------------------------------------------------------------------- */

typedef struct {
  pid_t pid;
  int exited, status;
  char name[32], cfg[256], log[256];
} dmn;

#define MAX_DAEMONS 4
static dmn dmns[MAX_DAEMONS];
static int n_dmns;

/* More config text for the next daemons started (NULL: none). */
static const char *daemon_cfg_extra;

/* Starts `distilld --config` in tmp as worker `name`. */
static inline dmn *daemon_start(const char *name, int max_jobs, int lease_s, int heartbeat_s) {
  if (n_dmns >= MAX_DAEMONS) return NULL;
  dmn *d = &dmns[n_dmns++];
  memset(d, 0, sizeof *d);
  snprintf(d->name, sizeof d->name, "%s", name);
  snprintf(d->cfg, sizeof d->cfg, "%s/%s_%s.cfg", tmp, pfx, name);
  snprintf(d->log, sizeof d->log, "%s/%s_%s.log", tmp, pfx, name);
  wfile(d->cfg,
        "redis_host: \"127.0.0.1\"\nredis_port: %d\nkey_prefix: \"%s\"\nworker_name: \"%s\"\nmax_jobs: %d\n"
        "threads_per_job: 1\ndata_root: \".\"\noutput_root: \"out\"\nlease_s: %d\nheartbeat_s: %d\npoll_ms: 50\n"
        "drain_timeout_s: 10\nretention_s: 3600\nlog_level: INFO\nadvertise_host: \"127.0.0.1\"\n%s\n",
        srv.port, pfx, name, max_jobs, lease_s, heartbeat_s, daemon_cfg_extra ? daemon_cfg_extra : "");
  const char *argv[] = {DISTILLD_EXE, "--config", d->cfg, NULL};
  d->pid = spawn(argv, tmp, d->log);
  if (d->pid <= 0) return NULL;
  return d;
}

/* Waits (bounded) for the daemon to register: its worker hash exists. */
static inline int daemon_wait_up(const dmn *d, double timeout_s) {
  double end = mono() + timeout_s;
  for (int i = 0; i < (int)(timeout_s * 50) + 2 && mono() < end; i++) {
    if (rint_cmd(0, "EXISTS %s", K("worker:%s", d->name)) == 1) return 1;
    int st;
    if (waitpid(d->pid, &st, WNOHANG) == d->pid) return 0;
    sleep_ms(20);
  }
  return 0;
}

static inline void daemon_reap(dmn *d, int st) {
  d->exited = 1;
  d->status = st;
}

/* SIGTERM and a bounded wait; returns the wait status (-1: it had to be killed). */
static inline int daemon_term(dmn *d, int timeout_ms) {
  if (d->exited) return d->status;
  kill(d->pid, SIGTERM);
  int st = wait_exit(d->pid, timeout_ms);
  if (st == -1) {
    fprintf(stderr, "daemon %s did not exit within %d ms of SIGTERM: killing it\n", d->name, timeout_ms);
    kill_wait(d->pid);
  }
  daemon_reap(d, st);
  return st;
}

static inline void daemon_kill9(dmn *d) {
  if (d->exited) return;
  kill(d->pid, SIGKILL);
  int st = wait_exit(d->pid, 10000);
  daemon_reap(d, st);
}

/* ---- per-test setup and teardown ------------------------------------------------------------------- */

static double test_t0;
static pid_t proxy_pid; /* the delaying proxy of tests 10 and 11, when one runs */

/* A fresh redis-server (AOF when `aof`) and key prefix for this test. */
static inline int begin(const char *prefix, int aof) {
  test_t0 = mono();
  snprintf(pfx, sizeof pfx, "%s", prefix);
  n_dmns = 0;
  snprintf(srv.dir, sizeof srv.dir, "%s/redis_%s", root, prefix);
  mkdir(srv.dir, 0755);
  snprintf(srv.log, sizeof srv.log, "%s/redis.log", srv.dir);
  if (!redis_start(0, aof)) {
    test_print_tail("redis-server", srv.log, 30);
    return 0;
  }
  return rc_connect();
}

/* Stops what the test left running (daemons by SIGTERM: each must exit 0), checks the daemons'
 * logs for sanitizer reports, and on failure prints the logs' tails. */
static inline void finish(void) {
  for (int i = 0; i < n_dmns; i++) {
    dmn *d = &dmns[i];
    if (!d->exited) {
      int st = daemon_term(d, 20000);
      CHECKF(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon %s: wait status %d at the end of the test", d->name, st);
    }
    CHECKF(!test_log_has_sanitizer_report(d->log), "daemon %s: a sanitizer report in %s", d->name, d->log);
  }
  if (proxy_pid > 0) kill_wait(proxy_pid);
  proxy_pid = 0;
  rc_close();
  redis_stop();
  if (test__cur_failed) {
    for (int i = 0; i < n_dmns; i++) test_print_tail(dmns[i].name, dmns[i].log, 40);
    test_print_tail("redis-server", srv.log, 15);
  }
  printf("     %s: %.1f s\n", test__name, mono() - test_t0);
}

/* A test body that always ends with finish(), REQUIRE or not. */
#define DTEST(fn)                  \
  static void fn##_body(void);     \
  static void fn(void) {           \
    if (!setup_ok) {               \
      printf("SKIP %s\n", #fn);    \
      return;                      \
    }                              \
    if (getenv("DD_TEST_ONLY") &&  \
        !strstr(#fn, getenv("DD_TEST_ONLY"))) \
      return;                      \
    fn##_body();                   \
    finish();                      \
  }                                \
  static void fn##_body(void)

/* ---- data, nets and jobs ------------------------------------------------------------------------------ */

/* A train_val net (relative paths: they resolve against the daemon's working directory). */
static inline void write_student(const char *rel, const char *name, const char *train_list) {
  char p[512];
  path_in(p, sizeof p, rel);
  test_write_train_val(p, name, train_list, TEST_NET_BODY);
}

#define TEACHER_WEIGHTS "teacher_out/snapshots/teacher_iter_20.caffemodel"

typedef struct {
  int max_iter, display, test_interval, snapshot, teacher;
  const char *extra;      /* more text at the end (e.g. a bad field) */
  const char *output_dir; /* default out/NAME */
  const char *student;    /* default student.prototxt */
  const char *teacher_weights;
} job_opts;

/* A DistillJob text for job `name`. */
static inline void job_text(char *buf, size_t len, const char *name, const job_opts *o) {
  char out[256];
  if (o->output_dir)
    snprintf(out, sizeof out, "%s", o->output_dir);
  else
    snprintf(out, sizeof out, "out/%s", name);
  snprintf(buf, len,
           "name: \"%s\"\n"
           "%s%s%s"
           "student { net: \"%s\" }\n"
           "solver { base_lr: 0.05 momentum: 0.9 lr_policy: \"fixed\" max_iter: %d display: %d test_iter: 2"
           " test_interval: %d snapshot: %d random_seed: 5 }\n"
           "%s"
           "output_dir: \"%s\"\n%s",
           name, o->teacher ? "teacher { net: \"teacher_deploy.prototxt\" weights: \"" : "",
           o->teacher ? (o->teacher_weights ? o->teacher_weights : TEACHER_WEIGHTS) : "", o->teacher ? "\" }\n" : "",
           o->student ? o->student : "student.prototxt", o->max_iter, o->display, o->test_interval, o->snapshot,
           o->teacher ? "distill { temperature: 2 alpha: 0.5 }\n" : "", out, o->extra ? o->extra : "");
}

static inline int submit_job(const char *id, const job_opts *o) {
  char text[4096];
  job_text(text, sizeof text, id, o);
  return submit_raw(id, text, strlen(text), NULL, 0);
}

/* The highest N of out/NAME/snapshots/NAME_iter_N.solverstate on disk (-1: none). */
static inline int newest_snapshot(const char *name) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s/out/%s/snapshots", tmp, name);
  return test_newest_snapshot(dir, name);
}

/* Runs `distilld VERB ARGS --redis 127.0.0.1:PORT --prefix P` in tmp (stdout and stderr together). */
static inline int client(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int client(char **out, const char *fmt, ...) {
  char args[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  return test_distilld(out, tmp, "%s --redis 127.0.0.1:%d --prefix %s", args, srv.port, pfx);
}

/* ---- setup: images, nets, a trained teacher -------------------------------------------------------- */

static void test_setup(void) {
  if (!find_exe(redis_exe, sizeof redis_exe, "redis-server")) {
    printf("SKIP: redis-server is not on PATH; the daemon tests need one (apt install redis-server)\n");
    return;
  }
  REQUIRE(test_make_images(tmp) == 0);
  write_student("student.prototxt", "student", "train.txt");
  write_student("teacher_train.prototxt", "teacher", "train.txt");
  char p[512];
  path_in(p, sizeof p, "teacher_deploy.prototxt");
  test_write_deploy(p, "teacher", TEST_NET_BODY);
  path_in(p, sizeof p, "teacher.job");
  wfile(p,
        "name: \"teacher\"\nstudent { net: \"teacher_train.prototxt\" }\n"
        "solver { base_lr: 0.1 momentum: 0.9 lr_policy: \"fixed\" max_iter: 20 display: 10 random_seed: 3 }\n"
        "output_dir: \"teacher_out\"\n");
  char *out = NULL;
  int st = test_distilld(&out, tmp, "train --job teacher.job --threads 1");
  CHECKF(st == 0, "the teacher's training: exit %d:\n%s", st, test__str(out));
  free(out);
  REQUIRE(exists_in(TEACHER_WEIGHTS));
  setup_ok = 1;
}

/* ---- main() ---------------------------------------------------------------------------------------- */

/* The start of main(): the scratch folders root and tmp (root/work), the children's killer, the
 * signals and the watchdog (under ctest's 300 s). 0 on success. */
static inline int daemon_main_begin(void) {
  if (proc_main_begin(root, sizeof root, "daemon", 290, NULL)) return -1;
  snprintf(tmp, sizeof tmp, "%s/work", root);
  return mkdir(tmp, 0755) != 0 ? -1 : 0;
}

/* The end of main(): every child killed, the scratch folder removed (not with DD_KEEP_TMP). */
static inline int daemon_main_end(void) { return proc_main_end(root, NULL); }

#endif
