/* The deployment files under deploy/, checked with the real tools and real processes (loopback
 * only, every wait bounded, every process killed at exit):
 *
 * 1. deploy/distilld.service: `systemd-analyze verify` on a copy whose ExecStart names the built
 *    binary (verify refuses an ExecStart that does not exist; the shipped path, /usr/local/bin,
 *    is checked as text), no warning naming the unit, `systemd-analyze security --offline` under a
 *    threshold, and its settings against deploy/distilld.prototxt (the credential path, the output
 *    root, a stop timeout longer than the drain). verify does not resolve User= (it accepts a
 *    user that does not exist), so deploy/distilld.sysusers.conf is run through
 *    `systemd-sysusers --root=SCRATCH` instead and must create that user. Skipped without systemd's
 *    tools.
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
 * 3. deploy/fleet-example.sh: two workers against that Redis register, and one SIGTERM to the
 *    script stops both cleanly.
 * 4. deploy/check_containerfile.py passes deploy/Containerfile and fails broken copies of it.
 *    Skipped without python3.
 *
 * DD_KEEP_TMP=1 keeps the scratch folder; a failing test prints the tails of the logs. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <netinet/in.h>
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

#include "test.h"
#include "test_images.h"
#define TEST_PROC_NAME "test_deploy"
#define MAX_KIDS 16
#define TEST_PROC_SIGPIPE_DFL
#include "test_proc.h"

#define DEPLOY DD_SOURCE_DIR "/deploy"

static char root[128]; /* /tmp/dd_deploy.XXXXXX */
static char work[192]; /* root/work: the daemons' working directory and data root */
static char redis_exe[PATH_MAX];
static char pw_worker[64], pw_dash[64], pw_admin[64];

/* ---- small helpers (as in tests/test_daemon.c) -------------------------------------------------- */

/* The whole file, NUL-terminated and malloc'd; NULL when unreadable. */
static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, len = 0, n;
  char *buf = malloc(cap);
  while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (len + 1 == cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  fclose(f);
  if (buf) buf[len] = '\0';
  return buf;
}

static void print_tail(const char *title, const char *path, int lines) {
  char *buf = slurp(path);
  if (!buf) return;
  const char *p = buf + strlen(buf);
  int seen = 0;
  while (p > buf && seen <= lines)
    if (*--p == '\n') seen++;
  if (*p == '\n') p++;
  fprintf(stderr, "---- %s (%s), last %d lines ----\n%s---- end of %s ----\n", title, path, lines, p, title);
  free(buf);
}

static int file_contains(const char *path, const char *needle) {
  char *buf = slurp(path);
  int found = buf && strstr(buf, needle) != NULL;
  free(buf);
  return found;
}

/* `s` with every `from` replaced by `to` (malloc'd). `*count` gets the number of replacements. */
static char *replace_all(const char *s, const char *from, const char *to, int *count) {
  size_t fl = strlen(from), tl = strlen(to), n = 0;
  for (const char *p = s; (p = strstr(p, from)); p += fl) n++;
  char *out = malloc(strlen(s) + n * (tl > fl ? tl - fl : 0) + 1), *o = out;
  if (!out) return NULL;
  const char *p = s, *q;
  while ((q = strstr(p, from))) {
    memcpy(o, p, (size_t)(q - p));
    o += q - p;
    memcpy(o, to, tl);
    o += tl;
    p = q + fl;
  }
  strcpy(o, p);
  if (count) *count = (int)n;
  return out;
}

/* A config file (prototxt "key: value" or redis.conf "key value" lines) with the line of each
 * keys[i] replaced by lines[i] (the first occurrence; later ones dropped; comments untouched) and
 * the keys it did not have appended. Returns 1 when written. */
static int rewrite_conf(const char *src, const char *dst, const char *const *keys, const char *const *lines, int n) {
  char *text = slurp(src);
  FILE *f = text ? fopen(dst, "w") : NULL;
  if (!f) {
    free(text);
    return 0;
  }
  int used[32] = {0};
  for (char *line = text, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = '\0';
    const char *k = line + strspn(line, " \t");
    size_t kl = strcspn(k, ": \t");
    int hit = -1;
    for (int i = 0; i < n && i < 32 && *k != '#'; i++)
      if (kl == strlen(keys[i]) && !strncmp(k, keys[i], kl)) hit = i;
    if (hit < 0)
      fprintf(f, "%s\n", line);
    else if (!used[hit]++)
      fprintf(f, "%s\n", lines[hit]);
  }
  for (int i = 0; i < n && i < 32; i++)
    if (!used[i]) fprintf(f, "%s\n", lines[i]);
  free(text);
  return fclose(f) == 0;
}

/* ---- child processes: all killed at exit --------------------------------------------------------- */

static char fleet_pids[300]; /* the fleet script's pid file: its workers run in their own sessions */

/* SIGKILL to the fleet script's workers still listed (they are not our children). */
static void kill_fleet(void) {
  if (!fleet_pids[0]) return;
  FILE *f = fopen(fleet_pids, "r");
  if (!f) return;
  long p;
  while (fscanf(f, "%ld", &p) == 1)
    if (p > 1) kill((pid_t)p, SIGKILL);
  fclose(f);
}

/* kill_all_kids, the fleet script's workers first. */
static void kill_fleet_and_kids(void) {
  if (getpid() != test_pid) return;
  kill_fleet();
  kill_all_kids();
}

static int exited_ok(int st) { return st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0; }

/* Sanitizer reports in a log (the ASan build's daemons write them there). */
static int log_has_sanitizer_report(const char *log) {
  return file_contains(log, "AddressSanitizer") || file_contains(log, "LeakSanitizer") ||
         file_contains(log, "runtime error:") || file_contains(log, "ThreadSanitizer");
}

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
static int redis_wait_ready(pid_t pid, int ms) {
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

/* Starts `redis-server CONF --port P` on a free random port. */
static int redis_start(const char *conf) {
  for (int attempt = 0; attempt < 6; attempt++) {
    int p = random_port();
    char ps[16];
    snprintf(ps, sizeof ps, "%d", p);
    const char *argv[] = {redis_exe, conf, "--port", ps, NULL};
    srv.port = p;
    pid_t pid = spawn(argv, srv.dir, srv.log);
    if (pid < 0) return 0;
    if (redis_wait_ready(pid, 10000)) {
      srv.pid = pid;
      return 1;
    }
    kill_wait(pid);
  }
  return 0;
}

static void redis_stop(void) {
  if (srv.pid <= 0) return;
  kill(srv.pid, SIGTERM);
  if (wait_exit(srv.pid, 10000) == -1) kill_wait(srv.pid);
  srv.pid = 0;
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

static char *hget(redisContext *c, const char *key, const char *field) {
  redisReply *r = reply_of(c, "HGET %s %s", key, field);
  char *s = r && r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
  if (r) freeReplyObject(r);
  return s;
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

/* Waits (bounded) until the job's state is one of the final ones; returns it (malloc'd) or NULL. */
static char *wait_final(redisContext *c, const char *id, double timeout_s) {
  char key[128];
  snprintf(key, sizeof key, "distilld:job:%s", id);
  double end = mono() + timeout_s;
  while (mono() < end) {
    char *s = hget(c, key, "state");
    if (is_final(s)) return s;
    free(s);
    sleep_ms(50);
  }
  return NULL;
}

/* Waits (bounded) until the job runs with hash field `field` at least `min`. */
static int wait_running_at(redisContext *c, const char *id, const char *field, long long min, double timeout_s) {
  char key[128];
  snprintf(key, sizeof key, "distilld:job:%s", id);
  double end = mono() + timeout_s;
  while (mono() < end) {
    char *s = hget(c, key, "state"), *v = hget(c, key, field);
    int run = s && !strcmp(s, "running"), fin = is_final(s);
    long long x = v ? strtoll(v, NULL, 10) : -1;
    free(s);
    free(v);
    if (fin) return 0;
    if (run && x >= min) return 1;
    sleep_ms(20);
  }
  return 0;
}

/* ---- 1. the systemd unit and the sysusers snippet -------------------------------------------------- */

/* The value of the first "Key=" line of a unit file (malloc'd), or NULL. */
static char *unit_get(const char *text, const char *key) {
  size_t kl = strlen(key);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
    if (!strncmp(p, key, kl) && p[kl] == '=') {
      const char *v = p + kl + 1;
      return strndup(v, strcspn(v, "\n"));
    }
  }
  return NULL;
}

/* A quoted prototxt string field's value (malloc'd), or NULL. */
static char *proto_get(const char *text, const char *key) {
  char pat[80];
  snprintf(pat, sizeof pat, "\n%s: \"", key);
  const char *p = strstr(text, pat);
  if (!p) return NULL;
  p += strlen(pat);
  return strndup(p, strcspn(p, "\""));
}

static long proto_get_int(const char *text, const char *key, long dflt) {
  char pat[80];
  snprintf(pat, sizeof pat, "\n%s: ", key);
  const char *p = strstr(text, pat);
  return p ? strtol(p + strlen(pat), NULL, 10) : dflt;
}

static void test_systemd_unit(void) {
  char sda[512], sysusers[512];
  char *unit = slurp(DEPLOY "/distilld.service"), *cfg = slurp(DEPLOY "/distilld.prototxt");
  REQUIRE(unit && cfg);
  /* the unit as shipped, read as text: what verify cannot see */
  char *exec = unit_get(unit, "ExecStart"), *user = unit_get(unit, "User"), *cred = unit_get(unit, "LoadCredential");
  char *rw = unit_get(unit, "ReadWritePaths"), *stop = unit_get(unit, "TimeoutStopSec");
  char *pwfile = proto_get(cfg, "redis_password_file"), *outroot = proto_get(cfg, "output_root");
  CHECKF(exec && !strcmp(exec, "/usr/local/bin/distilld --config /etc/distilld/distilld.prototxt"), "ExecStart=%s",
         test__str(exec));
  CHECK(user && !strcmp(user, "distilld"));
  /* LoadCredential=NAME:FILE is read by the daemon at /run/credentials/<unit>/NAME */
  char want_pw[256] = "";
  if (cred && strchr(cred, ':'))
    snprintf(want_pw, sizeof want_pw, "/run/credentials/distilld.service/%.*s", (int)(strchr(cred, ':') - cred), cred);
  CHECKF(pwfile && !strcmp(pwfile, want_pw), "the config's redis_password_file %s, the unit's credential %s",
         test__str(pwfile), test__str(cred));
  CHECKF(rw && outroot && strstr(rw, outroot), "ReadWritePaths=%s does not hold output_root %s", test__str(rw),
         test__str(outroot));
  long drain = proto_get_int(cfg, "drain_timeout_s", 30), stop_s = stop ? strtol(stop, NULL, 10) : 0;
  CHECKF(stop_s >= drain + 60, "TimeoutStopSec=%s leaves too little after drain_timeout_s %ld for the snapshots",
         test__str(stop), drain);
  CHECK_CONTAINS(unit, "\nStandardError=journal\n");
  CHECK_CONTAINS(unit, "\nDeviceAllow=/dev/nvidiactl rw\n");
  CHECK_CONTAINS(unit, "\nDeviceAllow=/dev/nvidia-uvm rw\n");
  CHECK(!strstr(unit, "\nPrivateDevices=yes") && !strstr(unit, "\nMemoryDenyWriteExecute=yes"));
  free(exec), free(user), free(cred), free(rw), free(stop), free(pwfile), free(outroot);

  if (!find_exe(sda, sizeof sda, "systemd-analyze")) {
    printf("SKIP: systemd-analyze is not on PATH: the unit was checked as text only (apt install systemd)\n");
  } else {
    /* verify wants ExecStart's binary to exist: a copy naming the one just built */
    char dir[256], path[300], *out = NULL, cmd[2048];
    snprintf(dir, sizeof dir, "%s/unit", root);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/distilld.service", dir);
    int n = 0;
    char *copy = replace_all(unit, "ExecStart=/usr/local/bin/distilld ", "ExecStart=" DISTILLD_EXE " ", &n);
    REQUIRE(copy && n == 1);
    CHECK(wfile(path, "%s", copy));
    free(copy);
    snprintf(cmd, sizeof cmd, "'%s' verify '%s' 2>&1", sda, path);
    int st = test_capture(&out, cmd);
    int verify_ok = st == 0 && !test__contains(out, "distilld.service");
    CHECKF(verify_ok, "systemd-analyze verify: exit %d:\n%s", st, test__str(out));
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' security --offline=yes --threshold=50 '%s' 2>&1", sda, path);
    st = test_capture(&out, cmd);
    const char *lvl = out ? strstr(out, "Overall exposure level") : NULL;
    printf("     systemd-analyze verify: %s; security: %.*s\n", verify_ok ? "clean" : "FAILED",
           lvl ? (int)strcspn(lvl, "\n") : 7, lvl ? lvl : "(none)");
    CHECKF(st == 0 && lvl, "systemd-analyze security over 5.0 (exit %d):\n%s", st, test__str(out));
    free(out);
  }

  if (!find_exe(sysusers, sizeof sysusers, "systemd-sysusers")) {
    printf("SKIP: systemd-sysusers is not on PATH: deploy/distilld.sysusers.conf not run\n");
  } else {
    char sysroot[256], etc[300], cmd[2048], passwd[320], *out = NULL;
    snprintf(sysroot, sizeof sysroot, "%s/sysroot", root);
    snprintf(etc, sizeof etc, "%s/etc", sysroot);
    mkdir(sysroot, 0755);
    mkdir(etc, 0755);
    snprintf(cmd, sizeof cmd, "'%s' --root='%s' '%s/distilld.sysusers.conf' 2>&1", sysusers, sysroot, DEPLOY);
    int st = test_capture(&out, cmd);
    CHECKF(st == 0, "systemd-sysusers: exit %d:\n%s", st, test__str(out));
    free(out);
    snprintf(passwd, sizeof passwd, "%s/passwd", etc);
    char *pw = slurp(passwd);
    CHECKF(pw && !strncmp(pw, "distilld:x:", 11) && strstr(pw, ":/srv/distilld:"), "passwd: %s", test__str(pw));
    free(pw);
  }
  free(unit);
  free(cfg);
}

/* ---- 2. Redis with the deploy files; a daemon and the client verbs as distilld-worker ------------- */

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

static int client(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int client(char **out, const char *fmt, ...) {
  char args[1024], cmdline[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmdline, sizeof cmdline, "cd '%s' && '%s' %s --config '%s' 2>&1", work, DISTILLD_EXE, args, cfg_path);
  return test_capture(out, cmdline);
}

static void first_line(const char *s, char *buf, size_t len) {
  snprintf(buf, len, "%s", s ? s : "");
  buf[strcspn(buf, "\r\n")] = '\0';
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

static void test_redis_acl(void) {
  char *acl = slurp(DEPLOY "/users.acl"), *out = NULL, p[512];
  REQUIRE(acl);
  /* every user but the disabled default one ships with a placeholder, never a password */
  int lines = 0, placeholders = 0;
  for (const char *l = acl; *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : l + strlen(l)) {
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

  if (!find_exe(redis_exe, sizeof redis_exe, "redis-server")) {
    printf("SKIP: redis-server is not on PATH (apt install redis-server)\n");
    free(acl);
    return;
  }
  double t0 = mono();
  snprintf(srv.dir, sizeof srv.dir, "%s/redis", root);
  mkdir(srv.dir, 0755);
  snprintf(srv.log, sizeof srv.log, "%s/redis.log", srv.dir);
  snprintf(srv.conf, sizeof srv.conf, "%s/redis.conf", srv.dir);

  /* (a) the file as shipped: Redis must refuse to start */
  char raw_acl[300], raw_conf[300], acl_path[300], pidfile[320];
  snprintf(raw_acl, sizeof raw_acl, "%s/users.acl.shipped", srv.dir);
  snprintf(raw_conf, sizeof raw_conf, "%s/redis.conf.shipped", srv.dir);
  snprintf(acl_path, sizeof acl_path, "%s/users.acl", srv.dir);
  snprintf(pidfile, sizeof pidfile, "%s/redis.pid", srv.dir);
  char l_dir[400], l_acl[400], l_acl_raw[400], l_pid[400];
  snprintf(l_dir, sizeof l_dir, "dir %s", srv.dir);
  snprintf(l_acl, sizeof l_acl, "aclfile %s", acl_path);
  snprintf(l_acl_raw, sizeof l_acl_raw, "aclfile %s", raw_acl);
  snprintf(l_pid, sizeof l_pid, "pidfile %s", pidfile);
  const char *keys[] = {"dir", "aclfile", "pidfile"};
  const char *raw_lines[] = {l_dir, l_acl_raw, l_pid}, *lines_ok[] = {l_dir, l_acl, l_pid};
  REQUIRE(wfile(raw_acl, "%s", acl));
  REQUIRE(rewrite_conf(DEPLOY "/redis.conf", raw_conf, keys, raw_lines, 3));
  {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", random_port());
    const char *argv[] = {redis_exe, raw_conf, "--port", ps, NULL};
    char log[320];
    snprintf(log, sizeof log, "%s/redis-shipped.log", srv.dir);
    pid_t pid = spawn(argv, srv.dir, log);
    int st = wait_exit(pid, 10000);
    if (st == -1) kill_wait(pid);
    CHECKF(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) != 0,
           "redis-server started with the placeholder passwords (status %d)", st);
    CHECKF(file_contains(log, "users.acl"), "redis-server's refusal does not name users.acl");
    if (test__cur_failed) print_tail("redis-server (shipped users.acl)", log, 10);
  }

  /* (b) the passwords set: Redis runs deploy/redis.conf */
  snprintf(pw_worker, sizeof pw_worker, "worker-%d-%ld", (int)getpid(), (long)time(NULL));
  snprintf(pw_dash, sizeof pw_dash, "dashboard-%d", (int)getpid());
  snprintf(pw_admin, sizeof pw_admin, "admin-%d", (int)getpid());
  char gt_w[80], gt_d[80], gt_a[80];
  snprintf(gt_w, sizeof gt_w, ">%s", pw_worker);
  snprintf(gt_d, sizeof gt_d, ">%s", pw_dash);
  snprintf(gt_a, sizeof gt_a, ">%s", pw_admin);
  int n1 = 0, n2 = 0, n3 = 0;
  char *a1 = replace_all(acl, "#REPLACE-WITH-SHA256-OF-THE-WORKER-PASSWORD", gt_w, &n1);
  char *a2 = a1 ? replace_all(a1, "#REPLACE-WITH-SHA256-OF-THE-DASHBOARD-PASSWORD", gt_d, &n2) : NULL;
  char *a3 = a2 ? replace_all(a2, "#REPLACE-WITH-SHA256-OF-THE-ADMIN-PASSWORD", gt_a, &n3) : NULL;
  free(a1), free(a2), free(acl);
  REQUIRE(a3 && n1 == 1 && n2 == 1 && n3 == 1);
  CHECK(wfile(acl_path, "%s", a3));
  free(a3);
  REQUIRE(rewrite_conf(DEPLOY "/redis.conf", srv.conf, keys, lines_ok, 3));
  if (!redis_start(srv.conf)) {
    print_tail("redis-server", srv.log, 20);
    REQUIRE(!"redis-server did not start with deploy/redis.conf and the passwords set");
  }
  redis_ok = 1;
  redisContext *admin = conn_as("admin", pw_admin);
  REQUIRE(admin);
  CHECK(config_is(admin, "appendonly", "yes"));
  CHECK(config_is(admin, "appendfsync", "everysec"));
  CHECK(config_is(admin, "maxmemory-policy", "noeviction"));
  CHECK(config_is(admin, "protected-mode", "yes"));
  CHECK(config_is(admin, "bind", "127.0.0.1 -::1"));
  CHECK(allowed(admin, "ACL LOG RESET"));

  /* the default user: no anonymous access, no way to log in as it */
  redisContext *anon = conn_as(NULL, NULL);
  REQUIRE(anon);
  CHECK(refused(anon, "NOAUTH", "PING"));
  CHECK(refused(anon, "NOAUTH", "HGETALL distilld:index"));
  CHECK(refused(anon, "WRONGPASS", "AUTH default %s", "anything"));
  CHECK(refused(anon, "WRONGPASS", "AUTH %s", ""));
  redisFree(anon);
  CHECK(acl_log_entries(admin, 0) > 0); /* the failed AUTHs are logged: ACL LOG works */
  CHECK(allowed(admin, "ACL LOG RESET"));

  /* data, a net and jobs; the worker's config from deploy/distilld.prototxt */
  REQUIRE(test_make_images(work) == 0);
  snprintf(p, sizeof p, "%s/student.prototxt", work);
  wfile(p,
        "name: 'student'\n"
        "layer { name: 'data' type: 'ImageData' top: 'data' top: 'label' include { phase: TRAIN }\n"
        "  transform_param { scale: 0.00390625 mirror: true crop_size: 8 } image_data_param { source: 'train.txt'"
        " root_folder: 'img/' batch_size: 8 shuffle: true } }\n"
        "layer { name: 'data' type: 'ImageData' top: 'data' top: 'label' include { phase: TEST }\n"
        "  transform_param { scale: 0.00390625 crop_size: 8 } image_data_param { source: 'test.txt'"
        " root_folder: 'img/' batch_size: 8 } }\n" NET_BODY
        "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n"
        "layer { name: 'accuracy' type: 'Accuracy' bottom: 'fc' bottom: 'label' top: 'accuracy' include { phase: TEST "
        "} }\n");
  write_job("long1", 2000000, 10, 0, 0);
  write_job("short", 20, 10, 20, 20);
  write_job("long2", 2000000, 10, 0, 0);
  char pwf[300];
  snprintf(pwf, sizeof pwf, "%s/worker.password", root);
  REQUIRE(wfile(pwf, "%s\n", pw_worker)); /* with a newline, as `echo` writes it */
  char *dcfg = slurp(DEPLOY "/distilld.prototxt");
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

  /* the client verbs as distilld-worker, before any daemon runs */
  char id1[80], id2[80], id3[80];
  int st = client(&out, "submit long1.job");
  CHECKF(st == 0, "submit: exit %d: %s", st, test__str(out));
  first_line(out, id1, sizeof id1);
  free(out);
  st = client(&out, "submit short.job --id deploy-short");
  CHECKF(st == 0, "submit: exit %d: %s", st, test__str(out));
  first_line(out, id2, sizeof id2);
  free(out);
  st = client(&out, "submit long2.job");
  CHECKF(st == 0, "submit: exit %d: %s", st, test__str(out));
  first_line(out, id3, sizeof id3);
  free(out);
  CHECKF(!strcmp(id1, "j1") && !strcmp(id2, "deploy-short") && !strcmp(id3, "j2"), "ids %s %s %s", id1, id2, id3);
  st = client(&out, "submit short.job --id deploy-short"); /* WATCH, EXISTS, UNWATCH */
  CHECKF(st != 0 && test__contains(out, "exists already"), "a second deploy-short: exit %d: %s", st, test__str(out));
  free(out);
  st = client(&out, "status %s", id1);
  CHECKF(st == 0 && test__contains(out, "queued"), "status: exit %d: %s", st, test__str(out));
  free(out);

  /* a daemon as distilld-worker, logging as it would to the journal */
  snprintf(daemon_log, sizeof daemon_log, "%s/daemon.log", root);
  setenv("JOURNAL_STREAM", "8:12345", 1);
  const char *dargv[] = {DISTILLD_EXE, "--config", cfg_path, NULL};
  pid_t dpid = spawn(dargv, work, daemon_log);
  unsetenv("JOURNAL_STREAM");
  REQUIRE(dpid > 0);
  redisContext *dash = conn_as("distilld-dashboard", pw_dash);
  CHECK(dash != NULL);
  int up = 0;
  for (double end = mono() + 15; !up && mono() < end; sleep_ms(20))
    up = int_of(admin, 0, "EXISTS distilld:worker:dw1") == 1;
  if (!up) print_tail("daemon", daemon_log, 30);
  REQUIRE(up);
  /* the dashboard sees the live worker */
  CHECK(allowed(dash, "HGETALL distilld:worker:dw1"));
  CHECK(allowed(dash, "TTL distilld:worker:dw1"));
  CHECK(int_of(dash, 0, "SISMEMBER distilld:workers dw1") == 1);
  CHECK(allowed(dash, "SMEMBERS distilld:workers"));

  /* j1 runs past a lease renewal (heartbeat 1 s), then is cancelled through the client */
  CHECKF(wait_running_at(admin, id1, "iter", 20, 30), "%s never ran", id1);
  sleep_ms(1300);
  st = client(&out, "status %s", id1);
  CHECKF(st == 0 && test__contains(out, "running") && test__contains(out, "dw1"), "status: exit %d: %s", st,
         test__str(out));
  free(out);
  st = client(&out, "cancel %s", id1);
  CHECKF(st == 0 && test__contains(out, "cancel requested"), "cancel: exit %d: %s", st, test__str(out));
  free(out);
  char *s = wait_final(admin, id1, 30);
  CHECKF(s && !strcmp(s, "cancelled"), "%s: %s", id1, test__str(s));
  free(s);
  /* the short job: metrics, a test, a snapshot, the final state */
  s = wait_final(admin, id2, 60);
  CHECKF(s && !strcmp(s, "succeeded"), "%s: %s", id2, test__str(s));
  free(s);
  /* (while the daemon runs) the Grafana dashboard's queries, every one, as the dashboard user,
   * against this real job: each
   * key pattern it uses exists and holds the fields its panels read */
  {
    char cmd[2048], *o = NULL;
    setenv("DD_TEST_DASH_PW", pw_dash, 1);
    snprintf(cmd, sizeof cmd,
             "python3 '%s/deploy/grafana/check_dashboard.py' --redis 127.0.0.1:%d --job %s --worker dw1 "
             "--user distilld-dashboard --password-env DD_TEST_DASH_PW 2>&1",
             DD_SOURCE_DIR, srv.port, id2);
    int cs = test_capture(&o, cmd);
    CHECKF(cs == 0, "the dashboard's queries against a real job: exit %d:\n%s", cs, test__str(o));
    free(o);
    /* and the curves of that job as a PNG, read from Redis by the plot script */
    char png[400];
    snprintf(png, sizeof png, "%s/job.png", root);
    snprintf(cmd, sizeof cmd,
             "python3 '%s/scripts/plot_metrics.py' --redis 127.0.0.1:%d --job %s --user distilld-dashboard "
             "--password-env DD_TEST_DASH_PW -o '%s' 2>&1",
             DD_SOURCE_DIR, srv.port, id2, png);
    cs = test_capture(&o, cmd);
    if (cs == 4) {
      printf("     SKIP the plot: matplotlib is not installed (%s)\n", test__str(o));
    } else {
      struct stat pst;
      CHECKF(cs == 0 && stat(png, &pst) == 0 && pst.st_size > 5000, "plot_metrics.py --redis: exit %d:\n%s", cs,
             test__str(o));
    }
    free(o);
  }
  /* j2 runs; SIGTERM hands it back (the hand-back script), then the client cancels it queued */
  CHECKF(wait_running_at(admin, id3, "iter", 10, 30), "%s never ran", id3);
  kill(dpid, SIGTERM);
  st = wait_exit(dpid, 20000);
  if (st == -1) kill_wait(dpid);
  CHECKF(exited_ok(st), "the daemon's exit after SIGTERM: status %d", st);
  char k3[128];
  snprintf(k3, sizeof k3, "distilld:job:%s", id3);
  s = hget(admin, k3, "state");
  CHECKF(s && !strcmp(s, "queued"), "%s after the hand-back: %s", id3, test__str(s));
  free(s);
  st = client(&out, "cancel %s", id3);
  CHECKF(st == 0 && test__contains(out, "cancelled (it was queued)"), "cancel: exit %d: %s", st, test__str(out));
  free(out);
  /* list and watch, with a stale index id and a dead worker's name to drop (ZREM, SREM) */
  CHECK(allowed(admin, "ZADD distilld:index 1 gone-job"));
  CHECK(allowed(admin, "SADD distilld:workers gone-worker"));
  st = client(&out, "list");
  CHECKF(st == 0 && test__contains(out, id2) && test__contains(out, "succeeded") && test__contains(out, "cancelled"),
         "list: exit %d: %s", st, test__str(out));
  free(out);
  st = client(&out, "watch --count 1");
  CHECKF(st == 0 && test__contains(out, "WORKERS"), "watch: exit %d: %s", st, test__str(out));
  free(out);
  st = client(&out, "watch %s --count 1 --interval 0.1", id2);
  CHECKF(st == 0 && test__contains(out, "METRICS"), "watch ID: exit %d: %s", st, test__str(out));
  free(out);
  st = client(&out, "status %s --json", id2);
  CHECKF(st == 0 && test__contains(out, "\"state\":\"succeeded\""), "status --json: exit %d: %s", st, test__str(out));
  free(out);
  CHECK(int_of(admin, -1, "ZSCORE distilld:index gone-job") == -1);
  CHECK(int_of(admin, -1, "SISMEMBER distilld:workers gone-worker") == 0);

  /* nothing the daemon or the client verbs sent was refused */
  int n_log = acl_log_entries(admin, 1);
  CHECKF(n_log == 0, "ACL LOG: %d refusal(s) of distilld-worker's commands (above): users.acl misses a command", n_log);
  CHECKF(!file_contains(daemon_log, "NOPERM") && !file_contains(daemon_log, "can't run this command") &&
             !file_contains(daemon_log, "AUTH failed"),
         "the daemon's log shows a refusal");
  CHECKF(file_contains(daemon_log, "<6>worker dw1 "), "the daemon did not log journal priorities under JOURNAL_STREAM");
  CHECKF(!log_has_sanitizer_report(daemon_log), "a sanitizer report in %s", daemon_log);
  char k2[128], k2m[140], k2e[140];
  snprintf(k2, sizeof k2, "distilld:job:%s", id2);
  snprintf(k2m, sizeof k2m, "%s:metrics", k2);
  snprintf(k2e, sizeof k2e, "%s:events", k2);
  char *w = hget(admin, k2, "worker");
  CHECKF(w && !strcmp(w, "dw1"), "%s ran on %s", id2, test__str(w));
  free(w);

  /* the dashboard: reads every documented key, writes nothing */
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
  CHECK(allowed(admin, "HSET other:x a 1"));
  CHECK(refused(dash, "NOPERM", "TYPE other:x"));


  /* the worker: its own keys only, no administration */
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
  s = hget(admin, "other:x", "a");
  CHECKF(s && !strcmp(s, "1"), "other:x a = %s", test__str(s));
  free(s);
  CHECK(int_of(admin, 0, "EXISTS %s", k2) == 1);
  CHECK(acl_log_entries(admin, 0) > 0);
  redisFree(wk);
  if (dash) redisFree(dash);
  redisFree(admin);

  /* the AOF is where redis.conf says, under dir */
  char aof[400];
  snprintf(aof, sizeof aof, "%s/appendonlydir", srv.dir);
  struct stat sb;
  CHECKF(stat(aof, &sb) == 0 && S_ISDIR(sb.st_mode), "no %s", aof);
  if (test__cur_failed) {
    print_tail("daemon", daemon_log, 40);
    print_tail("redis-server", srv.log, 15);
  }
  printf("     redis + ACL + daemon + clients: %.1f s\n", mono() - t0);
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
  CHECKF(exited_ok(st), "fleet-example.sh after SIGTERM: status %d", st);
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
    CHECKF(!log_has_sanitizer_report(wl), "a sanitizer report in %s", wl);
  }
  redisFree(admin);
  if (test__cur_failed) {
    print_tail("fleet-example.sh", log, 30);
    char wl[320];
    snprintf(wl, sizeof wl, "%s/worker-1.log", dir);
    print_tail("worker 1", wl, 20);
  }
  printf("     fleet of 2: %.1f s\n", mono() - t0);
}

/* ---- 4. the Containerfile checker ------------------------------------------------------------------ */

static void test_containerfile(void) {
  char py[512], cmd[4096], *out = NULL;
  if (!find_exe(py, sizeof py, "python3")) {
    printf("SKIP: python3 is not on PATH: deploy/check_containerfile.py not run\n");
    return;
  }
  snprintf(cmd, sizeof cmd,
           "'%s' '%s/check_containerfile.py' --deps '%s/scripts/install-deps.sh' '%s/Containerfile' 2>&1", py, DEPLOY,
           DD_SOURCE_DIR, DEPLOY);
  int st = test_capture(&out, cmd);
  CHECKF(st == 0 && test__contains(out, ": ok"), "check_containerfile.py: exit %d:\n%s", st, test__str(out));
  free(out);
  char *cf = slurp(DEPLOY "/Containerfile");
  REQUIRE(cf);
  /* broken copies, each with the message it must give */
  static const struct {
    const char *from, *to, *want;
  } bad[] = {
      {"\nCOPY cuda cuda\n", "\nCOPY cudax cuda\n", "'cudax' does not exist"},
      {"\nENTRYPOINT [\"distilld\", \"--config\", \"/etc/distilld/distilld.prototxt\"]",
       "\nENTRYPOINT distilld --config /etc/distilld/distilld.prototxt", "ENTRYPOINT is not in exec form"},
      {"\nSTOPSIGNAL ", "\nSTOPSIGNL ", "unknown instruction 'STOPSIGNL'"},
      {"\nUSER distilld\n", "\nUSER root\n", "runs as root"},
      {"libopenblas-dev \\\n", "libopenblas-dev \\ \n", "whitespace after the line continuation"},
      {"\nENTRYPOINT [\"distilld\", \"--config\", \"/etc/distilld/distilld.prototxt\"]",
       "\nENTRYPOINT [\"distilld\", \"--config\", \"/etc/distilld/distilld.prototxt\"]\nRUN true \\",
       "ends inside a line continuation"},
      {"\nCOPY tests tests\n", "\nCOPY ../outside outside\n", "leaves the build context"},
      {" redis-server ", " a-cache ", "installs redis-server"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int n = 0;
    char *b = replace_all(cf, bad[i].from, bad[i].to, &n);
    CHECKF(b && n >= 1, "case %zu: \"%s\" is not in deploy/Containerfile", i, bad[i].from);
    char path[300];
    snprintf(path, sizeof path, "%s/Containerfile.bad%zu", root, i);
    if (b) wfile(path, "%s", b);
    free(b);
    snprintf(cmd, sizeof cmd,
             "'%s' '%s/check_containerfile.py' --context '%s' --deps '%s/scripts/install-deps.sh' '%s' 2>&1", py,
             DEPLOY, DD_SOURCE_DIR, DD_SOURCE_DIR, path);
    st = test_capture(&out, cmd);
    CHECKF(st == 1 && test__contains(out, bad[i].want), "case %zu (%s): exit %d:\n%s", i, bad[i].want, st,
           test__str(out));
    free(out);
  }
  free(cf);
}

int main(void) {
  test_pid = getpid();
  snprintf(root, sizeof root, "/tmp/dd_deploy.XXXXXX");
  if (!mkdtemp(root)) return 1;
  snprintf(work, sizeof work, "%s/work", root);
  if (mkdir(work, 0755) != 0) return 1;
  atexit(kill_fleet_and_kids);
  signal(SIGALRM, on_fatal_signal);
  signal(SIGINT, on_fatal_signal);
  signal(SIGTERM, on_fatal_signal);
  signal(SIGPIPE, SIG_IGN);
  alarm(280); /* under ctest's 300 s: never leave a daemon or redis-server behind */
  double t0 = mono();
  RUN(test_systemd_unit);
  RUN(test_redis_acl);
  RUN(test_fleet_example);
  RUN(test_containerfile);
  redis_stop();
  printf("     total %.1f s\n", mono() - t0);
  kill_fleet_and_kids();
  if (!getenv("DD_KEEP_TMP"))
    rm_rf(root);
  else
    printf("     kept %s\n", root);
  return test_summary();
}
