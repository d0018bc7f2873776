/* Building a trainer from a job, in named steps (distill_internal.h):
 *   open_output            OUTPUT_DIR/snapshots and metrics.jsonl;
 *   load_solver            the inline solver or solver_file, its snapshots under OUTPUT_DIR;
 *   load_student           the student's net, with the lint of `distilld check` (and the opt-in
 *                          freeze of frozen BatchNorms);
 *   replace_data_layers    each ImageData or Data layer becomes an Input layer the trainer's pipelines feed;
 *   build_teacher          the frozen teacher (BatchNorm + Scale folded unless a named blob needs
 *                          them) and its TEST-batch twin;
 *   add_distill_terms      the teacher's logits and hint blobs as inputs, KDLoss, hint regressors
 *                          and losses, and the cross entropy's (1 - alpha);
 *   create_solver          the solver around the student, the collective, the student's weights.
 * The layers the trainer adds are built as messages (net/layer_build.h), never as text. The
 * caller's should_stop is asked before each step and inside the long ones (the teacher's unfolded
 * retry and TEST twin, each student weight file): a stop ends the build with DD_ESTOPPED. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "format/caffe_io.h"
#include "format/fileio.h"
#include "net/layer_build.h"
#include "net/net_check.h"
#include "train/distill_internal.h"
#include "train/job.h"
#include "train/solver.h"

/* DD_ESTOPPED ("stopped on request before STEP") when the caller's should_stop asks for a stop,
 * else 0. Asked between the build's steps and inside the long ones, so a cancel or SIGTERM is
 * honoured while a trainer is built, not only between iterations. */
static int stop_check(struct dd_distill *d, const char *step, char *err, size_t errlen) {
  if (!d->hooks.should_stop || !d->hooks.should_stop(d->hooks.ctx)) return 0;
  return dd_errorf(DD_ESTOPPED, err, errlen, "stopped on request before %s, while building the trainer", step);
}

/* Prefixes the message already in err with "what: ". */
static int prefix_err(int r, char *err, size_t errlen, const char *what) {
  char inner[1024];
  snprintf(inner, sizeof inner, "%s", err);
  return dd_errorf(r, err, errlen, "%s: %s", what, inner);
}

/* Reads BASE/P (a net prototxt) from the descriptor the policy opened. */
static int read_net(struct dd_distill *d, const char *field, const char *p, Caffe__NetParameter **out, char *err,
                    size_t errlen) {
  char *full = dd_distill_path(d->base_dir, p);
  if (!full) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  int fd;
  int r = dd_path_open(&d->policy, DD_PATH_READ, 0, field, full, &fd, err, errlen);
  if (!r) {
    r = dd_net_read_text_fd(out, fd, full, err, errlen);
    close(fd);
  }
  free(full);
  return r;
}

/* The top of the last InnerProduct layer of `g` (the logits, by convention), or NULL. */
static const char *last_ip_top(const dd_net_graph *g) {
  for (size_t i = g->n_layers; i-- > 0;)
    if (g->layers[i].ops && !strcmp(g->layers[i].ops->type, "InnerProduct")) return g->layers[i].lp->top[0];
  return NULL;
}

static const dd_shape *blob_shape(const dd_net_graph *g, const char *name) {
  for (size_t b = g->n_blobs; b-- > 0;)
    if (!strcmp(g->blobs[b].name, name)) return &g->blobs[b].shape;
  return NULL;
}

/* Lists a graph's blob names for an error message. */
static void blob_list(const dd_net_graph *g, char *buf, size_t len) {
  size_t used = 0;
  buf[0] = '\0';
  for (size_t b = 0; b < g->n_blobs && used + 40 < len; b++)
    used += (size_t)snprintf(buf + used, len - used, "%s%s", b ? ", " : "", g->blobs[b].name);
}

/* ---- the steps ----------------------------------------------------------------------------------- */

static int open_output(struct dd_distill *d, char *err, size_t errlen) {
  const Distilld__DistillJob *job = d->job;
  if (!(d->out_dir = dd_distill_path(d->base_dir, job->output_dir))) return DD_ENOMEM;
  /* held for the job: snapshots/ and metrics.jsonl are opened relative to it and, under a path
   * policy (the daemon's), never through a symlink, so one planted there (or snapshots/ swapped
   * mid-job) cannot lead a write out. Without one (the CLI) the user's own symlinks work. */
  int nofollow = d->policy.check || d->policy.open ? O_NOFOLLOW : 0;
  int r = dd_path_open(&d->policy, DD_PATH_OUTPUT, 0, "output_dir", d->out_dir, &d->out_fd, err, errlen);
  if (r) return r;
  char snapdir[4096];
  snprintf(snapdir, sizeof snapdir, "%s/snapshots", d->out_dir);
  if (mkdirat(d->out_fd, "snapshots", 0755) != 0 && errno != EEXIST)
    return dd_errorf(DD_EIO, err, errlen, "output_dir: cannot create \"%s\": %s", snapdir, strerror(errno));
  if ((d->snap_fd = openat(d->out_fd, "snapshots", O_RDONLY | O_DIRECTORY | nofollow | O_CLOEXEC)) < 0)
    return dd_errorf(errno == ELOOP || errno == ENOTDIR ? DD_EPERM : DD_EIO, err, errlen,
                     "output_dir: \"%s\" is not a folder of its own (a symlink?): %s: refused", snapdir, strerror(errno));
  d->snap_prefix = malloc(strlen(snapdir) + strlen(job->name) + 2);
  if (!d->snap_prefix) return DD_ENOMEM;
  sprintf(d->snap_prefix, "%s/%s", snapdir, job->name);
  char mpath[4096];
  snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", d->out_dir);
  if (d->rank > 0) { /* rank 0 writes the job's metrics */
    if (!(d->metrics = fopen("/dev/null", "a")))
      return dd_errorf(DD_EIO, err, errlen, "cannot open /dev/null: %s", strerror(errno));
    return 0;
  }
  int fd = openat(d->out_fd, "metrics.jsonl", O_WRONLY | O_APPEND | O_CREAT | nofollow | O_NONBLOCK | O_CLOEXEC, 0644);
  if (fd < 0)
    return dd_errorf(errno == ELOOP ? DD_EPERM : DD_EIO, err, errlen, "output_dir: cannot write \"%s\": %s%s", mpath,
                     strerror(errno), errno == ELOOP ? " (a symlink): refused" : "");
  if ((r = dd_fd_require_regular(fd, "output_dir", mpath, err, errlen)) || !(d->metrics = fdopen(fd, "a"))) {
    close(fd);
    return r ? r : dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  return 0;
}

static int load_solver(struct dd_distill *d, char *err, size_t errlen) {
  const Distilld__DistillJob *job = d->job;
  if (job->solver) {
    d->solver_param = (Caffe__SolverParameter *)dd_proto_copy(&job->solver->base);
    if (!d->solver_param) return DD_ENOMEM;
  } else {
    char *sp = dd_distill_path(d->base_dir, job->solver_file);
    if (!sp) return DD_ENOMEM;
    int fd;
    int r = dd_path_open(&d->policy, DD_PATH_READ, 0, "solver_file", sp, &fd, err, errlen);
    if (!r) {
      r = dd_solver_read_text_fd(&d->solver_param, fd, sp, err, errlen);
      close(fd);
    }
    free(sp);
    if (r) return r;
  }
  free(d->solver_param->snapshot_prefix);
  d->solver_param->snapshot_prefix = strdup(d->snap_prefix);
  return d->solver_param->snapshot_prefix ? 0 : DD_ENOMEM;
}

/* Sets use_global_stats on the BatchNorm layer `name` (the opt-in fix for the seed's trap). */
static void freeze_batchnorm(struct dd_distill *d, Caffe__NetParameter *sp, const char *name) {
  for (size_t i = 0; i < sp->n_layer; i++) {
    Caffe__LayerParameter *lp = sp->layer[i];
    if (!lp->name || strcmp(lp->name, name) || strcmp(lp->type, "BatchNorm")) continue;
    if (!lp->batch_norm_param) {
      lp->batch_norm_param = malloc(sizeof *lp->batch_norm_param);
      if (!lp->batch_norm_param) continue;
      caffe__batch_norm_parameter__init(lp->batch_norm_param);
    }
    lp->batch_norm_param->has_use_global_stats = 1;
    lp->batch_norm_param->use_global_stats = 1;
    dd_distill_log(d, 2, "freeze_frozen_batchnorm: %s now uses its stored statistics", lp->name);
  }
}

static int load_student(struct dd_distill *d, char *err, size_t errlen) {
  const Distilld__DistillJob *job = d->job;
  int r = read_net(d, "student.net", job->student->net, &d->student_param, err, errlen);
  if (r) return r;
  Caffe__NetParameter *sp = d->student_param;
  dd_diags diags = {0};
  dd_net_graph *lg = NULL;
  if (dd_net_check(&lg, sp, CAFFE__PHASE__TRAIN, &diags) == 0) {
    for (size_t k = 0; k < diags.n; k++) {
      const dd_diag *dg = &diags.v[k];
      if (dg->level == DD_DIAG_ERROR) continue; /* the net build reports those */
      dd_distill_log(d, dg->level == DD_DIAG_WARNING ? 1 : 2, "student net: %s%s%s", dg->where ? dg->where : "",
                     dg->where ? ": " : "", dg->msg);
      int trap = dg->level == DD_DIAG_WARNING && dg->where && strstr(dg->msg, "BatchNorm keeps updating");
      if (trap && job->distill && job->distill->freeze_frozen_batchnorm) freeze_batchnorm(d, sp, dg->where);
    }
  }
  dd_net_graph_free(lg);
  dd_diags_free(&diags);
  return 0;
}

/* The Input layer that takes data layer `orig`'s place in phase `ph`: its tops, this rank's
 * batch, the data shape `ds0` (and the label shape `ls`, NULL without a label top). */
static Caffe__LayerParameter *input_for(const Caffe__LayerParameter *orig, int ph, int batch, const dd_shape *ds0,
                                        const dd_shape *ls) {
  Caffe__LayerParameter *in = dd_layer_new(orig->name ? orig->name : "data", "Input", ph);
  if (!in) return NULL;
  dd_shape s0 = *ds0;
  s0.dims[0] = batch;
  int r = dd_layer_add_top(in, orig->top[0]);
  if (!r && ls) r = dd_layer_add_top(in, orig->top[1]);
  if (!r) r = dd_layer_add_input_shape(in, &s0);
  if (!r && ls) {
    dd_shape s1 = *ls;
    if (s1.ndim > 0) s1.dims[0] = batch;
    if (s1.ndim < 0) s1.ndim = 0;
    r = dd_layer_add_input_shape(in, &s1);
  }
  if (r) {
    caffe__layer_parameter__free_unpacked(in, NULL);
    return NULL;
  }
  return in;
}

/* One ImageData or Data layer of phase `ph` (graph layer `gl` of `g`) becomes an Input layer. */
static int replace_one(struct dd_distill *d, const dd_net_graph *g, const dd_glayer *gl, int ph, char *err,
                       size_t errlen) {
  Caffe__NetParameter *sp = d->student_param;
  if (d->data_layer[ph])
    return dd_errorf(DD_EINVAL, err, errlen, "student.net: more than one data layer (ImageData, Data) in the %s phase",
                     dd_phase_name((Caffe__Phase)ph));
  const dd_shape *ds0 = &g->blobs[gl->top[0]].shape;
  if (!dd_shape_known(ds0))
    return dd_errorf(DD_EINVAL, err, errlen,
                     "student.net: layer \"%s\": set crop_size or new_height/new_width so the batch shape is known",
                     gl->lp->name);
  Caffe__LayerParameter *orig = sp->layer[gl->param_index];
  if (!(d->data_layer[ph] = (Caffe__LayerParameter *)dd_proto_copy(&orig->base))) return DD_ENOMEM;
  d->global_batch[ph] = (int)ds0->dims[0];
  if (d->global_batch[ph] % d->size)
    return dd_errorf(DD_EINVAL, err, errlen, "student.net: layer \"%s\": the %s batch of %d does not split evenly over %d ranks",
                     gl->lp->name, dd_phase_name((Caffe__Phase)ph), d->global_batch[ph], d->size);
  d->batch[ph] = d->global_batch[ph] / d->size;
  for (int t = 0; t < gl->nt && t < 2; t++)
    if (!(d->data_top[ph][t] = strdup(orig->top[t]))) return DD_ENOMEM;
  Caffe__LayerParameter *in = input_for(orig, ph, d->batch[ph], ds0, gl->nt > 1 ? &g->blobs[gl->top[1]].shape : NULL);
  if (!in) return DD_ENOMEM;
  caffe__layer_parameter__free_unpacked(sp->layer[gl->param_index], NULL);
  sp->layer[gl->param_index] = in;
  return 0;
}

/* The student's logits: named by the job, or the last InnerProduct's top. */
static int find_student_logits(struct dd_distill *d, const dd_net_graph *g, char *err, size_t errlen) {
  const Distilld__DistillJob *job = d->job;
  const char *sl = job->distill && job->distill->student_logits ? job->distill->student_logits : last_ip_top(g);
  if (!sl || !blob_shape(g, sl)) {
    char list[1024];
    blob_list(g, list, sizeof list);
    return dd_errorf(DD_EINVAL, err, errlen, "distill.student_logits: the student net has no blob \"%s\" (blobs: %s)",
                     sl ? sl : "(no InnerProduct)", list);
  }
  return (d->student_logits = strdup(sl)) ? 0 : DD_ENOMEM;
}

/* A Data layer's database and mean file, made relative to the job's folder and asked of the
 * policy before anything opens them (the layer's shape function reads the first record). */
static int resolve_db_paths(struct dd_distill *d, char *err, size_t errlen) {
  Caffe__NetParameter *sp = d->student_param;
  for (size_t i = 0; i < sp->n_layer; i++) {
    Caffe__LayerParameter *lp = sp->layer[i];
    if (!lp->type || strcmp(lp->type, "Data")) continue;
    char **paths[2] = {lp->data_param && lp->data_param->source ? &lp->data_param->source : NULL,
                       lp->transform_param && lp->transform_param->mean_file ? &lp->transform_param->mean_file : NULL};
    const char *what[2] = {"data_param.source", "transform_param.mean_file"};
    for (int k = 0; k < 2; k++) {
      if (!paths[k] || !(*paths[k])[0]) continue;
      char *full = dd_distill_path(d->base_dir, *paths[k]), field[400];
      if (!full) return DD_ENOMEM;
      free(*paths[k]);
      *paths[k] = full;
      snprintf(field, sizeof field, "student.net: layer \"%.200s\" %s", lp->name ? lp->name : "", what[k]);
      int r = dd_path_check(&d->policy, DD_PATH_READ, field, full, err, errlen);
      if (r) return r;
    }
  }
  return 0;
}

static int replace_data_layers(struct dd_distill *d, char *err, size_t errlen) {
  int r0 = resolve_db_paths(d, err, errlen);
  if (r0) return r0;
  for (int ph = 0; ph < 2; ph++) {
    dd_diags gd = {0};
    dd_net_graph *g = NULL;
    int r = 0;
    if (dd_net_graph_build_own(&g, d->student_param, (Caffe__Phase)ph, &gd)) r = DD_ENOMEM;
    /* a data layer that cannot say its shape (a Data layer's database missing or unreadable) */
    for (size_t k = 0; !r && k < gd.n; k++)
      for (size_t i = 0; gd.v[k].level == DD_DIAG_ERROR && gd.v[k].where && i < g->n_layers; i++)
        if (g->layers[i].ops && !strcmp(g->layers[i].ops->type, "Data") && g->layers[i].lp->name &&
            !strcmp(g->layers[i].lp->name, gd.v[k].where)) {
          r = dd_errorf(DD_EINVAL, err, errlen, "student.net: layer \"%s\": %s", gd.v[k].where, gd.v[k].msg);
          break;
        }
    for (size_t i = 0; !r && i < g->n_layers; i++)
      if (g->layers[i].ops && (!strcmp(g->layers[i].ops->type, "ImageData") || !strcmp(g->layers[i].ops->type, "Data")))
        r = replace_one(d, g, &g->layers[i], ph, err, errlen);
    if (!r && ph == 0 && !d->data_layer[0])
      r = dd_errorf(DD_EINVAL, err, errlen, "student.net: no ImageData or Data layer in the TRAIN phase (the job's data comes from it)");
    if (!r && ph == 0) r = find_student_logits(d, g, err, errlen);
    dd_net_graph_free(g);
    dd_diags_free(&gd);
    if (r) return r;
  }
  return 0;
}

/* The teacher's deploy net with its Input taking the student's TRAIN batch; *tp gets the net. */
static int read_teacher_net(struct dd_distill *d, Caffe__NetParameter **tp, char *err, size_t errlen) {
  int r = read_net(d, "teacher.net", d->job->teacher->net, tp, err, errlen);
  if (r) return prefix_err(r, err, errlen, "teacher.net");
  Caffe__LayerParameter *in = NULL;
  for (size_t i = 0; i < (*tp)->n_layer && !in; i++)
    if ((*tp)->layer[i]->type && !strcmp((*tp)->layer[i]->type, "Input")) in = (*tp)->layer[i];
  if (!in || !in->input_param || in->input_param->n_shape < 1 || in->input_param->shape[0]->n_dim < 1)
    return dd_errorf(DD_EINVAL, err, errlen, "teacher.net: a deploy net with an Input layer (and its shape) is needed");
  if (!(d->teacher_input = strdup(in->top[0]))) return DD_ENOMEM;
  in->input_param->shape[0]->dim[0] = d->batch[0];
  return 0;
}

/* The teacher blob the job names that folding removes (NULL: none). */
static const char *folded_away(const struct dd_distill *d) {
  const Distilld__DistillSettings *ds = d->job->distill;
  if (!ds) return NULL;
  if (ds->teacher_logits && !dd_net_blob(d->teacher.net, ds->teacher_logits)) return ds->teacher_logits;
  for (size_t h = 0; h < ds->n_hint; h++)
    if (ds->hint[h]->teacher_blob && !dd_net_blob(d->teacher.net, ds->hint[h]->teacher_blob)) return ds->hint[h]->teacher_blob;
  return NULL;
}

/* The frozen teacher from its net and weights. Folding removes the blob between a convolution and
 * its BatchNorm + Scale (and a BatchNorm's own top): a teacher blob the job names that exists only
 * unfolded keeps the teacher unfolded. */
static int load_teacher(struct dd_distill *d, const Caffe__NetParameter *tp, char *err, size_t errlen) {
  const Distilld__TeacherSpec *ts = d->job->teacher;
  char **wpaths = calloc(ts->n_weights + 1, sizeof *wpaths);
  int r = wpaths ? 0 : DD_ENOMEM;
  for (size_t i = 0; !r && i < ts->n_weights; i++) {
    char field[64];
    snprintf(field, sizeof field, "teacher.weights[%zu]", i);
    if (!(wpaths[i] = dd_distill_path(d->base_dir, ts->weights[i]))) r = DD_ENOMEM;
    if (!r) r = dd_path_check(&d->policy, DD_PATH_READ, field, wpaths[i], err, errlen);
  }
  int fold = !d->job->distill || d->job->distill->fold_teacher;
  if (!r) r = dd_teacher_create(&d->teacher, tp, (const char *const *)wpaths, ts->n_weights, d->be, fold, err, errlen);
  const char *gone = !r && fold ? folded_away(d) : NULL;
  if (gone && (r = stop_check(d, "loading the teacher unfolded", err, errlen))) gone = NULL;
  if (gone) {
    dd_teacher_destroy(&d->teacher);
    r = dd_teacher_create(&d->teacher, tp, (const char *const *)wpaths, ts->n_weights, d->be, 0, err, errlen);
    if (r == 0 && dd_net_blob(d->teacher.net, gone))
      dd_distill_log(d, 2, "teacher: blob \"%s\" exists only before BatchNorm + Scale folding: the teacher runs unfolded", gone);
  }
  for (size_t i = 0; wpaths && i < ts->n_weights; i++) free(wpaths[i]);
  free(wpaths);
  return r;
}

/* The teacher's TEST-batch twin, sharing its parameters. */
static int teacher_test_twin(struct dd_distill *d, char *err, size_t errlen) {
  Caffe__NetParameter *tp2 = (Caffe__NetParameter *)dd_proto_copy(&d->teacher.net->param->base);
  if (!tp2) return DD_ENOMEM;
  for (size_t i = 0; i < tp2->n_layer; i++)
    if (tp2->layer[i]->type && !strcmp(tp2->layer[i]->type, "Input")) tp2->layer[i]->input_param->shape[0]->dim[0] = d->batch[1];
  int r = dd_net_create(&d->teacher_test, tp2, CAFFE__PHASE__TEST, d->be, 1, NULL, err, errlen);
  if (!r) r = dd_net_share_params(d->teacher_test, d->teacher.net, err, errlen);
  caffe__net_parameter__free_unpacked(tp2, NULL);
  return r;
}

static int build_teacher(struct dd_distill *d, char *err, size_t errlen) {
  d->has_teacher = 1;
  Caffe__NetParameter *tp = NULL;
  int r = read_teacher_net(d, &tp, err, errlen);
  if (!r) {
    r = load_teacher(d, tp, err, errlen);
    if (!r && d->data_layer[1] && !(r = stop_check(d, "the teacher's TEST twin", err, errlen)))
      r = teacher_test_twin(d, err, errlen);
    if (r) r = prefix_err(r, err, errlen, "teacher");
  }
  if (tp) caffe__net_parameter__free_unpacked(tp, NULL);
  if (r) return r;
  dd_distill_log(d, 2, "teacher: %zu layers, %d BatchNorm+Scale pairs folded into convolutions, %d into a Scale; checksum %016llx",
                 d->teacher.net->n_layers, d->teacher.folded_conv, d->teacher.folded_scale,
                 (unsigned long long)d->teacher.checksum);
  return 0;
}

/* The teacher's input and logits must fit the student's data and logits; *tlt gets the logits. */
static int check_teacher_fits(struct dd_distill *d, const dd_net_graph *g, dd_tensor **tlt, char *err, size_t errlen) {
  const Distilld__DistillJob *job = d->job;
  dd_tensor *ti = dd_net_blob(d->teacher.net, d->teacher_input);
  const dd_shape *sd = blob_shape(g, d->data_top[0][0]), *sl = blob_shape(g, d->student_logits);
  const char *tl = job->distill && job->distill->teacher_logits ? job->distill->teacher_logits : last_ip_top(d->teacher.net->graph);
  *tlt = tl ? dd_net_blob(d->teacher.net, tl) : NULL;
  char a[64], b[64];
  if (!sd || !dd_shape_equal(sd, &ti->shape))
    return dd_errorf(DD_EINVAL, err, errlen, "teacher.net: its input is %s but the student's data is %s",
                     dd_shape_str(&ti->shape, a, sizeof a), sd ? dd_shape_str(sd, b, sizeof b) : "?");
  if (!*tlt) {
    char list[1024];
    blob_list(d->teacher.net->graph, list, sizeof list);
    return dd_errorf(DD_EINVAL, err, errlen, "distill.teacher_logits: the teacher net has no blob \"%s\" (blobs: %s)",
                     tl ? tl : "(no InnerProduct)", list);
  }
  if (!dd_shape_equal(&(*tlt)->shape, sl))
    return dd_errorf(DD_EINVAL, err, errlen,
                     "distill.teacher_logits: the teacher's logits \"%s\" are %s but the student's \"%s\" are %s: do the nets have "
                     "the same classes?",
                     tl, dd_shape_str(&(*tlt)->shape, a, sizeof a), d->student_logits, dd_shape_str(sl, b, sizeof b));
  return (d->teacher_logits = strdup(tl)) ? 0 : DD_ENOMEM;
}

/* A TRAIN-phase Input layer `name` (its top of the same name) of shape `s`. */
static Caffe__LayerParameter *train_input(const char *name, const dd_shape *s) {
  Caffe__LayerParameter *lp = dd_layer_new(name, "Input", CAFFE__PHASE__TRAIN);
  if (lp && (dd_layer_add_top(lp, name) || dd_layer_add_input_shape(lp, s))) {
    caffe__layer_parameter__free_unpacked(lp, NULL);
    lp = NULL;
  }
  return lp;
}

/* A TRAIN-phase loss layer: bottoms a and b, top `name`, weight w. */
static Caffe__LayerParameter *train_loss(const char *name, const char *type, const char *a, const char *b, float w) {
  Caffe__LayerParameter *lp = dd_layer_new(name, type, CAFFE__PHASE__TRAIN);
  if (lp && (dd_layer_add_bottom(lp, a) || dd_layer_add_bottom(lp, b) || dd_layer_add_top(lp, name) ||
             dd_layer_add_loss_weight(lp, w))) {
    caffe__layer_parameter__free_unpacked(lp, NULL);
    lp = NULL;
  }
  return lp;
}

/* KDLoss on the student's logits against an Input fed with the teacher's. */
static int add_kd_loss(struct dd_distill *d, const dd_shape *teacher_logits, float alpha, float temp) {
  Caffe__NetParameter *sp = d->student_param;
  int r = dd_net_append_layer(sp, train_input("distill_teacher_logits", teacher_logits));
  if (r) return r;
  Caffe__LayerParameter *kd = train_loss("kd_loss", "KDLoss", d->student_logits, "distill_teacher_logits", alpha);
  if (!kd || !(kd->distill_loss_param = malloc(sizeof *kd->distill_loss_param))) {
    if (kd) caffe__layer_parameter__free_unpacked(kd, NULL);
    return DD_ENOMEM;
  }
  caffe__distill_loss_parameter__init(kd->distill_loss_param);
  kd->distill_loss_param->has_temperature = 1;
  kd->distill_loss_param->temperature = temp;
  return dd_net_append_layer(sp, kd);
}

/* FitNets' 1x1 convolution regressor from the student blob to the teacher's channels. */
static Caffe__LayerParameter *hint_regressor(size_t h, const char *student_blob, int64_t channels) {
  char name[64], top[64];
  snprintf(name, sizeof name, "hint%zu_regressor", h);
  snprintf(top, sizeof top, "hint%zu_regressed", h);
  Caffe__LayerParameter *lp = dd_layer_new(name, "Convolution", CAFFE__PHASE__TRAIN);
  if (!lp || dd_layer_add_bottom(lp, student_blob) || dd_layer_add_top(lp, top)) goto oom;
  Caffe__ConvolutionParameter *cp = lp->convolution_param = malloc(sizeof *cp);
  if (!cp) goto oom;
  caffe__convolution_parameter__init(cp);
  cp->has_num_output = 1;
  cp->num_output = (uint32_t)channels;
  if (!(cp->kernel_size = malloc(sizeof *cp->kernel_size))) goto oom;
  cp->kernel_size[0] = 1;
  cp->n_kernel_size = 1;
  if (!(cp->weight_filler = malloc(sizeof *cp->weight_filler))) goto oom;
  caffe__filler_parameter__init(cp->weight_filler);
  if (!(cp->weight_filler->type = strdup("msra"))) goto oom;
  return lp;
oom:
  if (lp) caffe__layer_parameter__free_unpacked(lp, NULL);
  return NULL;
}

/* Hint h: the teacher blob as an Input, and the loss (FitNets: through a regressor; attention). */
static int add_hint(struct dd_distill *d, const dd_net_graph *g, size_t h, char *err, size_t errlen) {
  const Distilld__HintSpec *hs = d->job->distill->hint[h];
  dd_tensor *tb = dd_net_blob(d->teacher.net, hs->teacher_blob);
  const dd_shape *sb = blob_shape(g, hs->student_blob);
  char a[64], b[64];
  if (!tb) return dd_errorf(DD_EINVAL, err, errlen, "distill.hint[%zu].teacher_blob: the teacher net has no blob \"%s\"", h, hs->teacher_blob);
  if (!sb) return dd_errorf(DD_EINVAL, err, errlen, "distill.hint[%zu].student_blob: the student net has no blob \"%s\"", h, hs->student_blob);
  if (tb->shape.ndim != 4 || sb->ndim != 4 || tb->shape.dims[2] != sb->dims[2] || tb->shape.dims[3] != sb->dims[3])
    return dd_errorf(DD_EINVAL, err, errlen,
                     "distill.hint[%zu]: the teacher blob is %s and the student blob %s: hints need (N, C, H, W) blobs of the same H x W",
                     h, dd_shape_str(&tb->shape, a, sizeof a), dd_shape_str(sb, b, sizeof b));
  d->hint_teacher_blob[h] = strdup(hs->teacher_blob);
  d->hint_input[h] = malloc(48);
  if (!d->hint_teacher_blob[h] || !d->hint_input[h]) return DD_ENOMEM;
  snprintf(d->hint_input[h], 48, "distill_hint%zu_teacher", h);
  Caffe__NetParameter *sp = d->student_param;
  int r = dd_net_append_layer(sp, train_input(d->hint_input[h], &tb->shape));
  char loss[64], regressed[64];
  snprintf(loss, sizeof loss, "hint%zu_loss", h);
  snprintf(regressed, sizeof regressed, "hint%zu_regressed", h);
  if (!r && hs->kind == DISTILLD__HINT_SPEC__KIND__FITNET) {
    r = dd_net_append_layer(sp, hint_regressor(h, hs->student_blob, tb->shape.dims[1]));
    if (!r) r = dd_net_append_layer(sp, train_loss(loss, "HintLoss", regressed, d->hint_input[h], hs->weight));
  } else if (!r) {
    r = dd_net_append_layer(sp, train_loss(loss, "AttentionLoss", hs->student_blob, d->hint_input[h], hs->weight));
  }
  if (!r) d->n_hints++;
  return r;
}

/* The cross entropy on the student's logits keeps (1 - alpha). */
static int weigh_cross_entropy(struct dd_distill *d, float alpha) {
  Caffe__NetParameter *sp = d->student_param;
  for (size_t i = 0; i < sp->n_layer; i++) {
    Caffe__LayerParameter *lp = sp->layer[i];
    if (!lp->type || strcmp(lp->type, "SoftmaxWithLoss") || lp->n_bottom < 1 || strcmp(lp->bottom[0], d->student_logits)) continue;
    float *lw = realloc(lp->loss_weight, lp->n_top * sizeof *lw);
    if (!lw) return DD_ENOMEM;
    lp->loss_weight = lw;
    for (size_t t = 0; t < lp->n_top; t++) lw[t] = t == 0 ? 1.0f - alpha : 0.0f;
    lp->n_loss_weight = lp->n_top;
  }
  return 0;
}

static int add_distill_terms(struct dd_distill *d, char *err, size_t errlen) {
  const Distilld__DistillJob *job = d->job;
  float alpha = job->distill ? job->distill->alpha : 0.9f, temp = job->distill ? job->distill->temperature : 4.0f;
  dd_net_graph *g = NULL;
  dd_diags gd = {0};
  if (dd_net_graph_build_own(&g, d->student_param, CAFFE__PHASE__TRAIN, &gd)) return DD_ENOMEM;
  dd_tensor *tlt = NULL;
  int r = check_teacher_fits(d, g, &tlt, err, errlen);
  if (!r) r = add_kd_loss(d, &tlt->shape, alpha, temp);
  for (size_t h = 0; !r && job->distill && h < job->distill->n_hint; h++) r = add_hint(d, g, h, err, errlen);
  dd_net_graph_free(g);
  dd_diags_free(&gd);
  if (!r) r = weigh_cross_entropy(d, alpha);
  return r;
}

/* Reads the .caffemodel `wp` from the descriptor the policy opened. */
static int read_weights(struct dd_distill *d, const char *field, const char *wp, Caffe__NetParameter **w, char *err,
                        size_t errlen) {
  int fd;
  int r = dd_path_open(&d->policy, DD_PATH_READ, 0, field, wp, &fd, err, errlen);
  if (r) return r;
  char *buf;
  size_t len;
  r = dd_read_fd(&buf, &len, fd, wp, err, errlen);
  close(fd);
  if (r) return r;
  r = dd_caffemodel_parse(w, (const uint8_t *)buf, len, wp, err, errlen);
  free(buf);
  return r;
}

static int load_student_weights(struct dd_distill *d, char *err, size_t errlen) {
  const Distilld__StudentSpec *ss = d->job->student;
  int r = 0;
  for (size_t i = 0; i < ss->n_weights && !r; i++) {
    if ((r = stop_check(d, "loading the student's weights", err, errlen))) return r;
    char field[64];
    snprintf(field, sizeof field, "student.weights[%zu]", i);
    char *wp = dd_distill_path(d->base_dir, ss->weights[i]);
    Caffe__NetParameter *w = NULL;
    if (!wp) return DD_ENOMEM;
    r = read_weights(d, field, wp, &w, err, errlen);
    if (!r) r = dd_net_copy_from(dd_solver_net(d->solver), w, wp, NULL, err, errlen);
    if (w) caffe__net_parameter__free_unpacked(w, NULL);
    free(wp);
  }
  return r;
}

static int create_solver(struct dd_distill *d, char *err, size_t errlen) {
  const Distilld__DistillJob *job = d->job;
  uint64_t seed = job->seed >= 0                      ? (uint64_t)job->seed
                  : d->solver_param->random_seed >= 0 ? (uint64_t)d->solver_param->random_seed
                                                      : (uint64_t)time(NULL);
  dd_solver_hooks sh;
  dd_distill_solver_hooks(d, &sh);
  d->solver_param->has_random_seed = 1;
  d->solver_param->random_seed = (int64_t)seed;
  dd_mem_budget budget = {.max_bytes = job->max_memory_mb * ((int64_t)1 << 20)}; /* validated: <= 2^30 MiB */
  int r = dd_solver_create_budget(&d->solver, d->solver_param, d->student_param, d->be, seed, &sh, &budget, err, errlen);
  if (r) return prefix_err(r, err, errlen, "student");
  dd_solver_set_snapshot_dir(d->solver, d->snap_fd, &d->policy);
  dd_solver_set_on_divergence(d->solver, job->on_divergence == DISTILLD__DISTILL_JOB__ON_DIVERGENCE__SNAPSHOT
                                             ? DD_DIVERGE_SNAPSHOT : DD_DIVERGE_FAIL);
  if (d->comm && (r = dd_solver_set_comm(d->solver, d->comm, (int64_t)(job->allreduce_bucket_mb * 262144.0), err, errlen)))
    return r;
  if ((r = load_student_weights(d, err, errlen))) return r;
  if (d->batch[1] && !(d->labels_dev = d->be->ops->alloc(d->be, (size_t)d->batch[1] * sizeof(float)))) return DD_ENOMEM;
  dd_distill_log(d, 2, "job %s: seed %llu, %s", job->name, (unsigned long long)seed,
                 d->has_teacher ? "distilling from the teacher" : "training the student alone");
  return 0;
}

/* ---- precision and plans ----------------------------------------------------------------------------- */

/* One net in its precision, and the log line that says what it runs: the plan and, for bf16,
 * how many convolutions got a bf16 kernel on this machine. A frozen net (the teacher) keeps its
 * activations in the blocked layout between its layers (dd_plan_build_blocked: bf16 in bf16, FP32
 * in FP32, where the backend can), the hints' teacher blobs still left in NCHW FP32 after each
 * forward; a learning net (the student) trains in it, gradients too (dd_plan_build_blocked_train). */
static int net_precision(struct dd_distill *d, dd_net *n, const char *who, int precision, int log, char *err,
                         size_t errlen) {
  if (!n) return 0;
  int bf16 = 0, convs = 0;
  int r = dd_net_set_precision(n, precision, &bf16, &convs, err, errlen);
  if (!r && (r = dd_plan_build_blocked(n, (const char *const *)d->hint_teacher_blob, d->n_hints)))
    snprintf(err, errlen, "out of memory for the blocked plan");
  /* a learning net (the student) trains in the blocked layout where the backend can */
  if (!r && !n->plan.n_blocked && (r = dd_plan_build_blocked_train(n, NULL, 0)))
    snprintf(err, errlen, "out of memory for the blocked training plan");
  if (r) return prefix_err(r, err, errlen, who);
  if (!log) return 0;
  char plan[512];
  dd_plan_describe(n, plan, sizeof plan);
  if (precision == DD_PRECISION_FP32)
    dd_distill_log(d, 2, "%s: FP32; %s", who, plan);
  else if (bf16)
    dd_distill_log(d, 2, "%s: bf16 (%d of %d convolutions in bf16, the rest FP32); %s", who, bf16, convs, plan);
  else
    dd_distill_log(d, 2, "%s: bf16 asked, but no convolution has a bf16 kernel here (%s; bf16 needs oneDNN and a CPU "
                   "with AVX512-BF16 or AMX, or AVX-512 for oneDNN's emulation): FP32; %s",
                   who, dd_backend_describe(d->be), plan);
  return 0;
}

static int apply_precision(struct dd_distill *d, char *err, size_t errlen) {
  const Distilld__DistillSettings *ds = d->job->distill;
  int tp = ds && ds->teacher_precision == DISTILLD__DISTILL_SETTINGS__PRECISION__BF16 ? DD_PRECISION_BF16 : DD_PRECISION_FP32;
  int sp = ds && ds->student_precision == DISTILLD__DISTILL_SETTINGS__PRECISION__BF16 ? DD_PRECISION_BF16 : DD_PRECISION_FP32;
  d->teacher_precision = tp;
  int r = 0;
  if (d->has_teacher) {
    r = net_precision(d, d->teacher.net, "teacher", tp, d->rank == 0, err, errlen);
    /* the TEST twin stays FP32 until the teacher's accuracy was measured in FP32 (distill.c) */
  }
  if (!r) r = net_precision(d, dd_solver_net(d->solver), "student", sp, d->rank == 0, err, errlen);
  if (!r) r = net_precision(d, dd_solver_test_net(d->solver), "student TEST net", sp, 0, err, errlen);
  return r;
}

/* ---- the whole build ----------------------------------------------------------------------------- */

static int setup(struct dd_distill *d, const Distilld__DistillJob *job, const char *base_dir, dd_backend *be,
                 const dd_distill_hooks *hooks, const dd_path_policy *policy, dd_comm *comm) {
  d->teacher_acc = d->student_acc = -1;
  d->out_fd = d->snap_fd = -1;
  d->last_test_iter = -1;
  d->comm = comm; /* one rank through a collective too: the GPU tests run NCCL's path that way */
  d->rank = comm ? comm->rank : 0;
  d->size = comm ? comm->size : 1;
  if (policy) d->policy = *policy;
  /* rank 0 reports; the others keep only the stop decision, which the solver agrees on */
  if (hooks && d->rank == 0) d->hooks = *hooks;
  if (hooks && d->rank > 0) d->hooks = (dd_distill_hooks){.ctx = hooks->ctx, .should_stop = hooks->should_stop};
  d->job = (Distilld__DistillJob *)dd_proto_copy(&job->base);
  d->base_dir = base_dir ? strdup(base_dir) : NULL;
  if (!d->job || (base_dir && !d->base_dir)) return DD_ENOMEM;
  if (be) {
    d->be = be;
    return 0;
  }
  if (dd_cpu_backend_create(&d->be, 0)) return DD_ENOMEM;
  d->own_be = 1;
  return 0;
}

int dd_distill_build(dd_distill **out, const Distilld__DistillJob *job, const char *base_dir, dd_backend *be,
                     const dd_distill_hooks *hooks, const dd_path_policy *policy, dd_comm *comm, char *err,
                     size_t errlen) {
  *out = NULL;
  struct dd_distill *d = calloc(1, sizeof *d);
  if (!d) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  err[0] = '\0';
  int r = setup(d, job, base_dir, be, hooks, policy, comm);
  /* a stop asked for before a step (DD_ESTOPPED) ends the build there, nothing written after */
  if (!r && !(r = stop_check(d, "open_output", err, errlen))) r = open_output(d, err, errlen);
  if (!r && !(r = stop_check(d, "load_solver", err, errlen))) r = load_solver(d, err, errlen);
  if (!r && !(r = stop_check(d, "load_student", err, errlen))) r = load_student(d, err, errlen);
  if (!r && !(r = stop_check(d, "replace_data_layers", err, errlen))) r = replace_data_layers(d, err, errlen);
  if (!r && d->job->teacher && !(r = stop_check(d, "build_teacher", err, errlen))) r = build_teacher(d, err, errlen);
  if (!r && d->job->teacher && !(r = stop_check(d, "add_distill_terms", err, errlen)))
    r = add_distill_terms(d, err, errlen);
  if (!r && !(r = stop_check(d, "create_solver", err, errlen))) r = create_solver(d, err, errlen);
  if (!r && !(r = stop_check(d, "precision", err, errlen))) r = apply_precision(d, err, errlen);
  if (r) {
    if (r == DD_ENOMEM && !err[0]) dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
    dd_distill_destroy(d);
    return r;
  }
  *out = d;
  return 0;
}

/* ---- the public constructors ------------------------------------------------------------------------------------ */

int dd_distill_create(dd_distill **out, const Distilld__DistillJob *job, const char *base_dir, dd_backend *be,
                      const dd_distill_hooks *hooks, char *err, size_t errlen) {
  return dd_distill_create_rank(out, job, base_dir, be, hooks, NULL, err, errlen);
}

int dd_distill_create_rank(dd_distill **out, const Distilld__DistillJob *job, const char *base_dir, dd_backend *be,
                           const dd_distill_hooks *hooks, dd_comm *comm, char *err, size_t errlen) {
  *out = NULL;
  int r = dd_job_validate(job, base_dir, NULL, err, errlen);
  return r ? r : dd_distill_build(out, job, base_dir, be, hooks, NULL, comm, err, errlen);
}
