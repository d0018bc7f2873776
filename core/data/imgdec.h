/* Image decoding and encoding in memory for the image-data pipeline: JPEG through libjpeg-turbo's
 * TurboJPEG API, PNG through libpng. The decoder produces what Caffe's ImageData layer gets from
 * OpenCV's cv::imread: 8-bit pixels in HWC order, colour as BGR, alpha dropped.
 *
 * Format detection uses the magic bytes, never a file name. Every input is safe to decode: bad
 * data gives DD_ECORRUPT with a message, never a crash, and absurd declared sizes are refused
 * before anything is allocated. The functions are thread-safe as long as each thread decodes into
 * its own dd_image (a dd_image caches a JPEG decompressor, so it must not be shared between
 * threads that decode at the same time). */
#ifndef DD_IMGDEC_H
#define DD_IMGDEC_H

#include <stddef.h>
#include <stdint.h>

/* Images with more pixels than this (w * h) are refused as corrupt before any allocation. */
#define DD_IMAGE_MAX_PIXELS ((int64_t)1 << 26)

/* A decoded image: `px` holds h rows of w pixels of c bytes, (H, W, C) with C = 1 (gray) or
 * 3 (B, G, R: Caffe's and OpenCV's order), rows packed without padding. `px` has `cap` bytes and is
 * reused by the next decode into the same dd_image, grown when needed (never shrunk), so a decode
 * thread allocates nothing in steady state. Zero-initialise (`dd_image img = {0};`) before the
 * first use; release with dd_image_free(). `tj__` is internal: a TurboJPEG decompressor created by
 * the first JPEG decode and reused by later ones. */
typedef struct dd_image {
  int w, h, c;  /* width, height (pixels), channels (1 or 3) */
  uint8_t *px;  /* (H, W, C), owned by the dd_image */
  size_t cap;   /* bytes allocated at px */
  void *tj__;   /* internal: cached TurboJPEG handle or NULL */
} dd_image;

/* Decodes the JPEG or PNG image of `len` bytes at `buf` into `img` (format from the magic bytes).
 *
 * `channels`: 3 = colour in BGR order (gray files are expanded to B = G = R); 1 = gray with the
 * weights Y = 0.299 R + 0.587 G + 0.114 B, computed as OpenCV's imread(IMREAD_GRAYSCALE) does so
 * the bytes are the same: a colour PNG through libpng's rgb_to_gray (15-bit fixed point,
 * truncated: up to 1 below the rounded value), a colour JPEG as its decoded luma plane (the
 * encoder applied the same weights), a CMYK JPEG converted to BGR and then rounded in 14-bit
 * fixed point; 0 = as stored (1 for gray and gray+alpha files, 3 for everything else).
 *
 * Like OpenCV's IMREAD_COLOR / IMREAD_GRAYSCALE (and checked byte for byte against OpenCV 4.6 on
 * every PNG colour type and bit depth, with and without tRNS, and on baseline, progressive, gray
 * and CMYK JPEGs with 4:2:0, 4:2:2, 4:4:0 and 4:4:4 chroma): an alpha channel (or a tRNS
 * transparency) is dropped without compositing, 16-bit PNG samples keep their high byte
 * (libpng's strip_16, as OpenCV does; v >> 8, not a rounded v * 255 / 65535), palettes are
 * expanded, no gamma or ICC colour correction is applied, and CMYK/YCCK JPEGs are converted to BGR
 * with OpenCV's formula.
 *
 * Strictness: a JPEG that libjpeg decodes only with a warning (truncated data, a premature end of
 * a segment, a bad Huffman code, ...) is refused, where OpenCV prints the warning and returns the
 * damaged image. A PNG must be complete up to its IEND chunk, and a CRC error in a critical chunk
 * is an error (libpng's defaults; a bad CRC on an ancillary chunk only drops that chunk).
 *
 * `name` (may be NULL) only appears in messages. Returns 0 with img->w, h, c and px set;
 * DD_ECORRUPT ("NAME: not a JPEG or PNG file", "NAME: truncated JPEG (...)", "NAME: image too
 * large: WxH", or libjpeg's / libpng's own message after "NAME: "); DD_ENOMEM; DD_EINVAL for a bad
 * `channels`. On failure img->w, h and c are 0 and its buffer stays allocated for reuse. */
int dd_image_decode(dd_image *img, const uint8_t *buf, size_t len, int channels, const char *name,
                    char *err, size_t errlen);

/* Frees what `img` holds and zeroes it (it may be used again). */
void dd_image_free(dd_image *img);

/* Encodes `img` (c = 1 gray or 3 BGR) as an 8-bit PNG (gray, or RGB as PNG stores colour) into a
 * new malloc'ed buffer: *out (the caller frees it with free()), *out_len bytes. Returns 0,
 * DD_EINVAL (bad image), DD_ENOMEM or DD_EIO (libpng's message). */
int dd_image_encode_png(uint8_t **out, size_t *out_len, const dd_image *img, char *err,
                        size_t errlen);

/* Encodes `img` (c = 1 gray or 3 BGR) as a baseline JPEG at `quality` (1..100) with 4:4:4 chroma
 * (no subsampling) for colour, into a new malloc'ed buffer (the caller frees *out with free()).
 * Returns 0, DD_EINVAL, DD_ENOMEM or DD_EIO (TurboJPEG's message). */
int dd_image_encode_jpeg(uint8_t **out, size_t *out_len, const dd_image *img, int quality,
                         char *err, size_t errlen);

#endif
