/* InfogainLoss (Caffe): (x, label[, H]) -> -sum over positions of sum_l H[label, l] *
 * log(max(softmax(x)[l], 1e-20)), divided by the normalizer. The softmax runs inside, over
 * infogain_loss_param.axis (default 1), as Caffe's layer does: x is the raw score, not a
 * probability. H (classes x classes) is the third bottom, or, with two bottoms, the
 * .binaryproto named by infogain_loss_param.source (read once when the net is built). Positions
 * whose label is loss_param.ignore_label count for nothing; normalization is
 * loss_param.normalization (default VALID; Caffe refuses the deprecated `normalize` here). An
 * optional second top gets the softmax. Gradient into x: w (prob sum_k H[y, k] - H[y, :]) /
 * normalizer; the labels and H get none. */
#include <stdlib.h>

#include "base/dd_error.h"
#include "format/caffe_io.h"
#include "layers/loss_util.h"

static int infogain_axis_param(const Caffe__LayerParameter *lp) {
  return lp->infogain_loss_param ? lp->infogain_loss_param->axis : 1;
}

static const char *infogain_source(const Caffe__LayerParameter *lp) {
  const Caffe__InfogainLossParameter *p = lp->infogain_loss_param;
  return p && p->source && p->source[0] ? p->source : NULL;
}

static int infogain_shape(dd_shape_ctx *c) {
  const Caffe__LossParameter *lp = c->lp->loss_param;
  int r, a;
  if ((r = dd__loss_check_mode(c))) return r;
  if (lp && lp->has_normalize)
    return dd_shape_fail(c, "loss_param.normalize is deprecated and InfogainLoss refuses it (as Caffe does): "
                            "use loss_param.normalization");
  if (c->nb < 3 && !infogain_source(c->lp))
    return dd_shape_fail(c, "infogain_loss_param.source (a .binaryproto holding the infogain matrix H) is required "
                            "when H is not given as a third bottom");
  if ((r = dd__loss_reshape(c, "prediction", "label"))) return r;
  const dd_shape *x = &c->bottoms[0];
  if (c->nt > 1) c->tops[1] = *x;
  if (!dd_shape_known(x)) return 0;
  int axis = infogain_axis_param(c->lp);
  if (dd_shape_axis(x, axis) < 0)
    return dd_shape_fail(c, "infogain_loss_param.axis %d is out of range for a prediction with %d axes", axis, x->ndim);
  if ((r = dd__check_labels(c, axis, &a))) return r;
  if (c->nb > 2 && dd_shape_known(&c->bottoms[2])) {
    int64_t k = x->dims[a];
    if (dd_shape_count(&c->bottoms[2]) != dd_count_mul(k, k)) {
      char s[64];
      return dd_shape_fail(c, "the infogain matrix H (bottom 2, %s) must be %lld x %lld: one row and one column per "
                              "class of the prediction's axis %d",
                           dd_shape_str(&c->bottoms[2], s, sizeof s), (long long)k, (long long)k, a);
    }
  }
  return 0;
}

typedef struct {
  float *prob; /* softmax of x, x's shape */
  size_t prob_cap;
  float *h; /* H from the source file (two bottoms only) */
  size_t h_cap;
  int64_t h_count; /* values in the file's H; -1 until read */
  float normalizer;
} infogain_priv;

static void dims(const dd_layer *l, int64_t *outer, int64_t *ch, int64_t *inner) {
  const dd_tensor *x = l->bottom[0];
  int a = dd_shape_axis(&x->shape, infogain_axis_param(l->lp));
  *outer = dd__count(x, 0, a);
  *ch = x->shape.dims[a];
  *inner = dd__count(x, a + 1, x->shape.ndim);
}

/* Reads H from infogain_loss_param.source into the backend buffer. */
static int load_h(dd_layer *l, infogain_priv *p, char *err, size_t errlen) {
  const char *src = infogain_source(l->lp);
  Caffe__BlobProto *b = NULL;
  char msg[768];
  int r = dd_binaryproto_read(&b, src, msg, sizeof msg);
  if (r) return dd_errorf(r, err, errlen, "infogain_loss_param.source: %s", msg);
  size_t n = b->n_double_data > 0 ? b->n_double_data : b->n_data;
  float *host = malloc((n ? n : 1) * sizeof *host);
  if (!host || dd__ensure_buffer(l->be, (void **)&p->h, &p->h_cap, (n ? n : 1) * sizeof(float))) {
    free(host);
    caffe__blob_proto__free_unpacked(b, NULL);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  for (size_t i = 0; i < n; i++) host[i] = b->n_double_data > 0 ? (float)b->double_data[i] : b->data[i];
  l->be->ops->upload(l->be, p->h, host, n * sizeof(float));
  p->h_count = (int64_t)n;
  free(host);
  caffe__blob_proto__free_unpacked(b, NULL);
  return 0;
}

static int infogain_setup(dd_layer *l, char *err, size_t errlen) {
  infogain_priv *p = l->priv;
  if (dd__need_kernel(l, (const void *)l->be->ops->infogain_forward, "InfogainLoss", err, errlen) ||
      dd__need_kernel(l, (const void *)l->be->ops->infogain_backward, "InfogainLoss backward", err, errlen))
    return DD_EUNSUPPORTED;
  if (dd__ensure_buffer(l->be, (void **)&p->prob, &p->prob_cap, (size_t)l->bottom[0]->count * sizeof(float)))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  if (l->nb > 2) return 0;
  if (!p->h) {
    p->h_count = -1;
    int r = load_h(l, p, err, errlen);
    if (r) return r;
  }
  int64_t o, k, i;
  dims(l, &o, &k, &i);
  if (p->h_count != k * k)
    return dd_errorf(DD_ESHAPE, err, errlen,
                     "infogain_loss_param.source \"%s\": the infogain matrix H holds %lld values, but the prediction "
                     "has %lld classes: H must be %lld x %lld",
                     infogain_source(l->lp), (long long)p->h_count, (long long)k, (long long)k, (long long)k);
  return 0;
}

static const float *matrix(const dd_layer *l) {
  const infogain_priv *p = l->priv;
  return l->nb > 2 ? l->bottom[2]->data : p->h;
}

static void infogain_forward(dd_layer *l) {
  infogain_priv *p = l->priv;
  int64_t o, k, i, valid;
  dims(l, &o, &k, &i);
  int ignore, has_ignore = dd__loss_ignore(l->lp, &ignore);
  if (dd__check_label_range(l, l->bottom[1], k, has_ignore, ignore)) return;
  l->be->ops->softmax_forward(l->be, o, k, i, p->prob, l->bottom[0]->data);
  double loss = l->be->ops->infogain_forward(l->be, o, k, i, p->prob, l->bottom[1]->data, matrix(l), has_ignore,
                                             ignore, &valid);
  const Caffe__LossParameter *lp = l->lp->loss_param;
  int mode = lp ? (int)lp->normalization : CAFFE__LOSS_PARAMETER__NORMALIZATION_MODE__VALID;
  p->normalizer = dd__loss_normalizer(mode, o, i, valid);
  dd__set_scalar(l->top[0], (float)(loss / p->normalizer));
  if (l->nt > 1) l->be->ops->copy(l->be, l->top[1]->data, p->prob, (size_t)l->bottom[0]->count * sizeof(float));
}

static void infogain_backward(dd_layer *l) {
  infogain_priv *p = l->priv;
  if (!l->propagate_down[0]) return; /* neither the labels nor H get a gradient */
  int64_t o, k, i;
  dims(l, &o, &k, &i);
  int ignore, has_ignore = dd__loss_ignore(l->lp, &ignore);
  l->be->ops->infogain_backward(l->be, o, k, i, l->bottom[0]->diff, p->prob, l->bottom[1]->data, matrix(l),
                                has_ignore, ignore, dd__loss_top_diff(l) / p->normalizer);
}

static void infogain_destroy(dd_layer *l) {
  infogain_priv *p = l->priv;
  if (p->prob) l->be->ops->free(l->be, p->prob);
  if (p->h) l->be->ops->free(l->be, p->h);
}

const dd_layer_ops dd_layer_infogain_loss = {
    .type = "InfogainLoss", .min_bottoms = 2, .max_bottoms = 3, .min_tops = 1, .max_tops = 2, .is_loss = 1,
    .shape = infogain_shape, .priv_size = sizeof(infogain_priv), .setup = infogain_setup,
    .forward = infogain_forward, .backward = infogain_backward, .destroy = infogain_destroy};
