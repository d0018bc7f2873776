/* Convolution geometry from Caffe's ConvolutionParameter, shared by Convolution, Deconvolution
 * and Im2col (core/layers/conv_geom.h). */
#include "layers/conv_geom.h"

/* Reads one of Caffe's "repeated or _h/_w" spatial settings. Returns 0 or an error. */
static int spatial(dd_shape_ctx *c, const char *what, size_t n, const uint32_t *v, int has_h,
                   uint32_t h, int has_w, uint32_t w, uint32_t dflt, int64_t out[2]) {
  if (has_h || has_w) {
    if (n) return dd_shape_fail(c, "give %s either as %s or as %s_h/%s_w, not both", what, what, what, what);
    if (!(has_h && has_w)) return dd_shape_fail(c, "%s_h and %s_w must be given together", what, what);
    out[0] = h;
    out[1] = w;
    return 0;
  }
  if (n > 2) return dd_shape_fail(c, "%s has %zu values; 2-D convolution takes 1 or 2", what, n);
  out[0] = n ? v[0] : dflt;
  out[1] = n == 2 ? v[1] : out[0];
  return 0;
}

/* Kernel, pad, stride and dilation from Caffe's fields; checks them. */
int dd__conv_geometry(dd_shape_ctx *c, const Caffe__ConvolutionParameter *p, int64_t k[2],
                    int64_t pad[2], int64_t st[2], int64_t dil[2]) {
  int r;
  if ((r = spatial(c, "kernel", p->n_kernel_size, p->kernel_size, p->has_kernel_h, p->kernel_h,
                   p->has_kernel_w, p->kernel_w, 0, k)))
    return r;
  if (k[0] <= 0 || k[1] <= 0) return dd_shape_fail(c, "kernel_size (or kernel_h/kernel_w) must be > 0");
  if ((r = spatial(c, "pad", p->n_pad, p->pad, p->has_pad_h, p->pad_h, p->has_pad_w, p->pad_w, 0, pad)))
    return r;
  if ((r = spatial(c, "stride", p->n_stride, p->stride, p->has_stride_h, p->stride_h, p->has_stride_w,
                   p->stride_w, 1, st)))
    return r;
  if (st[0] <= 0 || st[1] <= 0) return dd_shape_fail(c, "stride must be > 0");
  if ((r = spatial(c, "dilation", p->n_dilation, p->dilation, 0, 0, 0, 0, 1, dil))) return r;
  if (dil[0] <= 0 || dil[1] <= 0) return dd_shape_fail(c, "dilation must be > 0");
  return 0;
}


int dd__conv_out(dd_shape_ctx *c, const dd_shape *b, const int64_t k[2], const int64_t pad[2], const int64_t st[2],
                 const int64_t dil[2], int64_t o[2]) {
  for (int i = 0; i < 2; i++) {
    /* kernel, pad and dilation are uint32 and dims at most INT32_MAX: only ext can overflow */
    int64_t ext, in = b->dims[2 + i] + 2 * pad[i];
    if (__builtin_mul_overflow(dil[i], k[i] - 1, &ext) || ext > INT64_MAX - 1)
      return dd_shape_fail(c, "the %s kernel extent dilation %lld x (kernel %lld - 1) + 1 overflows",
                           i ? "horizontal" : "vertical", (long long)dil[i], (long long)k[i]);
    ext += 1;
    if (in < ext)
      return dd_shape_fail(c, "the %s kernel extent %lld is larger than the padded input %lld",
                           i ? "horizontal" : "vertical", (long long)ext, (long long)in);
    o[i] = (in - ext) / st[i] + 1;
    if (o[i] > DD_SHAPE_MAX_COUNT)
      return dd_shape_fail(c, "the %s output size %lld (pad %lld) is more than %lld", i ? "horizontal" : "vertical",
                           (long long)o[i], (long long)pad[i], (long long)DD_SHAPE_MAX_COUNT);
  }
  return 0;
}

int dd__conv_shape_begin(dd_shape_ctx *c, const char *what, const Caffe__ConvolutionParameter **pp, const dd_shape **bp,
                         int64_t k[2], int64_t pad[2], int64_t st[2], int64_t dil[2]) {
  const Caffe__ConvolutionParameter *p = c->lp->convolution_param;
  *pp = p;
  *bp = NULL;
  if (!p || !p->has_num_output || p->num_output == 0)
    return dd_shape_fail(c, "convolution_param { num_output: N } is required and must be > 0");
  int r;
  if ((r = dd__conv_geometry(c, p, k, pad, st, dil))) return r;
  if (p->group == 0) return dd_shape_fail(c, "group must be > 0");
  if (p->num_output % p->group)
    return dd_shape_fail(c, "num_output %u is not a multiple of group %u", p->num_output, p->group);
  c->n_params = p->bias_term ? 2 : 1;
  c->params[1] = dd_shape_make(1, (int64_t[]){p->num_output});
  const dd_shape *b = &c->bottoms[0];
  if (!dd_shape_known(b)) {
    c->params[0] = dd_shape_unknown();
    for (int t = 0; t < c->nt; t++) c->tops[t] = dd_shape_unknown();
    return 0;
  }
  if (p->axis != 1 || b->ndim != 4)
    return dd_shape_fail(c, "only 2-D %s over (N, C, H, W) with axis 1 is supported (bottom has %d axes)",
                         what, b->ndim);
  if (b->dims[1] % p->group)
    return dd_shape_fail(c, "input channels %lld are not a multiple of group %u", (long long)b->dims[1], p->group);
  *bp = b;
  return 0;
}
