//! Opening a GGUF file and parsing its metadata (tensor data is mapped, not read): the real
//! 270M model when present, and always a generated file with a 262 144-string vocabulary,
//! scores and token types (the bulk of a Gemma header) and 300 tensor infos.
use criterion::{criterion_group, criterion_main, Criterion};
use gemma_gguf::gguf::{GgmlType, GgufFile, GgufWriter};

mod common;

fn synthetic(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("vocab.gguf");
    let mut w = GgufWriter::create(&path).expect("create");
    let n = 262_144;
    w.add_kv("general.architecture", "gemma3").unwrap();
    let tokens: Vec<String> = (0..n).map(|i| format!("▁tok{i:x}")).collect();
    w.add_kv("tokenizer.ggml.tokens", tokens).unwrap();
    w.add_kv("tokenizer.ggml.scores", (0..n).map(|i| -(i as f32)).collect::<Vec<f32>>()).unwrap();
    w.add_kv("tokenizer.ggml.token_type", vec![1_i32; n]).unwrap();
    for i in 0..300 {
        w.add_tensor_info(&format!("blk.{}.t{}.weight", i / 12, i % 12), &[32], GgmlType::F32).unwrap();
    }
    for i in 0..300 {
        w.write_tensor_data(&format!("blk.{}.t{}.weight", i / 12, i % 12), &[0u8; 128]).unwrap();
    }
    w.finish().expect("finish")
}

fn gguf_open(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = synthetic(dir.path());
    let mut g = c.benchmark_group("gguf_open");
    g.sample_size(20);
    g.bench_function("synthetic_262144_vocab", |b| b.iter(|| GgufFile::open(&path).expect("open")));
    if let Some(real) = common::real_model() {
        g.bench_function("gemma3_270m_q4_k_m", |b| b.iter(|| GgufFile::open(&real).expect("open")));
    }
    g.finish();
}

criterion_group!(benches, gguf_open);
criterion_main!(benches);
