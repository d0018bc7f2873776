/* libmicrohttpd started as distilld's servers run it (common/http_server.h). */
#define _GNU_SOURCE
#include "common/http_server.h"

#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void on_log(void *cls, const char *fmt, va_list ap) {
  dd_http_log *l = cls;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
  if (atomic_load(&l->starting)) {
    snprintf(l->start_error, sizeof l->start_error, "%s", msg);
    return;
  }
  time_t now = time(NULL);
  if (now - l->window >= 60) {
    if (l->dropped) {
      char more[96];
      snprintf(more, sizeof more, "%lld more messages not logged", l->dropped);
      l->emit(more);
    }
    l->window = now;
    l->lines = 0;
    l->dropped = 0;
  }
  if (l->lines++ < DD_HTTP_LOG_PER_MINUTE)
    l->emit(msg);
  else
    l->dropped++;
}

struct MHD_Daemon *dd_http_start(const struct sockaddr *sa, const dd_http_limits *lim, MHD_AccessHandlerCallback handler,
                                 void *cls, void *(*uri_log)(void *, const char *, struct MHD_Connection *),
                                 void *uri_cls, dd_http_log *log) {
  log->start_error[0] = '\0';
  atomic_store(&log->starting, 1);
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
  if (sa->sa_family == AF_INET6) flags |= MHD_USE_IPv6;
  uint16_t port = sa->sa_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)sa)->sin6_port)
                                            : ntohs(((const struct sockaddr_in *)sa)->sin_port);
  /* the server's thread inherits this mask: every signal stays with the caller's threads */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  struct MHD_Daemon *d = MHD_start_daemon(
      flags, port, NULL, NULL, handler, cls, MHD_OPTION_SOCK_ADDR, sa, MHD_OPTION_CONNECTION_LIMIT,
      lim->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, lim->timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      lim->connection_memory, MHD_OPTION_URI_LOG_CALLBACK, uri_log, uri_cls, MHD_OPTION_EXTERNAL_LOGGER, on_log, log,
      MHD_OPTION_END);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  atomic_store(&log->starting, 0);
  return d;
}
