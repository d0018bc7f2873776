#!/usr/bin/env bash
# The Fashion-MNIST table of docs/results.md (scripts/fmnist_table.sh) on one GPU inside a fixed time
# budget: what scripts/device_check.sh runs on a lent GPU machine when it is given the data.
#
#   scripts/fmnist_gpu.sh --data DATA --budget SECONDS --out DIR
#
# DATA: data/fashion-mnist as scripts/prepare_fashion_mnist.py writes it, a folder or a .tar.xz of
# it (`tar -C data -cJf data/fmnist.tar.xz fashion-mnist`). Steps:
#   1. three short probes (PROBE_ITERS iterations each, on DEVICE) of the table's own jobs: the
#      WRN-16-4 teacher, the WRN-16-1 student alone and the student distilled (from the probe
#      teacher's weights); each gives images/s from its metrics.jsonl (records after iteration 100);
#   2. the teacher's schedule from those rates: the most whole epochs (940 iterations of 64) that
#      leave time, within 85 % of what is left, for the two students alone and the two distilled
#      students on the table's fixed schedule (9400 iterations = 10 epochs, seeds 1 and 2), capped
#      at MAX_TEACHER_EPOCHS. Under MIN_TEACHER_EPOCHS it stops there (exit 3): the GPU is too slow
#      for the table in this budget, and the rates say by how much;
#   3. scripts/fmnist_table.sh with DEVICE, TEACHER_ITERS, PARALLEL=1 (the students alone beside the
#      teacher, the distilled students beside each other) and DEADLINE (every run gets SIGTERM in
#      time to snapshot, so the table is printed even when a run is cut short);
#   4. into DIR: schedule.txt (rates and the chosen schedule), table.md, fmnist_runs.tar.xz (each
#      run's metrics.jsonl, job, log and final student weights) and teacher.caffemodel (the
#      teacher's final weights, to check on a CPU with `distilld test`).
#
# Environment: BIN (build-gpu/distilld), DEVICE (cuda:0), RUNS_DIR (/tmp/fmnist-gpu),
# PROBE_ITERS (300), PROBE_FROM (100), MIN_TEACHER_EPOCHS (10), MAX_TEACHER_EPOCHS (30), PYTHON (python3),
# STUDENT_ITERS and TEACHER_EPOCH_ITERS (the student jobs' 9400, and 940: smaller only for a
# smoke test of the script on a CPU, e.g. STUDENT_ITERS=40 TEACHER_EPOCH_ITERS=20 PROBE_ITERS=60
# PROBE_FROM=20 TEST_ITER=2 DEVICE=cpu), TEST_ITER (100).
set -uo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
data="" budget="" out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="$2"; shift 2 ;;
    --budget) budget="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 --data DATA --budget SECONDS --out DIR" >&2; exit 2 ;;
  esac
done
[ -n "$data" ] && [ -n "$budget" ] && [ -n "$out" ] || { echo "usage: $0 --data DATA --budget SECONDS --out DIR" >&2; exit 2; }
start=$(date +%s)
deadline=$((start + budget))
bin="${BIN:-$repo/build-gpu/distilld}"
device="${DEVICE:-cuda:0}"
runs="${RUNS_DIR:-/tmp/fmnist-gpu}"
probe_iters="${PROBE_ITERS:-300}"
min_epochs="${MIN_TEACHER_EPOCHS:-10}" max_epochs="${MAX_TEACHER_EPOCHS:-30}"
py="${PYTHON:-python3}"
mkdir -p "$out" "$runs/data" || exit 1
out="$(cd "$out" && pwd)"
[ -x "$bin" ] || { echo "fmnist_gpu: $bin is not built" >&2; exit 1; }
case "$bin" in /*) ;; *) bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")" ;; esac
log() { echo "[fmnist_gpu +$(($(date +%s) - start))s] $*" | tee -a "$out/schedule.txt" >&2; }

# ---- data and the runs folder ------------------------------------------------------------------
if [ -d "$data" ]; then
  ln -sfn "$(cd "$data" && pwd)" "$runs/data/fashion-mnist"
elif [ ! -f "$runs/data/fashion-mnist/train.txt" ]; then
  tar -C "$runs/data" -xJf "$data" || { log "cannot unpack $data"; exit 1; }
fi
[ -f "$runs/data/fashion-mnist/train.txt" ] || { log "$data holds no fashion-mnist/train.txt"; exit 1; }
ln -sfn "$repo/configs" "$runs/configs"
cd "$runs" || exit 1
mkdir -p out/probe
. "$repo/scripts/fmnist_jobs.sh"
student_iters="${STUDENT_ITERS:-$(job_iters configs/job_fmnist_student_alone.prototxt)}"
log "data ready: $(wc -l < data/fashion-mnist/train.txt) training and $(wc -l < data/fashion-mnist/test.txt) test images; device $device; budget ${budget}s"

# ---- 1. probes ---------------------------------------------------------------------------------
# rate DIR: images/s over the train records of DIR/metrics.jsonl from iteration PROBE_FROM on (64 a
# batch): the first iterations pay for cuDNN's algorithm choice and the data pipeline's start
rate() {
  "$py" - "$1/metrics.jsonl" "${PROBE_FROM:-100}" <<'PY'
import json, sys
try:
    recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
except OSError:
    recs = []
tr = [r for r in recs if r.get("type") == "train" and r["iter"] >= int(sys.argv[2])]
if len(tr) < 2 or tr[-1]["time"] <= tr[0]["time"]:
    print(0)
else:
    print("%.1f" % (64 * (tr[-1]["iter"] - tr[0]["iter"]) / (tr[-1]["time"] - tr[0]["time"])))
PY
}

probe() { # NAME JOB_FILE -> runs it under out/probe/NAME, prints its rate
  local name="$1" job="$2" a b
  job_variant "$job" "out/probe/$name.prototxt" "probe-$name" "out/probe/$name" "$probe_iters" display=20 \
    test_iter="${TEST_ITER:-100}" seed=1 weights="out/probe/teacher/snapshots/probe-teacher_iter_$probe_iters.caffemodel"
  a=$(date +%s)
  timeout -k 10 120 "$bin" train --job "out/probe/$name.prototxt" --device "$device" > "out/probe/$name.log" 2>&1
  local rc=$?
  b=$(date +%s)
  if [ $rc != 0 ]; then
    log "probe $name: exit $rc after $((b - a))s; its log ends:"
    tail -n 15 "out/probe/$name.log" | sed 's/^/    /' | tee -a "$out/schedule.txt" >&2
    echo 0
    return
  fi
  local r
  r=$(rate "out/probe/$name")
  log "probe $name: $probe_iters iterations in $((b - a))s (start-up and final test included); $r images/s from iteration ${PROBE_FROM:-100}"
  echo "$r"
}

rt=$(probe teacher configs/job_fmnist_teacher.prototxt | tail -1)
ra=$(probe alone configs/job_fmnist_student_alone.prototxt | tail -1)
rd=0
[ -f "out/probe/teacher/snapshots/probe-teacher_iter_$probe_iters.caffemodel" ] &&
  rd=$(probe distilled configs/job_fmnist_distill.prototxt | tail -1)

pack() {
  local files=()
  cd "$runs" || return
  for f in out/probe/*.log out/probe/*.prototxt out/probe/*/metrics.jsonl out/table/*.log out/table/*.prototxt \
    out/table/*/metrics.jsonl out/fmnist-teacher-wrn16-4*/metrics.jsonl out/table/*/snapshots/*_iter_"$student_iters".caffemodel \
    table.log; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] && tar -cJf "$out/fmnist_runs.tar.xz" "${files[@]}"
  local t
  t="$(ls out/fmnist-teacher-wrn16-4*/snapshots/*.caffemodel 2>/dev/null | sort -V | tail -1)"
  [ -n "$t" ] && cp "$t" "$out/teacher.caffemodel" && log "teacher weights returned: $t"
}

if [ "${rt%.*}" -le 0 ] || [ "${ra%.*}" -le 0 ] || [ "${rd%.*}" -le 0 ]; then
  log "a probe failed (teacher $rt, alone $ra, distilled $rd images/s): no table"
  pack
  exit 1
fi

# ---- 2. the teacher's schedule -----------------------------------------------------------------
now=$(date +%s)
read -r epochs why < <("$py" - "$((deadline - now - 30))" "$rt" "$ra" "$rd" "$min_epochs" "$max_epochs" "$student_iters" "${TEACHER_EPOCH_ITERS:-940}" <<'PY'
import sys
w, rt, ra, rd = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
lo, hi = int(sys.argv[5]), int(sys.argv[6])
student = int(sys.argv[7]) * 64
t_students = 2 * student / ra + 2 * student / rd
avail = 0.85 * w - t_students
e = int(avail * rt / (int(sys.argv[8]) * 64)) if avail > 0 else 0
print(min(e, hi), "%.0fs to work with; the students need %.0fs at the probes' rates; %.0fs left for the teacher = %d epochs (cap %d, floor %d)"
      % (w, t_students, avail, e, hi, lo))
PY
)
log "schedule: $why"
if [ "$epochs" -lt "$min_epochs" ]; then
  log "fewer than $min_epochs teacher epochs fit: no table in this budget"
  pack
  exit 3
fi
teacher_iters=$((epochs * ${TEACHER_EPOCH_ITERS:-940}))
log "teacher: $epochs epochs ($teacher_iters iterations); students: $student_iters iterations, seeds 1 and 2"

# ---- 3. the table ------------------------------------------------------------------------------
DEADLINE=$((deadline - 20)) PARALLEL=1 STUDENT_ITERS="$student_iters" TEST_ITER="${TEST_ITER:-100}" DEVICE="$device" TEACHER_ITERS="$teacher_iters" BIN="$bin" RUNS_DIR="$runs" \
  bash "$repo/scripts/fmnist_table.sh" > table.log 2>&1
rc=$?
grep -v '^distilld: iter ' table.log | tail -n 40
sed -n '/^| run /,$p' table.log > "$out/table.md"
log "fmnist_table.sh exit $rc; table:"
cat "$out/table.md"
pack
exit $rc
