/* DummyData (Caffe): tops of stated shapes filled by fillers, with no bottoms. The shapes come
 * from dummy_data_param.shape (once for all tops or once per top) or from the deprecated
 * num/channels/height/width fields (each once or once per top; not together with shape). The
 * fillers: none (constant 0), one for every top, or one per top. Caffe's refill rule: a top whose
 * filler is "constant" is filled once, at setup, and kept; a top with any other filler is filled
 * anew at every forward. The random draws are distilld's (the layer's seed and the net's
 * forward counter), not Caffe's streams. */
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "net/filler.h"
#include "net/layer.h"

static int count_ok(size_t n, int nt) { return n == 1 || n == (size_t)nt; }

static int dummy_legacy_shape(dd_shape_ctx *c, const Caffe__DummyDataParameter *p) {
  const char *names[4] = {"num", "channels", "height", "width"};
  size_t ns[4] = {p->n_num, p->n_channels, p->n_height, p->n_width};
  const uint32_t *vals[4] = {p->num, p->channels, p->height, p->width};
  if (p->n_shape) return dd_shape_fail(c, "dummy_data_param: give shape or num/channels/height/width, not both");
  for (int k = 0; k < 4; k++)
    if (!count_ok(ns[k], c->nt))
      return dd_shape_fail(c, "dummy_data_param.%s is given %zu times for %d tops: give it once, or once per top",
                           names[k], ns[k], c->nt);
  for (int i = 0; i < c->nt; i++) {
    int64_t d[4];
    for (int k = 0; k < 4; k++) d[k] = vals[k][ns[k] == 1 ? 0 : i];
    c->tops[i] = dd_shape_make(4, d);
    int64_t n = dd_shape_count(&c->tops[i]);
    if (n > DD_SHAPE_MAX_COUNT)
      return dd_shape_fail(c, "dummy_data_param: top %d would have %lld elements (at most %lld)", i, (long long)n,
                           (long long)DD_SHAPE_MAX_COUNT);
  }
  return 0;
}

static int dummy_shape(dd_shape_ctx *c) {
  const Caffe__DummyDataParameter *p = c->lp->dummy_data_param;
  if (!p) return dd_shape_fail(c, "dummy_data_param { shape { dim: ... } } is required");
  if (p->n_data_filler > 1 && p->n_data_filler != (size_t)c->nt)
    return dd_shape_fail(c, "dummy_data_param.data_filler is given %zu times for %d tops: give none, one, or one per top",
                         p->n_data_filler, c->nt);
  if (p->n_num || p->n_channels || p->n_height || p->n_width) return dummy_legacy_shape(c, p);
  if (!count_ok(p->n_shape, c->nt))
    return dd_shape_fail(c, "dummy_data_param.shape is given %zu times for %d tops: give it once, or once per top",
                         p->n_shape, c->nt);
  for (int i = 0; i < c->nt; i++) {
    const Caffe__BlobShape *bs = p->shape[p->n_shape == 1 ? 0 : i];
    if (bs->n_dim > DD_SHAPE_MAX_DIMS)
      return dd_shape_fail(c, "dummy_data_param.shape has %zu dims; at most %d are supported", bs->n_dim,
                           DD_SHAPE_MAX_DIMS);
    for (size_t d = 0; d < bs->n_dim; d++)
      if (bs->dim[d] < 0 || bs->dim[d] > DD_SHAPE_MAX_COUNT)
        return dd_shape_fail(c, "dummy_data_param.shape dim %zu is %lld: dims must be 0 to %lld", d,
                             (long long)bs->dim[d], (long long)DD_SHAPE_MAX_COUNT);
    c->tops[i] = dd_shape_make((int)bs->n_dim, bs->dim);
    if (dd_shape_count(&c->tops[i]) > DD_SHAPE_MAX_COUNT)
      return dd_shape_fail(c, "dummy_data_param.shape of top %d has more than %lld elements", i,
                           (long long)DD_SHAPE_MAX_COUNT);
  }
  return 0;
}

typedef struct {
  float *host; /* the largest top's count */
  size_t cap;  /* floats at host */
  Caffe__FillerParameter zero; /* the default filler: constant 0 */
} dummy_priv;

static const Caffe__FillerParameter *top_filler(dd_layer *l, int i) {
  const Caffe__DummyDataParameter *p = l->lp->dummy_data_param;
  dummy_priv *dp = l->priv;
  if (p->n_data_filler == 0) return &dp->zero;
  return p->data_filler[p->n_data_filler == 1 ? 0 : i];
}

static int is_constant(const Caffe__FillerParameter *fp) { return !fp->type || !strcmp(fp->type, "constant"); }

/* Fills top i from its filler with draws from (seed, forward counter, i). */
static int fill_top(dd_layer *l, int i, char *err, size_t errlen) {
  dummy_priv *dp = l->priv;
  dd_rng rng;
  dd_rng_seed(&rng, dd_hash64(dd_hash64(l->seed, (uint64_t)*l->iter), (uint64_t)i));
  dd_tensor *t = l->top[i];
  int r = dd_fill_host(dp->host, &t->shape, t->name, top_filler(l, i), &rng, err, errlen);
  if (r == 0) l->be->ops->upload(l->be, t->data, dp->host, (size_t)t->count * sizeof(float));
  return r;
}

static int dummy_setup(dd_layer *l, char *err, size_t errlen) {
  dummy_priv *dp = l->priv;
  caffe__filler_parameter__init(&dp->zero);
  size_t need = 1;
  for (int i = 0; i < l->nt; i++)
    if ((size_t)l->top[i]->count > need) need = (size_t)l->top[i]->count;
  if (need > dp->cap) {
    float *h = realloc(dp->host, need * sizeof *h);
    if (!h) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
    dp->host = h;
    dp->cap = need;
  }
  /* Every top once now (this also checks each filler's type); the constant ones stay so. */
  for (int i = 0; i < l->nt; i++) {
    char why[400];
    int r = fill_top(l, i, why, sizeof why);
    if (r) return dd_errorf(r, err, errlen, "dummy_data_param.data_filler: %s", why);
  }
  return 0;
}

static void dummy_forward(dd_layer *l) {
  for (int i = 0; i < l->nt; i++)
    if (!is_constant(top_filler(l, i)) && fill_top(l, i, l->status_msg, l->status_len)) {
      *l->status = DD_EINVAL;
      return;
    }
}

static void dummy_destroy(dd_layer *l) {
  dummy_priv *dp = l->priv;
  free(dp->host);
}

const dd_layer_ops dd_layer_dummy_data = {
    .type = "DummyData", .min_bottoms = 0, .max_bottoms = 0, .min_tops = 1, .max_tops = -1,
    .shape = dummy_shape, .priv_size = sizeof(dummy_priv), .setup = dummy_setup, .forward = dummy_forward,
    .destroy = dummy_destroy};
