/* Tests of core/format's wire-format walker (dd_wire_explain, core/format/caffe_wire.c) on
 * hand-made buffers: sound ones, each kind of damage and the message naming it (byte offset,
 * field, message type and path), unknown fields, and small or missing message buffers. Whole
 * files through the readers are tested in test_caffe_io.c. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>

#include "base/dd_error.h"
#include "format/caffe_io.h"
#include "test.h"

/* ---- dd_wire_explain on hand-made buffers---------------------------------------------------- */

static void test_wire_explain(void) {
  char err[1024];
  const ProtobufCMessageDescriptor *net = &caffe__net_parameter__descriptor;
  /* Fine. */
  CHECK(dd_wire_explain(net, (const uint8_t *)"\x0a\x01x", 3, err, sizeof err) == 0);
  CHECK(dd_wire_explain(net, (const uint8_t *)"", 0, err, sizeof err) == 0);
  /* Wire type 7. */
  CHECK(dd_wire_explain(net, (const uint8_t *)"\x0a\x01x\x0f", 4, err, sizeof err) ==
        DD_ECORRUPT);
  CHECK_CONTAINS(err, "byte 3: invalid wire type 7");
  /* A zero byte where a tag belongs. */
  CHECK(dd_wire_explain(net, (const uint8_t *)"\x0a\x01x\x00", 4, err, sizeof err) ==
        DD_ECORRUPT);
  CHECK_CONTAINS(err, "byte 3");
  CHECK_CONTAINS(err, "field number 0");
  /* The name as a varint. */
  CHECK(dd_wire_explain(net, (const uint8_t *)"\x08\x01", 2, err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "field 1 (name) of NetParameter has wire type 0");
  /* A NUL inside a string. */
  CHECK(dd_wire_explain(net, (const uint8_t *)"\x0a\x03x\0y", 5, err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "NUL");
  /* Groups. */
  CHECK(dd_wire_explain(net, (const uint8_t *)"\x0b\x0c", 2, err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "group");
  /* A length that runs past the end. */
  CHECK(dd_wire_explain(net, (const uint8_t *)"\x0a\x10xyz", 5, err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "byte 0: field 1 (name) of NetParameter declares 16 bytes but only 3 remain "
                      "(truncated file?)");
  /* A packed float array whose length is not a multiple of 4, inside layer[0].blobs[0]:
   * layer { name: "L" blobs { data: <5 bytes> } }. */
  const uint8_t bad_packed[] = {0xa2, 0x06, 0x0c, 0x0a, 0x01, 'L', 0x3a, 0x07,
                                0x2a, 0x05, 1,    2,    3,    4,    5};
  CHECK(dd_wire_explain(net, bad_packed, sizeof bad_packed, err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "field 5 (data) of BlobProto at layer[0].blobs[0] (layer \"L\")");
  CHECK_CONTAINS(err, "not a multiple of 4");
  /* A sub-message that ends inside a field: not a truncated file, a damaged one. */
  const uint8_t inner[] = {0xa2, 0x06, 0x02, 0x0a, 0x05, 0x0a, 0x01, 'x'};
  CHECK(dd_wire_explain(net, inner, sizeof inner, err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "field 1 (name) of LayerParameter at layer[0] declares 5 bytes but only 0 "
                      "remain of this LayerParameter");
  /* A field number beyond protobuf's range. */
  const uint8_t range[] = {0xf8, 0xff, 0xff, 0xff, 0x7f, 0x00};
  CHECK(dd_wire_explain(net, range, sizeof range, err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "out of range");
  /* Unknown fields are fine, as long as they are well formed. */
  const uint8_t unknown[] = {0xc8, 0x3e, 0x05, 0xd2, 0x3e, 0x01, 'z'};
  CHECK(dd_wire_explain(net, unknown, sizeof unknown, err, sizeof err) == 0);
  /* The small buffer errors are cut off cleanly. */
  char tiny[8];
  CHECK(dd_wire_explain(net, bad_packed, sizeof bad_packed, tiny, sizeof tiny) == DD_ECORRUPT);
  CHECK(strlen(tiny) < sizeof tiny);
  CHECK(dd_wire_explain(net, bad_packed, sizeof bad_packed, NULL, 0) == DD_ECORRUPT);
}

int main(void) {
  RUN(test_wire_explain);
  return test_summary();
}
