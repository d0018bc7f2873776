/* A job, however it is placed (see job.h): validation, placement, resume, run. */
#define _POSIX_C_SOURCE 200809L
#include "train/job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "comm/collective.h"
#include "train/distill_internal.h"
#include "train/solver.h"

/* ---- running ------------------------------------------------------------------------------------- */

/* Refuses an output directory that holds a snapshot of an earlier run (DD_START_NEW_OUTPUT). */
static int check_new_output(const Distilld__DistillJob *job, const dd_job_opts *o, char *err, size_t errlen) {
  char *out = dd_distill_path(o->base_dir, job->output_dir);
  if (!out) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/snapshots", out);
  free(out);
  int r = dd_path_check(o->policy, DD_PATH_OUTPUT, "output_dir", dir, err, errlen);
  if (!r && dd_snapshot_find(dir, NULL, NULL, NULL, 0))
    r = dd_errorf(DD_EINVAL, err, errlen,
                  "output_dir: \"%s\" already holds snapshots of an earlier run; give the job an output_dir of its own",
                  job->output_dir);
  return r;
}

static void report_placement(const dd_job_opts *o, const dd_job_placement *p) {
  if (o->placed) o->placed(o->hooks.ctx, p);
}

/* DD_ESTOPPED when the caller's should_stop asks for a stop before `what` (training has not begun:
 * nothing is written), else 0. */
static int stop_before(const dd_job_opts *o, const char *what, char *err, size_t errlen) {
  if (!o->hooks.should_stop || !o->hooks.should_stop(o->hooks.ctx)) return 0;
  return dd_errorf(DD_ESTOPPED, err, errlen, "stopped on request before %s", what);
}

/* One device, no collective. */
static int run_single(const Distilld__DistillJob *job, const dd_job_opts *o, dd_job_result *res, char *err,
                      size_t errlen) {
  const char *device = o->device                      ? o->device
                       : job->n_device                ? job->device[0]
                       : o->default_device            ? o->default_device
                                                      : "cpu";
  dd_backend *be = NULL;
  dd_distill *d = NULL;
  res->failed_in = DD_JOB_FAILED_DEVICE;
  int r = o->devices->backend_create(&be, device, o->threads, err, errlen);
  if (r) return r;
  res->failed_in = DD_JOB_FAILED_SETUP;
  report_placement(o, &(dd_job_placement){.nodes = 1, .ranks = 1, .device = device, .backend = dd_backend_describe(be)});
  res->ranks = 1;
  r = dd_distill_build(&d, job, o->base_dir, be, &o->hooks, o->policy, NULL, err, errlen);
  if (!r && o->start == DD_START_RESUME && !(r = stop_before(o, "reading the snapshot", err, errlen))) {
    res->failed_in = DD_JOB_FAILED_RESUME;
    r = dd_distill_resume(d, &res->resumed_iter, err, errlen);
  }
  if (!r && !(r = stop_before(o, "starting the data and training", err, errlen))) {
    res->failed_in = DD_JOB_FAILED_RUN;
    r = dd_distill_run(d, err, errlen);
  }
  if (d) {
    res->iter = dd_distill_iter(d);
    /* a stop flag raised after the last iteration is no stop: the solver says whether it stopped */
    res->stopped = dd_distill_stopped(d);
    res->student_acc = dd_distill_student_accuracy(d);
    res->teacher_acc = dd_distill_teacher_accuracy(d);
  }
  dd_distill_destroy(d);
  dd_backend_destroy(be);
  return r;
}

/* Ranks here, one per device of the job; through `rv` on several nodes. */
static int run_ranks(const Distilld__DistillJob *job, const dd_job_opts *o, const dd_rendezvous *rv,
                     dd_job_result *res, char *err, size_t errlen) {
  int n = job->n_device ? (int)job->n_device : 1;
  int per = o->threads_per_rank;
  if (per <= 0 && o->threads > 0) per = o->threads / n > 0 ? o->threads / n : 1;
  report_placement(o, &(dd_job_placement){.nodes = rv ? rv->nodes : 1, .node = rv ? rv->node : 0, .ranks = n,
                                          .device = job->n_device ? job->device[0] : "cpu"});
  /* on several nodes rank 0 alone reads the snapshot and sends its state to every rank */
  int r = dd_distill_run_group(job, o->base_dir, o->devices, o->policy, rv, n, per, &o->hooks,
                               o->start == DD_START_RESUME, res, err, errlen);
  res->failed_in = DD_JOB_FAILED_RUN;
  return r;
}

int dd_job_run(const Distilld__DistillJob *job, const dd_job_opts *o, dd_job_result *res_out, char *err,
               size_t errlen) {
  dd_job_result res = {.student_acc = -1, .teacher_acc = -1, .failed_in = DD_JOB_FAILED_SETUP};
  int r = dd_job_validate_policy(job, o->base_dir, o->devices, o->policy, err, errlen);
  if (!r && o->start == DD_START_NEW_OUTPUT) r = check_new_output(job, o, err, errlen);
  if (!r && (job->nodes > 1 || o->node > 0)) {
    const dd_rendezvous *rv = NULL;
    if (!o->open_rendezvous)
      r = dd_errorf(DD_EINVAL, err, errlen, "nodes: the job runs on %d nodes, but nothing here opens a rendezvous",
                    job->nodes);
    else if (!(r = o->open_rendezvous(o->hooks.ctx, job, &rv, err, errlen)))
      r = run_ranks(job, o, rv, &res, err, errlen);
    if (o->open_rendezvous && o->close_rendezvous) o->close_rendezvous(o->hooks.ctx);
  } else if (!r && !o->device && job->n_device > 1) {
    r = run_ranks(job, o, NULL, &res, err, errlen);
  } else if (!r) {
    r = run_single(job, o, &res, err, errlen);
  }
  /* stopped before training began: nothing was written (an abort, in the solver's terms) */
  if (r == DD_ESTOPPED) res.stopped = DD_STOP_ABORT;
  if (res_out) *res_out = res;
  return r;
}
