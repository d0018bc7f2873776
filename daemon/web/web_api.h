/* The dashboard's JSON endpoints (web/web_api.c): what GET /api/overview, GET /api/job/ID and POST
 * /api/job/ID/cancel answer, read from Redis on the server's one connection. Strings (job names,
 * errors: user input) are escaped by cli/client_view.h's view_json_string; numbers in metrics
 * entries are JSON numbers (null when not finite). Every function here runs on the server's one
 * thread (web/web_http.c), so the connection needs no lock. */
#ifndef DD_WEB_API_H
#define DD_WEB_API_H

#include <stddef.h>

#include "cli/client.h"

/* The most jobs /api/overview lists (the newest, from P:index), workers it shows, metrics entries
 * and events one /api/job answer holds (the page asks again from the last one while *_more is
 * true), and bytes of a string field in the overview (longer ones are cut). */
#define WEB_OVERVIEW_JOBS 100
#define WEB_OVERVIEW_WORKERS 256
#define WEB_JOB_METRICS 2000
#define WEB_JOB_EVENTS 500
#define WEB_OVERVIEW_FIELD_BYTES 512

typedef struct {
  dd_client c;          /* the one Redis connection (NULL rc while down: the next request connects) */
  client_opts co;       /* the verb's --config/--redis/--prefix, passed on to the cancel */
  int allow_cancel;     /* --allow-cancel */
} web_ctx;

/* An answer: an HTTP status and a malloc'd JSON body (the caller frees it; NULL when out of memory). */
typedef struct {
  unsigned status;
  char *body;
  size_t len;
} web_reply;

/* {"error": msg} with `status`. */
void web_api_error(web_reply *out, unsigned status, const char *msg);

/* GET /api/overview: the queue's length, the jobs by state (one count per state), the newest
 * WEB_OVERVIEW_JOBS jobs (their hash's summary fields), the workers with their heartbeat age. */
void web_api_overview(web_ctx *w, web_reply *out);

/* GET /api/job/ID: the job's hash (without spec and owner), its metrics entries after
 * `metrics_since` and events after `events_since` (stream ids, or NULL: from the first), at most
 * WEB_JOB_METRICS and WEB_JOB_EVENTS. `id` is a valid job id; the since ids are checked (400). */
void web_api_job(web_ctx *w, const char *id, const char *metrics_since, const char *events_since, web_reply *out);

/* POST /api/job/ID/cancel: 403 without --allow-cancel; else what `distilld cancel ID` does (its own
 * code, cli/cmd_status.c, with the verb's options), then the job's state. */
void web_api_cancel(web_ctx *w, const char *id, web_reply *out);

/* 1 when `s` is a stream entry id (MS-SEQ, each 1 to 20 digits). */
int web_stream_id_valid(const char *s);

#endif
