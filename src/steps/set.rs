//! `set`: assigns fields from templates, coercing each value to its field's type.

use std::collections::BTreeSet;

use crate::language::analyzer::Analyzer;
use crate::language::raw::Node;
use crate::language::template::Template;
use crate::run::step::{Next, StepCx, StepError};

#[derive(Debug)]
pub struct Set {
    pub assignments: Vec<(String, Template)>,
}

impl Set {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<Set> {
        let Some(entries) = node.as_map() else {
            cx.error(
                node.span,
                format!(
                    "`set` maps field names to values, found {}",
                    node.type_name()
                ),
            );
            return None;
        };
        let mut assignments = Vec::new();
        let mut ok = true;
        for (key, value) in entries {
            let Some(field) = cx.field_ref(key, &crate::language::fields::ALL_TYPES, "`set`")
            else {
                ok = false;
                continue;
            };
            let ty = cx.fields[&field].ty;
            match cx.typed_template(value, ty, &field) {
                Some(t) => assignments.push((field, t)),
                None => ok = false,
            }
        }
        ok.then_some(Set { assignments })
    }

    pub fn writes(&self) -> Vec<(&str, BTreeSet<String>)> {
        self.assignments
            .iter()
            .map(|(f, t)| (f.as_str(), t.mentions.clone()))
            .collect()
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        // All values are computed before any is written, so `a: b, b: a` swaps.
        let mut values = Vec::new();
        for (field, template) in &self.assignments {
            values.push((field, cx.render(template)?));
        }
        for (field, (value, tainted)) in values {
            cx.set_field(field, value, tainted)?;
        }
        Ok(Next::Continue)
    }
}
