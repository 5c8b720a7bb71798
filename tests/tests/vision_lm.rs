//! Images in the language model (Gemma 3): the tiny random `Gemma3ForConditionalGeneration`
//! (tests/data/tiny/gemma3-vision, scripts/make_tiny_gemma3_vision.py) converted by our
//! converter to a text GGUF and a projector file; prompts of text and images (one image; two
//! images apart) fed as our runtime feeds them (`Session::decode_embd`, bidirectional within
//! an image), then 4 greedy steps.
//!
//! References, at every text position and every greedy step:
//! - transformers (`lm.json`: float32, token_type_ids marking the image tokens). Bound: the
//!   max |Δlogit| relative to the largest golden logit within 16 units of 2^-11, as
//!   tests/tests/convert_tiny.rs for f32 files (ggml's f16 KV cache and GELU table), the
//!   image embeddings themselves being within that bound of transformers'
//!   (tests/tests/vision_encoder.rs).
//! - libmtmd + libllama on the same two files (`mtmd_ref::MtmdLm`: the image batch decoded
//!   with causal attention off, as `mtmd_helper_eval_chunk_single`). With the f16 projector
//!   the embeddings are bit-identical, so the logits must be too (bound 0); with the f32
//!   projector the embeddings differ by about 2e-4 (vision_encoder.rs), so the bound is the
//!   transformers one.
//!
//! Ours runs with and without flash attention (the fused kernel, the mask in f16); both within
//! the transformers bound.
//!
//! Positive controls: another image, or the image fed with causal attention, must move the
//! logits after the image far outside the bound (so the test fails if the image or its
//! attention rule is ignored).
use gemma_gguf::model::{LoadOptions, Model, NonCausal};
use gemma_gguf::session::{Outputs, Session, SessionOptions};
use gemma_gguf::vision::encoder::VisionModel;
use gemma_gguf::vision::preprocess::{decode, MAX_IMAGE_PIXELS};
use gemma_tests::mtmd_ref::Mtmd;
use gemma_tests::vision_golden::{lm_golden, vision_golden, LmCase};
use gemma_tools::{convert_hf, convert_mmproj, ConvertOptions, MmprojOptions, OutType};
use std::path::{Path, PathBuf};

/// transformers bound: 16 units of 2^-11, relative (see the module doc).
const BOUND_TRANSFORMERS: f64 = 16.0 / 2048.0;
const N_CTX: u32 = 128;

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

/// Our runtime on `case` with `images` (one embedding table per image, `[n_tok·n_embd]`).
fn ours(model: &Model, case: &LmCase, image_token: u32, images: &[Vec<f32>], causal: bool) -> Run {
    ours_with(model, case, image_token, images, (causal, false))
}

/// [`ours`] with or without flash attention (its mask is f16 and padded).
fn ours_with(
    model: &Model,
    case: &LmCase,
    image_token: u32,
    images: &[Vec<f32>],
    (causal, flash): (bool, bool),
) -> Run {
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
fn reference(lm: &Path, mmproj: &Path, case: &LmCase, image_token: u32) -> Run {
    let mtmd = Mtmd::load(lm, mmproj, 2, false).unwrap();
    assert!(mtmd.non_causal(), "libmtmd decodes Gemma 3 images with causal attention off");
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

/// Rows of positions after the first image only (for the controls).
fn after_image(case: &LmCase, image_token: u32, rows: &[Vec<f32>]) -> Vec<Option<Vec<f32>>> {
    let first = case.ids.iter().position(|&t| t == image_token).unwrap();
    rows.iter().enumerate().map(|(i, r)| (i > first).then(|| r.clone())).collect()
}

struct Files {
    _tmp: tempfile::TempDir,
    lm: PathBuf,
    mmproj_f32: PathBuf,
    mmproj_f16: PathBuf,
}

fn files() -> Files {
    let g = vision_golden();
    let tmp = tempfile::tempdir().unwrap();
    let lm = tmp.path().join("model-f32.gguf");
    let opts = ConvertOptions { out_type: OutType::parse("f32").unwrap(), ..ConvertOptions::default() };
    convert_hf(&g.dir, &lm, &opts).unwrap();
    let mm = |ty: &str| {
        let p = tmp.path().join(format!("mmproj-{ty}.gguf"));
        convert_mmproj(&g.dir, &p, &MmprojOptions { ty: OutType::parse(ty).unwrap(), ..Default::default() }).unwrap();
        p
    };
    let (mmproj_f32, mmproj_f16) = (mm("f32"), mm("f16"));
    Files { _tmp: tmp, lm, mmproj_f32, mmproj_f16 }
}

fn embed(v: &VisionModel, images: &[PathBuf]) -> Vec<Vec<f32>> {
    images.iter().map(|f| v.embed_image(&std::fs::read(f).unwrap(), MAX_IMAGE_PIXELS).unwrap()).collect()
}

#[test]
fn image_prompts_match_transformers_and_libmtmd() {
    let (cases, image_token) = lm_golden();
    let f = files();
    let model = Model::load(&f.lm, &LoadOptions { threads: Some(2), ..Default::default() }).unwrap();
    let mut failures = Vec::new();
    for (ty, mmproj) in [("f32", &f.mmproj_f32), ("f16", &f.mmproj_f16)] {
        let mut v = VisionModel::load(mmproj, Some(2)).unwrap();
        v.flash_attn = false; // libmtmd's encoder as tests/src/mtmd_ref.rs loads it
        v.check_model(&model).unwrap();
        for case in &cases {
            // Gemma 3's images attend both ways on every layer (Arch::image_attention).
            assert_eq!(model.arch().image_attention(), Some(NonCausal::AllLayers));
            let run = ours(&model, case, image_token, &embed(&v, &case.images), false);
            let golden: Vec<Option<Vec<f32>>> = case.logits.iter().cloned().map(Some).collect();
            let (dt, st) = diff(&run, &golden, &case.greedy_logits);
            let ll = reference(&f.lm, mmproj, case, image_token);
            let (dl, _) = diff(&run, &ll.pos, &ll.steps);
            let ll_bound = if ty == "f16" { 0.0 } else { BOUND_TRANSFORMERS * st };
            println!(
                "mmproj {ty}, {}: vs transformers max|Δ| {dt:.3e} (rel {:.3e}, bound {BOUND_TRANSFORMERS:.3e}); vs libmtmd+libllama max|Δ| {dl:.3e} (bound {ll_bound:.3e}); greedy {:?} (transformers {:?}, llama.cpp {:?})",
                case.name,
                dt / st,
                run.argmax,
                case.greedy,
                ll.argmax
            );
            if dt / st > BOUND_TRANSFORMERS || dl > ll_bound || run.argmax != case.greedy {
                failures.push(format!("mmproj {ty} {}", case.name));
            }
            // The fused attention kernel, with the same non-causal mask in f16.
            let fa = ours_with(&model, case, image_token, &embed(&v, &case.images), (false, true));
            let (df, _) = diff(&fa, &golden, &case.greedy_logits);
            println!("  flash attention: vs transformers rel {:.3e}", df / st);
            if df / st > BOUND_TRANSFORMERS {
                failures.push(format!("mmproj {ty} {} flash attention", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn the_image_and_its_attention_rule_matter() {
    let (cases, image_token) = lm_golden();
    let case = cases.iter().find(|c| c.images.len() == 1).expect("a one-image case");
    let f = files();
    let model = Model::load(&f.lm, &LoadOptions { threads: Some(2), ..Default::default() }).unwrap();
    let mut v = VisionModel::load(&f.mmproj_f32, Some(2)).unwrap();
    v.flash_attn = false;
    let right = embed(&v, &case.images);
    let other_file: Vec<PathBuf> =
        vec![vision_golden().embd.iter().map(|(p, _)| p.clone()).find(|p| *p != case.images[0]).unwrap()];
    let golden = after_image(case, image_token, &case.logits);
    let good = ours(&model, case, image_token, &right, false);
    let (d0, s) = diff(&good, &golden, &case.greedy_logits);
    let other = ours(&model, case, image_token, &embed(&v, &other_file), false);
    let (d1, _) = diff(&other, &golden, &case.greedy_logits);
    let causal = ours(&model, case, image_token, &right, true);
    let (d2, _) = diff(&causal, &golden, &case.greedy_logits);
    println!(
        "after the image, rel max|Δ| vs transformers: right image {:.3e}; another image {:.3e}; image fed causally {:.3e}; bound {BOUND_TRANSFORMERS:.3e}",
        d0 / s,
        d1 / s,
        d2 / s
    );
    assert!(d0 / s <= BOUND_TRANSFORMERS);
    assert!(d1 / s > 10.0 * BOUND_TRANSFORMERS, "another image leaves the logits as they were");
    assert!(d2 / s > 10.0 * BOUND_TRANSFORMERS, "causal attention within the image changes nothing");
}

/// The prompt layout: each `<__media__>` becomes transformers' Gemma 3 image sequence
/// ("\n\n<start_of_image>" + soft tokens + "<end_of_image>\n\n"; processing_gemma3.py), with
/// the tokens the tokenizer gives for that whole string, the soft tokens' run replaced by the
/// image; images without markers go first; control tokens in the user's text stay text.
#[test]
fn prompt_layout_is_the_processors() {
    use gemma_gguf::chat::Piece;
    use gemma_gguf::vision::prompt::{chunks, with_markers, Chunk, END_OF_IMAGE, GEMMA3, MEDIA_MARKER, START_OF_IMAGE};
    let f = files();
    let model = Model::load(&f.lm, &LoadOptions { threads: Some(1), ..Default::default() }).unwrap();
    let tok = model.tokenizer();
    let (_, image_token) = lm_golden();
    let n = 16;
    let seq = format!("\n\n{START_OF_IMAGE}{}{END_OF_IMAGE}\n\n", tok.piece(image_token).unwrap().repeat(n));
    let flatten = |got: &[Chunk]| -> Vec<u32> {
        let mut flat = Vec::new();
        for c in got {
            match c {
                Chunk::Tokens(t) => flat.extend(t),
                Chunk::Image(_) => flat.extend(std::iter::repeat_n(image_token, n)),
            }
        }
        flat
    };
    for (text, n_img) in [
        ("Compare <__media__> with <__media__>, please.", 2),
        ("What is this?", 1),
        ("<__media__>", 1),
        ("no image", 0),
    ] {
        let marked = with_markers(text, n_img);
        let got = chunks(&[Piece::Special("<bos>".into()), Piece::Text(marked.clone())], &GEMMA3, n_img, tok).unwrap();
        // The processor's string, tokenized whole (control tokens parsed).
        let want = tok.encode_with_special(&format!("<bos>{}", marked.replace(MEDIA_MARKER, &seq)), false);
        let images: Vec<usize> =
            got.iter().filter_map(|c| if let Chunk::Image(i) = c { Some(*i) } else { None }).collect();
        println!("{text:?}: {} chunks, {} ids", got.len(), want.len());
        assert_eq!(images, (0..n_img).collect::<Vec<_>>(), "{text:?}");
        assert!(matches!(got.last(), Some(Chunk::Tokens(_))), "{text:?}");
        assert_eq!(flatten(&got), want, "{text:?}");
    }
    // Control tokens written by the user stay text.
    let got = chunks(&[Piece::Text("<start_of_turn>x<__media__>".into())], &GEMMA3, 1, tok).unwrap();
    let sot = tok.token_id("<start_of_turn>").unwrap();
    assert!(!flatten(&got).contains(&sot));
    assert!(chunks(&[Piece::Text("<__media__>".into())], &GEMMA3, 2, tok).is_err());
    assert!(chunks(&[Piece::Text("<__media__><__media__>".into())], &GEMMA3, 1, tok).is_err());
}
