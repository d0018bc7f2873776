/* `distilld web` (docs/monitoring.md, "Web dashboard") end to end: a real redis-server, a real
 * daemon running a real job (the harness: tests/test_daemon.h) and real `distilld web` servers,
 * read over plain TCP sockets on 127.0.0.1 and in a real browser.
 *
 * 1. The JSON endpoints against Redis: /api/overview and /api/job/ID parse (python3's json) and
 *    hold Redis's values: the job's state, iter and loss (at a moment when the hash did not move),
 *    the counts per state, the queue's length, the worker; a job name full of quotes, backslashes,
 *    markup, a tab and UTF-8 comes back byte for byte; metrics_since returns only later entries;
 *    the page and uPlot's files are served from the binary.
 * 2. Malformed requests: unknown paths 404; bad job ids (path traversal, 65 bytes, characters
 *    outside [A-Za-z0-9_.-], "..") 400; a bad metrics_since 400; other methods 405; a request
 *    header over 32 KiB refused; a foreign Host 403; garbage; a POST body over the limit; and the
 *    server still answers, quickly, afterwards. Read-only by default: POST cancel is 403 and the
 *    job is untouched.
 * 3. The browser (tests/web/dashboard.test.mjs: playwright-core driving Debian's chromium): the page
 *    shows Redis's numbers, the loss curve grows, the teacher's accuracy is a horizontal line, the
 *    read-only page has no cancel button; with --allow-cancel a click cancels the job (cancelled
 *    in Redis, with distilld cancel's event, and on the page). A screenshot goes to
 *    DD_BINARY_DIR/dashboard.png, or to $DD_WEB_SCREENSHOT (how docs/dashboard.png was made).
 *    SKIP when node or chromium is missing (scripts/install-deps.sh installs both).
 *
 * Each `distilld web` must exit 0 on SIGTERM, with no sanitizer report in its log. */
#define _GNU_SOURCE
#define TEST_PROC_NAME "test_web"

#include "test_daemon.h"
#include "test_http.h"

/* ---- distilld web ------------------------------------------------------------------------------- */

typedef struct {
  pid_t pid;
  int port;
  char log[300];
} web_srv;

/* Starts `distilld web --listen 127.0.0.1:0` against the test's Redis and prefix and reads its
 * port from its first line. */
static int web_start(web_srv *w, const char *name, int allow_cancel) {
  memset(w, 0, sizeof *w);
  snprintf(w->log, sizeof w->log, "%s/%s_%s.log", tmp, pfx, name);
  char redis[32];
  snprintf(redis, sizeof redis, "127.0.0.1:%d", srv.port);
  const char *argv[] = {DISTILLD_EXE, "web", "--listen", "127.0.0.1:0", "--redis", redis, "--prefix", pfx,
                        allow_cancel ? "--allow-cancel" : NULL, NULL};
  w->pid = spawn(argv, tmp, w->log);
  if (w->pid <= 0) return 0;
  for (int i = 0; i < 500; i++) {
    char *log = NULL;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "cat '%s'", w->log);
    test_capture(&log, cmd);
    const char *p = log ? strstr(log, "http://127.0.0.1:") : NULL;
    if (p) w->port = atoi(p + strlen("http://127.0.0.1:"));
    free(log);
    if (w->port > 0) return 1;
    int st;
    if (waitpid(w->pid, &st, WNOHANG) == w->pid) break;
    sleep_ms(20);
  }
  test_print_tail("distilld web", w->log, 20);
  return 0;
}

/* SIGTERM: it must exit 0 with no sanitizer report. */
static void web_stop(web_srv *w) {
  if (w->pid <= 0) return;
  kill(w->pid, SIGTERM);
  int st = wait_exit(w->pid, 10000);
  if (st == -1) kill_wait(w->pid);
  CHECKF(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "distilld web: wait status %d after SIGTERM", st);
  CHECKF(!test_log_has_sanitizer_report(w->log), "distilld web: a sanitizer report in %s", w->log);
  if (test__cur_failed) test_print_tail("distilld web", w->log, 20);
  w->pid = 0;
}

/* ---- reading the JSON: python3's json module, an independent parser ------------------------------ */

/* Runs python3 on `body` (written to a file) with a program that prints lines of KEY=VALUE; the
 * output (malloc'd) or NULL when it did not parse. `prog` reads the parsed document as `d`. */
static char *py_json(const char *body, const char *prog) {
  char path[512], script[512], cmd[1200];
  snprintf(path, sizeof path, "%s/%s_body.json", tmp, pfx);
  snprintf(script, sizeof script, "%s/%s_read.py", tmp, pfx);
  if (!wfile(path, "%s", body)) return NULL;
  if (!wfile(script, "import json, sys\nd = json.load(open(sys.argv[1], 'rb'))\n%s\n", prog)) return NULL;
  snprintf(cmd, sizeof cmd, "python3 '%s' '%s'", script, path);
  char *out = NULL;
  if (test_capture(&out, cmd) != 0) {
    fprintf(stderr, "python3 could not read the JSON: %s\n%.400s\n", test__str(out), body);
    free(out);
    return NULL;
  }
  return out;
}

/* The value of "KEY=" in py_json's output, into buf ("" when absent). */
static const char *kv(const char *out, const char *key, char *buf, size_t len) {
  char pat[64];
  snprintf(pat, sizeof pat, "%s=", key);
  buf[0] = '\0';
  for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (!strncmp(p, pat, strlen(pat))) {
      p += strlen(pat);
      size_t n = strcspn(p, "\n");
      snprintf(buf, len, "%.*s", (int)n, p);
      break;
    }
  return buf;
}

static void hex_of(const char *s, char *buf, size_t len) {
  buf[0] = '\0';
  for (size_t i = 0, o = 0; s[i] && o + 3 < len; i++, o += 2) snprintf(buf + o, len - o, "%02x", (unsigned char)s[i]);
}

/* A job that trains until cancelled: a teacher, a display every 5 iterations, a test every 100. */
static int submit_long_job(const char *id) {
  job_opts o = {.max_iter = 1000000, .display = 5, .test_interval = 100, .snapshot = 0, .teacher = 1};
  return submit_job(id, &o);
}

/* Text a JSON writer and a page must escape: the prototxt's escapes give quotes, a backslash, a
 * tab; markup, UTF-8 and U+2028 are as they are. */
#define WEIRD_PROTO "we\\\"ird \\\\ <b>bold</b> <script>x()</script> \\t caf\xc3\xa9 \xe2\x80\xa8 end"
#define WEIRD_TEXT "we\"ird \\ <b>bold</b> <script>x()</script> \t caf\xc3\xa9 \xe2\x80\xa8 end"

/* A job whose name breaks the name rule, so it fails with an error that quotes the name: user input
 * in the hash's `error`. Its `name` is then set to the same text, as a pipeline writing Redis
 * itself could. 1 when the job failed so. */
static int weird_job(const char *id) {
  char text[4096];
  job_opts o = {.max_iter = 10, .display = 1, .test_interval = 100, .snapshot = 0, .teacher = 0};
  char out[96];
  snprintf(out, sizeof out, "out/%s", id);
  o.output_dir = out;
  job_text(text, sizeof text, WEIRD_PROTO, &o);
  if (!submit_raw(id, text, strlen(text), NULL, 0)) return 0;
  char *st = wait_final(id, 60);
  int failed = st && !strcmp(st, "failed");
  free(st);
  char *err = hget(K("job:%s", id), "error");
  int quoted = err && strstr(err, WEIRD_TEXT);
  if (!quoted) fprintf(stderr, "the error of %s: %s\n", id, test__str(err));
  free(err);
  redisReply *r = cmd("HSET %s name %s", K("job:%s", id), WEIRD_TEXT);
  if (r) freeReplyObject(r);
  return failed && quoted;
}

/* ---- 1. the endpoints against Redis ------------------------------------------------------------------ */

static const char overview_prog[] =
    "print('jobs_n=%d' % len(d['jobs']))\n"
    "print('allow_cancel=%s' % d['allow_cancel'])\n"
    "print('queue=%d' % d['queue']['length'])\n"
    "for s in ('queued', 'running', 'succeeded', 'failed', 'cancelled'): print('n_%s=%d' % (s, d['states'][s]))\n"
    "print('workers=%s' % ','.join(w['name'] + ':' + w.get('state', '?') + ':' + w.get('jobs', '') for w in d['workers']))\n"
    "print('ages_ok=%s' % all(-1 < w['heartbeat_age_s'] < 10 for w in d['workers']))\n";

/* The overview: the running job `id`, the failed job `weird` (its name and error as Redis's bytes),
 * the counts, the queue, the worker. */
static void check_overview(int port, const char *id, const char *weird) {
  char *body = NULL;
  REQUIRE(http_get(port, "/api/overview", &body) == 200);
  char prog[2048];
  snprintf(prog, sizeof prog,
           "%sj = [x for x in d['jobs'] if x['id'] == '%s'][0]\n"
           "print('state=' + j['state'])\n"
           "w = [x for x in d['jobs'] if x['id'] == '%s'][0]\n"
           "print('name_hex=' + w['name'].encode('utf-8').hex())\nprint('error_hex=' + w['error'].encode('utf-8').hex())\n",
           overview_prog, id, weird);
  char *out = py_json(body, prog);
  REQUIRE(out);
  char v[4096], want[4096];
  static const char *const fields[] = {"name", "error"};
  for (int f = 0; f < 2; f++) {
    char *t = hget(K("job:%s", weird), fields[f]), k[32];
    REQUIRE(t);
    hex_of(t, want, sizeof want);
    snprintf(k, sizeof k, "%s_hex", fields[f]);
    CHECKF(!strcmp(kv(out, k, v, sizeof v), want), "%s: %s, Redis: %s", k, v, want);
    free(t);
  }
  CHECK(!strcmp(kv(out, "allow_cancel", v, sizeof v), "False"));
  CHECK(!strcmp(kv(out, "state", v, sizeof v), "running"));
  static const char *const states[] = {"queued", "running", "succeeded", "failed", "cancelled"};
  for (int s = 0; s < 5; s++) {
    char k[32];
    snprintf(k, sizeof k, "n_%s", states[s]);
    long long want_n = rint_cmd(-1, "ZCARD %s", K("state:%s", states[s]));
    CHECKF(atoll(kv(out, k, v, sizeof v)) == want_n, "%s: %s, ZCARD %lld", k, v, want_n);
  }
  CHECK(!strcmp(kv(out, "n_failed", v, sizeof v), "1") && !strcmp(kv(out, "n_running", v, sizeof v), "1"));
  CHECKF(atoll(kv(out, "queue", v, sizeof v)) == queue_len(), "queue %s, XLEN %lld", v, queue_len());
  snprintf(want, sizeof want, "ww:running:%s", id);
  CHECKF(!strcmp(kv(out, "workers", v, sizeof v), want), "workers: %s", v);
  CHECK(!strcmp(kv(out, "ages_ok", v, sizeof v), "True"));
  free(out);
  free(body);
}

static const char job_prog[] =
    "j = d['job']\n"
    "for k in ('state', 'iter', 'loss', 'max_iter', 'teacher_acc'): print('%s=%s' % (k, j.get(k, '')))\n"
    "print('spec=%s' % ('spec' in j or 'owner' in j))\n"
    "m = d['metrics']\n"
    "print('n=%d' % len(m))\nprint('last=%s' % d['metrics_last'])\nprint('more=%s' % d['metrics_more'])\n"
    "print('last_iter=%s' % (m[-1]['iter'] if m else ''))\n"
    "print('numbers=%s' % all(isinstance(x['iter'], int) and isinstance(x['loss'], float) for x in m))\n"
    "print('ids=%s' % ','.join(x['id'] for x in m[:3]))\n"
    "print('events=%s' % ','.join(e['type'] for e in d['events']))\n";

/* HMGET iter loss max_iter state of job `id` into one line ("" for a missing field). */
static void job_line(const char *id, char *buf, size_t len) {
  buf[0] = '\0';
  redisReply *r = cmd("HMGET %s iter loss max_iter state", K("job:%s", id));
  for (size_t i = 0, o = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements && o < len; i++)
    o += (size_t)snprintf(buf + o, len - o, "%s\n", r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "");
  if (r) freeReplyObject(r);
}

/* /api/job/ID at a moment when the hash did not move between two reads: the same state, iter,
 * loss and max_iter as Redis, the metrics entries as many as XLEN, the last one the hash's
 * iteration; then metrics_since gives only the entries after it. */
static void check_job(int port, const char *id) {
  char path[256], v[512], w[512], l1[256], l2[256];
  snprintf(path, sizeof path, "/api/job/%s", id);
  int matched = 0;
  for (int attempt = 0; attempt < 200 && !matched; attempt++) {
    job_line(id, l1, sizeof l1);
    long long n1 = rint_cmd(-1, "XLEN %s", K("job:%s:metrics", id));
    char *body = NULL;
    int st = http_get(port, path, &body);
    job_line(id, l2, sizeof l2);
    long long n2 = rint_cmd(-1, "XLEN %s", K("job:%s:metrics", id));
    if (st == 200 && l1[0] && !strcmp(l1, l2) && n1 == n2 && n1 < 2000) {
      char *out = py_json(body, job_prog);
      REQUIRE(out);
      char got[256];
      snprintf(got, sizeof got, "%s\n", kv(out, "iter", v, sizeof v));
      snprintf(got + strlen(got), sizeof got - strlen(got), "%s\n", kv(out, "loss", v, sizeof v));
      snprintf(got + strlen(got), sizeof got - strlen(got), "%s\n", kv(out, "max_iter", v, sizeof v));
      snprintf(got + strlen(got), sizeof got - strlen(got), "%s\n", kv(out, "state", v, sizeof v));
      CHECKF(!strcmp(got, l1), "iter, loss, max_iter, state:\n%s, Redis:\n%s", got, l1);
      CHECK(!strncmp(l1 + strlen(l1) - 8, "running\n", 8));
      CHECK(kv(out, "teacher_acc", v, sizeof v)[0]);
      CHECK(!strcmp(kv(out, "spec", v, sizeof v), "False"));
      CHECKF(atoll(kv(out, "n", v, sizeof v)) == n1, "%s metrics entries, XLEN %lld", v, n1);
      CHECKF(!strncmp(l1, kv(out, "last_iter", v, sizeof v), strlen(v)) && l1[strlen(v)] == '\n',
             "the last entry's iter %s, the hash's %s", v, l1);
      CHECK(!strcmp(kv(out, "numbers", v, sizeof v), "True"));
      CHECK(!strcmp(kv(out, "more", v, sizeof v), "False"));
      CHECKF(strstr(kv(out, "events", v, sizeof v), "state"), "events: %s", v);
      char since[128], p2[400], prog[512];
      snprintf(since, sizeof since, "%s", kv(out, "ids", w, sizeof w));
      char *comma = strchr(since, ',');
      if (comma) *comma = '\0';
      snprintf(p2, sizeof p2, "%s?metrics_since=%s", path, since);
      char *body2 = NULL;
      CHECK(http_get(port, p2, &body2) == 200);
      snprintf(prog, sizeof prog,
               "def k(s): a, b = s.split('-'); return (int(a), int(b))\n"
               "print('after=%%s' %% all(k(x['id']) > k('%s') for x in d['metrics']))\n"
               "print('n=%%d' %% len(d['metrics']))",
               since);
      char *out3 = body2 ? py_json(body2, prog) : NULL;
      CHECKF(out3 && !strcmp(kv(out3, "after", v, sizeof v), "True"), "metrics_since=%s: %s", since, test__str(out3));
      CHECKF(out3 && atoll(kv(out3, "n", v, sizeof v)) >= n1 - 1, "metrics_since=%s: %s entries of %lld", since, v, n1);
      free(out3);
      free(body2);
      free(out);
      matched = 1;
    }
    free(body);
    if (!matched) sleep_ms(2);
  }
  CHECKF(matched, "no quiet moment to compare /api/job/%s with Redis", id);
}

/* The page and uPlot's files, from the binary. */
static void check_assets(int port) {
  static const struct {
    const char *path, *type, *holds;
  } a[] = {{"/", "text/html", "<script src=\"/uplot/uPlot.iife.min.js\"></script>"},
           {"/app.js", "text/javascript", "window.dashboard"},
           {"/app.css", "text/css", "#job-panel"},
           {"/uplot/uPlot.iife.min.js", "text/javascript", "uPlot"},
           {"/uplot/uPlot.min.css", "text/css", ".uplot"}};
  for (size_t i = 0; i < sizeof a / sizeof *a; i++) {
    char *r = NULL, want[128];
    int st = http_req(port, "GET", a[i].path, NULL, &r);
    snprintf(want, sizeof want, "Content-Type: %s", a[i].type);
    CHECKF(st == 200 && strstr(r, want) && strstr(http_body(r), a[i].holds) && strstr(r, "Content-Security-Policy: "),
           "%s: %d %.300s", a[i].path, st, r);
    free(r);
  }
}

DTEST(test_api_matches_redis) {
  REQUIRE(begin("tw1", 0));
  REQUIRE(daemon_start("ww", 1, 10, 1) && daemon_wait_up(&dmns[0], 15));
  web_srv w;
  REQUIRE(web_start(&w, "web", 0));
  REQUIRE(weird_job("tw1w"));
  REQUIRE(submit_long_job("tw1a"));
  REQUIRE(wait_field_at_least("tw1a", "iter", 50, 60));
  REQUIRE(wait_field_at_least("tw1a", "teacher_acc", 0, 30));
  check_overview(w.port, "tw1a", "tw1w");
  check_job(w.port, "tw1a");
  check_assets(w.port);
  printf("     1: /api/overview and /api/job/tw1a equal to Redis (iter %lld); a name and an error's bytes kept\n",
         hget_ll(K("job:tw1a"), "iter", -1));
  /* read-only: POST cancel is refused and the job untouched */
  char *r = NULL;
  CHECKF(http_req(w.port, "POST", "/api/job/tw1a/cancel", "X-Distilld: cancel\r\n", &r) == 403, "%.300s", r);
  free(r);
  char *c = hget(K("job:tw1a"), "cancel");
  CHECKF(!c, "cancel is \"%s\" after a refused POST", c);
  free(c);
  CHECK(hget_ll(K("job:tw1a"), "iter", 0) > 0);
  web_stop(&w);
  redisReply *x = cmd("HSET %s cancel 1", K("job:tw1a"));
  if (x) freeReplyObject(x);
  free(wait_final("tw1a", 60));
}

/* ---- 2. malformed requests --------------------------------------------------------------------------- */

static void check_bad_requests(int port) {
  static const struct {
    const char *method, *path;
    int status;
  } bad[] = {
      {"GET", "/nope", 404},
      {"GET", "/index.html/x", 404},
      {"GET", "/api/nope", 404},
      {"GET", "/api/jobx", 404},
      {"GET", "/api/job/", 400},
      {"GET", "/api/job/..", 400},
      {"GET", "/api/job/../../etc/passwd", 400},
      {"GET", "/api/job/..%2F..%2Fetc%2Fpasswd", 400},
      {"GET", "/api/job/a%00b", 400},
      {"GET", "/api/job/a%20b", 400},
      {"GET", "/api/job/a$b", 400},
      {"GET", "/api/job/%C3%A9", 400},
      {"GET", "/api/job/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 400}, /* 65 bytes */
      {"GET", "/api/job/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/cancel", 400},
      {"GET", "/api/job/no-such-job", 404},
      {"GET", "/api/job/tw2a?metrics_since=0-0x", 400},
      {"GET", "/api/job/tw2a?events_since=../x", 400},
      {"GET", "/api/job/tw2a?metrics_since=" "123456789012345678901-0", 400},
      {"POST", "/api/overview", 405},
      {"POST", "/", 405},
      {"DELETE", "/api/job/tw2a", 405},
      {"PUT", "/api/job/tw2a/cancel", 405},
      {"GET", "/api/job/tw2a/cancel", 405},
      {"POST", "/api/job/tw2a/cancel", 403}, /* read-only */
      {"POST", "/api/job/..%2Fx/cancel", 400},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char *r = NULL;
    int st = http_req(port, bad[i].method, bad[i].path, NULL, &r);
    CHECKF(st == bad[i].status, "%s %s: %d, wanted %d: %.300s", bad[i].method, bad[i].path, st, bad[i].status, r);
    if (st >= 400 && st != 405) CHECKF(strstr(http_body(r), "{\"error\":"), "%s %s: %.300s", bad[i].method, bad[i].path, r);
    free(r);
  }
  /* a foreign Host (a DNS-rebinding page): 403 */
  const char rebind[] = "GET /api/overview HTTP/1.1\r\nHost: attacker.example:8080\r\nConnection: close\r\n\r\n";
  char *r = http_raw(port, rebind, sizeof rebind - 1);
  CHECKF(http_status(r) == 403, "a foreign Host: %.300s", r);
  free(r);
  /* a request header of 64 KiB: refused (431, or closed), never served */
  double secs = 0;
  int st = http_huge_header(port, "/api/overview", 64 * 1024, &secs);
  CHECKF(st != 200 && (st == 0 || st == 431 || st == 413 || st == 400), "a 64 KiB header: status %d", st);
  CHECKF(secs < 6, "a 64 KiB header took %.1f s", secs);
  /* a POST body over the limit: closed or refused, never a cancel */
  size_t body = 64 * 1024;
  char *huge = malloc(body + 128);
  REQUIRE(huge);
  int n = snprintf(huge, 128, "POST /api/job/tw2a/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n\r\n", body);
  memset(huge + n, 'b', body);
  r = http_raw(port, huge, (size_t)n + body);
  CHECKF(http_status(r) != 200, "a 64 KiB POST body: %.200s", r);
  free(r);
  free(huge);
  const char junk[] = "\x01\x02\x03 this is not HTTP\r\n\r\n";
  r = http_raw(port, junk, sizeof junk - 1);
  CHECKF(http_status(r) != 200, "garbage: %.200s", r);
  free(r);
  printf("     2: %zu bad requests answered as they should be; a 64 KiB header: %s%d; a foreign Host: 403\n",
         sizeof bad / sizeof *bad, st ? "HTTP " : "closed, status ", st);
}

DTEST(test_bad_requests) {
  REQUIRE(begin("tw2", 0));
  REQUIRE(daemon_start("ww", 1, 10, 1) && daemon_wait_up(&dmns[0], 15));
  web_srv w;
  REQUIRE(web_start(&w, "web", 0));
  REQUIRE(submit_long_job("tw2a"));
  REQUIRE(wait_field_at_least("tw2a", "iter", 10, 60));
  check_bad_requests(w.port);
  /* a client that sends nothing does not hold the server up */
  int silent = tcp_open(w.port);
  REQUIRE(silent >= 0);
  double t0 = mono();
  char *body = NULL;
  CHECK(http_get(w.port, "/api/overview", &body) == 200 && strstr(body, "\"tw2a\""));
  free(body);
  CHECK(http_get(w.port, "/api/job/tw2a", NULL) == 200);
  CHECK(http_get(w.port, "/", NULL) == 200);
  CHECKF(mono() - t0 < 2, "after the bad requests, three answers took %.2f s", mono() - t0);
  close(silent);
  CHECK(!hget(K("job:tw2a"), "cancel"));
  web_stop(&w);
  redisReply *x = cmd("HSET %s cancel 1", K("job:tw2a"));
  if (x) freeReplyObject(x);
  free(wait_final("tw2a", 60));
}

/* ---- 3. the browser --------------------------------------------------------------------------------- */

DTEST(test_browser) {
  char node[PATH_MAX], chromium[PATH_MAX], redis_cli[PATH_MAX], script[PATH_MAX], pw[PATH_MAX];
  if (!find_exe(node, sizeof node, "node")) {
    printf("SKIP test_browser: node is not on PATH (scripts/install-deps.sh installs it)\n");
    return;
  }
  if (!find_exe(chromium, sizeof chromium, "chromium")) {
    printf("SKIP test_browser: chromium is not on PATH (scripts/install-deps.sh installs Debian's chromium)\n");
    return;
  }
  snprintf(script, sizeof script, "%s/tests/web/dashboard.test.mjs", DD_SOURCE_DIR);
  snprintf(pw, sizeof pw, "%s/tests/web/node_modules/playwright-core/package.json", DD_SOURCE_DIR);
  if (access(pw, F_OK) != 0) {
    CHECKF(0, "%s is missing: run npm ci in tests/web (scripts/install-deps.sh does it)", pw);
    return;
  }
  REQUIRE(find_exe(redis_cli, sizeof redis_cli, "redis-cli"));
  REQUIRE(begin("tw3", 0));
  REQUIRE(daemon_start("ww", 1, 10, 1) && daemon_wait_up(&dmns[0], 15));
  web_srv ro, rw;
  REQUIRE(web_start(&ro, "web_ro", 0));
  REQUIRE(web_start(&rw, "web_rw", 1));
  REQUIRE(weird_job("tw3w"));
  REQUIRE(submit_long_job("tw3a"));
  REQUIRE(wait_field_at_least("tw3a", "iter", 20, 60));
  REQUIRE(wait_field_at_least("tw3a", "teacher_acc", 0, 30));
  char shot[PATH_MAX];
  const char *env_shot = getenv("DD_WEB_SCREENSHOT");
  if (env_shot && env_shot[0])
    snprintf(shot, sizeof shot, "%s", env_shot);
  else
    snprintf(shot, sizeof shot, "%s/dashboard.png", DD_BINARY_DIR);
  unlink(shot);
  char cmdline[8 * PATH_MAX + 512], *out = NULL;
  snprintf(cmdline, sizeof cmdline,
           "cd '%s/tests/web' && '%s' '%s' --rw http://127.0.0.1:%d/ --ro http://127.0.0.1:%d/ --job tw3a --weird tw3w --redis-cli '%s' "
           "--port %d --prefix %s --screenshot '%s' --chromium '%s' 2>&1",
           DD_SOURCE_DIR, node, script, rw.port, ro.port, redis_cli, srv.port, pfx, shot, chromium);
  double t0 = mono();
  int st = test_capture(&out, cmdline);
  CHECKF(st == 0, "the browser test: exit %d:\n%s", st, test__str(out));
  printf("%s     3: the browser test took %.1f s\n", test__str(out), mono() - t0);
  free(out);
  /* cancelled by the click, through distilld cancel's own code: the job's state and its event */
  char *state = hget(K("job:tw3a"), "state");
  CHECKF(state && !strcmp(state, "cancelled"), "the job's state: %s", test__str(state));
  free(state);
  CHECK(count_events("tw3a", "state", "cancelled") == 1);
  /* the screenshot is a PNG of a real size */
  FILE *f = fopen(shot, "rb");
  unsigned char magic[8] = {0};
  long size = 0;
  if (f) {
    CHECK(fread(magic, 1, 8, f) == 8);
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fclose(f);
  }
  CHECKF(f && !memcmp(magic, "\x89PNG\r\n\x1a\n", 8) && size > 20000, "the screenshot %s: %ld bytes", shot, size);
  web_stop(&ro);
  web_stop(&rw);
}

int main(void) {
  if (daemon_main_begin()) return 1;
  RUN(test_setup);
  RUN(test_api_matches_redis);
  RUN(test_bad_requests);
  RUN(test_browser);
  return daemon_main_end();
}
