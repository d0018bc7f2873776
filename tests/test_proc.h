/* Child-process harness shared by the tests that run real processes (tests/test_daemon.c,
 * tests/test_deploy.c, tests/test_multinode.c): a monotonic clock and an EINTR-safe sleep; writing a file and rm -rf;
 * finding an executable on PATH; spawning with fork/execv (output appended to a log, stdin from
 * /dev/null, PR_SET_PDEATHSIG) into a table of children that are all killed at exit
 * (kill_all_kids, for atexit) or on a fatal signal (on_fatal_signal); bounded waits (wait_exit,
 * kill_wait); a free random loopback port; is_final for a job's state; and, where hiredis.h is
 * included first, redis_answers (a redis-server up and answering PING).
 *
 * Before including it, define TEST_PROC_NAME (the program's name, for on_fatal_signal's message);
 * optionally MAX_KIDS (the most children at once, 32) and TEST_PROC_SIGPIPE_DFL (children start
 * with SIGPIPE at its default instead of inheriting the test's). main() sets test_pid = getpid()
 * first: spawn's children and kill_all_kids check it. */
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

#ifndef TEST_PROC_NAME
#error "define TEST_PROC_NAME before including test_proc.h"
#endif

/* ---- small helpers ----------------------------------------------------------------------------- */

static inline double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Writes a whole file; 1 when written (a failure to open is printed). */
static inline int wfile(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int wfile(const char *path, const char *fmt, ...) {
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    return 0;
  }
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  return fclose(f) == 0;
}

static inline int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  remove(path);
  return 0;
}

/* rm -rf, without a shell (symlinks are removed, never followed). */
static inline void rm_rf(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

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

/* ---- a free loopback port ---------------------------------------------------------------------------- */

static inline int port_free(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return 0;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int ok = bind(s, (struct sockaddr *)&a, sizeof a) == 0;
  close(s);
  return ok;
}

/* A random port in [20000, 60000) that was free a moment ago (after 50 tries, the last one). */
static inline int random_port(void) {
  static uint64_t x;
  if (!x) x = ((uint64_t)getpid() << 32) ^ (uint64_t)(mono() * 1e6) ^ 0x9e3779b97f4a7c15ULL;
  for (int k = 0; k < 50; k++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
    int p = 20000 + (int)(x % 40000u);
    if (port_free(p)) return p;
  }
  return 20000 + (int)(x % 40000u);
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
#endif

#endif
