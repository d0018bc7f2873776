/* Tiny generated image data shared by the tests that run whole jobs (tests/test_distill.c,
 * tests/test_daemon*.c, tests/test_deploy_redis.c, tests/test_multinode.c, tests/test_cuda_train.c):
 * 64 colour 8 x 8 PNGs in 4 classes. Class k is tinted towards one colour (B, G, R or yellow) and
 * has a bright row 2k, under per-pixel noise, so a small net learns it in a few dozen iterations.
 * DIR/img/im_NN.png, DIR/train.txt (48 listed) and DIR/test.txt (16). And the small nets over
 * them: TEST_NET_BODY (two convolutions, a global average pooling, a 4-way InnerProduct "fc"),
 * written as a train_val net (test_write_train_val) or a deploy net (test_write_deploy). */
#ifndef DD_TEST_IMAGES_H
#define DD_TEST_IMAGES_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "data/imgdec.h"
#include "base/rng.h"

static inline int test_make_images(const char *dir) {
  char path[1024], tr[1024], te[1024];
  snprintf(path, sizeof path, "%s/img", dir);
  mkdir(path, 0755);
  static const int tint[4][3] = {{200, 60, 60}, {60, 200, 60}, {60, 60, 200}, {60, 200, 200}};
  dd_rng r;
  dd_rng_seed(&r, 2024);
  snprintf(tr, sizeof tr, "%s/train.txt", dir);
  snprintf(te, sizeof te, "%s/test.txt", dir);
  FILE *ft = fopen(tr, "w"), *fv = fopen(te, "w");
  if (!ft || !fv) {
    if (ft) fclose(ft);
    if (fv) fclose(fv);
    return -1;
  }
  int rc = 0;
  for (int i = 0; i < 64 && !rc; i++) {
    int k = i % 4;
    dd_image img = {.w = 8, .h = 8, .c = 3};
    img.px = malloc(8 * 8 * 3);
    img.cap = 8 * 8 * 3;
    if (!img.px) {
      rc = -1;
      break;
    }
    for (int y = 0; y < 8; y++)
      for (int x = 0; x < 8; x++)
        for (int ch = 0; ch < 3; ch++) {
          int v = tint[k][ch] + (int)(dd_rng_next(&r) % 81) - 40 + (y == 2 * k ? 50 : 0);
          img.px[(y * 8 + x) * 3 + ch] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[256];
    rc = dd_image_encode_png(&buf, &len, &img, err, sizeof err);
    free(img.px);
    if (rc) break;
    snprintf(path, sizeof path, "%s/img/im_%02d.png", dir, i);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len) rc = -1;
    if (f) fclose(f);
    free(buf);
    fprintf(i < 48 ? ft : fv, "im_%02d.png %d\n", i, k);
  }
  fclose(ft);
  fclose(fv);
  return rc;
}

/* From "data" (N, 3, 8, 8) to "fc" (N, 4): conv 8 (3x3, pad 1), ReLU, conv 8 (3x3, stride 2, pad 1),
 * ReLU, global average pooling, InnerProduct 4; every layer's name starts with s_ but fc's. */
#define TEST_NET_BODY                                                                                              \
  "layer { name: 's_conv1' type: 'Convolution' bottom: 'data' top: 's_conv1' convolution_param { num_output: 8 "  \
  "kernel_size: 3 pad: 1 weight_filler { type: 'msra' } } }\n"                                                     \
  "layer { name: 's_relu1' type: 'ReLU' bottom: 's_conv1' top: 's_relu1' }\n"                                      \
  "layer { name: 's_conv2' type: 'Convolution' bottom: 's_relu1' top: 's_conv2' convolution_param { num_output: 8 " \
  "kernel_size: 3 stride: 2 pad: 1 weight_filler { type: 'msra' } } }\n"                                           \
  "layer { name: 's_relu2' type: 'ReLU' bottom: 's_conv2' top: 's_relu2' }\n"                                      \
  "layer { name: 's_pool' type: 'Pooling' bottom: 's_relu2' top: 's_pool' pooling_param { pool: AVE "              \
  "global_pooling: true } }\n"                                                                                      \
  "layer { name: 'fc' type: 'InnerProduct' bottom: 's_pool' top: 'fc' inner_product_param { num_output: 4 "        \
  "weight_filler { type: 'msra' } } }\n"

/* The train_val net both writers below make: ImageData in TRAIN (the list `train_list`; with
 * `augment` shuffled and mirrored) and TEST (test.txt), root_folder `root`, batch 8, scale 1/256,
 * 8 x 8 crops; `body` from "data" to "fc"; SoftmaxWithLoss and, in TEST, Accuracy. */
static inline int test__write_train_val(const char *path, const char *name, const char *train_list, const char *root,
                                        int augment, const char *body) {
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "cannot write %s\n", path);
    return -1;
  }
  fprintf(f,
          "name: '%s'\n"
          "layer { name: 'data' type: 'ImageData' top: 'data' top: 'label' include { phase: TRAIN }\n"
          "  transform_param { scale: 0.00390625%s crop_size: 8 } image_data_param { source: '%s'"
          " root_folder: '%s' batch_size: 8%s } }\n"
          "layer { name: 'data' type: 'ImageData' top: 'data' top: 'label' include { phase: TEST }\n"
          "  transform_param { scale: 0.00390625 crop_size: 8 } image_data_param { source: 'test.txt'"
          " root_folder: '%s' batch_size: 8 } }\n"
          "%s"
          "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n"
          "layer { name: 'accuracy' type: 'Accuracy' bottom: 'fc' bottom: 'label' top: 'accuracy' include { phase: TEST } }\n",
          name, augment ? " mirror: true" : "", train_list, root, augment ? " shuffle: true" : "", root, body);
  return fclose(f) == 0 ? 0 : -1;
}

/* A train_val net `name` at `path` over the images (relative paths: they resolve against the
 * working directory of whoever trains it), shuffled and mirrored in TRAIN. 0 when written. */
static inline int test_write_train_val(const char *path, const char *name, const char *train_list, const char *body) {
  return test__write_train_val(path, name, train_list, "img/", 1, body);
}

/* DIR/student.prototxt: the same net with the list files named relative ("train.txt", "test.txt":
 * they resolve against a job's base_dir), root_folder DIR/img/ (absolute), no mirror or shuffle.
 * 0 when written. */
static inline int test_write_rooted_student(const char *dir, const char *body) {
  char path[1024], root[1024];
  snprintf(path, sizeof path, "%s/student.prototxt", dir);
  snprintf(root, sizeof root, "%s/img/", dir);
  return test__write_train_val(path, "student", "train.txt", root, 0, body);
}

/* A deploy net `name` at `path`: an Input "data" (1, 3, 8, 8), then `body`. 0 when written. */
static inline int test_write_deploy(const char *path, const char *name, const char *body) {
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "cannot write %s\n", path);
    return -1;
  }
  fprintf(f,
          "name: '%s'\nlayer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n"
          "%s",
          name, body);
  return fclose(f) == 0 ? 0 : -1;
}

#endif
