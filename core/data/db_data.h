/* The Data layer's pipeline: Caffe Datum records from an LMDB or LevelDB (data_param.source,
 * backend), transformed (transform_param) into a ring of preallocated batch buffers by one
 * prefetch thread, ahead of the trainer, as Caffe's BasePrefetchingDataLayer does.
 *
 * Order (Caffe's DataLayer with one solver): the records in key order from the first, wrapping
 * to the first after the last; rand_skip R > 0 first skips (a number drawn from the seed) mod R
 * records, as Caffe 1.0's DataLayer once did. Batch b, slot j takes the record at stream position
 * b * stride + offset + j (+ the skip; stride = batch and offset 0 for one rank), so data-parallel
 * ranks together read what one rank with the whole batch would, and a resumed run starts at
 * start_batch. With data_param.shuffle (distilld's addition, TRAIN only) position p is record
 * perm_e[p mod N] of epoch e = p / N, perm_e a permutation drawn from (seed, e): every key is read
 * once at open (N keys held in memory) and each record fetched by key. Every random choice of the transform (TRAIN: crop, mirror, jitter)
 * comes from an rng seeded with (seed, position), so the batches do not depend on timing.
 *
 * Every record must be a Datum of the first record's channels, and, without a crop, of its height
 * and width (with crop_size: at least the crop); a mean_file must have the records' height and
 * width (Caffe's DataTransformer checks). A record that breaks these makes the batch holding it
 * fail: dd_db_data_next returns the earlier batches and then the error, naming the db path, the
 * record's key and the field.
 *
 * The prefetch thread blocks on condition variables when the ring is full (never spins); the
 * trainer blocks in dd_db_data_next only when the next batch is not ready. */
#ifndef DD_DB_DATA_H
#define DD_DB_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "base/backend.h"
#include "caffe.pb-c.h"

typedef struct dd_db_data dd_db_data;

typedef struct {
  int batch, channels, height, width; /* the data top's shape (from dd_db_data_probe) */
  int train;                          /* TRAIN: random crop and mirror (and jitter) */
  uint64_t seed;
  int prefetch;                       /* batches in the ring (0: 4) */
  dd_backend *be;                     /* ring buffers from be->ops->alloc_host (NULL: malloc) */
  int64_t start_batch;                /* the first batch to produce (resuming a run) */
  /* Data parallel, as dd_data_config's: batch b slot j is stream position b * stride + offset + j
   * (the other ranks' records are skipped); 0, 0: one rank (stride = batch). */
  int64_t stride, offset;
} dd_db_data_config;

/* The sample shape (C, H, W) a Data layer `lp` produces, from its first record as Caffe's
 * DataLayerSetUp infers it: the record's channels (an encoded one decoded, force_color /
 * force_gray applied), the crop or the record's height and width. Checks data_param (source,
 * batch_size, backend) and transform_param (mean_file or mean_value, not both; the mean's shape).
 * Returns 0, or DD_E* with a message naming the field, the db path and the key. */
int dd_db_data_probe(const Caffe__LayerParameter *lp, int dims[3], char *err, size_t errlen);

/* Opens the database, reads the mean file and starts the prefetch thread. Returns 0 or DD_E*. */
int dd_db_data_open(dd_db_data **out, const Caffe__LayerParameter *lp, const dd_db_data_config *cfg, char *err,
                    size_t errlen);

/* The next batch: `data` (batch x C x H x W) and `labels` (batch), valid until the next call.
 * *wait_ms (may be NULL) gets the time spent blocked. Returns 0, or the error of the record that
 * broke this batch (then every later call returns it too). */
int dd_db_data_next(dd_db_data *d, const float **data, const float **labels, double *wait_ms, char *err,
                    size_t errlen);

/* The number of records in the database (counted at open). */
int64_t dd_db_data_size(const dd_db_data *d);

/* Stops the thread (mid-batch is fine) and frees everything. NULL is a no-op. */
void dd_db_data_close(dd_db_data *d);

#endif
