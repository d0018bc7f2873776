/* Event formatting (service/events.h): ring items for the job hash, its metrics and events streams,
 * and the final-state scripts. The loss terms' and test fields' names come final from core
 * (train/distill.h); nothing is renamed here. Runs on the job's thread; allocates nothing. */
#define _GNU_SOURCE
#include "service/events.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/keys.h"
#include "service/scripts.h"
#include "train/distill.h"

/* Items dropped since the count last went into an item (job_t.dropped_reported moves on; the
 * caller puts it back should its item not be published). */
static long long dropped_delta(job_t *j) {
  long long now = atomic_load(&j->dropped), delta = now - j->dropped_reported;
  j->dropped_reported = now;
  return delta;
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

void fill_progress(item_b *b, job_t *j, const void *arg) {
  const dd_distill_progress *p = arg;
  hset_head(b, j);
  ib_arg(b, "iter"), ib_argf(b, "%d", p->iter);
  ib_arg(b, "max_iter"), ib_argf(b, "%d", p->max_iter);
  ib_arg(b, "epoch"), ib_argf(b, "%d", p->epoch);
  ib_arg(b, "lr"), ib_num(b, p->lr);
  ib_arg(b, "loss"), ib_num(b, p->loss);
  for (int i = 0; i < p->n_terms && i < 16; i++) ib_arg(b, p->term_names[i]), ib_num(b, p->terms[i]);
  ib_arg(b, "img_per_s"), ib_num(b, p->img_per_s);
  ib_arg(b, "data_wait_ms"), ib_num(b, p->data_wait_ms);
  ib_arg(b, "eta_s"), ib_num(b, p->eta_s);
  ib_arg(b, "elapsed_s"), ib_num(b, p->elapsed_s);
  ib_arg(b, "data_errors"), ib_argf(b, "%lld", (long long)p->data_errors);
  ib_arg(b, "updated_at"), ib_argf(b, "%.3f", dd_now());
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
  for (int i = 0; i < p->n_terms && i < 16; i++) ib_arg(b, p->term_names[i]), ib_num(b, p->terms[i]);
  ib_arg(b, "img_per_s"), ib_num(b, p->img_per_s);
  ib_arg(b, "data_wait_ms"), ib_num(b, p->data_wait_ms);
  ib_arg(b, "worker"), ib_arg(b, j->d->worker);
  ib_arg(b, "attempt"), ib_arg(b, j->attempt_s);
  /* entries dropped since the last count Redis got: added, so the count covers every attempt
   * (the apply script's sequence number keeps it from being added twice) */
  long long delta = dropped_delta(j);
  if (delta) {
    ib_cmd(b);
    ib_arg(b, "HINCRBY"), ib_arg(b, j->k_hash), ib_arg(b, "metrics_dropped"), ib_argf(b, "%lld", delta);
  }
}

void fill_test(item_b *b, job_t *j, const void *arg) {
  const dd_distill_test *t = arg;
  hset_head(b, j);
  ib_arg(b, "test_iter"), ib_argf(b, "%d", t->iter);
  for (int i = 0; i < t->n && i < 24; i++) ib_arg(b, t->fields[i]), ib_num(b, t->values[i]);
  ib_arg(b, "updated_at"), ib_argf(b, "%.3f", dd_now());
  xadd_events_head(b, j, "test");
  ib_arg(b, "iter"), ib_argf(b, "%d", t->iter);
  for (int i = 0; i < t->n && i < 24; i++) ib_arg(b, t->names[i]), ib_num(b, t->values[i]);
}

void fill_teacher(item_b *b, job_t *j, const void *arg) {
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

void fill_snapshot(item_b *b, job_t *j, const void *arg) {
  const snap_arg *s = arg;
  hset_head(b, j);
  ib_arg(b, "last_snapshot"), ib_arg(b, s->model);
  ib_arg(b, "last_snapshot_iter"), ib_argf(b, "%d", s->iter);
  xadd_events_head(b, j, "snapshot");
  ib_arg(b, "iter"), ib_argf(b, "%d", s->iter);
  ib_arg(b, "model"), ib_arg(b, s->model);
  ib_arg(b, "state"), ib_arg(b, s->state);
}

void fill_log(item_b *b, job_t *j, const void *arg) {
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

void fill_start(item_b *b, job_t *j, const void *arg) {
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

void fill_done(item_b *b, job_t *j, const void *arg) {
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
    ib_argf(b, "%lld", dropped_delta(j));
    ib_arg(b, a->error ? a->error : "handed back");
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
  ib_argf(b, "%lld", dropped_delta(j));
}
