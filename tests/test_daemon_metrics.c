/* The daemon's Prometheus endpoint (docs/monitoring.md) end to end: a real daemon with
 * metrics_listen set, a real redis-server and real jobs (the harness: tests/test_daemon.h), read
 * over real TCP connections on 127.0.0.1 (plain sockets).
 *
 * 12a. The worker's series before any job; a running job's series (iteration, max iteration,
 *      epoch, learning rate, speed, each loss term, the last test's accuracy, the teacher's, ETA,
 *      data wait, data errors, attempt) equal to its hash in Redis, with HELP and TYPE lines; lease
 *      renewals counted; a Redis reconnect counted; after a cancel the job's series are gone and
 *      jobs_total{state="cancelled"} is 1. A second daemon on the same port fails to start.
 * 12b. `promtool check metrics` (Debian's prometheus package) accepts the output.
 * 12c. A real Prometheus scrapes the daemon every second; its query API finds the job's
 *      series, and so do the Grafana dashboard's queries (deploy/grafana/check_prometheus_dashboard.py);
 *      distilld_job_iteration with a plausible value.
 * 12d. Bad clients never stall the daemon: 404, 405, a header over 64 KiB refused, garbage, a
 *      client that connects and sends nothing (and one that stops mid-header) while a scrape
 *      answers at once, many connections at once; the job trains on, /metrics still answers,
 *      and the silent clients are closed after the connection timeout.
 * 12e. Bad metrics_listen values: the config is refused naming the file and the field. "[::1]:PORT"
 *      serves on IPv6 loopback (not on 127.0.0.1), and serves while Redis cannot be reached.
 *
 * promtool and prometheus are found on PATH; without them 12b and 12c print SKIP. */
#define _GNU_SOURCE
#define TEST_PROC_NAME "test_daemon_metrics"
#include <poll.h>

#include "test_daemon.h"
#include "test_http.h"

/* ---- reading the exposition format ------------------------------------------------------------- */

/* The value of the first sample of `name` whose labels hold `l1` and `l2` (each may be NULL), as
 * written (into txt, when given); 1 when there is one. */
static int sample_txt(const char *body, const char *name, const char *l1, const char *l2, double *v, char *txt, size_t len) {
  size_t n = strlen(name);
  for (const char *line = body; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
    if (strncmp(line, name, n) || (line[n] != '{' && line[n] != ' ')) continue;
    const char *eol = strchr(line, '\n');
    size_t ll = eol ? (size_t)(eol - line) : strlen(line);
    char buf[2048];
    if (ll >= sizeof buf) continue;
    memcpy(buf, line, ll);
    buf[ll] = '\0';
    if ((l1 && !strstr(buf, l1)) || (l2 && !strstr(buf, l2))) continue;
    const char *val = strrchr(buf, ' ');
    if (!val) continue;
    if (v) *v = strtod(val + 1, NULL);
    if (txt) snprintf(txt, len, "%s", val + 1);
    return 1;
  }
  return 0;
}

static int sample(const char *body, const char *name, const char *l1, const char *l2, double *v) {
  return sample_txt(body, name, l1, l2, v, NULL, 0);
}

/* The HELP line and "# TYPE name type" are there. */
static int has_family(const char *body, const char *name, const char *type) {
  char help[160], t[160];
  snprintf(help, sizeof help, "# HELP %s ", name);
  snprintf(t, sizeof t, "# TYPE %s %s\n", name, type);
  return strstr(body, help) && strstr(body, t);
}

/* A daemon with metrics_listen: "LISTEN". */
static dmn *daemon_with_metrics(const char *name, const char *listen) {
  char extra[160];
  snprintf(extra, sizeof extra, "metrics_listen: \"%s\"\n", listen);
  daemon_cfg_extra = extra;
  dmn *d = daemon_start(name, 1, 10, 1);
  daemon_cfg_extra = NULL;
  return d && daemon_wait_up(d, 15) ? d : NULL;
}

static void cancel_job(const char *id) {
  redisReply *r = cmd("HSET %s cancel 1", K("job:%s", id));
  if (r) freeReplyObject(r);
}

/* A job that trains until cancelled (the teacher's tests and a test every 500 iterations). */
static int submit_long_job(const char *id) {
  job_opts o = {.max_iter = 1000000, .display = 200, .test_interval = 500, .snapshot = 0, .teacher = 1};
  return submit_job(id, &o);
}

/* ---- 12a, 12b: the series against Redis; promtool ----------------------------------------------- */

/* A field of an HGETALL reply, or NULL. */
static const char *hv(const redisReply *h, const char *field) {
  for (size_t i = 0; h && h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2)
    if (!strcmp(h->element[i]->str, field)) return h->element[i + 1]->str;
  return NULL;
}

/* The job hash's fields the endpoint shows, each: metric, label (NULL, or a loss term's), field,
 * scale (data_wait_ms is seconds there). */
static const struct {
  const char *metric, *term, *field;
  double scale;
} pairs[] = {
    {"distilld_job_iteration", NULL, "iter", 1},       {"distilld_job_max_iteration", NULL, "max_iter", 1},
    {"distilld_job_epoch", NULL, "epoch", 1},          {"distilld_job_learning_rate", NULL, "lr", 1},
    {"distilld_job_images_per_second", NULL, "img_per_s", 1},
    {"distilld_job_loss", "term=\"loss\"", "loss", 1}, {"distilld_job_loss", "term=\"ce_loss\"", "ce_loss", 1},
    {"distilld_job_loss", "term=\"kd_loss\"", "kd_loss", 1},
    {"distilld_job_test_iteration", NULL, "test_iter", 1}, {"distilld_job_test_accuracy", NULL, "test_acc", 1},
    {"distilld_job_teacher_accuracy", NULL, "teacher_acc", 1}, {"distilld_job_eta_seconds", NULL, "eta_s", 1},
    {"distilld_job_elapsed_seconds", NULL, "elapsed_s", 1}, {"distilld_job_data_wait_seconds", NULL, "data_wait_ms", 1e-3},
    {"distilld_job_data_errors_total", NULL, "data_errors", 1}, {"distilld_job_attempt", NULL, "attempt", 1},
};
#define N_PAIRS (int)(sizeof pairs / sizeof *pairs)

/* Scrapes between two reads of the job's hash until both reads agree (no display in between) and
 * the scrape's iteration is theirs; then compares every pair. Returns the pairs that matched
 * (N_PAIRS when all did), or -1 when no quiet moment came. */
static int compare_with_redis(int port, const char *id, char **body_out) {
  char lid[96];
  snprintf(lid, sizeof lid, "job_id=\"%s\"", id);
  for (int attempt = 0; attempt < 200; attempt++) {
    redisReply *h1 = cmd("HGETALL %s", K("job:%s", id));
    char *body = NULL;
    int st = http_get(port, "/metrics", &body);
    redisReply *h2 = cmd("HGETALL %s", K("job:%s", id));
    int quiet = st == 200 && h1 && h2 && h1->elements == h2->elements && hv(h1, "iter") && hv(h2, "iter") &&
                !strcmp(hv(h1, "iter"), hv(h2, "iter")) && hv(h2, "test_acc");
    double it;
    if (quiet) quiet = sample(body, "distilld_job_iteration", lid, NULL, &it) && it == strtod(hv(h2, "iter"), NULL);
    int matched = 0;
    for (int p = 0; quiet && p < N_PAIRS; p++) {
      const char *f = hv(h2, pairs[p].field);
      double v, want = f ? strtod(f, NULL) * pairs[p].scale : NAN;
      int ok = f && sample(body, pairs[p].metric, lid, pairs[p].term, &v) &&
               fabs(v - want) <= 1e-9 * (fabs(want) > 1 ? fabs(want) : 1);
      if (!ok)
        fprintf(stderr, "%s{%s}: %s, the hash's %s: %s\n", pairs[p].metric, pairs[p].term ? pairs[p].term : "",
                sample(body, pairs[p].metric, lid, pairs[p].term, &v) ? "there" : "missing", pairs[p].field, test__str(f));
      matched += ok;
    }
    if (h1) freeReplyObject(h1);
    if (h2) freeReplyObject(h2);
    if (quiet) {
      *body_out = body;
      return matched;
    }
    free(body);
    sleep_ms(7);
  }
  return -1;
}

static void check_promtool(const char *body) {
  char promtool[PATH_MAX];
  if (!find_exe(promtool, sizeof promtool, "promtool")) {
    printf("SKIP 12b: promtool is not on PATH (Debian's prometheus package: apt install prometheus)\n");
    return;
  }
  char path[512], shell[PATH_MAX + 600];
  snprintf(path, sizeof path, "%s/%s_scrape.txt", tmp, pfx);
  FILE *f = fopen(path, "w");
  REQUIRE(f);
  fputs(body, f);
  fclose(f);
  snprintf(shell, sizeof shell, "'%s' check metrics < '%s' 2>&1", promtool, path);
  char *out = NULL;
  int st = test_capture(&out, shell);
  CHECKF(st == 0 && out && !out[0], "promtool check metrics: exit %d: %s", st, test__str(out));
  printf("     12b: promtool check metrics: exit %d, %s\n", st, out && !out[0] ? "no complaint" : test__str(out));
  free(out);
}

DTEST(test_series_match_redis) {
  REQUIRE(begin("tm1", 0));
  int port = random_port();
  char listen[32];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
  dmn *d = daemon_with_metrics("wm", listen);
  REQUIRE(d);
  /* before any job: the worker's own series */
  char *body = NULL;
  REQUIRE(http_get(port, "/metrics", &body) == 200);
  CHECK(has_family(body, "distilld_worker_up", "gauge") && strstr(body, "distilld_worker_up{worker=\"wm\"} 1\n"));
  CHECK(strstr(body, "distilld_worker_device_info{worker=\"wm\",device=\"cpu\"} 1\n"));
  CHECK(strstr(body, "distilld_jobs_running{worker=\"wm\"} 0\n"));
  CHECK(has_family(body, "distilld_jobs_total", "counter") &&
        strstr(body, "distilld_jobs_total{worker=\"wm\",state=\"cancelled\"} 0\n"));
  CHECK(strstr(body, "distilld_redis_connected{worker=\"wm\"} 1\n"));
  CHECK(has_family(body, "distilld_job_iteration", "gauge") && !strstr(body, "distilld_job_iteration{"));
  free(body);
  /* a second daemon cannot serve the same address: it says so and exits 1 */
  dmn *d2 = NULL;
  {
    char extra[160];
    snprintf(extra, sizeof extra, "metrics_listen: \"%s\"\n", listen);
    daemon_cfg_extra = extra;
    d2 = daemon_start("wm2", 1, 10, 1);
    daemon_cfg_extra = NULL;
  }
  REQUIRE(d2);
  int st2 = wait_exit(d2->pid, 15000);
  if (st2 == -1)
    daemon_term(d2, 5000);
  else
    daemon_reap(d2, st2);
  CHECKF(exit_code(st2) == 1, "the second daemon on %s: wait status %d", listen, st2);
  CHECK(test_file_contains(d2->log, "metrics_listen \"127.0.0.1:") && test_file_contains(d2->log, "cannot serve there"));

  REQUIRE(submit_long_job("mj1"));
  REQUIRE(wait_field_at_least("mj1", "test_iter", 500, 90));
  body = NULL;
  int matched = compare_with_redis(port, "mj1", &body);
  CHECKF(matched == N_PAIRS, "%d of %d series equal to the job's hash (-1: the hash never stood still)", matched, N_PAIRS);
  REQUIRE(body);
  printf("     12a: %d series of job mj1 equal to its hash in Redis\n", matched);
  for (int p = 0; p < N_PAIRS; p++)
    CHECKF(has_family(body, pairs[p].metric, strstr(pairs[p].metric, "_total") ? "counter" : "gauge"), "%s: HELP/TYPE",
           pairs[p].metric);
  CHECK(strstr(body, "job_id=\"mj1\",job_name=\"mj1\",worker=\"wm\",device=\"cpu\""));
  CHECK(strstr(body, "distilld_jobs_running{worker=\"wm\"} 1\n"));
  CHECK(has_family(body, "distilld_ring_depth", "gauge") && has_family(body, "distilld_ring_dropped_total", "counter"));
  CHECK(sample(body, "distilld_ring_dropped_total", NULL, NULL, NULL));
  check_promtool(body);
  free(body);
  /* lease renewals (heartbeat_s 1) */
  double renewals = 0;
  for (int i = 0; i < 60 && renewals < 1; i++) {
    body = NULL;
    if (http_get(port, "/metrics", &body) == 200) sample(body, "distilld_job_lease_renewals_total", "job_id=\"mj1\"", NULL, &renewals);
    free(body);
    if (renewals < 1) sleep_ms(100);
  }
  CHECKF(renewals >= 1, "lease renewals %g", renewals);
  /* Redis closes the daemon's connection: one reconnect */
  redisReply *r = cmd("CLIENT KILL TYPE normal SKIPME yes");
  CHECKF(r && r->type == REDIS_REPLY_INTEGER && r->integer >= 1, "CLIENT KILL: %lld", r ? r->integer : -1);
  if (r) freeReplyObject(r);
  double reconnects = 0, connected = 0;
  for (int i = 0; i < 100 && !(reconnects >= 1 && connected == 1); i++) {
    body = NULL;
    if (http_get(port, "/metrics", &body) == 200) {
      sample(body, "distilld_redis_reconnects_total", NULL, NULL, &reconnects);
      sample(body, "distilld_redis_connected", NULL, NULL, &connected);
    }
    free(body);
    sleep_ms(50);
  }
  CHECKF(reconnects >= 1 && connected == 1, "reconnects %g, connected %g", reconnects, connected);
  /* a cancel: the job's series go, the counter counts it */
  cancel_job("mj1");
  char *st = wait_final("mj1", 60);
  CHECKF(st && !strcmp(st, "cancelled"), "mj1: %s", test__str(st));
  free(st);
  body = NULL;
  double cancelled = -1;
  for (int i = 0; i < 50 && cancelled != 1; i++) {
    free(body);
    body = NULL;
    if (http_get(port, "/metrics", &body) == 200)
      sample(body, "distilld_jobs_total", "state=\"cancelled\"", NULL, &cancelled);
    if (cancelled != 1) sleep_ms(50);
  }
  CHECKF(cancelled == 1, "jobs_total{state=\"cancelled\"} %g", cancelled);
  CHECK(body && strstr(body, "distilld_jobs_running{worker=\"wm\"} 0\n") && !strstr(body, "job_id=\"mj1\""));
  free(body);
}

/* ---- 12c: a real Prometheus scrapes the daemon ------------------------------------------------------- */

/* The first "value":[TIME,"V"] of a query answer: V; 1 when there is one. */
static int prom_value(const char *json, double *v) {
  const char *p = json ? strstr(json, "\"value\":[") : NULL;
  if (!p || !(p = strstr(p, ",\""))) return 0;
  *v = strtod(p + 2, NULL);
  return 1;
}

/* A Prometheus instant query (the expression URL-encoded by the caller): the answer's body. */
static char *prom_query(int pport, const char *expr_enc) {
  char path[512], *body = NULL;
  snprintf(path, sizeof path, "/api/v1/query?query=%s", expr_enc);
  if (http_get(pport, path, &body) != 200) {
    free(body);
    return NULL;
  }
  return body;
}

DTEST(test_prometheus_scrapes) {
  char prom[PATH_MAX];
  if (!find_exe(prom, sizeof prom, "prometheus") && (snprintf(prom, sizeof prom, "/usr/bin/prometheus"), access(prom, X_OK))) {
    printf("SKIP 12c: no prometheus binary on PATH or in /usr/bin (Debian's prometheus package: apt install prometheus)\n");
    test_t0 = mono();
    return;
  }
  REQUIRE(begin("tm3", 0));
  int port = random_port(), pport;
  do pport = random_port();
  while (pport == port);
  char listen[32];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
  dmn *d = daemon_with_metrics("wp", listen);
  REQUIRE(d);
  REQUIRE(submit_long_job("mp1"));
  REQUIRE(wait_field_at_least("mp1", "iter", 200, 60));
  char dir[300], yml[400], data[400], log[400], a_cfg[480], a_data[480], a_web[64];
  snprintf(dir, sizeof dir, "%s/prometheus_%s", root, pfx);
  mkdir(dir, 0755);
  snprintf(yml, sizeof yml, "%s/prometheus.yml", dir);
  snprintf(data, sizeof data, "%s/data", dir);
  snprintf(log, sizeof log, "%s/prometheus.log", dir);
  REQUIRE(wfile(yml,
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: distilld\n    static_configs:\n      - targets: [\"127.0.0.1:%d\"]\n",
                port));
  snprintf(a_cfg, sizeof a_cfg, "--config.file=%s", yml);
  snprintf(a_data, sizeof a_data, "--storage.tsdb.path=%s", data);
  snprintf(a_web, sizeof a_web, "--web.listen-address=127.0.0.1:%d", pport);
  const char *argv[] = {prom, a_cfg, a_data, a_web, "--log.level=warn", NULL};
  pid_t pp = spawn(argv, dir, log);
  REQUIRE(pp > 0);
  int ready = 0;
  for (double end = mono() + 60; !ready && mono() < end; sleep_ms(200)) ready = http_get(pport, "/-/ready", NULL) == 200;
  CHECKF(ready, "prometheus on 127.0.0.1:%d never became ready", pport);
  /* distilld_job_iteration{job_id="mp1"} */
  double v = -1, up = -1;
  char *ans = NULL;
  for (double end = mono() + 60; ready && mono() < end && v <= 0; sleep_ms(300)) {
    free(ans);
    ans = prom_query(pport, "distilld_job_iteration%7Bjob_id%3D%22mp1%22%7D");
    if (!prom_value(ans, &v)) v = -1;
  }
  long long iter_now = hget_ll(K("job:mp1"), "iter", -1);
  CHECKF(v > 0 && v <= 1000000 && v <= iter_now, "Prometheus: distilld_job_iteration{job_id=\"mp1\"} %g (the hash's iter %lld): %s",
         v, iter_now, test__str(ans));
  CHECK(ans && strstr(ans, "\"job_name\":\"mp1\"") && strstr(ans, "\"worker\":\"wp\""));
  printf("     12c: Prometheus has distilld_job_iteration{job_id=\"mp1\"} = %g (the hash: %lld now)\n", v, iter_now);
  free(ans);
  ans = ready ? prom_query(pport, "up%7Bjob%3D%22distilld%22%7D") : NULL;
  CHECKF(prom_value(ans, &up) && up == 1, "up{job=\"distilld\"}: %s", test__str(ans));
  free(ans);
  ans = ready ? prom_query(pport, "distilld_job_loss%7Bjob_id%3D%22mp1%22%2Cterm%3D%22kd_loss%22%7D") : NULL;
  CHECKF(prom_value(ans, &v), "distilld_job_loss{term=\"kd_loss\"}: %s", test__str(ans));
  free(ans);
  /* the Grafana dashboard's every query on this Prometheus (deploy/grafana/): no error, and the
   * job's progress series there */
  if (ready) {
    char cmd[1200], *out = NULL;
    snprintf(cmd, sizeof cmd, "python3 '%s/deploy/grafana/check_prometheus_dashboard.py' --prometheus http://127.0.0.1:%d --job mp1 2>&1",
             DD_SOURCE_DIR, pport);
    int st = test_capture(&out, cmd);
    CHECKF(st == 0 && strstr(test__str(out), "live: every query ran"), "the dashboard's queries: exit %d:\n%s", st,
           test__str(out));
    if (st == 0) printf("     12c: every query of deploy/grafana/distilld-prometheus-dashboard.json ran, the job's series there\n");
    free(out);
  }
  kill(pp, SIGTERM);
  if (wait_exit(pp, 15000) == -1) kill_wait(pp);
  if (test__cur_failed) test_print_tail("prometheus", log, 30);
  cancel_job("mp1");
  free(wait_final("mp1", 60));
}

/* ---- 12d: bad clients ----------------------------------------------------------------------------------- */

/* n connections at once, each sending a complete GET /metrics: how many got a 200 (the others
 * were closed at the connection limit), all within `timeout_s`. */
static int many_at_once(int port, int n, double timeout_s, int *closed) {
  int fds[256], served = 0;
  char got[256][16];
  size_t len[256];
  *closed = 0;
  if (n > 256) n = 256;
  for (int i = 0; i < n; i++) {
    fds[i] = tcp_open(port), len[i] = 0;
    if (fds[i] < 0) (*closed)++; /* refused at connect: as good as closed */
  }
  char req[160];
  int rl = snprintf(req, sizeof req, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n", port);
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0) send_all(fds[i], req, (size_t)rl);
  /* read every answer to its end (a 200's body is drained, only its first bytes kept) */
  double end = mono() + timeout_s;
  int open_n = n;
  while (open_n > 0 && mono() < end) {
    struct pollfd pf[256];
    for (int i = 0; i < n; i++) pf[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    if (poll(pf, (nfds_t)n, 200) <= 0) continue;
    for (int i = 0; i < n; i++) {
      if (fds[i] < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      ssize_t k = recv(fds[i], buf, sizeof buf, 0);
      if (k > 0) {
        size_t c = (size_t)k < sizeof got[i] - 1 - len[i] ? (size_t)k : sizeof got[i] - 1 - len[i];
        memcpy(got[i] + len[i], buf, c);
        len[i] += c;
        continue;
      }
      got[i][len[i]] = '\0';
      if (http_status(got[i]) == 200) served++;
      else (*closed)++;
      close(fds[i]);
      fds[i] = -1;
    }
    open_n = 0;
    for (int i = 0; i < n; i++) open_n += fds[i] >= 0;
  }
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0) close(fds[i]);
  return served;
}

/* The 12d requests that get an answer at once: 404, 405, HEAD, a header over 64 KiB, garbage. */
static void check_bad_requests(int port) {
  CHECK(http_get(port, "/nope", NULL) == 404);
  CHECK(http_get(port, "/", NULL) == 404);
  CHECK(http_get(port, "/metrics/x", NULL) == 404);
  const char post[] = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
  char *r = http_raw(port, post, sizeof post - 1);
  CHECKF(http_status(r) == 405 && strstr(r, "Allow: GET, HEAD"), "POST: %.200s", r);
  free(r);
  const char del[] = "DELETE /metrics HTTP/1.0\r\n\r\n";
  r = http_raw(port, del, sizeof del - 1);
  CHECKF(http_status(r) == 405, "DELETE: %.200s", r);
  free(r);
  const char head[] = "HEAD /metrics HTTP/1.0\r\n\r\n";
  r = http_raw(port, head, sizeof head - 1);
  CHECKF(http_status(r) == 200 && !http_body(r)[0], "HEAD: %.200s", r);
  free(r);
  /* a request header of 70 KiB: refused (431, or closed), never served */
  double secs = 0;
  int st = http_huge_header(port, "/metrics", 70 * 1024, &secs);
  CHECKF(st != 200 && (st == 0 || st == 431 || st == 413 || st == 400), "a 70 KiB header: status %d", st);
  CHECKF(secs < 6, "a 70 KiB header took %.1f s", secs);
  printf("     12d: a 70 KiB request header: %s%d in %.3f s\n", st ? "HTTP " : "closed, status ", st, secs);
  const char junk[] = "\x01\x02\x03 this is not HTTP\r\n\r\n";
  r = http_raw(port, junk, sizeof junk - 1);
  CHECKF(http_status(r) != 200, "garbage: %.200s", r);
  free(r);
}

DTEST(test_bad_clients) {
  REQUIRE(begin("tm4", 0));
  int port = random_port();
  char listen[16];
  snprintf(listen, sizeof listen, "%d", port); /* a port alone: 127.0.0.1 */
  dmn *d = daemon_with_metrics("wb", listen);
  REQUIRE(d);
  REQUIRE(submit_long_job("mb1"));
  REQUIRE(wait_field_at_least("mb1", "iter", 200, 60));
  check_bad_requests(port);
  /* a client that connects and sends nothing, one that stops mid-header: a scrape answers at once */
  int silent = tcp_open(port), partial = tcp_open(port);
  REQUIRE(silent >= 0 && partial >= 0);
  const char half[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
  send_all(partial, half, sizeof half - 1);
  sleep_ms(200);
  double t0 = mono();
  CHECK(http_get(port, "/metrics", NULL) == 200);
  double dt = mono() - t0;
  CHECKF(dt < 1.0, "a scrape next to two silent clients took %.3f s", dt);
  long long iter_before = hget_ll(K("job:mb1"), "iter", -1);
  /* many at once: each served or closed at the limit, none left hanging */
  int closed = 0;
  t0 = mono();
  int served = many_at_once(port, 200, 20, &closed);
  printf("     12d: 200 connections at once: %d served, %d closed (the limit), in %.2f s; a scrape beside two silent "
         "clients: %.3f s\n", served, closed, mono() - t0, dt);
  CHECKF(served >= 20 && served + closed == 200, "%d served, %d closed of 200", served, closed);
  /* the job trains on and the endpoint answers */
  CHECKF(wait_field_at_least("mb1", "iter", iter_before + 200, 30), "iter %lld, then %lld", iter_before,
         hget_ll(K("job:mb1"), "iter", -1));
  char *body = NULL;
  t0 = mono();
  CHECK(http_get(port, "/metrics", &body) == 200);
  CHECKF(mono() - t0 < 1.0, "a scrape after the abuse took %.3f s", mono() - t0);
  double it = 0;
  CHECK(body && sample(body, "distilld_job_iteration", "job_id=\"mb1\"", NULL, &it) && it >= (double)iter_before);
  free(body);
  /* the silent clients are closed after the connection timeout (10 s) */
  int eof = 0;
  struct timeval tv = {16, 0};
  setsockopt(silent, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char c;
  t0 = mono();
  eof = recv(silent, &c, 1, 0) == 0;
  CHECKF(eof && mono() - t0 < 16, "the silent client: %s after %.1f s", eof ? "closed" : "still open", mono() - t0);
  close(silent);
  close(partial);
  cancel_job("mb1");
  free(wait_final("mb1", 60));
}

/* ---- 12e: metrics_listen values --------------------------------------------------------------------- */

/* 1 when [::1]:port can be bound (the machine has IPv6 loopback) */
static int v6_loopback(int port) {
  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a6, sizeof a6) == 0;
  if (fd >= 0) close(fd);
  return ok;
}

/* "[::1]:PORT" serves on IPv6 loopback, and serves while Redis cannot be reached. */
static void check_v6_without_redis(void) {
  int port = random_port();
  if (!v6_loopback(port)) {
    printf("SKIP 12e [::1]: this machine has no IPv6 loopback\n");
    return;
  }
  char cfg[512], log[512], ps[16];
  snprintf(cfg, sizeof cfg, "%s/v6.cfg", tmp);
  snprintf(log, sizeof log, "%s/v6.log", tmp);
  snprintf(ps, sizeof ps, "%d", port);
  REQUIRE(wfile(cfg, "redis_port: %d\nworker_name: \"wv6\"\nmetrics_listen: \"[::1]:%d\"\n", closed_port(), port));
  const char *argv[] = {DISTILLD_EXE, "--config", cfg, NULL};
  pid_t pid = spawn(argv, tmp, log);
  REQUIRE(pid > 0);
  char *r = NULL;
  const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
  for (double end = mono() + 15; mono() < end && http_status(r) != 200; sleep_ms(50)) {
    free(r);
    r = NULL;
    int fd = tcp_open_at(port, 1);
    if (fd < 0) continue;
    send_all(fd, req, sizeof req - 1);
    r = recv_all(fd);
    close(fd);
  }
  CHECKF(http_status(r) == 200 && strstr(r, "distilld_worker_up{worker=\"wv6\"} 1\n") &&
             strstr(r, "distilld_redis_connected{worker=\"wv6\"} 0\n"),
         "[::1]:%d without Redis: %.300s", port, test__str(r));
  free(r);
  CHECKF(tcp_open_at(port, 0) < 0, "[::1]:%d answers on 127.0.0.1 too", port);
  kill(pid, SIGTERM);
  int st = wait_exit(pid, 15000);
  if (st == -1) kill_wait(pid);
  CHECKF(exit_code(st) == 0, "the daemon on [::1]: wait status %d", st);
  CHECKF(!test_log_has_sanitizer_report(log), "a sanitizer report in %s", log);
  if (test__cur_failed) test_print_tail("wv6", log, 20);
}

DTEST(test_listen_addresses) {
  test_t0 = mono(); /* no begin(): no Redis is needed */
  static const struct {
    const char *value, *says;
  } bad[] = {
      {":9464", "name the address: 127.0.0.1:9464 (loopback only) or 0.0.0.0:9464"},
      {"example.com:9464", "is not an IP address"},
      {"127.0.0.1:0", "is not a port"},
      {"127.0.0.1:70000", "is not a port"},
      {"127.0.0.1:94x4", "is not a port"},
      {"[::1]9464", "an IPv6 address is written [ADDRESS]:PORT"},
      {"[zz]:9464", "is not an IPv6 address"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char cfg[512], *out = NULL;
    snprintf(cfg, sizeof cfg, "%s/bad_listen_%zu.cfg", tmp, i);
    REQUIRE(wfile(cfg, "redis_port: 1\nmetrics_listen: \"%s\"\n", bad[i].value));
    int st = test_distilld(&out, tmp, "--config '%s'", cfg);
    char want[600];
    snprintf(want, sizeof want, "%s: metrics_listen \"%s\": ", cfg, bad[i].value);
    CHECKF(st == 2 && out && strstr(out, want) && strstr(out, bad[i].says), "metrics_listen \"%s\": exit %d: %s", bad[i].value,
           st, test__str(out));
    free(out);
  }
  printf("     12e: %zu bad metrics_listen values refused, naming the file and the field\n", sizeof bad / sizeof *bad);
  check_v6_without_redis();
}

int main(void) {
  if (daemon_main_begin()) return 1;
  RUN(test_setup);
  RUN(test_listen_addresses);
  RUN(test_series_match_redis);
  RUN(test_prometheus_scrapes);
  RUN(test_bad_clients);
  return daemon_main_end();
}
