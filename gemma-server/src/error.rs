//! Errors: [`ServerError`] for starting and running the server, [`ApiError`] for one request
//! (an HTTP status and OpenAI's error body, `{"error": {"message", "type", "param", "code"}}`).
#![forbid(unsafe_code)]

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Loading the model or making its sessions failed.
    #[error(transparent)]
    Model(#[from] gemma_gguf::Error),
    /// The listening socket could not be opened, or serving failed.
    #[error("{what} {addr}: {source}")]
    Io { what: &'static str, addr: String, source: std::io::Error },
    /// A configuration value out of range.
    #[error("{what} = {value}: {why}")]
    Config { what: &'static str, value: String, why: &'static str },
    /// The inference thread ended before it was ready (it panicked).
    #[error("the inference thread stopped unexpectedly")]
    EngineGone,
}

/// An error answered to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// Invalid JSON, a field of the wrong type or out of range; `param` names the field.
    BadRequest { message: String, param: Option<String> },
    /// The prompt does not fit the context; `param` is `messages` or `prompt`.
    PromptTooLong { prompt_tokens: usize, n_ctx: u32, param: &'static str },
    /// The body is larger than the server accepts.
    PayloadTooLarge { limit: usize },
    /// No API key, or the wrong one, while the server has one.
    Unauthorized,
    /// A model name the server does not serve.
    ModelNotFound { model: String },
    /// No such endpoint.
    NotFound { path: String },
    /// The queue of waiting requests is full.
    QueueFull { retry_after: Duration },
    /// The request ran past the server's per-request time limit.
    Timeout { limit: Duration },
    /// The server is shutting down and takes no new work.
    ShuttingDown,
    /// A failure inside inference (a ggml error); the message says which.
    Internal { message: String },
    /// The reply was to be a tool call but ended before the call was complete (`max_tokens`,
    /// the context): never passed on as text.
    IncompleteToolCall { message: String },
    /// The reply's tool call is complete but unusable: it does not parse, names no callable
    /// function, or its arguments do not fit the function's schema. Never passed on as text.
    InvalidToolCall { message: String },
}

impl ApiError {
    pub fn bad(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest { message: message.into(), param: Some(param.into()) }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::PromptTooLong { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ModelNotFound { .. } | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::QueueFull { .. } | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::IncompleteToolCall { .. } | ApiError::InvalidToolCall { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The label of `gemma_errors_total{kind=…}` and the body's `code`.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "invalid_request",
            ApiError::PromptTooLong { .. } => "context_length_exceeded",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Unauthorized => "invalid_api_key",
            ApiError::ModelNotFound { .. } => "model_not_found",
            ApiError::NotFound { .. } => "not_found",
            ApiError::QueueFull { .. } => "queue_full",
            ApiError::Timeout { .. } => "timeout",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Internal { .. } => "internal",
            ApiError::IncompleteToolCall { .. } => "tool_call_incomplete",
            ApiError::InvalidToolCall { .. } => "tool_call_invalid",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::BadRequest { message, .. }
            | ApiError::Internal { message }
            | ApiError::IncompleteToolCall { message }
            | ApiError::InvalidToolCall { message } => message.clone(),
            ApiError::PromptTooLong { prompt_tokens, n_ctx, .. } => format!(
                "the prompt has {prompt_tokens} tokens but the context holds {n_ctx} (the prompt and at least \
                 one generated token must fit): shorten the prompt or start the server with a larger -c"
            ),
            ApiError::PayloadTooLarge { limit } => format!("the request body is larger than {limit} bytes"),
            ApiError::Unauthorized => "missing or wrong API key: send `Authorization: Bearer KEY`".into(),
            ApiError::ModelNotFound { model } => format!("model {model:?} is not served here: see GET /v1/models"),
            ApiError::NotFound { path } => format!("no endpoint {path}"),
            ApiError::QueueFull { retry_after } => {
                format!("too many requests are waiting: retry in {} s", retry_after.as_secs())
            }
            ApiError::Timeout { limit } => format!("the request took longer than {:.1} s", limit.as_secs_f64()),
            ApiError::ShuttingDown => "the server is shutting down".into(),
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { param, .. } => param.as_deref(),
            ApiError::PromptTooLong { param, .. } => Some(param),
            ApiError::ModelNotFound { .. } => Some("model"),
            _ => None,
        }
    }

    /// OpenAI's error object.
    pub fn body(&self) -> serde_json::Value {
        let ty = match self.status().as_u16() {
            400 | 404 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            _ => "server_error",
        };
        serde_json::json!({
            "error": { "message": self.message(), "type": ty, "param": self.param(), "code": self.kind() }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), axum::Json(self.body())).into_response();
        let headers = resp.headers_mut();
        match &self {
            ApiError::QueueFull { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
            }
            ApiError::ShuttingDown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

impl From<gemma_gguf::Error> for ApiError {
    fn from(e: gemma_gguf::Error) -> ApiError {
        match e {
            gemma_gguf::Error::BadSampling { param, .. } => ApiError::bad(param, e.to_string()),
            gemma_gguf::Error::ChatRole { .. } | gemma_gguf::Error::ChatMessages { .. } => {
                ApiError::bad("messages", e.to_string())
            }
            gemma_gguf::Error::ChatTemplate { .. } | gemma_gguf::Error::ChatSpecialToken { .. } => {
                ApiError::bad("messages", e.to_string())
            }
            other => ApiError::Internal { message: other.to_string() },
        }
    }
}
