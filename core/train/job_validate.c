/* Reading and validating a job (train/job.h): the checks that need no net, each naming its field. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/dd_error.h"
#include "format/textformat.h"
#include "train/distill_internal.h"
#include "train/job.h"
#include "train/solver_check.h"

int dd_job_read(Distilld__DistillJob **out, const char *path, char *err, size_t errlen) {
  return dd_text_parse_file((ProtobufCMessage **)out, &distilld__distill_job__descriptor, path, err, errlen);
}

/* ---- validation ---------------------------------------------------------------------------------- */

/* A file the job names must exist (after the policy allowed it). */
static int need_file(const char *base, const dd_path_policy *policy, const char *field, const char *p, char *err,
                     size_t errlen) {
  char *full = dd_distill_path(base, p);
  if (!full) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  struct stat st;
  int r = dd_path_check(policy, DD_PATH_READ, field, full, err, errlen);
  if (r)
    ;
  else if (stat(full, &st) != 0)
    r = dd_errorf(DD_EIO, err, errlen, "%s: cannot open \"%s\": %s", field, full, strerror(errno));
  else if (!S_ISREG(st.st_mode))
    r = dd_errorf(DD_EIO, err, errlen, "%s: \"%s\" is not a regular file", field, full);
  free(full);
  return r;
}

int dd_job_validate_policy(const Distilld__DistillJob *job, const char *base, const dd_devices *devices,
                           const dd_path_policy *policy, char *err, size_t errlen) {
  int r;
  if (!job->name || !job->name[0]) return dd_errorf(DD_EINVAL, err, errlen, "name: a job needs a name");
  for (const char *p = job->name; *p; p++)
    if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.'))
      return dd_errorf(DD_EINVAL, err, errlen, "name: \"%s\" may only hold letters, digits, '-', '_' and '.'", job->name);
  if (!job->student || !job->student->net) return dd_errorf(DD_EINVAL, err, errlen, "student.net: the student's train_val prototxt is required");
  if ((r = need_file(base, policy, "student.net", job->student->net, err, errlen))) return r;
  for (size_t i = 0; i < job->student->n_weights; i++) {
    char f[64];
    snprintf(f, sizeof f, "student.weights[%zu]", i);
    if ((r = need_file(base, policy, f, job->student->weights[i], err, errlen))) return r;
  }
  if (!job->output_dir || !job->output_dir[0]) return dd_errorf(DD_EINVAL, err, errlen, "output_dir: where snapshots and metrics go is required");
  if (!!job->solver == !!(job->solver_file && job->solver_file[0]))
    return dd_errorf(DD_EINVAL, err, errlen, "solver / solver_file: give exactly one (an inline solver { } or a path)");
  if (job->solver_file && (r = need_file(base, policy, "solver_file", job->solver_file, err, errlen))) return r;
  if (job->solver && (r = dd_solver_check_values(job->solver, "solver.", err, errlen))) return r;
  if (!(job->allreduce_bucket_mb > 0))
    return dd_errorf(DD_EINVAL, err, errlen, "allreduce_bucket_mb must be positive, got %g", job->allreduce_bucket_mb);
  if (job->nodes < 1 || job->nodes > 1024)
    return dd_errorf(DD_EINVAL, err, errlen, "nodes must be 1 to 1024, got %d", job->nodes);
  /* every node seeds its data order and fillers itself: from a clock each would pick another */
  if (job->nodes > 1 && job->seed < 0 && !(job->solver && job->solver->has_random_seed && job->solver->random_seed >= 0))
    return dd_errorf(DD_EINVAL, err, errlen,
                     "seed: a job on %d nodes needs a fixed seed, the same on every node: set seed: N in the job (or "
                     "random_seed in its inline solver)", job->nodes);
  if (job->collective_timeout_s < 1 || job->collective_timeout_s > 86400)
    return dd_errorf(DD_EINVAL, err, errlen, "collective_timeout_s must be 1 to 86400, got %d", job->collective_timeout_s);
  if (job->rendezvous_timeout_s < 1 || job->rendezvous_timeout_s > 86400)
    return dd_errorf(DD_EINVAL, err, errlen, "rendezvous_timeout_s must be 1 to 86400, got %d", job->rendezvous_timeout_s);
  if (job->max_memory_mb < 0 || job->max_memory_mb > ((int64_t)1 << 30))
    return dd_errorf(DD_EINVAL, err, errlen, "max_memory_mb must be 0 (no limit) to 1073741824, got %lld",
                     (long long)job->max_memory_mb);
  if ((job->n_device ? job->n_device : 1) * (size_t)job->nodes > 4096)
    return dd_errorf(DD_EINVAL, err, errlen, "nodes x device: %d x %zu ranks is more than 4096", job->nodes,
                     job->n_device ? job->n_device : 1);
  for (size_t i = 0; i < job->n_device; i++) {
    char what[32];
    int kind;
    snprintf(what, sizeof what, "device[%zu]", i);
    if ((r = dd_device_parse(job->device[i], &kind, NULL, what, err, errlen))) return r;
    if (kind == DD_DEVICE_CUDA && devices && !devices->have_cuda)
      return dd_errorf(DD_EINVAL, err, errlen, "%s: \"%s\": this build of distilld has no CUDA backend", what,
                       job->device[i]);
  }
  if (job->teacher) {
    if (!job->teacher->net) return dd_errorf(DD_EINVAL, err, errlen, "teacher.net: the teacher's deploy prototxt is required");
    if ((r = need_file(base, policy, "teacher.net", job->teacher->net, err, errlen))) return r;
    if (job->teacher->n_weights == 0)
      return dd_errorf(DD_EINVAL, err, errlen, "teacher.weights: a teacher needs its trained weights (.caffemodel)");
    for (size_t i = 0; i < job->teacher->n_weights; i++) {
      char f[64];
      snprintf(f, sizeof f, "teacher.weights[%zu]", i);
      if ((r = need_file(base, policy, f, job->teacher->weights[i], err, errlen))) return r;
    }
  }
  const Distilld__DistillSettings *ds = job->distill;
  if (ds) {
    if (!(ds->temperature > 0) || !isfinite(ds->temperature))
      return dd_errorf(DD_EINVAL, err, errlen, "distill.temperature must be > 0, got %g", ds->temperature);
    if (!(ds->alpha >= 0 && ds->alpha <= 1))
      return dd_errorf(DD_EINVAL, err, errlen, "distill.alpha must be in [0, 1], got %g", ds->alpha);
    if (ds->n_hint > MAX_HINTS) return dd_errorf(DD_EINVAL, err, errlen, "distill.hint: at most %d hints", MAX_HINTS);
    for (size_t i = 0; i < ds->n_hint; i++) {
      const Distilld__HintSpec *h = ds->hint[i];
      if (!h->teacher_blob || !h->student_blob)
        return dd_errorf(DD_EINVAL, err, errlen, "distill.hint[%zu]: teacher_blob and student_blob are required", i);
      if (!(h->weight >= 0) || !isfinite(h->weight))
        return dd_errorf(DD_EINVAL, err, errlen, "distill.hint[%zu].weight must be >= 0, got %g", i, h->weight);
    }
    if (!job->teacher && (ds->n_hint || ds->teacher_logits))
      return dd_errorf(DD_EINVAL, err, errlen, "distill: teacher_logits and hints need a teacher { }");
  }
  return 0;
}


int dd_job_validate(const Distilld__DistillJob *job, const char *base_dir, const dd_devices *devices, char *err,
                    size_t errlen) {
  return dd_job_validate_policy(job, base_dir, devices, NULL, err, errlen);
}

