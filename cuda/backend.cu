/* The CUDA backend: its context, memory, GEMM and the operations table (cuda/cuda_internal.h
 * says which file holds which operation).
 *
 * Memory: device memory comes from a caching allocator. A freed block is kept and handed out
 * again for a later request of up to its size (and at least half of it), so a net that is built,
 * destroyed and built again (a test pass, a new job on the same backend) does not go back to
 * cudaMalloc, and the steady-state training loop, which allocates nothing, never does. Host
 * buffers for batches are pinned (cudaHostAlloc).
 *
 * Streams: every operation runs on one stream in order. upload and download wait for their copy
 * (the caller reuses its host buffer at once, and the data pipeline hands pinned batch buffers
 * back to its decode threads right after the upload). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

/* ---- the caching allocator ---------------------------------------------------------------------- */

typedef struct {
  void *p;
  size_t bytes;
  int in_use;
} mem_block;

struct dd_cuda_mem {
  mem_block *b;
  size_t n, cap;
  size_t bytes_total; /* everything cudaMalloc'ed */
};

static size_t round_size(size_t bytes) {
  const size_t a = 512;
  return bytes == 0 ? a : (bytes + a - 1) / a * a;
}

extern "C" void *dd_cuda_alloc(dd_backend *be, size_t bytes) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  struct dd_cuda_mem *m = c->mem;
  size_t need = round_size(bytes);
  /* the smallest free block that fits and wastes at most half of itself */
  mem_block *best = NULL;
  for (size_t i = 0; i < m->n; i++) {
    mem_block *k = &m->b[i];
    if (k->in_use || k->bytes < need || k->bytes / 2 > need) continue;
    if (!best || k->bytes < best->bytes) best = k;
  }
  void *p = NULL;
  if (best) {
    best->in_use = 1;
    p = best->p;
  } else {
    if (m->n == m->cap) {
      size_t nc = m->cap ? 2 * m->cap : 256;
      mem_block *nb = (mem_block *)realloc(m->b, nc * sizeof *nb);
      if (!nb) return NULL;
      m->b = nb;
      m->cap = nc;
    }
    cudaError_t e = cudaMalloc(&p, need);
    if (e != cudaSuccess) {
      /* give the cache back and try once more */
      cudaGetLastError();
      cudaStreamSynchronize(c->stream);
      size_t w = 0;
      for (size_t i = 0; i < m->n; i++) {
        if (m->b[i].in_use) {
          m->b[w++] = m->b[i];
        } else {
          cudaFree(m->b[i].p);
          m->bytes_total -= m->b[i].bytes;
        }
      }
      m->n = w;
      e = cudaMalloc(&p, need);
      if (e != cudaSuccess) {
        cudaGetLastError(); /* out of memory is the caller's NULL, not a sticky failure */
        return NULL;
      }
    }
    m->b[m->n++] = (mem_block){p, need, 1};
    m->bytes_total += need;
  }
  DD_CUDA_CHECK(c, cudaMemsetAsync(p, 0, need, c->stream));
  return p;
}

extern "C" void dd_cuda_free(dd_backend *be, void *p) {
  if (!p) return;
  struct dd_cuda_mem *m = DD_CUDA_CTX(be)->mem;
  for (size_t i = 0; i < m->n; i++)
    if (m->b[i].p == p) {
      /* later work on the stream that reuses the block is ordered after the work that used it */
      m->b[i].in_use = 0;
      return;
    }
}

extern "C" void dd_cuda_upload(dd_backend *be, void *dst, const void *host_src, size_t bytes) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (!bytes) return;
  DD_CUDA_CHECK(c, cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, c->stream));
  DD_CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
}

extern "C" void dd_cuda_download(dd_backend *be, void *host_dst, const void *src, size_t bytes) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (!bytes) return;
  DD_CUDA_CHECK(c, cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
  DD_CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
}

extern "C" void dd_cuda_copy(dd_backend *be, void *dst, const void *src, size_t bytes) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (!bytes || dst == src) return;
  DD_CUDA_CHECK(c, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
}

extern "C" void *dd_cuda_alloc_host(dd_backend *be, size_t bytes) {
  void *p = NULL;
  (void)be;
  if (cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault) != cudaSuccess) {
    cudaGetLastError();
    return NULL;
  }
  memset(p, 0, bytes);
  return p;
}

extern "C" void dd_cuda_free_host(dd_backend *be, void *p) {
  (void)be;
  if (p) cudaFreeHost(p);
}

extern "C" void dd_cuda_synchronize(dd_backend *be) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  DD_CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
}

/* ---- GEMM --------------------------------------------------------------------------------------- */

/* Row-major C (m x n) = alpha op(A) op(B) + beta C is column-major C^T = op(B)^T op(A)^T: cuBLAS
 * gets B first, with the dimensions swapped. */
extern "C" void dd_cuda_gemm(dd_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
                             const float *a, const float *b, float beta, float *c_) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (m <= 0 || n <= 0) return;
  int lda = trans_a ? m : k, ldb = trans_b ? k : n;
  DD_CUBLAS_CHECK(c, cublasSgemm(c->cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n,
                                 m, k, &alpha, b, ldb, a, lda, &beta, c_, n));
}

/* ---- status ------------------------------------------------------------------------------------- */

static int cuda_status(dd_backend *be, char *msg, size_t len) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (!c->failed) {
    /* a fault from an earlier kernel shows at the next call that looks */
    cudaError_t e = cudaPeekAtLastError();
    if (e != cudaSuccess) dd_cuda_fail(c, "a kernel", __FILE__, __LINE__, cudaGetErrorString(e));
  }
  if (c->failed && msg && len) snprintf(msg, len, "cuda:%d: %s", c->device, c->fail_msg);
  return c->failed ? DD_EIO : 0;
}

/* ---- the table ---------------------------------------------------------------------------------- */

static const dd_backend_ops cuda_ops = {
    .name = "cuda",
    /* memory */
    .alloc = dd_cuda_alloc, .free = dd_cuda_free, .upload = dd_cuda_upload, .download = dd_cuda_download,
    .copy = dd_cuda_copy, .fill = dd_cuda_fill, .alloc_host = dd_cuda_alloc_host,
    .free_host = dd_cuda_free_host, .synchronize = dd_cuda_synchronize,
    /* BLAS-like */
    .gemm = dd_cuda_gemm, .axpby = dd_cuda_axpby, .scale = dd_cuda_scale, .dot = dd_cuda_dot,
    .asum = dd_cuda_asum,
    /* convolution */
    .conv_workspace = dd_cuda_conv_workspace, .conv_forward = dd_cuda_conv_forward,
    .conv_backward_data = dd_cuda_conv_backward_data, .conv_backward_filter = dd_cuda_conv_backward_filter,
    .conv_impl = dd_cuda_conv_impl,
    /* pooling */
    .pool_forward = dd_cuda_pool_forward, .pool_backward = dd_cuda_pool_backward,
    /* BatchNorm */
    .bn_forward_train = dd_cuda_bn_forward_train, .bn_forward_global = dd_cuda_bn_forward_global,
    .bn_backward = dd_cuda_bn_backward,
    /* channel affine */
    .channel_affine = dd_cuda_channel_affine, .channel_affine_backward = dd_cuda_channel_affine_backward,
    /* elementwise */
    .relu_forward = dd_cuda_relu_forward, .relu_backward = dd_cuda_relu_backward, .mul = dd_cuda_mul,
    .max_update = dd_cuda_max_update, .max_backward = dd_cuda_max_backward,
    .dropout_forward = dd_cuda_dropout_forward,
    /* softmax and losses */
    .softmax_forward = dd_cuda_softmax_forward, .softmax_backward = dd_cuda_softmax_backward,
    .xent_forward = dd_cuda_xent_forward, .xent_backward = dd_cuda_xent_backward,
    .accuracy = dd_cuda_accuracy, .kd_forward_backward = dd_cuda_kd_forward_backward,
    .attention_forward_backward = dd_cuda_attention_forward_backward,
    /* strided copies */
    .copy_rows = dd_cuda_copy_rows,
    /* solvers */
    .regularize = dd_cuda_regularize, .sgd_update = dd_cuda_sgd_update, .adam_update = dd_cuda_adam_update,
    .adagrad_update = dd_cuda_adagrad_update,
    /* status */
    .status = cuda_status,
    /* lifetime */
    .destroy = dd_cuda_backend_destroy, .describe = dd_cuda_backend_describe,
    /* ---- the layer catalogue's kernels (same order as backend.h) ---- */
    /* catalogue: neuron */
    .neuron_forward = dd_cuda_neuron_forward,
    .neuron_backward = dd_cuda_neuron_backward,
    .prelu_forward = dd_cuda_prelu_forward,
    .prelu_backward = dd_cuda_prelu_backward,

    /* catalogue: structure */
    .reduce_forward = dd_cuda_reduce_forward,
    .reduce_backward = dd_cuda_reduce_backward,
    .copy_nd = dd_cuda_copy_nd,
    .argmax_topk = dd_cuda_argmax_topk,
    .embed_forward = dd_cuda_embed_forward,
    .embed_backward = dd_cuda_embed_backward,
    .im2col = dd_cuda_im2col,
    .col2im = dd_cuda_col2im,

    /* catalogue: normalization and convolution-like */
    .lrn_forward = dd_cuda_lrn_forward,
    .lrn_backward = dd_cuda_lrn_backward,
    .mvn_forward = dd_cuda_mvn_forward,
    .mvn_backward = dd_cuda_mvn_backward,

    /* catalogue: losses and recurrent */
    /* losses */
    .sigmoid_xent_forward = dd_cuda_sigmoid_xent_forward,
    .sigmoid_xent_backward = dd_cuda_sigmoid_xent_backward,
    .infogain_forward = dd_cuda_infogain_forward,
    .infogain_backward = dd_cuda_infogain_backward,
    .multinomial_backward = dd_cuda_multinomial_backward,
    .hinge_forward = dd_cuda_hinge_forward,
    .hinge_backward = dd_cuda_hinge_backward,
    .contrastive_forward = dd_cuda_contrastive_forward,
    .contrastive_backward = dd_cuda_contrastive_backward,
    /* recurrent */
    .lstm_unit_forward = dd_cuda_lstm_unit_forward, .lstm_unit_backward = dd_cuda_lstm_unit_backward,
    .rnn_tanh_forward = dd_cuda_rnn_tanh_forward, .rnn_tanh_backward = dd_cuda_rnn_tanh_backward,
    /* fused steps: in cuda_ops_fused below (DD_CUDA_FUSE=1); without them the plan runs those
     * layers one by one (core/net/plan.h) */
    .bn_affine_relu_forward = NULL, .bn_affine_relu_backward = NULL,
    /* inference in the blocked layout: not on this backend (its activations stay NCHW) */
    .conv_blk_prepare = NULL, .conv_blk_forward = NULL, .blk_relu = NULL, .blk_affine = NULL,
    .blk_sum = NULL, .blk_to_nchw = NULL, .conv_blk_train = NULL, .blk_from_nchw = NULL,

    /* catalogue: data */

};

/* The table with the plan's fused BatchNorm + Scale [+ ReLU] step (cuda/kernels_batchnorm.cu).
 * Built and tested against the CPU (tests/test_cuda_ops.c) but not yet run on a GPU: used only
 * where DD_CUDA_FUSE=1 is in the environment until scripts/device_check.sh has passed with it. */
static dd_backend_ops cuda_ops_fused;
static pthread_once_t fused_once = PTHREAD_ONCE_INIT;
static void fused_init(void) {
  cuda_ops_fused = cuda_ops;
  cuda_ops_fused.bn_affine_relu_forward = dd_cuda_bn_affine_relu_forward;
  cuda_ops_fused.bn_affine_relu_backward = dd_cuda_bn_affine_relu_backward;
}
static const dd_backend_ops *fused_table(void) {
  const char *e = getenv("DD_CUDA_FUSE");
  if (!e || strcmp(e, "1")) return &cuda_ops;
  pthread_once(&fused_once, fused_init);
  return &cuda_ops_fused;
}

extern "C" int dd_cuda_backend_create(dd_backend **out, int device, char *err, size_t errlen) {
  *out = NULL;
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    snprintf(err, errlen, "cuda:%d: no usable CUDA driver or device (%s)", device, cudaGetErrorString(e));
    cudaGetLastError();
    return DD_ENOTFOUND;
  }
  if (device < 0 || device >= count) {
    snprintf(err, errlen, "cuda:%d: this machine has %d CUDA device(s)", device, count);
    return DD_ENOTFOUND;
  }
  const char *dyn = dd_cuda_dynload_error();
  if (dyn) {
    snprintf(err, errlen, "cuda:%d: %s; put their folders on LD_LIBRARY_PATH", device, dyn);
    return DD_ENOTFOUND;
  }
  dd_backend *be = (dd_backend *)calloc(1, sizeof *be);
  dd_cuda_ctx *c = (dd_cuda_ctx *)calloc(1, sizeof *c);
  struct dd_cuda_mem *m = (struct dd_cuda_mem *)calloc(1, sizeof *m);
  if (!be || !c || !m) {
    free(be);
    free(c);
    free(m);
    snprintf(err, errlen, "out of memory");
    return DD_ENOMEM;
  }
  be->ops = fused_table();
  be->ctx = c;
  be->threads = device;
  c->device = device;
  c->mem = m;
  const char *step = "cudaSetDevice";
  cudaDeviceProp prop;
  if ((e = cudaSetDevice(device)) != cudaSuccess) goto fail_cuda;
  step = "cudaGetDeviceProperties";
  if ((e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess) goto fail_cuda;
  c->sm_count = prop.multiProcessorCount;
  step = "cudaStreamCreate";
  if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) goto fail_cuda;
  step = "cudaMalloc (reduction scratch)";
  if ((e = cudaMalloc((void **)&c->d_red, DD_CUDA_RED_DOUBLES * sizeof(double))) != cudaSuccess) goto fail_cuda;
  step = "cudaHostAlloc (reduction scratch)";
  if ((e = cudaHostAlloc((void **)&c->h_red, DD_CUDA_RED_DOUBLES * sizeof(double), cudaHostAllocDefault)) != cudaSuccess)
    goto fail_cuda;
  if (cublasCreate(&c->cublas) != CUBLAS_STATUS_SUCCESS) {
    snprintf(err, errlen, "cuda:%d: cuBLAS could not start (is libcublas on the library path?)", device);
    goto fail;
  }
  cublasSetStream(c->cublas, c->stream);
  /* FP32 as the CPU computes it: no TF32 tensor-core rounding unless a job asks for it */
  cublasSetMathMode(c->cublas, CUBLAS_PEDANTIC_MATH);
  if (cudnnCreate(&c->cudnn) != CUDNN_STATUS_SUCCESS) {
    snprintf(err, errlen, "cuda:%d: cuDNN could not start (is libcudnn on the library path?)", device);
    goto fail;
  }
  cudnnSetStream(c->cudnn, c->stream);
  {
    int rt = 0;
    cudaRuntimeGetVersion(&rt);
    snprintf(c->desc, sizeof c->desc, "cuda:%d: %s (sm_%d%d, %d SMs, %.0f GiB), CUDA runtime %d.%d, cuDNN %zu, FP32",
             device, prop.name, prop.major, prop.minor, prop.multiProcessorCount,
             (double)prop.totalGlobalMem / (1024.0 * 1024 * 1024), rt / 1000, (rt % 1000) / 10, cudnnGetVersion());
  }
  *out = be;
  return 0;
fail_cuda:
  snprintf(err, errlen, "cuda:%d: %s: %s", device, step, cudaGetErrorString(e));
  cudaGetLastError();
fail:
  dd_cuda_backend_destroy(be);
  return DD_EIO;
}

extern "C" void dd_cuda_backend_destroy(dd_backend *be) {
  if (!be) return;
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (c) {
    cudaSetDevice(c->device);
    if (c->stream) cudaStreamSynchronize(c->stream);
    dd_cuda_conv_cache_destroy(c);
    if (c->cudnn) cudnnDestroy(c->cudnn);
    if (c->cublas) cublasDestroy(c->cublas);
    if (c->mem) {
      for (size_t i = 0; i < c->mem->n; i++) cudaFree(c->mem->b[i].p);
      free(c->mem->b);
      free(c->mem);
    }
    if (c->d_red) cudaFree(c->d_red);
    if (c->h_red) cudaFreeHost(c->h_red);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
  }
  free(be);
}

extern "C" const char *dd_cuda_backend_describe(dd_backend *be) { return DD_CUDA_CTX(be)->desc; }
