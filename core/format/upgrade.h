/* Caffe's upgrades of old net and solver files (the behaviour of Caffe's util/upgrade_proto.cpp,
 * written anew over protobuf-c): a parsed NetParameter or SolverParameter in an old form is
 * rewritten in place into the current form, and the forms found are recorded, so `distilld
 * check` can say what it upgraded and `distilld check --upgrade OUT` can write the current form.
 *
 * The steps run in Caffe's order, each only where its form is present:
 *   1. V0 layers (`layers { layer { type: "conv" ... } }`, before 2014) become V1 layers, V0
 *      "padding" layers folded into the convolution or pooling that reads them;
 *   2. the old transformation fields of V1 data layers (scale, mean_file, crop_size, mirror in
 *      data_param / image_data_param / window_data_param) move into transform_param;
 *   3. V1 layers (`layers { type: CONVOLUTION blobs_lr: 1 ... }`) become `layer` entries with
 *      string types, ParamSpecs from blobs_lr / weight_decay / param / blob_share_mode;
 *   4. the net-level `input` with `input_shape` or `input_dim` becomes an Input layer, first;
 *   5. BatchNorm layers with three param specs (the old way to freeze the statistics) get
 *      lr_mult 0 and decay_mult 0 in all three.
 * Solvers: the `solver_type` enum becomes the `type` string, and nets written inline
 * (net_param, train_net_param, test_net_param) are upgraded as nets.
 *
 * Where Caffe's upgrade kills the process (an unknown V0 type, a padding layer feeding a layer
 * that is neither convolution nor pooling, `layer` and `layers` in one net, solver_type and type
 * both given) these functions return DD_EINVAL with a message naming the layer and the field.
 * Where Caffe logs "not fully compatible" and goes on (a V0 field that does not apply to the
 * layer's type, which it drops), they go on too and say so in the report's notes.
 *
 * Everything the old layers held (blobs included) is moved, not copied, so upgrading a large
 * .caffemodel costs no extra memory. The message stays freeable with
 * protobuf_c_message_free_unpacked(&msg->base, NULL). */
#ifndef DD_UPGRADE_H
#define DD_UPGRADE_H

#include <stddef.h>

#include "caffe.pb-c.h"

/* The forms an upgrade found: bit, short name (for "upgraded from ..."), what it became. */
#define DD_UPGRADE_FORMS(XX)                                                                       \
  XX(V0, 1u << 0, "V0 layers", "V0 layers (layers { layer { type: \"conv\" ... } }) became V1, then current, layers") \
  XX(V0_PADDING, 1u << 1, "V0 padding layers",                                                   \
     "V0 padding layers were folded into the pad of the convolution or pooling that reads them")   \
  XX(DATA_TRANSFORM, 1u << 2, "old data transformation fields",                                  \
     "scale / mean_file / crop_size / mirror of the data layers' own parameters moved to transform_param") \
  XX(V1, 1u << 3, "V1 layers",                                                                   \
     "V1 layers (layers { type: CONVOLUTION blobs_lr ... }) became layer { type: \"Convolution\" param { lr_mult ... } }") \
  XX(INPUT, 1u << 4, "net-level input fields",                                                   \
     "the net-level input / input_dim / input_shape fields became an Input layer named \"input\", first") \
  XX(BATCHNORM, 1u << 5, "old BatchNorm param specs",                                            \
     "BatchNorm layers with three param specs got lr_mult 0 and decay_mult 0 in each")             \
  XX(SOLVER_TYPE, 1u << 6, "solver_type enum", "the solver_type enum became the type string")

enum {
#define XX(id, bit, name, what) DD_UPGRADE_##id = bit,
  DD_UPGRADE_FORMS(XX)
#undef XX
};

/* What an upgrade did. Zero-initialise it before the first call; calls add to it (a solver and
 * its nets share one). */
typedef struct {
  unsigned forms;  /* DD_UPGRADE_* bits */
  char notes[1024]; /* fields Caffe's upgrade drops, one per line ("layer \"x\": ..."); truncated */
  size_t notes_len;
} dd_upgrade_report;

/* Upgrades `net` in place (the steps above). `rep` may be NULL. Returns 0 (also when nothing
 * needed upgrading), DD_EINVAL with the reason in `err`, or DD_ENOMEM. On an error `net` is left
 * valid (freeable) but may be partly upgraded. */
int dd_net_upgrade(Caffe__NetParameter *net, dd_upgrade_report *rep, char *err, size_t errlen);

/* Upgrades `s` in place: solver_type to type, and its inline nets. Returns as dd_net_upgrade. */
int dd_solver_upgrade(Caffe__SolverParameter *s, dd_upgrade_report *rep, char *err, size_t errlen);

/* Writes the short names of the forms in `forms`, comma separated ("V1 layers, net-level input
 * fields"), into `buf` ("" when none). */
void dd_upgrade_forms_str(unsigned forms, char *buf, size_t len);

/* The type string of a V1 layer type (Caffe's UpgradeV1LayerType: CONVOLUTION -> "Convolution"),
 * "" for NONE, NULL for a value that is no V1 type. */
const char *dd_v1_layer_type_name(int type);

/* Why a layer type of the prototxt is refused: Python and WindowData (BVLC types distilld does
 * not run) and common types of Caffe forks (ConvolutionDepthwise, ...), with what to use instead.
 * NULL for any other type. */
const char *dd_refused_layer_type(const char *type);

/* Writes into `buf` a hint for the field `field` that the text parser found unknown in the Caffe
 * message `msg` (a short name such as "PoolingParameter"): for the fields Caffe forks add
 * (pooling_param.ceil_mode, ...) what it is and what to write in BVLC Caffe; for any other field
 * a sentence saying it is not in BVLC Caffe's schema. */
void dd_unknown_field_hint(const char *msg, const char *field, char *buf, size_t len);

#endif
