#!/usr/bin/env python3
"""Turns CIFAR-10 or CIFAR-100 (the binary versions) into PNG files and list files for Caffe's
ImageData layer.

  prepare_cifar.py --src cifar-10-batches-bin --out data/cifar10
  prepare_cifar.py --src cifar-100-binary --out data/cifar100 --label coarse
  prepare_cifar.py --src DIR --out OUT --limit 100      # the first 100 of each split

Input (--dataset auto picks whichever is in SRC, or in its cifar-10-batches-bin/ or
cifar-100-binary/ subfolder, as the official archives unpack):
  CIFAR-10:  data_batch_1.bin .. data_batch_5.bin (train, in that order), test_batch.bin;
             records of 1 label byte + 3072 pixel bytes (the R, G and B planes of a 32x32 image)
  CIFAR-100: train.bin, test.bin; records of 1 coarse label byte + 1 fine label byte + 3072 pixel
             bytes; --label fine (100 classes, the default) or coarse (20 superclasses)

Output:
  OUT/train/<label>/<index>.png   32x32 RGB PNGs (PNG stores R, G, B; a decoder that follows
  OUT/test/<label>/<index>.png    OpenCV, like Caffe's, hands the net B, G, R)
  OUT/train.txt, OUT/test.txt     lines "train/<label>/<index>.png <label>", in index order
  OUT/labels.txt                  the class names, line k = label k (from batches.meta.txt,
                                  fine_label_names.txt or coarse_label_names.txt when present)

<index> is the position in the split (CIFAR-10's training batches count on from one another).
The list paths are relative to OUT: image_data_param { source: "OUT/train.txt" root_folder: "OUT/" }.
File sizes must be whole records and labels in range; a bad file stops the run with a message
naming it. Runs are idempotent: a PNG that exists with the right size is left alone (--force
rewrites everything). Only the Python standard library is used.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dataset_io import png_bytes, write_if_changed, write_text_atomic  # noqa: E402

CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer",
                  "dog", "frog", "horse", "ship", "truck"]
CIFAR100_FINE = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm"]
CIFAR100_COARSE = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2"]

SIDE = 32
PIXELS = 3 * SIDE * SIDE
LAYOUTS = {  # dataset: (subfolder of the official archive, train files, test files, label bytes)
    "cifar10": ("cifar-10-batches-bin", ["data_batch_%d.bin" % i for i in range(1, 6)],
                ["test_batch.bin"], 1),
    "cifar100": ("cifar-100-binary", ["train.bin"], ["test.bin"], 2),
}


class DataError(Exception):
    pass


def find_dataset(src, dataset):
    """(dataset, folder holding its .bin files)."""
    names = [dataset] if dataset != "auto" else list(LAYOUTS)
    for name in names:
        sub, train, _, _ = LAYOUTS[name]
        for folder in (src, os.path.join(src, sub)):
            if os.path.exists(os.path.join(folder, train[0])):
                return name, folder
    want = " or ".join("%s (%s)" % (LAYOUTS[n][1][0], n) for n in names)
    raise DataError("%s: no %s here or in its %s subfolder" % (
        src, want, " / ".join(LAYOUTS[n][0] for n in names)))


def read_records(path, label_bytes):
    rec = label_bytes + PIXELS
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError("%s: cannot read: %s" % (path, e))
    if not data or len(data) % rec:
        raise DataError("%s: %d bytes is not a whole number of %d-byte records (%d label byte%s + "
                        "3072 pixel bytes): not a %s file?" % (
                            path, len(data), rec, label_bytes, "s" if label_bytes > 1 else "",
                            "CIFAR-100" if label_bytes == 2 else "CIFAR-10"))
    return data


def load_split(folder, files, label_bytes, label_offset, nclasses):
    """[(label, pixel bytes as R, G, B planes)] of a split, in file order, after checking labels."""
    recs = []
    rec = label_bytes + PIXELS
    for name in files:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            raise DataError("%s: not found" % path)
        data = read_records(path, label_bytes)
        for i in range(len(data) // rec):
            base = i * rec
            label = data[base + label_offset]
            if label >= nclasses:
                raise DataError("%s: record %d has label %d, not in 0..%d" % (path, i, label,
                                                                             nclasses - 1))
            recs.append((label, data[base + label_bytes:base + rec]))
    return recs


def label_names(folder, dataset, kind):
    """Class names from the archive's text files when present, else the published lists."""
    if dataset == "cifar10":
        meta, default = "batches.meta.txt", CIFAR10_LABELS
    elif kind == "fine":
        meta, default = "fine_label_names.txt", CIFAR100_FINE
    else:
        meta, default = "coarse_label_names.txt", CIFAR100_COARSE
    try:
        with open(os.path.join(folder, meta)) as f:
            names = [l.strip() for l in f if l.strip()]
        if len(names) == len(default):
            return names
    except OSError:
        pass
    return default


def interleave(planes):
    """R, G, B planes (3 x 1024 bytes) -> packed RGB rows."""
    n = SIDE * SIDE
    out = bytearray(PIXELS)
    out[0::3] = planes[0:n]
    out[1::3] = planes[n:2 * n]
    out[2::3] = planes[2 * n:3 * n]
    return bytes(out)


def convert_split(out, split, recs, nclasses, limit, force):
    n = len(recs) if limit is None else min(len(recs), limit)
    for k in range(nclasses):
        os.makedirs(os.path.join(out, split, str(k)), exist_ok=True)
    lines = []
    written = 0
    t0 = time.time()
    step = max(1, n // 10)
    for i in range(n):
        label, planes = recs[i]
        rel = "%s/%d/%d.png" % (split, label, i)
        written += write_if_changed(os.path.join(out, rel),
                                    png_bytes(SIDE, SIDE, 3, interleave(planes)), force)
        lines.append("%s %d\n" % (rel, label))
        if (i + 1) % step == 0 or i + 1 == n:
            print("%s: %d/%d images (%d written, %d already there) %.1fs"
                  % (split, i + 1, n, written, i + 1 - written, time.time() - t0), flush=True)
    write_text_atomic(os.path.join(out, split + ".txt"), "".join(lines))
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", required=True, help="folder of the .bin files (or the archive's parent)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--dataset", choices=["auto", "cifar10", "cifar100"], default="auto")
    ap.add_argument("--label", choices=["fine", "coarse"], default="fine",
                    help="CIFAR-100 labels to use (default %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="convert only the first N of each split")
    ap.add_argument("--force", action="store_true", help="rewrite PNGs that already exist")
    a = ap.parse_args()
    if a.limit is not None and a.limit < 0:
        ap.error("--limit must be >= 0")
    t0 = time.time()
    try:
        dataset, folder = find_dataset(a.src, a.dataset)
        _, train, test, label_bytes = LAYOUTS[dataset]
        # CIFAR-100 records start with the coarse label, then the fine one
        offset = 0 if dataset == "cifar10" or a.label == "coarse" else 1
        names = label_names(folder, dataset, a.label)
        # read and check both splits before writing anything
        splits = [(split, load_split(folder, files, label_bytes, offset, len(names)))
                  for split, files in (("train", train), ("test", test))]
        print("%s (%s labels, %d classes) from %s" % (
            dataset, a.label if dataset == "cifar100" else "the", len(names), folder), flush=True)
        os.makedirs(a.out, exist_ok=True)
        write_text_atomic(os.path.join(a.out, "labels.txt"), "".join(l + "\n" for l in names))
        total = sum(convert_split(a.out, split, recs, len(names), a.limit, a.force)
                    for split, recs in splits)
    except (DataError, OSError) as e:
        sys.exit("prepare_cifar.py: error: %s" % e)
    print("done: %d images under %s in %.1fs" % (total, a.out, time.time() - t0))


if __name__ == "__main__":
    main()
