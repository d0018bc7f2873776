/* Tile (Caffe's TileLayer): the top repeats bottom 0's block from tile_param.axis (default 1) on,
 * tile_param.tiles times (required, > 0), along that axis. Backward sums the copies' gradients. */
#include "base/dd_error.h"
#include "net/layer.h"

static int tile_params(dd_shape_ctx *c, const dd_shape *b, int *axis, int64_t *tiles) {
  const Caffe__TileParameter *p = c->lp->tile_param;
  if (!p || !p->has_tiles) return dd_shape_fail(c, "tile_param.tiles is required");
  if (p->tiles <= 0) return dd_shape_fail(c, "tile_param.tiles %d must be > 0", p->tiles);
  *axis = dd_shape_axis(b, p->axis);
  if (*axis < 0) return dd_shape_fail(c, "tile_param.axis %d is out of range for a bottom with %d axes", p->axis, b->ndim);
  *tiles = p->tiles;
  return 0;
}

static int tile_shape(dd_shape_ctx *c) {
  const dd_shape *b = &c->bottoms[0];
  if (!dd_shape_known(b)) {
    if (!c->lp->tile_param || !c->lp->tile_param->has_tiles) return dd_shape_fail(c, "tile_param.tiles is required");
    c->tops[0] = dd_shape_unknown();
    return 0;
  }
  int axis = 0, r;
  int64_t tiles = 1;
  if ((r = tile_params(c, b, &axis, &tiles))) return r;
  dd_shape t = *b;
  t.dims[axis] = dd_count_mul(b->dims[axis], tiles);
  if (t.dims[axis] == DD_COUNT_OVERFLOW || dd_shape_count(&t) > DD_SHAPE_MAX_COUNT)
    return dd_shape_fail(c, "the tiled top would hold more than %lld elements", (long long)DD_SHAPE_MAX_COUNT);
  c->tops[0] = t;
  return 0;
}

/* (outer, inner, tiles): the bottom is (outer, inner), the top (outer, tiles * inner). */
static void dims(const dd_layer *l, int64_t *outer, int64_t *inner, int64_t *tiles) {
  const dd_tensor *b = l->bottom[0];
  int axis = dd_shape_axis(&b->shape, l->lp->tile_param->axis);
  *outer = dd__count(b, 0, axis);
  *inner = dd__count(b, axis, b->shape.ndim);
  *tiles = l->lp->tile_param->tiles;
}

static void tile_forward(dd_layer *l) {
  int64_t outer, inner, tiles;
  dims(l, &outer, &inner, &tiles);
  for (int64_t t = 0; t < tiles; t++)
    l->be->ops->copy_rows(l->be, outer, inner, l->top[0]->data + t * inner, tiles * inner, l->bottom[0]->data, inner, 0);
}

static void tile_backward(dd_layer *l) {
  if (!l->propagate_down[0]) return;
  int64_t outer, inner, tiles;
  dims(l, &outer, &inner, &tiles);
  for (int64_t t = 0; t < tiles; t++)
    l->be->ops->copy_rows(l->be, outer, inner, l->bottom[0]->diff, inner, l->top[0]->diff + t * inner, tiles * inner,
                          t > 0);
}

const dd_layer_ops dd_layer_tile = {
    .type = "Tile", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .shape = tile_shape, .forward = tile_forward, .backward = tile_backward};
