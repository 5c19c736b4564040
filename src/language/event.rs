//! The shape of a trigger's event: each key the trigger reads, its type, and
//! whether it must be there. An event that does not fit starts no run.
//!
//! ```yaml
//! trigger:
//!   event:
//!     eventId:    text
//!     instanceId: text
//!     passed:     boolean                           # `"false"` (text) is refused
//!     tries:      { type: number, required: false }
//!     result:     { enum: [passed, failed] }
//!     startData:  object
//! ```
//!
//! Types are JSON's, strictly: a `boolean` is `true` or `false`, never the
//! text `"false"`, `"0"` or `"no"`; a `number` is a JSON number. `null` is
//! the same as a missing key. Keys the event has beyond these are ignored.

use indexmap::IndexMap;
use serde_json::{Value, json};

use crate::language::analyzer::Analyzer;
use crate::language::raw::{Node, NodeValue};
use crate::language::source::Span;

/// What a key's declaration takes, in its long form.
pub const KEY_KEYS: [&str; 4] = ["type", "enum", "required", "description"];

/// The types a key may have.
pub const TYPES: [&str; 5] = ["text", "number", "boolean", "object", "list"];

#[derive(Debug, Clone, PartialEq)]
pub enum EventType {
    Text,
    Number,
    Boolean,
    Object,
    List,
    /// One of these values (text or numbers), exactly.
    Enum(Vec<Value>),
}

impl EventType {
    fn name(&self) -> String {
        match self {
            EventType::Text => "text".into(),
            EventType::Number => "a number".into(),
            EventType::Boolean => "a boolean (true or false)".into(),
            EventType::Object => "an object".into(),
            EventType::List => "a list".into(),
            EventType::Enum(values) => {
                let shown: Vec<String> = values.iter().map(Value::to_string).collect();
                format!("one of {}", shown.join(", "))
            }
        }
    }

    fn fits(&self, value: &Value) -> bool {
        match self {
            EventType::Text => value.is_string(),
            EventType::Number => value.is_number(),
            EventType::Boolean => value.is_boolean(),
            EventType::Object => value.is_object(),
            EventType::List => value.is_array(),
            EventType::Enum(values) => values.contains(value),
        }
    }

    /// Whether a truth test of it is plain: `true`/`false`, or a number.
    pub fn tests_plainly(&self) -> bool {
        matches!(self, EventType::Boolean | EventType::Number)
    }

    fn schema(&self) -> Value {
        match self {
            EventType::Text => json!({ "type": "string" }),
            EventType::Number => json!({ "type": "number" }),
            EventType::Boolean => json!({ "type": "boolean" }),
            EventType::Object => json!({ "type": "object" }),
            EventType::List => json!({ "type": "array" }),
            EventType::Enum(values) => json!({ "enum": values }),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EventKey {
    pub ty: EventType,
    pub required: bool,
    pub description: Option<String>,
    pub span: Span,
}

/// The event's declared keys, in the order the flow lists them.
#[derive(Debug, Clone, Default)]
pub struct EventShape {
    pub keys: IndexMap<String, EventKey>,
}

impl EventShape {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<EventShape> {
        let Some(entries) = node.as_map() else {
            cx.error_help(
                node.span,
                format!(
                    "`trigger.event` maps the event's keys to their types, found {}",
                    node.type_name()
                ),
                "such as `event: { instanceId: text, passed: boolean }`",
            );
            return None;
        };
        let mut keys = IndexMap::new();
        let mut ok = true;
        for (key, decl) in entries {
            let Some(name) = key.as_str() else {
                cx.not_text(key, "an event key");
                ok = false;
                continue;
            };
            match parse_key(cx, name, decl) {
                Some(k) => {
                    keys.insert(
                        name.to_string(),
                        EventKey {
                            span: key.span,
                            ..k
                        },
                    );
                }
                None => ok = false,
            }
        }
        ok.then_some(EventShape { keys })
    }

    /// Whether a template reads of `var` (the event, a signal's data) only
    /// the keys this shape declares, by name; each stray read is reported,
    /// and each truth test of a value that may be text is warned of.
    pub fn reads_declared(
        &self,
        cx: &mut Analyzer,
        template: &crate::language::template::Template,
        var: &str,
        declared_in: &str,
    ) -> bool {
        let mut ok = true;
        for path in crate::language::paths::reads(&template.source, false) {
            if path[0] != var {
                continue;
            }
            let Some(key) = path.get(1) else {
                cx.error_help(
                    template.span,
                    format!("the template reads `{var}` whole"),
                    format!(
                        "read each key by name (`{var}.{}`), so each is declared and checked",
                        if var == "event" { "instanceId" } else { "name" }
                    ),
                );
                ok = false;
                continue;
            };
            match self.keys.get(key) {
                None => {
                    let help = crate::language::diagnostic::did_you_mean(
                        key,
                        self.keys.keys().map(String::as_str),
                    )
                    .unwrap_or_else(|| format!("declare it: `{key}: text` under `{declared_in}`"));
                    cx.error_help(
                        template.span,
                        format!(
                            "the template reads `{var}.{key}`, which `{declared_in}` does not declare"
                        ),
                        help,
                    );
                    ok = false;
                }
                Some(k) if path.len() > 2 && k.ty != EventType::Object => {
                    cx.error(
                        template.span,
                        format!(
                            "the template reads `{}`, but `{key}` is not declared an `object`",
                            path.join(".")
                        ),
                    );
                    ok = false;
                }
                Some(_) => {}
            }
        }
        for path in crate::language::paths::truth_tests(&template.source, false) {
            let plain = path[0] == var
                && path.len() == 2
                && self
                    .keys
                    .get(&path[1])
                    .is_some_and(|k| k.ty.tests_plainly());
            if !plain {
                let why = if var == "event" {
                    "an event's value may be text"
                } else {
                    "a signal's value may be text"
                };
                cx.truth_warning(template.span, &path.join("."), why);
            }
        }
        ok
    }

    /// Every way the event does not fit, each naming its key; no values
    /// are quoted, as an event may carry anything.
    pub fn check(&self, event: &Value) -> Result<(), Vec<String>> {
        let Some(map) = event.as_object() else {
            return Err(vec!["the event is a JSON object of keys to values".into()]);
        };
        let mut problems = Vec::new();
        for (name, key) in &self.keys {
            match map.get(name) {
                None | Some(Value::Null) if key.required => {
                    problems.push(format!("`{name}` is missing: it must be {}", key.ty.name()))
                }
                None | Some(Value::Null) => {}
                Some(v) if !key.ty.fits(v) => problems.push(format!(
                    "`{name}` must be {}, found {}",
                    key.ty.name(),
                    crate::language::fields::json_type_name(v)
                )),
                Some(_) => {}
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The event as a JSON Schema, for `GET /v1/flows` and senders.
    pub fn json_schema(&self) -> Value {
        let properties: serde_json::Map<String, Value> = self
            .keys
            .iter()
            .map(|(name, key)| {
                let mut schema = key.ty.schema();
                if let (Some(d), Some(o)) = (&key.description, schema.as_object_mut()) {
                    o.insert("description".into(), json!(d));
                }
                (name.clone(), schema)
            })
            .collect();
        let required: Vec<&String> = self
            .keys
            .iter()
            .filter(|(_, k)| k.required)
            .map(|(n, _)| n)
            .collect();
        json!({ "type": "object", "required": required, "properties": properties })
    }
}

fn parse_key(cx: &mut Analyzer, name: &str, node: &Node) -> Option<EventKey> {
    let bare = |ty| EventKey {
        ty,
        required: true,
        description: None,
        span: node.span,
    };
    if let Some(word) = node.as_str() {
        return Some(bare(type_named(cx, node, word)?));
    }
    let body = cx.body(node, &format!("event key `{name}`"), &KEY_KEYS, &[])?;
    let ty = match (body.get("type"), body.get("enum")) {
        (Some(t), None) => {
            let word = cx.string(t, "a type")?;
            type_named(cx, t, &word)?
        }
        (None, Some(e)) => {
            let values: Option<Vec<Value>> = e.as_seq().map(|items| {
                items
                    .iter()
                    .filter(|i| matches!(i.value, NodeValue::Str(_) | NodeValue::Int(_)))
                    .map(Node::to_json)
                    .collect()
            });
            match values {
                Some(v) if !v.is_empty() && Some(v.len()) == e.as_seq().map(<[Node]>::len) => {
                    EventType::Enum(v)
                }
                _ => {
                    cx.error(
                        e.span,
                        "`enum` is a list of the values allowed: text or whole numbers",
                    );
                    return None;
                }
            }
        }
        (Some(t), Some(_)) => {
            cx.error(t.span, "an event key has `type` or `enum`, not both");
            return None;
        }
        (None, None) => {
            cx.error_help(
                node.span,
                format!("event key `{name}` needs `type` or `enum`"),
                format!(
                    "`type` is one of {}",
                    crate::language::analyzer::list(&TYPES)
                ),
            );
            return None;
        }
    };
    let required = match body.get("required") {
        Some(n) => cx.boolean(n)?,
        None => true,
    };
    let description = match body.get("description") {
        Some(n) => Some(cx.string(n, "a description")?),
        None => None,
    };
    Some(EventKey {
        required,
        description,
        ..bare(ty)
    })
}

fn type_named(cx: &mut Analyzer, node: &Node, word: &str) -> Option<EventType> {
    Some(match word {
        "text" => EventType::Text,
        "number" => EventType::Number,
        "boolean" => EventType::Boolean,
        "object" => EventType::Object,
        "list" => EventType::List,
        _ => {
            let help =
                crate::language::diagnostic::did_you_mean(word, TYPES).unwrap_or_else(|| {
                    format!("use one of {}", crate::language::analyzer::list(&TYPES))
                });
            cx.error_help(node.span, format!("unknown event type `{word}`"), help);
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> EventShape {
        let key = |ty, required| EventKey {
            ty,
            required,
            description: None,
            span: Span::default(),
        };
        let mut keys = IndexMap::new();
        keys.insert("id".to_string(), key(EventType::Text, true));
        keys.insert("passed".to_string(), key(EventType::Boolean, true));
        keys.insert("tries".to_string(), key(EventType::Number, false));
        keys.insert(
            "result".to_string(),
            key(
                EventType::Enum(vec![json!("passed"), json!("failed")]),
                false,
            ),
        );
        EventShape { keys }
    }

    #[test]
    fn text_that_looks_false_is_not_a_boolean() {
        let s = shape();
        assert!(s.check(&json!({"id": "e", "passed": false})).is_ok());
        for bad in [
            json!("false"),
            json!("0"),
            json!("no"),
            json!(0),
            json!(null),
        ] {
            let e = s.check(&json!({"id": "e", "passed": bad})).unwrap_err();
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(e[0].starts_with("`passed`"), "{e:?}");
        }
        let e = s
            .check(&json!({"passed": true, "tries": "3", "result": "PASSED"}))
            .unwrap_err();
        assert_eq!(
            e,
            [
                "`id` is missing: it must be text",
                "`tries` must be a number, found text",
                "`result` must be one of \"passed\", \"failed\", found text",
            ]
        );
        assert!(s.check(&json!([1])).is_err());
        assert_eq!(s.json_schema()["required"], json!(["id", "passed"]));
    }
}
