/* Trained models compared by the tests that run whole jobs (tests/test_multinode.c,
 * tests/test_cuda_train.c, tests/test_distill.c): reading a .caffemodel
 * (test_read_model) and the largest relative difference between two models' blobs
 * (test_model_diff). */
#ifndef DD_TEST_MODELS_H
#define DD_TEST_MODELS_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "format/caffe_io.h"

/* The .caffemodel at `path` (the caller frees it with caffe__net_parameter__free_unpacked); NULL
 * when it cannot be read, with core's message printed. */
static inline Caffe__NetParameter *test_read_model(const char *path) {
  char err[1024];
  Caffe__NetParameter *m = NULL;
  if (dd_caffemodel_read(&m, path, err, sizeof err)) fprintf(stderr, "%s\n", err);
  return m;
}

/* The largest relative difference over every blob of two models with the same layers (per blob,
 * the largest difference over the largest magnitude, at least 1e-6); INFINITY when either is NULL
 * or their layers, blob counts or blob sizes differ. *bits_equal (when given) says whether every
 * value is the same bits in both. */
static inline double test_model_diff(const Caffe__NetParameter *a, const Caffe__NetParameter *b, int *bits_equal) {
  int same = 1;
  if (bits_equal) *bits_equal = 0;
  if (!a || !b || a->n_layer != b->n_layer) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a->n_layer; i++) {
    const Caffe__LayerParameter *la = a->layer[i], *lb = b->layer[i];
    if (la->n_blobs != lb->n_blobs) return INFINITY;
    for (size_t k = 0; k < la->n_blobs; k++) {
      const Caffe__BlobProto *x = la->blobs[k], *y = lb->blobs[k];
      if (x->n_data != y->n_data) return INFINITY;
      double scale = 1e-6, d = 0;
      for (size_t e = 0; e < x->n_data; e++) scale = fmax(scale, fabs(x->data[e]));
      for (size_t e = 0; e < x->n_data; e++) {
        if (memcmp(&x->data[e], &y->data[e], sizeof(float))) same = 0;
        d = fmax(d, fabs((double)x->data[e] - y->data[e]));
      }
      worst = fmax(worst, d / scale);
    }
  }
  if (bits_equal) *bits_equal = same;
  return worst;
}

#endif
