//! Several sequences in one session, decoded together (`Session::decode_seqs`: one graph per
//! step, a token of every generating sequence, prompts joining between steps), against each
//! sequence generated alone, greedy, on the real 270M model.
//!
//! ggml's CPU matrix products round differently for different batch sizes (one row against
//! several: gemv or gemm kernels, other summation orders), so a sequence decoded next to
//! others gets logits within a small distance of its lone run's, not identical ones. The test
//! holds each step's tokens equal, allowing a different choice only at a near-tie: the lone
//! run's margin between the two tokens at most twice the largest logit difference of that
//! step (the rule of scripts/compare_greedy.py); the sequence is then not followed further.
//! A multi-sequence session used by one sequence at a time is bit-identical to a lone one.
use gemma_gguf::generate::generate_observed;
use gemma_gguf::model::Model;
use gemma_gguf::sampler::{Sampler, SamplerParams};
use gemma_gguf::session::{SeqTokens, Session, SessionOptions};

const PROMPTS: [&str; 3] =
    ["The capital of France is", "Water boils at a temperature of", "The largest planet in the solar system is"];
const N_GEN: usize = 12;

fn argmax(row: &[f32]) -> u32 {
    (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a))).unwrap() as u32
}

/// The greedy tokens of a lone run, and the logits each was chosen from.
fn alone(model: &Model, ids: &[u32]) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut s = Session::new(model, SessionOptions { n_ctx: 256, ..SessionOptions::default() }).unwrap();
    let mut sampler = Sampler::new(SamplerParams::greedy()).unwrap();
    let mut rows = Vec::new();
    let g = generate_observed(&mut s, &mut sampler, ids, N_GEN, |l, _| rows.push(l.to_vec()), |_| true).unwrap();
    (g.tokens, rows)
}

/// Whether `got` may stand for `want` at this step: the same token, or a near-tie.
fn same_or_near_tie(want_row: &[f32], got_row: &[f32], want: u32, got: u32) -> bool {
    if want == got {
        return true;
    }
    let diff = want_row.iter().zip(got_row).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let margin = want_row[want as usize] - want_row[got as usize];
    println!("  near-tie check: margin {margin:.4}, largest logit difference {diff:.4}");
    margin <= 2.0 * diff
}

#[test]
fn sequences_decoded_together_generate_what_each_generates_alone() {
    let Some(path) = gemma_tests::test_model() else { return };
    let model = Model::load(&path, &gemma_tests::serve::one_thread()).unwrap();
    let tok = model.tokenizer();
    let ids: Vec<Vec<u32>> = PROMPTS.iter().map(|p| tok.encode(p, true)).collect();
    let refs: Vec<(Vec<u32>, Vec<Vec<f32>>)> = ids.iter().map(|p| alone(&model, p)).collect();
    let want: Vec<Vec<u32>> = refs.iter().map(|r| r.0.clone()).collect();
    let mut parted = [false; 3];
    let opts = SessionOptions { n_ctx: 3 * 256, ..SessionOptions::default() };
    let mut s = Session::with_sequences(&model, opts, 3).unwrap();
    assert_eq!(s.n_ctx(), 256);
    let n_vocab = model.n_vocab() as usize;
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); 3];
    let mut done = [false; 3];
    let mut logits = Vec::new();
    // Step 0: the prompts of sequences 0 and 1 in one graph; sequence 2's prompt joins at
    // step 3, next to the others' generated tokens.
    let mut step = 0;
    while !done.iter().all(|&d| d) {
        let mut feed: Vec<(u16, Vec<u32>)> = Vec::new();
        for seq in 0..3u16 {
            let i = seq as usize;
            if done[i] {
                continue;
            }
            match got[i].last() {
                None if seq < 2 && step == 0 || seq == 2 && step == 3 => feed.push((seq, ids[i].clone())),
                None => {}
                Some(&t) => feed.push((seq, vec![t])),
            }
        }
        let batch: Vec<SeqTokens<'_>> = feed.iter().map(|(seq, t)| SeqTokens { seq: *seq, tokens: t }).collect();
        if !batch.is_empty() {
            s.decode_seqs(&batch, &mut logits).unwrap();
            assert_eq!(logits.len(), batch.len() * n_vocab);
            for (k, (seq, _)) in feed.iter().enumerate() {
                let i = *seq as usize;
                let row = &logits[k * n_vocab..(k + 1) * n_vocab];
                let t = argmax(row);
                let n = got[i].len();
                if !parted[i] && n < refs[i].1.len() {
                    let w = argmax(&refs[i].1[n]);
                    assert!(same_or_near_tie(&refs[i].1[n], row, w, t), "sequence {i} step {n}: {t} for {w}");
                    parted[i] = t != w;
                }
                if tok.is_end_of_generation(t) || got[i].len() == N_GEN {
                    done[i] = true;
                } else {
                    got[i].push(t);
                    done[i] = got[i].len() == N_GEN;
                }
            }
        }
        step += 1;
    }
    for i in 0..3 {
        println!("{:?} → {:?} (alone: {:?})", PROMPTS[i], tok.decode(&got[i]), tok.decode(&want[i]));
        if !parted[i] {
            assert_eq!(got[i], want[i], "sequence {i} ({:?}) together vs alone", PROMPTS[i]);
        }
        assert_eq!(s.n_past_seq(i as u16) as usize, ids[i].len() + got[i].len() - 1);
    }
    // One sequence at a time in a multi-sequence session: bit-identical to a lone session.
    let mut one = Session::with_sequences(&model, opts, 3).unwrap();
    one.decode_seqs(&[SeqTokens { seq: 2, tokens: &ids[2] }], &mut logits).unwrap();
    assert_eq!(logits, refs[2].1[0], "seq 2 alone in a 3-sequence session");
    for (k, &t) in want[2].iter().enumerate().take(4) {
        one.decode_seqs(&[SeqTokens { seq: 2, tokens: &[t] }], &mut logits).unwrap();
        if k + 1 < refs[2].1.len() {
            assert_eq!(logits, refs[2].1[k + 1], "step {k}");
        }
    }
    // A cleared sequence starts over, next to the others' cells.
    s.clear_seq(1);
    assert_eq!(s.n_past_seq(1), 0);
    s.decode_seqs(&[SeqTokens { seq: 1, tokens: &ids[1] }], &mut logits).unwrap();
    assert_eq!(argmax(&logits), want[1][0]);
    // Truncated back to its prompt, a sequence goes on exactly as a fresh run does.
    let mut t = Session::new(&model, SessionOptions { n_ctx: 256, ..SessionOptions::default() }).unwrap();
    t.decode(&ids[0], gemma_gguf::session::Outputs::Last).unwrap();
    t.decode(&want[0][..4], gemma_gguf::session::Outputs::Last).unwrap();
    assert!(!t.truncate_seq(0, 10_000), "nothing past what it holds");
    assert!(t.truncate_seq(0, ids[0].len() as u32));
    assert_eq!(t.n_past() as usize, ids[0].len());
    let after = t.decode(&want[0][..1], gemma_gguf::session::Outputs::Last).unwrap();
    assert_eq!(after, refs[0].1[1], "the step after the prompt, bit-identical to the lone run");
    // Misuse is an error, not an abort.
    assert!(s.decode_seqs(&[SeqTokens { seq: 3, tokens: &[1] }], &mut logits).is_err());
    assert!(s
        .decode_seqs(&[SeqTokens { seq: 0, tokens: &[1] }, SeqTokens { seq: 0, tokens: &[1] }], &mut logits)
        .is_err());
    assert!(s.decode_seqs(&[SeqTokens { seq: 0, tokens: &[] }], &mut logits).is_err());
    assert!(s.decode_seqs(&[], &mut logits).is_err());
    assert!(s.decode_seqs(&[SeqTokens { seq: 0, tokens: &[u32::MAX] }], &mut logits).is_err());
}
