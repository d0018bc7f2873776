/* Helpers of the distillation tests (tests/test_distill_losses.c: the loss layers by hand;
 * tests/test_distill_teacher.c: the frozen teacher; tests/test_distill.c: the jobs):
 * - shared by them: a net from prototxt text on a given backend (test_make_net, over
 *   test_parse_net of tests/test_nets.h) and a net's random weights written as a .caffemodel
 *   (test_write_weights);
 * - a minimal JSON checker for the records of a job's metrics.jsonl (test_json_object_line,
 *   test_json_get), kept here to keep tests/test_distill.c, its user, under the size rule. */
#ifndef DD_TEST_DISTILL_H
#define DD_TEST_DISTILL_H

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "base/rng.h"
#include "format/caffe_io.h"
#include "net/net.h"
#include "test_nets.h"

/* ---- nets and weights --------------------------------------------------------------------------- */

/* The net of prototxt `text` in `phase` on backend `be` (fillers seeded with `seed`); NULL on
 * failure, with the message printed. The caller destroys it. */
static inline dd_net *test_make_net(dd_backend *be, const char *text, Caffe__Phase phase, uint64_t seed) {
  Caffe__NetParameter *p = test_parse_net(text);
  if (!p) return NULL;
  dd_net *n = NULL;
  char err[1024];
  if (dd_net_create(&n, p, phase, be, seed, NULL, err, sizeof err)) fprintf(stderr, "net: %s\n", err);
  caffe__net_parameter__free_unpacked(p, NULL);
  return n;
}

/* Builds `text` (TEST phase) on `be`, gives every parameter random values (`scale` times a
 * gaussian, biases in [-0.1, 0.1]) and writes them as a .caffemodel at `path`. 0 when written. */
static inline int test_write_weights(dd_backend *be, const char *text, const char *path, uint64_t seed, float scale) {
  dd_net *n = test_make_net(be, text, CAFFE__PHASE__TEST, seed);
  if (!n) return -1;
  dd_rng r;
  dd_rng_seed(&r, seed * 7 + 1);
  for (size_t p = 0; p < n->n_params; p++) {
    dd_tensor *t = n->params[p].t;
    float *h = malloc((size_t)t->count * sizeof *h);
    for (int64_t k = 0; k < t->count; k++)
      h[k] = n->params[p].index == 0 ? scale * (float)dd_rng_gaussian(&r) : -0.1f + 0.2f * dd_rng_uniform(&r);
    dd_tensor_set_data(t, h);
    free(h);
  }
  Caffe__NetParameter *np = dd_net_to_proto(n, 0);
  char err[512];
  int r2 = np ? dd_caffemodel_write(np, path, err, sizeof err) : DD_ENOMEM;
  if (r2) fprintf(stderr, "write %s: %s\n", path, r2 == DD_ENOMEM ? "out of memory" : err);
  if (np) caffe__net_parameter__free_unpacked(np, NULL);
  dd_net_destroy(n);
  return r2;
}

/* ---- a minimal JSON checker --------------------------------------------------------------------- */

static inline const char *test__json_ws(const char *p) {
  while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
  return p;
}

static inline const char *test__json_string(const char *p) {
  if (*p != '"') return NULL;
  for (p++; *p != '"'; p++) {
    if (!*p || (unsigned char)*p < 0x20) return NULL;
    if (*p == '\\') {
      p++;
      if (*p == 'u') {
        for (int k = 1; k <= 4; k++)
          if (!isxdigit((unsigned char)p[k])) return NULL;
        p += 4;
      } else if (!*p || !strchr("\"\\/bfnrt", *p)) {
        return NULL;
      }
    }
  }
  return p + 1;
}

static inline const char *test__json_number(const char *p) {
  if (*p == '-') p++;
  if (!isdigit((unsigned char)*p)) return NULL;
  if (*p == '0')
    p++;
  else
    while (isdigit((unsigned char)*p)) p++;
  if (*p == '.') {
    if (!isdigit((unsigned char)*++p)) return NULL;
    while (isdigit((unsigned char)*p)) p++;
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    if (!isdigit((unsigned char)*p)) return NULL;
    while (isdigit((unsigned char)*p)) p++;
  }
  return p;
}

static inline const char *test__json_value(const char *p, int depth) {
  p = test__json_ws(p);
  if (depth > 16) return NULL;
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    p = test__json_ws(p + 1);
    if (*p == close) return p + 1;
    for (;;) {
      if (close == '}') {
        if (!(p = test__json_string(p))) return NULL;
        p = test__json_ws(p);
        if (*p++ != ':') return NULL;
      }
      if (!(p = test__json_value(p, depth + 1))) return NULL;
      p = test__json_ws(p);
      if (*p == ',') {
        p = test__json_ws(p + 1);
        continue;
      }
      return *p == close ? p + 1 : NULL;
    }
  }
  if (*p == '"') return test__json_string(p);
  if (!strncmp(p, "true", 4) || !strncmp(p, "null", 4)) return p + 4;
  if (!strncmp(p, "false", 5)) return p + 5;
  return test__json_number(p);
}

/* A line holding exactly one JSON object. */
static inline int test_json_object_line(const char *line) {
  if (*test__json_ws(line) != '{') return 0;
  const char *e = test__json_value(line, 0);
  return e && *test__json_ws(e) == '\0';
}

/* The raw value of "key" in a one-level object line (strings without their quotes). */
static inline int test_json_get(const char *line, const char *key, char *out, size_t len) {
  char pat[128];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(line, pat);
  if (!p) return 0;
  p += strlen(pat);
  size_t n = 0;
  if (*p == '"') {
    for (p++; *p && *p != '"' && n + 1 < len; p++) out[n++] = *p;
  } else {
    for (; *p && *p != ',' && *p != '}' && n + 1 < len; p++) out[n++] = *p;
  }
  out[n] = '\0';
  return 1;
}

#endif
