#!/usr/bin/env python3
"""Tiny random Gemma 4 checkpoints, in Hugging Face form, with transformers' logits.

`tests/tests/convert_gemma4.rs` converts each checkpoint to every output type, loads the
result in libllama (and, once it has Gemma 4, our runtime) and compares the logits with the
ones recorded here. As scripts/make_tiny_checkpoints.py does for Gemma 1-3, everything comes
from transformers 5: `Gemma4ForCausalLM(Gemma4TextConfig(...))` with seeded random weights,
saved by `save_pretrained`, and the goldens are its float32 eager logits for one token
sequence longer than the sliding window.

One checkpoint per shape family of the released models (GEMMA-4-3N.md §5), at small dims:

- gemma4-e2b: like E2B/E4B. Per-layer embeddings (PLE) on, 4 layers [S, F, S, F] of which the
  last 2 reuse the KV of layers 0 (sliding) and 1 (full), as llama.cpp assumes (layer
  n_kv_start-1 full, n_kv_start-2 sliding); sliding layers with head_dim 32, full ones with
  global_head_dim 64 and proportional RoPE (partial_rotary_factor 0.25, own base); the
  double-wide MLP on shared layers (per-layer feed_forward_length); final soft-cap.
- gemma4-moe: like 26B-A4B. MoE block on every layer (4 experts, top 2, the dense MLP kept
  beside it), K=V on full layers (`attention_k_eq_v`, no v_proj) with
  `num_global_key_value_heads` different from the sliding layers' kv heads.
- gemma4-dense: like 31B. K=V with global kv heads, no PLE, no MoE; hidden 256 so that the
  matrices whose rows are the hidden size take the K-quants without fallback.

Sizes are kept small (each fixture under about 1 MB): the vocabulary is the real Gemma
tokenizer cut to 512 ids (scripts/make_tiny_checkpoints.py's `cut_tokenizer`; a few unused
control tokens renamed to Gemma 4's turn, thinking and tool tokens), and the PLE table has
rows of 4 layers x 64 = 256 values, so the K-quant rules for it apply as on the real models.
Norm weights are drawn around 1 (Gemma 4's RMSNorm multiplies by w, no +1; q/k norms around
0.35, see `randomize`) and the layer scalars are not 1, so a converter that shifted norms or
dropped `layer_scalar` would fail; router weights are wide so that top-k choices are not
near-ties.

Usage (needs the venv with scripts/requirements-reference.txt; ~20 s):

    .venv/bin/python scripts/make_tiny_gemma4.py     # writes tests/data/tiny/gemma4-*/

The tokenizer comes from models/gemma-3-270m-hf/tokenizer.json (scripts/make_hf_checkpoint.py)
when it exists, else from the already cut tests/data/tiny/gemma3/tokenizer.json (the same
pieces; cutting is idempotent). Output per model, tests/data/tiny/<name>/: config.json,
generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json, and
golden.json (ids, texts with their ids, the shape of logits.f32, versions), logits.f32
(float32 little-endian, [positions][vocab]).
"""

import json
import os
import struct
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_tiny_checkpoints as tiny  # noqa: E402  (cut_tokenizer, TEXT)

OUT = os.path.join(ROOT, "tests", "data", "tiny")
N_VOCAB = 512
N_POSITIONS = 40  # past the sliding window of 8
# Gemma 4's turn, thinking and tool tokens, given the ids of unused Gemma 3 control tokens.
GEMMA4_TOKENS = {
    46: "<|tool>",
    47: "<tool|>",
    48: "<|tool_call>",
    49: "<tool_call|>",
    50: "<|tool_response>",
    51: "<tool_response|>",
    52: '<|"|>',
    98: "<|think|>",
    100: "<|channel>",
    101: "<channel|>",
    105: "<|turn>",
    106: "<turn|>",
}
TOKENIZER_TEXTS = [
    "Hello world",
    "  two  spaces\nand a newline",
    "<|turn>user\nhi<turn|>",
    '<|channel>thought<channel|><|tool_call>call:f{a:<|"|>x<|"|>}<tool_call|>',
]


def tokenizer_json():
    real = tiny.REAL_TOKENIZER
    src = real if os.path.isfile(real) else os.path.join(OUT, "gemma3", "tokenizer.json")
    tiny.N_VOCAB = N_VOCAB
    t = tiny.cut_tokenizer(src)
    vocab = t["model"]["vocab"]
    by_id = {i: s for s, i in vocab.items()}
    for i, new in GEMMA4_TOKENS.items():
        old = by_id[i]
        del vocab[old]
        vocab[new] = i
        for a in t["added_tokens"]:
            if a["id"] == i:
                assert a["content"] == old
                a["content"] = new
                a["special"] = True
    return t


def common(cfg):
    cfg.update(
        vocab_size=N_VOCAB,
        vocab_size_per_layer_input=N_VOCAB,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        hidden_activation="gelu_pytorch_tanh",
        sliding_window=8,
        rope_parameters={
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
    )
    return cfg


def configs():
    from transformers import Gemma4TextConfig

    e2b = Gemma4TextConfig(
        **common(
            dict(
                hidden_size=64,
                intermediate_size=32,
                num_hidden_layers=4,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=32,
                global_head_dim=64,
                layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                num_kv_shared_layers=2,
                use_double_wide_mlp=True,
                hidden_size_per_layer_input=64,
                final_logit_softcapping=8.0,
            )
        )
    )
    moe = Gemma4TextConfig(
        **common(
            dict(
                hidden_size=128,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=32,
                global_head_dim=64,
                layer_types=["sliding_attention", "full_attention"],
                hidden_size_per_layer_input=0,
                enable_moe_block=True,
                num_experts=4,
                top_k_experts=2,
                moe_intermediate_size=32,
                attention_k_eq_v=True,
                num_global_key_value_heads=1,
                final_logit_softcapping=30.0,
            )
        )
    )
    dense = Gemma4TextConfig(
        **common(
            dict(
                hidden_size=256,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
                head_dim=32,
                global_head_dim=64,
                layer_types=["sliding_attention", "full_attention"],
                hidden_size_per_layer_input=0,
                attention_k_eq_v=True,
                num_global_key_value_heads=1,
                final_logit_softcapping=None,
            )
        )
    )
    return [("gemma4-e2b", e2b, torch.bfloat16), ("gemma4-moe", moe, torch.bfloat16), ("gemma4-dense", dense, torch.float16)]


def randomize(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                # Attention is unscaled (scaling 1.0) after q/k norms: with weights near 1 the
                # scores of random heads have a spread of ~sqrt(head_dim) and softmax is
                # nearly one-hot, so rounding anywhere flips it. ~0.35 each acts like the
                # 1/sqrt(head_dim) the trained norms learn.
                p.normal_(0.35, 0.03)
            elif "norm" in name or name.endswith("router.scale"):
                p.normal_(1.0, 0.1)  # Gemma 4's RMSNorm multiplies by w: keep it near 1
            elif name.endswith("router.proj.weight"):
                # Router logits have the spread of these weights: near-ties between the
                # k-th and (k+1)-th expert would let any rounding switch experts.
                p.normal_(0.0, 2.0)
            elif name.endswith("per_expert_scale"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.06)
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.uniform_(0.5, 1.5)


def main():
    import transformers
    from transformers import Gemma4ForCausalLM

    torch.manual_seed(1234)
    tok_json = tokenizer_json()
    for name, config, dtype in configs():
        out = os.path.join(OUT, name)
        tok = tiny.write_tokenizer(out, tok_json)

        config._attn_implementation = "eager"
        model = Gemma4ForCausalLM(config)
        randomize(model)
        model = model.to(dtype)
        model.save_pretrained(out, safe_serialization=True)

        ids = ([2] + tok(tiny.TEXT, add_special_tokens=False)["input_ids"])[:N_POSITIONS]
        assert len(ids) == N_POSITIONS and len(ids) > config.sliding_window
        # The goldens come from the saved checkpoint, reloaded in float32: `model.to(dtype)`
        # also rounds the non-persistent buffers (RoPE inverse frequencies, embedding
        # scales), which a converter recomputes exactly.
        model32 = Gemma4ForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            logits = model32(torch.tensor([ids])).logits[0].float()
        with open(os.path.join(out, "logits.f32"), "wb") as fh:
            fh.write(struct.pack(f"<{logits.numel()}f", *logits.flatten().tolist()))
        golden = {
            "format": "gemma-gguf-tiny-golden/1",
            "made_by": "scripts/make_tiny_gemma4.py",
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
            "architecture": "Gemma4ForCausalLM",
            "dtype": str(dtype).replace("torch.", ""),
            "ids": ids,
            "logits_shape": [len(ids), N_VOCAB],
            "tokenizer": [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in TOKENIZER_TEXTS],
        }
        with open(os.path.join(out, "golden.json"), "w") as fh:
            json.dump(golden, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        print(name, len(ids), "positions", size, "bytes")


if __name__ == "__main__":
    main()
