/* The frozen teacher (core/train/teacher.c) on the CPU:
 *
 * 1. BatchNorm + Scale folding gives the same logits as the unfolded net on a random pre-activation
 *    WRN with non-trivial statistics (stored as Caffe stores them, with a scale factor), and the
 *    unfolded teacher the same bits as the plain TEST net; the checksum covers the folded
 *    parameters and still holds.
 * 2. Caffe's other layouts: in place on a convolution with a bias, grouped, a Scale without a bias,
 *    a Scale-only fold after an Eltwise, and pairs that must stay (a BatchNorm without a Scale, one
 *    whose output is also read elsewhere).
 * 3. `use_global_stats: false` is overridden: no image's logits depend on the others, two forwards
 *    agree bit for bit, and the stored statistics do not move.
 * 4. The TEST phase: Dropout passes through, a TRAIN-only layer is not there.
 *
 * The teacher in a job is tests/test_distill.c; the loss layers, tests/test_distill_losses.c. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>

#include "format/caffe_io.h"
#include "base/backend.h"
#include "base/dd_error.h"
#include "net/net.h"
#include "base/rng.h"
#include "train/teacher.h"
#include "format/textformat.h"
#include "test.h"
#include "test_distill.h"
#include "test_models.h"
#include "test_nets.h"

static char tmp[128];
static dd_backend *be;

/* TMP/REL into `buf`. */
static void path_in(char *buf, size_t len, const char *rel) { snprintf(buf, len, "%s/%s", tmp, rel); }

/* ---- random BatchNorm nets and the teacher's logits --------------------------------------------- */

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
  test_sh("python3 '%s/scripts/gen_wrn.py' --depth 10 --width 2 --mode deploy --channels 3 --size 8 --batch 4 --classes 5 "
          "-o '%s/wrn_deploy.prototxt'",
          DD_SOURCE_DIR, tmp);
  char path[512], err[1024];
  path_in(path, sizeof path, "wrn_deploy.prototxt");
  Caffe__NetParameter *p = test_read_net(path);
  if (!p) return NULL;
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

/* ---- the frozen teacher: folding, stored statistics, the TEST phase ----------------------------- */

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
  Caffe__NetParameter *wm = test_read_model(wpath);
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
  dd_net *n = test_make_net(be, text, CAFFE__PHASE__TEST, 9);
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
  Caffe__NetParameter *p = test_parse_net(text);
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
  Caffe__NetParameter *pf = test_parse_net(text);
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
  char wpath[512], err[1024];
  path_in(wpath, sizeof wpath, "drop_teacher.caffemodel");
  REQUIRE(test_write_weights(be, plain, wpath, 12, 0.5f) == 0);
  const char *w[1] = {wpath};
  Caffe__NetParameter *pp = test_parse_net(plain), *pd = test_parse_net(dropout);
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

int main(void) {
  if (test_scratch_dir(tmp, sizeof tmp, "distill_teacher")) return 1;
  if (dd_cpu_backend_create(&be, 2)) {
    fprintf(stderr, "no CPU backend\n");
    return 1;
  }
  RUN(test_teacher_folding);
  RUN(test_teacher_folding_layouts);
  RUN(test_teacher_stored_statistics);
  RUN(test_teacher_test_phase);
  dd_cpu_backend_destroy(be);
  test_scratch_remove(tmp);
  return test_summary();
}
