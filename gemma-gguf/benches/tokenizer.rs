//! Tokenizer encode and decode of a 12 KB multilingual text (benches/data/multilingual.txt)
//! with the real model's 262 144-token vocabulary. Throughput is in bytes of text.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gemma_gguf::gguf::GgufFile;
use gemma_gguf::tokenizer::Tokenizer;

mod common;

fn tokenizer(c: &mut Criterion) {
    let Some(path) = common::real_model() else { return };
    let file = GgufFile::open(&path).expect("the model opens");
    let tok = Tokenizer::from_gguf(&file).expect("its tokenizer loads");
    let text = include_str!("data/multilingual.txt");
    let ids = tok.encode(text, true);
    eprintln!("{} bytes → {} tokens", text.len(), ids.len());
    let mut g = c.benchmark_group("tokenizer");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("encode_multilingual_12k", |b| b.iter(|| tok.encode(std::hint::black_box(text), true)));
    g.bench_function("decode_multilingual_12k", |b| b.iter(|| tok.decode(std::hint::black_box(&ids))));
    g.bench_function("decode_streaming_12k", |b| {
        b.iter(|| {
            let mut d = tok.decoder();
            let n: usize = ids.iter().map(|&id| d.push(id).len()).sum();
            n + d.finish().len()
        })
    });
    g.finish();
}

criterion_group!(benches, tokenizer);
criterion_main!(benches);
