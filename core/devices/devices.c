/* The built-in device registry (see devices.h): the one place that knows which backends this build
 * has (the CUDA backend's presence is the build's DD_HAVE_CUDA). */
#include "devices/devices.h"

#include <stdio.h>
#include <string.h>

#include "base/dd_error.h"
#ifdef DD_HAVE_CUDA
#include "dd_cuda.h"
#endif

static int registry__backend_create(dd_backend **out, const char *device, int threads, char *err, size_t errlen) {
  *out = NULL;
  int kind, index, r;
  if ((r = dd_device_parse(device, &kind, &index, "device", err, errlen))) return r;
  if (kind == DD_DEVICE_CPU) {
    r = dd_cpu_backend_create(out, threads);
    if (r) dd_errorf(r, err, errlen, "cpu: cannot start the CPU backend (%s)", dd_strerror(r));
    return r;
  }
#ifdef DD_HAVE_CUDA
  return dd_cuda_backend_create(out, index, err, errlen);
#else
  return dd_errorf(DD_EUNSUPPORTED, err, errlen,
                   "device \"%s\": this build of distilld has no CUDA backend (build it where CMake finds the CUDA "
                   "toolkit, or use \"cpu\")",
                   device);
#endif
}

static int registry__comm_group_create(dd_comm **comms, int local, const char *const *devices, const dd_rendezvous *rv,
                                       int timeout_ms, char *err, size_t errlen) {
  int nodes = rv ? rv->nodes : 1;
  if (rv && (rv->nodes < 1 || rv->node < 0 || rv->node >= rv->nodes))
    return dd_errorf(DD_EINVAL, err, errlen, "node %d of %d: out of range", rv->node, rv->nodes);
  if (local < 1 || local > 64) return dd_errorf(DD_EINVAL, err, errlen, "device: %d ranks per node (1 to 64)", local);
  int n_cpu = 0, dev[64];
  for (int r = 0; r < local; r++) {
    int kind, rc = dd_device_parse(devices[r], &kind, &dev[r], "device", err, errlen);
    if (rc) return rc;
    n_cpu += kind == DD_DEVICE_CPU;
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
  if (nodes > 1) return dd_nccl_comm_group_create_nodes(comms, local, dev, rv, err, errlen);
  return dd_nccl_comm_group_create(comms, local, dev, err, errlen);
#else
  (void)timeout_ms;
  return dd_errorf(DD_EUNSUPPORTED, err, errlen, "device: GPU ranks need the CUDA backend, which this build lacks");
#endif
}

#ifdef DD_HAVE_CUDA
#define REGISTRY__HAVE_CUDA 1
#else
#define REGISTRY__HAVE_CUDA 0
#endif

static const dd_devices registry__builtin = {
    .have_cuda = REGISTRY__HAVE_CUDA,
    .backend_create = registry__backend_create,
    .comm_group_create = registry__comm_group_create,
};

const dd_devices *dd_devices_builtin(void) { return &registry__builtin; }

int dd_backend_have_cuda(void) { return registry__builtin.have_cuda; }

int dd_backend_create(dd_backend **out, const char *device, int threads, char *err, size_t errlen) {
  return registry__backend_create(out, device, threads, err, errlen);
}

int dd_comm_group_create(dd_comm **comms, int size, const char *const *devices, int timeout_ms, char *err, size_t errlen) {
  return registry__comm_group_create(comms, size, devices, NULL, timeout_ms, err, errlen);
}

int dd_comm_group_create_nodes(dd_comm **comms, int local, const char *const *devices, const dd_rendezvous *rv,
                               int timeout_ms, char *err, size_t errlen) {
  return registry__comm_group_create(comms, local, devices, rv, timeout_ms, err, errlen);
}
