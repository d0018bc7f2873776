#!/usr/bin/env bash
# The Fashion-MNIST results table of docs/results.md, resumable: run it again after any stop and it
# goes on from the newest snapshots.
#   1. the WRN-16-4 teacher (configs/job_fmnist_teacher.prototxt, 12220 iterations = 13 epochs, or
#      TEACHER_ITERS);
#   2. for each seed (1 and 2): the WRN-16-1 student alone (configs/job_fmnist_student_alone.prototxt)
#      and the same student distilled from the teacher (configs/job_fmnist_distill.prototxt), the
#      identical schedule and seed (9400 iterations = 10 epochs at batch 64);
#   3. a markdown table of the final test accuracies, the distilled-minus-alone difference per seed,
#      and the training time of each run (from its metrics.jsonl).
# A finished run (its final snapshot and final test record exist) is not run again.
#
#   scripts/fmnist_table.sh [--seeds "1 2"] [--table-only]
#
# Environment: BIN (default build/distilld of this checkout), THREADS (0: all cores), NICE (default
# 0), RUNS_DIR (default: the repository root): where data/fashion-mnist
# (scripts/prepare_fashion_mnist.py), configs/ (or a link to the repository's) and out/ are;
# DEVICE (default: the jobs' own, cpu): e.g. cuda:0; TEACHER_ITERS (default: the job's, 12220): another
# cosine schedule for the teacher, run as out/fmnist-teacher-wrn16-4-i<ITERS> (the students
# then distil from that teacher); PARALLEL=1: the students alone run beside the teacher and the
# distilled students beside each other (for a GPU, which small nets leave mostly idle);
# STUDENT_ITERS (default: the jobs', 9400) and TEST_ITER (default 100): shorter runs, for a smoke test of this
# script only;
# DEADLINE (a date +%s): every run is stopped with SIGTERM at that time (it snapshots and exits),
# so the table is printed in time.
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
. "$repo/scripts/fmnist_jobs.sh"
job_teacher_iters=$(job_iters configs/job_fmnist_teacher.prototxt)
teacher_iters=${TEACHER_ITERS:-$job_teacher_iters}
student_iters=${STUDENT_ITERS:-$(job_iters configs/job_fmnist_student_alone.prototxt)}
test_iter=${TEST_ITER:-100}
device_args=()
[ -n "${DEVICE:-}" ] && device_args=(--device "$DEVICE")

# finished NAME OUT_DIR ITERS: 0 when the run's final snapshot and a test record at ITERS exist
finished() {
  [ -f "$2/snapshots/$1_iter_$3.caffemodel" ] && grep -q "\"type\":\"test\",\"iter\":$3," "$2/metrics.jsonl" 2>/dev/null
}

run() { # JOB NAME OUT_DIR ITERS
  if finished "$2" "$3" "$4"; then
    echo "== $2: finished"
    return
  fi
  echo "== $2: $1 (resumes from its newest snapshot)"
  local limit=()
  if [ -n "${DEADLINE:-}" ]; then
    local left=$((DEADLINE - $(date +%s)))
    if [ $left -lt 5 ]; then
      echo "== $2: not started, the deadline has passed"
      return
    fi
    # SIGTERM at the deadline: distilld snapshots and exits; the table shows where it stopped
    limit=(timeout -k 30 "$left")
  fi
  nice -n "${NICE:-0}" "${limit[@]}" "$bin" train --job "$1" --resume --threads "$threads" "${device_args[@]}" ||
    [ -n "${DEADLINE:-}" ]
}

teacher_name=fmnist-teacher-wrn16-4 teacher_out=out/fmnist-teacher-wrn16-4 teacher_job=configs/job_fmnist_teacher.prototxt
if [ "$teacher_iters" != "$job_teacher_iters" ]; then
  teacher_name=fmnist-teacher-wrn16-4-i$teacher_iters teacher_out=out/fmnist-teacher-wrn16-4-i$teacher_iters
  teacher_job=out/table/teacher-i$teacher_iters.prototxt
  job_variant configs/job_fmnist_teacher.prototxt "$teacher_job" "$teacher_name" "$teacher_out" "$teacher_iters" \
    test_iter="$test_iter"
fi
teacher_weights="$teacher_out/snapshots/${teacher_name}_iter_$teacher_iters.caffemodel"
if [ $table_only = 0 ]; then
  pids=()
  [ "${PARALLEL:-0}" = 1 ] || run "$teacher_job" "$teacher_name" "$teacher_out" "$teacher_iters"
  for s in $seeds; do
    job_variant configs/job_fmnist_student_alone.prototxt "out/table/alone-s$s.prototxt" "fmnist-wrn16-1-alone-s$s" \
      "out/table/alone-s$s" "$student_iters" seed="$s" test_iter="$test_iter"
    job_variant configs/job_fmnist_distill.prototxt "out/table/distilled-s$s.prototxt" "fmnist-wrn16-1-distilled-s$s" \
      "out/table/distilled-s$s" "$student_iters" seed="$s" weights="$teacher_weights" test_iter="$test_iter"
    if [ "${PARALLEL:-0}" = 1 ]; then
      run "out/table/alone-s$s.prototxt" "fmnist-wrn16-1-alone-s$s" "out/table/alone-s$s" "$student_iters" > "out/table/alone-s$s.log" 2>&1 &
      pids+=($!)
    else
      run "out/table/alone-s$s.prototxt" "fmnist-wrn16-1-alone-s$s" "out/table/alone-s$s" "$student_iters"
      run "out/table/distilled-s$s.prototxt" "fmnist-wrn16-1-distilled-s$s" "out/table/distilled-s$s" "$student_iters"
    fi
  done
  if [ "${PARALLEL:-0}" = 1 ]; then
    run "$teacher_job" "$teacher_name" "$teacher_out" "$teacher_iters"
    if [ -f "$teacher_weights" ]; then
      for s in $seeds; do
        run "out/table/distilled-s$s.prototxt" "fmnist-wrn16-1-distilled-s$s" "out/table/distilled-s$s" "$student_iters" \
          > "out/table/distilled-s$s.log" 2>&1 &
        pids+=($!)
      done
    else
      echo "== the teacher did not finish ($teacher_weights is missing): no distilled students"
    fi
    wait "${pids[@]}"
  fi
fi

python3 - "$teacher_out" "$seeds" "$teacher_job" <<'PY'
import json, os, sys
teacher, seeds, teacher_job = sys.argv[1], sys.argv[2].split(), sys.argv[3]

def summary(d):
    p = os.path.join(d, "metrics.jsonl")
    if not os.path.exists(p):
        return None
    recs = [json.loads(l) for l in open(p) if l.strip()]
    tests = [r for r in recs if r.get("type") == "test"]
    train = [r for r in recs if r.get("type") == "train"]
    last = tests[-1] if tests else None
    max_iter = train[-1]["max_iter"] if train else 9400
    # training time: the sum of the gaps between consecutive records of a run, leaving out gaps of
    # over 10 minutes (a stop and a later resume)
    t = sorted(r["time"] for r in recs if "time" in r)
    busy = sum(b - a for a, b in zip(t, t[1:]) if b - a < 600)
    return {"iter": last["iter"] if last else None, "acc": last.get("accuracy") if last else None,
            "done": bool(last and last["iter"] == max_iter), "hours": busy / 3600, "displays": len(train),
            "max_iter": max_iter}

def fmt(s):
    if not s or s["acc"] is None:
        return "not run yet", ""
    acc = "%.4f" % s["acc"] + ("" if s["done"] else " (iter %d of %d)" % (s["iter"], s["max_iter"]))
    h = s["hours"]
    return acc, "%.1f h" % h if h >= 0.5 else "%.1f min" % (h * 60)

t = summary(teacher)
print("| run | net | seed | test accuracy | training time |")
print("| --- | --- | --- | --- | --- |")
a, h = fmt(t)
ep = "%d epochs" % round(t["max_iter"] * 64 / 60000) if t else ""
print("| teacher (`%s`%s) | WRN-16-4 | 1 | %s | %s |" % (teacher_job, ", " + ep if ep else "", a, h))
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
