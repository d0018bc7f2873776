/* The `caffe`-style verbs on the CPU engine: train, test, time and forward.
 *
 *   distilld train --solver S [--weights W[,W...] | --snapshot S.solverstate] [--input NAME=F]...
 *   distilld test --model M --weights W [--iterations N] [--input NAME=F]...
 *   distilld time --model M [--iterations N] [--phase TRAIN|TEST] [--input NAME=F]...
 *   distilld forward --model M [--weights W] [--phase TRAIN|TEST] --input NAME=F... [--backward]
 *                    --dump DIR
 * Common: --device cpu|cuda:N (default cpu), --threads N (CPU workers, default: one per core),
 * --seed N (fillers, when the solver gives none).
 * --input fills an Input blob from a .binaryproto once and holds it fixed. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/backend.h"
#include "devices/devices.h"
#include "format/caffe_io.h"
#include "cli/cli.h"
#include "common/cli_util.h"
#include "base/dd_error.h"
#include "net/net.h"
#include "train/solver.h"

#define MAX_INPUTS 16

typedef struct {
  const char *solver, *model, *weights, *snapshot, *dump, *job, *device, *config, *advertise;
  int node;
  int resume;
  const char *inputs[MAX_INPUTS];
  int n_inputs, iterations, threads, backward, has_seed;
  long long seed;
  const char *stages[MAX_INPUTS]; /* --stage: the NetState's stages (Caffe's -stage) */
  int n_stages, has_level, level;  /* --level: its level (Caffe's -level) */
  Caffe__Phase phase;
} opts;

/* 1 when `a` is an option of these verbs that takes a value. */
static int value_option(const char *a) {
  static const char *const names[] = {"--solver", "--model", "--job", "--weights", "--snapshot", "--dump",
                                      "--iterations", "--threads", "--device", "--config", "--advertise", "--node",
                                      "--seed", "--phase", "--stage", "--level", "--input"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (!strcmp(a, names[i])) return 1;
  return 0;
}

/* Returns 0, 1 when --help or -h was given (the help printed), or -1 after a usage error
 * (printed, with the verb's synopsis). PARSE_EXIT turns that into the verb's exit status. */
static int parse_opts(const char *verb, int argc, char **argv, opts *o) {
  memset(o, 0, sizeof *o);
  o->node = -1;
  o->phase = CAFFE__PHASE__TRAIN;
  o->iterations = -1;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (dd_cli_is_help(a)) {
      dd_cli_help(verb);
      return 1;
    }
    if (!strcmp(a, "--backward")) {
      o->backward = 1;
      continue;
    }
    if (!strcmp(a, "--resume")) {
      o->resume = 1;
      continue;
    }
    if (!value_option(a)) {
      dd_cli_bad_arg(verb, a);
      return -1;
    }
    if (i + 1 >= argc) {
      dd_cli_error("%s: %s needs a value", verb, a);
      dd_cli_usage(verb);
      return -1;
    }
    const char *v = argv[++i];
    if (!strcmp(a, "--solver")) o->solver = v;
    else if (!strcmp(a, "--model")) o->model = v;
    else if (!strcmp(a, "--job")) o->job = v;
    else if (!strcmp(a, "--weights")) o->weights = v;
    else if (!strcmp(a, "--snapshot")) o->snapshot = v;
    else if (!strcmp(a, "--dump")) o->dump = v;
    else if (!strcmp(a, "--iterations")) o->iterations = atoi(v);
    else if (!strcmp(a, "--threads")) o->threads = atoi(v);
    else if (!strcmp(a, "--device")) o->device = v;
    else if (!strcmp(a, "--config")) o->config = v;
    else if (!strcmp(a, "--advertise")) o->advertise = v;
    else if (!strcmp(a, "--node")) {
      if (dd_cli_parse_int(v, 0, 1023, &o->node)) {
        dd_cli_error("%s: --node takes a node index 0 to 1023, not \"%s\"", verb, v);
        return -1;
      }
    }
    else if (!strcmp(a, "--seed")) {
      o->seed = atoll(v);
      o->has_seed = 1;
    } else if (!strcmp(a, "--phase")) {
      if (!strcmp(v, "TRAIN") || !strcmp(v, "train")) o->phase = CAFFE__PHASE__TRAIN;
      else if (!strcmp(v, "TEST") || !strcmp(v, "test")) o->phase = CAFFE__PHASE__TEST;
      else {
        dd_cli_error("%s: --phase takes TRAIN or TEST, not \"%s\"", verb, v);
        return -1;
      }
    } else if (!strcmp(a, "--stage")) {
      if (o->n_stages == MAX_INPUTS) {
        dd_cli_error("%s: at most %d --stage options", verb, MAX_INPUTS);
        return -1;
      }
      o->stages[o->n_stages++] = v;
    } else if (!strcmp(a, "--level")) {
      if (dd_cli_parse_int(v, INT32_MIN, INT32_MAX, &o->level)) {
        dd_cli_error("%s: --level takes an integer, not \"%s\"", verb, v);
        return -1;
      }
      o->has_level = 1;
    } else if (!strcmp(a, "--input")) {
      if (o->n_inputs == MAX_INPUTS) {
        dd_cli_error("%s: at most %d --input options", verb, MAX_INPUTS);
        return -1;
      }
      if (!strchr(v, '=')) {
        dd_cli_error("%s: --input takes NAME=FILE.binaryproto, not \"%s\"", verb, v);
        return -1;
      }
      o->inputs[o->n_inputs++] = v;
    } else {
      dd_cli_error("%s: unknown option \"%s\"", verb, a);
      dd_cli_usage(verb);
      return -1;
    }
  }
  return 0;
}
#define PARSE_EXIT(r) ((r) > 0 ? 0 : 2)

/* Fills the named Input blobs of `n` from .binaryproto files. Blobs the net lacks are an error
 * when `required`. */
static int apply_inputs(dd_net *n, const opts *o, int required) {
  char err[1024];
  for (int i = 0; i < o->n_inputs; i++) {
    char name[256];
    const char *eq = strchr(o->inputs[i], '=');
    snprintf(name, sizeof name, "%.*s", (int)(eq - o->inputs[i]), o->inputs[i]);
    dd_tensor *t = dd_net_blob(n, name);
    if (!t) {
      if (!required) continue;
      dd_cli_error("--input %s: the net has no blob \"%s\"", o->inputs[i], name);
      return -1;
    }
    Caffe__BlobProto *b = NULL;
    if (dd_binaryproto_read(&b, eq + 1, err, sizeof err)) {
      dd_cli_error("--input %s: %s", o->inputs[i], err);
      return -1;
    }
    int r = dd_tensor_from_proto(t, b, err, sizeof err);
    caffe__blob_proto__free_unpacked(b, NULL);
    if (r) {
      dd_cli_error("--input %s: %s (blob \"%s\" is %lld values)", o->inputs[i], err, name, (long long)t->count);
      return -1;
    }
  }
  return 0;
}

static int load_weights(dd_net *n, const char *list) {
  char err[1024], *copy = strdup(list), *save = NULL;
  if (!copy) return -1;
  for (char *w = strtok_r(copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
    Caffe__NetParameter *p = NULL;
    int skipped = 0;
    if (dd_caffemodel_read(&p, w, err, sizeof err) || dd_net_copy_from(n, p, w, &skipped, err, sizeof err)) {
      dd_cli_error("%s", err);
      if (p) caffe__net_parameter__free_unpacked(p, NULL);
      free(copy);
      return -1;
    }
    fprintf(stderr, "distilld: weights from %s%s\n", w, skipped ? " (some layers not in this net were ignored)" : "");
    caffe__net_parameter__free_unpacked(p, NULL);
  }
  free(copy);
  return 0;
}

static dd_backend *make_backend(const opts *o) {
  dd_backend *be = NULL;
  char err[512];
  if (dd_backend_create(&be, o->device ? o->device : "cpu", o->threads, err, sizeof err)) {
    dd_cli_error("%s", err);
    return NULL;
  }
  fprintf(stderr, "distilld: %s\n", dd_backend_describe(be));
  return be;
}

/* ---- train ----------------------------------------------------------------------------------- */

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

typedef struct {
  const opts *o;
  int tty;
  int fixed_inputs_set_train, fixed_inputs_set_test;
} train_ctx;

static int train_before_forward(void *ctx, dd_net *net, Caffe__Phase phase, double *wait_ms) {
  train_ctx *t = ctx;
  *wait_ms = 0;
  int *done = phase == CAFFE__PHASE__TRAIN ? &t->fixed_inputs_set_train : &t->fixed_inputs_set_test;
  if (*done) return 0;
  *done = 1;
  return apply_inputs(net, t->o, 0) ? DD_EINVAL : 0;
}

static void train_display(void *ctx, const dd_solver_stats *st) {
  train_ctx *t = ctx;
  char eta[32];
  dd_cli_fmt_duration(st->eta_s, eta, sizeof eta);
  char outs[512] = "";
  size_t used = 0;
  for (int i = 0; i < st->n_outputs && used < sizeof outs; i++)
    used += (size_t)snprintf(outs + used, sizeof outs - used, " %s=%.4g", st->output_names[i], st->outputs[i]);
  if (t->tty) {
    int width = 24, filled = st->max_iter > 0 ? (int)((double)width * st->iter / st->max_iter) : 0;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r[%s] iter %d/%d loss %.4g lr %.3g %.1f img/s ETA %s   ", bar, st->iter, st->max_iter,
            st->loss, st->lr, st->img_per_s, eta);
    fflush(stderr);
  } else {
    fprintf(stderr, "distilld: iter %d/%d loss %.4g lr %.6g %.1f img/s data_wait %.2f ms ETA %s%s%s\n", st->iter,
            st->max_iter, st->loss, st->lr, st->img_per_s, st->data_wait_ms, eta, outs,
            st->data_errors ? " (some images were skipped: see the warnings)" : "");
  }
}

static void train_test(void *ctx, const dd_solver_stats *st) {
  train_ctx *t = ctx;
  if (t->tty) fputc('\n', stderr);
  fprintf(stderr, "distilld: test at iter %d:", st->iter);
  for (int i = 0; i < st->n_outputs; i++) fprintf(stderr, " %s=%.4g", st->output_names[i], st->outputs[i]);
  fputc('\n', stderr);
}

static void train_snapshot(void *ctx, int iter, const char *model, const char *state) {
  train_ctx *t = ctx;
  if (t->tty) fputc('\n', stderr);
  fprintf(stderr, "distilld: snapshot at iter %d: %s, %s\n", iter, model, state);
}

static int train_should_stop(void *ctx) {
  (void)ctx;
  return stop_requested;
}

/* The net a solver names: net_param/train_net_param inline, or net/train_net as a path. */
static int solver_net(const Caffe__SolverParameter *sp, const char *solver_path, Caffe__NetParameter **owned,
                      const Caffe__NetParameter **net) {
  char err[1024];
  *owned = NULL;
  if (sp->net_param || sp->train_net_param) {
    *net = sp->net_param ? sp->net_param : sp->train_net_param;
    return 0;
  }
  const char *path = sp->net ? sp->net : sp->train_net;
  if (!path) {
    dd_cli_error("%s names no net (net, net_param, train_net or train_net_param)", solver_path);
    return -1;
  }
  if (dd_net_read_text(owned, path, err, sizeof err)) {
    dd_cli_error("%s (the net of %s)", err, solver_path);
    return -1;
  }
  *net = *owned;
  return 0;
}

int dd_cmd_train(int argc, char **argv) {
  opts o;
  int pr = parse_opts("train", argc, argv, &o);
  if (pr) return PARSE_EXIT(pr);
  if (o.job) {
    if (o.solver || o.weights || o.snapshot || o.n_inputs) {
      dd_cli_error("train: --job takes its solver, weights and data from the job file");
      return 2;
    }
    dd_train_nodes tn = {o.node, o.config ? o.config : getenv("DISTILLD_CONFIG"), o.advertise};
    return dd_cmd_train_job(o.job, o.resume, o.threads, o.device, &tn);
  }
  if (o.node >= 0 || o.advertise) {
    dd_cli_error("train: --node and --advertise belong to a multi-node job (--job)");
    return 2;
  }
  if (!o.solver) {
    dd_cli_error("train: give --solver S.prototxt or --job JOB.prototxt");
    return dd_cli_usage("train");
  }
  if (o.weights && o.snapshot) {
    dd_cli_error("train: give --weights or --snapshot, not both");
    return 2;
  }
  char err[2048];
  int status = 1;
  Caffe__SolverParameter *sp = NULL;
  Caffe__NetParameter *owned = NULL;
  const Caffe__NetParameter *netp = NULL;
  dd_backend *be = NULL;
  dd_solver *s = NULL;
  if (dd_solver_read_text(&sp, o.solver, err, sizeof err)) {
    dd_cli_error("%s", err);
    return 2;
  }
  if (solver_net(sp, o.solver, &owned, &netp)) goto done;
  uint64_t seed = sp->random_seed >= 0 ? (uint64_t)sp->random_seed
                  : o.has_seed          ? (uint64_t)o.seed
                                        : (uint64_t)time(NULL);
  fprintf(stderr, "distilld: seed %llu\n", (unsigned long long)seed);
  if (!(be = make_backend(&o))) goto done;
  train_ctx tc = {.o = &o, .tty = isatty(2)};
  dd_solver_hooks hooks = {.ctx = &tc, .before_forward = train_before_forward, .on_display = train_display,
                           .on_test = train_test, .on_snapshot = train_snapshot, .should_stop = train_should_stop};
  if (dd_solver_create(&s, sp, netp, be, seed, &hooks, err, sizeof err)) {
    dd_cli_error("%s", err);
    goto done;
  }
  if (o.weights && load_weights(dd_solver_net(s), o.weights)) goto done;
  if (o.snapshot) {
    if (dd_solver_restore(s, o.snapshot, err, sizeof err)) {
      dd_cli_error("%s", err);
      goto done;
    }
    fprintf(stderr, "distilld: resumed from %s at iter %d\n", o.snapshot, dd_solver_iter(s));
  }
  if (apply_inputs(dd_solver_net(s), &o, 1)) goto done;
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  int r = dd_solver_solve(s, err, sizeof err);
  if (tc.tty) fputc('\n', stderr);
  if (r) {
    dd_cli_error("%s", err);
    goto done;
  }
  fprintf(stderr, "distilld: %s at iter %d\n", stop_requested ? "stopped" : "done", dd_solver_iter(s));
  status = 0;
done:
  dd_solver_destroy(s);
  dd_backend_destroy(be);
  if (owned) caffe__net_parameter__free_unpacked(owned, NULL);
  caffe__solver_parameter__free_unpacked(sp, NULL);
  return status;
}

/* ---- test, time, forward ----------------------------------------------------------------------- */

static dd_net *model_net(const opts *o, Caffe__Phase phase, dd_backend *be, Caffe__NetParameter **param) {
  char err[2048];
  dd_net *n = NULL;
  if (dd_net_read_text(param, o->model, err, sizeof err)) {
    dd_cli_error("%s", err);
    return NULL;
  }
  /* --stage and --level replace the net's own state, as Caffe's command line does */
  if ((o->n_stages || o->has_level) &&
      dd_net_set_state(*param, o->has_level, o->level, o->stages, (size_t)o->n_stages, 1)) {
    dd_cli_error("out of memory");
    return NULL;
  }
  if (dd_net_create(&n, *param, phase, be, o->has_seed ? (uint64_t)o->seed : 1, NULL, err, sizeof err)) {
    dd_cli_error("%s: %s", o->model, err);
    return NULL;
  }
  if (o->weights && load_weights(n, o->weights)) {
    dd_net_destroy(n);
    return NULL;
  }
  if (apply_inputs(n, o, 1)) {
    dd_net_destroy(n);
    return NULL;
  }
  return n;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int dd_cmd_test(int argc, char **argv) {
  opts o;
  int pr = parse_opts("test", argc, argv, &o);
  if (pr) return PARSE_EXIT(pr);
  if (!o.model || !o.weights) {
    dd_cli_error("test: give --model M.prototxt and --weights W");
    return dd_cli_usage("test");
  }
  int iters = o.iterations > 0 ? o.iterations : 50, status = 1;
  dd_backend *be = make_backend(&o);
  Caffe__NetParameter *p = NULL;
  dd_net *n = be ? model_net(&o, CAFFE__PHASE__TEST, be, &p) : NULL;
  if (!n) goto done;
  double sums[64] = {0};
  int nout = 0;
  const char *names[64];
  for (int it = 0; it < iters; it++) {
    double loss;
    if (dd_net_forward(n, &loss)) {
      dd_cli_error("%s", n->status_msg);
      goto done;
    }
    nout = 0;
    for (size_t b = 0; b < n->n_blobs && nout < 64; b++) {
      int consumed = 0;
      for (size_t i = 0; i < n->n_layers && !consumed; i++)
        for (int j = 0; j < n->layers[i].nb; j++)
          consumed |= n->layers[i].bottom[j] == n->blobs[b] && n->layers[i].top[0] != n->blobs[b];
      if (consumed || n->blobs[b]->count != 1 || n->graph->blobs[b].producer < 0) continue;
      if (!strcmp(n->graph->layers[n->graph->blobs[b].producer].lp->type, "Input")) continue;
      float v;
      dd_tensor_get_data(n->blobs[b], &v);
      names[nout] = n->blobs[b]->name;
      sums[nout++] += v;
    }
  }
  for (int k = 0; k < nout; k++) printf("%s = %.6g\n", names[k], sums[k] / iters);
  status = 0;
done:
  dd_net_destroy(n);
  if (p) caffe__net_parameter__free_unpacked(p, NULL);
  dd_backend_destroy(be);
  return status;
}

int dd_cmd_time(int argc, char **argv) {
  opts o;
  int pr = parse_opts("time", argc, argv, &o);
  if (pr) return PARSE_EXIT(pr);
  if (!o.model) {
    dd_cli_error("time: give --model M.prototxt");
    return dd_cli_usage("time");
  }
  int iters = o.iterations > 0 ? o.iterations : 10, status = 1;
  dd_backend *be = make_backend(&o);
  Caffe__NetParameter *p = NULL;
  dd_net *n = be ? model_net(&o, o.phase, be, &p) : NULL;
  if (!n) goto done;
  double *fw = calloc(n->n_layers, sizeof *fw), *bw = calloc(n->n_layers, sizeof *bw);
  if (!fw || !bw) {
    free(fw);
    free(bw);
    goto done;
  }
  double loss;
  if (dd_net_forward(n, &loss)) { /* warm-up */
    dd_cli_error("%s", n->status_msg);
    free(fw);
    free(bw);
    goto done;
  }
  dd_net_backward(n);
  /* each layer timed between synchronizations (a GPU runs asynchronously) */
  be->ops->synchronize(be);
  double t_all = now_s();
  for (int it = 0; it < iters; it++) {
    for (size_t i = 0; i < n->n_layers; i++) {
      double t0 = now_s();
      n->layers[i].ops->forward(&n->layers[i]);
      be->ops->synchronize(be);
      fw[i] += now_s() - t0;
    }
    n->iter++;
    for (size_t i = n->n_layers; i-- > 0;) {
      if (!n->graph->layers[i].need_backward || !n->layers[i].ops->backward) continue;
      double t0 = now_s();
      n->layers[i].ops->backward(&n->layers[i]);
      be->ops->synchronize(be);
      bw[i] += now_s() - t0;
    }
  }
  t_all = now_s() - t_all;
  double tf = 0, tb = 0;
  printf("%-28s %-16s %10s %10s\n", "layer", "type", "fwd ms", "bwd ms");
  for (size_t i = 0; i < n->n_layers; i++) {
    printf("%-28s %-16s %10.3f %10.3f\n", n->layers[i].name, n->layers[i].lp->type, 1e3 * fw[i] / iters,
           1e3 * bw[i] / iters);
    tf += fw[i];
    tb += bw[i];
  }
  int batch = n->n_blobs && n->blobs[0]->shape.ndim ? (int)n->blobs[0]->shape.dims[0] : 1;
  printf("forward %.2f ms, backward %.2f ms, forward+backward %.2f ms per iteration (%d iterations), %.1f img/s\n",
         1e3 * tf / iters, 1e3 * tb / iters, 1e3 * t_all / iters, iters, batch * iters / t_all);
  /* how each convolution runs (cuDNN's algorithms on a GPU: forward / backward-data /
   * backward-filter, and whether they were timed; the kernels on the CPU) */
  for (size_t i = 0; i < n->n_layers && be->ops->conv_impl; i++) {
    const char *t = n->layers[i].lp->type;
    if (strcmp(t, "Convolution") && strcmp(t, "Deconvolution")) continue;
    printf("%-28s %s\n", n->layers[i].name, be->ops->conv_impl(be, (const dd_conv_desc *)n->layers[i].priv));
  }
  free(fw);
  free(bw);
  status = 0;
done:
  dd_net_destroy(n);
  if (p) caffe__net_parameter__free_unpacked(p, NULL);
  dd_backend_destroy(be);
  return status;
}

/* A blob name as a file name: '/' and other awkward bytes become '_'. */
static void file_name(char *out, size_t len, const char *name) {
  size_t k = 0;
  for (; name[k] && k + 1 < len; k++) {
    char c = name[k];
    out[k] = (c == '/' || c == '\\' || c == ' ' || (unsigned char)c < 0x20) ? '_' : c;
  }
  out[k] = '\0';
}

static int dump_tensor(const char *dir, const char *name, const dd_tensor *t, int with_diff) {
  char fn[512], path[4096], err[1024];
  file_name(fn, sizeof fn, name);
  snprintf(path, sizeof path, "%s/%s.binaryproto", dir, fn);
  Caffe__BlobProto b;
  caffe__blob_proto__init(&b);
  int r = dd_tensor_to_proto(t, &b, with_diff);
  if (!r) r = dd_binaryproto_write(&b, path, err, sizeof err);
  if (r) dd_cli_error("%s", err);
  if (b.shape) {
    free(b.shape->dim);
    free(b.shape);
  }
  free(b.data);
  free(b.diff);
  return r;
}

int dd_cmd_forward(int argc, char **argv) {
  opts o;
  int pr = parse_opts("forward", argc, argv, &o);
  if (pr) return PARSE_EXIT(pr);
  if (!o.model || !o.dump) {
    dd_cli_error("forward: give --model M.prototxt and --dump DIR");
    return dd_cli_usage("forward");
  }
  if (mkdir(o.dump, 0755) != 0 && errno != EEXIST) {
    dd_cli_error("forward: cannot create %s: %s", o.dump, strerror(errno));
    return 1;
  }
  int status = 1;
  dd_backend *be = make_backend(&o);
  Caffe__NetParameter *p = NULL;
  dd_net *n = be ? model_net(&o, o.phase, be, &p) : NULL;
  if (!n) goto done;
  /* every blob as Caffe leaves it, diffs of in-place runs included: the unfused plan */
  if (dd_plan_build(n, 0)) {
    dd_cli_error("out of memory");
    goto done;
  }
  double loss;
  dd_net_clear_param_diffs(n);
  if (dd_net_forward(n, &loss)) {
    dd_cli_error("%s", n->status_msg);
    goto done;
  }
  if (o.backward) dd_net_backward(n);
  int files = 0;
  for (size_t b = 0; b < n->n_blobs; b++, files++)
    if (dump_tensor(o.dump, n->blobs[b]->name, n->blobs[b], o.backward)) goto done;
  for (size_t i = 0; i < n->n_params; i++, files++)
    if (dump_tensor(o.dump, n->params[i].t->name, n->params[i].t, o.backward)) goto done;
  printf("loss = %.9g\n", loss);
  fprintf(stderr, "distilld: wrote %d .binaryproto files to %s\n", files, o.dump);
  status = 0;
done:
  dd_net_destroy(n);
  if (p) caffe__net_parameter__free_unpacked(p, NULL);
  dd_backend_destroy(be);
  return status;
}
