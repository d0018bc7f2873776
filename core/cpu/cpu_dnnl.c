/* oneDNN convolutions (see cpu_dnnl.h). Built only where Debian's libdnnl-dev headers are (the
 * build defines DD_HAVE_DNNL); the library itself is opened at run time. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* syscall */
#include "cpu/cpu_dnnl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "cpu/cpu_kernels.h"

#ifndef DD_HAVE_DNNL

int dd_dnnl_load(char *why, size_t len) {
  return dd_errorf(DD_ENOTFOUND, why, len, "built without oneDNN's headers (libdnnl-dev)");
}
const char *dd_dnnl_describe(void) { return "oneDNN: not built in"; }
int dd_dnnl_bf16_available(void) { return 0; }
int dd_dnnl_fp32_on_dnnl(void) { return 0; }
dd_dnnl *dd_dnnl_create(int threads, dd_threadpool *pool) {
  (void)threads, (void)pool;
  return NULL;
}
void dd_dnnl_destroy(dd_dnnl *k) { (void)k; }
int dd_dnnl_conv_prepare(dd_dnnl *k, const dd_conv_desc *d) {
  (void)k, (void)d;
  return 0;
}
const char *dd_dnnl_conv_impl(dd_dnnl *k, const dd_conv_desc *d) {
  (void)k, (void)d;
  return NULL;
}
size_t dd_dnnl_conv_kept_bytes(dd_dnnl *k, const dd_conv_desc *d) {
  (void)k, (void)d;
  return 0;
}
size_t dd_dnnl_conv_keep_input_at(dd_dnnl *k, const dd_conv_desc *d, size_t offset) {
  (void)k, (void)d, (void)offset;
  return 0;
}
int dd_dnnl_conv_forward(dd_dnnl *k, const dd_conv_desc *d, float *y, const float *x, const float *w,
                         const float *bias, void *ws) {
  (void)k, (void)d, (void)y, (void)x, (void)w, (void)bias, (void)ws;
  return -1;
}
int dd_dnnl_conv_backward_data(dd_dnnl *k, const dd_conv_desc *d, float *dx, const float *dy, const float *w) {
  (void)k, (void)d, (void)dx, (void)dy, (void)w;
  return -1;
}
int dd_dnnl_conv_backward_filter(dd_dnnl *k, const dd_conv_desc *d, float *dw, float *dbias, const float *dy,
                                 const float *x, const void *ws) {
  (void)k, (void)d, (void)dw, (void)dbias, (void)dy, (void)x, (void)ws;
  return -1;
}
int dd_dnnl_blk_prepare(dd_dnnl *k, const dd_conv_desc *d, int bf16, int x_blocked, int relu, float slope) {
  (void)k, (void)d, (void)bf16, (void)x_blocked, (void)relu, (void)slope;
  return 0;
}
int dd_dnnl_blk_forward(dd_dnnl *k, const dd_conv_desc *d, int bf16, int x_blocked, int relu, float slope, void *y,
                        const void *x, const float *w, const float *bias) {
  (void)k, (void)d, (void)bf16, (void)x_blocked, (void)relu, (void)slope, (void)y, (void)x, (void)w, (void)bias;
  return -1;
}

#else

#include <oneapi/dnnl/dnnl.h>

/* ---- the library, through dlopen ---------------------------------------------------------------- */

#define DNNL_FNS(X)                                                                                  \
  X(dnnl_engine_create) X(dnnl_engine_destroy) X(dnnl_stream_create) X(dnnl_stream_destroy)          \
  X(dnnl_stream_wait) X(dnnl_memory_desc_init_by_tag) X(dnnl_memory_desc_equal)                      \
  X(dnnl_memory_desc_get_size) X(dnnl_dilated_convolution_forward_desc_init)                         \
  X(dnnl_dilated_convolution_backward_data_desc_init) X(dnnl_dilated_convolution_backward_weights_desc_init) \
  X(dnnl_primitive_attr_create) X(dnnl_primitive_attr_destroy) X(dnnl_primitive_attr_set_scratchpad_mode) \
  X(dnnl_primitive_desc_create) X(dnnl_primitive_desc_destroy) X(dnnl_primitive_desc_query)          \
  X(dnnl_primitive_desc_query_md) X(dnnl_primitive_create) X(dnnl_primitive_destroy)                 \
  X(dnnl_primitive_execute) X(dnnl_memory_create) X(dnnl_memory_destroy) X(dnnl_memory_set_data_handle) \
  X(dnnl_reorder_primitive_desc_create) X(dnnl_memory_get_memory_desc) X(dnnl_memory_get_data_handle) X(dnnl_version)                 \
  X(dnnl_post_ops_create) X(dnnl_post_ops_destroy) X(dnnl_post_ops_append_eltwise)                   \
  X(dnnl_primitive_attr_set_post_ops) X(dnnl_set_max_cpu_isa) X(dnnl_get_effective_cpu_isa)

#define DECLARE(f) static __typeof__(&f) p_##f;
DNNL_FNS(DECLARE)
#undef DECLARE
static void (*p_omp_set_num_threads)(int);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int load_status, bf16_ok;
static char load_err[256], describe[320];

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
/* CPUID leaf 7: EDX bit 24 AMX-TILE, bit 22 AMX-BF16. */
static int cpu_has_amx(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  return (d >> 24 & 1) && (d >> 22 & 1);
}
/* Linux gives a process AMX tile data only when asked (arch_prctl ARCH_REQ_XCOMP_PERM with
 * XFEATURE_XTILEDATA, 0x1023 and 18). 1 granted, 0 refused. */
static int request_amx(void) { return syscall(SYS_arch_prctl, 0x1023, 18) == 0; }
#else
static int cpu_has_amx(void) { return 0; }
static int request_amx(void) { return 0; }
#endif

static const char *isa_name(dnnl_cpu_isa_t isa) {
  switch (isa) {
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx2: return "avx2";
    default: return "older than avx2";
  }
}

/* The bf16 path (cpu_dnnl.h): DD_BF16, the AMX permission, the ISA cap; sets bf16_ok and the
 * description's tail. */
static void choose_bf16(char *tail, size_t len) {
  const char *want = getenv("DD_BF16");
  if (want && !*want) want = NULL;
  int amx = cpu_has_amx(), granted = amx && request_amx();
  if (want && !strcmp(want, "off")) {
    bf16_ok = 0;
    snprintf(tail, len, ", ISA %s, bf16 off (DD_BF16=off)", isa_name(p_dnnl_get_effective_cpu_isa()));
    return;
  }
  if ((want && !strcmp(want, "avx512_bf16")) || (amx && !granted))
    p_dnnl_set_max_cpu_isa(dnnl_cpu_isa_avx512_core_bf16);
  dnnl_cpu_isa_t isa = p_dnnl_get_effective_cpu_isa();
  bf16_ok = (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
  const char *note = want && strcmp(want, "amx") && strcmp(want, "avx512_bf16") && strcmp(want, "auto")
                         ? " (DD_BF16 not one of amx, avx512_bf16, off: ignored)"
                         : "";
  snprintf(tail, len, ", ISA %s, bf16 %s%s%s", isa_name(isa),
           !bf16_ok ? "runs FP32 (no bf16 units)"
           : isa == dnnl_cpu_isa_avx512_core_amx ? "on AMX"
                                                   : "on AVX512-BF16",
           amx && !granted ? " (the kernel refused the AMX tile permission)" : "", note);
}

/* Which FP32 convolutions oneDNN runs (measured, docs/performance.md sections 11 and 12): all of
 * them where oneDNN has AVX-512 kernels (its effective ISA avx512_core or above: there its FP32
 * kernels, with the forward's converted input kept and dy shared, beat the own kernels by 1.2 to
 * 1.4x on the KD step), none on AVX2 (where the own kernels were as fast on the WRN shapes,
 * faster in backward-filter). DD_DNNL=all or DD_DNNL=own forces either (for measurements and
 * tests). Only those get primitives: an entry that is ok runs every pass. */
static int fp32_mode = -1;

static void choose_fp32(void) {
  const char *v = getenv("DD_DNNL");
  if (v && !strcmp(v, "all")) fp32_mode = 1;
  else if (v && !strcmp(v, "own")) fp32_mode = 0;
  else fp32_mode = (p_dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core;
}

static int fp32_too(void) { return fp32_mode > 0; }

static void load(void) {
  const char *off = getenv("DD_DNNL");
  if (off && !strcmp(off, "0")) {
    load_status = dd_errorf(DD_ENOTFOUND, load_err, sizeof load_err, "turned off (DD_DNNL=0)");
    snprintf(describe, sizeof describe, "oneDNN off (DD_DNNL=0)");
    return;
  }
  void *h = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    load_status = dd_errorf(DD_ENOTFOUND, load_err, sizeof load_err, "cannot load libdnnl.so.2: %s", dlerror());
    snprintf(describe, sizeof describe, "oneDNN not installed (libdnnl2.6)");
    return;
  }
  void *sym;
#define RESOLVE(f)                                                                                       \
  if (!(sym = dlsym(h, #f))) {                                                                           \
    load_status = dd_errorf(DD_ENOTFOUND, load_err, sizeof load_err, "libdnnl.so.2 lacks %s", #f);       \
    snprintf(describe, sizeof describe, "oneDNN unusable (%s missing)", #f);                             \
    return;                                                                                              \
  }                                                                                                      \
  memcpy(&p_##f, &sym, sizeof sym);
  DNNL_FNS(RESOLVE)
#undef RESOLVE
  if ((sym = dlsym(h, "omp_set_num_threads"))) memcpy(&p_omp_set_num_threads, &sym, sizeof sym);
  const dnnl_version_t *v = p_dnnl_version();
  char tail[224];
  choose_bf16(tail, sizeof tail);
  choose_fp32();
  snprintf(describe, sizeof describe, "oneDNN %d.%d.%d%s, FP32 %s", v->major, v->minor, v->patch, tail,
           fp32_too() ? "on oneDNN" : "on the own kernels");
}

int dd_dnnl_bf16_available(void) {
  pthread_once(&once, load);
  return !load_status && bf16_ok;
}

int dd_dnnl_load(char *why, size_t len) {
  pthread_once(&once, load);
  if (load_status && why && len) snprintf(why, len, "%s", load_err);
  return load_status;
}

const char *dd_dnnl_describe(void) {
  pthread_once(&once, load);
  return describe;
}

/* ---- primitives -------------------------------------------------------------------------------- */

/* One argument of a primitive: the caller's NCHW FP32 memory, and (when oneDNN's kernel wants
 * another layout or type) its own copy in the arena with the reorder between them: oneDNN's, or
 * (own) the project's NCHW FP32 -> nChw16c bf16 conversion (cpu_convert.c), which is faster. */
typedef struct {
  dnnl_memory_t user, prim;
  dnnl_primitive_t reorder; /* NULL: the primitive reads or writes the user memory */
  size_t off;               /* the copy's offset in the arena */
  int own, n, c, s;         /* own: converted by dd_cpu_nchw_to_blk_bf16, (n, c, s) */
} arg_slot;

enum { FWD, BWD_DATA, BWD_W, N_PASSES };

typedef struct {
  dnnl_primitive_t prim;
  dnnl_memory_t scratch;
  size_t scratch_off;
  arg_slot a[4]; /* FWD: src, weights, dst, bias; BWD_DATA: diff_dst, weights, diff_src; BWD_W:
                    src, diff_dst, diff_weights, diff_bias */
  int n_args;
  size_t bytes;  /* arena bytes this pass needs */
} pass;

typedef struct {
  dd_conv_desc d;
  int ok;        /* 1: oneDNN runs it; 0: the own kernels */
  char impl[96];
  pass p[N_PASSES];
  size_t out_off; /* BWD_W: where the plain dW and dbias land before they are added */
  size_t kept;    /* bytes of the forward's converted x that backward-filter can read (0: none) */
  size_t kept_at; /* where in each layer's workspace (dd_dnnl_conv_keep_input_at) */
  int dy_shared;  /* BWD_W and BWD_DATA convert dy alike, into the same arena bytes */
} conv_entry;

/* An inference convolution in the blocked layout (dd_dnnl_blk_forward): its key and its one pass
 * (src, weights, dst, bias; dst is the caller's nChw16c memory, bf16 or FP32). */
typedef struct {
  dd_conv_desc d;
  int bf16, x_blocked, relu;
  float slope;
  int ok;
  pass p;
} blk_entry;

struct dd_dnnl {
  dd_threadpool *pool; /* the backend's, for the own conversions */
  blk_entry **blk;
  size_t n_blk, cap_blk;
  dnnl_engine_t eng;
  dnnl_stream_t strm;
  dnnl_primitive_attr_t attr; /* user scratchpads */
  int threads;
  conv_entry **e; /* each allocated on its own: impl strings stay put */
  size_t n, cap;
  char *arena;
  size_t arena_size;
  /* the converted dy the last call (a backward-filter) left at the arena's start, or NULL */
  const conv_entry *dy_entry;
  const float *dy_user;
};

dd_dnnl *dd_dnnl_create(int threads, dd_threadpool *pool) {
  if (dd_dnnl_load(NULL, 0)) return NULL;
  dd_dnnl *k = calloc(1, sizeof *k);
  if (!k) return NULL;
  k->threads = threads;
  k->pool = pool;
  if (p_dnnl_engine_create(&k->eng, dnnl_cpu, 0) || p_dnnl_stream_create(&k->strm, k->eng, dnnl_stream_default_flags) ||
      p_dnnl_primitive_attr_create(&k->attr) ||
      p_dnnl_primitive_attr_set_scratchpad_mode(k->attr, dnnl_scratchpad_mode_user)) {
    dd_dnnl_destroy(k);
    return NULL;
  }
  return k;
}

static void free_pass(pass *p) {
  if (p->prim) p_dnnl_primitive_destroy(p->prim);
  if (p->scratch) p_dnnl_memory_destroy(p->scratch);
  for (int i = 0; i < 4; i++) {
    arg_slot *s = &p->a[i];
    if (s->reorder) p_dnnl_primitive_destroy(s->reorder);
    if (s->prim && s->prim != s->user) p_dnnl_memory_destroy(s->prim);
    if (s->user) p_dnnl_memory_destroy(s->user);
  }
  memset(p, 0, sizeof *p);
}

void dd_dnnl_destroy(dd_dnnl *k) {
  if (!k) return;
  for (size_t i = 0; i < k->n; i++) {
    for (int p = 0; p < N_PASSES; p++) free_pass(&k->e[i]->p[p]);
    free(k->e[i]);
  }
  free(k->e);
  for (size_t i = 0; i < k->n_blk; i++) {
    free_pass(&k->blk[i]->p);
    free(k->blk[i]);
  }
  free(k->blk);
  free(k->arena);
  if (k->attr) p_dnnl_primitive_attr_destroy(k->attr);
  if (k->strm) p_dnnl_stream_destroy(k->strm);
  if (k->eng) p_dnnl_engine_destroy(k->eng);
  free(k);
}

static size_t up64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Whether slot s converts the caller's memory into a copy (a reorder, or the own conversion). */
static int converts(const arg_slot *s) { return s->reorder || s->own; }

/* DD_CONVERT=dnnl: oneDNN's reorders for every conversion (for measurements), else the own
 * NCHW FP32 -> nChw16c bf16 one where it applies. */
static int getenv_own_off(void) {
  static int off = -1;
  if (off < 0) {
    const char *v = getenv("DD_CONVERT");
    off = v && !strcmp(v, "dnnl");
  }
  return off;
}

/* Slot i of pass p: the user memory (plain md) and the primitive's (md `want`); `in` says which way
 * the reorder goes. Returns 0 or -1. */
static int make_slot(dd_dnnl *k, pass *p, int i, const dnnl_memory_desc_t *plain, const dnnl_memory_desc_t *want,
                     int in) {
  arg_slot *s = &p->a[i];
  if (p_dnnl_memory_create(&s->user, plain, k->eng, DNNL_MEMORY_NONE)) return -1;
  if (p_dnnl_memory_desc_equal(plain, want)) {
    s->prim = s->user;
    return 0;
  }
  if (p_dnnl_memory_create(&s->prim, want, k->eng, DNNL_MEMORY_NONE)) return -1;
  /* NCHW FP32 into nChw16c bf16 (inputs of bf16 convolutions): the own conversion */
  dnnl_memory_desc_t blk;
  if (in && plain->ndims == 4 && plain->data_type == dnnl_f32 && plain->dims[1] % 16 == 0 &&
      dd_cpu_nchw_to_blk_bf16_available() && !getenv_own_off() &&
      !p_dnnl_memory_desc_init_by_tag(&blk, 4, plain->dims, dnnl_bf16, dnnl_nChw16c) &&
      p_dnnl_memory_desc_equal(&blk, want)) {
    s->own = 1, s->n = (int)plain->dims[0], s->c = (int)plain->dims[1], s->s = (int)(plain->dims[2] * plain->dims[3]);
    s->off = p->bytes;
    p->bytes += up64(p_dnnl_memory_desc_get_size(want));
    return 0;
  }
  dnnl_primitive_desc_t rpd;
  if (in ? p_dnnl_reorder_primitive_desc_create(&rpd, plain, k->eng, want, k->eng, k->attr)
         : p_dnnl_reorder_primitive_desc_create(&rpd, want, k->eng, plain, k->eng, k->attr))
    return -1;
  /* a reorder that needs a scratchpad is not one we can run without allocating: refuse it */
  const dnnl_memory_desc_t *sp = p_dnnl_primitive_desc_query_md(rpd, dnnl_query_scratchpad_md, 0);
  int st = sp && p_dnnl_memory_desc_get_size(sp) ? -1 : (int)p_dnnl_primitive_create(&s->reorder, rpd);
  p_dnnl_primitive_desc_destroy(rpd);
  if (st) return -1;
  s->off = p->bytes;
  p->bytes += up64(p_dnnl_memory_desc_get_size(want));
  return 0;
}

/* The pass's primitive and scratchpad from its primitive descriptor (which it then frees). */
static int finish_pass(dd_dnnl *k, pass *p, dnnl_primitive_desc_t pd) {
  const dnnl_memory_desc_t *sp = p_dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  int r = 0;
  if (sp && p_dnnl_memory_desc_get_size(sp)) {
    if (p_dnnl_memory_create(&p->scratch, sp, k->eng, DNNL_MEMORY_NONE)) r = -1;
    p->scratch_off = p->bytes;
    p->bytes += up64(p_dnnl_memory_desc_get_size(sp));
  }
  if (!r && p_dnnl_primitive_create(&p->prim, pd)) r = -1;
  p_dnnl_primitive_desc_destroy(pd);
  return r;
}

#define MD(pd, what, i) p_dnnl_primitive_desc_query_md(pd, what, i)

/* The right padding (rows, columns) that gives d's output size. Caffe's output size floors (a 1x1
 * stride-2 convolution of 32 gives 16 and leaves the last input row unread): the exact padding
 * may then be negative, which oneDNN refuses; 0 gives the same output size under oneDNN's floor,
 * and reads the same inputs. 0, or -1 when no padding >= 0 gives d's output size. */
static int right_pads(const dd_conv_desc *d, dnnl_dims_t pr) {
  for (int i = 0; i < 2; i++) {
    int in = i ? d->w : d->h, k = i ? d->kw : d->kh, di = i ? d->dw : d->dh, s = i ? d->sw : d->sh;
    int pad = i ? d->pw : d->ph, o = i ? d->out_w : d->out_h;
    pr[i] = (o - 1) * s + (k - 1) * di + 1 - in - pad;
    if (pr[i] < 0 && (in - ((k - 1) * di + 1) + pad) / s + 1 == o) pr[i] = 0;
    if (pr[i] < 0) return -1;
  }
  return 0;
}

/* Builds the three passes of e in `dt` (dnnl_f32 or dnnl_bf16). Returns 0 or -1 (nothing kept). */
static int build_entry(dd_dnnl *k, conv_entry *e, dnnl_data_type_t dt) {
  const dd_conv_desc *d = &e->d;
  int g = d->group;
  dnnl_dims_t sd = {d->n, d->c, d->h, d->w}, dd = {d->n, d->out_c, d->out_h, d->out_w}, bd = {d->out_c};
  dnnl_dims_t wd5 = {g, d->out_c / g, d->c / g, d->kh, d->kw}, wd4 = {d->out_c, d->c, d->kh, d->kw};
  dnnl_dims_t st = {d->sh, d->sw}, dil = {d->dh - 1, d->dw - 1}, pl = {d->ph, d->pw};
  dnnl_dims_t pr;
  if (right_pads(d, pr)) return -1;
  int wn = g > 1 ? 5 : 4;
  dnnl_dim_t *wdims = g > 1 ? wd5 : wd4;
  dnnl_format_tag_t wtag = g > 1 ? dnnl_goihw : dnnl_oihw;
  dnnl_memory_desc_t src_p, dst_p, w_p, b_p, src_a, dst_a, dst_f, w_a, w_f;
  dnnl_data_type_t out = dnnl_f32; /* outputs and weight gradients stay FP32 */
  /* the caller's activations: NCHW FP32, or (blk_in: x, dx; blk_out: y, dy) nChw16c in dt, which
   * the primitives then read and write as they are */
  if (p_dnnl_memory_desc_init_by_tag(&src_p, 4, sd, d->blk_in ? dt : dnnl_f32, d->blk_in ? dnnl_nChw16c : dnnl_nchw) ||
      p_dnnl_memory_desc_init_by_tag(&dst_p, 4, dd, d->blk_out ? dt : dnnl_f32, d->blk_out ? dnnl_nChw16c : dnnl_nchw) ||
      p_dnnl_memory_desc_init_by_tag(&w_p, wn, wdims, dnnl_f32, wtag) ||
      p_dnnl_memory_desc_init_by_tag(&b_p, 1, bd, dnnl_f32, dnnl_x) ||
      p_dnnl_memory_desc_init_by_tag(&src_a, 4, sd, dt, dnnl_format_tag_any) ||
      p_dnnl_memory_desc_init_by_tag(&dst_a, 4, dd, dt, dnnl_format_tag_any) ||
      p_dnnl_memory_desc_init_by_tag(&dst_f, 4, dd, out, dnnl_format_tag_any) ||
      p_dnnl_memory_desc_init_by_tag(&w_a, wn, wdims, dt, dnnl_format_tag_any) ||
      p_dnnl_memory_desc_init_by_tag(&w_f, wn, wdims, out, dnnl_format_tag_any))
    return -1;
  if (d->blk_in) src_a = src_p;
  if (d->blk_out) dst_a = dst_f = dst_p;
  const dnnl_memory_desc_t *bias_md = d->bias ? &b_p : NULL;
  dnnl_convolution_desc_t cd;
  dnnl_primitive_desc_t fpd = NULL, pd = NULL;
  /* forward: src, weights in dt; dst FP32 */
  if (p_dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct, &src_a, &w_a,
                                                   bias_md, &dst_f, st, dil, pl, pr) ||
      p_dnnl_primitive_desc_create(&fpd, &cd, k->attr, k->eng, NULL))
    return -1;
  const char *impl = "?";
  p_dnnl_primitive_desc_query(fpd, dnnl_query_impl_info_str, 0, &impl);
  snprintf(e->impl, sizeof e->impl, "oneDNN %s %s", impl, dt == dnnl_bf16 ? "bf16" : "f32");
  pass *f = &e->p[FWD], *b = &e->p[BWD_DATA], *w = &e->p[BWD_W];
  int r = make_slot(k, f, 0, &src_p, MD(fpd, dnnl_query_src_md, 0), 1) ||
          make_slot(k, f, 1, &w_p, MD(fpd, dnnl_query_weights_md, 0), 1) ||
          make_slot(k, f, 2, &dst_p, MD(fpd, dnnl_query_dst_md, 0), 0) ||
          (d->bias && make_slot(k, f, 3, &b_p, MD(fpd, dnnl_query_weights_md, 1), 1));
  f->n_args = d->bias ? 4 : 3;
  /* backward data: diff_dst, weights in dt; diff_src FP32 */
  dnnl_memory_desc_t dsrc_f;
  if (!r) r = p_dnnl_memory_desc_init_by_tag(&dsrc_f, 4, sd, out, dnnl_format_tag_any) != dnnl_success;
  if (d->blk_in) dsrc_f = src_p;
  if (!r)
    r = p_dnnl_dilated_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &dsrc_f, &w_a, &dst_a, st,
                                                           dil, pl, pr) ||
        p_dnnl_primitive_desc_create(&pd, &cd, k->attr, k->eng, fpd);
  if (!r)
    r = make_slot(k, b, 0, &dst_p, MD(pd, dnnl_query_diff_dst_md, 0), 1) ||
        make_slot(k, b, 1, &w_p, MD(pd, dnnl_query_weights_md, 0), 1) ||
        make_slot(k, b, 2, &src_p, MD(pd, dnnl_query_diff_src_md, 0), 0) || finish_pass(k, b, pd);
  else if (pd)
    p_dnnl_primitive_desc_destroy(pd);
  b->n_args = 3;
  /* backward weights: src, diff_dst in dt; diff_weights, diff_bias FP32 (into the arena, then added) */
  pd = NULL;
  if (!r)
    r = p_dnnl_dilated_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &src_a, &w_f, bias_md,
                                                              &dst_a, st, dil, pl, pr) ||
        p_dnnl_primitive_desc_create(&pd, &cd, k->attr, k->eng, fpd);
  if (!r)
    r = make_slot(k, w, 1, &dst_p, MD(pd, dnnl_query_diff_dst_md, 0), 1) || /* dy first: at offset 0, as */
        make_slot(k, w, 0, &src_p, MD(pd, dnnl_query_src_md, 0), 1) ||      /* in BWD_DATA (dy_shared) */
        make_slot(k, w, 2, &w_p, MD(pd, dnnl_query_diff_weights_md, 0), 0) ||
        (d->bias && make_slot(k, w, 3, &b_p, MD(pd, dnnl_query_diff_weights_md, 1), 0)) || finish_pass(k, w, pd);
  else if (pd)
    p_dnnl_primitive_desc_destroy(pd);
  w->n_args = d->bias ? 4 : 3;
  /* the plain dW (and dbias) that are added into the caller's */
  e->out_off = w->bytes;
  w->bytes += up64((size_t)d->out_c * (d->c / g) * d->kh * d->kw * sizeof(float)) + up64((size_t)d->out_c * sizeof(float));
  if (!r) {
    /* what the passes can share: the forward's converted x (kept in the layer's workspace) and
     * backward-filter's converted dy (at the arena's start in both backward passes) */
    const arg_slot *fs = &f->a[0], *ws = &w->a[0], *wd = &w->a[1], *bd = &b->a[0];
    const dnnl_memory_desc_t *m1, *m2;
    if (d->keep_input && converts(fs) && converts(ws) && !p_dnnl_memory_get_memory_desc(fs->prim, &m1) &&
        !p_dnnl_memory_get_memory_desc(ws->prim, &m2) && p_dnnl_memory_desc_equal(m1, m2))
      e->kept = up64(p_dnnl_memory_desc_get_size(m1));
    if (converts(wd) && converts(bd) && wd->off == 0 && bd->off == 0 &&
        !p_dnnl_memory_get_memory_desc(wd->prim, &m1) && !p_dnnl_memory_get_memory_desc(bd->prim, &m2) &&
        p_dnnl_memory_desc_equal(m1, m2))
      e->dy_shared = 1;
  }
  if (!r) r = finish_pass(k, f, fpd);
  else p_dnnl_primitive_desc_destroy(fpd);
  if (r) {
    for (int p = 0; p < N_PASSES; p++) free_pass(&e->p[p]);
    return -1;
  }
  return 0;
}

int dd_dnnl_fp32_on_dnnl(void) {
  pthread_once(&once, load);
  return !load_status && fp32_too();
}

static conv_entry *find(dd_dnnl *k, const dd_conv_desc *d) {
  for (size_t i = 0; i < k->n; i++)
    if (!memcmp(&k->e[i]->d, d, sizeof *d)) return k->e[i];
  return NULL;
}

/* Grows the arena to `need` bytes (at setup). 0 or -1. */
static int arena_reserve(dd_dnnl *k, size_t need) {
  if (need <= k->arena_size) return 0;
  char *a = aligned_alloc(64, up64(need));
  if (!a) return -1;
  free(k->arena);
  k->arena = a;
  k->arena_size = up64(need);
  return 0;
}

int dd_dnnl_conv_prepare(dd_dnnl *k, const dd_conv_desc *d) {
  if (!k) return 0;
  conv_entry *e = find(k, d);
  if (e) return e->ok;
  if (k->n == k->cap) {
    size_t cap = k->cap ? 2 * k->cap : 16;
    conv_entry **ne = realloc(k->e, cap * sizeof *ne);
    if (!ne) return 0;
    k->e = ne;
    k->cap = cap;
  }
  if (!(e = calloc(1, sizeof *e))) return 0;
  k->e[k->n++] = e;
  e->d = *d;
  /* bf16 where asked and this CPU has bf16 units; FP32 where fp32_too; blocked activations
   * (blk_in, blk_out) only in the type they are in: bf16 for a bf16 convolution, else FP32 */
  if (d->blk_in || d->blk_out)
    e->ok = d->precision == 1 ? bf16_ok && build_entry(k, e, dnnl_bf16) == 0 : fp32_too() && build_entry(k, e, dnnl_f32) == 0;
  else
    e->ok = (d->precision == 1 && bf16_ok && build_entry(k, e, dnnl_bf16) == 0) ||
            (fp32_too() && build_entry(k, e, dnnl_f32) == 0);
  if (!e->ok) return 0;
  size_t need = 0;
  for (int p = 0; p < N_PASSES; p++)
    if (e->p[p].bytes > need) need = e->p[p].bytes;
  if (arena_reserve(k, need)) {
    for (int p = 0; p < N_PASSES; p++) free_pass(&e->p[p]);
    e->ok = 0;
    return 0;
  }
  return 1;
}

size_t dd_dnnl_conv_kept_bytes(dd_dnnl *k, const dd_conv_desc *d) {
  conv_entry *e = k ? find(k, d) : NULL;
  return e && e->ok ? e->kept : 0;
}

size_t dd_dnnl_conv_keep_input_at(dd_dnnl *k, const dd_conv_desc *d, size_t offset) {
  conv_entry *e = k ? find(k, d) : NULL;
  if (!e || !e->ok || !e->kept) return 0;
  e->kept_at = offset;
  return e->kept;
}

/* Where the workspace ws holds e's kept input, or NULL. */
static void *kept_in(const conv_entry *e, const void *ws) { return ws && e->kept ? (char *)ws + e->kept_at : NULL; }

const char *dd_dnnl_conv_impl(dd_dnnl *k, const dd_conv_desc *d) {
  conv_entry *e = k ? find(k, d) : NULL;
  return e && e->ok ? e->impl : NULL;
}

/* Points slot i at the caller's memory and its copy in the arena. */
static void bind(dd_dnnl *k, arg_slot *s, const void *user) {
  p_dnnl_memory_set_data_handle(s->user, (void *)user);
  if (s->reorder || s->own) p_dnnl_memory_set_data_handle(s->prim, k->arena + s->off);
}

/* The caller's memory slot s was bound to. */
static const float *user_ptr(const arg_slot *s) {
  void *h = NULL;
  p_dnnl_memory_get_data_handle(s->user, &h);
  return h;
}

/* An input into the primitive's layout (and type). */
static void reorder(dd_dnnl *k, arg_slot *s) {
  if (s->own) { /* into wherever the slot's copy is bound (the arena, or a layer's kept input) */
    void *to = NULL;
    p_dnnl_memory_get_data_handle(s->prim, &to);
    dd_cpu_nchw_to_blk_bf16(k->pool, s->n, s->c, s->s, to, user_ptr(s));
    return;
  }
  if (!s->reorder) return;
  dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, s->user}, {DNNL_ARG_TO, s->prim}};
  p_dnnl_primitive_execute(s->reorder, k->strm, 2, a);
}

/* An output back to the caller's NCHW FP32. */
static void reorder_out(dd_dnnl *k, arg_slot *s) {
  if (!s->reorder) return;
  dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, s->prim}, {DNNL_ARG_TO, s->user}};
  p_dnnl_primitive_execute(s->reorder, k->strm, 2, a);
}

/* Runs pass p: its arguments are of the kinds `kinds`; the slots in the bit mask `inputs` are
 * read (reordered in first, unless in `ready`: already converted), the others written (reordered
 * out after). */
static void run_pass(dd_dnnl *k, pass *p, const int *kinds, unsigned inputs, unsigned ready) {
  if (p_omp_set_num_threads) p_omp_set_num_threads(k->threads);
  k->dy_entry = NULL, k->dy_user = NULL;
  for (int i = 0; i < p->n_args; i++)
    if ((inputs >> i & 1) && !(ready >> i & 1)) reorder(k, &p->a[i]);
  dnnl_exec_arg_t a[5];
  int n = 0;
  for (int i = 0; i < p->n_args; i++) a[n++] = (dnnl_exec_arg_t){kinds[i], p->a[i].prim};
  if (p->scratch) {
    p_dnnl_memory_set_data_handle(p->scratch, k->arena + p->scratch_off);
    a[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, p->scratch};
  }
  p_dnnl_primitive_execute(p->prim, k->strm, n, a);
  for (int i = 0; i < p->n_args; i++)
    if (!(inputs >> i & 1)) reorder_out(k, &p->a[i]);
  p_dnnl_stream_wait(k->strm);
}

int dd_dnnl_conv_forward(dd_dnnl *k, const dd_conv_desc *d, float *y, const float *x, const float *w,
                         const float *bias, void *ws) {
  conv_entry *e = k ? find(k, d) : NULL;
  if (!e || !e->ok || !!bias != !!d->bias) return -1;
  pass *p = &e->p[FWD];
  bind(k, &p->a[0], x);
  void *kept = kept_in(e, ws);
  if (kept) p_dnnl_memory_set_data_handle(p->a[0].prim, kept); /* x converted into the workspace */
  bind(k, &p->a[1], w);
  bind(k, &p->a[2], y);
  if (bias) bind(k, &p->a[3], bias);
  static const int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
  run_pass(k, p, kinds, 0xbu, 0); /* src, weights, bias in; dst out */
  return 0;
}

int dd_dnnl_conv_backward_data(dd_dnnl *k, const dd_conv_desc *d, float *dx, const float *dy, const float *w) {
  conv_entry *e = k ? find(k, d) : NULL;
  if (!e || !e->ok) return -1;
  pass *p = &e->p[BWD_DATA];
  /* dy as backward-filter just converted it (both at the arena's start) */
  unsigned ready = e->dy_shared && k->dy_entry == e && k->dy_user == dy ? 0x1u : 0;
  bind(k, &p->a[0], dy);
  bind(k, &p->a[1], w);
  bind(k, &p->a[2], dx);
  static const int kinds[] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC};
  run_pass(k, p, kinds, 0x3u, ready);
  return 0;
}

int dd_dnnl_conv_backward_filter(dd_dnnl *k, const dd_conv_desc *d, float *dw, float *dbias, const float *dy,
                                 const float *x, const void *ws) {
  conv_entry *e = k ? find(k, d) : NULL;
  if (!e || !e->ok || (dbias && !d->bias)) return -1;
  pass *p = &e->p[BWD_W];
  int64_t wcount = (int64_t)d->out_c * (d->c / d->group) * d->kh * d->kw;
  float *pw = (float *)(k->arena + e->out_off);
  float *pb = (float *)(k->arena + e->out_off + up64((size_t)wcount * sizeof(float)));
  bind(k, &p->a[0], x);
  unsigned ready = 0;
  void *kept = kept_in(e, ws);
  if (kept) { /* x as the forward converted it */
    p_dnnl_memory_set_data_handle(p->a[0].prim, kept);
    ready = 0x1u;
  }
  bind(k, &p->a[1], dy);
  bind(k, &p->a[2], pw);
  if (d->bias) bind(k, &p->a[3], pb);
  static const int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_BIAS};
  run_pass(k, p, kinds, 0x3u, ready);
  if (e->dy_shared) k->dy_entry = e, k->dy_user = dy; /* for the backward-data that follows */
  /* oneDNN overwrites; Caffe's parameter gradients accumulate */
  if (dw)
    for (int64_t i = 0; i < wcount; i++) dw[i] += pw[i];
  if (dbias)
    for (int i = 0; i < d->out_c; i++) dbias[i] += pb[i];
  return 0;
}

/* ---- inference in the blocked layout -------------------------------------------------------- */

/* The primitive of b: y (nChw16c, the caller's) = relu?(conv(x, w) + bias), x the caller's nChw16c
 * (x_blocked) or NCHW FP32, for inference; in bf16 (b->bf16) or FP32. 0 or -1. */
static int build_blk(dd_dnnl *k, blk_entry *b) {
  const dd_conv_desc *d = &b->d;
  if (d->group != 1 || d->out_c % 16 || (b->x_blocked && d->c % 16)) return -1;
  dnnl_data_type_t dt = b->bf16 ? dnnl_bf16 : dnnl_f32;
  dnnl_dims_t sd = {d->n, d->c, d->h, d->w}, dd = {d->n, d->out_c, d->out_h, d->out_w}, bd = {d->out_c};
  dnnl_dims_t wd = {d->out_c, d->c, d->kh, d->kw}, st = {d->sh, d->sw}, dil = {d->dh - 1, d->dw - 1};
  dnnl_dims_t pl = {d->ph, d->pw}, pr;
  if (right_pads(d, pr)) return -1;
  dnnl_memory_desc_t src_u, src_a, w_u, w_a, dst_u, b_u;
  if (p_dnnl_memory_desc_init_by_tag(&src_u, 4, sd, b->x_blocked ? dt : dnnl_f32,
                                     b->x_blocked ? dnnl_nChw16c : dnnl_nchw) ||
      p_dnnl_memory_desc_init_by_tag(&src_a, 4, sd, dt, b->x_blocked ? dnnl_nChw16c : dnnl_format_tag_any) ||
      p_dnnl_memory_desc_init_by_tag(&w_u, 4, wd, dnnl_f32, dnnl_oihw) ||
      p_dnnl_memory_desc_init_by_tag(&w_a, 4, wd, dt, dnnl_format_tag_any) ||
      p_dnnl_memory_desc_init_by_tag(&dst_u, 4, dd, dt, dnnl_nChw16c) ||
      p_dnnl_memory_desc_init_by_tag(&b_u, 1, bd, dnnl_f32, dnnl_x))
    return -1;
  dnnl_convolution_desc_t cd;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  int r = p_dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &src_a,
                                                       &w_a, d->bias ? &b_u : NULL, &dst_u, st, dil, pl, pr) ||
          p_dnnl_primitive_attr_create(&attr) ||
          p_dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
  if (!r && b->relu)
    r = p_dnnl_post_ops_create(&po) || p_dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, b->slope, 0.0f) ||
        p_dnnl_primitive_attr_set_post_ops(attr, po);
  if (!r) r = p_dnnl_primitive_desc_create(&pd, &cd, attr, k->eng, NULL) != dnnl_success;
  if (po) p_dnnl_post_ops_destroy(po);
  if (attr) p_dnnl_primitive_attr_destroy(attr);
  if (r) return -1;
  const char *impl = "?";
  p_dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
  if (!strncmp(impl, "ref", 3) || (b->bf16 && !strstr(impl, "bf16") && !strstr(impl, "amx") && !strstr(impl, "brg"))) {
    /* reference code (or a bf16 one without bf16 units): not ours to run */
    p_dnnl_primitive_desc_destroy(pd);
    return -1;
  }
  pass *p = &b->p;
  r = make_slot(k, p, 0, &src_u, MD(pd, dnnl_query_src_md, 0), 1) ||
      make_slot(k, p, 1, &w_u, MD(pd, dnnl_query_weights_md, 0), 1) ||
      make_slot(k, p, 2, &dst_u, MD(pd, dnnl_query_dst_md, 0), 0) ||
      (d->bias && make_slot(k, p, 3, &b_u, MD(pd, dnnl_query_weights_md, 1), 1));
  p->n_args = d->bias ? 4 : 3;
  if (!r) r = finish_pass(k, p, pd);
  else p_dnnl_primitive_desc_destroy(pd);
  if (!r) r = arena_reserve(k, p->bytes);
  if (r) free_pass(p);
  return r ? -1 : 0;
}

static blk_entry *find_blk(dd_dnnl *k, const dd_conv_desc *d, int bf16, int x_blocked, int relu, float slope) {
  for (size_t i = 0; i < k->n_blk; i++) {
    blk_entry *b = k->blk[i];
    if (!memcmp(&b->d, d, sizeof *d) && b->bf16 == bf16 && b->x_blocked == x_blocked && b->relu == relu &&
        (!relu || b->slope == slope))
      return b;
  }
  return NULL;
}

int dd_dnnl_blk_prepare(dd_dnnl *k, const dd_conv_desc *d, int bf16, int x_blocked, int relu, float slope) {
  /* bf16 on bf16 units; FP32 where oneDNN runs the FP32 convolutions (AVX-512: 16-channel blocks) */
  if (!k || (bf16 ? !bf16_ok : !fp32_too())) return 0;
  blk_entry *b = find_blk(k, d, bf16, x_blocked, relu, slope);
  if (b) return b->ok;
  if (k->n_blk == k->cap_blk) {
    size_t cap = k->cap_blk ? 2 * k->cap_blk : 16;
    blk_entry **nb = realloc(k->blk, cap * sizeof *nb);
    if (!nb) return 0;
    k->blk = nb;
    k->cap_blk = cap;
  }
  if (!(b = calloc(1, sizeof *b))) return 0;
  k->blk[k->n_blk++] = b;
  *b = (blk_entry){.d = *d, .bf16 = bf16, .x_blocked = x_blocked, .relu = relu, .slope = relu ? slope : 0};
  b->ok = build_blk(k, b) == 0;
  return b->ok;
}

int dd_dnnl_blk_forward(dd_dnnl *k, const dd_conv_desc *d, int bf16, int x_blocked, int relu, float slope, void *y,
                        const void *x, const float *w, const float *bias) {
  if (!dd_dnnl_blk_prepare(k, d, bf16, x_blocked, relu, slope) || !!bias != !!d->bias) return -1;
  pass *p = &find_blk(k, d, bf16, x_blocked, relu, slope)->p;
  bind(k, &p->a[0], x);
  bind(k, &p->a[1], w);
  bind(k, &p->a[2], y);
  if (bias) bind(k, &p->a[3], bias);
  static const int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
  run_pass(k, p, kinds, 0xbu, 0);
  return 0;
}

#endif
