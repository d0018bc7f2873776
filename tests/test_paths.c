/* Paths enforced at every open (issue 16): a job run by core with the daemon's path policy
 * (daemon/service/paths.c, compiled in here) over real files, each plant an operator who can write
 * inside the roots could make:
 * 1. metrics.jsonl planted as a symlink to a file outside: refused, the outside file untouched;
 * 2. a symlink planted at the predicted temporary name of a snapshot (NAME_iter_N.caffemodel.tmp.PID):
 *    the outside file untouched, the snapshot written under another temporary name;
 * 3. snapshots/ swapped for a symlink to an outside folder mid-job: every later snapshot still goes
 *    into the job's own folder (held open), none outside;
 * 4. a crafted .solverstate whose learned_net names an outside file (a valid .caffemodel, or text
 *    with secret bytes): resume refused, the error holds none of the file's bytes and reads the
 *    same whether the outside file exists or not;
 * 5. a FIFO as a list file and as an image: the job fails promptly with a refusal (a child process
 *    under a time bound, so the old code's blocking open fails the test instead of hanging it); the
 *    CLI's plain opener skips a FIFO image without blocking;
 * 6. the opener itself, with openat2 and with the O_NOFOLLOW walk: a symlink leading out and a ".."
 *    are refused, an inside file opens, a refusal reads the same for an existing and a missing
 *    outside file. */
#define _GNU_SOURCE
#include "../daemon/service/paths.c"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "devices/devices.h"
#include "format/caffe_io.h"
#include "format/textformat.h"
#include "train/job.h"
#include "test.h"
#include "test_files.h"
#include "test_images.h"

static char tmp[256], data[300], outroot[300], outside[300];
static dd_paths paths;
static dd_path_policy policy;

static struct {
  char log[1 << 14];
  int swap_at; /* the iteration at which the progress hook swaps snapshots/ (0: never) */
  char swap_dir[600], swap_target[600];
} seen;

static void h_log(void *ctx, int level, const char *msg) {
  (void)ctx;
  size_t used = strlen(seen.log);
  snprintf(seen.log + used, sizeof seen.log - used, "[%d] %s\n", level, msg);
}

static void h_progress(void *ctx, const dd_distill_progress *p) {
  (void)ctx;
  if (!seen.swap_at || p->iter != seen.swap_at) return;
  char moved[700];
  snprintf(moved, sizeof moved, "%s.moved", seen.swap_dir);
  CHECK(rename(seen.swap_dir, moved) == 0);
  CHECK(symlink(seen.swap_target, seen.swap_dir) == 0);
}

/* Runs the job text with the daemon's policy (or none), from the data root. */
static int run_job(const char *text, dd_job_start start, const dd_path_policy *pol, char *err, size_t errlen) {
  seen.log[0] = '\0';
  Distilld__DistillJob *job = NULL;
  int r = dd_text_parse((ProtobufCMessage **)&job, &distilld__distill_job__descriptor, text, strlen(text), "job", err, errlen);
  if (r) return r;
  dd_job_result res;
  dd_job_opts o = {.base_dir = data, .devices = dd_devices_builtin(), .threads = 1, .start = start, .policy = pol,
                   .hooks = {.log = h_log, .progress = h_progress}};
  r = dd_job_run(job, &o, &res, err, errlen);
  distilld__distill_job__free_unpacked(job, NULL);
  return r;
}

/* Runs the job in a child process; `*status` is its dd_job_run result, or 99 when it did not end
 * within `seconds` (then it is killed). The child's message lands in `err`. */
static int run_job_bounded(const char *text, const dd_path_policy *pol, int seconds, char *err, size_t errlen) {
  int fds[2];
  if (pipe(fds) != 0) return 98;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    char e[4096] = "";
    int r = run_job(text, DD_START_SCRATCH, pol, e, sizeof e);
    if (write(fds[1], e, strlen(e) + 1) < 0) _exit(97);
    _exit(r == 0 ? 0 : r < 0 ? -r : 96);
  }
  close(fds[1]);
  int status = 0, done = 0;
  for (int i = 0; i < seconds * 20 && !done; i++) {
    if (waitpid(pid, &status, WNOHANG) == pid) done = 1;
    else usleep(50000);
  }
  if (!done) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    close(fds[0]);
    snprintf(err, errlen, "(did not end within %d s)", seconds);
    return 99;
  }
  ssize_t n = read(fds[0], err, errlen - 1);
  err[n > 0 ? n : 0] = '\0';
  close(fds[0]);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 95;
}

#define SOLVER(max_iter, snapshot)                                                                     \
  " solver { base_lr: 0.05 momentum: 0.9 lr_policy: 'fixed' max_iter: " #max_iter " display: 1"         \
  " snapshot: " #snapshot " snapshot_after_train: false random_seed: 5 }"

static void write_student(const char *file, const char *list) {
  char p[600];
  snprintf(p, sizeof p, "%s/%s", data, file);
  REQUIRE(wfile(p,
                "name: 'student'\n"
                "layer { name: 'data' type: 'ImageData' top: 'data' top: 'label' include { phase: TRAIN }\n"
                "  transform_param { scale: 0.00390625 crop_size: 8 } image_data_param { source: '%s'"
                " root_folder: '%s/img/' batch_size: 4 } }\n" TEST_NET_BODY
                "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n",
                list, data));
}

static void test_setup(void) {
  REQUIRE(test_scratch_dir(tmp, sizeof tmp, "dd_paths") == 0);
  snprintf(data, sizeof data, "%s/data", tmp);
  snprintf(outroot, sizeof outroot, "%s/out", tmp);
  snprintf(outside, sizeof outside, "%s/outside", tmp);
  REQUIRE(mkdir(data, 0755) == 0 && mkdir(outroot, 0755) == 0 && mkdir(outside, 0755) == 0);
  REQUIRE(test_make_images(data) == 0);
  write_student("student.prototxt", "train.txt");
  char e[512];
  char *roots[] = {data};
  REQUIRE_OK(dd_paths_init(&paths, roots, 1, outroot, e, sizeof e), e);
  policy = dd_paths_policy(&paths);
}

/* A job text writing to OUT/NAME. */
static void job_text(char *buf, size_t len, const char *name, const char *student, const char *solver) {
  snprintf(buf, len, "name: '%s' student { net: '%s' } output_dir: '%s/%s' %s", name, student, outroot, name, solver);
}

/* ---- 1. metrics.jsonl planted as a symlink ------------------------------------------------------- */

static void test_metrics_symlink(void) {
  char victim[600], dir[600], link[700], text[2048], err[4096];
  snprintf(victim, sizeof victim, "%s/victim_metrics.txt", outside);
  REQUIRE(wfile(victim, "VICTIM\n"));
  snprintf(dir, sizeof dir, "%s/m", outroot);
  REQUIRE(mkdir(dir, 0755) == 0);
  snprintf(link, sizeof link, "%s/metrics.jsonl", dir);
  REQUIRE(symlink(victim, link) == 0);
  job_text(text, sizeof text, "m", "student.prototxt", SOLVER(2, 0));
  int r = run_job(text, DD_START_NEW_OUTPUT, &policy, err, sizeof err);
  CHECK(r == DD_EPERM);
  CHECK_CONTAINS(err, "metrics.jsonl");
  CHECK_CONTAINS(err, "refused");
  char *v = test_slurp(victim);
  CHECKF(v && !strcmp(v, "VICTIM\n"), "the outside file now holds \"%s\"", test__str(v));
  free(v);
}

/* ---- 2. a symlink at the predicted temporary name -------------------------------------------------- */

static void test_tmp_symlink(void) {
  char victim[600], dir[600], link[800], text[2048], err[4096], p[800];
  snprintf(victim, sizeof victim, "%s/victim_model.bin", outside);
  REQUIRE(wfile(victim, "VICTIM\n"));
  snprintf(dir, sizeof dir, "%s/t", outroot);
  REQUIRE(mkdir(dir, 0755) == 0);
  snprintf(p, sizeof p, "%s/snapshots", dir);
  REQUIRE(mkdir(p, 0755) == 0);
  /* the name the code makes: PREFIX_iter_N.caffemodel.tmp.PID (fileio.c), this process writing */
  snprintf(link, sizeof link, "%s/snapshots/t_iter_2.caffemodel.tmp.%ld", dir, (long)getpid());
  REQUIRE(symlink(victim, link) == 0);
  snprintf(link, sizeof link, "%s/snapshots/t_iter_2.solverstate.tmp.%ld", dir, (long)getpid());
  REQUIRE(symlink(victim, link) == 0);
  job_text(text, sizeof text, "t", "student.prototxt", SOLVER(2, 2));
  int r = run_job(text, DD_START_NEW_OUTPUT, &policy, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  char *v = test_slurp(victim);
  CHECKF(v && !strcmp(v, "VICTIM\n"), "the outside file was overwritten (%zu bytes)", v ? strlen(v) : 0);
  free(v);
  struct stat st;
  snprintf(p, sizeof p, "%s/snapshots/t_iter_2.caffemodel", dir);
  CHECK(lstat(p, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 100);
  snprintf(p, sizeof p, "%s/snapshots/t_iter_2.solverstate", dir);
  CHECK(lstat(p, &st) == 0 && S_ISREG(st.st_mode));
}

/* ---- 3. snapshots/ swapped for a symlink mid-job --------------------------------------------------- */

static void test_snapshots_swapped(void) {
  char text[2048], err[4096], p[800];
  char target[600];
  snprintf(target, sizeof target, "%s/stolen", outside);
  REQUIRE(mkdir(target, 0755) == 0);
  snprintf(seen.swap_dir, sizeof seen.swap_dir, "%s/s/snapshots", outroot);
  snprintf(seen.swap_target, sizeof seen.swap_target, "%s", target);
  seen.swap_at = 3; /* after the snapshot at 2 */
  job_text(text, sizeof text, "s", "student.prototxt", SOLVER(6, 2));
  int r = run_job(text, DD_START_NEW_OUTPUT, &policy, err, sizeof err);
  seen.swap_at = 0;
  CHECKF(r == 0, "%s", err);
  CHECKF(test_count_files(target) == 0, "%d files written outside", test_count_files(target));
  snprintf(p, sizeof p, "%s/s/snapshots.moved/s_iter_6.caffemodel", outroot);
  CHECKF(test_exists(p), "the last snapshot is not in the job's own folder");
  snprintf(p, sizeof p, "%s/s/snapshots.moved/s_iter_4.solverstate", outroot);
  CHECK(test_exists(p));
}

/* ---- 4. a crafted .solverstate ---------------------------------------------------------------------- */

/* Writes OUT/r/snapshots/r_iter_ITER.solverstate: the one of iteration 2 with learned_net set. */
static void craft_state(int iter, const char *learned_net) {
  char p[800], e[1024];
  snprintf(p, sizeof p, "%s/r/snapshots/r_iter_2.solverstate", outroot);
  Caffe__SolverState *st = NULL;
  REQUIRE_OK(dd_solverstate_read(&st, p, e, sizeof e), e);
  free(st->learned_net);
  st->learned_net = strdup(learned_net);
  st->iter = iter;
  snprintf(p, sizeof p, "%s/r/snapshots/r_iter_%d.solverstate", outroot, iter);
  REQUIRE_OK(dd_solverstate_write(st, p, e, sizeof e), e);
  caffe__solver_state__free_unpacked(st, NULL);
}

static void test_crafted_solverstate(void) {
  char text[2048], err[4096], err2[4096], p[800], q[800];
  job_text(text, sizeof text, "r", "student.prototxt", SOLVER(2, 2));
  int r = run_job(text, DD_START_NEW_OUTPUT, &policy, err, sizeof err);
  REQUIRE_OK(r, err);
  /* a valid .caffemodel outside the roots: the old code resumed from it */
  snprintf(p, sizeof p, "%s/r/snapshots/r_iter_2.caffemodel", outroot);
  snprintf(q, sizeof q, "%s/weights.caffemodel", outside);
  REQUIRE(test_copy_file(p, q));
  craft_state(3, q);
  job_text(text, sizeof text, "r", "student.prototxt", SOLVER(6, 2));
  r = run_job(text, DD_START_RESUME, &policy, err, sizeof err);
  CHECK(r == DD_EPERM);
  CHECK_CONTAINS(err, "learned_net");
  CHECK_CONTAINS(err, "refused");
  /* secret bytes outside: never in the message, which reads as for a missing file */
  snprintf(q, sizeof q, "%s/shadow", outside);
  REQUIRE(wfile(q, "root:TOPSECRET-HASH:19000:0:99999:7:::\n"));
  craft_state(4, q);
  r = run_job(text, DD_START_RESUME, &policy, err, sizeof err);
  CHECK(r == DD_EPERM);
  CHECK_CONTAINS(err, "refused");
  CHECKF(!strstr(err, "TOPSECRET") && !strstr(err, "root:"), "the error shows the file's bytes: %s", err);
  snprintf(q, sizeof q, "%s/shadoW", outside); /* the same length, missing */
  craft_state(5, q);
  r = run_job(text, DD_START_RESUME, &policy, err2, sizeof err2);
  CHECK(r == DD_EPERM);
  /* the two messages differ only in the names (r_iter_4 / r_iter_5, shadow / shadoW) */
  char *a = strstr(err, "r_iter_4"), *b = strstr(err2, "r_iter_5");
  if (a) a[7] = '5';
  if ((a = strstr(err, "/shadow"))) a[6] = 'W';
  CHECKF(b && !strcmp(err, err2), "an existing and a missing outside file read differently:\n  %s\n  %s", err, err2);
  /* a relative learned_net that climbs is read beside the state, by its last component */
  craft_state(6, "../../../outside/weights.caffemodel");
  r = run_job(text, DD_START_RESUME, &policy, err, sizeof err);
  CHECK(r != 0);
  CHECK(!strstr(err, "TOPSECRET"));
}

/* ---- 5. FIFOs ------------------------------------------------------------------------------------------ */

static void test_fifo_list(void) {
  char p[800], text[2048], err[4096];
  snprintf(p, sizeof p, "%s/fifo_list.txt", data);
  REQUIRE(mkfifo(p, 0644) == 0);
  write_student("student_fifo_list.prototxt", "fifo_list.txt");
  job_text(text, sizeof text, "fl", "student_fifo_list.prototxt", SOLVER(2, 0));
  time_t t0 = time(NULL);
  int st = run_job_bounded(text, &policy, 15, err, sizeof err);
  CHECKF(st == -DD_EPERM, "status %d: %s", st, err);
  CHECK_CONTAINS(err, "fifo_list.txt");
  CHECK_CONTAINS(err, "refused");
  CHECK(time(NULL) - t0 < 10);
  /* the CLI (no policy) refuses it too, without blocking */
  job_text(text, sizeof text, "fl2", "student_fifo_list.prototxt", SOLVER(2, 0));
  st = run_job_bounded(text, NULL, 15, err, sizeof err);
  CHECKF(st != 0 && st != 99, "status %d: %s", st, err);
  CHECK_CONTAINS(err, "not a regular file");
}

static void test_fifo_image(void) {
  char p[800], text[2048], err[4096];
  snprintf(p, sizeof p, "%s/img/fifo.png", data);
  REQUIRE(mkfifo(p, 0644) == 0);
  snprintf(p, sizeof p, "%s/fifo_img.txt", data);
  REQUIRE(wfile(p, "im_00.png 0\nfifo.png 1\nim_01.png 1\nim_02.png 2\nim_03.png 3\n"));
  write_student("student_fifo_img.prototxt", "fifo_img.txt");
  job_text(text, sizeof text, "fi", "student_fifo_img.prototxt", SOLVER(2, 0));
  int st = run_job_bounded(text, &policy, 15, err, sizeof err);
  CHECKF(st == -DD_EPERM, "status %d: %s", st, err);
  CHECK_CONTAINS(err, "fifo.png");
  CHECK_CONTAINS(err, "refused");
  /* the CLI's plain opener: the FIFO is skipped as a bad image, never waited on */
  job_text(text, sizeof text, "fi2", "student_fifo_img.prototxt", SOLVER(3, 0));
  st = run_job_bounded(text, NULL, 20, err, sizeof err);
  CHECKF(st != 99, "the CLI job blocked on the FIFO image: %s", err);
  CHECKF(st == 0 || test__contains(err, "fifo.png"), "status %d: %s", st, err);
}

/* ---- 6. the opener ---------------------------------------------------------------------------------------- */

static void opener_cases(int walk_only) {
  paths.walk_only = walk_only;
  char p[800], q[800], e1[1024], e2[1024];
  int fd;
  snprintf(p, sizeof p, "%s/img/im_00.png", data);
  CHECK(dd_paths_open_read(&paths, "f", p, &fd, e1, sizeof e1) == 0);
  if (fd >= 0) close(fd);
  /* a symlink in the root that leads out */
  snprintf(q, sizeof q, "%s/x_link_%d.txt", data, walk_only);
  snprintf(p, sizeof p, "%s/victim_metrics.txt", outside);
  REQUIRE(symlink(p, q) == 0);
  CHECK(dd_paths_open_read(&paths, "f", q, &fd, e1, sizeof e1) == DD_EPERM);
  CHECK_CONTAINS(e1, "refused");
  /* a directory symlink in the root that leads out, then a file below it */
  snprintf(q, sizeof q, "%s/x_dir_%d", data, walk_only);
  REQUIRE(symlink(outside, q) == 0);
  snprintf(p, sizeof p, "%s/x_dir_%d/victim_metrics.txt", data, walk_only);
  CHECK(dd_paths_open_read(&paths, "f", p, &fd, e1, sizeof e1) == DD_EPERM);
  snprintf(p, sizeof p, "%s/../outside/victim_metrics.txt", data);
  CHECK(dd_paths_open_read(&paths, "f", p, &fd, e1, sizeof e1) == DD_EPERM);
  /* existing and missing outside files: the same words */
  snprintf(p, sizeof p, "%s/victim_metrics.txt", outside);
  snprintf(q, sizeof q, "%s/victim_metricX.txt", outside);
  CHECK(dd_paths_open_read(&paths, "f", p, &fd, e1, sizeof e1) == DD_EPERM);
  CHECK(dd_paths_open_read(&paths, "f", q, &fd, e2, sizeof e2) == DD_EPERM);
  char *x = strstr(e1, "metrics.txt");
  if (x) x[6] = 'X';
  CHECKF(!strcmp(e1, e2), "\n  %s\n  %s", e1, e2);
  /* the output directory: created beneath the root, a symlink leading out refused */
  snprintf(p, sizeof p, "%s/o%d/a/b", outroot, walk_only);
  CHECK(dd_paths_open_output(&paths, "output_dir", p, &fd, e1, sizeof e1) == 0);
  if (fd >= 0) close(fd);
  snprintf(q, sizeof q, "%s/olink%d", outroot, walk_only);
  REQUIRE(symlink(outside, q) == 0);
  snprintf(p, sizeof p, "%s/olink%d/x", outroot, walk_only);
  CHECK(dd_paths_open_output(&paths, "output_dir", p, &fd, e1, sizeof e1) == DD_EPERM);
  snprintf(p, sizeof p, "%s/x", outside);
  CHECK(!test_exists(p));
  paths.walk_only = 0;
}

static void test_opener_openat2(void) { opener_cases(0); }
static void test_opener_walk(void) { opener_cases(1); }

int main(void) {
  RUN(test_setup);
  RUN(test_metrics_symlink);
  RUN(test_tmp_symlink);
  RUN(test_snapshots_swapped);
  RUN(test_crafted_solverstate);
  RUN(test_fifo_list);
  RUN(test_fifo_image);
  RUN(test_opener_openat2);
  RUN(test_opener_walk);
  dd_paths_free(&paths);
  if (!getenv("DD_KEEP_TMP")) test_scratch_remove(tmp);
  return test_summary();
}
