#!/usr/bin/env bash
# Daemon overhead benchmark (docs/performance.md, "The daemon"):
#   1. training speed of one job run by the daemon against the same job run in the foreground
#      with `distilld train --job` (images/s from each run's metrics.jsonl, first display
#      excluded), alternating, R rounds each;
#   2. queue-to-start latency: N small jobs submitted one at a time to an idle daemon, the time from
#      `distilld submit` to the claim (the hash's started_at) and to the first training display;
#   3. Redis commands per second the daemon issues for one running job (INFO commandstats deltas
#      over the job's run, the benchmark's own commands subtracted).
#
#   scripts/bench_daemon.sh [--iters N] [--rounds R] [--latency-jobs N]
#
# Needs Fashion-MNIST prepared (python3 scripts/prepare_fashion_mnist.py --out data/fashion-mnist)
# and a built distilld (BUILD_DIR, default build). Starts its own redis-server on a free loopback
# port and its own daemon; stops both at the end.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
iters=300 rounds=2 nlat=20
while [ $# -gt 0 ]; do
  case "$1" in
    --iters) iters="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --latency-jobs) nlat="$2"; shift 2 ;;
    *) echo "usage: $0 [--iters N] [--rounds R] [--latency-jobs N]" >&2; exit 2 ;;
  esac
done
bin="${BUILD_DIR:-build}/distilld"
[ -x "$bin" ] || { echo "bench_daemon: $bin not built" >&2; exit 1; }
[ -f data/fashion-mnist/train.txt ] || { echo "bench_daemon: prepare data/fashion-mnist first" >&2; exit 1; }
work=out/bench-daemon
rm -rf "$work"
mkdir -p "$work/redis"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$here/$work/redis" --logfile redis.log \
  --daemonize yes
cat > "$work/distilld.prototxt" <<CFG
redis_port: $port
data_root: "."
output_root: "out"
CFG
"$bin" --config "$work/distilld.prototxt" 2> "$work/daemon.log" &
daemon_pid=$!
cleanup() {
  kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
}
trap cleanup EXIT
client="--config $work/distilld.prototxt"
hget() { redis-cli -p "$port" --raw HGET "distilld:job:$1" "$2"; }
wait_final() { # id [poll seconds]
  local s i=0
  while [ $i -lt 36000 ]; do
    i=$((i + 1))
    s=$(hget "$1" state)
    case "$s" in succeeded) return 0 ;; failed|cancelled) echo "bench_daemon: job $1 $s: $(hget "$1" error)" >&2; exit 1 ;; esac
    sleep "${2:-0.1}"
  done
  echo "bench_daemon: job $1 did not finish" >&2
  exit 1
}
job() { # name out_dir iters display
  cat <<JOB
name: "$1"
student { net: "configs/wrn_10_1_fmnist_train_val.prototxt" }
solver { base_lr: 0.05 momentum: 0.9 weight_decay: 0.0005 lr_policy: "fixed" max_iter: $3 display: $4
         test_interval: 0 snapshot: 0 snapshot_after_train: false random_seed: 1 }
output_dir: "$2"
seed: 1
JOB
}
# mean images/s over the train records of a metrics.jsonl, the first one excluded
rate() {
  python3 - "$1" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if '"type":"train"' in l]
v = [x["img_per_s"] for x in r[1:]]
print("%.1f" % (sum(v) / len(v)))
PY
}
echo "== 1. training speed: foreground vs daemon, WRN-10-1 on Fashion-MNIST, $iters iterations, $rounds rounds =="
fg_rates="" dm_rates=""
for r in $(seq 1 "$rounds"); do
  job "fg$r" "out/bench-daemon/fg$r" "$iters" 20 > "$work/fg$r.job"
  "$bin" train --job "$work/fg$r.job" >/dev/null 2>&1
  fg=$(rate "$work/fg$r/metrics.jsonl")
  job "dm$r" "out/bench-daemon/dm$r" "$iters" 20 > "$work/dm$r.job"
  id=$("$bin" submit "$work/dm$r.job" $client)
  wait_final "$id" 2   # polls sparsely: the foreground run has no poller beside it
  dm=$(rate "$work/dm$r/metrics.jsonl")
  echo "round $r: foreground $fg img/s, daemon $dm img/s"
  fg_rates="$fg_rates $fg" dm_rates="$dm_rates $dm"
done
python3 - "$fg_rates" "$dm_rates" <<'PY'
import sys, statistics as st
fg = [float(x) for x in sys.argv[1].split()]; dm = [float(x) for x in sys.argv[2].split()]
print("median: foreground %.1f img/s, daemon %.1f img/s, daemon/foreground %.3f" % (st.median(fg), st.median(dm), st.median(dm) / st.median(fg)))
PY

echo "== 2. queue-to-start latency: $nlat jobs of 2 iterations, one at a time =="
lat=""
for k in $(seq 1 "$nlat"); do
  job "lat$k" "out/bench-daemon/lat$k" 2 1 > "$work/lat$k.job"
  t0=$(python3 -c 'import time; print("%.3f" % time.time())')
  id=$("$bin" submit "$work/lat$k.job" $client)
  wait_final "$id"
  first=$(redis-cli -p "$port" --raw XRANGE "distilld:job:$id:metrics" - + COUNT 1 | head -n 1 | cut -d- -f1)
  lat="$lat $t0:$(hget "$id" started_at):$first"
done
python3 - "$lat" <<'PY'
import sys, statistics as st
claim, disp = [], []
for x in sys.argv[1].split():
    t0, s, f = x.split(":")
    claim.append((float(s) - float(t0)) * 1000); disp.append(float(f) - float(t0) * 1000)
print("submit -> claimed: median %.0f ms, max %.0f ms" % (st.median(claim), max(claim)))
print("submit -> first display (iter 0 trained): median %.0f ms, max %.0f ms" % (st.median(disp), max(disp)))
PY

echo "== 3. Redis commands the daemon issues for one running job ($iters iterations, display 20) =="
# MONITOR sees every command with its client's address; the daemon's connection is the one named
# distilld:<worker> (CLIENT SETNAME at connect)
redis-cli -p "$port" MONITOR > "$work/monitor.txt" &
mon=$!
sleep 0.5
job "cmd" "out/bench-daemon/cmd" "$iters" 20 > "$work/cmd.job"
id=$("$bin" submit "$work/cmd.job" $client)
wait_final "$id" 2
sleep 0.5
addr=$(redis-cli -p "$port" CLIENT LIST | sed -n 's/.* addr=\([^ ]*\) .* name=distilld:.*/\1/p' | head -n 1)
kill "$mon" 2>/dev/null || true
wait "$mon" 2>/dev/null || true
python3 - "$work/monitor.txt" "$addr" "$(hget "$id" started_at)" "$(hget "$id" finished_at)" <<'PY'
import sys, collections
path, addr, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
by = collections.Counter()
for line in open(path, errors="replace"):
    parts = line.split(" ", 3)
    if len(parts) < 4 or addr not in parts[2]: continue
    t = float(parts[0])
    if t0 <= t <= t1: by[parts[3].split('"')[1].upper()] += 1
n = sum(by.values())
print("%d commands in %.1f s from claim to end: %.2f commands/s (%s)" % (n, t1 - t0, n / (t1 - t0),
      ", ".join("%s %d" % kv for kv in by.most_common())))
PY
