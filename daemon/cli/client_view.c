/* What the client verbs show (cli/client_view.h). */
#define _POSIX_C_SOURCE 200809L
#include "cli/client_view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cli_util.h"
#include "common/keys.h"

int view_num(const char *s, double *v) {
  if (!s || !*s) return 0;
  char *end;
  *v = strtod(s, &end);
  return *end == '\0';
}

const char *view_fmt_num(char *buf, size_t len, const char *s, int prec, int g) {
  double v;
  if (view_num(s, &v))
    snprintf(buf, len, g ? "%.*g" : "%.*f", prec, v);
  else
    snprintf(buf, len, "%s", s ? s : "-");
  return buf;
}

/* 1 when `s` ends with `suffix`. */
static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

void view_field(FILE *f, const char *k, const char *v) {
  char buf[64];
  double d;
  if (!view_num(v, &d)) {
    fprintf(f, " %s %s", k, v);
  } else if (ends_with(k, "_s") && !ends_with(k, "_per_s")) { /* eta_s, elapsed_s: seconds */
    dd_cli_fmt_duration(d, buf, sizeof buf);
    fprintf(f, " %.*s %s", (int)(strlen(k) - 2), k, buf);
  } else if (ends_with(k, "loss")) {
    fprintf(f, " %s %.4g", k, d);
  } else {
    fprintf(f, " %s %s", k, strchr(v, '.') ? view_fmt_num(buf, sizeof buf, v, 5, 1) : v);
  }
}

void view_fmt_time(char *buf, size_t len, double t, int short_form) {
  time_t s = (time_t)t;
  struct tm tm;
  if (!localtime_r(&s, &tm) || !strftime(buf, len, short_form ? "%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm))
    snprintf(buf, len, "?");
}

int view_final_state(const char *s) {
  return s && (!strcmp(s, "succeeded") || !strcmp(s, "failed") || !strcmp(s, "cancelled"));
}

void view_json_string(FILE *f, const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s, *e = p + n;
  fputc('"', f);
  while (p < e) {
    unsigned char b = *p;
    if (b == '"' || b == '\\') {
      fputc('\\', f);
      fputc(b, f);
      p++;
    } else if (b < 0x20 || b == 0x7f) {
      const char *esc = b == '\n' ? "\\n" : b == '\t' ? "\\t" : b == '\r' ? "\\r" : NULL;
      if (esc)
        fputs(esc, f);
      else
        fprintf(f, "\\u%04x", b);
      p++;
    } else if (b < 0x80) {
      fputc(b, f);
      p++;
    } else {
      /* the length of a valid UTF-8 sequence starting here, 0 if there is none */
      size_t k = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
      if (k && (size_t)(e - p) >= k) {
        for (size_t j = 1; j < k; j++)
          if ((p[j] & 0xc0) != 0x80) k = 0;
        /* overlong, surrogate and beyond-U+10FFFF forms */
        if (k == 3 && ((b == 0xe0 && p[1] < 0xa0) || (b == 0xed && p[1] >= 0xa0))) k = 0;
        if (k == 4 && ((b == 0xf0 && p[1] < 0x90) || (b == 0xf4 && p[1] >= 0x90))) k = 0;
      } else {
        k = 0;
      }
      if (k) {
        fwrite(p, 1, k, f);
        p += k;
      } else {
        fputs("\\ufffd", f);
        p++;
      }
    }
  }
  fputc('"', f);
}

void view_emit(FILE *out, const char *buf, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char b = (unsigned char)buf[i];
    fputc((b < 0x20 && b != '\n') || b == 0x7f ? '?' : b, out);
  }
}

/* ---- tables ------------------------------------------------------------------------------------- */

void view_cell_set(view_cell c, const char *s) {
  if (!s || !*s) s = "-";
  size_t n = strlen(s);
  if (n < VIEW_CELL_LEN) {
    memcpy(c, s, n + 1);
  } else {
    size_t keep = VIEW_CELL_LEN - 4;
    while (keep > 0 && ((unsigned char)s[keep] & 0xc0) == 0x80) keep--; /* not inside a UTF-8 character */
    memcpy(c, s, keep);
    memcpy(c + keep, "...", 4);
  }
}

/* Columns a UTF-8 string takes (its characters; continuation bytes take none). */
static int text_width(const char *s) {
  int w = 0;
  for (; *s; s++) w += ((unsigned char)*s & 0xc0) != 0x80;
  return w;
}

void view_table_print(FILE *f, int ncol, const char *const *head, view_cell *cells, size_t nrows) {
  int width[16];
  for (int j = 0; j < ncol && j < 16; j++) {
    width[j] = text_width(head[j]);
    for (size_t i = 0; i < nrows; i++) {
      int w = text_width(cells[i * (size_t)ncol + (size_t)j]);
      if (w > width[j]) width[j] = w;
    }
  }
  for (size_t i = 0; i <= nrows; i++) {
    for (int j = 0; j < ncol && j < 16; j++) {
      const char *s = i == 0 ? head[j] : cells[(i - 1) * (size_t)ncol + (size_t)j];
      if (j == ncol - 1)
        fprintf(f, "%s\n", s);
      else
        fprintf(f, "%s%*s", s, width[j] - text_width(s) + 2, "");
    }
  }
}

/* ---- the job table (list, watch) ---------------------------------------------------------------- */

enum { F_STATE, F_NAME, F_WORKER, F_ITER, F_MAX_ITER, F_TEST_ACC, F_TEACHER_ACC, F_SUBMITTED, N_JOB_FIELDS };
static const char *const job_fields[N_JOB_FIELDS] = {"state",    "name",     "worker",      "iter",
                                                     "max_iter", "test_acc", "teacher_acc", "submitted_at"};
enum { N_JOB_COLS = 8 };
static const char *const job_head[N_JOB_COLS] = {"ID", "STATE", "NAME", "PROGRESS", "TEST_ACC", "TEACHER", "WORKER", "AGE"};

static const char *hm_value(const redisReply *r, int field) {
  const redisReply *e = r->element[field];
  return reply_is_str(e) && e->len ? e->str : NULL;
}

static void job_row(view_cell *row, const char *id, const redisReply *r, double now) {
  char buf[64];
  double it, max, t;
  view_cell_set(row[0], id);
  view_cell_set(row[1], hm_value(r, F_STATE));
  view_cell_set(row[2], hm_value(r, F_NAME));
  int have_it = view_num(hm_value(r, F_ITER), &it), have_max = view_num(hm_value(r, F_MAX_ITER), &max);
  if (have_max && max > 0)
    snprintf(buf, sizeof buf, "%.0f/%.0f %3.0f%%", have_it ? it : 0, max, 100.0 * (have_it ? it : 0) / max);
  else if (have_it)
    snprintf(buf, sizeof buf, "%.0f", it);
  else
    snprintf(buf, sizeof buf, "-");
  view_cell_set(row[3], buf);
  view_cell_set(row[4], hm_value(r, F_TEST_ACC) ? view_fmt_num(buf, sizeof buf, hm_value(r, F_TEST_ACC), 4, 0) : NULL);
  view_cell_set(row[5], hm_value(r, F_TEACHER_ACC) ? view_fmt_num(buf, sizeof buf, hm_value(r, F_TEACHER_ACC), 4, 0) : NULL);
  view_cell_set(row[6], hm_value(r, F_WORKER));
  if (view_num(hm_value(r, F_SUBMITTED), &t))
    dd_cli_fmt_duration(now - t, buf, sizeof buf);
  else
    snprintf(buf, sizeof buf, "-");
  view_cell_set(row[7], buf);
}

int view_prune_and_print(dd_client *c, FILE *f, const char *cmd, const char *set_key, const char **gone, size_t ngone,
                         int ncol, const char *const *head, view_cell *cells, size_t shown, const char *none) {
  if (ngone) {
    gone[0] = cmd;
    gone[1] = set_key;
    redisReply *r = client_request(c, (int)(2 + ngone), gone, NULL);
    if (!r) return -1;
    freeReplyObject(r);
  }
  if (shown)
    view_table_print(f, ncol, head, cells, shown);
  else
    fprintf(f, "%s\n", none);
  return 0;
}

int view_job_table(dd_client *c, FILE *f, long limit) {
  char key[CLIENT_KEY_LEN], stop[32];
  snprintf(stop, sizeof stop, "%ld", limit > 0 ? limit - 1 : -1L);
  redisReply *ids = client_command(c, "ZREVRANGE", dd_key(key, sizeof key, c->prefix, DD_KEY_INDEX), "0", stop, NULL);
  if (!ids) return -1;
  int rc = -1;
  size_t n = ids->type == REDIS_REPLY_ARRAY ? ids->elements : 0;
  redisReply **rows = calloc(n ? n : 1, sizeof *rows);
  view_cell *cells = calloc(n ? n * N_JOB_COLS : 1, sizeof *cells);
  const char **gone = calloc(n + 2, sizeof *gone);
  if (!rows || !cells || !gone) {
    client_errf(c, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < n; i++) {
    const char *argv[2 + N_JOB_FIELDS] = {"HMGET", dd_key(key, sizeof key, c->prefix, DD_KEY_JOB, ids->element[i]->str)};
    for (int j = 0; j < N_JOB_FIELDS; j++) argv[2 + j] = job_fields[j];
    redisAppendCommandArgv(c->rc, 2 + N_JOB_FIELDS, argv, NULL);
  }
  if (client_pipeline(c, n, rows) != 0) goto done;
  double now = dd_now();
  size_t shown = 0, ngone = 0;
  for (size_t i = 0; i < n; i++) {
    if (rows[i]->type != REDIS_REPLY_ARRAY || rows[i]->elements != N_JOB_FIELDS) continue;
    if (!hm_value(rows[i], F_STATE)) { /* the hash expired (every job has a state) */
      gone[2 + ngone++] = ids->element[i]->str;
      continue;
    }
    job_row(cells + shown * N_JOB_COLS, ids->element[i]->str, rows[i], now);
    shown++;
  }
  rc = view_prune_and_print(c, f, "ZREM", dd_key(key, sizeof key, c->prefix, DD_KEY_INDEX), gone, ngone, N_JOB_COLS,
                            job_head, cells, shown, "no jobs");
done:
  for (size_t i = 0; rows && i < n; i++)
    if (rows[i]) freeReplyObject(rows[i]);
  free(rows);
  free(cells);
  free(gone);
  freeReplyObject(ids);
  return rc;
}

/* ---- the status block (status, watch ID) -------------------------------------------------------- */

static int loss_term_rank(const char *name) {
  return !strcmp(name, "ce_loss") ? 0 : !strcmp(name, "kd_loss") ? 1 : 2;
}

static int cmp_loss_term(const void *a, const void *b) {
  const char *x = *(const char *const *)a, *y = *(const char *const *)b;
  int rx = loss_term_rank(x), ry = loss_term_rank(y);
  return rx != ry ? rx - ry : strcmp(x, y);
}

#define LABEL "  %-12s"

void view_status_block(FILE *f, const char *id, const redisReply *h, double now) {
  char a[64], b[64], when[64];
  double v, w;
  const char *s, *state = reply_field(h, "state");
  if ((s = reply_field(h, "name")))
    fprintf(f, "job %s (%s)\n", id, s);
  else
    fprintf(f, "job %s\n", id);
  fprintf(f, LABEL "%s", "state", state ? state : "?");
  if (state && !strcmp(state, "running") && (s = reply_field(h, "cancel")) && !strcmp(s, "1")) fprintf(f, " (cancel requested)");
  fputc('\n', f);
  if ((s = reply_field(h, "worker"))) {
    fprintf(f, LABEL "%s", "worker", s);
    if ((s = reply_field(h, "attempt")) && strcmp(s, "1")) fprintf(f, " (attempt %s)", s);
    fputc('\n', f);
  }
  if (reply_field(h, "iter") || reply_field(h, "max_iter")) {
    const char *it = reply_field(h, "iter"), *max = reply_field(h, "max_iter");
    fprintf(f, LABEL "%s/%s", "iter", it ? it : "0", max ? max : "?");
    if (view_num(it ? it : "0", &v) && view_num(max, &w) && w > 0) fprintf(f, " (%.1f%%)", 100.0 * v / w);
    if ((s = reply_field(h, "resumed_from")) && strcmp(s, "0")) fprintf(f, ", resumed from %s", s);
    fputc('\n', f);
  }
  if ((s = reply_field(h, "epoch"))) fprintf(f, LABEL "%s\n", "epoch", s);
  if ((s = reply_field(h, "loss"))) {
    fprintf(f, LABEL "%s", "loss", view_fmt_num(a, sizeof a, s, 4, 1));
    const char *terms[64];
    size_t nt = 0;
    for (size_t i = 0; i + 1 < h->elements && nt < 64; i += 2) {
      const char *k = h->element[i]->str;
      size_t kl = h->element[i]->len;
      if (kl > 5 && !strcmp(k + kl - 5, "_loss") && strncmp(k, "test_", 5) && reply_field(h, k)) terms[nt++] = k;
    }
    qsort(terms, nt, sizeof *terms, cmp_loss_term);
    for (size_t i = 0; i < nt; i++)
      fprintf(f, "%s%s %s", i ? ", " : " (", terms[i], view_fmt_num(a, sizeof a, reply_field(h, terms[i]), 4, 1));
    fprintf(f, "%s\n", nt ? ")" : "");
  }
  if ((s = reply_field(h, "lr"))) fprintf(f, LABEL "%s\n", "lr", view_fmt_num(a, sizeof a, s, 6, 1));
  if ((s = reply_field(h, "test_acc"))) {
    fprintf(f, LABEL "%s", "test_acc", view_fmt_num(a, sizeof a, s, 4, 0));
    if ((s = reply_field(h, "test_iter"))) fprintf(f, " (iter %s)", s);
    fputc('\n', f);
  }
  if ((s = reply_field(h, "teacher_acc"))) fprintf(f, LABEL "%s\n", "teacher_acc", view_fmt_num(a, sizeof a, s, 4, 0));
  if ((s = reply_field(h, "img_per_s"))) {
    fprintf(f, LABEL "%s", "img/s", view_fmt_num(a, sizeof a, s, 1, 0));
    if ((s = reply_field(h, "data_wait_ms"))) fprintf(f, " (data wait %s ms/iter)", view_fmt_num(a, sizeof a, s, 2, 0));
    fputc('\n', f);
  }
  if (state && !strcmp(state, "running") && view_num(reply_field(h, "eta_s"), &v)) {
    dd_cli_fmt_duration(v, a, sizeof a);
    fprintf(f, LABEL "%s", "eta", a);
    if (view_num(reply_field(h, "elapsed_s"), &w)) {
      dd_cli_fmt_duration(w, b, sizeof b);
      fprintf(f, " (elapsed %s)", b);
    }
    fputc('\n', f);
  } else if (view_num(reply_field(h, "elapsed_s"), &w)) {
    dd_cli_fmt_duration(w, b, sizeof b);
    fprintf(f, LABEL "%s\n", "elapsed", b);
  }
  if ((s = reply_field(h, "last_snapshot"))) {
    fprintf(f, LABEL "%s", "snapshot", s);
    if ((s = reply_field(h, "last_snapshot_iter"))) fprintf(f, " (iter %s)", s);
    fputc('\n', f);
  }
  static const char *const times[][2] = {{"submitted_at", "submitted"}, {"started_at", "started"}, {"finished_at", "finished"}};
  for (size_t i = 0; i < sizeof times / sizeof times[0]; i++)
    if (view_num(reply_field(h, times[i][0]), &v)) {
      view_fmt_time(when, sizeof when, v, 0);
      dd_cli_fmt_duration(now - v, a, sizeof a);
      fprintf(f, LABEL "%s (%s ago)\n", times[i][1], when, a);
    }
  static const char *const counts[][2] = {
      {"warnings", "warnings"}, {"data_errors", "data errors"}, {"metrics_dropped", "dropped"}};
  for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
    if ((s = reply_field(h, counts[i][0])) && strcmp(s, "0")) fprintf(f, LABEL "%s\n", counts[i][1], s);
  if ((s = reply_field(h, "error"))) fprintf(f, LABEL "%s\n", "error", s);
}

