/* The CPU backend: host memory, OpenBLAS for GEMM (loaded by core/cpu_blas.c with the right
 * kernels), a blocking thread pool, the convolution of core/cpu_conv.c and the layer kernels of
 * core/cpu_kernels.c. It is the reference every other backend is tested against: kernels are
 * plain loops over Caffe's layouts, parallel over independent images, planes or channels, with
 * per-thread partial sums reduced in a fixed order, so a run is bit-reproducible for a given
 * thread count.
 *
 * OpenBLAS runs single-threaded inside our tasks (the pool decides the parallelism); a large
 * GEMM on its own is split by rows across the pool. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/backend.h"
#include "cpu/cpu_blas.h"
#include "cpu/cpu_dnnl.h"
#include "cpu/cpu_kernels.h"
#include "base/dd_error.h"
#include "cpu/threadpool.h"

static void *cpu_alloc(dd_backend *be, size_t bytes) {
  (void)be;
  void *p = NULL;
  if (bytes == 0) bytes = 64;
  if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0) return NULL;
  memset(p, 0, bytes);
  return p;
}

static void cpu_free(dd_backend *be, void *p) {
  (void)be;
  free(p);
}

static void cpu_copy(dd_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (bytes && dst != src) memmove(dst, src, bytes);
}

static void cpu_sync(dd_backend *be) { (void)be; }

/* ---- GEMM ----------------------------------------------------------------------------------- */

typedef struct {
  int ta, tb, m, n, k, parts;
  float alpha, beta;
  const float *a, *b;
  float *c;
} gemm_job;

static void gemm_task(void *ctx, int task, int thread) {
  (void)thread;
  gemm_job *j = ctx;
  int r0 = (int)((int64_t)j->m * task / j->parts), r1 = (int)((int64_t)j->m * (task + 1) / j->parts);
  if (r1 <= r0) return;
  const float *a = j->ta ? j->a + r0 : j->a + (int64_t)r0 * j->k;
  int lda = j->ta ? j->m : j->k, ldb = j->tb ? j->k : j->n;
  dd_sgemm(j->ta, j->tb, r1 - r0, j->n, j->k, j->alpha, a, lda, j->b, ldb, j->beta,
           j->c + (int64_t)r0 * j->n, j->n);
}

static void cpu_gemm(dd_backend *be, int ta, int tb, int m, int n, int k, float alpha,
                     const float *a, const float *b, float beta, float *c) {
  dd_cpu_ctx *cx = be->ctx;
  int threads = dd_threadpool_threads(cx->pool);
  double flops = 2.0 * m * n * k;
  int parts = (flops < 4e6 || m < 2 * threads) ? 1 : threads;
  gemm_job j = {ta, tb, m, n, k, parts, alpha, beta, a, b, c};
  if (parts == 1)
    gemm_task(&j, 0, 0);
  else
    dd_threadpool_run(cx->pool, parts, gemm_task, &j);
}

static const dd_backend_ops cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .fill = dd_cpu_fill,
    .alloc_host = cpu_alloc,
    .free_host = cpu_free,
    .synchronize = cpu_sync,
    .gemm = cpu_gemm,
    .axpby = dd_cpu_axpby,
    .scale = dd_cpu_scale,
    .dot = dd_cpu_dot,
    .asum = dd_cpu_asum,
    .conv_workspace = dd_cpu_conv_workspace,
    .conv_forward = dd_cpu_conv_forward,
    .conv_backward_data = dd_cpu_conv_backward_data,
    .conv_backward_filter = dd_cpu_conv_backward_filter,
    .conv_impl = dd_cpu_conv_impl,
    .pool_forward = dd_cpu_pool_forward,
    .pool_backward = dd_cpu_pool_backward,
    .bn_forward_train = dd_cpu_bn_forward_train,
    .bn_forward_global = dd_cpu_bn_forward_global,
    .bn_backward = dd_cpu_bn_backward,
    .channel_affine = dd_cpu_channel_affine,
    .channel_affine_backward = dd_cpu_channel_affine_backward,
    .relu_forward = dd_cpu_relu_forward,
    .relu_backward = dd_cpu_relu_backward,
    .mul = dd_cpu_mul,
    .max_update = dd_cpu_max_update,
    .max_backward = dd_cpu_max_backward,
    .dropout_forward = dd_cpu_dropout_forward,
    .softmax_forward = dd_cpu_softmax_forward,
    .softmax_backward = dd_cpu_softmax_backward,
    .xent_forward = dd_cpu_xent_forward,
    .xent_backward = dd_cpu_xent_backward,
    .accuracy = dd_cpu_accuracy,
    .kd_forward_backward = dd_cpu_kd_forward_backward,
    .attention_forward_backward = dd_cpu_attention_forward_backward,
    .copy_rows = dd_cpu_copy_rows,
    .regularize = dd_cpu_regularize,
    .sgd_update = dd_cpu_sgd_update,
    .adam_update = dd_cpu_adam_update,
    .adagrad_update = dd_cpu_adagrad_update,
    .destroy = dd_cpu_backend_destroy,
    .describe = dd_cpu_backend_describe,
    /* ---- the layer catalogue's kernels (same order as backend.h) ---- */
    /* catalogue: neuron */
    .neuron_forward = dd_cpu_neuron_forward,
    .neuron_backward = dd_cpu_neuron_backward,
    .prelu_forward = dd_cpu_prelu_forward,
    .prelu_backward = dd_cpu_prelu_backward,

    /* catalogue: structure */
    .reduce_forward = dd_cpu_reduce_forward,
    .reduce_backward = dd_cpu_reduce_backward,
    .copy_nd = dd_cpu_copy_nd,
    .argmax_topk = dd_cpu_argmax_topk,
    .embed_forward = dd_cpu_embed_forward,
    .embed_backward = dd_cpu_embed_backward,
    .im2col = dd_cpu_im2col,
    .col2im = dd_cpu_col2im,

    /* catalogue: normalization and convolution-like */
    .lrn_forward = dd_cpu_lrn_forward,
    .lrn_backward = dd_cpu_lrn_backward,
    .mvn_forward = dd_cpu_mvn_forward,
    .mvn_backward = dd_cpu_mvn_backward,

    /* catalogue: losses and recurrent */
    /* losses */
    .sigmoid_xent_forward = dd_cpu_sigmoid_xent_forward,
    .sigmoid_xent_backward = dd_cpu_sigmoid_xent_backward,
    .infogain_forward = dd_cpu_infogain_forward,
    .infogain_backward = dd_cpu_infogain_backward,
    .multinomial_backward = dd_cpu_multinomial_backward,
    .hinge_forward = dd_cpu_hinge_forward,
    .hinge_backward = dd_cpu_hinge_backward,
    .contrastive_forward = dd_cpu_contrastive_forward,
    .contrastive_backward = dd_cpu_contrastive_backward,
    /* recurrent */
    .lstm_unit_forward = dd_cpu_lstm_unit_forward,
    .lstm_unit_backward = dd_cpu_lstm_unit_backward,
    .rnn_tanh_forward = dd_cpu_rnn_tanh_forward,
    .rnn_tanh_backward = dd_cpu_rnn_tanh_backward,
    .bn_affine_relu_forward = dd_cpu_bn_affine_relu_forward,
    .bn_affine_relu_backward = dd_cpu_bn_affine_relu_backward,
    /* inference in the blocked layout (bf16 and FP32) */
    .conv_blk_prepare = dd_cpu_conv_blk_prepare,
    .conv_blk_forward = dd_cpu_conv_blk_forward,
    .blk_relu = dd_cpu_blk_relu,
    .blk_affine = dd_cpu_blk_affine,
    .blk_sum = dd_cpu_blk_sum,
    .blk_to_nchw = dd_cpu_blk_to_nchw,
    .conv_blk_train = dd_cpu_conv_blk_train, .blk_from_nchw = dd_cpu_blk_from_nchw,

    /* catalogue: data */

};

int dd_cpu_backend_create(dd_backend **out, int threads) {
  *out = NULL;
  int r = dd_cpu_ensure_fast_blas(NULL, 0);
  if (r) return r;
  if (threads <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    threads = n > 0 ? (int)n : 1;
  }
  dd_backend *be = calloc(1, sizeof *be);
  dd_cpu_ctx *cx = calloc(1, sizeof *cx);
  if (!be || !cx) goto fail;
  cx->pool = dd_threadpool_create(threads);
  if (!cx->pool) goto fail;
  be->ops = &cpu_ops;
  be->ctx = cx;
  be->threads = threads;
  cx->dnnl = dd_dnnl_create(threads, cx->pool); /* NULL: the own kernels do every convolution */
  snprintf(cx->describe, sizeof cx->describe, "cpu: %s, %d thread%s; conv: %s%s%s", dd_cpu_blas_describe(),
           threads, threads == 1 ? "" : "s", cx->dnnl ? dd_dnnl_describe() : "", cx->dnnl ? ", else " : "",
           dd_cpu_conv_kernels());
  *out = be;
  return 0;
fail:
  free(cx);
  free(be);
  return DD_ENOMEM;
}

void dd_cpu_backend_destroy(dd_backend *be) {
  if (!be) return;
  dd_cpu_ctx *cx = be->ctx;
  dd_dnnl_destroy(cx->dnnl);
  dd_threadpool_destroy(cx->pool);
  free(cx);
  free(be);
}

const char *dd_cpu_backend_describe(dd_backend *be) { return ((dd_cpu_ctx *)be->ctx)->describe; }
