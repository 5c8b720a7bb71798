#!/usr/bin/env bash
# The CUDA build check (README, "GPU backends", "CUDA"), for a machine without a GPU, as CI is:
#
#   scripts/ci-cuda.sh
#
# 1. scripts/setup-cuda.sh: the CUDA 13.0 toolkit from PyPI into .cuda/ (no driver needed).
# 2. The release build of gemma-cli with `--features cuda` and, in the same profile and target
#    folder, the device tests (tests/tests/backend_exactness.rs, compiled, not run: no device),
#    in target/cuda (CARGO_TARGET_DIR), so the CPU build in target/ is left alone; when
#    target/cuda does not exist yet it is seeded from target/release (the dependencies).
#    ggml's CUDA code is compiled for GEMMA_CUDA_ARCHS (CMAKE_CUDA_ARCHITECTURES), default
#    `80`: sm_80 machine code, which every Ampere and Ada GPU runs (compute capability 8.x runs
#    8.0 code), and compute_80 PTX, which the driver compiles on first use for Hopper and
#    newer. One architecture keeps the build about half as long as two (measured per file:
#    36 s of CPU for mmq-instance-q4_k.cu with `80`, 65 s with `80-real;90`).
# 3. Without a GPU: the binary starts (it does not link the driver library, libcuda.so.1),
#    `gemma system` says that the CUDA backend is built in and found no device, and
#    `gemma run --device cuda0` fails with exit code 1 and a message naming that, not a crash.
#    With a GPU present it checks instead that `gemma system` lists CUDA0 (the measurements
#    are scripts/gpu-check.sh's).
# Prints each step's time and the total.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never

steps_name=ci-cuda
. scripts/steps.sh
fail() {
  echo "ci-cuda: FAILED: $*" >&2
  exit 1
}

scripts/setup-cuda.sh >/dev/null
# shellcheck disable=SC1091
. .cuda/env.sh
export CMAKE_CUDA_ARCHITECTURES=${GEMMA_CUDA_ARCHS:-80}
step_done "set-up (CUDA_PATH=$CUDA_PATH)"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda}
if [ ! -d "$CARGO_TARGET_DIR/release" ] && [ -d target/release ]; then
  mkdir -p "$CARGO_TARGET_DIR"
  cp -a target/release "$CARGO_TARGET_DIR/release"
  step_done "seeding $CARGO_TARGET_DIR from target/release"
fi
# gemma and the device tests in one cargo invocation, so llama-cpp-sys-2's features are the
# union of both (the tests add `mtmd`) and ggml's CUDA backend is compiled once; the test build
# after it resolves to the same features and reuses it.
nice -n 10 cargo build --release -p gemma-cli -p gemma-tests --features gemma-cli/cuda,gemma-tests/cuda
step_done "cuda release build of gemma and the device tests' crate (CMAKE_CUDA_ARCHITECTURES=$CMAKE_CUDA_ARCHITECTURES)"
nice -n 10 cargo test --release -p gemma-tests --features cuda --test backend_exactness --no-run
step_done "cuda release build of the device tests"

gemma=$CARGO_TARGET_DIR/release/gemma
if grep -q 'libcuda\.so' <<<"$(ldd "$gemma")"; then
  fail "$gemma links the driver library libcuda.so (it would not start without a driver): $(ldd "$gemma" | grep libcuda)"
fi
if grep -q 'not found' <<<"$(ldd "$gemma")"; then
  fail "$gemma misses shared libraries: $(ldd "$gemma" | grep 'not found')"
fi
echo "ci-cuda: $gemma loads $(ldd "$gemma" | grep -o 'libcublas[A-Za-z]*\.so\.[0-9]* => [^ ]*' | tr '\n' ' ')" >&2

out=$("$gemma" system)
echo "$out"
release_ggml_check "the cuda build" "$out"
if grep -q '^device CUDA0 ' <<<"$out"; then
  echo "ci-cuda: this machine has a CUDA device; the no-GPU checks do not apply (measurements: scripts/gpu-check.sh)" >&2
else
  grep -q '^backend CUDA: built in, but no CUDA device found' <<<"$out" ||
    fail "gemma system does not say that the CUDA backend found no device"
  model=$(scripts/fetch-model.sh)
  set +e
  err=$("$gemma" run -m "$model" --device cuda0 -p "x" -n 1 2>&1 >/dev/null)
  rc=$?
  set -e
  echo "gemma run --device cuda0: exit code $rc: $err"
  [ "$rc" = 1 ] || fail "gemma run --device cuda0 exited with $rc (expected 1, an error, not a signal)"
  grep -q 'no ggml device named "cuda0"' <<<"$err" || fail "gemma run --device cuda0 does not name the device"
  grep -q 'no device found on this machine: CUDA' <<<"$err" ||
    fail "gemma run --device cuda0 does not say that the CUDA backend found no device"
fi
step_done "no-GPU checks"
steps_total
