//! The trace: what a run did, as plain data.
//!
//! The engine records [`TraceEvent`]s through a [`Recorder`], which numbers
//! them, stamps them with the clock's elapsed time, redacts every secret, and
//! hands each one to an observer as it happens (the CLI prints them live).
//! Nothing keeps the events: a run's memory does not grow with its trace, and
//! a value too large to show whole is shown as an excerpt ([`bounded`]).
//! Reports are renderings of this data; see [`crate::cli::report`].

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

use crate::language::fields::ERROR_FIELD;
use crate::run::clock::Clock;
use crate::run::redact::Redactor;

/// An empty shared string: the default of `time` and `run` in old traces.
fn empty() -> Arc<str> {
    Arc::from("")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    pub seq: u64,
    /// Milliseconds since the run started, on the run's clock (virtual in dry runs).
    pub at_ms: u64,
    /// The wall-clock time, RFC 3339 in UTC with milliseconds, on the run's clock.
    /// Shared by the events of one millisecond, not copied into each.
    #[serde(default = "empty")]
    pub time: Arc<str>,
    /// The run's id, the same on every event of one run (shared, not copied).
    #[serde(default = "empty")]
    pub run: Arc<str>,
    /// The step it happened in; the events of one step share the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Arc<str>>,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A durable run goes on from its last checkpoint.
    RunResumed {
        /// The step it goes on at (every event's own `step` is empty here).
        at_step: String,
        why: String,
        /// A request not idempotent that was on record as sent, with no
        /// answer, when the run stopped: it may have landed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unsettled: Option<crate::run::state::Unsettled>,
    },
    FlowStarted {
        flow: String,
        dry_run: bool,
        fields: IndexMap<String, Value>,
        /// The route requests take, when it is not direct: a proxy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<String>,
        /// The caller's W3C trace context, when a `traceparent` started the run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
        /// Who started it, when that is not the API's caller: `retry of run
        /// …, by the run page (…)`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_by: Option<String>,
    },
    StepStarted {
        /// A step kind's name: handoff's own text, not copied for each step.
        kind: std::borrow::Cow<'static, str>,
    },
    /// A `call:` step's operation, as its API description names it: the
    /// request that follows is this operation's.
    OperationCalled {
        /// `source.operationId`.
        operation: String,
        method: String,
        /// The path template, such as `/jobs/{jobId}`.
        path: String,
    },
    RequestSent {
        method: String,
        url: String,
        headers: IndexMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Value>,
        /// Set from the second attempt on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
    },
    ResponseReceived {
        status: u16,
        #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
        headers: IndexMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Value>,
        duration_ms: u64,
    },
    FieldSet {
        field: String,
        value: Value,
    },
    DecisionTaken {
        /// `when 1`, `when 2`, …, `otherwise`, or `none` when nothing matched.
        branch: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<String>,
        goto: String,
        /// The fields the conditions read, secrets masked.
        values: IndexMap<String, Value>,
    },
    /// An attempt failed in a way the retry policy retries.
    RetryScheduled {
        attempt: u32,
        attempts: u32,
        reason: String,
        wait_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<String>,
    },
    /// A timer began: how long, and when it wakes.
    TimerStarted {
        duration_ms: u64,
        wake_at: String,
    },
    /// A long timer is still waiting: a heartbeat for log watchers.
    TimerWaiting {
        left_ms: u64,
    },
    TimerWaited {
        duration_ms: u64,
    },
    Log {
        message: String,
    },
    StepFinished {
        next: String,
    },
    StepFailed {
        kind: String,
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
        /// `timeout`, `connect`, `reset`, `status`, `response`, `template`,
        /// `conflict`, `step` or `budget`.
        #[serde(default)]
        error_kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// The step `on_error` sent control to; the run goes on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handled_by: Option<String>,
    },
    /// A `for_each` began an item: the events up to its `item_finished`
    /// are the item's own.
    ItemStarted {
        /// From 0, in the list's order.
        index: u64,
        /// How many items the list has.
        of: u64,
        item: Value,
    },
    ItemFinished {
        index: u64,
        /// `succeeded` or `failed`.
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A `wait_for` began: the signal, and when it times out.
    WaitStarted {
        signal: String,
        timeout_ms: u64,
        until: String,
    },
    SignalReceived {
        signal: String,
        data: Value,
        /// How it came: `api`, `url`, `cli` or `mock`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    WaitTimedOut {
        signal: String,
    },
    FlowFinished(Outcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    Interrupted,
    /// A durable run canceled while it ran.
    Canceled,
}

/// How a run ended and why. Computed from what the run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: RunStatus,
    /// The step the run ended at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_step: Option<String>,
    pub reason: String,
    /// The last decision taken: `step → target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_branch: Option<String>,
    /// How many times the last decision ran: the tries, in a poll loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tries: Option<u64>,
    pub steps_taken: u64,
    pub elapsed_ms: u64,
}

/// The largest value an event shows whole, as compact JSON. A larger one (a
/// task list of thousands) is shown as an excerpt of [`EXCERPT_CHARS`].
pub const MAX_SHOWN_BYTES: usize = 64 * 1024;
/// How much of a value too large to show whole is shown.
pub const EXCERPT_CHARS: usize = 2000;

/// A value as an event shows it: itself when small, else an excerpt. The
/// size is measured without building the whole text.
pub fn bounded(value: &Value) -> Value {
    // Most values are far from the limit: said so by a count that takes
    // every character for its longest escape, with nothing written.
    let mut budget = MAX_SHOWN_BYTES;
    if surely_within(value, &mut budget) {
        return value.clone();
    }
    let mut counter = Counter(0);
    if serde_json::to_writer(&mut counter, value).is_ok() {
        return value.clone();
    }
    let mut text = Vec::with_capacity(EXCERPT_CHARS * 2);
    let _ = serde_json::to_writer(Limited(&mut text, EXCERPT_CHARS * 4), value);
    let text = String::from_utf8_lossy(&text);
    let cut: String = text.chars().take(EXCERPT_CHARS).collect();
    let size = serde_json::to_vec(value).map_or(0, |v| v.len());
    Value::String(format!("{cut}… ({size} bytes in all)"))
}

/// Whether `value` as JSON is surely no longer than `budget` bytes, which
/// it takes from: a bound, never less than the length written (a string's
/// character at most six bytes, `\u001f`; a number at most 32).
fn surely_within(value: &Value, budget: &mut usize) -> bool {
    match value {
        Value::Null | Value::Bool(_) => take(budget, 5),
        Value::Number(_) => take(budget, 32),
        Value::String(s) => take(budget, escaped_at_most(s)),
        Value::Array(items) => {
            take(budget, items.len() + 2) && items.iter().all(|v| surely_within(v, budget))
        }
        Value::Object(map) => {
            take(budget, map.len() + 2)
                && map
                    .iter()
                    .all(|(k, v)| take(budget, escaped_at_most(k) + 1) && surely_within(v, budget))
        }
    }
}

/// A string's longest JSON form: each byte escaped as `\u001f`, and quotes.
fn escaped_at_most(s: &str) -> usize {
    s.len().saturating_mul(6).saturating_add(2)
}

/// Takes `n` from `budget`, when it has that much.
fn take(budget: &mut usize, n: usize) -> bool {
    match budget.checked_sub(n) {
        Some(left) => {
            *budget = left;
            true
        }
        None => false,
    }
}

/// Counts bytes, and stops the writer past [`MAX_SHOWN_BYTES`].
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        if self.0 > MAX_SHOWN_BYTES {
            return Err(std::io::Error::other("too large"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keeps the first bytes written, then stops the writer.
struct Limited<'a>(&'a mut Vec<u8>, usize);

impl std::io::Write for Limited<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() >= self.1 {
            return Err(std::io::Error::other("enough"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl EventKind {
    /// The event's name: its `event` in the trace.
    pub fn tag(&self) -> &'static str {
        match self {
            EventKind::RunResumed { .. } => "run_resumed",
            EventKind::FlowStarted { .. } => "flow_started",
            EventKind::StepStarted { .. } => "step_started",
            EventKind::OperationCalled { .. } => "operation_called",
            EventKind::RequestSent { .. } => "request_sent",
            EventKind::ResponseReceived { .. } => "response_received",
            EventKind::FieldSet { .. } => "field_set",
            EventKind::DecisionTaken { .. } => "decision_taken",
            EventKind::RetryScheduled { .. } => "retry_scheduled",
            EventKind::TimerStarted { .. } => "timer_started",
            EventKind::TimerWaiting { .. } => "timer_waiting",
            EventKind::TimerWaited { .. } => "timer_waited",
            EventKind::Log { .. } => "log",
            EventKind::StepFinished { .. } => "step_finished",
            EventKind::StepFailed { .. } => "step_failed",
            EventKind::ItemStarted { .. } => "item_started",
            EventKind::ItemFinished { .. } => "item_finished",
            EventKind::WaitStarted { .. } => "wait_started",
            EventKind::SignalReceived { .. } => "signal_received",
            EventKind::WaitTimedOut { .. } => "wait_timed_out",
            EventKind::FlowFinished(_) => "flow_finished",
        }
    }

    /// Masks secrets where they may be: data (URLs, headers, bodies, values,
    /// a flow's own text) with every secret; handoff's wording (errors,
    /// reasons, hints), whose data was redacted when it was put in, only with
    /// secrets long enough not to be mistaken for a word.
    pub fn redact(&mut self, r: &Redactor) {
        if r.is_empty() {
            return;
        }
        // Every event passes here: a string changes only when a secret is in it.
        let data = |s: &mut String| r.redact_in_place(s);
        let wording = |s: &mut String| r.redact_wording_in_place(s);
        match self {
            EventKind::FlowStarted { fields, .. } => {
                fields.values_mut().for_each(|v| r.redact_json(v))
            }
            EventKind::RunResumed { why, unsettled, .. } => {
                wording(why);
                if let Some(u) = unsettled {
                    data(&mut u.url);
                }
            }
            EventKind::StepStarted { .. }
            | EventKind::TimerStarted { .. }
            | EventKind::TimerWaiting { .. }
            | EventKind::TimerWaited { .. }
            | EventKind::StepFinished { .. } => {}
            EventKind::RequestSent {
                url, headers, body, ..
            } => {
                data(url);
                headers.values_mut().for_each(data);
                if let Some(b) = body {
                    r.redact_json(b);
                }
            }
            EventKind::ResponseReceived { headers, body, .. } => {
                headers.values_mut().for_each(data);
                if let Some(b) = body {
                    r.redact_json(b);
                }
            }
            EventKind::FieldSet { field, value } if field == ERROR_FIELD => {
                wording_json(value, r);
            }
            EventKind::FieldSet { value, .. } => r.redact_json(value),
            EventKind::DecisionTaken {
                condition, values, ..
            } => {
                condition.iter_mut().for_each(data);
                values.values_mut().for_each(|v| r.redact_json(v));
            }
            EventKind::RetryScheduled {
                reason,
                retry_after,
                ..
            } => {
                wording(reason);
                retry_after.iter_mut().for_each(data);
            }
            EventKind::Log { message } => data(message),
            EventKind::StepFailed { error, hint, .. } => {
                wording(error);
                hint.iter_mut().for_each(wording);
            }
            EventKind::ItemStarted { item, .. } => r.redact_json(item),
            EventKind::SignalReceived { data, .. } => r.redact_json(data),
            EventKind::WaitStarted { .. }
            | EventKind::WaitTimedOut { .. }
            | EventKind::OperationCalled { .. } => {}
            EventKind::ItemFinished { result, error, .. } => {
                result.iter_mut().for_each(|v| r.redact_json(v));
                error.iter_mut().for_each(wording);
            }
            EventKind::FlowFinished(outcome) => {
                wording(&mut outcome.reason);
                outcome.last_branch.iter_mut().for_each(wording);
            }
        }
    }
}

/// A new run id: a UUIDv7, so ids sort by when their runs started. The
/// random part comes from std's per-process hash keys and a counter.
pub fn new_run_id(now: std::time::SystemTime) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u64(ms);
    let random = hasher.finish();
    let mut more = std::collections::hash_map::RandomState::new().build_hasher();
    more.write_u64(random);
    let random2 = more.finish();
    let bytes_hi = (ms << 16) | 0x7000 | (random >> 52);
    let bytes_lo = (random2 & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        bytes_hi >> 32,
        (bytes_hi >> 16) & 0xffff,
        bytes_hi & 0xffff,
        bytes_lo >> 48,
        bytes_lo & 0xffff_ffff_ffff
    )
}

fn wording_json(value: &mut Value, r: &Redactor) {
    match value {
        Value::String(s) => r.redact_wording_in_place(s),
        Value::Array(items) => items.iter_mut().for_each(|v| wording_json(v, r)),
        Value::Object(map) => map.values_mut().for_each(|v| wording_json(v, r)),
        _ => {}
    }
}

/// Builds the trace. Everything passes through [`Recorder::emit`], so nothing
/// reaches a report without being redacted. It keeps no event, only what the
/// outcome needs: the last decision taken.
pub struct Recorder<'a> {
    pub redactor: Redactor,
    run: Arc<str>,
    seq: u64,
    /// A durable run's events since its last checkpoint.
    kept: Option<Vec<TraceEvent>>,
    /// Whether those events hold an answer to a request: it must be on
    /// record before another request leaves (see [`Recorder::hold_answers`]).
    holds_answers: bool,
    /// The last decision: its step and where it went.
    pub last_decision: Option<(String, String)>,
    /// Whether anyone outside reads the events (see [`Recorder::listening`]).
    pub readers: bool,
    /// Whether spans are made of the events: they need the events, not
    /// the values in them (see [`Recorder::values`]).
    pub spans: bool,
    clock: &'a dyn Clock,
    observer: &'a mut (dyn FnMut(&TraceEvent) + Send),
    /// The last `time` written, by its millisecond: events within one
    /// millisecond (all of a dry run's, on its still clock) share the text.
    last_time: (i64, Arc<str>),
    last_now: Option<std::time::SystemTime>,
    last_step: Option<Arc<str>>,
}

impl<'a> Recorder<'a> {
    pub fn new(
        run: &str,
        clock: &'a dyn Clock,
        observer: &'a mut (dyn FnMut(&TraceEvent) + Send),
    ) -> Recorder<'a> {
        Recorder {
            redactor: Redactor::default(),
            run: Arc::from(run),
            seq: 0,
            kept: None,
            holds_answers: false,
            last_time: (i64::MIN, empty()),
            last_now: None,
            last_step: None,
            readers: true,
            spans: false,
            last_decision: None,
            clock,
            observer,
        }
    }

    pub fn emit(&mut self, step: Option<&str>, mut kind: EventKind) {
        if let (EventKind::DecisionTaken { goto, .. }, Some(step)) = (&kind, step) {
            self.last_decision = Some((step.to_string(), goto.clone()));
        }
        self.seq += 1;
        if !self.listening() {
            return;
        }
        kind.redact(&self.redactor);
        let (elapsed, now) = self.clock.read();
        let event = TraceEvent {
            seq: self.seq,
            at_ms: elapsed.as_millis() as u64,
            time: self.time(now),
            run: self.run.clone(),
            step: step.map(|s| self.step_text(s)),
            kind,
        };
        (self.observer)(&event);
        if let Some(kept) = &mut self.kept {
            kept.push(event);
        }
    }

    /// The step's name, shared by consecutive events of one step.
    fn step_text(&mut self, step: &str) -> Arc<str> {
        match &self.last_step {
            Some(last) if &**last == step => last.clone(),
            _ => {
                let text: Arc<str> = Arc::from(step);
                self.last_step = Some(text.clone());
                text
            }
        }
    }

    /// Now on the run's clock, as RFC 3339, formatted once a millisecond.
    fn time(&mut self, now: std::time::SystemTime) -> Arc<str> {
        // A dry run's clock stands still between waits: the same instant again.
        if self.last_now == Some(now) {
            return self.last_time.1.clone();
        }
        self.last_now = Some(now);
        let ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if ms != self.last_time.0 {
            self.last_time = (ms, Arc::from(crate::run::clock::rfc3339(now)));
        }
        self.last_time.1.clone()
    }

    /// Passes on an event another recorder made (an item's, run on the
    /// side): numbered in this trace's order, redacted as it was made.
    pub fn forward(&mut self, mut event: TraceEvent) {
        self.seq += 1;
        if !self.listening() {
            return;
        }
        event.seq = self.seq;
        (self.observer)(&event);
        if let Some(kept) = &mut self.kept {
            kept.push(event);
        }
    }

    /// Counts an event not made: the events after it keep their numbers.
    pub fn skip(&mut self) {
        self.seq += 1;
    }

    /// Whether the events go anywhere: to a reader, or into checkpoints.
    /// When not, [`Recorder::emit`] only counts them, and steps need not
    /// build what an event would show.
    pub fn listening(&self) -> bool {
        self.readers || self.kept.is_some() || self.spans
    }

    /// Whether the events need the values a run handles (bodies, response
    /// headers, fields): only spans read them, and spans show none, a step
    /// need not copy and redact them.
    pub fn values(&self) -> bool {
        self.readers || self.kept.is_some()
    }

    /// Keeps events for checkpoints, numbering on from `seq`.
    pub fn keep_events(&mut self, seq: u64) {
        self.seq = seq;
        self.kept = Some(Vec::new());
    }

    /// The events kept since the last call.
    pub fn take_events(&mut self) -> Vec<TraceEvent> {
        self.holds_answers = false;
        self.kept.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Says that the events kept hold a request's answer, not yet on
    /// record: the run's next request checkpoints them before it leaves.
    pub fn hold_answers(&mut self) {
        self.holds_answers = self.kept.is_some();
    }

    /// Whether an answer is kept, not yet on record.
    pub fn holds_answers(&self) -> bool {
        self.holds_answers
    }

    /// How many events are kept, not yet taken.
    pub fn unsaved(&self) -> usize {
        self.kept.as_ref().map_or(0, Vec::len)
    }

    /// The last event's number.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quick count never says a value fits that does not: for values
    /// of every kind, with escapes, just under and just over the limit.
    #[test]
    fn a_value_said_to_fit_fits() {
        use serde_json::json;
        let fits = |v: &Value| serde_json::to_vec(v).unwrap().len() <= MAX_SHOWN_BYTES;
        let surely = |v: &Value| surely_within(v, &mut MAX_SHOWN_BYTES.clone());
        let escapes = "\u{1}\"\\\n".repeat(MAX_SHOWN_BYTES / 24);
        let values = [
            json!(null),
            json!(-1.7976931348623157e308),
            json!({"tasks": [{"id": "a", "n": 1, "ok": true}], "e": "\u{1}"}),
            json!("x".repeat(MAX_SHOWN_BYTES / 6 - 1)),
            json!("x".repeat(MAX_SHOWN_BYTES / 6)),
            json!(escapes),
            json!(vec![json!("\u{1f}"); MAX_SHOWN_BYTES / 9]),
            json!(
                (0..MAX_SHOWN_BYTES / 40)
                    .map(|i| (format!("k{i}"), json!(i)))
                    .collect::<serde_json::Map<_, _>>()
            ),
            json!(vec![json!(u64::MAX); MAX_SHOWN_BYTES / 33]),
        ];
        for v in &values {
            if surely(v) {
                assert!(
                    fits(v),
                    "said to fit: {}",
                    serde_json::to_vec(v).unwrap().len()
                );
            }
        }
        assert!(surely(&values[2]), "a small value needs no writing");
        // The answer is the same as before, whichever way it was reached.
        for v in &values {
            assert_eq!(bounded(v) == *v, fits(v));
        }
    }

    /// Events are stored as JSON and read back (`handoff runs show`): every
    /// kind must survive the trip, whose flattened fields share one object.
    #[test]
    fn every_event_kind_reads_back_as_written() {
        let outcome = Outcome {
            status: RunStatus::Succeeded,
            at_step: Some("s".into()),
            reason: "r".into(),
            last_branch: None,
            tries: None,
            steps_taken: 1,
            elapsed_ms: 2,
        };
        let kinds = vec![
            EventKind::RunResumed {
                at_step: "wait".into(),
                why: "restarted".into(),
                unsettled: None,
            },
            EventKind::FlowStarted {
                flow: "f".into(),
                dry_run: false,
                fields: IndexMap::new(),
                route: Some("p".into()),
                traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
                started_by: Some("retry of run r0, by the run page".into()),
            },
            EventKind::StepStarted {
                kind: "timer".into(),
            },
            EventKind::RequestSent {
                method: "GET".into(),
                url: "u".into(),
                headers: IndexMap::new(),
                body: None,
                attempt: Some(2),
            },
            EventKind::ResponseReceived {
                status: 200,
                headers: IndexMap::new(),
                body: Some(Value::from("b")),
                duration_ms: 1,
            },
            EventKind::FieldSet {
                field: "x".into(),
                value: Value::from(1),
            },
            EventKind::DecisionTaken {
                branch: "otherwise".into(),
                condition: None,
                goto: "end".into(),
                values: IndexMap::new(),
            },
            EventKind::RetryScheduled {
                attempt: 1,
                attempts: 3,
                reason: "503".into(),
                wait_ms: 5,
                retry_after: None,
            },
            EventKind::TimerStarted {
                duration_ms: 5,
                wake_at: "t".into(),
            },
            EventKind::TimerWaiting { left_ms: 1 },
            EventKind::TimerWaited { duration_ms: 5 },
            EventKind::Log {
                message: "m".into(),
            },
            EventKind::StepFinished { next: "end".into() },
            EventKind::StepFailed {
                kind: "http".into(),
                error: "e".into(),
                hint: None,
                error_kind: "status".into(),
                status: Some(500),
                handled_by: None,
            },
            EventKind::FlowFinished(outcome),
        ];
        for kind in kinds {
            let event = TraceEvent {
                seq: 7,
                at_ms: 1,
                time: "t".into(),
                run: "r".into(),
                step: Some("s".into()),
                kind,
            };
            let text = serde_json::to_string(&event).unwrap();
            let back: TraceEvent = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{text} does not read back: {e}"));
            assert_eq!(back, event, "{text}");
        }
    }
}
