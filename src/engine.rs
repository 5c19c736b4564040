//! Runs a validated flow: inputs in, a trace and an outcome out.
//!
//! The engine holds no global state: the [`Clock`] and [`Transport`] are
//! injected, the run's state is a plain [`RunState`], and events go to an
//! observer as they happen. Once a run starts nothing returns `Err`: failures
//! are trace events, and the [`Outcome`] is computed from what happened.

use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::clock::Clock;
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::flow::{ERROR_FIELD, Flow, Step, Target};
use crate::raw::Node;
use crate::redact::MASK;
use crate::source::Source;
use crate::state::RunState;
use crate::steps::{Next, StepCx, StepError, StepKind};
use crate::trace::{EventKind, Outcome, Recorder, RunStatus, Trace, TraceEvent};
use crate::transport::Transport;

/// Values for input fields, from `--set` and `--input`.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    /// `NAME=VALUE` pairs, in the order given; later ones win.
    pub set: Vec<(String, String)>,
    /// A JSON or YAML mapping, with the file it came from.
    pub file: Option<(Arc<Source>, Node)>,
}

/// Builds the starting state: `--set`, then `--input`, then the environment,
/// then defaults. Every problem is reported, each naming the field.
pub fn initial_state(
    flow: &Flow,
    inputs: &Inputs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RunState, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let names = || flow.fields.keys().map(String::as_str);
    let settable = |name: &str| {
        flow.fields
            .get(name)
            .is_some_and(|f| f.input || f.env.is_some())
    };
    for (name, _) in &inputs.set {
        if !flow.fields.contains_key(name) {
            problems.push(
                Diagnostic::error(format!("`--set {name}=…`: the flow has no field `{name}`"))
                    .help_opt(did_you_mean(name, names())),
            );
        } else if !settable(name) {
            problems.push(
                Diagnostic::error(format!("`--set {name}=…`: field `{name}` is not an input"))
                    .help(format!(
                        "declare it with `input: true` in `{}`",
                        flow.source.name
                    )),
            );
        }
    }
    let mut from_file: IndexMap<String, Value> = IndexMap::new();
    if let Some((source, node)) = &inputs.file {
        match node.as_map() {
            Some(entries) => {
                for (k, v) in entries {
                    let name = k.scalar_text().unwrap_or_default();
                    if !flow.fields.contains_key(&name) {
                        problems.push(
                            Diagnostic::error(format!("the flow has no field `{name}`"))
                                .at(source, k.span)
                                .help_opt(did_you_mean(&name, names())),
                        );
                    } else if !settable(&name) {
                        problems.push(
                            Diagnostic::error(format!("field `{name}` is not an input"))
                                .at(source, k.span),
                        );
                    } else {
                        from_file.insert(name, v.to_json());
                    }
                }
            }
            None => problems.push(
                Diagnostic::error("an input file is a mapping of field names to values")
                    .at(source, node.span),
            ),
        }
    }
    let mut state = RunState {
        visits: vec![0; flow.steps.len()],
        ..RunState::default()
    };
    for field in flow.fields.values() {
        let from_set = inputs
            .set
            .iter()
            .rev()
            .find(|(n, _)| n == &field.name)
            .map(|(_, v)| v);
        let (value, origin) = if let Some(text) = from_set {
            (field.ty.from_input(text), format!("`--set {}`", field.name))
        } else if let Some(v) = from_file.get(&field.name) {
            (field.ty.coerce(v.clone()), "the input file".to_string())
        } else if let Some(text) = field.env.as_deref().and_then(env) {
            (
                field.ty.from_input(&text),
                format!("${}", field.env.as_deref().unwrap_or_default()),
            )
        } else if let Some(default) = &field.default {
            (Ok(default.clone()), "its default".to_string())
        } else if field.is_required() {
            let how = match (&field.env, field.input) {
                (Some(var), true) => format!("pass `--set {}=VALUE` or set ${var}", field.name),
                (Some(var), false) => format!("set the environment variable ${var}"),
                _ => format!("pass `--set {}=VALUE`", field.name),
            };
            problems.push(
                Diagnostic::error(format!(
                    "missing input `{}` ({})",
                    field.name,
                    field.ty.name()
                ))
                .at(&flow.source, field.span)
                .label("required")
                .help(how),
            );
            continue;
        } else {
            (Ok(field.ty.empty()), String::new())
        };
        match value {
            Ok(v) => {
                state.fields.insert(field.name.clone(), v);
            }
            Err(e) => problems.push(
                Diagnostic::error(format!(
                    "invalid value for `{}` from {origin}: {e}",
                    field.name
                ))
                .at(&flow.source, field.span)
                .label(format!("declared as {}", field.ty.name())),
            ),
        }
        if field.secret {
            state.secret.insert(field.name.clone());
        }
    }
    if problems.is_empty() {
        Ok(state)
    } else {
        Err(problems)
    }
}

/// A finished run.
pub struct RunResult {
    pub trace: Trace,
    pub outcome: Outcome,
    pub state: RunState,
}

pub struct Engine<'a> {
    pub flow: &'a Flow,
    pub clock: &'a dyn Clock,
    pub transport: &'a dyn Transport,
    pub dry_run: bool,
}

impl Engine<'_> {
    pub async fn run(
        &self,
        mut state: RunState,
        observer: &mut (dyn FnMut(&TraceEvent) + Send),
    ) -> RunResult {
        let flow = self.flow;
        let mut rec = Recorder::new(self.clock, observer);
        for literal in &flow.literal_secrets {
            rec.redactor.add_secret(literal);
        }
        for name in &state.secret {
            if let Some(v) = state.fields.get(name) {
                rec.redactor.add_secret_value(v);
            }
        }
        let shown_fields = flow
            .fields
            .values()
            .filter(|f| f.input || f.env.is_some())
            .map(|f| {
                let v = if state.secret.contains(&f.name) {
                    Value::String(MASK.to_string())
                } else {
                    state.fields.get(&f.name).cloned().unwrap_or(Value::Null)
                };
                (f.name.clone(), v)
            })
            .collect();
        rec.emit(
            None,
            EventKind::FlowStarted {
                flow: flow.name.clone(),
                dry_run: self.dry_run,
                fields: shown_fields,
            },
        );
        let (status, at_step, reason) = loop {
            let index = state.pc;
            let step = &flow.steps[index];
            if state.steps_taken >= flow.max_steps {
                let reason = budget_reason(flow, &state, index);
                rec.emit(
                    Some(&step.id),
                    EventKind::StepFailed {
                        kind: step.kind.name().to_string(),
                        error: reason.clone(),
                        hint: Some(
                            "raise `max_steps`, or make the loop's decision leave sooner"
                                .to_string(),
                        ),
                        error_kind: "budget".to_string(),
                        status: None,
                        handled_by: None,
                    },
                );
                break (RunStatus::Failed, Some(step.id.clone()), reason);
            }
            state.enter(index);
            rec.emit(
                Some(&step.id),
                EventKind::StepStarted {
                    kind: step.kind.name().to_string(),
                },
            );
            let result = {
                let mut cx = StepCx {
                    flow,
                    step,
                    state: &mut state,
                    clock: self.clock,
                    transport: self.transport,
                    rec: &mut rec,
                };
                step.kind.run(&mut cx).await
            };
            let target = match result {
                Ok(Next::Continue) => flow.next_after(index),
                Ok(Next::Goto(t)) => t,
                Ok(Next::End(message)) => {
                    let reason = message.unwrap_or_else(|| format!("ended at step `{}`", step.id));
                    break (RunStatus::Succeeded, Some(step.id.clone()), reason);
                }
                Ok(Next::Fail(message)) => {
                    break (RunStatus::Failed, Some(step.id.clone()), message);
                }
                Err(e) => {
                    let kind = step.kind.name();
                    rec.emit(
                        Some(&step.id),
                        EventKind::StepFailed {
                            kind: kind.to_string(),
                            error: e.message.clone(),
                            hint: e.hint.clone(),
                            error_kind: e.kind.as_str().to_string(),
                            status: e.status,
                            handled_by: step.on_error.map(|t| flow.target_name(t).to_string()),
                        },
                    );
                    if let Some(target) = step.on_error {
                        catch(&mut state, &mut rec, step, &e);
                        target
                    } else {
                        break (
                            RunStatus::Failed,
                            Some(step.id.clone()),
                            format!("step `{}` ({kind}) failed: {}", step.id, e.message),
                        );
                    }
                }
            };
            rec.emit(
                Some(&step.id),
                EventKind::StepFinished {
                    next: flow.target_name(target).to_string(),
                },
            );
            match target {
                Target::Step(next) => state.pc = next,
                Target::End => {
                    let reason = format!("reached the end after step `{}`", step.id);
                    break (RunStatus::Succeeded, Some(step.id.clone()), reason);
                }
            }
        };
        let outcome = outcome_of(
            flow, &rec.trace, &state, status, at_step, reason, self.clock,
        );
        rec.emit(None, EventKind::FlowFinished(outcome.clone()));
        // The outcome as recorded (and redacted) is the one reported.
        let outcome = match rec.trace.events.last().map(|e| &e.kind) {
            Some(EventKind::FlowFinished(o)) => o.clone(),
            _ => outcome,
        };
        RunResult {
            trace: rec.trace,
            outcome,
            state,
        }
    }
}

/// Hands a caught failure to the flow as the `error` field. The message is
/// stored redacted: a flow may send it on, and it must not carry a secret.
fn catch(state: &mut RunState, rec: &mut Recorder<'_>, step: &Step, e: &StepError) {
    let value = serde_json::json!({
        "step": step.id,
        "kind": e.kind.as_str(),
        "status": e.status,
        "message": rec.redactor.redact(&e.message),
        "hint": e.hint,
    });
    state.fields.insert(ERROR_FIELD.to_string(), value.clone());
    state.secret.remove(ERROR_FIELD);
    rec.emit(
        Some(&step.id),
        EventKind::FieldSet {
            field: ERROR_FIELD.to_string(),
            value,
        },
    );
}

fn budget_reason(flow: &Flow, state: &RunState, index: usize) -> String {
    let mut reason = format!(
        "the step budget ran out after {} steps (`max_steps: {}`)",
        state.steps_taken, flow.max_steps
    );
    if let Some(cycle) = state.loop_ending_at(index) {
        let names: Vec<&str> = cycle.iter().map(|&i| flow.steps[i].id.as_str()).collect();
        let runs = state.visits.get(index).copied().unwrap_or(0);
        reason.push_str(&format!(
            " in the loop {} ({runs} rounds)",
            names.join(" → ")
        ));
    }
    reason
}

/// Derives how the run ended from its trace: the last branch and its tries.
fn outcome_of(
    flow: &Flow,
    trace: &Trace,
    state: &RunState,
    status: RunStatus,
    at_step: Option<String>,
    reason: String,
    clock: &dyn Clock,
) -> Outcome {
    let last_decision = trace
        .events
        .iter()
        .rev()
        .find_map(|e| match (&e.kind, &e.step) {
            (EventKind::DecisionTaken { goto, .. }, Some(step)) => {
                Some((step.clone(), goto.clone()))
            }
            _ => None,
        });
    let (last_branch, tries) = match last_decision {
        Some((step, goto)) => {
            let index = flow
                .steps
                .iter()
                .position(|s| s.id == step && matches!(s.kind, StepKind::Decision(_)));
            let tries = index.and_then(|i| state.visits.get(i).copied());
            (Some(format!("{step} → {goto}")), tries)
        }
        None => (None, None),
    };
    Outcome {
        status,
        at_step,
        reason,
        last_branch,
        tries,
        steps_taken: state.steps_taken,
        elapsed_ms: clock.elapsed().as_millis() as u64,
    }
}
