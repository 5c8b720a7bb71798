#!/usr/bin/env bash
# Builds llama.cpp's own `llama-bench` as its users build it, for speed comparisons that our
# build settings cannot touch: the llama.cpp tree inside the `llama-cpp-python` 0.3.36 source
# package on PyPI (vendor/llama.cpp, ggml 0.25.3; llama-cpp-sys-2's copy leaves llama-bench
# out), configured by llama.cpp's CMake with its defaults (Release, GGML_NATIVE, GGML_OPENMP)
# in its own folder, by plain cmake: no cargo, no cmake-rs, none of .cargo/config.toml. The one
# flag added on x86-64 turns off AMX, which some VMs report in CPUID but do not grant
# (-march=native would then die with SIGILL); our build does the same.
#
#   scripts/build-llama-ref.sh          # prints the path of llama-bench
#
# Output: target/llama-ref/build/bin/llama-bench (about 8 minutes on 2 cores, once), and
# llama-completion beside it, llama.cpp's plain text generator, for memory comparisons at a
# given context (`scripts/rss_vs_llama.sh`), and llama-mtmd-cli, libmtmd's command line, for
# image-encode times (it logs "image slice encoded in N ms"; scripts/bench_vision_vs_mtmd.py).
# A build made before llama-mtmd-cli was added gets just that target, incrementally.
#
#   scripts/build-llama-ref.sh --cuda   # the same with GGML_CUDA=ON, in target/llama-ref-cuda/build
#
# --cuda: llama.cpp's CUDA build as its users make it (CMake's defaults: GGML_NATIVE, so the
# architectures of the GPUs present, and the driver's virtual memory pool), with the toolkit of
# $CUDA_PATH or nvcc on PATH (`. .cuda/env.sh` after scripts/setup-cuda.sh); the source comes
# from target/llama-ref/src, so a machine without network needs that folder.
# GEMMA_CUDA_ARCHS, when set, is passed as CMAKE_CUDA_ARCHITECTURES.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { echo "build-llama-ref: $*" >&2; }

LLAMA_CPP_PYTHON=0.3.36
cuda=()
build=target/llama-ref/build
if [ "${1:-}" = --cuda ]; then
  build=target/llama-ref-cuda/build
  cuda=(-DGGML_CUDA=ON)
  [ -n "${CUDA_PATH:-}" ] && cuda+=(-DCUDAToolkit_ROOT="$CUDA_PATH" -DCMAKE_CUDA_COMPILER="$CUDA_PATH/bin/nvcc")
  [ -n "${GEMMA_CUDA_ARCHS:-}" ] && cuda+=(-DCMAKE_CUDA_ARCHITECTURES="$GEMMA_CUDA_ARCHS")
elif [ -n "${1:-}" ]; then
  say "unknown argument $1 (usage: build-llama-ref.sh [--cuda])"
  exit 2
fi
out=target/llama-ref
bench=$build/bin/llama-bench
if [ -x "$bench" ] && [ -x "$build/bin/llama-completion" ] && [ -x "$build/bin/llama-mtmd-cli" ]; then
  echo "$PWD/$bench"
  exit 0
fi

# The source package, with the project venv's pip (never the system Python's).
if [ ! -f "$out/src/CMakeLists.txt" ]; then
  py=$(scripts/venv.sh)
  mkdir -p "$out"
  "$py" -m pip download --quiet --no-deps --no-binary :all: -d "$out" "llama-cpp-python==$LLAMA_CPP_PYTHON"
  rm -rf "$out/src" && mkdir -p "$out/src"
  tar xzf "$out/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz" -C "$out/src" --strip-components=3 \
    "llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp"
fi

flags=""
[ "$(uname -m)" = x86_64 ] && flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
say "configuring llama.cpp from llama-cpp-python $LLAMA_CPP_PYTHON in $build (Release, llama.cpp's defaults${flags:+, plus $flags}${cuda[*]:+, plus ${cuda[*]}})"
CFLAGS="$flags" CXXFLAGS="$flags" cmake -S "$out/src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF "${cuda[@]}" >&2
cmake --build "$build" --target llama-bench llama-completion llama-mtmd-cli -j "$(nproc)" >&2
grep -E '^(CMAKE_BUILD_TYPE|GGML_NATIVE|GGML_OPENMP|GGML_CUDA|CMAKE_CUDA_ARCHITECTURES):' "$build/CMakeCache.txt" >&2
echo "$PWD/$bench"
