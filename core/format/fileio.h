/* Whole-file reads and crash-safe whole-file writes, used by every reader and writer of project
 * files (prototxts, .caffemodel, .binaryproto, .solverstate). */
#ifndef DD_FILEIO_H
#define DD_FILEIO_H

#include <stddef.h>

/* Reads the whole file at `path` into a new buffer with a NUL byte after the last byte (so text
 * parsers may treat it as a string); `*out_len` excludes the NUL. The caller frees `*out`.
 * Returns 0, DD_EIO with "PATH: reason" in `err`, or DD_ENOMEM. */
int dd_read_file(char **out, size_t *out_len, const char *path, char *err, size_t errlen);

/* Writes `len` bytes to `path` so that a crash never leaves a half-written file under that name:
 * the data goes to "PATH.tmp.PID", is fsync'ed, then renamed over `path`. Returns 0 or DD_EIO with
 * "PATH: reason" in `err`. */
int dd_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen);

#endif
