//! One item of a `for_each`: its block's steps, run in the item's own state
//! and traced into a recorder of its own, which the `for_each` forwards into
//! the run's trace when the item is over.
//!
//! Control stays in the block: `end` (or falling off its last step) ends the
//! item, `fail` or an uncaught failure fails it. A timer inside an item
//! waits in place, on the run's clock, rather than as a row: the item holds
//! its place among those under way. Each item has the flow's `max_steps`.

use std::time::Duration;

use serde_json::Value;

use crate::language::fields::ERROR_FIELD;
use crate::language::flow::{Block, Flow, Step};
use crate::language::target::Target;
use crate::run::clock::Clock;
use crate::run::redact::{MASK, Redactor};
use crate::run::state::RunState;
use crate::run::step::{FlowParts, Here, ItemRun, Next, StepCx, StepError};
use crate::run::trace::{EventKind, Recorder, TraceEvent};
use crate::run::transport::Transport;

/// What an item runs with: the same flow, clock and transport as its run.
pub struct ItemCx<'a> {
    pub run_id: &'a str,
    pub flow: &'a Flow,
    pub parts: FlowParts<'a>,
    pub clock: &'a dyn Clock,
    pub transport: &'a dyn Transport,
    pub tokens: &'a crate::run::tokens::TokenCache,
}

impl ItemCx<'_> {
    /// An item's starting state: the fields the block reads, its own empty,
    /// and the item itself.
    pub fn state(&self, block: &Block, outer: &RunState, item: Value, secret: bool) -> RunState {
        let mut state = RunState {
            visits: vec![0; self.flow.steps.len()],
            ..RunState::default()
        };
        for name in &block.reads {
            if let Some(v) = outer.get(name) {
                state.set(name, v.clone());
            }
            if outer.secret.contains(name) {
                state.secret.insert(name.clone());
            }
        }
        for name in &block.locals {
            let decl = &self.flow.fields[name];
            let value = decl.default.clone().unwrap_or_else(|| decl.ty.empty());
            state.set(name, value);
            if decl.secret {
                state.secret.insert(name.clone());
            }
        }
        state.set(&block.item, item);
        if secret {
            state.secret.insert(block.item.clone());
        }
        state
    }

    /// Runs item `index` through the block, from its first step.
    pub async fn run(
        &self,
        block: &Block,
        (index, total): (usize, usize),
        mut state: RunState,
        redactor: Redactor,
        listening: bool,
    ) -> ItemRun {
        let mut events: Vec<TraceEvent> = Vec::new();
        let mut observer = |e: &TraceEvent| events.push(e.clone());
        let mut rec = Recorder::new(self.run_id, self.clock, &mut observer);
        rec.redactor = redactor;
        rec.readers = listening;
        if rec.listening() {
            let shown = if state.secret.contains(&block.item) {
                Value::String(MASK.to_string())
            } else {
                state
                    .get(&block.item)
                    .map_or(Value::Null, crate::run::trace::bounded)
            };
            rec.emit(
                Some(&self.flow.steps[block.owner].id),
                EventKind::ItemStarted {
                    index: index as u64,
                    of: total as u64,
                    item: shown,
                },
            );
        }
        let failure = self.steps(block, &mut state, &mut rec).await;
        let redactor = std::mem::take(&mut rec.redactor);
        drop(rec);
        ItemRun {
            index,
            state,
            events,
            redactor,
            failure,
        }
    }

    /// The block's steps; why the item failed, when it did.
    async fn steps(
        &self,
        block: &Block,
        state: &mut RunState,
        rec: &mut Recorder<'_>,
    ) -> Option<StepError> {
        let flow = self.flow;
        let mut pc = block.steps.start;
        let mut taken = 0u64;
        loop {
            let step = &flow.steps[pc];
            if taken >= flow.max_steps {
                let e = StepError::new(format!(
                    "the item's step budget ran out after {taken} steps (`max_steps: {}`)",
                    flow.max_steps
                ))
                .hint("raise `max_steps`, or make the block's loop leave sooner");
                rec.emit(Some(&step.id), failed(step, &e, None));
                return Some(e);
            }
            taken += 1;
            state.enter(pc);
            rec.emit(
                Some(&step.id),
                EventKind::StepStarted {
                    kind: step.kind.name().into(),
                },
            );
            let next = flow.next_after(pc);
            let result = {
                let mut cx = StepCx {
                    flow: self.parts,
                    step: Here {
                        id: &step.id,
                        output: &step.output,
                        uses_auth: step.kind.uses_auth(),
                        next,
                    },
                    state: &mut *state,
                    clock: self.clock,
                    transport: self.transport,
                    rec: &mut *rec,
                    tokens: self.tokens,
                    fetching_token: false,
                    blocks: None,
                    ahead: None,
                    // An item's events are numbered again when forwarded:
                    // its requests' spans are not known yet, so none is named.
                    trace: None,
                };
                step.kind.run(&mut cx).await
            };
            let target = match result {
                Ok(Next::Continue) => next,
                Ok(Next::Goto(t)) => t,
                Ok(Next::WaitUntil(wake)) => {
                    let left = wake
                        .duration_since(self.clock.now())
                        .unwrap_or(Duration::ZERO);
                    self.clock.sleep(left).await;
                    rec.emit(
                        Some(&step.id),
                        EventKind::TimerWaited {
                            duration_ms: left.as_millis() as u64,
                        },
                    );
                    next
                }
                Ok(Next::End(_)) => return None,
                Ok(Next::Fail(message)) => return Some(StepError::new(message)),
                Ok(Next::Pause | Next::WaitFor { .. }) => {
                    return Some(StepError::new(format!(
                        "step `{}` paused inside an item",
                        step.id
                    )));
                }
                Err(e) => {
                    let handled = step.on_error.map(|t| flow.target_name(t).to_string());
                    rec.emit(Some(&step.id), failed(step, &e, handled));
                    match step.on_error {
                        Some(t) => {
                            catch(state, rec, step, &e);
                            t
                        }
                        None => {
                            return Some(StepError {
                                message: format!(
                                    "step `{}` ({}) failed: {}",
                                    step.id,
                                    step.kind.name(),
                                    e.message
                                ),
                                ..e
                            });
                        }
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
                Target::Step(i) => pc = i,
                Target::End => return None,
            }
        }
    }
}

fn failed(step: &Step, e: &StepError, handled_by: Option<String>) -> EventKind {
    EventKind::StepFailed {
        kind: step.kind.name().to_string(),
        error: e.message.clone(),
        hint: e.hint.clone(),
        error_kind: e.kind.as_str().to_string(),
        status: e.status,
        handled_by,
    }
}

/// Hands a caught failure to the flow as the `error` field. The message
/// carries no secret (its data was redacted as it was put in): a flow may
/// send it on.
pub fn catch(state: &mut RunState, rec: &mut Recorder<'_>, step: &Step, e: &StepError) {
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
