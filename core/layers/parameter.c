/* Parameter (Caffe): one learnable blob of parameter_param.shape, exposed as the layer's only top
 * (no bottoms). Caffe shares the blob's data and diff with the top; here forward copies the blob
 * into the top and backward adds the top's diff into the blob's, which gives the same values (the
 * solver's diffs are cleared before each iteration). No filler: the blob starts at zeros, as in
 * Caffe, until weights are copied in. */
#include "base/dd_error.h"
#include "net/layer.h"

static int parameter_shape(dd_shape_ctx *c) {
  const Caffe__ParameterParameter *p = c->lp->parameter_param;
  const Caffe__BlobShape *bs = p ? p->shape : NULL;
  size_t nd = bs ? bs->n_dim : 0;
  if (nd > DD_SHAPE_MAX_DIMS)
    return dd_shape_fail(c, "parameter_param.shape has %zu dims; at most %d are supported", nd, DD_SHAPE_MAX_DIMS);
  for (size_t d = 0; d < nd; d++)
    if (bs->dim[d] < 0 || bs->dim[d] > DD_SHAPE_MAX_COUNT)
      return dd_shape_fail(c, "parameter_param.shape dim %zu is %lld: dims must be 0 to %lld", d,
                           (long long)bs->dim[d], (long long)DD_SHAPE_MAX_COUNT);
  dd_shape s = dd_shape_make((int)nd, nd ? bs->dim : NULL);
  if (dd_shape_count(&s) > DD_SHAPE_MAX_COUNT)
    return dd_shape_fail(c, "parameter_param.shape has more than %lld elements", (long long)DD_SHAPE_MAX_COUNT);
  c->tops[0] = s;
  c->params[0] = s;
  c->n_params = 1;
  return 0;
}

static void parameter_forward(dd_layer *l) {
  l->be->ops->copy(l->be, l->top[0]->data, l->params[0]->data, (size_t)l->top[0]->count * sizeof(float));
}

static void parameter_backward(dd_layer *l) {
  if (!l->param_propagate_down[0]) return;
  l->be->ops->axpby(l->be, l->top[0]->count, 1.0f, l->top[0]->diff, 1.0f, l->params[0]->diff);
}

const dd_layer_ops dd_layer_parameter = {
    .type = "Parameter", .min_bottoms = 0, .max_bottoms = 0, .min_tops = 1, .max_tops = 1,
    .shape = parameter_shape, .forward = parameter_forward, .backward = parameter_backward};
