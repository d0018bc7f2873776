/* Convolution through cuDNN's legacy API (cudnn_cnn_v9.h), Caffe's semantics (backend.h):
 * cross-correlation over NCHW floats, groups, stride, padding, dilation.
 *
 * A plan per geometry lives in ctx->conv: the tensor, filter and convolution descriptors and the
 * three algorithms, keyed by the whole dd_conv_desc. dd_cuda_conv_workspace (called once per
 * layer at setup) builds the plan and returns the largest workspace of the three passes; the
 * compute functions find it by a linear scan (a net has tens of convolutions) and allocate
 * nothing. A plan missing at compute time (no setup call) is built then, once.
 *
 * Numerics: the convolution descriptor's math type is CUDNN_FMA_MATH, which restricts cuDNN to
 * FMA kernels. CUDNN_DEFAULT_MATH would let Ampere and Hopper run FP32 convolutions on TF32
 * tensor cores (10-bit mantissas), far outside the CPU reference's 1e-4; FMA_MATH is the mode
 * that rules TF32 out (short of NVIDIA_TF32_OVERRIDE=0 in the environment).
 *
 * Algorithms are chosen by measurement with DD_CUDNN_ALGO=measure (written, compiled, not yet
 * run on a GPU: the heuristics stay the default until scripts/device_check.sh has run both): when a geometry's
 * plan is first built (at layer setup), cuDNN's candidates for each pass are run and timed
 * (cudnnFind*AlgorithmEx) on device buffers of the layer's shapes, allocated for the search and
 * freed after it (the job's blobs may not exist yet at setup; timings do not depend on the values),
 * with a workspace of at most DD_CUDA_CONV_WS_MAX; the fastest that is supported, not a
 * tensor-core (TF32) kernel and CUDNN_DETERMINISTIC wins. Choices are kept per device and geometry
 * for the life of the process (the daemon's later jobs reuse them: `choices` below), so one job
 * measures a shape once and jobs of one daemon agree. Where no deterministic candidate could be
 * timed (the search failed, say for memory), or without DD_CUDNN_ALGO=measure, cuDNN's heuristics
 * choose (cudnnGet*Algorithm_v7, best first): the first one that is supported, is not a
 * tensor-core kernel, reports CUDNN_DETERMINISTIC, and whose workspace, queried again under
 * FMA_MATH, is at most DD_CUDA_CONV_WS_MAX. Determinism is required of all three passes (backward
 * data ALGO_0 and backward filter ALGO_0 and ALGO_3 add with atomics and are skipped), so runs
 * repeat bit for bit; only when no deterministic candidate fits does a second pass accept a
 * non-deterministic one, and failing that the plain fallbacks (forward IMPLICIT_GEMM, backward
 * ALGO_1) are tried, whatever their workspace. Different deterministic algorithms round
 * differently, so a measured choice can differ between devices (and between daemons whose timings
 * came out differently); within one process it never changes. dd_cuda_conv_impl names the
 * choice ("cuDNN IMPLICIT_PRECOMP_GEMM / ALGO_1 / ALGO_1, timed"), which `distilld time` lists.
 *
 * Bias: forward adds bias[oc] with a kernel of ours; backward_filter's dbias[oc] += sum over
 * (N, H, W) of dy is a deterministic reduction: a (splits, channels) grid of block partials in
 * double in ctx->d_red, summed in a fixed order by a second kernel (a warp per channel). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The legacy convolution API is marked deprecated in cuDNN 9 (warnings only with
 * CUDNN_WARN_DEPRECATED); it is the API this file means to use. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#include "cuda_internal.h"
#include "cuda_reduce.h"

#define NT DD_CUDA_THREADS

/* The most workspace one pass may use (bytes). */
#define DD_CUDA_CONV_WS_MAX ((size_t)256 << 20)

typedef struct {
  dd_conv_desc key;
  int ok; /* descriptors built and algorithms chosen */
  cudnnTensorDescriptor_t x, y;
  cudnnFilterDescriptor_t w;
  cudnnConvolutionDescriptor_t conv;
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t bwd_data;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter;
  size_t ws_fwd, ws_data, ws_filter; /* bytes each algorithm needs */
  int timed;                          /* the algorithms were chosen by measurement */
  char impl[96];                      /* dd_cuda_conv_impl's text */
} conv_plan;

/* Measured choices, per device and geometry, for the life of the process (every context). */
typedef struct {
  int device;
  dd_conv_desc key;
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t bwd_data;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter;
  size_t ws_fwd, ws_data, ws_filter;
} conv_choice;

static struct {
  pthread_mutex_t lock;
  conv_choice *c;
  int n, cap;
} choices = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0};

struct dd_cuda_conv_cache {
  conv_plan *p;
  int n, cap;
};

/* ---- plans -------------------------------------------------------------------------------------- */

static void plan_release(conv_plan *p) {
  if (p->conv) cudnnDestroyConvolutionDescriptor(p->conv);
  if (p->w) cudnnDestroyFilterDescriptor(p->w);
  if (p->y) cudnnDestroyTensorDescriptor(p->y);
  if (p->x) cudnnDestroyTensorDescriptor(p->x);
  p->conv = NULL;
  p->w = NULL;
  p->x = p->y = NULL;
  p->ok = 0;
}

static int tensor_core_math(cudnnMathType_t m) {
  return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

/* Picks from cuDNN's ranked candidates perf[0 .. got) (see the file comment). ws(algo, &bytes)
 * queries an algorithm's workspace under the descriptor's math type. Returns 0 and sets *algo and
 * *bytes, or -1. */
template <typename Perf, typename Algo, typename Ws>
static int choose(const Perf *perf, int got, Algo fallback, Ws ws, Algo *algo, size_t *bytes) {
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < got; i++) {
      const Perf *q = &perf[i];
      size_t b = 0;
      if (q->status != CUDNN_STATUS_SUCCESS || tensor_core_math(q->mathType)) continue;
      if (pass == 0 && q->determinism != CUDNN_DETERMINISTIC) continue;
      if (ws(q->algo, &b) != CUDNN_STATUS_SUCCESS || b > DD_CUDA_CONV_WS_MAX) continue;
      *algo = q->algo;
      *bytes = b;
      return 0;
    }
  size_t b = 0;
  if (ws(fallback, &b) == CUDNN_STATUS_SUCCESS) {
    *algo = fallback;
    *bytes = b;
    return 0;
  }
  return -1;
}

#define PLAN_CHECK(call)                                                 \
  do {                                                                   \
    cudnnStatus_t s_ = (call);                                           \
    if (s_ != CUDNN_STATUS_SUCCESS) {                                    \
      dd_cuda_fail(c, #call, __FILE__, __LINE__, cudnnGetErrorString(s_)); \
      return -1;                                                         \
    }                                                                    \
  } while (0)

/* cuDNN's heuristics choose p's algorithms (see the file comment). Returns 0, or -1 with the
 * failure recorded in c. */
static int plan_heuristic(dd_cuda_ctx *c, conv_plan *p) {
  cudnnHandle_t h = c->cudnn;
  int got = 0;
  cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  PLAN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, p->x, p->w, p->conv, p->y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                                    &got, fp));
  auto fws = [&](cudnnConvolutionFwdAlgo_t a, size_t *b) {
    return cudnnGetConvolutionForwardWorkspaceSize(h, p->x, p->w, p->conv, p->y, a, b);
  };
  if (choose(fp, got, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, fws, &p->fwd, &p->ws_fwd)) {
    dd_cuda_fail(c, "cudnnGetConvolutionForwardAlgorithm_v7", __FILE__, __LINE__,
                 "no usable FP32 forward algorithm");
    return -1;
  }

  cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  PLAN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p->w, p->y, p->conv, p->x,
                                                         CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, dp));
  auto dws = [&](cudnnConvolutionBwdDataAlgo_t a, size_t *b) {
    return cudnnGetConvolutionBackwardDataWorkspaceSize(h, p->w, p->y, p->conv, p->x, a, b);
  };
  if (choose(dp, got, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, dws, &p->bwd_data, &p->ws_data)) {
    dd_cuda_fail(c, "cudnnGetConvolutionBackwardDataAlgorithm_v7", __FILE__, __LINE__,
                 "no usable FP32 backward-data algorithm");
    return -1;
  }

  cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  PLAN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p->x, p->y, p->conv, p->w,
                                                           CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, wp));
  auto wws = [&](cudnnConvolutionBwdFilterAlgo_t a, size_t *b) {
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p->x, p->y, p->conv, p->w, a, b);
  };
  if (choose(wp, got, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, wws, &p->bwd_filter, &p->ws_filter)) {
    dd_cuda_fail(c, "cudnnGetConvolutionBackwardFilterAlgorithm_v7", __FILE__, __LINE__,
                 "no usable FP32 backward-filter algorithm");
    return -1;
  }
  return 0;
}

/* The fastest timed candidate that is supported, FMA (not tensor-core) and deterministic, and
 * whose workspace (queried again, as for the heuristics) is at most cap. Returns 0 or -1. */
template <typename Perf, typename Algo, typename Ws>
static int choose_timed(const Perf *perf, int got, Ws ws, size_t cap, Algo *algo, size_t *bytes) {
  for (int i = 0; i < got; i++) { /* cuDNN returns them fastest first */
    const Perf *q = &perf[i];
    size_t b = 0;
    if (q->status != CUDNN_STATUS_SUCCESS || tensor_core_math(q->mathType)) continue;
    if (q->determinism != CUDNN_DETERMINISTIC) continue;
    if (ws(q->algo, &b) != CUDNN_STATUS_SUCCESS || b > cap) continue;
    *algo = q->algo;
    *bytes = b;
    return 0;
  }
  return -1;
}

/* Times cuDNN's candidates for p's three passes on buffers of p's shapes (see the file comment).
 * Returns 0 with p's algorithms set, or -1 (nothing set; CUDA's error state left clear). */
static int plan_measure(dd_cuda_ctx *c, conv_plan *p) {
  const dd_conv_desc *d = &p->key;
  cudnnHandle_t h = c->cudnn;
  size_t xb = (size_t)d->n * d->c * d->h * d->w * sizeof(float);
  size_t yb = (size_t)d->n * d->out_c * d->out_h * d->out_w * sizeof(float);
  size_t wb = (size_t)d->out_c * (d->c / d->group) * d->kh * d->kw * sizeof(float);
  void *x = NULL, *y = NULL, *w = NULL, *ws = NULL;
  size_t cap = DD_CUDA_CONV_WS_MAX;
  int r = -1;
  if (cudaMalloc(&x, xb ? xb : 4) != cudaSuccess || cudaMalloc(&y, yb ? yb : 4) != cudaSuccess ||
      cudaMalloc(&w, wb ? wb : 4) != cudaSuccess)
    goto done;
  while (cap >= ((size_t)8 << 20) && cudaMalloc(&ws, cap) != cudaSuccess) cap /= 2; /* as much as the device gives */
  if (!ws) goto done;
  (void)cudaGetLastError(); /* a refused size above is no failure of the job */
  if (cudaMemsetAsync(x, 0, xb, c->stream) != cudaSuccess || cudaMemsetAsync(y, 0, yb, c->stream) != cudaSuccess ||
      cudaMemsetAsync(w, 0, wb, c->stream) != cudaSuccess)
    goto done;
  {
    int got = 0;
    cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    auto fws = [&](cudnnConvolutionFwdAlgo_t a, size_t *b) {
      return cudnnGetConvolutionForwardWorkspaceSize(h, p->x, p->w, p->conv, p->y, a, b);
    };
    if (cudnnFindConvolutionForwardAlgorithmEx(h, p->x, x, p->w, w, p->conv, p->y, y,
                                               CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, fp, ws,
                                               cap) != CUDNN_STATUS_SUCCESS ||
        choose_timed(fp, got, fws, cap, &p->fwd, &p->ws_fwd))
      goto done;
    cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    auto dws = [&](cudnnConvolutionBwdDataAlgo_t a, size_t *b) {
      return cudnnGetConvolutionBackwardDataWorkspaceSize(h, p->w, p->y, p->conv, p->x, a, b);
    };
    if (cudnnFindConvolutionBackwardDataAlgorithmEx(h, p->w, w, p->y, y, p->conv, p->x, x,
                                                    CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, dp, ws,
                                                    cap) != CUDNN_STATUS_SUCCESS ||
        choose_timed(dp, got, dws, cap, &p->bwd_data, &p->ws_data))
      goto done;
    cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    auto wws = [&](cudnnConvolutionBwdFilterAlgo_t a, size_t *b) {
      return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p->x, p->y, p->conv, p->w, a, b);
    };
    if (cudnnFindConvolutionBackwardFilterAlgorithmEx(h, p->x, x, p->y, y, p->conv, p->w, w,
                                                      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, wp, ws,
                                                      cap) != CUDNN_STATUS_SUCCESS ||
        choose_timed(wp, got, wws, cap, &p->bwd_filter, &p->ws_filter))
      goto done;
  }
  r = 0;
done:
  if (cudaStreamSynchronize(c->stream) != cudaSuccess) r = -1; /* the search's work is done before its buffers go */
  cudaFree(ws);
  cudaFree(w);
  cudaFree(y);
  cudaFree(x);
  (void)cudaGetLastError();
  return r;
}

static const char *fwd_name(int a) {
  static const char *n[] = {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT", "FFT", "FFT_TILING",
                            "WINOGRAD", "WINOGRAD_NONFUSED"};
  return a >= 0 && a < (int)(sizeof n / sizeof n[0]) ? n[a] : "?";
}
static const char *data_name(int a) {
  static const char *n[] = {"ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
  return a >= 0 && a < (int)(sizeof n / sizeof n[0]) ? n[a] : "?";
}
static const char *filter_name(int a) {
  static const char *n[] = {"ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING"};
  return a >= 0 && a < (int)(sizeof n / sizeof n[0]) ? n[a] : "?";
}

/* p's algorithms: with DD_CUDNN_ALGO=measure a measured choice this process made before for the
 * device and geometry or a new measurement; else, or where measuring fails, the heuristics.
 * Returns 0 or -1. */
static int plan_choose(dd_cuda_ctx *c, conv_plan *p) {
  const char *mode = getenv("DD_CUDNN_ALGO");
  int measure = mode && !strcmp(mode, "measure");
  p->timed = 0;
  if (measure) {
    pthread_mutex_lock(&choices.lock);
    for (int i = 0; i < choices.n && !p->timed; i++) {
      const conv_choice *q = &choices.c[i];
      if (q->device != c->device || memcmp(&q->key, &p->key, sizeof p->key)) continue;
      p->fwd = q->fwd, p->bwd_data = q->bwd_data, p->bwd_filter = q->bwd_filter;
      p->ws_fwd = q->ws_fwd, p->ws_data = q->ws_data, p->ws_filter = q->ws_filter;
      p->timed = 1;
    }
    pthread_mutex_unlock(&choices.lock);
    /* two contexts measuring one geometry at once both measure; the first to finish is kept */
    if (!p->timed && !plan_measure(c, p)) {
      p->timed = 1;
      pthread_mutex_lock(&choices.lock);
      if (choices.n == choices.cap) {
        int cap = choices.cap ? 2 * choices.cap : 64;
        conv_choice *nc = (conv_choice *)realloc(choices.c, (size_t)cap * sizeof *nc);
        if (nc) choices.c = nc, choices.cap = cap;
      }
      if (choices.n < choices.cap)
        choices.c[choices.n++] = conv_choice{c->device,   p->key,    p->fwd,      p->bwd_data,
                                             p->bwd_filter, p->ws_fwd, p->ws_data, p->ws_filter};
      pthread_mutex_unlock(&choices.lock);
    }
  }
  if (!p->timed && plan_heuristic(c, p)) return -1;
  snprintf(p->impl, sizeof p->impl, "cuDNN %s / %s / %s, %s", fwd_name(p->fwd), data_name(p->bwd_data),
           filter_name(p->bwd_filter), p->timed ? "timed" : "heuristic");
  return 0;
}

/* Builds p's descriptors and chooses its algorithms. Returns 0, or -1 with the failure recorded
 * in c (the caller releases p). */
static int plan_build(dd_cuda_ctx *c, conv_plan *p) {
  const dd_conv_desc *d = &p->key;
  PLAN_CHECK(cudnnCreateTensorDescriptor(&p->x));
  PLAN_CHECK(cudnnCreateTensorDescriptor(&p->y));
  PLAN_CHECK(cudnnCreateFilterDescriptor(&p->w));
  PLAN_CHECK(cudnnCreateConvolutionDescriptor(&p->conv));
  PLAN_CHECK(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, d->n, d->c, d->h, d->w));
  PLAN_CHECK(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, d->n, d->out_c, d->out_h,
                                        d->out_w));
  PLAN_CHECK(cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, d->out_c, d->c / d->group, d->kh,
                                        d->kw));
  PLAN_CHECK(cudnnSetConvolution2dDescriptor(p->conv, d->ph, d->pw, d->sh, d->sw, d->dh, d->dw,
                                             CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  PLAN_CHECK(cudnnSetConvolutionGroupCount(p->conv, d->group));
  PLAN_CHECK(cudnnSetConvolutionMathType(p->conv, CUDNN_FMA_MATH));
  int on, oc, oh, ow;
  PLAN_CHECK(cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &on, &oc, &oh, &ow));
  if (on != d->n || oc != d->out_c || oh != d->out_h || ow != d->out_w) {
    dd_cuda_fail(c, "cudnnGetConvolution2dForwardOutputDim", __FILE__, __LINE__,
                 "cuDNN's output shape differs from the layer's");
    return -1;
  }

  if (plan_choose(c, p)) return -1;
  p->ok = 1;
  return 0;
}

/* The plan for d: found, or built and added. NULL when it cannot be built (the failure is
 * recorded in c) or out of host memory. */
static conv_plan *plan_for(dd_cuda_ctx *c, const dd_conv_desc *d) {
  struct dd_cuda_conv_cache *cc = c->conv;
  if (cc)
    for (int i = 0; i < cc->n; i++)
      if (memcmp(&cc->p[i].key, d, sizeof *d) == 0) return cc->p[i].ok ? &cc->p[i] : NULL;
  if (c->failed) return NULL;
  if (!cc) {
    cc = (struct dd_cuda_conv_cache *)calloc(1, sizeof *cc);
    if (!cc) {
      dd_cuda_fail(c, "conv plan cache", __FILE__, __LINE__, "out of host memory");
      return NULL;
    }
    c->conv = cc;
  }
  if (cc->n == cc->cap) {
    int cap = cc->cap ? 2 * cc->cap : 16;
    conv_plan *np = (conv_plan *)realloc(cc->p, (size_t)cap * sizeof *np);
    if (!np) {
      dd_cuda_fail(c, "conv plan cache", __FILE__, __LINE__, "out of host memory");
      return NULL;
    }
    cc->p = np;
    cc->cap = cap;
  }
  conv_plan *p = &cc->p[cc->n];
  memset(p, 0, sizeof *p);
  memcpy(&p->key, d, sizeof *d);
  if (plan_build(c, p)) {
    plan_release(p);
    return NULL;
  }
  cc->n++;
  return p;
}

extern "C" void dd_cuda_conv_cache_destroy(dd_cuda_ctx *c) {
  struct dd_cuda_conv_cache *cc = c->conv;
  if (!cc) return;
  for (int i = 0; i < cc->n; i++) plan_release(&cc->p[i]);
  free(cc->p);
  free(cc);
  c->conv = NULL;
}

/* ---- bias kernels ------------------------------------------------------------------------------- */

/* y (N, C, HW) += bias[c] */
static __global__ void bias_add_kernel(int64_t total, int64_t ch, int64_t hw, float *y, const float *bias) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t q = div_nn(i, hw), o = q - div_nn(q, ch) * ch;
    y[i] = __fadd_rn(y[i], bias[o]);
  }
}

/* Block (split, k) sums dy over its share [m * split / splits, m * (split + 1) / splits) of channel
 * c0 + k's m = N * HW elements (element j: image j / hw, position j % hw) into
 * part[k * splits + split], or, with one split, adds the sum to dbias directly. */
static __global__ void bias_grad_kernel(int64_t n, int64_t ch, int64_t hw, int64_t c0, const float *dy, double *part,
                                        float *dbias) {
  int64_t k = blockIdx.y, o = c0 + k, splits = gridDim.x, split = blockIdx.x;
  int64_t m = n * hw, j0 = m * split / splits, j1 = m * (split + 1) / splits;
  int64_t di = NT / hw, dk = NT - di * hw; /* the step of NT elements, in images and positions */
  double s = 0.0;
  int64_t j = j0 + threadIdx.x;
  if (j < j1) {
    int64_t i = j / hw, p = j - i * hw;
    for (; j < j1; j += NT) {
      s += (double)dy[(i * ch + o) * hw + p];
      i += di;
      p += dk;
      if (p >= hw) {
        p -= hw;
        i++;
      }
    }
  }
  s = block_sum(s);
  if (threadIdx.x != 0) return;
  if (part)
    part[k * splits + split] = s;
  else
    dbias[o] = __fadd_rn(dbias[o], (float)s);
}

/* dbias[c0 + k] += the sum of part[k * splits ..]: one warp per channel, lane sums in split
 * order, then a fixed shuffle tree */
static __global__ void bias_grad_finish_kernel(int64_t nk, int64_t c0, int64_t splits, const double *part,
                                               float *dbias) {
  int lane = threadIdx.x & 31;
  int64_t warps = (int64_t)gridDim.x * (NT / 32);
  for (int64_t k = (int64_t)blockIdx.x * (NT / 32) + (threadIdx.x >> 5); k < nk; k += warps) {
    double s = 0.0;
    for (int64_t t = lane; t < splits; t += 32) s += part[k * splits + t];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
    if (lane == 0) dbias[c0 + k] = __fadd_rn(dbias[c0 + k], (float)s);
  }
}

static void bias_grad(dd_cuda_ctx *c, const dd_conv_desc *d, float *dbias, const float *dy) {
  int64_t hw = (int64_t)d->out_h * d->out_w, m = (int64_t)d->n * hw, ch = d->out_c;
  if (m <= 0 || ch <= 0) return;
  /* splits per channel: about dd_cuda_blocks blocks in all, a full block of elements each, the
   * partials of a slab of channels within d_red */
  int64_t splits = ((int64_t)dd_cuda_blocks(c, m * ch) + ch - 1) / ch, most = (m + NT - 1) / NT;
  if (splits > most) splits = most;
  if (splits > 1024) splits = 1024;
  if (splits < 1) splits = 1;
  int64_t slab = splits > 1 ? DD_CUDA_RED_DOUBLES / splits : 65535;
  if (slab > 65535) slab = 65535;
  for (int64_t c0 = 0; c0 < ch; c0 += slab) {
    int64_t nk = ch - c0 < slab ? ch - c0 : slab;
    bias_grad_kernel<<<dim3((unsigned)splits, (unsigned)nk), NT, 0, c->stream>>>(
        d->n, ch, hw, c0, dy, splits > 1 ? c->d_red : NULL, dbias);
    DD_CUDA_LAUNCHED(c);
    if (splits > 1) {
      bias_grad_finish_kernel<<<dd_cuda_blocks(c, nk * 32), NT, 0, c->stream>>>(nk, c0, splits, c->d_red, dbias);
      DD_CUDA_LAUNCHED(c);
    }
  }
}

/* ---- the operations ----------------------------------------------------------------------------- */

extern "C" size_t dd_cuda_conv_workspace(dd_backend *be, const dd_conv_desc *d) {
  conv_plan *p = plan_for(DD_CUDA_CTX(be), d);
  if (!p) return 0;
  size_t b = p->ws_fwd;
  if (p->ws_data > b) b = p->ws_data;
  if (p->ws_filter > b) b = p->ws_filter;
  return b;
}

extern "C" const char *dd_cuda_conv_impl(dd_backend *be, const dd_conv_desc *d) {
  conv_plan *p = plan_for(DD_CUDA_CTX(be), d);
  return p ? p->impl : "cuDNN (no plan)";
}

extern "C" void dd_cuda_conv_forward(dd_backend *be, const dd_conv_desc *d, float *y, const float *x, const float *w,
                                     const float *bias, void *ws) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  conv_plan *p = plan_for(c, d);
  if (!p) return;
  const float one = 1.0f, zero = 0.0f;
  DD_CUDNN_CHECK(c, cudnnConvolutionForward(c->cudnn, &one, p->x, x, p->w, w, p->conv, p->fwd, ws, p->ws_fwd, &zero,
                                            p->y, y));
  if (bias) {
    int64_t hw = (int64_t)d->out_h * d->out_w, total = (int64_t)d->n * d->out_c * hw;
    if (total <= 0) return;
    bias_add_kernel<<<dd_cuda_blocks(c, total), NT, 0, c->stream>>>(total, d->out_c, hw, y, bias);
    DD_CUDA_LAUNCHED(c);
  }
}

extern "C" void dd_cuda_conv_backward_data(dd_backend *be, const dd_conv_desc *d, float *dx, const float *dy,
                                           const float *w, void *ws) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  conv_plan *p = plan_for(c, d);
  if (!p) return;
  const float one = 1.0f, zero = 0.0f;
  DD_CUDNN_CHECK(c, cudnnConvolutionBackwardData(c->cudnn, &one, p->w, w, p->y, dy, p->conv, p->bwd_data, ws,
                                                 p->ws_data, &zero, p->x, dx));
}

extern "C" void dd_cuda_conv_backward_filter(dd_backend *be, const dd_conv_desc *d, float *dw, float *dbias,
                                             const float *dy, const float *x, void *ws) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (dw) {
    conv_plan *p = plan_for(c, d);
    if (!p) return;
    const float one = 1.0f;
    DD_CUDNN_CHECK(c, cudnnConvolutionBackwardFilter(c->cudnn, &one, p->x, x, p->y, dy, p->conv, p->bwd_filter, ws,
                                                     p->ws_filter, &one, p->w, dw));
  }
  if (dbias) bias_grad(c, d, dbias, dy);
}
