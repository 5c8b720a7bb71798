#!/usr/bin/env python3
"""A tiny random Gemma3ForConditionalGeneration (SigLIP tower + projector + text model) and
transformers' outputs on it, for the vision tests (tests/tests/convert_vision.rs,
tests/tests/vision*.rs).

Everything comes from transformers 5.24.0 (seeded random weights, `save_pretrained`):

- tests/data/tiny/gemma3-vision/: the checkpoint (config.json, model.safetensors in the
  layout transformers 5 saves, tokenizer files: the cut tokenizer of tests/data/tiny/gemma3).
  The vision config is small but keeps Gemma 3's structure: image 64×64, patch 8 (8×8 = 64
  patches), 16 image tokens (avg-pool kernel 2), 2 encoder layers, hidden 64, 4 heads.
- images/: a few generated images of odd sizes in PNG, JPEG and WebP (Pillow), and
  pixels.json: for each, the shape and a file of the pixel tensor transformers' processor
  (`Gemma3ImageProcessorPil`, the checkpoint's preprocessor_config.json) makes of it.
- embd.f32: `get_image_features(pixel_values).pooler_output` (float32, [n_img][16][n_embd])
  for the 64×64 images in embd_images (so no resize is involved; libmtmd gets the same pixels).
- lm.json + lm-*.f32: the language model on image+text prompts (`Gemma3ForConditionalGeneration`
  in float32 with `token_type_ids`, so attention is bidirectional within each image): for each
  case the input ids (image soft tokens as IMAGE_TOKEN), its images, the logits at every
  position, and a few greedy steps (full forward per step) with their logits.

The tokenizer is the cut one of tests/data/tiny/gemma3 with ids BOI, EOI and IMAGE_TOKEN
renamed `<start_of_image>`, `<end_of_image>`, `<image_soft_token>` (special), as in the real
Gemma 3 vocabulary, so the runtime finds the image markers by name.

Usage (needs PyTorch and Pillow: `scripts/venv.sh -r scripts/requirements-reference.txt`):

    .venv/bin/python scripts/make_tiny_gemma3_vision.py          # everything
    .venv/bin/python scripts/make_tiny_gemma3_vision.py --lm     # only the tokenizer marks and
                                                                 # lm.json, from the saved checkpoint
"""

import json
import os
import shutil
import struct

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "tiny", "gemma3-vision")
TEXT_TINY = os.path.join(ROOT, "tests", "data", "tiny", "gemma3")
IMAGE_SIZE = 64
PATCH = 8
MM_TOKENS = 16
# Ids inside the cut 1024-token vocabulary for the image tokens (the real model's are
# 255999, 256000, 262144, outside it); any ids work for the random model.
BOI, EOI, IMAGE_TOKEN = 1000, 1001, 1002
IMAGE_PIECES = {BOI: "<start_of_image>", EOI: "<end_of_image>", IMAGE_TOKEN: "<image_soft_token>"}
GREEDY_STEPS = 4


def config():
    from transformers import Gemma3Config

    with open(os.path.join(TEXT_TINY, "config.json")) as fh:
        text = json.load(fh)
    for k in ["architectures", "transformers_version", "dtype", "attn_implementation", "model_type"]:
        text.pop(k, None)
    vision = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        layer_norm_eps=1e-6,
        vision_use_head=False,
    )
    cfg = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=MM_TOKENS,
        boi_token_index=BOI,
        eoi_token_index=EOI,
        image_token_index=IMAGE_TOKEN,
    )
    cfg.text_config.attn_implementation = "eager"
    cfg.vision_config.attn_implementation = "eager"
    return cfg


def processor():
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    # As the real checkpoints' preprocessor_config.json (google/gemma-3-4b-it): bilinear
    # (resample 2), rescale 1/255, mean = std = 0.5, RGB; only the size differs.
    return Gemma3ImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=2,
        rescale_factor=1 / 255,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
        do_pan_and_scan=False,
    )


def images(rng):
    """(file name, PIL image, save kwargs): odd sizes, up- and downscaled, with alpha and grey."""
    from PIL import Image

    def noise(w, h, mode):
        c = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        # smooth gradients plus noise, so resampling has something to average
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256, (x * y) % 256])
        a = (base[:c].transpose(1, 2, 0) + rng.integers(0, 60, (h, w, c))) % 256
        a = a.astype(np.uint8)
        return Image.fromarray(a[..., 0] if c == 1 else a, mode)

    return [
        ("odd-97x41.png", noise(97, 41, "RGB"), {}),
        ("alpha-33x130.png", noise(33, 130, "RGBA"), {}),
        ("grey-50x50.png", noise(50, 50, "L"), {}),
        ("photo-123x77.jpg", noise(123, 77, "RGB"), {"quality": 90}),
        ("lossless-200x150.webp", noise(200, 150, "RGB"), {"lossless": True}),
        ("small-20x31.webp", noise(20, 31, "RGB"), {"lossless": True}),
        ("exact-64x64.png", noise(64, 64, "RGB"), {}),
        ("exact2-64x64.png", noise(64, 64, "RGB"), {}),
    ]


def f32(path, t):
    t = t.detach().to(torch.float32).contiguous().flatten()
    with open(path, "wb") as fh:
        fh.write(struct.pack(f"<{t.numel()}f", *t.tolist()))


def mark_image_tokens(path):
    """Renames the pieces at BOI, EOI, IMAGE_TOKEN to the real vocabulary's image markers and
    lists them as special added tokens (tokenizer.json of the checkpoint, in place)."""
    with open(path) as fh:
        tok = json.load(fh)
    vocab = tok["model"]["vocab"]
    by_id = {i: p for p, i in vocab.items()}
    for i, piece in IMAGE_PIECES.items():
        old = by_id[i]
        if old != piece:
            assert not any(old in "".join(m) if isinstance(m, list) else old in m for m in tok["model"]["merges"])
            del vocab[old]
            vocab[piece] = i
    tok["added_tokens"] = [a for a in tok["added_tokens"] if a["id"] not in IMAGE_PIECES]
    for i, piece in IMAGE_PIECES.items():
        tok["added_tokens"].append(dict(id=i, content=piece, single_word=False, lstrip=False, rstrip=False,
                                        normalized=False, special=True))
    tok["added_tokens"].sort(key=lambda a: a["id"])
    with open(path, "w") as fh:
        json.dump(tok, fh, ensure_ascii=False)  # one line, as tests/data/tiny/gemma3's


def lm_cases():
    """(name, ids with IMAGE_TOKEN runs, image file names in order)."""
    img = [BOI] + [IMAGE_TOKEN] * MM_TOKENS + [EOI]
    return [
        ("one-image", [2, 17, 300, 41] + img + [108, 77, 512, 90, 250, 33], ["exact-64x64.png"]),
        ("two-images", [2, 17] + img + [44, 55] + img + [66, 70, 80], ["exact-64x64.png", "exact2-64x64.png"]),
    ]


def lm_golden(model32, proc):
    """The language model's logits on image+text prompts (see the module doc)."""
    from PIL import Image

    cases = []
    for name, ids, imgs in lm_cases():
        pv = torch.stack(
            [proc(images=Image.open(os.path.join(OUT, "images", f)).copy(), return_tensors="pt")["pixel_values"][0]
             for f in imgs]
        )
        seq = list(ids)
        logits_all = None
        greedy, greedy_logits = [], []
        with torch.no_grad():
            for step in range(GREEDY_STEPS + 1):
                inp = torch.tensor([seq])
                tt = (inp == IMAGE_TOKEN).long()
                out = model32(input_ids=inp, pixel_values=pv, token_type_ids=tt).logits[0].float()
                if step == 0:
                    logits_all = out
                else:
                    greedy_logits.append(out[-1])
                if step < GREEDY_STEPS:
                    nxt = int(out[-1].argmax())
                    greedy.append(nxt)
                    seq.append(nxt)
        f32(os.path.join(OUT, f"lm-{name}.f32"), logits_all)
        f32(os.path.join(OUT, f"lm-{name}-greedy.f32"), torch.stack(greedy_logits))
        cases.append({"name": name, "ids": ids, "images": imgs, "logits": f"lm-{name}.f32",
                      "greedy": greedy, "greedy_logits": f"lm-{name}-greedy.f32"})
    with open(os.path.join(OUT, "lm.json"), "w") as fh:
        json.dump({"format": "gemma-gguf-tiny-vision-lm/1", "made_by": "scripts/make_tiny_gemma3_vision.py",
                   "n_vocab": int(logits_all.shape[-1]), "cases": cases}, fh, indent=1)
        fh.write("\n")


def lm_only():
    from transformers import Gemma3ForConditionalGeneration

    mark_image_tokens(os.path.join(OUT, "tokenizer.json"))
    model32 = Gemma3ForConditionalGeneration.from_pretrained(OUT, dtype=torch.float32).eval()
    model32.config.text_config._attn_implementation = "eager"
    lm_golden(model32, processor())


def main():
    import transformers
    from PIL import Image
    from transformers import Gemma3ForConditionalGeneration

    torch.manual_seed(4321)
    rng = np.random.default_rng(4321)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "images"))
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(TEXT_TINY, f), os.path.join(OUT, f))
    mark_image_tokens(os.path.join(OUT, "tokenizer.json"))

    model = Gemma3ForConditionalGeneration(config())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and "vision" not in name:
                p.normal_(0.0, 0.1)  # Gemma's norms are 1 + w: make w matter
            elif "norm" in name or "layernorm" in name:
                p.normal_(1.0, 0.1) if name.endswith("weight") else p.normal_(0.0, 0.05)
            else:
                p.normal_(0.0, 0.06)
    model = model.to(torch.bfloat16)
    model.save_pretrained(OUT, safe_serialization=True)
    proc = processor()
    proc.save_pretrained(OUT)

    # Pixel tensors of the processor, for the preprocessing test.
    pix = []
    for fname, img, kw in images(rng):
        path = os.path.join(OUT, "images", fname)
        img.save(path, **kw)
        with Image.open(path) as im:
            pv = proc(images=im.copy(), return_tensors="pt")["pixel_values"][0]
        out = fname.rsplit(".", 1)[0] + ".pixels.f32"
        f32(os.path.join(OUT, "images", out), pv)
        pix.append({"image": fname, "pixels": out, "shape": list(pv.shape)})

    # Image features of the 64×64 images (no resize: libmtmd sees the same pixel tensor).
    embd_images = ["exact-64x64.png", "exact2-64x64.png"]
    model32 = model.to(torch.float32).eval()
    with torch.no_grad():
        pv = torch.stack(
            [proc(images=Image.open(os.path.join(OUT, "images", f)).copy(), return_tensors="pt")["pixel_values"][0]
             for f in embd_images]
        )
        feats = model32.get_image_features(pixel_values=pv).pooler_output
    f32(os.path.join(OUT, "embd.f32"), feats)
    lm_golden(model32, proc)

    golden = {
        "format": "gemma-gguf-tiny-vision-golden/1",
        "made_by": "scripts/make_tiny_gemma3_vision.py",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "pillow": Image.__version__},
        "pixels": pix,
        "embd_images": embd_images,
        "embd_shape": list(feats.shape),
        "boi": BOI,
        "eoi": EOI,
        "image_token": IMAGE_TOKEN,
    }
    with open(os.path.join(OUT, "golden.json"), "w") as fh:
        json.dump(golden, fh, indent=1)
        fh.write("\n")
    from safetensors import safe_open

    with safe_open(os.path.join(OUT, "model.safetensors"), "pt") as st:
        names = sorted(st.keys())
    print("\n".join(n for n in names if "language_model.layers.1" not in n))
    print(sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs), "bytes")


if __name__ == "__main__":
    import sys

    lm_only() if sys.argv[1:] == ["--lm"] else main()
