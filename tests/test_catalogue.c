/* BVLC Caffe's numbers for every layer type of its catalogue: one small net per layer type (or
 * form), tests/data/caffe-reference/catalogue (see its README). For each case the net is read the
 * way `distilld check` reads it (upgrades included), built in TRAIN (TEST for the data_lmdb_*
 * nets), given Caffe's initial weights (init.caffemodel) and Caffe's inputs, run forward and
 * backward once on the CPU backend, and every tensor Caffe recorded is compared: the loss, each
 * blob's data and diff (Caffe's own Split blobs included), each parameter's data and diff.
 *
 * Bound: relative L2 error under 1e-5 per tensor (Caffe and distilld both compute in float32 and
 * sum in different orders); an all-zero reference must be matched within 1e-6 (L2 norm). One
 * exception, in WIDER below: MVN's normalized input gradient (mvn_var) cancels to the order of
 * eps / sd (with a SUMSQ loss on y it is y (1 - mean(y^2)) / sd), so Caffe's float rounding in its
 * own sums is amplified about a thousandfold; distilld sums in double, and the two agree within
 * 1e-4 there.
 *
 * Also: a backend without a layer's kernel refuses the net, naming the layer and the backend.
 *
 * Usage: test_catalogue [CASE ...]: only those cases (names of out/ folders). */
#include "test_catalogue.h"
#include "test.h"

#define TOL 1e-5

/* Tensors with a wider bound, each with its reason above. */
static const struct {
  const char *cas, *file;
  double bound;
} WIDER[] = {{"mvn_var", "blob_diff__data.f32", 1e-4}};

static double bound_for(const char *cas, const char *file) {
  const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
  for (size_t i = 0; i < sizeof WIDER / sizeof WIDER[0]; i++)
    if (!strcmp(WIDER[i].cas, cas) && !strcmp(WIDER[i].file, base)) return WIDER[i].bound;
  return TOL;
}

static dd_backend *be;
static const char *cur_case;
static int n_compared;

static void compare(const dd_tensor *t, int diff, const char *file, const char *what) {
  char path[1024];
  snprintf(path, sizeof path, "%s/out/%s/%s", cat_dir(), cur_case, file);
  float *ref;
  long n = cat_load_f32(path, &ref);
  CHECKF(n == t->count, "%s: %s: reference %s has %ld values, the tensor %lld", cur_case, what, file, n,
         (long long)t->count);
  if (n != t->count) {
    free(ref);
    return;
  }
  float *mine = malloc((size_t)n * sizeof *mine + 4);
  if (diff)
    dd_tensor_get_diff(t, mine);
  else
    dd_tensor_get_data(t, mine);
  double den = 0;
  for (long i = 0; i < n; i++) den += (double)ref[i] * ref[i];
  double e = cat_rel_err(mine, ref, n);
  double bound = den > 0 ? bound_for(cur_case, file) : 1e-6;
  CHECKF(e < bound, "%s: %s: relative error %.3g (bound %.0e)", cur_case, what, e, bound);
  if (e >= bound) {
    long shown = 0;
    for (long i = 0; i < n && shown < 6; i++)
      if (fabs((double)mine[i] - ref[i]) > 1e-6 + 1e-4 * fabs(ref[i])) {
        fprintf(stderr, "       [%ld] distilld %.9g caffe %.9g\n", i, mine[i], ref[i]);
        shown++;
      }
  }
  n_compared++;
  free(mine);
  free(ref);
}

/* Compares every row of index.tsv. */
static void compare_index(dd_net *n, double loss) {
  char path[1024];
  snprintf(path, sizeof path, "%s/out/%s/index.tsv", cat_dir(), cur_case);
  FILE *f = fopen(path, "r");
  CHECKF(f != NULL, "%s: cannot open %s", cur_case, path);
  if (!f) return;
  char line[2048];
  while (fgets(line, sizeof line, f)) {
    char *fld[7] = {0};
    int nf = 0;
    for (char *s = strtok(line, "\t\n"); s && nf < 7; s = strtok(NULL, "\t\n")) fld[nf++] = s;
    if (nf < 7 || strcmp(fld[0], "stage") == 0) continue;
    const char *kind = fld[1], *name = fld[2], *file = fld[3];
    char what[512];
    snprintf(what, sizeof what, "%s %s", kind, name);
    if (strcmp(kind, "scalar") == 0) {
      double ref = atof(fld[6]);
      CHECKF(fabs(loss - ref) <= 1e-5 * fmax(1.0, fabs(ref)), "%s: loss %.9g, Caffe's %.9g", cur_case, loss, ref);
      continue;
    }
    int is_param = strncmp(kind, "param_", 6) == 0;
    int is_diff = strstr(kind, "_diff") != NULL;
    dd_tensor *t = is_param ? cat_param(n, name) : dd_net_blob(n, name);
    CHECKF(t != NULL, "%s: the net has no %s %s", cur_case, is_param ? "parameter" : "blob", name);
    if (t) compare(t, is_diff, file, what);
  }
  fclose(f);
}

static void run_case(void) {
  char err[2048] = "", cwd[4096];
  REQUIRE(cat_enter(cwd, sizeof cwd) == 0);
  dd_net *n = NULL;
  int r = cat_build(cur_case, be, &n, err, sizeof err);
  CHECKF(r == 0, "%s: %s", cur_case, err);
  if (r == 0) {
    n_compared = 0;
    dd_net_clear_param_diffs(n);
    double loss = 0;
    r = dd_net_forward(n, &loss);
    CHECKF(r == 0, "%s: forward: %s", cur_case, n->status_msg);
    if (r == 0) {
      dd_net_backward(n);
      compare_index(n, loss);
      printf("     %-32s %d tensors compared\n", cur_case, n_compared);
    }
  }
  dd_net_destroy(n);
  cat_leave(cwd);
}

/* A backend whose table lacks the Reduction kernel (the CPU's table with that pointer cleared):
 * the net is refused at build time, naming the layer, its type and the backend. */
static void test_missing_kernel_refused(void) {
  dd_backend_ops ops = *be->ops;
  ops.reduce_forward = NULL;
  dd_backend shadow = *be;
  shadow.ops = &ops;
  char err[2048] = "", cwd[4096];
  REQUIRE(cat_enter(cwd, sizeof cwd) == 0);
  dd_net *n = NULL;
  int r = cat_build("reduction_sum", &shadow, &n, err, sizeof err);
  cat_leave(cwd);
  dd_net_destroy(n);
  CHECK(r == DD_EUNSUPPORTED);
  CHECK_CONTAINS(err, "layer \"y\"");
  CHECK_CONTAINS(err, "the cpu backend has no Reduction kernel yet");
}

int main(int argc, char **argv) {
  if (dd_cpu_backend_create(&be, 2)) return 1;
  char *cases[256];
  int nc = cat_cases(argc, argv, cases, 256);
  if (nc < 0) {
    fprintf(stderr, "cannot open %s/out\n", cat_dir());
    return 1;
  }
  for (int i = 0; i < nc; i++) {
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
  if (argc == 1) RUN(test_missing_kernel_refused);
  dd_cpu_backend_destroy(be);
  return test_summary();
}
