/* A minimal test harness: each test file defines `static void test_x(void)` functions, lists them
 * in main() with RUN(test_x), and ends with `return test_summary();`. CHECK records a failure and
 * carries on; REQUIRE stops the current test. The closing line is "N passed, N failed".
 * Also here, for every test: test_capture (a shell command's output), test_sh, the scratch folder
 * of main (test_scratch_dir, test_scratch_remove) and the CLI runner (test_distilld). Files:
 * tests/test_files.h; child processes: tests/test_proc.h; Redis: tests/test_redis.h. */
#ifndef DD_TEST_H
#define DD_TEST_H

#include <math.h>
#include <stdarg.h>
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

/* Runs the shell command printf(fmt, ...) with system(); a failure is printed, never fatal. */
int system(const char *command);
static inline void test_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void test_sh(const char *fmt, ...) {
  char cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  if (system(cmd) != 0) fprintf(stderr, "command failed: %s\n", cmd);
}

/* ---- the test's scratch folder (the boilerplate of main) -------------------------------------- */

char *mkdtemp(char *tmpl); /* POSIX, declared here for C11 builds */

/* Makes the scratch folder /tmp/dd_NAME.XXXXXX (mkdtemp) into `dir`; 0 on success (a failure is
 * printed). */
static inline int test_scratch_dir(char *dir, size_t len, const char *name) {
  snprintf(dir, len, "/tmp/dd_%s.XXXXXX", name);
  if (mkdtemp(dir)) return 0;
  perror("mkdtemp");
  return -1;
}

/* Removes the scratch folder `dir` (rm -rf), unless DD_KEEP_TMP is set: then says where it is. */
static inline void test_scratch_remove(const char *dir) {
  if (getenv("DD_KEEP_TMP")) {
    printf("     kept %s\n", dir);
    return;
  }
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* ---- the CLI runner ---------------------------------------------------------------------------- */

#ifdef DISTILLD_EXE
/* Runs `distilld ARGS` (ARGS: vprintf(fmt, ap), shell-quoted by the caller) in folder `cwd` (NULL:
 * where the test runs), stdout and stderr together into a malloc'd *out (as test_capture). Returns
 * the exit status, or -1 if it did not exit normally. */
static inline int test_distilld_v(char **out, const char *cwd, const char *fmt, va_list ap) {
  char args[4096], cmd[8192];
  vsnprintf(args, sizeof args, fmt, ap);
  if (cwd)
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s 2>&1", cwd, DISTILLD_EXE, args);
  else
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", DISTILLD_EXE, args);
  return test_capture(out, cmd);
}

static inline int test_distilld(char **out, const char *cwd, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline int test_distilld(char **out, const char *cwd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int st = test_distilld_v(out, cwd, fmt, ap);
  va_end(ap);
  return st;
}
#endif

/* Where the tests find their data (tests/data) and the source tree (set by tests/CMakeLists.txt). */
#ifndef DD_SOURCE_DIR
#define DD_SOURCE_DIR "."
#endif
#ifndef DD_TEST_DATA
#define DD_TEST_DATA DD_SOURCE_DIR "/tests/data"
#endif

#endif
