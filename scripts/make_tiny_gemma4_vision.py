#!/usr/bin/env python3
"""A tiny random Gemma4ForConditionalGeneration (Gemma 4 vision tower + embedder + the text model
of tests/data/tiny/gemma4-dense) and transformers' outputs on it, for the Gemma 4 vision tests
(tests/tests/vision_gemma4.rs).

Everything comes from transformers 5.24.0 (seeded random weights, `save_pretrained`):

- tests/data/tiny/gemma4-vision/: the checkpoint (config.json, model.safetensors in the layout
  transformers 5 saves: `model.vision_tower.*`, `model.embed_vision.*`, tokenizer files of
  gemma4-dense). The vision config keeps Gemma 4's structure at small dims: patch 8, pooling
  kernel 3, hidden 64, 2 layers, 4 heads of 16, position table 64, clipped linears and
  standardisation on (both are optional in the config; real checkpoints carry them).
- images/: generated images (PNG) and pixels.json: for each, the patch tensor
  (`Gemma4ImageProcessorPil`, max_soft_tokens 70) without its padding rows, its position ids,
  and the number of soft tokens.
- embd.f32: `get_image_features(pixel_values, image_position_ids).pooler_output` (float32,
  [n_img * n_tokens][n_embd_text]) for embd_images, whose sizes are exact multiples of
  patch·kernel (24 px) with 70 soft tokens, so neither transformers nor libmtmd resizes them
  (libmtmd's dyn_size preprocessor keeps an aligned image of 70..1120 tokens as it is).
- embd-gelu-f16.f32: the same with the MLP's GELU read as ggml's CPU kernel reads it (input
  and output rounded to f16: ggml-cpu's GGML_GELU_FP16 table; 0 at or below -10, x at or above
  10), which accounts for nearly all of the distance between ggml and transformers.

Language-model references (`--lm`, after the checkpoint exists; tests/tests/vision_lm_gemma4.rs):

- the checkpoint above is the dense (31B-like) case: no per-layer embeddings and
  `use_bidirectional_attention: "vision"` (image tokens attend both ways on sliding layers);
- tests/data/tiny/gemma4-vision-ple/: the E2B-like case, a second random
  Gemma4ForConditionalGeneration whose text model has per-layer embeddings (width 16), KV shared
  layers and a double-wide MLP, `use_bidirectional_attention: null` (causal images, as the E2B
  and E4B configs), and the E2B's width (1536), the width libmtmd decodes causally too
  (`mtmd_decode_use_non_causal`, mtmd.cpp);
- in both: the tokenizer's unused control tokens 60, 61, 62 renamed to Gemma 4's image markers
  (`<|image>`, `<image|>`, `<|image|>`) and set as boi/eoi/image ids in config.json;
- lm.json + lm-*.f32: `Gemma4ForConditionalGeneration` in float32 (eager attention) with
  `mm_token_type_ids`, on prompts with one image and with two images (Gemma4Processor's layout:
  `<|image>` + 70 soft tokens + `<image|>`): logits at every position, then 4 greedy steps
  (a full forward each) with their logits.

Usage: .venv/bin/python scripts/make_tiny_gemma4_vision.py [--lm]
"""

import json
import os
import shutil
import struct

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "tiny", "gemma4-vision")
OUT_PLE = os.path.join(ROOT, "tests", "data", "tiny", "gemma4-vision-ple")
TEXT_TINY = os.path.join(ROOT, "tests", "data", "tiny", "gemma4-dense")
TEXT_TINY_PLE = os.path.join(ROOT, "tests", "data", "tiny", "gemma4-e2b")
GREEDY_STEPS = 4
PATCH = 8
KERNEL = 3
SOFT_TOKENS = 70
# Image marker ids inside the 512-token vocabulary (the real ones are beyond it): unused
# control tokens, renamed to Gemma 4's markers (mtmd.cpp's gemma4v `img_beg`/`img_end`).
BOI, EOI, IMAGE_TOKEN = 60, 61, 62
IMAGE_PIECES = {BOI: "<|image>", EOI: "<image|>", IMAGE_TOKEN: "<|image|>"}
LM_IMAGES = ["exact-240x168.png", "exact-168x240.png"]


def config(text_dir=TEXT_TINY, **text_over):
    from transformers import Gemma4Config

    with open(os.path.join(text_dir, "config.json")) as fh:
        text = json.load(fh)
    for k in ["architectures", "transformers_version", "dtype", "attn_implementation", "model_type"]:
        text.pop(k, None)
    text.update(text_over)
    vision = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=16,
        patch_size=PATCH,
        pooling_kernel_size=KERNEL,
        position_embedding_size=64,
        use_clipped_linears=True,
        standardize=True,
        rms_norm_eps=1e-6,
    )
    cfg = Gemma4Config(
        text_config=text,
        vision_config=vision,
        audio_config=None,
        boi_token_id=BOI,
        eoi_token_id=EOI,
        image_token_id=IMAGE_TOKEN,
        video_token_id=503,
        boa_token_id=504,
        eoa_token_index=505,
        audio_token_id=506,
    )
    cfg.text_config._attn_implementation = "eager"
    cfg.vision_config._attn_implementation = "eager"
    return cfg


def processor():
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

    # As google/gemma-4 checkpoints' processor: bicubic, rescale 1/255, no normalisation (the
    # model maps [0, 1] to [-1, 1] itself); small patch and the smallest token budget.
    return Gemma4ImageProcessorPil(patch_size=PATCH, max_soft_tokens=SOFT_TOKENS, pooling_kernel_size=KERNEL)


def images(rng):
    from PIL import Image

    def noise(w, h, mode):
        c = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256, (x * y) % 256])
        a = (base[:c].transpose(1, 2, 0) + rng.integers(0, 60, (h, w, c))) % 256
        a = a.astype(np.uint8)
        return Image.fromarray(a[..., 0] if c == 1 else a, mode)

    return [
        ("exact-240x168.png", noise(240, 168, "RGB")),
        ("exact-168x240.png", noise(168, 240, "RGB")),
        ("odd-97x41.png", noise(97, 41, "RGB")),
        ("alpha-33x130.png", noise(33, 130, "RGBA")),
        ("grey-50x50.png", noise(50, 50, "L")),
        ("big-150x110.png", noise(150, 110, "RGB")),
        ("wide-500x20.png", noise(500, 20, "RGB")),
    ]


def f32(path, t):
    t = t.detach().to(torch.float32).contiguous().flatten()
    with open(path, "wb") as fh:
        fh.write(struct.pack(f"<{t.numel()}f", *t.tolist()))


def randomize(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.1)  # Gemma 4's RMSNorm multiplies by w (no +1)
            elif "position_embedding_table" in name:
                p.normal_(0.0, 0.5)
            else:
                p.normal_(0.0, 0.06)
        v = model.model.vision_tower
        for name, b in v.named_buffers():
            if name.endswith("input_min") or name.endswith("output_min"):
                b.fill_(-float(torch.empty(()).uniform_(1.0, 3.0)))
            elif name.endswith("input_max") or name.endswith("output_max"):
                b.fill_(float(torch.empty(()).uniform_(1.0, 3.0)))
        v.std_bias.normal_(0.0, 0.5)
        v.std_scale.uniform_(0.5, 1.5)


def main():
    import transformers
    from PIL import Image
    from transformers import Gemma4ForConditionalGeneration

    torch.manual_seed(4444)
    rng = np.random.default_rng(4444)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "images"))
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(TEXT_TINY, f), os.path.join(OUT, f))
    mark_image_tokens(os.path.join(OUT, "tokenizer.json"))

    model = Gemma4ForConditionalGeneration(config(use_bidirectional_attention="vision"))
    randomize(model)
    model = model.to(torch.bfloat16)
    model.save_pretrained(OUT, safe_serialization=True)
    proc = processor()
    proc.save_pretrained(OUT)

    pix = []
    for fname, img in images(rng):
        path = os.path.join(OUT, "images", fname)
        img.save(path)
        with Image.open(path) as im:
            out = proc(images=im.copy(), return_tensors="pt")
        n_tok = int(out["num_soft_tokens_per_image"][0])
        pos = out["image_position_ids"][0]
        valid = (pos != -1).all(dim=-1)
        pv = out["pixel_values"][0][valid]
        pos = pos[valid]
        name = fname.rsplit(".", 1)[0]
        f32(os.path.join(OUT, "images", name + ".pixels.f32"), pv)
        pix.append({"image": fname, "pixels": name + ".pixels.f32", "shape": list(pv.shape),
                    "grid": [int(pos[:, 0].max()) + 1, int(pos[:, 1].max()) + 1], "soft_tokens": n_tok})

    embd_images = ["exact-240x168.png", "exact-168x240.png"]
    # Loaded back in float32, as a user runs it: `model.to(bfloat16)` above also rounded the
    # vision RoPE's (non-persistent) inverse frequencies to bf16, which `.to(float32)` would
    # keep; from_pretrained recomputes them in float32.
    model32 = Gemma4ForConditionalGeneration.from_pretrained(OUT, dtype=torch.float32).eval()
    model32.config.vision_config._attn_implementation = "eager"
    feats = []
    with torch.no_grad():
        for f in embd_images:
            out = proc(images=Image.open(os.path.join(OUT, "images", f)).copy(), return_tensors="pt")
            r = model32.get_image_features(pixel_values=out["pixel_values"],
                                           image_position_ids=out["image_position_ids"])
            feats.append(torch.cat(list(r.pooler_output)))
    feats = torch.stack(feats)
    f32(os.path.join(OUT, "embd.f32"), feats)

    # The GELU as ggml's f16 table gives it (see the module doc).
    import torch.nn.functional as F

    class GeluF16(torch.nn.Module):
        def forward(self, x):
            y = F.gelu(x.half().float(), approximate="tanh").half().float()
            return torch.where(x <= -10, torch.zeros_like(x), torch.where(x >= 10, x, y))

    for layer in model32.model.vision_tower.encoder.layers:
        layer.mlp.act_fn = GeluF16()
    feats16 = []
    with torch.no_grad():
        for f in embd_images:
            out = proc(images=Image.open(os.path.join(OUT, "images", f)).copy(), return_tensors="pt")
            r = model32.get_image_features(pixel_values=out["pixel_values"],
                                           image_position_ids=out["image_position_ids"])
            feats16.append(torch.cat(list(r.pooler_output)))
    f32(os.path.join(OUT, "embd-gelu-f16.f32"), torch.stack(feats16))

    golden = {
        "format": "gemma-gguf-tiny-gemma4-vision-golden/1",
        "made_by": "scripts/make_tiny_gemma4_vision.py",
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
    print("\n".join(n for n in names if "language_model" not in n and "layers.1." not in n))
    print(sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs), "bytes")


def mark_image_tokens(path):
    """Renames the pieces at BOI, EOI, IMAGE_TOKEN (unused control tokens) to Gemma 4's image
    markers, in the vocabulary and the added tokens (tokenizer.json, in place)."""
    with open(path) as fh:
        tok = json.load(fh)
    vocab = tok["model"]["vocab"]
    by_id = {i: p for p, i in vocab.items()}
    for i, piece in IMAGE_PIECES.items():
        old = by_id[i]
        if old != piece:
            assert old.startswith("<unused"), old
            del vocab[old]
            vocab[piece] = i
    for a in tok["added_tokens"]:
        if a["id"] in IMAGE_PIECES:
            a["content"] = IMAGE_PIECES[a["id"]]
            a["special"] = True
    with open(path, "w") as fh:
        json.dump(tok, fh, ensure_ascii=False)


def set_image_ids(path, **text_over):
    """config.json's image ids (and text-config fields) as config() now writes them."""
    with open(path) as fh:
        c = json.load(fh)
    c.update(boi_token_id=BOI, eoi_token_id=EOI, image_token_id=IMAGE_TOKEN)
    c["text_config"].update(text_over)
    with open(path, "w") as fh:
        json.dump(c, fh, indent=2, sort_keys=True)
        fh.write("\n")


def make_ple():
    """The E2B-like checkpoint (see the module doc) in OUT_PLE."""
    from transformers import Gemma4ForConditionalGeneration

    torch.manual_seed(4445)
    if os.path.isdir(OUT_PLE):
        shutil.rmtree(OUT_PLE)
    os.makedirs(os.path.join(OUT_PLE, "images"))
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(OUT, f), os.path.join(OUT_PLE, f))
    for f in LM_IMAGES:
        shutil.copy(os.path.join(OUT, "images", f), os.path.join(OUT_PLE, "images", f))
    cfg = config(TEXT_TINY_PLE, hidden_size=1536, hidden_size_per_layer_input=16, use_bidirectional_attention=None)
    model = Gemma4ForConditionalGeneration(cfg)
    randomize(model)
    with torch.no_grad():
        for name, p in model.model.language_model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.normal_(0.35, 0.03)  # as scripts/make_tiny_gemma4.py: softmax not one-hot
        for name, b in model.model.language_model.named_buffers():
            if name.endswith("layer_scalar"):
                b.uniform_(0.5, 1.5)
    model.to(torch.bfloat16).save_pretrained(OUT_PLE, safe_serialization=True)
    processor().save_pretrained(OUT_PLE)


def lm_cases():
    """(name, ids with IMAGE_TOKEN runs, image file names in order)."""
    img = [BOI] + [IMAGE_TOKEN] * SOFT_TOKENS + [EOI]
    return [
        ("one-image", [2, 17, 300, 41] + img + [108, 77, 412, 90, 250, 33], LM_IMAGES[:1]),
        ("two-images", [2, 17] + img + [44, 55] + img + [66, 70, 80], LM_IMAGES),
    ]


def lm_golden(out_dir):
    """The language model's logits on image+text prompts (see the module doc)."""
    from PIL import Image
    from transformers import Gemma4ForConditionalGeneration

    model32 = Gemma4ForConditionalGeneration.from_pretrained(out_dir, dtype=torch.float32).eval()
    model32.config.text_config._attn_implementation = "eager"
    model32.config.vision_config._attn_implementation = "eager"
    proc = processor()
    cases = []
    for name, ids, imgs in lm_cases():
        outs = [proc(images=Image.open(os.path.join(out_dir, "images", f)).copy(), return_tensors="pt") for f in imgs]
        pv = torch.cat([o["pixel_values"] for o in outs])
        pos = torch.cat([o["image_position_ids"] for o in outs])
        assert all(int(o["num_soft_tokens_per_image"][0]) == SOFT_TOKENS for o in outs)
        seq = list(ids)
        logits_all = None
        greedy, greedy_logits = [], []
        with torch.no_grad():
            for step in range(GREEDY_STEPS + 1):
                inp = torch.tensor([seq])
                mm = (inp == IMAGE_TOKEN).long()
                out = model32(input_ids=inp, pixel_values=pv, image_position_ids=pos, mm_token_type_ids=mm)
                out = out.logits[0].float()
                if step == 0:
                    logits_all = out
                else:
                    greedy_logits.append(out[-1])
                if step < GREEDY_STEPS:
                    nxt = int(out[-1].argmax())
                    greedy.append(nxt)
                    seq.append(nxt)
        f32(os.path.join(out_dir, f"lm-{name}.f32"), logits_all)
        f32(os.path.join(out_dir, f"lm-{name}-greedy.f32"), torch.stack(greedy_logits))
        cases.append({"name": name, "ids": ids, "images": imgs, "logits": f"lm-{name}.f32",
                      "greedy": greedy, "greedy_logits": f"lm-{name}-greedy.f32"})
    text = model32.config.text_config
    with open(os.path.join(out_dir, "lm.json"), "w") as fh:
        json.dump({"format": "gemma-gguf-tiny-vision-lm/1", "made_by": "scripts/make_tiny_gemma4_vision.py --lm",
                   "use_bidirectional_attention": text.use_bidirectional_attention,
                   "hidden_size_per_layer_input": text.hidden_size_per_layer_input,
                   "image_token": IMAGE_TOKEN, "boi": BOI, "eoi": EOI,
                   "n_vocab": int(logits_all.shape[-1]), "cases": cases}, fh, indent=1)
        fh.write("\n")


def lm_only():
    # The dense checkpoint as main() now writes it (its weights do not change).
    mark_image_tokens(os.path.join(OUT, "tokenizer.json"))
    set_image_ids(os.path.join(OUT, "config.json"), use_bidirectional_attention="vision")
    with open(os.path.join(OUT, "golden.json")) as fh:
        g = json.load(fh)
    g.update(boi=BOI, eoi=EOI, image_token=IMAGE_TOKEN)
    with open(os.path.join(OUT, "golden.json"), "w") as fh:
        json.dump(g, fh, indent=1)
        fh.write("\n")
    make_ple()
    for d in [OUT, OUT_PLE]:
        lm_golden(d)


if __name__ == "__main__":
    import sys

    if "--lm" in sys.argv[1:]:
        lm_only()
    else:
        main()
        lm_only()
