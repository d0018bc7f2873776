/* The CLI's habits (issue 21), through the real binary where they show, and the duration
 * formatter (daemon/common/cli_util.c, compiled in here):
 * 1. every verb main.c dispatches (read from daemon/cli/main.c, so a new verb is covered) answers
 *    --help and -h, also after other arguments, on stdout with exit 0: a first line
 *    "usage: distilld VERB ...", its options one per line with defaults, its exit status;
 * 2. `distilld help`, `help VERB`, `--help`, `--version` and `--config --help`;
 * 3. an unknown option exits 2 with a message naming it, then the verb's synopsis; a missing
 *    value and an unknown verb likewise; none of it needs Redis;
 * 4. dd_cli_fmt_duration: 0.4s, 42s, 5m22s, 1h02m, 1d01h, "-" for unknown, at the unit edges. */
#define _POSIX_C_SOURCE 200809L
#include "../daemon/common/cli_util.c"

#include <ctype.h>
#include <math.h>

#include "test.h"

/* `distilld ARGS`: stdout alone (stderr dropped) when `out_only`, else both together. */
static int run(char **out, int out_only, const char *args) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' %s %s", DISTILLD_EXE, args, out_only ? "2>/dev/null" : "2>&1");
  return test_capture(out, cmd);
}

/* 1 when `s` starts with `prefix`. */
static int starts_with(const char *s, const char *prefix) { return s && !strncmp(s, prefix, strlen(prefix)); }

/* The verbs daemon/cli/main.c dispatches: each `!strcmp(verb, "NAME")` in it, in order. */
static int dispatched_verbs(char names[][32], int max) {
  char path[512], *src = NULL;
  snprintf(path, sizeof path, "cat '%s/daemon/cli/main.c'", DD_SOURCE_DIR);
  if (test_capture(&src, path) != 0 || !src) {
    free(src);
    return 0;
  }
  int n = 0;
  static const char pat[] = "strcmp(verb, \"";
  for (const char *p = src; (p = strstr(p, pat)) && n < max; p += sizeof pat - 1) {
    const char *b = p + sizeof pat - 1, *e = strchr(b, '"');
    if (!e || e - b >= 32) continue;
    snprintf(names[n++], 32, "%.*s", (int)(e - b), b);
  }
  free(src);
  return n;
}

/* The name VERB --help shows on its usage line: version's is --version. */
static const char *shown_name(const char *verb) { return !strcmp(verb, "version") ? "--version" : verb; }

/* Checks one help text: the usage line, the options, the help option itself, the exit status. */
static void check_help_text(const char *what, const char *verb, int st, const char *out) {
  char want[64];
  snprintf(want, sizeof want, "usage: distilld %s", shown_name(verb));
  CHECKF(st == 0, "%s: exit %d", what, st);
  CHECKF(starts_with(out, want) && (out[strlen(want)] == ' ' || out[strlen(want)] == '\n'),
         "%s: the first line is not \"%s ...\": %s", what, want, test__str(out));
  CHECKF(test__contains(out, "\noptions:\n"), "%s: no options: %s", what, test__str(out));
  CHECKF(test__contains(out, "  -h, --help "), "%s: -h, --help not listed", what);
  CHECKF(test__contains(out, "\nexit status: "), "%s: no exit status", what);
}

static void test_every_verb_help(void) {
  char verbs[64][32];
  int n = dispatched_verbs(verbs, 64);
  CHECKF(n >= 14, "only %d verbs found in daemon/cli/main.c", n);
  int client = 0, with_defaults = 0;
  for (int i = 0; i < n; i++) {
    const char *v = verbs[i];
    if (!strcmp(v, "--help") || !strcmp(v, "-h")) continue; /* `distilld --help`: test_top_level */
    for (int k = 0; k < 2; k++) {
      char args[128], what[160], *out = NULL;
      snprintf(args, sizeof args, "%.31s %s", v, k ? "-h" : "--help");
      snprintf(what, sizeof what, "distilld %s", args);
      int st = run(&out, 1, args);
      check_help_text(what, v, st, out);
      if (k == 0) {
        client += test__contains(out, "--redis HOST:PORT");
        with_defaults += test__contains(out, "(default");
      }
      free(out);
    }
  }
  CHECKF(client == 6, "%d verbs list the client options, not 6 (submit, status, cancel, list, watch, web)", client);
  CHECKF(with_defaults >= 11, "only %d verbs' help names a default", with_defaults);
}

/* --help where an option may stand, after the verb's other arguments: still the help. */
static void test_help_after_arguments(void) {
  static const char *const cases[][2] = {
      {"train", "train --job missing.prototxt --resume --help"},
      {"train", "train --solver s.prototxt -h"},
      {"test", "test --model m.prototxt --iterations 3 --help"},
      {"forward", "forward --model m.prototxt --backward -h"},
      {"check", "check net.prototxt --phase TEST --help"},
      {"check", "check --job j.prototxt -h"},
      {"convert-imageset", "convert-imageset --shuffle img/ list.txt -h"},
      {"submit", "submit job.prototxt --id a1 --help"},
      {"status", "status j1 --json -h"},
      {"cancel", "cancel j1 --help"},
      {"list", "list -n 5 --help"},
      {"watch", "watch j1 --interval 2 -h"},
      {"watch", "watch --redis 127.0.0.1:1 --help"},
      {"--config", "--config some.prototxt --help"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *out = NULL;
    int st = run(&out, 1, cases[i][1]);
    check_help_text(cases[i][1], cases[i][0], st, out);
    free(out);
  }
  /* an option's value is a value, even when it reads -h */
  char *out = NULL;
  int st = run(&out, 0, "submit --id -h");
  CHECKF(st == 2, "submit --id -h: exit %d: %s", st, test__str(out));
  CHECK_CONTAINS(out, "give a job file");
  free(out);
}

static void test_top_level(void) {
  char *out = NULL, *one = NULL;
  static const char *const all[] = {"help", "--help", "-h"};
  for (size_t i = 0; i < 3; i++) {
    int st = run(&out, 1, all[i]);
    CHECKF(st == 0, "distilld %s: exit %d", all[i], st);
    CHECK_CONTAINS(out, "usage:\n");
    CHECK_CONTAINS(out, "  distilld convert-imageset ");
    CHECK_CONTAINS(out, "  distilld watch [ID]");
    CHECK_CONTAINS(out, "  distilld --config FILE");
    CHECK_CONTAINS(out, "DD_BF16=");
    CHECK_CONTAINS(out, "VERB --help");
    free(out);
  }
  /* help VERB is VERB --help */
  int st = run(&out, 1, "help train");
  CHECK(st == 0);
  CHECK(run(&one, 1, "train --help") == 0);
  CHECKF(out && one && !strcmp(out, one), "help train and train --help differ:\n%s\n---\n%s", test__str(out),
         test__str(one));
  free(out);
  free(one);
  st = run(&out, 0, "help nosuchverb");
  CHECKF(st == 2, "help nosuchverb: exit %d", st);
  CHECK_CONTAINS(out, "nosuchverb");
  free(out);
  /* the version: exit 0, "distilld X.Y.Z", nothing on stderr */
  static const char *const ver[] = {"--version", "version"};
  for (size_t i = 0; i < 2; i++) {
    st = run(&out, 0, ver[i]);
    CHECKF(st == 0, "distilld %s: exit %d", ver[i], st);
    const char *nl = out ? strchr(out, '\n') : NULL;
    CHECKF(starts_with(out, "distilld ") && isdigit((unsigned char)out[9]) && strchr(out, '.') && nl && !nl[1],
           "distilld %s: %s", ver[i], test__str(out));
    free(out);
  }
  st = run(&out, 0, "--version --bogus");
  CHECK(st == 2);
  free(out);
  st = run(&out, 0, "");
  CHECK(st == 2);
  CHECK_CONTAINS(out, "usage:");
  free(out);
}

static void test_usage_errors(void) {
  static const char *const verbs[] = {"check",  "train",  "test", "time",  "forward", "convert-imageset",
                                      "submit", "status", "cancel", "list", "watch"};
  for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
    char args[128], want[96], *out = NULL;
    snprintf(args, sizeof args, "%s --no-such-option", verbs[i]);
    int st = run(&out, 0, args);
    CHECKF(st == 2, "distilld %s: exit %d: %s", args, st, test__str(out));
    snprintf(want, sizeof want, "distilld: %s: unknown option \"--no-such-option\"", verbs[i]);
    CHECK_CONTAINS(out, want);
    snprintf(want, sizeof want, "\nusage: distilld %s ", verbs[i]);
    CHECK_CONTAINS(out, want);
    free(out);
    /* nothing on stdout: usage errors go to stderr */
    st = run(&out, 1, args);
    CHECKF(out && !out[0], "distilld %s printed to stdout: %s", args, test__str(out));
    free(out);
  }
  static const char *const missing[][2] = {
      {"train --solver", "train: --solver needs a value"},
      {"watch --interval", "watch: --interval needs a value"},
      {"list -n", "list: -n needs a value"},
      {"submit x.prototxt --id", "submit: --id needs a value"},
      {"check --weights", "check: --weights needs a value"},
      {"status", "status: give a job ID"},
      {"list extra", "list: unexpected argument \"extra\""},
      {"train stray", "train: unexpected argument \"stray\""},
      {"--config", "--config takes one file"},
      {"nosuchverb", "unknown command \"nosuchverb\""},
  };
  for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
    char *out = NULL;
    int st = run(&out, 0, missing[i][0]);
    CHECKF(st == 2, "distilld %s: exit %d: %s", missing[i][0], st, test__str(out));
    CHECK_CONTAINS(out, missing[i][1]);
    free(out);
  }
}

static void test_duration_format(void) {
  static const struct {
    double s;
    const char *want;
  } cases[] = {
      {0, "0.0s"},        {0.04, "0.0s"},      {0.4, "0.4s"},       {0.8, "0.8s"},      {9.94, "9.9s"},
      {9.96, "10s"},      {42, "42s"},         {42.4, "42s"},       {59.4, "59s"},      {59.6, "1m00s"},
      {60, "1m00s"},      {322, "5m22s"},      {599.5, "10m00s"},   {3599.4, "59m59s"}, {3599.6, "1h00m"},
      {3725, "1h02m"},    {7199, "2h00m"},     {86369, "23h59m"},   {86400, "1d00h"},   {90000, "1d01h"},
      {3 * 86400 + 7 * 3600 + 60, "3d07h"},    {1e9, "11574d02h"},  {1e9 + 1, "-"},     {-1, "-"},
      {-1e-9, "-"},       {NAN, "-"},          {INFINITY, "-"},     {-INFINITY, "-"},
  };
  char buf[32];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    memset(buf, 'x', sizeof buf);
    dd_cli_fmt_duration(cases[i].s, buf, sizeof buf);
    CHECKF(!strcmp(buf, cases[i].want), "%.9g s: \"%s\", want \"%s\"", cases[i].s, buf, cases[i].want);
    CHECKF(strlen(buf) < 16, "%.9g s: \"%s\" is longer than the header promises", cases[i].s, buf);
  }
  /* a short buffer: cut, NUL-terminated */
  memset(buf, 'x', sizeof buf);
  dd_cli_fmt_duration(322, buf, 4);
  CHECKF(!strcmp(buf, "5m2"), "322 s in 4 bytes: \"%s\"", buf);
}

int main(void) {
  RUN(test_duration_format);
  RUN(test_every_verb_help);
  RUN(test_help_after_arguments);
  RUN(test_top_level);
  RUN(test_usage_errors);
  return test_summary();
}
