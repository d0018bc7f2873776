#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine, sets everything up and runs the main
# job end to end:
#   1. installs the Debian packages (scripts/install-deps.sh) and builds distilld,
#   2. turns Fashion-MNIST (Debian's dataset-fashion-mnist) into PNGs + list files,
#   3. starts a local redis-server and a distilld daemon and submits the jobs to its queue: a
#      teacher (configs/quickstart_teacher.prototxt: a WRN, no teacher of its own), then a
#      smaller WRN student distilled from it (configs/quickstart_student.prototxt), shown live,
#   4. prints the teacher's and the student's test accuracy and the time, and plots both runs'
#      curves (out/quickstart/*.png).
# Sized for a 2-core machine: about 11 min without the package installs on an idle machine,
# teacher 88.03 %, student 88.18 % (docs/results.md).
# QUICKSTART_THREADS overrides the thread count; QUICKSTART_SKIP_INSTALL=1 skips apt-get.
# QUICKSTART_DATA=lmdb runs the same jobs from LMDBs instead of the PNGs: `distilld
# convert-imageset` (Caffe's convert_imageset) writes data/fashion-mnist/{train,test}_lmdb once
# (the training set shuffled, as Caffe users write theirs), and the nets read them with Data
# layers (configs/wrn_*_fmnist_lmdb_train_val.prototxt).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

if [ "${QUICKSTART_SKIP_INSTALL:-0}" != 1 ]; then bash scripts/install-deps.sh; fi
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs" --target distilld
bin=build/distilld
threads=${QUICKSTART_THREADS:-0}

echo "== Fashion-MNIST -> data/fashion-mnist =="
python3 scripts/prepare_fashion_mnist.py --out data/fashion-mnist | tail -n 1

echo "== the seed's trap, explained by distilld check =="
$bin check -q tests/data/seed/seed_net.prototxt 2>&1 | sed -n '1,3p' || true

rm -rf out/quickstart/teacher out/quickstart/student out/quickstart/student_alone out/quickstart/redis
mkdir -p out/quickstart/redis

# The jobs run the way a fleet runs them: a local redis-server (a free loopback port, data in
# out/quickstart/redis) holds the queue, one distilld daemon takes the jobs, and `distilld watch`
# shows them live. Both are stopped when the script ends, whatever happens.
port=${QUICKSTART_REDIS_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$PWD/out/quickstart/redis" \
  --logfile redis.log --daemonize yes --pidfile "$PWD/out/quickstart/redis/redis.pid"
cat > out/quickstart/distilld.prototxt <<CFG
# written by scripts/quickstart.sh (configs/distilld.prototxt explains every field)
redis_port: $port
data_root: "."
output_root: "out"
threads_per_job: $threads
heartbeat_s: 2
lease_s: 30
CFG
$bin --config out/quickstart/distilld.prototxt 2> out/quickstart/daemon.log &
daemon_pid=$!
watch_pid=
cleanup() {
  if [ -n "$watch_pid" ]; then kill "$watch_pid" 2>/dev/null || true; fi
  kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
}
trap cleanup EXIT
client="--config out/quickstart/distilld.prototxt"
hget() { redis-cli -p "$port" --raw HGET "distilld:job:$1" "$2"; }
# seconds as the CLI prints durations (5m22s, 42s)
dur() { awk -v s="${1:-0}" 'BEGIN { s = int(s + 0.5); if (s >= 60) printf "%dm%02ds", s / 60, s % 60; else printf "%ds", s }'; }

# Waits for job $1 to end, showing it live (`distilld watch` on a terminal, a line every 30 s
# otherwise); fails when the daemon died or the job did not succeed.
run_job() {
  local id=$1 state n=0
  if [ -t 1 ]; then
    $bin watch "$id" $client --interval 2 &
    watch_pid=$!
  fi
  while :; do
    state=$(hget "$id" state)
    case "$state" in succeeded|failed|cancelled) break ;; esac
    if ! kill -0 "$daemon_pid" 2>/dev/null; then
      echo "quickstart: the daemon stopped; its log:" >&2
      tail -n 20 out/quickstart/daemon.log >&2
      exit 1
    fi
    n=$((n + 1))
    if [ ! -t 1 ] && [ $((n % 30)) = 0 ]; then
      echo "  $id: $state, iter $(hget "$id" iter)/$(hget "$id" max_iter), loss $(printf '%.4g' "$(hget "$id" loss)"), ETA $(dur "$(hget "$id" eta_s)")"
    fi
    sleep 1
  done
  if [ -n "$watch_pid" ]; then
    sleep 2
    kill "$watch_pid" 2>/dev/null || true
    wait "$watch_pid" 2>/dev/null || true
    watch_pid=
  fi
  $bin status "$id" $client
  if [ "$state" != succeeded ]; then
    echo "quickstart: job $id $state: $(hget "$id" error)" >&2
    exit 1
  fi
}

teacher_job=configs/quickstart_teacher.prototxt
student_template=configs/quickstart_student.prototxt
if [ "${QUICKSTART_DATA:-images}" = lmdb ]; then
  echo "== Fashion-MNIST -> LMDB (distilld convert-imageset) =="
  for s in train test; do
    if [ ! -f "data/fashion-mnist/${s}_lmdb/data.mdb" ]; then
      shuffle=$([ "$s" = train ] && echo "--shuffle --seed 1" || true)
      # shellcheck disable=SC2086
      $bin convert-imageset --gray $shuffle --progress 20000 data/fashion-mnist/ "data/fashion-mnist/$s.txt" \
        "data/fashion-mnist/${s}_lmdb"
    fi
  done
  sed 's|_fmnist_train_val|_fmnist_lmdb_train_val|' configs/quickstart_teacher.prototxt > out/quickstart/teacher_job.prototxt
  sed 's|_fmnist_train_val|_fmnist_lmdb_train_val|' configs/quickstart_student.prototxt > out/quickstart/student_template.prototxt
  teacher_job=out/quickstart/teacher_job.prototxt
  student_template=out/quickstart/student_template.prototxt
fi

echo "== teacher: $teacher_job, through the daemon =="
tid=$($bin submit "$teacher_job" $client)
run_job "$tid"
teacher_model=$(hget "$tid" last_snapshot)
# the student job names the teacher's final snapshot
sed "s|TEACHER_WEIGHTS|$teacher_model|" "$student_template" > out/quickstart/student_job.prototxt
echo "== student, distilled: out/quickstart/student_job.prototxt, through the daemon =="
sid=$($bin submit out/quickstart/student_job.prototxt $client)
run_job "$sid"

student_alone=configs/quickstart_student_alone.prototxt
if [ "${QUICKSTART_DATA:-images}" = lmdb ]; then
  sed 's|_fmnist_train_val|_fmnist_lmdb_train_val|' "$student_alone" > out/quickstart/student_alone_job.prototxt
  student_alone=out/quickstart/student_alone_job.prototxt
fi
echo "== the same student alone (no teacher, same schedule and seed): $student_alone =="
aid=$($bin submit "$student_alone" $client)
run_job "$aid"

t_acc=$(printf '%.4f' "$(hget "$tid" test_acc)")
s_acc=$(printf '%.4f' "$(hget "$sid" test_acc)")
a_acc=$(printf '%.4f' "$(hget "$aid" test_acc)")
plot() {
  /usr/bin/python3 scripts/plot_metrics.py "$@" >/dev/null 2>&1 || python3 scripts/plot_metrics.py "$@" >/dev/null 2>&1 ||
    echo "(no plot: matplotlib missing)"
}
plot out/quickstart/teacher/metrics.jsonl -o out/quickstart/teacher.png --title "quickstart teacher"
plot out/quickstart/student/metrics.jsonl -o out/quickstart/student.png --title "quickstart student: distilled and alone" \
  --label distilled --compare out/quickstart/student_alone/metrics.jsonl --compare-label alone \
  ${t_acc:+--teacher-accuracy "$t_acc"}

end=$(date +%s)
echo
echo "test accuracy (10000 Fashion-MNIST TEST images):"
printf '  %-36s %s\n' "teacher (WRN-10-2)" "${t_acc:-?}" "student distilled (WRN-10-1)" "${s_acc:-?}" \
  "student alone (WRN-10-1, same seed)" "${a_acc:-?}"
gain=$(awk -v s="$s_acc" -v a="$a_acc" 'BEGIN { printf "%+.2f", 100 * (s - a) }')
if awk -v g="$gain" 'BEGIN { exit !(g > 0) }'; then
  echo "distillation bought $gain points on this schedule"
else
  echo "distillation bought nothing on this schedule ($gain points): at this size and length the student alone keeps up (docs/results.md)"
fi
echo "total time: $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s"
echo "curves: out/quickstart/teacher.png, out/quickstart/student.png (both students' test curves); metrics: out/quickstart/*/metrics.jsonl"
