/* Whole-file reads and crash-safe whole-file writes, used by every reader and writer of project
 * files (prototxts, .caffemodel, .binaryproto, .solverstate). Reads never block on a FIFO or a
 * device (only regular files are read); writes never follow a symlink planted at the temporary
 * name (O_CREAT|O_EXCL|O_NOFOLLOW) and rename within one directory descriptor. */
#ifndef DD_FILEIO_H
#define DD_FILEIO_H

#include <stddef.h>

/* Reads the whole regular file at `path` into a new buffer with a NUL byte after the last byte (so
 * text parsers may treat it as a string); `*out_len` excludes the NUL. The caller frees `*out`.
 * A FIFO, socket or device is refused without blocking. Returns 0, DD_EIO with "PATH: reason" in
 * `err`, or DD_ENOMEM. */
int dd_read_file(char **out, size_t *out_len, const char *path, char *err, size_t errlen);

/* dd_read_file on an open descriptor (read from its current offset to the end; `fd` stays open and
 * the caller's). `name` names the file in messages. */
int dd_read_fd(char **out, size_t *out_len, int fd, const char *name, char *err, size_t errlen);

/* Writes `len` bytes to `name` in the directory `dirfd` so that a crash never leaves a half-written
 * file under that name: the data goes to a new "NAME.tmp.PID" (O_CREAT|O_EXCL|O_NOFOLLOW; when
 * something already lies at that name, "NAME.tmp.PID.K" for the first free K below 16, the
 * planted entry left alone), is fsync'ed, then renamed over `name` with renameat within `dirfd`
 * (a symlink at `name` is replaced, never followed). `name` may not hold a '/'. `shown` names the
 * file in messages (NULL: `name`). Returns 0 or DD_EIO with "SHOWN: reason" in `err`. */
int dd_write_file_at(int dirfd, const char *name, const char *shown, const void *data, size_t len, char *err,
                     size_t errlen);

/* dd_write_file_at in the directory of `path` (opened for the write). */
int dd_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen);

#endif
