/* The client verbs' connection and replies (cli/client.h). */
#define _POSIX_C_SOURCE 200809L
#include "cli/client.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/cli_util.h"
#include "common/dconfig.h"
#include "common/keys.h"
#include "common/redis_sync.h"

/* ---- options every client verb takes ------------------------------------------------------------ */

int client_opt(client_opts *o, int argc, char **argv, int *i) {
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

long client_parse_count(const char *s) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < 1) return -1;
  return v;
}

/* ---- the connection ----------------------------------------------------------------------------- */

void client_errf(dd_client *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
}

int client_fail(const dd_client *c) {
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

int client_setup(dd_client *c, const client_opts *o) {
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

void client_disconnect(dd_client *c) {
  if (c->rc) redisFree(c->rc);
  c->rc = NULL;
}

void client_close(dd_client *c) {
  client_disconnect(c);
  if (c->password) {
    memset(c->password, 0, strlen(c->password));
    free(c->password);
  }
  if (c->cfg) distilld__daemon_config__free_unpacked(c->cfg, NULL);
  memset(c, 0, sizeof *c);
}

int client_connect(dd_client *c) {
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

redisReply *client_request_ex(dd_client *c, int argc, const char **argv, const size_t *lens, int keep_error) {
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

redisReply *client_request(dd_client *c, int argc, const char **argv, const size_t *lens) {
  return client_request_ex(c, argc, argv, lens, 0);
}

redisReply *client_command(dd_client *c, ...) {
  const char *argv[32];
  int argc = 0;
  va_list ap;
  va_start(ap, c);
  for (const char *a; argc < 32 && (a = va_arg(ap, const char *)) != NULL;) argv[argc++] = a;
  va_end(ap);
  return client_request(c, argc, argv, NULL);
}

int client_pipeline(dd_client *c, size_t n, redisReply **out) {
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

int reply_is_str(const redisReply *r) {
  return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

const char *reply_field(const redisReply *h, const char *field) {
  if (!h || h->type != REDIS_REPLY_ARRAY) return NULL;
  for (size_t i = 0; i + 1 < h->elements; i += 2)
    if (reply_is_str(h->element[i]) && !strcmp(h->element[i]->str, field))
      return reply_is_str(h->element[i + 1]) && h->element[i + 1]->len ? h->element[i + 1]->str : NULL;
  return NULL;
}

redisReply *client_job_hash(dd_client *c, const char *id) {
  char key[CLIENT_KEY_LEN];
  redisReply *h = client_command(c, "HGETALL", dd_key(key, sizeof key, c->prefix, DD_KEY_JOB, id), NULL);
  if (h && h->type != REDIS_REPLY_ARRAY) {
    client_errf(c, "Redis at %s: HGETALL gave an unexpected reply", c->addr);
    freeReplyObject(h);
    return NULL;
  }
  return h;
}

int client_no_job(const char *id) {
  dd_cli_error("no job %s (expired or never submitted)", id);
  return 1;
}
int client_check_id(const char *verb, const char *id) {
  if (!id) {
    dd_cli_error("%s: give a job ID (as submit printed it)", verb);
    return dd_cli_usage(verb);
  }
  if (!dd_job_id_valid(id)) {
    dd_cli_error("\"%s\" is not a job id (1 to 64 of A-Z a-z 0-9 _ . -)", id);
    return 2;
  }
  return 0;
}

