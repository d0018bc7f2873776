/* The NCCL collective (core/comm/collective.h) for GPU ranks: in one process ncclCommInitAll over the
 * ranks' devices, one communicator per rank; over several nodes ncclCommInitRank with node 0's unique
 * id (dd_nccl_comm_group_create_nodes). NCCL is loaded at run time (cuda/dynload.cu).
 *
 * Ordering: a rank's sums run on a communication stream of its own, so they overlap the backward
 * pass that is still being queued on the backend's stream. Each call records an event on the
 * backend's stream (the gradients are computed), makes the communication stream wait for it,
 * queues the NCCL call, and makes the backend's stream wait for its end, so the update that follows
 * sees the sums. Calls return once queued; the host never waits (except barrier).
 *
 * Failure: abort() marks the group failed and aborts every communicator (ncclCommAbort wakes a
 * rank blocked in NCCL); every later call returns DD_EIO with the first reason. */
#include <nccl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

extern "C" {
#include "comm/collective.h"
const char *dd_cuda_nccl_load_error(void);
}

typedef struct nccl_group {
  int size;
  ncclComm_t *comms;
  int *devices;
  pthread_mutex_t mu;
  int failed, aborted;
  char reason[512];
} nccl_group;

typedef struct {
  nccl_group *g;
  int rank;
  dd_backend *be;
  cudaStream_t stream; /* communication */
  cudaEvent_t ready, done;
  float *scratch; /* one float, for barrier */
} nccl_rank;

static int group_failed(nccl_group *g, char *err, size_t errlen) {
  pthread_mutex_lock(&g->mu);
  int f = g->failed;
  if (f && err) snprintf(err, errlen, "%s", g->reason);
  pthread_mutex_unlock(&g->mu);
  return f;
}

static void nccl_abort(dd_comm *c, const char *why) {
  nccl_group *g = ((nccl_rank *)c->ctx)->g;
  pthread_mutex_lock(&g->mu);
  if (!g->failed) {
    g->failed = 1;
    snprintf(g->reason, sizeof g->reason, "%s", why && why[0] ? why : "collective group aborted");
  }
  int do_abort = !g->aborted;
  g->aborted = 1;
  pthread_mutex_unlock(&g->mu);
  /* wakes any rank blocked inside NCCL; the communicators are not used again */
  if (do_abort)
    for (int r = 0; r < g->size; r++)
      if (g->comms[r]) ncclCommAbort(g->comms[r]);
}

/* Queues `call` on the rank's communication stream between the two events. */
static int queued(dd_comm *c, ncclResult_t (*call)(nccl_rank *, void *), void *arg, char *err, size_t errlen) {
  nccl_rank *k = (nccl_rank *)c->ctx;
  if (group_failed(k->g, err, errlen)) return DD_EIO;
  if (!k->be) return dd_errorf(DD_EINVAL, err, errlen, "rank %d: no backend bound (dd_comm_bind)", k->rank);
  dd_cuda_ctx *bc = DD_CUDA_CTX(k->be);
  cudaError_t e = cudaSetDevice(bc->device);
  if (e == cudaSuccess) e = cudaEventRecord(k->ready, bc->stream);
  if (e == cudaSuccess) e = cudaStreamWaitEvent(k->stream, k->ready, 0);
  if (e != cudaSuccess) {
    dd_errorf(DD_EIO, err, errlen, "rank %d: CUDA: %s", k->rank, cudaGetErrorString(e));
    nccl_abort(c, err);
    return DD_EIO;
  }
  ncclResult_t nr = call(k, arg);
  if (nr != ncclSuccess) {
    dd_errorf(DD_EIO, err, errlen, "rank %d: NCCL: %s", k->rank, ncclGetErrorString(nr));
    nccl_abort(c, err);
    return DD_EIO;
  }
  e = cudaEventRecord(k->done, k->stream);
  if (e == cudaSuccess) e = cudaStreamWaitEvent(bc->stream, k->done, 0);
  if (e != cudaSuccess) {
    dd_errorf(DD_EIO, err, errlen, "rank %d: CUDA: %s", k->rank, cudaGetErrorString(e));
    nccl_abort(c, err);
    return DD_EIO;
  }
  return 0;
}

typedef struct {
  float *buf;
  int64_t n;
  int root;
} call_args;

static ncclResult_t do_allreduce(nccl_rank *k, void *arg) {
  call_args *a = (call_args *)arg;
  return ncclAllReduce(a->buf, a->buf, (size_t)a->n, ncclFloat, ncclSum, k->g->comms[k->rank], k->stream);
}

static ncclResult_t do_broadcast(nccl_rank *k, void *arg) {
  call_args *a = (call_args *)arg;
  return ncclBroadcast(a->buf, a->buf, (size_t)a->n, ncclFloat, a->root, k->g->comms[k->rank], k->stream);
}

static int nccl_allreduce_sum(dd_comm *c, float *buf, int64_t n, char *err, size_t errlen) {
  if (n <= 0) return group_failed(((nccl_rank *)c->ctx)->g, err, errlen) ? DD_EIO : 0;
  call_args a = {buf, n, 0};
  return queued(c, do_allreduce, &a, err, errlen);
}

static int nccl_broadcast(dd_comm *c, float *buf, int64_t n, int root, char *err, size_t errlen) {
  if (root < 0 || root >= c->size) return dd_errorf(DD_EINVAL, err, errlen, "broadcast: root %d of %d ranks", root, c->size);
  if (n <= 0) return group_failed(((nccl_rank *)c->ctx)->g, err, errlen) ? DD_EIO : 0;
  call_args a = {buf, n, root};
  return queued(c, do_broadcast, &a, err, errlen);
}

/* A sum of one float that the host waits for: every rank has reached this point. */
static int nccl_barrier(dd_comm *c, char *err, size_t errlen) {
  nccl_rank *k = (nccl_rank *)c->ctx;
  call_args a = {k->scratch, 1, 0};
  int r = queued(c, do_allreduce, &a, err, errlen);
  if (r) return r;
  cudaError_t e = cudaStreamSynchronize(k->stream);
  if (e != cudaSuccess) return dd_errorf(DD_EIO, err, errlen, "rank %d: CUDA: %s", k->rank, cudaGetErrorString(e));
  return group_failed(k->g, err, errlen) ? DD_EIO : 0;
}

static const dd_comm_ops nccl_ops = {"nccl",           nccl_allreduce_sum, nccl_broadcast, nccl_barrier,
                                      nccl_abort,       dd_nccl_comm_bind,  dd_nccl_comm_group_destroy};

/* A group of `size` local ranks around communicators already made (g->comms): handle k is global
 * rank base + k of `world`. Frees the group (destroying the communicators) when out of memory. */
static int make_handles(nccl_group *g, dd_comm **comms, int base, int world, char *err, size_t errlen) {
  for (int r = 0; r < g->size; r++) {
    dd_comm *c = (dd_comm *)calloc(1, sizeof *c);
    nccl_rank *k = (nccl_rank *)calloc(1, sizeof *k);
    if (!c || !k) {
      free(c);
      free(k);
      for (int q = 0; q < r; q++) {
        free(comms[q]->ctx);
        free(comms[q]);
        comms[q] = NULL;
      }
      for (int q = 0; q < g->size; q++) ncclCommDestroy(g->comms[q]);
      free(g->comms);
      free(g->devices);
      pthread_mutex_destroy(&g->mu);
      free(g);
      return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
    }
    k->g = g;
    k->rank = r;
    c->ops = &nccl_ops;
    c->rank = base + r;
    c->size = world;
    c->ctx = k;
    comms[r] = c;
  }
  return 0;
}

static nccl_group *new_group(int size, const int *devices) {
  nccl_group *g = (nccl_group *)calloc(1, sizeof *g);
  if (!g) return NULL;
  g->size = size;
  g->comms = (ncclComm_t *)calloc((size_t)size, sizeof *g->comms);
  g->devices = (int *)calloc((size_t)size, sizeof *g->devices);
  if (!g->comms || !g->devices) {
    free(g->comms);
    free(g->devices);
    free(g);
    return NULL;
  }
  pthread_mutex_init(&g->mu, NULL);
  memcpy(g->devices, devices, (size_t)size * sizeof *devices);
  return g;
}

static void free_group(nccl_group *g) {
  free(g->comms);
  free(g->devices);
  pthread_mutex_destroy(&g->mu);
  free(g);
}

extern "C" int dd_nccl_comm_group_create(dd_comm **comms, int size, const int *devices, char *err, size_t errlen) {
  const char *why = dd_cuda_nccl_load_error();
  if (why) return dd_errorf(DD_EUNSUPPORTED, err, errlen, "NCCL (libnccl.so.2) not found: %s", why);
  nccl_group *g = new_group(size, devices);
  if (!g) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  ncclResult_t nr = ncclCommInitAll(g->comms, size, g->devices);
  if (nr != ncclSuccess) {
    dd_errorf(DD_EIO, err, errlen, "NCCL: ncclCommInitAll over %d devices: %s", size, ncclGetErrorString(nr));
    free_group(g);
    return DD_EIO;
  }
  return make_handles(g, comms, 0, size, err, errlen);
}

/* Several nodes: node 0 makes the unique id and publishes it as "nccl HEX NODES LOCAL"; every node
 * then initialises its ranks' communicators in one NCCL group call. NCCL's own bootstrap connects
 * the nodes (NCCL_SOCKET_IFNAME and friends apply). */
extern "C" int dd_nccl_comm_group_create_nodes(dd_comm **comms, int local, const int *devices, const dd_rendezvous *rv,
                                               char *err, size_t errlen) {
  const char *why = dd_cuda_nccl_load_error();
  if (why) return dd_errorf(DD_EUNSUPPORTED, err, errlen, "NCCL (libnccl.so.2) not found: %s", why);
  int world = rv->nodes * local, timeout_ms = rv->timeout_ms > 0 ? rv->timeout_ms : 300000;
  ncclUniqueId id;
  char text[512];
  int r = 0;
  if (rv->node == 0) {
    ncclResult_t nr = ncclGetUniqueId(&id);
    if (nr != ncclSuccess) return dd_errorf(DD_EIO, err, errlen, "NCCL: ncclGetUniqueId: %s", ncclGetErrorString(nr));
    int len = snprintf(text, sizeof text, "nccl ");
    for (int i = 0; i < NCCL_UNIQUE_ID_BYTES; i++) len += snprintf(text + len, sizeof text - len, "%02x", (unsigned char)id.internal[i]);
    snprintf(text + len, sizeof text - len, " %d %d", rv->nodes, local);
    if ((r = rv->publish(rv->ctx, text, err, errlen))) return r;
  } else {
    r = rv->fetch(rv->ctx, text, sizeof text, timeout_ms, err, errlen);
    if (r == DD_ENOTFOUND)
      return dd_errorf(DD_EIO, err, errlen, "rendezvous: node 0 published no NCCL id within %d s", timeout_ms / 1000);
    if (r) return r;
    char hex[2 * NCCL_UNIQUE_ID_BYTES + 8];
    int nodes = 0, loc = 0;
    if (sscanf(text, "nccl %260s %d %d", hex, &nodes, &loc) != 3 || strlen(hex) != 2 * NCCL_UNIQUE_ID_BYTES)
      return dd_errorf(DD_EINVAL, err, errlen, "rendezvous: node 0 published \"%.60s...\", not an NCCL id (are node 0's "
                       "devices CPUs?)", text);
    if (nodes != rv->nodes || loc != local)
      return dd_errorf(DD_EINVAL, err, errlen, "rendezvous: node 0 runs %d nodes x %d ranks, this node %d x %d: every node "
                       "needs the same job and the same number of devices", nodes, loc, rv->nodes, local);
    for (int i = 0; i < NCCL_UNIQUE_ID_BYTES; i++) {
      unsigned v = 0;
      sscanf(hex + 2 * i, "%2x", &v);
      id.internal[i] = (char)v;
    }
  }
  nccl_group *g = new_group(local, devices);
  if (!g) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  ncclResult_t nr = ncclGroupStart();
  for (int k = 0; k < local && nr == ncclSuccess; k++) {
    cudaSetDevice(devices[k]);
    nr = ncclCommInitRank(&g->comms[k], world, id, rv->node * local + k);
  }
  ncclResult_t ne = ncclGroupEnd();
  if (nr == ncclSuccess) nr = ne;
  if (rv->node == 0 && rv->withdraw) rv->withdraw(rv->ctx);
  if (nr != ncclSuccess) {
    dd_errorf(DD_EIO, err, errlen, "NCCL: ncclCommInitRank (node %d of %d, %d ranks): %s", rv->node, rv->nodes, local,
              ncclGetErrorString(nr));
    for (int k = 0; k < local; k++)
      if (g->comms[k]) ncclCommDestroy(g->comms[k]);
    free_group(g);
    return DD_EIO;
  }
  return make_handles(g, comms, rv->node * local, world, err, errlen);
}

extern "C" int dd_nccl_comm_bind(dd_comm *c, dd_backend *be, char *err, size_t errlen) {
  nccl_rank *k = (nccl_rank *)c->ctx;
  if (strcmp(be->ops->name, "cuda"))
    return dd_errorf(DD_EINVAL, err, errlen, "rank %d: an NCCL rank needs a CUDA backend", k->rank);
  dd_cuda_ctx *bc = DD_CUDA_CTX(be);
  if (bc->device != k->g->devices[k->rank])
    return dd_errorf(DD_EINVAL, err, errlen, "rank %d: its backend is on cuda:%d, its communicator on cuda:%d", k->rank,
                     bc->device, k->g->devices[k->rank]);
  cudaError_t e = cudaSetDevice(bc->device);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&k->stream, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&k->ready, cudaEventDisableTiming);
  if (e == cudaSuccess) e = cudaEventCreateWithFlags(&k->done, cudaEventDisableTiming);
  if (e == cudaSuccess) e = cudaMalloc((void **)&k->scratch, sizeof(float));
  if (e != cudaSuccess) return dd_errorf(DD_EIO, err, errlen, "rank %d: CUDA: %s", k->rank, cudaGetErrorString(e));
  k->be = be;
  return 0;
}

extern "C" void dd_nccl_comm_group_destroy(dd_comm **comms, int size) {
  if (size < 1 || !comms[0]) return;
  nccl_group *g = ((nccl_rank *)comms[0]->ctx)->g;
  for (int r = 0; r < size; r++) {
    nccl_rank *k = (nccl_rank *)comms[r]->ctx;
    if (k->be) {
      cudaSetDevice(g->devices[r]);
      cudaStreamSynchronize(k->stream);
      cudaEventDestroy(k->ready);
      cudaEventDestroy(k->done);
      cudaStreamDestroy(k->stream);
      cudaFree(k->scratch);
    }
    if (!g->aborted) ncclCommDestroy(g->comms[r]);
    free(k);
    free(comms[r]);
    comms[r] = NULL;
  }
  pthread_mutex_destroy(&g->mu);
  free(g->comms);
  free(g->devices);
  free(g);
}
