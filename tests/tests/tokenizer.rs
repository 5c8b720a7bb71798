//! The tokenizer on the real Gemma 3 vocabulary, against two references:
//! - libllama (llama.cpp, live through `gemma_tests::llama_ref`): the primary reference, since
//!   we run llama.cpp's files;
//! - Hugging Face transformers, through ids recorded by `scripts/make_tokenizer_goldens.py`
//!   in `tests/data/tokenizer/goldens_transformers.jsonl`.
//!
//! Every line of `tests/data/tokenizer/corpus.jsonl` must give identical ids in all three.
//! Also here: decoding against libllama, streaming decode on every prefix, and 1 MB inputs.

use gemma_gguf::gguf::GgufFile;
use gemma_gguf::tokenizer::Tokenizer;
use gemma_tests::llama_ref::LlamaVocab;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

fn data(name: &str) -> String {
    let path = gemma_tests::workspace_root()
        .join("tests/data/tokenizer")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One JSON string per line.
fn corpus() -> Vec<String> {
    data("corpus.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON string per line"))
        .collect()
}

/// transformers' ids for each corpus line (see the script for what each field means).
struct Golden {
    ids: Vec<u32>,
    ids_special: Vec<u32>,
    ids_parse_special: Vec<u32>,
}

fn goldens() -> Vec<Golden> {
    let ids = |v: &serde_json::Value, key: &str| -> Vec<u32> {
        let arr = v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing in {v}"));
        arr.iter()
            .map(|x| x.as_u64().expect("an id") as u32)
            .collect()
    };
    data("goldens_transformers.jsonl")
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON object per line");
            assert_eq!(v["line"].as_u64(), Some(i as u64), "goldens out of order");
            Golden {
                ids: ids(&v, "ids"),
                ids_special: ids(&v, "ids_special"),
                ids_parse_special: ids(&v, "ids_parse_special"),
            }
        })
        .collect()
}

/// Our tokenizer and libllama's on the real model; `None` (with a notice) when the model
/// is absent outside CI.
fn load() -> Option<(Tokenizer, LlamaVocab)> {
    let path = gemma_tests::test_model()?;
    let file = GgufFile::open(&path).expect("open the test model");
    let ours = Tokenizer::from_gguf(&file).expect("build the tokenizer");
    let llama = LlamaVocab::load(&path).expect("libllama loads the vocabulary");
    assert_eq!(ours.vocab_size(), llama.n_tokens());
    Some((ours, llama))
}

fn show(text: &str) -> String {
    let s = format!("{text:?}");
    match s.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Compares two id lists; on a difference, a description around the first one.
fn diff(tok: &Tokenizer, ours: &[u32], theirs: &[u32]) -> Option<String> {
    if ours == theirs {
        return None;
    }
    let at = ours.iter().zip(theirs).take_while(|(a, b)| a == b).count();
    let window = |ids: &[u32]| {
        let from = at.saturating_sub(2);
        let to = (at + 4).min(ids.len());
        let pieces: Vec<String> = ids[from..to]
            .iter()
            .map(|&id| format!("{id}:{:?}", tok.piece(id).unwrap_or("?")))
            .collect();
        format!("[{from}..{to}] {}", pieces.join(" "))
    };
    Some(format!(
        "first difference at token {at} (ours {} tokens, theirs {})\n      ours:   {}\n      theirs: {}",
        ours.len(),
        theirs.len(),
        window(ours),
        window(theirs)
    ))
}

#[derive(Default)]
struct Tally {
    lines: usize,
    tokens: usize,
    mismatches: Vec<String>,
}

impl Tally {
    fn check(
        &mut self,
        tok: &Tokenizer,
        what: &str,
        line: usize,
        text: &str,
        ours: &[u32],
        theirs: &[u32],
    ) {
        self.lines += 1;
        self.tokens += theirs.len();
        if let Some(d) = diff(tok, ours, theirs) {
            self.mismatches
                .push(format!("  {what}, line {line} {}: {d}", show(text)));
        }
    }
}

#[test]
fn corpus_matches_llama_cpp_and_transformers() {
    let Some((tok, llama)) = load() else { return };
    let (corpus, goldens) = (corpus(), goldens());
    assert_eq!(
        corpus.len(),
        goldens.len(),
        "rerun scripts/make_tokenizer_goldens.py"
    );

    let mut vs_llama = Tally::default();
    let mut vs_hf = Tally::default();
    let mut decode = Tally::default();
    for (i, (text, hf)) in corpus.iter().zip(&goldens).enumerate() {
        let ours = tok.encode(text, false);
        let ours_special = tok.encode(text, true);
        let ours_parse = tok.encode_with_special(text, false);

        vs_llama.check(
            &tok,
            "encode",
            i,
            text,
            &ours,
            &llama.tokenize(text, false, false),
        );
        let ll_special = llama.tokenize(text, true, false);
        vs_llama.check(&tok, "encode+bos", i, text, &ours_special, &ll_special);
        let ll_parse = llama.tokenize(text, false, true);
        vs_llama.check(&tok, "encode_with_special", i, text, &ours_parse, &ll_parse);

        vs_hf.check(&tok, "encode", i, text, &ours, &hf.ids);
        vs_hf.check(&tok, "encode+bos", i, text, &ours_special, &hf.ids_special);
        vs_hf.check(
            &tok,
            "encode_with_special",
            i,
            text,
            &ours_parse,
            &hf.ids_parse_special,
        );

        // Decoding: as libllama, and back to the text we started from.
        decode.lines += 1;
        decode.tokens += ours_parse.len();
        let ll_text = llama.detokenize(&ours_parse, false, false);
        if tok.decode(&ours_parse).as_bytes() != ll_text {
            decode
                .mismatches
                .push(format!("  decode vs libllama, line {i} {}", show(text)));
        }
        if tok.decode(&ours) != *text {
            decode.mismatches.push(format!(
                "  decode(encode(text)) != text, line {i} {}",
                show(text)
            ));
        }
    }

    for (name, t) in [
        ("libllama", &vs_llama),
        ("transformers", &vs_hf),
        ("decode", &decode),
    ] {
        println!(
            "{name}: {} comparisons over {} corpus lines, {} reference tokens, {} mismatches",
            t.lines,
            corpus.len(),
            t.tokens,
            t.mismatches.len()
        );
        for m in &t.mismatches {
            println!("{m}");
        }
    }
    let failed = vs_llama.mismatches.len() + vs_hf.mismatches.len() + decode.mismatches.len();
    assert_eq!(failed, 0, "tokenizer mismatches, listed above");
}

#[test]
fn every_token_decodes_as_llama_cpp_does() {
    let Some((tok, llama)) = load() else { return };
    let mut mismatches = 0;
    for id in 0..tok.vocab_size() as u32 {
        let ours = tok.token_bytes(id);
        let theirs = llama.token_to_piece(id, true);
        if *ours != theirs[..] {
            mismatches += 1;
            if mismatches <= 10 {
                println!(
                    "token {id} {:?}: ours {ours:?}, libllama {theirs:?}",
                    tok.piece(id)
                );
            }
        }
    }
    println!(
        "token_bytes vs llama_token_to_piece: {} tokens, {mismatches} mismatches",
        tok.vocab_size()
    );
    assert_eq!(mismatches, 0);
}

#[test]
fn streaming_decode_never_splits_a_character() {
    let Some((tok, _)) = load() else { return };
    let texts = corpus();
    let mut checked = 0;
    for text in texts.iter().filter(|t| !t.is_ascii()) {
        let ids = tok.encode(text, false);
        let mut bytes = Vec::new();
        let mut streamed = String::new();
        let mut d = tok.decoder();
        for (k, &id) in ids.iter().enumerate() {
            bytes.extend_from_slice(&tok.token_bytes(id));
            streamed += &d.push(id);
            // After each token: exactly the complete characters so far, the rest held back.
            let complete = match std::str::from_utf8(&bytes) {
                Ok(s) => s,
                Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap(),
            };
            assert_eq!(streamed, complete, "{} after token {k}", show(text));
            checked += 1;
        }
        streamed += &d.finish();
        assert_eq!(streamed, *text);
    }
    println!("streaming decode: {checked} prefixes checked");
    assert!(checked > 0);
}

/// Tokenizes a large input, compares it with libllama, and returns the time ours took.
fn big(tok: &Tokenizer, llama: &LlamaVocab, name: &str, text: &str) -> Duration {
    let t = Instant::now();
    let ours = tok.encode(text, false);
    let took = t.elapsed();
    let t = Instant::now();
    let theirs = llama.tokenize(text, false, false);
    let took_llama = t.elapsed();
    println!(
        "{name}: {} bytes -> {} tokens in {took:.2?} (libllama {took_llama:.2?})",
        text.len(),
        ours.len()
    );
    if let Some(d) = diff(tok, &ours, &theirs) {
        panic!("{name}: differs from libllama: {d}");
    }
    assert_eq!(tok.decode(&ours), text);
    took
}

#[test]
fn one_megabyte_inputs_are_fast() {
    let Some((tok, llama)) = load() else { return };
    const MB: usize = 1 << 20;
    let mut rng = rand::rngs::StdRng::seed_from_u64(20);
    let cjk: String = (0..MB / 3)
        .map(|_| char::from_u32(rng.gen_range(0x4E00..=0x9FFF)).unwrap())
        .collect();
    let ws: String = (0..MB)
        .map(|_| [' ', ' ', ' ', '\n', '\t', 'a'][rng.gen_range(0..6)])
        .collect();
    let cases = [
        ("1 MB of 'a'", "a".repeat(MB)),
        ("1 MB of random CJK", cjk),
        ("1 MB of whitespace runs", ws),
        (
            "1 MB of '<start_of_turn>'",
            "<start_of_turn>".repeat(MB / 15),
        ),
    ];
    // Generous: a debug build on a shared 2-core machine; quadratic behaviour would take
    // minutes.
    let limit = Duration::from_secs(20);
    for (name, text) in &cases {
        let took = big(&tok, &llama, name, text);
        assert!(took < limit, "{name} took {took:?}");
    }
}
