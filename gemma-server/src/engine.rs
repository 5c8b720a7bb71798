//! The inference thread: it owns the model and `--parallel` sequences, takes jobs from the
//! handlers over a channel and sends each job's text back over the job's own channel.
//!
//! A ggml [`Session`] is neither async nor `Send`, so the model is loaded on this thread and
//! never leaves it. Each step serves every busy sequence (a prompt micro-batch, or one
//! generated token: `step.rs`), so requests join and leave between steps and none
//! waits for another to finish.
//! A request whose prompt starts with what a free sequence's cache holds (a chat's next turn,
//! a shared system prompt) goes to that sequence and feeds only the rest.
#![forbid(unsafe_code)]

use crate::api::{GenParams, ImageInput, Input};
use crate::error::{ApiError, ServerError};
use crate::metrics::Metrics;
use crate::step::{finish_run, pick_slot, Sessions};
use crate::stop::StopFilter;
use gemma_gguf::chat::{encode_pieces, ChatFormat, SpecialTokens};
use gemma_gguf::constrain::{Constraint, ConstraintEngine};
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::sampler::Sampler;
use gemma_gguf::session::{Session, SessionOptions};
use gemma_gguf::tokenizer::Decoder;
use gemma_gguf::vision::preprocess::MAX_IMAGE_PIXELS;
use gemma_gguf::vision::prompt;
use gemma_gguf::vision::Projector;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Why a request stopped, as OpenAI's `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Of the prompt tokens, those reused from the sequence's cache.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

/// What the engine tells a handler, in this order: `Accepted` or `Failed`; then `Text`s and
/// `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    Accepted { prompt_tokens: usize },
    Text(String),
    Done { finish: Finish, usage: Usage },
    Failed(ApiError),
}

/// One request for the engine.
pub struct Job {
    pub input: Input,
    /// The images the input's `<__media__>` markers stand for, in order.
    pub images: Vec<ImageInput>,
    pub params: GenParams,
    pub events: UnboundedSender<Event>,
    pub deadline: Instant,
    pub timeout: Duration,
    /// The compiled `response_format` or tool-call constraint of the reply.
    pub constraint: Option<Constraint>,
}

/// What the handlers need to know about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub n_ctx: u32,
    pub n_vocab: u32,
    pub arch: &'static str,
    /// Compiles constraints over the model's vocabulary (built once at start, about 1 s for
    /// Gemma 3's 262 144 tokens); handlers compile each request's own off this thread.
    pub constraints: Arc<ConstraintEngine>,
}

/// Where and how to load the model.
pub struct EngineConfig {
    pub model_path: PathBuf,
    pub load: LoadOptions,
    pub session: SessionOptions,
    pub parallel: usize,
    /// One shared session, all sequences in one graph per step (see `step.rs`).
    pub batching: bool,
    /// The projector for images (Gemma 3 or Gemma 4 vision), checked against the model at start.
    pub mmproj: Option<PathBuf>,
    /// The projector's attention through ggml's fused kernel.
    pub mmproj_flash_attn: bool,
}

/// Starts the inference thread and waits until the model is loaded.
pub fn start(
    cfg: EngineConfig,
    jobs: Receiver<Job>,
    metrics: Arc<Metrics>,
) -> Result<(ModelInfo, std::thread::JoinHandle<()>), ServerError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("gemma-inference".into())
        .spawn(move || {
            let model = match Model::load(&cfg.model_path, &cfg.load) {
                Ok(m) => m,
                Err(e) => {
                    let _ = ready_tx.send(Err(ServerError::Model(e)));
                    return;
                }
            };
            let vision = match &cfg.mmproj {
                None => None,
                Some(p) => match Projector::load(p, cfg.load.threads).and_then(|v| v.check_model(&model).map(|_| v)) {
                    Ok(mut v) => {
                        v.set_flash_attn(cfg.mmproj_flash_attn);
                        Some(v)
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(ServerError::Model(e)));
                        return;
                    }
                },
            };
            match Engine::new(&model, &cfg, metrics, vision) {
                Ok(engine) => {
                    let constraints = match ConstraintEngine::new(model.tokenizer()) {
                        Ok(c) => Arc::new(c),
                        Err(e) => {
                            let _ = ready_tx.send(Err(ServerError::Model(e)));
                            return;
                        }
                    };
                    let info = ModelInfo {
                        n_ctx: cfg.session.n_ctx,
                        n_vocab: model.n_vocab(),
                        arch: model.arch().name(),
                        constraints,
                    };
                    let _ = ready_tx.send(Ok(info));
                    engine.run(jobs);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .map_err(|e| ServerError::Io { what: "starting the inference thread", addr: String::new(), source: e })?;
    let info = ready_rx.recv().map_err(|_| ServerError::EngineGone)??;
    Ok((info, thread))
}

/// A prompt ready to run.
struct Admitted {
    job: Job,
    /// Tokens, each image as its run of flat ids (`vision::prompt::flatten`).
    prompt: Vec<u32>,
    /// The images' embeddings.
    images: Vec<Vec<f32>>,
    sampler: Sampler,
}

/// A request being generated.
pub(crate) struct Running<'m> {
    pub job: Job,
    pub sampler: Sampler,
    pub decoder: Decoder<'m>,
    /// The prompt tokens after those reused from the cache; `fed` of them are in it.
    pub feed: Vec<u32>,
    pub fed: usize,
    /// The token sampled last, to feed at the next step.
    pub pending: Option<u32>,
    pub max_tokens: usize,
    pub generated: usize,
    pub stop: StopFilter,
    pub usage: Usage,
    pub constraint: Option<Constraint>,
    /// The prompt's images (embeddings), fed where `feed` holds their flat ids, attending to
    /// each other both ways unless `causal`.
    pub images: Vec<Vec<f32>>,
    pub causal: bool,
}

/// One sequence.
pub(crate) struct Slot<'m> {
    /// The tokens the sequence's cache holds, in order.
    pub cached: Vec<u32>,
    pub run: Option<Running<'m>>,
    /// When the slot last took a job (least recently used goes first).
    pub last_used: u64,
}

struct Engine<'m> {
    model: &'m Model,
    format: ChatFormat,
    specials: SpecialTokens,
    slots: Vec<Slot<'m>>,
    sessions: Sessions<'m>,
    logits: Vec<f32>,
    pending: VecDeque<Admitted>,
    metrics: Arc<Metrics>,
    n_ubatch: usize,
    clock: u64,
    vision: Option<Projector>,
}

impl<'m> Engine<'m> {
    fn new(
        model: &'m Model,
        cfg: &EngineConfig,
        metrics: Arc<Metrics>,
        vision: Option<Projector>,
    ) -> Result<Engine<'m>, ServerError> {
        if cfg.parallel == 0 || cfg.parallel > 256 {
            return Err(ServerError::Config {
                what: "--parallel",
                value: cfg.parallel.to_string(),
                why: "must be 1 to 256",
            });
        }
        let slots = (0..cfg.parallel).map(|_| Slot { cached: Vec::new(), run: None, last_used: 0 }).collect();
        let sessions = if cfg.batching {
            let n_ctx = cfg.session.n_ctx.checked_mul(cfg.parallel as u32).ok_or(ServerError::Config {
                what: "-c × --parallel",
                value: format!("{} × {}", cfg.session.n_ctx, cfg.parallel),
                why: "too many cells",
            })?;
            let opts = SessionOptions { n_ctx, ..cfg.session };
            Sessions::Shared(Box::new(Session::with_sequences(model, opts, cfg.parallel as u32)?))
        } else {
            Sessions::Own((0..cfg.parallel).map(|_| Session::new(model, cfg.session)).collect::<Result<_, _>>()?)
        };
        metrics.kv_cells_total.store(cfg.parallel * cfg.session.n_ctx as usize, Relaxed);
        Ok(Engine {
            model,
            format: ChatFormat::from_gguf(model.gguf())?,
            specials: SpecialTokens::from_tokenizer(model.tokenizer()),
            slots,
            sessions,
            logits: Vec::with_capacity(model.n_vocab() as usize * cfg.parallel),
            pending: VecDeque::new(),
            metrics,
            // At most what a session takes in one graph (it clamps n_ubatch to its context).
            n_ubatch: cfg.session.n_ubatch.clamp(1, cfg.session.n_ctx.max(1)) as usize,
            clock: 0,
            vision,
        })
    }

    /// Serves jobs until every sender is gone and the last job has finished.
    fn run(mut self, jobs: Receiver<Job>) {
        let mut open = true;
        loop {
            let idle = self.pending.is_empty() && self.slots.iter().all(|s| s.run.is_none());
            if idle {
                if !open {
                    break;
                }
                match jobs.recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => break,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.assign();
            let start = Instant::now();
            self.round();
            self.metrics.busy_ns.fetch_add(start.elapsed().as_nanos() as u64, Relaxed);
            self.metrics.kv_cells_used.store(self.sessions.cells_used(), Relaxed);
        }
    }

    /// Tokenizes a job's input and checks it fits; answers `Accepted` or `Failed` at once.
    fn admit(&mut self, job: Job) {
        let ready = self.tokenize(&job.input, &job.images).and_then(|p| Ok((p, Sampler::new(job.params.sampler)?)));
        match ready {
            Ok(((prompt, images), sampler)) => {
                let _ = job.events.send(Event::Accepted { prompt_tokens: prompt.len() });
                self.pending.push_back(Admitted { job, prompt, images, sampler });
            }
            Err(e) => {
                self.metrics.queued.fetch_sub(1, Relaxed);
                let _ = job.events.send(Event::Failed(e));
            }
        }
    }

    /// The prompt as flat ids (images as runs of their ids) and the images' embeddings.
    fn tokenize(&self, input: &Input, images: &[ImageInput]) -> Result<(Vec<u32>, Vec<Vec<f32>>), ApiError> {
        let tok = self.model.tokenizer();
        let (prompt, embd) = match (input, images.first()) {
            (Input::Chat(messages), None) => {
                (encode_pieces(&self.format.format(messages, true, &self.specials)?, tok)?, Vec::new())
            }
            (Input::Text(text), _) => (tok.encode(text, tok.adds_bos()), Vec::new()),
            (Input::Pieces(pieces), None) => (encode_pieces(pieces, tok)?, Vec::new()),
            (Input::Chat(_) | Input::Pieces(_), Some(first)) => self.with_images(input, images, first)?,
        };
        let n_ctx = self.sessions.n_ctx();
        if prompt.is_empty() {
            return Err(ApiError::bad("prompt", "prompt: the prompt is empty"));
        }
        if prompt.len() >= n_ctx as usize {
            let param = if matches!(input, Input::Text(_)) { "prompt" } else { "messages" };
            return Err(ApiError::PromptTooLong { prompt_tokens: prompt.len(), n_ctx, param });
        }
        Ok((prompt, embd))
    }

    /// [`tokenize`](Self::tokenize) for a chat whose messages hold images.
    fn with_images(
        &self,
        input: &Input,
        images: &[ImageInput],
        first: &ImageInput,
    ) -> Result<(Vec<u32>, Vec<Vec<f32>>), ApiError> {
        let p = &first.param;
        let v = self
            .vision
            .as_ref()
            .ok_or_else(|| ApiError::bad(p, format!("{p}: this server takes no images (started without --mmproj)")))?;
        let pieces = match input {
            Input::Chat(messages) => self.format.format(messages, true, &self.specials)?,
            Input::Pieces(pieces) => pieces.clone(),
            Input::Text(_) => Vec::new(),
        };
        let chunks = prompt::chunks(&pieces, v.layout(), images.len(), self.model.tokenizer())
            .map_err(|e| ApiError::bad("messages", format!("messages: {e}")))?;
        let embd = images
            .iter()
            .map(|im| {
                let p = &im.param;
                v.embed_image(&im.bytes, MAX_IMAGE_PIXELS)
                    .map(|(_, rows)| rows)
                    .map_err(|e| ApiError::bad(p, format!("{p}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Each image's tokens: its rows (Gemma 4's depend on the image's size).
        let n_embd = self.model.dims().n_embd as usize;
        let n_tokens = |i: usize| embd.get(i).map_or(0, |e| e.len() / n_embd.max(1));
        Ok((prompt::flatten(&chunks, 0, n_tokens), embd))
    }

    /// Gives waiting jobs to free sequences, first come first served; drops those whose
    /// client left or whose time ran out while waiting.
    fn assign(&mut self) {
        let now = Instant::now();
        let before = self.pending.len();
        self.pending.retain(|a| {
            if a.job.events.is_closed() {
                return false;
            }
            if now >= a.job.deadline {
                let _ = a.job.events.send(Event::Failed(ApiError::Timeout { limit: a.job.timeout }));
                return false;
            }
            true
        });
        self.metrics.queued.fetch_sub(before - self.pending.len(), Relaxed);
        while self.slots.iter().any(|s| s.run.is_none()) {
            let Some(a) = self.pending.pop_front() else { break };
            self.metrics.queued.fetch_sub(1, Relaxed);
            let (i, mut reuse) = pick_slot(&self.slots, &a.prompt);
            self.clock += 1;
            let slot = &mut self.slots[i];
            slot.last_used = self.clock;
            if reuse < slot.cached.len() {
                if reuse > 0 && self.sessions.truncate(i, reuse) {
                    slot.cached.truncate(reuse);
                } else {
                    self.sessions.clear(i);
                    slot.cached.clear();
                    reuse = 0;
                }
            }
            // How images attend is the language model's (Arch::image_attention).
            let causal = self.model.arch().image_attention().is_none();
            let run = start_run(self.model, a, reuse, self.sessions.n_ctx(), causal);
            self.metrics.prompt_tokens.fetch_add(run.usage.prompt_tokens as u64, Relaxed);
            self.metrics.cached_tokens.fetch_add(reuse as u64, Relaxed);
            self.metrics.active.fetch_add(1, Relaxed);
            slot.run = Some(run);
        }
    }

    /// One step of every busy sequence; first frees those whose client left or whose time
    /// ran out.
    fn round(&mut self) {
        let now = Instant::now();
        for slot in &mut self.slots {
            let Some(run) = slot.run.as_ref() else { continue };
            if run.job.events.is_closed() {
                // The client went away: free the sequence now (its cache stays reusable).
                self.metrics.cancelled.fetch_add(1, Relaxed);
            } else if now >= run.job.deadline {
                let _ = run.job.events.send(Event::Failed(ApiError::Timeout { limit: run.job.timeout }));
            } else {
                continue;
            }
            self.metrics.active.fetch_sub(1, Relaxed);
            slot.run = None;
        }
        let tok = self.model.tokenizer();
        let n_vocab = self.model.n_vocab() as usize;
        let ended = crate::step::round(
            &mut self.sessions,
            &mut self.slots,
            self.n_ubatch,
            n_vocab,
            &mut self.logits,
            tok,
            &self.metrics,
        );
        for (i, result) in ended {
            let Some(run) = self.slots[i].run.take() else { continue };
            self.metrics.active.fetch_sub(1, Relaxed);
            match result {
                Ok(finish) => finish_run(run, finish),
                Err(message) => {
                    let _ = run.job.events.send(Event::Failed(ApiError::Internal { message }));
                }
            }
        }
    }
}

fn start_run<'m>(model: &'m Model, mut a: Admitted, reuse: usize, n_ctx: u32, causal: bool) -> Running<'m> {
    let mut sampler = a.sampler;
    let constraint = a.job.constraint.take();
    for &t in a.prompt.iter().filter(|&&t| prompt::image_of(t).is_none()) {
        sampler.accept(t);
    }
    let room = n_ctx as usize - a.prompt.len();
    let max_tokens = a.job.params.max_tokens.map_or(room, |m| (m as usize).min(room));
    let stop = StopFilter::new(a.job.params.stops.clone());
    let usage = Usage { prompt_tokens: a.prompt.len(), cached_tokens: reuse, completion_tokens: 0 };
    Running {
        sampler,
        decoder: model.tokenizer().decoder(),
        feed: a.prompt[reuse..].to_vec(),
        fed: 0,
        pending: None,
        max_tokens,
        generated: 0,
        stop,
        usage,
        constraint,
        images: a.images,
        causal,
        job: a.job,
    }
}
