//! The HTTP side: routes, the API key check, and the answers (whole JSON or server-sent
//! events in OpenAI's chunk shapes).
#![forbid(unsafe_code)]

use crate::api::{parse_chat_with, parse_completion, GenParams, Input, Request};
use crate::engine::{Event, Job, ModelInfo, Usage};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::tools::{format_for, Delta, ToolCallParser};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use gemma_gguf::constrain::{Constraint, ConstraintSpec};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// What every handler shares.
pub struct App {
    /// `None` once shutdown began.
    pub jobs: Mutex<Option<mpsc::Sender<Job>>>,
    pub metrics: Arc<Metrics>,
    pub model_id: String,
    pub info: ModelInfo,
    pub api_key: Option<String>,
    pub queue: usize,
    pub timeout: Duration,
    pub max_body: usize,
    pub created: u64,
}

/// The router: `/v1/*` and `/metrics` behind the API key when one is set; `/health` open.
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.max_body;
    let protected = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}

async fn auth(State(app): State<Arc<App>>, req: axum::extract::Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = given.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        // Constant time over the bytes (a length difference is still visible, as it must be).
        if !bool::from(token.as_bytes().ct_eq(key.as_bytes())) {
            return fail(&app, ApiError::Unauthorized);
        }
    }
    next.run(req).await
}

fn fail(app: &App, e: ApiError) -> Response {
    app.metrics.error(e.kind());
    e.into_response()
}

async fn not_found(State(app): State<Arc<App>>, uri: Uri) -> Response {
    fail(&app, ApiError::NotFound { path: uri.path().to_string() })
}

async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    app.metrics.request("health");
    Json(json!({ "status": "ok" }))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    app.metrics.request("metrics");
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    app.metrics.request("models");
    Json(json!({
        "object": "list",
        "data": [{
            "id": app.model_id, "object": "model", "created": app.created, "owned_by": "gemma-gguf",
            "meta": { "n_ctx": app.info.n_ctx, "n_vocab": app.info.n_vocab, "arch": app.info.arch },
        }],
    }))
}

/// Which endpoint, for the response shapes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

async fn chat(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    app.metrics.request("chat_completions");
    handle(app, Kind::Chat, body).await
}

async fn completions(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    app.metrics.request("completions");
    handle(app, Kind::Completion, body).await
}

async fn handle(app: Arc<App>, kind: Kind, body: Result<Bytes, BytesRejection>) -> Response {
    match answer(&app, kind, body).await {
        Ok(r) => r,
        Err(e) => fail(&app, e),
    }
}

async fn answer(app: &Arc<App>, kind: Kind, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(|r| match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit: app.max_body },
        _ => ApiError::BadRequest { message: format!("could not read the body: {r}"), param: None },
    })?;
    let format = format_for(app.info.arch);
    let req = match kind {
        Kind::Chat => parse_chat_with(&body, format)?,
        Kind::Completion => parse_completion(&body)?,
    };
    if let Some(model) = req.model.as_deref().filter(|m| *m != app.model_id) {
        return Err(ApiError::ModelNotFound { model: model.to_string() });
    }
    let Request { mut input, params, images, .. } = req;
    // Tools in the prompt and a call grammar, or the response format's schema.
    let tools = params.tools.as_ref().filter(|t| t.active());
    let (spec, param) = match tools {
        Some(t) => {
            if let Input::Chat(messages) = &mut input {
                format.declare(t, messages);
            }
            (format.constraint(t)?, "tools")
        }
        None => (params.constraint.clone(), "response_format"),
    };
    let constraint = match spec {
        Some(spec) => Some(compile(app, spec, param).await?),
        None => None,
    };
    let parser = tools.map(|t| format.parser(t));
    let (tx, mut rx) = unbounded_channel();
    if app.metrics.queued.fetch_add(1, Relaxed) >= app.queue {
        app.metrics.queued.fetch_sub(1, Relaxed);
        return Err(ApiError::QueueFull { retry_after: Duration::from_secs(1) });
    }
    let job = Job {
        input,
        images,
        params: params.clone(),
        events: tx,
        deadline: Instant::now() + app.timeout,
        timeout: app.timeout,
        constraint,
    };
    let sent = app.jobs.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|j| j.send(job).is_ok());
    if sent != Some(true) {
        app.metrics.queued.fetch_sub(1, Relaxed);
        return Err(ApiError::ShuttingDown);
    }
    match rx.recv().await {
        Some(Event::Accepted { .. }) => {}
        Some(Event::Failed(e)) => return Err(e),
        _ => return Err(ApiError::Internal { message: "the inference thread dropped the request".into() }),
    }
    let meta = Meta { kind, id: new_id(kind), created: now(), model: app.model_id.clone() };
    if params.stream {
        return Ok(Sse::new(stream(app.clone(), meta, params, rx, parser)).into_response());
    }
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done { finish, usage }) => {
                let Some(mut parser) = parser else {
                    return Ok(Json(meta.whole(&text, &[], finish.as_str(), usage)).into_response());
                };
                let mut deltas = parser.push(&text);
                deltas.extend(parser.finish(finish)?);
                let finish = if parser.called() { "tool_calls" } else { finish.as_str() };
                let reply = Reply::from_deltas(&deltas);
                return Ok(Json(meta.whole(&reply.content, &reply.calls, finish, usage)).into_response());
            }
            Some(Event::Failed(e)) => return Err(e),
            Some(Event::Accepted { .. }) | None => {
                return Err(ApiError::Internal { message: "the inference thread dropped the request".into() })
            }
        }
    }
}

/// The fields every object of one answer shares.
struct Meta {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    fn usage(u: Usage) -> Value {
        json!({
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "prompt_tokens_details": { "cached_tokens": u.cached_tokens },
        })
    }

    /// A whole answer; with `calls`, `content` is the text besides them (null when none).
    fn whole(&self, text: &str, calls: &[(String, String, String)], finish: &str, usage: Usage) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut message = json!({ "role": "assistant", "content": text });
                if !calls.is_empty() {
                    if text.is_empty() {
                        message["content"] = Value::Null;
                    }
                    let calls: Vec<Value> = calls
                        .iter()
                        .map(|(id, name, arguments)| {
                            json!({ "id": id, "type": "function", "function": { "name": name, "arguments": arguments } })
                        })
                        .collect();
                    message["tool_calls"] = Value::Array(calls);
                }
                json!({ "index": 0, "message": message, "logprobs": null, "finish_reason": finish })
            }
            Kind::Completion => json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": finish }),
        };
        let object = if self.kind == Kind::Chat { "chat.completion" } else { "text_completion" };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [choice], "usage": Meta::usage(usage),
        })
    }

    /// One streamed chunk: `text` (with the role on the first chat chunk), or the finish.
    /// A chat chunk carrying one tool-call delta (OpenAI's `delta.tool_calls[i]`).
    fn tool_chunk(&self, d: &Delta) -> Value {
        let call = match d {
            Delta::Content(t) => return self.chunk(Some(t), false, None),
            Delta::CallStart { index, id, name } => json!({
                "index": index, "id": id, "type": "function", "function": { "name": name, "arguments": "" },
            }),
            Delta::Arguments { index, text } => json!({ "index": index, "function": { "arguments": text } }),
        };
        let choice = json!({ "index": 0, "delta": { "tool_calls": [call] }, "logprobs": null, "finish_reason": null });
        self.object(vec![choice], None)
    }

    fn chunk(&self, text: Option<&str>, first: bool, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), "assistant".into());
                }
                if let Some(t) = text {
                    delta.insert("content".into(), t.into());
                }
                json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
            }
            Kind::Completion => {
                json!({ "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish })
            }
        };
        self.object(vec![choice], None)
    }

    fn object(&self, choices: Vec<Value>, usage: Option<Usage>) -> Value {
        let object = if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
        let mut v = json!({ "id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices });
        if let Some(u) = usage {
            v["usage"] = Meta::usage(u);
        }
        v
    }
}

/// The events of a streamed answer, ending `data: [DONE]`. Dropped when the client goes
/// away, which closes the job's channel: the engine then frees the sequence at its next step.
fn stream(
    app: Arc<App>,
    meta: Meta,
    params: GenParams,
    rx: UnboundedReceiver<Event>,
    parser: Option<Box<dyn ToolCallParser>>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let data = |v: Value| SseEvent::default().data(v.to_string());
    let mut out = VecDeque::new();
    if meta.kind == Kind::Chat {
        out.push_back(data(meta.chunk(Some(""), true, None)));
    }
    let state = (rx, out, false, app, meta, params.include_usage, parser);
    futures_util::stream::unfold(
        state,
        move |(mut rx, mut out, mut done, app, meta, include_usage, mut parser)| async move {
            loop {
                if let Some(e) = out.pop_front() {
                    return Some((Ok(e), (rx, out, done, app, meta, include_usage, parser)));
                }
                if done {
                    return None;
                }
                match rx.recv().await {
                    Some(Event::Text(t)) => match parser.as_mut() {
                        Some(p) => out.extend(p.push(&t).iter().map(|d| data(meta.tool_chunk(d)))),
                        None => out.push_back(data(meta.chunk(Some(&t), false, None))),
                    },
                    Some(Event::Done { finish, usage }) => {
                        let (reason, mut finish) = (finish, finish.as_str());
                        if let Some(p) = parser.as_mut() {
                            match p.finish(reason) {
                                Ok(deltas) => out.extend(deltas.iter().map(|d| data(meta.tool_chunk(d)))),
                                Err(e) => {
                                    // The call is incomplete: say so, and no [DONE].
                                    app.metrics.error(e.kind());
                                    out.push_back(data(meta.chunk(None, false, Some(finish))));
                                    out.push_back(data(e.body()));
                                    done = true;
                                    continue;
                                }
                            }
                            if p.called() {
                                finish = "tool_calls";
                            }
                        }
                        out.push_back(data(meta.chunk(None, false, Some(finish))));
                        if include_usage {
                            out.push_back(data(meta.object(Vec::new(), Some(usage))));
                        }
                        out.push_back(SseEvent::default().data("[DONE]"));
                        done = true;
                    }
                    Some(Event::Failed(e)) => {
                        app.metrics.error(e.kind());
                        out.push_back(data(e.body()));
                        done = true;
                    }
                    Some(Event::Accepted { .. }) | None => {
                        let e = ApiError::Internal { message: "the inference thread dropped the request".into() };
                        app.metrics.error(e.kind());
                        out.push_back(data(e.body()));
                        done = true;
                    }
                }
            }
        },
    )
}

/// A whole reply from its deltas: the text, and the calls (id, name, arguments) in order.
struct Reply {
    content: String,
    calls: Vec<(String, String, String)>,
}

impl Reply {
    fn from_deltas(deltas: &[Delta]) -> Reply {
        let mut r = Reply { content: String::new(), calls: Vec::new() };
        for d in deltas {
            match d {
                Delta::Content(t) => r.content.push_str(t),
                Delta::CallStart { id, name, .. } => r.calls.push((id.clone(), name.clone(), String::new())),
                Delta::Arguments { index, text } => {
                    if let Some(c) = r.calls.get_mut(*index) {
                        c.2.push_str(text);
                    }
                }
            }
        }
        r
    }
}

/// Compiles a request's constraint off the async threads; an invalid or over-limit one is a
/// 400 naming `param`.
async fn compile(app: &Arc<App>, spec: ConstraintSpec, param: &'static str) -> Result<Constraint, ApiError> {
    let engine = app.info.constraints.clone();
    let compiled = tokio::task::spawn_blocking(move || engine.compile(&spec))
        .await
        .map_err(|e| ApiError::Internal { message: format!("compiling the constraint: {e}") })?;
    compiled.map_err(|e| ApiError::bad(param, format!("{param}: {e}")))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `chatcmpl-…` / `cmpl-…`, unique within a run (a counter and the start time).
fn new_id(kind: Kind) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Relaxed);
    let prefix = if kind == Kind::Chat { "chatcmpl" } else { "cmpl" };
    format!("{prefix}-{:x}{n:06x}", now())
}
