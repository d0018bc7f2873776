/* Opening a job's files through its path policy, and the plain opener without one (see
 * path_policy.h). */
#define _POSIX_C_SOURCE 200809L
#include "base/path_policy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/dd_error.h"

int dd_fd_require_regular(int fd, const char *field, const char *shown, char *err, size_t errlen) {
  const char *sep = field ? ": " : "";
  if (!field) field = "";
  struct stat st;
  if (fstat(fd, &st) != 0) return dd_errorf(DD_EIO, err, errlen, "%s%s%s: cannot stat: %s", field, sep, shown, strerror(errno));
  if (!S_ISREG(st.st_mode))
    return dd_errorf(DD_EIO, err, errlen, "%s%s%s: %s", field, sep, shown,
                     S_ISDIR(st.st_mode) ? "is a directory, expected a file"
                                         : "not a regular file (a FIFO, socket or device is never read)");
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0)
    return dd_errorf(DD_EIO, err, errlen, "%s%s%s: cannot open: %s", field, sep, shown, strerror(errno));
  return 0;
}

int dd_open_regular_at(int dirfd, const char *name, int extra_flags, const char *field, const char *shown, int *fd,
                       char *err, size_t errlen) {
  *fd = -1;
  int f = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | extra_flags);
  if (f < 0)
    return dd_errorf(DD_EIO, err, errlen, "%s%s%s: cannot open: %s", field ? field : "", field ? ": " : "", shown,
                     strerror(errno));
  int r = dd_fd_require_regular(f, field, shown, err, errlen);
  if (r) {
    close(f);
    return r;
  }
  *fd = f;
  return 0;
}

/* mkdir -p: creates `path` and its missing parents. Returns 0 or -1 with errno set. */
static int mkdir_p(const char *path) {
  char buf[4096];
  size_t len = strlen(path);
  if (len == 0 || len >= sizeof buf) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(buf, path, len + 1);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

int dd_path_open_plain(dd_path_access access, const char *field, const char *path, int *fd, char *err, size_t errlen) {
  *fd = -1;
  if (access == DD_PATH_READ) return dd_open_regular_at(AT_FDCWD, path, 0, field, path, fd, err, errlen);
  const char *sep = field ? ": " : "";
  if (!field) field = "";
  if (mkdir_p(path) != 0)
    return dd_errorf(DD_EIO, err, errlen, "%s%scannot create \"%s\": %s", field, sep, path, strerror(errno));
  int f = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (f < 0) return dd_errorf(DD_EIO, err, errlen, "%s%scannot open \"%s\": %s", field, sep, path, strerror(errno));
  *fd = f;
  return 0;
}

int dd_path_open(const dd_path_policy *p, dd_path_access access, int asked, const char *field, const char *path,
                 int *fd, char *err, size_t errlen) {
  *fd = -1;
  if (p && p->open) return p->open(p->ctx, access, field, path, fd, err, errlen);
  if (!asked) {
    int r = dd_path_check(p, access, field ? field : "", path, err, errlen);
    if (r) return r;
  }
  return dd_path_open_plain(access, field, path, fd, err, errlen);
}
