/* The Data layer (core/layers/data_layer.c, core/data/db_data.c, db_read.c, datum_read.c): LMDBs
 * and LevelDBs written here with the project's own writer (core/data/db_write.c) holding Datum
 * records packed with protobuf-c (raw uint8, float_data) or by hand (packed float_data, damaged
 * records), or encoded PNGs (core/data/datum_write.c); each batch is compared with values
 * computed here from the pixel formula: Caffe's order (key order, wrapping to the first record),
 * (pixel - mean) * scale with mean_value or a mean_file read at the crop offset, the centred crop
 * in TEST, the random crop and mirror in TRAIN, rand_skip; and every error (a missing db, an
 * empty db, a record that is not a Datum, a record whose shape differs, bad fields) names the db
 * path, the key and the field. Also the Datum parser on its own (protobuf's last-one-wins and
 * packed/unpacked float_data rules). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/datum_read.h"
#include "data/datum_write.h"
#include "data/db_write.h"
#include "data/imgdec.h"
#include "format/caffe_io.h"
#include "test_layers.h"

static char scratch[512];

/* Pixel k (C-order CHW index) of record i. */
static uint8_t px(int i, int k) { return (uint8_t)((37 * i + 11 * k + 5) % 256); }

static uint8_t *pack(const Caffe__Datum *d, size_t *len) {
  *len = caffe__datum__get_packed_size(d);
  uint8_t *b = malloc(*len + 1);
  caffe__datum__pack(d, b);
  return b;
}

/* A raw Datum of record i: c x h x w pixels px(i, k), label i % 5. */
static uint8_t *raw_datum(int i, int c, int h, int w, size_t *len) {
  uint8_t *chw = malloc((size_t)(c * h * w));
  for (int k = 0; k < c * h * w; k++) chw[k] = px(i, k);
  Caffe__Datum d = CAFFE__DATUM__INIT;
  d.has_channels = d.has_height = d.has_width = d.has_data = d.has_label = d.has_encoded = 1;
  d.channels = c;
  d.height = h;
  d.width = w;
  d.data.data = chw;
  d.data.len = (size_t)(c * h * w);
  d.label = i % 5;
  uint8_t *b = pack(&d, len);
  free(chw);
  return b;
}

/* A float_data Datum of record i: value k = 0.25 * k - i (protobuf-c writes it unpacked). */
static uint8_t *float_datum(int i, int c, int h, int w, size_t *len) {
  int n = c * h * w;
  float *v = malloc((size_t)n * sizeof *v);
  for (int k = 0; k < n; k++) v[k] = 0.25f * (float)k - (float)i;
  Caffe__Datum d = CAFFE__DATUM__INIT;
  d.has_channels = d.has_height = d.has_width = d.has_label = 1;
  d.channels = c;
  d.height = h;
  d.width = w;
  d.n_float_data = (size_t)n;
  d.float_data = v;
  d.label = 7 + i;
  uint8_t *b = pack(&d, len);
  free(v);
  return b;
}

/* The same record with float_data packed (one length-delimited field 6), written by hand. */
static uint8_t *packed_float_datum(int i, int c, int h, int w, size_t *len) {
  int n = c * h * w;
  uint8_t *b = malloc((size_t)(16 + 4 * n)), *p = b;
  *p++ = 0x08, *p++ = (uint8_t)c, *p++ = 0x10, *p++ = (uint8_t)h, *p++ = 0x18, *p++ = (uint8_t)w;
  *p++ = 0x32, *p++ = (uint8_t)(4 * n); /* n <= 31 here */
  for (int k = 0; k < n; k++) {
    float f = 0.25f * (float)k - (float)i;
    memcpy(p, &f, 4);
    p += 4;
  }
  *p++ = 0x28, *p++ = (uint8_t)(7 + i);
  *len = (size_t)(p - b);
  return b;
}

/* An encoded PNG Datum of record i (h x w, c channels, pixel (y, x, ch) = px(i, (ch*h+y)*w+x)). */
static uint8_t *png_datum(int i, int c, int h, int w, size_t *len) {
  dd_image img = {0};
  img.w = w, img.h = h, img.c = c;
  img.px = malloc((size_t)(w * h * c));
  for (int ch = 0; ch < c; ch++)
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++) img.px[(y * w + x) * c + ch] = px(i, (ch * h + y) * w + x);
  char err[256];
  uint8_t *png, *out;
  size_t plen;
  if (dd_image_encode_png(&png, &plen, &img, err, sizeof err)) fprintf(stderr, "png: %s\n", err);
  if (dd_datum_pack_encoded(&out, len, png, plen, i % 5, err, sizeof err)) fprintf(stderr, "pack: %s\n", err);
  free(png);
  free(img.px);
  return out;
}

typedef uint8_t *(*maker)(int i, int c, int h, int w, size_t *len);

/* Writes db scratch/NAME with n records from `mk` (keys %08d, in order) plus, where bad_at >= 0,
 * `bad` (bad_len bytes) in place of record bad_at. Returns the path (static). */
static const char *write_db_bad(const char *backend, const char *name, int n, maker mk, int c, int h, int w,
                                int bad_at, const uint8_t *bad, size_t bad_len) {
  static char path[1024];
  snprintf(path, sizeof path, "%s/%s", scratch, name);
  dd_db_writer *wr;
  char err[512];
  if (dd_db_writer_open(&wr, backend, path, err, sizeof err)) {
    fprintf(stderr, "writer: %s\n", err);
    return path;
  }
  for (int i = 0; i < n; i++) {
    char key[32];
    snprintf(key, sizeof key, "%08d", i);
    size_t len;
    uint8_t *v = i == bad_at ? NULL : mk(i, c, h, w, &len);
    dd_db_writer_put(wr, key, strlen(key), v ? v : bad, v ? len : bad_len, err, sizeof err);
    free(v);
  }
  if (dd_db_writer_close(wr, 0, err, sizeof err)) fprintf(stderr, "close: %s\n", err);
  return path;
}

static const char *write_db(const char *backend, const char *name, int n, maker mk, int c, int h, int w) {
  return write_db_bad(backend, name, n, mk, c, h, w, -1, NULL, 0);
}

/* A Data-layer net over `path`. */
static char *net_text(const char *path, const char *backend, int batch, const char *transform, const char *extra) {
  static char text[4096];
  snprintf(text, sizeof text,
           "layer { name: \"data\" type: \"Data\" top: \"data\" top: \"label\" transform_param { %s }\n"
           "  data_param { source: \"%s\" backend: %s batch_size: %d %s } }\n",
           transform, path, backend, batch, extra);
  return text;
}

/* Runs `batches` forwards and compares each batch with want(record, k) (k: index within the
 * sample) and the labels with lab(record); record r of slot j of batch b is (start + b * batch + j)
 * % n. */
typedef float (*want_fn)(int rec, int k);
static void check_batches(dd_net *n, int batches, int batch, int sample, int nrec, int start, want_fn want,
                          int (*lab)(int)) {
  float *d = malloc((size_t)(batch * sample) * sizeof *d), l[64];
  for (int b = 0; b < batches; b++) {
    double loss;
    int r = dd_net_forward(n, &loss);
    CHECKF(r == 0, "forward %d: %s", b, n->status_msg);
    if (r) break;
    dd_tensor_get_data(blob(n, "data"), d);
    dd_tensor_get_data(blob(n, "label"), l);
    int bad = 0;
    for (int j = 0; j < batch; j++) {
      int rec = (start + b * batch + j) % nrec;
      CHECKF(l[j] == (float)lab(rec), "batch %d slot %d: label %g, want %d", b, j, l[j], lab(rec));
      for (int k = 0; k < sample && bad < 3; k++)
        if (d[j * sample + k] != want(rec, k)) {
          CHECKF(0, "batch %d slot %d (record %d) [%d]: %g, want %g", b, j, rec, k, d[j * sample + k], want(rec, k));
          bad++;
        }
    }
  }
  free(d);
}

static int lab5(int r) { return r % 5; }
static int lab7(int r) { return 7 + r; }

/* 3 x 4 x 5 raw records, mean_value 3 7 11, scale 0.5 */
static float want_mean_values(int rec, int k) {
  static const float mv[3] = {3, 7, 11};
  return ((float)px(rec, k) - mv[k / 20]) * 0.5f;
}

static void raw_mean_values(const char *backend, const char *BACKEND) {
  char name[64];
  snprintf(name, sizeof name, "raw_%s", backend);
  const char *path = write_db(backend, name, 5, raw_datum, 3, 4, 5);
  dd_net *n = make_net(net_text(path, BACKEND, 2, "scale: 0.5 mean_value: 3 mean_value: 7 mean_value: 11", ""),
                       CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  const dd_tensor *t = blob(n, "data");
  CHECK(t->shape.ndim == 4 && t->shape.dims[0] == 2 && t->shape.dims[1] == 3 && t->shape.dims[2] == 4 &&
        t->shape.dims[3] == 5);
  CHECK(blob(n, "label")->shape.ndim == 1 && blob(n, "label")->shape.dims[0] == 2);
  /* 4 batches of 2 over 5 records: 0 1, 2 3, 4 0 (the wrap), 1 2 */
  check_batches(n, 4, 2, 60, 5, 0, want_mean_values, lab5);
  dd_net_destroy(n);
}

static void test_lmdb_raw(void) { raw_mean_values("lmdb", "LMDB"); }
static void test_leveldb_raw(void) { raw_mean_values("leveldb", "LEVELDB"); }

/* One mean_value for every channel, no scale; a net with the label top left out. */
static float want_one_mean(int rec, int k) { return (float)px(rec, k) - 100.0f; }
static void test_one_mean_value_no_label(void) {
  const char *path = write_db("lmdb", "one_mean", 3, raw_datum, 2, 3, 3);
  char text[2048];
  snprintf(text, sizeof text, "layer { name: \"data\" type: \"Data\" top: \"data\" transform_param { mean_value: 100 }"
           " data_param { source: \"%s\" backend: LMDB batch_size: 3 } }\n", path);
  dd_net *n = make_net(text, CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  float d[54];
  double loss;
  for (int b = 0; b < 2; b++) {
    REQUIRE(dd_net_forward(n, &loss) == 0);
    dd_tensor_get_data(blob(n, "data"), d);
    for (int k = 0; k < 54; k++) CHECK(d[k] == want_one_mean(k / 18, k % 18));
  }
  dd_net_destroy(n);
}

static float want_float(int rec, int k) { return (0.25f * (float)k - (float)rec) * 2.0f; }
static void test_float_data(void) {
  const maker mk[2] = {float_datum, packed_float_datum};
  const char *names[2] = {"float_unpacked", "float_packed"};
  for (int v = 0; v < 2; v++) {
    const char *path = write_db(v ? "leveldb" : "lmdb", names[v], 3, mk[v], 1, 2, 3);
    dd_net *n = make_net(net_text(path, v ? "LEVELDB" : "LMDB", 2, "scale: 2", ""), CAFFE__PHASE__TEST);
    REQUIRE(n != NULL);
    CHECK(blob(n, "data")->shape.dims[1] == 1 && blob(n, "data")->shape.dims[2] == 2 && blob(n, "data")->shape.dims[3] == 3);
    check_batches(n, 3, 2, 6, 3, 0, want_float, lab7);
    dd_net_destroy(n);
  }
}

/* Encoded PNGs: as stored (3 channels), and a gray PNG forced to colour (B = G = R). */
static float want_png(int rec, int k) { return (float)px(rec, k); }
static float want_gray_as_colour(int rec, int k) { return (float)px(rec, k % 12); }
static void test_encoded(void) {
  const char *path = write_db("lmdb", "png3", 3, png_datum, 3, 3, 4);
  dd_net *n = make_net(net_text(path, "LMDB", 3, "", ""), CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  CHECK(blob(n, "data")->shape.dims[1] == 3 && blob(n, "data")->shape.dims[2] == 3 && blob(n, "data")->shape.dims[3] == 4);
  check_batches(n, 2, 3, 36, 3, 0, want_png, lab5);
  dd_net_destroy(n);
  path = write_db("lmdb", "png1", 2, png_datum, 1, 3, 4);
  n = make_net(net_text(path, "LMDB", 2, "force_color: true", ""), CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  CHECK(blob(n, "data")->shape.dims[1] == 3);
  check_batches(n, 1, 2, 36, 2, 0, want_gray_as_colour, lab5);
  dd_net_destroy(n);
  /* the gray file as stored: one channel */
  n = make_net(net_text(path, "LMDB", 2, "", ""), CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  CHECK(blob(n, "data")->shape.dims[1] == 1);
  dd_net_destroy(n);
}

/* A mean blob 1 x c x h x w, value k = (3 k) mod 50 (as the catalogue's). */
static const char *write_mean(const char *name, int c, int h, int w) {
  static char path[1024];
  snprintf(path, sizeof path, "%s/%s", scratch, name);
  int n = c * h * w;
  float *v = malloc((size_t)n * sizeof *v);
  for (int k = 0; k < n; k++) v[k] = (float)((3 * k) % 50);
  Caffe__BlobProto b = CAFFE__BLOB_PROTO__INIT;
  b.has_num = b.has_channels = b.has_height = b.has_width = 1;
  b.num = 1, b.channels = c, b.height = h, b.width = w;
  b.n_data = (size_t)n;
  b.data = v;
  char err[512];
  if (dd_binaryproto_write(&b, path, err, sizeof err)) fprintf(stderr, "mean: %s\n", err);
  free(v);
  return path;
}

static float mean_at(int k) { return (float)((3 * k) % 50); }

/* 3 x 5 x 6 records, crop 3 (TEST: offsets (1, 1)), mean_file, scale 0.25: the mean is read at the
 * record's position of each output pixel, subtracted before the scale. */
static float want_mean_crop(int rec, int k) {
  int c = k / 9, y = k % 9 / 3, x = k % 3;
  int src = (c * 5 + 1 + y) * 6 + 1 + x;
  return ((float)px(rec, src) - mean_at(src)) * 0.25f;
}
static void test_mean_file_crop(void) {
  const char *path = write_db("lmdb", "mean_crop", 4, raw_datum, 3, 5, 6);
  char text[4096], tp[1200];
  snprintf(tp, sizeof tp, "scale: 0.25 crop_size: 3 mean_file: \"%s\"", write_mean("mean_3x5x6.binaryproto", 3, 5, 6));
  snprintf(text, sizeof text, "%s", net_text(path, "LMDB", 2, tp, ""));
  dd_net *n = make_net(text, CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  CHECK(blob(n, "data")->shape.dims[2] == 3 && blob(n, "data")->shape.dims[3] == 3);
  check_batches(n, 3, 2, 27, 4, 0, want_mean_crop, lab5);
  dd_net_destroy(n);

  /* TRAIN with mirror: every sample is one of the crops (any offset, mirrored or not), the mean
   * taken at the record's (unmirrored) position; over 16 samples both mirror states occur. */
  snprintf(tp, sizeof tp, "scale: 0.25 crop_size: 3 mirror: true mean_file: \"%s/mean_3x5x6.binaryproto\"", scratch);
  n = make_net(net_text(path, "LMDB", 4, tp, ""), CAFFE__PHASE__TRAIN);
  REQUIRE(n != NULL);
  float d[108];
  int seen_mirror = 0, seen_plain = 0, seen_off = 0;
  for (int b = 0; b < 4; b++) {
    double loss;
    REQUIRE(dd_net_forward(n, &loss) == 0);
    dd_tensor_get_data(blob(n, "data"), d);
    for (int j = 0; j < 4; j++) {
      int found = 0;
      for (int ho = 0; ho <= 2 && !found; ho++)
        for (int wo = 0; wo <= 3 && !found; wo++)
          for (int m = 0; m < 2 && !found; m++) {
            int ok = 1;
            for (int k = 0; k < 27 && ok; k++) {
              int c = k / 9, y = k % 9 / 3, x = k % 3, sx = m ? 2 - x : x;
              int src = (c * 5 + ho + y) * 6 + wo + sx;
              ok = d[j * 27 + k] == ((float)px(j, src) - mean_at(src)) * 0.25f;
            }
            if (ok) {
              found = 1;
              seen_mirror |= m, seen_plain |= !m, seen_off |= ho != 1 || wo != 1;
            }
          }
      CHECKF(found, "TRAIN batch %d slot %d is no crop of record %d", b, j, j);
    }
  }
  CHECK(seen_mirror && seen_plain && seen_off);
  dd_net_destroy(n);
}

/* Keys are read in key order, whatever the order they were written in. */
static void test_key_order(void) {
  char path[1024], err[512];
  snprintf(path, sizeof path, "%s/key_order", scratch);
  dd_db_writer *wr;
  REQUIRE_OK(dd_db_writer_open(&wr, "lmdb", path, err, sizeof err), err);
  const int order[4] = {2, 0, 3, 1};
  for (int i = 0; i < 4; i++) {
    char key[32];
    snprintf(key, sizeof key, "%08d", order[i]);
    size_t len;
    uint8_t *v = raw_datum(order[i], 3, 4, 5, &len);
    dd_db_writer_put(wr, key, strlen(key), v, len, err, sizeof err);
    free(v);
  }
  REQUIRE_OK(dd_db_writer_close(wr, 0, err, sizeof err), err);
  dd_net *n = make_net(net_text(path, "LMDB", 3, "scale: 0.5 mean_value: 3 mean_value: 7 mean_value: 11", ""),
                       CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  check_batches(n, 3, 3, 60, 4, 0, want_mean_values, lab5);
  dd_net_destroy(n);
}

/* rand_skip: the stream starts at some record below rand_skip and goes on in order, wrapping;
 * prefetch 1 (a ring of one batch) gives the same batches. */
static void test_rand_skip_prefetch(void) {
  const char *path = write_db("leveldb", "skip", 5, raw_datum, 3, 4, 5);
  dd_net *n = make_net(net_text(path, "LEVELDB", 2, "scale: 0.5 mean_value: 3 mean_value: 7 mean_value: 11",
                                "rand_skip: 4 prefetch: 1"), CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  double loss;
  float l[2];
  REQUIRE(dd_net_forward(n, &loss) == 0);
  dd_tensor_get_data(blob(n, "label"), l);
  int start = (int)l[0];
  CHECK(start >= 0 && start < 4);
  dd_net_destroy(n);
  n = make_net(net_text(path, "LEVELDB", 2, "scale: 0.5 mean_value: 3 mean_value: 7 mean_value: 11",
                        "rand_skip: 4 prefetch: 1"), CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  check_batches(n, 6, 2, 60, 5, start, want_mean_values, lab5);
  dd_net_destroy(n);
}

/* ---- errors --------------------------------------------------------------------------------- */

static void expect_build_error(const char *text, const char *a, const char *b, const char *c) {
  char err[2048] = "";
  int r = net_error(text, CAFFE__PHASE__TEST, err, sizeof err);
  CHECKF(r != 0, "built, expected an error with \"%s\"", a);
  CHECK_CONTAINS(err, a);
  if (b) CHECK_CONTAINS(err, b);
  if (c) CHECK_CONTAINS(err, c);
}

/* The net builds, the first batch is fine and the second fails naming `a`, `b`, `c`. */
static void expect_forward_error(const char *text, const char *a, const char *b, const char *c) {
  dd_net *n = make_net(text, CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  double loss;
  CHECKF(dd_net_forward(n, &loss) == 0, "first batch: %s", n->status_msg);
  CHECK(dd_net_forward(n, &loss) != 0);
  CHECK_CONTAINS(n->status_msg, a);
  if (b) CHECK_CONTAINS(n->status_msg, b);
  if (c) CHECK_CONTAINS(n->status_msg, c);
  CHECK(dd_net_forward(n, &loss) != 0); /* and it stays failed */
  dd_net_destroy(n);
}

static void test_missing_and_empty(void) {
  char path[1024];
  snprintf(path, sizeof path, "%s/no_such_db", scratch);
  expect_build_error(net_text(path, "LMDB", 2, "", ""), "data_param.source", path, "No such file");
  expect_build_error(net_text(path, "LEVELDB", 2, "", ""), "data_param.source", path, NULL);
  /* an LMDB opened as a LevelDB */
  const char *lm = write_db("lmdb", "lmdb_as_leveldb", 2, raw_datum, 1, 2, 2);
  expect_build_error(net_text(lm, "LEVELDB", 2, "", ""), "data_param.source", lm, "LevelDB");
  /* a directory without data.mdb */
  snprintf(path, sizeof path, "%s/empty_dir", scratch);
  test_sh("mkdir -p '%s'", path);
  expect_build_error(net_text(path, "LMDB", 2, "", ""), "data_param.source", path, "no LMDB");
  /* databases without records */
  const char *e1 = write_db("lmdb", "empty_lmdb", 0, raw_datum, 1, 2, 2);
  expect_build_error(net_text(e1, "LMDB", 2, "", ""), e1, "no records", NULL);
  const char *e2 = write_db("leveldb", "empty_leveldb", 0, raw_datum, 1, 2, 2);
  expect_build_error(net_text(e2, "LEVELDB", 2, "", ""), e2, "no records", NULL);
}

static const uint8_t garbage[] = {0x0f, 0xff, 0xff}; /* field 1 with wire type 7 */

static void test_not_a_datum(void) {
  /* the first record: the net cannot infer its shape */
  const char *p0 = write_db_bad("lmdb", "bad_first", 3, raw_datum, 3, 2, 2, 0, garbage, sizeof garbage);
  expect_build_error(net_text(p0, "LMDB", 2, "", ""), p0, "key \"00000000\"", "not a Datum");
  /* a later record (in the second batch) */
  const char *p1 = write_db_bad("lmdb", "bad_later", 4, raw_datum, 3, 2, 2, 2, garbage, sizeof garbage);
  expect_forward_error(net_text(p1, "LMDB", 2, "", ""), p1, "key \"00000002\"", "not a Datum");
  /* a truncated record: the data field runs past the end */
  size_t len;
  uint8_t *v = raw_datum(2, 3, 2, 2, &len);
  const char *p2 = write_db_bad("leveldb", "truncated", 4, raw_datum, 3, 2, 2, 2, v, len - 3);
  expect_forward_error(net_text(p2, "LEVELDB", 2, "", ""), p2, "key \"00000002\"", "data");
  free(v);
  /* an encoded record that is not an image */
  Caffe__Datum d = CAFFE__DATUM__INIT;
  d.has_data = d.has_encoded = 1;
  d.encoded = 1;
  d.data.data = (uint8_t *)"not a png";
  d.data.len = 9;
  uint8_t *e = pack(&d, &len);
  const char *p3 = write_db_bad("lmdb", "bad_png", 4, png_datum, 3, 2, 2, 3, e, len);
  expect_forward_error(net_text(p3, "LMDB", 2, "", ""), p3, "key \"00000003\"", "not a JPEG or PNG");
  free(e);
}

/* Datums whose fields disagree with their data. */
static void test_bad_fields(void) {
  size_t len;
  Caffe__Datum d = CAFFE__DATUM__INIT;
  uint8_t pix[12] = {0};
  d.has_channels = d.has_height = d.has_width = d.has_data = 1;
  d.channels = 3, d.height = 2, d.width = 2, d.data.data = pix, d.data.len = 10;
  uint8_t *v = pack(&d, &len);
  const char *p = write_db_bad("lmdb", "short_data", 4, raw_datum, 3, 2, 2, 3, v, len);
  expect_forward_error(net_text(p, "LMDB", 2, "", ""), "key \"00000003\"", "data has 10 bytes", "3 x 2 x 2");
  free(v);
  d.channels = 0, d.data.len = 0;
  v = pack(&d, &len);
  p = write_db_bad("lmdb", "zero_channels", 2, raw_datum, 3, 2, 2, 0, v, len);
  expect_build_error(net_text(p, "LMDB", 2, "", ""), "key \"00000000\"", "channels 0", p);
  free(v);
  float f[5] = {0};
  d.channels = 3, d.has_data = 0, d.n_float_data = 5, d.float_data = f;
  v = pack(&d, &len);
  p = write_db_bad("lmdb", "short_float", 4, raw_datum, 3, 2, 2, 2, v, len);
  expect_forward_error(net_text(p, "LMDB", 2, "", ""), "key \"00000002\"", "float_data has 5 values", p);
  free(v);
}

/* Records whose shape differs from the first one's. */
static void test_shape_differs(void) {
  size_t len;
  uint8_t *v = raw_datum(2, 1, 2, 2, &len);
  const char *p = write_db_bad("lmdb", "other_channels", 4, raw_datum, 3, 2, 2, 2, v, len);
  expect_forward_error(net_text(p, "LMDB", 2, "", ""), p, "key \"00000002\"", "channels 1, but the first record has 3");
  free(v);
  v = raw_datum(3, 3, 3, 2, &len);
  p = write_db_bad("leveldb", "other_height", 4, raw_datum, 3, 2, 2, 3, v, len);
  expect_forward_error(net_text(p, "LEVELDB", 2, "", ""), p, "key \"00000003\"", "height x width 3x2");
  free(v);
  /* with a crop, larger records are fine, smaller ones are not */
  v = raw_datum(2, 3, 4, 4, &len);
  p = write_db_bad("lmdb", "crop_ok", 4, raw_datum, 3, 3, 3, 2, v, len);
  dd_net *n = make_net(net_text(p, "LMDB", 2, "crop_size: 2", ""), CAFFE__PHASE__TEST);
  REQUIRE(n != NULL);
  double loss;
  CHECKF(dd_net_forward(n, &loss) == 0 && dd_net_forward(n, &loss) == 0, "%s", n->status_msg);
  dd_net_destroy(n);
  free(v);
  v = raw_datum(2, 3, 1, 4, &len);
  p = write_db_bad("lmdb", "crop_small", 4, raw_datum, 3, 3, 3, 2, v, len);
  expect_forward_error(net_text(p, "LMDB", 2, "crop_size: 2", ""), "key \"00000002\"", "smaller than", "crop_size 2");
  free(v);
  /* the first record smaller than the crop */
  p = write_db("lmdb", "crop_first", 2, raw_datum, 3, 2, 2);
  expect_build_error(net_text(p, "LMDB", 2, "crop_size: 3", ""), "key \"00000000\"", "crop_size 3", p);
}

static void test_param_errors(void) {
  const char *p = write_db("lmdb", "params", 2, raw_datum, 3, 4, 5);
  char tp[1200];
  expect_build_error(net_text(p, "LMDB", 0, "", ""), "data_param.batch_size", NULL, NULL);
  expect_build_error("layer { name: \"data\" type: \"Data\" top: \"data\" data_param { batch_size: 2 } }\n",
                     "data_param { source", NULL, NULL);
  expect_build_error(net_text(p, "LMDB", 2, "mean_value: 1 mean_value: 2", ""), "mean_value", "3 channels", NULL);
  expect_build_error(net_text(p, "LMDB", 2, "force_color: true force_gray: true", ""), "force_color", "force_gray", NULL);
  expect_build_error(net_text(p, "LMDB", 2, "", "scale: 0.5"), "data_param.scale", "transform_param", NULL);
  expect_build_error(net_text(p, "LMDB", 2, "", "crop_size: 2"), "data_param.crop_size", NULL, NULL);
  snprintf(tp, sizeof tp, "mean_value: 1 mean_file: \"%s\"", write_mean("m345.binaryproto", 3, 4, 5));
  expect_build_error(net_text(p, "LMDB", 2, tp, ""), "mean_file or mean_value", NULL, NULL);
  /* a mean of the wrong size or channels; a missing mean file */
  snprintf(tp, sizeof tp, "mean_file: \"%s\"", write_mean("m344.binaryproto", 3, 4, 4));
  expect_build_error(net_text(p, "LMDB", 2, tp, ""), "transform_param.mean_file is 4x4", "key \"00000000\"", NULL);
  snprintf(tp, sizeof tp, "mean_file: \"%s\"", write_mean("m145.binaryproto", 1, 4, 5));
  expect_build_error(net_text(p, "LMDB", 2, tp, ""), "transform_param.mean_file", "1 x 3 x H x W", NULL);
  snprintf(tp, sizeof tp, "mean_file: \"%s/nope.binaryproto\"", scratch);
  expect_build_error(net_text(p, "LMDB", 2, tp, ""), "transform_param.mean_file", "nope.binaryproto", NULL);
}

/* ---- the parser on its own ------------------------------------------------------------------ */

static void test_parser(void) {
  char err[512];
  dd_datum_view v;
  /* last one wins for scalars; float_data accumulates over unpacked and packed fields; unknown
   * fields (varint 9, fixed64 10, bytes 11, fixed32 12) are skipped */
  float a = 1.5f, b[2] = {-2.0f, 3.25f};
  uint8_t buf[64], *p = buf;
  *p++ = 0x08, *p++ = 9, *p++ = 0x08, *p++ = 2; /* channels 9, then 2 */
  *p++ = 0x10, *p++ = 1, *p++ = 0x18, *p++ = 0x81, *p++ = 0x01; /* height 1, width 129 */
  *p++ = 0x35, memcpy(p, &a, 4), p += 4;
  *p++ = 0x48, *p++ = 0x7f, *p++ = 0x51, memset(p, 0xaa, 8), p += 8, *p++ = 0x5a, *p++ = 1, *p++ = 0;
  *p++ = 0x65, memset(p, 0, 4), p += 4;
  *p++ = 0x32, *p++ = 8, memcpy(p, b, 8), p += 8;
  *p++ = 0x28, *p++ = 0xff, *p++ = 0xff, *p++ = 0xff, *p++ = 0xff, *p++ = 0xff, *p++ = 0xff, *p++ = 0xff,
  *p++ = 0xff, *p++ = 0xff, *p++ = 0x01; /* label -1 as a 10-byte varint */
  *p++ = 0x38, *p++ = 1;
  REQUIRE_OK(dd_datum_parse(&v, buf, (size_t)(p - buf), err, sizeof err), err);
  CHECK(v.channels == 2 && v.height == 1 && v.width == 129 && v.label == -1 && v.encoded == 1 && v.n_float == 3);
  float f[3];
  dd_datum_floats(&v, f);
  CHECK(f[0] == 1.5f && f[1] == -2.0f && f[2] == 3.25f);
  /* protobuf-c's packing of a Datum parses to the same fields */
  size_t len;
  uint8_t *r = raw_datum(4, 3, 2, 2, &len);
  REQUIRE_OK(dd_datum_parse(&v, r, len, err, sizeof err), err);
  CHECK(v.channels == 3 && v.height == 2 && v.width == 2 && v.label == 4 && !v.encoded && v.data_len == 12 &&
        v.data[5] == px(4, 5));
  free(r);
  /* damaged: a wrong wire type for a known field, a group, a truncated varint, a field number 0,
   * packed float_data not a multiple of 4 */
  const uint8_t wt[] = {0x0d, 0, 0, 0, 0};
  CHECK(dd_datum_parse(&v, wt, sizeof wt, err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "field 1 (channels) has wire type 5");
  const uint8_t grp[] = {0x4b};
  CHECK(dd_datum_parse(&v, grp, sizeof grp, err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "group");
  const uint8_t cut[] = {0x10, 0x80};
  CHECK(dd_datum_parse(&v, cut, sizeof cut, err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "byte 0: field 2 (height): a truncated varint");
  const uint8_t zero[] = {0x08, 1, 0x00};
  CHECK(dd_datum_parse(&v, zero, sizeof zero, err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "byte 2: field number 0");
  const uint8_t odd[] = {0x32, 3, 1, 2, 3};
  CHECK(dd_datum_parse(&v, odd, sizeof odd, err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "not a multiple of 4");
  /* the empty record is a Datum (all fields absent), but not a usable sample */
  REQUIRE_OK(dd_datum_parse(&v, buf, 0, err, sizeof err), err);
  dd_datum_sample s;
  dd_datum_buf db = {0};
  CHECK(dd_datum_sample_of(&s, &v, 0, &db, err, sizeof err) == DD_ESHAPE);
  CHECK_CONTAINS(err, "channels 0 height 0 width 0");
  dd_datum_buf_free(&db);
}

int main(void) {
  if (layers_begin()) return 1;
  if (test_scratch_dir(scratch, sizeof scratch, "data_db")) return 1;
  RUN(test_parser);
  RUN(test_lmdb_raw);
  RUN(test_leveldb_raw);
  RUN(test_one_mean_value_no_label);
  RUN(test_float_data);
  RUN(test_encoded);
  RUN(test_mean_file_crop);
  RUN(test_key_order);
  RUN(test_rand_skip_prefetch);
  RUN(test_missing_and_empty);
  RUN(test_not_a_datum);
  RUN(test_bad_fields);
  RUN(test_shape_differs);
  RUN(test_param_errors);
  test_scratch_remove(scratch);
  return layers_end();
}
