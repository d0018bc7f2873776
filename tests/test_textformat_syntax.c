/* Tests of the protobuf text format (core/format/textformat*.c), part 2: syntax, every form
 * textformat.h promises (comments, block styles, lists, separators, escapes, number forms, bool
 * spellings, has_ flags), and files: a missing file, a directory, a parse error in a file, and
 * printing to a FILE. Round trips are in test_textformat_roundtrip.c, errors in
 * test_textformat_errors.c; the shared helpers are in test_textformat.h. */
#define _POSIX_C_SOURCE 200809L
#include "test_textformat.h"

/* ------------------------------------------------------------------------------------------- */
/* 2. Syntax                                                                                     */

static void test_syntax_empty_and_comments(void) {
  const char *empties[] = {"", "   \n\t\r\n", "# only a comment", "# a\n#b\n\n# c { } <"};
  for (size_t i = 0; i < NELEM(empties); i++) {
    Caffe__NetParameter *n = NET(empties[i]);
    REQUIRE(n != NULL);
    CHECK(n->name == NULL && n->n_layer == 0);
    FREE(n);
  }
  Caffe__NetParameter *n = NET("# header\nname: \"n\" # trailing } >\n# line\r\ninput: \"a#b\"#x\n"
                               "input: 'c # d'   # end");
  REQUIRE(n != NULL);
  CHECK(strcmp(n->name, "n") == 0);
  CHECK(n->n_input == 2 && strcmp(n->input[0], "a#b") == 0 && strcmp(n->input[1], "c # d") == 0);
  FREE(n);
}

static void test_syntax_blocks(void) {
  const char *forms[] = {"state { phase: TRAIN level: 2 }", "state < phase: TRAIN level: 2 >",
                         "state: { phase: TRAIN level: 2 }", "state: < phase: TRAIN level: 2 >",
                         "state{phase:TRAIN level:2}", "state\n{\nphase\n:\nTRAIN\nlevel:2\n}"};
  for (size_t i = 0; i < NELEM(forms); i++) {
    Caffe__NetParameter *n = NET(forms[i]);
    REQUIRE(n != NULL);
    CHECK(n->state && n->state->has_phase && n->state->phase == CAFFE__PHASE__TRAIN);
    CHECK(n->state->has_level && n->state->level == 2);
    FREE(n);
  }
  /* mixed nesting */
  Caffe__NetParameter *n =
      NET("layer < name: 'a' convolution_param { weight_filler: < type: \"msra\" > } >");
  REQUIRE(n != NULL);
  CHECK(n->n_layer == 1 && strcmp(n->layer[0]->convolution_param->weight_filler->type, "msra") == 0);
  FREE(n);
  n = NET("state { }");
  REQUIRE(n != NULL);
  CHECK(n->state != NULL && !n->state->has_phase && n->state->phase == CAFFE__PHASE__TEST);
  FREE(n);
}

static void test_syntax_lists(void) {
  Caffe__NetParameter *n = NET("input_dim: [1, 2, 3] input_dim: 4 input_dim: [] input_dim: [ ]"
                               " input_dim: [5]");
  REQUIRE(n != NULL);
  CHECK(n->n_input_dim == 5);
  for (int i = 0; i < 5 && (size_t)i < n->n_input_dim; i++) CHECK(n->input_dim[i] == i + 1);
  FREE(n);
  n = NET("layer [ { name: \"a\" }, < name: \"b\" > ] layer: [ {name: \"c\"} ] layer [] layer: []"
          " layer { name: 'd' }");
  REQUIRE(n != NULL);
  REQUIRE(n->n_layer == 4);
  CHECK(strcmp(n->layer[0]->name, "a") == 0 && strcmp(n->layer[1]->name, "b") == 0);
  CHECK(strcmp(n->layer[2]->name, "c") == 0 && strcmp(n->layer[3]->name, "d") == 0);
  FREE(n);
  n = NET("layer { propagate_down: [true, f, 1] loss_weight: [1, .5, -inf] "
          "bottom: [\"a\" \"b\", 'c'] include [ { phase: TEST }, { phase: 0 } ] }");
  REQUIRE(n != NULL && n->n_layer == 1);
  Caffe__LayerParameter *l = n->layer[0];
  CHECK(l->n_propagate_down == 3 && l->propagate_down[0] == 1 && l->propagate_down[1] == 0 &&
        l->propagate_down[2] == 1);
  CHECK(l->n_loss_weight == 3 && l->loss_weight[1] == 0.5f && l->loss_weight[2] == -INFINITY);
  CHECK(l->n_bottom == 2 && strcmp(l->bottom[0], "ab") == 0 && strcmp(l->bottom[1], "c") == 0);
  CHECK(l->n_include == 2 && l->include[0]->phase == CAFFE__PHASE__TEST &&
        l->include[1]->phase == CAFFE__PHASE__TRAIN);
  FREE(n);
  /* many elements: the array grows past several powers of two */
  char text[8192] = "input_dim: [0";
  for (int i = 1; i < 1000; i++) snprintf(text + strlen(text), sizeof text - strlen(text), ",%d", i);
  strcat(text, "]");
  n = NET(text);
  REQUIRE(n != NULL);
  CHECK(n->n_input_dim == 1000);
  for (size_t i = 0; i < n->n_input_dim; i++) CHECK(n->input_dim[i] == (int32_t)i);
  FREE(n);
}

static void test_syntax_separators(void) {
  Caffe__NetParameter *n = NET("name: \"a\"; input: \"b\", input: \"c\";\n"
                               "layer { name: \"x\", type: \"y\"; }, layer < name: 'z'; >;"
                               "state { phase: TRAIN; level: 1, };");
  REQUIRE(n != NULL);
  CHECK(strcmp(n->name, "a") == 0 && n->n_input == 2);
  CHECK(n->n_layer == 2 && strcmp(n->layer[0]->type, "y") == 0);
  CHECK(n->state && n->state->level == 1);
  FREE(n);
}

static void test_syntax_enums(void) {
  const char *forms[] = {"state { phase: TEST }", "state { phase: 1 }", "state { phase: 0x1 }",
                         "state { phase: 01 }"};
  for (size_t i = 0; i < NELEM(forms); i++) {
    Caffe__NetParameter *n = NET(forms[i]);
    REQUIRE(n != NULL);
    CHECK(n->state->has_phase && n->state->phase == CAFFE__PHASE__TEST);
    FREE(n);
  }
  Caffe__NetParameter *n = NET("layers { type: CONTRASTIVE_LOSS } layers { type: 37 }");
  REQUIRE(n != NULL && n->n_layers == 2);
  CHECK(n->layers[0]->type == CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__CONTRASTIVE_LOSS);
  CHECK(n->layers[1]->type == 37);
  FREE(n);
}

static void test_syntax_strings(void) {
  Caffe__NetParameter *n = NET("name: \"a\" 'b' \"c\"\n  'd'\ninput: \"\" input: '' \"\"\n"
                               "input: '\"' input: \"'\"");
  REQUIRE(n != NULL);
  CHECK(strcmp(n->name, "abcd") == 0);
  CHECK(n->n_input == 4 && strcmp(n->input[0], "") == 0 && strcmp(n->input[1], "") == 0);
  CHECK(strcmp(n->input[2], "\"") == 0 && strcmp(n->input[3], "'") == 0);
  FREE(n);
  n = NET("name: \"\\n\\t\\\\\\'\\\"\\x41\\101\\a\\b\\f\\r\\v\\?\\X4a\\0101\\x4g\\7\"");
  REQUIRE(n != NULL);
  CHECK(strcmp(n->name, "\n\t\\'\"AA\a\b\f\r\v?J\b1\x04g\a") == 0);
  FREE(n);
  /* raw UTF-8, tabs and control bytes inside quotes are kept as they are */
  n = NET("name: \"h\xc3\xa9llo\t\x01\xe2\x9c\x93\"");
  REQUIRE(n != NULL);
  CHECK(strcmp(n->name, "h\xc3\xa9llo\t\x01\xe2\x9c\x93") == 0);
  FREE(n);
}

static void test_syntax_integers(void) {
  Caffe__NetParameter *n = NET("input_dim: [0x1F, 0X1f, 017, -5, -0x10, -010, - 3, 2147483647,"
                               " -2147483648, 0x7fffffff, -0x80000000, 0, -0, 00]");
  REQUIRE(n != NULL);
  int32_t want[] = {31, 31, 15, -5, -16, -8, -3, INT32_MAX, INT32_MIN, INT32_MAX, INT32_MIN, 0, 0, 0};
  REQUIRE(n->n_input_dim == NELEM(want));
  for (size_t i = 0; i < NELEM(want); i++) CHECKF(n->input_dim[i] == want[i], "element %zu", i);
  FREE(n);
  n = NET("input_shape { dim: [-9223372036854775808, 9223372036854775807, 0x7FFFFFFFFFFFFFFF,"
          " -0x8000000000000000, 0777777777777777777777] }"
          "layer { convolution_param { num_output: 0xFFFFFFFF pad: 4294967295 pad: 037777777777 "
          "pad: -0 } }");
  REQUIRE(n != NULL);
  int64_t w64[] = {INT64_MIN, INT64_MAX, INT64_MAX, INT64_MIN, INT64_MAX};
  REQUIRE(n->n_input_shape == 1 && n->input_shape[0]->n_dim == NELEM(w64));
  for (size_t i = 0; i < NELEM(w64); i++) CHECKF(n->input_shape[0]->dim[i] == w64[i], "dim %zu", i);
  Caffe__ConvolutionParameter *c = n->layer[0]->convolution_param;
  CHECK(c->num_output == UINT32_MAX && c->n_pad == 3 && c->pad[0] == UINT32_MAX &&
        c->pad[1] == UINT32_MAX && c->pad[2] == 0);
  FREE(n);
}

static void test_syntax_floats(void) {
  Caffe__NetParameter *n =
      NET("layer { loss_weight: [1e5, .5, 1., 2.5f, 2.5F, 1E-3, inf, -inf, nan, Infinity, "
          "-Infinity, INF, NaN, 3, 0x10, -0, 1e-50, 1.5e+2, 1f, 0.017, 3.40282347e+38, "
          "-3.4028235e38, 1.4e-45, 010, -nan, 1e-45f, 0f, 1.e2] }");
  REQUIRE(n != NULL && n->n_layer == 1);
  float *v = n->layer[0]->loss_weight;
  REQUIRE(n->layer[0]->n_loss_weight == 28);
  CHECK(v[0] == 1e5f && v[1] == 0.5f && v[2] == 1.0f && v[3] == 2.5f && v[4] == 2.5f);
  CHECK(v[5] == 1e-3f && v[6] == INFINITY && v[7] == -INFINITY && isnan(v[8]));
  CHECK(v[9] == INFINITY && v[10] == -INFINITY && v[11] == INFINITY && isnan(v[12]));
  CHECK(v[13] == 3.0f && v[14] == 16.0f);
  CHECK(v[15] == 0 && signbit(v[15]));
  CHECK(v[16] == 0 && !signbit(v[16]));
  CHECK(v[17] == 150.0f && v[18] == 1.0f && v[19] == 0.017f);
  CHECK(v[20] == FLT_MAX);
  CHECK(v[21] == -FLT_MAX); /* above FLT_MAX as a double, but rounds to it as a float */
  CHECK(v[22] == FLT_TRUE_MIN);
  CHECKF(v[23] == 8.0f, "010 is octal for a float as for an integer: got %g", v[23]);
  CHECKF(float_bits(v[24]) == float_bits(NAN) && float_bits(v[8]) == float_bits(NAN),
         "NaN not canonical: %08x", float_bits(v[24]));
  CHECK(v[25] == FLT_TRUE_MIN && v[26] == 0 && v[27] == 100.0f);
  FREE(n);
  n = NET("layer { blobs { double_data: [0.1, 1.7976931348623157e+308, 4.9406564584124654e-324,"
          " -0, nan, -nan, inf, 1e-400, 0x20, 9007199254740993] } }");
  REQUIRE(n != NULL);
  double *d = n->layer[0]->blobs[0]->double_data;
  REQUIRE(n->layer[0]->blobs[0]->n_double_data == 10);
  CHECK(d[0] == 0.1 && d[1] == DBL_MAX && d[2] == 4.9406564584124654e-324);
  CHECK(d[3] == 0 && signbit(d[3]));
  CHECK(double_bits(d[4]) == double_bits(NAN) && double_bits(d[5]) == double_bits(NAN));
  CHECK(d[6] == INFINITY && d[7] == 0 && d[8] == 32.0 && d[9] == 9007199254740992.0);
  FREE(n);
}

/* "-nan" reads as the canonical NaN: a negative NaN would print as "nan" and come back positive. */
static void test_syntax_nan_is_canonical(void) {
  Caffe__NetParameter *n = NET("layer { loss_weight: [-nan, -NaN, nan] blobs { double_data: [-nan, nan] } }");
  REQUIRE(n != NULL);
  for (int i = 0; i < 3; i++)
    CHECKF(float_bits(n->layer[0]->loss_weight[i]) == float_bits(NAN), "float %d: %08x", i,
           float_bits(n->layer[0]->loss_weight[i]));
  for (int i = 0; i < 2; i++)
    CHECK(double_bits(n->layer[0]->blobs[0]->double_data[i]) == double_bits((double)NAN));
  free(ROUNDTRIP(n));
  FREE(n);
}

static void test_syntax_bools_and_has_flags(void) {
  Caffe__NetParameter *n = NET("layer { propagate_down: [true, false, True, False, t, f, 1, 0] }");
  REQUIRE(n != NULL);
  REQUIRE(n->layer[0]->n_propagate_down == 8);
  for (int i = 0; i < 8; i++) CHECK(n->layer[0]->propagate_down[i] == (i % 2 == 0));
  FREE(n);
  n = NET("layer { batch_norm_param { use_global_stats: false } }"
          "layer { batch_norm_param { use_global_stats: true } }"
          "layer { batch_norm_param { } }"
          "layer { }"
          "force_backward: False");
  REQUIRE(n != NULL && n->n_layer == 4);
  Caffe__BatchNormParameter *b0 = n->layer[0]->batch_norm_param;
  Caffe__BatchNormParameter *b1 = n->layer[1]->batch_norm_param;
  Caffe__BatchNormParameter *b2 = n->layer[2]->batch_norm_param;
  CHECK(b0 && b0->has_use_global_stats == 1 && b0->use_global_stats == 0);
  CHECK(b1 && b1->has_use_global_stats == 1 && b1->use_global_stats == 1);
  CHECK(b2 && b2->has_use_global_stats == 0 && !b2->has_eps && b2->eps == 1e-5f);
  CHECK(n->layer[3]->batch_norm_param == NULL);
  CHECK(n->has_force_backward && !n->force_backward && !n->has_debug_info);
  FREE(n);
}

static void test_syntax_line_endings_and_positions(void) {
  /* CRLF and tabs: the error position is still line:column in bytes */
  EXPECT_ERR(&caffe__net_parameter__descriptor, "name: \"a\"\r\n\r\n\tbogus: 1\r\n", 3, 2,
             "unknown field \"bogus\" in NetParameter");
  EXPECT_ERR(&caffe__net_parameter__descriptor, "# c { \n  # }\n\n   \n      x: 1", 5, 7,
             "unknown field \"x\"");
}

/* ------------------------------------------------------------------------------------------- */
/* 4. Files and printing to a FILE                                                               */

static void test_file_errors(void) {
  char err[1024];
  ProtobufCMessage *m = (ProtobufCMessage *)err;
  const char *missing = DD_TEST_DATA "/seed/no_such_file.prototxt";
  CHECK(dd_text_parse_file(&m, NETD, missing, err, sizeof err) == DD_EIO);
  CHECK(m == NULL);
  CHECK_CONTAINS(err, missing);
  CHECK_CONTAINS(err, "No such file");
  m = (ProtobufCMessage *)err;
  const char *dir = DD_TEST_DATA "/seed";
  CHECK(dd_text_parse_file(&m, NETD, dir, err, sizeof err) == DD_EIO);
  CHECK(m == NULL);
  CHECK_CONTAINS(err, dir);
  CHECK_CONTAINS(err, "directory");
  /* a parse error in a file names the file, and counts lines from the top of the file */
  const char *solver = DD_TEST_DATA "/seed/seed_solver.prototxt";
  m = (ProtobufCMessage *)err;
  CHECK(dd_text_parse_file(&m, NETD, solver, err, sizeof err) == DD_EPARSE);
  CHECK(m == NULL);
  char want[512];
  snprintf(want, sizeof want, "%s:4:1: unknown field \"test_iter\" in NetParameter", solver);
  CHECKF(strncmp(err, want, strlen(want)) == 0, "expected \"%s\", got \"%s\"", want, err);
}

static void test_print_file(void) {
  Caffe__NetParameter *n = NET("name: \"n\" state { phase: TRAIN } input_dim: 1");
  REQUIRE(n != NULL);
  FILE *f = tmpfile();
  REQUIRE(f != NULL);
  CHECK(dd_text_print_file(f, &n->base, 4) == 0);
  rewind(f);
  char buf[256] = "";
  size_t len = fread(buf, 1, sizeof buf - 1, f);
  buf[len] = '\0';
  fclose(f);
  CHECK(strcmp(buf, "    name: \"n\"\n    input_dim: 1\n    state {\n      phase: TRAIN\n    }\n") == 0);
  char *s = dd_text_print(&n->base);
  CHECK(s && strcmp(s, "name: \"n\"\ninput_dim: 1\nstate {\n  phase: TRAIN\n}\n") == 0);
  free(s);
  FREE(n);
}

int main(void) {
  RUN(test_syntax_empty_and_comments);
  RUN(test_syntax_blocks);
  RUN(test_syntax_lists);
  RUN(test_syntax_separators);
  RUN(test_syntax_enums);
  RUN(test_syntax_strings);
  RUN(test_syntax_integers);
  RUN(test_syntax_floats);
  RUN(test_syntax_nan_is_canonical);
  RUN(test_syntax_bools_and_has_flags);
  RUN(test_syntax_line_endings_and_positions);
  RUN(test_file_errors);
  RUN(test_print_file);
  return test_summary();
}
