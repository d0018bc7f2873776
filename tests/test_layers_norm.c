/* The catalogue's normalization and convolution-like layers on the CPU backend: LRN (both
 * regions) against the definition computed here in double; Deconvolution as the adjoint of
 * Convolution (<deconv(x), y> = <x, conv(y)> with the same weights, and its output size); MVN's
 * outputs having mean 0 and deviation 1 - eps / sd; SPP against pooling by hand; finite-difference
 * gradients of every input and parameter; errors naming their field. */
#include "test_layers.h"

#define IN4(name, a, b, c, d) \
  "layer { name: '" name "' type: 'Input' top: '" name "' input_param { shape { dim: " #a " dim: " #b " dim: " #c " dim: " #d " } } }\n"

static void lrn_by_hand(const float *x, double *y, int n, int c, int h, int w, int size, double alpha, double beta,
                        double k, int across) {
  int pad = (size - 1) / 2;
  for (int b = 0; b < n; b++)
    for (int ch = 0; ch < c; ch++)
      for (int py = 0; py < h; py++)
        for (int px = 0; px < w; px++) {
          double acc = 0, s;
          if (across) {
            for (int q = ch - pad; q <= ch + pad; q++)
              if (q >= 0 && q < c) acc += (double)x[((b * c + q) * h + py) * w + px] * x[((b * c + q) * h + py) * w + px];
            s = k + alpha / size * acc;
          } else {
            int count = 0; /* Caffe's AVE divisor: the window clipped to the padded image */
            for (int qy = py - pad; qy < py - pad + size; qy++)
              for (int qx = px - pad; qx < px - pad + size; qx++) {
                if (qy < h + pad && qx < w + pad) count++;
                if (qy >= 0 && qy < h && qx >= 0 && qx < w) {
                  double v = x[((b * c + ch) * h + qy) * w + qx];
                  acc += v * v;
                }
              }
            s = 1 + alpha * acc / count;
          }
          int64_t i = ((b * c + ch) * h + py) * w + px;
          y[i] = x[i] * pow(s, -beta);
        }
}

static void test_lrn(void) {
  for (int across = 0; across < 2; across++) {
    char net[800];
    snprintf(net, sizeof net, FB IN4("x", 2, 5, 4, 3) "layer { name: 'l' type: 'LRN' bottom: 'x' top: 'y' "
             "lrn_param { local_size: 3 alpha: 0.7 beta: 0.6 k: 1.5 norm_region: %s } }\n",
             across ? "ACROSS_CHANNELS" : "WITHIN_CHANNEL");
    dd_net *n = make_net(net, CAFFE__PHASE__TRAIN);
    REQUIRE(n);
    set_uniform(n, "x", 3, -2, 2);
    REQUIRE(dd_net_forward(n, NULL) == 0);
    double want[120];
    lrn_by_hand(blob(n, "x")->data, want, 2, 5, 4, 3, 3, 0.7, 0.6, 1.5, across);
    const float *y = blob(n, "y")->data;
    double worst = 0;
    for (int i = 0; i < 120; i++) worst = fmax(worst, fabs(y[i] - want[i]));
    CHECKF(worst < 1e-6, "LRN %s: forward off by %.2e", across ? "across" : "within", worst);
    grad_check(n, GC, across ? "LRN ACROSS_CHANNELS" : "LRN WITHIN_CHANNEL");
    dd_net_destroy(n);
  }
  char err[600];
  CHECK(net_error(IN4("x", 2, 5, 4, 3) "layer { name: 'l' type: 'LRN' bottom: 'x' top: 'y' lrn_param { local_size: 4 } }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "lrn_param.local_size 4 must be odd");
  CHECK(net_error(IN4("x", 2, 5, 4, 3) "layer { name: 'l' type: 'LRN' bottom: 'x' top: 'x' }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "LRN cannot run in place");
}

static void test_deconv_adjoint(void) {
  /* deconv: (2, 4, 3, 3) -> (2, 6, H', W'); conv with the same weights maps back */
  const char *cp = "num_output: %d group: 2 kernel_size: 3 stride: 2 pad: 1 dilation: 2 bias_term: false "
                   "weight_filler { type: 'gaussian' std: 0.5 }";
  char net[1200], p1[300], p2[300];
  snprintf(p1, sizeof p1, cp, 6);
  snprintf(p2, sizeof p2, cp, 4);
  snprintf(net, sizeof net,
           IN4("x", 2, 4, 3, 3) IN4("z", 2, 6, 5, 5)
           "layer { name: 'd' type: 'Deconvolution' bottom: 'x' top: 'y' convolution_param { %s } }\n"
           "layer { name: 'c' type: 'Convolution' bottom: 'z' top: 'cz' convolution_param { %s } }\n", p1, p2);
  dd_net *n = make_net(net, CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  dd_tensor *y = blob(n, "y"), *cz = blob(n, "cz");
  /* H' = stride (H - 1) + dilation (k - 1) + 1 - 2 pad = 2 * 2 + 2 * 2 + 1 - 2 = 7 */
  CHECK(y->shape.dims[1] == 6 && y->shape.dims[2] == 7 && y->shape.dims[3] == 7);
  dd_net_destroy(n);
  snprintf(net, sizeof net,
           IN4("x", 2, 4, 3, 3) IN4("z", 2, 6, 7, 7)
           "layer { name: 'd' type: 'Deconvolution' bottom: 'x' top: 'y' convolution_param { %s } }\n"
           "layer { name: 'c' type: 'Convolution' bottom: 'z' top: 'cz' convolution_param { %s } }\n", p1, p2);
  n = make_net(net, CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  y = blob(n, "y");
  cz = blob(n, "cz");
  dd_tensor *wd = layer(n, "d")->params[0], *wc = layer(n, "c")->params[0];
  CHECK(wd->count == wc->count && wd->shape.dims[0] == 4 && wd->shape.dims[1] == 3);
  memcpy(wc->data, wd->data, (size_t)wd->count * sizeof(float));
  set_uniform(n, "x", 5, -1, 1);
  set_uniform(n, "z", 6, -1, 1);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  REQUIRE(cz->count == blob(n, "x")->count);
  double a = 0, b = 0, scale = 0;
  for (int64_t i = 0; i < y->count; i++) a += (double)y->data[i] * blob(n, "z")->data[i];
  for (int64_t i = 0; i < cz->count; i++) b += (double)blob(n, "x")->data[i] * cz->data[i], scale += fabs((double)blob(n, "x")->data[i] * cz->data[i]);
  CHECKF(fabs(a - b) < 1e-5 * scale, "<deconv x, z> = %.9g, <x, conv z> = %.9g", a, b);
  dd_net_destroy(n);
  check_grad("Deconvolution (group 2, stride 2, bias)",
             FB IN4("x", 2, 4, 3, 3) "layer { name: 'd' type: 'Deconvolution' bottom: 'x' top: 'y' convolution_param { "
             "num_output: 4 group: 2 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: 'gaussian' std: 0.5 } "
             "bias_filler { type: 'uniform' min: -1 max: 1 } } }\n", GC);
  char err[600];
  CHECK(net_error(IN4("x", 2, 4, 3, 3) "layer { name: 'd' type: 'Deconvolution' bottom: 'x' top: 'y' "
                  "convolution_param { num_output: 4 kernel_size: 1 pad: 2 } }\n", CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "output size -1 is not positive");
}

static void test_mvn(void) {
  dd_net *n = make_net(FB IN4("x", 2, 3, 4, 5) "layer { name: 'm' type: 'MVN' bottom: 'x' top: 'y' mvn_param { eps: 1e-3 } }\n",
                       CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  set_uniform(n, "x", 8, -3, 1);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  const float *x = blob(n, "x")->data, *y = blob(n, "y")->data;
  for (int r = 0; r < 6; r++) {
    double m = 0, v = 0, ym = 0, yv = 0;
    for (int i = 0; i < 20; i++) m += x[r * 20 + i] / 20.0;
    for (int i = 0; i < 20; i++) v += (x[r * 20 + i] - m) * (x[r * 20 + i] - m) / 20.0;
    for (int i = 0; i < 20; i++) ym += y[r * 20 + i] / 20.0, yv += (double)y[r * 20 + i] * y[r * 20 + i] / 20.0;
    double sd = sqrt(v);
    CHECKF(fabs(ym) < 1e-6, "row %d: mean %g", r, ym);
    CHECKF(fabs(sqrt(yv) - sd / (sd + 1e-3)) < 1e-6, "row %d: deviation %g, want %g", r, sqrt(yv), sd / (sd + 1e-3));
  }
  grad_check(n, GC, "MVN (per channel, variance)");
  dd_net_destroy(n);
  check_grad("MVN (across channels, mean only)", FB IN4("x", 2, 3, 2, 2) "layer { name: 'm' type: 'MVN' bottom: 'x' top: 'y' "
             "mvn_param { across_channels: true normalize_variance: false } }\n", GC);
}

static void test_spp(void) {
  dd_net *n = make_net(FB IN4("x", 2, 3, 5, 6) "layer { name: 's' type: 'SPP' bottom: 'x' top: 'y' spp_param { pyramid_height: 2 } }\n",
                       CAFFE__PHASE__TRAIN);
  REQUIRE(n);
  dd_tensor *y = blob(n, "y");
  CHECK(y->shape.ndim == 2 && y->shape.dims[0] == 2 && y->shape.dims[1] == 3 * (1 + 4));
  set_distinct(n, (const char *[]){"x"}, 1, 9, 0.05f);
  REQUIRE(dd_net_forward(n, NULL) == 0);
  const float *x = blob(n, "x")->data;
  /* level 0: the max of each plane; level 1: 2 x 2 bins, kernel (3, 3), pad (1, 0) */
  for (int b = 0; b < 2; b++)
    for (int ch = 0; ch < 3; ch++) {
      float m = -1e30f;
      for (int i = 0; i < 30; i++) m = fmaxf(m, x[(b * 3 + ch) * 30 + i]);
      CHECK(y->data[b * 15 + ch] == m);
      for (int by = 0; by < 2; by++)
        for (int bx = 0; bx < 2; bx++) {
          float mm = -1e30f;
          for (int py = by * 3 - 1; py < by * 3 + 2; py++)
            for (int px = bx * 3; px < bx * 3 + 3; px++)
              if (py >= 0 && py < 5) mm = fmaxf(mm, x[((b * 3 + ch) * 5 + py) * 6 + px]);
          CHECKF(y->data[b * 15 + 3 + (ch * 2 + by) * 2 + bx] == mm, "level 1 bin (%d, %d)", by, bx);
        }
    }
  grad_check(n, GC_KINK, "SPP MAX, 2 levels");
  dd_net_destroy(n);
  check_grad("SPP AVE, 3 levels", FB IN4("x", 1, 2, 8, 7) "layer { name: 's' type: 'SPP' bottom: 'x' top: 'y' "
             "spp_param { pyramid_height: 3 pool: AVE } }\n", GC);
  char err[600];
  CHECK(net_error(IN4("x", 1, 2, 3, 3) "layer { name: 's' type: 'SPP' bottom: 'x' top: 'y' spp_param { pyramid_height: 3 } }\n",
                  CAFFE__PHASE__TRAIN, err, sizeof err) != 0);
  CHECK_CONTAINS(err, "spp_param.pyramid_height 3 asks for 4 bins, more than the 3 x 3 input");
}

int main(void) {
  if (layers_begin()) return 1;
  RUN(test_lrn);
  RUN(test_deconv_adjoint);
  RUN(test_mvn);
  RUN(test_spp);
  return layers_end();
}
