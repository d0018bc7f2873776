/* The dashboard's HTTP server (web/web_http.h): routing, limits and headers on libmicrohttpd's
 * own thread; the answers come from web/web_api.c and the embedded files (web/web_assets.h). */
#define _GNU_SOURCE
#include "web/web_http.h"

#include <microhttpd.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/http_server.h"
#include "common/keys.h"
#include "web/web_assets.h"

struct web_http {
  struct MHD_Daemon *mhd;
  web_ctx *w;
  int loopback; /* the address is loopback: Host must name a loopback host */
  dd_http_log log;
};

/* Every answer's headers: nothing from elsewhere (the page and uPlot are served from here), no
 * framing, no sniffing. uPlot sets styles from script, hence style-src 'unsafe-inline'. */
static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                          "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, char *body, size_t len, int owned,
                               const char *type, const char *allow) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
  if (!r) {
    if (owned) free(body);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  MHD_add_response_header(r, "Content-Security-Policy", csp);
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
  if (allow) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static const char json_type[] = "application/json; charset=utf-8";

static enum MHD_Result respond_reply(struct MHD_Connection *c, web_reply *rep) {
  static char no_memory[] = "{\"error\":\"out of memory\"}\n";
  if (!rep->body) return respond(c, 500, no_memory, sizeof no_memory - 1, 0, json_type, NULL);
  return respond(c, rep->status, rep->body, rep->len, 1, json_type, NULL);
}

static enum MHD_Result respond_error(struct MHD_Connection *c, unsigned status, const char *msg, const char *allow) {
  web_reply rep;
  web_api_error(&rep, status, msg);
  if (!rep.body || !allow) return respond_reply(c, &rep);
  return respond(c, rep.status, rep.body, rep.len, 1, json_type, allow);
}

/* ---- the embedded files ------------------------------------------------------------------------------- */

static const char *content_type(const char *path) {
  const char *dot = strrchr(path, '.');
  if (!dot) return "text/html; charset=utf-8";
  if (!strcmp(dot, ".js")) return "text/javascript; charset=utf-8";
  if (!strcmp(dot, ".css")) return "text/css; charset=utf-8";
  return "text/html; charset=utf-8";
}

static enum MHD_Result serve_asset(struct MHD_Connection *c, const char *url) {
  const char *path = !strcmp(url, "/") ? "/index.html" : url;
  for (size_t i = 0; i < web_n_assets; i++)
    if (!strcmp(web_assets[i].path, path))
      return respond(c, MHD_HTTP_OK, (char *)web_assets[i].data, web_assets[i].len, 0, content_type(path), NULL);
  return respond_error(c, MHD_HTTP_NOT_FOUND, "not found: the dashboard is at /", NULL);
}

/* ---- requests ------------------------------------------------------------------------------------------- */

/* The Host header names a loopback host (127.x.y.z, localhost, [::1]), with or without a port. */
static int host_is_loopback(const char *host) {
  if (!strncmp(host, "[::1]", 5)) return host[5] == '\0' || host[5] == ':';
  size_t n = strcspn(host, ":");
  if (n == 9 && !strncmp(host, "localhost", 9)) return 1;
  if (strncmp(host, "127.", 4) || n > 15) return 0;
  return strspn(host, "0123456789.") == n;
}

/* "/api/job/ID" or "/api/job/ID/cancel": the id into `id` (1 when it is a job id), `*cancel`. */
static int parse_job_path(const char *rest, char *id, size_t idlen, int *cancel) {
  size_t n = strlen(rest);
  *cancel = n > 7 && !strcmp(rest + n - 7, "/cancel");
  if (*cancel) n -= 7;
  if (n == 0 || n >= idlen) return 0;
  memcpy(id, rest, n);
  id[n] = '\0';
  return dd_job_id_valid(id) && strcmp(id, ".") && strcmp(id, "..");
}

static enum MHD_Result serve_api(web_http *h, struct MHD_Connection *c, const char *url, int is_get, int is_post) {
  web_reply rep;
  if (!strcmp(url, "/api/overview")) {
    if (!is_get) return respond_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only", "GET, HEAD");
    web_api_overview(h->w, &rep);
    return respond_reply(c, &rep);
  }
  if (strncmp(url, "/api/job/", 9)) return respond_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint", NULL);
  char id[80];
  int cancel;
  if (!parse_job_path(url + 9, id, sizeof id, &cancel))
    return respond_error(c, MHD_HTTP_BAD_REQUEST, "not a job id (1 to 64 of A-Z a-z 0-9 _ . -)", NULL);
  if (cancel) {
    if (!is_post) return respond_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "POST only", "POST");
    const char *hdr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Distilld");
    if (h->w->allow_cancel && (!hdr || strcmp(hdr, "cancel")))
      return respond_error(c, MHD_HTTP_FORBIDDEN, "a cancel needs the header X-Distilld: cancel", NULL);
    web_api_cancel(h->w, id, &rep);
    return respond_reply(c, &rep);
  }
  if (!is_get) return respond_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only", "GET, HEAD");
  web_api_job(h->w, id, MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "metrics_since"),
              MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "events_since"), &rep);
  return respond_reply(c, &rep);
}

/* libmicrohttpd decodes the path before on_request sees it, so a %00 would cut it short there: the
 * raw URI is looked at first, and such a request marked (its *req_cls) to be refused. */
static char nul_in_uri;

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
  (void)cls, (void)c;
  for (const char *p = uri; (p = strchr(p, '%')) != NULL; p++)
    if (p[1] == '0' && p[2] == '0') return &nul_in_uri;
  return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size, void **req_cls) {
  web_http *h = cls;
  (void)version, (void)upload_data;
  int is_get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
  int is_post = !strcmp(method, MHD_HTTP_METHOD_POST);
  if (*req_cls == &nul_in_uri) {
    *upload_data_size = 0;
    return respond_error(c, MHD_HTTP_BAD_REQUEST, "a NUL byte (%00) in the URI", NULL);
  }
  if (is_post) {
    /* the body is not used: counted (in *req_cls, 1 + its bytes) and dropped; a long one closes */
    uintptr_t seen = (uintptr_t)*req_cls;
    if (!seen) {
      *req_cls = (void *)(uintptr_t)1;
      return MHD_YES;
    }
    if (*upload_data_size) {
      seen += *upload_data_size;
      *upload_data_size = 0;
      *req_cls = (void *)seen;
      return seen > 1 + WEB_HTTP_MAX_BODY ? MHD_NO : MHD_YES;
    }
  }
  const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
  if (h->loopback && host && !host_is_loopback(host))
    return respond_error(c, MHD_HTTP_FORBIDDEN, "this dashboard answers to a loopback Host only", NULL);
  if (!strncmp(url, "/api/", 5)) return serve_api(h, c, url, is_get, is_post);
  if (!is_get) return respond_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only", "GET, HEAD");
  return serve_asset(c, url);
}

/* libmicrohttpd's messages (rate-limited by common/http_server.c): stderr */
static void emit_log(const char *msg) { fprintf(stderr, "distilld web: %s\n", msg); }

int web_http_start(web_http **out, web_ctx *w, const struct sockaddr *sa, int loopback, unsigned *port_out, char *err,
                   size_t errlen) {
  *out = NULL;
  web_http *h = calloc(1, sizeof *h);
  if (!h) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  h->w = w;
  h->loopback = loopback;
  h->log.emit = emit_log;
  static const dd_http_limits lim = {WEB_HTTP_MAX_CONNECTIONS, WEB_HTTP_TIMEOUT_S, WEB_HTTP_CONNECTION_MEMORY};
  h->mhd = dd_http_start(sa, &lim, on_request, h, on_uri, h, &h->log);
  if (!h->mhd) {
    snprintf(err, errlen, "%s", h->log.start_error[0] ? h->log.start_error : "libmicrohttpd did not start");
    free(h);
    return -1;
  }
  uint16_t port = sa->sa_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)sa)->sin6_port)
                                            : ntohs(((const struct sockaddr_in *)sa)->sin_port);
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_BIND_PORT);
  *port_out = info ? info->port : port;
  *out = h;
  return 0;
}

void web_http_stop(web_http *h) {
  if (!h) return;
  MHD_stop_daemon(h->mhd);
  free(h);
}
