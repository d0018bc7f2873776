/* `distilld --config FILE`: the service. One libuv loop on the main thread owns all Redis I/O and
 * every timer; each job trains on a thread of its own. The two sides meet in one bounded ring of
 * Redis commands:
 *
 *   job thread --(progress, tests, snapshots, logs, the final state: pre-formatted commands)-->
 *       ring (4096 items, fixed size, no allocation) --uv_async--> loop --> Redis
 *   loop --(cancel, hand-back, lost lease: one atomic per job)--> job thread (polled each iteration)
 *
 * The loop sends ring items in order and drops an item only when Redis has answered it, so a
 * Redis outage loses nothing (until the ring fills: then metrics items are dropped and counted,
 * never state changes). Training never waits on Redis, and Redis never waits on training.
 *
 * Job lifecycle (docs/redis.md): XAUTOCLAIM (stale entries first) or XREADGROUP claims an entry;
 * the CLAIM script makes this worker the owner; a thread validates, builds and trains; RENEW keeps
 * the entry's idle time under the lease while the owner is still this worker; FINISH (final
 * state + XACK) or HANDBACK (XACK + a fresh entry) ends it. Every script checks the owner first.
 *
 * The files of service/, each calling only those below it:
 *   daemon.c      this entry point: config, device probes, worker identity, keys
 *   loop.c        the loop: connection, sending the ring, claims, heartbeats, cancels, signals
 *   job_thread.c  one job: parse, check, run through core, hooks -> ring items, the final item
 *   events.c      ring items for progress, tests, snapshots, logs, start and end (fill_*)
 *   metrics_http.c the Prometheus endpoint (metrics_listen): libmicrohttpd on a thread of its own
 *   metrics.c     its snapshot table, kept by the loop from the ring's items and its own events
 *   ring.c        the ring's items and how job threads fill them
 *   scripts.c     the Lua scripts
 *   rio.c         hiredis on libuv
 *   log.c         the daemon's log lines
 *   paths.c       the path policy for queued jobs
 *   state.h       daemon_t and job_t */
#ifndef DD_DAEMON_H
#define DD_DAEMON_H

/* Runs the service with the config at `config_path` (NULL: the defaults). Returns the exit
 * status: 0 after SIGTERM/SIGINT and a clean drain, 1 when the drain timed out or start-up failed,
 * 2 for a config that does not read. */
int dd_cmd_daemon(const char *config_path);

#endif
