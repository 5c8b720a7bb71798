#!/usr/bin/env bash
# Where a decode step's time goes: `perf record` over `gemma bench` generating tokens only
# (no prompt test), then each sampled function put in one bucket: a ggml op kind (mul_mat by
# weight type, attention, norms, rope, …), thread synchronisation (OpenMP barriers and spins),
# graph building and scheduling (ggml's allocator, our graph code), sampling, the rest.
# Prints a Markdown table, share of samples per bucket and per function within it.
#
#   scripts/profile-decode.sh MODEL.gguf [THREADS] [N_GEN]
#
# Needs perf (Debian: linux-perf) and a release build (target/release/gemma).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model=${1:?usage: profile-decode.sh MODEL.gguf [THREADS] [N_GEN]}
threads=${2:-2}
n_gen=${3:-128}
gemma=${GEMMA:-target/release/gemma}
command -v perf >/dev/null || { echo "profile-decode: needs perf (apt-get install linux-perf)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

perf record -q -F 2000 -o "$tmp/perf.data" -- "$gemma" bench -m "$model" -p 0 -n "$n_gen" -t "$threads" -r 3 >&2
perf report -i "$tmp/perf.data" --stdio --no-children --sort dso,symbol --percent-limit 0.05 2>/dev/null \
  | "$(scripts/venv.sh)" scripts/profile_buckets.py "$threads" "$n_gen"
