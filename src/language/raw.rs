//! YAML text to a tree of spanned nodes: the raw, unvalidated form of a flow.
//!
//! serde-saphyr parses the YAML (with its limits on aliases, depth and size),
//! and every node keeps the byte span it came from. Nothing here knows what a
//! flow is: [`crate::language::analyze`] gives the nodes their meaning and reports every
//! problem it finds, not just the first, which plain `#[derive(Deserialize)]`
//! could not do.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Options, Spanned};

use crate::language::diagnostic::Diagnostic;
use crate::language::source::{Source, Span};

/// A YAML node and where it stands in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Span,
    pub value: NodeValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; keys are nodes so a bad key can be pointed at.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The node YAML would read from this JSON, for the values where that is
    /// certain (no integer beyond `i64`); `None` for any other. Its spans
    /// are empty: a caller that must point at a problem parses the text.
    pub fn from_json(value: &serde_json::Value) -> Option<Node> {
        use serde_json::Value;
        let value = match value {
            Value::Null => NodeValue::Null,
            Value::Bool(b) => NodeValue::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.is_f64()) {
                (Some(i), _) => NodeValue::Int(i),
                (None, true) => NodeValue::Float(n.as_f64()?),
                (None, false) => return None,
            },
            Value::String(s) => NodeValue::Str(s.clone()),
            Value::Array(items) => {
                NodeValue::Seq(items.iter().map(Node::from_json).collect::<Option<_>>()?)
            }
            Value::Object(map) => NodeValue::Map(
                map.iter()
                    .map(|(k, v)| {
                        let key = Node {
                            span: Span::new(0, 0),
                            value: NodeValue::Str(k.clone()),
                        };
                        Some((key, Node::from_json(v)?))
                    })
                    .collect::<Option<_>>()?,
            ),
        };
        Some(Node {
            span: Span::new(0, 0),
            value,
        })
    }

    /// [`Node::from_json`] of an object held as a map.
    pub fn from_json_map(map: &indexmap::IndexMap<String, serde_json::Value>) -> Option<Node> {
        let entries = map
            .iter()
            .map(|(k, v)| {
                let key = Node {
                    span: Span::new(0, 0),
                    value: NodeValue::Str(k.clone()),
                };
                Some((key, Node::from_json(v)?))
            })
            .collect::<Option<_>>()?;
        Some(Node {
            span: Span::new(0, 0),
            value: NodeValue::Map(entries),
        })
    }

    pub fn type_name(&self) -> &'static str {
        match self.value {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Int(_) | NodeValue::Float(_) => "a number",
            NodeValue::Str(_) => "a string",
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            NodeValue::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            NodeValue::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// A scalar as text, the way a template would see it.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            NodeValue::Str(s) => Some(s.clone()),
            NodeValue::Int(i) => Some(i.to_string()),
            NodeValue::Float(f) => Some(f.to_string()),
            NodeValue::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// The node as plain JSON data, for literal values such as request bodies.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::from(*i),
            NodeValue::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            NodeValue::Str(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Parses one YAML document into nodes.
///
/// An empty document is a `Null` node. YAML errors come back as one
/// positioned diagnostic.
pub fn parse(source: &Arc<Source>) -> Result<Node, Diagnostic> {
    if source.text.trim().is_empty() {
        return Ok(Node {
            span: Span::new(0, 0),
            value: NodeValue::Null,
        });
    }
    let mut options = Options::default();
    options.with_snippet = false;
    match serde_saphyr::from_str_with_options::<Spanned<RawValue>>(&source.text, options) {
        Ok(spanned) => Ok(into_node(spanned, &source.text)),
        Err(err) => {
            let span = err.location().map(|loc| {
                let offset = loc
                    .span()
                    .byte_offset()
                    .map(|o| o as usize)
                    .unwrap_or_else(|| offset_of(&source.text, loc.line(), loc.column()));
                Span::new(offset, 1)
            });
            let message = yaml_message(&err);
            let diagnostic = Diagnostic::error(format!("invalid YAML: {message}"));
            Err(match span {
                Some(span) => diagnostic.at(source, span),
                None => diagnostic,
            })
        }
    }
}

/// serde-saphyr's message without its own location suffix (we render ours).
fn yaml_message(err: &serde_saphyr::Error) -> String {
    let text = err.without_snippet().to_string();
    // The parser's limits speak in its own terms; say what they mean here.
    if let Some(rest) = text.split("budget breached: ").nth(1) {
        let number = |s: &str| {
            s.split(|c: char| !c.is_ascii_digit())
                .find(|p| !p.is_empty())
                .unwrap_or("?")
                .to_string()
        };
        return if rest.starts_with("Depth") {
            format!(
                "the document nests deeper than {} levels",
                number(rest)
                    .parse::<u64>()
                    .map_or(64, |n| n.saturating_sub(1))
            )
        } else if rest.starts_with("Nodes") || rest.starts_with("Alias") {
            "the document expands to too many nodes; is it an alias bomb?".to_string()
        } else {
            "the document is too large or too complex for a flow".to_string()
        };
    }
    if let Some(rest) = text.split("duplicate mapping key: ").nth(1) {
        let key = rest.split([',', ' ']).next().unwrap_or("");
        return format!("the key `{key}` appears twice in one mapping");
    }
    if text.contains("multiple YAML documents") {
        return "a flow file holds one YAML document, and this one has several (`---`)".to_string();
    }
    if text.contains("recursion limit exceeded") {
        return "the document nests too deeply".to_string();
    }
    let first = text.lines().next().unwrap_or("").trim();
    let trimmed = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    let mut msg = trimmed.trim_end_matches('.').to_string();
    if let Some(c) = msg.get(0..1) {
        msg.replace_range(0..1, &c.to_lowercase());
    }
    msg
}

fn offset_of(text: &str, line: u64, column: u64) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line as usize {
            return offset
                + l.char_indices()
                    .nth(column.saturating_sub(1) as usize)
                    .map_or(l.len(), |(b, _)| b);
        }
        offset += l.len();
    }
    text.len()
}

fn into_node(spanned: Spanned<RawValue>, text: &str) -> Node {
    let loc = spanned.referenced;
    let offset = loc
        .span()
        .byte_offset()
        .map(|o| o as usize)
        .unwrap_or_else(|| offset_of(text, loc.line(), loc.column()));
    let len = loc.span().byte_len().map_or(0, |l| l as usize);
    let value = match spanned.value {
        RawValue::Null => NodeValue::Null,
        RawValue::Bool(b) => NodeValue::Bool(b),
        RawValue::Int(i) => NodeValue::Int(i),
        RawValue::Float(f) => NodeValue::Float(f),
        RawValue::Str(s) => NodeValue::Str(s),
        RawValue::Seq(items) => {
            NodeValue::Seq(items.into_iter().map(|n| into_node(n, text)).collect())
        }
        RawValue::Map(entries) => NodeValue::Map(
            entries
                .into_iter()
                .map(|(k, v)| (into_node(k, text), into_node(v, text)))
                .collect(),
        ),
    };
    let len = if len == 0 {
        scalar_len(text, offset)
    } else {
        len
    };
    Node {
        span: Span::new(offset, len),
        value,
    }
}

/// The length of the token at `offset` when the parser gave none: up to the end
/// of the line, or of a quoted string, so carets underline something sensible.
fn scalar_len(text: &str, offset: usize) -> usize {
    let rest = text.get(offset..).unwrap_or("");
    let line = rest.split('\n').next().unwrap_or("");
    let mut len = line.trim_end().len();
    if let Some(i) = line.find(": ").or_else(|| line.find(" #")) {
        len = len.min(i);
    }
    len.max(1)
}

/// What serde-saphyr hands us before spans are turned into ours.
enum RawValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawValue>>),
    Map(Vec<(Spanned<RawValue>, Spanned<RawValue>)>),
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_none<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
        RawValue::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawValue, E> {
        Ok(i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int))
    }
    fn visit_i128<E>(self, v: i128) -> Result<RawValue, E> {
        Ok(i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int))
    }
    fn visit_u128<E>(self, v: u128) -> Result<RawValue, E> {
        Ok(i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<RawValue, E> {
        Ok(RawValue::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawValue>>()? {
            items.push(item);
        }
        Ok(RawValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<RawValue>>()? {
            let value = map.next_value::<Spanned<RawValue>>()?;
            entries.push((key, value));
        }
        Ok(RawValue::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn without_spans(node: &Node) -> Node {
        let value = match &node.value {
            NodeValue::Seq(items) => NodeValue::Seq(items.iter().map(without_spans).collect()),
            NodeValue::Map(entries) => NodeValue::Map(
                entries
                    .iter()
                    .map(|(k, v)| (without_spans(k), without_spans(v)))
                    .collect(),
            ),
            other => other.clone(),
        };
        Node {
            span: Span::new(0, 0),
            value,
        }
    }

    /// A batch row read from its JSON is what parsing its text gives.
    #[test]
    fn from_json_is_what_parsing_the_json_gives() {
        let rows = [
            r#"{"instance_id": "abc", "n": 3, "neg": -7, "f": 2.5, "z": -0.0, "big": 1e300}"#,
            r#"{"yes": "yes", "no": "no", "null": "null", "t": true, "nothing": null}"#,
            r#"{"quote": "it's \"x\"", "nl": "a\nb", "tab": "\t", "uni": "日本 → é"}"#,
            r#"{"list": [1, "two", [3.5, null], {"k": false}], "empty": "", "e": {}, "a": []}"#,
            r##"{"min": -9223372036854775808, "max": 9223372036854775807, "colon": "a: b", "hash": "# x"}"##,
            r#"{"num_text": "0123", "octal": "0o17", "tilde": "~", "star": "*a", "amp": "&a"}"#,
        ];
        for row in rows {
            let value: serde_json::Value = serde_json::from_str(row).unwrap();
            let text = serde_json::to_string(&value).unwrap();
            let parsed = parse(&Source::new("row", text.clone())).unwrap();
            let quick = Node::from_json(&value).expect(row);
            assert_eq!(without_spans(&quick), without_spans(&parsed), "{text}");
            let serde_json::Value::Object(map) = value else {
                unreachable!()
            };
            let as_map: indexmap::IndexMap<String, serde_json::Value> = map.into_iter().collect();
            assert_eq!(
                without_spans(&Node::from_json_map(&as_map).unwrap()),
                without_spans(&parsed)
            );
        }
        // Beyond `i64`, YAML's reading is its own: no quick answer.
        assert_eq!(Node::from_json(&serde_json::json!(u64::MAX)), None);
    }

    #[test]
    fn keeps_spans_of_keys_and_values() {
        let src = Source::new(
            "t.yaml",
            "flow: demo\nsteps:\n  - id: a\n    log: \"hi {{ x }}\"\n",
        );
        let node = parse(&src).unwrap();
        let map = node.as_map().unwrap();
        let (k, v) = &map[0];
        assert_eq!(src.slice(k.span), "flow");
        assert_eq!(src.slice(v.span), "demo");
        let steps = map[1].1.as_seq().unwrap();
        let step = steps[0].as_map().unwrap();
        assert_eq!(src.line_col(step[1].0.span.offset), (4, 5));
        assert!(src.slice(step[1].1.span).starts_with("\"hi"));
    }

    #[test]
    fn yaml_errors_are_positioned() {
        let src = Source::new("t.yaml", "flow: [unclosed\n");
        let err = parse(&src).unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
        assert!(err.span.is_some());
    }
}
