/* Tiny generated image data shared by the tests that run whole jobs (tests/test_distill.c,
 * tests/test_daemon.c): 64 colour 8 x 8 PNGs in 4 classes. Class k is tinted towards one colour
 * (B, G, R or yellow) and has a bright row 2k, under per-pixel noise, so a small net learns it in
 * a few dozen iterations. DIR/img/im_NN.png, DIR/train.txt (48 listed) and DIR/test.txt (16). */
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

#endif
