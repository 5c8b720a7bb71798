#!/usr/bin/env python3
"""A Gemma 3 1B-shaped Hugging Face checkpoint with random weights, for speed and memory
measurements (`gemma bench`, tests/examples/side_by_side.rs) where the real 1B is not at hand.

Shape of google/gemma-3-1b-pt's config.json: hidden 1152, 26 layers, 4 heads of 256, 1 KV
head, intermediate 6912, vocabulary 262144, sliding window 512 with every sixth layer global,
32768 training context, rope bases 1e6 (global) and 1e4 (local). Weights are seeded normal noise
(std 0.02, transformers' `initializer_range`; norms 0.1 · N(0, 1), stored as Hugging Face
stores them, without the +1), bfloat16. The tokenizer files come from the 270M checkpoint
that scripts/make_hf_checkpoint.py makes (same Gemma 3 vocabulary).

Usage (from the workspace root; ~1 min, ~5 GB of memory, 2 GB on disk; needs torch):

    python3 scripts/make_random_1b.py [--tokenizer models/gemma-3-270m-hf] [--out models/gemma-3-1b-random-hf]
    gemma convert models/gemma-3-1b-random-hf -o models/gemma-3-1b-random-q4_k_m.gguf --type q4_k_m
"""

import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "models", "gemma-3-270m-hf"))
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "gemma-3-1b-random-hf"))
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.tokenizer, "config.json")) as f:
        cfg = json.load(f)
    n_layer, e, ff, hd, nh, nkv, nv = 26, 1152, 6912, 256, 4, 1, 262144
    cfg.update(hidden_size=e, num_hidden_layers=n_layer, intermediate_size=ff, head_dim=hd,
               num_attention_heads=nh, num_key_value_heads=nkv, vocab_size=nv, sliding_window=512,
               query_pre_attn_scalar=hd, max_position_embeddings=32768,
               layer_types=["full_attention" if i % 6 == 5 else "sliding_attention" for i in range(n_layer)])
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for name in os.listdir(a.tokenizer):
        if name.startswith("tokenizer") or name in ("chat_template.jinja", "generation_config.json"):
            shutil.copy(os.path.join(a.tokenizer, name), a.out)
    g = torch.Generator().manual_seed(a.seed)

    def mat(rows, cols):
        return (torch.randn(rows, cols, generator=g) * 0.02).to(torch.bfloat16)

    def norm(n):
        return (torch.randn(n, generator=g) * 0.1).to(torch.bfloat16)

    t = {"model.embed_tokens.weight": mat(nv, e), "model.norm.weight": norm(e)}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = mat(nh * hd, e)
        t[p + "self_attn.k_proj.weight"] = mat(nkv * hd, e)
        t[p + "self_attn.v_proj.weight"] = mat(nkv * hd, e)
        t[p + "self_attn.o_proj.weight"] = mat(e, nh * hd)
        t[p + "self_attn.q_norm.weight"] = norm(hd)
        t[p + "self_attn.k_norm.weight"] = norm(hd)
        t[p + "mlp.gate_proj.weight"] = mat(ff, e)
        t[p + "mlp.up_proj.weight"] = mat(ff, e)
        t[p + "mlp.down_proj.weight"] = mat(e, ff)
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            t[p + n + ".weight"] = norm(e)
    save_file(t, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    print(a.out, sum(v.numel() for v in t.values()), "parameters")


if __name__ == "__main__":
    main()
