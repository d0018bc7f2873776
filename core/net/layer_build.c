/* Building Caffe layer messages in code (see layer_build.h). */
#define _POSIX_C_SOURCE 200809L
#include "net/layer_build.h"

#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"

/* Appends `v` (size `sz`) to the array *arr of *n elements. */
static int push(void **arr, size_t *n, const void *v, size_t sz) {
  char *a = realloc(*arr, (*n + 1) * sz);
  if (!a) return DD_ENOMEM;
  memcpy(a + *n * sz, v, sz);
  *arr = a;
  (*n)++;
  return 0;
}

static int push_str(char ***arr, size_t *n, const char *s) {
  char *c = strdup(s);
  if (!c) return DD_ENOMEM;
  int r = push((void **)arr, n, &c, sizeof c);
  if (r) free(c);
  return r;
}

Caffe__LayerParameter *dd_layer_new(const char *name, const char *type, int phase) {
  Caffe__LayerParameter *lp = malloc(sizeof *lp);
  if (!lp) return NULL;
  caffe__layer_parameter__init(lp);
  lp->name = strdup(name);
  lp->type = strdup(type);
  if (!lp->name || !lp->type) goto oom;
  if (phase >= 0) {
    Caffe__NetStateRule *rule = malloc(sizeof *rule);
    if (!rule) goto oom;
    caffe__net_state_rule__init(rule);
    rule->has_phase = 1;
    rule->phase = (Caffe__Phase)phase;
    if (push((void **)&lp->include, &lp->n_include, &rule, sizeof rule)) {
      free(rule);
      goto oom;
    }
  }
  return lp;
oom:
  caffe__layer_parameter__free_unpacked(lp, NULL);
  return NULL;
}

int dd_layer_add_bottom(Caffe__LayerParameter *lp, const char *blob) { return push_str(&lp->bottom, &lp->n_bottom, blob); }
int dd_layer_add_top(Caffe__LayerParameter *lp, const char *blob) { return push_str(&lp->top, &lp->n_top, blob); }
int dd_layer_add_loss_weight(Caffe__LayerParameter *lp, float w) {
  return push((void **)&lp->loss_weight, &lp->n_loss_weight, &w, sizeof w);
}

int dd_layer_add_input_shape(Caffe__LayerParameter *lp, const dd_shape *s) {
  if (!lp->input_param) {
    if (!(lp->input_param = malloc(sizeof *lp->input_param))) return DD_ENOMEM;
    caffe__input_parameter__init(lp->input_param);
  }
  Caffe__BlobShape *b = malloc(sizeof *b);
  if (!b) return DD_ENOMEM;
  caffe__blob_shape__init(b);
  for (int i = 0; i < s->ndim; i++) {
    int64_t d = s->dims[i];
    if (push((void **)&b->dim, &b->n_dim, &d, sizeof d)) {
      caffe__blob_shape__free_unpacked(b, NULL);
      return DD_ENOMEM;
    }
  }
  if (push((void **)&lp->input_param->shape, &lp->input_param->n_shape, &b, sizeof b)) {
    caffe__blob_shape__free_unpacked(b, NULL);
    return DD_ENOMEM;
  }
  return 0;
}

int dd_net_append_layer(Caffe__NetParameter *net, Caffe__LayerParameter *lp) {
  if (!lp) return DD_ENOMEM;
  int r = push((void **)&net->layer, &net->n_layer, &lp, sizeof lp);
  if (r) caffe__layer_parameter__free_unpacked(lp, NULL);
  return r;
}
