/* The CPU backend's kernels for training in the blocked layout (backend.h, "training in the
 * blocked layout"; core/net/plan.h): the fused BatchNorm + Scale [+ ReLU] step forward and
 * backward on nChw16c activations (bf16 or FP32), the conversion from NCHW FP32 into the layout,
 * and whether oneDNN runs a convolution whose activations are blocked.
 *
 * Element (n, c, s) of an (N, C, S) activation is at ((n (C / 16) + c / 16) S + s) 16 + c % 16, so
 * the 16 channels of a channel block sit side by side and each pass works on 16 channels at once,
 * in AVX-512 registers (x86 with AVX512-BF16, for bf16 and FP32 alike; elsewhere no blocked
 * training plan is offered: dd_cpu_blk_train_fast). One task per channel block, all images in
 * order: the statistics are per image 16-lane FP32 sums over its positions (four interleaved
 * accumulators), added in double in image order, so a run repeats bit for bit whatever the thread
 * count (they differ from the NCHW kernels' sums, which add in another order, by rounding: the
 * bounds are tests/test_plan_train.c's). bf16 values are widened exactly and each result rounded
 * once, to nearest even. Nothing allocates. */
#include <math.h>
#include <stdint.h>

#include "cpu/cpu_kernels.h"

typedef struct {
  const dd_bn_affine_desc *d;
  void *y, *dx;
  const void *x, *dy, *cy;
  float *mean, *inv_std, *mean_sum, *var_sum, *dgamma, *dbeta;
  const float *cmean, *cinv, *cfactor, *gamma, *beta;
} blk_bn_job;

/* Element k of a blocked buffer of bf16 (bf16) or FP32 values, set. */
static inline void st(void *p, int bf16, int64_t k, float v) {
  if (bf16) ((uint16_t *)p)[k] = dd_f32_to_bf16(v);
  else ((float *)p)[k] = v;
}

/* the rows (image i, channel block cb): S x 16 values from offset row_off */
static inline int64_t row_off(const dd_bn_affine_desc *d, int i, int cb) {
  return ((int64_t)i * (d->c / 16) + cb) * d->s * 16;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define BV 1
#define BV_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
/* 16 values (bf16 or FP32) as FP32, and back (bf16: rounded to nearest even) */
BV_TARGET static inline __m512 vld(const void *p, int bf16, int64_t k) {
  if (!bf16) return _mm512_loadu_ps((const float *)p + k);
  __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)p + k));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
BV_TARGET static inline void vst(void *p, int bf16, int64_t k, __m512 v) {
  if (bf16) _mm256_storeu_si256((__m256i *)((uint16_t *)p + k), (__m256i)_mm512_cvtneps_pbh(v));
  else _mm512_storeu_ps((float *)p + k, v);
}
/* acc[0..16) += the 16 lanes of v, in double */
BV_TARGET static inline void vacc(double *acc, __m512 v) {
  __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v)), hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
  _mm512_storeu_pd(acc, _mm512_add_pd(_mm512_loadu_pd(acc), lo));
  _mm512_storeu_pd(acc + 8, _mm512_add_pd(_mm512_loadu_pd(acc + 8), hi));
}
/* the ReLU's gradient of 16 elements from their outputs */
BV_TARGET static inline __m512 vgrad(const dd_bn_affine_desc *d, __m512 dy, __m512 y) {
  if (!d->relu) return dy;
  return _mm512_mask_mul_ps(dy, _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_NGT_UQ), dy, _mm512_set1_ps(d->slope));
}
static int have_vec(void) {
  static int have = -1;
  if (have < 0) have = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512dq");
  return have;
}

/* Per image, 16-lane FP32 sums over its S positions in four interleaved accumulators, then added in
 * double: of x (what 0) or of (x - m)^2 (what 1). */
BV_TARGET static void vsums(const dd_bn_affine_desc *d, const void *x, int cb, int what, const float *m, double out[16]) {
  double acc[16] = {0};
  __m512 vm = what ? _mm512_loadu_ps(m) : _mm512_setzero_ps();
  for (int i = 0; i < d->n; i++) {
    int64_t o = row_off(d, i, cb);
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int p = 0; p < d->s; p++) {
      __m512 v = vld(x, d->bf16, o + p * 16);
      if (what) v = _mm512_sub_ps(v, vm), v = _mm512_mul_ps(v, v);
      a[p & 3] = _mm512_add_ps(a[p & 3], v);
    }
    vacc(acc, _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
  }
  for (int l = 0; l < 16; l++) out[l] = acc[l];
}

BV_TARGET static void vaffine(const dd_bn_affine_desc *d, void *y, const void *x, int cb, const float *m, const float *inv,
                              const float *g, const float *b) {
  __m512 vm = _mm512_loadu_ps(m), vi = _mm512_loadu_ps(inv), vg = _mm512_loadu_ps(g), vb = _mm512_loadu_ps(b);
  __m512 zero = _mm512_setzero_ps(), sl = _mm512_set1_ps(d->relu ? d->slope : 1.0f);
  for (int i = 0; i < d->n; i++) {
    int64_t o = row_off(d, i, cb);
    for (int p = 0; p < d->s; p++) {
      __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(vld(x, d->bf16, o + p * 16), vm), vi), vg), vb);
      vst(y, d->bf16, o + p * 16, _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_NGT_UQ), v, sl));
    }
  }
}

BV_TARGET static void vgrad_sums(const dd_bn_affine_desc *d, const void *dy, const void *y, const void *x, int cb,
                                 const float *m, const float *inv, double sg[16], double sgx[16]) {
  double a[16] = {0}, b[16] = {0};
  __m512 vm = _mm512_loadu_ps(m), vi = _mm512_loadu_ps(inv);
  for (int i = 0; i < d->n; i++) {
    int64_t o = row_off(d, i, cb);
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), t0 = _mm512_setzero_ps(), t1 = _mm512_setzero_ps();
    for (int p = 0; p < d->s; p++) {
      int64_t k = o + p * 16;
      __m512 g = vgrad(d, vld(dy, d->bf16, k), vld(y, d->bf16, k));
      __m512 xh = _mm512_mul_ps(_mm512_sub_ps(vld(x, d->bf16, k), vm), vi);
      if (p & 1) s1 = _mm512_add_ps(s1, g), t1 = _mm512_add_ps(t1, _mm512_mul_ps(g, xh));
      else s0 = _mm512_add_ps(s0, g), t0 = _mm512_add_ps(t0, _mm512_mul_ps(g, xh));
    }
    vacc(a, _mm512_add_ps(s0, s1));
    vacc(b, _mm512_add_ps(t0, t1));
  }
  for (int l = 0; l < 16; l++) sg[l] = a[l], sgx[l] = b[l];
}

BV_TARGET static void vdx(const dd_bn_affine_desc *d, void *dx, const void *dy, const void *y, const void *x, int cb,
                          const float *m, const float *inv, const float *gm, const float *a, const float *b) {
  __m512 vm = _mm512_loadu_ps(m), vi = _mm512_loadu_ps(inv), vg = _mm512_loadu_ps(gm), va = _mm512_loadu_ps(a),
         vb = _mm512_loadu_ps(b);
  for (int i = 0; i < d->n; i++) {
    int64_t o = row_off(d, i, cb);
    for (int p = 0; p < d->s; p++) {
      int64_t k = o + p * 16;
      __m512 g = vgrad(d, vld(dy, d->bf16, k), vld(y, d->bf16, k)), v;
      if (d->global) {
        v = _mm512_mul_ps(_mm512_mul_ps(g, vg), vi);
      } else {
        __m512 xh = _mm512_mul_ps(_mm512_sub_ps(vld(x, d->bf16, k), vm), vi);
        v = _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(_mm512_mul_ps(g, vg), va), _mm512_mul_ps(xh, vb)), vi);
      }
      vst(dx, d->bf16, k, v);
    }
  }
}
#else
#define BV 0
static int have_vec(void) { return 0; }
#endif

int dd_cpu_blk_train_fast(void) { return have_vec(); }



#if BV
static void fwd_task(void *ctx, int cb, int t) {
  (void)t;
  blk_bn_job *j = ctx;
  const dd_bn_affine_desc *d = j->d;
  float m[16], inv[16], g[16], b[16];
  int c0 = cb * 16;
  if (d->global) {
    float sc = j->cfactor[0] == 0.0f ? 0.0f : 1.0f / j->cfactor[0];
    for (int l = 0; l < 16; l++) {
      m[l] = j->mean_sum[c0 + l] * sc;
      inv[l] = 1.0f / sqrtf(j->var_sum[c0 + l] * sc + d->eps);
    }
  } else { /* bn_forward_train's statistics: mean, then the biased variance about it */
    int64_t cnt = (int64_t)d->n * d->s;
    double sum[16], sq[16];
    vsums(d, j->x, cb, 0, NULL, sum);
    for (int l = 0; l < 16; l++) m[l] = (float)(sum[l] / (double)cnt);
    vsums(d, j->x, cb, 1, m, sq);
    float corr = cnt > 1 ? (float)cnt / (float)(cnt - 1) : 1.0f;
    for (int l = 0; l < 16; l++) {
      float var = (float)(sq[l] / (double)cnt);
      inv[l] = 1.0f / sqrtf(var + d->eps);
      j->mean_sum[c0 + l] = m[l] + d->maf * j->mean_sum[c0 + l];
      j->var_sum[c0 + l] = corr * var + d->maf * j->var_sum[c0 + l];
    }
  }
  for (int l = 0; l < 16; l++) {
    j->mean[c0 + l] = m[l];
    j->inv_std[c0 + l] = inv[l];
    g[l] = j->gamma[c0 + l];
    b[l] = j->beta ? j->beta[c0 + l] : 0.0f;
  }
  vaffine(d, j->y, j->x, cb, m, inv, g, b);
}

void dd_cpu_bn_blk_forward(dd_backend *be, const dd_bn_affine_desc *d, void *y, const void *x, float *mean,
                           float *inv_std, float *mean_sum, float *var_sum, float *factor, const float *gamma,
                           const float *beta) {
  blk_bn_job j = {.d = d, .y = y, .x = x, .mean = mean, .inv_std = inv_std, .mean_sum = mean_sum, .var_sum = var_sum,
                  .cfactor = factor, .gamma = gamma, .beta = beta};
  dd_threadpool_run(((dd_cpu_ctx *)be->ctx)->pool, d->c / 16, fwd_task, &j);
  if (!d->global) factor[0] = factor[0] * d->maf + 1.0f;
}

static void bwd_task(void *ctx, int cb, int t) {
  (void)t;
  blk_bn_job *j = ctx;
  const dd_bn_affine_desc *d = j->d;
  int c0 = cb * 16;
  float m[16], inv[16], gm[16], a[16], b[16];
  for (int l = 0; l < 16; l++) m[l] = j->cmean[c0 + l], inv[l] = j->cinv[c0 + l], gm[l] = j->gamma[c0 + l];
  double sg[16] = {0}, sgx[16] = {0};
  int64_t cnt = (int64_t)d->n * d->s;
  if (j->dgamma || j->dbeta || (j->dx && !d->global)) vgrad_sums(d, j->dy, j->cy, j->x, cb, m, inv, sg, sgx);
  for (int l = 0; l < 16; l++) {
    if (j->dgamma) j->dgamma[c0 + l] += (float)sgx[l];
    if (j->dbeta) j->dbeta[c0 + l] += (float)sg[l];
    a[l] = (float)(gm[l] * sg[l] / (double)cnt);
    b[l] = (float)(gm[l] * sgx[l] / (double)cnt);
  }
  if (j->dx) vdx(d, j->dx, j->dy, j->cy, j->x, cb, m, inv, gm, a, b);
}

void dd_cpu_bn_blk_backward(dd_backend *be, const dd_bn_affine_desc *d, void *dx, float *dgamma, float *dbeta,
                            const void *dy, const void *y, const void *x, const float *mean, const float *inv_std,
                            const float *gamma) {
  blk_bn_job j = {.d = d, .dx = dx, .dgamma = dgamma, .dbeta = dbeta, .dy = dy, .cy = y, .x = x, .cmean = mean,
                  .cinv = inv_std, .gamma = gamma};
  dd_threadpool_run(((dd_cpu_ctx *)be->ctx)->pool, d->c / 16, bwd_task, &j);
}
#else /* no vector kernels: no blocked training plan is offered (dd_cpu_blk_train_fast), never called */
void dd_cpu_bn_blk_forward(dd_backend *be, const dd_bn_affine_desc *d, void *y, const void *x, float *mean,
                           float *inv_std, float *mean_sum, float *var_sum, float *factor, const float *gamma,
                           const float *beta) {
  (void)be, (void)d, (void)y, (void)x, (void)mean, (void)inv_std, (void)mean_sum, (void)var_sum, (void)factor;
  (void)gamma, (void)beta;
}
void dd_cpu_bn_blk_backward(dd_backend *be, const dd_bn_affine_desc *d, void *dx, float *dgamma, float *dbeta,
                            const void *dy, const void *y, const void *x, const float *mean, const float *inv_std,
                            const float *gamma) {
  (void)be, (void)d, (void)dx, (void)dgamma, (void)dbeta, (void)dy, (void)y, (void)x, (void)mean, (void)inv_std;
  (void)gamma;
}
#endif

/* ---- NCHW FP32 into the blocked layout ---------------------------------------------------------- */

typedef struct {
  void *y;
  const float *x;
  int bf16, c, s;
} from_job;

DD_CLONES static void from_rows(void *ctx, int64_t lo, int64_t hi) {
  const from_job *j = ctx;
  int cblocks = j->c / 16;
  for (int64_t row = lo; row < hi; row++) {
    int64_t img = row / cblocks, cb = row % cblocks;
    const float *src = j->x + (img * j->c + cb * 16) * j->s;
    for (int p = 0; p < j->s; p++)
      for (int l = 0; l < 16; l++) st(j->y, j->bf16, (row * j->s + p) * 16 + l, src[(int64_t)l * j->s + p]);
  }
}

void dd_cpu_blk_from_nchw(dd_backend *be, int bf16, int n, int c, int s, void *y, const float *x) {
  dd_threadpool *pool = ((dd_cpu_ctx *)be->ctx)->pool;
  if (bf16 && dd_cpu_nchw_to_blk_bf16_available()) {
    dd_cpu_nchw_to_blk_bf16(pool, n, c, s, y, x);
    return;
  }
  from_job j = {.y = y, .x = x, .bf16 = bf16, .c = c, .s = s};
  dd_threadpool_range(pool, (int64_t)n * (c / 16), from_rows, &j);
}
