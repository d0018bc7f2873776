/* CUDA kernels of the catalogue's structure layers (Reduction, ...): semantics in
 * core/base/backend.h, the CPU kernels in core/cpu/cpu_structure.c are the reference. Row sums
 * accumulate in double in a fixed order (one block per row, a fixed shared-memory tree), so a run
 * repeats bit for bit on a given device. Nothing here allocates. */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.h"

#define NT DD_CUDA_THREADS

static __global__ void reduce_forward_kernel(int op, int64_t outer, int64_t dim, float *y, const float *x,
                                             float coeff) {
  __shared__ double part[NT];
  for (int64_t i = blockIdx.x; i < outer; i += gridDim.x) {
    const float *r = x + i * dim;
    double s = 0;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
      double v = r[j];
      s += op == 2 ? fabs(v) : op == 3 ? v * v : v;
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = NT / 2; w > 0; w >>= 1) {
      if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      double t = part[0];
      if (op == 4 && dim > 0) t /= (double)dim;
      y[i] = (float)(coeff * t);
    }
    __syncthreads();
  }
}

extern "C" void dd_cuda_reduce_forward(dd_backend *be, int op, int64_t outer, int64_t dim, float *y,
                                       const float *x, float coeff) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (outer <= 0) return;
  int blocks = outer < 65535 ? (int)outer : 65535;
  reduce_forward_kernel<<<blocks, NT, 0, c->stream>>>(op, outer, dim, y, x, coeff);
  DD_CUDA_LAUNCHED(c);
}

static __global__ void reduce_backward_kernel(int op, int64_t outer, int64_t dim, float *dx, const float *dy,
                                              const float *x, float coeff) {
  int64_t n = outer * dim;
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    float g = __fmul_rn(coeff, dy[k / dim]);
    if (op == 4) g = __fdiv_rn(g, (float)dim);
    float v = x[k];
    dx[k] = op == 2 ? (v > 0 ? g : v < 0 ? -g : 0.0f) : op == 3 ? __fmul_rn(__fmul_rn(2.0f, v), g) : g;
  }
}

extern "C" void dd_cuda_reduce_backward(dd_backend *be, int op, int64_t outer, int64_t dim, float *dx,
                                        const float *dy, const float *x, float coeff) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (outer <= 0 || dim <= 0) return;
  reduce_backward_kernel<<<dd_cuda_blocks(c, outer * dim), NT, 0, c->stream>>>(op, outer, dim, dx, dy, x, coeff);
  DD_CUDA_LAUNCHED(c);
}

#define GRID_STRIDE(i, n) \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ---- copy_nd: one thread per element of the block ----------------------------------------------- */
static __global__ void copy_nd_kernel(dd_copy_nd_desc d, int64_t total, float *dst, const float *src, int acc) {
  GRID_STRIDE(e, total) {
    int64_t r = e, od = 0, os = 0;
    for (int k = d.ndim - 1; k >= 0; k--) {
      int64_t i = r % d.shape[k];
      r /= d.shape[k];
      od += i * d.dst_stride[k];
      os += i * d.src_stride[k];
    }
    dst[od] = acc ? __fadd_rn(dst[od], src[os]) : src[os];
  }
}

extern "C" void dd_cuda_copy_nd(dd_backend *be, const dd_copy_nd_desc *d, float *dst, const float *src, int accumulate) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  int64_t total = 1;
  for (int k = 0; k < d->ndim; k++) total *= d->shape[k] > 0 ? d->shape[k] : 0;
  if (total <= 0) return;
  copy_nd_kernel<<<dd_cuda_blocks(c, total), NT, 0, c->stream>>>(*d, total, dst, src, accumulate);
  DD_CUDA_LAUNCHED(c);
}

/* ---- argmax_topk: one thread per (outer, inner) position, the CPU's selection ------------------- */
__device__ static int ranks_above(float a, int64_t ia, float b, int64_t ib) {
  int na = isnan(a), nb = isnan(b);
  if (na || nb) return na && nb ? ia > ib : na;
  return a > b || (a == b && ia > ib);
}

static __global__ void argmax_kernel(int64_t outer, int64_t dim, int64_t inner, int k, const float *x, float *ind,
                                     float *val, int64_t out_stride) {
  GRID_STRIDE(p, outer * inner) {
    int64_t o = p / inner, i = p % inner;
    const float *r = x + o * dim * inner + i;
    int64_t prev = -1;
    for (int t = 0; t < k; t++) {
      int64_t best = -1;
      for (int64_t j = 0; j < dim; j++) {
        if (prev >= 0 && !ranks_above(r[prev * inner], prev, r[j * inner], j)) continue;
        if (best < 0 || ranks_above(r[j * inner], j, r[best * inner], best)) best = j;
      }
      int64_t at = o * out_stride + t * inner + i;
      if (ind) ind[at] = (float)best;
      if (val) val[at] = r[best * inner];
      prev = best;
    }
  }
}

extern "C" void dd_cuda_argmax_topk(dd_backend *be, int64_t outer, int64_t dim, int64_t inner, int k, const float *x,
                                    float *ind, float *val, int64_t out_stride) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (outer * inner <= 0) return;
  argmax_kernel<<<dd_cuda_blocks(c, outer * inner), NT, 0, c->stream>>>(outer, dim, inner, k, x, ind, val, out_stride);
  DD_CUDA_LAUNCHED(c);
}

/* ---- Embed ---------------------------------------------------------------------------------------- */
__device__ static int64_t embed_row(float v, int64_t rows) {
  if (!(v >= 0 && v < (float)rows) || v != floorf(v)) return -1;
  return (int64_t)v;
}

static __global__ void embed_fwd_kernel(int64_t m, int64_t n, int64_t rows, float *y, const float *idx, const float *w,
                                        const float *bias) {
  GRID_STRIDE(e, m * n) {
    int64_t j = e / n, col = e % n, r = embed_row(idx[j], rows);
    if (r >= 0) y[e] = __fadd_rn(w[r * n + col], bias ? bias[col] : 0.0f);
  }
}

/* one thread per weight entry: the positions that picked its row, in order (no atomics) */
static __global__ void embed_dw_kernel(int64_t m, int64_t n, int64_t rows, float *dw, const float *dy, const float *idx) {
  GRID_STRIDE(e, rows * n) {
    int64_t r = e / n, col = e % n;
    float s = dw[e];
    for (int64_t j = 0; j < m; j++)
      if (embed_row(idx[j], rows) == r) s = __fadd_rn(s, dy[j * n + col]);
    dw[e] = s;
  }
}

static __global__ void embed_db_kernel(int64_t m, int64_t n, float *db, const float *dy) {
  GRID_STRIDE(col, n) {
    double s = 0;
    for (int64_t j = 0; j < m; j++) s += dy[j * n + col];
    db[col] = __fadd_rn(db[col], (float)s);
  }
}

extern "C" void dd_cuda_embed_forward(dd_backend *be, int64_t m, int64_t n, int64_t rows, float *y, const float *idx,
                                      const float *w, const float *bias) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (m * n <= 0) return;
  embed_fwd_kernel<<<dd_cuda_blocks(c, m * n), NT, 0, c->stream>>>(m, n, rows, y, idx, w, bias);
  DD_CUDA_LAUNCHED(c);
}

extern "C" void dd_cuda_embed_backward(dd_backend *be, int64_t m, int64_t n, int64_t rows, float *dw, float *dbias,
                                       const float *dy, const float *idx) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (m * n <= 0) return;
  if (dw) {
    embed_dw_kernel<<<dd_cuda_blocks(c, rows * n), NT, 0, c->stream>>>(m, n, rows, dw, dy, idx);
    DD_CUDA_LAUNCHED(c);
  }
  if (dbias) {
    embed_db_kernel<<<dd_cuda_blocks(c, n), NT, 0, c->stream>>>(m, n, dbias, dy);
    DD_CUDA_LAUNCHED(c);
  }
}

/* ---- im2col / col2im -------------------------------------------------------------------------------- */
static __global__ void im2col_kernel(dd_conv_desc d, int64_t total, float *col, const float *x) {
  GRID_STRIDE(e, total) {
    int64_t r = e;
    int ox = (int)(r % d.out_w); r /= d.out_w;
    int oy = (int)(r % d.out_h); r /= d.out_h;
    int j = (int)(r % d.kw); r /= d.kw;
    int i = (int)(r % d.kh); r /= d.kh;
    int64_t plane = r; /* b * c + ch */
    int iy = oy * d.sh - d.ph + i * d.dh, ix = ox * d.sw - d.pw + j * d.dw;
    col[e] = iy >= 0 && iy < d.h && ix >= 0 && ix < d.w ? x[(plane * d.h + iy) * d.w + ix] : 0.0f;
  }
}

/* one thread per pixel: the columns that read it, in the CPU's order (kernel row, kernel column) */
static __global__ void col2im_kernel(dd_conv_desc d, int64_t total, float *dx, const float *col) {
  GRID_STRIDE(e, total) {
    int64_t r = e;
    int px = (int)(r % d.w); r /= d.w;
    int py = (int)(r % d.h); r /= d.h;
    int64_t plane = r;
    float s = 0.0f;
    for (int i = 0; i < d.kh; i++) {
      int ty = py + d.ph - i * d.dh;
      if (ty < 0 || ty % d.sh) continue;
      int oy = ty / d.sh;
      if (oy >= d.out_h) continue;
      for (int j = 0; j < d.kw; j++) {
        int tx = px + d.pw - j * d.dw;
        if (tx < 0 || tx % d.sw) continue;
        int ox = tx / d.sw;
        if (ox >= d.out_w) continue;
        s = __fadd_rn(s, col[(((plane * d.kh + i) * d.kw + j) * d.out_h + oy) * d.out_w + ox]);
      }
    }
    dx[e] = s;
  }
}

extern "C" void dd_cuda_im2col(dd_backend *be, const dd_conv_desc *d, float *col, const float *x) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  int64_t total = (int64_t)d->n * d->c * d->kh * d->kw * d->out_h * d->out_w;
  if (total <= 0) return;
  im2col_kernel<<<dd_cuda_blocks(c, total), NT, 0, c->stream>>>(*d, total, col, x);
  DD_CUDA_LAUNCHED(c);
}

extern "C" void dd_cuda_col2im(dd_backend *be, const dd_conv_desc *d, float *dx, const float *col) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  int64_t total = (int64_t)d->n * d->c * d->h * d->w;
  if (total <= 0) return;
  col2im_kernel<<<dd_cuda_blocks(c, total), NT, 0, c->stream>>>(*d, total, dx, col);
  DD_CUDA_LAUNCHED(c);
}
