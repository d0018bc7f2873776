/* The dashboard's files, embedded into the binary at build time: daemon/web/embed.cmake turns
 * daemon/web/page/ (the page: index.html, app.js, app.css) and uPlot's dist files
 * (daemon/web/node_modules/uplot/dist, from `npm ci`) into the C arrays of web_assets.c in the
 * build folder. Nothing is fetched at run time. */
#ifndef DD_WEB_ASSETS_H
#define DD_WEB_ASSETS_H

#include <stddef.h>

typedef struct {
  const char *path;          /* the URL path it is served at, e.g. "/app.js" */
  const unsigned char *data; /* its bytes (NUL-terminated, the NUL not counted) */
  size_t len;
} web_asset;

extern const web_asset web_assets[];
extern const size_t web_n_assets;

#endif
