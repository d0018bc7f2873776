/* The distillation trainer: one DistillJob (proto/distill.proto) from validation to the last
 * snapshot. The student's ImageData (or Data) layers become Input layers fed by data pipelines the trainer
 * owns, so every batch goes to the frozen teacher first (same data, bit for bit) and its logits
 * (and hint blobs) into the student, whose net gains the distillation terms:
 *   loss = (1 - alpha) * CE(student, label) + alpha * KDLoss(student, teacher; T)
 *          + sum_i weight_i * hint_i (FitNets: 1x1 conv regressor + L2; attention transfer),
 * each reported separately. Without a teacher the same path trains the student alone (how a
 * teacher itself is trained). The teacher's checksum is verified at every snapshot and at the end.
 *
 * Progress, test results, snapshots and warnings reach the caller through dd_distill_hooks (the
 * CLI prints them; the daemon publishes them to Redis); every metric also goes, one JSON object
 * per line, to OUTPUT_DIR/metrics.jsonl. */
#ifndef DD_DISTILL_H
#define DD_DISTILL_H

#include <stddef.h>
#include <stdint.h>

#include "base/backend.h"
#include "base/device.h"
#include "base/diag.h"
#include "distill.pb-c.h"
#include "train/solver.h"

/* The most loss terms and test outputs a hook reports. */
#define DD_DISTILL_MAX_TERMS 24

/* The names hooks report are final: they are the metric fields of metrics.jsonl and the daemon's
 * Redis keys, so no caller renames them. */
typedef struct {
  int iter, max_iter, epoch;
  double lr, loss, img_per_s, data_wait_ms, eta_s, elapsed_s;
  int n_terms; /* the student's loss terms: "ce_loss" (its own loss output), "kd_loss", "hint0_loss", ... */
  const char *const *term_names;
  const double *terms;
  int64_t data_errors;
} dd_distill_progress;

typedef struct {
  int iter;
  int n; /* test outputs: accuracy, loss, ... averaged over test_iter batches */
  const char *const *names;  /* as the TEST net names them (metrics.jsonl, the "test" event) */
  const char *const *fields; /* the job's summary fields: "test_acc" for accuracy, else "test_NAME" */
  const double *values;
} dd_distill_test;

typedef struct {
  void *ctx;
  /* level: 0 error, 1 warning, 2 info */
  void (*log)(void *ctx, int level, const char *msg);
  void (*progress)(void *ctx, const dd_distill_progress *p);
  void (*test)(void *ctx, const dd_distill_test *t);
  /* the teacher's accuracy on the TEST data, measured once before training */
  void (*teacher)(void *ctx, double accuracy, int batches);
  void (*snapshot)(void *ctx, int iter, const char *model, const char *state);
  /* once, as dd_distill_run begins: the iteration training starts from (the resumed snapshot's,
   * or 0) and the teacher's checksum (0 without a teacher) */
  void (*started)(void *ctx, int start_iter, uint64_t teacher_checksum);
  /* polled between iterations: 0 go on, DD_STOP_SNAPSHOT (1) stop with a final snapshot,
   * DD_STOP_ABORT (2) stop writing nothing (core/solver.h) */
  int (*should_stop)(void *ctx);
} dd_distill_hooks;

typedef struct dd_distill dd_distill;

/* Builds everything for a job: the teacher (frozen, folded), the student with its distillation
 * terms, the solver, the data pipelines. Checks what needs the nets (the logits blobs exist, the
 * class counts agree, hint shapes fit), naming the field. `threads` sizes the CPU backend's pool
 * when `be` is NULL (then the trainer makes its own backend). */
int dd_distill_create(dd_distill **out, const Distilld__DistillJob *job, const char *base_dir, dd_backend *be,
                      const dd_distill_hooks *hooks, char *err, size_t errlen);

/* One rank of a data-parallel job (core/collective.h): like dd_distill_create, on this rank's
 * backend, with this rank's share of every TRAIN and TEST batch (the prototxt's batch divided by
 * comm->size, which must divide it) and its slice of the data stream. Rank 0 reports through
 * `hooks` and writes the metrics file and the snapshots; the solver sums gradients across ranks,
 * averages displayed losses and test results, and agrees on stops. Every rank must be created
 * from the same job with the same seed (job->seed or the solver's random_seed set). comm NULL or
 * of size 1: the single-rank trainer. dd_distill_run_ranks runs a whole job this way. */
struct dd_comm;
int dd_distill_create_rank(dd_distill **out, const Distilld__DistillJob *job, const char *base_dir, dd_backend *be,
                           const dd_distill_hooks *hooks, struct dd_comm *comm, char *err, size_t errlen);

/* A whole job on `n_ranks` ranks, one thread each: rank k on the job's device[k] ("cpu": a CPU
 * backend of `threads_per_rank` workers, 0: the cores divided by n_ranks; "cuda:N": that GPU) through
 * the CPU collective or NCCL (core/collective.h): create,
 * resume when `resume` (*resumed_iter gets the iteration), run. Rank 0's hooks report. On return
 * *student_acc, *teacher_acc, *iter and *stopped hold rank 0's results (any may be NULL). An error
 * on any rank fails the job; the message is the first rank's own failure, not the others' "the
 * group was aborted". */
int dd_distill_run_ranks(const Distilld__DistillJob *job, const char *base_dir, const dd_devices *devices, int n_ranks, int threads_per_rank,
                         const dd_distill_hooks *hooks, int resume, int *resumed_iter, double *student_acc,
                         double *teacher_acc, int *iter, int *stopped, char *err, size_t errlen);

/* The same job spread over rv->nodes processes (usually daemons on several machines), `n_ranks`
 * of its ranks in this one (the same on every node; global rank = rv->node * n_ranks + k): the
 * ranks meet through the rendezvous (core/collective.h), then rank 0 alone resumes from its
 * snapshot (output_dir need only be readable on node 0; the others only create it) and sends its
 * state to every rank, and every rank checks that its teacher's checksum equals rank 0's. Hooks report on node 0 only (rank
 * 0); every rank calls should_stop, and a stop on any rank stops all. rv NULL: dd_distill_run_ranks. */
struct dd_rendezvous;
int dd_distill_run_nodes(const Distilld__DistillJob *job, const char *base_dir, const dd_devices *devices,
                         const struct dd_rendezvous *rv,
                         int n_ranks, int threads_per_rank, const dd_distill_hooks *hooks, int resume,
                         int *resumed_iter, double *student_acc, double *teacher_acc, int *iter, int *stopped, char *err,
                         size_t errlen);

/* Resumes from the newest .solverstate under OUTPUT_DIR/snapshots, if any. Sets *resumed_iter (0
 * when there was nothing to resume). */
int dd_distill_resume(dd_distill *d, int *resumed_iter, char *err, size_t errlen);

/* Trains to max_iter (or until should_stop), testing and snapshotting as the solver says, and
 * writes a final snapshot. Returns 0 or an error (a failed data source, a teacher whose checksum
 * changed, a failed write). */
int dd_distill_run(dd_distill *d, char *err, size_t errlen);

/* Runs the student's TEST pass now (as at a test_interval) and reports it. */
int dd_distill_test_now(dd_distill *d, char *err, size_t errlen);

/* The last test accuracy ("accuracy" output of the student's TEST net; -1 if never tested), the
 * teacher's accuracy (-1 if not measured), and the iteration count. */
double dd_distill_student_accuracy(const dd_distill *d);
double dd_distill_teacher_accuracy(const dd_distill *d);
int dd_distill_iter(const dd_distill *d);
/* Whether the last dd_distill_run stopped early (should_stop): 0, DD_STOP_SNAPSHOT or DD_STOP_ABORT. */
int dd_distill_stopped(const dd_distill *d);
/* The teacher checksum taken at load (0 without a teacher). */
uint64_t dd_distill_teacher_checksum(const dd_distill *d);

void dd_distill_destroy(dd_distill *d);

#endif
