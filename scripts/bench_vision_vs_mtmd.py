#!/usr/bin/env python3
"""Image-encode time of `gemma bench --image` against libmtmd's `llama-mtmd-cli`
(scripts/build-llama-ref.sh: llama.cpp's own build, its CMake defaults), side by side: the same
language model, projector, image, threads and encoder flash-attention setting (ours
`--mmproj-flash-attn X`, libmtmd `-fa X`); each round runs ours and libmtmd once per setting,
in alternating order (ours first in even rounds, last in odd ones), with a pause before each
run. Every run is a fresh process timing its first encode: ours with
`--no-warmup -r 1`, libmtmd's single encode of its one image (clip.cpp's load-time warm-up only
reserves the graph's buffers, it computes nothing), so both pay the first touch of the
compute buffers alike.

The compared figure is the encoder + projector alone: libmtmd's "mtmd batch encoding done in
N ms" (mtmd-cli.cpp, around `mtmd_batch_encode`, which takes the pixel tensor `mtmd_tokenize`
made earlier) against ours' `avg_encode_ns`; our preprocessing (decode, resize to 896×896,
normalise) is reported apart. With flash attention `on` (both tools' default on the CPU:
libmtmd's `auto` turns it on wherever the backend has the kernel) the encoder's attention runs
ggml's fused kernel on f16 keys and values; `off` multiplies out the scores (mul_mat,
soft_max). `--fa on,off` (default) measures both pairs.

The ratio is the speed ratio ours / libmtmd = libmtmd ms / ours ms, the median of the
per-round ratios (each pair ran back to back, so machine load hits both alike): above 1 means
ours is faster. The 1-minute load average is read before each run and reported (waiting up to
--wait-s seconds for it to fall below --max-load first), and each run's CPU time over its wall
time × threads ("busy": below 1 when other work took the cores; the run's own single-threaded
parts, loading and the text model, lower it a little too).

Usage (from the workspace root; files from scripts/make_random_gemma3_4b_vision.py and
`gemma convert`):
    .venv/bin/python scripts/bench_vision_vs_mtmd.py LM.gguf MMPROJ.gguf [--image FILE]
        [-t 2,1] [-r 3] [--fa on,off] [--gemma target/debug/gemma]
        [--mtmd-cli target/llama-ref/build/bin/llama-mtmd-cli] [--json OUT.json]
Without --image, a 1280×960 photo-like PNG (smooth shapes, gradients, noise; Pillow, seeded)
is written beside the projector and used; both resize it to 896×896.
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

SETTLE_S = 1.0  # pause before each run (see the header)
MTMD_RE = re.compile(r"mtmd batch encoding done in (\d+) ms")


def photo_like(path):
    """A 1280×960 RGB PNG with structure at several scales, so the resize has work to do."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(896)
    w, h = 1280, 960
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = np.stack([90 + 80 * y / h, 140 + 60 * y / h, 230 - 90 * y / h], -1)
    img = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(60):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(10, 160)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    img = img.filter(ImageFilter.GaussianBlur(3))
    a = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, (h, w, 3))
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB").save(path)


def wait_load(max_load, wait_s):
    start = time.time()
    while os.getloadavg()[0] >= max_load and time.time() - start < wait_s:
        time.sleep(5)
    return os.getloadavg()[0]


def run(cmd):
    """The finished process, with `busy`: its CPU time / (wall time × threads), a contention
    sign (near 1 when it had its cores to itself; other work on the machine lowers it)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall, after = time.time() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    threads = int(cmd[cmd.index("-t") + 1])
    out.busy = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / (wall * threads)
    return out


def ours_once(a, threads, fa):
    cmd = [a.gemma, "bench", "-m", a.lm, "--mmproj", a.mmproj, "--image", a.image, "-t", threads,
           "--mmproj-flash-attn", fa, "-r", "1", "--no-warmup", "-o", "json"]
    out = run(cmd)
    r = json.loads(out.stdout)[0]
    return {"encode_ms": r["avg_encode_ns"] / 1e6, "preprocess_ms": r["avg_preprocess_ns"] / 1e6,
            "tokens": r["n_image_tokens"], "busy": out.busy}


def mtmd_once(a, threads, fa):
    cmd = [a.mtmd_cli, "-m", a.lm, "--mmproj", a.mmproj, "--image", a.image, "-t", threads, "-fa", fa,
           "-p", "Describe the image.", "-n", "1", "--temp", "0", "--chat-template", "gemma"]
    out = run(cmd)
    got = MTMD_RE.findall(out.stdout + out.stderr)
    if len(got) != 1:
        sys.exit(f"error: expected one 'mtmd batch encoding done in N ms' line from {' '.join(cmd)}, got {got}")
    return {"encode_ms": float(got[0]), "busy": out.busy}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lm")
    ap.add_argument("mmproj")
    ap.add_argument("--image")
    ap.add_argument("-t", default="2,1", help="thread counts, comma-separated")
    ap.add_argument("-r", type=int, default=3, help="rounds (each runs ours and libmtmd once per --fa)")
    ap.add_argument("--fa", default="on,off", help="the encoder's flash-attention settings (on, off), comma-separated")
    ap.add_argument("--gemma", default="target/debug/gemma")
    ap.add_argument("--mtmd-cli", default="target/llama-ref/build/bin/llama-mtmd-cli")
    ap.add_argument("--max-load", type=float, default=1.5, help="wait for the 1-minute load average to fall below")
    ap.add_argument("--wait-s", type=float, default=120, help="the longest wait for --max-load before a run")
    ap.add_argument("--json", help="write every sample here")
    a = ap.parse_args()
    if a.image is None:
        a.image = os.path.join(os.path.dirname(os.path.abspath(a.mmproj)), "photo-1280x960.png")
        if not os.path.exists(a.image):
            photo_like(a.image)
    fas = a.fa.split(",")
    if any(fa not in ("on", "off") for fa in fas):
        sys.exit(f"error: --fa {a.fa}: give on, off or both, comma-separated")

    rows = []
    for threads in a.t.split(","):
        tools = [f"{who} fa={fa}" for fa in fas for who in ("ours", "libmtmd")]
        samples = {who: [] for who in tools}
        for rnd in range(a.r):
            order = tools if rnd % 2 == 0 else tools[1:] + tools[:1]
            for who in order:
                time.sleep(SETTLE_S)
                load = wait_load(a.max_load, a.wait_s)
                fa = who.split("=")[1]
                s = ours_once(a, threads, fa) if who.startswith("ours") else mtmd_once(a, threads, fa)
                s["load"], s["load_after"] = load, os.getloadavg()[0]
                samples[who].append(s)
            print(f"t={threads} round {rnd + 1}/{a.r}: " + ", ".join(
                f"{who} {s['encode_ms']:.0f} ms (load {s['load']:.2f} before, {s['load_after']:.2f} after, "
                f"busy {s['busy']:.2f})" for who, s in ((w, samples[w][-1]) for w in tools)), file=sys.stderr)
        for fa in fas:
            mine, who = f"ours fa={fa}", f"libmtmd fa={fa}"
            ours = [s["encode_ms"] for s in samples[mine]]
            ref = [s["encode_ms"] for s in samples[who]]
            ratios = [r / o for o, r in zip(ours, ref)]
            loads = [s["load"] for w in (mine, who) for s in samples[w]]
            busy = [s["busy"] for w in (mine, who) for s in samples[w]]
            rows.append({"threads": int(threads), "flash_attn": fa, "ours_ms": statistics.median(ours),
                         "ours_preprocess_ms": statistics.median(s["preprocess_ms"] for s in samples[mine]),
                         "ref_ms": statistics.median(ref), "ratio": statistics.median(ratios),
                         "ratio_min": min(ratios), "ratio_max": max(ratios), "load_min": min(loads),
                         "load_max": max(loads), "busy_min": min(busy), "ours": samples[mine], "ref": samples[who]})

    print(f"image {a.image}; encoder + projector ms per image (median of {a.r} rounds); "
          "ratio = libmtmd ms / ours ms (speed ours / libmtmd, > 1: ours faster); "
          "load: the 1-minute load average before each run; busy: each run's CPU time / (wall × threads)")
    print("| threads | encoder flash attention | ours ms | ours preprocess ms | libmtmd ms | ratio (median) | range | load | busy ≥ |")
    print("|---:|---|---:|---:|---:|---:|---|---|---:|")
    for r in rows:
        print(f"| {r['threads']} | {r['flash_attn']} | {r['ours_ms']:.0f} | {r['ours_preprocess_ms']:.0f} | "
              f"{r['ref_ms']:.0f} | **{r['ratio']:.3f}** | {r['ratio_min']:.3f}–{r['ratio_max']:.3f} | "
              f"{r['load_min']:.2f}–{r['load_max']:.2f} | {r['busy_min']:.2f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
