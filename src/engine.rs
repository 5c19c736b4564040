//! Runs a validated flow: inputs in, a trace and an outcome out.
//!
//! The engine holds no global state: the [`Clock`] and [`Transport`] are
//! injected, the run's state is a plain [`RunState`], and events go to an
//! observer as they happen. Once a run starts nothing returns `Err`: failures
//! are trace events, and the [`Outcome`] is computed from what happened.

use serde_json::Value;

use crate::clock::Clock;
use crate::flow::{ERROR_FIELD, Flow, Step, Target};
use crate::redact::MASK;
use crate::state::RunState;
use crate::steps::{Next, StepCx, StepError, StepKind};
use crate::trace::{EventKind, Outcome, Recorder, RunStatus, TraceEvent};
use crate::transport::Transport;

pub use crate::inputs::{Inputs, initial_state};

/// A finished run. Its trace went to the observer as it happened.
pub struct RunResult {
    pub outcome: Outcome,
    pub state: RunState,
}

pub struct Engine<'a> {
    /// The run's id, on every trace event.
    pub run_id: String,
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
        let mut rec = Recorder::new(&self.run_id, self.clock, observer);
        for literal in &flow.literal_secrets {
            rec.redactor.add_secret(literal);
        }
        for name in &state.secret {
            if let Some(v) = state.get(name) {
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
                    state
                        .get(&f.name)
                        .map_or(Value::Null, crate::trace::bounded)
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
                route: self.transport.route(),
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
                // The step redacted its message: it is data in handoff's wording.
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
        let mut outcome = outcome_of(
            flow,
            rec.last_decision.clone(),
            &state,
            status,
            at_step,
            reason,
            self.clock,
        );
        rec.emit(None, EventKind::FlowFinished(outcome.clone()));
        // The outcome reported is redacted like the one recorded.
        let mut redacted = EventKind::FlowFinished(outcome.clone());
        redacted.redact(&rec.redactor);
        if let EventKind::FlowFinished(o) = redacted {
            outcome = o;
        }
        RunResult { outcome, state }
    }
}

/// Hands a caught failure to the flow as the `error` field. The message
/// carries no secret (its data was redacted as it was put in): a flow may
/// send it on.
fn catch(state: &mut RunState, rec: &mut Recorder<'_>, step: &Step, e: &StepError) {
    let value = serde_json::json!({
        "step": step.id,
        "kind": e.kind.as_str(),
        "status": e.status,
        "message": rec.redactor.redact_wording(&e.message),
        "hint": e.hint,
    });
    state.set(ERROR_FIELD, value.clone());
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

/// How the run ended: the last branch and its tries.
fn outcome_of(
    flow: &Flow,
    last_decision: Option<(String, String)>,
    state: &RunState,
    status: RunStatus,
    at_step: Option<String>,
    reason: String,
    clock: &dyn Clock,
) -> Outcome {
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
