/* libmicrohttpd started the way both of distilld's HTTP servers run it (the daemon's Prometheus
 * endpoint, service/metrics_http.c; `distilld web`, web/web_http.c): one internal polling thread
 * that never gets a signal (every signal is blocked around its start, so they stay the caller's),
 * bounded connections, idle timeout and request memory, and its own messages rate-limited. */
#ifndef DD_HTTP_SERVER_H
#define DD_HTTP_SERVER_H

#include <microhttpd.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/socket.h>
#include <time.h>

/* libmicrohttpd's messages: at most DD_HTTP_LOG_PER_MINUTE lines a minute go to emit (a burst of
 * refused connections would write one each; the rest are counted, and said once the minute is
 * over); while starting, the last one is kept in start_error, for the caller's error. */
#define DD_HTTP_LOG_PER_MINUTE 10
typedef struct {
  void (*emit)(const char *msg); /* where a line goes (the daemon's log, stderr) */
  atomic_int starting;           /* dd_http_start has not returned yet */
  char start_error[256];
  time_t window;
  int lines;
  long long dropped;
} dd_http_log;

typedef struct {
  unsigned max_connections, timeout_s; /* more connections wait in the listen queue */
  size_t connection_memory;            /* per connection, for its request (a longer header: 431) */
} dd_http_limits;

/* Serves at sa (IPv4 or IPv6) with handler(cls, ...) and, where uri_log is not NULL, libmicrohttpd's
 * URI callback; messages through log (its emit set). Returns the server, or NULL (the reason in
 * log->start_error, or empty). The bound port: MHD_get_daemon_info(..., MHD_DAEMON_INFO_BIND_PORT). */
struct MHD_Daemon *dd_http_start(const struct sockaddr *sa, const dd_http_limits *lim, MHD_AccessHandlerCallback handler,
                                 void *cls, void *(*uri_log)(void *, const char *, struct MHD_Connection *),
                                 void *uri_cls, dd_http_log *log);

#endif
