/* `distilld convert-imageset`: Caffe's tools/convert_imageset (core/data/convert_imageset.h does the
 * work): [--shuffle] [--seed N] [--resize_height H --resize_width W] [--gray] [--encoded]
 * [--encode_type png|jpg] [--check_size] [--skip_errors] [--backend lmdb|leveldb] [--progress N]
 * ROOT/ LISTFILE DB_NAME. Flags may be written --flag=value as gflags allows. Exit status 0 ok,
 * 1 failure, 2 usage. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "cli/cli.h"
#include "common/cli_util.h"
#include "data/convert_imageset.h"

static void log_line(void *ctx, const char *line) {
  (void)ctx;
  fprintf(stderr, "%s\n", line);
}

/* The integer value of flag `name` (argv[*i] is "--name" followed by a value, or "--name=V"). */
static int int_flag(int argc, char **argv, int *i, const char *name, long *out) {
  const char *a = argv[*i] + 2, *val = NULL;
  size_t n = strlen(name);
  if (strncmp(a, name, n) != 0) return 0;
  if (a[n] == '=') val = a + n + 1;
  else if (a[n] == '\0' && *i + 1 < argc) val = argv[++*i];
  else if (a[n] != '\0') return 0;
  char *end = NULL;
  *out = val ? strtol(val, &end, 10) : 0;
  if (!val || end == val || *end) {
    dd_cli_error("--%s needs an integer", name);
    return -1;
  }
  return 1;
}

static int str_flag(int argc, char **argv, int *i, const char *name, const char **out) {
  const char *a = argv[*i] + 2;
  size_t n = strlen(name);
  if (strncmp(a, name, n) != 0) return 0;
  if (a[n] == '=') *out = a + n + 1;
  else if (a[n] == '\0' && *i + 1 < argc) *out = argv[++*i];
  else if (a[n] == '\0') {
    dd_cli_error("--%s needs a value", name);
    return -1;
  } else {
    return 0;
  }
  return 1;
}

int dd_cmd_convert_imageset(int argc, char **argv) {
  dd_convert_opts o = {.backend = "lmdb", .log = log_line};
  const char *pos[3];
  int npos = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    long v;
    int k;
    if (dd_cli_is_help(a)) return dd_cli_help("convert-imageset");
    if (strncmp(a, "--", 2) != 0 || !a[2]) {
      if (npos == 3) {
        dd_cli_error("convert-imageset takes ROOT/ LISTFILE DB_NAME; \"%s\" is one too many", a);
        return dd_cli_usage("convert-imageset");
      }
      pos[npos++] = a;
      continue;
    }
    if (!strcmp(a, "--shuffle")) o.shuffle = 1;
    else if (!strcmp(a, "--gray")) o.gray = 1;
    else if (!strcmp(a, "--encoded")) o.encoded = 1;
    else if (!strcmp(a, "--check_size")) o.check_size = 1;
    else if (!strcmp(a, "--skip_errors")) o.skip_errors = 1;
    else if ((k = int_flag(argc, argv, &i, "resize_height", &v))) {
      if (k < 0) return 2;
      o.resize_height = v > 0 ? (int)v : 0;
    } else if ((k = int_flag(argc, argv, &i, "resize_width", &v))) {
      if (k < 0) return 2;
      o.resize_width = v > 0 ? (int)v : 0;
    } else if ((k = int_flag(argc, argv, &i, "seed", &v))) {
      if (k < 0) return 2;
      o.seed = (uint64_t)v;
    } else if ((k = int_flag(argc, argv, &i, "progress", &v))) {
      if (k < 0) return 2;
      o.progress_every = (int)v;
    } else if ((k = str_flag(argc, argv, &i, "backend", &o.backend))) {
      if (k < 0) return 2;
    } else if ((k = str_flag(argc, argv, &i, "encode_type", &o.encode_type))) {
      if (k < 0) return 2;
      if (o.encode_type[0]) o.encoded = 1; /* Caffe: encode_type implies encoded */
    } else {
      return dd_cli_bad_arg("convert-imageset", a);
    }
  }
  if (npos != 3) {
    dd_cli_error("convert-imageset takes ROOT/ LISTFILE DB_NAME");
    return dd_cli_usage("convert-imageset");
  }
  o.root = pos[0];
  o.list = pos[1];
  o.db = pos[2];
  char err[2048];
  int64_t written = 0;
  int r = dd_convert_imageset(&o, &written, err, sizeof err);
  if (r) {
    dd_cli_error("convert-imageset: %s", err);
    return 1;
  }
  printf("%s: %lld records (%s)\n", o.db, (long long)written, o.backend);
  return 0;
}
