/* `distilld check` end to end: runs the real binary on the seed files and on nets and weights
 * made here, and checks exit codes (0 clean, 1 warnings, 2 errors) and what it tells the user. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format/caffe_io.h"
#include "test.h"
#include "test_files.h"
#include "format/textformat.h"

#define SEED DD_TEST_DATA "/seed/"
#define REF DD_TEST_DATA "/caffe-reference/"

static char tmpdir[256];

/* Runs `distilld ARGS` (a shell-quoted argument string), capturing stdout+stderr into a malloc'd
 * string; returns the exit status (-1 if it did not exit normally). */
static int run(char **out, const char *args) { return test_distilld(out, NULL, "%s", args); }

static void write_text(const char *path, const char *text) { wfile(path, "%s", text); }

static void test_seed_net_warns(void) {
  char *out;
  int st = run(&out, "check '" SEED "seed_net.prototxt'");
  CHECK(st == 1);
  CHECK_CONTAINS(out, "warning: res2_1a_1_bn:");
  CHECK_CONTAINS(out, "batch_norm_param { use_global_stats: true }");
  CHECK_CONTAINS(out, "res2_1a_1_scale");
  CHECK_CONTAINS(out, "[2] res2_1a_1_bn (BatchNorm) conv1 -> res2_1a_1_bn");
  CHECK_CONTAINS(out, "check: 0 error(s), 1 warning(s)");
  free(out);
}

/* The seed net with the two layers the answer fixed: no warning at all. */
static void test_seed_fixed_is_clean(void) {
  Caffe__NetParameter *net = NULL, *fix = NULL;
  char err[1024];
  REQUIRE_OK(dd_net_read_text(&net, SEED "seed_net.prototxt", err, sizeof err), err);
  REQUIRE_OK(dd_net_read_text(&fix, SEED "seed_fixed_layers.prototxt", err, sizeof err), err);
  REQUIRE(fix->n_layer == 2);
  int replaced = 0;
  for (size_t i = 0; i < net->n_layer; i++)
    for (size_t j = 0; j < fix->n_layer; j++)
      if (!strcmp(net->layer[i]->name, fix->layer[j]->name)) {
        Caffe__LayerParameter *t = net->layer[i];
        net->layer[i] = fix->layer[j];
        fix->layer[j] = t;
        replaced++;
      }
  CHECK(replaced == 2);
  char path[512];
  snprintf(path, sizeof path, "%s/seed_fixed_net.prototxt", tmpdir);
  char *text = dd_text_print(&net->base);
  REQUIRE(text);
  write_text(path, text);
  free(text);
  caffe__net_parameter__free_unpacked(net, NULL);
  caffe__net_parameter__free_unpacked(fix, NULL);
  char args[1024], *out;
  snprintf(args, sizeof args, "check '%s'", path);
  int st = run(&out, args);
  CHECKF(st == 0, "exit %d, output:\n%s", st, out);
  CHECK(strstr(out, "warning:") == NULL);
  CHECK_CONTAINS(out, "check: 0 error(s), 0 warning(s)");
  free(out);
  /* and in TEST */
  snprintf(args, sizeof args, "check '%s' --phase TEST", path);
  st = run(&out, args);
  CHECK(st == 0);
  free(out);
}

static void test_seed_oneline_fails(void) {
  char *out;
  int st = run(&out, "check '" SEED "seed_net_oneline.prototxt'");
  CHECK(st == 2);
  /* It points at the '{' of image_data_param, on line 2, and explains the comment. */
  CHECK_CONTAINS(out, "seed_net_oneline.prototxt:2:");
  CHECK_CONTAINS(out, "'{' opened here for field \"image_data_param\" is never closed");
  CHECK_CONTAINS(out, "'#' comment");
  CHECK(strstr(out, "\n[0] ") == NULL); /* no summary for a net that did not parse */
  free(out);
}

static void test_seed_solvers(void) {
  char *out;
  int st = run(&out, "check '" SEED "seed_net.prototxt' --solver '" SEED "seed_solver_as_pasted.prototxt'");
  CHECK(st == 2);
  CHECK_CONTAINS(out, "seed_solver_as_pasted.prototxt:1:12:");
  CHECK_CONTAINS(out, "100");
  CHECK_CONTAINS(out, "\"test_interval\"");
  free(out);
  st = run(&out, "check '" SEED "seed_net.prototxt' --solver '" SEED "seed_solver.prototxt'");
  CHECK(st == 1); /* parses; warns about the net's BatchNorm and base_lr 0 */
  CHECK_CONTAINS(out, "lr_policy poly");
  CHECK_CONTAINS(out, "warning: base_lr:");
  free(out);
}

static void test_weights(void) {
  char *out;
  int st = run(&out, "check '" REF "net_resblock.prototxt' --weights '" REF "resblock/init.caffemodel'");
  CHECKF(st == 0, "exit %d:\n%s", st, out);
  CHECK_CONTAINS(out, "weights: 6x3x3x3");
  free(out);
  /* A weights file whose fc blob has the wrong shape: error naming layer and both shapes. */
  Caffe__NetParameter *w = NULL;
  char err[512], path[512], args[1024];
  REQUIRE_OK(dd_caffemodel_read(&w, REF "resblock/init.caffemodel", err, sizeof err), err);
  for (size_t i = 0; i < w->n_layer; i++)
    if (!strcmp(w->layer[i]->name, "fc")) {
      Caffe__BlobShape *s = w->layer[i]->blobs[0]->shape;
      REQUIRE(s && s->n_dim == 2);
      int64_t t = s->dim[0];
      s->dim[0] = s->dim[1];
      s->dim[1] = t;
    }
  snprintf(path, sizeof path, "%s/transposed.caffemodel", tmpdir);
  REQUIRE(dd_caffemodel_write(w, path, err, sizeof err) == 0);
  caffe__net_parameter__free_unpacked(w, NULL);
  snprintf(args, sizeof args, "check '" REF "net_resblock.prototxt' --weights '%s'", path);
  st = run(&out, args);
  CHECK(st == 2);
  CHECK_CONTAINS(out, "error: fc: blob 0 in");
  CHECK_CONTAINS(out, "has shape 6x7, but the net needs 7x6");
  free(out);
  /* A weights file that does not exist. */
  st = run(&out, "check '" REF "net_resblock.prototxt' --weights /nonexistent/w.caffemodel");
  CHECK(st == 2);
  CHECK_CONTAINS(out, "/nonexistent/w.caffemodel");
  free(out);
}

static void test_usage_and_bad_files(void) {
  char *out;
  CHECK(run(&out, "check") == 2);
  CHECK_CONTAINS(out, "usage");
  free(out);
  CHECK(run(&out, "check '" SEED "seed_net.prototxt' --phase TRAINING") == 2);
  CHECK_CONTAINS(out, "--phase takes TRAIN or TEST");
  free(out);
  CHECK(run(&out, "check /nonexistent/net.prototxt") == 2);
  CHECK_CONTAINS(out, "/nonexistent/net.prototxt");
  free(out);
  CHECK(run(&out, "frobnicate") == 2);
  CHECK_CONTAINS(out, "unknown command");
  free(out);
  char path[512], args[1024];
  snprintf(path, sizeof path, "%s/v1.prototxt", tmpdir);
  write_text(path, "name: 'old'\nlayers { name: 'conv1' type: CONVOLUTION bottom: 'data' top: 'conv1'\n"
                   "  convolution_param { num_output: 4 kernel_size: 3 } }\n");
  snprintf(args, sizeof args, "check '%s'", path);
  CHECK(run(&out, args) == 2);
  CHECK_CONTAINS(out, "V1");
  free(out);
  snprintf(path, sizeof path, "%s/unknown_field.prototxt", tmpdir);
  write_text(path, "layer {\n  name: 'd'\n  type: 'ImageData'\n  image_data_param {\n    source: 'x.txt'\n    pair_size: 3\n  }\n}\n");
  snprintf(args, sizeof args, "check '%s'", path);
  CHECK(run(&out, args) == 2);
  CHECK_CONTAINS(out, "unknown_field.prototxt:6:5: unknown field \"pair_size\" in ImageDataParameter");
  free(out);
}

/* The example nets shipped in configs/ check clean in both phases. */
static void test_shipped_configs_clean(void) {
  const char *nets[] = {"wrn_16_4_fmnist_train_val.prototxt", "wrn_16_4_fmnist_deploy.prototxt",
                        "wrn_16_1_fmnist_train_val.prototxt", "wrn_10_1_fmnist_train_val.prototxt",
                        "wrn_10_2_fmnist_train_val.prototxt", "wrn_10_2_fmnist_deploy.prototxt"};
  for (size_t i = 0; i < sizeof nets / sizeof nets[0]; i++) {
    for (int ph = 0; ph < 2; ph++) {
      char args[1024], *out;
      snprintf(args, sizeof args, "check '%s/configs/%s' --phase %s", DD_SOURCE_DIR, nets[i], ph ? "TEST" : "TRAIN");
      int st = run(&out, args);
      CHECKF(st == 0, "%s %s: exit %d\n%s", nets[i], ph ? "TEST" : "TRAIN", st, out);
      free(out);
    }
  }
}

/* The shipped jobs that need no trained weights validate and check clean from the source tree. */
static void test_shipped_jobs_validate(void) {
  const char *jobs[] = {"configs/job_fmnist_teacher.prototxt", "configs/job_fmnist_student_alone.prototxt",
                        "configs/quickstart_teacher.prototxt", "configs/quickstart_student_alone.prototxt"};
  for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
    char cmd[2048], *out;
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' check --job %s 2>&1", DD_SOURCE_DIR, DISTILLD_EXE, jobs[i]);
    int st = test_capture(&out, cmd);
    CHECKF(st == 0, "%s: exit %d\n%s", jobs[i], st, out);
    free(out);
  }
  /* the distillation job names a teacher snapshot that a teacher job must make first */
  char cmd[2048], *out;
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' check --job configs/job_fmnist_distill.prototxt 2>&1", DD_SOURCE_DIR,
           DISTILLD_EXE);
  CHECK(test_capture(&out, cmd) == 2);
  CHECK_CONTAINS(out, "teacher.weights[0]");
  free(out);
}

/* NetState stages and levels (Caffe's FilterNet): the net's own state, --stage/--level replacing
 * it (Caffe's command line), and a solver's test_state merged into it (Caffe's Solver). The TEST
 * data of this net exists only in a stage, as in BVLC's mnist_autoencoder. */
static void test_stages(void) {
  char net[512], solver[512], cmd[2048];
  snprintf(net, sizeof net, "%s/staged.prototxt", tmpdir);
  snprintf(solver, sizeof solver, "%s/staged_solver.prototxt", tmpdir);
  write_text(net,
             "name: \"staged\"\n"
             "layer { name: \"d\" type: \"Input\" top: \"x\" include { phase: TEST stage: \"small\" }\n"
             "  input_param { shape { dim: 2 dim: 3 } } }\n"
             "layer { name: \"d\" type: \"Input\" top: \"x\" include { phase: TEST stage: \"big\" }\n"
             "  input_param { shape { dim: 4 dim: 5 } } }\n"
             "layer { name: \"d\" type: \"Input\" top: \"x\" include { phase: TRAIN }\n"
             "  input_param { shape { dim: 6 dim: 7 } } }\n"
             "layer { name: \"deep\" type: \"ReLU\" bottom: \"x\" top: \"y\" include { min_level: 2 } }\n"
             "layer { name: \"out\" type: \"Power\" bottom: \"x\" top: \"z\" exclude { stage: \"big\" } }\n");
  char *out;
  snprintf(cmd, sizeof cmd, "check '%s' --phase TEST", net);
  CHECK(run(&out, cmd) == 2); /* no stage: no data layer in TEST */
  CHECK_CONTAINS(out, "bottom \"x\" is not produced");
  free(out);
  snprintf(cmd, sizeof cmd, "check '%s' --phase TEST --stage small", net);
  CHECK(run(&out, cmd) == 0);
  CHECK_CONTAINS(out, "2 of 5 layers");
  CHECK_CONTAINS(out, "tops: x 2x3");
  CHECK_CONTAINS(out, "(Power)");
  free(out);
  snprintf(cmd, sizeof cmd, "check '%s' --phase TEST --stage big --level 2", net);
  CHECK(run(&out, cmd) == 0);
  CHECK_CONTAINS(out, "tops: x 4x5");
  CHECK_CONTAINS(out, "(ReLU)");
  CHECK(!strstr(out, "(Power)")); /* excluded in stage big */
  free(out);
  snprintf(cmd, sizeof cmd, "check '%s' --phase TEST --stage big --level x", net);
  CHECK(run(&out, cmd) == 2);
  CHECK_CONTAINS(out, "--level takes an integer");
  free(out);
  /* time builds the same state */
  snprintf(cmd, sizeof cmd, "time --model '%s' --phase TEST --stage big --iterations 1", net);
  CHECK(run(&out, cmd) == 0);
  free(out);
  snprintf(cmd, sizeof cmd, "time --model '%s' --phase TEST --iterations 1", net);
  CHECK(run(&out, cmd) != 0);
  free(out);
  /* a solver's test_state picks the TEST stage, its train_state's level the TRAIN net's layers */
  wfile(solver, "net: \"%s\"\ntest_state { stage: \"big\" }\ntrain_state { level: 3 }\n"
                "test_state { stage: \"small\" }\ntest_iter: 1\ntest_iter: 1\ntest_interval: 10\n"
                "base_lr: 0.1\nlr_policy: \"fixed\"\nmax_iter: 1\n", net);
  snprintf(cmd, sizeof cmd, "check --solver '%s' --phase TEST", solver);
  CHECK(run(&out, cmd) == 1);
  CHECK_CONTAINS(out, "tops: x 4x5");
  CHECK_CONTAINS(out, "2 test_state values given");
  free(out);
  snprintf(cmd, sizeof cmd, "check --solver '%s' --phase TRAIN", solver);
  CHECK(run(&out, cmd) == 1);
  CHECK_CONTAINS(out, "tops: x 6x7");
  CHECK_CONTAINS(out, "(ReLU)");
  free(out);
  CHECK(run(&out, "check --help") == 0);
  CHECK_CONTAINS(out, "--stage S");
  free(out);
  CHECK(run(&out, "time --help") == 0);
  CHECK_CONTAINS(out, "usage:");
  free(out);
}

int main(void) {
  if (test_scratch_dir(tmpdir, sizeof tmpdir, "check_cli")) return 1;
  RUN(test_seed_net_warns);
  RUN(test_seed_fixed_is_clean);
  RUN(test_seed_oneline_fails);
  RUN(test_seed_solvers);
  RUN(test_weights);
  RUN(test_usage_and_bad_files);
  RUN(test_shipped_configs_clean);
  RUN(test_shipped_jobs_validate);
  RUN(test_stages);
  test_scratch_remove(tmpdir);
  return test_summary();
}
