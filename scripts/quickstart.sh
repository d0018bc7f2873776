#!/usr/bin/env bash
# The README's first command: sets everything up on a fresh Debian 12 machine and runs the main
# job. For now the main job is `distilld check` on the shipped example nets: a WRN-16-4 teacher
# (deploy), a WRN-16-1 student (train_val), and the seed net that froze a teacher with lr_mult 0
# yet lost it to moving BatchNorm statistics. (Training and distillation land with the engine.)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs" --target distilld

bin=build/distilld
echo
echo "== teacher: configs/wrn_16_4_fmnist_deploy.prototxt =="
$bin check -q configs/wrn_16_4_fmnist_deploy.prototxt --phase TEST 2>&1
echo
echo "== student: configs/wrn_16_1_fmnist_train_val.prototxt =="
$bin check -q configs/wrn_16_1_fmnist_train_val.prototxt 2>&1

seed=../shared/seed/seed_net.prototxt
if [ -f "$seed" ]; then
  echo
  echo "== the seed net: a frozen teacher whose BatchNorm still moves =="
  set +e
  $bin check -q "$seed" 2>&1
  status=$?
  set -e
  echo "(distilld check exited $status: 0 clean, 1 warnings, 2 errors)"
fi
