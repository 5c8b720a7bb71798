#!/usr/bin/env bash
# Builds llama.cpp's own `llama-bench` as its users build it, for speed comparisons that our
# build settings cannot touch: the llama.cpp source vendored in llama-cpp-sys-2 0.1.161 (the
# same ggml commit that we link), configured by llama.cpp's CMake with its defaults (Release,
# GGML_NATIVE, GGML_OPENMP on), in its own folder, by plain cmake: no cargo, no cmake-rs, none
# of .cargo/config.toml. The one flag added on x86-64 turns off AMX, which some VMs report in
# CPUID but do not grant (-march=native would then die with SIGILL); our build does the same.
#
#   scripts/build-llama-ref.sh          # prints the path of llama-bench
#
# Output: target/llama-ref/bin/llama-bench (about 8 minutes on 2 cores, once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { echo "build-llama-ref: $*" >&2; }

out=target/llama-ref
bench=$out/bin/llama-bench
if [ -x "$bench" ]; then
  echo "$PWD/$bench"
  exit 0
fi

# The vendored source, wherever cargo unpacked the crate.
manifest=$(cargo metadata --format-version 1 2>/dev/null | grep -o '"manifest_path":"[^"]*llama-cpp-sys-2-0.1.161/Cargo.toml"' | head -1 | cut -d'"' -f4)
[ -n "$manifest" ] || { say "llama-cpp-sys-2 0.1.161 is not in cargo's registry: run cargo fetch"; exit 1; }
src=$(dirname "$manifest")/llama.cpp

flags=""
[ "$(uname -m)" = x86_64 ] && flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
say "configuring $src in $out (Release, llama.cpp's defaults${flags:+, plus $flags})"
CFLAGS="$flags" CXXFLAGS="$flags" cmake -S "$src" -B "$out" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
cmake --build "$out" --target llama-bench -j "$(nproc)" >&2
grep -E '^(CMAKE_BUILD_TYPE|GGML_NATIVE|GGML_OPENMP):' "$out/CMakeCache.txt" >&2
echo "$PWD/$bench"
