#!/usr/bin/env bash
# Installs what building and testing gemma-gguf needs beyond Rust, on Debian, Ubuntu and
# Raspberry Pi OS, then makes the project's Python virtual environment (scripts/venv.sh).
# Each check looks at the thing a tool really uses, not at a neighbour of it:
#   - C and C++ compilers that compile (cc crate, CMake), with OpenMP (ggml's default);
#   - cmake at least 3.14 (llama.cpp's CMakeLists.txt: cmake_minimum_required), and make;
#   - libclang, the C library that bindgen loads through clang-sys (a libclang.so*, a
#     libclang-N.so* or $LIBCLANG_PATH, exporting clang_createIndex). libclang-cpp.so.N, the
#     C++ interface library, is not it and does not count;
#   - a python3 that can make a virtual environment with pip in it (python3-venv on Debian);
#   - curl, a client we did not write, which the server's tests talk to it with.
# Nothing is installed into the system Python (PEP 668): packages go into .venv/.
# Does nothing when everything is already there.
#
#   scripts/setup.sh              # install what is missing, make .venv
#   scripts/setup.sh --dry-run    # print what is missing, one package a line; install nothing
#
# For the set-up's own test (scripts/test-setup.sh): SETUP_ROOT is a folder that stands for
# / when looking for libraries (default: /).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dry_run=false
[ "${1:-}" = "--dry-run" ] && dry_run=true
root=${SETUP_ROOT:-}

say() { echo "setup: $*" >&2; }

# Prints the first libclang that clang-sys would load (clang-sys 1.9, build/dynamic.rs: the
# names libclang.so, libclang-*.so, libclang.so.*, libclang-*.so.*), checked to be the C
# library by its exported clang_createIndex. Searches $LIBCLANG_PATH, `llvm-config --libdir`
# and the distributions' library folders under $root.
find_libclang() {
  local dirs=() d f name
  [ -n "${LIBCLANG_PATH:-}" ] && dirs+=("$LIBCLANG_PATH")
  if [ -z "$root" ] && command -v llvm-config >/dev/null 2>&1; then
    dirs+=("$(llvm-config --libdir 2>/dev/null || true)")
  fi
  dirs+=("$root"/usr/lib/llvm-*/lib "$root"/usr/lib/*-linux-gnu* "$root"/usr/lib "$root"/usr/lib64
         "$root"/usr/local/lib "$root"/usr/local/llvm*/lib)
  for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/libclang*.so*; do
      [ -e "$f" ] || continue
      name=${f##*/}
      # libclang-14.so.1 and libclang.so.1 are the C library; libclang-cpp.so.14 is not.
      [[ $name =~ ^libclang(-[0-9][0-9.]*)?\.so(\.[0-9.]+)?$ ]] || continue
      if grep -qa clang_createIndex "$f"; then
        echo "$f"
        return 0
      fi
    done
  done
  return 1
}

# True when a C++ compiler builds a program with the standard library and OpenMP.
cxx_works() {
  local tmp
  tmp=$(mktemp -d)
  printf '#include <vector>\n#include <omp.h>\nint main() { std::vector<int> v(2); return omp_get_max_threads() < 1 + v[0]; }\n' \
    >"$tmp/t.cpp"
  c++ -fopenmp "$tmp/t.cpp" -o "$tmp/t" >/dev/null 2>&1 && "$tmp/t"
  local rc=$?
  rm -rf "$tmp"
  return $rc
}

# True when cmake is 3.14 or newer.
cmake_works() {
  local v
  v=$(cmake --version 2>/dev/null | sed -n 's/^cmake version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 3 ] || { [ "$1" -eq 3 ] && [ "$2" -ge 14 ]; }
}

# True when python3 makes a virtual environment with a working pip (Debian's python3 without
# python3-venv fails here: "ensurepip is not available"). A project venv whose pip runs is
# proof enough (not under SETUP_ROOT, where the test's stand-in python3 must be asked).
venv_works() {
  local tmp rc
  if [ -z "$root" ] && "${GEMMA_VENV:-.venv}/bin/python" -m pip --version >/dev/null 2>&1; then
    return 0
  fi
  tmp=$(mktemp -d)
  python3 -m venv "$tmp/v" >/dev/null 2>&1 && "$tmp/v/bin/python" -m pip --version >/dev/null 2>&1
  rc=$?
  rm -rf "$tmp"
  return $rc
}

command -v cargo >/dev/null 2>&1 || { say "Rust is needed first: see https://rustup.rs, then run this again."; exit 1; }

need=()
{ command -v cc >/dev/null 2>&1 && cxx_works; } || need+=(build-essential)
command -v make >/dev/null 2>&1 || need+=(make)
cmake_works || need+=(cmake)
find_libclang >/dev/null || need+=(libclang-dev)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ! command -v python3 >/dev/null 2>&1; then
  need+=(python3 python3-venv)
elif ! venv_works; then
  need+=(python3-venv)
fi

if $dry_run; then
  [ ${#need[@]} -eq 0 ] || printf '%s\n' "${need[@]}"
  exit 0
fi

if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { say "run as root, or install sudo, to install: ${need[*]}"; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Check again what was installed: a package that did not bring the thing is an error here,
# not a bindgen panic minutes into the build.
lib=$(find_libclang) || { say "no libclang C library found after installing libclang-dev; set LIBCLANG_PATH to the folder of libclang.so"; exit 1; }
cmake_works || { say "cmake 3.14 or newer is needed; $(cmake --version 2>&1 | head -1)"; exit 1; }
cxx_works || { say "the C++ compiler (c++) cannot build a program with OpenMP; install build-essential"; exit 1; }
venv_works || { say "python3 cannot make a virtual environment with pip; install python3-venv"; exit 1; }
[ ${#need[@]} -eq 0 ] || say "libclang: $lib"
scripts/venv.sh >/dev/null
