/* What every file of the CUDA backend uses (cuda/cuda_internal.h): the one record of a CUDA
 * failure and the launch size of a grid-stride kernel. Apart from backend.cu, so that the table
 * (backend.cu) depends on the operations' files and they on this one, never the other way. */
#include <stdio.h>

#include "cuda_internal.h"

/* ---- errors ----------------------------------------------------------------------------------- */

extern "C" void dd_cuda_fail(dd_cuda_ctx *c, const char *call, const char *file, int line, const char *what) {
  if (c->failed) return;
  c->failed = 1;
  snprintf(c->fail_msg, sizeof c->fail_msg, "%s at %s:%d: %s", call, file, line, what ? what : "error");
  fprintf(stderr, "distilld: cuda:%d: %s\n", c->device, c->fail_msg);
}

extern "C" int dd_cuda_blocks(const dd_cuda_ctx *c, int64_t n) {
  int64_t b = (n + DD_CUDA_THREADS - 1) / DD_CUDA_THREADS;
  int64_t cap = (int64_t)(c->sm_count > 0 ? c->sm_count : 1) * 32;
  if (b > cap) b = cap;
  return b < 1 ? 1 : (int)b;
}
