/* The solver (see solver.h): Caffe's Solver::Step / SGDSolver::ApplyUpdate and the snapshot
 * formats, on the backend table. */
#define _POSIX_C_SOURCE 200809L
#include "train/solver.h"

#include <ctype.h>
#include <dirent.h>
#include <limits.h>
#include <pthread.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "format/caffe_io.h"
#include "base/dd_error.h"
#include "net/net_check.h"
#include "train/solver_check.h"
#include "train/snapshot_io.h"
#include "comm/collective.h"

#define DD_MAX_OUTPUTS 32

/* ---- data parallel ----------------------------------------------------------------------------
 * Each rank runs its own solver on its share of the batch. The learnable parameters are grouped
 * into buckets in reverse layer order (backward makes the last layers' gradients final first).
 * As dd_net_backward finishes each layer, the buckets whose parameters are all final are handed
 * to this rank's communication thread, which sums them across ranks while backward goes on; the
 * step waits for the last bucket, divides by the number of ranks and updates. */
typedef struct {
  int first, count; /* a run of entries in dp->order */
  int min_layer;    /* final once backward has passed this layer */
} dp_bucket;

typedef struct {
  dd_comm *comm;
  int n_buckets;
  dp_bucket *b;
  int *order; /* learnable parameter indices, bucket by bucket */
  pthread_t thr;
  int thr_started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int posted, done, quit, failed; /* buckets handed over / summed this step */
  char msg[512];
  int last_sub; /* this backward is the last of iter_size: post buckets */
  /* timeline of the last step, seconds since its backward began (dd_solver_timeline) */
  double t0, *t_post, *t_start, *t_end;
  float *scratch; /* backend memory for the small all-reduces (stop votes, displayed values) */
  struct dd_solver *s;
} dd_dp;

struct dd_solver {
  Caffe__SolverParameter *sp; /* owned copy */
  dd_dp *dp;                  /* data parallel: NULL for a single rank */
  dd_backend *be;
  dd_net *net, *test_net;
  dd_solver_hooks hooks;
  int stopped; /* DD_STOP_* of the last run, 0 when it reached its end */
  int on_divergence; /* DD_DIVERGE_FAIL or DD_DIVERGE_SNAPSHOT */
  int snap_dirfd;                     /* the snapshot folder (dd_solver_set_snapshot_dir), -1: by path */
  const dd_path_policy *snap_policy;  /* for a learned_net outside it */
  dd_solver_type type;
  int iter;
  int n_hist;      /* history buffers per parameter: 1, or 2 for Adam */
  float **history; /* n_params * n_hist backend buffers */
  /* smoothed loss (Caffe's UpdateSmoothedLoss) */
  double *losses;
  int n_losses, loss_pos;
  double smoothed;
  /* outputs: scalar blobs no layer consumes */
  int n_out, n_test_out;
  dd_tensor *out[DD_MAX_OUTPUTS], *test_out[DD_MAX_OUTPUTS];
  const char *out_names[DD_MAX_OUTPUTS], *test_out_names[DD_MAX_OUTPUTS];
  double out_vals[DD_MAX_OUTPUTS], test_vals[DD_MAX_OUTPUTS];
  /* throughput */
  double last_display_t, wait_ms_acc;
  int last_display_iter, batch, run_start_iter;
  double start_t;
};

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

double dd_solver_learning_rate(const Caffe__SolverParameter *sp, int iter) {
  const char *p = sp->lr_policy ? sp->lr_policy : "fixed";
  double base = sp->base_lr, lr = base;
  int warm = sp->warmup_iter;
  if (!strcmp(p, "fixed")) {
    lr = base;
  } else if (!strcmp(p, "step")) {
    lr = base * pow(sp->gamma, floor((double)iter / (sp->stepsize > 0 ? sp->stepsize : 1)));
  } else if (!strcmp(p, "exp")) {
    lr = base * pow(sp->gamma, iter);
  } else if (!strcmp(p, "inv")) {
    lr = base * pow(1.0 + sp->gamma * iter, -(double)sp->power);
  } else if (!strcmp(p, "multistep")) {
    int step = 0;
    while ((size_t)step < sp->n_stepvalue && iter >= sp->stepvalue[step]) step++;
    lr = base * pow(sp->gamma, step);
  } else if (!strcmp(p, "poly")) {
    lr = base * pow(1.0 - (double)iter / (sp->max_iter > 0 ? sp->max_iter : 1), sp->power);
  } else if (!strcmp(p, "sigmoid")) {
    lr = base * (1.0 / (1.0 + exp(-sp->gamma * (iter - sp->stepsize))));
  } else if (!strcmp(p, "cosine")) {
    int span = sp->max_iter - warm;
    double t = span > 0 ? (double)(iter - warm) / span : 1.0;
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    lr = base * 0.5 * (1.0 + cos(3.14159265358979323846 * t));
  }
  if (warm > 0 && iter < warm) lr *= (double)(iter + 1) / warm;
  return lr;
}

static int parse_type(const Caffe__SolverParameter *sp, dd_solver_type *t) {
  const char *ty = sp->type;
  if (!ty && sp->has_solver_type) {
    static const char *const names[] = {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"};
    ty = names[sp->solver_type];
  }
  if (!ty) ty = "SGD";
  if (!strcmp(ty, "SGD")) *t = DD_SOLVER_SGD;
  else if (!strcmp(ty, "Nesterov")) *t = DD_SOLVER_NESTEROV;
  else if (!strcmp(ty, "Adam")) *t = DD_SOLVER_ADAM;
  else if (!strcmp(ty, "AdaGrad")) *t = DD_SOLVER_ADAGRAD;
  else if (!strcmp(ty, "RMSProp")) *t = DD_SOLVER_RMSPROP;
  else return -1;
  return 0;
}

/* Caffe's net outputs: blobs left over after every layer consumed its bottoms. Scalars only. */
static int find_outputs(const dd_net *n, dd_tensor **out, const char **names) {
  int k = 0;
  for (size_t b = 0; b < n->n_blobs; b++) {
    int consumed = 0;
    for (size_t i = 0; i < n->n_layers && !consumed; i++)
      for (int j = 0; j < n->graph->layers[i].nb; j++)
        if (n->graph->layers[i].bottom[j] == (int)b) {
          /* in place: consumed and re-produced by the same layer */
          int inplace = 0;
          for (int t = 0; t < n->graph->layers[i].nt; t++) inplace |= n->graph->layers[i].top[t] == (int)b;
          if (!inplace) consumed = 1;
        }
    if (consumed || n->graph->blobs[b].producer < 0 || n->blobs[b]->count != 1) continue;
    const dd_glayer *pl = &n->graph->layers[n->graph->blobs[b].producer];
    if (pl->ops && strcmp(pl->ops->type, "Input") == 0) continue;
    if (k < DD_MAX_OUTPUTS) {
      out[k] = n->blobs[b];
      names[k] = n->blobs[b]->name;
      k++;
    }
  }
  return k;
}

static double dp_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The communication thread: sums posted buckets across ranks, in order. */
static void *dp_thread(void *arg) {
  dd_dp *dp = arg;
  dd_net *n = dp->s->net;
  pthread_mutex_lock(&dp->mu);
  for (;;) {
    while (!dp->quit && dp->done == dp->posted) pthread_cond_wait(&dp->cv, &dp->mu);
    if (dp->quit) break;
    int k = dp->done, skip = dp->failed;
    pthread_mutex_unlock(&dp->mu);
    dp->t_start[k] = dp_now() - dp->t0;
    int r = 0;
    char e[512] = "";
    if (!skip)
      for (int i = 0; i < dp->b[k].count && !r; i++) {
        dd_tensor *t = n->params[dp->order[dp->b[k].first + i]].t;
        r = dp->comm->ops->allreduce_sum(dp->comm, t->diff, t->count, e, sizeof e);
      }
    dp->t_end[k] = dp_now() - dp->t0;
    pthread_mutex_lock(&dp->mu);
    if (r && !dp->failed) {
      dp->failed = 1;
      snprintf(dp->msg, sizeof dp->msg, "%s", e);
    }
    dp->done++;
    pthread_cond_broadcast(&dp->cv);
  }
  pthread_mutex_unlock(&dp->mu);
  return NULL;
}

static void dp_post_until(dd_dp *dp, int layer) {
  pthread_mutex_lock(&dp->mu);
  int before = dp->posted;
  while (dp->posted < dp->n_buckets && layer <= dp->b[dp->posted].min_layer) {
    dp->t_post[dp->posted] = dp_now() - dp->t0;
    dp->posted++;
  }
  if (dp->posted != before) pthread_cond_broadcast(&dp->cv);
  pthread_mutex_unlock(&dp->mu);
}

static void dp_after_layer(void *ctx, int layer) {
  dd_dp *dp = ctx;
  if (dp->last_sub) dp_post_until(dp, layer);
}

static void dp_begin_backward(dd_dp *dp, int last_sub) {
  dp->last_sub = last_sub;
  if (last_sub) dp->t0 = dp_now();
}

/* After the last backward of a step: every bucket summed; then the mean over ranks. */
static int dp_finish(dd_dp *dp, char *err, size_t errlen) {
  dp_post_until(dp, -1);
  pthread_mutex_lock(&dp->mu);
  while (dp->done < dp->n_buckets) pthread_cond_wait(&dp->cv, &dp->mu);
  int failed = dp->failed;
  dp->posted = dp->done = 0;
  pthread_mutex_unlock(&dp->mu);
  if (failed) return dd_errorf(DD_EIO, err, errlen, "data parallel: %s", dp->msg);
  dd_net *n = dp->s->net;
  dd_backend *be = dp->s->be;
  float inv = 1.0f / (float)dp->comm->size;
  if (dp->comm->size > 1)
    for (int i = 0; i < dp->b[dp->n_buckets - 1].first + dp->b[dp->n_buckets - 1].count; i++) {
      dd_tensor *t = n->params[dp->order[i]].t;
      be->ops->scale(be, t->count, inv, t->diff, t->diff);
    }
  return 0;
}

/* Every rank's learnable parameters must be the same bits: each rank's checksum goes round the
 * group. (Parameters that never learn, BatchNorm's statistics, differ between ranks by design.) */
static int dp_check_replicas(dd_solver *s, char *err, size_t errlen) {
  if (s->dp->comm->size == 1) return 0;
  uint64_t h = 1469598103934665603ULL;
  dd_net *n = s->net;
  for (size_t p = 0; p < n->n_params; p++) {
    if (n->params[p].lr_mult == 0) continue; /* BatchNorm's statistics are per rank by design */
    float *host = dd_tensor_data_copy(n->params[p].t);
    if (!host) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
    const unsigned char *b = (const unsigned char *)host;
    for (size_t i = 0; i < (size_t)n->params[p].t->count * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ULL;
    free(host);
  }
  int q = 0, r = dd_solver_differs(s, h, &q, err, errlen);
  if (r) return r;
  if (q > 0)
    return dd_errorf(DD_ECORRUPT, err, errlen,
                     "data parallel: the parameters of rank %d differ from rank 0's at iteration %d (the replicas "
                     "diverged: a bug, or ranks that did not start from the same weights)",
                     q, s->iter);
  return 0;
}

int dd_solver_differs(dd_solver *s, uint64_t h, int *first, char *err, size_t errlen) {
  *first = 0;
  dd_dp *dp = s->dp;
  if (!dp || dp->comm->size == 1) return 0;
  int size = dp->comm->size, rank = dp->comm->rank;
  /* three 21-bit pieces per rank, each exact in a float sum where only its rank contributes */
  size_t bytes = sizeof(float) * 3 * (size_t)size;
  float *v = calloc(3 * (size_t)size, sizeof(float));
  float *dev = v ? s->be->ops->alloc(s->be, bytes) : NULL;
  if (!dev) {
    free(v);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  for (int k = 0; k < 3; k++) v[3 * rank + k] = (float)((h >> (21 * k)) & 0x1FFFFF);
  s->be->ops->upload(s->be, dev, v, bytes);
  char e[512] = "";
  int r = dp->comm->ops->allreduce_sum(dp->comm, dev, 3 * size, e, sizeof e);
  if (!r) s->be->ops->download(s->be, v, dev, bytes);
  s->be->ops->free(s->be, dev);
  if (r) {
    free(v);
    return dd_errorf(DD_EIO, err, errlen, "data parallel: %s", e);
  }
  for (int q = 1; q < size && !*first; q++)
    if (memcmp(&v[0], &v[3 * q], 3 * sizeof(float))) *first = q;
  free(v);
  return 0;
}

int dd_solver_sync_from_root(dd_solver *s, char *err, size_t errlen) {
  dd_dp *dp = s->dp;
  if (!dp || dp->comm->size == 1) return 0;
  char e[512] = "";
  /* the iteration, as two exact 16-bit halves */
  float it[2] = {(float)(s->iter & 0xFFFF), (float)((unsigned)s->iter >> 16)};
  s->be->ops->upload(s->be, dp->scratch, it, sizeof it);
  int r = dp->comm->ops->broadcast(dp->comm, dp->scratch, 2, 0, e, sizeof e);
  if (!r) s->be->ops->download(s->be, it, dp->scratch, sizeof it);
  dd_net *n = s->net;
  for (size_t p = 0; p < n->n_params && !r; p++)
    r = dp->comm->ops->broadcast(dp->comm, n->params[p].t->data, n->params[p].t->count, 0, e, sizeof e);
  for (size_t k = 0; k < n->n_params * (size_t)s->n_hist && !r; k++)
    r = dp->comm->ops->broadcast(dp->comm, s->history[k], n->params[k / (size_t)s->n_hist].t->count, 0, e, sizeof e);
  if (r) return dd_errorf(DD_EIO, err, errlen, "data parallel: %s", e);
  s->iter = (int)it[0] | ((int)it[1] << 16);
  n->iter = (int64_t)s->iter * (s->sp->iter_size > 0 ? s->sp->iter_size : 1);
  return 0;
}

#define DP_SCRATCH (DD_MAX_OUTPUTS + 8)

/* vals[0..n) becomes its mean over the ranks (in float: for displayed and tested values). */
static int dp_mean(dd_solver *s, double *vals, int n, char *err, size_t errlen) {
  dd_dp *dp = s->dp;
  float v[DP_SCRATCH];
  if (n > DP_SCRATCH) n = DP_SCRATCH;
  for (int i = 0; i < n; i++) v[i] = (float)vals[i];
  s->be->ops->upload(s->be, dp->scratch, v, (size_t)n * sizeof(float));
  char e[512] = "";
  int r = dp->comm->ops->allreduce_sum(dp->comm, dp->scratch, n, e, sizeof e);
  if (r) return dd_errorf(DD_EIO, err, errlen, "data parallel: %s", e);
  s->be->ops->download(s->be, v, dp->scratch, (size_t)n * sizeof(float));
  for (int i = 0; i < n; i++) vals[i] = v[i] / dp->comm->size;
  return 0;
}

/* Every rank stops at the same iteration: one vote each, an abort outweighs a snapshot-stop. */
static int dp_agree_stop(dd_solver *s, int *why, char *err, size_t errlen) {
  double v[2] = {*why == DD_STOP_SNAPSHOT, *why == DD_STOP_ABORT};
  int r = dp_mean(s, v, 2, err, errlen);
  if (r) return r;
  *why = v[1] > 0 ? DD_STOP_ABORT : v[0] > 0 ? DD_STOP_SNAPSHOT : 0;
  return 0;
}

static void dp_free(dd_solver *s) {
  dd_dp *dp = s->dp;
  if (!dp) return;
  if (dp->thr_started) {
    pthread_mutex_lock(&dp->mu);
    dp->quit = 1;
    pthread_cond_broadcast(&dp->cv);
    pthread_mutex_unlock(&dp->mu);
    pthread_join(dp->thr, NULL);
    pthread_mutex_destroy(&dp->mu);
    pthread_cond_destroy(&dp->cv);
  }
  if (s->net) {
    s->net->after_layer_backward = NULL;
    s->net->after_layer_backward_ctx = NULL;
  }
  if (dp->scratch) s->be->ops->free(s->be, dp->scratch);
  free(dp->b);
  free(dp->order);
  free(dp->t_post);
  free(dp->t_start);
  free(dp->t_end);
  free(dp);
  s->dp = NULL;
}

int dd_solver_set_comm(dd_solver *s, dd_comm *comm, int64_t bucket_floats, char *err, size_t errlen) {
  dp_free(s);
  if (!comm) return 0;
  dd_net *n = s->net;
  dd_dp *dp = calloc(1, sizeof *dp);
  if (!dp) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  dp->comm = comm;
  dp->s = s;
  size_t np = n->n_params;
  dp->order = calloc(np + 1, sizeof *dp->order);
  dp->b = calloc(np + 1, sizeof *dp->b);
  dp->t_post = calloc(np + 1, sizeof(double));
  dp->t_start = calloc(np + 1, sizeof(double));
  dp->t_end = calloc(np + 1, sizeof(double));
  s->dp = dp;
  dp->scratch = s->be->ops->alloc(s->be, DP_SCRATCH * sizeof(float));
  if (!dp->order || !dp->b || !dp->t_post || !dp->t_start || !dp->t_end || !dp->scratch) {
    dp_free(s);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  if (bucket_floats <= 0) bucket_floats = (int64_t)25 << 18; /* 25 MiB of floats, as PyTorch's DDP */
  /* learnable parameters, last layer first; a bucket closes when it holds bucket_floats */
  int k = 0;
  int64_t in_bucket = 0;
  for (size_t p = np; p-- > 0;) {
    if (n->params[p].lr_mult == 0) continue; /* never updated: nothing to sum */
    if (dp->n_buckets == 0 || in_bucket >= bucket_floats) {
      dp->b[dp->n_buckets++] = (dp_bucket){k, 0, n->params[p].layer};
      in_bucket = 0;
    }
    dp_bucket *b = &dp->b[dp->n_buckets - 1];
    dp->order[k++] = (int)p;
    b->count++;
    if (n->params[p].layer < b->min_layer) b->min_layer = n->params[p].layer;
    in_bucket += n->params[p].t->count;
  }
  if (dp->n_buckets == 0) dp->b[dp->n_buckets++] = (dp_bucket){0, 0, 0};
  pthread_mutex_init(&dp->mu, NULL);
  pthread_cond_init(&dp->cv, NULL);
  if (pthread_create(&dp->thr, NULL, dp_thread, dp)) {
    pthread_mutex_destroy(&dp->mu);
    pthread_cond_destroy(&dp->cv);
    dp_free(s);
    return dd_errorf(DD_ENOMEM, err, errlen, "cannot start the communication thread");
  }
  dp->thr_started = 1;
  n->after_layer_backward = dp_after_layer;
  n->after_layer_backward_ctx = dp;
  return 0;
}

int dd_solver_timeline(const dd_solver *s, int bucket, int *n_params, double *posted, double *started, double *ended) {
  const dd_dp *dp = s->dp;
  if (!dp) return 0;
  if (bucket >= 0 && bucket < dp->n_buckets) {
    if (n_params) *n_params = dp->b[bucket].count;
    if (posted) *posted = dp->t_post[bucket];
    if (started) *started = dp->t_start[bucket];
    if (ended) *ended = dp->t_end[bucket];
  }
  return dp->n_buckets;
}

int dd_solver_create(dd_solver **out, const Caffe__SolverParameter *sp, const Caffe__NetParameter *net_param,
                     dd_backend *be, uint64_t seed, const dd_solver_hooks *hooks, char *err, size_t errlen) {
  return dd_solver_create_budget(out, sp, net_param, be, seed, hooks, NULL, err, errlen);
}

/* The net for one phase as Caffe's Solver builds it: the net's own state with the solver's
 * train_state (TRAIN) or first test_state (TEST) merged in: its level when set, its stages
 * appended. */
static int create_phase_net(dd_net **out, const Caffe__SolverParameter *sp, const Caffe__NetParameter *net_param,
                            Caffe__Phase phase, dd_backend *be, uint64_t seed, dd_mem_budget *budget, char *err,
                            size_t errlen) {
  const Caffe__NetState *st = phase == CAFFE__PHASE__TRAIN ? sp->train_state
                              : sp->n_test_state ? sp->test_state[0] : NULL;
  if (!st || (!st->has_level && !st->n_stage))
    return dd_net_create_budget(out, net_param, phase, be, seed, budget, NULL, err, errlen);
  Caffe__NetParameter *p = (Caffe__NetParameter *)dd_proto_copy(&net_param->base);
  int r = p ? dd_net_set_state(p, st->has_level, st->level, (const char *const *)st->stage, st->n_stage, 0) : DD_ENOMEM;
  if (r) {
    if (p) caffe__net_parameter__free_unpacked(p, NULL);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  r = dd_net_create_budget(out, p, phase, be, seed, budget, NULL, err, errlen);
  caffe__net_parameter__free_unpacked(p, NULL);
  return r;
}

int dd_solver_create_budget(dd_solver **out, const Caffe__SolverParameter *sp_in, const Caffe__NetParameter *net_param,
                            dd_backend *be, uint64_t seed, const dd_solver_hooks *hooks, dd_mem_budget *budget,
                            char *err, size_t errlen) {
  *out = NULL;
  if (dd_solver_check_values(sp_in, "", err, errlen)) return DD_EINVAL;
  dd_solver *s = calloc(1, sizeof *s);
  if (!s) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  int r;
  s->sp = (Caffe__SolverParameter *)dd_proto_copy(&sp_in->base);
  if (!s->sp) goto oom;
  const Caffe__SolverParameter *sp = s->sp;
  if (parse_type(sp, &s->type)) {
    r = dd_errorf(DD_EINVAL, err, errlen, "solver type \"%s\" is not supported (SGD, Nesterov, Adam, AdaGrad, RMSProp)",
                  sp->type ? sp->type : "?");
    goto fail;
  }
  if ((s->type == DD_SOLVER_ADAGRAD || s->type == DD_SOLVER_RMSPROP) && sp->momentum != 0) {
    r = dd_errorf(DD_EINVAL, err, errlen, "momentum must be 0 for %s (Caffe refuses it too)", sp->type);
    goto fail;
  }
  if (sp->iter_size < 1) {
    r = dd_errorf(DD_EINVAL, err, errlen, "iter_size must be >= 1");
    goto fail;
  }
  s->be = be;
  s->snap_dirfd = -1;
  if (hooks) s->hooks = *hooks;
  if ((r = create_phase_net(&s->net, sp, net_param, CAFFE__PHASE__TRAIN, be, seed, budget, err, errlen)))
    goto fail;
  if (sp->n_test_iter > 0 && sp->test_iter[0] > 0) {
    char e2[1024];
    if ((r = create_phase_net(&s->test_net, sp, net_param, CAFFE__PHASE__TEST, be, seed, budget, e2, sizeof e2))) {
      dd_errorf(r, err, errlen, "the TEST net: %s", e2);
      goto fail;
    }
    if ((r = dd_net_share_params(s->test_net, s->net, err, errlen))) goto fail;
  }
  s->n_hist = s->type == DD_SOLVER_ADAM ? 2 : 1;
  int64_t hist_bytes = 0;
  for (size_t p = 0; p < s->net->n_params; p++) hist_bytes += s->net->params[p].t->count * (int64_t)sizeof(float) * s->n_hist;
  if ((r = dd_mem_budget_charge(budget, hist_bytes, "the solver's history", err, errlen))) goto fail;
  s->history = calloc(s->net->n_params * (size_t)s->n_hist + 1, sizeof *s->history);
  if (!s->history) goto oom;
  for (size_t p = 0; p < s->net->n_params; p++)
    for (int h = 0; h < s->n_hist; h++)
      if (!(s->history[p * (size_t)s->n_hist + (size_t)h] =
                be->ops->alloc(be, (size_t)s->net->params[p].t->count * sizeof(float))))
        goto oom;
  s->n_losses = sp->average_loss > 0 ? sp->average_loss : 1;
  s->losses = calloc((size_t)s->n_losses, sizeof *s->losses);
  if (!s->losses) goto oom;
  s->n_out = find_outputs(s->net, s->out, s->out_names);
  if (s->test_net) s->n_test_out = find_outputs(s->test_net, s->test_out, s->test_out_names);
  s->batch = s->net->n_blobs ? (int)(s->net->blobs[0]->shape.ndim > 0 ? s->net->blobs[0]->shape.dims[0] : 1) : 1;
  *out = s;
  return 0;
oom:
  r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
fail:
  dd_solver_destroy(s);
  return r;
}

void dd_solver_destroy(dd_solver *s) {
  if (!s) return;
  dp_free(s);
  if (s->history && s->net)
    for (size_t i = 0; i < s->net->n_params * (size_t)s->n_hist; i++)
      if (s->history[i]) s->be->ops->free(s->be, s->history[i]);
  free(s->history);
  free(s->losses);
  dd_net_destroy(s->test_net);
  dd_net_destroy(s->net);
  if (s->sp) caffe__solver_parameter__free_unpacked(s->sp, NULL);
  free(s);
}

dd_net *dd_solver_net(dd_solver *s) { return s->net; }
dd_net *dd_solver_test_net(dd_solver *s) { return s->test_net; }
int dd_solver_iter(const dd_solver *s) { return s->iter; }

/* Caffe's ClipGradients, Normalize, Regularize, ComputeUpdateValue and Net::Update. */
static void apply_update(dd_solver *s) {
  const Caffe__SolverParameter *sp = s->sp;
  dd_backend *be = s->be;
  dd_net *n = s->net;
  float rate = (float)dd_solver_learning_rate(sp, s->iter);
  if (sp->clip_gradients >= 0) {
    double sumsq = 0;
    for (size_t p = 0; p < n->n_params; p++)
      sumsq += be->ops->dot(be, n->params[p].t->count, n->params[p].t->diff, n->params[p].t->diff);
    double norm = sqrt(sumsq);
    if (norm > sp->clip_gradients) {
      float f = (float)(sp->clip_gradients / norm);
      for (size_t p = 0; p < n->n_params; p++)
        be->ops->scale(be, n->params[p].t->count, f, n->params[p].t->diff, n->params[p].t->diff);
    }
  }
  int l1 = sp->regularization_type && !strcmp(sp->regularization_type, "L1");
  for (size_t p = 0; p < n->n_params; p++) {
    dd_net_param *np = &n->params[p];
    int64_t c = np->t->count;
    if (np->lr_mult == 0) continue; /* Caffe's update leaves such a parameter exactly as it is */
    if (sp->iter_size > 1) be->ops->scale(be, c, 1.0f / (float)sp->iter_size, np->t->diff, np->t->diff);
    float decay = sp->weight_decay * np->decay_mult;
    if (decay != 0) be->ops->regularize(be, c, np->t->diff, np->t->data, decay, l1);
    float lr = rate * np->lr_mult;
    float **h = &s->history[p * (size_t)s->n_hist];
    switch (s->type) {
      case DD_SOLVER_SGD:
      case DD_SOLVER_NESTEROV:
        be->ops->sgd_update(be, c, np->t->data, np->t->diff, h[0], lr, sp->momentum, s->type == DD_SOLVER_NESTEROV);
        break;
      case DD_SOLVER_ADAM:
        be->ops->adam_update(be, c, np->t->data, np->t->diff, h[0], h[1], lr, sp->momentum, sp->momentum2,
                             sp->delta, s->iter + 1);
        break;
      case DD_SOLVER_ADAGRAD:
      case DD_SOLVER_RMSPROP:
        be->ops->adagrad_update(be, c, np->t->data, np->t->diff, h[0], lr, sp->delta, sp->rms_decay,
                                s->type == DD_SOLVER_RMSPROP);
        break;
    }
  }
}

static void read_outputs(dd_tensor **t, int n, double *vals) {
  for (int i = 0; i < n; i++) {
    float v;
    t[i]->be->ops->download(t[i]->be, &v, t[i]->data, sizeof v);
    vals[i] = v;
  }
}

int dd_solver_test(dd_solver *s, dd_solver_stats *st, char *err, size_t errlen) {
  if (!s->test_net) return 0;
  int iters = s->sp->test_iter[0];
  double sums[DD_MAX_OUTPUTS] = {0}, vals[DD_MAX_OUTPUTS];
  for (int i = 0; i < iters; i++) {
    double wait = 0;
    if (s->hooks.before_forward) {
      int r = s->hooks.before_forward(s->hooks.ctx, s->test_net, CAFFE__PHASE__TEST, &wait);
      if (r) {
        dd_errorf(r, err, errlen, "the test data source failed");
        if (s->dp) s->dp->comm->ops->abort(s->dp->comm, err);
        return r;
      }
    }
    if (dd_net_forward(s->test_net, NULL)) {
      int r = dd_errorf(s->test_net->status, err, errlen, "test net: %s", s->test_net->status_msg);
      if (s->dp) s->dp->comm->ops->abort(s->dp->comm, err);
      return r;
    }
    read_outputs(s->test_out, s->n_test_out, vals);
    for (int k = 0; k < s->n_test_out; k++) sums[k] += vals[k];
  }
  for (int k = 0; k < s->n_test_out; k++) s->test_vals[k] = sums[k] / iters;
  /* each rank tested its share of every TEST batch: the mean over ranks is the whole batch's */
  if (s->dp && s->n_test_out && dp_mean(s, s->test_vals, s->n_test_out, err, errlen)) return DD_EIO;
  memset(st, 0, sizeof *st);
  st->iter = s->iter;
  st->max_iter = s->sp->max_iter;
  st->n_outputs = s->n_test_out;
  st->output_names = s->test_out_names;
  st->outputs = s->test_vals;
  st->loss = s->smoothed;
  st->lr = dd_solver_learning_rate(s->sp, s->iter);
  st->data_errors = s->net->data_errors + s->test_net->data_errors;
  if (s->hooks.on_test) s->hooks.on_test(s->hooks.ctx, st);
  return 0;
}

void dd_solver_set_on_divergence(dd_solver *s, int mode) { s->on_divergence = mode; }
void dd_solver_set_snapshot_dir(dd_solver *s, int dirfd, const dd_path_policy *policy) {
  s->snap_dirfd = dirfd;
  s->snap_policy = policy;
}

/* Ends the run when the loss or the gradient is not finite (dd_solver_diverged); snapshots the
 * weights before the update first when asked and every rank agrees (a non-finite gradient). */
static int check_divergence(dd_solver *s, double loss, char *err, size_t errlen) {
  char msg[900];
  int bad = dd_solver_diverged(s->net, loss, s->iter, s->n_out, s->out, s->out_names, msg, sizeof msg);
  if (!bad) return 0;
  if (s->on_divergence == DD_DIVERGE_SNAPSHOT && (!s->dp || bad == 2) && dd_solver_snapshot(s, err, errlen) == 0)
    snprintf(msg + strlen(msg), sizeof msg - strlen(msg), " (snapshot written at iteration %d)", s->iter);
  if (s->dp) s->dp->comm->ops->abort(s->dp->comm, msg);
  return dd_errorf(DD_EINVAL, err, errlen, "%s", msg);
}

int dd_solver_step(dd_solver *s, int iters, char *err, size_t errlen) {
  const Caffe__SolverParameter *sp = s->sp;
  int stop = s->iter + iters;
  if (s->start_t == 0) {
    s->start_t = now_s();
    s->run_start_iter = s->iter;
  }
  if (s->last_display_t == 0) {
    s->last_display_t = now_s();
    s->last_display_iter = s->iter;
  }
  int start_iter = s->iter;
  s->stopped = 0;
  while (s->iter < stop) {
    int why = s->hooks.should_stop ? s->hooks.should_stop(s->hooks.ctx) : 0;
    if (s->dp && dp_agree_stop(s, &why, err, errlen)) return DD_EIO;
    if (why) {
      s->stopped = why == DD_STOP_ABORT ? DD_STOP_ABORT : DD_STOP_SNAPSHOT;
      break;
    }
    dd_net_clear_param_diffs(s->net);
    if (sp->test_interval > 0 && s->iter % sp->test_interval == 0 && (s->iter > 0 || sp->test_initialization)) {
      dd_solver_stats st;
      int r = dd_solver_test(s, &st, err, errlen);
      if (r) return r;
    }
    double loss = 0;
    for (int k = 0; k < sp->iter_size; k++) {
      double wait = 0, l;
      if (s->hooks.before_forward) {
        int r = s->hooks.before_forward(s->hooks.ctx, s->net, CAFFE__PHASE__TRAIN, &wait);
        if (r) {
          dd_errorf(r, err, errlen, "the training data source failed");
          if (s->dp) { /* the other ranks must not wait for this one */
            char why[600];
            snprintf(why, sizeof why, "rank %d: %s", s->dp->comm->rank, err);
            s->dp->comm->ops->abort(s->dp->comm, why);
          }
          return r;
        }
      }
      s->wait_ms_acc += wait;
      s->net->data_wait_ms = 0;
      if (dd_net_forward(s->net, &l)) {
        int r = dd_errorf(s->net->status, err, errlen, "%s", s->net->status_msg);
        if (s->dp) s->dp->comm->ops->abort(s->dp->comm, err);
        return r;
      }
      s->wait_ms_acc += s->net->data_wait_ms;
      if (s->dp) dp_begin_backward(s->dp, k == sp->iter_size - 1);
      dd_net_backward(s->net);
      loss += l;
    }
    loss /= sp->iter_size;
    if (s->dp && dp_finish(s->dp, err, errlen)) return DD_EIO;
    int r = check_divergence(s, loss, err, errlen);
    if (r) return r;
    /* UpdateSmoothedLoss */
    int done = s->iter - start_iter;
    if (done < s->n_losses && s->loss_pos < s->n_losses) {
      s->losses[s->loss_pos++] = loss;
      double sum = 0;
      for (int k = 0; k < s->loss_pos; k++) sum += s->losses[k];
      s->smoothed = sum / s->loss_pos;
    } else {
      int idx = (done) % s->n_losses;
      s->smoothed += (loss - s->losses[idx]) / s->n_losses;
      s->losses[idx] = loss;
    }
    int display = sp->display > 0 && s->iter % sp->display == 0;
    if (display) read_outputs(s->out, s->n_out, s->out_vals);
    double lr = dd_solver_learning_rate(sp, s->iter);
    apply_update(s);
    s->iter++;
    if (s->be->ops->status) { /* a device fault ends the run here, not in garbage later */
      char msg[600];
      int r = s->be->ops->status(s->be, msg, sizeof msg);
      if (r) return dd_errorf(r, err, errlen, "at iteration %d: %s", s->iter - 1, msg);
    }
    double shown_loss = s->smoothed;
    if (display && s->dp) { /* the displayed loss and outputs: their mean over the ranks */
      double v[DD_MAX_OUTPUTS + 1];
      v[0] = s->smoothed;
      for (int k = 0; k < s->n_out; k++) v[k + 1] = s->out_vals[k];
      if (dp_mean(s, v, s->n_out + 1, err, errlen)) return DD_EIO;
      shown_loss = v[0];
      for (int k = 0; k < s->n_out; k++) s->out_vals[k] = v[k + 1];
    }
    if (display && s->hooks.on_display) {
      double t = now_s();
      int ranks = s->dp ? s->dp->comm->size : 1;
      int di = s->iter - s->last_display_iter;
      dd_solver_stats st = {.iter = s->iter - 1, .max_iter = sp->max_iter, .loss = shown_loss, .lr = lr,
                            .img_per_s = t > s->last_display_t ? (double)ranks * di * s->batch * sp->iter_size / (t - s->last_display_t) : 0,
                            .data_wait_ms = di > 0 ? s->wait_ms_acc / di : 0, .elapsed_s = t - s->start_t,
                            .eta_s = (t - s->start_t) / (s->iter - s->run_start_iter) * (sp->max_iter - s->iter),
                            .n_outputs = s->n_out, .output_names = s->out_names, .outputs = s->out_vals,
                            .data_errors = s->net->data_errors + (s->test_net ? s->test_net->data_errors : 0)};
      s->hooks.on_display(s->hooks.ctx, &st);
      s->last_display_t = t;
      s->last_display_iter = s->iter;
      s->wait_ms_acc = 0;
    }
    if (sp->snapshot > 0 && s->iter % sp->snapshot == 0 && (r = dd_solver_snapshot(s, err, errlen))) return r;
  }
  return 0;
}

int dd_solver_solve(dd_solver *s, char *err, size_t errlen) {
  const Caffe__SolverParameter *sp = s->sp;
  int r = dd_solver_step(s, sp->max_iter - s->iter, err, errlen);
  if (r) return r;
  if (s->stopped == DD_STOP_ABORT) return 0;
  if (sp->snapshot_after_train && (sp->snapshot == 0 || s->iter % sp->snapshot != 0)) {
    if ((r = dd_solver_snapshot(s, err, errlen))) return r;
  }
  if (!s->stopped && sp->test_interval > 0 && s->iter % sp->test_interval == 0) {
    dd_solver_stats st;
    if ((r = dd_solver_test(s, &st, err, errlen))) return r;
  }
  return 0;
}

int dd_solver_stopped(const dd_solver *s) { return s->stopped; }

#define SNAP_ITER DD_SNAP_ITER
#define SNAP_STATE DD_SNAP_STATE

static void snapshot_paths(const dd_solver *s, char *model, char *state, size_t len) {
  const char *prefix = s->sp->snapshot_prefix && s->sp->snapshot_prefix[0]
                           ? s->sp->snapshot_prefix
                           : (s->net->param->name && s->net->param->name[0] ? s->net->param->name : "net");
  snprintf(model, len, "%s" SNAP_ITER "%d.caffemodel", prefix, s->iter);
  snprintf(state, len, "%s" SNAP_ITER "%d" SNAP_STATE, prefix, s->iter);
}

int dd_solver_snapshot(dd_solver *s, char *err, size_t errlen) {
  if (s->dp) {
    int r = dp_check_replicas(s, err, errlen);
    if (r || s->dp->comm->rank != 0) return r; /* rank 0 writes the snapshot */
  }
  char model[4096], state[4096];
  snapshot_paths(s, model, state, sizeof model);
  Caffe__NetParameter *np = dd_net_to_proto(s->net, s->sp->snapshot_diff);
  if (!np) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory writing a snapshot");
  int r = dd_snapshot_write_model(np, s->snap_dirfd, model, err, errlen);
  caffe__net_parameter__free_unpacked(np, NULL);
  if (r) return r;
  Caffe__SolverState st;
  caffe__solver_state__init(&st);
  st.has_iter = 1;
  st.iter = s->iter;
  const char *base = strrchr(model, '/');
  st.learned_net = (char *)(base ? base + 1 : model);
  size_t nh = s->net->n_params * (size_t)s->n_hist;
  Caffe__BlobProto *blobs = calloc(nh + 1, sizeof *blobs);
  Caffe__BlobProto **ptrs = calloc(nh + 1, sizeof *ptrs);
  if (!blobs || !ptrs) {
    free(blobs);
    free(ptrs);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory writing a snapshot");
  }
  /* Caffe's order: all first history blobs, then (Adam) all second ones. */
  size_t k = 0;
  r = 0;
  for (int h = 0; h < s->n_hist && !r; h++)
    for (size_t p = 0; p < s->net->n_params && !r; p++) {
      caffe__blob_proto__init(&blobs[k]);
      dd_tensor t = *s->net->params[p].t;
      t.data = s->history[p * (size_t)s->n_hist + (size_t)h];
      r = dd_tensor_to_proto(&t, &blobs[k], 0);
      ptrs[k] = &blobs[k];
      k++;
    }
  st.n_history = k;
  st.history = ptrs;
  if (!r) {
    /* multistep's current step, as Caffe stores it */
    int step = 0;
    while ((size_t)step < s->sp->n_stepvalue && s->iter >= s->sp->stepvalue[step]) step++;
    st.has_current_step = 1;
    st.current_step = step;
    r = dd_snapshot_write_state(&st, s->snap_dirfd, state, err, errlen);
  } else {
    r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory writing a snapshot");
  }
  for (size_t i = 0; i < k; i++) {
    if (blobs[i].shape) {
      free(blobs[i].shape->dim);
      free(blobs[i].shape);
    }
    free(blobs[i].data);
    free(blobs[i].diff);
  }
  free(blobs);
  free(ptrs);
  if (!r && s->hooks.on_snapshot) s->hooks.on_snapshot(s->hooks.ctx, s->iter, model, state);
  return r;
}

int dd_solver_restore(dd_solver *s, const char *state_path, char *err, size_t errlen) {
  Caffe__SolverState *st = NULL;
  int r = dd_snapshot_read_state(&st, s->snap_dirfd, state_path, err, errlen);
  if (r) return r;
  size_t nh = s->net->n_params * (size_t)s->n_hist;
  if (st->n_history != nh) {
    r = dd_errorf(DD_ESHAPE, err, errlen, "%s holds %zu history blobs, but this solver and net need %zu",
                  state_path, st->n_history, nh);
    goto out;
  }
  if (!st->learned_net || !st->learned_net[0]) {
    r = dd_errorf(DD_ECORRUPT, err, errlen, "%s does not name its .caffemodel (learned_net)", state_path);
    goto out;
  }
  char model[4096];
  Caffe__NetParameter *w = NULL;
  r = dd_snapshot_read_model(&w, model, sizeof model, s->snap_dirfd, s->snap_policy, state_path, st->learned_net, err, errlen);
  if (r) goto out;
  r = dd_net_copy_from(s->net, w, model, NULL, err, errlen);
  caffe__net_parameter__free_unpacked(w, NULL);
  if (r) goto out;
  size_t k = 0;
  for (int h = 0; h < s->n_hist && !r; h++)
    for (size_t p = 0; p < s->net->n_params && !r; p++, k++) {
      dd_tensor t = *s->net->params[p].t;
      t.data = s->history[p * (size_t)s->n_hist + (size_t)h];
      if (!dd_blob_proto_matches(st->history[k], &t.shape)) {
        r = dd_errorf(DD_ESHAPE, err, errlen, "%s: history blob %zu does not match parameter %s", state_path, k,
                      t.name);
        break;
      }
      r = dd_tensor_from_proto(&t, st->history[k], err, errlen);
    }
  if (r) goto out;
  s->iter = st->iter;
  /* per-iteration randomness (dropout) continues where it stopped */
  s->net->iter = (int64_t)st->iter * s->sp->iter_size;
out:
  caffe__solver_state__free_unpacked(st, NULL);
  return r;
}
