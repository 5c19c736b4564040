//! The trace: what a run did, as plain data.
//!
//! The engine records [`TraceEvent`]s through a [`Recorder`], which numbers
//! them, stamps them with the clock's elapsed time, redacts every secret, and
//! hands each one to an observer as it happens (the CLI prints them live).
//! Reports are renderings of this data; see [`crate::report`].

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Clock;
use crate::redact::Redactor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    pub seq: u64,
    /// Milliseconds since the run started, on the run's clock (virtual in dry runs).
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    FlowStarted {
        flow: String,
        dry_run: bool,
        fields: IndexMap<String, Value>,
    },
    StepStarted {
        kind: String,
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
    FlowFinished(Outcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    Interrupted,
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub events: Vec<TraceEvent>,
}

/// Builds the trace. Everything passes through [`Recorder::emit`], so nothing
/// reaches a report without being redacted.
pub struct Recorder<'a> {
    pub trace: Trace,
    pub redactor: Redactor,
    clock: &'a dyn Clock,
    observer: &'a mut (dyn FnMut(&TraceEvent) + Send),
}

impl<'a> Recorder<'a> {
    pub fn new(
        clock: &'a dyn Clock,
        observer: &'a mut (dyn FnMut(&TraceEvent) + Send),
    ) -> Recorder<'a> {
        Recorder {
            trace: Trace::default(),
            redactor: Redactor::default(),
            clock,
            observer,
        }
    }

    pub fn emit(&mut self, step: Option<&str>, kind: EventKind) {
        let kind = if self.redactor.is_empty() {
            kind
        } else {
            // Round-trip through JSON so every string in any payload is covered.
            let value = serde_json::to_value(&kind).unwrap_or(Value::Null);
            serde_json::from_value(self.redactor.redact_json(&value)).unwrap_or(kind)
        };
        let event = TraceEvent {
            seq: self.trace.events.len() as u64 + 1,
            at_ms: self.clock.elapsed().as_millis() as u64,
            step: step.map(str::to_string),
            kind,
        };
        (self.observer)(&event);
        self.trace.events.push(event);
    }
}
