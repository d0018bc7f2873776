/* Net graph for one NetState (see net_graph.h): Caffe's FilterNet, then Net::Init's blob wiring,
 * shape computation and backward analysis. */
#define _POSIX_C_SOURCE 200809L
#include "net/net_graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "format/upgrade.h"

/* Layers with more bottoms or tops than this are wired but their shapes are not computed. */
#define DD_GRAPH_MAX_IO 64

/* "1", "1 or 2", "2 or more", "1 to 3". */
static const char *arity(int lo, int hi, char *buf, size_t len) {
  if (hi == lo)
    snprintf(buf, len, "%d", lo);
  else if (hi < 0)
    snprintf(buf, len, "%d or more", lo);
  else if (hi == lo + 1)
    snprintf(buf, len, "%d or %d", lo, hi);
  else
    snprintf(buf, len, "%d to %d", lo, hi);
  return buf;
}

const char *dd_phase_name(Caffe__Phase phase) {
  return phase == CAFFE__PHASE__TRAIN ? "TRAIN" : "TEST";
}

int dd_state_meets_rule(Caffe__Phase phase, int level, const char *const *stages, size_t n_stages,
                        const Caffe__NetStateRule *rule) {
  if (rule->has_phase && rule->phase != phase) return 0;
  if (rule->has_min_level && level < rule->min_level) return 0;
  if (rule->has_max_level && level > rule->max_level) return 0;
  for (size_t i = 0; i < rule->n_stage; i++) {
    int found = 0;
    for (size_t j = 0; j < n_stages && !found; j++) found = strcmp(rule->stage[i], stages[j]) == 0;
    if (!found) return 0;
  }
  for (size_t i = 0; i < rule->n_not_stage; i++)
    for (size_t j = 0; j < n_stages; j++)
      if (strcmp(rule->not_stage[i], stages[j]) == 0) return 0;
  return 1;
}

void dd_net_own_state(const Caffe__NetParameter *net, int *level, const char *const **stages, size_t *n_stages) {
  const Caffe__NetState *s = net->state;
  *level = s && s->has_level ? s->level : 0;
  *stages = s ? (const char *const *)s->stage : NULL;
  *n_stages = s ? s->n_stage : 0;
}

int dd_net_set_state(Caffe__NetParameter *net, int has_level, int level, const char *const *stages, size_t n_stages,
                     int replace) {
  if (!net->state) {
    if (!(net->state = malloc(sizeof *net->state))) return DD_ENOMEM;
    caffe__net_state__init(net->state);
  }
  Caffe__NetState *s = net->state;
  if (has_level) {
    s->has_level = 1;
    s->level = level;
  }
  if (replace) {
    for (size_t i = 0; i < s->n_stage; i++) free(s->stage[i]);
    s->n_stage = 0;
  }
  if (!n_stages) return 0;
  char **st = realloc(s->stage, (s->n_stage + n_stages) * sizeof *st);
  if (!st) return DD_ENOMEM;
  s->stage = st;
  for (size_t i = 0; i < n_stages; i++) {
    if (!(st[s->n_stage] = strdup(stages[i]))) return DD_ENOMEM;
    s->n_stage++;
  }
  return 0;
}

int dd_layer_included(const Caffe__LayerParameter *lp, Caffe__Phase phase, int level,
                      const char *const *stages, size_t n_stages) {
  /* Caffe: a layer-level `phase` is a rule too (layers set it when built from a net state). */
  if (lp->n_include > 0) {
    for (size_t i = 0; i < lp->n_include; i++)
      if (dd_state_meets_rule(phase, level, stages, n_stages, lp->include[i])) return 1;
    return 0;
  }
  for (size_t i = 0; i < lp->n_exclude; i++)
    if (dd_state_meets_rule(phase, level, stages, n_stages, lp->exclude[i])) return 0;
  return 1;
}

int dd_net_graph_find_layer(const dd_net_graph *g, const char *name) {
  for (size_t i = 0; i < g->n_layers; i++)
    if (g->layers[i].lp->name && strcmp(g->layers[i].lp->name, name) == 0) return (int)i;
  return -1;
}

void dd_net_graph_free(dd_net_graph *g) {
  if (!g) return;
  for (size_t i = 0; i < g->n_layers; i++) {
    dd_glayer *l = &g->layers[i];
    free(l->bottom);
    free(l->bottom_producer);
    free(l->top);
    free(l->loss_weight);
    free(l->bottom_need_backward);
  }
  for (size_t i = 0; i < g->n_blobs; i++) free(g->blobs[i].name);
  free(g->layers);
  free(g->blobs);
  free(g);
}

static int find_blob(const dd_net_graph *g, const char *name) {
  for (size_t i = g->n_blobs; i-- > 0;)
    if (strcmp(g->blobs[i].name, name) == 0) return (int)i;
  return -1;
}

static int add_blob(dd_net_graph *g, const char *name, size_t *cap) {
  if (g->n_blobs == *cap) {
    size_t ncap = *cap ? *cap * 2 : 16;
    dd_gblob *nb = realloc(g->blobs, ncap * sizeof *nb);
    if (!nb) return DD_ENOMEM;
    g->blobs = nb;
    *cap = ncap;
  }
  char *dup = strdup(name);
  if (!dup) return DD_ENOMEM;
  g->blobs[g->n_blobs] = (dd_gblob){dup, dd_shape_unknown(), -1};
  return (int)g->n_blobs++;
}

static const char *lname(const dd_glayer *l) { return l->lp->name ? l->lp->name : "(unnamed)"; }

/* Which bottoms a layer allows forced backward into (Caffe's AllowForceBackward): not the labels
 * of losses and accuracy. */
static int allow_force_backward(const dd_glayer *l, int bottom) {
  if (!l->ops) return 1;
  if (!l->ops->backward) return 0; /* Threshold, ArgMax, data layers: nothing to force */
  /* losses: EuclideanLoss allows either bottom; ContrastiveLoss both features, not the
   * similarity; InfogainLoss neither labels nor H (Caffe would force H and then abort) */
  if (strcmp(l->ops->type, "EuclideanLoss") == 0) return 1;
  if (strcmp(l->ops->type, "ContrastiveLoss") == 0) return bottom != 2;
  if (strcmp(l->ops->type, "InfogainLoss") == 0) return bottom == 0;
  if (bottom == 1 && (l->ops->is_loss || strcmp(l->ops->type, "Accuracy") == 0)) return 0;
  if (strcmp(l->ops->type, "KDLoss") == 0 && bottom == 1) return 0; /* the teacher's logits */
  if (strcmp(l->ops->type, "BatchReindex") == 0 && bottom == 1) return 0; /* indices (Caffe aborts) */
  if (strcmp(l->ops->type, "Embed") == 0) return 0;                      /* indices (Caffe aborts) */
  if (strcmp(l->ops->type, "Crop") == 0 && bottom == 1) return 0;        /* only its shape is used */
  /* catalogue: recurrent (Caffe's RecurrentLayer, LSTMUnitLayer): not the sequence-continuation
   * markers, nor the initial states exposed by recurrent_param.expose_hidden (Caffe gives them no
   * gradient: its unrolled net shares only their data) */
  if (strcmp(l->ops->type, "RNN") == 0 || strcmp(l->ops->type, "LSTM") == 0) {
    const Caffe__RecurrentParameter *rp = l->lp->recurrent_param;
    int exposed = rp && rp->expose_hidden ? (l->ops->type[0] == 'R' ? 1 : 2) : 0;
    return bottom != 1 && bottom < l->nb - exposed;
  }
  if (strcmp(l->ops->type, "LSTMUnit") == 0) return bottom != 2;
  return 1;
}

/* Wires one layer: bottoms, tops, shapes, params and the forward part of the backward analysis.
 * Returns 0 or DD_ENOMEM; problems go to diags. */
static int wire_layer(dd_net_graph *g, size_t li, size_t *blob_cap, unsigned char **need_bw,
                      size_t *need_cap, dd_diags *diags) {
  dd_glayer *l = &g->layers[li];
  const Caffe__LayerParameter *lp = l->lp;
  const char *name = lname(l);
  l->nb = (int)lp->n_bottom;
  l->nt = (int)lp->n_top;
  l->bottom = calloc(l->nb ? l->nb : 1, sizeof *l->bottom);
  l->bottom_producer = calloc(l->nb ? l->nb : 1, sizeof *l->bottom_producer);
  l->bottom_need_backward = calloc(l->nb ? l->nb : 1, 1);
  l->top = calloc(l->nt ? l->nt : 1, sizeof *l->top);
  l->loss_weight = calloc(l->nt ? l->nt : 1, sizeof *l->loss_weight);
  if (!l->bottom || !l->bottom_producer || !l->bottom_need_backward || !l->top || !l->loss_weight)
    return DD_ENOMEM;

  char types[512];
  if (!lp->type || !lp->type[0]) {
    dd_diags_add(diags, DD_DIAG_ERROR, name, "layer has no type");
  } else if (!(l->ops = dd_layer_ops_find(lp->type)) && dd_refused_layer_type(lp->type)) {
    dd_diags_add(diags, DD_DIAG_ERROR, name, "layer type \"%s\" refused: %s", lp->type,
                 dd_refused_layer_type(lp->type));
  } else if (!l->ops) {
    dd_layer_types_list(types, sizeof types);
    dd_diags_add(diags, DD_DIAG_ERROR, name, "unknown layer type \"%s\" (distilld implements: %s)",
                 lp->type, types);
  }
  if (l->ops) {
    const dd_layer_ops *o = l->ops;
    char a[32];
    if (l->nb < o->min_bottoms || (o->max_bottoms >= 0 && l->nb > o->max_bottoms))
      dd_diags_add(diags, DD_DIAG_ERROR, name, "%s takes %s bottom(s), this layer has %d", o->type,
                   arity(o->min_bottoms, o->max_bottoms, a, sizeof a), l->nb);
    if (l->nt < o->min_tops || (o->max_tops >= 0 && l->nt > o->max_tops))
      dd_diags_add(diags, DD_DIAG_ERROR, name, "%s takes %s top(s), this layer has %d", o->type,
                   arity(o->min_tops, o->max_tops, a, sizeof a), l->nt);
  }
  if (lp->n_propagate_down && lp->n_propagate_down != lp->n_bottom)
    dd_diags_add(diags, DD_DIAG_ERROR, name,
                 "propagate_down is given %zu times for %zu bottoms: give it once per bottom or not at all",
                 lp->n_propagate_down, lp->n_bottom);
  if (lp->n_loss_weight && lp->n_loss_weight != lp->n_top)
    dd_diags_add(diags, DD_DIAG_ERROR, name,
                 "loss_weight is given %zu times for %zu tops: give it once per top or not at all",
                 lp->n_loss_weight, lp->n_top);

  /* Bottoms (Caffe's AppendBottom). */
  int need_backward = 0;
  dd_shape bshapes[DD_GRAPH_MAX_IO];
  for (int b = 0; b < l->nb; b++) {
    int id = find_blob(g, lp->bottom[b]);
    l->bottom[b] = id;
    l->bottom_producer[b] = -1;
    if (id < 0) {
      dd_diags_add(diags, DD_DIAG_ERROR, name,
                   "bottom \"%s\" is not produced by any earlier layer in the %s net (check the "
                   "name, the layer order and the include/exclude rules)",
                   lp->bottom[b], dd_phase_name(g->phase));
      if (b < DD_GRAPH_MAX_IO) bshapes[b] = dd_shape_unknown();
      continue;
    }
    l->bottom_producer[b] = g->blobs[id].producer;
    if (b < DD_GRAPH_MAX_IO) bshapes[b] = g->blobs[id].shape;
    int nbw = (*need_bw)[id];
    if (lp->n_propagate_down == lp->n_bottom && lp->n_propagate_down) nbw = lp->propagate_down[b];
    l->bottom_need_backward[b] = (unsigned char)nbw;
    need_backward |= (*need_bw)[id];
  }

  /* Shapes and parameters. */
  dd_shape tshapes[DD_GRAPH_MAX_IO];
  for (int t = 0; t < DD_GRAPH_MAX_IO; t++) tshapes[t] = dd_shape_unknown();
  if (l->ops && l->nb <= DD_GRAPH_MAX_IO && l->nt <= DD_GRAPH_MAX_IO) {
    char err[512] = "";
    dd_shape_ctx c = {.lp = lp, .phase = g->phase, .nb = l->nb, .nt = l->nt, .bottoms = bshapes,
                      .tops = tshapes, .err = err, .errlen = sizeof err};
    for (int p = 0; p < DD_MAX_LAYER_PARAMS; p++) c.params[p] = dd_shape_unknown();
    int ok_arity = l->nb >= l->ops->min_bottoms &&
                   (l->ops->max_bottoms < 0 || l->nb <= l->ops->max_bottoms) &&
                   l->nt >= l->ops->min_tops && (l->ops->max_tops < 0 || l->nt <= l->ops->max_tops);
    if (ok_arity) {
      if (l->ops->shape(&c) != 0) {
        dd_diags_add(diags, DD_DIAG_ERROR, name, "%s", err);
        for (int t = 0; t < DD_GRAPH_MAX_IO; t++) tshapes[t] = dd_shape_unknown();
      }
      l->n_params = c.n_params;
      memcpy(l->param_shape, c.params, sizeof l->param_shape);
    }
  }
  int is_bn = l->ops && strcmp(l->ops->type, "BatchNorm") == 0;
  if ((size_t)l->n_params < lp->n_param)
    dd_diags_add(diags, DD_DIAG_ERROR, name, "%zu param { } specs given, but this layer has %d parameter blob(s)",
                 lp->n_param, l->n_params);
  for (int p = 0; p < l->n_params; p++) {
    const Caffe__ParamSpec *ps = (size_t)p < lp->n_param ? lp->param[p] : NULL;
    l->lr_mult[p] = ps ? ps->lr_mult : 1.0f;
    l->decay_mult[p] = ps ? ps->decay_mult : 1.0f;
    if (is_bn) {
      /* Caffe's BatchNormLayer masks its statistics from the solver: lr_mult 0, always. */
      if (ps && ps->lr_mult != 0)
        dd_diags_add(diags, DD_DIAG_ERROR, name,
                     "param %d has lr_mult %g: BatchNorm's blobs are statistics, not parameters, "
                     "and Caffe refuses a non-zero lr_mult for them", p, ps->lr_mult);
      l->lr_mult[p] = 0;
    }
    need_backward |= l->lr_mult[p] != 0;
  }
  if (is_bn) {
    const Caffe__BatchNormParameter *bp = lp->batch_norm_param;
    int global = bp && bp->has_use_global_stats ? bp->use_global_stats : g->phase == CAFFE__PHASE__TEST;
    l->bn_moves_stats = !global;
  }

  /* Tops (Caffe's AppendTop): in place when the top names the bottom at the same index. */
  for (int t = 0; t < l->nt; t++) {
    const char *tn = lp->top[t];
    int id;
    if (t < l->nb && strcmp(tn, lp->bottom[t]) == 0 && l->bottom[t] >= 0) {
      id = l->bottom[t];
    } else {
      if (find_blob(g, tn) >= 0)
        dd_diags_add(diags, DD_DIAG_ERROR, name,
                     "top \"%s\" is already produced by an earlier layer (only an in-place layer, "
                     "whose top repeats the bottom at the same position, may write it again)", tn);
      id = add_blob(g, tn, blob_cap);
      if (id < 0) return id;
    }
    if ((size_t)g->n_blobs > *need_cap) {
      size_t ncap = *need_cap * 2 > g->n_blobs ? *need_cap * 2 : g->n_blobs + 16;
      unsigned char *nn = realloc(*need_bw, ncap);
      if (!nn) return DD_ENOMEM;
      memset(nn + *need_cap, 0, ncap - *need_cap);
      *need_bw = nn;
      *need_cap = ncap;
    }
    l->top[t] = id;
    g->blobs[id].producer = (int)li;
    g->blobs[id].shape = t < DD_GRAPH_MAX_IO ? tshapes[t] : dd_shape_unknown();
    l->loss_weight[t] = lp->n_loss_weight == lp->n_top && lp->n_loss_weight
                            ? lp->loss_weight[t]
                            : (t == 0 && l->ops && l->ops->is_loss ? 1.0f : 0.0f);
    if (l->loss_weight[t] != 0) need_backward = 1;
  }
  l->need_backward = (unsigned char)need_backward;
  if (need_backward)
    for (int t = 0; t < l->nt; t++) (*need_bw)[l->top[t]] = 1;
  return 0;
}

/* Caffe's backward pruning, last layer first: a layer that does not contribute to any loss, or
 * whose tops need no gradient, skips backward, and so do its bottoms. */
static int prune_backward(dd_net_graph *g) {
  unsigned char *under_loss = calloc(g->n_blobs + 1, 1);
  unsigned char *skip_bp = calloc(g->n_blobs + 1, 1);
  if (!under_loss || !skip_bp) {
    free(under_loss);
    free(skip_bp);
    return DD_ENOMEM;
  }
  for (size_t li = g->n_layers; li-- > 0;) {
    dd_glayer *l = &g->layers[li];
    int contributes = 0, skip = 1;
    for (int t = 0; t < l->nt; t++) {
      int id = l->top[t];
      if (l->loss_weight[t] != 0 || under_loss[id]) contributes = 1;
      if (!skip_bp[id]) skip = 0;
      if (contributes && !skip) break;
    }
    if (l->need_backward && skip && l->nt > 0) {
      l->need_backward = 0;
      for (int b = 0; b < l->nb; b++) l->bottom_need_backward[b] = 0;
    }
    if (!contributes) l->need_backward = 0;
    l->contributes_loss = (unsigned char)contributes;
    for (int b = 0; b < l->nb; b++) {
      int id = l->bottom[b];
      if (id < 0) continue;
      if (contributes)
        under_loss[id] = 1;
      else
        l->bottom_need_backward[b] = 0;
      if (!l->bottom_need_backward[b]) skip_bp[id] = 1;
    }
  }
  if (g->force_backward) {
    for (size_t li = 0; li < g->n_layers; li++) {
      dd_glayer *l = &g->layers[li];
      l->need_backward = 1;
      for (int b = 0; b < l->nb; b++)
        l->bottom_need_backward[b] |= (unsigned char)allow_force_backward(l, b);
    }
  }
  for (size_t li = 0; li < g->n_layers; li++) {
    dd_glayer *l = &g->layers[li];
    for (int p = 0; p < l->n_params; p++)
      l->param_learns[p] = (unsigned char)(l->lr_mult[p] != 0 && l->need_backward);
  }
  free(under_loss);
  free(skip_bp);
  return 0;
}

int dd_net_graph_build(dd_net_graph **out, const Caffe__NetParameter *net, Caffe__Phase phase,
                       int level, const char *const *stages, size_t n_stages, dd_diags *diags) {
  *out = NULL;
  dd_net_graph *g = calloc(1, sizeof *g);
  if (!g) return DD_ENOMEM;
  g->phase = phase;
  g->force_backward = net->force_backward;
  g->layers = calloc(net->n_layer ? net->n_layer : 1, sizeof *g->layers);
  if (!g->layers) goto fail;
  if (net->n_input || net->n_input_shape || net->n_input_dim)
    dd_diags_add(diags, DD_DIAG_ERROR, NULL,
                 "the net declares inputs with the deprecated top-level `input` fields; use an Input layer "
                 "(layer { name: \"data\" type: \"Input\" top: \"data\" input_param { shape { dim: ... } } })");
  for (size_t i = 0; i < net->n_layer; i++) {
    if (!dd_layer_included(net->layer[i], phase, level, stages, n_stages)) continue;
    g->layers[g->n_layers].lp = net->layer[i];
    g->layers[g->n_layers].param_index = (int)i;
    g->n_layers++;
  }
  size_t blob_cap = 0, need_cap = 16;
  unsigned char *need_bw = calloc(need_cap, 1);
  if (!need_bw) goto fail;
  for (size_t li = 0; li < g->n_layers; li++) {
    if (wire_layer(g, li, &blob_cap, &need_bw, &need_cap, diags)) {
      free(need_bw);
      goto fail;
    }
  }
  free(need_bw);
  if (prune_backward(g)) goto fail;
  for (size_t li = 0; li < g->n_layers; li++) {
    const dd_glayer *l = &g->layers[li];
    for (int b = 0; l->ops && !l->ops->backward && l->need_backward && b < l->nb; b++)
      if (l->bottom_need_backward[b]) {
        dd_diags_add(diags, DD_DIAG_ERROR, lname(l),
                     "%s has no backward pass (neither has Caffe's), but bottom \"%s\" needs a gradient through "
                     "it to reach a loss: set propagate_down: false for it, or freeze what lies below",
                     l->ops->type, g->blobs[l->bottom[b]].name);
        break;
      }
  }
  *out = g;
  return 0;
fail:
  dd_net_graph_free(g);
  return DD_ENOMEM;
}

int dd_net_graph_build_own(dd_net_graph **out, const Caffe__NetParameter *net, Caffe__Phase phase, dd_diags *diags) {
  int level;
  const char *const *stages;
  size_t n_stages;
  dd_net_own_state(net, &level, &stages, &n_stages);
  return dd_net_graph_build(out, net, phase, level, stages, n_stages, diags);
}
