#!/usr/bin/env python3
"""Token-id goldens from Hugging Face transformers for the tokenizer test.

What it is for: `tests/tests/tokenizer.rs` compares our tokenizer, on every line of
`tests/data/tokenizer/corpus.jsonl`, with libllama (live) and with the ids this script
records from transformers, which builds its tokenizer from the same GGUF file
(`AutoTokenizer.from_pretrained(dir, gguf_file=...)`) with code independent of llama.cpp's.
Rerun it when the corpus or the test model changes, and commit the output.

How to run (from the workspace root; the model comes from scripts/fetch-model.sh):

    .venv/bin/pip install transformers==5.24.0 tokenizers==0.23.3 gguf==0.19.0 torch==2.15.0
    .venv/bin/python scripts/make_tokenizer_goldens.py [--model models/gemma-3-270m-q4_k_m.gguf]

transformers' GGUF reader imports torch, although tokenizing does not use it (any torch
build works, a CPU one included).

Output: `tests/data/tokenizer/goldens_transformers.jsonl`, one JSON object per corpus line,
in corpus order:

    {"line": 0, "ids": [...], "ids_special": [...], "ids_parse_special": [...]}

- `ids`: `encode(text, add_special_tokens=False, split_special_tokens=True)`.
- `ids_special`: the same with `add_special_tokens=True` (BOS as the tokenizer adds it).
- `ids_parse_special`: `encode(text, add_special_tokens=False)` with transformers' default,
  which parses control tokens (`<start_of_turn>`, `<bos>`...) written in the text.

Why `split_special_tokens=True`: a Hugging Face tokenizer matches its special tokens
anywhere in the text by default, so user text containing "<end_of_turn>" would become the
control token. Our `encode` (like llama.cpp's `llama_tokenize(parse_special=false)`) never
does that, and `split_special_tokens=True` is transformers' way of asking the same: special
tokens are then tokenized as the characters they are made of, while user-defined added
tokens (runs of spaces, tabs and newlines, HTML tags) are still matched whole, as in
llama.cpp. The default behaviour is recorded too (`ids_parse_special`) and compared with our
`encode_with_special` (llama.cpp's `parse_special=true`).

The references disagree with each other on three kinds of text in the corpus: runs of over 31
spaces, a literal U+2581 (SentencePiece's space mark) and `</s>` (user-defined in the file,
retyped as control by llama.cpp). The test explains each case and follows libllama there,
since we run llama.cpp's files.
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "data", "tokenizer", "corpus.jsonl")
OUTPUT = os.path.join(ROOT, "tests", "data", "tokenizer", "goldens_transformers.jsonl")
DEFAULT_MODEL = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("GEMMA_TEST_MODEL", DEFAULT_MODEL))
    parser.add_argument("--corpus", default=CORPUS)
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args()

    import transformers
    from transformers import AutoTokenizer

    model = os.path.abspath(args.model)
    tok = AutoTokenizer.from_pretrained(os.path.dirname(model), gguf_file=os.path.basename(model))

    with open(args.corpus, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]

    n_tokens = 0
    with open(args.output, "w", encoding="utf-8") as out:
        for i, text in enumerate(lines):
            record = {
                "line": i,
                "ids": tok.encode(text, add_special_tokens=False, split_special_tokens=True),
                "ids_special": tok.encode(text, add_special_tokens=True, split_special_tokens=True),
                "ids_parse_special": tok.encode(text, add_special_tokens=False),
            }
            n_tokens += len(record["ids"])
            out.write(json.dumps(record) + "\n")
    print(
        f"{len(lines)} lines, {n_tokens} tokens -> {os.path.relpath(args.output, ROOT)} "
        f"(transformers {transformers.__version__}, {type(tok).__name__})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
