#!/usr/bin/env python3
"""`gemma bench` against llama.cpp's own `llama-bench` (scripts/build-llama-ref.sh), side by side
in one run: the same model, threads and tests, each round running both tools once, in
alternating order (ours first in even rounds, llama.cpp first in odd ones), with a pause before
each run so that one tool's spinning threads do not slow the other. Both tools do a warm-up run
of their own before the timed one. Both run with the same attention kernel, flash attention on
unless `--fa off`: llama-bench's default (`-fa auto`) turns it on wherever the backend has the
fused kernel, the CPU included (llama-context.cpp `resolve_fused_ops` logs "Flash Attention
enabled"), while `gemma bench` runs the separate products unless given `--fa`. Prints tokens/s of both and the ratio ours / llama.cpp, the
median of the per-round ratios (each pair ran back to back, so machine load hits both alike).

Usage (from the workspace root):
    .venv/bin/python scripts/bench_vs_llama.py MODEL.gguf [-p 512] [-n 128] [-t 1,2] [-r 6]
        [--gemma target/release/gemma] [--llama-bench target/llama-ref/build/bin/llama-bench]
        [--fa on|off] [--json OUT.json]
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

SETTLE_S = 0.5  # pause before each run (see the header)


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    # llama-bench prints its JSON array on stdout; gemma bench likewise.
    return json.loads(out.stdout)


def speeds(results):
    """{'pp512': t/s, 'tg128': t/s} from either tool's JSON list."""
    got = {}
    for r in results:
        name = f"pp{r['n_prompt']}" if r["n_prompt"] > 0 else f"tg{r['n_gen']}"
        got[name] = float(r["avg_ts"])
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("-p", default="512")
    ap.add_argument("-n", default="128")
    ap.add_argument("-t", default="2", help="thread counts, comma-separated")
    ap.add_argument("-r", type=int, default=6, help="rounds (each runs both tools once)")
    ap.add_argument("--gemma", default="target/release/gemma")
    ap.add_argument("--llama-bench", default="target/llama-ref/build/bin/llama-bench")
    ap.add_argument("--fa", choices=["on", "off"], default="on", help="flash attention in both tools")
    ap.add_argument("--json", help="write every sample here")
    a = ap.parse_args()

    rows = []
    for threads in a.t.split(","):
        common = ["-m", a.model, "-p", a.p, "-n", a.n, "-t", threads, "-r", "1", "-o", "json"]
        ours_fa = ["--fa"] if a.fa == "on" else []
        llama_fa = ["-fa", "1" if a.fa == "on" else "0"]
        tools = {"ours": [a.gemma, "bench"] + common + ours_fa, "llama.cpp": [a.llama_bench] + common + llama_fa}
        samples = {"ours": [], "llama.cpp": []}
        for rnd in range(a.r):
            order = ["ours", "llama.cpp"] if rnd % 2 == 0 else ["llama.cpp", "ours"]
            for who in order:
                time.sleep(SETTLE_S)
                samples[who].append(speeds(run_json(tools[who])))
            print(f"t={threads} round {rnd + 1}/{a.r}: ours {samples['ours'][-1]} llama.cpp {samples['llama.cpp'][-1]}",
                  file=sys.stderr)
        for test in samples["ours"][0]:
            ours = [s[test] for s in samples["ours"]]
            ref = [s[test] for s in samples["llama.cpp"]]
            ratios = [o / r for o, r in zip(ours, ref)]
            rows.append({"test": test, "threads": int(threads), "ours_ts": statistics.median(ours),
                         "llama_ts": statistics.median(ref), "ratio": statistics.median(ratios),
                         "ratio_min": min(ratios), "ratio_max": max(ratios), "ours": ours, "llama": ref})

    print(f"flash attention {a.fa} in both")
    print(f"| test | threads | ours t/s | llama.cpp t/s | ours / llama.cpp (median of {a.r}) | range |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['test']} | {r['threads']} | {r['ours_ts']:.1f} | {r['llama_ts']:.1f} | **{r['ratio']:.3f}** "
              f"| {r['ratio_min']:.3f}–{r['ratio_max']:.3f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
