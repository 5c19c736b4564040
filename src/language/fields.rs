//! Field types and the coercion every write goes through.
//!
//! A flow declares its data fields up front, as a K2 process does. Values are
//! held as JSON; [`FieldType::coerce`] turns whatever a template, an input or a
//! response produced into the declared type, or says why it cannot.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::language::source::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Text,
    Number,
    Boolean,
    Json,
    /// An ordered set of HTTP headers, name to value.
    Headers,
}

pub const ALL_TYPES: [FieldType; 5] = [
    FieldType::Text,
    FieldType::Number,
    FieldType::Boolean,
    FieldType::Json,
    FieldType::Headers,
];

#[derive(Debug, Clone)]
pub struct FieldDecl {
    pub name: String,
    pub ty: FieldType,
    /// Set by whoever starts a run (a caller, or the command line);
    /// required unless there is a default.
    pub input: bool,
    pub secret: bool,
    /// Configuration: read from this environment variable. Only the
    /// operator sets it; see [`FieldDecl::caller_settable`].
    pub env: Option<String>,
    /// An empty value is accepted even when the field is required or secret.
    pub allow_empty: bool,
    pub default: Option<Value>,
    pub description: Option<String>,
    pub span: Span,
}

impl FieldDecl {
    /// Whether a caller (the API, a hook, a batch row, a test case) may set
    /// it. An `env:` field is the operator's configuration: only the
    /// command line, which is the operator's, may set it besides.
    pub fn caller_settable(&self) -> bool {
        self.input
    }

    pub fn is_required(&self) -> bool {
        (self.input || self.env.is_some()) && self.default.is_none()
    }
}

/// The field `on_error` fills with what went wrong: `step`, `kind`, `status`,
/// `message` and `hint`. Declared by the analyzer when a step has `on_error`.
pub const ERROR_FIELD: &str = "error";

pub const TYPE_NAMES: [&str; 5] = ["text", "number", "boolean", "json", "headers"];

impl FieldType {
    pub fn parse(name: &str) -> Option<FieldType> {
        Some(match name {
            "text" => FieldType::Text,
            "number" => FieldType::Number,
            "boolean" => FieldType::Boolean,
            "json" => FieldType::Json,
            "headers" => FieldType::Headers,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::Json => "json",
            FieldType::Headers => "headers",
        }
    }

    /// The value a field of this type holds before anything is written to it.
    pub fn empty(self) -> Value {
        match self {
            FieldType::Text => Value::String(String::new()),
            FieldType::Number => Value::from(0),
            FieldType::Boolean => Value::Bool(false),
            FieldType::Json => Value::Null,
            FieldType::Headers => Value::Object(Map::new()),
        }
    }

    /// Converts `value` to this type. The error says what was wrong, but never
    /// quotes the value: it may be a secret.
    pub fn coerce(self, value: Value) -> Result<Value, String> {
        self.coerce_showing(value, false)
    }

    /// Like [`FieldType::coerce`]; with `show`, the error also quotes what it
    /// got (a short, escaped excerpt). Only for values that are not secret.
    pub fn coerce_showing(self, value: Value, show: bool) -> Result<Value, String> {
        let quoted = show.then(|| quote(&value));
        self.coerce_inner(value).map_err(|e| match quoted {
            Some(q) => format!("{e}: {q}"),
            None => e,
        })
    }

    fn coerce_inner(self, value: Value) -> Result<Value, String> {
        match (self, value) {
            (FieldType::Json, v) => Ok(v),
            (FieldType::Text, Value::String(s)) => Ok(Value::String(s)),
            (FieldType::Text, Value::Number(n)) => Ok(Value::String(n.to_string())),
            (FieldType::Text, Value::Bool(b)) => Ok(Value::String(b.to_string())),
            (FieldType::Text, Value::Null) => Ok(Value::String(String::new())),
            (FieldType::Number, Value::Number(n)) => Ok(Value::Number(normalize(n))),
            (FieldType::Number, Value::String(s)) => parse_number(&s)
                .map(Value::Number)
                .ok_or_else(|| "expected a number, got text that is not one".to_string()),
            (FieldType::Boolean, Value::Bool(b)) => Ok(Value::Bool(b)),
            (FieldType::Boolean, Value::String(s)) => {
                match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" => Ok(Value::Bool(true)),
                    "false" | "no" | "0" | "" => Ok(Value::Bool(false)),
                    _ => Err("expected a boolean (`true` or `false`), got other text".to_string()),
                }
            }
            (FieldType::Headers, Value::Object(map)) => {
                let mut out = Map::new();
                for (name, v) in map {
                    let v = match v {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => {
                            return Err(format!(
                                "header `{name}` must be text, got {}",
                                json_type_name(&other)
                            ));
                        }
                    };
                    out.insert(name, Value::String(v));
                }
                Ok(Value::Object(out))
            }
            (FieldType::Headers, Value::String(s)) if s.trim().is_empty() => {
                Ok(Value::Object(Map::new()))
            }
            (FieldType::Headers, Value::String(s)) => match serde_json::from_str::<Value>(&s) {
                Ok(v @ Value::Object(_)) => FieldType::Headers.coerce(v),
                _ => Err("expected headers (a mapping of names to text), got text".to_string()),
            },
            (ty, other) => Err(format!(
                "expected {}, got {}",
                article(ty),
                json_type_name(&other)
            )),
        }
    }

    /// Converts a command-line or environment string: JSON for `json` and
    /// `headers` fields when it parses, the text itself otherwise. With
    /// `show`, an error quotes the text.
    pub fn from_input(self, text: &str, show: bool) -> Result<Value, String> {
        match self {
            FieldType::Json => {
                Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())))
            }
            _ => self.coerce_showing(Value::String(text.to_string()), show),
        }
    }
}

fn article(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Text => "text",
        FieldType::Number => "a number",
        FieldType::Boolean => "a boolean",
        FieldType::Json => "JSON",
        FieldType::Headers => "headers (a mapping of names to text)",
    }
}

pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Whole floats become integers, so `tries + 1` stays `3`, not `3.0`.
fn normalize(n: Number) -> Number {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Number::from(f as i64),
        _ => n,
    }
}

fn parse_number(s: &str) -> Option<Number> {
    let s = s.trim();
    if let Ok(i) = s.parse::<i64>() {
        return Some(Number::from(i));
    }
    let f = s.parse::<f64>().ok().filter(|f| f.is_finite())?;
    Number::from_f64(f).map(normalize)
}

/// At most `chars` characters of `text`, cut at a character boundary: for
/// text read back from a store or a trace, which may hold anything.
pub fn clip(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// A value quoted for a message: at most 60 characters, control characters
/// escaped, in backticks.
pub fn quote(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut shown: String = text.chars().take(60).flat_map(char::escape_debug).collect();
    if text.chars().count() > 60 {
        shown.push('…');
    }
    format!("`{shown}`")
}

/// Text as a template or a URL would show a value: strings bare, the rest as JSON.
pub fn display_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The field a flow with a `wait_for` reads its resume URLs from:
/// `wait.url`, and `wait.urls.NAME` for each signal. Secret: a resume URL
/// is a credential for one wait.
pub const WAIT_FIELD: &str = "wait";

/// The keys of a field's declaration.
pub const FIELD_KEYS: [&str; 7] = [
    "type",
    "input",
    "secret",
    "env",
    "allow_empty",
    "default",
    "description",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coerces_and_rejects() {
        assert_eq!(FieldType::Number.coerce(json!("3")).unwrap(), json!(3));
        assert_eq!(FieldType::Number.coerce(json!(3.0)).unwrap(), json!(3));
        assert_eq!(FieldType::Text.coerce(json!(200)).unwrap(), json!("200"));
        assert!(FieldType::Number.coerce(json!("abc")).is_err());
        assert!(FieldType::Boolean.coerce(json!("maybe")).is_err());
        assert!(FieldType::Text.coerce(json!([1])).is_err());
        assert_eq!(
            FieldType::Headers.coerce(json!({"A": 1})).unwrap(),
            json!({"A": "1"})
        );
    }

    #[test]
    fn errors_never_quote_the_value() {
        let err = FieldType::Number.coerce(json!("hunter2")).unwrap_err();
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn errors_quote_a_value_when_asked() {
        let err = FieldType::Number
            .coerce_showing(json!("ten"), true)
            .unwrap_err();
        assert_eq!(err, "expected a number, got text that is not one: `ten`");
        let err = FieldType::Boolean
            .from_input("maybe\u{1b}", true)
            .unwrap_err();
        assert!(err.ends_with(": `maybe\\u{1b}`"), "{err}");
        assert!(quote(&json!("x".repeat(100))).ends_with("…`"));
    }
}
