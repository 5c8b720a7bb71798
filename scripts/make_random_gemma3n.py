#!/usr/bin/env python3
"""A Gemma 3n E2B-shaped checkpoint in Hugging Face form with random weights, for speed and
memory measurements at real dimensions (quality numbers need real weights, which are not
reachable here).

Shape (transformers' `Gemma3nTextConfig` and the published E2B config, shared/GEMMA-4-3N.md
§5): 30 layers (4 sliding : 1 full), hidden 2048, 8 heads over 2 KV heads of 256, FFN 8192,
the last 10 layers sharing KV, per-layer embeddings of 256 per layer, 4 AltUp streams,
LAuReL rank 64, sparsity 0.95 on the first 10 layers, window 512, final soft-cap 30. The
vocabulary is the test model's tokenizer (Gemma 3's 262 144 pieces; the real 3n pads to
262 400): the converter trims both embedding tables to it.

The tensor names and shapes are those of transformers' own `Gemma3nForCausalLM` for that
config (built on PyTorch's meta device, so no memory is spent); the bytes are written tensor
by tensor (scripts/make_random_checkpoint.py's writer): matrices normal(0, 0.02), vectors 1.

    .venv/bin/python scripts/make_hf_checkpoint.py                  # once, tokenizer
    .venv/bin/python scripts/make_random_gemma3n.py [--out DIR]     # about 9 GB
    target/release/gemma convert models/gemma-3n-e2b-random-hf -o models/gemma-3n-e2b-random-q4_k_m.gguf

Needs PyTorch and transformers: scripts/venv.sh -r scripts/requirements-reference.txt.
"""

import argparse
import os

import torch
from transformers import Gemma3nForCausalLM, Gemma3nTextConfig

from make_random_checkpoint import ROOT, write_config_and_tokenizer, write_safetensors


def config():
    n = 30
    return Gemma3nTextConfig(
        vocab_size=262144,
        vocab_size_per_layer_input=262144,
        hidden_size=2048,
        hidden_size_per_layer_input=256,
        intermediate_size=[8192] * n,
        num_hidden_layers=n,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=256,
        layer_types=["full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(n)],
        sliding_window=512,
        num_kv_shared_layers=10,
        altup_num_inputs=4,
        laurel_rank=64,
        activation_sparsity_pattern=[0.95] * 10 + [0.0] * (n - 10),
        final_logit_softcapping=30.0,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out")
    args = ap.parse_args()
    out = args.out or os.path.join(ROOT, "models", "gemma-3n-e2b-random-hf")
    cfg = config()
    with torch.device("meta"):
        model = Gemma3nForCausalLM(cfg)
    tensors = [(name, tuple(t.shape)) for name, t in model.state_dict().items() if name != "lm_head.weight"]
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "model.safetensors"), tensors, zero_norms=False)
    d = cfg.to_dict()
    d["architectures"] = ["Gemma3nForCausalLM"]
    write_config_and_tokenizer(out, d)
    n = sum(int(torch.Size(s).numel()) for _, s in tensors)
    print(f"{out}: {len(tensors)} tensors, {n / 1e9:.2f} G parameters")


if __name__ == "__main__":
    main()
