/* `distilld web`: the live dashboard (docs/monitoring.md, "Web dashboard"). One page, served by
 * libmicrohttpd from files embedded into the binary at build time (web/web_assets.h), polls JSON
 * endpoints that read the documented Redis keys (docs/redis.md) on one connection of the client
 * verbs' kind (cli/client.h). Read-only unless started with --allow-cancel.
 *
 * The pieces: web/web_cmd.c (this verb: options, the listen address, start and stop),
 * web/web_http.c (the server: routing, limits, headers, the embedded files), web/web_api.c (the
 * JSON endpoints: Redis reads and the cancel). */
#ifndef DD_WEB_H
#define DD_WEB_H

/* `distilld web [--listen ADDR] [--allow-cancel] [--config FILE | --redis HOST:PORT] [--prefix P]`:
 * serves until SIGINT or SIGTERM. Exit status 0 after a signal, 1 when it cannot serve, 2 usage. */
int dd_cmd_web(int argc, char **argv);

#endif
