/* Tests of core/caffe_io: the Caffe reference weights read and written back byte for byte,
 * round trips of every binary format, truncation at every byte, the blob checks, V1 nets in
 * binary (readable) and text (refused), and the messages for files that are missing, empty, a
 * directory, or of the wrong kind. Temporary files live in a mkdtemp directory removed at the
 * end. The wire-format walker on hand-made buffers is tested in test_caffe_io_wire.c. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format/caffe_io.h"
#include "base/dd_error.h"
#include "format/fileio.h"
#include "test.h"
#include "test_files.h"
#include "test_nets.h"

#define REF_DIR DD_TEST_DATA "/caffe-reference"
#define INIT_MODEL REF_DIR "/resblock/init.caffemodel"

static char tmpdir[64];

/* "TMPDIR/name" in a static ring of buffers (enough for the few paths a test holds at once). */
static const char *tmp_path(const char *name) {
  static char bufs[8][512];
  static int next;
  char *b = bufs[next++ % 8];
  snprintf(b, sizeof bufs[0], "%s/%.400s", tmpdir, name);
  return b;
}

static int write_text(const char *path, const char *text) { return test_write_bytes(path, text, strlen(text)); }

static int is_dd_error(int r) { return r == 0 || (r < 0 && r >= DD_ENOTFOUND); }

/* ---- builders for messages the tests construct----------------------------------------------- */

/* A blob with `nd` dims in `shape` (NULL dims: no shape) and `n` data values 0.5*i. Fields point
 * into the caller's arrays. */
typedef struct {
  Caffe__BlobProto b;
  Caffe__BlobShape s;
  int64_t dims[DD_MAX_DIMS + 2];
  float data[64];
} test_blob;

static void blob_init(test_blob *t, int nd, const int64_t *dims, size_t n) {
  caffe__blob_proto__init(&t->b);
  caffe__blob_shape__init(&t->s);
  if (dims) {
    memcpy(t->dims, dims, (size_t)nd * sizeof *dims);
    t->s.n_dim = (size_t)nd;
    t->s.dim = t->dims;
    t->b.shape = &t->s;
  }
  for (size_t i = 0; i < n && i < 64; i++) t->data[i] = 0.5f * (float)i - 3.0f;
  t->b.n_data = n;
  t->b.data = t->data;
}

/* ---- (1) the Caffe reference weights--------------------------------------------------------- */

typedef struct {
  const char *name, *type;
  int n_blobs;
  const char *shapes[3]; /* "6x3x3x3" */
  const char *f32[3];    /* reference dump of each blob's data */
} expect_layer;

static const expect_layer init_layers[] = {
    {"data", "Input", 0, {0}, {0}},
    {"data_data_0_split", "Split", 0, {0}, {0}},
    {"label", "Input", 0, {0}, {0}},
    {"conv1", "Convolution", 1, {"6x3x3x3"}, {"conv1.0"}},
    {"bn1", "BatchNorm", 3, {"6", "6", "1"}, {"bn1.0", "bn1.1", "bn1.2"}},
    {"scale1", "Scale", 2, {"6", "6"}, {"scale1.0", "scale1.1"}},
    {"relu1", "ReLU", 0, {0}, {0}},
    {"conv2", "Convolution", 1, {"6x6x3x3"}, {"conv2.0"}},
    {"proj", "Convolution", 2, {"6x3x1x1", "6"}, {"proj.0", "proj.1"}},
    {"sum", "Eltwise", 0, {0}, {0}},
    {"pool1", "Pooling", 0, {0}, {0}},
    {"gpool", "Pooling", 0, {0}, {0}},
    {"fc", "InnerProduct", 2, {"7x6", "7"}, {"fc.0", "fc.1"}},
    {"loss", "SoftmaxWithLoss", 0, {0}, {0}},
};

static void shape_str(const Caffe__BlobProto *b, char *out, size_t n) {
  int64_t d[DD_MAX_DIMS];
  int nd = dd_blob_proto_shape(b, d);
  size_t k = 0;
  out[0] = '\0';
  for (int i = 0; i < nd && k < n; i++)
    k += (size_t)snprintf(out + k, n - k, "%s%lld", i ? "x" : "", (long long)d[i]);
}

static void test_reference_caffemodel(void) {
  char err[1024];
  Caffe__NetParameter *net = NULL;
  int r = dd_caffemodel_read(&net, INIT_MODEL, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  REQUIRE(r == 0 && net);
  CHECK(net->name && strcmp(net->name, "reference_resblock") == 0);
  CHECK(net->n_layers == 0);
  size_t n = sizeof init_layers / sizeof init_layers[0];
  CHECK(net->n_layer == n);

  dd_weight_layer *w = NULL;
  size_t nw = 0;
  CHECK(dd_weight_layers(&w, &nw, net, err, sizeof err) == 0);
  CHECK(nw == n);
  for (size_t i = 0; i < n && i < nw; i++) {
    const expect_layer *e = &init_layers[i];
    CHECKF(strcmp(w[i].name, e->name) == 0, "layer %zu: %s, expected %s", i, w[i].name, e->name);
    CHECKF(strcmp(w[i].type, e->type) == 0, "layer %s: type %s", e->name, w[i].type);
    CHECKF(w[i].n_blobs == (size_t)e->n_blobs, "layer %s: %zu blobs", e->name, w[i].n_blobs);
    for (int j = 0; j < e->n_blobs && (size_t)j < w[i].n_blobs; j++) {
      char s[64];
      shape_str(w[i].blobs[j], s, sizeof s);
      CHECKF(strcmp(s, e->shapes[j]) == 0, "layer %s blob %d: shape %s, expected %s", e->name, j,
             s, e->shapes[j]);
      /* The values are Caffe's own dump of the same parameters, bit for bit. */
      char path[256], *ref = NULL;
      size_t len = 0;
      snprintf(path, sizeof path, REF_DIR "/resblock/init/param_data__%s.f32", e->f32[j]);
      REQUIRE_OK(dd_read_file(&ref, &len, path, err, sizeof err), err);
      CHECKF(len == w[i].blobs[j]->n_data * sizeof(float) &&
                 memcmp(ref, w[i].blobs[j]->data, len) == 0,
             "layer %s blob %d differs from %s", e->name, j, path);
      free(ref);
    }
  }
  free(w);

  /* Written back, the file is the same bytes: protobuf-c packs fields in field-number order, as
   * Caffe's C++ protobuf does, every field in this file is in our schema (no unknown fields to
   * move to the end), and floats are packed arrays in both. */
  const char *out = tmp_path("init_copy.caffemodel");
  r = dd_caffemodel_write(net, out, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  char *a = NULL, *b = NULL;
  size_t alen = 0, blen = 0;
  REQUIRE_OK(dd_read_file(&a, &alen, INIT_MODEL, err, sizeof err), err);
  REQUIRE_OK(dd_read_file(&b, &blen, out, err, sizeof err), err);
  CHECKF(alen == blen && memcmp(a, b, alen) == 0, "round trip differs: %zu vs %zu bytes", alen,
         blen);
  free(a);
  free(b);
  protobuf_c_message_free_unpacked(&net->base, NULL);

  /* The other two reference snapshots read and pass the checks as well. */
  const char *others[] = {REF_DIR "/resblock/after_sgd_step.caffemodel",
                          REF_DIR "/resblock/after_bn_3pass.caffemodel"};
  for (size_t i = 0; i < 2; i++) {
    r = dd_caffemodel_read(&net, others[i], err, sizeof err);
    CHECKF(r == 0, "%s", err);
    if (r == 0) protobuf_c_message_free_unpacked(&net->base, NULL);
  }
}

/* ---- (2) a constructed net, round trip------------------------------------------------------ */

static void test_constructed_roundtrip(void) {
  char err[1024];
  Caffe__NetParameter net;
  caffe__net_parameter__init(&net);
  net.name = "tiny";
  net.has_force_backward = 1;
  net.force_backward = 1;
  char *inputs[] = {"data"};
  net.n_input = 1;
  net.input = inputs;

  Caffe__LayerParameter conv, ip;
  caffe__layer_parameter__init(&conv);
  caffe__layer_parameter__init(&ip);
  conv.name = "conv";
  conv.type = "Convolution";
  char *cb[] = {"data"}, *ct[] = {"conv"}, *it[] = {"ip"};
  conv.n_bottom = 1;
  conv.bottom = cb;
  conv.n_top = 1;
  conv.top = ct;
  Caffe__ConvolutionParameter cp;
  caffe__convolution_parameter__init(&cp);
  cp.has_num_output = 1;
  cp.num_output = 2;
  uint32_t ks[] = {3};
  cp.n_kernel_size = 1;
  cp.kernel_size = ks;
  conv.convolution_param = &cp;
  Caffe__ParamSpec ps;
  caffe__param_spec__init(&ps);
  ps.has_lr_mult = 1;
  ps.lr_mult = 2.0f;
  Caffe__ParamSpec *pss[] = {&ps};
  conv.n_param = 1;
  conv.param = pss;
  test_blob w, bias, ipw;
  blob_init(&w, 4, (int64_t[]){2, 1, 3, 3}, 18);
  blob_init(&bias, 1, (int64_t[]){2}, 2);
  Caffe__BlobProto *cblobs[] = {&w.b, &bias.b};
  conv.n_blobs = 2;
  conv.blobs = cblobs;

  ip.name = "ip";
  ip.type = "InnerProduct";
  ip.n_bottom = 1;
  ip.bottom = ct;
  ip.n_top = 1;
  ip.top = it;
  blob_init(&ipw, 2, (int64_t[]){3, 4}, 12);
  /* Double-precision values instead of floats, as Caffe writes for Dtype=double. */
  double dd[12];
  for (int i = 0; i < 12; i++) dd[i] = 1.0 / (i + 1);
  ipw.b.n_data = 0;
  ipw.b.n_double_data = 12;
  ipw.b.double_data = dd;
  Caffe__BlobProto *iblobs[] = {&ipw.b};
  ip.n_blobs = 1;
  ip.blobs = iblobs;

  Caffe__LayerParameter *layers[] = {&conv, &ip};
  net.n_layer = 2;
  net.layer = layers;

  size_t len1;
  uint8_t *p1 = test_pack(&net.base, &len1);
  REQUIRE(p1);
  const char *path = tmp_path("tiny.caffemodel");
  int r = dd_caffemodel_write(&net, path, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  char *file = NULL;
  size_t flen = 0;
  REQUIRE_OK(dd_read_file(&file, &flen, path, err, sizeof err), err);
  CHECK(flen == len1 && memcmp(file, p1, len1) == 0);
  free(file);

  Caffe__NetParameter *back = NULL;
  r = dd_caffemodel_read(&back, path, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  REQUIRE(r == 0);
  size_t len2;
  uint8_t *p2 = test_pack(&back->base, &len2);
  CHECK(p2 && len2 == len1 && memcmp(p1, p2, len1) == 0);
  CHECK(back->n_layer == 2 && strcmp(back->layer[1]->name, "ip") == 0);
  CHECK(back->layer[0]->convolution_param && back->layer[0]->convolution_param->num_output == 2);
  CHECK(back->layer[0]->n_param == 1 && back->layer[0]->param[0]->lr_mult == 2.0f);
  CHECK(back->layer[1]->blobs[0]->n_double_data == 12 &&
        back->layer[1]->blobs[0]->double_data[2] == 1.0 / 3);
  free(p1);
  free(p2);
  protobuf_c_message_free_unpacked(&back->base, NULL);

  /* The generic reader gives the same message. */
  ProtobufCMessage *m = NULL;
  r = dd_proto_read_binary(&m, &caffe__net_parameter__descriptor, path, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- (3) .binaryproto------------------------------------------------------------------------ */

static void test_binaryproto(void) {
  char err[1024];
  /* Current format: shape, data and diff. */
  test_blob t;
  blob_init(&t, 3, (int64_t[]){2, 3, 4}, 24);
  float diff[24];
  for (int i = 0; i < 24; i++) diff[i] = -(float)i;
  t.b.n_diff = 24;
  t.b.diff = diff;
  const char *path = tmp_path("mean.binaryproto");
  int r = dd_binaryproto_write(&t.b, path, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  Caffe__BlobProto *back = NULL;
  r = dd_binaryproto_read(&back, path, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  REQUIRE(back);
  int64_t d[DD_MAX_DIMS];
  CHECK(dd_blob_proto_shape(back, d) == 3 && d[0] == 2 && d[1] == 3 && d[2] == 4);
  CHECK(back->n_data == 24 && memcmp(back->data, t.data, sizeof(float) * 24) == 0);
  CHECK(back->n_diff == 24 && back->diff[23] == -23.0f);
  size_t l1, l2;
  uint8_t *p1 = test_pack(&t.b.base, &l1), *p2 = test_pack(&back->base, &l2);
  CHECK(p1 && p2 && l1 == l2 && memcmp(p1, p2, l1) == 0);
  free(p1);
  free(p2);
  protobuf_c_message_free_unpacked(&back->base, NULL);

  /* Legacy 4-D shape (a mean file as old Caffe wrote it). */
  test_blob lg;
  blob_init(&lg, 0, NULL, 12);
  lg.b.has_num = lg.b.has_channels = lg.b.has_height = lg.b.has_width = 1;
  lg.b.num = 1;
  lg.b.channels = 3;
  lg.b.height = 2;
  lg.b.width = 2;
  path = tmp_path("legacy.binaryproto");
  r = dd_binaryproto_write(&lg.b, path, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  r = dd_binaryproto_read(&back, path, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  REQUIRE(back);
  CHECK(dd_blob_proto_shape(back, d) == 4 && d[0] == 1 && d[1] == 3 && d[2] == 2 && d[3] == 2);
  CHECK(back->shape == NULL && back->has_num && back->channels == 3);
  p1 = test_pack(&lg.b.base, &l1);
  p2 = test_pack(&back->base, &l2);
  CHECK(p1 && p2 && l1 == l2 && memcmp(p1, p2, l1) == 0);
  free(p1);
  free(p2);
  protobuf_c_message_free_unpacked(&back->base, NULL);

  /* Caffe's rule: one legacy field is enough to use all four (absent ones 0), and it wins over
   * `shape`. */
  test_blob mix;
  blob_init(&mix, 1, (int64_t[]){5}, 5);
  mix.b.has_channels = 1;
  mix.b.channels = 5;
  CHECK(dd_blob_proto_shape(&mix.b, d) == 4 && d[0] == 0 && d[1] == 5 && d[2] == 0 && d[3] == 0);
  /* No shape at all: a scalar of one element. */
  test_blob sc;
  blob_init(&sc, 0, NULL, 1);
  CHECK(dd_blob_proto_shape(&sc.b, d) == 0);
  CHECK(dd_blob_proto_check(&sc.b, err, sizeof err) == 0);

  /* Legacy shape and data disagree: refused on write, and on read naming both counts. */
  lg.b.n_data = 11;
  r = dd_binaryproto_write(&lg.b, tmp_path("bad.binaryproto"), err, sizeof err);
  CHECK(r == DD_EINVAL);
  CHECK_CONTAINS(err, "bad.binaryproto");
  REQUIRE(dd_proto_write_binary(&lg.b.base, tmp_path("bad.binaryproto"), err, sizeof err) == 0);
  r = dd_binaryproto_read(&back, tmp_path("bad.binaryproto"), err, sizeof err);
  CHECK(r == DD_ECORRUPT && back == NULL);
  CHECK_CONTAINS(err, "11 data values");
  CHECK_CONTAINS(err, "12 elements");
  CHECK_CONTAINS(err, "1x3x2x2");
}

/* ---- (4) .solverstate------------------------------------------------------------------------ */

static void test_solverstate(void) {
  char err[1024];
  Caffe__SolverState st;
  caffe__solver_state__init(&st);
  st.has_iter = 1;
  st.iter = 1234;
  st.learned_net = "snap_iter_1234.caffemodel";
  st.has_current_step = 1;
  st.current_step = 2;
  test_blob h0, h1, h2;
  blob_init(&h0, 4, (int64_t[]){6, 3, 3, 3}, 0); /* filled below: 162 values */
  float big[162];
  for (int i = 0; i < 162; i++) big[i] = (float)i * 1e-3f;
  h0.b.n_data = 162;
  h0.b.data = big;
  blob_init(&h1, 1, (int64_t[]){6}, 6);
  blob_init(&h2, 2, (int64_t[]){7, 6}, 0);
  float h2d[42] = {0};
  h2.b.n_data = 42;
  h2.b.data = h2d;
  Caffe__BlobProto *hist[] = {&h0.b, &h1.b, &h2.b};
  st.n_history = 3;
  st.history = hist;

  const char *path = tmp_path("snap.solverstate");
  int r = dd_solverstate_write(&st, path, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  Caffe__SolverState *back = NULL;
  r = dd_solverstate_read(&back, path, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  REQUIRE(back);
  CHECK(back->iter == 1234 && back->current_step == 2);
  CHECK(back->learned_net && strcmp(back->learned_net, st.learned_net) == 0);
  CHECK(back->n_history == 3 && back->history[0]->n_data == 162 &&
        back->history[0]->data[161] == big[161]);
  size_t l1, l2;
  uint8_t *p1 = test_pack(&st.base, &l1), *p2 = test_pack(&back->base, &l2);
  CHECK(p1 && p2 && l1 == l2 && memcmp(p1, p2, l1) == 0);
  free(p1);
  free(p2);
  protobuf_c_message_free_unpacked(&back->base, NULL);

  /* A history blob that disagrees with its shape. */
  h1.b.n_data = 5;
  CHECK(dd_solverstate_write(&st, tmp_path("bad.solverstate"), err, sizeof err) == DD_EINVAL);
  REQUIRE(dd_proto_write_binary(&st.base, tmp_path("bad.solverstate"), err, sizeof err) == 0);
  r = dd_solverstate_read(&back, tmp_path("bad.solverstate"), err, sizeof err);
  CHECK(r == DD_ECORRUPT && back == NULL);
  CHECK_CONTAINS(err, "history blob 1");
  CHECK_CONTAINS(err, "5 data values");
}

/* ---- (5) truncation-------------------------------------------------------------------------- */

/* Parses every prefix of buf in memory: no crash, a sane code, a message on failure, and a parse
 * that succeeds only with a usable net. Returns how many prefixes were accepted. */
static size_t truncate_all(const uint8_t *buf, size_t len, size_t step) {
  size_t accepted = 0;
  char err[1024];
  for (size_t cut = 0; cut < len; cut += step) {
    Caffe__NetParameter *net = (Caffe__NetParameter *)1;
    err[0] = '\0';
    int r = dd_caffemodel_parse(&net, buf, cut, "cut.caffemodel", err, sizeof err);
    CHECKF(is_dd_error(r), "cut %zu: code %d", cut, r);
    if (r == 0) {
      accepted++;
      CHECKF(net != NULL, "cut %zu", cut);
      dd_weight_layer *w = NULL;
      size_t n = 0;
      CHECK(dd_weight_layers(&w, &n, net, err, sizeof err) == 0);
      free(w);
      protobuf_c_message_free_unpacked(&net->base, NULL);
    } else {
      CHECKF(net == NULL, "cut %zu", cut);
      CHECKF(r == DD_ECORRUPT, "cut %zu: code %d: %s", cut, r, err);
      CHECKF(strstr(err, "cut.caffemodel") != NULL, "cut %zu: %s", cut, err);
    }
  }
  return accepted;
}

static void test_truncation(void) {
  char err[1024];
  /* A small net: two layers with blobs. */
  Caffe__NetParameter net;
  caffe__net_parameter__init(&net);
  net.name = "cut";
  Caffe__LayerParameter l1, l2;
  caffe__layer_parameter__init(&l1);
  caffe__layer_parameter__init(&l2);
  l1.name = "conv";
  l1.type = "Convolution";
  l2.name = "fc";
  l2.type = "InnerProduct";
  test_blob a, b, c;
  blob_init(&a, 4, (int64_t[]){2, 1, 2, 2}, 8);
  blob_init(&b, 1, (int64_t[]){2}, 2);
  blob_init(&c, 2, (int64_t[]){3, 2}, 6);
  Caffe__BlobProto *b1[] = {&a.b, &b.b}, *b2[] = {&c.b};
  l1.n_blobs = 2;
  l1.blobs = b1;
  l2.n_blobs = 1;
  l2.blobs = b2;
  Caffe__LayerParameter *ls[] = {&l1, &l2};
  net.n_layer = 2;
  net.layer = ls;
  size_t len;
  uint8_t *buf = test_pack(&net.base, &len);
  REQUIRE(buf);
  /* Every prefix of the small file: only prefixes that end exactly after a whole top-level field
   * can parse (the name, or the first layer), and those must pass the checks. */
  size_t acc = truncate_all(buf, len, 1);
  CHECKF(acc <= 2, "%zu prefixes accepted", acc);
  /* The whole file parses. */
  Caffe__NetParameter *back = NULL;
  CHECK(dd_caffemodel_parse(&back, buf, len, "cut.caffemodel", err, sizeof err) == 0);
  if (back) protobuf_c_message_free_unpacked(&back->base, NULL);
  /* A cut inside the first layer's weights names the innermost field and the layer. */
  size_t cut = len - 40;
  CHECK(dd_caffemodel_parse(&back, buf, cut, "cut.caffemodel", err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "truncated file?");
  free(buf);

  /* The reference file: a sample of cuts in memory, and a few through the file reader. */
  char *ref = NULL;
  size_t rlen = 0;
  REQUIRE_OK(dd_read_file(&ref, &rlen, INIT_MODEL, err, sizeof err), err);
  /* Only cuts at the end of a whole layer (14 of them) or of the name can parse. */
  acc = truncate_all((const uint8_t *)ref, rlen, 7);
  CHECKF(acc <= 15, "%zu prefixes of init.caffemodel accepted", acc);
  /* Cut in the middle of conv1's weights (they start around byte 0xe0). */
  const char *path = tmp_path("init_cut.caffemodel");
  REQUIRE(test_write_bytes(path, ref, 0x200) == 0);
  int r = dd_caffemodel_read(&back, path, err, sizeof err);
  CHECK(r == DD_ECORRUPT && back == NULL);
  CHECK_CONTAINS(err, path);
  CHECK_CONTAINS(err, "field 5 (data) of BlobProto at layer[3].blobs[0] (layer \"conv1\")");
  CHECK_CONTAINS(err, "truncated file?");
  for (size_t k = 1; k < rlen; k += rlen / 13) {
    REQUIRE(test_write_bytes(path, ref, k) == 0);
    r = dd_caffemodel_read(&back, path, err, sizeof err);
    CHECKF(r == DD_ECORRUPT && back == NULL, "cut %zu: %d", k, r);
  }
  free(ref);
}

/* ---- (6) blob count mismatch----------------------------------------------------------------- */

static void test_blob_mismatch(void) {
  char err[1024];
  Caffe__NetParameter net;
  caffe__net_parameter__init(&net);
  Caffe__LayerParameter ok, bad;
  caffe__layer_parameter__init(&ok);
  caffe__layer_parameter__init(&bad);
  ok.name = "fine";
  ok.type = "Scale";
  bad.name = "convX";
  bad.type = "Convolution";
  test_blob g, w, bias;
  blob_init(&g, 1, (int64_t[]){4}, 4);
  blob_init(&w, 2, (int64_t[]){2, 3}, 6);
  blob_init(&bias, 1, (int64_t[]){3}, 5);
  Caffe__BlobProto *ob[] = {&g.b}, *bb[] = {&w.b, &bias.b};
  ok.n_blobs = 1;
  ok.blobs = ob;
  bad.n_blobs = 2;
  bad.blobs = bb;
  Caffe__LayerParameter *ls[] = {&ok, &bad};
  net.n_layer = 2;
  net.layer = ls;

  const char *path = tmp_path("mismatch.caffemodel");
  CHECK(dd_caffemodel_write(&net, path, err, sizeof err) == DD_EINVAL);
  CHECK_CONTAINS(err, "convX");
  REQUIRE(dd_proto_write_binary(&net.base, path, err, sizeof err) == 0);
  Caffe__NetParameter *back = (Caffe__NetParameter *)1;
  int r = dd_caffemodel_read(&back, path, err, sizeof err);
  CHECK(r == DD_ECORRUPT && back == NULL);
  CHECK_CONTAINS(err, path);
  CHECK_CONTAINS(err, "layer \"convX\"");
  CHECK_CONTAINS(err, "blob 1");
  CHECK_CONTAINS(err, "5 data values");
  CHECK_CONTAINS(err, "3 elements");

  /* A diff that disagrees (an empty diff is fine, checked above). */
  bias.b.n_data = 3;
  float df[2] = {1, 2};
  bias.b.n_diff = 2;
  bias.b.diff = df;
  REQUIRE(dd_proto_write_binary(&net.base, path, err, sizeof err) == 0);
  r = dd_caffemodel_read(&back, path, err, sizeof err);
  CHECK(r == DD_ECORRUPT);
  CHECK_CONTAINS(err, "2 diff values");
  bias.b.n_diff = 0;

  /* A negative dimension. */
  w.dims[1] = -3;
  REQUIRE(dd_proto_write_binary(&net.base, path, err, sizeof err) == 0);
  r = dd_caffemodel_read(&back, path, err, sizeof err);
  CHECK(r == DD_ECORRUPT);
  CHECK_CONTAINS(err, "negative");
  CHECK_CONTAINS(err, "convX");
  int64_t d[DD_MAX_DIMS];
  CHECK(dd_blob_proto_shape(&w.b, d) == DD_ECORRUPT);
  w.dims[1] = 3;

  /* More than DD_MAX_DIMS dimensions. */
  test_blob many;
  int64_t ones[DD_MAX_DIMS + 1];
  for (int i = 0; i < DD_MAX_DIMS + 1; i++) ones[i] = 1;
  blob_init(&many, DD_MAX_DIMS + 1, ones, 1);
  CHECK(dd_blob_proto_shape(&many.b, d) == DD_EUNSUPPORTED);
  Caffe__BlobProto *mb[] = {&many.b};
  ok.blobs = mb;
  REQUIRE(dd_proto_write_binary(&net.base, path, err, sizeof err) == 0);
  r = dd_caffemodel_read(&back, path, err, sizeof err);
  CHECK(r == DD_EUNSUPPORTED);
  CHECK_CONTAINS(err, "fine");
  ok.blobs = ob;

  /* Consistent again: reads. */
  REQUIRE(dd_caffemodel_write(&net, path, err, sizeof err) == 0);
  r = dd_caffemodel_read(&back, path, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  if (r == 0) protobuf_c_message_free_unpacked(&back->base, NULL);
}

/* ---- (7) V1 weights-------------------------------------------------------------------------- */

static void test_v1_binary(void) {
  char err[1024];
  Caffe__NetParameter net;
  caffe__net_parameter__init(&net);
  net.name = "old";
  Caffe__V1LayerParameter conv, relu;
  caffe__v1_layer_parameter__init(&conv);
  caffe__v1_layer_parameter__init(&relu);
  conv.name = "conv1";
  conv.has_type = 1;
  conv.type = CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__CONVOLUTION;
  relu.name = "relu1";
  relu.has_type = 1;
  relu.type = CAFFE__V1_LAYER_PARAMETER__LAYER_TYPE__RELU;
  /* V1 files used the legacy 4-D shapes: weights 4x3x1x1... here 2x1x2x2, bias 1x1x1x2. */
  test_blob w, b;
  blob_init(&w, 0, NULL, 8);
  w.b.has_num = w.b.has_channels = w.b.has_height = w.b.has_width = 1;
  w.b.num = 2;
  w.b.channels = 1;
  w.b.height = 2;
  w.b.width = 2;
  blob_init(&b, 0, NULL, 2);
  b.b.has_num = b.b.has_channels = b.b.has_height = b.b.has_width = 1;
  b.b.num = b.b.channels = b.b.height = 1;
  b.b.width = 2;
  Caffe__BlobProto *blobs[] = {&w.b, &b.b};
  conv.n_blobs = 2;
  conv.blobs = blobs;
  Caffe__V1LayerParameter *ls[] = {&conv, &relu};
  net.n_layers = 2;
  net.layers = ls;

  const char *path = tmp_path("v1.caffemodel");
  int r = dd_caffemodel_write(&net, path, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  Caffe__NetParameter *back = NULL;
  r = dd_caffemodel_read(&back, path, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  REQUIRE(back);
  dd_weight_layer *wl = NULL;
  size_t n = 0;
  r = dd_weight_layers(&wl, &n, back, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  REQUIRE(r == 0 && n == 2);
  CHECK(strcmp(wl[0].name, "conv1") == 0 && strcmp(wl[0].type, "Convolution") == 0);
  CHECK(strcmp(wl[1].name, "relu1") == 0 && strcmp(wl[1].type, "ReLU") == 0);
  CHECK(wl[0].n_blobs == 2 && wl[1].n_blobs == 0);
  char s[64];
  shape_str(wl[0].blobs[0], s, sizeof s);
  CHECK(strcmp(s, "2x1x2x2") == 0);
  shape_str(wl[0].blobs[1], s, sizeof s);
  CHECK(strcmp(s, "1x1x1x2") == 0);
  CHECK(wl[0].blobs[0]->data[7] == w.data[7]);
  free(wl);
  protobuf_c_message_free_unpacked(&back->base, NULL);

  /* A V1 blob that disagrees with its shape is named as a V1 layer. */
  b.b.n_data = 3;
  REQUIRE(dd_proto_write_binary(&net.base, path, err, sizeof err) == 0);
  r = dd_caffemodel_read(&back, path, err, sizeof err);
  CHECK(r == DD_ECORRUPT);
  CHECK_CONTAINS(err, "V1 layers[0]");
  CHECK_CONTAINS(err, "conv1");
  b.b.n_data = 2;

  /* Both layer lists at once: refused by the weights view. */
  Caffe__LayerParameter cur;
  caffe__layer_parameter__init(&cur);
  cur.name = "new";
  Caffe__LayerParameter *cl[] = {&cur};
  net.n_layer = 1;
  net.layer = cl;
  wl = NULL;
  CHECK(dd_weight_layers(&wl, &n, &net, err, sizeof err) == DD_ECORRUPT && wl == NULL && n == 0);
  CHECK_CONTAINS(err, "V1");

  /* An empty net: nothing to list. */
  Caffe__NetParameter empty;
  caffe__net_parameter__init(&empty);
  CHECK(dd_weight_layers(&wl, &n, &empty, err, sizeof err) == 0 && wl == NULL && n == 0);
}

/* ---- (8) V1 text nets------------------------------------------------------------------------ */

static void test_v1_text(void) {
  char err[2048];
  Caffe__NetParameter *net = (Caffe__NetParameter *)1;
  /* A V1 net is read and upgraded as Caffe reads it (core/format/upgrade.c; tests/test_upgrade.c
   * has the details). */
  const char *path = tmp_path("v1.prototxt");
  REQUIRE(write_text(path,
                     "name: \"old\"\n"
                     "layers { name: \"conv1\" type: CONVOLUTION bottom: \"data\" top: \"conv1\"\n"
                     "  convolution_param { num_output: 4 kernel_size: 3 } }\n") == 0);
  int r = dd_net_read_text(&net, path, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  if (r == 0) {
    CHECK(net->n_layers == 0 && net->n_layer == 1 && strcmp(net->layer[0]->type, "Convolution") == 0);
    CHECK(net->layer[0]->convolution_param && net->layer[0]->convolution_param->num_output == 4);
    protobuf_c_message_free_unpacked(&net->base, NULL);
  }

  /* A V1 net with an error inside a layer: the text parser's message, with the position. */
  REQUIRE(write_text(path, "layers { name: \"r\" type: RELU bottom: \"x\" top: \"x\" bogus: 1 }\n") == 0);
  r = dd_net_read_text(&net, path, err, sizeof err);
  CHECK(r == DD_EPARSE && net == NULL);
  CHECK_CONTAINS(err, "bogus");
  CHECK_CONTAINS(err, path);

  /* A solver with V1 nets inline: upgraded too. */
  const char *sp = tmp_path("v1_solver.prototxt");
  Caffe__SolverParameter *sol = NULL;
  REQUIRE(write_text(sp, "base_lr: 0.1\ntrain_net_param { layers { name: \"c\" type: RELU } }\n") == 0);
  r = dd_solver_read_text(&sol, sp, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  if (r == 0) {
    CHECK(sol->train_net_param->n_layer == 1 && strcmp(sol->train_net_param->layer[0]->type, "ReLU") == 0);
    protobuf_c_message_free_unpacked(&sol->base, NULL);
    sol = NULL;
  }
  /* ... and a refusal inside one names where it is. */
  REQUIRE(write_text(sp, "base_lr: 0.1\ntrain_net_param { layer { name: \"a\" type: \"ReLU\" } "
                         "layers { name: \"c\" type: RELU } }\n") == 0);
  r = dd_solver_read_text(&sol, sp, err, sizeof err);
  CHECK(r == DD_EINVAL && sol == NULL);
  CHECK_CONTAINS(err, "train_net_param");

  /* Current-format text reads. */
  r = dd_net_read_text(&net, REF_DIR "/net_resblock.prototxt", err, sizeof err);
  CHECKF(r == 0, "%s", err);
  if (r == 0) {
    CHECK(net->n_layer == 13 && strcmp(net->layer[2]->name, "conv1") == 0);
    protobuf_c_message_free_unpacked(&net->base, NULL);
  }
  r = dd_solver_read_text(&sol, REF_DIR "/resblock/solver_used.prototxt", err, sizeof err);
  CHECKF(r == 0, "%s", err);
  if (r == 0) protobuf_c_message_free_unpacked(&sol->base, NULL);

  /* An ordinary syntax error keeps the parser's own message. */
  REQUIRE(write_text(path, "name: \"x\"\nlayer { name: \"a\" bogus: 1 }\n") == 0);
  r = dd_net_read_text(&net, path, err, sizeof err);
  CHECK(r == DD_EPARSE);
  CHECK_CONTAINS(err, "bogus");
}

/* ---- (9) files of the wrong kind------------------------------------------------------------- */

static void test_bad_files(void) {
  char err[1024];
  Caffe__NetParameter *net = (Caffe__NetParameter *)1;
  Caffe__BlobProto *blob = (Caffe__BlobProto *)1;
  Caffe__SolverState *st = (Caffe__SolverState *)1;

  const char *missing = tmp_path("no_such.caffemodel");
  int r = dd_caffemodel_read(&net, missing, err, sizeof err);
  CHECK(r == DD_EIO && net == NULL);
  CHECK_CONTAINS(err, missing);
  r = dd_binaryproto_read(&blob, missing, err, sizeof err);
  CHECK(r == DD_EIO && blob == NULL);
  CHECK_CONTAINS(err, missing);
  r = dd_solverstate_read(&st, missing, err, sizeof err);
  CHECK(r == DD_EIO && st == NULL);
  r = dd_net_read_text(&net, missing, err, sizeof err);
  CHECK(r == DD_EIO);
  CHECK_CONTAINS(err, missing);

  r = dd_caffemodel_read(&net, tmpdir, err, sizeof err);
  CHECK(r == DD_EIO);
  CHECK_CONTAINS(err, tmpdir);
  CHECK_CONTAINS(err, "directory");

  const char *empty = tmp_path("empty.caffemodel");
  REQUIRE(test_write_bytes(empty, "", 0) == 0);
  r = dd_caffemodel_read(&net, empty, err, sizeof err);
  CHECK(r == DD_ECORRUPT && net == NULL);
  CHECK_CONTAINS(err, empty);
  CHECK_CONTAINS(err, "empty");
  r = dd_binaryproto_read(&blob, empty, err, sizeof err);
  CHECK(r == DD_ECORRUPT);
  CHECK_CONTAINS(err, "empty");
  r = dd_solverstate_read(&st, empty, err, sizeof err);
  CHECK(r == DD_ECORRUPT);

  /* A text prototxt where the binary weights belong. */
  const char *text = REF_DIR "/net_resblock.prototxt";
  r = dd_caffemodel_read(&net, text, err, sizeof err);
  CHECK(r == DD_ECORRUPT && net == NULL);
  CHECK_CONTAINS(err, text);
  CHECK_CONTAINS(err, "text prototxt");
  const char *t2 = tmp_path("layer_first.caffemodel");
  REQUIRE(write_text(t2, "layer {\n  name: \"x\"\n}\n") == 0);
  r = dd_caffemodel_read(&net, t2, err, sizeof err);
  CHECK(r == DD_ECORRUPT);
  CHECK_CONTAINS(err, "text prototxt");
  REQUIRE(write_text(t2, "# a comment\nname: \"x\"\n") == 0);
  r = dd_caffemodel_read(&net, t2, err, sizeof err);
  CHECK(r == DD_ECORRUPT);
  CHECK_CONTAINS(err, "text prototxt");

  /* And the other way round: binary weights where a text net belongs. */
  r = dd_net_read_text(&net, INIT_MODEL, err, sizeof err);
  CHECK(r == DD_EPARSE && net == NULL);
  CHECK_CONTAINS(err, "binary");

  /* Garbage: the wire walker says where. */
  const char *junk = tmp_path("junk.caffemodel");
  REQUIRE(test_write_bytes(junk, "\x0a\x03" "abc" "\xff\xff\xff\xff\xff\xff", 11) == 0);
  r = dd_caffemodel_read(&net, junk, err, sizeof err);
  CHECK(r == DD_ECORRUPT);
  CHECK_CONTAINS(err, junk);
  CHECK_CONTAINS(err, "byte 5");

  /* Writing where it cannot. */
  Caffe__NetParameter n0;
  caffe__net_parameter__init(&n0);
  n0.name = "x";
  const char *nodir = tmp_path("no_dir/x.caffemodel");
  r = dd_caffemodel_write(&n0, nodir, err, sizeof err);
  CHECK(r == DD_EIO);
  CHECK_CONTAINS(err, nodir);
  /* A message protobuf-c cannot pack is refused, not crashed on. */
  char *tops[] = {NULL};
  Caffe__LayerParameter lp;
  caffe__layer_parameter__init(&lp);
  lp.n_top = 1;
  lp.top = tops;
  Caffe__LayerParameter *lps[] = {&lp};
  n0.n_layer = 1;
  n0.layer = lps;
  r = dd_caffemodel_write(&n0, tmp_path("incomplete.caffemodel"), err, sizeof err);
  CHECK(r == DD_EINVAL);
}

int main(void) {
  if (test_scratch_dir(tmpdir, sizeof tmpdir, "caffe_io")) return 1;
  RUN(test_reference_caffemodel);
  RUN(test_constructed_roundtrip);
  RUN(test_binaryproto);
  RUN(test_solverstate);
  RUN(test_truncation);
  RUN(test_blob_mismatch);
  RUN(test_v1_binary);
  RUN(test_v1_text);
  RUN(test_bad_files);
  test_scratch_remove(tmpdir);
  return test_summary();
}
