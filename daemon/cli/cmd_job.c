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
#include "train/job.h"
#include "common/rdzv.h"

static volatile sig_atomic_t job_stop;
static void on_signal(int sig) {
  (void)sig;
  job_stop = 1;
}

typedef struct {
  int tty, bar_open, resume;
  const char *output_dir;
  const dd_train_nodes *tn; /* a job on several nodes: this node, the config */
  Distilld__DaemonConfig *cfg;
  dd_redis_rdzv z;
  dd_rendezvous rv;
  int rdzv_open;
  int node_failure; /* 2: the daemon config could not be read, 1: the rendezvous failed (exit status) */
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
    used += (size_t)snprintf(terms + used, sizeof terms - used, " %s %.4g", p->term_names[i], p->terms[i]);
  if (u->tty) {
    int width = 20, filled = p->max_iter > 0 ? (int)((double)width * p->iter / p->max_iter) : 0;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r[%s] %d/%d ep %d loss %.4g lr %.3g %.0f img/s ETA %s ", bar, p->iter, p->max_iter, p->epoch,
            p->loss, p->lr, p->img_per_s, eta);
    fflush(stderr);
    u->bar_open = 1;
  } else {
    fprintf(stderr, "distilld: iter %d/%d epoch %d loss %.4g lr %.6g %.1f img/s data_wait %.2f ms ETA %s |%s\n", p->iter,
            p->max_iter, p->epoch, p->loss, p->lr, p->img_per_s, p->data_wait_ms, eta, terms);
  }
}

static void ui_test(void *ctx, const dd_distill_test *t) {
  job_ui *u = ctx;
  end_bar(u);
  fprintf(stderr, "distilld: test at iter %d:", t->iter);
  for (int i = 0; i < t->n; i++) fprintf(stderr, " %s %.4g", t->names[i], t->values[i]);
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

static void ui_started(void *ctx, int start_iter, uint64_t checksum) {
  job_ui *u = ctx;
  (void)checksum;
  if (u->resume && !start_iter)
    fprintf(stderr, "distilld: --resume: no snapshot in %s/snapshots yet, starting from scratch\n", u->output_dir);
}

static void ui_placed(void *ctx, const dd_job_placement *p) {
  (void)ctx;
  if (p->backend)
    fprintf(stderr, "distilld: %s\n", p->backend);
  else if (p->nodes > 1)
    fprintf(stderr, "distilld: data parallel: node %d of %d, %d rank%s on %s%s (%d ranks in all); waiting for the other nodes\n",
            p->node, p->nodes, p->ranks, p->ranks == 1 ? "" : "s", p->device, p->ranks > 1 ? ", ..." : "",
            p->ranks * p->nodes);
  else
    fprintf(stderr, "distilld: data parallel: %d ranks on %s%s\n", p->ranks, p->device, p->ranks > 1 ? ", ..." : "");
}

/* A job with nodes > 1: this process is node --node K; the nodes meet through the Redis of the
 * daemon config (key PREFIX:rdzv:cli:<job name>). Called by dd_job_run after it validated the job,
 * so a bad job fails on every node before the others wait for it. */
static int ui_open_rendezvous(void *ctx, const Distilld__DistillJob *job, const dd_rendezvous **rv, char *err,
                              size_t errlen) {
  job_ui *u = ctx;
  const dd_train_nodes *tn = u->tn;
  if (!tn || tn->node < 0 || tn->node >= job->nodes) {
    char others[64];
    if (job->nodes == 2)
      snprintf(others, sizeof others, "--node 1 on the other");
    else
      snprintf(others, sizeof others, "--node 1 to %d on the others", job->nodes - 1);
    return dd_errorf(DD_EINVAL, err, errlen, "the job runs on %d nodes: give --node 0 on the first machine and %s%s",
                     job->nodes, others, tn && tn->node >= 0 ? " (--node is out of range)" : "");
  }
  char *password = NULL;
  if (dd_dconfig_read(&u->cfg, tn->config, err, errlen) || dd_dconfig_password(u->cfg, &password, err, errlen)) {
    u->node_failure = 2;
    return DD_EINVAL;
  }
  char key[600];
  dd_key(key, sizeof key, u->cfg->key_prefix, DD_KEY_CLI_RDZV, job->name);
  int r = dd_redis_rdzv_init(&u->z, &u->rv, u->cfg, password, key, tn->node, job->nodes,
                             job->rendezvous_timeout_s * 1000, tn->advertise, err, errlen);
  if (password) {
    memset(password, 0, strlen(password));
    free(password);
  }
  if (r) {
    u->node_failure = 1;
    return r;
  }
  u->rdzv_open = 1;
  fprintf(stderr, "distilld: rendezvous through Redis at %s:%d, key %s\n", u->cfg->redis_host, u->cfg->redis_port, key);
  *rv = &u->rv;
  return 0;
}

static void ui_close_rendezvous(void *ctx) {
  job_ui *u = ctx;
  if (u->rdzv_open) dd_redis_rdzv_close(&u->z);
  u->rdzv_open = 0;
}

/* The exit status and the message of a failed job, worded as the step that failed. */
static int report_failure(const job_ui *u, const char *job_path, const dd_job_result *res, int r, const char *err) {
  int usage = r == DD_EINVAL || r == DD_EIO || r == DD_EPARSE;
  if (u->node_failure) { /* the node's own setup: the config or the rendezvous, not the job */
    dd_cli_error("%s", err);
    return u->node_failure;
  }
  if (res->ranks > 1 || res->failed_in == DD_JOB_FAILED_SETUP) {
    dd_cli_error("%s: %s", job_path, err);
    return usage ? 2 : 1;
  }
  if (res->failed_in == DD_JOB_FAILED_DEVICE) {
    dd_cli_error("%s: %s", job_path, err);
    return 1;
  }
  if (res->failed_in == DD_JOB_FAILED_RESUME)
    dd_cli_error("--resume: %s", err);
  else
    dd_cli_error("%s", err);
  return 1;
}

int dd_cmd_train_job(const char *job_path, int resume, int threads, const char *device, const dd_train_nodes *tn) {
  char err[4096];
  Distilld__DistillJob *job = NULL;
  if (dd_job_read(&job, job_path, err, sizeof err)) {
    dd_cli_error("%s", err);
    return 2;
  }
  int status = 2;
  if (job->nodes > 1 && device) {
    dd_cli_error("%s: --device does not apply to a multi-node job: every node runs the job's device list", job_path);
    goto out;
  }
  if (job->nodes <= 1 && tn && tn->node > 0) {
    dd_cli_error("%s: --node %d, but the job runs on one node (set nodes: N in the job)", job_path, tn->node);
    goto out;
  }
  /* relative paths in a job are relative to the current directory, like Caffe's */
  job_ui ui = {.tty = isatty(2), .resume = resume, .output_dir = job->output_dir, .tn = tn};
  dd_job_opts o = {.devices = dd_devices_builtin(), .device = device, .threads = threads, .threads_per_rank = threads,
                   .start = resume ? DD_START_RESUME : DD_START_SCRATCH, .placed = ui_placed,
                   .node = tn && tn->node > 0 ? tn->node : 0, .open_rendezvous = ui_open_rendezvous,
                   .close_rendezvous = ui_close_rendezvous,
                   .hooks = {.ctx = &ui, .log = ui_log, .progress = ui_progress, .test = ui_test, .teacher = ui_teacher,
                             .snapshot = ui_snapshot, .should_stop = ui_stop, .started = ui_started}};
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  dd_job_result res;
  int r = dd_job_run(job, &o, &res, err, sizeof err);
  end_bar(&ui);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (ui.cfg) distilld__daemon_config__free_unpacked(ui.cfg, NULL);
  if (r) {
    status = report_failure(&ui, job_path, &res, r, err);
    goto out;
  }
  char took[32];
  dd_cli_fmt_duration((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9, took, sizeof took);
  printf("job %s: %s at iter %d in %s", job->name, res.stopped ? "stopped" : "done", res.iter, took);
  if (res.ranks > 1) printf(" on %d ranks", res.ranks);
  if (res.teacher_acc >= 0) printf(", teacher accuracy %.4f", res.teacher_acc);
  if (res.student_acc >= 0) printf(", student accuracy %.4f", res.student_acc);
  printf("\n");
  status = 0;
out:
  distilld__distill_job__free_unpacked(job, NULL);
  return status;
}
