/* Tensors (Caffe's blobs): an N-d shape with data and diff arrays in backend memory. Memory is
 * allocated when a tensor is first shaped and reused afterwards; reshaping to a size that fits
 * the capacity allocates nothing, so steady-state iterations never allocate. */
#ifndef DD_TENSOR_H
#define DD_TENSOR_H

#include <stdint.h>

#include "base/backend.h"
#include "net/shape.h"

typedef struct dd_tensor {
  char *name;
  dd_shape shape;
  int64_t count;    /* elements in shape */
  int64_t capacity; /* elements allocated */
  float *data;      /* backend memory, capacity floats */
  float *diff;      /* backend memory, capacity floats */
  dd_backend *be;
  int shared;       /* data/diff belong to another tensor (shared parameters): not freed */
  int data_shared;  /* only data belongs to another tensor (Split tops): data not freed */
} dd_tensor;

/* Creates an empty tensor named `name` (copied) on `be`. Returns NULL when out of memory. */
dd_tensor *dd_tensor_create(dd_backend *be, const char *name);

/* Sets the shape, growing the arrays (zeroed) when the count exceeds the capacity. Returns 0 or
 * DD_ENOMEM / DD_EINVAL (an unknown shape) / DD_ESHAPE (a negative dim, a dim or a count over
 * DD_SHAPE_MAX_COUNT). */
int dd_tensor_reshape(dd_tensor *t, const dd_shape *shape);

void dd_tensor_destroy(dd_tensor *t);

/* Makes `t` use `src`'s data and diff (Caffe's ShareData/ShareDiff for shared parameters). */
void dd_tensor_share(dd_tensor *t, const dd_tensor *src);

/* Makes `t` read `src`'s data (Caffe's ShareData for Split tops); t keeps its own diff. The
 * shapes must be equal. */
void dd_tensor_share_data(dd_tensor *t, const dd_tensor *src);

/* Host copies: count floats. */
void dd_tensor_get_data(const dd_tensor *t, float *host);
void dd_tensor_set_data(dd_tensor *t, const float *host);
void dd_tensor_get_diff(const dd_tensor *t, float *host);
void dd_tensor_set_diff(dd_tensor *t, const float *host);
/* New host copies (malloc'd, count floats; free with free()) of the data or the diff; NULL when
 * out of memory. */
float *dd_tensor_data_copy(const dd_tensor *t);
float *dd_tensor_diff_copy(const dd_tensor *t);

#endif
