/* The ImageData pipeline: the same batches for 1 and 4 decode threads; shuffle is a permutation
 * per epoch; TEST reads in order; crop and mirror reproducible from the seed; BGR order and
 * Caffe's (pixel - mean) * scale; bad input (list file, lines, images) handled as documented;
 * clean shutdown mid-epoch; the seed net running forward over generated JPEGs. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format/caffe_io.h"
#include "data/data.h"
#include "base/dd_error.h"
#include "data/imgdec.h"
#include "net/net.h"
#include "base/rng.h"
#include "test.h"
#include "test_files.h"
#include "format/textformat.h"
#include "data/transform.h"

static char tmp[128];

/* A w x h image (c channels) whose every pixel is `v` (channel k: v + k). */
static void write_image(const char *path, int w, int h, int c, int v, int jpeg) {
  dd_image img = {0};
  img.w = w;
  img.h = h;
  img.c = c;
  img.px = malloc((size_t)w * h * c);
  img.cap = (size_t)w * h * c;
  for (int i = 0; i < w * h; i++)
    for (int k = 0; k < c; k++) img.px[i * c + k] = (uint8_t)(v + k);
  uint8_t *buf = NULL;
  size_t len = 0;
  char err[256];
  int r = jpeg ? dd_image_encode_jpeg(&buf, &len, &img, 95, err, sizeof err) : dd_image_encode_png(&buf, &len, &img, err, sizeof err);
  if (r == 0) test_write_bytes(path, buf, len);
  free(buf);
  free(img.px);
}

/* N gray 8x8 images, pixel value = 3 * index + 1, labels index % 5; one path has a space. */
static int make_set(const char *dir, int n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", tmp, dir);
  mkdir(path, 0755);
  snprintf(path, sizeof path, "%s/%s/list.txt", tmp, dir);
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  for (int i = 0; i < n; i++) {
    char img[512];
    snprintf(img, sizeof img, "%s/%s/im %d.png", tmp, dir, i);
    write_image(img, 8, 8, 1, 3 * i + 1, 0);
    fprintf(f, "im %d.png %d\n", i, i % 5);
  }
  fclose(f);
  return 0;
}

static Caffe__LayerParameter *layer_param(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static Caffe__LayerParameter *layer_param(const char *fmt, ...) {
  char text[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  ProtobufCMessage *m = NULL;
  char err[512];
  if (dd_text_parse(&m, &caffe__layer_parameter__descriptor, text, strlen(text), "<test>", err, sizeof err))
    fprintf(stderr, "parse: %s\n", err);
  return (Caffe__LayerParameter *)m;
}

static char logbuf[8192];
static int n_logs;
static void capture(void *ctx, const char *msg) {
  (void)ctx;
  n_logs++;
  size_t used = strlen(logbuf);
  snprintf(logbuf + used, sizeof logbuf - used, "%s\n", msg);
}

/* Reads `batches` batches into a malloc'd array of batch * (C*H*W + 1) floats (data then label
 * per sample). */
static float *collect(const Caffe__LayerParameter *lp, dd_data_config cfg, int batches) {
  dd_data *d = NULL;
  char err[1024];
  if (dd_data_open(&d, lp, &cfg, err, sizeof err)) {
    fprintf(stderr, "open: %s\n", err);
    return NULL;
  }
  size_t per = (size_t)cfg.channels * cfg.height * cfg.width;
  float *all = malloc((size_t)batches * cfg.batch * (per + 1) * sizeof *all);
  for (int b = 0; b < batches && all; b++) {
    const float *data, *lab;
    double wait;
    if (dd_data_next(d, &data, &lab, &wait, err, sizeof err)) {
      fprintf(stderr, "next: %s\n", err);
      free(all);
      all = NULL;
      break;
    }
    for (int j = 0; j < cfg.batch; j++) {
      float *o = all + ((size_t)b * cfg.batch + j) * (per + 1);
      memcpy(o, data + (size_t)j * per, per * sizeof *o);
      o[per] = lab[j];
    }
  }
  dd_data_close(d);
  return all;
}

static void test_threads_same_batches(void) {
  REQUIRE(make_set("a", 37) == 0);
  Caffe__LayerParameter *lp = layer_param(
      "name: 'data' type: 'ImageData' top: 'data' top: 'label'"
      " transform_param { crop_size: 8 pad: 2 mirror: true scale: 0.5 mean_value: 10 brightness: true contrast: true }"
      " image_data_param { source: '%s/a/list.txt' root_folder: '%s/a/' batch_size: 8 shuffle: true }",
      tmp, tmp);
  REQUIRE(lp);
  dd_data_config cfg = {.batch = 8, .channels = 1, .height = 8, .width = 8, .train = 1, .seed = 42, .threads = 1, .prefetch = 3,
                        .max_error_fraction = 0.01f};
  float *one = collect(lp, cfg, 12);
  cfg.threads = 4;
  float *four = collect(lp, cfg, 12);
  cfg.threads = 2;
  cfg.prefetch = 1;
  float *two = collect(lp, cfg, 12);
  REQUIRE(one && four && two);
  size_t n = (size_t)12 * 8 * 65;
  CHECK(memcmp(one, four, n * sizeof(float)) == 0);
  CHECK(memcmp(one, two, n * sizeof(float)) == 0);
  cfg.seed = 43;
  float *other = collect(lp, cfg, 12);
  REQUIRE(other);
  CHECK(memcmp(one, other, n * sizeof(float)) != 0); /* the seed matters */
  free(one);
  free(four);
  free(two);
  free(other);
  caffe__layer_parameter__free_unpacked(lp, NULL);
}

/* Which image a sample came from: its centre pixel (no augmentation) is 3 * index + 1. */
static int sample_index(const float *s) { return (int)lroundf((s[4 * 8 + 4] - 1.0f) / 3.0f); }

static void test_shuffle_is_a_permutation(void) {
  Caffe__LayerParameter *lp = layer_param(
      "name: 'data' type: 'ImageData' top: 'data' top: 'label' transform_param { crop_size: 8 }"
      " image_data_param { source: '%s/a/list.txt' root_folder: '%s/a/' batch_size: 37 shuffle: true }",
      tmp, tmp);
  REQUIRE(lp);
  dd_data_config cfg = {.batch = 37, .channels = 1, .height = 8, .width = 8, .train = 1, .seed = 5, .threads = 2, .prefetch = 2,
                        .max_error_fraction = 0.01f};
  float *all = collect(lp, cfg, 3);
  REQUIRE(all);
  int orders[3][37];
  for (int e = 0; e < 3; e++) {
    int seen[37] = {0};
    for (int j = 0; j < 37; j++) {
      const float *s = all + ((size_t)e * 37 + j) * 65;
      int idx = sample_index(s);
      REQUIRE(idx >= 0 && idx < 37);
      seen[idx]++;
      orders[e][j] = idx;
      CHECK((int)s[64] == idx % 5); /* the label travels with its image */
    }
    for (int i = 0; i < 37; i++) CHECKF(seen[i] == 1, "epoch %d: image %d seen %d times", e, i, seen[i]);
  }
  CHECK(memcmp(orders[0], orders[1], sizeof orders[0]) != 0); /* reshuffled every epoch */
  int in_order = 1;
  for (int j = 0; j < 37; j++) in_order &= orders[0][j] == j;
  CHECK(!in_order);
  free(all);
  caffe__layer_parameter__free_unpacked(lp, NULL);
}

static void test_test_phase_in_order(void) {
  Caffe__LayerParameter *lp = layer_param(
      "name: 'data' type: 'ImageData' top: 'data' top: 'label' transform_param { crop_size: 8 mirror: true }"
      " image_data_param { source: '%s/a/list.txt' root_folder: '%s/a/' batch_size: 10 shuffle: true }",
      tmp, tmp);
  REQUIRE(lp);
  dd_data_config cfg = {.batch = 10, .channels = 1, .height = 8, .width = 8, .train = 0, .seed = 5, .threads = 3, .prefetch = 2,
                        .max_error_fraction = 0.01f};
  float *all = collect(lp, cfg, 8); /* 80 samples: the list wraps twice */
  REQUIRE(all);
  for (int k = 0; k < 80; k++) CHECKF(sample_index(all + (size_t)k * 65) == k % 37, "sample %d", k);
  free(all);
  caffe__layer_parameter__free_unpacked(lp, NULL);
}

/* The crop offset and mirror of sample i of epoch e come from rng(seed, e, i): recompute them. */
static void test_crop_mirror_from_seed(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/grad", tmp);
  mkdir(path, 0755);
  /* one 12x12 image with pixel (y, x) = 10 y + x */
  dd_image img = {.w = 12, .h = 12, .c = 1};
  img.px = malloc(144);
  img.cap = 144;
  for (int y = 0; y < 12; y++)
    for (int x = 0; x < 12; x++) img.px[y * 12 + x] = (uint8_t)(10 * y + x);
  uint8_t *png;
  size_t len;
  char err[256];
  REQUIRE(dd_image_encode_png(&png, &len, &img, err, sizeof err) == 0);
  snprintf(path, sizeof path, "%s/grad/g.png", tmp);
  test_write_bytes(path, png, len);
  free(png);
  snprintf(path, sizeof path, "%s/grad/list.txt", tmp);
  FILE *f = fopen(path, "w");
  REQUIRE(f);
  fprintf(f, "g.png 0\n");
  fclose(f);
  Caffe__LayerParameter *lp = layer_param(
      "name: 'data' type: 'ImageData' top: 'data' transform_param { crop_size: 5 mirror: true }"
      " image_data_param { source: '%s/grad/list.txt' root_folder: '%s/grad/' batch_size: 4 }",
      tmp, tmp);
  REQUIRE(lp);
  dd_data_config cfg = {.batch = 4, .channels = 1, .height = 5, .width = 5, .train = 1, .seed = 77, .threads = 2, .prefetch = 2,
                        .max_error_fraction = 0.01f};
  float *all = collect(lp, cfg, 5);
  REQUIRE(all);
  int mirrored = 0;
  for (int k = 0; k < 20; k++) {
    /* one file: epoch k, index 0 */
    dd_rng r;
    dd_rng_seed(&r, dd_hash64(dd_hash64(77, (uint64_t)k), 0));
    int h_off = (int)(dd_rng_next(&r) % 8), w_off = (int)(dd_rng_next(&r) % 8), mir = (int)(dd_rng_next(&r) & 1);
    mirrored += mir;
    const float *s = all + (size_t)k * 26;
    for (int y = 0; y < 5; y++)
      for (int x = 0; x < 5; x++) {
        int sx = w_off + (mir ? 4 - x : x);
        CHECKF(s[y * 5 + x] == (float)(10 * (h_off + y) + sx), "sample %d (%d,%d): %g", k, y, x, s[y * 5 + x]);
      }
  }
  CHECK(mirrored > 0 && mirrored < 20);
  free(all);
  free(img.px);
  caffe__layer_parameter__free_unpacked(lp, NULL);
}

/* Colour: BGR order, (pixel - mean) * scale with Caffe's channel order for mean_value. */
static void test_bgr_and_mean(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/col", tmp);
  mkdir(path, 0755);
  /* a PNG whose pixels are B=30, G=31, R=32 (our encoder takes BGR) */
  snprintf(path, sizeof path, "%s/col/c.png", tmp);
  write_image(path, 4, 4, 3, 30, 0);
  snprintf(path, sizeof path, "%s/col/list.txt", tmp);
  FILE *f = fopen(path, "w");
  REQUIRE(f);
  fprintf(f, "c.png 3\n");
  fclose(f);
  Caffe__LayerParameter *lp = layer_param(
      "name: 'data' type: 'ImageData' top: 'data' top: 'label' transform_param { scale: 0.5 mean_value: 1 mean_value: 2 mean_value: 3 }"
      " image_data_param { source: '%s/col/list.txt' root_folder: '%s/col/' batch_size: 2 }",
      tmp, tmp);
  REQUIRE(lp);
  dd_data_config cfg = {.batch = 2, .channels = 3, .height = 4, .width = 4, .train = 0, .seed = 1, .threads = 1, .prefetch = 1,
                        .max_error_fraction = 0.01f};
  float *all = collect(lp, cfg, 1);
  REQUIRE(all);
  CHECK(all[0] == (30 - 1) * 0.5f);   /* channel 0 = B */
  CHECK(all[16] == (31 - 2) * 0.5f);  /* channel 1 = G */
  CHECK(all[32] == (32 - 3) * 0.5f);  /* channel 2 = R */
  CHECK(all[48] == 3.0f);
  free(all);
  caffe__layer_parameter__free_unpacked(lp, NULL);
  /* gray out of a colour file: OpenCV's weights, 0.114 B + 0.587 G + 0.299 R = 31.185 -> 31 */
  lp = layer_param("name: 'data' type: 'ImageData' top: 'data' top: 'label'"
                   " image_data_param { source: '%s/col/list.txt' root_folder: '%s/col/' batch_size: 1 is_color: false }",
                   tmp, tmp);
  REQUIRE(lp);
  cfg.channels = 1;
  cfg.batch = 1;
  all = collect(lp, cfg, 1);
  REQUIRE(all);
  CHECK(all[0] == 31.0f);
  free(all);
  caffe__layer_parameter__free_unpacked(lp, NULL);
}

/* mean_file: a .binaryproto mean image subtracted at the crop's position (Caffe), then scale. */
static void test_mean_file(void) {
  char path[512], err[512];
  /* the 12x12 gradient image of test_crop_mirror_from_seed, and a mean image m(y, x) = y + 2x */
  float mean[144];
  for (int y = 0; y < 12; y++)
    for (int x = 0; x < 12; x++) mean[y * 12 + x] = (float)(y + 2 * x);
  int64_t dims[4] = {1, 1, 12, 12};
  Caffe__BlobShape shape;
  caffe__blob_shape__init(&shape);
  shape.n_dim = 4;
  shape.dim = dims;
  Caffe__BlobProto b;
  caffe__blob_proto__init(&b);
  b.shape = &shape;
  b.n_data = 144;
  b.data = mean;
  snprintf(path, sizeof path, "%s/grad/mean.binaryproto", tmp);
  REQUIRE(dd_binaryproto_write(&b, path, err, sizeof err) == 0);
  Caffe__LayerParameter *lp = layer_param(
      "name: 'data' type: 'ImageData' top: 'data' transform_param { crop_size: 6 scale: 0.5 mean_file: '%s' }"
      " image_data_param { source: '%s/grad/list.txt' root_folder: '%s/grad/' batch_size: 1 }",
      path, tmp, tmp);
  REQUIRE(lp);
  dd_data_config cfg = {.batch = 1, .channels = 1, .height = 6, .width = 6, .train = 0, .seed = 1, .threads = 1, .prefetch = 1,
                        .max_error_fraction = 0.01f};
  float *all = collect(lp, cfg, 1);
  REQUIRE(all);
  /* TEST: centre crop, offset (12 - 6) / 2 = 3 */
  for (int y = 0; y < 6; y++)
    for (int x = 0; x < 6; x++) {
      float px = (float)(10 * (3 + y) + 3 + x), m = (float)((3 + y) + 2 * (3 + x));
      CHECKF(all[y * 6 + x] == (px - m) * 0.5f, "(%d,%d): %g", y, x, all[y * 6 + x]);
    }
  free(all);
  caffe__layer_parameter__free_unpacked(lp, NULL);
  /* a mean image with the wrong number of channels is refused, naming the file */
  lp = layer_param("name: 'data' type: 'ImageData' top: 'data' transform_param { crop_size: 6 mean_file: '%s' }"
                   " image_data_param { source: '%s/grad/list.txt' root_folder: '%s/grad/' batch_size: 1 }",
                   path, tmp, tmp);
  REQUIRE(lp);
  cfg.channels = 3;
  dd_data *d = NULL;
  CHECK(dd_data_open(&d, lp, &cfg, err, sizeof err) == DD_ESHAPE);
  CHECK_CONTAINS(err, "mean.binaryproto");
  caffe__layer_parameter__free_unpacked(lp, NULL);
}

static void test_bad_list_files(void) {
  char path[512], err[1024];
  dd_data *d = NULL;
  dd_data_config cfg = {.batch = 2, .channels = 1, .height = 8, .width = 8, .train = 1, .seed = 1, .threads = 1, .prefetch = 1,
                        .max_error_fraction = 0.01f};
  Caffe__LayerParameter *lp = layer_param("name: 'd' type: 'ImageData' image_data_param { source: '/nonexistent/list.txt' batch_size: 2 }");
  REQUIRE(lp);
  CHECK(dd_data_open(&d, lp, &cfg, err, sizeof err) == DD_EIO);
  CHECK_CONTAINS(err, "/nonexistent/list.txt");
  caffe__layer_parameter__free_unpacked(lp, NULL);
  const char *bad[] = {"a.png 1\nnolabel\n", "a.png 1\nb.png -3\n", "a.png 1\nb.png 2x\n", "\n\n"};
  const char *want[] = {":2: expected \"PATH LABEL\"", ":2: the label \"-3\"", ":2: the label \"2x\"", "the list is empty"};
  for (int i = 0; i < 4; i++) {
    snprintf(path, sizeof path, "%s/bad%d.txt", tmp, i);
    test_write_bytes(path, bad[i], strlen(bad[i]));
    lp = layer_param("name: 'd' type: 'ImageData' image_data_param { source: '%s' batch_size: 2 }", path);
    REQUIRE(lp);
    CHECK(dd_data_open(&d, lp, &cfg, err, sizeof err) == DD_EPARSE);
    CHECK_CONTAINS(err, want[i]);
    CHECK_CONTAINS(err, path);
    caffe__layer_parameter__free_unpacked(lp, NULL);
  }
}

static void test_bad_images(void) {
  char path[512], err[1024];
  snprintf(path, sizeof path, "%s/b", tmp);
  mkdir(path, 0755);
  /* 20 good images, one missing, one truncated, one random bytes, one too small for the crop */
  snprintf(path, sizeof path, "%s/b/list.txt", tmp);
  FILE *f = fopen(path, "w");
  REQUIRE(f);
  for (int i = 0; i < 20; i++) {
    char img[512];
    snprintf(img, sizeof img, "%s/b/g%d.png", tmp, i);
    write_image(img, 8, 8, 1, 3 * i + 1, 0);
    fprintf(f, "g%d.png 1\n", i);
  }
  char img[512];
  snprintf(img, sizeof img, "%s/b/trunc.jpg", tmp);
  write_image(img, 8, 8, 3, 5, 1);
  truncate(img, 60);
  snprintf(img, sizeof img, "%s/b/noise.png", tmp);
  test_write_bytes(img, "\x89PNG\r\n\x1a\nthis is not really a png at all", 40);
  snprintf(img, sizeof img, "%s/b/small.png", tmp);
  write_image(img, 4, 4, 1, 9, 0);
  fprintf(f, "missing.png 1\ntrunc.jpg 1\nnoise.png 1\nsmall.png 1\n");
  fclose(f);
  Caffe__LayerParameter *lp = layer_param(
      "name: 'd' type: 'ImageData' transform_param { crop_size: 8 }"
      " image_data_param { source: '%s/b/list.txt' root_folder: '%s/b/' batch_size: 6 shuffle: true }",
      tmp, tmp);
  REQUIRE(lp);
  dd_data_config cfg = {.batch = 6, .channels = 1, .height = 8, .width = 8, .train = 1, .seed = 3, .threads = 2, .prefetch = 2,
                        .max_error_fraction = 0.5f, .log = capture};
  logbuf[0] = '\0';
  n_logs = 0;
  dd_data *d = NULL;
  REQUIRE(dd_data_open(&d, lp, &cfg, err, sizeof err) == 0);
  for (int b = 0; b < 12; b++) { /* three epochs */
    const float *data, *lab;
    double wait;
    REQUIRE(dd_data_next(d, &data, &lab, &wait, err, sizeof err) == 0);
    for (int j = 0; j < 6; j++) CHECK(data[(size_t)j * 64 + 36] > 0); /* only good images come out */
  }
  CHECK(dd_data_errors(d) == 4);
  CHECKF(n_logs == 4, "%d warnings:\n%s", n_logs, logbuf); /* once per file, not per epoch */
  CHECK_CONTAINS(logbuf, "missing.png");
  CHECK_CONTAINS(logbuf, "trunc.jpg");
  CHECK_CONTAINS(logbuf, "noise.png");
  CHECK_CONTAINS(logbuf, "small.png");
  CHECK_CONTAINS(logbuf, "smaller than");
  dd_data_close(d);
  /* the same list with the default 1% tolerance: the job fails, naming examples */
  cfg.max_error_fraction = 0.01f;
  REQUIRE(dd_data_open(&d, lp, &cfg, err, sizeof err) == 0);
  int r = 0;
  for (int b = 0; b < 12 && r == 0; b++) {
    const float *data, *lab;
    double wait;
    r = dd_data_next(d, &data, &lab, &wait, err, sizeof err);
  }
  CHECK(r == DD_ECORRUPT);
  CHECK_CONTAINS(err, "max_error_fraction");
  dd_data_close(d);
  caffe__layer_parameter__free_unpacked(lp, NULL);
  /* nothing decodes */
  snprintf(path, sizeof path, "%s/b/allbad.txt", tmp);
  test_write_bytes(path, "missing1.png 0\nnoise.png 0\n", 27);
  lp = layer_param("name: 'd' type: 'ImageData' transform_param { crop_size: 8 }"
                   " image_data_param { source: '%s' root_folder: '%s/b/' batch_size: 2 }",
                   path, tmp);
  REQUIRE(lp);
  cfg.max_error_fraction = 0.9f;
  cfg.batch = 2;
  REQUIRE(dd_data_open(&d, lp, &cfg, err, sizeof err) == 0);
  const float *data, *lab;
  double wait;
  CHECK(dd_data_next(d, &data, &lab, &wait, err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "none of the 2 images");
  dd_data_close(d);
  caffe__layer_parameter__free_unpacked(lp, NULL);
}

/* Runs `batches` batches of 10 over DIR/list.txt; returns the first error (0: none). */
static int run_list(const char *dir, float fraction, int train, uint64_t seed, int batches, int64_t *errors,
                    char *err, size_t errlen) {
  Caffe__LayerParameter *lp = layer_param("name: 'd' type: 'ImageData' image_data_param { source: '%s/%s/list.txt'"
                                          " root_folder: '%s/%s/' batch_size: 10 shuffle: %s }",
                                          tmp, dir, tmp, dir, train ? "true" : "false");
  if (!lp) return -100;
  dd_data_config cfg = {.batch = 10, .channels = 1, .height = 8, .width = 8, .train = train, .seed = seed,
                        .threads = 2, .prefetch = 2, .max_error_fraction = fraction, .log = capture};
  dd_data *d = NULL;
  int r = dd_data_open(&d, lp, &cfg, err, errlen);
  for (int b = 0; b < batches && r == 0; b++) {
    const float *data, *lab;
    double wait;
    r = dd_data_next(d, &data, &lab, &wait, err, errlen);
  }
  if (d) *errors = dd_data_errors(d);
  dd_data_close(d);
  caffe__layer_parameter__free_unpacked(lp, NULL);
  return r;
}

/* max_error_fraction compares counts: 1 bad image in 100 is not "more than 0.01" (the float
 * 0.01f times 100 is 0.99999998, which failed the job), in list order or any shuffle; 2 in 100
 * are; 1 in 257 never is, whatever the shuffle puts first. */
static void test_error_fraction_on_counts(void) {
  char path[512], err[1024];
  REQUIRE(make_set("f", 99) == 0);
  snprintf(path, sizeof path, "%s/f/list.txt", tmp);
  FILE *f = fopen(path, "a");
  REQUIRE(f);
  fprintf(f, "missing.png 1\n");
  fclose(f);
  int64_t errors = 0;
  CHECKF(run_list("f", 0.01f, 0, 1, 20, &errors, err, sizeof err) == 0, "%s", err);
  CHECK(errors == 1);
  for (uint64_t seed = 1; seed <= 4; seed++) {
    int r = run_list("f", 0.01f, 1, seed, 20, &errors, err, sizeof err);
    CHECKF(r == 0, "seed %llu: %s", (unsigned long long)seed, err);
  }
  f = fopen(path, "a");
  REQUIRE(f);
  fprintf(f, "missing2.png 1\n"); /* 2 in 101: judged at 100 tried, 2 > 1 */
  fclose(f);
  CHECK(run_list("f", 0.01f, 0, 1, 20, &errors, err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "max_error_fraction");
  REQUIRE(make_set("g", 256) == 0);
  snprintf(path, sizeof path, "%s/g/list.txt", tmp);
  f = fopen(path, "a");
  REQUIRE(f);
  fprintf(f, "missing.png 1\n");
  fclose(f);
  for (uint64_t seed = 1; seed <= 8; seed++) {
    int r = run_list("g", 0.01f, 1, seed, 30, &errors, err, sizeof err);
    CHECKF(r == 0, "seed %llu: %s", (unsigned long long)seed, err);
  }
}

/* Closing while workers are busy, mid-epoch, leaks nothing (the ASan build checks). */
static void test_close_mid_epoch(void) {
  Caffe__LayerParameter *lp = layer_param(
      "name: 'data' type: 'ImageData' transform_param { crop_size: 8 }"
      " image_data_param { source: '%s/a/list.txt' root_folder: '%s/a/' batch_size: 5 shuffle: true }",
      tmp, tmp);
  REQUIRE(lp);
  for (int k = 0; k < 20; k++) {
    dd_data_config cfg = {.batch = 5, .channels = 1, .height = 8, .width = 8, .train = 1, .seed = (uint64_t)k, .threads = 4,
                          .prefetch = 3, .max_error_fraction = 0.01f};
    dd_data *d = NULL;
    char err[512];
    REQUIRE(dd_data_open(&d, lp, &cfg, err, sizeof err) == 0);
    if (k % 2) {
      const float *data, *lab;
      double wait;
      CHECK(dd_data_next(d, &data, &lab, &wait, err, sizeof err) == 0);
    }
    dd_data_close(d);
  }
  caffe__layer_parameter__free_unpacked(lp, NULL);
}

/* Resize: a 2x2 image to 4x4 with OpenCV's pixel-centre geometry, computed here by hand. */
static void test_resize_values(void) {
  uint8_t px[4] = {0, 100, 200, 40};
  dd_transform t = {.channels = 1, .new_h = 4, .new_w = 4, .out_h = 4, .out_w = 4, .scale = 1.0f};
  float out[16];
  char scratch[4096], err[128];
  dd_rng r;
  dd_rng_seed(&r, 1);
  REQUIRE(dd_transform_apply(&t, out, px, 2, 2, &r, scratch, err, sizeof err) == 0);
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 4; x++) {
      double fy = (y + 0.5) * 0.5 - 0.5, fx = (x + 0.5) * 0.5 - 0.5;
      fy = fy < 0 ? 0 : fy > 1 ? 1 : fy;
      fx = fx < 0 ? 0 : fx > 1 ? 1 : fx;
      double v = (1 - fy) * ((1 - fx) * 0 + fx * 100) + fy * ((1 - fx) * 200 + fx * 40);
      CHECKF(out[y * 4 + x] == (float)lround(v), "(%d,%d): %g vs %g", y, x, out[y * 4 + x], v);
    }
}

/* Jitter stays within its documented ranges and in [0, 255] before mean and scale. */
static void test_jitter_ranges(void) {
  uint8_t px[3 * 16];
  for (int i = 0; i < 48; i++) px[i] = (uint8_t)(100 + i);
  dd_transform t = {.channels = 3, .out_h = 4, .out_w = 4, .scale = 1.0f, .train = 1, .brightness = 1,
                    .brightness_delta = 32};
  float out[48];
  char scratch[4096], err[128];
  for (int k = 0; k < 50; k++) {
    dd_rng r;
    dd_rng_seed(&r, (uint64_t)k);
    REQUIRE(dd_transform_apply(&t, out, px, 4, 4, &r, scratch, err, sizeof err) == 0);
    float d = out[0] - px[0]; /* channel 0 of pixel 0 */
    CHECK(d >= -32 && d <= 32);
    for (int i = 0; i < 48; i++) CHECK(out[i] >= 0 && out[i] <= 255);
    /* the same shift on every pixel and channel */
    CHECK(fabsf((out[17] - px[3 * 1 + 1]) - d) < 1e-4f);
  }
  dd_transform c = {.channels = 3, .out_h = 4, .out_w = 4, .scale = 1.0f, .train = 1, .color = 1, .color_delta = 0.4f};
  dd_rng r;
  dd_rng_seed(&r, 9);
  REQUIRE(dd_transform_apply(&c, out, px, 4, 4, &r, scratch, err, sizeof err) == 0);
  for (int i = 0; i < 16; i++) { /* saturation keeps each pixel's grey */
    float g0 = 0.114f * px[3 * i] + 0.587f * px[3 * i + 1] + 0.299f * px[3 * i + 2];
    float g1 = 0.114f * out[i] + 0.587f * out[16 + i] + 0.299f * out[32 + i];
    CHECK(fabsf(g0 - g1) < 1e-3f);
  }
}

/* The seed net (ImageData with scale, mirror, crop, mean values and colour/contrast/brightness
 * jitter) builds and runs forward over a generated list of JPEGs, in TRAIN and TEST. */
static void test_seed_net_over_jpegs(void) {
  char path[512], err[2048];
  snprintf(path, sizeof path, "%s/seed", tmp);
  mkdir(path, 0755);
  snprintf(path, sizeof path, "%s/seed/list.txt", tmp);
  FILE *f = fopen(path, "w");
  REQUIRE(f);
  for (int i = 0; i < 12; i++) {
    char img[512];
    snprintf(img, sizeof img, "%s/seed/%d.jpg", tmp, i);
    write_image(img, 36, 36, 3, 20 * i, 1);
    fprintf(f, "%s %d\n", img, (i * 7) % 100);
  }
  fclose(f);
  Caffe__NetParameter *n = NULL;
  REQUIRE_OK(dd_net_read_text(&n, DD_TEST_DATA "/seed/seed_net.prototxt", err, sizeof err), err);
  for (size_t i = 0; i < n->n_layer; i++) {
    Caffe__ImageDataParameter *ip = n->layer[i]->image_data_param;
    if (!ip) continue;
    free(ip->source);
    ip->source = strdup(path);
    ip->batch_size = 4;
  }
  dd_backend *be = NULL;
  REQUIRE(dd_cpu_backend_create(&be, 2) == 0);
  for (int ph = 0; ph < 2; ph++) {
    dd_net *net = NULL;
    int r = dd_net_create(&net, n, ph ? CAFFE__PHASE__TEST : CAFFE__PHASE__TRAIN, be, 1, NULL, err, sizeof err);
    CHECKF(r == 0, "%s", err);
    if (r) continue;
    double loss;
    for (int it = 0; it < 5; it++) CHECKF(dd_net_forward(net, &loss) == 0, "%s", net->status_msg);
    dd_tensor *d = dd_net_blob(net, "data");
    REQUIRE(d && d->shape.ndim == 4 && d->shape.dims[1] == 3 && d->shape.dims[2] == 32);
    CHECK(net->data_errors == 0);
    dd_net_destroy(net);
  }
  dd_cpu_backend_destroy(be);
  caffe__net_parameter__free_unpacked(n, NULL);
}

int main(void) {
  if (test_scratch_dir(tmp, sizeof tmp, "data")) return 1;
  RUN(test_threads_same_batches);
  RUN(test_shuffle_is_a_permutation);
  RUN(test_test_phase_in_order);
  RUN(test_crop_mirror_from_seed);
  RUN(test_bgr_and_mean);
  RUN(test_mean_file);
  RUN(test_bad_list_files);
  RUN(test_bad_images);
  RUN(test_error_fraction_on_counts);
  RUN(test_close_mid_epoch);
  RUN(test_resize_values);
  RUN(test_jitter_ranges);
  RUN(test_seed_net_over_jpegs);
  test_scratch_remove(tmp);
  return test_summary();
}
