/* Layer kinds: one file per layer under core/layers/, each exporting a dd_layer_ops table, and
 * one registration table (core/layers/registry.c) mapping the prototxt's `type` string to it.
 * Adding a layer = one new file + one line in DD_LAYER_TABLE.
 *
 * A layer kind knows its arity, its shape logic (top and parameter shapes from bottom shapes,
 * with Caffe's rules and checks), its parameter fillers, and its forward and backward passes,
 * which do all numeric work through the backend table (backend.h). The shape logic is the one
 * place each layer's shapes are computed: `distilld check` uses it on its own, and the net's
 * reshape calls it. */
#ifndef DD_LAYER_H
#define DD_LAYER_H

#include <stddef.h>

#include "base/backend.h"
#include "caffe.pb-c.h"
#include "base/rng.h"
#include "net/shape.h"
#include "net/tensor.h"

#define DD_MAX_LAYER_PARAMS 6 /* RNN with x_static has 6 */

/* Inputs and outputs of a shape computation. */
typedef struct {
  const Caffe__LayerParameter *lp;
  Caffe__Phase phase;
  int nb, nt;
  const dd_shape *bottoms; /* nb shapes, some possibly unknown */
  dd_shape *tops;          /* nt shapes to fill (unknown where they cannot be known) */
  dd_shape params[DD_MAX_LAYER_PARAMS]; /* parameter blob shapes to fill */
  int n_params;                         /* number of parameter blobs (known even when shapes are not) */
  char *err;
  size_t errlen;
} dd_shape_ctx;

typedef struct dd_layer dd_layer;

/* A layer instance in a net. Tensors are owned by the net; `priv` by the layer. */
struct dd_layer {
  const struct dd_layer_ops *ops;
  const Caffe__LayerParameter *lp;
  const char *name;
  dd_backend *be;
  Caffe__Phase phase;
  int nb, nt;
  dd_tensor **bottom, **top;
  /* Backward computes bottom[i]'s diff only where propagate_down[i]. */
  unsigned char *propagate_down;
  int n_params;
  dd_tensor *params[DD_MAX_LAYER_PARAMS];
  /* Backward accumulates param[i]'s diff only where param_propagate_down[i] (lr_mult != 0). */
  unsigned char param_propagate_down[DD_MAX_LAYER_PARAMS];
  float *loss_weight; /* nt */
  void *priv;         /* ops->priv_size bytes, zeroed, freed by the net */
  uint64_t seed;      /* per-layer seed (dropout masks) */
  const int64_t *iter; /* the owning net's forward counter */
  /* The net's run status: a layer whose forward fails (data layers: the source broke) sets
   * *status to a DD_E* code and writes the reason to status_msg; the net stops there. */
  int *status;
  char *status_msg;
  size_t status_len;
  /* The precision the net runs this layer in (dd_precision: 0 FP32, 1 bf16 where the backend has
   * a bf16 kernel for it); set before setup (dd_net_set_precision). */
  int precision;
  /* Data layers add the time they blocked waiting for data, and report their error count. */
  double *data_wait_ms;
  int64_t *data_errors;
};

typedef struct dd_layer_ops {
  const char *type;
  int min_bottoms, max_bottoms; /* max -1: any number */
  int min_tops, max_tops;
  /* A loss layer: top 0 has loss_weight 1 unless the prototxt says otherwise. */
  int is_loss;
  /* Fills tops, params and n_params; returns 0, or DD_EINVAL / DD_ESHAPE with a message (without
   * the layer's name: the caller adds it). */
  int (*shape)(dd_shape_ctx *c);
  /* The filler for parameter `index` (NULL: the layer has no such parameter); `dflt` is scratch
   * a layer may fill and return for a default that is not in the prototxt. */
  const Caffe__FillerParameter *(*filler)(const Caffe__LayerParameter *lp, int index,
                                          Caffe__FillerParameter *dflt);
  size_t priv_size;
  /* Called after the tops and params have their shapes, and again after every reshape:
   * (re)allocates backend buffers (workspaces, masks). Returns 0 or DD_ENOMEM / DD_EINVAL with a
   * message. May be NULL. */
  int (*setup)(dd_layer *l, char *err, size_t errlen);
  void (*forward)(dd_layer *l);
  /* NULL: the layer has no backward pass (data layers, Accuracy). */
  void (*backward)(dd_layer *l);
  /* Frees what setup allocated (not priv itself). May be NULL. */
  void (*destroy)(dd_layer *l);
} dd_layer_ops;

/* The ops for a prototxt `type`, or NULL when distilld does not implement it. */
const dd_layer_ops *dd_layer_ops_find(const char *type);

/* Writes the supported type names, comma-separated, into buf. */
void dd_layer_types_list(char *buf, size_t len);

/* Shared helpers for shape functions. dd_shape_fail formats into c->err and returns DD_ESHAPE. */
int dd_shape_fail(dd_shape_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True when all bottoms' shapes are known. */
int dd_shape_bottoms_known(const dd_shape_ctx *c);
/* Scale/Bias parameter shape: bottom[0] axes [axis, axis + num_axes) (num_axes -1: to the end). */
int dd__axes_param_shape(dd_shape_ctx *c, int axis, int num_axes, dd_shape *out);
/* Loss/Accuracy: the label count must be outer * inner of the prediction over the axis. */
int dd__check_labels(dd_shape_ctx *c, int axis_param, int *axis_out);
/* BatchNorm: whether it normalises with its stored statistics (use_global_stats, default TEST). */
int dd_bn_uses_global(const dd_layer *l);
/* Softmax-like layers: (outer, channels, inner) of bottom 0 around softmax_param.axis. */
void dd__softmax_dims(const dd_layer *l, int64_t *outer, int64_t *ch, int64_t *inner);
/* Loss/Accuracy forward: every label must be an integer class in [0, classes) (or the ignore
 * label); otherwise sets the net's status with a message naming the layer and the label and
 * returns DD_EINVAL. */
int dd__check_label_range(dd_layer *l, const dd_tensor *labels, int64_t classes, int has_ignore, int ignore);
/* Writes a scalar from the host into a 1-element backend tensor's data. */
void dd__set_scalar(dd_tensor *t, float v);
/* Backend buffer helper for setup: (re)allocates *p to hold `bytes` (tracking the size in
 * *cap). Returns 0 or DD_ENOMEM. */
int dd__ensure_buffer(dd_backend *be, void **p, size_t *cap, size_t bytes);
/* For setup: 0 when the backend has the kernel `fn` (any of its table's pointers), else
 * DD_EUNSUPPORTED with "the <backend> backend has no <what> kernel yet" in err: a layer never
 * runs on another backend than its net's. */
int dd__need_kernel(const dd_layer *l, const void *fn, const char *what, char *err, size_t errlen);
/* Product of shape dims [from, to). */
static inline int64_t dd__count(const dd_tensor *t, int from, int to) {
  return dd_shape_count_range(&t->shape, from, to);
}

#endif
