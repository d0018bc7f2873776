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

/* Where the tests find ../shared and the source tree (set by tests/CMakeLists.txt). */
#ifndef DD_SOURCE_DIR
#define DD_SOURCE_DIR "."
#endif
#ifndef DD_SHARED_DIR
#define DD_SHARED_DIR DD_SOURCE_DIR "/../shared"
#endif

#endif
