//! Flags shared by the commands that load a model, and the memory report.
use anyhow::{bail, Context as _, Result};
use gemma_gguf::constrain::{ConstraintEngine, ConstraintSpec};
use gemma_gguf::ggml::Type;
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::sampler::SamplerParams;
use gemma_gguf::session::{Session, SessionOptions, DEFAULT_CTX, DEFAULT_UBATCH};
use std::path::{Path, PathBuf};

/// Model and runtime flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// The GGUF model file (e.g. from scripts/fetch-model.sh).
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Compute threads (default: the logical CPUs).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Context size in tokens (KV cache); refused before allocating when it does not fit.
    #[arg(short = 'c', long = "ctx-size", default_value_t = DEFAULT_CTX)]
    pub ctx: u32,
    /// Largest batch of prompt tokens per graph.
    #[arg(long = "ubatch", default_value_t = DEFAULT_UBATCH)]
    pub ubatch: u32,
    /// Device to run on, as `gemma --version` lists them (CPU, CUDA0, Vulkan0…).
    #[arg(long = "device")]
    pub device: Option<String>,
    /// Layers on the device (llama.cpp's -ngl): the last N, the output projection counting
    /// as one more, the rest on the CPU. Default with --device: all. Without --device, N > 0
    /// picks the first GPU.
    #[arg(long = "gpu-layers", visible_alias = "n-gpu-layers", visible_alias = "ngl", value_name = "N")]
    pub gpu_layers: Option<u32>,
    /// Use ggml's fused flash-attention kernel.
    #[arg(long = "flash-attn", visible_alias = "fa")]
    pub flash_attn: bool,
    /// KV cache type: f16, or q8_0 (half the memory; needs --flash-attn).
    #[arg(long = "cache-type", default_value = "f16")]
    pub cache_type: String,
    /// Keep every weight mapped from the file: no repacking into the CPU's faster layout
    /// (less memory, slower matrix products).
    #[arg(long = "no-repack")]
    pub no_repack: bool,
    /// Run the weights that are not repacked from the mapped file, in its 4 KiB pages, as
    /// llama.cpp does by default. Without it (Linux, transparent huge pages not off) they are
    /// copied into memory on 2 MiB pages, which a decode step reads up to twice as fast; the
    /// file's pages are given back, so the memory used is the same. A model that does not fit
    /// in the available memory stays mapped either way.
    #[arg(long = "mmap")]
    pub mmap: bool,
    /// Keep the file's q5_0 matrices as q5_0. Without it, on x86-64, the copies above hold
    /// them as q8_0: the same values, so the same results bit for bit, with prompts about 10%
    /// faster, and 12/22 more memory for those matrices (+23 MiB on Gemma 3 270M Q4_K_M,
    /// +163 MiB on a 1B).
    #[arg(long = "no-widen")]
    pub no_widen: bool,
}

impl ModelArgs {
    /// The model's load options from these flags.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            device: self.device.clone(),
            threads: self.threads,
            no_repack: self.no_repack,
            mmap: self.mmap,
            no_widen: self.no_widen,
            gpu_layers: self.gpu_layers,
            ..LoadOptions::default()
        }
    }

    pub fn load(&self) -> Result<Model> {
        let opts = self.load_options();
        Model::load(&self.model, &opts).with_context(|| format!("loading {}", self.model.display()))
    }

    pub fn session_options(&self) -> Result<SessionOptions> {
        let kv_type = match self.cache_type.to_ascii_lowercase().as_str() {
            "f16" => Type::F16,
            "q8_0" => Type::Q8_0,
            other => bail!("--cache-type {other}: use f16 or q8_0"),
        };
        Ok(SessionOptions { n_ctx: self.ctx, n_ubatch: self.ubatch, flash_attn: self.flash_attn, kv_type })
    }

    pub fn session<'m>(&self, model: &'m Model) -> Result<Session<'m>> {
        Ok(Session::new(model, self.session_options()?)?)
    }
}

/// Sampling flags (llama.cpp's names and defaults).
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 picks the most likely token (greedy).
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Keep the k most likely tokens (0: off).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: u32,
    /// Keep the most likely tokens up to this cumulative probability (1: off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one (0: off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalise tokens seen in the last --repeat-last-n tokens (1: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed, for reproducible runs (default: from the clock).
    #[arg(long = "seed")]
    pub seed: Option<u64>,
}

/// Constrained output: at most one of a JSON Schema, a Lark grammar, a regex.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConstraintArgs {
    /// Constrain the output to a JSON Schema: the schema itself (`{…}`) or a file holding it.
    #[arg(long = "json-schema", value_name = "FILE|JSON", group = "constraint")]
    pub json_schema: Option<String>,
    /// Constrain the output to a grammar in llguidance's Lark syntax, read from FILE.
    #[arg(long = "grammar", value_name = "FILE", group = "constraint")]
    pub grammar: Option<PathBuf>,
    /// Constrain the output to match a regular expression (Rust regex syntax), whole.
    #[arg(long = "regex", value_name = "RE", group = "constraint")]
    pub regex: Option<String>,
}

impl ConstraintArgs {
    /// The constraint asked for, if any, read and parsed (files read, JSON parsed) but not
    /// compiled: that needs the model's vocabulary ([`ConstraintArgs::engine`]).
    pub fn spec(&self) -> Result<Option<ConstraintSpec>> {
        Ok(Some(match (&self.json_schema, &self.grammar, &self.regex) {
            (Some(s), _, _) => ConstraintSpec::json_schema_arg(s)?,
            (_, Some(g), _) => ConstraintSpec::lark_file(g)?,
            (_, _, Some(r)) => ConstraintSpec::Regex(r.clone()),
            _ => return Ok(None),
        }))
    }

    /// The engine over `model`'s vocabulary and the compiled spec, when one is asked for;
    /// `compile` gives a fresh constraint for each reply.
    pub fn engine(spec: Option<ConstraintSpec>, model: &Model) -> Result<Option<(ConstraintEngine, ConstraintSpec)>> {
        let Some(spec) = spec else { return Ok(None) };
        let engine = ConstraintEngine::new(model.tokenizer())?;
        engine.compile(&spec)?; // fail before the first prompt, not after it
        Ok(Some((engine, spec)))
    }
}

impl SamplingArgs {
    pub fn params(&self) -> SamplerParams {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        });
        SamplerParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed,
        }
    }
}

/// Peak and current resident memory of this process, from /proc (Linux), in bytes.
pub fn rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Makes the peak RSS (VmHWM) restart from the current RSS (Linux 4.0+: writing 5 to
/// /proc/self/clear_refs), so that each benchmark reports its own peak. `false` if refused.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

const MIB: f64 = (1u64 << 20) as f64;

/// Resident memory now, by what backs it, in bytes (Linux: /proc/self/smaps).
#[derive(Debug, Clone, Copy, Default)]
pub struct Resident {
    /// Pages of the model file's mapping.
    pub model_file: u64,
    /// Pages of other files: the executable and its libraries.
    pub other_files: u64,
    /// Anonymous memory: heap, ggml buffers, repacked weights, KV cache.
    pub anon: u64,
}

impl Resident {
    pub fn now(model_path: &Path) -> Option<Resident> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let model_path = model_path.canonicalize().ok()?;
        let (mut r, mut in_model) = (Resident::default(), false);
        for line in smaps.lines() {
            let mut f = line.split_whitespace();
            let first = f.next().unwrap_or("");
            if first.contains('-') && !first.ends_with(':') {
                // a mapping's header: range perms offset dev inode [path]
                in_model = f.nth(4).is_some_and(|p| Path::new(p) == model_path);
                continue;
            }
            let kb = || f.clone().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024;
            match first {
                "Rss:" if in_model => r.model_file += kb(),
                "Rss:" => r.other_files += kb(),
                "Anonymous:" => {
                    r.anon += kb();
                    r.other_files = r.other_files.saturating_sub(kb());
                }
                _ => {}
            }
        }
        Some(r)
    }
}

/// What a model and a session hold, by part, in bytes: the figures a run's peak RSS is made of.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct MemoryBreakdown {
    /// The whole model file, mapped: every page is read by the first forward pass (tensor data,
    /// and the header with the vocabulary), including those of repacked weights.
    pub weights_mapped: u64,
    /// Anonymous copies of the weights repacked for the CPU's interleaved kernels.
    pub weights_repacked: u64,
    /// Anonymous copies, on 2 MiB pages, of the other weights that are not only gathered by
    /// row (`--mmap` keeps them mapped instead).
    pub weights_copied: u64,
    pub kv_cache: u64,
    /// The largest graph's intermediate tensors (one graph's buffer is held at a time).
    pub compute: u64,
    /// Code, metadata, tokenizer and heap: measured once, right after loading (the resident
    /// memory then, less the model file's pages, the repacked copies and the KV cache).
    pub runtime: u64,
}

impl MemoryBreakdown {
    pub fn total(&self) -> u64 {
        self.weights_mapped + self.weights_repacked + self.weights_copied + self.kv_cache + self.compute + self.runtime
    }

    /// One line: the parts, their sum, and how far the measured peak RSS is from it.
    pub fn line(&self, peak_rss: Option<u64>) -> String {
        let m = |b: u64| b as f64 / MIB;
        let mut s = format!(
            "weights {:.1} MiB mapped + {:.1} MiB repacked + {:.1} MiB copied, KV cache {:.1} MiB, compute \
             {:.1} MiB, runtime {:.1} MiB = {:.1} MiB",
            m(self.weights_mapped),
            m(self.weights_repacked),
            m(self.weights_copied),
            m(self.kv_cache),
            m(self.compute),
            m(self.runtime),
            m(self.total())
        );
        if let Some(peak) = peak_rss {
            let off = 100.0 * (peak as f64 - self.total() as f64) / self.total().max(1) as f64;
            s.push_str(&format!("; peak RSS {:.1} MiB ({off:+.1}%)", m(peak)));
        }
        s
    }
}

/// Measured right after a model and its session were made: what the breakdown cannot
/// predict (code, metadata, tokenizer). `None` where /proc is not there.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBaseline {
    runtime: Option<u64>,
}

impl MemoryBaseline {
    /// Call after loading `model` and creating `session` (whose KV cache is zeroed, so resident),
    /// before any forward pass.
    pub fn measure(model: &Model, session: &Session<'_>, model_path: &Path) -> MemoryBaseline {
        let runtime = Resident::now(model_path).map(|r| {
            let held = (model.repacked_bytes() + model.copied_bytes() + session.kv_cache().bytes()) as u64;
            r.anon.saturating_sub(held) + r.other_files
        });
        MemoryBaseline { runtime }
    }

    /// The breakdown for `session` as it is now.
    pub fn breakdown(&self, model: &Model, session: &Session<'_>) -> MemoryBreakdown {
        MemoryBreakdown {
            // The file's pages of repacked and copied tensors are given back at load
            // (model.rs), so the mapping keeps the file less those bytes resident.
            weights_mapped: if model.weights_mapped() {
                model.gguf().file_len().saturating_sub((model.repacked_bytes() + model.copied_file_bytes()) as u64)
            } else {
                0
            },
            weights_repacked: model.repacked_bytes() as u64,
            weights_copied: model.copied_bytes() as u64,
            kv_cache: session.kv_cache().bytes() as u64,
            compute: session.compute_bytes() as u64,
            runtime: self.runtime.unwrap_or(0),
        }
    }
}

/// Where the weights are: the mapped file, the device, or split between them
/// (`--gpu-layers`: the CPU layers stay mapped, the offloaded ones are copied).
fn placement(model: &Model) -> String {
    let n_layer = model.dims().n_layer as usize;
    match model.offload() {
        None if model.widened_weights() > 0 => format!(
            "{} tensors copied onto 2 MiB pages ({} of them q5_0 held as q8_0), the rest mapped from the file",
            model.copied_weights(),
            model.widened_weights()
        ),
        None if model.copied_weights() > 0 => {
            format!("{} tensors copied onto 2 MiB pages, the rest mapped from the file", model.copied_weights())
        }
        None => "mapped from the file".into(),
        Some(o) if o.n_layers() > n_layer => format!("copied to {}", o.backend().name()),
        Some(o) => format!(
            "the last {} of {n_layer} layers and the output copied to {}, the rest mapped from the file",
            o.n_layers().saturating_sub(1),
            o.backend().name()
        ),
    }
}

/// Load time, weights and KV cache, to stderr. Returns the memory baseline for
/// [`report_memory`].
pub fn report_model(args: &ModelArgs, model: &Model, session: &Session<'_>) -> MemoryBaseline {
    eprintln!(
        "load: {:.2} s; weights {:.1} MiB ({}, {} tensors repacked), KV cache {:.1} MiB (n_ctx {})",
        model.load_time().as_secs_f64(),
        model.weight_bytes() as f64 / MIB,
        placement(model),
        model.repacked_weights(),
        session.kv_cache().bytes() as f64 / MIB,
        session.n_ctx()
    );
    MemoryBaseline::measure(model, session, &args.model)
}

/// The memory breakdown against the measured peak and current RSS, to stderr.
pub fn report_memory(baseline: &MemoryBaseline, model: &Model, session: &Session<'_>) {
    let rss = rss();
    eprintln!("memory: {}", baseline.breakdown(model, session).line(rss.map(|r| r.0)));
    if let Some((peak, now)) = rss {
        eprintln!("memory: peak RSS {:.1} MiB, now {:.1} MiB", peak as f64 / MIB, now as f64 / MIB);
    }
}

/// A switch given as `on` or `off` (llama.cpp's spelling for its `-fa`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    pub fn is_on(self) -> bool {
        self == OnOff::On
    }
}
