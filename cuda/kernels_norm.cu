/* CUDA kernels of the catalogue's normalization layers (LRN, MVN): semantics in
 * core/base/backend.h, core/cpu/cpu_norm.c the reference: LRN one thread per element with the
 * CPU's window order; MVN one block per row, double sums over a fixed shared-memory tree. No
 * atomics, nothing allocated. */
#include <math.h>
#include <stdint.h>

#include "cuda_internal.h"

#define NT DD_CUDA_THREADS
#define GRID_STRIDE(i, n) \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

typedef struct {
  int across, n, c, h, w, size;
  float alpha, beta, k;
} lrn_geom;

__device__ static void window(const lrn_geom &g, int py, int px, int *y0, int *y1, int *x0, int *x1, int *area) {
  int pad = (g.size - 1) / 2;
  int hs = py - pad, ws = px - pad, he = hs + g.size, we = ws + g.size;
  if (he > g.h + pad) he = g.h + pad;
  if (we > g.w + pad) we = g.w + pad;
  *area = (he - hs) * (we - ws);
  *y0 = hs < 0 ? 0 : hs;
  *x0 = ws < 0 ? 0 : ws;
  *y1 = he < g.h ? he : g.h;
  *x1 = we < g.w ? we : g.w;
}

static __global__ void lrn_fwd_kernel(lrn_geom g, int64_t total, float *y, float *scale, const float *x) {
  GRID_STRIDE(e, total) {
    int64_t hw = (int64_t)g.h * g.w, p = e % hw, ch = (e / hw) % g.c, base = e - ch * hw - p, pre = (g.size - 1) / 2;
    float acc = 0, sc;
    if (g.across) {
      for (int64_t q = ch - pre; q <= ch + pre; q++)
        if (q >= 0 && q < g.c) acc = __fadd_rn(acc, __fmul_rn(x[base + q * hw + p], x[base + q * hw + p]));
      sc = __fadd_rn(g.k, __fmul_rn(__fdiv_rn(g.alpha, (float)g.size), acc));
    } else {
      int y0, y1, x0, x1, area;
      window(g, (int)(p / g.w), (int)(p % g.w), &y0, &y1, &x0, &x1, &area);
      for (int yy = y0; yy < y1; yy++)
        for (int xx = x0; xx < x1; xx++) {
          float v = x[base + ch * hw + (int64_t)yy * g.w + xx];
          acc = __fadd_rn(acc, __fmul_rn(v, v));
        }
      sc = __fadd_rn(1.0f, __fmul_rn(g.alpha, __fdiv_rn(acc, (float)area)));
    }
    scale[e] = sc;
    y[e] = __fmul_rn(x[e], powf(sc, -g.beta));
  }
}

static __global__ void lrn_bwd_kernel(lrn_geom g, int64_t total, float *dx, const float *dy, const float *x,
                                      const float *y, const float *s) {
  GRID_STRIDE(e, total) {
    int64_t hw = (int64_t)g.h * g.w, p = e % hw, ch = (e / hw) % g.c, base = e - ch * hw - p, pre = (g.size - 1) / 2;
    float acc = 0, ratio;
    if (g.across) {
      for (int64_t q = ch - pre; q <= ch + pre; q++)
        if (q >= 0 && q < g.c) {
          int64_t i = base + q * hw + p;
          acc = __fadd_rn(acc, __fdiv_rn(__fmul_rn(dy[i], y[i]), s[i]));
        }
      ratio = __fdiv_rn(__fmul_rn(__fmul_rn(2.0f, g.alpha), g.beta), (float)g.size);
    } else {
      int py = (int)(p / g.w), px = (int)(p % g.w), pad = (g.size - 1) / 2;
      for (int qy = py - (g.size - 1 - pad); qy <= py + pad; qy++)
        for (int qx = px - (g.size - 1 - pad); qx <= px + pad; qx++) {
          if (qy < 0 || qy >= g.h || qx < 0 || qx >= g.w) continue;
          int y0, y1, x0, x1, area;
          window(g, qy, qx, &y0, &y1, &x0, &x1, &area);
          if (py < y0 || py >= y1 || px < x0 || px >= x1) continue;
          int64_t q = base + ch * hw + (int64_t)qy * g.w + qx;
          acc = __fadd_rn(acc, __fdiv_rn(__fmul_rn(dy[q], y[q]), __fmul_rn(s[q], (float)area)));
        }
      ratio = __fmul_rn(__fmul_rn(2.0f, g.alpha), g.beta);
    }
    dx[e] = __fsub_rn(__fmul_rn(dy[e], powf(s[e], -g.beta)), __fmul_rn(__fmul_rn(ratio, x[e]), acc));
  }
}

extern "C" void dd_cuda_lrn_forward(dd_backend *be, int across, int n, int c, int h, int w, int size, float alpha,
                                    float beta, float k, float *y, float *scale, const float *x) {
  dd_cuda_ctx *cx = DD_CUDA_CTX(be);
  int64_t total = (int64_t)n * c * h * w;
  if (total <= 0) return;
  lrn_geom g = {across, n, c, h, w, size, alpha, beta, k};
  lrn_fwd_kernel<<<dd_cuda_blocks(cx, total), NT, 0, cx->stream>>>(g, total, y, scale, x);
  DD_CUDA_LAUNCHED(cx);
}

extern "C" void dd_cuda_lrn_backward(dd_backend *be, int across, int n, int c, int h, int w, int size, float alpha,
                                     float beta, float *dx, const float *dy, const float *x, const float *y,
                                     const float *scale) {
  dd_cuda_ctx *cx = DD_CUDA_CTX(be);
  int64_t total = (int64_t)n * c * h * w;
  if (total <= 0) return;
  lrn_geom g = {across, n, c, h, w, size, alpha, beta, 0.0f};
  lrn_bwd_kernel<<<dd_cuda_blocks(cx, total), NT, 0, cx->stream>>>(g, total, dx, dy, x, y, scale);
  DD_CUDA_LAUNCHED(cx);
}

/* the block's sums of a and b, in a fixed tree order; valid in every thread after the call */
__device__ static void block_sum2(double *a, double *b) {
  __shared__ double sa[NT], sb[NT];
  sa[threadIdx.x] = *a;
  sb[threadIdx.x] = *b;
  __syncthreads();
  for (int w = NT / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) {
      sa[threadIdx.x] += sa[threadIdx.x + w];
      sb[threadIdx.x] += sb[threadIdx.x + w];
    }
    __syncthreads();
  }
  *a = sa[0];
  *b = sb[0];
  __syncthreads();
}

static __global__ void mvn_fwd_kernel(int64_t rows, int64_t dim, int nv, float eps, float *y, float *sd, const float *x) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * dim;
    float *yr = y + r * dim;
    double m = 0, unused = 0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) m += xr[i];
    block_sum2(&m, &unused);
    m /= (double)dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = (float)(xr[i] - m);
    float s = 1.0f;
    if (nv) {
      double v = 0;
      for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) v += (double)yr[i] * yr[i];
      unused = 0;
      block_sum2(&v, &unused);
      s = __fadd_rn((float)sqrt(v / (double)dim), eps);
      for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = __fdiv_rn(yr[i], s);
    }
    if (threadIdx.x == 0) sd[r] = s;
  }
}

static __global__ void mvn_bwd_kernel(int64_t rows, int64_t dim, int nv, float *dx, const float *dy, const float *y,
                                      const float *sd) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *dyr = dy + r * dim, *yr = y + r * dim;
    float *dxr = dx + r * dim;
    double s1 = 0, s2 = 0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      s1 += (double)dyr[i] * yr[i];
      s2 += dyr[i];
    }
    block_sum2(&s1, &s2);
    double m1 = s1 / (double)dim, m2 = s2 / (double)dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
      dxr[i] = nv ? (float)((dyr[i] - (m1 * yr[i] + m2)) / (double)sd[r]) : (float)(dyr[i] - m2);
  }
}

extern "C" void dd_cuda_mvn_forward(dd_backend *be, int64_t rows, int64_t dim, int normalize_variance, float eps,
                                    float *y, float *sd, const float *x) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (rows <= 0 || dim <= 0) return;
  int blocks = rows < 65535 ? (int)rows : 65535;
  mvn_fwd_kernel<<<blocks, NT, 0, c->stream>>>(rows, dim, normalize_variance, eps, y, sd, x);
  DD_CUDA_LAUNCHED(c);
}

extern "C" void dd_cuda_mvn_backward(dd_backend *be, int64_t rows, int64_t dim, int normalize_variance, float *dx,
                                     const float *dy, const float *y, const float *sd) {
  dd_cuda_ctx *c = DD_CUDA_CTX(be);
  if (rows <= 0 || dim <= 0) return;
  int blocks = rows < 65535 ? (int)rows : 65535;
  mvn_bwd_kernel<<<blocks, NT, 0, c->stream>>>(rows, dim, normalize_variance, dx, dy, y, sd);
  DD_CUDA_LAUNCHED(c);
}
