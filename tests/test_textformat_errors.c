/* Tests of the protobuf text format (core/format/textformat*.c), part 3: errors, one test per
 * kind: the message text and FILE:LINE:COL, *out left NULL (the ASan build checks that the
 * partial message is freed). The schema has no required field and no recursive message, so those
 * two checks use the hand-written "Node" descriptor of test_textformat.h. Round trips are in
 * test_textformat_roundtrip.c, syntax in test_textformat_syntax.c. */
#define _POSIX_C_SOURCE 200809L
#include "test_textformat.h"

/* ------------------------------------------------------------------------------------------- */
/* 3. Errors                                                                                     */

static void test_err_unknown_field(void) {
  EXPECT_ERR(NETD,
             "layer {\n  name: \"data\"\n  image_data_param {\n    source: \"x\"\n    pair_size: 3\n"
             "  }\n}\n",
             5, 5, "unknown field \"pair_size\" in ImageDataParameter",
             "(at layer[0].image_data_param)");
  char err[512];
  ProtobufCMessage *m;
  const char *t = "image_data_param { pair_size: 3 }";
  dd_text_parse(&m, &caffe__layer_parameter__descriptor, t, strlen(t), FNAME, err, sizeof err);
  CHECKF(strstr(err, "did you mean") == NULL, "no field is close to pair_size: %s", err);
  EXPECT_ERR(NETD, "layer { convolution_param { num_outptu: 3 } }", 1, 29,
             "unknown field \"num_outptu\" in ConvolutionParameter (did you mean \"num_output\"?)",
             "(at layer[0].convolution_param)");
  EXPECT_ERR(NETD, "nmae: \"x\"", 1, 1, "unknown field \"nmae\" in NetParameter (did you mean \"name\"?)");
  EXPECT_ERR(SOLVERD, "test_iter: 1\nbase_lr 0.1\nlr_polcy: \"x\"", 2, 9, "expected ':'");
  EXPECT_ERR(SOLVERD, "lr_polcy: \"x\"", 1, 1, "did you mean \"lr_policy\"?");
  /* a name of 200 characters */
  char longname[256];
  memset(longname, 'a', 200);
  strcpy(longname + 200, ": 1");
  EXPECT_ERR(NETD, longname, 1, 1, "field name too long");
}

static void test_err_wrong_type(void) {
  EXPECT_ERR(NETD, "name: 5", 1, 7, "field \"name\" takes a quoted string, found number 5");
  EXPECT_ERR(NETD, "input_dim: \"3\"", 1, 12,
             "field \"input_dim\" takes a 32-bit integer, found string \"3\"");
  EXPECT_ERR(NETD, "input_dim: 1.5", 1, 12, "takes a 32-bit integer, found number 1.5");
  EXPECT_ERR(NETD, "input_dim: 1e3", 1, 12, "found number 1e3");
  EXPECT_ERR(NETD, "input_dim: inf", 1, 12, "found \"inf\"");
  EXPECT_ERR(NETD, "state: 5", 1, 8, "field \"state\" takes a message: expected '{', found number 5");
  EXPECT_ERR(NETD, "state 5", 1, 7, "field \"state\" takes a message");
  EXPECT_ERR(NETD, "state: \"x\"", 1, 8, "takes a message", "found string \"x\"");
  EXPECT_ERR(NETD, "layer: [1]", 1, 9, "takes a message");
  EXPECT_ERR(NETD, "state { phase: true }", 1, 16,
             "\"true\" is not a value of enum Phase for field \"phase\" (one of: TRAIN, TEST)",
             "(at state)");
  EXPECT_ERR(NETD, "state { phase: 1.0 }", 1, 16, "takes a value of enum Phase, found number 1.0");
  EXPECT_ERR(NETD, "state { phase: \"TRAIN\" }", 1, 16, "takes a value of enum Phase");
  EXPECT_ERR(NETD, "force_backward: -1", 1, 17, "field \"force_backward\" takes a bool, found '-'");
  EXPECT_ERR(NETD, "force_backward: -true", 1, 17, "takes a bool, found '-'");
  EXPECT_ERR(NETD, "force_backward: 2", 1, 17, "takes a bool (true or false), found number 2");
  EXPECT_ERR(NETD, "force_backward: \"true\"", 1, 17, "takes a bool", "found string \"true\"");
  EXPECT_ERR(NETD, "force_backward: yes", 1, 17, "takes a bool", "found \"yes\"");
  EXPECT_ERR(NETD, "force_backward: TRUE", 1, 17, "takes a bool");
  EXPECT_ERR(NETD, "layer { loss_weight: \"1\" }", 1, 22, "takes a float, found string \"1\"");
  EXPECT_ERR(NETD, "layer { loss_weight: infinite }", 1, 22, "takes a float, found \"infinite\"");
  EXPECT_ERR(NETD, "name: -\"x\"", 1, 7, "takes a quoted string, found '-'");
  EXPECT_ERR(NETD, "name { }", 1, 6, "expected ':' after field name \"name\", found '{'");
  EXPECT_ERR(NETD, "name: { }", 1, 7, "takes a quoted string, found '{'");
  EXPECT_ERR(NETD, "name", 1, 5, "expected ':' after field name \"name\", found end of file");
  EXPECT_ERR(NETD, "name:", 1, 6, "takes a quoted string, found end of file");
  EXPECT_ERR(NETD, "input_dim: -", 1, 13, "found end of file");
  EXPECT_ERR(NETD, "input_dim: --1", 1, 13, "found '-'");
  EXPECT_ERR(NETD, "5: 3", 1, 1, "expected a field name of NetParameter, found number 5");
  EXPECT_ERR(NETD, "\"name\": 3", 1, 1, "expected a field name of NetParameter, found string");
  EXPECT_ERR(NETD, "name: \"a\" 3", 1, 11, "expected a field name of NetParameter, found number 3");
  EXPECT_ERR(NETD, "name: \"a\",, input: \"b\"", 1, 11, "found ','");
  EXPECT_ERR(NETD, "input_dim: 09", 1, 12, "invalid digits in number 09");
  EXPECT_ERR(NETD, "layer { loss_weight: 09 }", 1, 22, "invalid digits");
  EXPECT_ERR(NETD, "input_dim: 0x", 1, 12, "expected hex digits after \"0x\"");
  EXPECT_ERR(NETD, "input_dim: 0xg", 1, 12, "expected hex digits");
  EXPECT_ERR(NETD, "input_dim: 0x1.5", 1, 12, "glued");
  /* the path names the element of a repeated message */
  EXPECT_ERR(NETD, "layer { } layer { param { } param { lr_mult: x } }", 1, 46,
             "field \"lr_mult\" takes a float, found \"x\"", "(at layer[1].param[1])");
  EXPECT_ERR(NETD, "layer [ { }, { bottom: 1 } ]", 1, 24, "(at layer[1])");
}

static void test_err_out_of_range(void) {
  EXPECT_ERR(NETD, "input_dim: 2147483648", 1, 12,
             "2147483648 is out of range for field \"input_dim\" (a 32-bit integer)");
  EXPECT_ERR(NETD, "input_dim: -2147483649", 1, 12, "-2147483649 is out of range");
  EXPECT_ERR(NETD, "input_dim: 0x80000000", 1, 12, "0x80000000 is out of range");
  EXPECT_ERR(NETD, "input_dim: 99999999999999999999999", 1, 12, "is out of range");
  EXPECT_ERR(NETD, "layer { convolution_param { num_output: 4294967296 } }", 1, 41,
             "4294967296 is out of range for field \"num_output\" (an unsigned 32-bit integer)");
  EXPECT_ERR(NETD, "layer { convolution_param { num_output: -1 } }", 1, 41,
             "field \"num_output\" takes an unsigned 32-bit integer and cannot be negative: -1");
  EXPECT_ERR(NETD, "input_shape { dim: 9223372036854775808 }", 1, 20,
             "9223372036854775808 is out of range for field \"dim\" (a 64-bit integer)");
  EXPECT_ERR(NETD, "input_shape { dim: -9223372036854775809 }", 1, 20,
             "-9223372036854775809 is out of range");
  EXPECT_ERR(NETD, "input_shape { dim: 18446744073709551616 }", 1, 20, "is out of range");
  EXPECT_ERR(NETD, "input_shape { dim: 0x10000000000000000 }", 1, 20, "is out of range");
  EXPECT_ERR(SOLVERD, "random_seed: -9223372036854775809", 1, 14, "out of range", "random_seed");
  EXPECT_ERR(&node_descriptor, "id: 1 big: 18446744073709551616", 1, 12,
             "18446744073709551616 is out of range for field \"big\" (an unsigned 64-bit integer)");
  EXPECT_ERR(&node_descriptor, "id: 1 big: -1", 1, 12, "cannot be negative");
  EXPECT_ERR(NETD, "layer { loss_weight: 1e39 }", 1, 22,
             "1e39 is out of range for field \"loss_weight\" (a float)");
  EXPECT_ERR(NETD, "layer { loss_weight: -1e39 }", 1, 22, "-1e39 is out of range");
  EXPECT_ERR(NETD, "layer { loss_weight: 3.4028236e38 }", 1, 22, "out of range");
  EXPECT_ERR(NETD, "layer { loss_weight: 340282366920938463463374607431768211456 }", 1, 22,
             "out of range");
  EXPECT_ERR(NETD, "layer { blobs { double_data: 1e309 } }", 1, 30,
             "1e309 is out of range for field \"double_data\" (a double)");
  EXPECT_ERR(NETD, "layer { blobs { double_data: -1e309 } }", 1, 30, "-1e309 is out of range");
  EXPECT_ERR(NETD, "state { phase: 4294967296 }", 1, 16, "out of range");
}

static void test_err_unknown_enum(void) {
  EXPECT_ERR(NETD, "state { phase: TRIAN }", 1, 16,
             "\"TRIAN\" is not a value of enum Phase for field \"phase\" (one of: TRAIN, TEST)",
             "(at state)");
  EXPECT_ERR(NETD, "state { phase: train }", 1, 16, "\"train\" is not a value of enum Phase");
  EXPECT_ERR(NETD, "state { phase: 7 }", 1, 16, "7 is not a value of enum Phase for field \"phase\"");
  EXPECT_ERR(NETD, "state { phase: -1 }", 1, 16, "-1 is not a value of enum Phase");
  EXPECT_ERR(NETD, "state { phase: -TRAIN }", 1, 16, "takes a value of enum Phase");
  EXPECT_ERR(SOLVERD, "solver_mode: CUDA", 1, 14, "is not a value of enum SolverMode", "CPU, GPU");
}

static void test_err_missing_colon(void) {
  EXPECT_ERR(NETD, "name \"x\"", 1, 6, "expected ':' after field name \"name\", found string \"x\"");
  EXPECT_ERR(NETD, "input_dim [1, 2]", 1, 11, "expected ':' after field name \"input_dim\"");
  EXPECT_ERR(NETD, "layer {\n  name \"x\" }", 2, 8, "expected ':' after field name \"name\"",
             "(at layer[0])");
  EXPECT_ERR(NETD, "force_backward true", 1, 16, "expected ':'", "found \"true\"");
}

static void test_err_unclosed_block(void) {
  EXPECT_ERR(NETD,
             "name: \"n\"\nlayer {\n  name: \"a\"\n  convolution_param {\n    num_output: 3\n  }\n",
             2, 7, "'{' opened here for field \"layer\" is never closed: the file ends at line 6",
             "(at layer[0])");
  char err[1024];
  ProtobufCMessage *m;
  const char *t = "name: \"n\"\nlayer {\n  name: \"a\"\n";
  dd_text_parse(&m, NETD, t, strlen(t), FNAME, err, sizeof err);
  CHECKF(strstr(err, "note") == NULL, "no comment hid anything: %s", err);
  EXPECT_ERR(NETD, "state < phase: TRAIN", 1, 7,
             "'<' opened here for field \"state\" is never closed: the file ends at line 1");
  EXPECT_ERR(NETD, "layer { convolution_param { weight_filler {", 1, 43,
             "'{' opened here for field \"weight_filler\"",
             "(at layer[0].convolution_param.weight_filler)");
  EXPECT_ERR(NETD, "state { phase: TRAIN # }\n", 1, 7, "never closed",
             "note: the '#' comment at line 1 column 22 runs to the end of its line and hides 1 '}'");
  EXPECT_ERR(NETD, "input_dim: [1, 2", 1, 12,
             "the list '[' for field \"input_dim\" is never closed with ']'");
  EXPECT_ERR(NETD, "layer [ { }", 1, 7, "the list '[' for field \"layer\" is never closed");
}

/* The seed as pasted on one line: '#pair_size: 3 } } layer { ...' comments out the rest. */
static void test_err_seed_oneline(void) {
  const char *path = DD_TEST_DATA "/seed/seed_net_oneline.prototxt";
  char err[1024];
  ProtobufCMessage *m = (ProtobufCMessage *)err;
  int r = dd_text_parse_file(&m, NETD, path, err, sizeof err);
  CHECK(r == DD_EPARSE);
  CHECK(m == NULL);
  /* Work out the expected positions from the file itself: the '{' after image_data_param on line 2
   * and the first '#' on that line. */
  FILE *f = fopen(path, "rb");
  REQUIRE(f != NULL);
  static char buf[8192];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *line2 = strchr(buf, '\n');
  REQUIRE(line2 != NULL);
  line2++;
  char *brace = strstr(line2, "image_data_param {");
  char *hash = strchr(line2, '#');
  REQUIRE(brace && hash);
  int brace_col = (int)(brace - line2) + (int)strlen("image_data_param {");
  int hash_col = (int)(hash - line2) + 1;
  CHECK(brace_col == 259 && hash_col == 357);
  char want[256];
  snprintf(want, sizeof want, "%s:2:%d: '{' opened here for field \"image_data_param\" is never closed",
           path, brace_col);
  CHECKF(strncmp(err, want, strlen(want)) == 0, "expected \"%s\", got \"%s\"", want, err);
  snprintf(want, sizeof want, "note: the '#' comment at line 2 column %d runs to the end of its line",
           hash_col);
  CHECK_CONTAINS(err, want);
  CHECK_CONTAINS(err, "the file ends at line 2;"); /* two lines, the last one ending in '\n' */
  CHECK_CONTAINS(err, "(at layer[0].image_data_param)");
}

static void test_err_stray_and_mismatched_close(void) {
  EXPECT_ERR(NETD, "name: \"a\" }", 1, 11, "unexpected '}': no block is open here");
  EXPECT_ERR(NETD, "layer { } }", 1, 11, "unexpected '}': no block is open here");
  EXPECT_ERR(NETD, "layer { }\n>", 2, 1, "unexpected '>': no block is open here");
  EXPECT_ERR(NETD, "}", 1, 1, "unexpected '}'");
  EXPECT_ERR(NETD, "state { phase: TRAIN >", 1, 22,
             "expected '}' to close \"state\" (opened at 1:7), found '>'", "(at state)");
  EXPECT_ERR(NETD, "state < phase: TRAIN }", 1, 22,
             "expected '>' to close \"state\" (opened at 1:7), found '}'");
  EXPECT_ERR(NETD, "input_dim: [1, 2}", 1, 17, "expected ',' or ']' in the list for field \"input_dim\"");
  EXPECT_ERR(NETD, "input_dim: [1 2]", 1, 15,
             "expected ',' or ']' in the list for field \"input_dim\", found number 2");
  EXPECT_ERR(NETD, "input_dim: [1, ]", 1, 16, "takes a 32-bit integer, found ']'");
  EXPECT_ERR(NETD, "input_dim: [1; 2]", 1, 14, "expected ',' or ']'", "found ';'");
  EXPECT_ERR(NETD, "]", 1, 1, "expected a field name of NetParameter, found ']'");
}

static void test_err_glued_number(void) {
  const char *path = DD_TEST_DATA "/seed/seed_solver_as_pasted.prototxt";
  char err[1024];
  ProtobufCMessage *m = (ProtobufCMessage *)err;
  int r = dd_text_parse_file(&m, SOLVERD, path, err, sizeof err);
  CHECK(r == DD_EPARSE && m == NULL);
  char want[512];
  snprintf(want, sizeof want, "%s:1:12: ", path);
  CHECKF(strncmp(err, want, strlen(want)) == 0, "%s", err);
  CHECK_CONTAINS(err, "100");
  CHECK_CONTAINS(err, "\"test_interval\"");
  CHECK_CONTAINS(err, "glued");
  EXPECT_ERR(SOLVERD, "base_lr: 0.5x", 1, 10, "the number 0.5 is glued to \"x\"");
  EXPECT_ERR(SOLVERD, "base_lr: 1e5e", 1, 10, "the number 1e5 is glued to \"e\"");
  EXPECT_ERR(SOLVERD, "base_lr: 1.5.3", 1, 10, "the number 1.5 is glued to \".3\"");
  EXPECT_ERR(SOLVERD, "base_lr: 1ff", 1, 10, "glued");
  EXPECT_ERR(SOLVERD, "max_iter: 0x1fz", 1, 11, "the number 0x1f is glued to \"z\"");
}

static void test_err_field_twice(void) {
  EXPECT_ERR(NETD, "name: \"a\"\nname: \"b\"", 2, 1,
             "field \"name\" of NetParameter is given more than once, but it is not repeated");
  EXPECT_ERR(NETD, "state { } state { }", 1, 11, "field \"state\" of NetParameter is given more than once");
  EXPECT_ERR(NETD, "layer { name: \"a\" name: \"b\" }", 1, 19, "given more than once", "(at layer[0])");
  EXPECT_ERR(NETD, "layer { batch_norm_param { use_global_stats: false use_global_stats: true } }",
             1, 52, "\"use_global_stats\" of BatchNormParameter is given more than once");
  /* repeated fields may come back: not an error */
  Caffe__NetParameter *n = NET("input: \"a\" name: \"n\" input: \"b\"");
  REQUIRE(n != NULL);
  CHECK(n->n_input == 2);
  FREE(n);
}

static void test_err_list_for_singular(void) {
  EXPECT_ERR(NETD, "name: [\"a\"]", 1, 7, "field \"name\" is not repeated, so it cannot take a [list]");
  EXPECT_ERR(NETD, "state [ { } ]", 1, 7, "field \"state\" is not repeated");
  EXPECT_ERR(NETD, "state: []", 1, 8, "is not repeated");
  EXPECT_ERR(NETD, "force_backward: []", 1, 17, "is not repeated");
}

static void test_err_strings(void) {
  EXPECT_ERR(NETD, "name: \"abc", 1, 7, "string not closed");
  EXPECT_ERR(NETD, "name: \"abc\ndef\"", 1, 7, "string not closed");
  EXPECT_ERR(NETD, "name: 'abc\"", 1, 7, "string not closed");
  EXPECT_ERR(NETD, "name: \"abc\\", 1, 7, "string not closed");
  EXPECT_ERR(NETD, "name: \"abc\\\"", 1, 7, "string not closed");
  EXPECT_ERR(NETD, "name: \"a\\\nb\"", 1, 7, "string not closed");
  EXPECT_ERR(NETD, "layer {\n  name: \"ok\" \"a\\qb\" }", 2, 16, "unknown escape sequence \\q",
             "(at layer[0])");
  EXPECT_ERR(NETD, "name: \"a\\qb\"", 1, 9, "unknown escape sequence \\q");
  EXPECT_ERR(NETD, "name: \"\\u0041\"", 1, 8, "unknown escape sequence \\u");
  EXPECT_ERR(NETD, "name: \"\\xg\"", 1, 8, "\\x must be followed by hex digits");
  EXPECT_ERR(NETD, "name: \"\\x\"", 1, 8, "\\x must be followed by hex digits");
  EXPECT_ERR(NETD, "name: \"\\777\"", 1, 8, "octal escape \\777 is over 255");
  EXPECT_ERR(NETD, "name: \"\\400\"", 1, 8, "is over 255");
  /* NUL bytes in a string field, escaped or raw */
  EXPECT_ERR(NETD, "name: \"a\\0b\"", 1, 7, "field \"name\": a string may not contain a NUL byte");
  EXPECT_ERR(NETD, "name: \"a\\x00\"", 1, 7, "may not contain a NUL byte");
  EXPECT_ERR(NETD, "name: \"a\" \"\\000\"", 1, 7, "may not contain a NUL byte");
  EXPECT_ERR(NETD, "layer { bottom: [\"a\", \"b\\0\"] }", 1, 23, "may not contain a NUL byte",
             "(at layer[0])");
  EXPECT_ERR(NETD, "name: \"\\n\\t\\\\\\'\\\"\\x41\\101\\a\\b\\f\\r\\v\\?\\X4a\\0101\\x4g\\7\\08\"", 1,
             7, "NUL byte");
  EXPECT_ERR_N(NETD, "name: \"a\0b\"", 11, 1, 7, "may not contain a NUL byte");
}

static void test_err_unexpected_characters(void) {
  EXPECT_ERR(NETD, "name: \"a\" @", 1, 11, "unexpected character '@'");
  EXPECT_ERR(NETD, "name: \"a\"\n  /x", 2, 3, "unexpected character '/'");
  EXPECT_ERR(NETD, "input_dim: .", 1, 12, "unexpected character '.'");
  EXPECT_ERR(NETD, "name: \"a\" \x80", 1, 11, "unexpected byte 0x80");
  EXPECT_ERR(NETD, "\xef\xbb\xbfname: \"a\"", 1, 1, "unexpected byte 0xef");
  EXPECT_ERR(NETD, "name: \"a\" \x01", 1, 11, "unexpected byte 0x01");
  EXPECT_ERR(NETD, "name: \xc3\xa9", 1, 7, "unexpected byte 0xc3");
  EXPECT_ERR(NETD, "name: \"a\" \x7f", 1, 11, "unexpected byte 0x7f");
  EXPECT_ERR_N(NETD, "name: \"a\"\0", 10, 1, 10, "unexpected byte 0x00");
  EXPECT_ERR_N(NETD, "\0name: \"a\"", 10, 1, 1, "unexpected byte 0x00");
  EXPECT_ERR(NETD, "name: \"a\" =", 1, 11, "unexpected character '='");
  EXPECT_ERR(NETD, "input_dim = 1", 1, 11, "unexpected character '='");
}

/* caffe.proto has one message with required fields (ClipParameter, as in Caffe) and no recursive
 * message: check that, test the required rule on it, and use Node for both checks. */
static int schema_scan(const ProtobufCMessageDescriptor *d, const ProtobufCMessageDescriptor **stack,
                       int depth, int *required, int *recursive) {
  int deepest = depth;
  for (int i = 0; i < depth; i++)
    if (stack[i] == d) {
      *recursive = 1;
      return depth;
    }
  stack[depth] = d;
  for (unsigned i = 0; i < d->n_fields; i++) {
    if (d->fields[i].label == PROTOBUF_C_LABEL_REQUIRED) *required = 1;
    if (d->fields[i].type == PROTOBUF_C_TYPE_MESSAGE) {
      int k = schema_scan(d->fields[i].descriptor, stack, depth + 1, required, recursive);
      if (k > deepest) deepest = k;
    }
  }
  return deepest;
}

static void test_err_required_field(void) {
  const ProtobufCMessageDescriptor *roots[] = {
      &distilld__distill_job__descriptor, &distilld__daemon_config__descriptor,
      &caffe__solver_state__descriptor, &caffe__blob_proto_vector__descriptor,
      &caffe__net_parameter__descriptor};
  const ProtobufCMessageDescriptor *stack[64];
  int required = 0, recursive = 0, deepest = 0;
  for (size_t i = 0; i < NELEM(roots); i++) {
    int k = schema_scan(roots[i], stack, 0, &required, &recursive);
    if (k > deepest) deepest = k;
  }
  CHECKF(required, "ClipParameter's min and max are required in Caffe's schema");
  CHECKF(!recursive, "the schema now has a recursive message: test the depth limit on it too");
  CHECKF(deepest == 6, "deepest %d", deepest); /* DistillJob.solver.net_param.layers.layer.weight_filler */
  EXPECT_ERR(NETD, "layer { name: \"c\" type: \"Clip\" clip_param { min: 0 } }", 1, 52,
             "required field \"max\" of ClipParameter is missing", "(at layer[0].clip_param)");

  const ProtobufCMessageDescriptor *nd = &node_descriptor;
  EXPECT_ERR(nd, "tag: 1", 1, 7, "required field \"id\" of Node is missing");
  EXPECT_ERR(nd, "", 1, 1, "required field \"id\" of Node is missing");
  EXPECT_ERR(nd, "id: 1 child { tag: 2 }", 1, 22, "required field \"id\" of Node is missing",
             "(at child)");
  EXPECT_ERR(nd, "id: 1 kids { id: 2 } kids { }", 1, 29, "required field \"id\"", "(at kids[1])");
  EXPECT_ERR(nd, "id: 1 child { id: 2 child < > }", 1, 29, "required field", "(at child.child)");
  EXPECT_ERR(nd, "id: 1 id: 2", 1, 7, "field \"id\" of Node is given more than once");
  Node *n = (Node *)PARSE_OK(nd, "id: 0 kids { id: 1 } kids { id: 2 child { id: 3 } } zz: [-1, 1]");
  REQUIRE(n != NULL);
  CHECK(n->id == 0 && n->n_kids == 2 && n->kids[1]->child->id == 3);
  CHECK(n->n_zz == 2 && n->zz[0] == -1);
  free(ROUNDTRIP(n));
  FREE(n);
}

static char *nested_node_text(int levels, int closed) {
  size_t cap = (size_t)levels * 16 + 16;
  char *t = malloc(cap), *o = t;
  if (!t) abort();
  for (int i = 0; i < levels; i++) o += sprintf(o, "id: 1 child { ");
  o += sprintf(o, "id: 1");
  for (int i = 0; closed && i < levels; i++) o += sprintf(o, " }");
  return t;
}

static void test_err_nesting_depth(void) {
  /* 64 nested messages parse (and round trip); the 65th '{' is refused */
  char *t = nested_node_text(64, 1);
  Node *n = (Node *)PARSE_OK(&node_descriptor, t);
  free(t);
  REQUIRE(n != NULL);
  int depth = 0;
  for (Node *c = n; c->child; c = c->child) depth++;
  CHECK(depth == 64);
  free(ROUNDTRIP(n));
  FREE(n);
  t = nested_node_text(65, 1);
  EXPECT_ERR(&node_descriptor, t, 1, 14 * 64 + 13, "messages nested more than 64 deep");
  free(t);
  /* far deeper, closed and unclosed: an error, no crash */
  t = nested_node_text(200000, 1);
  EXPECT_ERR(&node_descriptor, t, 1, 14 * 64 + 13, "nested more than 64 deep");
  free(t);
  t = nested_node_text(200000, 0);
  EXPECT_ERR(&node_descriptor, t, 1, 14 * 64 + 13, "nested more than 64 deep");
  free(t);
  /* the deepest path in the real schema, and a long flat input */
  Distilld__DistillJob *j = (Distilld__DistillJob *)PARSE_OK(
      &distilld__distill_job__descriptor,
      "solver { net_param { layer { convolution_param { weight_filler < std: 2 > } } } }");
  REQUIRE(j != NULL);
  CHECK(j->solver->net_param->layer[0]->convolution_param->weight_filler->std == 2.0f);
  FREE(j);
  size_t cap = 50000 * 30 + 1;
  char *big = malloc(cap), *o = big;
  REQUIRE(big != NULL);
  for (int i = 0; i < 50000; i++) o += sprintf(o, "layer { name: \"l%d\" }\n", i);
  Caffe__NetParameter *net = NET(big);
  CHECK(net && net->n_layer == 50000 && strcmp(net->layer[49999]->name, "l49999") == 0);
  if (net) FREE(net);
  /* and one unclosed at the very end: the error names the last line */
  strcpy(o - 2, "\n");
  EXPECT_ERR(NETD, big, 50000, 7, "'{' opened here for field \"layer\" is never closed",
             "(at layer[49999])");
  free(big);
}

/* Small or missing error buffers never overflow. */
static void test_err_buffer_sizes(void) {
  const char *t = "layer { convolution_param { num_outptu: 3 } }";
  char small[16];
  memset(small, 'x', sizeof small);
  ProtobufCMessage *m = (ProtobufCMessage *)small;
  CHECK(dd_text_parse(&m, NETD, t, strlen(t), FNAME, small, sizeof small) == DD_EPARSE);
  CHECK(m == NULL && strlen(small) == sizeof small - 1 && strncmp(small, FNAME ":1:29", 15) == 0);
  m = (ProtobufCMessage *)small;
  CHECK(dd_text_parse(&m, NETD, t, strlen(t), FNAME, NULL, 0) == DD_EPARSE && m == NULL);
  small[0] = 'x';
  CHECK(dd_text_parse(&m, NETD, t, strlen(t), FNAME, small, 0) == DD_EPARSE && small[0] == 'x');
  CHECK(dd_text_parse(&m, NETD, t, strlen(t), FNAME, small, 1) == DD_EPARSE && small[0] == '\0');
  /* without a file name */
  char err[256];
  CHECK(dd_text_parse(&m, NETD, t, strlen(t), NULL, err, sizeof err) == DD_EPARSE);
  CHECK_CONTAINS(err, ":1:29: ");
  /* `len` bounds the text: what follows is not read */
  const char *tt = "name: \"a\" garbage";
  CHECK(dd_text_parse(&m, NETD, tt, 9, FNAME, err, sizeof err) == 0);
  CHECK(m && strcmp(((Caffe__NetParameter *)m)->name, "a") == 0);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  CHECK(dd_text_parse(&m, NETD, tt, 8, FNAME, err, sizeof err) == DD_EPARSE && m == NULL);
  CHECK_CONTAINS(err, "string not closed");
}

int main(void) {
  RUN(test_err_unknown_field);
  RUN(test_err_wrong_type);
  RUN(test_err_out_of_range);
  RUN(test_err_unknown_enum);
  RUN(test_err_missing_colon);
  RUN(test_err_unclosed_block);
  RUN(test_err_seed_oneline);
  RUN(test_err_stray_and_mismatched_close);
  RUN(test_err_glued_number);
  RUN(test_err_field_twice);
  RUN(test_err_list_for_singular);
  RUN(test_err_strings);
  RUN(test_err_unexpected_characters);
  RUN(test_err_required_field);
  RUN(test_err_nesting_depth);
  RUN(test_err_buffer_sizes);
  return test_summary();
}
