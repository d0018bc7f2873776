/* `distilld train --job JOB [--resume] [--threads N]`: one distillation (or plain training) job in
 * the foreground, with a progress bar on a terminal and plain log lines otherwise. A job with
 * `nodes: N` runs as node --node K of N (with --config for the Redis the nodes meet through and
 * --advertise for the address node 0 publishes). */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/backend.h"
#include "devices/devices.h"
#include "cli/cli.h"
#include "common/cli_util.h"
#include "base/dd_error.h"
#include "common/dconfig.h"
#include "common/keys.h"
#include "train/distill.h"
#include "common/rdzv.h"

static volatile sig_atomic_t job_stop;
static void on_signal(int sig) {
  (void)sig;
  job_stop = 1;
}

typedef struct {
  int tty, bar_open;
} job_ui;

static void end_bar(job_ui *u) {
  if (u->bar_open) fputc('\n', stderr);
  u->bar_open = 0;
}

static void ui_log(void *ctx, int level, const char *msg) {
  job_ui *u = ctx;
  end_bar(u);
  fprintf(stderr, "distilld: %s%s\n", level == 0 ? "error: " : level == 1 ? "warning: " : "", msg);
}

static void ui_progress(void *ctx, const dd_distill_progress *p) {
  job_ui *u = ctx;
  char eta[32], terms[256] = "";
  dd_cli_fmt_duration(p->eta_s, eta, sizeof eta);
  size_t used = 0;
  for (int i = 0; i < p->n_terms && used < sizeof terms; i++)
    used += (size_t)snprintf(terms + used, sizeof terms - used, " %s %.4f", p->term_names[i], p->terms[i]);
  if (u->tty) {
    int width = 20, filled = p->max_iter > 0 ? (int)((double)width * p->iter / p->max_iter) : 0;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r[%s] %d/%d ep %d loss %.4f lr %.3g %.0f img/s ETA %s ", bar, p->iter, p->max_iter, p->epoch,
            p->loss, p->lr, p->img_per_s, eta);
    fflush(stderr);
    u->bar_open = 1;
  } else {
    fprintf(stderr, "distilld: iter %d/%d epoch %d loss %.6f lr %.6g %.1f img/s data_wait %.2f ms ETA %s |%s\n", p->iter,
            p->max_iter, p->epoch, p->loss, p->lr, p->img_per_s, p->data_wait_ms, eta, terms);
  }
}

static void ui_test(void *ctx, const dd_distill_test *t) {
  job_ui *u = ctx;
  end_bar(u);
  fprintf(stderr, "distilld: test at iter %d:", t->iter);
  for (int i = 0; i < t->n; i++) fprintf(stderr, " %s %.6g", t->names[i], t->values[i]);
  fputc('\n', stderr);
}

static void ui_teacher(void *ctx, double acc, int batches) {
  job_ui *u = ctx;
  end_bar(u);
  fprintf(stderr, "distilld: teacher accuracy %.4f (%d TEST batches)\n", acc, batches);
}

static void ui_snapshot(void *ctx, int iter, const char *model, const char *state) {
  job_ui *u = ctx;
  end_bar(u);
  fprintf(stderr, "distilld: snapshot at iter %d: %s, %s\n", iter, model, state);
}

static int ui_stop(void *ctx) {
  (void)ctx;
  return job_stop;
}

/* A job that names several devices: data parallel, one rank per device, threads of this process:
 * "cpu" ranks through the CPU collective, "cuda:N" ranks through NCCL (core/collective.h). */
static int run_ranks(Distilld__DistillJob *job, const char *job_path, int resume, int threads, const dd_rendezvous *rv) {
  char err[4096];
  int status = 1;
  int n = job->n_device ? (int)job->n_device : 1;
  const char *dev0 = job->n_device ? job->device[0] : "cpu";
  if (rv)
    fprintf(stderr, "distilld: data parallel: node %d of %d, %d rank%s on %s%s (%d ranks in all); waiting for the other nodes\n",
            rv->node, rv->nodes, n, n == 1 ? "" : "s", dev0, n > 1 ? ", ..." : "", n * rv->nodes);
  else
    fprintf(stderr, "distilld: data parallel: %d ranks on %s%s\n", n, dev0, n > 1 ? ", ..." : "");
  job_ui ui = {.tty = isatty(2)};
  dd_distill_hooks hooks = {.ctx = &ui, .log = ui_log, .progress = ui_progress, .test = ui_test,
                            .teacher = ui_teacher, .snapshot = ui_snapshot, .should_stop = ui_stop};
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int resumed = 0, iter = 0, stopped = 0;
  double sa = -1, ta = -1;
  int r = dd_distill_run_nodes(job, NULL, dd_devices_builtin(), rv, n, threads, &hooks, resume, &resumed, &sa, &ta, &iter, &stopped, err, sizeof err);
  end_bar(&ui);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (r) {
    dd_cli_error("%s: %s", job_path, err);
    status = r == DD_EINVAL || r == DD_EIO || r == DD_EPARSE ? 2 : 1;
  } else {
    char took[32];
    dd_cli_fmt_duration((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9, took, sizeof took);
    printf("job %s: %s at iter %d in %s on %d ranks", job->name, stopped ? "stopped" : "done", iter, took,
           n * (rv ? rv->nodes : 1));
    if (ta >= 0) printf(", teacher accuracy %.4f", ta);
    if (sa >= 0) printf(", student accuracy %.4f", sa);
    printf("\n");
    status = 0;
  }
  distilld__distill_job__free_unpacked(job, NULL);
  return status;
}

/* A job with nodes > 1: this process is node `node`; the nodes meet through the Redis of the
 * daemon config (key PREFIX:rdzv:cli:<job name>). */
static int run_node(Distilld__DistillJob *job, const char *job_path, int resume, int threads, const dd_train_nodes *tn) {
  char err[4096];
  /* a bad job fails here on every node, not after the others have waited for it */
  if (dd_job_validate(job, NULL, dd_devices_builtin(), err, sizeof err)) {
    dd_cli_error("%s: %s", job_path, err);
    distilld__distill_job__free_unpacked(job, NULL);
    return 2;
  }
  if (tn->node < 0 || tn->node >= job->nodes) {
    char others[64];
    if (job->nodes == 2)
      snprintf(others, sizeof others, "--node 1 on the other");
    else
      snprintf(others, sizeof others, "--node 1 to %d on the others", job->nodes - 1);
    dd_cli_error("%s: the job runs on %d nodes: give --node 0 on the first machine and %s%s", job_path, job->nodes,
                 others, tn->node < 0 ? "" : " (--node is out of range)");
    distilld__distill_job__free_unpacked(job, NULL);
    return 2;
  }
  Distilld__DaemonConfig *cfg = NULL;
  char *password = NULL;
  if (dd_dconfig_read(&cfg, tn->config, err, sizeof err) || dd_dconfig_password(cfg, &password, err, sizeof err)) {
    dd_cli_error("%s", err);
    if (cfg) distilld__daemon_config__free_unpacked(cfg, NULL);
    distilld__distill_job__free_unpacked(job, NULL);
    return 2;
  }
  char key[600];
  dd_key(key, sizeof key, cfg->key_prefix, "rdzv:cli:%s", job->name);
  dd_redis_rdzv z;
  dd_rendezvous rv;
  int r = dd_redis_rdzv_init(&z, &rv, cfg, password, key, tn->node, job->nodes, job->rendezvous_timeout_s * 1000,
                             tn->advertise, err, sizeof err);
  if (password) {
    memset(password, 0, strlen(password));
    free(password);
  }
  int status;
  if (r) {
    dd_cli_error("%s", err);
    distilld__distill_job__free_unpacked(job, NULL);
    status = 1;
  } else {
    fprintf(stderr, "distilld: rendezvous through Redis at %s:%d, key %s\n", cfg->redis_host, cfg->redis_port, key);
    status = run_ranks(job, job_path, resume, threads, &rv);
  }
  dd_redis_rdzv_close(&z);
  distilld__daemon_config__free_unpacked(cfg, NULL);
  return status;
}

int dd_cmd_train_job(const char *job_path, int resume, int threads, const char *device, const dd_train_nodes *tn) {
  char err[4096];
  Distilld__DistillJob *job = NULL;
  if (dd_job_read(&job, job_path, err, sizeof err)) {
    dd_cli_error("%s", err);
    return 2;
  }
  if (job->nodes > 1) {
    if (device) {
      dd_cli_error("%s: --device does not apply to a multi-node job: every node runs the job's device list", job_path);
      distilld__distill_job__free_unpacked(job, NULL);
      return 2;
    }
    return run_node(job, job_path, resume, threads, tn);
  }
  if (tn && tn->node > 0) {
    dd_cli_error("%s: --node %d, but the job runs on one node (set nodes: N in the job)", job_path, tn->node);
    distilld__distill_job__free_unpacked(job, NULL);
    return 2;
  }
  /* relative paths in a job are relative to the current directory, like Caffe's */
  dd_backend *be = NULL;
  if (!device && job->n_device > 1) return run_ranks(job, job_path, resume, threads, NULL);
  if (!device) device = job->n_device ? job->device[0] : "cpu";
  if (dd_backend_create(&be, device, threads, err, sizeof err)) {
    dd_cli_error("%s: %s", job_path, err);
    distilld__distill_job__free_unpacked(job, NULL);
    return 1;
  }
  fprintf(stderr, "distilld: %s\n", dd_backend_describe(be));
  job_ui ui = {.tty = isatty(2)};
  dd_distill_hooks hooks = {.ctx = &ui, .log = ui_log, .progress = ui_progress, .test = ui_test,
                            .teacher = ui_teacher, .snapshot = ui_snapshot, .should_stop = ui_stop};
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  dd_distill *d = NULL;
  int status = 1;
  int r = dd_distill_create(&d, job, NULL, be, &hooks, err, sizeof err);
  if (r) {
    dd_cli_error("%s: %s", job_path, err);
    status = r == DD_EINVAL || r == DD_EIO || r == DD_EPARSE ? 2 : 1;
    goto done;
  }
  if (resume) {
    int it = 0;
    if (dd_distill_resume(d, &it, err, sizeof err)) {
      dd_cli_error("--resume: %s", err);
      goto done;
    }
    if (!it) fprintf(stderr, "distilld: --resume: no snapshot in %s/snapshots yet, starting from scratch\n", job->output_dir);
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  r = dd_distill_run(d, err, sizeof err);
  end_bar(&ui);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (r) {
    dd_cli_error("%s", err);
    goto done;
  }
  char took[32];
  dd_cli_fmt_duration((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9, took, sizeof took);
  double ta = dd_distill_teacher_accuracy(d), sa = dd_distill_student_accuracy(d);
  printf("job %s: %s at iter %d in %s", job->name, job_stop ? "stopped" : "done", dd_distill_iter(d), took);
  if (ta >= 0) printf(", teacher accuracy %.4f", ta);
  if (sa >= 0) printf(", student accuracy %.4f", sa);
  printf("\n");
  status = 0;
done:
  dd_distill_destroy(d);
  dd_backend_destroy(be);
  distilld__distill_job__free_unpacked(job, NULL);
  return status;
}
