/* `distilld --config FILE`: the service. One libuv loop on the main thread owns all Redis I/O
 * (hiredis async through its libuv adapter) and every timer; each job trains on a thread of its
 * own. The two sides meet in one bounded ring of Redis commands:
 *
 *   job thread --(progress, tests, snapshots, logs, the final state: pre-formatted commands)-->
 *       ring (4096 items, fixed size, no allocation) --uv_async--> loop --> Redis
 *   loop --(cancel, hand-back, lost lease: one atomic per job)--> job thread (polled each iteration)
 *
 * The loop sends ring items in order and drops an item only when Redis has answered it, so a
 * Redis outage loses nothing (until the ring fills: then metrics items are dropped and counted,
 * never state changes). Training never waits on Redis, and Redis never waits on training.
 *
 * Job lifecycle (docs/redis.md): XAUTOCLAIM (stale entries first) or XREADGROUP claims an entry;
 * the CLAIM script makes this worker the owner; a thread validates, builds and trains; RENEW keeps
 * the entry's idle time under the lease while the owner is still this worker; FINISH (final
 * state + XACK) or HANDBACK (XACK + a fresh entry) ends it. Every script checks the owner first. */
#define _GNU_SOURCE
#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <unistd.h>
#include <uv.h>

#include "base/backend.h"
#include "devices/devices.h"
#include "cli/cli.h"
#include "common/cli_util.h"
#include "common/dconfig.h"
#include "common/keys.h"
#include "base/dd_error.h"
#include "train/distill.h"
#include "service/paths.h"
#include "common/rdzv.h"
#include "format/textformat.h"

#define RING_CAP 4096
/* A multi-node job whose attempt fails in the collectives (a node lost) is handed back this many
 * times at most before it fails for good. */
#define DD_MULTINODE_ATTEMPTS 3
#define ITEM_BYTES 2048
#define ITEM_MAX_CMDS 3
#define CMD_MAX_ARGS 96
#define MAX_SLOTS 64
/* metrics may fill the ring to here; tests, snapshots and logs to RING_CAP - 16; final states to the end */
#define RING_METRICS_LIMIT (RING_CAP - 256)
#define RING_EVENTS_LIMIT (RING_CAP - 16)

/* ---- Lua scripts (every one checks the owner before it writes) ------------------------------- */

/* KEYS: hash jobs events index state:queued state:running state:cancelled.
 * ARGV: entry id owner worker now spec retention */
static const char LUA_CLAIM[] =
    "local st = redis.call('HGET', KEYS[1], 'state')\n"
    "if st == 'succeeded' or st == 'failed' or st == 'cancelled' then\n"
    "  redis.call('XACK', KEYS[2], '" DD_GROUP "', ARGV[1]) redis.call('XDEL', KEYS[2], ARGV[1]) return {'final', st} end\n"
    "if redis.call('HGET', KEYS[1], 'cancel') == '1' then\n"
    "  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[5], 'updated_at', ARGV[5])\n"
    "  redis.call('XACK', KEYS[2], '" DD_GROUP "', ARGV[1]) redis.call('XDEL', KEYS[2], ARGV[1])\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[7]) redis.call('EXPIRE', KEYS[3], ARGV[7])\n"
    "  redis.call('ZREM', KEYS[5], ARGV[2]) redis.call('ZADD', KEYS[7], ARGV[5], ARGV[2])\n"
    "  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '" DD_KEYS_STR(DD_EVENTS_MAXLEN) "', '*', 'type', 'state', 'state', 'cancelled', 'worker', ARGV[4],"
    " 'reason', 'cancel requested before it started')\n"
    "  return {'final', 'cancelled'} end\n"
    "if not st then\n"
    "  redis.call('HSET', KEYS[1], 'id', ARGV[2], 'submitted_at', ARGV[5])\n"
    "  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[2]) end\n"
    "if not redis.call('HGET', KEYS[1], 'spec') then redis.call('HSET', KEYS[1], 'spec', ARGV[6]) end\n"
    "local a = redis.call('HINCRBY', KEYS[1], 'attempt', 1)\n"
    "redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[3], 'worker', ARGV[4], 'entry', ARGV[1],"
    " 'started_at', ARGV[5], 'updated_at', ARGV[5], 'seq', 0)\n"
    "redis.call('HDEL', KEYS[1], 'error', 'finished_at')\n"
    "redis.call('ZREM', KEYS[5], ARGV[2]) redis.call('ZADD', KEYS[6], ARGV[5], ARGV[2])\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', '" DD_KEYS_STR(DD_EVENTS_MAXLEN) "', '*', 'type', 'state', 'state', 'running', 'worker', ARGV[4],"
    " 'attempt', a)\n"
    "return {'run', tostring(a)}\n";

/* Every progress, test, snapshot and log item of a job goes through this: it writes only while the
 * caller owns the job, and only once (a per-attempt sequence number; an item sent again after a
 * reconnect, which Redis may already have applied, is skipped). KEYS: hash. ARGV: owner seq ncmds,
 * then per command its argument count and arguments. */
static const char LUA_APPLY[] =
    "if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return -1 end\n"
    "local seq = tonumber(ARGV[2])\n"
    "if seq <= tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') then return 0 end\n"
    "local i = 4\n"
    "for c = 1, tonumber(ARGV[3]) do\n"
    "  local n = tonumber(ARGV[i])\n"
    "  redis.call(unpack(ARGV, i + 1, i + n))\n"
    "  i = i + n + 1\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'seq', ARGV[2])\n"
    "return 1\n";

/* KEYS: hash jobs. ARGV: owner entry consumer */
static const char LUA_RENEW[] =
    "if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end\n"
    "redis.call('XCLAIM', KEYS[2], '" DD_GROUP "', ARGV[3], 0, ARGV[2], 'JUSTID')\n"
    "return 1\n";

/* KEYS: hash jobs events metrics index state:running state:<final>.
 * ARGV: owner entry state error now retention worker iter id */
static const char LUA_FINISH[] =
    "if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end\n"
    "local st = redis.call('HGET', KEYS[1], 'state')\n"
    "if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return 1 end\n"
    "redis.call('HSET', KEYS[1], 'state', ARGV[3], 'finished_at', ARGV[5], 'updated_at', ARGV[5], 'iter', ARGV[8])\n"
    "local ev = {'type', 'state', 'state', ARGV[3], 'worker', ARGV[7], 'iter', ARGV[8]}\n"
    "if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[4]) ev[#ev+1] = 'error' ev[#ev+1] = ARGV[4] end\n"
    "redis.call('XACK', KEYS[2], '" DD_GROUP "', ARGV[2]) redis.call('XDEL', KEYS[2], ARGV[2])\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', '" DD_KEYS_STR(DD_EVENTS_MAXLEN) "', '*', unpack(ev))\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[6]) redis.call('EXPIRE', KEYS[3], ARGV[6]) redis.call('EXPIRE', KEYS[4], ARGV[6])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[5]) - tonumber(ARGV[6]))\n"
    "redis.call('ZREM', KEYS[6], ARGV[9]) redis.call('ZADD', KEYS[7], ARGV[5], ARGV[9])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', tonumber(ARGV[5]) - tonumber(ARGV[6]))\n"
    "return 1\n";

/* KEYS: hash jobs events state:running state:queued. ARGV: owner entry id now worker iter */
static const char LUA_HANDBACK[] =
    "local o = redis.call('HGET', KEYS[1], 'owner')\n"
    "if o == 'handback:' .. ARGV[1] then return 'again' end\n"
    "if o ~= ARGV[1] then return 0 end\n"
    "local spec = redis.call('HGET', KEYS[1], 'spec')\n"
    "redis.call('XACK', KEYS[2], '" DD_GROUP "', ARGV[2]) redis.call('XDEL', KEYS[2], ARGV[2])\n"
    "local e = redis.call('XADD', KEYS[2], '*', 'id', ARGV[3], 'job', spec)\n"
    "redis.call('HSET', KEYS[1], 'state', 'queued', 'owner', 'handback:' .. ARGV[1], 'entry', e, 'updated_at', ARGV[4])\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', '" DD_KEYS_STR(DD_EVENTS_MAXLEN) "', '*', 'type', 'state', 'state', 'queued', 'worker', ARGV[5],"
    " 'iter', ARGV[6], 'reason', 'handed back by ' .. ARGV[5])\n"
    "redis.call('ZREM', KEYS[4], ARGV[3]) redis.call('ZADD', KEYS[5], ARGV[4], ARGV[3])\n"
    "return e\n";

/* A worker takes a join entry (node K of a multi-node job whose node 0 runs elsewhere). The entry
 * is acknowledged and deleted at once: a joiner that dies is not replaced, node 0 fails the attempt
 * and the job's own retry brings it back. A worker that already runs a node of the job leaves the
 * entry pending with an idle time past the lease, so the next XAUTOCLAIM of any worker (within
 * poll_ms) takes it; it does not look again itself until its next tick. KEYS: hash jobs.
 * ARGV: entry attempt node worker idle_ms */
static const char LUA_JOIN[] =
    "local st = redis.call('HGET', KEYS[1], 'state')\n"
    "local a = redis.call('HGET', KEYS[1], 'attempt')\n"
    "if st == 'running' and a == ARGV[2] then\n"
    "  local k = redis.call('HGET', KEYS[1], 'joined:' .. ARGV[4] .. '/' .. a)\n"
    "  if redis.call('HGET', KEYS[1], 'worker') == ARGV[4] then k = '0' end\n"
    "  if k then\n"
    "    redis.call('XCLAIM', KEYS[2], '" DD_GROUP "', ARGV[4], 0, ARGV[1], 'IDLE', ARGV[5], 'JUSTID')\n"
    "    return {'mine', k}\n"
    "  end\n"
    "end\n"
    "redis.call('XACK', KEYS[2], '" DD_GROUP "', ARGV[1]) redis.call('XDEL', KEYS[2], ARGV[1])\n"
    "if st ~= 'running' or a ~= ARGV[2] then return {'stale', (st or 'gone') .. ', attempt ' .. (a or '-')} end\n"
    "redis.call('HSET', KEYS[1], 'node:' .. ARGV[3], ARGV[4], 'joined:' .. ARGV[4] .. '/' .. a, ARGV[3])\n"
    "return {'join', redis.call('HGET', KEYS[1], 'spec')}\n";

/* Ring items name a script by one of these; the loop sends the script's text in its place. */
#define SCRIPT_REF_FINISH "\001finish"
#define SCRIPT_REF_HANDBACK "\001handback"

/* ---- the ring --------------------------------------------------------------------------------- */

enum { ITEM_CMDS, ITEM_DONE };
enum { PRIO_METRICS, PRIO_EVENT, PRIO_STATE };

typedef struct {
  int kind; /* ITEM_CMDS, or ITEM_DONE (the job's last item: its slot is freed once answered) */
  int slot;
  int n_cmds;
  uint64_t seq; /* the job's item number (ITEM_CMDS), for LUA_APPLY */
  uint16_t n_args[ITEM_MAX_CMDS];
  uint32_t used;
  char buf[ITEM_BYTES]; /* the arguments, NUL-terminated, one after another */
} ring_item;

typedef struct {
  ring_item *items; /* RING_CAP */
  uint64_t head, sent, tail; /* answered < head <= sent <= tail */
  pthread_mutex_t mu;
} ring_t;

/* ---- jobs ------------------------------------------------------------------------------------- */

enum { STOP_NONE, STOP_CANCEL, STOP_HANDBACK, STOP_LOST };
enum { OUT_SUCCEEDED, OUT_FAILED, OUT_CANCELLED, OUT_HANDBACK, OUT_LOST };

struct daemon;

typedef struct {
  int used, running, thread_started;
  struct daemon *d;
  char id[72], entry[64];
  char owner[128]; /* this claim's token: the daemon's token + "/" + a claim counter */
  char k_hash[160], k_metrics[176], k_events[176];
  char *text; /* the entry's job text (owned) */
  size_t text_len;
  char early_error[512]; /* a bad entry: fail without building anything */
  int attempt;
  int join_node; /* > 0: this slot runs node join_node of a job whose node 0 runs elsewhere */
  uv_thread_t thread;
  atomic_int stop;     /* STOP_*: set by the loop, read by the job's thread each iteration */
  atomic_int exited;   /* the job's thread has pushed its last item */
  int cancel_inflight;
  atomic_llong dropped;
  /* used by the job thread only */
  char attempt_s[16];
  uint64_t next_seq;
  char name[128];
  uint64_t checksum;
} job_t;

typedef struct daemon {
  uv_loop_t *loop;
  Distilld__DaemonConfig *cfg;
  char *password;
  char worker[72], owner[96], host[256];
  dd_paths paths;
  int threads;
  redisAsyncContext *ac;
  int connected, down_logged;
  uv_timer_t reconnect_timer, tick_timer, heartbeat_timer, drain_timer;
  uv_async_t wake;
  uv_signal_t sigterm, sigint;
  int backoff_ms;
  int draining, closing, signals;
  int claim_inflight;
  ring_t ring;
  job_t slots[MAX_SLOTS];
  int n_slots;
  char k_jobs[96], k_index[96], k_worker[176], k_workers[96];
  double started_at;
  int64_t jobs_done;
  uint64_t claims;
  char autoclaim_cursor[64];
  int exit_status;
} daemon_t;

/* ---- logging: stderr, one line each, with the level and the job id --------------------------- */

static int g_log_level = 2, g_journal;

static void dlog(int level, const char *job, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void dlog(int level, const char *job, const char *fmt, ...) {
  if (level > g_log_level) return;
  static const char *names[] = {"error", "warning", "info", "debug"};
  static const int prio[] = {3, 4, 6, 7};
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  /* journald reads "<N>" as the priority; a terminal gets the level as a word */
  if (g_journal)
    fprintf(stderr, "<%d>%s%s%s%s\n", prio[level], job ? "job " : "", job ? job : "", job ? ": " : "", msg);
  else
    fprintf(stderr, "distilld: %s: %s%s%s%s\n", names[level], job ? "job " : "", job ? job : "", job ? ": " : "", msg);
}

/* ---- building ring items (job threads) --------------------------------------------------------- */

typedef struct {
  ring_item *it;
  int ok;
} item_b;

static void ib_begin(item_b *b, ring_item *it, int kind, int slot) {
  memset(it->n_args, 0, sizeof it->n_args);
  it->kind = kind;
  it->slot = slot;
  it->n_cmds = 0;
  it->used = 0;
  b->it = it;
  b->ok = 1;
}

static void ib_cmd(item_b *b) {
  if (b->it->n_cmds < ITEM_MAX_CMDS)
    b->it->n_cmds++;
  else
    b->ok = 0;
}

/* One argument, truncated to what fits (long error texts are cut, never the structure). */
static void ib_arg(item_b *b, const char *s) {
  ring_item *it = b->it;
  int c = it->n_cmds - 1;
  if (c < 0 || it->n_args[c] >= CMD_MAX_ARGS) {
    b->ok = 0;
    return;
  }
  size_t room = ITEM_BYTES - it->used;
  if (room < 2) {
    b->ok = 0;
    return;
  }
  size_t n = strlen(s);
  if (n > room - 1) n = room - 1;
  memcpy(it->buf + it->used, s, n);
  it->buf[it->used + n] = '\0';
  it->used += (uint32_t)n + 1;
  it->n_args[c]++;
}

static void ib_argf(item_b *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ib_argf(item_b *b, const char *fmt, ...) {
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  ib_arg(b, tmp);
}

static void ib_num(item_b *b, double v) { ib_argf(b, "%.9g", v); }

/* Reserves the next ring slot for a job thread. Returns NULL when the ring is past the limit for
 * this priority (the caller counts a dropped item). The item is published by ring_commit. */
static ring_item *ring_reserve(ring_t *r, int prio) {
  pthread_mutex_lock(&r->mu);
  uint64_t n = r->tail - r->head;
  uint64_t limit = prio == PRIO_METRICS ? RING_METRICS_LIMIT : prio == PRIO_EVENT ? RING_EVENTS_LIMIT : RING_CAP;
  if (n >= limit) {
    pthread_mutex_unlock(&r->mu);
    return NULL;
  }
  return &r->items[r->tail % RING_CAP]; /* still locked: one writer at a time */
}

static void ring_commit(daemon_t *d, ring_t *r, int publish) {
  if (publish) r->tail++;
  pthread_mutex_unlock(&r->mu);
  if (publish) uv_async_send(&d->wake);
}

/* ---- the job thread ---------------------------------------------------------------------------- */

static const char *term_field(const char *name, char *buf, size_t len) {
  /* the student's own loss output is the cross-entropy term */
  snprintf(buf, len, "%s", !strcmp(name, "loss") ? "ce_loss" : name);
  return buf;
}

static void push_state_event(job_t *j, int prio, void (*fill)(item_b *, job_t *, const void *), const void *arg) {
  daemon_t *d = j->d;
  ring_item *it = ring_reserve(&d->ring, prio);
  if (!it) {
    atomic_fetch_add(&j->dropped, 1);
    return;
  }
  item_b b;
  ib_begin(&b, it, ITEM_CMDS, (int)(j - d->slots));
  it->seq = ++j->next_seq;
  fill(&b, j, arg);
  if (!b.ok) dlog(1, j->id, "an event did not fit its buffer and was not written to Redis");
  ring_commit(d, &d->ring, b.ok);
}

static void hset_head(item_b *b, job_t *j) {
  ib_cmd(b);
  ib_arg(b, "HSET");
  ib_arg(b, j->k_hash);
}

static void xadd_events_head(item_b *b, job_t *j, const char *type) {
  ib_cmd(b);
  ib_arg(b, "XADD");
  ib_arg(b, j->k_events);
  ib_arg(b, "MAXLEN");
  ib_arg(b, "~");
  ib_argf(b, "%d", DD_EVENTS_MAXLEN);
  ib_arg(b, "*");
  ib_arg(b, "type");
  ib_arg(b, type);
  ib_arg(b, "worker");
  ib_arg(b, j->d->worker);
}

static void fill_progress(item_b *b, job_t *j, const void *arg) {
  const dd_distill_progress *p = arg;
  char f[80];
  hset_head(b, j);
  ib_arg(b, "iter"), ib_argf(b, "%d", p->iter);
  ib_arg(b, "max_iter"), ib_argf(b, "%d", p->max_iter);
  ib_arg(b, "epoch"), ib_argf(b, "%d", p->epoch);
  ib_arg(b, "lr"), ib_num(b, p->lr);
  ib_arg(b, "loss"), ib_num(b, p->loss);
  for (int i = 0; i < p->n_terms && i < 16; i++) ib_arg(b, term_field(p->term_names[i], f, sizeof f)), ib_num(b, p->terms[i]);
  ib_arg(b, "img_per_s"), ib_num(b, p->img_per_s);
  ib_arg(b, "data_wait_ms"), ib_num(b, p->data_wait_ms);
  ib_arg(b, "eta_s"), ib_num(b, p->eta_s);
  ib_arg(b, "elapsed_s"), ib_num(b, p->elapsed_s);
  ib_arg(b, "data_errors"), ib_argf(b, "%lld", (long long)p->data_errors);
  ib_arg(b, "updated_at"), ib_argf(b, "%.3f", dd_now());
  long long dropped = atomic_load(&j->dropped);
  if (dropped) ib_arg(b, "metrics_dropped"), ib_argf(b, "%lld", dropped);
  ib_cmd(b);
  ib_arg(b, "XADD");
  ib_arg(b, j->k_metrics);
  ib_arg(b, "MAXLEN");
  ib_arg(b, "~");
  ib_argf(b, "%d", DD_METRICS_MAXLEN);
  ib_arg(b, "*");
  ib_arg(b, "iter"), ib_argf(b, "%d", p->iter);
  ib_arg(b, "epoch"), ib_argf(b, "%d", p->epoch);
  ib_arg(b, "lr"), ib_num(b, p->lr);
  ib_arg(b, "loss"), ib_num(b, p->loss);
  for (int i = 0; i < p->n_terms && i < 16; i++) ib_arg(b, term_field(p->term_names[i], f, sizeof f)), ib_num(b, p->terms[i]);
  ib_arg(b, "img_per_s"), ib_num(b, p->img_per_s);
  ib_arg(b, "data_wait_ms"), ib_num(b, p->data_wait_ms);
  ib_arg(b, "worker"), ib_arg(b, j->d->worker);
  ib_arg(b, "attempt"), ib_arg(b, j->attempt_s);
}

static void fill_test(item_b *b, job_t *j, const void *arg) {
  const dd_distill_test *t = arg;
  char f[96];
  hset_head(b, j);
  ib_arg(b, "test_iter"), ib_argf(b, "%d", t->iter);
  for (int i = 0; i < t->n && i < 24; i++) {
    snprintf(f, sizeof f, "test_%s", t->names[i]);
    ib_arg(b, !strcmp(t->names[i], "accuracy") ? "test_acc" : f);
    ib_num(b, t->values[i]);
  }
  ib_arg(b, "updated_at"), ib_argf(b, "%.3f", dd_now());
  xadd_events_head(b, j, "test");
  ib_arg(b, "iter"), ib_argf(b, "%d", t->iter);
  for (int i = 0; i < t->n && i < 24; i++) ib_arg(b, t->names[i]), ib_num(b, t->values[i]);
}

typedef struct {
  double acc;
  int batches;
  uint64_t checksum;
} teacher_arg;

static void fill_teacher(item_b *b, job_t *j, const void *arg) {
  const teacher_arg *t = arg;
  hset_head(b, j);
  ib_arg(b, "teacher_acc"), ib_num(b, t->acc);
  ib_arg(b, "teacher_batches"), ib_argf(b, "%d", t->batches);
  ib_arg(b, "teacher_checksum"), ib_argf(b, "%016llx", (unsigned long long)t->checksum);
  xadd_events_head(b, j, "teacher");
  ib_arg(b, "accuracy"), ib_num(b, t->acc);
  ib_arg(b, "batches"), ib_argf(b, "%d", t->batches);
  ib_arg(b, "checksum"), ib_argf(b, "%016llx", (unsigned long long)t->checksum);
}

typedef struct {
  int iter;
  const char *model, *state;
} snap_arg;

static void fill_snapshot(item_b *b, job_t *j, const void *arg) {
  const snap_arg *s = arg;
  hset_head(b, j);
  ib_arg(b, "last_snapshot"), ib_arg(b, s->model);
  ib_arg(b, "last_snapshot_iter"), ib_argf(b, "%d", s->iter);
  xadd_events_head(b, j, "snapshot");
  ib_arg(b, "iter"), ib_argf(b, "%d", s->iter);
  ib_arg(b, "model"), ib_arg(b, s->model);
  ib_arg(b, "state"), ib_arg(b, s->state);
}

typedef struct {
  int level;
  const char *msg;
} log_arg;

static void fill_log(item_b *b, job_t *j, const void *arg) {
  const log_arg *l = arg;
  static const char *names[] = {"error", "warning", "info"};
  if (l->level == 1) {
    ib_cmd(b);
    ib_arg(b, "HINCRBY");
    ib_arg(b, j->k_hash);
    ib_arg(b, "warnings");
    ib_arg(b, "1");
  }
  xadd_events_head(b, j, "log");
  ib_arg(b, "level"), ib_arg(b, names[l->level < 0 ? 0 : l->level > 2 ? 2 : l->level]);
  ib_arg(b, "msg"), ib_arg(b, l->msg);
}

typedef struct {
  const char *name;
  int resumed_from;
} start_arg;

static void fill_start(item_b *b, job_t *j, const void *arg) {
  const start_arg *s = arg;
  hset_head(b, j);
  ib_arg(b, "name"), ib_arg(b, s->name);
  ib_arg(b, "resumed_from"), ib_argf(b, "%d", s->resumed_from);
  if (s->resumed_from > 0) {
    xadd_events_head(b, j, "resumed");
    ib_arg(b, "iter"), ib_argf(b, "%d", s->resumed_from);
    ib_arg(b, "attempt"), ib_arg(b, j->attempt_s);
  }
}

typedef struct {
  int outcome, iter;
  const char *error;
} done_arg;

static void fill_done(item_b *b, job_t *j, const void *arg) {
  const done_arg *a = arg;
  daemon_t *d = j->d;
  b->it->kind = ITEM_DONE;
  if (a->outcome == OUT_LOST) return; /* another worker owns the job now: write nothing */
  ib_cmd(b);
  ib_arg(b, "EVAL");
  if (a->outcome == OUT_HANDBACK) {
    char k_run[160], k_queued[160];
    ib_arg(b, SCRIPT_REF_HANDBACK);
    ib_arg(b, "5");
    ib_arg(b, j->k_hash), ib_arg(b, d->k_jobs), ib_arg(b, j->k_events);
    ib_arg(b, dd_key(k_run, sizeof k_run, d->cfg->key_prefix, DD_KEY_STATE, "running"));
    ib_arg(b, dd_key(k_queued, sizeof k_queued, d->cfg->key_prefix, DD_KEY_STATE, "queued"));
    ib_arg(b, j->owner), ib_arg(b, j->entry), ib_arg(b, j->id);
    ib_argf(b, "%.3f", dd_now());
    ib_arg(b, d->worker);
    ib_argf(b, "%d", a->iter);
    return;
  }
  static const char *states[] = {"succeeded", "failed", "cancelled"};
  char k_run[160], k_final[160];
  ib_arg(b, SCRIPT_REF_FINISH);
  ib_arg(b, "7");
  ib_arg(b, j->k_hash), ib_arg(b, d->k_jobs), ib_arg(b, j->k_events), ib_arg(b, j->k_metrics), ib_arg(b, d->k_index);
  ib_arg(b, dd_key(k_run, sizeof k_run, d->cfg->key_prefix, DD_KEY_STATE, "running"));
  ib_arg(b, dd_key(k_final, sizeof k_final, d->cfg->key_prefix, DD_KEY_STATE, states[a->outcome]));
  ib_arg(b, j->owner), ib_arg(b, j->entry), ib_arg(b, states[a->outcome]);
  /* the error goes last among the long arguments: it is cut to fit, never the rest */
  char errbuf[1200];
  snprintf(errbuf, sizeof errbuf, "%s", a->error ? a->error : "");
  ib_arg(b, errbuf);
  ib_argf(b, "%.3f", dd_now());
  ib_argf(b, "%d", d->cfg->retention_s);
  ib_arg(b, d->worker);
  ib_argf(b, "%d", a->iter);
  ib_arg(b, j->id);
}

/* hooks from the trainer (job thread) */
static void h_log(void *ctx, int level, const char *msg) {
  job_t *j = ctx;
  dlog(level, j->id, "%s", msg);
  log_arg a = {level, msg};
  push_state_event(j, PRIO_EVENT, fill_log, &a);
}
static void h_progress(void *ctx, const dd_distill_progress *p) {
  job_t *j = ctx;
  dlog(3, j->id, "iter %d/%d loss %.5f %.1f img/s", p->iter, p->max_iter, p->loss, p->img_per_s);
  push_state_event(j, PRIO_METRICS, fill_progress, p);
}
static void h_test(void *ctx, const dd_distill_test *t) {
  job_t *j = ctx;
  char line[512] = "";
  size_t u = 0;
  for (int i = 0; i < t->n && u < sizeof line; i++) u += (size_t)snprintf(line + u, sizeof line - u, " %s %.5g", t->names[i], t->values[i]);
  dlog(2, j->id, "test at iter %d:%s", t->iter, line);
  push_state_event(j, PRIO_EVENT, fill_test, t);
}
static void h_teacher(void *ctx, double acc, int batches) {
  job_t *j = ctx;
  dlog(2, j->id, "teacher accuracy %.4f (%d TEST batches)", acc, batches);
  teacher_arg a = {acc, batches, j->checksum};
  push_state_event(j, PRIO_EVENT, fill_teacher, &a);
}
static void h_snapshot(void *ctx, int iter, const char *model, const char *state) {
  job_t *j = ctx;
  dlog(2, j->id, "snapshot at iter %d: %s", iter, model);
  snap_arg a = {iter, model, state};
  push_state_event(j, PRIO_EVENT, fill_snapshot, &a);
}
static void h_started(void *ctx, int start_iter, uint64_t checksum) {
  job_t *j = ctx;
  j->checksum = checksum;
  if (start_iter) dlog(2, j->id, "resumed from the snapshot at iter %d", start_iter);
  start_arg sa = {j->name, start_iter};
  push_state_event(j, PRIO_STATE, fill_start, &sa);
}

static int h_stop(void *ctx) {
  job_t *j = ctx;
  int s = atomic_load(&j->stop);
  return s == STOP_NONE ? 0 : s == STOP_LOST ? DD_STOP_ABORT : DD_STOP_SNAPSHOT;
}

/* 1 when OUTPUT_DIR/snapshots holds a .solverstate already. */
static int has_snapshots(const char *out_dir) {
  char p[4096];
  snprintf(p, sizeof p, "%s/snapshots", out_dir);
  DIR *dir = opendir(p);
  if (!dir) return 0;
  struct dirent *e;
  int found = 0;
  while (!found && (e = readdir(dir))) {
    size_t n = strlen(e->d_name);
    found = n > 11 && !strcmp(e->d_name + n - 11, ".solverstate");
  }
  closedir(dir);
  return found;
}

/* A job with nodes > 1: this slot runs node j->join_node (0: the worker that claimed the job, which
 * posts one join entry per other node and reports for the job). The nodes meet through the key
 * PREFIX:job:ID:rdzv:ATTEMPT (rdzv.h); the ranks of the other nodes only take part and vote on
 * stops. */
static int run_multinode(job_t *j, Distilld__DistillJob *job, const dd_distill_hooks *hooks, int *iter, int *stopped,
                         char *err, size_t errlen) {
  daemon_t *d = j->d;
  int node = j->join_node, n = job->n_device ? (int)job->n_device : 1;
  int per = d->threads / n > 0 ? d->threads / n : 1;
  if (node >= job->nodes)
    return dd_errorf(DD_EINVAL, err, errlen, "a join entry for node %d, but the job runs on %d nodes", node, job->nodes);
  char key[300];
  dd_key(key, sizeof key, d->cfg->key_prefix, DD_KEY_JOB_RDZV, j->id, j->attempt);
  const char *adv = d->cfg->advertise_host && d->cfg->advertise_host[0] ? d->cfg->advertise_host : NULL;
  dd_redis_rdzv z;
  dd_rendezvous rv;
  int r = dd_redis_rdzv_init(&z, &rv, d->cfg, d->password, key, node, job->nodes, job->rendezvous_timeout_s * 1000, adv,
                             err, errlen);
  if (!r && node == 0) r = dd_redis_rdzv_post_joins(&z, d->k_jobs, j->id, j->attempt, job->nodes, err, errlen);
  if (!r) {
    dlog(2, j->id, "%s (attempt %d): node %d of %d, %d rank%s on %s%s here; waiting up to %d s for the other nodes",
         job->name, j->attempt, node, job->nodes, n, n == 1 ? "" : "s", job->n_device ? job->device[0] : "cpu",
         n > 1 ? ", ..." : "", job->rendezvous_timeout_s);
    dd_distill_hooks h = node == 0 ? *hooks : (dd_distill_hooks){.ctx = j, .should_stop = h_stop};
    r = dd_distill_run_nodes(job, NULL, dd_devices_builtin(), &rv, n, per, &h, node == 0 && j->attempt > 1, NULL, NULL, NULL, iter, stopped,
                             err, errlen);
  }
  dd_redis_rdzv_close(&z);
  return r;
}

static void job_thread(void *arg) {
  job_t *j = arg;
  daemon_t *d = j->d;
  char err[4096] = "";
  int outcome = OUT_FAILED, iter = 0;
  Distilld__DistillJob *job = NULL;
  dd_backend *be = NULL;
  dd_distill *dist = NULL;
  snprintf(j->attempt_s, sizeof j->attempt_s, "%d", j->attempt);
  if (j->early_error[0]) {
    snprintf(err, sizeof err, "%s", j->early_error);
    goto done;
  }
  char fname[128];
  snprintf(fname, sizeof fname, "job %s", j->id);
  if (dd_text_parse((ProtobufCMessage **)&job, &distilld__distill_job__descriptor, j->text, j->text_len, fname, err, sizeof err))
    goto done;
  /* the job's device must be one of this worker's (none named: the worker's first) */
  const char *device = d->cfg->n_device ? d->cfg->device[0] : "cpu";
  for (size_t k = 0; k < job->n_device; k++) {
    int ok = d->cfg->n_device == 0 && !strcmp(job->device[k], "cpu");
    for (size_t i = 0; i < d->cfg->n_device; i++) ok |= !strcmp(job->device[k], d->cfg->device[i]);
    if (!ok) {
      snprintf(err, sizeof err, "device: \"%s\" is not one of worker %s's devices", job->device[k], d->worker);
      goto done;
    }
  }
  if (job->n_device == 1) device = job->device[0];
  if (dd_paths_check_job(&d->paths, job, err, sizeof err)) goto done;
  if (dd_job_validate(job, NULL, dd_devices_builtin(), err, sizeof err)) goto done;
  if (!j->join_node && j->attempt == 1 && has_snapshots(job->output_dir)) {
    snprintf(err, sizeof err,
             "output_dir: \"%s\" already holds snapshots of an earlier run; give the job an output_dir of its own",
             job->output_dir);
    goto done;
  }
  dd_distill_hooks hooks = {.ctx = j, .log = h_log, .progress = h_progress, .test = h_test, .teacher = h_teacher,
                            .snapshot = h_snapshot, .should_stop = h_stop, .started = h_started};
  snprintf(j->name, sizeof j->name, "%s", job->name);
  int r, stopped = 0;
  if (job->nodes > 1 || j->join_node) {
    r = run_multinode(j, job, &hooks, &iter, &stopped, err, sizeof err);
  } else if (job->n_device > 1) {
    /* data parallel: one rank per device entry, threads of this job (core/distill.h) */
    int n = (int)job->n_device, per = d->threads / n > 0 ? d->threads / n : 1;
    dlog(2, j->id, "%s (attempt %d): data parallel on %d ranks (%s, ...)", job->name, j->attempt, n, job->device[0]);
    r = dd_distill_run_ranks(job, NULL, dd_devices_builtin(), n, per, &hooks, j->attempt > 1, NULL, NULL, NULL, &iter, &stopped, err, sizeof err);
  } else {
    if (dd_backend_create(&be, device, d->threads, err, sizeof err)) goto done;
    dlog(2, j->id, "%s (attempt %d): %s", job->name, j->attempt, dd_backend_describe(be));
    if (dd_distill_create(&dist, job, NULL, be, &hooks, err, sizeof err)) goto done;
    int resumed = 0;
    if (j->attempt > 1 && dd_distill_resume(dist, &resumed, err, sizeof err)) goto done;
    r = dd_distill_run(dist, err, sizeof err);
    iter = dd_distill_iter(dist);
    /* a stop flag raised after the last iteration is no stop: the solver says whether it stopped */
    stopped = dd_distill_stopped(dist);
  }
  int stop = atomic_load(&j->stop);
  if (r == DD_EIO && job->nodes > 1 && !j->join_node && (stop == STOP_HANDBACK || stop == STOP_CANCEL)) {
    /* the nodes failed while this worker was stopping anyway (a rendezvous cut short by SIGTERM,
     * a node lost during a cancel): what was asked for, not a failure */
    dlog(1, j->id, "attempt %d: %s", j->attempt, err);
    outcome = stop == STOP_CANCEL ? OUT_CANCELLED : OUT_HANDBACK;
  } else if (r == DD_EIO && job->nodes > 1 && !j->join_node && j->attempt < DD_MULTINODE_ATTEMPTS && stop == STOP_NONE) {
    /* a node died, stopped answering or never came: the job goes back to the queue and resumes
     * from its last snapshot, up to DD_MULTINODE_ATTEMPTS attempts */
    char msg[4300];
    snprintf(msg, sizeof msg, "attempt %d failed: %s; handing the job back to resume from its last snapshot (attempt %d "
             "of at most %d)", j->attempt, err, j->attempt + 1, DD_MULTINODE_ATTEMPTS);
    h_log(j, 1, msg);
    outcome = OUT_HANDBACK;
  } else if (r)
    outcome = OUT_FAILED;
  else if (stop == STOP_LOST)
    outcome = OUT_LOST;
  else if (stopped && stop == STOP_CANCEL)
    outcome = OUT_CANCELLED;
  else if (stopped && stop == STOP_HANDBACK)
    outcome = OUT_HANDBACK;
  else if (stopped && job->nodes > 1)
    outcome = OUT_HANDBACK; /* another node stopped the job (its worker was stopped): back to the queue */
  else
    outcome = OUT_SUCCEEDED;
done:
  if (j->join_node) {
    /* node 0's worker reports for the job; this one logs and writes nothing */
    if (outcome == OUT_FAILED) dlog(0, j->id, "node %d failed: %s", j->join_node, err);
    else dlog(2, j->id, "node %d: done at iter %d", j->join_node, iter);
    outcome = OUT_LOST;
    goto cleanup;
  }
  if (outcome == OUT_FAILED) dlog(0, j->id, "failed: %s", err);
  else dlog(2, j->id, "%s at iter %d", outcome == OUT_SUCCEEDED ? "succeeded" : outcome == OUT_CANCELLED ? "cancelled" :
                                      outcome == OUT_HANDBACK ? "stopped: handing it back" : "lost its lease: stopped", iter);
cleanup:
  dd_distill_destroy(dist);
  dd_backend_destroy(be);
  if (job) distilld__distill_job__free_unpacked(job, NULL);
  done_arg a = {outcome, iter, outcome == OUT_FAILED ? err : NULL};
  /* the final item must get into the ring: wait for room (the loop drains it) */
  for (;;) {
    ring_item *it = ring_reserve(&d->ring, PRIO_STATE);
    if (it) {
      item_b b;
      ib_begin(&b, it, ITEM_DONE, (int)(j - d->slots));
      fill_done(&b, j, &a);
      it->kind = ITEM_DONE;
      atomic_store(&j->exited, 1);
      ring_commit(d, &d->ring, 1);
      break;
    }
    usleep(100 * 1000);
  }
}

/* ---- hiredis on libuv ------------------------------------------------------------------------------
 * Our own attachment rather than hiredis 0.14's adapters/libuv.h: that one ignores a poll error,
 * and libuv reports a refused connection (or a reset) as exactly that, so hiredis never learned
 * that a connect failed and the daemon waited forever. Here an error is handed to hiredis as an
 * event, hiredis tries the socket, finds the error and runs its disconnect path. */

typedef struct {
  redisAsyncContext *ctx;
  uv_poll_t poll;
  int events;
} rio_t;

static void rio_on_poll(uv_poll_t *h, int status, int events) {
  rio_t *p = h->data;
  if (!p->ctx) return;
  if (status < 0) {
    if (!(p->ctx->c.flags & REDIS_CONNECTED))
      redisAsyncHandleWrite(p->ctx);
    else
      redisAsyncHandleRead(p->ctx);
    return;
  }
  if (events & UV_READABLE) redisAsyncHandleRead(p->ctx);
  if (p->ctx && (events & UV_WRITABLE)) redisAsyncHandleWrite(p->ctx);
}

static void rio_update(rio_t *p, int add, int del) {
  p->events = (p->events | add) & ~del;
  if (p->events)
    uv_poll_start(&p->poll, p->events, rio_on_poll);
  else
    uv_poll_stop(&p->poll);
}
static void rio_add_read(void *pd) { rio_update(pd, UV_READABLE, 0); }
static void rio_del_read(void *pd) { rio_update(pd, 0, UV_READABLE); }
static void rio_add_write(void *pd) { rio_update(pd, UV_WRITABLE, 0); }
static void rio_del_write(void *pd) { rio_update(pd, 0, UV_WRITABLE); }
static void rio_closed(uv_handle_t *h) { free(h->data); }
static void rio_cleanup(void *pd) {
  rio_t *p = pd;
  p->ctx = NULL;
  uv_close((uv_handle_t *)&p->poll, rio_closed);
}

static int rio_attach(redisAsyncContext *ac, uv_loop_t *loop) {
  if (ac->ev.data) return REDIS_ERR;
  rio_t *p = calloc(1, sizeof *p);
  if (!p) return REDIS_ERR;
  if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
    free(p);
    return REDIS_ERR;
  }
  p->poll.data = p;
  p->ctx = ac;
  ac->ev.data = p;
  ac->ev.addRead = rio_add_read;
  ac->ev.delRead = rio_del_read;
  ac->ev.addWrite = rio_add_write;
  ac->ev.delWrite = rio_del_write;
  ac->ev.cleanup = rio_cleanup;
  return REDIS_OK;
}

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
    if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0)
      dlog(1, j->id, "another worker owns the job now; left it to that worker");
    else if (reply->type == REDIS_REPLY_STRING && strcmp(reply->str, "again"))
      dlog(2, j->id, "handed back as entry %s", reply->str);
    job_slot_free(d, slot);
    heartbeat(d);
    try_claim(d);
    maybe_exit(d);
  }
}

static const char *script_text(const char *arg) {
  if (arg[0] != '\001') return arg;
  if (!strcmp(arg, SCRIPT_REF_FINISH)) return LUA_FINISH;
  if (!strcmp(arg, SCRIPT_REF_HANDBACK)) return LUA_HANDBACK;
  return arg;
}

/* Sends every item not sent yet (each item's last command carries its sequence number). */
static void pump(daemon_t *d) {
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
      argv[n++] = "EVAL", argv[n++] = LUA_APPLY, argv[n++] = "1", argv[n++] = d->slots[it->slot].k_hash;
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
  if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 || reply->element[0]->type != REDIS_REPLY_STRING) {
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
  if (!strcmp(reply->element[0]->str, "final")) {
    dlog(2, j->id, "already %s: acknowledged without running", reply->element[1]->str);
    free(j->text);
    memset(j, 0, sizeof *j);
    try_claim(d);
    return;
  }
  /* SIGTERM came while the claim was on its way: the job stops before its first iteration and
   * goes straight back to the queue */
  if (d->draining) atomic_store(&j->stop, STOP_HANDBACK);
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
  const char *id = NULL, *text = NULL, *join = NULL, *attempt = NULL;
  size_t text_len = 0;
  if (f->type == REDIS_REPLY_ARRAY)
    for (size_t k = 0; k + 1 < f->elements; k += 2) {
      if (f->element[k]->type != REDIS_REPLY_STRING || f->element[k + 1]->type != REDIS_REPLY_STRING) continue;
      if (!strcmp(f->element[k]->str, "id")) id = f->element[k + 1]->str;
      if (!strcmp(f->element[k]->str, "job")) text = f->element[k + 1]->str, text_len = f->element[k + 1]->len;
      if (!strcmp(f->element[k]->str, "join")) join = f->element[k + 1]->str;
      if (!strcmp(f->element[k]->str, "attempt")) attempt = f->element[k + 1]->str;
    }
  if (join) {
    /* node K of a multi-node job: LUA_JOIN, not a claim of the job */
    int node = atoi(join), att = attempt ? atoi(attempt) : 0;
    if (!id || !dd_job_id_valid(id) || node < 1 || node > 1023 || att < 1) {
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
  if (id && dd_job_id_valid(id))
    snprintf(j->id, sizeof j->id, "%s", id);
  else {
    memcpy(j->id, j->entry, strlen(j->entry) + 1); /* an entry id is at most 41 characters */
    if (id)
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
  char k_q[160], k_r[160], k_c[160];
  dd_key(k_q, sizeof k_q, d->cfg->key_prefix, DD_KEY_STATE, "queued");
  dd_key(k_r, sizeof k_r, d->cfg->key_prefix, DD_KEY_STATE, "running");
  dd_key(k_c, sizeof k_c, d->cfg->key_prefix, DD_KEY_STATE, "cancelled");
  const char *argv[] = {"EVAL", LUA_CLAIM, "7", j->k_hash, d->k_jobs, j->k_events, d->k_index, k_q, k_r, k_c,
                        j->entry, j->id, j->owner, d->worker, now, j->text ? j->text : "", retention};
  size_t lens[17];
  for (int i = 0; i < 17; i++) lens[i] = strlen(argv[i]);
  if (j->text) lens[15] = j->text_len;
  d->claim_inflight = 1;
  redisAsyncCommandArgv(d->ac, on_claim_script, (void *)(intptr_t)slot, 17, argv, lens);
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
  if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0 && atomic_load(&j->stop) != STOP_LOST) {
    dlog(0, j->id, "lost the job's lease (another worker took it over): stopping without a snapshot");
    atomic_store(&j->stop, STOP_LOST);
  } else if (reply->type == REDIS_REPLY_ERROR) {
    dlog(1, j->id, "lease renewal: %s", reply->str);
  }
}

static void heartbeat(daemon_t *d) {
  if (!d->connected || !d->ac) return;
  char jobs[1024] = "", now[32], pid[16], maxj[16];
  size_t u = 0;
  for (int i = 0; i < d->n_slots && u < sizeof jobs; i++) {
    job_t *j = &d->slots[i];
    if (!j->used || !j->running) continue;
    u += (size_t)snprintf(jobs + u, sizeof jobs - u, "%s%s", u ? "," : "", j->id);
    if (j->join_node) continue; /* node 0's worker holds the job's lease */
    const char *argv[] = {"EVAL", LUA_RENEW, "2", j->k_hash, d->k_jobs, j->owner, j->entry, d->worker};
    size_t lens[8];
    for (int k = 0; k < 8; k++) lens[k] = strlen(argv[k]);
    redisAsyncCommandArgv(d->ac, on_renew, (void *)(intptr_t)i, 8, argv, lens);
  }
  snprintf(now, sizeof now, "%.3f", dd_now());
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

/* ---- entry point ----------------------------------------------------------------------------------- */

int dd_cmd_daemon(const char *config_path) {
  char err[4096];
  daemon_t *d = calloc(1, sizeof *d);
  if (!d) return 1;
  int status = 1;
  if (dd_dconfig_read(&d->cfg, config_path, err, sizeof err)) {
    dd_cli_error("%s", err);
    free(d);
    return 2;
  }
  const Distilld__DaemonConfig *c = d->cfg;
  g_log_level = (int)c->log_level;
  g_journal = getenv("JOURNAL_STREAM") != NULL;
  for (size_t i = 0; i < c->n_device; i++) {
    /* each device named must exist now: a worker that cannot use its GPU says so at start */
    dd_backend *probe = NULL;
    if (dd_backend_create(&probe, c->device[i], 1, err, sizeof err)) {
      dd_cli_error("%s: device: %s", config_path, err);
      goto out;
    }
    dd_backend_destroy(probe);
  }
  if (dd_dconfig_password(c, &d->password, err, sizeof err)) {
    dd_cli_error("%s: %s", config_path, err);
    goto out;
  }
  if (dd_paths_init(&d->paths, c->data_root, c->n_data_root, c->output_root, err, sizeof err)) {
    dd_cli_error("%s: %s", config_path, err);
    goto out;
  }
  if (gethostname(d->host, sizeof d->host - 1)) snprintf(d->host, sizeof d->host, "localhost");
  if (c->worker_name && c->worker_name[0])
    snprintf(d->worker, sizeof d->worker, "%s", c->worker_name);
  else {
    char h[48];
    snprintf(h, sizeof h, "%.40s", d->host);
    for (char *p = h; *p; p++)
      if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') || ('0' <= *p && *p <= '9') || *p == '-' || *p == '.')) *p = '_';
    snprintf(d->worker, sizeof d->worker, "%s-%d", h, (int)getpid());
  }
  {
    unsigned long long nonce = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&nonce, sizeof nonce, 1, f) != 1) nonce = (unsigned long long)dd_now() * 1000003ULL ^ (unsigned long long)getpid();
    if (f) fclose(f);
    snprintf(d->owner, sizeof d->owner, "%s#%016llx", d->worker, nonce);
  }
  d->n_slots = c->max_jobs > MAX_SLOTS ? MAX_SLOTS : c->max_jobs;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  d->threads = c->threads_per_job > 0 ? c->threads_per_job : (int)(cores > 0 ? cores : 1) / d->n_slots;
  if (d->threads < 1) d->threads = 1;
  dd_key(d->k_jobs, sizeof d->k_jobs, c->key_prefix, DD_KEY_JOBS);
  dd_key(d->k_index, sizeof d->k_index, c->key_prefix, DD_KEY_INDEX);
  dd_key(d->k_workers, sizeof d->k_workers, c->key_prefix, DD_KEY_WORKERS);
  dd_key(d->k_worker, sizeof d->k_worker, c->key_prefix, DD_KEY_WORKER, d->worker);
  d->ring.items = calloc(RING_CAP, sizeof *d->ring.items);
  if (!d->ring.items) {
    dd_cli_error("out of memory for the event buffer");
    goto out;
  }
  pthread_mutex_init(&d->ring.mu, NULL);
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
  status = d->exit_status;
  /* threads whose last item Redis never took (the drain timed out) have exited: reap them */
  for (int i = 0; i < d->n_slots; i++)
    if (d->slots[i].used && d->slots[i].thread_started) uv_thread_join(&d->slots[i].thread);
  uv_loop_close(d->loop);
  pthread_mutex_destroy(&d->ring.mu);
out:
  for (int i = 0; i < MAX_SLOTS; i++) free(d->slots[i].text);
  free(d->ring.items);
  dd_paths_free(&d->paths);
  free(d->password);
  distilld__daemon_config__free_unpacked(d->cfg, NULL);
  free(d);
  return status;
}
