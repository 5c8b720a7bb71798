#!/usr/bin/env python3
"""Compares the greedy runs of two builds of `gemma` (say x86-64 and an Arm build under qemu).

    .venv/bin/python scripts/compare_greedy.py HOST.log OTHER.log

Each file holds the standard error of `gemma run --temp 0 --show-top N`: one line
`top STEP ID:LOGIT ...` per generated token, best first. Two builds use different ggml kernels
(AVX2 against NEON with or without dot product), which add up the same products in a
different order, so their logits differ slightly; greedy decoding follows the larger logit,
so a near-tie can go either way.

Passes (exit 0) when the chosen tokens are equal at every step, or when they first differ at
a step where the flip is within the noise the two builds show on the other logits: with
host margin m_h = h[a] - h[b] (a: host's choice, b: the other's) and other margin
m_o = o[b] - o[a], the flip m_h + m_o must be at most 2 * delta, where delta is the largest
|h[t] - o[t]| over every other token both lists hold, at this step and every step before
(the same context in both builds). Steps after a divergence see different contexts and are
not compared. Prints what it measured either way.
"""
import sys


def read(path):
    steps = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3 or parts[0] != "top":
                continue
            try:
                steps.append([(int(i), float(v)) for i, v in (p.split(":") for p in parts[2:])])
            except ValueError:
                sys.exit(f"compare_greedy: {path}: not a `top STEP ID:LOGIT ...` line: {line.strip()!r}")
    return steps


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    host, other = read(sys.argv[1]), read(sys.argv[2])
    if not host or not other:
        print("compare_greedy: no `top` lines (run gemma with --show-top N)", file=sys.stderr)
        return 2
    delta = 0.0
    for k in range(min(len(host), len(other))):
        h, o = dict(host[k]), dict(other[k])
        a, b = host[k][0][0], other[k][0][0]
        # At a step with equal choices every common token counts; at a divergence, all but
        # the flipped pair (their difference is what is being judged).
        others = [t for t in h if t in o and (a == b or t not in (a, b))]
        delta = max([delta] + [abs(h[t] - o[t]) for t in others])
        if a == b:
            continue
        if a not in o or b not in h:
            print(f"step {k}: host chose {a}, the other build {b}, and neither list holds both", file=sys.stderr)
            return 1
        flip = (h[a] - h[b]) + (o[b] - o[a])
        ok = flip <= 2 * delta
        print(
            f"step {k}: host chose {a} ({h[a]:.4f} vs {h[b]:.4f}), the other build {b} "
            f"({o[b]:.4f} vs {o[a]:.4f}): a near-tie flipped by {flip:.4f}; the largest logit "
            f"difference between the builds on other tokens, steps 0..{k}: {delta:.4f} "
            f"(bound 2x = {2 * delta:.4f}): {'explained by rounding' if ok else 'NOT explained'}",
            file=sys.stderr,
        )
        return 0 if ok else 1
    if len(host) != len(other):
        print(f"the runs stopped after {len(host)} and {len(other)} steps with equal tokens", file=sys.stderr)
        return 1
    print(f"{len(host)} steps, equal tokens; largest logit difference on listed tokens: {delta:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
