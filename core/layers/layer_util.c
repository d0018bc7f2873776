/* Helpers the layers share (net/layer.h): shape-inference failures, scalar outputs, scratch
 * buffers, label checks. Apart from the registration table (registry.c), so that the table
 * depends on the layers and the layers on these helpers, never the other way. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/dd_error.h"
#include "net/layer.h"

int dd_shape_fail(dd_shape_ctx *c, const char *fmt, ...) {
  if (c->err && c->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
  }
  return DD_ESHAPE;
}

int dd_shape_bottoms_known(const dd_shape_ctx *c) {
  for (int i = 0; i < c->nb; i++)
    if (!dd_shape_known(&c->bottoms[i])) return 0;
  return 1;
}

void dd__set_scalar(dd_tensor *t, float v) { t->be->ops->upload(t->be, t->data, &v, sizeof v); }

int dd__ensure_buffer(dd_backend *be, void **p, size_t *cap, size_t bytes) {
  if (bytes <= *cap && *p) return 0;
  void *n = be->ops->alloc(be, bytes);
  if (!n) return DD_ENOMEM;
  if (*p) be->ops->free(be, *p);
  *p = n;
  *cap = bytes;
  return 0;
}

int dd__check_label_range(dd_layer *l, const dd_tensor *labels, int64_t classes, int has_ignore, int ignore) {
  float buf[1024];
  for (int64_t k0 = 0; k0 < labels->count; k0 += 1024) {
    int64_t n = labels->count - k0 < 1024 ? labels->count - k0 : 1024;
    l->be->ops->download(l->be, buf, labels->data + k0, (size_t)n * sizeof(float));
    for (int64_t k = 0; k < n; k++) {
      float v = buf[k];
      if (has_ignore && v == (float)ignore) continue;
      if (!(v >= 0 && v < (float)classes) || v != (float)(int64_t)v) {
        snprintf(l->status_msg, l->status_len,
                 "layer \"%s\": label %g (position %lld of the batch) is not a class of this net, which has %lld "
                 "(0 to %lld): check the labels in the list file",
                 l->name, v, (long long)(k0 + k), (long long)classes, (long long)classes - 1);
        *l->status = DD_EINVAL;
        return DD_EINVAL;
      }
    }
  }
  return 0;
}

int dd__need_kernel(const dd_layer *l, const void *fn, const char *what, char *err, size_t errlen) {
  if (fn) return 0;
  return dd_errorf(DD_EUNSUPPORTED, err, errlen, "the %s backend has no %s kernel yet (layer type %s)",
                   l->be->ops->name, what, l->ops->type);
}
