//! Gemma 4's native tool calls in model output, parsed into a name and JSON arguments.
//!
//! Gemma 4 writes a call as `<|tool_call>call:NAME{ARGS}<tool_call|>`, the format its
//! official chat template renders for a past call (`tests/data/tokenizer/gemma4_chat_template.jinja`,
//! the `tool_calls` branch and its `format_argument` macro with `escape_keys=False`). ARGS is
//! `key:value` pairs separated by commas, keys bare, and values:
//! - strings between two `<|"|>` tokens, taken verbatim (no escapes: the delimiter is a token
//!   the text cannot contain);
//! - `true`, `false`; numbers as Python prints them (`3`, `-2.5`, `1e-05`);
//! - `{k:v,…}` objects with bare keys, `[v,…]` arrays;
//! - `None`/`none`/`null` (what Jinja prints for a null) as JSON `null`.
//!
//! Also accepted, since models drift toward JSON: keys written `<|"|>key<|"|>` or as JSON
//! strings, JSON strings as values, and whitespace between items. Anything else is an
//! [`Error::ToolCall`] with the byte offset where parsing stopped: a call cut off before its
//! `<tool_call|>` (generation stopped early), a missing name or brace, an unterminated
//! string, a duplicate key, trailing text inside the call, a number JSON cannot hold.
//!
//! [`parse_tool_calls`] splits a whole reply into its text and its calls;
//! [`tool_call_prefix_at`] tells a streaming caller where text that may still turn into a
//! call begins, so it can hold that text back.
#![forbid(unsafe_code)]

use crate::{Error, Result};
use std::fmt::Write;

/// Opens a tool call (a token in Gemma 4's vocabulary).
pub const TOOL_CALL_START: &str = "<|tool_call>";
/// Closes a tool call.
pub const TOOL_CALL_END: &str = "<tool_call|>";
/// Delimits a string inside a call.
pub const STRING_DELIM: &str = "<|\"|>";
/// What comes between [`TOOL_CALL_START`] and the function's name.
const CALL_PREFIX: &str = "call:";
/// Nesting of objects and arrays a call may have: enough for any real arguments, and a
/// bound on the parser's recursion for hostile output.
pub const MAX_DEPTH: usize = 64;

/// One call: the function's name and its arguments as a compact JSON object (keys in the
/// order the model wrote them), as OpenAI's `tool_calls[].function.arguments` carries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: String,
}

/// A reply split into its text and its tool calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedReply {
    /// The reply without its calls (text before, between and after them, joined).
    pub content: String,
    pub calls: Vec<ToolCall>,
}

/// Splits a model's reply (decoded with its special tokens as text) into text and calls.
/// An error for a malformed call, or one cut off before [`TOOL_CALL_END`].
pub fn parse_tool_calls(reply: &str) -> Result<ParsedReply> {
    let mut out = ParsedReply::default();
    let mut pos = 0;
    while let Some(found) = reply[pos..].find(TOOL_CALL_START) {
        let start = pos + found;
        out.content.push_str(&reply[pos..start]);
        let body_start = start + TOOL_CALL_START.len();
        let Some(len) = reply[body_start..].find(TOOL_CALL_END) else {
            return Err(err(start, format!("{TOOL_CALL_START} without {TOOL_CALL_END}: the call is cut off")));
        };
        let body = &reply[body_start..body_start + len];
        out.calls.push(parse_body(body, body_start)?);
        pos = body_start + len + TOOL_CALL_END.len();
    }
    out.content.push_str(&reply[pos..]);
    Ok(out)
}

/// One call's text between the markers, `call:NAME{…}`.
pub fn parse_tool_call(body: &str) -> Result<ToolCall> {
    parse_body(body, 0)
}

/// Where, in text streamed so far, a tool call may be starting: the offset of an
/// unterminated [`TOOL_CALL_START`], or of a suffix that is a prefix of it (`<|tool`).
/// `None`: all of the text is final, none of it can become part of a call.
pub fn tool_call_prefix_at(text: &str) -> Option<usize> {
    let mut pos = 0;
    while let Some(found) = text[pos..].find(TOOL_CALL_START) {
        let start = pos + found;
        match text[start..].find(TOOL_CALL_END) {
            Some(len) => pos = start + len + TOOL_CALL_END.len(),
            None => return Some(start),
        }
    }
    let tail = &text[pos..];
    (1..TOOL_CALL_START.len())
        .rev()
        .find(|&n| {
            tail.len() >= n
                && tail.is_char_boundary(tail.len() - n)
                && TOOL_CALL_START.starts_with(&tail[tail.len() - n..])
        })
        .map(|n| text.len() - n)
}

fn err(at: usize, why: impl Into<String>) -> Error {
    Error::ToolCall { at, why: why.into() }
}

fn parse_body(body: &str, offset: usize) -> Result<ToolCall> {
    let mut p = Parser { text: body, pos: 0, offset };
    p.skip_space();
    if !p.eat(CALL_PREFIX) {
        return Err(p.error(format!("expected {CALL_PREFIX:?} and the function's name")));
    }
    let name_len = p.rest().find('{').ok_or_else(|| p.error("expected '{' after the function's name"))?;
    let name = p.rest()[..name_len].trim();
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || "{}[],:<>\"".contains(c)) {
        return Err(p.error(format!("{name:?} is not a function name")));
    }
    let name = name.to_owned();
    p.pos += name_len;
    let mut arguments = String::new();
    p.object(&mut arguments, 0)?;
    p.skip_space();
    if !p.rest().is_empty() {
        return Err(p.error("text after the arguments' closing '}'"));
    }
    Ok(ToolCall { name, arguments })
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// Where `text` starts in the reply, for error offsets.
    offset: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn error(&self, why: impl Into<String>) -> Error {
        err(self.offset + self.pos, why)
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, s: &str) -> bool {
        let ok = self.rest().starts_with(s);
        if ok {
            self.pos += s.len();
        }
        ok
    }

    fn expect(&mut self, s: &str) -> Result<()> {
        self.skip_space();
        match self.eat(s) {
            true => Ok(()),
            false => Err(self.error(format!("expected {s:?}"))),
        }
    }

    /// `{k:v,…}` as a JSON object into `out`.
    fn object(&mut self, out: &mut String, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH}")));
        }
        self.expect("{")?;
        out.push('{');
        let mut keys: Vec<String> = Vec::new();
        self.skip_space();
        if self.eat("}") {
            out.push('}');
            return Ok(());
        }
        loop {
            self.skip_space();
            let at = self.pos;
            let key = self.key()?;
            if keys.contains(&key) {
                self.pos = at;
                return Err(self.error(format!("key {key:?} given twice")));
            }
            if !keys.is_empty() {
                out.push(',');
            }
            json_string(&key, out);
            out.push(':');
            keys.push(key);
            self.expect(":")?;
            self.value(out, depth + 1)?;
            self.skip_space();
            if self.eat("}") {
                out.push('}');
                return Ok(());
            }
            if !self.eat(",") {
                return Err(self.error("expected ',' or '}' after a value"));
            }
        }
    }

    /// A key: `<|"|>key<|"|>`, a JSON string, or bare text up to ':'.
    fn key(&mut self) -> Result<String> {
        if self.rest().starts_with(STRING_DELIM) || self.rest().starts_with('"') {
            return self.string();
        }
        let len = self.rest().find(|c: char| c == ':' || "{}[],\"".contains(c)).unwrap_or(self.rest().len());
        let key = self.rest()[..len].trim_end();
        if key.is_empty() || !self.rest()[len..].starts_with(':') {
            return Err(self.error("expected a key and ':'"));
        }
        let key = key.to_owned();
        self.pos += len;
        Ok(key)
    }

    fn value(&mut self, out: &mut String, depth: usize) -> Result<()> {
        self.skip_space();
        let rest = self.rest();
        if rest.starts_with('{') {
            return self.object(out, depth);
        }
        if rest.starts_with('[') {
            return self.array(out, depth);
        }
        if rest.starts_with(STRING_DELIM) || rest.starts_with('"') {
            let s = self.string()?;
            json_string(&s, out);
            return Ok(());
        }
        let len = rest.find(|c: char| c.is_whitespace() || ",}]".contains(c)).unwrap_or(rest.len());
        let word = &rest[..len];
        match word {
            "true" | "True" => out.push_str("true"),
            "false" | "False" => out.push_str("false"),
            "null" | "None" | "none" => out.push_str("null"),
            "" => return Err(self.error("expected a value")),
            w if is_json_number(w) => out.push_str(w),
            w => return Err(self.error(format!("{w:?} is not a value (strings go between {STRING_DELIM})"))),
        }
        self.pos += len;
        Ok(())
    }

    fn array(&mut self, out: &mut String, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH}")));
        }
        self.expect("[")?;
        out.push('[');
        self.skip_space();
        if self.eat("]") {
            out.push(']');
            return Ok(());
        }
        let mut first = true;
        loop {
            if !first {
                out.push(',');
            }
            first = false;
            self.value(out, depth + 1)?;
            self.skip_space();
            if self.eat("]") {
                out.push(']');
                return Ok(());
            }
            if !self.eat(",") {
                return Err(self.error("expected ',' or ']' after a value"));
            }
        }
    }

    /// A `<|"|>`-delimited string (verbatim) or a JSON string (escapes decoded).
    fn string(&mut self) -> Result<String> {
        let at = self.pos;
        if self.eat(STRING_DELIM) {
            let Some(len) = self.rest().find(STRING_DELIM) else {
                self.pos = at;
                return Err(self.error(format!("string without its closing {STRING_DELIM}")));
            };
            let s = self.rest()[..len].to_owned();
            self.pos += len + STRING_DELIM.len();
            return Ok(s);
        }
        self.pos += 1; // the opening '"'
        let mut s = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(s);
                }
                '\\' => {
                    let escaped = match chars.next().map(|(_, e)| e) {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('u') => {
                            let hex: String = chars.by_ref().take(4).map(|(_, h)| h).collect();
                            let unit = (hex.len() == 4).then(|| u32::from_str_radix(&hex, 16).ok()).flatten();
                            // Surrogates (pairs included) are left out: real arguments do not need them.
                            match unit.and_then(char::from_u32) {
                                Some(c) => c,
                                None => return Err(err(self.offset + self.pos + i, "bad \\u escape")),
                            }
                        }
                        _ => return Err(err(self.offset + self.pos + i, "bad escape in a JSON string")),
                    };
                    s.push(escaped);
                }
                c => s.push(c),
            }
        }
        self.pos = at;
        Err(self.error("string without its closing '\"'"))
    }
}

/// JSON's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Appends `s` as a JSON string literal.
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall { name: name.into(), arguments: arguments.into() }
    }

    #[test]
    fn the_template_format() {
        let q = STRING_DELIM;
        let body = format!("call:get_weather{{city:{q}Tokyo, \"JP\"{q},days:3,metric:true,limit:-2.5e-3,tags:[{q}a{q},1],opts:{{deep:{{x:None}}}}}}");
        assert_eq!(
            parse_tool_call(&body).unwrap(),
            call(
                "get_weather",
                r#"{"city":"Tokyo, \"JP\"","days":3,"metric":true,"limit":-2.5e-3,"tags":["a",1],"opts":{"deep":{"x":null}}}"#
            )
        );
        assert_eq!(parse_tool_call("call:ping{}").unwrap(), call("ping", "{}"));
        // Strings are verbatim: braces, commas, colons, newlines and backslashes inside.
        let body = format!("call:f{{code:{q}fn x() {{ a: [1, 2] }}\\n{q}}}");
        assert_eq!(parse_tool_call(&body).unwrap(), call("f", r#"{"code":"fn x() { a: [1, 2] }\\n"}"#));
    }

    #[test]
    fn json_leaning_output_is_accepted() {
        let body = r#" call: search { "query" : "rust \"gguf\"\u00e9" , "n": 0, "x": [ ] } "#;
        assert_eq!(parse_tool_call(body).unwrap(), call("search", r#"{"query":"rust \"gguf\"é","n":0,"x":[]}"#));
        let q = STRING_DELIM;
        assert_eq!(parse_tool_call(&format!("call:f{{{q}a b{q}:False}}")).unwrap(), call("f", r#"{"a b":false}"#));
    }

    #[test]
    fn replies_split_into_text_and_calls() {
        let q = STRING_DELIM;
        let reply = format!(
            "Let me check.{TOOL_CALL_START}call:a{{x:1}}{TOOL_CALL_END}{TOOL_CALL_START}call:b{{y:{q}z{q}}}{TOOL_CALL_END} done"
        );
        let parsed = parse_tool_calls(&reply).unwrap();
        assert_eq!(parsed.content, "Let me check. done");
        assert_eq!(parsed.calls, [call("a", r#"{"x":1}"#), call("b", r#"{"y":"z"}"#)]);
        assert_eq!(parse_tool_calls("no calls").unwrap(), ParsedReply { content: "no calls".into(), calls: vec![] });
    }

    /// One case per defect: each a typed error, none a panic.
    #[test]
    fn malformed_calls_are_errors() {
        let q = STRING_DELIM;
        let cases: Vec<(&str, String)> = vec![
            ("cut off", format!("{TOOL_CALL_START}call:f{{x:1")),
            ("no call: prefix", format!("{TOOL_CALL_START}f{{x:1}}{TOOL_CALL_END}")),
            ("no brace", format!("{TOOL_CALL_START}call:f{TOOL_CALL_END}")),
            ("empty name", format!("{TOOL_CALL_START}call:{{}}{TOOL_CALL_END}")),
            ("name with space", format!("{TOOL_CALL_START}call:a b{{}}{TOOL_CALL_END}")),
            ("unterminated string", format!("{TOOL_CALL_START}call:f{{x:{q}abc}}{TOOL_CALL_END}")),
            ("unterminated JSON string", format!("{TOOL_CALL_START}call:f{{x:\"abc}}{TOOL_CALL_END}")),
            ("bare word value", format!("{TOOL_CALL_START}call:f{{x:Tokyo}}{TOOL_CALL_END}")),
            ("missing value", format!("{TOOL_CALL_START}call:f{{x:}}{TOOL_CALL_END}")),
            ("missing colon", format!("{TOOL_CALL_START}call:f{{x}}{TOOL_CALL_END}")),
            ("duplicate key", format!("{TOOL_CALL_START}call:f{{x:1,x:2}}{TOOL_CALL_END}")),
            ("trailing comma", format!("{TOOL_CALL_START}call:f{{x:1,}}{TOOL_CALL_END}")),
            ("unclosed array", format!("{TOOL_CALL_START}call:f{{x:[1,2}}{TOOL_CALL_END}")),
            ("text after", format!("{TOOL_CALL_START}call:f{{}}x{TOOL_CALL_END}")),
            ("NaN", format!("{TOOL_CALL_START}call:f{{x:nan}}{TOOL_CALL_END}")),
            ("infinity", format!("{TOOL_CALL_START}call:f{{x:inf}}{TOOL_CALL_END}")),
            ("leading zero", format!("{TOOL_CALL_START}call:f{{x:01}}{TOOL_CALL_END}")),
            ("bad escape", format!("{TOOL_CALL_START}call:f{{x:\"\\q\"}}{TOOL_CALL_END}")),
            ("too deep", format!("{TOOL_CALL_START}call:f{{x:{}{}}}{TOOL_CALL_END}", "[".repeat(100), "]".repeat(100))),
            ("very deep", format!("{TOOL_CALL_START}call:f{{x:{}}}{TOOL_CALL_END}", "[".repeat(1_000_000))),
        ];
        for (name, reply) in &cases {
            let e = parse_tool_calls(reply).unwrap_err();
            println!("{name}: {e}");
            assert!(matches!(e, Error::ToolCall { at, .. } if at <= reply.len()), "{name}: {e}");
        }
    }

    /// Calls as Gemma 4's official template renders them (its `format_argument` macro, run
    /// by minijinja on the fixture) parse back into the arguments given.
    #[test]
    fn calls_rendered_by_the_official_template_parse_back() {
        let mut env = minijinja::Environment::new();
        env.add_template("t", include_str!("../../tests/data/tokenizer/gemma4_chat_template.jinja")).unwrap();
        let args = minijinja::context! {
            city => "Tokyo, \"JP\" {x: [1]}",
            days => 3,
            ratio => 2.5,
            metric => true,
            nothing => (),
            tags => vec!["a", "b"],
            nested => minijinja::context! { deep => minijinja::context! { n => -1 }, empty => Vec::<i32>::new() },
        };
        let one = minijinja::context! { function => minijinja::context! { name => "get_weather", arguments => args } };
        let messages = vec![
            minijinja::context! { role => "user", content => "weather?" },
            minijinja::context! { role => "assistant", tool_calls => vec![one.clone(), one] },
        ];
        let rendered =
            env.get_template("t").unwrap().render(minijinja::context! { messages, bos_token => "<bos>" }).unwrap();
        println!("{rendered}");
        let model_turn = rendered.split("<|turn>model\n").nth(1).unwrap();
        let parsed = parse_tool_calls(model_turn).unwrap();
        assert_eq!(parsed.content, "<turn|>\n");
        // The template writes keys sorted (dictsort); the JSON keeps the model's order.
        let expected = call(
            "get_weather",
            r#"{"city":"Tokyo, \"JP\" {x: [1]}","days":3,"metric":true,"nested":{"deep":{"n":-1},"empty":[]},"nothing":null,"ratio":2.5,"tags":["a","b"]}"#,
        );
        assert_eq!(parsed.calls, [expected.clone(), expected]);
    }

    /// Hostile or random model output: an error or a parse, never a panic.
    #[test]
    fn random_output_never_panics() {
        use rand::{Rng, SeedableRng};
        let parts = [
            TOOL_CALL_START,
            TOOL_CALL_END,
            STRING_DELIM,
            "call:",
            "f",
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"",
            "\\",
            "u00",
            "1",
            "-",
            ".",
            "e",
            "true",
            "None",
            " ",
            "é",
            "😀",
            "<|",
            "|>",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (mut ok, mut errors) = (0, 0);
        for _ in 0..20_000 {
            let n = rng.gen_range(0..30);
            let text: String = (0..n).map(|_| parts[rng.gen_range(0..parts.len())]).collect();
            match parse_tool_calls(&text) {
                Ok(_) => ok += 1,
                Err(Error::ToolCall { at, .. }) => {
                    assert!(at <= text.len());
                    errors += 1;
                }
                Err(e) => panic!("{e}"),
            }
            let _ = tool_call_prefix_at(&text);
        }
        println!("{ok} parsed, {errors} errors");
    }

    #[test]
    fn streaming_holds_back_what_may_become_a_call() {
        assert_eq!(tool_call_prefix_at("hello"), None);
        assert_eq!(tool_call_prefix_at("hello <|tool"), Some(6));
        assert_eq!(tool_call_prefix_at("hello <"), Some(6));
        assert_eq!(tool_call_prefix_at("a<|tool_call>call:f{x:"), Some(1));
        let done = format!("a{TOOL_CALL_START}call:f{{}}{TOOL_CALL_END}b");
        assert_eq!(tool_call_prefix_at(&done), None);
        assert_eq!(tool_call_prefix_at(&format!("{done}<|")), Some(done.len()));
        assert_eq!(tool_call_prefix_at("é"), None);
    }
}
