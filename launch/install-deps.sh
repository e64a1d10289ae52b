#!/usr/bin/env bash
# Installs the Debian 12 packages m6rec builds and tests with. Idempotent: packages already
# present are skipped, so a second run costs a dpkg query and nothing else.
#   usage: launch/install-deps.sh [--with-slurm] [--with-checks]
#   --with-slurm   a single-node Slurm, for the sbatch tests
#   --with-checks  clang and clang-format (14), for launch/check-style.sh, and Chromium and
#                  python3-prometheus-client for the browser and /metrics tests; the tests mode
#                  of launch/quickstart.sh asks for both, the quick start needs neither
set -euo pipefail

pkgs=(
  build-essential cmake ccache pkg-config git
  libtorch-dev libopenblas0-pthread
  libopenmpi-dev openmpi-bin
  libzmq3-dev cppzmq-dev
  librocksdb-dev zlib1g-dev
  libboost-dev
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
  libjs-chart.js prometheus-cpp-dev
  libgtest-dev googletest
  procps iproute2
)
for arg in "$@"; do
  case "$arg" in
    --with-slurm) pkgs+=(slurmctld slurmd slurm-client) ;;
    # Debian 12's `clang` and `clang-format` are clang 14 (clang++ and clang-format on PATH);
    # python3 reads the build's compile_commands.json (clang-format-14 depends on it anyway).
    # chromium and python3-prometheus-client: the browser tests (dashboard, report.html) and
    # the /metrics parser test.
    --with-checks) pkgs+=(clang clang-format python3 chromium python3-prometheus-client) ;;
    *) echo "install-deps: unknown argument '$arg' (--with-slurm, --with-checks)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#pkgs[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} missing packages: ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
