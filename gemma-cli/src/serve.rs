//! `gemma serve`: the OpenAI-compatible HTTP server (the `gemma-server` crate) from flags.
use crate::common::ModelArgs;
use anyhow::{bail, Context as _, Result};
use gemma_server::{shutdown_signal, Server, ServerConfig};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (loopback by default: nothing outside this machine can connect).
    #[arg(long = "host", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (the address is printed).
    #[arg(long = "port", default_value_t = 8080)]
    pub port: u16,
    /// Requests generated at once, each in its own sequence of -c tokens.
    #[arg(long = "parallel", short = 'P', default_value_t = 1)]
    pub parallel: usize,
    /// Continuous batching: the --parallel sequences share one KV cache (-c × --parallel
    /// cells) and every step decodes a token of each in one graph: more tokens per second in
    /// all; a greedy answer may differ from the same request alone where two tokens nearly
    /// tie (ggml rounds a batch of rows differently from one row).
    #[arg(long = "batching")]
    pub batching: bool,
    /// Requests that may wait for a free sequence; more get 503 with Retry-After.
    #[arg(long = "queue", default_value_t = 64)]
    pub queue: usize,
    /// Require `Authorization: Bearer KEY` on /v1/* and /metrics (also from $GEMMA_API_KEY).
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// Largest request body in bytes (413 above).
    #[arg(long = "max-body", default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Longest a request may take in seconds, waiting included (504 past it).
    #[arg(long = "timeout", default_value_t = 600.0)]
    pub timeout: f64,
    /// The model name clients send; the file name without .gguf by default.
    #[arg(long = "alias")]
    pub alias: Option<String>,
    /// The projector of a Gemma 3 or Gemma 4 vision model: chat messages may then hold images
    /// (`image_url` parts with base64 `data:` URLs; raise --max-body for large ones).
    #[arg(long = "mmproj")]
    pub mmproj: Option<std::path::PathBuf>,
    /// The vision encoder's attention: `on`, ggml's fused flash-attention kernel (keys and
    /// values in f16, libmtmd's default on the CPU), or `off`, f32 scores.
    #[arg(long = "mmproj-flash-attn", value_enum, default_value_t = crate::common::OnOff::On)]
    pub mmproj_flash_attn: crate::common::OnOff,
}

pub fn run(args: Args) -> Result<()> {
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 1e7) {
        bail!("--timeout {}: give seconds, more than 0", args.timeout);
    }
    let mut cfg = ServerConfig::new(&args.model.model);
    if let Some(alias) = &args.alias {
        cfg.model_id = alias.clone();
    }
    cfg.load = args.model.load_options();
    cfg.session = args.model.session_options()?;
    cfg.host = args.host.clone();
    cfg.port = args.port;
    cfg.parallel = args.parallel;
    cfg.batching = args.batching;
    cfg.queue = args.queue;
    cfg.api_key = args.api_key.clone().or_else(|| std::env::var("GEMMA_API_KEY").ok().filter(|k| !k.is_empty()));
    cfg.max_body = args.max_body;
    cfg.timeout = Duration::from_secs_f64(args.timeout);
    cfg.mmproj = args.mmproj.clone();
    cfg.mmproj_flash_attn = args.mmproj_flash_attn.is_on();
    let model_id = cfg.model_id.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async move {
        let server = Server::start(cfg).await.with_context(|| format!("loading {}", args.model.model.display()))?;
        // Tests and scripts read this line for the port.
        eprintln!("gemma serve: model {model_id}, {} sequences of {} tokens", args.parallel, args.model.ctx);
        eprintln!("listening on http://{}", server.local_addr());
        server.run(shutdown_signal()).await?;
        eprintln!("gemma serve: stopped");
        Ok(())
    })
}
