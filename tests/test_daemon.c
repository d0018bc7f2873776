/* The daemon (`distilld --config FILE`) end to end against a real redis-server on a random
 * loopback port, both started and stopped here (docs/redis.md is the contract checked):
 *
 * 1. A job succeeds: its hash, its metrics stream (one entry per display), its events stream
 *    (state, teacher, test, snapshot) and the worker's hash with its TTL.
 * 2. Bad entries fail with `error` naming the field (unknown field, alpha out of range, over
 *    1 MiB, no job field, a bad id) while the next good job succeeds.
 * 3. A running job cancelled through its hash stops early with a snapshot at the stop.
 * 4. kill -9 mid-job: a second daemon takes the job over after lease_s and resumes from the last
 *    snapshot the first one wrote (attempt 2; nothing before that snapshot is redone).
 * 5. SIGTERM mid-job: the daemon exits 0 after handing the job back with a snapshot; another
 *    daemon resumes it.
 * 6. Redis restarted mid-job (AOF on): the job succeeds and its metrics have no gap.
 * 7. 200 tiny jobs through two daemons: each succeeds exactly once; both workers take some.
 * 8. Paths outside the data roots / output root (.., absolute, symlinks) are refused.
 * 9. The client verbs (submit, status, cancel, list, watch) against a live daemon.
 * 10. Beyond the issue: SIGTERM while a claim's answer is still on its way (through a proxy that
 *     delays Redis's replies): the daemon exits 0 promptly and the job is not lost; a worker
 *     stopped (SIGSTOP) past its lease loses the job to another and, woken, stops writing it.
 *
 * Every process is started with fork/execv (redis-server found on PATH; without it the tests are
 * skipped), killed at exit (and by PR_SET_PDEATHSIG should the test die), and every wait is
 * bounded. Each test gets a fresh redis-server and key prefix. DD_TEST_ONLY=NAME runs the tests whose
 * name holds NAME. DD_KEEP_TMP=1 keeps the scratch
 * directory; a failing test prints the tails of its daemons' and redis-server's logs. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "data/imgdec.h"
#include "base/rng.h"
#include "test.h"
#include "test_images.h"
#define TEST_PROC_NAME "test_daemon"
#include "test_proc.h"

static char root[128];    /* /tmp/dd_daemon.XXXXXX: holds "outside" files */
static char tmp[192];     /* root/work: the daemons' working directory and data root */
static char redis_exe[PATH_MAX];
static int setup_ok;

/* ---- small helpers ----------------------------------------------------------------------------- */

static void path_in(char *buf, size_t len, const char *rel) { snprintf(buf, len, "%s/%s", tmp, rel); }

static int exists_in(const char *rel) {
  char p[512];
  path_in(p, sizeof p, rel);
  return access(p, F_OK) == 0;
}

/* Prints the last `lines` lines of a file to stderr. */
static void print_tail(const char *title, const char *path, int lines) {
  FILE *f = fopen(path, "r");
  if (!f) return;
  static char buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *p = buf + n;
  int seen = 0;
  while (p > buf && seen <= lines)
    if (*--p == '\n') seen++;
  if (*p == '\n') p++;
  fprintf(stderr, "---- %s (%s), last %d lines ----\n%s---- end of %s ----\n", title, path, lines, p, title);
}

static int file_contains(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[4096];
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

static int copy_file(const char *from, const char *to) {
  FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
  int ok = a && b;
  char buf[65536];
  size_t n;
  while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
  if (a) fclose(a);
  if (b && fclose(b) != 0) ok = 0;
  return ok;
}

/* ---- redis-server ---------------------------------------------------------------------------------- */

typedef struct {
  pid_t pid;
  int port, aof;
  char dir[256], log[300];
} redis_srv;

static redis_srv srv;
static redisContext *rc;
static char pfx[32]; /* this test's key_prefix */


/* Starts redis-server on `port` (0: a free random one) in srv.dir. */
static int redis_start(int port, int aof) {
  srv.aof = aof;
  for (int attempt = 0; attempt < 8; attempt++) {
    int p = port;
    if (!p) p = random_port();
    char ps[16];
    snprintf(ps, sizeof ps, "%d", p);
    const char *argv[] = {redis_exe, "--port", ps, "--bind", "127.0.0.1", "--save", "", "--appendonly", aof ? "yes" : "no",
                          "--dir", srv.dir, "--daemonize", "no", "--protected-mode", "yes", "--logfile", "", NULL};
    pid_t pid = spawn(argv, srv.dir, srv.log);
    if (pid < 0) return 0;
    if (redis_answers(p, pid, 10000)) {
      srv.pid = pid;
      srv.port = p;
      return 1;
    }
    kill_wait(pid);
    if (port) return 0; /* a fixed port: no other to try */
  }
  return 0;
}

/* SIGTERM (a clean shutdown that writes the AOF), bounded; SIGKILL when it does not exit. */
static int redis_stop(void) {
  if (srv.pid <= 0) return 1;
  kill(srv.pid, SIGTERM);
  int st = wait_exit(srv.pid, 10000);
  if (st == -1) kill_wait(srv.pid);
  srv.pid = 0;
  return st >= 0 && WIFEXITED(st);
}

/* ---- the test's own Redis connection (sync hiredis; reconnects after an outage) ------------------- */

static int rc_connect(void) {
  if (rc && !rc->err) return 1;
  if (rc) redisFree(rc);
  struct timeval tv = {1, 0};
  rc = redisConnectWithTimeout("127.0.0.1", srv.port, tv);
  if (!rc || rc->err) {
    if (rc) redisFree(rc);
    rc = NULL;
    return 0;
  }
  struct timeval io = {10, 0};
  redisSetTimeout(rc, io);
  return 1;
}

static void rc_close(void) {
  if (rc) redisFree(rc);
  rc = NULL;
}

/* One command (hiredis format); NULL when Redis is unreachable (the next call reconnects). */
static redisReply *cmd(const char *fmt, ...) {
  if (!rc_connect()) return NULL;
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(rc, fmt, ap);
  va_end(ap);
  if (!r) rc_close();
  return r;
}

/* "PREFIX:" + the rest, in one of 16 rotating buffers (copy a key that must live longer). */
static const char *K(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *K(const char *fmt, ...) {
  static char bufs[16][256];
  static int next;
  char *b = bufs[next++ % 16];
  int n = snprintf(b, 256, "%s:", pfx);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(b + n, 256 - (size_t)n, fmt, ap);
  va_end(ap);
  return b;
}

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* HGET as a malloc'd string; NULL when absent or unreachable. */
static char *hget(const char *key, const char *field) {
  redisReply *r = cmd("HGET %s %s", key, field);
  char *s = r && r->type == REDIS_REPLY_STRING ? xstrdup(r->str) : NULL;
  if (r) freeReplyObject(r);
  return s;
}

static long long hget_ll(const char *key, const char *field, long long dflt) {
  char *s = hget(key, field);
  long long v = s ? strtoll(s, NULL, 10) : dflt;
  free(s);
  return v;
}

static long long rint_cmd(long long dflt, const char *fmt, ...) {
  if (!rc_connect()) return dflt;
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(rc, fmt, ap);
  va_end(ap);
  if (!r) {
    rc_close();
    return dflt;
  }
  long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : dflt;
  freeReplyObject(r);
  return v;
}

/* Waits (bounded) until the job's state is final; returns it (malloc'd) or NULL on timeout. */
static char *wait_final(const char *id, double timeout_s) {
  double end = mono() + timeout_s;
  for (int i = 0; i < (int)(timeout_s * 20) + 2 && mono() < end; i++) {
    char *s = hget(K("job:%s", id), "state");
    if (is_final(s)) return s;
    free(s);
    sleep_ms(50);
  }
  return NULL;
}

/* Waits (bounded) until the job's hash field `field` reaches at least `min` while the job runs.
 * Returns 1 then; 0 on timeout or when the job became final first. */
static int wait_field_at_least(const char *id, const char *field, long long min, double timeout_s) {
  double end = mono() + timeout_s;
  for (int i = 0; i < (int)(timeout_s * 100) + 2 && mono() < end; i++) {
    char *s = hget(K("job:%s", id), "state");
    int fin = is_final(s);
    free(s);
    if (fin) return 0;
    if (hget_ll(K("job:%s", id), field, -1) >= min) return 1;
    sleep_ms(10);
  }
  return 0;
}

/* Stream entries: XRANGE key - + (the caller frees the reply). */
static redisReply *xrange(const char *key) {
  redisReply *r = cmd("XRANGE %s - +", key);
  if (r && r->type != REDIS_REPLY_ARRAY) {
    freeReplyObject(r);
    r = NULL;
  }
  return r;
}

/* A field of one stream entry ([id, [k, v, ...]]); NULL when absent. */
static const char *ef(const redisReply *e, const char *field) {
  if (!e || e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[1]->type != REDIS_REPLY_ARRAY) return NULL;
  const redisReply *kv = e->element[1];
  for (size_t i = 0; i + 1 < kv->elements; i += 2)
    if (kv->element[i]->type == REDIS_REPLY_STRING && !strcmp(kv->element[i]->str, field))
      return kv->element[i + 1]->type == REDIS_REPLY_STRING ? kv->element[i + 1]->str : NULL;
  return NULL;
}

static int ef_is(const redisReply *e, const char *field, const char *want) {
  const char *v = ef(e, field);
  return v && !strcmp(v, want);
}

/* The number of events of `type` (and, when `state` is given, with that state). */
static int count_events(const char *id, const char *type, const char *state) {
  redisReply *r = xrange(K("job:%s:events", id));
  int n = 0;
  for (size_t i = 0; r && i < r->elements; i++)
    if (ef_is(r->element[i], "type", type) && (!state || ef_is(r->element[i], "state", state))) n++;
  if (r) freeReplyObject(r);
  return n;
}

/* Queues a job the way a pipeline with only redis-cli would (docs/redis.md). Writes the entry id
 * to `entry` when given. */
static int submit_raw(const char *id, const char *text, size_t len, char *entry, size_t entry_len) {
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

/* ---- daemons ------------------------------------------------------------------------------------- */

typedef struct {
  pid_t pid;
  int exited, status;
  char name[32], cfg[256], log[256];
} dmn;

#define MAX_DAEMONS 4
static dmn dmns[MAX_DAEMONS];
static int n_dmns;

/* Starts `distilld --config` in tmp as worker `name`. */
static dmn *daemon_start(const char *name, int max_jobs, int lease_s, int heartbeat_s) {
  if (n_dmns >= MAX_DAEMONS) return NULL;
  dmn *d = &dmns[n_dmns++];
  memset(d, 0, sizeof *d);
  snprintf(d->name, sizeof d->name, "%s", name);
  snprintf(d->cfg, sizeof d->cfg, "%s/%s_%s.cfg", tmp, pfx, name);
  snprintf(d->log, sizeof d->log, "%s/%s_%s.log", tmp, pfx, name);
  wfile(d->cfg,
        "redis_host: \"127.0.0.1\"\nredis_port: %d\nkey_prefix: \"%s\"\nworker_name: \"%s\"\nmax_jobs: %d\n"
        "threads_per_job: 1\ndata_root: \".\"\noutput_root: \"out\"\nlease_s: %d\nheartbeat_s: %d\npoll_ms: 50\n"
        "drain_timeout_s: 10\nretention_s: 3600\nlog_level: INFO\nadvertise_host: \"127.0.0.1\"\n",
        srv.port, pfx, name, max_jobs, lease_s, heartbeat_s);
  const char *argv[] = {DISTILLD_EXE, "--config", d->cfg, NULL};
  d->pid = spawn(argv, tmp, d->log);
  if (d->pid <= 0) return NULL;
  return d;
}

/* Waits (bounded) for the daemon to register: its worker hash exists. */
static int daemon_wait_up(const dmn *d, double timeout_s) {
  double end = mono() + timeout_s;
  for (int i = 0; i < (int)(timeout_s * 50) + 2 && mono() < end; i++) {
    if (rint_cmd(0, "EXISTS %s", K("worker:%s", d->name)) == 1) return 1;
    int st;
    if (waitpid(d->pid, &st, WNOHANG) == d->pid) return 0;
    sleep_ms(20);
  }
  return 0;
}

static void daemon_reap(dmn *d, int st) {
  d->exited = 1;
  d->status = st;
}

/* SIGTERM and a bounded wait; returns the wait status (-1: it had to be killed). */
static int daemon_term(dmn *d, int timeout_ms) {
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

static void daemon_kill9(dmn *d) {
  if (d->exited) return;
  kill(d->pid, SIGKILL);
  int st = wait_exit(d->pid, 10000);
  daemon_reap(d, st);
}

/* Sanitizer reports in a daemon's log. */
static int log_has_sanitizer_report(const char *log) {
  return file_contains(log, "AddressSanitizer") || file_contains(log, "LeakSanitizer") ||
         file_contains(log, "runtime error:") || file_contains(log, "ThreadSanitizer");
}

/* ---- per-test setup and teardown ------------------------------------------------------------------- */

static double test_t0;
static pid_t proxy_pid; /* the delaying proxy of tests 10 and 11, when one runs */

/* A fresh redis-server (AOF when `aof`) and key prefix for this test. */
static int begin(const char *prefix, int aof) {
  test_t0 = mono();
  snprintf(pfx, sizeof pfx, "%s", prefix);
  n_dmns = 0;
  snprintf(srv.dir, sizeof srv.dir, "%s/redis_%s", root, prefix);
  mkdir(srv.dir, 0755);
  snprintf(srv.log, sizeof srv.log, "%s/redis.log", srv.dir);
  if (!redis_start(0, aof)) {
    print_tail("redis-server", srv.log, 30);
    return 0;
  }
  return rc_connect();
}

/* Stops what the test left running (daemons by SIGTERM: each must exit 0), checks the daemons'
 * logs for sanitizer reports, and on failure prints the logs' tails. */
static void finish(void) {
  for (int i = 0; i < n_dmns; i++) {
    dmn *d = &dmns[i];
    if (!d->exited) {
      int st = daemon_term(d, 20000);
      CHECKF(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon %s: wait status %d at the end of the test", d->name, st);
    }
    CHECKF(!log_has_sanitizer_report(d->log), "daemon %s: a sanitizer report in %s", d->name, d->log);
  }
  if (proxy_pid > 0) kill_wait(proxy_pid);
  proxy_pid = 0;
  rc_close();
  redis_stop();
  if (test__cur_failed) {
    for (int i = 0; i < n_dmns; i++) print_tail(dmns[i].name, dmns[i].log, 40);
    print_tail("redis-server", srv.log, 15);
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


#define NET_BODY                                                                                                   \
  "layer { name: 's_conv1' type: 'Convolution' bottom: 'data' top: 's_conv1' convolution_param { num_output: 8 "  \
  "kernel_size: 3 pad: 1 weight_filler { type: 'msra' } } }\n"                                                     \
  "layer { name: 's_relu1' type: 'ReLU' bottom: 's_conv1' top: 's_relu1' }\n"                                      \
  "layer { name: 's_conv2' type: 'Convolution' bottom: 's_relu1' top: 's_conv2' convolution_param { num_output: 8 " \
  "kernel_size: 3 stride: 2 pad: 1 weight_filler { type: 'msra' } } }\n"                                           \
  "layer { name: 's_relu2' type: 'ReLU' bottom: 's_conv2' top: 's_relu2' }\n"                                      \
  "layer { name: 's_pool' type: 'Pooling' bottom: 's_relu2' top: 's_pool' pooling_param { pool: AVE "              \
  "global_pooling: true } }\n"                                                                                      \
  "layer { name: 'fc' type: 'InnerProduct' bottom: 's_pool' top: 'fc' inner_product_param { num_output: 4 "        \
  "weight_filler { type: 'msra' } } }\n"

/* A train_val net (relative paths: they resolve against the daemon's working directory). */
static void write_student(const char *rel, const char *name, const char *train_list) {
  char p[512];
  path_in(p, sizeof p, rel);
  wfile(p,
        "name: '%s'\n"
        "layer { name: 'data' type: 'ImageData' top: 'data' top: 'label' include { phase: TRAIN }\n"
        "  transform_param { scale: 0.00390625 mirror: true crop_size: 8 } image_data_param { source: '%s'"
        " root_folder: 'img/' batch_size: 8 shuffle: true } }\n"
        "layer { name: 'data' type: 'ImageData' top: 'data' top: 'label' include { phase: TEST }\n"
        "  transform_param { scale: 0.00390625 crop_size: 8 } image_data_param { source: 'test.txt'"
        " root_folder: 'img/' batch_size: 8 } }\n" NET_BODY
        "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n"
        "layer { name: 'accuracy' type: 'Accuracy' bottom: 'fc' bottom: 'label' top: 'accuracy' include { phase: TEST } }\n",
        name, train_list);
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
static void job_text(char *buf, size_t len, const char *name, const job_opts *o) {
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

static int submit_job(const char *id, const job_opts *o) {
  char text[4096];
  job_text(text, sizeof text, id, o);
  return submit_raw(id, text, strlen(text), NULL, 0);
}

/* The highest N of out/NAME/snapshots/NAME_iter_N.solverstate on disk (-1: none). */
static int newest_snapshot(const char *name) {
  char dir[512], pat[128];
  snprintf(dir, sizeof dir, "%s/out/%s/snapshots", tmp, name);
  int plen = snprintf(pat, sizeof pat, "%s_iter_", name);
  DIR *dh = opendir(dir);
  if (!dh) return -1;
  int best = -1;
  struct dirent *e;
  while ((e = readdir(dh))) {
    if (strncmp(e->d_name, pat, (size_t)plen)) continue;
    char *end;
    long v = strtol(e->d_name + plen, &end, 10);
    if (!strcmp(end, ".solverstate") && v > best) best = (int)v;
  }
  closedir(dh);
  return best;
}

/* ---- setup: images, nets, a trained teacher -------------------------------------------------------- */

static int find_redis(void) { return find_exe(redis_exe, sizeof redis_exe, "redis-server"); }

static void test_setup(void) {
  if (!find_redis()) {
    printf("SKIP: redis-server is not on PATH; the daemon tests need one (apt install redis-server)\n");
    return;
  }
  REQUIRE(test_make_images(tmp) == 0);
  write_student("student.prototxt", "student", "train.txt");
  write_student("teacher_train.prototxt", "teacher", "train.txt");
  char p[512];
  path_in(p, sizeof p, "teacher_deploy.prototxt");
  wfile(p, "name: 'teacher'\nlayer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n" NET_BODY);
  path_in(p, sizeof p, "teacher.job");
  wfile(p,
        "name: \"teacher\"\nstudent { net: \"teacher_train.prototxt\" }\n"
        "solver { base_lr: 0.1 momentum: 0.9 lr_policy: \"fixed\" max_iter: 20 display: 10 random_seed: 3 }\n"
        "output_dir: \"teacher_out\"\n");
  char cmdline[2048], *out = NULL;
  snprintf(cmdline, sizeof cmdline, "cd '%s' && '%s' train --job teacher.job --threads 1 2>&1", tmp, DISTILLD_EXE);
  int st = test_capture(&out, cmdline);
  CHECKF(st == 0, "the teacher's training: exit %d:\n%s", st, test__str(out));
  free(out);
  REQUIRE(exists_in(TEACHER_WEIGHTS));
  setup_ok = 1;
}

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
  redisReply *pend = cmd("XPENDING %s distilld", K("jobs"));
  CHECK(pend && pend->type == REDIS_REPLY_ARRAY && pend->elements >= 1 && pend->element[0]->type == REDIS_REPLY_INTEGER &&
        pend->element[0]->integer == 0);
  if (pend) freeReplyObject(pend);

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
  redisReply *pend = cmd("XPENDING %s distilld", K("jobs"));
  CHECK(pend && pend->type == REDIS_REPLY_ARRAY && pend->elements >= 1 && pend->element[0]->type == REDIS_REPLY_INTEGER &&
        pend->element[0]->integer == 0);
  if (pend) freeReplyObject(pend);
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
  redisReply *pend = cmd("XPENDING %s distilld", K("jobs"));
  CHECK(pend && pend->type == REDIS_REPLY_ARRAY && pend->elements >= 1 && pend->element[0]->type == REDIS_REPLY_INTEGER &&
        pend->element[0]->integer == 0);
  if (pend) freeReplyObject(pend);
  CHECK(rint_cmd(-1, "EXISTS %s", K("worker:wa")) == 0);
  CHECK(!log_has_sanitizer_report(a->log));
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
  redisReply *pend = cmd("XPENDING %s distilld", K("jobs"));
  CHECK(pend && pend->type == REDIS_REPLY_ARRAY && pend->elements >= 1 && pend->element[0]->type == REDIS_REPLY_INTEGER &&
        pend->element[0]->integer == 0);
  if (pend) freeReplyObject(pend);
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
  CHECK(file_contains(d->log, "data parallel on 2 ranks"));
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
  CHECK(file_contains(a->log, "joining as node 1") || file_contains(b->log, "joining as node 1"));

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

/* ---- 8. paths outside the roots are refused ------------------------------------------------------------ */

DTEST(test_path_escapes) {
  REQUIRE(begin("t8", 0));
  char p[512], q[512];
  /* outside the data root (tmp), next to it in root */
  snprintf(p, sizeof p, "%s/outside.prototxt", root);
  path_in(q, sizeof q, "student.prototxt");
  CHECK(copy_file(q, p));
  path_in(q, sizeof q, "img/im_00.png");
  snprintf(p, sizeof p, "%s/outside.png", root);
  CHECK(copy_file(q, p));
  path_in(q, sizeof q, "train.txt");
  snprintf(p, sizeof p, "%s/outside_list.txt", root);
  CHECK(copy_file(q, p));
  snprintf(p, sizeof p, "%s/outside.prototxt", root);
  /* symlinks inside the data root that lead out: a net, a list file, an image */
  path_in(q, sizeof q, "link_net.prototxt");
  CHECK(symlink(p, q) == 0);
  snprintf(p, sizeof p, "%s/outside_list.txt", root);
  path_in(q, sizeof q, "link_list.txt");
  CHECK(symlink(p, q) == 0);
  write_student("student_link_list.prototxt", "student", "link_list.txt");
  snprintf(p, sizeof p, "%s/outside.png", root);
  path_in(q, sizeof q, "img/evil.png");
  CHECK(symlink(p, q) == 0);
  path_in(q, sizeof q, "evil_list.txt");
  wfile(q, "im_00.png 0\nevil.png 1\nim_01.png 1\n");
  write_student("student_evil_img.prototxt", "student", "evil_list.txt");
  /* a mean file named in image_data_param (the data layer's fallback) outside the roots */
  {
    path_in(q, sizeof q, "student.prototxt");
    FILE *f = fopen(q, "rb");
    char buf[16384];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
    char *at = strstr(buf, "image_data_param {");
    REQUIRE(at);
    at += strlen("image_data_param {");
    path_in(q, sizeof q, "student_mean.prototxt");
    wfile(q, "%.*s mean_file: '/etc/passwd' %s", (int)(at - buf), buf, at);
  }
  char abs_out[300];
  snprintf(abs_out, sizeof abs_out, "%s/abs_out", root);

  dmn *d = daemon_start("w8", 1, 10, 1);
  REQUIRE(d);
  REQUIRE(daemon_wait_up(d, 15));
  job_opts base = {.max_iter = 2, .display = 1};
  struct {
    const char *id;
    job_opts o;
    const char *field;
  } cases[] = {
      {"p_up", {.max_iter = 2, .display = 1, .student = "../outside.prototxt"}, "student.net"},
      {"p_abs", {.max_iter = 2, .display = 1, .teacher = 1, .teacher_weights = "/etc/passwd"}, "teacher.weights"},
      {"p_link_net", {.max_iter = 2, .display = 1, .student = "link_net.prototxt"}, "student.net"},
      {"p_link_list", {.max_iter = 2, .display = 1, .student = "student_link_list.prototxt"}, "link_list.txt"},
      {"p_link_img", {.max_iter = 2, .display = 1, .student = "student_evil_img.prototxt"}, "evil.png"},
      {"p_mean", {.max_iter = 2, .display = 1, .student = "student_mean.prototxt"}, "image_data_param.mean_file"},
      {"p_out_up", {.max_iter = 2, .display = 1, .output_dir = "../x"}, "output_dir"},
      {"p_out_abs", {.max_iter = 2, .display = 1, .output_dir = abs_out}, "output_dir"},
      {"p_out_root", {.max_iter = 2, .display = 1, .output_dir = "out"}, "output_dir"},
      {"p_out_dotdot", {.max_iter = 2, .display = 1, .output_dir = "out/../../x"}, "output_dir"},
  };
  size_t n_cases = sizeof cases / sizeof cases[0];
  for (size_t i = 0; i < n_cases; i++) REQUIRE(submit_job(cases[i].id, &cases[i].o));
  REQUIRE(submit_job("p_good", &base)); /* the same daemon still runs a job that stays inside */
  for (size_t i = 0; i < n_cases; i++) {
    char *st = wait_final(cases[i].id, 30);
    CHECKF(st && !strcmp(st, "failed"), "%s: state %s", cases[i].id, test__str(st));
    free(st);
    char *er = hget(K("job:%s", cases[i].id), "error");
    CHECKF(test__contains(er, "refused") && test__contains(er, cases[i].field), "%s: error \"%s\" (want \"refused\" and \"%s\")",
           cases[i].id, test__str(er), cases[i].field);
    free(er);
    CHECK(hget_ll(K("job:%s", cases[i].id), "iter", 0) == 0);
  }
  char *st = wait_final("p_good", 30);
  CHECKF(st && !strcmp(st, "succeeded"), "p_good: %s", test__str(st));
  free(st);
  snprintf(p, sizeof p, "%s/x", root);
  CHECK(access(p, F_OK) != 0);
  CHECK(access(abs_out, F_OK) != 0);
}

/* ---- 9. the client verbs against a live daemon ----------------------------------------------------------- */

/* Runs `distilld VERB ARGS --redis 127.0.0.1:PORT --prefix P` in tmp (stdout and stderr together). */
static int client(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int client(char **out, const char *fmt, ...) {
  char args[1024], cmdline[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmdline, sizeof cmdline, "cd '%s' && '%s' %s --redis 127.0.0.1:%d --prefix %s 2>&1", tmp, DISTILLD_EXE, args,
           srv.port, pfx);
  return test_capture(out, cmdline);
}

/* The first line of `s`, trimmed, into `buf`. */
static void first_line(const char *s, char *buf, size_t len) {
  snprintf(buf, len, "%s", s ? s : "");
  buf[strcspn(buf, "\r\n")] = '\0';
}

DTEST(test_client_verbs) {
  REQUIRE(begin("t9", 0));
  char p[512], *out = NULL, id_long[80], id_queued[80], id_short[80];
  job_opts lo = {.max_iter = 200000, .display = 10}, sh = {.max_iter = 6, .display = 2, .test_interval = 6, .snapshot = 3};
  char text[4096];
  job_text(text, sizeof text, "v_long", &lo);
  path_in(p, sizeof p, "v_long.job");
  wfile(p, "%s", text);
  job_text(text, sizeof text, "v_queued", &sh);
  path_in(p, sizeof p, "v_queued.job");
  wfile(p, "%s", text);
  job_text(text, sizeof text, "v_short", &sh);
  path_in(p, sizeof p, "v_short.job");
  wfile(p, "%s", text);
  /* submit three while no daemon runs */
  int st = client(&out, "submit v_long.job");
  CHECKF(st == 0, "submit: exit %d: %s", st, test__str(out));
  first_line(out, id_long, sizeof id_long);
  free(out);
  st = client(&out, "submit v_queued.job");
  CHECK(st == 0);
  first_line(out, id_queued, sizeof id_queued);
  free(out);
  st = client(&out, "submit v_short.job --id my-short.1");
  CHECK(st == 0);
  first_line(out, id_short, sizeof id_short);
  free(out);
  CHECKF(!strcmp(id_long, "j1") && !strcmp(id_queued, "j2") && !strcmp(id_short, "my-short.1"), "ids %s %s %s", id_long,
         id_queued, id_short);
  st = client(&out, "submit v_short.job --id my-short.1");
  CHECKF(st != 0, "an id used twice was accepted: %s", test__str(out));
  free(out);
  char *s = hget(K("job:%s", id_long), "state");
  CHECK(s && !strcmp(s, "queued"));
  free(s);
  st = client(&out, "status %s", id_long);
  CHECKF(st == 0, "status: exit %d", st);
  CHECK_CONTAINS(out, id_long);
  CHECK_CONTAINS(out, "queued");
  free(out);
  /* a queued job cancelled: never runs */
  st = client(&out, "cancel %s", id_queued);
  CHECK(st == 0);
  CHECK_CONTAINS(out, "cancelled (it was queued)");
  free(out);
  /* the daemon takes j1 first */
  dmn *d = daemon_start("w9", 1, 10, 1);
  REQUIRE(d);
  REQUIRE(daemon_wait_up(d, 15));
  REQUIRE(wait_field_at_least(id_long, "iter", 20, 30));
  st = client(&out, "status %s", id_long);
  CHECK(st == 0);
  CHECK_CONTAINS(out, "running");
  CHECK_CONTAINS(out, "w9");
  free(out);
  st = client(&out, "list");
  CHECK(st == 0);
  CHECK_CONTAINS(out, id_long);
  CHECK_CONTAINS(out, id_queued);
  CHECK_CONTAINS(out, id_short);
  CHECK_CONTAINS(out, "running");
  CHECK_CONTAINS(out, "cancelled");
  free(out);
  st = client(&out, "cancel %s", id_long);
  CHECK(st == 0);
  CHECK_CONTAINS(out, "cancel requested");
  free(out);
  char *fin = wait_final(id_long, 30);
  CHECKF(fin && !strcmp(fin, "cancelled"), "%s: %s", id_long, test__str(fin));
  free(fin);
  fin = wait_final(id_short, 30);
  CHECKF(fin && !strcmp(fin, "succeeded"), "%s: %s", id_short, test__str(fin));
  free(fin);
  s = hget(K("job:%s", id_queued), "state");
  CHECK(s && !strcmp(s, "cancelled"));
  free(s);
  CHECK(count_events(id_queued, "state", "running") == 0);
  char *w = hget(K("job:%s", id_queued), "worker");
  CHECKF(!w, "the cancelled queued job ran on %s", w);
  free(w);
  st = client(&out, "status %s --json", id_short);
  CHECK(st == 0);
  CHECK_CONTAINS(out, "\"state\":\"succeeded\"");
  CHECK_CONTAINS(out, "\"test_acc\":");
  free(out);
  st = client(&out, "watch %s --count 1 --interval 0.1", id_short);
  CHECKF(st == 0, "watch: exit %d: %s", st, test__str(out));
  CHECK_CONTAINS(out, id_short);
  CHECK_CONTAINS(out, "succeeded");
  CHECK_CONTAINS(out, "METRICS");
  free(out);
  st = client(&out, "watch --count 1");
  CHECK(st == 0);
  CHECK_CONTAINS(out, "WORKERS");
  CHECK_CONTAINS(out, "w9");
  free(out);
  st = client(&out, "list");
  CHECK(st == 0);
  CHECK_CONTAINS(out, "succeeded");
  free(out);
  st = client(&out, "cancel %s", id_short);
  CHECK(st == 0);
  CHECK_CONTAINS(out, "already succeeded");
  free(out);
  st = client(&out, "status nope");
  CHECK(st == 1);
  free(out);
}

/* ---- 10. beyond the issue: SIGTERM while a claim is in flight; a stopped worker's lost lease ----- */

/* A TCP proxy (a forked child) between a daemon and redis-server that holds every reply for
 * `delay_ms`: it opens, wide and visibly, the window between Redis running a command and the daemon
 * reading its answer. Requests go through at once. */
#define PROXY_MAX 8
typedef struct chunk {
  struct chunk *next;
  double due;
  size_t len, off;
  char data[];
} chunk;

static void proxy_main(int lfd, int redis_port, int delay_ms) {
  struct {
    int a, b; /* the client's socket, Redis's */
    chunk *head, *tail;
  } pr[PROXY_MAX];
  int n = 0;
  for (;;) {
    struct pollfd pf[1 + 2 * PROXY_MAX];
    int np = 0;
    pf[np++] = (struct pollfd){.fd = lfd, .events = POLLIN};
    double now = mono(), next_due = -1;
    for (int i = 0; i < n; i++) {
      pf[np++] = (struct pollfd){.fd = pr[i].a, .events = POLLIN};
      pf[np++] = (struct pollfd){.fd = pr[i].b, .events = pr[i].b >= 0 ? POLLIN : 0};
      if (pr[i].head && (next_due < 0 || pr[i].head->due < next_due)) next_due = pr[i].head->due;
    }
    int timeout = next_due < 0 ? 1000 : next_due <= now ? 0 : (int)((next_due - now) * 1000) + 1;
    if (poll(pf, (nfds_t)np, timeout) < 0 && errno != EINTR) _exit(1);
    if (pf[0].revents & POLLIN) {
      int a = accept(lfd, NULL, NULL);
      if (a >= 0 && n < PROXY_MAX) {
        int b = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)redis_port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (b >= 0 && connect(b, (struct sockaddr *)&sa, sizeof sa) == 0) {
          pr[n].a = a, pr[n].b = b, pr[n].head = pr[n].tail = NULL;
          n++;
        } else {
          close(a);
          if (b >= 0) close(b);
        }
      } else if (a >= 0) {
        close(a);
      }
    }
    for (int i = 0; i < n; i++) {
      int drop = 0;
      char buf[65536];
      if (pf[1 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR)) { /* client -> redis, at once */
        ssize_t k = read(pr[i].a, buf, sizeof buf);
        if (k <= 0)
          drop = 1;
        else if (pr[i].b >= 0)
          for (ssize_t off = 0; off < k;) {
            ssize_t w = write(pr[i].b, buf + off, (size_t)(k - off));
            if (w <= 0) break;
            off += w;
          }
      }
      if (!drop && pr[i].b >= 0 && (pf[2 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR))) { /* redis -> client, later */
        ssize_t k = read(pr[i].b, buf, sizeof buf);
        if (k <= 0) {
          close(pr[i].b);
          pr[i].b = -1;
        } else {
          chunk *c = malloc(sizeof *c + (size_t)k);
          if (!c) _exit(1);
          c->next = NULL, c->due = mono() + delay_ms / 1000.0, c->len = (size_t)k, c->off = 0;
          memcpy(c->data, buf, (size_t)k);
          if (pr[i].tail)
            pr[i].tail->next = c;
          else
            pr[i].head = c;
          pr[i].tail = c;
        }
      }
      while (!drop && pr[i].head && pr[i].head->due <= mono()) {
        chunk *c = pr[i].head;
        ssize_t w = write(pr[i].a, c->data + c->off, c->len - c->off);
        if (w <= 0) {
          drop = 1;
          break;
        }
        c->off += (size_t)w;
        if (c->off < c->len) break;
        pr[i].head = c->next;
        if (!pr[i].head) pr[i].tail = NULL;
        free(c);
      }
      if (!drop && pr[i].b < 0 && !pr[i].head) drop = 1; /* redis closed and everything delivered */
      if (drop) {
        close(pr[i].a);
        if (pr[i].b >= 0) close(pr[i].b);
        while (pr[i].head) {
          chunk *c = pr[i].head;
          pr[i].head = c->next;
          free(c);
        }
        pr[i] = pr[--n];
        i--;
      }
    }
  }
}

/* Starts the proxy in front of this test's redis-server; returns its port (0: failed). */
static int proxy_start(int delay_ms, pid_t *pid) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0) return 0;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 8) != 0 ||
      getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0) {
    close(lfd);
    return 0;
  }
  fflush(NULL);
  *pid = fork();
  if (*pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != test_pid) _exit(1);
    signal(SIGALRM, SIG_DFL);
    alarm(0);
    proxy_main(lfd, srv.port, delay_ms);
    _exit(0);
  }
  close(lfd);
  if (*pid < 0) return 0;
  kid_add(*pid);
  return ntohs(sa.sin_port);
}

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
  int pport = proxy_start(400, &proxy_pid);
  REQUIRE(pport > 0);
  dmn *a = daemon_start_via("wa", pport, 2, 1);
  REQUIRE(a);
  REQUIRE(daemon_wait_up(a, 15));
  job_opts o = {.max_iter = 200000, .display = 10, .snapshot = 0};
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
    noticed = file_contains(a->log, "lost the job's lease");
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
  test_pid = getpid();
  snprintf(root, sizeof root, "/tmp/dd_daemon.XXXXXX");
  if (!mkdtemp(root)) return 1;
  snprintf(tmp, sizeof tmp, "%s/work", root);
  if (mkdir(tmp, 0755) != 0) return 1;
  atexit(kill_all_kids);
  signal(SIGALRM, on_fatal_signal);
  signal(SIGINT, on_fatal_signal);
  signal(SIGTERM, on_fatal_signal);
  signal(SIGPIPE, SIG_IGN);
  alarm(290); /* under ctest's 300 s: never leave a daemon or redis-server behind */
  double t0 = mono();
  RUN(test_setup);
  RUN(test_job_succeeds);
  RUN(test_bad_jobs);
  RUN(test_cancel_running);
  RUN(test_kill9_takeover);
  RUN(test_sigterm_handback);
  RUN(test_redis_restart);
  RUN(test_many_jobs);
  RUN(test_data_parallel_job);
  RUN(test_multinode_job);
  RUN(test_multinode_own_join);
  RUN(test_path_escapes);
  RUN(test_client_verbs);
  RUN(test_sigterm_during_readgroup);
  RUN(test_sigterm_during_claim_script);
  RUN(test_stopped_worker_loses_lease);
  printf("     total %.1f s\n", mono() - t0);
  kill_all_kids();
  if (!getenv("DD_KEEP_TMP")) {
    rm_rf(root);
  } else {
    printf("     kept %s\n", root);
  }
  return test_summary();
}
