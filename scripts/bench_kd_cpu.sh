#!/usr/bin/env bash
# The knowledge-distillation step on this machine's CPU: distilld (tests/bench_kd.c) against
# PyTorch 1.13 (Debian's python3-torch, scripts/bench_kd_torch.py), alternating, one table.
#
#   scripts/bench_kd_cpu.sh [--pairs "16-4:16-2 28-4:16-2 none:16-2"] [--batch 64] [--rounds 3] [--iters 10]
#                           [--channels 3 --size 32 --classes 100]
#                           [--variants "reference default torch-fp32 torch-bf16"]
#
# Variants: reference = distilld's FP32 reference path (DD_FUSE=0 DD_DNNL=0: every layer on its
# own, the project's own convolutions); default = distilld as it runs by default (the fused plan;
# FP32 convolutions on oneDNN where its kernels are AVX-512, the own kernels elsewhere; the frozen
# teacher on blocked activations; the student trained on blocked activations where the CPU has
# AVX512-BF16); dnnl-all = the fused plan with oneDNN running every
# convolution pass (DD_DNNL=all); bf16 = distilld with --precision bf16;
# torch-fp32 / torch-bf16 = PyTorch eager FP32 / bf16 autocast + channels_last. Every variant
# runs once per round, in that order, R rounds; the table gives the median over rounds of each
# run's median step (images/s and ms), and the teacher's forward alone. Nets: scripts/gen_wrn.py
# (teacher --mode deploy, student --mode bench), 3x32x32 and 100 classes unless told, 2 threads.
# A pair "none:S" times the student's training step alone (bench_kd / bench_kd_torch.py --teacher none).
# Environment: BUILD_DIR (default build-bench), PYTHON (default /usr/bin/python3).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
pairs="16-4:16-2 28-4:16-2" batch=64 rounds=3 iters=10 variants="reference default torch-fp32 torch-bf16"
channels=3 size=32 classes=100
while [ $# -gt 0 ]; do
  case "$1" in
    --pairs) pairs="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --variants) variants="$2"; shift 2 ;;
    --channels) channels="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --classes) classes="$2"; shift 2 ;;
    *) sed -n '2,18p' "$0" >&2; exit 2 ;;
  esac
done
. "$here/scripts/bench_lib.sh"
bench_build bench_kd
if [[ " $variants " == *" torch-"* ]]; then ensure_torch; fi
echo "== $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"

net() { # depth width mode
  local f="$work/wrn$1_$2_$3.prototxt"
  [ -f "$f" ] || "$py" "$here/scripts/gen_wrn.py" --mode "$3" --depth "$1" --width "$2" --classes "$classes" \
    --channels "$channels" --size "$size" --batch "$batch" -o "$f"
  echo "$f"
}

# one run: prints "img_s ms teacher_ms" from the RESULT line
run() { # variant teacher student
  local v="$1" t="$2" s="$3" out
  case "$v" in
    reference|default|dnnl-all|bf16)
      local td="${t%-*}" tw="${t#*-}" sd="${s%-*}" sw="${s#*-}" env=() prec=()
      [ "$v" = reference ] && env=(DD_FUSE=0 DD_DNNL=0)
      [ "$v" = dnnl-all ] && env=(DD_DNNL=all)
      [ "$v" = bf16 ] && prec=(--precision bf16)
      local tnet=none
      [ "$t" = none ] || tnet="$(net "$td" "$tw" deploy)"
      out=$(env "${env[@]}" "$build/tests/bench_kd" --device cpu --threads 2 --iters "$iters" --warmup 2 \
        --teacher "$tnet" --student "$(net "$sd" "$sw" bench)" "${prec[@]}" 2>&1) ;;
    torch-fp32|torch-bf16)
      local tname="WRN-$t"
      [ "$t" = none ] && tname=none
      out=$("$py" "$here/scripts/bench_kd_torch.py" --device cpu --threads 2 --teacher "$tname" --student "WRN-$s" \
        --batch "$batch" --classes "$classes" --channels "$channels" --size "$size" --iters "$iters" --warmup 2 \
        --mode "${v#torch-}" 2>&1) ;;
  esac
  local line
  line=$(grep '^RESULT' <<<"$out" | tail -1) || { echo "$v failed: $(tail -3 <<<"$out")" >&2; echo "- - -"; return; }
  sed -E 's/.* ms=([0-9.]+) img_s=([0-9.]+) teacher_ms=([0-9.]+).*/\2 \1 \3/' <<<"$line"
}

label() { if [ "$1" = none ]; then echo "WRN-$2 alone"; else echo "WRN-$1 -> WRN-$2"; fi; }

median() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print v[(NR+1)/2]; else printf "%.1f\n", (v[NR/2]+v[NR/2+1])/2}'; }

for p in $pairs; do
  t="${p%%:*}" s="${p##*:}"
  [ "$t" = none ] || net "${t%-*}" "${t#*-}" deploy >/dev/null
  net "${s%-*}" "${s#*-}" bench >/dev/null
  for r in $(seq 1 "$rounds"); do
    for v in $variants; do
      res=$(run "$v" "$t" "$s")
      echo "   $(label "$t" "$s") round $r $v: img/s ms teacher_ms = $res"
      echo "$res" >>"$work/$p.$v"
    done
  done
done

echo
echo "KD step, batch $batch, ${channels}x${size}x${size}, $classes classes, 2 threads: median of $rounds rounds (each the median of $iters steps)"
echo "| pair | variant | img/s | step ms | teacher forward ms |"
echo "| --- | --- | --- | --- | --- |"
for p in $pairs; do
  for v in $variants; do
    f="$work/$p.$v"
    echo "| $(label "${p%%:*}" "${p##*:}") | $v | $(cut -d' ' -f1 "$f" | grep -v - | median) | $(cut -d' ' -f2 "$f" | grep -v - | median) | $(cut -d' ' -f3 "$f" | grep -v - | median) |"
  done
done
