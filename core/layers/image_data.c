/* ImageData: batches of images from a list file (`path label` lines), decoded and transformed
 * ahead of the trainer by the pipeline in core/data.c. Tops: data (N, C, H, W) and label (N). H
 * and W are known before reading any image only when a crop or a resize fixes them, and the net
 * needs them known: set crop_size or new_height/new_width. */
#include "data/data.h"
#include "base/dd_error.h"
#include "net/layer.h"

static int image_data_shape(dd_shape_ctx *c) {
  const Caffe__ImageDataParameter *p = c->lp->image_data_param;
  const Caffe__TransformationParameter *t = c->lp->transform_param;
  if (!p || !p->source || !p->source[0])
    return dd_shape_fail(c, "image_data_param { source: \"LIST.txt\" } is required");
  int64_t n = p->batch_size;
  if (n <= 0) return dd_shape_fail(c, "image_data_param.batch_size must be > 0");
  int gray = t && t->force_gray, color = t && t->force_color;
  if (gray && color) return dd_shape_fail(c, "transform_param sets both force_color and force_gray");
  int64_t ch = color ? 3 : gray ? 1 : (p->is_color ? 3 : 1);
  int64_t crop = t && t->crop_size ? t->crop_size : p->crop_size;
  if (t && t->mean_file && t->n_mean_value)
    return dd_shape_fail(c, "transform_param: give mean_file or mean_value, not both");
  if (t && t->n_mean_value != 0 && t->n_mean_value != 1 && (int64_t)t->n_mean_value != ch)
    return dd_shape_fail(c, "transform_param has %zu mean_value entries for %d channels: give 1 or %d",
                         t->n_mean_value, (int)ch, (int)ch);
  if ((p->new_height == 0) != (p->new_width == 0))
    return dd_shape_fail(c, "image_data_param: set new_height and new_width together");
  if (crop > 0)
    c->tops[0] = dd_shape_4(n, ch, crop, crop);
  else if (p->new_height > 0)
    c->tops[0] = dd_shape_4(n, ch, p->new_height, p->new_width);
  else
    c->tops[0] = dd_shape_unknown();
  if (c->nt > 1) c->tops[1] = dd_shape_make(1, &n);
  return 0;
}

typedef struct {
  dd_data *src;
} image_data_priv;

static int image_data_setup(dd_layer *l, char *err, size_t errlen) {
  image_data_priv *ip = l->priv;
  const Caffe__ImageDataParameter *p = l->lp->image_data_param;
  const dd_shape *s = &l->top[0]->shape;
  if (ip->src) return 0; /* already running; the shapes are fixed */
  dd_data_config cfg = {.batch = (int)s->dims[0], .channels = (int)s->dims[1], .height = (int)s->dims[2],
                        .width = (int)s->dims[3], .train = l->phase == CAFFE__PHASE__TRAIN, .seed = l->seed,
                        .threads = (int)p->decode_threads, .prefetch = (int)p->prefetch,
                        .max_error_fraction = p->max_error_fraction, .be = l->be};
  return dd_data_open(&ip->src, l->lp, &cfg, err, errlen);
}

static void image_data_forward(dd_layer *l) {
  image_data_priv *ip = l->priv;
  const float *data, *labels;
  double wait = 0;
  int r = dd_data_next(ip->src, &data, &labels, &wait, l->status_msg, l->status_len);
  *l->data_wait_ms += wait;
  *l->data_errors = dd_data_errors(ip->src);
  if (r) {
    *l->status = r;
    return;
  }
  l->be->ops->upload(l->be, l->top[0]->data, data, (size_t)l->top[0]->count * sizeof(float));
  if (l->nt > 1) l->be->ops->upload(l->be, l->top[1]->data, labels, (size_t)l->top[1]->count * sizeof(float));
}

static void image_data_destroy(dd_layer *l) {
  image_data_priv *ip = l->priv;
  dd_data_close(ip->src);
}

const dd_layer_ops dd_layer_image_data = {
    .type = "ImageData", .min_bottoms = 0, .max_bottoms = 0, .min_tops = 1, .max_tops = 2,
    .shape = image_data_shape, .priv_size = sizeof(image_data_priv), .setup = image_data_setup,
    .forward = image_data_forward, .destroy = image_data_destroy};
