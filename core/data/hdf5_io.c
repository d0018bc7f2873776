/* HDF5 datasets in and out (see hdf5_io.h): the core C API of libhdf5 under one mutex. */
#define _POSIX_C_SOURCE 200809L
#include "data/hdf5_io.h"

#include <hdf5.h>
#include <pthread.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "base/path_policy.h"

/* Elements, saturating at DD_HDF5_MAX_COUNT + 1; -1 for an oversized dim. */
static int64_t count_of(const dd_hdf5_shape *s) {
  int64_t c = 1;
  for (int i = 0; i < s->ndim; i++) {
    if (s->dims[i] < 0) return -1;
    c *= s->dims[i];
    if (c > DD_HDF5_MAX_COUNT) return DD_HDF5_MAX_COUNT + 1;
  }
  return c;
}

static pthread_mutex_t h5_lock = PTHREAD_MUTEX_INITIALIZER;

/* Takes the lock and silences libhdf5's error printing (restored by unlock). */
static void h5_enter(H5E_auto2_t *fn, void **data) {
  pthread_mutex_lock(&h5_lock);
  H5Eget_auto2(H5E_DEFAULT, fn, data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void h5_leave(H5E_auto2_t fn, void *data) {
  H5Eset_auto2(H5E_DEFAULT, fn, data);
  pthread_mutex_unlock(&h5_lock);
}

/* Opens `path` read-only: a regular file first (a FIFO is refused without blocking), then HDF5. */
static int open_file(const char *path, hid_t *out, char *err, size_t errlen) {
  int fd;
  char why[512];
  if (dd_path_open_plain(DD_PATH_READ, NULL, path, &fd, why, sizeof why))
    return dd_errorf(DD_EIO, err, errlen, "%s", why);
  close(fd);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return dd_errorf(DD_EIO, err, errlen, "%s: cannot open as an HDF5 file", path);
  *out = f;
  return 0;
}

/* Opens dataset `name` of `f` and reads its shape. */
static int open_dataset(hid_t f, const char *path, const char *name, hid_t *out, dd_hdf5_shape *shape, char *err,
                        size_t errlen) {
  if (H5Lexists(f, name, H5P_DEFAULT) <= 0)
    return dd_errorf(DD_ENOTFOUND, err, errlen, "%s: no dataset \"%s\"", path, name);
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  if (d < 0) return dd_errorf(DD_ENOTFOUND, err, errlen, "%s: \"%s\" is not a dataset", path, name);
  int r = 0;
  hid_t sp = H5Dget_space(d), ty = H5Dget_type(d);
  H5T_class_t cls = ty >= 0 ? H5Tget_class(ty) : H5T_NO_CLASS;
  int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
  if (cls != H5T_FLOAT && cls != H5T_INTEGER) {
    r = dd_errorf(DD_EINVAL, err, errlen, "%s: dataset \"%s\": not a float or integer dataset", path, name);
  } else if (nd < 1 || nd > DD_HDF5_MAX_DIMS) {
    r = dd_errorf(DD_ESHAPE, err, errlen, "%s: dataset \"%s\" has %d axes: it needs 1 to %d (rows first)", path,
                  name, nd, DD_HDF5_MAX_DIMS);
  } else {
    hsize_t dims[DD_HDF5_MAX_DIMS];
    H5Sget_simple_extent_dims(sp, dims, NULL);
    shape->ndim = nd;
    for (int i = 0; i < nd; i++) shape->dims[i] = dims[i] > (hsize_t)DD_HDF5_MAX_COUNT ? -1 : (int64_t)dims[i];
    int64_t c = count_of(shape);
    if (c < 0 || c > DD_HDF5_MAX_COUNT)
      r = dd_errorf(DD_ESHAPE, err, errlen, "%s: dataset \"%s\" has more than %lld elements", path, name,
                    (long long)DD_HDF5_MAX_COUNT);
  }
  if (ty >= 0) H5Tclose(ty);
  if (sp >= 0) H5Sclose(sp);
  if (r) H5Dclose(d);
  else *out = d;
  return r;
}

/* Shapes, and the data when bufs is not NULL. */
static int read_sets(const char *path, const char *const *names, int n, float *const *bufs, const int64_t *caps,
                     dd_hdf5_shape *shapes, char *err, size_t errlen) {
  H5E_auto2_t efn;
  void *edata;
  h5_enter(&efn, &edata);
  hid_t f = -1;
  int r = open_file(path, &f, err, errlen);
  for (int i = 0; r == 0 && i < n; i++) {
    hid_t d = -1;
    if ((r = open_dataset(f, path, names[i], &d, &shapes[i], err, errlen))) break;
    if (bufs) {
      int64_t c = count_of(&shapes[i]);
      if (c > caps[i])
        r = dd_errorf(DD_ESHAPE, err, errlen, "%s: dataset \"%s\" has %lld elements, more than the %lld expected",
                      path, names[i], (long long)c, (long long)caps[i]);
      else if (c > 0 && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, bufs[i]) < 0)
        r = dd_errorf(DD_EIO, err, errlen, "%s: dataset \"%s\": read failed", path, names[i]);
    }
    H5Dclose(d);
  }
  if (f >= 0) H5Fclose(f);
  h5_leave(efn, edata);
  return r;
}

int dd_hdf5_dims(const char *path, const char *const *names, int n, dd_hdf5_shape *shapes, char *err, size_t errlen) {
  return read_sets(path, names, n, NULL, NULL, shapes, err, errlen);
}

int dd_hdf5_read(const char *path, const char *const *names, int n, float *const *bufs, const int64_t *caps,
                 dd_hdf5_shape *shapes, char *err, size_t errlen) {
  return read_sets(path, names, n, bufs, caps, shapes, err, errlen);
}

int dd_hdf5_write(const char *path, const char *const *names, int n, const dd_hdf5_shape *shapes,
                  const float *const *data, char *err, size_t errlen) {
  H5E_auto2_t efn;
  void *edata;
  h5_enter(&efn, &edata);
  int r = 0;
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) r = dd_errorf(DD_EIO, err, errlen, "%s: cannot create the HDF5 file", path);
  for (int i = 0; r == 0 && i < n; i++) {
    hsize_t dims[DD_HDF5_MAX_DIMS];
    for (int k = 0; k < shapes[i].ndim; k++) dims[k] = (hsize_t)shapes[i].dims[k];
    hid_t sp = H5Screate_simple(shapes[i].ndim, dims, NULL);
    hid_t d = sp >= 0 ? H5Dcreate2(f, names[i], H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    if (d < 0 || H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data[i]) < 0)
      r = dd_errorf(DD_EIO, err, errlen, "%s: cannot write dataset \"%s\"", path, names[i]);
    if (d >= 0) H5Dclose(d);
    if (sp >= 0) H5Sclose(sp);
  }
  if (f >= 0 && H5Fclose(f) < 0 && r == 0) r = dd_errorf(DD_EIO, err, errlen, "%s: cannot close the HDF5 file", path);
  h5_leave(efn, edata);
  return r;
}
