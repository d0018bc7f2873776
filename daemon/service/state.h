/* The daemon's state, shared by the service's files: the daemon (daemon_t: the config, the worker's
 * identity, the Redis connection, the timers, the ring) and its job slots (job_t). The loop
 * (service/loop.c) owns both; a job's thread (service/job_thread.c) reads the config and its own
 * slot, and talks back only through the ring and the slot's atomics (`stop`, `exited`, `dropped`). */
#ifndef DD_STATE_H
#define DD_STATE_H

#include <hiredis/async.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/dconfig.h"
#include "common/rdzv.h"
#include "distill.pb-c.h"
#include "service/metrics.h"
#include "service/paths.h"
#include "service/ring.h"

/* At most this many jobs at once (max_jobs is capped to it). */
#define MAX_SLOTS 64

/* STOP_*: what the loop asks of a running job (job_t.stop). OUT_*: how a job's thread ended. */
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
  int backfill_after;     /* the claim's answer: the iter of the metrics stream's last entry (-1: none) */
  char prev_worker[72];   /* the claim's answer: the worker of the attempt before ('' for the first) */
  int join_node; /* > 0: this slot runs node join_node of a job whose node 0 runs elsewhere */
  uv_thread_t thread;
  atomic_int stop;     /* STOP_*: set by the loop, read by the job's thread each iteration */
  atomic_int exited;   /* the job's thread has pushed its last item */
  int cancel_inflight;
  atomic_llong dropped;
  /* used by the job thread only */
  char attempt_s[16];
  uint64_t next_seq;
  long long dropped_reported; /* of `dropped`, what an item has carried to Redis so far */
  char name[128];
  const char *output_dir; /* the job's output_dir while it runs (the parsed job's) */
  uint64_t checksum;
  dd_redis_rdzv rdzv; /* a multi-node job's rendezvous, while open */
  dd_rendezvous rv;
  int rdzv_open;
  /* for the metrics (service/metrics.c), written by the job thread before the ring item the loop
   * reads them at: the job's devices (before its start item), its OUT_* (before its ITEM_DONE) */
  char mx_device[128];
  int mx_outcome;
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
  /* jobs running per device of the worker (index: cfg->device's, 0 = "cpu" when it names none),
   * for max_jobs_per_device; guarded by dev_lock, dev_cond signalled when one ends */
  pthread_mutex_t dev_lock;
  pthread_cond_t dev_cond;
  int dev_running[DD_DCONFIG_MAX_DEVICES];
  /* the Prometheus endpoint (metrics_listen): its snapshot, written by the loop, and its server */
  mx_table mx;
  struct metrics_http *http;
  atomic_llong ring_dropped; /* ring items dropped (the ring was full), every job together */
} daemon_t;

#endif
