/* Snapshot files in the job's snapshot folder (see snapshot_io.h), and finding the newest one. */
#define _POSIX_C_SOURCE 200809L
#include "train/snapshot_io.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/dd_error.h"
#include "format/caffe_io.h"
#include "format/fileio.h"
#include "train/solver.h"

static const char *last_component(const char *path) {
  const char *s = strrchr(path, '/');
  return s ? s + 1 : path;
}

int dd_snapshot_write_model(const Caffe__NetParameter *np, int dirfd, const char *path, char *err, size_t errlen) {
  if (dirfd < 0) return dd_caffemodel_write(np, path, err, errlen);
  return dd_caffemodel_write_at(np, dirfd, last_component(path), path, err, errlen);
}

int dd_snapshot_write_state(const Caffe__SolverState *st, int dirfd, const char *path, char *err, size_t errlen) {
  if (dirfd < 0) return dd_solverstate_write(st, path, err, errlen);
  return dd_solverstate_write_at(st, dirfd, last_component(path), path, err, errlen);
}

/* The whole of `name` in `dirfd` (O_NOFOLLOW; a regular file only), or of the path `shown` when
 * `dirfd` < 0. */
static int read_at(char **buf, size_t *len, int dirfd, const char *name, const char *shown, char *err, size_t errlen) {
  if (dirfd < 0) return dd_read_file(buf, len, shown, err, errlen);
  int fd;
  int r = dd_open_regular_at(dirfd, name, O_NOFOLLOW, NULL, shown, &fd, err, errlen);
  if (r) return r;
  r = dd_read_fd(buf, len, fd, shown, err, errlen);
  close(fd);
  return r;
}

int dd_snapshot_read_state(Caffe__SolverState **out, int dirfd, const char *path, char *err, size_t errlen) {
  *out = NULL;
  char *buf;
  size_t len;
  int r = read_at(&buf, &len, dirfd, last_component(path), path, err, errlen);
  if (r) return r;
  r = dd_solverstate_parse(out, (const uint8_t *)buf, len, path, err, errlen);
  free(buf);
  return r;
}

int dd_snapshot_read_model(Caffe__NetParameter **out, char *model, size_t mlen, int dirfd, const dd_path_policy *policy,
                           const char *state_path, const char *learned_net, char *err, size_t errlen) {
  *out = NULL;
  const char *slash = strrchr(state_path, '/');
  int dlen = slash ? (int)(slash - state_path + 1) : 0;
  int beside = learned_net[0] != '/' ||
               (slash && !strncmp(learned_net, state_path, (size_t)dlen) && !strchr(learned_net + dlen, '/'));
  char *buf = NULL;
  size_t len = 0;
  int r;
  if (beside) {
    snprintf(model, mlen, "%.*s%s", dlen, state_path, last_component(learned_net));
    r = read_at(&buf, &len, dirfd, last_component(learned_net), model, err, errlen);
  } else {
    snprintf(model, mlen, "%s", learned_net);
    char field[600];
    snprintf(field, sizeof field, "%s: learned_net", state_path);
    int fd;
    r = dd_path_open(policy, DD_PATH_READ, 0, field, model, &fd, err, errlen);
    if (!r) {
      r = dd_read_fd(&buf, &len, fd, model, err, errlen);
      close(fd);
    }
  }
  if (r) return r;
  r = dd_caffemodel_parse(out, (const uint8_t *)buf, len, model, err, errlen);
  free(buf);
  return r;
}

int dd_snapshot_find(const char *dir, const char *name, int *iter, char *state, size_t len) {
  DIR *dh = opendir(dir);
  if (!dh) return 0;
  struct dirent *e;
  long best = -1;
  char best_name[256] = "";
  while ((e = readdir(dh))) {
    const char *n = e->d_name, *it = NULL;
    if (name) {
      size_t plen = strlen(name);
      if (!strncmp(n, name, plen) && !strncmp(n + plen, DD_SNAP_ITER, strlen(DD_SNAP_ITER))) it = n + plen + strlen(DD_SNAP_ITER);
    } else {
      /* any job's: the last "_iter_" of the name */
      for (const char *p = strstr(n, DD_SNAP_ITER); p; p = strstr(p + 1, DD_SNAP_ITER)) it = p + strlen(DD_SNAP_ITER);
    }
    if (!it || !isdigit((unsigned char)*it)) continue;
    char *end;
    long k = strtol(it, &end, 10);
    if (strcmp(end, DD_SNAP_STATE) || k <= best || k > INT_MAX || strlen(n) >= sizeof best_name) continue;
    best = k;
    snprintf(best_name, sizeof best_name, "%s", n);
  }
  closedir(dh);
  if (best < 0) return 0;
  if (iter) *iter = (int)best;
  if (state) snprintf(state, len, "%s/%s", dir, best_name);
  return 1;
}
