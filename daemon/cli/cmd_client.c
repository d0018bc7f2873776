/* The client verbs, `distilld submit|status|cancel|list|watch`: a synchronous hiredis client of the
 * Redis schema in docs/redis.md (key names and limits in dconfig.h). Each verb reads the config
 * (--config, else $DISTILLD_CONFIG, else the defaults), connects, issues a few commands and exits;
 * `watch` redraws a live view every interval and reconnects when Redis goes away.
 *
 * Exit status: 0 ok, 1 failure (Redis unreachable, unknown job, a command refused), 2 usage (bad
 * arguments, a job file that does not parse, a config that does not read). */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/cli_util.h"
#include "common/dconfig.h"
#include "common/keys.h"
#include "common/redis_sync.h"
#include "format/textformat.h"

/* Key names: the prefix plus a job id (at most 64 bytes) and a suffix. */
#define KEY_LEN 512
/* Table cells are truncated to this many bytes (with "..."). */
#define CELL_LEN 48

static const char common_usage[] = "[--config FILE] [--redis HOST:PORT] [--prefix P]";

/* ---- options every client verb takes ------------------------------------------------------------ */

typedef struct {
  const char *config; /* --config FILE */
  const char *redis;  /* --redis HOST:PORT */
  const char *prefix; /* --prefix P */
} common_opts;

/* Consumes the common option at argv[*i] (and its value). Returns 1 when it was one, 0 when it
 * was not, -1 when its value is missing (printed). */
static int common_opt(common_opts *o, int argc, char **argv, int *i) {
  const char *a = argv[*i];
  const char **slot = !strcmp(a, "--config")   ? &o->config
                      : !strcmp(a, "--redis")  ? &o->redis
                      : !strcmp(a, "--prefix") ? &o->prefix
                                               : NULL;
  if (!slot) return 0;
  if (*i + 1 >= argc) {
    dd_cli_error("%s needs a value", a);
    return -1;
  }
  *slot = argv[++*i];
  return 1;
}

static int usage_error(const char *verb, const char *args) {
  fprintf(stderr, "usage: distilld %s %s %s\n", verb, args, common_usage);
  return 2;
}

/* Parses a positive integer option value; -1 when it is not one. */
static long parse_count(const char *s) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < 1) return -1;
  return v;
}

/* ---- the connection ----------------------------------------------------------------------------- */

typedef struct {
  Distilld__DaemonConfig *cfg;
  char host[256];
  int port;
  char addr[300];       /* "host:port", for messages */
  const char *prefix;   /* --prefix or the config's key_prefix */
  char *password;       /* from dd_dconfig_password; NULL: no AUTH */
  redisContext *rc;     /* NULL while disconnected */
  int lost;             /* the last failure was the connection, not an error reply */
  char err[1024];       /* the last failure, without "distilld: " */
} dd_client;

static void client_errf(dd_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void client_errf(dd_client *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
}

/* Prints the last failure and returns exit status 1. */
static int client_fail(const dd_client *c) {
  dd_cli_error("%s", c->err);
  return 1;
}

/* "HOST:PORT" (or "[V6ADDR]:PORT") into c->host and c->port. Returns 0 or -1. */
static int parse_addr(dd_client *c, const char *s) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s) return -1;
  const char *h = s;
  size_t hlen = (size_t)(colon - s);
  if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') {
    h++;
    hlen -= 2;
  }
  if (hlen == 0 || hlen >= sizeof c->host) return -1;
  char *end;
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (errno || end == colon + 1 || *end || port < 1 || port > 65535) return -1;
  memcpy(c->host, h, hlen);
  c->host[hlen] = '\0';
  c->port = (int)port;
  return 0;
}

/* Reads the config and applies the overrides; connects nothing. Returns 0, or an exit status
 * (printed). Frees with client_close even on failure. */
static int client_setup(dd_client *c, const common_opts *o) {
  memset(c, 0, sizeof *c);
  char err[1024];
  const char *path = o->config;
  if (!path) path = getenv("DISTILLD_CONFIG");
  if (path && !*path) path = NULL;
  if (dd_dconfig_read(&c->cfg, path, err, sizeof err) != 0) {
    dd_cli_error("%s", err);
    return 2;
  }
  if (o->redis) {
    if (parse_addr(c, o->redis) != 0) {
      dd_cli_error("--redis wants HOST:PORT, got \"%s\"", o->redis);
      return 2;
    }
  } else {
    snprintf(c->host, sizeof c->host, "%s", c->cfg->redis_host);
    c->port = c->cfg->redis_port;
  }
  snprintf(c->addr, sizeof c->addr, strchr(c->host, ':') ? "[%s]:%d" : "%s:%d", c->host, c->port);
  c->prefix = o->prefix ? o->prefix : c->cfg->key_prefix;
  if (o->prefix && dd_key_prefix_check(o->prefix)) {
    dd_cli_error("--prefix \"%s\": a key prefix is 1 to 64 of letters, digits and _-.:{}", o->prefix);
    return 2;
  }
  if (dd_dconfig_password(c->cfg, &c->password, err, sizeof err) != 0) {
    dd_cli_error("%s", err);
    return 1;
  }
  /* hiredis writes with write(2): a server that went away must give EPIPE, not kill us. */
  signal(SIGPIPE, SIG_IGN);
  return 0;
}

static void client_disconnect(dd_client *c) {
  if (c->rc) redisFree(c->rc);
  c->rc = NULL;
}

static void client_close(dd_client *c) {
  client_disconnect(c);
  if (c->password) {
    memset(c->password, 0, strlen(c->password));
    free(c->password);
  }
  if (c->cfg) distilld__daemon_config__free_unpacked(c->cfg, NULL);
  memset(c, 0, sizeof *c);
}

/* Connects (2 s timeout) and authenticates. Returns 0, or -1 with c->err (and c->lost when the
 * server could not be reached). */
static int client_connect(dd_client *c) {
  client_disconnect(c);
  c->lost = 0;
  const char *user = c->cfg->redis_user && c->cfg->redis_user[0] ? c->cfg->redis_user : NULL;
  char why[sizeof c->err];
  dd_redis_status s = dd_redis_connect(&c->rc, c->host, c->port, user, c->password, why, sizeof why);
  if (s == DD_REDIS_OK) return 0;
  if (s == DD_REDIS_UNREACHABLE)
    client_errf(c, "cannot reach Redis at %s: %s", c->addr, why);
  else if (s == DD_REDIS_LOST)
    client_errf(c, "lost Redis at %s during AUTH: %s", c->addr, why);
  else
    client_errf(c, "Redis at %s refused the credentials%s%s: %s", c->addr, user ? " of user " : "", user ? user : "", why);
  c->lost = s != DD_REDIS_REFUSED;
  return -1;
}

/* Sends one command (binary-safe: `lens` may be NULL for C strings). Returns the reply (the caller
 * frees it), or NULL with c->err: the connection failed (c->lost) or Redis answered with an error
 * (then freed; with `keep_error` the error reply is returned instead). */
static redisReply *request_ex(dd_client *c, int argc, const char **argv, const size_t *lens, int keep_error) {
  if (!c->rc) {
    c->lost = 1;
    return NULL;
  }
  redisReply *r = redisCommandArgv(c->rc, argc, argv, lens);
  if (!r) {
    client_errf(c, "lost Redis at %s: %s", c->addr, c->rc->errstr[0] ? c->rc->errstr : "connection closed");
    client_disconnect(c);
    c->lost = 1;
    return NULL;
  }
  if (r->type == REDIS_REPLY_ERROR && !keep_error) {
    c->lost = 0;
    if (!strncmp(r->str, "NOAUTH", 6))
      client_errf(c, "Redis at %s wants a password: set redis_password_env or redis_password_file in the config (%s)",
                  c->addr, r->str);
    else
      client_errf(c, "Redis at %s: %s: %s", c->addr, argv[0], r->str);
    freeReplyObject(r);
    return NULL;
  }
  return r;
}

static redisReply *request(dd_client *c, int argc, const char **argv, const size_t *lens) {
  return request_ex(c, argc, argv, lens, 0);
}

/* request() with C-string arguments, NULL-terminated. */
static redisReply *command(dd_client *c, ...) __attribute__((sentinel));
static redisReply *command(dd_client *c, ...) {
  const char *argv[32];
  int argc = 0;
  va_list ap;
  va_start(ap, c);
  for (const char *a; argc < 32 && (a = va_arg(ap, const char *)) != NULL;) argv[argc++] = a;
  va_end(ap);
  return request(c, argc, argv, NULL);
}

/* Reads `n` replies of commands already appended with redisAppendCommandArgv into out[]. Returns
 * 0, or -1 with c->err and every reply freed (out[] all NULL): a lost connection or an error reply. */
static int pipeline_replies(dd_client *c, size_t n, redisReply **out) {
  int failed = 0;
  for (size_t i = 0; i < n; i++) out[i] = NULL;
  for (size_t i = 0; i < n && c->rc; i++) {
    void *r = NULL;
    if (redisGetReply(c->rc, &r) != REDIS_OK) {
      client_errf(c, "lost Redis at %s: %s", c->addr, c->rc->errstr[0] ? c->rc->errstr : "connection closed");
      client_disconnect(c);
      c->lost = 1;
      failed = 1;
      break;
    }
    out[i] = r;
    if (out[i]->type == REDIS_REPLY_ERROR && !failed) {
      client_errf(c, "Redis at %s: %s", c->addr, out[i]->str);
      c->lost = 0;
      failed = 1;
    }
  }
  if (!c->rc) failed = 1;
  if (failed)
    for (size_t i = 0; i < n; i++) {
      if (out[i]) freeReplyObject(out[i]);
      out[i] = NULL;
    }
  return failed ? -1 : 0;
}

/* ---- reading replies ---------------------------------------------------------------------------- */

static int is_str(const redisReply *r) {
  return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

/* The value of `field` in a HGETALL (or stream entry field list) reply; NULL when absent or empty. */
static const char *hfield(const redisReply *h, const char *field) {
  if (!h || h->type != REDIS_REPLY_ARRAY) return NULL;
  for (size_t i = 0; i + 1 < h->elements; i += 2)
    if (is_str(h->element[i]) && !strcmp(h->element[i]->str, field))
      return is_str(h->element[i + 1]) && h->element[i + 1]->len ? h->element[i + 1]->str : NULL;
  return NULL;
}

static int num(const char *s, double *v) {
  if (!s || !*s) return 0;
  char *end;
  *v = strtod(s, &end);
  return *end == '\0';
}

/* `s` formatted with %.*f (or %.*g when `g`) when it is a number, else as is. Returns `buf`. */
static const char *fmt_num(char *buf, size_t len, const char *s, int prec, int g) {
  double v;
  if (num(s, &v))
    snprintf(buf, len, g ? "%.*g" : "%.*f", prec, v);
  else
    snprintf(buf, len, "%s", s ? s : "-");
  return buf;
}

/* "12s", "5m", "3h", "4d" (or "-"). */
static void fmt_age(char *buf, size_t len, double s) {
  if (!(s >= 0) || s > 1e10)
    snprintf(buf, len, "-");
  else if (s < 60)
    snprintf(buf, len, "%ds", (int)s);
  else if (s < 3600)
    snprintf(buf, len, "%dm", (int)(s / 60));
  else if (s < 86400)
    snprintf(buf, len, "%dh", (int)(s / 3600));
  else
    snprintf(buf, len, "%dd", (int)(s / 86400));
}

/* A Unix time (seconds) as local "YYYY-MM-DD HH:MM:SS" (or "HH:MM:SS" when `short_form`). */
static void fmt_time(char *buf, size_t len, double t, int short_form) {
  time_t s = (time_t)t;
  struct tm tm;
  if (!localtime_r(&s, &tm) || !strftime(buf, len, short_form ? "%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm))
    snprintf(buf, len, "?");
}

static int final_state(const char *s) {
  return s && (!strcmp(s, "succeeded") || !strcmp(s, "failed") || !strcmp(s, "cancelled"));
}

/* Writes `s` (`n` bytes) as a JSON string: quotes, backslashes and control characters escaped,
 * valid UTF-8 as is, any other byte as U+FFFD. */
static void json_string(FILE *f, const char *s, size_t n) {
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

/* Writes text built from Redis values to `out` with control characters other than newlines
 * shown as '?', so that a job name or an error message cannot drive the terminal. */
static void emit(FILE *out, const char *buf, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char b = (unsigned char)buf[i];
    fputc((b < 0x20 && b != '\n') || b == 0x7f ? '?' : b, out);
  }
}

/* ---- tables ------------------------------------------------------------------------------------- */

typedef char cell[CELL_LEN];

static void cell_set(cell c, const char *s) {
  if (!s || !*s) s = "-";
  size_t n = strlen(s);
  if (n < CELL_LEN) {
    memcpy(c, s, n + 1);
  } else {
    size_t keep = CELL_LEN - 4;
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

/* Prints `nrows` rows of `ncol` cells (row-major) under `head`, columns padded to their widest. */
static void table_print(FILE *f, int ncol, const char *const *head, cell *cells, size_t nrows) {
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
  return is_str(e) && e->len ? e->str : NULL;
}

static void job_row(cell *row, const char *id, const redisReply *r, double now) {
  char buf[64];
  double it, max, t;
  cell_set(row[0], id);
  cell_set(row[1], hm_value(r, F_STATE));
  cell_set(row[2], hm_value(r, F_NAME));
  int have_it = num(hm_value(r, F_ITER), &it), have_max = num(hm_value(r, F_MAX_ITER), &max);
  if (have_max && max > 0)
    snprintf(buf, sizeof buf, "%.0f/%.0f %3.0f%%", have_it ? it : 0, max, 100.0 * (have_it ? it : 0) / max);
  else if (have_it)
    snprintf(buf, sizeof buf, "%.0f", it);
  else
    snprintf(buf, sizeof buf, "-");
  cell_set(row[3], buf);
  cell_set(row[4], hm_value(r, F_TEST_ACC) ? fmt_num(buf, sizeof buf, hm_value(r, F_TEST_ACC), 4, 0) : NULL);
  cell_set(row[5], hm_value(r, F_TEACHER_ACC) ? fmt_num(buf, sizeof buf, hm_value(r, F_TEACHER_ACC), 4, 0) : NULL);
  cell_set(row[6], hm_value(r, F_WORKER));
  if (num(hm_value(r, F_SUBMITTED), &t))
    fmt_age(buf, sizeof buf, now - t);
  else
    snprintf(buf, sizeof buf, "-");
  cell_set(row[7], buf);
}

/* Writes the table of the newest `limit` jobs (0: all) to `f`. Ids whose hash has expired leave
 * the index. Returns 0, or -1 with c->err. */
static int job_table(dd_client *c, FILE *f, long limit) {
  char key[KEY_LEN], stop[32];
  snprintf(stop, sizeof stop, "%ld", limit > 0 ? limit - 1 : -1L);
  redisReply *ids = command(c, "ZREVRANGE", dd_key(key, sizeof key, c->prefix, DD_KEY_INDEX), "0", stop, NULL);
  if (!ids) return -1;
  int rc = -1;
  size_t n = ids->type == REDIS_REPLY_ARRAY ? ids->elements : 0;
  redisReply **rows = calloc(n ? n : 1, sizeof *rows);
  cell *cells = calloc(n ? n * N_JOB_COLS : 1, sizeof *cells);
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
  if (pipeline_replies(c, n, rows) != 0) goto done;
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
  if (ngone) {
    gone[0] = "ZREM";
    gone[1] = dd_key(key, sizeof key, c->prefix, DD_KEY_INDEX);
    redisReply *r = request(c, (int)(2 + ngone), gone, NULL);
    if (!r) goto done;
    freeReplyObject(r);
  }
  if (shown)
    table_print(f, N_JOB_COLS, job_head, cells, shown);
  else
    fprintf(f, "no jobs\n");
  rc = 0;
done:
  for (size_t i = 0; rows && i < n; i++)
    if (rows[i]) freeReplyObject(rows[i]);
  free(rows);
  free(cells);
  free(gone);
  freeReplyObject(ids);
  return rc;
}

/* ---- the worker table (watch) ------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

enum { N_WORKER_COLS = 5 };
static const char *const worker_head[N_WORKER_COLS] = {"WORKER", "STATE", "JOBS", "DEVICES", "HEARTBEAT"};

/* Writes the table of live workers to `f`; names whose hash has expired leave P:workers. Returns
 * 0, or -1 with c->err. */
static int worker_table(dd_client *c, FILE *f) {
  char key[KEY_LEN], buf[64];
  redisReply *set = command(c, "SMEMBERS", dd_key(key, sizeof key, c->prefix, DD_KEY_WORKERS), NULL);
  if (!set) return -1;
  int rc = -1;
  size_t n = set->type == REDIS_REPLY_ARRAY ? set->elements : 0;
  const char **names = calloc(n + 2, sizeof *names), **gone = calloc(n + 2, sizeof *gone);
  redisReply **rows = calloc(n ? n : 1, sizeof *rows);
  cell *cells = calloc(n ? n * N_WORKER_COLS : 1, sizeof *cells);
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
  if (pipeline_replies(c, n, rows) != 0) goto done;
  double now = dd_now(), t;
  size_t shown = 0, ngone = 0;
  for (size_t i = 0; i < n; i++) {
    if (rows[i]->type != REDIS_REPLY_ARRAY || rows[i]->elements == 0) {
      gone[2 + ngone++] = names[i];
      continue;
    }
    cell *row = cells + shown++ * N_WORKER_COLS;
    const char *max_jobs = hfield(rows[i], "max_jobs"), *jobs = hfield(rows[i], "jobs");
    cell_set(row[0], names[i]);
    cell_set(row[1], hfield(rows[i], "state"));
    if (max_jobs) {
      int k = 0; /* the number of ids: commas + 1 */
      for (const char *p = jobs; p && *p; p++) k += *p == ',';
      snprintf(buf, sizeof buf, "%s (%d/%s)", jobs ? jobs : "idle", jobs ? k + 1 : 0, max_jobs);
      cell_set(row[2], buf);
    } else {
      cell_set(row[2], jobs ? jobs : "idle");
    }
    cell_set(row[3], hfield(rows[i], "devices"));
    if (num(hfield(rows[i], "heartbeat_at"), &t)) {
      char age[32];
      fmt_age(age, sizeof age, now - t);
      snprintf(buf, sizeof buf, "%s ago", age);
      cell_set(row[4], buf);
    } else {
      cell_set(row[4], NULL);
    }
  }
  if (ngone) {
    gone[0] = "SREM";
    gone[1] = dd_key(key, sizeof key, c->prefix, DD_KEY_WORKERS);
    redisReply *r = request(c, (int)(2 + ngone), gone, NULL);
    if (!r) goto done;
    freeReplyObject(r);
  }
  if (shown)
    table_print(f, N_WORKER_COLS, worker_head, cells, shown);
  else
    fprintf(f, "no live workers\n");
  rc = 0;
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

/* Writes a readable block of one job's hash (a HGETALL reply) to `f`; absent fields are left out. */
static void status_block(FILE *f, const char *id, const redisReply *h, double now) {
  char a[64], b[64], when[64];
  double v, w;
  const char *s, *state = hfield(h, "state");
  if ((s = hfield(h, "name")))
    fprintf(f, "job %s (%s)\n", id, s);
  else
    fprintf(f, "job %s\n", id);
  fprintf(f, LABEL "%s", "state", state ? state : "?");
  if (state && !strcmp(state, "running") && (s = hfield(h, "cancel")) && !strcmp(s, "1")) fprintf(f, " (cancel requested)");
  fputc('\n', f);
  if ((s = hfield(h, "worker"))) {
    fprintf(f, LABEL "%s", "worker", s);
    if ((s = hfield(h, "attempt")) && strcmp(s, "1")) fprintf(f, " (attempt %s)", s);
    fputc('\n', f);
  }
  if (hfield(h, "iter") || hfield(h, "max_iter")) {
    const char *it = hfield(h, "iter"), *max = hfield(h, "max_iter");
    fprintf(f, LABEL "%s/%s", "iter", it ? it : "0", max ? max : "?");
    if (num(it ? it : "0", &v) && num(max, &w) && w > 0) fprintf(f, " (%.1f%%)", 100.0 * v / w);
    if ((s = hfield(h, "resumed_from")) && strcmp(s, "0")) fprintf(f, ", resumed from %s", s);
    fputc('\n', f);
  }
  if ((s = hfield(h, "epoch"))) fprintf(f, LABEL "%s\n", "epoch", s);
  if ((s = hfield(h, "loss"))) {
    fprintf(f, LABEL "%s", "loss", fmt_num(a, sizeof a, s, 4, 0));
    const char *terms[64];
    size_t nt = 0;
    for (size_t i = 0; i + 1 < h->elements && nt < 64; i += 2) {
      const char *k = h->element[i]->str;
      size_t kl = h->element[i]->len;
      if (kl > 5 && !strcmp(k + kl - 5, "_loss") && strncmp(k, "test_", 5) && hfield(h, k)) terms[nt++] = k;
    }
    qsort(terms, nt, sizeof *terms, cmp_loss_term);
    for (size_t i = 0; i < nt; i++)
      fprintf(f, "%s%s %s", i ? ", " : " (", terms[i], fmt_num(a, sizeof a, hfield(h, terms[i]), 4, 0));
    fprintf(f, "%s\n", nt ? ")" : "");
  }
  if ((s = hfield(h, "lr"))) fprintf(f, LABEL "%s\n", "lr", fmt_num(a, sizeof a, s, 6, 1));
  if ((s = hfield(h, "test_acc"))) {
    fprintf(f, LABEL "%s", "test_acc", fmt_num(a, sizeof a, s, 4, 0));
    if ((s = hfield(h, "test_iter"))) fprintf(f, " (iter %s)", s);
    fputc('\n', f);
  }
  if ((s = hfield(h, "teacher_acc"))) fprintf(f, LABEL "%s\n", "teacher_acc", fmt_num(a, sizeof a, s, 4, 0));
  if ((s = hfield(h, "img_per_s"))) {
    fprintf(f, LABEL "%s", "img/s", fmt_num(a, sizeof a, s, 1, 0));
    if ((s = hfield(h, "data_wait_ms"))) fprintf(f, " (data wait %s ms/iter)", fmt_num(a, sizeof a, s, 2, 0));
    fputc('\n', f);
  }
  if (state && !strcmp(state, "running") && num(hfield(h, "eta_s"), &v)) {
    dd_cli_fmt_duration(v, a, sizeof a);
    fprintf(f, LABEL "%s", "eta", a);
    if (num(hfield(h, "elapsed_s"), &w)) {
      dd_cli_fmt_duration(w, b, sizeof b);
      fprintf(f, " (elapsed %s)", b);
    }
    fputc('\n', f);
  } else if (num(hfield(h, "elapsed_s"), &w)) {
    dd_cli_fmt_duration(w, b, sizeof b);
    fprintf(f, LABEL "%s\n", "elapsed", b);
  }
  if ((s = hfield(h, "last_snapshot"))) {
    fprintf(f, LABEL "%s", "snapshot", s);
    if ((s = hfield(h, "last_snapshot_iter"))) fprintf(f, " (iter %s)", s);
    fputc('\n', f);
  }
  static const char *const times[][2] = {{"submitted_at", "submitted"}, {"started_at", "started"}, {"finished_at", "finished"}};
  for (size_t i = 0; i < sizeof times / sizeof times[0]; i++)
    if (num(hfield(h, times[i][0]), &v)) {
      fmt_time(when, sizeof when, v, 0);
      fmt_age(a, sizeof a, now - v);
      fprintf(f, LABEL "%s (%s ago)\n", times[i][1], when, a);
    }
  static const char *const counts[][2] = {
      {"warnings", "warnings"}, {"data_errors", "data errors"}, {"metrics_dropped", "dropped"}};
  for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
    if ((s = hfield(h, counts[i][0])) && strcmp(s, "0")) fprintf(f, LABEL "%s\n", counts[i][1], s);
  if ((s = hfield(h, "error"))) fprintf(f, LABEL "%s\n", "error", s);
}

/* HGETALL of one job. Returns the reply (an empty array when there is no such job), or NULL with
 * c->err. */
static redisReply *job_hash(dd_client *c, const char *id) {
  char key[KEY_LEN];
  redisReply *h = command(c, "HGETALL", dd_key(key, sizeof key, c->prefix, DD_KEY_JOB, id), NULL);
  if (h && h->type != REDIS_REPLY_ARRAY) {
    client_errf(c, "Redis at %s: HGETALL gave an unexpected reply", c->addr);
    freeReplyObject(h);
    return NULL;
  }
  return h;
}

static int no_job(const char *id) {
  dd_cli_error("no job %s (expired or never submitted)", id);
  return 1;
}

/* ---- submit ------------------------------------------------------------------------------------- */

static const char submit_args[] = "JOB.prototxt [--id ID]";

/* Reads a job file ("-": standard input) of at most DD_MAX_JOB_BYTES. Returns 0 (*out NUL-terminated,
 * the caller frees) or exit status 1 (printed). */
static int read_job_text(const char *path, char **out, size_t *len) {
  FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
  if (!f) {
    dd_cli_error("cannot open %s: %s", path, strerror(errno));
    return 1;
  }
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap + 1);
  int rc = 0;
  while (buf) {
    if (n == cap) {
      cap = cap * 2 > (size_t)DD_MAX_JOB_BYTES + 1 ? (size_t)DD_MAX_JOB_BYTES + 1 : cap * 2;
      char *nb = realloc(buf, cap + 1);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (n > (size_t)DD_MAX_JOB_BYTES) {
      dd_cli_error("%s: a queued job may be at most %d bytes (1 MiB); this one is larger", path, DD_MAX_JOB_BYTES);
      rc = 1;
      break;
    }
    if (got == 0) {
      if (ferror(f)) {
        dd_cli_error("cannot read %s: %s", path, strerror(errno));
        rc = 1;
      }
      break;
    }
  }
  if (f != stdin) fclose(f);
  if (!buf) {
    dd_cli_error("out of memory reading %s", path);
    return 1;
  }
  if (rc) {
    free(buf);
    return rc;
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return 0;
}

/* Queues one job: its hash, its index entry and its queue entry in one MULTI/EXEC, under WATCH of
 * the hash so an id is never used twice. Writes the id to `id_out`. Returns 0, 1 (retry with a
 * fresh generated id), or -1 with c->err. */
static int submit_once(dd_client *c, const char *id, const char *name, const char *text, size_t len, int id_given) {
  char key[KEY_LEN], index[KEY_LEN], jobs[KEY_LEN], now[32], entry[64] = "";
  dd_key(key, sizeof key, c->prefix, DD_KEY_JOB, id);
  dd_key(index, sizeof index, c->prefix, DD_KEY_INDEX);
  dd_key(jobs, sizeof jobs, c->prefix, DD_KEY_JOBS);
  redisReply *r = command(c, "WATCH", key, NULL);
  if (!r) return -1;
  freeReplyObject(r);
  if (!(r = command(c, "EXISTS", key, NULL))) return -1;
  int exists = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
  freeReplyObject(r);
  if (exists) {
    if ((r = command(c, "UNWATCH", NULL))) freeReplyObject(r);
    if (!id_given) return 1;
    client_errf(c, "job %s exists already; pick another --id", id);
    c->lost = 0;
    return -1;
  }
  snprintf(now, sizeof now, "%.3f", dd_now());
  const char *hset[] = {"HSET", key, "id", id, "name", name, "spec", text, "state", "queued", "submitted_at", now, "updated_at", now};
  size_t hset_len[sizeof hset / sizeof hset[0]];
  for (size_t i = 0; i < sizeof hset / sizeof hset[0]; i++) hset_len[i] = strlen(hset[i]);
  hset_len[7] = len;
  const char *xadd[] = {"XADD", jobs, "*", "id", id, "job", text};
  size_t xadd_len[] = {4, strlen(jobs), 1, 2, strlen(id), 3, len};
  if (!(r = command(c, "MULTI", NULL))) return -1;
  freeReplyObject(r);
  int ok = (r = request(c, sizeof hset / sizeof hset[0], hset, hset_len)) != NULL;
  if (r) freeReplyObject(r);
  if (ok && (r = command(c, "ZADD", index, now, id, NULL))) freeReplyObject(r);
  ok = ok && r;
  char queued[KEY_LEN];
  dd_key(queued, sizeof queued, c->prefix, DD_KEY_STATE, "queued");
  if (ok && (r = command(c, "ZADD", queued, now, id, NULL))) freeReplyObject(r);
  ok = ok && r;
  if (ok && (r = request(c, 7, xadd, xadd_len))) freeReplyObject(r);
  ok = ok && r;
  if (!ok) {
    if (!c->lost && (r = command(c, "DISCARD", NULL))) freeReplyObject(r);
    return -1;
  }
  if (!(r = command(c, "EXEC", NULL))) return -1;
  if (r->type == REDIS_REPLY_NIL) { /* the hash appeared between EXISTS and EXEC */
    freeReplyObject(r);
    if (!id_given) return 1;
    client_errf(c, "job %s exists already; pick another --id", id);
    return -1;
  }
  /* HSET, ZADD index, ZADD state:queued, XADD */
  int bad = r->type != REDIS_REPLY_ARRAY || r->elements != 4;
  for (size_t i = 0; !bad && i < 4; i++)
    if (r->element[i]->type == REDIS_REPLY_ERROR) {
      client_errf(c, "Redis at %s: queuing %s failed: %s", c->addr, id, r->element[i]->str);
      bad = 2;
    }
  if (bad == 1) client_errf(c, "Redis at %s: EXEC gave an unexpected reply", c->addr);
  if (!bad && is_str(r->element[3])) snprintf(entry, sizeof entry, "%s", r->element[3]->str);
  freeReplyObject(r);
  if (bad) return -1;
  if (entry[0]) {
    /* A worker that claimed the entry already has set the same value. */
    if (!(r = command(c, "HSET", key, "entry", entry, NULL))) return -1;
    freeReplyObject(r);
  }
  return 0;
}

int dd_cmd_submit(int argc, char **argv) {
  common_opts co = {0};
  const char *path = NULL, *id_opt = NULL;
  for (int i = 0; i < argc; i++) {
    int r = common_opt(&co, argc, argv, &i);
    if (r < 0) return usage_error("submit", submit_args);
    if (r > 0) continue;
    if (!strcmp(argv[i], "--id")) {
      if (i + 1 >= argc) {
        dd_cli_error("--id needs a value");
        return usage_error("submit", submit_args);
      }
      id_opt = argv[++i];
    } else if (argv[i][0] == '-' && argv[i][1]) {
      dd_cli_error("submit: unknown option %s", argv[i]);
      return usage_error("submit", submit_args);
    } else if (!path) {
      path = argv[i];
    } else {
      dd_cli_error("submit: one job file at a time");
      return usage_error("submit", submit_args);
    }
  }
  if (!path) return usage_error("submit", submit_args);
  if (id_opt && !dd_job_id_valid(id_opt)) {
    dd_cli_error("--id \"%s\": a job id is 1 to 64 of A-Z a-z 0-9 _ . -", id_opt);
    return 2;
  }

  /* Check the job's syntax here, on the exact bytes that are queued. */
  char *text = NULL, err[1024];
  size_t len = 0;
  int rc = read_job_text(path, &text, &len);
  if (rc) return rc;
  Distilld__DistillJob *job = NULL;
  if (dd_text_parse((ProtobufCMessage **)&job, &distilld__distill_job__descriptor, text, len, path, err, sizeof err) != 0) {
    dd_cli_error("%s", err);
    free(text);
    return 2;
  }
  if (!job->name || !job->name[0]) {
    dd_cli_error("%s: name: a job needs a name", path);
    distilld__distill_job__free_unpacked(job, NULL);
    free(text);
    return 2;
  }

  dd_client c;
  char key[KEY_LEN], id[80];
  redisReply *r = NULL;
  if ((rc = client_setup(&c, &co)) != 0) goto done;
  rc = 1;
  if (client_connect(&c) != 0) goto fail;
  r = request_ex(&c, 6, (const char *[]){"XGROUP", "CREATE", dd_key(key, sizeof key, c.prefix, DD_KEY_JOBS), DD_GROUP, "0", "MKSTREAM"}, NULL, 1);
  if (!r) goto fail;
  if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9)) {
    client_errf(&c, "Redis at %s: XGROUP CREATE: %s", c.addr, r->str);
    freeReplyObject(r);
    goto fail;
  }
  freeReplyObject(r);
  for (int attempt = 0;; attempt++) {
    if (id_opt) {
      snprintf(id, sizeof id, "%s", id_opt);
    } else {
      if (!(r = command(&c, "INCR", dd_key(key, sizeof key, c.prefix, DD_KEY_SEQ), NULL))) goto fail;
      snprintf(id, sizeof id, "j%lld", r->type == REDIS_REPLY_INTEGER ? r->integer : 0LL);
      freeReplyObject(r);
    }
    int s = submit_once(&c, id, job->name, text, len, id_opt != NULL);
    if (s < 0) goto fail;
    if (s == 0) break;
    if (attempt >= 100) {
      client_errf(&c, "no free job id after 100 tries (P:seq is behind the ids in use?)");
      goto fail;
    }
  }
  printf("%s\n", id);
  rc = 0;
  goto done;
fail:
  client_fail(&c);
done:
  client_close(&c);
  distilld__distill_job__free_unpacked(job, NULL);
  free(text);
  return rc;
}

/* ---- status ------------------------------------------------------------------------------------- */

static const char status_args[] = "ID [--json]";

static int check_id(const char *verb, const char *id, const char *args) {
  if (!id) return usage_error(verb, args);
  if (!dd_job_id_valid(id)) {
    dd_cli_error("\"%s\" is not a job id (1 to 64 of A-Z a-z 0-9 _ . -)", id);
    return 2;
  }
  return 0;
}

int dd_cmd_status(int argc, char **argv) {
  common_opts co = {0};
  const char *id = NULL;
  int json = 0;
  for (int i = 0; i < argc; i++) {
    int r = common_opt(&co, argc, argv, &i);
    if (r < 0) return usage_error("status", status_args);
    if (r > 0) continue;
    if (!strcmp(argv[i], "--json")) {
      json = 1;
    } else if ((argv[i][0] == '-' && argv[i][1]) || id) {
      dd_cli_error("status: unexpected argument %s", argv[i]);
      return usage_error("status", status_args);
    } else {
      id = argv[i];
    }
  }
  int rc = check_id("status", id, status_args);
  if (rc) return rc;
  dd_client c;
  if ((rc = client_setup(&c, &co)) != 0) goto done;
  redisReply *h = NULL;
  if (client_connect(&c) != 0 || !(h = job_hash(&c, id))) {
    rc = client_fail(&c);
    goto done;
  }
  if (h->elements == 0) {
    rc = no_job(id);
  } else if (json) {
    fputc('{', stdout);
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
      if (i) fputc(',', stdout);
      json_string(stdout, h->element[i]->str, h->element[i]->len);
      fputc(':', stdout);
      json_string(stdout, h->element[i + 1]->str, h->element[i + 1]->len);
    }
    fputs("}\n", stdout);
  } else {
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (m) {
      status_block(m, id, h, dd_now());
      fclose(m);
      emit(stdout, buf, len);
    } else {
      rc = 1;
      dd_cli_error("out of memory");
    }
    free(buf);
  }
  freeReplyObject(h);
done:
  client_close(&c);
  return rc;
}

/* ---- cancel ------------------------------------------------------------------------------------- */

/* KEYS: the job's hash, its events stream, the queue, state:queued, state:cancelled. ARGV: now,
 * who, the events stream's MAXLEN, retention_s, the id. A queued job becomes final here, as a finished one does (its keys expire after
 * retention_s), and its queue entry is deleted so no daemon ever sees it; one already read by a
 * daemon is acknowledged by that daemon's claim script, which finds the job cancelled. */
static const char cancel_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return 'none' end\n"
    "local s = redis.call('HGET', KEYS[1], 'state')\n"
    "if s == 'queued' then\n"
    "  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[1], 'updated_at', ARGV[1], 'cancel', '1')\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'type', 'state', 'state', 'cancelled',\n"
    "             'reason', 'cancel requested', 'worker', ARGV[2])\n"
    "  local e = redis.call('HGET', KEYS[1], 'entry')\n"
    "  if e and e ~= '' then redis.call('XDEL', KEYS[3], e) end\n"
    "  if tonumber(ARGV[4]) > 0 then\n"
    "    redis.call('EXPIRE', KEYS[1], ARGV[4]) redis.call('EXPIRE', KEYS[2], ARGV[4])\n"
    "  end\n"
    "  redis.call('ZREM', KEYS[4], ARGV[5]) redis.call('ZADD', KEYS[5], ARGV[1], ARGV[5])\n"
    "  return 'was-queued'\n"
    "end\n"
    "if s == 'running' then\n"
    "  redis.call('HSET', KEYS[1], 'cancel', '1')\n"
    "  return 'requested'\n"
    "end\n"
    "return s or 'unknown'\n";

int dd_cmd_cancel(int argc, char **argv) {
  common_opts co = {0};
  const char *id = NULL;
  for (int i = 0; i < argc; i++) {
    int r = common_opt(&co, argc, argv, &i);
    if (r < 0) return usage_error("cancel", "ID");
    if (r > 0) continue;
    if ((argv[i][0] == '-' && argv[i][1]) || id) {
      dd_cli_error("cancel: unexpected argument %s", argv[i]);
      return usage_error("cancel", "ID");
    }
    id = argv[i];
  }
  int rc = check_id("cancel", id, "ID");
  if (rc) return rc;
  dd_client c;
  if ((rc = client_setup(&c, &co)) != 0) goto done;
  char key[KEY_LEN], events[KEY_LEN], jobs[KEY_LEN], now[32], maxlen[32], retention[32], who[300], host[256] = "";
  dd_key(key, sizeof key, c.prefix, DD_KEY_JOB, id);
  dd_key(events, sizeof events, c.prefix, DD_KEY_JOB_EVENTS, id);
  dd_key(jobs, sizeof jobs, c.prefix, DD_KEY_JOBS);
  snprintf(now, sizeof now, "%.3f", dd_now());
  snprintf(maxlen, sizeof maxlen, "%d", DD_EVENTS_MAXLEN);
  snprintf(retention, sizeof retention, "%d", c.cfg->retention_s);
  if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "?");
  snprintf(who, sizeof who, "client@%s", host);
  redisReply *r = NULL;
  char k_queued[KEY_LEN], k_cancelled[KEY_LEN];
  dd_key(k_queued, sizeof k_queued, c.prefix, DD_KEY_STATE, "queued");
  dd_key(k_cancelled, sizeof k_cancelled, c.prefix, DD_KEY_STATE, "cancelled");
  if (client_connect(&c) != 0 || !(r = command(&c, "EVAL", cancel_script, "5", key, events, jobs, k_queued, k_cancelled, now,
                                               who, maxlen, retention, id, NULL))) {
    rc = client_fail(&c);
    goto done;
  }
  const char *what = is_str(r) ? r->str : "?";
  if (!strcmp(what, "none"))
    rc = no_job(id);
  else if (!strcmp(what, "was-queued"))
    printf("%s: cancelled (it was queued)\n", id);
  else if (!strcmp(what, "requested"))
    printf("%s: cancel requested; the job stops at its next iteration with a snapshot\n", id);
  else if (final_state(what))
    printf("%s already %s\n", id, what);
  else
    printf("%s: not cancelled: its state is \"%s\"\n", id, what);
  freeReplyObject(r);
done:
  client_close(&c);
  return rc;
}

/* ---- list --------------------------------------------------------------------------------------- */

static const char list_args[] = "[--all] [-n N]";

int dd_cmd_list(int argc, char **argv) {
  common_opts co = {0};
  long limit = 20;
  for (int i = 0; i < argc; i++) {
    int r = common_opt(&co, argc, argv, &i);
    if (r < 0) return usage_error("list", list_args);
    if (r > 0) continue;
    if (!strcmp(argv[i], "--all")) {
      limit = 0;
    } else if (!strcmp(argv[i], "-n") && i + 1 < argc) {
      if ((limit = parse_count(argv[++i])) < 0) {
        dd_cli_error("-n wants a positive number, got \"%s\"", argv[i]);
        return 2;
      }
    } else {
      dd_cli_error("list: unexpected argument %s", argv[i]);
      return usage_error("list", list_args);
    }
  }
  dd_client c;
  char *buf = NULL;
  size_t len = 0;
  int rc = client_setup(&c, &co);
  if (rc == 0 && client_connect(&c) != 0) rc = client_fail(&c);
  FILE *m = rc == 0 ? open_memstream(&buf, &len) : NULL;
  if (m) {
    int r = job_table(&c, m, limit);
    fclose(m);
    if (r == 0)
      emit(stdout, buf, len);
    else
      rc = client_fail(&c);
  } else if (rc == 0) {
    rc = 1;
    dd_cli_error("out of memory");
  }
  free(buf);
  client_close(&c);
  return rc;
}

/* ---- watch -------------------------------------------------------------------------------------- */

static const char watch_args[] = "[ID] [--interval S] [--count N] [-n N]";

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
  char n[16], when[32], a[64];
  snprintf(n, sizeof n, "%d", count);
  redisReply *r = command(c, "XREVRANGE", key, "+", "-", "COUNT", n, NULL);
  if (!r) return -1;
  fprintf(f, "\n%s\n", title);
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) fprintf(f, "  (none yet)\n");
  for (size_t i = r->type == REDIS_REPLY_ARRAY ? r->elements : 0; i-- > 0;) {
    const redisReply *e = r->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !is_str(e->element[0])) continue;
    const redisReply *kv = e->element[1];
    fmt_time(when, sizeof when, strtod(e->element[0]->str, NULL) / 1000.0, 1);
    fprintf(f, "  %s", when);
    const char *type = hfield(kv, "type"), *worker = hfield(kv, "worker");
    if (type) fprintf(f, " %-8s", type);
    for (size_t j = 0; kv->type == REDIS_REPLY_ARRAY && j + 1 < kv->elements; j += 2) {
      const char *k = kv->element[j]->str, *v = kv->element[j + 1]->str;
      if (!strcmp(k, "type") || !strcmp(k, "worker")) continue;
      double d;
      /* numbers short, text as is */
      fprintf(f, " %s %s", k, num(v, &d) && strchr(v, '.') ? fmt_num(a, sizeof a, v, 5, 1) : v);
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
    if (job_table(c, f, limit) != 0) return -1;
    fprintf(f, "\nWORKERS\n");
    return worker_table(c, f) != 0 ? -1 : 0;
  }
  redisReply *h = job_hash(c, id);
  if (!h) return -1;
  if (h->elements == 0) {
    freeReplyObject(h);
    return 2;
  }
  status_block(f, id, h, dd_now());
  int final = final_state(hfield(h, "state"));
  freeReplyObject(h);
  char key[KEY_LEN];
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
    fmt_time(when, sizeof when, dd_now(), 0);
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
  common_opts co = {0};
  const char *id = NULL;
  double interval = 1.0;
  long count = 0, limit = 20;
  for (int i = 0; i < argc; i++) {
    int r = common_opt(&co, argc, argv, &i);
    if (r < 0) return usage_error("watch", watch_args);
    if (r > 0) continue;
    const char *a = argv[i];
    if (!strcmp(a, "--interval") && i + 1 < argc) {
      char *end;
      interval = strtod(argv[++i], &end);
      if (end == argv[i] || *end || !(interval >= 0.05) || interval > 86400) {
        dd_cli_error("--interval wants seconds between 0.05 and 86400, got \"%s\"", argv[i]);
        return 2;
      }
    } else if ((!strcmp(a, "--count") || !strcmp(a, "-n")) && i + 1 < argc) {
      long v = parse_count(argv[++i]);
      if (v < 0) {
        dd_cli_error("%s wants a positive number, got \"%s\"", a, argv[i]);
        return 2;
      }
      if (!strcmp(a, "-n"))
        limit = v;
      else
        count = v;
    } else if ((a[0] == '-' && a[1]) || id) {
      dd_cli_error("watch: unexpected argument %s", a);
      return usage_error("watch", watch_args);
    } else {
      id = a;
    }
  }
  int rc = 0;
  if (id && (rc = check_id("watch", id, watch_args))) return rc;
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
      rc = r == 2 ? no_job(id) : client_fail(&c);
      free(buf);
      break;
    }
    if (tty)
      fputs("\033[H\033[2J", stdout);
    else if (frame > 0)
      fputc('\n', stdout);
    emit(stdout, buf, len);
    fflush(stdout);
    free(buf);
    if (r == 1 || (count > 0 && frame + 1 >= count)) break;
    watch_sleep(interval);
  }
done:
  client_close(&c);
  return rc;
}
