/* Caffe's file formats (see caffe_io.h): the strict binary reader built on the wire-format walker
 * (caffe_wire.c) and protobuf-c, Caffe's blob checks, atomic writers, the text readers with
 * Caffe's upgrades (upgrade.c), and the uniform view over both layer formats. */
#define _POSIX_C_SOURCE 200809L
#include "format/caffe_io.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "format/caffe_io_internal.h"
#include "format/fileio.h"
#include "format/textformat.h"
#include "format/upgrade.h"

/* ============================================================================================ */
/* Binary files                                                                                 */
/* ============================================================================================ */

/* True when `buf` reads like a protobuf text file: no control characters but whitespace in its
 * first 512 bytes, and it starts with a '#' comment or `identifier:` / `identifier {`. */
static int looks_like_text(const uint8_t *buf, size_t len) {
  size_t n = len < 512 ? len : 512, i = 0;
  for (size_t k = 0; k < n; k++) {
    uint8_t ch = buf[k];
    if ((ch < 0x20 && !isspace(ch)) || ch == 0x7f) return 0;
  }
  while (i < n && isspace(buf[i])) i++;
  if (i == n) return 0;
  if (buf[i] == '#') return 1;
  if (!isalpha(buf[i]) && buf[i] != '_') return 0;
  while (i < n && (isalnum(buf[i]) || buf[i] == '_')) i++;
  while (i < n && isspace(buf[i])) i++;
  return i < n && (buf[i] == ':' || buf[i] == '{' || buf[i] == '<');
}

/* True when `buf` does not read like text: a NUL or several control characters early on. */
static int looks_binary(const uint8_t *buf, size_t len) {
  size_t n = len < 512 ? len : 512, ctl = 0;
  for (size_t k = 0; k < n; k++) {
    if (buf[k] == 0) return 1;
    if ((buf[k] < 0x20 && !isspace(buf[k])) || buf[k] == 0x7f) ctl++;
  }
  return ctl >= 4 || (n > 0 && ctl * 10 >= n);
}

/* The error for a text file given where a binary one belongs. */
static int text_hint(const uint8_t *buf, size_t len, const char *name, const char *what,
                     char *err, size_t errlen) {
  size_t i = 0;
  while (i < len && isspace(buf[i])) i++;
  char first[48];
  size_t k = 0;
  for (; i < len && k < sizeof first - 1 && buf[i] != '\n' && buf[i] != '\r'; i++)
    first[k++] = (buf[i] >= 0x20 && buf[i] < 0x7f) ? (char)buf[i] : '?';
  first[k] = '\0';
  return dd_errorf(DD_ECORRUPT, err, errlen,
                   "%s: this looks like a text prototxt (it starts with `%s`), not a %s; was a "
                   ".prototxt given where the binary file belongs?",
                   name, first, what);
}

/* protobuf-c's allocator over malloc/free that remembers a failed allocation, so running out of
 * memory is not reported as a corrupt file. Messages it allocates are freed with the default
 * allocator (also malloc/free). */
typedef struct {
  int failed;
} track_state;

static void *track_alloc(void *data, size_t size) {
  void *p = malloc(size ? size : 1);
  if (!p) ((track_state *)data)->failed = 1;
  return p;
}

static void track_free(void *data, void *p) {
  (void)data;
  free(p);
}

int dd_proto_parse_binary(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                          const uint8_t *buf, size_t len, const char *name, const char *what,
                          char *err, size_t errlen) {
  *out = NULL;
  if (!name) name = "<memory>";
  if (!what) what = desc->short_name;
  if (len == 0)
    return dd_errorf(DD_ECORRUPT, err, errlen, "%s: empty file (0 bytes), expected a %s", name,
                     what);
  char detail[768];
  int r = dd_wire_explain(desc, buf, len, detail, sizeof detail);
  if (r == DD_ENOMEM)
    return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory checking %zu bytes", name, len);
  if (r) {
    if (looks_like_text(buf, len)) return text_hint(buf, len, name, what, err, errlen);
    return dd_errorf(DD_ECORRUPT, err, errlen, "%s: not a valid %s: %s", name, what, detail);
  }
  track_state st = {0};
  ProtobufCAllocator alloc = {track_alloc, track_free, &st};
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, &alloc, len, buf);
  if (!m) {
    if (st.failed)
      return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory decoding %zu bytes", name, len);
    return dd_errorf(DD_ECORRUPT, err, errlen, "%s: not a valid %s (protobuf-c cannot decode it)",
                     name, what);
  }
  *out = m;
  return 0;
}

int dd_proto_read_binary(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                         const char *path, char *err, size_t errlen) {
  *out = NULL;
  char *buf;
  size_t len;
  int r = dd_read_file(&buf, &len, path, err, errlen);
  if (r) return r;
  r = dd_proto_parse_binary(out, desc, (const uint8_t *)buf, len, path, NULL, err, errlen);
  free(buf);
  return r;
}

/* Packs `msg` into a new buffer (the caller frees it). */
static int pack_binary(uint8_t **out, size_t *size, const ProtobufCMessage *msg, const char *path, char *err,
                       size_t errlen) {
  if (!msg || !protobuf_c_message_check(msg))
    return dd_errorf(DD_EINVAL, err, errlen,
                     "%s: refusing to write an incomplete %s (a NULL string or sub-message in a "
                     "repeated field, or a missing required field)",
                     path, msg && msg->descriptor ? msg->descriptor->short_name : "message");
  *size = protobuf_c_message_get_packed_size(msg);
  *out = malloc(*size ? *size : 1);
  if (!*out)
    return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory packing %zu bytes", path, *size);
  size_t packed = protobuf_c_message_pack(msg, *out);
  DD_ASSERT(packed == *size);
  return 0;
}

int dd_proto_write_binary(const ProtobufCMessage *msg, const char *path, char *err,
                          size_t errlen) {
  uint8_t *buf;
  size_t size;
  int r = pack_binary(&buf, &size, msg, path, err, errlen);
  if (r) return r;
  r = dd_write_file_atomic(path, buf, size, err, errlen);
  free(buf);
  return r;
}

int dd_proto_write_binary_at(const ProtobufCMessage *msg, int dirfd, const char *name, const char *shown, char *err,
                             size_t errlen) {
  uint8_t *buf;
  size_t size;
  if (!shown) shown = name;
  int r = pack_binary(&buf, &size, msg, shown, err, errlen);
  if (r) return r;
  r = dd_write_file_at(dirfd, name, shown, buf, size, err, errlen);
  free(buf);
  return r;
}

/* ============================================================================================ */
/* Blobs                                                                                        */
/* ============================================================================================ */

/* dd_blob_proto_shape, also telling which dimension is negative (*bad) or how many dims there
 * are (*ndims_out, for the too-many case). */
static int blob_shape(const Caffe__BlobProto *b, int64_t dims[DD_MAX_DIMS], size_t *bad,
                      size_t *ndims_out) {
  if (b->has_num || b->has_channels || b->has_height || b->has_width) {
    /* Caffe's legacy 4-D shape: all four, absent ones 0. */
    int64_t legacy[4] = {b->num, b->channels, b->height, b->width};
    *ndims_out = 4;
    for (size_t i = 0; i < 4; i++) {
      if (legacy[i] < 0) {
        *bad = i;
        return DD_ECORRUPT;
      }
      dims[i] = legacy[i];
    }
    return 4;
  }
  size_t n = b->shape ? b->shape->n_dim : 0;
  *ndims_out = n;
  if (n > DD_MAX_DIMS) return DD_EUNSUPPORTED;
  for (size_t i = 0; i < n; i++) {
    if (b->shape->dim[i] < 0) {
      *bad = i;
      return DD_ECORRUPT;
    }
    dims[i] = b->shape->dim[i];
  }
  return (int)n;
}

int dd_blob_proto_shape(const Caffe__BlobProto *b, int64_t dims[DD_MAX_DIMS]) {
  size_t bad, nd;
  return blob_shape(b, dims, &bad, &nd);
}

/* "6x3x3x3", "() (a scalar)", with " (legacy num/channels/height/width)" for legacy shapes. */
static void shape_string(const Caffe__BlobProto *b, const int64_t *dims, int nd, char *out,
                         size_t n) {
  size_t k = 0;
  out[0] = '\0';
  if (nd == 0) {
    dd__appendf(out, n, &k, "() (a scalar)");
    return;
  }
  for (int i = 0; i < nd; i++) dd__appendf(out, n, &k, "%s%" PRId64, i ? "x" : "", dims[i]);
  if (b->has_num || b->has_channels || b->has_height || b->has_width)
    dd__appendf(out, n, &k, " (legacy num/channels/height/width)");
}

int dd_blob_proto_check(const Caffe__BlobProto *b, char *msg, size_t msglen) {
  int64_t dims[DD_MAX_DIMS];
  size_t bad = 0, nd_all = 0;
  int nd = blob_shape(b, dims, &bad, &nd_all);
  if (nd == DD_EUNSUPPORTED)
    return dd_errorf(DD_EUNSUPPORTED, msg, msglen,
                     "has a shape of %zu dimensions; at most %d are supported", nd_all,
                     DD_MAX_DIMS);
  if (nd < 0) {
    int legacy = b->has_num || b->has_channels || b->has_height || b->has_width;
    static const char *const legacy_names[4] = {"num", "channels", "height", "width"};
    int64_t v = legacy ? (bad == 0 ? b->num : bad == 1 ? b->channels : bad == 2 ? b->height
                                                                                 : b->width)
                       : b->shape->dim[bad];
    if (legacy)
      return dd_errorf(DD_ECORRUPT, msg, msglen, "has a negative %s (%" PRId64 ")",
                       legacy_names[bad], v);
    return dd_errorf(DD_ECORRUPT, msg, msglen, "has a negative dimension %zu (%" PRId64 ")",
                     bad, v);
  }
  char shape[160];
  shape_string(b, dims, nd, shape, sizeof shape);
  /* Elements of the shape, with overflow caught (a zero dimension makes it 0). */
  uint64_t count = 1;
  int zero = 0, overflow = 0;
  for (int i = 0; i < nd; i++) {
    if (dims[i] == 0) zero = 1;
    else if (count > UINT64_MAX / (uint64_t)dims[i]) overflow = 1;
    else count *= (uint64_t)dims[i];
  }
  if (zero) count = 0;
  else if (overflow)
    return dd_errorf(DD_ECORRUPT, msg, msglen, "has a shape %s with more than 2^64 elements",
                     shape);
  const char *kind = b->n_double_data > 0 ? "double_data" : "data";
  size_t have = b->n_double_data > 0 ? b->n_double_data : b->n_data;
  if ((uint64_t)have != count)
    return dd_errorf(DD_ECORRUPT, msg, msglen,
                     "holds %zu %s values but its shape %s has %" PRIu64 " elements", have, kind,
                     shape, count);
  kind = b->n_double_diff > 0 ? "double_diff" : "diff";
  have = b->n_double_diff > 0 ? b->n_double_diff : b->n_diff;
  if (have > 0 && (uint64_t)have != count)
    return dd_errorf(DD_ECORRUPT, msg, msglen,
                     "holds %zu %s values but its shape %s has %" PRIu64 " elements", have, kind,
                     shape, count);
  return 0;
}

/* Checks every blob of every layer of `net`. On a problem returns `code` (or the check's own
 * DD_EUNSUPPORTED) with "NAME: PREFIXlayer "x" (layer[i], type T): blob j <problem>". */
static int net_check_blobs(const Caffe__NetParameter *net, const char *name, const char *prefix,
                           int code, char *err, size_t errlen) {
  char msg[384];
  for (size_t i = 0; i < net->n_layer; i++) {
    const Caffe__LayerParameter *l = net->layer[i];
    for (size_t j = 0; j < l->n_blobs; j++) {
      int r = dd_blob_proto_check(l->blobs[j], msg, sizeof msg);
      if (r)
        return dd_errorf(r == DD_ECORRUPT ? code : r, err, errlen,
                         "%s: %slayer \"%s\" (layer[%zu], type %s): blob %zu %s", name, prefix,
                         l->name ? l->name : "", i, l->type ? l->type : "?", j, msg);
    }
  }
  for (size_t i = 0; i < net->n_layers; i++) {
    const Caffe__V1LayerParameter *l = net->layers[i];
    for (size_t j = 0; j < l->n_blobs; j++) {
      int r = dd_blob_proto_check(l->blobs[j], msg, sizeof msg);
      if (r)
        return dd_errorf(r == DD_ECORRUPT ? code : r, err, errlen,
                         "%s: %slayer \"%s\" (V1 layers[%zu]): blob %zu %s", name, prefix,
                         l->name ? l->name : "", i, j, msg);
    }
  }
  return 0;
}

/* ---- typed files ----------------------------------------------------------------------------- */

#define WHAT_NET "binary NetParameter (.caffemodel)"
#define WHAT_BLOB "binary BlobProto (.binaryproto)"
#define WHAT_STATE "binary SolverState (.solverstate)"

int dd_caffemodel_parse_report(Caffe__NetParameter **out, const uint8_t *buf, size_t len, const char *name,
                               dd_upgrade_report *rep, char *err, size_t errlen) {
  *out = NULL;
  if (!name) name = "<memory>";
  ProtobufCMessage *m;
  int r = dd_proto_parse_binary(&m, &caffe__net_parameter__descriptor, buf, len, name, WHAT_NET,
                                err, errlen);
  if (r) return r;
  Caffe__NetParameter *net = (Caffe__NetParameter *)m;
  if (net->n_layer == 0 && net->n_layers == 0 && looks_like_text(buf, len)) {
    r = text_hint(buf, len, name, WHAT_NET, err, errlen);
    goto fail;
  }
  r = net_check_blobs(net, name, "", DD_ECORRUPT, err, errlen);
  if (r) goto fail;
  /* Only a net of old layers is upgraded: the rest of the upgrades changes no weights, and a
   * current file then reads back as the same bytes (Caffe writes `input` names into it). */
  char msg[768];
  if (net->n_layers && (r = dd_net_upgrade(net, rep, msg, sizeof msg))) {
    r = dd_errorf(r == DD_EINVAL ? DD_ECORRUPT : r, err, errlen, "%s: %s", name, msg);
    goto fail;
  }
  r = net_check_blobs(net, name, "", DD_ECORRUPT, err, errlen); /* V0 blobs, now in `layer` */
  if (r) goto fail;
  *out = net;
  return 0;
fail:
  protobuf_c_message_free_unpacked(m, NULL);
  return r;
}

int dd_caffemodel_parse(Caffe__NetParameter **out, const uint8_t *buf, size_t len,
                        const char *name, char *err, size_t errlen) {
  return dd_caffemodel_parse_report(out, buf, len, name, NULL, err, errlen);
}

int dd_caffemodel_read_report(Caffe__NetParameter **out, const char *path, dd_upgrade_report *rep, char *err,
                              size_t errlen) {
  *out = NULL;
  char *buf;
  size_t len;
  int r = dd_read_file(&buf, &len, path, err, errlen);
  if (r) return r;
  r = dd_caffemodel_parse_report(out, (const uint8_t *)buf, len, path, rep, err, errlen);
  free(buf);
  return r;
}

int dd_caffemodel_read(Caffe__NetParameter **out, const char *path, char *err, size_t errlen) {
  return dd_caffemodel_read_report(out, path, NULL, err, errlen);
}

int dd_caffemodel_write(const Caffe__NetParameter *net, const char *path, char *err,
                        size_t errlen) {
  int r = net_check_blobs(net, path, "refusing to write: ", DD_EINVAL, err, errlen);
  if (r) return r;
  return dd_proto_write_binary(&net->base, path, err, errlen);
}

int dd_caffemodel_write_at(const Caffe__NetParameter *net, int dirfd, const char *name, const char *shown, char *err,
                           size_t errlen) {
  int r = net_check_blobs(net, shown ? shown : name, "refusing to write: ", DD_EINVAL, err, errlen);
  if (r) return r;
  return dd_proto_write_binary_at(&net->base, dirfd, name, shown, err, errlen);
}

int dd_binaryproto_parse(Caffe__BlobProto **out, const uint8_t *buf, size_t len, const char *name,
                         char *err, size_t errlen) {
  *out = NULL;
  if (!name) name = "<memory>";
  ProtobufCMessage *m;
  int r = dd_proto_parse_binary(&m, &caffe__blob_proto__descriptor, buf, len, name, WHAT_BLOB,
                                err, errlen);
  if (r) return r;
  char msg[384];
  r = dd_blob_proto_check((Caffe__BlobProto *)m, msg, sizeof msg);
  if (r) {
    protobuf_c_message_free_unpacked(m, NULL);
    return dd_errorf(r, err, errlen, "%s: the blob %s", name, msg);
  }
  *out = (Caffe__BlobProto *)m;
  return 0;
}

int dd_binaryproto_read(Caffe__BlobProto **out, const char *path, char *err, size_t errlen) {
  *out = NULL;
  char *buf;
  size_t len;
  int r = dd_read_file(&buf, &len, path, err, errlen);
  if (r) return r;
  r = dd_binaryproto_parse(out, (const uint8_t *)buf, len, path, err, errlen);
  free(buf);
  return r;
}

int dd_binaryproto_write(const Caffe__BlobProto *blob, const char *path, char *err,
                         size_t errlen) {
  char msg[384];
  int r = dd_blob_proto_check(blob, msg, sizeof msg);
  if (r)
    return dd_errorf(r == DD_ECORRUPT ? DD_EINVAL : r, err, errlen,
                     "%s: refusing to write: the blob %s", path, msg);
  return dd_proto_write_binary(&blob->base, path, err, errlen);
}

/* Checks the history blobs of a solver state. */
static int state_check(const Caffe__SolverState *st, const char *name, const char *prefix,
                       int code, char *err, size_t errlen) {
  char msg[384];
  for (size_t i = 0; i < st->n_history; i++) {
    int r = dd_blob_proto_check(st->history[i], msg, sizeof msg);
    if (r)
      return dd_errorf(r == DD_ECORRUPT ? code : r, err, errlen, "%s: %shistory blob %zu %s", name,
                       prefix, i, msg);
  }
  return 0;
}

int dd_solverstate_parse(Caffe__SolverState **out, const uint8_t *buf, size_t len,
                         const char *name, char *err, size_t errlen) {
  *out = NULL;
  if (!name) name = "<memory>";
  ProtobufCMessage *m;
  int r = dd_proto_parse_binary(&m, &caffe__solver_state__descriptor, buf, len, name, WHAT_STATE,
                                err, errlen);
  if (r) return r;
  r = state_check((Caffe__SolverState *)m, name, "", DD_ECORRUPT, err, errlen);
  if (r) {
    protobuf_c_message_free_unpacked(m, NULL);
    return r;
  }
  *out = (Caffe__SolverState *)m;
  return 0;
}

int dd_solverstate_read(Caffe__SolverState **out, const char *path, char *err, size_t errlen) {
  *out = NULL;
  char *buf;
  size_t len;
  int r = dd_read_file(&buf, &len, path, err, errlen);
  if (r) return r;
  r = dd_solverstate_parse(out, (const uint8_t *)buf, len, path, err, errlen);
  free(buf);
  return r;
}

int dd_solverstate_write(const Caffe__SolverState *st, const char *path, char *err,
                         size_t errlen) {
  int r = state_check(st, path, "refusing to write: ", DD_EINVAL, err, errlen);
  if (r) return r;
  return dd_proto_write_binary(&st->base, path, err, errlen);
}

int dd_solverstate_write_at(const Caffe__SolverState *st, int dirfd, const char *name, const char *shown, char *err,
                            size_t errlen) {
  int r = state_check(st, shown ? shown : name, "refusing to write: ", DD_EINVAL, err, errlen);
  if (r) return r;
  return dd_proto_write_binary_at(&st->base, dirfd, name, shown, err, errlen);
}

/* ============================================================================================ */
/* Text nets and solvers                                                                        */
/* ============================================================================================ */

/* Appends to the parser's message `pmsg` a hint when it reports an unknown field ("unknown field
 * \"ceil_mode\" in PoolingParameter"): every message parsed here is in Caffe's schema, so the
 * field is not BVLC Caffe's (dd_unknown_field_hint says what it is and what to write). */
static void fork_field_hint(char *pmsg, size_t cap) {
  const char *u = strstr(pmsg, "unknown field \"");
  if (!u) return;
  const char *f = u + strlen("unknown field \""), *q = strchr(f, '"');
  if (!q || strncmp(q, "\" in ", 5)) return;
  const char *mb = q + 5, *me = mb;
  while (isalnum((unsigned char)*me) || *me == '_') me++;
  char field[128], msg[128], hint[512];
  if ((size_t)(q - f) >= sizeof field || (size_t)(me - mb) >= sizeof msg || me == mb) return;
  memcpy(field, f, (size_t)(q - f));
  field[q - f] = '\0';
  memcpy(msg, mb, (size_t)(me - mb));
  msg[me - mb] = '\0';
  dd_unknown_field_hint(msg, field, hint, sizeof hint);
  size_t n = strlen(pmsg);
  snprintf(pmsg + n, cap - n, ": %s", hint);
}

/* Reads and parses a text file as `desc`; on a parse failure, explains an unknown field and
 * recognises a binary file. `*out` is set only on success. */
static int text_read(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc, int fd,
                     const char *path, char *err, size_t errlen) {
  *out = NULL;
  char *buf;
  size_t len;
  int r = fd >= 0 ? dd_read_fd(&buf, &len, fd, path, err, errlen) : dd_read_file(&buf, &len, path, err, errlen);
  if (r) return r;
  char pmsg[1536];
  r = dd_text_parse(out, desc, buf, len, path, pmsg, sizeof pmsg);
  if (r == DD_EPARSE && looks_binary((const uint8_t *)buf, len)) {
    r = dd_errorf(DD_EPARSE, err, errlen,
                  "%s: this looks like a binary file (a .caffemodel or .binaryproto?), not a text "
                  "prototxt (the text parser says: %s)",
                  path, pmsg);
  } else if (r) {
    if (r == DD_EPARSE) fork_field_hint(pmsg, sizeof pmsg);
    dd_errorf(r, err, errlen, "%s", pmsg);
  }
  free(buf);
  return r;
}

int dd_net_read_text(Caffe__NetParameter **out, const char *path, char *err, size_t errlen) {
  return dd_net_read_text_report(out, -1, path, NULL, err, errlen);
}

int dd_net_read_text_fd(Caffe__NetParameter **out, int fd, const char *path, char *err, size_t errlen) {
  return dd_net_read_text_report(out, fd, path, NULL, err, errlen);
}

int dd_net_read_text_report(Caffe__NetParameter **out, int fd, const char *path, dd_upgrade_report *rep,
                            char *err, size_t errlen) {
  *out = NULL;
  ProtobufCMessage *m;
  int r = text_read(&m, &caffe__net_parameter__descriptor, fd, path, err, errlen);
  if (r) return r;
  char msg[1024];
  if ((r = dd_net_upgrade((Caffe__NetParameter *)m, rep, msg, sizeof msg))) {
    protobuf_c_message_free_unpacked(m, NULL);
    return dd_errorf(r, err, errlen, "%s: %s", path, msg);
  }
  *out = (Caffe__NetParameter *)m;
  return 0;
}

int dd_solver_read_text(Caffe__SolverParameter **out, const char *path, char *err,
                        size_t errlen) {
  return dd_solver_read_text_report(out, -1, path, NULL, err, errlen);
}

int dd_solver_read_text_fd(Caffe__SolverParameter **out, int fd, const char *path, char *err, size_t errlen) {
  return dd_solver_read_text_report(out, fd, path, NULL, err, errlen);
}

int dd_solver_read_text_report(Caffe__SolverParameter **out, int fd, const char *path, dd_upgrade_report *rep,
                               char *err, size_t errlen) {
  *out = NULL;
  ProtobufCMessage *m;
  int r = text_read(&m, &caffe__solver_parameter__descriptor, fd, path, err, errlen);
  if (r) return r;
  char msg[1024];
  if ((r = dd_solver_upgrade((Caffe__SolverParameter *)m, rep, msg, sizeof msg))) {
    protobuf_c_message_free_unpacked(m, NULL);
    return dd_errorf(r, err, errlen, "%s: %s", path, msg);
  }
  *out = (Caffe__SolverParameter *)m;
  return 0;
}

/* ============================================================================================ */
/* Weights of either layer format                                                               */
/* ============================================================================================ */

int dd_weight_layers(dd_weight_layer **out, size_t *n, const Caffe__NetParameter *net, char *err,
                     size_t errlen) {
  *out = NULL;
  *n = 0;
  if (net->n_layer && net->n_layers)
    return dd_errorf(DD_ECORRUPT, err, errlen,
                     "net \"%s\" has both current-format `layer` entries (%zu) and V1 `layers` "
                     "entries (%zu); Caffe refuses such a net too",
                     net->name ? net->name : "", net->n_layer, net->n_layers);
  size_t cnt = net->n_layer + net->n_layers;
  if (cnt == 0) return 0;
  dd_weight_layer *w = calloc(cnt, sizeof *w);
  if (!w)
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory listing %zu layers of net \"%s\"", cnt,
                     net->name ? net->name : "");
  for (size_t i = 0; i < net->n_layer; i++) {
    const Caffe__LayerParameter *l = net->layer[i];
    w[i].name = l->name ? l->name : "";
    w[i].type = l->type ? l->type : "";
    w[i].n_blobs = l->n_blobs;
    w[i].blobs = l->blobs;
  }
  for (size_t i = 0; i < net->n_layers; i++) {
    const Caffe__V1LayerParameter *l = net->layers[i];
    w[i].name = l->name ? l->name : "";
    const char *t = l->has_type ? dd_v1_layer_type_name((int)l->type) : "";
    w[i].type = t ? t : "";
    w[i].n_blobs = l->n_blobs;
    w[i].blobs = l->blobs;
  }
  *out = w;
  *n = cnt;
  return 0;
}

ProtobufCMessage *dd_proto_copy(const ProtobufCMessage *m) {
  size_t len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return NULL;
  protobuf_c_message_pack(m, buf);
  ProtobufCMessage *c = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
  free(buf);
  return c;
}
