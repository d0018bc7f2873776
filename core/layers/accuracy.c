/* Accuracy: (predictions, labels) -> top-k accuracy (scalar), optionally per-class accuracy. */
#include "base/dd_error.h"
#include "net/layer.h"

static int accuracy_shape(dd_shape_ctx *c) {
  const Caffe__AccuracyParameter *p = c->lp->accuracy_param;
  int a, r;
  if ((r = dd__check_labels(c, p ? p->axis : 1, &a))) return r;
  uint32_t k = p ? p->top_k : 1;
  if (k == 0) return dd_shape_fail(c, "top_k must be > 0");
  if (a >= 0 && (int64_t)k > c->bottoms[0].dims[a])
    return dd_shape_fail(c, "top_k %u exceeds the %lld classes", k, (long long)c->bottoms[0].dims[a]);
  c->tops[0] = dd_shape_make(0, NULL);
  if (c->nt > 1) c->tops[1] = a >= 0 ? dd_shape_make(1, &c->bottoms[0].dims[a]) : dd_shape_unknown();
  return 0;
}

typedef struct {
  float *pc; /* per-class correct, then per-class total (2 x classes, backend memory) */
  size_t cap;
  int64_t outer, ch, inner;
} acc_priv;

static int accuracy_setup(dd_layer *l, char *err, size_t errlen) {
  acc_priv *ap = l->priv;
  const Caffe__AccuracyParameter *p = l->lp->accuracy_param;
  const dd_shape *s = &l->bottom[0]->shape;
  int a = dd_shape_axis(s, p ? p->axis : 1);
  ap->outer = dd_shape_count_range(s, 0, a);
  ap->ch = s->dims[a];
  ap->inner = dd_shape_count_range(s, a + 1, s->ndim);
  if (l->nt > 1 && dd__ensure_buffer(l->be, (void **)&ap->pc, &ap->cap, (size_t)(2 * ap->ch) * sizeof(float)))
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  return 0;
}

static void accuracy_forward(dd_layer *l) {
  acc_priv *ap = l->priv;
  const Caffe__AccuracyParameter *p = l->lp->accuracy_param;
  int has_ignore = p && p->has_ignore_label;
  int64_t correct, valid;
  if (dd__check_label_range(l, l->bottom[1], ap->ch, has_ignore, has_ignore ? p->ignore_label : 0)) return;
  if (ap->pc) l->be->ops->fill(l->be, ap->pc, 0.0f, 2 * ap->ch);
  l->be->ops->accuracy(l->be, ap->outer, ap->ch, ap->inner, l->bottom[0]->data, l->bottom[1]->data,
                       p ? (int)p->top_k : 1, has_ignore, has_ignore ? p->ignore_label : 0, &correct,
                       &valid, ap->pc, ap->pc ? ap->pc + ap->ch : NULL);
  dd__set_scalar(l->top[0], valid ? (float)correct / (float)valid : 0.0f);
  if (ap->pc) { /* per-class accuracy: a TEST-time statistic, on the host, 1024 classes at a time */
    float host[2 * 1024];
    for (int64_t k0 = 0; k0 < ap->ch; k0 += 1024) {
      int64_t m = ap->ch - k0 < 1024 ? ap->ch - k0 : 1024;
      l->be->ops->download(l->be, host, ap->pc + k0, (size_t)m * sizeof(float));
      l->be->ops->download(l->be, host + 1024, ap->pc + ap->ch + k0, (size_t)m * sizeof(float));
      for (int64_t k = 0; k < m; k++) host[k] = host[1024 + k] > 0 ? host[k] / host[1024 + k] : 0.0f;
      l->be->ops->upload(l->be, l->top[1]->data + k0, host, (size_t)m * sizeof(float));
    }
  }
}

static void accuracy_destroy(dd_layer *l) {
  acc_priv *ap = l->priv;
  if (ap->pc) l->be->ops->free(l->be, ap->pc);
}

const dd_layer_ops dd_layer_accuracy = {
    .type = "Accuracy", .min_bottoms = 2, .max_bottoms = 2, .min_tops = 1, .max_tops = 2,
    .shape = accuracy_shape, .priv_size = sizeof(acc_priv), .setup = accuracy_setup,
    .forward = accuracy_forward, .destroy = accuracy_destroy};
