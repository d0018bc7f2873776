/* Where backends are registered: the one place that knows which backends this build has (the
 * CUDA backend's presence is the build's DD_HAVE_CUDA). Everything else asks for a device by
 * name. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "collective.h"
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

/* ---- collectives: the same one place decides ---------------------------------------------------- */

int dd_comm_group_create(dd_comm **comms, int size, const char *const *devices, int timeout_ms, char *err, size_t errlen) {
  return dd_comm_group_create_nodes(comms, size, devices, NULL, timeout_ms, err, errlen);
}

int dd_comm_group_create_nodes(dd_comm **comms, int local, const char *const *devices, const dd_rendezvous *rv,
                               int timeout_ms, char *err, size_t errlen) {
  int nodes = rv ? rv->nodes : 1;
  if (rv && (rv->nodes < 1 || rv->node < 0 || rv->node >= rv->nodes))
    return dd_errorf(DD_EINVAL, err, errlen, "node %d of %d: out of range", rv->node, rv->nodes);
  if (local < 1 || local > 64) return dd_errorf(DD_EINVAL, err, errlen, "device: %d ranks per node (1 to 64)", local);
  int n_cpu = 0;
  for (int r = 0; r < local; r++) {
    if (!strcmp(devices[r], "cpu"))
      n_cpu++;
    else if (strncmp(devices[r], "cuda:", 5))
      return dd_errorf(DD_EINVAL, err, errlen, "device \"%s\": expected \"cpu\" or \"cuda:N\"", devices[r]);
  }
  if (n_cpu && n_cpu != local)
    return dd_errorf(DD_EINVAL, err, errlen, "device: a job's ranks are all \"cpu\" or all \"cuda:N\"");
  if (n_cpu && nodes > 1) return dd_tcp_comm_group_create(comms, local, rv, timeout_ms, err, errlen);
  if (n_cpu) {
    int r = dd_cpu_comm_group_create(comms, local, timeout_ms);
    if (r) dd_errorf(r, err, errlen, "cannot create the CPU collective (%s)", dd_strerror(r));
    return r;
  }
#ifdef DD_HAVE_CUDA
  int dev[64];
  for (int r = 0; r < local; r++) dev[r] = atoi(devices[r] + 5);
  if (nodes > 1) return dd_nccl_comm_group_create_nodes(comms, local, dev, rv, err, errlen);
  return dd_nccl_comm_group_create(comms, local, dev, err, errlen);
#else
  (void)timeout_ms;
  return dd_errorf(DD_EUNSUPPORTED, err, errlen, "device: GPU ranks need the CUDA backend, which this build lacks");
#endif
}

int dd_comm_bind(dd_comm *c, dd_backend *be, char *err, size_t errlen) {
#ifdef DD_HAVE_CUDA
  if (!strcmp(c->ops->name, "nccl")) return dd_nccl_comm_bind(c, be, err, errlen);
#endif
  (void)c, (void)be, (void)err, (void)errlen;
  return 0;
}

void dd_comm_group_destroy(dd_comm **comms, int size) {
  if (size < 1 || !comms[0]) return;
#ifdef DD_HAVE_CUDA
  if (!strcmp(comms[0]->ops->name, "nccl")) {
    dd_nccl_comm_group_destroy(comms, size);
    return;
  }
#endif
  if (!strcmp(comms[0]->ops->name, "cpu-tcp")) {
    dd_tcp_comm_group_destroy(comms, size);
    return;
  }
  dd_cpu_comm_group_destroy(comms, size);
}
