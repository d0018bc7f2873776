/* convert_imageset (see convert_imageset.h): list -> decoded images -> Datum records -> database. */
#define _XOPEN_SOURCE 700
#include "data/convert_imageset.h"

#include <ctype.h>
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/dd_error.h"
#include "base/rng.h"
#include "data/datum_write.h"
#include "data/db_write.h"
#include "data/imgdec.h"
#include "data/transform.h"
#include "format/fileio.h"

typedef struct {
  const char *name; /* inside the list buffer */
  int label;
  int line;
} entry;

static void say(const dd_convert_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const dd_convert_opts *o, const char *fmt, ...) {
  char line[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (o->log) o->log(o->log_ctx, line);
  else fprintf(stderr, "%s\n", line);
}

/* Splits the list (in place) into entries: the label after the last space. */
static int parse_list(entry **out, int *n_out, char *text, const char *list, char *err, size_t errlen) {
  int n = 0, cap = 0, line = 0;
  entry *v = NULL;
  for (char *p = text, *next; p && *p; p = next) {
    line++;
    next = strchr(p, '\n');
    if (next) *next++ = '\0';
    size_t len = strlen(p);
    if (len && p[len - 1] == '\r') p[--len] = '\0';
    if (len == 0) continue;
    char *sp = strrchr(p, ' ');
    char *end = NULL;
    errno = 0;
    long label = sp ? strtol(sp + 1, &end, 10) : 0;
    if (!sp || sp == p) {
      free(v);
      return dd_errorf(DD_EPARSE, err, errlen, "%s:%d: expected \"PATH LABEL\", got \"%.200s\"", list, line, p);
    }
    if (end == sp + 1 || *end || errno || label < INT32_MIN || label > INT32_MAX) {
      free(v);
      return dd_errorf(DD_EPARSE, err, errlen, "%s:%d: the label \"%.100s\" is not an integer", list, line, sp + 1);
    }
    *sp = '\0';
    if (n == cap) {
      cap = cap ? cap * 2 : 256;
      entry *nv = realloc(v, (size_t)cap * sizeof *nv);
      if (!nv) {
        free(v);
        return dd_errorf(DD_ENOMEM, err, errlen, "out of memory reading %s", list);
      }
      v = nv;
    }
    v[n++] = (entry){p, (int)label, line};
  }
  *out = v;
  *n_out = n;
  return 0;
}

/* Caffe's matchExt: the file's extension is the encoding (jpeg counts as jpg). */
static int match_ext(const char *name, const char *enc) {
  const char *dot = strrchr(name, '.');
  const char *ext = dot ? dot + 1 : name;
  return !strcasecmp(ext, enc) || (!strcasecmp(enc, "jpg") && !strcasecmp(ext, "jpeg"));
}

/* Resizes `img` to h x w (bilinear, OpenCV's geometry) into `out` (HWC). */
static int resize_image(dd_image *out, const dd_image *img, int h, int w, char *err, size_t errlen) {
  dd_transform t;
  memset(&t, 0, sizeof t);
  t.channels = img->c;
  t.new_h = h;
  t.new_w = w;
  t.out_h = h;
  t.out_w = w;
  t.scale = 1.0f;
  size_t n = (size_t)h * w * img->c;
  void *scratch = malloc(dd_transform_scratch_size(&t, img->w, img->h));
  float *chw = malloc(n * sizeof *chw);
  uint8_t *px = n > out->cap ? realloc(out->px, n) : out->px;
  int r = scratch && chw && px ? 0 : dd_errorf(DD_ENOMEM, err, errlen, "out of memory");
  if (px && n > out->cap) {
    out->px = px;
    out->cap = n;
  }
  if (r == 0) r = dd_transform_apply(&t, chw, img->px, img->w, img->h, NULL, scratch, err, errlen);
  if (r == 0) {
    size_t plane = (size_t)h * w;
    for (size_t p = 0; p < plane; p++)
      for (int c = 0; c < img->c; c++) out->px[p * img->c + c] = (uint8_t)chw[c * plane + p];
    out->w = w;
    out->h = h;
    out->c = img->c;
  }
  free(scratch);
  free(chw);
  return r;
}

typedef struct {
  const dd_convert_opts *o;
  dd_image img, sized;
  size_t first_size; /* check_size: the first raw record's data bytes */
} conv_state;

/* One image's record into *rec (*rec_len bytes). `file` holds its bytes. */
static int make_record(conv_state *s, const entry *e, const char *path, const uint8_t *file, size_t flen,
                       uint8_t **rec, size_t *rec_len, char *err, size_t errlen) {
  const dd_convert_opts *o = s->o;
  char why[512];
  int r = dd_image_decode(&s->img, file, flen, o->gray ? 1 : 3, path, why, sizeof why);
  if (r) return dd_errorf(r, err, errlen, "%s:%d: %s", o->list, e->line, why);
  int resize = o->resize_height > 0 && o->resize_width > 0;
  const dd_image *img = &s->img;
  if (resize) {
    if ((r = resize_image(&s->sized, &s->img, o->resize_height, o->resize_width, why, sizeof why)))
      return dd_errorf(r, err, errlen, "%s:%d: %s: %s", o->list, e->line, path, why);
    img = &s->sized;
  }
  if (!o->encoded) {
    size_t size = (size_t)img->w * img->h * img->c;
    if (o->check_size && s->first_size && size != s->first_size)
      return dd_errorf(DD_ESHAPE, err, errlen, "%s:%d: %s: %dx%dx%d is %zu bytes, the first record %zu (--check_size)",
                       o->list, e->line, path, img->c, img->h, img->w, size, s->first_size);
    if (!s->first_size) s->first_size = size;
    return dd_datum_pack_raw(rec, rec_len, img, e->label, err, errlen);
  }
  const char *enc = o->encode_type && o->encode_type[0] ? o->encode_type : NULL;
  if (!enc) {
    const char *dot = strrchr(e->name, '.');
    enc = dot ? dot + 1 : "";
  }
  if (!resize && match_ext(e->name, enc)) return dd_datum_pack_encoded(rec, rec_len, file, flen, e->label, err, errlen);
  uint8_t *buf = NULL;
  size_t blen = 0;
  if (!strcasecmp(enc, "png"))
    r = dd_image_encode_png(&buf, &blen, img, why, sizeof why);
  else if (!strcasecmp(enc, "jpg") || !strcasecmp(enc, "jpeg"))
    r = dd_image_encode_jpeg(&buf, &blen, img, 95, why, sizeof why);
  else
    return dd_errorf(DD_EINVAL, err, errlen, "%s:%d: %s: cannot encode as \"%s\" (png or jpg; set --encode_type)",
                     o->list, e->line, path, enc);
  if (r) return dd_errorf(r, err, errlen, "%s:%d: %s: %s", o->list, e->line, path, why);
  r = dd_datum_pack_encoded(rec, rec_len, buf, blen, e->label, err, errlen);
  free(buf);
  return r;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

/* Writes every entry; a failed image either fails (naming list and line) or is skipped. */
static int write_all(conv_state *s, dd_db_writer *w, const entry *v, int n, int64_t *written, char *err,
                     size_t errlen) {
  const dd_convert_opts *o = s->o;
  int every = o->progress_every > 0 ? o->progress_every : 1000;
  int64_t count = 0;
  int r = 0;
  for (int i = 0; i < n && r == 0; i++) {
    char path[4096], key[4200];
    snprintf(path, sizeof path, "%s%s", o->root, v[i].name);
    char *file = NULL;
    size_t flen = 0;
    uint8_t *rec = NULL;
    size_t rlen = 0;
    char why[1024];
    r = dd_read_file(&file, &flen, path, why, sizeof why);
    if (r) r = dd_errorf(r, err, errlen, "%s:%d: %s", o->list, v[i].line, why);
    else r = make_record(s, &v[i], path, (const uint8_t *)file, flen, &rec, &rlen, err, errlen);
    free(file);
    if (r && o->skip_errors && r != DD_ENOMEM && r != DD_ESHAPE) {
      say(o, "warning: %s (skipped)", err);
      r = 0;
      continue;
    }
    if (r) break;
    int kl = snprintf(key, sizeof key, "%08d_%s", i, v[i].name);
    r = dd_db_writer_put(w, key, (size_t)kl, rec, rlen, err, errlen);
    free(rec);
    if (r) break;
    count++;
    if (count % 1000 == 0) r = dd_db_writer_commit(w, err, errlen);
    if (r == 0 && count % every == 0) say(o, "Processed %lld files.", (long long)count);
  }
  if (r == 0 && count % every != 0) say(o, "Processed %lld files.", (long long)count);
  *written = count;
  return r;
}

int dd_convert_imageset(const dd_convert_opts *o, int64_t *written, char *err, size_t errlen) {
  int64_t dummy;
  if (!written) written = &dummy;
  *written = 0;
  if ((o->resize_height > 0) != (o->resize_width > 0))
    return dd_errorf(DD_EINVAL, err, errlen, "set --resize_height and --resize_width together");
  char *text = NULL;
  size_t len = 0;
  entry *v = NULL;
  int n = 0;
  int r = dd_read_file(&text, &len, o->list, err, errlen);
  if (r) return r;
  if ((r = parse_list(&v, &n, text, o->list, err, errlen))) goto done;
  if (o->shuffle) {
    dd_rng rng;
    dd_rng_seed(&rng, o->seed);
    for (int i = n - 1; i > 0; i--) {
      int j = (int)(dd_rng_next(&rng) % (uint64_t)(i + 1));
      entry t = v[i];
      v[i] = v[j];
      v[j] = t;
    }
  }
  say(o, "A total of %d images.", n);
  dd_db_writer *w = NULL;
  if ((r = dd_db_writer_open(&w, o->backend ? o->backend : "lmdb", o->db, err, errlen))) goto done;
  conv_state s = {.o = o};
  r = write_all(&s, w, v, n, written, err, errlen);
  char cerr[512];
  int rc = dd_db_writer_close(w, r != 0, cerr, sizeof cerr);
  if (r == 0 && rc) r = dd_errorf(rc, err, errlen, "%s", cerr);
  if (r) nftw(o->db, rm_entry, 16, FTW_DEPTH | FTW_PHYS); /* the database this call created */
  dd_image_free(&s.img);
  dd_image_free(&s.sized);
done:
  free(v);
  free(text);
  return r;
}
