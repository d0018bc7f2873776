/* bench_kd: times one whole knowledge-distillation training step on a chosen device, built the way
 * the trainer (core/train/distill.c) builds it:
 *
 *   bench_kd --device cpu|cuda:N [--iters N] [--warmup W] [--threads T] [--precision fp32|bf16]
 *            --teacher T.prototxt --student S.prototxt [--temperature 4] [--alpha 0.9]
 *
 * --precision bf16 runs both nets' convolutions in bf16 where the backend has a kernel for them
 * (the job settings teacher_precision and student_precision; FP32 elsewhere, which the plan
 * lines say).
 *
 * The teacher is a deploy net with an Input layer (scripts/gen_wrn.py --mode deploy); its batch is
 * set to the student's. It gets random weights from its fillers, BatchNorm statistics of mean 0,
 * variance 1 (so activations stay finite), written to a temporary .caffemodel and loaded through
 * the teacher API (core/train/teacher.h): frozen (stored statistics, TEST phase, no backward) and
 * folded (BatchNorm + Scale into the convolutions), exactly as a job's teacher.
 * The student is a TRAIN net with an Input layer whose tops are the data and the labels
 * (scripts/gen_wrn.py --mode bench) and a SoftmaxWithLoss on its logits (the last InnerProduct).
 * It gains what dd_distill_create adds: an Input "distill_teacher_logits" and a KDLoss with
 * loss_weight alpha, the cross entropy keeping 1 - alpha. The solver is core/train/solver.c's SGD
 * (lr 0.01 fixed, momentum 0.9, weight decay 5e-4) and its before_forward hook does what the
 * trainer's does: teacher forward, then a device copy of its logits into the student.
 *
 * One step = dd_solver_step(1): teacher forward (no backward), logits copy, student forward,
 * backward and SGD update; then the backend's synchronize before the clock is read. The data
 * (fixed pseudo-random images, labels i mod classes) is uploaded once, before the loop, into the
 * student's data and label and the teacher's input. Reported: the median step over N iterations
 * after W warm-up steps, images/s, and (separately timed afterwards, not part of the step) the
 * median teacher forward alone. The teacher's checksum is verified at the end, and the losses
 * must be finite. The last line, "RESULT teacher=... student=... device=... batch=... ms=...
 * img_s=... teacher_ms=... mode=fp32|bf16 impl=distilld", is for scripts (scripts/device_check.sh).
 *
 * --teacher none times the student's training step alone: no teacher, no KDLoss, the cross
 * entropy with its full weight (teacher=none teacher_ms=0 in the RESULT line).
 * --profile 1 runs `iters` more steps with every plan step timed (core/net/plan.h) and prints
 * where they went, by kind of step, for each net. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "format/caffe_io.h"
#include "devices/devices.h"
#include "cpu/cpu_blas.h"
#include "net/net.h"
#include "train/solver.h"
#include "train/teacher.h"
#include "format/textformat.h"
#include "test_bench.h"

/* ---- building ------------------------------------------------------------------------------------ */

/* The top of the last InnerProduct layer of a NetParameter (the logits, by the trainer's
 * convention), or NULL. */
static const char *last_ip_top(const Caffe__NetParameter *p) {
  for (size_t i = p->n_layer; i-- > 0;)
    if (p->layer[i]->type && !strcmp(p->layer[i]->type, "InnerProduct") && p->layer[i]->n_top > 0)
      return p->layer[i]->top[0];
  return NULL;
}

static Caffe__LayerParameter *first_input(const Caffe__NetParameter *p) {
  for (size_t i = 0; i < p->n_layer; i++)
    if (p->layer[i]->type && !strcmp(p->layer[i]->type, "Input")) return p->layer[i];
  return NULL;
}

/* Appends the layers of prototxt `text` to `net` (taking them over). */
static int append_text(Caffe__NetParameter *net, const char *text, char *err, size_t errlen) {
  ProtobufCMessage *m = NULL;
  int r = dd_text_parse(&m, &caffe__net_parameter__descriptor, text, strlen(text), "<bench_kd>", err, errlen);
  if (r) return r;
  Caffe__NetParameter *add = (Caffe__NetParameter *)m;
  Caffe__LayerParameter **nl = realloc(net->layer, (net->n_layer + add->n_layer + 1) * sizeof *nl);
  if (!nl) {
    caffe__net_parameter__free_unpacked(add, NULL);
    snprintf(err, errlen, "out of memory");
    return 1;
  }
  net->layer = nl;
  for (size_t i = 0; i < add->n_layer; i++) net->layer[net->n_layer++] = add->layer[i];
  add->n_layer = 0;
  caffe__net_parameter__free_unpacked(add, NULL);
  return 0;
}

/* Random teacher weights as a .caffemodel at `path`: the fillers' values (seed 1) and BatchNorm
 * statistics mean 0, variance 1, factor 1. */
static int write_teacher_weights(const Caffe__NetParameter *tp, dd_backend *be, const char *path, char *err,
                                 size_t errlen) {
  dd_net *n = NULL;
  int r = dd_net_create(&n, tp, CAFFE__PHASE__TEST, be, 1, NULL, err, errlen);
  if (r) return r;
  Caffe__NetParameter *w = dd_net_to_proto(n, 0);
  dd_net_destroy(n);
  if (!w) {
    snprintf(err, errlen, "out of memory");
    return 1;
  }
  for (size_t i = 0; i < w->n_layer; i++) {
    Caffe__LayerParameter *l = w->layer[i];
    if (!l->type || strcmp(l->type, "BatchNorm") || l->n_blobs < 3) continue;
    for (size_t k = 0; k < l->blobs[0]->n_data; k++) l->blobs[0]->data[k] = 0.0f;
    for (size_t k = 0; k < l->blobs[1]->n_data; k++) l->blobs[1]->data[k] = 1.0f;
    for (size_t k = 0; k < l->blobs[2]->n_data; k++) l->blobs[2]->data[k] = 1.0f;
  }
  r = dd_caffemodel_write(w, path, err, errlen);
  caffe__net_parameter__free_unpacked(w, NULL);
  return r;
}

/* ---- the step ------------------------------------------------------------------------------------ */

typedef struct {
  dd_backend *be;
  dd_net *teacher;
  const char *teacher_logits;
  int failed;
  char msg[1100];
} hook_ctx;

/* The trainer's before_forward for the TRAIN phase, minus the data pipeline (the inputs already
 * hold the batch): teacher forward, logits into the student. */
static int before_forward(void *ctx, dd_net *net, Caffe__Phase phase, double *wait_ms) {
  hook_ctx *h = ctx;
  *wait_ms = 0;
  if (phase != CAFFE__PHASE__TRAIN) return 0;
  if (dd_net_forward(h->teacher, NULL)) {
    snprintf(h->msg, sizeof h->msg, "teacher: %.1000s", h->teacher->status_msg);
    h->failed = 1;
    return h->teacher->status ? h->teacher->status : 1;
  }
  dd_tensor *src = dd_net_blob(h->teacher, h->teacher_logits), *dst = dd_net_blob(net, "distill_teacher_logits");
  h->be->ops->copy(h->be, dst->data, src->data, (size_t)dst->count * sizeof(float));
  return 0;
}

static double blob_scalar(dd_net *n, const char *name) {
  dd_tensor *t = dd_net_blob(n, name);
  if (!t) return NAN;
  float v;
  t->be->ops->download(t->be, &v, t->data, sizeof v);
  return v;
}

static void usage(void) {
  fprintf(stderr,
          "usage: bench_kd --device cpu|cuda:N [--iters N] [--warmup W] [--threads T] [--precision fp32|bf16]\n"
          "                --teacher T.prototxt|none --student S.prototxt [--temperature 4] [--alpha 0.9] [--profile 1]\n"
          "  --teacher none: the student's training step alone; --profile 1: then where the time goes, by plan step\n");
}

/* ---- the benchmark, step by step ------------------------------------------------------------------ */

typedef struct {
  const char *device, *tpath, *spath;
  int threads, iters, warmup;
  float temp, alpha;
  int precision; /* DD_PRECISION_* */
  int profile;   /* after the timed steps, `iters` more profiled by plan step (net/plan.h) */
  int alone;     /* --teacher none: the student's step alone */
} kd_opts;

/* Reads the options into *o; -1 to go on, else the exit status (usage printed). */
static int parse_args(kd_opts *o, int argc, char **argv) {
  *o = (kd_opts){.device = "cpu", .threads = 2, .iters = 10, .warmup = 2, .temp = 4.0f, .alpha = 0.9f};
  for (int i = 1; i < argc; i += 2) { /* every option takes a value */
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage();
      return 0;
    }
    if (!v) {
      usage();
      return 2;
    }
    if (!strcmp(a, "--device")) o->device = v;
    else if (!strcmp(a, "--iters")) o->iters = atoi(v);
    else if (!strcmp(a, "--warmup")) o->warmup = atoi(v);
    else if (!strcmp(a, "--threads")) o->threads = atoi(v);
    else if (!strcmp(a, "--teacher")) o->tpath = v;
    else if (!strcmp(a, "--student")) o->spath = v;
    else if (!strcmp(a, "--temperature")) o->temp = (float)atof(v);
    else if (!strcmp(a, "--alpha")) o->alpha = (float)atof(v);
    else if (!strcmp(a, "--profile")) o->profile = atoi(v);
    else if (!strcmp(a, "--precision") && (!strcmp(v, "fp32") || !strcmp(v, "bf16")))
      o->precision = !strcmp(v, "bf16") ? DD_PRECISION_BF16 : DD_PRECISION_FP32;
    else {
      usage();
      return 2;
    }
  }
  if (!o->tpath || !o->spath) {
    usage();
    return 2;
  }
  o->alone = !strcmp(o->tpath, "none");
  if (!(o->temp > 0) || !(o->alpha >= 0 && o->alpha <= 1)) {
    fprintf(stderr, "bench_kd: --temperature must be > 0 and --alpha in [0, 1]\n");
    return 2;
  }
  if (o->threads < 1) o->threads = 1;
  if (o->iters < 1) o->iters = 1;
  if (o->warmup < 0) o->warmup = 0;
  return -1;
}

/* Everything the benchmark holds; kd_free releases it. */
typedef struct {
  kd_opts o;
  dd_backend *be;
  Caffe__NetParameter *tp, *sp;
  Caffe__SolverParameter *solp;
  dd_teacher teacher;
  dd_solver *solver;
  hook_ctx hc;
  float *host;
  double *step_s, *teach_s; /* (warmup + iters), (iters) seconds */
  char wpath[32];           /* the teacher's temporary .caffemodel */
  int wfd;
  const char *tname, *sname;
  const char *sdata, *slabel, *slogits, *ce_top, *tinput, *tlogits;
  int batch;
  int64_t classes;
  dd_net *sn;
  dd_tensor *tin_t, *tl_t, *sd_t, *sl_t;
  double ce0, kd0, ce1, kd1; /* the losses of the first and the last step */
  char err[2048];
} kd_bench;

/* The student's data, labels and logits; the teacher's input at the student's batch (as the
 * trainer sets it), its random weights, then the teacher itself, frozen and folded. */
static int build_teacher(kd_bench *b) {
  /* the student's inputs: the first Input layer's tops are the data and the labels */
  Caffe__LayerParameter *sin = first_input(b->sp);
  b->slogits = last_ip_top(b->sp);
  if (!sin || sin->n_top < 2 || !sin->input_param || sin->input_param->n_shape < 1 ||
      sin->input_param->shape[0]->n_dim < 1 || !b->slogits) {
    fprintf(stderr, "bench_kd: %s: the student needs an Input layer with tops data and label (gen_wrn.py --mode bench) "
                    "and an InnerProduct for its logits\n", b->o.spath);
    return 1;
  }
  b->sdata = sin->top[0], b->slabel = sin->top[1];
  b->batch = (int)sin->input_param->shape[0]->dim[0];
  if (b->o.alone) return 0;

  /* the teacher: its Input takes the student's batch (as the trainer sets it) */
  Caffe__LayerParameter *tin = first_input(b->tp);
  if (!tin || !tin->input_param || tin->input_param->n_shape < 1 || tin->input_param->shape[0]->n_dim < 1) {
    fprintf(stderr, "bench_kd: %s: a deploy net with an Input layer (and its shape) is needed\n", b->o.tpath);
    return 1;
  }
  tin->input_param->shape[0]->dim[0] = b->batch;
  b->tinput = tin->top[0];
  if ((b->wfd = mkstemp(b->wpath)) < 0) {
    perror("bench_kd: mkstemp");
    return 1;
  }
  close(b->wfd);
  double t0 = now();
  if (write_teacher_weights(b->tp, b->be, b->wpath, b->err, sizeof b->err)) {
    fprintf(stderr, "bench_kd: teacher weights: %s\n", b->err);
    return 1;
  }
  const char *wlist[1] = {b->wpath};
  int r = dd_teacher_create(&b->teacher, b->tp, wlist, 1, b->be, 1, b->err, sizeof b->err);
  unlink(b->wpath);
  if (r) {
    fprintf(stderr, "bench_kd: teacher: %s\n", b->err);
    return 1;
  }
  b->tlogits = last_ip_top(b->teacher.net->param);
  b->tin_t = dd_net_blob(b->teacher.net, b->tinput);
  b->tl_t = b->tlogits ? dd_net_blob(b->teacher.net, b->tlogits) : NULL;
  if (!b->tin_t || !b->tl_t) {
    fprintf(stderr, "bench_kd: %s: the teacher has no input or logits (last InnerProduct) blob\n", b->o.tpath);
    return 1;
  }
  printf("teacher %s: %zu layers after folding (%d BatchNorm+Scale pairs into convolutions, %d into a Scale), "
         "built in %.1f s\n",
         b->tname, b->teacher.net->n_layers, b->teacher.folded_conv, b->teacher.folded_scale, now() - t0);
  return 0;
}

/* The student's distillation terms, as dd_distill_create writes them: an Input for the teacher's
 * logits, a KDLoss with loss_weight alpha, and 1 - alpha on the cross entropy. */
static int add_distill_terms(kd_bench *b) {
  if (b->o.alone) {
    for (size_t i = 0; i < b->sp->n_layer; i++)
      if (b->sp->layer[i]->type && !strcmp(b->sp->layer[i]->type, "SoftmaxWithLoss") && b->sp->layer[i]->n_top > 0)
        b->ce_top = b->sp->layer[i]->top[0];
    return 0;
  }
  char sh[256], text[2048];
  size_t used = (size_t)snprintf(sh, sizeof sh, "shape {");
  for (int d = 0; d < b->tl_t->shape.ndim && used < sizeof sh; d++)
    used += (size_t)snprintf(sh + used, sizeof sh - used, " dim: %lld", (long long)b->tl_t->shape.dims[d]);
  if (used < sizeof sh) snprintf(sh + used, sizeof sh - used, " }");
  snprintf(text, sizeof text,
           "layer { name: 'distill_teacher_logits' type: 'Input' top: 'distill_teacher_logits' input_param { %s } "
           "include { phase: TRAIN } }\n"
           "layer { name: 'kd_loss' type: 'KDLoss' bottom: '%s' bottom: 'distill_teacher_logits' top: 'kd_loss' "
           "loss_weight: %.9g distill_loss_param { temperature: %.9g } include { phase: TRAIN } }\n",
           sh, b->slogits, b->o.alpha, b->o.temp);
  if (append_text(b->sp, text, b->err, sizeof b->err)) {
    fprintf(stderr, "bench_kd: %s\n", b->err);
    return 1;
  }
  for (size_t i = 0; i < b->sp->n_layer; i++) {
    Caffe__LayerParameter *lp = b->sp->layer[i];
    if (!lp->type || strcmp(lp->type, "SoftmaxWithLoss") || lp->n_bottom < 1 || strcmp(lp->bottom[0], b->slogits)) continue;
    float *lw = realloc(lp->loss_weight, (lp->n_top + 1) * sizeof *lw);
    if (!lw) return 1;
    lp->loss_weight = lw;
    for (size_t k = 0; k < lp->n_top; k++) lw[k] = k == 0 ? 1.0f - b->o.alpha : 0.0f;
    lp->n_loss_weight = lp->n_top;
    if (lp->n_top > 0) b->ce_top = lp->top[0];
  }
  return 0;
}

/* The student's solver (SGD, the trainer's before_forward hook), checked against the teacher. */
static int build_student(kd_bench *b) {
  const char *soltext = "type: 'SGD' base_lr: 0.01 lr_policy: 'fixed' momentum: 0.9 weight_decay: 0.0005 "
                        "max_iter: 1000000000 display: 0 snapshot: 0 snapshot_after_train: false random_seed: 1";
  if (dd_text_parse((ProtobufCMessage **)&b->solp, &caffe__solver_parameter__descriptor, soltext, strlen(soltext),
                    "<bench_kd solver>", b->err, sizeof b->err)) {
    fprintf(stderr, "bench_kd: %s\n", b->err);
    return 1;
  }
  b->hc = (hook_ctx){.be = b->be, .teacher = b->teacher.net, .teacher_logits = b->tlogits};
  dd_solver_hooks hooks = {.ctx = &b->hc, .before_forward = before_forward};
  if (dd_solver_create(&b->solver, b->solp, b->sp, b->be, 1, b->o.alone ? NULL : &hooks, b->err, sizeof b->err)) {
    fprintf(stderr, "bench_kd: student: %s\n", b->err);
    return 1;
  }
  b->sn = dd_solver_net(b->solver);
  dd_tensor *sd_t = dd_net_blob(b->sn, b->sdata), *sl_t = dd_net_blob(b->sn, b->slabel),
            *slog_t = dd_net_blob(b->sn, b->slogits);
  if (!sd_t || !sl_t || !slog_t) {
    fprintf(stderr, "bench_kd: %s: the student has no blob %s, %s or %s\n", b->o.spath, b->sdata, b->slabel, b->slogits);
    return 1;
  }
  if (!b->o.alone && (!dd_shape_equal(&sd_t->shape, &b->tin_t->shape) || !dd_shape_equal(&slog_t->shape, &b->tl_t->shape))) {
    char x[64] = "?", y[64] = "?", z[64] = "?", w[64] = "?";
    if (sd_t) dd_shape_str(&sd_t->shape, x, sizeof x);
    dd_shape_str(&b->tin_t->shape, y, sizeof y);
    if (slog_t) dd_shape_str(&slog_t->shape, z, sizeof z);
    dd_shape_str(&b->tl_t->shape, w, sizeof w);
    fprintf(stderr, "bench_kd: student data %s / teacher input %s, student logits %s / teacher logits %s: they must agree\n",
            x, y, z, w);
    return 1;
  }
  b->sd_t = sd_t, b->sl_t = sl_t;
  /* the precision of both nets, and the plans they run */
  int bf16t = 0, bf16s = 0;
  if ((!b->o.alone && dd_net_set_precision(b->teacher.net, b->o.precision, &bf16t, NULL, b->err, sizeof b->err)) ||
      dd_net_set_precision(b->sn, b->o.precision, &bf16s, NULL, b->err, sizeof b->err)) {
    fprintf(stderr, "bench_kd: precision: %s\n", b->err);
    return 1;
  }
  /* the frozen teacher keeps blocked activations between its layers, as a job's does */
  if (!b->o.alone && dd_plan_build_blocked(b->teacher.net, NULL, 0)) {
    fprintf(stderr, "bench_kd: out of memory\n");
    return 1;
  }
  /* and the student trains in it, as a job's does (DD_BLOCKED_TRAIN=0: NCHW FP32 activations) */
  if (dd_plan_build_blocked_train(b->sn, NULL, 0)) {
    fprintf(stderr, "bench_kd: out of memory\n");
    return 1;
  }
  char plan[512];
  if (!b->o.alone) {
    dd_plan_describe(b->teacher.net, plan, sizeof plan);
    printf("teacher %s, %d convolutions in bf16; %s\n", b->o.precision ? "bf16" : "fp32", bf16t, plan);
  }
  dd_plan_describe(b->sn, plan, sizeof plan);
  printf("student %s, %d convolutions in bf16; %s\n", b->o.precision ? "bf16" : "fp32", bf16s, plan);
  b->classes = slog_t->count / b->batch;
  return 0;
}

/* Synthetic data, uploaded once: fixed pseudo-random images (student and teacher), labels i mod
 * classes. */
static int upload_data(kd_bench *b) {
  int64_t nh = b->sd_t->count > b->sl_t->count ? b->sd_t->count : b->sl_t->count;
  b->host = malloc((size_t)nh * sizeof *b->host);
  b->step_s = calloc((size_t)(b->o.warmup + b->o.iters), sizeof *b->step_s);
  b->teach_s = calloc((size_t)b->o.iters, sizeof *b->teach_s);
  if (!b->host || !b->step_s || !b->teach_s) {
    fprintf(stderr, "bench_kd: out of memory\n");
    return 1;
  }
  uint32_t s = 12345;
  for (int64_t i = 0; i < b->sd_t->count; i++) {
    s = s * 1664525u + 1013904223u;
    b->host[i] = (float)(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
  }
  dd_tensor_set_data(b->sd_t, b->host);
  if (b->tin_t) dd_tensor_set_data(b->tin_t, b->host);
  for (int64_t i = 0; i < b->sl_t->count; i++) b->host[i] = (float)(i % b->classes);
  dd_tensor_set_data(b->sl_t, b->host);
  b->be->ops->synchronize(b->be);
  return 0;
}

/* The timed steps (warm-up first), then the teacher's forward alone; the backend's status and the
 * teacher's checksum afterwards. */
static int run_steps(kd_bench *b) {
  dd_backend *be = b->be;
  b->ce0 = b->kd0 = b->ce1 = b->kd1 = NAN;
  for (int it = 0; it < b->o.warmup + b->o.iters; it++) {
    double a = now();
    if (dd_solver_step(b->solver, 1, b->err, sizeof b->err)) {
      fprintf(stderr, "bench_kd: step %d: %s%s%s\n", it, b->err, b->hc.failed ? ": " : "", b->hc.failed ? b->hc.msg : "");
      return 1;
    }
    be->ops->synchronize(be);
    b->step_s[it] = now() - a;
    if (it == 0) {
      b->ce0 = b->ce_top ? blob_scalar(b->sn, b->ce_top) : 0;
      b->kd0 = blob_scalar(b->sn, "kd_loss");
    }
  }
  b->ce1 = b->ce_top ? blob_scalar(b->sn, b->ce_top) : 0;
  b->kd1 = blob_scalar(b->sn, "kd_loss");
  /* the teacher's forward alone, for the split (not part of the step above) */
  for (int it = 0; it < b->o.iters && !b->o.alone; it++) {
    be->ops->synchronize(be);
    double a = now();
    if (dd_net_forward(b->teacher.net, NULL)) {
      fprintf(stderr, "bench_kd: teacher: %s\n", b->teacher.net->status_msg);
      return 1;
    }
    be->ops->synchronize(be);
    b->teach_s[it] = now() - a;
  }
  if (be->ops->status && be->ops->status(be, b->err, sizeof b->err)) {
    fprintf(stderr, "bench_kd: the backend failed: %s\n", b->err);
    return 1;
  }
  if (!b->o.alone && dd_teacher_verify(&b->teacher, b->err, sizeof b->err)) {
    fprintf(stderr, "bench_kd: %s\n", b->err);
    return 1;
  }
  return 0;
}

/* The report: medians, the split, images/s, and the RESULT line for scripts. */
static int report(kd_bench *b) {
  int iters = b->o.iters, batch = b->batch;
  double *timed = b->step_s + b->o.warmup;
  double tmin = 1e30, tmax = 0;
  for (int i = 0; i < iters; i++) {
    if (timed[i] < tmin) tmin = timed[i];
    if (timed[i] > tmax) tmax = timed[i];
  }
  double med = median(timed, iters), tmed = median(b->teach_s, iters);
  if (b->o.alone) {
    printf("\nthe student %s's training step alone on %s: batch %d, %lld classes\n", b->sname, b->o.device, batch,
           (long long)b->classes);
    printf("  losses: first step CE %.4f; last step CE %.4f\n", b->ce0, b->ce1);
    printf("  step (forward + backward + SGD): median %.2f ms over %d (min %.2f, max %.2f), %d warm-up\n", med * 1e3,
           iters, tmin * 1e3, tmax * 1e3, b->o.warmup);
    printf("  %.1f images/s\n", batch / med);
    tmed = 0;
    b->kd1 = 0;
  } else {
    printf("\nKD step %s -> %s on %s: batch %d, %lld classes, T %g, alpha %g\n", b->tname, b->sname, b->o.device,
           batch, (long long)b->classes, b->o.temp, b->o.alpha);
    printf("  losses: first step CE %.4f KD %.4f; last step CE %.4f KD %.4f\n", b->ce0, b->kd0, b->ce1, b->kd1);
    printf("  step (teacher forward + student forward + backward + SGD): median %.2f ms over %d (min %.2f, max %.2f), "
           "%d warm-up\n", med * 1e3, iters, tmin * 1e3, tmax * 1e3, b->o.warmup);
    printf("  teacher forward alone: median %.2f ms (%.0f%% of the step)\n", tmed * 1e3, 100 * tmed / med);
    printf("  %.1f images/s; teacher checksum unchanged\n", batch / med);
  }
  if (!isfinite(b->ce1) || !isfinite(b->kd1)) {
    fprintf(stderr, "bench_kd: the losses are not finite (CE %g, KD %g)\n", b->ce1, b->kd1);
    return 1;
  }
  printf("RESULT teacher=%s student=%s device=%s batch=%d ms=%.2f img_s=%.2f teacher_ms=%.2f mode=%s impl=distilld\n",
         b->o.alone ? "none" : b->tname, b->sname, b->o.device, batch, med * 1e3, batch / med, tmed * 1e3,
         b->o.precision ? "bf16" : "fp32");
  return 0;
}

/* --profile: `iters` more steps with both nets' plans timed step by step (each step synchronized,
 * so the steps run a little slower than the timed ones above), and where their time went. */
static int profile(kd_bench *b) {
  if (!b->o.profile) return 0;
  dd_net *t = b->o.alone ? NULL : b->teacher.net, *s = b->sn;
  if ((t && dd_plan_profile(t, 1)) || dd_plan_profile(s, 1)) {
    fprintf(stderr, "bench_kd: out of memory\n");
    return 1;
  }
  double all = 0;
  for (int it = 0; it < b->o.iters; it++) {
    double a = now();
    if (dd_solver_step(b->solver, 1, b->err, sizeof b->err)) {
      fprintf(stderr, "bench_kd: profiled step %d: %s\n", it, b->err);
      return 1;
    }
    b->be->ops->synchronize(b->be);
    all += now() - a;
  }
  static char rep[4096];
  double sum = (t ? dd_plan_profile_total(t) : 0) + dd_plan_profile_total(s);
  printf("\nprofile over %d more steps (each plan step synchronized and timed): %.2f ms a step\n", b->o.iters,
         1e3 * all / b->o.iters);
  if (t) {
    dd_plan_profile_report(t, b->o.iters, rep, sizeof rep);
    printf("  teacher %s (forward):\n%s", b->tname, rep);
  }
  dd_plan_profile_report(s, b->o.iters, rep, sizeof rep);
  printf("  student %s:\n%s", b->sname, rep);
  printf("  outside the plans (loss, solver update, gradients cleared): %.2f ms a step\n",
         1e3 * (all - sum) / b->o.iters);
  if (t) dd_plan_profile(t, 0);
  dd_plan_profile(s, 0);
  return 0;
}

static void kd_free(kd_bench *b) {
  if (b->wfd >= 0) unlink(b->wpath);
  free(b->host);
  free(b->step_s);
  free(b->teach_s);
  dd_solver_destroy(b->solver);
  dd_teacher_destroy(&b->teacher);
  if (b->solp) caffe__solver_parameter__free_unpacked(b->solp, NULL);
  if (b->sp) caffe__net_parameter__free_unpacked(b->sp, NULL);
  if (b->tp) caffe__net_parameter__free_unpacked(b->tp, NULL);
  dd_backend_destroy(b->be);
}

int main(int argc, char **argv) {
  char blas_err[512] = "";
  /* First thing: OpenBLAS must get its kernels before it loads (core/cpu/cpu_blas.h). Only the CPU
   * backend needs it: a GPU machine without OpenBLAS still runs --device cuda:N. */
  int no_blas = dd_cpu_ensure_fast_blas(blas_err, sizeof blas_err);
  static kd_bench b = {.wfd = -1, .wpath = "/tmp/bench_kd_teacher_XXXXXX"};
  int rc = parse_args(&b.o, argc, argv);
  if (rc >= 0) return rc;
  const char *device = b.o.device;
  if (no_blas && !strncmp(device, "cpu", 3)) {
    fprintf(stderr, "bench_kd: %s\n", blas_err);
    return 1;
  }
  if (no_blas) printf("(no OpenBLAS on this machine: %s; not needed on %s)\n", blas_err, device);
  if (dd_backend_create(&b.be, device, b.o.threads, b.err, sizeof b.err)) {
    fprintf(stderr, "bench_kd: %s\n", b.err);
    return 1;
  }
  printf("device %s: %s\n", device, dd_backend_describe(b.be));
  rc = 1;
  if ((!b.o.alone && dd_net_read_text(&b.tp, b.o.tpath, b.err, sizeof b.err)) ||
      dd_net_read_text(&b.sp, b.o.spath, b.err, sizeof b.err)) {
    fprintf(stderr, "bench_kd: %s\n", b.err);
  } else {
    b.tname = b.o.alone ? "none" : b.tp->name ? b.tp->name : b.o.tpath, b.sname = b.sp->name ? b.sp->name : b.o.spath;
    if (!build_teacher(&b) && !add_distill_terms(&b) && !build_student(&b) && !upload_data(&b) && !run_steps(&b) &&
        !report(&b) && !profile(&b))
      rc = 0;
  }
  kd_free(&b);
  return rc;
}
