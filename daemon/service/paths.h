/* The daemon's path policy: a queued job may read only under the config's data roots and write only
 * under its output root; core asks it at each open (dd_paths_policy). Paths are resolved with
 * realpath (symlinks included) before use; a path that does not exist yet resolves through its
 * deepest existing ancestor and may not climb with "..". Relative paths resolve against the
 * daemon's working directory, as the trainer's do. */
#ifndef DD_PATHS_H
#define DD_PATHS_H

#include <stddef.h>

#include "base/path_policy.h"

#define DD_PATHS_MAX_ROOTS 16

typedef struct {
  char *data[DD_PATHS_MAX_ROOTS]; /* resolved data roots */
  size_t n_data;
  char *output; /* resolved output root */
} dd_paths;

/* Resolves the roots (no data root: the working directory; no output root: "out", created).
 * Returns 0, or DD_EINVAL naming the field. */
int dd_paths_init(dd_paths *p, char *const *data_roots, size_t n_data, const char *output_root, char *err, size_t errlen);
void dd_paths_free(dd_paths *p);

/* 0 when `path` resolves under a data root; DD_EPERM with "FIELD: ... refused" otherwise. */
int dd_paths_check_read(const dd_paths *p, const char *field, const char *path, char *err, size_t errlen);
/* 0 when `path` (a directory that may not exist yet) resolves strictly inside the output root. */
int dd_paths_check_write(const dd_paths *p, const char *field, const char *path, char *err, size_t errlen);
/* The policy core asks as it opens a job's files (core/base/path_policy.h): inputs with
 * dd_paths_check_read, the output directory with dd_paths_check_write. `p` must outlive the job. */
dd_path_policy dd_paths_policy(const dd_paths *p);

#endif
