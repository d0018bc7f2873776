/* `distilld --config FILE`: the service's entry point. It reads the config, checks the devices it
 * names, resolves the path policy's roots, picks the worker's name and its owner token, names the
 * keys, and hands the rest to the loop (service/loop.c). How the service's files fit together is in
 * service/daemon.h. */
#define _GNU_SOURCE
#include "service/daemon.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/backend.h"
#include "common/cli_util.h"
#include "common/dconfig.h"
#include "common/keys.h"
#include "devices/devices.h"
#include "service/log.h"
#include "service/loop.h"
#include "service/metrics.h"
#include "service/metrics_http.h"
#include "service/paths.h"
#include "service/state.h"

int dd_cmd_daemon(const char *config_path) {
  char err[4096];
  daemon_t *d = calloc(1, sizeof *d);
  if (!d) return 1;
  int status = 1;
  if (dd_dconfig_read(&d->cfg, config_path, err, sizeof err)) {
    dd_cli_error("%s", err);
    free(d);
    return 2;
  }
  const Distilld__DaemonConfig *c = d->cfg;
  dlog_setup((int)c->log_level, getenv("JOURNAL_STREAM") != NULL);
  for (size_t i = 0; i < c->n_device; i++) {
    /* each device named must exist now: a worker that cannot use its GPU says so at start */
    dd_backend *probe = NULL;
    if (dd_backend_create(&probe, c->device[i], 1, err, sizeof err)) {
      dd_cli_error("%s: device: %s", config_path, err);
      goto out;
    }
    dd_backend_destroy(probe);
  }
  if (dd_dconfig_password(c, &d->password, err, sizeof err)) {
    dd_cli_error("%s: %s", config_path, err);
    goto out;
  }
  if (dd_paths_init(&d->paths, c->data_root, c->n_data_root, c->output_root, err, sizeof err)) {
    dd_cli_error("%s: %s", config_path, err);
    goto out;
  }
  if (gethostname(d->host, sizeof d->host - 1)) snprintf(d->host, sizeof d->host, "localhost");
  if (c->worker_name && c->worker_name[0])
    snprintf(d->worker, sizeof d->worker, "%s", c->worker_name);
  else {
    char h[48];
    snprintf(h, sizeof h, "%.40s", d->host);
    for (char *p = h; *p; p++)
      if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') || ('0' <= *p && *p <= '9') || *p == '-' || *p == '.')) *p = '_';
    snprintf(d->worker, sizeof d->worker, "%s-%d", h, (int)getpid());
  }
  {
    unsigned long long nonce = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&nonce, sizeof nonce, 1, f) != 1) nonce = (unsigned long long)dd_now() * 1000003ULL ^ (unsigned long long)getpid();
    if (f) fclose(f);
    snprintf(d->owner, sizeof d->owner, "%s#%016llx", d->worker, nonce);
  }
  d->n_slots = c->max_jobs > MAX_SLOTS ? MAX_SLOTS : c->max_jobs;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  d->threads = c->threads_per_job > 0 ? c->threads_per_job : (int)(cores > 0 ? cores : 1) / d->n_slots;
  if (d->threads < 1) d->threads = 1;
  dd_key(d->k_jobs, sizeof d->k_jobs, c->key_prefix, DD_KEY_JOBS);
  dd_key(d->k_index, sizeof d->k_index, c->key_prefix, DD_KEY_INDEX);
  dd_key(d->k_workers, sizeof d->k_workers, c->key_prefix, DD_KEY_WORKERS);
  dd_key(d->k_worker, sizeof d->k_worker, c->key_prefix, DD_KEY_WORKER, d->worker);
  d->ring.items = calloc(RING_CAP, sizeof *d->ring.items);
  if (!d->ring.items) {
    dd_cli_error("out of memory for the event buffer");
    goto out;
  }
  pthread_mutex_init(&d->ring.mu, NULL);
  pthread_mutex_init(&d->dev_lock, NULL);
  pthread_cond_init(&d->dev_cond, NULL);
  metrics_init(d);
  if (d->mx.enabled && metrics_http_start(&d->http, d, err, sizeof err)) {
    dd_cli_error("%s: %s", config_path, err);
  } else {
    status = loop_run(d);
    metrics_http_stop(d->http); /* after the loop: the endpoint serves while the worker drains */
  }
  metrics_destroy(d);
  pthread_cond_destroy(&d->dev_cond);
  pthread_mutex_destroy(&d->dev_lock);
  pthread_mutex_destroy(&d->ring.mu);
out:
  for (int i = 0; i < MAX_SLOTS; i++) free(d->slots[i].text);
  free(d->ring.items);
  dd_paths_free(&d->paths);
  free(d->password);
  distilld__daemon_config__free_unpacked(d->cfg, NULL);
  free(d);
  return status;
}

