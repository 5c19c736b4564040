//! jsonschema's findings in handoff's words: the JSON path of each problem,
//! and what is wrong, without quoting the value (it may derive from a
//! secret). Also: how a parameter's text reads as the type its schema wants.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

/// One way an instance misses its schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// A JSON path such as `$.items[0].state`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` {}", self.path, self.message)
    }
}

/// At most this many problems are reported for one value.
const MAX_PROBLEMS: usize = 5;

pub fn problems(validator: &jsonschema::Validator, instance: &Value) -> Vec<Problem> {
    validator
        .iter_errors(instance)
        .take(MAX_PROBLEMS)
        .map(|e| Problem {
            path: json_path(e.instance_path().as_str()),
            message: words(&e),
        })
        .collect()
}

/// `/items/0/state` as `$.items[0].state`.
pub fn json_path(pointer: &str) -> String {
    let mut out = String::from("$");
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if token.parse::<usize>().is_ok() {
            out.push_str(&format!("[{token}]"));
        } else if token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            out.push('.');
            out.push_str(&token);
        } else {
            out.push_str(&format!(
                "[{}]",
                serde_json::to_string(&token).unwrap_or_default()
            ));
        }
    }
    out
}

/// What is wrong, from the schema's side only.
pub fn words(e: &jsonschema::ValidationError) -> String {
    let list = |v: &Value| match v {
        Value::Array(items) => items
            .iter()
            .map(|i| {
                format!(
                    "`{}`",
                    i.as_str().map_or_else(|| i.to_string(), str::to_string)
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => format!("`{other}`"),
    };
    match e.kind() {
        ValidationErrorKind::Type { kind } => {
            let wanted = match kind {
                TypeKind::Single(t) => format!("{t}"),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| format!("{t}"))
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            format!("must be {} {wanted}", article(&wanted))
        }
        ValidationErrorKind::Required { property } => format!(
            "lacks the required property `{}`",
            property.as_str().unwrap_or("?")
        ),
        ValidationErrorKind::Enum { options } => format!("must be one of {}", list(options)),
        ValidationErrorKind::Constant { expected_value } => {
            format!("must be {}", list(expected_value))
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => format!(
            "has properties its schema does not allow: {}",
            unexpected
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ValidationErrorKind::Minimum { limit } => format!("must be at least {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("must be at most {limit}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("must be more than {limit}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        ValidationErrorKind::MinLength { limit } => {
            format!("must be at least {limit} characters long")
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("must be at most {limit} characters long")
        }
        ValidationErrorKind::MinItems { limit } => format!("must have at least {limit} items"),
        ValidationErrorKind::MaxItems { limit } => format!("must have at most {limit} items"),
        ValidationErrorKind::Pattern { pattern } => format!("must match `{pattern}`"),
        ValidationErrorKind::Format { format } => format!("must be a valid `{format}`"),
        ValidationErrorKind::OneOfNotValid { .. } => {
            "matches none of the schemas its `oneOf` lists".to_string()
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            "matches more than one of the schemas its `oneOf` lists".to_string()
        }
        ValidationErrorKind::AnyOf { .. } => {
            "matches none of the schemas its `anyOf` lists".to_string()
        }
        ValidationErrorKind::UniqueItems => "must not repeat an item".to_string(),
        ValidationErrorKind::Referencing(r) => format!("has a `$ref` that does not resolve: {r}"),
        _ => format!("does not match its schema (`{}`)", e.kind().keyword()),
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The types a schema allows, after `$ref`s: what a parameter's text is read as.
pub fn types_of(
    api: &crate::language::openapi::Api,
    loc: &crate::language::openapi::Loc,
) -> Vec<String> {
    let Ok((_, schema)) = api.resolve(loc) else {
        return Vec::new();
    };
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// A parameter's text as the JSON value its schema's type reads: `7` as a
/// number where the schema wants an integer, `true` as a boolean. Text that
/// does not read as the type stays text, so the validator says what is wrong.
pub fn coerce(text: &str, types: &[String]) -> Value {
    for t in types {
        match t.as_str() {
            "integer" => {
                if let Ok(i) = text.trim().parse::<i64>() {
                    return Value::from(i);
                }
            }
            "number" => {
                if let Some(n) = text
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    return Value::Number(n);
                }
            }
            "boolean" => match text.trim() {
                "true" => return Value::Bool(true),
                "false" => return Value::Bool(false),
                _ => {}
            },
            _ => {}
        }
    }
    Value::String(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_read_as_json_paths() {
        assert_eq!(json_path(""), "$");
        assert_eq!(json_path("/items/0/state"), "$.items[0].state");
        assert_eq!(json_path("/a~1b/x y"), "$[\"a/b\"][\"x y\"]");
    }

    #[test]
    fn text_reads_as_the_schema_type() {
        let int = ["integer".to_string()];
        assert_eq!(coerce("7", &int), Value::from(7));
        assert_eq!(coerce("seven", &int), Value::from("seven"));
        assert_eq!(coerce("true", &["boolean".into()]), Value::Bool(true));
        assert_eq!(coerce("7", &["string".into()]), Value::from("7"));
    }
}
