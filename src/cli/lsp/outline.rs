//! What the editor features need to know of a flow file, read from its YAML
//! as written (so it works while the flow does not yet check): its fields
//! and where each is declared and read, its steps and where each is named
//! and gone to, and which key or value a position is in.

use std::sync::Arc;

use crate::language::keys::{Body, Shape};
use crate::language::raw::{Node, NodeValue};
use crate::language::source::Source;
use crate::steps::StepKind;

/// A field's declaration.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    /// The name's span in `fields:`.
    pub at: (usize, usize),
    pub ty: String,
    pub secret: bool,
    pub input: bool,
    pub env: Option<String>,
    pub description: Option<String>,
}

/// A step's id, and its kind.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub at: (usize, usize),
    pub kind: Option<String>,
    /// The kind's key, for hover.
    pub kind_at: Option<(usize, usize)>,
    /// The whole step, for the outline.
    pub whole: (usize, usize),
}

/// A place a name is used: a step id in `goto`/`on_error`/a decision, or a
/// field in a template, an `output:` mapping or a field key.
#[derive(Debug, Clone, PartialEq)]
pub enum Use {
    Step(String),
    Field(String),
}

/// A key of a step's kind body, for hover.
#[derive(Debug, Clone)]
pub struct KeyAt {
    pub at: (usize, usize),
    pub doc: String,
}

#[derive(Debug, Default)]
pub struct Outline {
    pub fields: Vec<Field>,
    pub steps: Vec<Step>,
    pub uses: Vec<((usize, usize), Use)>,
    pub keys: Vec<KeyAt>,
}

impl Outline {
    /// The outline of `text`; empty when it is not YAML yet.
    pub fn read(text: &str) -> Outline {
        let source = Source::new("", text);
        let mut out = Outline::default();
        let Ok(root) = crate::language::raw::parse(&source) else {
            return out;
        };
        let Some(top) = root.as_map() else { return out };
        let fields: Vec<String> = top
            .iter()
            .find(|(k, _)| k.as_str() == Some("fields"))
            .and_then(|(_, v)| v.as_map())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, _)| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for (key, value) in top {
            match key.as_str() {
                Some("fields") => out.read_fields(value),
                Some("steps") => out.read_steps(value, &fields, &source),
                _ => {}
            }
        }
        out
    }

    fn read_fields(&mut self, node: &Node) {
        for (key, decl) in node.as_map().unwrap_or_default() {
            let Some(name) = key.as_str() else { continue };
            let get = |k: &str| {
                decl.as_map()
                    .and_then(|m| m.iter().find(|(n, _)| n.as_str() == Some(k)))
                    .map(|(_, v)| v)
            };
            let flag = |k: &str| matches!(get(k).map(|v| &v.value), Some(NodeValue::Bool(true)));
            self.fields.push(Field {
                name: name.to_string(),
                at: span(key),
                ty: get("type")
                    .and_then(Node::as_str)
                    .or(decl.as_str())
                    .unwrap_or("text")
                    .to_string(),
                secret: flag("secret"),
                input: flag("input"),
                env: get("env").and_then(Node::as_str).map(str::to_string),
                description: get("description")
                    .and_then(Node::as_str)
                    .map(str::to_string),
            });
        }
    }

    fn read_steps(&mut self, node: &Node, fields: &[String], source: &Arc<Source>) {
        for step in node.as_seq().unwrap_or_default() {
            let Some(entries) = step.as_map() else {
                continue;
            };
            let mut id = None;
            let mut kind = None;
            for (key, value) in entries {
                let Some(k) = key.as_str() else { continue };
                match k {
                    "id" => id = value.as_str().map(|s| (s.to_string(), span(value))),
                    "goto" | "on_error" => {
                        if let Some(target) = value.as_str() {
                            self.uses.push((span(value), Use::Step(target.to_string())));
                        }
                    }
                    "output" => {
                        for (_, field) in value.as_map().unwrap_or_default() {
                            if let Some(f) = field.as_str() {
                                self.uses.push((span(field), Use::Field(f.to_string())));
                            }
                        }
                    }
                    "description" => {}
                    other => {
                        if let Some(body) = StepKind::body_of(other) {
                            kind = Some((other.to_string(), span(key)));
                            self.read_body(other, body, value, fields, source);
                        }
                    }
                }
            }
            if let Some((id, at)) = id {
                self.steps.push(Step {
                    id,
                    at,
                    kind: kind.as_ref().map(|(k, _)| k.clone()),
                    kind_at: kind.map(|(_, at)| at),
                    whole: span(step),
                });
            }
        }
    }

    fn read_body(
        &mut self,
        kind: &str,
        body: Body,
        node: &Node,
        fields: &[String],
        source: &Arc<Source>,
    ) {
        match (body, &node.value) {
            (Body::Keys(keys) | Body::TextOrKeys(keys), NodeValue::Map(entries)) => {
                for (key, value) in entries {
                    let Some(k) = key.as_str() else { continue };
                    if let Some(decl) = keys.iter().find(|d| d.name == k) {
                        self.keys.push(KeyAt {
                            at: span(key),
                            doc: format!("`{kind}.{k}`: {}", decl.doc),
                        });
                        if decl.shape == Shape::Field
                            && let Some(f) = value.as_str()
                        {
                            self.uses.push((span(value), Use::Field(f.to_string())));
                            continue;
                        }
                    }
                    self.templates(value, fields, source);
                }
            }
            (Body::Branches, NodeValue::Seq(branches)) => {
                for branch in branches {
                    for (key, value) in branch.as_map().unwrap_or_default() {
                        match key.as_str() {
                            Some("goto") | Some("otherwise") => {
                                if let Some(t) = value.as_str() {
                                    self.uses.push((span(value), Use::Step(t.to_string())));
                                }
                            }
                            // A condition is an expression: every name in it is read.
                            Some("when") => self.names(value, fields, source, false),
                            _ => {}
                        }
                    }
                }
            }
            (Body::Assignments, NodeValue::Map(entries)) => {
                for (key, value) in entries {
                    if let Some(f) = key.as_str() {
                        self.uses.push((span(key), Use::Field(f.to_string())));
                    }
                    self.templates(value, fields, source);
                }
            }
            _ => self.templates(node, fields, source),
        }
    }

    /// The fields read inside `{{ }}` and `{% %}` in every text under `node`.
    fn templates(&mut self, node: &Node, fields: &[String], source: &Arc<Source>) {
        match &node.value {
            NodeValue::Str(_) => self.names(node, fields, source, true),
            NodeValue::Seq(items) => items.iter().for_each(|n| self.templates(n, fields, source)),
            NodeValue::Map(entries) => entries
                .iter()
                .for_each(|(_, v)| self.templates(v, fields, source)),
            _ => {}
        }
    }

    /// Names of fields in a scalar's text as written in the file (so spans
    /// are exact), inside delimiters when `delimited`, else anywhere.
    fn names(&mut self, node: &Node, fields: &[String], source: &Arc<Source>, delimited: bool) {
        let Some(raw) = source.text.get(node.span.offset..node.span.end()) else {
            return;
        };
        let base = node.span.offset;
        let regions: Vec<(usize, usize)> = if delimited {
            let mut found = Vec::new();
            let mut at = 0;
            while let Some(open) = raw[at..].find(['{']).map(|i| at + i) {
                let next = raw.as_bytes().get(open + 1);
                let close = match next {
                    Some(b'{') => "}}",
                    Some(b'%') => "%}",
                    _ => {
                        at = open + 1;
                        continue;
                    }
                };
                let end = raw[open + 2..]
                    .find(close)
                    .map_or(raw.len(), |i| open + 2 + i);
                found.push((open + 2, end));
                at = end;
            }
            found
        } else {
            vec![(0, raw.len())]
        };
        for (start, end) in regions {
            let text = &raw[start..end];
            let mut chars = text.char_indices().peekable();
            let mut prev: Option<char> = None;
            while let Some((i, c)) = chars.next() {
                if c.is_ascii_alphabetic() || c == '_' {
                    let mut j = i + c.len_utf8();
                    while let Some(&(k, d)) = chars.peek() {
                        if d.is_ascii_alphanumeric() || d == '_' {
                            j = k + d.len_utf8();
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    let word = &text[i..j];
                    // `event.instanceId`: `instanceId` is the event's, not a field.
                    if prev != Some('.') && fields.iter().any(|f| f == word) {
                        let at = base + start + i;
                        self.uses
                            .push(((at, at + word.len()), Use::Field(word.to_string())));
                    }
                    prev = text[..j].chars().next_back();
                    continue;
                }
                if !c.is_whitespace() {
                    prev = Some(c);
                }
            }
        }
    }

    /// What is at byte `offset`: a field or step named there.
    pub fn at(&self, offset: usize) -> Option<Use> {
        let inside = |(s, e): (usize, usize)| s <= offset && offset <= e;
        if let Some(f) = self.fields.iter().find(|f| inside(f.at)) {
            return Some(Use::Field(f.name.clone()));
        }
        if let Some(s) = self.steps.iter().find(|s| inside(s.at)) {
            return Some(Use::Step(s.id.clone()));
        }
        self.uses
            .iter()
            .find(|(at, _)| inside(*at))
            .map(|(_, u)| u.clone())
    }

    /// Where a name is declared.
    pub fn declaration(&self, name: &Use) -> Option<(usize, usize)> {
        match name {
            Use::Field(f) => self.fields.iter().find(|d| &d.name == f).map(|d| d.at),
            Use::Step(s) => self.steps.iter().find(|d| &d.id == s).map(|d| d.at),
        }
    }

    /// Every place a name stands: its declaration, then its uses.
    pub fn occurrences(&self, name: &Use) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = self.declaration(name).into_iter().collect();
        out.extend(
            self.uses
                .iter()
                .filter(|(_, u)| u == name)
                .map(|(at, _)| *at),
        );
        out.sort();
        out.dedup();
        out
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

fn span(node: &Node) -> (usize, usize) {
    (node.span.offset, node.span.end())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: &str = "flow: f
fields:
  tries: { type: number, default: 0 }
  token: { type: text, secret: true, env: NWC_TOKEN }
  tasks: { type: json }
steps:
  - id: count
    set: { tries: \"{{ tries + 1 }}\" }
  - id: ask
    http: { url: \"https://x/{{ event.tries }}?n={{tries}}\", headers: { Authorization: \"Bearer {{ token }}\" } }
    output: { body: tasks }
  - id: again
    decision:
      - when: \"tries < 3\"
        goto: count
      - otherwise: end
";

    #[test]
    fn names_are_found_where_they_stand() {
        let o = Outline::read(FLOW);
        assert_eq!(
            o.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["count", "ask", "again"]
        );
        let tries = o.occurrences(&Use::Field("tries".into()));
        let texts: Vec<&str> = tries.iter().map(|(s, e)| &FLOW[*s..*e]).collect();
        // The declaration, `set`'s key, its template, `{{tries}}` (not
        // `event.tries`), and the decision's condition.
        assert_eq!(texts, ["tries"; 5]);
        assert_eq!(tries.len(), 5);
        let count = o.occurrences(&Use::Step("count".into()));
        assert_eq!(count.len(), 2);
        assert_eq!(o.occurrences(&Use::Field("tasks".into())).len(), 2);
        assert!(o.field("token").unwrap().secret);
    }

    #[test]
    fn text_that_is_not_yaml_yet_has_an_empty_outline() {
        let o = Outline::read("steps:\n  - id: [\n");
        assert!(o.steps.is_empty());
    }
}
