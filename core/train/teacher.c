/* The frozen teacher (see teacher.h). Folding works on the built, unfolded net: its graph says
 * which BatchNorm feeds which Scale and what produced the BatchNorm's input (a blob with several
 * consumers has a Split in between, so a direct producer is a sole producer); the folded
 * NetParameter is the unfolded one (splits included) minus the folded layers, and its weights are
 * computed from the unfolded net's. */
#define _POSIX_C_SOURCE 200809L
#include "train/teacher.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "format/caffe_io.h"
#include "base/dd_error.h"

uint64_t dd_net_param_checksum(const dd_net *n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t p = 0; p < n->n_params; p++) {
    const dd_tensor *t = n->params[p].t;
    float buf[1024];
    for (int64_t k0 = 0; k0 < t->count; k0 += 1024) {
      int64_t k = t->count - k0 < 1024 ? t->count - k0 : 1024;
      t->be->ops->download(t->be, buf, t->data + k0, (size_t)k * sizeof(float));
      const unsigned char *b = (const unsigned char *)buf;
      for (size_t i = 0; i < (size_t)k * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ull;
    }
  }
  return h;
}

int dd_teacher_verify(const dd_teacher *t, char *err, size_t errlen) {
  uint64_t now = dd_net_param_checksum(t->net);
  if (now != t->checksum)
    return dd_errorf(DD_ECORRUPT, err, errlen,
                     "the teacher's parameters changed during the job (checksum %016llx, %016llx at load): "
                     "the frozen teacher must never move; this is a bug in distilld, please report it",
                     (unsigned long long)now, (unsigned long long)t->checksum);
  return 0;
}

static int is(const dd_glayer *l, const char *type) { return l->ops && !strcmp(l->ops->type, type); }

typedef struct {
  int bn, scale, conv; /* layer indexes in the unfolded net; conv -1 for a Scale-only fold */
} fold_plan;

/* Per-channel a = gamma / sqrt(var + eps) and c = beta - mean * a of a BatchNorm + Scale pair. */
static int bn_scale_coeffs(const dd_net *n, const fold_plan *f, float **a, float **c, int64_t *ch) {
  const dd_layer *bn = &n->layers[f->bn], *sc = &n->layers[f->scale];
  float *mean = dd_tensor_data_copy(bn->params[0]), *var = dd_tensor_data_copy(bn->params[1]), *fac = dd_tensor_data_copy(bn->params[2]);
  float *gamma = dd_tensor_data_copy(sc->params[0]), *beta = sc->n_params > 1 ? dd_tensor_data_copy(sc->params[1]) : NULL;
  int64_t C = bn->params[0]->count;
  *a = malloc((size_t)C * sizeof **a);
  *c = malloc((size_t)C * sizeof **c);
  int ok = mean && var && fac && gamma && *a && *c && (sc->n_params < 2 || beta);
  if (ok) {
    const Caffe__BatchNormParameter *bp = bn->lp->batch_norm_param;
    float eps = bp ? bp->eps : 1e-5f, s = fac[0] == 0 ? 0 : 1.0f / fac[0];
    for (int64_t k = 0; k < C; k++) {
      double inv = 1.0 / sqrt((double)var[k] * s + eps);
      (*a)[k] = (float)(gamma[k] * inv);
      (*c)[k] = (float)((beta ? beta[k] : 0.0) - (double)mean[k] * s * gamma[k] * inv);
    }
  }
  free(mean);
  free(var);
  free(fac);
  free(gamma);
  free(beta);
  *ch = C;
  return ok ? 0 : DD_ENOMEM;
}

static int replace_str(char **dst, const char *src) {
  char *n = strdup(src);
  if (!n) return DD_ENOMEM;
  free(*dst);
  *dst = n;
  return 0;
}

/* Builds the folded net from the unfolded one. */
static int fold_net(dd_net **out, dd_net *n0, dd_backend *be, int *n_conv, int *n_scale, char *err, size_t errlen) {
  const dd_net_graph *g = n0->graph;
  fold_plan *plans = calloc(g->n_layers + 1, sizeof *plans);
  unsigned char *drop = calloc(g->n_layers + 1, 1);
  int np = 0, r = 0;
  if (!plans || !drop) {
    free(plans);
    free(drop);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  for (size_t i = 0; i < g->n_layers; i++) {
    const dd_glayer *bn = &g->layers[i];
    if (!is(bn, "BatchNorm")) continue;
    int sc = -1;
    for (size_t j = i + 1; j < g->n_layers && sc < 0; j++)
      for (int b = 0; b < g->layers[j].nb; b++)
        if (g->layers[j].bottom[b] == bn->top[0] && g->layers[j].bottom_producer[b] == (int)i) sc = (int)j;
    if (sc < 0 || !is(&g->layers[sc], "Scale") || g->layers[sc].nb != 1) continue;
    const Caffe__ScaleParameter *sp = g->layers[sc].lp->scale_param;
    if (sp && (sp->axis != 1 || sp->num_axes != 1)) continue;
    int prod = bn->bottom_producer[0];
    int conv = prod >= 0 && is(&g->layers[prod], "Convolution") ? prod : -1;
    plans[np++] = (fold_plan){(int)i, sc, conv};
    drop[i] = 1;
    if (conv >= 0) drop[sc] = 1;
  }
  Caffe__NetParameter *p = (Caffe__NetParameter *)dd_proto_copy(&n0->param->base);
  if (!p) {
    free(plans);
    free(drop);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  /* rewire: a folded conv writes the Scale's top; a Scale-only fold reads the BatchNorm's bottom */
  for (int k = 0; k < np && !r; k++) {
    Caffe__LayerParameter *bn = p->layer[plans[k].bn], *sc = p->layer[plans[k].scale];
    if (plans[k].conv >= 0) {
      Caffe__LayerParameter *cv = p->layer[plans[k].conv];
      r = replace_str(&cv->top[0], sc->top[0]);
      cv->convolution_param->has_bias_term = 1;
      cv->convolution_param->bias_term = 1;
    } else {
      r = replace_str(&sc->bottom[0], bn->bottom[0]);
      if (!sc->scale_param) {
        sc->scale_param = malloc(sizeof *sc->scale_param);
        if (!sc->scale_param) r = DD_ENOMEM;
        else caffe__scale_parameter__init(sc->scale_param);
      }
      if (!r) {
        sc->scale_param->has_bias_term = 1;
        sc->scale_param->bias_term = 1;
      }
    }
  }
  size_t kept = 0;
  for (size_t i = 0; i < p->n_layer; i++) {
    if (drop[i])
      caffe__layer_parameter__free_unpacked(p->layer[i], NULL);
    else
      p->layer[kept++] = p->layer[i];
  }
  p->n_layer = kept;
  dd_net *n1 = NULL;
  if (r == 0) r = dd_net_create(&n1, p, CAFFE__PHASE__TEST, be, 1, NULL, err, errlen);
  caffe__net_parameter__free_unpacked(p, NULL);
  /* weights: computed for folded layers, copied for the rest */
  for (size_t i = 0; r == 0 && i < n1->n_layers; i++) {
    dd_layer *l = &n1->layers[i];
    if (!l->n_params) continue;
    int src = dd_net_layer_index(n0, l->name);
    const fold_plan *f = NULL;
    for (int k = 0; k < np; k++)
      if ((plans[k].conv >= 0 && !strcmp(n0->layers[plans[k].conv].name, l->name)) ||
          (plans[k].conv < 0 && !strcmp(n0->layers[plans[k].scale].name, l->name)))
        f = &plans[k];
    if (!f) {
      for (int b = 0; b < l->n_params; b++) be->ops->copy(be, l->params[b]->data, n0->layers[src].params[b]->data,
                                                          (size_t)l->params[b]->count * sizeof(float));
      continue;
    }
    float *a, *c;
    int64_t C;
    if ((r = bn_scale_coeffs(n0, f, &a, &c, &C))) {
      free(a);
      free(c);
      dd_errorf(r, err, errlen, "out of memory");
      break;
    }
    if (f->conv >= 0) {
      const dd_layer *cv = &n0->layers[f->conv];
      float *w = dd_tensor_data_copy(cv->params[0]), *b = cv->n_params > 1 ? dd_tensor_data_copy(cv->params[1]) : calloc((size_t)C, sizeof(float));
      if (!w || !b) r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
      int64_t per = C ? cv->params[0]->count / C : 0;
      for (int64_t o = 0; r == 0 && o < C; o++) {
        for (int64_t k = 0; k < per; k++) w[o * per + k] *= a[o];
        b[o] = b[o] * a[o] + c[o];
      }
      if (!r) {
        dd_tensor_set_data(l->params[0], w);
        dd_tensor_set_data(l->params[1], b);
        (*n_conv)++;
      }
      free(w);
      free(b);
    } else {
      dd_tensor_set_data(l->params[0], a);
      dd_tensor_set_data(l->params[1], c);
      (*n_scale)++;
    }
    free(a);
    free(c);
  }
  free(plans);
  free(drop);
  if (r) {
    dd_net_destroy(n1);
    return r;
  }
  *out = n1;
  return 0;
}

int dd_teacher_create(dd_teacher *t, const Caffe__NetParameter *deploy, const char *const *weights, size_t n_weights,
                      dd_backend *be, int fold, char *err, size_t errlen) {
  memset(t, 0, sizeof *t);
  Caffe__NetParameter *p = (Caffe__NetParameter *)dd_proto_copy(&deploy->base);
  if (!p) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  /* Frozen by construction: every BatchNorm on its stored statistics. */
  int r = 0;
  for (size_t i = 0; i < p->n_layer && !r; i++) {
    Caffe__LayerParameter *lp = p->layer[i];
    if (!lp->type || strcmp(lp->type, "BatchNorm")) continue;
    if (!lp->batch_norm_param) {
      lp->batch_norm_param = malloc(sizeof *lp->batch_norm_param);
      if (!lp->batch_norm_param) {
        r = DD_ENOMEM;
        break;
      }
      caffe__batch_norm_parameter__init(lp->batch_norm_param);
    }
    lp->batch_norm_param->has_use_global_stats = 1;
    lp->batch_norm_param->use_global_stats = 1;
  }
  dd_net *n0 = NULL;
  if (r == 0) r = dd_net_create(&n0, p, CAFFE__PHASE__TEST, be, 1, NULL, err, errlen);
  else dd_errorf(r, err, errlen, "out of memory");
  caffe__net_parameter__free_unpacked(p, NULL);
  if (r) return r;
  unsigned char *covered = calloc(n0->n_layers + 1, 1);
  if (!covered) r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  for (size_t f = 0; f < n_weights && !r; f++) {
    Caffe__NetParameter *w = NULL;
    if ((r = dd_caffemodel_read(&w, weights[f], err, errlen))) break;
    r = dd_net_copy_from(n0, w, weights[f], NULL, err, errlen);
    dd_weight_layer *wl = NULL;
    size_t nw = 0;
    if (!r && dd_weight_layers(&wl, &nw, w, NULL, 0) == 0)
      for (size_t k = 0; k < nw; k++) {
        int li = dd_net_layer_index(n0, wl[k].name);
        if (li >= 0 && wl[k].n_blobs) covered[li] = 1;
      }
    free(wl);
    caffe__net_parameter__free_unpacked(w, NULL);
  }
  for (size_t i = 0; i < n0->n_layers && !r; i++)
    if (n0->layers[i].n_params && !covered[i])
      r = dd_errorf(DD_EINVAL, err, errlen,
                    "teacher layer \"%s\" (%s) gets no weights from the teacher's .caffemodel files: a teacher must be "
                    "fully trained (renamed layer?)",
                    n0->layers[i].name, n0->layers[i].lp->type);
  free(covered);
  if (r) {
    dd_net_destroy(n0);
    return r;
  }
  if (fold) {
    dd_net *n1 = NULL;
    r = fold_net(&n1, n0, be, &t->folded_conv, &t->folded_scale, err, errlen);
    dd_net_destroy(n0);
    if (r) return r;
    n0 = n1;
  }
  t->net = n0;
  t->checksum = dd_net_param_checksum(n0);
  return 0;
}

void dd_teacher_destroy(dd_teacher *t) {
  if (!t) return;
  dd_net_destroy(t->net);
  memset(t, 0, sizeof *t);
}
