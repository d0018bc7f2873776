/* Every operation of the CUDA backend against the CPU backend (the reference), on fresh random
 * inputs: outputs must agree within a relative error of 1e-4 (FP32). Outputs that an operation
 * overwrites are poisoned with NaN first on the GPU side, so an element the GPU never writes
 * shows as a mismatch; outputs that accumulate start from the same random values on both sides.
 * Host-returned values (dot, asum, losses, accuracy counts) are compared too.
 *
 * Needs a CUDA build and a device: without one every test prints SKIP and passes (ctest label
 * gpu). The device check script (scripts/device_check.sh) runs it on a GPU machine. */
#define _POSIX_C_SOURCE 200809L
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/backend.h"
#include "devices/devices.h"
#include "base/rng.h"
#include "test.h"

static dd_backend *cpu, *gpu;
static dd_rng rng;
static const double RTOL = 1e-4;

/* ---- helpers ------------------------------------------------------------------------------------- */

static float *host_rand(int64_t n, float lo, float hi) {
  float *h = malloc((size_t)(n ? n : 1) * sizeof *h);
  for (int64_t i = 0; i < n; i++) h[i] = lo + (hi - lo) * (float)(dd_rng_next(&rng) >> 11) * (float)(1.0 / 9007199254740992.0);
  return h;
}

/* A pair of buffers holding the same host values on the CPU and the GPU backend. */
typedef struct {
  float *c, *g;
  int64_t n;
} pair;

static pair pair_from(const float *h, int64_t n) {
  pair p = {cpu->ops->alloc(cpu, (size_t)(n ? n : 1) * sizeof(float)), gpu->ops->alloc(gpu, (size_t)(n ? n : 1) * sizeof(float)), n};
  if (n) {
    cpu->ops->upload(cpu, p.c, h, (size_t)n * sizeof(float));
    gpu->ops->upload(gpu, p.g, h, (size_t)n * sizeof(float));
  }
  return p;
}

static pair pair_rand(int64_t n, float lo, float hi) {
  float *h = host_rand(n, lo, hi);
  pair p = pair_from(h, n);
  free(h);
  return p;
}

/* An output: the GPU side starts as NaN (the CPU side as zeros), so unwritten elements show. */
static pair pair_poisoned(int64_t n) {
  float *h = malloc((size_t)(n ? n : 1) * sizeof *h);
  for (int64_t i = 0; i < n; i++) h[i] = NAN;
  pair p = {cpu->ops->alloc(cpu, (size_t)(n ? n : 1) * sizeof(float)), gpu->ops->alloc(gpu, (size_t)(n ? n : 1) * sizeof(float)), n};
  if (n) gpu->ops->upload(gpu, p.g, h, (size_t)n * sizeof(float));
  free(h);
  return p;
}

static void pair_free(pair *p) {
  cpu->ops->free(cpu, p->c);
  gpu->ops->free(gpu, p->g);
}

/* Max |gpu - cpu| / max(|cpu|max, tiny) over the buffer; NaN anywhere counts as infinite. */
static double pair_err(const pair *p) {
  float *a = malloc((size_t)(p->n ? p->n : 1) * sizeof *a), *b = malloc((size_t)(p->n ? p->n : 1) * sizeof *b);
  cpu->ops->download(cpu, a, p->c, (size_t)p->n * sizeof(float));
  gpu->ops->download(gpu, b, p->g, (size_t)p->n * sizeof(float));
  double scale = 1e-6, diff = 0;
  for (int64_t i = 0; i < p->n; i++) scale = fmax(scale, fabs(a[i]));
  for (int64_t i = 0; i < p->n; i++) {
    if (isnan(b[i]) != isnan(a[i])) {
      diff = INFINITY;
      break;
    }
    if (!isnan(a[i])) diff = fmax(diff, fabs((double)a[i] - b[i]));
  }
  free(a);
  free(b);
  return diff / scale;
}

#define CHECK_PAIR(p, what)                                                     \
  do {                                                                          \
    double e_ = pair_err(&(p));                                                 \
    CHECKF(e_ <= RTOL, "%s: relative error %.3g (bound %.0e)", (what), e_, RTOL); \
  } while (0)

static void check_scalar(double c, double g, const char *what) {
  double e = fabs(c - g) / fmax(1e-6, fabs(c));
  CHECKF(e <= RTOL, "%s: cpu %.9g gpu %.9g (relative error %.3g)", what, c, g, e);
}

static int gpu_ok(void) {
  char msg[600];
  if (gpu->ops->status && gpu->ops->status(gpu, msg, sizeof msg)) {
    fprintf(stderr, "%s\n", msg);
    return 0;
  }
  return 1;
}

#define NEED_GPU()                     \
  do {                                 \
    if (!gpu) {                        \
      printf("SKIP %s\n", test__name); \
      return;                          \
    }                                  \
  } while (0)

/* ---- BLAS-like -------------------------------------------------------------------------------------- */

static void test_gemm(void) {
  NEED_GPU();
  const int shapes[][3] = {{64, 128, 576}, {1, 10, 64}, {100, 1, 7}, {33, 17, 5}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        pair a = pair_rand((int64_t)m * k, -1, 1), b = pair_rand((int64_t)k * n, -1, 1), c = pair_rand((int64_t)m * n, -1, 1);
        cpu->ops->gemm(cpu, ta, tb, m, n, k, 0.7f, a.c, b.c, 0.3f, c.c);
        gpu->ops->gemm(gpu, ta, tb, m, n, k, 0.7f, a.g, b.g, 0.3f, c.g);
        char what[64];
        snprintf(what, sizeof what, "gemm %dx%dx%d ta %d tb %d", m, n, k, ta, tb);
        CHECK_PAIR(c, what);
        pair_free(&a), pair_free(&b), pair_free(&c);
      }
  CHECK(gpu_ok());
}

static void test_blas1(void) {
  NEED_GPU();
  const int64_t n = 100003;
  pair x = pair_rand(n, -2, 2), y = pair_rand(n, -2, 2), z = pair_poisoned(n);
  cpu->ops->axpby(cpu, n, 0.5f, x.c, -1.5f, y.c);
  gpu->ops->axpby(gpu, n, 0.5f, x.g, -1.5f, y.g);
  CHECK_PAIR(y, "axpby");
  cpu->ops->scale(cpu, n, 3.0f, x.c, z.c);
  gpu->ops->scale(gpu, n, 3.0f, x.g, z.g);
  CHECK_PAIR(z, "scale");
  cpu->ops->fill(cpu, z.c, 2.5f, n);
  gpu->ops->fill(gpu, z.g, 2.5f, n);
  CHECK_PAIR(z, "fill");
  check_scalar(cpu->ops->dot(cpu, n, x.c, y.c), gpu->ops->dot(gpu, n, x.g, y.g), "dot");
  check_scalar(cpu->ops->asum(cpu, n, x.c), gpu->ops->asum(gpu, n, x.g), "asum");
  /* deterministic: the same reduction twice gives the same bits */
  double d1 = gpu->ops->dot(gpu, n, x.g, y.g), d2 = gpu->ops->dot(gpu, n, x.g, y.g);
  CHECK(memcmp(&d1, &d2, sizeof d1) == 0);
  pair_free(&x), pair_free(&y), pair_free(&z);
  CHECK(gpu_ok());
}

/* ---- convolution ------------------------------------------------------------------------------------- */

static void conv_case(dd_conv_desc d, int with_bias) {
  int64_t nx = (int64_t)d.n * d.c * d.h * d.w, ny = (int64_t)d.n * d.out_c * d.out_h * d.out_w;
  int64_t nw = (int64_t)d.out_c * (d.c / d.group) * d.kh * d.kw;
  size_t wsc = cpu->ops->conv_workspace(cpu, &d), wsg = gpu->ops->conv_workspace(gpu, &d);
  void *wc = wsc ? cpu->ops->alloc(cpu, wsc) : NULL, *wg = wsg ? gpu->ops->alloc(gpu, wsg) : NULL;
  pair x = pair_rand(nx, -1, 1), w = pair_rand(nw, -0.5f, 0.5f), b = pair_rand(d.out_c, -1, 1), y = pair_poisoned(ny);
  pair dy = pair_rand(ny, -1, 1), dx = pair_poisoned(nx), dw = pair_rand(nw, -1, 1), db = pair_rand(d.out_c, -1, 1);
  char what[128];
  snprintf(what, sizeof what, "conv %dx%dx%dx%d -> %d k%dx%d s%d p%d d%d g%d", d.n, d.c, d.h, d.w, d.out_c, d.kh, d.kw, d.sh,
           d.ph, d.dh, d.group);
  cpu->ops->conv_forward(cpu, &d, y.c, x.c, w.c, with_bias ? b.c : NULL, wc);
  gpu->ops->conv_forward(gpu, &d, y.g, x.g, w.g, with_bias ? b.g : NULL, wg);
  CHECKF(pair_err(&y) <= RTOL, "%s forward: %.3g", what, pair_err(&y));
  cpu->ops->conv_backward_data(cpu, &d, dx.c, dy.c, w.c, wc);
  gpu->ops->conv_backward_data(gpu, &d, dx.g, dy.g, w.g, wg);
  CHECKF(pair_err(&dx) <= RTOL, "%s backward data: %.3g", what, pair_err(&dx));
  cpu->ops->conv_backward_filter(cpu, &d, dw.c, db.c, dy.c, x.c, wc);
  gpu->ops->conv_backward_filter(gpu, &d, dw.g, db.g, dy.g, x.g, wg);
  CHECKF(pair_err(&dw) <= RTOL, "%s backward filter: %.3g", what, pair_err(&dw));
  CHECKF(pair_err(&db) <= RTOL, "%s backward bias: %.3g", what, pair_err(&db));
  /* the algorithms chosen, named; timed where DD_CUDNN_ALGO=measure asks (cuda/conv.cu) */
  const char *impl = gpu->ops->conv_impl(gpu, &d), *mode = getenv("DD_CUDNN_ALGO");
  printf("     %s: %s\n", what, impl);
  CHECKF(strstr(impl, "cuDNN") && strstr(impl, mode && !strcmp(mode, "measure") ? ", timed" : ", heuristic"),
         "%s: algorithms %s", what, impl);
  pair_free(&x), pair_free(&w), pair_free(&b), pair_free(&y), pair_free(&dy), pair_free(&dx), pair_free(&dw), pair_free(&db);
  if (wc) cpu->ops->free(cpu, wc);
  if (wg) gpu->ops->free(gpu, wg);
}

static dd_conv_desc conv_desc(int n, int c, int h, int w, int oc, int k, int s, int p, int dil, int g) {
  dd_conv_desc d = {.n = n, .c = c, .h = h, .w = w, .out_c = oc, .kh = k, .kw = k, .sh = s, .sw = s, .ph = p, .pw = p,
                    .dh = dil, .dw = dil, .group = g};
  d.out_h = (h + 2 * p - (dil * (k - 1) + 1)) / s + 1;
  d.out_w = (w + 2 * p - (dil * (k - 1) + 1)) / s + 1;
  return d;
}

static void test_conv(void) {
  NEED_GPU();
  conv_case(conv_desc(4, 16, 32, 32, 32, 3, 1, 1, 1, 1), 0);  /* WRN 3x3 */
  conv_case(conv_desc(4, 32, 32, 32, 64, 3, 2, 1, 1, 1), 0);  /* strided */
  conv_case(conv_desc(4, 32, 16, 16, 64, 1, 2, 0, 1, 1), 1);  /* 1x1 shortcut, bias */
  conv_case(conv_desc(2, 3, 28, 28, 16, 3, 1, 1, 1, 1), 1);   /* first layer */
  conv_case(conv_desc(2, 8, 9, 11, 8, 3, 1, 2, 2, 2), 1);     /* dilation, groups, odd sizes */
  CHECK(gpu_ok());
}

/* ---- pooling, BatchNorm, channel affine ------------------------------------------------------------- */

static void test_pool(void) {
  NEED_GPU();
  for (int method = 0; method < 2; method++) {
    dd_pool_desc d = {.n = 3, .c = 5, .h = 13, .w = 11, .kh = 3, .kw = 3, .sh = 2, .sw = 2, .ph = 1, .pw = 1, .method = method};
    /* Caffe: ceil mode, the last window must start inside the padded-free input */
    d.out_h = (int)ceil((double)(d.h + 2 * d.ph - d.kh) / d.sh) + 1;
    d.out_w = (int)ceil((double)(d.w + 2 * d.pw - d.kw) / d.sw) + 1;
    if ((d.out_h - 1) * d.sh >= d.h + d.ph) d.out_h--;
    if ((d.out_w - 1) * d.sw >= d.w + d.pw) d.out_w--;
    int64_t nx = (int64_t)d.n * d.c * d.h * d.w, ny = (int64_t)d.n * d.c * d.out_h * d.out_w;
    pair x = pair_rand(nx, -1, 1), y = pair_poisoned(ny), dy = pair_rand(ny, -1, 1), dx = pair_poisoned(nx);
    int32_t *mc = method == 0 ? cpu->ops->alloc(cpu, (size_t)ny * 4) : NULL, *mg = method == 0 ? gpu->ops->alloc(gpu, (size_t)ny * 4) : NULL;
    cpu->ops->pool_forward(cpu, &d, y.c, mc, x.c);
    gpu->ops->pool_forward(gpu, &d, y.g, mg, x.g);
    CHECK_PAIR(y, method ? "pool AVE forward" : "pool MAX forward");
    cpu->ops->pool_backward(cpu, &d, dx.c, dy.c, mc);
    gpu->ops->pool_backward(gpu, &d, dx.g, dy.g, mg);
    CHECK_PAIR(dx, method ? "pool AVE backward" : "pool MAX backward");
    if (mc) {
      int32_t *a = malloc((size_t)ny * 4), *b = malloc((size_t)ny * 4);
      cpu->ops->download(cpu, a, mc, (size_t)ny * 4);
      gpu->ops->download(gpu, b, mg, (size_t)ny * 4);
      CHECK(memcmp(a, b, (size_t)ny * 4) == 0);
      free(a), free(b);
      cpu->ops->free(cpu, mc), gpu->ops->free(gpu, mg);
    }
    pair_free(&x), pair_free(&y), pair_free(&dy), pair_free(&dx);
  }
  CHECK(gpu_ok());
}

static void test_batchnorm(void) {
  NEED_GPU();
  const int n = 8, c = 16, s = 7 * 9;
  int64_t nx = (int64_t)n * c * s;
  pair x = pair_rand(nx, -3, 5), y = pair_poisoned(nx), mean = pair_poisoned(c), istd = pair_poisoned(c);
  pair msum = pair_rand(c, -1, 1), vsum = pair_rand(c, 0.5f, 2), fac = pair_rand(1, 1, 3);
  cpu->ops->bn_forward_train(cpu, n, c, s, y.c, x.c, mean.c, istd.c, msum.c, vsum.c, fac.c, 0.9f, 1e-5f);
  gpu->ops->bn_forward_train(gpu, n, c, s, y.g, x.g, mean.g, istd.g, msum.g, vsum.g, fac.g, 0.9f, 1e-5f);
  CHECK_PAIR(y, "bn train y");
  CHECK_PAIR(mean, "bn train mean");
  CHECK_PAIR(istd, "bn train inv_std");
  CHECK_PAIR(msum, "bn mean_sum");
  CHECK_PAIR(vsum, "bn var_sum (m/(m-1))");
  CHECK_PAIR(fac, "bn factor");
  pair dy = pair_rand(nx, -1, 1), dx = pair_poisoned(nx);
  cpu->ops->bn_backward(cpu, n, c, s, dx.c, dy.c, y.c, istd.c, 0);
  gpu->ops->bn_backward(gpu, n, c, s, dx.g, dy.g, y.g, istd.g, 0);
  CHECK_PAIR(dx, "bn backward (batch statistics)");
  pair y2 = pair_poisoned(nx), mean2 = pair_poisoned(c), istd2 = pair_poisoned(c);
  cpu->ops->bn_forward_global(cpu, n, c, s, y2.c, x.c, mean2.c, istd2.c, msum.c, vsum.c, fac.c, 1e-5f);
  gpu->ops->bn_forward_global(gpu, n, c, s, y2.g, x.g, mean2.g, istd2.g, msum.g, vsum.g, fac.g, 1e-5f);
  CHECK_PAIR(y2, "bn global y");
  pair dx2 = pair_poisoned(nx);
  cpu->ops->bn_backward(cpu, n, c, s, dx2.c, dy.c, y2.c, istd2.c, 1);
  gpu->ops->bn_backward(gpu, n, c, s, dx2.g, dy.g, y2.g, istd2.g, 1);
  CHECK_PAIR(dx2, "bn backward (global)");
  pair all[] = {x, y, mean, istd, msum, vsum, fac, dy, dx, y2, mean2, istd2, dx2};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(&all[i]);
  CHECK(gpu_ok());
}

/* The plan's fused BatchNorm + Scale [+ ReLU] (backend.h "fused steps"; the GPU's table with it
 * is the one DD_CUDA_FUSE=1 selects, set in main): against the CPU's fused step within RTOL, and
 * its forward against the GPU's three layers one by one, bit for bit (the same statistics and the
 * same rounding, cuda/kernels_batchnorm.cu). */
static int gpu_equal(const float *a, const float *b, int64_t n) {
  float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
  gpu->ops->download(gpu, x, a, (size_t)n * sizeof *x);
  gpu->ops->download(gpu, y, b, (size_t)n * sizeof *y);
  int eq = !memcmp(x, y, (size_t)n * sizeof *x);
  free(x), free(y);
  return eq;
}

static void test_bn_fused(void) {
  NEED_GPU();
  if (!gpu->ops->bn_affine_relu_forward) {
    CHECKF(0, "the GPU's table has no fused BatchNorm step (DD_CUDA_FUSE=1 is set in main)");
    return;
  }
  const int n = 8, c = 24, s = 11 * 13;
  int64_t nx = (int64_t)n * c * s;
  for (int v = 0; v < 6; v++) {
    int global = v >= 4, relu = v % 2, bias = v != 2;
    dd_bn_affine_desc d = {.n = n, .c = c, .s = s, .global = global, .eps = 1e-5f, .maf = 0.9f, .relu = relu,
                           .slope = v == 3 ? 0.1f : 0.0f};
    char what[96];
    pair x = pair_rand(nx, -3, 5), y = pair_poisoned(nx), mean = pair_poisoned(c), istd = pair_poisoned(c);
    pair msum = pair_rand(c, -1, 1), vsum = pair_rand(c, 0.5f, 2), fac = pair_rand(1, 1, 3);
    pair gm = pair_rand(c, -2, 2), bt = pair_rand(c, -1, 1);
    /* the GPU's unfused layers first, on copies of the moving sums */
    float *u = gpu->ops->alloc(gpu, (size_t)nx * sizeof(float)), *um = gpu->ops->alloc(gpu, c * sizeof(float)),
          *ui = gpu->ops->alloc(gpu, c * sizeof(float)), *ums = gpu->ops->alloc(gpu, c * sizeof(float)),
          *uvs = gpu->ops->alloc(gpu, c * sizeof(float)), *uf = gpu->ops->alloc(gpu, sizeof(float));
    gpu->ops->copy(gpu, ums, msum.g, c * sizeof(float));
    gpu->ops->copy(gpu, uvs, vsum.g, c * sizeof(float));
    gpu->ops->copy(gpu, uf, fac.g, sizeof(float));
    if (global) gpu->ops->bn_forward_global(gpu, n, c, s, u, x.g, um, ui, ums, uvs, uf, d.eps);
    else gpu->ops->bn_forward_train(gpu, n, c, s, u, x.g, um, ui, ums, uvs, uf, d.maf, d.eps);
    gpu->ops->channel_affine(gpu, n, c, s, u, u, gm.g, bias ? bt.g : NULL);
    if (relu) gpu->ops->relu_forward(gpu, nx, u, u, d.slope);
    cpu->ops->bn_affine_relu_forward(cpu, &d, y.c, x.c, mean.c, istd.c, msum.c, vsum.c, fac.c, gm.c, bias ? bt.c : NULL);
    gpu->ops->bn_affine_relu_forward(gpu, &d, y.g, x.g, mean.g, istd.g, msum.g, vsum.g, fac.g, gm.g, bias ? bt.g : NULL);
    snprintf(what, sizeof what, "fused bn (global %d relu %d slope %g bias %d)", global, relu, d.slope, bias);
    CHECK_PAIR(y, what);
    CHECK_PAIR(mean, what);
    CHECK_PAIR(istd, what);
    CHECK_PAIR(msum, what);
    CHECK_PAIR(vsum, what);
    CHECK_PAIR(fac, what);
    CHECKF(gpu_equal(u, y.g, nx) && gpu_equal(um, mean.g, c) && gpu_equal(ui, istd.g, c) &&
               gpu_equal(ums, msum.g, c) && gpu_equal(uvs, vsum.g, c) && gpu_equal(uf, fac.g, 1),
           "%s: the fused forward differs from the three layers on the GPU", what);
    pair dy = pair_rand(nx, -1, 1), dx = pair_poisoned(nx), dg = pair_rand(c, -1, 1), db = pair_rand(c, -1, 1);
    cpu->ops->bn_affine_relu_backward(cpu, &d, dx.c, dg.c, bias ? db.c : NULL, dy.c, y.c, x.c, mean.c, istd.c, gm.c);
    gpu->ops->bn_affine_relu_backward(gpu, &d, dx.g, dg.g, bias ? db.g : NULL, dy.g, y.g, x.g, mean.g, istd.g, gm.g);
    CHECK_PAIR(dx, what);
    CHECK_PAIR(dg, what);
    CHECK_PAIR(db, what);
    /* parameter gradients alone (no dx) */
    cpu->ops->bn_affine_relu_backward(cpu, &d, NULL, dg.c, db.c, dy.c, y.c, x.c, mean.c, istd.c, gm.c);
    gpu->ops->bn_affine_relu_backward(gpu, &d, NULL, dg.g, db.g, dy.g, y.g, x.g, mean.g, istd.g, gm.g);
    CHECK_PAIR(dg, what);
    CHECK_PAIR(db, what);
    float *bufs[] = {u, um, ui, ums, uvs, uf};
    for (int k = 0; k < 6; k++) gpu->ops->free(gpu, bufs[k]);
    pair all[] = {x, y, mean, istd, msum, vsum, fac, gm, bt, dy, dx, dg, db};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(&all[i]);
  }
  CHECK(gpu_ok());
}

static void test_channel_affine(void) {
  NEED_GPU();
  const int64_t outer = 6, dim = 12, inner = 50, n = outer * dim * inner;
  pair x = pair_rand(n, -1, 1), sc = pair_rand(dim, -2, 2), bi = pair_rand(dim, -1, 1), y = pair_poisoned(n);
  cpu->ops->channel_affine(cpu, outer, dim, inner, y.c, x.c, sc.c, bi.c);
  gpu->ops->channel_affine(gpu, outer, dim, inner, y.g, x.g, sc.g, bi.g);
  CHECK_PAIR(y, "channel_affine");
  pair dy = pair_rand(n, -1, 1), dx = pair_poisoned(n), ds = pair_rand(dim, -1, 1), db = pair_rand(dim, -1, 1);
  cpu->ops->channel_affine_backward(cpu, outer, dim, inner, dx.c, ds.c, db.c, dy.c, x.c, sc.c);
  gpu->ops->channel_affine_backward(gpu, outer, dim, inner, dx.g, ds.g, db.g, dy.g, x.g, sc.g);
  CHECK_PAIR(dx, "channel_affine_backward dx");
  CHECK_PAIR(ds, "channel_affine_backward dscale (accumulated)");
  CHECK_PAIR(db, "channel_affine_backward dbias (accumulated)");
  pair all[] = {x, sc, bi, y, dy, dx, ds, db};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(&all[i]);
  CHECK(gpu_ok());
}

/* ---- elementwise -------------------------------------------------------------------------------------- */

static void test_elementwise(void) {
  NEED_GPU();
  const int64_t n = 65537;
  pair x = pair_rand(n, -1, 1), y = pair_poisoned(n), dy = pair_rand(n, -1, 1), dx = pair_poisoned(n);
  cpu->ops->relu_forward(cpu, n, y.c, x.c, 0.1f);
  gpu->ops->relu_forward(gpu, n, y.g, x.g, 0.1f);
  CHECK_PAIR(y, "relu forward");
  cpu->ops->relu_backward(cpu, n, dx.c, dy.c, x.c, 0.1f);
  gpu->ops->relu_backward(gpu, n, dx.g, dy.g, x.g, 0.1f);
  CHECK_PAIR(dx, "relu backward");
  pair z = pair_poisoned(n);
  cpu->ops->mul(cpu, n, z.c, x.c, dy.c);
  gpu->ops->mul(gpu, n, z.g, x.g, dy.g);
  CHECK_PAIR(z, "mul");
  /* max over three inputs, then its backward for input 1 */
  pair m = pair_rand(n, -5, -4), in[3] = {pair_rand(n, -1, 1), pair_rand(n, -1, 1), pair_rand(n, -1, 1)};
  int32_t *ac = cpu->ops->alloc(cpu, (size_t)n * 4), *ag = gpu->ops->alloc(gpu, (size_t)n * 4);
  for (int k = 0; k < 3; k++) {
    cpu->ops->max_update(cpu, n, m.c, ac, in[k].c, k);
    gpu->ops->max_update(gpu, n, m.g, ag, in[k].g, k);
  }
  CHECK_PAIR(m, "max_update");
  pair mb = pair_poisoned(n);
  cpu->ops->max_backward(cpu, n, mb.c, dy.c, ac, 1);
  gpu->ops->max_backward(gpu, n, mb.g, dy.g, ag, 1);
  CHECK_PAIR(mb, "max_backward");
  cpu->ops->free(cpu, ac), gpu->ops->free(gpu, ag);
  pair dm = pair_poisoned(n), dyo = pair_poisoned(n);
  cpu->ops->dropout_forward(cpu, n, dyo.c, dm.c, x.c, 12345, 0.3f, 1.0f / 0.7f);
  gpu->ops->dropout_forward(gpu, n, dyo.g, dm.g, x.g, 12345, 0.3f, 1.0f / 0.7f);
  CHECK_PAIR(dm, "dropout mask (the same counter-based hash)");
  CHECK_PAIR(dyo, "dropout output");
  /* strided copies, overwrite and accumulate */
  pair src = pair_rand(40 * 33, -1, 1), dst = pair_rand(40 * 50, -1, 1);
  cpu->ops->copy_rows(cpu, 40, 30, dst.c + 7, 50, src.c + 2, 33, 0);
  gpu->ops->copy_rows(gpu, 40, 30, dst.g + 7, 50, src.g + 2, 33, 0);
  CHECK_PAIR(dst, "copy_rows");
  cpu->ops->copy_rows(cpu, 40, 30, dst.c, 50, src.c, 33, 1);
  gpu->ops->copy_rows(gpu, 40, 30, dst.g, 50, src.g, 33, 1);
  CHECK_PAIR(dst, "copy_rows accumulate");
  pair all[] = {x, y, dy, dx, z, m, in[0], in[1], in[2], mb, dm, dyo, src, dst};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(&all[i]);
  CHECK(gpu_ok());
}

/* ---- softmax and losses ------------------------------------------------------------------------------ */

static pair labels(int64_t outer, int64_t inner, int64_t channels, int with_ignore) {
  float *h = malloc((size_t)(outer * inner) * sizeof *h);
  for (int64_t i = 0; i < outer * inner; i++) h[i] = (float)(dd_rng_next(&rng) % (uint64_t)channels);
  if (with_ignore) h[0] = 255, h[outer * inner / 2] = 255;
  pair p = pair_from(h, outer * inner);
  free(h);
  return p;
}

static void test_softmax_losses(void) {
  NEED_GPU();
  const int64_t outer = 32, ch = 100, inner = 3, n = outer * ch * inner;
  pair x = pair_rand(n, -8, 8), p = pair_poisoned(n), dy = pair_rand(n, -1, 1), dx = pair_poisoned(n);
  cpu->ops->softmax_forward(cpu, outer, ch, inner, p.c, x.c);
  gpu->ops->softmax_forward(gpu, outer, ch, inner, p.g, x.g);
  CHECK_PAIR(p, "softmax forward");
  cpu->ops->softmax_backward(cpu, outer, ch, inner, dx.c, dy.c, p.c);
  gpu->ops->softmax_backward(gpu, outer, ch, inner, dx.g, dy.g, p.g);
  CHECK_PAIR(dx, "softmax backward");
  pair lab = labels(outer, inner, ch, 1);
  int64_t vc = 0, vg = 0;
  double lc = cpu->ops->xent_forward(cpu, outer, ch, inner, p.c, lab.c, 1, 255, &vc);
  double lg = gpu->ops->xent_forward(gpu, outer, ch, inner, p.g, lab.g, 1, 255, &vg);
  check_scalar(lc, lg, "xent loss");
  CHECK(vc == vg && vc == outer * inner - 2);
  pair g = pair_poisoned(n);
  cpu->ops->xent_backward(cpu, outer, ch, inner, g.c, p.c, lab.c, 1, 255, 0.25f);
  gpu->ops->xent_backward(gpu, outer, ch, inner, g.g, p.g, lab.g, 1, 255, 0.25f);
  CHECK_PAIR(g, "xent backward");
  for (int k = 1; k <= 5; k += 4) {
    int64_t cc = 0, cv = 0, gc = 0, gv = 0;
    pair pcc = pair_rand(2 * ch, 0, 3);
    cpu->ops->accuracy(cpu, outer, ch, inner, x.c, lab.c, k, 1, 255, &cc, &cv, pcc.c, pcc.c + ch);
    gpu->ops->accuracy(gpu, outer, ch, inner, x.g, lab.g, k, 1, 255, &gc, &gv, pcc.g, pcc.g + ch);
    CHECKF(cc == gc && cv == gv, "top-%d accuracy: cpu %lld/%lld gpu %lld/%lld", k, (long long)cc, (long long)cv, (long long)gc,
           (long long)gv);
    CHECK_PAIR(pcc, "per-class accuracy counts");
    pair_free(&pcc);
  }
  /* ties: equal values rank as Caffe 1.0 sorts them */
  {
    float *h = calloc((size_t)(4 * 10), sizeof *h);
    float lb[4] = {3, 3, 0, 9};
    pair xt = pair_from(h, 40), lt = pair_from(lb, 4);
    int64_t cc, cv, gc, gv;
    cpu->ops->accuracy(cpu, 4, 10, 1, xt.c, lt.c, 2, 0, 0, &cc, &cv, NULL, NULL);
    gpu->ops->accuracy(gpu, 4, 10, 1, xt.g, lt.g, 2, 0, 0, &gc, &gv, NULL, NULL);
    CHECKF(cc == gc && cv == gv, "accuracy with ties: cpu %lld gpu %lld", (long long)cc, (long long)gc);
    pair_free(&xt), pair_free(&lt);
    free(h);
  }
  /* distillation: KL(softmax(t/T) || softmax(s/T)) T^2 and its gradient */
  pair s = pair_rand(outer * ch, -6, 6), t = pair_rand(outer * ch, -6, 6), ds = pair_poisoned(outer * ch);
  double kc = cpu->ops->kd_forward_backward(cpu, outer, ch, s.c, t.c, 4.0f, ds.c, 1.0f / outer);
  double kg = gpu->ops->kd_forward_backward(gpu, outer, ch, s.g, t.g, 4.0f, ds.g, 1.0f / outer);
  check_scalar(kc, kg, "kd loss");
  CHECK_PAIR(ds, "kd gradient");
  /* attention transfer */
  const int64_t an = 4, cs = 8, ct = 16, hw = 49;
  pair as = pair_rand(an * cs * hw, -1, 1), at = pair_rand(an * ct * hw, -1, 1), ads = pair_poisoned(an * cs * hw);
  void *wsc = cpu->ops->alloc(cpu, 2 * (size_t)hw * sizeof(double)), *wsg = gpu->ops->alloc(gpu, 2 * (size_t)hw * sizeof(double));
  double ac = cpu->ops->attention_forward_backward(cpu, an, cs, ct, hw, as.c, at.c, ads.c, 0.5f, wsc);
  double ag = gpu->ops->attention_forward_backward(gpu, an, cs, ct, hw, as.g, at.g, ads.g, 0.5f, wsg);
  check_scalar(ac, ag, "attention loss");
  CHECK_PAIR(ads, "attention gradient");
  cpu->ops->free(cpu, wsc), gpu->ops->free(gpu, wsg);
  pair all[] = {x, p, dy, dx, lab, g, s, t, ds, as, at, ads};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(&all[i]);
  CHECK(gpu_ok());
}

/* ---- solvers ------------------------------------------------------------------------------------------ */

static void test_solvers(void) {
  NEED_GPU();
  const int64_t n = 10007;
  for (int which = 0; which < 6; which++) {
    pair w = pair_rand(n, -1, 1), g = pair_rand(n, -1, 1), h = pair_rand(n, 0, 1), v = pair_rand(n, 0, 1);
    const char *name = "";
    switch (which) {
    case 0:
      name = "regularize L2";
      cpu->ops->regularize(cpu, n, g.c, w.c, 5e-4f, 0);
      gpu->ops->regularize(gpu, n, g.g, w.g, 5e-4f, 0);
      break;
    case 1:
      name = "regularize L1";
      cpu->ops->regularize(cpu, n, g.c, w.c, 5e-4f, 1);
      gpu->ops->regularize(gpu, n, g.g, w.g, 5e-4f, 1);
      break;
    case 2:
    case 3:
      name = which == 2 ? "sgd" : "sgd nesterov";
      cpu->ops->sgd_update(cpu, n, w.c, g.c, h.c, 0.1f, 0.9f, which == 3);
      gpu->ops->sgd_update(gpu, n, w.g, g.g, h.g, 0.1f, 0.9f, which == 3);
      break;
    case 4:
      name = "adam";
      cpu->ops->adam_update(cpu, n, w.c, g.c, h.c, v.c, 0.001f, 0.9f, 0.999f, 1e-8f, 7);
      gpu->ops->adam_update(gpu, n, w.g, g.g, h.g, v.g, 0.001f, 0.9f, 0.999f, 1e-8f, 7);
      break;
    case 5:
      name = "rmsprop";
      cpu->ops->adagrad_update(cpu, n, w.c, g.c, h.c, 0.01f, 1e-8f, 0.98f, 1);
      gpu->ops->adagrad_update(gpu, n, w.g, g.g, h.g, 0.01f, 1e-8f, 0.98f, 1);
      break;
    }
    CHECK_PAIR(w, name);
    CHECK_PAIR(g, name);
    CHECK_PAIR(h, name);
    pair_free(&w), pair_free(&g), pair_free(&h), pair_free(&v);
  }
  CHECK(gpu_ok());
}

int main(void) {
  dd_rng_seed(&rng, 20261128);
  char err[600];
  if (dd_cpu_backend_create(&cpu, 2)) {
    fprintf(stderr, "cannot start the CPU backend\n");
    return 1;
  }
  setenv("DD_CUDA_FUSE", "1", 1); /* the GPU's table with the fused steps (cuda/backend.cu) */
  if (!dd_backend_have_cuda())
    printf("SKIP: this build has no CUDA backend (no CUDA toolkit found by CMake)\n");
  else if (dd_backend_create(&gpu, "cuda:0", 0, err, sizeof err)) {
    printf("SKIP: no GPU: %s\n", err);
    gpu = NULL;
  } else {
    printf("     %s\n     %s\n", dd_backend_describe(gpu), dd_cpu_backend_describe(cpu));
  }
  RUN(test_gemm);
  RUN(test_blas1);
  RUN(test_conv);
  RUN(test_pool);
  RUN(test_batchnorm);
  RUN(test_bn_fused);
  RUN(test_channel_affine);
  RUN(test_elementwise);
  RUN(test_softmax_losses);
  RUN(test_solvers);
  if (gpu) dd_backend_destroy(gpu);
  dd_cpu_backend_destroy(cpu);
  return test_summary();
}
