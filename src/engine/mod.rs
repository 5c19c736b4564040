//! Runs a validated flow: inputs in, a trace and an outcome out.
//!
//! The engine holds no global state: the [`Clock`] and [`Transport`] are
//! injected, the run's state is a plain [`RunState`], and events go to an
//! observer as they happen. Once a run starts nothing returns `Err`: failures
//! are trace events, and the [`Outcome`] is computed from what happened.
//!
//! A *durable* run also hands its progress to
//! [`checkpoint::Checkpoints`]: before a request leaves while an earlier
//! answer is not on record (a step that sends requests, or only reads and
//! writes fields, goes in with the next checkpoint, and a restart computes
//! it again), after a step that does anything else outside the run, while it
//! waits in a timer (with `wake_at`), just before a step whose request must
//! not be sent twice, and ahead of every request that is not idempotent,
//! with that request's event (write-ahead: a restart cannot lose it from the
//! trace, and the resumed run says it may have landed).
//! Such a run can stop anywhere (kill -9)
//! and go on from its last checkpoint: a timer waits only what is left, a
//! step that was under way runs again, except a request that may have reached
//! the server and is not safe to repeat, which fails as `in_doubt`.

pub mod checkpoint;
pub mod item;
pub mod picture;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::engine::checkpoint::{Checkpoints, DurableStatus, Progress, Saved};
use crate::engine::item::{ItemCx, catch};
use crate::language::flow::{Flow, Step};
use crate::language::target::Target;
use crate::run::clock::BoxFuture;
use crate::run::clock::{Clock, unix_ms};
use crate::run::redact::MASK;
use crate::run::redact::Redactor;
use crate::run::signals::{Nowhere, Signals};
use crate::run::state::RunState;
use crate::run::state::{Wait, Waited};
use crate::run::step::{Blocks, ErrorKind, FlowParts, Here, ItemRun, Next, StepCx, StepError};
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

/// What a step borrows of its engine for checkpoints within it: a
/// `for_each`'s items run with the run's flow, clock and transport, and
/// checkpoint through the run's store; a request writes ahead through it.
struct Items<'e, 'a> {
    engine: &'e Engine<'a>,
    cx: ItemCx<'e>,
    /// Why the run must stop, when a checkpoint within the step (between
    /// items, or ahead of a request) was refused.
    ending: Mutex<Option<Ending>>,
}

impl Blocks for Items<'_, '_> {
    fn durable(&self) -> bool {
        self.engine.durable.is_some()
    }

    fn stopping(&self) -> bool {
        self.engine.stopping()
    }

    fn unrepeatable(&self, block: usize) -> bool {
        self.cx.flow.blocks[block].unrepeatable
    }

    fn item_state(&self, block: usize, outer: &RunState, item: Value, secret: bool) -> RunState {
        self.cx
            .state(&self.cx.flow.blocks[block], outer, item, secret)
    }

    fn run_item(
        &self,
        block: usize,
        index: (usize, usize),
        state: RunState,
        redactor: Redactor,
        listening: bool,
    ) -> BoxFuture<'_, ItemRun> {
        Box::pin(self.cx.run(
            &self.cx.flow.blocks[block],
            index,
            state,
            redactor,
            listening,
        ))
    }

    fn checkpoint<'a>(
        &'a self,
        state: &'a RunState,
        rec: &'a mut Recorder<'_>,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            match self
                .engine
                .save_as(state, rec, DurableStatus::Running, None, Saving::OnlyEach)
                .await
            {
                Ok(()) => true,
                Err(ending) => {
                    if let Ok(mut slot) = self.ending.lock() {
                        *slot = Some(ending);
                    }
                    false
                }
            }
        })
    }
}

/// Why a run's turn ended before the run did.
const PAUSED: &str = "paused at a checkpoint";

/// The most events a durable run keeps unsaved across steps that touch
/// nothing outside it (a loop of `set` and `decision`), before a checkpoint.
const UNSAVED_EVENTS: usize = 256;

/// What a checkpoint writes: the whole state, or only a `for_each`'s
/// progress; and, as a run starts to wait, whether it leaves this process.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Saving {
    Whole,
    OnlyEach,
    Leaving(bool),
}

/// A durable run left at its last checkpoint, at `step`, for a later turn.
fn paused_at(step: &str) -> Ending {
    (
        RunStatus::Interrupted,
        Some(step.to_string()),
        PAUSED.to_string(),
    )
}

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
    /// Where a `wait_for` gets its signal and its resume URLs; without, the
    /// run cannot be signalled, and a `wait_for` fails.
    pub signals: Option<&'a dyn Signals>,
}

/// How the run ended: its status, the step, and why.
type Ending = (RunStatus, Option<String>, String);

impl Engine<'_> {
    /// A run that now waits (a timer, a signal) is kept as a waiting row;
    /// under `serve` it then leaves this process, for the scheduler to wake.
    /// `Some` ends the loop: the ending, and whether the run was parked.
    async fn wait_as_row(
        &self,
        state: &RunState,
        rec: &mut Recorder<'_>,
        step: &str,
    ) -> Option<(Ending, bool)> {
        let leaves = self.durable.as_ref().is_some_and(|d| d.suspend_timers);
        if let Err(ending) = self
            .save_as(
                state,
                rec,
                DurableStatus::Waiting,
                None,
                Saving::Leaving(leaves),
            )
            .await
        {
            return Some((ending, false));
        }
        leaves.then(|| (paused_at(step), true))
    }
}

/// A refused write-ahead (canceled, or the lease lost) stops the run as a
/// refused checkpoint does: the step's `on_error` must not take it as the
/// step's failure and go on sending.
impl crate::run::step::WriteAhead for Items<'_, '_> {
    fn keep<'a, 'r: 'a>(
        &'a self,
        state: &'a RunState,
        rec: &'a mut Recorder<'r>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            match self
                .engine
                .save(state, rec, DurableStatus::Running, None)
                .await
            {
                Ok(()) => Ok(()),
                Err(ending) => {
                    let why = ending.2.clone();
                    if let Ok(mut slot) = self.ending.lock() {
                        *slot = Some(ending);
                    }
                    Err(why)
                }
            }
        })
    }
}

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
        let context = crate::run::otel::context(&self.run_id, state.traceparent.as_deref());
        // Spans are made from the events, when the run's are exported.
        rec.spans =
            crate::run::otel::exporter().is_some() && context.as_ref().is_some_and(|c| c.sampled);
        if self
            .durable
            .as_ref()
            .is_none_or(|d| d.resumed.is_none() && !d.woken)
        {
            self.set_wait_urls(&mut state);
        }
        // A resume URL's secret is its signature: the redactor hunts that,
        // not every form of the whole URL (a large automaton for each run).
        let wait_field = crate::language::fields::WAIT_FIELD;
        let urls_secret = state.secret.remove(wait_field);
        rec.redactor = crate::run::redact::Redactor::for_run(&flow.literal_secrets, &[&state]);
        if urls_secret {
            state.secret.insert(wait_field.to_string());
            hunt_signatures(&state, &mut rec.redactor);
        }
        let items = Items {
            engine: self,
            cx: ItemCx {
                run_id: &self.run_id,
                flow,
                parts,
                clock: self.clock,
                transport: self.transport,
                tokens,
            },
            ending: Mutex::new(None),
        };
        let resumed = self.durable.as_ref().and_then(|d| d.resumed.clone());
        let woken = self.durable.as_ref().is_some_and(|d| d.woken);
        match &resumed {
            // Woken from its own timer: nothing to say, unless the process
            // that set the timer stopped meanwhile (then `resumed` says so).
            None if woken => {}
            Some(why) => rec.emit(
                None,
                EventKind::RunResumed {
                    at_step: flow.steps[state.pc].id.clone(),
                    why: why.clone(),
                    // Written ahead and never answered: it may have landed.
                    unsettled: state.unsettled.take(),
                },
            ),
            None => self.start(&state, &mut rec),
        }
        // Only the first step after a restart can find its request in flight.
        let mut in_flight = resumed.is_some() && !woken && state.in_flight == Some(state.pc);
        let mut paused = false;
        let (status, at_step, reason) = loop {
            let index = state.pc;
            let step = &flow.steps[index];
            if self.stopping() {
                if self.durable.is_some() {
                    // The steps since the last checkpoint are kept: it goes on from here.
                    if rec.unsaved() > 0
                        && let Err(ending) = self
                            .save(&state, &mut rec, DurableStatus::Running, None)
                            .await
                    {
                        break ending;
                    }
                    paused = true;
                    break paused_at(&step.id);
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
            // In a `wait_for`: get the signal or the timeout, then run the
            // step again to take it (not a new step: no budget, no visit).
            let mut wait_error = None;
            if let Some(w) = state.wait.clone().filter(|w| w.outcome.is_none()) {
                match self.resolve_wait(&w).await {
                    Ok(Some(outcome)) => {
                        if let Some(wait) = &mut state.wait {
                            wait.outcome = Some(outcome);
                        }
                    }
                    Ok(None) => {
                        // Woken before its time with no signal: it waits on, as a row.
                        if let Err(ending) = self
                            .save(&state, &mut rec, DurableStatus::Waiting, None)
                            .await
                        {
                            break ending;
                        }
                        paused = true;
                        break paused_at(&step.id);
                    }
                    Err(e) => {
                        state.wait = None;
                        wait_error = Some(StepError::new(e));
                    }
                }
            }
            let taking = state
                .wait
                .as_ref()
                .and_then(|w| w.outcome.clone().map(|o| (w.signal.clone(), o)));
            if let Some((signal, outcome)) = &taking {
                rec.emit(
                    Some(&step.id),
                    match outcome {
                        Waited::Signal { data, via } => EventKind::SignalReceived {
                            signal: signal.clone(),
                            data: data.clone(),
                            via: Some(via.clone()),
                        },
                        Waited::TimedOut => EventKind::WaitTimedOut {
                            signal: signal.clone(),
                        },
                    },
                );
            }
            if taking.is_none() && wait_error.is_none() && state.steps_taken >= flow.max_steps {
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
            if taking.is_none() && wait_error.is_none() {
                state.enter(index);
                rec.emit(
                    Some(&step.id),
                    EventKind::StepStarted {
                        kind: step.kind.name().into(),
                    },
                );
            }
            let doubtful = std::mem::take(&mut in_flight) && step.kind.unrepeatable();
            let result = if let Some(e) = wait_error {
                Err(e)
            } else if doubtful {
                Err(in_doubt(step))
            } else {
                let unrepeatable = self.durable.is_some() && step.kind.unrepeatable();
                if unrepeatable || (rec.holds_answers() && !step.kind.keeps_held_answers()) {
                    // Say so before it goes, so that a restart knows it may
                    // have gone; and keep the answers before the step's own
                    // requests (a `for_each`'s items) can leave.
                    if unrepeatable {
                        state.in_flight = Some(index);
                    }
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
                    blocks: Some(&items),
                    trace: context.as_ref(),
                    ahead: self
                        .durable
                        .is_some()
                        .then_some(&items as &dyn crate::run::step::WriteAhead),
                };
                step.kind.run(&mut cx).await
            };
            state.in_flight = None;
            // A checkpoint refused within the step (a write-ahead, or one
            // between items) stops the run, whatever the step made of it.
            if let Some(ending) = items.ending.lock().ok().and_then(|mut e| e.take()) {
                break ending;
            }
            if let Some((signal, _)) = &taking {
                // The wait is over: its URL is spent, and the next wait's is made.
                *state.waits.entry(signal.clone()).or_insert(0) += 1;
                self.set_wait_urls(&mut state);
                hunt_signatures(&state, &mut rec.redactor);
            }
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
                    if let Some((ending, parked)) =
                        self.wait_as_row(&state, &mut rec, &step.id).await
                    {
                        paused |= parked;
                        break ending;
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
                Ok(Next::WaitFor {
                    signal,
                    until,
                    timeout,
                }) => {
                    let n = state.waits.get(&signal).copied().unwrap_or(0);
                    rec.emit(
                        Some(&step.id),
                        EventKind::WaitStarted {
                            signal: signal.clone(),
                            timeout_ms: timeout.as_millis() as u64,
                            until: crate::run::clock::rfc3339(until),
                        },
                    );
                    state.wait = Some(Box::new(Wait {
                        signal,
                        n,
                        until_ms: unix_ms(until),
                        outcome: None,
                    }));
                    if let Some((ending, parked)) =
                        self.wait_as_row(&state, &mut rec, &step.id).await
                    {
                        paused |= parked;
                        break ending;
                    }
                    continue;
                }
                Ok(Next::Pause) => {
                    if self.durable.is_some() {
                        paused = true;
                        break paused_at(&step.id);
                    }
                    let reason = format!(
                        "stopped in step `{}` as asked, once the items under way had finished",
                        step.id
                    );
                    break (RunStatus::Interrupted, Some(step.id.clone()), reason);
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
            // What a step that touched nothing outside the run did goes in
            // with the next checkpoint (a bounded number of events later).
            if step.kind.effect_free() && rec.unsaved() < UNSAVED_EVENTS {
                continue;
            }
            // A step whose only effect outside is its requests: its answers
            // go on record before the run's next request leaves (see
            // `Recorder::hold_answers`), with the steps between.
            if step.kind.sends_requests() && rec.unsaved() < UNSAVED_EVENTS {
                rec.hold_answers();
                continue;
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

    /// How a wait ended: its signal, or its timeout. Under `serve` the run
    /// was woken as a row: its signal, if any, came with its state, so here
    /// it is the timeout, or `None` when woken early. Elsewhere the run
    /// waits in place, on its signal source.
    async fn resolve_wait(&self, wait: &Wait) -> Result<Option<Waited>, String> {
        let until = crate::run::clock::from_unix_ms(wait.until_ms);
        if self.durable.as_ref().is_some_and(|d| d.suspend_timers) {
            return Ok((self.clock.now() >= until).then_some(Waited::TimedOut));
        }
        let signals = self.signals.unwrap_or(&Nowhere);
        let got = signals
            .wait(self.clock, &self.run_id, &wait.signal, wait.n, until)
            .await?;
        Ok(Some(match got {
            Some((data, via)) => Waited::Signal { data, via },
            None => Waited::TimedOut,
        }))
    }

    /// The `wait` field: the resume URL of each signal's next wait. Secret,
    /// as a URL resumes its run.
    fn set_wait_urls(&self, state: &mut RunState) {
        let field = crate::language::fields::WAIT_FIELD;
        if !self.flow.fields.contains_key(field) {
            return;
        }
        let signals = self.signals.unwrap_or(&Nowhere);
        let mut urls = serde_json::Map::new();
        for signal in self.flow.signals() {
            let n = state.waits.get(signal).copied().unwrap_or(0);
            let url = signals.url(&self.run_id, signal, n);
            urls.insert(signal.to_string(), url.map_or(Value::Null, Value::String));
        }
        let first = urls.values().next().cloned().unwrap_or(Value::Null);
        state.set(field, serde_json::json!({ "url": first, "urls": urls }));
        state.secret.insert(field.to_string());
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
                traceparent: state.traceparent.clone(),
                started_by: state.started_by.clone(),
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
        self.save_as(state, rec, status, outcome, Saving::Whole)
            .await
    }

    async fn save_as(
        &self,
        state: &RunState,
        rec: &mut Recorder<'_>,
        status: DurableStatus,
        outcome: Option<&Outcome>,
        saving: Saving,
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
            only_each: saving == Saving::OnlyEach,
            leaves: saving == Saving::Leaving(true),
        };
        match durable.checkpoints.save(progress).await {
            Ok(Saved::Saved | Saved::Released) => Ok(()),
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

/// Hunts the signature of each resume URL in the `wait` field: the part a
/// forger lacks. A dry run's URLs carry none.
fn hunt_signatures(state: &RunState, redactor: &mut crate::run::redact::Redactor) {
    let Some(urls) = state.get(crate::language::fields::WAIT_FIELD) else {
        return;
    };
    for url in urls["urls"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        let token = url
            .as_str()
            .and_then(|u| u.rsplit('/').next())
            .unwrap_or("");
        if token.matches('.').count() == 3
            && let Some(signature) = token.rsplit('.').next()
        {
            redactor.add_own_secret(signature);
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
