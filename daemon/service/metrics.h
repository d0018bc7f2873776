/* The Prometheus metrics' snapshot (docs/monitoring.md): one table of the numbers the endpoint
 * serves (service/metrics_http.c), behind its own mutex.
 *
 * Only the loop writes it. It learns a job's numbers from the ring: every item a job thread
 * commits passes metrics_observe (called by the loop before it sends items and before it retires
 * one), which reads the HSET of the job's hash inside the item (progress, test, teacher, start),
 * so the endpoint shows exactly what Redis gets, and shows it during a Redis outage too; a job's
 * ITEM_DONE ends its series and counts its outcome. The loop's own events (a claim, a lease renewal,
 * a connection to Redis, its tick) update the rest. The HTTP thread copies the table under the lock
 * (metrics_copy) and formats the copy outside it, so neither the loop nor a training thread ever
 * waits on a client. With metrics_listen unset every function here returns at once. */
#ifndef DD_METRICS_H
#define DD_METRICS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "distill.pb-c.h"

#define MX_MAX_JOBS 64  /* = MAX_SLOTS (service/state.h) */
#define MX_MAX_TERMS 16 /* a progress item carries at most 16 loss terms (service/events.c) */
#define MX_NAME 64
#define MX_N_OUTCOMES 5 /* OUT_SUCCEEDED .. OUT_LOST (service/state.h) */

struct daemon;

typedef struct {
  char name[MX_NAME]; /* "loss", "ce_loss", "kd_loss", "hint0_loss", ... as in the job's hash */
  double value;
} mx_term;

/* One job slot's numbers, present while its job thread runs (`active`). */
typedef struct {
  int active, attempt;
  char id[72], name[128], device[128];
  int has_progress, has_test, has_test_acc, has_teacher;
  double iter, max_iter, epoch, lr, img_per_s, data_wait_s, eta_s, elapsed_s, data_errors;
  int n_terms;
  mx_term terms[MX_MAX_TERMS];
  double test_iter, test_acc, teacher_acc;
  long long renewals, dropped;
} mx_job;

typedef struct {
  char worker[72], devices[256]; /* devices: the config's, comma-separated ("cpu" when it names none) */
  int max_jobs, ring_capacity;
  double started_at; /* Unix seconds */
  int connected, draining;
  long long reconnects, ring_depth, ring_dropped;
  long long finished[MX_N_OUTCOMES]; /* jobs this worker ran to an end, by OUT_* */
  mx_job jobs[MX_MAX_JOBS];
} mx_data;

typedef struct {
  int enabled;    /* metrics_listen is set; written once, before any thread starts */
  pthread_mutex_t mu;
  mx_data data;   /* guarded by mu */
  uint64_t seen;  /* the loop's own: ring items observed so far */
  int ever_connected;
} mx_table;

/* Sets the table up from d's config and identity (call once, before the loop and any thread). */
void metrics_init(struct daemon *d);
void metrics_destroy(struct daemon *d);

/* The loop: reads every ring item committed since the last call (see above). */
void metrics_observe(struct daemon *d);
/* The loop's tick: Redis connected, draining, the ring's depth and drops, each job's drops. */
void metrics_refresh(struct daemon *d);
/* The loop: slot `slot`'s job thread is about to start (its id and attempt are set). */
void metrics_job_begin(struct daemon *d, int slot);
/* The loop: slot `slot`'s lease renewal was accepted. */
void metrics_job_renewed(struct daemon *d, int slot);
/* The loop: the connection to Redis is up (again: the second and later count as reconnects). */
void metrics_connected(struct daemon *d);

/* A job thread, before it runs the job: the job's devices (its own list, or `dflt` when it names
 * none), comma-separated, into out (the slot's mx_device, which the loop reads once the job's
 * start item is in the ring). */
void metrics_job_device(char *out, size_t len, const Distilld__DistillJob *job, const char *dflt);

/* The HTTP thread: a copy of the table's data, taken under the lock. */
void metrics_copy(mx_table *t, mx_data *out);

#endif
