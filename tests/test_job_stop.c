/* A stop asked for while a job is still being built (issue 16, defect 3: a cancel or SIGTERM
 * ignored for minutes while a net was parsed and built), on the CPU through dd_job_run:
 * 1. should_stop answering yes from the start: dd_job_run returns DD_ESTOPPED at once, naming the
 *    step it stopped before, res->stopped DD_STOP_ABORT, and nothing is created (not even the
 *    output directory);
 * 2. a stop at each later question of a distillation job (teacher, TEST twin): each is honoured
 *    before the step it names, in the build's order, and no snapshot is ever written; once the
 *    build is done the solver's own poll stops the run between iterations (returns 0). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "devices/devices.h"
#include "format/textformat.h"
#include "train/job.h"
#include "train/solver.h"
#include "test.h"
#include "test_files.h"
#include "test_images.h"

static char tmp[256];

/* should_stop: says yes (`answer`) from the `stop_at`-th question on, counting them */
typedef struct {
  int asked, stop_at, answer, progress, snapshots;
} stop_state;
static stop_state st;

static int h_stop(void *ctx) {
  (void)ctx;
  return ++st.asked >= st.stop_at ? st.answer : 0;
}
static void h_progress(void *ctx, const dd_distill_progress *p) {
  (void)ctx;
  (void)p;
  st.progress++;
}
static void h_snapshot(void *ctx, int iter, const char *model, const char *state) {
  (void)ctx;
  (void)iter;
  (void)model;
  (void)state;
  st.snapshots++;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Runs the job text from tmp, stopping at the stop_at-th question (0: never). */
static int run_job(const char *text, int stop_at, dd_job_result *res, char *err, size_t errlen) {
  st = (stop_state){.stop_at = stop_at ? stop_at : 1 << 30, .answer = DD_STOP_ABORT};
  Distilld__DistillJob *job = NULL;
  int r = dd_text_parse((ProtobufCMessage **)&job, &distilld__distill_job__descriptor, text, strlen(text), "job", err,
                        errlen);
  if (r) return r;
  dd_job_opts o = {.base_dir = tmp, .devices = dd_devices_builtin(), .threads = 1, .start = DD_START_SCRATCH,
                   .hooks = {.progress = h_progress, .snapshot = h_snapshot, .should_stop = h_stop}};
  r = dd_job_run(job, &o, res, err, errlen);
  distilld__distill_job__free_unpacked(job, NULL);
  return r;
}

/* Files in `dir` (-1: no such folder). */
static int count_files(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

#define SOLVER(max_iter, snapshot)                                                                     \
  " solver { base_lr: 0.05 momentum: 0.9 lr_policy: 'fixed' max_iter: " #max_iter " display: 1"         \
  " test_iter: 2 test_interval: " #max_iter " snapshot: " #snapshot " random_seed: 5 }"

static void test_setup(void) {
  REQUIRE(test_make_images(tmp) == 0);
  char p[512];
  REQUIRE(test_write_rooted_student(tmp, TEST_NET_BODY) == 0);
  snprintf(p, sizeof p, "%s/teacher.prototxt", tmp);
  REQUIRE(test_write_deploy(p, "teacher", TEST_NET_BODY) == 0);
  /* the teacher's weights: the plain student trained for 2 iterations */
  char err[4096];
  dd_job_result res;
  int r = run_job("name: 't' student { net: 'student.prototxt' } output_dir: 'out/t'" SOLVER(2, 2), 0, &res, err,
                  sizeof err);
  REQUIRE_OK(r, err);
}

/* ---- 1. a stop from the start ----------------------------------------------------------------------- */

static void test_stop_from_the_start(void) {
  char err[4096], p[512];
  dd_job_result res;
  double t0 = now_s();
  int r = run_job("name: 's' student { net: 'student.prototxt' } output_dir: 'out/s'"
                  " teacher { net: 'teacher.prototxt' weights: 'out/t/snapshots/t_iter_2.caffemodel' }" SOLVER(3, 1),
                  1, &res, err, sizeof err);
  double dt = now_s() - t0;
  CHECKF(r == DD_ESTOPPED, "got %d: %s", r, err);
  CHECK_CONTAINS(err, "stopped on request before open_output");
  CHECK(res.stopped == DD_STOP_ABORT && res.iter == 0);
  CHECK(st.asked == 1 && st.progress == 0 && st.snapshots == 0);
  CHECKF(dt < 5.0, "the stop took %.1f s", dt);
  snprintf(p, sizeof p, "%s/out/s", tmp);
  CHECKF(!test_exists(p), "%s was created", p);
  CHECK(!strcmp(dd_strerror(DD_ESTOPPED), "stopped on request"));
}

/* ---- 2. a stop at each step ------------------------------------------------------------------------- */

static void test_stop_at_each_step(void) {
  static const char *const steps[] = {"open_output", "load_solver", "load_student", "replace_data_layers",
                                      "build_teacher", "the teacher's TEST twin", "add_distill_terms",
                                      "create_solver", "precision", "starting the data and training"};
  int n_steps = (int)(sizeof steps / sizeof steps[0]);
  char err[4096], p[512], text[1024];
  for (int k = 1; k <= n_steps + 1; k++) {
    dd_job_result res;
    snprintf(text, sizeof text,
             "name: 's%d' student { net: 'student.prototxt' } output_dir: 'out/s%d'"
             " teacher { net: 'teacher.prototxt' weights: 'out/t/snapshots/t_iter_2.caffemodel' }" SOLVER(3, 1),
             k, k);
    int r = run_job(text, k, &res, err, sizeof err);
    snprintf(p, sizeof p, "%s/out/s%d/snapshots", tmp, k);
    int files = count_files(p);
    CHECKF(files <= 0, "stop at question %d: %d file(s) in %s", k, files, p);
    if (k <= n_steps) {
      CHECKF(r == DD_ESTOPPED, "stop at question %d: got %d: %s", k, r, err);
      CHECKF(strstr(err, steps[k - 1]) != NULL, "stop at question %d: expected before \"%s\", got \"%s\"", k,
             steps[k - 1], err);
      CHECK(res.stopped == DD_STOP_ABORT && res.iter == 0 && st.progress == 0 && st.snapshots == 0);
    } else {
      /* built: the solver's poll between iterations stops it, without a snapshot (an abort) */
      CHECKF(r == 0, "stop at question %d: %s", k, err);
      CHECK(res.stopped == DD_STOP_ABORT && res.iter < 3 && st.snapshots == 0);
    }
  }
}

int main(void) {
  if (test_scratch_dir(tmp, sizeof tmp, "dd_job_stop") != 0) return 1;
  RUN(test_setup);
  RUN(test_stop_from_the_start);
  RUN(test_stop_at_each_step);
  test_scratch_remove(tmp);
  return test_summary();
}
