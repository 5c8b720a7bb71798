//! libllama's tokenizer (llama.cpp as built by `llama-cpp-sys-2` 0.1.161) as a reference
//! for the tokenizer tests: a vocabulary-only model and safe calls for tokenizing and
//! detokenizing. Test-only; the runtime never calls libllama.
#![allow(unsafe_code)]

use llama_cpp_sys_2 as ll;
use std::ffi::{c_char, c_void, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Once;

/// A GGUF file's vocabulary loaded by libllama (`vocab_only`: no tensors are read).
pub struct LlamaVocab {
    model: NonNull<ll::llama_model>,
}

/// libllama logs every key of a file it loads; tests print their own findings instead.
unsafe extern "C" fn quiet(_level: ll::ggml_log_level, _text: *const c_char, _user: *mut c_void) {}

impl LlamaVocab {
    /// Loads the vocabulary of the GGUF at `path` (`llama_model_load_from_file` with
    /// `vocab_only = true`). `None` when libllama refuses the file.
    pub fn load(path: &Path) -> Option<LlamaVocab> {
        static INIT: Once = Once::new();
        INIT.call_once(|| {
            // SAFETY: `quiet` is a no-op with the callback's signature and lives for the
            // whole program; `llama_backend_init` takes no arguments and may run once before
            // any other call.
            unsafe {
                ll::llama_log_set(Some(quiet), std::ptr::null_mut());
                ll::llama_backend_init();
            }
        });
        let c_path = CString::new(path.to_str()?).ok()?;
        // SAFETY: plain struct of defaults returned by value.
        let mut params = unsafe { ll::llama_model_default_params() };
        params.vocab_only = true;
        params.n_gpu_layers = 0;
        // SAFETY: `c_path` is a NUL-terminated string that outlives the call; `params` holds
        // libllama's defaults (null callbacks and overrides) with two plain fields changed.
        let model = unsafe { ll::llama_model_load_from_file(c_path.as_ptr(), params) };
        NonNull::new(model).map(|model| LlamaVocab { model })
    }

    fn vocab(&self) -> *const ll::llama_vocab {
        // SAFETY: `self.model` is a live model (freed only in Drop); the vocabulary it
        // returns lives as long as the model.
        unsafe { ll::llama_model_get_vocab(self.model.as_ptr()) }
    }

    /// Number of tokens (`llama_vocab_n_tokens`).
    pub fn n_tokens(&self) -> usize {
        // SAFETY: `self.vocab()` is valid while `self` is.
        let n = unsafe { ll::llama_vocab_n_tokens(self.vocab()) };
        n.max(0) as usize
    }

    /// `llama_vocab_is_eog`: whether generation ends at this token. False for an id outside
    /// the vocabulary (libllama looks ids up in a set, so any id is safe to pass).
    pub fn is_eog(&self, id: u32) -> bool {
        let Ok(token) = ll::llama_token::try_from(id) else { return false };
        // SAFETY: `self.vocab()` is valid while `self` is; the call only looks the id up.
        unsafe { ll::llama_vocab_is_eog(self.vocab(), token) }
    }

    /// `llama_tokenize`. `add_special` adds BOS/EOS as the vocabulary asks; `parse_special`
    /// recognises control tokens written in the text.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let len = i32::try_from(text.len()).expect("text under 2 GiB");
        // At most one token per byte, plus BOS and EOS.
        let mut tokens: Vec<ll::llama_token> = vec![0; text.len() + 2];
        loop {
            let cap = i32::try_from(tokens.len()).expect("token count under 2^31");
            // SAFETY: `text` is `len` readable bytes (libllama copies them and needs no NUL);
            // `tokens` has room for `cap` tokens, and libllama writes at most that many.
            let n = unsafe {
                ll::llama_tokenize(
                    self.vocab(),
                    text.as_ptr().cast(),
                    len,
                    tokens.as_mut_ptr(),
                    cap,
                    add_special,
                    parse_special,
                )
            };
            assert!(n != i32::MIN, "libllama: too many tokens");
            if n < 0 {
                tokens.resize(n.unsigned_abs() as usize, 0);
                continue;
            }
            tokens.truncate(n as usize);
            return tokens.into_iter().map(|t| t as u32).collect();
        }
    }

    /// `llama_token_to_piece` with no stripping: a token's bytes; `special` renders control
    /// tokens as their text.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Vec<u8> {
        let token = id as ll::llama_token;
        let mut buf = vec![0u8; 64];
        loop {
            let cap = i32::try_from(buf.len()).expect("piece under 2 GiB");
            // SAFETY: `buf` has `cap` writable bytes; libllama writes at most that many and
            // returns minus the size needed when they do not suffice.
            let n = unsafe { ll::llama_token_to_piece(self.vocab(), token, buf.as_mut_ptr().cast(), cap, 0, special) };
            if n < 0 {
                buf.resize(n.unsigned_abs() as usize, 0);
                continue;
            }
            buf.truncate(n as usize);
            return buf;
        }
    }

    /// `llama_detokenize`: the bytes of `ids` as one text.
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> Vec<u8> {
        let tokens: Vec<ll::llama_token> = ids.iter().map(|&t| t as ll::llama_token).collect();
        let n_tokens = i32::try_from(tokens.len()).expect("under 2^31 tokens");
        let mut buf = vec![0u8; 16 * tokens.len() + 16];
        loop {
            let cap = i32::try_from(buf.len()).expect("text under 2 GiB");
            // SAFETY: `tokens` holds `n_tokens` ids and `buf` has `cap` writable bytes;
            // libllama writes at most `cap` and returns minus the size needed otherwise.
            let n = unsafe {
                ll::llama_detokenize(
                    self.vocab(),
                    tokens.as_ptr(),
                    n_tokens,
                    buf.as_mut_ptr().cast(),
                    cap,
                    remove_special,
                    unparse_special,
                )
            };
            if n < 0 {
                buf.resize(n.unsigned_abs() as usize, 0);
                continue;
            }
            buf.truncate(n as usize);
            return buf;
        }
    }
}

impl Drop for LlamaVocab {
    fn drop(&mut self) {
        // SAFETY: the model came from `llama_model_load_from_file` and is freed once, here.
        unsafe { ll::llama_model_free(self.model.as_ptr()) };
    }
}
