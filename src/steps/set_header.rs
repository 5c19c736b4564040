//! `set_header`: adds or replaces one header in a `headers` field, as K2's
//! "HTTPHeader: add item to array" does. The usual first step builds
//! `Authorization: Bearer {{ token }}`, so the target field becomes secret.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::language::analyzer::Analyzer;
use crate::language::fields::FieldType;
use crate::language::keys::{Key, Shape, names, req};
use crate::language::raw::Node;
use crate::language::template::Template;
use crate::run::step::{Next, StepCx, StepError};

#[derive(Debug)]
pub struct SetHeader {
    pub name: Template,
    pub value: Template,
    pub into: String,
}

/// What `set_header` takes.
pub const KEYS: &[Key] = &[
    req(
        "name",
        Shape::Template,
        "The header's name, such as `Authorization`.",
    ),
    req(
        "value",
        Shape::Template,
        "Its value, such as `Bearer {{ token }}`.",
    ),
    req("into", Shape::Field, "The `headers` field it is added to."),
];

impl SetHeader {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<SetHeader> {
        let (keys, required) = names(KEYS);
        let body = cx.body(node, "`set_header`", &keys, &required)?;
        let name = body.get("name").and_then(|n| cx.template(n));
        let value = body.get("value").and_then(|n| cx.template(n));
        let into = body
            .get("into")
            .and_then(|n| cx.field_ref(n, &[FieldType::Headers], "`into`"));
        Some(SetHeader {
            name: name?,
            value: value?,
            into: into?,
        })
    }

    pub fn reads(&self) -> BTreeSet<String> {
        self.name
            .mentions
            .union(&self.value.mentions)
            .cloned()
            .collect()
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        let (name, name_secret) = cx.render_text(&self.name)?;
        let (value, value_secret) = cx.render_text(&self.value)?;
        if name_secret {
            // Header names are shown in every trace; only values are masked.
            return Err(StepError::new("the header name is built from a secret")
                .hint("build only the header's value from a secret"));
        }
        if name.trim().is_empty() || name.contains(|c: char| c == ':' || c.is_control()) {
            return Err(StepError::new(
                "the header name is empty or contains `:` or a control character",
            ));
        }
        if value.contains(|c: char| c.is_control() && c != '\t') {
            return Err(StepError::new(format!(
                "the value of header `{}` contains a line break or another control character",
                cx.data(&name)
            )));
        }
        let mut headers = match cx.state.fields.get(&self.into) {
            Some(Value::Object(map)) => map.clone(),
            _ => serde_json::Map::new(),
        };
        headers.retain(|k, _| !k.eq_ignore_ascii_case(&name));
        headers.insert(name, Value::String(value));
        let secret = name_secret || value_secret || cx.state.secret.contains(&self.into);
        cx.set_field(&self.into, Value::Object(headers), secret)?;
        Ok(Next::Continue)
    }
}
