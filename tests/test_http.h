/* HTTP over plain sockets for the tests of distilld's HTTP servers (the metrics endpoint:
 * tests/test_daemon_metrics.c; distilld web: tests/test_web.c): one request per connection,
 * HTTP/1.0 (one answer, then the server closes; never chunked), 127.0.0.1 or [::1] only. */
#ifndef DD_TEST_HTTP_H
#define DD_TEST_HTTP_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* A connection to 127.0.0.1:port (with `v6`: [::1]:port) with 5 s send and receive timeouts; -1
 * when refused. */
static inline int tcp_open_at(int port, int v6) {
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int r = v6 ? connect(fd, (struct sockaddr *)&a6, sizeof a6) : connect(fd, (struct sockaddr *)&a, sizeof a);
  if (r != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static inline int tcp_open(int port) { return tcp_open_at(port, 0); }

/* Sends what it can (the server may close first: that is an answer too). */
static inline void send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return;
    p += k, n -= (size_t)k;
  }
}

/* Reads until the peer closes, the socket's timeout or 32 MiB; malloc'd, NUL-terminated. */
static inline char *recv_all(int fd) {
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  while (buf) {
    if (len + 1 == cap) {
      if (cap >= (32u << 20)) break;
      char *nb = realloc(buf, cap * 2);
      if (!nb) break;
      buf = nb, cap *= 2;
    }
    ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
    if (k <= 0) break;
    len += (size_t)k;
  }
  if (buf) buf[len] = '\0';
  return buf;
}

/* "HTTP/1.x NNN ...": NNN; 0 for no answer (closed without one). */
static inline int http_status(const char *resp) {
  if (!resp || strncmp(resp, "HTTP/1.", 7) || strlen(resp) < 12) return 0;
  return atoi(resp + 9);
}

static inline const char *http_body(const char *resp) {
  const char *b = resp ? strstr(resp, "\r\n\r\n") : NULL;
  return b ? b + 4 : "";
}

/* One raw request on a connection of its own; the whole answer (malloc'd; "" when none). */
static inline char *http_raw(int port, const char *req, size_t len) {
  int fd = tcp_open(port);
  if (fd < 0) return strdup("");
  send_all(fd, req, len);
  char *r = recv_all(fd);
  close(fd);
  return r ? r : strdup("");
}

/* METHOD path (Host 127.0.0.1:port, `extra` header lines): the status; the whole answer into
 * *resp (malloc'd) when given. */
static inline int http_req(int port, const char *method, const char *path, const char *extra, char **resp) {
  char req[4096];
  int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n%s%s\r\n", method, path, port,
                   extra ? extra : "", !strcmp(method, "POST") ? "Content-Length: 0\r\n" : "");
  char *r = http_raw(port, req, (size_t)n);
  int st = http_status(r);
  if (resp)
    *resp = r;
  else
    free(r);
  return st;
}

/* GET path: the status, the body into *body (malloc'd) when given. */
static inline int http_get(int port, const char *path, char **body) {
  char *r = NULL;
  int st = http_req(port, "GET", path, NULL, &r);
  if (body) *body = strdup(http_body(r));
  free(r);
  return st;
}

/* GET path with one request header of `bytes` bytes (a server must refuse it: 431, or close):
 * the status (0: closed without an answer); *seconds, how long the answer took. */
static inline int http_huge_header(int port, const char *path, size_t bytes, double *seconds) {
  char *huge = malloc(bytes + 256);
  if (!huge) return -1;
  int n = snprintf(huge, 256, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ", path);
  memset(huge + n, 'a', bytes);
  memcpy(huge + n + bytes, "\r\n\r\n", 5);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  char *r = http_raw(port, huge, (size_t)n + bytes + 4);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  *seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  int st = http_status(r);
  free(r);
  free(huge);
  return st;
}

#endif
