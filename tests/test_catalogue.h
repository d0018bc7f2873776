/* What the catalogue tests share (tests/test_catalogue.c: distilld's CPU backend against BVLC
 * Caffe's outputs; tests/test_cuda_catalogue.c: the CUDA backend against the CPU backend): the
 * cases of tests/data/caffe-reference/catalogue (see its README), each built with Caffe's initial
 * weights and fed Caffe's inputs. */
#ifndef DD_TEST_CATALOGUE_H
#define DD_TEST_CATALOGUE_H

#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "format/caffe_io.h"
#include "net/net.h"

/* The catalogue's folder: $DD_TEST_DATA/caffe-reference/catalogue when that variable is set (a
 * build carried to another machine, scripts/device_check.sh), else the source tree's. */
static inline const char *cat_dir(void) {
  static char dir[256];
  if (!dir[0]) {
    const char *e = getenv("DD_TEST_DATA");
    snprintf(dir, sizeof dir, "%s/caffe-reference/catalogue", e && e[0] ? e : DD_TEST_DATA);
  }
  return dir;
}

/* Reads a raw float32 file; returns the number of floats (or -1), *out malloc'd. */
static inline long cat_load_f32(const char *path, float **out) {
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

/* Relative L2 error of a against b; against an all-zero b, the L2 norm of a. */
static inline double cat_rel_err(const float *a, const float *b, long n) {
  double num = 0, den = 0;
  for (long i = 0; i < n; i++) {
    double d = (double)a[i] - b[i];
    num += d * d;
    den += (double)b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Parameter "layer.index" of the net, or NULL. */
static inline dd_tensor *cat_param(dd_net *n, const char *name) {
  char lname[256];
  snprintf(lname, sizeof lname, "%s", name);
  char *dot = strrchr(lname, '.');
  if (!dot) return NULL;
  int idx = atoi(dot + 1);
  *dot = '\0';
  int li = dd_net_layer_index(n, lname);
  return li >= 0 && idx < n->layers[li].n_params ? n->layers[li].params[idx] : NULL;
}

/* Feeds every Input layer's tops from Caffe's recorded blob data. 0, or -1 with err. */
static inline int cat_feed_inputs(const char *name, dd_net *n, char *err, size_t errlen) {
  for (size_t i = 0; i < n->param->n_layer; i++) {
    const Caffe__LayerParameter *lp = n->param->layer[i];
    if (strcmp(lp->type, "Input") != 0) continue;
    for (size_t k = 0; k < lp->n_top; k++) {
      char path[1024];
      snprintf(path, sizeof path, "%s/out/%s/fwd_bwd/blob_data__%s.f32", cat_dir(), name, lp->top[k]);
      float *v;
      long c = cat_load_f32(path, &v);
      dd_tensor *t = dd_net_blob(n, lp->top[k]);
      if (!t || c != t->count) {
        snprintf(err, errlen, "input %s: %ld values in %s, the blob %lld", lp->top[k], c, path,
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

/* Reads case `name`'s net the way `distilld check` does (upgrades included), builds it on `be`
 * (TRAIN; TEST for the data_lmdb_* cases, whose data layers read the catalogue folder by relative
 * paths: the working directory is the catalogue while it is built and run, see cat_enter), loads
 * Caffe's initial weights and feeds Caffe's inputs. 0, or a DD_E* code with err. */
static inline int cat_build(const char *name, dd_backend *be, dd_net **out, char *err, size_t errlen) {
  char path[1024];
  *out = NULL;
  int lmdb = strncmp(name, "data_lmdb", 9) == 0;
  snprintf(path, sizeof path, "%s/nets/%s.prototxt", cat_dir(), name);
  Caffe__NetParameter *p = NULL;
  int r = dd_net_read_text(&p, path, err, errlen);
  if (r) return r;
  dd_net *n = NULL;
  r = dd_net_create(&n, p, lmdb ? CAFFE__PHASE__TEST : CAFFE__PHASE__TRAIN, be, 1701, NULL, err, errlen);
  caffe__net_parameter__free_unpacked(p, NULL);
  if (r) return r;
  Caffe__NetParameter *w = NULL;
  snprintf(path, sizeof path, "%s/out/%s/init.caffemodel", cat_dir(), name);
  r = dd_caffemodel_read(&w, path, err, errlen);
  if (r == 0) r = dd_net_copy_from(n, w, path, NULL, err, errlen);
  if (w) caffe__net_parameter__free_unpacked(w, NULL);
  if (r == 0 && cat_feed_inputs(name, n, err, errlen)) r = DD_EINVAL;
  if (r) {
    dd_net_destroy(n);
    return r;
  }
  *out = n;
  return 0;
}

/* Enters the catalogue folder (the data layers' relative paths); returns the old directory in
 * cwd (empty when unknown) for cat_leave. */
static inline int cat_enter(char *cwd, size_t len) {
  if (!getcwd(cwd, len)) cwd[0] = '\0';
  return chdir(cat_dir());
}
static inline void cat_leave(const char *cwd) {
  if (cwd[0] && chdir(cwd) != 0) perror("chdir");
}

static inline int cat_by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The case names: argv[1..] when given, else every folder of out/, sorted. Returns the count. */
static inline int cat_cases(int argc, char **argv, char **cases, int max) {
  int nc = 0;
  if (argc > 1) {
    for (int i = 1; i < argc && nc < max; i++) cases[nc++] = strdup(argv[i]);
    return nc;
  }
  char outdir[1200];
  snprintf(outdir, sizeof outdir, "%s/out", cat_dir());
  DIR *d = opendir(outdir);
  if (!d) return -1;
  for (struct dirent *e; (e = readdir(d)) && nc < max;)
    if (e->d_name[0] != '.') cases[nc++] = strdup(e->d_name);
  closedir(d);
  qsort(cases, (size_t)nc, sizeof cases[0], cat_by_name);
  return nc;
}

#endif
