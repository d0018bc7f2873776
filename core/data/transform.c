/* Image transforms (see transform.h). */
#define _POSIX_C_SOURCE 200809L
#include "data/transform.h"

#include <math.h>
#include <string.h>

#include "base/dd_error.h"

int dd_transform_init(dd_transform *t, const Caffe__LayerParameter *lp, int channels, int out_h, int out_w,
                      int train, char *err, size_t errlen) {
  const Caffe__TransformationParameter *tp = lp->transform_param;
  const Caffe__ImageDataParameter *ip = lp->image_data_param;
  memset(t, 0, sizeof *t);
  t->channels = channels;
  t->out_h = out_h;
  t->out_w = out_w;
  t->train = train;
  t->new_h = ip ? (int)ip->new_height : 0;
  t->new_w = ip ? (int)ip->new_width : 0;
  int crop = tp && tp->crop_size ? (int)tp->crop_size : ip ? (int)ip->crop_size : 0;
  t->crop_h = t->crop_w = crop;
  t->pad = tp ? (int)tp->pad : 0;
  t->mirror = (tp && tp->mirror) || (ip && ip->mirror);
  t->scale = tp && tp->has_scale ? tp->scale : ip && ip->has_scale ? ip->scale : 1.0f;
  if (tp) {
    if (tp->n_mean_value > 4 || (tp->n_mean_value > 1 && (int)tp->n_mean_value != channels))
      return dd_errorf(DD_EINVAL, err, errlen, "transform_param has %zu mean_value entries for %d channels",
                       tp->n_mean_value, channels);
    t->n_mean_values = (int)tp->n_mean_value;
    for (size_t i = 0; i < tp->n_mean_value; i++) t->mean_values[i] = tp->mean_value[i];
    t->brightness = tp->brightness;
    t->contrast = tp->contrast;
    t->color = tp->color && channels == 3;
    t->brightness_delta = tp->brightness_delta;
    t->contrast_delta = tp->contrast_delta;
    t->color_delta = tp->color_delta;
  }
  if (t->pad && !crop)
    return dd_errorf(DD_EINVAL, err, errlen, "transform_param.pad needs a crop_size (pad, then crop back to size)");
  if (crop && (crop != out_h || crop != out_w))
    return dd_errorf(DD_EINVAL, err, errlen, "crop_size %d does not match the output %dx%d", crop, out_h, out_w);
  return 0;
}

/* Scratch: the resized image (uint8) and the crop in float. */
size_t dd_transform_scratch_size(const dd_transform *t, int w, int h) {
  size_t rh = t->new_h ? (size_t)t->new_h : (size_t)h, rw = t->new_w ? (size_t)t->new_w : (size_t)w;
  size_t resized = t->new_h ? rh * rw * (size_t)t->channels : 0;
  size_t crop = (size_t)t->channels * (size_t)t->out_h * (size_t)t->out_w * sizeof(float);
  return ((resized + 63) & ~(size_t)63) + crop;
}

/* Source sample positions of destination index i along one axis (OpenCV's INTER_LINEAR geometry:
 * pixel centres aligned, clamped at the borders): the left neighbour, the right one and the
 * weight of the right one. */
static void bilinear_axis(int i, double scale, int n, int *i0, int *i1, double *w) {
  double f = (i + 0.5) * scale - 0.5;
  int a = (int)floor(f);
  double wt = f - a;
  if (a < 0 || a >= n - 1) {
    a = a < 0 ? 0 : n - 1;
    wt = 0;
  }
  *i0 = a;
  *i1 = a + 1 < n ? a + 1 : n - 1;
  *w = wt;
}

/* Bilinear resize with OpenCV's INTER_LINEAR geometry (pixel centres aligned), rounded to uint8. */
static void resize_bilinear(uint8_t *dst, int dw, int dh, const uint8_t *src, int sw, int sh, int c) {
  double sx = (double)sw / dw, sy = (double)sh / dh;
  for (int y = 0; y < dh; y++) {
    int y0, y1;
    double wy;
    bilinear_axis(y, sy, sh, &y0, &y1, &wy);
    for (int x = 0; x < dw; x++) {
      int x0, x1;
      double wx;
      bilinear_axis(x, sx, sw, &x0, &x1, &wx);
      for (int k = 0; k < c; k++) {
        double v = (1 - wy) * ((1 - wx) * src[((size_t)y0 * sw + x0) * c + k] + wx * src[((size_t)y0 * sw + x1) * c + k]) +
                   wy * ((1 - wx) * src[((size_t)y1 * sw + x0) * c + k] + wx * src[((size_t)y1 * sw + x1) * c + k]);
        int iv = (int)lround(v);
        dst[((size_t)y * dw + x) * c + k] = (uint8_t)(iv < 0 ? 0 : iv > 255 ? 255 : iv);
      }
    }
  }
}

static float clamp255(float v) { return v < 0 ? 0 : v > 255 ? 255 : v; }

/* Uniform integer in [0, n). */
static int rand_below(dd_rng *r, int n) { return n <= 1 ? 0 : (int)(dd_rng_next(r) % (uint64_t)n); }
/* Uniform in [lo, hi). */
static float rand_range(dd_rng *r, float lo, float hi) { return lo + (hi - lo) * dd_rng_uniform(r); }

/* The crop window in the padded image: offsets (random in TRAIN, centred in TEST) and mirror. */
static void crop_window(const dd_transform *t, int H, int W, int ch, int cw, dd_rng *rng, int *h_off, int *w_off,
                        int *mirror) {
  *mirror = 0;
  if (t->train) {
    *h_off = rand_below(rng, H - ch + 1);
    *w_off = rand_below(rng, W - cw + 1);
    if (t->mirror) *mirror = (int)(dd_rng_next(rng) & 1);
  } else {
    *h_off = (H - ch) / 2;
    *w_off = (W - cw) / 2;
  }
}

/* Checks the (padded) image against the crop and the output size. */
static int check_size(const dd_transform *t, int w, int h, int *ch, int *cw, char *err, size_t errlen) {
  const int H = h + 2 * t->pad, W = w + 2 * t->pad;
  *ch = t->crop_h ? t->crop_h : h;
  *cw = t->crop_w ? t->crop_w : w;
  if (*ch > H || *cw > W)
    return dd_errorf(DD_ESHAPE, err, errlen, "the image is %dx%d, smaller than the %dx%d crop", w, h, *cw, *ch);
  if (*ch != t->out_h || *cw != t->out_w)
    return dd_errorf(DD_ESHAPE, err, errlen, "the image is %dx%d but the batch holds %dx%d images (set crop_size or new_height/new_width)",
                     w, h, t->out_w, t->out_h);
  return 0;
}

/* Jitter (TRAIN), then (pixel - mean) * scale from `crop` (C, ch, cw) into `out`, the mean image
 * read at the source (unmirrored) position of the crop window. */
static void finish(const dd_transform *t, float *out, float *crop, int ch, int cw, int h_off, int w_off, int mirror,
                   dd_rng *rng) {
  const int C = t->channels;
  size_t plane = (size_t)ch * cw;
  if (t->train && t->brightness) {
    float d = rand_range(rng, -t->brightness_delta, t->brightness_delta);
    for (size_t i = 0; i < plane * C; i++) crop[i] = clamp255(crop[i] + d);
  }
  if (t->train && t->contrast) {
    float a = rand_range(rng, 1 - t->contrast_delta, 1 + t->contrast_delta);
    double m = 0;
    for (size_t i = 0; i < plane; i++)
      m += C == 3 ? 0.114 * crop[i] + 0.587 * crop[plane + i] + 0.299 * crop[2 * plane + i] : crop[i];
    float mean = (float)(m / (double)plane);
    for (size_t i = 0; i < plane * C; i++) crop[i] = clamp255((crop[i] - mean) * a + mean);
  }
  if (t->train && t->color) {
    float s = rand_range(rng, 1 - t->color_delta, 1 + t->color_delta);
    for (size_t i = 0; i < plane; i++) {
      float g = 0.114f * crop[i] + 0.587f * crop[plane + i] + 0.299f * crop[2 * plane + i];
      for (int c = 0; c < 3; c++) crop[c * plane + i] = clamp255(g + s * (crop[c * plane + i] - g));
    }
  }
  for (int c = 0; c < C; c++)
    for (int y = 0; y < ch; y++)
      for (int x = 0; x < cw; x++) {
        float m = 0;
        if (t->mean_image) {
          int my = h_off + y - t->pad, mx = w_off + (mirror ? cw - 1 - x : x) - t->pad;
          my = my < 0 ? 0 : my >= t->mean_h ? t->mean_h - 1 : my;
          mx = mx < 0 ? 0 : mx >= t->mean_w ? t->mean_w - 1 : mx;
          m = t->mean_image[((size_t)c * t->mean_h + my) * t->mean_w + mx];
        } else if (t->n_mean_values) {
          m = t->mean_values[t->n_mean_values == 1 ? 0 : c];
        }
        size_t i = ((size_t)c * ch + y) * cw + x;
        out[i] = (crop[i] - m) * t->scale;
      }
}

/* The crop window (with padding and mirror) of an image into `crop` as floats in pixel units,
 * then finish(): element (c, y, x) of the image is at y * sy + x * sx + c * sc of u8 (or of f32
 * when u8 is NULL), so one loop reads HWC pixels and CHW Datum planes alike. */
static int crop_and_finish(const dd_transform *t, float *out, const uint8_t *u8, const float *f32, int w, int h,
                           size_t sx, size_t sy, size_t sc, float *crop, dd_rng *rng, char *err, size_t errlen) {
  int ch, cw, h_off, w_off, mirror;
  int r = check_size(t, w, h, &ch, &cw, err, errlen);
  if (r) return r;
  crop_window(t, h + 2 * t->pad, w + 2 * t->pad, ch, cw, rng, &h_off, &w_off, &mirror);
  for (int c = 0; c < t->channels; c++)
    for (int y = 0; y < ch; y++) {
      int iy = h_off + y - t->pad;
      float *row = crop + ((size_t)c * ch + y) * cw;
      for (int x = 0; x < cw; x++) {
        int ix = w_off + (mirror ? cw - 1 - x : x) - t->pad;
        size_t si = (size_t)iy * sy + (size_t)ix * sx + (size_t)c * sc;
        row[x] = (iy < 0 || iy >= h || ix < 0 || ix >= w) ? 0.0f : u8 ? (float)u8[si] : f32[si];
      }
    }
  finish(t, out, crop, ch, cw, h_off, w_off, mirror, rng);
  return 0;
}

int dd_transform_apply(const dd_transform *t, float *out, const uint8_t *px, int w, int h, dd_rng *rng,
                       void *scratch, char *err, size_t errlen) {
  const int C = t->channels;
  const uint8_t *img = px;
  size_t resized_bytes = 0;
  if (t->new_h && t->new_w && (t->new_h != h || t->new_w != w)) {
    resize_bilinear(scratch, t->new_w, t->new_h, px, w, h, C);
    img = scratch;
    resized_bytes = (size_t)t->new_h * t->new_w * C;
    w = t->new_w;
    h = t->new_h;
  }
  float *crop = (float *)((char *)scratch + ((resized_bytes + 63) & ~(size_t)63));
  return crop_and_finish(t, out, img, NULL, w, h, (size_t)C, (size_t)w * C, 1, crop, rng, err, errlen);
}

int dd_transform_apply_chw(const dd_transform *t, float *out, const uint8_t *u8, const float *f32, int w, int h,
                           dd_rng *rng, void *scratch, char *err, size_t errlen) {
  return crop_and_finish(t, out, u8, f32, w, h, 1, (size_t)w, (size_t)h * w, scratch, rng, err, errlen);
}
