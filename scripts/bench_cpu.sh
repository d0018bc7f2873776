#!/usr/bin/env bash
# CPU training-step benchmark: distilld (tests/bench_wrn.c) against PyTorch 1.13 (Debian's
# python3-torch) on the same pre-activation Wide-ResNets, batch and thread count, one table.
#
#   scripts/bench_cpu.sh [--threads T] [--iters N] [--rounds R] [--nets "2 4"]
#
# Both sides run one training step per iteration: forward, backward, SGD with momentum 0.9
# (distilld adds weight decay 5e-4, as its solver does), batch 64 of 3x32x32 images, 100 classes,
# after 2 warm-up steps; each reports the median of N steps. Timings on a shared machine are
# noisy, so the two run alternately, R rounds per net, and the table shows the median over rounds
# of each side's per-round median. Environment: BUILD_DIR (default build-bench), PYTHON (default
# /usr/bin/python3, where Debian's torch lives).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
threads=2 iters=10 rounds=3 nets="2 4"
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --nets) nets="$2"; shift 2 ;;
    *) echo "usage: $0 [--threads T] [--iters N] [--rounds R] [--nets \"2 4\"]" >&2; exit 2 ;;
  esac
done
. "$here/scripts/bench_lib.sh"
bench_build bench_wrn
ensure_torch

cat >"$work/wrn_torch.py" <<'EOF'
# The nets of scripts/gen_wrn.py --mode bench in PyTorch: pre-activation WRN-depth-k, convolutions
# without bias, BatchNorm with affine (Caffe's BatchNorm + Scale), a 1x1 projection from the
# pre-activation where shape changes, global average pooling, a linear layer with bias.
import statistics, sys, time
import torch
import torch.nn as nn

depth, k, batch, threads, iters, warmup = (int(a) for a in sys.argv[1:7])
torch.set_num_threads(threads)
torch.manual_seed(0)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.c1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.c2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.proj = nn.Conv2d(cin, cout, 1, stride, 0, bias=False) if (cin != cout or stride != 1) else None

    def forward(self, x):
        pre = torch.relu(self.bn1(x))
        y = self.c2(torch.relu(self.bn2(self.c1(pre))))
        return y + (self.proj(pre) if self.proj is not None else x)


n = (depth - 4) // 6
w = [16, 16 * k, 32 * k, 64 * k]
layers = [nn.Conv2d(3, w[0], 3, 1, 1, bias=False)]
for g in range(3):
    for b in range(n):
        layers.append(Block(w[g] if b == 0 else w[g + 1], w[g + 1], 2 if (g > 0 and b == 0) else 1))
layers += [nn.BatchNorm2d(w[3]), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w[3], 100)]
model = nn.Sequential(*layers)
model.train()
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
lossf = nn.CrossEntropyLoss()
x = torch.randn(batch, 3, 32, 32)
y = torch.randint(0, 100, (batch,))
times = []
for i in range(warmup + iters):
    t = time.perf_counter()
    opt.zero_grad()
    loss = lossf(model(x), y)
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - t)
ms = statistics.median(times[warmup:]) * 1e3
print("RESULT net=WRN-%d-%d ms=%.2f img_s=%.2f" % (depth, k, ms, batch * 1e3 / ms))
EOF

field() { sed -n "s/.*RESULT .* $1=\([0-9.]*\).*/\1/p" | tail -1; }
median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
"$build/tests/bench_wrn" --threads "$threads" # the kernels in use and the sgemm ceiling
echo "== PyTorch $("$py" -c 'import torch; print(torch.__version__)'), torch.set_num_threads($threads)"
for k in $nets; do
  "$py" "$here/scripts/gen_wrn.py" --depth 16 --width "$k" --classes 100 --mode bench --channels 3 \
    --size 32 --batch 64 -o "$work/wrn16_$k.prototxt"
  : >"$work/dd_$k" ; : >"$work/pt_$k"
  for r in $(seq "$rounds"); do
    out="$("$build/tests/bench_wrn" --threads "$threads" --iters "$iters" --warmup 2 --no-gemm "$work/wrn16_$k.prototxt")"
    echo "$out" | field ms >>"$work/dd_$k"
    out="$("$py" "$work/wrn_torch.py" 16 "$k" 64 "$threads" "$iters" 2)"
    echo "$out" | field ms >>"$work/pt_$k"
    echo "   WRN-16-$k round $r: distilld $(tail -1 "$work/dd_$k") ms, PyTorch $(tail -1 "$work/pt_$k") ms"
  done
done

echo
printf "%-10s %18s %14s %18s %14s %10s\n" net "distilld ms/step" "distilld img/s" "PyTorch ms/step" "PyTorch img/s" "PT / dd"
for k in $nets; do
  d="$(median <"$work/dd_$k")" p="$(median <"$work/pt_$k")"
  awk -v n="WRN-16-$k" -v d="$d" -v p="$p" 'BEGIN {
    printf "%-10s %18.1f %14.1f %18.1f %14.1f %10.2f\n", n, d, 64000 / d, p, 64000 / p, p / d }'
done
echo "(batch 64, $threads threads, median over $rounds alternating rounds of the median of $iters steps;"
echo " PT / dd > 1: distilld is faster)"
