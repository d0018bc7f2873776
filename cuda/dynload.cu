/* cuDNN and cuBLAS, loaded when the CUDA backend starts rather than linked: distilld starts (and
 * runs CPU jobs) on machines without them, and a GPU machine may supply them from wherever it keeps
 * them (LD_LIBRARY_PATH; PyTorch's pip packages, for instance), cuBLAS from CUDA 13 or CUDA 12.
 *
 * Every cuDNN/cuBLAS function the backend calls is defined here under its own name, with the
 * headers' prototype, and forwards to the symbol of the loaded library (looked up once). When a
 * library cannot be loaded the functions return NOT_INITIALIZED, and backend creation reports
 * dd_cuda_dynload_error(). The CUDA runtime itself is linked statically. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <nccl.h>

#include "cuda_internal.h"

enum { DD_DYN_CUDNN, DD_DYN_CUBLAS, DD_DYN_NCCL };

static void *dyn_lib[3];
static char dyn_err[3][512];
static pthread_once_t dyn_once = PTHREAD_ONCE_INIT;

static void dyn_load(void) {
  static const char *const names[3][3] = {{"libcudnn.so.9", "libcudnn.so", NULL},
                                          {"libcublas.so.13", "libcublas.so.12", "libcublas.so"},
                                          {"libnccl.so.2", "libnccl.so", NULL}};
  for (int l = 0; l < 3; l++) {
    for (int k = 0; k < 3 && names[l][k] && !dyn_lib[l]; k++) {
      dyn_lib[l] = dlopen(names[l][k], RTLD_NOW | RTLD_GLOBAL);
      if (!dyn_lib[l]) {
        const char *e = dlerror();
        if (k == 0)
          snprintf(dyn_err[l], sizeof dyn_err[l], "%s", e ? e : names[l][k]);
      }
    }
  }
}

static void *dd_dyn_sym(int lib, const char *name) {
  pthread_once(&dyn_once, dyn_load);
  if (!dyn_lib[lib])
    return NULL;
  return dlsym(dyn_lib[lib], name);
}

/* NULL when NCCL was loaded (data parallel on GPUs), else why not. */
extern "C" const char *dd_cuda_nccl_load_error(void) {
  pthread_once(&dyn_once, dyn_load);
  return dyn_lib[DD_DYN_NCCL] ? NULL : dyn_err[DD_DYN_NCCL];
}

extern "C" const char *dd_cuda_dynload_error(void) {
  pthread_once(&dyn_once, dyn_load);
  static char msg[1100];
  msg[0] = '\0';
  if (!dyn_lib[DD_DYN_CUDNN])
    snprintf(msg, sizeof msg, "cuDNN 9 not found (%s)", dyn_err[DD_DYN_CUDNN]);
  if (!dyn_lib[DD_DYN_CUBLAS])
    snprintf(msg + strlen(msg), sizeof msg - strlen(msg), "%scuBLAS 13 or 12 not found (%s)", msg[0] ? "; " : "",
             dyn_err[DD_DYN_CUBLAS]);
  return msg[0] ? msg : NULL;
}

/* ---- the forwarding definitions (prototypes as in cudnn_*_v9.h and cublas_api.h) ---------------- */

extern "C" cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void *alpha,
                                                      const cudnnFilterDescriptor_t wDesc, const void *w,
                                                      const cudnnTensorDescriptor_t dyDesc, const void *dy,
                                                      const cudnnConvolutionDescriptor_t convDesc,
                                                      cudnnConvolutionBwdDataAlgo_t algo, void *workSpace,
                                                      size_t workSpaceSizeInBytes, const void *beta,
                                                      const cudnnTensorDescriptor_t dxDesc, void *dx) {
  static decltype(&cudnnConvolutionBackwardData) f =
      (decltype(&cudnnConvolutionBackwardData))dd_dyn_sym(DD_DYN_CUDNN, "cudnnConvolutionBackwardData");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle, alpha, wDesc, w, dyDesc, dy, convDesc, algo, workSpace, workSpaceSizeInBytes, beta, dxDesc, dx);
}

extern "C" cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void *alpha,
                                                        const cudnnTensorDescriptor_t xDesc, const void *x,
                                                        const cudnnTensorDescriptor_t dyDesc, const void *dy,
                                                        const cudnnConvolutionDescriptor_t convDesc,
                                                        cudnnConvolutionBwdFilterAlgo_t algo, void *workSpace,
                                                        size_t workSpaceSizeInBytes, const void *beta,
                                                        const cudnnFilterDescriptor_t dwDesc, void *dw) {
  static decltype(&cudnnConvolutionBackwardFilter) f =
      (decltype(&cudnnConvolutionBackwardFilter))dd_dyn_sym(DD_DYN_CUDNN, "cudnnConvolutionBackwardFilter");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle, alpha, xDesc, x, dyDesc, dy, convDesc, algo, workSpace, workSpaceSizeInBytes, beta, dwDesc, dw);
}

extern "C" cudnnStatus_t
cudnnConvolutionForward(cudnnHandle_t handle, const void *alpha, const cudnnTensorDescriptor_t xDesc, const void *x,
                        const cudnnFilterDescriptor_t wDesc, const void *w, const cudnnConvolutionDescriptor_t convDesc,
                        cudnnConvolutionFwdAlgo_t algo, void *workSpace, size_t workSpaceSizeInBytes, const void *beta,
                        const cudnnTensorDescriptor_t yDesc, void *y) {
  static decltype(&cudnnConvolutionForward) f =
      (decltype(&cudnnConvolutionForward))dd_dyn_sym(DD_DYN_CUDNN, "cudnnConvolutionForward");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle, alpha, xDesc, x, wDesc, w, convDesc, algo, workSpace, workSpaceSizeInBytes, beta, yDesc, y);
}

extern "C" cudnnStatus_t cudnnCreate(cudnnHandle_t *handle) {
  static decltype(&cudnnCreate) f = (decltype(&cudnnCreate))dd_dyn_sym(DD_DYN_CUDNN, "cudnnCreate");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle);
}

extern "C" cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *convDesc) {
  static decltype(&cudnnCreateConvolutionDescriptor) f =
      (decltype(&cudnnCreateConvolutionDescriptor))dd_dyn_sym(DD_DYN_CUDNN, "cudnnCreateConvolutionDescriptor");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(convDesc);
}

extern "C" cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *filterDesc) {
  static decltype(&cudnnCreateFilterDescriptor) f =
      (decltype(&cudnnCreateFilterDescriptor))dd_dyn_sym(DD_DYN_CUDNN, "cudnnCreateFilterDescriptor");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(filterDesc);
}

extern "C" cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *tensorDesc) {
  static decltype(&cudnnCreateTensorDescriptor) f =
      (decltype(&cudnnCreateTensorDescriptor))dd_dyn_sym(DD_DYN_CUDNN, "cudnnCreateTensorDescriptor");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(tensorDesc);
}

extern "C" cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
  static decltype(&cudnnDestroy) f = (decltype(&cudnnDestroy))dd_dyn_sym(DD_DYN_CUDNN, "cudnnDestroy");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle);
}

extern "C" cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t convDesc) {
  static decltype(&cudnnDestroyConvolutionDescriptor) f =
      (decltype(&cudnnDestroyConvolutionDescriptor))dd_dyn_sym(DD_DYN_CUDNN, "cudnnDestroyConvolutionDescriptor");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(convDesc);
}

extern "C" cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t filterDesc) {
  static decltype(&cudnnDestroyFilterDescriptor) f =
      (decltype(&cudnnDestroyFilterDescriptor))dd_dyn_sym(DD_DYN_CUDNN, "cudnnDestroyFilterDescriptor");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(filterDesc);
}

extern "C" cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t tensorDesc) {
  static decltype(&cudnnDestroyTensorDescriptor) f =
      (decltype(&cudnnDestroyTensorDescriptor))dd_dyn_sym(DD_DYN_CUDNN, "cudnnDestroyTensorDescriptor");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(tensorDesc);
}

extern "C" cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t convDesc,
                                                               const cudnnTensorDescriptor_t inputTensorDesc,
                                                               const cudnnFilterDescriptor_t filterDesc, int *n, int *c,
                                                               int *h, int *w) {
  static decltype(&cudnnGetConvolution2dForwardOutputDim) f =
      (decltype(&cudnnGetConvolution2dForwardOutputDim))dd_dyn_sym(DD_DYN_CUDNN,
                                                                   "cudnnGetConvolution2dForwardOutputDim");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(convDesc, inputTensorDesc, filterDesc, n, c, h, w);
}

extern "C" cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t filterDesc, const cudnnTensorDescriptor_t diffDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t gradDesc, const int requestedAlgoCount,
    int *returnedAlgoCount, cudnnConvolutionBwdDataAlgoPerf_t *perfResults) {
  static decltype(&cudnnGetConvolutionBackwardDataAlgorithm_v7) f =
      (decltype(&cudnnGetConvolutionBackwardDataAlgorithm_v7))dd_dyn_sym(DD_DYN_CUDNN,
                                                                         "cudnnGetConvolutionBackwardDataAlgorithm_v7");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle, filterDesc, diffDesc, convDesc, gradDesc, requestedAlgoCount, returnedAlgoCount, perfResults);
}

extern "C" cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const cudnnTensorDescriptor_t dyDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc,
    cudnnConvolutionBwdDataAlgo_t algo, size_t *sizeInBytes) {
  static decltype(&cudnnGetConvolutionBackwardDataWorkspaceSize) f =
      (decltype(&cudnnGetConvolutionBackwardDataWorkspaceSize))dd_dyn_sym(
          DD_DYN_CUDNN, "cudnnGetConvolutionBackwardDataWorkspaceSize");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle, wDesc, dyDesc, convDesc, dxDesc, algo, sizeInBytes);
}

extern "C" cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc, const cudnnTensorDescriptor_t diffDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t gradDesc, const int requestedAlgoCount,
    int *returnedAlgoCount, cudnnConvolutionBwdFilterAlgoPerf_t *perfResults) {
  static decltype(&cudnnGetConvolutionBackwardFilterAlgorithm_v7) f =
      (decltype(&cudnnGetConvolutionBackwardFilterAlgorithm_v7))dd_dyn_sym(
          DD_DYN_CUDNN, "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle, srcDesc, diffDesc, convDesc, gradDesc, requestedAlgoCount, returnedAlgoCount, perfResults);
}

extern "C" cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnTensorDescriptor_t dyDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t gradDesc,
    cudnnConvolutionBwdFilterAlgo_t algo, size_t *sizeInBytes) {
  static decltype(&cudnnGetConvolutionBackwardFilterWorkspaceSize) f =
      (decltype(&cudnnGetConvolutionBackwardFilterWorkspaceSize))dd_dyn_sym(
          DD_DYN_CUDNN, "cudnnGetConvolutionBackwardFilterWorkspaceSize");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle, xDesc, dyDesc, convDesc, gradDesc, algo, sizeInBytes);
}

extern "C" cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc, const cudnnFilterDescriptor_t filterDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t destDesc, const int requestedAlgoCount,
    int *returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t *perfResults) {
  static decltype(&cudnnGetConvolutionForwardAlgorithm_v7) f =
      (decltype(&cudnnGetConvolutionForwardAlgorithm_v7))dd_dyn_sym(DD_DYN_CUDNN,
                                                                    "cudnnGetConvolutionForwardAlgorithm_v7");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle, srcDesc, filterDesc, convDesc, destDesc, requestedAlgoCount, returnedAlgoCount, perfResults);
}

extern "C" cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t handle,
                                                                 const cudnnTensorDescriptor_t xDesc,
                                                                 const cudnnFilterDescriptor_t wDesc,
                                                                 const cudnnConvolutionDescriptor_t convDesc,
                                                                 const cudnnTensorDescriptor_t yDesc,
                                                                 cudnnConvolutionFwdAlgo_t algo, size_t *sizeInBytes) {
  static decltype(&cudnnGetConvolutionForwardWorkspaceSize) f =
      (decltype(&cudnnGetConvolutionForwardWorkspaceSize))dd_dyn_sym(DD_DYN_CUDNN,
                                                                     "cudnnGetConvolutionForwardWorkspaceSize");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle, xDesc, wDesc, convDesc, yDesc, algo, sizeInBytes);
}

extern "C" size_t cudnnGetVersion(void) {
  static decltype(&cudnnGetVersion) f = (decltype(&cudnnGetVersion))dd_dyn_sym(DD_DYN_CUDNN, "cudnnGetVersion");
  if (!f)
    return 0;
  return f();
}

extern "C" cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t convDesc, int pad_h, int pad_w,
                                                         int u, int v, int dilation_h, int dilation_w,
                                                         cudnnConvolutionMode_t mode, cudnnDataType_t computeType) {
  static decltype(&cudnnSetConvolution2dDescriptor) f =
      (decltype(&cudnnSetConvolution2dDescriptor))dd_dyn_sym(DD_DYN_CUDNN, "cudnnSetConvolution2dDescriptor");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(convDesc, pad_h, pad_w, u, v, dilation_h, dilation_w, mode, computeType);
}

extern "C" cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t convDesc, int groupCount) {
  static decltype(&cudnnSetConvolutionGroupCount) f =
      (decltype(&cudnnSetConvolutionGroupCount))dd_dyn_sym(DD_DYN_CUDNN, "cudnnSetConvolutionGroupCount");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(convDesc, groupCount);
}

extern "C" cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t convDesc, cudnnMathType_t mathType) {
  static decltype(&cudnnSetConvolutionMathType) f =
      (decltype(&cudnnSetConvolutionMathType))dd_dyn_sym(DD_DYN_CUDNN, "cudnnSetConvolutionMathType");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(convDesc, mathType);
}

extern "C" cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t filterDesc, cudnnDataType_t dataType,
                                                    cudnnTensorFormat_t format, int k, int c, int h, int w) {
  static decltype(&cudnnSetFilter4dDescriptor) f =
      (decltype(&cudnnSetFilter4dDescriptor))dd_dyn_sym(DD_DYN_CUDNN, "cudnnSetFilter4dDescriptor");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(filterDesc, dataType, format, k, c, h, w);
}

extern "C" cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t streamId) {
  static decltype(&cudnnSetStream) f = (decltype(&cudnnSetStream))dd_dyn_sym(DD_DYN_CUDNN, "cudnnSetStream");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle, streamId);
}

extern "C" cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t tensorDesc, cudnnTensorFormat_t format,
                                                    cudnnDataType_t dataType, int n, int c, int h, int w) {
  static decltype(&cudnnSetTensor4dDescriptor) f =
      (decltype(&cudnnSetTensor4dDescriptor))dd_dyn_sym(DD_DYN_CUDNN, "cudnnSetTensor4dDescriptor");
  if (!f)
    return CUDNN_STATUS_NOT_INITIALIZED;
  return f(tensorDesc, format, dataType, n, c, h, w);
}

extern "C" cublasStatus_t cublasCreate_v2(cublasHandle_t *handle) {
  static decltype(&cublasCreate_v2) f = (decltype(&cublasCreate_v2))dd_dyn_sym(DD_DYN_CUBLAS, "cublasCreate_v2");
  if (!f)
    return CUBLAS_STATUS_NOT_INITIALIZED;
  return f(handle);
}

extern "C" cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  static decltype(&cublasDestroy_v2) f = (decltype(&cublasDestroy_v2))dd_dyn_sym(DD_DYN_CUBLAS, "cublasDestroy_v2");
  if (!f)
    return CUBLAS_STATUS_NOT_INITIALIZED;
  return f(handle);
}

extern "C" cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  static decltype(&cublasSetMathMode) f = (decltype(&cublasSetMathMode))dd_dyn_sym(DD_DYN_CUBLAS, "cublasSetMathMode");
  if (!f)
    return CUBLAS_STATUS_NOT_INITIALIZED;
  return f(handle, mode);
}

extern "C" cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId) {
  static decltype(&cublasSetStream_v2) f =
      (decltype(&cublasSetStream_v2))dd_dyn_sym(DD_DYN_CUBLAS, "cublasSetStream_v2");
  if (!f)
    return CUBLAS_STATUS_NOT_INITIALIZED;
  return f(handle, streamId);
}

extern "C" cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const float *alpha, const float *A, int lda,
                                         const float *B, int ldb, const float *beta, float *C, int ldc) {
  static decltype(&cublasSgemm_v2) f = (decltype(&cublasSgemm_v2))dd_dyn_sym(DD_DYN_CUBLAS, "cublasSgemm_v2");
  if (!f)
    return CUBLAS_STATUS_NOT_INITIALIZED;
  return f(handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

extern "C" const char *cublasGetStatusString(cublasStatus_t status) {
  static decltype(&cublasGetStatusString) f =
      (decltype(&cublasGetStatusString))dd_dyn_sym(DD_DYN_CUBLAS, "cublasGetStatusString");
  if (!f)
    return "(cuDNN/cuBLAS not loaded)";
  return f(status);
}

extern "C" const char *cudnnGetErrorString(cudnnStatus_t status) {
  static decltype(&cudnnGetErrorString) f =
      (decltype(&cudnnGetErrorString))dd_dyn_sym(DD_DYN_CUDNN, "cudnnGetErrorString");
  if (!f)
    return "(cuDNN/cuBLAS not loaded)";
  return f(status);
}

extern "C" ncclResult_t ncclCommInitAll(ncclComm_t *comm, int ndev, const int *devlist) {
  static decltype(&ncclCommInitAll) f = (decltype(&ncclCommInitAll))dd_dyn_sym(DD_DYN_NCCL, "ncclCommInitAll");
  if (!f) return ncclSystemError;
  return f(comm, ndev, devlist);
}

extern "C" ncclResult_t ncclGetUniqueId(ncclUniqueId *uniqueId) {
  static decltype(&ncclGetUniqueId) f = (decltype(&ncclGetUniqueId))dd_dyn_sym(DD_DYN_NCCL, "ncclGetUniqueId");
  if (!f) return ncclSystemError;
  return f(uniqueId);
}

extern "C" ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank) {
  static decltype(&ncclCommInitRank) f = (decltype(&ncclCommInitRank))dd_dyn_sym(DD_DYN_NCCL, "ncclCommInitRank");
  if (!f) return ncclSystemError;
  return f(comm, nranks, commId, rank);
}

extern "C" ncclResult_t ncclGroupStart(void) {
  static decltype(&ncclGroupStart) f = (decltype(&ncclGroupStart))dd_dyn_sym(DD_DYN_NCCL, "ncclGroupStart");
  if (!f) return ncclSystemError;
  return f();
}

extern "C" ncclResult_t ncclGroupEnd(void) {
  static decltype(&ncclGroupEnd) f = (decltype(&ncclGroupEnd))dd_dyn_sym(DD_DYN_NCCL, "ncclGroupEnd");
  if (!f) return ncclSystemError;
  return f();
}

extern "C" ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  static decltype(&ncclCommDestroy) f = (decltype(&ncclCommDestroy))dd_dyn_sym(DD_DYN_NCCL, "ncclCommDestroy");
  if (!f) return ncclSystemError;
  return f(comm);
}

extern "C" ncclResult_t ncclCommAbort(ncclComm_t comm) {
  static decltype(&ncclCommAbort) f = (decltype(&ncclCommAbort))dd_dyn_sym(DD_DYN_NCCL, "ncclCommAbort");
  if (!f) return ncclSystemError;
  return f(comm);
}

extern "C" const char *ncclGetErrorString(ncclResult_t result) {
  static decltype(&ncclGetErrorString) f = (decltype(&ncclGetErrorString))dd_dyn_sym(DD_DYN_NCCL, "ncclGetErrorString");
  if (!f) return "(NCCL not loaded)";
  return f(result);
}

extern "C" ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype,
                                      ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  static decltype(&ncclAllReduce) f = (decltype(&ncclAllReduce))dd_dyn_sym(DD_DYN_NCCL, "ncclAllReduce");
  if (!f) return ncclSystemError;
  return f(sendbuff, recvbuff, count, datatype, op, comm, stream);
}

extern "C" ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, int root,
                                      ncclComm_t comm, cudaStream_t stream) {
  static decltype(&ncclBroadcast) f = (decltype(&ncclBroadcast))dd_dyn_sym(DD_DYN_NCCL, "ncclBroadcast");
  if (!f) return ncclSystemError;
  return f(sendbuff, recvbuff, count, datatype, root, comm, stream);
}

/* ---- timed algorithm search (cuda/conv.cu, DD_CUDNN_ALGO=measure) ---- */

extern "C" cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void *x, const cudnnFilterDescriptor_t wDesc,
    const void *w, const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc, void *y,
    const int requestedAlgoCount, int *returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t *perfResults, void *workSpace,
    size_t workSpaceSizeInBytes) {
  static decltype(&cudnnFindConvolutionForwardAlgorithmEx) f =
      (decltype(&cudnnFindConvolutionForwardAlgorithmEx))dd_dyn_sym(DD_DYN_CUDNN,
                                                                    "cudnnFindConvolutionForwardAlgorithmEx");
  if (!f) return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle, xDesc, x, wDesc, w, convDesc, yDesc, y, requestedAlgoCount, returnedAlgoCount, perfResults,
           workSpace, workSpaceSizeInBytes);
}

extern "C" cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const void *w, const cudnnTensorDescriptor_t dyDesc,
    const void *dy, const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc, void *dx,
    const int requestedAlgoCount, int *returnedAlgoCount, cudnnConvolutionBwdDataAlgoPerf_t *perfResults,
    void *workSpace, size_t workSpaceSizeInBytes) {
  static decltype(&cudnnFindConvolutionBackwardDataAlgorithmEx) f =
      (decltype(&cudnnFindConvolutionBackwardDataAlgorithmEx))dd_dyn_sym(DD_DYN_CUDNN,
                                                                         "cudnnFindConvolutionBackwardDataAlgorithmEx");
  if (!f) return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle, wDesc, w, dyDesc, dy, convDesc, dxDesc, dx, requestedAlgoCount, returnedAlgoCount, perfResults,
           workSpace, workSpaceSizeInBytes);
}

extern "C" cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void *x, const cudnnTensorDescriptor_t dyDesc,
    const void *y, const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t dwDesc, void *dw,
    const int requestedAlgoCount, int *returnedAlgoCount, cudnnConvolutionBwdFilterAlgoPerf_t *perfResults,
    void *workSpace, size_t workSpaceSizeInBytes) {
  static decltype(&cudnnFindConvolutionBackwardFilterAlgorithmEx) f =
      (decltype(&cudnnFindConvolutionBackwardFilterAlgorithmEx))dd_dyn_sym(
          DD_DYN_CUDNN, "cudnnFindConvolutionBackwardFilterAlgorithmEx");
  if (!f) return CUDNN_STATUS_NOT_INITIALIZED;
  return f(handle, xDesc, x, dyDesc, y, convDesc, dwDesc, dw, requestedAlgoCount, returnedAlgoCount, perfResults,
           workSpace, workSpaceSizeInBytes);
}
