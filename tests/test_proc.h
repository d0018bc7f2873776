/* Child-process harness shared by the tests that run real processes (tests/test_daemon*.c,
 * tests/test_deploy*.c, tests/test_multinode.c): finding an executable on PATH; spawning with
 * fork/execv (output appended to a log, stdin from /dev/null, PR_SET_PDEATHSIG) into a table of
 * children that are all killed at exit (kill_all_kids, for atexit) or on a fatal signal
 * (on_fatal_signal); bounded waits (wait_exit, kill_wait); exit_code and is_final (a job's state);
 * the start and end of such a test's main (proc_main_begin, proc_main_end: the scratch folder, the
 * signals, the watchdog); and, where hiredis.h is included first, a redis-server started
 * (redis_spawn) until it answers (redis_answers) and stopped (redis_stop_pid). Clocks, sleeps and
 * ports come from tests/test_net.h, files from tests/test_files.h.
 *
 * Before including it, define TEST_PROC_NAME (the program's name, for on_fatal_signal's message);
 * optionally MAX_KIDS (the most children at once, 32) and TEST_PROC_SIGPIPE_DFL (children start
 * with SIGPIPE at its default instead of inheriting the test's). main() calls proc_main_begin
 * first: it sets test_pid = getpid(), which spawn's children and kill_all_kids check. */
#ifndef DD_TEST_PROC_H
#define DD_TEST_PROC_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "test_files.h"
#include "test_net.h"

#ifndef TEST_PROC_NAME
#error "define TEST_PROC_NAME before including test_proc.h"
#endif

/* ---- small helpers ----------------------------------------------------------------------------- */

/* An executable `name` on PATH, into buf. */
static inline int find_exe(char *buf, size_t len, const char *name) {
  const char *path = getenv("PATH");
  if (!path) return 0;
  char *copy = strdup(path), *save = NULL;
  int found = 0;
  for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d && !found; d = strtok_r(NULL, ":", &save)) {
    snprintf(buf, len, "%s/%s", d[0] ? d : ".", name);
    found = access(buf, X_OK) == 0;
  }
  free(copy);
  return found;
}

static inline int is_final(const char *s) {
  return s && (!strcmp(s, "succeeded") || !strcmp(s, "failed") || !strcmp(s, "cancelled"));
}

/* The exit code of a wait status; -1 when it did not exit (a signal, or still running). */
static inline int exit_code(int st) { return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1; }

/* ---- child processes: all killed at exit --------------------------------------------------------- */

#ifndef MAX_KIDS
#define MAX_KIDS 32
#endif
static volatile pid_t kids[MAX_KIDS];
static pid_t test_pid;

static inline void kid_add(pid_t p) {
  for (int i = 0; i < MAX_KIDS; i++)
    if (!kids[i]) {
      kids[i] = p;
      return;
    }
}
static inline void kid_del(pid_t p) {
  for (int i = 0; i < MAX_KIDS; i++)
    if (kids[i] == p) kids[i] = 0;
}

static inline void kill_all_kids(void) {
  if (getpid() != test_pid) return;
  for (int i = 0; i < MAX_KIDS; i++)
    if (kids[i] > 0) kill(kids[i], SIGKILL);
  for (int i = 0; i < MAX_KIDS; i++)
    if (kids[i] > 0) {
      waitpid(kids[i], NULL, 0);
      kids[i] = 0;
    }
}

static inline void on_fatal_signal(int sig) {
  static const char msg[] = TEST_PROC_NAME ": watchdog or signal: killing the children\n";
  if (write(2, msg, sizeof msg - 1) < 0) {
  }
  for (int i = 0; i < MAX_KIDS; i++)
    if (kids[i] > 0) kill(kids[i], SIGKILL);
  _exit(128 + sig);
}

/* Starts argv[0] in `cwd` with stdout and stderr appended to `log`. */
static inline pid_t spawn(const char *const argv[], const char *cwd, const char *log) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != test_pid) _exit(127);
    signal(SIGALRM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
#ifdef TEST_PROC_SIGPIPE_DFL
    signal(SIGPIPE, SIG_DFL);
#endif
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (cwd && chdir(cwd) != 0) _exit(127);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0) dup2(nul, 0);
    for (int k = 3; k < 1024; k++) close(k); /* not the test's Redis connection */
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  if (pid > 0) kid_add(pid);
  return pid;
}

/* Waits up to `ms` for `pid` to exit. Returns its wait status, or -1 when it still runs. */
static inline int wait_exit(pid_t pid, int ms) {
  double end = mono() + ms / 1000.0;
  for (int i = 0; i < ms / 10 + 2; i++) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      kid_del(pid);
      return st;
    }
    if (r < 0) {
      kid_del(pid);
      return -2;
    }
    if (mono() > end) break;
    sleep_ms(10);
  }
  return -1;
}

static inline void kill_wait(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGKILL);
  if (wait_exit(pid, 10000) == -1) fprintf(stderr, "pid %d did not die after SIGKILL\n", (int)pid);
}

/* ---- main() -------------------------------------------------------------------------------------- */

static double proc__t0;

/* The start of a process test's main(): test_pid, the scratch folder /tmp/dd_NAME.XXXXXX into
 * `dir`, `at_exit` (NULL: kill_all_kids) registered with atexit, on_fatal_signal for SIGALRM,
 * SIGINT and SIGTERM, SIGPIPE ignored, and a watchdog alarm after `alarm_s` (under ctest's
 * timeout: never leave a daemon or redis-server behind). 0 on success. */
static inline int proc_main_begin(char *dir, size_t len, const char *name, unsigned alarm_s, void (*at_exit)(void)) {
  test_pid = getpid();
  if (test_scratch_dir(dir, len, name)) return -1;
  atexit(at_exit ? at_exit : kill_all_kids);
  signal(SIGALRM, on_fatal_signal);
  signal(SIGINT, on_fatal_signal);
  signal(SIGTERM, on_fatal_signal);
  signal(SIGPIPE, SIG_IGN);
  alarm(alarm_s);
  proc__t0 = mono();
  return 0;
}

/* The end of it: prints the total time, runs `kill_children` (NULL: kill_all_kids), removes `dir`
 * unless DD_KEEP_TMP is set, and returns test_summary(). */
static inline int proc_main_end(const char *dir, void (*kill_children)(void)) {
  printf("     total %.1f s\n", mono() - proc__t0);
  if (kill_children)
    kill_children();
  else
    kill_all_kids();
  if (!getenv("DD_KEEP_TMP")) {
    rm_rf(dir);
  } else {
    printf("     kept %s\n", dir);
  }
  return test_summary();
}

/* ---- with hiredis (included before this header): a redis-server that answers ----------------------- */

#ifdef HIREDIS_MAJOR
/* 1 once redis answers PING with PONG (not LOADING), within `ms`; 0 when it exited or timed out. */
static inline int redis_answers(int port, pid_t pid, int ms) {
  double end = mono() + ms / 1000.0;
  for (int i = 0; i < ms / 20 + 2 && mono() < end; i++) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      kid_del(pid);
      return 0;
    }
    struct timeval tv = {0, 300000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && !c->err) {
      redisSetTimeout(c, tv);
      redisReply *r = redisCommand(c, "PING");
      int ok = r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG");
      if (r) freeReplyObject(r);
      redisFree(c);
      if (ok) return 1;
    } else if (c) {
      redisFree(c);
    }
    sleep_ms(20);
  }
  return 0;
}

/* Starts redis-server `exe` on 127.0.0.1 in folder `dir`, its output appended to `log` (relative:
 * to dir): with the config file `conf` and --port, or (conf NULL) as a throwaway server (no RDB
 * snapshots, AOF when `aof`, protected mode, no log file of its own). On `port`, or (port 0) on a
 * free random one, up to 8 tries. *port_out gets the port before `ready(port, pid, ms)` (NULL:
 * redis_answers) is asked, for 10 s, whether it serves. Returns 1 with *pid_out set once it does;
 * 0 when it does not (the server killed). */
static inline int redis_spawn(const char *exe, const char *conf, int port, int aof, const char *dir, const char *log,
                              int (*ready)(int port, pid_t pid, int ms), pid_t *pid_out, int *port_out) {
  for (int attempt = 0; attempt < 8; attempt++) {
    int p = port ? port : random_port();
    char ps[16];
    snprintf(ps, sizeof ps, "%d", p);
    const char *plain[] = {exe, "--port", ps, "--bind", "127.0.0.1", "--save", "", "--appendonly", aof ? "yes" : "no",
                           "--dir", dir, "--daemonize", "no", "--protected-mode", "yes", "--logfile", "", NULL};
    const char *with_conf[] = {exe, conf, "--port", ps, NULL};
    *port_out = p;
    pid_t pid = spawn(conf ? with_conf : plain, dir, log);
    if (pid < 0) return 0;
    if ((ready ? ready : redis_answers)(p, pid, 10000)) {
      *pid_out = pid;
      return 1;
    }
    kill_wait(pid);
    if (port) return 0; /* a fixed port: no other to try */
  }
  return 0;
}

/* SIGTERM to the redis-server *pid (a clean shutdown, which writes the AOF) and a bounded wait;
 * SIGKILL when it does not exit. *pid becomes 0. Returns 1 when it exited by itself (or none ran). */
static inline int redis_stop_pid(pid_t *pid) {
  if (*pid <= 0) return 1;
  kill(*pid, SIGTERM);
  int st = wait_exit(*pid, 10000);
  if (st == -1) kill_wait(*pid);
  *pid = 0;
  return st >= 0 && WIFEXITED(st);
}
#endif

#endif
