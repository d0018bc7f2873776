/* The CPU backend's kernels (the functions behind dd_backend_ops for "cpu"; see backend.h for
 * what each computes) and the backend's private state. */
#ifndef DD_CPU_KERNELS_H
#define DD_CPU_KERNELS_H

#include <stdint.h>
#include <string.h>

#include "base/backend.h"
#include "cpu/threadpool.h"

struct dd_dnnl;

typedef struct {
  dd_threadpool *pool;
  struct dd_dnnl *dnnl; /* oneDNN's convolutions (cpu_dnnl.h); NULL without oneDNN */
  char describe[224];
} dd_cpu_ctx;

/* Kernels compiled for AVX-512, AVX2 and the baseline, picked at load time for the CPU at hand. */
#define DD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

/* bf16 <-> FP32 for one value: widening is exact; rounding is to nearest even, a NaN staying a
 * (quiet) NaN, as oneDNN and AVX512-BF16's conversion round. */
static inline float dd_bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
static inline uint16_t dd_f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  uint32_t r = (u + 0x7fffu + (u >> 16 & 1u)) >> 16;
  return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : r);
}

/* NCHW FP32 (n, c, s) -> nChw16c bf16, c % 16 == 0, over the pool's threads (cpu_convert.c); only
 * where dd_cpu_nchw_to_blk_bf16_available (x86 with AVX512-BF16). */
int dd_cpu_nchw_to_blk_bf16_available(void);
void dd_cpu_nchw_to_blk_bf16(dd_threadpool *pool, int n, int c, int s, uint16_t *y, const float *x);

/* inference in the blocked layout (cpu_blocked.c) */
int dd_cpu_conv_blk_prepare(dd_backend *be, const dd_conv_desc *d, int bf16, int x_blocked, int relu, float slope);
int dd_cpu_conv_blk_forward(dd_backend *be, const dd_conv_desc *d, int bf16, int x_blocked, int relu, float slope,
                            void *y, const void *x, const float *w, const float *bias);
void dd_cpu_blk_relu(dd_backend *be, int bf16, int64_t n, void *y, const void *x, float slope);
void dd_cpu_blk_affine(dd_backend *be, int bf16, int n, int c, int s, void *y, const void *x, const float *scale,
                       const float *bias, int relu, float slope);
void dd_cpu_blk_sum(dd_backend *be, int bf16, int64_t n, void *y, const void *a, float ca, const void *b, float cb,
                    int relu, float slope);
void dd_cpu_blk_to_nchw(dd_backend *be, int bf16, int n, int c, int s, float *y, const void *x);
/* training in the blocked layout (cpu_blocked_train.c); _fast: its vector kernels run here (x86
 * with AVX512-BF16), without which blocked training plans are not offered (the scalar kernels,
 * kept for correctness, are slower than the NCHW path) */
int dd_cpu_blk_train_fast(void);
int dd_cpu_conv_blk_train(dd_backend *be, const dd_conv_desc *d);
void dd_cpu_blk_from_nchw(dd_backend *be, int bf16, int n, int c, int s, void *y, const float *x);
void dd_cpu_bn_blk_forward(dd_backend *be, const dd_bn_affine_desc *d, void *y, const void *x, float *mean,
                           float *inv_std, float *mean_sum, float *var_sum, float *factor, const float *gamma,
                           const float *beta);
void dd_cpu_bn_blk_backward(dd_backend *be, const dd_bn_affine_desc *d, void *dx, float *dgamma, float *dbeta,
                            const void *dy, const void *y, const void *x, const float *mean, const float *inv_std,
                            const float *gamma);

void dd_cpu_fill(dd_backend *be, float *x, float value, int64_t n);
void dd_cpu_axpby(dd_backend *be, int64_t n, float alpha, const float *x, float beta, float *y);
void dd_cpu_scale(dd_backend *be, int64_t n, float alpha, const float *x, float *y);
double dd_cpu_dot(dd_backend *be, int64_t n, const float *x, const float *y);
double dd_cpu_asum(dd_backend *be, int64_t n, const float *x);
size_t dd_cpu_conv_workspace(dd_backend *be, const dd_conv_desc *d);
void dd_cpu_conv_forward(dd_backend *be, const dd_conv_desc *d, float *y, const float *x, const float *w, const float *bias, void *ws);
void dd_cpu_conv_backward_data(dd_backend *be, const dd_conv_desc *d, float *dx, const float *dy, const float *w, void *ws);
const char *dd_cpu_conv_impl(dd_backend *be, const dd_conv_desc *d);
void dd_cpu_conv_backward_filter(dd_backend *be, const dd_conv_desc *d, float *dw, float *dbias, const float *dy, const float *x, void *ws);
void dd_cpu_pool_forward(dd_backend *be, const dd_pool_desc *d, float *y, int32_t *mask, const float *x);
void dd_cpu_pool_backward(dd_backend *be, const dd_pool_desc *d, float *dx, const float *dy, const int32_t *mask);
void dd_cpu_bn_forward_train(dd_backend *be, int n, int c, int s, float *y, const float *x, float *mean, float *inv_std, float *mean_sum, float *var_sum, float *factor, float maf, float eps);
void dd_cpu_bn_forward_global(dd_backend *be, int n, int c, int s, float *y, const float *x, float *mean, float *inv_std, const float *mean_sum, const float *var_sum, const float *factor, float eps);
void dd_cpu_bn_backward(dd_backend *be, int n, int c, int s, float *dx, const float *dy, const float *y, const float *inv_std, int global);
void dd_cpu_channel_affine(dd_backend *be, int64_t outer, int64_t dim, int64_t inner, float *y, const float *x, const float *scale, const float *bias);
void dd_cpu_channel_affine_backward(dd_backend *be, int64_t outer, int64_t dim, int64_t inner, float *dx, float *dscale, float *dbias, const float *dy, const float *x, const float *scale);
void dd_cpu_relu_forward(dd_backend *be, int64_t n, float *y, const float *x, float slope);
void dd_cpu_relu_backward(dd_backend *be, int64_t n, float *dx, const float *dy, const float *x, float slope);
void dd_cpu_mul(dd_backend *be, int64_t n, float *y, const float *a, const float *b);
void dd_cpu_max_update(dd_backend *be, int64_t n, float *y, int32_t *argmax, const float *x, int32_t index);
void dd_cpu_max_backward(dd_backend *be, int64_t n, float *dx, const float *dy, const int32_t *argmax, int32_t index);
void dd_cpu_dropout_forward(dd_backend *be, int64_t n, float *y, float *mask, const float *x, uint64_t seed, float ratio, float scale);
void dd_cpu_softmax_forward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *y, const float *x);
void dd_cpu_softmax_backward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *dx, const float *dy, const float *y);
double dd_cpu_xent_forward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, const float *prob, const float *label, int has_ignore, int ignore_label, int64_t *valid);
void dd_cpu_xent_backward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *dx, const float *prob, const float *label, int has_ignore, int ignore_label, float scale);
void dd_cpu_accuracy(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, const float *x, const float *label, int top_k, int has_ignore, int ignore_label, int64_t *correct, int64_t *valid, float *per_class_correct, float *per_class_total);
double dd_cpu_kd_forward_backward(dd_backend *be, int64_t outer, int64_t channels, const float *s, const float *t, float temperature, float *ds, float scale);
double dd_cpu_attention_forward_backward(dd_backend *be, int64_t n, int64_t cs, int64_t ct, int64_t hw, const float *s, const float *t, float *ds, float scale, void *ws);
void dd_cpu_copy_rows(dd_backend *be, int64_t rows, int64_t cols, float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int accumulate);
void dd_cpu_regularize(dd_backend *be, int64_t n, float *g, const float *w, float decay, int l1);
void dd_cpu_sgd_update(dd_backend *be, int64_t n, float *w, float *g, float *h, float rate, float momentum, int nesterov);
void dd_cpu_adam_update(dd_backend *be, int64_t n, float *w, float *g, float *m, float *v, float rate, float beta1, float beta2, float eps, int t);
void dd_cpu_adagrad_update(dd_backend *be, int64_t n, float *w, float *g, float *h, float rate, float eps, float rms_decay, int rmsprop);

/* ---- the layer catalogue's kernels, by family (core/cpu/cpu_<family>.c) ---- */
/* catalogue: neuron */
void dd_cpu_neuron_forward(dd_backend *be, const dd_neuron_desc *d, int64_t n, float *y, const float *x);
void dd_cpu_neuron_backward(dd_backend *be, const dd_neuron_desc *d, int64_t n, float *dx, const float *dy, const float *x, const float *y);
void dd_cpu_prelu_forward(dd_backend *be, int64_t n, int64_t channels, int64_t inner, float *y, const float *x, const float *slope);
void dd_cpu_prelu_backward(dd_backend *be, int64_t n, int64_t channels, int64_t inner, float *dx, float *dslope, const float *dy, const float *x, const float *slope);

/* catalogue: structure */
void dd_cpu_reduce_forward(dd_backend *be, int op, int64_t outer, int64_t dim, float *y, const float *x, float coeff);
void dd_cpu_reduce_backward(dd_backend *be, int op, int64_t outer, int64_t dim, float *dx, const float *dy, const float *x, float coeff);
void dd_cpu_copy_nd(dd_backend *be, const dd_copy_nd_desc *d, float *dst, const float *src, int accumulate);
void dd_cpu_argmax_topk(dd_backend *be, int64_t outer, int64_t dim, int64_t inner, int k, const float *x, float *ind, float *val, int64_t out_stride);
void dd_cpu_embed_forward(dd_backend *be, int64_t m, int64_t n, int64_t rows, float *y, const float *idx, const float *w, const float *bias);
void dd_cpu_embed_backward(dd_backend *be, int64_t m, int64_t n, int64_t rows, float *dw, float *dbias, const float *dy, const float *idx);
void dd_cpu_im2col(dd_backend *be, const dd_conv_desc *d, float *col, const float *x);
void dd_cpu_col2im(dd_backend *be, const dd_conv_desc *d, float *dx, const float *col);

/* catalogue: normalization and convolution-like */
void dd_cpu_lrn_forward(dd_backend *be, int across, int n, int c, int h, int w, int size, float alpha, float beta, float k, float *y, float *scale, const float *x);
void dd_cpu_lrn_backward(dd_backend *be, int across, int n, int c, int h, int w, int size, float alpha, float beta, float *dx, const float *dy, const float *x, const float *y, const float *scale);
void dd_cpu_mvn_forward(dd_backend *be, int64_t rows, int64_t dim, int normalize_variance, float eps, float *y, float *sd, const float *x);
void dd_cpu_mvn_backward(dd_backend *be, int64_t rows, int64_t dim, int normalize_variance, float *dx, const float *dy, const float *y, const float *sd);

/* catalogue: losses and recurrent */
/* losses */
double dd_cpu_sigmoid_xent_forward(dd_backend *be, int64_t n, const float *x, const float *target, int has_ignore, int ignore_label, int64_t *valid);
void dd_cpu_sigmoid_xent_backward(dd_backend *be, int64_t n, float *dx, const float *x, const float *target, int has_ignore, int ignore_label, float scale);
double dd_cpu_infogain_forward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, const float *prob, const float *label, const float *h, int has_ignore, int ignore_label, int64_t *valid);
void dd_cpu_infogain_backward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *dx, const float *prob, const float *label, const float *h, int has_ignore, int ignore_label, float scale);
void dd_cpu_multinomial_backward(dd_backend *be, int64_t outer, int64_t channels, int64_t inner, float *dx, const float *prob, const float *label, float scale);
double dd_cpu_hinge_forward(dd_backend *be, int64_t outer, int64_t channels, const float *x, const float *label, int norm);
void dd_cpu_hinge_backward(dd_backend *be, int64_t outer, int64_t channels, float *dx, const float *x, const float *label, int norm, float scale);
double dd_cpu_contrastive_forward(dd_backend *be, int64_t n, int64_t channels, const float *a, const float *b, const float *sim, float margin, int legacy);
void dd_cpu_contrastive_backward(dd_backend *be, int64_t n, int64_t channels, float *da, float *db, const float *a, const float *b, const float *sim, float margin, int legacy, float scale);
/* recurrent */
void dd_cpu_lstm_unit_forward(dd_backend *be, int64_t n, int64_t dim, float *c, float *h, const float *c_prev, const float *gates, const float *cont);
void dd_cpu_lstm_unit_backward(dd_backend *be, int64_t n, int64_t dim, float *dc_prev, float *dgates, const float *c_prev, const float *gates, const float *cont, const float *c, const float *dc, const float *dh);
void dd_cpu_rnn_tanh_forward(dd_backend *be, int64_t n, float *y, const float *x);
void dd_cpu_rnn_tanh_backward(dd_backend *be, int64_t n, float *dx, const float *dy, const float *y);

/* catalogue: data */

/* the fused BatchNorm + Scale + ReLU step (cpu_batchnorm.c) */
void dd_cpu_bn_affine_relu_forward(dd_backend *be, const dd_bn_affine_desc *d, float *y, const float *x, float *mean,
                                   float *inv_std, float *mean_sum, float *var_sum, float *factor, const float *gamma,
                                   const float *beta);
void dd_cpu_bn_affine_relu_backward(dd_backend *be, const dd_bn_affine_desc *d, float *dx, float *dgamma, float *dbeta,
                                    const float *dy, const float *y, const float *x, const float *mean,
                                    const float *inv_std, const float *gamma);

#endif
