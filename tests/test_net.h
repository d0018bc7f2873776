/* Clocks, sleeps and loopback ports shared by the tests that run threads or processes
 * (tests/test_collective*.c, tests/test_proc.h's users): a monotonic clock (mono, in s; mono_ms,
 * in ms), an EINTR-safe sleep, a loopback port that is free (random_port) or that nobody listens
 * on (closed_port). Needs _POSIX_C_SOURCE 200809L (or _GNU_SOURCE) before the first system header. */
#ifndef DD_TEST_NET_H
#define DD_TEST_NET_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static inline double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline double mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static inline void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

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

/* A closed loopback port: bound a moment ago, then let go, so nobody listens there (-1: no socket). */
static inline int closed_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

#endif
