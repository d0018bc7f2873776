/* Input: tops whose shapes the prototxt states (input_param { shape { dim: ... } }), filled by the
 * caller (the teacher's input, or --input NAME=FILE). One shape for all tops, or one per top. */
#include "base/dd_error.h"
#include "net/layer.h"

static int input_shape(dd_shape_ctx *c) {
  const Caffe__InputParameter *ip = c->lp->input_param;
  size_t ns = ip ? ip->n_shape : 0;
  if (ns != 0 && ns != 1 && ns != (size_t)c->nt)
    return dd_shape_fail(c, "input_param has %zu shapes for %d tops: give one shape, or one per top",
                         ns, c->nt);
  for (int i = 0; i < c->nt; i++) {
    if (ns == 0) {
      c->tops[i] = dd_shape_unknown();
      continue;
    }
    const Caffe__BlobShape *bs = ip->shape[ns == 1 ? 0 : i];
    if (bs->n_dim > DD_SHAPE_MAX_DIMS)
      return dd_shape_fail(c, "input shape has %zu dims; at most %d are supported", bs->n_dim,
                           DD_SHAPE_MAX_DIMS);
    for (size_t d = 0; d < bs->n_dim; d++)
      if (bs->dim[d] < 0 || bs->dim[d] > DD_SHAPE_MAX_COUNT)
        return dd_shape_fail(c, "input shape dim %zu is %lld: dims must be 0 to %lld", d, (long long)bs->dim[d],
                             (long long)DD_SHAPE_MAX_COUNT);
    c->tops[i] = dd_shape_make((int)bs->n_dim, bs->dim);
  }
  return 0;
}

/* The data is whatever the caller put into the tops. */
static void input_forward(dd_layer *l) { (void)l; }

const dd_layer_ops dd_layer_input = {
    .type = "Input", .min_bottoms = 0, .max_bottoms = 0, .min_tops = 1, .max_tops = -1,
    .shape = input_shape, .forward = input_forward};
