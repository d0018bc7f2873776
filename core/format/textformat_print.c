/* The printer of the protocol buffer text format (see textformat.h): walks a message's descriptor
 * and writes its present fields in field-number order into a growable buffer
 * (textformat_strbuf.c), two spaces of indent per level, a sub-message as a block. How each
 * scalar value is written is its type's row in textformat_types.c. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "format/textformat.h"
#include "format/textformat_internal.h"

/* Whether an optional/required field is present (repeated fields are handled by count). */
static int field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  const char *base = (const char *)m;
  if (f->label == PROTOBUF_C_LABEL_REQUIRED) return 1;
  if (f->type == PROTOBUF_C_TYPE_MESSAGE) return *(void *const *)(base + f->offset) != NULL;
  if (f->type == PROTOBUF_C_TYPE_STRING) {
    const char *s = *(char *const *)(base + f->offset);
    return s != NULL && s != (const char *)f->default_value;
  }
  if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset)
    return *(const protobuf_c_boolean *)(base + f->quantifier_offset) != 0;
  /* proto3-style (no presence): print when not zero */
  const unsigned char *v = (const unsigned char *)(base + f->offset);
  for (size_t i = 0; i < dd__tf_elem_size(f); i++)
    if (v[i]) return 1;
  return 0;
}

static void print_message(tf_strbuf *b, const ProtobufCMessage *m, int indent);

/* One "name: value" line, or for a message "name {", its fields two spaces deeper, and "}". */
static void print_field(tf_strbuf *b, const ProtobufCFieldDescriptor *f, const void *v,
                        int indent) {
  char nm[128];
  const char *name = dd__tf_field_name(f, nm, sizeof nm);
  dd__tf_sb_indent(b, indent);
  if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
    dd__tf_sb_printf(b, "%s ", name);
    dd__tf_sb_put(b, "{\n", 2);
    print_message(b, *(ProtobufCMessage *const *)v, indent + 2);
    dd__tf_sb_indent(b, indent);
    dd__tf_sb_put(b, "}", 1);
  } else {
    dd__tf_sb_printf(b, "%s: ", name);
    dd__tf_print_value(b, f, v);
  }
  dd__tf_sb_put(b, "\n", 1);
}

/* Prints the fields of `m` that are present, `indent` spaces deep. */
static void print_message(tf_strbuf *b, const ProtobufCMessage *m, int indent) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const char *base = (const char *)m;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)(base + f->quantifier_offset);
      const char *arr = *(char *const *)(base + f->offset);
      for (size_t k = 0; k < n; k++) print_field(b, f, arr + k * dd__tf_elem_size(f), indent);
    } else if (field_present(m, f)) {
      print_field(b, f, base + f->offset, indent);
    }
  }
}

char *dd_text_print(const ProtobufCMessage *msg) {
  tf_strbuf b = {0};
  dd__tf_sb_put(&b, "", 0);
  print_message(&b, msg, 0);
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  return b.p;
}

int dd_text_print_file(FILE *f, const ProtobufCMessage *msg, int indent) {
  tf_strbuf b = {0};
  dd__tf_sb_put(&b, "", 0);
  print_message(&b, msg, indent);
  if (b.oom) {
    free(b.p);
    return DD_ENOMEM;
  }
  int r = fwrite(b.p, 1, b.len, f) == b.len ? 0 : DD_EIO;
  free(b.p);
  return r;
}
