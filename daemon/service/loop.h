/* The daemon's loop (service/loop.c): Redis I/O, the ring's sending side, claims, timers and
 * signals, on the main thread. */
#ifndef DD_LOOP_H
#define DD_LOOP_H

#include "service/state.h"

/* Runs the loop for `d` until the daemon has drained after SIGTERM/SIGINT: initialises d's
 * handles and timers, connects to Redis, and joins the job threads at the end. `d` comes filled in
 * by dd_cmd_daemon (config, worker identity, keys, slots, threads, paths, the ring's items and
 * mutex). Returns the exit status: 0, or 1 when the drain timed out. */
int loop_run(daemon_t *d);

#endif
