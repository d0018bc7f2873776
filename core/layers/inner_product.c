/* InnerProduct: bottom flattened from `axis` into K features -> num_output. Params: weight
 * (num_output, K) or (K, num_output) with transpose, bias (num_output). */
#include "base/dd_error.h"
#include "net/layer.h"

static int inner_product_shape(dd_shape_ctx *c) {
  const Caffe__InnerProductParameter *p = c->lp->inner_product_param;
  if (!p || !p->has_num_output || p->num_output == 0)
    return dd_shape_fail(c, "inner_product_param { num_output: N } is required and must be > 0");
  c->n_params = p->bias_term ? 2 : 1;
  c->params[1] = dd_shape_make(1, (int64_t[]){p->num_output});
  const dd_shape *b = &c->bottoms[0];
  if (!dd_shape_known(b)) {
    c->params[0] = c->tops[0] = dd_shape_unknown();
    return 0;
  }
  int a = dd_shape_axis(b, p->axis);
  if (a < 0) return dd_shape_fail(c, "axis %d is out of range for a bottom with %d axes", p->axis, b->ndim);
  int64_t k = dd_shape_count_range(b, a, b->ndim);
  int64_t w[2] = {p->num_output, k};
  if (p->transpose) {
    w[0] = k;
    w[1] = p->num_output;
  }
  c->params[0] = dd_shape_make(2, w);
  dd_shape t = dd_shape_make(a + 1, b->dims);
  t.dims[a] = p->num_output;
  c->tops[0] = t;
  return 0;
}

static const Caffe__FillerParameter *ip_filler(const Caffe__LayerParameter *lp, int i,
                                               Caffe__FillerParameter *dflt) {
  (void)dflt;
  return i == 0 ? lp->inner_product_param->weight_filler : lp->inner_product_param->bias_filler;
}

typedef struct {
  int m, n, k; /* top (M, N) = bottom (M, K) x weight */
} ip_priv;

static int ip_setup(dd_layer *l, char *err, size_t errlen) {
  (void)err;
  (void)errlen;
  ip_priv *ip = l->priv;
  const Caffe__InnerProductParameter *p = l->lp->inner_product_param;
  int a = dd_shape_axis(&l->bottom[0]->shape, p->axis);
  ip->m = (int)dd__count(l->bottom[0], 0, a);
  ip->k = (int)dd__count(l->bottom[0], a, l->bottom[0]->shape.ndim);
  ip->n = (int)p->num_output;
  return 0;
}

static void ip_forward(dd_layer *l) {
  ip_priv *ip = l->priv;
  int tr = l->lp->inner_product_param->transpose;
  /* weight is (N, K), or (K, N) with transpose */
  l->be->ops->gemm(l->be, 0, !tr, ip->m, ip->n, ip->k, 1.0f, l->bottom[0]->data, l->params[0]->data, 0.0f,
                   l->top[0]->data);
  if (l->n_params > 1)
    l->be->ops->channel_affine(l->be, ip->m, ip->n, 1, l->top[0]->data, l->top[0]->data, NULL, l->params[1]->data);
}

static void ip_backward(dd_layer *l) {
  ip_priv *ip = l->priv;
  int tr = l->lp->inner_product_param->transpose;
  const float *dy = l->top[0]->diff, *x = l->bottom[0]->data;
  if (l->param_propagate_down[0]) {
    if (tr) /* dW (K, N) += x^T dy */
      l->be->ops->gemm(l->be, 1, 0, ip->k, ip->n, ip->m, 1.0f, x, dy, 1.0f, l->params[0]->diff);
    else /* dW (N, K) += dy^T x */
      l->be->ops->gemm(l->be, 1, 0, ip->n, ip->k, ip->m, 1.0f, dy, x, 1.0f, l->params[0]->diff);
  }
  if (l->n_params > 1 && l->param_propagate_down[1])
    l->be->ops->channel_affine_backward(l->be, ip->m, ip->n, 1, NULL, NULL, l->params[1]->diff, dy, NULL, NULL);
  if (l->propagate_down[0]) /* dx (M, K) = dy W, or dy W^T with transpose */
    l->be->ops->gemm(l->be, 0, tr, ip->m, ip->k, ip->n, 1.0f, dy, l->params[0]->data, 0.0f, l->bottom[0]->diff);
}

const dd_layer_ops dd_layer_inner_product = {
    .type = "InnerProduct", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = inner_product_shape, .filler = ip_filler, .priv_size = sizeof(ip_priv),
    .setup = ip_setup, .forward = ip_forward, .backward = ip_backward};
