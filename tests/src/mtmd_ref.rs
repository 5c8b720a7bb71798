//! libmtmd (llama.cpp's `tools/mtmd`, built by `llama-cpp-sys-2` 0.1.161 with its `mtmd`
//! feature) as the reference for projector files: load a language model and its mmproj the
//! way `llama-mtmd-cli` does, and encode one RGB image into the language model's embedding
//! space. Test-only; the runtime never calls libllama or libmtmd.
#![allow(unsafe_code)]

use llama_cpp_sys_2 as ll;
use std::ffi::{c_char, c_void, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Once;

unsafe extern "C" fn quiet(_level: ll::ggml_log_level, _text: *const c_char, _user: *mut c_void) {}

/// A language model and its projector, loaded by libllama and libmtmd on the CPU.
pub struct Mtmd {
    model: NonNull<ll::llama_model>,
    ctx: NonNull<ll::mtmd_context>,
}

/// Why libmtmd refused.
#[derive(Debug)]
pub struct MtmdError(pub String);

impl std::fmt::Display for MtmdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Mtmd {
    /// Loads `model` (`llama_model_load_from_file`, CPU) and `mmproj`
    /// (`mtmd_init_from_file`: no GPU, flash attention off so the attention is the plain
    /// matmul-softmax path, no warm-up, `threads` threads). libmtmd checks there that the
    /// projector's output width equals the model's embedding width.
    pub fn load(model: &Path, mmproj: &Path, threads: i32, verbose: bool) -> Result<Mtmd, MtmdError> {
        Self::load_with_fa(model, mmproj, threads, verbose, false)
    }

    /// [`Mtmd::load`] with the encoder's flash attention on (`flash_attn`: clip.cpp's
    /// `build_attn` then casts keys and values to f16 for ggml's fused kernel) or off.
    pub fn load_with_fa(
        model: &Path,
        mmproj: &Path,
        threads: i32,
        verbose: bool,
        flash_attn: bool,
    ) -> Result<Mtmd, MtmdError> {
        static INIT: Once = Once::new();
        INIT.call_once(|| {
            // SAFETY: `quiet` is a no-op with the callback's signature and lives for the
            // whole program; `llama_backend_init` may run once before any other call.
            unsafe {
                ll::llama_log_set(Some(quiet), std::ptr::null_mut());
                ll::llama_backend_init();
            }
        });
        if !verbose {
            // SAFETY: as above; libmtmd keeps the callback for later log lines.
            unsafe { ll::mtmd_log_set(Some(quiet), std::ptr::null_mut()) };
        }
        let cstr = |p: &Path| CString::new(p.to_str().unwrap_or_default()).map_err(|e| MtmdError(e.to_string()));
        let (c_model, c_mmproj) = (cstr(model)?, cstr(mmproj)?);
        // SAFETY: plain struct of defaults returned by value.
        let mut mparams = unsafe { ll::llama_model_default_params() };
        mparams.n_gpu_layers = 0;
        // SAFETY: `c_model` is NUL-terminated and outlives the call; params are defaults.
        let m = unsafe { ll::llama_model_load_from_file(c_model.as_ptr(), mparams) };
        let model = NonNull::new(m).ok_or_else(|| MtmdError(format!("libllama refused {}", model.display())))?;
        // SAFETY: plain struct of defaults returned by value.
        let mut p = unsafe { ll::mtmd_context_params_default() };
        p.use_gpu = false;
        p.print_timings = verbose;
        p.n_threads = threads;
        p.warmup = false;
        p.flash_attn_type =
            if flash_attn { ll::LLAMA_FLASH_ATTN_TYPE_ENABLED } else { ll::LLAMA_FLASH_ATTN_TYPE_DISABLED };
        // SAFETY: `c_mmproj` is NUL-terminated and outlives the call; `model` is live; the
        // params are libmtmd's defaults (its static marker string) with plain fields changed.
        let c = unsafe { ll::mtmd_init_from_file(c_mmproj.as_ptr(), model.as_ptr(), p) };
        match NonNull::new(c) {
            Some(ctx) => Ok(Mtmd { model, ctx }),
            None => {
                // SAFETY: `model` came from llama_model_load_from_file and is freed once.
                unsafe { ll::llama_model_free(model.as_ptr()) };
                Err(MtmdError(format!("libmtmd refused {}", mmproj.display())))
            }
        }
    }

    /// The language model's input embedding width.
    pub fn n_embd(&self) -> usize {
        // SAFETY: `self.model` is live.
        unsafe { ll::llama_model_n_embd_inp(self.model.as_ptr()) }.max(0) as usize
    }

    /// Encodes one `nx`×`ny` RGB image (row-major, 3 bytes a pixel): libmtmd preprocesses it
    /// (resize to the encoder's size, normalise), runs the encoder and projector, and returns
    /// `[n_tokens][n_embd]` embeddings.
    pub fn encode(&self, nx: u32, ny: u32, rgb: &[u8]) -> Result<Vec<Vec<f32>>, MtmdError> {
        if rgb.len() != nx as usize * ny as usize * 3 {
            return Err(MtmdError(format!("{} bytes for a {nx}×{ny} RGB image", rgb.len())));
        }
        // SAFETY: `rgb` holds nx·ny·3 bytes (checked above); libmtmd copies them.
        let bitmap = unsafe { ll::mtmd_bitmap_init(nx, ny, rgb.as_ptr()) };
        let bitmap = NonNull::new(bitmap).ok_or_else(|| MtmdError("mtmd_bitmap_init".into()))?;
        // SAFETY: no arguments; freed below.
        let chunks = unsafe { ll::mtmd_input_chunks_init() };
        let marker = CString::new("<__media__>").expect("no NUL");
        let text = ll::mtmd_input_text { text: marker.as_ptr(), text_len: 11, add_special: false, parse_special: true };
        let bitmaps = [bitmap.as_ptr() as *const ll::mtmd_bitmap];
        let mut out = Err(MtmdError("no image chunk".into()));
        // SAFETY: ctx is live; `text` points at a NUL-terminated marker of 11 bytes; one
        // bitmap for one marker; `chunks` receives the result.
        let rc = unsafe { ll::mtmd_tokenize(self.ctx.as_ptr(), chunks, &text, bitmaps.as_ptr(), 1) };
        if rc != 0 {
            out = Err(MtmdError(format!("mtmd_tokenize returned {rc}")));
        } else {
            // SAFETY: `chunks` is live; indices are below its size.
            let n = unsafe { ll::mtmd_input_chunks_size(chunks) };
            for i in 0..n {
                // SAFETY: as above; the chunk lives as long as `chunks`.
                let chunk = unsafe { ll::mtmd_input_chunks_get(chunks, i) };
                // SAFETY: `chunk` is a live chunk of `chunks`.
                if unsafe { ll::mtmd_input_chunk_get_type(chunk) } != ll::MTMD_INPUT_CHUNK_TYPE_IMAGE {
                    continue;
                }
                // SAFETY: ctx and chunk are live; the output buffer belongs to ctx and holds
                // n_tokens · n_embd floats after a successful encode (mtmd.h).
                out = unsafe {
                    if ll::mtmd_encode_chunk(self.ctx.as_ptr(), chunk) != 0 {
                        Err(MtmdError("mtmd_encode_chunk failed".into()))
                    } else {
                        let n_tok = ll::mtmd_input_chunk_get_n_tokens(chunk);
                        let e = self.n_embd();
                        let p = ll::mtmd_get_output_embd(self.ctx.as_ptr());
                        let all = std::slice::from_raw_parts(p, n_tok * e);
                        Ok(all.chunks(e).map(|r| r.to_vec()).collect())
                    }
                };
                break;
            }
        }
        // SAFETY: both were made above and are freed once.
        unsafe {
            ll::mtmd_input_chunks_free(chunks);
            ll::mtmd_bitmap_free(bitmap.as_ptr());
        }
        out
    }
}

/// A libllama context on the [`Mtmd`]'s language model, fed the way libmtmd's helper feeds
/// an image prompt (`mtmd_helper_eval_chunk_single`, mtmd-helper.cpp): text tokens in one
/// batch, each image's embeddings in one batch with causal attention off when libmtmd says so
/// (`mtmd_decode_use_non_causal`), no logits read for image positions.
pub struct MtmdLm<'a> {
    mtmd: &'a Mtmd,
    ctx: NonNull<ll::llama_context>,
    n_past: i32,
    n_vocab: usize,
}

impl Mtmd {
    /// A fresh context of `n_ctx` cells (one batch holds them all), `threads` threads, f16
    /// cache, flash attention off, window-sized cache for sliding-window layers (as ours).
    pub fn lm(&self, n_ctx: u32, threads: i32) -> Result<MtmdLm<'_>, MtmdError> {
        // SAFETY: plain struct of defaults returned by value.
        let mut cp = unsafe { ll::llama_context_default_params() };
        cp.n_ctx = n_ctx;
        cp.n_batch = n_ctx;
        cp.n_ubatch = n_ctx;
        cp.n_threads = threads;
        cp.n_threads_batch = threads;
        cp.swa_full = false;
        cp.flash_attn_type = ll::LLAMA_FLASH_ATTN_TYPE_DISABLED;
        // SAFETY: `self.model` is live and outlives the context (borrowed by MtmdLm).
        let ctx = unsafe { ll::llama_init_from_model(self.model.as_ptr(), cp) };
        let ctx = NonNull::new(ctx).ok_or_else(|| MtmdError("llama_init_from_model failed".into()))?;
        // SAFETY: `self.model` is live.
        let n_vocab = unsafe { ll::llama_vocab_n_tokens(ll::llama_model_get_vocab(self.model.as_ptr())) } as usize;
        Ok(MtmdLm { mtmd: self, ctx, n_past: 0, n_vocab })
    }

    /// Whether libmtmd decodes this projector's images with causal attention off.
    pub fn non_causal(&self) -> bool {
        // SAFETY: ctx is live; a null chunk asks about the vision projector.
        unsafe { ll::mtmd_decode_use_non_causal(self.ctx.as_ptr(), std::ptr::null()) }
    }
}

impl MtmdLm<'_> {
    /// Feeds `tokens` after the cache; returns the logits of every position, row by row.
    pub fn decode_tokens(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, MtmdError> {
        let n = tokens.len();
        // SAFETY: the batch is sized for n tokens, one sequence id each; every entry is
        // filled before llama_decode; logits rows are read for positions flagged as outputs.
        unsafe {
            let mut batch = ll::llama_batch_init(n as i32, 0, 1);
            for (i, &t) in tokens.iter().enumerate() {
                *batch.token.add(i) = t as i32;
                *batch.pos.add(i) = self.n_past + i as i32;
                *batch.n_seq_id.add(i) = 1;
                *(*batch.seq_id.add(i)) = 0;
                *batch.logits.add(i) = 1;
            }
            batch.n_tokens = n as i32;
            let rc = ll::llama_decode(self.ctx.as_ptr(), batch);
            ll::llama_batch_free(batch);
            if rc != 0 {
                return Err(MtmdError(format!("llama_decode returned {rc}")));
            }
            self.n_past += n as i32;
            Ok((0..n)
                .map(|i| {
                    let p = ll::llama_get_logits_ith(self.ctx.as_ptr(), i as i32);
                    std::slice::from_raw_parts(p, self.n_vocab).to_vec()
                })
                .collect())
        }
    }

    /// Feeds one image's embeddings (`[n_tokens][n_embd]`) after the cache, in one batch,
    /// causal attention off when libmtmd decodes this projector's images so.
    pub fn decode_image(&mut self, rows: &[Vec<f32>]) -> Result<(), MtmdError> {
        let (n, e) = (rows.len(), self.mtmd.n_embd());
        if rows.iter().any(|r| r.len() != e) {
            return Err(MtmdError(format!("image rows must have {e} values")));
        }
        let non_causal = self.mtmd.non_causal();
        // SAFETY: the batch is sized for n rows of e floats, one sequence id each; every
        // entry is filled before llama_decode; causal attention is restored after it.
        unsafe {
            let mut batch = ll::llama_batch_init(n as i32, e as i32, 1);
            for (i, r) in rows.iter().enumerate() {
                std::ptr::copy_nonoverlapping(r.as_ptr(), batch.embd.add(i * e), e);
                *batch.pos.add(i) = self.n_past + i as i32;
                *batch.n_seq_id.add(i) = 1;
                *(*batch.seq_id.add(i)) = 0;
                *batch.logits.add(i) = 0;
            }
            batch.n_tokens = n as i32;
            if non_causal {
                ll::llama_set_causal_attn(self.ctx.as_ptr(), false);
            }
            let rc = ll::llama_decode(self.ctx.as_ptr(), batch);
            if non_causal {
                ll::llama_set_causal_attn(self.ctx.as_ptr(), true);
            }
            ll::llama_batch_free(batch);
            if rc != 0 {
                return Err(MtmdError(format!("llama_decode (image) returned {rc}")));
            }
        }
        self.n_past += n as i32;
        Ok(())
    }
}

impl Drop for MtmdLm<'_> {
    fn drop(&mut self) {
        // SAFETY: made in `Mtmd::lm`, freed once, before the model (borrowed).
        unsafe { ll::llama_free(self.ctx.as_ptr()) };
    }
}

impl Drop for Mtmd {
    fn drop(&mut self) {
        // SAFETY: both handles were made in `load` and are freed once, context first.
        unsafe {
            ll::mtmd_free(self.ctx.as_ptr());
            ll::llama_model_free(self.model.as_ptr());
        }
    }
}
