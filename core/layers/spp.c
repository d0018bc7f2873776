/* SPP (Caffe's SPPLayer, spatial pyramid pooling): spp_param.pyramid_height levels; level l pools
 * each channel into 2^l x 2^l bins with kernel ceil(H / bins), stride the kernel and pad half the
 * remainder (Caffe's rule), MAX (default) or AVE. With one level the top is that pooling's output
 * (N, C, 1, 1); with more, each level's output flattened to (N, C bins^2) and concatenated along
 * axis 1. Built on the backend's pooling kernels; the levels' gradients add up in the bottom. */
#include "base/dd_error.h"
#include "net/layer.h"

#define SPP_MAX_LEVELS 16

/* Level l's pooling over (n, c, h, w), with Caffe's output size (the padded ceil rule). */
static dd_pool_desc level_desc(int l, int64_t n, int64_t c, int64_t h, int64_t w, int max) {
  int bins = 1 << l;
  int kh = (int)((h + bins - 1) / bins), kw = (int)((w + bins - 1) / bins);
  int ph = (kh * bins - (int)h + 1) / 2, pw = (kw * bins - (int)w + 1) / 2;
  dd_pool_desc d = {.n = (int)n, .c = (int)c, .h = (int)h, .w = (int)w, .kh = kh, .kw = kw, .sh = kh, .sw = kw,
                    .ph = ph, .pw = pw, .method = max ? 0 : 1};
  int64_t o[2], in[2] = {h, w}, k[2] = {kh, kw}, pad[2] = {ph, pw};
  for (int i = 0; i < 2; i++) {
    o[i] = (in[i] + 2 * pad[i] - k[i] + k[i] - 1) / k[i] + 1;
    if ((ph || pw) && (o[i] - 1) * k[i] >= in[i] + pad[i]) o[i]--;
  }
  d.out_h = (int)o[0];
  d.out_w = (int)o[1];
  return d;
}

static int is_max(const Caffe__LayerParameter *lp) {
  return !lp->spp_param || lp->spp_param->pool == CAFFE__SPPPARAMETER__POOL_METHOD__MAX;
}

static int spp_shape(dd_shape_ctx *c) {
  const Caffe__SPPParameter *p = c->lp->spp_param;
  if (!p || p->pyramid_height == 0) return dd_shape_fail(c, "spp_param.pyramid_height must be given and > 0");
  if (p->pyramid_height > SPP_MAX_LEVELS)
    return dd_shape_fail(c, "spp_param.pyramid_height %u is more than %d", p->pyramid_height, SPP_MAX_LEVELS);
  if (p->pool == CAFFE__SPPPARAMETER__POOL_METHOD__STOCHASTIC)
    return dd_shape_fail(c, "spp_param.pool STOCHASTIC is not supported (use MAX or AVE)");
  const dd_shape *b = &c->bottoms[0];
  if (!dd_shape_known(b)) {
    c->tops[0] = dd_shape_unknown();
    return 0;
  }
  if (b->ndim != 4) return dd_shape_fail(c, "SPP needs a (N, C, H, W) bottom, got %d axes", b->ndim);
  if ((int64_t)1 << (p->pyramid_height - 1) > b->dims[2] || (int64_t)1 << (p->pyramid_height - 1) > b->dims[3])
    return dd_shape_fail(c, "spp_param.pyramid_height %u asks for %lld bins, more than the %lld x %lld input",
                         p->pyramid_height, (long long)1 << (p->pyramid_height - 1), (long long)b->dims[2],
                         (long long)b->dims[3]);
  if (p->pyramid_height == 1) {
    dd_pool_desc d = level_desc(0, b->dims[0], b->dims[1], b->dims[2], b->dims[3], 1);
    c->tops[0] = dd_shape_4(b->dims[0], b->dims[1], d.out_h, d.out_w);
    return 0;
  }
  int64_t cols = 0;
  for (uint32_t l = 0; l < p->pyramid_height; l++) {
    dd_pool_desc d = level_desc((int)l, b->dims[0], b->dims[1], b->dims[2], b->dims[3], 1);
    cols += b->dims[1] * d.out_h * d.out_w;
  }
  c->tops[0] = dd_shape_make(2, (int64_t[]){b->dims[0], cols});
  return 0;
}

typedef struct {
  dd_pool_desc d[SPP_MAX_LEVELS];
  float *out, *dtmp; /* the levels' outputs (and their diffs), one after the other; a bottom-sized diff */
  int32_t *mask;
  size_t out_cap, dtmp_cap, mask_cap;
  int64_t total; /* elements of all levels' outputs */
} spp_priv;

static int spp_setup(dd_layer *l, char *err, size_t errlen) {
  spp_priv *p = l->priv;
  const dd_shape *b = &l->bottom[0]->shape;
  int levels = (int)l->lp->spp_param->pyramid_height;
  p->total = 0;
  for (int i = 0; i < levels; i++) {
    p->d[i] = level_desc(i, b->dims[0], b->dims[1], b->dims[2], b->dims[3], is_max(l->lp));
    p->total += (int64_t)p->d[i].n * p->d[i].c * p->d[i].out_h * p->d[i].out_w;
  }
  size_t t = (size_t)p->total;
  if (dd__ensure_buffer(l->be, (void **)&p->out, &p->out_cap, 2 * t * sizeof(float)) ||
      dd__ensure_buffer(l->be, (void **)&p->dtmp, &p->dtmp_cap, (size_t)l->bottom[0]->count * sizeof(float)) ||
      dd__ensure_buffer(l->be, (void **)&p->mask, &p->mask_cap, t * sizeof(int32_t)))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  return 0;
}

static void spp_forward(dd_layer *l) {
  spp_priv *p = l->priv;
  int levels = (int)l->lp->spp_param->pyramid_height;
  int64_t n = l->bottom[0]->shape.dims[0], cols = l->top[0]->count / (n ? n : 1), at = 0, col = 0;
  for (int i = 0; i < levels; i++) {
    int64_t per = (int64_t)p->d[i].c * p->d[i].out_h * p->d[i].out_w;
    float *y = levels == 1 ? l->top[0]->data : p->out + at;
    l->be->ops->pool_forward(l->be, &p->d[i], y, p->mask + at, l->bottom[0]->data);
    if (levels > 1) l->be->ops->copy_rows(l->be, n, per, l->top[0]->data + col, cols, y, per, 0);
    at += n * per;
    col += per;
  }
}

static void spp_backward(dd_layer *l) {
  if (!l->propagate_down[0]) return;
  spp_priv *p = l->priv;
  dd_tensor *b = l->bottom[0];
  int levels = (int)l->lp->spp_param->pyramid_height;
  int64_t n = b->shape.dims[0], cols = l->top[0]->count / (n ? n : 1), at = 0, col = 0;
  for (int i = 0; i < levels; i++) {
    int64_t per = (int64_t)p->d[i].c * p->d[i].out_h * p->d[i].out_w;
    float *dy = l->top[0]->diff;
    if (levels > 1) {
      dy = p->out + p->total + at;
      l->be->ops->copy_rows(l->be, n, per, dy, per, l->top[0]->diff + col, cols, 0);
    }
    l->be->ops->pool_backward(l->be, &p->d[i], i == 0 ? b->diff : p->dtmp, dy, p->mask + at);
    if (i > 0) l->be->ops->axpby(l->be, b->count, 1.0f, p->dtmp, 1.0f, b->diff);
    at += n * per;
    col += per;
  }
}

static void spp_destroy(dd_layer *l) {
  spp_priv *p = l->priv;
  if (p->out) l->be->ops->free(l->be, p->out);
  if (p->dtmp) l->be->ops->free(l->be, p->dtmp);
  if (p->mask) l->be->ops->free(l->be, p->mask);
}

const dd_layer_ops dd_layer_spp = {
    .type = "SPP", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = spp_shape, .priv_size = sizeof(spp_priv), .setup = spp_setup, .forward = spp_forward,
    .backward = spp_backward, .destroy = spp_destroy};
