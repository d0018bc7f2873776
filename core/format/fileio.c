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

int dd_read_file(char **out, size_t *out_len, const char *path, char *err, size_t errlen) {
  *out = NULL;
  *out_len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return dd_errorf(DD_EIO, err, errlen, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return dd_errorf(DD_EIO, err, errlen, "%s: cannot stat: %s", path, strerror(e));
  }
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    return dd_errorf(DD_EIO, err, errlen, "%s: is a directory, expected a file", path);
  }
  /* st_size is a hint only (pipes and /proc files report 0): grow as needed. */
  size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096, len = 0;
  char *buf = malloc(cap);
  if (!buf) {
    close(fd);
    return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory reading %zu bytes", path, cap);
  }
  for (;;) {
    if (len + 1 >= cap) {
      size_t ncap = cap * 2;
      char *nbuf = realloc(buf, ncap);
      if (!nbuf) {
        free(buf);
        close(fd);
        return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory reading %zu bytes", path,
                         ncap);
      }
      buf = nbuf;
      cap = ncap;
    }
    ssize_t n = read(fd, buf + len, cap - 1 - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      free(buf);
      close(fd);
      return dd_errorf(DD_EIO, err, errlen, "%s: read failed: %s", path, strerror(e));
    }
    if (n == 0) break;
    len += (size_t)n;
  }
  close(fd);
  buf[len] = '\0';
  *out = buf;
  *out_len = len;
  return 0;
}

int dd_write_file_atomic(const char *path, const void *data, size_t len, char *err,
                         size_t errlen) {
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 32);
  if (!tmp) return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory", path);
  snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    int e = errno;
    free(tmp);
    return dd_errorf(DD_EIO, err, errlen, "%s: cannot create: %s", path, strerror(e));
  }
  const char *p = data;
  size_t left = len;
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      goto fail_write;
    }
    p += n;
    left -= (size_t)n;
  }
  if (fsync(fd) != 0) goto fail_write;
  if (close(fd) != 0) {
    fd = -1;
    goto fail_write;
  }
  if (rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    free(tmp);
    return dd_errorf(DD_EIO, err, errlen, "%s: cannot rename into place: %s", path, strerror(e));
  }
  free(tmp);
  return 0;

fail_write: {
  int e = errno;
  if (fd >= 0) close(fd);
  unlink(tmp);
  free(tmp);
  return dd_errorf(DD_EIO, err, errlen, "%s: write failed: %s", path, strerror(e));
}
}
