/* Building Caffe layer messages in code (for the nets core assembles itself: the trainer's Input
 * layers and distillation terms). Each message is allocated the way protobuf-c's unpacker does
 * (malloc, strdup), so caffe__layer_parameter__free_unpacked(lp, NULL) frees it. Names are copied
 * as they are: nothing is printed to text and parsed back, so any name Caffe allows works. */
#ifndef DD_LAYER_BUILD_H
#define DD_LAYER_BUILD_H

#include "caffe.pb-c.h"
#include "net/shape.h"

/* A layer `name` of `type`, included in `phase` only (phase < 0: every phase). NULL: no memory. */
Caffe__LayerParameter *dd_layer_new(const char *name, const char *type, int phase);
/* These return 0, or DD_ENOMEM. */
int dd_layer_add_bottom(Caffe__LayerParameter *lp, const char *blob);
int dd_layer_add_top(Caffe__LayerParameter *lp, const char *blob);
int dd_layer_add_loss_weight(Caffe__LayerParameter *lp, float w);
/* Adds `s` to the layer's input_param { shape { dim ... } } list (creating input_param). */
int dd_layer_add_input_shape(Caffe__LayerParameter *lp, const dd_shape *s);
/* Appends `lp` to `net` (which takes it over; on failure it is freed). */
int dd_net_append_layer(Caffe__NetParameter *net, Caffe__LayerParameter *lp);

#endif
