#!/usr/bin/env bash
# The CUDA checks that need an NVIDIA GPU (README, "GPU backends", "CUDA"), in one run that
# writes one results file:
#
#   scripts/gpu-check.sh                 # results: ${OUT:-target}/gpu-check.txt
#
# 1. The GPU (nvidia-smi) and the toolkit: $CUDA_PATH, else .cuda/env.sh (scripts/setup-cuda.sh,
#    carried or made here), else /usr/local/cuda. Without a GPU it writes that and exits 1.
# 2. The release build with `--features cuda` in target/cuda (gemma and the device tests),
#    for this GPU's architecture only (CMAKE_CUDA_ARCHITECTURES=<compute capability>-real,
#    from nvidia-smi; GEMMA_CUDA_ARCHS overrides). A build already there is reused: cargo
#    only checks it; without cargo the binaries already in target/cuda/release are run.
#    Cargo runs --offline with GEMMA_CARGO_OFFLINE=1 (a machine without network), which needs
#    the crates in ~/.cargo/registry. The binary needs libcublas.so.13 at start: the toolkit
#    must be on the machine (the `device` tool's 64 MiB carry cannot hold .cuda/, 850 MB).
# 3. Exactness against the CPU (tests/tests/backend_exactness.rs, GEMMA_TEST_DEVICE=CUDA0):
#    per-position logits, top-1 agreement, mean KL, greedy continuations, full and partial
#    offload, each beside libllama on the same device.
# 4. `gemma run` on CUDA0, fully and partly offloaded (--gpu-layers 6), greedy.
# 5. `gemma bench` pp512/tg128 on CUDA0 and llama.cpp's llama-bench built with CUDA on this
#    machine (scripts/build-llama-ref.sh --cuda; its source, target/llama-ref/src, 176 MB, or
#    network to fetch it, must be here), all layers on the GPU (-ngl 99), alternating, and the
#    ratios ours / llama.cpp.
#
# Environment: GEMMA_TEST_MODEL (default: scripts/fetch-model.sh's file), GEMMA_BENCH_REPS
# (default 5), GEMMA_CUDA_ARCHS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never
results=${OUT:-target}/gpu-check.txt
mkdir -p "$(dirname "$results")"
: >"$results"
t0=$(date +%s)
say() { echo "gpu-check: $*" | tee -a "$results" >&2; }
record() { tee -a "$results"; }
section() { printf '\n== %s (at %d s)\n' "$1" "$(($(date +%s) - t0))" | record; }

section "machine"
{
  date -u
  git log -1 --format='commit %H %s' 2>/dev/null || true
  echo "$(nproc) CPUs, $(uname -m)"
} | record
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  say "no NVIDIA GPU here (nvidia-smi is missing or lists none): nothing to measure. The build and the no-GPU checks are scripts/ci-cuda.sh's."
  exit 1
fi
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv | record
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
export GEMMA_CUDA_ARCHS=${GEMMA_CUDA_ARCHS:-${cc}-real}

section "toolkit"
if [ -z "${CUDA_PATH:-}" ]; then
  if [ -f .cuda/env.sh ] || [ ! -d /usr/local/cuda ]; then
    scripts/setup-cuda.sh >/dev/null
    # shellcheck disable=SC1091
    . .cuda/env.sh
  else
    export CUDA_PATH=/usr/local/cuda CUDAToolkit_ROOT=/usr/local/cuda
    export CUDACXX=/usr/local/cuda/bin/nvcc CMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc
    export CUDA_LIBRARY_PATH=/usr/local/cuda PATH=/usr/local/cuda/bin:$PATH
    export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  fi
fi
echo "CUDA_PATH=$CUDA_PATH; $("$CUDA_PATH/bin/nvcc" --version | tail -2 | head -1); architectures $GEMMA_CUDA_ARCHS" | record

section "build"
export CMAKE_CUDA_ARCHITECTURES=$GEMMA_CUDA_ARCHS
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda}
offline=()
[ "${GEMMA_CARGO_OFFLINE:-0}" = 1 ] && offline=(--offline)
tb=$(date +%s)
gemma=$CARGO_TARGET_DIR/release/gemma
if command -v cargo >/dev/null; then
  # One invocation for both (features unified: ggml's CUDA backend is compiled once).
  cargo build "${offline[@]}" --release -p gemma-cli -p gemma-tests --features gemma-cli/cuda,gemma-tests/cuda 2>&1 | tail -3 | record
  cargo test "${offline[@]}" --release -p gemma-tests --features cuda --test backend_exactness --no-run 2>&1 | tail -3 | record
  echo "build: $(($(date +%s) - tb)) s" | record
elif [ -x "$gemma" ]; then
  echo "no cargo here: using the binaries built before in $CARGO_TARGET_DIR/release" | record
else
  say "no cargo and no prebuilt $gemma: nothing to run"
  exit 1
fi
model=${GEMMA_TEST_MODEL:-$(scripts/fetch-model.sh)}
export GEMMA_TEST_MODEL=$model
"$gemma" system | record
grep -q '^device CUDA0 ' <<<"$("$gemma" system)" || {
  say "FAILED: gemma system lists no CUDA0 device"
  exit 1
}

status=0
section "exactness against the CPU (tests/tests/backend_exactness.rs, CUDA0)"
if command -v cargo >/dev/null; then
  exactness=(cargo test "${offline[@]}" --release -p gemma-tests --features cuda --test backend_exactness --)
else
  exactness=("$(ls -t "$CARGO_TARGET_DIR"/release/deps/backend_exactness-* | grep -v '\.d$' | head -1)")
fi
if ! GEMMA_TEST_DEVICE=CUDA0 "${exactness[@]}" --test-threads 1 --nocapture 2>&1 | record; then
  say "FAILED: backend_exactness on CUDA0"
  status=1
fi

section "gemma run on CUDA0: all layers, then the last 6"
for ngl in "" 6; do
  args=(run -m "$model" --device cuda0 -p "The three largest cities of France are" -n 24 --temp 0)
  [ -n "$ngl" ] && args+=(--gpu-layers "$ngl")
  echo "\$ gemma ${args[*]}" | record
  if ! "$gemma" "${args[@]}" 2>&1 | record; then
    say "FAILED: gemma ${args[*]}"
    status=1
  fi
done

section "speed: gemma bench vs llama-bench (CUDA), pp512 / tg128, all layers on CUDA0"
if llama_bench=$(scripts/build-llama-ref.sh --cuda 2>>"$results"); then
  reps=${GEMMA_BENCH_REPS:-5}
  ours=$(mktemp) theirs=$(mktemp)
  # Alternating, each tool once per round (its own warm-up inside), as scripts/bench_vs_llama.py.
  for round in 1 2; do
    "$gemma" bench -m "$model" --device cuda0 -p 512 -n 128 -r "$reps" -o json >>"$ours"
    "$llama_bench" -m "$model" -ngl 99 -p 512 -n 128 -r "$reps" -o json >>"$theirs"
    echo "round $round done" | record
  done
  python3 - "$ours" "$theirs" <<'EOF' | record
import json, statistics, sys

def runs(path):
    # one JSON array per run, concatenated
    text, dec, out, i = open(path).read(), json.JSONDecoder(), {}, 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        arr, i = dec.raw_decode(text, i)
        for r in arr:
            name = f"pp{r['n_prompt']}" if r["n_prompt"] > 0 else f"tg{r['n_gen']}"
            out.setdefault(name, []).append(float(r["avg_ts"]))
    return out

ours, theirs = runs(sys.argv[1]), runs(sys.argv[2])
print(f"{'test':6} {'gemma t/s':>12} {'llama.cpp t/s':>14} {'ratio':>6}")
for test in ("pp512", "tg128"):
    a, b = statistics.median(ours[test]), statistics.median(theirs[test])
    print(f"{test:6} {a:12.1f} {b:14.1f} {a / b:6.3f}   (rounds: ours {ours[test]}, llama.cpp {theirs[test]})")
EOF
  rm -f "$ours" "$theirs"
else
  say "FAILED: could not build llama-bench with CUDA (scripts/build-llama-ref.sh --cuda)"
  status=1
fi

section "done"
echo "total $(($(date +%s) - t0)) s, status $status" | record
echo "gpu-check: results in $results" >&2
exit $status
