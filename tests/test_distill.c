/* The distillation trainer, from its loss layers to `distilld train --job`:
 *
 * 1. KDLoss against a hand computation in double (value, closed-form gradient, finite
 *    differences; the teacher bottom gets nothing, also when learnable layers produce it), and one
 *    whole KD step: the student's parameter gradient is (1 - alpha) * dCE + alpha * dKD by hand.
 * 2. HintLoss (FitNets L2) and AttentionLoss (normalised spatial maps, channel counts differ):
 *    values by hand, gradients by finite differences.
 * 3. The frozen teacher: BatchNorm + Scale folding gives the same logits as the unfolded net on a
 *    random WRN with non-trivial statistics and on Caffe's other layouts (in place, grouped, no
 *    Scale bias, pairs that must stay); `use_global_stats: false` is overridden (no image depends
 *    on the others; two forwards agree bit for bit); the TEST phase (Dropout passes through).
 * 4. A teacher trained by a job without a teacher, then distilled from: its checksum is published
 *    and holds at every snapshot; a teacher weight changed in memory is caught (DD_ECORRUPT); a
 *    hint on a blob that folding removes still works (the teacher stays unfolded).
 * 5. Teacher and student see the same batch, bit for bit, under augmentation.
 * 6. The binary end to end: metrics.jsonl, snapshot names, --resume after extending max_iter ends
 *    on the same bytes as one uninterrupted run.
 * 7. Bad jobs: exit status 2 with the field named.
 * 8. The seed's single net: the trap is reported by layer name, and freeze_frozen_batchnorm keeps
 *    the BatchNorm's blobs bit-identical.
 *
 * The teacher's parameters are reached through a spy on the backend's operations table (the test
 * wraps `upload` and `conv_forward` of its own CPU backend), so the library needs no test-only
 * entry points. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format/caffe_io.h"
#include "devices/devices.h"
#include "base/dd_error.h"
#include "train/distill.h"
#include "format/fileio.h"
#include "data/imgdec.h"
#include "net/net.h"
#include "base/rng.h"
#include "train/teacher.h"
#include "test.h"
#include "test_images.h"
#include "format/textformat.h"

static char tmp[128];
static dd_backend *be;

#define FB "force_backward: true\n"
#define INPUT(top, dims) \
  "layer { name: \"" top "\" type: \"Input\" top: \"" top "\" input_param { shape { " dims " } } }\n"
#define SENTINEL 3.25f

/* ---- small helpers ------------------------------------------------------------------------------ */

static Caffe__NetParameter *parse_net(const char *text) {
  ProtobufCMessage *m = NULL;
  char err[1024];
  if (dd_text_parse(&m, &caffe__net_parameter__descriptor, text, strlen(text), "test.prototxt", err, sizeof err)) {
    fprintf(stderr, "parse: %s\n", err);
    return NULL;
  }
  return (Caffe__NetParameter *)m;
}

static dd_net *make_net(const char *text, Caffe__Phase phase, uint64_t seed) {
  Caffe__NetParameter *p = parse_net(text);
  if (!p) return NULL;
  dd_net *n = NULL;
  char err[1024];
  if (dd_net_create(&n, p, phase, be, seed, NULL, err, sizeof err)) fprintf(stderr, "net: %s\n", err);
  caffe__net_parameter__free_unpacked(p, NULL);
  return n;
}

static void fill_uniform(dd_tensor *t, uint64_t seed, float lo, float hi) {
  dd_rng r;
  dd_rng_seed(&r, seed);
  float *h = malloc((size_t)t->count * sizeof *h);
  for (int64_t i = 0; i < t->count; i++) h[i] = lo + (hi - lo) * dd_rng_uniform(&r);
  dd_tensor_set_data(t, h);
  free(h);
}

static double *to_double(const float *x, int64_t n) {
  double *d = malloc((size_t)n * sizeof *d);
  for (int64_t i = 0; i < n; i++) d[i] = x[i];
  return d;
}

static void path_in(char *buf, size_t len, const char *rel) { snprintf(buf, len, "%s/%s", tmp, rel); }

/* Writes a file under tmp. */
static void wfile(const char *rel, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wfile(const char *rel, const char *fmt, ...) {
  char path[512];
  path_in(path, sizeof path, rel);
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "cannot write %s\n", path);
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fclose(f);
}

/* A file under tmp, NUL-terminated (NULL when missing). */
static char *slurp(const char *rel, size_t *len) {
  char path[512], err[512], *buf = NULL;
  size_t n = 0;
  path_in(path, sizeof path, rel);
  if (dd_read_file(&buf, &n, path, err, sizeof err)) return NULL;
  char *s = realloc(buf, n + 1);
  if (!s) {
    free(buf);
    return NULL;
  }
  s[n] = '\0';
  if (len) *len = n;
  return s;
}

static int exists(const char *rel) {
  char path[512];
  path_in(path, sizeof path, rel);
  return access(path, F_OK) == 0;
}

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...) {
  char cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  if (system(cmd) != 0) fprintf(stderr, "command failed: %s\n", cmd);
}

/* Runs distilld in tmp with stdout and stderr together; returns its exit status. */
static int run_cli(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run_cli(char **out, const char *fmt, ...) {
  char args[4096], cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s 2>&1", tmp, DISTILLD_EXE, args);
  return test_capture(out, cmd);
}

/* Builds `text` (TEST phase), gives every parameter random values (`scale` times a gaussian,
 * biases in [-0.1, 0.1]) and writes them as a .caffemodel under tmp. */
static int write_weights(const char *text, const char *rel, uint64_t seed, float scale) {
  dd_net *n = make_net(text, CAFFE__PHASE__TEST, seed);
  if (!n) return -1;
  dd_rng r;
  dd_rng_seed(&r, seed * 7 + 1);
  for (size_t p = 0; p < n->n_params; p++) {
    dd_tensor *t = n->params[p].t;
    float *h = malloc((size_t)t->count * sizeof *h);
    for (int64_t k = 0; k < t->count; k++)
      h[k] = n->params[p].index == 0 ? scale * (float)dd_rng_gaussian(&r) : -0.1f + 0.2f * dd_rng_uniform(&r);
    dd_tensor_set_data(t, h);
    free(h);
  }
  Caffe__NetParameter *np = dd_net_to_proto(n, 0);
  char path[512], err[512];
  path_in(path, sizeof path, rel);
  int r2 = np ? dd_caffemodel_write(np, path, err, sizeof err) : DD_ENOMEM;
  if (r2) fprintf(stderr, "write %s: %s\n", path, r2 == DD_ENOMEM ? "out of memory" : err);
  if (np) caffe__net_parameter__free_unpacked(np, NULL);
  dd_net_destroy(n);
  return r2;
}

/* The blobs of layer `name` in a .caffemodel (NULL when absent). */
static const Caffe__LayerParameter *model_layer(const Caffe__NetParameter *m, const char *name) {
  for (size_t i = 0; m && i < m->n_layer; i++)
    if (m->layer[i]->name && !strcmp(m->layer[i]->name, name)) return m->layer[i];
  return NULL;
}

static Caffe__NetParameter *read_model(const char *rel) {
  char path[512], err[1024];
  path_in(path, sizeof path, rel);
  Caffe__NetParameter *m = NULL;
  if (dd_caffemodel_read(&m, path, err, sizeof err)) fprintf(stderr, "%s\n", err);
  return m;
}

/* 1 when layer `name` holds the same blobs, value for value and bit for bit, in both models. */
static int same_blobs(const Caffe__NetParameter *a, const Caffe__NetParameter *b, const char *name) {
  const Caffe__LayerParameter *la = model_layer(a, name), *lb = model_layer(b, name);
  if (!la || !lb || la->n_blobs != lb->n_blobs || la->n_blobs == 0) return 0;
  for (size_t k = 0; k < la->n_blobs; k++)
    if (la->blobs[k]->n_data != lb->blobs[k]->n_data ||
        memcmp(la->blobs[k]->data, lb->blobs[k]->data, la->blobs[k]->n_data * sizeof(float)))
      return 0;
  return 1;
}

/* ---- a minimal JSON checker ----------------------------------------------------------------------- */

static const char *json_ws(const char *p) {
  while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
  return p;
}

static const char *json_string(const char *p) {
  if (*p != '"') return NULL;
  for (p++; *p != '"'; p++) {
    if (!*p || (unsigned char)*p < 0x20) return NULL;
    if (*p == '\\') {
      p++;
      if (*p == 'u') {
        for (int k = 1; k <= 4; k++)
          if (!isxdigit((unsigned char)p[k])) return NULL;
        p += 4;
      } else if (!*p || !strchr("\"\\/bfnrt", *p)) {
        return NULL;
      }
    }
  }
  return p + 1;
}

static const char *json_number(const char *p) {
  if (*p == '-') p++;
  if (!isdigit((unsigned char)*p)) return NULL;
  if (*p == '0')
    p++;
  else
    while (isdigit((unsigned char)*p)) p++;
  if (*p == '.') {
    if (!isdigit((unsigned char)*++p)) return NULL;
    while (isdigit((unsigned char)*p)) p++;
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    if (!isdigit((unsigned char)*p)) return NULL;
    while (isdigit((unsigned char)*p)) p++;
  }
  return p;
}

static const char *json_value(const char *p, int depth) {
  p = json_ws(p);
  if (depth > 16) return NULL;
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    p = json_ws(p + 1);
    if (*p == close) return p + 1;
    for (;;) {
      if (close == '}') {
        if (!(p = json_string(p))) return NULL;
        p = json_ws(p);
        if (*p++ != ':') return NULL;
      }
      if (!(p = json_value(p, depth + 1))) return NULL;
      p = json_ws(p);
      if (*p == ',') {
        p = json_ws(p + 1);
        continue;
      }
      return *p == close ? p + 1 : NULL;
    }
  }
  if (*p == '"') return json_string(p);
  if (!strncmp(p, "true", 4) || !strncmp(p, "null", 4)) return p + 4;
  if (!strncmp(p, "false", 5)) return p + 5;
  return json_number(p);
}

/* A line holding exactly one JSON object. */
static int json_object_line(const char *line) {
  if (*json_ws(line) != '{') return 0;
  const char *e = json_value(line, 0);
  return e && *json_ws(e) == '\0';
}

/* The raw value of "key" in a one-level object line (strings without their quotes). */
static int json_get(const char *line, const char *key, char *out, size_t len) {
  char pat[128];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(line, pat);
  if (!p) return 0;
  p += strlen(pat);
  size_t n = 0;
  if (*p == '"') {
    for (p++; *p && *p != '"' && n + 1 < len; p++) out[n++] = *p;
  } else {
    for (; *p && *p != ',' && *p != '}' && n + 1 < len; p++) out[n++] = *p;
  }
  out[n] = '\0';
  return 1;
}

/* metrics.jsonl of an output dir, as lines; counts records by type. */
typedef struct {
  char *text;
  char *line[512];
  int n, bad, n_train, n_test, n_teacher, n_snapshot;
} metrics;

static void metrics_read(metrics *m, const char *out_dir) {
  memset(m, 0, sizeof *m);
  char rel[256];
  snprintf(rel, sizeof rel, "%s/metrics.jsonl", out_dir);
  m->text = slurp(rel, NULL);
  for (char *s = m->text, *e; s && *s && m->n < 512; s = e + 1) {
    e = strchr(s, '\n');
    if (!e) {
      m->bad++; /* every record ends its line */
      break;
    }
    *e = '\0';
    m->line[m->n++] = s;
    char type[32] = "";
    if (!json_object_line(s) || !json_get(s, "type", type, sizeof type)) {
      fprintf(stderr, "     not a JSON record: %s\n", s);
      m->bad++;
    }
    m->n_train += !strcmp(type, "train");
    m->n_test += !strcmp(type, "test");
    m->n_teacher += !strcmp(type, "teacher");
    m->n_snapshot += !strcmp(type, "snapshot");
  }
}

/* ---- the backend spy ------------------------------------------------------------------------------ */

/* Wraps the CPU backend's upload and conv_forward. The trainer's TRAIN before_forward uploads the
 * host batch into the student's data blob, the labels, then the same host batch into the
 * teacher's input blob, and runs the teacher: the third upload is recognised as the one that
 * repeats the source of the upload two before into another blob. The convolutions that follow it
 * belong to the teacher, so their weights are the teacher's (the second is a folded one in a
 * WRN: its block's conv1 absorbs the BatchNorm + Scale after it). */
static struct {
  const dd_backend_ops *orig;
  dd_backend_ops ops;
  void *dst[2];
  const void *src[2];
  size_t bytes[2];
  size_t batch_bytes; /* the size of one data batch: only such uploads are candidates */
  int teacher_uploads, same_as_student, armed, convs;
  uint64_t batch_hash[64];
  float *teacher_w; /* the second teacher convolution's weights */
  int perturb_at, perturbed;
} spy;

static void spy_upload(dd_backend *b, void *dst, const void *src, size_t bytes) {
  spy.orig->upload(b, dst, src, bytes);
  if (bytes == spy.batch_bytes && spy.src[0] == src && spy.bytes[0] == bytes && spy.dst[0] != dst &&
      spy.bytes[1] != bytes) {
    /* CPU backend: blob memory is host memory */
    if (memcmp(dst, spy.dst[0], bytes) == 0) spy.same_as_student++;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < bytes; i++) h = (h ^ ((const unsigned char *)dst)[i]) * 1099511628211ull;
    if (spy.teacher_uploads < 64) spy.batch_hash[spy.teacher_uploads] = h;
    spy.teacher_uploads++;
    spy.armed = 1;
    spy.convs = 0;
  }
  spy.dst[0] = spy.dst[1];
  spy.src[0] = spy.src[1];
  spy.bytes[0] = spy.bytes[1];
  spy.dst[1] = dst;
  spy.src[1] = src;
  spy.bytes[1] = bytes;
}

static void spy_conv_forward(dd_backend *b, const dd_conv_desc *d, float *y, const float *x, const float *w,
                             const float *bias, void *ws) {
  if (spy.armed && ++spy.convs == 2) {
    if (!spy.teacher_w) spy.teacher_w = (float *)w;
    spy.armed = 0;
  }
  spy.orig->conv_forward(b, d, y, x, w, bias, ws);
}

static void spy_on(void) {
  memset(&spy, 0, sizeof spy);
  spy.perturb_at = -1;
  spy.batch_bytes = 8 * 3 * 8 * 8 * sizeof(float);
  spy.orig = be->ops;
  spy.ops = *be->ops;
  spy.ops.upload = spy_upload;
  spy.ops.conv_forward = spy_conv_forward;
  be->ops = &spy.ops;
}

static void spy_off(void) {
  if (spy.orig) be->ops = spy.orig;
  spy.orig = NULL;
}

/* ---- running jobs through the library ------------------------------------------------------------- */

#define MAX_PROG 64
static struct {
  char log[1 << 16];
  int n_prog;
  int iter[MAX_PROG];
  double loss[MAX_PROG], ce[MAX_PROG], kd[MAX_PROG], hint[MAX_PROG][2];
  int n_snap;
} cap;

static void cap_log(void *ctx, int level, const char *msg) {
  (void)ctx;
  size_t used = strlen(cap.log);
  snprintf(cap.log + used, sizeof cap.log - used, "[%d] %s\n", level, msg);
}

static void cap_progress(void *ctx, const dd_distill_progress *p) {
  (void)ctx;
  int k = cap.n_prog++;
  if (k < MAX_PROG) {
    cap.iter[k] = p->iter;
    cap.loss[k] = p->loss;
    cap.ce[k] = cap.kd[k] = cap.hint[k][0] = cap.hint[k][1] = NAN;
    for (int i = 0; i < p->n_terms; i++) {
      const char *nm = p->term_names[i];
      if (!strcmp(nm, "ce_loss")) cap.ce[k] = p->terms[i];
      if (!strcmp(nm, "kd_loss")) cap.kd[k] = p->terms[i];
      if (!strcmp(nm, "hint0_loss")) cap.hint[k][0] = p->terms[i];
      if (!strcmp(nm, "hint1_loss")) cap.hint[k][1] = p->terms[i];
    }
  }
  /* the deliberately unfrozen teacher: one of its (folded) weights moves */
  if (spy.orig && spy.perturb_at == p->iter && spy.teacher_w && !spy.perturbed) {
    spy.teacher_w[0] += 0.25f;
    spy.perturbed = 1;
  }
}

static void cap_snapshot(void *ctx, int iter, const char *model, const char *state) {
  (void)ctx;
  (void)iter;
  (void)model;
  (void)state;
  cap.n_snap++;
}

/* Parses `text` as a DistillJob, builds it with base_dir tmp and runs it. Keeps the trainer in
 * *keep (when not NULL and it was built). Returns the first error. */
static int job_run(const char *text, dd_distill **keep, char *err, size_t errlen) {
  memset(&cap, 0, sizeof cap);
  if (keep) *keep = NULL;
  ProtobufCMessage *m = NULL;
  int r = dd_text_parse(&m, &distilld__distill_job__descriptor, text, strlen(text), "job.prototxt", err, errlen);
  if (r) return r;
  dd_distill_hooks hooks = {.log = cap_log, .progress = cap_progress, .snapshot = cap_snapshot};
  dd_distill *d = NULL;
  r = dd_distill_create(&d, (Distilld__DistillJob *)m, tmp, be, &hooks, err, errlen);
  if (!r) r = dd_distill_run(d, err, errlen);
  if (keep)
    *keep = d;
  else
    dd_distill_destroy(d);
  protobuf_c_message_free_unpacked(m, NULL);
  return r;
}

/* ---- 1. KDLoss --------------------------------------------------------------------------------- */

static void softmax_t(double *p, const double *x, int n, double T) {
  double m = -INFINITY, z = 0;
  for (int i = 0; i < n; i++) m = fmax(m, x[i] / T);
  for (int i = 0; i < n; i++) z += (p[i] = exp(x[i] / T - m));
  for (int i = 0; i < n; i++) p[i] /= z;
}

/* T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the N rows. */
static double kd_ref(const double *s, const double *t, int N, int C, double T) {
  double total = 0, ps[16], pt[16];
  for (int r = 0; r < N; r++) {
    softmax_t(ps, s + r * C, C, T);
    softmax_t(pt, t + r * C, C, T);
    double kl = 0;
    for (int c = 0; c < C; c++) kl += pt[c] * log(pt[c] / ps[c]);
    total += T * T * kl;
  }
  return total / N;
}

/* Central differences of the net's (weighted) loss with respect to blob `t`, against `ana`.
 * Returns the number of entries off by more than atol + rtol * |ana|. */
static int net_fd(dd_net *n, dd_tensor *t, const float *ana, double h, double rtol, double atol, const char *what) {
  float *x = dd_tensor_data_copy(t);
  int bad = 0;
  double worst = 0;
  for (int64_t k = 0; k < t->count; k++) {
    float v = x[k], vp = (float)(v + h), vm = (float)(v - h);
    double lp, lm;
    be->ops->upload(be, t->data + k, &vp, sizeof vp);
    dd_net_forward(n, &lp);
    be->ops->upload(be, t->data + k, &vm, sizeof vm);
    dd_net_forward(n, &lm);
    be->ops->upload(be, t->data + k, &v, sizeof v);
    double num = (lp - lm) / ((double)vp - vm), e = fabs(num - ana[k]);
    worst = fmax(worst, e);
    if (e > atol + rtol * fabs(ana[k])) {
      if (bad++ < 4)
        fprintf(stderr, "     %s: d/d %s[%lld]: backward %.7g, finite difference %.7g\n", what, t->name,
                (long long)k, ana[k], num);
    }
  }
  dd_net_forward(n, NULL);
  free(x);
  printf("     %-40s %4lld points, worst |error| %.1e\n", what, (long long)t->count, worst);
  return bad;
}

static void test_kd_loss_by_hand(void) {
  enum { N = 3, C = 5 };
  const double T = 3, W = 0.7;
  dd_net *n = make_net(FB INPUT("s", "dim: 3 dim: 5") INPUT("t", "dim: 3 dim: 5")
                       "layer { name: 'kd' type: 'KDLoss' bottom: 's' bottom: 't' top: 'kd' loss_weight: 0.7"
                       " distill_loss_param { temperature: 3 } }",
                       CAFFE__PHASE__TRAIN, 1);
  REQUIRE(n);
  dd_tensor *s = dd_net_blob(n, "s"), *t = dd_net_blob(n, "t"), *kd = dd_net_blob(n, "kd");
  REQUIRE(s && t && kd);
  for (int round = 0; round < 2; round++) {
    /* round 1: large logits (a naive exp overflows) */
    float span = round ? 60.0f : 4.0f;
    fill_uniform(s, 11 + round, -span, span);
    fill_uniform(t, 21 + round, -span, span);
    double loss;
    REQUIRE(dd_net_forward(n, &loss) == 0);
    float *sf = dd_tensor_data_copy(s), *tf = dd_tensor_data_copy(t), top;
    dd_tensor_get_data(kd, &top);
    double *sd = to_double(sf, N * C), *td = to_double(tf, N * C);
    double want = kd_ref(sd, td, N, C, T);
    CHECKF(want > 0.01 && fabs(top - want) <= 1e-6 * fmax(1, want), "round %d: KDLoss %.9g, by hand %.9g", round, top, want);
    CHECKF(fabs(loss - W * want) <= 1e-6 * fmax(1, want), "round %d: net loss %.9g, want 0.7 * %.9g", round, loss, want);
    /* backward: the closed form W * T * (softmax(s/T) - softmax(t/T)) / N; the teacher keeps its sentinel */
    be->ops->fill(be, t->diff, SENTINEL, t->count);
    dd_net_backward(n);
    float *ds = dd_tensor_diff_copy(s), *dt = dd_tensor_diff_copy(t);
    double ps[C], pt[C], g[N * C];
    int off = 0, touched = 0;
    for (int r = 0; r < N; r++) {
      softmax_t(ps, sd + r * C, C, T);
      softmax_t(pt, td + r * C, C, T);
      for (int c = 0; c < C; c++) {
        g[r * C + c] = W * T * (ps[c] - pt[c]) / N;
        off += fabs(ds[r * C + c] - g[r * C + c]) > 1e-7 + 1e-5 * fabs(g[r * C + c]);
        touched += dt[r * C + c] != SENTINEL;
      }
    }
    CHECKF(off == 0, "round %d: %d student gradient entries differ from the closed form (ds[0] %.9g, want %.9g)", round, off,
           ds[0], g[0]);
    CHECKF(touched == 0, "round %d: the teacher bottom got a gradient in %d entries", round, touched);
    /* the closed form is the derivative of the hand computation (finite differences in double) */
    int fd_off = 0;
    for (int k = 0; k < N * C; k++) {
      double v = sd[k], h = 1e-5 * fmax(1, fabs(v));
      sd[k] = v + h;
      double lp = W * kd_ref(sd, td, N, C, T);
      sd[k] = v - h;
      double lm = W * kd_ref(sd, td, N, C, T);
      sd[k] = v;
      fd_off += fabs((lp - lm) / (2 * h) - g[k]) > 1e-7 + 1e-5 * fabs(g[k]);
    }
    CHECKF(fd_off == 0, "round %d: %d closed-form entries differ from finite differences of the hand loss", round, fd_off);
    /* and the layer's backward matches finite differences of its own forward */
    if (round == 0) CHECK(net_fd(n, s, ds, 1e-2, 1e-2, 2e-5, "KDLoss T=3 weight 0.7") == 0);
    free(sf);
    free(tf);
    free(sd);
    free(td);
    free(ds);
    free(dt);
  }
  dd_net_destroy(n);
}

/* In a combined net the teacher's logits come from learnable layers: KDLoss still sends them
 * nothing, so the teacher's parameters get no gradient while the student's do. */
static void test_kd_teacher_side_frozen(void) {
  dd_net *n = make_net(INPUT("x", "dim: 3 dim: 4")
                       "layer { name: 'sfc' type: 'InnerProduct' bottom: 'x' top: 's' inner_product_param { num_output: 5"
                       " weight_filler { type: 'gaussian' std: 1 } } }\n"
                       "layer { name: 'tfc' type: 'InnerProduct' bottom: 'x' top: 't' inner_product_param { num_output: 5"
                       " weight_filler { type: 'gaussian' std: 1 } } }\n"
                       "layer { name: 'kd' type: 'KDLoss' bottom: 's' bottom: 't' top: 'kd' distill_loss_param { temperature: 2 } }",
                       CAFFE__PHASE__TRAIN, 3);
  REQUIRE(n);
  fill_uniform(dd_net_blob(n, "x"), 61, -1, 1);
  int si = dd_net_layer_index(n, "sfc"), ti = dd_net_layer_index(n, "tfc");
  REQUIRE(si >= 0 && ti >= 0);
  for (int it = 0; it < 2; it++) {
    dd_net_clear_param_diffs(n);
    double loss;
    REQUIRE(dd_net_forward(n, &loss) == 0);
    dd_net_backward(n);
    CHECK(loss > 0);
    for (int q = 0; q < 2; q++) {
      float *ds = dd_tensor_diff_copy(n->layers[si].params[q]), *dt = dd_tensor_diff_copy(n->layers[ti].params[q]);
      double as = 0, at = 0;
      for (int64_t k = 0; k < n->layers[ti].params[q]->count; k++) {
        as += fabs(ds[k]);
        at += fabs(dt[k]);
      }
      CHECKF(as > 0 && at == 0, "param %d: student |grad| %g, teacher |grad| %g", q, as, at);
      free(ds);
      free(dt);
    }
  }
  dd_net_destroy(n);
}

/* One forward/backward of a student Input -> InnerProduct -> SoftmaxWithLoss (1 - alpha) + KDLoss
 * (alpha): the InnerProduct's gradient is (1 - alpha) * dCE + alpha * dKD, by hand. */
static void test_kd_training_step(void) {
  enum { N = 4, D = 6, K = 3 };
  const double alpha = 0.75, T = 2.5;
  dd_net *n = make_net(INPUT("data", "dim: 4 dim: 6") INPUT("label", "dim: 4") INPUT("tl", "dim: 4 dim: 3")
                       "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' inner_product_param { num_output: 3"
                       " weight_filler { type: 'gaussian' std: 0.7 } bias_filler { type: 'uniform' min: -0.5 max: 0.5 } } }\n"
                       "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' loss_weight: 0.25 }\n"
                       "layer { name: 'kd' type: 'KDLoss' bottom: 'fc' bottom: 'tl' top: 'kd' loss_weight: 0.75"
                       " distill_loss_param { temperature: 2.5 } }",
                       CAFFE__PHASE__TRAIN, 5);
  REQUIRE(n);
  fill_uniform(dd_net_blob(n, "data"), 31, -1.5f, 1.5f);
  fill_uniform(dd_net_blob(n, "tl"), 32, -3, 3);
  const float labels[N] = {0, 2, 1, 2};
  dd_tensor_set_data(dd_net_blob(n, "label"), labels);
  int fi = dd_net_layer_index(n, "fc");
  REQUIRE(fi >= 0 && n->layers[fi].n_params == 2);
  dd_net_clear_param_diffs(n);
  double loss;
  REQUIRE(dd_net_forward(n, &loss) == 0);
  dd_net_backward(n);
  float *x = dd_tensor_data_copy(dd_net_blob(n, "data")), *tl = dd_tensor_data_copy(dd_net_blob(n, "tl"));
  float *w = dd_tensor_data_copy(n->layers[fi].params[0]), *b = dd_tensor_data_copy(n->layers[fi].params[1]);
  float *dw = dd_tensor_diff_copy(n->layers[fi].params[0]), *db = dd_tensor_diff_copy(n->layers[fi].params[1]);
  /* by hand, in double */
  double z[N][K], dz[N][K], ce = 0, kd = 0;
  for (int i = 0; i < N; i++) {
    for (int k = 0; k < K; k++) {
      z[i][k] = b[k];
      for (int j = 0; j < D; j++) z[i][k] += (double)w[k * D + j] * x[i * D + j];
    }
    double p[K], ps[K], pt[K], tr[K];
    for (int k = 0; k < K; k++) tr[k] = tl[i * K + k];
    softmax_t(p, z[i], K, 1);
    softmax_t(ps, z[i], K, T);
    softmax_t(pt, tr, K, T);
    ce -= log(p[(int)labels[i]]) / N;
    for (int k = 0; k < K; k++) {
      kd += T * T * pt[k] * log(pt[k] / ps[k]) / N;
      double dce = (p[k] - (k == (int)labels[i])) / N, dkd = T * (ps[k] - pt[k]) / N;
      dz[i][k] = (1 - alpha) * dce + alpha * dkd;
    }
  }
  CHECKF(fabs(loss - ((1 - alpha) * ce + alpha * kd)) < 1e-5, "loss %.8g, by hand %.8g", loss, (1 - alpha) * ce + alpha * kd);
  int off = 0;
  double worst = 0;
  for (int k = 0; k < K; k++) {
    double gb = 0;
    for (int i = 0; i < N; i++) gb += dz[i][k];
    worst = fmax(worst, fabs(db[k] - gb));
    off += fabs(db[k] - gb) > 1e-6 + 1e-5 * fabs(gb);
    for (int j = 0; j < D; j++) {
      double gw = 0;
      for (int i = 0; i < N; i++) gw += dz[i][k] * x[i * D + j];
      worst = fmax(worst, fabs(dw[k * D + j] - gw));
      off += fabs(dw[k * D + j] - gw) > 1e-6 + 1e-5 * fabs(gw);
    }
  }
  CHECKF(off == 0, "%d of %d parameter gradient entries differ from (1 - alpha) dCE + alpha dKD (worst %.3g)", off, K * D + K,
         worst);
  free(x);
  free(tl);
  free(w);
  free(b);
  free(dw);
  free(db);
  dd_net_destroy(n);
}

/* ---- 2. HintLoss and AttentionLoss -------------------------------------------------------------- */

static void test_hint_loss_by_hand(void) {
  enum { N = 2, CNT = 2 * 3 * 2 * 2 };
  dd_net *n = make_net(FB INPUT("s", "dim: 2 dim: 3 dim: 2 dim: 2") INPUT("t", "dim: 2 dim: 3 dim: 2 dim: 2")
                       "layer { name: 'h' type: 'HintLoss' bottom: 's' bottom: 't' top: 'h' loss_weight: 0.5 }",
                       CAFFE__PHASE__TRAIN, 1);
  REQUIRE(n);
  dd_tensor *s = dd_net_blob(n, "s"), *t = dd_net_blob(n, "t");
  fill_uniform(s, 41, -2, 2);
  fill_uniform(t, 42, -2, 2);
  double loss;
  REQUIRE(dd_net_forward(n, &loss) == 0);
  float *sf = dd_tensor_data_copy(s), *tf = dd_tensor_data_copy(t), top;
  dd_tensor_get_data(dd_net_blob(n, "h"), &top);
  double want = 0;
  for (int k = 0; k < CNT; k++) want += ((double)sf[k] - tf[k]) * ((double)sf[k] - tf[k]);
  want /= 2.0 * N;
  CHECKF(fabs(top - want) <= 1e-6 * fmax(1, want), "HintLoss %.9g, by hand 1/(2N) sum (s-t)^2 = %.9g", top, want);
  CHECKF(fabs(loss - 0.5 * want) <= 1e-6 * fmax(1, want), "net loss %.9g", loss);
  be->ops->fill(be, t->diff, SENTINEL, t->count);
  dd_net_backward(n);
  float *ds = dd_tensor_diff_copy(s), *dt = dd_tensor_diff_copy(t);
  int off = 0, touched = 0;
  for (int k = 0; k < CNT; k++) {
    double g = 0.5 * ((double)sf[k] - tf[k]) / N;
    off += fabs(ds[k] - g) > 1e-6 * (1 + fabs(g));
    touched += dt[k] != SENTINEL;
  }
  CHECKF(off == 0, "%d gradient entries differ from weight * (s - t) / N", off);
  CHECKF(touched == 0, "the teacher blob got a gradient in %d entries", touched);
  CHECK(net_fd(n, s, ds, 1e-2, 1e-2, 2e-5, "HintLoss weight 0.5") == 0);
  free(sf);
  free(tf);
  free(ds);
  free(dt);
  dd_net_destroy(n);
  /* a FitNets hint needs the regressor: shapes that differ are refused, naming it */
  Caffe__NetParameter *p = parse_net(INPUT("s", "dim: 2 dim: 3 dim: 2 dim: 2") INPUT("t", "dim: 2 dim: 4 dim: 2 dim: 2")
                                     "layer { name: 'h' type: 'HintLoss' bottom: 's' bottom: 't' top: 'h' }");
  REQUIRE(p);
  char err[1024] = "";
  dd_net *bad = NULL;
  CHECK(dd_net_create(&bad, p, CAFFE__PHASE__TRAIN, be, 1, NULL, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "regressor");
  dd_net_destroy(bad);
  caffe__net_parameter__free_unpacked(p, NULL);
}

typedef struct {
  int n, cs, ct, hw;
  const double *t;
} att_ctx;

/* 1/N sum over images of ||q_s - q_t||^2, q = Q / ||Q||, Q[j] = sum_c x[c][j]^2. */
static double att_ref(const double *s, const att_ctx *a) {
  double total = 0;
  double *qs = malloc((size_t)a->hw * sizeof *qs), *qt = malloc((size_t)a->hw * sizeof *qt);
  for (int i = 0; i < a->n; i++) {
    double ns = 0, nt = 0;
    for (int j = 0; j < a->hw; j++) {
      qs[j] = qt[j] = 0;
      for (int c = 0; c < a->cs; c++) qs[j] += s[(i * a->cs + c) * a->hw + j] * s[(i * a->cs + c) * a->hw + j];
      for (int c = 0; c < a->ct; c++) qt[j] += a->t[(i * a->ct + c) * a->hw + j] * a->t[(i * a->ct + c) * a->hw + j];
      ns += qs[j] * qs[j];
      nt += qt[j] * qt[j];
    }
    for (int j = 0; j < a->hw; j++) {
      double d = qs[j] / sqrt(ns) - qt[j] / sqrt(nt);
      total += d * d;
    }
  }
  free(qs);
  free(qt);
  return total / a->n;
}

static void test_attention_loss_by_hand(void) {
  enum { N = 2, CS = 3, CT = 5, HW = 12 };
  const double W = 1.5;
  dd_net *n = make_net(FB INPUT("s", "dim: 2 dim: 3 dim: 3 dim: 4") INPUT("t", "dim: 2 dim: 5 dim: 3 dim: 4")
                       "layer { name: 'at' type: 'AttentionLoss' bottom: 's' bottom: 't' top: 'at' loss_weight: 1.5 }",
                       CAFFE__PHASE__TRAIN, 1);
  REQUIRE(n);
  dd_tensor *s = dd_net_blob(n, "s"), *t = dd_net_blob(n, "t");
  fill_uniform(s, 51, -1, 1);
  fill_uniform(t, 52, -1, 1);
  double loss;
  REQUIRE(dd_net_forward(n, &loss) == 0);
  float *sf = dd_tensor_data_copy(s), *tf = dd_tensor_data_copy(t), top;
  dd_tensor_get_data(dd_net_blob(n, "at"), &top);
  double *sd = to_double(sf, N * CS * HW), *td = to_double(tf, N * CT * HW);
  att_ctx a = {N, CS, CT, HW, td};
  double want = att_ref(sd, &a);
  CHECKF(want > 1e-3 && fabs(top - want) <= 1e-5 * want, "AttentionLoss %.9g, by hand %.9g", top, want);
  CHECKF(fabs(loss - W * want) <= 1e-5 * W * want, "net loss %.9g", loss);
  be->ops->fill(be, t->diff, SENTINEL, t->count);
  dd_net_backward(n);
  float *ds = dd_tensor_diff_copy(s), *dt = dd_tensor_diff_copy(t);
  int touched = 0;
  for (int k = 0; k < N * CT * HW; k++) touched += dt[k] != SENTINEL;
  CHECKF(touched == 0, "the teacher blob got a gradient in %d entries", touched);
  /* finite differences of the hand computation, in double */
  double gmax = 0, worst = 0;
  for (int k = 0; k < N * CS * HW; k++) gmax = fmax(gmax, fabs(ds[k]));
  int off = 0;
  for (int k = 0; k < N * CS * HW; k++) {
    double v = sd[k], h = 1e-6;
    sd[k] = v + h;
    double lp = W * att_ref(sd, &a);
    sd[k] = v - h;
    double lm = W * att_ref(sd, &a);
    sd[k] = v;
    double num = (lp - lm) / (2 * h), e = fabs(num - ds[k]);
    worst = fmax(worst, e);
    if (e > 1e-4 * gmax + 1e-4 * fabs(num)) {
      if (off++ < 4) fprintf(stderr, "     attention d/ds[%d]: backward %.7g, finite difference %.7g\n", k, ds[k], num);
    }
  }
  CHECKF(gmax > 1e-3 && off == 0, "%d of %d gradient entries off (worst %.3g, largest gradient %.3g)", off, N * CS * HW, worst,
         gmax);
  CHECK(net_fd(n, s, ds, 3e-3, 2e-2, 2e-4, "AttentionLoss 3 vs 5 channels") == 0);
  free(sf);
  free(tf);
  free(sd);
  free(td);
  free(ds);
  free(dt);
  dd_net_destroy(n);
  /* H x W must agree */
  Caffe__NetParameter *p = parse_net(INPUT("s", "dim: 2 dim: 3 dim: 3 dim: 4") INPUT("t", "dim: 2 dim: 5 dim: 2 dim: 6")
                                     "layer { name: 'at' type: 'AttentionLoss' bottom: 's' bottom: 't' top: 'at' }");
  REQUIRE(p);
  char err[1024] = "";
  dd_net *bad = NULL;
  CHECK(dd_net_create(&bad, p, CAFFE__PHASE__TRAIN, be, 1, NULL, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "same N, H and W");
  dd_net_destroy(bad);
  caffe__net_parameter__free_unpacked(p, NULL);
}

/* ---- 3. the frozen teacher: folding, stored statistics ------------------------------------------ */

/* Random parameters for a net of Convolution, BatchNorm, Scale and InnerProduct layers: BatchNorm
 * statistics stored as Caffe stores them (sums with a scale factor of 3.7 or 0.45), variances
 * from 0.02, Scale gamma in [0.6, 1.4] and beta in [-0.3, 0.3], weights of std sqrt(2 / fan_in),
 * biases in [-0.1, 0.1]. */
static void randomize_bn_net(dd_net *n, uint64_t seed) {
  dd_rng r;
  dd_rng_seed(&r, seed);
  for (size_t i = 0; i < n->n_layers; i++) {
    dd_layer *l = &n->layers[i];
    const char *type = l->ops->type;
    float f = i % 2 ? 3.7f : 0.45f;
    for (int q = 0; q < l->n_params; q++) {
      dd_tensor *t = l->params[q];
      float *h = malloc((size_t)t->count * sizeof *h);
      for (int64_t k = 0; k < t->count; k++) {
        float u = dd_rng_uniform(&r);
        if (!strcmp(type, "BatchNorm"))
          h[k] = q == 0 ? (u - 0.5f) * f : q == 1 ? (0.02f + 2.0f * u) * f : f;
        else if (!strcmp(type, "Scale"))
          h[k] = q == 0 ? 0.6f + 0.8f * u : -0.3f + 0.6f * u;
        else
          h[k] = q == 0 ? (float)(dd_rng_gaussian(&r) * sqrt(2.0 * (double)t->shape.dims[0] / (double)t->count))
                        : -0.1f + 0.2f * u;
      }
      dd_tensor_set_data(t, h);
      free(h);
    }
  }
}

/* A pre-activation WRN-10-2 deploy (3 x 8 x 8 inputs, batch 4, 5 classes) with random weights:
 * BatchNorm statistics stored as Caffe stores them (sums with a scale factor of 3.7 or 0.45),
 * every other BatchNorm with eps 1e-3, Scale gamma in [0.6, 1.4] and beta in [-0.3, 0.3]. Writes
 * the weights to tmp/wrn_random.caffemodel; returns the deploy NetParameter. */
static Caffe__NetParameter *random_wrn(void) {
  sh("python3 '%s/scripts/gen_wrn.py' --depth 10 --width 2 --mode deploy --channels 3 --size 8 --batch 4 --classes 5 "
     "-o '%s/wrn_deploy.prototxt'",
     DD_SOURCE_DIR, tmp);
  char path[512], err[1024];
  path_in(path, sizeof path, "wrn_deploy.prototxt");
  Caffe__NetParameter *p = NULL;
  if (dd_net_read_text(&p, path, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return NULL;
  }
  int nbn = 0;
  for (size_t i = 0; i < p->n_layer; i++) {
    Caffe__LayerParameter *lp = p->layer[i];
    if (strcmp(lp->type, "BatchNorm") || nbn++ % 2) continue;
    if (!lp->batch_norm_param) { /* gen_wrn.py writes one (moving_average_fraction) */
      lp->batch_norm_param = malloc(sizeof *lp->batch_norm_param);
      caffe__batch_norm_parameter__init(lp->batch_norm_param);
    }
    lp->batch_norm_param->has_eps = 1;
    lp->batch_norm_param->eps = 1e-3f;
  }
  dd_net *n = NULL;
  if (dd_net_create(&n, p, CAFFE__PHASE__TEST, be, 5, NULL, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    caffe__net_parameter__free_unpacked(p, NULL);
    return NULL;
  }
  randomize_bn_net(n, 77);
  Caffe__NetParameter *np = dd_net_to_proto(n, 0);
  path_in(path, sizeof path, "wrn_random.caffemodel");
  int rc = np ? dd_caffemodel_write(np, path, err, sizeof err) : DD_ENOMEM;
  if (rc) fprintf(stderr, "write: %s\n", err);
  if (np) caffe__net_parameter__free_unpacked(np, NULL);
  dd_net_destroy(n);
  if (rc) {
    caffe__net_parameter__free_unpacked(p, NULL);
    return NULL;
  }
  return p;
}

static double rel_l2(const float *a, const float *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : INFINITY;
}

/* Forward of a teacher on `x`; returns a copy of its "fc". */
static float *teacher_logits(dd_teacher *t, const float *x) {
  dd_tensor_set_data(dd_net_blob(t->net, "data"), x);
  if (dd_net_forward(t->net, NULL)) return NULL;
  return dd_tensor_data_copy(dd_net_blob(t->net, "fc"));
}

static int count_type(const dd_net *n, const char *type) {
  int c = 0;
  for (size_t i = 0; i < n->n_layers; i++) c += !strcmp(n->layers[i].ops->type, type);
  return c;
}

static void test_teacher_folding(void) {
  Caffe__NetParameter *p = random_wrn();
  REQUIRE(p);
  char wpath[512], err[1024];
  path_in(wpath, sizeof wpath, "wrn_random.caffemodel");
  const char *w[1] = {wpath};
  dd_teacher t0, t1;
  int r0 = dd_teacher_create(&t0, p, w, 1, be, 0, err, sizeof err);
  CHECKF(r0 == 0, "unfolded: %s", err);
  int r1 = dd_teacher_create(&t1, p, w, 1, be, 1, err, sizeof err);
  CHECKF(r1 == 0, "folded: %s", err);
  if (r0 || r1) {
    if (!r0) dd_teacher_destroy(&t0);
    if (!r1) dd_teacher_destroy(&t1);
    caffe__net_parameter__free_unpacked(p, NULL);
    return;
  }
  int nbn = count_type(t0.net, "BatchNorm");
  CHECKF(t0.folded_conv == 0 && t0.folded_scale == 0, "fold=0 folded %d + %d", t0.folded_conv, t0.folded_scale);
  CHECKF(t1.folded_conv > 0 && t1.folded_scale > 0 && t1.folded_conv + t1.folded_scale == nbn,
         "folded %d into convolutions and %d into a Scale, of %d BatchNorm layers", t1.folded_conv, t1.folded_scale, nbn);
  CHECKF(t1.net->n_layers < t0.net->n_layers, "folded net has %zu layers, unfolded %zu", t1.net->n_layers, t0.net->n_layers);
  CHECK(count_type(t1.net, "BatchNorm") == 0);
  /* the same random input into both, and into the plain TEST net */
  dd_tensor *in = dd_net_blob(t0.net, "data");
  REQUIRE(in);
  float *x = malloc((size_t)in->count * sizeof *x);
  dd_rng r;
  dd_rng_seed(&r, 99);
  for (int64_t i = 0; i < in->count; i++) x[i] = -1 + 2 * dd_rng_uniform(&r);
  float *a = teacher_logits(&t0, x), *b = teacher_logits(&t1, x);
  REQUIRE(a && b);
  int64_t nl = dd_net_blob(t0.net, "fc")->count;
  double e = rel_l2(b, a, nl), norm = 0;
  for (int64_t i = 0; i < nl; i++) norm += (double)a[i] * a[i];
  printf("     folded vs unfolded logits: relative L2 error %.2e (%d into conv, %d into Scale; %zu -> %zu layers)\n", e,
         t1.folded_conv, t1.folded_scale, t0.net->n_layers, t1.net->n_layers);
  CHECKF(e < 1e-5, "folded logits differ: relative L2 error %.3g", e);
  CHECKF(norm > 1e-4 && fabsf(a[0] - a[5]) > 1e-6f, "degenerate logits (norm^2 %g)", norm);
  dd_net *plain = NULL;
  REQUIRE(dd_net_create(&plain, p, CAFFE__PHASE__TEST, be, 5, NULL, err, sizeof err) == 0);
  Caffe__NetParameter *wm = read_model("wrn_random.caffemodel");
  REQUIRE(wm);
  CHECK(dd_net_copy_from(plain, wm, wpath, NULL, err, sizeof err) == 0);
  caffe__net_parameter__free_unpacked(wm, NULL);
  dd_tensor_set_data(dd_net_blob(plain, "data"), x);
  CHECK(dd_net_forward(plain, NULL) == 0);
  float *c = dd_tensor_data_copy(dd_net_blob(plain, "fc"));
  CHECKF(memcmp(a, c, (size_t)nl * sizeof *a) == 0, "the unfolded teacher differs from the plain TEST net (rel %.3g)",
         rel_l2(a, c, nl));
  /* the checksum covers the folded parameters and still holds */
  CHECK(t1.checksum == dd_net_param_checksum(t1.net));
  CHECK(dd_teacher_verify(&t1, err, sizeof err) == 0);
  free(x);
  free(a);
  free(b);
  free(c);
  dd_net_destroy(plain);
  dd_teacher_destroy(&t0);
  dd_teacher_destroy(&t1);
  caffe__net_parameter__free_unpacked(p, NULL);
}

/* Caffe's other layouts: BatchNorm and Scale in place on a convolution with a bias (ResNet style),
 * a grouped convolution with BatchNorm and a bias-less Scale out of place, a Scale-only fold
 * after an Eltwise, a BatchNorm without a Scale and one whose output is also read elsewhere (both
 * left as they are). */
static void test_teacher_folding_layouts(void) {
  static const char text[] =
      "name: 'layouts'\n"
      "layer { name: 'input' type: 'Input' top: 'data' input_param { shape { dim: 2 dim: 4 dim: 6 dim: 6 } } }\n"
      "layer { name: 'conv1' type: 'Convolution' bottom: 'data' top: 'conv1' convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }\n"
      "layer { name: 'bn1' type: 'BatchNorm' bottom: 'conv1' top: 'conv1' }\n"
      "layer { name: 'sc1' type: 'Scale' bottom: 'conv1' top: 'conv1' scale_param { bias_term: true } }\n"
      "layer { name: 'relu1' type: 'ReLU' bottom: 'conv1' top: 'conv1' }\n"
      "layer { name: 'conv2' type: 'Convolution' bottom: 'conv1' top: 'conv2' convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 2 bias_term: false } }\n"
      "layer { name: 'bn2' type: 'BatchNorm' bottom: 'conv2' top: 'bn2' batch_norm_param { eps: 0.01 } }\n"
      "layer { name: 'sc2' type: 'Scale' bottom: 'bn2' top: 'sc2' }\n"
      "layer { name: 'sum' type: 'Eltwise' bottom: 'sc2' bottom: 'conv1' top: 'sum' }\n"
      "layer { name: 'bn3' type: 'BatchNorm' bottom: 'sum' top: 'bn3' }\n"
      "layer { name: 'sc3' type: 'Scale' bottom: 'bn3' top: 'bn3' scale_param { bias_term: true } }\n"
      "layer { name: 'bn4' type: 'BatchNorm' bottom: 'bn3' top: 'bn4' }\n"
      "layer { name: 'relu4' type: 'ReLU' bottom: 'bn4' top: 'bn4' }\n"
      "layer { name: 'bn5' type: 'BatchNorm' bottom: 'bn4' top: 'bn5' }\n"
      "layer { name: 'sc5' type: 'Scale' bottom: 'bn5' top: 'sc5' scale_param { bias_term: true } }\n"
      "layer { name: 'cat' type: 'Concat' bottom: 'sc5' bottom: 'bn5' top: 'cat' }\n"
      "layer { name: 'pool' type: 'Pooling' bottom: 'cat' top: 'pool' pooling_param { pool: AVE global_pooling: true } }\n"
      "layer { name: 'fc' type: 'InnerProduct' bottom: 'pool' top: 'fc' inner_product_param { num_output: 3 } }\n";
  dd_net *n = make_net(text, CAFFE__PHASE__TEST, 9);
  REQUIRE(n);
  randomize_bn_net(n, 31);
  Caffe__NetParameter *np = dd_net_to_proto(n, 0);
  dd_net_destroy(n);
  REQUIRE(np);
  char wpath[512], err[1024];
  path_in(wpath, sizeof wpath, "layouts.caffemodel");
  int rc = dd_caffemodel_write(np, wpath, err, sizeof err);
  caffe__net_parameter__free_unpacked(np, NULL);
  REQUIRE(rc == 0);
  Caffe__NetParameter *p = parse_net(text);
  REQUIRE(p);
  const char *w[1] = {wpath};
  dd_teacher t0, t1;
  int r0 = dd_teacher_create(&t0, p, w, 1, be, 0, err, sizeof err);
  CHECKF(r0 == 0, "unfolded: %s", err);
  int r1 = dd_teacher_create(&t1, p, w, 1, be, 1, err, sizeof err);
  CHECKF(r1 == 0, "folded: %s", err);
  caffe__net_parameter__free_unpacked(p, NULL);
  if (!r0 && !r1) {
    CHECKF(t1.folded_conv == 2 && t1.folded_scale == 1 && count_type(t1.net, "BatchNorm") == 2,
           "folded %d into convolutions, %d into a Scale, %d BatchNorm left", t1.folded_conv, t1.folded_scale,
           count_type(t1.net, "BatchNorm"));
    float x[2 * 4 * 6 * 6];
    dd_rng r;
    dd_rng_seed(&r, 5);
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = -1 + 2 * dd_rng_uniform(&r);
    float *a = teacher_logits(&t0, x), *b = teacher_logits(&t1, x);
    CHECK(a && b);
    if (a && b) {
      double e = rel_l2(b, a, 6);
      printf("     layouts: folded vs unfolded relative L2 error %.2e\n", e);
      CHECKF(e < 1e-5, "folded logits differ: relative L2 error %.3g", e);
    }
    free(a);
    free(b);
  }
  if (!r0) dd_teacher_destroy(&t0);
  if (!r1) dd_teacher_destroy(&t1);
}

/* `use_global_stats: false` in a teacher prototxt is overridden: its logits for one image never
 * depend on the other images, and nothing moves between forwards. */
static void test_teacher_stored_statistics(void) {
  Caffe__NetParameter *p = random_wrn();
  REQUIRE(p);
  /* the same net, with an explicit use_global_stats: false on every BatchNorm */
  char *text = dd_text_print(&p->base);
  REQUIRE(text);
  Caffe__NetParameter *pf = parse_net(text);
  free(text);
  REQUIRE(pf);
  int nbn = 0;
  for (size_t i = 0; i < pf->n_layer; i++) {
    Caffe__LayerParameter *lp = pf->layer[i];
    if (strcmp(lp->type, "BatchNorm")) continue;
    if (!lp->batch_norm_param) {
      lp->batch_norm_param = malloc(sizeof *lp->batch_norm_param);
      caffe__batch_norm_parameter__init(lp->batch_norm_param);
    }
    lp->batch_norm_param->has_use_global_stats = 1;
    lp->batch_norm_param->use_global_stats = 0;
    nbn++;
  }
  CHECK(nbn == 7);
  char wpath[512], err[1024];
  path_in(wpath, sizeof wpath, "wrn_random.caffemodel");
  const char *w[1] = {wpath};
  dd_teacher tf, td;
  REQUIRE(dd_teacher_create(&tf, pf, w, 1, be, 0, err, sizeof err) == 0);
  if (dd_teacher_create(&td, p, w, 1, be, 0, err, sizeof err)) {
    dd_teacher_destroy(&tf);
    REQUIRE(0);
  }
  dd_tensor *in = dd_net_blob(tf.net, "data");
  int64_t per = in->count / 4, nl = dd_net_blob(tf.net, "fc")->count, k = nl / 4;
  float *x = malloc((size_t)in->count * sizeof *x);
  dd_rng r;
  dd_rng_seed(&r, 123);
  for (int64_t i = 0; i < in->count; i++) x[i] = -1 + 2 * dd_rng_uniform(&r);
  float *a = teacher_logits(&tf, x), *b = teacher_logits(&tf, x), *ref = teacher_logits(&td, x);
  REQUIRE(a && b && ref);
  CHECK(memcmp(a, b, (size_t)nl * sizeof *a) == 0);   /* two forwards: the same bits */
  CHECK(memcmp(a, ref, (size_t)nl * sizeof *a) == 0); /* the stored statistics, as without the flag */
  /* another image 1: images 0, 2 and 3 keep their logits bit for bit */
  for (int64_t i = per; i < 2 * per; i++) x[i] = 2 * dd_rng_uniform(&r);
  float *c = teacher_logits(&tf, x);
  REQUIRE(c);
  for (int img = 0; img < 4; img++) {
    int same = memcmp(a + img * k, c + img * k, (size_t)k * sizeof *a) == 0;
    CHECKF(img == 1 ? !same : same, "image %d: logits %s after image 1 changed", img, same ? "unchanged" : "changed");
  }
  CHECK(dd_teacher_verify(&tf, err, sizeof err) == 0); /* the stored statistics did not move */
  free(x);
  free(a);
  free(b);
  free(c);
  free(ref);
  dd_teacher_destroy(&tf);
  dd_teacher_destroy(&td);
  caffe__net_parameter__free_unpacked(pf, NULL);
  caffe__net_parameter__free_unpacked(p, NULL);
}

/* The teacher runs in the TEST phase: a Dropout layer in it passes its input through unchanged, and
 * a layer included only in TRAIN is not there. */
static void test_teacher_test_phase(void) {
  static const char plain[] =
      "layer { name: 'input' type: 'Input' top: 'data' input_param { shape { dim: 4 dim: 10 } } }\n"
      "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' inner_product_param { num_output: 3 } }\n";
  static const char dropout[] =
      "layer { name: 'input' type: 'Input' top: 'data' input_param { shape { dim: 4 dim: 10 } } }\n"
      "layer { name: 'drop' type: 'Dropout' bottom: 'data' top: 'data' dropout_param { dropout_ratio: 0.5 } }\n"
      "layer { name: 'train_only' type: 'Scale' bottom: 'data' top: 'data' include { phase: TRAIN } }\n"
      "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' inner_product_param { num_output: 3 } }\n";
  REQUIRE(write_weights(plain, "drop_teacher.caffemodel", 12, 0.5f) == 0);
  char wpath[512], err[1024];
  path_in(wpath, sizeof wpath, "drop_teacher.caffemodel");
  const char *w[1] = {wpath};
  Caffe__NetParameter *pp = parse_net(plain), *pd = parse_net(dropout);
  REQUIRE(pp && pd);
  dd_teacher tp, td;
  int rp = dd_teacher_create(&tp, pp, w, 1, be, 1, err, sizeof err);
  CHECKF(rp == 0, "%s", err);
  int rd = dd_teacher_create(&td, pd, w, 1, be, 1, err, sizeof err);
  CHECKF(rd == 0, "%s", err);
  if (!rp && !rd) {
    CHECK(td.net->phase == CAFFE__PHASE__TEST && dd_net_layer_index(td.net, "train_only") < 0);
    float x[40];
    dd_rng r;
    dd_rng_seed(&r, 4);
    for (int i = 0; i < 40; i++) x[i] = -1 + 2 * dd_rng_uniform(&r);
    float *a = teacher_logits(&tp, x), *b = teacher_logits(&td, x), *c = teacher_logits(&td, x);
    CHECK(a && b && c && memcmp(a, b, 12 * sizeof *a) == 0 && memcmp(b, c, 12 * sizeof *b) == 0);
    free(a);
    free(b);
    free(c);
  }
  if (!rp) dd_teacher_destroy(&tp);
  if (!rd) dd_teacher_destroy(&td);
  caffe__net_parameter__free_unpacked(pp, NULL);
  caffe__net_parameter__free_unpacked(pd, NULL);
}

/* ---- data and nets for the jobs ----------------------------------------------------------------- */

static int data_ready, teacher_ready;


#define DATA_LAYERS(shuffle_etc)                                                                                        \
  "layer { name: 'data' type: 'ImageData' top: 'data' top: 'label' include { phase: TRAIN }\n"                          \
  "  transform_param { scale: 0.00390625 mirror: true crop_size: 8 } image_data_param { source: '%s/train.txt'"         \
  " root_folder: '%s/img/' batch_size: 8 " shuffle_etc " } }\n"                                                          \
  "layer { name: 'data' type: 'ImageData' top: 'data' top: 'label' include { phase: TEST }\n"                           \
  "  transform_param { scale: 0.00390625 crop_size: 8 } image_data_param { source: '%s/test.txt'"                       \
  " root_folder: '%s/img/' batch_size: 8 } }\n"

static void test_setup_data(void) {
  REQUIRE(test_make_images(tmp) == 0);
  /* the teacher: WRN-10-1, trained first (train_val) and then used frozen (deploy) */
  sh("python3 '%s/scripts/gen_wrn.py' --depth 10 --width 1 --mode train_val --channels 3 --size 8 --batch 8 --test-batch 8 "
     "--classes 4 --pad 0 --source-train '%s/train.txt' --source-test '%s/test.txt' --root-folder '%s/img/' "
     "-o '%s/teacher_train_val.prototxt'",
     DD_SOURCE_DIR, tmp, tmp, tmp, tmp);
  /* deploy-style: batch 1 (the trainer gives its Input the student's batch) */
  sh("python3 '%s/scripts/gen_wrn.py' --depth 10 --width 1 --mode deploy --channels 3 --size 8 --batch 1 --classes 4 "
     "-o '%s/teacher_deploy.prototxt'",
     DD_SOURCE_DIR, tmp);
  /* the student: two small convolutions */
  wfile("student.prototxt",
        "name: 'student'\n" DATA_LAYERS("shuffle: true")
        "layer { name: 's_conv1' type: 'Convolution' bottom: 'data' top: 's_conv1' convolution_param { num_output: 8 "
        "kernel_size: 3 pad: 1 weight_filler { type: 'msra' } } }\n"
        "layer { name: 's_relu1' type: 'ReLU' bottom: 's_conv1' top: 's_relu1' }\n"
        "layer { name: 's_conv2' type: 'Convolution' bottom: 's_relu1' top: 's_conv2' convolution_param { num_output: 8 "
        "kernel_size: 3 stride: 2 pad: 1 weight_filler { type: 'msra' } } }\n"
        "layer { name: 's_relu2' type: 'ReLU' bottom: 's_conv2' top: 's_relu2' }\n"
        "layer { name: 's_pool' type: 'Pooling' bottom: 's_relu2' top: 's_pool' pooling_param { pool: AVE global_pooling: true } }\n"
        "layer { name: 'fc' type: 'InnerProduct' bottom: 's_pool' top: 'fc' inner_product_param { num_output: 4 "
        "weight_filler { type: 'msra' } } }\n"
        "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n"
        "layer { name: 'accuracy' type: 'Accuracy' bottom: 'fc' bottom: 'label' top: 'accuracy' include { phase: TEST } }\n",
        tmp, tmp, tmp, tmp);
  CHECK(exists("teacher_train_val.prototxt") && exists("teacher_deploy.prototxt") && exists("student.prototxt"));
  CHECK(exists("img/im_63.png"));
  data_ready = exists("teacher_train_val.prototxt") && exists("teacher_deploy.prototxt") && exists("img/im_63.png");
}

/* ---- 4. the frozen teacher in a job --------------------------------------------------------------- */

static double teacher_job_acc = -1;

/* The teacher is trained by a job without a teacher. */
static void test_teacher_job(void) {
  REQUIRE(data_ready);
  char err[4096];
  dd_distill *d = NULL;
  int r = job_run("name: 'teacher' student { net: 'teacher_train_val.prototxt' }"
                  " solver { base_lr: 0.1 momentum: 0.9 weight_decay: 0.0005 lr_policy: 'fixed' max_iter: 40 display: 10"
                  " test_iter: 2 test_interval: 40 random_seed: 3 }"
                  " output_dir: 'teacher_out'",
                  &d, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  CHECK_CONTAINS(cap.log, "training the student alone");
  if (d) {
    teacher_job_acc = dd_distill_student_accuracy(d);
    CHECK(dd_distill_teacher_checksum(d) == 0);
    CHECK(dd_distill_iter(d) == 40);
  }
  dd_distill_destroy(d);
  printf("     teacher: test accuracy %.3f after 40 iterations\n", teacher_job_acc);
  CHECKF(teacher_job_acc >= 0.75, "the teacher did not learn the pattern: accuracy %g", teacher_job_acc);
  CHECK(exists("teacher_out/snapshots/teacher_iter_40.caffemodel"));
  metrics m;
  metrics_read(&m, "teacher_out");
  CHECKF(m.bad == 0 && m.n_train == 4 && m.n_test == 2 && m.n_teacher == 0 && m.n_snapshot == 1,
         "bad %d, %d train, %d test, %d teacher, %d snapshot records", m.bad, m.n_train, m.n_test, m.n_teacher, m.n_snapshot);
  for (int i = 0; i < m.n; i++) CHECK(!strstr(m.line[i], "teacher_checksum_ok"));
  free(m.text);
  teacher_ready = r == 0 && exists("teacher_out/snapshots/teacher_iter_40.caffemodel");
}

#define TEACHER_SPEC "teacher { net: 'teacher_deploy.prototxt' weights: 'teacher_out/snapshots/teacher_iter_40.caffemodel' }"

static void test_distill_teacher_frozen(void) {
  REQUIRE(teacher_ready);
  char err[4096];
  dd_distill *d = NULL;
  const double alpha = 0.6, w0 = 0.1, w1 = 2;
  int r = job_run("name: 'kd' " TEACHER_SPEC " student { net: 'student.prototxt' }"
                  " solver { base_lr: 0.05 momentum: 0.9 lr_policy: 'fixed' max_iter: 12 display: 1 test_iter: 2"
                  " test_interval: 6 snapshot: 4 random_seed: 5 }"
                  " distill { temperature: 3 alpha: 0.6"
                  "   hint { kind: FITNET teacher_blob: 'g1_b1_sum' student_blob: 's_relu1' weight: 0.1 }"
                  "   hint { kind: ATTENTION teacher_blob: 'g2_b1_sum' student_blob: 's_conv2' weight: 2 } }"
                  " output_dir: 'kd_out'",
                  &d, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  REQUIRE(d);
  CHECK_CONTAINS(cap.log, "distilling from the teacher");
  CHECK_CONTAINS(cap.log, "3 BatchNorm+Scale pairs folded into convolutions, 4 into a Scale");
  /* the loss is (1 - alpha) CE + alpha KD + the weighted hints, every iteration */
  CHECK(cap.n_prog == 12);
  int off = 0;
  for (int k = 0; k < cap.n_prog && k < MAX_PROG; k++) {
    double want = (1 - alpha) * cap.ce[k] + alpha * cap.kd[k] + w0 * cap.hint[k][0] + w1 * cap.hint[k][1];
    if (!(cap.kd[k] > 0 && cap.hint[k][0] > 0 && cap.hint[k][1] > 0) || !(fabs(cap.loss[k] - want) <= 1e-5 * fmax(1, want))) {
      if (off++ < 3)
        fprintf(stderr, "     iter %d: loss %.7g, ce %.7g kd %.7g hints %.7g %.7g\n", cap.iter[k], cap.loss[k], cap.ce[k],
                cap.kd[k], cap.hint[k][0], cap.hint[k][1]);
    }
  }
  CHECKF(off == 0, "%d iterations whose loss is not (1 - alpha) CE + alpha KD + hints", off);
  /* the checksum: published, verified at every snapshot, and that of the teacher rebuilt from its files */
  uint64_t sum = dd_distill_teacher_checksum(d);
  CHECK(sum != 0);
  char hex[32], got[64];
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)sum);
  metrics m;
  metrics_read(&m, "kd_out");
  CHECKF(m.bad == 0 && m.n_teacher == 1 && m.n_snapshot == 3 && m.n_train == 12 && m.n_test >= 2,
         "bad %d, %d teacher, %d snapshot, %d train, %d test records", m.bad, m.n_teacher, m.n_snapshot, m.n_train, m.n_test);
  for (int i = 0; i < m.n; i++) {
    char type[32] = "";
    json_get(m.line[i], "type", type, sizeof type);
    if (!strcmp(type, "teacher")) {
      CHECK(json_get(m.line[i], "checksum", got, sizeof got) && !strcmp(got, hex));
      CHECK(json_get(m.line[i], "accuracy", got, sizeof got) && atof(got) >= 0.7);
    }
    if (!strcmp(type, "snapshot")) CHECK(json_get(m.line[i], "teacher_checksum_ok", got, sizeof got) && !strcmp(got, "true"));
  }
  free(m.text);
  CHECKF(fabs(dd_distill_teacher_accuracy(d) - teacher_job_acc) <= 1.0 / 16 + 1e-9,
         "the folded teacher's accuracy %g, the trained net's %g", dd_distill_teacher_accuracy(d), teacher_job_acc);
  dd_distill_destroy(d);
  char path[512];
  path_in(path, sizeof path, "teacher_deploy.prototxt");
  Caffe__NetParameter *tp = NULL;
  REQUIRE_OK(dd_net_read_text(&tp, path, err, sizeof err), err);
  path_in(path, sizeof path, "teacher_out/snapshots/teacher_iter_40.caffemodel");
  const char *w[1] = {path};
  dd_teacher t;
  CHECK(dd_teacher_create(&t, tp, w, 1, be, 1, err, sizeof err) == 0 && t.checksum == sum);
  dd_teacher_destroy(&t);
  caffe__net_parameter__free_unpacked(tp, NULL);
  for (int it = 4; it <= 12; it += 4) {
    char rel[128];
    snprintf(rel, sizeof rel, "kd_out/snapshots/kd_iter_%d.caffemodel", it);
    CHECKF(exists(rel), "%s", rel);
  }
}

/* A hint on a teacher blob that folding removes (a convolution's output before its BatchNorm): the
 * job runs, with the teacher unfolded, as it does with fold_teacher: false. */
static void test_hint_on_folded_blob(void) {
  REQUIRE(teacher_ready);
  double h[2][3];
  for (int fold = 0; fold < 2; fold++) {
    char job[2048], err[4096];
    snprintf(job, sizeof job,
             "name: 'hf%d' " TEACHER_SPEC " student { net: 'student.prototxt' }"
             " solver { base_lr: 0.05 lr_policy: 'fixed' max_iter: 3 display: 1 random_seed: 5 }"
             " distill { fold_teacher: %s test_teacher: false"
             "   hint { teacher_blob: 'g1_b1_conv1' student_blob: 's_relu1' } } output_dir: 'hf%d_out'",
             fold, fold ? "true" : "false", fold);
    int r = job_run(job, NULL, err, sizeof err);
    CHECKF(r == 0, "fold_teacher %d: %s", fold, err);
    CHECK(cap.n_prog == 3);
    for (int k = 0; k < 3; k++) h[fold][k] = k < cap.n_prog ? cap.hint[k][0] : NAN;
    if (fold) CHECK_CONTAINS(cap.log, "blob \"g1_b1_conv1\" exists only before BatchNorm + Scale folding");
  }
  for (int k = 0; k < 3; k++)
    CHECKF(h[0][k] > 0 && h[0][k] == h[1][k], "iter %d: hint loss %g unfolded, %g by default", k, h[0][k], h[1][k]);
}

/* A teacher weight changed in memory during the job: the next snapshot's verification stops it. */
static void test_perturbed_teacher_caught(void) {
  REQUIRE(teacher_ready);
  char err[4096] = "";
  dd_distill *d = NULL;
  spy_on();
  spy.perturb_at = 1;
  int r = job_run("name: 'kdbad' " TEACHER_SPEC " student { net: 'student.prototxt' }"
                  " solver { base_lr: 0.05 momentum: 0.9 lr_policy: 'fixed' max_iter: 12 display: 1 snapshot: 4 random_seed: 5 }"
                  " distill { temperature: 3 alpha: 0.6 test_teacher: false } output_dir: 'kdbad_out'",
                  &d, err, sizeof err);
  spy_off();
  CHECKF(spy.teacher_w && spy.perturbed, "the teacher's weights were not reached (%d teacher uploads)", spy.teacher_uploads);
  CHECKF(r == DD_ECORRUPT, "dd_distill_run returned %d: %s", r, err);
  CHECK_CONTAINS(err, "checksum");
  CHECK_CONTAINS(err, "teacher");
  CHECK_CONTAINS(cap.log, "[0] the teacher's parameters changed");
  if (d) CHECKF(dd_distill_iter(d) == 4, "training went on to iter %d", dd_distill_iter(d));
  dd_distill_destroy(d);
  CHECK(!exists("kdbad_out/snapshots/kdbad_iter_8.caffemodel"));
  metrics m;
  metrics_read(&m, "kdbad_out");
  CHECK(m.bad == 0 && m.n_snapshot == 1);
  for (int i = 0; i < m.n; i++)
    if (strstr(m.line[i], "\"type\":\"snapshot\"")) CHECK_CONTAINS(m.line[i], "\"teacher_checksum_ok\":false");
  free(m.text);
}

/* ---- 5. the same batch for teacher and student --------------------------------------------------- */

#define IP_TEACHER(classes)                                                                                 \
  "name: 'ipt'\nlayer { name: 'input' type: 'Input' top: 'data' input_param { shape { dim: 8 dim: 3 dim: 8 dim: 8 } } }\n" \
  "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' inner_product_param { num_output: " #classes " } }\n"

/* The teacher is one InnerProduct and the student the same InnerProduct with the same weights,
 * frozen: the teacher's logits equal the student's bit for bit (KD loss exactly 0) exactly when
 * both saw the same augmented batch. The spy also compares the two input blobs byte for byte. */
static void test_same_batch(void) {
  REQUIRE(data_ready);
  wfile("ip_teacher.prototxt", "%s", IP_TEACHER(4));
  wfile("ip5_teacher.prototxt", "%s", IP_TEACHER(5));
  REQUIRE(write_weights(IP_TEACHER(4), "ip_teacher.caffemodel", 3, 0.05f) == 0);
  REQUIRE(write_weights(IP_TEACHER(4), "ip_other.caffemodel", 4, 0.05f) == 0);
  REQUIRE(write_weights(IP_TEACHER(5), "ip5_teacher.caffemodel", 5, 0.05f) == 0);
  wfile("ip_student.prototxt",
        "name: 'ips'\n"
        "layer { name: 'data' type: 'ImageData' top: 'data' top: 'label' include { phase: TRAIN }\n"
        "  transform_param { scale: 0.00390625 mirror: true crop_size: 8 brightness: true contrast: true }"
        "  image_data_param { source: '%s/train.txt' root_folder: '%s/img/' batch_size: 8 shuffle: true } }\n"
        "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' inner_product_param { num_output: 4 } }\n"
        "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n",
        tmp, tmp);
  for (int control = 0; control < 2; control++) {
    char job[2048], err[4096];
    snprintf(job, sizeof job,
             "name: 'same%d' teacher { net: 'ip_teacher.prototxt' weights: '%s' }"
             " student { net: 'ip_student.prototxt' weights: 'ip_teacher.caffemodel' }"
             " solver { base_lr: 0 lr_policy: 'fixed' max_iter: 8 display: 1 random_seed: 21 }"
             " distill { temperature: 2 alpha: 0.5 } output_dir: 'same%d_out'",
             control, control ? "ip_other.caffemodel" : "ip_teacher.caffemodel", control);
    spy_on();
    int r = job_run(job, NULL, err, sizeof err);
    spy_off();
    CHECKF(r == 0, "%s", err);
    CHECKF(cap.n_prog == 8, "%d progress reports", cap.n_prog);
    int zero = 0;
    for (int k = 0; k < cap.n_prog && k < MAX_PROG; k++) {
      zero += cap.kd[k] == 0.0;
      CHECKF(fabs(cap.loss[k] - 0.5 * cap.ce[k] - 0.5 * cap.kd[k]) <= 1e-6 * fmax(1, cap.loss[k]),
             "iter %d: loss %.9g, ce %.9g, kd %.9g", cap.iter[k], cap.loss[k], cap.ce[k], cap.kd[k]);
    }
    if (!control) {
      CHECKF(zero == 8, "the teacher's logits differed from the student's in %d of 8 iterations", 8 - zero);
      CHECKF(spy.teacher_uploads == 8 && spy.same_as_student == 8,
             "%d teacher uploads seen, %d equal to the student's data blob", spy.teacher_uploads, spy.same_as_student);
      int distinct = 0;
      for (int k = 1; k < spy.teacher_uploads && k < 64; k++) distinct += spy.batch_hash[k] != spy.batch_hash[k - 1];
      CHECKF(distinct >= 6, "the batches did not change between iterations (%d changes)", distinct);
    } else {
      CHECKF(zero == 0, "another teacher gave a zero KD loss in %d iterations", zero); /* the check can fail */
    }
  }
}

/* ---- 6. the binary, end to end -------------------------------------------------------------------- */

static void write_cli_job(const char *file, const char *out, int max_iter) {
  wfile(file,
        "name: \"cli\"\n" TEACHER_SPEC "\n"
        "student { net: \"student.prototxt\" }\n"
        "solver { base_lr: 0.05 momentum: 0.9 weight_decay: 0.0005 lr_policy: \"step\" gamma: 0.5 stepsize: 5\n"
        "  max_iter: %d display: 1 test_iter: 2 test_interval: 3 snapshot: 3 random_seed: 11 }\n"
        "distill { temperature: 2 alpha: 0.5 hint { kind: ATTENTION teacher_blob: \"g1_b1_sum\" student_blob: \"s_conv1\" } }\n"
        "output_dir: \"%s\"\n",
        max_iter, out);
}

static void test_cli_job_and_resume(void) {
  REQUIRE(teacher_ready);
  char *out = NULL;
  write_cli_job("cli.job", "cli_a", 6);
  int st = run_cli(&out, "train --job cli.job --threads 2");
  CHECKF(st == 0, "exit %d:\n%s", st, out);
  CHECK_CONTAINS(out, "job cli: done at iter 6");
  CHECK_CONTAINS(out, "teacher accuracy");
  CHECK_CONTAINS(out, "snapshot at iter 3: cli_a/snapshots/cli_iter_3.caffemodel, cli_a/snapshots/cli_iter_3.solverstate");
  free(out);
  const char *files[] = {"cli_a/snapshots/cli_iter_3.caffemodel", "cli_a/snapshots/cli_iter_3.solverstate",
                         "cli_a/snapshots/cli_iter_6.caffemodel", "cli_a/snapshots/cli_iter_6.solverstate"};
  for (int i = 0; i < 4; i++) CHECKF(exists(files[i]), "%s missing", files[i]);
  metrics m;
  metrics_read(&m, "cli_a");
  CHECKF(m.bad == 0 && m.n_train == 6 && m.n_test >= 2 && m.n_teacher == 1 && m.n_snapshot == 2,
         "bad %d, %d train, %d test, %d teacher, %d snapshot records", m.bad, m.n_train, m.n_test, m.n_teacher, m.n_snapshot);
  for (int i = 0; i < m.n; i++) {
    char v[256];
    if (strstr(m.line[i], "\"type\":\"snapshot\"")) {
      CHECK(json_get(m.line[i], "model", v, sizeof v) && !strncmp(v, "cli_a/snapshots/cli_iter_", 25));
      CHECK_CONTAINS(m.line[i], "\"teacher_checksum_ok\":true");
    }
    if (strstr(m.line[i], "\"type\":\"train\"")) {
      CHECK(json_get(m.line[i], "kd_loss", v, sizeof v) && atof(v) > 0);
      CHECK(json_get(m.line[i], "hint0_loss", v, sizeof v));
    }
    CHECK(json_get(m.line[i], "time", v, sizeof v) && atof(v) > 1e9);
  }
  free(m.text);
  /* extend max_iter and resume: iterations 6..9 only, from the newest snapshot */
  write_cli_job("cli.job", "cli_a", 10);
  st = run_cli(&out, "train --job cli.job --resume --threads 2");
  CHECKF(st == 0, "exit %d:\n%s", st, out);
  CHECK_CONTAINS(out, "resumed from cli_a/snapshots/cli_iter_6.solverstate");
  CHECK_CONTAINS(out, "iter 6/10");
  CHECK_CONTAINS(out, "iter 9/10");
  for (int it = 0; it < 6; it++) {
    char s[32];
    snprintf(s, sizeof s, "iter %d/10", it);
    CHECKF(!strstr(out, s), "\"%s\" redone after the resume", s);
  }
  CHECK_CONTAINS(out, "job cli: done at iter 10");
  free(out);
  /* the metrics file goes on: one train record per iteration 0..9, none twice */
  metrics_read(&m, "cli_a");
  int seen[10] = {0}, other = 0;
  for (int i = 0; i < m.n; i++) {
    char v[64];
    if (!strstr(m.line[i], "\"type\":\"train\"") || !json_get(m.line[i], "iter", v, sizeof v)) continue;
    int it = atoi(v);
    if (it >= 0 && it < 10)
      seen[it]++;
    else
      other++;
  }
  for (int it = 0; it < 10; it++) CHECKF(seen[it] == 1, "%d train records for iter %d", seen[it], it);
  CHECK(m.bad == 0 && other == 0 && m.n_teacher == 2);
  free(m.text);
  /* one uninterrupted run of 10 */
  write_cli_job("cli_b.job", "cli_b", 10);
  st = run_cli(&out, "train --job cli_b.job --threads 2");
  CHECKF(st == 0, "exit %d:\n%s", st, out);
  free(out);
  size_t la = 0, lb = 0;
  char *a = slurp("cli_a/snapshots/cli_iter_10.caffemodel", &la), *b = slurp("cli_b/snapshots/cli_iter_10.caffemodel", &lb);
  CHECKF(a && b && la == lb && la > 0 && memcmp(a, b, la) == 0, "resumed and uninterrupted final weights differ");
  free(a);
  free(b);
}

/* ---- 8. data parallel: the same job on 2 CPU ranks ------------------------------------------------ */

/* Largest relative difference over every blob of two models with the same layers. */
static double model_rel_diff(const Caffe__NetParameter *a, const Caffe__NetParameter *b) {
  if (!a || !b || a->n_layer != b->n_layer) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a->n_layer; i++) {
    if (a->layer[i]->n_blobs != b->layer[i]->n_blobs) return INFINITY;
    for (size_t k = 0; k < a->layer[i]->n_blobs; k++) {
      const Caffe__BlobProto *x = a->layer[i]->blobs[k], *y = b->layer[i]->blobs[k];
      if (x->n_data != y->n_data) return INFINITY;
      double sc = 1e-6, d = 0;
      for (size_t e = 0; e < x->n_data; e++) sc = fmax(sc, fabs(x->data[e]));
      for (size_t e = 0; e < x->n_data; e++) d = fmax(d, fabs((double)x->data[e] - y->data[e]));
      worst = fmax(worst, d / sc);
    }
  }
  return worst;
}

#define DP_JOB(name, out, devices)                                                                           \
  "name: '" name "' " TEACHER_SPEC " student { net: 'student.prototxt' }"                                     \
  " solver { base_lr: 0.05 momentum: 0.9 weight_decay: 0.0005 lr_policy: 'fixed' max_iter: 8 display: 2"      \
  " test_iter: 2 test_interval: 4 snapshot: 4 random_seed: 13 }"                                              \
  " distill { temperature: 2 alpha: 0.5 } output_dir: '" out "' " devices

/* The distillation student has no BatchNorm, so 2 ranks x 4 images are 1 rank x 8 images up to the
 * order of the sums; rank 0 alone reports and writes; both report the same teacher and student
 * accuracies (the test pass is split across the ranks and its results averaged). */
static void test_data_parallel_job(void) {
  REQUIRE(teacher_ready);
  char err[4096];
  ProtobufCMessage *m1 = NULL, *m2 = NULL;
  const char *t1 = DP_JOB("dp", "dp_one", ""), *t2 = DP_JOB("dp", "dp_two", "device: 'cpu' device: 'cpu'");
  REQUIRE(dd_text_parse(&m1, &distilld__distill_job__descriptor, t1, strlen(t1), "job", err, sizeof err) == 0);
  REQUIRE(dd_text_parse(&m2, &distilld__distill_job__descriptor, t2, strlen(t2), "job", err, sizeof err) == 0);
  memset(&cap, 0, sizeof cap);
  dd_distill_hooks hooks = {.log = cap_log, .progress = cap_progress, .snapshot = cap_snapshot};
  double sa1 = -1, ta1 = -1, sa2 = -1, ta2 = -1;
  int it1 = 0, it2 = 0;
  int r = dd_distill_run_ranks((Distilld__DistillJob *)m1, tmp, dd_devices_builtin(), 1, 1, &hooks, 0, NULL, &sa1, &ta1, &it1, NULL, err, sizeof err);
  CHECKF(r == 0, "1 rank: %s", err);
  int n_prog1 = cap.n_prog, n_snap1 = cap.n_snap;
  memset(&cap, 0, sizeof cap);
  r = dd_distill_run_ranks((Distilld__DistillJob *)m2, tmp, dd_devices_builtin(), 2, 1, &hooks, 0, NULL, &sa2, &ta2, &it2, NULL, err, sizeof err);
  CHECKF(r == 0, "2 ranks: %s", err);
  CHECK(it1 == 8 && it2 == 8);
  /* rank 0 alone reported: as many displays and snapshots as the single rank */
  CHECKF(cap.n_prog == n_prog1 && cap.n_snap == n_snap1, "2 ranks reported %d displays, %d snapshots; 1 rank %d, %d",
         cap.n_prog, cap.n_snap, n_prog1, n_snap1);
  printf("     1 rank x 8 vs 2 ranks x 4: teacher accuracy %.4f / %.4f, student %.4f / %.4f\n", ta1, ta2, sa1, sa2);
  CHECK(ta1 >= 0 && fabs(ta1 - ta2) < 1e-6);
  CHECK(sa1 >= 0 && fabs(sa1 - sa2) < 1e-6);
  Caffe__NetParameter *a = read_model("dp_one/snapshots/dp_iter_8.caffemodel"), *b = read_model("dp_two/snapshots/dp_iter_8.caffemodel");
  double d = model_rel_diff(a, b);
  printf("     student weights after 8 steps: largest relative difference %.3g\n", d);
  CHECKF(d < 1e-5, "2 ranks end %.3g away from 1 rank", d);
  if (a) caffe__net_parameter__free_unpacked(a, NULL);
  if (b) caffe__net_parameter__free_unpacked(b, NULL);
  /* a batch that does not split over the ranks is refused, naming the layer */
  const char *t3 = DP_JOB("dp3", "dp_three", "device: 'cpu' device: 'cpu' device: 'cpu'");
  ProtobufCMessage *m3 = NULL;
  REQUIRE(dd_text_parse(&m3, &distilld__distill_job__descriptor, t3, strlen(t3), "job", err, sizeof err) == 0);
  r = dd_distill_run_ranks((Distilld__DistillJob *)m3, tmp, dd_devices_builtin(), 3, 1, &hooks, 0, NULL, NULL, NULL, NULL, NULL, err, sizeof err);
  CHECK(r != 0);
  CHECK_CONTAINS(err, "does not split evenly over 3 ranks");
  protobuf_c_message_free_unpacked(m1, NULL);
  protobuf_c_message_free_unpacked(m2, NULL);
  protobuf_c_message_free_unpacked(m3, NULL);
}

/* ---- 7. bad jobs ---------------------------------------------------------------------------------- */

#define GOOD_SOLVER "solver { base_lr: 0.01 max_iter: 2 }"

static void expect_bad(const char *what, const char *job, const char *needle1, const char *needle2) {
  wfile("bad.job", "%s\n", job);
  char *out = NULL;
  int st = run_cli(&out, "train --job bad.job");
  CHECKF(st == 2, "%s: exit %d:\n%s", what, st, out);
  CHECKF(test__contains(out, needle1), "%s: \"%s\" not in:\n%s", what, needle1, test__str(out));
  if (needle2) CHECKF(test__contains(out, needle2), "%s: \"%s\" not in:\n%s", what, needle2, test__str(out));
  CHECKF(!test__contains(out, "iter 0/"), "%s: training started", what);
  free(out);
}

static void test_cli_bad_jobs(void) {
  REQUIRE(teacher_ready);
  const char *student = "student { net: 'student.prototxt' }", *out = "output_dir: 'bad_out'";
  char job[2048];
#define JOB(teacher, distill) \
  (snprintf(job, sizeof job, "name: 'bad'\n%s\n%s\n%s\n%s\n%s", teacher, student, GOOD_SOLVER, distill, out), job)
  expect_bad("missing teacher weights", JOB("teacher { net: 'teacher_deploy.prototxt' weights: 'missing.caffemodel' }", ""),
             "teacher.weights[0]", "missing.caffemodel");
  expect_bad("no teacher weights", JOB("teacher { net: 'teacher_deploy.prototxt' }", ""), "teacher.weights", NULL);
  expect_bad("unknown teacher logits", JOB(TEACHER_SPEC, "distill { teacher_logits: 'nope' }"), "distill.teacher_logits",
             "\"nope\"");
  expect_bad("temperature 0", JOB(TEACHER_SPEC, "distill { temperature: 0 }"), "distill.temperature", "> 0");
  expect_bad("temperature < 0", JOB(TEACHER_SPEC, "distill { temperature: -2 }"), "distill.temperature", NULL);
  expect_bad("alpha > 1", JOB(TEACHER_SPEC, "distill { alpha: 1.5 }"), "distill.alpha", "1.5");
  expect_bad("alpha < 0", JOB(TEACHER_SPEC, "distill { alpha: -0.25 }"), "distill.alpha", NULL);
  expect_bad("class counts differ", JOB("teacher { net: 'ip5_teacher.prototxt' weights: 'ip5_teacher.caffemodel' }", ""),
             "8x5", "8x4");
  expect_bad("spatial sizes differ",
             JOB(TEACHER_SPEC, "distill { hint { teacher_blob: 'g2_b1_sum' student_blob: 's_relu1' } }"), "distill.hint[0]",
             "same H x W");
  expect_bad("missing student net", "name: 'bad'\n" GOOD_SOLVER "\noutput_dir: 'bad_out'", "student.net", NULL);
  expect_bad("student net not there", "name: 'bad'\nstudent { net: 'nope.prototxt' }\n" GOOD_SOLVER "\noutput_dir: 'bad_out'",
             "student.net", "nope.prototxt");
  wfile("solver.prototxt", "base_lr: 0.01 max_iter: 2\n");
  expect_bad("solver and solver_file",
             "name: 'bad'\nstudent { net: 'student.prototxt' }\n" GOOD_SOLVER "\nsolver_file: 'solver.prototxt'\noutput_dir: 'bad_out'",
             "solver / solver_file", NULL);
  expect_bad("unknown field", "name: 'bad'\nstudent { net: 'student.prototxt' }\n  bogus_field: 3\n" GOOD_SOLVER, "bad.job:3:3",
             "bogus_field");
  /* multi-node: every node must pick the same seed, so one from a clock is refused */
  expect_bad("nodes without a seed",
             "name: 'bad'\nstudent { net: 'student.prototxt' }\nsolver_file: 'solver.prototxt'\nnodes: 2\noutput_dir: 'bad_out'",
             "seed: a job on 2 nodes needs a fixed seed", NULL);
  expect_bad("nodes 0", JOB("", "nodes: 0"), "nodes must be 1 to 1024", NULL);
#undef JOB
  CHECK(!exists("bad_out/snapshots/bad_iter_2.caffemodel"));
}

/* ---- 8. the seed's single net -------------------------------------------------------------------- */

/* The seed net with its ImageData layers on our images (8 x 8 crops, batch 8). */
static int write_seed_student(void) {
  Caffe__NetParameter *n = NULL;
  char err[1024];
  if (dd_net_read_text(&n, DD_TEST_DATA "/seed/seed_net.prototxt", err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  for (size_t i = 0; i < n->n_layer; i++) {
    Caffe__LayerParameter *lp = n->layer[i];
    if (strcmp(lp->type, "ImageData")) continue;
    int test = lp->n_include && lp->include[0]->phase == CAFFE__PHASE__TEST;
    char s[512], root[512];
    snprintf(s, sizeof s, "%s/%s", tmp, test ? "test.txt" : "train.txt");
    snprintf(root, sizeof root, "%s/img/", tmp);
    free(lp->image_data_param->source);
    lp->image_data_param->source = strdup(s);
    if (lp->image_data_param->root_folder != caffe__image_data_parameter__root_folder__default_value)
      free(lp->image_data_param->root_folder); /* protobuf-c's default is static */
    lp->image_data_param->root_folder = strdup(root);
    lp->image_data_param->batch_size = 8;
    lp->transform_param->crop_size = 8;
  }
  char *text = dd_text_print(&n->base);
  int rc = text ? 0 : -1;
  if (text) wfile("seed_student.prototxt", "%s", text);
  free(text);
  /* initial weights with stored statistics far from our images' */
  if (!rc) {
    size_t k = 0;
    for (size_t i = 0; i < n->n_layer; i++) {
      if (!strcmp(n->layer[i]->type, "ImageData"))
        caffe__layer_parameter__free_unpacked(n->layer[i], NULL);
      else
        n->layer[k++] = n->layer[i];
    }
    n->n_layer = k;
    char *body = dd_text_print(&n->base), *full = malloc(body ? strlen(body) + 512 : 1);
    if (body && full) {
      sprintf(full, "layer { name: 'data' type: 'Input' top: 'data' top: 'label' input_param { shape { dim: 8 dim: 3 dim: 8 dim: 8 } shape { dim: 8 } } }\n%s",
              body);
      dd_net *net = make_net(full, CAFFE__PHASE__TEST, 3);
      rc = -1;
      if (net) {
        int bi = dd_net_layer_index(net, "res2_1a_1_bn");
        dd_rng r;
        dd_rng_seed(&r, 8);
        for (int q = 0; bi >= 0 && q < 3; q++) {
          dd_tensor *t = net->layers[bi].params[q];
          float *h = malloc((size_t)t->count * sizeof *h);
          for (int64_t j = 0; j < t->count; j++) h[j] = q == 2 ? 1.7f : 1.7f * (q == 0 ? 0.3f * dd_rng_uniform(&r) : 0.5f + dd_rng_uniform(&r));
          dd_tensor_set_data(t, h);
          free(h);
        }
        Caffe__NetParameter *np = bi >= 0 ? dd_net_to_proto(net, 0) : NULL;
        char path[512];
        path_in(path, sizeof path, "seed_init.caffemodel");
        if (np && dd_caffemodel_write(np, path, err, sizeof err) == 0) rc = 0;
        if (np) caffe__net_parameter__free_unpacked(np, NULL);
        dd_net_destroy(net);
      }
    }
    free(body);
    free(full);
  }
  caffe__net_parameter__free_unpacked(n, NULL);
  return rc;
}

static void test_seed_net_freeze(void) {
  REQUIRE(data_ready);
  REQUIRE(write_seed_student() == 0);
  Caffe__NetParameter *init = read_model("seed_init.caffemodel");
  REQUIRE(init);
  for (int freeze = 0; freeze < 2; freeze++) {
    char job[2048], err[4096];
    snprintf(job, sizeof job,
             "name: 'seed%d' student { net: 'seed_student.prototxt' weights: 'seed_init.caffemodel' }"
             " solver { base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: 'fixed' max_iter: 4 display: 2"
             " test_iter: 1 test_interval: 2 random_seed: 10086 }"
             " %s output_dir: 'seed%d_out'",
             freeze, freeze ? "distill { freeze_frozen_batchnorm: true }" : "", freeze);
    int r = job_run(job, NULL, err, sizeof err);
    CHECKF(r == 0, "freeze %d: %s", freeze, err);
    CHECK_CONTAINS(cap.log, "[1] student net: res2_1a_1_bn: BatchNorm keeps updating");
    if (freeze)
      CHECK_CONTAINS(cap.log, "freeze_frozen_batchnorm: res2_1a_1_bn now uses its stored statistics");
    else
      CHECK(!strstr(cap.log, "freeze_frozen_batchnorm"));
    char rel[128];
    snprintf(rel, sizeof rel, "seed%d_out/snapshots/seed%d_iter_4.caffemodel", freeze, freeze);
    Caffe__NetParameter *fin = read_model(rel);
    CHECKF(fin != NULL, "%s", rel);
    if (!fin) continue;
    int same = same_blobs(init, fin, "res2_1a_1_bn");
    /* without the freeze the trap moves the statistics (the check can fail); with it, no bit moves */
    CHECKF(freeze ? same : !same, "freeze %d: the BatchNorm's blobs %s", freeze, same ? "stayed" : "moved");
    CHECK(same_blobs(init, fin, "conv1")); /* lr_mult 0, decay_mult 0 */
    caffe__net_parameter__free_unpacked(fin, NULL);
  }
  caffe__net_parameter__free_unpacked(init, NULL);
}

int main(void) {
  snprintf(tmp, sizeof tmp, "/tmp/dd_distill.XXXXXX");
  if (!mkdtemp(tmp)) return 1;
  if (dd_cpu_backend_create(&be, 2)) {
    fprintf(stderr, "no CPU backend\n");
    return 1;
  }
  RUN(test_kd_loss_by_hand);
  RUN(test_kd_teacher_side_frozen);
  RUN(test_kd_training_step);
  RUN(test_hint_loss_by_hand);
  RUN(test_attention_loss_by_hand);
  RUN(test_teacher_folding);
  RUN(test_teacher_folding_layouts);
  RUN(test_teacher_stored_statistics);
  RUN(test_teacher_test_phase);
  RUN(test_setup_data);
  RUN(test_teacher_job);
  RUN(test_distill_teacher_frozen);
  RUN(test_hint_on_folded_blob);
  RUN(test_perturbed_teacher_caught);
  RUN(test_same_batch);
  RUN(test_cli_job_and_resume);
  RUN(test_data_parallel_job);
  RUN(test_cli_bad_jobs);
  RUN(test_seed_net_freeze);
  dd_cpu_backend_destroy(be);
  if (!getenv("DD_KEEP_TMP")) sh("rm -rf '%s'", tmp);
  return test_summary();
}
