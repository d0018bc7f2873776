/* The Prometheus endpoint (service/metrics_http.h): the libmicrohttpd server and the text
 * exposition format (https://prometheus.io/docs/instrumenting/exposition_formats/, version
 * 0.0.4): per metric family a HELP and a TYPE line, then its samples, label values escaped
 * (backslash, double quote, line feed), values as Prometheus reads them (NaN, +Inf, -Inf). The
 * names and labels are listed in docs/monitoring.md. */
#define _GNU_SOURCE
#include "service/metrics_http.h"

#include <arpa/inet.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "common/dconfig.h"
#include "common/http_server.h"
#include "service/log.h"
#include "service/metrics.h"
#include "service/state.h"

struct metrics_http {
  struct MHD_Daemon *mhd;
  mx_table *table;
  mx_data *copy; /* the one copy: every request is handled on the server's one thread */
  dd_http_log log;
};

/* ---- a growing text buffer --------------------------------------------------------------------------- */

typedef struct {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if (b->p && b->len + (size_t)n < b->cap) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap ? b->cap * 2 : 16384;
    while (cap < b->len + (size_t)n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) {
      b->oom = 1;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
}

/* A label value, escaped as the format asks. */
static void sb_label(sbuf *b, const char *name, const char *v, int first) {
  sb_printf(b, "%s%s=\"", first ? "" : ",", name);
  for (const char *s = v; *s; s++) {
    if (*s == '\\') sb_printf(b, "\\\\");
    else if (*s == '"') sb_printf(b, "\\\"");
    else if (*s == '\n') sb_printf(b, "\\n");
    else sb_printf(b, "%c", *s);
  }
  sb_printf(b, "\"");
}

/* " VALUE\n": integers in full, the rest with nine significant digits where that reads back as the
 * same number (as the job's hash holds them: the same text), else seventeen; NaN and infinities as
 * Prometheus spells them. */
static void sb_value(sbuf *b, double v) {
  char t[40];
  if (isnan(v)) {
    sb_printf(b, " NaN\n");
  } else if (isinf(v)) {
    sb_printf(b, " %sInf\n", v > 0 ? "+" : "-");
  } else if (v == floor(v) && fabs(v) < 1e15) {
    sb_printf(b, " %.0f\n", v);
  } else {
    snprintf(t, sizeof t, "%.9g", v);
    if (strtod(t, NULL) != v) snprintf(t, sizeof t, "%.17g", v);
    sb_printf(b, " %s\n", t);
  }
}

static void sb_family(sbuf *b, const char *name, const char *type, const char *help) {
  sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* ---- the metrics ------------------------------------------------------------------------------------ */

/* The worker's own series: labels {worker}. */
static void worker_sample(sbuf *b, const mx_data *m, const char *name, const char *type, const char *help, double v) {
  sb_family(b, name, type, help);
  sb_printf(b, "%s{", name);
  sb_label(b, "worker", m->worker, 1);
  sb_printf(b, "}");
  sb_value(b, v);
}

static void format_worker(sbuf *b, const mx_data *m) {
  static const char *const states[MX_N_OUTCOMES] = {"succeeded", "failed", "cancelled", "handed_back", "lost"};
  worker_sample(b, m, "distilld_worker_up", "gauge", "1 while this worker (a distilld daemon) runs and serves this endpoint.", 1);
  sb_family(b, "distilld_worker_device_info", "gauge", "The worker's devices (the config's device list), one series of value 1 each.");
  char devs[sizeof m->devices];
  snprintf(devs, sizeof devs, "%s", m->devices);
  char *save = NULL;
  for (char *dv = strtok_r(devs, ",", &save); dv; dv = strtok_r(NULL, ",", &save)) {
    sb_printf(b, "distilld_worker_device_info{");
    sb_label(b, "worker", m->worker, 1);
    sb_label(b, "device", dv, 0);
    sb_printf(b, "}");
    sb_value(b, 1);
  }
  worker_sample(b, m, "distilld_worker_max_jobs", "gauge", "The most jobs the worker runs at once (max_jobs).", m->max_jobs);
  worker_sample(b, m, "distilld_worker_start_time_seconds", "gauge", "When the worker started, in Unix time.", m->started_at);
  worker_sample(b, m, "distilld_worker_draining", "gauge",
                "1 after SIGTERM or SIGINT: the worker takes no more jobs and hands its running ones back.", m->draining);
  int running = 0;
  for (int i = 0; i < MX_MAX_JOBS; i++) running += m->jobs[i].active;
  worker_sample(b, m, "distilld_jobs_running", "gauge", "Jobs running on this worker now (their threads have not ended).", running);
  sb_family(b, "distilld_jobs_total", "counter", "Jobs this worker ran to an end since it started, by how they ended.");
  for (int s = 0; s < MX_N_OUTCOMES; s++) {
    sb_printf(b, "distilld_jobs_total{");
    sb_label(b, "worker", m->worker, 1);
    sb_label(b, "state", states[s], 0);
    sb_printf(b, "}");
    sb_value(b, (double)m->finished[s]);
  }
  worker_sample(b, m, "distilld_redis_connected", "gauge", "1 while the worker's connection to Redis is up.", m->connected);
  worker_sample(b, m, "distilld_redis_reconnects_total", "counter",
                "Connections to Redis made again after one was lost.", (double)m->reconnects);
  worker_sample(b, m, "distilld_ring_depth", "gauge",
                "Job updates (ring items) waiting for Redis to take them.", (double)m->ring_depth);
  worker_sample(b, m, "distilld_ring_capacity", "gauge", "The ring's size in items.", m->ring_capacity);
  worker_sample(b, m, "distilld_ring_dropped_total", "counter",
                "Job updates dropped because the ring was full (each counted in its job's metrics_dropped).",
                (double)m->ring_dropped);
}

/* What a per-job family shows: a field of mx_job, and whether the job has it yet. */
enum { J_ATTEMPT, J_ITER, J_MAX_ITER, J_EPOCH, J_LR, J_IMG, J_TEST_ITER, J_TEST_ACC, J_TEACHER_ACC, J_ETA, J_ELAPSED,
       J_DATA_WAIT, J_DATA_ERRORS, J_RENEWALS, J_DROPPED };

static int job_value(const mx_job *j, int what, double *v) {
  switch (what) {
    case J_ATTEMPT: *v = j->attempt; return 1;
    case J_ITER: *v = j->iter; return j->has_progress;
    case J_MAX_ITER: *v = j->max_iter; return j->has_progress;
    case J_EPOCH: *v = j->epoch; return j->has_progress;
    case J_LR: *v = j->lr; return j->has_progress;
    case J_IMG: *v = j->img_per_s; return j->has_progress;
    case J_TEST_ITER: *v = j->test_iter; return j->has_test;
    case J_TEST_ACC: *v = j->test_acc; return j->has_test_acc;
    case J_TEACHER_ACC: *v = j->teacher_acc; return j->has_teacher;
    case J_ETA: *v = j->eta_s; return j->has_progress;
    case J_ELAPSED: *v = j->elapsed_s; return j->has_progress;
    case J_DATA_WAIT: *v = j->data_wait_s; return j->has_progress;
    case J_DATA_ERRORS: *v = j->data_errors; return 1;
    case J_RENEWALS: *v = (double)j->renewals; return 1;
    case J_DROPPED: *v = (double)j->dropped; return 1;
  }
  return 0;
}

static const struct {
  const char *name, *type, *help;
  int what;
} job_families[] = {
    {"distilld_job_attempt", "gauge", "The job's attempt (1 on its first run, +1 at each takeover or hand-back).", J_ATTEMPT},
    {"distilld_job_iteration", "gauge", "The job's last displayed iteration (the hash's iter).", J_ITER},
    {"distilld_job_max_iteration", "gauge", "The iteration the job ends at (the solver's max_iter).", J_MAX_ITER},
    {"distilld_job_epoch", "gauge", "The epoch of the last displayed iteration.", J_EPOCH},
    {"distilld_job_learning_rate", "gauge", "The learning rate at the last displayed iteration.", J_LR},
    {"distilld_job_images_per_second", "gauge", "Training speed over the last display interval, in images per second.", J_IMG},
    {"distilld_job_test_iteration", "gauge", "The iteration of the student's last test.", J_TEST_ITER},
    {"distilld_job_test_accuracy", "gauge", "The student's accuracy (0 to 1) at its last test.", J_TEST_ACC},
    {"distilld_job_teacher_accuracy", "gauge", "The teacher's own TEST accuracy (0 to 1), measured once at the start.", J_TEACHER_ACC},
    {"distilld_job_eta_seconds", "gauge", "The time the job still needs at its current speed, in seconds.", J_ETA},
    {"distilld_job_elapsed_seconds", "gauge", "The time the job has trained in this attempt, in seconds.", J_ELAPSED},
    {"distilld_job_data_wait_seconds", "gauge", "Time each iteration waited for its batch, on average over the last display interval, in seconds.", J_DATA_WAIT},
    {"distilld_job_data_errors_total", "counter", "Images that failed to decode and were skipped.", J_DATA_ERRORS},
    {"distilld_job_lease_renewals_total", "counter", "Renewals of the job's lease this worker made and Redis accepted.", J_RENEWALS},
    {"distilld_job_metrics_dropped_total", "counter", "The job's updates dropped in this attempt because the ring was full.", J_DROPPED},
};

static void job_labels(sbuf *b, const mx_data *m, const mx_job *j) {
  sb_label(b, "job_id", j->id, 1);
  sb_label(b, "job_name", j->name, 0);
  sb_label(b, "worker", m->worker, 0);
  sb_label(b, "device", j->device, 0);
}

static void format_jobs(sbuf *b, const mx_data *m) {
  for (size_t f = 0; f < sizeof job_families / sizeof *job_families; f++) {
    sb_family(b, job_families[f].name, job_families[f].type, job_families[f].help);
    for (int i = 0; i < MX_MAX_JOBS; i++) {
      const mx_job *j = &m->jobs[i];
      double v;
      if (!j->active || !job_value(j, job_families[f].what, &v)) continue;
      sb_printf(b, "%s{", job_families[f].name);
      job_labels(b, m, j);
      sb_printf(b, "}");
      sb_value(b, v);
    }
  }
  sb_family(b, "distilld_job_loss", "gauge",
            "The job's loss terms at the last displayed iteration: loss (the total, smoothed), ce_loss, kd_loss, hint losses, ...");
  for (int i = 0; i < MX_MAX_JOBS; i++) {
    const mx_job *j = &m->jobs[i];
    if (!j->active) continue;
    for (int t = 0; t < j->n_terms; t++) {
      sb_printf(b, "distilld_job_loss{");
      job_labels(b, m, j);
      sb_label(b, "term", j->terms[t].name, 0);
      sb_printf(b, "}");
      sb_value(b, j->terms[t].value);
    }
  }
}

/* ---- the server ------------------------------------------------------------------------------------- */

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, char *body, size_t len, int owned,
                               const char *type, const char *allow) {
  struct MHD_Response *r = MHD_create_response_from_buffer(len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
  if (!r) {
    if (owned) free(body);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size, void **req_cls) {
  metrics_http *h = cls;
  (void)version, (void)upload_data, (void)upload_data_size, (void)req_cls;
  static char not_allowed[] = "only GET and HEAD are served here\n", not_found[] = "not found: the metrics are at /metrics\n",
              no_memory[] = "out of memory\n";
  if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
    return respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, not_allowed, sizeof not_allowed - 1, 0, "text/plain; charset=utf-8",
                   "GET, HEAD");
  if (strcmp(url, "/metrics"))
    return respond(c, MHD_HTTP_NOT_FOUND, not_found, sizeof not_found - 1, 0, "text/plain; charset=utf-8", NULL);
  metrics_copy(h->table, h->copy); /* the lock is held for this copy only */
  sbuf b = {0};
  format_worker(&b, h->copy);
  format_jobs(&b, h->copy);
  if (b.oom) {
    free(b.p);
    return respond(c, MHD_HTTP_INTERNAL_SERVER_ERROR, no_memory, sizeof no_memory - 1, 0, "text/plain; charset=utf-8", NULL);
  }
  return respond(c, MHD_HTTP_OK, b.p, b.len, 1, "text/plain; version=0.0.4; charset=utf-8", NULL);
}

/* libmicrohttpd's messages (rate-limited by common/http_server.c): the daemon's log */
static void emit_log(const char *msg) { dlog(1, NULL, "metrics endpoint: %s", msg); }

int metrics_http_start(metrics_http **out, daemon_t *d, char *err, size_t errlen) {
  *out = NULL;
  struct sockaddr_storage sa;
  socklen_t salen;
  int r = dd_dconfig_metrics_addr(d->cfg, &sa, &salen, err, errlen);
  if (r) return r;
  if (!salen) return dd_errorf(DD_EINVAL, err, errlen, "metrics_listen is not set");
  metrics_http *h = calloc(1, sizeof *h);
  if (!h || !(h->copy = malloc(sizeof *h->copy))) {
    free(h);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory for the metrics endpoint");
  }
  h->table = &d->mx;
  h->log.emit = emit_log;
  static const dd_http_limits lim = {METRICS_HTTP_MAX_CONNECTIONS, METRICS_HTTP_TIMEOUT_S, METRICS_HTTP_CONNECTION_MEMORY};
  h->mhd = dd_http_start((const struct sockaddr *)&sa, &lim, on_request, h, NULL, NULL, &h->log);
  if (!h->mhd) {
    r = dd_errorf(DD_EIO, err, errlen, "metrics_listen \"%s\": cannot serve there: %s", d->cfg->metrics_listen,
                  h->log.start_error[0] ? h->log.start_error : "libmicrohttpd did not start");
    free(h->copy);
    free(h);
    return r;
  }
  uint16_t port = sa.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&sa)->sin6_port)
                                           : ntohs(((struct sockaddr_in *)&sa)->sin_port);
  char host[INET6_ADDRSTRLEN] = "?";
  const void *addr = sa.ss_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)&sa)->sin6_addr
                                              : (const void *)&((struct sockaddr_in *)&sa)->sin_addr;
  inet_ntop(sa.ss_family, addr, host, sizeof host);
  dlog(2, NULL, "Prometheus metrics at http://%s%s%s:%u/metrics", sa.ss_family == AF_INET6 ? "[" : "", host,
       sa.ss_family == AF_INET6 ? "]" : "", (unsigned)port);
  *out = h;
  return 0;
}

void metrics_http_stop(metrics_http *h) {
  if (!h) return;
  MHD_stop_daemon(h->mhd);
  free(h->copy);
  free(h);
}
