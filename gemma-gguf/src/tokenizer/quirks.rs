//! Token types that llama.cpp changes by token text after reading them from the file
//! (`llama_vocab::impl::load` in llama-cpp-sys-2 0.1.161, `src/llama-vocab.cpp`: the
//! "auto-detect special tokens by text" and end-of-generation blocks that follow it).
//!
//! These change what users see: in Gemma 3, `</s>` is stored as USER_DEFINED, but it is on
//! llama.cpp's list of end-of-generation texts, so llama.cpp makes it a control token. It is
//! then no longer matched in user text, and decoding drops it.
//!
//! One difference remains: for each fill-in-the-middle list llama.cpp marks only the first
//! matching token it meets while iterating a hash map, so when a vocabulary holds two texts
//! of the same list, which one it marks depends on that map's order; we mark both. (It marks
//! none of a list whose token the file names by key.) Gemma's vocabularies hold none of
//! these texts.

use super::vocab::Pieces;
use super::TokenType;

/// Texts llama.cpp turns into control tokens: its end-of-turn, end-of-message,
/// fill-in-the-middle and end-of-generation lists.
const CONTROL_LOOKING: &[&str] = &[
    // end of turn / message / generation
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
    "<|eom_id|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "</s>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "[e~[",
    // fill in the middle: prefix, suffix, middle, pad, repo, file separator
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

/// Texts llama.cpp always makes USER_DEFINED (its gpt-oss "always render" list).
const ALWAYS_USER_DEFINED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// Applies llama.cpp's changes to `types`. `eos` is the end-of-sequence id.
pub(super) fn apply(pieces: &Pieces, types: &mut [TokenType], eos: u32) {
    let id = |text: &str| pieces.id(text).map(|id| id as usize);
    let has = |text: &str| id(text).is_some();
    let mut set = |text: &str, ty: TokenType| {
        if let Some(i) = id(text) {
            types[i] = ty;
        }
    };
    for text in CONTROL_LOOKING {
        set(text, TokenType::Control);
    }
    for text in ALWAYS_USER_DEFINED {
        set(text, TokenType::UserDefined);
    }
    // o200k_harmony and solar-open: "<|end|>" ends a message, not the generation.
    let has_call = has("<|call|>") || has("<|calls|>");
    if has("<|end|>") && has_call && (has("<|return|>") || has("<|flush|>")) {
        set("<|end|>", TokenType::UserDefined);
    }
    // Gemma 4 and PLaMo have an ordinary "</s>".
    let eos_text = pieces.get(eos);
    if has("<|tool_response>") || eos_text == Some("<|plamo:eos|>") {
        set("</s>", TokenType::Normal);
    }
}

/// Texts llama.cpp puts in its end-of-generation set (the list after "maintain a list of
/// tokens that cause end-of-generation" in `impl::load`).
const END_OF_GENERATION: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Fill-in-the-middle pad, repository and file-separator texts: llama.cpp finds these ids by
/// text and adds them to the end-of-generation set too.
const FIM_END_OF_GENERATION: &[&str] = &[
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

/// llama.cpp's `special_eog_ids`, sorted: the tokens of [`END_OF_GENERATION`] and
/// [`FIM_END_OF_GENERATION`], EOS, the file's EOT; then without o200k_harmony's `<|end|>`,
/// and without `</s>` in a vocabulary with `<|tool_response>` (Gemma 4) or PLaMo's EOS.
pub(super) fn end_of_generation(pieces: &Pieces, eos: u32, eot: Option<u32>) -> Vec<u32> {
    let id = |text: &str| pieces.id(text);
    let mut eog: Vec<u32> = END_OF_GENERATION.iter().chain(FIM_END_OF_GENERATION).filter_map(|t| id(t)).collect();
    eog.push(eos);
    eog.extend(eot);
    eog.sort_unstable();
    eog.dedup();
    let mut remove = |text: &str| {
        if let Some(i) = id(text) {
            eog.retain(|&e| e != i);
        }
    };
    let has = |text: &str| id(text).is_some();
    let has_call = has("<|call|>") || has("<|calls|>");
    if has("<|end|>") && has_call && (has("<|return|>") || has("<|flush|>")) {
        remove("<|end|>");
    }
    if has("<|tool_response>") || pieces.get(eos) == Some("<|plamo:eos|>") {
        remove("</s>");
    }
    eog
}
