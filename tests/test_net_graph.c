/* Net graph and lints: Caffe's phase filtering, in-place wiring, backward analysis (which layers
 * need backward, which parameters actually learn), shape computation per layer type, and the lints
 * of `distilld check`, the seed's BatchNorm trap first. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>

#include "format/caffe_io.h"
#include "base/dd_error.h"
#include "net/net_check.h"
#include "net/net_graph.h"
#include "test.h"
#include "test_nets.h"
#include "format/textformat.h"

/* Builds the graph and diagnostics for `text` in `phase`. */
typedef struct {
  Caffe__NetParameter *net;
  dd_net_graph *g;
  dd_diags d;
} fixture;

static int fx_open(fixture *f, const char *text, Caffe__Phase phase) {
  memset(f, 0, sizeof *f);
  f->net = test_parse_net(text);
  if (!f->net) return -1;
  return dd_net_check(&f->g, f->net, phase, &f->d);
}

static void fx_close(fixture *f) {
  dd_net_graph_free(f->g);
  dd_diags_free(&f->d);
  if (f->net) caffe__net_parameter__free_unpacked(f->net, NULL);
}

static const dd_glayer *layer(const fixture *f, const char *name) {
  int i = dd_net_graph_find_layer(f->g, name);
  return i >= 0 ? &f->g->layers[i] : NULL;
}

/* First diagnostic of `level` whose message contains `needle` (and whose `where` is `where`, when
 * given). */
static const dd_diag *find_diag(const dd_diags *d, dd_diag_level level, const char *where, const char *needle) {
  for (size_t i = 0; i < d->n; i++)
    if (d->v[i].level == level && strstr(d->v[i].msg, needle) &&
        (!where || (d->v[i].where && !strcmp(d->v[i].where, where))))
      return &d->v[i];
  return NULL;
}

static void dump_diags(const dd_diags *d) {
  for (size_t i = 0; i < d->n; i++)
    fprintf(stderr, "  diag %d %s: %s\n", d->v[i].level, d->v[i].where ? d->v[i].where : "-", d->v[i].msg);
}

static void shape_is(const dd_shape *s, int ndim, ...) {
  char buf[64];
  va_list ap;
  va_start(ap, ndim);
  int ok = s->ndim == ndim;
  for (int i = 0; i < ndim && ok; i++) ok = s->dims[i] == va_arg(ap, int64_t);
  va_end(ap);
  CHECKF(ok, "shape is %s (ndim %d wanted)", dd_shape_str(s, buf, sizeof buf), ndim);
}
#define D(x) ((int64_t)(x))

#define INPUT4(n, c, h, w) \
  "layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: " #n " dim: " #c " dim: " #h " dim: " #w " } } }\n"
#define LABEL(n) "layer { name: 'label' type: 'Input' top: 'label' input_param { shape { dim: " #n " } } }\n"

/* ---- the seed ------------------------------------------------------------------------------ */

static void test_seed_phase_filter(void) {
  Caffe__NetParameter *n = test_read_net(DD_TEST_DATA "/seed/seed_net.prototxt");
  REQUIRE(n);
  dd_diags d = {0};
  dd_net_graph *g = NULL;
  REQUIRE(dd_net_graph_build(&g, n, CAFFE__PHASE__TRAIN, 0, NULL, 0, &d) == 0);
  CHECK(n->n_layer == 10);
  CHECK(g->n_layers == 9);
  CHECK(g->layers[0].param_index == 0); /* the TRAIN data layer */
  dd_net_graph_free(g);
  REQUIRE(dd_net_graph_build(&g, n, CAFFE__PHASE__TEST, 0, NULL, 0, &d) == 0);
  CHECK(g->n_layers == 9);
  CHECK(g->layers[0].param_index == 1); /* the TEST data layer */
  shape_is(&g->blobs[g->layers[0].top[0]].shape, 4, D(100), D(3), D(32), D(32));
  CHECK(d.n_errors == 0);
  dd_net_graph_free(g);
  dd_diags_free(&d);
  caffe__net_parameter__free_unpacked(n, NULL);
}

static void test_seed_trap_warns(void) {
  Caffe__NetParameter *n = test_read_net(DD_TEST_DATA "/seed/seed_net.prototxt");
  REQUIRE(n);
  dd_diags d = {0};
  dd_net_graph *g = NULL;
  REQUIRE(dd_net_check(&g, n, CAFFE__PHASE__TRAIN, &d) == 0);
  CHECK(d.n_errors == 0);
  CHECK(d.n_warnings == 1);
  const dd_diag *w = find_diag(&d, DD_DIAG_WARNING, "res2_1a_1_bn", "use_global_stats");
  REQUIRE(w);
  CHECK_CONTAINS(w->msg, "batch_norm_param { use_global_stats: true }");
  CHECK_CONTAINS(w->msg, "conv1 (lr_mult 0)");
  CHECK_CONTAINS(w->msg, "res2_1a_1_scale");
  CHECK_CONTAINS(w->msg, "no gradient reaches it");
  /* Nothing learns: the only loss has loss_weight 0 and propagate_down false everywhere. */
  for (size_t i = 0; i < g->n_layers; i++) {
    CHECKF(!g->layers[i].need_backward, "layer %s needs backward", g->layers[i].lp->name);
    for (int p = 0; p < g->layers[i].n_params; p++) CHECK(!g->layers[i].param_learns[p]);
  }
  /* The Scale's bias has no param spec, so lr_mult 1: it would learn if a gradient came. */
  int sc = dd_net_graph_find_layer(g, "res2_1a_1_scale");
  REQUIRE(sc >= 0);
  CHECK(g->layers[sc].n_params == 2);
  CHECK(g->layers[sc].lr_mult[0] == 0 && g->layers[sc].lr_mult[1] == 1);
  /* TEST phase: BatchNorm uses stored statistics by default: no warning. */
  dd_diags d2 = {0};
  dd_net_graph *g2 = NULL;
  REQUIRE(dd_net_check(&g2, n, CAFFE__PHASE__TEST, &d2) == 0);
  CHECK(d2.n_warnings == 0 && d2.n_errors == 0);
  dd_net_graph_free(g2);
  dd_diags_free(&d2);
  dd_net_graph_free(g);
  dd_diags_free(&d);
  caffe__net_parameter__free_unpacked(n, NULL);
}

/* The frozen teacher feeding a learning student: lr_mult 0 upstream, the Scale at lr_mult 0, but
 * gradients do flow through (the student learns), and the BatchNorm still moves. */
static void test_trap_with_gradient_flowing(void) {
  fixture f;
  REQUIRE(fx_open(&f,
                  INPUT4(4, 3, 8, 8) LABEL(4)
                  "layer { name: 't_conv' type: 'Convolution' bottom: 'data' top: 't_conv' param { lr_mult: 0 }"
                  "  convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }\n"
                  "layer { name: 't_bn' type: 'BatchNorm' bottom: 't_conv' top: 't_conv' }\n"
                  "layer { name: 't_scale' type: 'Scale' bottom: 't_conv' top: 't_conv' param { lr_mult: 0 } param { lr_mult: 0 }"
                  "  scale_param { bias_term: true } }\n"
                  "layer { name: 's_fc' type: 'InnerProduct' bottom: 't_conv' top: 's_fc' inner_product_param { num_output: 5 } }\n"
                  "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 's_fc' bottom: 'label' top: 'loss' }\n",
                  CAFFE__PHASE__TRAIN) == 0);
  const dd_glayer *fc = layer(&f, "s_fc"), *bn = layer(&f, "t_bn"), *conv = layer(&f, "t_conv");
  REQUIRE(fc && bn && conv);
  CHECK(fc->param_learns[0] && fc->param_learns[1]);
  CHECK(!fc->bottom_need_backward[0]); /* nothing below learns */
  CHECK(!conv->need_backward);
  CHECK(bn->bn_moves_stats);
  CHECK(find_diag(&f.d, DD_DIAG_WARNING, "t_bn", "use_global_stats") != NULL);
  CHECK(f.d.n_warnings == 1);
  fx_close(&f);
}

/* A normal student: BatchNorm in a learning part moves its statistics, as it should: no lint. */
static void test_learning_batchnorm_is_fine(void) {
  fixture f;
  REQUIRE(fx_open(&f,
                  INPUT4(4, 3, 8, 8) LABEL(4)
                  "layer { name: 'conv' type: 'Convolution' bottom: 'data' top: 'conv'"
                  "  convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }\n"
                  "layer { name: 'bn' type: 'BatchNorm' bottom: 'conv' top: 'conv' }\n"
                  "layer { name: 'scale' type: 'Scale' bottom: 'conv' top: 'conv' scale_param { bias_term: true } }\n"
                  "layer { name: 'fc' type: 'InnerProduct' bottom: 'conv' top: 'fc' inner_product_param { num_output: 5 } }\n"
                  "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n",
                  CAFFE__PHASE__TRAIN) == 0);
  CHECK(f.d.n_warnings == 0 && f.d.n_errors == 0);
  if (f.d.n) dump_diags(&f.d);
  const dd_glayer *conv = layer(&f, "conv");
  REQUIRE(conv);
  CHECK(conv->need_backward && conv->param_learns[0]);
  CHECK(!conv->bottom_need_backward[0]); /* Input data needs no gradient */
  /* BatchNorm's statistics never learn through the solver, whatever the spec says. */
  const dd_glayer *bn = layer(&f, "bn");
  REQUIRE(bn);
  CHECK(bn->n_params == 3 && bn->lr_mult[0] == 0 && bn->lr_mult[2] == 0);
  shape_is(&bn->param_shape[0], 1, D(4));
  shape_is(&bn->param_shape[2], 1, D(1));
  fx_close(&f);
}

static void test_explicit_false_in_test(void) {
  fixture f;
  REQUIRE(fx_open(&f,
                  INPUT4(2, 3, 4, 4)
                  "layer { name: 'bn' type: 'BatchNorm' bottom: 'data' top: 'bn' batch_norm_param { use_global_stats: false } }\n",
                  CAFFE__PHASE__TEST) == 0);
  CHECK(layer(&f, "bn")->bn_moves_stats);
  CHECK(find_diag(&f.d, DD_DIAG_WARNING, "bn", "even in TEST") != NULL);
  fx_close(&f);
}

/* ---- backward analysis --------------------------------------------------------------------- */

static void test_propagate_down_cuts_gradient(void) {
  fixture f;
  REQUIRE(fx_open(&f,
                  INPUT4(2, 3, 5, 5) LABEL(2)
                  "layer { name: 'conv' type: 'Convolution' bottom: 'data' top: 'conv' convolution_param { num_output: 2 kernel_size: 3 } }\n"
                  "layer { name: 'fc' type: 'InnerProduct' bottom: 'conv' top: 'fc' propagate_down: false inner_product_param { num_output: 3 } }\n"
                  "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n",
                  CAFFE__PHASE__TRAIN) == 0);
  const dd_glayer *conv = layer(&f, "conv"), *fc = layer(&f, "fc"), *loss = layer(&f, "loss");
  REQUIRE(conv && fc && loss);
  CHECK(fc->need_backward && fc->param_learns[0]);
  CHECK(!fc->bottom_need_backward[0]);
  CHECK(!conv->need_backward);
  CHECK(!conv->param_learns[0] && !conv->param_learns[1]);
  CHECK(loss->loss_weight[0] == 1.0f);
  CHECK(loss->bottom_need_backward[0] && !loss->bottom_need_backward[1]);
  shape_is(&f.g->blobs[conv->top[0]].shape, 4, D(2), D(2), D(3), D(3));
  shape_is(&fc->param_shape[0], 2, D(3), D(18));
  shape_is(&f.g->blobs[loss->top[0]].shape, 0);
  fx_close(&f);
}

static void test_loss_weight_zero_prunes(void) {
  fixture f;
  REQUIRE(fx_open(&f,
                  INPUT4(2, 3, 5, 5) LABEL(2)
                  "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' inner_product_param { num_output: 3 } }\n"
                  "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' loss_weight: 0 }\n",
                  CAFFE__PHASE__TRAIN) == 0);
  const dd_glayer *fc = layer(&f, "fc");
  REQUIRE(fc);
  CHECK(!fc->need_backward && !fc->param_learns[0] && !fc->contributes_loss);
  fx_close(&f);
  /* force_backward: every layer runs backward, but labels still get no gradient. */
  REQUIRE(fx_open(&f,
                  "force_backward: true\n" INPUT4(2, 3, 5, 5) LABEL(2)
                  "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' param { lr_mult: 0 } param { lr_mult: 0 } inner_product_param { num_output: 3 } }\n"
                  "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'fc' bottom: 'label' top: 'loss' }\n",
                  CAFFE__PHASE__TRAIN) == 0);
  fc = layer(&f, "fc");
  REQUIRE(fc);
  CHECK(fc->need_backward && fc->bottom_need_backward[0]);
  CHECK(!fc->param_learns[0]);
  CHECK(!layer(&f, "loss")->bottom_need_backward[1]);
  fx_close(&f);
}

static void test_in_place_and_producers(void) {
  fixture f;
  REQUIRE(fx_open(&f,
                  INPUT4(1, 2, 4, 4)
                  "layer { name: 'conv' type: 'Convolution' bottom: 'data' top: 'x' convolution_param { num_output: 2 kernel_size: 1 } }\n"
                  "layer { name: 'relu' type: 'ReLU' bottom: 'x' top: 'x' }\n"
                  "layer { name: 'drop' type: 'Dropout' bottom: 'x' top: 'x' }\n"
                  "layer { name: 'sum' type: 'Eltwise' bottom: 'x' bottom: 'data' top: 'y' }\n",
                  CAFFE__PHASE__TRAIN) == 0);
  CHECK(f.d.n_errors == 0);
  const dd_glayer *relu = layer(&f, "relu"), *drop = layer(&f, "drop"), *sum = layer(&f, "sum");
  REQUIRE(relu && drop && sum);
  CHECK(relu->top[0] == relu->bottom[0]);
  CHECK(drop->bottom_producer[0] == 2); /* relu wrote x last before drop */
  CHECK(sum->bottom_producer[0] == 3 && sum->bottom_producer[1] == 0);
  CHECK(f.g->n_blobs == 3);
  fx_close(&f);
}

/* ---- shapes -------------------------------------------------------------------------------- */

static void test_shapes_caffe_reference(void) {
  Caffe__NetParameter *n = test_read_net(DD_TEST_DATA "/caffe-reference/net_resblock.prototxt");
  REQUIRE(n);
  dd_diags d = {0};
  dd_net_graph *g = NULL;
  REQUIRE(dd_net_check(&g, n, CAFFE__PHASE__TRAIN, &d) == 0);
  CHECK(d.n_errors == 0);
  if (d.n) dump_diags(&d);
  int i;
  REQUIRE((i = dd_net_graph_find_layer(g, "conv1")) >= 0);
  shape_is(&g->blobs[g->layers[i].top[0]].shape, 4, D(2), D(6), D(5), D(5));
  shape_is(&g->layers[i].param_shape[0], 4, D(6), D(3), D(3), D(3));
  CHECK(g->layers[i].n_params == 1);
  REQUIRE((i = dd_net_graph_find_layer(g, "proj")) >= 0);
  shape_is(&g->blobs[g->layers[i].top[0]].shape, 4, D(2), D(6), D(5), D(5));
  CHECK(g->layers[i].n_params == 2);
  REQUIRE((i = dd_net_graph_find_layer(g, "pool1")) >= 0);
  shape_is(&g->blobs[g->layers[i].top[0]].shape, 4, D(2), D(6), D(3), D(3));
  REQUIRE((i = dd_net_graph_find_layer(g, "gpool")) >= 0);
  shape_is(&g->blobs[g->layers[i].top[0]].shape, 4, D(2), D(6), D(1), D(1));
  REQUIRE((i = dd_net_graph_find_layer(g, "fc")) >= 0);
  shape_is(&g->blobs[g->layers[i].top[0]].shape, 2, D(2), D(7));
  shape_is(&g->layers[i].param_shape[0], 2, D(7), D(6));
  /* force_backward: true in this net. */
  REQUIRE((i = dd_net_graph_find_layer(g, "conv1")) >= 0);
  CHECK(g->layers[i].need_backward && g->layers[i].bottom_need_backward[0]);

  /* Caffe's own weights fit the shapes. */
  Caffe__NetParameter *w = NULL;
  char err[512];
  REQUIRE_OK(dd_caffemodel_read(&w, DD_TEST_DATA "/caffe-reference/resblock/init.caffemodel", err, sizeof err), err);
  dd_diags wd = {0};
  CHECK(dd_net_check_weights(g, w, "init.caffemodel", &wd) == 0);
  CHECK(wd.n_errors == 0 && wd.n_warnings == 0);
  if (wd.n) dump_diags(&wd);
  dd_diags_free(&wd);
  /* A blob of the wrong shape is an error naming the layer and both shapes. */
  for (size_t k = 0; k < w->n_layer; k++)
    if (!strcmp(w->layer[k]->name, "fc")) w->layer[k]->blobs[0]->shape->dim[0] = 8;
  CHECK(dd_net_check_weights(g, w, "init.caffemodel", &wd) == 0);
  const dd_diag *e = find_diag(&wd, DD_DIAG_ERROR, "fc", "8x6");
  CHECK(e != NULL);
  if (e) CHECK_CONTAINS(e->msg, "7x6");
  dd_diags_free(&wd);
  caffe__net_parameter__free_unpacked(w, NULL);
  dd_net_graph_free(g);
  dd_diags_free(&d);
  caffe__net_parameter__free_unpacked(n, NULL);
}

static void test_pooling_sizes(void) {
  /* Caffe's ceil mode, and the rule that drops a last window starting inside the padding. */
  struct { int in, k, s, pad, round_floor, out; } cases[] = {
      {6, 3, 2, 0, 0, 3}, {5, 3, 2, 1, 0, 3}, {5, 2, 2, 1, 0, 3}, {7, 2, 2, 0, 0, 4},
      {7, 2, 2, 0, 1, 3}, {32, 3, 2, 1, 0, 17} /* floor mode (PyTorch) gives 16 */,
      {32, 3, 2, 1, 1, 16}, {4, 3, 1, 1, 0, 4}, {8, 8, 1, 0, 0, 1},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    char text[1024];
    snprintf(text, sizeof text,
             "layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 1 dim: 1 dim: %d dim: %d } } }\n"
             "layer { name: 'pool' type: 'Pooling' bottom: 'data' top: 'pool' pooling_param { pool: AVE kernel_size: %d stride: %d pad: %d%s } }\n",
             cases[c].in, cases[c].in, cases[c].k, cases[c].s, cases[c].pad, cases[c].round_floor ? " round_mode: FLOOR" : "");
    fixture f;
    REQUIRE(fx_open(&f, text, CAFFE__PHASE__TEST) == 0);
    const dd_glayer *p = layer(&f, "pool");
    REQUIRE(p);
    const dd_shape *s = &f.g->blobs[p->top[0]].shape;
    CHECKF(s->ndim == 4 && s->dims[2] == cases[c].out && s->dims[3] == cases[c].out,
           "case %zu: in %d k %d s %d pad %d: got %lld, want %d", c, cases[c].in, cases[c].k, cases[c].s,
           cases[c].pad, (long long)s->dims[2], cases[c].out);
    fx_close(&f);
  }
}

static void test_shapes_misc(void) {
  fixture f;
  REQUIRE(fx_open(&f,
                  INPUT4(2, 4, 6, 6)
                  "layer { name: 'c' type: 'Convolution' bottom: 'data' top: 'c' convolution_param { num_output: 6 group: 2 kernel_h: 3 kernel_w: 1 stride: 2 dilation: 2 pad_h: 2 pad_w: 0 } }\n"
                  "layer { name: 'cat' type: 'Concat' bottom: 'c' bottom: 'c' top: 'cat' }\n"
                  "layer { name: 'flat' type: 'Flatten' bottom: 'cat' top: 'flat' }\n"
                  "layer { name: 'sc' type: 'Scale' bottom: 'cat' top: 'sc' scale_param { axis: 1 num_axes: 2 bias_term: true } }\n"
                  "layer { name: 'ipt' type: 'InnerProduct' bottom: 'flat' top: 'ipt' inner_product_param { num_output: 3 transpose: true bias_term: false } }\n"
                  "layer { name: 'sm' type: 'Softmax' bottom: 'ipt' top: 'sm' }\n",
                  CAFFE__PHASE__TEST) == 0);
  CHECK(f.d.n_errors == 0);
  if (f.d.n) dump_diags(&f.d);
  const dd_glayer *c = layer(&f, "c");
  REQUIRE(c);
  /* H: (6 + 4 - (2*2+1)) / 2 + 1 = 3; W: (6 - (2*0+1)) / 2 + 1 = 3 */
  shape_is(&f.g->blobs[c->top[0]].shape, 4, D(2), D(6), D(3), D(3));
  shape_is(&c->param_shape[0], 4, D(6), D(2), D(3), D(1));
  shape_is(&f.g->blobs[layer(&f, "cat")->top[0]].shape, 4, D(2), D(12), D(3), D(3));
  shape_is(&f.g->blobs[layer(&f, "flat")->top[0]].shape, 2, D(2), D(108));
  shape_is(&layer(&f, "sc")->param_shape[0], 2, D(12), D(3));
  CHECK(layer(&f, "sc")->n_params == 2);
  shape_is(&layer(&f, "ipt")->param_shape[0], 2, D(108), D(3));
  CHECK(layer(&f, "ipt")->n_params == 1);
  fx_close(&f);
}

/* ---- errors Caffe would refuse ------------------------------------------------------------- */

static void expect_error(const char *text, const char *where, const char *needle) {
  fixture f;
  REQUIRE(fx_open(&f, text, CAFFE__PHASE__TRAIN) == 0);
  const dd_diag *e = find_diag(&f.d, DD_DIAG_ERROR, where, needle);
  CHECKF(e != NULL, "no error at %s containing \"%s\"", where ? where : "-", needle);
  if (!e) dump_diags(&f.d);
  fx_close(&f);
}

static void test_graph_errors(void) {
  expect_error(INPUT4(1, 1, 4, 4) "layer { name: 'r' type: 'ReLU' bottom: 'dta' top: 'r' }", "r",
               "bottom \"dta\" is not produced");
  expect_error(INPUT4(1, 1, 4, 4) "layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'r' }"
                                  "layer { name: 'q' type: 'ReLU' bottom: 'data' top: 'r' }",
               "q", "already produced");
  expect_error(INPUT4(1, 1, 4, 4) "layer { name: 'l' type: 'NoSuchLayer' bottom: 'data' top: 'l' }", "l",
               "unknown layer type \"NoSuchLayer\"");
  expect_error(INPUT4(1, 1, 4, 4) "layer { name: 'e' type: 'Eltwise' bottom: 'data' top: 'e' }", "e",
               "takes 2 or more bottom");
  expect_error(INPUT4(1, 1, 4, 4) "layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'r' propagate_down: true propagate_down: false }",
               "r", "propagate_down is given 2 times for 1 bottoms");
  expect_error(INPUT4(1, 1, 4, 4) "layer { name: 'bn' type: 'BatchNorm' bottom: 'data' top: 'bn' param { lr_mult: 1 } }",
               "bn", "statistics, not parameters");
  expect_error(INPUT4(1, 2, 4, 4) "layer { name: 'c' type: 'Convolution' bottom: 'data' top: 'c' convolution_param { num_output: 3 kernel_size: 3 } }"
                                  "layer { name: 'e' type: 'Eltwise' bottom: 'c' bottom: 'data' top: 'e' }",
               "e", "eltwise needs equal shapes");
  expect_error(INPUT4(1, 2, 4, 4) "layer { name: 'c' type: 'Convolution' bottom: 'data' top: 'c' convolution_param { kernel_size: 3 } }",
               "c", "num_output");
  expect_error(INPUT4(1, 2, 4, 4) "layer { name: 'c' type: 'Convolution' bottom: 'data' top: 'c' param { } param { } param { } convolution_param { num_output: 1 kernel_size: 3 } }",
               "c", "3 param { } specs given");
  expect_error(INPUT4(2, 5, 1, 1) LABEL(3)
               "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'data' bottom: 'label' top: 'loss' }",
               "loss", "label blob has 3 entries");
}

static void test_duplicate_names_warn(void) {
  fixture f;
  REQUIRE(fx_open(&f, INPUT4(1, 1, 4, 4) "layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'a' }"
                                         "layer { name: 'r' type: 'ReLU' bottom: 'a' top: 'b' }",
                  CAFFE__PHASE__TRAIN) == 0);
  CHECK(find_diag(&f.d, DD_DIAG_WARNING, "r", "two layers") != NULL);
  fx_close(&f);
}

static void test_weights_extra_and_legacy(void) {
  fixture f;
  REQUIRE(fx_open(&f, INPUT4(1, 2, 4, 4)
                  "layer { name: 'fc' type: 'InnerProduct' bottom: 'data' top: 'fc' inner_product_param { num_output: 3 } }",
                  CAFFE__PHASE__TRAIN) == 0);
  /* Legacy 4-D shapes: weight 1x1x3x32, bias 1x1x1x3 match (3, 32) and (3). */
  Caffe__NetParameter *w = test_parse_net(
      "layer { name: 'fc' blobs { num: 1 channels: 1 height: 3 width: 32 } blobs { num: 1 channels: 1 height: 1 width: 3 } }\n"
      "layer { name: 'old_fc' blobs { shape { dim: 2 } } }\n");
  REQUIRE(w);
  dd_diags d = {0};
  CHECK(dd_net_check_weights(f.g, w, "w.caffemodel", &d) == 0);
  CHECK(d.n_errors == 0);
  CHECK(find_diag(&d, DD_DIAG_WARNING, NULL, "\"old_fc\"") != NULL);
  dd_diags_free(&d);
  /* One blob where the net has two. */
  w->layer[0]->n_blobs = 1;
  CHECK(dd_net_check_weights(f.g, w, "w.caffemodel", &d) == 0);
  CHECK(find_diag(&d, DD_DIAG_ERROR, "fc", "holds 1 blob(s)") != NULL);
  w->layer[0]->n_blobs = 2;
  dd_diags_free(&d);
  caffe__net_parameter__free_unpacked(w, NULL);
  fx_close(&f);
}

int main(void) {
  RUN(test_seed_phase_filter);
  RUN(test_seed_trap_warns);
  RUN(test_trap_with_gradient_flowing);
  RUN(test_learning_batchnorm_is_fine);
  RUN(test_explicit_false_in_test);
  RUN(test_propagate_down_cuts_gradient);
  RUN(test_loss_weight_zero_prunes);
  RUN(test_in_place_and_producers);
  RUN(test_shapes_caffe_reference);
  RUN(test_pooling_sizes);
  RUN(test_shapes_misc);
  RUN(test_graph_errors);
  RUN(test_duplicate_names_warn);
  RUN(test_weights_extra_and_legacy);
  return test_summary();
}
