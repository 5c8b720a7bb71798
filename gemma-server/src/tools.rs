//! Structured output and tool calls on `/v1/chat/completions`: `response_format`, `tools`,
//! `tool_choice`, and the replies' `tool_calls`, in OpenAI's shapes.
//!
//! A model family's way of calling tools is a [`ToolFormat`]: how the declarations enter the
//! prompt, which constraint the reply is generated under, how past calls and results are
//! written back into the conversation, and a streaming parser of the reply into content and
//! call deltas. [`format_for`] picks it from the model's architecture. Gemma 3 (and 1, 2)
//! have no tool tokens: [`Gemma3Json`] follows Google's Gemma 3 function-calling prompt (the
//! JSON variant: `{"name": function name, "parameters": dictionary of argument name and its
//! value}`) and generates the call under a grammar built from the tools' parameter schemas, so
//! the call always parses and its arguments fit their schema. Gemma 4 has tool tokens of its
//! own: [`Gemma4Native`](crate::tools_gemma4::Gemma4Native) writes the whole prompt as its
//! official template does ([`ToolFormat::prompt`]) and parses the native calls.
//!
//! A call cut short (`max_tokens`, the context) is an error the client sees
//! ([`ApiError::IncompleteToolCall`]), never text; so is a call that does not parse, names no
//! callable function or whose arguments do not fit the schema ([`ApiError::InvalidToolCall`]).
#![forbid(unsafe_code)]

use crate::engine::Finish;
use crate::error::ApiError;
use gemma_gguf::chat::{Message, Piece, Role};
use gemma_gguf::constrain::{lark_json, ConstraintSpec};
use serde_json::{json, Value};

/// Tools per request (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// One function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema of the arguments object.
    pub parameters: Value,
}

/// OpenAI's `tool_choice`.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// Never call; the tools are left out of the prompt.
    None,
    /// Answer in text or call one function (the default with tools).
    Auto,
    /// Call one of the functions.
    Required,
    /// Call this function.
    Named(String),
}

/// The tools of a request and the choice.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
}

impl Tools {
    /// Whether the reply may contain a call.
    pub fn active(&self) -> bool {
        self.choice != ToolChoice::None && !self.tools.is_empty()
    }

    /// The tools the reply may call: all of them, or the named one.
    pub(crate) fn callable(&self) -> Vec<&Tool> {
        match &self.choice {
            ToolChoice::Named(name) => self.tools.iter().filter(|t| &t.name == name).collect(),
            ToolChoice::None => Vec::new(),
            _ => self.tools.iter().collect(),
        }
    }
}

/// `response_format`: `{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema",
/// "json_schema": {"name", "schema", "strict"}}`. `strict` is accepted either way: the schema is
/// always enforced.
pub fn parse_response_format(v: Option<&Value>) -> Result<Option<ConstraintSpec>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    let ty = v.get("type").and_then(Value::as_str).ok_or_else(|| {
        ApiError::bad("response_format.type", "response_format.type: give \"text\", \"json_object\" or \"json_schema\"")
    })?;
    match ty {
        "text" => Ok(None),
        "json_object" => Ok(Some(ConstraintSpec::JsonObject)),
        "json_schema" => {
            let js = v.get("json_schema").filter(|j| j.is_object()).ok_or_else(|| {
                ApiError::bad("response_format.json_schema", "response_format.json_schema: an object is required")
            })?;
            if !js.get("name").is_some_and(Value::is_string) {
                return Err(ApiError::bad(
                    "response_format.json_schema.name",
                    "response_format.json_schema.name: a string is required",
                ));
            }
            match js.get("schema") {
                None => Ok(Some(ConstraintSpec::JsonSchema(json!({})))),
                Some(s) if s.is_object() => Ok(Some(ConstraintSpec::JsonSchema(s.clone()))),
                Some(_) => Err(ApiError::bad(
                    "response_format.json_schema.schema",
                    "response_format.json_schema.schema: a JSON Schema object is required",
                )),
            }
        }
        other => Err(ApiError::bad(
            "response_format.type",
            format!("response_format.type = {other:?}: give \"text\", \"json_object\" or \"json_schema\""),
        )),
    }
}

/// `tools` and `tool_choice`; `None` without tools (a `tool_choice` then must be absent or "none").
pub fn parse_tools(tools: Option<&Value>, choice: Option<&Value>) -> Result<Option<Tools>, ApiError> {
    let list = match tools.filter(|v| !v.is_null()) {
        None => {
            return match choice.filter(|v| !v.is_null()) {
                None => Ok(None),
                Some(Value::String(s)) if s == "none" => Ok(None),
                Some(_) => Err(ApiError::bad("tool_choice", "tool_choice: no tools were given")),
            }
        }
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::bad("tools", "tools: an array of {\"type\": \"function\", …} is required")),
    };
    if list.len() > MAX_TOOLS {
        return Err(ApiError::bad("tools", format!("tools: {} given, at most {MAX_TOOLS}", list.len())));
    }
    let mut out: Vec<Tool> = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let at = |field: &str| format!("tools[{i}]{field}");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(ApiError::bad(at(".type"), format!("{}: only \"function\" tools exist", at(".type"))));
        }
        let f = t
            .get("function")
            .filter(|f| f.is_object())
            .ok_or_else(|| ApiError::bad(at(".function"), format!("{}: an object is required", at(".function"))))?;
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        if !valid_name(name) {
            return Err(ApiError::bad(
                at(".function.name"),
                format!("{}: {name:?} is not a function name (1–64 of a-z, A-Z, 0-9, _ and -)", at(".function.name")),
            ));
        }
        if out.iter().any(|t| t.name == name) {
            return Err(ApiError::bad(
                at(".function.name"),
                format!("{}: {name:?} is given twice", at(".function.name")),
            ));
        }
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p) if p.is_object() => p.clone(),
            Some(_) => {
                return Err(ApiError::bad(
                    at(".function.parameters"),
                    format!("{}: a JSON Schema object is required", at(".function.parameters")),
                ))
            }
        };
        let description = f.get("description").and_then(Value::as_str).map(str::to_string);
        out.push(Tool { name: name.to_string(), description, parameters });
    }
    let choice = match choice.filter(|v| !v.is_null()) {
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::bad(
                    "tool_choice",
                    format!("tool_choice = {other:?}: give \"none\", \"auto\", \"required\" or a function"),
                ))
            }
        },
        Some(v) => {
            let name = v.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad("tool_choice", "tool_choice: {\"type\": \"function\", \"function\": {\"name\": …}}")
            })?;
            if !out.iter().any(|t| t.name == name) {
                return Err(ApiError::bad("tool_choice", format!("tool_choice: no tool is named {name:?}")));
            }
            ToolChoice::Named(name.to_string())
        }
    };
    if choice != ToolChoice::None && out.is_empty() {
        return Err(ApiError::bad("tools", "tools: the list is empty"));
    }
    Ok(Some(Tools { tools: out, choice }))
}

/// OpenAI's rule for function names.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What a reply turns into, piece by piece.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// Plain text of the reply.
    Content(String),
    /// A call starts: its index in `tool_calls`, id and function name.
    CallStart { index: usize, id: String, name: String },
    /// More of the call's `arguments` (JSON text).
    Arguments { index: usize, text: String },
}

/// Turns a streamed reply into [`Delta`]s.
pub trait ToolCallParser: Send {
    /// Text generated next; returns what can be said already.
    fn push(&mut self, text: &str) -> Vec<Delta>;
    /// The reply ended (`finish`): the rest, or the error of a call left incomplete.
    fn finish(&mut self, finish: Finish) -> Result<Vec<Delta>, ApiError>;
    /// Whether the reply is a call (`finish_reason` "tool_calls").
    fn called(&self) -> bool;
}

/// A message of a chat request as the client sent it, for formats that write the whole prompt
/// themselves ([`ToolFormat::prompt`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryMessage {
    /// `tool` messages are [`Role::User`] here, with `tool` set.
    pub role: Role,
    /// A `tool` message: a function's result.
    pub tool: bool,
    pub content: Option<String>,
    /// An assistant's past calls.
    pub calls: Vec<HistoryCall>,
    /// A `tool` message's `name`.
    pub name: Option<String>,
    /// A `tool` message's `tool_call_id`.
    pub tool_call_id: Option<String>,
}

/// One past call of an assistant message.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryCall {
    pub id: Option<String>,
    pub name: String,
    /// JSON text, as OpenAI's `function.arguments`.
    pub arguments: String,
}

/// A model family's way of calling tools.
pub trait ToolFormat: Send + Sync {
    /// The whole prompt, for a format with markup of its own (Gemma 4's tool tokens), from the
    /// request's messages and its active tools; `Ok(None)` leaves the conversation to the
    /// model's chat format, with [`declare`](Self::declare), [`render_call`](Self::render_call)
    /// and [`render_result`](Self::render_result).
    fn prompt(&self, _history: &[HistoryMessage], _tools: Option<&Tools>) -> Result<Option<Vec<Piece>>, ApiError> {
        Ok(None)
    }
    /// Puts the declarations of the callable tools into the conversation.
    fn declare(&self, tools: &Tools, messages: &mut Vec<Message>);
    /// The constraint of the reply; `None`: the reply is free text, parsed afterwards.
    fn constraint(&self, tools: &Tools) -> Result<Option<ConstraintSpec>, ApiError>;
    /// A past call of the conversation, as the model would have written it.
    fn render_call(&self, name: &str, arguments: &str) -> String;
    /// A tool's result, as the text of a user turn.
    fn render_result(&self, name: Option<&str>, content: &str) -> String;
    /// A parser of one reply.
    fn parser(&self, tools: &Tools) -> Box<dyn ToolCallParser>;
}

/// The tool format of an architecture (`general.architecture`): Gemma 4's native tokens for
/// `gemma4`, the prompt-based JSON calls for gemma, gemma2 and gemma3.
pub fn format_for(arch: &str) -> &'static dyn ToolFormat {
    match arch {
        "gemma4" => &crate::tools_gemma4::Gemma4Native,
        _ => &Gemma3Json,
    }
}

/// Gemma 3's prompt-based function calling, JSON variant (see the module doc).
pub struct Gemma3Json;

/// The opening of a call, up to the arguments: fixed by the grammar.
fn call_prefix(name: &str) -> String {
    format!("{{\"name\": \"{name}\", \"parameters\": ")
}

impl ToolFormat for Gemma3Json {
    fn declare(&self, tools: &Tools, messages: &mut Vec<Message>) {
        let decls: Vec<Value> = tools
            .callable()
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description.as_deref().unwrap_or(""), "parameters": t.parameters}))
            .collect();
        let must = match &tools.choice {
            ToolChoice::Auto => String::new(),
            ToolChoice::Named(n) => format!("\nCall the function {n} now.\n"),
            _ => "\nCall one of the functions now.\n".to_string(),
        };
        let text = format!(
            "You have access to functions. If you decide to invoke any of the function(s), you MUST put it in the \
             format of\n{{\"name\": function name, \"parameters\": dictionary of argument name and its value}}\n\n\
             You SHOULD NOT include any other text in the response if you call a function\n{must}{}\n",
            serde_json::to_string_pretty(&decls).unwrap_or_default()
        );
        match messages.first_mut() {
            Some(m) if m.role == gemma_gguf::chat::Role::System => m.content = format!("{text}\n{}", m.content),
            _ => messages.insert(0, Message::system(text)),
        }
    }

    fn constraint(&self, tools: &Tools) -> Result<Option<ConstraintSpec>, ApiError> {
        let mut rules = Vec::new();
        let mut alts = Vec::new();
        for (i, t) in tools.callable().iter().enumerate() {
            let args = lark_json(&t.parameters).map_err(|e| {
                let at = tools.tools.iter().position(|x| x.name == t.name).unwrap_or(i);
                ApiError::bad(
                    format!("tools[{at}].function.parameters"),
                    format!("tools[{at}].function.parameters: {e}"),
                )
            })?;
            // Names are [A-Za-z0-9_-]: nothing to escape in a Lark string.
            rules.push(format!("call_{i}: \"{{\\\"name\\\": \\\"{}\\\", \\\"parameters\\\": \" {args} \"}}\"", t.name));
            alts.push(format!("call_{i}"));
        }
        if tools.choice == ToolChoice::Auto {
            // Or text that does not start like a call.
            alts.push("TEXT".into());
            rules.push(r"TEXT: /[^{\s](.|\n)*/".into());
        }
        Ok(Some(ConstraintSpec::Lark(format!("start: {}\n{}\n", alts.join(" | "), rules.join("\n")))))
    }

    fn render_call(&self, name: &str, arguments: &str) -> String {
        let args = if arguments.trim().is_empty() { "{}" } else { arguments };
        format!("{}{args}}}", call_prefix(name))
    }

    fn render_result(&self, name: Option<&str>, content: &str) -> String {
        match name {
            Some(n) => format!("```tool_output\n{n}: {content}\n```"),
            None => format!("```tool_output\n{content}\n```"),
        }
    }

    fn parser(&self, tools: &Tools) -> Box<dyn ToolCallParser> {
        let names = tools.callable().iter().map(|t| t.name.clone()).collect();
        let state = if tools.choice == ToolChoice::Auto { State::Undecided } else { State::Header };
        Box::new(Gemma3Parser { names, state, text: String::new(), emitted: 0, name: None })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `auto`, nothing seen yet: a call starts with `{`.
    Undecided,
    /// Plain text.
    Content,
    /// Inside `{"name": "…", "parameters": `.
    Header,
    /// Inside the arguments (the last byte is held back: it may be the closing brace).
    Arguments,
}

struct Gemma3Parser {
    names: Vec<String>,
    state: State,
    /// The whole reply so far.
    text: String,
    /// Bytes of `text` already turned into deltas.
    emitted: usize,
    name: Option<String>,
}

impl Gemma3Parser {
    fn step(&mut self, out: &mut Vec<Delta>) {
        loop {
            match self.state {
                State::Undecided => match self.text.trim_start().chars().next() {
                    None => return,
                    Some('{') => self.state = State::Header,
                    Some(_) => self.state = State::Content,
                },
                State::Content => {
                    if self.emitted < self.text.len() {
                        out.push(Delta::Content(self.text[self.emitted..].to_string()));
                        self.emitted = self.text.len();
                    }
                    return;
                }
                State::Header => {
                    let rest = self.text.trim_start();
                    let Some(name) = self.names.iter().find(|n| rest.starts_with(&call_prefix(n))) else { return };
                    let start = self.text.len() - rest.len() + call_prefix(name).len();
                    out.push(Delta::CallStart { index: 0, id: new_call_id(), name: name.clone() });
                    self.name = Some(name.clone());
                    self.emitted = start;
                    self.state = State::Arguments;
                }
                State::Arguments => {
                    let mut end = self.text.len().saturating_sub(1).max(self.emitted);
                    while !self.text.is_char_boundary(end) {
                        end -= 1;
                    }
                    if end > self.emitted {
                        out.push(Delta::Arguments { index: 0, text: self.text[self.emitted..end].to_string() });
                        self.emitted = end;
                    }
                    return;
                }
            }
        }
    }

    /// The error of a reply that was to be a call but is not a complete one.
    fn incomplete(&self, finish: Finish) -> ApiError {
        let why = match finish {
            Finish::Length => "the token limit (max_tokens or the context) was reached inside the call",
            Finish::Stop => "generation stopped inside the call",
        };
        let mut partial: String = self.text.chars().take(200).collect();
        if partial.len() < self.text.len() {
            partial.push('…');
        }
        ApiError::IncompleteToolCall {
            message: format!("the model's tool call is incomplete: {why}; it began {partial:?}"),
        }
    }
}

impl ToolCallParser for Gemma3Parser {
    fn push(&mut self, text: &str) -> Vec<Delta> {
        self.text.push_str(text);
        let mut out = Vec::new();
        self.step(&mut out);
        out
    }

    fn finish(&mut self, finish: Finish) -> Result<Vec<Delta>, ApiError> {
        let mut out = Vec::new();
        self.step(&mut out);
        match self.state {
            State::Undecided | State::Content => Ok(out),
            State::Header => Err(self.incomplete(finish)),
            State::Arguments => {
                // Complete only if the whole reply is the call: {"name": …, "parameters": {…}}.
                let v: Option<Value> = serde_json::from_str(self.text.trim()).ok();
                let ok = finish == Finish::Stop
                    && v.as_ref().is_some_and(|v| {
                        v.get("name").and_then(Value::as_str) == self.name.as_deref()
                            && v.get("parameters").is_some_and(Value::is_object)
                    })
                    && self.text.trim_end().ends_with('}');
                if !ok {
                    return Err(self.incomplete(finish));
                }
                let end = self.text.trim_end().len() - 1;
                if end > self.emitted {
                    out.push(Delta::Arguments { index: 0, text: self.text[self.emitted..end].to_string() });
                    self.emitted = end;
                }
                Ok(out)
            }
        }
    }

    fn called(&self) -> bool {
        matches!(self.state, State::Header | State::Arguments)
    }
}

/// `call_…`, unique within a run.
pub(crate) fn new_call_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("call_{t:x}{n:06x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(choice: ToolChoice) -> Tools {
        Tools {
            tools: vec![Tool {
                name: "get_weather".into(),
                description: Some("Weather in a city".into()),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            }],
            choice,
        }
    }

    /// Feeds `pieces`, returns all deltas and the result of finish.
    fn run(t: &Tools, pieces: &[&str], finish: Finish) -> (Vec<Delta>, Result<Vec<Delta>, ApiError>, bool) {
        let mut p = Gemma3Json.parser(t);
        let mut all = Vec::new();
        for s in pieces {
            all.extend(p.push(s));
        }
        let end = p.finish(finish);
        (all, end, p.called())
    }

    fn arguments(deltas: &[Delta]) -> String {
        deltas
            .iter()
            .filter_map(|d| if let Delta::Arguments { text, .. } = d { Some(text.as_str()) } else { None })
            .collect()
    }

    #[test]
    fn a_streamed_call_becomes_a_name_and_argument_chunks() {
        let t = tools(ToolChoice::Auto);
        let (mut deltas, end, called) = run(
            &t,
            &["{\"na", "me\": \"get_weather\", \"param", "eters\": {\"ci", "ty\": \"Paris\"}", "}"],
            Finish::Stop,
        );
        deltas.extend(end.unwrap());
        assert!(called);
        assert!(matches!(&deltas[0], Delta::CallStart { name, .. } if name == "get_weather"));
        assert_eq!(arguments(&deltas), "{\"city\": \"Paris\"}");
    }

    #[test]
    fn text_in_auto_mode_is_content() {
        let (deltas, end, called) = run(&tools(ToolChoice::Auto), &["It is ", "sunny."], Finish::Stop);
        assert!(!called);
        assert_eq!(deltas, [Delta::Content("It is ".into()), Delta::Content("sunny.".into())]);
        assert_eq!(end.unwrap(), []);
    }

    #[test]
    fn a_cut_call_is_an_error_not_text() {
        let t = tools(ToolChoice::Required);
        for pieces in [&["{\"name\": \"get_wea"][..], &["{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Pa"]]
        {
            let (_, end, _) = run(&t, pieces, Finish::Length);
            assert!(matches!(end, Err(ApiError::IncompleteToolCall { .. })), "{pieces:?}: {end:?}");
        }
    }

    #[test]
    fn the_grammar_names_each_callable_function() {
        let g = match Gemma3Json.constraint(&tools(ToolChoice::Auto)).unwrap() {
            Some(ConstraintSpec::Lark(g)) => g,
            other => panic!("{other:?}"),
        };
        assert!(g.starts_with("start: call_0 | TEXT\n"), "{g}");
        assert!(g.contains(r#"call_0: "{\"name\": \"get_weather\", \"parameters\": " %json {"#), "{g}");
    }

    #[test]
    fn tool_fields_are_checked_by_name() {
        let param = |tools: Value, choice: Option<Value>| match parse_tools(Some(&tools), choice.as_ref()) {
            Err(ApiError::BadRequest { param, .. }) => param.unwrap_or_default(),
            other => panic!("{other:?}"),
        };
        let f = |name: &str| json!({"type": "function", "function": {"name": name}});
        assert_eq!(param(json!([f("a b")]), None), "tools[0].function.name");
        assert_eq!(param(json!([f("a"), f("a")]), None), "tools[1].function.name");
        assert_eq!(param(json!([{"type": "web"}]), None), "tools[0].type");
        assert_eq!(param(json!([f("a")]), Some(json!("sometimes"))), "tool_choice");
        assert_eq!(param(json!([f("a")]), Some(json!({"type": "function", "function": {"name": "b"}}))), "tool_choice");
        assert_eq!(param(json!({}), None), "tools");
        let parsed = parse_tools(Some(&json!([f("a")])), Some(&json!("required"))).unwrap().unwrap();
        assert_eq!(parsed.choice, ToolChoice::Required);
        assert_eq!(parsed.tools[0].parameters, json!({"type": "object", "properties": {}}));
    }

    #[test]
    fn response_formats() {
        assert_eq!(parse_response_format(Some(&json!({"type": "text"}))).unwrap(), None);
        assert_eq!(
            parse_response_format(Some(&json!({"type": "json_object"}))).unwrap(),
            Some(ConstraintSpec::JsonObject)
        );
        let s =
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer"}, "strict": true}});
        assert_eq!(
            parse_response_format(Some(&s)).unwrap(),
            Some(ConstraintSpec::JsonSchema(json!({"type": "integer"})))
        );
        for bad in [
            json!({"type": "xml"}),
            json!({"type": "json_schema"}),
            json!({"type": "json_schema", "json_schema": {"schema": {}}}),
        ] {
            assert!(matches!(parse_response_format(Some(&bad)), Err(ApiError::BadRequest { .. })), "{bad}");
        }
    }
}
