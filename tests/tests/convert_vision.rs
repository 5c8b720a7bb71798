//! `gemma convert --mmproj` on a tiny random `Gemma3ForConditionalGeneration` made by
//! transformers (tests/data/tiny/gemma3-vision, scripts/make_tiny_gemma3_vision.py):
//!
//! - the projector file has llama.cpp's keys and tensor names (read back with our reader);
//! - libmtmd (llama.cpp's own loader, `llama-cpp-sys-2` with `mtmd`) loads it beside the
//!   converted language model and encodes two 64×64 images (no resize, so libmtmd's pixel
//!   tensor is transformers'), and its image embeddings agree with transformers'
//!   `get_image_features` within a bound from the weights' rounding;
//! - the hub's tensor names (`vision_tower.vision_model.*`) give the same file as
//!   transformers 5's (`vision_tower.*`, what 5.24.0 saves);
//! - bad checkpoints fail with the key or tensor named.
use gemma_gguf::gguf::GgufFile;
use gemma_gguf::vision::names::{key, tensor as tn};
use gemma_gguf::vision::preprocess::{decode, MAX_IMAGE_PIXELS};
use gemma_tests::mtmd_ref::Mtmd;
use gemma_tests::vision_golden::{max_diff, vision_golden};
use gemma_tools::{convert_hf, convert_mmproj, ConvertOptions, MmprojOptions, OutType};
use std::path::Path;

fn mmproj(dir: &Path, out: &Path, ty: &str) -> Result<(), gemma_tools::Error> {
    let opts = MmprojOptions { ty: OutType::parse(ty).unwrap(), name: Some("tiny".into()), ..Default::default() };
    convert_mmproj(dir, out, &opts).map(|_| ())
}

fn language_model(dir: &Path, out: &Path) {
    let opts = ConvertOptions { out_type: OutType::parse("f32").unwrap(), ..ConvertOptions::default() };
    convert_hf(dir, out, &opts).unwrap_or_else(|e| panic!("converting the text model: {e}"));
}

#[test]
fn layout_is_llama_cpps() {
    let g = vision_golden();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mmproj.gguf");
    mmproj(&g.dir, &out, "f16").unwrap();
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get_str(key::PROJECTOR_TYPE).unwrap(), "gemma3");
    assert!(f.get_bool(key::HAS_VISION_ENCODER).unwrap());
    assert!(f.get_bool(key::USE_GELU).unwrap());
    let u = |k: &str| f.get_u32(k).unwrap();
    assert_eq!(
        [u(key::EMBEDDING_LENGTH), u(key::FEED_FORWARD_LENGTH), u(key::BLOCK_COUNT), u(key::HEAD_COUNT)],
        [64, 128, 2, 4]
    );
    assert_eq!(
        [u(key::IMAGE_SIZE), u(key::PATCH_SIZE), u(key::PROJ_SCALE_FACTOR), u(key::PROJECTION_DIM)],
        [64, 8, 2, 256]
    );
    let dims = |name: &str| f.tensor(name).unwrap_or_else(|| panic!("no {name}")).dims.clone();
    assert_eq!(dims(tn::PATCH_EMBD), [8, 8, 3, 64]);
    assert_eq!(dims(tn::POSITION_EMBD), [64, 64]);
    assert_eq!(dims(&tn::block(1, tn::FFN_UP, "weight")), [64, 128]);
    assert_eq!(dims(&tn::block(1, tn::FFN_DOWN, "weight")), [128, 64]);
    assert_eq!(dims(&tn::block(0, tn::FFN_UP, "bias")), [128]);
    assert_eq!(dims(tn::MM_INPUT_PROJECTION), [256, 64]);
    // 3 embedding tensors, 16 per block, post_ln ×2, 2 projector tensors.
    assert_eq!(f.tensors().len(), 3 + 16 * 2 + 2 + 2);
}

/// Image embeddings of libmtmd on our files against transformers'. Bound: f32 weights keep
/// only ggml's own rounding — its GELU is read from an f16 table (ggml-cpu `vec.h`,
/// `GGML_GELU_FP16`), so the f16 unit 2^-11 is the floor; f16 weights: the same unit. `K`
/// units, relative to the largest reference value, through 2 layers, the pooling, the norm
/// and the projection.
#[test]
fn libmtmd_loads_and_matches_transformers() {
    const K: f64 = 16.0;
    let unit = 2f64.powi(-11);
    let g = vision_golden();
    let tmp = tempfile::tempdir().unwrap();
    let lm = tmp.path().join("model.gguf");
    language_model(&g.dir, &lm);
    let mut failures = Vec::new();
    for ty in ["f32", "f16"] {
        let out = tmp.path().join(format!("mmproj-{ty}.gguf"));
        mmproj(&g.dir, &out, ty).unwrap();
        let m = Mtmd::load(&lm, &out, 2, false).unwrap_or_else(|e| panic!("{ty}: {e}"));
        assert_eq!(m.n_embd(), 256);
        for (image, want) in &g.embd {
            let img = decode(&std::fs::read(image).unwrap(), MAX_IMAGE_PIXELS).unwrap();
            let got = m.encode(img.width, img.height, &img.data).unwrap();
            let (d, scale) = max_diff(&got, want);
            let rel = d / scale;
            let name = image.file_name().unwrap().to_string_lossy();
            println!(
                "{ty} {name}: {} tokens, max|Δ| {d:.3e}, max|ref| {scale:.3}, rel {rel:.3e}, bound {:.3e}",
                got.len(),
                K * unit
            );
            if rel > K * unit {
                failures.push(format!("{ty} {name}: {rel:.3e}"));
            }
        }
    }
    assert!(failures.is_empty(), "libmtmd's embeddings differ from transformers': {failures:?}");
}

/// Rewrites a safetensors file with renamed tensors (same data, same offsets).
fn rename_tensors(src: &Path, dst: &Path, rename: impl Fn(&str) -> String) {
    let bytes = std::fs::read(src).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let renamed: serde_json::Map<String, serde_json::Value> =
        header.into_iter().map(|(k, v)| if k == "__metadata__" { (k, v) } else { (rename(&k), v) }).collect();
    let mut h = serde_json::to_vec(&renamed).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(dst, out).unwrap();
}

/// A copy of the checkpoint with the config edited and the tensors renamed.
fn variant(
    src: &Path,
    dst: &Path,
    edit: impl Fn(&mut serde_json::Value),
    rename: impl Fn(&str) -> String,
) -> std::path::PathBuf {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dst.join("config.json"), cfg.to_string()).unwrap();
    rename_tensors(&src.join("model.safetensors"), &dst.join("model.safetensors"), rename);
    dst.to_owned()
}

#[test]
fn hub_names_give_the_same_file() {
    let g = vision_golden();
    let tmp = tempfile::tempdir().unwrap();
    let hub = variant(
        &g.dir,
        &tmp.path().join("hub"),
        |_| {},
        |k| k.replacen("vision_tower.", "vision_tower.vision_model.", 1),
    );
    let (a, b) = (tmp.path().join("a.gguf"), tmp.path().join("b.gguf"));
    mmproj(&g.dir, &a, "f16").unwrap();
    mmproj(&hub, &b, "f16").unwrap();
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "hub and transformers-5 names differ in output");
}

#[test]
fn bad_checkpoints_are_named() {
    let g = vision_golden();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let text_only = gemma_tests::workspace_root().join("tests/data/tiny/gemma3");
    let e = mmproj(&text_only, &out, "f16").unwrap_err().to_string();
    assert!(e.contains("Gemma3ForConditionalGeneration"), "{e}");

    let set =
        |k: &'static str, v: serde_json::Value| move |c: &mut serde_json::Value| c["vision_config"][k] = v.clone();
    let same = |k: &str| k.to_owned();
    let cases: Vec<(&str, std::path::PathBuf, &str)> = vec![
        (
            "patch 16 in the config, 8 in the tensors",
            variant(&g.dir, &tmp.path().join("p16"), set("patch_size", 16.into()), same),
            "patch_embedding.weight",
        ),
        (
            "wider config than tensors",
            variant(&g.dir, &tmp.path().join("wide"), set("intermediate_size", 256.into()), same),
            "fc1.weight",
        ),
        (
            "one tensor missing",
            variant(&g.dir, &tmp.path().join("missing"), |_| {}, |k| k.replace("layers.1.mlp.fc2.bias", "x")),
            "layers.1.mlp.fc2.bias",
        ),
        (
            "no projector",
            variant(&g.dir, &tmp.path().join("noproj"), |_| {}, |k| k.replace("multi_modal_projector", "mmp")),
            "multi_modal_projector.mm_input_projection_weight",
        ),
        (
            "tokens not a square",
            variant(&g.dir, &tmp.path().join("tok"), |c| c["mm_tokens_per_image"] = 15.into(), same),
            "mm_tokens_per_image",
        ),
    ];
    for (what, dir, needle) in cases {
        let e = mmproj(&dir, &out, "f16").expect_err(what).to_string();
        println!("{what}: {e}");
        assert!(e.contains(needle), "{what}: {e}");
        assert!(!out.exists(), "{what}: a partial file was left");
    }
    let e = mmproj(&g.dir, &out, "q4_k").unwrap_err().to_string();
    assert!(e.contains("q8_0"), "{e}");
}
