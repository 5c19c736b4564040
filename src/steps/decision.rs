//! `decision`: ordered `when` branches and an `otherwise`, each naming where to
//! go. The trace records the branch taken and the values its conditions read,
//! which is how a poll loop's "found it" or "tried too often" becomes visible.

use indexmap::IndexMap;

use crate::language::analyzer::Analyzer;
use crate::language::raw::Node;
use crate::language::target::Target;
use crate::language::template::Template;
use crate::run::step::{Next, StepCx, StepError, truthy};
use crate::run::trace::EventKind;

#[derive(Debug)]
pub struct Decision {
    pub branches: Vec<(Template, Target)>,
    pub otherwise: Option<Target>,
}

impl Decision {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<Decision> {
        let Some(items) = node.as_seq() else {
            cx.error_help(
                node.span,
                format!(
                    "a `decision` is a list of branches, found {}",
                    node.type_name()
                ),
                "write `- when: CONDITION` with `goto: STEP`, and end with `- otherwise: STEP`",
            );
            return None;
        };
        let mut branches = Vec::new();
        let mut otherwise = None;
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let Some(entries) = item.as_map() else {
                cx.error(
                    item.span,
                    "a branch is `{ when: CONDITION, goto: STEP }` or `{ otherwise: STEP }`",
                );
                ok = false;
                continue;
            };
            if entries.iter().any(|(k, _)| k.as_str() == Some("otherwise")) {
                let Some(body) = cx.body(
                    item,
                    "an `otherwise` branch",
                    &["otherwise"],
                    &["otherwise"],
                ) else {
                    ok = false;
                    continue;
                };
                if i + 1 != items.len() {
                    cx.error(item.span, "`otherwise` must be the last branch: the ones after it would never be tried");
                    ok = false;
                }
                otherwise = body.get("otherwise").and_then(|n| cx.target(n));
                ok &= otherwise.is_some();
                continue;
            }
            let Some(body) = cx.body(
                item,
                "a `when` branch",
                &["when", "goto"],
                &["when", "goto"],
            ) else {
                ok = false;
                continue;
            };
            let when = body.get("when").and_then(|n| cx.condition(n));
            let goto = body.get("goto").and_then(|n| cx.target(n));
            match (when, goto) {
                (Some(w), Some(g)) => branches.push((w, g)),
                _ => ok = false,
            }
        }
        if items.is_empty() {
            cx.error(node.span, "a `decision` needs at least one branch");
            ok = false;
        }
        ok.then_some(Decision {
            branches,
            otherwise,
        })
    }

    pub fn targets(&self) -> Vec<Target> {
        self.branches
            .iter()
            .map(|(_, t)| *t)
            .chain(self.otherwise)
            .collect()
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        let mut values = IndexMap::new();
        // The values are for the trace; the last decision is kept regardless.
        let shown = if cx.rec.values() {
            &self.branches[..]
        } else {
            &[]
        };
        for (condition, _) in shown {
            for name in condition
                .mentions
                .iter()
                .filter(|n| cx.flow.fields.contains_key(*n))
            {
                values.insert(name.clone(), cx.shown(name));
            }
        }
        for (i, (condition, target)) in self.branches.iter().enumerate() {
            let (result, _) = cx.render(condition)?;
            if truthy(&result) {
                cx.emit(EventKind::DecisionTaken {
                    branch: format!("when {}", i + 1),
                    condition: Some(condition.source.clone()),
                    goto: cx.flow.target_name(*target).to_string(),
                    values,
                });
                return Ok(Next::Goto(*target));
            }
        }
        let (branch, next, goto) = match self.otherwise {
            Some(t) => (
                "otherwise",
                Next::Goto(t),
                cx.flow.target_name(t).to_string(),
            ),
            None => {
                let t = cx.step.next;
                ("none", Next::Continue, cx.flow.target_name(t).to_string())
            }
        };
        cx.emit(EventKind::DecisionTaken {
            branch: branch.to_string(),
            condition: None,
            goto,
            values,
        });
        Ok(next)
    }
}
