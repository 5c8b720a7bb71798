//! Request bodies of `/v1/chat/completions` and `/v1/completions`, as OpenAI's API defines
//! them, parsed and checked into what the engine runs. Unknown fields are ignored (clients
//! send many optional ones); a known field of the wrong type or out of range is a 400 that
//! names it.
#![forbid(unsafe_code)]

use crate::error::ApiError;
use crate::tools::{parse_response_format, parse_tools, Gemma3Json, HistoryCall, HistoryMessage, ToolFormat, Tools};
use gemma_gguf::chat::{Message, Piece, Role};
use gemma_gguf::constrain::ConstraintSpec;
use gemma_gguf::sampler::SamplerParams;
use serde::Deserialize;
use serde_json::Value;

/// Stop strings accepted per request (OpenAI allows 4).
pub const MAX_STOPS: usize = 16;

/// What to generate from.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A conversation, formatted with the model's chat template.
    Chat(Vec<Message>),
    /// A raw text prompt (BOS added as the model's tokenizer says).
    Text(String),
    /// A whole chat prompt written by a tool format with markup of its own
    /// ([`ToolFormat::prompt`]: Gemma 4's tool tokens), `<bos>` first.
    Pieces(Vec<Piece>),
}

/// How to generate: checked parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct GenParams {
    /// At most this many tokens; `None`: until the context is full.
    pub max_tokens: Option<u32>,
    pub sampler: SamplerParams,
    pub stops: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// `response_format`: the reply must match this.
    pub constraint: Option<ConstraintSpec>,
    /// `tools` and `tool_choice` (chat only).
    pub tools: Option<Tools>,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub model: Option<String>,
    pub input: Input,
    pub params: GenParams,
    /// The messages' images, in order; each stands at a `<__media__>` marker of the text.
    pub images: Vec<ImageInput>,
}

/// An image of a request: its bytes (from a `data:` URL) and the field it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInput {
    pub bytes: Vec<u8>,
    /// `messages[i].content[j]`, for errors about the image.
    pub param: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// The fields both endpoints share.
#[derive(Deserialize)]
struct Common {
    model: Option<String>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    min_p: Option<f32>,
    repeat_penalty: Option<f32>,
    stop: Option<OneOrMany>,
    seed: Option<u64>,
    n: Option<u32>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    ty: String,
    text: Option<String>,
    image_url: Option<ImageUrl>,
}

#[derive(Deserialize)]
struct ImageUrl {
    url: String,
}

/// The image types a `data:` URL may carry (what `vision::preprocess` decodes).
const IMAGE_TYPES: [&str; 3] = ["image/png", "image/jpeg", "image/webp"];

/// The bytes of a `data:image/…;base64,…` URL; any other URL is refused (nothing is fetched).
fn data_url(url: &str, param: &str) -> Result<Vec<u8>, ApiError> {
    let bad = |why: String| ApiError::bad(param, format!("{param}: {why}"));
    let Some(rest) = url.strip_prefix("data:") else {
        let scheme = url.split(':').next().unwrap_or_default();
        let shown =
            if scheme.len() < url.len() && scheme.len() <= 16 { format!("{scheme}: URLs") } else { "URLs".into() };
        return Err(bad(format!("{shown} are not fetched: send the image as a data: URL (base64 PNG, JPEG or WebP)")));
    };
    let (meta, data) = rest.split_once(',').ok_or_else(|| bad("a data: URL without a comma".into()))?;
    let (mime, base64) = match meta.strip_suffix(";base64") {
        Some(m) => (m, true),
        None => (meta, false),
    };
    if !base64 {
        return Err(bad("the data: URL must be base64 (data:image/png;base64,…)".into()));
    }
    if !IMAGE_TYPES.contains(&mime.to_ascii_lowercase().as_str()) {
        return Err(bad(format!("image type {mime:?}: only {} are read", IMAGE_TYPES.join(", "))));
    }
    base64::decode(data.trim()).map_err(|e| bad(format!("the base64 data is invalid: {e}")))
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
    /// An assistant's past calls.
    tool_calls: Option<Vec<PastCall>>,
    /// A `tool` message: the function's name, when given.
    name: Option<String>,
    /// A `tool` message: the id of the call it answers.
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
struct PastCall {
    id: Option<String>,
    function: PastFunction,
}

#[derive(Deserialize)]
struct PastFunction {
    name: String,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ChatFields {
    messages: Vec<ChatMessage>,
}

#[derive(Deserialize)]
struct CompletionFields {
    prompt: OneOrMany,
}

/// Deserializes `T` from `v`, naming the field of the first error.
fn typed<'de, T: Deserialize<'de>>(v: &'de Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing field is reported at its parent ("." for the body): name the field.
        let missing = inner.strip_prefix("missing field `").and_then(|r| r.split('`').next());
        let param = match (path.as_str(), missing) {
            (".", Some(field)) => field.to_string(),
            (parent, Some(field)) => format!("{parent}.{field}"),
            _ => path,
        };
        ApiError::bad(param.clone(), format!("{param}: {inner}"))
    })
}

fn object(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest { message: format!("the body is not valid JSON: {e}"), param: None })?;
    if !v.is_object() {
        return Err(ApiError::BadRequest { message: "the body must be a JSON object".into(), param: None });
    }
    Ok(v)
}

/// A `/v1/chat/completions` body, tool messages written as Gemma 3's format writes them.
pub fn parse_chat(body: &[u8]) -> Result<Request, ApiError> {
    parse_chat_with(body, &Gemma3Json)
}

/// A `/v1/chat/completions` body. Past tool calls (an assistant's `tool_calls`) and `tool`
/// messages are written into the conversation as `format` writes them; consecutive messages of
/// one role (a tool result, then the user's next question) become one turn. A format that
/// writes the whole prompt itself ([`ToolFormat::prompt`]) gets the messages as sent and makes
/// the input [`Input::Pieces`].
pub fn parse_chat_with(body: &[u8], format: &dyn ToolFormat) -> Result<Request, ApiError> {
    let v = object(body)?;
    let common: Common = typed(&v)?;
    let fields: ChatFields = typed(&v)?;
    if fields.messages.is_empty() {
        return Err(ApiError::bad("messages", "messages: give at least one message"));
    }
    let mut messages: Vec<Message> = Vec::with_capacity(fields.messages.len());
    let mut history: Vec<HistoryMessage> = Vec::with_capacity(fields.messages.len());
    let mut images = Vec::new();
    for (i, m) in fields.messages.into_iter().enumerate() {
        let is_tool = m.role == "tool";
        let role: Role = if is_tool {
            Role::User
        } else {
            m.role
                .parse()
                .map_err(|e: gemma_gguf::Error| ApiError::bad(format!("messages[{i}].role"), e.to_string()))?
        };
        let sent = match m.content {
            None => None,
            Some(c) => Some(content_text(c, i, &mut images)?),
        };
        let calls: Vec<HistoryCall> = m
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|c| HistoryCall {
                id: c.id,
                name: c.function.name,
                arguments: c.function.arguments.unwrap_or_default(),
            })
            .collect();
        let mut content = sent.clone().unwrap_or_default();
        if is_tool {
            content = format.render_result(m.name.as_deref(), &content);
        }
        for call in &calls {
            let rendered = format.render_call(&call.name, &call.arguments);
            content = if content.is_empty() { rendered } else { format!("{content}\n{rendered}") };
        }
        history.push(HistoryMessage {
            role,
            tool: is_tool,
            content: sent,
            calls,
            name: m.name,
            tool_call_id: m.tool_call_id,
        });
        match messages.last_mut() {
            Some(last) if last.role == role && role != Role::System => {
                last.content = format!("{}\n\n{content}", last.content);
            }
            _ => messages.push(Message::new(role, content)),
        }
    }
    let tools = parse_tools(v.get("tools"), v.get("tool_choice"))?;
    let mut params = params(common, v.get("response_format"))?;
    if tools.as_ref().is_some_and(Tools::active) && params.constraint.is_some() {
        return Err(ApiError::bad(
            "response_format",
            "response_format: with tools, give tool_choice \"none\" (a reply is either a call or formatted text)",
        ));
    }
    let input = match format.prompt(&history, tools.as_ref().filter(|t| t.active()))? {
        Some(pieces) => Input::Pieces(pieces),
        None => Input::Chat(messages),
    };
    params.tools = tools;
    Ok(Request { model: params_model(&v), input, params, images })
}

fn params_model(v: &Value) -> Option<String> {
    v.get("model").and_then(Value::as_str).map(str::to_string)
}

/// A message's text: a string, or text and image parts; each image becomes a
/// `<__media__>` marker in the text, its bytes appended to `images`.
fn content_text(c: Content, i: usize, images: &mut Vec<ImageInput>) -> Result<String, ApiError> {
    match c {
        Content::Text(t) => Ok(t),
        Content::Parts(parts) => {
            let mut text = String::new();
            for (j, p) in parts.into_iter().enumerate() {
                let param = format!("messages[{i}].content[{j}]");
                match (p.ty.as_str(), p.text, p.image_url) {
                    ("text", Some(t), _) => text.push_str(&t),
                    ("image_url", _, Some(u)) => {
                        images.push(ImageInput { bytes: data_url(&u.url, &param)?, param });
                        text.push_str(gemma_gguf::vision::prompt::MEDIA_MARKER);
                    }
                    (ty, _, _) => {
                        return Err(ApiError::bad(
                            param,
                            format!("content parts of type {ty:?} are not supported: only text with a `text` field, and image_url with a `url`"),
                        ))
                    }
                }
            }
            Ok(text)
        }
    }
}

/// A `/v1/completions` body.
pub fn parse_completion(body: &[u8]) -> Result<Request, ApiError> {
    let v = object(body)?;
    let common: Common = typed(&v)?;
    let fields: CompletionFields = typed(&v)?;
    let prompt = match fields.prompt {
        OneOrMany::One(p) => p,
        OneOrMany::Many(mut v) if v.len() == 1 => v.remove(0),
        OneOrMany::Many(v) => {
            return Err(ApiError::bad(
                "prompt",
                format!("prompt: {} prompts given; one per request is served", v.len()),
            ))
        }
    };
    if v.get("tools").is_some_and(|t| !t.is_null()) {
        return Err(ApiError::bad("tools", "tools: only /v1/chat/completions takes tools"));
    }
    let model = common.model.clone();
    Ok(Request {
        model,
        input: Input::Text(prompt),
        params: params(common, v.get("response_format"))?,
        images: Vec::new(),
    })
}

/// Checks the shared fields. Sampling defaults are the library's (llama.cpp's): temperature
/// 0.8, top-k 40, top-p 0.95, min-p 0.05, no repeat penalty; the seed is drawn when absent.
fn params(c: Common, response_format: Option<&Value>) -> Result<GenParams, ApiError> {
    if let Some(n) = c.n.filter(|&n| n != 1) {
        return Err(ApiError::bad("n", format!("n = {n}: only one choice per request (n = 1) is served")));
    }
    let max_tokens = c.max_completion_tokens.or(c.max_tokens);
    if max_tokens == Some(0) {
        let field = if c.max_completion_tokens.is_some() { "max_completion_tokens" } else { "max_tokens" };
        return Err(ApiError::bad(field, format!("{field} = 0: ask for at least one token")));
    }
    let stops = match c.stop {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    };
    if stops.len() > MAX_STOPS {
        return Err(ApiError::bad("stop", format!("stop: {} strings given, at most {MAX_STOPS}", stops.len())));
    }
    if stops.iter().any(String::is_empty) {
        return Err(ApiError::bad("stop", "stop: an empty stop string would stop at once"));
    }
    let d = SamplerParams::default();
    let sampler = SamplerParams {
        temperature: c.temperature.unwrap_or(d.temperature),
        top_k: c.top_k.unwrap_or(d.top_k),
        top_p: c.top_p.unwrap_or(d.top_p),
        min_p: c.min_p.unwrap_or(d.min_p),
        repeat_penalty: c.repeat_penalty.unwrap_or(d.repeat_penalty),
        repeat_last_n: d.repeat_last_n,
        seed: c.seed.unwrap_or_else(clock_seed),
    };
    sampler.validate()?;
    let stream = c.stream.unwrap_or(false);
    let include_usage = c.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let constraint = parse_response_format(response_format)?;
    Ok(GenParams { max_tokens, sampler, stops, stream, include_usage, constraint, tools: None })
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(r: Result<Request, ApiError>) -> Option<String> {
        match r {
            Err(ApiError::BadRequest { param, .. }) => param,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn a_chat_request_parses_with_openai_fields() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hi"}]}],"max_tokens":8,"temperature":0,
            "stop":"\n","seed":3,"stream":true,"stream_options":{"include_usage":true},"user":"ignored"}"#;
        let r = parse_chat(body).unwrap();
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(r.input, Input::Chat(vec![Message::system("Be brief."), Message::user("Hi")]));
        assert_eq!(r.params.max_tokens, Some(8));
        assert_eq!(r.params.sampler.temperature, 0.0);
        assert_eq!(r.params.sampler.seed, 3);
        assert_eq!(r.params.stops, vec!["\n".to_string()]);
        assert!(r.params.stream && r.params.include_usage);
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let r = parse_completion(br#"{"prompt":["x"],"max_tokens":5,"max_completion_tokens":7}"#).unwrap();
        assert_eq!(r.params.max_tokens, Some(7));
        assert_eq!(r.input, Input::Text("x".into()));
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(param_of(parse_chat(br#"{"messages":[],"temperature":"hot"}"#)).as_deref(), Some("temperature"));
        assert_eq!(param_of(parse_chat(br#"{"messages":[]}"#)).as_deref(), Some("messages"));
        assert_eq!(
            param_of(parse_chat(br#"{"messages":[{"role":"robot","content":"x"}]}"#)).as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(
            param_of(parse_chat(br#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#)).as_deref(),
            Some("messages[0].content[0]")
        );
        assert_eq!(param_of(parse_completion(br#"{"prompt":"x","n":2}"#)).as_deref(), Some("n"));
        assert_eq!(param_of(parse_completion(br#"{"prompt":"x","top_p":1.5}"#)).as_deref(), Some("top_p"));
        assert_eq!(param_of(parse_completion(br#"{"prompt":"x","max_tokens":-1}"#)).as_deref(), Some("max_tokens"));
        assert_eq!(param_of(parse_completion(br#"{"prompt":"x","max_tokens":0}"#)).as_deref(), Some("max_tokens"));
        assert_eq!(param_of(parse_completion(br#"{"prompt":"x","stop":[""]}"#)).as_deref(), Some("stop"));
        assert_eq!(param_of(parse_completion(br#"{"prompt":["a","b"]}"#)).as_deref(), Some("prompt"));
        assert_eq!(param_of(parse_completion(br#"{"prompt":"x","seed":-4}"#)).as_deref(), Some("seed"));
        assert_eq!(param_of(parse_completion(br#"{"max_tokens":3}"#)).as_deref(), Some("prompt"));
        assert_eq!(
            param_of(parse_completion(br#"{"prompt":"x","repeat_penalty":0}"#)).as_deref(),
            Some("repeat_penalty")
        );
    }

    #[test]
    fn a_body_that_is_not_a_json_object_is_refused() {
        for body in [&b"{"[..], b"[1]", b"\xff\xfe", b""] {
            assert!(matches!(parse_chat(body), Err(ApiError::BadRequest { param: None, .. })), "{body:?}");
        }
    }
}
