/* The job entry point (core/train/job.h) on the CPU:
 * 1. the path policy is asked for every file core opens (the student net, each data layer's list,
 *    every image each list names, the output directory), with the field each came from;
 * 2. a policy's refusal fails the job with its message, before a single iteration, and a refused
 *    output directory is never created;
 * 3. DD_START_NEW_OUTPUT refuses an output directory holding snapshots; DD_START_RESUME takes the
 *    newest one (dd_snapshot_find) and goes on from its iteration;
 * 4. the placement: one device (a backend's description) or ranks (one per device of the job);
 *    a multi-node job without a rendezvous fails naming the field;
 * 5. the layers the trainer adds are built as messages: a student whose data layer and logits
 *    carry quotes and spaces in their names distils (a prototxt round trip broke on them);
 * 6. the hooks' names are final: "ce_loss" among the progress terms, "test_acc" among the test
 *    fields. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "devices/devices.h"
#include "format/textformat.h"
#include "train/job.h"
#include "test.h"
#include "test_files.h"
#include "test_images.h"

static char tmp[256];

/* ---- a recording policy --------------------------------------------------------------------------- */

#define MAX_ASKED 512
static struct {
  int n, n_images, n_output;
  char field[MAX_ASKED][200];
  char path[MAX_ASKED][300];
  const char *refuse;        /* a path suffix to refuse (NULL: allow everything) */
  int refuse_output;         /* refuse the output directory */
} pol;

static int policy_check(void *ctx, dd_path_access access, const char *field, const char *path, char *err,
                        size_t errlen) {
  (void)ctx;
  if (pol.n < MAX_ASKED) {
    snprintf(pol.field[pol.n], sizeof pol.field[0], "%s", field);
    snprintf(pol.path[pol.n], sizeof pol.path[0], "%s", path);
    pol.n++;
  }
  size_t n = strlen(path);
  if (n > 4 && !strcmp(path + n - 4, ".png")) pol.n_images++;
  if (access == DD_PATH_OUTPUT) pol.n_output++;
  if (access == DD_PATH_OUTPUT && pol.refuse_output)
    return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s\" is not for this test: refused", field, path);
  if (pol.refuse && n >= strlen(pol.refuse) && !strcmp(path + n - strlen(pol.refuse), pol.refuse))
    return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s\" is not for this test: refused", field, path);
  return 0;
}

/* The index of the first question whose path ends in `suffix` (and whose field holds `field`), or -1. */
static int asked(const char *suffix, const char *field) {
  for (int i = 0; i < pol.n; i++) {
    size_t n = strlen(pol.path[i]), k = strlen(suffix);
    if (n >= k && !strcmp(pol.path[i] + n - k, suffix) && (!field || strstr(pol.field[i], field))) return i;
  }
  return -1;
}

/* ---- hooks that keep what they saw ---------------------------------------------------------------- */

static struct {
  int progress, tests, placed, placed_ranks;
  int64_t data_errors; /* the largest a progress report gave */
  int saw_ce_loss, saw_plain_loss, saw_test_acc;
  char placed_backend[256];
  char log[1 << 14];
} seen;

static void h_log(void *ctx, int level, const char *msg) {
  (void)ctx;
  size_t used = strlen(seen.log);
  snprintf(seen.log + used, sizeof seen.log - used, "[%d] %s\n", level, msg);
}

static void h_progress(void *ctx, const dd_distill_progress *p) {
  (void)ctx;
  seen.progress++;
  if (p->data_errors > seen.data_errors) seen.data_errors = p->data_errors;
  for (int i = 0; i < p->n_terms; i++) {
    if (!strcmp(p->term_names[i], "ce_loss")) seen.saw_ce_loss = 1;
    if (!strcmp(p->term_names[i], "loss")) seen.saw_plain_loss = 1;
  }
}

static void h_test(void *ctx, const dd_distill_test *t) {
  (void)ctx;
  seen.tests++;
  for (int i = 0; i < t->n; i++)
    if (!strcmp(t->fields[i], "test_acc") && !strcmp(t->names[i], "accuracy")) seen.saw_test_acc = 1;
}

static void h_placed(void *ctx, const dd_job_placement *p) {
  (void)ctx;
  seen.placed++;
  seen.placed_ranks = p->ranks;
  snprintf(seen.placed_backend, sizeof seen.placed_backend, "%s", p->backend ? p->backend : "");
}

/* Runs the job text `text` from tmp with `start`; the policy records (and refuses as pol says),
 * unless no_policy is set (then no policy at all, as `distilld train --job`). */
static int no_policy;
static int run_job(const char *text, dd_job_start start, dd_job_result *res, char *err, size_t errlen) {
  memset(&seen, 0, sizeof seen);
  const char *refuse = pol.refuse;
  int refuse_output = pol.refuse_output;
  memset(&pol, 0, sizeof pol);
  pol.refuse = refuse;
  pol.refuse_output = refuse_output;
  Distilld__DistillJob *job = NULL;
  int r = dd_text_parse((ProtobufCMessage **)&job, &distilld__distill_job__descriptor, text, strlen(text), "job", err, errlen);
  if (r) return r;
  dd_path_policy policy = {.check = policy_check};
  dd_job_opts o = {.base_dir = tmp, .devices = dd_devices_builtin(), .threads = 1, .start = start,
                   .policy = no_policy ? NULL : &policy,
                   .placed = h_placed,
                   .hooks = {.log = h_log, .progress = h_progress, .test = h_test}};
  r = dd_job_run(job, &o, res, err, errlen);
  distilld__distill_job__free_unpacked(job, NULL);
  return r;
}

#define SOLVER(max_iter, snapshot)                                                                     \
  " solver { base_lr: 0.05 momentum: 0.9 lr_policy: 'fixed' max_iter: " #max_iter " display: 1"         \
  " test_iter: 2 test_interval: " #max_iter " snapshot: " #snapshot " random_seed: 5 }"

/* ---- 1, 2. the policy ------------------------------------------------------------------------------ */

static void test_setup(void) {
  REQUIRE(test_scratch_dir(tmp, sizeof tmp, "dd_job") == 0);
  REQUIRE(test_make_images(tmp) == 0);
  /* the lists resolve against the job's base_dir here; root_folder names tmp */
  REQUIRE(test_write_rooted_student(tmp, TEST_NET_BODY) == 0);
}

static void test_policy_asked_for_every_file(void) {
  char err[4096];
  dd_job_result res;
  int r = run_job("name: 'a' student { net: 'student.prototxt' } output_dir: 'out/a'" SOLVER(2, 0), DD_START_SCRATCH,
                  &res, err, sizeof err);
  REQUIRE_OK(r, err);
  CHECK(res.iter == 2);
  int i = asked("/student.prototxt", "student.net");
  CHECKF(i >= 0, "the student net was not asked for");
  CHECKF(asked("/train.txt", "image_data_param.source") >= 0, "the TRAIN list was not asked for");
  CHECKF(asked("/test.txt", "image_data_param.source") >= 0, "the TEST list was not asked for");
  /* 48 TRAIN images and 16 TEST images, each asked as its list is read, naming the list and line */
  CHECKF(pol.n_images == 64, "%d images asked for", pol.n_images);
  int k = asked("/img/im_05.png", "train.txt:6");
  CHECKF(k >= 0, "im_05.png was not asked for with its list and line");
  CHECKF(asked("/img/im_50.png", "test.txt:3") >= 0, "im_50.png was not asked for with its list and line");
  CHECKF(pol.n_output >= 1 && asked("/out/a", "output_dir") >= 0, "the output directory was not asked for");
}

static void test_policy_refusals(void) {
  char err[4096], p[512];
  dd_job_result res;
  pol.refuse = "/img/im_07.png";
  int r = run_job("name: 'b' student { net: 'student.prototxt' } output_dir: 'out/b'" SOLVER(2, 0), DD_START_SCRATCH,
                  &res, err, sizeof err);
  pol.refuse = NULL;
  CHECK(r == DD_EPERM);
  CHECK_CONTAINS(err, "refused");
  CHECK_CONTAINS(err, "student.net: layer \"data\" (");
  CHECK_CONTAINS(err, "train.txt:8)");
  CHECK(res.iter == 0);
  /* a refused net: nothing built, validation names the field */
  pol.refuse = "/student.prototxt";
  r = run_job("name: 'c' student { net: 'student.prototxt' } output_dir: 'out/c'" SOLVER(2, 0), DD_START_SCRATCH, &res,
              err, sizeof err);
  pol.refuse = NULL;
  CHECK(r == DD_EPERM);
  CHECK_CONTAINS(err, "student.net: ");
  snprintf(p, sizeof p, "%s/out/c", tmp);
  CHECK(!test_exists(p));
  /* a refused output directory is not created */
  pol.refuse_output = 1;
  r = run_job("name: 'd' student { net: 'student.prototxt' } output_dir: 'out/d'" SOLVER(2, 0), DD_START_SCRATCH, &res,
              err, sizeof err);
  pol.refuse_output = 0;
  CHECK(r == DD_EPERM);
  CHECK_CONTAINS(err, "output_dir: ");
  snprintf(p, sizeof p, "%s/out/d", tmp);
  CHECKF(!test_exists(p), "%s was created", p);
}

/* ---- 3. where training starts ------------------------------------------------------------------------ */

static void test_start_rules(void) {
  char err[4096];
  dd_job_result res;
  int r = run_job("name: 'e' student { net: 'student.prototxt' } output_dir: 'out/e'" SOLVER(4, 2), DD_START_NEW_OUTPUT,
                  &res, err, sizeof err);
  REQUIRE_OK(r, err);
  CHECK(res.iter == 4 && res.resumed_iter == 0);
  r = run_job("name: 'e' student { net: 'student.prototxt' } output_dir: 'out/e'" SOLVER(6, 2), DD_START_NEW_OUTPUT, &res,
              err, sizeof err);
  CHECK(r == DD_EINVAL);
  CHECK_CONTAINS(err, "output_dir: \"out/e\" already holds snapshots of an earlier run");
  CHECK(seen.placed == 0);
  r = run_job("name: 'e' student { net: 'student.prototxt' } output_dir: 'out/e'" SOLVER(6, 2), DD_START_RESUME, &res, err,
              sizeof err);
  REQUIRE_OK(r, err);
  CHECKF(res.resumed_iter == 4 && res.iter == 6, "resumed at %d, ended at %d", res.resumed_iter, res.iter);
  CHECK_CONTAINS(seen.log, "e_iter_4.solverstate");
  /* the newest snapshot of the job, by iteration (not by name order: 6 > 4 > 2, 10 would sort first) */
  char dir[512], state[1024];
  int it = -1;
  snprintf(dir, sizeof dir, "%s/out/e/snapshots", tmp);
  CHECK(dd_snapshot_find(dir, "e", &it, state, sizeof state) == 1 && it == 6);
  CHECK(dd_snapshot_find(dir, "other", &it, state, sizeof state) == 0);
  CHECK(dd_snapshot_find(dir, NULL, &it, NULL, 0) == 1 && it == 6);
}

/* ---- 4. placement ------------------------------------------------------------------------------------- */

static void test_placement(void) {
  char err[4096];
  dd_job_result res;
  int r = run_job("name: 'f' student { net: 'student.prototxt' } output_dir: 'out/f'" SOLVER(2, 0), DD_START_SCRATCH,
                  &res, err, sizeof err);
  REQUIRE_OK(r, err);
  CHECK(seen.placed == 1 && seen.placed_ranks == 1 && res.ranks == 1);
  CHECK_CONTAINS(seen.placed_backend, "cpu");
  r = run_job("name: 'g' student { net: 'student.prototxt' } output_dir: 'out/g' device: 'cpu' device: 'cpu'" SOLVER(2, 0),
              DD_START_SCRATCH, &res, err, sizeof err);
  REQUIRE_OK(r, err);
  CHECK(seen.placed == 1 && seen.placed_ranks == 2 && res.ranks == 2 && seen.placed_backend[0] == '\0');
  CHECK(res.iter == 2);
  r = run_job("name: 'h' student { net: 'student.prototxt' } output_dir: 'out/h' nodes: 2 seed: 1" SOLVER(2, 0),
              DD_START_SCRATCH, &res, err, sizeof err);
  CHECK(r == DD_EINVAL);
  CHECK_CONTAINS(err, "nodes: the job runs on 2 nodes");
}

/* ---- 5, 6. built as messages; final names ------------------------------------------------------------- */

static void test_quoted_names_distil(void) {
  char err[4096], p[512], text[8192];
  /* a teacher: the plain student trained for 2 iterations, then used frozen */
  dd_job_result res;
  int r = run_job("name: 't' student { net: 'student.prototxt' } output_dir: 'out/t'" SOLVER(2, 2), DD_START_SCRATCH,
                  &res, err, sizeof err);
  REQUIRE_OK(r, err);
  snprintf(p, sizeof p, "%s/teacher.prototxt", tmp);
  REQUIRE(test_write_deploy(p, "teacher", TEST_NET_BODY) == 0);
  /* the student: its data layer, logits and loss named with quotes and spaces */
  snprintf(text, sizeof text,
           "name: 'quoted'\n"
           "layer { name: 'da\"ta \\'x\\'' type: 'ImageData' top: 'data' top: 'label' include { phase: TRAIN }\n"
           "  transform_param { scale: 0.00390625 crop_size: 8 } image_data_param { source: 'train.txt'"
           " root_folder: '%s/img/' batch_size: 8 } }\n"
           "layer { name: 'da\"ta \\'x\\'' type: 'ImageData' top: 'data' top: 'label' include { phase: TEST }\n"
           "  transform_param { scale: 0.00390625 crop_size: 8 } image_data_param { source: 'test.txt'"
           " root_folder: '%s/img/' batch_size: 8 } }\n"
           "layer { name: 'c1' type: 'Convolution' bottom: 'data' top: 'c1' convolution_param { num_output: 4 kernel_size: 3"
           " pad: 1 weight_filler { type: 'msra' } } }\n"
           "layer { name: 'p' type: 'Pooling' bottom: 'c1' top: 'p' pooling_param { pool: AVE global_pooling: true } }\n"
           "layer { name: 'f\"c\\' 1' type: 'InnerProduct' bottom: 'p' top: 'lo\"gits\\' x' inner_product_param {"
           " num_output: 4 weight_filler { type: 'msra' } } }\n"
           "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'lo\"gits\\' x' bottom: 'label' top: 'loss' }\n"
           "layer { name: 'accuracy' type: 'Accuracy' bottom: 'lo\"gits\\' x' bottom: 'label' top: 'accuracy'"
           " include { phase: TEST } }\n",
           tmp, tmp);
  snprintf(p, sizeof p, "%s/quoted.prototxt", tmp);
  REQUIRE(wfile(p, "%s", text));
  r = run_job("name: 'q' student { net: 'quoted.prototxt' } output_dir: 'out/q'"
              " teacher { net: 'teacher.prototxt' weights: 'out/t/snapshots/t_iter_2.caffemodel' }"
              " distill { temperature: 2 alpha: 0.5 }" SOLVER(3, 0),
              DD_START_SCRATCH, &res, err, sizeof err);
  REQUIRE_OK(r, err);
  CHECK(res.iter == 3);
  CHECK(res.teacher_acc >= 0 && res.student_acc >= 0);
  CHECK(seen.progress == 3);
  CHECK(seen.saw_ce_loss && !seen.saw_plain_loss);
  CHECK(seen.tests >= 1 && seen.saw_test_acc);
}

/* ---- 7, 8. bad images counted; divergence and bad solver values fail the job ---------------------- */

/* A train list with one missing image among 49 (max_error_fraction 0.1): the job succeeds, and its
 * progress reports and metrics.jsonl count the error (data_errors was always 0 in job mode: the
 * trainer's pipelines replace the net's data layers, whose count the solver reported). */
static void test_data_errors_counted(void) {
  char err[4096], p[512], text[8192];
  snprintf(p, sizeof p, "%s/train.txt", tmp);
  char *list = test_slurp(p);
  REQUIRE(list);
  snprintf(p, sizeof p, "%s/trainbad.txt", tmp);
  REQUIRE(wfile(p, "%smissing.png 1\n", list));
  free(list);
  snprintf(text, sizeof text,
           "name: 'bad'\n"
           "layer { name: 'data' type: 'ImageData' top: 'data' top: 'label' include { phase: TRAIN }\n"
           "  transform_param { scale: 0.00390625 crop_size: 8 } image_data_param { source: 'trainbad.txt'"
           " root_folder: '%s/img/' batch_size: 8 shuffle: true max_error_fraction: 0.1 } }\n"
           "layer { name: 'data' type: 'ImageData' top: 'data' top: 'label' include { phase: TEST }\n"
           "  transform_param { scale: 0.00390625 crop_size: 8 } image_data_param { source: 'test.txt'"
           " root_folder: '%s/img/' batch_size: 8 } }\n" TEST_NET_BODY
           "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n",
           tmp, tmp);
  snprintf(p, sizeof p, "%s/bad.prototxt", tmp);
  REQUIRE(wfile(p, "%s", text));
  dd_job_result res;
  int r = run_job("name: 'de' student { net: 'bad.prototxt' } output_dir: 'out/de'" SOLVER(14, 0), DD_START_SCRATCH,
                  &res, err, sizeof err);
  REQUIRE_OK(r, err);
  CHECK(res.iter == 14);
  CHECKF(seen.data_errors == 1, "progress reported %lld data errors", (long long)seen.data_errors);
  snprintf(p, sizeof p, "%s/out/de/metrics.jsonl", tmp);
  char *metrics = test_slurp(p);
  REQUIRE(metrics);
  CHECK_CONTAINS(metrics, "\"data_errors\":1");
  free(metrics);
}

/* base_lr 1e20 (validation lets it through: it is finite) drives the weights to inf and the loss
 * and gradient to NaN: the job fails "diverged at iteration N" with the loss terms (it succeeded
 * with loss 87.34 and accuracy 1); on_divergence: SNAPSHOT writes a snapshot first. */
static void test_divergence_fails(void) {
  char err[4096];
  dd_job_result res;
  const char *solver = " solver { base_lr: 1e20 lr_policy: 'fixed' max_iter: 30 display: 1 random_seed: 5 }";
  char text[1024];
  snprintf(text, sizeof text, "name: 'nan' student { net: 'student.prototxt' } output_dir: 'out/nan'%s", solver);
  int r = run_job(text, DD_START_SCRATCH, &res, err, sizeof err);
  CHECK(r != 0);
  CHECK_CONTAINS(err, "diverged at iteration");
  CHECK_CONTAINS(err, "loss");
  snprintf(text, sizeof text,
           "name: 'nans' student { net: 'student.prototxt' } output_dir: 'out/nans' on_divergence: SNAPSHOT%s", solver);
  r = run_job(text, DD_START_SCRATCH, &res, err, sizeof err);
  CHECK(r != 0);
  CHECK_CONTAINS(err, "diverged at iteration");
  CHECK_CONTAINS(err, "snapshot written at iteration");
  const char *at = strstr(err, "snapshot written at iteration ");
  if (at) {
    char p[512];
    snprintf(p, sizeof p, "%s/out/nans/snapshots/nans_iter_%d.solverstate", tmp, atoi(at + 30));
    CHECKF(access(p, F_OK) == 0, "no %s", p);
  }
}

/* Solver values no run can use are refused by validation, naming the field. */
static void test_bad_solver_values(void) {
  static const struct {
    const char *solver, *want;
  } cases[] = {
      {"base_lr: 0.1 lr_policy: 'fixed' max_iter: -5", "solver.max_iter must be >= 0, got -5"},
      {"base_lr: nan lr_policy: 'fixed' max_iter: 5", "solver.base_lr must be a finite number >= 0, got nan"},
      {"base_lr: inf lr_policy: 'fixed' max_iter: 5", "solver.base_lr must be a finite number >= 0, got inf"},
      {"base_lr: -0.1 lr_policy: 'fixed' max_iter: 5", "solver.base_lr must be a finite number >= 0, got -0.1"},
      {"base_lr: 0.1 momentum: nan lr_policy: 'fixed' max_iter: 5", "solver.momentum must be a finite number"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char err[4096], text[1024];
    dd_job_result res;
    snprintf(text, sizeof text, "name: 'v' student { net: 'student.prototxt' } output_dir: 'out/v%zu' solver { %s }", i,
             cases[i].solver);
    int r = run_job(text, DD_START_SCRATCH, &res, err, sizeof err);
    CHECK(r == DD_EINVAL);
    CHECK_CONTAINS(err, cases[i].want);
    CHECK(seen.progress == 0);
  }
}

/* Without a policy (the CLI) the user's own symlinks work: a snapshots/ that is a symlink to a
 * folder elsewhere gets the snapshots (under the daemon's policy it is refused: tests/test_paths.c). */
static void test_cli_follows_users_symlinks(void) {
  char err[4096], p[512], q[512];
  snprintf(p, sizeof p, "%s/elsewhere", tmp);
  REQUIRE(mkdir(p, 0755) == 0);
  snprintf(q, sizeof q, "%s/out/s", tmp);
  REQUIRE(mkdir(q, 0755) == 0);
  snprintf(q, sizeof q, "%s/out/s/snapshots", tmp);
  REQUIRE(symlink(p, q) == 0);
  dd_job_result res;
  no_policy = 1;
  int r = run_job("name: 's' student { net: 'student.prototxt' } output_dir: 'out/s'" SOLVER(2, 2), DD_START_SCRATCH, &res,
                  err, sizeof err);
  no_policy = 0;
  REQUIRE_OK(r, err);
  snprintf(p, sizeof p, "%s/elsewhere/s_iter_2.caffemodel", tmp);
  CHECKF(test_exists(p), "%s is missing", p);
}

int main(void) {
  RUN(test_setup);
  RUN(test_policy_asked_for_every_file);
  RUN(test_policy_refusals);
  RUN(test_start_rules);
  RUN(test_placement);
  RUN(test_quoted_names_distil);
  RUN(test_cli_follows_users_symlinks);
  RUN(test_data_errors_counted);
  RUN(test_divergence_fails);
  RUN(test_bad_solver_values);
  if (!getenv("DD_KEEP_TMP")) test_scratch_remove(tmp);
  return test_summary();
}
