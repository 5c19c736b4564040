//! `deserialize_id`: takes a property from the items of a JSON list, as K2's
//! "Deserialize Typed Array" does with a task list. An empty list gives an
//! empty value, not an error: whether that means "not yet" is the flow's call.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::language::analyzer::Analyzer;
use crate::language::fields::FieldType;
use crate::language::keys::{Key, Shape, names, opt, req};
use crate::language::raw::Node;
use crate::language::template::{Scope, Template};
use crate::run::step::{Next, StepCx, StepError, truthy};

pub const OUTPUTS: &[(&str, FieldType)] = &[("count", FieldType::Number)];

#[derive(Debug)]
pub struct DeserializeId {
    pub from: String,
    pub property: Path,
    pub into: String,
    pub filter: Option<Template>,
    /// More than one match is an error rather than "take the first".
    pub single: bool,
}

/// `id`, `taskAssignments[0].id`: keys and list indexes.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub text: String,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

impl Path {
    pub fn parse(text: &str) -> Result<Path, String> {
        let mut segments = Vec::new();
        for part in text.split('.') {
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if key.is_empty() && (segments.is_empty() || rest.is_empty()) {
                return Err(format!(
                    "`{text}` has an empty name; write paths like `id` or `taskAssignments[0].id`"
                ));
            }
            if !key.is_empty() {
                segments.push(Segment::Key(key.to_string()));
            }
            while !rest.is_empty() {
                let close = rest
                    .find(']')
                    .ok_or_else(|| format!("`{text}` has a `[` without `]`"))?;
                let index = rest[1..close]
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("`{text}`: `{}` is not a list index", &rest[1..close]))?;
                segments.push(Segment::Index(index));
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err(format!("`{text}`: expected `.` or `[` after `]`"));
                }
            }
        }
        Ok(Path {
            text: text.to_string(),
            segments,
        })
    }

    pub fn get<'v>(&self, mut value: &'v Value) -> Option<&'v Value> {
        for segment in &self.segments {
            value = match segment {
                Segment::Key(k) => value.get(k)?,
                Segment::Index(i) => value.get(i)?,
            };
        }
        Some(value)
    }
}

/// What `deserialize_id` takes.
pub const KEYS: &[Key] = &[
    req(
        "from",
        Shape::Field,
        "A `json` field holding a list, such as the tasks.",
    ),
    req(
        "property",
        Shape::Template,
        "The path to take from each item: `id`, `taskAssignments[0].id`.",
    ),
    req(
        "into",
        Shape::Field,
        "The field that gets the first match, or empty text.",
    ),
    opt(
        "where",
        Shape::Template,
        "A condition over `item` and the fields, such as `item.status == 'active'`.",
    ),
    opt(
        "single",
        Shape::Bool,
        "Fail when more than one item matches.",
    ),
];

impl DeserializeId {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<DeserializeId> {
        let (keys, required) = names(KEYS);
        let body = cx.body(node, "`deserialize_id`", &keys, &required)?;
        let from = body
            .get("from")
            .and_then(|n| cx.field_ref(n, &[FieldType::Json], "`from`"));
        let into = body.get("into").and_then(|n| {
            cx.field_ref(
                n,
                &[FieldType::Text, FieldType::Number, FieldType::Json],
                "`into`",
            )
        });
        let property = body.get("property").and_then(|n| {
            let text = cx.string(n, "a property path")?;
            Path::parse(&text).map_err(|e| cx.error(n.span, e)).ok()
        });
        let filter = match body.get("where") {
            Some(n) => Some(cx.item_condition(n)?),
            None => None,
        };
        let single = body.get("single").map_or(Some(false), |n| cx.boolean(n));
        Some(DeserializeId {
            from: from?,
            property: property?,
            into: into?,
            filter,
            single: single?,
        })
    }

    /// The fields the result derives from: `from`, and what `where` mentions.
    pub fn reads(&self) -> BTreeSet<String> {
        let mut reads: BTreeSet<String> = std::iter::once(self.from.clone()).collect();
        if let Some(filter) = &self.filter {
            reads.extend(filter.mentions.iter().cloned());
        }
        reads
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        // Shared, not copied: each item's `where` scope sees the item, then the fields.
        let fields = cx.state.fields.clone();
        let items = match fields.get(&self.from) {
            Some(Value::Array(items)) => items,
            Some(Value::Null) | None => {
                return Err(StepError::new(format!("field `{}` holds no list yet", self.from))
                    .hint("map a list into it first, e.g. `output: { tasks: … }` on a `get_tasks` step"));
            }
            Some(other) => {
                return Err(StepError::new(format!(
                    "field `{}` holds {}, not a list",
                    self.from,
                    crate::language::fields::json_type_name(other)
                )));
            }
        };
        let mut tainted = cx.state.secret.contains(&self.from);
        let mut matches = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(filter) = &self.filter {
                let scope = Scope::with_item(
                    fields.clone(),
                    Some(minijinja::Value::from(minijinja::value::Serde(item))),
                );
                let (result, read_secret) =
                    cx.render_in(filter, &scope).map_err(|e| StepError {
                        message: format!("`where` on item {}: {}", i + 1, e.message),
                        ..e
                    })?;
                // Which item matched tells something about the secret it was compared with.
                tainted |= read_secret;
                if !truthy(&result) {
                    continue;
                }
            }
            matches.push(i);
        }
        if self.single && matches.len() > 1 {
            return Err(StepError::new(format!(
                "{} items match, but `single: true` allows one",
                matches.len()
            ))
            .hint("narrow the filter with `where`"));
        }
        let count = matches.len();
        let value = match matches.first() {
            None => Value::String(String::new()),
            Some(&i) => self.property.get(&items[i]).cloned().ok_or_else(|| {
                StepError::new(format!("item {} has no `{}`", i + 1, self.property.text))
            })?,
        };
        // Release the shared fields before writing, so the write copies nothing.
        drop(fields);
        cx.set_field(&self.into, value, tainted)?;
        cx.output("count", Value::from(count))?;
        Ok(Next::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_walk_keys_and_indexes() {
        let v = json!({"taskAssignments": [{"id": "a1"}]});
        assert_eq!(
            Path::parse("taskAssignments[0].id").unwrap().get(&v),
            Some(&json!("a1"))
        );
        assert_eq!(Path::parse("taskAssignments[1].id").unwrap().get(&v), None);
        assert!(Path::parse("a[").is_err());
        assert!(Path::parse("a..b").is_err());
        assert!(Path::parse("a[x]").is_err());
    }
}
