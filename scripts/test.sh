#!/usr/bin/env bash
# The project's test command (README, CI): installs what is missing, fetches the real test
# model (Gemma 3 270M Q4_K_M) and the Python reference packages, then runs every test.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p gemma-gguf   # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
GEMMA_TEST_MODEL="$(scripts/fetch-model.sh)"
export GEMMA_TEST_MODEL
# The PyPI `gguf` package reads our files in the interop test (pinned in scripts/requirements.txt).
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt

cargo test --workspace "$@"
