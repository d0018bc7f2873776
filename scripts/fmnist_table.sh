#!/usr/bin/env bash
# The Fashion-MNIST results table of docs/results.md, resumable: run it again after any stop and it
# goes on from the newest snapshots.
#   1. the WRN-16-4 teacher (configs/job_fmnist_teacher.prototxt, 9400 iterations = 10 epochs);
#   2. for each seed (1 and 2): the WRN-16-1 student alone (configs/job_fmnist_student_alone.prototxt)
#      and the same student distilled from the teacher (configs/job_fmnist_distill.prototxt), the
#      identical schedule and seed;
#   3. a markdown table of the final test accuracies, the distilled-minus-alone difference per seed,
#      and the training time of each run (from its metrics.jsonl).
# A finished run (its final snapshot and final test record exist) is not run again.
#
#   scripts/fmnist_table.sh [--seeds "1 2"] [--table-only]
#
# Environment: BIN (default build/distilld of this checkout), THREADS (0: all cores), NICE (default
# 0), RUNS_DIR (default: the repository root): where data/fashion-mnist
# (scripts/prepare_fashion_mnist.py), configs/ (or a link to the repository's) and out/ are.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "${RUNS_DIR:-$repo}"
bin=${BIN:-$repo/build/distilld}
threads=${THREADS:-0}
seeds="1 2"
table_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="$2"; shift 2 ;;
    --table-only) table_only=1; shift ;;
    *) echo "usage: $0 [--seeds \"1 2\"] [--table-only]" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "fmnist_table: $bin is not built" >&2; exit 1; }
[ -f data/fashion-mnist/train.txt ] || { echo "fmnist_table: run scripts/prepare_fashion_mnist.py --out data/fashion-mnist first" >&2; exit 1; }
mkdir -p out/table

# done NAME OUT_DIR: 0 when the run's final snapshot and a test record at max_iter exist
finished() {
  [ -f "$2/snapshots/$1_iter_9400.caffemodel" ] && grep -q '"type":"test","iter":9400' "$2/metrics.jsonl" 2>/dev/null
}

run() { # JOB NAME OUT_DIR
  if finished "$2" "$3"; then
    echo "== $2: finished"
    return
  fi
  echo "== $2: $1 (resumes from its newest snapshot)"
  nice -n "${NICE:-0}" "$bin" train --job "$1" --resume --threads "$threads"
}

teacher_out=out/fmnist-teacher-wrn16-4
if [ $table_only = 0 ]; then
  run configs/job_fmnist_teacher.prototxt fmnist-teacher-wrn16-4 "$teacher_out"
  for s in $seeds; do
    sed -e "s|^name: .*|name: \"fmnist-wrn16-1-alone-s$s\"|" -e "s|^output_dir: .*|output_dir: \"out/table/alone-s$s\"|" \
      -e "s|^seed: .*|seed: $s|" configs/job_fmnist_student_alone.prototxt > "out/table/alone-s$s.prototxt"
    sed -e "s|^name: .*|name: \"fmnist-wrn16-1-distilled-s$s\"|" \
      -e "s|^output_dir: .*|output_dir: \"out/table/distilled-s$s\"   # snapshots/, metrics.jsonl|" \
      -e "s|^seed: .*|seed: $s|" configs/job_fmnist_distill.prototxt > "out/table/distilled-s$s.prototxt"
    run "out/table/alone-s$s.prototxt" "fmnist-wrn16-1-alone-s$s" "out/table/alone-s$s"
    run "out/table/distilled-s$s.prototxt" "fmnist-wrn16-1-distilled-s$s" "out/table/distilled-s$s"
  done
fi

python3 - "$teacher_out" "$seeds" <<'PY'
import json, os, sys
teacher, seeds = sys.argv[1], sys.argv[2].split()

def summary(d):
    p = os.path.join(d, "metrics.jsonl")
    if not os.path.exists(p):
        return None
    recs = [json.loads(l) for l in open(p) if l.strip()]
    tests = [r for r in recs if r.get("type") == "test"]
    train = [r for r in recs if r.get("type") == "train"]
    last = tests[-1] if tests else None
    # training time: the sum of the gaps between consecutive records of a run, leaving out gaps of
    # over 10 minutes (a stop and a later resume)
    t = sorted(r["time"] for r in recs if "time" in r)
    busy = sum(b - a for a, b in zip(t, t[1:]) if b - a < 600)
    return {"iter": last["iter"] if last else None, "acc": last.get("accuracy") if last else None,
            "done": bool(last and last["iter"] == 9400), "hours": busy / 3600, "displays": len(train)}

def fmt(s):
    if not s or s["acc"] is None:
        return "not run yet", ""
    acc = "%.4f" % s["acc"] + ("" if s["done"] else " (iter %d of 9400)" % s["iter"])
    return acc, "%.1f h" % s["hours"]

t = summary(teacher)
print("| run | net | seed | test accuracy | training time |")
print("| --- | --- | --- | --- | --- |")
a, h = fmt(t)
print("| teacher (`configs/job_fmnist_teacher.prototxt`) | WRN-16-4 | 1 | %s | %s |" % (a, h))
diffs = []
for s in seeds:
    al, di = summary("out/table/alone-s%s" % s), summary("out/table/distilled-s%s" % s)
    a1, h1 = fmt(al)
    a2, h2 = fmt(di)
    print("| student alone | WRN-16-1 | %s | %s | %s |" % (s, a1, h1))
    print("| student distilled (T 4, alpha 0.9) | WRN-16-1 | %s | %s | %s |" % (s, a2, h2))
    if al and di and al["done"] and di["done"]:
        diffs.append(di["acc"] - al["acc"])
if diffs:
    print()
    print("distilled minus alone, per seed: %s; mean %+.4f" % (", ".join("%+.4f" % d for d in diffs), sum(diffs) / len(diffs)))
PY
