#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU and no network, build m6rec against the CUDA
# LibTorch of the local PyTorch install and check the CUDA/NCCL path for real:
#   1. what the machine has (GPU, driver, PyTorch/CUDA, NCCL wheel, compiler)
#   2. unpack the carried Debian packages (ZeroMQ, Boost, yaml-cpp, nlohmann-json, CLI11,
#      GoogleTest; fetch them on a networked Debian 12 box with `launch/gpu-check.sh --fetch-debs`)
#   3. configure + build m6rec and the unit tests (RocksDB and MPI off: the servers use the
#      memory store, the single GPU needs no MPI)
#   4. the NCCL collective and model unit tests on the GPU
#   5. the same short training run on the CPU and on the GPU (dense layers on cuda, dense
#      gradients through NCCL), and a table of step time and samples/s
# Usage:  launch/gpu-check.sh                (debs in .debs/, results under $OUT or /tmp)
#         launch/gpu-check.sh --fetch-debs   (on Debian 12 with network: download .debs/)
set -uo pipefail
cd "$(dirname "$0")/.."

DEBS=${M6REC_DEBS:-.debs}
DEB_PACKAGES="libzmq5 libzmq3-dev cppzmq-dev libsodium23 libpgm-5.3-0 libnorm1 libbsd0 libmd0
  libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libboost1.74-dev
  libyaml-cpp0.7 libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libgtest-dev googletest"
if [[ "${1:-}" == "--fetch-debs" ]]; then
  mkdir -p "$DEBS" && cd "$DEBS" && apt-get download $DEB_PACKAGES
  exit $?
fi

OUT=${OUT:-/tmp/m6rec-gpu-check}
PREFIX=${M6REC_DEPS_PREFIX:-/tmp/m6rec-deps}
BUILD=${M6REC_GPU_BUILD:-build-gpu}
RUNS=${M6REC_GPU_RUNS:-/tmp/m6rec-gpu-runs}
mkdir -p "$OUT" "$PREFIX" "$RUNS"
say() { echo "== $*"; }
fail() { echo "GPU CHECK FAILED: $*"; exit 1; }

say "1. machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || fail "nvidia-smi: no GPU visible"
python3 - <<'EOF' || fail "no PyTorch with CUDA in python3"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0),
      "cxx11abi", torch._C._GLIBCXX_USE_CXX11_ABI)
EOF
TORCH_PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
# NCCL: the nvidia-nccl wheel beside PyTorch (its library is libnccl.so.2 without the dev link).
NCCL_WHEEL=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null)
if [[ -n "$NCCL_WHEEL" && -f "$NCCL_WHEEL/include/nccl.h" ]]; then
  export NCCL_ROOT=$PREFIX/nccl
  mkdir -p "$NCCL_ROOT/lib"
  ln -sfn "$NCCL_WHEEL/include" "$NCCL_ROOT/include"
  ln -sf "$NCCL_WHEEL"/lib/libnccl.so.2 "$NCCL_ROOT/lib/libnccl.so"
  export LD_LIBRARY_PATH=$NCCL_WHEEL/lib:${LD_LIBRARY_PATH:-}
fi
echo "torch cmake prefix: $TORCH_PREFIX; NCCL: ${NCCL_ROOT:-system}; $(g++ --version | head -1); $(cmake --version | head -1)"

say "2. dependencies from $DEBS"
ls "$DEBS"/*.deb >/dev/null 2>&1 || fail "no .deb files in $DEBS (run launch/gpu-check.sh --fetch-debs on Debian 12)"
for f in "$DEBS"/*.deb; do dpkg -x "$f" "$PREFIX" || fail "cannot unpack $f"; done
export LD_LIBRARY_PATH=$PREFIX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}

say "3. build"
# libstdc++ first among the binaries' libraries: PyTorch's wheels export their own (old-ABI)
# copies of std::filesystem functions from libtorch.so, and a call bound to those crashes
# (seen: std::filesystem::remove_all jumping to address 0). Listed first, libstdc++'s win.
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
t0=$(date +%s)
cmake -S . -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DM6REC_WITH_ROCKSDB=OFF -DM6REC_WITH_MPI=OFF \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$PREFIX/usr" -DCUDAToolkit_ROOT=/usr/local/cuda \
  -DBoost_INCLUDE_DIR="$PREFIX/usr/include" \
  -DCMAKE_EXE_LINKER_FLAGS="-Wl,--no-as-needed -lstdc++ -Wl,--as-needed -Wl,-rpath-link,$PREFIX/usr/lib/x86_64-linux-gnu" \
  >"$OUT/configure.log" 2>&1 ||
  { tail -40 "$OUT/configure.log"; fail "configure (log: configure.log)"; }
grep -E "m6rec:|Torch|CUDA" "$OUT/configure.log" | head -8
cmake --build "$BUILD" -j"$(nproc)" --target m6rec m6rec_unit_tests >"$OUT/build.log" 2>&1 ||
  { grep -E "error|Error" -A3 "$OUT/build.log" | head -60; fail "build (log: build.log)"; }
build_s=$(( $(date +%s) - t0 ))
echo "configured and built in ${build_s} s"

say "4. unit tests on the GPU (NCCL collective, model layers, zmq collective, samplers)"
"$BUILD/tests/m6rec_unit_tests" --gtest_filter='Collective.*:Model.*:ZmqCollective.*:Samplers.*:Config.*' \
  >"$OUT/unit.log" 2>&1
unit_rc=$?
grep -E "NOTE|PASSED|FAILED|Failure" "$OUT/unit.log" | head -20

say "5. training: the same job on the CPU and on the GPU"
# The default job on a larger synthetic set, one worker, memory store.
common=(--set ps.store=memory --set train.epochs=1 --set data.synth.users=20000
        --set data.synth.items=5000 --set train.log_every=100)
declare -A rc=([cpu]=0 [gpu]=0 [gpu_b2048]=0 [gpu_2workers]=0)
[[ -n "${M6REC_GPU_SKIP_TRAIN:-}" ]] && { echo "skipped (M6REC_GPU_SKIP_TRAIN)"; }
[[ -n "${M6REC_GPU_SKIP_TRAIN:-}" ]] || for run in cpu:cpu:single:256:1 gpu:cuda:nccl:256:1 gpu_b2048:cuda:nccl:2048:1 gpu_2workers:cuda:zmq:256:2; do
  IFS=: read -r name dev coll batch workers <<<"$run"
  rm -rf "$RUNS/$name"
  timeout 240 "$BUILD/m6rec" local --run-dir "$RUNS/$name" "${common[@]}" --set model.device="$dev" \
    --set cluster.workers="$workers" \
    --set train.collective="$coll" --set train.batch_size="$batch" >"$OUT/train_$name.log" 2>&1
  rc[$name]=$?
  tail -3 "$OUT/train_$name.log"
done

say "result"
python3 - "$RUNS" "$build_s" <<'EOF'
import json, sys, os
runs, build_s = sys.argv[1], sys.argv[2]
print(f"build: {build_s} s")
print("| run | device | workers | collective | batch | samples/s (job) | step ms | replicas identical | test HR@10 | NDCG@10 |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name in ["cpu", "gpu", "gpu_b2048", "gpu_2workers"]:
    p = os.path.join(runs, name, "result.json")
    if not os.path.exists(p):
        print(f"| {name} | - | - | - | - | FAILED | - | - | - | - |"); continue
    r = json.load(open(p)); ws = r["workers"]; w = ws[0]
    batch = w["samples"] / max(1, w["steps"])
    same = all(x["param_fingerprints"] == w["param_fingerprints"] for x in ws)
    print(f"| {name} | {'cuda' if 'gpu' in name else 'cpu'} | {len(ws)} | {w['collective']} | {batch:.0f} | "
          f"{r['samples_per_s']:.0f} | {1000*batch/w['samples_per_s']:.1f} | {same} | {r['test']['HR@10']:.4f} | {r['test']['NDCG@10']:.4f} |")
EOF
[[ $unit_rc -eq 0 && ${rc[cpu]} -eq 0 && ${rc[gpu]} -eq 0 && ${rc[gpu_2workers]} -eq 0 ]] ||
  fail "unit tests rc=$unit_rc, runs: cpu=${rc[cpu]} gpu=${rc[gpu]} gpu_b2048=${rc[gpu_b2048]} gpu_2workers=${rc[gpu_2workers]}"
echo "GPU CHECK PASSED"
