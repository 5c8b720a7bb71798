#!/usr/bin/env python3
"""A Gemma 3 checkpoint in Hugging Face form with random weights and real shapes, for speed
and memory measurements of the converter (quality numbers need real weights).

Shapes (config.json of google/gemma-3-1b-pt): hidden 1152, intermediate 6912, 26 layers,
4 heads, 1 kv-head, head_dim 256, vocabulary 262 144, window 512, 5 local : 1 global layers.
Weights are bfloat16, normal(0, 0.02) (norms 0); written tensor by tensor, so memory stays
at one tensor. The tokenizer files are copied from the Hugging Face form of the test model
(same vocabulary), made by scripts/make_hf_checkpoint.py.

    .venv/bin/python scripts/make_hf_checkpoint.py                    # once, for the tokenizer
    .venv/bin/python scripts/make_random_checkpoint.py [--out DIR] [--layers N]

Default OUT: models/gemma-3-1b-random-hf (2.0 GB).
"""

import argparse
import json
import os
import shutil
import struct

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_DIR = os.path.join(ROOT, "models", "gemma-3-270m-hf")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "gemma-3-1b-random-hf"))
    ap.add_argument("--layers", type=int, default=26)
    args = ap.parse_args()
    n_embd, n_ff, n_layer, n_head, n_kv, hd, n_vocab = 1152, 6912, args.layers, 4, 1, 256, 262144
    cfg = {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_size": n_embd,
        "intermediate_size": n_ff,
        "num_hidden_layers": n_layer,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": hd,
        "vocab_size": n_vocab,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 32768,
        "sliding_window": 512,
        "query_pre_attn_scalar": hd,
        "layer_types": ["sliding_attention" if i % 6 < 5 else "full_attention" for i in range(n_layer)],
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
        "hidden_activation": "gelu_pytorch_tanh",
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
        "tie_word_embeddings": True,
    }
    tensors = [("model.embed_tokens.weight", (n_vocab, n_embd)), ("model.norm.weight", (n_embd,))]
    for il in range(n_layer):
        p = f"model.layers.{il}."
        tensors += [
            (p + "input_layernorm.weight", (n_embd,)),
            (p + "self_attn.q_proj.weight", (n_head * hd, n_embd)),
            (p + "self_attn.k_proj.weight", (n_kv * hd, n_embd)),
            (p + "self_attn.v_proj.weight", (n_kv * hd, n_embd)),
            (p + "self_attn.o_proj.weight", (n_embd, n_head * hd)),
            (p + "self_attn.q_norm.weight", (hd,)),
            (p + "self_attn.k_norm.weight", (hd,)),
            (p + "post_attention_layernorm.weight", (n_embd,)),
            (p + "pre_feedforward_layernorm.weight", (n_embd,)),
            (p + "mlp.gate_proj.weight", (n_ff, n_embd)),
            (p + "mlp.up_proj.weight", (n_ff, n_embd)),
            (p + "mlp.down_proj.weight", (n_embd, n_ff)),
            (p + "post_feedforward_layernorm.weight", (n_embd,)),
        ]
    os.makedirs(args.out, exist_ok=True)
    write_safetensors(os.path.join(args.out, "model.safetensors"), tensors, zero_norms=True)
    write_config_and_tokenizer(args.out, cfg)
    print(args.out)


def write_config_and_tokenizer(out, cfg):
    """config.json, and the tokenizer files of the test model's Hugging Face form."""
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(TOKENIZER_DIR, f), os.path.join(out, f))


def write_safetensors(path, tensors, zero_norms):
    """Writes `tensors` ((name, shape) pairs) as one bfloat16 safetensors file, tensor by
    tensor, so memory stays at 64 MiB: matrices normal(0, 0.02), vectors 0 (Gemma 1-3 norms,
    stored as w in 1 + w) or 1 (Gemma 4 norms and scales, stored as they multiply)."""
    tensors = sorted(tensors)
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(0)
    one_bf16 = 0x3F80
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for name, shape in tensors:
            if len(shape) == 1:
                fh.write(np.full(shape, 0 if zero_norms else one_bf16, dtype="<u2").tobytes())
                continue
            rows, cols = int(np.prod(shape[:-1])), shape[-1]
            rows_per = max(1, (64 << 20) // (cols * 4))
            for r in range(0, rows, rows_per):
                x = rng.standard_normal((min(rows_per, rows - r), cols), dtype=np.float32) * np.float32(0.02)
                fh.write((x.view(np.uint32) >> 16).astype("<u2").tobytes())


if __name__ == "__main__":
    main()
