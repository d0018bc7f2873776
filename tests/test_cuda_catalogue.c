/* The CUDA backend against the CPU backend over the whole layer catalogue
 * (tests/data/caffe-reference/catalogue): each case is built on both backends from Caffe's
 * initial weights and inputs, run forward and backward once, and every blob's data and diff and
 * every parameter's data and diff must agree within a relative L2 error of 1e-4 (FP32; the
 * CPU backend is the reference, itself matched to BVLC Caffe by test_catalogue). A case whose net
 * the CUDA backend refuses (a layer without a CUDA kernel: the refusal names it) fails.
 *
 * Needs a CUDA build and a device: without one it prints SKIP and passes (ctest label gpu).
 * Usage: test_cuda_catalogue [CASE ...]. */
#include "test_catalogue.h"
#include "devices/devices.h"
#include "test.h"

#define RTOL 1e-4

static dd_backend *cpu, *gpu;
static const char *cur_case;

static void compare_tensors(const dd_tensor *c, const dd_tensor *g, int diff, const char *what) {
  CHECKF(c->count == g->count, "%s: %s: %lld values on the CPU, %lld on the GPU", cur_case, what,
         (long long)c->count, (long long)g->count);
  if (c->count != g->count) return;
  float *a = malloc((size_t)c->count * sizeof *a + 4), *b = malloc((size_t)c->count * sizeof *b + 4);
  if (diff) {
    dd_tensor_get_diff(c, a);
    dd_tensor_get_diff(g, b);
  } else {
    dd_tensor_get_data(c, a);
    dd_tensor_get_data(g, b);
  }
  double den = 0;
  for (int64_t i = 0; i < c->count; i++) den += (double)a[i] * a[i];
  double e = cat_rel_err(b, a, (long)c->count), bound = den > 0 ? RTOL : 1e-6;
  CHECKF(e < bound, "%s: %s: GPU against CPU relative error %.3g (bound %.0e)", cur_case, what, e, bound);
  free(a);
  free(b);
}

static void run_case(void) {
  char err[2048] = "", cwd[4096];
  REQUIRE(cat_enter(cwd, sizeof cwd) == 0);
  dd_net *nc = NULL, *ng = NULL;
  int r = cat_build(cur_case, cpu, &nc, err, sizeof err);
  CHECKF(r == 0, "%s: cpu: %s", cur_case, err);
  if (r == 0) {
    r = cat_build(cur_case, gpu, &ng, err, sizeof err);
    CHECKF(r == 0, "%s: cuda: %s", cur_case, err);
  }
  if (r == 0) {
    dd_net_clear_param_diffs(nc);
    dd_net_clear_param_diffs(ng);
    double lc = 0, lg = 0;
    int rc = dd_net_forward(nc, &lc), rg = dd_net_forward(ng, &lg);
    CHECKF(rc == 0 && rg == 0, "%s: forward: cpu %s / cuda %s", cur_case, nc->status_msg, ng->status_msg);
    if (rc == 0 && rg == 0) {
      dd_net_backward(nc);
      dd_net_backward(ng);
      char msg[256];
      CHECKF(gpu->ops->status(gpu, msg, sizeof msg) == 0, "%s: device: %s", cur_case, msg);
      CHECKF(fabs(lc - lg) <= RTOL * fmax(1.0, fabs(lc)), "%s: loss cpu %.9g cuda %.9g", cur_case, lc, lg);
      for (size_t b = 0; b < nc->n_blobs && b < ng->n_blobs; b++) {
        char what[300];
        snprintf(what, sizeof what, "blob %s data", nc->blobs[b]->name);
        compare_tensors(nc->blobs[b], ng->blobs[b], 0, what);
        snprintf(what, sizeof what, "blob %s diff", nc->blobs[b]->name);
        compare_tensors(nc->blobs[b], ng->blobs[b], 1, what);
      }
      for (size_t p = 0; p < nc->n_params && p < ng->n_params; p++) {
        char what[300];
        snprintf(what, sizeof what, "parameter %zu data", p);
        compare_tensors(nc->params[p].t, ng->params[p].t, 0, what);
        snprintf(what, sizeof what, "parameter %zu diff", p);
        compare_tensors(nc->params[p].t, ng->params[p].t, 1, what);
      }
    }
  }
  dd_net_destroy(nc);
  dd_net_destroy(ng);
  cat_leave(cwd);
}

int main(int argc, char **argv) {
  char err[600];
  if (dd_cpu_backend_create(&cpu, 2)) return 1;
  if (!dd_backend_have_cuda()) {
    printf("SKIP: this build has no CUDA backend (no CUDA toolkit found by CMake)\n");
    dd_cpu_backend_destroy(cpu);
    return 0;
  }
  if (dd_backend_create(&gpu, "cuda:0", 0, err, sizeof err)) {
    printf("SKIP: no GPU: %s\n", err);
    dd_cpu_backend_destroy(cpu);
    return 0;
  }
  printf("     %s\n     %s\n", dd_backend_describe(gpu), dd_cpu_backend_describe(cpu));
  char *cases[256];
  int n = cat_cases(argc, argv, cases, 256);
  for (int i = 0; i < n; i++) {
    cur_case = cases[i];
    test__name = cases[i];
    test__cur_failed = 0;
    run_case();
    if (test__cur_failed) {
      test__failed++;
      fprintf(stderr, "FAIL %s\n", cases[i]);
    } else {
      test__passed++;
      printf("ok   %s\n", cases[i]);
    }
    free(cases[i]);
  }
  dd_backend_destroy(gpu);
  dd_cpu_backend_destroy(cpu);
  return test_summary();
}
