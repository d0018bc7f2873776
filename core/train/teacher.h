/* The frozen teacher: a deploy-style net built so that it cannot change. Its BatchNorm layers use
 * their stored statistics whatever the prototxt says, it runs in the TEST phase (dropout off), it
 * has no backward pass and its parameters belong to no solver. Because nothing in it moves,
 * BatchNorm + Scale pairs are folded: into the convolution before them where that convolution
 * feeds only the BatchNorm (w' = w * a, b' = (b - mean) * a + beta, a = gamma / sqrt(var + eps)),
 * otherwise into one per-channel Scale with bias. A checksum of all its parameters, taken when it
 * is built, proves afterwards that nothing changed them. */
#ifndef DD_TEACHER_H
#define DD_TEACHER_H

#include <stddef.h>
#include <stdint.h>

#include "base/backend.h"
#include "caffe.pb-c.h"
#include "net/net.h"

typedef struct {
  dd_net *net;
  uint64_t checksum;  /* of every parameter's bytes, after folding */
  int folded_conv;    /* BatchNorm + Scale pairs folded into a convolution */
  int folded_scale;   /* pairs folded into a single Scale */
} dd_teacher;

/* Builds the teacher from `deploy` and the weights files `weights` (applied in order, later
 * files win, as Caffe's --weights a,b), with folding when `fold`. Every parameter layer must get
 * weights from the files (a teacher with filler values is an error naming the layer). Returns 0
 * or an error with a message. */
int dd_teacher_create(dd_teacher *t, const Caffe__NetParameter *deploy, const char *const *weights,
                      size_t n_weights, dd_backend *be, int fold, char *err, size_t errlen);
void dd_teacher_destroy(dd_teacher *t);

/* The checksum of a net's parameters (FNV-1a over the bytes of every parameter's data, in layer
 * order). */
uint64_t dd_net_param_checksum(const dd_net *n);

/* Verifies the teacher's checksum; DD_ECORRUPT with a message when its parameters changed. */
int dd_teacher_verify(const dd_teacher *t, char *err, size_t errlen);

#endif
