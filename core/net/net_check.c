/* Lints for nets (see net_check.h). */
#define _POSIX_C_SOURCE 200809L
#include "net/net_check.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/caffe_io.h"
#include "base/dd_error.h"

static const char *lname(const dd_glayer *l) { return l->lp->name ? l->lp->name : "(unnamed)"; }

static int is_type(const dd_glayer *l, const char *type) {
  return l->ops && strcmp(l->ops->type, type) == 0;
}

static int any_param_learns(const dd_glayer *l) {
  for (int p = 0; p < l->n_params; p++)
    if (l->param_learns[p]) return 1;
  return 0;
}

/* Why a layer's parameters do not learn: "lr_mult 0" or "no gradient reaches it". */
static const char *frozen_reason(const dd_glayer *l) {
  for (int p = 0; p < l->n_params; p++)
    if (l->lr_mult[p] != 0) return "no gradient reaches it";
  return "lr_mult 0";
}

/* Marks every layer upstream of `li` (through the producers of its bottoms) in `mark`. */
static void mark_upstream(const dd_net_graph *g, int li, unsigned char *mark) {
  const dd_glayer *l = &g->layers[li];
  for (int b = 0; b < l->nb; b++) {
    int p = l->bottom_producer[b];
    if (p >= 0 && !mark[p]) {
      mark[p] = 1;
      mark_upstream(g, p, mark);
    }
  }
}

/* The first layer after `li` that reads the blob `li` wrote as top 0, or -1. */
static int next_consumer(const dd_net_graph *g, int li) {
  const dd_glayer *l = &g->layers[li];
  if (l->nt < 1) return -1;
  for (size_t j = (size_t)li + 1; j < g->n_layers; j++) {
    const dd_glayer *c = &g->layers[j];
    for (int b = 0; b < c->nb; b++)
      if (c->bottom[b] == l->top[0] && c->bottom_producer[b] == li) return (int)j;
  }
  return -1;
}

/* The seed's trap: a BatchNorm whose statistics move, in a frozen part of the net. */
static void lint_batchnorm(const dd_net_graph *g, int li, dd_diags *diags) {
  const dd_glayer *l = &g->layers[li];
  if (!l->bn_moves_stats) return;
  const Caffe__BatchNormParameter *bp = l->lp->batch_norm_param;
  int explicit_false = bp && bp->has_use_global_stats && !bp->use_global_stats;
  if (g->phase == CAFFE__PHASE__TEST) {
    /* Only an explicit `use_global_stats: false` gets here. */
    dd_diags_add(diags, DD_DIAG_WARNING, lname(l),
                 "BatchNorm with an explicit `use_global_stats: false` normalises with batch "
                 "statistics and updates its stored statistics even in TEST, so test results "
                 "depend on the test batches and testing changes the model.\n"
                 "fix: remove `use_global_stats: false` (TEST then uses the stored statistics) or "
                 "set it to true");
    return;
  }
  unsigned char *up = calloc(g->n_layers, 1);
  if (!up) return;
  mark_upstream(g, li, up);
  char frozen[512] = "";
  size_t used = 0;
  int n_listed = 0, n_more = 0, learns = 0;
  for (size_t j = 0; j < g->n_layers && !learns; j++) {
    if (!up[j] || g->layers[j].n_params == 0 || is_type(&g->layers[j], "BatchNorm")) continue;
    if (any_param_learns(&g->layers[j])) {
      learns = 1;
      break;
    }
    if (n_listed < 3) {
      used += (size_t)snprintf(frozen + used, used < sizeof frozen ? sizeof frozen - used : 0,
                               "%s%s (%s)", n_listed ? ", " : "", lname(&g->layers[j]),
                               frozen_reason(&g->layers[j]));
      n_listed++;
    } else {
      n_more++;
    }
  }
  free(up);
  if (learns) return;
  int sc = next_consumer(g, li);
  const dd_glayer *scale = sc >= 0 && is_type(&g->layers[sc], "Scale") ? &g->layers[sc] : NULL;
  if (scale && any_param_learns(scale)) return;

  char upstream[640], scale_txt[512] = "", scale_fix[256] = "";
  if (n_listed)
    snprintf(upstream, sizeof upstream, "every parameter upstream is frozen: %s%s", frozen,
             n_more ? ", ..." : "");
  else
    snprintf(upstream, sizeof upstream, "no parameter upstream learns");
  if (scale) {
    int open_spec = 0;
    for (int p = 0; p < scale->n_params; p++)
      if (scale->lr_mult[p] != 0) open_spec = 1;
    snprintf(scale_txt, sizeof scale_txt, "; the Scale \"%s\" after it does not learn (%s)%s",
             lname(scale), frozen_reason(scale),
             open_spec ? ", though one of its blobs has lr_mult != 0 (a missing param spec means "
                         "lr_mult 1) and would learn as soon as a gradient reached it"
                       : "");
    snprintf(scale_fix, sizeof scale_fix,
             ", and keep the Scale \"%s\" frozen with param { lr_mult: 0 decay_mult: 0 } for each "
             "of its %d blobs",
             lname(scale), scale->n_params);
  }
  dd_diags_add(diags, DD_DIAG_WARNING, lname(l),
               "BatchNorm keeps updating its running mean and variance in TRAIN although this part "
               "of the net is frozen.\n"
               "why: use_global_stats is %s, so every TRAIN forward normalises with the batch's own "
               "statistics and moves the three stored blobs, whatever lr_mult, propagate_down or "
               "base_lr say; %s%s.\n"
               "effect: the loaded statistics drift towards those of the training batches and the "
               "frozen part's accuracy falls while its weights stay put (the classic case: 80%% to 0 "
               "over some thousand iterations).\n"
               "fix: batch_norm_param { use_global_stats: true } in \"%s\"%s",
               explicit_false ? "explicitly false" : "not set, which means false in TRAIN", upstream,
               scale_txt, lname(l), scale_fix);
}

int dd_blob_proto_matches(const Caffe__BlobProto *b, const dd_shape *s) {
  if (b->has_num || b->has_channels || b->has_height || b->has_width) {
    if (s->ndim > 4 || s->ndim < 0) return 0;
    int64_t legacy[4];
    for (int i = 0; i < 4; i++) {
      int idx = s->ndim - 4 + i;
      legacy[i] = idx >= 0 ? s->dims[idx] : 1;
    }
    return legacy[0] == b->num && legacy[1] == b->channels && legacy[2] == b->height &&
           legacy[3] == b->width;
  }
  size_t nd = b->shape ? b->shape->n_dim : 0;
  if ((int)nd != s->ndim) return 0;
  for (size_t i = 0; i < nd; i++)
    if (b->shape->dim[i] != s->dims[i]) return 0;
  return 1;
}

char *dd_blob_proto_shape_str(const Caffe__BlobProto *b, char *buf, size_t len) {
  if (b->has_num || b->has_channels || b->has_height || b->has_width) {
    snprintf(buf, len, "%dx%dx%dx%d (legacy 4-D)", b->num, b->channels, b->height, b->width);
    return buf;
  }
  dd_shape s = {.ndim = 0};
  if (b->shape)
    for (size_t i = 0; i < b->shape->n_dim && i < DD_SHAPE_MAX_DIMS; i++)
      s.dims[s.ndim++] = b->shape->dim[i];
  return dd_shape_str(&s, buf, len);
}

int dd_net_check_weights(const dd_net_graph *g, const Caffe__NetParameter *w, const char *wname,
                         dd_diags *diags) {
  dd_weight_layer *wl;
  size_t n;
  char err[512];
  int r = dd_weight_layers(&wl, &n, w, err, sizeof err);
  if (r) {
    dd_diags_add(diags, DD_DIAG_ERROR, NULL, "%s: %s", wname, err);
    return r == DD_ENOMEM ? r : 0;
  }
  unsigned char *covered = calloc(g->n_layers ? g->n_layers : 1, 1);
  if (!covered) {
    free(wl);
    return DD_ENOMEM;
  }
  int ignored = 0;
  char ignored_list[256] = "";
  size_t used = 0;
  for (size_t i = 0; i < n; i++) {
    const char *name = wl[i].name ? wl[i].name : "";
    int li = dd_net_graph_find_layer(g, name);
    if (li < 0) {
      if (wl[i].n_blobs == 0) continue;
      if (ignored < 5)
        used += (size_t)snprintf(ignored_list + used, used < sizeof ignored_list ? sizeof ignored_list - used : 0,
                                 "%s\"%s\"", ignored ? ", " : "", name);
      ignored++;
      continue;
    }
    const dd_glayer *l = &g->layers[li];
    covered[li] = 1;
    if ((int)wl[i].n_blobs != l->n_params) {
      dd_diags_add(diags, DD_DIAG_ERROR, name,
                   "%s holds %zu blob(s) for this layer, but the net's %s layer has %d (is "
                   "bias_term the same in both?)",
                   wname, wl[i].n_blobs, l->lp->type ? l->lp->type : "?", l->n_params);
      continue;
    }
    for (size_t b = 0; b < wl[i].n_blobs; b++) {
      if (!dd_shape_known(&l->param_shape[b])) continue;
      if (!dd_blob_proto_matches(wl[i].blobs[b], &l->param_shape[b])) {
        char a[96], s[64];
        dd_diags_add(diags, DD_DIAG_ERROR, name,
                     "blob %zu in %s has shape %s, but the net needs %s for it", b, wname,
                     dd_blob_proto_shape_str(wl[i].blobs[b], a, sizeof a),
                     dd_shape_str(&l->param_shape[b], s, sizeof s));
      }
    }
  }
  if (ignored)
    dd_diags_add(diags, DD_DIAG_WARNING, NULL,
                 "%s has %d layer(s) with weights that the %s net lacks, which are ignored: %s%s "
                 "(renamed layers?)",
                 wname, ignored, dd_phase_name(g->phase), ignored_list, ignored > 5 ? ", ..." : "");
  int uncovered = 0;
  for (size_t li = 0; li < g->n_layers; li++)
    if (!covered[li] && g->layers[li].n_params > 0 && !is_type(&g->layers[li], "BatchNorm")) uncovered++;
  if (uncovered)
    dd_diags_add(diags, DD_DIAG_NOTE, NULL,
                 "%d layer(s) with parameters get nothing from %s and keep their filler values", uncovered,
                 wname);
  for (size_t li = 0; li < g->n_layers; li++)
    if (!covered[li] && is_type(&g->layers[li], "BatchNorm"))
      dd_diags_add(diags, DD_DIAG_WARNING, lname(&g->layers[li]),
                   "BatchNorm gets no statistics from %s: with use_global_stats it normalises with "
                   "mean 0 and variance 0 (Caffe's behaviour for an empty scale factor)",
                   wname);
  free(covered);
  free(wl);
  return 0;
}

static const dd_net_graph *sort_graph; /* qsort has no context argument */

static int by_name_then_index(const void *pa, const void *pb) {
  size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
  const char *na = sort_graph->layers[a].lp->name, *nb = sort_graph->layers[b].lp->name;
  int c = strcmp(na ? na : "", nb ? nb : "");
  return c ? c : (a > b) - (a < b);
}

/* For each layer, the index of the first layer with its name (itself when it is the first);
 * NULL when out of memory (then no duplicate is reported). */
static size_t *dd_first_namesakes(const dd_net_graph *g) {
  size_t n = g->n_layers, *order = malloc((n ? n : 1) * sizeof *order), *first = malloc((n ? n : 1) * sizeof *first);
  if (!order || !first) {
    free(order);
    free(first);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) order[i] = i;
  static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&mu);
  sort_graph = g;
  qsort(order, n, sizeof *order, by_name_then_index);
  pthread_mutex_unlock(&mu);
  for (size_t k = 0; k < n; k++) {
    const char *a = g->layers[order[k]].lp->name;
    const char *p = k ? g->layers[order[k - 1]].lp->name : NULL;
    int same = k && strcmp(a ? a : "", p ? p : "") == 0;
    first[order[k]] = same ? first[order[k - 1]] : order[k];
  }
  free(order);
  return first;
}

int dd_net_check(dd_net_graph **graph_out, const Caffe__NetParameter *net, Caffe__Phase phase,
                 dd_diags *diags) {
  if (graph_out) *graph_out = NULL;
  dd_net_graph *g;
  int r = dd_net_graph_build_own(&g, net, phase, diags);
  if (r) return r;
  /* Duplicate layer names in this phase: weights copy by name, so the second never gets any.
   * Each layer's first namesake comes from the layers sorted by (name, index): n log n, so a net
   * of a million layers is linted in seconds. */
  size_t *first = dd_first_namesakes(g);
  for (size_t i = 0; i < g->n_layers; i++) {
    const char *a = g->layers[i].lp->name;
    if (!a || !a[0]) {
      dd_diags_add(diags, DD_DIAG_WARNING, NULL, "layer %zu (%s) has no name: weights cannot be copied to it",
                   i, g->layers[i].lp->type ? g->layers[i].lp->type : "?");
      continue;
    }
    size_t j = first ? first[i] : i;
    if (j != i)
      dd_diags_add(diags, DD_DIAG_WARNING, a,
                   "two layers in the %s net are named \"%s\" (layers %zu and %zu): weights are "
                   "copied by name, so they would get the same ones",
                   dd_phase_name(phase), a, j, i);
  }
  free(first);
  /* A net without any loss layer is a deploy net (a teacher, say): nothing in it trains, so the
   * trap is about how it is run, not how it is written. distilld's teacher always runs its
   * BatchNorms on stored statistics; say so once instead of flagging every BatchNorm. */
  int has_loss = 0, n_moving = 0;
  for (size_t i = 0; i < g->n_layers; i++) {
    const dd_glayer *l = &g->layers[i];
    if (l->ops && l->ops->is_loss) has_loss = 1;
    for (int t = 0; t < l->nt; t++)
      if (l->loss_weight[t] != 0) has_loss = 1;
    n_moving += l->bn_moves_stats;
  }
  if (!has_loss && phase == CAFFE__PHASE__TRAIN) {
    if (n_moving)
      dd_diags_add(diags, DD_DIAG_NOTE, NULL,
                   "no loss layer: a deploy net. Run in TRAIN its %d BatchNorm layer(s) would "
                   "update their statistics; as a distilld teacher it runs on stored statistics",
                   n_moving);
  } else {
    for (size_t i = 0; i < g->n_layers; i++)
      if (is_type(&g->layers[i], "BatchNorm")) lint_batchnorm(g, (int)i, diags);
  }
  /* A deliberate difference from Caffe, said once per net that has an Accuracy layer: a diverged
   * net (NaN scores) would otherwise report a perfect accuracy. */
  for (size_t i = 0; i < g->n_layers; i++)
    if (is_type(&g->layers[i], "Accuracy")) {
      dd_diags_add(diags, DD_DIAG_NOTE, g->layers[i].lp->name,
                   "a row whose scores hold a NaN counts as wrong in distilld's Accuracy; Caffe counts it as "
                   "right, so a diverged net would report accuracy 1 there");
      break;
    }
  if (graph_out)
    *graph_out = g;
  else
    dd_net_graph_free(g);
  return 0;
}
