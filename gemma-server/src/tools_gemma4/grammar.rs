//! The constraint of a required or named Gemma 4 call (a Lark grammar built from the tools'
//! schemas, in Gemma 4's argument syntax) and the check of a parsed call's arguments against
//! its schema, for what the grammar cannot say and for `auto` replies.
#![forbid(unsafe_code)]

use super::{argument, dictsort, show, Out, MAX_SCHEMA_DEPTH};
use crate::tools::Tool;
use gemma_gguf::tool_call::{STRING_DELIM, TOOL_CALL_END, TOOL_CALL_START};
use serde_json::Value;

/// The text of a string between `<|"|>`s: anything without `<|"|>` in it. A regular expression
/// of the strings that avoid that word (each alternative a path of its automaton: `L` loops
/// back to "`<` seen", `E` leaves it, the tail ends inside a partial delimiter).
const STRING_BODY: &str = r#"(?:[^<]|<(?:<|\|<|\|"<|\|"\|<)*(?:[^|<]|\|[^"<]|\|"[^|<]|\|"\|[^<>]))*(?:<(?:<|\|<|\|"<|\|"\|<)*(?:\||\|"|\|"\|)?)?"#;

/// The grammar of one call of one of `tools`, arguments as their schemas say (see
/// [`Grammar::value`]); llguidance's Lark. Gemma 4's `<|tool_call>`, `<|"|>` … are
/// USER_DEFINED tokens in llama.cpp's converter's vocabulary, so they match as their text.
pub(super) fn grammar(tools: &[&Tool]) -> String {
    let mut g = Grammar::default();
    let mut alts = Vec::new();
    for t in tools {
        let args = g.object_or_any(&t.parameters, 0);
        let open = lark_string(&format!("{TOOL_CALL_START}call:{}", t.name));
        alts.push(g.rule(format!("{open} {args} {}", lark_string(TOOL_CALL_END))));
    }
    let q = r#"<\|"\|>"#;
    format!(
        "start: {}\n{}\n\
         STR: /{q}{STRING_BODY}{q}/\n\
         INT: /-?(0|[1-9][0-9]*)/\n\
         NUM: /-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?/\n\
         BOOL: \"true\" | \"false\"\n\
         NULL: \"null\"\n\
         KEY: /[A-Za-z_][A-Za-z0-9_]*/\n\
         gval: gobj | garr | STR | NUM | BOOL | NULL\n\
         gobj: \"{{\" (KEY \":\" gval (\",\" KEY \":\" gval)*)? \"}}\"\n\
         garr: \"[\" (gval (\",\" gval)*)? \"]\"\n",
        alts.join(" | "),
        g.rules.join("\n")
    )
}

/// A Lark string literal (JSON escapes).
fn lark_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Rules of a grammar under construction.
#[derive(Default)]
struct Grammar {
    rules: Vec<String>,
}

impl Grammar {
    fn rule(&mut self, body: String) -> String {
        let name = format!("r{}", self.rules.len());
        self.rules.push(format!("{name}: {body}"));
        name
    }

    /// An expression of the values `schema` allows, in Gemma 4's argument syntax: `type`
    /// (one or a list), `enum`, `const`, `anyOf`/`oneOf`, objects with `properties` (their
    /// keys in the template's sorted order, `required` ones always there, no others),
    /// `items`. What it cannot say (ranges, lengths, patterns, `$ref`) is left open here and
    /// checked after parsing where the check covers it.
    fn value(&mut self, schema: &Value, depth: usize) -> String {
        let Value::Object(o) = schema else { return "gval".into() };
        if depth > MAX_SCHEMA_DEPTH {
            return "gval".into();
        }
        if let Some(Value::Array(vals)) = o.get("enum") {
            return alternatives(vals.iter().map(literal).collect());
        }
        if let Some(c) = o.get("const") {
            return literal(c);
        }
        if let Some(Value::Array(any)) = o.get("anyOf").or_else(|| o.get("oneOf")) {
            let alts = any.iter().map(|s| self.value(s, depth + 1)).collect();
            return alternatives(alts);
        }
        let types: Vec<&str> = match o.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ if o.contains_key("properties") => vec!["object"],
            _ => return "gval".into(),
        };
        let alts = types
            .into_iter()
            .map(|t| match t {
                "string" => "STR".to_string(),
                "integer" => "INT".to_string(),
                "number" => "NUM".to_string(),
                "boolean" => "BOOL".to_string(),
                "null" => "NULL".to_string(),
                "array" => {
                    let item = o.get("items").map_or_else(|| "gval".to_string(), |i| self.value(i, depth + 1));
                    self.rule(format!("\"[\" ({item} (\",\" {item})*)? \"]\""))
                }
                "object" => self.object_or_any(schema, depth),
                _ => "gval".to_string(),
            })
            .collect();
        alternatives(alts)
    }

    /// An object with the schema's properties; any object when it names none.
    fn object_or_any(&mut self, schema: &Value, depth: usize) -> String {
        let props = match schema.get("properties") {
            Some(Value::Object(p)) if !p.is_empty() => p,
            _ if schema.get("additionalProperties") == Some(&Value::Bool(false)) => return "\"{}\"".into(),
            _ => return "gobj".into(),
        };
        let required: Vec<&str> =
            schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        let entries = dictsort(props);
        let n = entries.len();
        // after[i]: properties i.. once one was written (each after a comma);
        // first[i]: properties i.. before any. A `None` matches nothing more.
        let (mut after, mut first): (Vec<Option<String>>, Vec<Option<String>>) = (vec![None; n + 1], vec![None; n + 1]);
        for (i, (key, sub)) in entries.into_iter().enumerate().rev() {
            let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let key_text = if bare { format!("{key}:") } else { format!("{STRING_DELIM}{key}{STRING_DELIM}:") };
            let p = format!("{} {}", lark_string(&key_text), self.value(sub, depth + 1));
            let next = after[i + 1].clone().unwrap_or_default();
            if required.contains(&key.as_str()) {
                after[i] = Some(self.rule(format!("\",\" {p} {next}")));
                first[i] = Some(self.rule(format!("{p} {next}")));
            } else {
                after[i] = Some(self.rule(format!("(\",\" {p})? {next}")));
                first[i] = Some(match &first[i + 1] {
                    Some(f) => self.rule(format!("{p} {next} | {f}")),
                    None => self.rule(format!("({p} {next})?")),
                });
            }
        }
        let body = first[0].clone().unwrap_or_default();
        self.rule(format!("\"{{\" {body} \"}}\""))
    }
}

/// One value as a Lark literal, written as the template writes arguments.
fn literal(v: &Value) -> String {
    let mut out = Out::default();
    argument(v, false, &mut out);
    lark_string(&show(&out.0 .0))
}

fn alternatives(alts: Vec<String>) -> String {
    match alts.len() {
        0 => "gval".into(),
        1 => alts.into_iter().next().unwrap_or_default(),
        _ => format!("({})", alts.join(" | ")),
    }
}

/// Whether `v` fits `schema` in what the check covers (see the module doc); the error names
/// the place (`arguments.city`).
pub(super) fn check(schema: &Value, v: &Value, path: &str, depth: usize) -> Result<(), String> {
    let Value::Object(s) = schema else { return Ok(()) };
    if depth > MAX_SCHEMA_DEPTH {
        return Ok(());
    }
    if let Some(Value::Array(vals)) = s.get("enum") {
        if !vals.contains(v) {
            return Err(format!("{path} = {v} is not one of {}", Value::Array(vals.clone())));
        }
    }
    if let Some(c) = s.get("const").filter(|c| *c != v) {
        return Err(format!("{path} = {v}, the schema's const is {c}"));
    }
    if let Some(Value::Array(any)) = s.get("anyOf").or_else(|| s.get("oneOf")) {
        if !any.iter().any(|a| check(a, v, path, depth + 1).is_ok()) {
            return Err(format!("{path} = {v} fits none of the schema's alternatives"));
        }
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let is = |t: &str| match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    };
    if !types.is_empty() && !types.iter().any(|t| is(t)) {
        return Err(format!("{path} = {v} is not of type {}", types.join(" or ")));
    }
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            for r in s.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                if !m.contains_key(r) {
                    return Err(format!("{path}.{r} is required"));
                }
            }
            for (k, val) in m {
                match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
                    (Some(sub), _) => check(sub, val, &format!("{path}.{k}"), depth + 1)?,
                    (None, Some(Value::Bool(false))) => return Err(format!("{path}.{k} is not a parameter")),
                    (None, Some(extra @ Value::Object(_))) => check(extra, val, &format!("{path}.{k}"), depth + 1)?,
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = s.get("items") {
                for (i, x) in items.iter().enumerate() {
                    check(item, x, &format!("{path}[{i}]"), depth + 1)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}
