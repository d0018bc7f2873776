/* JPEG and PNG decoding and encoding in memory (see imgdec.h).
 *
 * JPEG goes through TurboJPEG (libjpeg-turbo 2.1's tjDecompressHeader3 / tjDecompress2): the
 * header gives the size, checked against DD_IMAGE_MAX_PIXELS before the buffer grows, then one
 * call decodes straight into the image in BGR or gray. The decompressor handle lives in the
 * dd_image and is reused (creating one per call costs about 2% of a 32x32 decode); after any
 * failure it is destroyed, because libjpeg-turbo 2.1.5 leaves a handle whose header read failed
 * half-way in a state where every later header read fails too.
 *
 * PNG goes through libpng's sequential low-level API with OpenCV's transformations (the
 * simplified png_image API composites alpha and applies gamma when converting, which OpenCV does
 * not). libpng reports errors by longjmp: the setjmp lives in pngio_guard(), which only calls one
 * function and keeps every piece of state in a context struct outside its own frame, so nothing
 * is clobbered and every error path ends in png_destroy_*_struct. */
#include "data/imgdec.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "base/dd_error.h"

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

/* Makes px hold at least `need` bytes; the old contents are not kept. */
static int image_reserve(dd_image *img, size_t need) {
  if (need <= img->cap && img->px) return 0;
  free(img->px);
  img->px = malloc(need ? need : 1);
  img->cap = img->px ? need : 0;
  return img->px ? 0 : DD_ENOMEM;
}

/* BGR -> gray in place, as OpenCV computes it for CMYK JPEGs (icvCvt_CMYK2Gray) and in
 * cvtColor(COLOR_BGR2GRAY): Y = (1868 B + 9617 G + 4899 R + 2^13) >> 14, the weights 0.114, 0.587,
 * 0.299 in 14-bit fixed point, rounded. Writes n bytes over the first n of the 3n (i <= 3 i). */
static void bgr_to_gray(uint8_t *px /* (n, 3) in, (n) out */, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const uint8_t *s = px + 3 * i;
    px[i] = (uint8_t)((s[0] * 1868u + s[1] * 9617u + s[2] * 4899u + (1u << 13)) >> 14);
  }
}

/* CMYK (as libjpeg returns Adobe's inverted CMYK) -> BGR in place, OpenCV's icvCvt_CMYK2BGR:
 * each of c, m, y becomes k - ((255 - v) * k >> 8). 3 i <= 4 i, so a forward pass is safe. */
static void cmyk_to_bgr(uint8_t *px /* (n, 4) in, (n, 3) out */, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const uint8_t *s = px + 4 * i;
    int c = s[0], m = s[1], y = s[2], k = s[3];
    uint8_t r = (uint8_t)(k - ((255 - c) * k >> 8)), g = (uint8_t)(k - ((255 - m) * k >> 8)),
            b = (uint8_t)(k - ((255 - y) * k >> 8));
    px[3 * i] = b;
    px[3 * i + 1] = g;
    px[3 * i + 2] = r;
  }
}

static int too_large(int64_t w, int64_t h) {
  return w <= 0 || h <= 0 || w * h > DD_IMAGE_MAX_PIXELS;
}

/* ---- JPEG ------------------------------------------------------------------------------------ */

/* Turns the handle's last message into an error and drops the handle (see the file comment). */
static int jpeg_fail(dd_image *img, const char *name, char *err, size_t errlen) {
  char msg[256]; /* libjpeg messages fit in JMSG_LENGTH_MAX = 200 */
  snprintf(msg, sizeof msg, "%s", tjGetErrorStr2(img->tj__));
  tjDestroy(img->tj__);
  img->tj__ = NULL;
  if (strstr(msg, "remature end")) /* "Premature end of JPEG file", "... of data segment" */
    return dd_errorf(DD_ECORRUPT, err, errlen, "%s: truncated JPEG (libjpeg: %s)", name, msg);
  if (strstr(msg, "Insufficient memory") || strstr(msg, "Memory allocation failure"))
    return dd_errorf(DD_ENOMEM, err, errlen, "%s: %s", name, msg);
  return dd_errorf(DD_ECORRUPT, err, errlen, "%s: %s", name, msg);
}

static int decode_jpeg(dd_image *img, const uint8_t *buf, size_t len, int channels,
                       const char *name, char *err, size_t errlen) {
  if (!img->tj__) {
    img->tj__ = tjInitDecompress();
    if (!img->tj__)
      return dd_errorf(DD_ENOMEM, err, errlen, "%s: cannot create a JPEG decompressor: %s", name,
                       tjGetErrorStr2(NULL));
  }
  /* tjDecompressHeader3 and tjDecompress2 take non-const buffers but only read them. */
  unsigned char *jpeg = (unsigned char *)(uintptr_t)buf;
  int w = 0, h = 0, subsamp = 0, cs = 0;
  if (tjDecompressHeader3(img->tj__, jpeg, (unsigned long)len, &w, &h, &subsamp, &cs) != 0)
    return jpeg_fail(img, name, err, errlen);
  if (w <= 0 || h <= 0) { /* the header reader can "succeed" on garbage after FF D8 FF, with no frame */
    tjDestroy(img->tj__);
    img->tj__ = NULL;
    return dd_errorf(DD_ECORRUPT, err, errlen, "%s: not a valid JPEG (it starts like one, but has no frame header: "
                     "the size reads as %dx%d)", name, w, h);
  }
  if (too_large(w, h))
    return dd_errorf(DD_ECORRUPT, err, errlen, "%s: image too large: %dx%d (at most %lld pixels)",
                     name, w, h, (long long)DD_IMAGE_MAX_PIXELS);
  int c = channels ? channels : (cs == TJCS_GRAY ? 1 : 3);
  int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK; /* libjpeg converts these to CMYK only */
  int pf = cmyk ? TJPF_CMYK : c == 1 ? TJPF_GRAY : TJPF_BGR;
  size_t n = (size_t)w * (size_t)h;
  if (image_reserve(img, n * (size_t)(cmyk ? 4 : c)) != 0)
    return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory for a %dx%d image", name, w, h);
  /* STOPONWARNING: libjpeg's warnings mean damaged pixels (a truncated file is decoded with a
   * gray tail); stop at the first one instead of decoding the rest. LIMITSCANS: a progressive
   * file with more than 500 scans is refused (such files exist only to burn CPU). */
  if (tjDecompress2(img->tj__, jpeg, (unsigned long)len, img->px, w, 0, h, pf,
                    TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0)
    return jpeg_fail(img, name, err, errlen);
  if (cmyk) {
    cmyk_to_bgr(img->px, n);
    if (c == 1) bgr_to_gray(img->px, n);
  }
  img->w = w;
  img->h = h;
  img->c = c;
  return 0;
}

/* ---- PNG ------------------------------------------------------------------------------------- */

/* Everything a libpng read or write needs, outside the frame that calls setjmp. */
typedef struct {
  const uint8_t *in; /* read: the PNG bytes */
  size_t in_len, in_pos;
  uint8_t *out; /* write: the growing output buffer */
  size_t out_len, out_cap;
  dd_image *img; /* read: the destination; write: the source (const in spirit) */
  int channels;
  int code;      /* the error code when libpng longjmps */
  char msg[256]; /* libpng's message, or ours */
} pngio;

static void pngio_error(png_structp png, png_const_charp msg) {
  pngio *x = png_get_error_ptr(png);
  snprintf(x->msg, sizeof x->msg, "%s", msg);
  png_longjmp(png, 1);
}

/* libpng's warnings (bad ancillary chunks, odd sRGB profiles) do not concern a training run. */
static void pngio_warning(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg;
}

static void pngio_read(png_structp png, png_bytep out, size_t n) {
  pngio *x = png_get_io_ptr(png);
  if (n > x->in_len - x->in_pos) png_error(png, "truncated PNG");
  memcpy(out, x->in + x->in_pos, n);
  x->in_pos += n;
}

static void pngio_write(png_structp png, png_bytep data, size_t n) {
  pngio *x = png_get_io_ptr(png);
  if (n > x->out_cap - x->out_len) {
    size_t cap = x->out_cap ? x->out_cap : 4096;
    while (cap - x->out_len < n) cap *= 2;
    uint8_t *p = realloc(x->out, cap);
    if (!p) {
      x->code = DD_ENOMEM;
      png_error(png, "out of memory");
    }
    x->out = p;
    x->out_cap = cap;
  }
  memcpy(x->out + x->out_len, data, n);
  x->out_len += n;
}

static void pngio_flush(png_structp png) { (void)png; }

/* The body of a PNG read; libpng errors longjmp out of it to pngio_guard(). Our own failures set
 * x->code and x->msg and return it. */
static int pngio_read_body(png_structp png, png_infop info, pngio *x) {
  png_set_read_fn(png, x, pngio_read);
  png_read_info(png, info);
  png_uint_32 w, h;
  int depth, ctype, interlace;
  png_get_IHDR(png, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
  if (too_large(w, h)) {
    snprintf(x->msg, sizeof x->msg, "image too large: %ux%u (at most %lld pixels)", (unsigned)w,
             (unsigned)h, (long long)DD_IMAGE_MAX_PIXELS);
    return x->code = DD_ECORRUPT;
  }
  int stored = (ctype & PNG_COLOR_MASK_COLOR) ? 3 : 1; /* palette images count as colour */
  int c = x->channels ? x->channels : stored;
  /* OpenCV's transformations, in its order (imgcodecs/src/grfmt_png.cpp, 8-bit output), so the
   * pixels are the ones cv::imread gives Caffe, colour -> gray included: libpng's rgb_to_gray
   * with OpenCV's weights works in 15-bit fixed point and truncates (at 16 bits for 16-bit files,
   * before the high byte is kept), which can be 1 below the rounded value. */
  if (depth == 16) png_set_strip_16(png);
  png_set_strip_alpha(png);
  if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (!(ctype & PNG_COLOR_MASK_COLOR) && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (stored == 3 && c == 3)
    png_set_bgr(png);
  else if (c == 3)
    png_set_gray_to_rgb(png);
  else if (stored == 3)
    png_set_rgb_to_gray(png, PNG_ERROR_ACTION_NONE, 0.299, 0.587);
  int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  size_t row = (size_t)w * (size_t)c;
  if (png_get_channels(png, info) != c || png_get_bit_depth(png, info) != 8 ||
      png_get_rowbytes(png, info) != row) {
    snprintf(x->msg, sizeof x->msg, "unsupported PNG layout (colour type %d, depth %d)", ctype,
             depth);
    return x->code = DD_ECORRUPT;
  }
  dd_image *img = x->img;
  if (image_reserve(img, row * h) != 0) {
    snprintf(x->msg, sizeof x->msg, "out of memory for a %ux%u image", (unsigned)w, (unsigned)h);
    return x->code = DD_ENOMEM;
  }
  /* Row by row straight into the image, no row-pointer array. With interlace handling each of
   * the 7 passes fills its own pixels of every row. */
  for (int p = 0; p < passes; p++)
    for (png_uint_32 y = 0; y < h; y++) png_read_row(png, img->px + row * y, NULL);
  png_read_end(png, NULL); /* as OpenCV: the file must be complete through IEND */
  img->w = (int)w;
  img->h = (int)h;
  img->c = c;
  return 0;
}

static int pngio_write_body(png_structp png, png_infop info, pngio *x) {
  const dd_image *img = x->img;
  png_set_write_fn(png, x, pngio_write, pngio_flush);
  png_set_IHDR(png, info, (png_uint_32)img->w, (png_uint_32)img->h, 8,
               img->c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  if (img->c == 3) png_set_bgr(png);
  size_t row = (size_t)img->w * (size_t)img->c;
  for (int y = 0; y < img->h; y++) png_write_row(png, img->px + row * (size_t)y);
  png_write_end(png, NULL);
  return 0;
}

/* The only frame with a setjmp: it calls one function and touches nothing else afterwards. */
static int pngio_guard(int (*body)(png_structp, png_infop, pngio *), png_structp png,
                       png_infop info, pngio *x) {
  if (setjmp(png_jmpbuf(png))) return x->code;
  return body(png, info, x);
}

static int decode_png(dd_image *img, const uint8_t *buf, size_t len, int channels,
                      const char *name, char *err, size_t errlen) {
  pngio x = {.in = buf, .in_len = len, .img = img, .channels = channels, .code = DD_ECORRUPT};
  png_structp png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, &x, pngio_error, pngio_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!info) {
    png_destroy_read_struct(&png, NULL, NULL);
    return dd_errorf(DD_ENOMEM, err, errlen, "%s: out of memory starting libpng", name);
  }
  int r = pngio_guard(pngio_read_body, png, info, &x);
  png_destroy_read_struct(&png, &info, NULL);
  if (r != 0) return dd_errorf(r, err, errlen, "%s: %s", name, x.msg);
  return 0;
}

/* ---- public ---------------------------------------------------------------------------------- */

static const char *other_format(const uint8_t *b, size_t len) {
  if (len >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0)) return "GIF";
  if (len >= 2 && b[0] == 'B' && b[1] == 'M') return "BMP";
  if (len >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0) return "WebP";
  if (len >= 4 && (memcmp(b, "II*\0", 4) == 0 || memcmp(b, "MM\0*", 4) == 0)) return "TIFF";
  return NULL;
}

int dd_image_decode(dd_image *img, const uint8_t *buf, size_t len, int channels, const char *name,
                    char *err, size_t errlen) {
  img->w = img->h = img->c = 0;
  if (!name) name = "image";
  if (channels != 0 && channels != 1 && channels != 3)
    return dd_errorf(DD_EINVAL, err, errlen, "%s: channels must be 0, 1 or 3, not %d", name,
                     channels);
  if (len == 0 || !buf) return dd_errorf(DD_ECORRUPT, err, errlen, "%s: empty file", name);
  if (len >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff)
    return decode_jpeg(img, buf, len, channels, name, err, errlen);
  if (len >= sizeof png_magic && memcmp(buf, png_magic, sizeof png_magic) == 0)
    return decode_png(img, buf, len, channels, name, err, errlen);
  const char *other = other_format(buf, len);
  if (other)
    return dd_errorf(DD_ECORRUPT, err, errlen, "%s: not a JPEG or PNG file (looks like %s)", name,
                     other);
  if ((len >= 2 && buf[0] == 0xff && buf[1] == 0xd8) ||
      (len < sizeof png_magic && memcmp(buf, png_magic, len) == 0))
    return dd_errorf(DD_ECORRUPT, err, errlen, "%s: truncated %s", name,
                     buf[0] == 0xff ? "JPEG" : "PNG");
  return dd_errorf(DD_ECORRUPT, err, errlen, "%s: not a JPEG or PNG file", name);
}

void dd_image_free(dd_image *img) {
  if (!img) return;
  free(img->px);
  if (img->tj__) tjDestroy(img->tj__);
  memset(img, 0, sizeof *img);
}

static int check_source(const dd_image *img, char *err, size_t errlen) {
  if (!img || !img->px || (img->c != 1 && img->c != 3) || too_large(img->w, img->h))
    return dd_errorf(DD_EINVAL, err, errlen, "encode: need a non-empty 1- or 3-channel image");
  return 0;
}

int dd_image_encode_png(uint8_t **out, size_t *out_len, const dd_image *img, char *err,
                        size_t errlen) {
  *out = NULL;
  *out_len = 0;
  int r = check_source(img, err, errlen);
  if (r) return r;
  pngio x = {.img = (dd_image *)(uintptr_t)img, .code = DD_EIO};
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, &x, pngio_error, pngio_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!info) {
    png_destroy_write_struct(&png, NULL);
    return dd_errorf(DD_ENOMEM, err, errlen, "encode PNG: out of memory starting libpng");
  }
  r = pngio_guard(pngio_write_body, png, info, &x);
  png_destroy_write_struct(&png, &info);
  if (r != 0) {
    free(x.out);
    return dd_errorf(r, err, errlen, "encode PNG: %s", x.msg);
  }
  *out = x.out;
  *out_len = x.out_len;
  return 0;
}

int dd_image_encode_jpeg(uint8_t **out, size_t *out_len, const dd_image *img, int quality,
                         char *err, size_t errlen) {
  *out = NULL;
  *out_len = 0;
  int r = check_source(img, err, errlen);
  if (r) return r;
  if (quality < 1 || quality > 100)
    return dd_errorf(DD_EINVAL, err, errlen, "encode JPEG: quality %d is not in 1..100", quality);
  int samp = img->c == 3 ? TJSAMP_444 : TJSAMP_GRAY;
  unsigned long cap = tjBufSize(img->w, img->h, samp);
  if (cap == (unsigned long)-1)
    return dd_errorf(DD_EINVAL, err, errlen, "encode JPEG: %dx%d is too large", img->w, img->h);
  /* A worst-case buffer of our own and NOREALLOC: the result is plain malloc'ed memory. */
  unsigned char *buf = malloc(cap);
  if (!buf) return dd_errorf(DD_ENOMEM, err, errlen, "encode JPEG: out of memory");
  tjhandle tj = tjInitCompress();
  if (!tj) {
    free(buf);
    return dd_errorf(DD_ENOMEM, err, errlen, "encode JPEG: %s", tjGetErrorStr2(NULL));
  }
  unsigned long len = cap;
  if (tjCompress2(tj, img->px, img->w, 0, img->h, img->c == 3 ? TJPF_BGR : TJPF_GRAY, &buf, &len,
                  samp, quality, TJFLAG_NOREALLOC | TJFLAG_ACCURATEDCT) != 0) {
    r = dd_errorf(DD_EIO, err, errlen, "encode JPEG: %s", tjGetErrorStr2(tj));
    tjDestroy(tj);
    free(buf);
    return r;
  }
  tjDestroy(tj);
  uint8_t *shrunk = realloc(buf, len ? len : 1);
  *out = shrunk ? shrunk : buf;
  *out_len = len;
  return 0;
}
