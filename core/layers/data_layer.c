/* Data (Caffe's DataLayer): batches of Datum records from an LMDB or LevelDB (data_param.source,
 * backend, batch_size, rand_skip, prefetch), transformed by transform_param (crop_size, mirror,
 * scale, mean_file or mean_value, force_color / force_gray for encoded records), read ahead of
 * the trainer by the pipeline in core/data/db_data.c. Tops: data (batch, C, H, W), with C, H and W
 * from the first record as Caffe infers them, and optionally label (batch). The batches are host
 * buffers uploaded through the backend, as ImageData's are, so every backend runs it. */
#include "base/dd_error.h"
#include "data/db_data.h"
#include "net/layer.h"

static int data_shape(dd_shape_ctx *c) {
  int dims[3];
  if (dd_db_data_probe(c->lp, dims, c->err, c->errlen)) return DD_ESHAPE;
  int64_t n = c->lp->data_param->batch_size;
  c->tops[0] = dd_shape_4(n, dims[0], dims[1], dims[2]);
  if (c->nt > 1) c->tops[1] = dd_shape_make(1, &n);
  return 0;
}

typedef struct {
  dd_db_data *src;
} data_priv;

static int data_setup(dd_layer *l, char *err, size_t errlen) {
  data_priv *dp = l->priv;
  const Caffe__DataParameter *p = l->lp->data_param;
  const dd_shape *s = &l->top[0]->shape;
  if (dp->src) return 0; /* already running; the shapes are fixed */
  dd_db_data_config cfg = {.batch = (int)s->dims[0], .channels = (int)s->dims[1], .height = (int)s->dims[2],
                           .width = (int)s->dims[3], .train = l->phase == CAFFE__PHASE__TRAIN, .seed = l->seed,
                           .prefetch = (int)p->prefetch, .be = l->be};
  return dd_db_data_open(&dp->src, l->lp, &cfg, err, errlen);
}

static void data_forward(dd_layer *l) {
  data_priv *dp = l->priv;
  const float *data, *labels;
  double wait = 0;
  int r = dd_db_data_next(dp->src, &data, &labels, &wait, l->status_msg, l->status_len);
  *l->data_wait_ms += wait;
  if (r) {
    *l->status = r;
    return;
  }
  l->be->ops->upload(l->be, l->top[0]->data, data, (size_t)l->top[0]->count * sizeof(float));
  if (l->nt > 1) l->be->ops->upload(l->be, l->top[1]->data, labels, (size_t)l->top[1]->count * sizeof(float));
}

static void data_destroy(dd_layer *l) {
  data_priv *dp = l->priv;
  dd_db_data_close(dp->src);
}

const dd_layer_ops dd_layer_data = {
    .type = "Data", .min_bottoms = 0, .max_bottoms = 0, .min_tops = 1, .max_tops = 2,
    .shape = data_shape, .priv_size = sizeof(data_priv), .setup = data_setup,
    .forward = data_forward, .destroy = data_destroy};
