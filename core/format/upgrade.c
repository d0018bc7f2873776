/* Caffe's net and solver upgrades (see upgrade.h), over protobuf-c's descriptors: fields are
 * moved between the old and the new messages by name, so one generic mover (take_field) serves
 * the V1 layer, whose fields mostly keep their names, and the table of V0 fields below. */
#define _POSIX_C_SOURCE 200809L
#include "format/upgrade.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/dd_error.h"
#include "format/textformat_internal.h"

/* ---- generic field access ------------------------------------------------------------------ */

#define MEMBER(m, f, T) (*(T *)((char *)(m) + (f)->offset))
#define COUNT(m, f) (*(size_t *)((char *)(m) + (f)->quantifier_offset))
#define HAS(m, f) (*(protobuf_c_boolean *)((char *)(m) + (f)->quantifier_offset))

static const ProtobufCFieldDescriptor *field_of(const ProtobufCMessage *m, const char *name) {
  return protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
}

static int is_scalar(ProtobufCType t) {
  return t != PROTOBUF_C_TYPE_STRING && t != PROTOBUF_C_TYPE_BYTES && t != PROTOBUF_C_TYPE_MESSAGE;
}

/* True when field `f` of `m` is set (Caffe's has_X(), or a non-empty repeated field). */
static int present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  if (f->label == PROTOBUF_C_LABEL_REPEATED) return COUNT(m, f) > 0;
  if (f->type == PROTOBUF_C_TYPE_STRING) {
    const char *s = MEMBER(m, f, const char *);
    return s && s != (const char *)f->default_value;
  }
  if (f->type == PROTOBUF_C_TYPE_MESSAGE) return MEMBER(m, f, const void *) != NULL;
  if (f->label == PROTOBUF_C_LABEL_REQUIRED) return 1;
  return f->quantifier_offset ? HAS(m, f) != 0 : 0;
}

/* A scalar of any numeric type, as a double or an integer. */
typedef struct {
  int is_float;
  int64_t i;
  double d;
} scalar;

static scalar get_scalar(const void *p, ProtobufCType t) {
  scalar v = {0, 0, 0};
  switch (t) {
    case PROTOBUF_C_TYPE_FLOAT: v.is_float = 1, v.d = *(const float *)p; break;
    case PROTOBUF_C_TYPE_DOUBLE: v.is_float = 1, v.d = *(const double *)p; break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: v.i = *(const uint32_t *)p; break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: v.i = *(const int64_t *)p; break;
    case PROTOBUF_C_TYPE_BOOL: v.i = *(const protobuf_c_boolean *)p != 0; break;
    default: v.i = *(const int32_t *)p; break; /* int32, sint32, sfixed32, enum */
  }
  return v;
}

static void put_scalar(void *p, ProtobufCType t, scalar v) {
  int64_t i = v.is_float ? (int64_t)v.d : v.i;
  double d = v.is_float ? v.d : (double)v.i;
  switch (t) {
    case PROTOBUF_C_TYPE_FLOAT: *(float *)p = (float)d; break;
    case PROTOBUF_C_TYPE_DOUBLE: *(double *)p = d; break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: *(uint32_t *)p = (uint32_t)i; break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: *(int64_t *)p = i; break;
    case PROTOBUF_C_TYPE_BOOL: *(protobuf_c_boolean *)p = i != 0; break;
    default: *(int32_t *)p = (int32_t)i; break;
  }
}

/* Resets field `f` of `m` to absent (its default), freeing what it held. */
static void clear_field(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  if (f->label == PROTOBUF_C_LABEL_REPEATED) {
    void **arr = &MEMBER(m, f, void *);
    size_t n = COUNT(m, f);
    for (size_t k = 0; k < n; k++) {
      if (f->type == PROTOBUF_C_TYPE_STRING) free(((char **)*arr)[k]);
      else if (f->type == PROTOBUF_C_TYPE_MESSAGE) protobuf_c_message_free_unpacked(((ProtobufCMessage **)*arr)[k], NULL);
      else if (f->type == PROTOBUF_C_TYPE_BYTES) free(((ProtobufCBinaryData *)*arr)[k].data);
    }
    free(*arr);
    *arr = NULL;
    COUNT(m, f) = 0;
  } else if (f->type == PROTOBUF_C_TYPE_STRING) {
    char **s = &MEMBER(m, f, char *);
    if (*s && *s != (const char *)f->default_value) free(*s);
    *s = (char *)f->default_value;
  } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
    ProtobufCMessage **s = &MEMBER(m, f, ProtobufCMessage *);
    if (*s) protobuf_c_message_free_unpacked(*s, NULL);
    *s = NULL;
  } else if (is_scalar(f->type)) {
    size_t sz = dd__tf_elem_size(f);
    if (f->default_value) memcpy((char *)m + f->offset, f->default_value, sz);
    else memset((char *)m + f->offset, 0, sz);
    if (f->quantifier_offset) HAS(m, f) = 0;
  }
}

/* Whether the value of `fs` can move into `fd`: the same kind (numbers convert), the same
 * message type, and repeated only into repeated (a single value may go into a repeated one). */
static int compatible(const ProtobufCFieldDescriptor *fd, const ProtobufCFieldDescriptor *fs) {
  if (fs->label == PROTOBUF_C_LABEL_REPEATED && fd->label != PROTOBUF_C_LABEL_REPEATED) return 0;
  if (is_scalar(fs->type) != is_scalar(fd->type)) return 0;
  if (is_scalar(fs->type)) return fs->label != PROTOBUF_C_LABEL_REPEATED || fs->type == fd->type;
  if (fs->type != fd->type) return 0;
  return fs->type != PROTOBUF_C_TYPE_MESSAGE || fs->descriptor == fd->descriptor;
}

/* Moves field `fs` of `src` into field `fd` of `dst` (compatible() must hold), as Caffe's
 * set_X / add_X / CopyFrom do: a single value replaces dst's, a repeated one is appended to
 * dst's; `src`'s field is left absent. Nothing happens when `fs` is absent. */
static int take_field(ProtobufCMessage *dst, const ProtobufCFieldDescriptor *fd, ProtobufCMessage *src,
                      const ProtobufCFieldDescriptor *fs) {
  if (!present(src, fs)) return 0;
  if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
    size_t sz = dd__tf_elem_size(fd), have = COUNT(dst, fd);
    size_t add = fs->label == PROTOBUF_C_LABEL_REPEATED ? COUNT(src, fs) : 1;
    void *na = realloc(MEMBER(dst, fd, void *), (have + add) * sz);
    if (!na) return DD_ENOMEM;
    MEMBER(dst, fd, void *) = na;
    char *at = (char *)na + have * sz;
    if (fs->label == PROTOBUF_C_LABEL_REPEATED) { /* the same type: move the elements */
      memcpy(at, MEMBER(src, fs, void *), add * sz);
      free(MEMBER(src, fs, void *));
      MEMBER(src, fs, void *) = NULL;
      COUNT(src, fs) = 0;
    } else if (is_scalar(fs->type)) {
      put_scalar(at, fd->type, get_scalar((char *)src + fs->offset, fs->type));
      clear_field(src, fs);
    } else { /* a string or message pointer */
      memcpy(at, (char *)src + fs->offset, sz);
      MEMBER(src, fs, void *) = fs->type == PROTOBUF_C_TYPE_STRING ? (void *)fs->default_value : NULL;
    }
    COUNT(dst, fd) = have + add;
    return 0;
  }
  if (is_scalar(fs->type)) {
    put_scalar((char *)dst + fd->offset, fd->type, get_scalar((char *)src + fs->offset, fs->type));
    if (fd->quantifier_offset) HAS(dst, fd) = 1;
    clear_field(src, fs);
    return 0;
  }
  clear_field(dst, fd);
  MEMBER(dst, fd, void *) = MEMBER(src, fs, void *);
  MEMBER(src, fs, void *) = fs->type == PROTOBUF_C_TYPE_STRING ? (void *)fs->default_value : NULL;
  return 0;
}

/* take_field by field names. */
static int take_named(ProtobufCMessage *dst, const char *dname, ProtobufCMessage *src, const char *sname) {
  const ProtobufCFieldDescriptor *fd = field_of(dst, dname), *fs = field_of(src, sname);
  DD_ASSERT(fd && fs && compatible(fd, fs));
  return take_field(dst, fd, src, fs);
}

/* The sub-message in field `name` of `m`, created empty when absent; NULL when out of memory. */
static ProtobufCMessage *sub_message(ProtobufCMessage *m, const char *name) {
  const ProtobufCFieldDescriptor *f = field_of(m, name);
  DD_ASSERT(f && f->type == PROTOBUF_C_TYPE_MESSAGE && f->label != PROTOBUF_C_LABEL_REPEATED);
  ProtobufCMessage **s = &MEMBER(m, f, ProtobufCMessage *);
  if (!*s) {
    const ProtobufCMessageDescriptor *d = f->descriptor;
    *s = malloc(d->sizeof_message);
    if (*s) protobuf_c_message_init(d, *s);
  }
  return *s;
}

static void *new_message(const ProtobufCMessageDescriptor *d) {
  ProtobufCMessage *m = malloc(d->sizeof_message);
  if (m) protobuf_c_message_init(d, m);
  return m;
}

static char *set_string(char **slot, const char *def, const char *v) {
  char *c = strdup(v);
  if (!c) return NULL;
  if (*slot && *slot != def) free(*slot);
  *slot = c;
  return c;
}

static void note(dd_upgrade_report *rep, const char *fmt, ...) {
  if (!rep) return;
  size_t cap = sizeof rep->notes;
  if (rep->notes_len + 1 >= cap) return;
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(rep->notes + rep->notes_len, cap - rep->notes_len, fmt, ap);
  va_end(ap);
  if (w < 0) return;
  rep->notes_len += (size_t)w < cap - rep->notes_len ? (size_t)w : cap - 1 - rep->notes_len;
  if (rep->notes_len + 1 < cap) rep->notes[rep->notes_len++] = '\n', rep->notes[rep->notes_len] = '\0';
}

static const char *nm(const char *s) { return s ? s : ""; }

/* ---- V1 layer types ------------------------------------------------------------------------ */

/* V1 layer types and their type strings (Caffe's UpgradeV1LayerType). */
#define DD_V1_TYPES(XX)                                                                             \
  XX(ABSVAL, "AbsVal") XX(ACCURACY, "Accuracy") XX(ARGMAX, "ArgMax") XX(BNLL, "BNLL")               \
  XX(CONCAT, "Concat") XX(CONTRASTIVE_LOSS, "ContrastiveLoss") XX(CONVOLUTION, "Convolution")       \
  XX(DECONVOLUTION, "Deconvolution") XX(DATA, "Data") XX(DROPOUT, "Dropout")                        \
  XX(DUMMY_DATA, "DummyData") XX(EUCLIDEAN_LOSS, "EuclideanLoss") XX(ELTWISE, "Eltwise")            \
  XX(EXP, "Exp") XX(FLATTEN, "Flatten") XX(HDF5_DATA, "HDF5Data") XX(HDF5_OUTPUT, "HDF5Output")     \
  XX(HINGE_LOSS, "HingeLoss") XX(IM2COL, "Im2col") XX(IMAGE_DATA, "ImageData")                      \
  XX(INFOGAIN_LOSS, "InfogainLoss") XX(INNER_PRODUCT, "InnerProduct") XX(LRN, "LRN")                \
  XX(MEMORY_DATA, "MemoryData") XX(MULTINOMIAL_LOGISTIC_LOSS, "MultinomialLogisticLoss")            \
  XX(MVN, "MVN") XX(POOLING, "Pooling") XX(POWER, "Power") XX(RELU, "ReLU") XX(SIGMOID, "Sigmoid")  \
  XX(SIGMOID_CROSS_ENTROPY_LOSS, "SigmoidCrossEntropyLoss") XX(SILENCE, "Silence")                  \
  XX(SOFTMAX, "Softmax") XX(SOFTMAX_LOSS, "SoftmaxWithLoss") XX(SPLIT, "Split") XX(SLICE, "Slice")  \
  XX(TANH, "TanH") XX(WINDOW_DATA, "WindowData") XX(THRESHOLD, "Threshold")

const char *dd_v1_layer_type_name(int type) {
  switch (type) {
    case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__NONE: return "";
#define XX(e, s)                                    \
  case CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__##e: \
    return s;
      DD_V1_TYPES(XX)
#undef XX
    default: return NULL;
  }
}

/* ---- V0 -> V1 ------------------------------------------------------------------------------ */

/* V0 type strings and the V1 types Caffe's UpgradeV0LayerType gives them. */
static const struct {
  const char *v0;
  Caffe__V1LayerParameter__LayerType v1;
} v0_types[] = {
#define T(s, e) {s, CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__##e}
    T("accuracy", ACCURACY), T("bnll", BNLL), T("concat", CONCAT), T("conv", CONVOLUTION), T("data", DATA),
    T("dropout", DROPOUT), T("euclidean_loss", EUCLIDEAN_LOSS), T("flatten", FLATTEN), T("hdf5_data", HDF5_DATA),
    T("hdf5_output", HDF5_OUTPUT), T("im2col", IM2COL), T("images", IMAGE_DATA), T("infogain_loss", INFOGAIN_LOSS),
    T("innerproduct", INNER_PRODUCT), T("lrn", LRN), T("multinomial_logistic_loss", MULTINOMIAL_LOGISTIC_LOSS),
    T("pool", POOLING), T("relu", RELU), T("sigmoid", SIGMOID), T("softmax", SOFTMAX),
    T("softmax_loss", SOFTMAX_LOSS), T("split", SPLIT), T("tanh", TANH), T("window_data", WINDOW_DATA),
#undef T
};

/* Where each V0 field goes: into field `to` of the V1 sub-message named for the layer's V0 type
 * ("*": any type). A field set on a layer whose type is not listed is dropped with a note. */
typedef struct {
  const char *v0, *to;
  const char *where[5][2]; /* {V0 type, V1 sub-message} */
} v0_rule;

#define PAIR(a, b) {a, b}
#define CONV_IP {{"conv", "convolution_param"}, {"innerproduct", "inner_product_param"}}
#define CONV_POOL {{"conv", "convolution_param"}, {"pool", "pooling_param"}}
#define DATA4(extra) {{"data", "data_param"}, {"hdf5_data", "hdf5_data_param"}, {"images", "image_data_param"}, \
                      {"window_data", "window_data_param"}, extra}
static const v0_rule v0_rules[] = {
    {"num_output", "num_output", CONV_IP},
    {"biasterm", "bias_term", CONV_IP},
    {"weight_filler", "weight_filler", CONV_IP},
    {"bias_filler", "bias_filler", CONV_IP},
    {"pad", "pad", CONV_POOL},
    {"kernelsize", "kernel_size", CONV_POOL},
    {"group", "group", {{"conv", "convolution_param"}}},
    {"stride", "stride", CONV_POOL},
    {"pool", "pool", {{"pool", "pooling_param"}}},
    {"dropout_ratio", "dropout_ratio", {{"dropout", "dropout_param"}}},
    {"local_size", "local_size", {{"lrn", "lrn_param"}}},
    {"alpha", "alpha", {{"lrn", "lrn_param"}}},
    {"beta", "beta", {{"lrn", "lrn_param"}}},
    {"k", "k", {{"lrn", "lrn_param"}}},
    {"source", "source", DATA4(PAIR("infogain_loss", "infogain_loss_param"))},
    {"scale", "scale", {{"*", "transform_param"}}},
    {"meanfile", "mean_file", {{"*", "transform_param"}}},
    {"batchsize", "batch_size", DATA4(PAIR(NULL, NULL))},
    {"cropsize", "crop_size", {{"*", "transform_param"}}},
    {"mirror", "mirror", {{"*", "transform_param"}}},
    {"rand_skip", "rand_skip", {{"data", "data_param"}, {"images", "image_data_param"}}},
    {"shuffle_images", "shuffle", {{"images", "image_data_param"}}},
    {"new_height", "new_height", {{"images", "image_data_param"}}},
    {"new_width", "new_width", {{"images", "image_data_param"}}},
    {"concat_dim", "concat_dim", {{"concat", "concat_param"}}},
    {"det_fg_threshold", "fg_threshold", {{"window_data", "window_data_param"}}},
    {"det_bg_threshold", "bg_threshold", {{"window_data", "window_data_param"}}},
    {"det_fg_fraction", "fg_fraction", {{"window_data", "window_data_param"}}},
    {"det_context_pad", "context_pad", {{"window_data", "window_data_param"}}},
    {"det_crop_mode", "crop_mode", {{"window_data", "window_data_param"}}},
    {"hdf5_output_param", "hdf5_output_param", {{"hdf5_output", NULL}}},
};

/* Converts the V0 layer inside `*slot` (layers[idx]) into a new V1 layer, as Caffe's
 * UpgradeV0LayerParameter does: bottom and top kept, the V0 settings moved into the V1
 * sub-messages, everything else of the outer block dropped. */
static int v0_layer_upgrade(Caffe__V1LayerParameter **slot, size_t idx, dd_upgrade_report *rep, char *err,
                            size_t errlen) {
  Caffe__V1LayerParameter *old = *slot, *nu = new_message(&caffe__v1_layer_parameter__descriptor);
  Caffe__V0LayerParameter *v0 = old->layer;
  if (!nu) return DD_ENOMEM;
  const char *type = v0->type ? v0->type : "";
  int r = 0;
  if (v0->type) {
    size_t k = 0;
    while (k < sizeof v0_types / sizeof v0_types[0] && strcmp(v0_types[k].v0, type)) k++;
    if (k == sizeof v0_types / sizeof v0_types[0]) {
      r = dd_errorf(DD_EINVAL, err, errlen,
                    "V0 layer \"%s\" (layers[%zu]) has type \"%s\", which no Caffe version knows (V0 types: "
                    "conv, pool, innerproduct, relu, lrn, data, images, softmax_loss, ...)",
                    nm(v0->name), idx, type);
      goto out;
    }
    nu->has_type = 1;
    nu->type = v0_types[k].v1;
  }
  ProtobufCMessage *N = &nu->base, *O = &old->base, *V = &v0->base;
  if ((r = take_named(N, "bottom", O, "bottom")) || (r = take_named(N, "top", O, "top")) ||
      (r = take_named(N, "name", V, "name")) || (r = take_named(N, "blobs", V, "blobs")) ||
      (r = take_named(N, "blobs_lr", V, "blobs_lr")) || (r = take_named(N, "weight_decay", V, "weight_decay")))
    goto out;
  for (size_t i = 0; i < sizeof v0_rules / sizeof v0_rules[0]; i++) {
    const v0_rule *ru = &v0_rules[i];
    const ProtobufCFieldDescriptor *fs = field_of(V, ru->v0);
    if (!present(V, fs)) continue;
    size_t w = 0;
    while (w < 5 && ru->where[w][0] && strcmp(ru->where[w][0], "*") && strcmp(ru->where[w][0], type)) w++;
    if (w == 5 || !ru->where[w][0]) {
      note(rep, "V0 layer \"%s\": field %s does not apply to type \"%s\"; dropped, as Caffe's upgrade drops it",
           nm(nu->name), ru->v0, type);
      continue;
    }
    ProtobufCMessage *dst = ru->where[w][1] ? sub_message(N, ru->where[w][1]) : N;
    if (!dst) {
      r = DD_ENOMEM;
      goto out;
    }
    if ((r = take_field(dst, field_of(dst, ru->to), V, fs))) goto out;
  }
out:
  if (r) {
    caffe__v1_layer_parameter__free_unpacked(nu, NULL);
    if (r == DD_ENOMEM) dd_errorf(r, err, errlen, "out of memory upgrading layer %zu", idx);
    return r;
  }
  caffe__v1_layer_parameter__free_unpacked(old, NULL);
  *slot = nu;
  return 0;
}

/* Blob name -> index of the last layer that wrote it (-1: a net input), open addressing. */
typedef struct {
  const char **key;
  long *val;
  size_t cap; /* a power of two */
} name_map;

static int map_init(name_map *m, size_t n) {
  m->cap = 16;
  while (m->cap < 2 * n + 16) m->cap *= 2;
  m->key = calloc(m->cap, sizeof *m->key);
  m->val = calloc(m->cap, sizeof *m->val);
  if (!m->key || !m->val) {
    free(m->key), free(m->val);
    return DD_ENOMEM;
  }
  return 0;
}

/* The slot of `k`: its value when present, else an empty slot (key NULL) where it belongs. */
static size_t map_slot(const name_map *m, const char *k) {
  uint64_t h = 1469598103934665603ull;
  for (const char *c = k; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
  size_t i = (size_t)h & (m->cap - 1);
  while (m->key[i] && strcmp(m->key[i], k)) i = (i + 1) & (m->cap - 1);
  return i;
}

static void map_put(name_map *m, const char *k, long v) {
  size_t i = map_slot(m, k);
  m->key[i] = k;
  m->val[i] = v;
}

/* Folds the V0 padding layers into the layers that read them (Caffe's UpgradeV0PaddingLayers):
 * the reader takes the padding layer's pad and its bottom; the padding layer goes. Layers are
 * the V1 wrappers of net->layers, their V0 layers inside. */
static int v0_fold_padding(Caffe__NetParameter *net, dd_upgrade_report *rep, char *err, size_t errlen) {
  size_t n = net->n_layers, tops = net->n_input, kept = 0;
  for (size_t i = 0; i < n; i++) tops += net->layers[i]->n_top;
  name_map m;
  if (map_init(&m, tops)) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory upgrading a V0 net");
  unsigned char *is_pad = calloc(n ? n : 1, 1);
  int r = is_pad ? 0 : DD_ENOMEM;
  for (size_t i = 0; i < net->n_input; i++) map_put(&m, net->input[i], -1);
  for (size_t i = 0; i < n && !r; i++) {
    Caffe__V1LayerParameter *l = net->layers[i];
    const char *type = l->layer && l->layer->type ? l->layer->type : "";
    const char *name = l->layer && l->layer->name ? l->layer->name : nm(l->name);
    is_pad[i] = !strcmp(type, "padding");
    for (size_t j = 0; j < l->n_bottom && !r; j++) {
      size_t s = map_slot(&m, l->bottom[j]);
      if (!m.key[s]) {
        r = dd_errorf(DD_EINVAL, err, errlen, "V0 layer \"%s\" (layers[%zu]): bottom \"%s\" is no net input and no top of an earlier layer",
                      name, i, l->bottom[j]);
        break;
      }
      if (m.val[s] < 0 || !is_pad[m.val[s]]) continue;
      const Caffe__V1LayerParameter *pad = net->layers[m.val[s]];
      if (strcmp(type, "conv") && strcmp(type, "pool"))
        r = dd_errorf(DD_EINVAL, err, errlen, "V0 layer \"%s\" (layers[%zu], type \"%s\") reads the padding layer \"%s\"; only conv and pool layers may (Caffe refuses this net too)",
                      name, i, type, nm(pad->layer->name));
      else if (l->n_bottom != 1 || pad->n_bottom != 1 || pad->n_top != 1)
        r = dd_errorf(DD_EINVAL, err, errlen, "V0 layer \"%s\" (layers[%zu]) reads the padding layer \"%s\": both must have one bottom, the padding layer one top",
                      name, i, nm(pad->layer->name));
      else if (!set_string(&l->bottom[j], NULL, pad->bottom[0]))
        r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory upgrading a V0 net");
      else {
        l->layer->has_pad = 1;
        l->layer->pad = pad->layer->pad;
      }
    }
    for (size_t t = 0; t < l->n_top && !r; t++) map_put(&m, l->top[t], (long)i);
  }
  free(m.key), free(m.val);
  if (r) {
    free(is_pad);
    return r;
  }
  for (size_t i = 0; i < n; i++) {
    if (is_pad[i]) {
      caffe__v1_layer_parameter__free_unpacked(net->layers[i], NULL);
      if (rep) rep->forms |= DD_UPGRADE_V0_PADDING;
    } else {
      net->layers[kept++] = net->layers[i];
    }
  }
  net->n_layers = kept;
  free(is_pad);
  return 0;
}

/* Step 1: V0 -> V1, when any layer holds a V0 layer. */
static int upgrade_v0(Caffe__NetParameter *net, dd_upgrade_report *rep, char *err, size_t errlen) {
  size_t any = 0;
  for (size_t i = 0; i < net->n_layers; i++) any += net->layers[i]->layer != NULL;
  if (!any) return 0;
  if (rep) rep->forms |= DD_UPGRADE_V0;
  int r = v0_fold_padding(net, rep, err, errlen);
  for (size_t i = 0; i < net->n_layers && !r; i++)
    if (net->layers[i]->layer) r = v0_layer_upgrade(&net->layers[i], i, rep, err, errlen);
  return r;
}

/* ---- step 2: the V1 data layers' transformation fields ------------------------------------- */

static int upgrade_data_transform(Caffe__NetParameter *net, dd_upgrade_report *rep, char *err, size_t errlen) {
  static const char *const fields[] = {"scale", "mean_file", "crop_size", "mirror"};
  for (size_t i = 0; i < net->n_layers; i++) {
    Caffe__V1LayerParameter *l = net->layers[i];
    ProtobufCMessage *p = NULL;
    if (l->type == CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__DATA) p = (ProtobufCMessage *)l->data_param;
    else if (l->type == CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__IMAGE_DATA) p = (ProtobufCMessage *)l->image_data_param;
    else if (l->type == CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__WINDOW_DATA) p = (ProtobufCMessage *)l->window_data_param;
    if (!p) continue;
    for (size_t k = 0; k < 4; k++) {
      if (!present(p, field_of(p, fields[k]))) continue;
      ProtobufCMessage *tp = sub_message(&l->base, "transform_param");
      if (!tp || take_named(tp, fields[k], p, fields[k]))
        return dd_errorf(DD_ENOMEM, err, errlen, "out of memory upgrading layer \"%s\"", nm(l->name));
      if (rep) rep->forms |= DD_UPGRADE_DATA_TRANSFORM;
    }
  }
  return 0;
}

/* ---- step 3: V1 -> current ----------------------------------------------------------------- */

/* The ParamSpec `i` of `lp`, created (with those before it) when absent; NULL when out of
 * memory. */
static Caffe__ParamSpec *param_spec(Caffe__LayerParameter *lp, size_t i) {
  if (i >= lp->n_param) {
    Caffe__ParamSpec **a = realloc(lp->param, (i + 1) * sizeof *a);
    if (!a) return NULL;
    lp->param = a;
    while (lp->n_param <= i) {
      if (!(a[lp->n_param] = new_message(&caffe__param_spec__descriptor))) return NULL;
      lp->n_param++;
    }
  }
  return lp->param[i];
}

/* Moves the V1 layer `v1` (layers[idx]) into the new layer `lp`: the fields of the same name and
 * type, then type, param names, blob_share_mode, blobs_lr and weight_decay into ParamSpecs. */
static int v1_layer_upgrade(Caffe__LayerParameter *lp, Caffe__V1LayerParameter *v1, size_t idx, char *err,
                            size_t errlen) {
  const ProtobufCMessageDescriptor *d = v1->base.descriptor;
  for (unsigned k = 0; k < d->n_fields; k++) {
    const ProtobufCFieldDescriptor *fs = &d->fields[k], *fd = field_of(&lp->base, fs->name);
    if (fd && compatible(fd, fs) && take_field(&lp->base, fd, &v1->base, fs)) goto oom;
  }
  if (v1->has_type) {
    const char *t = dd_v1_layer_type_name((int)v1->type);
    if (!t)
      return dd_errorf(DD_EINVAL, err, errlen, "V1 layer \"%s\" (layers[%zu]) has type %d, which is no V1 layer type",
                       nm(lp->name), idx, (int)v1->type);
    if (!set_string(&lp->type, NULL, t)) goto oom;
  }
  for (size_t i = 0; i < v1->n_param; i++) {
    Caffe__ParamSpec *ps = param_spec(lp, i);
    if (!ps) goto oom;
    ps->name = v1->param[i];
    v1->param[i] = NULL;
  }
  for (size_t i = 0; i < v1->n_blob_share_mode; i++) {
    Caffe__ParamSpec *ps = param_spec(lp, i);
    if (!ps) goto oom;
    int mode = (int)v1->blob_share_mode[i];
    if (mode != CAFFE__V1_LAYER_PARAMETER__DIM_CHECK_MODE__STRICT &&
        mode != CAFFE__V1_LAYER_PARAMETER__DIM_CHECK_MODE__PERMISSIVE)
      return dd_errorf(DD_EINVAL, err, errlen, "V1 layer \"%s\" (layers[%zu]): blob_share_mode %d is neither STRICT nor PERMISSIVE",
                       nm(lp->name), idx, mode);
    ps->has_share_mode = 1;
    ps->share_mode = mode == CAFFE__V1_LAYER_PARAMETER__DIM_CHECK_MODE__STRICT ? CAFFE__PARAM_SPEC__DIM_CHECK_MODE__STRICT
                                                                              : CAFFE__PARAM_SPEC__DIM_CHECK_MODE__PERMISSIVE;
  }
  for (size_t i = 0; i < v1->n_blobs_lr; i++) {
    Caffe__ParamSpec *ps = param_spec(lp, i);
    if (!ps) goto oom;
    ps->has_lr_mult = 1;
    ps->lr_mult = v1->blobs_lr[i];
  }
  for (size_t i = 0; i < v1->n_weight_decay; i++) {
    Caffe__ParamSpec *ps = param_spec(lp, i);
    if (!ps) goto oom;
    ps->has_decay_mult = 1;
    ps->decay_mult = v1->weight_decay[i];
  }
  return 0;
oom:
  return dd_errorf(DD_ENOMEM, err, errlen, "out of memory upgrading layer %zu", idx);
}

static int upgrade_v1(Caffe__NetParameter *net, dd_upgrade_report *rep, char *err, size_t errlen) {
  if (!net->n_layers) return 0;
  if (net->n_layer)
    return dd_errorf(DD_EINVAL, err, errlen,
                     "net \"%s\" has both current-format `layer` entries (%zu) and V1 `layers` entries (%zu); "
                     "Caffe refuses to upgrade such a net too: write every layer as layer { type: \"...\" }",
                     nm(net->name), net->n_layer, net->n_layers);
  if (rep) rep->forms |= DD_UPGRADE_V1;
  Caffe__LayerParameter **a = calloc(net->n_layers, sizeof *a);
  if (!a) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory upgrading a V1 net");
  net->layer = a;
  int r = 0;
  for (size_t i = 0; i < net->n_layers && !r; i++) {
    if (!(a[i] = new_message(&caffe__layer_parameter__descriptor))) {
      r = dd_errorf(DD_ENOMEM, err, errlen, "out of memory upgrading a V1 net");
      break;
    }
    net->n_layer = i + 1;
    r = v1_layer_upgrade(a[i], net->layers[i], i, err, errlen);
  }
  if (r) { /* a valid net either way: the layers not upgraded are still in `layers` */
    for (size_t i = 0; i < net->n_layer; i++) caffe__layer_parameter__free_unpacked(a[i], NULL);
    free(a);
    net->layer = NULL;
    net->n_layer = 0;
    return r;
  }
  for (size_t i = 0; i < net->n_layers; i++) caffe__v1_layer_parameter__free_unpacked(net->layers[i], NULL);
  free(net->layers);
  net->layers = NULL;
  net->n_layers = 0;
  return 0;
}

/* ---- step 4: the net-level input fields ---------------------------------------------------- */

/* Builds the Input layer for the net's input fields into `lp`. */
static int input_layer(Caffe__LayerParameter *lp, Caffe__NetParameter *net, char *err, size_t errlen) {
  Caffe__InputParameter *ip = new_message(&caffe__input_parameter__descriptor);
  if (!ip || !set_string(&lp->name, NULL, "input") || !set_string(&lp->type, NULL, "Input")) goto oom;
  lp->input_param = ip;
  size_t n = net->n_input;
  lp->top = calloc(n, sizeof *lp->top);
  ip->shape = calloc(n, sizeof *ip->shape);
  if (!lp->top || !ip->shape) goto oom;
  for (size_t i = 0; i < n; i++) {
    lp->top[i] = net->input[i];
    net->input[i] = NULL;
    lp->n_top = i + 1;
    if (net->n_input_shape) {
      ip->shape[i] = net->input_shape[i];
      net->input_shape[i] = NULL;
    } else {
      Caffe__BlobShape *s = new_message(&caffe__blob_shape__descriptor);
      if (!s) goto oom;
      ip->shape[i] = s;
      if (!(s->dim = malloc(4 * sizeof *s->dim))) goto oom;
      for (size_t k = 0; k < 4; k++) s->dim[k] = net->input_dim[4 * i + k];
      s->n_dim = 4;
    }
    ip->n_shape = i + 1;
  }
  return 0;
oom:
  if (ip && !lp->input_param) caffe__input_parameter__free_unpacked(ip, NULL);
  return dd_errorf(DD_ENOMEM, err, errlen, "out of memory upgrading the net's input fields");
}

/* Caffe's UpgradeNetInput: `input` with `input_shape` (one per input) or `input_dim` (four per
 * input) becomes an Input layer named "input", put first; `input` alone (old .caffemodel files)
 * is dropped. */
static int upgrade_input(Caffe__NetParameter *net, dd_upgrade_report *rep, char *err, size_t errlen) {
  if (!net->n_input) return 0;
  if (rep) rep->forms |= DD_UPGRADE_INPUT;
  if (net->n_input_shape || net->n_input_dim) {
    if (net->n_input_shape && net->n_input_shape < net->n_input)
      return dd_errorf(DD_EINVAL, err, errlen, "net \"%s\" has %zu inputs but %zu input_shape entries (one per input)",
                       nm(net->name), net->n_input, net->n_input_shape);
    if (!net->n_input_shape && net->n_input_dim < 4 * net->n_input)
      return dd_errorf(DD_EINVAL, err, errlen,
                       "net \"%s\" has %zu inputs but %zu input_dim values (four per input: num, channels, height, width)",
                       nm(net->name), net->n_input, net->n_input_dim);
    if ((net->n_input_shape ? net->n_input_shape : net->n_input_dim / 4) > net->n_input)
      note(rep, "net \"%s\": %s entries beyond the %zu inputs are ignored, as Caffe ignores them", nm(net->name),
           net->n_input_shape ? "input_shape" : "input_dim", net->n_input);
    Caffe__LayerParameter *lp = new_message(&caffe__layer_parameter__descriptor);
    Caffe__LayerParameter **a = realloc(net->layer, (net->n_layer + 1) * sizeof *a);
    if (a) net->layer = a;
    if (!lp || !a) {
      free(lp);
      return dd_errorf(DD_ENOMEM, err, errlen, "out of memory upgrading the net's input fields");
    }
    int r = input_layer(lp, net, err, errlen);
    if (r) {
      caffe__layer_parameter__free_unpacked(lp, NULL);
      return r;
    }
    memmove(a + 1, a, net->n_layer * sizeof *a);
    a[0] = lp;
    net->n_layer++;
  }
  const ProtobufCMessage *m = &net->base;
  clear_field(&net->base, field_of(m, "input"));
  clear_field(&net->base, field_of(m, "input_shape"));
  clear_field(&net->base, field_of(m, "input_dim"));
  return 0;
}

/* ---- step 5: BatchNorm's three param specs ------------------------------------------------- */

static void upgrade_batch_norm(Caffe__NetParameter *net, dd_upgrade_report *rep) {
  for (size_t i = 0; i < net->n_layer; i++) {
    Caffe__LayerParameter *lp = net->layer[i];
    if (!lp->type || strcmp(lp->type, "BatchNorm") || lp->n_param != 3) continue;
    int changed = 0;
    for (size_t k = 0; k < 3; k++) {
      Caffe__ParamSpec *ps = lp->param[k];
      changed |= !ps->has_lr_mult || ps->lr_mult != 0 || !ps->has_decay_mult || ps->decay_mult != 0;
      ps->has_lr_mult = ps->has_decay_mult = 1;
      ps->lr_mult = ps->decay_mult = 0;
    }
    /* recorded only when it changed something: current nets often spell out the zeros */
    if (rep && changed) rep->forms |= DD_UPGRADE_BATCHNORM;
  }
}

/* ---- nets and solvers ---------------------------------------------------------------------- */

int dd_net_upgrade(Caffe__NetParameter *net, dd_upgrade_report *rep, char *err, size_t errlen) {
  int r;
  if (net->n_layers && net->n_layer)
    return dd_errorf(DD_EINVAL, err, errlen,
                     "net \"%s\" has both current-format `layer` entries (%zu) and V1 `layers` entries (%zu); "
                     "Caffe refuses to upgrade such a net too: write every layer as layer { type: \"...\" }",
                     nm(net->name), net->n_layer, net->n_layers);
  if ((r = upgrade_v0(net, rep, err, errlen))) return r;
  if ((r = upgrade_data_transform(net, rep, err, errlen))) return r;
  if ((r = upgrade_v1(net, rep, err, errlen))) return r;
  if ((r = upgrade_input(net, rep, err, errlen))) return r;
  upgrade_batch_norm(net, rep);
  return 0;
}

int dd_solver_upgrade(Caffe__SolverParameter *s, dd_upgrade_report *rep, char *err, size_t errlen) {
  if (s->has_solver_type) {
    static const char *const names[] = {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"};
    const ProtobufCFieldDescriptor *ft = field_of(&s->base, "type");
    if (present(&s->base, ft))
      return dd_errorf(DD_EINVAL, err, errlen,
                       "the solver gives both solver_type (the old enum) and type (the string); Caffe refuses that "
                       "too: keep only type: \"%s\"", s->type);
    if ((int)s->solver_type < 0 || (size_t)s->solver_type >= sizeof names / sizeof names[0])
      return dd_errorf(DD_EINVAL, err, errlen, "solver_type %d is no SolverType", (int)s->solver_type);
    if (!set_string(&s->type, ft->default_value, names[s->solver_type]))
      return dd_errorf(DD_ENOMEM, err, errlen, "out of memory upgrading the solver");
    clear_field(&s->base, field_of(&s->base, "solver_type"));
    if (rep) rep->forms |= DD_UPGRADE_SOLVER_TYPE;
  }
  static const char *const where[] = {"net_param", "train_net_param"};
  Caffe__NetParameter *nets[2] = {s->net_param, s->train_net_param};
  char sub[768];
  for (size_t i = 0; i < 2 + s->n_test_net_param; i++) {
    Caffe__NetParameter *n = i < 2 ? nets[i] : s->test_net_param[i - 2];
    int r = n ? dd_net_upgrade(n, rep, sub, sizeof sub) : 0;
    if (r) {
      if (i < 2) return dd_errorf(r, err, errlen, "%s: %s", where[i], sub);
      return dd_errorf(r, err, errlen, "test_net_param[%zu]: %s", i - 2, sub);
    }
  }
  return 0;
}

void dd_upgrade_forms_str(unsigned forms, char *buf, size_t len) {
  size_t k = 0;
  if (len) buf[0] = '\0';
#define XX(id, bit, name, what)                                                         \
  if ((forms & (bit)) && k < len) {                                                     \
    int w = snprintf(buf + k, len - k, "%s%s", k ? ", " : "", name);                    \
    k = w < 0 ? len : k + (size_t)w;                                                    \
  }
  DD_UPGRADE_FORMS(XX)
#undef XX
}
