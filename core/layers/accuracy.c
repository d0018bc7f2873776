/* Accuracy: (predictions, labels) -> top-k accuracy (scalar), optionally per-class accuracy. */
#include "dd_error.h"
#include "layer.h"

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

const dd_layer_ops dd_layer_accuracy = {"Accuracy", 2, 2, 1, 2, 0, accuracy_shape};
