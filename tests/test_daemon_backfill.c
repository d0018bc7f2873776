/* The daemon end to end (the harness: tests/test_daemon.h): no metrics gap after an outage longer
 * than the lease (issue 16, defect 5).
 *
 * Worker wa reaches Redis through a forwarding proxy (a forked child); stopping the proxy
 * (SIGSTOP) cuts wa off from Redis while it trains on, as a Redis outage or a partition does,
 * with nothing disconnected. wa snapshots past the last metrics entry Redis got; then wa itself is
 * frozen (so the snapshot a takeover resumes from is fixed) and wb, which reaches Redis directly,
 * takes the job over once the lease has passed. wb resumes from the newest snapshot S and, before
 * its first iteration, backfills the iterations between the stream's last entry L and S from the
 * output directory's metrics.jsonl. Woken, wa finds it lost the job and writes nothing for it.
 * Checked: every iteration 0..max_iter-1 has exactly one metrics entry, the stream is in iteration
 * order, the entries L+1..S-1 (and only they) are marked backfilled, with wa's worker and attempt. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#define TEST_PROC_NAME "test_daemon_backfill"
#include "test_daemon.h"

/* ---- a forwarding proxy: SIGSTOP it and its clients are cut off from Redis ----------------------- */

#define FWD_MAX 8

static void fwd_pump(int from, int to, int *drop) {
  char buf[65536];
  ssize_t k = read(from, buf, sizeof buf);
  if (k <= 0) {
    *drop = 1;
    return;
  }
  for (ssize_t off = 0; off < k;) {
    ssize_t w = write(to, buf + off, (size_t)(k - off));
    if (w <= 0) {
      *drop = 1;
      return;
    }
    off += w;
  }
}

static void fwd_main(int lfd, int redis_port) {
  int a[FWD_MAX], b[FWD_MAX], n = 0;
  for (;;) {
    struct pollfd pf[1 + 2 * FWD_MAX];
    pf[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
    for (int i = 0; i < n; i++) {
      pf[1 + 2 * i] = (struct pollfd){.fd = a[i], .events = POLLIN};
      pf[2 + 2 * i] = (struct pollfd){.fd = b[i], .events = POLLIN};
    }
    if (poll(pf, (nfds_t)(1 + 2 * n), 1000) < 0 && errno != EINTR) _exit(1);
    if (pf[0].revents & POLLIN) {
      int c = accept(lfd, NULL, NULL);
      int s = c >= 0 && n < FWD_MAX ? socket(AF_INET, SOCK_STREAM, 0) : -1;
      struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)redis_port)};
      sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof sa) == 0) {
        a[n] = c, b[n] = s;
        n++;
      } else {
        if (c >= 0) close(c);
        if (s >= 0) close(s);
      }
    }
    for (int i = 0; i < n; i++) {
      int drop = 0;
      if (pf[1 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR)) fwd_pump(a[i], b[i], &drop);
      if (!drop && (pf[2 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR))) fwd_pump(b[i], a[i], &drop);
      if (drop) {
        close(a[i]), close(b[i]);
        a[i] = a[n - 1], b[i] = b[n - 1];
        pf[1 + 2 * i] = pf[1 + 2 * (n - 1)], pf[2 + 2 * i] = pf[2 + 2 * (n - 1)];
        n--;
        i--;
      }
    }
  }
}

/* Starts the proxy in front of this test's redis-server (its pid in proxy_pid, killed by
 * finish()); returns its port (0: failed). */
static int fwd_start(void) {
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
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != test_pid) _exit(1);
    signal(SIGALRM, SIG_DFL);
    alarm(0);
    fwd_main(lfd, srv.port);
    _exit(0);
  }
  close(lfd);
  if (pid < 0) return 0;
  kid_add(pid);
  proxy_pid = pid;
  return ntohs(sa.sin_port);
}

/* The iter of the metrics stream's last entry (-1: none or no answer). */
static long long last_metrics_iter(const char *id) {
  redisReply *r = cmd("XREVRANGE %s + - COUNT 1", K("job:%s:metrics", id));
  long long it = -1;
  if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
    const char *v = ef(r->element[0], "iter");
    if (v) it = atoll(v);
  }
  if (r) freeReplyObject(r);
  return it;
}

/* ---- no metrics gap after an outage longer than the lease --------------------------------------------- */

#define BF_ITERS 3000
#define BF_SNAPSHOT 20

DTEST(test_outage_longer_than_lease_no_gap) {
  REQUIRE(begin("bf", 0));
  int pport = fwd_start();
  REQUIRE(pport > 0);
  int real = srv.port;
  srv.port = pport;
  dmn *a = daemon_start("wa", 1, 2, 1);
  srv.port = real;
  REQUIRE(a);
  REQUIRE(daemon_wait_up(a, 15));
  job_opts o = {.max_iter = BF_ITERS, .display = 1, .snapshot = BF_SNAPSHOT};
  REQUIRE(submit_job("b1", &o));
  REQUIRE(wait_field_at_least("b1", "iter", 30, 60));
  /* wa loses Redis (nothing disconnects: its commands wait) and trains on */
  kill(proxy_pid, SIGSTOP);
  sleep_ms(150); /* what was on its way has been applied */
  long long L = last_metrics_iter("b1");
  /* until it has snapshotted well past what Redis got; then it is frozen where it is */
  int snap = -1;
  const double end_snap = mono() + 60; /* bounded in count and time */
  for (int i = 0; i < 6000 && mono() < end_snap; i++) {
    snap = newest_snapshot("b1");
    if (snap >= L + 3 * BF_SNAPSHOT || snap >= BF_ITERS) break;
    sleep_ms(5);
  }
  kill(a->pid, SIGSTOP);
  snap = newest_snapshot("b1");
  printf("     b1: Redis has iterations up to %lld; wa cut off, snapshotted to %d, frozen\n", L, snap);
  if (L < 0 || snap < L + 2 || snap >= BF_ITERS) {
    kill(a->pid, SIGCONT);
    kill(proxy_pid, SIGCONT);
  }
  REQUIRE(L >= 0);
  REQUIRE(snap >= L + 2);
  REQUIRE(snap < BF_ITERS);
  /* wb takes the job over once the lease (2 s) has passed and runs it to the end */
  dmn *b = daemon_start("wb", 1, 2, 1);
  char *fin = b ? wait_final("b1", 120) : NULL;
  kill(a->pid, SIGCONT);
  kill(proxy_pid, SIGCONT);
  REQUIRE(b);
  CHECKF(fin && !strcmp(fin, "succeeded"), "b1: %s", test__str(fin));
  free(fin);
  CHECK(hget_ll(K("job:b1"), "attempt", -1) == 2);
  long long S = hget_ll(K("job:b1"), "resumed_from", -1);
  CHECKF(S == snap, "b1 resumed from %lld, want %d", S, snap);
  /* woken, wa finds it lost the job (its renewal, or its refused items) */
  int noticed = 0;
  const double end_noticed = mono() + 15; /* bounded in count and time */
  for (int i = 0; i < 1000 && !noticed && mono() < end_noticed; i++) {
    noticed = test_file_contains(a->log, "lost the job's lease") || test_file_contains(a->log, "no longer owns it");
    if (!noticed) sleep_ms(20);
  }
  CHECKF(noticed, "wa did not notice that it lost b1");
  sleep_ms(500); /* what wa still had buffered has been sent (and refused) */
  /* every iteration exactly once, in order; L+1..S-1 backfilled, from wa's attempt */
  redisReply *m = xrange(K("job:b1:metrics"));
  REQUIRE(m && m->type == REDIS_REPLY_ARRAY);
  static int seen[BF_ITERS];
  memset(seen, 0, sizeof seen);
  int bad_iter = 0, out_of_order = 0, bad_mark = 0, bad_owner = 0, n_backfilled = 0;
  long long prev = -1;
  for (size_t i = 0; i < m->elements; i++) {
    const redisReply *e = m->element[i];
    const char *v = ef(e, "iter");
    long long it = v ? atoll(v) : -1;
    if (it < 0 || it >= BF_ITERS) {
      bad_iter++;
      continue;
    }
    seen[it]++;
    if (it <= prev) out_of_order++;
    prev = it;
    int bf = ef_is(e, "backfilled", "1");
    n_backfilled += bf;
    if (bf != (it > L && it < S)) bad_mark++;
    int by_a = ef_is(e, "worker", "wa") && ef_is(e, "attempt", "1");
    int by_b = ef_is(e, "worker", "wb") && ef_is(e, "attempt", "2");
    if (it < S ? !by_a : !by_b) bad_owner++;
    if (bf && (!ef(e, "loss") || !ef(e, "lr") || !ef(e, "epoch") || !ef_is(e, "backfilled_by", "wb"))) bad_mark++;
  }
  int missing = 0, twice = 0, first_missing = -1, first_twice = -1;
  for (int it = 0; it < BF_ITERS; it++) {
    if (!seen[it] && missing++ == 0) first_missing = it;
    if (seen[it] > 1 && twice++ == 0) first_twice = it;
  }
  printf("     b1: %zu metrics entries, %d backfilled (iterations %lld-%lld)\n", m->elements, n_backfilled, L + 1, S - 1);
  freeReplyObject(m);
  CHECKF(missing == 0, "%d iterations have no metrics entry (the first: %d)", missing, first_missing);
  CHECKF(twice == 0, "%d iterations have more than one entry (the first: %d)", twice, first_twice);
  CHECKF(bad_iter == 0, "%d entries without a valid iter", bad_iter);
  CHECKF(out_of_order == 0, "%d entries out of iteration order", out_of_order);
  CHECKF(n_backfilled == S - L - 1, "%d backfilled entries, want %lld", n_backfilled, S - L - 1);
  CHECKF(bad_mark == 0, "%d entries marked wrongly (backfilled only L+1..S-1, with its fields)", bad_mark);
  CHECKF(bad_owner == 0, "%d entries name the wrong worker or attempt", bad_owner);
  CHECK(test_file_contains(b->log, "backfilled"));
  CHECK(count_events("b1", "log", NULL) >= 1);
}

int main(void) {
  if (daemon_main_begin()) return 1;
  RUN(test_setup);
  RUN(test_outage_longer_than_lease_no_gap);
  return daemon_main_end();
}
