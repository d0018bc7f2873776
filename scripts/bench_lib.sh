# Shared by the CPU benchmarks against PyTorch (scripts/bench_cpu.sh, scripts/bench_kd_cpu.sh):
# source it after setting `here`. Sets build (BUILD_DIR, default build-bench), py (PYTHON,
# default /usr/bin/python3, where Debian's torch lives) and a scratch folder `work` removed at exit.
build="${BUILD_DIR:-$here/build-bench}"
py="${PYTHON:-/usr/bin/python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# bench_build TARGET: a Release build of one benchmark, its log shown only when it fails.
bench_build() {
  echo "== building $1 (Release) in $build"
  cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log"; exit 1; }
  cmake --build "$build" --target "$1" -j "$(nproc)" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
}

# ensure_torch: Debian's python3-torch, installed when missing.
ensure_torch() {
  "$py" -c 'import torch' >/dev/null 2>&1 && return 0
  echo "== installing python3-torch (Debian package)"
  local sudo=sudo
  [ "$(id -u)" = 0 ] && sudo=""
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-torch >/dev/null
}
