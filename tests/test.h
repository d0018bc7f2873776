/* A minimal test harness: each test file defines `static void test_x(void)` functions, lists them
 * in main() with RUN(test_x), and ends with `return test_summary();`. CHECK records a failure and
 * carries on; REQUIRE stops the current test. The closing line is "N passed, N failed". */
#ifndef DD_TEST_H
#define DD_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test__failed_checks, test__passed, test__failed, test__cur_failed;
static const char *test__name;

#define CHECK(cond)                                                                      \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      fprintf(stderr, "%s:%d: %s: CHECK failed: %s\n", __FILE__, __LINE__, test__name,  \
              #cond);                                                                    \
      test__failed_checks++;                                                             \
      test__cur_failed = 1;                                                              \
    }                                                                                    \
  } while (0)

#define CHECKF(cond, ...)                                                                \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      fprintf(stderr, "%s:%d: %s: CHECK failed: %s: ", __FILE__, __LINE__, test__name,  \
              #cond);                                                                    \
      fprintf(stderr, __VA_ARGS__);                                                      \
      fputc('\n', stderr);                                                               \
      test__failed_checks++;                                                             \
      test__cur_failed = 1;                                                              \
    }                                                                                    \
  } while (0)

#define REQUIRE(cond)                                                                    \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      fprintf(stderr, "%s:%d: %s: REQUIRE failed: %s\n", __FILE__, __LINE__, test__name, \
              #cond);                                                                    \
      test__failed_checks++;                                                             \
      test__cur_failed = 1;                                                              \
      return;                                                                            \
    }                                                                                    \
  } while (0)

/* REQUIRE for a call returning 0 on success that fills the char array `err` (core's convention):
 * on failure the message, which names the file for every read, is printed. */
#define REQUIRE_OK(call, err)                                                             \
  do {                                                                                    \
    if ((call) != 0) {                                                                    \
      fprintf(stderr, "%s:%d: %s: REQUIRE failed: %s: %s\n", __FILE__, __LINE__, test__name, \
              #call, (err));                                                              \
      test__failed_checks++;                                                              \
      test__cur_failed = 1;                                                               \
      return;                                                                             \
    }                                                                                     \
  } while (0)

/* Substring check with the haystack shown on failure. */
static inline int test__contains(const char *hay, const char *needle) {
  return hay != NULL && strstr(hay, needle) != NULL;
}
static inline const char *test__str(const char *s) { return s ? s : "(null)"; }
#define CHECK_CONTAINS(hay, needle) \
  CHECKF(test__contains((hay), (needle)), "\"%s\" not found in \"%s\"", (needle), test__str(hay))

#define RUN(fn)                                                        \
  do {                                                                 \
    test__name = #fn;                                                  \
    test__cur_failed = 0;                                              \
    fn();                                                              \
    if (test__cur_failed) {                                            \
      test__failed++;                                                  \
      fprintf(stderr, "FAIL %s\n", #fn);                               \
    } else {                                                           \
      test__passed++;                                                  \
      printf("ok   %s\n", #fn);                                        \
    }                                                                  \
  } while (0)

static inline int test_summary(void) {
  printf("%d passed, %d failed\n", test__passed, test__failed);
  return test__failed ? 1 : 0;
}

/* Runs the shell command `cmd` (stdout and stderr as the command redirects them) and captures
 * its standard output into a malloc'd, NUL-terminated *out (NULL when out of memory). Returns the
 * exit status, or -1 if it did not exit normally. */
FILE *popen(const char *command, const char *type); /* POSIX, declared here for C11 builds */
int pclose(FILE *stream);
static inline int test_capture(char **out, const char *cmd) {
  FILE *p = popen(cmd, "r");
  *out = NULL;
  if (!p) return -1;
  size_t cap = 1 << 16, len = 0, n;
  char *buf = malloc(cap);
  while (buf && (n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
    len += n;
    if (len + 1 == cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) break;
      buf = nb;
      cap *= 2;
    }
  }
  if (buf) buf[len] = '\0';
  int st = pclose(p);
  *out = buf;
  return st != -1 && (st & 0x7f) == 0 ? (st >> 8) & 0xff : -1; /* WIFEXITED / WEXITSTATUS */
}

/* Where the tests find their data (tests/data) and the source tree (set by tests/CMakeLists.txt). */
#ifndef DD_SOURCE_DIR
#define DD_SOURCE_DIR "."
#endif
#ifndef DD_TEST_DATA
#define DD_TEST_DATA DD_SOURCE_DIR "/tests/data"
#endif

#endif
