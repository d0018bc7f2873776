/* HDF5 files for the HDF5Data and HDF5Output layers, through Debian's libhdf5 (the core C API,
 * serial build): the dims of named datasets, reading datasets as float32 (any float or integer
 * type, converted by the library as Caffe's H5LTread_dataset_float does), and writing float32
 * datasets into a new file.
 *
 * libhdf5's serial build is not thread-safe: every call here holds one process-wide mutex, and
 * libhdf5's automatic error printing is off (the errors come back as messages instead). Files are
 * checked to be regular files before libhdf5 opens them, so a FIFO never blocks. Messages name the
 * file and the dataset. */
#ifndef DD_HDF5_IO_H
#define DD_HDF5_IO_H

#include <stddef.h>
#include <stdint.h>

/* A dataset's shape: rank 1 to DD_HDF5_MAX_DIMS, each dim at most DD_HDF5_MAX_COUNT (the
 * element count too: Caffe's blob limit). */
#define DD_HDF5_MAX_DIMS 8
#define DD_HDF5_MAX_COUNT ((int64_t)INT32_MAX)
typedef struct {
  int ndim;
  int64_t dims[DD_HDF5_MAX_DIMS];
} dd_hdf5_shape;

/* The shapes of datasets `names[0..n)` of the file `path` into `shapes` (rank 1 to
 * DD_HDF5_MAX_DIMS). Returns 0, DD_EIO (the file cannot be opened, or is not HDF5), DD_ENOTFOUND
 * (no such dataset), DD_ESHAPE (a rank out of range, or a dim over DD_HDF5_MAX_COUNT elements),
 * DD_EINVAL (not a number type), with "PATH: dataset \"NAME\": ..." in err. */
int dd_hdf5_dims(const char *path, const char *const *names, int n, dd_hdf5_shape *shapes, char *err, size_t errlen);

/* Reads the datasets `names[0..n)` of `path` as float32 into `bufs[i]`, which hold `caps[i]`
 * floats each; `shapes` gets their shapes. A dataset with more elements than its buffer holds is
 * DD_ESHAPE (nothing is read beyond the buffer). Other errors as dd_hdf5_dims. */
int dd_hdf5_read(const char *path, const char *const *names, int n, float *const *bufs, const int64_t *caps,
                 dd_hdf5_shape *shapes, char *err, size_t errlen);

/* Creates (or truncates) `path` and writes float32 datasets `names[i]` of `shapes[i]` from
 * `data[i]`. Returns 0 or DD_EIO with a message naming the file and the dataset. */
int dd_hdf5_write(const char *path, const char *const *names, int n, const dd_hdf5_shape *shapes,
                  const float *const *data, char *err, size_t errlen);

#endif
