#!/usr/bin/env bash
# The set-up's own test (CI runs it first): scripts/setup.sh --dry-run, pointed at fake
# machines, must ask for exactly the packages each one lacks. Each case builds a fake root
# (SETUP_ROOT, where setup.sh looks for libraries) and, where a case needs one, a folder of
# stand-in commands put first on PATH. Prints one line per case; exits 1 on any failure.
#
#   scripts/test-setup.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# A file that passes for the C libclang: an ELF-looking blob exporting clang_createIndex.
fake_c_libclang() { mkdir -p "$(dirname "$1")"; printf '\177ELF...clang_createIndex...clang_parseTranslationUnit' >"$1"; }
# libclang-cpp, the C++ interface library: same family of names, no C API.
fake_cpp_libclang() { mkdir -p "$(dirname "$1")"; printf '\177ELF..._ZN5clang8Sema...' >"$1"; }

# case NAME +PACKAGE|-PACKAGE ROOT [STUBS-DIR]: runs the dry run with that root (and those
# stand-in commands first on PATH) and checks that PACKAGE is (+) or is not (-) among the
# packages it asks for. Other packages may appear: the machine itself may lack them.
case_() {
  local name=$1 want=$2 root=$3 stubs=${4:-}
  local path=$PATH out ok=0
  [ -n "$stubs" ] && path=$stubs:$PATH
  out=$(PATH="$path" SETUP_ROOT="$root" LIBCLANG_PATH="${LIBCLANG_PATH_CASE:-}" \
        bash scripts/setup.sh --dry-run 2>&1)
  if grep -qx "${want:1}" <<<"$out"; then
    [ "${want:0:1}" = + ] && ok=1
  else
    [ "${want:0:1}" = - ] && ok=1
  fi
  if [ $ok -eq 1 ]; then
    passed=$((passed + 1))
    echo "ok   $name: asks for [${out//$'\n'/ }]"
  else
    failed=$((failed + 1))
    echo "FAIL $name: expected $want, setup.sh --dry-run asked for [${out//$'\n'/ }]"
  fi
}

# Stand-ins for the commands setup.sh checks.
# A cmake too old for llama.cpp (3.14 is its minimum), a python3 whose venv module is missing
# (Debian's python3 without python3-venv), and a working llvm-config that points nowhere.
old_cmake=$work/old-cmake
mkdir -p "$old_cmake"
printf '#!/bin/sh\necho "cmake version 3.10.2"\n' >"$old_cmake/cmake"
no_venv=$work/no-venv
mkdir -p "$no_venv"
printf '#!/bin/sh\nif [ "$1 $2" = "-m venv" ]; then echo "The virtual environment was not created successfully because ensurepip is not available." >&2; exit 1; fi\nexec %s "$@"\n' "$(command -v python3)" >"$no_venv/python3"
llvm_nowhere=$work/llvm-nowhere
mkdir -p "$llvm_nowhere"
printf '#!/bin/sh\necho /nonexistent\n' >"$llvm_nowhere/llvm-config"
chmod +x "$old_cmake"/* "$no_venv"/* "$llvm_nowhere"/*

# The case of the issue: only libclang-cpp.so.14 (installed with other LLVM packages), no C
# libclang: setup.sh must ask for libclang-dev. (llvm-config, if present, must not help.)
r=$work/cpp-only
fake_cpp_libclang "$r/usr/lib/llvm-14/lib/libclang-cpp.so.14"
fake_cpp_libclang "$r/usr/lib/x86_64-linux-gnu/libclang-cpp.so.14"
case_ "only libclang-cpp.so.14" +libclang-dev "$r" "$llvm_nowhere"

# Debian's libclang1-14: the C library as libclang-14.so.1 (no libclang.so symlink).
r=$work/libclang1
fake_c_libclang "$r/usr/lib/x86_64-linux-gnu/libclang-14.so.1"
fake_cpp_libclang "$r/usr/lib/x86_64-linux-gnu/libclang-cpp.so.14"
case_ "C libclang as libclang-14.so.1" -libclang-dev "$r" "$llvm_nowhere"

# libclang-14-dev: /usr/lib/llvm-14/lib/libclang.so.
r=$work/dev
fake_c_libclang "$r/usr/lib/llvm-14/lib/libclang.so"
case_ "C libclang as llvm-14/lib/libclang.so" -libclang-dev "$r" "$llvm_nowhere"

# A file named like the C library that is not one (no C API in it).
r=$work/impostor
fake_cpp_libclang "$r/usr/lib/llvm-15/lib/libclang.so.15"
case_ "libclang.so.15 without the C API" +libclang-dev "$r" "$llvm_nowhere"

# LIBCLANG_PATH, as bindgen reads it, pointing at a C libclang outside the usual folders.
r=$work/empty
mkdir -p "$r"
fake_c_libclang "$work/opt-llvm/lib/libclang.so.17"
LIBCLANG_PATH_CASE=$work/opt-llvm/lib case_ "LIBCLANG_PATH with the C library" -libclang-dev "$r" "$llvm_nowhere"
LIBCLANG_PATH_CASE=$r case_ "LIBCLANG_PATH without one" +libclang-dev "$r" "$llvm_nowhere"

# Commands: a cmake older than llama.cpp's minimum, and a python3 that cannot make a venv.
r=$work/libclang1
case_ "cmake 3.10" +cmake "$r" "$old_cmake:$llvm_nowhere"
case_ "python3 without venv" +python3-venv "$r" "$no_venv:$llvm_nowhere"

echo "setup: $passed passed, $failed failed"
[ $failed -eq 0 ]
