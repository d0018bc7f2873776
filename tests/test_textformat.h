/* Helpers shared by the tests of the protobuf text format (core/format/textformat*.c), which are
 * split by subject: test_textformat_roundtrip.c (print -> parse -> pack round trips),
 * test_textformat_syntax.c (every accepted form, files, printing to a FILE) and
 * test_textformat_errors.c (every error message and its position).
 *
 * Include after test.h. Functions are static inline so a file that uses only some of them
 * compiles without unused-function warnings. */
#ifndef DD_TEST_TEXTFORMAT_H
#define DD_TEST_TEXTFORMAT_H

#include <float.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "base/dd_error.h"
#include "caffe.pb-c.h"
#include "distill.pb-c.h"
#include "format/textformat.h"
#include "test.h"
#include "test_nets.h"

#define FNAME "in.prototxt"

/* ------------------------------------------------------------------------------------------- */
/* Helpers                                                                                       */


/* Whether `a` and `b` pack to the same bytes. */
static inline int same_binary(const ProtobufCMessage *a, const ProtobufCMessage *b) {
  size_t la, lb;
  uint8_t *pa = test_pack(a, &la), *pb = test_pack(b, &lb);
  int same = la == lb && memcmp(pa, pb, la) == 0;
  free(pa);
  free(pb);
  return same;
}

/* Parses NUL-terminated `text`; NULL (and a failed check naming the caller's line) on error. */
static inline ProtobufCMessage *parse_ok_(const ProtobufCMessageDescriptor *d, const char *text,
                                          int line) {
  char err[1024];
  ProtobufCMessage *m = (ProtobufCMessage *)&err; /* any non-NULL value: must be replaced */
  int r = dd_text_parse(&m, d, text, strlen(text), FNAME, err, sizeof err);
  CHECKF(r == 0 && m != NULL, "line %d: parse of <<%s>> failed: %d %s", line, text, r, err);
  if (r != 0) {
    CHECKF(m == NULL, "line %d: *out not NULL after a failure", line);
    return NULL;
  }
  return m;
}
#define PARSE_OK(d, text) parse_ok_((d), (text), __LINE__)

/* Parses `len` bytes of `text` expecting DD_EPARSE at line:col, with each of the NULL-terminated
 * `subs` in the message. Returns 1 when everything matched. */
static inline int expect_err_(const ProtobufCMessageDescriptor *d, const char *text, size_t len,
                              int eline, int ecol, const char *const *subs, int line) {
  char err[1024];
  ProtobufCMessage *m = (ProtobufCMessage *)&err;
  int r = dd_text_parse(&m, d, text, len, FNAME, err, sizeof err);
  int ok = 1;
  if (r != DD_EPARSE || m != NULL) {
    CHECKF(0, "line %d: <<%.*s>>: expected DD_EPARSE and NULL, got %d, %p (%s)", line, (int)len,
           text, r, (void *)m, r ? err : "parsed");
    if (r == 0) protobuf_c_message_free_unpacked(m, NULL);
    return 0;
  }
  char prefix[64];
  snprintf(prefix, sizeof prefix, FNAME ":%d:%d: ", eline, ecol);
  if (strncmp(err, prefix, strlen(prefix)) != 0) {
    CHECKF(0, "line %d: expected the error at \"%s\", got \"%s\"", line, prefix, err);
    ok = 0;
  }
  for (; *subs; subs++) {
    if (!strstr(err, *subs)) {
      CHECKF(0, "line %d: \"%s\" not found in \"%s\"", line, *subs, err);
      ok = 0;
    }
  }
  return ok;
}
#define EXPECT_ERR(d, text, eline, ecol, ...)                                    \
  expect_err_((d), (text), strlen(text), (eline), (ecol),                        \
              (const char *const[]){__VA_ARGS__, NULL}, __LINE__)
#define EXPECT_ERR_N(d, text, len, eline, ecol, ...)                             \
  expect_err_((d), (text), (len), (eline), (ecol), (const char *const[]){__VA_ARGS__, NULL}, \
              __LINE__)

/* print -> parse -> pack must equal test_pack(m); printing the result again must give the same text.
 * Returns the printed text (caller frees) or NULL after a failed check. */
static inline char *roundtrip_(const ProtobufCMessage *m, int line) {
  char *text = dd_text_print(m);
  CHECKF(text != NULL, "line %d: print failed", line);
  if (!text) return NULL;
  char err[1024];
  ProtobufCMessage *back = NULL;
  int r = dd_text_parse(&back, m->descriptor, text, strlen(text), "printed", err, sizeof err);
  CHECKF(r == 0, "line %d: re-parse of the printed text failed: %s\n%s", line, err, text);
  if (r) {
    free(text);
    return NULL;
  }
  CHECKF(same_binary(m, back), "line %d: binary differs after print/parse of\n%s", line, text);
  char *again = dd_text_print(back);
  CHECKF(again && strcmp(again, text) == 0, "line %d: printing is not stable:\n%s\n---\n%s", line,
         text, again ? again : "(null)");
  free(again);
  protobuf_c_message_free_unpacked(back, NULL);
  return text;
}
#define ROUNDTRIP(m) roundtrip_((const ProtobufCMessage *)(m), __LINE__)

/* parse -> print -> parse of a file; both parses must pack the same. */
static inline void file_roundtrip(const ProtobufCMessageDescriptor *d, const char *path) {
  char err[1024];
  ProtobufCMessage *m = NULL;
  int r = dd_text_parse_file(&m, d, path, err, sizeof err);
  CHECKF(r == 0, "%s: %s", path, err);
  if (r) return;
  free(ROUNDTRIP(m));
  protobuf_c_message_free_unpacked(m, NULL);
}

static inline uint32_t float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static inline uint64_t double_bits(double d) {
  uint64_t u;
  memcpy(&u, &d, 8);
  return u;
}

/* ------------------------------------------------------------------------------------------- */
/* A hand-written descriptor: the schema has neither a required field nor a recursive message,
 * and no uint64, sint64 or bytes field; "Node" has all of them.
 *   message Node { required int32 id = 1; optional int32 tag = 2; optional Node child = 3;
 *                  repeated Node kids = 4; optional uint64 big = 5; optional bytes blob = 6;
 *                  repeated sint64 zz = 7 [packed = true]; } */

typedef struct Node {
  ProtobufCMessage base;
  int32_t id;
  protobuf_c_boolean has_tag;
  int32_t tag;
  struct Node *child;
  size_t n_kids;
  struct Node **kids;
  protobuf_c_boolean has_big;
  uint64_t big;
  protobuf_c_boolean has_blob;
  ProtobufCBinaryData blob;
  size_t n_zz;
  int64_t *zz;
} Node;

static const ProtobufCMessageDescriptor node_descriptor;

static inline void node_init(ProtobufCMessage *m) {
  static const Node init = {PROTOBUF_C_MESSAGE_INIT(&node_descriptor), 0, 0, 0, NULL, 0, NULL,
                            0, 0, 0, {0, NULL}, 0, NULL};
  *(Node *)m = init;
}

#define NODE_FIELD(nm, num, lab, typ, q, off, desc, fl)                               \
  {                                                                                  \
    nm, num, PROTOBUF_C_LABEL_##lab, PROTOBUF_C_TYPE_##typ, q, offsetof(Node, off), desc, NULL, \
        fl, 0, NULL, NULL                                                            \
  }
static const ProtobufCFieldDescriptor node_fields[7] = {
    NODE_FIELD("id", 1, REQUIRED, INT32, 0, id, NULL, 0),
    NODE_FIELD("tag", 2, OPTIONAL, INT32, offsetof(Node, has_tag), tag, NULL, 0),
    NODE_FIELD("child", 3, OPTIONAL, MESSAGE, 0, child, &node_descriptor, 0),
    NODE_FIELD("kids", 4, REPEATED, MESSAGE, offsetof(Node, n_kids), kids, &node_descriptor, 0),
    NODE_FIELD("big", 5, OPTIONAL, UINT64, offsetof(Node, has_big), big, NULL, 0),
    NODE_FIELD("blob", 6, OPTIONAL, BYTES, offsetof(Node, has_blob), blob, NULL, 0),
    NODE_FIELD("zz", 7, REPEATED, SINT64, offsetof(Node, n_zz), zz, NULL,
               PROTOBUF_C_FIELD_FLAG_PACKED),
};
static const unsigned node_by_name[7] = {4, 5, 2, 0, 3, 1, 6}; /* big blob child id kids tag zz */
static const ProtobufCIntRange node_ranges[2] = {{1, 0}, {0, 7}};
static const ProtobufCMessageDescriptor node_descriptor = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC, "test.Node", "Node", "Node", "test", sizeof(Node), 7,
    node_fields, node_by_name, 1, node_ranges, node_init, NULL, NULL, NULL};

/* ------------------------------------------------------------------------------------------- */
/* 1. Round trips                                                                                */

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define NET(text) ((Caffe__NetParameter *)PARSE_OK(&caffe__net_parameter__descriptor, (text)))
#define FREE(m) protobuf_c_message_free_unpacked(&(m)->base, NULL)
#define NETD (&caffe__net_parameter__descriptor)
#define SOLVERD (&caffe__solver_parameter__descriptor)

#endif
