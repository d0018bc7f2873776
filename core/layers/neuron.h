/* What the catalogue's elementwise neuron layers share (Sigmoid, TanH, ELU, Power, AbsVal, BNLL,
 * Exp, Log, Threshold, Clip, Swish; core/layers/neuron.c): each layer's file has only its
 * parameter rule, a function that turns the prototxt into the backend's dd_neuron_desc (with
 * Caffe's defaults and checks, naming the field on error), and DD_NEURON_LAYER, which builds its
 * ops table: top shape = bottom shape; forward and backward through the backend's neuron kernels.
 * In place (top == bottom) works for every one of them, also where Caffe's backward would read
 * the overwritten input: the layer keeps a copy of the input when its backward needs it. */
#ifndef DD_LAYERS_NEURON_H
#define DD_LAYERS_NEURON_H

#include "net/layer.h"

/* Fills *d from lp; 0, or a message in err (without the layer's name) and DD_EINVAL. */
typedef int (*dd_neuron_params_fn)(const Caffe__LayerParameter *lp, dd_neuron_desc *d, char *err, size_t errlen);

typedef struct {
  dd_neuron_desc d;
  float *saved; /* the input, when in place and the backward needs it */
  size_t saved_cap;
} dd_neuron_priv;

int dd__neuron_shape(dd_shape_ctx *c, dd_neuron_params_fn fn);
int dd__neuron_setup(dd_layer *l, dd_neuron_params_fn fn, int needs_x, char *err, size_t errlen);
void dd__neuron_forward(dd_layer *l, int needs_x);
void dd__neuron_backward(dd_layer *l, int needs_x);
void dd__neuron_destroy(dd_layer *l);

/* The ops table dd_layer_<name> for prototxt type `type`; `needs_x`: the backward reads the input. */
#define DD_NEURON_LAYER(name, type_str, params_fn, needs_x, has_backward)                              \
  static int name##_shape(dd_shape_ctx *c) { return dd__neuron_shape(c, params_fn); }                \
  static int name##_setup(dd_layer *l, char *err, size_t errlen) {                                    \
    return dd__neuron_setup(l, params_fn, needs_x, err, errlen);                                      \
  }                                                                                                   \
  static void name##_forward(dd_layer *l) { dd__neuron_forward(l, needs_x); }                          \
  static void name##_backward(dd_layer *l) { dd__neuron_backward(l, needs_x); }                        \
  const dd_layer_ops dd_layer_##name = {.type = type_str, .min_bottoms = 1, .max_bottoms = 1,          \
                                        .min_tops = 1, .max_tops = 1, .shape = name##_shape,          \
                                        .priv_size = sizeof(dd_neuron_priv), .setup = name##_setup,   \
                                        .forward = name##_forward,                                    \
                                        .backward = (has_backward) ? name##_backward : NULL,          \
                                        .destroy = dd__neuron_destroy}

#endif
