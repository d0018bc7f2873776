/* The dashboard's JSON endpoints (web/web_api.h): a few pipelined reads of the keys docs/redis.md
 * documents, written out as JSON into a memory stream. */
#define _POSIX_C_SOURCE 200809L
#include "web/web_api.h"

#include <hiredis/hiredis.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client_view.h"
#include "common/keys.h"

static const char *const states[] = {"queued", "running", "succeeded", "failed", "cancelled"};
#define N_STATES 5

/* The summary fields of a job the overview shows (HMGET, in this order). */
static const char *const job_fields[] = {"name", "state", "iter", "max_iter", "eta_s", "loss", "test_acc", "teacher_acc",
                                         "worker", "attempt", "submitted_at", "started_at", "finished_at", "updated_at",
                                         "error"};
#define N_JOB_FIELDS (sizeof job_fields / sizeof *job_fields)

/* ---- JSON into a memory stream ------------------------------------------------------------------------ */

typedef struct {
  FILE *f;
  char *buf;
  size_t len;
} jbuf;

static int jb_open(jbuf *b) {
  memset(b, 0, sizeof *b);
  b->f = open_memstream(&b->buf, &b->len);
  return b->f ? 0 : -1;
}

/* Ends the stream and hands its text to `out` with `status` (500 when the stream failed). */
static void jb_close(jbuf *b, web_reply *out, unsigned status) {
  int bad = ferror(b->f);
  if (fclose(b->f) != 0) bad = 1;
  if (bad) {
    free(b->buf);
    web_api_error(out, 500, "out of memory");
    return;
  }
  out->status = status;
  out->body = b->buf;
  out->len = b->len;
}

static void js(FILE *f, const char *s) { view_json_string(f, s, strlen(s)); }

/* A string of at most `max` bytes (0: whole); a cut through a UTF-8 character shows as U+FFFD. */
static void js_reply(FILE *f, const redisReply *r, size_t max) {
  if (!reply_is_str(r)) {
    fputs("null", f);
    return;
  }
  view_json_string(f, r->str, max && r->len > max ? max : r->len);
}

/* A number as JSON: integers in full, else 9 significant digits where they read back the same,
 * else 17; NaN and infinities (and non-numbers) as null. */
static void jnum(FILE *f, const char *s) {
  double v;
  if (!view_num(s, &v) || !isfinite(v)) {
    fputs("null", f);
  } else if (v == floor(v) && fabs(v) < 1e15) {
    fprintf(f, "%.0f", v);
  } else {
    char t[40];
    snprintf(t, sizeof t, "%.9g", v);
    if (strtod(t, NULL) != v) snprintf(t, sizeof t, "%.17g", v);
    fputs(t, f);
  }
}

void web_api_error(web_reply *out, unsigned status, const char *msg) {
  jbuf b;
  out->status = status;
  out->body = NULL;
  out->len = 0;
  if (jb_open(&b) != 0) return;
  fputs("{\"error\":", b.f);
  js(b.f, msg);
  fputs("}\n", b.f);
  int bad = ferror(b.f);
  if (fclose(b.f) != 0 || bad) {
    free(b.buf);
    return;
  }
  out->body = b.buf;
  out->len = b.len;
}

/* ---- Redis ---------------------------------------------------------------------------------------------- */

/* Connects when the connection is down. 0, or -1 with the 503 answer written. */
static int ensure_connected(web_ctx *w, web_reply *out) {
  if (w->c.rc) return 0;
  if (client_connect(&w->c) == 0) return 0;
  web_api_error(out, 503, w->c.err);
  return -1;
}

/* Reads the replies of `n` appended commands; on failure writes the answer (503 when the
 * connection was lost, else 502 with Redis's error) and returns -1. */
static int read_replies(web_ctx *w, size_t n, redisReply **r, web_reply *out) {
  if (client_pipeline(&w->c, n, r) == 0) return 0;
  web_api_error(out, w->c.lost ? 503 : 502, w->c.err);
  return -1;
}

static void free_replies(redisReply **r, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (r[i]) freeReplyObject(r[i]);
}

static void append(web_ctx *w, int argc, const char **argv) {
  if (w->c.rc) redisAppendCommandArgv(w->c.rc, argc, argv, NULL);
}

/* ---- GET /api/overview ------------------------------------------------------------------------------------ */

/* One job's summary from its HMGET reply; nothing when its hash has expired (every field nil). */
static int write_job_summary(FILE *f, const char *id, const redisReply *r, int first) {
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != N_JOB_FIELDS) return 0;
  size_t have = 0;
  for (size_t i = 0; i < r->elements; i++) have += reply_is_str(r->element[i]);
  if (!have) return 0;
  fputs(first ? "{\"id\":" : ",{\"id\":", f);
  js(f, id);
  for (size_t i = 0; i < r->elements; i++) {
    if (!reply_is_str(r->element[i])) continue;
    fprintf(f, ",\"%s\":", job_fields[i]);
    js_reply(f, r->element[i], WEB_OVERVIEW_FIELD_BYTES);
  }
  fputc('}', f);
  return 1;
}

/* One worker's hash (HGETALL) with "heartbeat_age_s"; nothing when it has expired. */
static int write_worker(FILE *f, const char *name, const redisReply *h, double now, int first) {
  if (!h || h->type != REDIS_REPLY_ARRAY || h->elements == 0) return 0;
  fputs(first ? "{\"name\":" : ",{\"name\":", f);
  js(f, name);
  for (size_t i = 0; i + 1 < h->elements; i += 2) {
    if (!reply_is_str(h->element[i]) || !strcmp(h->element[i]->str, "name")) continue;
    fputc(',', f);
    js_reply(f, h->element[i], WEB_OVERVIEW_FIELD_BYTES);
    fputc(':', f);
    js_reply(f, h->element[i + 1], WEB_OVERVIEW_FIELD_BYTES);
  }
  double hb;
  const char *at = reply_field(h, "heartbeat_at");
  if (at && view_num(at, &hb) && isfinite(hb)) fprintf(f, ",\"heartbeat_age_s\":%.3f", now - hb);
  fputc('}', f);
  return 1;
}

/* The second round: HMGET of each job and HGETALL of each worker, written as "jobs" and "workers". */
static int overview_rows(web_ctx *w, FILE *f, const redisReply *ids, const redisReply *names, web_reply *out) {
  size_t nj = ids->elements, nw = names->elements < WEB_OVERVIEW_WORKERS ? names->elements : WEB_OVERVIEW_WORKERS;
  redisReply **r = calloc(nj + nw + 1, sizeof *r);
  if (!r) {
    web_api_error(out, 500, "out of memory");
    return -1;
  }
  char key[CLIENT_KEY_LEN];
  const char *argv[2 + N_JOB_FIELDS];
  argv[0] = "HMGET";
  for (size_t i = 0; i < N_JOB_FIELDS; i++) argv[2 + i] = job_fields[i];
  for (size_t i = 0; i < nj; i++) {
    argv[1] = dd_key(key, sizeof key, w->c.prefix, DD_KEY_JOB, reply_is_str(ids->element[i]) ? ids->element[i]->str : "");
    append(w, (int)(2 + N_JOB_FIELDS), argv);
  }
  for (size_t i = 0; i < nw; i++) {
    const char *a[] = {"HGETALL",
                       dd_key(key, sizeof key, w->c.prefix, DD_KEY_WORKER, reply_is_str(names->element[i]) ? names->element[i]->str : "")};
    append(w, 2, a);
  }
  if (read_replies(w, nj + nw, r, out) != 0) {
    free(r);
    return -1;
  }
  double now = dd_now();
  fputs(",\"jobs\":[", f);
  for (size_t i = 0, first = 1; i < nj; i++)
    if (reply_is_str(ids->element[i]) && write_job_summary(f, ids->element[i]->str, r[i], (int)first)) first = 0;
  fputs("],\"workers\":[", f);
  for (size_t i = 0, first = 1; i < nw; i++)
    if (reply_is_str(names->element[i]) && write_worker(f, names->element[i]->str, r[nj + i], now, (int)first)) first = 0;
  fputs("]", f);
  free_replies(r, nj + nw);
  free(r);
  return 0;
}

void web_api_overview(web_ctx *w, web_reply *out) {
  if (ensure_connected(w, out) != 0) return;
  char key[CLIENT_KEY_LEN], last[16];
  snprintf(last, sizeof last, "%d", WEB_OVERVIEW_JOBS - 1);
  const char *xlen[] = {"XLEN", dd_key(key, sizeof key, w->c.prefix, DD_KEY_JOBS)};
  append(w, 2, xlen);
  for (int s = 0; s < N_STATES; s++) {
    const char *a[] = {"ZCARD", dd_key(key, sizeof key, w->c.prefix, DD_KEY_STATE, states[s])};
    append(w, 2, a);
  }
  const char *idx[] = {"ZREVRANGE", dd_key(key, sizeof key, w->c.prefix, DD_KEY_INDEX), "0", last};
  append(w, 4, idx);
  const char *wk[] = {"SMEMBERS", dd_key(key, sizeof key, w->c.prefix, DD_KEY_WORKERS)};
  append(w, 2, wk);
  redisReply *r[N_STATES + 3];
  if (read_replies(w, N_STATES + 3, r, out) != 0) return;
  const redisReply *ids = r[N_STATES + 1], *names = r[N_STATES + 2];
  jbuf b;
  if (ids->type != REDIS_REPLY_ARRAY || names->type != REDIS_REPLY_ARRAY) {
    web_api_error(out, 502, "Redis gave an unexpected reply to ZREVRANGE or SMEMBERS");
  } else if (jb_open(&b) != 0) {
    web_api_error(out, 500, "out of memory");
  } else {
    fputs("{\"prefix\":", b.f);
    js(b.f, w->c.prefix);
    fputs(",\"redis\":", b.f);
    js(b.f, w->c.addr);
    fprintf(b.f, ",\"now\":%.3f,\"allow_cancel\":%s,\"queue\":{\"length\":%lld},\"states\":{", dd_now(),
            w->allow_cancel ? "true" : "false", r[0]->type == REDIS_REPLY_INTEGER ? r[0]->integer : -1);
    for (int s = 0; s < N_STATES; s++)
      fprintf(b.f, "%s\"%s\":%lld", s ? "," : "", states[s], r[1 + s]->type == REDIS_REPLY_INTEGER ? r[1 + s]->integer : -1);
    fputs("}", b.f);
    if (overview_rows(w, b.f, ids, names, out) != 0) {
      fclose(b.f);
      free(b.buf);
    } else {
      fputs("}\n", b.f);
      jb_close(&b, out, 200);
    }
  }
  free_replies(r, N_STATES + 3);
}

/* ---- GET /api/job/ID ------------------------------------------------------------------------------------- */

int web_stream_id_valid(const char *s) {
  size_t a = strspn(s, "0123456789");
  if (a < 1 || a > 20 || s[a] != '-') return 0;
  size_t b = strspn(s + a + 1, "0123456789");
  return b >= 1 && b <= 20 && s[a + 1 + b] == '\0';
}

/* A stream's entries (an XRANGE reply) as "NAME":[{"id":...,field:value,...},...], then
 * "NAME_last" (the last id, or null) and "NAME_more" (the COUNT was reached). Values are numbers
 * when `numbers` (the metrics), else strings. */
static void write_entries(FILE *f, const char *name, const redisReply *x, long count, int numbers) {
  const redisReply *lastid = NULL;
  fprintf(f, ",\"%s\":[", name);
  size_t n = x->type == REDIS_REPLY_ARRAY ? x->elements : 0, shown = 0;
  for (size_t i = 0; i < n; i++) {
    const redisReply *e = x->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !reply_is_str(e->element[0])) continue;
    const redisReply *kv = e->element[1];
    fputs(shown++ ? ",{\"id\":" : "{\"id\":", f);
    js_reply(f, e->element[0], 0);
    lastid = e->element[0];
    for (size_t k = 0; kv->type == REDIS_REPLY_ARRAY && k + 1 < kv->elements; k += 2) {
      if (!reply_is_str(kv->element[k]) || !strcmp(kv->element[k]->str, "id")) continue;
      fputc(',', f);
      js_reply(f, kv->element[k], 0);
      fputc(':', f);
      if (numbers && reply_is_str(kv->element[k + 1]) && strcmp(kv->element[k]->str, "worker"))
        jnum(f, kv->element[k + 1]->str);
      else
        js_reply(f, kv->element[k + 1], 0);
    }
    fputc('}', f);
  }
  fprintf(f, "],\"%s_last\":", name);
  if (lastid)
    js_reply(f, lastid, 0);
  else
    fputs("null", f);
  fprintf(f, ",\"%s_more\":%s", name, (long)n >= count ? "true" : "false");
}

void web_api_job(web_ctx *w, const char *id, const char *metrics_since, const char *events_since, web_reply *out) {
  if ((metrics_since && !web_stream_id_valid(metrics_since)) || (events_since && !web_stream_id_valid(events_since))) {
    web_api_error(out, 400, "metrics_since and events_since are stream entry ids (MS-SEQ)");
    return;
  }
  if (ensure_connected(w, out) != 0) return;
  char key[CLIENT_KEY_LEN], ms[48], es[48], mc[16], ec[16];
  snprintf(ms, sizeof ms, metrics_since ? "(%s" : "-", metrics_since);
  snprintf(es, sizeof es, events_since ? "(%s" : "-", events_since);
  snprintf(mc, sizeof mc, "%d", WEB_JOB_METRICS);
  snprintf(ec, sizeof ec, "%d", WEB_JOB_EVENTS);
  const char *h[] = {"HGETALL", dd_key(key, sizeof key, w->c.prefix, DD_KEY_JOB, id)};
  append(w, 2, h);
  const char *m[] = {"XRANGE", dd_key(key, sizeof key, w->c.prefix, DD_KEY_JOB_METRICS, id), ms, "+", "COUNT", mc};
  append(w, 6, m);
  const char *e[] = {"XRANGE", dd_key(key, sizeof key, w->c.prefix, DD_KEY_JOB_EVENTS, id), es, "+", "COUNT", ec};
  append(w, 6, e);
  redisReply *r[3];
  if (read_replies(w, 3, r, out) != 0) return;
  jbuf b;
  if (r[0]->type != REDIS_REPLY_ARRAY || r[0]->elements == 0) {
    char msg[160];
    snprintf(msg, sizeof msg, "no job %s (expired or never submitted)", id);
    web_api_error(out, 404, msg);
  } else if (jb_open(&b) != 0) {
    web_api_error(out, 500, "out of memory");
  } else {
    fputs("{\"id\":", b.f);
    js(b.f, id);
    fprintf(b.f, ",\"now\":%.3f,\"allow_cancel\":%s,\"job\":{", dd_now(), w->allow_cancel ? "true" : "false");
    for (size_t i = 0, shown = 0; i + 1 < r[0]->elements; i += 2) {
      const redisReply *k = r[0]->element[i];
      if (!reply_is_str(k) || !strcmp(k->str, "spec") || !strcmp(k->str, "owner")) continue;
      if (shown++) fputc(',', b.f);
      js_reply(b.f, k, 0);
      fputc(':', b.f);
      js_reply(b.f, r[0]->element[i + 1], 0);
    }
    fputs("}", b.f);
    write_entries(b.f, "metrics", r[1], WEB_JOB_METRICS, 1);
    write_entries(b.f, "events", r[2], WEB_JOB_EVENTS, 0);
    fputs("}\n", b.f);
    jb_close(&b, out, 200);
  }
  free_replies(r, 3);
}

/* ---- POST /api/job/ID/cancel ------------------------------------------------------------------------------ */

void web_api_cancel(web_ctx *w, const char *id, web_reply *out) {
  if (!w->allow_cancel) {
    web_api_error(out, 403, "read-only: this dashboard was started without --allow-cancel");
    return;
  }
  if (ensure_connected(w, out) != 0) return;
  char key[CLIENT_KEY_LEN];
  dd_key(key, sizeof key, w->c.prefix, DD_KEY_JOB, id);
  redisReply *ex = client_command(&w->c, "EXISTS", key, NULL);
  if (!ex) {
    web_api_error(out, w->c.lost ? 503 : 502, w->c.err);
    return;
  }
  long long there = ex->type == REDIS_REPLY_INTEGER ? ex->integer : 0;
  freeReplyObject(ex);
  if (!there) {
    char msg[160];
    snprintf(msg, sizeof msg, "no job %s (expired or never submitted)", id);
    web_api_error(out, 404, msg);
    return;
  }
  /* `distilld cancel ID` itself, with this verb's options: the same script, the same event. Its
   * line ("ID: cancel requested; ...") goes to this process's standard output, as a log. */
  const char *argv[8];
  int argc = 0;
  argv[argc++] = id;
  argv[argc++] = "--redis";
  argv[argc++] = w->c.addr;
  argv[argc++] = "--prefix";
  argv[argc++] = w->c.prefix;
  if (w->co.config) {
    argv[argc++] = "--config";
    argv[argc++] = w->co.config;
  }
  argv[argc] = NULL;
  int rc = dd_cmd_cancel(argc, (char **)argv);
  fflush(stdout);
  redisReply *st = client_command(&w->c, "HMGET", key, "state", "cancel", NULL);
  jbuf b;
  if (rc != 0 || !st || st->type != REDIS_REPLY_ARRAY || st->elements != 2) {
    web_api_error(out, 502, rc != 0 ? "the cancel failed (the dashboard's log says why)" : w->c.err);
  } else if (jb_open(&b) != 0) {
    web_api_error(out, 500, "out of memory");
  } else {
    fputs("{\"ok\":true,\"id\":", b.f);
    js(b.f, id);
    fputs(",\"state\":", b.f);
    js_reply(b.f, st->element[0], 0);
    fputs(",\"cancel\":", b.f);
    js_reply(b.f, st->element[1], 0);
    fputs("}\n", b.f);
    jb_close(&b, out, 200);
  }
  if (st) freeReplyObject(st);
}
