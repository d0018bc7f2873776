/* hiredis on libuv: our own attachment rather than hiredis 0.14's adapters/libuv.h. That one
 * ignores a poll error, and libuv reports a refused connection (or a reset) as exactly that, so
 * hiredis never learned that a connect failed and the daemon waited forever. Here an error is
 * handed to hiredis as an event, hiredis tries the socket, finds the error and runs its disconnect
 * path. */
#ifndef DD_RIO_H
#define DD_RIO_H

#include <hiredis/async.h>
#include <uv.h>

/* Attaches `ac` (just created by redisAsyncConnect) to `loop`. Returns REDIS_OK, or REDIS_ERR
 * when `ac` has an attachment already or memory or the poll handle failed. The attachment is
 * freed through hiredis's cleanup hook, once libuv has closed its poll handle. */
int rio_attach(redisAsyncContext *ac, uv_loop_t *loop);

#endif
