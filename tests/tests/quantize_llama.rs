//! Our quantisation against llama.cpp's own (`llama_model_quantize` from libllama): the same
//! f32 GGUF in, the same type or mix asked for, and every tensor must come out with the same
//! type and the same bytes. The inputs are the tiny checkpoints converted to f32: Gemma 3
//! with rows of 256 (no fallbacks), Gemma 1 and 2 with rows of 64 (K-quants fall back).
use gemma_tests::llama_quantize::{compare_tensors, llama_quantize, QuantizeRequest};
use gemma_tests::workspace_root;
use gemma_tools::{convert_hf, requantize, ConvertOptions, OutType, RequantizeOptions, RunOptions};

/// (our name, llama_ftype, pure).
const CASES: [(&str, u32, bool); 9] = [
    ("q8_0", 7, false),
    ("q4_k_m", 15, false),
    ("q4_k_s", 14, false),
    ("q5_k_m", 17, false),
    ("q5_k_s", 16, false),
    ("q4_k", 15, true),
    ("q6_k", 18, true),
    // llama.cpp's Q4_0/Q5_0 file types give the tied embedding q6_k; ours are pure types.
    ("q4_0", 2, true),
    ("q5_0", 8, true),
];

fn check(arch: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let f32 = tmp.path().join("f32.gguf");
    let opts = ConvertOptions { out_type: OutType::parse("f32").unwrap(), ..ConvertOptions::default() };
    convert_hf(&workspace_root().join("tests/data/tiny").join(arch), &f32, &opts).unwrap();
    for (ty, ftype, pure) in CASES {
        let ours = tmp.path().join(format!("ours-{ty}.gguf"));
        let theirs = tmp.path().join(format!("llama-{ty}.gguf"));
        let o = RequantizeOptions {
            out_type: OutType::parse(ty).unwrap(),
            overrides: vec![],
            force: false,
            allow_requantize: false,
            run: RunOptions::default(),
        };
        let s = requantize(&f32, &ours, &o).unwrap();
        llama_quantize(&f32, &theirs, QuantizeRequest { ftype, pure, threads: 2 }).unwrap();
        let n = compare_tensors(&ours, &theirs);
        let mut types: Vec<&str> = s.tensors.iter().map(|t| t.ty.as_str()).collect();
        types.sort();
        types.dedup();
        println!("{arch} {ty:>7}: {n} tensors identical to llama_model_quantize (types {types:?})");
    }
}

#[test]
fn gemma3_blocks_match_llama_cpp() {
    check("gemma3");
}

#[test]
fn gemma2_blocks_match_llama_cpp() {
    check("gemma2");
}

#[test]
fn gemma_blocks_match_llama_cpp() {
    check("gemma");
}
