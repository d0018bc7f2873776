/* Where a queued job may read and write (paths.h): core asks this policy as it opens each file a
 * job reads (the nets, weights, list files, each listed image, mean files) and before it creates
 * the output directory; every path is resolved, symlinks included. */
#define _DEFAULT_SOURCE
#include "service/paths.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/dd_error.h"

/* 1 when the resolved path `p` is `root` or inside it. */
static int under(const char *p, const char *root) {
  size_t n = strlen(root);
  if (n == 1 && root[0] == '/') return 1;
  return !strncmp(p, root, n) && (p[n] == '\0' || p[n] == '/');
}

static int under_any(const char *p, char *const *roots, size_t n_roots) {
  for (size_t i = 0; i < n_roots; i++)
    if (under(p, roots[i])) return 1;
  return 0;
}

/* Resolves `path`, or for a path that does not exist yet, its deepest existing ancestor plus the
 * remaining components (which may not be "." or ".."). Returns 0 and the result in `out`. */
static int resolve(const char *path, char *out, int must_exist) {
  char *rp = realpath(path, NULL);
  if (rp) {
    int n = snprintf(out, PATH_MAX, "%s", rp);
    free(rp);
    return n < PATH_MAX ? 0 : -1;
  }
  if (must_exist || errno != ENOENT || !path[0]) return -1;
  char abs[PATH_MAX];
  if (path[0] == '/') {
    if (snprintf(abs, sizeof abs, "%s", path) >= (int)sizeof abs) return -1;
  } else {
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd) || snprintf(abs, sizeof abs, "%s/%s", cwd, path) >= (int)sizeof abs) return -1;
  }
  /* the longest prefix, cut at a '/', that exists */
  for (size_t k = strlen(abs); k-- > 0;) {
    if (abs[k] != '/') continue;
    char head[PATH_MAX];
    memcpy(head, abs, k);
    head[k] = '\0';
    rp = realpath(k ? head : "/", NULL);
    if (!rp) {
      if (errno != ENOENT && errno != ENOTDIR) return -1;
      continue;
    }
    int n = snprintf(out, PATH_MAX, "%s/%s", strcmp(rp, "/") ? rp : "", abs + k + 1);
    free(rp);
    if (n >= PATH_MAX) return -1;
    /* the components that do not exist yet may not climb (the resolved head has no . or ..) */
    for (const char *c = out; *c;) {
      while (*c == '/') c++;
      const char *e = c;
      while (*e && *e != '/') e++;
      if ((e - c == 1 && c[0] == '.') || (e - c == 2 && c[0] == '.' && c[1] == '.')) return -1;
      c = e;
    }
    return 0;
  }
  return -1;
}

int dd_paths_init(dd_paths *p, char *const *data_roots, size_t n_data, const char *output_root, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  const char *dflt = ".";
  if (n_data == 0) {
    data_roots = (char *const *)&dflt;
    n_data = 1;
  }
  if (n_data > DD_PATHS_MAX_ROOTS) return dd_errorf(DD_EINVAL, err, errlen, "data_root: at most %d roots", DD_PATHS_MAX_ROOTS);
  for (size_t i = 0; i < n_data; i++) {
    char *rp = realpath(data_roots[i], NULL);
    if (!rp) return dd_errorf(DD_EINVAL, err, errlen, "data_root: \"%s\": %s", data_roots[i], strerror(errno));
    p->data[p->n_data++] = rp;
  }
  const char *out = output_root && output_root[0] ? output_root : "out";
  if (mkdir(out, 0755) != 0 && errno != EEXIST)
    return dd_errorf(DD_EINVAL, err, errlen, "output_root: cannot create \"%s\": %s", out, strerror(errno));
  p->output = realpath(out, NULL);
  if (!p->output) return dd_errorf(DD_EINVAL, err, errlen, "output_root: \"%s\": %s", out, strerror(errno));
  return 0;
}

void dd_paths_free(dd_paths *p) {
  for (size_t i = 0; i < p->n_data; i++) free(p->data[i]);
  free(p->output);
  memset(p, 0, sizeof *p);
}

int dd_paths_check_read(const dd_paths *p, const char *field, const char *path, char *err, size_t errlen) {
  char r[PATH_MAX];
  if (resolve(path, r, 0))
    return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s\" cannot be resolved: refused", field, path);
  if (!under_any(r, p->data, p->n_data))
    return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s\" (%s) is outside the daemon's data roots: refused", field, path, r);
  return 0;
}

int dd_paths_check_write(const dd_paths *p, const char *field, const char *path, char *err, size_t errlen) {
  char r[PATH_MAX];
  if (resolve(path, r, 0))
    return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s\" cannot be resolved: refused", field, path);
  if (!under(r, p->output) || !strcmp(r, p->output))
    return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s\" (%s) is not inside the daemon's output root %s: refused", field,
                     path, r, p->output);
  char snaps[PATH_MAX + 16];
  snprintf(snaps, sizeof snaps, "%s/snapshots", r);
  char rs[PATH_MAX];
  struct stat st;
  if (lstat(snaps, &st) == 0 && (resolve(snaps, rs, 1) || !under(rs, p->output)))
    return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s/snapshots\" leads outside the output root: refused", field, path);
  return 0;
}

static int policy_check(void *ctx, dd_path_access access, const char *field, const char *path, char *err, size_t errlen) {
  const dd_paths *p = ctx;
  return access == DD_PATH_OUTPUT ? dd_paths_check_write(p, field, path, err, errlen)
                                  : dd_paths_check_read(p, field, path, err, errlen);
}

dd_path_policy dd_paths_policy(const dd_paths *p) { return (dd_path_policy){.ctx = (void *)p, .check = policy_check}; }
