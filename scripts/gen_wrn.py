#!/usr/bin/env python3
"""Writes pre-activation Wide-ResNet (WRN-depth-width, Zagoruyko & Komodakis 2016) nets as Caffe
prototxts, in the BatchNorm + Scale style Caffe users write.

  gen_wrn.py --depth 16 --width 4 --classes 10 --mode train_val --source-train T.txt --source-test V.txt
  gen_wrn.py --depth 16 --width 4 --classes 10 --mode deploy --channels 1 --size 28
  gen_wrn.py --depth 16 --width 2 --classes 100 --mode bench --channels 3 --size 32 --batch 64

train_val: ImageData layers (TRAIN: pad-and-crop plus mirror; TEST: centre crop), SoftmaxWithLoss,
Accuracy in TEST; with --data lmdb, Data layers over the LMDBs --source-train and --source-test
(written by `distilld convert-imageset`) with the same transforms instead.
deploy: an Input layer (the shape of one batch) and the logits blob "fc" only,
which is what a frozen teacher needs. bench: an Input layer with two tops, "data" (the shape of one
batch) and "label" (batch), and SoftmaxWithLoss: a TRAIN net that needs no data files, which is what
tests/bench_wrn.c times. --prefix puts a prefix on every layer and blob name except
the data and label blobs, so teacher and student layers can live in one combined prototxt.
"""
import argparse
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, required=True, help="6n+4: 10, 16, 22, 28, 40")
    ap.add_argument("--width", type=int, required=True, help="widening factor k")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--mode", choices=["train_val", "deploy", "bench"], default="train_val")
    ap.add_argument("--channels", type=int, default=1, help="image channels (1 gray, 3 colour)")
    ap.add_argument("--size", type=int, default=28, help="input height and width (crop size)")
    ap.add_argument("--batch", type=int, default=64, help="TRAIN batch (deploy: Input batch)")
    ap.add_argument("--test-batch", type=int, default=100)
    ap.add_argument("--pad", type=int, default=4, help="zero padding before the random crop")
    ap.add_argument("--scale", type=float, default=0.00390625, help="pixel scale (1/256 default)")
    ap.add_argument("--mean", type=float, action="append", help="mean_value (repeat per channel)")
    ap.add_argument("--source-train", default="data/fashion-mnist/train.txt")
    ap.add_argument("--source-test", default="data/fashion-mnist/test.txt")
    ap.add_argument("--root-folder", default="")
    ap.add_argument("--data", choices=["images", "lmdb"], default="images",
                    help="train_val: ImageData over list files, or Data over LMDBs")
    ap.add_argument("--prefix", default="")
    ap.add_argument("--bn-maf", type=float, default=0.9,
                    help="BatchNorm moving_average_fraction (Caffe's default 0.999 averages over ~1000 "
                         "iterations, too long for short schedules; 0.9 is PyTorch's momentum 0.1)")
    ap.add_argument("--name", default=None)
    ap.add_argument("-o", "--output", default="-")
    a = ap.parse_args()
    if (a.depth - 4) % 6 != 0 or a.depth < 10:
        sys.exit("gen_wrn.py: depth must be 6n+4 (10, 16, 22, 28, 40, ...)")
    n = (a.depth - 4) // 6
    widths = [16, 16 * a.width, 32 * a.width, 64 * a.width]
    P = a.prefix
    out = []
    w = out.append
    name = a.name or "WRN-%d-%d" % (a.depth, a.width)
    w('name: "%s"' % name)

    def conv(lname, bottom, top, num, k, stride, pad):
        w('layer { name: "%s" type: "Convolution" bottom: "%s" top: "%s"' % (lname, bottom, top))
        w('  convolution_param { num_output: %d bias_term: false kernel_size: %d stride: %d pad: %d'
          % (num, k, stride, pad))
        w('    weight_filler { type: "msra" } } }')

    def bn_relu(lname, bottom, top):
        w('layer { name: "%s_bn" type: "BatchNorm" bottom: "%s" top: "%s" batch_norm_param { moving_average_fraction: %g } }'
          % (lname, bottom, top, a.bn_maf))
        w('layer { name: "%s_scale" type: "Scale" bottom: "%s" top: "%s" scale_param { bias_term: true } }'
          % (lname, top, top))
        w('layer { name: "%s_relu" type: "ReLU" bottom: "%s" top: "%s" }' % (lname, top, top))

    if a.mode == "train_val":
        means = a.mean or []
        mv = "".join(" mean_value: %g" % m for m in means)
        root = ' root_folder: "%s"' % a.root_folder if a.root_folder else ""
        color = "" if a.channels == 3 else " is_color: false"
        kind = "ImageData" if a.data == "images" else "Data"
        w('layer { name: "data" type: "%s" top: "data" top: "label" include { phase: TRAIN }' % kind)
        w('  transform_param { scale: %g mirror: true crop_size: %d pad: %d%s }' % (a.scale, a.size, a.pad, mv))
        if a.data == "images":
            w('  image_data_param { source: "%s" batch_size: %d shuffle: true%s%s } }'
              % (a.source_train, a.batch, color, root))
        else:
            w('  data_param { source: "%s" backend: LMDB batch_size: %d } }' % (a.source_train, a.batch))
        w('layer { name: "data" type: "%s" top: "data" top: "label" include { phase: TEST }' % kind)
        w('  transform_param { scale: %g crop_size: %d%s }' % (a.scale, a.size, mv))
        if a.data == "images":
            w('  image_data_param { source: "%s" batch_size: %d%s%s } }' % (a.source_test, a.test_batch, color, root))
        else:
            w('  data_param { source: "%s" backend: LMDB batch_size: %d } }' % (a.source_test, a.test_batch))
    elif a.mode == "bench":
        w('layer { name: "%sinput" type: "Input" top: "data" top: "label"' % P)
        w('  input_param { shape { dim: %d dim: %d dim: %d dim: %d } shape { dim: %d } } }'
          % (a.batch, a.channels, a.size, a.size, a.batch))
    else:
        w('layer { name: "%sinput" type: "Input" top: "data"' % P)
        w('  input_param { shape { dim: %d dim: %d dim: %d dim: %d } } }' % (a.batch, a.channels, a.size, a.size))

    conv(P + "conv1", "data", P + "conv1", widths[0], 3, 1, 1)
    x = P + "conv1"
    for g in range(3):
        for b in range(n):
            blk = "%sg%d_b%d" % (P, g + 1, b + 1)
            stride = 2 if (g > 0 and b == 0) else 1
            cin = widths[g] if b == 0 else widths[g + 1]
            cout = widths[g + 1]
            pre = blk + "_pre"
            bn_relu(blk + "_1", x, pre)
            conv(blk + "_conv1", pre, blk + "_conv1", cout, 3, stride, 1)
            bn_relu(blk + "_2", blk + "_conv1", blk + "_mid")
            conv(blk + "_conv2", blk + "_mid", blk + "_conv2", cout, 3, 1, 1)
            if cin != cout or stride != 1:
                conv(blk + "_proj", pre, blk + "_proj", cout, 1, stride, 0)
                short = blk + "_proj"
            else:
                short = x
            w('layer { name: "%s_sum" type: "Eltwise" bottom: "%s_conv2" bottom: "%s" top: "%s_sum" }'
              % (blk, blk, short, blk))
            x = blk + "_sum"
    bn_relu(P + "final", x, P + "final")
    w('layer { name: "%spool" type: "Pooling" bottom: "%sfinal" top: "%spool" pooling_param { pool: AVE global_pooling: true } }'
      % (P, P, P))
    w('layer { name: "%sfc" type: "InnerProduct" bottom: "%spool" top: "%sfc"' % (P, P, P))
    w('  inner_product_param { num_output: %d weight_filler { type: "msra" } bias_filler { type: "constant" value: 0 } } }'
      % a.classes)
    if a.mode in ("train_val", "bench"):
        w('layer { name: "%sloss" type: "SoftmaxWithLoss" bottom: "%sfc" bottom: "label" top: "%sloss" }' % (P, P, P))
    if a.mode == "train_val":
        w('layer { name: "%saccuracy" type: "Accuracy" bottom: "%sfc" bottom: "label" top: "%saccuracy" include { phase: TEST } }'
          % (P, P, P))
    text = "\n".join(out) + "\n"
    header = "# %s, generated by scripts/gen_wrn.py %s\n" % (name, " ".join(sys.argv[1:]))
    if a.output == "-":
        sys.stdout.write(header + text)
    else:
        with open(a.output, "w") as f:
            f.write(header + text)


if __name__ == "__main__":
    main()
