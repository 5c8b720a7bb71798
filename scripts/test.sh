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
# The project venv (.venv/, scripts/venv.sh) with the packages the tests use, pinned in
# scripts/requirements.txt (no PyTorch): `gguf` reads our files in the interop test;
# transformers' tokenizer converter and `gguf` make the Hugging Face form of the test model;
# `openai` and `jsonschema` talk to and judge the server. Tests run it as $GEMMA_PYTHON.
GEMMA_PYTHON="$(scripts/venv.sh -r scripts/requirements.txt)"
export GEMMA_PYTHON
# The real model as a Hugging Face checkpoint, for the converter's tests (~1 minute; kept in
# models/ and checked against the sha256s in tests/data/hf270m/goldens.json by the tests).
HF_DIR="$(dirname "$GEMMA_TEST_MODEL")/gemma-3-270m-hf"
if [ ! -f "$HF_DIR/model.safetensors" ] || [ ! -f "$HF_DIR/chat_template.jinja" ]; then
    "$GEMMA_PYTHON" scripts/make_hf_checkpoint.py --model "$GEMMA_TEST_MODEL" --out "$HF_DIR"
fi
export GEMMA_TEST_HF="$HF_DIR"

# In the release profile: the tests run the code users run (ggml and our crates as
# `cargo build --release` builds them), and they reuse the dependencies that the README's
# first command (scripts/demo.sh) compiled, instead of compiling every one again for the dev
# profile. Our own crates keep their overflow checks in release (Cargo.toml), as in dev.
cargo test --workspace --release "$@"
