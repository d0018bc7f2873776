/* Caffe's file formats: binary protocol buffer files (.caffemodel, .binaryproto, .solverstate)
 * read and written through protobuf-c, the text nets and solvers Caffe users write (.prototxt,
 * through textformat.h), and the checks Caffe applies when it loads them.
 *
 * Reading is strict and explains itself. Before protobuf-c sees a buffer, dd_wire_explain() walks
 * its wire format against the message descriptor, so a truncated or damaged file is reported as
 * "byte 1234: field 7 (blobs) of LayerParameter at layer[3] ... declares 4000 bytes but only 120
 * remain (truncated file?)" instead of a bare failure. Weights are then checked the way Caffe's
 * Blob::FromProto checks them: every blob must hold exactly as many values as its shape has
 * elements. Writing is atomic (dd_write_file_atomic), so a crash never leaves half a snapshot.
 *
 * Every function returns 0 or a negative DD_E* code (dd_error.h) and writes a message naming the
 * file and the problem into `err` (`errlen` bytes, may be NULL/0). Nothing here exits or aborts on
 * bad input, and every error path frees what it built. Messages returned through `out` are freed
 * with protobuf_c_message_free_unpacked(&(*out)->base, NULL). */
#ifndef DD_CAFFE_IO_H
#define DD_CAFFE_IO_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "caffe.pb-c.h"
#include "format/upgrade.h"

/* The most dimensions a blob shape may have here (Caffe allows 32; no Caffe layer uses more
 * than 5). */
#define DD_MAX_DIMS 8

/* ---- any message type ------------------------------------------------------------------------ */

/* Parses `len` bytes of `buf` as a binary message of type `desc`. `name` (a file name, or
 * something like "<memory>") only appears in messages; `what` says what was expected, e.g.
 * "binary NetParameter (.caffemodel)" (NULL: the descriptor's short name). An empty buffer is an
 * error (DD_ECORRUPT) even though protobuf would accept it as an empty message: for a file it
 * always means a failed write. The wire format is checked by dd_wire_explain() first, which is
 * stricter than protobuf-c where protobuf-c would silently change the data (a NUL byte inside a
 * string, field number 0 spelled in two bytes); a problem gives DD_ECORRUPT. Returns 0 and a new
 * message in `*out`, DD_ECORRUPT, or DD_ENOMEM; `*out` is NULL on failure. */
int dd_proto_parse_binary(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                          const uint8_t *buf, size_t len, const char *name, const char *what,
                          char *err, size_t errlen);

/* Reads the file at `path` and parses it as above. A file that cannot be read gives DD_EIO with
 * the system's reason (a directory is refused by name). */
int dd_proto_read_binary(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                         const char *path, char *err, size_t errlen);

/* Packs `msg` and writes it to `path` atomically. A message protobuf-c cannot pack (a NULL string
 * in a repeated field, a missing required field: protobuf_c_message_check) gives DD_EINVAL and
 * nothing is written; a write failure gives DD_EIO. */
int dd_proto_write_binary(const ProtobufCMessage *msg, const char *path, char *err,
                          size_t errlen);
/* The same into `name` in the directory `dirfd` (dd_write_file_at; `shown` names it in messages). */
int dd_proto_write_binary_at(const ProtobufCMessage *msg, int dirfd, const char *name, const char *shown, char *err,
                             size_t errlen);

/* A deep copy of any message, through the wire format (free it with
 * protobuf_c_message_free_unpacked). NULL when out of memory. Nets and solvers from prototxts are
 * small; copying a whole .caffemodel this way costs its size twice, briefly. */
ProtobufCMessage *dd_proto_copy(const ProtobufCMessage *m);

/* Explains why `len` bytes of `buf` are not a valid binary message of type `desc`: walks the wire
 * format (tags, varints, fixed-size values, length-delimited fields), checks each known field's
 * wire type against the descriptor, checks packed arrays, strings (no NUL bytes) and required
 * fields, and recurses into known sub-message fields, naming the field path on the way
 * ("layer[3].blobs[0]") and the nearest enclosing message that has a `name` ("layer \"conv1\"").
 * When a sub-message runs past the end of the buffer, the walk continues inside it, so a
 * truncated file is reported at the innermost field the cut went through. Writes e.g.
 *   "byte 1234: field 7 (blobs) of LayerParameter at layer[3] (layer \"conv1\") declares 4000
 *    bytes but only 120 remain (truncated file?)"
 * (byte offsets count from 0) without any file name (callers prefix it). Returns DD_ECORRUPT
 * when it finds a problem, 0 when the structure is sound (then protobuf-c's unpack succeeds,
 * memory permitting), DD_ENOMEM when it could not allocate its bookkeeping. Allocates nothing
 * that outlives the call. */
int dd_wire_explain(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
                    char *err, size_t errlen);

/* ---- typed binary files ---------------------------------------------------------------------- */

/* Parses an in-memory .caffemodel (binary NetParameter): the checks of dd_proto_parse_binary,
 * plus every blob of every layer (current `layer`, V1 `layers`, V0 layers) must hold as many
 * values as its shape has elements (dd_blob_proto_check). A buffer that is really a text prototxt
 * gets a hint saying so. A net of V0 or V1 layers is then upgraded as Caffe upgrades it when it
 * reads weights (dd_net_upgrade: they become `layer` entries, their blobs moved along), so weights
 * saved in any Caffe format come back in the current one; a current-format file is left as it is
 * (the other upgrades change no weights, and it writes back as the same bytes); a net the upgrade
 * refuses gives
 * DD_ECORRUPT. `name` is used in messages only. Returns 0, DD_ECORRUPT or DD_ENOMEM. */
int dd_caffemodel_parse(Caffe__NetParameter **out, const uint8_t *buf, size_t len,
                        const char *name, char *err, size_t errlen);
/* The same, adding the forms the upgrade found to `rep` (NULL: not wanted). */
int dd_caffemodel_parse_report(Caffe__NetParameter **out, const uint8_t *buf, size_t len, const char *name,
                               dd_upgrade_report *rep, char *err, size_t errlen);

/* Reads the .caffemodel at `path` (dd_caffemodel_parse on its bytes); DD_EIO when it cannot be
 * read. */
int dd_caffemodel_read(Caffe__NetParameter **out, const char *path, char *err, size_t errlen);
int dd_caffemodel_read_report(Caffe__NetParameter **out, const char *path, dd_upgrade_report *rep, char *err,
                              size_t errlen);

/* Writes `net` to `path` atomically. Refuses (DD_EINVAL, nothing written) a net with a blob whose
 * value count does not match its shape, since no reader would accept the file. */
int dd_caffemodel_write(const Caffe__NetParameter *net, const char *path, char *err,
                        size_t errlen);
/* The same into `name` in the directory `dirfd` (`shown` names it in messages; NULL: `name`). */
int dd_caffemodel_write_at(const Caffe__NetParameter *net, int dirfd, const char *name, const char *shown, char *err,
                           size_t errlen);

/* A .binaryproto (one BlobProto: mean files, blob dumps), in memory and on disk, with the blob
 * check. Returns as dd_caffemodel_parse / _read / _write. */
int dd_binaryproto_parse(Caffe__BlobProto **out, const uint8_t *buf, size_t len, const char *name,
                         char *err, size_t errlen);
int dd_binaryproto_read(Caffe__BlobProto **out, const char *path, char *err, size_t errlen);
int dd_binaryproto_write(const Caffe__BlobProto *blob, const char *path, char *err,
                         size_t errlen);

/* A .solverstate (SolverState: iteration, learned_net, history blobs), in memory and on disk; each
 * history blob gets the blob check, as Caffe's RestoreSolverStateFromBinaryProto does. */
int dd_solverstate_parse(Caffe__SolverState **out, const uint8_t *buf, size_t len,
                         const char *name, char *err, size_t errlen);
int dd_solverstate_read(Caffe__SolverState **out, const char *path, char *err, size_t errlen);
int dd_solverstate_write(const Caffe__SolverState *st, const char *path, char *err,
                         size_t errlen);
int dd_solverstate_write_at(const Caffe__SolverState *st, int dirfd, const char *name, const char *shown, char *err,
                            size_t errlen);

/* ---- text nets and solvers ------------------------------------------------------------------- */

/* Parses the text NetParameter at `path` and upgrades it as Caffe does when it reads a net
 * (dd_net_upgrade: V0 and V1 layers, old data transformation fields, net-level input fields, old
 * BatchNorm param specs), so every later step sees the current form. An unknown field gets a
 * hint saying it is not BVLC Caffe's (dd_unknown_field_hint: a Caffe fork's field, what to write
 * instead); a binary file given here gets a hint saying it looks binary. Returns 0, DD_EIO,
 * DD_EPARSE, DD_EINVAL (an old form Caffe's upgrade refuses too) or DD_ENOMEM. */
int dd_net_read_text(Caffe__NetParameter **out, const char *path, char *err, size_t errlen);
/* The same from the open descriptor `fd` (a policy's opener gave it); `path` names it in messages. */
int dd_net_read_text_fd(Caffe__NetParameter **out, int fd, const char *path, char *err, size_t errlen);
/* Either of the above (`fd` < 0: open `path`), adding the forms the upgrade found to `rep` (NULL:
 * not wanted). */
int dd_net_read_text_report(Caffe__NetParameter **out, int fd, const char *path, dd_upgrade_report *rep,
                            char *err, size_t errlen);

/* Parses the text SolverParameter at `path` and upgrades it (dd_solver_upgrade: solver_type to
 * type, and the nets written inline: net_param, train_net_param, test_net_param). */
int dd_solver_read_text(Caffe__SolverParameter **out, const char *path, char *err,
                        size_t errlen);
int dd_solver_read_text_fd(Caffe__SolverParameter **out, int fd, const char *path, char *err, size_t errlen);
int dd_solver_read_text_report(Caffe__SolverParameter **out, int fd, const char *path, dd_upgrade_report *rep,
                               char *err, size_t errlen);

/* ---- blobs and weights ----------------------------------------------------------------------- */

/* Fills `dims` with the shape of `b` by Caffe's rule (Blob::FromProto): when any of the legacy
 * num/channels/height/width is present the shape is those four (absent ones are 0), otherwise it
 * is `shape.dim` (absent `shape`: zero dims, a scalar of one element). Returns the number of dims
 * (0..DD_MAX_DIMS), DD_ECORRUPT for a negative dimension, DD_EUNSUPPORTED for more than
 * DD_MAX_DIMS dims. */
int dd_blob_proto_shape(const Caffe__BlobProto *b, int64_t dims[DD_MAX_DIMS]);

/* Checks that `b` holds as many values as its shape has elements: double_data when it has any,
 * else data; diff (double_diff when it has any) may be empty, else it must match too. Returns 0,
 * DD_ECORRUPT (a negative dimension, a count mismatch) or DD_EUNSUPPORTED (more than DD_MAX_DIMS
 * dims) with the problem in `msg`, e.g. "holds 54 data values but its shape 6x3x3x3 has 162
 * elements" (no file or layer name: callers prefix those). */
int dd_blob_proto_check(const Caffe__BlobProto *b, char *msg, size_t msglen);

/* One layer's weights, from either layer format. Pointers point into the NetParameter. */
typedef struct {
  const char *name;          /* "" when the layer has no name */
  const char *type;          /* "Convolution", ...; a V1 enum is mapped as Caffe's upgrade does
                                (CONVOLUTION -> "Convolution"); "" when unknown or NONE */
  size_t n_blobs;
  Caffe__BlobProto **blobs;  /* n_blobs entries */
} dd_weight_layer;

/* A uniform view over the layers of `net`, stored in the current format (`layer`, field 100) or
 * in V1 (`layers`, field 2). Fills `*out` with a malloc'd array of `*n` entries the caller frees
 * with free() (NULL when `*n` is 0); its pointers point into `net`, which must outlive it. A net
 * with both `layer` and `layers` entries is refused (DD_ECORRUPT), as Caffe refuses it. Returns 0,
 * DD_ECORRUPT or DD_ENOMEM. */
int dd_weight_layers(dd_weight_layer **out, size_t *n, const Caffe__NetParameter *net, char *err,
                     size_t errlen);

#endif
