#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine, sets everything up and runs the main
# job end to end:
#   1. installs the Debian packages (scripts/install-deps.sh) and builds distilld,
#   2. turns Fashion-MNIST (Debian's dataset-fashion-mnist) into PNGs + list files,
#   3. trains a teacher (configs/quickstart_teacher.prototxt: a WRN, no teacher of its own),
#   4. distils a smaller WRN student from it (configs/quickstart_student.prototxt),
#   5. prints the teacher's and the student's test accuracy and the time, and plots both runs'
#      curves (out/quickstart/*.png).
# Sized for a 2-core machine: 11 min 7 s measured without the package installs, teacher 87.96 %,
# student 88.36 % (docs/results.md).
# QUICKSTART_THREADS overrides the thread count; QUICKSTART_SKIP_INSTALL=1 skips apt-get.
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
if [ -f ../shared/seed/seed_net.prototxt ]; then
  $bin check -q ../shared/seed/seed_net.prototxt 2>&1 | sed -n '1,3p' || true
fi

rm -rf out/quickstart/teacher out/quickstart/student
mkdir -p out/quickstart
echo "== teacher: configs/quickstart_teacher.prototxt =="
$bin train --job configs/quickstart_teacher.prototxt --threads "$threads" | tee out/quickstart/teacher.txt
teacher_model=$(ls -1 out/quickstart/teacher/snapshots/*.caffemodel | sort -t_ -k3 -n | tail -n 1)
# the student job names the teacher's final snapshot
sed "s|TEACHER_WEIGHTS|$teacher_model|" configs/quickstart_student.prototxt > out/quickstart/student_job.prototxt
echo "== student, distilled: out/quickstart/student_job.prototxt =="
$bin train --job out/quickstart/student_job.prototxt --threads "$threads" | tee out/quickstart/student.txt

t_acc=$(sed -n 's/.*student accuracy \([0-9.]*\).*/\1/p' out/quickstart/teacher.txt)
s_acc=$(sed -n 's/.*student accuracy \([0-9.]*\).*/\1/p' out/quickstart/student.txt)
plot() {
  /usr/bin/python3 scripts/plot_metrics.py "$@" >/dev/null 2>&1 || python3 scripts/plot_metrics.py "$@" >/dev/null 2>&1 ||
    echo "(no plot: matplotlib missing)"
}
plot out/quickstart/teacher/metrics.jsonl -o out/quickstart/teacher.png --title "quickstart teacher"
plot out/quickstart/student/metrics.jsonl -o out/quickstart/student.png --title "quickstart student (distilled)" \
  ${t_acc:+--teacher-accuracy "$t_acc"}

end=$(date +%s)
echo
echo "teacher test accuracy: ${t_acc:-?}"
echo "student test accuracy: ${s_acc:-?} (distilled)"
echo "total time: $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s"
echo "curves: out/quickstart/teacher.png, out/quickstart/student.png; metrics: out/quickstart/*/metrics.jsonl"
