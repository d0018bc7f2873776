/* The CPU convolution (core/cpu/cpu_conv.c: batched im2col + GEMM, flipped-weight backward data,
 * col2im) against plain loops written here from the definition: forward, backward-data and
 * backward-filter (with bias), over groups, stride, pad, dilation, 1x1, odd sizes, batch 1 and 5,
 * with 1 and 2 threads. Relative L2 error under 1e-5; backward-filter must accumulate. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>

#include "base/backend.h"
#include "cpu/cpu_dnnl.h"
#include "cpu/cpu_kernels.h"
#include "test.h"

#define TOL 1e-5
/* bf16 inputs and weights (8 significant bits), FP32 accumulation: a relative L2 error of about
 * 2^-9 per product, averaged down over the sums */
#define TOL_BF16 1e-2

static int n_dnnl, n_own, n_bf16; /* cases per implementation */

typedef struct {
  const char *what;
  int n, c, h, w, oc, kh, kw, sh, sw, ph, pw, dh, dw, group;
} conv_case;

static const conv_case cases[] = {
    {"3x3 s1 p1 (WRN block)", 5, 8, 8, 8, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {"3x3 s1 p1 batch 1", 1, 16, 32, 32, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {"3x3 s1 p1 odd sizes", 5, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {"3x3 s2 p1", 5, 6, 9, 11, 7, 3, 3, 2, 2, 1, 1, 1, 1, 1},
    {"1x1 s1", 5, 12, 5, 6, 10, 1, 1, 1, 1, 0, 0, 1, 1, 1},
    {"1x1 s2 (projection)", 5, 8, 9, 8, 12, 1, 1, 2, 2, 0, 0, 1, 1, 1},
    /* a WRN projection: Caffe's floor leaves the last row and column unread (right pad -1) */
    {"1x1 s2, even size (WRN projection)", 5, 16, 8, 8, 32, 1, 1, 2, 2, 0, 0, 1, 1, 1},
    {"1x1 s1 batch 1", 1, 7, 3, 3, 5, 1, 1, 1, 1, 0, 0, 1, 1, 1},
    {"groups 2, 3x3 s1 p1", 5, 8, 6, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2},
    {"groups 4 depthwise-like, 3x3 s2 p1", 5, 4, 9, 9, 8, 3, 3, 2, 2, 1, 1, 1, 1, 4},
    {"groups 3, 1x1", 5, 6, 4, 5, 9, 1, 1, 1, 1, 0, 0, 1, 1, 3},
    {"dilation 2, 3x3 s1 p2", 5, 4, 10, 9, 6, 3, 3, 1, 1, 2, 2, 2, 2, 1},
    {"dilation 2 no pad", 1, 3, 11, 12, 4, 3, 3, 1, 1, 0, 0, 2, 2, 1},
    {"5x3 kernel, pads 2/0, strides 1/2", 5, 3, 12, 10, 4, 5, 3, 1, 2, 2, 0, 1, 1, 1},
    {"3x3 s1 p0 (valid)", 5, 5, 8, 7, 3, 3, 3, 1, 1, 0, 0, 1, 1, 1},
    {"3x3 s1 p2 (larger than same)", 1, 3, 5, 5, 4, 3, 3, 1, 1, 2, 2, 1, 1, 1},
    {"2x2 s1 p1 (even kernel)", 5, 3, 6, 5, 4, 2, 2, 1, 1, 1, 1, 1, 1, 1},
    {"7x7 s2 p3", 1, 3, 15, 13, 4, 7, 7, 2, 2, 3, 3, 1, 1, 1},
    {"8x8 images, 64 channels (batched GEMM)", 5, 64, 8, 8, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {"1x1 kernel with pad 1", 5, 3, 4, 4, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    /* >= 32 input channels per group: backward data as the flipped convolution (GEMM) */
    {"groups 2, 64 channels, 3x3 s1 p1 (flipped)", 5, 64, 6, 7, 16, 3, 3, 1, 1, 1, 1, 1, 1, 2},
    {"dilation 2, 32 channels (flipped)", 2, 32, 9, 10, 8, 3, 3, 1, 1, 2, 2, 2, 2, 1},
    {"5x3 kernel, 32 channels, pads 2/1 (flipped)", 2, 32, 7, 9, 4, 5, 3, 1, 1, 2, 1, 1, 1, 1},
    {"3x3 p0, 32 channels, odd sizes (flipped)", 3, 32, 8, 7, 5, 3, 3, 1, 1, 0, 0, 1, 1, 1},
    {"3x3 s1 p1, 32x32 images batch 5 (flipped)", 5, 32, 32, 32, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    /* >= 32 input and output channels per group, stride 1: the direct AVX-512 kernel (forward,
     * and backward data as its flipped convolution) where the CPU has it */
    {"direct: 3x3 s1 p1 32x32 images", 5, 32, 32, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {"direct: 3x3 s1 p1 batch 1, 8x8, 64 -> 40 channels", 1, 64, 8, 8, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {"direct: groups 2, 64 -> 72 channels", 5, 64, 6, 7, 72, 3, 3, 1, 1, 1, 1, 1, 1, 2},
    {"direct: dilation 2, pad 2", 2, 32, 9, 10, 36, 3, 3, 1, 1, 2, 2, 2, 2, 1},
    {"direct: 5x3 kernel, pads 2/1", 2, 33, 7, 9, 35, 5, 3, 1, 1, 2, 1, 1, 1, 1},
    {"direct: 3x3 p0, odd sizes", 3, 32, 8, 7, 33, 3, 3, 1, 1, 0, 0, 1, 1, 1},
    {"direct: 3x3 p2 (output larger than input)", 2, 32, 5, 6, 32, 3, 3, 1, 1, 2, 2, 1, 1, 1},
    {"direct: 3x3 s2 falls back to GEMM", 2, 32, 9, 9, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1},
};

static double rel_err(const float *a, const double *ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = a[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

static float pattern(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return (float)(*s >> 8) * (2.0f / 16777216.0f) - 1.0f;
}

/* The definition, in double: y[n][o][i][j] = bias[o] + sum over c in o's group, ki, kj of
 * x[n][c][i * sh - ph + ki * dh][j * sw - pw + kj * dw] * w[o][c - g0][ki][kj]. The backward
 * passes are its adjoints, accumulated along the same loops. */
static void reference(const dd_conv_desc *d, const float *x, const float *w, const float *bias,
                      const float *dy, double *y, double *dx, double *dw, double *db) {
  int cg = d->c / d->group, ocg = d->out_c / d->group;
  for (int n = 0; n < d->n; n++)
    for (int o = 0; o < d->out_c; o++) {
      int g = o / ocg;
      for (int i = 0; i < d->out_h; i++)
        for (int j = 0; j < d->out_w; j++) {
          int64_t yi = (((int64_t)n * d->out_c + o) * d->out_h + i) * d->out_w + j;
          double s = bias ? bias[o] : 0.0, gy = dy[yi];
          db[o] += gy;
          for (int c = 0; c < cg; c++)
            for (int ki = 0; ki < d->kh; ki++)
              for (int kj = 0; kj < d->kw; kj++) {
                int ih = i * d->sh - d->ph + ki * d->dh, iw = j * d->sw - d->pw + kj * d->dw;
                if (ih < 0 || ih >= d->h || iw < 0 || iw >= d->w) continue;
                int64_t xi = (((int64_t)n * d->c + g * cg + c) * d->h + ih) * d->w + iw;
                int64_t wi = (((int64_t)o * cg + c) * d->kh + ki) * d->kw + kj;
                s += (double)x[xi] * w[wi];
                dx[xi] += gy * w[wi];
                dw[wi] += gy * x[xi];
              }
          y[yi] = s;
        }
    }
}

/* One case on a fresh backend. `precision` 1 asks for bf16. With the bias announced in the
 * descriptor (d.bias) oneDNN runs every call it has a primitive for; calls that disagree with the
 * descriptor (no bias given) take the own kernels, which must agree too. With 1 and 3 threads the
 * descriptor promises keep_input (backward-filter reads the forward's converted x), with 2 not. */
static void run_case(const conv_case *cc, int threads, int precision) {
  dd_backend *be;
  REQUIRE(dd_cpu_backend_create(&be, threads) == 0);
  int oh = (cc->h + 2 * cc->ph - (cc->dh * (cc->kh - 1) + 1)) / cc->sh + 1;
  int ow = (cc->w + 2 * cc->pw - (cc->dw * (cc->kw - 1) + 1)) / cc->sw + 1;
  dd_conv_desc d = {.n = cc->n, .c = cc->c, .h = cc->h, .w = cc->w, .out_c = cc->oc, .out_h = oh, .out_w = ow,
                    .kh = cc->kh, .kw = cc->kw, .sh = cc->sh, .sw = cc->sw, .ph = cc->ph, .pw = cc->pw,
                    .dh = cc->dh, .dw = cc->dw, .group = cc->group, .bias = 1, .precision = precision,
                    .keep_input = threads != 2};
  int64_t nx = (int64_t)d.n * d.c * d.h * d.w, ny = (int64_t)d.n * d.out_c * oh * ow,
          nw = (int64_t)d.out_c * (d.c / d.group) * d.kh * d.kw;
  float *x = be->ops->alloc(be, nx * 4), *dx = be->ops->alloc(be, nx * 4), *y = be->ops->alloc(be, ny * 4),
        *dy = be->ops->alloc(be, ny * 4), *w = be->ops->alloc(be, nw * 4), *dw = be->ops->alloc(be, nw * 4),
        *b = be->ops->alloc(be, d.out_c * 4), *db = be->ops->alloc(be, d.out_c * 4);
  void *ws = be->ops->alloc(be, be->ops->conv_workspace(be, &d));
  double *ry = calloc(ny, 8), *rdx = calloc(nx, 8), *rdw = calloc(nw, 8), *rdb = calloc(d.out_c, 8);
  REQUIRE(x && dx && y && dy && w && dw && b && db && ws && ry && rdx && rdw && rdb);
  uint32_t s = 42;
  for (int64_t i = 0; i < nx; i++) x[i] = pattern(&s);
  for (int64_t i = 0; i < ny; i++) dy[i] = pattern(&s);
  for (int64_t i = 0; i < nw; i++) w[i] = pattern(&s);
  for (int i = 0; i < d.out_c; i++) b[i] = pattern(&s);
  /* backward-filter accumulates: start dw and db from known values, added to the reference */
  for (int64_t i = 0; i < nw; i++) rdw[i] = dw[i] = 0.5f;
  for (int i = 0; i < d.out_c; i++) rdb[i] = db[i] = -0.25f;
  for (int64_t i = 0; i < nx; i++) dx[i] = 123.0f; /* overwritten, not accumulated */
  reference(&d, x, w, b, dy, ry, rdx, rdw, rdb);
  /* oneDNN runs every pass of a bf16 convolution, and of an FP32 one with DD_DNNL=all
   * (test_conv_kernels_dnnl_all); FP32 otherwise runs on the own kernels */
  const char *impl = dd_dnnl_conv_impl(((dd_cpu_ctx *)be->ctx)->dnnl, &d);
  int bf16 = impl && strstr(impl, "bf16") != NULL;
  double tol = bf16 ? TOL_BF16 : TOL;
  if (threads == 1) {
    n_dnnl += impl != NULL;
    n_own += impl == NULL;
    n_bf16 += bf16;
  }

  be->ops->conv_forward(be, &d, y, x, w, b, ws);
  be->ops->conv_backward_filter(be, &d, dw, db, dy, x, ws);
  be->ops->conv_backward_data(be, &d, dx, dy, w, ws);
  double ey = rel_err(y, ry, ny), edx = rel_err(dx, rdx, nx), edw = rel_err(dw, rdw, nw),
         edb = rel_err(db, rdb, d.out_c);
  const char *who = impl ? impl : "own kernels";
  CHECKF(ey < tol, "%s, %d thread(s), %s: forward relative error %.3g", cc->what, threads, who, ey);
  CHECKF(edx < tol, "%s, %d thread(s), %s: backward-data relative error %.3g", cc->what, threads, who, edx);
  CHECKF(edw < tol, "%s, %d thread(s), %s: backward-filter relative error %.3g", cc->what, threads, who, edw);
  CHECKF(edb < tol, "%s, %d thread(s), %s: bias gradient relative error %.3g", cc->what, threads, who, edb);
  if (threads == 1 && precision)
    printf("     %-44s %-28s fwd %.1e  bwd-data %.1e  bwd-filter %.1e\n", cc->what, who, ey, edx, edw);
  /* without bias, and with NULL dw (bias gradient only) */
  be->ops->conv_forward(be, &d, y, x, w, NULL, ws);
  for (int64_t i = 0; i < ny; i++) ry[i] -= b[i / ((int64_t)oh * ow) % d.out_c];
  ey = rel_err(y, ry, ny);
  CHECKF(ey < TOL, "%s, %d thread(s): forward without bias relative error %.3g", cc->what, threads, ey);
  be->ops->conv_backward_filter(be, &d, NULL, db, dy, x, ws);
  for (int i = 0; i < d.out_c; i++) rdb[i] = 2 * rdb[i] + 0.25;
  edb = rel_err(db, rdb, d.out_c);
  CHECKF(edb < tol, "%s, %d thread(s): bias-only gradient relative error %.3g", cc->what, threads, edb);

  free(ry);
  free(rdx);
  free(rdw);
  free(rdb);
  float *bufs[] = {x, dx, y, dy, w, dw, b, db};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->ops->free(be, bufs[i]);
  be->ops->free(be, ws);
  dd_cpu_backend_destroy(be);
}

static void test_conv_one_thread(void) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 1, 0);
  /* where oneDNN runs FP32 (DD_DNNL=all, or by default on AVX-512), oneDNN must be what runs
   * (else this run would check the own kernels again); elsewhere (DD_DNNL=own, AVX2) the own */
  char why[256];
  const char *mode = getenv("DD_DNNL");
  int have = dd_dnnl_load(why, sizeof why) == 0, on = dd_dnnl_fp32_on_dnnl();
  printf("     %s%s%s: %d cases on oneDNN, %d on the own kernels\n", have ? dd_dnnl_describe() : why,
         mode ? " DD_DNNL=" : "", mode ? mode : "", n_dnnl, n_own);
  if (mode && !strcmp(mode, "all")) CHECK(!have || on);
  if (mode && !strcmp(mode, "own")) CHECK(!on);
  if (have && on) CHECKF(n_dnnl * 4 >= n_own * 3, "only %d of %d cases ran on oneDNN", n_dnnl, n_dnnl + n_own);
  else CHECK(n_dnnl == 0);
}

static void test_conv_two_threads(void) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 2, 0);
}

/* Three threads on batch 5 and 1: uneven shares, and more threads than images. */
static void test_conv_three_threads(void) {
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 3, 0);
}

/* bf16 (precision 1): oneDNN's bf16 kernels where this CPU has them (AVX512-BF16, AMX, or
 * oneDNN's AVX-512 emulation), within TOL_BF16; elsewhere the same FP32 paths as above. */
static void test_conv_bf16(void) {
  n_dnnl = n_own = n_bf16 = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 1, 1);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 2, 1);
  if (!n_bf16) printf("     skipped: no bf16 convolution here (no bf16 units, or DD_BF16=off): bf16 ran as FP32\n");
  else printf("     %d of %d cases in bf16\n", n_bf16, n_dnnl + n_own);
  /* where oneDNN has bf16 kernels, every case here has one (none falls back to FP32 quietly) */
  if (n_bf16) CHECKF(n_bf16 == n_dnnl + n_own, "only %d of %d cases ran in bf16", n_bf16, n_dnnl + n_own);
}

/* Whether /proc/cpuinfo lists `flag` (-1: no /proc/cpuinfo). */
static int cpu_flag(const char *flag) {
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return -1;
  char line[8192];
  int found = 0;
  size_t n = strlen(flag);
  while (!found && fgets(line, sizeof line, f)) {
    if (strncmp(line, "flags", 5)) continue;
    for (char *p = strstr(line, flag); p && !found; p = strstr(p + 1, flag))
      found = (p == line || p[-1] == ' ' || p[-1] == '\t') && (p[n] == ' ' || p[n] == '\n' || p[n] == 0);
    break; /* one CPU's flags */
  }
  fclose(f);
  return found;
}

/* The bf16 path is the one DD_BF16 asks for, on the hardware this CPU has: bf16 on AMX where it
 * has AMX (unless capped at AVX512-BF16, or the kernel refused the tile permission), on
 * AVX512-BF16 where it has that, FP32 where it has neither or DD_BF16=off. Each path is checked
 * where the CPU has it and skipped with a message where not. */
static void test_bf16_path(void) {
  char why[256];
  if (dd_dnnl_load(why, sizeof why)) {
    printf("     skipped: %s\n", why);
    return;
  }
  const char *want = getenv("DD_BF16"), *desc = dd_dnnl_describe();
  int amx = cpu_flag("amx_bf16") == 1 && cpu_flag("amx_tile") == 1, avx = cpu_flag("avx512_bf16") == 1;
  int off = want && !strcmp(want, "off"), capped = want && !strcmp(want, "avx512_bf16");
  printf("     %s (CPU: AMX %s, AVX512-BF16 %s; DD_BF16=%s)\n", desc, amx ? "yes" : "no", avx ? "yes" : "no",
         want ? want : "");
  CHECKF(dd_dnnl_bf16_available() == (!off && (amx || avx)), "bf16 available %d", dd_dnnl_bf16_available());
  if (off) CHECK(strstr(desc, "bf16 off") != NULL);
  else if (amx && !capped && !strstr(desc, "refused")) CHECK(strstr(desc, "bf16 on AMX") != NULL);
  else if (amx || avx) CHECK(strstr(desc, "bf16 on AVX512-BF16") != NULL);
  else CHECK(strstr(desc, "runs FP32") != NULL);
  if (!amx) printf("     the AMX path: skipped, this CPU has no AMX\n");
  if (!avx && !amx) printf("     the AVX512-BF16 path: skipped, this CPU has no AVX512-BF16\n");
  /* and the kernels a bf16 convolution gets say the same */
  dd_backend *be;
  REQUIRE(dd_cpu_backend_create(&be, 1) == 0);
  dd_conv_desc d = {.n = 2, .c = 16, .h = 8, .w = 8, .out_c = 16, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1,
                    .pw = 1, .dh = 1, .dw = 1, .group = 1, .out_h = 8, .out_w = 8, .precision = 1};
  (void)be->ops->conv_workspace(be, &d);
  const char *impl = be->ops->conv_impl(be, &d);
  printf("     a bf16 3x3 convolution runs on: %s\n", impl);
  CHECK((strstr(impl, "bf16") != NULL) == dd_dnnl_bf16_available());
  if (capped) CHECK(strstr(impl, "amx") == NULL);
  dd_cpu_backend_destroy(be);
}

/* keep_input: two layers of one shape, each with its workspace; the second's forward runs between
 * the first's forward and its backward-filter, which must still read the first's x. */
static void test_kept_input_per_layer(void) {
  dd_backend *be;
  REQUIRE(dd_cpu_backend_create(&be, 2) == 0);
  dd_conv_desc d = {.n = 4, .c = 16, .h = 8, .w = 8, .out_c = 16, .out_h = 8, .out_w = 8, .kh = 3, .kw = 3, .sh = 1,
                    .sw = 1, .ph = 1, .pw = 1, .dh = 1, .dw = 1, .group = 1, .bias = 0, .precision = 1, .keep_input = 1};
  size_t wsb = be->ops->conv_workspace(be, &d);
  size_t kept = dd_dnnl_conv_kept_bytes(((dd_cpu_ctx *)be->ctx)->dnnl, &d);
  const char *impl = be->ops->conv_impl(be, &d);
  printf("     %s: %zu bytes of converted input kept per layer\n", impl, kept);
  if (!kept) {
    printf("     skipped: oneDNN keeps nothing here (no bf16 units, or no oneDNN)\n");
    dd_cpu_backend_destroy(be);
    return;
  }
  int64_t nx = 4 * 16 * 64, nw = 16 * 16 * 9;
  float *x1 = be->ops->alloc(be, nx * 4), *x2 = be->ops->alloc(be, nx * 4), *y = be->ops->alloc(be, nx * 4),
        *dy = be->ops->alloc(be, nx * 4), *dx = be->ops->alloc(be, nx * 4), *w = be->ops->alloc(be, nw * 4),
        *dw = be->ops->alloc(be, nw * 4);
  void *ws1 = be->ops->alloc(be, wsb), *ws2 = be->ops->alloc(be, wsb);
  double *ry = calloc(nx, 8), *rdx = calloc(nx, 8), *rdw = calloc(nw, 8), rdb[16];
  REQUIRE(x1 && x2 && y && dy && dx && w && dw && ws1 && ws2 && ry && rdx && rdw);
  uint32_t s = 7;
  for (int64_t i = 0; i < nx; i++) x1[i] = pattern(&s), x2[i] = pattern(&s), dy[i] = pattern(&s);
  for (int64_t i = 0; i < nw; i++) w[i] = pattern(&s);
  reference(&d, x1, w, NULL, dy, ry, rdx, rdw, rdb);
  be->ops->conv_forward(be, &d, y, x1, w, NULL, ws1); /* layer 1 */
  be->ops->conv_forward(be, &d, y, x2, w, NULL, ws2); /* layer 2, same shape */
  be->ops->conv_backward_filter(be, &d, dw, NULL, dy, x1, ws1);
  be->ops->conv_backward_data(be, &d, dx, dy, w, ws1);
  double edw = rel_err(dw, rdw, nw), edx = rel_err(dx, rdx, nx);
  CHECKF(edw < TOL_BF16, "layer 1's weight gradient relative error %.3g (read layer 2's input?)", edw);
  CHECKF(edx < TOL_BF16, "backward-data relative error %.3g", edx);
  /* backward-data with another dy after backward-filter: converts its own */
  for (int64_t i = 0; i < nx; i++) dy[i] = -dy[i];
  be->ops->conv_backward_data(be, &d, dx, dy, w, ws1);
  for (int64_t i = 0; i < nx; i++) rdx[i] = -rdx[i];
  edx = rel_err(dx, rdx, nx);
  CHECKF(edx < TOL_BF16, "backward-data after a change of dy: relative error %.3g", edx);
  printf("     weight gradient %.1e, input gradient %.1e\n", edw, edx);
  float *bufs[] = {x1, x2, y, dy, dx, w, dw};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->ops->free(be, bufs[i]);
  be->ops->free(be, ws1);
  be->ops->free(be, ws2);
  free(ry), free(rdx), free(rdw);
  dd_cpu_backend_destroy(be);
}

int main(void) {
  RUN(test_conv_one_thread);
  RUN(test_conv_two_threads);
  RUN(test_conv_three_threads);
  RUN(test_conv_bf16);
  RUN(test_bf16_path);
  RUN(test_kept_input_per_layer);
  return test_summary();
}
