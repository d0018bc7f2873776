/* The job thread (service/job_thread.h): from a claimed slot to the job's final item in the ring. */
#define _GNU_SOURCE
#include "service/job_thread.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "common/dconfig.h"
#include "common/keys.h"
#include "common/rdzv.h"
#include "devices/devices.h"
#include "format/textformat.h"
#include "service/backfill.h"
#include "service/events.h"
#include "service/log.h"
#include "service/metrics.h"
#include "service/paths.h"
#include "service/ring.h"
#include "service/state.h"
#include "train/job.h"

/* One item for job j, filled by `fill` from `arg`; dropped (and counted) when the ring is past the
 * limit for `prio`. */
static void push_state_event(job_t *j, int prio, void (*fill)(item_b *, job_t *, const void *), const void *arg) {
  daemon_t *d = j->d;
  ring_item *it = ring_reserve(&d->ring, prio);
  if (!it) {
    atomic_fetch_add(&j->dropped, 1);
    atomic_fetch_add(&d->ring_dropped, 1);
    return;
  }
  item_b b;
  ib_begin(&b, it, ITEM_CMDS, (int)(j - d->slots));
  it->seq = ++j->next_seq;
  long long reported = j->dropped_reported;
  fill(&b, j, arg);
  if (!b.ok) {
    dlog(1, j->id, "an event did not fit its buffer and was not written to Redis");
    j->dropped_reported = reported; /* the count it carried goes with the next item */
    atomic_fetch_add(&j->dropped, 1);
    atomic_fetch_add(&d->ring_dropped, 1);
    j->next_seq--;
  }
  ring_commit(d, &d->ring, b.ok);
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
  dlog(3, j->id, "iter %d/%d loss %.4g %.1f img/s", p->iter, p->max_iter, p->loss, p->img_per_s);
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
  /* a resumed attempt publishes what an attempt before trained but never got into Redis (its
   * worker lost the lease while cut off): the metrics entries between the stream's last entry and
   * this attempt's resume point, from metrics.jsonl, before the first iteration of its own */
  if (j->attempt > 1 && !j->join_node && start_iter > 0 && j->output_dir && j->backfill_after + 1 < start_iter) {
    backfill_result br;
    char err[1024] = "", msg[1400];
    if (backfill_run(j, j->output_dir, start_iter, &br, err, sizeof err)) {
      snprintf(msg, sizeof msg, "metrics of iterations %d-%d are not in Redis and could not be backfilled: %s",
               j->backfill_after + 1, start_iter - 1, err);
      h_log(j, 1, msg);
    } else if (br.to >= br.from) {
      snprintf(msg, sizeof msg, "backfilled %d metrics entr%s of iterations %d-%d (the attempt before trained them but they "
               "never reached Redis) from %s/metrics.jsonl%s", br.sent, br.sent == 1 ? "y" : "ies", br.from, br.to,
               j->output_dir, br.sent < br.found ? "; the job stopped before all were queued" : "");
      h_log(j, 2, msg);
    }
  }
}

static int h_stop(void *ctx) {
  job_t *j = ctx;
  int s = atomic_load(&j->stop);
  return s == STOP_NONE ? 0 : s == STOP_LOST ? DD_STOP_ABORT : DD_STOP_SNAPSHOT;
}

/* A job with nodes > 1: this slot runs node j->join_node (0: the worker that claimed the job, which
 * posts one join entry per other node and reports for the job). The nodes meet through the key
 * PREFIX:job:ID:rdzv:ATTEMPT (rdzv.h); the ranks of the other nodes only take part and vote on
 * stops. dd_job_run opens it after validating the job. */
static int h_open_rendezvous(void *ctx, const Distilld__DistillJob *job, const dd_rendezvous **rv, char *err,
                             size_t errlen) {
  job_t *j = ctx;
  daemon_t *d = j->d;
  int node = j->join_node, n = job->n_device ? (int)job->n_device : 1;
  if (node >= job->nodes)
    return dd_errorf(DD_EINVAL, err, errlen, "a join entry for node %d, but the job runs on %d nodes", node, job->nodes);
  char key[300];
  dd_key(key, sizeof key, d->cfg->key_prefix, DD_KEY_JOB_RDZV, j->id, j->attempt);
  const char *adv = d->cfg->advertise_host && d->cfg->advertise_host[0] ? d->cfg->advertise_host : NULL;
  int r = dd_redis_rdzv_init(&j->rdzv, &j->rv, d->cfg, d->password, key, node, job->nodes,
                             job->rendezvous_timeout_s * 1000, adv, err, errlen);
  if (r) return r;
  j->rdzv_open = 1;
  if (node == 0 && (r = dd_redis_rdzv_post_joins(&j->rdzv, d->k_jobs, j->id, j->attempt, job->nodes, err, errlen)))
    return r;
  dlog(2, j->id, "%s (attempt %d): node %d of %d, %d rank%s on %s%s here; waiting up to %d s for the other nodes",
       job->name, j->attempt, node, job->nodes, n, n == 1 ? "" : "s", job->n_device ? job->device[0] : "cpu",
       n > 1 ? ", ..." : "", job->rendezvous_timeout_s);
  *rv = &j->rv;
  return 0;
}

static void h_close_rendezvous(void *ctx) {
  job_t *j = ctx;
  if (j->rdzv_open) dd_redis_rdzv_close(&j->rdzv);
  j->rdzv_open = 0;
}

/* One device or ranks here (several nodes log in h_open_rendezvous). */
static void h_placed(void *ctx, const dd_job_placement *p) {
  job_t *j = ctx;
  if (p->backend)
    dlog(2, j->id, "%s (attempt %d): %s", j->name, j->attempt, p->backend);
  else if (p->nodes == 1)
    dlog(2, j->id, "%s (attempt %d): data parallel on %d ranks (%s, ...)", j->name, j->attempt, p->ranks, p->device);
}

/* The job's device must be one of this worker's (a worker naming none has "cpu"), the names read
 * by dd_device_parse (dd_dconfig_has_device). */
static int check_worker_devices(const daemon_t *d, const Distilld__DistillJob *job, char *err, size_t errlen) {
  for (size_t k = 0; k < job->n_device; k++)
    if (!dd_dconfig_has_device(d->cfg, job->device[k]))
      return dd_errorf(DD_EINVAL, err, errlen, "device: \"%s\" is not one of worker %s's devices", job->device[k], d->worker);
  return 0;
}

/* ---- shares of the worker's devices (max_jobs_per_device) ---------------------------------------- */

/* Takes a share of each of the job's devices (as indexes into the worker's list, without repeats,
 * in idx; *n_idx of them): its own, or where it names none the worker's device that runs the
 * fewest of its jobs now. With max_jobs_per_device set, waits while any of them runs that many,
 * saying so once in the job's events; returns DD_ESTOPPED (err says why) when the job is stopped
 * while waiting, else 0. */
static int acquire_devices(job_t *j, const Distilld__DistillJob *job, int *idx, int *n_idx, char *err, size_t errlen) {
  daemon_t *d = j->d;
  int limit = d->cfg->max_jobs_per_device, logged = 0, nd = d->cfg->n_device ? (int)d->cfg->n_device : 1;
  pthread_mutex_lock(&d->dev_lock);
  for (;;) {
    int n = 0, full = -1;
    if (job->n_device) {
      for (size_t k = 0; k < job->n_device; k++) {
        int x = dd_dconfig_device_index(d->cfg, job->device[k]), seen = 0;
        for (int q = 0; q < n; q++) seen |= idx[q] == x;
        if (x >= 0 && !seen) idx[n++] = x; /* check_worker_devices has refused names not the worker's */
      }
    } else {
      int best = 0;
      for (int i = 1; i < nd; i++)
        if (d->dev_running[i] < d->dev_running[best]) best = i;
      idx[n++] = best;
    }
    for (int q = 0; q < n && full < 0; q++)
      if (limit > 0 && d->dev_running[idx[q]] >= limit) full = idx[q];
    if (full < 0) {
      for (int q = 0; q < n; q++) d->dev_running[idx[q]]++;
      *n_idx = n;
      break;
    }
    if (atomic_load(&j->stop) != STOP_NONE) {
      pthread_mutex_unlock(&d->dev_lock);
      return dd_errorf(DD_ESTOPPED, err, errlen, "stopped while waiting for a share of a device");
    }
    if (!logged) {
      char msg[256];
      snprintf(msg, sizeof msg, "waiting: %s already runs %d of this worker's jobs (max_jobs_per_device %d)",
               d->cfg->n_device ? d->cfg->device[full] : "cpu", d->dev_running[full], limit);
      pthread_mutex_unlock(&d->dev_lock);
      h_log(j, 2, msg);
      pthread_mutex_lock(&d->dev_lock);
      logged = 1;
      continue;
    }
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_nsec += 250 * 1000000L; /* wake to look at the stop flag */
    if (t.tv_nsec >= 1000000000L) t.tv_sec++, t.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&d->dev_cond, &d->dev_lock, &t);
  }
  pthread_mutex_unlock(&d->dev_lock);
  if (logged) h_log(j, 2, "a device share is free: starting");
  return 0;
}

static void release_devices(daemon_t *d, const int *idx, int n_idx) {
  pthread_mutex_lock(&d->dev_lock);
  for (int q = 0; q < n_idx; q++) d->dev_running[idx[q]]--;
  pthread_cond_broadcast(&d->dev_cond);
  pthread_mutex_unlock(&d->dev_lock);
}

void job_thread(void *arg) {
  job_t *j = arg;
  daemon_t *d = j->d;
  char err[4096] = "";
  int outcome = OUT_FAILED, iter = 0;
  char handback_why[1024] = "";
  Distilld__DistillJob *job = NULL;
  snprintf(j->attempt_s, sizeof j->attempt_s, "%d", j->attempt);
  if (j->early_error[0]) {
    snprintf(err, sizeof err, "%s", j->early_error);
    goto done;
  }
  char fname[128];
  snprintf(fname, sizeof fname, "job %s", j->id);
  if (dd_text_parse((ProtobufCMessage **)&job, &distilld__distill_job__descriptor, j->text, j->text_len, fname, err, sizeof err))
    goto done;
  if (check_worker_devices(d, job, err, sizeof err)) goto done;
  snprintf(j->name, sizeof j->name, "%s", job->name);
  /* the worker's memory limit caps the job's own */
  int64_t cap = d->cfg->max_job_memory_mb;
  if (cap > 0 && (job->max_memory_mb == 0 || job->max_memory_mb > cap)) {
    job->has_max_memory_mb = 1;
    job->max_memory_mb = cap;
  }
  dd_path_policy policy = dd_paths_policy(&d->paths);
  /* the first attempt starts afresh in an output_dir of its own; later ones resume */
  dd_job_opts o = {.devices = dd_devices_builtin(), .default_device = d->cfg->n_device ? d->cfg->device[0] : "cpu",
                   .threads = d->threads, .policy = &policy, .node = j->join_node,
                   .start = j->join_node ? DD_START_SCRATCH : j->attempt > 1 ? DD_START_RESUME : DD_START_NEW_OUTPUT,
                   .placed = h_placed, .open_rendezvous = h_open_rendezvous, .close_rendezvous = h_close_rendezvous,
                   .hooks = {.ctx = j, .log = h_log, .progress = h_progress, .test = h_test, .teacher = h_teacher,
                             .snapshot = h_snapshot, .should_stop = h_stop, .started = h_started}};
  dd_job_result res;
  memset(&res, 0, sizeof res);
  int dev_idx[DD_DCONFIG_MAX_DEVICES], n_dev = 0;
  int r = acquire_devices(j, job, dev_idx, &n_dev, err, sizeof err);
  if (!r) {
    if (!job->n_device && d->cfg->n_device) o.default_device = d->cfg->device[dev_idx[0]];
    metrics_job_device(j->mx_device, sizeof j->mx_device, job, o.default_device);
    j->output_dir = job->output_dir; /* for the backfill (h_started); job outlives the run */
    r = dd_job_run(job, &o, &res, err, sizeof err);
    j->output_dir = NULL;
    release_devices(d, dev_idx, n_dev);
  }
  int stopped = res.stopped;
  iter = res.iter;
  int stop = atomic_load(&j->stop);
  if (r == DD_ESTOPPED && stop != STOP_NONE) {
    /* stopped while the job was being built (before its first iteration): a stop like any other,
     * no failure of the job (a cancel ends it cancelled, SIGTERM hands it back) */
    dlog(2, j->id, "%s", err);
    r = 0;
    stopped = 1;
  }
  if (r == DD_EIO && job->nodes > 1 && !j->join_node && (stop == STOP_HANDBACK || stop == STOP_CANCEL)) {
    /* the nodes failed while this worker was stopping anyway (a rendezvous cut short by SIGTERM,
     * a node lost during a cancel): what was asked for, not a failure */
    dlog(1, j->id, "attempt %d: %s", j->attempt, err);
    outcome = stop == STOP_CANCEL ? OUT_CANCELLED : OUT_HANDBACK;
  } else if (r == DD_EIO && job->nodes > 1 && !j->join_node && j->attempt < d->cfg->max_attempts && stop == STOP_NONE) {
    /* a node died, stopped answering or never came: the job goes back to the queue and resumes
     * from its last snapshot, up to max_attempts attempts (the claim counts them) */
    char msg[4300];
    snprintf(msg, sizeof msg, "attempt %d failed: %s; handing the job back to resume from its last snapshot (attempt %d "
             "of at most %d)", j->attempt, err, j->attempt + 1, d->cfg->max_attempts);
    h_log(j, 1, msg);
    snprintf(handback_why, sizeof handback_why, "failed in the collectives: %.900s", err);
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
  j->mx_outcome = outcome; /* read by the metrics at the job's ITEM_DONE (a node's own outcome) */
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
  if (job) distilld__distill_job__free_unpacked(job, NULL);
  if (outcome == OUT_HANDBACK && !handback_why[0])
    snprintf(handback_why, sizeof handback_why, "handed back by worker %s at iteration %d (%s)", d->worker, iter,
             atomic_load(&j->stop) == STOP_HANDBACK ? "the worker was stopped" : "another node's worker was stopped");
  done_arg a = {outcome, iter, outcome == OUT_FAILED ? err : outcome == OUT_HANDBACK ? handback_why : NULL};
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
