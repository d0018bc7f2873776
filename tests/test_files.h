/* File helpers shared by the tests: reading a whole file (test_slurp) and searching it
 * (test_file_contains, test_log_has_sanitizer_report), the tail of a log on failure
 * (test_print_tail), first and last lines, copying, writing (wfile, test_write_bytes), rm -rf without a shell
 * (rm_rf), counting a folder's files, and the newest snapshot a job wrote (test_newest_snapshot:
 * the highest N of NAME_iter_N.solverstate). rm_rf needs _XOPEN_SOURCE 500 or _GNU_SOURCE (nftw)
 * before the first system header; without it there is no rm_rf. */
#ifndef DD_TEST_FILES_H
#define DD_TEST_FILES_H

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The whole file, NUL-terminated and malloc'd; NULL when unreadable. */
static inline char *test_slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, len = 0, n;
  char *buf = malloc(cap);
  while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (len + 1 == cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  fclose(f);
  if (buf) buf[len] = '\0';
  return buf;
}

/* 1 when the file exists and holds `needle`. */
static inline int test_file_contains(const char *path, const char *needle) {
  char *buf = test_slurp(path);
  int found = buf && strstr(buf, needle) != NULL;
  free(buf);
  return found;
}

/* Whether a log holds a sanitizer's report (the ASan build's processes write them there). */
static inline int test_log_has_sanitizer_report(const char *log) {
  return test_file_contains(log, "AddressSanitizer") || test_file_contains(log, "LeakSanitizer") ||
         test_file_contains(log, "runtime error:") || test_file_contains(log, "ThreadSanitizer");
}

/* 1 when `path` exists. */
static inline int test_exists(const char *path) { return access(path, F_OK) == 0; }

/* Prints the last `lines` lines of a file to stderr, between lines naming `title` and the file. */
static inline void test_print_tail(const char *title, const char *path, int lines) {
  char *buf = test_slurp(path);
  if (!buf) return;
  const char *p = buf + strlen(buf);
  int seen = 0;
  while (p > buf && seen <= lines)
    if (*--p == '\n') seen++;
  if (*p == '\n') p++;
  fprintf(stderr, "---- %s (%s), last %d lines ----\n%s---- end of %s ----\n", title, path, lines, p, title);
  free(buf);
}

/* The first line of `s` (NULL: ""), without its line end, into `buf`. */
static inline void test_first_line(const char *s, char *buf, size_t len) {
  snprintf(buf, len, "%s", s ? s : "");
  buf[strcspn(buf, "\r\n")] = '\0';
}

/* The last non-empty line of `s` (NULL: ""), into `buf`. */
static inline void test_last_line(const char *s, char *buf, size_t len) {
  if (!s) s = "";
  const char *e = s + strlen(s);
  while (e > s && e[-1] == '\n') e--;
  const char *p = e;
  while (p > s && p[-1] != '\n') p--;
  snprintf(buf, len, "%.*s", (int)(e - p < (long)len ? e - p : (long)len - 1), p);
}

/* Copies a file; 1 when copied. */
static inline int test_copy_file(const char *from, const char *to) {
  FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
  int ok = a && b;
  char buf[65536];
  size_t n;
  while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
  if (a) fclose(a);
  if (b && fclose(b) != 0) ok = 0;
  return ok;
}

/* Writes a whole file; 1 when written (a failure to open is printed). */
static inline int wfile(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int wfile(const char *path, const char *fmt, ...) {
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    return 0;
  }
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  return fclose(f) == 0;
}

/* Writes `n` bytes to `path`; 0 when written, -1 otherwise. */
static inline int test_write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t w = fwrite(data, 1, n, f);
  return fclose(f) == 0 && w == n ? 0 : -1;
}

#ifdef FTW_PHYS
static inline int test__rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  remove(path);
  return 0;
}

/* rm -rf, without a shell (symlinks are removed, never followed). */
static inline void rm_rf(const char *path) { nftw(path, test__rm_entry, 16, FTW_DEPTH | FTW_PHYS); }
#endif

/* The number of entries of folder `dir` not starting with '.' (0 when it does not exist). */
static inline int test_count_files(const char *dir) {
  DIR *dh = opendir(dir);
  if (!dh) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(dh))) n += e->d_name[0] != '.';
  closedir(dh);
  return n;
}

/* The highest N of DIR/NAME_iter_N.solverstate (a job's newest snapshot); -1 when there is none. */
static inline int test_newest_snapshot(const char *dir, const char *name) {
  char pat[128];
  int plen = snprintf(pat, sizeof pat, "%s_iter_", name);
  DIR *dh = opendir(dir);
  if (!dh) return -1;
  int best = -1;
  struct dirent *e;
  while ((e = readdir(dh))) {
    if (strncmp(e->d_name, pat, (size_t)plen)) continue;
    char *end;
    long v = strtol(e->d_name + plen, &end, 10);
    if (!strcmp(end, ".solverstate") && v > best) best = (int)v;
  }
  closedir(dh);
  return best;
}

#endif
