/* Where backends are registered: the one place that knows which backends this build has (the
 * CUDA backend's presence is the build's DD_HAVE_CUDA). Everything else asks for a device by
 * name. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "dd_error.h"

int dd_backend_have_cuda(void) {
#ifdef DD_HAVE_CUDA
  return 1;
#else
  return 0;
#endif
}

int dd_backend_create(dd_backend **out, const char *device, int threads, char *err, size_t errlen) {
  *out = NULL;
  if (!device || !device[0] || !strcmp(device, "cpu")) {
    int r = dd_cpu_backend_create(out, threads);
    if (r) dd_errorf(r, err, errlen, "cpu: cannot start the CPU backend (%s)", dd_strerror(r));
    return r;
  }
  if (!strncmp(device, "cuda:", 5)) {
    char *end;
    errno = 0;
    long n = strtol(device + 5, &end, 10);
    if (end == device + 5 || *end || errno || n < 0 || n > INT_MAX)
      return dd_errorf(DD_EINVAL, err, errlen, "device \"%s\": expected cuda:N with N a device number", device);
#ifdef DD_HAVE_CUDA
    return dd_cuda_backend_create(out, (int)n, err, errlen);
#else
    return dd_errorf(DD_EUNSUPPORTED, err, errlen,
                     "device \"%s\": this build of distilld has no CUDA backend (build it where CMake finds the CUDA "
                     "toolkit, or use \"cpu\")",
                     device);
#endif
  }
  return dd_errorf(DD_EINVAL, err, errlen, "device \"%s\": expected \"cpu\" or \"cuda:N\"", device);
}

void dd_backend_destroy(dd_backend *be) {
  if (!be) return;
#ifdef DD_HAVE_CUDA
  if (!strcmp(be->ops->name, "cuda")) {
    dd_cuda_backend_destroy(be);
    return;
  }
#endif
  dd_cpu_backend_destroy(be);
}

const char *dd_backend_describe(dd_backend *be) {
#ifdef DD_HAVE_CUDA
  if (!strcmp(be->ops->name, "cuda")) return dd_cuda_backend_describe(be);
#endif
  return dd_cpu_backend_describe(be);
}
