//! Gemma 4's native tool calls: [`Gemma4Native`], the [`ToolFormat`] of `gemma4` models.
//!
//! Everything is written as Gemma 4's official chat template writes it
//! (`tests/data/tokenizer/gemma4_chat_template.jinja`, llama.cpp's `models/templates/gemma4.jinja`):
//! - the declarations go into the system turn, `<|tool>declaration:NAME{description:…,
//!   parameters:{…}}<tool|>` each, the JSON-schema parameters in the template's own notation
//!   (its `format_function_declaration` and `format_parameters` macros, quirks included);
//! - a past call is `<|tool_call>call:NAME{key:value,…}<tool_call|>` in the model's turn
//!   (keys sorted, strings between `<|"|>`: the `format_argument` macro);
//! - a tool's result follows the call in the same model turn,
//!   `<|tool_response>response:NAME{key:value,…}<tool_response|>` (a result that is not a JSON
//!   object becomes `{value:…}`), and the turn stays open: the model goes on after it. OpenAI's
//!   `tool` messages are therefore folded into the assistant message that made the calls (the
//!   template's `tool_responses`), the function's name taken from `name` or from the call that
//!   `tool_call_id` names; an assistant message right after them is that turn's text.
//!
//! The reply is parsed with [`gemma_gguf::tool_call`]. For `tool_choice` `required` or a named
//! function it is generated under a Lark grammar built from the tools' schemas
//! ([`Gemma4Native::constraint`]): one well-formed call of a callable function whose arguments
//! have the schema's keys, types, enums and nesting. For `auto` the text is free. Either way the
//! call is checked after parsing (name, then arguments against the schema: types, `enum`,
//! `const`, `required`, `properties`, `additionalProperties: false`, `items`, `anyOf`); a call
//! that is cut short is [`ApiError::IncompleteToolCall`], one that does not parse or fit is
//! [`ApiError::InvalidToolCall`], never text.
#![forbid(unsafe_code)]

use crate::engine::Finish;
use crate::error::ApiError;
use crate::tools::{new_call_id, Delta, HistoryMessage, Tool, ToolCallParser, ToolChoice, ToolFormat, Tools};
use gemma_gguf::chat::{is_space, strip_thinking, Message, Piece, Role, BOS, CHANNEL_END, CHANNEL_START};
use gemma_gguf::chat::{Pieces, TURN_END, TURN_START};
use gemma_gguf::constrain::ConstraintSpec;
use gemma_gguf::tool_call::{parse_tool_calls, tool_call_prefix_at, STRING_DELIM, TOOL_CALL_END, TOOL_CALL_START};
use serde_json::{Map, Value};

/// Opens a declaration in the system turn (a token of Gemma 4's vocabulary).
pub const TOOL_START: &str = "<|tool>";
/// Closes a declaration.
pub const TOOL_END: &str = "<tool|>";
/// Opens a tool's result (a control token, and an end-of-generation one: the model stops
/// there after a call).
pub const TOOL_RESPONSE_START: &str = "<|tool_response>";
/// Closes a tool's result.
pub const TOOL_RESPONSE_END: &str = "<tool_response|>";
/// Schema nesting the grammar and the argument check follow; deeper parts take any value.
const MAX_SCHEMA_DEPTH: usize = 32;

/// Gemma 4's native tool calls (see the module doc).
pub struct Gemma4Native;

/// A piece list under construction (the chat module's, text merged), with Gemma 4's strings.
#[derive(Default)]
struct Out(Pieces);

impl std::ops::Deref for Out {
    type Target = Pieces;
    fn deref(&self) -> &Pieces {
        &self.0
    }
}

impl std::ops::DerefMut for Out {
    fn deref_mut(&mut self) -> &mut Pieces {
        &mut self.0
    }
}

impl Out {
    /// A string value: verbatim between two `<|"|>` tokens.
    fn string(&mut self, s: &str) {
        self.special(STRING_DELIM);
        self.text(s);
        self.special(STRING_DELIM);
    }
}

/// The pieces as one text, as the template renders them.
pub fn show(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) | Piece::Special(t) => t.as_str(),
        })
        .collect()
}

/// A mapping's entries as Jinja's `dictsort` orders them: by key, case ignored, stable.
fn dictsort(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = m.iter().collect();
    entries.sort_by_key(|(k, _)| k.to_lowercase());
    entries
}

/// Jinja's truth of a value (an absent one is false).
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// A value as `{{ v }}` prints it.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A schema's `type` as the template writes it: upper case; of a list, the first that is not
/// `"null"`.
fn type_name(t: Option<&Value>) -> String {
    match t {
        Some(Value::String(t)) => t.to_uppercase(),
        Some(Value::Array(ts)) => {
            ts.iter().find(|t| t.as_str() != Some("null")).map(text_of).unwrap_or_default().to_uppercase()
        }
        _ => String::new(),
    }
}

/// The template's `format_argument`: strings between `<|"|>`, mappings with their keys sorted
/// (between `<|"|>` too when `escape_keys`), numbers and booleans bare, null as Python's Jinja
/// prints it (`None`).
fn argument(v: &Value, escape_keys: bool, out: &mut Out) {
    match v {
        Value::String(s) => out.string(s),
        Value::Bool(b) => out.text(if *b { "true" } else { "false" }),
        Value::Number(n) => out.text(&n.to_string()),
        Value::Null => out.text("None"),
        Value::Object(m) => {
            out.text("{");
            for (i, (k, v)) in dictsort(m).into_iter().enumerate() {
                if i > 0 {
                    out.text(",");
                }
                match escape_keys {
                    true => out.string(k),
                    false => out.text(k),
                }
                out.text(":");
                argument(v, escape_keys, out);
            }
            out.text("}");
        }
        Value::Array(a) => {
            out.text("[");
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.text(",");
                }
                argument(v, escape_keys, out);
            }
            out.text("]");
        }
    }
}

/// `<|"|>a<|"|>,<|"|>b<|"|>` for a `required` list.
fn required_list(v: &Value, out: &mut Out) {
    for (i, item) in v.as_array().into_iter().flatten().enumerate() {
        if i > 0 {
            out.text(",");
        }
        out.string(&text_of(item));
    }
}

/// The template's `add_comma` step: a comma before every field but the first.
fn comma(out: &mut Out, add_comma: &mut bool) {
    if *add_comma {
        out.text(",");
    }
    *add_comma = true;
}

/// The keys `format_parameters` skips.
const STANDARD_KEYS: [&str; 5] = ["description", "type", "properties", "required", "nullable"];

/// The template's `format_parameters` macro over a schema's `properties`.
fn parameters(properties: &Map<String, Value>, out: &mut Out) {
    let mut first = true;
    for (key, value) in dictsort(properties) {
        if STANDARD_KEYS.contains(&key.as_str()) {
            continue;
        }
        if !first {
            out.text(",");
        }
        first = false;
        let ty = type_name(value.get("type"));
        out.text(key);
        out.text(":{");
        let mut add_comma = false;
        if truthy(value.get("description")) {
            out.text("description:");
            out.string(&text_of(&value["description"]));
            add_comma = true;
        }
        if truthy(value.get("nullable")) {
            comma(out, &mut add_comma);
            out.text("nullable:true");
        }
        match ty.as_str() {
            "STRING" if truthy(value.get("enum")) => {
                comma(out, &mut add_comma);
                out.text("enum:");
                argument(&value["enum"], true, out);
            }
            "OBJECT" => {
                // The template writes this comma whatever came before.
                out.text(",properties:{");
                match (value.get("properties"), value) {
                    (Some(Value::Object(p)), _) => parameters(p, out),
                    (_, Value::Object(m)) => parameters(m, out),
                    _ => {}
                }
                out.text("}");
                if truthy(value.get("required")) {
                    out.text(",required:[");
                    required_list(&value["required"], out);
                    out.text("]");
                }
            }
            "ARRAY" => {
                if let Some(Value::Object(items)) = value.get("items").filter(|i| truthy(Some(*i))) {
                    out.text(",items:{");
                    array_items(items, out);
                    out.text("}");
                }
            }
            _ => {}
        }
        comma(out, &mut add_comma);
        out.text("type:");
        out.string(&ty);
        out.text("}");
    }
}

/// The `items` of an array property, as the template writes them.
fn array_items(items: &Map<String, Value>, out: &mut Out) {
    let mut first = true;
    for (key, value) in dictsort(items) {
        if value.is_null() {
            continue;
        }
        if !first {
            out.text(",");
        }
        first = false;
        match key.as_str() {
            "properties" => {
                out.text("properties:{");
                if let Value::Object(p) = value {
                    parameters(p, out);
                }
                out.text("}");
            }
            "required" => {
                out.text("required:[");
                required_list(value, out);
                out.text("]");
            }
            "type" => {
                out.text("type:");
                out.string(&type_name(Some(value)));
            }
            _ => {
                out.text(key);
                out.text(":");
                argument(value, true, out);
            }
        }
    }
}

/// The template's `format_function_declaration` (without `response`, which OpenAI's tools
/// do not have).
fn declaration(tool: &Tool, out: &mut Out) {
    out.text("declaration:");
    out.text(&tool.name);
    out.text("{description:");
    out.string(tool.description.as_deref().unwrap_or(""));
    let params = &tool.parameters;
    if truthy(Some(params)) {
        out.text(",parameters:{");
        if truthy(params.get("properties")) {
            out.text("properties:{");
            if let Some(Value::Object(p)) = params.get("properties") {
                parameters(p, out);
            }
            out.text("},");
        }
        if truthy(params.get("required")) {
            out.text("required:[");
            required_list(&params["required"], out);
            out.text("],");
        }
        if truthy(params.get("type")) {
            // The template closes `parameters:{` only here.
            out.text("type:");
            out.string(&type_name(params.get("type")));
            out.text("}");
        }
    }
    out.text("}");
}

/// A past call in a model turn.
fn call(name: &str, arguments: &Map<String, Value>, out: &mut Out) {
    out.special(TOOL_CALL_START);
    out.text("call:");
    out.text(name);
    out.text("{");
    for (i, (k, v)) in dictsort(arguments).into_iter().enumerate() {
        if i > 0 {
            out.text(",");
        }
        out.text(k);
        out.text(":");
        argument(v, false, out);
    }
    out.text("}");
    out.special(TOOL_CALL_END);
}

/// A tool's result in a model turn.
fn response(name: &str, result: &Value, out: &mut Out) {
    out.special(TOOL_RESPONSE_START);
    out.text("response:");
    out.text(name);
    out.text("{");
    match result {
        Value::Object(m) => {
            for (i, (k, v)) in dictsort(m).into_iter().enumerate() {
                if i > 0 {
                    out.text(",");
                }
                out.text(k);
                out.text(":");
                argument(v, false, out);
            }
        }
        other => {
            out.text("value:");
            argument(other, false, out);
        }
    }
    out.text("}");
    out.special(TOOL_RESPONSE_END);
}

/// A tool's result: its JSON object when it is one, else its text.
fn result_value(content: Option<&str>) -> Value {
    let text = content.unwrap_or_default();
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::String(text.to_owned()),
    }
}

/// One message as the template sees it, tool results folded in.
struct Turn {
    role: Role,
    content: Option<String>,
    calls: Vec<(String, Map<String, Value>)>,
    responses: Vec<(String, Value)>,
}

/// A past call's arguments: a JSON object (empty text: no arguments).
fn past_arguments(text: &str, at: impl Fn() -> String) -> Result<Map<String, Value>, ApiError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ApiError::bad(at(), format!("{}: a JSON object is required", at()))),
    }
}

/// The request's messages as the template's messages: `tool` results folded into the
/// assistant message that called (see the module doc).
/// `offset`: the index of `history[0]` among the request's messages, for error fields.
fn turns(history: &[HistoryMessage], offset: usize) -> Result<Vec<Turn>, ApiError> {
    let mut out: Vec<Turn> = Vec::with_capacity(history.len());
    for (i, m) in history.iter().enumerate() {
        if m.tool {
            let by_id = m.tool_call_id.as_ref().and_then(|id| {
                history[..i].iter().flat_map(|h| &h.calls).find(|c| c.id.as_ref() == Some(id)).map(|c| c.name.clone())
            });
            let name = m.name.clone().or(by_id).unwrap_or_else(|| "unknown".into());
            let result = (name, result_value(m.content.as_deref()));
            match out.last_mut() {
                Some(t) if t.role == Role::Model && (!t.calls.is_empty() || !t.responses.is_empty()) => {
                    t.responses.push(result)
                }
                _ => out.push(Turn { role: Role::Model, content: None, calls: Vec::new(), responses: vec![result] }),
            }
            continue;
        }
        let mut calls = Vec::with_capacity(m.calls.len());
        for (j, c) in m.calls.iter().enumerate() {
            calls.push((
                c.name.clone(),
                past_arguments(&c.arguments, || {
                    format!("messages[{}].tool_calls[{j}].function.arguments", i + offset)
                })?,
            ));
        }
        let after_results = out
            .last_mut()
            .filter(|t| t.role == Role::Model && !t.responses.is_empty() && !truthy_str(t.content.as_deref()));
        match after_results {
            Some(t) if m.role == Role::Model && calls.is_empty() => t.content = m.content.clone(),
            _ => out.push(Turn { role: m.role, content: m.content.clone(), calls, responses: Vec::new() }),
        }
    }
    Ok(out)
}

fn truthy_str(s: Option<&str>) -> bool {
    s.is_some_and(|s| !s.is_empty())
}

/// The whole prompt, as the official template renders it with `tools` and
/// `add_generation_prompt`, thinking off.
fn render(history: &[HistoryMessage], tools: &[&Tool]) -> Result<Vec<Piece>, ApiError> {
    let mut out = Out::default();
    out.special(BOS);
    let mut rest = history;
    let system = history.first().filter(|m| m.role == Role::System && !m.tool);
    if system.is_some() || !tools.is_empty() {
        out.special(TURN_START);
        out.text("system\n");
        if let Some(system) = system {
            out.text(system.content.as_deref().unwrap_or_default().trim_matches(is_space));
            rest = &history[1..];
        }
        for t in tools {
            out.special(TOOL_START);
            declaration(t, &mut out);
            out.special(TOOL_END);
        }
        out.special(TURN_END);
        out.text("\n");
    }
    let mut after_response = false;
    for t in turns(rest, history.len() - rest.len())? {
        out.special(TURN_START);
        out.text(t.role.as_str());
        out.text("\n");
        for (name, args) in &t.calls {
            call(name, args, &mut out);
        }
        for (name, result) in &t.responses {
            response(name, result, &mut out);
        }
        if let Some(c) = &t.content {
            match t.role {
                Role::Model => out.text(strip_thinking(c).trim_matches(is_space)),
                _ => out.text(c.trim_matches(is_space)),
            }
        }
        after_response = !t.responses.is_empty();
        // The template leaves a turn that ends with results open.
        if !after_response || truthy_str(t.content.as_deref()) {
            out.special(TURN_END);
            out.text("\n");
        }
    }
    // After a tool's result the model's turn goes on.
    if !after_response {
        out.special(TURN_START);
        out.text("model\n");
    }
    out.special(CHANNEL_START);
    out.text("thought\n");
    out.special(CHANNEL_END);
    Ok(out.0 .0)
}

impl ToolFormat for Gemma4Native {
    /// The whole prompt whenever tools are active or the history holds calls or results;
    /// plain chats are left to the model's chat format.
    fn prompt(&self, history: &[HistoryMessage], tools: Option<&Tools>) -> Result<Option<Vec<Piece>>, ApiError> {
        let uses_tools = history.iter().any(|m| m.tool || !m.calls.is_empty());
        if tools.is_none() && !uses_tools {
            return Ok(None);
        }
        let callable = tools.map(Tools::callable).unwrap_or_default();
        render(history, &callable).map(Some)
    }

    /// Only for a conversation the model's chat format renders ([`prompt`](Self::prompt) takes
    /// every one with tools): the declarations as system text.
    fn declare(&self, tools: &Tools, messages: &mut Vec<Message>) {
        let mut out = Out::default();
        for t in tools.callable() {
            out.special(TOOL_START);
            declaration(t, &mut out);
            out.special(TOOL_END);
        }
        let text = show(&out.0 .0);
        match messages.first_mut() {
            Some(m) if m.role == Role::System => m.content = format!("{}{text}", m.content),
            _ => messages.insert(0, Message::system(text)),
        }
    }

    fn constraint(&self, tools: &Tools) -> Result<Option<ConstraintSpec>, ApiError> {
        if tools.choice == ToolChoice::Auto {
            return Ok(None);
        }
        Ok(Some(ConstraintSpec::Lark(grammar::grammar(&tools.callable()))))
    }

    fn render_call(&self, name: &str, arguments: &str) -> String {
        let mut out = Out::default();
        match past_arguments(arguments, String::new) {
            Ok(args) => call(name, &args, &mut out),
            Err(_) => out.text(arguments),
        }
        show(&out.0 .0)
    }

    fn render_result(&self, name: Option<&str>, content: &str) -> String {
        let mut out = Out::default();
        response(name.unwrap_or("unknown"), &result_value(Some(content)), &mut out);
        show(&out.0 .0)
    }

    fn parser(&self, tools: &Tools) -> Box<dyn ToolCallParser> {
        Box::new(Gemma4Parser {
            tools: tools.callable().into_iter().cloned().collect(),
            must_call: tools.choice != ToolChoice::Auto,
            text: String::new(),
            emitted: 0,
            open: None,
            calls: 0,
            failed: None,
        })
    }
}

/// Streams a reply into content and calls: text that may still become a call
/// ([`tool_call_prefix_at`]) is held back; a call's id and name go out once its `{` is there,
/// its arguments (as JSON) once its `<tool_call|>` is.
struct Gemma4Parser {
    tools: Vec<Tool>,
    /// `required` or a named function: the reply must be a call.
    must_call: bool,
    /// The whole reply so far.
    text: String,
    /// Bytes of `text` turned into deltas.
    emitted: usize,
    /// The call being read: where its `<|tool_call>` starts, and whether its start went out.
    open: Option<(usize, bool)>,
    /// Calls complete so far.
    calls: usize,
    /// A call that cannot be used: the error `finish` gives.
    failed: Option<ApiError>,
}

impl Gemma4Parser {
    fn invalid(&mut self, why: String) {
        let mut call: String = self.text[self.open.map_or(self.emitted, |o| o.0)..].chars().take(200).collect();
        if call.len() < self.text.len() - self.open.map_or(self.emitted, |o| o.0) {
            call.push('…');
        }
        self.failed = Some(ApiError::InvalidToolCall {
            message: format!("the model's tool call is invalid: {why}; it was {call:?}"),
        });
    }

    /// Turns what can be said of the reply into deltas, until more text is needed or a call
    /// fails.
    fn step(&mut self, out: &mut Vec<Delta>) {
        while self.failed.is_none() {
            let progress = match self.open {
                None => Ok(self.read_text(out)),
                Some((start, false)) => self.read_name(start, out),
                Some((start, true)) => self.read_call(start, out),
            };
            match progress {
                Ok(true) => continue,
                Ok(false) => return,
                Err(why) => return self.invalid(why),
            }
        }
    }

    /// Text up to a call's start or to what may become one; whether a call opened.
    fn read_text(&mut self, out: &mut Vec<Delta>) -> bool {
        let rest = &self.text[self.emitted..];
        let (end, opens) = match rest.find(TOOL_CALL_START) {
            Some(k) => (k, true),
            None => (tool_call_prefix_at(rest).unwrap_or(rest.len()), false),
        };
        if end > 0 {
            out.push(Delta::Content(rest[..end].to_string()));
            self.emitted += end;
        }
        if opens {
            self.open = Some((self.emitted, false));
        }
        opens
    }

    /// The call's name, known once the arguments' brace is there; whether it went out.
    fn read_name(&mut self, start: usize, out: &mut Vec<Delta>) -> Result<bool, String> {
        let body = &self.text[start + TOOL_CALL_START.len()..];
        let end = body.find(TOOL_CALL_END);
        let Some(brace) = body.find('{').filter(|&b| end.is_none_or(|e| b < e)) else {
            return match end {
                Some(_) => Err("no '{' after the function's name".into()),
                None => Ok(false),
            };
        };
        let Some(name) = body[..brace].trim_start().strip_prefix("call:").map(|n| n.trim().to_string()) else {
            return Err("it does not start with \"call:\" and the function's name".into());
        };
        if !self.tools.iter().any(|t| t.name == name) {
            let names: Vec<&str> = self.tools.iter().map(|t| t.name.as_str()).collect();
            return Err(format!("{name:?} is not a function it may call ({})", names.join(", ")));
        }
        out.push(Delta::CallStart { index: self.calls, id: new_call_id(), name });
        self.open = Some((start, true));
        Ok(true)
    }

    /// The whole call once its `<tool_call|>` is there, parsed and checked; whether it was.
    fn read_call(&mut self, start: usize, out: &mut Vec<Delta>) -> Result<bool, String> {
        let body_start = start + TOOL_CALL_START.len();
        let Some(len) = self.text[body_start..].find(TOOL_CALL_END) else { return Ok(false) };
        let stop = body_start + len + TOOL_CALL_END.len();
        let parsed = parse_tool_calls(&self.text[start..stop]).map_err(|e| e.to_string())?;
        let c = parsed.calls.into_iter().next().ok_or("no call")?;
        let schema = self.tools.iter().find(|t| t.name == c.name).map_or(Value::Null, |t| t.parameters.clone());
        let args: Value = serde_json::from_str(&c.arguments).unwrap_or(Value::Null);
        grammar::check(&schema, &args, "arguments", 0).map_err(|why| format!("{why} (function {})", c.name))?;
        out.push(Delta::Arguments { index: self.calls, text: c.arguments });
        self.calls += 1;
        self.emitted = stop;
        self.open = None;
        Ok(true)
    }
}

impl ToolCallParser for Gemma4Parser {
    fn push(&mut self, text: &str) -> Vec<Delta> {
        self.text.push_str(text);
        let mut out = Vec::new();
        self.step(&mut out);
        out
    }

    fn finish(&mut self, finish: Finish) -> Result<Vec<Delta>, ApiError> {
        let mut out = Vec::new();
        self.step(&mut out);
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let cut = |why: &str, from: usize, text: &str| {
            let mut partial: String = text[from..].chars().take(200).collect();
            if partial.len() < text.len() - from {
                partial.push('…');
            }
            ApiError::IncompleteToolCall {
                message: format!("the model's tool call is incomplete: {why}; it began {partial:?}"),
            }
        };
        let why = match finish {
            Finish::Length => "the token limit (max_tokens or the context) was reached inside the call",
            Finish::Stop => "generation stopped inside the call",
        };
        if let Some((start, _)) = self.open {
            return Err(cut(why, start, &self.text));
        }
        if self.emitted < self.text.len() {
            out.push(Delta::Content(self.text[self.emitted..].to_string()));
            self.emitted = self.text.len();
        }
        if self.must_call && self.calls == 0 {
            return Err(cut("the reply ended before a call began", 0, &self.text));
        }
        Ok(out)
    }

    fn called(&self) -> bool {
        self.calls > 0 || self.open.is_some()
    }
}

mod grammar;
#[cfg(test)]
mod tests;
