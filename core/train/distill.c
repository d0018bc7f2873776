/* The distillation trainer at work (see distill.h): the data feed, the teacher's forward before
 * each student batch, metrics, resume. Building lives in distill_build.c, ranks in distill_ranks.c. */
#define _POSIX_C_SOURCE 200809L
#include "train/distill.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "base/dd_error.h"
#include "format/caffe_io.h"
#include "train/distill_internal.h"
#include "train/solver.h"

/* ---- small helpers ----------------------------------------------------------------------------- */

char *dd_distill_path(const char *base, const char *p) {
  if (!p) return NULL;
  size_t lb = base && p[0] != '/' ? strlen(base) : 0, lp = strlen(p);
  char *s = malloc(lb + lp + 2);
  if (!s) return NULL;
  if (lb) {
    memcpy(s, base, lb);
    s[lb] = '/';
    memcpy(s + lb + 1, p, lp + 1);
  } else {
    memcpy(s, p, lp + 1);
  }
  return s;
}

void dd_distill_log(struct dd_distill *d, int level, const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (d->rank > 0 && level > 0) return; /* rank 0 speaks for the job */
  if (d->hooks.log)
    d->hooks.log(d->hooks.ctx, level, msg);
  else
    fprintf(stderr, "distilld: %s%s\n", level == 0 ? "error: " : level == 1 ? "warning: " : "", msg);
}

/* JSON number or null. */
static void jnum(FILE *f, const char *key, double v, int comma) {
  if (isfinite(v))
    fprintf(f, "\"%s\":%.9g%s", key, v, comma ? "," : "");
  else
    fprintf(f, "\"%s\":null%s", key, comma ? "," : "");
}

static void jstr(FILE *f, const char *key, const char *v, int comma) {
  fprintf(f, "\"%s\":\"", key);
  for (const char *p = v; *p; p++) {
    if (*p == '"' || *p == '\\') fputc('\\', f);
    if ((unsigned char)*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fprintf(f, "\"%s", comma ? "," : "");
}

/* "time": seconds since the epoch, to the millisecond. */
static void jtime(FILE *f) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  fprintf(f, "\"time\":%lld.%03ld", (long long)t.tv_sec, t.tv_nsec / 1000000);
}


static void data_log(void *ctx, const char *msg) { dd_distill_log(ctx, 1, "%s", msg); }

/* ---- running ------------------------------------------------------------------------------------- */

/* The copy of a data layer the pipeline opens: its paths made relative to the job's folder. */
static int source_copy(struct dd_distill *d, const Caffe__LayerParameter *lp, Caffe__LayerParameter **out) {
  Caffe__LayerParameter *copy = (Caffe__LayerParameter *)dd_proto_copy(&lp->base);
  if (!copy) return DD_ENOMEM;
  char **paths[3] = {NULL, NULL, NULL};
  if (copy->image_data_param) paths[0] = &copy->image_data_param->source;
  if (copy->data_param) paths[1] = &copy->data_param->source;
  if (copy->transform_param && copy->transform_param->mean_file) paths[2] = &copy->transform_param->mean_file;
  for (int i = 0; i < 3; i++) {
    if (!paths[i] || !*paths[i]) continue;
    char *full = dd_distill_path(d->base_dir, *paths[i]);
    if (!full) {
      caffe__layer_parameter__free_unpacked(copy, NULL);
      return DD_ENOMEM;
    }
    free(*paths[i]);
    *paths[i] = full;
  }
  const Caffe__ImageDataParameter *ip = lp->image_data_param;
  if (ip && ip->root_folder && ip->root_folder[0]) {
    /* root_folder is a prefix: keep a trailing slash as written */
    char *root = dd_distill_path(d->base_dir, ip->root_folder);
    size_t lr = root ? strlen(root) : 0;
    if (root && ip->root_folder[strlen(ip->root_folder) - 1] == '/' && root[lr - 1] != '/') {
      char *r2 = realloc(root, lr + 2);
      if (r2) strcat(root = r2, "/");
    }
    if (!root) {
      caffe__layer_parameter__free_unpacked(copy, NULL);
      return DD_ENOMEM;
    }
    free(copy->image_data_param->root_folder);
    copy->image_data_param->root_folder = root;
  }
  *out = copy;
  return 0;
}

static int open_source(struct dd_distill *d, int ph, int64_t start_batch, dd_data **out, char *err, size_t errlen) {
  const Caffe__LayerParameter *lp = d->data_layer[ph];
  const Caffe__ImageDataParameter *ip = lp->image_data_param;
  dd_net *n = ph == 0 ? dd_solver_net(d->solver) : dd_solver_test_net(d->solver);
  if (!n) return 0;
  dd_tensor *t = dd_net_blob(n, d->data_top[ph][0]);
  Caffe__LayerParameter *copy = NULL;
  char field[300];
  snprintf(field, sizeof field, "student.net: layer \"%.200s\"", lp->name ? lp->name : "");
  if (source_copy(d, lp, &copy)) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  dd_data_config cfg = {.batch = (int)t->shape.dims[0], .channels = (int)t->shape.dims[1], .height = (int)t->shape.dims[2],
                        .width = (int)t->shape.dims[3], .train = ph == 0,
                        .seed = dd_seed_derive(dd_solver_net(d->solver)->seed, ph == 0 ? "data/train" : "data/test"),
                        .threads = ip ? (int)ip->decode_threads : 0, .prefetch = ip ? (int)ip->prefetch : 0,
                        .max_error_fraction = ip ? ip->max_error_fraction : 0, .be = d->be, .log = data_log, .log_ctx = d,
                        .start_batch = start_batch, .stride = d->global_batch[ph],
                        .offset = (int64_t)d->rank * d->batch[ph], .policy = &d->policy, .field = field};
  int r = dd_data_open(out, copy, &cfg, err, errlen);
  caffe__layer_parameter__free_unpacked(copy, NULL);
  return r;
}

static int before_forward(void *ctx, dd_net *net, Caffe__Phase phase, double *wait_ms) {
  struct dd_distill *d = ctx;
  int ph = phase == CAFFE__PHASE__TRAIN ? 0 : 1;
  const float *data, *labels;
  int r = dd_data_next(d->src[ph], &data, &labels, wait_ms, d->fail_msg, sizeof d->fail_msg);
  if (r) {
    d->failed = 1;
    return r;
  }
  net->data_errors = dd_data_errors(d->src[ph]); /* the solver reports the net's count */
  dd_tensor *dt = dd_net_blob(net, d->data_top[ph][0]);
  d->be->ops->upload(d->be, dt->data, data, (size_t)dt->count * sizeof(float));
  if (d->data_top[ph][1]) {
    dd_tensor *lt = dd_net_blob(net, d->data_top[ph][1]);
    d->be->ops->upload(d->be, lt->data, labels, (size_t)lt->count * sizeof(float));
  }
  if (!d->has_teacher || ph != 0) return 0;
  /* the teacher sees the same batch, then hands its logits and hint blobs to the student */
  dd_net *tn = d->teacher.net;
  dd_tensor *ti = dd_net_blob(tn, d->teacher_input);
  d->be->ops->upload(d->be, ti->data, data, (size_t)ti->count * sizeof(float));
  if (dd_net_forward(tn, NULL)) {
    snprintf(d->fail_msg, sizeof d->fail_msg, "teacher: %.1000s", tn->status_msg);
    d->failed = 1;
    return tn->status;
  }
  dd_tensor *src = dd_net_blob(tn, d->teacher_logits), *dst = dd_net_blob(net, "distill_teacher_logits");
  d->be->ops->copy(d->be, dst->data, src->data, (size_t)dst->count * sizeof(float));
  for (int h = 0; h < d->n_hints; h++) {
    src = dd_net_blob(tn, d->hint_teacher_blob[h]);
    dst = dd_net_blob(net, d->hint_input[h]);
    d->be->ops->copy(d->be, dst->data, src->data, (size_t)dst->count * sizeof(float));
  }
  return 0;
}

/* A loss term's final name (metrics.jsonl, hooks, Redis): the student's own loss output is the
 * cross-entropy term. */
static const char *term_name(const char *output) { return strcmp(output, "loss") ? output : "ce_loss"; }

static void on_display(void *ctx, const dd_solver_stats *st) {
  struct dd_distill *d = ctx;
  int bs = d->global_batch[0] * (d->solver_param->iter_size > 0 ? d->solver_param->iter_size : 1);
  int epoch = d->train_size > 0 ? (int)((int64_t)st->iter * bs / d->train_size) : 0;
  FILE *f = d->metrics;
  fprintf(f, "{\"type\":\"train\",");
  fprintf(f, "\"iter\":%d,\"max_iter\":%d,\"epoch\":%d,", st->iter, st->max_iter, epoch);
  jnum(f, "loss", st->loss, 1);
  const char *names[DD_DISTILL_MAX_TERMS];
  int n_terms = st->n_outputs < DD_DISTILL_MAX_TERMS ? st->n_outputs : DD_DISTILL_MAX_TERMS;
  for (int i = 0; i < n_terms; i++) {
    names[i] = term_name(st->output_names[i]);
    jnum(f, names[i], st->outputs[i], 1);
  }
  jnum(f, "lr", st->lr, 1);
  jnum(f, "img_per_s", st->img_per_s, 1);
  jnum(f, "data_wait_ms", st->data_wait_ms, 1);
  jnum(f, "eta_s", st->eta_s, 1);
  fprintf(f, "\"data_errors\":%lld,", (long long)st->data_errors);
  jtime(f);
  fprintf(f, "}\n");
  fflush(f);
  if (d->hooks.progress) {
    dd_distill_progress p = {.iter = st->iter, .max_iter = st->max_iter, .epoch = epoch, .lr = st->lr, .loss = st->loss,
                             .img_per_s = st->img_per_s, .data_wait_ms = st->data_wait_ms, .eta_s = st->eta_s,
                             .elapsed_s = st->elapsed_s, .n_terms = n_terms, .term_names = names,
                             .terms = st->outputs, .data_errors = st->data_errors};
    d->hooks.progress(d->hooks.ctx, &p);
  }
}

static void on_test(void *ctx, const dd_solver_stats *st) {
  struct dd_distill *d = ctx;
  FILE *f = d->metrics;
  fprintf(f, "{\"type\":\"test\",\"iter\":%d,", st->iter);
  for (int i = 0; i < st->n_outputs; i++) {
    jnum(f, st->output_names[i], st->outputs[i], 1);
    if (!strcmp(st->output_names[i], "accuracy")) d->student_acc = st->outputs[i];
  }
  jtime(f);
  fprintf(f, "}\n");
  fflush(f);
  d->last_test_iter = st->iter;
  if (d->hooks.test) {
    char fields[DD_DISTILL_MAX_TERMS][96];
    const char *fp[DD_DISTILL_MAX_TERMS];
    int n = st->n_outputs < DD_DISTILL_MAX_TERMS ? st->n_outputs : DD_DISTILL_MAX_TERMS;
    for (int i = 0; i < n; i++) {
      if (!strcmp(st->output_names[i], "accuracy"))
        snprintf(fields[i], sizeof fields[i], "test_acc");
      else
        snprintf(fields[i], sizeof fields[i], "test_%.80s", st->output_names[i]);
      fp[i] = fields[i];
    }
    dd_distill_test t = {.iter = st->iter, .n = n, .names = st->output_names, .fields = fp, .values = st->outputs};
    d->hooks.test(d->hooks.ctx, &t);
  }
}

static void on_snapshot(void *ctx, int iter, const char *model, const char *state) {
  struct dd_distill *d = ctx;
  FILE *f = d->metrics;
  int bad = d->has_teacher && dd_teacher_verify(&d->teacher, d->fail_msg, sizeof d->fail_msg);
  fprintf(f, "{\"type\":\"snapshot\",\"iter\":%d,", iter);
  jstr(f, "model", model, 1);
  jstr(f, "state", state, 1);
  if (d->has_teacher) fprintf(f, "\"teacher_checksum_ok\":%s,", bad ? "false" : "true");
  jtime(f);
  fprintf(f, "}\n");
  fflush(f);
  if (bad) {
    d->failed = 1;
    dd_distill_log(d, 0, "%s", d->fail_msg);
  }
  if (d->hooks.snapshot) d->hooks.snapshot(d->hooks.ctx, iter, model, state);
}

static int should_stop(void *ctx) {
  struct dd_distill *d = ctx;
  if (d->failed) return DD_STOP_SNAPSHOT;
  return d->hooks.should_stop ? d->hooks.should_stop(d->hooks.ctx) : 0;
}

void dd_distill_solver_hooks(struct dd_distill *d, dd_solver_hooks *h) {
  *h = (dd_solver_hooks){.ctx = d, .before_forward = before_forward, .on_display = on_display, .on_test = on_test,
                         .on_snapshot = on_snapshot, .should_stop = should_stop};
}

/* The teacher's TEST twin's top-1 accuracy over test_iter TEST batches, from a pipeline of its
 * own (all ranks together). */
static int teacher_accuracy(struct dd_distill *d, double *acc, int64_t *images, char *err, size_t errlen) {
  dd_data *src = NULL;
  int r = open_source(d, 1, 0, &src, err, errlen);
  if (r || !src) return r;
  int batches = d->solver_param->test_iter[0];
  int64_t correct = 0, valid = 0;
  dd_tensor *ti = dd_net_blob(d->teacher_test, d->teacher_input), *tl = dd_net_blob(d->teacher_test, d->teacher_logits);
  for (int b = 0; b < batches && !r; b++) {
    const float *data, *labels;
    double wait;
    if ((r = dd_data_next(src, &data, &labels, &wait, err, errlen))) break;
    d->be->ops->upload(d->be, ti->data, data, (size_t)ti->count * sizeof(float));
    d->be->ops->upload(d->be, d->labels_dev, labels, (size_t)d->batch[1] * sizeof(float));
    if ((r = dd_net_forward(d->teacher_test, NULL))) {
      dd_errorf(r, err, errlen, "teacher: %s", d->teacher_test->status_msg);
      break;
    }
    int64_t c, v;
    d->be->ops->accuracy(d->be, tl->shape.dims[0], dd_shape_count_range(&tl->shape, 1, tl->shape.ndim), 1, tl->data,
                         d->labels_dev, 1, 0, 0, &c, &v, NULL, NULL);
    correct += c;
    valid += v;
  }
  dd_data_close(src);
  if (r) {
    if (d->comm) d->comm->ops->abort(d->comm, err);
    return r;
  }
  if (d->comm) { /* each rank measured its share of every TEST batch */
    float cv[2] = {(float)correct, (float)valid};
    float *dev = d->be->ops->alloc(d->be, sizeof cv);
    if (!dev) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
    d->be->ops->upload(d->be, dev, cv, sizeof cv);
    r = d->comm->ops->allreduce_sum(d->comm, dev, 2, err, errlen);
    if (!r) d->be->ops->download(d->be, cv, dev, sizeof cv);
    d->be->ops->free(d->be, dev);
    if (r) return r;
    correct = (int64_t)cv[0];
    valid = (int64_t)cv[1];
  }
  *acc = valid ? (double)correct / (double)valid : 0;
  *images = valid;
  return 0;
}

/* The teacher's accuracy before training: in FP32, and again in bf16 when it runs in bf16 (the
 * accuracy it is distilled with; the metrics record keeps both). */
static int measure_teacher(struct dd_distill *d, char *err, size_t errlen) {
  if (!d->has_teacher || !d->teacher_test || !d->data_layer[1] || d->solver_param->n_test_iter == 0) return 0;
  if (d->job->distill && !d->job->distill->test_teacher) return 0;
  int batches = d->solver_param->test_iter[0], bf16 = 0;
  int64_t valid = 0;
  double fp32_acc = -1;
  int r = teacher_accuracy(d, &d->teacher_acc, &valid, err, errlen);
  if (!r && d->teacher_precision == DD_PRECISION_BF16 &&
      !(r = dd_net_set_precision(d->teacher_test, DD_PRECISION_BF16, &bf16, NULL, err, errlen)) && bf16 &&
      !(r = dd_plan_build_blocked(d->teacher_test, NULL, 0))) { /* as the teacher runs (distill_build.c) */
    fp32_acc = d->teacher_acc;
    r = teacher_accuracy(d, &d->teacher_acc, &valid, err, errlen);
  }
  if (r) return r;
  fprintf(d->metrics, "{\"type\":\"teacher\",");
  jnum(d->metrics, "accuracy", d->teacher_acc, 1);
  if (fp32_acc >= 0) jnum(d->metrics, "accuracy_fp32", fp32_acc, 1);
  fprintf(d->metrics, "\"precision\":\"%s\",", fp32_acc >= 0 ? "bf16" : "fp32");
  fprintf(d->metrics, "\"batches\":%d,\"images\":%lld,\"checksum\":\"%016llx\",", batches, (long long)valid,
          (unsigned long long)d->teacher.checksum);
  jtime(d->metrics);
  fprintf(d->metrics, "}\n");
  fflush(d->metrics);
  if (fp32_acc >= 0)
    dd_distill_log(d, 2, "teacher accuracy %.4f in FP32, %.4f in bf16 (what it is distilled with), on %lld TEST images",
                   fp32_acc, d->teacher_acc, (long long)valid);
  if (d->hooks.teacher)
    d->hooks.teacher(d->hooks.ctx, d->teacher_acc, batches);
  else
    dd_distill_log(d, 2, "teacher accuracy %.4f on %lld TEST images (%d batches)", d->teacher_acc, (long long)valid, batches);
  return 0;
}

int dd_distill_resume(dd_distill *d, int *resumed_iter, char *err, size_t errlen) {
  *resumed_iter = 0;
  char dir[4096], state[4400];
  snprintf(dir, sizeof dir, "%s/snapshots", d->out_dir);
  int best = 0;
  if (!dd_snapshot_find(dir, d->job->name, &best, state, sizeof state)) return 0;
  int r = dd_solver_restore(d->solver, state, err, errlen);
  if (r) return r;
  *resumed_iter = best;
  dd_distill_log(d, 2, "resumed from %s", state);
  return 0;
}

int dd_distill_run(dd_distill *d, char *err, size_t errlen) {
  const Caffe__SolverParameter *sp = d->solver_param;
  int iter = dd_solver_iter(d->solver);
  int iter_size = sp->iter_size > 0 ? sp->iter_size : 1;
  /* the data streams continue where a resumed run stopped */
  int64_t test_batches = 0;
  if (sp->test_interval > 0 && sp->n_test_iter > 0)
    for (int k = 0; k < iter; k += sp->test_interval)
      if (k > 0 || sp->test_initialization) test_batches += sp->test_iter[0];
  if (d->hooks.started) d->hooks.started(d->hooks.ctx, iter, d->has_teacher ? d->teacher.checksum : 0);
  int r = open_source(d, 0, (int64_t)iter * iter_size, &d->src[0], err, errlen);
  if (!r && d->data_layer[1]) r = open_source(d, 1, test_batches, &d->src[1], err, errlen);
  if (r) {
    if (d->comm) d->comm->ops->abort(d->comm, err);
    return r;
  }
  d->train_size = dd_data_size(d->src[0]);
  if ((r = measure_teacher(d, err, errlen))) return r;
  r = dd_solver_solve(d->solver, err, errlen);
  if (d->failed) return dd_errorf(DD_ECORRUPT, err, errlen, "%s", d->fail_msg);
  if (r) return r;
  if (dd_solver_stopped(d->solver) == DD_STOP_ABORT) return 0;
  if (!dd_solver_stopped(d->solver) && dd_solver_test_net(d->solver) && d->last_test_iter != dd_solver_iter(d->solver)) {
    dd_solver_stats st;
    if ((r = dd_solver_test(d->solver, &st, err, errlen))) return r;
  }
  if (d->has_teacher && (r = dd_teacher_verify(&d->teacher, err, errlen))) {
    dd_distill_log(d, 0, "%s", err);
    return r;
  }
  return 0;
}

int dd_distill_test_now(dd_distill *d, char *err, size_t errlen) {
  dd_solver_stats st;
  return dd_solver_test(d->solver, &st, err, errlen);
}

double dd_distill_student_accuracy(const dd_distill *d) { return d->student_acc; }
double dd_distill_teacher_accuracy(const dd_distill *d) { return d->teacher_acc; }
int dd_distill_stopped(const dd_distill *d) { return d->solver ? dd_solver_stopped(d->solver) : 0; }
int dd_distill_iter(const dd_distill *d) { return d->solver ? dd_solver_iter(d->solver) : 0; }
uint64_t dd_distill_teacher_checksum(const dd_distill *d) { return d->has_teacher ? d->teacher.checksum : 0; }

void dd_distill_destroy(dd_distill *d) {
  if (!d) return;
  for (int ph = 0; ph < 2; ph++) {
    dd_data_close(d->src[ph]);
    if (d->data_layer[ph]) caffe__layer_parameter__free_unpacked(d->data_layer[ph], NULL);
    free(d->data_top[ph][0]);
    free(d->data_top[ph][1]);
  }
  dd_solver_destroy(d->solver);
  if (d->snap_fd >= 0) close(d->snap_fd);
  if (d->out_fd >= 0) close(d->out_fd);
  dd_net_destroy(d->teacher_test);
  dd_teacher_destroy(&d->teacher);
  if (d->labels_dev) d->be->ops->free(d->be, d->labels_dev);
  for (int h = 0; h < MAX_HINTS; h++) {
    free(d->hint_teacher_blob[h]);
    free(d->hint_input[h]);
  }
  free(d->teacher_input);
  free(d->teacher_logits);
  free(d->student_logits);
  if (d->student_param) caffe__net_parameter__free_unpacked(d->student_param, NULL);
  if (d->solver_param) caffe__solver_parameter__free_unpacked(d->solver_param, NULL);
  if (d->metrics) fclose(d->metrics);
  if (d->own_be) dd_cpu_backend_destroy(d->be);
  if (d->job) distilld__distill_job__free_unpacked(d->job, NULL);
  free(d->base_dir);
  free(d->out_dir);
  free(d->snap_prefix);
  free(d);
}

