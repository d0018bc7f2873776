/* NCHW FP32 -> nChw16c bf16, the conversion in front of most bf16 convolutions (cpu_kernels.h,
 * dd_cpu_nchw_to_blk_bf16). oneDNN's reorder for it ran at about 13 GB/s here (docs/performance.md
 * section 12); this one reads 16 channel rows of 16 pixels, transposes the 16x16 block in
 * registers and converts with AVX512-BF16's instruction (round to nearest even, as oneDNN's
 * reorder: the tests compare the convolutions' results), about 2.3x faster on the WRN shapes.
 * x86 with AVX512-BF16 only; dd_cpu_nchw_to_blk_bf16_available says where. */
#include <stdint.h>
#include "cpu/cpu_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CV_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* r[i] (row i of a 16x16 block) becomes column i. */
CV_TARGET static inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]), t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int h = 0; h < 16; h += 8)
    for (int i = 0; i < 4; i++) {
      t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
    }
  for (int i = 0; i < 8; i++) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
  }
}

typedef struct {
  const float *x;
  uint16_t *y;
  int c, s, cblocks;
} cv_job;

/* Rows (image, channel block) [lo, hi). */
CV_TARGET static void convert_rows(void *ctx, int64_t lo, int64_t hi) {
  const cv_job *j = ctx;
  const int s = j->s;
  for (int64_t row = lo; row < hi; row++) {
    int64_t img = row / j->cblocks, cb = row % j->cblocks;
    const float *src = j->x + (img * j->c + cb * 16) * s;
    uint16_t *dst = j->y + row * s * 16;
    int p = 0;
    for (; p + 16 <= s; p += 16) {
      __m512 r[16];
      for (int c = 0; c < 16; c++) r[c] = _mm512_loadu_ps(src + (int64_t)c * s + p);
      transpose16(r);
      for (int q = 0; q < 16; q++) _mm256_storeu_si256((__m256i *)(dst + (p + q) * 16), (__m256i)_mm512_cvtneps_pbh(r[q]));
    }
    for (; p < s; p++)
      for (int c = 0; c < 16; c++) dst[p * 16 + c] = dd_f32_to_bf16(src[(int64_t)c * s + p]);
  }
}

int dd_cpu_nchw_to_blk_bf16_available(void) { return __builtin_cpu_supports("avx512bf16") != 0; }

void dd_cpu_nchw_to_blk_bf16(dd_threadpool *pool, int n, int c, int s, uint16_t *y, const float *x) {
  cv_job j = {.x = x, .y = y, .c = c, .s = s, .cblocks = c / 16};
  dd_threadpool_range(pool, (int64_t)n * (c / 16), convert_rows, &j);
}

#else

int dd_cpu_nchw_to_blk_bf16_available(void) { return 0; }
void dd_cpu_nchw_to_blk_bf16(dd_threadpool *pool, int n, int c, int s, uint16_t *y, const float *x) {
  (void)pool, (void)n, (void)c, (void)s, (void)y, (void)x;
}

#endif
