/* Device names and the device registry.
 *
 * A job, the CLI (--device) and the daemon config name devices as "cpu" or "cuda:N". The rules for
 * such a name live here, once (dd_device_parse). Which backend a name selects, and which
 * collective joins a set of ranks, is a registry's business: core/ never decides it, so the core
 * library does not depend on the CUDA backend. Callers that run jobs pass a registry; the
 * built-in one (core/devices/devices.h, its own library dd_devices) knows whether this build has
 * the CUDA backend. */
#ifndef DD_DEVICE_H
#define DD_DEVICE_H

#include <stddef.h>

#include "base/backend.h"

struct dd_comm;
struct dd_rendezvous;

enum { DD_DEVICE_CPU = 0, DD_DEVICE_CUDA = 1 };

/* Parses a device name: "cpu" (*kind DD_DEVICE_CPU, *index 0) or "cuda:N" with N a decimal device
 * number below 1000 (*kind DD_DEVICE_CUDA, *index N). NULL or "" is "cpu". `what` names the field
 * in the message ("device[1]", "--device"). Returns 0 or DD_EINVAL: `what: "name": expected "cpu"
 * or "cuda:N"`. kind and index may be NULL. */
int dd_device_parse(const char *name, int *kind, int *index, const char *what, char *err, size_t errlen);

/* Which backend and which collective a device name selects. */
typedef struct dd_devices {
  /* 1 when "cuda:N" devices can be created at all (the build has the CUDA backend). */
  int have_cuda;
  /* A backend for `device` ("cpu" with `threads` workers, 0: all cores; "cuda:N"). Returns 0 or
   * an error with the reason (a build without CUDA refuses "cuda:N" saying so). */
  int (*backend_create)(dd_backend **out, const char *device, int threads, char *err, size_t errlen);
  /* A group of `local` ranks on this node, one per device name (all "cpu": the CPU collective, or
   * across nodes its TCP transport; all "cuda:N": NCCL; no mixing), meeting the other nodes
   * through rv (NULL: one node). Returns 0 or an error with a message. */
  int (*comm_group_create)(struct dd_comm **comms, int local, const char *const *devices,
                           const struct dd_rendezvous *rv, int timeout_ms, char *err, size_t errlen);
} dd_devices;

#endif
