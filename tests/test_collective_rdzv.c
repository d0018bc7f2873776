/* The rendezvous of the TCP transport (core/comm/collective_tcp.c; the harness:
 * tests/test_collective_tcp.h): it names a node that never came, survives stale texts (a dead port,
 * another nonce, a listener that never answers), and refuses a node index claimed twice and a
 * joiner with other counts. Every wait here is bounded: a hang fails the test. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test_collective_tcp.h"

/* ---- the rendezvous: missing nodes, stale texts, a node index taken twice, other counts ---------- */

#define TCP_RV_MS 1500

/* Every rank that got a group: one allreduce of (global rank + 1), which must sum to size(size+1)/2. */
static void tcp_sum_rank(tcp_scenario *s, int t, int k, dd_comm *c) {
  float v = (float)(c->rank + 1);
  char err[512] = "";
  s->rc[t][k] = c->ops->allreduce_sum(c, &v, 1, err, sizeof err);
  if (v != (float)(c->size * (c->size + 1) / 2)) s->bad[t][k]++;
  snprintf(s->err[t][k], sizeof s->err[t][k], "%s", err);
}

static void check_group_worked(const char *what, int n_threads, int skip) {
  for (int t = 0; t < n_threads; t++) {
    if (t == skip) continue;
    CHECKF(T.create_rc[t] == 0, "%s: node thread %d: %s", what, t, T.create_err[t]);
    for (int k = 0; k < T.spec[t].local; k++)
      CHECKF(T.rc[t][k] == 0 && T.bad[t][k] == 0, "%s: node thread %d rank %d: %d wrong, %s", what, t, k,
             T.bad[t][k], T.err[t][k]);
  }
}

static void test_tcp_rendezvous_missing_node(void) {
  /* 3 nodes, node 2 never comes: node 0 gives up after the rendezvous timeout naming it, and tells
   * node 1, which was waiting for its welcome */
  tcp_scenario_init(&T, 3, 1);
  T.n_threads = 2;
  T.rv_timeout_ms = TCP_RV_MS;
  run_nodes(&T, 0, tcp_sum_rank, NULL);
  CHECKF(T.create_rc[0] == DD_EIO, "node 0: got %d", T.create_rc[0]);
  CHECK_CONTAINS(T.create_err[0], "rendezvous: 2 of 3 nodes joined within 1.5 s; missing node 2");
  CHECKF(T.create_ms[0] >= TCP_RV_MS - 50 && T.create_ms[0] < TCP_RV_MS + 1500, "node 0 gave up after %.0f ms",
         T.create_ms[0]);
  /* node 1 started with node 0, so its own deadline comes as node 0's: it gives up on its own */
  CHECKF(T.create_rc[1] != 0, "node 1 got a group");
  CHECKF(T.create_ms[1] < TCP_RV_MS + 1500, "node 1 gave up after %.0f ms", T.create_ms[1]);
  printf("     node 2 never came: node 0 after %.0f ms: \"%s\"; node 1 after %.0f ms: \"%s\"\n", T.create_ms[0],
         T.create_err[0], T.create_ms[1], T.create_err[1]);
  /* node 1 started 500 ms after node 0: node 0's refusal reaches it before its own deadline */
  tcp_scenario_init(&T, 3, 1);
  T.n_threads = 2;
  T.rv_timeout_ms = TCP_RV_MS;
  T.spec[1].delay_ms = 500;
  run_nodes(&T, 0, tcp_sum_rank, NULL);
  CHECKF(T.create_rc[0] == DD_EIO, "node 0: got %d", T.create_rc[0]);
  CHECK_CONTAINS(T.create_err[0], "missing node 2");
  CHECKF(T.create_rc[1] == DD_EINVAL, "node 1: got %d", T.create_rc[1]);
  CHECK_CONTAINS(T.create_err[1],
                 "rendezvous: node 0 refused node 1: rendezvous: 2 of 3 nodes joined within 1.5 s; missing node 2");
  CHECKF(T.create_ms[1] < TCP_RV_MS, "node 1 gave up after %.0f ms", T.create_ms[1]);
  printf("     node 2 never came, node 1 500 ms late: node 1 after %.0f ms: \"%s\"\n", T.create_ms[1], T.create_err[1]);
  /* 2 nodes, node 0 never comes */
  tcp_scenario_init(&T, 2, 2);
  T.spec[0] = T.spec[1]; /* the only node thread claims node 1 */
  T.n_threads = 1;
  T.rv_timeout_ms = TCP_RV_MS;
  run_nodes(&T, 0, tcp_sum_rank, NULL);
  CHECKF(T.create_rc[0] == DD_EIO, "node 1 alone: got %d", T.create_rc[0]);
  CHECK_CONTAINS(T.create_err[0], "rendezvous: node 1 could not join node 0 within 1.5 s (node 0 published nothing)");
  CHECKF(T.create_ms[0] >= TCP_RV_MS - 50 && T.create_ms[0] < TCP_RV_MS + 1500, "node 1 gave up after %.0f ms",
         T.create_ms[0]);
  printf("     node 0 never came: node 1 after %.0f ms: \"%s\"\n", T.create_ms[0], T.create_err[0]);
}

static void test_tcp_rendezvous_stale_text(void) {
  /* a text from an earlier attempt at a port nobody listens on: node 1 fetches it first and keeps
   * asking until node 0 (300 ms late) publishes its own */
  tcp_scenario_init(&T, 2, 2);
  int port = closed_port();
  REQUIRE(port > 0);
  snprintf(T.rz.text, sizeof T.rz.text, "tcp 127.0.0.1 %d 00112233445566778899aabbccddeeff 2 2", port);
  T.rz.have = 1;
  T.spec[0].delay_ms = 300;
  run_nodes(&T, 0, tcp_sum_rank, NULL);
  check_group_worked("stale text, closed port", 2, -1);
  CHECKF(T.rz.fetched >= 2, "node 1 fetched %d texts", T.rz.fetched);
  printf("     stale text (closed port %d): joined after %.0f ms, %d fetches\n", port, T.create_ms[1], T.rz.fetched);
  /* a text with another nonce at node 0's very address (the second fetch too): node 0 drops the
   * hello, node 1 asks again */
  tcp_scenario_init(&T, 2, 2);
  T.rz.bad_nonce = 2;
  run_nodes(&T, 0, tcp_sum_rank, NULL);
  check_group_worked("stale nonce", 2, -1);
  CHECKF(T.rz.fetched >= 3, "node 1 fetched %d texts", T.rz.fetched);
  printf("     stale nonce (twice): joined after %.0f ms, %d fetches\n", T.create_ms[1], T.rz.fetched);
  /* a stale text at a listener that never answers (an earlier node 0, frozen, its text still
   * there): node 0 answers every hello at once, so after 2 s of silence node 1 asks again */
  tcp_scenario_init(&T, 2, 2);
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  REQUIRE(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 4) == 0 &&
          getsockname(lfd, (struct sockaddr *)&a, &alen) == 0);
  snprintf(T.rz.text, sizeof T.rz.text, "tcp 127.0.0.1 %d 00112233445566778899aabbccddeeff 2 2", ntohs(a.sin_port));
  T.rz.have = 1;
  T.spec[0].delay_ms = 300;
  T.rv_timeout_ms = 8000;
  run_nodes(&T, 0, tcp_sum_rank, NULL);
  close(lfd);
  check_group_worked("stale text, silent listener", 2, -1);
  CHECKF(T.create_ms[1] >= 1900 && T.create_ms[1] < 6000, "node 1 joined after %.0f ms", T.create_ms[1]);
  printf("     stale text (a listener that never answers): joined after %.0f ms, %d fetches\n", T.create_ms[1],
         T.rz.fetched);
}

static void test_tcp_rendezvous_refusals(void) {
  /* two node threads claim node 1 of 3: the second (started once the first has fetched the text,
   * and 300 ms later) is refused; node 2 comes after that and the group of three works */
  tcp_scenario_init(&T, 3, 1);
  T.n_threads = 4;
  T.spec[2] = (tcp_node_spec){1, 3, 1, 300, 1, -1, 0};
  T.spec[3] = (tcp_node_spec){2, 3, 1, 0, 0, 2, 0};
  run_nodes(&T, 0, tcp_sum_rank, NULL);
  CHECKF(T.create_rc[2] == DD_EINVAL, "the second node 1: got %d: %s", T.create_rc[2], T.create_err[2]);
  CHECK_CONTAINS(T.create_err[2], "rendezvous: node 0 refused node 1: node 1 has already joined");
  CHECKF(T.create_ms[2] < 2000, "the second node 1 was refused after %.0f ms", T.create_ms[2]);
  check_group_worked("node 1 twice", 4, 2);
  printf("     node 1 claimed twice: the second after %.0f ms: \"%s\"\n", T.create_ms[2], T.create_err[2]);
  /* a joiner with another number of local ranks, or of nodes: refused, naming both counts; node 0
   * waits for the rendezvous timeout and names the node that never joined */
  static const struct {
    int nodes, local;
    const char *want;
  } other[] = {
      {2, 1, "rendezvous: node 0 runs 2 nodes x 2 ranks, this node 2 x 1"},
      {3, 2, "rendezvous: node 0 runs 2 nodes x 2 ranks, this node 3 x 2"},
  };
  for (int i = 0; i < 2; i++) {
    tcp_scenario_init(&T, 2, 2);
    T.spec[1].nodes = other[i].nodes;
    T.spec[1].local = other[i].local;
    T.rv_timeout_ms = TCP_RV_MS;
    run_nodes(&T, 0, tcp_sum_rank, NULL);
    CHECKF(T.create_rc[1] == DD_EINVAL, "node 1 (%d x %d): got %d", other[i].nodes, other[i].local, T.create_rc[1]);
    CHECK_CONTAINS(T.create_err[1], other[i].want);
    CHECKF(T.create_ms[1] < 1000, "node 1 was refused after %.0f ms", T.create_ms[1]);
    CHECKF(T.create_rc[0] == DD_EIO, "node 0: got %d", T.create_rc[0]);
    CHECK_CONTAINS(T.create_err[0], "missing node 1");
    printf("     node 1 claims %d x %d: \"%s\" after %.0f ms; node 0: \"%s\"\n", other[i].nodes, other[i].local,
           T.create_err[1], T.create_ms[1], T.create_err[0]);
  }
}

int main(void) {
  RUN(test_tcp_rendezvous_missing_node);
  RUN(test_tcp_rendezvous_stale_text);
  RUN(test_tcp_rendezvous_refusals);
  return test_summary();
}
