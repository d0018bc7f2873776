/* Layer correctness on the CPU backend, 2: forward values against plain hand computations (a
 * direct 7-loop convolution, Caffe's pooling size and padded divisor, BatchNorm's running
 * statistics, Accuracy with ties, the softmax loss under every normalisation, a loss top another
 * layer reads, Dropout). The helpers: tests/test_layers.h. */
#define _POSIX_C_SOURCE 200809L
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "test_layers.h"

/* ---- 2. forward values against hand computations --------------------------------------------- */

/* A direct convolution: y (N, O, OH, OW) from x (N, C, H, W), w (O, C / G, KH, KW), bias (O). */
static void conv_reference(float *y, const float *x, const float *w, const float *bias, int N, int C, int H, int W,
                           int O, int OH, int OW, int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
                           int G) {
  int cg = C / G, og = O / G;
  for (int n = 0; n < N; n++)
    for (int o = 0; o < O; o++)
      for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) {
          double acc = bias ? bias[o] : 0;
          int g = o / og;
          for (int c = 0; c < cg; c++)
            for (int ki = 0; ki < KH; ki++)
              for (int kj = 0; kj < KW; kj++) {
                int ih = oh * SH - PH + ki * DH, iw = ow * SW - PW + kj * DW;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += (double)x[((n * C + g * cg + c) * H + ih) * W + iw] * w[((o * cg + c) * KH + ki) * KW + kj];
              }
          y[((n * O + o) * OH + oh) * OW + ow] = (float)acc;
        }
}

static void test_conv_forward_reference(void) {
  static const struct {
    const char *param;
    int N, C, H, W, O, KH, KW, SH, SW, PH, PW, DH, DW, G, bias;
  } cases[] = {
      {"num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2 dilation: 2 group: 2",
       2, 4, 7, 8, 6, 3, 2, 2, 1, 1, 2, 2, 2, 2, 1},
      {"num_output: 4 kernel_size: 3 pad: 1", 3, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
      {"num_output: 3 kernel_size: 3 stride: 2 dilation: 1 dilation: 2 bias_term: false",
       2, 2, 9, 9, 3, 3, 3, 2, 2, 0, 0, 1, 2, 1, 0},
      {"num_output: 4 kernel_size: 1 group: 2", 2, 6, 3, 4, 4, 1, 1, 1, 1, 0, 0, 1, 1, 2, 1},
      {"num_output: 2 kernel_size: 1 stride: 2 pad: 1", 1, 3, 5, 5, 2, 1, 1, 2, 2, 1, 1, 1, 1, 1, 1},
      {"num_output: 8 kernel_size: 3 pad: 1 group: 4", 2, 8, 4, 4, 8, 3, 3, 1, 1, 1, 1, 1, 1, 4, 1},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    char text[1024], dims[128];
    snprintf(dims, sizeof dims, "dim: %d dim: %d dim: %d dim: %d", cases[k].N, cases[k].C, cases[k].H, cases[k].W);
    snprintf(text, sizeof text,
             FB "layer { name: \"x\" type: \"Input\" top: \"x\" input_param { shape { %s } } }\n"
             "layer { name: \"c\" type: \"Convolution\" bottom: \"x\" top: \"y\" convolution_param { %s " WF " } }",
             dims, cases[k].param);
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    CHECKF(n != NULL, "case %zu", k);
    if (!n) continue;
    set_uniform(n, "x", 100 + k, -1, 1);
    dd_net_forward(n, NULL);
    dd_layer *l = layer(n, "c");
    dd_tensor *y = blob(n, "y");
    int OH = (cases[k].H + 2 * cases[k].PH - (cases[k].DH * (cases[k].KH - 1) + 1)) / cases[k].SH + 1;
    int OW = (cases[k].W + 2 * cases[k].PW - (cases[k].DW * (cases[k].KW - 1) + 1)) / cases[k].SW + 1;
    CHECKF(y->shape.dims[2] == OH && y->shape.dims[3] == OW, "case %zu: top %lldx%lld, want %dx%d", k,
           (long long)y->shape.dims[2], (long long)y->shape.dims[3], OH, OW);
    CHECKF(l->n_params == (cases[k].bias ? 2 : 1), "case %zu: %d params", k, l->n_params);
    if (y->shape.dims[2] != OH || y->shape.dims[3] != OW) {
      dd_net_destroy(n);
      continue;
    }
    float *x = dd_tensor_data_copy(blob(n, "x")), *w = dd_tensor_data_copy(l->params[0]), *b = cases[k].bias ? dd_tensor_data_copy(l->params[1]) : NULL;
    float *got = dd_tensor_data_copy(y), *want = malloc((size_t)y->count * sizeof *want);
    conv_reference(want, x, w, b, cases[k].N, cases[k].C, cases[k].H, cases[k].W, cases[k].O, OH, OW, cases[k].KH,
                   cases[k].KW, cases[k].SH, cases[k].SW, cases[k].PH, cases[k].PW, cases[k].DH, cases[k].DW, cases[k].G);
    double e = max_rel_diff(got, want, y->count);
    CHECKF(e < 1e-5, "case %zu (%s): forward differs from the direct convolution by %.3g", k, cases[k].param, e);
    /* backward against direct sums: dx, dw, db for dy = w' */
    float *dy = malloc((size_t)y->count * sizeof *dy);
    dd_rng r;
    dd_rng_seed(&r, 77 + k);
    uniform_fill(dy, y->count, &r, -1, 1);
    dd_tensor_set_diff(y, dy);
    dd_net_clear_param_diffs(n);
    dd_net_backward(n);
    dd_tensor *xt = blob(n, "x");
    int64_t wc = l->params[0]->count;
    double *rdx = calloc((size_t)xt->count, sizeof *rdx), *rdw = calloc((size_t)wc, sizeof *rdw),
           *rdb = calloc((size_t)cases[k].O, sizeof *rdb);
    int C = cases[k].C, H = cases[k].H, W = cases[k].W, O = cases[k].O, G = cases[k].G, cg = C / G, og = O / G;
    for (int nn = 0; nn < cases[k].N; nn++)
      for (int o = 0; o < O; o++)
        for (int oh = 0; oh < OH; oh++)
          for (int ow = 0; ow < OW; ow++) {
            double g = dy[((nn * O + o) * OH + oh) * OW + ow];
            rdb[o] += g;
            for (int c = 0; c < cg; c++)
              for (int ki = 0; ki < cases[k].KH; ki++)
                for (int kj = 0; kj < cases[k].KW; kj++) {
                  int ih = oh * cases[k].SH - cases[k].PH + ki * cases[k].DH;
                  int iw = ow * cases[k].SW - cases[k].PW + kj * cases[k].DW;
                  if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                  int64_t xi = ((int64_t)(nn * C + (o / og) * cg + c) * H + ih) * W + iw;
                  int64_t wi = ((int64_t)(o * cg + c) * cases[k].KH + ki) * cases[k].KW + kj;
                  rdx[xi] += g * w[wi];
                  rdw[wi] += g * x[xi];
                }
          }
    float *gdx = dd_tensor_diff_copy(xt), *gdw = dd_tensor_diff_copy(l->params[0]), *gdb = b ? dd_tensor_diff_copy(l->params[1]) : NULL;
    float *fdx = malloc((size_t)xt->count * sizeof *fdx), *fdw = malloc((size_t)wc * sizeof *fdw), fdb[16];
    for (int64_t i = 0; i < xt->count; i++) fdx[i] = (float)rdx[i];
    for (int64_t i = 0; i < wc; i++) fdw[i] = (float)rdw[i];
    for (int i = 0; i < O; i++) fdb[i] = (float)rdb[i];
    CHECKF(max_rel_diff(gdx, fdx, xt->count) < 1e-5, "case %zu: dx differs from direct sums by %.3g", k,
           max_rel_diff(gdx, fdx, xt->count));
    CHECKF(max_rel_diff(gdw, fdw, wc) < 1e-5, "case %zu: dw differs from direct sums by %.3g", k,
           max_rel_diff(gdw, fdw, wc));
    if (gdb) CHECKF(max_rel_diff(gdb, fdb, O) < 1e-5, "case %zu: db differs by %.3g", k, max_rel_diff(gdb, fdb, O));
    free(gdx);
    free(gdw);
    free(gdb);
    free(fdx);
    free(fdw);
    free(rdx);
    free(rdw);
    free(rdb);
    free(dy);
    free(x);
    free(w);
    free(b);
    free(got);
    free(want);
    dd_net_destroy(n);
  }
}

/* Caffe's pooling, written out: output size ceil((H + 2p - k) / s) + 1, one less when the last
 * window would start in the padding (checked on both axes whenever either pad is non-zero); AVE
 * divides by the window clipped to the padded input (padding counted), MAX ignores padding. */
static int pool_out(int in, int k, int s, int p, int any_pad) {
  int o = (int)ceil((double)(in + 2 * p - k) / s) + 1;
  if (any_pad && (o - 1) * s >= in + p) o--;
  return o;
}

static void pool_reference(float *y, const float *x, int planes, int H, int W, int KH, int KW, int SH, int SW, int PH,
                           int PW, int ave) {
  int any = PH || PW, OH = pool_out(H, KH, SH, PH, any), OW = pool_out(W, KW, SW, PW, any);
  for (int p = 0; p < planes; p++)
    for (int oh = 0; oh < OH; oh++)
      for (int ow = 0; ow < OW; ow++) {
        int hs = oh * SH - PH, ws = ow * SW - PW;
        int he = hs + KH < H + PH ? hs + KH : H + PH, we = ws + KW < W + PW ? ws + KW : W + PW;
        int divisor = (he - hs) * (we - ws);
        double acc = 0, best = -INFINITY;
        for (int h = hs; h < hs + KH; h++)
          for (int w = ws; w < ws + KW; w++) {
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            double v = x[(p * H + h) * W + w];
            acc += v;
            if (v > best) best = v;
          }
        y[(p * OH + oh) * OW + ow] = (float)(ave ? acc / divisor : best);
      }
}

static void test_pool_forward_reference(void) {
  static const struct {
    int H, W, KH, KW, SH, SW, PH, PW, OH, OW;
  } cases[] = {
      {5, 5, 3, 3, 2, 2, 1, 1, 3, 3}, /* the classic: every window 9 with padding counted */
      {6, 6, 3, 3, 2, 2, 1, 1, 4, 4}, /* last window: 2 rows of the padded input */
      {5, 5, 2, 2, 2, 2, 1, 1, 3, 3}, /* ceil gives 4; the 4th window would start in the padding */
      {5, 5, 2, 2, 2, 2, 0, 0, 3, 3}, /* ceil, no pad: partial last windows */
      {7, 5, 3, 2, 2, 3, 1, 0, 4, 2},
      {5, 5, 1, 3, 3, 3, 0, 1, 2, 2}, /* pad_w alone trims the height too (Caffe tests pad_h || pad_w) */
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
    for (int ave = 0; ave < 2; ave++) {
      char text[1024];
      snprintf(text, sizeof text,
               FB "layer { name: \"x\" type: \"Input\" top: \"x\" input_param { shape { dim: 2 dim: 3 dim: %d dim: %d } } }\n"
               "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { pool: %s "
               "kernel_h: %d kernel_w: %d stride_h: %d stride_w: %d pad_h: %d pad_w: %d } }",
               cases[k].H, cases[k].W, ave ? "AVE" : "MAX", cases[k].KH, cases[k].KW, cases[k].SH, cases[k].SW,
               cases[k].PH, cases[k].PW);
      dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
      CHECKF(n != NULL, "case %zu", k);
      if (!n) continue;
      dd_tensor *y = blob(n, "y");
      CHECKF(y->shape.dims[2] == cases[k].OH && y->shape.dims[3] == cases[k].OW,
             "case %zu (%dx%d, kernel %dx%d, stride %dx%d, pad %dx%d): top %lldx%lld, Caffe gives %dx%d", k,
             cases[k].H, cases[k].W, cases[k].KH, cases[k].KW, cases[k].SH, cases[k].SW, cases[k].PH, cases[k].PW,
             (long long)y->shape.dims[2], (long long)y->shape.dims[3], cases[k].OH, cases[k].OW);
      if (y->shape.dims[2] == cases[k].OH && y->shape.dims[3] == cases[k].OW) {
        set_uniform(n, "x", 200 + k, -1, 1);
        dd_net_forward(n, NULL);
        float *x = dd_tensor_data_copy(blob(n, "x")), *got = dd_tensor_data_copy(y), *want = malloc((size_t)y->count * sizeof *want);
        pool_reference(want, x, 6, cases[k].H, cases[k].W, cases[k].KH, cases[k].KW, cases[k].SH, cases[k].SW,
                       cases[k].PH, cases[k].PW, ave);
        double e = max_rel_diff(got, want, y->count);
        CHECKF(e < 1e-6, "case %zu %s: differs from the hand computation by %.3g", k, ave ? "AVE" : "MAX", e);
        free(x);
        free(got);
        free(want);
      }
      dd_net_destroy(n);
    }
  /* literal numbers: x = 1..25 on a 5x5 plane, kernel 3, stride 2, pad 1 */
  for (int ave = 0; ave < 2; ave++) {
    char text[1024];
    snprintf(text, sizeof text,
             INPUT("x", "dim: 1 dim: 1 dim: 5 dim: 5")
             "layer { name: \"p\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param { pool: %s "
             "kernel_size: 3 stride: 2 pad: 1 } }", ave ? "AVE" : "MAX");
    dd_net *n = make_net(text, CAFFE__PHASE__TEST);
    REQUIRE(n);
    float x[25];
    for (int i = 0; i < 25; i++) x[i] = (float)(i + 1);
    set_values(n, "x", x);
    dd_net_forward(n, NULL);
    float *y = dd_tensor_data_copy(blob(n, "y"));
    /* AVE: every window counts 9 cells; the corner one holds 1 2 6 7 and 5 padding cells (16 / 9) */
    const float want_ave[9] = {16.f / 9, 33.f / 9, 28.f / 9, 69.f / 9, 117.f / 9, 87.f / 9, 76.f / 9, 123.f / 9, 88.f / 9};
    const float want_max[9] = {7, 9, 10, 17, 19, 20, 22, 24, 25};
    for (int i = 0; i < 9; i++)
      CHECKF(fabsf(y[i] - (ave ? want_ave[i] : want_max[i])) < 1e-5f, "%s y[%d] = %g, want %g", ave ? "AVE" : "MAX", i,
             y[i], ave ? want_ave[i] : want_max[i]);
    free(y);
    dd_net_destroy(n);
  }
}

/* BatchNorm over several TRAIN forwards: the three blobs follow Caffe's formulas
 * (s = maf s + 1; mean_sum = mean + maf mean_sum; var_sum = m / (m - 1) var + maf var_sum,
 * m = N H W, var biased), each output uses the batch statistics; then a TEST net on the same
 * blobs normalises with mean_sum / s and var_sum / s and moves nothing. */
static void test_bn_running_stats(void) {
  static const struct {
    const char *param;
    double maf, eps;
  } v[] = {{"moving_average_fraction: 0.9 eps: 1e-4", 0.9, 1e-4}, {"", 0.999, 1e-5}};
  for (int k = 0; k < 2; k++) {
    char text[1024];
    snprintf(text, sizeof text,
             INPUT("x", "dim: 3 dim: 2 dim: 2 dim: 3")
             "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"y\" batch_norm_param { %s } }", v[k].param);
    dd_net *tr = make_net(text, CAFFE__PHASE__TRAIN), *te = make_net(text, CAFFE__PHASE__TEST);
    REQUIRE(tr && te);
    char err[256];
    REQUIRE(dd_net_share_params(te, tr, err, sizeof err) == 0);
    dd_layer *l = layer(tr, "bn");
    const int N = 3, C = 2, S = 6, m = N * S;
    double s = 0, ms[2] = {0, 0}, vs[2] = {0, 0};
    for (int pass = 0; pass < 4; pass++) {
      set_uniform(tr, "x", 300 + pass, -1.0f + pass, 2.0f + 2 * pass);
      dd_net_forward(tr, NULL);
      float *x = dd_tensor_data_copy(blob(tr, "x")), *y = dd_tensor_data_copy(blob(tr, "y"));
      s = v[k].maf * s + 1;
      for (int c = 0; c < C; c++) {
        double mean = 0, var = 0;
        for (int i = 0; i < N; i++)
          for (int j = 0; j < S; j++) mean += x[(i * C + c) * S + j];
        mean /= m;
        for (int i = 0; i < N; i++)
          for (int j = 0; j < S; j++) var += (x[(i * C + c) * S + j] - mean) * (x[(i * C + c) * S + j] - mean);
        var /= m;
        ms[c] = mean + v[k].maf * ms[c];
        vs[c] = (double)m / (m - 1) * var + v[k].maf * vs[c];
        for (int i = 0; i < N; i++)
          for (int j = 0; j < S; j++) {
            int idx = (i * C + c) * S + j;
            double want = (x[idx] - mean) / sqrt(var + v[k].eps);
            CHECKF(fabs(y[idx] - want) < 1e-5 * (1 + fabs(want)), "pass %d: y[%d] = %.7g, want %.7g", pass, idx, y[idx], want);
          }
      }
      float *b0 = dd_tensor_data_copy(l->params[0]), *b1 = dd_tensor_data_copy(l->params[1]), *b2 = dd_tensor_data_copy(l->params[2]);
      CHECKF(fabs(b2[0] - s) < 1e-6 * s, "pass %d: scale factor %.8g, want %.8g", pass, b2[0], s);
      for (int c = 0; c < C; c++) {
        CHECKF(fabs(b0[c] - ms[c]) < 1e-5 * (1 + fabs(ms[c])), "pass %d: mean_sum[%d] %.8g, want %.8g", pass, c, b0[c], ms[c]);
        CHECKF(fabs(b1[c] - vs[c]) < 1e-5 * (1 + fabs(vs[c])), "pass %d: var_sum[%d] %.8g, want %.8g", pass, c, b1[c], vs[c]);
      }
      free(b0);
      free(b1);
      free(b2);
      free(x);
      free(y);
    }
    /* TEST: the stored statistics, scaled by 1 / s */
    set_uniform(te, "x", 400, -3, 5);
    dd_net_forward(te, NULL);
    float *x = dd_tensor_data_copy(blob(te, "x")), *y = dd_tensor_data_copy(blob(te, "y"));
    for (int c = 0; c < C; c++) {
      double mean = ms[c] / s, var = vs[c] / s;
      for (int i = 0; i < N; i++)
        for (int j = 0; j < S; j++) {
          int idx = (i * C + c) * S + j;
          double want = (x[idx] - mean) / sqrt(var + v[k].eps);
          CHECKF(fabs(y[idx] - want) < 1e-5 * (1 + fabs(want)), "TEST: y[%d] = %.7g, want %.7g", idx, y[idx], want);
        }
    }
    float *b2 = dd_tensor_data_copy(l->params[2]);
    CHECKF(fabs(b2[0] - s) < 1e-6 * s, "TEST moved the scale factor to %g", b2[0]);
    free(b2);
    free(x);
    free(y);
    dd_net_destroy(te);
    dd_net_destroy(tr);
  }
}

/* Global statistics with scale factor 0: mean and variance are taken as 0 (Caffe: 1 / s becomes
 * 0), so y = x / sqrt(eps), whatever the sums hold. */
static void test_bn_zero_factor(void) {
  static const char *text = INPUT("x", "dim: 2 dim: 2 dim: 3")
      "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"y\" batch_norm_param { eps: 0.01 } }";
  for (int phase = 0; phase < 2; phase++) {
    char text2[512];
    snprintf(text2, sizeof text2, "%s", text);
    if (phase) /* TRAIN with use_global_stats: true */
      snprintf(text2, sizeof text2, INPUT("x", "dim: 2 dim: 2 dim: 3")
               "layer { name: \"bn\" type: \"BatchNorm\" bottom: \"x\" top: \"y\" batch_norm_param { eps: 0.01 "
               "use_global_stats: true } }");
    dd_net *n = make_net(text2, phase ? CAFFE__PHASE__TRAIN : CAFFE__PHASE__TEST);
    REQUIRE(n);
    dd_layer *l = layer(n, "bn");
    for (int sums = 0; sums < 2; sums++) {
      if (sums) {
        float ms[2] = {1, 2}, vs[2] = {3, 4}, s = 0;
        dd_tensor_set_data(l->params[0], ms);
        dd_tensor_set_data(l->params[1], vs);
        dd_tensor_set_data(l->params[2], &s);
      }
      set_uniform(n, "x", 500 + sums, -1, 1);
      dd_net_forward(n, NULL);
      float *x = dd_tensor_data_copy(blob(n, "x")), *y = dd_tensor_data_copy(blob(n, "y"));
      for (int i = 0; i < 12; i++)
        CHECKF(fabs(y[i] - x[i] / sqrt(0.01)) < 1e-5 * (1 + fabs(x[i] / sqrt(0.01))),
               "%s, %s: y[%d] = %g, want %g", phase ? "TRAIN global" : "TEST", sums ? "non-zero sums" : "zero blobs",
               i, y[i], x[i] / sqrt(0.01));
      free(x);
      free(y);
    }
    dd_net_destroy(n);
  }
}

/* ---- Accuracy ---------------------------------------------------------------------------------- */

/* Runs Accuracy on p (rows x classes) and labels; returns the accuracy and fills per_class
 * (classes entries) when it is not NULL. */
static float run_accuracy(const float *p, const float *label, int rows, int classes, const char *param,
                          float *per_class) {
  char text[1024];
  snprintf(text, sizeof text,
           "layer { name: \"p\" type: \"Input\" top: \"p\" input_param { shape { dim: %d dim: %d } } }\n"
           "layer { name: \"label\" type: \"Input\" top: \"label\" input_param { shape { dim: %d } } }\n"
           "layer { name: \"acc\" type: \"Accuracy\" bottom: \"p\" bottom: \"label\" top: \"acc\" %s "
           "accuracy_param { %s } }",
           rows, classes, rows, per_class ? "top: \"per_class\"" : "", param);
  dd_net *n = make_net(text, CAFFE__PHASE__TEST);
  if (!n) return -1;
  set_values(n, "p", p);
  set_values(n, "label", label);
  /* stale values in the tops must not survive a forward */
  be->ops->fill(be, blob(n, "acc")->data, -7.0f, 1);
  if (per_class) be->ops->fill(be, blob(n, "per_class")->data, -7.0f, classes);
  dd_net_forward(n, NULL);
  float acc;
  dd_tensor_get_data(blob(n, "acc"), &acc);
  if (per_class) dd_tensor_get_data(blob(n, "per_class"), per_class);
  dd_net_destroy(n);
  return acc;
}

/* Caffe 1.0 ranks the classes with std::partial_sort over (value, index) pairs and
 * std::greater: among equal values the higher class index ranks first. So a tie with a higher
 * class pushes the true class down; a tie with a lower one does not. */
static void test_accuracy(void) {
  static const float p[6 * 5] = {
      0.1f, 0.9f, 0.3f, 0.2f, -1, /* label 1: correct */
      0.5f, 0.2f, 0.5f, 0.1f, -1, /* label 0: tied with class 2, which ranks first: wrong at top 1 */
      0.5f, 0.2f, 0.5f, 0.1f, -1, /* label 2: tied with class 0, ranks first: correct */
      0.3f, 0.3f, 0.3f, 0.3f, -1, /* label 3: four-way tie, the highest index: correct */
      0.3f, 0.3f, 0.3f, 0.3f, -1, /* label 0: four-way tie, the lowest index: 4th, wrong even at top 3 */
      0.0f, 0.1f, 0.2f, 0.7f, -1, /* label 0: the lowest value: wrong at top 3 */
  };
  static const float label[6] = {1, 0, 2, 3, 0, 0};
  float pc[5];
  float a1 = run_accuracy(p, label, 6, 5, "", pc);
  CHECKF(fabsf(a1 - 3.0f / 6) < 1e-6f, "top 1: %g, Caffe gives 0.5", a1);
  const float want_pc[5] = {0, 1, 1, 1, 0}; /* class 4 has no samples: 0 */
  for (int c = 0; c < 5; c++) CHECKF(fabsf(pc[c] - want_pc[c]) < 1e-6f, "per-class[%d] = %g, want %g", c, pc[c], want_pc[c]);
  float a3 = run_accuracy(p, label, 6, 5, "top_k: 3", pc);
  CHECKF(fabsf(a3 - 4.0f / 6) < 1e-6f, "top 3: %g, Caffe gives 4/6", a3);
  const float want_pc3[5] = {1.0f / 3, 1, 1, 1, 0};
  for (int c = 0; c < 5; c++) CHECKF(fabsf(pc[c] - want_pc3[c]) < 1e-6f, "top 3 per-class[%d] = %g, want %g", c, pc[c], want_pc3[c]);
  /* ignore_label: ignored rows count neither way */
  static const float label_ign[6] = {1, -1, 2, 3, 0, -1};
  float ai = run_accuracy(p, label_ign, 6, 5, "ignore_label: -1", pc);
  CHECKF(fabsf(ai - 3.0f / 4) < 1e-6f, "top 1 with ignore_label: %g, want 3/4", ai);
  const float want_pci[5] = {0, 1, 1, 1, 0};
  for (int c = 0; c < 5; c++) CHECKF(fabsf(pc[c] - want_pci[c]) < 1e-6f, "ignore per-class[%d] = %g", c, pc[c]);
  /* every label ignored: 0 (Caffe 1.0 divides 0 by 0 here) */
  static const float all_ign[6] = {-1, -1, -1, -1, -1, -1};
  float az = run_accuracy(p, all_ign, 6, 5, "ignore_label: -1", NULL);
  CHECKF(az == 0.0f, "all ignored: %g", az);
  /* top_k 5 of 5 classes: always right */
  float a5 = run_accuracy(p, label, 6, 5, "top_k: 5", NULL);
  CHECKF(a5 == 1.0f, "top 5: %g", a5);
}

/* Spatial accuracy (axis 1 of (N, C, H, W), labels (N, H, W)) and per-class accuracy with more
 * classes than fit one host buffer. */
static void test_accuracy_spatial_and_many_classes(void) {
  dd_net *n = make_net(INPUT("p", "dim: 2 dim: 3 dim: 1 dim: 2") INPUT("label", "dim: 2 dim: 1 dim: 2")
                       "layer { name: \"acc\" type: \"Accuracy\" bottom: \"p\" bottom: \"label\" top: \"acc\" }",
                       CAFFE__PHASE__TEST);
  REQUIRE(n);
  /* (n, c, w): image 0 position 0 -> class 2, position 1 -> class 0; image 1: 1, 1 */
  float p[12] = {0, 5, 1, 0, 9, 1, /* image 0: c0 = {0, 5}, c1 = {1, 0}, c2 = {9, 1} */
                 0, 0, 3, 4, 1, 1};
  float lab[4] = {2, 0, 1, 1};
  set_values(n, "p", p);
  set_values(n, "label", lab);
  dd_net_forward(n, NULL);
  float acc;
  dd_tensor_get_data(blob(n, "acc"), &acc);
  CHECKF(fabsf(acc - 1.0f) < 1e-6f, "spatial accuracy %g, want 1", acc);
  dd_net_destroy(n);

  enum { ROWS = 4, CLASSES = 1100 };
  float *pp = calloc(ROWS * CLASSES, sizeof *pp), pc[CLASSES];
  const float lab2[ROWS] = {0, 1050, 1099, 5};
  for (int r = 0; r < ROWS; r++) pp[r * CLASSES + (r == 3 ? 6 : (int)lab2[r])] = 1; /* row 3 predicts 6, not 5 */
  float a = run_accuracy(pp, lab2, ROWS, CLASSES, "", pc);
  CHECKF(fabsf(a - 0.75f) < 1e-6f, "1100 classes: accuracy %g", a);
  CHECKF(pc[0] == 1 && pc[1050] == 1 && pc[1099] == 1 && pc[5] == 0 && pc[6] == 0 && pc[1024] == 0,
         "1100 classes: per-class %g %g %g %g %g %g", pc[0], pc[1050], pc[1099], pc[5], pc[6], pc[1024]);
  free(pp);
}

/* ---- SoftmaxWithLoss values ------------------------------------------------------------------- */

static void test_softmax_loss_values(void) {
  /* x (2, 3, 4): outer 2, 3 classes, inner 4; label (2, 4) with one ignored (-1) */
  float x[24], lab[8] = {0, 2, 1, 1, 2, -1, 0, 2}, lab_all[8] = {0, 2, 1, 1, 2, 1, 0, 2};
  for (int i = 0; i < 24; i++) x[i] = (float)sin(1.3 * i) * 2.0f;
  static const struct {
    const char *param;
    int ignore;
    double norm;
  } cases[] = {
      {"normalization: FULL", 1, 8}, {"normalization: VALID", 1, 7}, {"normalization: BATCH_SIZE", 1, 2},
      {"normalization: NONE", 1, 1}, {"", 1, 7},                    {"normalize: false", 1, 2},
      {"normalize: true", 1, 7},     {"normalize: false normalization: FULL", 1, 8},
      {"normalization: VALID", 0, 8}, {"", 0, 8},                   {"normalization: FULL", 0, 8},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    char text[1024];
    snprintf(text, sizeof text,
             INPUT("x", "dim: 2 dim: 3 dim: 4") INPUT("label", "dim: 2 dim: 4")
             "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" "
             "top: \"prob\" loss_param { %s %s } }", cases[k].param, cases[k].ignore ? "ignore_label: -1" : "");
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    CHECKF(n != NULL, "case %zu", k);
    if (!n) continue;
    const float *labels = cases[k].ignore ? lab : lab_all;
    set_values(n, "x", x);
    set_values(n, "label", labels);
    double netloss;
    dd_net_forward(n, &netloss);
    double sum = 0, prob[24];
    for (int o = 0; o < 2; o++)
      for (int i = 0; i < 4; i++) {
        double z = 0;
        for (int c = 0; c < 3; c++) z += exp(x[(o * 3 + c) * 4 + i]);
        for (int c = 0; c < 3; c++) prob[(o * 3 + c) * 4 + i] = exp(x[(o * 3 + c) * 4 + i]) / z;
        int l = (int)labels[o * 4 + i];
        if (l >= 0) sum -= log(prob[(o * 3 + l) * 4 + i]);
      }
    double want = sum / cases[k].norm;
    float loss, *pr = dd_tensor_data_copy(blob(n, "prob"));
    dd_tensor_get_data(blob(n, "loss"), &loss);
    CHECKF(fabs(loss - want) < 1e-5 * fmax(1, want), "{%s%s}: loss %.7g, want %.7g", cases[k].param,
           cases[k].ignore ? " ignore_label" : "", loss, want);
    CHECKF(fabs(netloss - want) < 1e-5 * fmax(1, want), "{%s}: net loss %.7g", cases[k].param, netloss);
    for (int i = 0; i < 24; i++) CHECKF(fabs(pr[i] - prob[i]) < 1e-6, "prob[%d] = %g, want %g", i, pr[i], prob[i]);
    free(pr);
    dd_net_destroy(n);
  }
}

/* Caffe's loss layers scale their gradient by their top's diff (which the net sets to the loss
 * weight). When the loss top also feeds another layer, Caffe's InsertSplits moves the loss weight
 * onto the split's first top and the loss layer's gradient arrives through the split. */
static void test_loss_top_consumed(void) {
  dd_net *n = make_net(FB INPUT("x", "dim: 3 dim: 4") INPUT("label", "dim: 3")
                       "layer { name: \"loss\" type: \"SoftmaxWithLoss\" bottom: \"x\" bottom: \"label\" top: \"loss\" "
                       "loss_weight: 2 }\n"
                       "layer { name: \"silence\" type: \"Silence\" bottom: \"loss\" }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  CHECK(dd_net_layer_index(n, "loss_loss_0_split") >= 0);
  set_uniform(n, "x", 8, -2, 2);
  set_labels(n, "label", 4, 9, 0, 0);
  grad_check(n, GC, "softmax loss, weight 2, top consumed");
  dd_net_destroy(n);
  n = make_net(FB INPUT("s", "dim: 3 dim: 4") INPUT("t", "dim: 3 dim: 4")
               "layer { name: \"kd\" type: \"KDLoss\" bottom: \"s\" bottom: \"t\" top: \"kd\" loss_weight: 0.5 "
               "distill_loss_param { temperature: 2 } }\n"
               "layer { name: \"silence\" type: \"Silence\" bottom: \"kd\" }", CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  fill_inputs(n, 3, -2, 2);
  grad_check(n, GC, "kd loss, weight 0.5, top consumed");
  dd_net_destroy(n);
}

/* ---- Dropout ----------------------------------------------------------------------------------- */

static void test_dropout(void) {
  static const float ratios[] = {0.3f, 0.5f};
  for (int k = 0; k < 2; k++) {
    char text[1024];
    snprintf(text, sizeof text,
             FB INPUT("x", "dim: 4 dim: 50 dim: 10 dim: 10")
             "layer { name: \"d\" type: \"Dropout\" bottom: \"x\" top: \"y\" %s }",
             k == 0 ? "dropout_param { dropout_ratio: 0.3 }" : "");
    dd_net *n = make_net(text, CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    float ratio = ratios[k], scale = 1.0f / (1.0f - ratio);
    set_uniform(n, "x", 9, 0.5f, 1.5f); /* no zeros: a zero output means dropped */
    dd_tensor *xt = blob(n, "x"), *yt = blob(n, "y");
    int64_t cnt = xt->count;
    float *w = malloc((size_t)cnt * sizeof *w);
    dd_rng r;
    dd_rng_seed(&r, 4);
    uniform_fill(w, cnt, &r, -1, 1);
    unsigned char *mask0 = malloc((size_t)cnt);
    for (int iter = 0; iter < 2; iter++) {
      dd_net_forward(n, NULL);
      dd_tensor_set_diff(yt, w);
      dd_net_backward(n);
      float *x = dd_tensor_data_copy(xt), *y = dd_tensor_data_copy(yt), *dx = dd_tensor_diff_copy(xt);
      int64_t kept = 0, bad_y = 0, bad_dx = 0, moved = 0;
      for (int64_t i = 0; i < cnt; i++) {
        int keep = y[i] != 0.0f;
        kept += keep;
        bad_y += keep && y[i] != x[i] * scale;
        bad_dx += keep ? dx[i] != w[i] * scale : dx[i] != 0.0f;
        if (iter == 0) mask0[i] = (unsigned char)keep;
        else moved += mask0[i] != keep;
      }
      double frac = (double)kept / (double)cnt;
      CHECKF(fabs(frac - (1 - ratio)) < 0.02, "ratio %g: kept %.4f", ratio, frac);
      CHECKF(bad_y == 0, "ratio %g: %lld kept outputs are not x / (1 - ratio)", ratio, (long long)bad_y);
      CHECKF(bad_dx == 0, "ratio %g: %lld gradients are not dy * mask / (1 - ratio)", ratio, (long long)bad_dx);
      if (iter == 1) CHECKF(moved > cnt / 10, "ratio %g: the mask did not change between iterations (%lld moved)", ratio,
                            (long long)moved);
      free(x);
      free(y);
      free(dx);
    }
    free(mask0);
    dd_net_destroy(n);
    /* TEST: the identity, forward and backward */
    n = make_net(text, CAFFE__PHASE__TEST);
    REQUIRE(n);
    set_uniform(n, "x", 10, -1, 1);
    dd_net_forward(n, NULL);
    dd_tensor_set_diff(blob(n, "y"), w);
    dd_net_backward(n);
    float *x = dd_tensor_data_copy(blob(n, "x")), *y = dd_tensor_data_copy(blob(n, "y")), *dx = dd_tensor_diff_copy(blob(n, "x"));
    CHECK(memcmp(x, y, (size_t)cnt * sizeof *x) == 0);
    CHECK(memcmp(dx, w, (size_t)cnt * sizeof *x) == 0);
    free(x);
    free(y);
    free(dx);
    free(w);
    dd_net_destroy(n);
  }
}

int main(void) {
  if (layers_begin()) return 1;
  RUN(test_loss_top_consumed);
  RUN(test_conv_forward_reference);
  RUN(test_pool_forward_reference);
  RUN(test_bn_running_stats);
  RUN(test_bn_zero_factor);
  RUN(test_accuracy);
  RUN(test_accuracy_spatial_and_many_classes);
  RUN(test_softmax_loss_values);
  RUN(test_dropout);
  return layers_end();
}
