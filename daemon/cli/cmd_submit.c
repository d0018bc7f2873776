/* `distilld submit JOB.prototxt [--id ID]`: queues a job on Redis (docs/redis.md). The job's text
 * is parsed here first, on the exact bytes that are queued, so a syntax error never reaches the
 * queue; the id comes from INCR P:seq (or --id), and the hash, the index, state:queued and the
 * queue entry are written in one MULTI/EXEC under WATCH of the hash. Prints the id alone.
 *
 * Exit status: 0 ok, 1 failure (Redis unreachable, the id taken, a command refused), 2 usage (bad
 * arguments, a job file that does not parse, a config that does not read). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/client_view.h"
#include "common/cli_util.h"
#include "common/keys.h"
#include "format/textformat.h"

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
  char key[CLIENT_KEY_LEN], index[CLIENT_KEY_LEN], jobs[CLIENT_KEY_LEN], now[32], entry[64] = "";
  dd_key(key, sizeof key, c->prefix, DD_KEY_JOB, id);
  dd_key(index, sizeof index, c->prefix, DD_KEY_INDEX);
  dd_key(jobs, sizeof jobs, c->prefix, DD_KEY_JOBS);
  redisReply *r = client_command(c, "WATCH", key, NULL);
  if (!r) return -1;
  freeReplyObject(r);
  if (!(r = client_command(c, "EXISTS", key, NULL))) return -1;
  int exists = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
  freeReplyObject(r);
  if (exists) {
    if ((r = client_command(c, "UNWATCH", NULL))) freeReplyObject(r);
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
  if (!(r = client_command(c, "MULTI", NULL))) return -1;
  freeReplyObject(r);
  int ok = (r = client_request(c, sizeof hset / sizeof hset[0], hset, hset_len)) != NULL;
  if (r) freeReplyObject(r);
  if (ok && (r = client_command(c, "ZADD", index, now, id, NULL))) freeReplyObject(r);
  ok = ok && r;
  char queued[CLIENT_KEY_LEN];
  dd_key(queued, sizeof queued, c->prefix, DD_KEY_STATE, "queued");
  if (ok && (r = client_command(c, "ZADD", queued, now, id, NULL))) freeReplyObject(r);
  ok = ok && r;
  if (ok && (r = client_request(c, 7, xadd, xadd_len))) freeReplyObject(r);
  ok = ok && r;
  if (!ok) {
    if (!c->lost && (r = client_command(c, "DISCARD", NULL))) freeReplyObject(r);
    return -1;
  }
  if (!(r = client_command(c, "EXEC", NULL))) return -1;
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
  if (!bad && reply_is_str(r->element[3])) snprintf(entry, sizeof entry, "%s", r->element[3]->str);
  freeReplyObject(r);
  if (bad) return -1;
  if (entry[0]) {
    /* A worker that claimed the entry already has set the same value. */
    if (!(r = client_command(c, "HSET", key, "entry", entry, NULL))) return -1;
    freeReplyObject(r);
  }
  return 0;
}

int dd_cmd_submit(int argc, char **argv) {
  client_opts co = {0};
  const char *path = NULL, *id_opt = NULL;
  for (int i = 0; i < argc; i++) {
    if (dd_cli_is_help(argv[i])) return dd_cli_help("submit");
    int r = client_opt(&co, argc, argv, &i);
    if (r < 0) return dd_cli_usage("submit");
    if (r > 0) continue;
    if (!strcmp(argv[i], "--id")) {
      if (i + 1 >= argc) {
        dd_cli_error("submit: --id needs a value");
        return dd_cli_usage("submit");
      }
      id_opt = argv[++i];
    } else if (argv[i][0] == '-' && argv[i][1]) {
      return dd_cli_bad_arg("submit", argv[i]);
    } else if (!path) {
      path = argv[i];
    } else {
      dd_cli_error("submit: one job file at a time");
      return dd_cli_usage("submit");
    }
  }
  if (!path) {
    dd_cli_error("submit: give a job file (JOB.prototxt, or - for standard input)");
    return dd_cli_usage("submit");
  }
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
  char key[CLIENT_KEY_LEN], id[80];
  redisReply *r = NULL;
  if ((rc = client_setup(&c, &co)) != 0) goto done;
  rc = 1;
  if (client_connect(&c) != 0) goto fail;
  r = client_request_ex(&c, 6, (const char *[]){"XGROUP", "CREATE", dd_key(key, sizeof key, c.prefix, DD_KEY_JOBS), DD_GROUP, "0", "MKSTREAM"}, NULL, 1);
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
      if (!(r = client_command(&c, "INCR", dd_key(key, sizeof key, c.prefix, DD_KEY_SEQ), NULL))) goto fail;
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

