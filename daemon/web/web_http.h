/* The dashboard's HTTP server (web/web_http.c): libmicrohttpd on one thread of its own, serving
 * the embedded page (web/web_assets.h) and the JSON endpoints (web/web_api.h). Bounded as the
 * daemon's Prometheus endpoint is (service/metrics_http.h): WEB_HTTP_MAX_CONNECTIONS at once (more
 * are closed at accept), each closed after WEB_HTTP_TIMEOUT_S seconds without traffic, each with
 * at most WEB_HTTP_CONNECTION_MEMORY bytes for its request (a longer header gets 431); a POST body
 * over WEB_HTTP_MAX_BODY bytes closes the connection.
 *
 * Routes: GET / (the page), GET /app.js, /app.css, /uplot/uPlot.iife.min.js, /uplot/uPlot.min.css,
 * GET /api/overview, GET /api/job/ID[?metrics_since=ID&events_since=ID], POST /api/job/ID/cancel
 * (only with the header X-Distilld: cancel, which a cross-site form cannot send). A job id in a path
 * must be a job id ([A-Za-z0-9_.-]{1,64}, not "." or ".."): else 400. Anything else: 404; another
 * method: 405. While the address is loopback, a Host header naming another host is refused (403:
 * a DNS-rebinding page cannot read the dashboard). */
#ifndef DD_WEB_HTTP_H
#define DD_WEB_HTTP_H

#include <stddef.h>
#include <sys/socket.h>

#include "web/web_api.h"

#define WEB_HTTP_MAX_CONNECTIONS 32
#define WEB_HTTP_TIMEOUT_S 10
#define WEB_HTTP_CONNECTION_MEMORY (32 * 1024)
#define WEB_HTTP_MAX_BODY 4096

typedef struct web_http web_http;

/* Starts serving on `sa` (port 0: a free one, see *port_out) for `w`, which must outlive the
 * server. Returns 0 with *out, or -1 with `err`. Blocks every signal in the server's thread. */
int web_http_start(web_http **out, web_ctx *w, const struct sockaddr *sa, int loopback, unsigned *port_out, char *err,
                   size_t errlen);

/* Stops the server (waits for its thread) and frees it; NULL is a no-op. */
void web_http_stop(web_http *h);

#endif
