#!/usr/bin/env python3
"""Gemma 4 E2B- and E4B-shaped checkpoints in Hugging Face form with random weights, for
speed and memory measurements at real dimensions (quality numbers need real weights, which
are not reachable here).

Shapes (the published GGUF metadata of gemma-4-E2B / E4B, see shared/GEMMA-4-3N.md §5):
E2B: 35 layers (4 sliding : 1 full), hidden 1536, 8 heads over 1 KV head, head size 256
(sliding) / 512 (full), FFN 6144 (12 288 on the 20 shared-KV layers, `use_double_wide_mlp`);
E4B: 42 layers (5 : 1), hidden 2560, 8 heads over 2 KV heads, FFN 10 240, 18 shared layers.
Both: per-layer embeddings of 256 per layer, vocabulary 262 144, window 512, final soft-cap
30, proportional rope (a quarter of the full layers' pairs rotated, base 10^6).

The tensor names and shapes are those of transformers' own `Gemma4ForCausalLM` for that
config (built on PyTorch's meta device, so no memory is spent); the bytes are written tensor
by tensor (scripts/make_random_checkpoint.py's writer): matrices normal(0, 0.02), vectors 1.
The tokenizer files come from the Hugging Face form of the test model.

    .venv/bin/python scripts/make_hf_checkpoint.py                        # once, tokenizer
    .venv/bin/python scripts/make_random_gemma4.py --shape e2b [--out DIR] # 9.7 GB
    .venv/bin/python scripts/make_random_gemma4.py --shape e4b [--out DIR] # 15 GB

Needs PyTorch and transformers: scripts/venv.sh -r scripts/requirements-reference.txt.
"""

import argparse
import os

import torch
from transformers import Gemma4ForCausalLM, Gemma4TextConfig

from make_random_checkpoint import ROOT, write_config_and_tokenizer, write_safetensors

SHAPES = {
    "e2b": dict(layers=35, period=5, hidden=1536, kv_heads=1, ffn=6144, shared=20, double_wide=True),
    "e4b": dict(layers=42, period=6, hidden=2560, kv_heads=2, ffn=10240, shared=18, double_wide=False),
}


def config(shape):
    s = SHAPES[shape]
    types = ["full_attention" if (i + 1) % s["period"] == 0 else "sliding_attention" for i in range(s["layers"])]
    return Gemma4TextConfig(
        vocab_size=262144,
        vocab_size_per_layer_input=262144,
        hidden_size=s["hidden"],
        hidden_size_per_layer_input=256,
        intermediate_size=s["ffn"],
        num_hidden_layers=s["layers"],
        num_attention_heads=8,
        num_key_value_heads=s["kv_heads"],
        head_dim=256,
        global_head_dim=512,
        layer_types=types,
        sliding_window=512,
        num_kv_shared_layers=s["shared"],
        use_double_wide_mlp=s["double_wide"],
        final_logit_softcapping=30.0,
        max_position_embeddings=131072,
        tie_word_embeddings=True,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--out")
    args = ap.parse_args()
    out = args.out or os.path.join(ROOT, "models", f"gemma-4-{args.shape}-random-hf")
    cfg = config(args.shape)
    with torch.device("meta"):
        model = Gemma4ForCausalLM(cfg)
    tensors = [(name, tuple(t.shape)) for name, t in model.state_dict().items() if name != "lm_head.weight"]
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "model.safetensors"), tensors, zero_norms=False)
    d = cfg.to_dict()
    d["architectures"] = ["Gemma4ForCausalLM"]
    write_config_and_tokenizer(out, d)
    n = sum(int(torch.Size(s).numel()) for _, s in tensors)
    print(f"{out}: {len(tensors)} tensors, {n / 1e9:.2f} G parameters")


if __name__ == "__main__":
    main()
