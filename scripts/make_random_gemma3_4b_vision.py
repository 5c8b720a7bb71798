#!/usr/bin/env python3
"""A random-weight Gemma3ForConditionalGeneration whose vision tower and projector have
Gemma 3 4B's shape, for the encode-speed comparison with libmtmd
(scripts/bench_vision_vs_mtmd.py); never for exactness tests (tests/data/tiny/gemma3-vision
is the small checkpoint those use, scripts/make_tiny_gemma3_vision.py).

The shape is google/gemma-3-4b-it's published config.json (transformers' own Gemma3Config
defaults are a 224-px SigLIP-Base, not the released model): vision_config SigLIP So400m/14,
27 layers, hidden 1152, MLP 4304, 16 heads, patch 14, image 896 (64×64 = 4096 patches,
average-pooled 4×4 to mm_tokens_per_image = 256), no pooling head; the projector maps to the
text width 2560. Only the vision tower and projector are the 4B's: the text model is 2 layers
(one sliding-window, one global: llama.cpp's Gemma 3 needs both kinds) with a 1024-token vocabulary (the cut tokenizer of tests/data/tiny/gemma3-vision, image
markers included) and MLP 512, keeping width 2560 (what the projector must match) and the
4B's attention shape (8 heads, 4 KV heads, head dim 256), so the checkpoint stays about
0.9 GB (bf16) instead of 8.6 GB.

Weights: transformers' own initialisation (`post_init`, seeded), saved in bfloat16 with
`save_pretrained` (transformers 5.24.0's tensor names), the processor config as the hub's
(896×896, bilinear, mean = std = 0.5).

    .venv/bin/python scripts/make_random_gemma3_4b_vision.py [OUT_DIR]   # default models/gemma3-4b-vision-random

then convert with our converter (the projector in f16, llama.cpp's usual mmproj type):

    gemma convert OUT_DIR -o OUT_DIR/lm.gguf --mmproj OUT_DIR/mmproj-f16.gguf --mmproj-type f16
"""

import os
import shutil
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_tiny_gemma3_vision as tiny  # noqa: E402  (the tokenizer with image markers, ids)

OUT = os.path.join(ROOT, "models", "gemma3-4b-vision-random")

# google/gemma-3-4b-it config.json, "vision_config" and "mm_tokens_per_image".
VISION = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=27,
    num_attention_heads=16,
    image_size=896,
    patch_size=14,
    layer_norm_eps=1e-6,
    vision_use_head=False,
)
MM_TOKENS = 256
# The same file's text_config where the projector depends on it (hidden_size) and the
# attention shape; depth, vocabulary and MLP are cut (see the module doc).
TEXT_WIDTH = 2560


def config():
    import json

    from transformers import Gemma3Config

    with open(os.path.join(tiny.TEXT_TINY, "config.json")) as fh:
        text = json.load(fh)
    for k in ["architectures", "transformers_version", "dtype", "attn_implementation", "model_type"]:
        text.pop(k, None)
    text.update(
        hidden_size=TEXT_WIDTH,
        intermediate_size=512,
        num_hidden_layers=2,
        layer_types=["sliding_attention", "full_attention"],
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=1024,
    )
    return Gemma3Config(
        text_config=text,
        vision_config=VISION,
        mm_tokens_per_image=MM_TOKENS,
        boi_token_index=tiny.BOI,
        eoi_token_index=tiny.EOI,
        image_token_index=tiny.IMAGE_TOKEN,
    )


def main():
    from transformers import Gemma3ForConditionalGeneration
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    out = sys.argv[1] if len(sys.argv) > 1 else OUT
    torch.manual_seed(896)
    os.makedirs(out, exist_ok=True)
    tok_dir = os.path.join(ROOT, "tests", "data", "tiny", "gemma3-vision")
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(tok_dir, f), os.path.join(out, f))
    model = Gemma3ForConditionalGeneration(config()).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    # As google/gemma-3-4b-it's preprocessor_config.json.
    Gemma3ImageProcessorPil(
        size={"height": VISION["image_size"], "width": VISION["image_size"]},
        resample=2,
        rescale_factor=1 / 255,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
        do_pan_and_scan=False,
    ).save_pretrained(out)
    n_vision = sum(p.numel() for n, p in model.named_parameters() if "language_model" not in n)
    print(f"{out}: {n_vision / 1e6:.1f} M vision + projector parameters")


if __name__ == "__main__":
    main()
