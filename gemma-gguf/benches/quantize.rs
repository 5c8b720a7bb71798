//! Quantisation throughput (MB/s of f32 input) per type through ggml's quantiser
//! (`gemma_gguf::ggml::quantize_rows`, what the converter calls per row chunk, one thread):
//! 64 rows of 2048 weights (512 KiB of f32), a Gemma 3 1B `ffn_up`-sized chunk.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gemma_gguf::ggml::{quantize_rows, Type};

fn quantize(c: &mut Criterion) {
    const N_PER_ROW: usize = 2048;
    let mut s = 1_u64;
    let src: Vec<f32> = (0..64 * N_PER_ROW)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect();
    let mut g = c.benchmark_group("quantize_rows");
    g.throughput(Throughput::Bytes((src.len() * 4) as u64));
    for ty in [Type::F16, Type::BF16, Type::Q8_0, Type::Q6_K, Type::Q5_0, Type::Q5_K, Type::Q4_0, Type::Q4_K] {
        g.bench_function(ty.name(), |b| b.iter(|| quantize_rows(ty, std::hint::black_box(&src), N_PER_ROW).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, quantize);
criterion_main!(benches);
