/* The CUDA backend's entry points, callable from C (library dd_cuda). Only the device registry
 * (core/devices/devices.c) calls them; everything else reaches the backend through its operations
 * table (core/base/backend.h) and the collective's table (core/comm/collective.h). */
#ifndef DD_CUDA_H
#define DD_CUDA_H

#include <stddef.h>

#include "base/backend.h"
#include "comm/collective.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Device `device` of this machine. Returns 0, or DD_ENOTFOUND (no driver, no such device, cuDNN or
 * cuBLAS not found) / DD_EIO / DD_ENOMEM with the reason in `err`. Whatever thread creates it must
 * be the one that uses it (the CUDA device is per thread). */
int dd_cuda_backend_create(dd_backend **out, int device, char *err, size_t errlen);
void dd_cuda_backend_destroy(dd_backend *be);
const char *dd_cuda_backend_describe(dd_backend *be);

/* The NCCL group (cuda/nccl_comm.cu): devices[r] is rank r's CUDA device. */
int dd_nccl_comm_group_create(dd_comm **comms, int size, const int *devices, char *err, size_t errlen);
/* The NCCL group over nodes: ncclCommInitRank with node 0's unique id. */
int dd_nccl_comm_group_create_nodes(dd_comm **comms, int local, const int *devices, const dd_rendezvous *rv,
                                    char *err, size_t errlen);
int dd_nccl_comm_bind(dd_comm *c, dd_backend *be, char *err, size_t errlen);
void dd_nccl_comm_group_destroy(dd_comm **comms, int size);

#ifdef __cplusplus
}
#endif

#endif
