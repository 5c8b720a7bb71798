//! gemma-server: an OpenAI-compatible HTTP server over gemma-gguf.
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/completions` (whole answers, or
//! server-sent events ending `data: [DONE]`), `GET /v1/models`, `GET /health`, `GET /metrics`
//! (Prometheus). axum serves HTTP on tokio; inference runs on one OS thread of its own
//! ([`engine`]) that owns the model and `parallel` sequences, fed over a channel.
//!
//! ```no_run
//! # async fn demo() -> Result<(), gemma_server::ServerError> {
//! let config = gemma_server::ServerConfig::new("models/gemma-3-270m-q4_k_m.gguf");
//! let server = gemma_server::Server::start(config).await?;
//! println!("listening on http://{}", server.local_addr());
//! server.run(gemma_server::shutdown_signal()).await
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod routes;
pub(crate) mod step;
pub mod stop;
pub mod tools;
pub mod tools_gemma4;

pub use error::{ApiError, ServerError};

use gemma_gguf::model::LoadOptions;
use gemma_gguf::session::SessionOptions;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub model_path: PathBuf,
    /// The name clients give as `model`; the file name without `.gguf` by default.
    pub model_id: String,
    pub load: LoadOptions,
    /// Each sequence's session (its `n_ctx` is the context of one request).
    pub session: SessionOptions,
    pub host: String,
    /// 0: any free port (see [`Server::local_addr`]).
    pub port: u16,
    /// Sequences generating at once.
    pub parallel: usize,
    /// All sequences in one shared cache and one graph per step (continuous batching),
    /// instead of a session each decoded in turn (`step.rs` says what each gives).
    pub batching: bool,
    /// Requests that may wait for a free sequence; more are answered 503 with Retry-After.
    pub queue: usize,
    pub api_key: Option<String>,
    /// Largest request body, in bytes (413 above).
    pub max_body: usize,
    /// Longest a request may take, waiting included (504 past it).
    pub timeout: Duration,
    /// The projector file of a Gemma 3 or Gemma 4 vision model: with it, chat messages may hold images
    /// (`image_url` parts with `data:` URLs); without, they are refused.
    pub mmproj: Option<PathBuf>,
    /// The projector's attention through ggml's fused kernel (`Projector::set_flash_attn`).
    pub mmproj_flash_attn: bool,
}

impl ServerConfig {
    /// Defaults: 127.0.0.1:8080, one sequence, 64 waiting, 1 MiB bodies, 10 minutes.
    pub fn new(model_path: impl Into<PathBuf>) -> ServerConfig {
        let model_path = model_path.into();
        let model_id = model_path.file_stem().map_or("model".into(), |s| s.to_string_lossy().into_owned());
        ServerConfig {
            model_path,
            model_id,
            load: LoadOptions::default(),
            session: SessionOptions::default(),
            host: "127.0.0.1".into(),
            port: 8080,
            parallel: 1,
            batching: false,
            queue: 64,
            api_key: None,
            max_body: 1 << 20,
            timeout: Duration::from_secs(600),
            mmproj: None,
            mmproj_flash_attn: true,
        }
    }
}

/// A loaded model behind a bound socket, not yet serving.
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Arc<routes::App>,
    engine: std::thread::JoinHandle<()>,
}

impl Server {
    /// Loads the model (on the inference thread) and binds the socket.
    pub async fn start(cfg: ServerConfig) -> Result<Server, ServerError> {
        if cfg.queue == 0 {
            // Every request waits in the queue, however briefly, before a sequence takes it.
            return Err(ServerError::Config { what: "--queue", value: "0".into(), why: "must be at least 1" });
        }
        if cfg.api_key.as_deref() == Some("") {
            return Err(ServerError::Config { what: "--api-key", value: "\"\"".into(), why: "an empty key" });
        }
        let metrics = Arc::new(metrics::Metrics::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let engine_cfg = engine::EngineConfig {
            model_path: cfg.model_path.clone(),
            load: cfg.load.clone(),
            session: cfg.session,
            parallel: cfg.parallel,
            batching: cfg.batching,
            mmproj: cfg.mmproj.clone(),
            mmproj_flash_attn: cfg.mmproj_flash_attn,
        };
        let m = metrics.clone();
        let (info, engine) = tokio::task::spawn_blocking(move || engine::start(engine_cfg, rx, m))
            .await
            .map_err(|_| ServerError::EngineGone)??;
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|source| ServerError::Io {
            what: "listening on",
            addr: addr.clone(),
            source,
        })?;
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let app = Arc::new(routes::App {
            jobs: Mutex::new(Some(tx)),
            metrics,
            model_id: cfg.model_id,
            info,
            api_key: cfg.api_key,
            queue: cfg.queue,
            timeout: cfg.timeout,
            max_body: cfg.max_body,
            created,
        });
        Ok(Server { listener, app, engine })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound TCP socket has an address")
    }

    /// Serves until `shutdown` completes; then takes no new connections or requests, lets
    /// those in flight finish (each within the request timeout) and stops the inference
    /// thread.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let addr = self.local_addr().to_string();
        let app = self.app.clone();
        let stop = async move {
            shutdown.await;
            // New requests now get 503; the engine ends once the handlers' jobs are done.
            app.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        };
        axum::serve(self.listener, routes::router(self.app))
            .with_graceful_shutdown(stop)
            .await
            .map_err(|source| ServerError::Io { what: "serving on", addr, source })?;
        let engine = self.engine;
        tokio::task::spawn_blocking(move || engine.join())
            .await
            .map_err(|_| ServerError::EngineGone)?
            .map_err(|_| ServerError::EngineGone)
    }
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
