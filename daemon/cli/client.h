/* The client verbs' connection (cli/client.c): the options every verb takes, the synchronous
 * hiredis connection (through common/redis_sync.c) and its requests, and reading replies. Each
 * verb reads the config (--config, else $DISTILLD_CONFIG, else the defaults), connects, issues a
 * few commands and exits. */
#ifndef DD_CLIENT_H
#define DD_CLIENT_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#include "distill.pb-c.h"

/* Key names: the prefix plus a job id (at most 64 bytes) and a suffix. */
#define CLIENT_KEY_LEN 512

/* ---- options every client verb takes --------------------------------------------------------- */

typedef struct {
  const char *config; /* --config FILE */
  const char *redis;  /* --redis HOST:PORT */
  const char *prefix; /* --prefix P */
} client_opts;

/* Consumes the common option at argv[*i] (and its value). Returns 1 when it was one, 0 when it
 * was not, -1 when its value is missing (printed). */
int client_opt(client_opts *o, int argc, char **argv, int *i);

/* Parses a positive integer option value; -1 when it is not one. */
long client_parse_count(const char *s);

/* 0 when `id` is given and a job id; else prints what is wrong (and VERB's synopsis when there is
 * no id) and returns exit status 2. */
int client_check_id(const char *verb, const char *id);

/* ---- the connection -------------------------------------------------------------------------- */

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

/* Reads the config and applies the overrides; connects nothing. Returns 0, or an exit status
 * (printed). Frees with client_close even on failure. */
int client_setup(dd_client *c, const client_opts *o);

/* Connects (2 s timeout) and authenticates. Returns 0, or -1 with c->err (and c->lost when the
 * server could not be reached). */
int client_connect(dd_client *c);

/* Drops the connection (c->rc NULL); the config stays. */
void client_disconnect(dd_client *c);

/* Drops the connection and frees the config and the password (wiped). */
void client_close(dd_client *c);

/* Sets c->err (the last failure, printed later by client_fail). */
void client_errf(dd_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints the last failure and returns exit status 1. */
int client_fail(const dd_client *c);

/* Sends one command (binary-safe: `lens` may be NULL for C strings). Returns the reply (the caller
 * frees it), or NULL with c->err: the connection failed (c->lost) or Redis answered with an error
 * (then freed; with `keep_error` the error reply is returned instead). */
redisReply *client_request_ex(dd_client *c, int argc, const char **argv, const size_t *lens, int keep_error);

/* client_request_ex without keep_error: an error reply is a failure. */
redisReply *client_request(dd_client *c, int argc, const char **argv, const size_t *lens);

/* client_request() with C-string arguments, NULL-terminated. */
redisReply *client_command(dd_client *c, ...) __attribute__((sentinel));

/* Reads `n` replies of commands already appended with redisAppendCommandArgv into out[]. Returns
 * 0, or -1 with c->err and every reply freed (out[] all NULL): a lost connection or an error reply. */
int client_pipeline(dd_client *c, size_t n, redisReply **out);

/* ---- replies --------------------------------------------------------------------------------- */

/* 1 when `r` is a string or status reply. */
int reply_is_str(const redisReply *r);

/* The value of `field` in a HGETALL (or stream entry field list) reply; NULL when absent or empty. */
const char *reply_field(const redisReply *h, const char *field);

/* HGETALL of one job. Returns the reply (an empty array when there is no such job), or NULL with
 * c->err. */
redisReply *client_job_hash(dd_client *c, const char *id);

/* Prints "no job ID (expired or never submitted)"; returns exit status 1. */
int client_no_job(const char *id);

#endif
