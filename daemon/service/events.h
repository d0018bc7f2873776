/* Event formatting: how a job's progress, tests, teacher check, snapshots, logs, start and end
 * become Redis commands in a ring item (the keys and fields of docs/redis.md). Each fill_* writes
 * one item for job `j` from its argument (`arg`: the type named at each one); the job's thread
 * (service/job_thread.c) reserves the item and commits it. */
#ifndef DD_EVENTS_H
#define DD_EVENTS_H

#include <stdint.h>

#include "service/ring.h"
#include "service/state.h"

/* arg: a dd_distill_progress (train/distill.h): the job hash's progress fields + a metrics entry
 * (+ the items dropped since the last count, added to the hash's metrics_dropped). */
void fill_progress(item_b *b, job_t *j, const void *arg);
/* arg: a dd_distill_test: the hash's test_* fields + a "test" event. */
void fill_test(item_b *b, job_t *j, const void *arg);

typedef struct {
  double acc;
  int batches;
  uint64_t checksum;
} teacher_arg;
/* arg: a teacher_arg: the teacher_* fields + a "teacher" event. */
void fill_teacher(item_b *b, job_t *j, const void *arg);

typedef struct {
  int iter;
  const char *model, *state;
} snap_arg;
/* arg: a snap_arg: last_snapshot* + a "snapshot" event. */
void fill_snapshot(item_b *b, job_t *j, const void *arg);

typedef struct {
  int level;
  const char *msg;
} log_arg;
/* arg: a log_arg: a "log" event (a warning also counts in the hash's `warnings`). */
void fill_log(item_b *b, job_t *j, const void *arg);

typedef struct {
  const char *name;
  int resumed_from;
} start_arg;
/* arg: a start_arg: name, resumed_from (+ a "resumed" event after a resume). */
void fill_start(item_b *b, job_t *j, const void *arg);

typedef struct {
  int outcome, iter;
  const char *error; /* OUT_FAILED: why; OUT_HANDBACK: how the attempt ended (the hash's last_error) */
} done_arg;
/* arg: a done_arg: the job's last item (ITEM_DONE): the FINISH or HANDBACK script, or nothing for a job
 * whose lease was lost (OUT_LOST). */
void fill_done(item_b *b, job_t *j, const void *arg);

#endif
