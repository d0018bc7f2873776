/* The daemon's path policy: a queued job may read only beneath the config's data roots and write
 * only beneath its output root. Each root is held open as a directory descriptor, and every file a
 * job reads, and its output directory, is opened beneath one of them (dd_paths_policy's opener):
 * with openat2(2) RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS where the kernel has it (a symlink that
 * stays inside the root is followed; an absolute symlink, or one that leads out, is refused), and
 * otherwise by a walk from the root's descriptor, one component at a time with O_NOFOLLOW (no
 * symlink is followed at all). Which root a path belongs to is decided from its resolved directory
 * (realpath); what is opened is decided by the kernel beneath the root's descriptor, so a path
 * swapped for a symlink after the question still cannot lead out. Only regular files are read (a
 * FIFO or device is refused without blocking). A refusal reads the same whether the path exists or
 * not. Relative paths resolve against the daemon's working directory, as the trainer's do. */
#ifndef DD_PATHS_H
#define DD_PATHS_H

#include <stddef.h>

#include "base/path_policy.h"

#define DD_PATHS_MAX_ROOTS 16

typedef struct {
  char *data[DD_PATHS_MAX_ROOTS]; /* resolved data roots */
  int data_fd[DD_PATHS_MAX_ROOTS]; /* each one's directory (O_PATH) */
  size_t n_data;
  char *output; /* resolved output root */
  int output_fd;
  int walk_only; /* 1: never openat2, always the O_NOFOLLOW walk (tests set it) */
} dd_paths;

/* Resolves and opens the roots (no data root: the working directory; no output root: "out",
 * created). Returns 0, or DD_EINVAL naming the field. */
int dd_paths_init(dd_paths *p, char *const *data_roots, size_t n_data, const char *output_root, char *err, size_t errlen);
void dd_paths_free(dd_paths *p);

/* 0 when `path` lies beneath a data root (a regular file or a directory, or nothing yet); DD_EPERM
 * with "FIELD: ... refused" otherwise. */
int dd_paths_check_read(const dd_paths *p, const char *field, const char *path, char *err, size_t errlen);
/* 0 when `path` (a directory that may not exist yet) resolves strictly inside the output root. */
int dd_paths_check_write(const dd_paths *p, const char *field, const char *path, char *err, size_t errlen);
/* Opens the regular file `path` beneath a data root for reading (path_policy.h's DD_PATH_READ). */
int dd_paths_open_read(const dd_paths *p, const char *field, const char *path, int *fd, char *err, size_t errlen);
/* Creates (with its parents) and opens the directory `path` beneath the output root. */
int dd_paths_open_output(const dd_paths *p, const char *field, const char *path, int *fd, char *err, size_t errlen);
/* The policy core asks and opens through (core/base/path_policy.h). `p` must outlive the job; it
 * is only read after dd_paths_init, so the decode threads may use it at once. */
dd_path_policy dd_paths_policy(const dd_paths *p);

#endif
