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
# given context (`scripts/rss_vs_llama.sh`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { echo "build-llama-ref: $*" >&2; }

LLAMA_CPP_PYTHON=0.3.36
out=target/llama-ref
bench=$out/build/bin/llama-bench
if [ -x "$bench" ] && [ -x "$out/build/bin/llama-completion" ]; then
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
say "configuring llama.cpp from llama-cpp-python $LLAMA_CPP_PYTHON in $out (Release, llama.cpp's defaults${flags:+, plus $flags})"
CFLAGS="$flags" CXXFLAGS="$flags" cmake -S "$out/src" -B "$out/build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
cmake --build "$out/build" --target llama-bench llama-completion -j "$(nproc)" >&2
grep -E '^(CMAKE_BUILD_TYPE|GGML_NATIVE|GGML_OPENMP):' "$out/build/CMakeCache.txt" >&2
echo "$PWD/$bench"
