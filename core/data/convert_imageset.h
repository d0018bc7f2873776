/* Caffe's tools/convert_imageset: a list file of `PATH LABEL` lines (the label after the last
 * space) and a root folder -> an LMDB or LevelDB of Datum records, keys "%08d_PATH" in the order
 * written (the list's, or a permutation of it with `shuffle`), committed every 1000 records.
 *
 * Each image is decoded by core/data/imgdec.h as cv::imread decodes it (colour as B, G, R, or grey
 * with --gray), resized with OpenCV's bilinear geometry when both resize dims are set (the same
 * code as ImageData's new_height/new_width), and stored raw (uint8 C, H, W) or, with `encoded`,
 * as the file's own bytes when it needs no resize and its extension matches the encoding (Caffe's
 * rule, so --gray keeps a colour file as it is), otherwise re-encoded as PNG or JPEG (quality 95,
 * OpenCV's default; 4:4:4 chroma where OpenCV subsamples 4:2:0).
 *
 * Differences from Caffe, on purpose: a malformed list line (no space, a label that is not an
 * integer) and an image that cannot be read fail the conversion naming the list file and line
 * (Caffe skips unreadable images with a log line: `skip_errors` does that, with a warning); a
 * failed conversion removes the database it created; the shuffle is distilld's own permutation
 * from `seed` (Caffe's depends on its unseeded generator). */
#ifndef DD_CONVERT_IMAGESET_H
#define DD_CONVERT_IMAGESET_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  const char *root;    /* prepended to each listed path as it is (Caffe: "ROOT/" with the slash) */
  const char *list;    /* the list file */
  const char *db;      /* the database to create (must not exist) */
  const char *backend; /* "lmdb" (NULL: lmdb) or "leveldb" */
  int shuffle;
  uint64_t seed;
  int resize_height, resize_width; /* both > 0: resize; else keep each image's size */
  int gray;
  int encoded;
  const char *encode_type; /* NULL or "": the file's extension */
  int check_size;          /* every raw record must have the first one's size */
  int skip_errors;         /* unreadable images are warned about and skipped (Caffe's behaviour) */
  int progress_every;      /* a progress line every N records (0: 1000, Caffe's) */
  /* progress lines and warnings (NULL: stderr) */
  void (*log)(void *ctx, const char *line);
  void *log_ctx;
} dd_convert_opts;

/* Converts; *written gets the records written (may be NULL). Returns 0, or DD_EPARSE (a bad list
 * line: "LIST:LINE: ..."), DD_EIO / DD_ECORRUPT ("LIST:LINE: PATH: reason"), DD_ESHAPE
 * (check_size), DD_EINVAL (bad options) or DD_ENOMEM, with a message. */
int dd_convert_imageset(const dd_convert_opts *o, int64_t *written, char *err, size_t errlen);

#endif
