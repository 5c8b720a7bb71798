#!/usr/bin/env python3
"""Tiny random Gemma 1, 2 and 3 checkpoints, in Hugging Face form, with transformers' logits.

The converter's tests (`tests/tests/convert_tiny.rs`) convert each checkpoint to every
output type and compare our runtime's logits with the ones recorded here. Everything here
comes from transformers: the models are `GemmaForCausalLM`, `Gemma2ForCausalLM` and
`Gemma3ForCausalLM` with random weights (seeded), saved by `save_pretrained`, and the
goldens are their float32 logits (eager attention) for one token sequence.

The shapes exercise every path of the converter and the runtimes: several kv-heads and MQA,
all three safetensors float types (Gemma 1 float32, Gemma 2 float16, Gemma 3 bfloat16), norm
weights that are not zero (so the +1 at conversion matters), Gemma 2's softcaps set low
enough to be active with random weights, sliding windows shorter than the sequence, a
Gemma 3 layer pattern given by `layer_types` (one local, one global layer), linear rope
scaling on Gemma 3's global layers, and rows of 256 (Gemma 3) so the K-quants apply
without fallback, and of 64 (Gemma 1/2) so the fallbacks are exercised.

The tokenizer is the real Gemma tokenizer cut to 1024 ids (control tokens, the 256 byte
tokens and the first pieces its merges reach, see `cut_tokenizer`), taken from the Hugging Face form of the real model
(models/gemma-3-270m-hf/tokenizer.json, made by scripts/make_hf_checkpoint.py).

Usage (needs PyTorch: `scripts/venv.sh -r scripts/requirements-reference.txt`; ~20 s):

    .venv/bin/python scripts/make_hf_checkpoint.py      # once, for the tokenizer
    .venv/bin/python scripts/make_tiny_checkpoints.py   # writes tests/data/tiny/

Output per model, tests/data/tiny/<name>/: the checkpoint (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json, generation_config.json) and golden.json (token ids,
texts with their ids, and the shape of logits.f32), logits.f32 (float32 little-endian,
[positions][vocab]).
"""

import json
import os
import struct

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "tiny")
REAL_TOKENIZER = os.path.join(ROOT, "models", "gemma-3-270m-hf", "tokenizer.json")
N_VOCAB = 1024
N_POSITIONS = 64  # longer than both sliding windows; keeps the fixtures small
TEXT = (
    "The quick brown fox jumps over the lazy dog. In the beginning there was a small "
    "model, and it was tested against a reference, token by token, until the numbers agreed."
)
TOKENIZER_TEXTS = ["Hello world", "  two  spaces\nand a newline", "Grüße, 世界! 123"]


def cut_tokenizer(path):
    """The real tokenizer cut to N_VOCAB ids: the control, user-defined and byte tokens
    (ids < 494 in Gemma 3's vocabulary), then, in their original order, the first pieces
    that BPE can actually reach with what is kept (single characters, and pieces some kept
    merge of two kept pieces makes), renumbered; merges between kept pieces, in order.
    Keeping unreachable pieces would make a vocabulary no real tokenizer has (SentencePiece
    would form them, Hugging Face's BPE would not)."""
    with open(path, encoding="utf-8") as fh:
        t = json.load(fh)
    vocab = t["model"]["vocab"]
    merges = t["model"]["merges"]
    first_normal = min(i for s, i in vocab.items() if i > 237 and not (s.startswith("<0x") and len(s) == 6))
    made_by = {}
    for a, b in merges:
        made_by.setdefault(a + b, []).append((a, b))
    kept = {s: i for s, i in vocab.items() if i < first_normal}
    for s, i in sorted(vocab.items(), key=lambda x: x[1]):
        if len(kept) >= N_VOCAB:
            break
        if i < first_normal:
            continue
        if len(s) == 1 or any(a in kept and b in kept for a, b in made_by.get(s, [])):
            kept[s] = len(kept)
    t["model"]["vocab"] = kept
    t["model"]["merges"] = [m for m in merges if m[0] in kept and m[1] in kept and m[0] + m[1] in kept]
    t["added_tokens"] = [a for a in t["added_tokens"] if a["id"] < first_normal]
    return t


def common(cfg):
    cfg.update(
        vocab_size=N_VOCAB,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    )
    return cfg


def configs():
    from transformers import Gemma2Config, Gemma3TextConfig, GemmaConfig

    gemma = GemmaConfig(
        **common(
            dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=1,
                head_dim=32,
                hidden_activation="gelu_pytorch_tanh",
                rope_theta=10000.0,
            )
        )
    )
    gemma2 = Gemma2Config(
        **common(
            dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=32,
                hidden_activation="gelu_pytorch_tanh",
                query_pre_attn_scalar=32,
                sliding_window=16,
                attn_logit_softcapping=5.0,
                final_logit_softcapping=3.0,
                rope_theta=10000.0,
            )
        )
    )
    gemma3 = Gemma3TextConfig(
        **common(
            dict(
                hidden_size=256,
                intermediate_size=256,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=64,
                hidden_activation="gelu_pytorch_tanh",
                query_pre_attn_scalar=64,
                sliding_window=8,
                layer_types=["sliding_attention", "full_attention"],
                rope_parameters={
                    "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                },
            )
        )
    )
    return [
        ("gemma", gemma, "GemmaForCausalLM", torch.float32),
        ("gemma2", gemma2, "Gemma2ForCausalLM", torch.float16),
        ("gemma3", gemma3, "Gemma3ForCausalLM", torch.bfloat16),
    ]



def write_tokenizer(out, tok_json):
    """Writes tokenizer.json and a Gemma tokenizer_config.json into `out` (made if missing);
    returns the transformers tokenizer over them."""
    from transformers import PreTrainedTokenizerFast

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as fh:
        json.dump(tok_json, fh, ensure_ascii=False)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as fh:
        json.dump(
            {
                "add_bos_token": True,
                "add_eos_token": False,
                "bos_token": "<bos>",
                "eos_token": "<eos>",
                "unk_token": "<unk>",
                "pad_token": "<pad>",
                "tokenizer_class": "GemmaTokenizer",
            },
            fh,
            indent=2,
        )
    return PreTrainedTokenizerFast(tokenizer_file=os.path.join(out, "tokenizer.json"), bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")

def main():
    import transformers

    torch.manual_seed(1234)
    tok_json = cut_tokenizer(REAL_TOKENIZER)
    for name, config, cls_name, dtype in configs():
        out = os.path.join(OUT, name)
        tok = write_tokenizer(out, tok_json)

        config.attn_implementation = "eager"
        model = getattr(transformers, cls_name)(config)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "norm" in pname:
                    p.normal_(0.0, 0.1)  # Gemma's norms start at 0 (scale 1 + w): make them matter
                else:
                    p.normal_(0.0, 0.06)
        model = model.to(dtype)
        model.save_pretrained(out, safe_serialization=True)

        ids = ([2] + tok(TEXT, add_special_tokens=False)["input_ids"])[:N_POSITIONS]
        model32 = model.to(torch.float32).eval()
        with torch.no_grad():
            logits = model32(torch.tensor([ids])).logits[0].float()
        with open(os.path.join(out, "logits.f32"), "wb") as fh:
            fh.write(struct.pack(f"<{logits.numel()}f", *logits.flatten().tolist()))
        golden = {
            "format": "gemma-gguf-tiny-golden/1",
            "made_by": "scripts/make_tiny_checkpoints.py",
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
            "architecture": cls_name,
            "dtype": str(dtype).replace("torch.", ""),
            "ids": ids,
            "logits_shape": [len(ids), N_VOCAB],
            "tokenizer": [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in TOKENIZER_TEXTS],
        }
        with open(os.path.join(out, "golden.json"), "w") as fh:
            json.dump(golden, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
        print(name, len(ids), "positions", sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)), "bytes")


if __name__ == "__main__":
    main()
