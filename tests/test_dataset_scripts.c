/* The dataset preparation scripts end to end: scripts/prepare_fashion_mnist.py on a tiny
 * Fashion-MNIST-format idx set (gzip'ed, non-square images with known pixels) and
 * scripts/prepare_cifar.py on tiny CIFAR-10 and CIFAR-100 binary sets. Checks the list files
 * (counts, labels, paths relative to OUT), labels.txt, that the PNGs decode with dd_image_decode
 * to exactly the source pixels (CIFAR's R, G, B planes come back in B, G, R order), --limit,
 * idempotent reruns, and clear failures naming the bad file. Needs python3 and gzip. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "format/fileio.h"
#include "data/imgdec.h"
#include "test.h"
#include "test_files.h"

static char tmp[128];
static char out_buf[1 << 16];

/* Runs a shell command in tmp, output (stdout + stderr) into out_buf; returns the exit status. */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
  char args[4096], cmd[8192], *out = NULL;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "cd '%s' && %s 2>&1", tmp, args);
  int st = test_capture(&out, cmd);
  snprintf(out_buf, sizeof out_buf, "%s", out ? out : "");
  free(out);
  return st;
}

static int write_bytes(const char *rel, const void *data, size_t n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", tmp, rel);
  return test_write_bytes(path, data, n);
}

static char *read_rel(const char *rel, size_t *len) {
  char path[512], err[256];
  snprintf(path, sizeof path, "%s/%s", tmp, rel);
  char *buf = NULL;
  if (dd_read_file(&buf, len, path, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return NULL;
  }
  return buf;
}

/* Splits a list file into lines "path label"; returns the count (at most max). */
static int read_list(const char *rel, char paths[][64], int *labels, int max) {
  size_t len;
  char *text = read_rel(rel, &len);
  if (!text) return -1;
  int n = 0;
  for (char *line = strtok(text, "\n"); line && n < max; line = strtok(NULL, "\n")) {
    if (sscanf(line, "%63s %d", paths[n], &labels[n]) != 2) {
      n = -1;
      break;
    }
    n++;
  }
  free(text);
  return n;
}

/* Decodes OUT-relative `rel` into img with `channels`; 0 on success. */
static int decode_rel(dd_image *img, const char *rel, int channels) {
  size_t len;
  char *buf = read_rel(rel, &len), err[256];
  if (!buf) return -1;
  int r = dd_image_decode(img, (const uint8_t *)buf, len, channels, rel, err, sizeof err);
  if (r) fprintf(stderr, "%s\n", err);
  free(buf);
  return r;
}

/* ---- Fashion-MNIST --------------------------------------------------------------------------- */

enum { FM_ROWS = 6, FM_COLS = 4, FM_PX = FM_ROWS * FM_COLS };
static const uint8_t fm_train_labels[5] = {3, 0, 9, 3, 7};
static const uint8_t fm_test_labels[3] = {1, 2, 1};

static uint8_t fm_pixel(int split, int i, int p) { return (uint8_t)(split * 101 + i * 31 + p * 7); }

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Writes DIR/{PREFIX}-images-idx3-ubyte.gz and the labels; `image_magic` and `nlabels` allow
 * broken files. */
static int write_idx(const char *dir, const char *prefix, int split, const uint8_t *labels, int n,
                     uint32_t image_magic, int nlabels) {
  uint8_t img[16 + 8 * FM_PX], lab[8 + 8];
  put_be32(img, image_magic);
  put_be32(img + 4, (uint32_t)n);
  put_be32(img + 8, FM_ROWS);
  put_be32(img + 12, FM_COLS);
  for (int i = 0; i < n; i++)
    for (int p = 0; p < FM_PX; p++) img[16 + i * FM_PX + p] = fm_pixel(split, i, p);
  put_be32(lab, 2049);
  put_be32(lab + 4, (uint32_t)nlabels);
  memcpy(lab + 8, labels, (size_t)nlabels);
  char rel[256];
  snprintf(rel, sizeof rel, "%s/%s-images-idx3-ubyte", dir, prefix);
  if (write_bytes(rel, img, 16 + (size_t)n * FM_PX) != 0) return -1;
  snprintf(rel, sizeof rel, "%s/%s-labels-idx1-ubyte", dir, prefix);
  if (write_bytes(rel, lab, 8 + (size_t)nlabels) != 0) return -1;
  return run("gzip -f '%s/%s-images-idx3-ubyte' '%s/%s-labels-idx1-ubyte'", dir, prefix, dir,
             prefix);
}

static void check_fm_split(const char *out, const char *split, int s, const uint8_t *labels,
                           int n) {
  char paths[16][64], rel[128];
  int got[16];
  snprintf(rel, sizeof rel, "%s/%s.txt", out, split);
  int cnt = read_list(rel, paths, got, 16);
  CHECKF(cnt == n, "%s: %d lines, expected %d", rel, cnt, n);
  dd_image img = {0};
  for (int i = 0; i < cnt && i < n; i++) {
    char want[64];
    snprintf(want, sizeof want, "%s/%d/%d.png", split, labels[i], i);
    CHECKF(strcmp(paths[i], want) == 0 && got[i] == labels[i], "%s line %d: %s %d", rel, i,
           paths[i], got[i]);
    snprintf(rel, sizeof rel, "%s/%s", out, paths[i]);
    if (decode_rel(&img, rel, 0) != 0) {
      CHECKF(0, "%s does not decode", rel);
      continue;
    }
    CHECK(img.w == FM_COLS && img.h == FM_ROWS && img.c == 1);
    for (int p = 0; p < FM_PX; p++) CHECK(img.px[p] == fm_pixel(s, i, p));
  }
  dd_image_free(&img);
}

static void test_fashion_mnist(void) {
  REQUIRE(run("mkdir -p fm bad1 bad2") == 0);
  REQUIRE(write_idx("fm", "train", 0, fm_train_labels, 5, 2051, 5) == 0);
  REQUIRE(write_idx("fm", "t10k", 1, fm_test_labels, 3, 2051, 3) == 0);
  int r = run("python3 '%s/scripts/prepare_fashion_mnist.py' --src fm --out fm_out",
              DD_SOURCE_DIR);
  CHECKF(r == 0, "%s", out_buf);
  CHECK_CONTAINS(out_buf, "train: 5/5 images (5 written, 0 already there)");
  CHECK_CONTAINS(out_buf, "test: 3/3 images");
  check_fm_split("fm_out", "train", 0, fm_train_labels, 5);
  check_fm_split("fm_out", "test", 1, fm_test_labels, 3);
  size_t len;
  char *names = read_rel("fm_out/labels.txt", &len);
  REQUIRE(names);
  CHECK(strncmp(names, "T-shirt/top\nTrouser\n", 20) == 0);
  int lines = 0;
  for (size_t i = 0; i < len; i++) lines += names[i] == '\n';
  CHECK(lines == 10);
  CHECK_CONTAINS(names, "\nAnkle boot\n");
  free(names);

  /* idempotent: nothing rewritten; a damaged PNG is; --force rewrites all */
  r = run("python3 '%s/scripts/prepare_fashion_mnist.py' --src fm --out fm_out", DD_SOURCE_DIR);
  CHECKF(r == 0, "%s", out_buf);
  CHECK_CONTAINS(out_buf, "train: 5/5 images (0 written, 5 already there)");
  REQUIRE(run("truncate -s 10 fm_out/train/9/2.png") == 0);
  r = run("python3 '%s/scripts/prepare_fashion_mnist.py' --src fm --out fm_out", DD_SOURCE_DIR);
  CHECK_CONTAINS(out_buf, "train: 5/5 images (1 written, 4 already there)");
  check_fm_split("fm_out", "train", 0, fm_train_labels, 5);
  r = run("python3 '%s/scripts/prepare_fashion_mnist.py' --src fm --out fm_out --force",
          DD_SOURCE_DIR);
  CHECK_CONTAINS(out_buf, "train: 5/5 images (5 written, 0 already there)");

  /* --limit */
  r = run("python3 '%s/scripts/prepare_fashion_mnist.py' --src fm --out fm_lim --limit 2",
          DD_SOURCE_DIR);
  CHECKF(r == 0, "%s", out_buf);
  check_fm_split("fm_lim", "train", 0, fm_train_labels, 2);
  check_fm_split("fm_lim", "test", 1, fm_test_labels, 2);

  /* broken inputs: the message names the file, nothing is written */
  REQUIRE(write_idx("bad1", "train", 0, fm_train_labels, 5, 2052, 5) == 0);
  REQUIRE(write_idx("bad1", "t10k", 1, fm_test_labels, 3, 2051, 3) == 0);
  r = run("python3 '%s/scripts/prepare_fashion_mnist.py' --src bad1 --out bad1_out",
          DD_SOURCE_DIR);
  CHECK(r != 0);
  CHECK_CONTAINS(out_buf, "bad1/train-images-idx3-ubyte.gz: bad magic number 2052");
  CHECK(access("bad1_out", F_OK) != 0);
  REQUIRE(write_idx("bad2", "train", 0, fm_train_labels, 5, 2051, 5) == 0);
  REQUIRE(write_idx("bad2", "t10k", 1, fm_test_labels, 3, 2051, 2) == 0);
  r = run("python3 '%s/scripts/prepare_fashion_mnist.py' --src bad2 --out bad2_out",
          DD_SOURCE_DIR);
  CHECK(r != 0);
  CHECK_CONTAINS(out_buf, "bad2/t10k-labels-idx1-ubyte.gz: 2 labels for 3 images");
  r = run("python3 '%s/scripts/prepare_fashion_mnist.py' --src nowhere --out x", DD_SOURCE_DIR);
  CHECK(r != 0);
  CHECK_CONTAINS(out_buf, "nowhere/train-images-idx3-ubyte: not found");
}

/* ---- CIFAR ----------------------------------------------------------------------------------- */

/* Pixel (plane k = R, G, B; y; x) of record i of split s. */
static uint8_t cifar_pixel(int s, int i, int k, int y, int x) {
  return (uint8_t)(s * 77 + i * 13 + k * 85 + y * 5 + x * 3 + (x * y) % 7);
}

static void cifar_record(uint8_t *rec, int s, int i) {
  for (int k = 0; k < 3; k++)
    for (int y = 0; y < 32; y++)
      for (int x = 0; x < 32; x++) rec[k * 1024 + y * 32 + x] = cifar_pixel(s, i, k, y, x);
}

/* CIFAR-10: 5 training batches of 2 records (labels (3 b + i) % 10), a test batch of 3. */
static int write_cifar10(const char *dir) {
  uint8_t buf[3 * 3073];
  for (int b = 0; b < 6; b++) {
    int n = b < 5 ? 2 : 3, s = b < 5 ? 0 : 1;
    for (int i = 0; i < n; i++) {
      int idx = b < 5 ? b * 2 + i : i;
      buf[i * 3073] = (uint8_t)((3 * idx + 1) % 10);
      cifar_record(buf + i * 3073 + 1, s, idx);
    }
    char rel[128];
    if (b < 5)
      snprintf(rel, sizeof rel, "%s/data_batch_%d.bin", dir, b + 1);
    else
      snprintf(rel, sizeof rel, "%s/test_batch.bin", dir);
    if (write_bytes(rel, buf, (size_t)n * 3073) != 0) return -1;
  }
  return 0;
}

/* CIFAR-100: train.bin 4 records, test.bin 2; coarse label (i * 7 + s) % 20, fine
 * (i * 37 + 5 + s) % 100 for split s. */
static int write_cifar100(const char *dir) {
  uint8_t buf[4 * 3074];
  for (int s = 0; s < 2; s++) {
    int n = s ? 2 : 4;
    for (int i = 0; i < n; i++) {
      buf[i * 3074] = (uint8_t)((i * 7 + s) % 20);
      buf[i * 3074 + 1] = (uint8_t)((i * 37 + 5 + s) % 100);
      cifar_record(buf + i * 3074 + 2, s, i);
    }
    char rel[128];
    snprintf(rel, sizeof rel, "%s/%s.bin", dir, s ? "test" : "train");
    if (write_bytes(rel, buf, (size_t)n * 3074) != 0) return -1;
  }
  return 0;
}

/* Checks OUT/SPLIT.txt against `labels` and that each PNG decodes to the record's pixels, in BGR
 * order as colour and as gray the way OpenCV's imread makes it (libpng's rgb_to_gray with the
 * weights 0.299, 0.587, 0.114 in 15-bit fixed point, truncated). */
static void check_cifar_split(const char *out, const char *split, int s, const int *labels, int n) {
  char paths[16][64], rel[128];
  int got[16];
  snprintf(rel, sizeof rel, "%s/%s.txt", out, split);
  int cnt = read_list(rel, paths, got, 16);
  CHECKF(cnt == n, "%s: %d lines, expected %d", rel, cnt, n);
  dd_image img = {0};
  for (int i = 0; i < cnt && i < n; i++) {
    char want[64];
    snprintf(want, sizeof want, "%s/%d/%d.png", split, labels[i], i);
    CHECKF(strcmp(paths[i], want) == 0 && got[i] == labels[i], "%s line %d: %s %d", rel, i,
           paths[i], got[i]);
    snprintf(rel, sizeof rel, "%s/%s", out, paths[i]);
    if (decode_rel(&img, rel, 3) != 0) {
      CHECKF(0, "%s does not decode", rel);
      continue;
    }
    CHECK(img.w == 32 && img.h == 32 && img.c == 3);
    int bad = 0;
    for (int y = 0; y < 32; y++)
      for (int x = 0; x < 32; x++)
        for (int k = 0; k < 3; k++) /* BGR: channel k holds plane 2 - k */
          bad += img.px[(y * 32 + x) * 3 + k] != cifar_pixel(s, i, 2 - k, y, x);
    CHECKF(bad == 0, "%s: %d bytes differ", rel, bad);
    if (i == 0) {
      REQUIRE(decode_rel(&img, rel, 1) == 0);
      int r = cifar_pixel(s, 0, 0, 3, 4), g = cifar_pixel(s, 0, 1, 3, 4),
          b = cifar_pixel(s, 0, 2, 3, 4);
      int y = r == g && g == b ? r : (r * 9797 + g * 19234 + b * 3737) >> 15;
      CHECK(img.c == 1 && img.px[3 * 32 + 4] == y);
    }
  }
  dd_image_free(&img);
}

static int count_lines(const char *rel) {
  size_t len;
  char *t = read_rel(rel, &len);
  if (!t) return -1;
  int n = 0;
  for (size_t i = 0; i < len; i++) n += t[i] == '\n';
  free(t);
  return n;
}

static void test_cifar10(void) {
  REQUIRE(run("mkdir -p c10/cifar-10-batches-bin c10bad") == 0);
  REQUIRE(write_cifar10("c10/cifar-10-batches-bin") == 0);
  /* --src at the archive's parent: the script finds cifar-10-batches-bin/ */
  int r = run("python3 '%s/scripts/prepare_cifar.py' --src c10 --out c10_out", DD_SOURCE_DIR);
  CHECKF(r == 0, "%s", out_buf);
  CHECK_CONTAINS(out_buf, "cifar10");
  int train[10], test[3];
  for (int i = 0; i < 10; i++) train[i] = (3 * i + 1) % 10;
  for (int i = 0; i < 3; i++) test[i] = (3 * i + 1) % 10;
  check_cifar_split("c10_out", "train", 0, train, 10);
  check_cifar_split("c10_out", "test", 1, test, 3);
  CHECK(count_lines("c10_out/labels.txt") == 10);
  size_t len;
  char *names = read_rel("c10_out/labels.txt", &len);
  REQUIRE(names);
  CHECK(strncmp(names, "airplane\nautomobile\n", 20) == 0);
  free(names);
  r = run("python3 '%s/scripts/prepare_cifar.py' --src c10 --out c10_out --limit 4",
          DD_SOURCE_DIR);
  CHECKF(r == 0, "%s", out_buf);
  CHECK_CONTAINS(out_buf, "train: 4/4 images (0 written, 4 already there)");
  CHECK(count_lines("c10_out/train.txt") == 4 && count_lines("c10_out/test.txt") == 3);

  /* a batch that is not whole records, then a label out of range */
  REQUIRE(write_cifar10("c10bad") == 0);
  REQUIRE(run("truncate -s 3000 c10bad/data_batch_3.bin") == 0);
  r = run("python3 '%s/scripts/prepare_cifar.py' --src c10bad --out c10bad_out", DD_SOURCE_DIR);
  CHECK(r != 0);
  CHECK_CONTAINS(out_buf,
                 "c10bad/data_batch_3.bin: 3000 bytes is not a whole number of 3073-byte records");
  CHECK(access("c10bad_out", F_OK) != 0);
  REQUIRE(write_cifar10("c10bad") == 0);
  REQUIRE(run("printf '\\012' | dd of=c10bad/test_batch.bin bs=1 seek=3073 conv=notrunc "
              "status=none") == 0);
  r = run("python3 '%s/scripts/prepare_cifar.py' --src c10bad --out c10bad_out", DD_SOURCE_DIR);
  CHECK(r != 0);
  CHECK_CONTAINS(out_buf, "c10bad/test_batch.bin: record 1 has label 10, not in 0..9");
}

static void test_cifar100(void) {
  REQUIRE(run("mkdir -p c100") == 0);
  REQUIRE(write_cifar100("c100") == 0);
  int r = run("python3 '%s/scripts/prepare_cifar.py' --src c100 --out c100_fine", DD_SOURCE_DIR);
  CHECKF(r == 0, "%s", out_buf);
  CHECK_CONTAINS(out_buf, "cifar100 (fine labels, 100 classes)");
  int fine_tr[4], fine_te[2], coarse_tr[4], coarse_te[2];
  for (int i = 0; i < 4; i++) fine_tr[i] = (i * 37 + 5) % 100, coarse_tr[i] = (i * 7) % 20;
  for (int i = 0; i < 2; i++) fine_te[i] = (i * 37 + 6) % 100, coarse_te[i] = (i * 7 + 1) % 20;
  check_cifar_split("c100_fine", "train", 0, fine_tr, 4);
  check_cifar_split("c100_fine", "test", 1, fine_te, 2);
  CHECK(count_lines("c100_fine/labels.txt") == 100);
  r = run("python3 '%s/scripts/prepare_cifar.py' --src c100 --out c100_coarse --label coarse",
          DD_SOURCE_DIR);
  CHECKF(r == 0, "%s", out_buf);
  check_cifar_split("c100_coarse", "train", 0, coarse_tr, 4);
  check_cifar_split("c100_coarse", "test", 1, coarse_te, 2);
  CHECK(count_lines("c100_coarse/labels.txt") == 20);
  /* asking for CIFAR-10 where there is CIFAR-100 */
  r = run("python3 '%s/scripts/prepare_cifar.py' --src c100 --out x --dataset cifar10",
          DD_SOURCE_DIR);
  CHECK(r != 0);
  CHECK_CONTAINS(out_buf, "no data_batch_1.bin (cifar10)");
}

int main(void) {
  if (system("python3 -c 'import zlib, gzip' >/dev/null 2>&1 && gzip --version >/dev/null 2>&1")) {
    printf("SKIP: python3 (with zlib) and gzip are needed\n");
    return 0;
  }
  if (test_scratch_dir(tmp, sizeof tmp, "dataset")) return 1;
  RUN(test_fashion_mnist);
  RUN(test_cifar10);
  RUN(test_cifar100);
  if (test__failed == 0) test_scratch_remove(tmp); /* kept for a look when a test failed */
  return test_summary();
}
