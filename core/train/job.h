/* A job, however it is placed: the one entry point the daemon and `distilld train --job` call.
 *
 * dd_job_run validates the job once, picks its placement (one device; ranks on this machine, one
 * per device the job names; or several nodes meeting through a rendezvous the caller opens), finds
 * the newest snapshot when the job resumes, builds the trainer and runs it. Every file is opened
 * by core, after asking the caller's path policy (base/path_policy.h). Progress, tests, snapshots
 * and logs reach the caller through dd_distill_hooks with their final names (train/distill.h). */
#ifndef DD_JOB_H
#define DD_JOB_H

#include <stddef.h>

#include "base/device.h"
#include "base/path_policy.h"
#include "distill.pb-c.h"
#include "train/distill.h"

/* Reads a text-format DistillJob file. */
int dd_job_read(Distilld__DistillJob **out, const char *path, char *err, size_t errlen);

/* Checks a job without building anything heavy: required fields, ranges (temperature > 0, alpha
 * in [0, 1], hint weights >= 0), files that must exist, exactly one solver source, device names
 * (a "cuda:N" device needs a registry with CUDA; `devices` NULL skips that check). Errors name the
 * field ("distill.alpha must be in [0, 1], got 1.5"). Relative paths resolve against `base_dir`
 * (NULL: the current directory). Returns 0, or DD_EINVAL / DD_EIO with the message. */
int dd_job_validate(const Distilld__DistillJob *job, const char *base_dir, const dd_devices *devices, char *err,
                    size_t errlen);

/* Where training starts. */
typedef enum {
  DD_START_SCRATCH = 0, /* from the job's initial weights, whatever the output directory holds */
  DD_START_RESUME,      /* from the newest snapshot of the job in OUTPUT_DIR/snapshots, if any */
  DD_START_NEW_OUTPUT   /* from scratch, refusing an output directory that holds snapshots already */
} dd_job_start;

/* How the job was placed, reported once before anything is built. */
typedef struct {
  int nodes;           /* 1, or the job's nodes */
  int node;            /* this process's node */
  int ranks;           /* ranks in this process (1: a single device, no collective) */
  const char *device;  /* the device of rank 0 here */
  const char *backend; /* a single device: its backend's description; NULL for ranks */
} dd_job_placement;

typedef struct {
  const char *base_dir;    /* relative paths of the job resolve here (NULL: the current directory) */
  const dd_devices *devices; /* the device registry (core/devices/devices.h: dd_devices_builtin()) */
  const char *device;      /* run on this one device instead of the job's list (the CLI's --device) */
  const char *default_device; /* the device of a job that names none (NULL: "cpu") */
  int threads;             /* a single CPU device: its workers (0: one per core) */
  int threads_per_rank;    /* ranks: CPU workers per rank (0: threads / ranks, or cores / ranks) */
  dd_job_start start;
  const dd_path_policy *policy; /* NULL: every path allowed */
  dd_distill_hooks hooks;
  /* Placement, then a hook before anything is built (may be NULL). */
  void (*placed)(void *ctx, const dd_job_placement *p);
  /* Several nodes (job->nodes > 1, or `node` > 0): this process is node `node`; open_rendezvous
   * gives the rendezvous the nodes meet through (the caller's transport: Redis for the daemon and
   * the CLI) and close_rendezvous ends it after the run. Both take hooks.ctx. */
  int node;
  int (*open_rendezvous)(void *ctx, const Distilld__DistillJob *job, const struct dd_rendezvous **rv, char *err,
                         size_t errlen);
  void (*close_rendezvous)(void *ctx);
} dd_job_opts;

/* Where a failure happened, for callers that word their messages by it. */
typedef enum {
  DD_JOB_FAILED_SETUP = 0, /* validation, building the trainer */
  DD_JOB_FAILED_DEVICE,    /* creating the backend of a single device */
  DD_JOB_FAILED_RESUME,    /* reading the snapshot */
  DD_JOB_FAILED_RUN        /* training (with ranks: anything after validation) */
} dd_job_failure;

typedef struct dd_job_result {
  int iter;            /* the iteration reached */
  int resumed_iter;    /* the snapshot's iteration when resumed, else 0 */
  int stopped;         /* 0, DD_STOP_SNAPSHOT or DD_STOP_ABORT (train/solver.h) */
  int ranks;           /* ranks in all (every node) */
  double student_acc, teacher_acc; /* -1 when not measured */
  dd_job_failure failed_in; /* when dd_job_run fails */
} dd_job_result;

/* Runs `job` as `o` says. Returns 0 (done, or stopped by hooks.should_stop: res->stopped says
 * which) or an error with its message; `res` (may be NULL) gets the outcome either way.
 * should_stop is asked from the start, not only between iterations: before each step of building
 * the trainer (and inside the long ones), before reading the snapshot and before the data start.
 * A stop there returns DD_ESTOPPED ("stopped on request before ..."), res->stopped
 * DD_STOP_ABORT, with nothing written after the stop (no snapshot): a stop, not a failure of the
 * job, which the caller treats as it treats a stop between iterations (cancelled, handed back). */
int dd_job_run(const Distilld__DistillJob *job, const dd_job_opts *o, dd_job_result *res, char *err, size_t errlen);

#endif
