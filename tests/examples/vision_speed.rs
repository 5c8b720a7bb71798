//! Encode time of one image on a Gemma-3-4B-shaped projector with random weights, ours
//! against libmtmd's, same file, same threads; and the largest difference of the two
//! embeddings (same kernels on an f16 file: expected 0).
//!
//! Shape: google/gemma-3-4b-it's vision config (SigLIP-So400m: 1152 wide, 4304 FFN, 27 layers,
//! 16 heads, 896 px, patch 14 → 4096 patches, pooled 4×4 to 256 tokens) and its text width
//! 2560; f16 matrices as `gemma convert --mmproj` writes them. libmtmd needs a language model
//! of that width: a 1-layer random one (tests/src/tiny_model.rs).
//!
//!     cargo run --release -p gemma-tests --example vision_speed -- [THREADS] [ROUNDS]
use gemma_gguf::ggml::{quantize_rows, Type};
use gemma_gguf::gguf::{GgmlType, GgufArray, GgufValue, GgufWriter};
use gemma_gguf::vision::encoder::VisionModel;
use gemma_gguf::vision::names::{key, tensor as tn, ARCH, PROJECTOR_GEMMA3};
use gemma_gguf::vision::preprocess::{pixel_tensor, RgbImage};
use gemma_tests::mtmd_ref::Mtmd;
use gemma_tests::tiny_model::{TinyConfig, TinyModel};
use gemma_tests::vision_golden::max_diff;
use std::time::Instant;

const E: u64 = 1152;
const FF: u64 = 4304;
const LAYERS: usize = 27;
const IMAGE: u32 = 896;
const PATCH: u64 = 14;
const TEXT: u64 = 2560;

/// xorshift values in ±scale.
struct Rng(u64);
impl Rng {
    fn next(&mut self, scale: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
}

fn write_projector(path: &std::path::Path) {
    let mut w = GgufWriter::create(path).unwrap();
    let u = |v: u64| GgufValue::U32(v as u32);
    let kvs: Vec<(&str, GgufValue)> = vec![
        ("general.architecture", GgufValue::String(ARCH.into())),
        (key::HAS_VISION_ENCODER, GgufValue::Bool(true)),
        (key::PROJECTOR_TYPE, GgufValue::String(PROJECTOR_GEMMA3.into())),
        (key::USE_GELU, GgufValue::Bool(true)),
        (key::EMBEDDING_LENGTH, u(E)),
        (key::FEED_FORWARD_LENGTH, u(FF)),
        (key::BLOCK_COUNT, u(LAYERS as u64)),
        (key::PROJECTION_DIM, u(TEXT)),
        (key::HEAD_COUNT, u(16)),
        (key::LAYER_NORM_EPS, GgufValue::F32(1e-6)),
        (key::IMAGE_SIZE, u(IMAGE as u64)),
        (key::PATCH_SIZE, u(PATCH)),
        (key::IMAGE_MEAN, GgufValue::Array(GgufArray::F32(vec![0.5; 3]))),
        (key::IMAGE_STD, GgufValue::Array(GgufArray::F32(vec![0.5; 3]))),
    ];
    for (k, v) in kvs {
        w.add_kv(k, v).unwrap();
    }
    let n_pos = (IMAGE as u64 / PATCH).pow(2);
    // (name, dims, f16?, value: None = random, Some(c) = constant)
    let mut t: Vec<(String, Vec<u64>, bool, Option<f32>)> = vec![
        (tn::PATCH_EMBD.into(), vec![PATCH, PATCH, 3, E], true, None),
        (tn::PATCH_BIAS.into(), vec![E], false, None),
        (tn::POSITION_EMBD.into(), vec![E, n_pos], false, None),
    ];
    for il in 0..LAYERS {
        for (role, ne) in [
            (tn::LN1, vec![E]),
            (tn::ATTN_Q, vec![E, E]),
            (tn::ATTN_K, vec![E, E]),
            (tn::ATTN_V, vec![E, E]),
            (tn::ATTN_OUT, vec![E, E]),
            (tn::LN2, vec![E]),
            (tn::FFN_UP, vec![E, FF]),
            (tn::FFN_DOWN, vec![FF, E]),
        ] {
            let is_norm = ne.len() == 1;
            let bias = if is_norm { E } else { ne[1] };
            t.push((tn::block(il, role, "weight"), ne, !is_norm, is_norm.then_some(1.0)));
            t.push((tn::block(il, role, "bias"), vec![bias], false, None));
        }
    }
    t.push((format!("{}.weight", tn::POST_LN), vec![E], false, Some(1.0)));
    t.push((format!("{}.bias", tn::POST_LN), vec![E], false, Some(0.0)));
    t.push((tn::MM_SOFT_EMB_NORM.into(), vec![E], false, Some(1.0)));
    t.push((tn::MM_INPUT_PROJECTION.into(), vec![TEXT, E], true, None));
    for (name, dims, f16, _) in &t {
        w.add_tensor_info(name, dims, if *f16 { GgmlType::F16 } else { GgmlType::F32 }).unwrap();
    }
    let mut rng = Rng(0x5eed_1234_5678_9abc);
    for (name, dims, f16, c) in &t {
        let n: u64 = dims.iter().product();
        let scale = 1.0 / (dims[0] as f32).sqrt();
        let v: Vec<f32> = (0..n).map(|_| c.unwrap_or_else(|| rng.next(scale))).collect();
        let ty = if *f16 { Type::F16 } else { Type::F32 };
        w.write_tensor_data(name, &quantize_rows(ty, &v, dims[0] as usize).unwrap()).unwrap();
    }
    w.finish().unwrap();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map_or(2, |s| s.parse().expect("THREADS"));
    let rounds: usize = args.next().map_or(2, |s| s.parse().expect("ROUNDS"));
    let tmp = tempfile::tempdir().unwrap();
    let mmproj = tmp.path().join("mmproj-4b-shaped.gguf");
    let lm = tmp.path().join("lm-2560.gguf");
    let t0 = Instant::now();
    write_projector(&mmproj);
    let cfg = TinyConfig {
        n_layer: 1,
        n_embd: TEXT as u32,
        n_head: 2,
        n_head_kv: 1,
        head_dim: 32,
        n_ff: 64,
        ..Default::default()
    };
    TinyModel::new(cfg).write(&lm).unwrap();
    println!("files written in {:.1} s", t0.elapsed().as_secs_f64());

    let mut rng = Rng(42);
    let data: Vec<u8> = (0..IMAGE * IMAGE * 3).map(|_| (rng.next(1.0).abs() * 255.0) as u8).collect();
    let img = RgbImage { width: IMAGE, height: IMAGE, data };

    let mut ours = VisionModel::load(&mmproj, Some(threads)).unwrap();
    ours.flash_attn = false; // as libmtmd's below (tests/src/mtmd_ref.rs: -fa off)
    let mtmd = Mtmd::load(&lm, &mmproj, threads as i32, false).unwrap();
    let pixels = pixel_tensor(&img, &ours.hp.pixels);
    let (mut t_ours, mut t_ref, mut e_ours, mut e_ref) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Alternating rounds, so a busy machine slows both alike.
    for round in 0..rounds {
        let t = Instant::now();
        e_ours = ours.encode(&pixels).unwrap();
        t_ours.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        e_ref = mtmd.encode(img.width, img.height, &img.data).unwrap();
        t_ref.push(t.elapsed().as_secs_f64());
        println!("round {round}: ours {:.2} s, libmtmd {:.2} s", t_ours[round], t_ref[round]);
    }
    let ours_rows: Vec<Vec<f32>> = e_ours.chunks(TEXT as usize).map(|r| r.to_vec()).collect();
    let (d, s) = max_diff(&ours_rows, &e_ref);
    let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    println!("threads {threads}, rounds {rounds}: ours {t_ours:.2?} s, libmtmd {t_ref:.2?} s (libmtmd's includes its preprocessing)");
    println!(
        "best: ours {:.2} s, libmtmd {:.2} s, ratio ours/libmtmd {:.3}; {} tokens; max|Δ| {d:.3e} of max {s:.3}",
        best(&t_ours),
        best(&t_ref),
        best(&t_ours) / best(&t_ref),
        ours_rows.len()
    );
}
