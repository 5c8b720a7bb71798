//! The converter on tiny random Gemma 4 checkpoints made by transformers (tests/data/tiny/
//! gemma4-*, scripts/make_tiny_gemma4.py): an E2B-like one (PLE, shared KV, double-wide MLP,
//! proportional RoPE, soft-cap), a MoE like 26B-A4B and a dense K=V one like 31B.
//!
//! - Every type: each checkpoint is converted, loaded in libllama (the vendored llama.cpp,
//!   which has the `gemma4` architecture) with flash attention off and on, and one token per
//!   step, and its logits compared with transformers' float32 logits for a prompt 5× the
//!   sliding window.
//!   Tolerance as in convert_tiny.rs: max |Δlogit| / max |logit| ≤ K · unit(type).
//! - Keys and tensors written (the gguf reader), the text model of a
//!   `Gemma4ForConditionalGeneration` in the hub's layout giving the same file, and libllama's
//!   tokenizer on the converted vocabulary against transformers'.
//! - Blocks bit-identical to `llama_model_quantize` for every mix, from the f32 conversion.
//! - Malformed checkpoints: typed errors naming the field or tensor, never a panic.
//!
//! Our runtime is compared the same way ([`references`]), flash attention off and on.
use gemma_gguf::gguf::{GgmlType, GgufArray, GgufFile, GgufValue};
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::session::{Outputs, Session, SessionOptions};
use gemma_tests::llama_logits::{LlamaOptions, LlamaRunner};
use gemma_tests::llama_quantize::{compare_tensors, llama_quantize, QuantizeRequest};
use gemma_tests::tiny_golden::golden;
use gemma_tests::workspace_root;
use gemma_tools::{convert_hf, requantize, ConvertOptions, OutType, RequantizeOptions, RunOptions, TYPE_NAMES};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// How many rounding units of error the logits may show (as convert_tiny.rs).
const K: f64 = 16.0;

const FIXTURES: [&str; 3] = ["gemma4-e2b", "gemma4-moe", "gemma4-dense"];

/// The rounding unit of a type's weights: 2^-bits (f32: ggml keeps the KV cache and some
/// activations in f16, so f16's unit is the floor; mixes: their base type).
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

/// Converts the checkpoint in `dir` to `ty`, at `out`.
fn convert(dir: &Path, ty: &str, out: &Path) -> gemma_tools::Summary {
    let opts = ConvertOptions { out_type: OutType::parse(ty).unwrap(), ..ConvertOptions::default() };
    convert_hf(dir, out, &opts).unwrap_or_else(|e| panic!("converting {} to {ty}: {e}", dir.display()))
}

fn llama(path: &Path, ids: &[u32], flash_attn: bool) -> Vec<f32> {
    let mut ll = LlamaRunner::load(path, LlamaOptions { capture: &[], n_ctx: 256, n_threads: 2, flash_attn });
    ll.eval(ids, true)
}

/// One token per decode step, as generation feeds them: the sliding-window cache past its
/// window, and the shared-KV layers reading caches filled one step earlier.
fn llama_steps(path: &Path, ids: &[u32]) -> Vec<f32> {
    let mut ll = LlamaRunner::load(path, LlamaOptions { capture: &[], n_ctx: 256, n_threads: 2, flash_attn: false });
    ids.iter().flat_map(|&t| ll.eval(&[t], false)).collect()
}

/// A runtime compared with the goldens: its name and its logits for all positions.
type Reference = (&'static str, fn(&Path, &[u32]) -> Vec<f32>);

/// Our runtime's logits on the converted file, every position.
fn ours(path: &Path, ids: &[u32], flash_attn: bool) -> Vec<f32> {
    let model = Model::load(path, &LoadOptions { threads: Some(2), ..Default::default() })
        .unwrap_or_else(|e| panic!("our runtime loads {}: {e}", path.display()));
    let mut ses = Session::new(&model, SessionOptions { n_ctx: 256, flash_attn, ..Default::default() }).unwrap();
    ses.decode(ids, Outputs::All).unwrap()
}

/// The runtimes compared with transformers, each on every converted file.
fn references() -> Vec<Reference> {
    vec![
        ("llama.cpp", |p, ids| llama(p, ids, false)),
        ("llama.cpp fa", |p, ids| llama(p, ids, true)),
        ("llama.cpp 1×1", llama_steps),
        ("ours", |p, ids| ours(p, ids, false)),
        ("ours fa", |p, ids| ours(p, ids, true)),
    ]
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

fn all_types(name: &str) {
    let g = golden(name);
    let tmp = tempfile::tempdir().unwrap();
    let refs = references();
    println!("{name}: {} positions; error = max|Δlogit| / max|logit|, bound = {K} × unit(type)", g.ids.len());
    let mut header = format!("{:>7} {:>10}", "type", "bound");
    for (r, _) in &refs {
        header += &format!(" {r:>13} {:>6}", "top-1");
    }
    println!("{header} {:>9}", "file KiB");
    let mut failures = Vec::new();
    for (ty, _) in TYPE_NAMES {
        let out = tmp.path().join(format!("{name}-{ty}.gguf"));
        convert(&g.dir, ty, &out);
        let bound = K * unit(ty);
        let mut line = format!("{ty:>7} {bound:>10.2e}");
        let mut logits = Vec::new();
        for (r, run) in &refs {
            let got = run(&out, &g.ids);
            let (e, top1) = distance(&g.logits, &got, g.n_vocab);
            line += &format!(" {e:>13.2e} {:>5.0}%", top1 * 100.0);
            if e > bound {
                failures.push(format!("{ty}: {r} {e:.3e} > {bound:.3e}"));
            }
            logits.push((*r, got));
        }
        println!("{line} {:>9}", std::fs::metadata(&out).unwrap().len() / 1024);
        // Where the same kernels run on the same data, ours and libllama's are the same
        // numbers: the whole prompt in one batch, flash attention off and on.
        for (a, b) in [("ours", "llama.cpp"), ("ours fa", "llama.cpp fa")] {
            let find = |n: &str| &logits.iter().find(|(r, _)| *r == n).expect("a reference of that name").1;
            let d = find(a).iter().zip(find(b)).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            if d != 0.0 {
                failures.push(format!("{ty}: {a} against {b}: max |Δlogit| {d:e}, expected 0"));
            }
        }
    }
    assert!(failures.is_empty(), "{name}: {failures:?}");
}

#[test]
fn e2b_all_types_in_libllama() {
    all_types("gemma4-e2b");
}

#[test]
fn moe_all_types_in_libllama() {
    all_types("gemma4-moe");
}

#[test]
fn dense_all_types_in_libllama() {
    all_types("gemma4-dense");
}

fn u32_of(f: &GgufFile, key: &str) -> u32 {
    f.get_u32(key).unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn u32_array(f: &GgufFile, key: &str) -> Vec<u32> {
    match f.get(key) {
        Some(GgufValue::U32(n)) => vec![*n],
        Some(GgufValue::Array(GgufArray::U32(v))) => v.clone(),
        other => panic!("{key}: {other:?}"),
    }
}

fn names(f: &GgufFile) -> Vec<&str> {
    f.tensors().iter().map(|t| t.name.as_str()).collect()
}

#[test]
fn keys_and_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let open = |name: &str, ty: &str| {
        let out = tmp.path().join(format!("{name}-{ty}.gguf"));
        convert(&workspace_root().join("tests/data/tiny").join(name), ty, &out);
        GgufFile::open(&out).unwrap()
    };

    // E2B-like: 4 layers [S, F, S, F], the last 2 sharing KV; PLE 64 per layer.
    let f = open("gemma4-e2b", "f32");
    assert_eq!(f.get_str("general.architecture").unwrap(), "gemma4");
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gemma4");
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "gemma4");
    assert!(!f.get_str_array("tokenizer.ggml.merges").unwrap().is_empty());
    assert_eq!(u32_of(&f, "gemma4.attention.key_length"), 64);
    assert_eq!(u32_of(&f, "gemma4.attention.value_length"), 64);
    assert_eq!(u32_of(&f, "gemma4.attention.key_length_swa"), 32);
    assert_eq!(u32_of(&f, "gemma4.rope.dimension_count"), 64);
    assert_eq!(u32_of(&f, "gemma4.rope.dimension_count_swa"), 32);
    assert_eq!(u32_of(&f, "gemma4.attention.shared_kv_layers"), 2);
    assert_eq!(u32_of(&f, "gemma4.embedding_length_per_layer_input"), 64);
    assert_eq!(u32_of(&f, "gemma4.attention.sliding_window"), 8);
    assert_eq!(u32_array(&f, "gemma4.feed_forward_length"), vec![32, 32, 64, 64]); // double-wide
    assert_eq!(f.get_f32("gemma4.rope.freq_base").unwrap(), 1e6);
    assert_eq!(f.get_f32("gemma4.rope.freq_base_swa").unwrap(), 1e4);
    assert_eq!(f.get_f32("gemma4.final_logit_softcapping").unwrap(), 8.0);
    match f.get("gemma4.attention.sliding_window_pattern") {
        Some(GgufValue::Array(GgufArray::Bool(b))) => assert_eq!(b, &[true, false, true, false]),
        other => panic!("sliding_window_pattern: {other:?}"),
    }
    let n = names(&f);
    for t in ["per_layer_token_embd.weight", "per_layer_model_proj.weight", "per_layer_proj_norm.weight"] {
        assert!(n.contains(&t), "{t}");
    }
    for t in ["attn_k", "attn_v", "attn_k_norm"] {
        assert!(n.contains(&format!("blk.1.{t}.weight").as_str()), "blk.1.{t}");
        assert!(!n.contains(&format!("blk.2.{t}.weight").as_str()), "blk.2.{t} on a shared layer");
    }
    for t in ["inp_gate", "proj", "post_norm", "layer_output_scale"] {
        assert!(n.contains(&format!("blk.3.{t}.weight").as_str()), "blk.3.{t}");
    }
    let rf = f.tensor("rope_freqs.weight").unwrap();
    assert_eq!(rf.dims, vec![32]);
    let v: Vec<f32> =
        f.tensor_data(rf).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert!(v[..8].iter().all(|&x| x == 1.0) && v[8..].iter().all(|&x| x == 1e30), "{v:?}");

    // The quantiser's choices on the PLE tensors (llama-quant.cpp).
    let q = open("gemma4-e2b", "q4_k_m");
    let ty = |name: &str| q.tensor(name).unwrap().ggml_type;
    assert_eq!(ty("per_layer_token_embd.weight"), GgmlType::Q6_K);
    assert_eq!(ty("token_embd.weight"), GgmlType::Q8_0);
    assert_eq!(ty("per_layer_model_proj.weight"), GgmlType::F32);
    assert_eq!(ty("rope_freqs.weight"), GgmlType::F32);

    // MoE: router, scales, experts; K=V on the full layer (no attn_v); per-layer kv heads.
    let f = open("gemma4-moe", "q4_k_m");
    assert_eq!(u32_of(&f, "gemma4.expert_count"), 4);
    assert_eq!(u32_of(&f, "gemma4.expert_used_count"), 2);
    assert_eq!(u32_of(&f, "gemma4.expert_feed_forward_length"), 32);
    assert_eq!(u32_array(&f, "gemma4.attention.head_count_kv"), vec![2, 1]);
    assert_eq!(u32_of(&f, "gemma4.embedding_length_per_layer_input"), 0);
    let n = names(&f);
    assert!(n.contains(&"blk.0.attn_v.weight") && !n.contains(&"blk.1.attn_v.weight"));
    for t in [
        "ffn_gate_inp.weight",
        "ffn_gate_inp.scale",
        "ffn_gate_up_exps.weight",
        "ffn_down_exps.weight",
        "ffn_down_exps.scale",
        "pre_ffw_norm_2.weight",
        "post_ffw_norm_1.weight",
        "post_ffw_norm_2.weight",
    ] {
        assert!(n.contains(&format!("blk.1.{t}").as_str()), "blk.1.{t}");
    }
    assert_eq!(f.tensor("blk.0.ffn_gate_up_exps.weight").unwrap().dims, vec![128, 64, 4]);
    assert_eq!(f.tensor("blk.0.ffn_down_exps.weight").unwrap().dims, vec![32, 128, 4]);
    assert_eq!(f.tensor("blk.0.ffn_gate_inp.weight").unwrap().ggml_type, GgmlType::F32);

    // Dense: no soft-cap in the config, so 0 ("none") rather than llama.cpp's default 30.
    let f = open("gemma4-dense", "f16");
    assert_eq!(f.get_f32("gemma4.final_logit_softcapping").unwrap(), 0.0);
    assert!(f.get("gemma4.expert_count").is_none());
}

/// A safetensors tensor: (name, dtype, shape, bytes).
type SafeTensor = (String, String, Vec<usize>, Vec<u8>);

/// A safetensors file written by hand.
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

/// The tensors of a safetensors file.
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

/// A copy of fixture `name` in `dir`, with `edit` applied to its config and `retensor` to
/// its tensors.
fn variant(
    name: &str,
    dir: &Path,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
    retensor: impl FnOnce(&mut Vec<SafeTensor>),
) -> PathBuf {
    let src = workspace_root().join("tests/data/tiny").join(name);
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

/// The hub's layout: `Gemma4ForConditionalGeneration` with the text model under
/// `model.language_model.`, a vision tower beside it, and `global_head_dim` /
/// `num_global_key_value_heads` instead of transformers 5's `per_layer_config`. The
/// converted file must equal the one from the `Gemma4ForCausalLM` checkpoint.
#[test]
fn conditional_generation_layout_gives_the_same_file() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["gemma4-dense", "gemma4-e2b"] {
        let dir = variant(
            name,
            &tmp.path().join(name),
            |cfg| {
                let mut text = cfg.clone();
                let plc = text.remove("per_layer_config").unwrap();
                let full = plc.as_object().unwrap().values().next().unwrap();
                text.insert("global_head_dim".into(), full["head_dim"].clone());
                if let Some(kv) = full.get("num_key_value_heads") {
                    text.insert("num_global_key_value_heads".into(), kv.clone());
                }
                text.insert("model_type".into(), json!("gemma4_text"));
                text.remove("architectures");
                cfg.clear();
                cfg.insert("architectures".into(), json!(["Gemma4ForConditionalGeneration"]));
                cfg.insert("model_type".into(), json!("gemma4"));
                cfg.insert("text_config".into(), Value::Object(text));
                cfg.insert("vision_config".into(), json!({"model_type": "gemma4_vision", "hidden_size": 8}));
            },
            |tensors| {
                for t in tensors.iter_mut() {
                    t.0 = t.0.replacen("model.", "model.language_model.", 1);
                }
                tensors.push((
                    "model.vision_tower.encoder.layers.0.mlp.weight".into(),
                    "F32".into(),
                    vec![2],
                    vec![0; 8],
                ));
            },
        );
        let (a, b) = (tmp.path().join(format!("{name}-a.gguf")), tmp.path().join(format!("{name}-b.gguf")));
        convert(&workspace_root().join("tests/data/tiny").join(name), "q8_0", &a);
        let s = convert(&dir, "q8_0", &b);
        assert!(s.skipped.iter().any(|w| w.contains("vision_tower")), "{:?}", s.skipped);
        let n = compare_tensors(&a, &b);
        let (fa, fb) = (GgufFile::open(&a).unwrap(), GgufFile::open(&b).unwrap());
        for (k, v) in fa.metadata().filter(|(k, _)| k.starts_with("gemma4.") || k.starts_with("tokenizer.")) {
            assert_eq!(fb.get(k), Some(v), "{name}: {k}");
        }
        println!("{name}: Gemma4ForConditionalGeneration layout → the same {n} tensors and keys");
    }
}

/// libllama's `gemma4` tokenizer on the converted vocabulary (BPE with the written merges)
/// against transformers' tokenizer, on texts without control tokens.
#[test]
fn libllama_tokenizes_as_transformers() {
    let g = golden("gemma4-e2b");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tok.gguf");
    convert(&g.dir, "q8_0", &out);
    let ll = LlamaRunner::load(&out, LlamaOptions { capture: &[], n_ctx: 64, n_threads: 1, flash_attn: false });
    for (text, ids) in &g.tokenizer {
        let got = ll.tokenize(text, false);
        println!("{text:?}: transformers {ids:?}, llama.cpp {got:?}");
        if !text.contains("<|turn>") && !text.contains("<|channel>") {
            assert_eq!(&got, ids, "{text:?}");
        }
    }
}

/// (our type, llama_ftype, pure): as quantize_llama.rs.
const QUANT_CASES: [(&str, u32, bool); 9] = [
    ("q8_0", 7, false),
    ("q4_k_m", 15, false),
    ("q4_k_s", 14, false),
    ("q5_k_m", 17, false),
    ("q5_k_s", 16, false),
    ("q4_k", 15, true),
    ("q6_k", 18, true),
    ("q4_0", 2, true),
    ("q5_0", 8, true),
];

/// `gemma quantize` of the f32 conversion, and `gemma convert` straight to the type, against
/// `llama_model_quantize` of the f32 file: every tensor with the same type and bytes, so the PLE table, router, scales, expert and
/// K=V choices are llama.cpp's.
#[test]
fn requantize_matches_llama_model_quantize() {
    let tmp = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let f32 = tmp.path().join(format!("{name}-f32.gguf"));
        convert(&workspace_root().join("tests/data/tiny").join(name), "f32", &f32);
        for (ty, ftype, pure) in QUANT_CASES {
            let ours = tmp.path().join(format!("{name}-ours-{ty}.gguf"));
            let theirs = tmp.path().join(format!("{name}-llama-{ty}.gguf"));
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
            // Converting straight from the checkpoint chooses and rounds the same way.
            let direct = tmp.path().join(format!("{name}-direct-{ty}.gguf"));
            convert(&workspace_root().join("tests/data/tiny").join(name), ty, &direct);
            compare_tensors(&direct, &theirs);
            let mut types: Vec<&str> = s.tensors.iter().map(|t| t.ty.as_str()).collect();
            types.sort();
            types.dedup();
            println!("{name} {ty:>7}: {n} tensors identical to llama_model_quantize (types {types:?})");
        }
    }
}

/// One malformed input: a config edit or a tensor edit, and a word the error must contain.
struct Bad {
    what: &'static str,
    config: fn(&mut serde_json::Map<String, Value>),
    tensors: fn(&mut Vec<SafeTensor>),
    expect: &'static str,
}

fn no_tensor_edit(_: &mut Vec<SafeTensor>) {}
fn no_config_edit(_: &mut serde_json::Map<String, Value>) {}

#[test]
fn malformed_checkpoints_are_typed_errors() {
    let cases: Vec<(&str, Bad)> = vec![
        (
            "gemma4-e2b",
            Bad {
                what: "hidden_size missing",
                config: |c| {
                    c.remove("hidden_size");
                },
                tensors: no_tensor_edit,
                expect: "hidden_size",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "head_dim as a string",
                config: |c| {
                    c.insert("head_dim".into(), json!("32"));
                },
                tensors: no_tensor_edit,
                expect: "head_dim",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "2^40 layers",
                config: |c| {
                    c.insert("num_hidden_layers".into(), json!(1u64 << 40));
                },
                tensors: no_tensor_edit,
                expect: "num_hidden_layers",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "more shared layers than layers",
                config: |c| {
                    c.insert("num_kv_shared_layers".into(), json!(9));
                },
                tensors: no_tensor_edit,
                expect: "num_kv_shared_layers",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "shared KV from a layout llama.cpp cannot read",
                config: |c| {
                    c.insert("num_kv_shared_layers".into(), json!(1));
                },
                tensors: no_tensor_edit,
                expect: "num_kv_shared_layers",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "last layer sliding",
                config: |c| {
                    c.insert(
                        "layer_types".into(),
                        json!(["full_attention", "sliding_attention", "full_attention", "sliding_attention"]),
                    );
                },
                tensors: no_tensor_edit,
                expect: "layer_types",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "layer_types of the wrong length",
                config: |c| {
                    c.insert("layer_types".into(), json!(["full_attention"]));
                },
                tensors: no_tensor_edit,
                expect: "layer_types",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "unknown per-layer override",
                config: |c| {
                    c["per_layer_config"]["1"]["rope_theta"] = json!(5);
                },
                tensors: no_tensor_edit,
                expect: "per_layer_config",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "per-layer override of layer 99",
                config: |c| {
                    c["per_layer_config"]["99"] = json!({"head_dim": 64});
                },
                tensors: no_tensor_edit,
                expect: "per_layer_config",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "heads not a multiple of kv heads",
                config: |c| {
                    c.insert("num_key_value_heads".into(), json!(3));
                },
                tensors: no_tensor_edit,
                expect: "num_key_value_heads",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "rope type yarn",
                config: |c| {
                    c["rope_parameters"]["full_attention"]["rope_type"] = json!("yarn");
                },
                tensors: no_tensor_edit,
                expect: "rope_type",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "rope theta missing",
                config: |c| {
                    c["rope_parameters"]["sliding_attention"].as_object_mut().unwrap().remove("rope_theta");
                },
                tensors: no_tensor_edit,
                expect: "rope_theta",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "partial rotary factor 2",
                config: |c| {
                    c["rope_parameters"]["full_attention"]["partial_rotary_factor"] = json!(2.0);
                },
                tensors: no_tensor_edit,
                expect: "partial_rotary_factor",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "softcap 0",
                config: |c| {
                    c.insert("final_logit_softcapping".into(), json!(0.0));
                },
                tensors: no_tensor_edit,
                expect: "final_logit_softcapping",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "moe flag as a string",
                config: |c| {
                    c.insert("enable_moe_block".into(), json!("yes"));
                },
                tensors: no_tensor_edit,
                expect: "enable_moe_block",
            },
        ),
        (
            "gemma4-e2b",
            Bad {
                what: "PLE width that disagrees with the tensors",
                config: |c| {
                    c.insert("hidden_size_per_layer_input".into(), json!(32));
                },
                tensors: no_tensor_edit,
                expect: "embed_tokens_per_layer",
            },
        ),
        (
            "gemma4-moe",
            Bad {
                what: "2^40 experts",
                config: |c| {
                    c.insert("num_experts".into(), json!(1u64 << 40));
                },
                tensors: no_tensor_edit,
                expect: "num_experts",
            },
        ),
        (
            "gemma4-moe",
            Bad {
                what: "top-k above the expert count",
                config: |c| {
                    c.insert("top_k_experts".into(), json!(5));
                },
                tensors: no_tensor_edit,
                expect: "top_k_experts",
            },
        ),
        (
            "gemma4-moe",
            Bad {
                what: "moe_intermediate_size missing",
                config: |c| {
                    c.remove("moe_intermediate_size");
                },
                tensors: no_tensor_edit,
                expect: "moe_intermediate_size",
            },
        ),
        (
            "gemma4-moe",
            Bad {
                what: "expert count disagreeing with the tensors",
                config: |c| {
                    c.insert("num_experts".into(), json!(3));
                },
                tensors: no_tensor_edit,
                expect: "router",
            },
        ),
        (
            "gemma4-moe",
            Bad {
                what: "experts tensor of the wrong shape",
                config: no_config_edit,
                tensors: |t| {
                    let e = t.iter_mut().find(|t| t.0 == "model.layers.1.experts.gate_up_proj").unwrap();
                    e.2 = vec![4, 128, 64];
                },
                expect: "experts.gate_up_proj",
            },
        ),
        (
            "gemma4-moe",
            Bad {
                what: "router missing",
                config: no_config_edit,
                tensors: |t| t.retain(|t| t.0 != "model.layers.0.router.proj.weight"),
                expect: "router.proj",
            },
        ),
        (
            "gemma4-dense",
            Bad {
                what: "a v_proj on a K=V layer",
                config: no_config_edit,
                tensors: |t| {
                    let k = t.iter().find(|t| t.0 == "model.layers.1.self_attn.k_proj.weight").unwrap().clone();
                    t.push(("model.layers.1.self_attn.v_proj.weight".into(), k.1, k.2, k.3));
                },
                expect: "v_proj",
            },
        ),
        (
            "gemma4-dense",
            Bad {
                what: "q_proj transposed",
                config: no_config_edit,
                tensors: |t| {
                    let q = t.iter_mut().find(|t| t.0 == "model.layers.0.self_attn.q_proj.weight").unwrap();
                    q.2.reverse();
                },
                expect: "q_proj",
            },
        ),
        (
            "gemma4-dense",
            Bad {
                what: "an int64 weight",
                config: no_config_edit,
                tensors: |t| {
                    let q = t.iter_mut().find(|t| t.0 == "model.norm.weight").unwrap();
                    q.1 = "I64".into();
                    q.2 = vec![q.3.len() / 8];
                },
                expect: "norm",
            },
        ),
    ];
    let more: Vec<(&str, Bad)> = vec![
        (
            "gemma4-dense",
            Bad {
                what: "another activation",
                config: |c| {
                    c.insert("hidden_activation".into(), json!("silu"));
                },
                tensors: no_tensor_edit,
                expect: "hidden_activation",
            },
        ),
        (
            "gemma4-dense",
            Bad {
                what: "fully bidirectional",
                config: |c| {
                    c.insert("use_bidirectional_attention".into(), json!("all"));
                },
                tensors: no_tensor_edit,
                expect: "use_bidirectional_attention",
            },
        ),
        (
            "gemma4-dense",
            Bad {
                what: "untied output",
                config: |c| {
                    c.insert("tie_word_embeddings".into(), json!(false));
                },
                tensors: no_tensor_edit,
                expect: "tie_word_embeddings",
            },
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (i, (fixture, bad)) in cases.into_iter().chain(more).enumerate() {
        let dir = variant(fixture, &tmp.path().join(format!("bad{i}")), bad.config, bad.tensors);
        let out = tmp.path().join(format!("bad{i}.gguf"));
        let err = convert_hf(&dir, &out, &ConvertOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{}: converted without an error", bad.what))
            .to_string();
        println!("{:<48} → {err}", bad.what);
        assert!(err.contains(bad.expect), "{}: {err}", bad.what);
        assert!(!out.exists(), "{}: left an output file", bad.what);
    }
}
