/* bench_kd: times one whole knowledge-distillation training step on a chosen device, built the way
 * the trainer (core/distill.c) builds it:
 *
 *   bench_kd --device cpu|cuda:N [--iters N] [--warmup W] [--threads T]
 *            --teacher T.prototxt --student S.prototxt [--temperature 4] [--alpha 0.9]
 *
 * The teacher is a deploy net with an Input layer (scripts/gen_wrn.py --mode deploy); its batch is
 * set to the student's. It gets random weights from its fillers, BatchNorm statistics of mean 0,
 * variance 1 (so activations stay finite), written to a temporary .caffemodel and loaded through
 * the teacher API (core/teacher.h): frozen (stored statistics, TEST phase, no backward) and folded
 * (BatchNorm + Scale into the convolutions), exactly as a job's teacher.
 * The student is a TRAIN net with an Input layer whose tops are the data and the labels
 * (scripts/gen_wrn.py --mode bench) and a SoftmaxWithLoss on its logits (the last InnerProduct).
 * It gains what dd_distill_create adds: an Input "distill_teacher_logits" and a KDLoss with
 * loss_weight alpha, the cross entropy keeping 1 - alpha. The solver is core/solver.c's SGD
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
 * img_s=... teacher_ms=... mode=fp32 impl=distilld", is for scripts (scripts/device_check.sh). */
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

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

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
          "usage: bench_kd --device cpu|cuda:N [--iters N] [--warmup W] [--threads T]\n"
          "                --teacher T.prototxt --student S.prototxt [--temperature 4] [--alpha 0.9]\n");
}

int main(int argc, char **argv) {
  char err[2048], blas_err[512] = "";
  /* First thing: OpenBLAS must get its kernels before it loads (core/cpu_blas.h). Only the CPU
   * backend needs it: a GPU machine without OpenBLAS still runs --device cuda:N. */
  int no_blas = dd_cpu_ensure_fast_blas(blas_err, sizeof blas_err);
  const char *device = "cpu", *tpath = NULL, *spath = NULL;
  int threads = 2, iters = 10, warmup = 2;
  float temp = 4.0f, alpha = 0.9f;
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
    if (!strcmp(a, "--device")) device = v;
    else if (!strcmp(a, "--iters")) iters = atoi(v);
    else if (!strcmp(a, "--warmup")) warmup = atoi(v);
    else if (!strcmp(a, "--threads")) threads = atoi(v);
    else if (!strcmp(a, "--teacher")) tpath = v;
    else if (!strcmp(a, "--student")) spath = v;
    else if (!strcmp(a, "--temperature")) temp = (float)atof(v);
    else if (!strcmp(a, "--alpha")) alpha = (float)atof(v);
    else {
      usage();
      return 2;
    }
  }
  if (!tpath || !spath) {
    usage();
    return 2;
  }
  if (!(temp > 0) || !(alpha >= 0 && alpha <= 1)) {
    fprintf(stderr, "bench_kd: --temperature must be > 0 and --alpha in [0, 1]\n");
    return 2;
  }
  if (threads < 1) threads = 1;
  if (iters < 1) iters = 1;
  if (warmup < 0) warmup = 0;

  int rc = 1;
  dd_backend *be = NULL;
  Caffe__NetParameter *tp = NULL, *sp = NULL;
  Caffe__SolverParameter *solp = NULL;
  dd_teacher teacher = {0};
  dd_solver *solver = NULL;
  float *host = NULL;
  double *step_s = NULL, *teach_s = NULL;
  char wpath[] = "/tmp/bench_kd_teacher_XXXXXX";
  int wfd = -1;
  const char *ce_top = NULL;

  if (no_blas && !strncmp(device, "cpu", 3)) {
    fprintf(stderr, "bench_kd: %s\n", blas_err);
    return 1;
  }
  if (no_blas) printf("(no OpenBLAS on this machine: %s; not needed on %s)\n", blas_err, device);
  if (dd_backend_create(&be, device, threads, err, sizeof err)) {
    fprintf(stderr, "bench_kd: %s\n", err);
    return 1;
  }
  printf("device %s: %s\n", device, dd_backend_describe(be));
  if (dd_net_read_text(&tp, tpath, err, sizeof err) || dd_net_read_text(&sp, spath, err, sizeof err)) {
    fprintf(stderr, "bench_kd: %s\n", err);
    goto done;
  }
  const char *tname = tp->name ? tp->name : tpath, *sname = sp->name ? sp->name : spath;

  /* the student's inputs: the first Input layer's tops are the data and the labels */
  Caffe__LayerParameter *sin = first_input(sp);
  const char *slogits = last_ip_top(sp);
  if (!sin || sin->n_top < 2 || !sin->input_param || sin->input_param->n_shape < 1 ||
      sin->input_param->shape[0]->n_dim < 1 || !slogits) {
    fprintf(stderr, "bench_kd: %s: the student needs an Input layer with tops data and label (gen_wrn.py --mode bench) "
                    "and an InnerProduct for its logits\n", spath);
    goto done;
  }
  char *sdata = sin->top[0], *slabel = sin->top[1];
  int batch = (int)sin->input_param->shape[0]->dim[0];

  /* the teacher: its Input takes the student's batch (as the trainer sets it) */
  Caffe__LayerParameter *tin = first_input(tp);
  if (!tin || !tin->input_param || tin->input_param->n_shape < 1 || tin->input_param->shape[0]->n_dim < 1) {
    fprintf(stderr, "bench_kd: %s: a deploy net with an Input layer (and its shape) is needed\n", tpath);
    goto done;
  }
  tin->input_param->shape[0]->dim[0] = batch;
  const char *tinput = tin->top[0];
  if ((wfd = mkstemp(wpath)) < 0) {
    perror("bench_kd: mkstemp");
    goto done;
  }
  close(wfd);
  double t0 = now();
  if (write_teacher_weights(tp, be, wpath, err, sizeof err)) {
    fprintf(stderr, "bench_kd: teacher weights: %s\n", err);
    goto done;
  }
  const char *wlist[1] = {wpath};
  int r = dd_teacher_create(&teacher, tp, wlist, 1, be, 1, err, sizeof err);
  unlink(wpath);
  if (r) {
    fprintf(stderr, "bench_kd: teacher: %s\n", err);
    goto done;
  }
  const char *tlogits = last_ip_top(teacher.net->param);
  dd_tensor *tin_t = dd_net_blob(teacher.net, tinput), *tl_t = tlogits ? dd_net_blob(teacher.net, tlogits) : NULL;
  if (!tin_t || !tl_t) {
    fprintf(stderr, "bench_kd: %s: the teacher has no input or logits (last InnerProduct) blob\n", tpath);
    goto done;
  }
  printf("teacher %s: %zu layers after folding (%d BatchNorm+Scale pairs into convolutions, %d into a Scale), "
         "built in %.1f s\n",
         tname, teacher.net->n_layers, teacher.folded_conv, teacher.folded_scale, now() - t0);

  /* the student's distillation terms, as dd_distill_create writes them */
  {
    char sh[256], text[2048];
    size_t used = (size_t)snprintf(sh, sizeof sh, "shape {");
    for (int d = 0; d < tl_t->shape.ndim && used < sizeof sh; d++)
      used += (size_t)snprintf(sh + used, sizeof sh - used, " dim: %lld", (long long)tl_t->shape.dims[d]);
    if (used < sizeof sh) snprintf(sh + used, sizeof sh - used, " }");
    snprintf(text, sizeof text,
             "layer { name: 'distill_teacher_logits' type: 'Input' top: 'distill_teacher_logits' input_param { %s } "
             "include { phase: TRAIN } }\n"
             "layer { name: 'kd_loss' type: 'KDLoss' bottom: '%s' bottom: 'distill_teacher_logits' top: 'kd_loss' "
             "loss_weight: %.9g distill_loss_param { temperature: %.9g } include { phase: TRAIN } }\n",
             sh, slogits, alpha, temp);
    if (append_text(sp, text, err, sizeof err)) {
      fprintf(stderr, "bench_kd: %s\n", err);
      goto done;
    }
    for (size_t i = 0; i < sp->n_layer; i++) {
      Caffe__LayerParameter *lp = sp->layer[i];
      if (!lp->type || strcmp(lp->type, "SoftmaxWithLoss") || lp->n_bottom < 1 || strcmp(lp->bottom[0], slogits)) continue;
      float *lw = realloc(lp->loss_weight, (lp->n_top + 1) * sizeof *lw);
      if (!lw) goto done;
      lp->loss_weight = lw;
      for (size_t k = 0; k < lp->n_top; k++) lw[k] = k == 0 ? 1.0f - alpha : 0.0f;
      lp->n_loss_weight = lp->n_top;
      if (lp->n_top > 0) ce_top = lp->top[0];
    }
  }
  const char *soltext = "type: 'SGD' base_lr: 0.01 lr_policy: 'fixed' momentum: 0.9 weight_decay: 0.0005 "
                        "max_iter: 1000000000 display: 0 snapshot: 0 snapshot_after_train: false random_seed: 1";
  if (dd_text_parse((ProtobufCMessage **)&solp, &caffe__solver_parameter__descriptor, soltext, strlen(soltext),
                    "<bench_kd solver>", err, sizeof err)) {
    fprintf(stderr, "bench_kd: %s\n", err);
    goto done;
  }
  hook_ctx hc = {.be = be, .teacher = teacher.net, .teacher_logits = tlogits};
  dd_solver_hooks hooks = {.ctx = &hc, .before_forward = before_forward};
  if (dd_solver_create(&solver, solp, sp, be, 1, &hooks, err, sizeof err)) {
    fprintf(stderr, "bench_kd: student: %s\n", err);
    goto done;
  }
  dd_net *sn = dd_solver_net(solver);
  dd_tensor *sd_t = dd_net_blob(sn, sdata), *sl_t = dd_net_blob(sn, slabel), *slog_t = dd_net_blob(sn, slogits);
  if (!sd_t || !sl_t || !slog_t || !dd_shape_equal(&sd_t->shape, &tin_t->shape) ||
      !dd_shape_equal(&slog_t->shape, &tl_t->shape)) {
    char a[64] = "?", b[64] = "?", c[64] = "?", d[64] = "?";
    if (sd_t) dd_shape_str(&sd_t->shape, a, sizeof a);
    dd_shape_str(&tin_t->shape, b, sizeof b);
    if (slog_t) dd_shape_str(&slog_t->shape, c, sizeof c);
    dd_shape_str(&tl_t->shape, d, sizeof d);
    fprintf(stderr, "bench_kd: student data %s / teacher input %s, student logits %s / teacher logits %s: they must agree\n",
            a, b, c, d);
    goto done;
  }
  int64_t classes = slog_t->count / batch;

  /* synthetic data, uploaded once */
  int64_t nh = sd_t->count > sl_t->count ? sd_t->count : sl_t->count;
  host = malloc((size_t)nh * sizeof *host);
  step_s = calloc((size_t)(warmup + iters), sizeof *step_s);
  teach_s = calloc((size_t)iters, sizeof *teach_s);
  if (!host || !step_s || !teach_s) {
    fprintf(stderr, "bench_kd: out of memory\n");
    goto done;
  }
  uint32_t s = 12345;
  for (int64_t i = 0; i < sd_t->count; i++) {
    s = s * 1664525u + 1013904223u;
    host[i] = (float)(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
  }
  dd_tensor_set_data(sd_t, host);
  dd_tensor_set_data(tin_t, host);
  for (int64_t i = 0; i < sl_t->count; i++) host[i] = (float)(i % classes);
  dd_tensor_set_data(sl_t, host);
  be->ops->synchronize(be);

  double ce0 = NAN, kd0 = NAN, ce1 = NAN, kd1 = NAN;
  for (int it = 0; it < warmup + iters; it++) {
    double a = now();
    if (dd_solver_step(solver, 1, err, sizeof err)) {
      fprintf(stderr, "bench_kd: step %d: %s%s%s\n", it, err, hc.failed ? ": " : "", hc.failed ? hc.msg : "");
      goto done;
    }
    be->ops->synchronize(be);
    step_s[it] = now() - a;
    if (it == 0) {
      ce0 = ce_top ? blob_scalar(sn, ce_top) : 0;
      kd0 = blob_scalar(sn, "kd_loss");
    }
  }
  ce1 = ce_top ? blob_scalar(sn, ce_top) : 0;
  kd1 = blob_scalar(sn, "kd_loss");
  /* the teacher's forward alone, for the split (not part of the step above) */
  for (int it = 0; it < iters; it++) {
    be->ops->synchronize(be);
    double a = now();
    if (dd_net_forward(teacher.net, NULL)) {
      fprintf(stderr, "bench_kd: teacher: %s\n", teacher.net->status_msg);
      goto done;
    }
    be->ops->synchronize(be);
    teach_s[it] = now() - a;
  }
  if (be->ops->status && (r = be->ops->status(be, err, sizeof err))) {
    fprintf(stderr, "bench_kd: the backend failed: %s\n", err);
    goto done;
  }
  if (dd_teacher_verify(&teacher, err, sizeof err)) {
    fprintf(stderr, "bench_kd: %s\n", err);
    goto done;
  }
  double *timed = step_s + warmup;
  double tmin = 1e30, tmax = 0;
  for (int i = 0; i < iters; i++) {
    if (timed[i] < tmin) tmin = timed[i];
    if (timed[i] > tmax) tmax = timed[i];
  }
  double med = median(timed, iters), tmed = median(teach_s, iters);
  printf("\nKD step %s -> %s on %s: batch %d, %lld classes, T %g, alpha %g\n", tname, sname, device, batch,
         (long long)classes, temp, alpha);
  printf("  losses: first step CE %.4f KD %.4f; last step CE %.4f KD %.4f\n", ce0, kd0, ce1, kd1);
  printf("  step (teacher forward + student forward + backward + SGD): median %.2f ms over %d (min %.2f, max %.2f), "
         "%d warm-up\n", med * 1e3, iters, tmin * 1e3, tmax * 1e3, warmup);
  printf("  teacher forward alone: median %.2f ms (%.0f%% of the step)\n", tmed * 1e3, 100 * tmed / med);
  printf("  %.1f images/s; teacher checksum unchanged\n", batch / med);
  if (!isfinite(ce1) || !isfinite(kd1)) {
    fprintf(stderr, "bench_kd: the losses are not finite (CE %g, KD %g)\n", ce1, kd1);
    goto done;
  }
  printf("RESULT teacher=%s student=%s device=%s batch=%d ms=%.2f img_s=%.2f teacher_ms=%.2f mode=fp32 impl=distilld\n", tname, sname,
         device, batch, med * 1e3, batch / med, tmed * 1e3);
  rc = 0;
done:
  if (wfd >= 0) unlink(wpath);
  free(host);
  free(step_s);
  free(teach_s);
  dd_solver_destroy(solver);
  dd_teacher_destroy(&teacher);
  if (solp) caffe__solver_parameter__free_unpacked(solp, NULL);
  if (sp) caffe__net_parameter__free_unpacked(sp, NULL);
  if (tp) caffe__net_parameter__free_unpacked(tp, NULL);
  dd_backend_destroy(be);
  return rc;
}
