#!/usr/bin/env python3
"""Expected data-parallel efficiency, worked out on paper (docs/performance.md section 8).

Inputs, per net: the output of `distilld check NET` (layers, top shapes, learnable parameter
shapes) and of `distilld time --model NET` (measured per-layer backward times, on whatever device
ran it). The model:

  * buckets: learnable parameters in reverse layer order, closed once they reach --bucket-mb, as
    core/train/solver.c groups them; a bucket is final when backward has passed its lowest layer;
  * backward: the measured per-layer backward times, scaled so that their total is the GPU
    backward time (the measured split between layers is kept, the total is an input);
  * GPU compute: FLOPs of the convolutions and inner products (2 per multiply-add; backward twice
    forward) at an assumed sustained rate, for the student's forward and backward and the
    teacher's forward (a KD step);
  * all-reduce of a bucket of S bytes over n GPUs (ring): alpha + 2 (n - 1) / n * S / busbw, one
    bucket after another on a communication stream, each starting when it is final;
  * exposed communication: when the last sum ends after backward ends; efficiency = compute /
    (compute + exposed). Data loading, the update and stragglers are left out.

  scripts/dp_on_paper.py --student-check S.check --student-time S.time [--teacher-check T.check]
                         [--batch 128] [--bucket-mb 25] [--tflops 20,40]
"""
import argparse
import re
import sys

# (name, GPUs, assumed NCCL bus bandwidth GB/s, latency us): nominal rates from spec sheets, times
# the fraction of them NCCL's all-reduce reaches (an assumption, stated in docs/performance.md)
LINKS = [
    ("8 GPUs, NVLink 4 (NVSwitch)", 8, 360.0, 15.0),   # 450 GB/s per direction per H100, 80 %
    ("16 GPUs, 2 nodes, 8x NDR IB each", 16, 40.0, 30.0),  # 50 GB/s per 400 Gb/s port, 80 %
    ("16 GPUs, 2 nodes, 1x 100 GbE each", 16, 10.0, 50.0),  # 12.5 GB/s per node, 80 %
]


def parse_check(path):
    """[(layer, type, flops_fwd_per_image, learnable_floats)] in net order."""
    layers = []
    cur = None
    for line in open(path):
        m = re.match(r"\[(\d+)\] (\S+) \((\w+)\)", line)
        if m:
            cur = {"name": m.group(2), "type": m.group(3), "top": None, "learn": 0, "weight": None}
            layers.append(cur)
            continue
        if cur is None:
            continue
        m = re.match(r"\s+tops: \S+ ([0-9x]+)", line)
        if m and cur["top"] is None:
            cur["top"] = [int(v) for v in m.group(1).split("x")]
        m = re.match(r"\s+params: (.*)", line)
        if m:
            for i, part in enumerate(m.group(1).split(";")):
                mm = re.match(r"\s*([0-9x]+) lr_mult (\S+)", part)
                if not mm:
                    continue
                dims = [int(v) for v in mm.group(1).split("x")]
                n = 1
                for d in dims:
                    n *= d
                if float(mm.group(2)) != 0:
                    cur["learn"] += n
                if i == 0:
                    cur["weight"] = dims
    out = []
    for l in layers:
        flops = 0.0
        if l["type"] in ("Convolution", "InnerProduct") and l["weight"] and l["top"]:
            per_out = 1
            for d in l["weight"][1:]:
                per_out *= d
            elems = 1
            for d in l["top"][1:]:
                elems *= d
            flops = 2.0 * elems * per_out
        out.append((l["name"], l["type"], flops, l["learn"]))
    return out


def parse_time(path):
    t = {}
    for line in open(path):
        m = re.match(r"(\S+)\s+\S+\s+([0-9.]+)\s+([0-9.]+)\s*$", line)
        if m:
            t[m.group(1)] = float(m.group(3))
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student-check", required=True)
    ap.add_argument("--student-time", required=True)
    ap.add_argument("--teacher-check")
    ap.add_argument("--batch", type=int, default=128, help="images per GPU")
    ap.add_argument("--bucket-mb", type=float, default=25.0)
    ap.add_argument("--tflops", default="20,40", help="assumed sustained FP32 rates, TFLOP/s")
    a = ap.parse_args()

    layers = parse_check(a.student_check)
    times = parse_time(a.student_time)
    missing = [n for n, _, _, learn in layers if learn and n not in times]
    if missing:
        sys.exit("dp_on_paper: no backward time for %s in %s" % (", ".join(missing[:5]), a.student_time))
    fwd_flops = sum(f for _, _, f, _ in layers) * a.batch
    t_flops = sum(f for _, _, f, _ in parse_check(a.teacher_check)) * a.batch if a.teacher_check else 0.0
    bwd_ms = [times.get(n, 0.0) for n, _, _, _ in layers]
    total_bwd = sum(bwd_ms)
    # time (fraction of backward) at which backward has passed layer i: layers run last to first
    done_at = [0.0] * len(layers)
    acc = 0.0
    for i in range(len(layers) - 1, -1, -1):
        acc += bwd_ms[i]
        done_at[i] = acc / total_bwd
    # buckets, as core/train/solver.c makes them
    buckets = []  # (bytes, final fraction)
    size, low = 0, None
    for i in range(len(layers) - 1, -1, -1):
        if layers[i][3]:
            size += 4 * layers[i][3]
            low = i
            if size >= a.bucket_mb * 1048576:
                buckets.append((size, done_at[low]))
                size, low = 0, None
    if size:
        buckets.append((size, done_at[low]))
    grad_mb = sum(b for b, _ in buckets) / 1048576
    print("student: %d layers, %.1f MB of gradients in %d bucket(s) of <= %g MB; per-layer backward split "
          "from %s" % (len(layers), grad_mb, len(buckets), a.bucket_mb, a.student_time))
    print("per GPU and step (batch %d): student %.1f GFLOP forward, %.1f backward; teacher forward %.1f GFLOP"
          % (a.batch, fwd_flops / 1e9, 2 * fwd_flops / 1e9, t_flops / 1e9))
    print()
    print("| assumed FP32 rate | link | compute ms | all-reduce ms (all buckets) | exposed ms | efficiency |")
    print("|---|---|---|---|---|---|")
    for rate in [float(v) for v in a.tflops.split(",")]:
        t_fwd = (fwd_flops + t_flops) / (rate * 1e12) * 1e3
        t_bwd = 2 * fwd_flops / (rate * 1e12) * 1e3
        for name, n, busbw, lat in LINKS:
            end = 0.0
            total_comm = 0.0
            for size, final in buckets:
                c = lat / 1e3 + 2.0 * (n - 1) / n * size / (busbw * 1e9) * 1e3
                total_comm += c
                end = max(end, final * t_bwd) + c
            exposed = max(0.0, end - t_bwd)
            compute = t_fwd + t_bwd
            print("| %g TFLOP/s | %s | %.2f | %.3f | %.3f | %.1f %% |" % (
                rate, name, compute, total_comm, exposed, 100.0 * compute / (compute + exposed)))


if __name__ == "__main__":
    main()
