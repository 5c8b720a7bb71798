//! llama.cpp itself (libllama, built by `llama-cpp-sys-2`) as a reference model runner for
//! tests: load a GGUF, evaluate tokens, read logits. Test-only; the runtime never uses it.
#![allow(unsafe_code)]

use llama_cpp_sys_2 as ll;
use std::ffi::CString;
use std::path::Path;

/// A libllama model and context.
pub struct LlamaRunner {
    /// Activations captured through `cb_eval` (name, values), for debugging.
    capture: Box<Capture>,
    model: *mut ll::llama_model,
    ctx: *mut ll::llama_context,
    n_vocab: usize,
    /// Tokens in the cache, per sequence.
    n_past: Vec<i32>,
    /// A persistent CPU thread pool attached to the context (null: ggml's per-graph one).
    threadpool: *mut ll::ggml_threadpool,
}

/// Options for the reference context.
#[derive(Debug, Clone, Copy)]
pub struct LlamaOptions<'a> {
    /// Graph nodes to capture (llama.cpp's `name-layer` names).
    pub capture: &'a [&'a str],
    pub n_ctx: u32,
    pub n_threads: i32,
    pub flash_attn: bool,
}

#[derive(Default)]
struct Capture {
    names: Vec<String>,
    got: Vec<(String, Vec<f32>)>,
}

extern "C" fn eval_cb(t: *mut ll::ggml_tensor, ask: bool, user: *mut std::ffi::c_void) -> bool {
    // SAFETY: `user` is the runner's boxed Capture; `t` is a live tensor during the callback;
    // data is read only for F32 tensors, whole.
    unsafe {
        let cap = &mut *(user as *mut Capture);
        let name = std::ffi::CStr::from_ptr((*t).name.as_ptr()).to_string_lossy().into_owned();
        let wanted = cap.names.contains(&name);
        if ask {
            return wanted;
        }
        if wanted && (*t).type_ == ll::GGML_TYPE_F32 {
            let n = ll::ggml_nelements(t) as usize;
            let mut v = vec![0f32; n];
            if ll::ggml_is_contiguous(t) {
                ll::ggml_backend_tensor_get(t, v.as_mut_ptr().cast(), 0, n * 4);
                cap.got.push((name, v));
            }
        }
        true
    }
}

extern "C" fn quiet(_level: ll::ggml_log_level, _text: *const std::os::raw::c_char, _user: *mut std::ffi::c_void) {}

impl LlamaRunner {
    pub fn load(path: &Path, o: LlamaOptions) -> LlamaRunner {
        LlamaRunner::with_sequences(path, o, 1)
    }

    /// A context holding `n_seq` sequences in one unified cache of `n_ctx` cells (llama-server
    /// `-np N --kv-unified`, the layout of our `Session::with_sequences`), fed together by
    /// [`decode_seqs`](Self::decode_seqs).
    pub fn with_sequences(path: &Path, o: LlamaOptions, n_seq: u32) -> LlamaRunner {
        LlamaRunner::init(path, o, n_seq, None)
    }

    /// One sequence with `n_gpu_layers` (llama.cpp's `-ngl`; -1: all) on `device`, a
    /// ggml device of the build (e.g. `Vulkan0`), the rest on the CPU: libllama's own offload,
    /// the reference for what a ggml GPU backend achieves.
    pub fn on_device(path: &Path, o: LlamaOptions, device: &str, n_gpu_layers: i32) -> LlamaRunner {
        LlamaRunner::init(path, o, 1, Some((device, n_gpu_layers)))
    }

    fn init(path: &Path, o: LlamaOptions, n_seq: u32, gpu: Option<(&str, i32)>) -> LlamaRunner {
        assert!(n_seq >= 1 && o.n_ctx >= n_seq, "1 to n_ctx sequences");
        let c = CString::new(path.to_str().expect("utf-8 path")).unwrap();
        // SAFETY: plain libllama initialisation; the callback is a static no-op.
        unsafe {
            ll::llama_log_set(Some(quiet), std::ptr::null_mut());
            ll::llama_backend_init();
            let mut mp = ll::llama_model_default_params();
            // The named device only; none at all for the CPU reference (with a GPU backend
            // built in, libllama would otherwise still hand large batches' products to it).
            let mut devices: Vec<ll::ggml_backend_dev_t> = Vec::new();
            if let Some((name, _)) = gpu {
                let c = CString::new(name).unwrap();
                let dev = ll::ggml_backend_dev_by_name(c.as_ptr());
                assert!(!dev.is_null(), "libllama has no device {name}");
                devices.push(dev);
            }
            devices.push(std::ptr::null_mut());
            mp.devices = devices.as_mut_ptr();
            mp.n_gpu_layers = gpu.map_or(0, |(_, n)| n);
            let model = ll::llama_model_load_from_file(c.as_ptr(), mp);
            assert!(!model.is_null(), "libllama could not load {}", path.display());
            let mut cp = ll::llama_context_default_params();
            cp.n_ctx = o.n_ctx;
            cp.n_batch = o.n_ctx;
            cp.n_ubatch = 512;
            cp.n_threads = o.n_threads;
            cp.n_seq_max = n_seq;
            // One cache for every sequence, as ours; a lone sequence keeps libllama's default.
            cp.kv_unified = n_seq > 1;
            // A window-sized cache for the sliding-window layers, as ours (llama.cpp's default
            // keeps full-size caches for them).
            cp.swa_full = false;
            cp.n_threads_batch = o.n_threads;
            cp.flash_attn_type =
                if o.flash_attn { ll::LLAMA_FLASH_ATTN_TYPE_ENABLED } else { ll::LLAMA_FLASH_ATTN_TYPE_DISABLED };
            let mut capture =
                Box::new(Capture { names: o.capture.iter().map(|s| s.to_string()).collect(), got: Vec::new() });
            if !o.capture.is_empty() {
                cp.cb_eval = Some(eval_cb);
                cp.cb_eval_user_data = (&mut *capture) as *mut Capture as *mut std::ffi::c_void;
            }
            let ctx = ll::llama_init_from_model(model, cp);
            assert!(!ctx.is_null(), "libllama could not create a context");
            let n_vocab = ll::llama_vocab_n_tokens(ll::llama_model_get_vocab(model)) as usize;
            let n_past = vec![0; n_seq as usize];
            LlamaRunner { capture, model, ctx, n_vocab, n_past, threadpool: std::ptr::null_mut() }
        }
    }

    /// Gives the context a persistent thread pool of `n_threads`, as llama-bench does (its
    /// default polling level, 50); without one, ggml starts threads for every graph.
    pub fn attach_threadpool(&mut self, n_threads: i32) {
        // SAFETY: default params for n_threads; the pool is freed in Drop after the context.
        unsafe {
            let mut params = ll::ggml_threadpool_params_default(n_threads);
            let tp = ll::ggml_threadpool_new(&mut params);
            assert!(!tp.is_null(), "ggml_threadpool_new failed");
            ll::llama_attach_threadpool(self.ctx, tp, std::ptr::null_mut());
            if !self.threadpool.is_null() {
                ll::ggml_threadpool_free(self.threadpool);
            }
            self.threadpool = tp;
        }
    }

    /// Feeds `tokens` after the cache, computing logits for the last one without reading them
    /// (llama-bench's `test_prompt` / `test_gen` step: `llama_batch_get_one`, then
    /// `llama_synchronize`).
    pub fn decode(&mut self, tokens: &[u32]) {
        let mut ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        // SAFETY: the batch views `ids`, alive for the call; libllama copies what it keeps.
        unsafe {
            let batch = ll::llama_batch_get_one(ids.as_mut_ptr(), ids.len() as i32);
            let rc = ll::llama_decode(self.ctx, batch);
            assert_eq!(rc, 0, "llama_decode failed");
            ll::llama_synchronize(self.ctx);
        }
        self.n_past[0] += tokens.len() as i32;
    }

    /// Feeds each `(seq, tokens)` after what that sequence holds, all in one `llama_batch`
    /// (llama-server's way of decoding its slots together); returns the logits after each
    /// entry's last token, one row of n_vocab per entry, in order.
    pub fn decode_seqs(&mut self, entries: &[(usize, &[u32])]) -> Vec<f32> {
        let n: usize = entries.iter().map(|(_, t)| t.len()).sum();
        let mut rows = Vec::with_capacity(entries.len());
        // SAFETY: the batch is sized for n tokens with one sequence id each; libllama reads
        // the filled entries only; logits rows are read for the positions flagged as outputs.
        unsafe {
            let mut batch = ll::llama_batch_init(n as i32, 0, 1);
            let mut i = 0;
            for &(seq, tokens) in entries {
                for (k, &t) in tokens.iter().enumerate() {
                    *batch.token.add(i) = t as i32;
                    *batch.pos.add(i) = self.n_past[seq] + k as i32;
                    *batch.n_seq_id.add(i) = 1;
                    *(*batch.seq_id.add(i)) = seq as i32;
                    *batch.logits.add(i) = (k + 1 == tokens.len()) as i8;
                    i += 1;
                }
                self.n_past[seq] += tokens.len() as i32;
                rows.push(i as i32 - 1);
            }
            batch.n_tokens = n as i32;
            let rc = ll::llama_decode(self.ctx, batch);
            ll::llama_batch_free(batch);
            assert_eq!(rc, 0, "llama_decode failed");
            let mut out = Vec::with_capacity(rows.len() * self.n_vocab);
            for r in rows {
                let p = ll::llama_get_logits_ith(self.ctx, r);
                out.extend_from_slice(std::slice::from_raw_parts(p, self.n_vocab));
            }
            out
        }
    }

    /// Activations captured since the last call (name, values).
    pub fn take_captured(&mut self) -> Vec<(String, Vec<f32>)> {
        std::mem::take(&mut self.capture.got)
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Empties the KV cache.
    pub fn clear(&mut self) {
        // SAFETY: live context.
        unsafe { ll::llama_memory_clear(ll::llama_get_memory(self.ctx), true) };
        self.n_past.fill(0);
    }

    /// Feeds `tokens` after the cache; returns logits for every token (`all`) or the last.
    pub fn eval(&mut self, tokens: &[u32], all: bool) -> Vec<f32> {
        let n = tokens.len();
        // SAFETY: the batch is sized for n tokens with one sequence id each; libllama reads
        // the filled entries only; logits rows are read for positions flagged as outputs.
        unsafe {
            let mut batch = ll::llama_batch_init(n as i32, 0, 1);
            for (i, &t) in tokens.iter().enumerate() {
                *batch.token.add(i) = t as i32;
                *batch.pos.add(i) = self.n_past[0] + i as i32;
                *batch.n_seq_id.add(i) = 1;
                *(*batch.seq_id.add(i)) = 0;
                *batch.logits.add(i) = (all || i + 1 == n) as i8;
            }
            batch.n_tokens = n as i32;
            let rc = ll::llama_decode(self.ctx, batch);
            ll::llama_batch_free(batch);
            assert_eq!(rc, 0, "llama_decode failed");
            self.n_past[0] += n as i32;
            let rows: Vec<i32> = if all { (0..n as i32).collect() } else { vec![n as i32 - 1] };
            let mut out = Vec::with_capacity(rows.len() * self.n_vocab);
            for r in rows {
                let p = ll::llama_get_logits_ith(self.ctx, r);
                out.extend_from_slice(std::slice::from_raw_parts(p, self.n_vocab));
            }
            out
        }
    }

    /// llama.cpp's tokenization of `text` (with BOS when `add_bos`; control tokens not parsed).
    pub fn tokenize(&self, text: &str, add_bos: bool) -> Vec<u32> {
        // SAFETY: the buffer is sized from libllama's own count (negative when too small).
        unsafe {
            let vocab = ll::llama_model_get_vocab(self.model);
            let call = |buf: &mut Vec<i32>| {
                let (p, len) = (text.as_ptr().cast(), text.len() as i32);
                ll::llama_tokenize(vocab, p, len, buf.as_mut_ptr(), buf.len() as i32, add_bos, false)
            };
            let mut buf = vec![0i32; text.len() + 8];
            let mut n = call(&mut buf);
            if n < 0 {
                buf.resize((-n) as usize, 0);
                n = call(&mut buf);
            }
            buf.truncate(n.max(0) as usize);
            buf.into_iter().map(|t| t as u32).collect()
        }
    }
}

impl Drop for LlamaRunner {
    fn drop(&mut self) {
        // SAFETY: created in `load`, freed once, context before model.
        unsafe {
            ll::llama_free(self.ctx);
            ll::llama_model_free(self.model);
            if !self.threadpool.is_null() {
                ll::ggml_threadpool_free(self.threadpool);
            }
        }
    }
}
