#!/usr/bin/env python3
"""Writes a Caffe BlobProto (.binaryproto) for `distilld train/forward --input NAME=FILE`.

  make_blob.py --shape 64,3,32,32 --fill gaussian --seed 1 -o data.binaryproto
  make_blob.py --shape 64 --fill labels:10 --seed 1 -o label.binaryproto
  make_blob.py --shape 2,3,9,9 --fill sin -o data.binaryproto      # x[i] = sin(i)

--fill: gaussian (N(0,1)), uniform (U[0,1)), labels:K (integers 0..K-1), sin, zeros.
No dependencies beyond Python 3: the protobuf wire format is written directly
(BlobProto.shape = field 7 with packed int64 dims, BlobProto.data = field 5, packed floats).
"""
import argparse
import math
import random
import struct


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, wire, payload):
    return varint((num << 3) | wire) + payload


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, help="comma-separated dims, e.g. 64,3,32,32")
    ap.add_argument("--fill", default="gaussian")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    dims = [int(d) for d in a.shape.split(",") if d]
    n = 1
    for d in dims:
        n *= d
    rng = random.Random(a.seed)
    if a.fill == "gaussian":
        vals = [rng.gauss(0.0, 1.0) for _ in range(n)]
    elif a.fill == "uniform":
        vals = [rng.random() for _ in range(n)]
    elif a.fill.startswith("labels:"):
        k = int(a.fill.split(":")[1])
        vals = [float(rng.randrange(k)) for _ in range(n)]
    elif a.fill == "sin":
        vals = [math.sin(i) for i in range(n)]
    elif a.fill == "zeros":
        vals = [0.0] * n
    else:
        raise SystemExit("make_blob.py: unknown --fill %s" % a.fill)
    dims_payload = b"".join(varint(d) for d in dims)
    shape = field(1, 2, varint(len(dims_payload)) + dims_payload)
    data = struct.pack("<%df" % n, *vals)
    blob = field(7, 2, varint(len(shape)) + shape) + field(5, 2, varint(len(data)) + data)
    with open(a.output, "wb") as f:
        f.write(blob)


if __name__ == "__main__":
    main()
