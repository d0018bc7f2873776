/* The CPU convolution (Caffe's semantics: groups, stride, pad, dilation; backend.h), parallel over
 * images on the backend's pool, OpenBLAS (core/cpu_blas.h) single-threaded inside each task.
 * What was measured to choose each path is in docs/performance.md.
 *
 * Forward: stride 1 with >= 32 input and output channels per group (the 3x3 convolutions of
 * ResNets) on a CPU with AVX-512: a direct kernel (below) on zero-padded planes, no im2col.
 * Otherwise im2col into col (K, B * HW) with K = (C / group) * kh * kw, then y = W col; small
 * images (8x8: HW = 64) are batched B at a time so the GEMM gets B * HW >= 256 columns, through
 * a scratch matrix to the (N, C, H, W) output. A 1x1 stride-1 convolution multiplies the input as
 * it is.
 *
 * Backward data: for stride 1, dx is the forward convolution of dy with the weights flipped in
 * space and transposed in channels, pad' = dilation * (k - 1) - pad: the direct kernel where the
 * forward would use it, else im2col + GEMM when there are >= 32 input channels per group (no
 * col2im scatter). Otherwise col = W^T dy, then col2im adds col into dx. 1x1 stride 1: one GEMM
 * per image.
 *
 * Backward filter: each thread takes a contiguous share of the images, B at a time: im2col of
 * B images side by side and dy of the same images copied side by side give one GEMM
 * dW_t += dy col^T with B * HW inner products; the per-thread partial sums are added in thread
 * order, so results depend on the thread count only.
 *
 * Workspace (dd_cpu_conv_workspace): reordered weights (flipped, or in the direct kernel's
 * layout; shared), then per thread col (or the padded planes), a scratch matrix, and the partial
 * dW and dbias; all sized from one plan so the kernels never allocate. */
#define _POSIX_C_SOURCE 200809L
#include <string.h>

#include "cpu/cpu_blas.h"
#include "cpu/cpu_dnnl.h"
#include "cpu/cpu_kernels.h"

static dd_threadpool *pool_of(dd_backend *be) { return ((dd_cpu_ctx *)be->ctx)->pool; }
static int threads_of(dd_backend *be) { return dd_threadpool_threads(pool_of(be)); }

/* ---- plan --------------------------------------------------------------------------------------- */

/* Columns a batched GEMM aims for, and the most a col buffer may hold (floats). */
#define TARGET_COLS 256
#define COL_BUDGET (1 << 20)

/* The flipped backward-data GEMM has C / group rows: below this many, its packing outweighs the
 * col2im scatter it saves (16 input channels: 2x slower; 32: 10% faster; docs/performance.md). */
#define FLIP_MIN_CHANNELS 32

enum { BWD_COL2IM, BWD_FLIPPED, BWD_1X1, BWD_DIRECT };

typedef struct {
  int64_t k, hw, cg, ocg, in_hw; /* K, out_h * out_w, channels per group, in and out; h * w */
  int fwd_b, filt_b;             /* images per forward / backward-filter GEMM */
  int bwd;                       /* BWD_* */
  dd_conv_desc flip;             /* BWD_FLIPPED: the convolution that computes dx */
  int flip_b;                    /* its images per GEMM */
  int fwd_direct;                /* forward by the direct kernel (BWD_DIRECT: backward data too) */
  /* workspace layout, in floats: [flipped weights][thread 0][thread 1]... */
  int64_t wflip, per_thread, col, tmp, pdw; /* sizes: col, tmp; pdw: partial dW + dbias */
} conv_plan;

static int is_1x1(const dd_conv_desc *d) {
  return d->kh == 1 && d->kw == 1 && d->sh == 1 && d->sw == 1 && d->ph == 0 && d->pw == 0;
}

static int64_t up16(int64_t n) { return (n + 15) & ~(int64_t)15; }

static int direct_usable(const dd_conv_desc *d);
static int direct_wins(const dd_conv_desc *d);

static int64_t direct_weights_floats(const dd_conv_desc *d);
static int64_t direct_input_floats(const dd_conv_desc *d);

/* Images per GEMM: enough for TARGET_COLS columns, within the col budget and the batch. */
static int images_per_gemm(int64_t k, int64_t hw, int n) {
  int b = 1;
  while (b < n && b * hw < TARGET_COLS && (b + 1) * hw * k <= COL_BUDGET) b++;
  return b;
}

static void plan_conv(conv_plan *p, const dd_conv_desc *d) {
  memset(p, 0, sizeof *p);
  p->cg = d->c / d->group;
  p->ocg = d->out_c / d->group;
  p->k = p->cg * d->kh * d->kw;
  p->hw = (int64_t)d->out_h * d->out_w;
  p->in_hw = (int64_t)d->h * d->w;
  p->fwd_b = is_1x1(d) ? 1 : images_per_gemm(p->k, p->hw, d->n);
  p->filt_b = images_per_gemm(p->k, p->hw, d->n);
  int fph = d->dh * (d->kh - 1) - d->ph, fpw = d->dw * (d->kw - 1) - d->pw;
  p->flip = (dd_conv_desc){.n = d->n, .c = d->out_c, .h = d->out_h, .w = d->out_w, .out_c = d->c,
                           .out_h = d->h, .out_w = d->w, .kh = d->kh, .kw = d->kw, .sh = 1, .sw = 1,
                           .ph = fph, .pw = fpw, .dh = d->dh, .dw = d->dw, .group = d->group};
  int flippable = d->sh == 1 && d->sw == 1 && fph >= 0 && fpw >= 0;
  p->fwd_direct = direct_usable(d) && direct_wins(d);
  if (p->fwd_direct) p->fwd_b = 1;
  if (is_1x1(d)) {
    p->bwd = BWD_1X1;
  } else if (flippable && direct_usable(&p->flip) && direct_wins(&p->flip)) {
    p->bwd = BWD_DIRECT;
  } else if (flippable && p->cg >= FLIP_MIN_CHANNELS) {
    p->bwd = BWD_FLIPPED;
    p->flip_b = images_per_gemm(p->ocg * d->kh * d->kw, p->in_hw, d->n);
    p->wflip = up16((int64_t)d->out_c * p->k);
  } else {
    p->bwd = BWD_COL2IM;
  }
  if (p->fwd_direct && up16(direct_weights_floats(d)) > p->wflip) p->wflip = up16(direct_weights_floats(d));
  if (p->bwd == BWD_DIRECT && up16(direct_weights_floats(&p->flip)) > p->wflip)
    p->wflip = up16(direct_weights_floats(&p->flip));
  int64_t col = p->k * p->hw * (p->fwd_b > p->filt_b ? p->fwd_b : p->filt_b);
  int64_t tmp = p->ocg * p->hw * (p->fwd_b > p->filt_b ? p->fwd_b : p->filt_b);
  if (p->bwd == BWD_FLIPPED) {
    int64_t c2 = p->ocg * d->kh * d->kw * p->in_hw * p->flip_b, t2 = p->cg * p->in_hw * p->flip_b;
    if (c2 > col) col = c2;
    if (t2 > tmp) tmp = t2;
  }
  if (p->fwd_direct && direct_input_floats(d) > col) col = direct_input_floats(d);
  if (p->bwd == BWD_DIRECT && direct_input_floats(&p->flip) > col) col = direct_input_floats(&p->flip);
  p->col = up16(col);
  p->tmp = up16(tmp);
  p->pdw = up16((int64_t)d->out_c * p->k + d->out_c);
  p->per_thread = p->col + p->tmp + p->pdw;
}

static dd_dnnl *dnnl_of(dd_backend *be) { return ((dd_cpu_ctx *)be->ctx)->dnnl; }

const char *dd_cpu_conv_impl(dd_backend *be, const dd_conv_desc *d) {
  const char *s = dd_dnnl_conv_impl(dnnl_of(be), d);
  if (s) return s;
  conv_plan p;
  plan_conv(&p, d);
  return p.fwd_direct ? "direct AVX-512" : "im2col/sgemm";
}

/* The own kernels' part of a convolution's workspace, rounded up to 64 bytes. */
static size_t own_ws_bytes(dd_backend *be, const dd_conv_desc *d) {
  conv_plan p;
  plan_conv(&p, d);
  size_t own = ((size_t)p.wflip + (size_t)threads_of(be) * (size_t)p.per_thread) * sizeof(float);
  return (own + 63) & ~(size_t)63;
}

size_t dd_cpu_conv_workspace(dd_backend *be, const dd_conv_desc *d) {
  /* oneDNN's buffers live in its own arena; the own kernels' workspace is still sized, for calls
   * that oneDNN's primitive does not fit (a bias the descriptor did not announce); after it, the
   * forward's converted input that oneDNN keeps for backward-filter (keep_input) */
  (void)dd_dnnl_conv_prepare(dnnl_of(be), d);
  size_t own = own_ws_bytes(be, d);
  return own + dd_dnnl_conv_keep_input_at(dnnl_of(be), d, own);
}

int dd_cpu_conv_blk_train(dd_backend *be, const dd_conv_desc *d) {
  dd_dnnl *k = dnnl_of(be);
  if (!k || !dd_cpu_blk_train_fast() || !dd_dnnl_conv_prepare(k, d) || !dd_dnnl_conv_impl(k, d)) return 0;
  /* the layer's workspace was sized for its NCHW descriptor: a blocked one whose kept input is
   * larger (another layout chosen for x) does not fit, and stays NCHW */
  dd_conv_desc plain = *d;
  plain.blk_in = plain.blk_out = 0;
  if (dd_dnnl_conv_kept_bytes(k, d) > dd_dnnl_conv_kept_bytes(k, &plain)) return 0;
  /* the kept input where the layer's workspace (sized for d with NCHW activations, whose
   * conversion of x is the same) has room for it: where dd_cpu_conv_workspace put it */
  (void)dd_dnnl_conv_keep_input_at(k, d, own_ws_bytes(be, d));
  return 1;
}

/* ---- im2col / col2im ------------------------------------------------------------------------ */

/* First and one-past-last output index o in [0, out) with o * s + off in [0, in). */
static void valid_range(int out, int in, int s, int off, int *lo, int *hi) {
  int a = off >= 0 ? 0 : (-off + s - 1) / s;
  int b = in - off <= 0 ? 0 : (in - off - 1) / s + 1;
  if (b > out) b = out;
  if (a > b) a = b;
  *lo = a;
  *hi = b;
}

/* col (K rows, row stride ld; each row out_h * out_w) from channels [c0, c0 + cg) of one image
 * x (C, H, W). Row (c, ki, kj) holds x[c][oh * sh - ph + ki * dh][ow * sw - pw + kj * dw], 0 in
 * the padding. */
static void im2col(const dd_conv_desc *d, const float *x, int c0, int cg, float *col, int64_t ld) {
  const int64_t hw = (int64_t)d->out_h * d->out_w, in_hw = (int64_t)d->h * d->w;
  /* stride 1 and output size == input size: each row is the image shifted by one offset */
  const int same = d->sh == 1 && d->sw == 1 && d->out_h == d->h && d->out_w == d->w;
  for (int c = 0; c < cg; c++) {
    const float *xc = x + (int64_t)(c0 + c) * in_hw;
    for (int ki = 0; ki < d->kh; ki++)
      for (int kj = 0; kj < d->kw; kj++) {
        float *row = col + ((int64_t)(c * d->kh + ki) * d->kw + kj) * ld;
        int oy = ki * d->dh - d->ph, ox = kj * d->dw - d->pw; /* input offset of output (0, 0) */
        int h0, h1, w0, w1;
        valid_range(d->out_h, d->h, d->sh, oy, &h0, &h1);
        valid_range(d->out_w, d->w, d->sw, ox, &w0, &w1);
        if (h0 >= h1 || w0 >= w1) {
          memset(row, 0, (size_t)hw * sizeof *row);
          continue;
        }
        memset(row, 0, (size_t)h0 * d->out_w * sizeof *row);
        memset(row + (int64_t)h1 * d->out_w, 0, (size_t)(d->out_h - h1) * d->out_w * sizeof *row);
        if (same) {
          /* one copy of the shifted span, clipped to the image; the columns that wrapped
           * around a row edge are zeroed below */
          int64_t shift = (int64_t)oy * d->w + ox, lo = (int64_t)h0 * d->w, hi = (int64_t)h1 * d->w;
          if (lo < -shift) lo = -shift;
          if (hi > in_hw - shift) hi = in_hw - shift;
          memcpy(row + lo, xc + lo + shift, (size_t)(hi - lo) * sizeof *row);
          if (w0 > 0 || w1 < d->out_w)
            for (int oh = h0; oh < h1; oh++) {
              float *r = row + (int64_t)oh * d->out_w;
              for (int ow = 0; ow < w0; ow++) r[ow] = 0.0f;
              for (int ow = w1; ow < d->out_w; ow++) r[ow] = 0.0f;
            }
          continue;
        }
        for (int oh = h0; oh < h1; oh++) {
          float *r = row + (int64_t)oh * d->out_w;
          const float *xr = xc + (int64_t)(oh * d->sh + oy) * d->w + ox;
          for (int ow = 0; ow < w0; ow++) r[ow] = 0.0f;
          if (d->sw == 1)
            memcpy(r + w0, xr + w0, (size_t)(w1 - w0) * sizeof *r);
          else
            for (int ow = w0; ow < w1; ow++) r[ow] = xr[(int64_t)ow * d->sw];
          for (int ow = w1; ow < d->out_w; ow++) r[ow] = 0.0f;
        }
      }
  }
}

/* Adds col (K, out_h * out_w) back into the channels [c0, c0 + cg) of one image dx (C, H, W):
 * the adjoint of im2col. */
static void col2im_add(const dd_conv_desc *d, const float *col, int c0, int cg, float *dx) {
  const int64_t hw = (int64_t)d->out_h * d->out_w;
  for (int c = 0; c < cg; c++) {
    float *xc = dx + (int64_t)(c0 + c) * d->h * d->w;
    for (int ki = 0; ki < d->kh; ki++)
      for (int kj = 0; kj < d->kw; kj++) {
        const float *row = col + ((int64_t)(c * d->kh + ki) * d->kw + kj) * hw;
        int oy = ki * d->dh - d->ph, ox = kj * d->dw - d->pw;
        int h0, h1, w0, w1;
        valid_range(d->out_h, d->h, d->sh, oy, &h0, &h1);
        valid_range(d->out_w, d->w, d->sw, ox, &w0, &w1);
        for (int oh = h0; oh < h1; oh++) {
          const float *r = row + (int64_t)oh * d->out_w;
          float *xr = xc + (int64_t)(oh * d->sh + oy) * d->w + ox;
          if (d->sw == 1)
            for (int ow = w0; ow < w1; ow++) xr[ow] += r[ow];
          else
            for (int ow = w0; ow < w1; ow++) xr[(int64_t)ow * d->sw] += r[ow];
        }
      }
  }
}

/* ---- direct convolution (AVX-512, stride 1) ------------------------------------------------- */

/* A stride-1 convolution computed without im2col: the image is copied once into a zero-padded
 * plane per channel (Hp = H + 2 pad_h, Wp = W + 2 pad_w), and output position p = oh * Wp + ow
 * of that padded-width grid is sum over c and taps of w * xp[c][p + ki * dh * Wp + kj * dw]. So a
 * tap is one shifted, contiguous read, 16 positions per vector; the Wp - out_w columns per row
 * that fall in the padding are computed and dropped. A register block holds DIRECT_OB output
 * channels x DIRECT_NV vectors (24 accumulators), fed per channel and tap by DIRECT_NV vector
 * loads and DIRECT_OB broadcasts of weights laid out as [group][oc block][c][tap][DIRECT_OB]. */
#define DIRECT_OB 8
#define DIRECT_NV 3
#define DIRECT_MAX_TAPS 64

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DIRECT_X86 1
#include <immintrin.h>
#else
#define DIRECT_X86 0
#endif

static int have_avx512(void) {
#if DIRECT_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
#else
  return 0;
#endif
}

static int direct_usable(const dd_conv_desc *d) {
  return have_avx512() && d->sh == 1 && d->sw == 1 && d->kh * d->kw <= DIRECT_MAX_TAPS;
}

const char *dd_cpu_conv_kernels(void) {
  return have_avx512() ? "direct AVX-512 + im2col/sgemm" : "im2col/sgemm";
}

/* Where the direct kernel beats im2col + GEMM (measured, docs/performance.md): at least
 * DIRECT_MIN_CHANNELS input and output channels per group (3x3, 2 threads: 32 channels 1.5-1.8x,
 * 64 and 128 channels 1.2-1.4x, 256 channels at 8x8 1.1-1.6x; 3 input channels 0.5-0.7x, 16 input
 * channels mixed), and not for 1x1 kernels (one plain GEMM). */
#define DIRECT_MIN_CHANNELS 32
static int direct_wins(const dd_conv_desc *d) {
  return d->kh * d->kw > 1 && d->c / d->group >= DIRECT_MIN_CHANNELS &&
         d->out_c / d->group >= DIRECT_MIN_CHANNELS;
}

static int64_t direct_plane(const dd_conv_desc *d) {
  return (int64_t)(d->h + 2 * d->ph) * (d->w + 2 * d->pw);
}

/* Weights for the kernel: group * (ocg rounded up to DIRECT_OB) * cg * taps floats. */
static int64_t direct_weights_floats(const dd_conv_desc *d) {
  int64_t ocg = d->out_c / d->group, obs = (ocg + DIRECT_OB - 1) / DIRECT_OB;
  return (int64_t)d->group * obs * DIRECT_OB * (d->c / d->group) * d->kh * d->kw;
}

/* Padded planes of one group of one image, and slack for the last block's over-read. */
static int64_t direct_input_floats(const dd_conv_desc *d) {
  return (int64_t)(d->c / d->group) * direct_plane(d) + up16(32 + (int64_t)d->dw * (d->kw - 1));
}

/* wt [group][oc block][c][tap][DIRECT_OB] from w (out_c, c / group, kh, kw); with `flip`, the
 * weights of the flipped convolution that computes dx (out and in channels swapped, taps
 * reversed), where d is that flipped convolution and w the original weights. */
static void direct_weights(const dd_conv_desc *d, float *wt, const float *w, int flip) {
  int64_t ocg = d->out_c / d->group, cg = d->c / d->group, taps = d->kh * d->kw;
  int64_t obs = (ocg + DIRECT_OB - 1) / DIRECT_OB;
  for (int g = 0; g < d->group; g++)
    for (int64_t ob = 0; ob < obs; ob++)
      for (int64_t c = 0; c < cg; c++)
        for (int64_t t = 0; t < taps; t++) {
          float *dst = wt + (((g * obs + ob) * cg + c) * taps + t) * DIRECT_OB;
          for (int o = 0; o < DIRECT_OB; o++) {
            int64_t q = ob * DIRECT_OB + o;
            if (q >= ocg)
              dst[o] = 0.0f;
            else if (!flip)
              dst[o] = w[((g * ocg + q) * cg + c) * taps + t];
            else /* original weight (out = c here, in = q here) */
              dst[o] = w[((g * cg + c) * ocg + q) * taps + (taps - 1 - t)];
          }
        }
}

#if DIRECT_X86
/* out[o][v * 16 + i] (DIRECT_OB rows of DIRECT_NV * 16) = sum over c < cg and taps t of
 * wt[c][t][o] * xp[c * plane + off[t] + v * 16 + i]. nv is a constant in each caller. */
__attribute__((target("avx512f"), always_inline)) static inline void
direct_block(int nv, int64_t cg, int taps, const int64_t *off, int64_t plane, const float *xp,
             const float *wt, float *out) {
  __m512 acc[DIRECT_OB][DIRECT_NV];
  for (int o = 0; o < DIRECT_OB; o++)
    for (int v = 0; v < nv; v++) acc[o][v] = _mm512_setzero_ps();
  for (int64_t c = 0; c < cg; c++) {
    const float *xc = xp + c * plane;
    const float *wc = wt + c * taps * DIRECT_OB;
    for (int t = 0; t < taps; t++) {
      const float *xs = xc + off[t];
      const float *wo = wc + t * DIRECT_OB;
      __m512 x0 = _mm512_loadu_ps(xs);
      __m512 x1 = nv > 1 ? _mm512_loadu_ps(xs + 16) : x0;
      __m512 x2 = nv > 2 ? _mm512_loadu_ps(xs + 32) : x0;
      for (int o = 0; o < DIRECT_OB; o++) {
        __m512 wv = _mm512_set1_ps(wo[o]);
        acc[o][0] = _mm512_fmadd_ps(x0, wv, acc[o][0]);
        if (nv > 1) acc[o][1] = _mm512_fmadd_ps(x1, wv, acc[o][1]);
        if (nv > 2) acc[o][2] = _mm512_fmadd_ps(x2, wv, acc[o][2]);
      }
    }
  }
  for (int o = 0; o < DIRECT_OB; o++)
    for (int v = 0; v < nv; v++) _mm512_storeu_ps(out + o * DIRECT_NV * 16 + v * 16, acc[o][v]);
}

__attribute__((target("avx512f"))) static void direct_block1(int64_t cg, int taps, const int64_t *off,
                                                             int64_t plane, const float *xp,
                                                             const float *wt, float *out) {
  direct_block(1, cg, taps, off, plane, xp, wt, out);
}
__attribute__((target("avx512f"))) static void direct_block2(int64_t cg, int taps, const int64_t *off,
                                                             int64_t plane, const float *xp,
                                                             const float *wt, float *out) {
  direct_block(2, cg, taps, off, plane, xp, wt, out);
}
__attribute__((target("avx512f"))) static void direct_block3(int64_t cg, int taps, const int64_t *off,
                                                             int64_t plane, const float *xp,
                                                             const float *wt, float *out) {
  direct_block(3, cg, taps, off, plane, xp, wt, out);
}
#endif

/* dst (Hp, Wp) = one input plane x (H, W) with d's zero padding around it. */
static void pad_plane(const dd_conv_desc *d, float *dst, const float *x) {
  int hp = d->h + 2 * d->ph, wp = d->w + 2 * d->pw;
  memset(dst, 0, (size_t)d->ph * wp * sizeof *dst);
  for (int i = 0; i < d->h; i++) {
    float *r = dst + (int64_t)(i + d->ph) * wp;
    memset(r, 0, (size_t)d->pw * sizeof *r);
    memcpy(r + d->pw, x + (int64_t)i * d->w, (size_t)d->w * sizeof *r);
    memset(r + d->pw + d->w, 0, (size_t)d->pw * sizeof *r);
  }
  memset(dst + (int64_t)(d->h + d->ph) * wp, 0, (size_t)(hp - d->h - d->ph) * wp * sizeof *dst);
}

/* y (image n: out_c, out_h, out_w) = conv(x, w) + bias for a stride-1 d, with wt from
 * direct_weights and xp a direct_input_floats scratch. */
static void direct_image(const dd_conv_desc *d, float *y, const float *x, const float *wt,
                         const float *bias, int n, float *xp) {
#if DIRECT_X86
  int wp = d->w + 2 * d->pw, taps = d->kh * d->kw;
  int64_t plane = direct_plane(d), cg = d->c / d->group, ocg = d->out_c / d->group;
  int64_t obs = (ocg + DIRECT_OB - 1) / DIRECT_OB, npos = (int64_t)d->out_h * wp;
  int64_t off[DIRECT_MAX_TAPS], in_hw = (int64_t)d->h * d->w, out_hw = (int64_t)d->out_h * d->out_w;
  float out[DIRECT_OB * DIRECT_NV * 16];
  for (int ki = 0; ki < d->kh; ki++)
    for (int kj = 0; kj < d->kw; kj++) off[ki * d->kw + kj] = (int64_t)ki * d->dh * wp + kj * d->dw;
  int64_t slack = direct_input_floats(d) - cg * plane;
  for (int g = 0; g < d->group; g++) {
    for (int64_t c = 0; c < cg; c++)
      pad_plane(d, xp + c * plane, x + ((int64_t)n * d->c + g * cg + c) * in_hw);
    memset(xp + cg * plane, 0, (size_t)slack * sizeof *xp);
    const float *wg = wt + g * obs * DIRECT_OB * cg * taps;
    float *yg = y + ((int64_t)n * d->out_c + g * ocg) * out_hw;
    for (int64_t ob = 0; ob < obs; ob++) {
      const float *wb = wg + ob * cg * taps * DIRECT_OB;
      int nout = ocg - ob * DIRECT_OB < DIRECT_OB ? (int)(ocg - ob * DIRECT_OB) : DIRECT_OB;
      for (int64_t p0 = 0; p0 < npos; p0 += DIRECT_NV * 16) {
        int64_t left = npos - p0;
        int nv = left > 32 ? 3 : left > 16 ? 2 : 1;
        if (nv == 3)
          direct_block3(cg, taps, off, plane, xp + p0, wb, out);
        else if (nv == 2)
          direct_block2(cg, taps, off, plane, xp + p0, wb, out);
        else
          direct_block1(cg, taps, off, plane, xp + p0, wb, out);
        /* valid positions of the block, row segment by row segment */
        int64_t p1 = p0 + nv * 16 < npos ? p0 + nv * 16 : npos;
        for (int64_t p = p0; p < p1;) {
          int64_t oh = p / wp, ow = p % wp, end = p + (wp - ow) < p1 ? p + (wp - ow) : p1;
          if (ow < d->out_w) {
            int64_t len = (end - p) < d->out_w - ow ? end - p : d->out_w - ow;
            for (int o = 0; o < nout; o++) {
              float *dst = yg + (ob * DIRECT_OB + o) * out_hw + oh * d->out_w + ow;
              const float *src = out + o * DIRECT_NV * 16 + (p - p0);
              float b = bias ? bias[g * ocg + ob * DIRECT_OB + o] : 0.0f;
              for (int64_t i = 0; i < len; i++) dst[i] = src[i] + b;
            }
          }
          p = end;
        }
      }
    }
  }
#else
  (void)d, (void)y, (void)x, (void)wt, (void)bias, (void)n, (void)xp;
#endif
}


/* ---- forward ------------------------------------------------------------------------------ */

typedef struct {
  const dd_conv_desc *d;
  const conv_plan *p;
  int nb; /* images per task */
  float *y, *dx, *dw, *dbias, *ws;
  const float *x, *w, *bias, *dy;
} conv_job;

static float *thread_ws(const conv_job *j, int t) {
  return j->ws + j->p->wflip + (int64_t)t * j->p->per_thread;
}

/* y (images [n0, n0 + nb), out_c, HW) = conv(x, w) + bias, for the geometry d. Shared by the
 * forward pass and the flipped backward-data pass. */
static void forward_images(const dd_conv_desc *d, int64_t k, float *y, const float *x, const float *w,
                           const float *bias, int n0, int nb, float *col, float *tmp) {
  int64_t hw = (int64_t)d->out_h * d->out_w, in_hw = (int64_t)d->h * d->w;
  int64_t cg = d->c / d->group, ocg = d->out_c / d->group, ld = nb * hw;
  for (int g = 0; g < d->group; g++) {
    const float *wg = w + g * ocg * k;
    if (nb == 1 && is_1x1(d)) {
      dd_sgemm(0, 0, (int)ocg, (int)hw, (int)k, 1.0f, wg, (int)k, x + ((int64_t)n0 * d->c + g * cg) * in_hw,
               (int)hw, 0.0f, y + ((int64_t)n0 * d->out_c + g * ocg) * hw, (int)hw);
      continue;
    }
    for (int b = 0; b < nb; b++)
      im2col(d, x + (int64_t)(n0 + b) * d->c * in_hw, (int)(g * cg), (int)cg, col + b * hw, ld);
    if (nb == 1) {
      dd_sgemm(0, 0, (int)ocg, (int)hw, (int)k, 1.0f, wg, (int)k, col, (int)hw, 0.0f,
               y + ((int64_t)n0 * d->out_c + g * ocg) * hw, (int)hw);
      continue;
    }
    dd_sgemm(0, 0, (int)ocg, (int)ld, (int)k, 1.0f, wg, (int)k, col, (int)ld, 0.0f, tmp, (int)ld);
    for (int b = 0; b < nb; b++)
      for (int64_t oc = 0; oc < ocg; oc++)
        memcpy(y + ((int64_t)(n0 + b) * d->out_c + g * ocg + oc) * hw, tmp + oc * ld + b * hw,
               (size_t)hw * sizeof *y);
  }
  if (bias)
    for (int b = 0; b < nb; b++)
      for (int oc = 0; oc < d->out_c; oc++) {
        float v = bias[oc], *yr = y + ((int64_t)(n0 + b) * d->out_c + oc) * hw;
        for (int64_t i = 0; i < hw; i++) yr[i] += v;
      }
}

static void conv_fwd_task(void *ctx, int task, int t) {
  conv_job *j = ctx;
  int n0 = task * j->nb, nb = j->d->n - n0 < j->nb ? j->d->n - n0 : j->nb;
  float *col = thread_ws(j, t);
  if (j->p->fwd_direct) {
    direct_image(j->d, j->y, j->x, j->ws, j->bias, task, col);
    return;
  }
  forward_images(j->d, j->p->k, j->y, j->x, j->w, j->bias, n0, nb, col, col + j->p->col);
}

void dd_cpu_conv_forward(dd_backend *be, const dd_conv_desc *d, float *y, const float *x,
                         const float *w, const float *bias, void *ws) {
  if (dd_dnnl_conv_forward(dnnl_of(be), d, y, x, w, bias, ws) == 0) return;
  if (d->blk_in || d->blk_out) return; /* only oneDNN runs blocked layouts (conv_blk_train said it does) */
  conv_plan p;
  plan_conv(&p, d);
  conv_job j = {.d = d, .p = &p, .nb = p.fwd_b, .y = y, .x = x, .w = w, .bias = bias, .ws = ws};
  if (p.fwd_direct) direct_weights(d, ws, w, 0);
  dd_threadpool_run(pool_of(be), (d->n + p.fwd_b - 1) / p.fwd_b, conv_fwd_task, &j);
}

/* ---- backward data ------------------------------------------------------------------------ */

/* dx via the flipped convolution: x := dy, y := dx, weights := the flipped ones. */
static void conv_bwd_flip_task(void *ctx, int task, int t) {
  conv_job *j = ctx;
  const dd_conv_desc *f = &j->p->flip;
  int n0 = task * j->nb, nb = f->n - n0 < j->nb ? f->n - n0 : j->nb;
  float *col = thread_ws(j, t);
  forward_images(f, (int64_t)(f->c / f->group) * f->kh * f->kw, j->dx, j->dy, j->ws, NULL, n0, nb, col,
                 col + j->p->col);
}

static void conv_bwd_direct_task(void *ctx, int n, int t) {
  conv_job *j = ctx;
  direct_image(&j->p->flip, j->dx, j->dy, j->ws, NULL, n, thread_ws(j, t));
}

static void conv_bwd_data_task(void *ctx, int n, int t) {
  conv_job *j = ctx;
  const dd_conv_desc *d = j->d;
  const conv_plan *p = j->p;
  int64_t hw = p->hw, k = p->k, ocg = p->ocg, cg = p->cg;
  float *col = thread_ws(j, t);
  float *dx = j->dx + (int64_t)n * d->c * p->in_hw;
  const float *dy = j->dy + (int64_t)n * d->out_c * hw;
  if (p->bwd == BWD_1X1) {
    for (int g = 0; g < d->group; g++)
      dd_sgemm(1, 0, (int)k, (int)hw, (int)ocg, 1.0f, j->w + g * ocg * k, (int)k, dy + g * ocg * hw, (int)hw,
               0.0f, dx + g * cg * p->in_hw, (int)hw);
    return;
  }
  memset(dx, 0, (size_t)d->c * p->in_hw * sizeof *dx);
  for (int g = 0; g < d->group; g++) {
    dd_sgemm(1, 0, (int)k, (int)hw, (int)ocg, 1.0f, j->w + g * ocg * k, (int)k, dy + g * ocg * hw, (int)hw,
             0.0f, col, (int)hw);
    col2im_add(d, col, (int)(g * cg), (int)cg, dx);
  }
}

/* wf (c, out_c / group, kh, kw) from w (out_c, c / group, kh, kw): channels transposed within
 * each group, taps reversed. */
static void flip_weights(const dd_conv_desc *d, const conv_plan *p, float *wf, const float *w) {
  int taps = d->kh * d->kw;
  for (int g = 0; g < d->group; g++)
    for (int64_t oc = 0; oc < p->ocg; oc++)
      for (int64_t c = 0; c < p->cg; c++) {
        const float *src = w + ((g * p->ocg + oc) * p->cg + c) * taps;
        float *dst = wf + ((g * p->cg + c) * p->ocg + oc) * taps;
        for (int t = 0; t < taps; t++) dst[t] = src[taps - 1 - t];
      }
}

void dd_cpu_conv_backward_data(dd_backend *be, const dd_conv_desc *d, float *dx, const float *dy,
                               const float *w, void *ws) {
  if (dd_dnnl_conv_backward_data(dnnl_of(be), d, dx, dy, w) == 0) return;
  if (d->blk_in || d->blk_out) return; /* only oneDNN runs blocked layouts (conv_blk_train said it does) */
  conv_plan p;
  plan_conv(&p, d);
  conv_job j = {.d = d, .p = &p, .dx = dx, .dy = dy, .w = w, .ws = ws};
  if (p.bwd == BWD_DIRECT) {
    direct_weights(&p.flip, ws, w, 1);
    dd_threadpool_run(pool_of(be), d->n, conv_bwd_direct_task, &j);
    return;
  }
  if (p.bwd == BWD_FLIPPED) {
    flip_weights(d, &p, ws, w);
    j.nb = p.flip_b;
    dd_threadpool_run(pool_of(be), (d->n + p.flip_b - 1) / p.flip_b, conv_bwd_flip_task, &j);
    return;
  }
  dd_threadpool_run(pool_of(be), d->n, conv_bwd_data_task, &j);
}

/* ---- backward filter ---------------------------------------------------------------------- */

/* Thread t: images [t * N / T, (t + 1) * N / T), filt_b at a time, into its partial sums. */
typedef struct {
  conv_job j;
  int threads;
} conv_filter_job;

static void conv_bwd_filter_task(void *ctx, int t, int thread) {
  (void)thread;
  conv_filter_job *fj = ctx;
  conv_job *j = &fj->j;
  const dd_conv_desc *d = j->d;
  const conv_plan *p = j->p;
  int64_t hw = p->hw, k = p->k, ocg = p->ocg, cg = p->cg;
  float *col = thread_ws(j, t), *tmp = col + p->col, *pdw = tmp + p->tmp, *pdb = pdw + (int64_t)d->out_c * k;
  memset(pdw, 0, (size_t)(d->out_c * k + d->out_c) * sizeof *pdw);
  int first = (int)((int64_t)d->n * t / fj->threads), last = (int)((int64_t)d->n * (t + 1) / fj->threads);
  for (int n0 = first; n0 < last; n0 += p->filt_b) {
    int nb = last - n0 < p->filt_b ? last - n0 : p->filt_b;
    int64_t ld = nb * hw;
    for (int g = 0; g < d->group && j->dw; g++) {
      const float *src = col, *a = tmp;
      if (nb == 1 && is_1x1(d))
        src = j->x + ((int64_t)n0 * d->c + g * cg) * p->in_hw;
      else
        for (int b = 0; b < nb; b++)
          im2col(d, j->x + (int64_t)(n0 + b) * d->c * p->in_hw, (int)(g * cg), (int)cg, col + b * hw, ld);
      if (nb == 1)
        a = j->dy + ((int64_t)n0 * d->out_c + g * ocg) * hw;
      else
        for (int b = 0; b < nb; b++)
          for (int64_t oc = 0; oc < ocg; oc++)
            memcpy(tmp + oc * ld + b * hw, j->dy + ((int64_t)(n0 + b) * d->out_c + g * ocg + oc) * hw,
                   (size_t)hw * sizeof *tmp);
      dd_sgemm(0, 1, (int)ocg, (int)k, (int)ld, 1.0f, a, (int)ld, src, (int)ld, 1.0f, pdw + g * ocg * k, (int)k);
    }
    if (j->dbias)
      for (int b = 0; b < nb; b++)
        for (int oc = 0; oc < d->out_c; oc++) {
          const float *r = j->dy + ((int64_t)(n0 + b) * d->out_c + oc) * hw;
          double s = 0;
          for (int64_t i = 0; i < hw; i++) s += r[i];
          pdb[oc] += (float)s;
        }
  }
}

void dd_cpu_conv_backward_filter(dd_backend *be, const dd_conv_desc *d, float *dw, float *dbias,
                                 const float *dy, const float *x, void *ws) {
  if (dd_dnnl_conv_backward_filter(dnnl_of(be), d, dw, dbias, dy, x, ws) == 0) return;
  if (d->blk_in || d->blk_out) return; /* only oneDNN runs blocked layouts (conv_blk_train said it does) */
  conv_plan p;
  plan_conv(&p, d);
  int threads = threads_of(be);
  if (threads > d->n) threads = d->n;
  conv_filter_job fj = {{.d = d, .p = &p, .dw = dw, .dbias = dbias, .dy = dy, .x = x, .ws = ws}, threads};
  dd_threadpool_run(pool_of(be), threads, conv_bwd_filter_task, &fj);
  int64_t wcount = (int64_t)d->out_c * p.k;
  for (int t = 0; t < threads; t++) {
    const float *pdw = thread_ws(&fj.j, t) + p.col + p.tmp;
    if (dw)
      for (int64_t i = 0; i < wcount; i++) dw[i] += pdw[i];
    if (dbias)
      for (int oc = 0; oc < d->out_c; oc++) dbias[oc] += pdw[wcount + oc];
  }
}
