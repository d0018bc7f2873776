/* Protocol buffer text format (the .prototxt syntax of Caffe nets, solvers and distilld jobs),
 * parsed and printed generically over protobuf-c's message descriptors: there is no per-message
 * code, so every message in proto/ reads and prints the same way.
 *
 * Accepted syntax (protobuf's TextFormat, as Caffe users write it):
 *   # comments to end of line
 *   field: value            scalars; the ':' is required
 *   field { ... }  field < ... >  field: { ... }   messages; the ':' is optional
 *   field: [a, b, c]  field [ {..}, {..} ]         lists for repeated fields
 *   a field separator ',' or ';' may follow any field
 *   enums by name or by number; strings in '' or "" with C escapes (\n \t \\ \' \" \xHH \ooo ...),
 *   adjacent string literals concatenated; integers in decimal, hex (0x..) or octal, negative
 *   where the type allows, range-checked per type; floats with exponent, inf, -inf, nan, and a
 *   trailing f; bools as true/false/True/False/t/f/1/0.
 * A singular field given twice, an unknown field, a missing required field, a number glued to a
 * name ("100test_interval") and an unclosed '{' are errors naming file:line:column, the field path
 * and what was expected. */
#ifndef DD_TEXTFORMAT_H
#define DD_TEXTFORMAT_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdio.h>

/* Parses `len` bytes of `text` as a message of type `desc`. On success stores a new message in
 * `*out` (free it with protobuf_c_message_free_unpacked(*out, NULL)) and returns 0. On failure
 * returns DD_EPARSE (or DD_ENOMEM), leaves `*out` NULL, frees everything it built, and writes
 * "FILE:LINE:COL: message" to `err` (`errlen` bytes). `filename` is only used in messages. */
int dd_text_parse(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc, const char *text,
                  size_t len, const char *filename, char *err, size_t errlen);

/* Reads the file at `path` and parses it as above. A file that cannot be read gives DD_EIO and a
 * message naming the file and the system's reason. */
int dd_text_parse_file(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                       const char *path, char *err, size_t errlen);

/* Prints `msg` in text format, fields in field-number order, two spaces of indent per level.
 * Floats and doubles are printed with enough digits to read back bit-exactly. Returns a
 * NUL-terminated string the caller frees with free(), or NULL when out of memory. */
char *dd_text_print(const ProtobufCMessage *msg);

/* Prints `msg` to `f`, `indent` spaces deep. Returns 0 or DD_EIO. */
int dd_text_print_file(FILE *f, const ProtobufCMessage *msg, int indent);

#endif
