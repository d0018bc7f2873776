/* The deployment files that run with Redis, checked with real processes (loopback only, every wait
 * bounded, every process killed at exit; tests/test_deploy.c checks the systemd unit and the
 * Containerfile):
 *
 * 2. deploy/redis.conf + deploy/users.acl: the shipped users.acl must stop redis-server from
 *    starting (its placeholder passwords are not valid hashes). With the placeholders replaced,
 *    redis-server runs deploy/redis.conf (dir, aclfile and pidfile moved to a scratch folder,
 *    another port): AOF on, noeviction, the default user refused. A real daemon started from
 *    deploy/distilld.prototxt (port, paths, device and timings changed) authenticates as
 *    distilld-worker and runs jobs through every script (claim, apply, renew, finish, cancel of a
 *    running job, hand-back at SIGTERM, cancel of a queued job) while the client verbs (submit,
 *    status, cancel, list, watch) run as distilld-worker too; then ACL LOG must be empty: nothing
 *    the daemon or the verbs sent was refused. Then distilld-dashboard reads the job hash, the
 *    metrics and events streams, the index and the workers but gets NOPERM for HSET, XADD, DEL,
 *    EVAL, and distilld-worker gets NOPERM for FLUSHALL, FLUSHDB, CONFIG, KEYS, ACL, SHUTDOWN and
 *    for any key outside distilld:* (a Lua script included). Skipped without redis-server.
 *    test_redis_acl runs these as named steps, in order; a step stopped by a REQUIRE stops the rest.
 * 3. deploy/fleet-example.sh: two workers against that Redis register, and one SIGTERM to the
 *    script stops both cleanly.
 *
 * DD_KEEP_TMP=1 keeps the scratch folder; a failing test prints the tails of the logs. */
#define _GNU_SOURCE
#include <hiredis/hiredis.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TEST_PROC_NAME "test_deploy_redis"
#include "test_deploy.h"
#include "test_images.h"
#include "test_redis.h"

static char redis_exe[PATH_MAX];
static char pw_worker[64], pw_dash[64], pw_admin[64];

/* ---- redis-server from deploy/redis.conf ------------------------------------------------------------ */

static struct {
  pid_t pid;
  int port;
  char dir[256], log[300], conf[300];
} srv;
static int redis_ok; /* test 2 got Redis running with the deploy files: tests 3 uses it */

/* A new connection to the test's Redis, authenticated as `user` (NULL: not at all). NULL when
 * Redis cannot be reached or refuses the credentials. */
static redisContext *conn_as(const char *user, const char *pw) {
  struct timeval tv = {1, 0};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", srv.port, tv);
  if (!c || c->err) {
    if (c) redisFree(c);
    return NULL;
  }
  struct timeval io = {10, 0};
  redisSetTimeout(c, io);
  if (user) {
    redisReply *r = redisCommand(c, "AUTH %s %s", user, pw);
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (!ok) fprintf(stderr, "AUTH %s: %s\n", user, r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
    if (r) freeReplyObject(r);
    if (!ok) {
      redisFree(c);
      return NULL;
    }
  }
  return c;
}

/* 1 once the admin user gets PONG (not LOADING), within `ms`; 0 when redis exited or timed out. */
static int redis_ready(int port, pid_t pid, int ms) {
  (void)port; /* srv.port, already */
  double end = mono() + ms / 1000.0;
  while (mono() < end) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      kid_del(pid);
      return 0;
    }
    redisContext *c = conn_as("admin", pw_admin);
    if (c) {
      redisReply *r = redisCommand(c, "PING");
      int ok = r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG");
      if (r) freeReplyObject(r);
      redisFree(c);
      if (ok) return 1;
    }
    sleep_ms(20);
  }
  return 0;
}

/* Starts `redis-server CONF --port P` on a free random port; the test's connection (rc, as admin,
 * keys under distilld:) goes there. */
static int redis_start(const char *conf) {
  int ok = redis_spawn(redis_exe, conf, 0, 0, srv.dir, srv.log, redis_ready, &srv.pid, &srv.port);
  rc_port = srv.port;
  rc_user = "admin";
  rc_pw = pw_admin;
  snprintf(pfx, sizeof pfx, "distilld");
  return ok;
}

static void redis_stop(void) {
  rc_close();
  redis_stop_pid(&srv.pid);
}

/* ---- Redis commands as a given user -------------------------------------------------------------- */

/* 1 when the command gets a reply that is not an error (printed otherwise). */
static int allowed(redisContext *c, const char *fmt, ...) {
  if (!c) return 0;
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  int ok = r && r->type != REDIS_REPLY_ERROR;
  if (!ok) fprintf(stderr, "  \"%s\": %s\n", fmt, r ? r->str : c->errstr);
  if (r) freeReplyObject(r);
  return ok;
}

/* 1 when the command gets an error reply containing `want` (printed otherwise). */
static int refused(redisContext *c, const char *want, const char *fmt, ...) {
  if (!c) return 0;
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  int ok = r && r->type == REDIS_REPLY_ERROR && strstr(r->str, want);
  if (!ok)
    fprintf(stderr, "  \"%s\": wanted an error with \"%s\", got %s\n", fmt, want,
            !r                             ? c->errstr
            : r->type == REDIS_REPLY_ERROR ? r->str
                                           : "a reply, not an error");
  if (r) freeReplyObject(r);
  return ok;
}

/* The reply of a command (the caller frees it); NULL for no reply or an error reply (printed). */
static redisReply *reply_of(redisContext *c, const char *fmt, ...) {
  if (!c) return NULL;
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  if (r && r->type == REDIS_REPLY_ERROR) {
    fprintf(stderr, "  \"%s\": %s\n", fmt, r->str);
    freeReplyObject(r);
    r = NULL;
  }
  return r;
}

static long long int_of(redisContext *c, long long dflt, const char *fmt, ...) {
  if (!c) return dflt;
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : dflt;
  if (r) freeReplyObject(r);
  return v;
}

/* CONFIG GET name's value, compared with `want`. */
static int config_is(redisContext *c, const char *name, const char *want) {
  redisReply *r = reply_of(c, "CONFIG GET %s", name);
  int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING &&
           !strcmp(r->element[1]->str, want);
  if (!ok) fprintf(stderr, "  CONFIG GET %s: not \"%s\"\n", name, want);
  if (r) freeReplyObject(r);
  return ok;
}

/* ---- 2. Redis with the deploy files; a daemon and the client verbs as distilld-worker ------------- */

/* The student's body: one convolution (3x3, 8), ReLU, global average pooling, InnerProduct 4. */
#define NET_BODY                                                                                                 \
  "layer { name: 's_conv1' type: 'Convolution' bottom: 'data' top: 's_conv1' convolution_param { num_output: 8 " \
  "kernel_size: 3 pad: 1 weight_filler { type: 'msra' } } }\n"                                                   \
  "layer { name: 's_relu1' type: 'ReLU' bottom: 's_conv1' top: 's_relu1' }\n"                                    \
  "layer { name: 's_pool' type: 'Pooling' bottom: 's_relu1' top: 's_pool' pooling_param { pool: AVE "            \
  "global_pooling: true } }\n"                                                                                   \
  "layer { name: 'fc' type: 'InnerProduct' bottom: 's_pool' top: 'fc' inner_product_param { num_output: 4 "      \
  "weight_filler { type: 'msra' } } }\n"

static char cfg_path[300]; /* the worker's config: deploy/distilld.prototxt, adapted */
static char daemon_log[300];

/* Runs `distilld VERB ARGS --config CFG` in work (stdout and stderr together). */
static int client(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int client(char **out, const char *fmt, ...) {
  char args[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  return test_distilld(out, work, "%s --config '%s'", args, cfg_path);
}

static void write_job(const char *name, int max_iter, int display, int test_interval, int snapshot) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s.job", work, name);
  wfile(p,
        "name: \"%s\"\nstudent { net: \"student.prototxt\" }\n"
        "solver { base_lr: 0.05 momentum: 0.9 lr_policy: \"fixed\" max_iter: %d display: %d test_iter: 2"
        " test_interval: %d snapshot: %d random_seed: 5 }\noutput_dir: \"out/%s\"\n",
        name, max_iter, display, test_interval, snapshot, name);
}

/* Prints ACL LOG's entries (as admin) and returns their number (-1: no answer). */
static int acl_log_entries(redisContext *admin, int print) {
  redisReply *r = reply_of(admin, "ACL LOG");
  if (!r || r->type != REDIS_REPLY_ARRAY) {
    if (r) freeReplyObject(r);
    return -1;
  }
  int n = (int)r->elements;
  for (size_t i = 0; print && i < r->elements; i++) {
    const redisReply *e = r->element[i];
    fprintf(stderr, "  ACL LOG:");
    for (size_t k = 0; e->type == REDIS_REPLY_ARRAY && k + 1 < e->elements; k += 2)
      if (e->element[k + 1]->type == REDIS_REPLY_STRING)
        fprintf(stderr, " %s=%s", e->element[k]->str, e->element[k + 1]->str);
    fputc('\n', stderr);
  }
  freeReplyObject(r);
  return n;
}

/* What the steps of test_redis_acl hand on. */
typedef struct {
  char *acl; /* deploy/users.acl as shipped */
  char raw_acl[300], raw_conf[300], acl_path[300], pidfile[320];
  char l_dir[400], l_acl[400], l_acl_raw[400], l_pid[400]; /* redis.conf's lines for the scratch folder */
  redisContext *admin, *dash;
  pid_t dpid;                    /* the daemon */
  char id1[80], id2[80], id3[80]; /* the ids of long1, short and long2 */
  char k2[128], k2m[140], k2e[140]; /* the short job's hash and streams */
  int done;                       /* the step ran to its end: a REQUIRE leaves it 0 */
} acl_ctx;

static const char *const conf_keys[] = {"dir", "aclfile", "pidfile"};

/* Every user but the disabled default one ships with a placeholder, never a password. */
static void acl_shipped_file(acl_ctx *c) {
  int lines = 0, placeholders = 0;
  for (const char *l = c->acl; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
    if (*l == '\n') continue;
    lines++;
    CHECKF(!strncmp(l, "user ", 5), "users.acl: a line that is not a user (Redis 7.0 takes no comments there): %.40s",
           l);
    size_t len = strcspn(l, "\n");
    int has_ph = memmem(l, len, " #REPLACE-WITH-SHA256-OF-THE-", 29) != NULL;
    int is_default = !strncmp(l, "user default ", 13);
    CHECKF(
        is_default ? (memmem(l, len, " off ", 5) && !memmem(l, len, " >", 2) && !memmem(l, len, "nopass", 6)) : has_ph,
        "users.acl: %.*s", (int)len, l);
    CHECKF(!memmem(l, len, " >", 2), "users.acl ships a password: %.*s", (int)len, l);
    placeholders += has_ph;
  }
  CHECKF(lines == 4 && placeholders == 3, "users.acl: %d users, %d placeholders", lines, placeholders);
  c->done = 1;
}

/* (a) the file as shipped: Redis must refuse to start */
static void acl_shipped_refused(acl_ctx *c) {
  snprintf(c->raw_acl, sizeof c->raw_acl, "%s/users.acl.shipped", srv.dir);
  snprintf(c->raw_conf, sizeof c->raw_conf, "%s/redis.conf.shipped", srv.dir);
  snprintf(c->acl_path, sizeof c->acl_path, "%s/users.acl", srv.dir);
  snprintf(c->pidfile, sizeof c->pidfile, "%s/redis.pid", srv.dir);
  snprintf(c->l_dir, sizeof c->l_dir, "dir %s", srv.dir);
  snprintf(c->l_acl, sizeof c->l_acl, "aclfile %s", c->acl_path);
  snprintf(c->l_acl_raw, sizeof c->l_acl_raw, "aclfile %s", c->raw_acl);
  snprintf(c->l_pid, sizeof c->l_pid, "pidfile %s", c->pidfile);
  const char *raw_lines[] = {c->l_dir, c->l_acl_raw, c->l_pid};
  REQUIRE(wfile(c->raw_acl, "%s", c->acl));
  REQUIRE(rewrite_conf(DEPLOY "/redis.conf", c->raw_conf, conf_keys, raw_lines, 3));
  char ps[16];
  snprintf(ps, sizeof ps, "%d", random_port());
  const char *argv[] = {redis_exe, c->raw_conf, "--port", ps, NULL};
  char log[320];
  snprintf(log, sizeof log, "%s/redis-shipped.log", srv.dir);
  pid_t pid = spawn(argv, srv.dir, log);
  int st = wait_exit(pid, 10000);
  if (st == -1) kill_wait(pid);
  CHECKF(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) != 0,
         "redis-server started with the placeholder passwords (status %d)", st);
  CHECKF(test_file_contains(log, "users.acl"), "redis-server's refusal does not name users.acl");
  if (test__cur_failed) test_print_tail("redis-server (shipped users.acl)", log, 10);
  c->done = 1;
}

/* (b) the passwords set: Redis runs deploy/redis.conf */
static void acl_redis_runs(acl_ctx *c) {
  snprintf(pw_worker, sizeof pw_worker, "worker-%d-%ld", (int)getpid(), (long)time(NULL));
  snprintf(pw_dash, sizeof pw_dash, "dashboard-%d", (int)getpid());
  snprintf(pw_admin, sizeof pw_admin, "admin-%d", (int)getpid());
  char gt_w[80], gt_d[80], gt_a[80];
  snprintf(gt_w, sizeof gt_w, ">%s", pw_worker);
  snprintf(gt_d, sizeof gt_d, ">%s", pw_dash);
  snprintf(gt_a, sizeof gt_a, ">%s", pw_admin);
  int n1 = 0, n2 = 0, n3 = 0;
  char *a1 = replace_all(c->acl, "#REPLACE-WITH-SHA256-OF-THE-WORKER-PASSWORD", gt_w, &n1);
  char *a2 = a1 ? replace_all(a1, "#REPLACE-WITH-SHA256-OF-THE-DASHBOARD-PASSWORD", gt_d, &n2) : NULL;
  char *a3 = a2 ? replace_all(a2, "#REPLACE-WITH-SHA256-OF-THE-ADMIN-PASSWORD", gt_a, &n3) : NULL;
  free(a1), free(a2);
  REQUIRE(a3 && n1 == 1 && n2 == 1 && n3 == 1);
  CHECK(wfile(c->acl_path, "%s", a3));
  free(a3);
  const char *lines_ok[] = {c->l_dir, c->l_acl, c->l_pid};
  REQUIRE(rewrite_conf(DEPLOY "/redis.conf", srv.conf, conf_keys, lines_ok, 3));
  if (!redis_start(srv.conf)) {
    test_print_tail("redis-server", srv.log, 20);
    REQUIRE(!"redis-server did not start with deploy/redis.conf and the passwords set");
  }
  redis_ok = 1;
  c->admin = conn_as("admin", pw_admin);
  REQUIRE(c->admin);
  CHECK(config_is(c->admin, "appendonly", "yes"));
  CHECK(config_is(c->admin, "appendfsync", "everysec"));
  CHECK(config_is(c->admin, "maxmemory-policy", "noeviction"));
  CHECK(config_is(c->admin, "protected-mode", "yes"));
  CHECK(config_is(c->admin, "bind", "127.0.0.1 -::1"));
  CHECK(allowed(c->admin, "ACL LOG RESET"));
  c->done = 1;
}

/* the default user: no anonymous access, no way to log in as it */
static void acl_default_user_refused(acl_ctx *c) {
  redisContext *anon = conn_as(NULL, NULL);
  REQUIRE(anon);
  CHECK(refused(anon, "NOAUTH", "PING"));
  CHECK(refused(anon, "NOAUTH", "HGETALL distilld:index"));
  CHECK(refused(anon, "WRONGPASS", "AUTH default %s", "anything"));
  CHECK(refused(anon, "WRONGPASS", "AUTH %s", ""));
  redisFree(anon);
  CHECK(acl_log_entries(c->admin, 0) > 0); /* the failed AUTHs are logged: ACL LOG works */
  CHECK(allowed(c->admin, "ACL LOG RESET"));
  c->done = 1;
}

/* data, a net and jobs; the worker's config from deploy/distilld.prototxt */
static void acl_jobs_and_config(acl_ctx *c) {
  char p[512];
  REQUIRE(test_make_images(work) == 0);
  snprintf(p, sizeof p, "%s/student.prototxt", work);
  test_write_train_val(p, "student", "train.txt", NET_BODY);
  write_job("long1", 2000000, 10, 0, 0);
  write_job("short", 20, 10, 20, 20);
  write_job("long2", 2000000, 10, 0, 0);
  char pwf[300];
  snprintf(pwf, sizeof pwf, "%s/worker.password", root);
  REQUIRE(wfile(pwf, "%s\n", pw_worker)); /* with a newline, as `echo` writes it */
  char *dcfg = test_slurp(DEPLOY "/distilld.prototxt");
  REQUIRE(dcfg);
  CHECK_CONTAINS(dcfg, "\nredis_user: \"distilld-worker\"\n");
  CHECK_CONTAINS(dcfg, "\nkey_prefix: \"distilld\"\n");
  free(dcfg);
  char l_port[64], l_pw[400], l_data[300], l_out[300];
  snprintf(l_port, sizeof l_port, "redis_port: %d", srv.port);
  snprintf(l_pw, sizeof l_pw, "redis_password_file: \"%s\"", pwf);
  snprintf(l_data, sizeof l_data, "data_root: \"%s\"", work);
  snprintf(l_out, sizeof l_out, "output_root: \"%s/out\"", work);
  const char *ckeys[] = {"redis_port",     "redis_password_file", "data_root", "output_root", "device",
                         "worker_name",    "threads_per_job",     "lease_s",   "heartbeat_s", "poll_ms",
                         "drain_timeout_s"};
  const char *clines[] = {l_port,
                          l_pw,
                          l_data,
                          l_out,
                          "device: \"cpu\"",
                          "worker_name: \"dw1\"",
                          "threads_per_job: 1",
                          "lease_s: 10",
                          "heartbeat_s: 1",
                          "poll_ms: 50",
                          "drain_timeout_s: 10"};
  snprintf(cfg_path, sizeof cfg_path, "%s/distilld.prototxt", root);
  REQUIRE(rewrite_conf(DEPLOY "/distilld.prototxt", cfg_path, ckeys, clines, 11));
  c->done = 1;
}

/* the client verbs as distilld-worker, before any daemon runs */
static void acl_verbs_before_daemon(acl_ctx *c) {
  char *out = NULL;
  int st = client(&out, "submit long1.job");
  CHECKF(st == 0, "submit: exit %d: %s", st, test__str(out));
  test_first_line(out, c->id1, sizeof c->id1);
  free(out);
  st = client(&out, "submit short.job --id deploy-short");
  CHECKF(st == 0, "submit: exit %d: %s", st, test__str(out));
  test_first_line(out, c->id2, sizeof c->id2);
  free(out);
  st = client(&out, "submit long2.job");
  CHECKF(st == 0, "submit: exit %d: %s", st, test__str(out));
  test_first_line(out, c->id3, sizeof c->id3);
  free(out);
  CHECKF(!strcmp(c->id1, "j1") && !strcmp(c->id2, "deploy-short") && !strcmp(c->id3, "j2"), "ids %s %s %s", c->id1,
         c->id2, c->id3);
  st = client(&out, "submit short.job --id deploy-short"); /* WATCH, EXISTS, UNWATCH */
  CHECKF(st != 0 && test__contains(out, "exists already"), "a second deploy-short: exit %d: %s", st, test__str(out));
  free(out);
  st = client(&out, "status %s", c->id1);
  CHECKF(st == 0 && test__contains(out, "queued"), "status: exit %d: %s", st, test__str(out));
  free(out);
  c->done = 1;
}

/* a daemon as distilld-worker, logging as it would to the journal; j1 runs past a lease renewal
 * (heartbeat 1 s), then is cancelled through the client; the short job ends */
static void acl_daemon_runs_jobs(acl_ctx *c) {
  char *out = NULL;
  snprintf(daemon_log, sizeof daemon_log, "%s/daemon.log", root);
  setenv("JOURNAL_STREAM", "8:12345", 1);
  const char *dargv[] = {DISTILLD_EXE, "--config", cfg_path, NULL};
  c->dpid = spawn(dargv, work, daemon_log);
  unsetenv("JOURNAL_STREAM");
  REQUIRE(c->dpid > 0);
  c->dash = conn_as("distilld-dashboard", pw_dash);
  CHECK(c->dash != NULL);
  int up = 0;
  for (double end = mono() + 15; !up && mono() < end; sleep_ms(20))
    up = int_of(c->admin, 0, "EXISTS distilld:worker:dw1") == 1;
  if (!up) test_print_tail("daemon", daemon_log, 30);
  REQUIRE(up);
  /* the dashboard sees the live worker */
  CHECK(allowed(c->dash, "HGETALL distilld:worker:dw1"));
  CHECK(allowed(c->dash, "TTL distilld:worker:dw1"));
  CHECK(int_of(c->dash, 0, "SISMEMBER distilld:workers dw1") == 1);
  CHECK(allowed(c->dash, "SMEMBERS distilld:workers"));

  CHECKF(wait_field_at_least(c->id1, "iter", 20, 30), "%s never ran", c->id1);
  sleep_ms(1300);
  int st = client(&out, "status %s", c->id1);
  CHECKF(st == 0 && test__contains(out, "running") && test__contains(out, "dw1"), "status: exit %d: %s", st,
         test__str(out));
  free(out);
  st = client(&out, "cancel %s", c->id1);
  CHECKF(st == 0 && test__contains(out, "cancel requested"), "cancel: exit %d: %s", st, test__str(out));
  free(out);
  char *s = wait_final(c->id1, 30);
  CHECKF(s && !strcmp(s, "cancelled"), "%s: %s", c->id1, test__str(s));
  free(s);
  /* the short job: metrics, a test, a snapshot, the final state */
  s = wait_final(c->id2, 60);
  CHECKF(s && !strcmp(s, "succeeded"), "%s: %s", c->id2, test__str(s));
  free(s);
  c->done = 1;
}

/* (while the daemon runs) the Grafana dashboard's queries, every one, as the dashboard user,
 * against this real job: each key pattern it uses exists and holds the fields its panels read */
static void acl_dashboard_queries(acl_ctx *c) {
  char cmd[2048], *o = NULL;
  setenv("DD_TEST_DASH_PW", pw_dash, 1);
  snprintf(cmd, sizeof cmd,
           "python3 '%s/deploy/grafana/check_dashboard.py' --redis 127.0.0.1:%d --job %s --worker dw1 "
           "--user distilld-dashboard --password-env DD_TEST_DASH_PW 2>&1",
           DD_SOURCE_DIR, srv.port, c->id2);
  int cs = test_capture(&o, cmd);
  CHECKF(cs == 0, "the dashboard's queries against a real job: exit %d:\n%s", cs, test__str(o));
  free(o);
  /* and the curves of that job as a PNG, read from Redis by the plot script */
  char png[400];
  snprintf(png, sizeof png, "%s/job.png", root);
  snprintf(cmd, sizeof cmd,
           "python3 '%s/scripts/plot_metrics.py' --redis 127.0.0.1:%d --job %s --user distilld-dashboard "
           "--password-env DD_TEST_DASH_PW -o '%s' 2>&1",
           DD_SOURCE_DIR, srv.port, c->id2, png);
  cs = test_capture(&o, cmd);
  if (cs == 4) {
    printf("     SKIP the plot: matplotlib is not installed (%s)\n", test__str(o));
  } else {
    struct stat pst;
    CHECKF(cs == 0 && stat(png, &pst) == 0 && pst.st_size > 5000, "plot_metrics.py --redis: exit %d:\n%s", cs,
           test__str(o));
  }
  free(o);
  c->done = 1;
}

/* j2 runs; SIGTERM hands it back (the hand-back script), then the client cancels it queued; list
 * and watch, with a stale index id and a dead worker's name to drop (ZREM, SREM) */
static void acl_handback_list_watch(acl_ctx *c) {
  char *out = NULL;
  CHECKF(wait_field_at_least(c->id3, "iter", 10, 30), "%s never ran", c->id3);
  kill(c->dpid, SIGTERM);
  int st = wait_exit(c->dpid, 20000);
  if (st == -1) kill_wait(c->dpid);
  CHECKF(exit_code(st) == 0, "the daemon's exit after SIGTERM: status %d", st);
  char *s = hget(K("job:%s", c->id3), "state");
  CHECKF(s && !strcmp(s, "queued"), "%s after the hand-back: %s", c->id3, test__str(s));
  free(s);
  st = client(&out, "cancel %s", c->id3);
  CHECKF(st == 0 && test__contains(out, "cancelled (it was queued)"), "cancel: exit %d: %s", st, test__str(out));
  free(out);
  CHECK(allowed(c->admin, "ZADD distilld:index 1 gone-job"));
  CHECK(allowed(c->admin, "SADD distilld:workers gone-worker"));
  st = client(&out, "list");
  CHECKF(st == 0 && test__contains(out, c->id2) && test__contains(out, "succeeded") && test__contains(out, "cancelled"),
         "list: exit %d: %s", st, test__str(out));
  free(out);
  st = client(&out, "watch --count 1");
  CHECKF(st == 0 && test__contains(out, "WORKERS"), "watch: exit %d: %s", st, test__str(out));
  free(out);
  st = client(&out, "watch %s --count 1 --interval 0.1", c->id2);
  CHECKF(st == 0 && test__contains(out, "METRICS"), "watch ID: exit %d: %s", st, test__str(out));
  free(out);
  st = client(&out, "status %s --json", c->id2);
  CHECKF(st == 0 && test__contains(out, "\"state\":\"succeeded\""), "status --json: exit %d: %s", st, test__str(out));
  free(out);
  CHECK(int_of(c->admin, -1, "ZSCORE distilld:index gone-job") == -1);
  CHECK(int_of(c->admin, -1, "SISMEMBER distilld:workers gone-worker") == 0);
  c->done = 1;
}

/* nothing the daemon or the client verbs sent was refused */
static void acl_nothing_refused(acl_ctx *c) {
  int n_log = acl_log_entries(c->admin, 1);
  CHECKF(n_log == 0, "ACL LOG: %d refusal(s) of distilld-worker's commands (above): users.acl misses a command", n_log);
  CHECKF(!test_file_contains(daemon_log, "NOPERM") && !test_file_contains(daemon_log, "can't run this command") &&
             !test_file_contains(daemon_log, "AUTH failed"),
         "the daemon's log shows a refusal");
  CHECKF(test_file_contains(daemon_log, "<6>worker dw1 "), "the daemon did not log journal priorities under JOURNAL_STREAM");
  CHECKF(!test_log_has_sanitizer_report(daemon_log), "a sanitizer report in %s", daemon_log);
  snprintf(c->k2, sizeof c->k2, "distilld:job:%s", c->id2);
  snprintf(c->k2m, sizeof c->k2m, "%s:metrics", c->k2);
  snprintf(c->k2e, sizeof c->k2e, "%s:events", c->k2);
  char *w = hget(c->k2, "worker");
  CHECKF(w && !strcmp(w, "dw1"), "%s ran on %s", c->id2, test__str(w));
  free(w);
  c->done = 1;
}

/* the dashboard: reads every documented key, writes nothing */
static void acl_dashboard_reads_only(acl_ctx *c) {
  redisContext *dash = c->dash;
  const char *k2 = c->k2, *k2m = c->k2m, *k2e = c->k2e;
  CHECK(allowed(dash, "PING"));
  CHECK(allowed(dash, "CLIENT SETNAME grafana"));
  CHECK(allowed(dash, "INFO server"));
  CHECK(allowed(dash, "HGETALL %s", k2));
  CHECK(allowed(dash, "HMGET %s state iter max_iter test_acc", k2));
  CHECK(allowed(dash, "XRANGE %s - +", k2m));
  CHECK(allowed(dash, "XREVRANGE %s + - COUNT 1", k2m));
  CHECK(int_of(dash, 0, "XLEN %s", k2m) >= 2);
  CHECK(allowed(dash, "XRANGE %s - +", k2e));
  CHECK(allowed(dash, "ZREVRANGE distilld:index 0 19 WITHSCORES"));
  CHECK(int_of(dash, 0, "ZCARD distilld:index") == 3);
  CHECK(allowed(dash, "SMEMBERS distilld:workers"));
  CHECK(int_of(dash, -9, "TTL %s", k2) > 0);
  CHECK(allowed(dash, "TYPE %s", k2));
  CHECK(int_of(dash, 0, "EXISTS %s", k2) == 1);
  CHECK(allowed(dash, "SCAN 0 MATCH distilld:* COUNT 100"));
  CHECK(allowed(dash, "XINFO STREAM distilld:jobs"));
  CHECK(allowed(dash, "GET distilld:seq"));
  CHECK(refused(dash, "NOPERM", "HSET %s state failed", k2));
  CHECK(refused(dash, "NOPERM", "XADD %s * type log", k2e));
  CHECK(refused(dash, "NOPERM", "DEL %s", k2));
  CHECK(refused(dash, "NOPERM", "EVAL %s 0", "return 1"));
  CHECK(refused(dash, "NOPERM", "FLUSHALL"));
  CHECK(refused(dash, "NOPERM", "KEYS *"));
  CHECK(refused(dash, "NOPERM", "CONFIG GET *"));
  CHECK(refused(dash, "NOPERM", "HGETALL other:x"));
  CHECK(allowed(c->admin, "HSET other:x a 1"));
  CHECK(refused(dash, "NOPERM", "TYPE other:x"));
  c->done = 1;
}

/* the worker: its own keys only, no administration; and the AOF is where redis.conf says */
static void acl_worker_own_keys_only(acl_ctx *c) {
  const char *k2 = c->k2;
  redisContext *wk = conn_as("distilld-worker", pw_worker);
  REQUIRE(wk);
  CHECK(allowed(wk, "HGET %s state", k2));
  CHECK(refused(wk, "NOPERM", "FLUSHALL"));
  CHECK(refused(wk, "NOPERM", "FLUSHDB"));
  CHECK(refused(wk, "NOPERM", "CONFIG GET *"));
  CHECK(refused(wk, "NOPERM", "CONFIG SET appendonly no"));
  CHECK(refused(wk, "NOPERM", "KEYS *"));
  CHECK(refused(wk, "NOPERM", "ACL LIST"));
  CHECK(refused(wk, "NOPERM", "SCRIPT FLUSH"));
  CHECK(refused(wk, "NOPERM", "XGROUP DESTROY distilld:jobs distilld"));
  CHECK(refused(wk, "NOPERM", "SHUTDOWN NOSAVE"));
  CHECK(refused(wk, "", "DEBUG SLEEP 0"));
  CHECK(refused(wk, "NOPERM", "HGET other:x a"));
  CHECK(refused(wk, "NOPERM", "HSET other:x a 2"));
  CHECK(refused(wk, "NOPERM", "DEL other:x"));
  CHECK(refused(wk, "NOPERM", "GET other:x"));
  /* a script runs with the caller's permissions: no way around the key pattern */
  CHECK(refused(wk, "can't access", "EVAL %s 0", "return redis.call('HSET', 'other:x', 'a', '3')"));
  CHECK(refused(wk, "can't run", "EVAL %s 0", "return redis.call('FLUSHALL')"));
  char *s = hget("other:x", "a");
  CHECKF(s && !strcmp(s, "1"), "other:x a = %s", test__str(s));
  free(s);
  CHECK(int_of(c->admin, 0, "EXISTS %s", k2) == 1);
  CHECK(acl_log_entries(c->admin, 0) > 0);
  redisFree(wk);
  /* the AOF is where redis.conf says, under dir */
  char aof[400];
  snprintf(aof, sizeof aof, "%s/appendonlydir", srv.dir);
  struct stat sb;
  CHECKF(stat(aof, &sb) == 0 && S_ISDIR(sb.st_mode), "no %s", aof);
  c->done = 1;
}

static void test_redis_acl(void) {
  acl_ctx c = {0};
  c.acl = test_slurp(DEPLOY "/users.acl");
  REQUIRE(c.acl);
  acl_shipped_file(&c);
  if (!find_exe(redis_exe, sizeof redis_exe, "redis-server")) {
    printf("SKIP: redis-server is not on PATH (apt install redis-server)\n");
    free(c.acl);
    return;
  }
  double t0 = mono();
  snprintf(srv.dir, sizeof srv.dir, "%s/redis", root);
  mkdir(srv.dir, 0755);
  snprintf(srv.log, sizeof srv.log, "%s/redis.log", srv.dir);
  snprintf(srv.conf, sizeof srv.conf, "%s/redis.conf", srv.dir);
  static void (*const steps[])(acl_ctx *) = {
      acl_shipped_refused,     acl_redis_runs,      acl_default_user_refused, acl_jobs_and_config,
      acl_verbs_before_daemon, acl_daemon_runs_jobs, acl_dashboard_queries,   acl_handback_list_watch,
      acl_nothing_refused,     acl_dashboard_reads_only, acl_worker_own_keys_only,
  };
  size_t n_steps = sizeof steps / sizeof steps[0], done = 0;
  for (c.done = 1; done < n_steps && c.done; done++) {
    c.done = 0;
    steps[done](&c);
  }
  free(c.acl);
  if (c.dash) redisFree(c.dash);
  if (c.admin) redisFree(c.admin);
  if (test__cur_failed) {
    test_print_tail("daemon", daemon_log, 40);
    test_print_tail("redis-server", srv.log, 15);
  }
  if (c.done) printf("     redis + ACL + daemon + clients: %.1f s\n", mono() - t0);
}

/* ---- 3. the fleet example ------------------------------------------------------------------------- */

static void test_fleet_example(void) {
  char bash[512], setsid[512], dir[256], log[300];
  if (!redis_ok) {
    printf("SKIP: no Redis from test_redis_acl\n");
    return;
  }
  if (!find_exe(bash, sizeof bash, "bash") || !find_exe(setsid, sizeof setsid, "setsid")) {
    printf("SKIP: bash or setsid is not on PATH\n");
    return;
  }
  double t0 = mono();
  snprintf(dir, sizeof dir, "%s/fleet", root);
  snprintf(log, sizeof log, "%s/fleet.log", root);
  snprintf(fleet_pids, sizeof fleet_pids, "%s/pids", dir);
  const char *argv[] = {bash, DEPLOY "/fleet-example.sh", "-n", "2", "--dir", dir, "--distilld", DISTILLD_EXE, cfg_path,
                        NULL};
  pid_t pid = spawn(argv, work, log);
  REQUIRE(pid > 0);
  redisContext *admin = conn_as("admin", pw_admin);
  REQUIRE(admin);
  int n = 0;
  for (double end = mono() + 20; n < 2 && mono() < end; sleep_ms(50)) {
    redisReply *r = reply_of(admin, "SMEMBERS distilld:workers");
    n = 0;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
      const char *m = r->element[i]->str;
      size_t l = strlen(m);
      char key[160];
      snprintf(key, sizeof key, "distilld:worker:%s", m);
      if (l > 3 && (!strcmp(m + l - 3, "-w1") || !strcmp(m + l - 3, "-w2")) && int_of(admin, 0, "EXISTS %s", key) == 1)
        n++;
    }
    if (r) freeReplyObject(r);
  }
  CHECKF(n == 2, "%d of 2 fleet workers registered", n);
  kill(pid, SIGTERM);
  int st = wait_exit(pid, 30000);
  if (st == -1) kill_wait(pid);
  CHECKF(exit_code(st) == 0, "fleet-example.sh after SIGTERM: status %d", st);
  CHECK(int_of(admin, -1, "SCARD distilld:workers") == 0);
  /* its workers are gone (each got one SIGTERM and exited 0, which the script checked) */
  FILE *f = fopen(fleet_pids, "r");
  long p;
  int alive = 0, listed = 0;
  while (f && fscanf(f, "%ld", &p) == 1) {
    listed++;
    alive += kill((pid_t)p, 0) == 0;
  }
  if (f) fclose(f);
  CHECKF(listed == 2 && alive == 0, "%d workers listed, %d still alive", listed, alive);
  for (int k = 1; k <= 2; k++) {
    char wl[320];
    snprintf(wl, sizeof wl, "%s/worker-%d.log", dir, k);
    CHECKF(!test_log_has_sanitizer_report(wl), "a sanitizer report in %s", wl);
  }
  redisFree(admin);
  if (test__cur_failed) {
    test_print_tail("fleet-example.sh", log, 30);
    char wl[320];
    snprintf(wl, sizeof wl, "%s/worker-1.log", dir);
    test_print_tail("worker 1", wl, 20);
  }
  printf("     fleet of 2: %.1f s\n", mono() - t0);
}

int main(void) {
  if (deploy_main_begin()) return 1;
  RUN(test_redis_acl);
  RUN(test_fleet_example);
  redis_stop();
  return deploy_main_end();
}
