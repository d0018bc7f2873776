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
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
