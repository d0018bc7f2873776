/* Layer kinds: one file per layer under core/layers/, each exporting a dd_layer_ops table, and
 * one registration table (core/layers/registry.c) mapping the prototxt's `type` string to it.
 * Adding a layer = one new file + one line in DD_LAYER_TABLE.
 *
 * For now a layer kind knows its arity and its shape logic (top and parameter shapes from bottom
 * shapes, with Caffe's rules and checks); the engine adds forward and backward to the same table.
 * The shape logic is the one place each layer's shapes are computed: `distilld check` uses it on
 * its own, and the engine's reshape calls it. */
#ifndef DD_LAYER_H
#define DD_LAYER_H

#include <stddef.h>

#include "caffe.pb-c.h"
#include "shape.h"

#define DD_MAX_LAYER_PARAMS 4

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

typedef struct dd_layer_ops {
  const char *type;
  int min_bottoms, max_bottoms; /* max -1: any number */
  int min_tops, max_tops;
  /* A loss layer: top 0 has loss_weight 1 unless the prototxt says otherwise. */
  int is_loss;
  /* Fills tops, params and n_params; returns 0, or DD_EINVAL / DD_ESHAPE with a message (without
   * the layer's name: the caller adds it). */
  int (*shape)(dd_shape_ctx *c);
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

#endif
