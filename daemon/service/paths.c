/* Where a queued job may read and write (paths.h): core asks this policy early and opens through
 * it each file a job reads (the nets, weights, list files, each listed image, mean files) and its
 * output directory; every open happens beneath a root's directory descriptor. */
#define _GNU_SOURCE
#include "paths.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(SYS_openat2) && defined(__has_include)
#if __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#define DD_HAVE_OPENAT2 1
#endif
#endif

#include "base/dd_error.h"

/* 1 when the resolved path `p` is `root` or inside it. */
static int under(const char *p, const char *root) {
  size_t n = strlen(root);
  if (n == 1 && root[0] == '/') return 1;
  return !strncmp(p, root, n) && (p[n] == '\0' || p[n] == '/');
}

/* The part of `p` below `root` ("" for the root itself); `p` is under `root`. */
static const char *below(const char *p, const char *root) {
  size_t n = strlen(root);
  if (n == 1 && root[0] == '/') n = 0;
  return p[n] == '/' ? p + n + 1 : p + n;
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

/* Resolves the directory of `path` (which must exist) and appends its last component unresolved,
 * so that the file itself (perhaps a symlink) is opened by the kernel, beneath a root. */
static int resolve_dir(const char *path, char *out) {
  const char *slash = strrchr(path, '/');
  const char *last = slash ? slash + 1 : path;
  if (!last[0] || !strcmp(last, ".") || !strcmp(last, "..")) return resolve(path, out, 1);
  char dir[PATH_MAX];
  size_t dlen = slash ? (slash == path ? 1 : (size_t)(slash - path)) : 1;
  if (dlen >= sizeof dir) return -1;
  if (slash)
    memcpy(dir, path, dlen);
  else
    dir[0] = '.';
  dir[dlen] = '\0';
  char *rp = realpath(dir, NULL);
  if (!rp) return -1;
  int n = snprintf(out, PATH_MAX, "%s/%s", strcmp(rp, "/") ? rp : "", last);
  free(rp);
  return n < PATH_MAX ? 0 : -1;
}

int dd_paths_init(dd_paths *p, char *const *data_roots, size_t n_data, const char *output_root, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  p->output_fd = -1;
  const char *dflt = ".";
  if (n_data == 0) {
    data_roots = (char *const *)&dflt;
    n_data = 1;
  }
  if (n_data > DD_PATHS_MAX_ROOTS) return dd_errorf(DD_EINVAL, err, errlen, "data_root: at most %d roots", DD_PATHS_MAX_ROOTS);
  for (size_t i = 0; i < n_data; i++) {
    char *rp = realpath(data_roots[i], NULL);
    int fd = rp ? open(rp, O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
    if (fd < 0) {
      int e = errno;
      free(rp);
      dd_paths_free(p);
      return dd_errorf(DD_EINVAL, err, errlen, "data_root: \"%s\": %s", data_roots[i], strerror(e));
    }
    p->data[p->n_data] = rp;
    p->data_fd[p->n_data++] = fd;
  }
  const char *out = output_root && output_root[0] ? output_root : "out";
  int r = 0;
  if (mkdir(out, 0755) != 0 && errno != EEXIST)
    r = dd_errorf(DD_EINVAL, err, errlen, "output_root: cannot create \"%s\": %s", out, strerror(errno));
  else if (!(p->output = realpath(out, NULL)) || (p->output_fd = open(p->output, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
    r = dd_errorf(DD_EINVAL, err, errlen, "output_root: \"%s\": %s", out, strerror(errno));
  if (r) dd_paths_free(p);
  return r;
}

void dd_paths_free(dd_paths *p) {
  for (size_t i = 0; i < p->n_data; i++) {
    free(p->data[i]);
    close(p->data_fd[i]);
  }
  free(p->output);
  if (p->output_fd >= 0) close(p->output_fd);
  memset(p, 0, sizeof *p);
  p->output_fd = -1;
}

/* ---- opening beneath a root ------------------------------------------------------------------- */

static int refused_read(const char *field, const char *path, char *err, size_t errlen) {
  return dd_errorf(DD_EPERM, err, errlen, "%s%s\"%s\" is outside the daemon's data roots: refused", field ? field : "",
                   field ? ": " : "", path);
}

/* openat(2) of `rel` beneath `root` with `flags`, following no symlink (O_NOFOLLOW on every
 * component); for the fallback when the kernel has no openat2. */
static int walk_open(int root, const char *rel, int flags) {
  int fd = dup(root);
  if (fd < 0) return -1;
  char comp[NAME_MAX + 1];
  for (const char *c = rel; fd >= 0;) {
    while (*c == '/') c++;
    const char *e = c;
    while (*e && *e != '/') e++;
    const char *next = e;
    while (*next == '/') next++;
    size_t n = (size_t)(e - c);
    if (n > NAME_MAX || (n == 2 && c[0] == '.' && c[1] == '.')) {
      close(fd);
      errno = n > NAME_MAX ? ENAMETOOLONG : EXDEV;
      return -1;
    }
    memcpy(comp, n ? c : ".", n ? n : 1);
    comp[n ? n : 1] = '\0';
    int last = !*next;
    int nfd = openat(fd, comp, last ? flags | O_NOFOLLOW : O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int e2 = errno;
    close(fd);
    errno = e2;
    if (last || nfd < 0) return nfd;
    fd = nfd;
    c = next;
  }
  return -1;
}

/* Opens `rel` beneath the directory `root` with `flags`: openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_MAGICLINKS, or the O_NOFOLLOW walk. -1 with errno (EXDEV or ELOOP: it leads out). */
static int beneath_open(const dd_paths *p, int root, const char *rel, int flags) {
  if (!rel[0]) rel = ".";
#ifdef DD_HAVE_OPENAT2
  if (!p->walk_only) {
    struct open_how how = {.flags = (unsigned long long)flags, .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
    long fd = syscall(SYS_openat2, root, rel, &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS) return (int)fd;
  }
#else
  (void)p;
#endif
  return walk_open(root, rel, flags);
}

/* The data root `path` lies beneath, with the part below it in `*rel` (inside `buf`); -1: none. */
static int data_root_of(const dd_paths *p, const char *path, char buf[PATH_MAX], const char **rel) {
  if (resolve_dir(path, buf) && resolve(path, buf, 0)) return -1;
  for (size_t i = 0; i < p->n_data; i++)
    if (under(buf, p->data[i])) {
      *rel = below(buf, p->data[i]);
      return (int)i;
    }
  return -1;
}

int dd_paths_open_read(const dd_paths *p, const char *field, const char *path, int *fd, char *err, size_t errlen) {
  *fd = -1;
  char buf[PATH_MAX];
  const char *rel;
  int i = data_root_of(p, path, buf, &rel);
  if (i < 0) return refused_read(field, path, err, errlen);
  int f = beneath_open(p, p->data_fd[i], rel, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (f < 0 && (errno == EXDEV || errno == ELOOP)) return refused_read(field, path, err, errlen);
  if (f < 0)
    return dd_errorf(DD_EIO, err, errlen, "%s%s%s: cannot open: %s", field ? field : "", field ? ": " : "", path,
                     strerror(errno));
  /* a regular file only: checked before anything could block, then blocking again */
  int r = dd_fd_require_regular(f, field, path, err, errlen);
  if (r) {
    close(f);
    return r;
  }
  *fd = f;
  return 0;
}

int dd_paths_check_read(const dd_paths *p, const char *field, const char *path, char *err, size_t errlen) {
  char buf[PATH_MAX];
  const char *rel;
  int i = data_root_of(p, path, buf, &rel);
  if (i < 0) return refused_read(field, path, err, errlen);
  int f = beneath_open(p, p->data_fd[i], rel, O_PATH | O_CLOEXEC);
  if (f < 0) return errno == EXDEV || errno == ELOOP ? refused_read(field, path, err, errlen) : 0; /* the open says why */
  struct stat st;
  int ok = fstat(f, &st) == 0 && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode));
  close(f);
  if (!ok)
    return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s\" is not a regular file (a FIFO, socket or device is never read): refused",
                     field, path);
  return 0;
}

static int refused_write(const char *field, const char *path, const dd_paths *p, char *err, size_t errlen) {
  return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s\" is not inside the daemon's output root %s: refused", field, path,
                   p->output);
}

int dd_paths_check_write(const dd_paths *p, const char *field, const char *path, char *err, size_t errlen) {
  char r[PATH_MAX];
  if (resolve(path, r, 0) || !under(r, p->output) || !strcmp(r, p->output)) return refused_write(field, path, p, err, errlen);
  char snaps[PATH_MAX + 16];
  snprintf(snaps, sizeof snaps, "%s/snapshots", r);
  char rs[PATH_MAX];
  struct stat st;
  if (lstat(snaps, &st) == 0 && (resolve(snaps, rs, 1) || !under(rs, p->output)))
    return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s/snapshots\" leads outside the output root: refused", field, path);
  return 0;
}

int dd_paths_open_output(const dd_paths *p, const char *field, const char *path, int *fd, char *err, size_t errlen) {
  *fd = -1;
  char r[PATH_MAX];
  if (resolve(path, r, 0) || !under(r, p->output) || !strcmp(r, p->output)) return refused_write(field, path, p, err, errlen);
  /* one component at a time from the output root, creating what is missing, following no symlink */
  int cur = openat(p->output_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  char comp[NAME_MAX + 1];
  for (const char *c = below(r, p->output); cur >= 0 && *c;) {
    const char *e = strchr(c, '/');
    size_t n = e ? (size_t)(e - c) : strlen(c);
    if (n == 0 || n > NAME_MAX) {
      c += n + (e ? 1 : 0);
      continue;
    }
    memcpy(comp, c, n);
    comp[n] = '\0';
    c += n + (e ? 1 : 0);
    if (mkdirat(cur, comp, 0755) != 0 && errno != EEXIST) {
      int e2 = errno;
      close(cur);
      return dd_errorf(DD_EIO, err, errlen, "%s: cannot create \"%s\": %s", field, path, strerror(e2));
    }
    int next = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int e2 = errno;
    close(cur);
    if (next < 0) {
      if (e2 == ELOOP || e2 == ENOTDIR) return refused_write(field, path, p, err, errlen);
      return dd_errorf(DD_EIO, err, errlen, "%s: cannot open \"%s\": %s", field, path, strerror(e2));
    }
    cur = next;
  }
  if (cur < 0) return dd_errorf(DD_EIO, err, errlen, "%s: cannot open \"%s\": %s", field, path, strerror(errno));
  *fd = cur;
  return 0;
}

static int policy_check(void *ctx, dd_path_access access, const char *field, const char *path, char *err, size_t errlen) {
  const dd_paths *p = ctx;
  return access == DD_PATH_OUTPUT ? dd_paths_check_write(p, field, path, err, errlen)
                                  : dd_paths_check_read(p, field, path, err, errlen);
}

static int policy_open(void *ctx, dd_path_access access, const char *field, const char *path, int *fd, char *err,
                       size_t errlen) {
  const dd_paths *p = ctx;
  return access == DD_PATH_OUTPUT ? dd_paths_open_output(p, field ? field : "output_dir", path, fd, err, errlen)
                                  : dd_paths_open_read(p, field, path, fd, err, errlen);
}

dd_path_policy dd_paths_policy(const dd_paths *p) {
  return (dd_path_policy){.ctx = (void *)p, .check = policy_check, .open = policy_open};
}
