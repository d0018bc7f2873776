/* A net ready to run: Caffe's Net. Built from a NetParameter for one phase the way Caffe builds
 * it (FilterNet, then InsertSplits with Caffe's split names, then the layers in order), on a
 * backend. All tensors and layer buffers are allocated here, once; forward and backward allocate
 * nothing. */
#ifndef DD_NET_H
#define DD_NET_H

#include <stddef.h>
#include <stdint.h>

#include "base/backend.h"
#include "caffe.pb-c.h"
#include "base/diag.h"
#include "net/layer.h"
#include "net/net_graph.h"
#include "net/plan.h"
#include "net/tensor.h"

/* One learnable parameter blob, in layer order (Caffe's learnable_params). */
typedef struct {
  dd_tensor *t;
  float lr_mult, decay_mult;
  int layer; /* index into layers */
  int index; /* parameter index in its layer */
} dd_net_param;

typedef struct dd_net {
  Caffe__NetParameter *param; /* the filtered net with splits inserted (owned) */
  dd_net_graph *graph;
  dd_backend *be;
  Caffe__Phase phase;
  size_t n_layers;
  dd_layer *layers;
  size_t n_blobs;
  dd_tensor **blobs; /* by graph blob id */
  size_t n_params;
  dd_net_param *params;
  int64_t iter; /* forwards run so far (seeds per-iteration randomness) */
  uint64_t seed;
  int status;             /* 0, or why the last forward failed (see status_msg) */
  char status_msg[1024];
  double data_wait_ms;    /* time data layers blocked, accumulated (the caller resets it) */
  int64_t data_errors;    /* samples the data layers skipped so far */
  /* Called by dd_net_backward after layer i's turn (whether it ran backward or not), last layer
   * first: the diffs of parameters owned by layers >= i are then final. Data-parallel training
   * starts all-reducing them here, while backward goes on (core/solver.c). May be NULL. */
  void (*after_layer_backward)(void *ctx, int layer);
  void *after_layer_backward_ctx;
  dd_plan plan; /* the steps forward and backward run (net/plan.h), built with the net */
} dd_net;

/* A job's memory limit: nets and solvers charge the bytes of the tensors they are about to
 * allocate (data and diff of every blob and parameter, solver history) before allocating them,
 * and refuse with DD_ENOMEM naming the limit when the charge would pass max_bytes (<= 0: no
 * limit). One budget may be shared by every net of a job (teacher, student, TEST net); charges
 * are not given back when a net is destroyed (a job's nets live as long as the job). */
typedef struct {
  int64_t max_bytes;
  int64_t used_bytes;
} dd_mem_budget;

/* Adds `bytes` to budget->used_bytes, or returns DD_ENOMEM ("WHAT need N bytes, more than the
 * job's memory limit allows") when that would pass max_bytes. A NULL budget allows everything. */
int dd_mem_budget_charge(dd_mem_budget *budget, int64_t bytes, const char *what, char *err, size_t errlen);

/* Builds `src` for `phase` on `be`; parameters are filled from `seed` (Caffe's fillers).
 * Errors (what `distilld check` calls errors, shapes that cannot be known, out of memory) return
 * DD_EINVAL / DD_ESHAPE / DD_EUNSUPPORTED / DD_ENOMEM with the first problems in `err`, naming
 * the layer. Warnings go to `diags` when it is not NULL. */
int dd_net_create(dd_net **out, const Caffe__NetParameter *src, Caffe__Phase phase,
                  dd_backend *be, uint64_t seed, dd_diags *diags, char *err, size_t errlen);
/* dd_net_create with a memory budget (may be NULL). Before any tensor is allocated, every blob
 * and parameter shape is checked (at most DD_SHAPE_MAX_COUNT elements, Caffe's INT_MAX): a shape
 * past it is DD_ESHAPE naming the layer, the blob and the size; then their bytes are charged to
 * `budget` (DD_ENOMEM past its limit). */
int dd_net_create_budget(dd_net **out, const Caffe__NetParameter *src, Caffe__Phase phase, dd_backend *be,
                         uint64_t seed, dd_mem_budget *budget, dd_diags *diags, char *err, size_t errlen);
void dd_net_destroy(dd_net *n);

/* Runs every layer's forward; *loss (may be NULL) gets the weighted sum of the loss tops.
 * Returns 0, or the error a layer reported (a data source that failed), with n->status_msg. */
int dd_net_forward(dd_net *n, double *loss);
/* Runs backward through the layers that need it, last first. Parameter diffs accumulate. */
void dd_net_backward(dd_net *n);
/* Zeroes every parameter's diff (before each iteration, and after each iter_size group). */
void dd_net_clear_param_diffs(dd_net *n);

/* The tensor holding blob `name` at the end of the net (after in-place layers), or NULL. */
dd_tensor *dd_net_blob(const dd_net *n, const char *name);
/* Index of the layer named `name`, or -1. */
int dd_net_layer_index(const dd_net *n, const char *name);

/* Caffe's CopyTrainedLayersFrom: copies weights by layer name; layers the net lacks are skipped
 * (counted in *skipped when not NULL); a blob count or shape that differs is DD_ESHAPE naming the
 * layer and both shapes. `src_name` names the weights in messages. */
int dd_net_copy_from(dd_net *n, const Caffe__NetParameter *weights, const char *src_name,
                     int *skipped, char *err, size_t errlen);

/* Caffe's Net::ToProto: a new NetParameter with every layer's parameters and its blobs (data,
 * and diff when `with_diff`). Free with caffe__net_parameter__free_unpacked. NULL when out of
 * memory. */
Caffe__NetParameter *dd_net_to_proto(const dd_net *n, int with_diff);

/* Makes `n`'s parameters those of `src` for every layer name both nets have (Caffe's
 * ShareTrainedLayersWith: the TEST net reads the TRAIN net's weights). Returns 0 or DD_ESHAPE. */
int dd_net_share_params(dd_net *n, const dd_net *src, char *err, size_t errlen);

/* Fills a BlobProto (freshly initialised by the caller) from a tensor: shape, data, and diff
 * when asked. Returns 0 or DD_ENOMEM. */
int dd_tensor_to_proto(const dd_tensor *t, Caffe__BlobProto *b, int with_diff);

/* Uploads a BlobProto's values (data, or double_data) into t, which must have its count. */
int dd_tensor_from_proto(dd_tensor *t, const Caffe__BlobProto *b, char *err, size_t errlen);

#endif
