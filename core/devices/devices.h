/* The built-in device registry (library dd_devices): the one place that knows which backends this
 * build has. "cpu" is core's CPU backend; "cuda:N" is the CUDA backend (cuda/) when the build has
 * it (DD_HAVE_CUDA), else refused with a message saying so. It links dd_core and dd_cuda; dd_core
 * links neither, and asks for devices only through a dd_devices table (core/base/device.h). */
#ifndef DD_DEVICES_H
#define DD_DEVICES_H

#include <stddef.h>

#include "base/device.h"
#include "comm/collective.h"

/* The registry of this build, for the job entry point and the ranks (core/train/job.h). */
const dd_devices *dd_devices_builtin(void);

/* Shorthands through dd_devices_builtin(), for the CLI, the tests and the benchmarks. */
int dd_backend_create(dd_backend **out, const char *device, int threads, char *err, size_t errlen);
int dd_comm_group_create(dd_comm **comms, int size, const char *const *devices, int timeout_ms, char *err, size_t errlen);
int dd_comm_group_create_nodes(dd_comm **comms, int local, const char *const *devices, const dd_rendezvous *rv,
                               int timeout_ms, char *err, size_t errlen);
/* 1 when this build has the CUDA backend. */
int dd_backend_have_cuda(void);

#endif
