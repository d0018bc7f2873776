#!/usr/bin/env python3
"""Turns Fashion-MNIST (idx files) into PNG files and list files for Caffe's ImageData layer.

  prepare_fashion_mnist.py --out data/fashion-mnist
  prepare_fashion_mnist.py --src DIR --out OUT --limit 100     # the first 100 of each split

Reads SRC/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (default SRC: the Debian package
dataset-fashion-mnist, /usr/share/datasets/fashion-mnist) and writes

  OUT/train/<label>/<index>.png   8-bit gray PNGs, <index> = position in the split (0-based)
  OUT/test/<label>/<index>.png
  OUT/train.txt, OUT/test.txt     lines "train/<label>/<index>.png <label>", in index order
  OUT/labels.txt                  the 10 class names, line k = label k

The list paths are relative to OUT, so a net reads them with
  image_data_param { source: "OUT/train.txt" root_folder: "OUT/" }

The idx headers are checked (magic numbers 2051 / 2049, image and label counts equal, sizes that
match the data, labels 0..9); a bad file stops the run with a message naming it. Runs are
idempotent: a PNG that exists with the right size is left alone (--force rewrites everything).
Only the Python standard library is used (PNGs are written with zlib and struct).
"""
import argparse
import gzip
import os
import struct
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dataset_io import png_bytes, write_if_changed, write_text_atomic  # noqa: E402

DEFAULT_SRC = "/usr/share/datasets/fashion-mnist"
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SPLITS = [("train", "train"), ("test", "t10k")]  # (output name, idx file prefix)


class DataError(Exception):
    pass


def read_idx(src, name):
    """The bytes of SRC/NAME.gz (or SRC/NAME when not compressed) and the path read."""
    for path, opener in ((os.path.join(src, name + ".gz"), gzip.open),
                         (os.path.join(src, name), open)):
        if os.path.exists(path):
            try:
                with opener(path, "rb") as f:
                    return f.read(), path
            except (OSError, EOFError, zlib.error) as e:
                raise DataError("%s: cannot read: %s" % (path, e))
    raise DataError("%s: not found (nor %s.gz)" % (os.path.join(src, name), os.path.join(src, name)))


def load_split(src, prefix):
    """(count, rows, cols, image bytes, label bytes) of one split, after checking both headers."""
    img, img_path = read_idx(src, prefix + "-images-idx3-ubyte")
    lab, lab_path = read_idx(src, prefix + "-labels-idx1-ubyte")
    if len(img) < 16:
        raise DataError("%s: too short for an idx3 header (%d bytes)" % (img_path, len(img)))
    magic, n, rows, cols = struct.unpack(">IIII", img[:16])
    if magic != 2051:
        raise DataError("%s: bad magic number %d (an idx3 image file has 2051)" % (img_path, magic))
    if rows == 0 or cols == 0 or len(img) != 16 + n * rows * cols:
        raise DataError("%s: header says %d images of %dx%d (%d bytes of pixels) but the file has %d"
                        % (img_path, n, rows, cols, n * rows * cols, len(img) - 16))
    if len(lab) < 8:
        raise DataError("%s: too short for an idx1 header (%d bytes)" % (lab_path, len(lab)))
    magic, nl = struct.unpack(">II", lab[:8])
    if magic != 2049:
        raise DataError("%s: bad magic number %d (an idx1 label file has 2049)" % (lab_path, magic))
    if len(lab) != 8 + nl:
        raise DataError("%s: header says %d labels but the file has %d" % (lab_path, nl, len(lab) - 8))
    if nl != n:
        raise DataError("%s: %d labels for %d images in %s" % (lab_path, nl, n, img_path))
    if n and max(lab[8:]) >= len(LABELS):
        bad = next(i for i in range(n) if lab[8 + i] >= len(LABELS))
        raise DataError("%s: label %d of item %d is not in 0..%d" % (lab_path, lab[8 + bad], bad,
                                                                    len(LABELS) - 1))
    return n, rows, cols, img, lab


def convert_split(out, split, loaded, limit, force):
    n, rows, cols, img, lab = loaded
    if limit is not None:
        n = min(n, limit)
    for k in range(len(LABELS)):
        os.makedirs(os.path.join(out, split, str(k)), exist_ok=True)
    size = rows * cols
    lines = []
    written = 0
    t0 = time.time()
    step = max(1, n // 10)
    for i in range(n):
        label = lab[8 + i]
        rel = "%s/%d/%d.png" % (split, label, i)
        data = png_bytes(cols, rows, 1, img[16 + i * size:16 + (i + 1) * size])
        written += write_if_changed(os.path.join(out, rel), data, force)
        lines.append("%s %d\n" % (rel, label))
        if (i + 1) % step == 0 or i + 1 == n:
            print("%s: %d/%d images (%d written, %d already there) %.1fs"
                  % (split, i + 1, n, written, i + 1 - written, time.time() - t0), flush=True)
    write_text_atomic(os.path.join(out, split + ".txt"), "".join(lines))
    return n, written


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=DEFAULT_SRC, help="folder of the idx files (default %(default)s)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--limit", type=int, default=None, help="convert only the first N of each split")
    ap.add_argument("--force", action="store_true", help="rewrite PNGs that already exist")
    a = ap.parse_args()
    if a.limit is not None and a.limit < 0:
        ap.error("--limit must be >= 0")
    t0 = time.time()
    try:
        # read and check both splits before writing anything
        loaded = [(split, load_split(a.src, prefix)) for split, prefix in SPLITS]
        os.makedirs(a.out, exist_ok=True)
        write_text_atomic(os.path.join(a.out, "labels.txt"), "".join(l + "\n" for l in LABELS))
        total = 0
        for split, data in loaded:
            n, _ = convert_split(a.out, split, data, a.limit, a.force)
            total += n
    except DataError as e:
        sys.exit("prepare_fashion_mnist.py: error: %s" % e)
    except OSError as e:
        sys.exit("prepare_fashion_mnist.py: error: %s" % e)
    print("done: %d images under %s in %.1fs" % (total, a.out, time.time() - t0))


if __name__ == "__main__":
    main()
