/* The engine's verbs end to end, through the real binary: `distilld train` on a small WRN with
 * generated inputs (the loss falls; snapshots resume to the same bytes), `distilld forward
 * --dump` on Caffe's reference net (the dumped blobs equal Caffe's), `distilld test` and
 * `distilld time`, the seed net's structure behind an Input layer, and bad invocations. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format/caffe_io.h"
#include "format/fileio.h"
#include "test.h"
#include "format/textformat.h"

#define REF DD_TEST_DATA "/caffe-reference/"

static char tmp[128];

static int run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* `distilld ARGS` in tmp (stdout and stderr together). */
static int run(char **out, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int st = test_distilld_v(out, tmp, fmt, ap);
  va_end(ap);
  return st;
}

/* Loss values from "iter N/M loss X" log lines, in order. */
static int losses(const char *log, double *out, int max) {
  int n = 0;
  for (const char *p = log; (p = strstr(p, " loss ")) && n < max; p += 6) out[n++] = atof(p + 6);
  return n;
}

static void test_train_and_resume(void) {
  test_sh("cd '%s' && python3 '%s/scripts/gen_wrn.py' --depth 10 --width 1 --mode deploy --channels 3 --size 16 --batch 16 --classes 5 > body.prototxt",
     tmp, DD_SOURCE_DIR);
  test_sh("cd '%s' && sed -e 's|top: \"data\"$|top: \"data\" top: \"label\"|' -e 's|input_param { shape { dim: 16 dim: 3 dim: 16 dim: 16 } }|input_param { shape { dim: 16 dim: 3 dim: 16 dim: 16 } shape { dim: 16 } }|' body.prototxt > net.prototxt && "
     "echo 'layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"fc\" bottom: \"label\" top: \"loss\" }' >> net.prototxt",
     tmp);
  test_sh("cd '%s' && python3 '%s/scripts/make_blob.py' --shape 16,3,16,16 --fill gaussian --seed 3 -o data.bp && "
     "python3 '%s/scripts/make_blob.py' --shape 16 --fill labels:5 --seed 4 -o label.bp",
     tmp, DD_SOURCE_DIR, DD_SOURCE_DIR);
  const char *solver =
      "net: 'net.prototxt' base_lr: 0.05 momentum: 0.9 weight_decay: 0.0005 lr_policy: 'step' gamma: 0.5 stepsize: 15 "
      "max_iter: 30 display: 5 snapshot: 15 random_seed: 9 solver_mode: CPU";
  char path[512];
  snprintf(path, sizeof path, "%s/a.prototxt", tmp);
  FILE *f = fopen(path, "w");
  REQUIRE(f);
  fprintf(f, "%s snapshot_prefix: 'a'\n", solver);
  fclose(f);
  snprintf(path, sizeof path, "%s/b.prototxt", tmp);
  f = fopen(path, "w");
  REQUIRE(f);
  fprintf(f, "%s snapshot_prefix: 'b'\n", solver);
  fclose(f);
  char *out;
  int st = run(&out, "train --solver a.prototxt --input data=data.bp --input label=label.bp --threads 2");
  CHECKF(st == 0, "exit %d:\n%s", st, out);
  CHECK_CONTAINS(out, "OpenBLAS");
  CHECK_CONTAINS(out, "snapshot at iter 15");
  CHECK_CONTAINS(out, "a_iter_30.caffemodel");
  double l[16];
  int nl = losses(out, l, 16);
  CHECKF(nl >= 5 && l[nl - 1] < 0.5 * l[0], "loss did not fall: %d values, first %g last %g", nl, nl ? l[0] : 0, nl ? l[nl - 1] : 0);
  free(out);
  /* resume from 15 under another prefix: the final weights are the same bytes */
  st = run(&out, "train --solver b.prototxt --snapshot a_iter_15.solverstate --input data=data.bp --input label=label.bp --threads 2");
  CHECKF(st == 0, "exit %d:\n%s", st, out);
  CHECK_CONTAINS(out, "resumed from a_iter_15.solverstate at iter 15");
  free(out);
  char *x, *y, err[256];
  size_t lx, ly;
  char pa[512], pb[512];
  snprintf(pa, sizeof pa, "%s/a_iter_30.caffemodel", tmp);
  snprintf(pb, sizeof pb, "%s/b_iter_30.caffemodel", tmp);
  REQUIRE_OK(dd_read_file(&x, &lx, pa, err, sizeof err), err);
  REQUIRE_OK(dd_read_file(&y, &ly, pb, err, sizeof err), err);
  CHECK(lx == ly && memcmp(x, y, lx) == 0);
  free(x);
  free(y);
  /* test and time on the trained weights */
  st = run(&out, "test --model net.prototxt --weights a_iter_30.caffemodel --iterations 2 --input data=data.bp --input label=label.bp");
  CHECKF(st == 0, "exit %d:\n%s", st, out);
  CHECK_CONTAINS(out, "loss = ");
  free(out);
  st = run(&out, "time --model net.prototxt --iterations 2");
  CHECKF(st == 0, "exit %d:\n%s", st, out);
  CHECK_CONTAINS(out, "forward+backward");
  CHECK_CONTAINS(out, "g1_b1_conv1");
  /* after the table, a line per convolution naming how it runs (not its type again) */
  const char *row = strstr(out, "\ng1_b1_conv1 "), *impl = row ? strstr(row + 1, "\ng1_b1_conv1 ") : NULL;
  const char *eol = impl ? strchr(impl + 1, '\n') : NULL;
  char line[256] = "";
  if (impl && eol) snprintf(line, sizeof line, "%.*s", (int)(eol - impl), impl);
  CHECKF(strlen(line) > 30 && !strstr(line, "Convolution"),
         "no implementation line for g1_b1_conv1:\n%s", out);
  free(out);
}

/* forward --dump on Caffe's reference block: the dumped blobs equal Caffe's. */
static void test_forward_dump_matches_caffe(void) {
  test_sh("cd '%s' && python3 '%s/scripts/make_blob.py' --shape 2,3,9,9 --fill sin -o x.bp", tmp, DD_SOURCE_DIR);
  FILE *f;
  char path[512];
  snprintf(path, sizeof path, "%s/lab.bp", tmp);
  Caffe__BlobProto b;
  caffe__blob_proto__init(&b);
  float lab[2] = {1, 3};
  int64_t dim = 2;
  Caffe__BlobShape s;
  caffe__blob_shape__init(&s);
  s.n_dim = 1;
  s.dim = &dim;
  b.shape = &s;
  b.n_data = 2;
  b.data = lab;
  char err[512];
  REQUIRE(dd_binaryproto_write(&b, path, err, sizeof err) == 0);
  char *out;
  int st = run(&out, "forward --model '" REF "net_resblock.prototxt' --weights '" REF
                     "resblock/init.caffemodel' --input data=x.bp --input label=lab.bp --backward --dump dump");
  CHECKF(st == 0, "exit %d:\n%s", st, out);
  CHECK_CONTAINS(out, "loss = 1.6954");
  free(out);
  const char *names[] = {"conv1", "bn1", "sum", "fc", "data_data_0_split_1"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    Caffe__BlobProto *got = NULL;
    snprintf(path, sizeof path, "%s/dump/%s.binaryproto", tmp, names[i]);
    REQUIRE(dd_binaryproto_read(&got, path, err, sizeof err) == 0);
    char ref[512];
    float vals[512];
    snprintf(ref, sizeof ref, REF "resblock/fwd_bwd/blob_data__%s.f32", names[i]);
    f = fopen(ref, "rb");
    REQUIRE(f);
    size_t n = fread(vals, 4, 512, f);
    fclose(f);
    CHECK(n == got->n_data);
    double num = 0, den = 0;
    for (size_t k = 0; k < n && k < got->n_data; k++) {
      num += (got->data[k] - vals[k]) * (got->data[k] - vals[k]);
      den += vals[k] * vals[k];
    }
    CHECKF(sqrt(num / den) < 1e-5, "%s differs from Caffe: %g", names[i], sqrt(num / den));
    CHECK(got->n_diff == got->n_data); /* --backward dumps diffs too */
    caffe__blob_proto__free_unpacked(got, NULL);
  }
  snprintf(path, sizeof path, "%s/dump/conv1.0.binaryproto", tmp);
  CHECK(access(path, F_OK) == 0);
}

/* The seed net's structure behind an Input layer builds and runs (its data layer is ImageData,
 * which needs the image pipeline). */
static void test_seed_structure_runs(void) {
  Caffe__NetParameter *n = NULL;
  char err[1024];
  REQUIRE_OK(dd_net_read_text(&n, DD_TEST_DATA "/seed/seed_net.prototxt", err, sizeof err), err);
  /* drop the two ImageData layers, put an Input layer first */
  size_t k = 0;
  for (size_t i = 0; i < n->n_layer; i++) {
    if (!strcmp(n->layer[i]->type, "ImageData"))
      caffe__layer_parameter__free_unpacked(n->layer[i], NULL);
    else
      n->layer[k++] = n->layer[i];
  }
  n->n_layer = k;
  char *body = dd_text_print(&n->base);
  caffe__net_parameter__free_unpacked(n, NULL);
  REQUIRE(body);
  char path[512];
  snprintf(path, sizeof path, "%s/seed_input.prototxt", tmp);
  FILE *f = fopen(path, "w");
  REQUIRE(f);
  fprintf(f, "layer { name: 'data' type: 'Input' top: 'data' top: 'label' input_param { shape { dim: 8 dim: 3 dim: 32 dim: 32 } shape { dim: 8 } } }\n%s", body);
  fclose(f);
  free(body);
  test_sh("cd '%s' && python3 '%s/scripts/make_blob.py' --shape 8,3,32,32 --fill gaussian -o sd.bp && python3 '%s/scripts/make_blob.py' --shape 8 --fill labels:100 -o sl.bp",
     tmp, DD_SOURCE_DIR, DD_SOURCE_DIR);
  char *out;
  int st = run(&out, "forward --model seed_input.prototxt --input data=sd.bp --input label=sl.bp --backward --dump seed_dump");
  CHECKF(st == 0, "exit %d:\n%s", st, out);
  free(out);
  st = run(&out, "check seed_input.prototxt");
  CHECK(st == 1); /* and the trap is still flagged */
  CHECK_CONTAINS(out, "res2_1a_1_bn");
  free(out);
}

static void test_bad_invocations(void) {
  char *out;
  CHECK(run(&out, "train") == 2);
  CHECK_CONTAINS(out, "usage");
  free(out);
  CHECK(run(&out, "train --solver /nonexistent/solver.prototxt") == 2);
  CHECK_CONTAINS(out, "/nonexistent/solver.prototxt");
  free(out);
  CHECK(run(&out, "forward --model '" REF "net_resblock.prototxt' --input data --dump d") == 2);
  CHECK_CONTAINS(out, "NAME=FILE");
  free(out);
  CHECK(run(&out, "forward --model '" REF "net_resblock.prototxt' --input nope=x.bp --dump d") != 0);
  CHECK_CONTAINS(out, "no blob \"nope\"");
  free(out);
  /* a list file that is not there: a clear error naming the layer and the file, not a crash */
  CHECK(run(&out, "time --model '%s/configs/wrn_16_1_fmnist_train_val.prototxt' --iterations 1", DD_SOURCE_DIR) != 0);
  CHECK_CONTAINS(out, "layer \"data\": data/fashion-mnist/train.txt: cannot open");
  free(out);
}

int main(void) {
  if (test_scratch_dir(tmp, sizeof tmp, "train_cli")) return 1;
  RUN(test_train_and_resume);
  RUN(test_forward_dump_matches_caffe);
  RUN(test_seed_structure_runs);
  RUN(test_bad_invocations);
  test_scratch_remove(tmp);
  return test_summary();
}
