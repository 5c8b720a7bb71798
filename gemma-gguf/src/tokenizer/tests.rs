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
