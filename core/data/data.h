/* The ImageData pipeline: a list file of `path label` lines, decoded by a pool of threads into a
 * ring of preallocated batch buffers, ahead of the trainer.
 *
 * Determinism: sample position p of the stream (batch b, slot j: p = b * batch + j, after
 * rand_skip) is file order[p mod N] of epoch p / N, where the order is the list order (TEST, or
 * shuffle off) or a permutation drawn from (seed, epoch); every random choice of its transform
 * comes from an rng seeded with (seed, epoch, p mod N). So the batches are bit-identical whatever
 * the number of decode threads and however they interleave.
 *
 * Bad input: a list file that cannot be read, or a malformed line, fails dd_data_open naming the
 * file and line. An image that is missing, truncated, corrupt or smaller than the crop is skipped
 * (the next file in the epoch's order takes its place, deterministically), warned about once per
 * file and counted; when more than max_error_fraction of the samples fail, or nothing decodes,
 * dd_data_next fails with an error that names examples.
 *
 * Threads block on condition variables (never spin). The trainer blocks in dd_data_next only when
 * the next batch is not ready yet; the time it waited is returned. dd_data_close stops the
 * workers mid-epoch cleanly. */
#ifndef DD_DATA_H
#define DD_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "base/backend.h"
#include "base/path_policy.h"
#include "caffe.pb-c.h"

typedef struct dd_data dd_data;

/* Where warnings go (e.g. a corrupt image); may be NULL for stderr. */
typedef void (*dd_log_fn)(void *ctx, const char *msg);

typedef struct {
  int batch, channels, height, width; /* the data top's shape */
  int train;                          /* TRAIN: shuffle (if asked), random crop/mirror/jitter */
  uint64_t seed;
  int threads;                        /* decode threads (0: one per core) */
  int prefetch;                       /* batches in the ring */
  float max_error_fraction;
  dd_backend *be;                     /* ring buffers from be->ops->alloc_host (NULL: malloc) */
  dd_log_fn log;
  void *log_ctx;
  int64_t start_batch;                /* the first batch to produce (resuming a run) */
  /* Data parallel: rank r of S, with `batch` = B / S samples per rank, sets stride B and offset
   * r * batch, so batch b holds stream positions b * B + r * batch + j: the S ranks together see
   * exactly the samples (and the random transforms) one rank with batch B would. 0, 0: a single
   * rank (stride = batch). */
  int64_t stride, offset;
  /* Asked before the list file, the mean file and each image the list names are used (NULL:
   * everything allowed); `field` names the layer in its messages ("student.net: layer \"data\""). */
  const dd_path_policy *policy;
  const char *field;
} dd_data_config;

/* Opens the source described by an ImageData layer (`lp`: image_data_param, transform_param).
 * Reads the list file and the mean file, and starts the decode threads. A Data layer (`lp->type`
 * "Data": data_param over an LMDB or LevelDB) runs on core/data/db_data.c's pipeline behind the
 * same calls (the policy is asked for its database and mean file; a bad record fails the batch
 * holding it, as in Caffe, so dd_data_errors stays 0; dd_data_size is its record count). Returns 0, or DD_EIO /
 * DD_EPARSE / DD_EINVAL / DD_ENOMEM with a message naming the file (and line), or the policy's
 * refusal. */
int dd_data_open(dd_data **out, const Caffe__LayerParameter *lp, const dd_data_config *cfg, char *err,
                 size_t errlen);

/* Returns the next batch: `data` (batch x C x H x W floats) and `labels` (batch floats), valid
 * until the next call. *wait_ms gets the time spent blocked. Returns 0, or DD_ECORRUPT when too
 * many samples failed (the message names examples). */
int dd_data_next(dd_data *d, const float **data, const float **labels, double *wait_ms, char *err,
                 size_t errlen);

/* Samples that failed to decode so far, and samples attempted. */
int64_t dd_data_errors(const dd_data *d);
int64_t dd_data_attempts(const dd_data *d);
/* Number of files in the list. */
int64_t dd_data_size(const dd_data *d);

/* Stops the workers (mid-epoch is fine) and frees everything. */
void dd_data_close(dd_data *d);

#endif
