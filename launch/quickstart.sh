#!/usr/bin/env bash
# One command from a fresh Debian 12 machine: install what is missing, build, then either run the
# main job (a local simulated cluster on the built-in synthetic data) or the test suite.
#   launch/quickstart.sh            # install + build + train the default job
#   launch/quickstart.sh --tests    # install + build + house-rule checks + every test (CI)
# Extra arguments after the mode go to `m6rec local` (e.g. --set train.epochs=2).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=run
if [[ "${1:-}" == "--tests" ]]; then
  mode=tests
  shift
fi

# The tests also start a real single-node Slurm (slurmctld + slurmd) to run the sbatch scripts,
# and the checks before them need clang and clang-format.
if [[ "$mode" == "tests" ]]; then
  launch/install-deps.sh --with-slurm --with-checks
else
  launch/install-deps.sh
fi

jobs=$(nproc 2>/dev/null || echo 2)
build_type=${M6REC_BUILD_TYPE:-Release}
cmake -S . -B build -DCMAKE_BUILD_TYPE="$build_type" >/dev/null
cmake --build build -j"$jobs"

if [[ "$mode" == "tests" ]]; then
  # House rules first: .clang-format everywhere (M6REC_FORMAT_ENFORCED narrows it to some
  # paths), clang's thread-safety analysis, no unannotated mutex.
  M6REC_FORMAT_ENFORCED="${M6REC_FORMAT_ENFORCED-.}" launch/check-style.sh -j "$jobs"
  # Unit tests run in parallel; the multi-process tests are marked RUN_SERIAL.
  ctest --test-dir build --output-on-failure -j"$jobs" --timeout 300
else
  exec build/m6rec local "$@"
fi
