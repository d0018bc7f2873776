/* Nets and messages from text, shared by the tests that build nets (tests/test_layers.h,
 * tests/test_net_graph.c, tests/test_solver.c, tests/test_caffe_reference.c, tests/test_distill*.c,
 * tests/test_caffe_io.c, tests/test_textformat.h): a message parsed from protobuf text
 * (test_parse), a NetParameter from text (test_parse_net) or from a prototxt file (test_read_net),
 * and a message packed to its binary form (test_pack). Each returns NULL on failure with
 * core's message (which names the file and line) printed; the caller frees what it gets. */
#ifndef DD_TEST_NETS_H
#define DD_TEST_NETS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/caffe_io.h"
#include "format/textformat.h"

static inline ProtobufCMessage *test_parse(const ProtobufCMessageDescriptor *d, const char *text) {
  ProtobufCMessage *m = NULL;
  char err[1024];
  if (dd_text_parse(&m, d, text, strlen(text), "<test>", err, sizeof err)) {
    fprintf(stderr, "parse: %s\n", err);
    return NULL;
  }
  return m;
}

/* Packs a message into a new buffer (aborts when out of memory); *len gets its size. */
static inline uint8_t *test_pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(*len ? *len : 1);
  if (!buf) abort();
  size_t n = protobuf_c_message_pack(m, buf);
  if (n != *len) abort();
  return buf;
}

static inline Caffe__NetParameter *test_parse_net(const char *text) {
  return (Caffe__NetParameter *)test_parse(&caffe__net_parameter__descriptor, text);
}

static inline Caffe__NetParameter *test_read_net(const char *path) {
  Caffe__NetParameter *n = NULL;
  char err[1024];
  if (dd_net_read_text(&n, path, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return NULL;
  }
  return n;
}

#endif
