#!/usr/bin/env python3
"""Reads `perf report --stdio --no-children --sort symbol` on stdin (scripts/profile-decode.sh)
and prints a Markdown table: the share of samples per bucket of a decode step, with the
functions that make it up. A bucket is the first rule below whose pattern the function name
contains; the rules name ggml's kernels as the vendored ggml (llama-cpp-sys-2 0.1.161,
ggml/src/ggml-cpu/) spells them.

    perf report ... | .venv/bin/python scripts/profile_buckets.py THREADS N_GEN
"""
import re
import sys
from collections import defaultdict

RULES = [
    ("mul_mat q8_0 (output projection, attn_v; widened q5_0 on x86-64)", ["vec_dot_q8_0", "gemv_q8_0", "gemm_q8_0", "ggml::gemv::"]),
    ("mul_mat q5_0 (attn_q/k, ffn_gate/up)", ["vec_dot_q5_0"]),
    ("mul_mat q4_K (attn_output)", ["vec_dot_q4_K", "gemv_q4_K", "gemm_q4_K"]),
    ("mul_mat q6_K (ffn_down)", ["vec_dot_q6_K"]),
    ("mul_mat f16/f32 (attention scores, KQV)", ["vec_dot_f16", "ggml_vec_dot_f32", "sgemm", "tinyBLAS", "vec_mad"]),
    ("activation quantisation (src1 to q8)", ["quantize_row_q8", "quantize_mat_q8", "from_float"]),
    ("mul_mat driver (row split, chunking)", ["compute_forward_mul_mat", "mul_mat_one_chunk"]),
    ("softmax", ["soft_max"]),
    ("rms_norm, mul, add, scale", ["rms_norm", "forward_mul", "forward_add", "forward_scale", "vec_mul", "vec_add",
                                    "vec_scale", "binary_op", "binbcast"]),
    ("rope", ["rope"]),
    ("gelu (ffn)", ["gelu", "geglu", "glu"]),
    ("get_rows, set_rows, cpy, cont (KV cache and views)", ["get_rows", "set_rows", "forward_dup", "forward_cpy",
                                                           "cpy_", "memcpy", "memmove", "forward_cont"]),
    ("thread synchronisation (OpenMP barriers, spins)", ["gomp_", "GOMP_", "ggml_barrier", "sched_yield", "futex",
                                                         "do_spin", "do_wait", "cpu_relax"]),
    ("graph build, allocation, scheduling", ["gallocr", "ggml_new_tensor", "ggml_graph", "ggml_visit", "hash",
                                             "gemma_gguf::session", "gemma_gguf::arch", "ggml_backend_",
                                             "ggml_build_forward", "kv_cache", "compute_forward", "ggml_view",
                                             "ggml_reshape", "ggml_permute", "ggml_mul_mat", "ggml_init"]),
    ("sampling, logits copy", ["sampler", "append_f32", "logits"]),
    ("kernel/page faults, loader", ["[k]", "page", "clear_page", "_dl_"]),
]

# "  44.02%  libgomp.so.1.0.0  [.] 0x000000000001f7da   -   -" (dso, then [.] user or [k] kernel)
LINE = re.compile(r"^\s*([0-9.]+)%\s+(\S+)\s+\[([.k])\]\s+(.*?)(\s+-\s+-)?\s*$")


def main():
    threads, n_gen = sys.argv[1], sys.argv[2]
    total = 0.0
    buckets = defaultdict(float)
    members = defaultdict(list)
    for line in sys.stdin:
        m = LINE.match(line)
        if not m:
            continue
        pct, dso, kernel, sym = float(m.group(1)), m.group(2), m.group(3) == "k", m.group(4)
        if sym.startswith("0x"):  # no symbol (a stripped library such as libgomp): its file
            sym = f"{dso} {sym}"
        total += pct
        name = "other"
        for bucket, pats in RULES:
            if any(p in sym for p in pats) or (kernel and "[k]" in pats) or ("libgomp" in dso and "gomp_" in pats):
                name = bucket
                break
        buckets[name] += pct
        members[name].append((pct, sym))
    print(f"Decode profile: `gemma bench -p 0 -n {n_gen} -t {threads}`, perf samples "
          f"({total:.1f}% of them in functions above the 0.05% cut-off)\n")
    print("| part of a decode step | share of time | largest functions |")
    print("|---|---:|---|")
    for name, pct in sorted(buckets.items(), key=lambda kv: -kv[1]):
        top = ", ".join(f"`{s[:48]}` {p:.1f}%" for p, s in sorted(members[name], reverse=True)[:3])
        print(f"| {name} | {pct:.1f}% | {top} |")


if __name__ == "__main__":
    main()
