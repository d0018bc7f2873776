/* oneDNN convolutions for the CPU backend (cpu_dnnl.c).
 *
 * oneDNN (Debian's libdnnl 2.6, the library PyTorch's CPU convolutions come from) has JIT
 * convolution kernels for each x86 ISA, AVX2 to AMX, in FP32 and bf16, chosen at run time for the
 * CPU at hand. It is the project's bf16 path: bf16 inputs and weights, FP32 accumulation and FP32
 * outputs and weight gradients, on the CPU's AVX512-BF16 or AMX units where it has them. In FP32
 * it runs the convolutions where its kernels are AVX-512 (faster than the project's own there,
 * docs/performance.md section 12); on AVX2 the own kernels were as fast (section 11) and run them.
 * DD_DNNL=all (oneDNN for every FP32 convolution) and DD_DNNL=own (none) force a choice.
 *
 * How it is used: tensors stay Caffe's NCHW FP32; each convolution reorders its inputs into the
 * layouts (and, in bf16, the element type) oneDNN's kernel wants and its outputs back, inside the
 * call (a learning layer's converted input is kept in its workspace for backward-filter, and
 * backward-data reuses the dy backward-filter converted). A frozen net's blocked plan
 * (core/net/plan.h) instead hands oneDNN activations already in its blocked layout
 * (dd_dnnl_blk_*). Every primitive, reorder and buffer is made when the layer is set up
 * (conv_workspace): the calls allocate nothing (oneDNN's scratchpads are ours, "user" mode, in
 * one arena per backend, which the calls use one at a time). A convolution oneDNN has no kernel
 * for (or DD_DNNL=0) runs on the project's own kernels.
 *
 * The bf16 path: bf16 convolutions run only where the CPU has bf16 units (AMX-BF16 or
 * AVX512-BF16: oneDNN's effective ISA is avx512_core_bf16 or above), never on oneDNN's
 * emulation of bf16 on older AVX-512, which is slower than FP32; elsewhere a bf16 convolution
 * runs FP32. DD_BF16 in the environment forces a path: "amx" (the default, AMX where the CPU has
 * it), "avx512_bf16" (caps oneDNN at AVX512-BF16, for measurements and tests on AMX machines), or
 * "off" (bf16 asked runs FP32); dd_dnnl_describe says which (and names the ISA oneDNN uses).
 * Where the CPU has AMX, the Linux permission for its tile data (arch_prctl
 * ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) is asked for before oneDNN loads; a refusal leaves
 * oneDNN on AVX512-BF16.
 *
 * Threads: oneDNN runs on OpenMP (Debian's build). Idle OpenMP threads spin by default, which
 * starves the decode threads that share the cores (a spinning pool once made a forward 370x
 * slower here); distilld sets OMP_WAIT_POLICY=PASSIVE (unless the user set it) before the library
 * loads: oneDNN is opened with dlopen for that reason, after dd_cpu_ensure_fast_blas set the
 * variable (cpu_blas.h). Each call runs on as many OpenMP threads as the backend has. */
#ifndef DD_CPU_DNNL_H
#define DD_CPU_DNNL_H

#include <stddef.h>

#include "base/backend.h"
#include "cpu/threadpool.h"

typedef struct dd_dnnl dd_dnnl;

/* Loads oneDNN once per process. 0 when it is there (and not turned off by DD_DNNL=0); else
 * DD_ENOTFOUND with the reason in `why` (may be NULL). */
int dd_dnnl_load(char *why, size_t len);
/* Whether bf16 convolutions run on bf16 units here (see above); 0 without oneDNN. */
int dd_dnnl_bf16_available(void);
/* Whether oneDNN runs the FP32 convolutions here (see above); 0 without oneDNN. */
int dd_dnnl_fp32_on_dnnl(void);
/* "oneDNN 2.6.3, ISA avx512_core_bf16, bf16 on AVX512-BF16", or why it is not used. */
const char *dd_dnnl_describe(void);

/* A backend's oneDNN state (engine, stream, primitives, arena). NULL when oneDNN is absent.
 * `pool` (the backend's) runs the own NCHW FP32 -> nChw16c bf16 conversion that replaces
 * oneDNN's reorder in front of bf16 convolutions (2.3x faster here; DD_CONVERT=dnnl keeps
 * oneDNN's, for measurements). */
dd_dnnl *dd_dnnl_create(int threads, dd_threadpool *pool);
void dd_dnnl_destroy(dd_dnnl *k);

/* Makes the primitives for d (once per distinct d; d->precision 1 asks for bf16, which falls back
 * to FP32 where this CPU has no bf16 kernel). Returns 1 when oneDNN runs this convolution, 0 when
 * the caller's own kernels must (no kernel, out of memory). */
int dd_dnnl_conv_prepare(dd_dnnl *k, const dd_conv_desc *d);
/* The implementation oneDNN chose for d ("oneDNN jit:avx2 f32", "oneDNN jit:avx512_core_amx
 * bf16"), or NULL when oneDNN does not run d. oneDNN runs every pass of a bf16 convolution and,
 * where dd_dnnl_fp32_on_dnnl, of an FP32 one. */
const char *dd_dnnl_conv_impl(dd_dnnl *k, const dd_conv_desc *d);

/* Bytes a layer's workspace holds for the forward's converted input, kept for backward-filter
 * (d->keep_input, and oneDNN converts x for both passes alike); 0 when nothing is kept.
 * keep_input_at also records where (every layer of d alike, at setup): `offset` bytes into the
 * workspace, a multiple of 64 (workspaces are 64-byte aligned). */
size_t dd_dnnl_conv_kept_bytes(dd_dnnl *k, const dd_conv_desc *d);
size_t dd_dnnl_conv_keep_input_at(dd_dnnl *k, const dd_conv_desc *d, size_t offset);

/* The three passes, with backend.h's semantics (the filter pass accumulates). Each returns 0, or
 * -1 when d is not oneDNN's (then nothing was done). `ws`: the layer's workspace (NULL: none):
 * where oneDNN keeps d's converted input (dd_dnnl_conv_keep_input_at), the forward converts x
 * into it, and backward-filter reads x from it instead of converting x again (keep_input's
 * promise).
 * Backward-data right after backward-filter with the same dy (a Convolution layer's backward)
 * reuses the converted dy when both passes want it alike. */
int dd_dnnl_conv_forward(dd_dnnl *k, const dd_conv_desc *d, float *y, const float *x, const float *w,
                         const float *bias, void *ws);
int dd_dnnl_conv_backward_data(dd_dnnl *k, const dd_conv_desc *d, float *dx, const float *dy, const float *w);
int dd_dnnl_conv_backward_filter(dd_dnnl *k, const dd_conv_desc *d, float *dw, float *dbias, const float *dy,
                                 const float *x, const void *ws);

/* Inference in oneDNN's blocked layout (backend.h, "inference in the blocked layout"): y, the
 * caller's nChw16c memory (bf16 where `bf16`, else FP32), = relu?(conv(x, w) + bias) (leaky with
 * `slope`), x the caller's nChw16c of the same type (x_blocked) or NCHW FP32; weights and bias
 * FP32 NCHW as everywhere, converted inside the call. prepare makes the primitive (once per
 * distinct arguments) and returns 1 when oneDNN runs it (bf16: on bf16 units; FP32: where oneDNN
 * runs the FP32 convolutions, dd_dnnl_fp32_on_dnnl), 0 when not (groups, channels not a multiple
 * of 16); forward prepares when needed and returns 0, or -1 (nothing done) when it cannot run. */
int dd_dnnl_blk_prepare(dd_dnnl *k, const dd_conv_desc *d, int bf16, int x_blocked, int relu, float slope);
int dd_dnnl_blk_forward(dd_dnnl *k, const dd_conv_desc *d, int bf16, int x_blocked, int relu, float slope, void *y,
                        const void *x, const float *w, const float *bias);

#endif
