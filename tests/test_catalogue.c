/* BVLC Caffe's numbers for every layer type of its catalogue: one small net per layer type (or
 * form), tests/data/caffe-reference/catalogue (see its README). For each case the net is read the
 * way `distilld check` reads it (upgrades included), built in TRAIN (TEST for the data_lmdb_*
 * nets), given Caffe's initial weights (init.caffemodel) and Caffe's inputs, run forward and
 * backward once on the CPU backend, and every tensor Caffe recorded is compared: the loss, each
 * blob's data and diff (Caffe's own Split blobs included), each parameter's data and diff.
 *
 * Bound: relative L2 error under 1e-5 per tensor (Caffe and distilld both compute in float32 and
 * sum in different orders); an all-zero reference must be matched within 1e-6 absolute.
 *
 * Usage: test_catalogue [CASE ...]: only those cases (names of out/ folders). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "format/caffe_io.h"
#include "net/net.h"
#include "test.h"
#include "test_nets.h"

#define CAT DD_TEST_DATA "/caffe-reference/catalogue"
#define TOL 1e-5

static dd_backend *be;
static const char *cur_case;
static int n_compared;

static long load_f32(const char *path, float **out) {
  FILE *f = fopen(path, "rb");
  *out = NULL;
  if (!f) return -1;
  fseek(f, 0, SEEK_END);
  long bytes = ftell(f);
  fseek(f, 0, SEEK_SET);
  float *b = malloc((size_t)bytes + 4);
  long n = b ? (long)fread(b, 1, (size_t)bytes, f) / 4 : -1;
  fclose(f);
  *out = b;
  return n;
}

/* Relative L2 error; against an all-zero reference, the L2 norm of `a`. */
static double rel_err(const float *a, const float *b, long n) {
  double num = 0, den = 0;
  for (long i = 0; i < n; i++) {
    double d = (double)a[i] - b[i];
    num += d * d;
    den += (double)b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void compare(const dd_tensor *t, int diff, const char *file, const char *what) {
  char path[1024];
  snprintf(path, sizeof path, CAT "/out/%s/%s", cur_case, file);
  float *ref;
  long n = load_f32(path, &ref);
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
  double e = rel_err(mine, ref, n);
  double bound = den > 0 ? TOL : 1e-6;
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

/* Parameter "layer.index" of the net, or NULL. */
static dd_tensor *param(dd_net *n, const char *name) {
  char lname[256];
  snprintf(lname, sizeof lname, "%s", name);
  char *dot = strrchr(lname, '.');
  if (!dot) return NULL;
  int idx = atoi(dot + 1);
  *dot = '\0';
  int li = dd_net_layer_index(n, lname);
  return li >= 0 && idx < n->layers[li].n_params ? n->layers[li].params[idx] : NULL;
}

/* Feeds every Input layer's tops from Caffe's recorded blob data. */
static int feed_inputs(dd_net *n) {
  for (size_t i = 0; i < n->param->n_layer; i++) {
    const Caffe__LayerParameter *lp = n->param->layer[i];
    if (strcmp(lp->type, "Input") != 0) continue;
    for (size_t k = 0; k < lp->n_top; k++) {
      char path[1024];
      snprintf(path, sizeof path, CAT "/out/%s/fwd_bwd/blob_data__%s.f32", cur_case, lp->top[k]);
      float *v;
      long c = load_f32(path, &v);
      dd_tensor *t = dd_net_blob(n, lp->top[k]);
      if (!t || c != t->count) {
        fprintf(stderr, "%s: input %s: %ld values in %s, the blob %lld\n", cur_case, lp->top[k], c, path,
                t ? (long long)t->count : -1LL);
        free(v);
        return -1;
      }
      dd_tensor_set_data(t, v);
      free(v);
    }
  }
  return 0;
}

/* Compares every row of index.tsv. */
static void compare_index(dd_net *n, double loss) {
  char path[1024];
  snprintf(path, sizeof path, CAT "/out/%s/index.tsv", cur_case);
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
    dd_tensor *t = is_param ? param(n, name) : dd_net_blob(n, name);
    CHECKF(t != NULL, "%s: the net has no %s %s", cur_case, is_param ? "parameter" : "blob", name);
    if (t) compare(t, is_diff, file, what);
  }
  fclose(f);
}

static void run_case(void) {
  char path[1024], err[2048] = "";
  int lmdb = strncmp(cur_case, "data_lmdb", 9) == 0;
  char cwd[4096];
  if (!getcwd(cwd, sizeof cwd)) cwd[0] = '\0';
  /* The data layers read their database and mean file by paths relative to the catalogue. */
  REQUIRE(chdir(CAT) == 0);
  snprintf(path, sizeof path, CAT "/nets/%s.prototxt", cur_case);
  Caffe__NetParameter *p = NULL;
  int r = dd_net_read_text(&p, path, err, sizeof err);
  CHECKF(r == 0, "%s: %s", cur_case, err);
  dd_net *n = NULL;
  if (r == 0) {
    r = dd_net_create(&n, p, lmdb ? CAFFE__PHASE__TEST : CAFFE__PHASE__TRAIN, be, 1701, NULL, err, sizeof err);
    CHECKF(r == 0, "%s: net: %s", cur_case, err);
  }
  if (r == 0) {
    Caffe__NetParameter *w = NULL;
    snprintf(path, sizeof path, CAT "/out/%s/init.caffemodel", cur_case);
    r = dd_caffemodel_read(&w, path, err, sizeof err);
    if (r == 0) r = dd_net_copy_from(n, w, path, NULL, err, sizeof err);
    CHECKF(r == 0, "%s: weights: %s", cur_case, err);
    if (w) caffe__net_parameter__free_unpacked(w, NULL);
  }
  if (r == 0) r = feed_inputs(n);
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
  if (p) caffe__net_parameter__free_unpacked(p, NULL);
  if (cwd[0] && chdir(cwd) != 0) perror("chdir");
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
  if (dd_cpu_backend_create(&be, 2)) return 1;
  char *cases[256];
  int nc = 0;
  if (argc > 1) {
    for (int i = 1; i < argc && nc < 256; i++) cases[nc++] = strdup(argv[i]);
  } else {
    DIR *d = opendir(CAT "/out");
    if (!d) {
      fprintf(stderr, "cannot open %s\n", CAT "/out");
      return 1;
    }
    for (struct dirent *e; (e = readdir(d)) && nc < 256;)
      if (e->d_name[0] != '.') cases[nc++] = strdup(e->d_name);
    closedir(d);
    qsort(cases, (size_t)nc, sizeof cases[0], by_name);
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
  dd_cpu_backend_destroy(be);
  return test_summary();
}
