/* The distillation trainer's jobs, through the library and through `distilld train --job`, on the
 * CPU over the tiny images of tests/test_images.h:
 *
 * 1. A teacher trained by a job without a teacher, then distilled from: the loss is
 *    (1 - alpha) CE + alpha KD + the weighted hints at every iteration, the teacher's checksum is
 *    published and holds at every snapshot; a hint on a blob that folding removes still works
 *    (the teacher stays unfolded); a teacher weight changed in memory is caught (DD_ECORRUPT).
 * 2. Teacher and student see the same batch, bit for bit, under augmentation.
 * 3. The binary end to end: metrics.jsonl, snapshot names, --resume after extending max_iter ends
 *    on the same bytes as one uninterrupted run.
 * 4. Data parallel: the same job on 2 CPU ranks ends where 1 rank does (rank 0 alone reports); a
 *    batch that does not split over the ranks is refused.
 * 5. Bad jobs: exit status 2 with the field named.
 * 6. The seed's single net: the trap is reported by layer name, and freeze_frozen_batchnorm keeps
 *    the BatchNorm's blobs bit-identical.
 *
 * The tests run in order in one process: test_setup_data writes the images and nets, and
 * test_teacher_job trains the teacher that the later jobs distil from (test_same_batch also
 * writes the 5-class teacher that test_cli_bad_jobs refuses). The teacher's parameters are reached
 * through a spy on the backend's operations table (the test wraps `upload`, `conv_forward` and
 * `conv_blk_forward` of its own CPU backend), so the library needs no test-only entry points. The loss layers by hand
 * are tests/test_distill_losses.c; the frozen teacher's folding, tests/test_distill_teacher.c. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>

#include "format/caffe_io.h"
#include "devices/devices.h"
#include "base/dd_error.h"
#include "train/distill.h"
#include "format/fileio.h"
#include "net/net.h"
#include "base/rng.h"
#include "train/teacher.h"
#include "format/textformat.h"
#include "test.h"
#include "test_distill.h"
#include "test_files.h"
#include "test_images.h"
#include "test_models.h"
#include "test_nets.h"

static char tmp[128];
static dd_backend *be;

/* ---- small helpers ------------------------------------------------------------------------------ */

/* TMP/REL into `buf`; returns `buf`. */
static char *path_in(char *buf, size_t len, const char *rel) {
  snprintf(buf, len, "%s/%s", tmp, rel);
  return buf;
}

/* 1 when TMP/REL exists. */
static int exists_in(const char *rel) {
  char path[512];
  return test_exists(path_in(path, sizeof path, rel));
}

/* The blobs of layer `name` in a .caffemodel (NULL when absent). */
static const Caffe__LayerParameter *model_layer(const Caffe__NetParameter *m, const char *name) {
  for (size_t i = 0; m && i < m->n_layer; i++)
    if (m->layer[i]->name && !strcmp(m->layer[i]->name, name)) return m->layer[i];
  return NULL;
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

/* ---- a job's metrics.jsonl ---------------------------------------------------------------------- */

/* metrics.jsonl of an output dir, as lines; counts records by type. */
typedef struct {
  char *text;
  char *line[512];
  int n, bad, n_train, n_test, n_teacher, n_snapshot;
} metrics;

static void metrics_read(metrics *m, const char *out_dir) {
  memset(m, 0, sizeof *m);
  char rel[256], path[512];
  snprintf(rel, sizeof rel, "%s/metrics.jsonl", out_dir);
  m->text = test_slurp(path_in(path, sizeof path, rel));
  for (char *s = m->text, *e; s && *s && m->n < 512; s = e + 1) {
    e = strchr(s, '\n');
    if (!e) {
      m->bad++; /* every record ends its line */
      break;
    }
    *e = '\0';
    m->line[m->n++] = s;
    char type[32] = "";
    if (!test_json_object_line(s) || !test_json_get(s, "type", type, sizeof type)) {
      fprintf(stderr, "     not a JSON record: %s\n", s);
      m->bad++;
    }
    m->n_train += !strcmp(type, "train");
    m->n_test += !strcmp(type, "test");
    m->n_teacher += !strcmp(type, "teacher");
    m->n_snapshot += !strcmp(type, "snapshot");
  }
}

/* ---- the backend spy ---------------------------------------------------------------------------- */

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

/* the teacher's convolutions when its plan keeps blocked activations (core/net/plan.h) */
static int spy_conv_blk_forward(dd_backend *b, const dd_conv_desc *d, int bf16, int x_blocked, int relu, float slope,
                                void *y, const void *x, const float *w, const float *bias) {
  if (spy.armed && ++spy.convs == 2) {
    if (!spy.teacher_w) spy.teacher_w = (float *)w;
    spy.armed = 0;
  }
  return spy.orig->conv_blk_forward(b, d, bf16, x_blocked, relu, slope, y, x, w, bias);
}

static void spy_on(void) {
  memset(&spy, 0, sizeof spy);
  spy.perturb_at = -1;
  spy.batch_bytes = 8 * 3 * 8 * 8 * sizeof(float);
  spy.orig = be->ops;
  spy.ops = *be->ops;
  spy.ops.upload = spy_upload;
  spy.ops.conv_forward = spy_conv_forward;
  if (spy.ops.conv_blk_forward) spy.ops.conv_blk_forward = spy_conv_blk_forward;
  be->ops = &spy.ops;
}

static void spy_off(void) {
  if (spy.orig) be->ops = spy.orig;
  spy.orig = NULL;
}

/* ---- running jobs through the library ----------------------------------------------------------- */

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
  char path[512];
  REQUIRE(test_make_images(tmp) == 0);
  /* the teacher: WRN-10-1, trained first (train_val) and then used frozen (deploy) */
  test_sh("python3 '%s/scripts/gen_wrn.py' --depth 10 --width 1 --mode train_val --channels 3 --size 8 --batch 8 --test-batch 8 "
          "--classes 4 --pad 0 --source-train '%s/train.txt' --source-test '%s/test.txt' --root-folder '%s/img/' "
          "-o '%s/teacher_train_val.prototxt'",
          DD_SOURCE_DIR, tmp, tmp, tmp, tmp);
  /* deploy-style: batch 1 (the trainer gives its Input the student's batch) */
  test_sh("python3 '%s/scripts/gen_wrn.py' --depth 10 --width 1 --mode deploy --channels 3 --size 8 --batch 1 --classes 4 "
          "-o '%s/teacher_deploy.prototxt'",
          DD_SOURCE_DIR, tmp);
  /* the student: two small convolutions */
  CHECK(wfile(path_in(path, sizeof path, "student.prototxt"),
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
              tmp, tmp, tmp, tmp));
  CHECK(exists_in("teacher_train_val.prototxt") && exists_in("teacher_deploy.prototxt") && exists_in("student.prototxt"));
  CHECK(exists_in("img/im_63.png"));
  data_ready = exists_in("teacher_train_val.prototxt") && exists_in("teacher_deploy.prototxt") && exists_in("img/im_63.png");
}

/* ---- 1. the frozen teacher in a job ------------------------------------------------------------- */

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
  CHECK(exists_in("teacher_out/snapshots/teacher_iter_40.caffemodel"));
  metrics m;
  metrics_read(&m, "teacher_out");
  CHECKF(m.bad == 0 && m.n_train == 4 && m.n_test == 2 && m.n_teacher == 0 && m.n_snapshot == 1,
         "bad %d, %d train, %d test, %d teacher, %d snapshot records", m.bad, m.n_train, m.n_test, m.n_teacher, m.n_snapshot);
  for (int i = 0; i < m.n; i++) CHECK(!strstr(m.line[i], "teacher_checksum_ok"));
  free(m.text);
  teacher_ready = r == 0 && exists_in("teacher_out/snapshots/teacher_iter_40.caffemodel");
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
    test_json_get(m.line[i], "type", type, sizeof type);
    if (!strcmp(type, "teacher")) {
      CHECK(test_json_get(m.line[i], "checksum", got, sizeof got) && !strcmp(got, hex));
      CHECK(test_json_get(m.line[i], "accuracy", got, sizeof got) && atof(got) >= 0.7);
    }
    if (!strcmp(type, "snapshot")) CHECK(test_json_get(m.line[i], "teacher_checksum_ok", got, sizeof got) && !strcmp(got, "true"));
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
    CHECKF(exists_in(rel), "%s", rel);
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
  CHECK(!exists_in("kdbad_out/snapshots/kdbad_iter_8.caffemodel"));
  metrics m;
  metrics_read(&m, "kdbad_out");
  CHECK(m.bad == 0 && m.n_snapshot == 1);
  for (int i = 0; i < m.n; i++)
    if (strstr(m.line[i], "\"type\":\"snapshot\"")) CHECK_CONTAINS(m.line[i], "\"teacher_checksum_ok\":false");
  free(m.text);
}

/* ---- 2. the same batch for teacher and student -------------------------------------------------- */

#define IP_TEACHER(classes)                                                                                 \
  "name: 'ipt'\nlayer { name: 'input' type: 'Input' top: 'data' input_param { shape { dim: 8 dim: 3 dim: 8 dim: 8 } } }\n" \
  "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' inner_product_param { num_output: " #classes " } }\n"

/* The teacher is one InnerProduct and the student the same InnerProduct with the same weights,
 * frozen: the teacher's logits equal the student's bit for bit (KD loss exactly 0) exactly when
 * both saw the same augmented batch. The spy also compares the two input blobs byte for byte. */
static void test_same_batch(void) {
  REQUIRE(data_ready);
  char p[512];
  CHECK(wfile(path_in(p, sizeof p, "ip_teacher.prototxt"), "%s", IP_TEACHER(4)));
  CHECK(wfile(path_in(p, sizeof p, "ip5_teacher.prototxt"), "%s", IP_TEACHER(5)));
  REQUIRE(test_write_weights(be, IP_TEACHER(4), path_in(p, sizeof p, "ip_teacher.caffemodel"), 3, 0.05f) == 0);
  REQUIRE(test_write_weights(be, IP_TEACHER(4), path_in(p, sizeof p, "ip_other.caffemodel"), 4, 0.05f) == 0);
  REQUIRE(test_write_weights(be, IP_TEACHER(5), path_in(p, sizeof p, "ip5_teacher.caffemodel"), 5, 0.05f) == 0);
  CHECK(wfile(path_in(p, sizeof p, "ip_student.prototxt"),
              "name: 'ips'\n"
              "layer { name: 'data' type: 'ImageData' top: 'data' top: 'label' include { phase: TRAIN }\n"
              "  transform_param { scale: 0.00390625 mirror: true crop_size: 8 brightness: true contrast: true }"
              "  image_data_param { source: '%s/train.txt' root_folder: '%s/img/' batch_size: 8 shuffle: true } }\n"
              "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' inner_product_param { num_output: 4 } }\n"
              "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n",
              tmp, tmp));
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

/* ---- 3. the binary, end to end ------------------------------------------------------------------ */

static void write_cli_job(const char *file, const char *out, int max_iter) {
  char path[512];
  CHECK(wfile(path_in(path, sizeof path, file),
              "name: \"cli\"\n" TEACHER_SPEC "\n"
              "student { net: \"student.prototxt\" }\n"
              "solver { base_lr: 0.05 momentum: 0.9 weight_decay: 0.0005 lr_policy: \"step\" gamma: 0.5 stepsize: 5\n"
              "  max_iter: %d display: 1 test_iter: 2 test_interval: 3 snapshot: 3 random_seed: 11 }\n"
              "distill { temperature: 2 alpha: 0.5 hint { kind: ATTENTION teacher_blob: \"g1_b1_sum\" student_blob: \"s_conv1\" } }\n"
              "output_dir: \"%s\"\n",
              max_iter, out));
}

static void test_cli_job_and_resume(void) {
  REQUIRE(teacher_ready);
  char *out = NULL;
  write_cli_job("cli.job", "cli_a", 6);
  int st = test_distilld(&out, tmp, "train --job cli.job --threads 2");
  CHECKF(st == 0, "exit %d:\n%s", st, out);
  CHECK_CONTAINS(out, "job cli: done at iter 6");
  CHECK_CONTAINS(out, "teacher accuracy");
  CHECK_CONTAINS(out, "snapshot at iter 3: cli_a/snapshots/cli_iter_3.caffemodel, cli_a/snapshots/cli_iter_3.solverstate");
  free(out);
  const char *files[] = {"cli_a/snapshots/cli_iter_3.caffemodel", "cli_a/snapshots/cli_iter_3.solverstate",
                         "cli_a/snapshots/cli_iter_6.caffemodel", "cli_a/snapshots/cli_iter_6.solverstate"};
  for (int i = 0; i < 4; i++) CHECKF(exists_in(files[i]), "%s missing", files[i]);
  metrics m;
  metrics_read(&m, "cli_a");
  CHECKF(m.bad == 0 && m.n_train == 6 && m.n_test >= 2 && m.n_teacher == 1 && m.n_snapshot == 2,
         "bad %d, %d train, %d test, %d teacher, %d snapshot records", m.bad, m.n_train, m.n_test, m.n_teacher, m.n_snapshot);
  for (int i = 0; i < m.n; i++) {
    char v[256];
    if (strstr(m.line[i], "\"type\":\"snapshot\"")) {
      CHECK(test_json_get(m.line[i], "model", v, sizeof v) && !strncmp(v, "cli_a/snapshots/cli_iter_", 25));
      CHECK_CONTAINS(m.line[i], "\"teacher_checksum_ok\":true");
    }
    if (strstr(m.line[i], "\"type\":\"train\"")) {
      CHECK(test_json_get(m.line[i], "kd_loss", v, sizeof v) && atof(v) > 0);
      CHECK(test_json_get(m.line[i], "hint0_loss", v, sizeof v));
    }
    CHECK(test_json_get(m.line[i], "time", v, sizeof v) && atof(v) > 1e9);
  }
  free(m.text);
  /* extend max_iter and resume: iterations 6..9 only, from the newest snapshot */
  write_cli_job("cli.job", "cli_a", 10);
  st = test_distilld(&out, tmp, "train --job cli.job --resume --threads 2");
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
    if (!strstr(m.line[i], "\"type\":\"train\"") || !test_json_get(m.line[i], "iter", v, sizeof v)) continue;
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
  st = test_distilld(&out, tmp, "train --job cli_b.job --threads 2");
  CHECKF(st == 0, "exit %d:\n%s", st, out);
  free(out);
  size_t la = 0, lb = 0;
  char pa[512], pb[512], err[512], *a = NULL, *b = NULL;
  if (dd_read_file(&a, &la, path_in(pa, sizeof pa, "cli_a/snapshots/cli_iter_10.caffemodel"), err, sizeof err) ||
      dd_read_file(&b, &lb, path_in(pb, sizeof pb, "cli_b/snapshots/cli_iter_10.caffemodel"), err, sizeof err))
    fprintf(stderr, "%s\n", err);
  CHECKF(a && b && la == lb && la > 0 && memcmp(a, b, la) == 0, "resumed and uninterrupted final weights differ");
  free(a);
  free(b);
}

/* ---- 4. data parallel: the same job on 2 CPU ranks ---------------------------------------------- */

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
  char pa[512], pb[512];
  Caffe__NetParameter *a = test_read_model(path_in(pa, sizeof pa, "dp_one/snapshots/dp_iter_8.caffemodel")),
                      *b = test_read_model(path_in(pb, sizeof pb, "dp_two/snapshots/dp_iter_8.caffemodel"));
  double d = test_model_diff(a, b, NULL);
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

/* ---- 5. bad jobs -------------------------------------------------------------------------------- */

#define GOOD_SOLVER "solver { base_lr: 0.01 max_iter: 2 }"

static void expect_bad(const char *what, const char *job, const char *needle1, const char *needle2) {
  char path[512];
  CHECK(wfile(path_in(path, sizeof path, "bad.job"), "%s\n", job));
  char *out = NULL;
  int st = test_distilld(&out, tmp, "train --job bad.job");
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
  char path[512];
  CHECK(wfile(path_in(path, sizeof path, "solver.prototxt"), "base_lr: 0.01 max_iter: 2\n"));
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
  CHECK(!exists_in("bad_out/snapshots/bad_iter_2.caffemodel"));
}

/* ---- 6. the seed's single net ------------------------------------------------------------------- */

/* The seed net with its ImageData layers on our images (8 x 8 crops, batch 8). */
static int write_seed_student(void) {
  Caffe__NetParameter *n = test_read_net(DD_TEST_DATA "/seed/seed_net.prototxt");
  if (!n) return -1;
  char err[1024], path[512];
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
  if (text && !wfile(path_in(path, sizeof path, "seed_student.prototxt"), "%s", text)) rc = -1;
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
      dd_net *net = test_make_net(be, full, CAFFE__PHASE__TEST, 3);
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
  char path[512];
  Caffe__NetParameter *init = test_read_model(path_in(path, sizeof path, "seed_init.caffemodel"));
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
    Caffe__NetParameter *fin = test_read_model(path_in(path, sizeof path, rel));
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

/* The job settings teacher_precision and student_precision: a bf16 job runs, its log says what
 * each net runs in, and the teacher record says in which precision its accuracy was taken (with
 * the FP32 one beside it when the teacher ran bf16 kernels). Where this CPU has no bf16 kernel
 * the job is the FP32 job to the last bit; where it has, its losses stay within 5e-2 of them. */
static void test_bf16_job(void) {
  REQUIRE(teacher_ready);
  char err[4096];
  const char *job = "name: 'p%s' " TEACHER_SPEC " student { net: 'student.prototxt' }"
                    " solver { base_lr: 0.05 momentum: 0.9 lr_policy: 'fixed' max_iter: 6 display: 1 test_iter: 2"
                    " test_interval: 6 random_seed: 5 }"
                    " distill { temperature: 3 alpha: 0.6 %s"
                    "   hint { teacher_blob: 'g1_b1_sum' student_blob: 's_relu1' } } output_dir: 'prec_%s'";
  char text[2048];
  snprintf(text, sizeof text, job, "fp32", "", "fp32");
  int r = job_run(text, NULL, err, sizeof err);
  REQUIRE_OK(r, err);
  CHECK_CONTAINS(cap.log, "student: FP32; plan:");
  double loss32[MAX_PROG], hint32[MAX_PROG];
  int n32 = cap.n_prog;
  memcpy(loss32, cap.loss, sizeof loss32);
  for (int k = 0; k < n32 && k < MAX_PROG; k++) hint32[k] = cap.hint[k][0];
  snprintf(text, sizeof text, job, "bf16", "teacher_precision: BF16 student_precision: BF16", "bf16");
  r = job_run(text, NULL, err, sizeof err);
  REQUIRE_OK(r, err);
  int have = strstr(cap.log, "student: bf16 (") != NULL;
  CHECK(have || strstr(cap.log, "student: bf16 asked, but no convolution has a bf16 kernel here"));
  CHECK(cap.n_prog == n32 && n32 == 6);
  /* the teacher keeps bf16 activations between its layers; the hint's teacher blob still comes
   * back in FP32 (a blob left in bf16 would give a hint loss far off FP32's) */
  if (have) CHECK_CONTAINS(cap.log, "on blocked bf16 activations");
  double worst = 0, worst_hint = 0;
  for (int k = 0; k < cap.n_prog && k < n32; k++) {
    worst = fmax(worst, fabs(cap.loss[k] - loss32[k]) / fmax(1e-3, fabs(loss32[k])));
    worst_hint = fmax(worst_hint, fabs(cap.hint[k][0] - hint32[k]) / fmax(1e-3, fabs(hint32[k])));
    CHECK(hint32[k] > 0);
  }
  if (have) CHECKF(worst <= 5e-2 && worst_hint <= 5e-2, "bf16 losses differ from FP32 by %.2e, hint losses by %.2e",
                   worst, worst_hint);
  else CHECKF(worst == 0, "no bf16 kernel, yet the losses differ from FP32 by %.2e", worst);
  metrics m;
  metrics_read(&m, "prec_bf16");
  int seen = 0;
  for (int i = 0; i < m.n; i++) {
    char v[64];
    if (!strstr(m.line[i], "\"type\":\"teacher\"")) continue;
    seen++;
    CHECK(test_json_get(m.line[i], "precision", v, sizeof v));
    int teacher_bf16 = !strcmp(v, "bf16");
    CHECK(teacher_bf16 == (test_json_get(m.line[i], "accuracy_fp32", v, sizeof v) != 0));
  }
  CHECK(seen == 1);
  free(m.text);
  printf("     %s: losses %s FP32's (worst %.1e, hint losses %.1e)\n", have ? "bf16 kernels" : "no bf16 kernel on this CPU",
         have ? "within 5e-2 of" : "equal to", worst, worst_hint);
}

int main(void) {
  if (test_scratch_dir(tmp, sizeof tmp, "distill")) return 1;
  if (dd_cpu_backend_create(&be, 2)) {
    fprintf(stderr, "no CPU backend\n");
    return 1;
  }
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
  RUN(test_bf16_job);
  dd_cpu_backend_destroy(be);
  test_scratch_remove(tmp);
  return test_summary();
}
