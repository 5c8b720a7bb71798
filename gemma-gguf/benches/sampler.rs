//! Sampling one token from 262 144 logits (Gemma's vocabulary): greedy, llama.cpp's default
//! chain (top-k 40, top-p 0.95, min-p 0.05, temperature 0.8), and the chains without top-k,
//! where top-p and min-p see the whole vocabulary.
use criterion::{criterion_group, criterion_main, Criterion};
use gemma_gguf::sampler::{Sampler, SamplerParams};

const N_VOCAB: usize = 262_144;

/// Logits shaped like a language model's: most near −5, a few dozen large (SplitMix64 noise).
fn logits() -> Vec<f32> {
    let mut s = 0x5eed_u64;
    let mut next = || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..N_VOCAB).map(|i| if i % 8191 == 0 { 10.0 + 10.0 * next() } else { -5.0 + 6.0 * next() }).collect()
}

fn sampler(c: &mut Criterion) {
    let logits = logits();
    let d = SamplerParams::default();
    let chains = [
        ("greedy", SamplerParams::greedy()),
        ("top_k40_top_p0.95_min_p0.05_temp0.8", d),
        ("top_p0.95_temp0.8", SamplerParams { top_k: 0, min_p: 0.0, ..d }),
        ("min_p0.05_temp0.8", SamplerParams { top_k: 0, top_p: 1.0, ..d }),
        ("top_k40_repeat_penalty1.1", SamplerParams { repeat_penalty: 1.1, ..d }),
    ];
    let mut g = c.benchmark_group("sample_262144");
    for (name, params) in chains {
        let mut s = Sampler::new(params).expect("valid parameters");
        for t in 0..64 {
            s.accept(t * 4001);
        }
        g.bench_function(name, |b| b.iter(|| s.sample(std::hint::black_box(&logits)).expect("sample")));
    }
    g.finish();
}

criterion_group!(benches, sampler);
criterion_main!(benches);
