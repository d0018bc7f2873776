/* Whole-file reads and atomic whole-file writes (see fileio.h). */
#define _POSIX_C_SOURCE 200809L
#include "format/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "base/path_policy.h"

int dd_read_fd(char **out, size_t *out_len, int fd, const char *name, char *err, size_t errlen) {
  *out = NULL;
  *out_len = 0;
  struct stat st;
  if (fstat(fd, &st) != 0) return dd_errorf(DD_EIO, err, errlen, "%s: cannot stat: %s", name, strerror(errno));
  /* st_size is a hint only (/proc files report 0): grow as needed. */
  size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096, len = 0;
  char *buf = malloc(cap);
  if (!buf) return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory reading %zu bytes", name, cap);
  for (;;) {
    if (len + 1 >= cap) {
      size_t ncap = cap * 2;
      char *nbuf = realloc(buf, ncap);
      if (!nbuf) {
        free(buf);
        return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory reading %zu bytes", name, ncap);
      }
      buf = nbuf;
      cap = ncap;
    }
    ssize_t n = read(fd, buf + len, cap - 1 - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      free(buf);
      return dd_errorf(DD_EIO, err, errlen, "%s: read failed: %s", name, strerror(e));
    }
    if (n == 0) break;
    len += (size_t)n;
  }
  buf[len] = '\0';
  *out = buf;
  *out_len = len;
  return 0;
}

int dd_read_file(char **out, size_t *out_len, const char *path, char *err, size_t errlen) {
  *out = NULL;
  *out_len = 0;
  int fd;
  int r = dd_open_regular_at(AT_FDCWD, path, 0, NULL, path, &fd, err, errlen);
  if (r) return r;
  r = dd_read_fd(out, out_len, fd, path, err, errlen);
  close(fd);
  return r;
}

/* Writes all of `len` bytes to `fd`. Returns 0 or -1 with errno set. */
static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int dd_write_file_at(int dirfd, const char *name, const char *shown, const void *data, size_t len, char *err,
                     size_t errlen) {
  if (!shown) shown = name;
  if (strchr(name, '/')) return dd_errorf(DD_EIO, err, errlen, "%s: cannot create: a name with a '/'", shown);
  size_t nlen = strlen(name);
  char *tmp = malloc(nlen + 48);
  if (!tmp) return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory", shown);
  int fd = -1;
  for (int k = 0; k < 16 && fd < 0; k++) {
    if (k == 0)
      snprintf(tmp, nlen + 48, "%s.tmp.%ld", name, (long)getpid());
    else
      snprintf(tmp, nlen + 48, "%s.tmp.%ld.%d", name, (long)getpid(), k);
    fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    int e = errno;
    free(tmp);
    return dd_errorf(DD_EIO, err, errlen, "%s: cannot create: %s", shown, strerror(e));
  }
  if (write_all(fd, data, len) != 0 || fsync(fd) != 0) goto fail_write;
  if (close(fd) != 0) {
    fd = -1;
    goto fail_write;
  }
  if (renameat(dirfd, tmp, dirfd, name) != 0) {
    int e = errno;
    unlinkat(dirfd, tmp, 0);
    free(tmp);
    return dd_errorf(DD_EIO, err, errlen, "%s: cannot rename into place: %s", shown, strerror(e));
  }
  free(tmp);
  return 0;

fail_write: {
  int e = errno;
  if (fd >= 0) close(fd);
  unlinkat(dirfd, tmp, 0);
  free(tmp);
  return dd_errorf(DD_EIO, err, errlen, "%s: write failed: %s", shown, strerror(e));
}
}

int dd_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen) {
  const char *slash = strrchr(path, '/');
  int dfd;
  if (!slash) {
    dfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  } else {
    size_t dlen = slash == path ? 1 : (size_t)(slash - path);
    char *dir = malloc(dlen + 1);
    if (!dir) return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory", path);
    memcpy(dir, path, dlen);
    dir[dlen] = '\0';
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
  }
  if (dfd < 0) return dd_errorf(DD_EIO, err, errlen, "%s: cannot create: %s", path, strerror(errno));
  int r = dd_write_file_at(dfd, slash ? slash + 1 : path, path, data, len, err, errlen);
  close(dfd);
  return r;
}
