#!/usr/bin/env python3
"""Tiny random Gemma 3n checkpoints, in Hugging Face form, with transformers' logits.

`tests/tests/convert_gemma3n.rs` converts each checkpoint to every output type, runs the
result in our runtime (and libllama, for the shape it runs) and compares the logits with the
ones recorded here. As scripts/make_tiny_gemma4.py does for Gemma 4, everything comes from
transformers 5: `Gemma3nForCausalLM(Gemma3nTextConfig(...))` with seeded random weights, saved
by `save_pretrained`; the goldens are its float32 eager logits for one token sequence longer
than the sliding window.

- gemma3n-e2b: the shape libllama runs (it hard-codes 4 AltUp streams, per-layer embeddings
  of 256, LAuReL rank 64, KV on layers < 20 and sparsity on layers < 10, src/models/gemma3n.cpp):
  22 layers (4 sliding : 1 full, and layer 21 full) of which the last two reuse the KV of
  layers 18 (sliding) and 19 (full); sparsity 0.95 on the first 10 layers; the per-layer
  table covers 256 of the 512 tokens (as 262 144 of 262 400 in the real models), so tokens
  256..511 take row 0 in transformers (and the table is 2.9 MB, not 5.8).
- gemma3n-small: transformers' own test shape (2 AltUp streams, 4 layers, PLE 16, LAuReL
  rank 8, sparsity on the first two layers, active stream 1): libllama cannot run it, our
  runtime reads these sizes from the file's keys.

Two sets of logits per checkpoint: `logits.f32`, transformers as it is, and
`logits_unbiased.f32`, with the Gaussian top-k's standard deviation taken with n − 1 as
llama.cpp's `gaussian_topk` does (transformers: `torch.std(unbiased=False)`). Their difference
is the one design difference between the references; the test prints both.

Usage (needs the venv with scripts/requirements-reference.txt; ~30 s):

    .venv/bin/python scripts/make_tiny_gemma3n.py     # writes tests/data/tiny/gemma3n-*/

The tokenizer is the one scripts/make_tiny_gemma4.py cuts from the real Gemma tokenizer
(512 ids), without the Gemma 4 renames. Output per model, tests/data/tiny/<name>/:
config.json, generation_config.json, model.safetensors, tokenizer.json,
tokenizer_config.json, golden.json, logits.f32, logits_unbiased.f32 (float32 little-endian,
[positions][vocab]).
"""

import json
import os
import struct
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_tiny_checkpoints as tiny  # noqa: E402  (cut_tokenizer, write_tokenizer, TEXT)

OUT = os.path.join(ROOT, "tests", "data", "tiny")
N_VOCAB = 512
N_POSITIONS = 40  # past the sliding window of 8
TOKENIZER_TEXTS = ["Hello world", "  two  spaces\nand a newline"]


def tokenizer_json():
    real = tiny.REAL_TOKENIZER
    src = real if os.path.isfile(real) else os.path.join(OUT, "gemma3", "tokenizer.json")
    tiny.N_VOCAB = N_VOCAB
    return tiny.cut_tokenizer(src)


def common(cfg):
    cfg.update(
        vocab_size=N_VOCAB,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        hidden_activation="gelu_pytorch_tanh",
        sliding_window=8,
        hidden_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        final_logit_softcapping=30.0,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
    )
    return cfg


def configs():
    from transformers import Gemma3nTextConfig

    n = 22
    e2b = Gemma3nTextConfig(
        **common(
            dict(
                intermediate_size=128,
                num_hidden_layers=n,
                layer_types=[
                    "full_attention" if (il % 5 == 4 or il == n - 1) else "sliding_attention" for il in range(n)
                ],
                num_kv_shared_layers=2,
                vocab_size_per_layer_input=256,
                hidden_size_per_layer_input=256,
                altup_num_inputs=4,
                altup_active_idx=0,
                laurel_rank=64,
                activation_sparsity_pattern=[0.95] * 10 + [0.0] * (n - 10),
            )
        )
    )
    small = Gemma3nTextConfig(
        **common(
            dict(
                intermediate_size=[128, 96, 128, 96],
                num_hidden_layers=4,
                layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                num_kv_shared_layers=2,
                vocab_size_per_layer_input=N_VOCAB,
                hidden_size_per_layer_input=16,
                altup_num_inputs=2,
                altup_active_idx=1,
                laurel_rank=8,
                activation_sparsity_pattern=[0.95, 0.8, 0.0, 0.0],
                final_logit_softcapping=8.0,
            )
        )
    )
    return [("gemma3n-e2b", e2b, torch.bfloat16), ("gemma3n-small", small, torch.bfloat16)]


def randomize(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                # Attention is unscaled (scaling 1.0) after q/k norms: ~0.35 acts like the
                # 1/sqrt(head_dim) trained norms learn (see make_tiny_gemma4.py).
                p.normal_(0.35, 0.03)
            elif name.endswith("post_feedforward_layernorm.weight"):
                # The feed-forward output well below the residual, as in trained models: with
                # weights near 1 the ten sparse layers amplify any rounding ~20x on this
                # small model (f32 logits off by 2% from an f16 KV cache alone).
                p.normal_(0.3, 0.03)
            elif "norm" in name or name.endswith("correct_output_scale"):
                p.normal_(1.0, 0.1)  # Gemma 3n's RMSNorm multiplies by w: keep it near 1
            elif name.endswith("modality_router.weight"):
                # The router sees norm(x)/hidden_size: wider weights so tanh is not ~0.
                p.normal_(0.0, 2.0)
            elif name.endswith(("prediction_coefs.weight", "correction_coefs.weight")):
                # Mixing weights per stream: with 4 streams over 22 layers, larger ones grow
                # the streams geometrically and make the logits chaotic (f32 against f64).
                p.normal_(0.0, 0.1)
            else:
                p.normal_(0.0, 0.06)


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def write_f32(path, t):
    with open(path, "wb") as fh:
        fh.write(struct.pack(f"<{t.numel()}f", *t.flatten().tolist()))


def main():
    import transformers
    from transformers import Gemma3nForCausalLM
    from transformers.models.gemma3n import modeling_gemma3n as m3n

    torch.manual_seed(1234)
    tok_json = tokenizer_json()
    for name, config, dtype in configs():
        out = os.path.join(OUT, name)
        tok = tiny.write_tokenizer(out, tok_json)

        config._attn_implementation = "eager"
        model = Gemma3nForCausalLM(config)
        randomize(model)
        model = model.to(dtype)
        model.save_pretrained(out, safe_serialization=True)

        ids = ([2] + tok(tiny.TEXT, add_special_tokens=False)["input_ids"])[:N_POSITIONS]
        assert len(ids) == N_POSITIONS and len(ids) > config.sliding_window
        # From the saved checkpoint reloaded in float32 (see make_tiny_gemma4.py).
        model32 = Gemma3nForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
        write_f32(os.path.join(out, "logits.f32"), logits_of(model32, ids))
        # llama.cpp's variant: the top-k's std with n - 1 (gemma3n.cpp `gaussian_topk`).
        population = m3n.Gemma3nTextMLP._gaussian_topk

        def unbiased(self, inputs):
            p = torch.tensor(self.activation_sparsity, dtype=torch.float32)
            mul = torch.distributions.normal.Normal(0, 1).icdf(p).type(inputs.dtype)
            mean = torch.mean(inputs, dim=-1, keepdim=True)
            std = torch.std(inputs, dim=-1, keepdim=True, unbiased=True)
            return torch.nn.functional.relu(inputs - (mean + std * mul))

        m3n.Gemma3nTextMLP._gaussian_topk = unbiased
        try:
            write_f32(os.path.join(out, "logits_unbiased.f32"), logits_of(model32, ids))
        finally:
            m3n.Gemma3nTextMLP._gaussian_topk = population
        mul = torch.distributions.normal.Normal(0, 1).icdf(torch.tensor(0.95, dtype=torch.float32)).item()
        golden = {
            "format": "gemma-gguf-tiny-golden/1",
            "made_by": "scripts/make_tiny_gemma3n.py",
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
            "architecture": "Gemma3nForCausalLM",
            "dtype": str(dtype).replace("torch.", ""),
            "ids": ids,
            "logits_shape": [len(ids), N_VOCAB],
            "sparsity_std_multiplier_0_95": mul,
            "tokenizer": [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in TOKENIZER_TEXTS],
        }
        with open(os.path.join(out, "golden.json"), "w") as fh:
            json.dump(golden, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        print(name, len(ids), "positions", size, "bytes; icdf(0.95) in float32 =", repr(mul))


if __name__ == "__main__":
    main()
