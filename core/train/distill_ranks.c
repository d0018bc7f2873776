/* A whole job on several ranks (threads of this process, one per device) and, through a
 * rendezvous, on several nodes (see distill.h). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "format/caffe_io.h"
#include "train/distill_internal.h"
#include "train/job.h"
#include "train/solver.h"

typedef struct {
  const Distilld__DistillJob *job;
  const char *base_dir;
  const dd_distill_hooks *hooks;
  const dd_devices *devices;
  const dd_path_policy *policy;
  const char *device;
  dd_comm *comm;
  int threads, resume;
  int rc, resumed, iter, stopped;
  double student_acc, teacher_acc;
  char err[2048];
} rank_run;

/* Every rank starts from rank 0's state (weights, solver history, iteration) and holds the same
 * teacher (its checksum equal to rank 0's: on several machines, the same weight files). */
int dd_distill_sync_ranks(dd_distill *d, char *err, size_t errlen) {
  int r = dd_solver_sync_from_root(d->solver, err, errlen);
  if (r || !d->has_teacher) return r;
  int q = 0;
  if ((r = dd_solver_differs(d->solver, d->teacher.checksum, &q, err, errlen))) return r;
  if (q > 0)
    return dd_errorf(DD_ECORRUPT, err, errlen,
                     "teacher: rank %d loaded a teacher whose checksum differs from rank 0's (%s%016llx): every node "
                     "must hold the same teacher net and weights",
                     q, d->rank == 0 ? "" : "this rank's: ", (unsigned long long)d->teacher.checksum);
  return 0;
}

static void *rank_main(void *arg) {
  rank_run *rr = arg;
  dd_backend *be = NULL;
  dd_distill *d = NULL;
  char e0[1024];
  rr->rc = rr->devices->backend_create(&be, rr->device, rr->threads, e0, sizeof e0);
  if (!rr->rc) rr->rc = dd_comm_bind(rr->comm, be, e0, sizeof e0);
  if (rr->rc) {
    dd_errorf(rr->rc, rr->err, sizeof rr->err, "rank %d: %s", rr->comm->rank, e0);
    rr->comm->ops->abort(rr->comm, rr->err);
    dd_backend_destroy(be);
    return NULL;
  }
  rr->rc = dd_distill_build(&d, rr->job, rr->base_dir, be, rr->hooks, rr->policy, rr->comm, rr->err, sizeof rr->err);
  /* every rank builds the same nets from the same job: one that fails tells the others */
  if (rr->rc) rr->comm->ops->abort(rr->comm, rr->err);
  /* rank 0 alone reads the snapshot: the others get its state below */
  if (!rr->rc && rr->resume && rr->comm->rank == 0) {
    rr->rc = dd_distill_resume(d, &rr->resumed, rr->err, sizeof rr->err);
    if (rr->rc) rr->comm->ops->abort(rr->comm, rr->err);
  }
  if (!rr->rc) {
    /* all ranks built: a barrier, so that nobody's first collective times out on a slow setup */
    char e[512];
    if (rr->comm->ops->barrier(rr->comm, e, sizeof e)) rr->rc = dd_errorf(DD_EIO, rr->err, sizeof rr->err, "%s", e);
  }
  if (!rr->rc) {
    rr->rc = dd_distill_sync_ranks(d, rr->err, sizeof rr->err);
    if (rr->rc) rr->comm->ops->abort(rr->comm, rr->err);
  }
  if (!rr->rc) {
    rr->rc = dd_distill_run(d, rr->err, sizeof rr->err);
    if (rr->rc) rr->comm->ops->abort(rr->comm, rr->err);
  }
  if (d) {
    rr->iter = dd_distill_iter(d);
    rr->stopped = dd_distill_stopped(d);
    rr->student_acc = dd_distill_student_accuracy(d);
    rr->teacher_acc = dd_distill_teacher_accuracy(d);
  }
  dd_distill_destroy(d);
  dd_backend_destroy(be);
  return NULL;
}

int dd_distill_run_group(const Distilld__DistillJob *job_in, const char *base_dir, const dd_devices *devices,
                         const dd_path_policy *policy, const dd_rendezvous *rv, int n_ranks, int threads_per_rank,
                         const dd_distill_hooks *hooks, int resume, dd_job_result *res, char *err, size_t errlen) {
  *res = (dd_job_result){.student_acc = -1, .teacher_acc = -1, .ranks = n_ranks * (rv ? rv->nodes : 1)};
  if (n_ranks < 1 || n_ranks > 64) return dd_errorf(DD_EINVAL, err, errlen, "device: %d ranks (1 to 64)", n_ranks);
  /* one seed for every rank: the replicas must start from the same weights */
  Distilld__DistillJob *job = (Distilld__DistillJob *)dd_proto_copy(&job_in->base);
  if (!job) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  if (job->seed < 0) {
    const Caffe__SolverParameter *sp = job->solver;
    job->seed = sp && sp->random_seed >= 0 ? sp->random_seed : (int64_t)time(NULL);
  }
  if (threads_per_rank <= 0) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    threads_per_rank = cores > n_ranks ? (int)(cores / n_ranks) : 1;
  }
  dd_comm *comms[64] = {0};
  rank_run *rr = calloc((size_t)n_ranks, sizeof *rr);
  pthread_t *th = calloc((size_t)n_ranks, sizeof *th);
  int r = 0;
  if (!rr || !th) {
    r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
    goto out;
  }
  /* the job's devices, one per rank ("cpu" when the job names none) */
  const char *devs[64];
  for (int k = 0; k < n_ranks; k++) devs[k] = (size_t)k < job->n_device ? job->device[k] : "cpu";
  if ((r = devices->comm_group_create(comms, n_ranks, devs, rv, job->collective_timeout_s * 1000, err, errlen))) goto out;
  int started = 0;
  for (int k = 0; k < n_ranks; k++) {
    rr[k] = (rank_run){.job = job, .base_dir = base_dir, .hooks = hooks, .devices = devices, .policy = policy,
                       .device = devs[k], .comm = comms[k],
                       .threads = threads_per_rank,
                       .resume = resume, .student_acc = -1, .teacher_acc = -1};
    if (pthread_create(&th[k], NULL, rank_main, &rr[k])) {
      comms[0]->ops->abort(comms[0], "cannot start a rank's thread");
      r = dd_errorf(DD_ENOMEM, err, errlen, "cannot start rank %d's thread", k);
      break;
    }
    started++;
  }
  for (int k = 0; k < started; k++) pthread_join(th[k], NULL);
  if (!r && started == n_ranks) {
    /* the first rank that failed on its own, not because another aborted the group */
    int first = -1;
    for (int k = 0; k < n_ranks && first < 0; k++)
      if (rr[k].rc && !strstr(rr[k].err, "aborted") && !strstr(rr[k].err, "data parallel:")) first = k;
    for (int k = 0; k < n_ranks && first < 0; k++)
      if (rr[k].rc) first = k;
    if (first >= 0) r = dd_errorf(rr[first].rc, err, errlen, "%s", rr[first].err);
    res->resumed_iter = rr[0].resumed;
    res->student_acc = rr[0].student_acc;
    res->teacher_acc = rr[0].teacher_acc;
    res->iter = rr[0].iter;
    res->stopped = rr[0].stopped;
  }
out:
  if (comms[0]) dd_comm_group_destroy(comms, n_ranks);
  free(rr);
  free(th);
  distilld__distill_job__free_unpacked(job, NULL);
  return r;
}

int dd_distill_run_ranks(const Distilld__DistillJob *job, const char *base_dir, const dd_devices *devices, int n_ranks,
                         int threads_per_rank, const dd_distill_hooks *hooks, int resume, int *resumed_iter,
                         double *student_acc, double *teacher_acc, int *iter, int *stopped, char *err, size_t errlen) {
  return dd_distill_run_nodes(job, base_dir, devices, NULL, n_ranks, threads_per_rank, hooks, resume, resumed_iter,
                              student_acc, teacher_acc, iter, stopped, err, errlen);
}

int dd_distill_run_nodes(const Distilld__DistillJob *job, const char *base_dir, const dd_devices *devices,
                         const dd_rendezvous *rv, int n_ranks, int threads_per_rank, const dd_distill_hooks *hooks,
                         int resume, int *resumed_iter, double *student_acc, double *teacher_acc, int *iter,
                         int *stopped, char *err, size_t errlen) {
  dd_job_result res;
  int r = dd_job_validate(job, base_dir, NULL, err, errlen);
  if (r) return r;
  r = dd_distill_run_group(job, base_dir, devices, NULL, rv, n_ranks, threads_per_rank, hooks, resume, &res, err, errlen);
  if (resumed_iter) *resumed_iter = res.resumed_iter;
  if (student_acc) *student_acc = res.student_acc;
  if (teacher_acc) *teacher_acc = res.teacher_acc;
  if (iter) *iter = res.iter;
  if (stopped) *stopped = res.stopped;
  return r;
}
