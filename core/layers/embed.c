/* Embed (Caffe's EmbedLayer): each bottom value, an integer in [0, embed_param.input_dim), picks a
 * row of the weight (input_dim, num_output), plus the bias (num_output) when bias_term (true): the
 * top is the bottom's shape with num_output appended. The indices get no gradient (Caffe refuses
 * to propagate to them); the weight's rows accumulate the gradients of the positions that picked
 * them. An index that is not a valid row stops the net with a message naming it (Caffe only
 * checks in debug builds). */
#include <stdio.h>

#include "base/dd_error.h"
#include "net/layer.h"

static int embed_shape(dd_shape_ctx *c) {
  const Caffe__EmbedParameter *p = c->lp->embed_param;
  if (!p || p->num_output == 0) return dd_shape_fail(c, "embed_param.num_output must be > 0");
  if (p->input_dim == 0) return dd_shape_fail(c, "embed_param.input_dim must be > 0");
  c->n_params = p->bias_term ? 2 : 1;
  c->params[0] = dd_shape_make(2, (int64_t[]){p->input_dim, p->num_output});
  c->params[1] = dd_shape_make(1, (int64_t[]){p->num_output});
  const dd_shape *b = &c->bottoms[0];
  if (!dd_shape_known(b)) {
    c->tops[0] = dd_shape_unknown();
    return 0;
  }
  if (b->ndim >= DD_SHAPE_MAX_DIMS) return dd_shape_fail(c, "the bottom has too many axes (%d)", b->ndim);
  dd_shape t = *b;
  t.dims[t.ndim++] = p->num_output;
  if (dd_shape_count(&t) > DD_SHAPE_MAX_COUNT)
    return dd_shape_fail(c, "the top would hold more than %lld elements", (long long)DD_SHAPE_MAX_COUNT);
  c->tops[0] = t;
  return 0;
}

static const Caffe__FillerParameter *embed_filler(const Caffe__LayerParameter *lp, int i, Caffe__FillerParameter *dflt) {
  (void)dflt;
  return i == 0 ? lp->embed_param->weight_filler : lp->embed_param->bias_filler;
}

static int embed_setup(dd_layer *l, char *err, size_t errlen) {
  int r = dd__need_kernel(l, (const void *)l->be->ops->embed_forward, "Embed", err, errlen);
  if (!r) r = dd__need_kernel(l, (const void *)l->be->ops->embed_backward, "Embed", err, errlen);
  return r;
}

static void embed_forward(dd_layer *l) {
  const Caffe__EmbedParameter *p = l->lp->embed_param;
  const dd_tensor *b = l->bottom[0];
  float buf[256];
  for (int64_t k0 = 0; k0 < b->count; k0 += 256) {
    int64_t n = b->count - k0 < 256 ? b->count - k0 : 256;
    l->be->ops->download(l->be, buf, b->data + k0, (size_t)n * sizeof(float));
    for (int64_t k = 0; k < n; k++)
      if (!(buf[k] >= 0 && buf[k] < (float)p->input_dim) || buf[k] != (float)(int64_t)buf[k]) {
        snprintf(l->status_msg, l->status_len,
                 "layer \"%s\": index %g (position %lld of the bottom) is not a row of the embedding, which has %u "
                 "(embed_param.input_dim: 0 to %u)",
                 l->name, buf[k], (long long)(k0 + k), p->input_dim, p->input_dim - 1);
        *l->status = DD_EINVAL;
        return;
      }
  }
  l->be->ops->embed_forward(l->be, b->count, p->num_output, p->input_dim, l->top[0]->data, b->data, l->params[0]->data,
                            l->n_params > 1 ? l->params[1]->data : NULL);
}

static void embed_backward(dd_layer *l) {
  const Caffe__EmbedParameter *p = l->lp->embed_param;
  float *dw = l->param_propagate_down[0] ? l->params[0]->diff : NULL;
  float *db = l->n_params > 1 && l->param_propagate_down[1] ? l->params[1]->diff : NULL;
  if (dw || db)
    l->be->ops->embed_backward(l->be, l->bottom[0]->count, p->num_output, p->input_dim, dw, db, l->top[0]->diff,
                               l->bottom[0]->data);
}

const dd_layer_ops dd_layer_embed = {
    .type = "Embed", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = embed_shape, .filler = embed_filler, .setup = embed_setup, .forward = embed_forward,
    .backward = embed_backward};
