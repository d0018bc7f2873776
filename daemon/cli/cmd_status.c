/* The client verbs that read or change one job, or list them: `distilld status ID [--json]`,
 * `distilld cancel ID` and `distilld list [--all] [-n N]` (docs/redis.md).
 *
 * Exit status: 0 ok, 1 failure (Redis unreachable, unknown job, a command refused), 2 usage (bad
 * arguments, a config that does not read). */
#define _POSIX_C_SOURCE 200809L
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/client_view.h"
#include "common/cli_util.h"
#include "common/keys.h"

/* ---- status ------------------------------------------------------------------------------------- */

int dd_cmd_status(int argc, char **argv) {
  client_opts co = {0};
  const char *id = NULL;
  int json = 0;
  for (int i = 0; i < argc; i++) {
    if (dd_cli_is_help(argv[i])) return dd_cli_help("status");
    int r = client_opt(&co, argc, argv, &i);
    if (r < 0) return dd_cli_usage("status");
    if (r > 0) continue;
    if (!strcmp(argv[i], "--json")) {
      json = 1;
    } else if ((argv[i][0] == '-' && argv[i][1]) || id) {
      return dd_cli_bad_arg("status", argv[i]);
    } else {
      id = argv[i];
    }
  }
  int rc = client_check_id("status", id);
  if (rc) return rc;
  dd_client c;
  if ((rc = client_setup(&c, &co)) != 0) goto done;
  redisReply *h = NULL;
  if (client_connect(&c) != 0 || !(h = client_job_hash(&c, id))) {
    rc = client_fail(&c);
    goto done;
  }
  if (h->elements == 0) {
    rc = client_no_job(id);
  } else if (json) {
    fputc('{', stdout);
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
      if (i) fputc(',', stdout);
      view_json_string(stdout, h->element[i]->str, h->element[i]->len);
      fputc(':', stdout);
      view_json_string(stdout, h->element[i + 1]->str, h->element[i + 1]->len);
    }
    fputs("}\n", stdout);
  } else {
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (m) {
      view_status_block(m, id, h, dd_now());
      fclose(m);
      view_emit(stdout, buf, len);
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
  client_opts co = {0};
  const char *id = NULL;
  for (int i = 0; i < argc; i++) {
    if (dd_cli_is_help(argv[i])) return dd_cli_help("cancel");
    int r = client_opt(&co, argc, argv, &i);
    if (r < 0) return dd_cli_usage("cancel");
    if (r > 0) continue;
    if ((argv[i][0] == '-' && argv[i][1]) || id) {
      return dd_cli_bad_arg("cancel", argv[i]);
    }
    id = argv[i];
  }
  int rc = client_check_id("cancel", id);
  if (rc) return rc;
  dd_client c;
  if ((rc = client_setup(&c, &co)) != 0) goto done;
  char key[CLIENT_KEY_LEN], events[CLIENT_KEY_LEN], jobs[CLIENT_KEY_LEN], now[32], maxlen[32], retention[32], who[300], host[256] = "";
  dd_key(key, sizeof key, c.prefix, DD_KEY_JOB, id);
  dd_key(events, sizeof events, c.prefix, DD_KEY_JOB_EVENTS, id);
  dd_key(jobs, sizeof jobs, c.prefix, DD_KEY_JOBS);
  snprintf(now, sizeof now, "%.3f", dd_now());
  snprintf(maxlen, sizeof maxlen, "%d", DD_EVENTS_MAXLEN);
  snprintf(retention, sizeof retention, "%d", c.cfg->retention_s);
  if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "?");
  snprintf(who, sizeof who, "client@%s", host);
  redisReply *r = NULL;
  char k_queued[CLIENT_KEY_LEN], k_cancelled[CLIENT_KEY_LEN];
  dd_key(k_queued, sizeof k_queued, c.prefix, DD_KEY_STATE, "queued");
  dd_key(k_cancelled, sizeof k_cancelled, c.prefix, DD_KEY_STATE, "cancelled");
  if (client_connect(&c) != 0 || !(r = client_command(&c, "EVAL", cancel_script, "5", key, events, jobs, k_queued, k_cancelled, now,
                                               who, maxlen, retention, id, NULL))) {
    rc = client_fail(&c);
    goto done;
  }
  const char *what = reply_is_str(r) ? r->str : "?";
  if (!strcmp(what, "none"))
    rc = client_no_job(id);
  else if (!strcmp(what, "was-queued"))
    printf("%s: cancelled (it was queued)\n", id);
  else if (!strcmp(what, "requested"))
    printf("%s: cancel requested; the job stops at its next iteration with a snapshot\n", id);
  else if (view_final_state(what))
    printf("%s already %s\n", id, what);
  else
    printf("%s: not cancelled: its state is \"%s\"\n", id, what);
  freeReplyObject(r);
done:
  client_close(&c);
  return rc;
}

/* ---- list --------------------------------------------------------------------------------------- */

int dd_cmd_list(int argc, char **argv) {
  client_opts co = {0};
  long limit = 20;
  for (int i = 0; i < argc; i++) {
    if (dd_cli_is_help(argv[i])) return dd_cli_help("list");
    int r = client_opt(&co, argc, argv, &i);
    if (r < 0) return dd_cli_usage("list");
    if (r > 0) continue;
    if (!strcmp(argv[i], "--all")) {
      limit = 0;
    } else if (!strcmp(argv[i], "-n")) {
      if (i + 1 >= argc) {
        dd_cli_error("list: -n needs a value");
        return dd_cli_usage("list");
      }
      if ((limit = client_parse_count(argv[++i])) < 0) {
        dd_cli_error("-n wants a positive number, got \"%s\"", argv[i]);
        return 2;
      }
    } else {
      return dd_cli_bad_arg("list", argv[i]);
    }
  }
  dd_client c;
  char *buf = NULL;
  size_t len = 0;
  int rc = client_setup(&c, &co);
  if (rc == 0 && client_connect(&c) != 0) rc = client_fail(&c);
  FILE *m = rc == 0 ? open_memstream(&buf, &len) : NULL;
  if (m) {
    int r = view_job_table(&c, m, limit);
    fclose(m);
    if (r == 0)
      view_emit(stdout, buf, len);
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

