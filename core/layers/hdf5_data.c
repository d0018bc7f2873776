/* HDF5Data (Caffe): rows of HDF5 datasets, one dataset per top named by the top, from the files
 * listed (separated by white space) in hdf5_data_param.source. Each top is (batch_size, the
 * dataset's other dims); every dataset of a file has the same row count; float, double and integer
 * datasets are read as float32. Caffe's order: the files in list order, each file's rows in order,
 * wrapping around; with `shuffle` the file order is permuted at the start and at each wrap, and a
 * file's rows are permuted each time it is loaded and each time it is used up. The permutations are
 * distilld's own (from the layer's seed), not Caffe's std::random_shuffle.
 *
 * Caffe loads one file at a time and reads only the first file's shapes; here setup reads the
 * shapes of every listed file and refuses datasets whose shapes (after the rows) differ between
 * files, so the buffers are sized once (the largest file) and a later file cannot overrun the
 * tops. `distilld check` reads the first file's shapes. transform_param is refused, as in Caffe. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "base/dd_error.h"
#include "base/path_policy.h"
#include "data/hdf5_io.h"
#include "net/layer.h"

#define MAX_TOPS 16

typedef struct {
  char **files;
  int n_files;
} file_list;

static void list_free(file_list *fl) {
  for (int i = 0; i < fl->n_files; i++) free(fl->files[i]);
  free(fl->files);
  fl->files = NULL;
  fl->n_files = 0;
}

/* Reads the white-space separated file names of `source`. */
static int list_read(file_list *fl, const char *source, char *err, size_t errlen) {
  int fd;
  char why[512];
  if (dd_path_open_plain(DD_PATH_READ, "hdf5_data_param.source", source, &fd, why, sizeof why))
    return dd_errorf(DD_EIO, err, errlen, "%s", why);
  FILE *f = fdopen(fd, "r");
  if (!f) {
    close(fd);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory reading %s", source);
  }
  char tok[4096];
  int cap = 0, r = 0;
  while (r == 0 && fscanf(f, "%4095s", tok) == 1) {
    if (fl->n_files == cap) {
      cap = cap ? cap * 2 : 16;
      char **nf = realloc(fl->files, (size_t)cap * sizeof *nf);
      if (!nf) {
        r = DD_ENOMEM;
        break;
      }
      fl->files = nf;
    }
    if (!(fl->files[fl->n_files] = strdup(tok))) r = DD_ENOMEM;
    else fl->n_files++;
  }
  fclose(f);
  if (r) {
    list_free(fl);
    return dd_errorf(r, err, errlen, "out of memory reading %s", source);
  }
  if (fl->n_files == 0)
    return dd_errorf(DD_EINVAL, err, errlen, "hdf5_data_param.source %s lists no HDF5 files", source);
  return 0;
}

/* Every dataset of one file has the same number of rows. */
static int check_rows(const char *file, const Caffe__LayerParameter *lp, const dd_hdf5_shape *s, int nt, char *err,
                      size_t errlen) {
  for (int i = 1; i < nt; i++)
    if (s[i].dims[0] != s[0].dims[0])
      return dd_errorf(DD_ESHAPE, err, errlen, "%s: dataset \"%s\" has %lld rows but dataset \"%s\" has %lld", file,
                       lp->top[i], (long long)s[i].dims[0], lp->top[0], (long long)s[0].dims[0]);
  if (s[0].dims[0] == 0) return dd_errorf(DD_ESHAPE, err, errlen, "%s: dataset \"%s\" has no rows", file, lp->top[0]);
  return 0;
}

static int hdf5_data_shape(dd_shape_ctx *c) {
  const Caffe__HDF5DataParameter *p = c->lp->hdf5_data_param;
  if (c->lp->transform_param) return dd_shape_fail(c, "HDF5Data does not transform data: remove transform_param");
  if (!p || !p->source || !p->source[0])
    return dd_shape_fail(c, "hdf5_data_param { source: \"LIST.txt\" } is required");
  if (p->batch_size == 0) return dd_shape_fail(c, "hdf5_data_param.batch_size must be > 0");
  if (c->nt > MAX_TOPS) return dd_shape_fail(c, "HDF5Data has %d tops; at most %d are supported", c->nt, MAX_TOPS);
  file_list fl = {0};
  int r = list_read(&fl, p->source, c->err, c->errlen);
  if (r) return DD_ESHAPE;
  dd_hdf5_shape s[MAX_TOPS];
  r = dd_hdf5_dims(fl.files[0], (const char *const *)c->lp->top, c->nt, s, c->err, c->errlen);
  if (r == 0) r = check_rows(fl.files[0], c->lp, s, c->nt, c->err, c->errlen);
  list_free(&fl);
  if (r) return DD_ESHAPE;
  for (int i = 0; i < c->nt; i++) {
    s[i].dims[0] = p->batch_size;
    c->tops[i] = dd_shape_make(s[i].ndim, s[i].dims);
    if (dd_shape_count(&c->tops[i]) > DD_SHAPE_MAX_COUNT)
      return dd_shape_fail(c, "top \"%s\" of %u rows has more than %lld elements", c->lp->top[i], p->batch_size,
                           (long long)DD_SHAPE_MAX_COUNT);
  }
  return 0;
}

typedef struct {
  file_list fl;
  int loaded;
  float *rows[MAX_TOPS];  /* the current file's dataset i: (max_rows, row_dim[i]) */
  int64_t caps[MAX_TOPS]; /* floats at rows[i] */
  float *batch[MAX_TOPS]; /* the batch being assembled: (batch, row_dim[i]) */
  int64_t row_dim[MAX_TOPS];
  int *file_perm; /* n_files */
  int *row_perm;  /* max_rows */
  int64_t n_rows; /* rows of the current file */
  int cur_file;
  int64_t cur_row;
  dd_rng rng;
} hdf5_data_priv;

static void permute(int *v, int64_t n, dd_rng *r) {
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)(dd_rng_next(r) % (uint64_t)(i + 1));
    int t = v[i];
    v[i] = v[j];
    v[j] = t;
  }
}

static int shuffling(const dd_layer *l) { return l->lp->hdf5_data_param->shuffle; }

/* Loads file file_perm[cur_file] and resets the row order (Caffe's LoadHDF5FileData). */
static int load_file(dd_layer *l, char *err, size_t errlen) {
  hdf5_data_priv *hp = l->priv;
  const char *file = hp->fl.files[hp->file_perm[hp->cur_file]];
  dd_hdf5_shape s[MAX_TOPS];
  int r = dd_hdf5_read(file, (const char *const *)l->lp->top, l->nt, hp->rows, hp->caps, s, err, errlen);
  if (r == 0) r = check_rows(file, l->lp, s, l->nt, err, errlen);
  if (r) return r;
  hp->n_rows = s[0].dims[0];
  for (int64_t i = 0; i < hp->n_rows; i++) hp->row_perm[i] = (int)i;
  if (shuffling(l)) permute(hp->row_perm, hp->n_rows, &hp->rng);
  return 0;
}

/* "8x6x5" for dims [1, ndim) ("-" for none). */
static const char *row_shape(char *buf, size_t len, const dd_hdf5_shape *s) {
  size_t used = 0;
  buf[0] = '\0';
  for (int k = 1; k < s->ndim && used < len; k++)
    used += (size_t)snprintf(buf + used, len - used, "%s%lld", k > 1 ? "x" : "", (long long)s->dims[k]);
  if (s->ndim < 2) snprintf(buf, len, "-");
  return buf;
}

/* Checks every listed file against the first one's shapes; the largest row count in *max_rows. */
static int scan_files(dd_layer *l, int64_t *max_rows, char *err, size_t errlen) {
  hdf5_data_priv *hp = l->priv;
  dd_hdf5_shape first[MAX_TOPS], s[MAX_TOPS];
  *max_rows = 0;
  for (int f = 0; f < hp->fl.n_files; f++) {
    const char *file = hp->fl.files[f];
    int r = dd_hdf5_dims(file, (const char *const *)l->lp->top, l->nt, f ? s : first, err, errlen);
    if (r == 0) r = check_rows(file, l->lp, f ? s : first, l->nt, err, errlen);
    if (r) return r;
    for (int i = 0; f && i < l->nt; i++) {
      int same = s[i].ndim == first[i].ndim;
      for (int k = 1; same && k < s[i].ndim; k++) same = s[i].dims[k] == first[i].dims[k];
      char a[128], b[128];
      if (!same)
        return dd_errorf(DD_ESHAPE, err, errlen,
                         "%s: dataset \"%s\" has rows of shape %s (%d axes), but in %s they are %s (%d axes): "
                         "every file's rows must have the same shape",
                         file, l->lp->top[i], row_shape(a, sizeof a, &s[i]), s[i].ndim, hp->fl.files[0],
                         row_shape(b, sizeof b, &first[i]), first[i].ndim);
    }
    int64_t rows = (f ? s : first)[0].dims[0];
    if (rows > *max_rows) *max_rows = rows;
  }
  return 0;
}

static int hdf5_data_setup(dd_layer *l, char *err, size_t errlen) {
  hdf5_data_priv *hp = l->priv;
  if (hp->loaded) return 0;
  const Caffe__HDF5DataParameter *p = l->lp->hdf5_data_param;
  int r = list_read(&hp->fl, p->source, err, errlen);
  int64_t max_rows = 0;
  if (r == 0) r = scan_files(l, &max_rows, err, errlen);
  if (r) return r;
  hp->file_perm = malloc((size_t)hp->fl.n_files * sizeof *hp->file_perm);
  hp->row_perm = malloc((size_t)max_rows * sizeof *hp->row_perm);
  if (!hp->file_perm || !hp->row_perm) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  for (int i = 0; i < l->nt; i++) {
    hp->row_dim[i] = dd__count(l->top[i], 1, l->top[i]->shape.ndim);
    hp->caps[i] = max_rows * hp->row_dim[i];
    hp->rows[i] = malloc((size_t)(hp->caps[i] ? hp->caps[i] : 1) * sizeof(float));
    hp->batch[i] = malloc((size_t)(l->top[i]->count ? l->top[i]->count : 1) * sizeof(float));
    if (!hp->rows[i] || !hp->batch[i])
      return dd_errorf(DD_ENOMEM, err, errlen, "out of memory for %lld rows of \"%s\"", (long long)max_rows,
                       l->lp->top[i]);
  }
  dd_rng_seed(&hp->rng, l->seed);
  for (int i = 0; i < hp->fl.n_files; i++) hp->file_perm[i] = i;
  if (shuffling(l)) permute(hp->file_perm, hp->fl.n_files, &hp->rng);
  hp->cur_file = 0;
  hp->cur_row = 0;
  if ((r = load_file(l, err, errlen))) return r;
  hp->loaded = 1;
  return 0;
}

/* Caffe's Next(): the next row, the next file when this one is used up. */
static int next_row(dd_layer *l, char *err, size_t errlen) {
  hdf5_data_priv *hp = l->priv;
  if (++hp->cur_row < hp->n_rows) return 0;
  if (hp->fl.n_files > 1) {
    if (++hp->cur_file == hp->fl.n_files) {
      hp->cur_file = 0;
      if (shuffling(l)) permute(hp->file_perm, hp->fl.n_files, &hp->rng);
    }
    int r = load_file(l, err, errlen);
    if (r) return r;
  }
  hp->cur_row = 0;
  if (shuffling(l)) permute(hp->row_perm, hp->n_rows, &hp->rng);
  return 0;
}

static void hdf5_data_forward(dd_layer *l) {
  hdf5_data_priv *hp = l->priv;
  int64_t batch = l->top[0]->shape.dims[0];
  for (int64_t b = 0; b < batch; b++) {
    int64_t row = hp->row_perm[hp->cur_row];
    for (int i = 0; i < l->nt; i++)
      memcpy(hp->batch[i] + b * hp->row_dim[i], hp->rows[i] + row * hp->row_dim[i],
             (size_t)hp->row_dim[i] * sizeof(float));
    char why[1024];
    int r = next_row(l, why, sizeof why);
    if (r) {
      snprintf(l->status_msg, l->status_len, "layer \"%s\": %s", l->name, why);
      *l->status = r;
      return;
    }
  }
  for (int i = 0; i < l->nt; i++)
    l->be->ops->upload(l->be, l->top[i]->data, hp->batch[i], (size_t)l->top[i]->count * sizeof(float));
}

static void hdf5_data_destroy(dd_layer *l) {
  hdf5_data_priv *hp = l->priv;
  list_free(&hp->fl);
  for (int i = 0; i < MAX_TOPS; i++) {
    free(hp->rows[i]);
    free(hp->batch[i]);
  }
  free(hp->file_perm);
  free(hp->row_perm);
}

const dd_layer_ops dd_layer_hdf5_data = {
    .type = "HDF5Data", .min_bottoms = 0, .max_bottoms = 0, .min_tops = 1, .max_tops = -1,
    .shape = hdf5_data_shape, .priv_size = sizeof(hdf5_data_priv), .setup = hdf5_data_setup,
    .forward = hdf5_data_forward, .destroy = hdf5_data_destroy};
