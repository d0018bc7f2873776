/* Filling ring items (service/ring.h): what job threads call, under the ring's mutex. */
#define _GNU_SOURCE
#include "service/ring.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "service/state.h"

void ib_begin(item_b *b, ring_item *it, int kind, int slot) {
  memset(it->n_args, 0, sizeof it->n_args);
  it->kind = kind;
  it->slot = slot;
  it->n_cmds = 0;
  it->used = 0;
  b->it = it;
  b->ok = 1;
}

void ib_cmd(item_b *b) {
  if (b->it->n_cmds < ITEM_MAX_CMDS)
    b->it->n_cmds++;
  else
    b->ok = 0;
}

/* One argument, truncated to what fits (long error texts are cut, never the structure). */
void ib_arg(item_b *b, const char *s) {
  ring_item *it = b->it;
  int c = it->n_cmds - 1;
  if (c < 0 || it->n_args[c] >= CMD_MAX_ARGS) {
    b->ok = 0;
    return;
  }
  size_t room = ITEM_BYTES - it->used;
  if (room < 2) {
    b->ok = 0;
    return;
  }
  size_t n = strlen(s);
  if (n > room - 1) n = room - 1;
  memcpy(it->buf + it->used, s, n);
  it->buf[it->used + n] = '\0';
  it->used += (uint32_t)n + 1;
  it->n_args[c]++;
}

void ib_argf(item_b *b, const char *fmt, ...) {
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  ib_arg(b, tmp);
}

void ib_num(item_b *b, double v) { ib_argf(b, "%.9g", v); }

/* Reserves the next ring slot for a job thread. Returns NULL when the ring is past the limit for
 * this priority (the caller counts a dropped item). The item is published by ring_commit. */
ring_item *ring_reserve(ring_t *r, int prio) {
  pthread_mutex_lock(&r->mu);
  uint64_t n = r->tail - r->head;
  uint64_t limit = prio == PRIO_METRICS ? RING_METRICS_LIMIT : prio == PRIO_EVENT ? RING_EVENTS_LIMIT : RING_CAP;
  if (n >= limit) {
    pthread_mutex_unlock(&r->mu);
    return NULL;
  }
  return &r->items[r->tail % RING_CAP]; /* still locked: one writer at a time */
}

void ring_commit(daemon_t *d, ring_t *r, int publish) {
  if (publish) r->tail++;
  pthread_mutex_unlock(&r->mu);
  if (publish) uv_async_send(&d->wake);
}
