//! Runs a validated flow: inputs in, a trace and an outcome out.
//!
//! The engine holds no global state: the [`Clock`] and [`Transport`] are
//! injected, the run's state is a plain [`RunState`], and events go to an
//! observer as they happen. Once a run starts nothing returns `Err`: failures
//! are trace events, and the [`Outcome`] is computed from what happened.
//!
//! A *durable* run also hands its progress to
//! [`checkpoint::Checkpoints`]: after every
//! step, while it waits in a timer (with `wake_at`), and just before a
//! request that must not be sent twice. Such a run can stop anywhere (kill -9)
//! and go on from its last checkpoint: a timer waits only what is left, a
//! step that was under way runs again, except a request that may have reached
//! the server and is not safe to repeat, which fails as `in_doubt`.

pub mod checkpoint;
pub mod picture;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::engine::checkpoint::{Checkpoints, DurableStatus, Progress, Saved};
use crate::language::fields::ERROR_FIELD;
use crate::language::flow::{Flow, Step};
use crate::language::target::Target;
use crate::run::clock::{Clock, unix_ms};
use crate::run::redact::MASK;
use crate::run::state::RunState;
use crate::run::step::{ErrorKind, FlowParts, Here, Next, StepCx, StepError};
use crate::run::trace::{EventKind, Outcome, Recorder, RunStatus, TraceEvent};
use crate::run::transport::Transport;
use crate::steps::StepKind;

/// A finished run, or one that stopped at a checkpoint to go on later. Its
/// trace went to the observer as it happened.
pub struct RunResult {
    pub outcome: Outcome,
    pub state: RunState,
    /// The run is not over: it waits in a timer as a row (`suspend_timers`),
    /// or it stopped for a shutdown. Its last checkpoint says where it is, and
    /// no `flow_finished` was recorded.
    pub paused: bool,
}

/// What makes a run durable: where its checkpoints go, and, when it goes on
/// from one, why.
pub struct Durable<'a> {
    pub checkpoints: &'a dyn Checkpoints,
    /// Set when the run resumes: "the process was restarted", say.
    pub resumed: Option<String>,
    /// The worker service: a timer ends the run's turn, and the run waits as
    /// a row with `wake_at` (no task, no thread) until the scheduler wakes it.
    pub suspend_timers: bool,
    /// The scheduler woke the run from its timer: it goes on quietly.
    pub woken: bool,
}

impl<'a> Durable<'a> {
    /// A run checkpointed into `checkpoints`, waiting in its own timers.
    pub fn new(checkpoints: &'a dyn Checkpoints) -> Durable<'a> {
        Durable {
            checkpoints,
            resumed: None,
            suspend_timers: false,
            woken: false,
        }
    }
}

/// Why a run's turn ended before the run did.
const PAUSED: &str = "paused at a checkpoint";

pub struct Engine<'a> {
    /// The run's id, on every trace event.
    pub run_id: String,
    pub flow: &'a Flow,
    pub clock: &'a dyn Clock,
    pub transport: &'a dyn Transport,
    pub dry_run: bool,
    pub durable: Option<Durable<'a>>,
    /// Set when the process is asked to stop (a shutdown, Ctrl-C in a batch):
    /// the run stops before its next step. A durable run is then paused at
    /// its last checkpoint; any other run ends as interrupted.
    pub stop: Option<&'a AtomicBool>,
    /// App tokens shared with other runs (a batch, `serve`); without, the
    /// run keeps its own.
    pub tokens: Option<&'a crate::run::tokens::TokenCache>,
    /// Whether anyone reads the trace. A quiet batch with no trace output
    /// has no reader: the run then builds no event (a durable run still
    /// does, for its checkpoints). Secrets are hunted all the same.
    pub traced: bool,
}

/// How the run ended: its status, the step, and why.
type Ending = (RunStatus, Option<String>, String);

impl Engine<'_> {
    pub async fn run(
        &self,
        mut state: RunState,
        observer: &mut (dyn FnMut(&TraceEvent) + Send),
    ) -> RunResult {
        let flow = self.flow;
        let mut rec = Recorder::new(&self.run_id, self.clock, observer);
        let own_tokens = crate::run::tokens::TokenCache::default();
        let tokens = self.tokens.unwrap_or(&own_tokens);
        let step_ids: Vec<&str> = flow.steps.iter().map(|s| s.id.as_str()).collect();
        let parts = FlowParts {
            fields: &flow.fields,
            env: &flow.env,
            auth: flow.auth.as_ref(),
            destinations: &flow.destinations,
            step_ids: &step_ids,
        };
        if self.durable.is_some() {
            rec.keep_events(state.last_seq);
        }
        rec.readers = self.traced;
        rec.redactor = crate::run::redact::Redactor::for_run(&flow.literal_secrets, &[&state]);
        let resumed = self.durable.as_ref().and_then(|d| d.resumed.clone());
        let woken = self.durable.as_ref().is_some_and(|d| d.woken);
        match &resumed {
            _ if woken => {}
            Some(why) => rec.emit(
                None,
                EventKind::RunResumed {
                    at_step: flow.steps[state.pc].id.clone(),
                    why: why.clone(),
                },
            ),
            None => self.start(&state, &mut rec),
        }
        // Only the first step after a restart can find its request in flight.
        let mut in_flight = resumed.is_some() && state.in_flight == Some(state.pc);
        let mut paused = false;
        let (status, at_step, reason) = loop {
            let index = state.pc;
            let step = &flow.steps[index];
            if self.stopping() {
                if self.durable.is_some() {
                    paused = true;
                    break (
                        RunStatus::Interrupted,
                        Some(step.id.clone()),
                        PAUSED.to_string(),
                    );
                }
                let reason = format!(
                    "stopped before step `{}`, as asked; nothing was in flight",
                    step.id
                );
                break (RunStatus::Interrupted, Some(step.id.clone()), reason);
            }
            if let Some(wake_ms) = state.wake_at_ms {
                // In a timer: wait what is left of it, then go on.
                self.wait(&mut rec, step, wake_ms, state.timer_ms).await;
                state.wake_at_ms = None;
                state.timer_ms = None;
                match self.finish_step(&mut state, &mut rec, step, flow.next_after(index)) {
                    Some(ending) => break ending,
                    None => {
                        if let Err(ending) = self
                            .save(&state, &mut rec, DurableStatus::Running, None)
                            .await
                        {
                            break ending;
                        }
                        continue;
                    }
                }
            }
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
                    kind: step.kind.name().into(),
                },
            );
            let doubtful = std::mem::take(&mut in_flight) && step.kind.unrepeatable();
            let result = if doubtful {
                Err(in_doubt(step))
            } else {
                if self.durable.is_some() && step.kind.unrepeatable() {
                    // Say so before it goes, so that a restart knows it may have gone.
                    state.in_flight = Some(index);
                    if let Err(ending) = self
                        .save(&state, &mut rec, DurableStatus::Running, None)
                        .await
                    {
                        break ending;
                    }
                }
                let mut cx = StepCx {
                    flow: parts,
                    step: Here {
                        id: &step.id,
                        output: &step.output,
                        uses_auth: step.kind.uses_auth(),
                        next: flow.next_after(index),
                    },
                    state: &mut state,
                    clock: self.clock,
                    transport: self.transport,
                    rec: &mut rec,
                    tokens,
                    fetching_token: false,
                };
                step.kind.run(&mut cx).await
            };
            state.in_flight = None;
            let target = match result {
                Ok(Next::Continue) => flow.next_after(index),
                Ok(Next::Goto(t)) => t,
                Ok(Next::WaitUntil(wake)) => {
                    // Durable timers: the run waits as a row with `wake_at`.
                    state.wake_at_ms = Some(unix_ms(wake));
                    state.timer_ms = Some(
                        wake.duration_since(self.clock.now())
                            .unwrap_or_default()
                            .as_millis() as u64,
                    );
                    if let Err(ending) = self
                        .save(&state, &mut rec, DurableStatus::Waiting, None)
                        .await
                    {
                        break ending;
                    }
                    if self.durable.as_ref().is_some_and(|d| d.suspend_timers) {
                        paused = true;
                        break (
                            RunStatus::Interrupted,
                            Some(step.id.clone()),
                            PAUSED.to_string(),
                        );
                    }
                    continue;
                }
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
            if let Some(ending) = self.finish_step(&mut state, &mut rec, step, target) {
                break ending;
            }
            if let Err(ending) = self
                .save(&state, &mut rec, DurableStatus::Running, None)
                .await
            {
                break ending;
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
        if paused {
            // Not over: the last checkpoint says where it goes on from.
            return RunResult {
                outcome,
                state,
                paused,
            };
        }
        rec.emit(None, EventKind::FlowFinished(outcome.clone()));
        // The outcome reported is redacted like the one recorded.
        let mut redacted = EventKind::FlowFinished(outcome.clone());
        redacted.redact(&rec.redactor);
        if let EventKind::FlowFinished(o) = redacted {
            outcome = o;
        }
        let last = match outcome.status {
            RunStatus::Succeeded => Some(DurableStatus::Succeeded),
            RunStatus::Failed => Some(DurableStatus::Failed),
            RunStatus::Canceled => Some(DurableStatus::Canceled),
            // Stopped from outside: the last checkpoint stands, to resume from.
            RunStatus::Interrupted => None,
        };
        if let Some(last) = last
            && outcome.status != RunStatus::Canceled
        {
            // Refused (another process holds the run; its ending stands) or
            // not kept: this process says so rather than claim the ending.
            if let Err((status, _, reason)) =
                self.save(&state, &mut rec, last, Some(&outcome)).await
            {
                outcome.status = status;
                outcome.reason = reason;
            }
        }
        RunResult {
            outcome,
            state,
            paused,
        }
    }

    /// Whether the process shuts down, so the run should stop at this checkpoint.
    fn stopping(&self) -> bool {
        self.stop.is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// The first event of a fresh run: the flow, its inputs, the route.
    fn start(&self, state: &RunState, rec: &mut Recorder<'_>) {
        if !rec.listening() {
            return;
        }
        let shown_fields = self
            .flow
            .fields
            .values()
            .filter(|f| f.input || f.env.is_some())
            .map(|f| {
                let v = if state.secret.contains(&f.name) {
                    Value::String(MASK.to_string())
                } else {
                    state
                        .get(&f.name)
                        .map_or(Value::Null, crate::run::trace::bounded)
                };
                (f.name.clone(), v)
            })
            .collect();
        rec.emit(
            None,
            EventKind::FlowStarted {
                flow: self.flow.name.clone(),
                dry_run: self.dry_run,
                fields: shown_fields,
                route: self.transport.route(),
            },
        );
    }

    /// Records where control goes after a step; an ending when it is the end.
    fn finish_step(
        &self,
        state: &mut RunState,
        rec: &mut Recorder<'_>,
        step: &Step,
        target: Target,
    ) -> Option<Ending> {
        rec.emit(
            Some(&step.id),
            EventKind::StepFinished {
                next: self.flow.target_name(target).to_string(),
            },
        );
        match target {
            Target::Step(next) => {
                state.pc = next;
                None
            }
            Target::End => Some((
                RunStatus::Succeeded,
                Some(step.id.clone()),
                format!("reached the end after step `{}`", step.id),
            )),
        }
    }

    /// Waits until `wake_ms` on the run's clock, saying now and then that it
    /// still waits when the clock asks for heartbeats.
    async fn wait(&self, rec: &mut Recorder<'_>, step: &Step, wake_ms: i64, timer_ms: Option<u64>) {
        let now = unix_ms(self.clock.now());
        let mut left = Duration::from_millis(wake_ms.saturating_sub(now).max(0) as u64);
        let total = timer_ms.map_or(left, Duration::from_millis).max(left);
        if let Some(every) = self.clock.heartbeat().filter(|e| !e.is_zero()) {
            while left > every {
                self.clock.sleep(every).await;
                left -= every;
                rec.emit(
                    Some(&step.id),
                    EventKind::TimerWaiting {
                        left_ms: left.as_millis() as u64,
                    },
                );
            }
        }
        self.clock.sleep(left).await;
        rec.emit(
            Some(&step.id),
            EventKind::TimerWaited {
                duration_ms: total.as_millis() as u64,
            },
        );
    }

    /// Hands a durable run's progress to its checkpoints. An ending when the
    /// run must stop: canceled meanwhile, or the checkpoint could not be kept.
    async fn save(
        &self,
        state: &RunState,
        rec: &mut Recorder<'_>,
        status: DurableStatus,
        outcome: Option<&Outcome>,
    ) -> Result<(), Ending> {
        let Some(durable) = &self.durable else {
            return Ok(());
        };
        let mut state = state.clone();
        state.last_seq = rec.seq();
        let step = self.flow.steps.get(state.pc).map(|s| s.id.clone());
        let progress = Progress {
            state: &state,
            status,
            step: step.as_deref(),
            outcome,
            events: rec.take_events(),
        };
        match durable.checkpoints.save(progress).await {
            Ok(Saved::Saved) => Ok(()),
            Ok(Saved::Canceled) => Err((
                RunStatus::Canceled,
                step,
                "the run was canceled".to_string(),
            )),
            // Another process goes on with it; this one must write nothing more.
            Ok(Saved::Lost) => Err((
                RunStatus::Interrupted,
                step,
                "another process holds this run now (this one's lease ran out), so this one stops"
                    .to_string(),
            )),
            Err(e) => Err((
                RunStatus::Failed,
                step,
                format!("its checkpoint could not be kept, so the run stopped: {e}"),
            )),
        }
    }
}

/// The failure of a step whose request may have reached the server before
/// the process stopped, and which is not safe to send twice.
fn in_doubt(step: &Step) -> StepError {
    StepError::new(format!(
        "the process stopped while step `{}` had a request in flight; it may have reached the server, and sending it again could act twice, so it is not sent again",
        step.id
    ))
    .kind(ErrorKind::InDoubt)
    .hint("catch it with `on_error` and check by other means, or give the step an `idempotency_key` so that sending it again is safe")
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
