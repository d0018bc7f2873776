/* Where a job may read and write: a caller's policy, which core asks, and through which core opens,
 * every file a job touches.
 *
 * core/ opens every file a job touches itself (the nets, the weights, the solver file, the data
 * layers' list files, every image a list names, mean files, the output directory and what lies in
 * it). It asks `check` early (at validation, and for each image as a list is parsed) so that a
 * refusal fails the job before it starts, and it opens through `open` at the moment it reads: the
 * descriptor it gets is the file it reads, so a path swapped for a symlink between the question and
 * the read cannot lead outside. Files inside the output directory (snapshots, metrics.jsonl) are
 * opened relative to the directory's descriptor with O_NOFOLLOW; temporary files are created with
 * O_CREAT|O_EXCL|O_NOFOLLOW (format/fileio.h).
 *
 * The daemon's policy (daemon/service/paths.c) allows inputs beneath its data roots and the output
 * directory strictly inside its output root, opening beneath the roots' directory descriptors; the
 * CLI passes none: everything the user can open is allowed, though only regular files are read (a
 * FIFO or device is refused without blocking). */
#ifndef DD_PATH_POLICY_H
#define DD_PATH_POLICY_H

#include <stddef.h>

typedef enum {
  DD_PATH_READ = 0, /* an input: a net, weights, a list file, an image, a mean file */
  DD_PATH_OUTPUT = 1 /* the job's output directory (created if missing; snapshots and metrics inside) */
} dd_path_access;

typedef struct {
  void *ctx;
  /* The early question: 0 to allow; otherwise an error code (DD_EPERM) with a message naming
   * `field` and `path`. For DD_PATH_READ `path` may be a directory (an ImageData root_folder).
   * NULL: allowed. */
  int (*check)(void *ctx, dd_path_access access, const char *field, const char *path, char *err, size_t errlen);
  /* The opener. DD_PATH_READ: `*fd` becomes a read-only, blocking, close-on-exec descriptor of the
   * regular file `path` (anything else is refused without blocking). DD_PATH_OUTPUT: `*fd` becomes
   * a directory descriptor (O_RDONLY|O_DIRECTORY) of `path`, created with its missing parents.
   * Returns 0, or an error code with a message naming `field` (which may be NULL: then the path
   * alone) (DD_EPERM with "refused" for a path
   * the policy does not allow). Called from the data pipeline's decode threads too: it must be
   * thread-safe. NULL: core opens plainly after asking `check` (dd_path_open). */
  int (*open)(void *ctx, dd_path_access access, const char *field, const char *path, int *fd, char *err,
              size_t errlen);
} dd_path_policy;

/* Asks `p` (NULL, or NULL check: allowed). */
static inline int dd_path_check(const dd_path_policy *p, dd_path_access access, const char *field, const char *path,
                                char *err, size_t errlen) {
  return p && p->check ? p->check(p->ctx, access, field, path, err, errlen) : 0;
}

/* Opens `path` for `access` as the policy's `open` describes: through `p->open` when there is one;
 * otherwise plainly (dd_path_open_plain), after asking `p->check` unless `asked` says the caller
 * already did for this path. `field` names the path in messages (NULL: the path alone). Returns 0
 * with `*fd` (the caller closes it), or an error code with a message in `err`. */
int dd_path_open(const dd_path_policy *p, dd_path_access access, int asked, const char *field, const char *path,
                 int *fd, char *err, size_t errlen);

/* The opener without a policy: DD_PATH_READ opens `path` with O_NONBLOCK, refuses anything but a
 * regular file (fstat), then clears O_NONBLOCK; DD_PATH_OUTPUT creates `path` and its parents and
 * opens it as a directory. */
int dd_path_open_plain(dd_path_access access, const char *field, const char *path, int *fd, char *err, size_t errlen);

/* For a descriptor opened with O_NONBLOCK: 0 when it is a regular file (and O_NONBLOCK is then
 * cleared), DD_EIO with "FIELD: SHOWN: not a regular file ..." otherwise. `fd` stays the caller's. */
int dd_fd_require_regular(int fd, const char *field, const char *shown, char *err, size_t errlen);

/* openat(dirfd, name, O_RDONLY | extra_flags) for a regular file, never blocking on a FIFO or a
 * device (O_NONBLOCK, fstat, then O_NONBLOCK cleared). `shown` names the file in messages
 * ("SHOWN: cannot open: reason", "SHOWN: not a regular file"), prefixed with "FIELD: " when `field`
 * is not NULL. Returns 0 with `*fd`, or DD_EIO. */
int dd_open_regular_at(int dirfd, const char *name, int extra_flags, const char *field, const char *shown, int *fd,
                       char *err, size_t errlen);

#endif
