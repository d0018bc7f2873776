#!/usr/bin/env bash
# Sets up and runs every test of distilld on Debian 12:
#   1. installs the Debian packages (scripts/install-deps.sh),
#   2. builds with gcc, warnings as errors, and runs the ctest suite,
#   3. builds again with clang under AddressSanitizer + UndefinedBehaviorSanitizer, with the
#      libFuzzer targets, and runs the suite there too, including a bounded fuzz run of each
#      target (DD_FUZZ_SECONDS, default 20 s each).
# `.ci/run` calls exactly this. Exit status: 0 when everything passed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
jobs=$(nproc)
export DD_FUZZ_SECONDS=${DD_FUZZ_SECONDS:-20}

echo "== build (gcc, -Werror) =="
cmake -S . -B build -DDD_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
echo "== tests =="
(cd build && ctest --output-on-failure -j"$jobs")

echo "== build (clang, ASan + UBSan, fuzz targets) =="
CC=clang cmake -S . -B build-asan -DDD_WERROR=ON -DDD_SANITIZE=ON -DDD_FUZZ=ON \
  -DDD_FUZZ_SECONDS="$DD_FUZZ_SECONDS" -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"
echo "== tests under ASan + UBSan, and ${DD_FUZZ_SECONDS} s of fuzzing per target =="
(cd build-asan && ctest --output-on-failure -j"$jobs")
