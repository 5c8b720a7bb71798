#!/usr/bin/env bash
# Cross-builds the workspace for 64-bit Arm Linux (aarch64-unknown-linux-gnu: Raspberry Pi 4
# and 5) on an x86-64 Debian or Ubuntu PC, and runs its tests there under qemu user-mode
# emulation. CI runs the Pi 5 profile: its build in the background from the start, its tests at
# the end (.ci/run).
#
#   scripts/cross-aarch64.sh                 # pi5 and pi4: build, emulated tests, real-model check
#   scripts/cross-aarch64.sh pi4             # one profile
#   scripts/cross-aarch64.sh --release pi5   # only build the release `gemma` to copy to a board
#   scripts/cross-aarch64.sh --ci            # what CI runs (below), within its time budget
#   scripts/cross-aarch64.sh --ci --build-only  # only the builds of that run (CI starts them early,
#                                               # in the background: .ci/run)
#
# Profiles (one cargo configuration each, given with --config, so the host build is untouched):
#   pi5  .cargo/aarch64-pi5.toml  Cortex-A76: ggml with -march=armv8.2-a+dotprod+fp16, qemu -cpu cortex-a76
#   pi4  .cargo/aarch64-pi4.toml  Cortex-A72: ggml with -march=armv8-a (NEON), qemu -cpu cortex-a72
# Each sets the cross linker, the qemu runner (so `cargo test`/`cargo run` work on the PC), the
# Rust target-cpu and the C flags of the ggml build (.cargo/aarch64-toolchain.cmake).
#
# Installs with apt-get (through sudo when not root), once: the Arm cross compilers, qemu, and an
# aarch64 Rust standard library. Rust: the default toolchain with the aarch64 target
# (`rustup target add aarch64-unknown-linux-gnu`); when rustup cannot fetch it (or with
# CROSS_RUST=debian), on Debian 12, Debian's own Rust 1.96 (`rustc-web`, `cargo-web`,
# `libstd-rust-web-dev:arm64`, which adds the arm64 architecture to dpkg), used for the cross
# build alone.
#
# Under emulation, for pi5: the unit tests of every crate but gemma-tests (it links libllama as
# a reference and runs it on the real model: too slow emulated), the safe-layer kernel tests
# (gemma-gguf/tests/ggml_ops.rs), the GGUF tests, `gemma system`, and `gemma run` on the real
# 270M model: 16 greedy tokens compared with the host build's for the same prompt. They must be
# equal, except that a first difference is accepted at a near-tie that the rounding differences
# between the builds' kernels explain (scripts/compare_greedy.py says how it measures that).
# Then `gemma serve` under emulation: started on a free loopback port, one greedy
# /v1/completions answered (checked for its `choices`), stopped with SIGTERM, which it must
# exit 0 on; every wait is bounded (SERVE_WAIT_S, default 120 s each), so CI cannot hang.
# For pi4: the kernel tests, `gemma system`, `gemma run` and `gemma serve`. The gemma-cli integration tests
# stay host-only (they start the Arm `gemma` directly, which needs binfmt_misc).
# With --ci, pi4 runs the kernel tests alone (they print ggml's CPU features, as `gemma system`
# does), which spares CI a second build of `gemma` and all its dependencies for Cortex-A72
# (about 2 minutes on 2 cores). The Pi 5 build runs everything, the greedy check included.
#
# Environment:
#   CROSS_TARGET_DIR  cargo target directory base (default: target/cross; one folder per profile)
#   CROSS_HOST_GEMMA  the x86-64 `gemma` whose greedy tokens the Arm build's must match (default:
#                     the host's debug build, built first; CI passes the one its tests built)
#   GEMMA_TEST_MODEL  the real model (default: scripts/fetch-model.sh fetches it)
#   CROSS_RUST        `debian`: build with Debian's rustc-web even when rustup could do it
#   SERVE_WAIT_S      the longest wait for the emulated server to listen, answer, or stop (120)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# release_ggml_check (the build type `gemma system` reports)
. scripts/steps.sh

TRIPLE=aarch64-unknown-linux-gnu
PROMPT="The capital of France is"
N_TOKENS=16

release=0
ci=0
build_only=0
profiles=()
for a in "$@"; do
  case "$a" in
    --release) release=1 ;;
    --ci) ci=1 ;;
    --build-only) build_only=1 ;;
    pi4 | pi5) profiles+=("$a") ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cross-aarch64: unknown argument $a (pi4, pi5, --release, --ci, --build-only)" >&2; exit 2 ;;
  esac
done
[ ${#profiles[@]} -gt 0 ] || profiles=(pi5 pi4)

say() { echo "cross-aarch64: $*" >&2; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_install() {
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
apt_updated=0
apt_update() {
  [ $apt_updated -eq 1 ] || { $sudo apt-get update -qq; apt_updated=1; }
}

# --- Prerequisites -------------------------------------------------------------------------
scripts/setup.sh # host compiler, cmake, libclang (bindgen), python
need=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
if [ ${#need[@]} -gt 0 ]; then
  apt_update
  apt_install "${need[@]}"
fi

# The Rust toolchain for the cross build: CARGO and RUSTC.
has_target() { [ -d "$("$1" --print sysroot)/lib/rustlib/$TRIPLE/lib" ]; }
debian_rust() { # Debian 12's rustc-web 1.96 ships an arm64 standard library package
  [ -r /etc/debian_version ] && command -v apt-cache >/dev/null 2>&1 || return 1
  apt-cache show libstd-rust-web-dev >/dev/null 2>&1 && return 0
  apt_update
  apt-cache show libstd-rust-web-dev >/dev/null 2>&1
}
# CROSS_RUST=debian forces Debian's Rust; otherwise rustup's toolchain is preferred (the one
# the host build uses), with the target added when rustup can fetch it.
if [ "${CROSS_RUST:-}" != debian ] && command -v rustc >/dev/null 2>&1 && has_target rustc; then
  CARGO=cargo RUSTC_CROSS=rustc
elif [ "${CROSS_RUST:-}" != debian ] && command -v rustup >/dev/null 2>&1 && rustup target add "$TRIPLE" && has_target rustc; then
  CARGO=cargo RUSTC_CROSS=rustc
elif debian_rust; then
  if ! dpkg -s libstd-rust-web-dev:arm64 >/dev/null 2>&1 || ! [ -x /usr/bin/cargo ]; then
    dpkg --print-foreign-architectures | grep -qx arm64 || $sudo dpkg --add-architecture arm64
    apt_updated=0
    apt_update
    apt_install rustc-web cargo-web libstd-rust-web-dev:arm64
  fi
  CARGO=/usr/bin/cargo RUSTC_CROSS=/usr/bin/rustc
else
  rustup target add "$TRIPLE"
  CARGO=cargo RUSTC_CROSS=rustc
fi
has_target "$RUSTC_CROSS" || { say "$RUSTC_CROSS has no $TRIPLE standard library"; exit 1; }
say "cross toolchain: $("$RUSTC_CROSS" --version) ($CARGO)"

# --- Cross builds ----------------------------------------------------------------------------
base=${CROSS_TARGET_DIR:-target/cross}
cross() { # cross PROFILE CARGO-ARGS...: cargo for the Arm target with that profile's config
  local p=$1
  shift
  CARGO_TARGET_DIR="$base/$p" RUSTC="$RUSTC_CROSS" "$CARGO" "$1" --target "$TRIPLE" \
    --config ".cargo/aarch64-$p.toml" "${@:2}"
}

if [ $release -eq 1 ]; then
  for p in "${profiles[@]}"; do
    cross "$p" build --release -p gemma-cli
    say "$p: $base/$p/$TRIPLE/release/gemma"
  done
  exit 0
fi

# What runs under emulation (see the header). pi5: everything listed; pi4 (a second full build
# of ggml for plain NEON): the kernel tests, where its code differs from the Pi 5's.
PKGS_ALL=(-p ggml-sys -p gemma-gguf -p gemma-cli -p gemma-tools --lib --bins --test ggml_ops --test gguf_files
  --test gguf_fuzz_seeds --test gguf_large_file --test gguf_real_model --test gguf_vs_ggml)
PKGS_KERNELS=(-p gemma-gguf --test ggml_ops)
selection() { # selection PROFILE: sets `sel`, the test targets that run emulated for it
  if [ "$1" = pi5 ]; then sel=("${PKGS_ALL[@]}"); else sel=("${PKGS_KERNELS[@]}"); fi
}
kernels_only() { [ $ci -eq 1 ] && [ "$1" = pi4 ]; } # --ci runs no `gemma` for the Pi 4
build() { # build PROFILE: its test binaries and, unless kernels_only, its `gemma`
  selection "$1"
  cross "$1" test --no-run "${sel[@]}"
  kernels_only "$1" || cross "$1" build -p gemma-cli --bin gemma
}

if [ $build_only -eq 1 ]; then
  for p in "${profiles[@]}"; do
    t0=$(date +%s)
    build "$p"
    say "$p: built in $(($(date +%s) - t0)) s"
  done
  exit 0
fi

GEMMA_TEST_MODEL=${GEMMA_TEST_MODEL:-$(scripts/fetch-model.sh)}
export GEMMA_TEST_MODEL

# The host build's greedy run: the reference for the Arm builds (text, and each step's five
# highest logits for scripts/compare_greedy.py).
logs=$(mktemp -d)
serve_pid=""
# An emulated server left running by a failed check is stopped with the script.
trap '[ -z "$serve_pid" ] || kill -KILL "$serve_pid" 2>/dev/null; rm -rf "$logs"' EXIT
RUN=(run -m "$GEMMA_TEST_MODEL" -p "$PROMPT" -n $N_TOKENS --temp 0 -t 1 --show-top 5)
py=$(scripts/venv.sh)
if [ -n "${CROSS_HOST_GEMMA:-}" ]; then
  host_gemma=$CROSS_HOST_GEMMA
  [ -x "$host_gemma" ] || { say "CROSS_HOST_GEMMA=$host_gemma is not an executable (build it, or leave it unset)"; exit 1; }
else
  cargo build -q -p gemma-cli --bin gemma
  host_dir=$(cargo metadata --format-version 1 --no-deps | "$py" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  host_gemma=$host_dir/debug/gemma
fi
want=$("$host_gemma" "${RUN[@]}" 2>"$logs/host")
say "x86-64 host: $want"

# serve_check PROFILE: `gemma serve` of that profile's build under qemu answers one request
# and stops on SIGTERM (see the header). The binary is started through the profile's qemu
# runner (read from its .cargo file) rather than `cargo run`, so that the signal reaches it.
SERVE_WAIT_S=${SERVE_WAIT_S:-120}
serve_check() {
  local p=$1 log="$logs/$1-serve" t0 addr="" answer status=0 runner
  mapfile -t runner < <("$py" -c 'import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["target"][sys.argv[2]]["runner"]))' ".cargo/aarch64-$p.toml" "$TRIPLE")
  t0=$(date +%s)
  "${runner[@]}" "$base/$p/$TRIPLE/debug/gemma" serve -m "$GEMMA_TEST_MODEL" --host 127.0.0.1 --port 0 -t 1 -c 256 \
    2>"$log" &
  serve_pid=$!
  until addr=$(sed -n 's|^listening on http://||p' "$log") && [ -n "$addr" ]; do
    if ! kill -0 "$serve_pid" 2>/dev/null || [ $(($(date +%s) - t0)) -ge "$SERVE_WAIT_S" ]; then
      cat "$log" >&2
      say "$p: FAILED: gemma serve did not start listening within ${SERVE_WAIT_S} s"
      return 1
    fi
    sleep 1
  done
  curl -sSf --max-time "$SERVE_WAIT_S" "http://$addr/health" >/dev/null || { say "$p: FAILED: /health"; return 1; }
  answer=$(curl -sSf --max-time "$SERVE_WAIT_S" -H 'Content-Type: application/json' \
    -d "{\"prompt\": \"$PROMPT\", \"max_tokens\": 4, \"temperature\": 0}" "http://$addr/v1/completions") || {
    cat "$log" >&2
    say "$p: FAILED: POST /v1/completions"
    return 1
  }
  "$py" -c 'import json, sys; v = json.loads(sys.argv[1]); assert v["choices"][0]["text"], v' "$answer" || {
    say "$p: FAILED: the answer has no choices: $answer"
    return 1
  }
  local t1
  t1=$(date +%s)
  kill -TERM "$serve_pid"
  until ! kill -0 "$serve_pid" 2>/dev/null; do
    if [ $(($(date +%s) - t1)) -ge "$SERVE_WAIT_S" ]; then
      say "$p: FAILED: gemma serve still running ${SERVE_WAIT_S} s after SIGTERM"
      return 1
    fi
    sleep 1
  done
  wait "$serve_pid" || status=$?
  serve_pid=""
  [ "$status" -eq 0 ] || { cat "$log" >&2; say "$p: FAILED: gemma serve exited $status after SIGTERM"; return 1; }
  say "$p: gemma serve on $addr answered $answer"
  say "$p: gemma serve: listening and answering $((t1 - t0)) s, stopped $(($(date +%s) - t1)) s after SIGTERM"
}

fail=0
for p in "${profiles[@]}"; do
  t0=$(date +%s)
  build "$p"
  if kernels_only "$p"; then
    t1=$(date +%s)
    if cross "$p" test "${sel[@]}" -- --nocapture >"$logs/$p-tests" 2>&1; then
      grep -E "^ggml CPU backend features|^mul_mat +[a-zA-Z0-9_]+: max abs err|^test result" "$logs/$p-tests" >&2 || true
    else
      cat "$logs/$p-tests" >&2
      say "$p: FAILED the emulated kernel tests"
      fail=1
    fi
    t2=$(date +%s)
    say "$p: build $((t1 - t0)) s, emulated kernel tests $((t2 - t1)) s (--ci: no gemma run)"
    continue
  fi
  t1=$(date +%s)
  cross "$p" test "${sel[@]}"
  t2=$(date +%s)
  system=$(cross "$p" run -q -p gemma-cli --bin gemma -- system)
  echo "$system"
  steps_name=cross-aarch64 release_ggml_check "the $p build" "$system"
  got=$(cross "$p" run -q -p gemma-cli --bin gemma -- "${RUN[@]}" 2>"$logs/$p") || {
    cat "$logs/$p" >&2
    say "$p: FAILED: gemma run"
    exit 1
  }
  t3=$(date +%s)
  say "$p: $got"
  if [ "$got" = "$want" ]; then
    say "$p: $N_TOKENS greedy tokens equal the host's"
  else
    say "$p: the greedy text differs from the host's; is it a near-tie that rounding flips?"
  fi
  # Same tokens, or a first difference at a near-tie within the builds' measured rounding
  # differences (see the script's header); anything else fails.
  "$py" scripts/compare_greedy.py "$logs/host" "$logs/$p" || { say "$p: FAILED the greedy comparison"; fail=1; }
  say "$p: build $((t1 - t0)) s, emulated tests $((t2 - t1)) s, gemma system + run $((t3 - t2)) s"
  serve_check "$p" || fail=1
done
exit $fail
