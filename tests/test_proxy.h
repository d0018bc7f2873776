/* A TCP proxy (a forked child) in front of the test's redis-server, for the daemon tests that need
 * to come between a daemon and Redis (tests/test_daemon_claims.c: replies held back to open the
 * window of a claim in flight; tests/test_daemon_backfill.c: a plain forwarder, SIGSTOPped to cut
 * a worker off). Include after tests/test_daemon.h (srv, test_pid, kid_add, mono). */
#ifndef DD_TEST_PROXY_H
#define DD_TEST_PROXY_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>

/* A TCP proxy (a forked child) between a daemon and redis-server that holds every reply for
 * `delay_ms`: it opens, wide and visibly, the window between Redis running a command and the daemon
 * reading its answer. Requests go through at once. */
#define PROXY_MAX 8
typedef struct chunk {
  struct chunk *next;
  double due;
  size_t len, off;
  char data[];
} chunk;

static inline void test_proxy_main(int lfd, int redis_port, int delay_ms) {
  struct {
    int a, b; /* the client's socket, Redis's */
    chunk *head, *tail;
  } pr[PROXY_MAX];
  int n = 0;
  for (;;) {
    struct pollfd pf[1 + 2 * PROXY_MAX];
    int np = 0;
    pf[np++] = (struct pollfd){.fd = lfd, .events = POLLIN};
    double now = mono(), next_due = -1;
    for (int i = 0; i < n; i++) {
      pf[np++] = (struct pollfd){.fd = pr[i].a, .events = POLLIN};
      pf[np++] = (struct pollfd){.fd = pr[i].b, .events = pr[i].b >= 0 ? POLLIN : 0};
      if (pr[i].head && (next_due < 0 || pr[i].head->due < next_due)) next_due = pr[i].head->due;
    }
    int timeout = next_due < 0 ? 1000 : next_due <= now ? 0 : (int)((next_due - now) * 1000) + 1;
    if (poll(pf, (nfds_t)np, timeout) < 0 && errno != EINTR) _exit(1);
    if (pf[0].revents & POLLIN) {
      int a = accept(lfd, NULL, NULL);
      if (a >= 0 && n < PROXY_MAX) {
        int b = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)redis_port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (b >= 0 && connect(b, (struct sockaddr *)&sa, sizeof sa) == 0) {
          pr[n].a = a, pr[n].b = b, pr[n].head = pr[n].tail = NULL;
          n++;
        } else {
          close(a);
          if (b >= 0) close(b);
        }
      } else if (a >= 0) {
        close(a);
      }
    }
    for (int i = 0; i < n; i++) {
      int drop = 0;
      char buf[65536];
      if (pf[1 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR)) { /* client -> redis, at once */
        ssize_t k = read(pr[i].a, buf, sizeof buf);
        if (k <= 0)
          drop = 1;
        else if (pr[i].b >= 0)
          for (ssize_t off = 0; off < k;) {
            ssize_t w = write(pr[i].b, buf + off, (size_t)(k - off));
            if (w <= 0) break;
            off += w;
          }
      }
      if (!drop && pr[i].b >= 0 && (pf[2 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR))) { /* redis -> client, later */
        ssize_t k = read(pr[i].b, buf, sizeof buf);
        if (k <= 0) {
          close(pr[i].b);
          pr[i].b = -1;
        } else {
          chunk *c = malloc(sizeof *c + (size_t)k);
          if (!c) _exit(1);
          c->next = NULL, c->due = mono() + delay_ms / 1000.0, c->len = (size_t)k, c->off = 0;
          memcpy(c->data, buf, (size_t)k);
          if (pr[i].tail)
            pr[i].tail->next = c;
          else
            pr[i].head = c;
          pr[i].tail = c;
        }
      }
      while (!drop && pr[i].head && pr[i].head->due <= mono()) {
        chunk *c = pr[i].head;
        ssize_t w = write(pr[i].a, c->data + c->off, c->len - c->off);
        if (w <= 0) {
          drop = 1;
          break;
        }
        c->off += (size_t)w;
        if (c->off < c->len) break;
        pr[i].head = c->next;
        if (!pr[i].head) pr[i].tail = NULL;
        free(c);
      }
      if (!drop && pr[i].b < 0 && !pr[i].head) drop = 1; /* redis closed and everything delivered */
      if (drop) {
        close(pr[i].a);
        if (pr[i].b >= 0) close(pr[i].b);
        while (pr[i].head) {
          chunk *c = pr[i].head;
          pr[i].head = c->next;
          free(c);
        }
        pr[i] = pr[--n];
        i--;
      }
    }
  }
}

/* Starts the proxy in front of this test's redis-server (its pid in *pid, a kid killed at the
 * end); returns its port (0: failed). delay_ms 0: a plain forwarder (SIGSTOP it to cut its
 * clients off from Redis without a disconnect). */
static inline int test_proxy_start(int delay_ms, pid_t *pid) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0) return 0;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 8) != 0 ||
      getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0) {
    close(lfd);
    return 0;
  }
  fflush(NULL);
  *pid = fork();
  if (*pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != test_pid) _exit(1);
    signal(SIGALRM, SIG_DFL);
    alarm(0);
    test_proxy_main(lfd, srv.port, delay_ms);
    _exit(0);
  }
  close(lfd);
  if (*pid < 0) return 0;
  kid_add(*pid);
  return ntohs(sa.sin_port);
}

#endif
