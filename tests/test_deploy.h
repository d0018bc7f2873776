/* What the deployment tests share (tests/test_deploy.c: the systemd unit and the Containerfile;
 * tests/test_deploy_redis.c: Redis with the deploy files, a daemon and the fleet script): the
 * deploy/ folder, the scratch folders, editing config files (replace_all, rewrite_conf), and the
 * start and end of main(), which also kills the fleet script's workers.
 *
 * Before including it, define TEST_PROC_NAME (the program's name). */
#ifndef DD_TEST_DEPLOY_H
#define DD_TEST_DEPLOY_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test.h"
#define MAX_KIDS 16
#define TEST_PROC_SIGPIPE_DFL
#include "test_proc.h"

#define DEPLOY DD_SOURCE_DIR "/deploy"

static char root[128]; /* /tmp/dd_deploy.XXXXXX */
static char work[192]; /* root/work: the daemons' working directory and data root */

/* `s` with every `from` replaced by `to` (malloc'd). `*count` gets the number of replacements. */
static inline char *replace_all(const char *s, const char *from, const char *to, int *count) {
  size_t fl = strlen(from), tl = strlen(to), n = 0;
  for (const char *p = s; (p = strstr(p, from)); p += fl) n++;
  char *out = malloc(strlen(s) + n * (tl > fl ? tl - fl : 0) + 1), *o = out;
  if (!out) return NULL;
  const char *p = s, *q;
  while ((q = strstr(p, from))) {
    memcpy(o, p, (size_t)(q - p));
    o += q - p;
    memcpy(o, to, tl);
    o += tl;
    p = q + fl;
  }
  strcpy(o, p);
  if (count) *count = (int)n;
  return out;
}

/* A config file (prototxt "key: value" or redis.conf "key value" lines) with the line of each
 * keys[i] replaced by lines[i] (the first occurrence; later ones dropped; comments untouched) and
 * the keys it did not have appended. Returns 1 when written. */
static inline int rewrite_conf(const char *src, const char *dst, const char *const *keys, const char *const *lines,
                               int n) {
  char *text = test_slurp(src);
  FILE *f = text ? fopen(dst, "w") : NULL;
  if (!f) {
    free(text);
    return 0;
  }
  int used[32] = {0};
  for (char *line = text, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = '\0';
    const char *k = line + strspn(line, " \t");
    size_t kl = strcspn(k, ": \t");
    int hit = -1;
    for (int i = 0; i < n && i < 32 && *k != '#'; i++)
      if (kl == strlen(keys[i]) && !strncmp(k, keys[i], kl)) hit = i;
    if (hit < 0)
      fprintf(f, "%s\n", line);
    else if (!used[hit]++)
      fprintf(f, "%s\n", lines[hit]);
  }
  for (int i = 0; i < n && i < 32; i++)
    if (!used[i]) fprintf(f, "%s\n", lines[i]);
  free(text);
  return fclose(f) == 0;
}

/* ---- child processes: all killed at exit --------------------------------------------------------- */

static char fleet_pids[300]; /* the fleet script's pid file: its workers run in their own sessions */

/* SIGKILL to the fleet script's workers still listed (they are not our children). */
static inline void kill_fleet(void) {
  if (!fleet_pids[0]) return;
  FILE *f = fopen(fleet_pids, "r");
  if (!f) return;
  long p;
  while (fscanf(f, "%ld", &p) == 1)
    if (p > 1) kill((pid_t)p, SIGKILL);
  fclose(f);
}

/* kill_all_kids, the fleet script's workers first. */
static inline void kill_fleet_and_kids(void) {
  if (getpid() != test_pid) return;
  kill_fleet();
  kill_all_kids();
}

/* The start of main(): the scratch folders root and work (root/work), the children's killer, the
 * signals and the watchdog (under ctest's 300 s: never leave a daemon or redis-server behind). */
static inline int deploy_main_begin(void) {
  if (proc_main_begin(root, sizeof root, "deploy", 280, kill_fleet_and_kids)) return -1;
  snprintf(work, sizeof work, "%s/work", root);
  return mkdir(work, 0755) != 0 ? -1 : 0;
}

/* The end of main(): every child killed, the scratch folder removed (not with DD_KEEP_TMP). */
static inline int deploy_main_end(void) { return proc_main_end(root, kill_fleet_and_kids); }

#endif
