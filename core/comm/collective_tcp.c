/* The CPU collectives across nodes (collective.h): each node runs its ranks as a CPU group
 * (collective_cpu.c); the nodes' local rank 0s ("leaders") talk over TCP, node 0's leader in the
 * middle (a star). A collective on rank r of node m:
 *
 *   allreduce: the local group sums (every local rank gets node m's sum); the leader sends it to
 *              node 0, whose leader adds node 1's, node 2's, ... into its own in that order and
 *              sends the total back; the local group broadcasts it from the leader.
 *   broadcast: the root's node broadcasts locally from the root, so its leader has the data; every
 *              leader then gets the root node's buffer through node 0; the local groups broadcast.
 *   barrier:   local barrier, an empty exchange between the leaders, local barrier.
 *
 * Every message starts with a header (magic, operation, n, root, sequence number); node 0 checks
 * that every node called the same operation with the same n and root at the same step, as the CPU
 * group checks its ranks. Failure: abort() aborts the local group and shuts the sockets down, so a
 * leader blocked in the exchange wakes, and the other nodes see the connection close and abort in
 * turn; a leader that waits longer than the group's timeout for a peer aborts too. A node that dies
 * therefore fails every rank of every node within the timeout (at once when its sockets close).
 *
 * Setting up: node 0 listens on an ephemeral port and publishes "tcp HOST PORT NONCE NODES LOCAL"
 * through the caller's rendezvous; every other node connects and says hello (nonce, node, nodes,
 * local); node 0 answers each with a welcome once all have come, or with the reason it refuses
 * (a node index taken twice, different counts); a hello it takes is answered at once ("taken,
 * wait"), so a joiner that gets no answer from a listener knows it found a stale text. A hello with another nonce (a stale text from an
 * earlier attempt) is dropped, and the joiner fetches the text again. All memory is allocated at
 * creation; a collective allocates nothing. Waits use poll() with deadlines, never spin. */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "comm/collective.h"
#include "base/dd_error.h"

#define TCP__MAGIC 0x31434444u /* "DDC1", little-endian */
#define TCP__HELLO 0x48434444u /* "DDCH" */
#define TCP__CHUNK 65536       /* floats: node 0's receive buffer */
#define TCP__MAX_NODES 1024

enum { TCP__ALLREDUCE = 1, TCP__BROADCAST, TCP__BARRIER };
static const char *tcp__op_name(uint32_t op) {
  return op == TCP__ALLREDUCE ? "allreduce" : op == TCP__BROADCAST ? "broadcast" : op == TCP__BARRIER ? "barrier" : "?";
}

typedef struct {
  uint32_t magic, op;
  int64_t n;
  int32_t root;
  uint32_t seq;
} tcp__hdr;

typedef struct {
  uint32_t magic;
  uint8_t nonce[16];
  int32_t node, nodes, local;
  uint8_t instance[8]; /* the joining process's own random id: a retry from it replaces its earlier connection */
} tcp__hello;

typedef struct {
  uint32_t magic;
  int32_t ok;
  char why[240];
} tcp__welcome;

typedef struct {
  int nodes, node, local;
  int timeout_ms;
  dd_comm *lc[64];  /* the local CPU group's handles */
  dd_comm comms[64]; /* the handles given out (global ranks) */
  int *fd;           /* node 0: fd[k] for node k >= 1; others: fd[0], the link to node 0 */
  uint8_t (*inst)[8]; /* node 0: the instance id of the joiner holding fd[k] */
  float *chunk;      /* node 0: (TCP__CHUNK) */
  uint32_t seq;      /* leader only: collectives done */
  atomic_int failed;
  pthread_mutex_t mu; /* reason */
  char reason[512];
} tcp__group;

static long tcp__now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Fails the whole group (first reason kept): the local group, and every socket shut down. */
static void tcp__fail(tcp__group *g, const char *why) {
  pthread_mutex_lock(&g->mu);
  if (!atomic_load(&g->failed)) {
    snprintf(g->reason, sizeof g->reason, "%s", why && why[0] ? why : "collective group aborted");
    atomic_store(&g->failed, 1);
  }
  pthread_mutex_unlock(&g->mu);
  g->lc[0]->ops->abort(g->lc[0], why);
  int nfd = g->node == 0 ? g->nodes : 1;
  for (int k = 0; k < nfd; k++)
    if (g->fd[k] >= 0) shutdown(g->fd[k], SHUT_RDWR);
}

static void tcp__abort(dd_comm *c, const char *why) { tcp__fail(c->ctx, why); }

static int tcp__reason(tcp__group *g, char *err, size_t errlen) {
  pthread_mutex_lock(&g->mu);
  dd_errorf(DD_EIO, err, errlen, "%s", g->reason);
  pthread_mutex_unlock(&g->mu);
  return DD_EIO;
}

/* Moves len bytes over fd (send when out, else receive) before deadline (tcp__now_ms()).
 * 0, or -1 with what went wrong in why: "closed", "timeout" or the errno text. */
static int tcp__io(int fd, void *buf, size_t len, int out, long deadline, char *why, size_t whylen) {
  char *p = buf;
  while (len > 0) {
    long left = deadline - tcp__now_ms();
    if (left <= 0) return snprintf(why, whylen, "timeout"), -1;
    struct pollfd pf = {fd, (short)(out ? POLLOUT : POLLIN), 0};
    int pr = poll(&pf, 1, left > 1000 ? 1000 : (int)left);
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) return snprintf(why, whylen, "%s", strerror(errno)), -1;
    if (pr == 0) continue;
    /* MSG_DONTWAIT: a peer that stops reading (frozen, partitioned) must not hold a send past the
     * deadline, which a blocking send of a whole bucket would */
    ssize_t k = out ? send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT) : recv(fd, p, len, MSG_DONTWAIT);
    if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (k < 0) return snprintf(why, whylen, "%s", errno == EPIPE || errno == ECONNRESET ? "closed" : strerror(errno)), -1;
    if (k == 0) return snprintf(why, whylen, "closed"), -1;
    p += k;
    len -= (size_t)k;
  }
  return 0;
}

/* The leader's part of a collective, over TCP. Fails the group on any error. */
static int tcp__exchange(tcp__group *g, uint32_t op, float *buf, int64_t n, int root, char *err, size_t errlen) {
  if (atomic_load(&g->failed)) return tcp__reason(g, err, errlen);
  tcp__hdr me = {TCP__MAGIC, op, n, root, g->seq++};
  long deadline = tcp__now_ms() + g->timeout_ms;
  char why[256] = "", msg[512];
  size_t bytes = (size_t)n * sizeof(float);
  int root_node = root / g->local;
  if (g->node != 0) {
    tcp__hdr back;
    int fd = g->fd[0];
    if (tcp__io(fd, &me, sizeof me, 1, deadline, why, sizeof why) ||
        ((op != TCP__BROADCAST || g->node == root_node) && tcp__io(fd, buf, bytes, 1, deadline, why, sizeof why)) ||
        tcp__io(fd, &back, sizeof back, 0, deadline, why, sizeof why) ||
        (back.magic == TCP__MAGIC && back.op == op && tcp__io(fd, buf, bytes, 0, deadline, why, sizeof why))) {
      snprintf(msg, sizeof msg, "node %d: %s with node 0 failed (%s%s)", g->node, tcp__op_name(op), why,
               !strcmp(why, "closed") ? ": node 0 failed or was stopped" : "");
      tcp__fail(g, msg);
      return tcp__reason(g, err, errlen);
    }
    if (back.magic != TCP__MAGIC || back.op != op) {
      snprintf(msg, sizeof msg, "node %d: node 0 answered %s with %s: a protocol error", g->node, tcp__op_name(op),
               tcp__op_name(back.op));
      tcp__fail(g, msg);
      return tcp__reason(g, err, errlen);
    }
    return 0;
  }
  /* node 0: every node's header, checked; then its data (allreduce: added in node order) */
  for (int k = 1; k < g->nodes; k++) {
    tcp__hdr h;
    if (tcp__io(g->fd[k], &h, sizeof h, 0, deadline, why, sizeof why)) goto io_failed_k;
    if (h.magic != TCP__MAGIC || h.op != op || h.n != n || h.root != root || h.seq != me.seq) {
      snprintf(msg, sizeof msg,
               "collective mismatch at step %u: node 0 called %s(n=%lld, root=%d), node %d called %s(n=%lld, root=%d) "
               "at step %u",
               me.seq, tcp__op_name(op), (long long)n, root, k, tcp__op_name(h.op), (long long)h.n, h.root, h.seq);
      tcp__fail(g, msg);
      return tcp__reason(g, err, errlen);
    }
    if (op == TCP__ALLREDUCE) {
      for (int64_t i0 = 0; i0 < n; i0 += TCP__CHUNK) {
        int64_t len = n - i0 < TCP__CHUNK ? n - i0 : TCP__CHUNK;
        if (tcp__io(g->fd[k], g->chunk, (size_t)len * sizeof(float), 0, deadline, why, sizeof why)) goto io_failed_k;
        float *dst = buf + i0;
        for (int64_t i = 0; i < len; i++) dst[i] += g->chunk[i];
      }
    } else if (op == TCP__BROADCAST && k == root_node) {
      if (tcp__io(g->fd[k], buf, bytes, 0, deadline, why, sizeof why)) goto io_failed_k;
    }
    continue;
  io_failed_k:
    snprintf(msg, sizeof msg, "node 0: %s with node %d failed (%s)", tcp__op_name(op), k, why);
    if (!strcmp(why, "closed"))
      snprintf(msg, sizeof msg, "node 0: node %d closed its connection during %s: it failed or was stopped", k,
               tcp__op_name(op));
    else if (!strcmp(why, "timeout"))
      snprintf(msg, sizeof msg, "node 0 waited %d ms in %s for node %d: timeout", g->timeout_ms, tcp__op_name(op), k);
    tcp__fail(g, msg);
    return tcp__reason(g, err, errlen);
  }
  for (int k = 1; k < g->nodes; k++) {
    if (tcp__io(g->fd[k], &me, sizeof me, 1, deadline, why, sizeof why) ||
        tcp__io(g->fd[k], buf, bytes, 1, deadline, why, sizeof why)) {
      snprintf(msg, sizeof msg, "node 0: sending the %s result to node %d failed (%s)", tcp__op_name(op), k, why);
      tcp__fail(g, msg);
      return tcp__reason(g, err, errlen);
    }
  }
  return 0;
}

static int tcp__allreduce_sum(dd_comm *c, float *buf, int64_t n, char *err, size_t errlen) {
  tcp__group *g = c->ctx;
  dd_comm *l = g->lc[c->rank % g->local];
  int r = l->ops->allreduce_sum(l, buf, n, err, errlen);
  if (r) return r;
  if (l->rank == 0 && (r = tcp__exchange(g, TCP__ALLREDUCE, buf, n, 0, err, errlen))) return r;
  return l->ops->broadcast(l, buf, n, 0, err, errlen);
}

static int tcp__broadcast(dd_comm *c, float *buf, int64_t n, int root, char *err, size_t errlen) {
  tcp__group *g = c->ctx;
  if (root < 0 || root >= c->size)
    return dd_errorf(DD_EINVAL, err, errlen, "broadcast: root %d out of range for %d ranks", root, c->size);
  dd_comm *l = g->lc[c->rank % g->local];
  int r = 0;
  if (root / g->local == g->node && (r = l->ops->broadcast(l, buf, n, root % g->local, err, errlen))) return r;
  if (l->rank == 0 && (r = tcp__exchange(g, TCP__BROADCAST, buf, n, root, err, errlen))) return r;
  return l->ops->broadcast(l, buf, n, 0, err, errlen);
}

static int tcp__barrier(dd_comm *c, char *err, size_t errlen) {
  tcp__group *g = c->ctx;
  dd_comm *l = g->lc[c->rank % g->local];
  int r = l->ops->barrier(l, err, errlen);
  if (r) return r;
  if (l->rank == 0 && (r = tcp__exchange(g, TCP__BARRIER, NULL, 0, 0, err, errlen))) return r;
  return l->ops->barrier(l, err, errlen);
}

static const dd_comm_ops tcp__ops = {
    .name = "cpu-tcp",
    .allreduce_sum = tcp__allreduce_sum,
    .broadcast = tcp__broadcast,
    .barrier = tcp__barrier,
    .abort = tcp__abort,
    .group_destroy = dd_tcp_comm_group_destroy,
};

/* ---- setting up ------------------------------------------------------------------------------------ */

static void tcp__hex(const uint8_t *b, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static int tcp__unhex(const char *s, uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
    b[i] = (uint8_t)v;
  }
  return s[2 * n] == '\0' || s[2 * n] == ' ' ? 0 : -1;
}

static int tcp__random(uint8_t *b, size_t n) {
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  int bad = fd < 0 || read(fd, b, n) != (ssize_t)n;
  if (fd >= 0) close(fd);
  return bad ? -1 : 0;
}

static void tcp__nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* node 0: listen, publish, take every node's hello, welcome them all. */
static int tcp__host(tcp__group *g, const dd_rendezvous *rv, int timeout_ms, char *err, size_t errlen) {
  char host[256];
  if (rv->host && rv->host[0]) {
    snprintf(host, sizeof host, "%s", rv->host);
  } else if (gethostname(host, sizeof host) != 0) {
    return dd_errorf(DD_EIO, err, errlen, "rendezvous: gethostname: %s", strerror(errno));
  }
  /* a host given: listen on its address (the operator chose the interface); the default host
   * name: on every interface, as the name may resolve to loopback here (Debian's 127.0.1.1) */
  int given = rv->host && rv->host[0];
  struct addrinfo hints = {.ai_family = given ? AF_UNSPEC : AF_INET, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE},
                  *ai = NULL;
  int gr = getaddrinfo(given ? host : NULL, "0", &hints, &ai);
  if (gr != 0) return dd_errorf(DD_EINVAL, err, errlen, "rendezvous: cannot resolve host \"%s\": %s", host, gai_strerror(gr));
  int lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int r = 0;
  if (lfd < 0 || bind(lfd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(lfd, 64) != 0) {
    r = dd_errorf(DD_EIO, err, errlen, "rendezvous: cannot listen on %s: %s", host, strerror(errno));
    freeaddrinfo(ai);
    if (lfd >= 0) close(lfd);
    return r;
  }
  freeaddrinfo(ai);
  struct sockaddr_storage sa;
  socklen_t sl = sizeof sa;
  getsockname(lfd, (struct sockaddr *)&sa, &sl);
  int port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port : ((struct sockaddr_in *)&sa)->sin_port);
  uint8_t nonce[16];
  if (tcp__random(nonce, sizeof nonce)) {
    close(lfd);
    return dd_errorf(DD_EIO, err, errlen, "rendezvous: cannot read /dev/urandom");
  }
  char hex[33], text[512];
  tcp__hex(nonce, sizeof nonce, hex);
  snprintf(text, sizeof text, "tcp %s %d %s %d %d", host, port, hex, g->nodes, g->local);
  if ((r = rv->publish(rv->ctx, text, err, errlen))) {
    close(lfd);
    return r;
  }
  long deadline = tcp__now_ms() + timeout_ms;
  int joined = 1;
  tcp__welcome w = {TCP__HELLO, 0, ""};
  while (joined < g->nodes && !r) {
    long left = deadline - tcp__now_ms();
    if (left <= 0) {
      char missing[256] = "";
      size_t len = 0;
      for (int k = 1, listed = 0; k < g->nodes && len < sizeof missing && listed < 16; k++)
        if (g->fd[k] < 0) len += (size_t)snprintf(missing + len, sizeof missing - len, "%s%d", listed++ ? ", " : "", k);
      r = dd_errorf(DD_EIO, err, errlen, "rendezvous: %d of %d nodes joined within %g s; missing node%s %s", joined,
                    g->nodes, timeout_ms / 1000.0, g->nodes - joined == 1 ? "" : "s", missing);
      break;
    }
    struct pollfd pf = {lfd, POLLIN, 0};
    int pr = poll(&pf, 1, left > 1000 ? 1000 : (int)left);
    if (pr <= 0) continue;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) continue;
    tcp__hello h;
    char why[128];
    if (tcp__io(fd, &h, sizeof h, 0, tcp__now_ms() + 5000, why, sizeof why) || h.magic != TCP__HELLO ||
        memcmp(h.nonce, nonce, sizeof nonce)) {
      close(fd); /* a stranger, or a joiner with a stale text: it asks again */
      continue;
    }
    int again = h.node >= 1 && h.node < g->nodes && g->fd[h.node] >= 0 && !memcmp(g->inst[h.node], h.instance, 8);
    if (h.nodes != g->nodes || h.local != g->local || h.node < 1 || h.node >= g->nodes ||
        (g->fd[h.node] >= 0 && !again)) {
      tcp__welcome no = {TCP__HELLO, 0, ""};
      if (h.nodes != g->nodes || h.local != g->local)
        snprintf(no.why, sizeof no.why, "node %d runs %d nodes x %d ranks, node 0 runs %d x %d: every node needs the "
                 "same job (nodes) and the same number of devices", h.node, h.nodes, h.local, g->nodes, g->local);
      else if (h.node < 1 || h.node >= g->nodes)
        snprintf(no.why, sizeof no.why, "node %d is out of range 1..%d", h.node, g->nodes - 1);
      else
        snprintf(no.why, sizeof no.why, "node %d has already joined", h.node);
      tcp__io(fd, &no, sizeof no, 1, tcp__now_ms() + 5000, why, sizeof why);
      close(fd);
      continue;
    }
    /* "taken, wait for the others": the joiner now knows this is the live node 0, not a stale text */
    tcp__welcome ack = {TCP__HELLO, 2, ""};
    if (tcp__io(fd, &ack, sizeof ack, 1, tcp__now_ms() + 5000, why, sizeof why)) {
      close(fd);
      continue;
    }
    tcp__nodelay(fd);
    if (again) {
      close(g->fd[h.node]); /* the same joiner gave up waiting for our answer and came again */
    } else {
      joined++;
    }
    g->fd[h.node] = fd;
    memcpy(g->inst[h.node], h.instance, 8);
  }
  close(lfd);
  if (rv->withdraw) rv->withdraw(rv->ctx);
  if (r) {
    snprintf(w.why, sizeof w.why, "%s", err);
  } else {
    w.ok = 1;
  }
  char why[128];
  for (int k = 1; k < g->nodes; k++)
    if (g->fd[k] >= 0 && tcp__io(g->fd[k], &w, sizeof w, 1, tcp__now_ms() + 5000, why, sizeof why) && !r)
      r = dd_errorf(DD_EIO, err, errlen, "rendezvous: welcoming node %d failed (%s)", k, why);
  return r;
}

/* Connects to host:port (each address it resolves to, in turn) within deadline; -1 when it cannot. */
static int tcp__connect(const char *host, const char *port, long deadline) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
  if (getaddrinfo(host, port, &hints, &ai) != 0) return -1;
  int fd = -1;
  for (struct addrinfo *p = ai; p && fd < 0; p = p->ai_next) {
    fd = socket(p->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    if (connect(fd, p->ai_addr, p->ai_addrlen) != 0 && errno != EINPROGRESS) {
      close(fd);
      fd = -1;
      continue;
    }
    long left = deadline - tcp__now_ms();
    struct pollfd pf = {fd, POLLOUT, 0};
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (left <= 0 || poll(&pf, 1, (int)(left > 10000 ? 10000 : left)) != 1 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(ai);
  return fd;
}

/* node k > 0: fetch node 0's text, connect, hello, wait for the welcome; again on a stale text. */
static int tcp__join(tcp__group *g, const dd_rendezvous *rv, int timeout_ms, char *err, size_t errlen) {
  long deadline = tcp__now_ms() + timeout_ms;
  uint8_t instance[8];
  if (tcp__random(instance, sizeof instance))
    return dd_errorf(DD_EIO, err, errlen, "rendezvous: cannot read /dev/urandom");
  char last[600] = "";
  for (;;) {
    long left = deadline - tcp__now_ms();
    if (left <= 0)
      return dd_errorf(DD_EIO, err, errlen, "rendezvous: node %d could not join node 0 within %g s%s%s", g->node,
                       timeout_ms / 1000.0, last[0] ? ": " : " (node 0 published nothing)", last);
    char text[512], host[256], port[16], hex[64];
    int nodes = 0, local = 0;
    int r = rv->fetch(rv->ctx, text, sizeof text, (int)left, err, errlen);
    if (r == DD_ENOTFOUND) continue;
    if (r) return r;
    if (sscanf(text, "tcp %255s %15s %63s %d %d", host, port, hex, &nodes, &local) != 5)
      return dd_errorf(DD_EINVAL, err, errlen, "rendezvous: node 0 published \"%.200s\", not a CPU transport address "
                       "(are node 0's devices GPUs?)", text);
    if (nodes != g->nodes || local != g->local)
      return dd_errorf(DD_EINVAL, err, errlen, "rendezvous: node 0 runs %d nodes x %d ranks, this node %d x %d: every "
                       "node needs the same job and the same number of devices", nodes, local, g->nodes, g->local);
    tcp__hello h = {TCP__HELLO, {0}, g->node, g->nodes, g->local, {0}};
    memcpy(h.instance, instance, sizeof h.instance);
    if (tcp__unhex(hex, h.nonce, sizeof h.nonce))
      return dd_errorf(DD_EINVAL, err, errlen, "rendezvous: node 0 published a bad nonce \"%.64s\"", hex);
    int fd = tcp__connect(host, port, deadline);
    if (fd < 0) {
      snprintf(last, sizeof last, "cannot connect to %s:%s", host, port);
      struct timespec ts = {0, 200 * 1000000L};
      nanosleep(&ts, NULL);
      continue;
    }
    char why[128];
    tcp__welcome w;
    /* node 0 answers a hello at once (ok 2: taken, wait) or refuses it; a listener that says
     * nothing within 2 s is not node 0 (a stale text): ask again. Then the welcome (ok 1). */
    long ack_by = tcp__now_ms() + 2000 < deadline ? tcp__now_ms() + 2000 : deadline;
    if (tcp__io(fd, &h, sizeof h, 1, deadline, why, sizeof why) ||
        tcp__io(fd, &w, sizeof w, 0, ack_by, why, sizeof why) || w.magic != TCP__HELLO ||
        (w.ok == 2 && (tcp__io(fd, &w, sizeof w, 0, deadline, why, sizeof why) || w.magic != TCP__HELLO))) {
      close(fd);
      snprintf(last, sizeof last, "node 0 at %s:%s did not welcome it (%s)", host, port, why);
      struct timespec ts = {0, 200 * 1000000L};
      nanosleep(&ts, NULL);
      continue;
    }
    if (w.ok != 1) {
      close(fd);
      w.why[sizeof w.why - 1] = '\0';
      return dd_errorf(DD_EINVAL, err, errlen, "rendezvous: node 0 refused node %d: %s", g->node, w.why);
    }
    tcp__nodelay(fd);
    g->fd[0] = fd;
    return 0;
  }
}

static void tcp__free(tcp__group *g) {
  int nfd = g->node == 0 ? g->nodes : 1;
  for (int k = 0; g->fd && k < nfd; k++)
    if (g->fd[k] >= 0) close(g->fd[k]);
  if (g->lc[0]) dd_cpu_comm_group_destroy(g->lc, g->local);
  pthread_mutex_destroy(&g->mu);
  free(g->fd);
  free(g->inst);
  free(g->chunk);
  free(g);
}

int dd_tcp_comm_group_create(dd_comm **comms, int local, const dd_rendezvous *rv, int timeout_ms, char *err,
                             size_t errlen) {
  if (!comms || !rv || local < 1 || local > 64 || rv->nodes < 1 || rv->nodes > TCP__MAX_NODES || rv->node < 0 ||
      rv->node >= rv->nodes || (rv->nodes > 1 && (rv->node == 0 ? !rv->publish : !rv->fetch)))
    return dd_errorf(DD_EINVAL, err, errlen, "rendezvous: node %d of %d nodes x %d ranks: invalid", rv ? rv->node : -1,
                     rv ? rv->nodes : 0, local);
  tcp__group *g = calloc(1, sizeof *g);
  if (!g) return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  g->nodes = rv->nodes;
  g->node = rv->node;
  g->local = local;
  g->timeout_ms = timeout_ms > 0 ? timeout_ms : 60000;
  pthread_mutex_init(&g->mu, NULL);
  int nfd = g->node == 0 ? g->nodes : 1;
  g->fd = malloc((size_t)nfd * sizeof *g->fd);
  for (int k = 0; g->fd && k < nfd; k++) g->fd[k] = -1;
  g->inst = calloc((size_t)nfd, sizeof *g->inst);
  g->chunk = g->node == 0 ? malloc(TCP__CHUNK * sizeof(float)) : NULL;
  if (!g->fd || !g->inst || (g->node == 0 && !g->chunk)) {
    tcp__free(g);
    return dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  }
  /* the local waits outlast the leader's exchange, so a slow node is reported by the leader's
   * TCP message (naming the node), not as a local rank's timeout */
  int r = dd_cpu_comm_group_create(g->lc, local, g->timeout_ms + 10000);
  if (r) {
    g->lc[0] = NULL;
    tcp__free(g);
    return dd_errorf(r, err, errlen, "cannot create the CPU collective (%s)", dd_strerror(r));
  }
  int rv_timeout = rv->timeout_ms > 0 ? rv->timeout_ms : 300000;
  if (g->nodes > 1) r = g->node == 0 ? tcp__host(g, rv, rv_timeout, err, errlen) : tcp__join(g, rv, rv_timeout, err, errlen);
  if (r) {
    tcp__free(g);
    return r;
  }
  for (int k = 0; k < local; k++) {
    g->comms[k] = (dd_comm){&tcp__ops, g->node * local + k, g->nodes * local, g};
    comms[k] = &g->comms[k];
  }
  return 0;
}

void dd_tcp_comm_group_destroy(dd_comm **comms, int local) {
  if (!comms || local < 1 || !comms[0]) return;
  tcp__free(comms[0]->ctx);
  for (int k = 0; k < local; k++) comms[k] = NULL;
}
