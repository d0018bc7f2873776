/* Whole jobs on the CUDA backend against the same jobs on the CPU backend (label gpu; without a
 * GPU every test prints SKIP and passes):
 *   - a teacher trained without a teacher (WRN-10-1 with BatchNorm, 30 iterations): the same
 *     losses at every display and the same final weights, within tolerance;
 *   - a distillation job (the frozen, folded teacher + KD): the teacher's
 *     checksum is the CPU's, bit for bit, at load and after training (the seed's case: a frozen
 *     teacher stays frozen on the GPU too), and losses and weights match the CPU's;
 *   - a GPU run repeats itself bit for bit (deterministic kernels and cuDNN algorithms);
 *   - (on any machine) the KD job is well conditioned: rounding differences stay small after 20
 *     steps, so a GPU run far from the CPU's is a bug, not chaos.
 * Data: the tiny generated image set of tests/test_images.h. */
#define _DEFAULT_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/backend.h"
#include "devices/devices.h"
#include "format/caffe_io.h"
#include "train/distill.h"
#include "test.h"
#include "test_images.h"
#include "test_models.h"
#include "format/textformat.h"

static char tmp[128];
static dd_backend *cpu, *gpu;
static int data_ok, teacher_ok;

#define MAX_DISP 64
typedef struct {
  int n;
  int iter[MAX_DISP];
  double loss[MAX_DISP];
} run_log;

static void on_progress(void *ctx, const dd_distill_progress *p) {
  run_log *l = ctx;
  if (l->n < MAX_DISP) {
    l->iter[l->n] = p->iter;
    l->loss[l->n] = p->loss;
    l->n++;
  }
}

static void on_log(void *ctx, int level, const char *msg) {
  (void)ctx;
  if (level <= 1) fprintf(stderr, "     job: %s\n", msg);
}

/* Runs job `text` (base dir tmp) on `be`; fills *log, *checksum (teacher, 0 without one). */
static int run_job(dd_backend *be, const char *text, run_log *log, uint64_t *checksum) {
  char err[4096];
  memset(log, 0, sizeof *log);
  ProtobufCMessage *m = NULL;
  int r = dd_text_parse(&m, &distilld__distill_job__descriptor, text, strlen(text), "job", err, sizeof err);
  if (r) {
    fprintf(stderr, "%s\n", err);
    return r;
  }
  dd_distill_hooks hooks = {.ctx = log, .log = on_log, .progress = on_progress};
  dd_distill *d = NULL;
  r = dd_distill_create(&d, (Distilld__DistillJob *)m, tmp, be, &hooks, err, sizeof err);
  if (!r) {
    if (checksum) *checksum = dd_distill_teacher_checksum(d);
    r = dd_distill_run(d, err, sizeof err);
    if (!r && checksum && *checksum != dd_distill_teacher_checksum(d)) r = -1;
  }
  if (r) fprintf(stderr, "     %s: %s\n", be->ops->name, err);
  dd_distill_destroy(d);
  protobuf_c_message_free_unpacked(m, NULL);
  return r;
}

static Caffe__NetParameter *read_model(const char *rel) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", tmp, rel);
  return test_read_model(path);
}

#define NEED_GPU()                     \
  do {                                 \
    if (!gpu) {                        \
      printf("SKIP %s\n", test__name); \
      return;                          \
    }                                  \
  } while (0)

static void test_setup(void) {
  REQUIRE(test_make_images(tmp) == 0);
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "python3 '%s/scripts/gen_wrn.py' --depth 10 --width 1 --mode train_val --channels 3 --size 8 --batch 8 --test-batch 8 "
           "--classes 4 --pad 0 --source-train '%s/train.txt' --source-test '%s/test.txt' --root-folder '%s/img/' "
           "-o '%s/teacher_train_val.prototxt' && python3 '%s/scripts/gen_wrn.py' --depth 10 --width 1 --mode deploy "
           "--channels 3 --size 8 --batch 1 --classes 4 -o '%s/teacher_deploy.prototxt' && "
           "python3 '%s/scripts/gen_wrn.py' --depth 10 --width 1 --mode train_val --channels 3 --size 8 --batch 8 "
           "--test-batch 8 --classes 4 --pad 0 --source-train '%s/train.txt' --source-test '%s/test.txt' "
           "--root-folder '%s/img/' -o '%s/student.prototxt'",
           DD_SOURCE_DIR, tmp, tmp, tmp, tmp, DD_SOURCE_DIR, tmp, DD_SOURCE_DIR, tmp, tmp, tmp, tmp);
  test_sh("%s", cmd);
  char p[512];
  snprintf(p, sizeof p, "%s/student.prototxt", tmp);
  data_ok = access(p, F_OK) == 0;
  CHECK(data_ok);
}

#define TEACHER_JOB(out)                                                                                   \
  "name: 'teacher' student { net: 'teacher_train_val.prototxt' }"                                          \
  " solver { base_lr: 0.05 momentum: 0.9 weight_decay: 0.0005 lr_policy: 'fixed' max_iter: 30 display: 5" \
  " test_iter: 2 test_interval: 30 random_seed: 3 }"                                                       \
  " output_dir: '" out "'"

static void test_teacher_job_gpu_vs_cpu(void) {
  REQUIRE(data_ok);
  run_log lc, lg;
  /* the CPU teacher is needed by the distillation test in any case */
  int rc = run_job(cpu, TEACHER_JOB("t_cpu"), &lc, NULL);
  CHECK(rc == 0);
  teacher_ok = rc == 0;
  NEED_GPU();
  REQUIRE(run_job(gpu, TEACHER_JOB("t_gpu"), &lg, NULL) == 0);
  REQUIRE(lc.n == lg.n && lc.n >= 6);
  for (int i = 0; i < lc.n; i++) {
    double e = fabs(lc.loss[i] - lg.loss[i]) / fmax(1e-6, fabs(lc.loss[i]));
    CHECKF(lc.iter[i] == lg.iter[i] && e < 1e-3, "iter %d: loss cpu %.8g gpu %.8g", lc.iter[i], lc.loss[i], lg.loss[i]);
  }
  Caffe__NetParameter *a = read_model("t_cpu/snapshots/teacher_iter_30.caffemodel"),
                      *b = read_model("t_gpu/snapshots/teacher_iter_30.caffemodel");
  int same = 0;
  double d = test_model_diff(a, b, &same);
  printf("     teacher after 30 iterations: largest relative weight difference GPU vs CPU %.3g%s\n", d,
         same ? " (bit-identical)" : "");
  CHECKF(d < 1e-3, "weights differ by %.3g", d);
  if (a) caffe__net_parameter__free_unpacked(a, NULL);
  if (b) caffe__net_parameter__free_unpacked(b, NULL);
}

/* base_lr 0.02: at 0.05 this KD job is chaotic: the CPU with 1 thread against 2 threads (rounding
 * alone) ended 3.1e-4 apart after 20 steps, and a 2e-6 change of the learning rate 2e-2 apart, so
 * an H200 run 2.4e-3 from the CPU said nothing about the backend. At 0.02 the same comparisons give
 * 1.1e-6 and 1.6e-5; test_kd_job_conditioning keeps it so. */
#define KD_JOB(out)                                                                                       \
  "name: 'kd' teacher { net: 'teacher_deploy.prototxt' weights: 't_cpu/snapshots/teacher_iter_30.caffemodel' }" \
  " student { net: 'student.prototxt' }"                                                                  \
  " solver { base_lr: 0.02 momentum: 0.9 weight_decay: 0.0005 lr_policy: 'fixed' max_iter: 20 display: 5" \
  " test_iter: 2 test_interval: 20 snapshot: 10 random_seed: 4 }"                                         \
  " distill { temperature: 4 alpha: 0.7 }"                                                               \
  " output_dir: '" out "'"

/* Runs without a GPU too: the KD job must be well conditioned for the GPU comparison to mean
 * anything. The CPU backend with 1 thread sums in another order than with 2; after 20 steps the
 * students must still agree far inside the GPU test's 1e-3. */
static run_log kd_cpu_log; /* the CPU run (2 threads) the GPU tests compare against */
static uint64_t kd_cpu_checksum;
static int kd_cpu_ok;

static void test_kd_job_conditioning(void) {
  REQUIRE(teacher_ok);
  dd_backend *cpu1 = NULL;
  REQUIRE(dd_cpu_backend_create(&cpu1, 1) == 0);
  run_log l1;
  int r2 = run_job(cpu, KD_JOB("kd_cpu"), &kd_cpu_log, &kd_cpu_checksum), r1 = run_job(cpu1, KD_JOB("kd_cpu1"), &l1, NULL);
  dd_cpu_backend_destroy(cpu1);
  kd_cpu_ok = r2 == 0;
  REQUIRE(r2 == 0 && r1 == 0);
  Caffe__NetParameter *a = read_model("kd_cpu/snapshots/kd_iter_20.caffemodel"),
                      *b = read_model("kd_cpu1/snapshots/kd_iter_20.caffemodel");
  int same = 0;
  double d = test_model_diff(a, b, &same);
  printf("     distilled student after 20 iterations, CPU 1 thread vs 2 threads: %.3g%s\n", d, same ? " (bit-identical)" : "");
  CHECKF(d < 1e-4, "the KD job amplifies rounding: %.3g apart", d);
  if (a) caffe__net_parameter__free_unpacked(a, NULL);
  if (b) caffe__net_parameter__free_unpacked(b, NULL);
}

static void test_kd_job_gpu_vs_cpu(void) {
  NEED_GPU();
  REQUIRE(kd_cpu_ok);
  const run_log *lcp = &kd_cpu_log;
  run_log lg, lg2;
  uint64_t cc = kd_cpu_checksum, cg = 0, cg2 = 0;
  REQUIRE(run_job(gpu, KD_JOB("kd_gpu"), &lg, &cg) == 0);
  /* the frozen teacher on the GPU: the CPU's blobs, bit for bit, before and after 20 steps */
  CHECKF(cc == cg && cc != 0, "teacher checksum cpu %016llx gpu %016llx", (unsigned long long)cc, (unsigned long long)cg);
  REQUIRE(lcp->n == lg.n && lcp->n >= 4);
  for (int i = 0; i < lcp->n; i++) {
    double e = fabs(lcp->loss[i] - lg.loss[i]) / fmax(1e-6, fabs(lcp->loss[i]));
    CHECKF(e < 1e-3, "iter %d: KD loss cpu %.8g gpu %.8g", lcp->iter[i], lcp->loss[i], lg.loss[i]);
  }
  Caffe__NetParameter *a = read_model("kd_cpu/snapshots/kd_iter_20.caffemodel"),
                      *b = read_model("kd_gpu/snapshots/kd_iter_20.caffemodel");
  int same = 0;
  double d = test_model_diff(a, b, &same);
  printf("     distilled student after 20 iterations: GPU vs CPU %.3g\n", d);
  CHECKF(d < 1e-3, "student weights differ by %.3g", d);
  /* determinism: the same job again on the GPU, bit for bit */
  REQUIRE(run_job(gpu, KD_JOB("kd_gpu2"), &lg2, &cg2) == 0);
  Caffe__NetParameter *c = read_model("kd_gpu2/snapshots/kd_iter_20.caffemodel");
  double d2 = test_model_diff(b, c, &same);
  CHECKF(same, "two GPU runs differ (largest relative difference %.3g)", d2);
  for (Caffe__NetParameter **m = (Caffe__NetParameter *[]){a, b, c}, **e = m + 3; m < e; m++)
    if (*m) caffe__net_parameter__free_unpacked(*m, NULL);
}

/* The data-parallel path on the GPU: one rank through NCCL (gradients summed by ncclAllReduce on
 * the rank's communication stream, the update ordered after it) ends where the CPU run ends. */
static void test_nccl_one_rank(void) {
  NEED_GPU();
  REQUIRE(kd_cpu_ok);
  char err[4096];
  const char *text = KD_JOB("kd_nccl") " device: 'cuda:0'";
  ProtobufCMessage *m = NULL;
  REQUIRE(dd_text_parse(&m, &distilld__distill_job__descriptor, text, strlen(text), "job", err, sizeof err) == 0);
  int it = 0;
  int r = dd_distill_run_ranks((Distilld__DistillJob *)m, tmp, dd_devices_builtin(), 1, 0, NULL, 0, NULL, NULL, NULL, &it, NULL, err, sizeof err);
  CHECKF(r == 0, "%s", err);
  protobuf_c_message_free_unpacked(m, NULL);
  if (r) return;
  Caffe__NetParameter *a = read_model("kd_cpu/snapshots/kd_iter_20.caffemodel"),
                      *b = read_model("kd_nccl/snapshots/kd_iter_20.caffemodel");
  int same = 0;
  double d = test_model_diff(a, b, &same);
  printf("     one NCCL rank on the GPU vs the CPU: %.3g\n", d);
  CHECKF(d < 1e-3, "NCCL rank weights differ by %.3g", d);
  if (a) caffe__net_parameter__free_unpacked(a, NULL);
  if (b) caffe__net_parameter__free_unpacked(b, NULL);
}

int main(void) {
  if (test_scratch_dir(tmp, sizeof tmp, "cuda_train")) return 1;
  char err[600];
  if (dd_cpu_backend_create(&cpu, 2)) return 1;
  if (!dd_backend_have_cuda())
    printf("SKIP: this build has no CUDA backend\n");
  else if (dd_backend_create(&gpu, "cuda:0", 0, err, sizeof err)) {
    printf("SKIP: no GPU: %s\n", err);
    gpu = NULL;
  }
  RUN(test_setup);
  RUN(test_teacher_job_gpu_vs_cpu);
  RUN(test_kd_job_conditioning);
  RUN(test_kd_job_gpu_vs_cpu);
  RUN(test_nccl_one_rank);
  if (gpu) dd_backend_destroy(gpu);
  dd_cpu_backend_destroy(cpu);
  test_scratch_remove(tmp);
  return test_summary();
}
