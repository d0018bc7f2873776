/* Benchmark of the ImageData pipeline: decode + transform images/s through dd_data (the real
 * pipeline, ring and threads included) for three kinds of data, with 1 and 2 decode threads:
 *   28x28 grey PNG (Fashion-MNIST-like), pad 4 + random crop 28 + mirror
 *   32x32 colour JPEG (CIFAR-like), pad 4 + random crop 32 + mirror + jitter
 *   256x256 colour JPEG -> random crop 224 + mirror (ImageNet-like)
 * Usage: bench_data [DIR] (images are generated there once; default /tmp/dd_bench_data). */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "caffe.pb-c.h"
#include "data/data.h"
#include "data/imgdec.h"
#include "base/rng.h"
#include "format/textformat.h"
#include "test_bench.h"

/* n images of w x h x c with smooth random content, as PNG or JPEG; writes DIR/list.txt. */
static int make_set(const char *dir, int n, int w, int h, int c, int jpeg) {
  char path[2100];
  mkdir(dir, 0755);
  snprintf(path, sizeof path, "%s/list.txt", dir);
  FILE *lf = fopen(path, "w");
  if (!lf) return -1;
  dd_image img = {.w = w, .h = h, .c = c};
  img.px = malloc((size_t)w * h * c);
  img.cap = (size_t)w * h * c;
  dd_rng r;
  dd_rng_seed(&r, 1);
  for (int i = 0; i < n; i++) {
    int fx = 1 + (int)(dd_rng_next(&r) % 7), fy = 1 + (int)(dd_rng_next(&r) % 7);
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++)
        for (int k = 0; k < c; k++)
          img.px[((size_t)y * w + x) * c + k] = (uint8_t)(128 + 60 * ((x * fx + y * fy + 13 * k) % 17) / 17 +
                                                          (int)(dd_rng_next(&r) % 40));
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[256];
    int rc = jpeg ? dd_image_encode_jpeg(&buf, &len, &img, 90, err, sizeof err) : dd_image_encode_png(&buf, &len, &img, err, sizeof err);
    if (rc) {
      fprintf(stderr, "encode: %s\n", err);
      return -1;
    }
    snprintf(path, sizeof path, "%s/%d.%s", dir, i, jpeg ? "jpg" : "png");
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fwrite(buf, 1, len, f);
    fclose(f);
    free(buf);
    fprintf(lf, "%d.%s %d\n", i, jpeg ? "jpg" : "png", i % 10);
  }
  free(img.px);
  fclose(lf);
  return 0;
}

static double run(const char *dir, const char *transform, int batch, int c, int hw, int threads, int batches) {
  char text[2048], err[1024];
  snprintf(text, sizeof text,
           "name: 'data' type: 'ImageData' top: 'data' top: 'label' transform_param { %s }"
           " image_data_param { source: '%s/list.txt' root_folder: '%s/' batch_size: %d shuffle: true %s }",
           transform, dir, dir, batch, c == 1 ? "is_color: false" : "");
  ProtobufCMessage *m = NULL;
  if (dd_text_parse(&m, &caffe__layer_parameter__descriptor, text, strlen(text), "bench", err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 0;
  }
  dd_data_config cfg = {.batch = batch, .channels = c, .height = hw, .width = hw, .train = 1, .seed = 1,
                        .threads = threads, .prefetch = 4, .max_error_fraction = 0.01f};
  dd_data *d = NULL;
  if (dd_data_open(&d, (Caffe__LayerParameter *)m, &cfg, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 0;
  }
  const float *data, *lab;
  double wait;
  dd_data_next(d, &data, &lab, &wait, err, sizeof err); /* warm-up: the ring fills */
  double t0 = now();
  for (int b = 0; b < batches; b++)
    if (dd_data_next(d, &data, &lab, &wait, err, sizeof err)) {
      fprintf(stderr, "%s\n", err);
      break;
    }
  double t = now() - t0;
  dd_data_close(d);
  protobuf_c_message_free_unpacked(m, NULL);
  return (double)batches * batch / t;
}

int main(int argc, char **argv) {
  const char *root = argc > 1 ? argv[1] : "/tmp/dd_bench_data";
  mkdir(root, 0755);
  struct {
    const char *name, *sub, *transform;
    int n, w, c, jpeg, out, batch, batches;
  } kinds[] = {
      {"28x28 grey PNG, pad 4 + crop 28 + mirror", "fmnist", "crop_size: 28 pad: 4 mirror: true scale: 0.00390625", 4000, 28, 1, 0, 28, 64, 120},
      {"32x32 colour JPEG, pad 4 + crop 32 + mirror + jitter", "cifar",
       "crop_size: 32 pad: 4 mirror: true mean_value: 115 mean_value: 126 mean_value: 130 scale: 0.017 color: true contrast: true brightness: true",
       4000, 32, 3, 1, 32, 64, 120},
      {"256x256 colour JPEG -> crop 224 + mirror", "imagenet", "crop_size: 224 mirror: true mean_value: 104 mean_value: 117 mean_value: 123", 300, 256, 3, 1, 224, 32, 12},
  };
  printf("%-55s %12s %12s %8s\n", "data", "1 thread", "2 threads", "scaling");
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    char dir[1024], marker[1100];
    if (strlen(root) > 900) return 1;
    snprintf(dir, sizeof dir, "%s/%s", root, kinds[k].sub);
    snprintf(marker, sizeof marker, "%s/list.txt", dir);
    struct stat st;
    if (stat(marker, &st) != 0 && make_set(dir, kinds[k].n, kinds[k].w, kinds[k].w, kinds[k].c, kinds[k].jpeg)) return 1;
    double one = run(dir, kinds[k].transform, kinds[k].batch, kinds[k].c, kinds[k].out, 1, kinds[k].batches);
    double two = run(dir, kinds[k].transform, kinds[k].batch, kinds[k].c, kinds[k].out, 2, kinds[k].batches);
    printf("%-55s %9.0f/s %9.0f/s %7.2fx\n", kinds[k].name, one, two, one > 0 ? two / one : 0);
  }
  return 0;
}
