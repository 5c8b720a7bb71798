//! Unit tests on a tiny hand-made vocabulary. The real vocabulary is compared with libllama
//! and transformers in `tests/tests/tokenizer.rs`.

use super::*;
use crate::gguf::{GgufValue, GgufWriter};

/// (piece, score, token type), one vocabulary entry.
type Entry = (String, f32, i32);

const CONTROL: i32 = 3;
const USER: i32 = 4;
const NORMAL: i32 = 1;

/// A vocabulary in the shape of Gemma's: specials, user-defined runs and tags, 256 byte
/// tokens, then normal pieces with their scores.
fn vocab() -> Vec<Entry> {
    let mut v: Vec<Entry> = [
        ("<pad>", 0.0, CONTROL),
        ("<eos>", 0.0, CONTROL),
        ("<bos>", 0.0, CONTROL),
        ("<unk>", 0.0, 2),
        ("<start_of_turn>", 0.0, CONTROL),
        ("<end_of_turn>", 0.0, CONTROL),
        ("\n", 0.0, USER),
        ("  ", 0.0, USER),
        ("<b>", 0.0, USER),
        ("xy", 0.0, USER),
        ("yzw", 0.0, USER),
    ]
    .into_iter()
    .map(|(p, s, t)| (p.to_owned(), s, t))
    .collect();
    v.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    let normal: &[(&str, f32)] = &[
        ("▁", -1.0),
        ("a", -2.0),
        ("b", -2.0),
        ("c", -2.0),
        ("ab", -5.0),
        ("bc", -4.0),
        ("▁a", -3.0),
        ("<", -2.0),
        (">", -2.0),
        ("s", -2.0),
        ("t", -2.0),
        ("st", -3.0),
        ("<s", -9.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("he", -3.0),
        ("ll", -3.0),
        ("llo", -4.0),
        ("hello", -5.0),
        ("é", -2.0),
    ];
    v.extend(normal.iter().map(|&(p, s)| (p.to_owned(), s, NORMAL)));
    v
}

/// A GGUF file holding `vocab` and the extra keys.
fn file_with(vocab: &[Entry], extra: Vec<(&str, GgufValue)>) -> GgufFile {
    let mut w = GgufWriter::from_writer(Vec::new());
    let mut kv: Vec<(&str, GgufValue)> = vec![
        (keys::MODEL, "llama".into()),
        (keys::TOKENS, vocab.iter().map(|v| v.0.clone()).collect::<Vec<_>>().into()),
        (keys::SCORES, vocab.iter().map(|v| v.1).collect::<Vec<_>>().into()),
        (keys::TOKEN_TYPE, vocab.iter().map(|v| v.2).collect::<Vec<_>>().into()),
        (keys::BOS_ID, 2u32.into()),
        (keys::EOS_ID, 1u32.into()),
        (keys::UNK_ID, 3u32.into()),
        (keys::ADD_SPACE_PREFIX, false.into()),
    ];
    for (key, value) in extra {
        match kv.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => kv.push((key, value)),
        }
    }
    for (key, value) in kv {
        w.add_kv(key, value).unwrap();
    }
    GgufFile::from_bytes(w.finish().unwrap()).unwrap()
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_gguf(&file_with(&vocab(), vec![])).unwrap()
}

/// Token ids as their pieces, for readable assertions.
fn pieces(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&id| tok.piece(id).unwrap().to_owned()).collect()
}

fn encode(tok: &Tokenizer, text: &str) -> Vec<String> {
    pieces(tok, &tok.encode(text, false))
}

#[test]
fn merges_best_score_first() {
    let tok = tokenizer();
    // "bc" (-4) beats "ab" (-5).
    assert_eq!(encode(&tok, "abc"), ["a", "bc"]);
    // Equal scores: the leftmost pair merges first ("ll" before "lo"), then "llo", "he".
    assert_eq!(encode(&tok, "hello"), ["hello"]);
    assert_eq!(encode(&tok, "ab"), ["ab"]);
    assert_eq!(encode(&tok, " a"), ["▁a"]);
    assert_eq!(encode(&tok, "a b"), ["a", "▁", "b"]);
}

#[test]
fn equal_scores_merge_leftmost_first() {
    let mut v = vocab();
    for (piece, score, _) in v.iter_mut() {
        if piece == "ab" || piece == "bc" {
            *score = -4.0;
        }
    }
    let tok = Tokenizer::from_gguf(&file_with(&v, vec![])).unwrap();
    assert_eq!(encode(&tok, "abc"), ["ab", "c"]);
}

#[test]
fn byte_fallback_for_unknown_characters() {
    let tok = tokenizer();
    assert_eq!(encode(&tok, "é"), ["é"]);
    // "ж" is not in the vocabulary: its two UTF-8 bytes.
    assert_eq!(encode(&tok, "aж"), ["a", "<0xD0>", "<0xB6>"]);
    assert_eq!(encode(&tok, "😀"), ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]);
    assert_eq!(encode(&tok, "\0"), ["<0x00>"]);
}

#[test]
fn missing_byte_tokens_fall_back_to_unk() {
    let v: Vec<_> = vocab().into_iter().filter(|t| t.0 != "<0xB6>").collect();
    let tok = Tokenizer::from_gguf(&file_with(&v, vec![])).unwrap();
    assert_eq!(encode(&tok, "ж"), ["<0xD0>", "<unk>"]);
}

#[test]
fn user_defined_tokens_are_matched_whole() {
    let tok = tokenizer();
    assert_eq!(encode(&tok, "a\nb"), ["a", "\n", "b"]);
    assert_eq!(encode(&tok, "a  b"), ["a", "  ", "b"]);
    assert_eq!(encode(&tok, "a   b"), ["a", "  ", "▁", "b"]);
    assert_eq!(encode(&tok, "<b>ab</b>"), ["<b>", "ab", "<", "<0x2F>", "b", ">"]);
    assert_eq!(encode(&tok, "\n\n"), ["\n", "\n"]);
}

#[test]
fn longer_special_tokens_win_anywhere_in_the_text() {
    // llama.cpp matches "yzw" (longer) before "xy", even though "xy" starts first.
    let tok = tokenizer();
    assert_eq!(encode(&tok, "xyzw"), ["<0x78>", "yzw"]);
    assert_eq!(encode(&tok, "xyxyzw"), ["xy", "<0x78>", "yzw"]);
}

#[test]
fn control_tokens_are_not_parsed_from_user_text() {
    let tok = tokenizer();
    let text = "<start_of_turn>user\n<bos>";
    let ids = tok.encode(text, false);
    assert!(ids.iter().all(|&id| tok.token_type(id) != Some(TokenType::Control)), "{ids:?}");
    assert_eq!(tok.decode(&ids), text);
    // "<s" is a normal token: merging may produce it, as llama.cpp's does.
    assert_eq!(encode(&tok, "<s"), ["<s"]);

    let with_special = tok.encode_with_special(text, false);
    assert_eq!(pieces(&tok, &with_special[..1]), ["<start_of_turn>"]);
    assert_eq!(pieces(&tok, &with_special[with_special.len() - 2..]), ["\n", "<bos>"]);
}

#[test]
fn special_ids_and_flags() {
    let tok = tokenizer();
    assert_eq!((tok.bos(), tok.eos(), tok.unk(), tok.pad()), (2, 1, Some(3), None));
    assert_eq!(tok.end_of_turn(), Some(5));
    assert_eq!(tok.start_of_turn(), Some(4));
    assert!(tok.is_end_of_generation(1) && tok.is_end_of_generation(5));
    assert_eq!(tok.vocab_size(), vocab().len());
    assert_eq!(tok.encode("ab", true), [2, tok.token_id("ab").unwrap()]);
    assert_eq!(tok.encode("", true), [2]);
    assert!(tok.encode("", false).is_empty());

    let no_bos = file_with(&vocab(), vec![(keys::ADD_BOS, false.into())]);
    assert_eq!(Tokenizer::from_gguf(&no_bos).unwrap().encode("", true), [0u32; 0]);
    let eos = file_with(&vocab(), vec![(keys::ADD_EOS, true.into())]);
    assert_eq!(Tokenizer::from_gguf(&eos).unwrap().encode("", true), [2, 1]);
}

#[test]
fn space_prefix_after_special_tokens() {
    let f = file_with(&vocab(), vec![(keys::ADD_SPACE_PREFIX, true.into())]);
    let tok = Tokenizer::from_gguf(&f).unwrap();
    assert_eq!(encode(&tok, "a"), ["▁a"]);
    // llama.cpp prefixes every stretch of text that follows a special token.
    assert_eq!(encode(&tok, "a\na"), ["▁a", "\n", "▁a"]);
    // ...and decoding drops the first token's leading space.
    assert_eq!(tok.decode(&tok.encode("a\na", false)), "a\n a");
}

#[test]
fn decode_bytes_spaces_and_control_tokens() {
    let tok = tokenizer();
    let id = |p| tok.token_id(p).unwrap();
    assert_eq!(&*tok.token_bytes(id("▁a")), b" a");
    assert_eq!(&*tok.token_bytes(id("<0x0A>")), b"\n");
    assert_eq!(&*tok.token_bytes(id("<bos>")), b"<bos>");
    assert_eq!(&*tok.token_bytes(u32::MAX), b"");
    let ids = [id("<bos>"), id("▁a"), id("<0xD0>"), id("<0xB6>"), id("<end_of_turn>")];
    assert_eq!(tok.decode(&ids), " aж");
    // A lone continuation byte is not UTF-8.
    assert_eq!(tok.decode(&[id("a"), id("<0xB6>"), id("b")]), "a\u{FFFD}b");
}

#[test]
fn streaming_decoder_holds_back_partial_characters() {
    let tok = tokenizer();
    let ids = tok.encode("a😀bжé", false);
    let mut d = tok.decoder();
    let outs: Vec<String> = ids.iter().map(|&id| d.push(id)).collect();
    assert!(!d.has_pending());
    assert_eq!(outs.concat() + &d.finish(), "a😀bжé");
    // The four byte tokens of 😀: nothing until the last one.
    assert_eq!(outs[1..5], ["", "", "", "😀"]);

    // Invalid sequences come out as U+FFFD, as decode gives them; an unfinished one at
    // the end too.
    let id = |p| tok.token_id(p).unwrap();
    let ids = [id("<0xF0>"), id("a"), id("<0xD0>")];
    let mut d = tok.decoder();
    let streamed: String = ids.iter().map(|&i| d.push(i)).collect::<String>() + &d.finish();
    assert_eq!(streamed, tok.decode(&ids));
    assert_eq!(streamed, "\u{FFFD}a\u{FFFD}");
}

#[test]
fn long_inputs_are_fast_and_do_not_recurse() {
    let tok = tokenizer();
    let text = "ab".repeat(100_000);
    assert_eq!(tok.encode(&text, false).len(), 100_000);
    let text = "\n".repeat(100_000) + &"😀".repeat(10_000);
    assert_eq!(tok.encode(&text, false).len(), 140_000);
}

fn load_err(vocab: &[Entry], extra: Vec<(&str, GgufValue)>) -> Error {
    Tokenizer::from_gguf(&file_with(vocab, extra)).unwrap_err()
}

#[test]
fn malformed_vocabularies_are_rejected() {
    let v = vocab();
    let e = load_err(&v, vec![(keys::MODEL, "gpt2".into())]);
    assert!(matches!(&e, Error::TokenizerUnsupportedModel { model } if model == "gpt2"), "{e}");

    let e = load_err(&v, vec![(keys::SCORES, vec![0.0f32; 3].into())]);
    assert!(matches!(e, Error::TokenizerArrayLength { key: keys::SCORES, len: 3, .. }), "{e}");
    let e = load_err(&v, vec![(keys::TOKEN_TYPE, vec![1i32; v.len() + 1].into())]);
    assert!(matches!(e, Error::TokenizerArrayLength { key: keys::TOKEN_TYPE, .. }), "{e}");
    let e = load_err(&v, vec![(keys::SCORES, vec![0i32; v.len()].into())]);
    assert!(matches!(e, Error::Gguf(crate::gguf::GgufError::WrongType { .. })), "{e}");

    for key in [keys::BOS_ID, keys::EOS_ID, keys::UNK_ID, keys::PAD_ID, keys::EOT_ID] {
        let e = load_err(&v, vec![(key, (v.len() as u32).into())]);
        assert!(matches!(e, Error::TokenizerSpecialId { key: k, .. } if k == key), "{e}");
    }
    let e = load_err(&v, vec![(keys::BOS_ID, "2".into())]);
    assert!(matches!(e, Error::Gguf(_)), "{e}");
    let e = load_err(&v, vec![(keys::ADD_BOS, 1u32.into())]);
    assert!(matches!(e, Error::Gguf(_)), "{e}");

    let bad_token = |edit: &dyn Fn(&mut Vec<Entry>), why: &str| {
        let mut v = vocab();
        edit(&mut v);
        let e = load_err(&v, vec![]);
        assert!(matches!(&e, Error::TokenizerBadToken { why: w, .. } if w.contains(why)), "{e}");
    };
    bad_token(&|v| v[280].0 = "ab".into(), "same text as token");
    bad_token(&|v| v[280].1 = f32::NAN, "NaN");
    bad_token(&|v| v[280].2 = 7, "token type 7");
    bad_token(&|v| v[280].2 = -1, "token type -1");
    bad_token(&|v| v[280].2 = 6, "<0xXX>");
}

#[test]
fn absent_optional_keys_take_llama_cpp_defaults() {
    let mut w = GgufWriter::from_writer(Vec::new());
    let v = vocab();
    w.add_kv(keys::MODEL, "llama").unwrap();
    w.add_kv(keys::TOKENS, v.iter().map(|t| t.0.clone()).collect::<Vec<_>>()).unwrap();
    w.add_kv(keys::SCORES, v.iter().map(|t| t.1).collect::<Vec<_>>()).unwrap();
    w.add_kv(keys::TOKEN_TYPE, v.iter().map(|t| t.2).collect::<Vec<_>>()).unwrap();
    let tok = Tokenizer::from_gguf(&GgufFile::from_bytes(w.finish().unwrap()).unwrap()).unwrap();
    assert_eq!((tok.bos(), tok.eos(), tok.unk()), (1, 2, Some(0)));
    assert!(tok.adds_bos() && tok.add_space_prefix());
    // An empty vocabulary has no BOS.
    let e = load_err(&[], vec![]);
    assert!(matches!(e, Error::TokenizerSpecialId { key: keys::BOS_ID, .. }), "{e}");
}

#[test]
fn empty_pieces_are_renamed_as_llama_cpp_does() {
    let mut v = vocab();
    v[280].0 = String::new();
    let tok = Tokenizer::from_gguf(&file_with(&v, vec![])).unwrap();
    assert_eq!(tok.piece(280), Some("[EMPTY_280]"));
}

// ---- Gemma 4: BPE by merge rank (`"gemma4"`) ----

/// A vocabulary in the shape of Gemma 4's: specials, newline runs, byte tokens, normal pieces.
fn bpe_vocab() -> Vec<(String, i32)> {
    let mut v: Vec<(String, i32)> = [
        ("<pad>", CONTROL),
        ("<eos>", CONTROL),
        ("<bos>", CONTROL),
        ("<unk>", 2),
        ("<|turn>", CONTROL),
        ("<turn|>", CONTROL),
        ("<|channel>", USER),
        ("<|tool_response>", USER),
        ("</s>", USER),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_owned(), t))
    .collect();
    v.extend((0..=255u8).filter(|&b| b != 0xB6).map(|b| (format!("<0x{b:02X}>"), 6)));
    let normal = [
        "▁", "a", "b", "c", "ab", "bc", "abc", "aa", "aaaa", "▁a", "▁▁", "\n", "\n\n", "a\n", "é", ".", "▁.", "'", "s",
        "▁'", "'s",
    ];
    v.extend(normal.iter().map(|p| (p.to_string(), NORMAL)));
    v
}

const BPE_MERGES: &[&str] = &["b c", "a b", "a bc", "a a", "aa aa", "▁ a", "▁ ▁", "\n \n", "a \n", "▁ .", "' s"];

fn bpe_file(merges: &[&str], extra: Vec<(&str, GgufValue)>) -> GgufFile {
    let v = bpe_vocab();
    let mut kv: Vec<(&str, GgufValue)> = vec![
        (keys::MODEL, "gemma4".into()),
        (keys::PRE, "gemma4".into()),
        (keys::TOKENS, v.iter().map(|t| t.0.clone()).collect::<Vec<_>>().into()),
        (keys::SCORES, vec![-1000.0f32; v.len()].into()),
        (keys::TOKEN_TYPE, v.iter().map(|t| t.1).collect::<Vec<_>>().into()),
        (keys::MERGES, merges.iter().map(|m| m.to_string()).collect::<Vec<_>>().into()),
        (keys::BOS_ID, 2u32.into()),
        (keys::EOS_ID, 1u32.into()),
        (keys::ADD_SPACE_PREFIX, false.into()),
        (keys::ADD_BOS, true.into()),
    ];
    for (key, value) in extra {
        match kv.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => kv.push((key, value)),
        }
    }
    let mut w = GgufWriter::from_writer(Vec::new());
    for (key, value) in kv {
        w.add_kv(key, value).unwrap();
    }
    GgufFile::from_bytes(w.finish().unwrap()).unwrap()
}

fn bpe() -> Tokenizer {
    Tokenizer::from_gguf(&bpe_file(BPE_MERGES, vec![])).unwrap()
}

#[test]
fn bpe_merges_lowest_rank_first() {
    let tok = bpe();
    assert_eq!(tok.model(), TokenizerModel::Gemma4);
    assert_eq!(tok.n_merges(), BPE_MERGES.len());
    // "b c" (rank 0) before "a b" (rank 1), then "a bc".
    assert_eq!(encode(&tok, "abc"), ["abc"]);
    let tok2 = Tokenizer::from_gguf(&bpe_file(&["a b", "b c"], vec![])).unwrap();
    assert_eq!(encode(&tok2, "abc"), ["ab", "c"]);
    // Equal ranks (the same merge): the leftmost pair first.
    assert_eq!(encode(&tok, "aaa"), ["aa", "a"]);
    assert_eq!(encode(&tok, "aaaa"), ["aaaa"]);
    assert_eq!(encode(&tok, "aaaaa"), ["aaaa", "a"]);
    // Spaces become ▁, with no space prefix.
    assert_eq!(encode(&tok, "a a"), ["a", "▁a"]);
    // "▁ a" (rank 5) before "▁ ▁" (rank 6).
    assert_eq!(encode(&tok, "  a"), ["▁", "▁a"]);
    assert_eq!(encode(&tok, "  "), ["▁▁"]);
    assert_eq!(encode(&tok, "a ."), ["a", "▁."]);
}

#[test]
fn bpe_newline_runs_are_words_of_their_own() {
    let tok = bpe();
    // "a\n" is a token and "a \n" a merge, but newlines never merge with other text.
    assert_eq!(encode(&tok, "a\n"), ["a", "\n"]);
    assert_eq!(encode(&tok, "a\n\nb"), ["a", "\n\n", "b"]);
    // A run that is no token is merged like any word.
    assert_eq!(encode(&tok, "\n\n\n"), ["\n\n", "\n"]);
    assert_eq!(encode(&tok, "\n\n\n\n"), ["\n\n", "\n\n"]);
}

#[test]
fn bpe_byte_fallback_drops_missing_bytes() {
    let tok = bpe();
    assert_eq!(encode(&tok, "é"), ["é"]);
    // "ж" is D0 B6 and the vocabulary has no <0xB6>: llama.cpp drops the byte.
    assert_eq!(encode(&tok, "aж"), ["a", "<0xD0>"]);
    assert_eq!(encode(&tok, "😀"), ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]);
}

#[test]
fn bpe_specials_bos_and_end_of_generation() {
    let tok = bpe();
    let id = |p| tok.token_id(p).unwrap();
    assert_eq!(encode(&tok, "a<|channel>b"), ["a", "<|channel>", "b"]);
    let plain = tok.encode("<|turn>x<turn|>", false);
    assert!(plain.iter().all(|&i| tok.token_type(i) != Some(TokenType::Control)), "{plain:?}");
    assert_eq!(tok.decode(&plain), "<|turn>x<turn|>");
    assert_eq!(pieces(&tok, &tok.encode_with_special("<|turn>a<turn|>", false)), ["<|turn>", "a", "<turn|>"]);
    // llama.cpp forces add_bos on for Gemma 4.
    let no_bos = Tokenizer::from_gguf(&bpe_file(BPE_MERGES, vec![(keys::ADD_BOS, false.into())])).unwrap();
    assert!(no_bos.adds_bos());
    assert_eq!(no_bos.encode("a", true), [2, id("a")]);
    // <|tool_response> is an end-of-generation text (so control), and makes </s> a normal token.
    assert_eq!(tok.token_type(id("<|tool_response>")), Some(TokenType::Control));
    assert_eq!(tok.token_type(id("</s>")), Some(TokenType::Normal));
    let eog: Vec<&str> = tok.end_of_generation_ids().iter().map(|&i| tok.piece(i).unwrap()).collect();
    assert_eq!(eog, ["<eos>", "<turn|>", "<|tool_response>"]);
    assert_eq!(tok.end_of_turn(), Some(id("<turn|>")));
    assert_eq!(tok.start_of_turn(), Some(id("<|turn>")));
    assert_eq!(tok.unk(), None);
}

#[test]
fn bpe_decode_cleans_spaces_but_streaming_does_not() {
    let tok = bpe();
    let ids = tok.encode("a . a 's", false);
    assert_eq!(tok.decode(&ids), "a. a's");
    let mut d = tok.decoder();
    let streamed: String = ids.iter().map(|&i| d.push(i)).collect();
    assert_eq!(streamed + &d.finish(), "a . a 's");
}

#[test]
fn clean_spaces_as_llama_cpp() {
    let clean = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        super::bpe::clean_spaces(&mut b);
        String::from_utf8(b).unwrap()
    };
    assert_eq!(clean(""), "");
    assert_eq!(clean(" ."), ".");
    assert_eq!(clean("a , b ! c ? d ."), "a, b! c? d.");
    assert_eq!(clean("a  ."), "a .");
    assert_eq!(clean("a ' b"), "a'b");
    // The space after a matched apostrophe is consumed and no longer counts.
    assert_eq!(clean("a ' ' b"), "a'' b");
    assert_eq!(clean("it 's I 'm we 're you 've"), "it's I'm we're you've");
    assert_eq!(clean("don 't I 'd we 'll"), "don 't I 'd we 'll");
    assert_eq!(clean(" 's"), "'s");
    assert_eq!(clean("x '"), "x '");
}

#[test]
fn bpe_long_inputs_are_fast() {
    let tok = bpe();
    let text = "ab".repeat(100_000);
    assert_eq!(tok.encode(&text, false).len(), 100_000);
    let text = "a".repeat(400_000);
    assert_eq!(tok.encode(&text, false).len(), 100_000);
    let text = "\n".repeat(100_001) + &"😀".repeat(10_000);
    assert_eq!(tok.encode(&text, false).len(), 50_001 + 40_000);
}

/// One case per defect in the merges or the keys only Gemma 4 needs.
#[test]
fn bpe_malformed_vocabularies_are_rejected() {
    let missing = |key: &str| {
        let mut w = GgufWriter::from_writer(Vec::new());
        let file = bpe_file(BPE_MERGES, vec![]);
        for (k, v) in file.metadata().filter(|(k, _)| *k != key) {
            w.add_kv(k, v.clone()).unwrap();
        }
        Tokenizer::from_gguf(&GgufFile::from_bytes(w.finish().unwrap()).unwrap()).unwrap_err()
    };
    for key in [keys::MERGES, keys::BOS_ID, keys::EOS_ID] {
        let e = missing(key);
        println!("no {key}: {e}");
        assert!(matches!(&e, Error::Gguf(crate::gguf::GgufError::MissingKey { key: k }) if k == key), "{e}");
    }
    let e = Tokenizer::from_gguf(&bpe_file(BPE_MERGES, vec![(keys::MERGES, vec![1u32, 2].into())])).unwrap_err();
    assert!(matches!(e, Error::Gguf(crate::gguf::GgufError::WrongType { .. })), "{e}");
    let bad = |merge: &str, why: &str| {
        let e = Tokenizer::from_gguf(&bpe_file(&["a b", merge], vec![])).unwrap_err();
        println!("{merge:?}: {e}");
        assert!(matches!(&e, Error::TokenizerBadMerge { index: 1, why: w, .. } if w.contains(why)), "{e}");
    };
    bad("ab", "no space");
    bad("", "no space");
    bad(" a", "no space");
    bad("a x", "\"x\" is not a token");
    bad("q a", "\"q\" is not a token");
    bad("b a", "\"ba\" is not a token");
    bad("a ", "\"\" is not a token");
    // A repeated merge keeps its first rank, as llama.cpp's emplace does.
    let tok = Tokenizer::from_gguf(&bpe_file(&["a b", "b c", "a b"], vec![])).unwrap();
    assert_eq!((tok.n_merges(), encode(&tok, "abc")), (2, vec!["ab".to_owned(), "c".to_owned()]));
    let e = Tokenizer::from_gguf(&bpe_file(BPE_MERGES, vec![(keys::BOS_ID, 100_000u32.into())])).unwrap_err();
    assert!(matches!(e, Error::TokenizerSpecialId { key: keys::BOS_ID, .. }), "{e}");
}
