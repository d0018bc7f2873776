/* The CUDA backend's shared internals (the .cu files under cuda/ only; nothing outside cuda/ includes this).
 *
 * Every operation of core/base/backend.h's table is a function named dd_cuda_<op> with exactly the
 * table's signature, defined in one of:
 *   cuda/dynload.cu            cuDNN and cuBLAS, loaded at run time (dlopen) instead of linked
 *   cuda/context.cu            the failure record (dd_cuda_fail) and launch sizes (dd_cuda_blocks)
 *   cuda/backend.cu            context, memory (caching allocator, pinned host buffers, copies),
 *                              gemm (cuBLAS), the table itself, create/destroy/describe
 *   cuda/kernels_elementwise.cu  fill, axpby, scale, dot, asum, relu, mul, max_update/backward,
 *                              dropout, channel_affine(+backward), copy_rows, regularize, the
 *                              solver updates
 *   cuda/conv.cu               convolution through cuDNN (descriptors and algorithms cached per
 *                              shape, chosen once in conv_workspace: timed, kept per device for the process)
 *   cuda/kernels_nn.cu         pooling, softmax, cross entropy, accuracy, the distillation and
 *                              attention losses
 *   cuda/kernels_batchnorm.cu  BatchNorm (Caffe's semantics) and the plan's fused
 *                              BatchNorm + Scale [+ ReLU] step
 *   cuda/cuda_reduce.h         the fixed-order block and warp sums the kernels share
 *
 * Rules: everything runs on ctx->stream, in order, asynchronously, except where the table returns
 * a host value (dot, asum, xent_forward, accuracy's counts, kd/attention losses): those reduce on
 * the device into ctx->d_red, copy to the pinned ctx->h_red and synchronise the stream.
 * Reductions are deterministic (fixed-order block partial sums, then a fixed-order second pass:
 * one block, or one thread per channel; no floating-point atomics), so a run repeats bit for bit.
 * ctx->d_red holds nothing between operations: any operation may overwrite it, in stream order.
 * Once ctx->failed is set, host-returning operations return 0. No -use_fast_math or -ftz for
 * cuda/: elementwise arithmetic uses the _rn intrinsics and keeps denormals, so it gives the CPU's
 * floats (the gcc build's CPU code does not contract to FMA either). Kernels never allocate; a
 * CUDA error is recorded once in ctx (dd_cuda_fail) and reported by the trainer, never abort(). */
#ifndef DD_CUDA_INTERNAL_H
#define DD_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "base/backend.h"
#include "base/dd_error.h"
#include "dd_cuda.h"
#ifdef __cplusplus
}
#endif

#define DD_CUDA_RED_DOUBLES 65536 /* device and pinned host scratch for reductions, in doubles */
#define DD_CUDA_THREADS 256

struct dd_cuda_conv_cache;
struct dd_cuda_mem;

typedef struct dd_cuda_ctx {
  int device;
  int sm_count;
  cudaStream_t stream; /* every operation */
  cublasHandle_t cublas;
  cudnnHandle_t cudnn;
  double *d_red; /* device, DD_CUDA_RED_DOUBLES */
  double *h_red; /* pinned host, DD_CUDA_RED_DOUBLES */
  struct dd_cuda_conv_cache *conv; /* cuda/conv.cu */
  struct dd_cuda_mem *mem;         /* cuda/backend.cu: the caching allocator */
  int failed;                      /* the first CUDA error, recorded by dd_cuda_fail */
  char fail_msg[512];
  char desc[512];
} dd_cuda_ctx;

#define DD_CUDA_CTX(be) ((dd_cuda_ctx *)(be)->ctx)

#ifdef __cplusplus
extern "C" {
#endif

/* Records the first failure ("cudaMemcpyAsync at cuda/backend.cu:120: an illegal memory access")
 * and prints it once to stderr. */
void dd_cuda_fail(dd_cuda_ctx *c, const char *call, const char *file, int line, const char *what);

/* Blocks for a grid-stride kernel over n elements (at least 1, at most 32 per SM). */
int dd_cuda_blocks(const dd_cuda_ctx *c, int64_t n);

void dd_cuda_conv_cache_destroy(dd_cuda_ctx *c);

/* cuda/dynload.cu: NULL when cuDNN and cuBLAS were loaded, else which could not be and why. */
const char *dd_cuda_dynload_error(void);

#ifdef __cplusplus
}
#endif

#define DD_CUDA_CHECK(c, call)                                                  \
  do {                                                                          \
    cudaError_t e_ = (call);                                                    \
    if (e_ != cudaSuccess) dd_cuda_fail((c), #call, __FILE__, __LINE__, cudaGetErrorString(e_)); \
  } while (0)
#define DD_CUBLAS_CHECK(c, call)                                                \
  do {                                                                          \
    cublasStatus_t e_ = (call);                                                 \
    if (e_ != CUBLAS_STATUS_SUCCESS) dd_cuda_fail((c), #call, __FILE__, __LINE__, cublasGetStatusString(e_)); \
  } while (0)
#define DD_CUDNN_CHECK(c, call)                                                 \
  do {                                                                          \
    cudnnStatus_t e_ = (call);                                                  \
    if (e_ != CUDNN_STATUS_SUCCESS) dd_cuda_fail((c), #call, __FILE__, __LINE__, cudnnGetErrorString(e_)); \
  } while (0)
/* after a kernel launch */
#define DD_CUDA_LAUNCHED(c) DD_CUDA_CHECK((c), cudaGetLastError())

/* The operations (signatures exactly as in core/base/backend.h's dd_backend_ops). */
#ifdef __cplusplus
extern "C" {
#endif
/* backend.cu */
void *dd_cuda_alloc(dd_backend *be, size_t bytes);
void dd_cuda_free(dd_backend *be, void *p);
void dd_cuda_upload(dd_backend *be, void *dst, const void *host_src, size_t bytes);
void dd_cuda_download(dd_backend *be, void *host_dst, const void *src, size_t bytes);
void dd_cuda_copy(dd_backend *be, void *dst, const void *src, size_t bytes);
void *dd_cuda_alloc_host(dd_backend *be, size_t bytes);
void dd_cuda_free_host(dd_backend *be, void *p);
void dd_cuda_synchronize(dd_backend *be);
void dd_cuda_gemm(dd_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
                  const float *b, float beta, float *c);
/* kernels_elementwise.cu */
void dd_cuda_fill(dd_backend *be, float *x, float value, int64_t n);
void dd_cuda_axpby(dd_backend *be, int64_t n, float alpha, const float *x, float beta, float *y);
void dd_cuda_scale(dd_backend *be, int64_t n, float alpha, const float *x, float *y);
double dd_cuda_dot(dd_backend *be, int64_t n, const float *x, const float *y);
double dd_cuda_asum(dd_backend *be, int64_t n, const float *x);
void dd_cuda_channel_affine(dd_backend *be, int64_t outer, int64_t dim, int64_t inner, float *y, const float *x,
                            const float *scale, const float *bias);
void dd_cuda_channel_affine_backward(dd_backend *be, int64_t outer, int64_t dim, int64_t inner, float *dx,
                                     float *dscale, float *dbias, const float *dy, const float *x, const float *scale);
void dd_cuda_relu_forward(dd_backend *be, int64_t n, float *y, const float *x, float slope);
void dd_cuda_relu_backward(dd_backend *be, int64_t n, float *dx, const float *dy, const float *x, float slope);
void dd_cuda_mul(dd_backend *be, int64_t n, float *y, const float *a, const float *b);
void dd_cuda_max_update(dd_backend *be, int64_t n, float *y, int32_t *argmax, const float *x, int32_t index);
void dd_cuda_max_backward(dd_backend *be, int64_t n, float *dx, const float *dy, const int32_t *argmax, int32_t index);
void dd_cuda_dropout_forward(dd_backend *be, int64_t n, float *y, float *mask, const float *x, uint64_t seed,
                             float ratio, float scale);
void dd_cuda_copy_rows(dd_backend *be, int64_t rows, int64_t cols, float *dst, int64_t dst_stride, const float *src,
                       int64_t src_stride, int accumulate);
void dd_cuda_regularize(dd_backend *be, int64_t n, float *g, const float *w, float decay, int l1);
void dd_cuda_sgd_update(dd_backend *be, int64_t n, float *w, float *g, float *h, float rate, float momentum,
                        int nesterov);
void dd_cuda_adam_update(dd_backend *be, int64_t n, float *w, float *g, float *m, float *v, float rate, float beta1,
                         float beta2, float eps, int t);
void dd_cuda_adagrad_update(dd_backend *be, int64_t n, float *w, float *g, float *h, float rate, float eps,
                            float rms_decay, int rmsprop);
/* conv.cu */
size_t dd_cuda_conv_workspace(dd_backend *be, const dd_conv_desc *d);
const char *dd_cuda_conv_impl(dd_backend *be, const dd_conv_desc *d);
void dd_cuda_conv_forward(dd_backend *be, const dd_conv_desc *d, float *y, const float *x, const float *w,
                          const float *bias, void *ws);
void dd_cuda_conv_backward_data(dd_backend *be, const dd_conv_desc *d, float *dx, const float *dy, const float *w,
                                void *ws);
void dd_cuda_conv_backward_filter(dd_backend *be, const dd_conv_desc *d, float *dw, float *dbias, const float *dy,
                                  const float *x, void *ws);
/* kernels_nn.cu */
void dd_cuda_pool_forward(dd_backend *be, const dd_pool_desc *d, float *y, int32_t *mask, const float *x);
void dd_cuda_pool_backward(dd_backend *be, const dd_pool_desc *d, float *dx, const float *dy, const int32_t *mask);
void dd_cuda_bn_forward_train(dd_backend *be, int n, int c, int s, float *y, const float *x, float *mean,
                              float *inv_std, float *mean_sum, float *var_sum, float *factor, float maf, float eps);
void dd_cuda_bn_forward_global(dd_backend *be, int n, int c, int s, float *y, const float *x, float *mean,
                               float *inv_std, const float *mean_sum, const float *var_sum, const float *factor,
                               float eps);
void dd_cuda_bn_backward(dd_backend *be, int n, int c, int s, float *dx, const float *dy, const float *y,
                         const float *inv_std, int global);
void dd_cuda_bn_affine_relu_forward(dd_backend *be, const dd_bn_affine_desc *d, float *y, const float *x, float *mean,
                                    float *inv_std, float *mean_sum, float *var_sum, float *factor, const float *gamma,
                                    const float *beta);
void dd_cuda_bn_affine_relu_backward(dd_backend *be, const dd_bn_affine_desc *d, float *dx, float *dgamma, float *dbeta,
                                     const float *dy, const float *y, const float *x, const float *mean,
                                     const float *inv_std, const float *gamma);
void dd_cuda_softmax_forward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *y, const float *x);
void dd_cuda_softmax_backward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *dx,
                              const float *dy, const float *y);
double dd_cuda_xent_forward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, const float *prob,
                            const float *label, int has_ignore, int ignore_label, int64_t *valid);
void dd_cuda_xent_backward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *dx,
                           const float *prob, const float *label, int has_ignore, int ignore_label, float scale);
void dd_cuda_accuracy(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, const float *x,
                      const float *label, int top_k, int has_ignore, int ignore_label, int64_t *correct,
                      int64_t *valid, float *per_class_correct, float *per_class_total);
double dd_cuda_kd_forward_backward(dd_backend *be, int64_t outer, int64_t channels, const float *s, const float *t,
                                   float temperature, float *ds, float scale);
double dd_cuda_attention_forward_backward(dd_backend *be, int64_t n, int64_t cs, int64_t ct, int64_t hw,
                                          const float *s, const float *t, float *ds, float scale, void *ws);
#ifdef __cplusplus
}
#endif

/* ---- the layer catalogue's kernels, by family (cuda/kernels_<family>.cu) ---- */
#ifdef __cplusplus
extern "C" {
#endif
/* catalogue: neuron */
/* (kernels_neuron.cu) */
void dd_cuda_neuron_forward(dd_backend *be, const dd_neuron_desc *d, int64_t n, float *y, const float *x);
void dd_cuda_neuron_backward(dd_backend *be, const dd_neuron_desc *d, int64_t n, float *dx, const float *dy, const float *x, const float *y);
void dd_cuda_prelu_forward(dd_backend *be, int64_t n, int64_t channels, int64_t inner, float *y, const float *x, const float *slope);
void dd_cuda_prelu_backward(dd_backend *be, int64_t n, int64_t channels, int64_t inner, float *dx, float *dslope, const float *dy, const float *x, const float *slope);

/* catalogue: structure */
void dd_cuda_reduce_forward(dd_backend *be, int op, int64_t outer, int64_t dim, float *y, const float *x, float coeff);
void dd_cuda_reduce_backward(dd_backend *be, int op, int64_t outer, int64_t dim, float *dx, const float *dy, const float *x, float coeff);
void dd_cuda_copy_nd(dd_backend *be, const dd_copy_nd_desc *d, float *dst, const float *src, int accumulate);
void dd_cuda_argmax_topk(dd_backend *be, int64_t outer, int64_t dim, int64_t inner, int k, const float *x, float *ind, float *val, int64_t out_stride);
void dd_cuda_embed_forward(dd_backend *be, int64_t m, int64_t n, int64_t rows, float *y, const float *idx, const float *w, const float *bias);
void dd_cuda_embed_backward(dd_backend *be, int64_t m, int64_t n, int64_t rows, float *dw, float *dbias, const float *dy, const float *idx);
void dd_cuda_im2col(dd_backend *be, const dd_conv_desc *d, float *col, const float *x);
void dd_cuda_col2im(dd_backend *be, const dd_conv_desc *d, float *dx, const float *col);

/* catalogue: normalization and convolution-like */
/* (kernels_norm.cu) */
void dd_cuda_lrn_forward(dd_backend *be, int across, int n, int c, int h, int w, int size, float alpha, float beta, float k, float *y, float *scale, const float *x);
void dd_cuda_lrn_backward(dd_backend *be, int across, int n, int c, int h, int w, int size, float alpha, float beta, float *dx, const float *dy, const float *x, const float *y, const float *scale);
void dd_cuda_mvn_forward(dd_backend *be, int64_t rows, int64_t dim, int normalize_variance, float eps, float *y, float *sd, const float *x);
void dd_cuda_mvn_backward(dd_backend *be, int64_t rows, int64_t dim, int normalize_variance, float *dx, const float *dy, const float *y, const float *sd);

/* catalogue: losses and recurrent */
/* losses (kernels_losses.cu) */
double dd_cuda_sigmoid_xent_forward(dd_backend *be, int64_t n, const float *x, const float *target, int has_ignore,
                                    int ignore_label, int64_t *valid);
void dd_cuda_sigmoid_xent_backward(dd_backend *be, int64_t n, float *dx, const float *x, const float *target,
                                   int has_ignore, int ignore_label, float scale);
double dd_cuda_infogain_forward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, const float *prob,
                                const float *label, const float *h, int has_ignore, int ignore_label, int64_t *valid);
void dd_cuda_infogain_backward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *dx,
                               const float *prob, const float *label, const float *h, int has_ignore, int ignore_label,
                               float scale);
void dd_cuda_multinomial_backward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *dx,
                                  const float *prob, const float *label, float scale);
double dd_cuda_hinge_forward(dd_backend *be, int64_t outer, int64_t channels, const float *x, const float *label,
                             int norm);
void dd_cuda_hinge_backward(dd_backend *be, int64_t outer, int64_t channels, float *dx, const float *x,
                            const float *label, int norm, float scale);
double dd_cuda_contrastive_forward(dd_backend *be, int64_t n, int64_t channels, const float *a, const float *b,
                                   const float *sim, float margin, int legacy);
void dd_cuda_contrastive_backward(dd_backend *be, int64_t n, int64_t channels, float *da, float *db, const float *a,
                                  const float *b, const float *sim, float margin, int legacy, float scale);
/* recurrent */
void dd_cuda_lstm_unit_forward(dd_backend *be, int64_t n, int64_t dim, float *c, float *h, const float *c_prev, const float *gates, const float *cont);
void dd_cuda_lstm_unit_backward(dd_backend *be, int64_t n, int64_t dim, float *dc_prev, float *dgates, const float *c_prev, const float *gates, const float *cont, const float *c, const float *dc, const float *dh);
void dd_cuda_rnn_tanh_forward(dd_backend *be, int64_t n, float *y, const float *x);
void dd_cuda_rnn_tanh_backward(dd_backend *be, int64_t n, float *dx, const float *dy, const float *y);

/* catalogue: data */

#ifdef __cplusplus
}
#endif

#endif
