#!/usr/bin/env bash
# A fleet by hand: N distilld workers against one Redis, from one base config, in the foreground.
#
#   deploy/fleet-example.sh [-n N] [--gpus] [--dir DIR] [--distilld PATH] BASE_CONFIG
#
# Each worker K (1..N) gets DIR/worker-K.prototxt: BASE_CONFIG with worker_name "HOST-wK" (and,
# with --gpus, device "cuda:K-1": one worker per GPU), and logs to DIR/worker-K.log. Every worker
# takes jobs from the same queue (BASE_CONFIG's redis_host, redis_port, key_prefix and
# credentials); a job submitted with `distilld submit JOB --config BASE_CONFIG` runs on whichever
# worker is free. Relative paths in BASE_CONFIG (data_root, output_root) resolve against the
# folder this script is started in.
#
# Ctrl-C (or SIGTERM to this script) sends each worker exactly one SIGTERM: it snapshots its
# running job, hands it back to the queue and exits (a second signal would make a worker exit at
# once, so the workers run in their own sessions, out of reach of the terminal's Ctrl-C). The
# script exits once every worker has, 0 when all exited 0. On a real fleet, run one
# deploy/distilld.service per machine (or a distilld@.service instance per GPU) instead.
set -euo pipefail

n=2
gpus=0
dir=""
exe="${DISTILLD:-distilld}"
base=""
usage() {
  sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    -n) [ $# -ge 2 ] || usage; n="$2"; shift 2 ;;
    --gpus) gpus=1; shift ;;
    --dir) [ $# -ge 2 ] || usage; dir="$2"; shift 2 ;;
    --distilld) [ $# -ge 2 ] || usage; exe="$2"; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "fleet-example: unknown option $1" >&2; usage ;;
    *) [ -z "$base" ] || usage; base="$1"; shift ;;
  esac
done
[ -n "$base" ] || usage
[ -r "$base" ] || { echo "fleet-example: cannot read $base" >&2; exit 2; }
case "$n" in ''|*[!0-9]*|0) echo "fleet-example: -n wants a positive number, got \"$n\"" >&2; exit 2 ;; esac
command -v "$exe" >/dev/null || { echo "fleet-example: $exe not found (--distilld PATH)" >&2; exit 2; }
command -v setsid >/dev/null || { echo "fleet-example: setsid (util-linux) is needed" >&2; exit 2; }
if [ -z "$dir" ]; then dir="$(mktemp -d "${TMPDIR:-/tmp}/distilld-fleet.XXXXXX")"; fi
mkdir -p "$dir"
: > "$dir/pids"
# worker names may hold letters, digits and _-. only
host="$(hostname 2>/dev/null | cut -d. -f1 | tr -c 'A-Za-z0-9_.\n-' '_')"
host="${host:-host}"

pids=()
stopping=0
stop() {
  stopping=1
  trap - INT TERM
  echo "fleet-example: SIGTERM to ${#pids[@]} worker(s); each hands its job back and exits"
  kill -TERM "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM

for k in $(seq 1 "$n"); do
  cfg="$dir/worker-$k.prototxt"
  if [ "$gpus" = 1 ]; then
    grep -vE '^[[:space:]]*(worker_name|device)[[:space:]]*:' "$base" > "$cfg" || true
    echo "device: \"cuda:$((k - 1))\"" >> "$cfg"
  else
    grep -vE '^[[:space:]]*worker_name[[:space:]]*:' "$base" > "$cfg" || true
  fi
  echo "worker_name: \"$host-w$k\"" >> "$cfg"
  setsid "$exe" --config "$cfg" < /dev/null > "$dir/worker-$k.log" 2>&1 &
  pids+=("$!")
  echo "$!" >> "$dir/pids"
  echo "fleet-example: worker $host-w$k: pid $!, config $cfg, log $dir/worker-$k.log"
done

cat <<EOF

Watch them:
  $exe watch --config $base              # jobs and workers, refreshed every second
  $exe list --config $base
  tail -f $dir/worker-*.log
  redis-cli -h HOST --user distilld-dashboard --askpass SMEMBERS distilld:workers
Submit to them:
  $exe submit JOB.prototxt --config $base
Stop them: Ctrl-C here, or kill -TERM $$
EOF

status=0
for p in "${pids[@]}"; do
  # wait returns early (128 + the signal) when a trapped signal arrives, without reaping the worker:
  # wait again until it has exited, then once more for its own status (127: that first wait had
  # reaped it, and its status stands)
  while :; do
    set +e
    wait "$p"
    st=$?
    set -e
    if [ "$st" -gt 128 ] && kill -0 "$p" 2>/dev/null; then continue; fi
    if [ "$st" -gt 128 ]; then
      set +e
      wait "$p"
      st2=$?
      set -e
      if [ "$st2" != 127 ]; then st=$st2; fi
    fi
    break
  done
  if [ "$st" != 0 ]; then
    echo "fleet-example: worker pid $p exited with status $st" >&2
    status=1
  fi
done
if [ "$stopping" = 0 ]; then echo "fleet-example: every worker has exited" >&2; fi
exit "$status"
