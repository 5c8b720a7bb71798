//! Flags shared by the commands that load a model, and the memory report.
use anyhow::{bail, Context as _, Result};
use gemma_gguf::ggml::Type;
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::sampler::SamplerParams;
use gemma_gguf::session::{Session, SessionOptions, DEFAULT_CTX, DEFAULT_UBATCH};
use std::path::PathBuf;

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
}

impl ModelArgs {
    pub fn load(&self) -> Result<Model> {
        let opts = LoadOptions { device: self.device.clone(), threads: self.threads, no_repack: self.no_repack };
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

const MIB: f64 = (1u64 << 20) as f64;

/// Load time and the memory breakdown, to stderr.
pub fn report_model(model: &Model, session: &Session<'_>) {
    eprintln!(
        "load: {:.2} s; weights {:.1} MiB ({}, {} tensors repacked), KV cache {:.1} MiB (n_ctx {})",
        model.load_time().as_secs_f64(),
        model.weight_bytes() as f64 / MIB,
        if model.weights_mapped() { "mapped from the file" } else { "copied to the device" },
        model.repacked_weights(),
        session.kv_cache().bytes() as f64 / MIB,
        session.n_ctx()
    );
}

pub fn report_memory() {
    if let Some((peak, now)) = rss() {
        eprintln!("memory: peak RSS {:.1} MiB, now {:.1} MiB", peak as f64 / MIB, now as f64 / MIB);
    }
}
