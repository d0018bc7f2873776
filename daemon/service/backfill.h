/* The backfill of a resumed attempt: the metrics entries an earlier attempt trained but never got
 * into Redis (its worker lost the job's lease while Redis was out of its reach, so its buffered
 * items were refused), read back from the job's OUTPUT_DIR/metrics.jsonl, which core writes at
 * every display (core/train/distill.c) into the output directory every attempt shares.
 *
 * The claim (LUA_CLAIM) tells the new attempt the iter of the metrics stream's last entry L; once
 * the attempt knows the iteration S it resumes from, the train records with L < iter < S (S itself
 * is displayed again by this attempt; of several records of one iter, the last written) go into
 * the ring as ITEM_BACKFILL items, several records each, before the attempt's first iteration. The
 * loop sends each through LUA_BACKFILL: owner-checked, once per sequence number, and only records
 * above the stream's last iter, so a retry or a later attempt's backfill never writes one twice. */
#ifndef DD_BACKFILL_H
#define DD_BACKFILL_H

#include <stddef.h>

#include "service/state.h"

typedef struct {
  int from, to;    /* the iterations looked for: from..to (to < from: nothing to do) */
  int found, sent; /* train records found in the file, and sent in the ring */
  int items;       /* ring items they took */
} backfill_result;

/* Backfills job j (its thread, attempt > 1) resuming from `resumed_from` out of `output_dir`
 * (the job's, opened beneath the daemon's output root without following a symlink out of it).
 * Waits for ring room as long as the job is not asked to stop. Returns 0, or a negative error with
 * `err` saying why (the file cannot be opened or read): nothing was sent then. */
int backfill_run(job_t *j, const char *output_dir, int resumed_from, backfill_result *res, char *err, size_t errlen);

#endif
