#!/usr/bin/env python3
"""Per-position logit goldens from Hugging Face transformers for `exactness_transformers.rs`.

What it is for: `tests/tests/exactness_transformers.rs` feeds the token ids recorded here
through our runtime and through libllama, and compares both with the next-token
distributions that transformers computes from the same GGUF file: transformers reads the
file with `gguf_file=`, dequantises every tensor with the `gguf` package (numpy code, not
ggml) and runs its own PyTorch Gemma 3 in float32 with eager attention. Neither the
tokenizer nor the forward pass shares code with llama.cpp or with us.

How to regenerate (from the workspace root; the model comes from scripts/fetch-model.sh;
about 10 minutes on 2 cores, 7 GB of memory at peak):

    scripts/venv.sh -r scripts/requirements-reference.txt
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/make_logit_goldens.py [--model models/gemma-3-270m-q4_k_m.gguf]

then commit `tests/data/goldens/`. Rerun it when a prompt, the test model or the pinned
versions change. Nothing is downloaded: model, config and tokenizer all come from the GGUF.

Inputs: the prompt files named in PROMPTS below (`tests/data/prompts/*.txt`), each used
verbatim, its final newline included; `tokenizer(text)` adds BOS.

Outputs (format in `tests/data/goldens/README.md`):
- `tests/data/goldens/transformers.json`: versions, model hash, settings, and per prompt
  its token ids, checks and statistics;
- `tests/data/goldens/<name>.top64.bin`: per position the log-sum-exp of the full logits,
  the argmax, and the top-64 token ids with their log-probabilities.

Besides the logits, three things are measured here and recorded for the test:
- Sliding window: the 512-token window of the local layers is checked in the masks that
  eager attention receives, and, for prompts longer than the window, the prompt is run a
  second time with the window removed, to show what a runtime that ignores the window
  would score (and that positions inside the window do not change).
- ggml's numerics: the same model run again with the rounding that ggml's CPU backend
  applies (activations quantised to Q8_0/Q8_K before each quantised matrix product, Q/K/V
  and attention weights rounded to f16, GELU through an f16 table). Its distance from the
  float32 run is the noise any correct ggml runtime is expected to show, and the change it
  causes in the gaps between the reference's top tokens gives the near-tie threshold that
  the test uses for top-1 agreement.
"""

import argparse
import hashlib
import json
import os
import platform
import struct
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS_DIR = os.path.join(ROOT, "tests", "data", "prompts")
OUT_DIR = os.path.join(ROOT, "tests", "data", "goldens")
DEFAULT_MODEL = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")
MANIFEST = "transformers.json"
FORMAT = "gemma-gguf-logit-goldens/1"
TOP_K = 64
ROWS = 128  # rows per float64 chunk (a full-vocabulary row is 2 MiB in float64)

# (name, file under tests/data/prompts/): what each one exercises.
PROMPTS = [
    ("prose", "prose.txt"),  # English prose
    ("code", "code.txt"),  # Python: indentation runs, punctuation
    ("table", "table.txt"),  # a Markdown table and a numbered list
    ("multilingual", "multilingual.txt"),  # nine languages, six scripts
    ("long_declaration", "long_declaration.txt"),  # ~1600 tokens, past the 512 window
]

# ggml's CPU backend quantises the activations (src1) of a matrix product to the weight
# type's `vec_dot_type` (ggml/src/ggml-cpu/ggml-cpu.c, `type_traits_cpu`, llama.cpp as
# vendored by llama-cpp-sys-2 0.1.161). Q4_1/Q5_1 use Q8_1: Q8_0's values plus a block sum.
VEC_DOT_TYPE = {
    "Q4_0": "Q8_0", "Q4_1": "Q8_0", "Q5_0": "Q8_0", "Q5_1": "Q8_0", "Q8_0": "Q8_0",
    "Q2_K": "Q8_K", "Q3_K": "Q8_K", "Q4_K": "Q8_K", "Q5_K": "Q8_K", "Q6_K": "Q8_K",
    "F16": "F16", "F32": None,
}
# GGUF tensor name (per block) -> transformers module under model.layers.{i}.
HF_LINEAR = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Near-tie threshold = this factor times the largest change of a top-1-vs-top-2 logit gap
# seen in the simulated ggml run, over all prompts. The simulation reproduces ggml's
# rounding steps, not its kernels (repacked layouts, SIMD summation order), so its noise is
# taken with a margin; the test holds llama.cpp to the same threshold, which checks it.
NEAR_TIE_MARGIN = 1.5


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gguf_metadata(path):
    """Tensor types and the few hyper-parameters checked against transformers' config."""
    from gguf import GGUFReader

    r = GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in r.tensors}
    arch = r.fields["general.architecture"].contents()
    sw = r.fields[f"{arch}.attention.sliding_window"].contents()
    n_layer = r.fields[f"{arch}.block_count"].contents()
    return types, int(sw), int(n_layer)


# --- ggml's rounding, in torch ------------------------------------------------------------


def f16(x):
    return x.to(torch.float16).to(x.dtype)


def quant_q8_0(x):
    """quantize_row_q8_0_ref: blocks of 32, d = amax/127 stored as f16, q = round(x/d)."""
    shape = x.shape
    b = x.reshape(-1, 32)
    d = b.abs().amax(dim=1, keepdim=True) / 127.0
    inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    q = torch.round(b * inv)  # roundf: half away from zero; ties are measure-zero here
    return (q * f16(d)).reshape(shape)


def quant_q8_k(x):
    """quantize_row_q8_K_ref: blocks of 256, iscale = -127/max (max = signed largest |x|)."""
    shape = x.shape
    b = x.reshape(-1, 256)
    idx = b.abs().argmax(dim=1, keepdim=True)
    mx = torch.gather(b, 1, idx)
    iscale = torch.where(mx != 0, -127.0 / mx, torch.zeros_like(mx))
    q = torch.clamp(torch.round(iscale * b), max=127)
    d = torch.where(mx != 0, 1.0 / iscale, torch.zeros_like(mx))
    return (q * d).reshape(shape)


QUANT = {"Q8_0": quant_q8_0, "Q8_K": quant_q8_k, "F16": f16}


def ggml_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Eager attention as ggml's CPU mul_mat computes it with an F16 KV cache: Q, K, V and
    the softmax output rounded to f16, products accumulated in f32."""
    from transformers.models.gemma3.modeling_gemma3 import repeat_kv

    GgmlRounding.calls += 1
    k = repeat_kv(f16(key), module.num_key_value_groups)
    v = repeat_kv(f16(value), module.num_key_value_groups)
    w = torch.matmul(f16(query * scaling), k.transpose(2, 3))
    if attention_mask is not None:
        w = w + attention_mask
    w = f16(torch.softmax(w, dim=-1, dtype=torch.float32))
    return torch.matmul(w, v).transpose(1, 2).contiguous(), w


def ggml_gelu(x):
    """ggml_vec_geglu_f32 with GGML_GELU_FP16: gelu through a table indexed by f16(x)."""
    g = f16(torch.nn.functional.gelu(f16(x), approximate="tanh"))
    return torch.where(x <= -10.0, torch.zeros_like(x), torch.where(x >= 10.0, x, g))


class GgmlRounding:
    """Context manager: makes the transformers model round the way ggml's CPU backend does."""

    calls = 0

    def __init__(self, model, tensor_types, n_layer):
        self.model, self.types, self.n_layer = model, tensor_types, n_layer
        self.handles, self.saved = [], {}

    def __enter__(self):
        from transformers.models.gemma3 import modeling_gemma3

        # Gemma3Attention looks `eager_attention_forward` up at call time when the
        # implementation is "eager"; replacing it keeps transformers' eager masks.
        self.saved["attn"] = modeling_gemma3.eager_attention_forward
        modeling_gemma3.eager_attention_forward = ggml_attention
        GgmlRounding.calls = 0
        m = self.model
        targets = [(m.lm_head, self.types["token_embd.weight"])]
        for i in range(self.n_layer):
            for gguf_name, hf_name in HF_LINEAR.items():
                mod = m.model.layers[i].get_submodule(hf_name)
                targets.append((mod, self.types[f"blk.{i}.{gguf_name}.weight"]))
        for mod, ty in targets:
            quant = QUANT.get(VEC_DOT_TYPE[ty]) if VEC_DOT_TYPE[ty] else None
            if quant is not None:
                hook = mod.register_forward_pre_hook(lambda _m, a, q=quant: (q(a[0]),))
                self.handles.append(hook)
        for layer in m.model.layers:
            self.handles.append(
                layer.mlp.act_fn.register_forward_hook(lambda _m, a, _out: ggml_gelu(a[0]))
            )
        return self

    def __exit__(self, *exc):
        from transformers.models.gemma3 import modeling_gemma3

        for h in self.handles:
            h.remove()
        modeling_gemma3.eager_attention_forward = self.saved["attn"]


# --- the reference run ------------------------------------------------------------------


def forward_logits(model, ids):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), use_cache=False)
    return out.logits[0].float()


def summarise(logits, top_k):
    """Per position: lse (float64 sum, stored f32), argmax, top-k ids and log-probs."""
    lse = torch.cat([torch.logsumexp(c.double(), dim=-1) for c in logits.split(ROWS)])
    vals, idx = torch.topk(logits, top_k, dim=-1, sorted=True)
    logprobs = (vals.double() - lse[:, None]).float()
    return lse.float(), idx, logprobs


def kl_rows(p_logits, q_logits):
    """Exact KL(P || Q) per row, full vocabulary, in float64."""
    out = []
    for p, q in zip(p_logits.split(ROWS), q_logits.split(ROWS)):
        lp = torch.log_softmax(p.double(), dim=-1)
        lq = torch.log_softmax(q.double(), dim=-1)
        out.append((lp.exp() * (lp - lq)).sum(dim=-1))
    return torch.cat(out)


def kl_top_k_estimate(top_idx, top_lp, q_logits):
    """KL(P || Q) per row as the test estimates it from the stored top-k of P: exact over
    P's top-k, the rest of the vocabulary lumped into one tail outcome."""
    out = []
    for idx, lp, q in zip(top_idx.split(ROWS), top_lp.split(ROWS), q_logits.split(ROWS)):
        lq_all = torch.log_softmax(q.double(), dim=-1)
        lp, lq = lp.double(), torch.gather(lq_all, 1, idx)
        head = (lp.exp() * (lp - lq)).sum(dim=-1)
        p_tail = (1.0 - lp.exp().sum(dim=-1)).clamp(min=0.0)
        q_tail = (1.0 - lq.exp().sum(dim=-1)).clamp(min=1e-300)
        tail = torch.where(p_tail > 0, p_tail * torch.log(p_tail.clamp(min=1e-300) / q_tail), 0.0)
        out.append(head + tail)
    return torch.cat(out)


def mask_windows(model, ids, n_layer, layer_types):
    """Runs the model once, capturing the masks eager attention receives; returns, per
    layer type, the number of key positions each query may attend to."""
    seen = {}

    def hook(mod, args, kwargs, kind):
        m = kwargs.get("attention_mask")
        if kind not in seen and m is not None:
            allowed = (m[0, 0] == 0) if m.dtype != torch.bool else m[0, 0]
            seen[kind] = allowed.sum(dim=-1).tolist()

    handles = []
    for i in range(n_layer):
        kind = layer_types[i]
        handles.append(
            model.model.layers[i].register_forward_pre_hook(
                lambda mod, a, kw, k=kind: hook(mod, a, kw, k), with_kwargs=True
            )
        )
    try:
        forward_logits(model, ids)
    finally:
        for h in handles:
            h.remove()
    return seen


def gap_changes(ref, other, top_idx):
    """Per position, change of the logit gap between the reference's top-1 and top-2."""
    r = torch.gather(ref, 1, top_idx[:, :2])
    o = torch.gather(other, 1, top_idx[:, :2])
    return ((r[:, 0] - r[:, 1]) - (o[:, 0] - o[:, 1])).abs()


def stats(kl, top1_ref, top1_other):
    agree = (top1_ref == top1_other).sum().item()
    return {
        "mean_kl": kl.mean().item(),
        "max_kl": kl.max().item(),
        "top1_agree": agree,
        "n": len(top1_ref),
    }


def run_prompt(model, tok, name, path, meta, window):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id, f"{name}: BOS is not first"
    assert ids == tok.encode(text, add_special_tokens=True, split_special_tokens=True), (
        f"{name}: the text contains control-token spellings; choose another prompt"
    )
    n = len(ids)
    print(f"{name}: {n} tokens", flush=True)

    logits = forward_logits(model, ids)
    lse, top_idx, top_lp = summarise(logits, TOP_K)
    argmax = logits.argmax(dim=-1)
    assert torch.equal(argmax, top_idx[:, 0]), f"{name}: top-k order disagrees with argmax"
    gap = (top_lp[:, 0] - top_lp[:, 1]).double()
    p_tail = (1.0 - top_lp.double().exp().sum(dim=-1)).clamp(min=0.0)
    entry = {
        "name": name,
        "prompt_file": os.path.relpath(path, ROOT),
        "prompt_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "n_tokens": n,
        "ids": ids,
        "reference": {
            "mean_top2_gap": gap.mean().item(),
            "min_top2_gap": gap.min().item(),
            "mean_p_tail": p_tail.mean().item(),
            "max_p_tail": p_tail.max().item(),
        },
    }

    # ggml's rounding simulated on the same model: the noise floor of a correct runtime.
    with GgmlRounding(model, *meta):
        sim = forward_logits(model, ids)
    assert GgmlRounding.calls == model.config.num_hidden_layers, "simulated attention unused"
    dgap = gap_changes(logits, sim, top_idx)
    kl_sim = kl_rows(logits, sim)
    est_err = kl_sim - kl_top_k_estimate(top_idx, top_lp, sim)
    entry["ggml_sim"] = {
        **stats(kl_sim, argmax, sim.argmax(dim=-1)),
        "top_k_estimate_mean_error": est_err.mean().item(),
        "top_k_estimate_max_error": est_err.abs().max().item(),
        "max_top2_gap_change": dgap.max().item(),
        "p99_top2_gap_change": torch.quantile(dgap.double(), 0.99).item(),
    }
    del sim

    # The sliding window: masks, and what ignoring it would cost.
    if n > window:
        cfg = model.config
        seen = mask_windows(model, ids, cfg.num_hidden_layers, cfg.layer_types)
        want_local = [min(q + 1, window) for q in range(n)]
        want_full = [q + 1 for q in range(n)]
        assert seen.get("sliding_attention") == want_local, f"{name}: local-layer mask is wrong"
        assert seen.get("full_attention") == want_full, f"{name}: global-layer mask is wrong"
        cfg.sliding_window = 1 << 20
        try:
            nowin = forward_logits(model, ids)
        finally:
            cfg.sliding_window = window
        inside = (logits[:window] - nowin[:window]).abs().max().item()
        kl_out = kl_rows(logits[window:], nowin[window:])
        assert inside < 1e-3, f"{name}: removing the window changed positions inside it ({inside})"
        assert kl_out.mean().item() > 1e-3, f"{name}: removing the window changed nothing"
        entry["sliding_window_check"] = {
            "window": window,
            "local_mask_keys_at_last_position": seen["sliding_attention"][-1],
            "global_mask_keys_at_last_position": seen["full_attention"][-1],
            "no_window_max_abs_logit_diff_inside_window": inside,
            "no_window_past_window": stats(
                kl_out, argmax[window:], nowin[window:].argmax(dim=-1)
            ),
        }
        del nowin

    records = bytearray()
    for p in range(n):
        records += struct.pack("<fI", lse[p].item(), argmax[p].item())
        records += struct.pack(f"<{TOP_K}I", *top_idx[p].tolist())
        records += struct.pack(f"<{TOP_K}f", *top_lp[p].tolist())
    data_file = f"{name}.top{TOP_K}.bin"
    with open(os.path.join(OUT_DIR, data_file), "wb") as f:
        f.write(records)
    entry["data_file"] = data_file
    entry["data_sha256"] = hashlib.sha256(records).hexdigest()
    s = entry["ggml_sim"]
    print(
        f"  ggml-sim: mean KL {s['mean_kl']:.3e}, max {s['max_kl']:.3e}, top-1 "
        f"{s['top1_agree']}/{n}, max gap change {s['max_top2_gap_change']:.4f}, top-{TOP_K} "
        f"estimate error mean {s['top_k_estimate_mean_error']:.2e} "
        f"max {s['top_k_estimate_max_error']:.2e}",
        flush=True,
    )
    if "sliding_window_check" in entry:
        w = entry["sliding_window_check"]["no_window_past_window"]
        print(
            f"  no window, past {window}: mean KL {w['mean_kl']:.3e}, "
            f"top-1 {w['top1_agree']}/{w['n']}"
        )
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("GEMMA_TEST_MODEL", DEFAULT_MODEL))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    model_path = os.path.abspath(args.model)
    mdir, mfile = os.path.split(model_path)
    types, window, n_layer = gguf_metadata(model_path)

    tok = AutoTokenizer.from_pretrained(mdir, gguf_file=mfile)
    model = AutoModelForCausalLM.from_pretrained(
        mdir, gguf_file=mfile, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    cfg = model.config
    assert cfg._attn_implementation == "eager"
    assert cfg.sliding_window == window, f"config window {cfg.sliding_window} != GGUF {window}"
    assert cfg.num_hidden_layers == n_layer
    # Gemma 3: every 6th layer global (llama.cpp's gemma3 `load_swa_pattern(ml, 6)`).
    want = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n_layer)]
    assert list(cfg.layer_types) == want, f"layer types {cfg.layer_types}"

    os.makedirs(OUT_DIR, exist_ok=True)
    entries = [
        run_prompt(model, tok, name, os.path.join(PROMPTS_DIR, f), (types, n_layer), window)
        for name, f in PROMPTS
    ]
    max_gap_change = max(e["ggml_sim"]["max_top2_gap_change"] for e in entries)
    manifest = {
        "format": FORMAT,
        "generator": "scripts/make_logit_goldens.py",
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": _dist_version("gguf"),
            "numpy": numpy.__version__,
            "python": platform.python_version(),
        },
        "model": {
            "file": mfile,
            "bytes": os.path.getsize(model_path),
            "sha256": sha256(model_path),
        },
        "settings": {
            "dtype": "float32",
            "attn_implementation": "eager",
            "sliding_window": window,
            "layer_types": list(cfg.layer_types),
            "top_k": TOP_K,
            "record": f"<f32 lse><u32 argmax><u32 ids[{TOP_K}]><f32 logprobs[{TOP_K}]>, "
            "little-endian",
        },
        "near_tie": {
            "max_top2_gap_change_ggml_sim": max_gap_change,
            "margin": NEAR_TIE_MARGIN,
            "threshold": NEAR_TIE_MARGIN * max_gap_change,
        },
        "prompts": entries,
    }
    with open(os.path.join(OUT_DIR, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"near-tie threshold {manifest['near_tie']['threshold']:.4f} (logit gap)")
    print(
        f"wrote {os.path.relpath(OUT_DIR, ROOT)}/ "
        f"(transformers {transformers.__version__}, torch {torch.__version__})"
    )
    return 0


def _dist_version(name):
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    sys.exit(main())
