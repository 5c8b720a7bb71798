//! The converter and runtime on tiny random Gemma 3n checkpoints made by transformers
//! (tests/data/tiny/gemma3n-*, scripts/make_tiny_gemma3n.py).
//!
//! - `gemma3n-e2b`, the shape libllama runs: converted to every type, run in libllama (flash
//!   attention off and on, and one token per step) and in our runtime (off and on); logits
//!   against transformers' float32 ones, max |Δlogit| / max |logit| ≤ K · unit(type) (as
//!   convert_gemma4.rs).
//! - `gemma3n-small`, transformers' own test shape (2 AltUp streams, PLE 16, LAuReL rank 8,
//!   active stream 1): libllama cannot load it; our runtime, which reads those sizes from the
//!   file, against transformers.
//!
//! The references differ by design in two places, both measured here: the Gaussian top-k's
//! standard deviation (transformers divides by n, llama.cpp by n − 1; our runtime follows
//! llama.cpp) and its multiplier (transformers' float32 icdf(0.95) = 1.6448536, the value the
//! converter writes and our runtime reads; libllama's fixed 1.6448533). The goldens come in
//! both forms (`logits.f32`: transformers as it is; `logits_unbiased.f32`: with n − 1), and the
//! bound applies to the n − 1 form; the distance to the other is printed. Where libllama and
//! we compute the same thing, the converted file with libllama's multiplier (the key
//! dropped: our default is libllama's constant), the logits are identical.
use gemma_gguf::gguf::{GgmlType, GgufArray, GgufFile, GgufValue, GgufWriter};
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::session::{Outputs, Session, SessionOptions};
use gemma_tests::llama_logits::{LlamaOptions, LlamaRunner};
use gemma_tests::llama_quantize::{compare_tensors, llama_quantize, QuantizeRequest};
use gemma_tests::tiny_golden::golden;
use gemma_tests::workspace_root;
use gemma_tools::{convert_hf, requantize, ConvertOptions, OutType, RequantizeOptions, RunOptions, TYPE_NAMES};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// How many rounding units of error the logits may show (as convert_gemma4.rs).
const K: f64 = 16.0;
const SPARSITY_KEY: &str = "gemma3n.activation_sparsity_scale";

/// The rounding unit of a type's weights (as convert_gemma4.rs).
fn unit(ty: &str) -> f64 {
    let bits = match ty {
        "f32" | "f16" => 11,
        "bf16" | "q8_0" => 8,
        "q6_k" => 6,
        "q5_k" | "q5_0" | "q5_1" | "q5_k_m" | "q5_k_s" => 5,
        "q4_k" | "q4_0" | "q4_1" | "q4_k_m" | "q4_k_s" => 4,
        "q3_k" => 3,
        _ => 2,
    };
    2f64.powi(-bits)
}

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/data/tiny").join(name)
}

fn convert(dir: &Path, ty: &str, out: &Path) -> gemma_tools::Summary {
    let opts = ConvertOptions { out_type: OutType::parse(ty).unwrap(), ..ConvertOptions::default() };
    convert_hf(dir, out, &opts).unwrap_or_else(|e| panic!("converting {} to {ty}: {e}", dir.display()))
}

/// The `logits_unbiased.f32` golden (transformers with llama.cpp's n − 1 standard deviation).
fn unbiased(dir: &Path) -> Vec<f32> {
    let raw = std::fs::read(dir.join("logits_unbiased.f32")).unwrap();
    raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn llama(path: &Path, ids: &[u32], flash_attn: bool) -> Vec<f32> {
    let mut ll = LlamaRunner::load(path, LlamaOptions { capture: &[], n_ctx: 256, n_threads: 2, flash_attn });
    ll.eval(ids, true)
}

fn llama_steps(path: &Path, ids: &[u32]) -> Vec<f32> {
    let mut ll = LlamaRunner::load(path, LlamaOptions { capture: &[], n_ctx: 256, n_threads: 2, flash_attn: false });
    ids.iter().flat_map(|&t| ll.eval(&[t], false)).collect()
}

fn ours(path: &Path, ids: &[u32], flash_attn: bool) -> Vec<f32> {
    let model = Model::load(path, &LoadOptions { threads: Some(2), ..Default::default() })
        .unwrap_or_else(|e| panic!("our runtime loads {}: {e}", path.display()));
    let mut ses = Session::new(&model, SessionOptions { n_ctx: 256, flash_attn, ..Default::default() }).unwrap();
    ses.decode(ids, Outputs::All).unwrap()
}

/// (max |Δ| / max |golden|, top-1 agreement).
fn distance(golden: &[f32], other: &[f32], n_vocab: usize) -> (f64, f64) {
    assert_eq!(golden.len(), other.len());
    let scale = golden.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let max = golden.iter().zip(other).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) as f64;
    let am = |x: &[f32]| x.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
    let rows = golden.len() / n_vocab;
    let agree = (0..rows)
        .filter(|r| am(&golden[r * n_vocab..(r + 1) * n_vocab]) == am(&other[r * n_vocab..(r + 1) * n_vocab]))
        .count();
    (max / scale, agree as f64 / rows as f64)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// A copy of the GGUF `src` without the key `drop`.
fn without_key(src: &Path, drop: &str, out: &Path) {
    let f = GgufFile::open(src).unwrap();
    let mut w = GgufWriter::create(out).unwrap();
    for (k, v) in f.metadata().filter(|(k, _)| *k != drop) {
        w.add_kv(k, v.clone()).unwrap();
    }
    for t in f.tensors() {
        w.add_tensor_info(&t.name, &t.dims, t.ggml_type).unwrap();
    }
    for t in f.tensors() {
        w.write_tensor_data(&t.name, f.tensor_data(t).unwrap()).unwrap();
    }
    w.finish().unwrap();
}

type Run = (&'static str, fn(&Path, &[u32]) -> Vec<f32>);

fn check_all_types(name: &str, runs: &[Run], libllama: bool) {
    let g = golden(name);
    let golden_n1 = unbiased(&g.dir);
    let (tf_gap, _) = distance(&golden_n1, &g.logits, g.n_vocab);
    println!(
        "{name}: {} positions; error = max|Δlogit| / max|logit| against transformers with llama.cpp's",
        g.ids.len()
    );
    println!("n − 1 standard deviation (bound {K} × unit(type)); [transformers as it is] in brackets.");
    println!("transformers n against n − 1 itself: {tf_gap:.2e}");
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (ty, _) in TYPE_NAMES {
        let out = tmp.path().join(format!("{name}-{ty}.gguf"));
        convert(&g.dir, ty, &out);
        let bound = K * unit(ty);
        let mut line = format!("{ty:>7} bound {bound:.2e}:");
        let mut got = Vec::new();
        for (r, run) in runs {
            let l = run(&out, &g.ids);
            let (e, top1) = distance(&golden_n1, &l, g.n_vocab);
            let (e_tf, _) = distance(&g.logits, &l, g.n_vocab);
            line += &format!("  {r} {e:.2e} [{e_tf:.2e}] top-1 {:.0}%", top1 * 100.0);
            if e > bound {
                failures.push(format!("{ty}: {r} {e:.3e} > {bound:.3e}"));
            }
            got.push((*r, l));
        }
        if libllama {
            // The same computation in both: libllama's multiplier (the key dropped).
            let same = tmp.path().join(format!("{name}-{ty}-llama-mul.gguf"));
            without_key(&out, SPARSITY_KEY, &same);
            let find = |n: &str| &got.iter().find(|(r, _)| *r == n).unwrap().1;
            let d_key = max_abs_diff(find("ours"), find("llama.cpp"));
            for (fa, r) in [(false, "llama.cpp"), (true, "llama.cpp fa")] {
                let d = max_abs_diff(&ours(&same, &g.ids, fa), find(r));
                line += &format!("  ours(llama.cpp's multiplier) vs {r}: {d:e}");
                if d != 0.0 {
                    failures.push(format!("{ty}: ours with libllama's multiplier against {r}: {d:e}, expected 0"));
                }
            }
            line += &format!("  ours(file's multiplier) vs llama.cpp: {d_key:e}");
        }
        println!("{line}");
    }
    assert!(failures.is_empty(), "{name}: {failures:?}");
}

#[test]
fn e2b_all_types_against_transformers_and_libllama() {
    let runs: [Run; 5] = [
        ("llama.cpp", |p, ids| llama(p, ids, false)),
        ("llama.cpp fa", |p, ids| llama(p, ids, true)),
        ("llama.cpp 1×1", llama_steps),
        ("ours", |p, ids| ours(p, ids, false)),
        ("ours fa", |p, ids| ours(p, ids, true)),
    ];
    check_all_types("gemma3n-e2b", &runs, true);
}

#[test]
fn small_all_types_against_transformers() {
    let runs: [Run; 2] = [("ours", |p, ids| ours(p, ids, false)), ("ours fa", |p, ids| ours(p, ids, true))];
    check_all_types("gemma3n-small", &runs, false);
}

fn f32s(f: &GgufFile, name: &str) -> Vec<f32> {
    let t = f.tensor(name).unwrap_or_else(|| panic!("{name}"));
    f.tensor_data(t).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn keys_and_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("e2b-f32.gguf");
    let s = convert(&fixture("gemma3n-e2b"), "f32", &out);
    assert!(s.warnings.is_empty(), "the libllama shape gets no warning: {:?}", s.warnings);
    let f = GgufFile::open(&out).unwrap();
    let u = |k: &str| f.get_u32(k).unwrap_or_else(|e| panic!("{k}: {e}"));
    assert_eq!(f.get_str("general.architecture").unwrap(), "gemma3n");
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "llama");
    assert_eq!((u("gemma3n.block_count"), u("gemma3n.attention.shared_kv_layers")), (22, 2));
    assert_eq!((u("gemma3n.altup.num_inputs"), u("gemma3n.altup.active_idx")), (4, 0));
    assert_eq!(u("gemma3n.embedding_length_per_layer_input"), 256);
    assert_eq!(f.get_f32("gemma3n.final_logit_softcapping").unwrap(), 30.0);
    match f.get(SPARSITY_KEY) {
        Some(GgufValue::Array(GgufArray::F32(v))) => {
            assert_eq!(v.len(), 22);
            assert!(v[..10].iter().all(|&x| x == 1.644_853_6) && v[10..].iter().all(|&x| x == f32::NEG_INFINITY));
        }
        other => panic!("{SPARSITY_KEY}: {other:?}"),
    }
    // AltUp projections stacked; the per-layer table padded to the vocabulary with row 0.
    assert_eq!(f.tensor("altup_proj.weight").unwrap().dims, vec![64, 64, 3]);
    let ple = f32s(&f, "per_layer_token_embd.weight");
    let w = 256 * 22;
    assert_eq!(ple.len(), w * 512);
    assert!((256..512).all(|r| ple[r * w..(r + 1) * w] == ple[..w]), "rows past the table are row 0");
    assert!(ple[w..2 * w] != ple[..w]);
    // Shared layers: zeros in place of the K/V transformers does not have.
    assert!(f32s(&f, "blk.21.attn_k.weight").iter().all(|&x| x == 0.0));
    assert!(f32s(&f, "blk.19.attn_k.weight").iter().any(|&x| x != 0.0));
    // What llama-quant.cpp leaves unquantised.
    let out = tmp.path().join("e2b-q4_k_m.gguf");
    convert(&fixture("gemma3n-e2b"), "q4_k_m", &out);
    let q = GgufFile::open(&out).unwrap();
    for t in ["altup_proj.weight", "blk.0.altup_router.weight", "blk.0.laurel_l.weight", "per_layer_model_proj.weight"]
    {
        assert_eq!(q.tensor(t).unwrap().ggml_type, GgmlType::F32, "{t}");
    }
    // transformers' test shape: converted with a warning that libllama would run it otherwise.
    let out = tmp.path().join("small.gguf");
    let s = convert(&fixture("gemma3n-small"), "f32", &out);
    println!("gemma3n-small warnings: {:?}", s.warnings);
    assert!(s.warnings.iter().any(|w| w.contains("AltUp")), "{:?}", s.warnings);
    let f = GgufFile::open(&out).unwrap();
    match f.get("gemma3n.feed_forward_length") {
        Some(GgufValue::Array(GgufArray::U32(v))) => assert_eq!(v, &[128, 96, 128, 96]),
        other => panic!("feed_forward_length: {other:?}"),
    }
}

/// A safetensors tensor: (name, dtype, shape, bytes).
type SafeTensor = (String, String, Vec<usize>, Vec<u8>);

fn read_safetensors(path: &Path) -> Vec<SafeTensor> {
    let raw = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&raw[8..8 + n]).unwrap();
    let data = &raw[8 + n..];
    let mut out: Vec<_> = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = v["data_offsets"].as_array().unwrap();
            let (a, b) = (o[0].as_u64().unwrap() as usize, o[1].as_u64().unwrap() as usize);
            let shape = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            (k.clone(), v["dtype"].as_str().unwrap().to_owned(), shape, data[a..b].to_vec())
        })
        .collect();
    out.sort_by_key(|t| t.3.as_ptr() as usize);
    out
}

fn write_safetensors(path: &Path, tensors: &[SafeTensor]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    let h = serde_json::to_vec(&Value::Object(header)).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    for (_, _, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    std::fs::write(path, out).unwrap();
}

/// A copy of fixture `name` in `dir`, with `edit` applied to its config and `retensor` to
/// its tensors.
fn variant(
    name: &str,
    dir: &Path,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
    retensor: impl FnOnce(&mut Vec<SafeTensor>),
) -> PathBuf {
    let src = fixture(name);
    std::fs::create_dir_all(dir).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(cfg.as_object_mut().unwrap());
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let mut tensors = read_safetensors(&src.join("model.safetensors"));
    retensor(&mut tensors);
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    dir.to_owned()
}

/// `Gemma3nForConditionalGeneration` with the text model under `model.language_model.` and
/// vision and audio towers beside it: the towers are skipped with a note, and the file equals
/// the one from the `Gemma3nForCausalLM` checkpoint.
#[test]
fn conditional_generation_layout_gives_the_same_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = variant(
        "gemma3n-e2b",
        &tmp.path().join("cg"),
        |cfg| {
            let mut text = cfg.clone();
            text.insert("model_type".into(), json!("gemma3n_text"));
            text.remove("architectures");
            cfg.clear();
            cfg.insert("architectures".into(), json!(["Gemma3nForConditionalGeneration"]));
            cfg.insert("model_type".into(), json!("gemma3n"));
            cfg.insert("text_config".into(), Value::Object(text));
            cfg.insert("vision_config".into(), json!({"model_type": "gemma3n_vision"}));
            cfg.insert("audio_config".into(), json!({"model_type": "gemma3n_audio"}));
        },
        |tensors| {
            for t in tensors.iter_mut() {
                t.0 = t.0.replacen("model.", "model.language_model.", 1);
            }
            for tower in ["model.vision_tower.timm_model.conv_stem.conv.weight", "model.audio_tower.subsample.weight"] {
                tensors.push((tower.into(), "F32".into(), vec![2], vec![0; 8]));
            }
        },
    );
    let (a, b) = (tmp.path().join("a.gguf"), tmp.path().join("b.gguf"));
    convert(&fixture("gemma3n-e2b"), "q8_0", &a);
    let s = convert(&dir, "q8_0", &b);
    println!("skipped: {:?}", s.skipped);
    assert!(s.skipped.iter().any(|w| w.contains("vision_tower")), "{:?}", s.skipped);
    assert!(s.skipped.iter().any(|w| w.contains("audio_tower")), "{:?}", s.skipped);
    let n = compare_tensors(&a, &b);
    let (fa, fb) = (GgufFile::open(&a).unwrap(), GgufFile::open(&b).unwrap());
    for (k, v) in fa.metadata().filter(|(k, _)| k.starts_with("gemma3n.") || k.starts_with("tokenizer.")) {
        assert_eq!(fb.get(k), Some(v), "{k}");
    }
    println!("Gemma3nForConditionalGeneration layout → the same {n} tensors and keys");
}

/// `gemma quantize` of the f32 conversion, and `gemma convert` straight to the type, against
/// `llama_model_quantize` of the f32 file: the same type and bytes for every tensor.
#[test]
fn requantize_matches_llama_model_quantize() {
    let tmp = tempfile::tempdir().unwrap();
    let f32 = tmp.path().join("f32.gguf");
    convert(&fixture("gemma3n-e2b"), "f32", &f32);
    for (ty, ftype, pure) in [("q8_0", 7, false), ("q4_k_m", 15, false), ("q5_k_s", 16, false), ("q6_k", 18, true)] {
        let ours = tmp.path().join(format!("ours-{ty}.gguf"));
        let theirs = tmp.path().join(format!("llama-{ty}.gguf"));
        let o = RequantizeOptions {
            out_type: OutType::parse(ty).unwrap(),
            overrides: vec![],
            force: false,
            allow_requantize: false,
            run: RunOptions::default(),
        };
        requantize(&f32, &ours, &o).unwrap();
        llama_quantize(&f32, &theirs, QuantizeRequest { ftype, pure, threads: 2 }).unwrap();
        let n = compare_tensors(&ours, &theirs);
        let direct = tmp.path().join(format!("direct-{ty}.gguf"));
        convert(&fixture("gemma3n-e2b"), ty, &direct);
        compare_tensors(&direct, &theirs);
        println!("gemma3n-e2b {ty:>7}: {n} tensors identical to llama_model_quantize");
    }
}

type ConfigEdit = fn(&mut serde_json::Map<String, Value>);
type TensorEdit = fn(&mut Vec<SafeTensor>);

#[test]
fn malformed_checkpoints_are_typed_errors() {
    let none: TensorEdit = |_| {};
    let keep: ConfigEdit = |_| {};
    let cases: Vec<(&str, ConfigEdit, TensorEdit, &str)> = vec![
        ("altup_num_inputs 1", |c| drop(c.insert("altup_num_inputs".into(), json!(1))), none, "altup_num_inputs"),
        (
            "altup_active_idx past the streams",
            |c| drop(c.insert("altup_active_idx".into(), json!(4))),
            none,
            "altup_active_idx",
        ),
        (
            "altup_correct_scale off",
            |c| drop(c.insert("altup_correct_scale".into(), json!(false))),
            none,
            "altup_correct_scale",
        ),
        (
            "sparsity pattern of the wrong length",
            |c| drop(c.insert("activation_sparsity_pattern".into(), json!([0.95]))),
            none,
            "activation_sparsity_pattern",
        ),
        (
            "sparsity 1 (nothing kept)",
            |c| drop(c.insert("activation_sparsity_pattern".into(), json!(vec![1.0; 22]))),
            none,
            "activation_sparsity_pattern",
        ),
        (
            "intermediate_size list of the wrong length",
            |c| drop(c.insert("intermediate_size".into(), json!([128, 128]))),
            none,
            "intermediate_size",
        ),
        (
            "all layers shared",
            |c| drop(c.insert("num_kv_shared_layers".into(), json!(22))),
            none,
            "num_kv_shared_layers",
        ),
        (
            "laurel_rank disagreeing with the tensors",
            |c| drop(c.insert("laurel_rank".into(), json!(32))),
            none,
            "laurel",
        ),
        (
            "PLE width disagreeing with the tensors",
            |c| drop(c.insert("hidden_size_per_layer_input".into(), json!(128))),
            none,
            "embed_tokens_per_layer",
        ),
        (
            "another activation",
            |c| drop(c.insert("hidden_activation".into(), json!("silu"))),
            none,
            "hidden_activation",
        ),
        ("untied output", |c| drop(c.insert("tie_word_embeddings".into(), json!(false))), none, "tie_word_embeddings"),
        (
            "an AltUp projection missing",
            keep,
            |t| t.retain(|t| t.0 != "model.altup_projections.1.weight"),
            "altup_projections.1",
        ),
        (
            "prediction coefficients transposed",
            keep,
            |t| {
                t.iter_mut()
                    .filter(|t| t.0 == "model.layers.3.altup.prediction_coefs.weight")
                    .for_each(|t| t.2.reverse())
            },
            "prediction_coefs",
        ),
        (
            "correct_output_scale missing",
            keep,
            |t| t.retain(|t| t.0 != "model.layers.0.altup.correct_output_scale"),
            "correct_output_scale",
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (i, (what, config, tensors, expect)) in cases.into_iter().enumerate() {
        let dir = variant("gemma3n-e2b", &tmp.path().join(format!("bad{i}")), config, tensors);
        let out = tmp.path().join(format!("bad{i}.gguf"));
        let err = convert_hf(&dir, &out, &ConvertOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{what}: converted without an error"))
            .to_string();
        println!("{what:<44} → {err}");
        assert!(err.contains(expect), "{what}: {err}");
        assert!(!out.exists(), "{what}: left an output file");
    }
}
