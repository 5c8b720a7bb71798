#!/usr/bin/env python3
"""The real Gemma 3 270M in Hugging Face form, for the converter's end-to-end tests.

Nothing reaches a model hub from here, so the Hugging Face checkpoint is made from the
GGUF that scripts/fetch-model.sh caches, with transformers' own GGUF code where it runs
without PyTorch (PyPI's torch wheel needs ~5 GB of CUDA libraries, too much for CI):

- tokenizer.json: transformers' GGUF tokenizer converter
  (`transformers.integrations.gguf.gguf_tokenizer_mapping.convert_gguf_tokenizer`, the code
  `AutoTokenizer.from_pretrained(dir, gguf_file=...)` runs), saved by the `tokenizers` package;
- model.safetensors: every tensor dequantised by the PyPI `gguf` package (numpy, not ggml),
  the norms' +1 undone (Hugging Face stores w, GGUF stores 1 + w), rounded to bfloat16
  (round to nearest even, as torch's `.to(torch.bfloat16)`), HF tensor names;
- config.json (transformers' Gemma3TextConfig layout, newer style: `layer_types`,
  `rope_parameters`), generation_config.json, tokenizer_config.json, and
  chat_template.jinja with Gemma's turn format (the GGUF has no template).

scripts/make_hf_goldens.py then loads this directory with transformers (with PyTorch) and
records the greedy continuations the converter tests compare against, together with the
sha256 of every file written here: the tests check that the checkpoint they convert is
byte for byte the one the goldens were made from.

Usage (from the workspace root; ~30 s, ~2 GB of memory; `scripts/venv.sh -r scripts/requirements.txt`):

    .venv/bin/python scripts/make_hf_checkpoint.py [--model GGUF] [--out DIR]

Default OUT: models/gemma-3-270m-hf (540 MB, never committed).
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")
DEFAULT_OUT = os.path.join(ROOT, "models", "gemma-3-270m-hf")

# Gemma's turn format, as in Google's Gemma 3 chat template (text part only): a system
# message is folded into the first user turn; the assistant role is called "model".
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

# GGUF tensor name (per block after `blk.N.`) -> Hugging Face name (after `model.layers.N.`).
BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "post_ffw_norm": "post_feedforward_layernorm",
}


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


def hf_name(gguf_name):
    base = gguf_name[: -len(".weight")]
    if base == "token_embd":
        return "model.embed_tokens.weight"
    if base == "output_norm":
        return "model.norm.weight"
    _, il, role = base.split(".", 2)
    return f"model.layers.{il}.{BLOCK_NAMES[role]}.weight"


def to_bf16_bits(x):
    """float32 -> bfloat16 bit patterns, round to nearest even (finite values)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def write_safetensors(path, tensors):
    """tensors: list of (name, shape, bf16 uint16 array), written in name order."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, data in sorted(tensors, key=lambda t: t[0]):
        n = data.size * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for _, _, data in sorted(tensors, key=lambda t: t[0]):
            fh.write(data.astype("<u2").tobytes())
    os.replace(tmp, path)


def config_from_gguf(r):
    arch = field(r, "general.architecture")
    if arch != "gemma3":
        sys.exit(f"error: this script makes Gemma 3 checkpoints; the file is {arch!r}")
    k = lambda s, d=None: field(r, f"gemma3.{s}", d)  # noqa: E731
    n_layer = int(k("block_count"))
    # llama.cpp's default pattern for gemma3: layer il is local iff il % 6 < 5.
    layer_types = ["sliding_attention" if il % 6 < 5 else "full_attention" for il in range(n_layer)]
    n_head = int(k("attention.head_count"))
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "bos_token_id": int(field(r, "tokenizer.ggml.bos_token_id")),
        "dtype": "bfloat16",
        "eos_token_id": int(field(r, "tokenizer.ggml.eos_token_id")),
        "final_logit_softcapping": None,
        "head_dim": int(k("attention.key_length")),
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": int(k("embedding_length")),
        "initializer_range": 0.02,
        "intermediate_size": int(k("feed_forward_length")),
        "layer_types": layer_types,
        "max_position_embeddings": int(k("context_length")),
        "model_type": "gemma3_text",
        "num_attention_heads": n_head,
        "num_hidden_layers": n_layer,
        "num_key_value_heads": int(k("attention.head_count_kv", n_head)),
        "pad_token_id": int(field(r, "tokenizer.ggml.padding_token_id")),
        "query_pre_attn_scalar": int(k("attention.key_length")),
        "rms_norm_eps": float(k("attention.layer_norm_rms_epsilon")),
        "rope_parameters": {
            "full_attention": {"rope_theta": float(k("rope.freq_base")), "rope_type": "default"},
            "sliding_attention": {"rope_theta": float(k("rope.freq_base_swa", 10000.0)), "rope_type": "default"},
        },
        "sliding_window": int(k("attention.sliding_window")),
        "tie_word_embeddings": True,
        "unk_token_id": int(field(r, "tokenizer.ggml.unknown_token_id")),
        "use_bidirectional_attention": False,
        "use_cache": True,
        "vocab_size": len(r.fields["tokenizer.ggml.tokens"].data),
    }


def tokenizer_from_gguf(r, out):
    sys.modules.setdefault("torch", None)  # the tokenizer converter does not need it
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    group = GGUF_TOKENIZER_MAPPING["tokenizer"]
    tok = {}
    for key, name in group.items():
        v = field(r, f"tokenizer.{key}")
        if v is not None:
            tok[name] = v
    tokenizer, extra = convert_gguf_tokenizer("gemma3", tok)
    tokens = tok["tokens"]
    if field(r, "tokenizer.ggml.add_bos_token", True):
        # What transformers' save_pretrained writes for a tokenizer that adds BOS.
        from tokenizers import processors

        bos = tokens[tok["bos_token_id"]]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, tok["bos_token_id"])]
        )
    tokenizer.save(os.path.join(out, "tokenizer.json"))
    cfg = {
        "add_bos_token": bool(field(r, "tokenizer.ggml.add_bos_token", True)),
        "add_eos_token": bool(field(r, "tokenizer.ggml.add_eos_token", False)),
        "bos_token": tokens[tok["bos_token_id"]],
        "eos_token": tokens[tok["eos_token_id"]],
        "unk_token": tokens[tok["unk_token_id"]],
        "pad_token": tokens[tok["pad_token_id"]],
        "model_max_length": 32768,
        "tokenizer_class": "GemmaTokenizer",
    }
    cfg.update({k: v for k, v in (extra or {}).items() if isinstance(v, (str, bool, int, float))})
    with open(os.path.join(out, "tokenizer_config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2, sort_keys=True)
        fh.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    if not os.path.exists(args.model):
        sys.exit(f"error: {args.model} not found; run scripts/fetch-model.sh first")

    from gguf import GGUFReader
    from gguf.quants import dequantize

    r = GGUFReader(args.model)
    os.makedirs(args.out, exist_ok=True)
    config = config_from_gguf(r)

    tensors = []
    for t in r.tensors:
        x = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape.tolist())]  # GGUF dims are ne0-first
        x = x.reshape(shape)
        if t.name.endswith("norm.weight"):
            x = x - np.float32(1.0)
        tensors.append((hf_name(t.name), shape, to_bf16_bits(x)))
    write_safetensors(os.path.join(args.out, "model.safetensors"), tensors)

    with open(os.path.join(args.out, "config.json"), "w") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)
        fh.write("\n")
    gen = {"bos_token_id": config["bos_token_id"], "eos_token_id": [config["eos_token_id"], 106],
           "pad_token_id": config["pad_token_id"]}
    with open(os.path.join(args.out, "generation_config.json"), "w") as fh:
        json.dump(gen, fh, indent=2, sort_keys=True)
        fh.write("\n")
    tokenizer_from_gguf(r, args.out)
    with open(os.path.join(args.out, "chat_template.jinja"), "w") as fh:
        fh.write(CHAT_TEMPLATE)
    print(args.out)


if __name__ == "__main__":
    main()
