#!/usr/bin/env bash
# Installs everything distilld needs to build, test and run on Debian 12, from Debian's own
# packages. Idempotent: packages already present are left alone. Run as root (or with sudo).
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config git
  protobuf-c-compiler libprotobuf-c-dev        # .prototxt/.caffemodel I/O (code generated at build time)
  libuv1-dev libhiredis-dev redis-server       # the daemon and its queue
  libmicrohttpd-dev                            # the daemon's Prometheus endpoint (docs/monitoring.md)
  prometheus                                   # tests: promtool and a real Prometheus scraping the daemon
  libturbojpeg0-dev libpng-dev                 # image decoding
  libopenblas-dev                              # CPU GEMM
  liblmdb-dev libleveldb-dev                   # Caffe's Data layer: LMDB and LevelDB databases
  libhdf5-dev                                  # Caffe's HDF5Data and HDF5Output layers
  libdnnl-dev                                  # oneDNN: the CPU convolutions in FP32 and bf16 (core/cpu/cpu_dnnl.h)
  python3-lmdb python3-h5py                    # tests: independent writers of LMDB and HDF5 files
  clang libclang-rt-14-dev                     # libFuzzer targets and sanitizer builds
  python3 python3-matplotlib                   # dataset and plot helpers
  dataset-fashion-mnist                        # the real data of the quickstart
  chromium                                     # tests: the headless browser test_web drives (tests/web/)
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm for the npm step below: Debian's nodejs and npm, unless a node is there already
# (e.g. NodeSource's nodejs, which ships its own npm and conflicts with Debian's)
if ! command -v npm >/dev/null 2>&1; then missing+=(nodejs npm); fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm packages, each folder from its package-lock.json (npm ci): daemon/web (uPlot, embedded into
# the distilld binary by the build: the build stops with a message when it is missing) and
# tests/web (playwright-core, which drives the chromium above in test_web; it downloads no
# browser). A folder whose node_modules is newer than its lock file is left alone.
root="$(cd "$(dirname "$0")/.." && pwd)"
for d in daemon/web tests/web; do
  if [ -f "$root/$d/node_modules/.package-lock.json" ] && [ "$root/$d/node_modules/.package-lock.json" -nt "$root/$d/package-lock.json" ]; then
    echo "install-deps: $d/node_modules up to date"
    continue
  fi
  echo "install-deps: npm ci in $d"
  (cd "$root/$d" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
done
