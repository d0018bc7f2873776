/* OpenBLAS through dlopen, with its kernels chosen before it loads (see cpu_blas.h).
 *
 * The library is found by its soname, the way the dynamic linker would find it (on Debian the
 * alternatives system points libopenblas.so.0 at the pthread or OpenMP build). It is opened once
 * and never closed. */
#define _POSIX_C_SOURCE 200809L
#include "cpu/cpu_blas.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"

/* CBLAS's enum values (cblas.h), passed as int. */
enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *b, int ldb, float beta, float *c,
                         int ldc);
typedef char *(*str_fn)(void);
typedef void (*set_threads_fn)(int);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int load_status;
static char load_err[512];
static char describe[256];
static const char *corename = "none";
static sgemm_fn sgemm;

/* The kernel family for this CPU, or NULL to leave the choice to OpenBLAS. SkylakeX over
 * Cooperlake/Haswell on AVX-512 machines: measured in docs/performance.md. */
static const char *kernel_for_cpu(const char **why) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    *why = "the CPU has AVX-512";
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    *why = "the CPU has AVX2 and FMA";
    return "Haswell";
  }
#endif
  (void)why;
  return NULL;
}

static void load(void) {
  const char *who = "OpenBLAS's own choice", *why = NULL;
  const char *user = getenv("OPENBLAS_CORETYPE");
  if (user && *user) {
    who = "OPENBLAS_CORETYPE";
  } else {
    const char *k = kernel_for_cpu(&why);
    if (k) {
      setenv("OPENBLAS_CORETYPE", k, 1);
      who = "distilld";
    }
  }
  const char *nt = getenv("OPENBLAS_NUM_THREADS");
  if (!nt || !*nt) setenv("OPENBLAS_NUM_THREADS", "1", 1);
  /* oneDNN's OpenMP threads (cpu_dnnl.h) sleep when idle instead of spinning: set before libgomp
   * loads (with oneDNN, later), as OpenMP reads it once */
  const char *wp = getenv("OMP_WAIT_POLICY");
  if (!wp || !*wp) setenv("OMP_WAIT_POLICY", "PASSIVE", 1);

  static const char *const names[] = {"libopenblas.so.0", "libopenblas.so"};
  void *h = NULL;
  const char *last = "";
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++) {
    h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) last = dlerror();
  }
  if (!h) {
    load_status = dd_errorf(DD_ENOTFOUND, load_err, sizeof load_err,
                            "cannot load OpenBLAS (libopenblas.so.0): %s; install libopenblas0", last);
    return;
  }
  /* dlsym's object pointers become function pointers by copy (POSIX guarantees they fit). */
  str_fn get_core = NULL, get_config = NULL;
  set_threads_fn set_threads = NULL;
  void *p = dlsym(h, "cblas_sgemm"), *q = dlsym(h, "openblas_get_corename"),
       *r = dlsym(h, "openblas_get_config"), *s = dlsym(h, "openblas_set_num_threads");
  memcpy(&sgemm, &p, sizeof p);
  memcpy(&get_core, &q, sizeof q);
  memcpy(&get_config, &r, sizeof r);
  memcpy(&set_threads, &s, sizeof s);
  if (!sgemm || !get_core) {
    load_status = dd_errorf(DD_ENOTFOUND, load_err, sizeof load_err,
                            "the library loaded as libopenblas.so.0 lacks cblas_sgemm or openblas_get_corename");
    return;
  }
  /* OpenBLAS runs inside our pool's tasks, one thread each. */
  if (set_threads) set_threads(1);
  corename = get_core();
  char version[32] = "";
  const char *cfg = get_config ? get_config() : NULL; /* "OpenBLAS 0.3.21 DYNAMIC_ARCH ..." */
  if (cfg && !strncmp(cfg, "OpenBLAS ", 9)) sscanf(cfg + 9, "%31s", version);
  char chosen[128];
  if (why)
    snprintf(chosen, sizeof chosen, "chosen by %s: %s", who, why);
  else
    snprintf(chosen, sizeof chosen, "chosen by %s", who);
  snprintf(describe, sizeof describe, "OpenBLAS%s%s %s kernels (%s)", *version ? " " : "", version,
           corename, chosen);
}

int dd_cpu_ensure_fast_blas(char *err, size_t errlen) {
  pthread_once(&once, load);
  if (load_status && err && errlen) snprintf(err, errlen, "%s", load_err);
  return load_status;
}

const char *dd_cpu_blas_describe(void) { return describe; }

const char *dd_cpu_blas_corename(void) { return corename; }

void dd_sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc) {
  sgemm(ROW_MAJOR, ta ? TRANS : NO_TRANS, tb ? TRANS : NO_TRANS, m, n, k, alpha, a, lda, b, ldb,
        beta, c, ldc);
}
