/* `distilld watch [ID]`: a live view, redrawn every interval: the job table and the live workers,
 * or one job's status block with the last entries of its metrics and events streams. When Redis
 * goes away the frame says so and the view reconnects; SIGINT/SIGTERM end it.
 *
 * Exit status: 0 ok (or the watched job reached a final state), 1 failure, 2 usage. */
#define _POSIX_C_SOURCE 200809L
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/client_view.h"
#include "common/cli_util.h"
#include "common/keys.h"

/* ---- the worker table (watch) ------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

enum { N_WORKER_COLS = 5 };
static const char *const worker_head[N_WORKER_COLS] = {"WORKER", "STATE", "JOBS", "DEVICES", "HEARTBEAT"};

/* Writes the table of live workers to `f`; names whose hash has expired leave P:workers. Returns
 * 0, or -1 with c->err. */
static int worker_table(dd_client *c, FILE *f) {
  char key[CLIENT_KEY_LEN], buf[64];
  redisReply *set = client_command(c, "SMEMBERS", dd_key(key, sizeof key, c->prefix, DD_KEY_WORKERS), NULL);
  if (!set) return -1;
  int rc = -1;
  size_t n = set->type == REDIS_REPLY_ARRAY ? set->elements : 0;
  const char **names = calloc(n + 2, sizeof *names), **gone = calloc(n + 2, sizeof *gone);
  redisReply **rows = calloc(n ? n : 1, sizeof *rows);
  view_cell *cells = calloc(n ? n * N_WORKER_COLS : 1, sizeof *cells);
  if (!names || !gone || !rows || !cells) {
    client_errf(c, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < n; i++) names[i] = set->element[i]->str;
  qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; i < n; i++) {
    const char *argv[2] = {"HGETALL", dd_key(key, sizeof key, c->prefix, DD_KEY_WORKER, names[i])};
    redisAppendCommandArgv(c->rc, 2, argv, NULL);
  }
  if (client_pipeline(c, n, rows) != 0) goto done;
  double now = dd_now(), t;
  size_t shown = 0, ngone = 0;
  for (size_t i = 0; i < n; i++) {
    if (rows[i]->type != REDIS_REPLY_ARRAY || rows[i]->elements == 0) {
      gone[2 + ngone++] = names[i];
      continue;
    }
    view_cell *row = cells + shown++ * N_WORKER_COLS;
    const char *max_jobs = reply_field(rows[i], "max_jobs"), *jobs = reply_field(rows[i], "jobs");
    view_cell_set(row[0], names[i]);
    view_cell_set(row[1], reply_field(rows[i], "state"));
    if (max_jobs) {
      int k = 0; /* the number of ids: commas + 1 */
      for (const char *p = jobs; p && *p; p++) k += *p == ',';
      snprintf(buf, sizeof buf, "%s (%d/%s)", jobs ? jobs : "idle", jobs ? k + 1 : 0, max_jobs);
      view_cell_set(row[2], buf);
    } else {
      view_cell_set(row[2], jobs ? jobs : "idle");
    }
    view_cell_set(row[3], reply_field(rows[i], "devices"));
    if (view_num(reply_field(rows[i], "heartbeat_at"), &t)) {
      char age[32];
      dd_cli_fmt_duration(now - t, age, sizeof age);
      snprintf(buf, sizeof buf, "%s ago", age);
      view_cell_set(row[4], buf);
    } else {
      view_cell_set(row[4], NULL);
    }
  }
  rc = view_prune_and_print(c, f, "SREM", dd_key(key, sizeof key, c->prefix, DD_KEY_WORKERS), gone, ngone,
                            N_WORKER_COLS, worker_head, cells, shown, "no live workers");
done:
  for (size_t i = 0; rows && i < n; i++)
    if (rows[i]) freeReplyObject(rows[i]);
  free(rows);
  free(cells);
  free(names);
  free(gone);
  freeReplyObject(set);
  return rc;
}


/* ---- watch -------------------------------------------------------------------------------------- */

static volatile sig_atomic_t watch_stop;
static void on_watch_signal(int sig) {
  (void)sig;
  watch_stop = 1;
}

static double mono_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Sleeps `s` seconds, or less when SIGINT arrives. */
static void watch_sleep(double s) {
  double end = mono_now() + s;
  while (!watch_stop) {
    double left = end - mono_now();
    if (left <= 0) break;
    struct timespec ts = {(time_t)left, 0};
    ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
  }
}

/* Writes the newest `count` entries of a stream, oldest first, one line each: the entry's time,
 * then its fields ("type" first for events; "worker" in brackets at the end). */
static int stream_tail(dd_client *c, FILE *f, const char *key, const char *title, int count) {
  char n[16], when[32];
  snprintf(n, sizeof n, "%d", count);
  redisReply *r = client_command(c, "XREVRANGE", key, "+", "-", "COUNT", n, NULL);
  if (!r) return -1;
  fprintf(f, "\n%s\n", title);
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) fprintf(f, "  (none yet)\n");
  for (size_t i = r->type == REDIS_REPLY_ARRAY ? r->elements : 0; i-- > 0;) {
    const redisReply *e = r->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !reply_is_str(e->element[0])) continue;
    const redisReply *kv = e->element[1];
    view_fmt_time(when, sizeof when, strtod(e->element[0]->str, NULL) / 1000.0, 1);
    fprintf(f, "  %s", when);
    const char *type = reply_field(kv, "type"), *worker = reply_field(kv, "worker");
    if (type) fprintf(f, " %-8s", type);
    for (size_t j = 0; kv->type == REDIS_REPLY_ARRAY && j + 1 < kv->elements; j += 2) {
      const char *k = kv->element[j]->str;
      if (!strcmp(k, "type") || !strcmp(k, "worker")) continue;
      view_field(f, k, kv->element[j + 1]->str);
    }
    if (worker) fprintf(f, " [%s]", worker);
    fputc('\n', f);
  }
  freeReplyObject(r);
  return 0;
}

/* Draws one frame. Returns 0, 1 when the job has reached a final state, 2 when there is no such
 * job, or -1 with c->err. */
static int watch_frame(dd_client *c, FILE *f, const char *id, long limit) {
  if (!id) {
    fprintf(f, "JOBS\n");
    if (view_job_table(c, f, limit) != 0) return -1;
    fprintf(f, "\nWORKERS\n");
    return worker_table(c, f) != 0 ? -1 : 0;
  }
  redisReply *h = client_job_hash(c, id);
  if (!h) return -1;
  if (h->elements == 0) {
    freeReplyObject(h);
    return 2;
  }
  view_status_block(f, id, h, dd_now());
  int final = view_final_state(reply_field(h, "state"));
  freeReplyObject(h);
  char key[CLIENT_KEY_LEN];
  if (stream_tail(c, f, dd_key(key, sizeof key, c->prefix, DD_KEY_JOB_METRICS, id), "METRICS (last 5)", 5) != 0) return -1;
  if (stream_tail(c, f, dd_key(key, sizeof key, c->prefix, DD_KEY_JOB_EVENTS, id), "EVENTS (last 5)", 5) != 0) return -1;
  return final;
}

/* Renders one frame into a new buffer (*buf, *len; the caller frees): a header line, then the
 * view, or the outage when Redis cannot be reached (and reconnects first when disconnected).
 * Returns watch_frame's result; -1 with c->lost means the frame shows the outage; -2: out of
 * memory (c->err). */
static int watch_render(dd_client *c, const char *id, long limit, double interval, char **buf, size_t *len) {
  char when[32];
  int r = -1;
  for (int outage = 0; outage < 2; outage++) {
    FILE *m = open_memstream(buf, len);
    if (!m) {
      client_errf(c, "out of memory");
      c->lost = 0;
      return -2;
    }
    view_fmt_time(when, sizeof when, dd_now(), 0);
    fprintf(m, "distilld watch%s%s  Redis %s  prefix %s  %s\n\n", id ? " " : "", id ? id : "", c->addr, c->prefix, when);
    if (outage) {
      fprintf(m, "Redis unreachable, retrying every %gs (%s)\n", interval, c->err);
    } else {
      c->lost = 0;
      if (!c->rc) client_connect(c);
      r = c->rc ? watch_frame(c, m, id, limit) : -1;
    }
    fclose(m);
    if (outage || r >= 0 || !c->lost) break;
    /* the connection failed mid-frame: draw the outage instead */
    client_disconnect(c);
    free(*buf);
    *buf = NULL;
  }
  return r;
}

int dd_cmd_watch(int argc, char **argv) {
  client_opts co = {0};
  const char *id = NULL;
  double interval = 1.0;
  long count = 0, limit = 20;
  for (int i = 0; i < argc; i++) {
    if (dd_cli_is_help(argv[i])) return dd_cli_help("watch");
    int r = client_opt(&co, argc, argv, &i);
    if (r < 0) return dd_cli_usage("watch");
    if (r > 0) continue;
    const char *a = argv[i];
    if ((!strcmp(a, "--interval") || !strcmp(a, "--count") || !strcmp(a, "-n")) && i + 1 >= argc) {
      dd_cli_error("watch: %s needs a value", a);
      return dd_cli_usage("watch");
    }
    if (!strcmp(a, "--interval")) {
      char *end;
      interval = strtod(argv[++i], &end);
      if (end == argv[i] || *end || !(interval >= 0.05) || interval > 86400) {
        dd_cli_error("--interval wants seconds between 0.05 and 86400, got \"%s\"", argv[i]);
        return 2;
      }
    } else if (!strcmp(a, "--count") || !strcmp(a, "-n")) {
      long v = client_parse_count(argv[++i]);
      if (v < 0) {
        dd_cli_error("%s wants a positive number, got \"%s\"", a, argv[i]);
        return 2;
      }
      if (!strcmp(a, "-n"))
        limit = v;
      else
        count = v;
    } else if ((a[0] == '-' && a[1]) || id) {
      return dd_cli_bad_arg("watch", a);
    } else {
      id = a;
    }
  }
  int rc = 0;
  if (id && (rc = client_check_id("watch", id))) return rc;
  dd_client c;
  if ((rc = client_setup(&c, &co)) != 0) goto done;
  if (client_connect(&c) != 0) {
    rc = client_fail(&c);
    goto done;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_watch_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  int tty = isatty(STDOUT_FILENO);
  for (long frame = 0; !watch_stop; frame++) {
    char *buf = NULL;
    size_t len = 0;
    int r = watch_render(&c, id, limit, interval, &buf, &len);
    if (r == -2 || r == 2 || (r < 0 && !c.lost)) {
      rc = r == 2 ? client_no_job(id) : client_fail(&c);
      free(buf);
      break;
    }
    if (tty)
      fputs("\033[H\033[2J", stdout);
    else if (frame > 0)
      fputc('\n', stdout);
    view_emit(stdout, buf, len);
    fflush(stdout);
    free(buf);
    if (r == 1 || (count > 0 && frame + 1 >= count)) break;
    watch_sleep(interval);
  }
done:
  client_close(&c);
  return rc;
}

