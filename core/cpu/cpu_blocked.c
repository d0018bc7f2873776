/* The CPU backend's kernels for inference in the blocked layout (backend.h, "inference in the
 * blocked layout"): elementwise steps between oneDNN's convolutions (cpu_dnnl.c) in a frozen net,
 * and the conversion back to NCHW FP32 where the plan leaves the blocked layout. Memory-bound
 * loops. In bf16 (half of what FP32 reads and writes) each value is widened to FP32 (exact),
 * computed, and rounded to bf16 once, to nearest even, as oneDNN and PyTorch round; on x86 with
 * AVX512-BF16 (which is where bf16 steps run: cpu_dnnl.h's bf16 path) 16 values at a time with its
 * conversion instruction, elsewhere plain C. FP32: plain C the compiler vectorizes. Split over the
 * backend's threads. */
#include <stdint.h>
#include <string.h>

#include "cpu/cpu_dnnl.h"
#include "cpu/cpu_kernels.h"


#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define BF_X86 1
#define BF_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
BF_TARGET static inline __m512 ld16(const uint16_t *p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
BF_TARGET static inline void st16(uint16_t *p, __m512 v) { _mm256_storeu_si256((__m256i *)p, (__m256i)_mm512_cvtneps_pbh(v)); }
BF_TARGET static inline __m512 leaky(__m512 v, __m512 slope) {
  return _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LE_OQ), v, slope);
}
static int have_avx512_bf16(void) {
  static int have = -1;
  if (have < 0) have = __builtin_cpu_supports("avx512bf16") != 0;
  return have;
}
#else
#define BF_X86 0
static int have_avx512_bf16(void) { return 0; }
#endif

typedef struct {
  uint16_t *y;
  const uint16_t *x, *b;
  float *fy; /* the FP32 kernels' y, x, b */
  const float *fx, *fb;
  float ca, cb, slope;
  const float *scale, *bias;
  int relu, cblocks, s;
  float *out;
  int c;
} bf_args;

/* fn over [0, n) rows, split across the backend's threads when the work (elements) is worth it */
static void bf_run(dd_backend *be, int64_t n, int64_t work, dd_range_fn fn, const bf_args *a) {
  dd_threadpool *pool = ((dd_cpu_ctx *)be->ctx)->pool;
  if (work < 65536) fn((void *)a, 0, n);
  else dd_threadpool_range(pool, n, fn, (void *)a);
}

#if BF_X86
BF_TARGET static void relu_avx(void *v, int64_t lo, int64_t hi) {
  const bf_args *a = v;
  __m512 slope = _mm512_set1_ps(a->slope);
  int64_t i = lo;
  for (; i + 16 <= hi; i += 16) st16(a->y + i, leaky(ld16(a->x + i), slope));
  for (; i < hi; i++) {
    float v = dd_bf16_to_f32(a->x[i]);
    a->y[i] = dd_f32_to_bf16(v > 0 ? v : v * a->slope);
  }
}
BF_TARGET static void sum_avx(void *v, int64_t lo, int64_t hi) {
  const bf_args *a = v;
  __m512 ca = _mm512_set1_ps(a->ca), cb = _mm512_set1_ps(a->cb), slope = _mm512_set1_ps(a->relu ? a->slope : 1.0f);
  int64_t i = lo;
  for (; i + 16 <= hi; i += 16)
    st16(a->y + i, leaky(_mm512_fmadd_ps(ca, ld16(a->x + i), _mm512_mul_ps(cb, ld16(a->b + i))), slope));
  float s1 = a->relu ? a->slope : 1.0f;
  for (; i < hi; i++) {
    float v = a->ca * dd_bf16_to_f32(a->x[i]) + a->cb * dd_bf16_to_f32(a->b[i]);
    a->y[i] = dd_f32_to_bf16(v > 0 ? v : v * s1);
  }
}
BF_TARGET static void affine_avx(void *v, int64_t lo, int64_t hi) {
  const bf_args *a = v;
  __m512 slope = _mm512_set1_ps(a->slope), zero = _mm512_setzero_ps();
  for (int64_t row = lo; row < hi; row++) {
    int cb = (int)(row % a->cblocks);
    __m512 sc = _mm512_loadu_ps(a->scale + cb * 16), bi = a->bias ? _mm512_loadu_ps(a->bias + cb * 16) : zero;
    const uint16_t *x = a->x + row * a->s * 16;
    uint16_t *y = a->y + row * a->s * 16;
    if (a->relu)
      for (int p = 0; p < a->s; p++) st16(y + p * 16, leaky(_mm512_fmadd_ps(sc, ld16(x + p * 16), bi), slope));
    else
      for (int p = 0; p < a->s; p++) st16(y + p * 16, _mm512_fmadd_ps(sc, ld16(x + p * 16), bi));
  }
}
#endif

DD_CLONES static void relu_bf(void *v, int64_t lo, int64_t hi) {
  const bf_args *a = v;
#if BF_X86
  if (have_avx512_bf16()) {
    relu_avx(v, lo, hi);
    return;
  }
#endif
  float slope = a->slope;
  for (int64_t i = lo; i < hi; i++) {
    float v = dd_bf16_to_f32(a->x[i]);
    a->y[i] = dd_f32_to_bf16(v > 0 ? v : v * slope);
  }
}

DD_CLONES static void relu_f(void *v, int64_t lo, int64_t hi) {
  const bf_args *a = v;
  float slope = a->slope;
  for (int64_t i = lo; i < hi; i++) a->fy[i] = a->fx[i] > 0 ? a->fx[i] : a->fx[i] * slope;
}

void dd_cpu_blk_relu(dd_backend *be, int bf16, int64_t n, void *y, const void *x, float slope) {
  bf_args a = {.y = y, .x = x, .fy = y, .fx = x, .slope = slope};
  bf_run(be, n, n, bf16 ? relu_bf : relu_f, &a);
}

DD_CLONES static void sum_bf(void *v, int64_t lo, int64_t hi) {
  const bf_args *a = v;
#if BF_X86
  if (have_avx512_bf16()) {
    sum_avx(v, lo, hi);
    return;
  }
#endif
  float ca = a->ca, cb = a->cb, s1 = a->relu ? a->slope : 1.0f;
  for (int64_t i = lo; i < hi; i++) {
    float v = ca * dd_bf16_to_f32(a->x[i]) + cb * dd_bf16_to_f32(a->b[i]);
    a->y[i] = dd_f32_to_bf16(v > 0 ? v : v * s1);
  }
}

DD_CLONES static void sum_f(void *v, int64_t lo, int64_t hi) {
  const bf_args *a = v;
  float ca = a->ca, cb = a->cb, s1 = a->relu ? a->slope : 1.0f;
  for (int64_t i = lo; i < hi; i++) {
    float v = ca * a->fx[i] + cb * a->fb[i];
    a->fy[i] = v > 0 ? v : v * s1;
  }
}

void dd_cpu_blk_sum(dd_backend *be, int bf16, int64_t n, void *y, const void *a, float ca, const void *b, float cb,
                    int relu, float slope) {
  bf_args args = {.y = y, .x = a, .b = b, .fy = y, .fx = a, .fb = b, .ca = ca, .cb = cb, .relu = relu, .slope = slope};
  bf_run(be, n, n, bf16 ? sum_bf : sum_f, &args);
}

/* Rows are (image, channel block) pairs: s pixels of 16 channels each. */
DD_CLONES static void affine_bf(void *v, int64_t lo, int64_t hi) {
  const bf_args *a = v;
#if BF_X86
  if (have_avx512_bf16()) {
    affine_avx(v, lo, hi);
    return;
  }
#endif
  for (int64_t row = lo; row < hi; row++) {
    int cb = (int)(row % a->cblocks);
    float sc[16], bi[16];
    for (int l = 0; l < 16; l++) sc[l] = a->scale[cb * 16 + l], bi[l] = a->bias ? a->bias[cb * 16 + l] : 0.0f;
    const uint16_t *x = a->x + row * a->s * 16;
    uint16_t *y = a->y + row * a->s * 16;
    if (a->relu) {
      float slope = a->slope;
      for (int p = 0; p < a->s; p++)
        for (int l = 0; l < 16; l++) {
          float v = sc[l] * dd_bf16_to_f32(x[p * 16 + l]) + bi[l];
          y[p * 16 + l] = dd_f32_to_bf16(v > 0 ? v : v * slope);
        }
    } else {
      for (int p = 0; p < a->s; p++)
        for (int l = 0; l < 16; l++) y[p * 16 + l] = dd_f32_to_bf16(sc[l] * dd_bf16_to_f32(x[p * 16 + l]) + bi[l]);
    }
  }
}

DD_CLONES static void affine_f(void *v, int64_t lo, int64_t hi) {
  const bf_args *a = v;
  for (int64_t row = lo; row < hi; row++) {
    int cb = (int)(row % a->cblocks);
    float sc[16], bi[16], slope = a->relu ? a->slope : 1.0f;
    for (int l = 0; l < 16; l++) sc[l] = a->scale[cb * 16 + l], bi[l] = a->bias ? a->bias[cb * 16 + l] : 0.0f;
    const float *x = a->fx + row * a->s * 16;
    float *y = a->fy + row * a->s * 16;
    for (int p = 0; p < a->s; p++)
      for (int l = 0; l < 16; l++) {
        float v = sc[l] * x[p * 16 + l] + bi[l];
        y[p * 16 + l] = v > 0 ? v : v * slope;
      }
  }
}

void dd_cpu_blk_affine(dd_backend *be, int bf16, int n, int c, int s, void *y, const void *x, const float *scale,
                       const float *bias, int relu, float slope) {
  bf_args a = {.y = y, .x = x, .fy = y, .fx = x, .scale = scale, .bias = bias, .relu = relu, .slope = slope,
               .cblocks = c / 16, .s = s};
  bf_run(be, (int64_t)n * (c / 16), (int64_t)n * c * s, bf16 ? affine_bf : affine_f, &a);
}

/* Rows as in affine_bf; each writes 16 NCHW planes of s values. */
DD_CLONES static void to_f32_bf(void *v, int64_t lo, int64_t hi) {
  const bf_args *a = v;
  for (int64_t row = lo; row < hi; row++) {
    int64_t img = row / a->cblocks, cb = row % a->cblocks;
    const uint16_t *x = a->x + row * a->s * 16;
    float *y = a->out + (img * a->c + cb * 16) * a->s;
    for (int p = 0; p < a->s; p++)
      for (int l = 0; l < 16; l++) y[(int64_t)l * a->s + p] = dd_bf16_to_f32(x[p * 16 + l]);
  }
}

DD_CLONES static void to_f32_f(void *v, int64_t lo, int64_t hi) {
  const bf_args *a = v;
  for (int64_t row = lo; row < hi; row++) {
    int64_t img = row / a->cblocks, cb = row % a->cblocks;
    const float *x = a->fx + row * a->s * 16;
    float *y = a->out + (img * a->c + cb * 16) * a->s;
    for (int p = 0; p < a->s; p++)
      for (int l = 0; l < 16; l++) y[(int64_t)l * a->s + p] = x[p * 16 + l];
  }
}

void dd_cpu_blk_to_nchw(dd_backend *be, int bf16, int n, int c, int s, float *y, const void *x) {
  bf_args a = {.out = y, .x = x, .fx = x, .c = c, .cblocks = c / 16, .s = s};
  bf_run(be, (int64_t)n * (c / 16), (int64_t)n * c * s, bf16 ? to_f32_bf : to_f32_f, &a);
}

int dd_cpu_conv_blk_prepare(dd_backend *be, const dd_conv_desc *d, int bf16, int x_blocked, int relu, float slope) {
  return dd_dnnl_blk_prepare(((dd_cpu_ctx *)be->ctx)->dnnl, d, bf16, x_blocked, relu, slope);
}

int dd_cpu_conv_blk_forward(dd_backend *be, const dd_conv_desc *d, int bf16, int x_blocked, int relu, float slope,
                            void *y, const void *x, const float *w, const float *bias) {
  return dd_dnnl_blk_forward(((dd_cpu_ctx *)be->ctx)->dnnl, d, bf16, x_blocked, relu, slope, y, x, w, bias);
}
