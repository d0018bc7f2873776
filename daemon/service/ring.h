/* The ring: the one bounded buffer between the job threads and the loop. Job threads write
 * complete Redis commands (argv strings) into fixed items of ITEM_BYTES, without allocating; the
 * loop (service/loop.c) sends the items in order and retires an item only when Redis has answered
 * it, so an outage loses nothing until the ring fills. Past RING_METRICS_LIMIT items metrics are
 * dropped (and counted), past RING_EVENTS_LIMIT events too; a job's final item (ITEM_DONE) always
 * gets in, its thread waits for room.
 *
 * Job threads: ring_reserve (locks), ib_begin / ib_cmd / ib_arg... (fill the item), ring_commit
 * (publishes, unlocks and wakes the loop). The loop reads head/sent/tail under `mu`. */
#ifndef DD_RING_H
#define DD_RING_H

#include <pthread.h>
#include <stdint.h>

#define RING_CAP 4096
#define ITEM_BYTES 2048
#define ITEM_MAX_CMDS 16 /* an ITEM_BACKFILL item's records; other items have at most 3 commands */
#define CMD_MAX_ARGS 96
/* metrics may fill the ring to here; tests, snapshots and logs to RING_CAP - 16; final states to the end */
#define RING_METRICS_LIMIT (RING_CAP - 256)
#define RING_EVENTS_LIMIT (RING_CAP - 16)

/* ITEM_BACKFILL: metrics records of a resumed attempt's backfill (service/backfill.c), one per
 * "command", sent through LUA_BACKFILL instead of LUA_APPLY (same owner and sequence checks) */
enum { ITEM_CMDS, ITEM_DONE, ITEM_BACKFILL };
enum { PRIO_METRICS, PRIO_EVENT, PRIO_STATE };

typedef struct {
  int kind; /* ITEM_CMDS, or ITEM_DONE (the job's last item: its slot is freed once answered) */
  int slot;
  int n_cmds;
  uint64_t seq; /* the job's item number (ITEM_CMDS, ITEM_BACKFILL), for LUA_APPLY / LUA_BACKFILL */
  uint16_t n_args[ITEM_MAX_CMDS];
  uint32_t used;
  char buf[ITEM_BYTES]; /* the arguments, NUL-terminated, one after another */
} ring_item;

typedef struct {
  ring_item *items; /* RING_CAP */
  uint64_t head, sent, tail; /* answered < head <= sent <= tail */
  pthread_mutex_t mu;
} ring_t;

struct daemon;

/* ---- building ring items (job threads) ------------------------------------------------------- */

typedef struct {
  ring_item *it;
  int ok;
} item_b;

/* Starts item `it` (reserved) of `kind` for job slot `slot`. */
void ib_begin(item_b *b, ring_item *it, int kind, int slot);
/* Starts the item's next command (at most ITEM_MAX_CMDS; past that b->ok becomes 0). */
void ib_cmd(item_b *b);
/* One argument of the current command, truncated to what fits (long error texts are cut, never
 * the structure; past CMD_MAX_ARGS or a full buffer b->ok becomes 0). */
void ib_arg(item_b *b, const char *s);
void ib_argf(item_b *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A number as "%.9g". */
void ib_num(item_b *b, double v);

/* Reserves the next ring slot for a job thread, holding r->mu. Returns NULL (unlocked) when the
 * ring is past the limit for `prio` (the caller counts a dropped item). */
ring_item *ring_reserve(ring_t *r, int prio);
/* Ends a ring_reserve: with `publish` the item joins the ring and d's loop is woken (its `wake`
 * handle); without, the slot is given up. Unlocks r->mu. */
void ring_commit(struct daemon *d, ring_t *r, int publish);

#endif
