#!/usr/bin/env python3
"""Peak resident memory of `gemma run` against llama.cpp's own `llama-completion`
(scripts/build-llama-ref.sh) on one model at one context: each tool loads the model with its
defaults (both map the file; both repack what ggml's CPU backend has faster layouts for),
evaluates the same prompt and generates the same number of tokens, greedily. Peak RSS is the
kernel's high-water mark of the process (`getrusage` of the child: ru_maxrss), so it counts
every page the run touched, file pages of the mapped weights included. Rounds alternate the
order; prints each tool's median and the ratio ours / llama.cpp.

Usage (from the workspace root):
    .venv/bin/python scripts/rss_vs_llama.py MODEL.gguf [-c 4096] [-n 16] [-t 2] [-r 3]
        [--gemma target/release/gemma] [--llama target/llama-ref/build/bin/llama-completion]
        [--gemma-args=--no-widen]
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys

PROMPT = "The history of the printing press begins in the fifteenth century, when"


def peak_rss_mib(cmd):
    """Runs `cmd` to the end; its peak RSS in MiB (ru_maxrss of the reaped child, KiB)."""
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        try:
            os.execv(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        out = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        sys.exit(f"error: {' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("-c", default="4096")
    ap.add_argument("-n", default="16")
    ap.add_argument("-t", default="2")
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--gemma", default="target/release/gemma")
    ap.add_argument("--llama", default="target/llama-ref/build/bin/llama-completion")
    ap.add_argument("--gemma-args", default="", help="more arguments for `gemma run`, e.g. \"--no-widen\"")
    a = ap.parse_args()
    common = ["-m", a.model, "-c", a.c, "-n", a.n, "-t", a.t, "-p", PROMPT, "--temp", "0"]
    tools = {
        "ours": [a.gemma, "run"] + common + a.gemma_args.split(),
        # -no-cnv: a plain completion, not the chat loop; --no-warmup: no extra empty run.
        "llama.cpp": [a.llama] + common + ["-no-cnv", "--no-warmup"],
    }
    got = {"ours": [], "llama.cpp": []}
    for rnd in range(a.r):
        order = ["ours", "llama.cpp"] if rnd % 2 == 0 else ["llama.cpp", "ours"]
        for who in order:
            got[who].append(peak_rss_mib(tools[who]))
    med = {k: statistics.median(v) for k, v in got.items()}
    print(f"model {a.model}, -c {a.c}, -n {a.n}, -t {a.t}, {a.r} rounds{', ours with ' + a.gemma_args if a.gemma_args else ''}")
    for k, v in got.items():
        print(f"  {k:9} peak RSS median {med[k]:8.1f} MiB  (runs: {', '.join(f'{x:.1f}' for x in v)})")
    print(f"  ratio ours / llama.cpp: {med['ours'] / med['llama.cpp']:.3f}")


if __name__ == "__main__":
    main()
