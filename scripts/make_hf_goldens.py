#!/usr/bin/env python3
"""Greedy continuations from Hugging Face transformers on the real 270M checkpoint in
Hugging Face form, for the converter's end-to-end test (`tests/tests/convert_real.rs`).

Input: the directory scripts/make_hf_checkpoint.py writes (models/gemma-3-270m-hf).
transformers loads it as any downloaded checkpoint (`AutoModelForCausalLM.from_pretrained`,
`AutoTokenizer.from_pretrained`), runs it in float32 with eager attention, and records per
prompt the token ids its tokenizer gives and `N_NEW` greedy tokens, with the gap between
the best and second-best logit at each step (a step whose gap is below ggml's rounding
noise is a near-tie that a correct runtime may break the other way).

It also checks the checkpoint itself against transformers' own GGUF loader: the weights
transformers makes from the GGUF (`gguf_file=`), rounded to bfloat16, must equal the ones in
model.safetensors (the max difference is recorded), and the tokenizer loaded from the
directory must give the same ids as the one transformers builds from the GGUF.

Output: tests/data/hf270m/goldens.json, with the sha256 of every checkpoint file, so the test
knows it converts the checkpoint these goldens came from.

Usage (needs PyTorch: `scripts/venv.sh -r scripts/requirements-reference.txt`; ~2 minutes):

    .venv/bin/python scripts/make_hf_checkpoint.py
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/make_hf_goldens.py [--hf DIR] [--model GGUF]
"""

import argparse
import hashlib
import json
import os
import platform

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_HF = os.path.join(ROOT, "models", "gemma-3-270m-hf")
DEFAULT_MODEL = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")
OUT = os.path.join(ROOT, "tests", "data", "hf270m", "goldens.json")
PROMPTS = ["prose", "code", "multilingual", "table"]
N_NEW = 24
FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hf", default=DEFAULT_HF)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.hf)
    model = AutoModelForCausalLM.from_pretrained(args.hf, dtype=torch.float32, attn_implementation="eager")
    model.eval()

    # The checkpoint against transformers' own GGUF loading.
    d, f = os.path.split(os.path.abspath(args.model))
    ref = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    ref_sd = {k: v.to(torch.bfloat16).float() for k, v in ref.state_dict().items()}
    max_weight_diff = 0.0
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            continue
        max_weight_diff = max(max_weight_diff, (v - ref_sd[k]).abs().max().item())
    ref_tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    del ref, ref_sd

    prompts = []
    for name in PROMPTS:
        with open(os.path.join(ROOT, "tests", "data", "prompts", f"{name}.txt"), encoding="utf-8") as fh:
            text = fh.read()
        ids = tok(text)["input_ids"]
        if ids != ref_tok(text)["input_ids"]:
            raise SystemExit(f"tokenizer from the directory disagrees with the GGUF's on {name}")
        seq = list(ids)
        gaps = []
        with torch.no_grad():
            for _ in range(N_NEW):
                logits = model(torch.tensor([seq])).logits[0, -1]
                top = torch.topk(logits, 2)
                gaps.append(round((top.values[0] - top.values[1]).item(), 6))
                seq.append(int(top.indices[0]))
        prompts.append({"name": name, "prompt_ids": ids, "greedy": seq[len(ids):], "top2_gap": gaps})
        print(name, len(ids), tok.decode(seq[len(ids):]).replace("\n", "\\n")[:80])

    out = {
        "format": "gemma-gguf-hf-goldens/1",
        "made_by": "scripts/make_hf_goldens.py",
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "checkpoint": {name: sha256(os.path.join(args.hf, name)) for name in FILES},
        "source_gguf_sha256": sha256(args.model),
        "max_abs_weight_diff_vs_transformers_gguf_loader": max_weight_diff,
        "settings": {"dtype": "float32", "attn_implementation": "eager", "n_new": N_NEW},
        "prompts": prompts,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    print(OUT, "max weight diff", max_weight_diff)


if __name__ == "__main__":
    main()
