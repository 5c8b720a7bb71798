#!/usr/bin/env python3
"""Token-id goldens from Hugging Face `tokenizers` for the Gemma 4 ("gemma4", BPE) tokenizer test.

What it is for: `tests/tests/tokenizer_gemma4.rs` builds a vocabulary-only GGUF with
`tokenizer.ggml.model = "gemma4"` from a real BPE vocabulary and compares our tokenizer with
libllama (live) and with the ids this script records. No Gemma 4 checkpoint is at hand, so
the vocabulary is Gemma 3's Hugging Face `tokenizer.json` (a BPE: vocab, merges, the
` ` -> `▁` normalizer, byte fallback), made by scripts/make_hf_checkpoint.py, with Gemma 4's
special tokens put at the ids Gemma 4 gives them, in place of Gemma 3's tokens there. The
test applies the same edit (`gemma4_edit` there; keep the two in step):

- ids 46-52, 98, 100, 101, 105, 106 become `<|tool>`, `<tool|>`, `<|tool_call>`,
  `<tool_call|>`, `<|tool_response>`, `<tool_response|>`, `<|"|>`, `<|think|>`, `<|channel>`,
  `<channel|>`, `<|turn>`, `<turn|>` (vocabulary entry and added token both);
- the added token is `special` unless llama.cpp's converter types it USER_DEFINED
  (`conversion/gemma.py`, `Gemma4Model.set_vocab`: the channel, tool-call, tool-response
  and string-delimiter tokens, "always render these tokens");
- merges that name a replaced or new text, as a side or as their result, are dropped.

Texts, in this order (the test assembles the same list): every line of
tests/data/tokenizer/corpus.jsonl (`corpus:N`) and corpus_gemma4.jsonl (`gemma4:N`), each
tests/data/prompts/*.txt but README.md (`prompts/NAME`), tests/data/text/alice.txt.

Output: tests/data/tokenizer/goldens_gemma4_hf.jsonl, one object per text:

    {"name": "corpus:0", "ids": [...], "ids_parse_special": [...] or null}

- `ids`: `encode(text, add_special_tokens=False)` with `encode_special_tokens = True`:
  special added tokens are not matched in the text (llama.cpp's `parse_special = false`),
  the non-special ones (USER_DEFINED in llama.cpp) still are. With `add_special_tokens=True`
  the ids are `<bos>` (2) and these, always (checked here), so they are not written;
- `ids_parse_special`: `encode(text, add_special_tokens=False)` with every added token
  matched (llama.cpp's `parse_special = true`); null when equal to `ids` (most texts).

How to run (from the workspace root, after scripts/make_hf_checkpoint.py; ~20 s):

    .venv/bin/python scripts/make_tokenizer_gemma4_goldens.py [--tokenizer models/gemma-3-270m-hf/tokenizer.json]
"""

import argparse
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
OUTPUT = os.path.join(DATA, "tokenizer", "goldens_gemma4_hf.jsonl")
DEFAULT_TOKENIZER = os.path.join(ROOT, "models", "gemma-3-270m-hf", "tokenizer.json")

# (id, text, special) of Gemma 4's special tokens.
GEMMA4_SPECIALS = [
    (46, "<|tool>", True),
    (47, "<tool|>", True),
    (48, "<|tool_call>", False),
    (49, "<tool_call|>", False),
    (50, "<|tool_response>", False),
    (51, "<tool_response|>", False),
    (52, '<|"|>', False),
    (98, "<|think|>", True),
    (100, "<|channel>", False),
    (101, "<channel|>", False),
    (105, "<|turn>", True),
    (106, "<turn|>", True),
]


def texts():
    out = []
    for corpus, tag in (("corpus.jsonl", "corpus"), ("corpus_gemma4.jsonl", "gemma4")):
        with open(os.path.join(DATA, "tokenizer", corpus), encoding="utf-8") as f:
            out += [(f"{tag}:{i}", json.loads(line)) for i, line in enumerate(f)]
    for path in sorted(glob.glob(os.path.join(DATA, "prompts", "*.txt"))):
        with open(path, encoding="utf-8", newline="") as f:
            out.append((f"prompts/{os.path.basename(path)}", f.read()))
    with open(os.path.join(DATA, "text", "alice.txt"), encoding="utf-8", newline="") as f:
        out.append(("text/alice.txt", f.read()))
    return out


def gemma4_edit(tj):
    vocab = tj["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    touched = set()
    for tid, text, special in GEMMA4_SPECIALS:
        old = by_id[tid]
        touched.update([old, text])
        del vocab[old]
        vocab[text] = tid
        for added in tj["added_tokens"]:
            if added["id"] == tid:
                added["content"] = text
                added["special"] = special
    merges = tj["model"]["merges"]
    pair = (lambda m: m) if merges and isinstance(merges[0], list) else (lambda m: m.split(" ", 1))
    kept = []
    for m in merges:
        a, b = pair(m)
        if a not in touched and b not in touched and a + b not in touched:
            kept.append(m)
    tj["model"]["merges"] = kept
    return len(merges) - len(kept)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    ap.add_argument("--output", default=OUTPUT)
    args = ap.parse_args()

    import tokenizers

    with open(args.tokenizer, encoding="utf-8") as f:
        tj = json.load(f)
    dropped = gemma4_edit(tj)
    tok = tokenizers.Tokenizer.from_str(json.dumps(tj))

    n_tokens = 0
    items = texts()
    with open(args.output, "w", encoding="utf-8") as out:
        for name, text in items:
            tok.encode_special_tokens = True
            ids = tok.encode(text, add_special_tokens=False).ids
            ids_special = tok.encode(text, add_special_tokens=True).ids
            tok.encode_special_tokens = False
            ids_parse = tok.encode(text, add_special_tokens=False).ids
            n_tokens += len(ids)
            if ids_special != [2] + ids:
                sys.exit(f"error: {name}: add_special_tokens=True is not <bos> + the ids")
            rec = {"name": name, "ids": ids, "ids_parse_special": None if ids_parse == ids else ids_parse}
            out.write(json.dumps(rec, separators=(",", ":")) + "\n")
    print(
        f"{len(items)} texts, {n_tokens} tokens, {dropped} merges dropped -> "
        f"{os.path.relpath(args.output, ROOT)} (tokenizers {tokenizers.__version__})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
