/* The CPU backend's kernels for inference in the blocked layout (backend.h, core/cpu/cpu_blocked.c,
 * and cpu_dnnl.c's blocked convolutions), each against an FP32 (double) reference, in bf16 where
 * this CPU has bf16 units and in FP32 where oneDNN runs the FP32 convolutions (skipped with a
 * message where not). Bounds, per operation:
 *   ReLU, blocked -> NCHW                 exact (bf16: the reference rounded to bf16 once)
 *   Scale [+ReLU], Eltwise SUM [+ReLU]    within 1e-6 of the operands' magnitude (FP32
 *                                         arithmetic), plus in bf16 one rounding of the result
 *                                         (2^-8 relative)
 *   convolution [+ReLU] (blocked in/out)  bf16: relative L2 error 1e-2 (bf16 inputs and weights,
 *                                         FP32 sums, bf16 output); FP32: 1e-5
 *   NCHW FP32 -> nChw16c bf16 (cpu_convert.c, in front of bf16 convolutions)   exact (round to
 *                                         nearest even, as oneDNN's reorder) */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "base/backend.h"
#include "cpu/cpu_dnnl.h"
#include "cpu/cpu_kernels.h"
#include "test.h"

static dd_backend *be;

static float bf2f(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static uint16_t f2bf(double d) { /* round to nearest even (no NaN here) */
  float f = (float)d;
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return (uint16_t)((u + 0x7fffu + (u >> 16 & 1u)) >> 16);
}

static float pattern(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return (float)(*s >> 8) * (2.0f / 16777216.0f) - 1.0f;
}

/* Element i of a blocked (n, c, s) buffer in bf16 or FP32, as a float. */
static float get(const void *p, int bf16, int64_t i) { return bf16 ? bf2f(((const uint16_t *)p)[i]) : ((const float *)p)[i]; }
static void put(void *p, int bf16, int64_t i, float v) {
  if (bf16) ((uint16_t *)p)[i] = f2bf(v);
  else ((float *)p)[i] = v;
}

/* |got - want| within the FP32 arithmetic's error on operands of magnitude `mag` (1e-6 mag), plus,
 * in bf16, one rounding of the result (2^-8 relative). */
static int close_to(float got, double want, double mag, int bf16) {
  double tol = (bf16 ? ldexp(fabs(want), -8) : 0) + 1e-6 * mag;
  return fabs(got - want) <= tol + 1e-30;
}

static void elementwise(int bf16) {
  const int n = 3, c = 32, s = 37; /* odd spatial size: loop tails */
  const int64_t cnt = (int64_t)n * c * s;
  size_t es = bf16 ? 2 : 4;
  void *a = be->ops->alloc(be, cnt * es), *b = be->ops->alloc(be, cnt * es), *y = be->ops->alloc(be, cnt * es);
  float *out = be->ops->alloc(be, cnt * 4), *sc = be->ops->alloc(be, c * 4), *bi = be->ops->alloc(be, c * 4);
  REQUIRE(a && b && y && out && sc && bi);
  uint32_t r = 99;
  for (int64_t i = 0; i < cnt; i++) put(a, bf16, i, 4 * pattern(&r)), put(b, bf16, i, 4 * pattern(&r));
  for (int i = 0; i < c; i++) sc[i] = 1 + pattern(&r), bi[i] = pattern(&r);
  int bad = 0;
  /* ReLU (leaky 0.25), out of place and in place */
  be->ops->blk_relu(be, bf16, cnt, y, a, 0.25f);
  for (int64_t i = 0; i < cnt; i++) {
    float x = get(a, bf16, i);
    double want = x > 0 ? x : 0.25 * x;
    bad += get(y, bf16, i) != (bf16 ? bf2f(f2bf(want)) : (float)want);
  }
  CHECKF(bad == 0, "ReLU: %d of %lld elements differ", bad, (long long)cnt);
  /* Eltwise SUM 1.5 a - 0.5 b, into a (in place) */
  void *a2 = be->ops->alloc(be, cnt * es);
  REQUIRE(a2);
  memcpy(a2, a, cnt * es);
  be->ops->blk_sum(be, bf16, cnt, a2, a2, 1.5f, b, -0.5f, 0, 0.0f);
  bad = 0;
  for (int64_t i = 0; i < cnt; i++) {
    double u = 1.5 * get(a, bf16, i), v = 0.5 * get(b, bf16, i);
    bad += !close_to(get(a2, bf16, i), u - v, fabs(u) + fabs(v), bf16);
  }
  CHECKF(bad == 0, "Eltwise SUM: %d of %lld elements off", bad, (long long)cnt);
  /* Eltwise SUM + leaky ReLU (a post-activation residual block), out of place */
  be->ops->blk_sum(be, bf16, cnt, y, a, 1.0f, b, 1.0f, 1, 0.1f);
  bad = 0;
  for (int64_t i = 0; i < cnt; i++) {
    double u = get(a, bf16, i), v = get(b, bf16, i), want = u + v > 0 ? u + v : 0.1 * (u + v);
    bad += !close_to(get(y, bf16, i), want, fabs(u) + fabs(v), bf16);
  }
  CHECKF(bad == 0, "Eltwise SUM+ReLU: %d of %lld elements off", bad, (long long)cnt);
  /* Scale + ReLU and Scale alone, per channel of the blocked layout */
  for (int relu = 0; relu < 2; relu++) {
    be->ops->blk_affine(be, bf16, n, c, s, y, a, sc, relu ? bi : NULL, relu, 0.0f);
    bad = 0;
    for (int img = 0; img < n; img++)
      for (int ch = 0; ch < c; ch++)
        for (int p = 0; p < s; p++) {
          int64_t i = (((int64_t)img * (c / 16) + ch / 16) * s + p) * 16 + ch % 16;
          double u = sc[ch] * (double)get(a, bf16, i), v = u + (relu ? bi[ch] : 0);
          if (relu && v < 0) v = 0;
          bad += !close_to(get(y, bf16, i), v, fabs(u) + (relu ? fabs(bi[ch]) : 0), bf16);
        }
    CHECKF(bad == 0, "Scale%s: %d of %lld elements off", relu ? "+ReLU" : "", bad, (long long)cnt);
  }
  /* blocked -> NCHW FP32 */
  be->ops->blk_to_nchw(be, bf16, n, c, s, out, a);
  bad = 0;
  for (int img = 0; img < n; img++)
    for (int ch = 0; ch < c; ch++)
      for (int p = 0; p < s; p++)
        bad += out[((int64_t)img * c + ch) * s + p] != get(a, bf16, (((int64_t)img * (c / 16) + ch / 16) * s + p) * 16 + ch % 16);
  CHECKF(bad == 0, "blocked -> NCHW: %d of %lld elements differ", bad, (long long)cnt);
  void *bufs[] = {a, b, y, a2, out, sc, bi};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->ops->free(be, bufs[i]);
}

/* A 3x3 stride-2 convolution + bias + leaky ReLU from NCHW FP32 into blocked, then a 1x1 one from
 * blocked into blocked, against the double reference (through NCHW). */
static void convolutions(int bf16) {
  dd_conv_desc d1 = {.n = 2, .c = 3, .h = 9, .w = 9, .out_c = 16, .out_h = 5, .out_w = 5, .kh = 3, .kw = 3, .sh = 2,
                     .sw = 2, .ph = 1, .pw = 1, .dh = 1, .dw = 1, .group = 1, .bias = 1, .precision = bf16};
  dd_conv_desc d2 = {.n = 2, .c = 16, .h = 5, .w = 5, .out_c = 32, .out_h = 5, .out_w = 5, .kh = 1, .kw = 1, .sh = 1,
                     .sw = 1, .ph = 0, .pw = 0, .dh = 1, .dw = 1, .group = 1, .bias = 0, .precision = bf16};
  if (!be->ops->conv_blk_prepare(be, &d1, bf16, 0, 1, 0.1f) || !be->ops->conv_blk_prepare(be, &d2, bf16, 1, 0, 0)) {
    printf("     %s blocked convolutions: skipped (oneDNN does not run them here)\n", bf16 ? "bf16" : "FP32");
    return;
  }
  int64_t nx = 2 * 3 * 81, n1 = 2 * 16 * 25, n2 = 2 * 32 * 25, nw1 = 16 * 3 * 9, nw2 = 32 * 16;
  size_t es = bf16 ? 2 : 4;
  float *x = be->ops->alloc(be, nx * 4), *w1 = be->ops->alloc(be, nw1 * 4), *b1 = be->ops->alloc(be, 16 * 4),
        *w2 = be->ops->alloc(be, nw2 * 4), *out = be->ops->alloc(be, n2 * 4);
  void *y1 = be->ops->alloc(be, n1 * es), *y2 = be->ops->alloc(be, n2 * es);
  REQUIRE(x && w1 && b1 && w2 && out && y1 && y2);
  uint32_t r = 5;
  for (int64_t i = 0; i < nx; i++) x[i] = pattern(&r);
  for (int64_t i = 0; i < nw1; i++) w1[i] = pattern(&r);
  for (int i = 0; i < 16; i++) b1[i] = pattern(&r);
  for (int64_t i = 0; i < nw2; i++) w2[i] = pattern(&r);
  CHECK(be->ops->conv_blk_forward(be, &d1, bf16, 0, 1, 0.1f, y1, x, w1, b1) == 0);
  CHECK(be->ops->conv_blk_forward(be, &d2, bf16, 1, 0, 0, y2, y1, w2, NULL) == 0);
  be->ops->blk_to_nchw(be, bf16, 2, 32, 25, out, y2);
  /* the reference, in double, through NCHW */
  double r1[2 * 16 * 25], r2[2 * 32 * 25];
  for (int img = 0; img < 2; img++)
    for (int o = 0; o < 16; o++)
      for (int oy = 0; oy < 5; oy++)
        for (int ox = 0; ox < 5; ox++) {
          double v = b1[o];
          for (int ci = 0; ci < 3; ci++)
            for (int ky = 0; ky < 3; ky++)
              for (int kx = 0; kx < 3; kx++) {
                int iy = oy * 2 - 1 + ky, ix = ox * 2 - 1 + kx;
                if (iy >= 0 && iy < 9 && ix >= 0 && ix < 9)
                  v += (double)w1[((o * 3 + ci) * 3 + ky) * 3 + kx] * x[((img * 3 + ci) * 9 + iy) * 9 + ix];
              }
          r1[((img * 16 + o) * 5 + oy) * 5 + ox] = v > 0 ? v : 0.1 * v;
        }
  for (int img = 0; img < 2; img++)
    for (int o = 0; o < 32; o++)
      for (int p = 0; p < 25; p++) {
        double v = 0;
        for (int ci = 0; ci < 16; ci++) v += (double)w2[o * 16 + ci] * r1[(img * 16 + ci) * 25 + p];
        r2[(img * 32 + o) * 25 + p] = v;
      }
  double num = 0, den = 0;
  for (int64_t i = 0; i < n2; i++) num += (out[i] - r2[i]) * (out[i] - r2[i]), den += r2[i] * r2[i];
  double e = sqrt(num / den), tol = bf16 ? 1e-2 : 1e-5;
  CHECKF(e < tol, "%s blocked convolutions: relative L2 error %.2e", bf16 ? "bf16" : "FP32", e);
  printf("     %s blocked convolutions (3x3 s2 + ReLU from NCHW, then 1x1 blocked): relative L2 error %.1e\n",
         bf16 ? "bf16" : "FP32", e);
  void *bufs[] = {x, w1, b1, w2, out, y1, y2};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->ops->free(be, bufs[i]);
}

static void test_bf16_blocked(void) {
  if (!dd_dnnl_bf16_available()) {
    printf("     skipped: no bf16 units here (or no oneDNN): the blocked bf16 steps never run\n");
    return;
  }
  elementwise(1);
  convolutions(1);
}

static void test_fp32_blocked(void) {
  elementwise(0); /* the elementwise kernels are the backend's own: they run everywhere */
  if (!dd_dnnl_fp32_on_dnnl()) printf("     FP32 blocked convolutions: skipped (oneDNN does not run FP32 here)\n");
  else convolutions(0);
}

/* The own conversion in front of bf16 convolutions: every element rounded to nearest even, in
 * place in the blocked layout, with a spatial size that leaves a tail of the 16-pixel blocks and
 * more rows than threads, and fewer. */
static void test_nchw_to_blk_bf16(void) {
  if (!dd_cpu_nchw_to_blk_bf16_available()) {
    printf("     skipped: no AVX512-BF16 here (oneDNN's reorder converts instead)\n");
    return;
  }
  const int shapes[][3] = {{3, 48, 37}, {1, 16, 16}, {2, 32, 5}};
  for (int k = 0; k < 3; k++) {
    int n = shapes[k][0], c = shapes[k][1], s = shapes[k][2];
    int64_t cnt = (int64_t)n * c * s;
    float *x = malloc((size_t)cnt * sizeof *x);
    uint16_t *y = malloc((size_t)cnt * sizeof *y);
    REQUIRE(x && y);
    uint32_t r = 11;
    for (int64_t i = 0; i < cnt; i++) x[i] = 1000 * pattern(&r);
    x[0] = 1.00390625f; /* a tie: 1 + 2^-8 rounds to even (1.0) */
    dd_cpu_nchw_to_blk_bf16(((dd_cpu_ctx *)be->ctx)->pool, n, c, s, y, x);
    int bad = 0;
    for (int img = 0; img < n; img++)
      for (int ch = 0; ch < c; ch++)
        for (int p = 0; p < s; p++)
          bad += y[(((int64_t)img * (c / 16) + ch / 16) * s + p) * 16 + ch % 16] != f2bf(x[((int64_t)img * c + ch) * s + p]);
    CHECKF(bad == 0, "%dx%dx%d: %d of %lld elements differ", n, c, s, bad, (long long)cnt);
    CHECK(y[0] == 0x3f80);
    free(x), free(y);
  }
}

int main(void) {
  if (dd_cpu_backend_create(&be, 2)) {
    fprintf(stderr, "no CPU backend\n");
    return 1;
  }
  RUN(test_bf16_blocked);
  RUN(test_fp32_blocked);
  RUN(test_nchw_to_blk_bf16);
  dd_cpu_backend_destroy(be);
  return test_summary();
}
