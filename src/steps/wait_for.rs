//! `wait_for`: parks the run until another system signals it, or until a
//! timeout: the waiting side of the seed's pattern, where NWC parks an
//! instance on a task until a worker completes it.
//!
//! The step runs twice. First it asks the engine to wait (a durable run then
//! waits as a row, with no task and no thread, until the signal or the
//! timeout wakes it); then, once the engine has the signal's data or the
//! timeout, it checks the data against its declared shape, sets the fields
//! `set:` names from it, and goes on, or goes to `on_timeout`.
//!
//! Signals come from `POST /v1/runs/{id}/signals/{name}` (the API token), a
//! signed resume URL for this one wait (`{{ wait.url }}`), `handoff signal`
//! for a durable CLI run, or a mock's scripted `signals:` in a dry run.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use crate::language::analyzer::{Analyzer, is_identifier};
use crate::language::event::EventShape;
use crate::language::fields::FieldType;
use crate::language::keys::{Key, Shape, names, opt, req};
use crate::language::raw::Node;
use crate::language::target::Target;
use crate::language::template::{Scope, Template};
use crate::run::state::Waited;
use crate::run::step::{Next, StepCx, StepError};

pub const OUTPUTS: &[(&str, FieldType)] =
    &[("data", FieldType::Json), ("timed_out", FieldType::Boolean)];

/// The longest wait: a month, so a typo cannot park a run for a year.
pub const MAX_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);

/// What `wait_for` takes.
pub const KEYS: &[Key] = &[
    req(
        "signal",
        Shape::Field,
        "The signal's name, such as `approval`: what a sender names, in the URL or the mock.",
    ),
    req(
        "timeout",
        Shape::Duration,
        "How long to wait at most, such as `3d` or `2h`; at most 30 days.",
    ),
    req(
        "on_timeout",
        Shape::Step,
        "Where control goes when no signal came in time: a step id, or `end`.",
    ),
    opt(
        "data",
        Shape::Event,
        "The signal's data: each key with its type, as a trigger's `event:`; data that does not fit is refused with 422.",
    ),
    opt(
        "set",
        Shape::Pairs,
        "Fields to set from the data, such as `decision: \"{{ data.decision }}\"`.",
    ),
];

#[derive(Debug)]
pub struct WaitFor {
    pub signal: String,
    pub timeout: Duration,
    pub on_timeout: Target,
    pub data: EventShape,
    pub set: Vec<(String, Template)>,
}

impl WaitFor {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<WaitFor> {
        let (keys, required) = names(KEYS);
        let body = cx.body(node, "`wait_for`", &keys, &required)?;
        if cx.in_block {
            cx.error_help(
                node.span,
                "a `wait_for` cannot run inside a `for_each`",
                "wait before or after the loop: items run side by side, and a waiting run is a row of its own",
            );
            return None;
        }
        let signal = body.get("signal").and_then(|n| {
            let name = cx.string(n, "a signal's name")?;
            if !is_identifier(&name) {
                cx.error_help(
                    n.span,
                    format!("`{name}` is not a valid signal name"),
                    "use letters, digits and `_`: it goes into URLs and mock files",
                );
                return None;
            }
            Some(name)
        });
        let timeout = body.get("timeout").and_then(|n| {
            let d = cx.duration(n)?;
            if d > MAX_WAIT || d.is_zero() {
                cx.error(
                    n.span,
                    "a `wait_for` waits more than nothing and at most 30 days",
                );
                return None;
            }
            Some(d)
        });
        let on_timeout = body.get("on_timeout").and_then(|n| cx.target(n));
        let data = match body.get("data") {
            Some(n) => EventShape::parse(cx, n),
            None => Some(EventShape::default()),
        };
        let mut set = Vec::new();
        let mut ok = true;
        if let (Some(n), Some(shape)) = (body.get("set"), &data) {
            match n.as_map() {
                Some(entries) => {
                    for (key, value) in entries {
                        let Some(field) =
                            cx.field_ref(key, &crate::language::fields::ALL_TYPES, "`set`")
                        else {
                            ok = false;
                            continue;
                        };
                        let Some(t) = cx.template_over(
                            value,
                            &["data"],
                            "a `wait_for`'s `set` reads the signal's data as `data`, not the flow's fields",
                        ) else {
                            ok = false;
                            continue;
                        };
                        if !shape.reads_declared(cx, &t, "data", "wait_for.data") {
                            ok = false;
                            continue;
                        }
                        set.push((field, t));
                    }
                }
                None => {
                    cx.error(
                        n.span,
                        "`set` maps fields to templates over the signal's `data`",
                    );
                    ok = false;
                }
            }
        }
        let step = WaitFor {
            signal: signal?,
            timeout: timeout?,
            on_timeout: on_timeout?,
            data: data?,
            set,
        };
        ok.then_some(step)
    }

    /// Fields the step writes, and what they derive from: a signal's data,
    /// never a field.
    pub fn writes(&self) -> Vec<(&str, BTreeSet<String>)> {
        self.set
            .iter()
            .map(|(f, _)| (f.as_str(), BTreeSet::new()))
            .collect()
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        let waited = cx.state.wait.as_mut().and_then(|w| w.outcome.take());
        let Some(waited) = waited else {
            // The first time: ask the engine to wait.
            let until = cx.clock.now() + self.timeout;
            return Ok(Next::WaitFor {
                signal: self.signal.clone(),
                until,
                timeout: self.timeout,
            });
        };
        cx.state.wait = None;
        match waited {
            Waited::TimedOut => {
                cx.output("timed_out", Value::Bool(true))?;
                Ok(Next::Goto(self.on_timeout))
            }
            Waited::Signal { data, .. } => {
                if let Err(problems) = self.data.check(&data) {
                    return Err(StepError::new(format!(
                        "signal `{}` carried data that does not fit `data:`: {}",
                        self.signal,
                        problems.join("; ")
                    )));
                }
                cx.output("timed_out", Value::Bool(false))?;
                cx.output("data", data.clone())?;
                let mut names = IndexMap::new();
                names.insert("data".to_string(), data);
                let scope = Scope::new(Arc::new(names));
                for (field, template) in &self.set {
                    let (value, tainted) = cx.render_in(template, &scope)?;
                    cx.set_field(field, value, tainted)?;
                }
                Ok(Next::Continue)
            }
        }
    }
}
