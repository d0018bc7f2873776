/* `distilld web` (web/web.h): the options, the listen address, the Redis connection's setup (the
 * client verbs' own, cli/client.h), the server's start, and the wait for SIGINT or SIGTERM. */
#define _POSIX_C_SOURCE 200809L
#include "web/web.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "common/cli_util.h"
#include "web/web_http.h"

/* "PORT", "HOST:PORT" (HOST an IPv4 address or localhost) or "[IPV6]:PORT" into `sa`; PORT 0 takes
 * a free port. *loopback: the address is 127.0.0.0/8 or ::1. 0, or -1 with the reason printed. */
static int parse_listen(const char *v, struct sockaddr_storage *sa, int *loopback) {
  char host[64] = "127.0.0.1";
  const char *port_s = v;
  memset(sa, 0, sizeof *sa);
  if (v[0] == '[') {
    const char *close = strchr(v, ']');
    if (!close || close[1] != ':' || (size_t)(close - v - 1) >= sizeof host) goto bad;
    memcpy(host, v + 1, (size_t)(close - v - 1));
    host[close - v - 1] = '\0';
    port_s = close + 2;
  } else if (strchr(v, ':')) {
    const char *colon = strrchr(v, ':');
    if (colon == v || (size_t)(colon - v) >= sizeof host) goto bad;
    memcpy(host, v, (size_t)(colon - v));
    host[colon - v] = '\0';
    if (!strcmp(host, "localhost")) snprintf(host, sizeof host, "127.0.0.1");
    port_s = colon + 1;
  }
  int port;
  if (dd_cli_parse_int(port_s, 0, 65535, &port) != 0) goto bad;
  if (v[0] == '[') {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)sa;
    if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) goto bad;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    *loopback = !memcmp(&a->sin6_addr, &in6addr_loopback, sizeof in6addr_loopback);
    return 0;
  }
  struct sockaddr_in *a = (struct sockaddr_in *)sa;
  if (inet_pton(AF_INET, host, &a->sin_addr) != 1) goto bad;
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)port);
  *loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
  return 0;
bad:
  dd_cli_error("--listen \"%s\": write ADDRESS:PORT with an IP address (127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080) or "
               "localhost:PORT, PORT 0 to 65535 (0: any free port)", v);
  return -1;
}

/* The options into `w` and `listen`; 0, or an exit status (a usage error printed; -1: --help done). */
static int parse_args(int argc, char **argv, web_ctx *w, const char **listen) {
  for (int i = 0; i < argc; i++) {
    if (dd_cli_is_help(argv[i])) {
      dd_cli_help("web");
      return -1;
    }
    int r = client_opt(&w->co, argc, argv, &i);
    if (r < 0) return dd_cli_usage("web");
    if (r > 0) continue;
    if (!strcmp(argv[i], "--allow-cancel")) {
      w->allow_cancel = 1;
    } else if (!strcmp(argv[i], "--listen")) {
      if (i + 1 >= argc) {
        dd_cli_error("web: --listen needs a value");
        return dd_cli_usage("web");
      }
      *listen = argv[++i];
    } else {
      return dd_cli_bad_arg("web", argv[i]);
    }
  }
  return 0;
}

int dd_cmd_web(int argc, char **argv) {
  static web_ctx w; /* the server's thread uses it until web_http_stop has returned */
  memset(&w, 0, sizeof w);
  const char *listen = "127.0.0.1:8080";
  int rc = parse_args(argc, argv, &w, &listen);
  if (rc) return rc < 0 ? 0 : rc;
  struct sockaddr_storage sa;
  int loopback = 0;
  if (parse_listen(listen, &sa, &loopback) != 0) return 2;
  if ((rc = client_setup(&w.c, &w.co)) != 0) {
    client_close(&w.c);
    return rc;
  }
  /* a first connection, so that a wrong address shows at once; the server starts either way and
   * answers 503 until Redis can be reached (each request tries again) */
  if (client_connect(&w.c) != 0) fprintf(stderr, "distilld web: warning: %s (trying again at each request)\n", w.c.err);
  /* SIGINT and SIGTERM wait for sigwait below, in this thread only (the server's thread blocks all) */
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);
  web_http *h = NULL;
  unsigned port = 0;
  char err[300];
  if (web_http_start(&h, &w, (struct sockaddr *)&sa, loopback, &port, err, sizeof err) != 0) {
    dd_cli_error("web: cannot serve at %s: %s", listen, err);
    client_close(&w.c);
    return 1;
  }
  char host[INET6_ADDRSTRLEN] = "?";
  int v6 = sa.ss_family == AF_INET6;
  inet_ntop(sa.ss_family, v6 ? (const void *)&((struct sockaddr_in6 *)&sa)->sin6_addr : (const void *)&((struct sockaddr_in *)&sa)->sin_addr,
            host, sizeof host);
  printf("distilld web: the dashboard at http://%s%s%s:%u/ (Redis %s, prefix %s, %s)\n", v6 ? "[" : "", host, v6 ? "]" : "",
         port, w.c.addr, w.c.prefix, w.allow_cancel ? "cancel allowed" : "read-only");
  if (!loopback)
    printf("distilld web: warning: %s is not a loopback address: whoever reaches it reads every job%s\n", host,
           w.allow_cancel ? " and can cancel it" : "");
  fflush(stdout);
  int sig = 0;
  sigwait(&stop, &sig);
  printf("distilld web: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  web_http_stop(h);
  client_close(&w.c);
  return 0;
}
