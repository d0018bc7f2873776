/* The trainer's own state, shared by its files (core/train/distill*.c only):
 *   distill_build.c  the named steps that build a trainer from a job;
 *   distill.c        running it: the data feed, the teacher's forward, metrics, resume;
 *   distill_ranks.c  a job on several ranks and nodes;
 *   job_validate.c   the job's own checks; job.c the entry point (train/job.h). */
#ifndef DD_DISTILL_INTERNAL_H
#define DD_DISTILL_INTERNAL_H

#include <stdio.h>

#include "base/path_policy.h"
#include "comm/collective.h"
#include "data/data.h"
#include "train/distill.h"
#include "train/job.h"
#include "train/teacher.h"

#define MAX_HINTS 8

struct dd_distill {
  Distilld__DistillJob *job; /* owned copy */
  char *base_dir, *out_dir, *snap_prefix;
  int out_fd, snap_fd; /* OUTPUT_DIR and its snapshots/, held open for the job (-1: not yet) */
  dd_backend *be;
  int own_be;
  dd_distill_hooks hooks;
  dd_path_policy policy; /* check NULL: everything allowed */
  /* teacher: one net per batch size (TRAIN, TEST), sharing parameters */
  int has_teacher;
  dd_teacher teacher;
  dd_net *teacher_test;
  char *teacher_input, *teacher_logits;
  /* student */
  Caffe__NetParameter *student_param; /* after surgery */
  Caffe__SolverParameter *solver_param;
  dd_solver *solver;
  char *student_logits;
  char *data_top[2][2]; /* [phase][0 data, 1 label] */
  Caffe__LayerParameter *data_layer[2]; /* the original ImageData or Data layers, per phase */
  int batch[2];
  dd_data *src[2];
  int n_hints;
  char *hint_teacher_blob[MAX_HINTS], *hint_input[MAX_HINTS];
  float *labels_dev; /* TEST batch labels for the teacher's accuracy */
  /* metrics */
  FILE *metrics;
  double teacher_acc, student_acc;
  int teacher_precision; /* DD_PRECISION_*: the teacher's TEST twin follows it once measured in FP32 */
  int last_test_iter;
  int failed;
  char fail_msg[1024];
  int64_t train_size;
  /* data parallel: rank `rank` of `size` (1: a single rank, comm NULL) */
  dd_comm *comm;
  int rank, size;
  int global_batch[2]; /* the batch the prototxt asks for; batch[] is this rank's share */
};

/* dd_job_validate with a path policy asked for each file it checks (job_validate.c). */
int dd_job_validate_policy(const Distilld__DistillJob *job, const char *base_dir, const dd_devices *devices,
                           const dd_path_policy *policy, char *err, size_t errlen);

/* BASE/P (P itself when absolute or BASE is NULL); malloc'd, NULL when out of memory. */
char *dd_distill_path(const char *base, const char *p);
/* A message to the job's log hook (rank 0 only for warnings and info). level 0 error, 1 warning, 2 info. */
void dd_distill_log(struct dd_distill *d, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Builds a trainer from a job that dd_job_validate accepted (distill_build.c): the steps in order,
 * each naming the field it fails on. */
int dd_distill_build(dd_distill **out, const Distilld__DistillJob *job, const char *base_dir, dd_backend *be,
                     const dd_distill_hooks *hooks, const dd_path_policy *policy, dd_comm *comm, char *err,
                     size_t errlen);

/* The solver's callbacks (distill.c), which dd_distill_build installs. */
void dd_distill_solver_hooks(struct dd_distill *d, dd_solver_hooks *h);

/* The teacher and the student must start from rank 0's state on every rank (distill_ranks.c). */
int dd_distill_sync_ranks(dd_distill *d, char *err, size_t errlen);

/* A validated job on `n_ranks` ranks here (and rv's other nodes): dd_distill_run_nodes without its
 * validation, with a path policy; `res` gets rank 0's outcome (distill_ranks.c). */
int dd_distill_run_group(const Distilld__DistillJob *job, const char *base_dir, const dd_devices *devices,
                         const dd_path_policy *policy, const struct dd_rendezvous *rv, int n_ranks,
                         int threads_per_rank, const dd_distill_hooks *hooks, int resume, dd_job_result *res,
                         char *err, size_t errlen);

#endif
