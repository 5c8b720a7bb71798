//! The safe ggml layer against plain-Rust references, on the CPU backend.
//!
//! Each test prints its maximum error and the bound it is held to. Bounds come from the number
//! formats involved (how much rounding the inputs go through), not from our own output.
#![cfg(feature = "ggml")]

use gemma_gguf::ggml::{dequantize_rows, quantize_rows, Backend, Context, Device, Rope, Type};
use gemma_gguf::Error;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

fn cpu() -> Backend {
    let b = Backend::cpu().expect("CPU backend");
    b.set_n_threads(2).expect("threads");
    b
}

/// Computes `x · Wᵀ` through ggml with `w` quantised to `ty`, and in f64 from the dequantised
/// weights. Returns (ggml result, reference, per-output error bound).
fn mul_mat_case(
    backend: &Backend,
    ty: Type,
    k: usize,
    m: usize,
    n: usize,
    seed: u64,
) -> (Vec<f32>, Vec<f64>, Vec<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let w = random(&mut rng, k * m, 1.0);
    let x = random(&mut rng, k * n, 1.0);
    let q = quantize_rows(ty, &w, k).expect("quantize");
    let wd = dequantize_rows(ty, &q, k).expect("dequantize");

    let ctx = Context::new(8, 16).unwrap();
    let tw = ctx.new_tensor(ty, &[k as i64, m as i64]).unwrap();
    let tx = ctx.new_tensor(Type::F32, &[k as i64, n as i64]).unwrap();
    let ty_ = ctx.mul_mat(tw, tx).unwrap();
    ctx.alloc_tensors(backend).unwrap();
    tw.set_bytes(&q).unwrap();
    tx.set_f32(&x).unwrap();
    let mut g = ctx.new_graph(16).unwrap();
    g.expand(ty_).unwrap();
    backend.compute(&g).unwrap();
    let got = ty_.get_f32().unwrap();
    assert_eq!(ty_.ne(), [m as i64, n as i64, 1, 1]);

    // ggml's CPU kernels first convert the activations to the weight type's `vec_dot_type`:
    // Q8_0 (blocks of 32, scale amax/127) for Q4_0/Q5_0/Q8_0, Q8_K (blocks of 256, scale
    // amax/127) for k-quants, F16 for F16 weights. Each activation then carries a rounding
    // error of at most half a step: amax/254 for the 8-bit forms, |x|·2⁻¹¹ for f16. The
    // dot product's error is bounded by Σ|w_i|·|δx_i|, plus f32 accumulation (k·2⁻²⁴·Σ|w x|).
    let block = if ty == Type::F16 {
        1
    } else if ty.block_size() == 256 {
        256
    } else {
        32
    };
    let mut want = vec![0f64; m * n];
    let mut bound = vec![0f64; m * n];
    for j in 0..n {
        let xr = &x[j * k..(j + 1) * k];
        for i in 0..m {
            let wr = &wd[i * k..(i + 1) * k];
            let (mut dot, mut err, mut mag) = (0f64, 0f64, 0f64);
            for (wb, xb) in wr.chunks(block).zip(xr.chunks(block)) {
                let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
                for (wv, xv) in wb.iter().zip(xb) {
                    let (wv, xv) = (*wv as f64, *xv as f64);
                    dot += wv * xv;
                    mag += (wv * xv).abs();
                    err += wv.abs() * if ty == Type::F16 { xv.abs() * 2f64.powi(-11) } else { amax / 254.0 * 1.01 };
                }
            }
            want[j * m + i] = dot;
            bound[j * m + i] = err + mag * k as f64 * 2f64.powi(-24) + 1e-6;
        }
    }
    (got, want, bound)
}

#[test]
fn mul_mat_quantised_weights_match_dequantised_reference() {
    // Which kernels this build has (scripts/cross-aarch64.sh shows it for each Arm profile).
    let features = gemma_gguf::ggml::backend_features(cpu().device());
    let listed: Vec<String> = features.iter().map(|f| format!("{}={}", f.name, f.value)).collect();
    println!("ggml CPU backend features: {}", listed.join(" "));
    for (ty, seed) in [(Type::Q4_K, 1), (Type::Q8_0, 2), (Type::Q6_K, 3), (Type::Q5_0, 4), (Type::F16, 5)] {
        let (got, want, bound) = mul_mat_case(&cpu(), ty, 512, 48, 7, seed);
        let (mut max_err, mut worst_ratio) = (0f64, 0f64);
        for ((g, w), b) in got.iter().zip(&want).zip(&bound) {
            let e = (*g as f64 - w).abs();
            max_err = max_err.max(e);
            worst_ratio = worst_ratio.max(e / b);
        }
        println!("mul_mat {ty:>5}: max abs err = {max_err:.3e}, worst err/bound = {worst_ratio:.3}");
        assert!(worst_ratio <= 1.0, "{ty}: error exceeds the rounding bound (ratio {worst_ratio})");
    }
}

/// A quantised mul_mat big enough to reach every CPU kernel path ggml has for it (the
/// chunked, multi-threaded matrix kernels, and AMX where compiled): on VMs that report AMX
/// without granting it a `-march=native` build dies here with SIGILL.
#[test]
fn large_quantised_mul_mat_runs() {
    let (got, want, bound) = mul_mat_case(&cpu(), Type::Q4_K, 2048, 1024, 64, 9);
    let worst = got.iter().zip(&want).zip(&bound).map(|((g, w), b)| (*g as f64 - w).abs() / b).fold(0f64, f64::max);
    println!("large Q4_K mul_mat 2048x1024 · 2048x64: worst err/bound = {worst:.3}");
    assert!(worst <= 1.0);
}

/// Runs a one-input, one-output graph built by `build` on the CPU backend, allocating the
/// graph with a graph allocator (the path the runtime uses).
fn run_unary(
    dims: &[i64],
    input: &[f32],
    build: impl for<'c> Fn(&'c Context, gemma_gguf::ggml::Tensor<'c>) -> gemma_gguf::ggml::Tensor<'c>,
) -> Vec<f32> {
    let backend = cpu();
    let ctx = Context::new(16, 32).unwrap();
    let x = ctx.new_tensor(Type::F32, dims).unwrap().set_input();
    let y = build(&ctx, x).set_output();
    let mut g = ctx.new_graph(32).unwrap();
    g.expand(y).unwrap();
    ctx.alloc_graph(&g, &backend).unwrap();
    x.set_f32(input).unwrap();
    backend.compute(&g).unwrap();
    y.get_f32().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max)
}

#[test]
fn rms_norm_matches_reference() {
    let (n, rows, eps) = (640usize, 5usize, 1e-6f32);
    let x = random(&mut StdRng::seed_from_u64(11), n * rows, 3.0);
    let got = run_unary(&[n as i64, rows as i64], &x, |ctx, t| ctx.rms_norm(t, eps).unwrap());
    let mut want = Vec::new();
    for r in x.chunks(n) {
        let ms = r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n as f64;
        want.extend(r.iter().map(|v| *v as f64 / (ms + eps as f64).sqrt()));
    }
    let err = max_abs_diff(&got, &want);
    // f32 sum of 640 squares, then a scale: a few ulps of values up to ~1.7/√(1/3).
    let bound = 1e-5;
    println!("rms_norm: max abs err = {err:.3e} (bound {bound:.0e})");
    assert!(err <= bound);
}

#[test]
fn rope_neox_matches_reference() {
    let (head_dim, n_head, n_tok) = (64usize, 3usize, 9usize);
    let base = 10_000f32;
    let x = random(&mut StdRng::seed_from_u64(12), head_dim * n_head * n_tok, 1.0);
    let positions: Vec<i32> = (0..n_tok as i32).map(|p| p * 37 + 5).collect();

    let backend = cpu();
    let ctx = Context::new(8, 16).unwrap();
    let t = ctx.new_tensor(Type::F32, &[head_dim as i64, n_head as i64, n_tok as i64]).unwrap();
    let pos = ctx.new_tensor(Type::I32, &[n_tok as i64]).unwrap();
    let rope = Rope { n_dims: head_dim as i32, neox: true, freq_base: base, freq_scale: 1.0, n_ctx_orig: 0 };
    let y = ctx.rope(t, pos, rope).unwrap();
    ctx.alloc_tensors(&backend).unwrap();
    t.set_f32(&x).unwrap();
    pos.set_i32(&positions).unwrap();
    let mut g = ctx.new_graph(16).unwrap();
    g.expand(y).unwrap();
    backend.compute(&g).unwrap();
    let got = y.get_f32().unwrap();

    // NEOX: element i pairs with i + d/2; angle = pos · base^(−2i/d).
    let half = head_dim / 2;
    let mut want = vec![0f64; x.len()];
    for (tok, &p) in positions.iter().enumerate() {
        for h in 0..n_head {
            let o = (tok * n_head + h) * head_dim;
            for i in 0..half {
                let theta = p as f64 * (base as f64).powf(-2.0 * i as f64 / head_dim as f64);
                let (x0, x1) = (x[o + i] as f64, x[o + i + half] as f64);
                want[o + i] = x0 * theta.cos() - x1 * theta.sin();
                want[o + i + half] = x0 * theta.sin() + x1 * theta.cos();
            }
        }
    }
    let err = max_abs_diff(&got, &want);
    // ggml computes θ in f32 by repeated multiplication: at positions up to ~300 the angle
    // carries an absolute error of a few 1e-5 rad.
    let bound = 1e-4;
    println!("rope neox: max abs err = {err:.3e} (bound {bound:.0e})");
    assert!(err <= bound);
}

#[test]
fn soft_max_with_causal_mask_matches_reference() {
    let (n_kv, n_q, n_head) = (12usize, 12usize, 2usize);
    let scale = 0.125f32;
    let x = random(&mut StdRng::seed_from_u64(13), n_kv * n_q * n_head, 4.0);
    let mask: Vec<f32> =
        (0..n_q).flat_map(|q| (0..n_kv).map(move |k| if k <= q { 0.0 } else { f32::NEG_INFINITY })).collect();

    let backend = cpu();
    let ctx = Context::new(8, 16).unwrap();
    let t = ctx.new_tensor(Type::F32, &[n_kv as i64, n_q as i64, n_head as i64]).unwrap();
    let m = ctx.new_tensor(Type::F32, &[n_kv as i64, n_q as i64]).unwrap();
    let y = ctx.soft_max_ext(t, Some(m), scale).unwrap();
    ctx.alloc_tensors(&backend).unwrap();
    t.set_f32(&x).unwrap();
    m.set_f32(&mask).unwrap();
    let mut g = ctx.new_graph(16).unwrap();
    g.expand(y).unwrap();
    backend.compute(&g).unwrap();
    let got = y.get_f32().unwrap();

    let mut want = Vec::new();
    for (r, row) in x.chunks(n_kv).enumerate() {
        let q = r % n_q;
        let z: Vec<f64> = row
            .iter()
            .enumerate()
            .map(|(k, v)| if k <= q { *v as f64 * scale as f64 } else { f64::NEG_INFINITY })
            .collect();
        let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|v| (v - mx).exp()).sum();
        want.extend(z.iter().map(|v| (v - mx).exp() / s));
    }
    let err = max_abs_diff(&got, &want);
    let masked_nonzero = got.iter().zip(&want).filter(|(g, w)| **w == 0.0 && **g != 0.0).count();
    let bound = 1e-6;
    println!("soft_max causal: max abs err = {err:.3e} (bound {bound:.0e}), masked entries non-zero: {masked_nonzero}");
    assert!(err <= bound && masked_nonzero == 0);
}

#[test]
fn gelu_tanh_matches_reference() {
    let x: Vec<f32> = (0..4096).map(|i| (i as f32 - 2048.0) / 256.0).collect();
    let got = run_unary(&[x.len() as i64], &x, |ctx, t| ctx.gelu(t).unwrap());
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let want: Vec<f64> = x
        .iter()
        .map(|&v| {
            let v = v as f64;
            0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
        })
        .collect();
    // ggml's CPU GELU may go through an f16 table: the input is rounded to f16 (relative
    // 2⁻¹¹; GELU's slope is at most 1.13) and so is the output (relative 2⁻¹¹).
    let (mut worst, mut max_err) = (0f64, 0f64);
    for ((g, w), v) in got.iter().zip(&want).zip(&x) {
        let bound = 1.13 * (*v as f64).abs() * 2f64.powi(-11) + w.abs() * 2f64.powi(-11) + 1e-6;
        let e = (*g as f64 - w).abs();
        max_err = max_err.max(e);
        worst = worst.max(e / bound);
    }
    println!("gelu tanh: max abs err = {max_err:.3e}, worst err/bound = {worst:.3}");
    assert!(worst <= 1.0);
}

#[test]
fn incompatible_mul_mat_is_an_error() {
    let ctx = Context::new(4, 0).unwrap();
    let a = ctx.new_tensor(Type::F32, &[64, 8]).unwrap();
    let b = ctx.new_tensor(Type::F32, &[32, 8]).unwrap();
    let e = ctx.mul_mat(a, b).err().expect("must fail");
    println!("{e}");
    assert!(matches!(e, Error::Shape { op: "mul_mat", .. }));
    let c = ctx.new_tensor(Type::F32, &[64, 8, 3]).unwrap();
    let d = ctx.new_tensor(Type::F32, &[64, 8, 2]).unwrap();
    assert!(matches!(ctx.mul_mat(c, d), Err(Error::Shape { .. })));
}

#[test]
fn long_tensor_name_is_an_error() {
    let ctx = Context::new(2, 0).unwrap();
    let t = ctx.new_tensor(Type::F32, &[4]).unwrap();
    let name = "x".repeat(64);
    assert!(matches!(t.set_name(&name), Err(Error::NameTooLong { len: 64, .. })));
    assert!(matches!(t.set_name("a\0b"), Err(Error::NameHasNul { .. })));
    t.set_name(&"y".repeat(63)).unwrap();
    assert_eq!(t.name(), "y".repeat(63));
}

#[test]
fn unsupported_types_are_errors() {
    for id in [4u32, 5, 31, 200, u32::MAX] {
        assert!(matches!(Type::from_id(id), Err(Error::UnsupportedType { .. })), "type {id}");
    }
    // Q4_K rows must be a multiple of 256.
    let ctx = Context::new(2, 0).unwrap();
    assert!(matches!(ctx.new_tensor(Type::Q4_K, &[640, 2]), Err(Error::RowNotBlockMultiple { .. })));
    assert!(matches!(quantize_rows(Type::Q4_K, &[0.0; 640], 640), Err(Error::RowNotBlockMultiple { .. })));
    // Integer types have no quantiser in ggml (ggml_quantize_chunk would abort).
    for id in [24u32, 25, 26, 27, 28] {
        let t = Type::from_id(id).unwrap();
        assert!(matches!(quantize_rows(t, &[0.0; 32], 32), Err(Error::TypeNotUsable { .. })), "{t}");
    }
    // IQ2_XXS needs an importance matrix: refused instead of aborting inside ggml.
    let iq2 = Type::from_id(16).unwrap();
    assert!(matches!(quantize_rows(iq2, &[0.0; 256], 256), Err(Error::TypeNotUsable { .. })));
}

#[test]
fn misuse_is_an_error_not_an_abort() {
    let backend = cpu();
    let ctx = Context::new(3, 4).unwrap();
    let a = ctx.new_tensor(Type::F32, &[8]).unwrap();
    // Not allocated yet: reading, writing and computing are refused.
    assert!(matches!(a.set_f32(&[0.0; 8]), Err(Error::NotAllocated { .. })));
    let b = ctx.scale(a, 2.0).unwrap();
    let mut g = ctx.new_graph(4).unwrap();
    g.expand(b).unwrap();
    assert!(matches!(backend.compute(&g), Err(Error::NotAllocated { .. })));
    // The context's pool is full after its three tensors.
    let _c = ctx.new_tensor(Type::F32, &[8]).unwrap();
    assert!(matches!(ctx.new_tensor(Type::F32, &[8]), Err(Error::ContextFull { .. })));
    ctx.alloc_tensors(&backend).unwrap();
    assert!(matches!(a.set_f32(&[0.0; 7]), Err(Error::Length { .. })));
    assert!(matches!(a.set_i32(&[0; 8]), Err(Error::WrongTensorType { .. })));
    assert!(matches!(backend.set_n_threads(0), Err(Error::OutOfRange { .. })));
    assert!(matches!(ctx.new_tensor(Type::F32, &[8, 0]), Err(Error::BadDims { .. })));
    assert!(matches!(ctx.new_tensor(Type::F32, &[1, 1, 1, 1, 1]), Err(Error::BadDims { .. })));
}

/// Operands ggml's CPU kernels have no code for are refused when the op is built, not
/// discovered by a crash in the kernel.
#[test]
fn unusable_operand_types_are_errors() {
    let ctx = Context::new(8, 0).unwrap();
    let w_i32 = ctx.new_tensor(Type::I32, &[32, 4]).unwrap();
    let x = ctx.new_tensor(Type::F32, &[32, 2]).unwrap();
    assert!(matches!(ctx.mul_mat(w_i32, x), Err(Error::WrongTensorType { .. })));
    let w_q8 = ctx.new_tensor(Type::Q8_0, &[32, 4]).unwrap();
    assert!(matches!(ctx.mul_mat(x, w_q8), Err(Error::WrongTensorType { .. })), "quantised second operand");
    let norm_q8 = ctx.new_tensor(Type::Q8_0, &[32]).unwrap();
    assert!(matches!(ctx.mul(x, norm_q8), Err(Error::WrongTensorType { .. })));
    assert!(ctx.mul_mat(w_q8, x).is_ok());
}

#[test]
fn full_graph_is_an_error() {
    let ctx = Context::new(16, 4).unwrap();
    let mut t = ctx.new_tensor(Type::F32, &[4]).unwrap();
    for _ in 0..6 {
        t = ctx.scale(t, 1.0).unwrap();
    }
    let mut g = ctx.new_graph(4).unwrap();
    assert!(matches!(g.expand(t), Err(Error::GraphFull { capacity: 4 })));
}

#[test]
fn quantise_round_trip_is_close() {
    let x = random(&mut StdRng::seed_from_u64(21), 256 * 4, 1.0);
    for ty in [Type::Q8_0, Type::Q6_K, Type::Q4_K, Type::Q5_0, Type::F16, Type::BF16, Type::F32] {
        let q = quantize_rows(ty, &x, 256).unwrap();
        assert_eq!(q.len(), 4 * ty.row_size(256).unwrap());
        let y = dequantize_rows(ty, &q, 256).unwrap();
        let err = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        // Half a quantisation step of the type's grid at amax 1.0: 8-bit ~1/254, 6-bit ~1/64,
        // 5-bit ~1/32, 4-bit ~1/16 (k-quant sub-block scales add at most as much again).
        let bound = match ty.bits_per_weight() {
            b if b >= 16.0 => 1.0 / 256.0,
            b if b >= 8.0 => 1.0 / 127.0,
            b if b >= 6.0 => 1.0 / 31.0,
            b if b >= 5.0 => 1.0 / 15.0,
            _ => 1.0 / 7.0,
        };
        println!("{ty:>5} ({:.2} bpw): max round-trip err {err:.3e} (bound {bound:.3e})", ty.bits_per_weight());
        assert!(err <= bound);
    }
}

/// The same quantised product on every device this build has (CPU always; Vulkan or CUDA
/// devices when built in), against the dequantised reference: one code path for all.
#[test]
fn mul_mat_on_every_device() {
    for dev in Device::all() {
        let (got, want, bound) = mul_mat_case(&Backend::new(dev).unwrap(), Type::Q8_0, 256, 32, 4, 31);
        let worst = got.iter().zip(&want).zip(&bound).map(|((g, w), b)| (*g as f64 - w).abs() / b).fold(0f64, f64::max);
        println!("{:>10} ({}): worst err/bound {worst:.3}", dev.name(), dev.description());
        assert!(worst <= 1.0);
    }
}

/// `Context::spread` cuts a one-row tensor into rows of 1024 for elementwise ops and gives the
/// result back in the input's shape with the same values, bit for bit (the ops are
/// elementwise); a shape it cannot cut (length not a multiple of 1024) runs as it is. The
/// soft-cap `c·tanh(x/c)` and the fused GEGLU are the ops the runtime spreads.
#[test]
fn spread_keeps_elementwise_values() {
    let mut rng = StdRng::seed_from_u64(7);
    for n in [262_144usize, 6144, 1000] {
        let x = random(&mut rng, n, 40.0);
        let softcap = |spread: bool| {
            run_unary(&[n as i64, 1], &x, move |c, t| {
                let y = if spread {
                    c.spread([t], |[t]| c.tanh(c.scale(t, 1.0 / 30.0)?)).unwrap()
                } else {
                    c.tanh(c.scale(t, 1.0 / 30.0).unwrap()).unwrap()
                };
                assert_eq!(y.ne(), [n as i64, 1, 1, 1]);
                c.scale(y, 30.0).unwrap()
            })
        };
        let (plain, spread) = (softcap(false), softcap(true));
        let differ = plain.iter().zip(&spread).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        println!("soft-cap of {n} values, spread against one row: {differ} values differ in any bit");
        assert_eq!(differ, 0);
        // GEGLU: two inputs of one shape.
        let geglu = |spread: bool| {
            run_unary(&[n as i64, 1], &x, move |c, t| {
                let up = c.scale(t, 0.5).unwrap();
                if spread {
                    c.spread([t, up], |[g, u]| c.geglu_split(g, u)).unwrap()
                } else {
                    c.geglu_split(t, up).unwrap()
                }
            })
        };
        let (plain, spread) = (geglu(false), geglu(true));
        assert_eq!(plain.len(), n);
        let differ = plain.iter().zip(&spread).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        println!("GEGLU of {n} values, spread against one row: {differ} values differ in any bit");
        assert_eq!(differ, 0);
    }
}
