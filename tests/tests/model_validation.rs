//! Model-level malformed input (BAD-INPUTS.md §13, §24–28): a tiny valid `gemma3` file
//! (`gemma_tests::tiny_model`, random F32 weights) loads and decodes, then one defect per
//! case, each of which must end in a typed [`Error`] naming the key, tensor or limit, never
//! a panic or an abort. Each test prints a table of case → error message.
//!
//! A panic inside a case is caught and reported as that case's failure, so one bad case
//! does not hide the others. Cases that reach ggml's kernels (a bad file that loads and is
//! only caught, or not, at the first decode) run in child processes, so that an abort or a
//! crash inside ggml fails that case instead of killing the whole test binary.

use gemma_gguf::ggml::Type;
use gemma_gguf::gguf::{GgmlType, GgufError, GgufValue};
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::names::{general, llm, tensor, tokenizer as tok};
use gemma_gguf::session::{Outputs, Session, SessionOptions};
use gemma_gguf::Error;
use gemma_tests::llama_logits::{LlamaOptions, LlamaRunner};
use gemma_tests::tiny_model::{ids, key, TensorSpec, TinyConfig, TinyModel};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::time::Instant;
use tempfile::TempDir;

/// Context of every session here: more than the 20-token prompt, less than the 128 the
/// tiny model was "trained" with.
const N_CTX: u32 = 64;
/// Batch and one-by-one decoding of the same F32 model differ in summation order, which can
/// flip the rounding of a K/V value stored in the f16 cache (2^-11 relative); the tiny
/// model's logits are a few units at most, so this stays near 1e-4.
const TOL_BATCH: f32 = 1e-3;

/// A prompt of `n` tokens: BOS, then words and byte tokens (`A`…`Z`) in turn, cycling, so
/// that it reaches past the 8-token sliding window and can fill any context.
fn prompt(m: &TinyModel, n: usize) -> Vec<u32> {
    let first_word = ids::FIRST_BYTE + 256;
    let words = (first_word..m.n_vocab()).cycle();
    let bytes = (ids::FIRST_BYTE + 0x41..ids::FIRST_BYTE + 0x5b).cycle();
    std::iter::once(ids::BOS).chain(words.zip(bytes).flat_map(|(w, b)| [w, b])).take(n).collect()
}

/// Writes `m` into `dir` as `name.gguf` and loads it with the default options, except for
/// one compute thread: graphs this small gain nothing from more, and ggml's spinning worker
/// threads crawl when the machine is busy (as it is with the tests running in parallel).
/// [`valid_tiny_model_loads_and_decodes`] also loads with the plain defaults.
fn load(dir: &TempDir, name: &str, m: &TinyModel) -> gemma_gguf::Result<Model> {
    let path = dir.path().join(format!("{name}.gguf"));
    m.write(&path)?;
    Model::load(&path, &LoadOptions { threads: Some(1), ..Default::default() })
}

fn session(model: &Model, n_ctx: u32) -> Session<'_> {
    Session::new(model, SessionOptions { n_ctx, ..Default::default() }).expect("a session on the tiny model")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "logit counts differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn assert_finite(what: &str, logits: &[f32]) {
    let bad = logits.iter().filter(|v| !v.is_finite()).count();
    assert_eq!(bad, 0, "{what}: {bad} of {} logits are not finite", logits.len());
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "(non-string panic payload)".into(),
    }
}

/// A scalar as the table shows it.
fn show(v: &GgufValue) -> String {
    match v {
        GgufValue::U32(x) => x.to_string(),
        GgufValue::F32(x) => x.to_string(),
        other => format!("{other:?}"),
    }
}

/// What an error must be for the case to pass.
type Expect = Box<dyn Fn(&Error) -> bool>;
/// One defect, applied to a valid [`TinyModel`].
type Edit = Box<dyn Fn(&mut TinyModel)>;

fn missing_key(k: impl Into<String>) -> Expect {
    let k = k.into();
    Box::new(move |e| matches!(e, Error::Gguf(GgufError::MissingKey { key }) if *key == k))
}

fn wrong_type(k: impl Into<String>) -> Expect {
    let k = k.into();
    Box::new(move |e| matches!(e, Error::Gguf(GgufError::WrongType { key, .. }) if *key == k))
}

fn bad_hparam(k: impl Into<String>) -> Expect {
    let k = k.into();
    Box::new(move |e| matches!(e, Error::BadHparam { key, .. } if *key == k))
}

fn array_length(k: &'static str) -> Expect {
    Box::new(move |e| matches!(e, Error::TokenizerArrayLength { key, .. } if *key == k))
}

fn special_id(k: &'static str) -> Expect {
    Box::new(move |e| matches!(e, Error::TokenizerSpecialId { key, .. } if *key == k))
}

fn tensor_shape(n: impl Into<String>) -> Expect {
    let n = n.into();
    Box::new(move |e| matches!(e, Error::TensorShape { name, .. } if *name == n))
}

fn missing_tensor(n: impl Into<String>) -> Expect {
    let n = n.into();
    Box::new(move |e| matches!(e, Error::MissingTensor { name } if *name == n))
}

/// Sets key `k` to `v`.
fn set(k: String, v: GgufValue) -> Edit {
    Box::new(move |m| _ = m.set(&k, v.clone()))
}

/// Deletes key `k`.
fn remove(k: String) -> Edit {
    Box::new(move |m| _ = m.remove(&k))
}

/// Drops tensor `name`.
fn drop_tensor(name: String) -> Edit {
    Box::new(move |m| _ = m.remove_tensor(&name))
}

/// One defect of one kind of file: (case, the valid file, the defect, the error expected).
type Case = (String, fn() -> TinyModel, Edit, Expect);

/// Loads every case's file and prints the table; each must end in its expected error.
fn check_load_cases(cases: &[Case], title: &str) {
    let dir = TempDir::new().expect("temp dir");
    let mut table = Table::default();
    for (i, (name, base, edit, expect)) in cases.iter().enumerate() {
        let mut m = base();
        edit(&mut m);
        table.check(name, expect, || load(&dir, &format!("case{i}"), &m));
    }
    table.finish(title);
}

/// Case → result → message rows, printed once at the end of a test.
#[derive(Default)]
struct Table {
    rows: Vec<(String, bool, String)>,
}

impl Table {
    /// Records the outcome of `run` for case `name`: it must be an error that `expect` accepts.
    fn check<T>(&mut self, name: &str, expect: &Expect, run: impl FnOnce() -> gemma_gguf::Result<T>) {
        let (ok, msg) = match catch_unwind(AssertUnwindSafe(run)) {
            Ok(Err(e)) if expect(&e) => (true, e.to_string()),
            Ok(Err(e)) => (false, format!("unexpected error {e:?}: {e}")),
            Ok(Ok(_)) => (false, "accepted: no error".into()),
            Err(p) => (false, format!("PANICKED: {}", panic_message(p.as_ref()))),
        };
        self.rows.push((name.to_owned(), ok, msg));
    }

    /// Prints the table and fails naming every case that did not give the expected error.
    fn finish(self, title: &str) {
        let width = self.rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let mut out = format!("\n{title}\n");
        for (name, ok, msg) in &self.rows {
            let verdict = if *ok { "ok  " } else { "FAIL" };
            writeln!(out, "  {name:<width$}  {verdict}  {msg}").expect("write to a String");
        }
        println!("{out}");
        let failed: Vec<_> = self.rows.iter().filter(|r| !r.1).map(|r| r.0.as_str()).collect();
        assert!(failed.is_empty(), "{} case(s) without the expected error: {failed:?}", failed.len());
    }
}

/// The valid tiny model loads, and 20 tokens decoded in one batch, in batches of 7 and one
/// by one give the same finite logits (the prompt runs past the 8-token window).
#[test]
fn valid_tiny_model_loads_and_decodes() {
    let dir = TempDir::new().expect("temp dir");
    let m = TinyModel::new(TinyConfig::default());
    let t = Instant::now();
    let model = load(&dir, "valid", &m).expect("the valid tiny model loads");
    let defaults = Model::load(dir.path().join("valid.gguf"), &LoadOptions::default());
    assert_eq!(defaults.expect("loads with LoadOptions::default()").n_vocab(), m.n_vocab());
    println!("loaded in {:.2?}: {} weight bytes, n_vocab {}", t.elapsed(), model.weight_bytes(), model.n_vocab());
    assert_eq!(model.n_vocab(), m.n_vocab());
    assert_eq!(model.tokenizer().vocab_size(), m.n_vocab() as usize);
    assert_eq!(model.tokenizer().bos(), ids::BOS);
    assert_eq!(model.tokenizer().end_of_turn(), Some(ids::END_OF_TURN));

    let tokens = prompt(&m, 20);
    assert_eq!(tokens.len(), 20);
    let n_vocab = model.n_vocab() as usize;
    let batch = session(&model, N_CTX).decode(&tokens, Outputs::All).expect("decode 20 tokens in one batch");
    assert_eq!(batch.len(), tokens.len() * n_vocab);
    assert_finite("one batch", &batch);

    let mut one = session(&model, N_CTX);
    let mut singles = Vec::with_capacity(batch.len());
    for &t in &tokens {
        singles.extend(one.decode(&[t], Outputs::Last).expect("decode one token"));
    }
    assert_eq!(one.n_past(), 20);
    let diff = max_diff(&batch, &singles);
    let max_abs = batch.iter().fold(0f32, |a, v| a.max(v.abs()));
    println!("one batch vs one by one: maxdiff = {diff:e} (tolerance {TOL_BATCH:e}, max |logit| {max_abs})");
    assert!(diff <= TOL_BATCH, "batch and one-by-one logits differ by {diff}");

    let opts = SessionOptions { n_ctx: N_CTX, n_ubatch: 7, ..Default::default() };
    let chunked = Session::new(&model, opts).and_then(|mut s| s.decode(&tokens, Outputs::All)).expect("n_ubatch 7");
    let diff = max_diff(&batch, &chunked);
    println!("one batch vs batches of 7: maxdiff = {diff:e}");
    assert!(diff <= TOL_BATCH, "batch and chunked logits differ by {diff}");

    // The positive control for the q8_0-without-flash-attention refusal below.
    let flash = SessionOptions { n_ctx: N_CTX, flash_attn: true, kv_type: Type::Q8_0, ..Default::default() };
    let q8 = Session::new(&model, flash).and_then(|mut s| s.decode(&tokens, Outputs::All)).expect("q8_0 KV, flash");
    assert_finite("q8_0 KV with flash attention", &q8);
    println!("one batch vs q8_0 KV with flash attention: maxdiff = {:e}", max_diff(&batch, &q8));
}

/// Quantised weights (Q8_0, repacked on CPUs that have such kernels) and F16 load and decode.
#[test]
fn quantised_tiny_models_decode() {
    let dir = TempDir::new().expect("temp dir");
    for ty in [GgmlType::F16, GgmlType::Q8_0] {
        let m = TinyModel::new(TinyConfig { weight_type: ty, ..Default::default() });
        let model = load(&dir, ty.name(), &m).unwrap_or_else(|e| panic!("{ty:?} tiny model: {e}"));
        let logits = session(&model, N_CTX).decode(&prompt(&m, 20), Outputs::All).expect("decode");
        assert_finite(ty.name(), &logits);
        println!("{}: {} weights repacked, logits finite", ty.name(), model.repacked_weights());
    }
}

/// One defect per case in an otherwise valid file: `Model::load` must fail with the error
/// that names it (BAD-INPUTS.md §13).
#[test]
fn load_rejects_each_defect() {
    let both = |a: &str, b: &str, v: u32| -> Edit {
        let (a, b) = (key(a), key(b));
        Box::new(move |m| _ = m.set(&a, v).set(&b, v))
    };
    let edit_tensor = |name: String, f: fn(&mut TensorSpec)| -> Edit { Box::new(move |m| f(m.tensor_mut(&name))) };
    let n_vocab = TinyModel::new(TinyConfig::default()).n_vocab();
    let (blk, global) = (tensor::block, tensor::global);
    let embd = global(tensor::TOKEN_EMBD);
    let mut cases: Vec<(String, Edit, Expect)> = Vec::new();

    // Required keys, each missing.
    for suffix in [
        llm::BLOCK_COUNT,
        llm::EMBEDDING_LENGTH,
        llm::HEAD_COUNT,
        llm::CONTEXT_LENGTH,
        llm::FEED_FORWARD_LENGTH,
        llm::RMS_EPS,
    ] {
        cases.push((format!("{suffix} missing"), remove(key(suffix)), missing_key(key(suffix))));
    }
    // Keys of the wrong type: getters never convert a string, float or array into a count.
    let wrong: [(&str, GgufValue); 5] = [
        (llm::BLOCK_COUNT, "2".into()),
        (llm::BLOCK_COUNT, 2.0_f32.into()),
        (llm::BLOCK_COUNT, vec![2_u32].into()),
        (llm::RMS_EPS, 1_u32.into()),
        (llm::SLIDING_WINDOW, "8".into()),
    ];
    for (suffix, v) in wrong {
        let name = format!("{suffix} of type {}", v.kind());
        cases.push((name, set(key(suffix), v), wrong_type(key(suffix))));
    }
    // Values no model can have: the error names the key that holds them.
    let nan = f32::NAN;
    let absurd: [(&str, GgufValue); 24] = [
        (llm::BLOCK_COUNT, 0_u32.into()),
        (llm::BLOCK_COUNT, 1_000_000_u32.into()),
        (llm::BLOCK_COUNT, u32::MAX.into()),
        (llm::CONTEXT_LENGTH, 0_u32.into()),
        (llm::EMBEDDING_LENGTH, 0_u32.into()),
        (llm::FEED_FORWARD_LENGTH, 0_u32.into()),
        (llm::HEAD_COUNT, 0_u32.into()),
        (llm::HEAD_COUNT_KV, 0_u32.into()),
        (llm::HEAD_COUNT_KV, 3_u32.into()), // 2 heads: not divisible
        (llm::HEAD_COUNT_KV, 4_u32.into()), // more KV heads than heads
        (llm::KEY_LENGTH, 0_u32.into()),
        (llm::ROPE_FREQ_BASE, 0.0_f32.into()),
        (llm::ROPE_FREQ_BASE, (-1e4_f32).into()),
        (llm::ROPE_FREQ_BASE, nan.into()),
        (llm::ROPE_FREQ_BASE, f32::INFINITY.into()),
        (llm::ROPE_FREQ_BASE_SWA, 0.0_f32.into()),
        (llm::ROPE_FREQ_BASE_SWA, nan.into()),
        (llm::ROPE_SCALING_FACTOR, 0.0_f32.into()),
        (llm::RMS_EPS, 0.0_f32.into()),
        (llm::RMS_EPS, (-1e-6_f32).into()),
        (llm::RMS_EPS, nan.into()),
        (llm::SLIDING_WINDOW, 0_u32.into()),
        (llm::FINAL_LOGIT_SOFTCAPPING, 0.0_f32.into()),
        (llm::FINAL_LOGIT_SOFTCAPPING, nan.into()),
    ];
    for (suffix, v) in absurd {
        cases.push((format!("{suffix} = {}", show(&v)), set(key(suffix), v), bad_hparam(key(suffix))));
    }
    let k = key;
    let one_offs: Vec<(String, Edit, Expect)> = vec![
        ("key_length = value_length = 31 (odd)".into(), both(llm::KEY_LENGTH, llm::VALUE_LENGTH, 31), {
            bad_hparam(k(llm::KEY_LENGTH))
        }),
        ("value_length 16 ≠ key_length 32".into(), set(k(llm::VALUE_LENGTH), 16_u32.into()), {
            bad_hparam(k(llm::KEY_LENGTH))
        }),
        // head_count × key_length = 2 × 2^31 overflows u32 (the weight shapes are computed from it).
        ("key_length = value_length = 2^31".into(), both(llm::KEY_LENGTH, llm::VALUE_LENGTH, 1 << 31), {
            bad_hparam(k(llm::KEY_LENGTH))
        }),
        (
            "sliding_window_pattern: 3 bools, 2 layers".into(),
            { set(k(llm::SLIDING_WINDOW_PATTERN), vec![true, false, true].into()) },
            bad_hparam(k(llm::SLIDING_WINDOW_PATTERN)),
        ),
        ("architecture missing".into(), remove(general::ARCHITECTURE.into()), missing_key(general::ARCHITECTURE)),
        ("architecture \"llama\"".into(), set(general::ARCHITECTURE.into(), "llama".into()), {
            Box::new(|e: &Error| matches!(e, Error::UnsupportedArch { arch } if arch == "llama"))
        }),
        ("tokenizer.ggml.model \"gpt2\"".into(), set(tok::MODEL.into(), "gpt2".into()), {
            Box::new(|e: &Error| matches!(e, Error::TokenizerUnsupportedModel { model } if model == "gpt2"))
        }),
        ("tokenizer tokens missing".into(), remove(tok::TOKENS.into()), missing_key(tok::TOKENS)),
        ("tokenizer scores one short".into(), set(tok::SCORES.into(), vec![0.0_f32; 299].into()), {
            array_length(tok::SCORES)
        }),
        ("tokenizer token_type one long".into(), set(tok::TOKEN_TYPE.into(), vec![1_i32; 301].into()), {
            array_length(tok::TOKEN_TYPE)
        }),
        ("bos id = n_vocab".into(), set(tok::BOS_ID.into(), n_vocab.into()), special_id(tok::BOS_ID)),
        ("eos id u32::MAX".into(), set(tok::EOS_ID.into(), u32::MAX.into()), special_id(tok::EOS_ID)),
        ("unk id = n_vocab".into(), set(tok::UNK_ID.into(), n_vocab.into()), special_id(tok::UNK_ID)),
        ("pad id = n_vocab + 7".into(), set(tok::PAD_ID.into(), (n_vocab + 7).into()), special_id(tok::PAD_ID)),
        ("block_count 3, 2 layers of tensors".into(), set(k(llm::BLOCK_COUNT), 3_u32.into()), {
            missing_tensor(blk(2, tensor::ATTN_NORM))
        }),
        ("token_embd [n_embd, n_vocab - 1]".into(), edit_tensor(embd.clone(), |t| t.dims = vec![64, 299]), {
            tensor_shape(embd.clone())
        }),
        ("token_embd transposed".into(), edit_tensor(embd.clone(), |t| t.dims = vec![300, 64]), {
            tensor_shape(embd.clone())
        }),
        ("token_embd missing".into(), drop_tensor(embd.clone()), missing_tensor(embd)),
        (
            "untied output [n_embd, n_vocab + 1]".into(),
            {
                let name = global(tensor::OUTPUT);
                Box::new(move |m: &mut TinyModel| {
                    _ = m.add_tensor(TensorSpec { name: name.clone(), dims: vec![64, 301], ty: GgmlType::F32 })
                })
            },
            tensor_shape(global(tensor::OUTPUT)),
        ),
        (
            "blk.1.ffn_down missing".into(),
            drop_tensor(blk(1, tensor::FFN_DOWN)),
            missing_tensor(blk(1, tensor::FFN_DOWN)),
        ),
        (
            "blk.0.attn_q [n_embd, n_embd + 32]".into(),
            edit_tensor(blk(0, tensor::ATTN_Q), |t| t.dims = vec![64, 96]),
            { tensor_shape(blk(0, tensor::ATTN_Q)) },
        ),
        ("blk.0.attn_k_norm 2-D".into(), edit_tensor(blk(0, tensor::ATTN_K_NORM), |t| t.dims = vec![32, 1]), {
            tensor_shape(blk(0, tensor::ATTN_K_NORM))
        }),
    ];
    cases.extend(one_offs);

    let dir = TempDir::new().expect("temp dir");
    let t = Instant::now();
    let mut table = Table::default();
    for (i, (name, edit, expect)) in cases.iter().enumerate() {
        let mut m = TinyModel::new(TinyConfig::default());
        edit(&mut m);
        table.check(name, expect, || load(&dir, &format!("case{i}"), &m));
    }
    println!("{} load cases in {:.2?}", cases.len(), t.elapsed());
    table.finish("Model::load: case → error");
}

/// Names the case a child process runs (see [`load_or_first_decode_rejects_each_defect`]).
const CHILD_CASE: &str = "GEMMA_MODEL_VALIDATION_CASE";
/// The test a child process runs, and the line it reports with.
const CHILD_TEST: &str = "decode_case_in_child";
const CHILD_RESULT: &str = "CASE-RESULT";

/// Defects a file can carry past `Model::load` into the first graph: the first decode must
/// then fail with a typed error, never abort inside ggml. Rope dims must be even and at
/// most head_dim (ggml_rope asserts it); weight types must have kernels for the ops that
/// read them (`mul_mat` and `mul` on the CPU).
fn decode_cases() -> Vec<(&'static str, Edit, Expect)> {
    let rope_dims = |n: u32| -> Edit { Box::new(move |m| _ = m.set(&key(llm::ROPE_DIMENSION_COUNT), n)) };
    let retype = |name: String, ty: GgmlType| -> Edit { Box::new(move |m| m.tensor_mut(&name).ty = ty) };
    let rope_err: fn() -> Expect = || {
        Box::new(|e| {
            matches!(e, Error::OutOfRange { what: "rope n_dims", .. })
                || matches!(e, Error::BadHparam { key: k, .. } if *k == key(llm::ROPE_DIMENSION_COUNT))
        })
    };
    // Refused at load, when the graph is built or before it runs; any typed error names it.
    let any_error: fn() -> Expect = || Box::new(|_| true);
    let blk = tensor::block;
    vec![
        ("rope.dimension_count 0", rope_dims(0), rope_err()),
        ("rope.dimension_count 31 (odd)", rope_dims(31), rope_err()),
        ("rope.dimension_count 64 > head_dim", rope_dims(64), rope_err()),
        ("rope.dimension_count 2^31", rope_dims(1 << 31), rope_err()),
        ("token_embd of type i32", retype(tensor::global(tensor::TOKEN_EMBD), GgmlType::I32), any_error()),
        ("blk.0.attn_q of type i32", retype(blk(0, tensor::ATTN_Q), GgmlType::I32), any_error()),
        ("blk.0.ffn_down of type i16", retype(blk(0, tensor::FFN_DOWN), GgmlType::I16), any_error()),
        ("blk.0.attn_norm of type q8_0", retype(blk(0, tensor::ATTN_NORM), GgmlType::Q8_0), any_error()),
        ("output_norm of type i32", retype(tensor::global(tensor::OUTPUT_NORM), GgmlType::I32), any_error()),
    ]
}

/// Runs [`decode_cases`] one per child process (this test binary, running
/// [`decode_case_in_child`]), so that a case that aborts inside ggml shows up as that
/// case's failure instead of killing every other test.
#[test]
fn load_or_first_decode_rejects_each_defect() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut table = Table::default();
    for (i, (name, ..)) in decode_cases().iter().enumerate() {
        let out = Command::new(&exe)
            .args(["--exact", CHILD_TEST, "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_CASE, i.to_string())
            // ggml's abort handler otherwise attaches gdb to print a backtrace.
            .env("GGML_NO_BACKTRACE", "1")
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // libtest may print "test decode_case_in_child ... " on the same line first.
        let report = stdout.lines().find_map(|l| l.split_once(CHILD_RESULT).map(|(_, r)| r));
        let row = match (out.status.success(), report) {
            (true, Some(r)) => {
                let (verdict, msg) = r.trim_start().split_once(' ').unwrap_or((r, ""));
                (name.to_string(), verdict == "ok", msg.to_owned())
            }
            _ => {
                let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                (name.to_string(), false, format!("CHILD DIED ({}): {last}", out.status))
            }
        };
        table.rows.push(row);
    }
    table.finish("load, then the first decode (one child process per case): case → error");
}

/// One case of [`decode_cases`], chosen by `$GEMMA_MODEL_VALIDATION_CASE`: writes the file,
/// loads it, decodes 4 tokens, and prints `CASE-RESULT ok|FAIL [at stage] message`.
#[test]
#[ignore = "a child of load_or_first_decode_rejects_each_defect"]
fn decode_case_in_child() {
    let Some(i) = std::env::var(CHILD_CASE).ok().and_then(|v| v.parse::<usize>().ok()) else {
        println!("{CHILD_CASE} is not set: nothing to run");
        return;
    };
    let cases = decode_cases();
    let (name, edit, expect) = &cases[i];
    let mut m = TinyModel::new(TinyConfig::default());
    edit(&mut m);
    let dir = TempDir::new().expect("temp dir");
    let mut stage = "load";
    let mut table = Table::default();
    table.check(name, expect, || {
        let model = load(&dir, "case", &m)?;
        stage = "session";
        let mut s = Session::new(&model, SessionOptions { n_ctx: N_CTX, ..Default::default() })?;
        stage = "decode";
        s.decode(&prompt(&m, 4), Outputs::Last)
    });
    let (_, ok, msg) = &table.rows[0];
    println!("{CHILD_RESULT} {} [at {stage}] {msg}", if *ok { "ok" } else { "FAIL" });
}

/// `Session::new` refuses contexts of 0, past the training context, and a q8_0 cache
/// without flash attention (BAD-INPUTS.md §25, §28).
#[test]
fn session_rejects_bad_options() {
    let dir = TempDir::new().expect("temp dir");
    let m = TinyModel::new(TinyConfig::default());
    let model = load(&dir, "valid", &m).expect("the valid tiny model loads");
    let n_ctx_train = model.n_ctx_train();
    let out_of_range: fn() -> Expect = || Box::new(|e| matches!(e, Error::OutOfRange { what: "context size", .. }));
    let with = |n_ctx, flash_attn, kv_type| SessionOptions { n_ctx, flash_attn, kv_type, ..Default::default() };
    let cases: Vec<(String, SessionOptions, Expect)> = vec![
        ("n_ctx 0".into(), with(0, false, Type::F16), out_of_range()),
        (
            format!("n_ctx {} (training context + 1)", n_ctx_train + 1),
            with(n_ctx_train + 1, false, Type::F16),
            out_of_range(),
        ),
        ("n_ctx u32::MAX".into(), with(u32::MAX, false, Type::F16), out_of_range()),
        ("q8_0 KV without flash attention".into(), with(N_CTX, false, Type::Q8_0), {
            Box::new(|e: &Error| matches!(e, Error::TypeNotUsable { ty, .. } if ty == "q8_0"))
        }),
        ("q4_0 KV without flash attention".into(), with(N_CTX, false, Type::Q4_0), {
            Box::new(|e: &Error| matches!(e, Error::TypeNotUsable { .. }))
        }),
    ];
    let mut table = Table::default();
    for (name, opts, expect) in &cases {
        table.check(name, expect, || Session::new(&model, *opts).map(|_| ()));
    }
    // Threads are checked when the model is loaded (BAD-INPUTS.md §28).
    let path = dir.path().join("valid.gguf");
    for threads in [0, 1_000_000] {
        let expect: Expect = Box::new(|e| matches!(e, Error::OutOfRange { what: "threads", .. }));
        let opts = LoadOptions { threads: Some(threads), ..Default::default() };
        table.check(&format!("threads {threads}"), &expect, || Model::load(&path, &opts).map(|_| ()));
    }
    table.finish("Session::new / LoadOptions: case → error");
}

/// A context the machine cannot hold is refused with the bytes it needs, before anything
/// is allocated (BAD-INPUTS.md §25): training context 2^31, n_ctx 2^31 − 1 and u32::MAX.
/// The tiny model has a global layer (every second one), whose cache grows with n_ctx.
#[test]
fn huge_context_is_refused_before_allocating() {
    let dir = TempDir::new().expect("temp dir");
    let mut table = Table::default();
    for (n_ctx_train, n_ctx) in [(1_u32 << 31, (1_u32 << 31) - 1), (u32::MAX, u32::MAX)] {
        let mut m = TinyModel::new(TinyConfig::default());
        m.set(&key(llm::CONTEXT_LENGTH), n_ctx_train);
        let model = load(&dir, &format!("ctx{n_ctx_train}"), &m).expect("a model with a huge training context loads");
        let opts = SessionOptions { n_ctx, ..Default::default() };
        // The cache and the largest step's scratch, checked together before either exists.
        let kv = Session::kv_bytes_for(&model, &opts).expect("KV bytes fit in u64");
        let needed = kv + Session::scratch_bytes_for(&model, &opts).expect("scratch bytes fit in u64");
        let (free, _) = model.backend().device().memory();
        // The huge training context itself is fine: a small session decodes (the rope's
        // n_ctx_orig, an i32 in ggml, only matters for YaRN, which Gemma 3 does not use).
        let logits = session(&model, N_CTX).decode(&prompt(&m, 20), Outputs::Last).expect("decode, n_ctx 64");
        assert_finite(&format!("training context {n_ctx_train}, n_ctx {N_CTX}"), &logits);
        let name = format!("n_ctx {n_ctx} (needs {:.0} GiB)", needed as f64 / (1u64 << 30) as f64);
        if needed <= free as u64 {
            println!("notice: {name}: this machine reports {free} bytes free, enough to allocate; skipped");
            continue;
        }
        let expect: Expect = Box::new(move |e| matches!(e, Error::TooLarge { needed: n, .. } if *n == needed));
        let t = Instant::now();
        table.check(&name, &expect, || Session::new(&model, opts).map(|_| ()));
        assert!(t.elapsed().as_secs_f64() < 1.0, "{name}: refusing took {:.2?}", t.elapsed());
    }
    table.finish("Session::new with a huge context: case → error");
}

/// `decode` refuses an empty batch, ids outside the vocabulary and more tokens than the
/// context holds, leaving the session as it was (BAD-INPUTS.md §24, §26).
#[test]
fn decode_rejects_bad_input() {
    let dir = TempDir::new().expect("temp dir");
    let m = TinyModel::new(TinyConfig::default());
    let model = load(&dir, "valid", &m).expect("the valid tiny model loads");
    let n_vocab = model.n_vocab();
    let full = prompt(&m, N_CTX as usize);
    let bad_token = |id: u32| -> Expect { Box::new(move |e| matches!(e, Error::BadToken { id: i, .. } if *i == id)) };
    let overflow: fn() -> Expect = || Box::new(|e| matches!(e, Error::ContextOverflow { .. }));
    let mut table = Table::default();

    let mut s = session(&model, N_CTX);
    // Today an empty batch reads as a full context ("0 + 0 tokens exceed n_ctx"); a range
    // error would say it better, so either is accepted.
    let empty: Expect = Box::new(|e| matches!(e, Error::ContextOverflow { n_new: 0, .. } | Error::OutOfRange { .. }));
    table.check("empty token list", &empty, || s.decode(&[], Outputs::Last));
    table.check("token id = n_vocab", &bad_token(n_vocab), || s.decode(&[ids::BOS, n_vocab], Outputs::Last));
    table.check("token id u32::MAX", &bad_token(u32::MAX), || s.decode(&[u32::MAX], Outputs::All));
    table.check("n_ctx + 1 tokens at once", &overflow(), || s.decode(&prompt(&m, N_CTX as usize + 1), Outputs::Last));
    assert_eq!(s.n_past(), 0, "a refused decode must leave the cache empty");

    // Fill all but 4 cells, then ask for 5: refused, and the 4 that fit still decode to the
    // same logits as one batch of all N_CTX tokens in a fresh session.
    let head = N_CTX as usize - 4;
    s.decode(&full[..head], Outputs::Last).expect("decode up to 4 short of n_ctx");
    let mut five = full[head..].to_vec();
    five.push(ids::BOS);
    table.check("5 tokens with 4 cells left", &overflow(), || s.decode(&five, Outputs::Last));
    assert_eq!(s.n_past(), head as u32, "a refused decode must not move the position");
    let tail = s.decode(&full[head..], Outputs::Last).expect("the last 4 tokens fit");
    assert_eq!(s.n_past(), N_CTX);
    table.check("1 token into a full context", &overflow(), || s.decode(&[ids::BOS], Outputs::Last));
    let fresh = session(&model, N_CTX).decode(&full, Outputs::Last).expect("n_ctx tokens in one batch");
    let diff = max_diff(&tail, &fresh);
    println!("after the refused decodes vs a fresh session: maxdiff = {diff:e}");
    assert!(diff <= TOL_BATCH, "a refused decode changed the cache: logits differ by {diff}");
    table.finish("Session::decode: case → error");
}

/// The tiny Gemma 1 (MQA) and Gemma 2 (16-token window, soft-caps) files load and decode 40
/// tokens (past the window) to the same finite logits in one batch and one by one.
#[test]
fn gemma12_tiny_models_load_and_decode() {
    let dir = TempDir::new().expect("temp dir");
    let cfgs = [("gemma, MQA", TinyConfig { n_head_kv: 1, ..TinyConfig::gemma() }), ("gemma2", TinyConfig::gemma2())];
    for (name, cfg) in cfgs {
        let m = TinyModel::new(cfg);
        let model = load(&dir, name, &m).unwrap_or_else(|e| panic!("the valid tiny {name} model loads: {e}"));
        assert_eq!(model.arch().name(), m.config().arch.name());
        let tokens = prompt(&m, 40);
        let batch = session(&model, N_CTX).decode(&tokens, Outputs::All).expect("decode 40 tokens in one batch");
        assert_finite(name, &batch);
        let mut one = session(&model, N_CTX);
        let mut singles = Vec::with_capacity(batch.len());
        for &t in &tokens {
            singles.extend(one.decode(&[t], Outputs::Last).expect("decode one token"));
        }
        let diff = max_diff(&batch, &singles);
        println!("{name}: one batch vs one by one: maxdiff = {diff:e} (tolerance {TOL_BATCH:e})");
        assert!(diff <= TOL_BATCH, "{name}: batch and one-by-one logits differ by {diff}");
    }
}

/// Defects of the Gemma 1 and 2 files (their own keys and tensors; the sizes they share with
/// Gemma 3 are read by the same code, so a few cases stand for those): each a typed error.
#[test]
fn gemma12_load_rejects_each_defect() {
    let gemma2 = || TinyModel::new(TinyConfig::gemma2());
    let gemma = || TinyModel::new(TinyConfig::gemma());
    let k2 = |suffix: &str| gemma2().key(suffix);
    let k1 = |suffix: &str| gemma().key(suffix);
    let edit_tensor = |name: String, f: fn(&mut TensorSpec)| -> Edit { Box::new(move |m| f(m.tensor_mut(&name))) };
    let blk = tensor::block;
    let nan = f32::NAN;
    // (case, base file, defect, expected error)
    let mut cases: Vec<Case> = Vec::new();
    for (suffix, v) in [
        (llm::ATTN_LOGIT_SOFTCAPPING, GgufValue::from(0.0_f32)),
        (llm::ATTN_LOGIT_SOFTCAPPING, (-50.0_f32).into()),
        (llm::ATTN_LOGIT_SOFTCAPPING, nan.into()),
        (llm::ATTN_LOGIT_SOFTCAPPING, f32::INFINITY.into()),
        (llm::FINAL_LOGIT_SOFTCAPPING, 0.0_f32.into()),
        (llm::FINAL_LOGIT_SOFTCAPPING, nan.into()),
        (llm::SLIDING_WINDOW, 0_u32.into()),
        (llm::ROPE_FREQ_BASE, 0.0_f32.into()),
        (llm::ROPE_FREQ_BASE_SWA, nan.into()),
        (llm::HEAD_COUNT_KV, 3_u32.into()),
        (llm::RMS_EPS, 0.0_f32.into()),
    ] {
        cases.push((format!("gemma2 {suffix} = {}", show(&v)), gemma2, set(k2(suffix), v), bad_hparam(k2(suffix))));
    }
    let wrong: [(&str, GgufValue); 3] = [
        (llm::ATTN_LOGIT_SOFTCAPPING, 50_u32.into()),
        (llm::FINAL_LOGIT_SOFTCAPPING, "30".into()),
        (llm::SLIDING_WINDOW, 16.0_f32.into()),
    ];
    for (suffix, v) in wrong {
        cases.push((
            format!("gemma2 {suffix} of type {}", v.kind()),
            gemma2,
            set(k2(suffix), v),
            wrong_type(k2(suffix)),
        ));
    }
    let pattern = k2(llm::SLIDING_WINDOW_PATTERN);
    cases.push((
        "gemma2 sliding_window_pattern: 3 bools, 2 layers".into(),
        gemma2,
        set(pattern.clone(), vec![true, false, true].into()),
        bad_hparam(pattern),
    ));
    for suffix in [llm::BLOCK_COUNT, llm::EMBEDDING_LENGTH, llm::HEAD_COUNT, llm::RMS_EPS] {
        cases.push((format!("gemma {suffix} missing"), gemma, remove(k1(suffix)), missing_key(k1(suffix))));
        cases.push((format!("gemma2 {suffix} missing"), gemma2, remove(k2(suffix)), missing_key(k2(suffix))));
    }
    cases.push(("gemma block_count 0".into(), gemma, set(k1(llm::BLOCK_COUNT), 0_u32.into()), {
        bad_hparam(k1(llm::BLOCK_COUNT))
    }));
    cases.push(("gemma key_length 0".into(), gemma, set(k1(llm::KEY_LENGTH), 0_u32.into()), {
        bad_hparam(k1(llm::KEY_LENGTH))
    }));
    for (name, base) in [("gemma", gemma as fn() -> TinyModel), ("gemma2", gemma2)] {
        cases.push((
            format!("{name} blk.1.ffn_gate missing"),
            base,
            drop_tensor(blk(1, tensor::FFN_GATE)),
            missing_tensor(blk(1, tensor::FFN_GATE)),
        ));
        cases.push((
            format!("{name} blk.0.attn_k for 4 KV heads (file says 2)"),
            base,
            edit_tensor(blk(0, tensor::ATTN_K), |t| t.dims = vec![64, 64]),
            tensor_shape(blk(0, tensor::ATTN_K)),
        ));
    }
    for norm in [tensor::POST_ATTENTION_NORM, tensor::POST_FFW_NORM] {
        let name = blk(1, norm);
        cases.push((format!("gemma2 {name} missing"), gemma2, drop_tensor(name.clone()), missing_tensor(name)));
    }

    check_load_cases(&cases, "Model::load of gemma / gemma2 files: case → error");
}

/// The valid tiny Gemma 4 files (E2B-like and with experts) load, and 40 tokens in one batch
/// and one by one give finite logits that differ by no more than llama.cpp's do on the same
/// file: the summation order differs between the two ways, and with Gemma 4's normed values
/// (|v| ~ 1) the f16 cache's rounding shows more than in the Gemma 3 file above.
#[test]
fn gemma4_tiny_models_load_and_decode() {
    let dir = TempDir::new().expect("temp dir");
    for (name, cfg) in [("gemma4", TinyConfig::gemma4()), ("gemma4 experts", TinyConfig::gemma4_moe())] {
        let m = TinyModel::new(cfg);
        let file = name.replace(' ', "_");
        let model = load(&dir, &file, &m).unwrap_or_else(|e| panic!("the valid {name} loads: {e}"));
        assert_eq!(model.arch().name(), "gemma4");
        let tokens = prompt(&m, 40);
        let batch = session(&model, N_CTX).decode(&tokens, Outputs::All).expect("decode 40 tokens in one batch");
        assert_finite(name, &batch);
        let mut one = session(&model, N_CTX);
        let mut singles = Vec::with_capacity(batch.len());
        for &t in &tokens {
            singles.extend(one.decode(&[t], Outputs::Last).expect("decode one token"));
        }
        let diff = max_diff(&batch, &singles);
        let opts = LlamaOptions { capture: &[], n_ctx: N_CTX, n_threads: 1, flash_attn: false };
        let mut ll = LlamaRunner::load(&dir.path().join(format!("{file}.gguf")), opts);
        let ll_batch = ll.eval(&tokens, true);
        ll.clear();
        let ll_singles: Vec<f32> = tokens.iter().flat_map(|&t| ll.eval(&[t], false)).collect();
        let bound = max_diff(&ll_batch, &ll_singles);
        println!("{name}: one batch vs one by one: maxdiff = {diff:e} (llama.cpp's: {bound:e})");
        assert!(diff <= bound, "{name}: batch and one-by-one logits differ by {diff}, more than llama.cpp's {bound}");
    }
}

/// Defects of Gemma 4 files, one per new key and tensor: missing, wrong type, wrong shape,
/// absurd counts (experts, shared layers); each a typed error naming the key or tensor.
#[test]
fn gemma4_load_rejects_each_defect() {
    let e2b = || TinyModel::new(TinyConfig::gemma4());
    let moe = || TinyModel::new(TinyConfig::gemma4_moe());
    let k = |suffix: &str| e2b().key(suffix);
    let reshape = |name: String, dims: Vec<u64>| -> Edit { Box::new(move |m| m.tensor_mut(&name).dims = dims.clone()) };
    let (blk, scale, global) = (tensor::block, tensor::block_scale, tensor::global);
    let mut cases: Vec<Case> = Vec::new();
    for suffix in [
        llm::KEY_LENGTH_SWA,
        llm::VALUE_LENGTH_SWA,
        llm::SLIDING_WINDOW,
        llm::SLIDING_WINDOW_PATTERN,
        llm::EMBEDDING_LENGTH_PER_LAYER_INPUT,
    ] {
        cases.push((format!("gemma4 {suffix} missing"), e2b, remove(k(suffix)), missing_key(k(suffix))));
    }
    let moe_ff = moe().key(llm::EXPERT_FEED_FORWARD_LENGTH);
    cases.push((format!("gemma4 experts {moe_ff} missing"), moe, remove(moe_ff.clone()), missing_key(moe_ff)));
    for (suffix, v) in [
        (llm::KEY_LENGTH_SWA, GgufValue::from(0_u32)),
        (llm::KEY_LENGTH_SWA, 33_u32.into()),
        (llm::VALUE_LENGTH_SWA, 16_u32.into()),
        (llm::ROPE_DIMENSION_COUNT_SWA, 64_u32.into()),
        (llm::ROPE_DIMENSION_COUNT, 66_u32.into()),
        (llm::SHARED_KV_LAYERS, 6_u32.into()),
        (llm::SHARED_KV_LAYERS, 4_000_000_000_u32.into()),
        (llm::SHARED_KV_LAYERS, 5_u32.into()),
        (llm::EMBEDDING_LENGTH_PER_LAYER_INPUT, 1_000_000_u32.into()),
        (llm::FINAL_LOGIT_SOFTCAPPING, (-1.0_f32).into()),
        (llm::FINAL_LOGIT_SOFTCAPPING, f32::NAN.into()),
        (llm::SLIDING_WINDOW, 0_u32.into()),
        (llm::HEAD_COUNT_KV, vec![1_u32, 1, 1].into()),
        (llm::HEAD_COUNT_KV, vec![1_u32, 0, 1, 1, 1, 1].into()),
        (llm::HEAD_COUNT_KV, vec![3_u32; 6].into()),
        (llm::FEED_FORWARD_LENGTH, vec![128_u32; 7].into()),
        (llm::SLIDING_WINDOW_PATTERN, vec![true, false].into()),
    ] {
        cases.push((format!("gemma4 {suffix} = {}", show(&v)), e2b, set(k(suffix), v), bad_hparam(k(suffix))));
    }
    for (suffix, v) in [
        (llm::EMBEDDING_LENGTH_PER_LAYER_INPUT, GgufValue::from(16.0_f32)),
        (llm::SHARED_KV_LAYERS, "2".into()),
        (llm::KEY_LENGTH_SWA, 32.0_f32.into()),
    ] {
        cases.push((format!("gemma4 {suffix} of type {}", v.kind()), e2b, set(k(suffix), v), wrong_type(k(suffix))));
    }
    let (count, used) = (moe().key(llm::EXPERT_COUNT), moe().key(llm::EXPERT_USED_COUNT));
    cases.push((
        "gemma4 experts: 5000 experts".into(),
        moe,
        set(count.clone(), 5000_u32.into()),
        bad_hparam(count.clone()),
    ));
    cases.push(("gemma4 experts: 8 used of 4".into(), moe, set(used.clone(), 8_u32.into()), bad_hparam(used.clone())));
    cases.push(("gemma4 experts: routers without expert_count".into(), moe, remove(count), bad_hparam(used)));
    for name in [
        global(tensor::ROPE_FREQS),
        global(tensor::PER_LAYER_TOKEN_EMBD),
        global(tensor::PER_LAYER_PROJ_NORM),
        blk(0, tensor::PER_LAYER_INP_GATE),
        blk(5, tensor::PER_LAYER_POST_NORM),
        blk(3, tensor::ATTN_K),
        blk(2, tensor::ATTN_K_NORM),
    ] {
        cases.push((format!("gemma4 {name} missing"), e2b, drop_tensor(name.clone()), missing_tensor(name)));
    }
    for name in [scale(1, tensor::FFN_GATE_INP), blk(1, tensor::FFN_PRE_NORM_2), blk(0, tensor::FFN_DOWN_EXPS)] {
        cases.push((format!("gemma4 experts {name} missing"), moe, drop_tensor(name.clone()), missing_tensor(name)));
    }
    for (name, dims) in [
        (global(tensor::ROPE_FREQS), vec![16]),
        (global(tensor::PER_LAYER_TOKEN_EMBD), vec![192, 301]),
        (global(tensor::PER_LAYER_MODEL_PROJ), vec![64, 80]),
        (blk(4, tensor::ATTN_Q), vec![64, 128]),
        (blk(0, tensor::LAYER_OUT_SCALE), vec![2]),
    ] {
        cases.push((format!("gemma4 {name} as {dims:?}"), e2b, reshape(name.clone(), dims), tensor_shape(name)));
    }
    for (name, dims) in [
        (blk(0, tensor::FFN_GATE_UP_EXPS), vec![64, 32, 4]),
        (blk(0, tensor::FFN_DOWN_EXPS), vec![32, 64, 3]),
        (scale(0, tensor::FFN_DOWN_EXPS), vec![5]),
        (blk(2, tensor::FFN_GATE_INP), vec![64, 8]),
    ] {
        cases.push((
            format!("gemma4 experts {name} as {dims:?}"),
            moe,
            reshape(name.clone(), dims),
            tensor_shape(name),
        ));
    }

    check_load_cases(&cases, "Model::load of gemma4 files: case → error");
}

/// Defects of Gemma 3n files, one per new key and tensor: missing (a tensor) or out of range
/// and mistyped (a key; 3n's own keys are optional, libllama's values when absent), wrong
/// shapes; each a typed error naming the key or tensor. The valid file loads and decodes.
#[test]
fn gemma3n_load_rejects_each_defect() {
    let g3n = || TinyModel::new(TinyConfig::gemma3n());
    let k = |suffix: &str| g3n().key(suffix);
    let reshape = |name: String, dims: Vec<u64>| -> Edit { Box::new(move |m| m.tensor_mut(&name).dims = dims.clone()) };
    let (blk, global) = (tensor::block, tensor::global);
    {
        let dir = TempDir::new().expect("temp dir");
        let m = g3n();
        let model = load(&dir, "valid", &m).expect("the valid gemma3n file loads");
        assert_eq!(model.arch().name(), "gemma3n");
        assert_finite("gemma3n", &session(&model, N_CTX).decode(&prompt(&m, 20), Outputs::All).expect("decode"));
    }
    let mut cases: Vec<Case> = Vec::new();
    for suffix in [llm::SLIDING_WINDOW, llm::RMS_EPS, llm::FEED_FORWARD_LENGTH] {
        cases.push((format!("gemma3n {suffix} missing"), g3n, remove(k(suffix)), missing_key(k(suffix))));
    }
    for (suffix, v) in [
        (llm::ALTUP_NUM_INPUTS, GgufValue::from(1_u32)),
        (llm::ALTUP_NUM_INPUTS, 1_000_000_u32.into()),
        (llm::ALTUP_NUM_INPUTS, 3_u32.into()),
        (llm::ALTUP_ACTIVE_IDX, 4_u32.into()),
        (llm::EMBEDDING_LENGTH_PER_LAYER_INPUT, 0_u32.into()),
        (llm::EMBEDDING_LENGTH_PER_LAYER_INPUT, 1_000_000_u32.into()),
        (llm::EMBEDDING_LENGTH_PER_LAYER_INPUT, 128_u32.into()),
        (llm::SHARED_KV_LAYERS, 22_u32.into()),
        (llm::SHARED_KV_LAYERS, 4_000_000_000_u32.into()),
        (llm::ACTIVATION_SPARSITY_SCALE, vec![1.5_f32; 3].into()),
        (llm::ACTIVATION_SPARSITY_SCALE, vec![f32::NAN; 22].into()),
        (llm::ACTIVATION_SPARSITY_SCALE, vec![f32::INFINITY; 22].into()),
        (llm::FINAL_LOGIT_SOFTCAPPING, (-1.0_f32).into()),
        (llm::FINAL_LOGIT_SOFTCAPPING, f32::NAN.into()),
        (llm::SLIDING_WINDOW, 0_u32.into()),
        (llm::HEAD_COUNT_KV, 3_u32.into()),
        (llm::KEY_LENGTH, 33_u32.into()),
        (llm::FEED_FORWARD_LENGTH, vec![128_u32; 7].into()),
        (llm::FEED_FORWARD_LENGTH, vec![0_u32; 22].into()),
        (llm::SLIDING_WINDOW_PATTERN, vec![true, false].into()),
    ] {
        // A wrong count of streams or a wrong PLE width shows first in the tensor shapes.
        let expect = match (suffix, &v) {
            (llm::ALTUP_NUM_INPUTS, GgufValue::U32(3)) => tensor_shape(blk(0, tensor::ALTUP_CORRECT_COEF)),
            (llm::EMBEDDING_LENGTH_PER_LAYER_INPUT, GgufValue::U32(128)) => {
                tensor_shape(blk(0, tensor::PER_LAYER_INP_GATE))
            }
            _ => bad_hparam(k(suffix)),
        };
        cases.push((format!("gemma3n {suffix} = {}", show(&v)), g3n, set(k(suffix), v), expect));
    }
    for (suffix, v) in [
        (llm::ALTUP_NUM_INPUTS, GgufValue::from(4.0_f32)),
        (llm::SHARED_KV_LAYERS, "2".into()),
        (llm::ACTIVATION_SPARSITY_SCALE, 1.6_f32.into()),
        (llm::ACTIVATION_SPARSITY_SCALE, vec![1_u32; 22].into()),
    ] {
        cases.push((format!("gemma3n {suffix} of type {}", v.kind()), g3n, set(k(suffix), v), wrong_type(k(suffix))));
    }
    for name in [
        global(tensor::ALTUP_PROJ),
        global(tensor::ALTUP_UNEMBD_PROJ),
        global(tensor::PER_LAYER_TOKEN_EMBD),
        global(tensor::PER_LAYER_MODEL_PROJ),
        global(tensor::PER_LAYER_PROJ_NORM),
        blk(0, tensor::LAUREL_L),
        blk(3, tensor::LAUREL_R),
        blk(4, tensor::LAUREL_POST_NORM),
        blk(5, tensor::ALTUP_CORRECT_COEF),
        blk(6, tensor::ALTUP_CORRECT_SCALE),
        blk(7, tensor::ALTUP_PREDICT_COEF),
        blk(8, tensor::ALTUP_ROUTER),
        blk(9, tensor::ALTUP_ROUTER_NORM),
        blk(10, tensor::PER_LAYER_INP_GATE),
        blk(11, tensor::PER_LAYER_PROJ),
        blk(12, tensor::PER_LAYER_POST_NORM),
        blk(19, tensor::ATTN_K),
        blk(18, tensor::ATTN_V),
        blk(21, tensor::ATTN_Q),
    ] {
        cases.push((format!("gemma3n {name} missing"), g3n, drop_tensor(name.clone()), missing_tensor(name)));
    }
    for (name, dims) in [
        (global(tensor::ALTUP_PROJ), vec![64, 64, 4]),
        (global(tensor::ALTUP_UNEMBD_PROJ), vec![64, 64]),
        (global(tensor::PER_LAYER_TOKEN_EMBD), vec![256 * 22, 301]),
        (global(tensor::PER_LAYER_MODEL_PROJ), vec![64, 256]),
        (blk(1, tensor::ALTUP_CORRECT_COEF), vec![4, 5]),
        (blk(2, tensor::ALTUP_PREDICT_COEF), vec![4, 4]),
        (blk(3, tensor::ALTUP_ROUTER), vec![64, 3]),
        (blk(4, tensor::LAUREL_R), vec![32, 64]),
        (blk(5, tensor::PER_LAYER_PROJ), vec![64, 256]),
    ] {
        cases.push((format!("gemma3n {name} as {dims:?}"), g3n, reshape(name.clone(), dims), tensor_shape(name)));
    }
    // LAuReL's rank comes from blk.0.laurel_l: a 3-D one is refused by name.
    let l0 = blk(0, tensor::LAUREL_L);
    cases.push((format!("gemma3n {l0} as [64, 64, 2]"), g3n, reshape(l0.clone(), vec![64, 64, 2]), tensor_shape(l0)));

    check_load_cases(&cases, "Model::load of gemma3n files: case → error");
}
