//! Images in Gemma 4's language model: two tiny random `Gemma4ForConditionalGeneration`s
//! (scripts/make_tiny_gemma4_vision.py) converted by our converter to a text GGUF and a
//! `gemma4v` projector file; prompts with one image and with two images fed as our runtime
//! feeds them (`Session::decode_embd`, attention within an image as the model's
//! `Arch::image_attention` says), then 4 greedy steps.
//!
//! - dense (tests/data/tiny/gemma4-vision, 31B-like): no per-layer embeddings, transformers'
//!   `use_bidirectional_attention: "vision"`: an image's tokens see each other both ways on
//!   sliding layers, causally on full layers. libmtmd decodes it non-causally too (its width,
//!   256, is not E2B's or E4B's) and libllama's gemma4 makes only the SWA cache non-causal.
//! - ple (tests/data/tiny/gemma4-vision-ple, E2B-like): per-layer embeddings (the padding
//!   token's row at image positions in both references), shared KV layers, causal images
//!   (`use_bidirectional_attention: null`); its width is E2B's (1536), which libmtmd decodes
//!   causally.
//!
//! So the two references agree on both, and each is checked at every text position and every
//! greedy step:
//! - transformers (`lm.json`: float32, `mm_token_type_ids` marking the image tokens). Bound: the
//!   max |Δlogit| relative to the largest golden logit within 16 units of 2^-11, as
//!   tests/tests/vision_lm.rs (ggml's f16 KV cache and GELU table).
//! - libmtmd + libllama on the same two files (`mtmd_ref::MtmdLm`, the image batch decoded
//!   with causal attention off when `mtmd_decode_use_non_causal` says so). With the f16
//!   projector the embeddings are bit-identical (tests/tests/vision_gemma4.rs), so the logits
//!   must be too (bound 0); with the f32 projector the transformers bound.
//!
//! Controls: another image, the other attention rule (causal for the dense model,
//! bidirectional on sliding layers for the ple one), and (ple) another token's per-layer row
//! at image positions move the logits after the image far outside the bound.
use gemma_gguf::gguf::{GgufFile, GgufValue, GgufWriter};
use gemma_gguf::model::{LoadOptions, Model, NonCausal};
use gemma_gguf::session::{Outputs, Session, SessionOptions};
use gemma_gguf::vision::preprocess::{decode, MAX_IMAGE_PIXELS};
use gemma_gguf::vision::Projector;
use gemma_tests::mtmd_ref::Mtmd;
use gemma_tests::vision_golden::{lm_golden_in, LmCase};
use gemma_tests::workspace_root;
use gemma_tools::{convert_hf, convert_mmproj, ConvertOptions, MmprojOptions, OutType};
use std::path::{Path, PathBuf};

/// transformers bound: 16 units of 2^-11, relative (see the module doc).
const BOUND_TRANSFORMERS: f64 = 16.0 / 2048.0;
const N_CTX: u32 = 256;
/// Our converter's key for the image attention rule.
const KEY_BIDIRECTIONAL: &str = "gemma4.attention.bidirectional_vision";

fn dir(variant: &str) -> PathBuf {
    workspace_root().join("tests/data/tiny").join(variant)
}

/// The two checkpoints: (name, directory, the image rule transformers' config gives).
fn variants() -> [(&'static str, PathBuf, Option<NonCausal>); 2] {
    [("dense", dir("gemma4-vision"), Some(NonCausal::SlidingOnly)), ("ple", dir("gemma4-vision-ple"), None)]
}

/// A prompt split at its runs of image tokens.
enum Part {
    Text(Vec<u32>),
    Image(usize),
}

fn parts(ids: &[u32], image_token: u32) -> Vec<Part> {
    let mut out = Vec::new();
    let (mut text, mut n_img) = (Vec::new(), 0);
    let mut i = 0;
    while i < ids.len() {
        if ids[i] == image_token {
            out.push(Part::Text(std::mem::take(&mut text)));
            while i < ids.len() && ids[i] == image_token {
                i += 1;
            }
            out.push(Part::Image(n_img));
            n_img += 1;
        } else {
            text.push(ids[i]);
            i += 1;
        }
    }
    out.push(Part::Text(text));
    out.retain(|p| !matches!(p, Part::Text(t) if t.is_empty()));
    out
}

/// Logits at each position (`None` at image positions), after each greedy token (the
/// golden's tokens fed, teacher-forced), and the argmax before each.
struct Run {
    pos: Vec<Option<Vec<f32>>>,
    steps: Vec<Vec<f32>>,
    argmax: Vec<u32>,
}

fn argmax(x: &[f32]) -> u32 {
    x.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32
}

/// Our runtime on `case` with `images` (one embedding table per image), images fed causally
/// or not, with or without flash attention.
fn ours(model: &Model, case: &LmCase, image_token: u32, images: &[Vec<f32>], (causal, flash): (bool, bool)) -> Run {
    let opts = SessionOptions { n_ctx: N_CTX, flash_attn: flash, ..Default::default() };
    let mut s = Session::new(model, opts).unwrap();
    let n_vocab = model.n_vocab() as usize;
    let mut pos = Vec::new();
    let mut last = Vec::new();
    for p in parts(&case.ids, image_token) {
        match p {
            Part::Text(t) => {
                let l = s.decode(&t, Outputs::All).unwrap();
                last = l[l.len() - n_vocab..].to_vec();
                pos.extend(l.chunks(n_vocab).map(|r| Some(r.to_vec())));
            }
            Part::Image(k) => {
                s.decode_embd(&images[k], causal).unwrap();
                pos.extend((0..images[k].len() / model.dims().n_embd as usize).map(|_| None));
            }
        }
    }
    let (mut steps, mut am) = (Vec::new(), Vec::new());
    for &t in &case.greedy {
        am.push(argmax(&last));
        last = s.decode(&[t], Outputs::Last).unwrap();
        steps.push(last.clone());
    }
    Run { pos, steps, argmax: am }
}

/// libmtmd + libllama on the same files and prompt; the images encoded by libmtmd.
fn reference(mtmd: &Mtmd, case: &LmCase, image_token: u32) -> Run {
    let images: Vec<Vec<Vec<f32>>> = case
        .images
        .iter()
        .map(|f| {
            let img = decode(&std::fs::read(f).unwrap(), MAX_IMAGE_PIXELS).unwrap();
            mtmd.encode(img.width, img.height, &img.data).unwrap()
        })
        .collect();
    let mut ctx = mtmd.lm(N_CTX, 2).unwrap();
    let mut pos = Vec::new();
    for p in parts(&case.ids, image_token) {
        match p {
            Part::Text(t) => pos.extend(ctx.decode_tokens(&t).unwrap().into_iter().map(Some)),
            Part::Image(k) => {
                ctx.decode_image(&images[k]).unwrap();
                pos.extend(images[k].iter().map(|_| None));
            }
        }
    }
    let mut last = pos.last().cloned().flatten().unwrap();
    let (mut steps, mut am) = (Vec::new(), Vec::new());
    for &t in &case.greedy {
        am.push(argmax(&last));
        last = ctx.decode_tokens(&[t]).unwrap().pop().unwrap();
        steps.push(last.clone());
    }
    Run { pos, steps, argmax: am }
}

/// max |a − b| over the rows both have, and max |b| over those rows.
fn diff(a: &Run, b: &[Option<Vec<f32>>], b_steps: &[Vec<f32>]) -> (f64, f64) {
    let (mut d, mut s) = (0f64, 0f64);
    let rows = a.pos.iter().zip(b).filter_map(|(x, y)| Some((x.as_ref()?, y.as_ref()?)));
    for (x, y) in rows.chain(a.steps.iter().zip(b_steps)) {
        for (p, q) in x.iter().zip(y) {
            d = d.max((p - q).abs() as f64);
            s = s.max(q.abs() as f64);
        }
    }
    (d, s)
}

/// transformers' rows at every position.
fn golden_rows(case: &LmCase) -> Vec<Option<Vec<f32>>> {
    case.logits.iter().cloned().map(Some).collect()
}

/// Rows of positions after the first image only (for the controls).
fn after_image(case: &LmCase, image_token: u32) -> Vec<Option<Vec<f32>>> {
    let first = case.ids.iter().position(|&t| t == image_token).unwrap();
    case.logits.iter().enumerate().map(|(i, r)| (i > first).then(|| r.clone())).collect()
}

struct Files {
    _tmp: tempfile::TempDir,
    has_ple: bool,
    lm: PathBuf,
    mmproj_f32: PathBuf,
    mmproj_f16: PathBuf,
}

fn files(src: &Path) -> Files {
    let tmp = tempfile::tempdir().unwrap();
    let lm = tmp.path().join("model-f32.gguf");
    let opts = ConvertOptions { out_type: OutType::parse("f32").unwrap(), ..ConvertOptions::default() };
    convert_hf(src, &lm, &opts).unwrap();
    let mm = |ty: &str| {
        let p = tmp.path().join(format!("mmproj-{ty}.gguf"));
        convert_mmproj(src, &p, &MmprojOptions { ty: OutType::parse(ty).unwrap(), ..Default::default() }).unwrap();
        p
    };
    let (mmproj_f32, mmproj_f16) = (mm("f32"), mm("f16"));
    let has_ple = GgufFile::read(&lm).unwrap().tensors().iter().any(|t| t.name == "per_layer_token_embd.weight");
    Files { _tmp: tmp, has_ple, lm, mmproj_f32, mmproj_f16 }
}

fn load(path: &Path) -> Model {
    Model::load(path, &LoadOptions { threads: Some(2), ..Default::default() }).unwrap()
}

fn embed(v: &Projector, images: &[PathBuf]) -> Vec<Vec<f32>> {
    images.iter().map(|f| v.embed_image(&std::fs::read(f).unwrap(), MAX_IMAGE_PIXELS).unwrap().1).collect()
}

#[test]
fn image_prompts_match_transformers_and_libmtmd() {
    let mut failures = Vec::new();
    for (name, src, rule) in variants() {
        let (cases, image_token) = lm_golden_in(&src);
        let f = files(&src);
        let model = load(&f.lm);
        assert_eq!(model.arch().image_attention(), rule, "{name}: the file's image rule is transformers'");
        let causal = rule.is_none();
        for (ty, mmproj) in [("f16", &f.mmproj_f16), ("f32", &f.mmproj_f32)] {
            let mut v = Projector::load(mmproj, Some(2)).unwrap();
            v.set_flash_attn(false); // libmtmd's encoder as tests/src/mtmd_ref.rs loads it
            v.check_model(&model).unwrap();
            let mtmd = Mtmd::load(&f.lm, mmproj, 2, false).unwrap();
            assert_eq!(mtmd.non_causal(), !causal, "{name}: libmtmd's rule differs from transformers' here");
            for case in &cases {
                let images = embed(&v, &case.images);
                let run = ours(&model, case, image_token, &images, (causal, false));
                let (dt, st) = diff(&run, &golden_rows(case), &case.greedy_logits);
                let ll = reference(&mtmd, case, image_token);
                let (dl, _) = diff(&run, &ll.pos, &ll.steps);
                let ll_bound = if ty == "f16" { 0.0 } else { BOUND_TRANSFORMERS * st };
                println!(
                    "{name}, mmproj {ty}, {}: vs transformers max|Δ| {dt:.3e} (rel {:.3e}, bound {BOUND_TRANSFORMERS:.3e}); vs libmtmd+libllama max|Δ| {dl:.3e} (bound {ll_bound:.3e}); greedy {:?} (transformers {:?}, llama.cpp {:?})",
                    case.name,
                    dt / st,
                    run.argmax,
                    case.greedy,
                    ll.argmax
                );
                if dt / st > BOUND_TRANSFORMERS || dl > ll_bound || run.argmax != case.greedy {
                    failures.push(format!("{name} mmproj {ty} {}", case.name));
                }
                // The fused attention kernel, with the same mask in f16.
                let fa = ours(&model, case, image_token, &images, (causal, true));
                let (df, _) = diff(&fa, &golden_rows(case), &case.greedy_logits);
                println!("  flash attention: vs transformers rel {:.3e}", df / st);
                if df / st > BOUND_TRANSFORMERS {
                    failures.push(format!("{name} mmproj {ty} {} flash attention", case.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn the_image_and_its_attention_rule_matter() {
    for (name, src, rule) in variants() {
        let (cases, image_token) = lm_golden_in(&src);
        let case = cases.iter().find(|c| c.images.len() == 1).expect("a one-image case");
        let two = cases.iter().find(|c| c.images.len() == 2).expect("a two-image case");
        let f = files(&src);
        let model = load(&f.lm);
        let mut v = Projector::load(&f.mmproj_f32, Some(2)).unwrap();
        v.set_flash_attn(false);
        let right = embed(&v, &case.images);
        let other = embed(&v, &[two.images[1].clone()]);
        let golden = after_image(case, image_token);
        let causal = rule.is_none();
        let good = ours(&model, case, image_token, &right, (causal, false));
        let (d0, s) = diff(&good, &golden, &case.greedy_logits);
        let moved = ours(&model, case, image_token, &other, (causal, false));
        let (d1, _) = diff(&moved, &golden, &case.greedy_logits);
        let wrong_rule = ours(&model, case, image_token, &right, (!causal, false));
        let (d2, _) = diff(&wrong_rule, &golden, &case.greedy_logits);
        println!(
            "{name}: after the image, rel max|Δ| vs transformers: right image {:.3e}; another image {:.3e}; image fed {} {:.3e}; bound {BOUND_TRANSFORMERS:.3e}",
            d0 / s,
            d1 / s,
            if causal { "bidirectionally on sliding layers" } else { "causally" },
            d2 / s
        );
        if f.has_ple {
            // The per-layer input's token row at image positions: another row than the pad's.
            let moved_pad = f._tmp.path().join("pad-5.gguf");
            with_key(&f.lm, &moved_pad, "tokenizer.ggml.padding_token_id", Some(GgufValue::U32(5)));
            let run = ours(&load(&moved_pad), case, image_token, &right, (causal, false));
            let (d3, _) = diff(&run, &golden, &case.greedy_logits);
            println!("{name}: the per-layer row of token 5 at image positions {:.3e}", d3 / s);
            assert!(d3 / s > 10.0 * BOUND_TRANSFORMERS, "{name}: the per-layer row at image positions changes nothing");
        }
        assert!(d0 / s <= BOUND_TRANSFORMERS, "{name}");
        assert!(d1 / s > 10.0 * BOUND_TRANSFORMERS, "{name}: another image leaves the logits as they were");
        assert!(d2 / s > 10.0 * BOUND_TRANSFORMERS, "{name}: the attention rule within the image changes nothing");
    }
}

/// A copy of `src` with the metadata key `key` set to `value` (`None`: removed).
fn with_key(src: &Path, dst: &Path, key: &str, value: Option<GgufValue>) {
    let f = GgufFile::read(src).unwrap();
    let mut w = GgufWriter::create(dst).unwrap();
    for (k, v) in f.metadata() {
        if k != key {
            w.add_kv(k, v.clone()).unwrap();
        }
    }
    if let Some(v) = value {
        w.add_kv(key, v).unwrap();
    }
    for t in f.tensors() {
        w.add_tensor_info(&t.name, &t.dims, t.ggml_type).unwrap();
    }
    for t in f.tensors() {
        w.write_tensor_data(&t.name, f.tensor_data(t).unwrap()).unwrap();
    }
    w.finish().unwrap();
}

/// The image rule comes from the file: our converter writes transformers' setting; without
/// the key (llama.cpp's converter) libmtmd's rule by width applies (causal at 1536 and 2560,
/// E2B's and E4B's widths; both ways on sliding layers otherwise); libllama loads the file
/// with the key and gives the same logits as without it.
#[test]
fn the_image_rule_comes_from_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, src, rule) in variants() {
        let f = files(&src);
        let g = GgufFile::read(&f.lm).unwrap();
        let written = g.metadata().find(|(k, _)| *k == KEY_BIDIRECTIONAL).map(|(_, v)| v.clone());
        assert_eq!(written, Some(GgufValue::Bool(rule.is_some())), "{name}");
        let bare = tmp.path().join(format!("{name}-no-key.gguf"));
        with_key(&f.lm, &bare, KEY_BIDIRECTIONAL, None);
        let width = load(&bare).dims().n_embd;
        let by_width = (![1536, 2560].contains(&width)).then_some(NonCausal::SlidingOnly);
        assert_eq!(load(&bare).arch().image_attention(), by_width, "{name}: width {width}");
        let flipped = tmp.path().join(format!("{name}-flipped.gguf"));
        with_key(&f.lm, &flipped, KEY_BIDIRECTIONAL, Some(GgufValue::Bool(rule.is_none())));
        let flipped_rule = rule.map_or(Some(NonCausal::SlidingOnly), |_| None);
        assert_eq!(load(&flipped).arch().image_attention(), flipped_rule, "{name}");
        let bad = tmp.path().join(format!("{name}-bad.gguf"));
        with_key(&f.lm, &bad, KEY_BIDIRECTIONAL, Some(GgufValue::String("vision".into())));
        let e = Model::load(&bad, &LoadOptions::default()).err().expect("a string for a bool loads").to_string();
        println!("{name}: width {width}, written {written:?}; a string value: {e}");
        assert!(e.contains(KEY_BIDIRECTIONAL), "{e}");
        // libllama ignores the key: the same logits with and without it.
        let ids = [2u32, 17, 300, 41];
        let logits = |p: &Path| {
            let mtmd = Mtmd::load(p, &f.mmproj_f16, 2, false).unwrap();
            let mut ctx = mtmd.lm(N_CTX, 2).unwrap();
            ctx.decode_tokens(&ids).unwrap()
        };
        assert_eq!(logits(&f.lm), logits(&bare), "{name}");
    }
}

/// Gemma 4's prompt layout: each `<__media__>` becomes `<|image>` + the image's soft tokens +
/// `<image|>` (Gemma4Processor, no text around it), with the tokens the tokenizer gives for
/// that whole string; the number of soft tokens is the image's (70 for the 240×168 image, 60
/// for a 97×41 one); user text cannot forge the markers.
#[test]
fn prompt_layout_is_the_processors() {
    use gemma_gguf::chat::Piece;
    use gemma_gguf::vision::prompt::{chunks, flatten, with_markers, Chunk, GEMMA4, MEDIA_MARKER};
    let src = dir("gemma4-vision");
    let f = files(&src);
    let model = load(&f.lm);
    let v = Projector::load(&f.mmproj_f16, Some(2)).unwrap();
    assert_eq!(v.layout(), &GEMMA4);
    let tok = model.tokenizer();
    let (_, image_token) = lm_golden_in(&src);
    let soft = tok.piece(image_token).unwrap().to_string();
    assert_eq!(soft, "<|image|>");
    let counts: Vec<u32> = ["exact-240x168.png", "odd-97x41.png"]
        .iter()
        .map(|n| v.embed_image(&std::fs::read(src.join("images").join(n)).unwrap(), MAX_IMAGE_PIXELS).unwrap().0)
        .collect();
    assert_eq!(counts, [70, 60]);
    let seq = |n: u32| format!("{}{}{}", GEMMA4.start, soft.repeat(n as usize), GEMMA4.end);
    for (text, n_img) in [
        ("Compare <__media__> with <__media__>, please.", 2),
        ("What is this?", 1),
        ("<__media__>", 1),
        ("no image", 0),
    ] {
        let marked = with_markers(text, n_img);
        let got = chunks(&[Piece::Special("<bos>".into()), Piece::Text(marked.clone())], &GEMMA4, n_img, tok).unwrap();
        let mut processor = format!("<bos>{marked}");
        for &n in &counts[..n_img] {
            processor = processor.replacen(MEDIA_MARKER, &seq(n), 1);
        }
        let want = tok.encode_with_special(&processor, false);
        let flat: Vec<u32> = flatten(&got, 0, |i| counts[i] as usize)
            .into_iter()
            .map(|t| if gemma_gguf::vision::prompt::image_of(t).is_some() { image_token } else { t })
            .collect();
        println!("{text:?}: {} chunks, {} ids", got.len(), want.len());
        assert!(matches!(got.last(), Some(Chunk::Tokens(_))), "{text:?}");
        assert_eq!(flat, want, "{text:?}");
    }
    let got = chunks(&[Piece::Text("<|image>x<__media__>".into())], &GEMMA4, 1, tok).unwrap();
    let boi = tok.token_id(GEMMA4.start).unwrap();
    let n_boi = flatten(&got, 0, |_| 1).iter().filter(|&&t| t == boi).count();
    assert_eq!(n_boi, 1, "user text yielded <|image>");
}

/// A projector that does not fit the model is a typed error naming what is wrong.
#[test]
fn mismatched_projectors_are_refused() {
    let dense = files(&dir("gemma4-vision"));
    let ple = files(&dir("gemma4-vision-ple"));
    let g3 = workspace_root().join("tests/data/tiny/gemma3-vision");
    let tmp = tempfile::tempdir().unwrap();
    let (g3_lm, g3_mm) = (tmp.path().join("g3.gguf"), tmp.path().join("g3-mmproj.gguf"));
    let opts = ConvertOptions { out_type: OutType::parse("f32").unwrap(), ..ConvertOptions::default() };
    convert_hf(&g3, &g3_lm, &opts).unwrap();
    convert_mmproj(&g3, &g3_mm, &MmprojOptions::default()).unwrap();
    let cases = [
        ("a Gemma 3 projector, a Gemma 4 model", &g3_mm, &dense.lm, "cannot feed a gemma4 model"),
        ("a Gemma 4 projector, a Gemma 3 model", &dense.mmproj_f16, &g3_lm, "cannot feed a gemma3 model"),
        ("another width", &dense.mmproj_f16, &ple.lm, "projects to 256"),
    ];
    for (what, mmproj, lm, needle) in cases {
        let e = Projector::load(mmproj, Some(1)).unwrap().check_model(&load(lm)).unwrap_err();
        println!("{what}: {e}");
        assert!(matches!(e, gemma_gguf::error::Error::Projector { .. }), "{what}: {e:?}");
        assert!(e.to_string().contains(needle), "{what}: {e}");
    }
}
