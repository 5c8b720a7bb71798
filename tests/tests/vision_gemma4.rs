//! Gemma 4's vision tower: `gemma convert --mmproj` on the tiny random
//! `Gemma4ForConditionalGeneration` (tests/data/tiny/gemma4-vision,
//! scripts/make_tiny_gemma4_vision.py) writes llama.cpp's `gemma4v` projector file, which
//! libmtmd loads beside the converted text model; its image embeddings are compared with
//! transformers' `get_image_features` on the same pixels.
//!
//! The two images have 240×168 and 168×240 pixels: multiples of patch × kernel (24) with 70
//! soft tokens, which neither transformers' processor (max_soft_tokens 70) nor libmtmd's
//! dynamic-size preprocessor (70..1120 tokens, aligned sizes kept) resizes, so both encode the
//! same pixel values.
//!
//! Bound: 16 units of 2^-11 of the largest value, as tests/tests/vision_encoder.rs (ggml's GELU
//! goes through an f16 table, and f16 files round the weights to f16).
use gemma_gguf::gguf::{GgufFile, GgufValue};
use gemma_gguf::vision::gemma4::Gemma4VisionModel;
use gemma_gguf::vision::names::{key as k, tensor as tn};
use gemma_gguf::vision::preprocess::{
    decode, gemma4_target_size, pixel_tensor, preprocess_gemma4, PixelSpec, MAX_IMAGE_PIXELS,
};
use gemma_tests::mtmd_ref::Mtmd;
use gemma_tests::vision_golden::{max_diff, read_f32};
use gemma_tests::workspace_root;
use gemma_tools::{convert_hf, convert_mmproj, ConvertOptions, MmprojOptions, OutType};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    workspace_root().join("tests/data/tiny/gemma4-vision")
}

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("golden.json")).unwrap()).unwrap()
}

/// (image path, transformers' embeddings `[n_tok][n_embd_text]`).
fn embd_golden() -> Vec<(PathBuf, Vec<Vec<f32>>)> {
    embd_golden_from("embd.f32")
}

/// [`embd_golden`] from `file` (`embd-gelu-f16.f32`: transformers with ggml's f16 GELU table).
fn embd_golden_from(file: &str) -> Vec<(PathBuf, Vec<Vec<f32>>)> {
    let g = golden();
    let shape: Vec<usize> = g["embd_shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let all = read_f32(&dir().join(file));
    assert_eq!(all.len(), shape.iter().product::<usize>());
    let per = shape[1] * shape[2];
    g["embd_images"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let rows = all[i * per..(i + 1) * per].chunks(shape[2]).map(|r| r.to_vec()).collect();
            (dir().join("images").join(name.as_str().unwrap()), rows)
        })
        .collect()
}

fn convert_pair(tmp: &Path, ty: &str, src: &Path) -> (PathBuf, PathBuf) {
    let lm = tmp.join("model.gguf");
    if !lm.exists() {
        let opts = ConvertOptions { out_type: OutType::parse("f32").unwrap(), ..ConvertOptions::default() };
        convert_hf(src, &lm, &opts).unwrap();
    }
    let mm = tmp.join(format!("mmproj-{ty}.gguf"));
    if !mm.exists() {
        let o = MmprojOptions { ty: OutType::parse(ty).unwrap(), ..Default::default() };
        convert_mmproj(src, &mm, &o).unwrap();
    }
    (lm, mm)
}

#[test]
fn projector_file_has_llama_cpp_keys_and_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, mm) = convert_pair(tmp.path(), "f16", &dir());
    let f = GgufFile::read(&mm).unwrap();
    let get = |key: &str| f.metadata().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
    assert_eq!(get(k::PROJECTOR_TYPE), Some(GgufValue::String("gemma4v".into())));
    assert_eq!(get(k::PROJ_SCALE_FACTOR), Some(GgufValue::U32(3)));
    assert_eq!(get(k::PROJECTION_DIM), Some(GgufValue::U32(256)));
    let t = |name: &str| f.tensors().iter().find(|t| t.name == name).map(|t| t.dims.clone());
    assert_eq!(t(tn::PATCH_EMBD), Some(vec![8, 8, 3, 64]));
    assert_eq!(t(tn::POSITION_EMBD), Some(vec![64, 64, 2]));
    assert_eq!(t(tn::MM_INPUT_PROJECTION), Some(vec![64, 256]));
    assert_eq!(t("v.blk.1.attn_q_norm.weight"), Some(vec![16]));
    assert_eq!(t("v.blk.1.ffn_gate.weight"), Some(vec![64, 128]));
    assert_eq!(t("v.blk.0.ffn_down.output_max"), Some(vec![1]));
    assert_eq!(t(tn::STD_SCALE), Some(vec![64]));
    // 2 + 2 × (7 linears × 5 + 6 norms) + 2 + 1
    assert_eq!(f.tensors().len(), 2 + 2 * (7 * 5 + 6) + 2 + 1);
}

/// libmtmd on our projector file against transformers, for f32 and f16 files, and for the
/// checkpoint with its tensors renamed to the bare `vision_tower.`/`embed_vision.` prefixes.
#[test]
fn libmtmd_embeddings_match_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let bound = 16.0 * 2f64.powi(-11);
    let mut failures = Vec::new();
    for ty in ["f32", "f16"] {
        let (lm, mm) = convert_pair(tmp.path(), ty, &dir());
        let mtmd = Mtmd::load(&lm, &mm, 2, false).unwrap();
        assert_eq!(mtmd.n_embd(), 256);
        for (image, want) in embd_golden() {
            let img = decode(&std::fs::read(&image).unwrap(), MAX_IMAGE_PIXELS).unwrap();
            let got = mtmd.encode(img.width, img.height, &img.data).unwrap();
            assert_eq!(got.len(), want.len(), "70 soft tokens");
            let (d, s) = max_diff(&got, &want);
            let name = image.file_name().unwrap().to_string_lossy().into_owned();
            println!("libmtmd {ty} {name}: max|Δ| vs transformers {d:.3e} (rel {:.3e}, bound {bound:.3e})", d / s);
            if d / s > bound {
                failures.push(format!("{ty} {name}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// Our gemma4v graph (gemma_gguf::vision::gemma4) against libmtmd on the same file and
/// pixels, and against transformers. With an f16 file the same ggml kernels run on the same
/// operands in the same order: bit-identical (bound 0). With f32 the bound is one f16 unit
/// (2^-11) of the largest value, as tests/tests/vision_encoder.rs for Gemma 3 (ggml's GELU
/// table). Against transformers, the bound of libmtmd above. Most of the f32 distance to
/// transformers is ggml's f16 GELU table: transformers with its GELU's input and output
/// rounded to f16 as that table does (embd-gelu-f16.f32) moves by about as much (printed),
/// and our f32 embeddings are closer to it than to plain transformers.
///
/// With flash attention on both sides (the keys and values cast to f16 for ggml's fused kernel,
/// clip.cpp's `build_attn`) f16 files stay bit-identical. For f32 files the last-bit differences
/// above can round a key or value to the other neighbouring f16, and the fused kernel's output
/// then moves by up to what that rounding itself costs: the bound there is 2^-11 (the plain
/// path's) plus libmtmd's own distance between its flash-attention and plain encoders on the
/// same file (printed beside the measured figure).
#[test]
fn our_encoder_matches_libmtmd_and_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (ty, fa) in [("f16", false), ("f32", false), ("f16", true), ("f32", true)] {
        let (lm, mm) = convert_pair(tmp.path(), ty, &dir());
        let mtmd = Mtmd::load_with_fa(&lm, &mm, 2, false, fa).unwrap();
        // The f32 flash-attention bound's yardstick: libmtmd's plain encoder on the same file.
        let plain = (ty == "f32" && fa).then(|| Mtmd::load(&lm, &mm, 2, false).unwrap());
        let mut ours = Gemma4VisionModel::load(&mm, Some(2)).unwrap();
        assert!(ours.flash_attn, "flash attention is on after loading, as libmtmd's default");
        ours.flash_attn = fa;
        let ty = if fa { format!("{ty} fa") } else { ty.to_string() };
        let ty = ty.as_str();
        assert_eq!((ours.hp.pool, ours.hp.n_pos, ours.hp.n_embd_text), (3, 64, 256));
        for ((image, want), (_, want16)) in embd_golden().into_iter().zip(embd_golden_from("embd-gelu-f16.f32")) {
            let img = decode(&std::fs::read(&image).unwrap(), MAX_IMAGE_PIXELS).unwrap();
            let spec = PixelSpec { size: 0, mean: ours.hp.mean, std: ours.hp.std };
            let flat = ours.encode(img.width, img.height, &pixel_tensor(&img, &spec)).unwrap();
            let got: Vec<Vec<f32>> = flat.chunks(256).map(|r| r.to_vec()).collect();
            assert_eq!(got.len() as u32, ours.n_tokens(img.width, img.height));
            let reference = mtmd.encode(img.width, img.height, &img.data).unwrap();
            let (dm, sm) = max_diff(&got, &reference);
            let (dt, st) = max_diff(&got, &want);
            let (d16, s16) = max_diff(&want16, &want);
            let (o16, _) = max_diff(&got, &want16);
            println!(
                "transformers with ggml's f16 GELU: {d16:.3e} (rel {:.3e}) from plain transformers, ours {ty} {o16:.3e} (rel {:.3e}) from it",
                d16 / s16,
                o16 / s16
            );
            let mtmd_bound = match (ty.starts_with("f16"), fa) {
                (true, _) => 0.0,
                (false, false) => 2f64.powi(-11),
                (false, true) => {
                    let plain = plain.as_ref().expect("loaded above for f32 with flash attention");
                    let (dy, sy) = max_diff(&reference, &plain.encode(img.width, img.height, &img.data).unwrap());
                    println!("libmtmd {ty}: flash attention on vs off max|Δ| {dy:.3e} (rel {:.3e})", dy / sy);
                    2f64.powi(-11) + dy / sy
                }
            };
            let t_bound = 16.0 * 2f64.powi(-11);
            let name = image.file_name().unwrap().to_string_lossy().into_owned();
            println!(
                "ours {ty} {name}: vs libmtmd max|Δ| {dm:.3e} (rel {:.3e}, bound {mtmd_bound:.3e}); vs transformers max|Δ| {dt:.3e} (rel {:.3e}, bound {t_bound:.3e})",
                dm / sm,
                dt / st
            );
            if dm / sm > mtmd_bound || dt / st > t_bound {
                failures.push(format!("{ty} {name}"));
            }
        }
        // Sizes that are not multiples of patch × kernel, or beyond the position tables.
        assert!(ours.encode(25, 24, &vec![0.0; 3 * 25 * 24]).is_err());
        assert!(ours.encode(24 * 22, 24, &vec![0.0; 3 * 24 * 22 * 24]).is_err());
        assert!(ours.encode(24, 24, &[0.0; 10]).is_err());
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// Preprocessing against transformers' `Gemma4ImageProcessorPil` (max_soft_tokens 70, patch 8,
/// kernel 3; Pillow 13.0.0) on generated PNGs of odd sizes, up- and downscaled, grey and with
/// alpha. The resize reimplements Pillow's fixed-point bicubic filter and the size rule
/// transformers' own, so the patch tensors must be equal (bound 0: the values are byte/255
/// either way; the printed figure is the measured one).
#[test]
fn pixel_patches_match_transformers() {
    let g = golden();
    let spec = PixelSpec { size: 0, mean: [0.0; 3], std: [1.0; 3] };
    let (p, k) = (8usize, 3u32);
    let mut failures = Vec::new();
    for case in g["pixels"].as_array().unwrap() {
        let name = case["image"].as_str().unwrap();
        let want = read_f32(&dir().join("images").join(case["pixels"].as_str().unwrap()));
        let grid: Vec<usize> = case["grid"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        let bytes = std::fs::read(dir().join("images").join(name)).unwrap();
        let (w, h, ours) = preprocess_gemma4(&bytes, &spec, p as u32, k, 70, MAX_IMAGE_PIXELS).unwrap();
        let (w, h) = (w as usize, h as usize);
        assert_eq!((w / p, h / p), (grid[0], grid[1]), "{name}: size");
        assert_eq!((w / p / 3 * (h / p / 3)) as u64, case["soft_tokens"].as_u64().unwrap(), "{name}");
        // Our planar [3][h][w] as transformers' patch rows (row, column, channel).
        let mut patches = vec![0f32; want.len()];
        for (i, out) in patches.chunks_exact_mut(p * p * 3).enumerate() {
            let (py, px) = (i / grid[0], i % grid[0]);
            for ky in 0..p {
                for kx in 0..p {
                    for c in 0..3 {
                        out[(ky * p + kx) * 3 + c] = ours[c * w * h + (py * p + ky) * w + px * p + kx];
                    }
                }
            }
        }
        let d = patches.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let n_off = patches.iter().zip(&want).filter(|(a, b)| a != b).count();
        println!("{name:>20}: {w}×{h}, max|Δ| {d:.3e}, {n_off} of {} values off (bound 0)", want.len());
        if d > 0.0 {
            failures.push(name.to_owned());
        }
    }
    assert!(failures.is_empty(), "pixel patches differ from transformers': {failures:?}");
    // Sizes transformers refuses: the error is typed, not a panic.
    assert!(gemma4_target_size(0, 10, 8, 3, 70).is_err());
    assert!(gemma4_target_size(10, 10, 0, 3, 70).is_err());
}

/// The bare prefixes (`vision_tower.`, `embed_vision.`, as a checkpoint saved from the
/// submodules would have them) give the same file.
#[test]
fn bare_prefixes_convert_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let alt = tmp.path().join("alt");
    std::fs::create_dir(&alt).unwrap();
    for f in ["config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(dir().join(f), alt.join(f)).unwrap();
    }
    rename_safetensors(&dir().join("model.safetensors"), &alt.join("model.safetensors"), |n| {
        n.strip_prefix("model.vision_tower.")
            .map(|r| format!("vision_tower.{r}"))
            .or_else(|| n.strip_prefix("model.embed_vision.").map(|r| format!("embed_vision.{r}")))
            .unwrap_or_else(|| n.to_owned())
    });
    let a = tmp.path().join("a.gguf");
    let b = tmp.path().join("b.gguf");
    convert_mmproj(&dir(), &a, &MmprojOptions { name: Some("x".into()), ..Default::default() }).unwrap();
    convert_mmproj(&alt, &b, &MmprojOptions { name: Some("x".into()), ..Default::default() }).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

/// Rewrites a safetensors file with renamed tensors (header only; data unchanged).
fn rename_safetensors(src: &Path, dst: &Path, f: impl Fn(&str) -> String) {
    let bytes = std::fs::read(src).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let renamed: serde_json::Map<String, Value> =
        header.into_iter().map(|(k, v)| if k == "__metadata__" { (k, v) } else { (f(&k), v) }).collect();
    let mut h = serde_json::to_vec(&renamed).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(dst, out).unwrap();
}

/// Malformed checkpoints: typed errors naming the field or tensor.
#[test]
fn bad_gemma4_checkpoints_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(dir().join("config.json")).unwrap()).unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("heads do not divide", serde_json::json!({"num_attention_heads": 3}), "head_dim"),
        ("exact gelu", serde_json::json!({"hidden_activation": "gelu"}), "hidden_activation"),
        ("string size", serde_json::json!({"hidden_size": "64"}), "hidden_size"),
        (
            "another rope base",
            serde_json::json!({"rope_parameters": {"rope_type": "axial", "rope_theta": 1000.0}}),
            "rope_theta",
        ),
        ("position table too small", serde_json::json!({"position_embedding_size": 32}), "position_embedding_table"),
        ("wider MLP", serde_json::json!({"intermediate_size": 256}), "gate_proj"),
    ];
    for (i, (what, patch, needle)) in cases.into_iter().enumerate() {
        let d = tmp.path().join(format!("bad{i}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::copy(dir().join("model.safetensors"), d.join("model.safetensors")).unwrap();
        let mut c = cfg.clone();
        for (k, x) in patch.as_object().unwrap() {
            c["vision_config"][k] = x.clone();
        }
        std::fs::write(d.join("config.json"), c.to_string()).unwrap();
        let e = convert_mmproj(&d, &d.join("out.gguf"), &MmprojOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{what}: converted"))
            .to_string();
        println!("{what}: {e}");
        assert!(e.contains(needle), "{what}: {e}");
        assert!(!d.join("out.gguf").exists(), "{what}: partial output");
    }
    // A tensor missing.
    let d = tmp.path().join("missing");
    std::fs::create_dir(&d).unwrap();
    std::fs::copy(dir().join("config.json"), d.join("config.json")).unwrap();
    rename_safetensors(&dir().join("model.safetensors"), &d.join("model.safetensors"), |n| {
        n.replace("layers.1.self_attn.k_norm.weight", "layers.1.self_attn.k_norm.weightX")
    });
    let e = convert_mmproj(&d, &d.join("out.gguf"), &MmprojOptions::default()).err().unwrap().to_string();
    println!("missing: {e}");
    assert!(e.contains("layers.1.self_attn.k_norm.weight"), "{e}");
}

/// A copy of the projector file with one key changed (`Some(None)`: removed) or one tensor
/// left out.
fn edited(src: &Path, dst: &Path, key: &str, value: Option<Option<GgufValue>>, drop: &str) {
    use gemma_gguf::gguf::GgufWriter;
    let f = GgufFile::read(src).unwrap();
    let mut w = GgufWriter::create(dst).unwrap();
    for (k, v) in f.metadata() {
        match (&value, k == key) {
            (Some(None), true) => {}
            (Some(Some(nv)), true) => w.add_kv(k, nv.clone()).unwrap(),
            _ => w.add_kv(k, v.clone()).unwrap(),
        }
    }
    let kept: Vec<_> = f.tensors().iter().filter(|t| t.name != drop).cloned().collect();
    for t in &kept {
        w.add_tensor_info(&t.name, &t.dims, t.ggml_type).unwrap();
    }
    for t in &kept {
        w.write_tensor_data(&t.name, f.tensor_data(t).unwrap()).unwrap();
    }
    w.finish().unwrap();
}

/// Malformed gemma4v projector files: typed errors naming the key or tensor, never a panic.
#[test]
fn bad_gemma4v_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("mmproj.gguf");
    convert_mmproj(&dir(), &good, &MmprojOptions::default()).unwrap();
    let s = |x: &str| Some(Some(GgufValue::String(x.into())));
    let u = |x: u32| Some(Some(GgufValue::U32(x)));
    type Case<'a> = (&'a str, &'a str, Option<Option<GgufValue>>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        ("Gemma 3's type", k::PROJECTOR_TYPE, s("gemma3"), "", "gemma4v"),
        ("no projector type", k::PROJECTOR_TYPE, Some(None), "", k::PROJECTOR_TYPE),
        ("quick-GELU", k::USE_GELU, Some(None), "", k::USE_GELU),
        ("heads do not divide", k::HEAD_COUNT, u(3), "", "heads"),
        ("grouped kv heads", k::HEAD_COUNT_KV, u(2), "", k::HEAD_COUNT_KV),
        ("zero layers", k::BLOCK_COUNT, u(0), "", k::BLOCK_COUNT),
        ("narrower", k::EMBEDDING_LENGTH, u(32), "", tn::POSITION_EMBD),
        ("budget not whole cells", k::IMAGE_MAX_PIXELS, u(1000), "", k::IMAGE_MAX_PIXELS),
        ("made for another text width", k::PROJECTION_DIM, u(640), "", tn::MM_INPUT_PROJECTION),
        ("wider MLP", k::FEED_FORWARD_LENGTH, u(256), "", "v.blk.0.ffn_gate.weight"),
        ("a missing norm", "", None, "v.blk.1.attn_k_norm.weight", "v.blk.1.attn_k_norm.weight"),
        ("no position table", "", None, tn::POSITION_EMBD, tn::POSITION_EMBD),
    ];
    for (i, (what, key, value, drop, needle)) in cases.into_iter().enumerate() {
        let path = tmp.path().join(format!("bad{i}.gguf"));
        edited(&good, &path, key, value, drop);
        let e = Gemma4VisionModel::load(&path, Some(1)).err().unwrap_or_else(|| panic!("{what}: loaded")).to_string();
        println!("{what}: {e}");
        assert!(e.contains(needle), "{what}: {e}");
    }
}

/// Image bytes in: the exact-size images give what `encode` gives on their pixels; other sizes
/// are resized to the file's budget (70 tokens here); an image whose resized size exceeds the
/// position tables (500×20 → 123 patches wide, the table holds 64) is a typed error.
#[test]
fn embed_image_from_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, mm) = convert_pair(tmp.path(), "f16", &dir());
    let m = Gemma4VisionModel::load(&mm, Some(2)).unwrap();
    assert_eq!(m.hp.max_soft_tokens, 70);
    for (name, tokens) in [("exact-240x168.png", 70), ("odd-97x41.png", 60), ("grey-50x50.png", 64)] {
        let bytes = std::fs::read(dir().join("images").join(name)).unwrap();
        let (n, e) = m.embed_image(&bytes, MAX_IMAGE_PIXELS).unwrap();
        assert_eq!((n, e.len()), (tokens, tokens as usize * 256), "{name}");
        assert!(e.iter().all(|x| x.is_finite()), "{name}");
    }
    let bytes = std::fs::read(dir().join("images/exact-168x240.png")).unwrap();
    let img = decode(&bytes, MAX_IMAGE_PIXELS).unwrap();
    let spec = PixelSpec { size: 0, mean: m.hp.mean, std: m.hp.std };
    let direct = m.encode(img.width, img.height, &pixel_tensor(&img, &spec)).unwrap();
    assert_eq!(m.embed_image(&bytes, MAX_IMAGE_PIXELS).unwrap().1, direct);
    let wide = std::fs::read(dir().join("images/wide-500x20.png")).unwrap();
    let e = m.embed_image(&wide, MAX_IMAGE_PIXELS).unwrap_err().to_string();
    println!("500×20: {e}");
    assert!(e.contains("position tables"), "{e}");
    assert!(m.embed_image(b"not an image", MAX_IMAGE_PIXELS).is_err());
}

/// `vision::Projector` picks the graph by `clip.projector_type`; the Gemma 3 loader names a
/// gemma4v file for what it is.
#[test]
fn projector_dispatches_on_type() {
    use gemma_gguf::vision::encoder::VisionModel;
    use gemma_gguf::vision::Projector;
    let tmp = tempfile::tempdir().unwrap();
    let (_, mm) = convert_pair(tmp.path(), "f16", &dir());
    let p = Projector::load(&mm, Some(2)).unwrap();
    assert!(matches!(p, Projector::Gemma4(_)));
    assert_eq!(p.n_embd_text(), 256);
    let bytes = std::fs::read(dir().join("images/odd-97x41.png")).unwrap();
    let direct = Gemma4VisionModel::load(&mm, Some(2)).unwrap().embed_image(&bytes, MAX_IMAGE_PIXELS).unwrap();
    assert_eq!(p.embed_image(&bytes, MAX_IMAGE_PIXELS).unwrap(), direct);
    let e = VisionModel::load(&mm, Some(1)).err().unwrap().to_string();
    assert!(e.contains("Gemma 4 projector"), "{e}");
}
