/* The daemon's loop: one libuv loop on the main thread owns all Redis I/O (hiredis async, attached
 * by service/rio.c) and every timer.
 *
 *   Redis connection: connect, AUTH, XGROUP CREATE, reconnect with backoff (100 ms doubling to 5 s);
 *     after a disconnect everything sent but unanswered is sent again.
 *   The ring: sends the job threads' items in order (pump), each as one EVAL of LUA_APPLY (a
 *     resumed attempt's ITEM_BACKFILL: LUA_BACKFILL; ITEM_DONE: the final-state script), and
 *     retires an item when Redis answers it; a job's ITEM_DONE frees its slot.
 *   Claims: XAUTOCLAIM (stale entries first, min-idle = lease_s) or XREADGROUP takes an entry; the
 *     CLAIM script (LUA_JOIN for a join entry) makes this worker the owner; a job thread starts
 *     (service/job_thread.c).
 *   Timers: the tick (poll_ms) polls each running job's cancel flag and claims when a slot is
 *     free; the heartbeat (heartbeat_s) writes the worker hash and RENEWs each job's entry, and a
 *     renewal refused means the lease is lost (the job stops without a snapshot).
 *   Signals: SIGTERM/SIGINT drain: no more claims, running jobs snapshot and are handed back, the
 *     loop ends when the ring is empty (or after drain_timeout_s once the threads are done); a
 *     second signal exits at once.
 *
 * The loop talks to job threads only through the ring and each slot's atomic `stop`. */
#define _GNU_SOURCE
#include "service/loop.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/cli_util.h"
#include "common/keys.h"
#include "service/job_thread.h"
#include "service/log.h"
#include "service/metrics.h"
#include "service/rio.h"
#include "service/scripts.h"

/* ---- the loop: Redis connection ------------------------------------------------------------------ */

static void connect_redis(daemon_t *d);
static void pump(daemon_t *d);
static void try_claim(daemon_t *d);
static void maybe_exit(daemon_t *d);
static void heartbeat(daemon_t *d);

static int n_running(const daemon_t *d) {
  int n = 0;
  for (int i = 0; i < d->n_slots; i++) n += d->slots[i].used;
  return n;
}

static void on_reconnect_timer(uv_timer_t *t) { connect_redis(t->data); }

static void schedule_reconnect(daemon_t *d) {
  if (d->closing) return;
  d->backoff_ms = d->backoff_ms ? d->backoff_ms * 2 : 100;
  if (d->backoff_ms > 5000) d->backoff_ms = 5000;
  uv_timer_start(&d->reconnect_timer, on_reconnect_timer, (uint64_t)d->backoff_ms, 0);
}

/* After a disconnect every command in flight is unanswered: send them again from the head. */
static void lost_connection(daemon_t *d, const char *why) {
  if (d->connected || !d->down_logged)
    dlog(1, NULL, "Redis at %s:%d: %s; jobs keep training, their metrics wait in memory (%llu queued)", d->cfg->redis_host,
         d->cfg->redis_port, why, (unsigned long long)(d->ring.tail - d->ring.head));
  d->down_logged = 1;
  d->connected = 0;
  d->ac = NULL;
  pthread_mutex_lock(&d->ring.mu);
  d->ring.sent = d->ring.head;
  pthread_mutex_unlock(&d->ring.mu);
  d->claim_inflight = 0;
  for (int i = 0; i < d->n_slots; i++) d->slots[i].cancel_inflight = 0;
  schedule_reconnect(d);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  daemon_t *d = ac->data;
  (void)status;
  if (d->closing == 2) { /* our own disconnect on the way out */
    d->connected = 0;
    return;
  }
  if (d->ac != ac && d->ac) return;
  lost_connection(d, ac->errstr[0] ? ac->errstr : "connection closed");
  if (d->closing) maybe_exit(d);
}

static void on_group(redisAsyncContext *ac, void *r, void *priv) {
  daemon_t *d = ac->data;
  redisReply *reply = r;
  (void)priv;
  if (!reply || d->closing || ac != d->ac) return;
  if (reply->type == REDIS_REPLY_ERROR && !strstr(reply->str, "BUSYGROUP")) {
    /* LOADING after a restart, READONLY after a failover, ...: try again from the start */
    dlog(1, NULL, "XGROUP CREATE %s: %s; reconnecting", d->k_jobs, reply->str);
    redisAsyncDisconnect(ac);
    return;
  }
  d->connected = 1;
  d->down_logged = 0;
  d->backoff_ms = 0;
  metrics_connected(d);
  dlog(2, NULL, "connected to Redis at %s:%d%s", d->cfg->redis_host, d->cfg->redis_port,
       d->ring.tail > d->ring.head ? "; writing what waited" : "");
  /* named, so `CLIENT LIST` shows which connection is which worker */
  redisAsyncCommand(ac, NULL, NULL, "CLIENT SETNAME distilld:%s", d->worker);
  heartbeat(d);
  pump(d);
  try_claim(d);
}

static void on_auth(redisAsyncContext *ac, void *r, void *priv) {
  daemon_t *d = ac->data;
  redisReply *reply = r;
  (void)priv;
  if (!reply) return;
  if (reply->type == REDIS_REPLY_ERROR) {
    dlog(0, NULL, "Redis AUTH failed: %s (the password comes from %s)", reply->str,
         d->cfg->redis_password_env ? "redis_password_env" : "redis_password_file");
    redisAsyncDisconnect(ac);
    return;
  }
  redisAsyncCommand(ac, on_group, NULL, "XGROUP CREATE %s " DD_GROUP " 0 MKSTREAM", d->k_jobs);
}

static void on_connect(const redisAsyncContext *cac, int status) {
  redisAsyncContext *ac = (redisAsyncContext *)cac;
  daemon_t *d = ac->data;
  if (status != REDIS_OK) {
    /* hiredis frees the context after this callback */
    lost_connection(d, ac->errstr[0] ? ac->errstr : "cannot connect");
    return;
  }
  if (d->password) {
    if (d->cfg->redis_user && d->cfg->redis_user[0])
      redisAsyncCommand(ac, on_auth, NULL, "AUTH %s %s", d->cfg->redis_user, d->password);
    else
      redisAsyncCommand(ac, on_auth, NULL, "AUTH %s", d->password);
  } else {
    redisAsyncCommand(ac, on_group, NULL, "XGROUP CREATE %s " DD_GROUP " 0 MKSTREAM", d->k_jobs);
  }
}

static void connect_redis(daemon_t *d) {
  if (d->closing || d->ac) return;
  redisAsyncContext *ac = redisAsyncConnect(d->cfg->redis_host, d->cfg->redis_port);
  if (!ac) {
    schedule_reconnect(d);
    return;
  }
  if (ac->err) {
    if (!d->down_logged) dlog(1, NULL, "cannot connect to Redis at %s:%d: %s; retrying", d->cfg->redis_host, d->cfg->redis_port, ac->errstr);
    d->down_logged = 1;
    redisAsyncFree(ac);
    schedule_reconnect(d);
    return;
  }
  ac->data = d;
  if (rio_attach(ac, d->loop) != REDIS_OK) {
    redisAsyncFree(ac);
    schedule_reconnect(d);
    return;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  d->ac = ac;
}

/* ---- the loop: sending the ring ------------------------------------------------------------------ */

static void on_item_reply(redisAsyncContext *ac, void *r, void *priv);

static int retryable(const char *err) {
  static const char *const codes[] = {"LOADING", "READONLY", "OOM", "BUSY", "MASTERDOWN", "NOAUTH", "TRYAGAIN"};
  for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
    size_t n = strlen(codes[i]);
    if (!strncmp(err, codes[i], n) && (err[n] == ' ' || err[n] == '\0')) return 1;
  }
  return 0;
}


/* A script's {'lost', why} (the caller no longer owns the job: LUA_LOST_FN): why; NULL otherwise. */
static const char *lost_reason(const redisReply *r) {
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
      r->element[1]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "lost"))
    return NULL;
  return r->element[1]->str;
}

static void job_slot_free(daemon_t *d, int slot) {
  job_t *j = &d->slots[slot];
  if (j->thread_started) uv_thread_join(&j->thread);
  free(j->text);
  memset(j, 0, sizeof *j);
  d->jobs_done++;
}

static void on_item_reply(redisAsyncContext *ac, void *r, void *priv) {
  daemon_t *d = ac->data;
  redisReply *reply = r;
  uint64_t seq = (uint64_t)(uintptr_t)priv;
  if (!reply) return; /* disconnected: lost_connection resends from the head */
  ring_t *rg = &d->ring;
  if (reply->type == REDIS_REPLY_ERROR && retryable(reply->str)) {
    /* Redis cannot take it now (loading, read-only replica, out of memory, a busy script): keep
     * the item, reconnect with backoff and send it again (the apply script skips what was done) */
    if (seq == rg->head) {
      dlog(1, NULL, "Redis: %s; retrying", reply->str);
      if (ac == d->ac) redisAsyncDisconnect(ac);
    }
    return;
  }
  metrics_observe(d); /* the metrics read every item before it is retired */
  pthread_mutex_lock(&rg->mu);
  if (seq != rg->head) {
    /* an answer from before a reconnect; the item was sent again */
    pthread_mutex_unlock(&rg->mu);
    return;
  }
  ring_item *it = &rg->items[seq % RING_CAP];
  int kind = it->kind, slot = it->slot;
  rg->head++;
  pthread_mutex_unlock(&rg->mu);
  job_t *j = &d->slots[slot];
  if (reply->type == REDIS_REPLY_ERROR) dlog(1, j->id, "Redis refused an update: %s", reply->str);
  if (kind == ITEM_DONE) {
    const char *why = lost_reason(reply);
    if (why)
      dlog(1, j->id, "the job's end was not written: this worker no longer owns it (%s); left it as it is", why);
    else if (reply->type == REDIS_REPLY_STRING && strcmp(reply->str, "again"))
      dlog(2, j->id, "handed back as entry %s", reply->str);
    job_slot_free(d, slot);
    heartbeat(d);
    try_claim(d);
    maybe_exit(d);
  }
}

/* Sends every item not sent yet (each item's last command carries its sequence number). */
static void pump(daemon_t *d) {
  metrics_observe(d); /* before sending, and while Redis is away too */
  if (!d->connected || !d->ac) return;
  ring_t *rg = &d->ring;
  for (;;) {
    pthread_mutex_lock(&rg->mu);
    if (rg->sent >= rg->tail) {
      pthread_mutex_unlock(&rg->mu);
      break;
    }
    uint64_t seq = rg->sent++;
    ring_item *it = &rg->items[seq % RING_CAP];
    pthread_mutex_unlock(&rg->mu);
    /* the item is stable: job threads never touch items between head and tail */
    const char *argv[8 + ITEM_MAX_CMDS * (CMD_MAX_ARGS + 1)];
    size_t lens[8 + ITEM_MAX_CMDS * (CMD_MAX_ARGS + 1)];
    char seqs[24], ncmds[8], counts[ITEM_MAX_CMDS][8];
    const char *p = it->buf;
    int n = 0;
    if (it->n_cmds == 0) {
      /* nothing to write (a lost job's last item): answer it ourselves */
      redisAsyncCommand(d->ac, on_item_reply, (void *)(uintptr_t)seq, "PING");
      continue;
    }
    if (it->kind == ITEM_DONE) {
      /* the final-state script, as the job thread wrote it */
      for (int a = 0; a < it->n_args[0]; a++) {
        argv[n++] = script_text(p);
        p += strlen(p) + 1;
      }
    } else {
      snprintf(seqs, sizeof seqs, "%llu", (unsigned long long)it->seq);
      snprintf(ncmds, sizeof ncmds, "%d", it->n_cmds);
      int bf = it->kind == ITEM_BACKFILL;
      argv[n++] = "EVAL", argv[n++] = bf ? LUA_BACKFILL : LUA_APPLY, argv[n++] = bf ? "2" : "1";
      argv[n++] = d->slots[it->slot].k_hash;
      if (bf) argv[n++] = d->slots[it->slot].k_metrics;
      argv[n++] = d->slots[it->slot].owner, argv[n++] = seqs, argv[n++] = ncmds;
      for (int c = 0; c < it->n_cmds; c++) {
        snprintf(counts[c], sizeof counts[c], "%d", it->n_args[c]);
        argv[n++] = counts[c];
        for (int a = 0; a < it->n_args[c]; a++) {
          argv[n++] = p;
          p += strlen(p) + 1;
        }
      }
    }
    for (int a = 0; a < n; a++) lens[a] = strlen(argv[a]);
    redisAsyncCommandArgv(d->ac, on_item_reply, (void *)(uintptr_t)seq, n, argv, lens);
  }
}

static void on_wake(uv_async_t *h) { pump(h->data); }

/* ---- the loop: claiming jobs --------------------------------------------------------------------- */

static void start_job(job_t *j, int attempt) {
  j->attempt = attempt;
  j->running = 1;
  metrics_job_begin(j->d, (int)(j - j->d->slots));
  dlog(2, j->id, "claimed (entry %s, attempt %d)", j->entry, attempt);
  if (uv_thread_create(&j->thread, job_thread, j) == 0) {
    j->thread_started = 1;
    return;
  }
  /* no thread: answer for it */
  dlog(0, j->id, "cannot start a thread for the job");
  snprintf(j->early_error, sizeof j->early_error, "the worker could not start a thread");
  job_thread(j);
}

static void on_claim_script(redisAsyncContext *ac, void *r, void *priv) {
  daemon_t *d = ac->data;
  redisReply *reply = r;
  job_t *j = &d->slots[(intptr_t)priv];
  d->claim_inflight = 0;
  if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 || reply->element[0]->type != REDIS_REPLY_STRING) {
    if (reply) dlog(0, j->id, "claim script: %s", reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
    /* not ours after all (or Redis went away): the entry stays pending and its lease brings it back */
    free(j->text);
    memset(j, 0, sizeof *j);
    return;
  }
  if (j->join_node) {
    const char *what = reply->element[0]->str;
    const char *arg = reply->element[1]->type == REDIS_REPLY_STRING ? reply->element[1]->str : "(none)";
    if (!strcmp(what, "join") && reply->element[1]->type != REDIS_REPLY_STRING) what = "stale", arg = "without its spec";
    if (!strcmp(what, "join")) {
      free(j->text);
      j->text = strdup(arg);
      j->text_len = j->text ? strlen(j->text) : 0;
      if (!j->text) snprintf(j->early_error, sizeof j->early_error, "out of memory");
      dlog(2, j->id, "joining as node %d (attempt %d)", j->join_node, j->attempt);
      /* SIGTERM came while the join was on its way: the node joins only to vote for a stop, so
       * the job stops with a snapshot and node 0's worker hands it back */
      if (d->draining) atomic_store(&j->stop, STOP_HANDBACK);
      start_job(j, j->attempt);
      heartbeat(d);
    } else {
      int mine = !strcmp(what, "mine");
      if (mine)
        dlog(3, j->id, "join entry for node %d: this worker runs node %s of the job already; left to another worker",
             j->join_node, arg);
      else
        dlog(2, j->id, "join entry for node %d of attempt %d is stale (the job is %s): dropped", j->join_node, j->attempt,
             arg);
      free(j->text);
      memset(j, 0, sizeof *j);
      if (mine) return; /* the next tick looks again: by then another worker has likely taken it */
    }
    try_claim(d);
    return;
  }
  const char *what = reply->element[0]->str;
  const char *arg = reply->element[1]->type == REDIS_REPLY_STRING ? reply->element[1]->str : "";
  if (!strcmp(what, "final") || !strcmp(what, "duplicate") || !strcmp(what, "exhausted")) {
    if (!strcmp(what, "final"))
      dlog(2, j->id, "already %s: acknowledged without running", arg);
    else if (!strcmp(what, "duplicate"))
      dlog(1, j->id, "entry %s refused, acknowledged and deleted: %s", j->entry, arg);
    else
      dlog(0, j->id, "failed: %s", arg);
    free(j->text);
    memset(j, 0, sizeof *j);
    try_claim(d);
    return;
  }
  /* SIGTERM came while the claim was on its way: the job stops before its first iteration and
   * goes straight back to the queue */
  if (d->draining) atomic_store(&j->stop, STOP_HANDBACK);
  /* where the metrics stream ends and who ran the attempt before: a resumed attempt backfills
   * from there (service/backfill.c) */
  j->backfill_after = reply->elements >= 3 && reply->element[2]->type == REDIS_REPLY_STRING ? atoi(reply->element[2]->str) : -1;
  if (reply->elements >= 4 && reply->element[3]->type == REDIS_REPLY_STRING)
    snprintf(j->prev_worker, sizeof j->prev_worker, "%.*s", (int)reply->element[3]->len, reply->element[3]->str);
  start_job(j, atoi(reply->element[1]->str));
  heartbeat(d);
  try_claim(d);
}

/* One stream entry ([id, [field, value, ...]]) claimed by this worker. */
static void claim_entry(daemon_t *d, const redisReply *e) {
  if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING) return;
  int slot = -1;
  for (int i = 0; i < d->n_slots; i++)
    if (!d->slots[i].used) {
      slot = i;
      break;
    }
  if (slot < 0) return; /* cannot happen: claims are made for free slots only */
  job_t *j = &d->slots[slot];
  memset(j, 0, sizeof *j);
  j->used = 1;
  j->d = d;
  snprintf(j->entry, sizeof j->entry, "%s", e->element[0]->str);
  const redisReply *f = e->element[1];
  const char *id = NULL, *text = NULL, *join = NULL, *attempt = NULL, *twice = NULL;
  size_t text_len = 0;
  int id_nul = 0;
  if (f->type == REDIS_REPLY_ARRAY)
    for (size_t k = 0; k + 1 < f->elements; k += 2) {
      if (f->element[k]->type != REDIS_REPLY_STRING || f->element[k + 1]->type != REDIS_REPLY_STRING) continue;
      const char *name = f->element[k]->str, *val = f->element[k + 1]->str;
      const char **slot_of = !strcmp(name, "id") ? &id : !strcmp(name, "job") ? &text : !strcmp(name, "join") ? &join
                             : !strcmp(name, "attempt") ? &attempt : NULL;
      if (!slot_of) continue;
      if (*slot_of && !twice) twice = name; /* which of the two was meant is unknown: refused */
      *slot_of = val;
      if (slot_of == &id) id_nul = strlen(val) != f->element[k + 1]->len;
      if (slot_of == &text) text_len = f->element[k + 1]->len;
    }
  if (join) {
    /* node K of a multi-node job: LUA_JOIN, not a claim of the job */
    int node = atoi(join), att = attempt ? atoi(attempt) : 0;
    if (!id || id_nul || twice || !dd_job_id_valid(id) || node < 1 || node > 1023 || att < 1) {
      dlog(1, NULL, "entry %s: a join entry without a valid id, node and attempt: dropped", j->entry);
      redisAsyncCommand(d->ac, NULL, NULL, "XACK %s " DD_GROUP " %s", d->k_jobs, j->entry);
      redisAsyncCommand(d->ac, NULL, NULL, "XDEL %s %s", d->k_jobs, j->entry);
      memset(j, 0, sizeof *j);
      return;
    }
    snprintf(j->id, sizeof j->id, "%s", id);
    j->join_node = node;
    j->attempt = att;
    dd_key(j->k_hash, sizeof j->k_hash, d->cfg->key_prefix, DD_KEY_JOB, j->id);
    dd_key(j->k_metrics, sizeof j->k_metrics, d->cfg->key_prefix, DD_KEY_JOB_METRICS, j->id);
    dd_key(j->k_events, sizeof j->k_events, d->cfg->key_prefix, DD_KEY_JOB_EVENTS, j->id);
    snprintf(j->owner, sizeof j->owner, "%s/%llu", d->owner, (unsigned long long)++d->claims);
    char idle[32];
    snprintf(idle, sizeof idle, "%lld", (long long)d->cfg->lease_s * 1000 + 1);
    const char *argv[] = {"EVAL", LUA_JOIN, "2", j->k_hash, d->k_jobs, j->entry, attempt, join, d->worker, idle};
    d->claim_inflight = 1;
    redisAsyncCommandArgv(d->ac, on_claim_script, (void *)(intptr_t)slot, 10, argv, NULL);
    return;
  }
  if (id && !id_nul && !twice && dd_job_id_valid(id))
    snprintf(j->id, sizeof j->id, "%s", id);
  else {
    /* a bad entry fails under its stream entry id, never under a job's id it might name */
    memcpy(j->id, j->entry, strlen(j->entry) + 1); /* an entry id is at most 41 characters */
    if (twice)
      snprintf(j->early_error, sizeof j->early_error, "the queue entry has two \"%s\" fields: refused (which one is meant is unknown)",
               twice);
    else if (id_nul)
      snprintf(j->early_error, sizeof j->early_error, "id: \"%.64s...\" holds a NUL byte: not a job id ([A-Za-z0-9_.-], 1 to 64 characters)", id);
    else if (id)
      snprintf(j->early_error, sizeof j->early_error, "id: \"%.64s\" is not a job id ([A-Za-z0-9_.-], 1 to 64 characters)", id);
  }
  if (!j->early_error[0]) {
    if (!text)
      snprintf(j->early_error, sizeof j->early_error, "job: the queue entry has no \"job\" field");
    else if (text_len > DD_MAX_JOB_BYTES)
      snprintf(j->early_error, sizeof j->early_error, "job: %zu bytes, over the limit of %d", text_len, DD_MAX_JOB_BYTES);
  }
  if (text && text_len <= DD_MAX_JOB_BYTES) {
    j->text = malloc(text_len + 1);
    if (j->text) {
      memcpy(j->text, text, text_len);
      j->text[text_len] = '\0';
      j->text_len = text_len;
    }
  }
  dd_key(j->k_hash, sizeof j->k_hash, d->cfg->key_prefix, DD_KEY_JOB, j->id);
  dd_key(j->k_metrics, sizeof j->k_metrics, d->cfg->key_prefix, DD_KEY_JOB_METRICS, j->id);
  dd_key(j->k_events, sizeof j->k_events, d->cfg->key_prefix, DD_KEY_JOB_EVENTS, j->id);
  char now[32], retention[16];
  snprintf(now, sizeof now, "%.3f", dd_now());
  snprintf(retention, sizeof retention, "%d", d->cfg->retention_s);
  snprintf(j->owner, sizeof j->owner, "%s/%llu", d->owner, (unsigned long long)++d->claims);
  char k_q[160], k_r[160], k_c[160], k_f[160], lease[16], max_att[16];
  dd_key(k_q, sizeof k_q, d->cfg->key_prefix, DD_KEY_STATE, "queued");
  dd_key(k_r, sizeof k_r, d->cfg->key_prefix, DD_KEY_STATE, "running");
  dd_key(k_c, sizeof k_c, d->cfg->key_prefix, DD_KEY_STATE, "cancelled");
  dd_key(k_f, sizeof k_f, d->cfg->key_prefix, DD_KEY_STATE, "failed");
  snprintf(lease, sizeof lease, "%d", d->cfg->lease_s);
  snprintf(max_att, sizeof max_att, "%d", d->cfg->max_attempts);
  const char *argv[] = {"EVAL", LUA_CLAIM, "9", j->k_hash, d->k_jobs, j->k_events, d->k_index, k_q, k_r, k_c, k_f,
                        j->k_metrics, j->entry, j->id, j->owner, d->worker, now, j->text ? j->text : "", retention,
                        lease, max_att};
  enum { N_ARGV = sizeof argv / sizeof *argv, SPEC_ARG = 17 };
  size_t lens[N_ARGV];
  for (int i = 0; i < N_ARGV; i++) lens[i] = strlen(argv[i]);
  if (j->text) lens[SPEC_ARG] = j->text_len;
  d->claim_inflight = 1;
  redisAsyncCommandArgv(d->ac, on_claim_script, (void *)(intptr_t)slot, N_ARGV, argv, lens);
}

static void on_readgroup(redisAsyncContext *ac, void *r, void *priv) {
  daemon_t *d = ac->data;
  redisReply *reply = r;
  (void)priv;
  d->claim_inflight = 0;
  if (!reply) return;
  if (reply->type == REDIS_REPLY_ERROR) {
    dlog(0, NULL, "XREADGROUP: %s", reply->str);
    if (strstr(reply->str, "NOGROUP")) redisAsyncCommand(ac, on_group, NULL, "XGROUP CREATE %s " DD_GROUP " 0 MKSTREAM", d->k_jobs);
    return;
  }
  /* [[stream, [[id, fields]]]] or nil */
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) return;
  const redisReply *s = reply->element[0];
  if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 || s->element[1]->type != REDIS_REPLY_ARRAY) return;
  /* an entry delivered while we began to drain stays pending; its lease brings it back */
  if (d->draining || d->closing || !d->ac) return;
  if (s->element[1]->elements >= 1) claim_entry(d, s->element[1]->element[0]);
}

static void on_autoclaim(redisAsyncContext *ac, void *r, void *priv) {
  daemon_t *d = ac->data;
  redisReply *reply = r;
  (void)priv;
  d->claim_inflight = 0;
  if (!reply) return;
  if (reply->type == REDIS_REPLY_ERROR) {
    dlog(0, NULL, "XAUTOCLAIM: %s", reply->str);
    return;
  }
  /* [cursor, [[id, fields], ...], [deleted ids]]: XAUTOCLAIM looks at no more than 10 x COUNT
   * pending entries per call, so the scan goes on from the cursor it returns (0-0: from the start
   * again), or stale entries behind 10 live ones would never be found */
  if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 && reply->element[0]->type == REDIS_REPLY_STRING &&
      reply->element[0]->len < sizeof d->autoclaim_cursor)
    memcpy(d->autoclaim_cursor, reply->element[0]->str, reply->element[0]->len + 1);
  if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2 && reply->element[1]->type == REDIS_REPLY_ARRAY) {
    const redisReply *list = reply->element[1];
    for (size_t i = 0; i < list->elements; i++) {
      const redisReply *e = list->element[i];
      if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 && e->element[1]->type == REDIS_REPLY_ARRAY) {
        if (d->draining || d->closing || !d->ac) return;
        dlog(2, NULL, "taking over entry %s: its worker stopped renewing it", e->element[0]->str);
        claim_entry(d, e);
        return;
      }
    }
  }
  /* nothing stale: new entries */
  if (d->draining || d->closing || !d->connected) return;
  d->claim_inflight = 1;
  redisAsyncCommand(ac, on_readgroup, NULL, "XREADGROUP GROUP " DD_GROUP " %s COUNT 1 STREAMS %s >", d->worker, d->k_jobs);
}

static void try_claim(daemon_t *d) {
  if (!d->connected || !d->ac || d->draining || d->closing || d->claim_inflight) return;
  if (n_running(d) >= d->n_slots) return;
  d->claim_inflight = 1;
  redisAsyncCommand(d->ac, on_autoclaim, NULL, "XAUTOCLAIM %s " DD_GROUP " %s %lld %s COUNT 1", d->k_jobs, d->worker,
                    (long long)d->cfg->lease_s * 1000, d->autoclaim_cursor[0] ? d->autoclaim_cursor : "0-0");
}

/* ---- the loop: timers ------------------------------------------------------------------------------ */

static void on_cancel_poll(redisAsyncContext *ac, void *r, void *priv) {
  daemon_t *d = ac->data;
  redisReply *reply = r;
  job_t *j = &d->slots[(intptr_t)priv];
  if (!reply) return;
  j->cancel_inflight = 0;
  if (!j->used || !j->running) return;
  if (reply->type == REDIS_REPLY_STRING && !strcmp(reply->str, "1") && atomic_load(&j->stop) == STOP_NONE) {
    dlog(2, j->id, "cancel requested: stopping at the next iteration");
    atomic_store(&j->stop, STOP_CANCEL);
  }
}

static void on_tick(uv_timer_t *t) {
  daemon_t *d = t->data;
  metrics_refresh(d);
  if (!d->connected || !d->ac) return;
  for (int i = 0; i < d->n_slots; i++) {
    job_t *j = &d->slots[i];
    if (!j->used || !j->running || j->cancel_inflight || atomic_load(&j->stop) != STOP_NONE) continue;
    if (j->join_node) continue; /* node 0 watches for a cancel; every node stops with it */
    j->cancel_inflight = 1;
    redisAsyncCommand(d->ac, on_cancel_poll, (void *)(intptr_t)i, "HGET %s cancel", j->k_hash);
  }
  try_claim(d);
}

static void on_renew(redisAsyncContext *ac, void *r, void *priv) {
  daemon_t *d = ac->data;
  redisReply *reply = r;
  job_t *j = &d->slots[(intptr_t)priv];
  if (!reply || !j->used || !j->running) return;
  const char *why = lost_reason(reply);
  if (why && atomic_load(&j->stop) != STOP_LOST) {
    dlog(0, j->id, "lost the job's lease: %s; stopping without a snapshot", why);
    atomic_store(&j->stop, STOP_LOST);
  } else if (reply->type == REDIS_REPLY_ERROR) {
    dlog(1, j->id, "lease renewal: %s", reply->str);
  } else if (!why) {
    metrics_job_renewed(d, (int)(intptr_t)priv);
  }
}

static void heartbeat(daemon_t *d) {
  if (!d->connected || !d->ac) return;
  char jobs[1024] = "", now[32], pid[16], maxj[16];
  snprintf(now, sizeof now, "%.3f", dd_now());
  size_t u = 0;
  for (int i = 0; i < d->n_slots && u < sizeof jobs; i++) {
    job_t *j = &d->slots[i];
    if (!j->used || !j->running) continue;
    u += (size_t)snprintf(jobs + u, sizeof jobs - u, "%s%s", u ? "," : "", j->id);
    if (j->join_node) continue; /* node 0's worker holds the job's lease */
    const char *argv[] = {"EVAL", LUA_RENEW, "2", j->k_hash, d->k_jobs, j->owner, j->entry, d->worker, now};
    size_t lens[9];
    for (int k = 0; k < 9; k++) lens[k] = strlen(argv[k]);
    redisAsyncCommandArgv(d->ac, on_renew, (void *)(intptr_t)i, 9, argv, lens);
  }
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  snprintf(maxj, sizeof maxj, "%d", d->n_slots);
  char devices[256] = "cpu";
  if (d->cfg->n_device) {
    size_t du = 0;
    for (size_t i = 0; i < d->cfg->n_device && du < sizeof devices; i++)
      du += (size_t)snprintf(devices + du, sizeof devices - du, "%s%s", i ? "," : "", d->cfg->device[i]);
  }
  char started[32];
  snprintf(started, sizeof started, "%.3f", d->started_at);
  const char *argv[] = {"HSET", d->k_worker, "name", d->worker, "host", d->host, "pid", pid, "version", DD_VERSION,
                        "devices", devices, "max_jobs", maxj, "jobs", jobs, "state", d->draining ? "draining" : "running",
                        "started_at", started, "heartbeat_at", now};
  size_t lens[22];
  for (int k = 0; k < 22; k++) lens[k] = strlen(argv[k]);
  redisAsyncCommandArgv(d->ac, NULL, NULL, 22, argv, lens);
  redisAsyncCommand(d->ac, NULL, NULL, "EXPIRE %s %d", d->k_worker, 3 * d->cfg->heartbeat_s);
  redisAsyncCommand(d->ac, NULL, NULL, "SADD %s %s", d->k_workers, d->worker);
  /* members whose hash expired (a worker killed -9 never left the set) */
  char k_one[176];
  dd_key(k_one, sizeof k_one, d->cfg->key_prefix, DD_KEY_WORKER, "");
  const char *pargv[] = {"EVAL", LUA_PRUNE_WORKERS, "1", d->k_workers, k_one};
  redisAsyncCommandArgv(d->ac, NULL, NULL, 5, pargv, NULL);
}

static void on_heartbeat(uv_timer_t *t) { heartbeat(t->data); }

/* ---- the loop: shutdown ---------------------------------------------------------------------------- */

static void close_cb(uv_handle_t *h) { (void)h; }

static void close_all(daemon_t *d) {
  if (d->closing == 2) return;
  d->closing = 2;
  uv_timer_stop(&d->reconnect_timer);
  uv_close((uv_handle_t *)&d->reconnect_timer, close_cb);
  uv_close((uv_handle_t *)&d->tick_timer, close_cb);
  uv_close((uv_handle_t *)&d->heartbeat_timer, close_cb);
  uv_close((uv_handle_t *)&d->drain_timer, close_cb);
  uv_close((uv_handle_t *)&d->wake, close_cb);
  uv_close((uv_handle_t *)&d->sigterm, close_cb);
  uv_close((uv_handle_t *)&d->sigint, close_cb);
  d->connected = 0;
  if (d->ac) {
    redisAsyncContext *ac = d->ac;
    d->ac = NULL;
    if (d->exit_status)
      redisAsyncFree(ac); /* the drain timed out: Redis is not answering, do not wait for it */
    else
      redisAsyncDisconnect(ac); /* after the replies still due */
  }
}

/* Job threads still training (their last item not pushed yet). */
static int threads_alive(const daemon_t *d) {
  int n = 0;
  for (int i = 0; i < d->n_slots; i++) n += d->slots[i].used && !atomic_load(&d->slots[i].exited);
  return n;
}

/* Exits once draining, no job is left and every item has been answered; after the drain timeout,
 * once no job thread is left, answered or not. */
static void maybe_exit(daemon_t *d) {
  if (!d->draining || d->closing == 2) return;
  if (d->closing == 1) {
    if (threads_alive(d) > 0) return;
  } else {
    if (n_running(d) > 0) return;
    pthread_mutex_lock(&d->ring.mu);
    int empty = d->ring.head == d->ring.tail;
    pthread_mutex_unlock(&d->ring.mu);
    if (!empty) return;
  }
  if (d->connected && d->ac) {
    /* leave the workers set before going */
    redisAsyncCommand(d->ac, NULL, NULL, "DEL %s", d->k_worker);
    redisAsyncCommand(d->ac, NULL, NULL, "SREM %s %s", d->k_workers, d->worker);
  }
  dlog(2, NULL, "stopped after %lld job(s)", (long long)d->jobs_done);
  close_all(d);
}

static void on_drain_timeout(uv_timer_t *t) {
  daemon_t *d = t->data;
  if (threads_alive(d) > 0) {
    /* jobs still snapshotting: keep waiting for them, Redis or not */
    uv_timer_start(&d->drain_timer, on_drain_timeout, 1000, 0);
    return;
  }
  dlog(1, NULL, "Redis did not take the last updates within %d s; exiting anyway (the lease hands the jobs on)",
       d->cfg->drain_timeout_s);
  d->exit_status = 1;
  d->closing = 1;
  maybe_exit(d);
}

static void on_signal(uv_signal_t *h, int sig) {
  daemon_t *d = h->data;
  if (d->draining) {
    dlog(1, NULL, "second %s: exiting now", sig == SIGINT ? "SIGINT" : "SIGTERM");
    _exit(1);
  }
  d->draining = 1;
  int n = n_running(d);
  dlog(2, NULL, "%s: taking no more jobs%s", sig == SIGINT ? "SIGINT" : "SIGTERM",
       n ? "; snapshotting the running ones to hand them back" : "");
  for (int i = 0; i < d->n_slots; i++) {
    job_t *j = &d->slots[i];
    if (j->used && j->running) {
      int expect = STOP_NONE;
      atomic_compare_exchange_strong(&j->stop, &expect, STOP_HANDBACK);
    }
  }
  heartbeat(d);
  uv_timer_start(&d->drain_timer, on_drain_timeout, (uint64_t)d->cfg->drain_timeout_s * 1000, 0);
  maybe_exit(d);
}

/* ---- running the loop ---------------------------------------------------------------------------- */

int loop_run(daemon_t *d) {
  const Distilld__DaemonConfig *c = d->cfg;
  d->started_at = dd_now();
  d->loop = uv_default_loop();
  uv_timer_init(d->loop, &d->reconnect_timer);
  uv_timer_init(d->loop, &d->tick_timer);
  uv_timer_init(d->loop, &d->heartbeat_timer);
  uv_timer_init(d->loop, &d->drain_timer);
  d->reconnect_timer.data = d->tick_timer.data = d->heartbeat_timer.data = d->drain_timer.data = d;
  uv_async_init(d->loop, &d->wake, on_wake);
  d->wake.data = d;
  uv_signal_init(d->loop, &d->sigterm);
  uv_signal_init(d->loop, &d->sigint);
  d->sigterm.data = d->sigint.data = d;
  uv_signal_start(&d->sigterm, on_signal, SIGTERM);
  uv_signal_start(&d->sigint, on_signal, SIGINT);
  signal(SIGPIPE, SIG_IGN);
  int poll = c->poll_ms > 0 ? c->poll_ms : 250;
  uv_timer_start(&d->tick_timer, on_tick, (uint64_t)poll, (uint64_t)poll);
  uv_timer_start(&d->heartbeat_timer, on_heartbeat, (uint64_t)c->heartbeat_s * 1000, (uint64_t)c->heartbeat_s * 1000);
  dlog(2, NULL, "worker %s (distilld %s): %d job(s) at once, %d thread(s) each; queue %s at %s:%d; data roots %s%s; output root %s",
       d->worker, DD_VERSION, d->n_slots, d->threads, d->k_jobs, c->redis_host, c->redis_port, d->paths.data[0],
       d->paths.n_data > 1 ? " (and more)" : "", d->paths.output);
  connect_redis(d);
  uv_run(d->loop, UV_RUN_DEFAULT);
  /* threads whose last item Redis never took (the drain timed out) have exited: reap them */
  for (int i = 0; i < d->n_slots; i++)
    if (d->slots[i].used && d->slots[i].thread_started) uv_thread_join(&d->slots[i].thread);
  uv_loop_close(d->loop);
  return d->exit_status;
}
