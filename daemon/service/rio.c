/* hiredis on libuv (service/rio.h). */
#define _GNU_SOURCE
#include "service/rio.h"

#include <stdlib.h>

typedef struct {
  redisAsyncContext *ctx;
  uv_poll_t poll;
  int events;
} rio_t;

static void rio_on_poll(uv_poll_t *h, int status, int events) {
  rio_t *p = h->data;
  if (!p->ctx) return;
  if (status < 0) {
    if (!(p->ctx->c.flags & REDIS_CONNECTED))
      redisAsyncHandleWrite(p->ctx);
    else
      redisAsyncHandleRead(p->ctx);
    return;
  }
  if (events & UV_READABLE) redisAsyncHandleRead(p->ctx);
  if (p->ctx && (events & UV_WRITABLE)) redisAsyncHandleWrite(p->ctx);
}

static void rio_update(rio_t *p, int add, int del) {
  p->events = (p->events | add) & ~del;
  if (p->events)
    uv_poll_start(&p->poll, p->events, rio_on_poll);
  else
    uv_poll_stop(&p->poll);
}
static void rio_add_read(void *pd) { rio_update(pd, UV_READABLE, 0); }
static void rio_del_read(void *pd) { rio_update(pd, 0, UV_READABLE); }
static void rio_add_write(void *pd) { rio_update(pd, UV_WRITABLE, 0); }
static void rio_del_write(void *pd) { rio_update(pd, 0, UV_WRITABLE); }
static void rio_closed(uv_handle_t *h) { free(h->data); }
static void rio_cleanup(void *pd) {
  rio_t *p = pd;
  p->ctx = NULL;
  uv_close((uv_handle_t *)&p->poll, rio_closed);
}

int rio_attach(redisAsyncContext *ac, uv_loop_t *loop) {
  if (ac->ev.data) return REDIS_ERR;
  rio_t *p = calloc(1, sizeof *p);
  if (!p) return REDIS_ERR;
  if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
    free(p);
    return REDIS_ERR;
  }
  p->poll.data = p;
  p->ctx = ac;
  ac->ev.data = p;
  ac->ev.addRead = rio_add_read;
  ac->ev.delRead = rio_del_read;
  ac->ev.addWrite = rio_add_write;
  ac->ev.delWrite = rio_del_write;
  ac->ev.cleanup = rio_cleanup;
  return REDIS_OK;
}
