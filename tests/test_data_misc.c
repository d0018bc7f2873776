/* The data layers other than Data and ImageData, on the CPU backend: DummyData (shapes, fillers,
 * Caffe's refill rule), Parameter (its blob as the top, the gradient into the blob), HDF5Data over
 * files written by Python's h5py (an independent writer: Caffe's own sample files of
 * src/caffe/test/test_data/generate_sample_data.py, read as Caffe's test_hdf5data_layer.cpp
 * TestRead expects; shuffling; double datasets) and by HDF5Output (the round trip), the HDF5
 * errors (each naming the file and the dataset), and MemoryData through its C API
 * (core/layers/memory_data.h). The h5py cases print SKIP when /usr/bin/python3 has no h5py. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <unistd.h>

#include "layers/memory_data.h"
#include "test_files.h"
#include "test_layers.h"

static char dir[256];
static int have_h5py;

/* Runs the Python program `src` (written to DIR/prog.py) in DIR; its exit status. */
static int run_py(const char *src) {
  char path[512], cmd[1024];
  snprintf(path, sizeof path, "%s/prog.py", dir);
  if (!wfile(path, "%s", src)) return -1;
  snprintf(cmd, sizeof cmd, "cd '%s' && /usr/bin/python3 prog.py", dir);
  return system(cmd);
}

/* A net's text with every "@" replaced by the scratch folder. */
static char *with_dir(const char *text) {
  size_t n = strlen(text), k = strlen(dir), at = 0;
  for (const char *p = text; *p; p++) at += *p == '@';
  char *out = malloc(n + at * k + 1), *o = out;
  for (const char *p = text; *p; p++) {
    if (*p == '@') {
      memcpy(o, dir, k);
      o += k;
    } else {
      *o++ = *p;
    }
  }
  *o = '\0';
  return out;
}

static dd_net *make_net_at(const char *text, Caffe__Phase phase) {
  char *t = with_dir(text);
  dd_net *n = make_net(t, phase);
  free(t);
  return n;
}

static int net_error_at(const char *text, char *err, size_t errlen) {
  char *t = with_dir(text);
  int r = net_error(t, CAFFE__PHASE__TRAIN, err, errlen);
  free(t);
  return r;
}

static float *get(dd_net *n, const char *name) {
  dd_tensor *t = blob(n, name);
  return t ? dd_tensor_data_copy(t) : NULL;
}

/* ---- DummyData -------------------------------------------------------------------------------- */

static void test_dummy_fillers_and_refill(void) {
  dd_net *n = make_net("layer { name: 'd' type: 'DummyData' top: 'c' top: 'u' top: 'g'\n"
                       "  dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 4 } shape { dim: 5 dim: 1 dim: 2 }\n"
                       "    data_filler { type: 'constant' value: 2.5 }\n"
                       "    data_filler { type: 'uniform' min: 3 max: 4 }\n"
                       "    data_filler { type: 'gaussian' std: 1 } } }\n",
                       CAFFE__PHASE__TRAIN);
  REQUIRE(n != NULL);
  CHECK(blob(n, "c")->count == 6 && blob(n, "u")->count == 4 && blob(n, "g")->shape.ndim == 3);
  float *c0 = get(n, "c");
  REQUIRE(dd_net_forward(n, NULL) == 0);
  float *u1 = get(n, "u"), *g1 = get(n, "g");
  REQUIRE(dd_net_forward(n, NULL) == 0);
  float *c2 = get(n, "c"), *u2 = get(n, "u"), *g2 = get(n, "g");
  for (int i = 0; i < 6; i++) CHECK(c0[i] == 2.5f && c2[i] == 2.5f);
  int u_same = 1, g_same = 1;
  for (int i = 0; i < 4; i++) {
    CHECK(u1[i] >= 3 && u1[i] < 4 && u2[i] >= 3 && u2[i] < 4);
    u_same &= u1[i] == u2[i];
  }
  for (int i = 0; i < 10; i++) g_same &= g1[i] == g2[i];
  CHECKF(!u_same && !g_same, "non-constant fillers refill at every forward (Caffe's refill rule)");
  /* A constant top overwritten by the caller stays so: Caffe fills it only at setup. */
  float z[6] = {0};
  set_values(n, "c", z);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  float *c3 = get(n, "c");
  CHECK(c3[0] == 0 && c3[5] == 0);
  free(c0), free(c2), free(c3), free(u1), free(u2), free(g1), free(g2);
  dd_net_destroy(n);
}

static void test_dummy_legacy_and_defaults(void) {
  /* num/channels/height/width once or per top; no filler: zeros; one filler: for every top. */
  dd_net *n = make_net("layer { name: 'd' type: 'DummyData' top: 'a' top: 'b'\n"
                       "  dummy_data_param { num: 2 num: 3 channels: 4 height: 1 width: 5 } }\n"
                       "layer { name: 'e' type: 'DummyData' top: 'x' top: 'y'\n"
                       "  dummy_data_param { shape { dim: 3 } data_filler { type: 'constant' value: -1 } } }\n",
                       CAFFE__PHASE__TRAIN);
  REQUIRE(n != NULL);
  dd_tensor *a = blob(n, "a"), *b = blob(n, "b");
  CHECK(a->shape.ndim == 4 && a->shape.dims[0] == 2 && a->shape.dims[1] == 4 && a->shape.dims[3] == 5);
  CHECK(b->shape.dims[0] == 3 && b->count == 60);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  float *av = get(n, "a"), *xv = get(n, "x"), *yv = get(n, "y");
  for (int i = 0; i < 40; i++) CHECK(av[i] == 0);
  for (int i = 0; i < 3; i++) CHECK(xv[i] == -1 && yv[i] == -1);
  free(av), free(xv), free(yv);
  dd_net_destroy(n);
}

static void test_dummy_errors(void) {
  char err[1024];
  static const struct {
    const char *param, *needle;
  } cases[] = {
      {"shape { dim: 2 } num: 1 channels: 1 height: 1 width: 1", "give shape or num/channels/height/width, not both"},
      {"shape { dim: 2 } shape { dim: 2 } shape { dim: 2 }", "dummy_data_param.shape is given 3 times for 2 tops"},
      {"num: 1 num: 1 num: 1 channels: 1 height: 1 width: 1", "dummy_data_param.num is given 3 times for 2 tops"},
      {"num: 1 height: 1 width: 1", "dummy_data_param.channels is given 0 times"},
      {"shape { dim: 2 } data_filler { } data_filler { } data_filler { }", "data_filler is given 3 times for 2 tops"},
      {"shape { dim: 2 } data_filler { type: 'zigzag' }", "unknown filler type \"zigzag\""},
      {"shape { dim: 2 dim: -3 }", "dim 1 is -3"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char net[1024];
    snprintf(net, sizeof net, "layer { name: 'd' type: 'DummyData' top: 'a' top: 'b' dummy_data_param { %s } }\n",
             cases[i].param);
    err[0] = '\0';
    CHECK(net_error(net, CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
    CHECK_CONTAINS(err, cases[i].needle);
    CHECKF(strncmp(err, "d: ", 3) == 0 || strstr(err, "layer \"d\""), "the layer is not named in \"%s\"", err);
  }
}

/* ---- Parameter -------------------------------------------------------------------------------- */

static void test_parameter(void) {
  const char *text = FB INPUT("x", "dim: 2 dim: 3")
      "layer { name: 'p' type: 'Parameter' top: 'p' parameter_param { shape { dim: 2 dim: 3 } } }\n"
      "layer { name: 'y' type: 'Eltwise' bottom: 'x' bottom: 'p' top: 'y' eltwise_param { operation: PROD } }\n";
  dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
  REQUIRE(n != NULL);
  dd_layer *l = layer(n, "p");
  REQUIRE(l && l->n_params == 1 && l->params[0]->count == 6);
  float *zero = dd_tensor_data_copy(l->params[0]);
  for (int i = 0; i < 6; i++) CHECK(zero[i] == 0); /* no filler: Caffe's blob starts at zeros */
  free(zero);
  const float w[6] = {0.5f, -1, 2, 0.25f, -0.75f, 1.5f};
  dd_tensor_set_data(l->params[0], w);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  float *top = get(n, "p");
  for (int i = 0; i < 6; i++) CHECK(top[i] == w[i]);
  free(top);
  fill_inputs(n, 5, -1, 1);
  grad_check(n, GC, "Parameter (into x * p)");
  dd_net_destroy(n);
  /* A blob with no shape is a scalar, as Caffe's empty BlobShape. */
  n = make_net("layer { name: 'p' type: 'Parameter' top: 'p' }\n", CAFFE__PHASE__TRAIN);
  CHECK(n && blob(n, "p")->count == 1 && blob(n, "p")->shape.ndim == 0);
  dd_net_destroy(n);
  char err[512];
  CHECK(net_error("layer { name: 'p' type: 'Parameter' top: 'p' parameter_param { shape { dim: -1 } } }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "parameter_param.shape dim 0 is -1");
}

/* ---- HDF5Data --------------------------------------------------------------------------------- */

/* Caffe's sample files (generate_sample_data.py): data (10, 8, 6, 5) = 0..2399, label (10, 1) =
 * 1..10, label2 = label + 1; the second file gzip-compressed, data + 2400, uint8 labels. */
static const char *SAMPLE_PY =
    "import numpy as np, h5py\n"
    "data = np.arange(2400).reshape(10, 8, 6, 5).astype('float32')\n"
    "label = (1 + np.arange(10)[:, np.newaxis]).astype('float32')\n"
    "with h5py.File('sample_data.h5', 'w') as f:\n"
    "    f['data'] = data; f['label'] = label; f['label2'] = label + 1\n"
    "with h5py.File('sample_data_2_gzip.h5', 'w') as f:\n"
    "    f.create_dataset('data', data=data + 2400, compression='gzip', compression_opts=1)\n"
    "    f.create_dataset('label', data=label, compression='gzip', compression_opts=1, dtype='uint8')\n"
    "    f.create_dataset('label2', data=label + 1, compression='gzip', compression_opts=1, dtype='uint8')\n"
    "with h5py.File('double.h5', 'w') as f:\n"
    "    f['data'] = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], dtype='float64')\n"
    "    f['label'] = np.array([7, 8, 9], dtype='int32')\n"
    "with h5py.File('scalar.h5', 'w') as f:\n"
    "    f['data'] = np.float32(3.0); f['label'] = np.float32(1.0)\n"
    "with h5py.File('other_rows.h5', 'w') as f:\n"
    "    f['data'] = np.zeros((4, 8, 6, 4), dtype='float32'); f['label'] = np.zeros((4, 1), dtype='float32')\n"
    "with h5py.File('uneven.h5', 'w') as f:\n"
    "    f['data'] = np.zeros((4, 2), dtype='float32'); f['label'] = np.zeros((3, 1), dtype='float32')\n"
    "with h5py.File('strings.h5', 'w') as f:\n"
    "    f['data'] = np.array([b'ab', b'cd']); f['label'] = np.zeros((2,), dtype='float32')\n"
    "open('list.txt', 'w').write('%s/sample_data.h5\\n%s/sample_data_2_gzip.h5\\n' % ((__import__('os').getcwd(),) * 2))\n";

static int h5_skip(void) {
  if (!have_h5py) printf("     SKIP %s: /usr/bin/python3 has no h5py\n", test__name);
  return !have_h5py;
}

#define H5NET(src, batch, extra)                                                                        \
  "layer { name: 'h' type: 'HDF5Data' top: 'data' top: 'label' " extra " hdf5_data_param { source: '" src \
  "' batch_size: " #batch " } }\n"

/* Caffe's TestRead, with its expected values. */
static void test_hdf5_caffe_read(void) {
  if (h5_skip()) return;
  dd_net *n = make_net_at(H5NET("@/list.txt", 5, "top: 'label2'"), CAFFE__PHASE__TRAIN);
  REQUIRE(n != NULL);
  dd_tensor *d = blob(n, "data"), *lb = blob(n, "label");
  CHECK(d->shape.ndim == 4 && d->shape.dims[0] == 5 && d->shape.dims[1] == 8 && d->shape.dims[2] == 6 &&
        d->shape.dims[3] == 5);
  CHECK(lb->shape.ndim == 2 && lb->shape.dims[0] == 5 && lb->shape.dims[1] == 1);
  int bad = 0;
  for (int iter = 0; iter < 10; iter++) {
    REQUIRE(dd_net_forward(n, NULL) == 0);
    float *dv = get(n, "data"), *l1 = get(n, "label"), *l2 = get(n, "label2");
    int label_off = 1 + (iter % 2 == 0 ? 0 : 5), data_off = iter % 2 == 0 ? 0 : 5 * 240;
    int file_off = iter % 4 < 2 ? 0 : 2400;
    for (int i = 0; i < 5; i++) bad += l1[i] != label_off + i || l2[i] != label_off + 1 + i;
    for (int i = 0; i < 5 * 240; i++) bad += dv[i] != (float)(file_off + data_off + i);
    free(dv), free(l1), free(l2);
  }
  CHECKF(bad == 0, "%d values differ from Caffe's TestRead expectations", bad);
  dd_net_destroy(n);
}

/* With shuffle every epoch (20 rows over the two files) holds each row once, in another order. */
static void test_hdf5_shuffle(void) {
  if (h5_skip()) return;
  dd_net *n = make_net_at("layer { name: 'h' type: 'HDF5Data' top: 'data' top: 'label'\n"
                          "  hdf5_data_param { source: '@/list.txt' batch_size: 4 shuffle: true } }\n",
                          CAFFE__PHASE__TRAIN);
  REQUIRE(n != NULL);
  int moved = 0;
  for (int epoch = 0; epoch < 3; epoch++) {
    int seen[20] = {0};
    for (int b = 0; b < 5; b++) {
      REQUIRE(dd_net_forward(n, NULL) == 0);
      float *dv = get(n, "data"), *lv = get(n, "label");
      for (int i = 0; i < 4; i++) {
        int v = (int)dv[i * 240], row = (v % 2400) / 240, file = v / 2400;
        CHECK(lv[i] == row + 1); /* data and label rows stay together */
        CHECK(dv[i * 240 + 239] == v + 239);
        seen[file * 10 + row]++;
        moved += row != (b * 4 + i) % 10;
      }
      free(dv), free(lv);
    }
    for (int k = 0; k < 20; k++) CHECKF(seen[k] == 1, "epoch %d: row %d seen %d times", epoch, k, seen[k]);
  }
  CHECK(moved > 0);
  dd_net_destroy(n);
}

static void test_hdf5_double_and_integer(void) {
  if (h5_skip()) return;
  char list[512];
  snprintf(list, sizeof list, "%s/d_list.txt", dir);
  REQUIRE(wfile(list, "%s/double.h5\n", dir));
  dd_net *n = make_net_at(H5NET("@/d_list.txt", 2, ""), CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  CHECK(blob(n, "data")->shape.ndim == 2 && blob(n, "label")->shape.ndim == 1);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  REQUIRE(dd_net_forward(n, NULL) == 0); /* rows 2, 0 (wrapping around the single file) */
  float *dv = get(n, "data"), *lv = get(n, "label");
  CHECK(dv[0] == 0.5f && dv[1] == 0.6f && dv[2] == 0.1f && dv[3] == 0.2f);
  CHECK(lv[0] == 9 && lv[1] == 7);
  free(dv), free(lv);
  dd_net_destroy(n);
}

static void test_hdf5_errors(void) {
  if (h5_skip()) return;
  static const struct {
    const char *list, *extra, *needles[3];
  } cases[] = {
      {NULL, "", {"hdf5_data_param.source", "no_list.txt", ""}},
      {"@/missing.h5", "", {"missing.h5", "", ""}},
      {"@/sample_data.h5", "top: 'nope'", {"sample_data.h5", "no dataset \"nope\"", ""}},
      {"@/scalar.h5", "", {"scalar.h5", "dataset \"data\" has 0 axes", ""}},
      {"@/uneven.h5", "", {"uneven.h5", "dataset \"label\" has 3 rows but dataset \"data\" has 4", ""}},
      {"@/strings.h5", "", {"strings.h5", "dataset \"data\": not a float or integer dataset", ""}},
      {"@/sample_data.h5 @/other_rows.h5", "", {"other_rows.h5", "dataset \"data\"", "sample_data.h5"}},
      {"@/list.txt", "", {"cannot open as an HDF5 file", "list.txt", ""}},
  };
  char err[1024], net[1024];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char path[512];
    snprintf(path, sizeof path, "%s/e_list.txt", dir);
    if (cases[i].list) {
      char *l = with_dir(cases[i].list);
      for (char *p = l; *p; p++)
        if (*p == ' ') *p = '\n';
      REQUIRE(wfile(path, "%s\n", l));
      free(l);
    }
    snprintf(net, sizeof net,
             "layer { name: 'h' type: 'HDF5Data' top: 'data' top: 'label' %s hdf5_data_param { source: '@/%s' "
             "batch_size: 2 } }\n",
             cases[i].extra, cases[i].list ? "e_list.txt" : "no_list.txt");
    err[0] = '\0';
    CHECKF(net_error_at(net, err, sizeof err) != 0, "case %zu", i);
    for (int k = 0; k < 3; k++)
      if (cases[i].needles[k][0]) CHECK_CONTAINS(err, cases[i].needles[k]);
  }
  CHECK(net_error_at("layer { name: 'h' type: 'HDF5Data' top: 'data' transform_param { scale: 2 }\n"
                     "  hdf5_data_param { source: '@/list.txt' batch_size: 2 } }\n", err, sizeof err) != 0);
  CHECK_CONTAINS(err, "HDF5Data does not transform data");
  CHECK(net_error_at("layer { name: 'h' type: 'HDF5Data' top: 'data' hdf5_data_param { source: '@/list.txt' } }\n",
                     err, sizeof err) != 0);
  CHECK_CONTAINS(err, "hdf5_data_param.batch_size must be > 0");
  /* A file that disappears after setup fails the forward that needs it, naming it. */
  test_sh("cp '%s/sample_data.h5' '%s/gone_a.h5' && cp '%s/sample_data.h5' '%s/gone_b.h5'", dir, dir, dir, dir);
  char path[512];
  snprintf(path, sizeof path, "%s/g_list.txt", dir);
  REQUIRE(wfile(path, "%s/gone_a.h5\n%s/gone_b.h5\n", dir, dir));
  dd_net *n = make_net_at(H5NET("@/g_list.txt", 5, ""), CAFFE__PHASE__TRAIN);
  REQUIRE(n != NULL);
  snprintf(path, sizeof path, "%s/gone_b.h5", dir);
  unlink(path);
  CHECK(dd_net_forward(n, NULL) == 0);
  CHECK(dd_net_forward(n, NULL) != 0);
  CHECK_CONTAINS(n->status_msg, "gone_b.h5");
  CHECK_CONTAINS(n->status_msg, "layer \"h\"");
  dd_net_destroy(n);
}

/* ---- HDF5Output ------------------------------------------------------------------------------- */

static void test_hdf5_output_round_trip(void) {
  if (h5_skip()) return;
  dd_net *n = make_net_at(INPUT("x", "dim: 3 dim: 2 dim: 2") INPUT("y", "dim: 3")
                          "layer { name: 'o' type: 'HDF5Output' bottom: 'x' bottom: 'y'\n"
                          "  hdf5_output_param { file_name: '@/out.h5' } }\n",
                          CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  float x[12], y[3] = {4, 5, 6};
  for (int i = 0; i < 12; i++) x[i] = 0.25f * i - 1;
  set_values(n, "x", x);
  set_values(n, "y", y);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  dd_net_destroy(n);
  /* h5py reads Caffe's legacy 4-D shapes and the values back. */
  int r = run_py("import h5py, numpy as np, sys\n"
                 "f = h5py.File('out.h5', 'r')\n"
                 "assert sorted(f.keys()) == ['data', 'label'], list(f.keys())\n"
                 "assert f['data'].shape == (3, 2, 2, 1) and f['label'].shape == (3, 1, 1, 1), (f['data'].shape, f['label'].shape)\n"
                 "assert f['data'].dtype == np.float32\n"
                 "assert np.array_equal(f['data'][:].ravel(), 0.25 * np.arange(12, dtype='float32') - 1)\n"
                 "assert np.array_equal(f['label'][:].ravel(), [4, 5, 6])\n");
  CHECK(r == 0);
  /* HDF5Data reads it back. */
  char path[512];
  snprintf(path, sizeof path, "%s/o_list.txt", dir);
  REQUIRE(wfile(path, "%s/out.h5\n", dir));
  n = make_net_at(H5NET("@/o_list.txt", 3, ""), CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  CHECK(blob(n, "data")->shape.ndim == 4 && blob(n, "label")->shape.ndim == 4);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  float *dv = get(n, "data"), *lv = get(n, "label");
  for (int i = 0; i < 12; i++) CHECK(dv[i] == x[i]);
  for (int i = 0; i < 3; i++) CHECK(lv[i] == y[i]);
  free(dv), free(lv);
  dd_net_destroy(n);
  char err[1024];
  CHECK(net_error_at(INPUT("x", "dim: 3") INPUT("y", "dim: 3")
                     "layer { name: 'o' type: 'HDF5Output' bottom: 'x' bottom: 'y'\n"
                     "  hdf5_output_param { file_name: '@/no/such/dir/out.h5' } }\n", err, sizeof err) != 0);
  CHECK_CONTAINS(err, "hdf5_output_param.file_name");
  CHECK_CONTAINS(err, "no/such/dir/out.h5");
  CHECK(net_error_at(INPUT("x", "dim: 3") INPUT("y", "dim: 2")
                     "layer { name: 'o' type: 'HDF5Output' bottom: 'x' bottom: 'y'\n"
                     "  hdf5_output_param { file_name: '@/o2.h5' } }\n", err, sizeof err) != 0);
  CHECK_CONTAINS(err, "the data bottom has 3 rows and the label bottom 2");
}

/* ---- MemoryData ------------------------------------------------------------------------------- */

#define MEMNET(extra) \
  "layer { name: 'm' type: 'MemoryData' top: 'data' top: 'label' " extra "\n" \
  "  memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }\n"

static void test_memory_data_reset(void) {
  dd_net *n = make_net(MEMNET(""), CAFFE__PHASE__TRAIN);
  REQUIRE(n != NULL);
  dd_layer *l = layer(n, "m");
  char err[512];
  CHECK(dd_net_forward(n, NULL) != 0);
  CHECK_CONTAINS(n->status_msg, "layer \"m\": MemoryData has no data");
  n->status = 0;
  float data[6 * 4], labels[6];
  for (int i = 0; i < 24; i++) data[i] = (float)i;
  for (int i = 0; i < 6; i++) labels[i] = 10.0f + i;
  CHECK(dd_memory_data_reset(l, data, labels, 5, err, sizeof err) == DD_EINVAL);
  CHECK_CONTAINS(err, "positive multiple of its batch_size 2");
  REQUIRE_OK(dd_memory_data_reset(l, data, labels, 6, err, sizeof err), err);
  for (int b = 0; b < 4; b++) { /* batches 0, 1, 2, then 0 again */
    REQUIRE(dd_net_forward(n, NULL) == 0);
    float *dv = get(n, "data"), *lv = get(n, "label");
    int s = (b % 3) * 2;
    for (int i = 0; i < 8; i++) CHECK(dv[i] == (float)(s * 4 + i));
    CHECK(lv[0] == 10.0f + s && lv[1] == 11.0f + s);
    free(dv), free(lv);
  }
  CHECK(dd_memory_data_reset(&n->layers[0] + 0, NULL, labels, 2, err, sizeof err) == DD_EINVAL);
  dd_net_destroy(n);
  n = make_net(INPUT("x", "dim: 1"), CAFFE__PHASE__TRAIN);
  REQUIRE(n != NULL);
  CHECK(dd_memory_data_reset(&n->layers[0], data, labels, 2, err, sizeof err) == DD_EINVAL);
  CHECK_CONTAINS(err, "is not a MemoryData layer");
  dd_net_destroy(n);
}

/* Images through transform_param (TEST: centred crop, mean_value, scale), checked by hand. */
static void test_memory_data_images(void) {
  dd_net *n = make_net("layer { name: 'm' type: 'MemoryData' top: 'data' top: 'label'\n"
                       "  transform_param { crop_size: 2 mean_value: 10 mean_value: 20 mean_value: 30 scale: 0.5 }\n"
                       "  memory_data_param { batch_size: 1 channels: 3 height: 2 width: 2 } }\n",
                       CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  dd_layer *l = layer(n, "m");
  uint8_t px[2][4 * 4 * 3];
  dd_image img[2];
  for (int k = 0; k < 2; k++) {
    for (int i = 0; i < 48; i++) px[k][i] = (uint8_t)(3 * i + 100 * k);
    img[k] = (dd_image){.w = 4, .h = 4, .c = 3, .px = px[k], .cap = sizeof px[k]};
  }
  int labels[2] = {3, 1};
  char err[512];
  REQUIRE_OK(dd_memory_data_add_images(l, img, labels, 2, err, sizeof err), err);
  CHECK(dd_memory_data_add_images(l, img, labels, 2, err, sizeof err) == DD_EINVAL);
  CHECK_CONTAINS(err, "not all consumed yet");
  for (int k = 0; k < 2; k++) {
    REQUIRE(dd_net_forward(n, NULL) == 0);
    float *dv = get(n, "data"), *lv = get(n, "label");
    CHECK(lv[0] == labels[k]);
    for (int c = 0; c < 3; c++)
      for (int y = 0; y < 2; y++)
        for (int x = 0; x < 2; x++) {
          float want = ((float)px[k][((y + 1) * 4 + x + 1) * 3 + c] - 10.0f * (c + 1)) * 0.5f;
          CHECK(fabsf(dv[(c * 2 + y) * 2 + x] - want) < 1e-6f);
        }
    free(dv), free(lv);
  }
  REQUIRE_OK(dd_memory_data_add_images(l, img, labels, 1, err, sizeof err), err); /* consumed: accepted again */
  dd_net_destroy(n);
  n = make_net(MEMNET(""), CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  CHECK(dd_memory_data_add_images(layer(n, "m"), img, labels, 2, err, sizeof err) == DD_ESHAPE);
  CHECK_CONTAINS(err, "image 0 has 3 channels, the layer 1");
  dd_net_destroy(n);
}

static void test_memory_data_errors(void) {
  char err[512];
  CHECK(net_error("layer { name: 'm' type: 'MemoryData' top: 'data' top: 'label'\n"
                  "  memory_data_param { batch_size: 2 channels: 1 height: 2 } }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "memory_data_param.width must be > 0");
  CHECK(net_error(MEMNET("transform_param { crop_size: 3 }"), CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "transform_param.crop_size 3 must equal memory_data_param.height and width");
  CHECK(net_error("layer { name: 'm' type: 'MemoryData' top: 'data' memory_data_param { batch_size: 1 channels: 1 "
                  "height: 1 width: 1 } }\n", CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
}

int main(void) {
  if (layers_begin()) return 1;
  if (test_scratch_dir(dir, sizeof dir, "data_misc")) return 1;
  have_h5py = system("/usr/bin/python3 -c 'import h5py' 2>/dev/null") == 0;
  if (have_h5py && run_py(SAMPLE_PY) != 0) {
    fprintf(stderr, "the h5py writer failed\n");
    return 1;
  }
  RUN(test_dummy_fillers_and_refill);
  RUN(test_dummy_legacy_and_defaults);
  RUN(test_dummy_errors);
  RUN(test_parameter);
  RUN(test_hdf5_caffe_read);
  RUN(test_hdf5_shuffle);
  RUN(test_hdf5_double_and_integer);
  RUN(test_hdf5_errors);
  RUN(test_hdf5_output_round_trip);
  RUN(test_memory_data_reset);
  RUN(test_memory_data_images);
  RUN(test_memory_data_errors);
  test_scratch_remove(dir);
  return layers_end();
}
