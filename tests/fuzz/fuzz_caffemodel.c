/* libFuzzer target for core/caffe_io: arbitrary bytes as a .caffemodel, .binaryproto and
 * .solverstate, in memory (nothing touches the disk).
 *
 * Besides "no crash, no sanitizer report, no leak", it checks the properties the readers rely on:
 *   - dd_wire_explain accepts a subset of what protobuf-c's unpack accepts, so a buffer the
 *     walker passes always unpacks, and a refusal always comes with a message;
 *   - protobuf-c's packing of an accepted message is accepted again and is stable (unpack, pack
 *     gives the same bytes), so what distilld writes it can read back;
 *   - a net, blob or state the typed parsers accept has consistent blobs and lists through
 *     dd_weight_layers.
 * Seeds: tests/fuzz/corpus/caffemodel. Run: fuzz_caffemodel -max_total_time=60 CORPUS_DIR SEEDS */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "format/caffe_io.h"
#include "base/dd_error.h"

/* A broken property is a finding: stop here so libFuzzer saves the input. */
#define FUZZ_CHECK(x)        \
  do {                       \
    if (!(x)) __builtin_trap(); \
  } while (0)

static int is_code(int r) { return r == 0 || (r < 0 && r >= DD_ENOTFOUND); }

/* Packs `m`, checks that the walker accepts the bytes and that unpacking and packing them again
 * gives the same bytes. */
static void check_repack(const ProtobufCMessageDescriptor *desc, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *a = malloc(n ? n : 1);
  if (!a) return;
  FUZZ_CHECK(protobuf_c_message_pack(m, a) == n);
  char err[256];
  FUZZ_CHECK(dd_wire_explain(desc, a, n, err, sizeof err) == 0);
  ProtobufCMessage *m2 = protobuf_c_message_unpack(desc, NULL, n, a);
  FUZZ_CHECK(m2 != NULL);
  size_t n2 = protobuf_c_message_get_packed_size(m2);
  uint8_t *b = malloc(n2 ? n2 : 1);
  if (b) {
    FUZZ_CHECK(protobuf_c_message_pack(m2, b) == n2);
    FUZZ_CHECK(n2 == n && memcmp(a, b, n) == 0);
    free(b);
  }
  protobuf_c_message_free_unpacked(m2, NULL);
  free(a);
}

/* The walker against protobuf-c for one message type. */
static void check_walker(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                         size_t size) {
  char err[512];
  err[0] = '\0';
  int w = dd_wire_explain(desc, data, size, err, sizeof err);
  FUZZ_CHECK(w == 0 || w == DD_ECORRUPT || w == DD_ENOMEM);
  if (w == DD_ECORRUPT) FUZZ_CHECK(strncmp(err, "byte ", 5) == 0);
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, size, data);
  if (w == 0) FUZZ_CHECK(m != NULL);
  if (m && w == 0) check_repack(desc, m);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
}

static void check_blob(const Caffe__BlobProto *b) {
  char msg[256];
  int64_t dims[DD_MAX_DIMS];
  FUZZ_CHECK(dd_blob_proto_check(b, msg, sizeof msg) == 0);
  int nd = dd_blob_proto_shape(b, dims);
  FUZZ_CHECK(nd >= 0 && nd <= DD_MAX_DIMS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[1024];
  check_walker(&caffe__net_parameter__descriptor, data, size);
  check_walker(&caffe__blob_proto__descriptor, data, size);
  check_walker(&caffe__solver_state__descriptor, data, size);

  Caffe__NetParameter *net = NULL;
  err[0] = '\0';
  int r = dd_caffemodel_parse(&net, data, size, "fuzz.caffemodel", err, sizeof err);
  FUZZ_CHECK(is_code(r));
  if (r) {
    FUZZ_CHECK(net == NULL && strncmp(err, "fuzz.caffemodel: ", 17) == 0);
  } else {
    dd_weight_layer *wl = NULL;
    size_t n = 0;
    r = dd_weight_layers(&wl, &n, net, err, sizeof err);
    FUZZ_CHECK(r == 0 || r == DD_ECORRUPT);
    for (size_t i = 0; r == 0 && i < n; i++)
      for (size_t j = 0; j < wl[i].n_blobs; j++) check_blob(wl[i].blobs[j]);
    free(wl);
    protobuf_c_message_free_unpacked(&net->base, NULL);
  }

  Caffe__BlobProto *blob = NULL;
  r = dd_binaryproto_parse(&blob, data, size, "fuzz.binaryproto", err, sizeof err);
  FUZZ_CHECK(is_code(r));
  if (r == 0) {
    check_blob(blob);
    protobuf_c_message_free_unpacked(&blob->base, NULL);
  } else {
    FUZZ_CHECK(blob == NULL);
  }

  Caffe__SolverState *st = NULL;
  r = dd_solverstate_parse(&st, data, size, "fuzz.solverstate", err, sizeof err);
  FUZZ_CHECK(is_code(r));
  if (r == 0) {
    for (size_t i = 0; i < st->n_history; i++) check_blob(st->history[i]);
    protobuf_c_message_free_unpacked(&st->base, NULL);
  } else {
    FUZZ_CHECK(st == NULL);
  }
  return 0;
}
