/* The backend operations table: every piece of numeric work the engine does goes through one of
 * these function pointers, so the CPU backend (core/cpu_backend.c, the reference) and the CUDA
 * backend (cuda/) plug in behind the same layers. Layers hold graph logic, shapes and parameters;
 * backends hold memory and arithmetic.
 *
 * Pointers to tensor memory (`float *` below) are backend memory: host memory for the CPU
 * backend, device memory for CUDA. Only upload/download cross between host and backend memory.
 * Layouts are Caffe's: row-major (C order), images (N, C, H, W). Shapes are given explicitly, in
 * elements. Unless a comment says "accumulates", an output is overwritten.
 *
 * Kernels never allocate: work buffers are sized by the *_workspace functions at setup and passed
 * in. Kernels never fail: arguments were validated when the net was built. */
#ifndef DD_BACKEND_H
#define DD_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct dd_backend dd_backend;

/* 2-D convolution (Caffe's im2col semantics, groups, dilation). */
typedef struct {
  int n, c, h, w;            /* input (N, C, H, W) */
  int out_c, out_h, out_w;   /* output (N, out_c, out_h, out_w) */
  int kh, kw, sh, sw, ph, pw, dh, dw;
  int group;
  int bias;      /* the layer has a bias: the forward adds one, backward-filter may give dbias (a
                    backend's fast path may rely on it; a call that disagrees still works) */
  int precision; /* 0 FP32; 1 bf16 mixed precision where the backend has it (bf16 inputs and weights,
                    FP32 accumulation, outputs and weight gradients), else FP32 */
  int keep_input; /* 1: each backward-filter call's x is the x of the last forward with this
                     descriptor and workspace (a Convolution layer that learns its weights): the
                     backend may keep what the forward made of x (its converted copy) in the
                     workspace for that pass. 0: no such promise (Deconvolution, frozen layers) */
  int blk_in, blk_out; /* the layouts of x and dx (blk_in) and of y and dy (blk_out): 0 NCHW FP32;
                          1 the blocked layout of "inference in the blocked layout" below, bf16
                          where precision is bf16, else FP32 (a training plan's blocked steps,
                          core/net/plan.h). Only where conv_blk_train says the backend runs it. */
} dd_conv_desc;

/* Pooling, Caffe's semantics: windows clipped to the padded input; AVE divides by the window
 * size within the padded input (pad counted), MAX ignores padding. */
typedef struct {
  int n, c, h, w, out_h, out_w;
  int kh, kw, sh, sw, ph, pw;
  int method; /* 0 MAX, 1 AVE */
} dd_pool_desc;

/* The catalogue's elementwise neuron functions (Sigmoid ... Swish), one kernel pair for all.
 * Parameters a, b, c per kind, as the layers pass them (core/layers/neuron.c computes them from
 * the prototxt with Caffe's rules). */
typedef enum {
  DD_NEURON_SIGMOID,   /* y = 0.5 tanh(0.5 x) + 0.5;          dx = dy y (1 - y) */
  DD_NEURON_TANH,      /* y = tanh x;                         dx = dy (1 - y^2) */
  DD_NEURON_ELU,       /* a alpha: y = x > 0 ? x : a (e^x - 1); dx = dy (x > 0 ? 1 : y + a) */
  DD_NEURON_POWER,     /* a power, b scale, c shift: y = (b x + c)^a (see the kernel's comment) */
  DD_NEURON_ABSVAL,    /* y = |x|;                            dx = dy sign(x) (0 at 0) */
  DD_NEURON_BNLL,      /* y = log(1 + e^x) (stable);          dx = dy e^x' / (e^x' + 1), x' = min(x, 50) */
  DD_NEURON_EXP,       /* a inner scale, b outer scale: y = b e^(a x); dx = (dy y) a */
  DD_NEURON_LOG,       /* a scale, b shift, c base scale: y = c log(a x + b); dx = ((1 / (a x + b)) (a c)) dy */
  DD_NEURON_THRESHOLD, /* a threshold: y = x > a ? 1 : 0; no backward */
  DD_NEURON_CLIP,      /* a min, b max: y = max(a, min(x, b)); dx = dy where a <= x <= b, else 0 */
  DD_NEURON_SWISH      /* a beta: s = 0.5 tanh(0.5 a x) + 0.5, y = x s; dx = dy (a y + s (1 - a y)) */
} dd_neuron_kind;

typedef struct {
  int kind; /* dd_neuron_kind */
  float a, b, c;
} dd_neuron_desc;

/* An N-d strided view for copy_nd (the catalogue's structure layers). */
#define DD_COPY_ND_MAX_DIMS 8
typedef struct {
  int ndim;
  int64_t shape[DD_COPY_ND_MAX_DIMS];
  int64_t dst_stride[DD_COPY_ND_MAX_DIMS], src_stride[DD_COPY_ND_MAX_DIMS];
} dd_copy_nd_desc;

/* A fused BatchNorm + Scale (+ bias) (+ ReLU) step over x (n, c, s) (the execution plan's,
 * core/net/plan.h). */
typedef struct {
  int n, c, s;
  int global;  /* normalise with the stored statistics (use_global_stats), not the batch's */
  float eps, maf;
  int relu;    /* a ReLU follows, with negative_slope `slope` */
  float slope;
  int blocked; /* x, y, dx and dy in the blocked layout (bf16 where `bf16`, else FP32) instead of
                  NCHW FP32: a training plan's blocked step (the blk_* operations below) */
  int bf16;
} dd_bn_affine_desc;

typedef struct dd_backend_ops {
  const char *name;

  /* ---- memory ---------------------------------------------------------------------------- */
  void *(*alloc)(dd_backend *be, size_t bytes); /* NULL when out of memory; zeroed */
  void (*free)(dd_backend *be, void *p);
  void (*upload)(dd_backend *be, void *dst, const void *host_src, size_t bytes);
  void (*download)(dd_backend *be, void *host_dst, const void *src, size_t bytes);
  void (*copy)(dd_backend *be, void *dst, const void *src, size_t bytes);
  void (*fill)(dd_backend *be, float *x, float value, int64_t n);
  /* Host memory that uploads fast (pinned on CUDA): batch buffers of the data pipeline. */
  void *(*alloc_host)(dd_backend *be, size_t bytes); /* NULL when out of memory; zeroed */
  void (*free_host)(dd_backend *be, void *p);
  void (*synchronize)(dd_backend *be);

  /* ---- BLAS-like ------------------------------------------------------------------------- */
  /* C (m x n) = alpha * op(A) * op(B) + beta * C, row-major; op(A) is m x k, op(B) is k x n. */
  void (*gemm)(dd_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
               const float *a, const float *b, float beta, float *c);
  /* y = alpha * x + beta * y */
  void (*axpby)(dd_backend *be, int64_t n, float alpha, const float *x, float beta, float *y);
  /* y = x * alpha (x may equal y) */
  void (*scale)(dd_backend *be, int64_t n, float alpha, const float *x, float *y);
  double (*dot)(dd_backend *be, int64_t n, const float *x, const float *y);
  double (*asum)(dd_backend *be, int64_t n, const float *x);

  /* ---- convolution ----------------------------------------------------------------------- */
  size_t (*conv_workspace)(dd_backend *be, const dd_conv_desc *d); /* bytes */
  /* y = conv(x, w) (+ bias per output channel when bias != NULL) */
  void (*conv_forward)(dd_backend *be, const dd_conv_desc *d, float *y, const float *x,
                       const float *w, const float *bias, void *ws);
  /* dx = conv_transpose(dy, w) */
  void (*conv_backward_data)(dd_backend *be, const dd_conv_desc *d, float *dx, const float *dy,
                             const float *w, void *ws);
  /* accumulates: dw += corr(x, dy) (dw may be NULL); dbias += sum over N, H, W of dy (dbias
   * may be NULL) */
  void (*conv_backward_filter)(dd_backend *be, const dd_conv_desc *d, float *dw, float *dbias,
                               const float *dy, const float *x, void *ws);
  /* Which kernels run d (after conv_workspace prepared it), for logs: "oneDNN jit:avx2 f32",
   * "im2col/sgemm", ... (a static string). May be NULL. */
  const char *(*conv_impl)(dd_backend *be, const dd_conv_desc *d);

  /* ---- pooling --------------------------------------------------------------------------- */
  /* mask (MAX only, may be NULL otherwise): flat index h * w + x of each maximum in its plane */
  void (*pool_forward)(dd_backend *be, const dd_pool_desc *d, float *y, int32_t *mask,
                       const float *x);
  void (*pool_backward)(dd_backend *be, const dd_pool_desc *d, float *dx, const float *dy,
                        const int32_t *mask);

  /* ---- BatchNorm (Caffe: no affine part; statistics per channel over N x S) ----------------- */
  /* Batch statistics: mean[c], var[c] (biased) of x (N, C, S); y = (x - mean) / sqrt(var + eps);
   * inv_std[c] = 1 / sqrt(var + eps). Then the stored blobs move:
   * factor = maf * factor + 1; mean_sum = mean + maf * mean_sum;
   * var_sum = (m / (m - 1)) * var + maf * var_sum, m = N * S (correction 1 when m == 1).
   * x may equal y. */
  void (*bn_forward_train)(dd_backend *be, int n, int c, int s, float *y, const float *x,
                           float *mean, float *inv_std, float *mean_sum, float *var_sum,
                           float *factor, float maf, float eps);
  /* Stored statistics: scale = factor == 0 ? 0 : 1 / factor; mean = mean_sum * scale;
   * var = var_sum * scale; y = (x - mean) / sqrt(var + eps); also fills mean and inv_std. */
  void (*bn_forward_global)(dd_backend *be, int n, int c, int s, float *y, const float *x,
                            float *mean, float *inv_std, const float *mean_sum,
                            const float *var_sum, const float *factor, float eps);
  /* Batch statistics: dx = inv_std * (dy - mean_c(dy) - y * mean_c(dy * y)); global:
   * dx = inv_std * dy. y is the forward output. dx may equal dy. */
  void (*bn_backward)(dd_backend *be, int n, int c, int s, float *dx, const float *dy,
                      const float *y, const float *inv_std, int global);

  /* ---- per-channel scale and bias (Scale, Bias layers): x viewed as (outer, dim, inner) ---- */
  /* y = x * scale[d] (scale may be NULL: 1) + bias[d] (bias may be NULL) */
  void (*channel_affine)(dd_backend *be, int64_t outer, int64_t dim, int64_t inner, float *y,
                         const float *x, const float *scale, const float *bias);
  /* accumulates dscale[d] += sum(dy * x) (dscale may be NULL), dbias[d] += sum(dy) (may be
   * NULL); dx = dy * scale[d] (dx may be NULL; scale NULL means 1) */
  void (*channel_affine_backward)(dd_backend *be, int64_t outer, int64_t dim, int64_t inner,
                                  float *dx, float *dscale, float *dbias, const float *dy,
                                  const float *x, const float *scale);

  /* ---- elementwise ----------------------------------------------------------------------- */
  void (*relu_forward)(dd_backend *be, int64_t n, float *y, const float *x, float slope);
  /* dx = dy * (x > 0 ? 1 : slope); x is the forward input (or output: same sign) */
  void (*relu_backward)(dd_backend *be, int64_t n, float *dx, const float *dy, const float *x,
                        float slope);
  /* y = a * b (elementwise) */
  void (*mul)(dd_backend *be, int64_t n, float *y, const float *a, const float *b);
  /* y = max(y, x); argmax[i] = index when x wins (argmax updated where x > y) */
  void (*max_update)(dd_backend *be, int64_t n, float *y, int32_t *argmax, const float *x,
                     int32_t index);
  /* dx = argmax == index ? dy : 0 */
  void (*max_backward)(dd_backend *be, int64_t n, float *dx, const float *dy,
                       const int32_t *argmax, int32_t index);
  /* Dropout with a counter-based mask: keep[i] = hash(seed, i) >= threshold; y = x * keep *
   * scale; mask gets keep as 0/1 (for backward: dx = dy * mask * scale). */
  void (*dropout_forward)(dd_backend *be, int64_t n, float *y, float *mask, const float *x,
                          uint64_t seed, float ratio, float scale);

  /* ---- softmax and losses: x viewed as (outer, channels, inner), softmax over channels ------ */
  void (*softmax_forward)(dd_backend *be, int64_t outer, int64_t channels, int64_t inner,
                          float *y, const float *x);
  /* dx = y * (dy - sum_c(dy * y)) */
  void (*softmax_backward)(dd_backend *be, int64_t outer, int64_t channels, int64_t inner,
                           float *dx, const float *dy, const float *y);
  /* Cross entropy of prob against integer labels (stored as floats): returns the sum of
   * -log(max(prob[label], FLT_MIN)) over positions whose label != ignore_label (has_ignore), and
   * the count of those positions in *valid. */
  double (*xent_forward)(dd_backend *be, int64_t outer, int64_t channels, int64_t inner,
                         const float *prob, const float *label, int has_ignore,
                         int ignore_label, int64_t *valid);
  /* dx = (prob - onehot(label)) * scale; zero at ignored positions */
  void (*xent_backward)(dd_backend *be, int64_t outer, int64_t channels, int64_t inner,
                        float *dx, const float *prob, const float *label, int has_ignore,
                        int ignore_label, float scale);
  /* Top-k accuracy: counts correct and valid positions; per_class_correct/per_class_total may be
   * NULL (else channels entries each, accumulated). Ties rank as in Caffe 1.0's sort of (value,
   * class) pairs: an equal value with a higher class index ranks above the true class. A position
   * with a NaN score is never correct (Caffe counts it correct). Labels were range-checked by the
   * layer. */
  void (*accuracy)(dd_backend *be, int64_t outer, int64_t channels, int64_t inner,
                   const float *x, const float *label, int top_k, int has_ignore,
                   int ignore_label, int64_t *correct, int64_t *valid, float *per_class_correct,
                   float *per_class_total);
  /* Distillation: p = softmax(t / T), q = softmax(s / T) over channels of (outer, channels);
   * returns sum over rows of T^2 * KL(p || q); ds = scale * T * (q - p) (ds may be NULL; the
   * KDLoss layer passes scale = 1 / outer and multiplies by its top's diff in backward). */
  double (*kd_forward_backward)(dd_backend *be, int64_t outer, int64_t channels,
                                const float *s, const float *t, float temperature, float *ds,
                                float scale);

  /* Attention transfer (Zagoruyko & Komodakis): per image, q = Q / ||Q||_2 with
   * Q[j] = sum over channels of x[c][j]^2 over the hw positions, for the student s (n, cs, hw)
   * and the teacher t (n, ct, hw). Returns sum over images of ||q_s - q_t||_2^2; ds (may be NULL)
   * gets scale * its gradient with respect to s. ws: 2 * hw doubles of workspace. */
  double (*attention_forward_backward)(dd_backend *be, int64_t n, int64_t cs, int64_t ct, int64_t hw,
                                       const float *s, const float *t, float *ds, float scale, void *ws);

  /* ---- strided copies (Concat, Split backward) --------------------------------------------- */
  /* Copies `rows` rows of `cols` floats: dst[r * dst_stride + i] = src[r * src_stride + i]
   * (accumulate: +=). */
  void (*copy_rows)(dd_backend *be, int64_t rows, int64_t cols, float *dst, int64_t dst_stride,
                    const float *src, int64_t src_stride, int accumulate);

  /* ---- solvers (per parameter tensor; rate and decay already include lr_mult/decay_mult) ---- */
  /* Regularisation into the gradient: L2 g += decay * w; L1 g += decay * sign(w). */
  void (*regularize)(dd_backend *be, int64_t n, float *g, const float *w, float decay, int l1);
  /* SGD with momentum (Caffe): h = momentum * h + rate * g; w -= h. Nesterov (Caffe):
   * h_prev = h; h = momentum * h + rate * g; w -= (1 + momentum) * h - momentum * h_prev.
   * g receives the update that was subtracted, as Caffe leaves it in the diff. */
  void (*sgd_update)(dd_backend *be, int64_t n, float *w, float *g, float *h, float rate,
                     float momentum, int nesterov);
  /* Adam (Caffe): m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
   * w -= rate * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps); g receives the update. */
  void (*adam_update)(dd_backend *be, int64_t n, float *w, float *g, float *m, float *v,
                      float rate, float beta1, float beta2, float eps, int t);
  /* AdaGrad (Caffe): h += g^2; w -= rate * g / (sqrt(h) + eps). RMSProp (Caffe):
   * h = decay * h + (1 - decay) * g^2; w -= rate * g / (sqrt(h) + eps). g receives the update. */
  void (*adagrad_update)(dd_backend *be, int64_t n, float *w, float *g, float *h,
                         float rate, float eps, float rms_decay, int rmsprop);

  /* ---- health ------------------------------------------------------------------------------ */
  /* 0 while every operation so far worked; else an error code and a message (a device fault, a
   * lost GPU). May be NULL: the backend cannot fail after setup (the CPU). The solver asks after
   * every iteration. */
  int (*status)(dd_backend *be, char *msg, size_t len);

  /* ---- lifetime ---------------------------------------------------------------------------- */
  /* Frees the backend and everything it allocated (from the thread that created it). */
  void (*destroy)(dd_backend *be);
  /* A one-line description of the math path (device, libraries, threads) for logs. */
  const char *(*describe)(dd_backend *be);

  /* ==== the layer catalogue's kernels ====================================================== */
  /* A backend may leave any of these NULL: a layer that needs a missing kernel refuses to build
   * on that backend, naming the layer, its type and the backend (dd__need_kernel in layer.h). It
   * never falls back to another backend silently. */

  /* ---- catalogue: neuron layers ---------------------------------------------------------- */
  /* y = f(x) over n elements for the kind in d (dd_neuron_desc above); y may equal x. */
  void (*neuron_forward)(dd_backend *be, const dd_neuron_desc *d, int64_t n, float *y, const float *x);
  /* dx = dy * f'(x), from the input x and the output y of the forward (x != y); dx may equal dy.
   * POWER (a power, b scale, c shift; ds = a b): ds == 0 or a == 1: dx = ds dy; a == 2:
   * dx = (ds b x + ds c) dy; c == 0: dx = (a y / x) dy; else dx = (ds y / (b x + c)) dy. */
  void (*neuron_backward)(dd_backend *be, const dd_neuron_desc *d, int64_t n, float *dx, const float *dy,
                          const float *x, const float *y);
  /* PReLU: element i of x (n elements) is in channel (i / inner) % channels; y = x > 0 ? x :
   * slope[channel] x (y may equal x). */
  void (*prelu_forward)(dd_backend *be, int64_t n, int64_t channels, int64_t inner, float *y, const float *x,
                        const float *slope);
  /* dx = dy (x > 0 ? 1 : slope[channel]) when dx != NULL; dslope[c] += sum over channel c's
   * elements of dy x (x <= 0) when dslope != NULL (accumulated in double per channel). */
  void (*prelu_backward)(dd_backend *be, int64_t n, int64_t channels, int64_t inner, float *dx,
                         float *dslope, const float *dy, const float *x, const float *slope);

  /* ---- catalogue: structure layers ------------------------------------------------------- */
  /* Reduction (Caffe): x viewed as (outer, dim); y[i] = coeff * op(x[i, 0..dim)), op 1 SUM,
   * 2 ASUM (sum of |x|), 3 SUMSQ, 4 MEAN (the sum divided by dim). */
  void (*reduce_forward)(dd_backend *be, int op, int64_t outer, int64_t dim, float *y, const float *x,
                         float coeff);
  /* dx[i, j] = coeff * dy[i] * (1 for SUM, sign(x) for ASUM, 2 x for SUMSQ, 1 / dim for MEAN) */
  void (*reduce_backward)(dd_backend *be, int op, int64_t outer, int64_t dim, float *dx, const float *dy,
                          const float *x, float coeff);
  /* An N-d strided copy (Crop; any sub-block of a tensor): for every index (i_0, ..., i_{ndim-1})
   * below d->shape, dst[sum_k i_k d->dst_stride[k]] = src[sum_k i_k d->src_stride[k]]
   * (accumulate: +=). Strides are in elements; dst and src do not overlap; ndim 0 copies one
   * element. */
  void (*copy_nd)(dd_backend *be, const dd_copy_nd_desc *d, float *dst, const float *src, int accumulate);
  /* ArgMax (Caffe): x viewed as (outer, dim, inner); for each (o, i) the k largest of
   * x[o, 0..dim, i], ranked as Caffe's std::partial_sort with std::greater over (value, index)
   * pairs: by value descending, an equal value with the higher index first (NaN: unspecified, as
   * in Caffe). Rank r goes to ind[o * out_stride + r * inner + i] (the index, as a float) and
   * val[o * out_stride + r * inner + i] (the value); ind or val may be NULL. 1 <= k <= dim. */
  void (*argmax_topk)(dd_backend *be, int64_t outer, int64_t dim, int64_t inner, int k, const float *x,
                      float *ind, float *val, int64_t out_stride);
  /* Embed (Caffe): y (m, n) rows y[j] = w[idx[j]] (w (rows, n)) + bias (n; may be NULL). The
   * indices are floats holding integers in [0, rows) (the layer checked them); a row for an index
   * out of range is left as it was. */
  void (*embed_forward)(dd_backend *be, int64_t m, int64_t n, int64_t rows, float *y, const float *idx,
                        const float *w, const float *bias);
  /* accumulates: dw[idx[j]] += dy[j] for j = 0..m in that order (dw may be NULL; indices out of
   * range skipped); dbias[c] += sum over j of dy[j, c] (dbias may be NULL). */
  void (*embed_backward)(dd_backend *be, int64_t m, int64_t n, int64_t rows, float *dw, float *dbias,
                         const float *dy, const float *idx);
  /* Im2col (Caffe's im2col over d's geometry, d->group ignored): x (n, c, h, w) ->
   * col (n, c * kh * kw, out_h, out_w), col[b, (ch * kh + i) * kw + j, y, x] =
   * x[b, ch, y * sh - ph + i * dh, x * sw - pw + j * dw] (0 outside the image). */
  void (*im2col)(dd_backend *be, const dd_conv_desc *d, float *col, const float *x);
  /* Its adjoint (Caffe's col2im): dx (n, c, h, w) = the sum of the col entries that read each
   * pixel, added in the order (ch, i, j, y, x) (overwrites dx). */
  void (*col2im)(dd_backend *be, const dd_conv_desc *d, float *dx, const float *col);

  /* ---- catalogue: normalization and convolution-like layers ------------------------------ */
  /* LRN (Caffe), x (n, c, h, w). ACROSS_CHANNELS: scale = k + alpha / size * (sum of x^2 over
   * channels c - (size - 1) / 2 .. c + (size - 1) / 2 inside [0, c)); y = x scale^-beta. The
   * scale is kept for the backward. WITHIN_CHANNEL (across 0): scale = 1 + alpha * (sum of x^2 over
   * the size x size window centred on the pixel, inside the image) / (the window's area inside
   * the image padded by (size - 1) / 2: Caffe's AVE pooling divisor); y = x scale^-beta. */
  void (*lrn_forward)(dd_backend *be, int across, int n, int c, int h, int w, int size, float alpha, float beta,
                      float k, float *y, float *scale, const float *x);
  /* the gradient of the forward above: ACROSS: dx = dy scale^-beta - (2 alpha beta / size) x
   * (sum over the window of dy y / scale); WITHIN: dx = dy scale^-beta - 2 alpha beta x (sum over
   * the windows q that hold the pixel of dy_q y_q / (scale_q area_q)). dx != dy. */
  void (*lrn_backward)(dd_backend *be, int across, int n, int c, int h, int w, int size, float alpha, float beta,
                       float *dx, const float *dy, const float *x, const float *y, const float *scale);
  /* MVN (Caffe): x viewed as (rows, dim); y = x - mean(row), then (normalize_variance) divided by
   * sd[row] = sqrt(mean((x - mean)^2)) + eps, which is stored (1 otherwise). Sums in double. */
  void (*mvn_forward)(dd_backend *be, int64_t rows, int64_t dim, int normalize_variance, float eps, float *y,
                      float *sd, const float *x);
  /* dx = dy - mean(dy), or (normalize_variance) (dy - mean(dy y) y - mean(dy)) / sd; dx != dy. */
  void (*mvn_backward)(dd_backend *be, int64_t rows, int64_t dim, int normalize_variance, float *dx, const float *dy,
                       const float *y, const float *sd);

  /* ---- catalogue: losses and recurrent layers -------------------------------------------- */
  /* losses (Caffe's loss layers; labels are floats holding integer classes, range-checked by the
   * layer before the call; sums accumulate in double in a fixed order) */
  /* SigmoidCrossEntropyLoss, Caffe's stable form: returns the sum over the n positions of
   * -(x t - max(x, 0) - log(1 + exp(-|x|))), skipping (has_ignore) positions whose target
   * truncated to an integer (Caffe's static_cast<int>) equals ignore_label; *valid gets the count
   * of the others. */
  double (*sigmoid_xent_forward)(dd_backend *be, int64_t n, const float *x, const float *target,
                                 int has_ignore, int ignore_label, int64_t *valid);
  /* dx = (sigmoid(x) - t) * scale; 0 at ignored positions (as above) */
  void (*sigmoid_xent_backward)(dd_backend *be, int64_t n, float *dx, const float *x,
                                const float *target, int has_ignore, int ignore_label, float scale);
  /* InfogainLoss and MultinomialLogisticLoss: prob viewed as (outer, channels, inner), one label
   * y per (outer, inner) position. Returns the sum over positions not ignored (label ==
   * ignore_label, has_ignore) of -sum_l H[y, l] * log(max(prob[o, l, i], 1e-20)), H a channels x
   * channels row-major matrix, or, H NULL, the identity: -log(max(prob[o, y, i], 1e-20));
   * *valid gets the count of those positions. */
  double (*infogain_forward)(dd_backend *be, int64_t outer, int64_t channels, int64_t inner,
                             const float *prob, const float *label, const float *h, int has_ignore,
                             int ignore_label, int64_t *valid);
  /* InfogainLoss's gradient through its softmax: dx[o, l, i] = scale * (prob[o, l, i] *
   * sum_k H[y, k] - H[y, l]) (H NULL: the identity); 0 at ignored positions. */
  void (*infogain_backward)(dd_backend *be, int64_t outer, int64_t channels, int64_t inner,
                            float *dx, const float *prob, const float *label, const float *h,
                            int has_ignore, int ignore_label, float scale);
  /* MultinomialLogisticLoss's gradient (prob is its input): dx = 0 except
   * dx[o, y, i] = -scale / max(prob[o, y, i], 1e-20). */
  void (*multinomial_backward)(dd_backend *be, int64_t outer, int64_t channels, int64_t inner,
                               float *dx, const float *prob, const float *label, float scale);
  /* HingeLoss: x (outer, channels), one label y per row; t[o, c] = max(0, 1 + s x[o, c]) with
   * s = -1 at c == y, +1 elsewhere. Returns the sum of t (norm 1) or of t^2 (norm 2). */
  double (*hinge_forward)(dd_backend *be, int64_t outer, int64_t channels, const float *x,
                          const float *label, int norm);
  /* dx = scale * s * (norm 1: (t > 0 ? 1 : 0); norm 2: 2 t) */
  void (*hinge_backward)(dd_backend *be, int64_t outer, int64_t channels, float *dx,
                         const float *x, const float *label, int norm, float scale);
  /* ContrastiveLoss: a, b (n, channels), sim (n): row r is a similar pair when sim[r] truncated
   * to an integer is not 0. d = a - b, q = |d|^2 per row. Returns the sum over rows of: similar q;
   * dissimilar legacy max(margin - q, 0), else max(margin - sqrt(q), 0)^2. */
  double (*contrastive_forward)(dd_backend *be, int64_t n, int64_t channels, const float *a,
                                const float *b, const float *sim, float margin, int legacy);
  /* Caffe's gradient with alpha = scale: similar rows da = alpha d; dissimilar rows, when
   * m = (legacy ? margin - q : margin - sqrt(q)) > 0, da = beta d with beta = -alpha (legacy) or
   * -alpha * m / (sqrt(q) + 1e-4), else da = 0. db = -da. da or db may be NULL (not written). */
  void (*contrastive_backward)(dd_backend *be, int64_t n, int64_t channels, float *da, float *db,
                               const float *a, const float *b, const float *sim, float margin,
                               int legacy, float scale);


  /* recurrent */
  /* The LSTM cell (Caffe's LSTMUnit) over n rows of dim units. gates (n, 4 dim): pre-activations
   * in Caffe's order i, f, o, g. With s(v) = 1 / (1 + e^-v) and th(v) = 2 s(2 v) - 1 (Caffe's):
   * i = s(gates[0..dim)), f = cont[r] == 0 ? 0 : cont[r] * s(gates[dim..2 dim)),
   * o = s(gates[2 dim..3 dim)), g = th(gates[3 dim..4 dim));
   * c = f * c_prev + i * g; h = o * th(c). c_prev, c, h: (n, dim); cont: (n). */
  void (*lstm_unit_forward)(dd_backend *be, int64_t n, int64_t dim, float *c, float *h,
                            const float *c_prev, const float *gates, const float *cont);
  /* Its backward, Caffe's formulas (f includes the cont factor, also in f (1 - f)):
   * dct = dc + dh * o * (1 - th(c)^2); dc_prev = dct * f;
   * dgates: i: dct * g * i (1 - i), f: dct * c_prev * f (1 - f), o: dh * th(c) * o (1 - o),
   * g: dct * i * (1 - g^2). c is the forward's output; dc (n, dim) may be NULL (zero); dc_prev and
   * dgates may be NULL (not wanted); dc_prev may equal dc (updated in place). */
  void (*lstm_unit_backward)(dd_backend *be, int64_t n, int64_t dim, float *dc_prev, float *dgates,
                             const float *c_prev, const float *gates, const float *cont,
                             const float *c, const float *dc, const float *dh);
  /* The RNN's activation (Caffe's TanH layer): y = tanh(x); x may equal y. */
  void (*rnn_tanh_forward)(dd_backend *be, int64_t n, float *y, const float *x);
  /* dx = dy * (1 - y^2), y the forward's output; dx may equal dy. */
  void (*rnn_tanh_backward)(dd_backend *be, int64_t n, float *dx, const float *dy, const float *y);

  /* ---- catalogue: data layers ------------------------------------------------------------ */

  /* ==== end of the layer catalogue's kernels =============================================== */

  /* ==== fused steps of the execution plan (core/net/plan.h) ======================================= */
  /* A backend may leave these NULL: the plan then runs those layers one by one. Each computes what
   * the layers it replaces compute, in fewer passes over memory; the layers' FP32 kernels above are
   * the reference they are tested against (tests/test_plan.c states the bounds). */

  /* BatchNorm, then Scale with gamma (C) and beta (C; NULL: no bias), then ReLU (d->relu):
   * batch statistics (d->global 0) exactly as bn_forward_train computes and stores them (mean,
   * inv_std, the moving sums and factor), or the stored ones as bn_forward_global; then
   * y = relu(gamma[c] * ((x - mean[c]) * inv_std[c]) + beta[c]). y != x. */
  void (*bn_affine_relu_forward)(dd_backend *be, const dd_bn_affine_desc *d, float *y, const float *x,
                                 float *mean, float *inv_std, float *mean_sum, float *var_sum, float *factor,
                                 const float *gamma, const float *beta);
  /* Its gradient, from the forward's output y and input x: g = dy (y > 0 ? 1 : slope) with a ReLU,
   * else dy; xhat = (x - mean) inv_std. Accumulates dgamma[c] += sum(g xhat), dbeta[c] += sum(g)
   * (either may be NULL). dx (NULL: not wanted) = gamma inv_std (g - mean_c(g) - xhat mean_c(g xhat))
   * with batch statistics, gamma inv_std g with the stored ones. dx != dy. */
  void (*bn_affine_relu_backward)(dd_backend *be, const dd_bn_affine_desc *d, float *dx, float *dgamma,
                                  float *dbeta, const float *dy, const float *y, const float *x,
                                  const float *mean, const float *inv_std, const float *gamma);

  /* ==== inference in the blocked layout (a frozen net's blocked plan, core/net/plan.h) ==========
   * Optional (NULL: the plan keeps NCHW FP32 activations). An activation (N, C, S = H x W) with
   * C % 16 == 0 is held in the nChw16c layout: element (n, c, s) at index
   * ((n (C / 16) + c / 16) S + s) 16 + c % 16, in bf16 (`bf16` 1: in the first half of its blob's
   * FP32 buffer; arithmetic in FP32, each result rounded to bf16 once, to nearest even) or FP32
   * (`bf16` 0: the whole buffer). */
  /* y (blocked) = relu?(conv(x, w) + bias), leaky with `slope` where relu; x blocked (x_blocked)
   * or NCHW FP32; w and bias FP32. prepare (at setup) returns 1 when the backend runs it, 0 when
   * not; forward returns 0, or -1 when it cannot run it (nothing done). */
  int (*conv_blk_prepare)(dd_backend *be, const dd_conv_desc *d, int bf16, int x_blocked, int relu, float slope);
  int (*conv_blk_forward)(dd_backend *be, const dd_conv_desc *d, int bf16, int x_blocked, int relu, float slope,
                          void *y, const void *x, const float *w, const float *bias);
  /* y = x > 0 ? x : slope x over n elements (any layout); y may equal x. */
  void (*blk_relu)(dd_backend *be, int bf16, int64_t n, void *y, const void *x, float slope);
  /* y = relu?(scale[c] x + bias[c]) (bias may be NULL), blocked (N, C, S); y may equal x. */
  void (*blk_affine)(dd_backend *be, int bf16, int n, int c, int s, void *y, const void *x, const float *scale,
                     const float *bias, int relu, float slope);
  /* y = relu?(ca a + cb b) over n elements (any layout, the same for all three); y may equal a or b. */
  void (*blk_sum)(dd_backend *be, int bf16, int64_t n, void *y, const void *a, float ca, const void *b, float cb,
                  int relu, float slope);
  /* y (NCHW FP32) = x (blocked (N, C, S)); y does not overlap x. */
  void (*blk_to_nchw)(dd_backend *be, int bf16, int n, int c, int s, float *y, const void *x);
  /* ---- training in the blocked layout (a learning net's blocked plan; NULL: none) ---- */
  /* Whether the convolution d (its blk_in / blk_out set) runs with those layouts in every pass
   * (prepares it, at setup); 0 when not: the plan then keeps NCHW FP32 there. */
  int (*conv_blk_train)(dd_backend *be, const dd_conv_desc *d);
  /* y (blocked (N, C, S)) = x (NCHW FP32); y does not overlap x. */
  void (*blk_from_nchw)(dd_backend *be, int bf16, int n, int c, int s, void *y, const float *x);
} dd_backend_ops;

struct dd_backend {
  const dd_backend_ops *ops;
  void *ctx;    /* the backend's own state */
  int threads;  /* CPU: worker threads; CUDA: the device ordinal */
};

/* Creates the CPU backend with `threads` workers (0: one per available core). Returns 0,
 * DD_ENOMEM, or DD_ENOTFOUND when OpenBLAS cannot be loaded (core/cpu_blas.h). */
int dd_cpu_backend_create(dd_backend **out, int threads);
void dd_cpu_backend_destroy(dd_backend *be);

/* A one-line description of the CPU math path (BLAS library, its kernel, threads) for logs. */
const char *dd_cpu_backend_describe(dd_backend *be);

/* Any backend, however it was created: through its own table (NULL: nothing). Backends are made
 * from a device name by a device registry (core/base/device.h; core/devices/ has the built-in one). */
static inline void dd_backend_destroy(dd_backend *be) {
  if (be) be->ops->destroy(be);
}
static inline const char *dd_backend_describe(dd_backend *be) { return be->ops->describe(be); }

#endif
