/* libFuzzer target for the image decoder (core/data/imgdec.c).
 *
 * Each input is decoded as it is stored, as BGR and as gray. Whatever the input, the decoder must
 * return 0 or DD_ECORRUPT / DD_ENOMEM without crashing, leaking or touching memory outside the
 * input (ASan; the input is handed over in an exact-size copy) and without escaping libpng's
 * longjmp. The three decodes must agree on success and on the size; "as stored" must equal the
 * BGR or the gray decode, gray expansion must give B = G = R, and a small decoded image must
 * survive PNG encode -> decode unchanged.
 *
 * Build: CC=clang cmake -DDD_FUZZ=ON -DDD_SANITIZE=ON; run:
 *   ./fuzz_imgdec -max_total_time=60 SCRATCH_DIR tests/fuzz/corpus/imgdec */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "data/imgdec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *detail) {
  fprintf(stderr, "fuzz_imgdec: %s: %s\n", what, detail ? detail : "");
  abort();
}

static void check_roundtrip(const dd_image *img) {
  char err[256];
  uint8_t *png = NULL;
  size_t len = 0;
  if (dd_image_encode_png(&png, &len, img, err, sizeof err) != 0) fail("encode PNG failed", err);
  dd_image back = {0};
  if (dd_image_decode(&back, png, len, 0, "roundtrip", err, sizeof err) != 0)
    fail("our own PNG does not decode", err);
  if (back.w != img->w || back.h != img->h || back.c != img->c ||
      memcmp(back.px, img->px, (size_t)img->w * img->h * img->c) != 0)
    fail("PNG round trip changed the image", NULL);
  dd_image_free(&back);
  free(png);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *buf = malloc(size ? size : 1);
  if (!buf) return 0;
  if (size) memcpy(buf, data, size);
  char err[512];
  dd_image img = {0}, gray = {0}, colour = {0};
  int r0 = dd_image_decode(&img, buf, size, 0, "fuzz", err, sizeof err);
  int r3 = dd_image_decode(&colour, buf, size, 3, "fuzz", err, sizeof err);
  int r1 = dd_image_decode(&gray, buf, size, 1, "fuzz", err, sizeof err);
  int rs[3] = {r0, r3, r1};
  for (int i = 0; i < 3; i++) {
    if (rs[i] != 0 && rs[i] != DD_ECORRUPT && rs[i] != DD_ENOMEM)
      fail("unexpected error code", err);
    if (rs[i] != 0 && strncmp(err, "fuzz: ", 6) != 0) fail("message without the name", err);
  }
  /* the channel choice must not change whether a file decodes (only CMYK takes another path) */
  if ((r0 == 0) != (r3 == 0) || (r0 == 0) != (r1 == 0)) {
    if (r0 != DD_ENOMEM && r1 != DD_ENOMEM && r3 != DD_ENOMEM) fail("channels change success", err);
  }
  if (r0 == 0 && r3 == 0 && r1 == 0) {
    if (img.c != 1 && img.c != 3) fail("bad channel count", NULL);
    if (colour.c != 3 || gray.c != 1) fail("channels not as asked", NULL);
    if (img.w != colour.w || img.h != colour.h || img.w != gray.w || img.h != gray.h)
      fail("sizes differ between channel choices", NULL);
    if (img.w <= 0 || img.h <= 0 || (int64_t)img.w * img.h > DD_IMAGE_MAX_PIXELS)
      fail("bad size", NULL);
    size_t n = (size_t)img.w * img.h;
    if (img.c == 3 && memcmp(img.px, colour.px, n * 3) != 0) fail("as stored != BGR", NULL);
    if (img.c == 1) {
      if (memcmp(img.px, gray.px, n) != 0) fail("as stored != gray", NULL);
      for (size_t i = 0; i < n; i++) {
        const uint8_t *p = colour.px + 3 * i;
        if (p[0] != img.px[i] || p[1] != img.px[i] || p[2] != img.px[i])
          fail("gray expansion is not B = G = R", NULL);
      }
    }
    if (n <= 4096) {
      check_roundtrip(&colour);
      check_roundtrip(&gray);
    }
  }
  dd_image_free(&img);
  dd_image_free(&gray);
  dd_image_free(&colour);
  free(buf);
  return 0;
}
