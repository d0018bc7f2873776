/* Distillation fed from Data layers (LMDB), against the same job fed from ImageData, on the CPU
 * over the 64 PNGs of tests/test_images.h turned into LMDBs by `distilld convert-imageset`:
 *
 * 1. The same data: with no random transform (8 x 8 images, crop 8, no mirror, no shuffle) the
 *    two sources give the same batches, so a student trained alone from each ends with the same
 *    losses at every iteration and the same test accuracy, bit for bit.
 * 2. The same batch to teacher and student: a teacher equal to the frozen student (an
 *    InnerProduct with the same weights) gives a KD loss of exactly 0 at every iteration, under
 *    random crop and mirror, while a different teacher does not (the check can fail).
 * 3. Two data-parallel ranks reading one LMDB end where one rank does.
 * 4. data_param.shuffle: each TRAIN epoch a permutation of the records, new each epoch, the same
 *    for the same seed.
 * 5. A job whose Data layer names a missing database fails naming the layer and the path. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "devices/devices.h"
#include "format/textformat.h"
#include "train/distill.h"
#include "test.h"
#include "test_distill.h"
#include "test_files.h"
#include "test_images.h"
#include "test_models.h"

static char tmp[128];
static dd_backend *be;
static int ready;

#define MAX_PROG 64
static struct {
  int n;
  double loss[MAX_PROG], ce[MAX_PROG], kd[MAX_PROG];
} cap;

static void cap_log(void *ctx, int level, const char *msg) {
  (void)ctx, (void)level, (void)msg;
}

static void cap_progress(void *ctx, const dd_distill_progress *p) {
  (void)ctx;
  int k = cap.n++;
  if (k >= MAX_PROG) return;
  cap.loss[k] = p->loss;
  cap.ce[k] = cap.kd[k] = NAN;
  for (int i = 0; i < p->n_terms; i++) {
    if (!strcmp(p->term_names[i], "ce_loss")) cap.ce[k] = p->terms[i];
    if (!strcmp(p->term_names[i], "kd_loss")) cap.kd[k] = p->terms[i];
  }
}

/* Runs job `text` (base folder tmp); *acc gets the student's last test accuracy (may be NULL). */
static int job_run(const char *text, double *acc, char *err, size_t errlen) {
  memset(&cap, 0, sizeof cap);
  ProtobufCMessage *m = NULL;
  int r = dd_text_parse(&m, &distilld__distill_job__descriptor, text, strlen(text), "job.prototxt", err, errlen);
  if (r) return r;
  dd_distill_hooks hooks = {.log = cap_log, .progress = cap_progress};
  dd_distill *d = NULL;
  r = dd_distill_create(&d, (Distilld__DistillJob *)m, tmp, be, &hooks, err, errlen);
  if (!r) r = dd_distill_run(d, err, errlen);
  if (!r && acc) *acc = dd_distill_student_accuracy(d);
  dd_distill_destroy(d);
  protobuf_c_message_free_unpacked(m, NULL);
  return r;
}

static void test_setup(void) {
  REQUIRE(test_make_images(tmp) == 0);
  char *out = NULL;
  CHECK(test_distilld(&out, tmp, "convert-imageset img/ train.txt train_lmdb") == 0);
  free(out);
  CHECK(test_distilld(&out, tmp, "convert-imageset img/ test.txt test_lmdb") == 0);
  free(out);
  char p[512];
  snprintf(p, sizeof p, "%s/train_lmdb/data.mdb", tmp);
  ready = access(p, R_OK) == 0;
  CHECK(ready);
}

/* A student: two convolutions, global pooling, 4 classes; `data` is its two data layers. */
static void write_student(const char *file, const char *data) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", tmp, file);
  CHECK(wfile(p,
              "name: 'student'\n%s"
              "layer { name: 'c1' type: 'Convolution' bottom: 'data' top: 'c1' convolution_param { num_output: 8 "
              "kernel_size: 3 pad: 1 weight_filler { type: 'msra' } } }\n"
              "layer { name: 'r1' type: 'ReLU' bottom: 'c1' top: 'c1' }\n"
              "layer { name: 'pool' type: 'Pooling' bottom: 'c1' top: 'pool' pooling_param { pool: AVE global_pooling: true } }\n"
              "layer { name: 'fc' type: 'InnerProduct' bottom: 'pool' top: 'fc' inner_product_param { num_output: 4 "
              "weight_filler { type: 'msra' } } }\n"
              "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n"
              "layer { name: 'accuracy' type: 'Accuracy' bottom: 'fc' bottom: 'label' top: 'accuracy' include { phase: TEST } }\n",
              data));
}

#define IMG_LAYER(phase, list)                                                                                  \
  "layer { name: 'data' type: 'ImageData' top: 'data' top: 'label' include { phase: " phase " }\n"            \
  "  transform_param { scale: 0.00390625 crop_size: 8 } image_data_param { source: '" list "' root_folder: 'img/' batch_size: 8 } }\n"
#define DB_LAYER(phase, db, extra)                                                                              \
  "layer { name: 'data' type: 'Data' top: 'data' top: 'label' include { phase: " phase " }\n"                 \
  "  transform_param { scale: 0.00390625 crop_size: 8 " extra "} data_param { source: '" db "' backend: LMDB batch_size: 8 } }\n"

#define ALONE_JOB(net, out)                                                                                     \
  "name: 'alone' student { net: '" net "' } solver { base_lr: 0.05 momentum: 0.9 lr_policy: 'fixed' max_iter: 12" \
  " display: 1 test_iter: 2 test_interval: 12 random_seed: 5 } output_dir: '" out "'"

static void test_same_data_as_images(void) {
  REQUIRE(ready);
  write_student("s_img.prototxt", IMG_LAYER("TRAIN", "train.txt") IMG_LAYER("TEST", "test.txt"));
  write_student("s_db.prototxt", DB_LAYER("TRAIN", "train_lmdb", "") DB_LAYER("TEST", "test_lmdb", ""));
  char err[4096];
  double acc_img = -1, acc_db = -2, loss_img[MAX_PROG];
  int r = job_run(ALONE_JOB("s_img.prototxt", "img_out"), &acc_img, err, sizeof err);
  REQUIRE(r == 0);
  int n_img = cap.n;
  memcpy(loss_img, cap.loss, sizeof loss_img);
  r = job_run(ALONE_JOB("s_db.prototxt", "db_out"), &acc_db, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  CHECKF(cap.n == n_img && n_img == 12, "%d and %d progress reports", n_img, cap.n);
  for (int k = 0; k < cap.n && k < n_img; k++)
    CHECKF(cap.loss[k] == loss_img[k], "iteration %d: loss %.9g from LMDB, %.9g from images", k + 1, cap.loss[k], loss_img[k]);
  printf("     student alone, 12 iterations: test accuracy %.4f from images, %.4f from LMDB\n", acc_img, acc_db);
  CHECK(acc_img == acc_db);
}

#define IP_NET(classes)                                                                                         \
  "name: 'ipt'\nlayer { name: 'input' type: 'Input' top: 'data' input_param { shape { dim: 8 dim: 3 dim: 8 dim: 8 } } }\n" \
  "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' inner_product_param { num_output: " #classes " } }\n"

static void test_same_batch_to_teacher(void) {
  REQUIRE(ready);
  char p[512];
  snprintf(p, sizeof p, "%s/ipt.prototxt", tmp);
  CHECK(wfile(p, "%s", IP_NET(4)));
  snprintf(p, sizeof p, "%s/ipt.caffemodel", tmp);
  REQUIRE(test_write_weights(be, IP_NET(4), p, 3, 0.05f) == 0);
  snprintf(p, sizeof p, "%s/ipo.caffemodel", tmp);
  REQUIRE(test_write_weights(be, IP_NET(4), p, 4, 0.05f) == 0);
  /* random crop (10 x 10 padded to crop 8) and mirror in TRAIN */
  snprintf(p, sizeof p, "%s/ips.prototxt", tmp);
  CHECK(wfile(p, "name: 'ips'\n"
                 "layer { name: 'data' type: 'Data' top: 'data' top: 'label' include { phase: TRAIN }\n"
                 "  transform_param { scale: 0.00390625 crop_size: 8 mirror: true pad: 1 }"
                 "  data_param { source: 'train_lmdb' backend: LMDB batch_size: 8 } }\n"
                 "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' param { lr_mult: 0 } param { lr_mult: 0 } "
                 "inner_product_param { num_output: 4 } }\n"
                 "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n"));
  for (int control = 0; control < 2; control++) {
    char job[1024], err[4096];
    snprintf(job, sizeof job,
             "name: 'same' teacher { net: 'ipt.prototxt' weights: '%s' } student { net: 'ips.prototxt' weights: 'ipt.caffemodel' }"
             " solver { base_lr: 0 lr_policy: 'fixed' max_iter: 8 display: 1 random_seed: 21 }"
             " distill { temperature: 2 alpha: 0.5 } output_dir: 'same%d_out'",
             control ? "ipo.caffemodel" : "ipt.caffemodel", control);
    int r = job_run(job, NULL, err, sizeof err);
    CHECKF(r == 0, "%s", err);
    int zero = 0;
    for (int k = 0; k < cap.n && k < MAX_PROG; k++) zero += cap.kd[k] == 0.0;
    if (!control)
      CHECKF(zero == 8 && cap.n == 8, "KD loss 0 in %d of %d iterations", zero, cap.n);
    else
      CHECKF(zero == 0, "another teacher gave a zero KD loss in %d iterations", zero);
  }
}

#define DP_JOB(out, devices)                                                                                    \
  "name: 'dp' student { net: 's_db.prototxt' } solver { base_lr: 0.05 momentum: 0.9 lr_policy: 'fixed' max_iter: 8"  \
  " display: 1 test_iter: 2 test_interval: 8 snapshot: 8 random_seed: 5 } output_dir: '" out "' " devices

/* One rank with batch 8 against two with 4 each over the same LMDB: the same student at the end. */
static void test_data_parallel(void) {
  REQUIRE(ready);
  char err[4096];
  double acc[2] = {-1, -2};
  for (int k = 0; k < 2; k++) {
    const char *text = k ? DP_JOB("dp_two", "device: 'cpu' device: 'cpu'") : DP_JOB("dp_one", "");
    ProtobufCMessage *m = NULL;
    REQUIRE(dd_text_parse(&m, &distilld__distill_job__descriptor, text, strlen(text), "job", err, sizeof err) == 0);
    int r = dd_distill_run_ranks((Distilld__DistillJob *)m, tmp, dd_devices_builtin(), k + 1, 1, NULL, 0, NULL, &acc[k], NULL,
                                 NULL, NULL, err, sizeof err);
    CHECKF(r == 0, "%d rank(s): %s", k + 1, err);
    protobuf_c_message_free_unpacked(m, NULL);
  }
  char pa[512], pb[512];
  snprintf(pa, sizeof pa, "%s/dp_one/snapshots/dp_iter_8.caffemodel", tmp);
  snprintf(pb, sizeof pb, "%s/dp_two/snapshots/dp_iter_8.caffemodel", tmp);
  Caffe__NetParameter *a = test_read_model(pa), *b = test_read_model(pb);
  REQUIRE(a && b);
  double d = test_model_diff(a, b, NULL);
  printf("     LMDB, 1 rank x 8 vs 2 ranks x 4: student accuracy %.4f / %.4f, weights %.3g apart\n", acc[0], acc[1], d);
  CHECKF(d < 1e-5, "2 ranks end %.3g away from 1 rank", d);
  CHECK(fabs(acc[0] - acc[1]) < 1e-6);
  caffe__net_parameter__free_unpacked(a, NULL);
  caffe__net_parameter__free_unpacked(b, NULL);
}

/* The hashes of the 48 samples a Data net reads in one epoch of train_lmdb (6 batches of 8). */
#define EPOCH 48
static void epoch_hashes(dd_net *n, uint64_t *h) {
  for (int b = 0; b < EPOCH / 8; b++) {
    REQUIRE(dd_net_forward(n, NULL) == 0);
    dd_tensor *t = dd_net_blob(n, "data"), *l = dd_net_blob(n, "label");
    int64_t per = t->count / 8;
    for (int j = 0; j < 8; j++) {
      uint64_t x = 1469598103934665603ull ^ (uint64_t)l->data[j];
      const unsigned char *p = (const unsigned char *)(t->data + j * per);
      for (size_t k = 0; k < (size_t)per * sizeof(float); k++) x = (x ^ p[k]) * 1099511628211ull;
      h[b * 8 + j] = x;
    }
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* data_param.shuffle (distilld's): each TRAIN epoch is a permutation of the records, a different
 * one per epoch, the same for the same seed; TEST reads in key order. */
static void test_shuffle(void) {
  REQUIRE(ready);
  char net[1024];
  uint64_t key_order[EPOCH], e1[EPOCH], e2[EPOCH], again[EPOCH];
  for (int k = 0; k < 3; k++) {
    snprintf(net, sizeof net,
             "layer { name: 'data' type: 'Data' top: 'data' top: 'label' transform_param { scale: 0.00390625 }"
             " data_param { source: '%s/train_lmdb' backend: LMDB batch_size: 8 %s } }\n",
             tmp, k ? "shuffle: true" : "");
    dd_net *n = test_make_net(be, net, k ? CAFFE__PHASE__TRAIN : CAFFE__PHASE__TEST, 9);
    REQUIRE(n);
    if (k == 0) epoch_hashes(n, key_order);
    if (k == 1) {
      epoch_hashes(n, e1);
      epoch_hashes(n, e2);
    }
    if (k == 2) epoch_hashes(n, again);
    dd_net_destroy(n);
  }
  CHECK(memcmp(e1, again, sizeof e1) == 0); /* deterministic */
  CHECK(memcmp(e1, key_order, sizeof e1) != 0 && memcmp(e1, e2, sizeof e1) != 0);
  qsort(key_order, EPOCH, 8, cmp_u64);
  qsort(e1, EPOCH, 8, cmp_u64);
  qsort(e2, EPOCH, 8, cmp_u64);
  CHECK(memcmp(e1, key_order, sizeof e1) == 0 && memcmp(e2, key_order, sizeof e2) == 0); /* each a permutation */
}

static void test_missing_db(void) {
  REQUIRE(ready);
  write_student("s_gone.prototxt", DB_LAYER("TRAIN", "no_such_lmdb", "") DB_LAYER("TEST", "test_lmdb", ""));
  char err[4096];
  int r = job_run(ALONE_JOB("s_gone.prototxt", "gone_out"), NULL, err, sizeof err);
  CHECK(r != 0);
  CHECK_CONTAINS(err, "no_such_lmdb");
  CHECK_CONTAINS(err, "data");
}

int main(void) {
  if (test_scratch_dir(tmp, sizeof tmp, "distill-lmdb")) return 1;
  if (dd_cpu_backend_create(&be, 2)) return 1;
  RUN(test_setup);
  RUN(test_same_data_as_images);
  RUN(test_same_batch_to_teacher);
  RUN(test_data_parallel);
  RUN(test_shuffle);
  RUN(test_missing_db);
  dd_cpu_backend_destroy(be);
  test_scratch_remove(tmp);
  return test_summary();
}
