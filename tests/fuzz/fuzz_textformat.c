/* libFuzzer target for the text format (core/format/textformat.c).
 *
 * Each input is parsed as a NetParameter, a SolverParameter and a distilld DistillJob. Whatever
 * the input, parsing must return 0 or an error without crashing or leaking (ASan), and on an error
 * *out must be NULL and the message must start with "FILE:LINE:COL: ". When parsing succeeds the
 * round-trip property must hold: print -> parse succeeds, packs to the same bytes as the first
 * parse, and prints the same text again. (NaN needs no special care: the parser only ever
 * produces the canonical NaN, which prints as "nan" and reads back the same.)
 * A NetParameter that parses also goes through the net graph and the lints of `distilld check`
 * (core/net/net_check.c) in both phases, and a SolverParameter through the solver lints: arbitrary
 * nets must give diagnostics, never a crash (shapes with zeros, huge dims, odd wiring). Nets and
 * solvers also go through Caffe's upgrades (core/format/upgrade.c) on a copy: 0 or DD_EINVAL with
 * a message, never a crash or leak; an upgraded message prints, parses back, packs the same, and
 * a second upgrade finds nothing left to do; the upgraded net is checked as above. A last
 * parse under tight dd_text_limits must fail cleanly or succeed, never crash or leak.
 *
 * Build: CC=clang cmake -DDD_FUZZ=ON -DDD_SANITIZE=ON; run:
 *   ./fuzz_textformat -max_total_time=60 -max_len=4096 SCRATCH_DIR tests/fuzz/corpus/textformat */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caffe.pb-c.h"
#include "base/dd_error.h"
#include "distill.pb-c.h"
#include "net/net_check.h"
#include "train/solver_check.h"
#include "format/textformat.h"
#include "format/caffe_io.h"
#include "format/upgrade.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *text, const char *detail) {
  fprintf(stderr, "fuzz_textformat: %s\n--- text ---\n%s\n--- detail ---\n%s\n", what,
          text ? text : "(null)", detail ? detail : "");
  abort();
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(*len ? *len : 1);
  if (!buf || protobuf_c_message_pack(m, buf) != *len) abort();
  return buf;
}

/* Upgrades a copy of the net or solver `m`: see the header. */
static void check_upgrade(const ProtobufCMessage *m) {
  int is_net = m->descriptor == &caffe__net_parameter__descriptor;
  ProtobufCMessage *c = dd_proto_copy(m);
  if (!c) abort();
  char err[1024];
  dd_upgrade_report rep = {0};
  int r = is_net ? dd_net_upgrade((Caffe__NetParameter *)c, &rep, err, sizeof err)
                 : dd_solver_upgrade((Caffe__SolverParameter *)c, &rep, err, sizeof err);
  if (r != 0 && r != DD_EINVAL && r != DD_ENOMEM) fail("unexpected upgrade error code", NULL, err);
  if (r == DD_EINVAL && !err[0]) fail("upgrade error without a message", NULL, NULL);
  if (r == 0) {
    char *printed = dd_text_print(c);
    if (!printed) abort();
    ProtobufCMessage *back = NULL;
    if (dd_text_parse(&back, c->descriptor, printed, strlen(printed), "upgraded", err, sizeof err) != 0)
      fail("the upgraded text does not parse", printed, err);
    size_t la, lb;
    uint8_t *pa = pack(c, &la), *pb = pack(back, &lb);
    if (la != lb || memcmp(pa, pb, la) != 0) fail("upgraded binary differs after print -> parse", printed, NULL);
    dd_upgrade_report again = {0};
    r = is_net ? dd_net_upgrade((Caffe__NetParameter *)back, &again, err, sizeof err)
               : dd_solver_upgrade((Caffe__SolverParameter *)back, &again, err, sizeof err);
    if (r != 0 || again.forms != 0) fail("a second upgrade is not a no-op", printed, err);
    if (is_net && rep.forms)
      for (int phase = 0; phase < 2; phase++) {
        dd_diags d = {0};
        dd_net_graph *g = NULL;
        if (dd_net_check(&g, (Caffe__NetParameter *)c, (Caffe__Phase)phase, &d) != 0) abort();
        dd_net_graph_free(g);
        dd_diags_free(&d);
      }
    free(pa);
    free(pb);
    free(printed);
    protobuf_c_message_free_unpacked(back, NULL);
  }
  protobuf_c_message_free_unpacked(c, NULL);
}

static void check_one(const ProtobufCMessageDescriptor *desc, const char *text, size_t len) {
  char err[512];
  ProtobufCMessage *m = (ProtobufCMessage *)err;
  int r = dd_text_parse(&m, desc, text, len, "f", err, sizeof err);
  if (r != 0) {
    if (m != NULL) fail("*out not NULL after an error", NULL, err);
    if (r != DD_EPARSE && r != DD_ENOMEM) fail("unexpected error code", NULL, err);
    if (r == DD_EPARSE && strncmp(err, "f:", 2) != 0) fail("error without a position", NULL, err);
    return;
  }
  char *printed = dd_text_print(m);
  if (!printed) abort();
  ProtobufCMessage *back = NULL;
  if (dd_text_parse(&back, desc, printed, strlen(printed), "printed", err, sizeof err) != 0)
    fail("the printed text does not parse", printed, err);
  size_t la, lb;
  uint8_t *pa = pack(m, &la), *pb = pack(back, &lb);
  if (la != lb || memcmp(pa, pb, la) != 0) fail("binary differs after print -> parse", printed, NULL);
  if (desc == &caffe__net_parameter__descriptor || desc == &caffe__solver_parameter__descriptor) check_upgrade(m);
  if (desc == &caffe__net_parameter__descriptor) {
    for (int phase = 0; phase < 2; phase++) {
      dd_diags d = {0};
      dd_net_graph *g = NULL;
      if (dd_net_check(&g, (Caffe__NetParameter *)m, (Caffe__Phase)phase, &d) != 0) abort();
      dd_net_graph_free(g);
      dd_diags_free(&d);
    }
  } else if (desc == &caffe__solver_parameter__descriptor) {
    dd_diags d = {0};
    dd_solver_check((Caffe__SolverParameter *)m, &d);
    dd_diags_free(&d);
  }
  char *again = dd_text_print(back);
  if (!again || strcmp(again, printed) != 0) fail("printing is not stable", printed, again);
  free(again);
  free(pa);
  free(pb);
  free(printed);
  protobuf_c_message_free_unpacked(back, NULL);
  protobuf_c_message_free_unpacked(m, NULL);
}

/* Under tight limits a parse may also stop at a limit: still 0 or a positioned DD_EPARSE, and
 * nothing leaked or left in *out. */
static void check_limited(const char *text, size_t len) {
  static const dd_text_limits tight = {.max_bytes = 2048, .max_depth = 3, .max_messages = 8,
                                       .max_values = 8};
  char err[512];
  ProtobufCMessage *m = (ProtobufCMessage *)err;
  int r = dd_text_parse_limited(&m, &caffe__net_parameter__descriptor, text, len, "f", &tight, err,
                                sizeof err);
  if (r == 0) {
    protobuf_c_message_free_unpacked(m, NULL);
    return;
  }
  if (m != NULL) fail("*out not NULL after an error (limited)", NULL, err);
  if (r != DD_EPARSE && r != DD_ENOMEM) fail("unexpected error code (limited)", NULL, err);
  if (r == DD_EPARSE && strncmp(err, "f:", 2) != 0) fail("error without a position (limited)", NULL, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The parser takes (text, len) and must never read past len: hand it an exact-size copy so ASan
   * catches any overread. */
  char *text = malloc(size ? size : 1);
  if (!text) return 0;
  if (size) memcpy(text, data, size);
  check_one(&caffe__net_parameter__descriptor, text, size);
  check_one(&caffe__solver_parameter__descriptor, text, size);
  check_one(&distilld__distill_job__descriptor, text, size);
  check_one(&distilld__daemon_config__descriptor, text, size);
  check_limited(text, size);
  free(text);
  return 0;
}
