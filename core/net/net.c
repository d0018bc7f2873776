/* Nets (see net.h): Caffe's Net::Init, Forward, Backward, CopyTrainedLayersFrom and ToProto. */
#define _POSIX_C_SOURCE 200809L
#include "net/net.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "format/caffe_io.h"
#include "net/filler.h"
#include "net/net_check.h"

/* ---- building the NetParameter: filter, then splits ------------------------------------------ */

static char *dupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dupf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return NULL;
  char *s = malloc((size_t)n + 1);
  if (!s) return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}

/* Caffe's names for the split layers and blobs it inserts. */
static char *split_layer_name(const char *layer, const char *blob, int idx) {
  return dupf("%s_%s_%d_split", blob, layer, idx);
}
static char *split_blob_name(const char *layer, const char *blob, int idx, int k) {
  return dupf("%s_%s_%d_split_%d", blob, layer, idx, k);
}

/* Caffe's InsertSplits: every top consumed more than once (a non-zero explicit loss_weight counts
 * as a use) gets a Split layer right after its producer, and each consumer reads its own copy.
 * Rewrites net->layer in place. Returns 0, DD_ENOMEM, or DD_EINVAL for an unknown bottom (the
 * graph reports that one properly; here it just stops). */
static int insert_splits(Caffe__NetParameter *net) {
  size_t nl = net->n_layer;
  /* (layer, top) of every blob's last producer, and use counts per (layer, top) */
  int *cnt_off = calloc(nl + 1, sizeof *cnt_off);
  if (!cnt_off) return DD_ENOMEM;
  for (size_t i = 0; i < nl; i++) cnt_off[i + 1] = cnt_off[i] + (int)net->layer[i]->n_top;
  int ntops = cnt_off[nl];
  int *uses = calloc((size_t)ntops + 1, sizeof *uses), *next_split = calloc((size_t)ntops + 1, sizeof *next_split);
  float *lw = calloc((size_t)ntops + 1, sizeof *lw);
  int *src_of_bottom = NULL; /* per (layer, bottom): flat top index */
  int nbot = 0;
  for (size_t i = 0; i < nl; i++) nbot += (int)net->layer[i]->n_bottom;
  src_of_bottom = calloc((size_t)nbot + 1, sizeof *src_of_bottom);
  int r = DD_ENOMEM;
  if (!uses || !next_split || !lw || !src_of_bottom) goto out;
  int b_flat = 0;
  for (size_t i = 0; i < nl; i++) {
    Caffe__LayerParameter *lp = net->layer[i];
    for (size_t j = 0; j < lp->n_bottom; j++, b_flat++) {
      int src = -1;
      for (size_t pi = i; pi-- > 0 && src < 0;) /* the last producer before layer i */
        for (size_t t = net->layer[pi]->n_top; t-- > 0;)
          if (!strcmp(net->layer[pi]->top[t], lp->bottom[j])) {
            src = cnt_off[pi] + (int)t;
            break;
          }
      if (src < 0) {
        r = DD_EINVAL;
        goto out;
      }
      src_of_bottom[b_flat] = src;
      uses[src]++;
    }
    size_t last = lp->n_loss_weight < lp->n_top ? lp->n_loss_weight : lp->n_top;
    for (size_t j = 0; j < last; j++)
      if (lp->loss_weight[j] != 0) {
        lw[cnt_off[i] + j] = lp->loss_weight[j];
        uses[cnt_off[i] + j]++;
      }
  }
  int n_splits = 0;
  for (int t = 0; t < ntops; t++) n_splits += uses[t] > 1;
  if (n_splits == 0) {
    r = 0;
    goto out;
  }
  Caffe__LayerParameter **nlayers = calloc(nl + (size_t)n_splits, sizeof *nlayers);
  if (!nlayers) goto out;
  size_t k = 0;
  b_flat = 0;
  for (size_t i = 0; i < nl; i++) {
    Caffe__LayerParameter *lp = net->layer[i];
    nlayers[k++] = lp;
    for (size_t j = 0; j < lp->n_bottom; j++, b_flat++) {
      int src = src_of_bottom[b_flat];
      if (uses[src] <= 1) continue;
      int pl = 0;
      while (cnt_off[pl + 1] <= src) pl++;
      char *nb = split_blob_name(net->layer[pl]->name ? net->layer[pl]->name : "", lp->bottom[j],
                                 src - cnt_off[pl], next_split[src]++);
      if (!nb) goto fail_new;
      free(lp->bottom[j]);
      lp->bottom[j] = nb;
    }
    for (size_t j = 0; j < lp->n_top; j++) {
      int t = cnt_off[i] + (int)j;
      if (uses[t] <= 1) continue;
      Caffe__LayerParameter *sl = malloc(sizeof *sl);
      if (!sl) goto fail_new;
      caffe__layer_parameter__init(sl);
      nlayers[k++] = sl;
      const char *ln = lp->name ? lp->name : "";
      sl->name = split_layer_name(ln, lp->top[j], (int)j);
      sl->type = strdup("Split");
      sl->bottom = calloc(1, sizeof *sl->bottom);
      sl->top = calloc((size_t)uses[t], sizeof *sl->top);
      if (!sl->name || !sl->type || !sl->bottom || !sl->top) goto fail_new;
      sl->bottom[0] = strdup(lp->top[j]);
      if (!sl->bottom[0]) goto fail_new;
      sl->n_bottom = 1;
      for (int s = 0; s < uses[t]; s++) {
        sl->top[s] = split_blob_name(ln, lp->top[j], (int)j, s);
        if (!sl->top[s]) goto fail_new;
        sl->n_top++;
      }
      if (lw[t] != 0) {
        /* the loss moves to the split's first top; the producer's own weight is cleared */
        sl->loss_weight = calloc((size_t)uses[t], sizeof *sl->loss_weight);
        if (!sl->loss_weight) goto fail_new;
        sl->n_loss_weight = (size_t)uses[t];
        sl->loss_weight[0] = lw[t];
        lp->loss_weight[j] = 0;
        next_split[t]++;
      }
    }
  }
  free(net->layer);
  net->layer = nlayers;
  net->n_layer = k;
  r = 0;
  goto out;
fail_new:
  /* free the split layers made so far; the originals stay in net->layer */
  for (size_t q = 0; q < k; q++) {
    int original = 0;
    for (size_t i = 0; i < nl; i++) original |= nlayers[q] == net->layer[i];
    if (!original && nlayers[q]) caffe__layer_parameter__free_unpacked(nlayers[q], NULL);
  }
  free(nlayers);
  r = DD_ENOMEM;
out:
  free(cnt_off);
  free(uses);
  free(next_split);
  free(lw);
  free(src_of_bottom);
  return r;
}

/* The net's NetParameter for `phase`: a deep copy with excluded layers dropped, then splits. */
static int prepare_param(Caffe__NetParameter **out, const Caffe__NetParameter *src, Caffe__Phase phase) {
  Caffe__NetParameter *p = (Caffe__NetParameter *)dd_proto_copy(&src->base);
  if (!p) return DD_ENOMEM;
  int level;
  const char *const *stages;
  size_t n_stages;
  dd_net_own_state(p, &level, &stages, &n_stages);
  size_t k = 0;
  for (size_t i = 0; i < p->n_layer; i++) {
    if (dd_layer_included(p->layer[i], phase, level, stages, n_stages))
      p->layer[k++] = p->layer[i];
    else
      caffe__layer_parameter__free_unpacked(p->layer[i], NULL);
  }
  p->n_layer = k;
  int r = insert_splits(p);
  if (r == DD_ENOMEM) {
    caffe__net_parameter__free_unpacked(p, NULL);
    return r;
  }
  *out = p;
  return 0;
}

/* ---- the net ------------------------------------------------------------------------------- */

static int first_errors(const dd_diags *d, char *err, size_t errlen) {
  size_t used = 0;
  int shown = 0;
  if (errlen) err[0] = '\0';
  for (size_t i = 0; i < d->n && shown < 3; i++) {
    if (d->v[i].level != DD_DIAG_ERROR) continue;
    if (used < errlen)
      used += (size_t)snprintf(err + used, errlen - used, "%s%s%s%s", shown ? "; " : "",
                               d->v[i].where ? d->v[i].where : "", d->v[i].where ? ": " : "", d->v[i].msg);
    shown++;
  }
  if (d->n_errors > 3 && used < errlen) snprintf(err + used, errlen - used, " (and %d more)", d->n_errors - 3);
  return DD_EINVAL;
}

/* One blob's or parameter's size check: at most DD_SHAPE_MAX_COUNT elements, dims in range. */
static int check_one(const dd_shape *s, const char *layer, const char *what, const char *name, int64_t *bytes,
                     char *err, size_t errlen) {
  int64_t count = 0;
  if (!dd_shape_known(s) || dd_shape_size_check(s, DD_SHAPE_MAX_COUNT, &count) == 0) {
    *bytes = dd_shape_known(s) ? count * (int64_t)sizeof(float) * 2 : 0; /* data and diff */
    return 0;
  }
  char shp[160];
  dd_shape_str(s, shp, sizeof shp);
  if (count == DD_COUNT_OVERFLOW)
    return dd_errorf(DD_ESHAPE, err, errlen,
                     "layer \"%s\": %s \"%s\" would be %s: its element count overflows 64 bits", layer, what, name, shp);
  return dd_errorf(DD_ESHAPE, err, errlen,
                   "layer \"%s\": %s \"%s\" would be %s = %lld elements (%lld bytes): a blob holds at most %lld "
                   "elements, each dim at most %lld", layer, what, name, shp, (long long)count,
                   (long long)dd_count_mul(count, (int64_t)sizeof(float)), (long long)DD_SHAPE_MAX_COUNT,
                   (long long)DD_SHAPE_MAX_COUNT);
}

/* Checks every blob and parameter shape of the graph before anything is allocated, and charges
 * their bytes (data and diff) to `budget` (may be NULL). */
static int check_sizes(const dd_net_graph *g, dd_mem_budget *budget, char *err, size_t errlen) {
  int64_t total = 0, bytes;
  int r;
  for (size_t b = 0; b < g->n_blobs; b++) {
    const dd_gblob *gb = &g->blobs[b];
    const char *ln = gb->producer >= 0 && g->layers[gb->producer].lp->name ? g->layers[gb->producer].lp->name : "?";
    if ((r = check_one(&gb->shape, ln, "top", gb->name, &bytes, err, errlen))) return r;
    total += bytes; /* at most ~2^35 per blob: no overflow for any realistic blob count */
  }
  for (size_t i = 0; i < g->n_layers; i++)
    for (int p = 0; p < g->layers[i].n_params; p++) {
      char pname[32];
      snprintf(pname, sizeof pname, "%d", p);
      const char *ln = g->layers[i].lp->name ? g->layers[i].lp->name : "?";
      if ((r = check_one(&g->layers[i].param_shape[p], ln, "parameter", pname, &bytes, err, errlen))) return r;
      total += bytes;
    }
  return dd_mem_budget_charge(budget, total, "the net's blobs and parameters", err, errlen);
}

int dd_mem_budget_charge(dd_mem_budget *budget, int64_t bytes, const char *what, char *err, size_t errlen) {
  if (!budget || budget->max_bytes <= 0) return 0;
  if (bytes > budget->max_bytes - budget->used_bytes)
    return dd_errorf(DD_ENOMEM, err, errlen,
                     "%s need %lld bytes, more than the job's memory limit allows (%lld of %lld bytes already used)",
                     what, (long long)bytes, (long long)budget->used_bytes, (long long)budget->max_bytes);
  budget->used_bytes += bytes;
  return 0;
}

int dd_net_create(dd_net **out, const Caffe__NetParameter *src, Caffe__Phase phase, dd_backend *be,
                  uint64_t seed, dd_diags *diags, char *err, size_t errlen) {
  return dd_net_create_budget(out, src, phase, be, seed, NULL, diags, err, errlen);
}

/* The ParamSpec of parameter p of layer li, or NULL. */
static const Caffe__ParamSpec *param_spec(const dd_net *n, int li, int p) {
  const Caffe__LayerParameter *lp = n->layers[li].lp;
  return (size_t)p < lp->n_param ? lp->param[p] : NULL;
}

/* Caffe's named parameters (param { name: "w" }): the first parameter of a name owns it and is
 * learnable; a later one of the same name uses the owner's data and diff (its gradient adds to
 * the owner's) and is not learnable itself. The shapes must be equal (share_mode STRICT, the
 * default) or hold as many values (PERMISSIVE); a follower's lr_mult and decay_mult, where set,
 * must equal the owner's where that is set, else they become the owner's. Returns 1 when
 * parameter p of layer li was shared, 0 when it owns its memory, a DD_E* code (< 0) with err. */
static int share_param(dd_net *n, int li, int p, char *err, size_t errlen) {
  const Caffe__ParamSpec *ps = param_spec(n, li, p);
  if (!ps || !ps->name || !ps->name[0]) return 0;
  for (size_t k = 0; k < n->n_params; k++) {
    dd_net_param *o = &n->params[k];
    const Caffe__ParamSpec *os = param_spec(n, o->layer, o->index);
    if (!os || !os->name || strcmp(os->name, ps->name)) continue;
    dd_tensor *t = n->layers[li].params[p];
    const char *owner = n->layers[o->layer].name, *me = n->layers[li].name;
    int permissive = ps->has_share_mode && ps->share_mode == CAFFE__PARAM_SPEC__DIM_CHECK_MODE__PERMISSIVE;
    if (permissive ? t->count != o->t->count : !dd_shape_equal(&t->shape, &o->t->shape)) {
      char a[128], b[128];
      dd_shape_str(&o->t->shape, a, sizeof a);
      dd_shape_str(&t->shape, b, sizeof b);
      return dd_errorf(DD_ESHAPE, err, errlen,
                "layer \"%s\": parameter %d shares \"%s\" with layer \"%s\", but its shape %s differs from the "
                "owner's %s (share_mode %s)", me, p, ps->name, owner, b, a, permissive ? "PERMISSIVE: counts" : "STRICT");
    }
    if (ps->has_lr_mult) {
      if (os->has_lr_mult && os->lr_mult != ps->lr_mult) {
        return dd_errorf(DD_EINVAL, err, errlen, "layer \"%s\": shared parameter \"%s\" has lr_mult %g, layer \"%s\" (its owner) %g",
                  me, ps->name, ps->lr_mult, owner, os->lr_mult);
      }
      o->lr_mult = ps->lr_mult;
    }
    if (ps->has_decay_mult) {
      if (os->has_decay_mult && os->decay_mult != ps->decay_mult) {
        return dd_errorf(DD_EINVAL, err, errlen, "layer \"%s\": shared parameter \"%s\" has decay_mult %g, layer \"%s\" (its owner) %g",
                  me, ps->name, ps->decay_mult, owner, os->decay_mult);
      }
      o->decay_mult = ps->decay_mult;
    }
    dd_shape own = t->shape;
    int64_t count = t->count;
    dd_tensor_share(t, o->t);
    t->shape = own; /* PERMISSIVE: the follower keeps its own view of the owner's values */
    t->count = count;
    return 1;
  }
  return 0;
}

int dd_net_create_budget(dd_net **out, const Caffe__NetParameter *src, Caffe__Phase phase, dd_backend *be,
                         uint64_t seed, dd_mem_budget *budget, dd_diags *diags, char *err, size_t errlen) {
  *out = NULL;
  dd_net *n = calloc(1, sizeof *n);
  if (!n) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  n->be = be;
  n->phase = phase;
  n->seed = seed;
  dd_diags local = {0};
  int r = prepare_param(&n->param, src, phase);
  if (r) {
    free(n);
    return dd_errorf(r, err, errlen, "out of memory");
  }
  /* n->param kept only the layers of this state: build the graph for it too (the same filter) */
  if ((r = dd_net_graph_build_own(&n->graph, n->param, phase, &local))) {
    dd_errorf(r, err, errlen, "out of memory");
    goto fail;
  }
  if (local.n_errors) {
    r = first_errors(&local, err, errlen);
    goto fail;
  }
  if ((r = check_sizes(n->graph, budget, err, errlen))) goto fail;
  /* blobs */
  n->n_blobs = n->graph->n_blobs;
  n->blobs = calloc(n->n_blobs ? n->n_blobs : 1, sizeof *n->blobs);
  if (!n->blobs) goto oom;
  for (size_t b = 0; b < n->n_blobs; b++) {
    const dd_gblob *gb = &n->graph->blobs[b];
    if (!(n->blobs[b] = dd_tensor_create(be, gb->name))) goto oom;
    if (!dd_shape_known(&gb->shape)) {
      const dd_glayer *pl = gb->producer >= 0 ? &n->graph->layers[gb->producer] : NULL;
      r = dd_errorf(DD_ESHAPE, err, errlen,
                    "the shape of blob \"%s\" (from layer \"%s\") is not known before data arrives",
                    gb->name, pl && pl->lp->name ? pl->lp->name : "?");
      goto fail;
    }
    if ((r = dd_tensor_reshape(n->blobs[b], &gb->shape))) goto oom;
  }
  /* Split tops read their bottom's memory (Caffe's ShareData), unless a consumer works in place
   * on one of them, which would write into the others. */
  for (size_t i = 0; i < n->graph->n_layers; i++) {
    const dd_glayer *g = &n->graph->layers[i];
    if (!g->ops || strcmp(g->ops->type, "Split") || g->nb != 1 || g->bottom[0] < 0) continue;
    int in_place = 0;
    for (size_t j = i + 1; j < n->graph->n_layers && !in_place; j++)
      for (int t = 0; t < n->graph->layers[j].nt; t++)
        for (int k = 0; k < g->nt; k++) in_place |= n->graph->layers[j].top[t] == g->top[k];
    if (in_place) continue;
    for (int k = 0; k < g->nt; k++)
      if (g->top[k] != g->bottom[0]) dd_tensor_share_data(n->blobs[g->top[k]], n->blobs[g->bottom[0]]);
  }
  /* layers */
  n->n_layers = n->graph->n_layers;
  n->layers = calloc(n->n_layers ? n->n_layers : 1, sizeof *n->layers);
  if (!n->layers) goto oom;
  size_t n_params = 0;
  for (size_t i = 0; i < n->n_layers; i++) n_params += (size_t)n->graph->layers[i].n_params;
  n->params = calloc(n_params ? n_params : 1, sizeof *n->params);
  if (!n->params) goto oom;
  dd_rng rng;
  dd_rng_seed(&rng, seed);
  for (size_t i = 0; i < n->n_layers; i++) {
    const dd_glayer *g = &n->graph->layers[i];
    dd_layer *l = &n->layers[i];
    l->ops = g->ops;
    l->lp = g->lp;
    l->name = g->lp->name ? g->lp->name : "";
    l->be = be;
    l->phase = phase;
    l->nb = g->nb;
    l->nt = g->nt;
    l->bottom = calloc((size_t)(l->nb ? l->nb : 1), sizeof *l->bottom);
    l->top = calloc((size_t)(l->nt ? l->nt : 1), sizeof *l->top);
    l->propagate_down = calloc((size_t)(l->nb ? l->nb : 1), 1);
    l->loss_weight = calloc((size_t)(l->nt ? l->nt : 1), sizeof *l->loss_weight);
    l->priv = calloc(1, l->ops->priv_size ? l->ops->priv_size : 1);
    if (!l->bottom || !l->top || !l->propagate_down || !l->loss_weight || !l->priv) goto oom;
    for (int b = 0; b < l->nb; b++) {
      l->bottom[b] = n->blobs[g->bottom[b]];
      l->propagate_down[b] = g->need_backward && g->bottom_need_backward[b];
    }
    for (int t = 0; t < l->nt; t++) {
      l->top[t] = n->blobs[g->top[t]];
      l->loss_weight[t] = g->loss_weight[t];
    }
    l->seed = dd_seed_derive(seed, l->name);
    l->iter = &n->iter;
    l->status = &n->status;
    l->status_msg = n->status_msg;
    l->status_len = sizeof n->status_msg;
    l->data_wait_ms = &n->data_wait_ms;
    l->data_errors = &n->data_errors;
    l->n_params = g->n_params;
    for (int p = 0; p < g->n_params; p++) {
      char pname[512];
      snprintf(pname, sizeof pname, "%s.%d", l->name, p);
      dd_tensor *t = dd_tensor_create(be, pname);
      if (!t) goto oom;
      l->params[p] = t;
      if ((r = dd_tensor_reshape(t, &g->param_shape[p]))) goto oom;
      Caffe__FillerParameter dflt;
      caffe__filler_parameter__init(&dflt);
      const Caffe__FillerParameter *fp = l->ops->filler ? l->ops->filler(l->lp, p, &dflt) : &dflt;
      if ((r = dd_fill(t, fp, &rng, err, errlen))) goto fail;
      l->param_propagate_down[p] = g->lr_mult[p] != 0;
      int sh = share_param(n, (int)i, p, err, errlen);
      if (sh < 0) {
        r = sh;
        goto fail;
      }
      if (!sh) n->params[n->n_params++] = (dd_net_param){t, g->lr_mult[p], g->decay_mult[p], (int)i, p};
    }
    if (l->ops->setup && (r = l->ops->setup(l, err, errlen))) {
      char inner[512];
      snprintf(inner, sizeof inner, "%s", err);
      dd_errorf(r, err, errlen, "layer \"%s\": %s", l->name, inner);
      goto fail;
    }
    /* Caffe's SetLossWeights: a loss top's diff holds its weight, where backward reads it. */
    for (int t = 0; t < l->nt; t++)
      if (l->loss_weight[t] != 0) be->ops->fill(be, l->top[t]->diff, l->loss_weight[t], l->top[t]->count);
  }
  if ((r = dd_plan_build(n, 1))) goto oom;
  if (diags)
    for (size_t i = 0; i < local.n; i++) dd_diags_add(diags, local.v[i].level, local.v[i].where, "%s", local.v[i].msg);
  dd_diags_free(&local);
  *out = n;
  return 0;
oom:
  r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory building the net");
fail:
  dd_diags_free(&local);
  dd_net_destroy(n);
  return r;
}

void dd_net_destroy(dd_net *n) {
  if (!n) return;
  if (n->be) dd_plan_free(n);
  for (size_t i = 0; i < n->n_layers; i++) {
    dd_layer *l = &n->layers[i];
    if (l->priv && l->ops && l->ops->destroy) l->ops->destroy(l);
    free(l->priv);
    for (int p = 0; p < l->n_params; p++) dd_tensor_destroy(l->params[p]);
    free(l->bottom);
    free(l->top);
    free(l->propagate_down);
    free(l->loss_weight);
  }
  free(n->layers);
  for (size_t b = 0; b < n->n_blobs; b++) dd_tensor_destroy(n->blobs[b]);
  free(n->blobs);
  free(n->params);
  dd_net_graph_free(n->graph);
  if (n->param) caffe__net_parameter__free_unpacked(n->param, NULL);
  free(n);
}

int dd_net_forward(dd_net *n, double *loss) {
  double total = 0;
  for (size_t k = 0; k < n->plan.n_steps; k++) {
    const dd_plan_step *s = &n->plan.steps[k];
    if (s->kind >= DD_STEP_BLK_CONV) dd_plan_blk_forward(n, s); /* blocked activations (plan_blocked.c) */
    else dd_plan_step_forward(n, s);
    if (n->status) {
      if (loss) *loss = 0;
      return n->status;
    }
    for (int i = s->first; i < s->first + s->n_layers; i++) {
      dd_layer *l = &n->layers[i];
      for (int t = 0; t < l->nt; t++)
        if (l->loss_weight[t] != 0)
          total += n->be->ops->dot(n->be, l->top[t]->count, l->top[t]->data, l->top[t]->diff);
    }
  }
  n->iter++;
  if (loss) *loss = total;
  return 0;
}

void dd_net_backward(dd_net *n) {
  for (size_t k = n->plan.n_steps; k-- > 0;) {
    const dd_plan_step *s = &n->plan.steps[k];
    if (s->kind >= DD_STEP_BLK_CONV) dd_plan_blk_backward(n, s); /* blocked activations (plan_blocked.c) */
    else dd_plan_step_backward(n, s);
    /* the hook sees every layer of the step, last first, once the step's gradients are final */
    if (n->after_layer_backward)
      for (int i = s->first + s->n_layers; i-- > s->first;) n->after_layer_backward(n->after_layer_backward_ctx, i);
  }
}

void dd_net_clear_param_diffs(dd_net *n) {
  for (size_t p = 0; p < n->n_params; p++) n->be->ops->fill(n->be, n->params[p].t->diff, 0.0f, n->params[p].t->count);
}

dd_tensor *dd_net_blob(const dd_net *n, const char *name) {
  for (size_t b = n->n_blobs; b-- > 0;)
    if (!strcmp(n->blobs[b]->name, name)) return n->blobs[b];
  return NULL;
}

int dd_net_layer_index(const dd_net *n, const char *name) {
  for (size_t i = 0; i < n->n_layers; i++)
    if (!strcmp(n->layers[i].name, name)) return (int)i;
  return -1;
}

int dd_tensor_from_proto(dd_tensor *t, const Caffe__BlobProto *b, char *err, size_t errlen) {
  if (b->n_double_data) {
    if ((int64_t)b->n_double_data != t->count)
      return dd_errorf(DD_ESHAPE, err, errlen, "%s: %zu values for %lld elements", t->name, b->n_double_data,
                       (long long)t->count);
    float *h = malloc((size_t)(t->count ? t->count : 1) * sizeof *h);
    if (!h) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
    for (int64_t i = 0; i < t->count; i++) h[i] = (float)b->double_data[i];
    dd_tensor_set_data(t, h);
    free(h);
    return 0;
  }
  if ((int64_t)b->n_data != t->count)
    return dd_errorf(DD_ESHAPE, err, errlen, "%s: %zu values for %lld elements", t->name, b->n_data,
                     (long long)t->count);
  dd_tensor_set_data(t, b->data);
  return 0;
}

int dd_net_copy_from(dd_net *n, const Caffe__NetParameter *w, const char *src_name, int *skipped,
                     char *err, size_t errlen) {
  dd_weight_layer *wl;
  size_t nw;
  int r = dd_weight_layers(&wl, &nw, w, err, errlen);
  if (r) return r;
  int skip = 0;
  for (size_t i = 0; i < nw && r == 0; i++) {
    int li = dd_net_layer_index(n, wl[i].name);
    if (li < 0) {
      skip += wl[i].n_blobs > 0;
      continue;
    }
    dd_layer *l = &n->layers[li];
    if ((int)wl[i].n_blobs != l->n_params) {
      r = dd_errorf(DD_ESHAPE, err, errlen, "%s: layer \"%s\" has %zu blob(s) there, but %d in the net",
                    src_name, l->name, wl[i].n_blobs, l->n_params);
      break;
    }
    for (size_t b = 0; b < wl[i].n_blobs && r == 0; b++) {
      if (!dd_blob_proto_matches(wl[i].blobs[b], &l->params[b]->shape)) {
        char a[96], s[96];
        r = dd_errorf(DD_ESHAPE, err, errlen, "%s: layer \"%s\" blob %zu has shape %s, but the net needs %s",
                      src_name, l->name, b, dd_blob_proto_shape_str(wl[i].blobs[b], a, sizeof a),
                      dd_shape_str(&l->params[b]->shape, s, sizeof s));
        break;
      }
      r = dd_tensor_from_proto(l->params[b], wl[i].blobs[b], err, errlen);
    }
  }
  free(wl);
  if (skipped) *skipped = skip;
  return r;
}

int dd_tensor_to_proto(const dd_tensor *t, Caffe__BlobProto *b, int with_diff) {
  b->shape = malloc(sizeof *b->shape);
  if (!b->shape) return DD_ENOMEM;
  caffe__blob_shape__init(b->shape);
  b->shape->dim = malloc((size_t)(t->shape.ndim ? t->shape.ndim : 1) * sizeof(int64_t));
  if (!b->shape->dim) return DD_ENOMEM;
  for (int d = 0; d < t->shape.ndim; d++) b->shape->dim[d] = t->shape.dims[d];
  b->shape->n_dim = (size_t)t->shape.ndim;
  b->data = malloc((size_t)(t->count ? t->count : 1) * sizeof(float));
  if (!b->data) return DD_ENOMEM;
  b->n_data = (size_t)t->count;
  dd_tensor_get_data(t, b->data);
  if (with_diff) {
    b->diff = malloc((size_t)(t->count ? t->count : 1) * sizeof(float));
    if (!b->diff) return DD_ENOMEM;
    b->n_diff = (size_t)t->count;
    dd_tensor_get_diff(t, b->diff);
  }
  return 0;
}

Caffe__NetParameter *dd_net_to_proto(const dd_net *n, int with_diff) {
  Caffe__NetParameter *p = malloc(sizeof *p);
  if (!p) return NULL;
  caffe__net_parameter__init(p);
  if (n->param->name && !(p->name = strdup(n->param->name))) goto fail;
  p->layer = calloc(n->n_layers ? n->n_layers : 1, sizeof *p->layer);
  if (!p->layer) goto fail;
  for (size_t i = 0; i < n->n_layers; i++) {
    const dd_layer *l = &n->layers[i];
    Caffe__LayerParameter *lp = (Caffe__LayerParameter *)dd_proto_copy(&l->lp->base);
    if (!lp) goto fail;
    p->layer[p->n_layer++] = lp;
    lp->has_phase = 1;
    lp->phase = n->phase;
    if (l->n_params == 0) continue;
    lp->blobs = calloc((size_t)l->n_params, sizeof *lp->blobs);
    if (!lp->blobs) goto fail;
    for (int b = 0; b < l->n_params; b++) {
      Caffe__BlobProto *bp = malloc(sizeof *bp);
      if (!bp) goto fail;
      caffe__blob_proto__init(bp);
      lp->blobs[lp->n_blobs++] = bp;
      if (dd_tensor_to_proto(l->params[b], bp, with_diff)) goto fail;
    }
  }
  return p;
fail:
  caffe__net_parameter__free_unpacked(p, NULL);
  return NULL;
}

int dd_net_share_params(dd_net *n, const dd_net *src, char *err, size_t errlen) {
  for (size_t i = 0; i < n->n_layers; i++) {
    dd_layer *l = &n->layers[i];
    if (!l->n_params) continue;
    int si = dd_net_layer_index(src, l->name);
    if (si < 0) continue;
    const dd_layer *s = &src->layers[si];
    if (s->n_params != l->n_params)
      return dd_errorf(DD_ESHAPE, err, errlen, "layer \"%s\" has %d parameter blobs in one net and %d in the other",
                       l->name, l->n_params, s->n_params);
    for (int p = 0; p < l->n_params; p++) {
      if (!dd_shape_equal(&l->params[p]->shape, &s->params[p]->shape)) {
        char a[64], b[64];
        return dd_errorf(DD_ESHAPE, err, errlen, "layer \"%s\" parameter %d is %s in one net and %s in the other",
                         l->name, p, dd_shape_str(&l->params[p]->shape, a, sizeof a),
                         dd_shape_str(&s->params[p]->shape, b, sizeof b));
      }
      dd_tensor_share(l->params[p], s->params[p]);
    }
  }
  return 0;
}
