/* Where a queued job may read and write (daemon/paths.h): every path a job names, and every path
 * its nets' data layers will open, is resolved (symlinks included) before the job builds anything. */
#define _DEFAULT_SOURCE
#include "service/paths.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format/caffe_io.h"
#include "base/dd_error.h"
#include "format/fileio.h"

/* 1 when the resolved path `p` is `root` or inside it. */
static int under(const char *p, const char *root) {
  size_t n = strlen(root);
  if (n == 1 && root[0] == '/') return 1;
  return !strncmp(p, root, n) && (p[n] == '\0' || p[n] == '/');
}

static int under_any(const char *p, char *const *roots, size_t n_roots) {
  for (size_t i = 0; i < n_roots; i++)
    if (under(p, roots[i])) return 1;
  return 0;
}

/* Resolves `path`, or for a path that does not exist yet, its deepest existing ancestor plus the
 * remaining components (which may not be "." or ".."). Returns 0 and the result in `out`. */
static int resolve(const char *path, char *out, int must_exist) {
  char *rp = realpath(path, NULL);
  if (rp) {
    int n = snprintf(out, PATH_MAX, "%s", rp);
    free(rp);
    return n < PATH_MAX ? 0 : -1;
  }
  if (must_exist || errno != ENOENT || !path[0]) return -1;
  char abs[PATH_MAX];
  if (path[0] == '/') {
    if (snprintf(abs, sizeof abs, "%s", path) >= (int)sizeof abs) return -1;
  } else {
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd) || snprintf(abs, sizeof abs, "%s/%s", cwd, path) >= (int)sizeof abs) return -1;
  }
  /* the longest prefix, cut at a '/', that exists */
  for (size_t k = strlen(abs); k-- > 0;) {
    if (abs[k] != '/') continue;
    char head[PATH_MAX];
    memcpy(head, abs, k);
    head[k] = '\0';
    rp = realpath(k ? head : "/", NULL);
    if (!rp) {
      if (errno != ENOENT && errno != ENOTDIR) return -1;
      continue;
    }
    int n = snprintf(out, PATH_MAX, "%s/%s", strcmp(rp, "/") ? rp : "", abs + k + 1);
    free(rp);
    if (n >= PATH_MAX) return -1;
    /* the components that do not exist yet may not climb (the resolved head has no . or ..) */
    for (const char *c = out; *c;) {
      while (*c == '/') c++;
      const char *e = c;
      while (*e && *e != '/') e++;
      if ((e - c == 1 && c[0] == '.') || (e - c == 2 && c[0] == '.' && c[1] == '.')) return -1;
      c = e;
    }
    return 0;
  }
  return -1;
}

int dd_paths_init(dd_paths *p, char *const *data_roots, size_t n_data, const char *output_root, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  const char *dflt = ".";
  if (n_data == 0) {
    data_roots = (char *const *)&dflt;
    n_data = 1;
  }
  if (n_data > DD_PATHS_MAX_ROOTS) return dd_errorf(DD_EINVAL, err, errlen, "data_root: at most %d roots", DD_PATHS_MAX_ROOTS);
  for (size_t i = 0; i < n_data; i++) {
    char *rp = realpath(data_roots[i], NULL);
    if (!rp) return dd_errorf(DD_EINVAL, err, errlen, "data_root: \"%s\": %s", data_roots[i], strerror(errno));
    p->data[p->n_data++] = rp;
  }
  const char *out = output_root && output_root[0] ? output_root : "out";
  if (mkdir(out, 0755) != 0 && errno != EEXIST)
    return dd_errorf(DD_EINVAL, err, errlen, "output_root: cannot create \"%s\": %s", out, strerror(errno));
  p->output = realpath(out, NULL);
  if (!p->output) return dd_errorf(DD_EINVAL, err, errlen, "output_root: \"%s\": %s", out, strerror(errno));
  return 0;
}

void dd_paths_free(dd_paths *p) {
  for (size_t i = 0; i < p->n_data; i++) free(p->data[i]);
  free(p->output);
  memset(p, 0, sizeof *p);
}

int dd_paths_check_read(const dd_paths *p, const char *field, const char *path, char *err, size_t errlen) {
  char r[PATH_MAX];
  if (resolve(path, r, 0))
    return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s\" cannot be resolved: refused", field, path);
  if (!under_any(r, p->data, p->n_data))
    return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s\" (%s) is outside the daemon's data roots: refused", field, path, r);
  return 0;
}

int dd_paths_check_write(const dd_paths *p, const char *field, const char *path, char *err, size_t errlen) {
  char r[PATH_MAX];
  if (resolve(path, r, 0))
    return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s\" cannot be resolved: refused", field, path);
  if (!under(r, p->output) || !strcmp(r, p->output))
    return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s\" (%s) is not inside the daemon's output root %s: refused", field,
                     path, r, p->output);
  char snaps[PATH_MAX + 16];
  snprintf(snaps, sizeof snaps, "%s/snapshots", r);
  char rs[PATH_MAX];
  struct stat st;
  if (lstat(snaps, &st) == 0 && (resolve(snaps, rs, 1) || !under(rs, p->output)))
    return dd_errorf(DD_EPERM, err, errlen, "%s: \"%s/snapshots\" leads outside the output root: refused", field, path);
  return 0;
}

/* Every image a list file names (root_folder + the path part of each "PATH LABEL" line). */
static int check_list(const dd_paths *p, const char *field, const char *source, const char *root, char *err, size_t errlen) {
  char *buf = NULL;
  size_t len = 0;
  if (dd_read_file(&buf, &len, source, err, errlen)) return DD_EIO;
  int r = 0, line = 0;
  char *s = buf, *end = buf + len;
  char full[PATH_MAX];
  while (s < end && !r) {
    line++;
    char *eol = memchr(s, '\n', (size_t)(end - s));
    char *le = eol ? eol : end, *next = eol ? eol + 1 : end;
    while (le > s && (le[-1] == '\r' || le[-1] == ' ' || le[-1] == '\t')) le--;
    char *sp = le;
    while (sp > s && sp[-1] != ' ' && sp[-1] != '\t') sp--;
    char *pe = sp;
    while (pe > s && (pe[-1] == ' ' || pe[-1] == '\t')) pe--;
    if (pe > s) {
      int n = snprintf(full, sizeof full, "%s%.*s", root ? root : "", (int)(pe - s), s);
      if (n >= (int)sizeof full) {
        r = dd_errorf(DD_EPERM, err, errlen, "%s: %s:%d: the path is too long: refused", field, source, line);
      } else {
        char f2[96];
        snprintf(f2, sizeof f2, "%s (%s:%d)", field, source, line);
        r = dd_paths_check_read(p, f2, full, err, errlen);
      }
    }
    s = next;
  }
  free(buf);
  return r;
}

int dd_paths_check_net(const dd_paths *p, const char *field, const char *net_path, char *err, size_t errlen) {
  int r = dd_paths_check_read(p, field, net_path, err, errlen);
  if (r) return r;
  Caffe__NetParameter *np = NULL;
  if ((r = dd_net_read_text(&np, net_path, err, errlen))) return r;
  for (size_t i = 0; i < np->n_layer && !r; i++) {
    const Caffe__LayerParameter *l = np->layer[i];
    char f[256];
    if (l->transform_param && l->transform_param->mean_file && l->transform_param->mean_file[0]) {
      snprintf(f, sizeof f, "%s: layer \"%s\" transform_param.mean_file", net_path, l->name ? l->name : "");
      r = dd_paths_check_read(p, f, l->transform_param->mean_file, err, errlen);
    }
    const Caffe__ImageDataParameter *ip = l->image_data_param;
    if (!r && ip && ip->mean_file && ip->mean_file[0]) { /* the data layer falls back to this one */
      snprintf(f, sizeof f, "%s: layer \"%s\" image_data_param.mean_file", net_path, l->name ? l->name : "");
      r = dd_paths_check_read(p, f, ip->mean_file, err, errlen);
    }
    if (!r && ip && ip->source) {
      snprintf(f, sizeof f, "%s: layer \"%s\" image_data_param.source", net_path, l->name ? l->name : "");
      r = dd_paths_check_read(p, f, ip->source, err, errlen);
      if (!r && ip->root_folder && ip->root_folder[0]) {
        snprintf(f, sizeof f, "%s: layer \"%s\" image_data_param.root_folder", net_path, l->name ? l->name : "");
        r = dd_paths_check_read(p, f, ip->root_folder, err, errlen);
      }
      if (!r) {
        snprintf(f, sizeof f, "%s: layer \"%s\"", net_path, l->name ? l->name : "");
        r = check_list(p, f, ip->source, ip->root_folder, err, errlen);
      }
    }
  }
  caffe__net_parameter__free_unpacked(np, NULL);
  return r;
}

int dd_paths_check_job(const dd_paths *p, const Distilld__DistillJob *job, char *err, size_t errlen) {
  int r = 0;
  if (job->student && job->student->net) {
    if ((r = dd_paths_check_net(p, "student.net", job->student->net, err, errlen))) return r;
    for (size_t i = 0; i < job->student->n_weights; i++)
      if ((r = dd_paths_check_read(p, "student.weights", job->student->weights[i], err, errlen))) return r;
  }
  if (job->teacher) {
    if (job->teacher->net && (r = dd_paths_check_net(p, "teacher.net", job->teacher->net, err, errlen))) return r;
    for (size_t i = 0; i < job->teacher->n_weights; i++)
      if ((r = dd_paths_check_read(p, "teacher.weights", job->teacher->weights[i], err, errlen))) return r;
  }
  if (job->solver_file && (r = dd_paths_check_read(p, "solver_file", job->solver_file, err, errlen))) return r;
  if (!job->output_dir || !job->output_dir[0])
    return dd_errorf(DD_EINVAL, err, errlen, "output_dir: where snapshots and metrics go is required");
  return dd_paths_check_write(p, "output_dir", job->output_dir, err, errlen);
}
