#!/usr/bin/env bash
# The converter benchmark (issue: one pass against the two-step route llama.cpp users take):
#
#   ours:      gemma convert HF_DIR -o ours.gguf --type q4_k_m              (one pass)
#   two-step:  gemma convert HF_DIR -o f16.gguf --type f16                  (HF → f16 GGUF; the
#              step llama.cpp's convert_hf_to_gguf.py does, which is not vendored here)
#              llama_model_quantize f16.gguf llama.gguf Q4_K_M               (libllama)
#
# Prints wall time, peak RSS (GNU time) and bytes written for each, and the ratios.
#
#   scripts/bench-convert.sh [HF_DIR] [THREADS]
#
# HF_DIR defaults to models/gemma-3-270m-hf (scripts/make_hf_checkpoint.py); a Gemma 3
# 1B-shaped random checkpoint comes from scripts/make_random_checkpoint.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
HF_DIR="${1:-models/gemma-3-270m-hf}"
THREADS="${2:-$(nproc)}"
cargo build --release -q -p gemma-cli -p gemma-tests --example llama_quantize
GEMMA=target/release/gemma
LLQ=target/release/examples/llama_quantize
OUT="$(mktemp -d -p target bench-convert.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT

measure() { # name, command... → "seconds peak_kib"
    local name="$1"; shift
    /usr/bin/time -f "%e %M" -o "$OUT/$name.time" "$@" >/dev/null 2>"$OUT/$name.log" || { cat "$OUT/$name.log"; exit 1; }
    cat "$OUT/$name.time"
}
sync
read -r t1 m1 < <(measure ours "$GEMMA" convert "$HF_DIR" -o "$OUT/ours.gguf" --type q4_k_m --threads "$THREADS" -q)
read -r t2 m2 < <(measure f16 "$GEMMA" convert "$HF_DIR" -o "$OUT/f16.gguf" --type f16 --threads "$THREADS" -q)
read -r t3 m3 < <(measure llq "$LLQ" "$OUT/f16.gguf" "$OUT/llama.gguf" 15 "$THREADS")
b1=$(stat -c %s "$OUT/ours.gguf"); bf=$(stat -c %s "$OUT/f16.gguf"); b3=$(stat -c %s "$OUT/llama.gguf")
"$(scripts/venv.sh)" - "$HF_DIR" "$THREADS" "$t1" "$m1" "$b1" "$t2" "$m2" "$bf" "$t3" "$m3" "$b3" <<'PY'
import sys
d, th, t1, m1, b1, t2, m2, bf, t3, m3, b3 = sys.argv[1:]
t1, t2, t3 = float(t1), float(t2), float(t3)
m1, m2, m3 = int(m1) / 1024, int(m2) / 1024, int(m3) / 1024
b1, bf, b3 = int(b1) / 2**20, int(bf) / 2**20, int(b3) / 2**20
two_t, two_m, two_b = t2 + t3, max(m2, m3), bf + b3
print(f"checkpoint {d}, {th} threads, q4_k_m")
print(f"| route | wall s | peak RSS MiB | MiB written |")
print(f"|---|---:|---:|---:|")
print(f"| ours, one pass | {t1:.1f} | {m1:.0f} | {b1:.0f} |")
print(f"| HF → f16 GGUF | {t2:.1f} | {m2:.0f} | {bf:.0f} |")
print(f"| f16 → Q4_K_M (llama_model_quantize) | {t3:.1f} | {m3:.0f} | {b3:.0f} |")
print(f"| two-step total | {two_t:.1f} | {two_m:.0f} | {two_b:.0f} |")
print(f"ours / two-step: time {t1 / two_t:.2f}×, peak RSS {m1 / two_m:.2f}×, bytes written {b1 / two_b:.2f}×")
PY
