/* InnerProduct: bottom flattened from `axis` into K features -> num_output. Params: weight
 * (num_output, K) or (K, num_output) with transpose, bias (num_output). */
#include "dd_error.h"
#include "layer.h"

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

const dd_layer_ops dd_layer_inner_product = {"InnerProduct", 1, 1, 1, 1, 0, inner_product_shape};
