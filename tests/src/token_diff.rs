//! What the tokenizer tests print about a text and a difference between two id lists.
use gemma_gguf::tokenizer::Tokenizer;

/// `text` quoted, cut after 100 characters.
pub fn show(text: &str) -> String {
    let s = format!("{text:?}");
    match s.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Compares two id lists; on a difference, a description around the first one.
pub fn diff(tok: &Tokenizer, ours: &[u32], theirs: &[u32]) -> Option<String> {
    if ours == theirs {
        return None;
    }
    let at = ours.iter().zip(theirs).take_while(|(a, b)| a == b).count();
    let window = |ids: &[u32]| {
        let from = at.saturating_sub(2);
        let to = (at + 4).min(ids.len());
        let pieces: Vec<String> =
            ids[from..to].iter().map(|&id| format!("{id}:{:?}", tok.piece(id).unwrap_or("?"))).collect();
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
