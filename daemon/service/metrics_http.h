/* The Prometheus endpoint (docs/monitoring.md): GET /metrics in the text exposition format 0.0.4,
 * served by libmicrohttpd on a thread of its own (MHD_USE_INTERNAL_POLLING_THREAD: one thread
 * polls every connection, so a slow client holds a connection slot, never the server).
 *
 * Each scrape copies the snapshot table (service/metrics.h) under its lock into a buffer of the
 * server's and formats the copy outside the lock; the loop and the job threads never wait on a
 * client. Bounded: METRICS_HTTP_MAX_CONNECTIONS connections at once (more are closed at accept),
 * each closed after METRICS_HTTP_TIMEOUT_S seconds without traffic, each with at most
 * METRICS_HTTP_CONNECTION_MEMORY bytes for its request (a longer request header gets 431).
 * /metrics answers GET and HEAD; other methods get 405, other paths 404. */
#ifndef DD_METRICS_HTTP_H
#define DD_METRICS_HTTP_H

#include <stddef.h>

#define METRICS_HTTP_MAX_CONNECTIONS 32
#define METRICS_HTTP_TIMEOUT_S 10
#define METRICS_HTTP_CONNECTION_MEMORY (32 * 1024)

struct daemon;
typedef struct metrics_http metrics_http;

/* Starts serving d's snapshot (d->mx, set up by metrics_init) at the config's metrics_listen.
 * Returns 0 with *out set, or DD_EINVAL / DD_EIO / DD_ENOMEM with err saying why (the address is
 * taken, ...). The server's thread starts with every signal blocked: signals stay the loop's. */
int metrics_http_start(metrics_http **out, struct daemon *d, char *err, size_t errlen);

/* Stops the server (its thread joined, open connections closed) and frees it; NULL is a no-op. */
void metrics_http_stop(metrics_http *h);

#endif
