/* The graph of a net for one NetState (phase, level, stages), before any tensor exists: which
 * layers Caffe's include/exclude rules keep, how blobs connect them (in-place layers included),
 * every blob's and parameter's shape, and Caffe's backward analysis: which layers need backward,
 * which bottoms receive gradients, which parameters actually learn.
 *
 * This follows Caffe's Net::Init and FilterNet step for step, so that what `distilld check` says
 * about a prototxt is what Caffe (and the distilld engine, which builds on this graph) will do. */
#ifndef DD_NET_GRAPH_H
#define DD_NET_GRAPH_H

#include <stddef.h>

#include "caffe.pb-c.h"
#include "base/diag.h"
#include "net/layer.h"
#include "net/shape.h"

typedef struct {
  const Caffe__LayerParameter *lp; /* borrowed from the NetParameter */
  int param_index;                 /* index of lp in NetParameter.layer */
  const dd_layer_ops *ops;         /* NULL when the type is unknown */
  int nb, nt;
  int *bottom;          /* nb blob ids */
  int *bottom_producer; /* nb graph layer indexes that last wrote each bottom (-1: none) */
  int *top;             /* nt blob ids */
  float *loss_weight;   /* nt loss weights (0 for non-loss tops) */
  unsigned char *bottom_need_backward; /* nb */
  unsigned char need_backward;
  unsigned char contributes_loss;
  int n_params;
  dd_shape param_shape[DD_MAX_LAYER_PARAMS];
  float lr_mult[DD_MAX_LAYER_PARAMS];
  float decay_mult[DD_MAX_LAYER_PARAMS];
  /* lr_mult != 0 and a gradient reaches the layer: the parameter changes in training. */
  unsigned char param_learns[DD_MAX_LAYER_PARAMS];
  /* BatchNorm only: 1 when it normalises with batch statistics and updates its stored ones. */
  unsigned char bn_moves_stats;
} dd_glayer;

typedef struct {
  char *name;
  dd_shape shape;
  int producer; /* graph layer index of the last writer (-1: none) */
} dd_gblob;

typedef struct {
  Caffe__Phase phase;
  size_t n_layers;
  dd_glayer *layers;
  size_t n_blobs;
  dd_gblob *blobs;
  int force_backward;
} dd_net_graph;

/* Builds the graph of `net` for the given phase, level and stages. Problems go to `diags`
 * (errors for what Caffe would refuse: an unknown bottom, an unknown layer type, a wrong number
 * of bottoms/tops/params, shapes that do not fit; each naming the layer). Returns 0 with *out
 * set when the graph could be built, even if diags holds errors, so callers can lint what there
 * is; DD_ENOMEM otherwise. `net` must outlive the graph. */
int dd_net_graph_build(dd_net_graph **out, const Caffe__NetParameter *net, Caffe__Phase phase,
                       int level, const char *const *stages, size_t n_stages, dd_diags *diags);

/* dd_net_graph_build for `phase` and the net's own state's level and stages (dd_net_own_state). */
int dd_net_graph_build_own(dd_net_graph **out, const Caffe__NetParameter *net, Caffe__Phase phase, dd_diags *diags);

void dd_net_graph_free(dd_net_graph *g);

/* The level and stages of the net's own `state` field (Caffe's NetState, whose phase is replaced
 * by the phase a net is built for): what Caffe's Net::Init filters the layers with. Level 0 and
 * no stages when the net has no state. The stages point into `net`. */
void dd_net_own_state(const Caffe__NetParameter *net, int *level, const char *const **stages, size_t *n_stages);

/* Sets the net's `state` level (when has_level) and stages: replace = 1 drops the stages it had
 * (Caffe's command line: `caffe time -stage`), replace = 0 appends them (the solver merging
 * train_state or a test_state into the net's own state). Returns 0 or DD_ENOMEM. */
int dd_net_set_state(Caffe__NetParameter *net, int has_level, int level, const char *const *stages, size_t n_stages,
                     int replace);

/* Caffe's StateMeetsRule / layer inclusion for a NetState. */
int dd_state_meets_rule(Caffe__Phase phase, int level, const char *const *stages, size_t n_stages,
                        const Caffe__NetStateRule *rule);
int dd_layer_included(const Caffe__LayerParameter *lp, Caffe__Phase phase, int level,
                      const char *const *stages, size_t n_stages);

/* Index of the graph layer named `name`, or -1. */
int dd_net_graph_find_layer(const dd_net_graph *g, const char *name);

const char *dd_phase_name(Caffe__Phase phase);

#endif
