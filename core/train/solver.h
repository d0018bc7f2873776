/* The solver: Caffe's Solver/SGDSolver family on a dd_net. Learning-rate policies (fixed, step,
 * exp, inv, multistep, poly, sigmoid, plus cosine and linear warm-up), SGD with momentum,
 * Nesterov, Adam, AdaGrad and RMSProp, weight decay (L2/L1) scaled by decay_mult, clip_gradients,
 * iter_size accumulation, test passes over a TEST net that shares the weights, smoothed loss for
 * display, and snapshots (.caffemodel + .solverstate, momentum history included) that resume
 * bit-identically.
 *
 * The loop is Caffe's Solver::Step: clear diffs; test when due; iter_size forward/backward passes;
 * update the smoothed loss; display; apply the update; iter++; snapshot when due. Callers hook in
 * through dd_solver_hooks: feeding data before each forward, seeing metrics, stopping early. */
#ifndef DD_SOLVER_H
#define DD_SOLVER_H

#include <stdint.h>

#include "base/backend.h"
#include "base/path_policy.h"
#include "caffe.pb-c.h"
#include "net/net.h"

typedef enum { DD_SOLVER_SGD, DD_SOLVER_NESTEROV, DD_SOLVER_ADAM, DD_SOLVER_ADAGRAD, DD_SOLVER_RMSPROP } dd_solver_type;

/* What the solver reports at each display interval and after each test pass. */
typedef struct {
  int iter;             /* iterations done */
  int max_iter;
  double loss;          /* smoothed over average_loss iterations */
  double lr;
  double img_per_s;     /* training images per second since the last display */
  double data_wait_ms;  /* mean time per iteration spent waiting for data (hook + data layers) */
  int64_t data_errors;  /* samples the data layers skipped (undecodable images) so far */
  double elapsed_s;     /* since this run started */
  double eta_s;         /* remaining iterations at this run's pace */
  int n_outputs;        /* the net's output blobs (tops no layer consumes) */
  const char *const *output_names;
  const double *outputs; /* their values this iteration (TRAIN) or averaged over the test pass */
} dd_solver_stats;

typedef struct {
  void *ctx;
  /* Before every forward of the TRAIN net (phase TRAIN) or TEST net (phase TEST): fill the
   * inputs. *wait_ms gets the time spent waiting for data. Returns 0, or an error to stop. */
  int (*before_forward)(void *ctx, dd_net *net, Caffe__Phase phase, double *wait_ms);
  void (*on_display)(void *ctx, const dd_solver_stats *st);
  void (*on_test)(void *ctx, const dd_solver_stats *st);
  /* After a snapshot was written: the paths of the two files. */
  void (*on_snapshot)(void *ctx, int iter, const char *model_path, const char *state_path);
  /* Polled between iterations: DD_STOP_SNAPSHOT stops training with a final snapshot (when the
   * solver snapshots after training), DD_STOP_ABORT stops without writing anything; 0 goes on.
   * A stopped run skips the end-of-training test. */
  int (*should_stop)(void *ctx);
} dd_solver_hooks;

enum { DD_STOP_SNAPSHOT = 1, DD_STOP_ABORT = 2 };

typedef struct dd_solver dd_solver;

/* Builds the solver for `sp` around the TRAIN net `net_param` (and its TEST phase when test_iter
 * is set) on `be`. `seed` fills the weights. Returns 0 or an error with a message. */
int dd_solver_create(dd_solver **out, const Caffe__SolverParameter *sp,
                     const Caffe__NetParameter *net_param, dd_backend *be, uint64_t seed,
                     const dd_solver_hooks *hooks, char *err, size_t errlen);
/* dd_solver_create charging its nets and history to `budget` (may be NULL; see dd_mem_budget). */
int dd_solver_create_budget(dd_solver **out, const Caffe__SolverParameter *sp, const Caffe__NetParameter *net_param,
                            dd_backend *be, uint64_t seed, const dd_solver_hooks *hooks, dd_mem_budget *budget,
                            char *err, size_t errlen);
void dd_solver_destroy(dd_solver *s);

/* Divergence: a run whose loss or gradient stops being finite ends with DD_EINVAL, "diverged at
 * iteration N: loss L, gradient norm G, <outputs>" (checked before the update, so the weights are
 * those that produced it). DD_DIVERGE_SNAPSHOT (a DistillJob's on_divergence: SNAPSHOT) first
 * writes a snapshot of those weights; DD_DIVERGE_FAIL (the default) writes nothing. */
enum { DD_DIVERGE_FAIL = 0, DD_DIVERGE_SNAPSHOT = 1 };
void dd_solver_set_on_divergence(dd_solver *s, int mode);
/* Snapshots go into, and resume reads from, the folder `dirfd` (the caller's, open for the
 * solver's life; the snapshot prefix's last component names the files), never through a symlink
 * there; a .solverstate's learned_net outside that folder is opened through `policy` (may be NULL).
 * Without a call, files are opened by the prefix's path. */
void dd_solver_set_snapshot_dir(dd_solver *s, int dirfd, const dd_path_policy *policy);

dd_net *dd_solver_net(dd_solver *s);
dd_net *dd_solver_test_net(dd_solver *s); /* NULL without test_iter */
int dd_solver_iter(const dd_solver *s);
/* Why the last dd_solver_step/solve ended early: 0 (it did not), DD_STOP_SNAPSHOT or DD_STOP_ABORT. */
int dd_solver_stopped(const dd_solver *s);

/* Data parallel: this solver is rank comm->rank of comm->size, each on its share of the batch.
 * After each backward the gradients of the learnable parameters are summed across ranks, in
 * buckets of about `bucket_floats` floats (0: 25 MiB) that start while backward is still running
 * (a communication thread per rank), and divided by the number of ranks before the update, so
 * every replica takes the same step. At each snapshot every rank checks that all replicas hold the
 * same parameters, and only rank 0 writes files. A rank whose data or forward fails aborts the
 * group, so the others fail too instead of waiting. NULL comm: a single rank again. The ranks
 * must be created with the same weights (the same seed). BatchNorm statistics stay per rank, as
 * in Caffe's multi-GPU training. */
struct dd_comm;
int dd_solver_set_comm(dd_solver *s, struct dd_comm *comm, int64_t bucket_floats, char *err, size_t errlen);
/* Data parallel: rank 0's iteration, parameter blobs (BatchNorm statistics included) and solver
 * history on every rank (after rank 0 alone resumed from a snapshot, which then need not be
 * readable on other machines). Every rank calls it. 0 without data parallelism. */
int dd_solver_sync_from_root(dd_solver *s, char *err, size_t errlen);
/* Data parallel: every rank passes a 64-bit value; *first becomes the first rank whose value
 * differs from rank 0's (0: all equal). Every rank calls it. */
int dd_solver_differs(dd_solver *s, uint64_t value, int *first, char *err, size_t errlen);
/* The last step's all-reduce timeline, bucket by bucket (seconds from the start of its backward):
 * when backward made the bucket final (posted), when the sum started and ended. Returns the
 * number of buckets (0 without data parallelism). */
int dd_solver_timeline(const dd_solver *s, int bucket, int *n_params, double *posted, double *started, double *ended);

/* Caffe's GetLearningRate for iteration `iter` (with multistep's current step derived from iter),
 * plus distilld's cosine policy and warm-up. */
double dd_solver_learning_rate(const Caffe__SolverParameter *sp, int iter);

/* Runs until max_iter (or a hook stops it); snapshots and tests as the solver says. Returns 0 or
 * an error (a hook's, or a failed snapshot) with a message. */
int dd_solver_solve(dd_solver *s, char *err, size_t errlen);

/* Runs `iters` iterations (no final snapshot). */
int dd_solver_step(dd_solver *s, int iters, char *err, size_t errlen);

/* One test pass: test_iter forwards of the TEST net; fills st->outputs with the averages. */
int dd_solver_test(dd_solver *s, dd_solver_stats *st, char *err, size_t errlen);

/* Writes <prefix>_iter_<N>.caffemodel and .solverstate. Returns 0 or DD_EIO/DD_ENOMEM. */
int dd_solver_snapshot(dd_solver *s, char *err, size_t errlen);

/* Restores weights and solver state from a .solverstate (its learned_net names the
 * .caffemodel; a relative name is looked up next to the .solverstate). */
int dd_solver_restore(dd_solver *s, const char *state_path, char *err, size_t errlen);

/* Snapshot names, in one place: a snapshot at iteration N is PREFIX_iter_N.caffemodel and
 * PREFIX_iter_N.solverstate (PREFIX: the solver's snapshot_prefix, for a job
 * OUTPUT_DIR/snapshots/NAME). dd_snapshot_find looks in `dir` for the newest .solverstate of job
 * `name` (NULL: of any name): returns 1 and its iteration and path (state may be NULL), or 0 when
 * there is none (or no such directory). */
int dd_snapshot_find(const char *dir, const char *name, int *iter, char *state, size_t len);

#endif
