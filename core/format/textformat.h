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

/* Bounds on one parse, so that a hostile input costs time and memory in proportion to a limit
 * and not more (the parser is linear in its input: about 2 s for a 60 MB net of 10^6 layers on a
 * slow core). Passing a limit is an error naming the position, the limit and its value, e.g.
 * "net.prototxt:1048577:1: more than 1048576 messages (the text format's limit max_messages)".
 * A member left 0 takes the built-in default below; SIZE_MAX (or INT_MAX for max_depth) lifts a
 * limit in practice. */
typedef struct {
  size_t max_bytes;    /* the whole input, in bytes (default DD_TEXT_MAX_BYTES, 256 MiB) */
  int max_depth;       /* messages nested in each other (default DD_TEXT_MAX_DEPTH, 64; never more
                        * than DD_TEXT_MAX_DEPTH_CAP, which bounds the parser's stack) */
  size_t max_messages; /* messages in all, the outermost aside (default 1 << 20) */
  size_t max_values;   /* values of repeated scalar fields in all (default 1 << 24) */
  /* Asked every few thousand fields when not NULL: non-zero stops the parse with DD_ESTOPPED
   * ("FILE:LINE:COL: stopped while parsing"). Takes `stop_ctx`. */
  int (*should_stop)(void *stop_ctx);
  void *stop_ctx;
} dd_text_limits;

#define DD_TEXT_MAX_BYTES ((size_t)256 << 20)
#define DD_TEXT_MAX_DEPTH 64
#define DD_TEXT_MAX_DEPTH_CAP 1000
#define DD_TEXT_MAX_MESSAGES ((size_t)1 << 20)
#define DD_TEXT_MAX_VALUES ((size_t)1 << 24)

/* The limits dd_text_parse and dd_text_parse_file apply: the built-in defaults above, or what
 * dd_text_set_default_limits set last (its zero members resolved to the built-in ones). */
dd_text_limits dd_text_default_limits(void);

/* Sets the limits every later dd_text_parse / dd_text_parse_file call applies in this process
 * (NULL: back to the built-in defaults). The hook for a program's configuration (the daemon's
 * text size limit, say): call it at start-up, before threads that parse exist; it is not
 * synchronised with parses running at the same time. */
void dd_text_set_default_limits(const dd_text_limits *limits);

/* Parses `len` bytes of `text` as a message of type `desc`, within the default limits. On success
 * stores a new message in `*out` (free it with protobuf_c_message_free_unpacked(*out, NULL)) and
 * returns 0. On failure returns DD_EPARSE (a syntax error or a passed limit), DD_ENOMEM or
 * DD_ESTOPPED, leaves `*out` NULL, frees everything it built, and writes "FILE:LINE:COL: message"
 * to `err` (`errlen` bytes). `filename` is only used in messages. */
int dd_text_parse(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc, const char *text,
                  size_t len, const char *filename, char *err, size_t errlen);

/* dd_text_parse within `limits` (NULL: the default limits; zero members: the built-in ones). */
int dd_text_parse_limited(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                          const char *text, size_t len, const char *filename,
                          const dd_text_limits *limits, char *err, size_t errlen);

/* Reads the file at `path` and parses it as above. A file that cannot be read gives DD_EIO and a
 * message naming the file and the system's reason; a file over max_bytes is refused (DD_EPARSE,
 * "PATH:1:1: ...") before it is read. */
int dd_text_parse_file(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                       const char *path, char *err, size_t errlen);

/* dd_text_parse_file within `limits` (NULL: the default limits). */
int dd_text_parse_file_limited(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                               const char *path, const dd_text_limits *limits, char *err,
                               size_t errlen);

/* Prints `msg` in text format, fields in field-number order, two spaces of indent per level.
 * Floats and doubles are printed with enough digits to read back bit-exactly. Returns a
 * NUL-terminated string the caller frees with free(), or NULL when out of memory. */
char *dd_text_print(const ProtobufCMessage *msg);

/* Prints `msg` to `f`, `indent` spaces deep. Returns 0 or DD_EIO. */
int dd_text_print_file(FILE *f, const ProtobufCMessage *msg, int indent);

#endif
