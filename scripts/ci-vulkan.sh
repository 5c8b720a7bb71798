#!/usr/bin/env bash
# CI's Vulkan phase (README, "GPU backends"): ggml's Vulkan backend built and checked against
# the CPU on Mesa's lavapipe, a conforming Vulkan implementation that runs on the CPU (its
# device is called `llvmpipe`), as llama.cpp's own CI tests its Vulkan backend. No GPU needed.
#
#   scripts/ci-vulkan.sh
#
# 1. scripts/setup-vulkan.sh: glslc, the loader and lavapipe from the distribution; on Debian 12
#    the newer Vulkan headers from Debian 13 into target/vulkan-sdk/ (nothing installed).
# 2. The release build with `--features vulkan` (gemma-cli) and, in the same profile and target
#    folder, the device tests, so ggml with its ~1000 shaders is compiled once for both; the
#    tests' libllama is then built with Vulkan too, the yardstick on the same driver.
# 3. `gemma system` must list the llvmpipe device; tests/tests/backend_exactness.rs with
#    GEMMA_TEST_DEVICE set (so a build without the device fails); a short `gemma run` and
#    `gemma bench` on the device, fully and partly offloaded (lavapipe's figures are not a
#    speed claim: it is a CPU running shaders).
# Prints each step's time and the total.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never

steps_name=ci-vulkan
. scripts/steps.sh

sdk=$(scripts/setup-vulkan.sh)
if [ -n "$sdk" ]; then
  # One folder with the headers, or the build's FindVulkan fails far from the cause.
  [ -f "$sdk/include/vulkan/vulkan_core.h" ] || {
    echo "ci-vulkan: FAILED: scripts/setup-vulkan.sh printed '$sdk', not a folder with include/vulkan/vulkan_core.h" >&2
    exit 1
  }
  export VULKAN_SDK="$sdk"
fi
# lavapipe only (the machine may list other ICDs that find no hardware), and ggml-vulkan's
# device 0 made visible: by default it skips devices whose Vulkan type is CPU, as lavapipe's
# is (ggml-vulkan.cpp, ggml_vk_instance_init).
icd=$(ls /usr/share/vulkan/icd.d/lvp_icd.*.json | head -1)
export VK_ICD_FILENAMES="$icd" GGML_VK_VISIBLE_DEVICES=0
# lavapipe spends most of a short run compiling ggml's pipelines to machine code; Mesa's disk
# cache keeps them for the next process (measured: an 8-token `gemma run` 54.8 s cold, 8.6 s
# warm; the greedy device test 141 s cold, 52 s warm). Kept in the target folder.
export MESA_SHADER_CACHE_DIR="${MESA_SHADER_CACHE_DIR:-$PWD/target/mesa-shader-cache}"
step_done "set-up (VULKAN_SDK=${VULKAN_SDK:-system})"

model=$(scripts/fetch-model.sh)
export GEMMA_TEST_MODEL="$model"
# gemma and the device tests in one cargo invocation, so llama-cpp-sys-2's features are the
# union of both (the tests add `mtmd`) and ggml with its shaders is built once; the test build
# after it resolves to the same features and reuses it.
nice -n 10 cargo build --release -p gemma-cli -p gemma-tests --features gemma-cli/vulkan,gemma-tests/vulkan
nice -n 10 cargo test --release -p gemma-tests --features vulkan --test backend_exactness --no-run
step_done "vulkan release build (gemma and the device tests)"

gemma=target/release/gemma
system=$("$gemma" system)
echo "$system"
release_ggml_check "the vulkan build" "$system"
grep -q '^device Vulkan0 .*llvmpipe' <<<"$system" || {
  echo "ci-vulkan: FAILED: gemma system lists no Vulkan0 llvmpipe device" >&2
  exit 1
}
version=$("$gemma" --version)
echo "$version"
grep -q 'Vulkan0 (llvmpipe' <<<"$version" || {
  echo "ci-vulkan: FAILED: gemma --version lists no Vulkan0 llvmpipe device" >&2
  exit 1
}
# First the binary on the device (this also fills the shader cache the tests then read).
"$gemma" run -m "$model" --device vulkan0 -p "The three largest cities of France are" -n 12 --temp 0
"$gemma" run -m "$model" --device vulkan0 --gpu-layers 6 -p "The capital of France is" -n 8 --temp 0
"$gemma" bench -m "$model" --device vulkan0 -p 32 -n 8 -r 1
step_done "gemma run and bench on Vulkan0"
export GEMMA_TEST_DEVICE=Vulkan0
nice -n 10 cargo test --release -p gemma-tests --features vulkan --test backend_exactness -- --test-threads 1 --nocapture
step_done "vulkan device tests"

steps_total
