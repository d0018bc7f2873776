/* `distilld convert-imageset` (core/data/convert_imageset.c): the 64 PNGs of tests/test_images.h
 * converted to LMDB, read back by Python's lmdb module with the Datum wire format decoded by hand
 * in the script and the PNGs decoded by hand too (zlib and PNG's filters: independent of the
 * project's decoder): keys, order, shapes, labels, pixels in (C, H, W) B, G, R order; --encoded
 * (the file's bytes), --gray with --resize (the same pixels an ImageData layer with new_height /
 * new_width and is_color false gives), --shuffle (a permutation, keys in order), LevelDB, progress
 * lines, and the errors (naming the list file and line). The Python checks print SKIP without
 * /usr/bin/python3's lmdb module. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "data/convert_imageset.h"
#include "net/net.h"
#include "test.h"
#include "test_files.h"
#include "test_images.h"
#include "test_nets.h"

static char dir[256];
static int have_lmdb;

/* The checker: python3 check.py DB MODE [ARGS]. MODE raw: every record against the PNGs (the
 * list's order, or any order for "shuffled"); gray W H: dims only, and dumps the first 8 records'
 * pixels to gray.u8; encoded: the bytes are the files'. */
static const char *CHECK_PY =
    "import lmdb, sys, zlib, struct, os\n"
    "def varint(b, i):\n"
    "    v = s = 0\n"
    "    while True:\n"
    "        c = b[i]; i += 1; v |= (c & 0x7f) << s; s += 7\n"
    "        if c < 0x80: return v, i\n"
    "def datum(b):\n"
    "    d = {'encoded': None}; i = 0\n"
    "    while i < len(b):\n"
    "        key, i = varint(b, i); f, t = key >> 3, key & 7\n"
    "        if t == 0:\n"
    "            v, i = varint(b, i); d[{1: 'channels', 2: 'height', 3: 'width', 5: 'label', 7: 'encoded'}[f]] = v\n"
    "        elif t == 2:\n"
    "            n, i = varint(b, i); assert f == 4, f; d['data'] = b[i:i + n]; i += n\n"
    "        else: raise ValueError('wire type %d' % t)\n"
    "    return d\n"
    "def png(path):\n"
    "    b = open(path, 'rb').read(); assert b[:8] == b'\\x89PNG\\r\\n\\x1a\\n'; i = 8; idat = b''\n"
    "    while i < len(b):\n"
    "        n, = struct.unpack('>I', b[i:i + 4]); t = b[i + 4:i + 8]; c = b[i + 8:i + 8 + n]; i += 12 + n\n"
    "        if t == b'IHDR': w, h, depth, ctype = struct.unpack('>IIBB', c[:10])\n"
    "        if t == b'IDAT': idat += c\n"
    "    assert depth == 8 and ctype == 2, (depth, ctype)\n"
    "    raw = zlib.decompress(idat); stride = 3 * w; rows = []; prev = bytes(stride)\n"
    "    for y in range(h):\n"
    "        ft = raw[y * (stride + 1)]; line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])\n"
    "        for x in range(stride):\n"
    "            a = line[x - 3] if x >= 3 else 0; up = prev[x]; ul = prev[x - 3] if x >= 3 else 0\n"
    "            if ft == 1: line[x] = (line[x] + a) & 255\n"
    "            elif ft == 2: line[x] = (line[x] + up) & 255\n"
    "            elif ft == 3: line[x] = (line[x] + (a + up) // 2) & 255\n"
    "            elif ft == 4:\n"
    "                p = a + up - ul; pa, pb, pc = abs(p - a), abs(p - up), abs(p - ul)\n"
    "                line[x] = (line[x] + (a if pa <= pb and pa <= pc else up if pb <= pc else ul)) & 255\n"
    "        rows.append(bytes(line)); prev = line\n"
    "    return w, h, rows\n"
    "db, mode = sys.argv[1], sys.argv[2]\n"
    "lines = [l.split() for l in open('train.txt')]\n"
    "env = lmdb.open(db, readonly=True, lock=False)\n"
    "with env.begin() as txn: recs = list(txn.cursor())\n"
    "assert len(recs) == len(lines), (len(recs), len(lines))\n"
    "seen = set(); dump = b''\n"
    "for k, (key, val) in enumerate(recs):\n"
    "    key = key.decode(); d = datum(val)\n"
    "    assert key[:9] == '%08d_' % k, key\n"
    "    name = key[9:]; label = dict(lines)[name]; seen.add(name)\n"
    "    if mode != 'shuffled': assert name == lines[k][0], (key, lines[k])\n"
    "    assert d['label'] == int(label), (key, d)\n"
    "    if mode == 'encoded':\n"
    "        assert d['encoded'] == 1 and d['data'] == open('img/' + name, 'rb').read() and 'channels' not in d\n"
    "        continue\n"
    "    assert d['encoded'] == 0, d\n"
    "    if mode == 'gray':\n"
    "        w, h = int(sys.argv[3]), int(sys.argv[4])\n"
    "        assert (d['channels'], d['height'], d['width']) == (1, h, w) and len(d['data']) == w * h, d\n"
    "        if k < 8: dump += d['data']\n"
    "        continue\n"
    "    w, h, rows = png('img/' + name)\n"
    "    assert (d['channels'], d['height'], d['width']) == (3, h, w), d\n"
    "    want = bytes(rows[y][3 * x + 2 - c] for c in range(3) for y in range(h) for x in range(w))\n"
    "    assert d['data'] == want, key\n"
    "assert len(seen) == len(lines)\n"
    "if dump: open('gray.u8', 'wb').write(dump)\n"
    "print('checked', len(recs), 'records of', db)\n";

static int py_check(const char *args) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "cd '%s' && /usr/bin/python3 check.py %s", dir, args);
  return system(cmd);
}

static int lmdb_skip(void) {
  if (!have_lmdb) printf("     SKIP %s: /usr/bin/python3 has no lmdb module\n", test__name);
  return !have_lmdb;
}

static char logbuf[8192];
static void capture(void *ctx, const char *line) {
  (void)ctx;
  size_t used = strlen(logbuf);
  snprintf(logbuf + used, sizeof logbuf - used, "%s\n", line);
}

static int convert(dd_convert_opts o, const char *list, const char *db, char *err, size_t errlen) {
  char l[512], d[512], root[512];
  snprintf(l, sizeof l, "%s/%s", dir, list);
  snprintf(d, sizeof d, "%s/%s", dir, db);
  snprintf(root, sizeof root, "%s/img/", dir);
  o.root = root;
  o.list = l;
  o.db = d;
  o.log = capture;
  logbuf[0] = '\0';
  return dd_convert_imageset(&o, NULL, err, errlen);
}

static void test_raw_lmdb(void) {
  char err[1024];
  REQUIRE_OK(convert((dd_convert_opts){.progress_every = 10}, "train.txt", "raw_lmdb", err, sizeof err), err);
  CHECK_CONTAINS(logbuf, "A total of 48 images.");
  CHECK_CONTAINS(logbuf, "Processed 10 files.");
  CHECK_CONTAINS(logbuf, "Processed 40 files.");
  CHECK_CONTAINS(logbuf, "Processed 48 files.");
  if (lmdb_skip()) return;
  CHECK(py_check("raw_lmdb raw") == 0);
}

static void test_cli_shuffled_and_encoded(void) {
  char *out = NULL;
  int rc = test_distilld(&out, dir, "convert-imageset --shuffle --seed 3 img/ train.txt shuf_lmdb");
  CHECKF(rc == 0, "%s", test__str(out));
  CHECK_CONTAINS(out, "shuf_lmdb: 48 records (lmdb)");
  free(out);
  rc = test_distilld(&out, dir, "convert-imageset --encoded --backend=lmdb img/ train.txt enc_lmdb");
  CHECKF(rc == 0, "%s", test__str(out));
  free(out);
  if (lmdb_skip()) return;
  CHECK(py_check("shuf_lmdb shuffled") == 0);
  CHECK(py_check("enc_lmdb encoded") == 0);
  /* the shuffle is a real permutation */
  char *keys = NULL;
  char cmd[512];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && /usr/bin/python3 -c \"import lmdb; t = lmdb.open('shuf_lmdb', readonly=True, lock=False)"
           ".begin(); print(next(iter(t.cursor()))[0].decode())\"",
           dir);
  test_capture(&keys, cmd);
  CHECKF(keys && strncmp(keys, "00000000_im_00.png", 18) != 0, "first key %s", test__str(keys));
  free(keys);
}

/* --gray --resize 4x4: the records hold what ImageData (is_color false, new 4x4) feeds a net. */
static void test_gray_resize_matches_image_data(void) {
  char err[1024];
  REQUIRE_OK(convert((dd_convert_opts){.gray = 1, .resize_height = 4, .resize_width = 4}, "train.txt", "gray_lmdb",
                     err, sizeof err),
             err);
  if (lmdb_skip()) return;
  REQUIRE(py_check("gray_lmdb gray 4 4") == 0);
  char path[512], text[1024];
  snprintf(path, sizeof path, "%s/gray.u8", dir);
  char *dump = test_slurp(path);
  REQUIRE(dump != NULL);
  snprintf(text, sizeof text,
           "layer { name: 'd' type: 'ImageData' top: 'data' top: 'label' image_data_param { source: '%s/train.txt' "
           "root_folder: '%s/img/' batch_size: 8 is_color: false new_height: 4 new_width: 4 } }\n",
           dir, dir);
  Caffe__NetParameter *p = test_parse_net(text);
  REQUIRE(p != NULL);
  dd_backend *be = NULL;
  REQUIRE(dd_cpu_backend_create(&be, 1) == 0);
  dd_net *n = NULL;
  int r = dd_net_create(&n, p, CAFFE__PHASE__TEST, be, 1, NULL, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  if (r == 0 && dd_net_forward(n, NULL) == 0) {
    float *x = dd_tensor_data_copy(dd_net_blob(n, "data"));
    int bad = 0;
    for (int i = 0; i < 8 * 16; i++) bad += x[i] != (float)(uint8_t)dump[i];
    CHECKF(bad == 0, "%d of 128 pixels differ between the LMDB and ImageData", bad);
    free(x);
  }
  dd_net_destroy(n);
  dd_cpu_backend_destroy(be);
  caffe__net_parameter__free_unpacked(p, NULL);
  free(dump);
}

static void test_leveldb(void) {
  char err[1024], path[512];
  REQUIRE_OK(convert((dd_convert_opts){.backend = "leveldb"}, "train.txt", "ldb", err, sizeof err), err);
  snprintf(path, sizeof path, "%s/ldb/CURRENT", dir);
  CHECK(test_exists(path));
}

static void test_errors(void) {
  char err[1024], path[512];
  snprintf(path, sizeof path, "%s/bad1.txt", dir);
  REQUIRE(wfile(path, "im_00.png 0\nim_01.png\n"));
  CHECK(convert((dd_convert_opts){0}, "bad1.txt", "e1", err, sizeof err) == DD_EPARSE);
  CHECK_CONTAINS(err, "bad1.txt:2: expected \"PATH LABEL\"");
  snprintf(path, sizeof path, "%s/bad2.txt", dir);
  REQUIRE(wfile(path, "im_00.png 0\n\nim_01.png one\n"));
  CHECK(convert((dd_convert_opts){0}, "bad2.txt", "e2", err, sizeof err) == DD_EPARSE);
  CHECK_CONTAINS(err, "bad2.txt:3: the label \"one\" is not an integer");
  snprintf(path, sizeof path, "%s/bad3.txt", dir);
  REQUIRE(wfile(path, "im_00.png 0\nim_01.png 1\nnot_there.png 2\n"));
  CHECK(convert((dd_convert_opts){0}, "bad3.txt", "e3", err, sizeof err) != 0);
  CHECK_CONTAINS(err, "bad3.txt:3: ");
  CHECK_CONTAINS(err, "not_there.png");
  snprintf(path, sizeof path, "%s/e3", dir);
  CHECK(!test_exists(path)); /* a failed conversion leaves no half-written database */
  REQUIRE_OK(convert((dd_convert_opts){.skip_errors = 1}, "bad3.txt", "e3", err, sizeof err), err);
  CHECK_CONTAINS(logbuf, "warning: ");
  CHECK_CONTAINS(logbuf, "not_there.png");
  CHECK(convert((dd_convert_opts){0}, "bad3.txt", "e3", err, sizeof err) == DD_EIO);
  CHECK_CONTAINS(err, "already exists");
  snprintf(path, sizeof path, "%s/img/corrupt.png", dir);
  REQUIRE(wfile(path, "not a png at all"));
  snprintf(path, sizeof path, "%s/bad4.txt", dir);
  REQUIRE(wfile(path, "im_00.png 0\ncorrupt.png 1\n"));
  CHECK(convert((dd_convert_opts){0}, "bad4.txt", "e4", err, sizeof err) == DD_ECORRUPT);
  CHECK_CONTAINS(err, "bad4.txt:2: ");
  CHECK_CONTAINS(err, "corrupt.png");
  CHECK(convert((dd_convert_opts){.resize_height = 4}, "train.txt", "e5", err, sizeof err) == DD_EINVAL);
  CHECK_CONTAINS(err, "--resize_height and --resize_width together");
  CHECK(convert((dd_convert_opts){.backend = "rocksdb"}, "train.txt", "e6", err, sizeof err) == DD_EINVAL);
  CHECK_CONTAINS(err, "unknown database backend \"rocksdb\"");
  char *out = NULL;
  CHECK(test_distilld(&out, dir, "convert-imageset img/ bad1.txt e7") == 1);
  CHECK_CONTAINS(out, "bad1.txt:2:");
  free(out);
  CHECK(test_distilld(&out, dir, "convert-imageset img/ train.txt") == 2);
  CHECK_CONTAINS(out, "usage: distilld convert-imageset");
  free(out);
  CHECK(test_distilld(&out, dir, "convert-imageset --bogus img/ train.txt x") == 2);
  CHECK_CONTAINS(out, "convert-imageset: unknown option \"--bogus\"");
  free(out);
}

int main(void) {
  if (test_scratch_dir(dir, sizeof dir, "convert")) return 1;
  if (test_make_images(dir)) return 1;
  char path[512];
  snprintf(path, sizeof path, "%s/check.py", dir);
  if (!wfile(path, "%s", CHECK_PY)) return 1;
  have_lmdb = system("/usr/bin/python3 -c 'import lmdb' 2>/dev/null") == 0;
  RUN(test_raw_lmdb);
  RUN(test_cli_shuffled_and_encoded);
  RUN(test_gray_resize_matches_image_data);
  RUN(test_leveldb);
  RUN(test_errors);
  test_scratch_remove(dir);
  return test_summary();
}
