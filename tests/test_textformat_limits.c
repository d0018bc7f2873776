/* The text format's bounds (core/format/textformat.h, dd_text_limits):
 * 1. time linear in the input: a 10^6-layer net (60 MB) parses within a generous bound (200k
 *    layers under the sanitizers), where the quadratic lint of issue 16 took 5 s for 30k layers;
 * 2. each limit refused with its position, its name and its value: max_bytes (text and file, the
 *    file before it is read), max_depth (and its cap), max_messages, max_values;
 * 3. the process-wide defaults (dd_text_set_default_limits, the daemon's hook) apply to
 *    dd_text_parse and dd_text_parse_file, and NULL restores the built-in ones;
 * 4. should_stop stops a parse (DD_ESTOPPED), asked every few thousand fields, and frees
 *    everything (ASan). */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <time.h>

#include "test_textformat.h"
#include "test_files.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_SANITIZED 1
#endif
#endif
#ifndef TEST_SANITIZED
#define TEST_SANITIZED 0
#endif

static char tmp[256];

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A net of an Input and `n` in-place ReLUs, one layer a line (about 60 bytes a layer); *len gets
 * its length. The caller frees it. */
static char *relu_net(size_t n, size_t *len) {
  size_t cap = n * 64 + 256;
  char *t = malloc(cap), *o = t;
  if (!t) return NULL;
  o += sprintf(o, "name: \"big\"\nlayer { name: \"in\" type: \"Input\" top: \"x\" "
                  "input_param { shape { dim: 1 dim: 2 } } }\n");
  for (size_t i = 0; i < n; i++)
    o += sprintf(o, "layer { name: \"l%zu\" type: \"ReLU\" bottom: \"x\" top: \"x\" }\n", i);
  *len = (size_t)(o - t);
  return t;
}

/* Parses `len` bytes of `text` as a net within `lim` (NULL: the defaults); returns the code. */
static int parse_net(Caffe__NetParameter **out, const char *text, size_t len,
                     const dd_text_limits *lim, char *err, size_t errlen) {
  return dd_text_parse_limited((ProtobufCMessage **)out, NETD, text, len, FNAME, lim, err, errlen);
}

/* ---- 1. linear time ----------------------------------------------------------------------------- */

static void test_limits_linear_time(void) {
  size_t n = TEST_SANITIZED ? 200000 : 1000000, len;
  char *t = relu_net(n, &len);
  REQUIRE(t != NULL);
  char err[1024];
  Caffe__NetParameter *net = NULL;
  double t0 = now_s();
  int r = parse_net(&net, t, len, NULL, err, sizeof err);
  double dt = now_s() - t0;
  REQUIRE_OK(r, err);
  CHECK(net->n_layer == n + 1 && !strcmp(net->layer[n]->name, n == 1000000 ? "l999999" : "l199999"));
  /* about 2 s on a slow core for 10^6 layers; a quadratic parser takes minutes */
  CHECKF(dt < 30.0, "%zu layers (%zu bytes) took %.1f s", n, len, dt);
  printf("  %zu layers, %zu bytes: parsed in %.2f s\n", n, len, dt);
  FREE(net);
  /* a tenth of it takes about a tenth of the time (generous: under half, plus noise) */
  size_t len10 = 0;
  for (size_t k = 0, lines = 0; k < len && lines < n / 10 + 2; k++)
    if (t[k] == '\n') lines++, len10 = k + 1;
  t0 = now_s();
  r = parse_net(&net, t, len10, NULL, err, sizeof err);
  double dt10 = now_s() - t0;
  REQUIRE_OK(r, err);
  CHECK(net->n_layer == n / 10 + 1);
  CHECKF(dt10 < dt / 2 + 0.5, "a tenth of the net took %.2f s, the whole %.2f s", dt10, dt);
  FREE(net);
  free(t);
}

/* ---- 2. each limit ------------------------------------------------------------------------------ */

static void test_limits_bytes(void) {
  size_t len;
  char *t = relu_net(1000, &len);
  REQUIRE(t != NULL);
  char err[1024], want[1024];
  Caffe__NetParameter *net = (Caffe__NetParameter *)err;
  dd_text_limits lim = {.max_bytes = len - 1};
  CHECK(parse_net(&net, t, len, &lim, err, sizeof err) == DD_EPARSE && net == NULL);
  snprintf(want, sizeof want,
           FNAME ":1:1: the input is %zu bytes, more than the text format's limit of %zu bytes "
                 "(max_bytes)",
           len, len - 1);
  CHECKF(!strcmp(err, want), "got \"%s\"", err);
  lim.max_bytes = len;
  CHECK(parse_net(&net, t, len, &lim, err, sizeof err) == 0 && net->n_layer == 1001);
  FREE(net);
  /* a file over the limit is refused with the file's name, before it is read */
  char p[512];
  snprintf(p, sizeof p, "%s/big.prototxt", tmp);
  REQUIRE(wfile(p, "%s", t));
  lim.max_bytes = 4096;
  net = (Caffe__NetParameter *)err;
  int r = dd_text_parse_file_limited((ProtobufCMessage **)&net, NETD, p, &lim, err, sizeof err);
  CHECK(r == DD_EPARSE && net == NULL);
  snprintf(want, sizeof want, "%s:1:1: the input is %zu bytes, more than the text format's limit of 4096 bytes", p,
           len);
  CHECKF(!strncmp(err, want, strlen(want)), "got \"%s\"", err);
  lim.max_bytes = 0; /* the default */
  r = dd_text_parse_file_limited((ProtobufCMessage **)&net, NETD, p, &lim, err, sizeof err);
  REQUIRE_OK(r, err);
  FREE(net);
  free(t);
}

static void test_limits_depth(void) {
  const char *t = "layer { convolution_param { weight_filler { std: 2 } } }";
  char err[1024];
  Caffe__NetParameter *net = NULL;
  dd_text_limits lim = {.max_depth = 3};
  REQUIRE_OK(parse_net(&net, t, strlen(t), &lim, err, sizeof err), err);
  FREE(net);
  lim.max_depth = 2;
  CHECK(parse_net(&net, t, strlen(t), &lim, err, sizeof err) == DD_EPARSE && net == NULL);
  CHECKF(!strcmp(err, FNAME ":1:43: messages nested more than 2 deep (the text format's limit max_depth) "
                             "(at layer[0].convolution_param)"),
         "got \"%s\"", err);
  /* a huge max_depth is capped, so the parser's stack stays bounded */
  size_t levels = DD_TEXT_MAX_DEPTH_CAP + 1, cap = levels * 16 + 16;
  char *deep = malloc(cap), *o = deep;
  REQUIRE(deep != NULL);
  for (size_t i = 0; i < levels; i++) o += sprintf(o, "id: 1 child { ");
  lim.max_depth = INT32_MAX;
  ProtobufCMessage *m = NULL;
  CHECK(dd_text_parse_limited(&m, &node_descriptor, deep, strlen(deep), FNAME, &lim, err, sizeof err) == DD_EPARSE);
  CHECK_CONTAINS(err, "messages nested more than 1000 deep");
  free(deep);
}

static void test_limits_messages(void) {
  size_t len;
  char *t = relu_net(10, &len); /* 11 layers + input_param + shape: 13 messages */
  REQUIRE(t != NULL);
  char err[1024];
  Caffe__NetParameter *net = NULL;
  dd_text_limits lim = {.max_messages = 13};
  REQUIRE_OK(parse_net(&net, t, len, &lim, err, sizeof err), err);
  FREE(net);
  lim.max_messages = 12;
  CHECK(parse_net(&net, t, len, &lim, err, sizeof err) == DD_EPARSE && net == NULL);
  /* the 13th message is the last layer's, on line 12 */
  CHECKF(!strcmp(err, FNAME ":12:7: more than 12 messages (the text format's limit max_messages)"), "got \"%s\"",
         err);
  free(t);
  /* the default: 1 << 20 */
  CHECK(dd_text_default_limits().max_messages == (size_t)1 << 20);
  CHECK(dd_text_default_limits().max_bytes == (size_t)256 << 20);
  CHECK(dd_text_default_limits().max_depth == 64);
}

static void test_limits_values(void) {
  const char *t = "layer { name: 'a' bottom: 'x' bottom: 'y' top: 'z' }\n"
                  "input_dim: [1, 2, 3, 4]";
  char err[1024];
  Caffe__NetParameter *net = NULL;
  dd_text_limits lim = {.max_values = 7}; /* 3 bottoms and tops, 4 input_dims */
  REQUIRE_OK(parse_net(&net, t, strlen(t), &lim, err, sizeof err), err);
  CHECK(net->n_input_dim == 4);
  FREE(net);
  lim.max_values = 6;
  CHECK(parse_net(&net, t, strlen(t), &lim, err, sizeof err) == DD_EPARSE && net == NULL);
  CHECKF(!strcmp(err, FNAME ":2:22: more than 6 values in repeated fields (the text format's limit max_values)"),
         "got \"%s\"", err);
}

/* ---- 3. the process-wide defaults --------------------------------------------------------------- */

static void test_limits_defaults_hook(void) {
  size_t len;
  char *t = relu_net(100, &len);
  REQUIRE(t != NULL);
  char err[1024], p[512];
  snprintf(p, sizeof p, "%s/hundred.prototxt", tmp);
  REQUIRE(wfile(p, "%s", t));
  dd_text_set_default_limits(&(dd_text_limits){.max_bytes = 1000});
  CHECK(dd_text_default_limits().max_bytes == 1000);
  CHECK(dd_text_default_limits().max_messages == (size_t)1 << 20); /* zero members: the built-in */
  ProtobufCMessage *m = NULL;
  CHECK(dd_text_parse(&m, NETD, t, len, FNAME, err, sizeof err) == DD_EPARSE && m == NULL);
  CHECK_CONTAINS(err, "limit of 1000 bytes (max_bytes)");
  CHECK(dd_text_parse_file(&m, NETD, p, err, sizeof err) == DD_EPARSE && m == NULL);
  CHECK_CONTAINS(err, "hundred.prototxt:1:1: the input is");
  /* an explicit limit is not narrowed by the defaults: its zero members take the built-in ones */
  CHECK(dd_text_parse_limited(&m, NETD, t, len, FNAME, &(dd_text_limits){.max_depth = 8}, err, sizeof err) == 0);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  dd_text_set_default_limits(NULL);
  CHECK(dd_text_default_limits().max_bytes == (size_t)256 << 20);
  REQUIRE_OK(dd_text_parse_file(&m, NETD, p, err, sizeof err), err);
  protobuf_c_message_free_unpacked(m, NULL);
  free(t);
}

/* ---- 4. should_stop ----------------------------------------------------------------------------- */

static int asked_count, stop_after;
static int stop_when(void *ctx) {
  CHECK(ctx == &asked_count);
  return ++asked_count > stop_after;
}

static void test_limits_should_stop(void) {
  size_t len;
  char *t = relu_net(100000, &len);
  REQUIRE(t != NULL);
  char err[1024];
  Caffe__NetParameter *net = NULL;
  dd_text_limits lim = {.should_stop = stop_when, .stop_ctx = &asked_count};
  /* never stopping: asked once per 4096 fields and list values (100k layers: 500k fields) */
  asked_count = 0;
  stop_after = 1 << 30;
  REQUIRE_OK(parse_net(&net, t, len, &lim, err, sizeof err), err);
  CHECKF(asked_count >= 115 && asked_count <= 130, "asked %d times", asked_count);
  FREE(net);
  /* stopping at the third question: DD_ESTOPPED, nothing returned, everything freed */
  asked_count = 0;
  stop_after = 2;
  net = (Caffe__NetParameter *)err;
  CHECK(parse_net(&net, t, len, &lim, err, sizeof err) == DD_ESTOPPED && net == NULL);
  CHECK(asked_count == 3);
  CHECK_CONTAINS(err, "stopped while parsing");
  CHECK(!strncmp(err, FNAME ":", strlen(FNAME ":")));
  free(t);
}

int main(void) {
  if (test_scratch_dir(tmp, sizeof tmp, "dd_tf_limits") != 0) return 1;
  RUN(test_limits_linear_time);
  RUN(test_limits_bytes);
  RUN(test_limits_depth);
  RUN(test_limits_messages);
  RUN(test_limits_values);
  RUN(test_limits_defaults_hook);
  RUN(test_limits_should_stop);
  test_scratch_remove(tmp);
  return test_summary();
}
