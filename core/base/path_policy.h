/* Where a job may read and write: a caller's policy, asked by core at the moment it opens a file.
 *
 * core/ opens every file a job touches itself (the nets, the weights, the solver file, the data
 * layers' list files, every image a list names, mean files, the output directory and what lies in
 * it). Before each open it asks the policy, when there is one, with the field the path came from
 * (for the message) and the kind of access. The daemon's policy (daemon/service/paths.c) allows
 * inputs under its data roots and the output directory strictly inside its output root; the CLI
 * passes none, so everything the user can open is allowed. */
#ifndef DD_PATH_POLICY_H
#define DD_PATH_POLICY_H

#include <stddef.h>

typedef enum {
  DD_PATH_READ = 0, /* an input: a net, weights, a list file, an image, a mean file */
  DD_PATH_OUTPUT = 1 /* the job's output directory (created if missing; snapshots and metrics inside) */
} dd_path_access;

typedef struct {
  void *ctx;
  /* 0 to allow; otherwise an error code (DD_EPERM) with a message naming `field` and `path`. */
  int (*check)(void *ctx, dd_path_access access, const char *field, const char *path, char *err, size_t errlen);
} dd_path_policy;

/* Asks `p` (NULL, or NULL check: allowed). */
static inline int dd_path_check(const dd_path_policy *p, dd_path_access access, const char *field, const char *path,
                                char *err, size_t errlen) {
  return p && p->check ? p->check(p->ctx, access, field, path, err, errlen) : 0;
}

#endif
