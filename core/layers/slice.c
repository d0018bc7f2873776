/* Slice (Caffe): cuts bottom 0 along `axis` (or the deprecated `slice_dim`, not negative) into the
 * tops, at the increasing `slice_point`s (one fewer than the tops), or into equal parts when no
 * point is given. Each top is a strided row copy (copy_rows); backward copies the tops' diffs
 * back into their places (together they cover the bottom, so its diff is overwritten). Caffe
 * shares the memory when there is a single top; distilld copies it. */
#include "base/dd_error.h"
#include "net/layer.h"

static int slice_axis(dd_shape_ctx *c, const dd_shape *b, int *axis) {
  const Caffe__SliceParameter *p = c->lp->slice_param;
  if (p && p->has_axis && p->has_slice_dim)
    return dd_shape_fail(c, "slice_param: give either axis or slice_dim, not both");
  if (p && p->has_slice_dim) {
    if (p->slice_dim >= (uint32_t)b->ndim)
      return dd_shape_fail(c, "slice_param.slice_dim %u is out of range for a bottom with %d axes", p->slice_dim,
                           b->ndim);
    *axis = (int)p->slice_dim;
    return 0;
  }
  int want = p ? p->axis : 1;
  *axis = dd_shape_axis(b, want);
  if (*axis < 0)
    return dd_shape_fail(c, "slice_param.axis %d is out of range for a bottom with %d axes", want, b->ndim);
  return 0;
}

static int slice_shape(dd_shape_ctx *c) {
  const Caffe__SliceParameter *p = c->lp->slice_param;
  const dd_shape *b = &c->bottoms[0];
  size_t npts = p ? p->n_slice_point : 0;
  if (npts && npts != (size_t)c->nt - 1)
    return dd_shape_fail(c, "slice_param.slice_point is given %zu times for %d tops: give one fewer than the tops",
                         npts, c->nt);
  if (!dd_shape_known(b)) {
    for (int t = 0; t < c->nt; t++) c->tops[t] = dd_shape_unknown();
    return 0;
  }
  int a, r;
  if ((r = slice_axis(c, b, &a))) return r;
  int64_t dim = b->dims[a];
  for (int t = 0; t < c->nt; t++) c->tops[t] = *b;
  if (!npts) {
    if (dim % c->nt)
      return dd_shape_fail(c, "%d tops do not divide the slice axis %d (size %lld) evenly: give slice_point", c->nt,
                           a, (long long)dim);
    for (int t = 0; t < c->nt; t++) c->tops[t].dims[a] = dim / c->nt;
    return 0;
  }
  if ((int64_t)c->nt > dim)
    return dd_shape_fail(c, "%d tops are more than the slice axis %d's size %lld", c->nt, a, (long long)dim);
  int64_t prev = 0;
  for (size_t i = 0; i < npts; i++) {
    int64_t sp = p->slice_point[i];
    if (sp <= prev)
      return dd_shape_fail(c, "slice_param.slice_point %lld (number %zu) must be greater than %lld: the points must "
                           "increase from above 0", (long long)sp, i + 1, (long long)prev);
    if (sp > dim)
      return dd_shape_fail(c, "slice_param.slice_point %lld is past the end of the slice axis %d (size %lld)",
                           (long long)sp, a, (long long)dim);
    c->tops[i].dims[a] = sp - prev;
    prev = sp;
  }
  c->tops[npts].dims[a] = dim - prev;
  return 0;
}

/* (rows, bottom row length) around the slice axis: the bottom is (rows, brow) and each top
 * (rows, its own share of brow). */
static void dims(const dd_layer *l, int64_t *rows, int64_t *brow) {
  dd_shape_ctx c = {.lp = l->lp};
  int a = 0;
  slice_axis(&c, &l->bottom[0]->shape, &a);
  *rows = dd__count(l->bottom[0], 0, a);
  *brow = dd__count(l->bottom[0], a, l->bottom[0]->shape.ndim);
}

static void slice_pass(dd_layer *l, int backward) {
  int64_t rows, brow, off = 0;
  dims(l, &rows, &brow);
  for (int t = 0; t < l->nt; t++) {
    dd_tensor *top = l->top[t];
    int64_t trow = rows ? top->count / rows : 0;
    if (top != l->bottom[0] && trow > 0) {
      if (backward)
        l->be->ops->copy_rows(l->be, rows, trow, l->bottom[0]->diff + off, brow, top->diff, trow, 0);
      else
        l->be->ops->copy_rows(l->be, rows, trow, top->data, trow, l->bottom[0]->data + off, brow, 0);
    }
    off += trow;
  }
}

static void slice_forward(dd_layer *l) { slice_pass(l, 0); }
static void slice_backward(dd_layer *l) {
  if (l->propagate_down[0]) slice_pass(l, 1);
}

const dd_layer_ops dd_layer_slice = {
    .type = "Slice", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = -1,
    .shape = slice_shape, .forward = slice_forward, .backward = slice_backward};
