/* Convolution geometry shared by Convolution, Deconvolution and Im2col: Caffe's kernel, pad,
 * stride and dilation fields (repeated, or _h/_w), checked, and the output size of a 2-D window
 * over (N, C, H, W). */
#ifndef DD_LAYERS_CONV_GEOM_H
#define DD_LAYERS_CONV_GEOM_H

#include "net/layer.h"

/* Kernel, pad, stride and dilation (each [h, w]); 0 or an error naming the field (dd_shape_fail). */
int dd__conv_geometry(dd_shape_ctx *c, const Caffe__ConvolutionParameter *p, int64_t k[2], int64_t pad[2],
                      int64_t st[2], int64_t dil[2]);
/* What Convolution and Deconvolution check first (`what` names the layer kind in messages):
 * num_output, the geometry, group, the bias parameter's shape and n_params. Returns 0 or an
 * error; *b is the bottom's shape, or NULL when it is not known yet (then the tops and the weight
 * shape are set unknown and the caller is done). */
int dd__conv_shape_begin(dd_shape_ctx *c, const char *what, const Caffe__ConvolutionParameter **pp, const dd_shape **bp,
                         int64_t k[2], int64_t pad[2], int64_t st[2], int64_t dil[2]);
/* o[i] = (b->dims[2 + i] + 2 pad - (dil (k - 1) + 1)) / st + 1, checked (the kernel must fit). */
int dd__conv_out(dd_shape_ctx *c, const dd_shape *b, const int64_t k[2], const int64_t pad[2], const int64_t st[2],
                 const int64_t dil[2], int64_t o[2]);

#endif
