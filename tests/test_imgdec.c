/* Image decoding (core/data/imgdec.c): exact pixels for PNGs written three ways (our encoder,
 * libpng directly with 16-bit, palette, alpha, low bit depths and interlacing, and PNG bytes built
 * by hand so the decoder is not only checked against its own encoder), BGR order, OpenCV's gray
 * weights, gray expansion, JPEG within a small tolerance of its source (and byte-equal to
 * TurboJPEG's own decode for 4:2:0 and CMYK), and bad input of every kind: empty, random,
 * truncated at every offset, bit flips, absurd declared sizes, bad CRCs. Run under ASan it also
 * shows that no input makes the decoder read or write out of bounds. */
#define _POSIX_C_SOURCE 200809L
#include <png.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdint.h>
#include <turbojpeg.h>

#include "base/dd_error.h"
#include "data/imgdec.h"
#include "test.h"

static char err[512];

/* ---- helpers --------------------------------------------------------------------------------- */

static uint64_t rng_state = 88172645463325252ull;
static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}

/* A w x h image with c channels: a smooth pattern plus `noise` random levels (JPEG-friendly when
 * noise is small), or pure noise when noise >= 256. */
static dd_image make_image(int w, int h, int c, int noise) {
  dd_image im = {.w = w, .h = h, .c = c, .cap = (size_t)w * h * c};
  im.px = malloc(im.cap);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int k = 0; k < c; k++) {
        int gx = x * 255 / (w > 1 ? w - 1 : 1), gy = y * 255 / (h > 1 ? h - 1 : 1);
        int v = noise >= 256 ? (int)(rnd() & 255)
                             : (gx * (k + 1) + gy * (3 - k)) / 4 +
                                   (noise ? (int)(rnd() % (unsigned)(2 * noise + 1)) - noise : 0);
        im.px[((size_t)y * w + x) * c + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
      }
  return im;
}

/* Gray as OpenCV's imread(IMREAD_GRAYSCALE) makes it. CMYK JPEGs (and cvtColor): the weights
 * 0.114, 0.587, 0.299 in 14-bit fixed point, rounded. PNGs: libpng's rgb_to_gray with the weights
 * OpenCV passes (0.299, 0.587 -> 15-bit 9797, 19234, blue 32768 - both = 3737), truncated for
 * 8-bit samples, rounded at 16 bits before the high byte is kept for 16-bit ones; gray pixels
 * (R = G = B) pass through unchanged. */
static int cv_gray(int b, int g, int r) { return (b * 1868 + g * 9617 + r * 4899 + 8192) >> 14; }
static int png_gray8(int b, int g, int r) {
  return r == g && g == b ? r : (r * 9797 + g * 19234 + b * 3737) >> 15;
}
static int png_gray16(int b, int g, int r) {
  return (r == g && g == b ? r : (r * 9797 + g * 19234 + b * 3737 + 16384) >> 15) >> 8;
}

static size_t max_abs_diff(const uint8_t *a, const uint8_t *b, size_t n, double *mean) {
  size_t mx = 0;
  double sum = 0;
  for (size_t i = 0; i < n; i++) {
    size_t d = (size_t)abs((int)a[i] - (int)b[i]);
    sum += (double)d;
    if (d > mx) mx = d;
  }
  if (mean) *mean = n ? sum / (double)n : 0;
  return mx;
}

static uint8_t *encode(const dd_image *im, int jpeg_quality, size_t *len) {
  uint8_t *out = NULL;
  int r = jpeg_quality ? dd_image_encode_jpeg(&out, len, im, jpeg_quality, err, sizeof err)
                       : dd_image_encode_png(&out, len, im, err, sizeof err);
  if (r != 0) fprintf(stderr, "encode failed: %s\n", err);
  return out;
}

/* -- PNG bytes by hand: chunks with our own CRC-32, a zlib stream of stored blocks -- */

static uint32_t crc32_of(const uint8_t *p, size_t n, uint32_t crc) {
  crc = ~crc;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
  }
  return ~crc;
}

typedef struct {
  uint8_t *b;
  size_t n, cap;
} bytes;

static void put(bytes *o, const void *p, size_t n) {
  if (o->n + n > o->cap) {
    o->cap = (o->n + n) * 2 + 64;
    o->b = realloc(o->b, o->cap);
  }
  memcpy(o->b + o->n, p, n);
  o->n += n;
}
static void put32(bytes *o, uint32_t v) {
  uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
  put(o, b, 4);
}
static void put_chunk(bytes *o, const char *type, const uint8_t *data, size_t n) {
  put32(o, (uint32_t)n);
  size_t start = o->n;
  put(o, type, 4);
  if (n) put(o, data, n);
  put32(o, crc32_of(o->b + start, n + 4, 0));
}

/* A PNG by hand: IHDR(w, h, depth, ctype), an optional tEXt chunk, IDAT holding `raw` (rows with
 * their filter bytes) in stored deflate blocks, IEND. */
static bytes hand_png(uint32_t w, uint32_t h, int depth, int ctype, const uint8_t *raw, size_t n,
                      int with_text) {
  bytes o = {0};
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  put(&o, sig, 8);
  uint8_t ihdr[13] = {(uint8_t)(w >> 24), (uint8_t)(w >> 16), (uint8_t)(w >> 8), (uint8_t)w,
                      (uint8_t)(h >> 24), (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h,
                      (uint8_t)depth,     (uint8_t)ctype,     0,                 0,
                      0};
  put_chunk(&o, "IHDR", ihdr, 13);
  if (with_text) put_chunk(&o, "tEXt", (const uint8_t *)"Comment\0hand-made", 17);
  bytes z = {0};
  uint8_t zh[2] = {0x78, 0x01};
  put(&z, zh, 2);
  size_t off = 0;
  do {
    size_t blk = n - off > 65535 ? 65535 : n - off;
    uint8_t bh[5] = {(uint8_t)(off + blk == n), (uint8_t)blk, (uint8_t)(blk >> 8),
                     (uint8_t)~blk, (uint8_t)(~blk >> 8)};
    put(&z, bh, 5);
    put(&z, raw + off, blk);
    off += blk;
  } while (off < n);
  uint32_t a = 1, b = 0;
  for (size_t i = 0; i < n; i++) {
    a = (a + raw[i]) % 65521;
    b = (b + a) % 65521;
  }
  put32(&z, (b << 16) | a);
  put_chunk(&o, "IDAT", z.b, z.n);
  free(z.b);
  put_chunk(&o, "IEND", NULL, 0);
  return o;
}

/* -- PNGs through libpng directly, for what our encoder does not write -- */

typedef struct {
  bytes out;
} wctx;

static void w_write(png_structp png, png_bytep d, size_t n) { put(png_get_io_ptr(png), d, n); }
static void w_flush(png_structp png) { (void)png; }

typedef struct {
  int w, h, depth, ctype, interlace;
  const uint8_t *rows; /* h rows of rowbytes, in PNG's own layout (big-endian 16-bit, RGB) */
  size_t rowbytes;
  const png_color *pal;
  int npal;
  const uint8_t *trans;
  int ntrans;
  const png_color_16 *trans_color; /* tRNS of a gray or RGB image */
} png_spec;

static void write_body(png_structp png, png_infop info, const png_spec *s, bytes *o) {
  png_set_write_fn(png, o, w_write, w_flush);
  png_set_IHDR(png, info, (png_uint_32)s->w, (png_uint_32)s->h, s->depth, s->ctype, s->interlace,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (s->pal) png_set_PLTE(png, info, s->pal, s->npal);
  if (s->trans || s->trans_color) png_set_tRNS(png, info, s->trans, s->ntrans, s->trans_color);
  png_write_info(png, info);
  int passes = png_set_interlace_handling(png);
  for (int p = 0; p < passes; p++)
    for (int y = 0; y < s->h; y++) png_write_row(png, s->rows + s->rowbytes * (size_t)y);
  png_write_end(png, NULL);
}

static int write_guard(png_structp png, png_infop info, const png_spec *s, bytes *o) {
  if (setjmp(png_jmpbuf(png))) return -1;
  write_body(png, info, s, o);
  return 0;
}

static bytes libpng_write(const png_spec *s) {
  bytes o = {0};
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  if (write_guard(png, info, s, &o) != 0) {
    free(o.b);
    o = (bytes){0};
  }
  png_destroy_write_struct(&png, &info);
  return o;
}

/* ---- PNG ------------------------------------------------------------------------------------- */

/* Our encoder -> decoder: exact, in every channel mode (gray files expanded, colour files to
 * gray as OpenCV's imread does it). */
static void test_png_roundtrip_exact(void) {
  dd_image img = {0};
  for (int c = 1; c <= 3; c += 2) {
    dd_image src = make_image(37, 23, c, 256);
    size_t len;
    uint8_t *png = encode(&src, 0, &len);
    REQUIRE(png);
    for (int want = 0; want <= 3; want++) {
      if (want == 2) continue;
      CHECK(dd_image_decode(&img, png, len, want, "rt.png", err, sizeof err) == 0);
      int oc = want ? want : c;
      CHECK(img.w == 37 && img.h == 23 && img.c == oc);
      for (int i = 0; i < 37 * 23; i++) {
        const uint8_t *s = src.px + i * c, *d = img.px + i * oc;
        if (oc == c) {
          CHECK(memcmp(s, d, (size_t)c) == 0);
        } else if (oc == 3) {
          CHECK(d[0] == s[0] && d[1] == s[0] && d[2] == s[0]);
        } else {
          CHECK(d[0] == png_gray8(s[0], s[1], s[2]));
          CHECK(abs(d[0] - cv_gray(s[0], s[1], s[2])) <= 1);
        }
        if (test__cur_failed) break;
      }
    }
    free(png);
    free(src.px);
  }
  dd_image_free(&img);
}

/* Hand-built PNG bytes: the decoder agrees with the PNG specification, not only with libpng's
 * writer. Pixels in the file are R, G, B; the decoder must give B, G, R. */
static void test_png_handbuilt_rgb_bgr_order(void) {
  static const uint8_t rgb[2][3][3] = {{{255, 0, 0}, {0, 255, 0}, {0, 0, 255}},
                                       {{255, 255, 255}, {0, 0, 0}, {10, 20, 30}}};
  uint8_t raw[2 * (1 + 9)];
  for (int y = 0; y < 2; y++) {
    raw[y * 10] = 0; /* filter: none */
    memcpy(raw + y * 10 + 1, rgb[y], 9);
  }
  bytes f = hand_png(3, 2, 8, 2, raw, sizeof raw, 1);
  dd_image img = {0};
  REQUIRE(dd_image_decode(&img, f.b, f.n, 3, "hand.png", err, sizeof err) == 0);
  CHECK(img.w == 3 && img.h == 2 && img.c == 3);
  CHECK(img.px[0] == 0 && img.px[1] == 0 && img.px[2] == 255); /* pure red -> B=0 G=0 R=255 */
  for (int y = 0; y < 2; y++)
    for (int x = 0; x < 3; x++)
      for (int k = 0; k < 3; k++) CHECK(img.px[(y * 3 + x) * 3 + k] == rgb[y][x][2 - k]);
  /* as stored = colour */
  REQUIRE(dd_image_decode(&img, f.b, f.n, 0, "hand.png", err, sizeof err) == 0);
  CHECK(img.c == 3);
  /* gray with OpenCV's weights, truncated as OpenCV's imread does for PNGs: red 76 (76.2),
   * green 149 (149.7), blue 29 (29.1), white 255, black 0, (10, 20, 30) 18 (18.1) */
  REQUIRE(dd_image_decode(&img, f.b, f.n, 1, "hand.png", err, sizeof err) == 0);
  CHECK(img.c == 1);
  static const uint8_t gray[6] = {76, 149, 29, 255, 0, 18};
  CHECK(memcmp(img.px, gray, 6) == 0);
  for (int i = 0; i < 6; i++) {
    const uint8_t *p = rgb[i / 3][i % 3];
    double y = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    CHECK(img.px[i] <= y + 1e-9 && img.px[i] > y - 1);
  }
  free(f.b);

  /* gray + alpha by hand (colour type 4): alpha dropped without compositing */
  uint8_t ga[2 * (1 + 4)] = {0, 200, 0, 17, 255, 0, 99, 128, 0, 255};
  f = hand_png(2, 2, 8, 4, ga, sizeof ga, 0);
  REQUIRE(dd_image_decode(&img, f.b, f.n, 0, "ga.png", err, sizeof err) == 0);
  CHECK(img.c == 1 && img.w == 2 && img.h == 2);
  CHECK(img.px[0] == 200 && img.px[1] == 17 && img.px[2] == 99 && img.px[3] == 0);
  REQUIRE(dd_image_decode(&img, f.b, f.n, 3, "ga.png", err, sizeof err) == 0);
  CHECK(img.c == 3 && img.px[0] == 200 && img.px[1] == 200 && img.px[2] == 200 && img.px[3] == 17);
  free(f.b);

  /* 1-bit gray by hand with an Up filter on row 2: 0 -> 0, 1 -> 255 */
  uint8_t g1[2 * 2] = {0, 0xA0, 2, 0x60}; /* row 0: bits 1 0 1; row 1: 0x60 + 0xA0 = 0x00 */
  f = hand_png(3, 2, 1, 0, g1, sizeof g1, 0);
  REQUIRE(dd_image_decode(&img, f.b, f.n, 0, "g1.png", err, sizeof err) == 0);
  CHECK(img.c == 1 && img.w == 3);
  CHECK(img.px[0] == 255 && img.px[1] == 0 && img.px[2] == 255);
  CHECK(img.px[3] == 0 && img.px[4] == 0 && img.px[5] == 0);
  free(f.b);
  dd_image_free(&img);
}

static void test_png_16bit(void) {
  /* gray 16: 0x1234 -> 0x12, 0xffff -> 0xff, 0x80ff -> 0x80 (high byte as OpenCV, not rounded) */
  uint8_t g16[2 * 4] = {0x12, 0x34, 0xff, 0xff, 0x80, 0xff, 0x00, 0xff};
  png_spec s = {.w = 2, .h = 2, .depth = 16, .ctype = PNG_COLOR_TYPE_GRAY, .rows = g16,
                .rowbytes = 4};
  bytes f = libpng_write(&s);
  REQUIRE(f.b);
  dd_image img = {0};
  REQUIRE(dd_image_decode(&img, f.b, f.n, 0, "g16.png", err, sizeof err) == 0);
  CHECK(img.c == 1 && img.w == 2 && img.h == 2);
  CHECK(img.px[0] == 0x12 && img.px[1] == 0xff && img.px[2] == 0x80 && img.px[3] == 0x00);
  free(f.b);
  /* RGB 16 (and RGBA 16: alpha dropped) */
  uint8_t c16[1 * 12] = {0xab, 0xcd, 0x01, 0x02, 0xfe, 0xdc};
  s = (png_spec){.w = 1, .h = 1, .depth = 16, .ctype = PNG_COLOR_TYPE_RGB, .rows = c16,
                 .rowbytes = 6};
  f = libpng_write(&s);
  REQUIRE(f.b);
  REQUIRE(dd_image_decode(&img, f.b, f.n, 0, "c16.png", err, sizeof err) == 0);
  CHECK(img.c == 3 && img.px[0] == 0xfe && img.px[1] == 0x01 && img.px[2] == 0xab);
  free(f.b);
  uint8_t c16a[8] = {0xab, 0xcd, 0x01, 0x02, 0xfe, 0xdc, 0x00, 0x00};
  s = (png_spec){.w = 1, .h = 1, .depth = 16, .ctype = PNG_COLOR_TYPE_RGB_ALPHA, .rows = c16a,
                 .rowbytes = 8};
  f = libpng_write(&s);
  REQUIRE(f.b);
  REQUIRE(dd_image_decode(&img, f.b, f.n, 0, "c16a.png", err, sizeof err) == 0);
  CHECK(img.c == 3 && img.px[0] == 0xfe && img.px[1] == 0x01 && img.px[2] == 0xab);
  REQUIRE(dd_image_decode(&img, f.b, f.n, 1, "c16a.png", err, sizeof err) == 0);
  CHECK(img.c == 1 && img.px[0] == png_gray16(0xfedc, 0x0102, 0xabcd));
  free(f.b);
  dd_image_free(&img);
}

static void test_png_palette(void) {
  static const png_color pal[4] = {{255, 0, 0}, {0, 128, 0}, {1, 2, 3}, {250, 250, 250}};
  static const uint8_t trans[4] = {255, 0, 128, 255}; /* alpha is dropped: colours stay */
  /* 2-bit indices, 5 x 2: row0 0 1 2 3 0, row1 3 2 1 0 3 */
  uint8_t rows[2 * 2] = {0x1b, 0x00, 0xe4, 0xc0};
  png_spec s = {.w = 5, .h = 2, .depth = 2, .ctype = PNG_COLOR_TYPE_PALETTE, .rows = rows,
                .rowbytes = 2, .pal = pal, .npal = 4, .trans = trans, .ntrans = 4};
  static const int idx[10] = {0, 1, 2, 3, 0, 3, 2, 1, 0, 3};
  dd_image img = {0};
  for (int t = 0; t < 2; t++) {
    if (t == 1) s.trans = NULL, s.ntrans = 0;
    bytes f = libpng_write(&s);
    REQUIRE(f.b);
    REQUIRE(dd_image_decode(&img, f.b, f.n, 0, "pal.png", err, sizeof err) == 0);
    CHECK(img.c == 3 && img.w == 5 && img.h == 2);
    for (int i = 0; i < 10; i++) {
      const png_color *p = &pal[idx[i]];
      CHECK(img.px[3 * i] == p->blue && img.px[3 * i + 1] == p->green &&
            img.px[3 * i + 2] == p->red);
    }
    REQUIRE(dd_image_decode(&img, f.b, f.n, 1, "pal.png", err, sizeof err) == 0);
    CHECK(img.c == 1);
    for (int i = 0; i < 10; i++) {
      const png_color *p = &pal[idx[i]];
      CHECK(img.px[i] == png_gray8(p->blue, p->green, p->red));
    }
    free(f.b);
  }
  dd_image_free(&img);
}

/* RGBA (alpha dropped, not composited), 4-bit gray with a tRNS colour, and Adam7 interlacing
 * at a size that leaves some passes empty. */
static void test_png_alpha_lowdepth_interlace(void) {
  dd_image img = {0};
  uint8_t rgba[2 * 4] = {10, 20, 30, 0, 200, 100, 50, 128};
  png_spec s = {.w = 2, .h = 1, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB_ALPHA, .rows = rgba,
                .rowbytes = 8};
  bytes f = libpng_write(&s);
  REQUIRE(f.b);
  REQUIRE(dd_image_decode(&img, f.b, f.n, 0, "rgba.png", err, sizeof err) == 0);
  CHECK(img.c == 3 && img.px[0] == 30 && img.px[1] == 20 && img.px[2] == 10);
  CHECK(img.px[3] == 50 && img.px[4] == 100 && img.px[5] == 200);
  free(f.b);

  /* 4-bit gray 0 15 7 0 -> 0 255 119 0; 15 is transparent (tRNS), which changes nothing */
  uint8_t g4[2] = {0x0f, 0x70};
  png_color_16 tc = {.gray = 15};
  s = (png_spec){.w = 4, .h = 1, .depth = 4, .ctype = PNG_COLOR_TYPE_GRAY, .rows = g4,
                 .rowbytes = 2, .trans_color = &tc};
  f = libpng_write(&s);
  REQUIRE(f.b);
  REQUIRE(dd_image_decode(&img, f.b, f.n, 0, "g4.png", err, sizeof err) == 0);
  CHECK(img.c == 1 && img.w == 4);
  CHECK(img.px[0] == 0 && img.px[1] == 255 && img.px[2] == 119 && img.px[3] == 0);
  free(f.b);

  for (int c = 1; c <= 3; c += 2) {
    int sizes[3][2] = {{1, 1}, {3, 2}, {41, 27}};
    for (int si = 0; si < 3; si++) {
      int w = sizes[si][0], h = sizes[si][1];
      dd_image src = make_image(w, h, c, 256);
      uint8_t *rows = malloc((size_t)w * h * c);
      for (int i = 0; i < w * h; i++) /* PNG stores RGB */
        for (int k = 0; k < c; k++) rows[i * c + k] = src.px[i * c + (c == 3 ? 2 - k : k)];
      s = (png_spec){.w = w, .h = h, .depth = 8,
                     .ctype = c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
                     .interlace = PNG_INTERLACE_ADAM7, .rows = rows, .rowbytes = (size_t)w * c};
      f = libpng_write(&s);
      REQUIRE(f.b);
      CHECK(dd_image_decode(&img, f.b, f.n, 0, "adam7.png", err, sizeof err) == 0);
      CHECK(img.w == w && img.h == h && img.c == c);
      CHECK(memcmp(img.px, src.px, (size_t)w * h * c) == 0);
      free(f.b);
      free(rows);
      free(src.px);
    }
  }
  dd_image_free(&img);
}

/* ---- JPEG ------------------------------------------------------------------------------------ */

static void test_jpeg_q100_444(void) {
  dd_image src = make_image(64, 48, 3, 6), img = {0};
  size_t len;
  uint8_t *jpg = encode(&src, 100, &len);
  REQUIRE(jpg);
  REQUIRE(dd_image_decode(&img, jpg, len, 0, "q100.jpg", err, sizeof err) == 0);
  CHECK(img.w == 64 && img.h == 48 && img.c == 3);
  double mean;
  size_t mx = max_abs_diff(img.px, src.px, (size_t)64 * 48 * 3, &mean);
  CHECKF(mx <= 5 && mean < 1.0, "max %zu mean %.3f", mx, mean);
  free(jpg);
  /* pure red stays red, in BGR order */
  memset(src.px, 0, src.cap);
  for (size_t i = 0; i < src.cap; i += 3) src.px[i + 2] = 255;
  jpg = encode(&src, 100, &len);
  REQUIRE(jpg);
  REQUIRE(dd_image_decode(&img, jpg, len, 3, "red.jpg", err, sizeof err) == 0);
  CHECK(img.px[0] <= 2 && img.px[1] <= 2 && img.px[2] >= 253);
  free(jpg);
  free(src.px);
  dd_image_free(&img);
}

static void test_jpeg_gray_and_conversions(void) {
  dd_image g = make_image(40, 30, 1, 4), col = make_image(40, 30, 3, 4), img = {0};
  size_t len;
  uint8_t *jpg = encode(&g, 100, &len);
  REQUIRE(jpg);
  /* gray JPEG: as stored = 1 channel, near the source */
  REQUIRE(dd_image_decode(&img, jpg, len, 0, "g.jpg", err, sizeof err) == 0);
  CHECK(img.c == 1 && img.w == 40 && img.h == 30);
  double mean;
  size_t mx = max_abs_diff(img.px, g.px, 40 * 30, &mean);
  CHECKF(mx <= 2, "max %zu", mx);
  uint8_t *gray = malloc(40 * 30);
  memcpy(gray, img.px, 40 * 30);
  /* expanded to BGR: three equal channels, the same values */
  REQUIRE(dd_image_decode(&img, jpg, len, 3, "g.jpg", err, sizeof err) == 0);
  CHECK(img.c == 3);
  for (int i = 0; i < 40 * 30; i++)
    CHECK(img.px[3 * i] == gray[i] && img.px[3 * i + 1] == gray[i] && img.px[3 * i + 2] == gray[i]);
  free(jpg);
  free(gray);
  /* colour JPEG read as gray: the luma plane, which is OpenCV's weights up to JPEG rounding */
  jpg = encode(&col, 100, &len);
  REQUIRE(jpg);
  REQUIRE(dd_image_decode(&img, jpg, len, 1, "c.jpg", err, sizeof err) == 0);
  CHECK(img.c == 1);
  for (int i = 0; i < 40 * 30; i++) {
    const uint8_t *s = col.px + 3 * i;
    CHECK(abs(img.px[i] - cv_gray(s[0], s[1], s[2])) <= 2);
  }
  free(jpg);
  free(g.px);
  free(col.px);
  dd_image_free(&img);
}

/* Files our encoder does not write (4:2:0, progressive, CMYK): the result must equal TurboJPEG's
 * own decode (CMYK through OpenCV's CMYK -> BGR formula). A fresh compressor for each file:
 * libjpeg-turbo 2.1.5's tjCompress2 writes a corrupt baseline file ("bad Huffman code" on
 * decoding) when its handle made a progressive one before. */
static void test_jpeg_tj_files(void) {
  dd_image src = make_image(33, 17, 3, 2), img = {0};
  tjhandle d = tjInitDecompress();
  REQUIRE(d);
  uint8_t *ref = malloc(33 * 17 * 4);
  for (int mode = 0; mode < 3; mode++) {
    tjhandle c = tjInitCompress();
    REQUIRE(c);
    unsigned char *jpg = NULL;
    unsigned long len = 0;
    if (mode < 2) {
      REQUIRE(tjCompress2(c, src.px, 33, 0, 17, TJPF_BGR, &jpg, &len, TJSAMP_420, 85,
                          mode == 1 ? TJFLAG_PROGRESSIVE : 0) == 0);
      REQUIRE(tjDecompress2(d, jpg, len, ref, 33, 0, 17, TJPF_BGR, 0) == 0);
    } else {
      uint8_t *cmyk = malloc(33 * 17 * 4);
      for (int i = 0; i < 33 * 17 * 4; i++) cmyk[i] = (uint8_t)rnd();
      REQUIRE(tjCompress2(c, cmyk, 33, 0, 17, TJPF_CMYK, &jpg, &len, TJSAMP_444, 95, 0) == 0);
      free(cmyk);
      uint8_t *k4 = malloc(33 * 17 * 4);
      int r = tjDecompress2(d, jpg, len, k4, 33, 0, 17, TJPF_CMYK, 0);
      CHECKF(r == 0, "%s", tjGetErrorStr2(d));
      for (int i = 0; i < 33 * 17; i++) {
        const uint8_t *p = k4 + 4 * i;
        int k = p[3];
        ref[3 * i + 2] = (uint8_t)(k - ((255 - p[0]) * k >> 8));
        ref[3 * i + 1] = (uint8_t)(k - ((255 - p[1]) * k >> 8));
        ref[3 * i + 0] = (uint8_t)(k - ((255 - p[2]) * k >> 8));
      }
      free(k4);
    }
    CHECKF(dd_image_decode(&img, jpg, len, 0, "tj.jpg", err, sizeof err) == 0, "%s", err);
    CHECK(img.w == 33 && img.h == 17 && img.c == 3);
    CHECKF(memcmp(img.px, ref, 33 * 17 * 3) == 0, "mode %d", mode);
    if (mode == 0) {
      double mean;
      size_t mx = max_abs_diff(img.px, src.px, 33 * 17 * 3, &mean);
      CHECKF(mean < 4.0, "4:2:0 q85 mean error %.2f (max %zu)", mean, mx);
    }
    REQUIRE(dd_image_decode(&img, jpg, len, 1, "tj.jpg", err, sizeof err) == 0);
    CHECK(img.c == 1);
    if (mode == 2)
      for (int i = 0; i < 33 * 17; i++)
        CHECK(img.px[i] == cv_gray(ref[3 * i], ref[3 * i + 1], ref[3 * i + 2]));
    tjFree(jpg);
    tjDestroy(c);
  }
  free(ref);
  free(src.px);
  tjDestroy(d);
  dd_image_free(&img);
}

/* ---- bad input ------------------------------------------------------------------------------- */

static void test_not_an_image(void) {
  dd_image img = {0};
  CHECK(dd_image_decode(&img, NULL, 0, 3, "e", err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "e: empty file");
  const uint8_t one = 0xff;
  CHECK(dd_image_decode(&img, &one, 1, 3, "one", err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "one: not a JPEG or PNG file");
  CHECK(dd_image_decode(&img, (const uint8_t *)"GIF89a\1\0\1\0", 10, 3, "x.jpg", err,
                        sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "x.jpg: not a JPEG or PNG file (looks like GIF)");
  CHECK(dd_image_decode(&img, (const uint8_t *)"\x89PNG\r", 5, 3, NULL, err, sizeof err) ==
        DD_ECORRUPT);
  CHECK_CONTAINS(err, "image: truncated PNG");
  CHECK(dd_image_decode(&img, (const uint8_t *)"hello", 5, 2, "c2", err, sizeof err) == DD_EINVAL);
  /* JPEG magic, then no frame: TurboJPEG's header read "succeeds" with no size (was "image too
   * large: 0x0") */
  CHECK(dd_image_decode(&img, (const uint8_t *)"\xff\xd8\xff\xd9", 4, 3, "soi.jpg", err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "soi.jpg: not a valid JPEG");
  CHECK(strstr(err, "too large") == NULL);
  CHECK(dd_image_decode(&img, (const uint8_t *)"\xff\xd8\xff\xe0garbage garbage garbage", 24, 0, "g.jpg", err,
                        sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "g.jpg: not a valid JPEG");
  CHECK(img.w == 0 && img.h == 0 && img.c == 0);
  /* random bytes, bare and behind each magic number */
  uint8_t buf[600];
  for (int i = 0; i < 3000; i++) {
    size_t n = rnd() % sizeof buf + 1;
    for (size_t k = 0; k < n; k++) buf[k] = (uint8_t)rnd();
    if (i % 3 == 1 && n >= 3) memcpy(buf, "\xff\xd8\xff", 3);
    if (i % 3 == 2 && n >= 8) memcpy(buf, "\x89PNG\r\n\x1a\n", 8);
    int r = dd_image_decode(&img, buf, n, (int)(rnd() % 2) * 3, "rnd", err, sizeof err);
    CHECKF(r == DD_ECORRUPT, "input %d gave %d (%s)", i, r, err);
    if (r != DD_ECORRUPT) break;
  }
  dd_image_free(&img);
}

/* Every proper prefix of a valid file is an error; the full file still decodes after that
 * (the cached TurboJPEG handle must not stay broken after a failed header read). */
static void test_truncated_everywhere(void) {
  dd_image src = make_image(48, 40, 3, 30), img = {0};
  for (int fmt = 0; fmt < 3; fmt++) {
    size_t len;
    uint8_t *file = encode(&src, fmt == 0 ? 0 : fmt == 1 ? 90 : 75, &len);
    REQUIRE(file);
    int truncated_msgs = 0;
    for (size_t n = 0; n < len; n++) {
      uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan sees any overread */
      memcpy(copy, file, n);
      int r = dd_image_decode(&img, copy, n, fmt == 2 ? 1 : 3, "t", err, sizeof err);
      CHECKF(r == DD_ECORRUPT, "%s truncated to %zu of %zu bytes: %d", fmt ? "JPEG" : "PNG", n,
             len, r);
      truncated_msgs += strstr(err, "truncated") != NULL;
      free(copy);
      if (r != DD_ECORRUPT) break;
    }
    /* the message names the truncation once the image data has started */
    CHECKF(truncated_msgs > (int)len / 2, "%d of %zu", truncated_msgs, len);
    CHECK(dd_image_decode(&img, file, len, 3, "full", err, sizeof err) == 0);
    CHECK(img.w == 48 && img.h == 40);
    free(file);
  }
  free(src.px);
  dd_image_free(&img);
}

static void test_corrupt_bytes(void) {
  dd_image src = make_image(30, 20, 3, 40), img = {0};
  for (int fmt = 0; fmt < 2; fmt++) {
    size_t len;
    uint8_t *file = encode(&src, fmt ? 80 : 0, &len);
    REQUIRE(file);
    uint8_t *copy = malloc(len);
    int ok = 0, bad = 0;
    for (int i = 0; i < 2000; i++) {
      memcpy(copy, file, len);
      int flips = 1 + (int)(rnd() % 4);
      for (int k = 0; k < flips; k++) copy[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
      static const int chans[3] = {0, 1, 3};
      int r = dd_image_decode(&img, copy, len, chans[rnd() % 3], "flip", err, sizeof err);
      if (r == 0) {
        ok++;
        CHECK(img.w > 0 && img.h > 0 && (int64_t)img.w * img.h <= DD_IMAGE_MAX_PIXELS);
      } else {
        bad++;
        CHECKF(r == DD_ECORRUPT, "%d: %s", r, err);
        CHECK_CONTAINS(err, "flip: ");
      }
    }
    printf("  %s with bit flips: %d decoded, %d refused\n", fmt ? "JPEG" : "PNG", ok, bad);
    free(copy);
    free(file);
  }
  free(src.px);
  dd_image_free(&img);
}

static void test_bad_crc_and_huge_sizes(void) {
  dd_image img = {0};
  uint8_t raw[2 * 4] = {0, 1, 2, 3, 0, 4, 5, 6};
  bytes f = hand_png(3, 2, 8, 0, raw, sizeof raw, 1);
  REQUIRE(dd_image_decode(&img, f.b, f.n, 0, "ok.png", err, sizeof err) == 0);
  CHECK(img.px[0] == 1 && img.px[5] == 6);
  /* IHDR CRC (bytes 29..32), IDAT data: errors; the tEXt CRC: libpng drops the chunk */
  static const struct {
    size_t off;
    int ok;
    const char *msg;
  } cases[] = {{30, 0, "CRC"}, {33 + 8 + 4, 1, ""}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint8_t *c = malloc(f.n);
    memcpy(c, f.b, f.n);
    c[cases[i].off] ^= 0x40;
    int r = dd_image_decode(&img, c, f.n, 0, "crc.png", err, sizeof err);
    CHECKF(cases[i].ok ? r == 0 : r == DD_ECORRUPT, "case %zu: %d %s", i, r, err);
    if (!cases[i].ok) CHECK_CONTAINS(err, cases[i].msg);
    free(c);
  }
  /* the IDAT chunk's CRC */
  size_t idat = 0;
  for (size_t i = 8; i + 4 <= f.n; i++)
    if (memcmp(f.b + i, "IDAT", 4) == 0) idat = i;
  REQUIRE(idat);
  uint32_t n = (uint32_t)f.b[idat - 4] << 24 | (uint32_t)f.b[idat - 3] << 16 |
               (uint32_t)f.b[idat - 2] << 8 | f.b[idat - 1];
  f.b[idat + 4 + n + 2] ^= 1;
  CHECK(dd_image_decode(&img, f.b, f.n, 0, "idat.png", err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "idat.png: IDAT: CRC error");
  free(f.b);

  /* a PNG that declares 65536 x 65536 (valid CRCs) with 6 bytes of data */
  f = hand_png(65536, 65536, 8, 2, raw, sizeof raw, 0);
  CHECK(dd_image_decode(&img, f.b, f.n, 0, "huge.png", err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "huge.png: image too large: 65536x65536");
  free(f.b);
  /* and past libpng's own limit */
  f = hand_png(2000000, 1, 8, 2, raw, sizeof raw, 0);
  CHECK(dd_image_decode(&img, f.b, f.n, 0, "wide.png", err, sizeof err) == DD_ECORRUPT);
  free(f.b);
  /* a JPEG whose SOF claims 65000 x 65000 */
  dd_image src = make_image(16, 16, 3, 0);
  size_t len;
  uint8_t *jpg = encode(&src, 90, &len);
  REQUIRE(jpg);
  size_t sof = 0;
  for (size_t i = 2; i + 9 < len; i++)
    if (jpg[i] == 0xff && jpg[i + 1] == 0xc0) {
      sof = i;
      break;
    }
  REQUIRE(sof);
  jpg[sof + 5] = 0xfd, jpg[sof + 6] = 0xe8, jpg[sof + 7] = 0xfd, jpg[sof + 8] = 0xe8;
  CHECK(dd_image_decode(&img, jpg, len, 0, "huge.jpg", err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "huge.jpg: image too large: 65000x65000");
  /* 8000 x 8000 is allowed by the limit: the missing data is a truncation, not a crash */
  jpg[sof + 5] = 0x1f, jpg[sof + 6] = 0x40, jpg[sof + 7] = 0x1f, jpg[sof + 8] = 0x40;
  CHECK(dd_image_decode(&img, jpg, len, 0, "big.jpg", err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "big.jpg: truncated JPEG");
  free(jpg);
  free(src.px);
  dd_image_free(&img);
}

/* ---- buffers and threads --------------------------------------------------------------------- */

static void test_buffer_reuse(void) {
  dd_image small = make_image(8, 8, 3, 256), big = make_image(100, 80, 3, 256), img = {0};
  size_t ls, lb;
  uint8_t *ps = encode(&small, 0, &ls), *pb = encode(&big, 0, &lb);
  REQUIRE(ps && pb);
  REQUIRE(dd_image_decode(&img, pb, lb, 3, "b", err, sizeof err) == 0);
  uint8_t *px = img.px;
  size_t cap = img.cap;
  CHECK(cap >= 100 * 80 * 3);
  REQUIRE(dd_image_decode(&img, ps, ls, 3, "s", err, sizeof err) == 0);
  CHECK(img.px == px && img.cap == cap && img.w == 8);
  CHECK(memcmp(img.px, small.px, 8 * 8 * 3) == 0);
  CHECK(dd_image_decode(&img, ps, ls / 2, 3, "s", err, sizeof err) == DD_ECORRUPT);
  CHECK(img.w == 0 && img.px == px);
  REQUIRE(dd_image_decode(&img, pb, lb, 3, "b", err, sizeof err) == 0);
  CHECK(img.px == px && memcmp(img.px, big.px, 100 * 80 * 3) == 0);
  dd_image_free(&img);
  CHECK(img.px == NULL && img.cap == 0 && img.tj__ == NULL);
  dd_image_free(&img); /* twice is fine */
  /* encoder argument checks */
  uint8_t *out = NULL;
  size_t olen = 1;
  dd_image two = {.w = 2, .h = 2, .c = 2, .px = small.px};
  CHECK(dd_image_encode_png(&out, &olen, &two, err, sizeof err) == DD_EINVAL && !out && !olen);
  CHECK(dd_image_encode_jpeg(&out, &olen, &small, 0, err, sizeof err) == DD_EINVAL);
  CHECK(dd_image_encode_jpeg(&out, &olen, &small, 101, err, sizeof err) == DD_EINVAL);
  free(ps);
  free(pb);
  free(small.px);
  free(big.px);
}

typedef struct {
  const uint8_t *files[4];
  size_t lens[4];
  const dd_image *refs[4];
  int failures;
} thread_job;

static void *decode_thread(void *arg) {
  thread_job *j = arg;
  dd_image img = {0};
  char e[256];
  for (int i = 0; i < 300; i++) {
    int k = i % 4;
    /* a truncated file now and then, so failure paths run concurrently too */
    size_t len = i % 7 == 3 ? j->lens[k] / 2 : j->lens[k];
    int r = dd_image_decode(&img, j->files[k], len, 3, "mt", e, sizeof e);
    if (len != j->lens[k]) {
      if (r != DD_ECORRUPT) j->failures++;
    } else if (r != 0 || img.w != j->refs[k]->w ||
               memcmp(img.px, j->refs[k]->px, (size_t)img.w * img.h * 3) != 0) {
      j->failures++;
    }
  }
  dd_image_free(&img);
  return NULL;
}

/* Four threads decode the same PNGs and JPEGs, each into its own dd_image: every result equals
 * the single-threaded one. */
static void test_threads(void) {
  dd_image srcs[4] = {make_image(64, 64, 3, 256), make_image(31, 17, 1, 256),
                      make_image(96, 64, 3, 5), make_image(32, 32, 1, 5)};
  dd_image refs[4] = {{0}};
  thread_job job = {0};
  for (int k = 0; k < 4; k++) {
    job.files[k] = encode(&srcs[k], k < 2 ? 0 : 90, &job.lens[k]);
    REQUIRE(job.files[k]);
    REQUIRE(dd_image_decode(&refs[k], job.files[k], job.lens[k], 3, "ref", err, sizeof err) == 0);
    job.refs[k] = &refs[k];
  }
  thread_job jobs[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    jobs[i] = job;
    REQUIRE(pthread_create(&t[i], NULL, decode_thread, &jobs[i]) == 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    CHECKF(jobs[i].failures == 0, "thread %d: %d failures", i, jobs[i].failures);
  }
  for (int k = 0; k < 4; k++) {
    free((void *)job.files[k]);
    free(srcs[k].px);
    dd_image_free(&refs[k]);
  }
}

int main(void) {
  RUN(test_png_roundtrip_exact);
  RUN(test_png_handbuilt_rgb_bgr_order);
  RUN(test_png_16bit);
  RUN(test_png_palette);
  RUN(test_png_alpha_lowdepth_interlace);
  RUN(test_jpeg_q100_444);
  RUN(test_jpeg_gray_and_conversions);
  RUN(test_jpeg_tj_files);
  RUN(test_not_an_image);
  RUN(test_truncated_everywhere);
  RUN(test_corrupt_bytes);
  RUN(test_bad_crc_and_huge_sizes);
  RUN(test_buffer_reuse);
  RUN(test_threads);
  return test_summary();
}
