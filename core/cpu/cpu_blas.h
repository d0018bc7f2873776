/* The CPU backend's BLAS: OpenBLAS, loaded at run time with dlopen so that distilld picks its
 * kernels before the library starts.
 *
 * Why: Debian's OpenBLAS (DYNAMIC_ARCH) chooses its kernels once, in its load-time constructor,
 * from the CPU model or from OPENBLAS_CORETYPE. On CPUs newer than the library it falls back to
 * generic "Prescott" kernels (sgemm 1024^3: 25 GFLOP/s here, against 124 with SkylakeX kernels on
 * the same core; docs/performance.md). Linked the usual way, the constructor runs before main(),
 * so no code of ours could set the variable in time; loaded with dlopen, it runs when we say.
 * Every program that creates a CPU backend gets the right kernels without a setting; a user's
 * own OPENBLAS_CORETYPE always wins. */
#ifndef DD_CPU_BLAS_H
#define DD_CPU_BLAS_H

#include <stddef.h>

/* Loads OpenBLAS once per process (thread-safe; later calls return the first call's result).
 * When OPENBLAS_CORETYPE is unset it is set first from the CPU's features: AVX-512 F/BW/DQ/VL ->
 * SkylakeX, else AVX2 + FMA -> Haswell, else OpenBLAS's own choice. OPENBLAS_NUM_THREADS is set
 * to 1 when unset: the backend's pool owns the parallelism, so OpenBLAS's own threads would only
 * sit idle. Both go through setenv(), so call this before other threads exist: first thing in
 * main(). dd_cpu_backend_create calls it too (a no-op when already done). Returns 0, or
 * DD_ENOTFOUND when no OpenBLAS could be loaded, with the reason in `err` (may be NULL). Never
 * exits. */
int dd_cpu_ensure_fast_blas(char *err, size_t errlen);

/* One line for logs: the library, its version and the kernel in use, and who chose it, e.g.
 * "OpenBLAS 0.3.21 SkylakeX kernels (chosen by distilld: the CPU has AVX-512)". Valid after a
 * successful dd_cpu_ensure_fast_blas. */
const char *dd_cpu_blas_describe(void);

/* OpenBLAS's name for the kernels in use ("SkylakeX", "Haswell", "Prescott", ...). */
const char *dd_cpu_blas_corename(void);

/* The convolution kernels this CPU gets (core/cpu_conv.c), for the backend's description:
 * "direct AVX-512 + im2col/sgemm" (the direct kernel where it wins), or "im2col/sgemm". */
const char *dd_cpu_conv_kernels(void);

/* Row-major single-precision GEMM on the calling thread (OpenBLAS runs one thread):
 * C (m x n, ldc) = alpha * op(A) * op(B) + beta * C, op(A) m x k, op(B) k x n; A is (m, k) with
 * lda, or (k, m) when ta; B is (k, n) with ldb, or (n, k) when tb. Only after a successful
 * dd_cpu_ensure_fast_blas. */
void dd_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc);

#endif
