/* The distillation trainer (see distill.h). */
#define _POSIX_C_SOURCE 200809L
#include "train/distill.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "format/caffe_io.h"
#include "data/data.h"
#include "base/dd_error.h"
#include "net/net_check.h"
#include "train/solver.h"
#include "comm/collective.h"
#include "train/teacher.h"
#include "format/textformat.h"

#define MAX_HINTS 8

struct dd_distill {
  Distilld__DistillJob *job; /* owned copy */
  char *base_dir, *out_dir, *snap_prefix;
  dd_backend *be;
  int own_be;
  dd_distill_hooks hooks;
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
  Caffe__LayerParameter *data_layer[2]; /* the original ImageData layers, per phase */
  int batch[2];
  dd_data *src[2];
  int n_hints;
  char *hint_teacher_blob[MAX_HINTS], *hint_input[MAX_HINTS];
  float *labels_dev; /* TEST batch labels for the teacher's accuracy */
  /* metrics */
  FILE *metrics;
  double teacher_acc, student_acc;
  int last_test_iter;
  int failed;
  char fail_msg[1024];
  int64_t train_size;
  /* data parallel: rank `rank` of `size` (1: a single rank, comm NULL) */
  dd_comm *comm;
  int rank, size;
  int global_batch[2]; /* the batch the prototxt asks for; batch[] is this rank's share */
};

/* ---- small helpers ----------------------------------------------------------------------------- */

static char *path_join(const char *base, const char *p) {
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

static void logm(struct dd_distill *d, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void logm(struct dd_distill *d, int level, const char *fmt, ...) {
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

/* mkdir -p: creates `path` and its missing parents. Returns 0 or -1 with errno set. */
static int mkdir_p(const char *path) {
  char buf[4096];
  size_t len = strlen(path);
  if (len == 0 || len >= sizeof buf) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(buf, path, len + 1);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
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


/* Parses prototxt text (layers) into a NetParameter. */
static Caffe__NetParameter *parse_layers(const char *text, char *err, size_t errlen) {
  ProtobufCMessage *m = NULL;
  if (dd_text_parse(&m, &caffe__net_parameter__descriptor, text, strlen(text), "<distill>", err, errlen)) return NULL;
  return (Caffe__NetParameter *)m;
}

/* Appends `add`'s layers to `net` (taking them over). */
static int append_layers(Caffe__NetParameter *net, Caffe__NetParameter *add) {
  Caffe__LayerParameter **nl = realloc(net->layer, (net->n_layer + add->n_layer + 1) * sizeof *nl);
  if (!nl) return DD_ENOMEM;
  net->layer = nl;
  for (size_t i = 0; i < add->n_layer; i++) net->layer[net->n_layer++] = add->layer[i];
  add->n_layer = 0;
  caffe__net_parameter__free_unpacked(add, NULL);
  return 0;
}

/* "d0 dim: d1 ..." for a shape, as prototxt. */
static void shape_text(char *buf, size_t len, const dd_shape *s) {
  size_t used = (size_t)snprintf(buf, len, "shape {");
  for (int i = 0; i < s->ndim && used < len; i++) used += (size_t)snprintf(buf + used, len - used, " dim: %lld", (long long)s->dims[i]);
  if (used < len) snprintf(buf + used, len - used, " }");
}

/* ---- the job ------------------------------------------------------------------------------------ */

int dd_job_read(Distilld__DistillJob **out, const char *path, char *err, size_t errlen) {
  return dd_text_parse_file((ProtobufCMessage **)out, &distilld__distill_job__descriptor, path, err, errlen);
}

static int need_file(const char *base, const char *field, const char *p, char *err, size_t errlen) {
  char *full = path_join(base, p);
  if (!full) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  struct stat st;
  int r = 0;
  if (stat(full, &st) != 0)
    r = dd_errorf(DD_EIO, err, errlen, "%s: cannot open \"%s\": %s", field, full, strerror(errno));
  else if (!S_ISREG(st.st_mode))
    r = dd_errorf(DD_EIO, err, errlen, "%s: \"%s\" is not a regular file", field, full);
  free(full);
  return r;
}

int dd_job_validate(const Distilld__DistillJob *job, const char *base, const dd_devices *devices, char *err,
                    size_t errlen) {
  int r;
  if (!job->name || !job->name[0]) return dd_errorf(DD_EINVAL, err, errlen, "name: a job needs a name");
  for (const char *p = job->name; *p; p++)
    if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.'))
      return dd_errorf(DD_EINVAL, err, errlen, "name: \"%s\" may only hold letters, digits, '-', '_' and '.'", job->name);
  if (!job->student || !job->student->net) return dd_errorf(DD_EINVAL, err, errlen, "student.net: the student's train_val prototxt is required");
  if ((r = need_file(base, "student.net", job->student->net, err, errlen))) return r;
  for (size_t i = 0; i < job->student->n_weights; i++) {
    char f[64];
    snprintf(f, sizeof f, "student.weights[%zu]", i);
    if ((r = need_file(base, f, job->student->weights[i], err, errlen))) return r;
  }
  if (!job->output_dir || !job->output_dir[0]) return dd_errorf(DD_EINVAL, err, errlen, "output_dir: where snapshots and metrics go is required");
  if (!!job->solver == !!(job->solver_file && job->solver_file[0]))
    return dd_errorf(DD_EINVAL, err, errlen, "solver / solver_file: give exactly one (an inline solver { } or a path)");
  if (job->solver_file && (r = need_file(base, "solver_file", job->solver_file, err, errlen))) return r;
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
    if ((r = need_file(base, "teacher.net", job->teacher->net, err, errlen))) return r;
    if (job->teacher->n_weights == 0)
      return dd_errorf(DD_EINVAL, err, errlen, "teacher.weights: a teacher needs its trained weights (.caffemodel)");
    for (size_t i = 0; i < job->teacher->n_weights; i++) {
      char f[64];
      snprintf(f, sizeof f, "teacher.weights[%zu]", i);
      if ((r = need_file(base, f, job->teacher->weights[i], err, errlen))) return r;
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

/* ---- building ----------------------------------------------------------------------------------- */

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

static void on_display(void *ctx, const dd_solver_stats *st);
static void on_test(void *ctx, const dd_solver_stats *st);
static void on_snapshot(void *ctx, int iter, const char *model, const char *state);
static int should_stop(void *ctx);
static int before_forward(void *ctx, dd_net *net, Caffe__Phase phase, double *wait_ms);

static void data_log(void *ctx, const char *msg) { logm(ctx, 1, "%s", msg); }

int dd_distill_create(dd_distill **out, const Distilld__DistillJob *job_in, const char *base_dir, dd_backend *be,
                      const dd_distill_hooks *hooks, char *err, size_t errlen) {
  return dd_distill_create_rank(out, job_in, base_dir, be, hooks, NULL, err, errlen);
}

int dd_distill_create_rank(dd_distill **out, const Distilld__DistillJob *job_in, const char *base_dir, dd_backend *be,
                           const dd_distill_hooks *hooks, dd_comm *comm, char *err, size_t errlen) {
  *out = NULL;
  int r = dd_job_validate(job_in, base_dir, NULL, err, errlen);
  if (r) return r;
  struct dd_distill *d = calloc(1, sizeof *d);
  if (!d) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  d->teacher_acc = d->student_acc = -1;
  d->last_test_iter = -1;
  d->comm = comm; /* one rank through a collective too: the GPU tests run NCCL's path that way */
  d->rank = d->comm ? comm->rank : 0;
  d->size = d->comm ? comm->size : 1;
  /* rank 0 reports; the others keep only the stop decision, which the solver agrees on */
  if (hooks && d->rank == 0) d->hooks = *hooks;
  if (hooks && d->rank > 0) d->hooks = (dd_distill_hooks){.ctx = hooks->ctx, .should_stop = hooks->should_stop};
  d->job = (Distilld__DistillJob *)dd_proto_copy(&job_in->base);
  d->base_dir = base_dir ? strdup(base_dir) : NULL;
  if (!d->job || (base_dir && !d->base_dir)) goto oom;
  const Distilld__DistillJob *job = d->job;
  if (!be) {
    if (dd_cpu_backend_create(&d->be, 0)) goto oom;
    d->own_be = 1;
  } else {
    d->be = be;
  }
  be = d->be;
  float alpha = job->distill ? job->distill->alpha : 0.9f, temp = job->distill ? job->distill->temperature : 4.0f;
  /* output directory and metrics */
  d->out_dir = path_join(d->base_dir, job->output_dir);
  if (!d->out_dir) goto oom;
  char snapdir[4096];
  snprintf(snapdir, sizeof snapdir, "%s/snapshots", d->out_dir);
  if (mkdir_p(snapdir) != 0) {
    r = dd_errorf(DD_EIO, err, errlen, "output_dir: cannot create \"%s\": %s", snapdir, strerror(errno));
    goto fail;
  }
  d->snap_prefix = malloc(strlen(snapdir) + strlen(job->name) + 2);
  if (!d->snap_prefix) goto oom;
  sprintf(d->snap_prefix, "%s/%s", snapdir, job->name);
  char mpath[4096];
  snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", d->out_dir);
  if (d->rank > 0) snprintf(mpath, sizeof mpath, "/dev/null"); /* rank 0 writes the job's metrics */
  if (!(d->metrics = fopen(mpath, "a"))) {
    r = dd_errorf(DD_EIO, err, errlen, "output_dir: cannot write \"%s\": %s", mpath, strerror(errno));
    goto fail;
  }
  /* solver */
  if (job->solver) {
    d->solver_param = (Caffe__SolverParameter *)dd_proto_copy(&job->solver->base);
    if (!d->solver_param) goto oom;
  } else {
    char *sp = path_join(d->base_dir, job->solver_file);
    if (!sp) goto oom;
    r = dd_solver_read_text(&d->solver_param, sp, err, errlen);
    free(sp);
    if (r) goto fail;
  }
  free(d->solver_param->snapshot_prefix);
  d->solver_param->snapshot_prefix = strdup(d->snap_prefix);
  if (!d->solver_param->snapshot_prefix) goto oom;
  /* student */
  char *snet = path_join(d->base_dir, job->student->net);
  if (!snet) goto oom;
  r = dd_net_read_text(&d->student_param, snet, err, errlen);
  free(snet);
  if (r) goto fail;
  Caffe__NetParameter *sp = d->student_param;
  /* the lint of `distilld check`, and the opt-in freeze of frozen BatchNorms */
  {
    dd_diags diags = {0};
    dd_net_graph *lg = NULL;
    if (dd_net_check(&lg, sp, CAFFE__PHASE__TRAIN, &diags) == 0) {
      for (size_t k = 0; k < diags.n; k++) {
        const dd_diag *dg = &diags.v[k];
        if (dg->level == DD_DIAG_ERROR) continue; /* the net build below reports those */
        logm(d, dg->level == DD_DIAG_WARNING ? 1 : 2, "student net: %s%s%s", dg->where ? dg->where : "",
             dg->where ? ": " : "", dg->msg);
        int trap = dg->level == DD_DIAG_WARNING && dg->where && strstr(dg->msg, "BatchNorm keeps updating");
        if (trap && job->distill && job->distill->freeze_frozen_batchnorm)
          for (size_t i = 0; i < sp->n_layer; i++) {
            Caffe__LayerParameter *lp = sp->layer[i];
            if (!lp->name || strcmp(lp->name, dg->where) || strcmp(lp->type, "BatchNorm")) continue;
            if (!lp->batch_norm_param) {
              lp->batch_norm_param = malloc(sizeof *lp->batch_norm_param);
              if (!lp->batch_norm_param) continue;
              caffe__batch_norm_parameter__init(lp->batch_norm_param);
            }
            lp->batch_norm_param->has_use_global_stats = 1;
            lp->batch_norm_param->use_global_stats = 1;
            logm(d, 2, "freeze_frozen_batchnorm: %s now uses its stored statistics", lp->name);
          }
      }
    }
    dd_net_graph_free(lg);
    dd_diags_free(&diags);
  }
  /* ImageData layers -> Input layers fed by our pipelines */
  for (int ph = 0; ph < 2; ph++) {
    dd_diags gd = {0};
    dd_net_graph *g = NULL;
    if (dd_net_graph_build(&g, sp, (Caffe__Phase)ph, 0, NULL, 0, &gd)) goto oom;
    for (size_t i = 0; i < g->n_layers && !r; i++) {
      const dd_glayer *gl = &g->layers[i];
      if (!gl->ops || strcmp(gl->ops->type, "ImageData")) continue;
      if (d->data_layer[ph]) {
        r = dd_errorf(DD_EINVAL, err, errlen, "student.net: more than one ImageData layer in the %s phase", dd_phase_name((Caffe__Phase)ph));
        break;
      }
      const dd_shape *ds0 = &g->blobs[gl->top[0]].shape;
      if (!dd_shape_known(ds0)) {
        r = dd_errorf(DD_EINVAL, err, errlen,
                      "student.net: layer \"%s\": set crop_size or new_height/new_width so the batch shape is known",
                      gl->lp->name);
        break;
      }
      Caffe__LayerParameter *orig = sp->layer[gl->param_index];
      d->data_layer[ph] = (Caffe__LayerParameter *)dd_proto_copy(&orig->base);
      if (!d->data_layer[ph]) goto oom_g;
      d->global_batch[ph] = (int)ds0->dims[0];
      if (d->global_batch[ph] % d->size) {
        r = dd_errorf(DD_EINVAL, err, errlen,
                      "student.net: layer \"%s\": the %s batch of %d does not split evenly over %d ranks",
                      gl->lp->name, dd_phase_name((Caffe__Phase)ph), d->global_batch[ph], d->size);
        break;
      }
      d->batch[ph] = d->global_batch[ph] / d->size;
      char text[2048], s0[256], s1[256] = "";
      dd_shape local0 = *ds0;
      local0.dims[0] = d->batch[ph];
      shape_text(s0, sizeof s0, &local0);
      if (gl->nt > 1) {
        dd_shape local1 = g->blobs[gl->top[1]].shape;
        if (local1.ndim > 0) local1.dims[0] = d->batch[ph];
        shape_text(s1, sizeof s1, &local1);
      }
      snprintf(text, sizeof text, "layer { name: '%s' type: 'Input' top: '%s'%s%s%s input_param { %s %s } include { phase: %s } }",
               orig->name ? orig->name : "data", orig->top[0], gl->nt > 1 ? " top: '" : "", gl->nt > 1 ? orig->top[1] : "",
               gl->nt > 1 ? "'" : "", s0, s1, dd_phase_name((Caffe__Phase)ph));
      for (int t = 0; t < gl->nt && t < 2; t++)
        if (!(d->data_top[ph][t] = strdup(orig->top[t]))) goto oom_g;
      Caffe__NetParameter *rep = parse_layers(text, err, errlen);
      if (!rep) {
        r = DD_EINVAL;
        break;
      }
      caffe__layer_parameter__free_unpacked(sp->layer[gl->param_index], NULL);
      sp->layer[gl->param_index] = rep->layer[0];
      rep->n_layer = 0;
      caffe__net_parameter__free_unpacked(rep, NULL);
    }
    if (!r && ph == 0 && !d->data_layer[0])
      r = dd_errorf(DD_EINVAL, err, errlen, "student.net: no ImageData layer in the TRAIN phase (the job's data comes from it)");
    if (!r && ph == 0) {
      /* logits: named, or the last InnerProduct */
      const char *sl = job->distill && job->distill->student_logits ? job->distill->student_logits : last_ip_top(g);
      if (!sl || !blob_shape(g, sl)) {
        char list[1024];
        blob_list(g, list, sizeof list);
        r = dd_errorf(DD_EINVAL, err, errlen, "distill.student_logits: the student net has no blob \"%s\" (blobs: %s)",
                      sl ? sl : "(no InnerProduct)", list);
      } else if (!(d->student_logits = strdup(sl))) {
        r = DD_ENOMEM;
      }
    }
    dd_net_graph_free(g);
    dd_diags_free(&gd);
    if (r) goto fail;
    continue;
  oom_g:
    dd_net_graph_free(g);
    dd_diags_free(&gd);
    goto oom;
  }
  /* teacher */
  if (job->teacher) {
    d->has_teacher = 1;
    Caffe__NetParameter *tp = NULL;
    char *tnet = path_join(d->base_dir, job->teacher->net);
    if (!tnet) goto oom;
    r = dd_net_read_text(&tp, tnet, err, errlen);
    free(tnet);
    if (r) {
      char inner[1024];
      snprintf(inner, sizeof inner, "%s", err);
      dd_errorf(r, err, errlen, "teacher.net: %s", inner);
      goto fail;
    }
    /* its Input takes the student's TRAIN batch */
    Caffe__LayerParameter *in = NULL;
    for (size_t i = 0; i < tp->n_layer && !in; i++)
      if (tp->layer[i]->type && !strcmp(tp->layer[i]->type, "Input")) in = tp->layer[i];
    if (!in || !in->input_param || in->input_param->n_shape < 1 || in->input_param->shape[0]->n_dim < 1) {
      caffe__net_parameter__free_unpacked(tp, NULL);
      r = dd_errorf(DD_EINVAL, err, errlen, "teacher.net: a deploy net with an Input layer (and its shape) is needed");
      goto fail;
    }
    if (!(d->teacher_input = strdup(in->top[0]))) {
      caffe__net_parameter__free_unpacked(tp, NULL);
      goto oom;
    }
    in->input_param->shape[0]->dim[0] = d->batch[0];
    char **wpaths = calloc(job->teacher->n_weights + 1, sizeof *wpaths);
    for (size_t i = 0; wpaths && i < job->teacher->n_weights; i++) wpaths[i] = path_join(d->base_dir, job->teacher->weights[i]);
    int fold = !job->distill || job->distill->fold_teacher;
    r = wpaths ? dd_teacher_create(&d->teacher, tp, (const char *const *)wpaths, job->teacher->n_weights, be, fold, err, errlen)
               : DD_ENOMEM;
    /* folding removes the blob between a convolution and its BatchNorm + Scale (and a BatchNorm's
     * own top): a teacher blob the job names that exists only unfolded keeps the teacher unfolded */
    const char *gone = NULL;
    if (r == 0 && fold && job->distill) {
      if (job->distill->teacher_logits && !dd_net_blob(d->teacher.net, job->distill->teacher_logits))
        gone = job->distill->teacher_logits;
      for (size_t h = 0; !gone && h < job->distill->n_hint; h++)
        if (job->distill->hint[h]->teacher_blob && !dd_net_blob(d->teacher.net, job->distill->hint[h]->teacher_blob))
          gone = job->distill->hint[h]->teacher_blob;
    }
    if (gone) {
      dd_teacher_destroy(&d->teacher);
      r = dd_teacher_create(&d->teacher, tp, (const char *const *)wpaths, job->teacher->n_weights, be, 0, err, errlen);
      if (r == 0 && dd_net_blob(d->teacher.net, gone))
        logm(d, 2, "teacher: blob \"%s\" exists only before BatchNorm + Scale folding: the teacher runs unfolded", gone);
    }
    for (size_t i = 0; wpaths && i < job->teacher->n_weights; i++) free(wpaths[i]);
    free(wpaths);
    if (r == 0 && d->data_layer[1]) { /* the TEST-batch twin, sharing the parameters */
      Caffe__NetParameter *tp2 = (Caffe__NetParameter *)dd_proto_copy(&d->teacher.net->param->base);
      if (!tp2) r = DD_ENOMEM;
      for (size_t i = 0; !r && i < tp2->n_layer; i++)
        if (tp2->layer[i]->type && !strcmp(tp2->layer[i]->type, "Input")) tp2->layer[i]->input_param->shape[0]->dim[0] = d->batch[1];
      if (!r) r = dd_net_create(&d->teacher_test, tp2, CAFFE__PHASE__TEST, be, 1, NULL, err, errlen);
      if (!r) r = dd_net_share_params(d->teacher_test, d->teacher.net, err, errlen);
      if (tp2) caffe__net_parameter__free_unpacked(tp2, NULL);
    }
    caffe__net_parameter__free_unpacked(tp, NULL);
    if (r) {
      char inner[1024];
      snprintf(inner, sizeof inner, "%s", err);
      dd_errorf(r, err, errlen, "teacher: %s", inner);
      goto fail;
    }
    logm(d, 2, "teacher: %zu layers, %d BatchNorm+Scale pairs folded into convolutions, %d into a Scale; checksum %016llx",
         d->teacher.net->n_layers, d->teacher.folded_conv, d->teacher.folded_scale, (unsigned long long)d->teacher.checksum);
    /* input and logits must fit the student */
    dd_tensor *ti = dd_net_blob(d->teacher.net, d->teacher_input);
    dd_net_graph *g = NULL;
    dd_diags gd = {0};
    if (dd_net_graph_build(&g, sp, CAFFE__PHASE__TRAIN, 0, NULL, 0, &gd)) goto oom;
    const dd_shape *sd = blob_shape(g, d->data_top[0][0]), *sl = blob_shape(g, d->student_logits);
    const char *tl = job->distill && job->distill->teacher_logits ? job->distill->teacher_logits : last_ip_top(d->teacher.net->graph);
    dd_tensor *tlt = tl ? dd_net_blob(d->teacher.net, tl) : NULL;
    char a[64], b[64];
    if (!sd || !dd_shape_equal(sd, &ti->shape))
      r = dd_errorf(DD_EINVAL, err, errlen, "teacher.net: its input is %s but the student's data is %s",
                    dd_shape_str(&ti->shape, a, sizeof a), sd ? dd_shape_str(sd, b, sizeof b) : "?");
    else if (!tlt) {
      char list[1024];
      blob_list(d->teacher.net->graph, list, sizeof list);
      r = dd_errorf(DD_EINVAL, err, errlen, "distill.teacher_logits: the teacher net has no blob \"%s\" (blobs: %s)",
                    tl ? tl : "(no InnerProduct)", list);
    } else if (!dd_shape_equal(&tlt->shape, sl))
      r = dd_errorf(DD_EINVAL, err, errlen,
                    "distill.teacher_logits: the teacher's logits \"%s\" are %s but the student's \"%s\" are %s: do the nets have "
                    "the same classes?",
                    tl, dd_shape_str(&tlt->shape, a, sizeof a), d->student_logits, dd_shape_str(sl, b, sizeof b));
    else if (!(d->teacher_logits = strdup(tl)))
      r = DD_ENOMEM;
    /* the student gains: Input teacher_logits, KDLoss, hint inputs, regressors and losses */
    char text[8192];
    size_t used = 0;
    char sh[256];
    if (!r) {
      shape_text(sh, sizeof sh, &tlt->shape);
      used += (size_t)snprintf(text + used, sizeof text - used,
                               "layer { name: 'distill_teacher_logits' type: 'Input' top: 'distill_teacher_logits' input_param { %s } include { phase: TRAIN } }\n"
                               "layer { name: 'kd_loss' type: 'KDLoss' bottom: '%s' bottom: 'distill_teacher_logits' top: 'kd_loss' loss_weight: %.9g"
                               " distill_loss_param { temperature: %.9g } include { phase: TRAIN } }\n",
                               sh, d->student_logits, alpha, temp);
    }
    for (size_t h = 0; !r && job->distill && h < job->distill->n_hint; h++) {
      const Distilld__HintSpec *hs = job->distill->hint[h];
      dd_tensor *tb = dd_net_blob(d->teacher.net, hs->teacher_blob);
      const dd_shape *sb = blob_shape(g, hs->student_blob);
      if (!tb) {
        r = dd_errorf(DD_EINVAL, err, errlen, "distill.hint[%zu].teacher_blob: the teacher net has no blob \"%s\"", h, hs->teacher_blob);
        break;
      }
      if (!sb) {
        r = dd_errorf(DD_EINVAL, err, errlen, "distill.hint[%zu].student_blob: the student net has no blob \"%s\"", h, hs->student_blob);
        break;
      }
      if (tb->shape.ndim != 4 || sb->ndim != 4 || tb->shape.dims[2] != sb->dims[2] || tb->shape.dims[3] != sb->dims[3]) {
        r = dd_errorf(DD_EINVAL, err, errlen, "distill.hint[%zu]: the teacher blob is %s and the student blob %s: hints need (N, C, H, W) blobs of the same H x W",
                      h, dd_shape_str(&tb->shape, a, sizeof a), dd_shape_str(sb, b, sizeof b));
        break;
      }
      shape_text(sh, sizeof sh, &tb->shape);
      d->hint_teacher_blob[h] = strdup(hs->teacher_blob);
      d->hint_input[h] = malloc(48);
      if (!d->hint_teacher_blob[h] || !d->hint_input[h]) {
        r = DD_ENOMEM;
        break;
      }
      snprintf(d->hint_input[h], 48, "distill_hint%zu_teacher", h);
      used += (size_t)snprintf(text + used, sizeof text - used,
                               "layer { name: '%s' type: 'Input' top: '%s' input_param { %s } include { phase: TRAIN } }\n",
                               d->hint_input[h], d->hint_input[h], sh);
      if (hs->kind == DISTILLD__HINT_SPEC__KIND__FITNET)
        used += (size_t)snprintf(text + used, sizeof text - used,
                                 "layer { name: 'hint%zu_regressor' type: 'Convolution' bottom: '%s' top: 'hint%zu_regressed'"
                                 " convolution_param { num_output: %lld kernel_size: 1 weight_filler { type: 'msra' } } include { phase: TRAIN } }\n"
                                 "layer { name: 'hint%zu_loss' type: 'HintLoss' bottom: 'hint%zu_regressed' bottom: '%s' top: 'hint%zu_loss' loss_weight: %.9g include { phase: TRAIN } }\n",
                                 h, hs->student_blob, h, (long long)tb->shape.dims[1], h, h, d->hint_input[h], h, hs->weight);
      else
        used += (size_t)snprintf(text + used, sizeof text - used,
                                 "layer { name: 'hint%zu_loss' type: 'AttentionLoss' bottom: '%s' bottom: '%s' top: 'hint%zu_loss' loss_weight: %.9g include { phase: TRAIN } }\n",
                                 h, hs->student_blob, d->hint_input[h], h, hs->weight);
      d->n_hints++;
    }
    dd_net_graph_free(g);
    dd_diags_free(&gd);
    if (r) goto fail;
    if (used >= sizeof text) goto oom;
    Caffe__NetParameter *add = parse_layers(text, err, errlen);
    if (!add) {
      r = DD_EINVAL;
      goto fail;
    }
    if ((r = append_layers(sp, add))) goto oom;
    /* the cross entropy on the student's logits keeps (1 - alpha) */
    for (size_t i = 0; i < sp->n_layer; i++) {
      Caffe__LayerParameter *lp = sp->layer[i];
      if (!lp->type || strcmp(lp->type, "SoftmaxWithLoss") || lp->n_bottom < 1 || strcmp(lp->bottom[0], d->student_logits)) continue;
      float *lw = realloc(lp->loss_weight, lp->n_top * sizeof *lw);
      if (!lw) goto oom;
      lp->loss_weight = lw;
      for (size_t t = 0; t < lp->n_top; t++) lw[t] = t == 0 ? 1.0f - alpha : 0.0f;
      lp->n_loss_weight = lp->n_top;
    }
  }
  /* the solver around the student */
  uint64_t seed = job->seed >= 0                           ? (uint64_t)job->seed
                  : d->solver_param->random_seed >= 0 ? (uint64_t)d->solver_param->random_seed
                                                      : (uint64_t)time(NULL);
  dd_solver_hooks sh = {.ctx = d, .before_forward = before_forward, .on_display = on_display, .on_test = on_test,
                        .on_snapshot = on_snapshot, .should_stop = should_stop};
  d->solver_param->has_random_seed = 1;
  d->solver_param->random_seed = (int64_t)seed;
  if ((r = dd_solver_create(&d->solver, d->solver_param, sp, be, seed, &sh, err, errlen))) {
    char inner[1024];
    snprintf(inner, sizeof inner, "%s", err);
    dd_errorf(r, err, errlen, "student: %s", inner);
    goto fail;
  }
  if (d->comm && (r = dd_solver_set_comm(d->solver, d->comm, (int64_t)(job->allreduce_bucket_mb * 262144.0), err, errlen)))
    goto fail;
  if (job->student->n_weights) {
    for (size_t i = 0; i < job->student->n_weights && !r; i++) {
      char *wp = path_join(d->base_dir, job->student->weights[i]);
      Caffe__NetParameter *w = NULL;
      if (!wp) goto oom;
      r = dd_caffemodel_read(&w, wp, err, errlen);
      if (!r) r = dd_net_copy_from(dd_solver_net(d->solver), w, wp, NULL, err, errlen);
      if (w) caffe__net_parameter__free_unpacked(w, NULL);
      free(wp);
    }
    if (r) goto fail;
  }
  if (d->batch[1] && !(d->labels_dev = be->ops->alloc(be, (size_t)d->batch[1] * sizeof(float)))) goto oom;
  logm(d, 2, "job %s: seed %llu, %s", job->name, (unsigned long long)seed,
       d->has_teacher ? "distilling from the teacher" : "training the student alone");
  *out = d;
  return 0;
oom:
  r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
fail:
  dd_distill_destroy(d);
  return r;
}

/* ---- running ------------------------------------------------------------------------------------- */

static int open_source(struct dd_distill *d, int ph, int64_t start_batch, dd_data **out, char *err, size_t errlen) {
  const Caffe__LayerParameter *lp = d->data_layer[ph];
  const Caffe__ImageDataParameter *ip = lp->image_data_param;
  dd_net *n = ph == 0 ? dd_solver_net(d->solver) : dd_solver_test_net(d->solver);
  if (!n) return 0;
  dd_tensor *t = dd_net_blob(n, d->data_top[ph][0]);
  char *src = path_join(d->base_dir, ip->source), *root = ip->root_folder && ip->root_folder[0] ? path_join(d->base_dir, ip->root_folder) : NULL;
  Caffe__LayerParameter *copy = (Caffe__LayerParameter *)dd_proto_copy(&lp->base);
  int r = 0;
  if (!src || !copy || (ip->root_folder && ip->root_folder[0] && !root)) {
    r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  } else {
    free(copy->image_data_param->source);
    copy->image_data_param->source = src;
    src = NULL;
    if (root) {
      /* root_folder is a prefix: keep a trailing slash as written */
      size_t lr = strlen(root);
      if (ip->root_folder[strlen(ip->root_folder) - 1] == '/' && root[lr - 1] != '/') {
        char *r2 = realloc(root, lr + 2);
        if (r2) {
          root = r2;
          strcat(root, "/");
        }
      }
      free(copy->image_data_param->root_folder);
      copy->image_data_param->root_folder = root;
      root = NULL;
    }
    dd_data_config cfg = {.batch = (int)t->shape.dims[0], .channels = (int)t->shape.dims[1], .height = (int)t->shape.dims[2],
                          .width = (int)t->shape.dims[3], .train = ph == 0,
                          .seed = dd_seed_derive(dd_solver_net(d->solver)->seed, ph == 0 ? "data/train" : "data/test"),
                          .threads = (int)ip->decode_threads, .prefetch = (int)ip->prefetch,
                          .max_error_fraction = ip->max_error_fraction, .be = d->be, .log = data_log, .log_ctx = d,
                          .start_batch = start_batch, .stride = d->global_batch[ph],
                          .offset = (int64_t)d->rank * d->batch[ph]};
    r = dd_data_open(out, copy, &cfg, err, errlen);
  }
  free(src);
  free(root);
  if (copy) caffe__layer_parameter__free_unpacked(copy, NULL);
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

static void on_display(void *ctx, const dd_solver_stats *st) {
  struct dd_distill *d = ctx;
  int bs = d->global_batch[0] * (d->solver_param->iter_size > 0 ? d->solver_param->iter_size : 1);
  int epoch = d->train_size > 0 ? (int)((int64_t)st->iter * bs / d->train_size) : 0;
  FILE *f = d->metrics;
  fprintf(f, "{\"type\":\"train\",");
  fprintf(f, "\"iter\":%d,\"max_iter\":%d,\"epoch\":%d,", st->iter, st->max_iter, epoch);
  jnum(f, "loss", st->loss, 1);
  for (int i = 0; i < st->n_outputs; i++) {
    char key[128];
    snprintf(key, sizeof key, "%s%s", st->output_names[i], strcmp(st->output_names[i], "loss") ? "" : "_ce");
    jnum(f, !strcmp(st->output_names[i], "loss") ? "ce_loss" : key, st->outputs[i], 1);
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
                             .elapsed_s = st->elapsed_s, .n_terms = st->n_outputs, .term_names = st->output_names,
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
    dd_distill_test t = {.iter = st->iter, .n = st->n_outputs, .names = st->output_names, .values = st->outputs};
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
    logm(d, 0, "%s", d->fail_msg);
  }
  if (d->hooks.snapshot) d->hooks.snapshot(d->hooks.ctx, iter, model, state);
}

static int should_stop(void *ctx) {
  struct dd_distill *d = ctx;
  if (d->failed) return DD_STOP_SNAPSHOT;
  return d->hooks.should_stop ? d->hooks.should_stop(d->hooks.ctx) : 0;
}

/* The teacher's top-1 accuracy over test_iter TEST batches, from a pipeline of its own. */
static int measure_teacher(struct dd_distill *d, char *err, size_t errlen) {
  if (!d->has_teacher || !d->teacher_test || !d->data_layer[1] || d->solver_param->n_test_iter == 0) return 0;
  if (d->job->distill && !d->job->distill->test_teacher) return 0;
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
  d->teacher_acc = valid ? (double)correct / (double)valid : 0;
  fprintf(d->metrics, "{\"type\":\"teacher\",");
  jnum(d->metrics, "accuracy", d->teacher_acc, 1);
  fprintf(d->metrics, "\"batches\":%d,\"images\":%lld,\"checksum\":\"%016llx\",", batches, (long long)valid,
          (unsigned long long)d->teacher.checksum);
  jtime(d->metrics);
  fprintf(d->metrics, "}\n");
  fflush(d->metrics);
  if (d->hooks.teacher)
    d->hooks.teacher(d->hooks.ctx, d->teacher_acc, batches);
  else
    logm(d, 2, "teacher accuracy %.4f on %lld TEST images (%d batches)", d->teacher_acc, (long long)valid, batches);
  return 0;
}

int dd_distill_resume(dd_distill *d, int *resumed_iter, char *err, size_t errlen) {
  *resumed_iter = 0;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/snapshots", d->out_dir);
  DIR *dh = opendir(dir);
  if (!dh) return 0;
  struct dirent *e;
  int best = -1;
  size_t plen = strlen(d->job->name);
  while ((e = readdir(dh))) {
    const char *n = e->d_name;
    if (strncmp(n, d->job->name, plen) || strncmp(n + plen, "_iter_", 6)) continue;
    char *end;
    long it = strtol(n + plen + 6, &end, 10);
    if (strcmp(end, ".solverstate") || it <= best) continue;
    best = (int)it;
  }
  closedir(dh);
  if (best < 0) return 0;
  char state[4300];
  snprintf(state, sizeof state, "%s/%s_iter_%d.solverstate", dir, d->job->name, best);
  int r = dd_solver_restore(d->solver, state, err, errlen);
  if (r) return r;
  *resumed_iter = best;
  logm(d, 2, "resumed from %s", state);
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
    logm(d, 0, "%s", err);
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

/* ---- a whole job on several CPU ranks ------------------------------------------------------------ */

typedef struct {
  const Distilld__DistillJob *job;
  const char *base_dir;
  const dd_distill_hooks *hooks;
  const dd_devices *devices;
  const char *device;
  dd_comm *comm;
  int threads, resume;
  int rc, resumed, iter, stopped;
  double student_acc, teacher_acc;
  char err[2048];
} rank_run;

/* Every rank starts from rank 0's state (weights, solver history, iteration) and holds the same
 * teacher (its checksum equal to rank 0's: on several machines, the same weight files). */
static int sync_ranks(dd_distill *d, char *err, size_t errlen) {
  int r = dd_solver_sync_from_root(d->solver, err, errlen);
  if (r || !d->has_teacher) return r;
  int q = 0;
  if ((r = dd_solver_differs(d->solver, d->teacher.checksum, &q, err, errlen))) return r;
  if (q > 0)
    return dd_errorf(DD_ECORRUPT, err, errlen,
                     "teacher: rank %d loaded a teacher whose checksum differs from rank 0's (%s%016llx): every node "
                     "must hold the same teacher net and weights",
                     q, d->rank == 0 ? "" : "this rank's: ", (unsigned long long)d->teacher.checksum);
  return 0;
}

static void *rank_main(void *arg) {
  rank_run *rr = arg;
  dd_backend *be = NULL;
  dd_distill *d = NULL;
  char e0[1024];
  rr->rc = rr->devices->backend_create(&be, rr->device, rr->threads, e0, sizeof e0);
  if (!rr->rc) rr->rc = dd_comm_bind(rr->comm, be, e0, sizeof e0);
  if (rr->rc) {
    dd_errorf(rr->rc, rr->err, sizeof rr->err, "rank %d: %s", rr->comm->rank, e0);
    rr->comm->ops->abort(rr->comm, rr->err);
    dd_backend_destroy(be);
    return NULL;
  }
  rr->rc = dd_distill_create_rank(&d, rr->job, rr->base_dir, be, rr->hooks, rr->comm, rr->err, sizeof rr->err);
  /* every rank builds the same nets from the same job: one that fails tells the others */
  if (rr->rc) rr->comm->ops->abort(rr->comm, rr->err);
  /* rank 0 alone reads the snapshot: the others get its state below */
  if (!rr->rc && rr->resume && rr->comm->rank == 0) {
    rr->rc = dd_distill_resume(d, &rr->resumed, rr->err, sizeof rr->err);
    if (rr->rc) rr->comm->ops->abort(rr->comm, rr->err);
  }
  if (!rr->rc) {
    /* all ranks built: a barrier, so that nobody's first collective times out on a slow setup */
    char e[512];
    if (rr->comm->ops->barrier(rr->comm, e, sizeof e)) rr->rc = dd_errorf(DD_EIO, rr->err, sizeof rr->err, "%s", e);
  }
  if (!rr->rc) {
    rr->rc = sync_ranks(d, rr->err, sizeof rr->err);
    if (rr->rc) rr->comm->ops->abort(rr->comm, rr->err);
  }
  if (!rr->rc) {
    rr->rc = dd_distill_run(d, rr->err, sizeof rr->err);
    if (rr->rc) rr->comm->ops->abort(rr->comm, rr->err);
  }
  if (d) {
    rr->iter = dd_distill_iter(d);
    rr->stopped = dd_distill_stopped(d);
    rr->student_acc = dd_distill_student_accuracy(d);
    rr->teacher_acc = dd_distill_teacher_accuracy(d);
  }
  dd_distill_destroy(d);
  dd_backend_destroy(be);
  return NULL;
}

int dd_distill_run_ranks(const Distilld__DistillJob *job_in, const char *base_dir, const dd_devices *devices, int n_ranks, int threads_per_rank,
                         const dd_distill_hooks *hooks, int resume, int *resumed_iter, double *student_acc,
                         double *teacher_acc, int *iter, int *stopped, char *err, size_t errlen) {
  return dd_distill_run_nodes(job_in, base_dir, devices, NULL, n_ranks, threads_per_rank, hooks, resume, resumed_iter,
                              student_acc, teacher_acc, iter, stopped, err, errlen);
}

int dd_distill_run_nodes(const Distilld__DistillJob *job_in, const char *base_dir, const dd_devices *devices,
                         const dd_rendezvous *rv, int n_ranks,
                         int threads_per_rank, const dd_distill_hooks *hooks, int resume, int *resumed_iter,
                         double *student_acc, double *teacher_acc, int *iter, int *stopped, char *err, size_t errlen) {
  if (n_ranks < 1 || n_ranks > 64) return dd_errorf(DD_EINVAL, err, errlen, "device: %d ranks (1 to 64)", n_ranks);
  /* one seed for every rank: the replicas must start from the same weights */
  Distilld__DistillJob *job = (Distilld__DistillJob *)dd_proto_copy(&job_in->base);
  if (!job) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  if (job->seed < 0) {
    const Caffe__SolverParameter *sp = job->solver;
    job->seed = sp && sp->random_seed >= 0 ? sp->random_seed : (int64_t)time(NULL);
  }
  if (threads_per_rank <= 0) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    threads_per_rank = cores > n_ranks ? (int)(cores / n_ranks) : 1;
  }
  dd_comm *comms[64] = {0};
  rank_run *rr = calloc((size_t)n_ranks, sizeof *rr);
  pthread_t *th = calloc((size_t)n_ranks, sizeof *th);
  int r = 0;
  if (!rr || !th) {
    r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
    goto out;
  }
  /* the job's devices, one per rank ("cpu" when the job names none) */
  const char *devs[64];
  for (int k = 0; k < n_ranks; k++) devs[k] = (size_t)k < job->n_device ? job->device[k] : "cpu";
  if ((r = devices->comm_group_create(comms, n_ranks, devs, rv, job->collective_timeout_s * 1000, err, errlen))) goto out;
  int started = 0;
  for (int k = 0; k < n_ranks; k++) {
    rr[k] = (rank_run){.job = job, .base_dir = base_dir, .hooks = hooks, .devices = devices, .device = devs[k], .comm = comms[k],
                       .threads = threads_per_rank,
                       .resume = resume, .student_acc = -1, .teacher_acc = -1};
    if (pthread_create(&th[k], NULL, rank_main, &rr[k])) {
      comms[0]->ops->abort(comms[0], "cannot start a rank's thread");
      r = dd_errorf(DD_ENOMEM, err, errlen, "cannot start rank %d's thread", k);
      break;
    }
    started++;
  }
  for (int k = 0; k < started; k++) pthread_join(th[k], NULL);
  if (!r && started == n_ranks) {
    /* the first rank that failed on its own, not because another aborted the group */
    int first = -1;
    for (int k = 0; k < n_ranks && first < 0; k++)
      if (rr[k].rc && !strstr(rr[k].err, "aborted") && !strstr(rr[k].err, "data parallel:")) first = k;
    for (int k = 0; k < n_ranks && first < 0; k++)
      if (rr[k].rc) first = k;
    if (first >= 0) r = dd_errorf(rr[first].rc, err, errlen, "%s", rr[first].err);
    if (resumed_iter) *resumed_iter = rr[0].resumed;
    if (student_acc) *student_acc = rr[0].student_acc;
    if (teacher_acc) *teacher_acc = rr[0].teacher_acc;
    if (iter) *iter = rr[0].iter;
    if (stopped) *stopped = rr[0].stopped;
  }
out:
  if (comms[0]) dd_comm_group_destroy(comms, n_ranks);
  free(rr);
  free(th);
  distilld__distill_job__free_unpacked(job, NULL);
  return r;
}
