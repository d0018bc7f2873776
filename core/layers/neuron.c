/* The elementwise neuron layers' shared shape, setup, forward and backward (core/layers/neuron.h). */
#include <string.h>

#include "base/dd_error.h"
#include "layers/neuron.h"

int dd__neuron_shape(dd_shape_ctx *c, dd_neuron_params_fn fn) {
  dd_neuron_desc d;
  if (fn(c->lp, &d, c->err, c->errlen)) return DD_EINVAL;
  c->tops[0] = c->bottoms[0];
  return 0;
}

int dd__neuron_setup(dd_layer *l, dd_neuron_params_fn fn, int needs_x, char *err, size_t errlen) {
  dd_neuron_priv *p = l->priv;
  if (fn(l->lp, &p->d, err, errlen)) return DD_EINVAL;
  int r = dd__need_kernel(l, (const void *)l->be->ops->neuron_forward, l->ops->type, err, errlen);
  if (!r && l->ops->backward) r = dd__need_kernel(l, (const void *)l->be->ops->neuron_backward, l->ops->type, err, errlen);
  if (!r && needs_x && l->top[0] == l->bottom[0] && l->ops->backward)
    if (dd__ensure_buffer(l->be, (void **)&p->saved, &p->saved_cap, (size_t)l->bottom[0]->count * sizeof(float)))
      r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  return r;
}

void dd__neuron_forward(dd_layer *l, int needs_x) {
  dd_neuron_priv *p = l->priv;
  dd_tensor *b = l->bottom[0], *t = l->top[0];
  if (p->saved && needs_x && t == b) l->be->ops->copy(l->be, p->saved, b->data, (size_t)b->count * sizeof(float));
  l->be->ops->neuron_forward(l->be, &p->d, b->count, t->data, b->data);
}

void dd__neuron_backward(dd_layer *l, int needs_x) {
  if (!l->propagate_down[0]) return;
  dd_neuron_priv *p = l->priv;
  dd_tensor *b = l->bottom[0], *t = l->top[0];
  const float *x = t == b ? (needs_x ? p->saved : t->data) : b->data;
  l->be->ops->neuron_backward(l->be, &p->d, b->count, b->diff, t->diff, x, t->data);
}

void dd__neuron_destroy(dd_layer *l) {
  dd_neuron_priv *p = l->priv;
  if (p->saved) l->be->ops->free(l->be, p->saved);
  p->saved = NULL;
}
