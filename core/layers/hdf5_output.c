/* HDF5Output (Caffe): writes its two bottoms to hdf5_output_param.file_name as float32 datasets
 * "data" and "label", each with Caffe's legacy 4-D shape (num, channels, height, width: missing
 * axes are 1, so a (N, C) bottom is written (N, C, 1, 1)); no tops, no backward. As in Caffe the
 * file is created (truncated) when the net is built. Caffe writes the datasets at the first
 * forward and fails at the second (the datasets exist); here every forward rewrites the file, so
 * it holds the latest batch. */
#include <stdio.h>
#include <stdlib.h>

#include "base/dd_error.h"
#include "data/hdf5_io.h"
#include "net/layer.h"

static int hdf5_output_shape(dd_shape_ctx *c) {
  const Caffe__HDF5OutputParameter *p = c->lp->hdf5_output_param;
  if (!p || !p->file_name || !p->file_name[0])
    return dd_shape_fail(c, "hdf5_output_param { file_name: \"OUT.h5\" } is required");
  for (int i = 0; i < 2; i++)
    if (dd_shape_known(&c->bottoms[i]) && (c->bottoms[i].ndim > 4 || c->bottoms[i].ndim < 1))
      return dd_shape_fail(c, "bottom %d has %d axes: HDF5Output writes blobs of 1 to 4 axes", i,
                           c->bottoms[i].ndim);
  if (dd_shape_bottoms_known(c) && c->bottoms[0].dims[0] != c->bottoms[1].dims[0])
    return dd_shape_fail(c, "the data bottom has %lld rows and the label bottom %lld: they must match",
                         (long long)c->bottoms[0].dims[0], (long long)c->bottoms[1].dims[0]);
  return 0;
}

typedef struct {
  float *host[2];
  size_t cap[2]; /* floats */
} hdf5_output_priv;

static dd_hdf5_shape legacy4(const dd_shape *s) {
  dd_hdf5_shape h = {.ndim = 4};
  for (int k = 0; k < 4; k++) h.dims[k] = k < s->ndim ? s->dims[k] : 1;
  return h;
}

static int write_file(dd_layer *l, int with_data, char *err, size_t errlen) {
  hdf5_output_priv *hp = l->priv;
  static const char *const names[2] = {"data", "label"};
  dd_hdf5_shape s[2];
  const float *data[2];
  for (int i = 0; i < 2; i++) {
    s[i] = legacy4(&l->bottom[i]->shape);
    if (with_data)
      l->be->ops->download(l->be, hp->host[i], l->bottom[i]->data, (size_t)l->bottom[i]->count * sizeof(float));
    data[i] = hp->host[i];
  }
  return dd_hdf5_write(l->lp->hdf5_output_param->file_name, names, with_data ? 2 : 0, s, data, err, errlen);
}

static int hdf5_output_setup(dd_layer *l, char *err, size_t errlen) {
  hdf5_output_priv *hp = l->priv;
  for (int i = 0; i < 2; i++) {
    size_t need = (size_t)(l->bottom[i]->count ? l->bottom[i]->count : 1);
    if (need > hp->cap[i]) {
      float *h = realloc(hp->host[i], need * sizeof *h);
      if (!h) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
      hp->host[i] = h;
      hp->cap[i] = need;
    }
  }
  char why[512];
  int r = write_file(l, 0, why, sizeof why);
  return r ? dd_errorf(r, err, errlen, "hdf5_output_param.file_name: %s", why) : 0;
}

static void hdf5_output_forward(dd_layer *l) {
  char why[512];
  int r = write_file(l, 1, why, sizeof why);
  if (r) {
    snprintf(l->status_msg, l->status_len, "layer \"%s\": %s", l->name, why);
    *l->status = r;
  }
}

static void hdf5_output_destroy(dd_layer *l) {
  hdf5_output_priv *hp = l->priv;
  free(hp->host[0]);
  free(hp->host[1]);
}

const dd_layer_ops dd_layer_hdf5_output = {
    .type = "HDF5Output", .min_bottoms = 2, .max_bottoms = 2, .min_tops = 0, .max_tops = 0,
    .shape = hdf5_output_shape, .priv_size = sizeof(hdf5_output_priv), .setup = hdf5_output_setup,
    .forward = hdf5_output_forward, .destroy = hdf5_output_destroy};
