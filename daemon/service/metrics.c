/* The Prometheus metrics' snapshot (service/metrics.h): how the loop keeps it. A job's numbers are
 * read from the HSET commands of its ring items, field by field, under the names docs/redis.md
 * gives the job's hash; nothing here is told about a loss term by name: in a progress item (the
 * HSET that has `iter`) every field that is not one of the progress fields below is a loss term. */
#define _GNU_SOURCE
#include "service/metrics.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/keys.h"
#include "service/ring.h"
#include "service/state.h"

_Static_assert(MX_MAX_JOBS == MAX_SLOTS, "a snapshot per job slot");
_Static_assert(OUT_LOST == MX_N_OUTCOMES - 1, "an outcome count per OUT_*");

void metrics_init(daemon_t *d) {
  mx_table *t = &d->mx;
  const Distilld__DaemonConfig *c = d->cfg;
  t->enabled = c->metrics_listen && c->metrics_listen[0];
  if (!t->enabled) return;
  pthread_mutex_init(&t->mu, NULL);
  mx_data *m = &t->data;
  snprintf(m->worker, sizeof m->worker, "%s", d->worker);
  snprintf(m->devices, sizeof m->devices, "cpu");
  size_t u = 0;
  for (size_t i = 0; i < c->n_device && u < sizeof m->devices; i++)
    u += (size_t)snprintf(m->devices + u, sizeof m->devices - u, "%s%s", i ? "," : "", c->device[i]);
  m->max_jobs = d->n_slots;
  m->ring_capacity = RING_CAP;
  m->started_at = dd_now();
}

void metrics_destroy(daemon_t *d) {
  if (d->mx.enabled) pthread_mutex_destroy(&d->mx.mu);
}

/* ---- reading ring items (the loop, holding t->mu) ------------------------------------------------ */

/* src into dst[size], cut to fit */
static void copy_str(char *dst, size_t size, const char *src) {
  size_t n = strnlen(src, size - 1);
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* A field of a progress item: where it goes (scale: data_wait_ms becomes seconds). */
static double *progress_field(mx_job *m, const char *f, double *scale) {
  static const struct {
    const char *name;
    size_t off;
    double scale;
  } map[] = {
      {"iter", offsetof(mx_job, iter), 1},         {"max_iter", offsetof(mx_job, max_iter), 1},
      {"epoch", offsetof(mx_job, epoch), 1},       {"lr", offsetof(mx_job, lr), 1},
      {"img_per_s", offsetof(mx_job, img_per_s), 1}, {"data_wait_ms", offsetof(mx_job, data_wait_s), 1e-3},
      {"eta_s", offsetof(mx_job, eta_s), 1},       {"elapsed_s", offsetof(mx_job, elapsed_s), 1},
      {"data_errors", offsetof(mx_job, data_errors), 1},
  };
  for (size_t i = 0; i < sizeof map / sizeof *map; i++)
    if (!strcmp(f, map[i].name)) {
      *scale = map[i].scale;
      return (double *)((char *)m + map[i].off);
    }
  return NULL;
}

/* HSET KEY f1 v1 f2 v2 ...: the pairs (kv, n of them counted singly) of job j's hash. */
static void observe_hset(mx_job *m, const job_t *j, const char *const *kv, int n) {
  int progress = 0;
  for (int i = 0; i + 1 < n; i += 2) progress |= !strcmp(kv[i], "iter");
  if (progress) {
    m->has_progress = 1;
    m->n_terms = 0;
  }
  for (int i = 0; i + 1 < n; i += 2) {
    const char *f = kv[i], *v = kv[i + 1];
    double x = strtod(v, NULL), scale = 1, *dst;
    if (progress) {
      if (!strcmp(f, "updated_at")) continue;
      if ((dst = progress_field(m, f, &scale))) {
        *dst = x * scale;
      } else if (m->n_terms < MX_MAX_TERMS) { /* loss, ce_loss, kd_loss, hint0_loss, ... */
        copy_str(m->terms[m->n_terms].name, MX_NAME, f);
        m->terms[m->n_terms++].value = x;
      }
    } else if (!strcmp(f, "test_iter")) {
      m->has_test = 1, m->test_iter = x;
    } else if (!strcmp(f, "test_acc")) {
      m->has_test_acc = 1, m->test_acc = x;
    } else if (!strcmp(f, "teacher_acc")) {
      m->has_teacher = 1, m->teacher_acc = x;
    } else if (!strcmp(f, "name")) {
      /* the start item: the job thread wrote mx_device before it (the ring's lock orders them) */
      copy_str(m->name, sizeof m->name, v);
      copy_str(m->device, sizeof m->device, j->mx_device);
    }
  }
}

static void observe_item(daemon_t *d, const ring_item *it) {
  if (it->slot < 0 || it->slot >= MX_MAX_JOBS) return;
  mx_job *m = &d->mx.data.jobs[it->slot];
  const job_t *j = &d->slots[it->slot];
  if (!m->active) return;
  if (it->kind == ITEM_DONE) {
    int o = j->mx_outcome >= 0 && j->mx_outcome < MX_N_OUTCOMES ? j->mx_outcome : OUT_FAILED;
    d->mx.data.finished[o]++;
    m->active = 0;
    return;
  }
  if (it->kind != ITEM_CMDS) return; /* a backfill's records are an earlier attempt's iterations */
  const char *p = it->buf, *end = it->buf + it->used;
  const char *args[CMD_MAX_ARGS];
  for (int c = 0; c < it->n_cmds && c < ITEM_MAX_CMDS; c++) {
    int n = 0;
    for (int a = 0; a < it->n_args[c] && a < CMD_MAX_ARGS && p < end; a++) {
      args[n++] = p;
      p += strnlen(p, (size_t)(end - p)) + 1;
    }
    if (n >= 4 && !strcmp(args[0], "HSET") && !strcmp(args[1], j->k_hash)) observe_hset(m, j, args + 2, n - 2);
  }
}

void metrics_observe(daemon_t *d) {
  mx_table *t = &d->mx;
  if (!t->enabled) return;
  pthread_mutex_lock(&d->ring.mu);
  uint64_t head = d->ring.head, tail = d->ring.tail;
  pthread_mutex_unlock(&d->ring.mu);
  /* items between head and tail are stable: job threads never touch them, and the loop retires
   * one only after this has read it */
  if (t->seen < head) t->seen = head;
  if (t->seen >= tail) return;
  pthread_mutex_lock(&t->mu);
  for (; t->seen < tail; t->seen++) observe_item(d, &d->ring.items[t->seen % RING_CAP]);
  pthread_mutex_unlock(&t->mu);
}

/* ---- the loop's own events ------------------------------------------------------------------------ */

void metrics_refresh(daemon_t *d) {
  mx_table *t = &d->mx;
  if (!t->enabled) return;
  pthread_mutex_lock(&d->ring.mu);
  long long depth = (long long)(d->ring.tail - d->ring.head);
  pthread_mutex_unlock(&d->ring.mu);
  pthread_mutex_lock(&t->mu);
  t->data.connected = d->connected;
  t->data.draining = d->draining;
  t->data.ring_depth = depth;
  t->data.ring_dropped = atomic_load(&d->ring_dropped);
  for (int i = 0; i < d->n_slots && i < MX_MAX_JOBS; i++)
    if (t->data.jobs[i].active) t->data.jobs[i].dropped = atomic_load(&d->slots[i].dropped);
  pthread_mutex_unlock(&t->mu);
}

void metrics_job_begin(daemon_t *d, int slot) {
  mx_table *t = &d->mx;
  if (!t->enabled || slot < 0 || slot >= MX_MAX_JOBS) return;
  const job_t *j = &d->slots[slot];
  pthread_mutex_lock(&t->mu);
  mx_job *m = &t->data.jobs[slot];
  memset(m, 0, sizeof *m);
  m->active = 1;
  m->attempt = j->attempt;
  copy_str(m->id, sizeof m->id, j->id);
  pthread_mutex_unlock(&t->mu);
}

void metrics_job_renewed(daemon_t *d, int slot) {
  mx_table *t = &d->mx;
  if (!t->enabled || slot < 0 || slot >= MX_MAX_JOBS) return;
  pthread_mutex_lock(&t->mu);
  if (t->data.jobs[slot].active) t->data.jobs[slot].renewals++;
  pthread_mutex_unlock(&t->mu);
}

void metrics_connected(daemon_t *d) {
  mx_table *t = &d->mx;
  if (!t->enabled) return;
  pthread_mutex_lock(&t->mu);
  if (t->ever_connected) t->data.reconnects++;
  t->data.connected = 1;
  pthread_mutex_unlock(&t->mu);
  t->ever_connected = 1;
}

/* ---- the job thread and the HTTP thread ------------------------------------------------------------ */

void metrics_job_device(char *out, size_t len, const Distilld__DistillJob *job, const char *dflt) {
  size_t u = 0;
  out[0] = '\0';
  for (size_t k = 0; k < job->n_device && u < len; k++)
    u += (size_t)snprintf(out + u, len - u, "%s%s", k ? "," : "", job->device[k]);
  if (!job->n_device) snprintf(out, len, "%s", dflt ? dflt : "cpu");
}

void metrics_copy(mx_table *t, mx_data *out) {
  pthread_mutex_lock(&t->mu);
  memcpy(out, &t->data, sizeof *out);
  pthread_mutex_unlock(&t->mu);
}
