/* What the client verbs show (cli/client_view.c): numbers, ages and times, JSON strings, text made
 * safe for a terminal, tables, the job table (list, watch) and the status block of one job
 * (status, watch ID). */
#ifndef DD_CLIENT_VIEW_H
#define DD_CLIENT_VIEW_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdio.h>

#include "cli/client.h"

/* Table cells are truncated to this many bytes (with "..."). */
#define VIEW_CELL_LEN 48
typedef char view_cell[VIEW_CELL_LEN];

/* 1 when `s` is a whole number or a float (strtod), with *v its value. */
int view_num(const char *s, double *v);

/* `s` formatted with %.*f (or %.*g when `g`) when it is a number, else as is. Returns `buf`. */
const char *view_fmt_num(char *buf, size_t len, const char *s, int prec, int g);

/* Writes " KEY VALUE" of a stream entry's field for a person: seconds (eta_s, elapsed_s: any KEY
 * ending in _s but not _per_s) as "eta 5m22s" (common/cli_util.h's durations), losses (KEY ending
 * in loss) to 4 significant digits, other fractions to 5, whole numbers and text as they are. */
void view_field(FILE *f, const char *k, const char *v);

/* A Unix time (seconds) as local "YYYY-MM-DD HH:MM:SS" (or "HH:MM:SS" when `short_form`). */
void view_fmt_time(char *buf, size_t len, double t, int short_form);

/* 1 for "succeeded", "failed" and "cancelled". */
int view_final_state(const char *s);

/* Writes `s` (`n` bytes) as a JSON string: quotes, backslashes and control characters escaped,
 * valid UTF-8 as is, any other byte as U+FFFD. */
void view_json_string(FILE *f, const char *s, size_t n);

/* Writes text built from Redis values to `out` with control characters other than newlines
 * shown as '?', so that a job name or an error message cannot drive the terminal. */
void view_emit(FILE *out, const char *buf, size_t len);

/* Copies `s` ("-" when empty) into a cell, cut to VIEW_CELL_LEN with "..." (never inside a UTF-8
 * character). */
void view_cell_set(view_cell c, const char *s);

/* Prints `nrows` rows of `ncol` cells (row-major) under `head`, columns padded to their widest. */
void view_table_print(FILE *f, int ncol, const char *const *head, view_cell *cells, size_t nrows);
/* The end of a table verb: removes the members whose hashes have expired (gone[2] on, ngone of
 * them; gone[0] and gone[1] are filled here) with `cmd` ("ZREM", "SREM") from `set_key`, then
 * prints the table, or the line `none` when no row is shown. 0, or -1 with c->err. */
int view_prune_and_print(dd_client *c, FILE *f, const char *cmd, const char *set_key, const char **gone, size_t ngone,
                         int ncol, const char *const *head, view_cell *cells, size_t shown, const char *none);

/* Writes the table of the newest `limit` jobs (0: all) to `f`. Ids whose hash has expired leave
 * the index. Returns 0, or -1 with c->err. */
int view_job_table(dd_client *c, FILE *f, long limit);

/* Writes a readable block of one job's hash (a HGETALL reply) to `f`; absent fields are left out. */
void view_status_block(FILE *f, const char *id, const redisReply *h, double now);

#endif
