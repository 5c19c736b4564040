//! OpenTelemetry: a run's trace as spans for a tracing backend, and W3C
//! trace context in and out.
//!
//! [`ids`] derives every id from the run id, so that the processes sharing
//! a durable run, and a replay of a recording, name spans alike; [`spans`]
//! makes spans from trace events; [`export`] sends them over OTLP/HTTP.
//! The process's exporter is installed once, at start ([`install`]), from
//! its configuration; without one nothing is made or sent.

pub mod export;
pub mod ids;
pub mod spans;

use std::sync::OnceLock;

use crate::run::otel::export::Exporter;
use crate::run::otel::ids::{Parent, TraceIds};
use crate::run::otel::spans::Assembler;

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Makes `exporter` this process's. Once only: a second is refused.
pub fn install(exporter: Exporter) -> Result<&'static Exporter, String> {
    EXPORTER
        .set(exporter)
        .map_err(|_| "an OTLP exporter is installed already".to_string())?;
    EXPORTER
        .get()
        .ok_or_else(|| "the OTLP exporter was not kept".to_string())
}

/// This process's exporter, when traces are exported.
pub fn exporter() -> Option<&'static Exporter> {
    EXPORTER.get()
}

/// What a run's requests carry out: its ids, and whether it is sampled.
#[derive(Debug, Clone)]
pub struct Context {
    pub ids: TraceIds,
    pub sampled: bool,
}

impl Context {
    /// The `traceparent` naming the span opened by event `seq`.
    pub fn traceparent(&self, seq: u64) -> String {
        ids::traceparent(&self.ids.trace_id, &self.ids.span(seq), self.sampled)
    }
}

/// A run's context, when its requests carry one: traces are exported, or
/// a caller started it with a `traceparent`.
pub fn context(run: &str, traceparent: Option<&str>) -> Option<Context> {
    let parent = traceparent.and_then(Parent::parse);
    let exporter = exporter();
    if exporter.is_none() && parent.is_none() {
        return None;
    }
    let ids = TraceIds::new(run, parent);
    let sampled = match exporter {
        Some(e) => e.config.sampler.sampled(&ids.trace_id, parent.as_ref()),
        None => parent.is_some_and(|p| p.sampled),
    };
    Some(Context { ids, sampled })
}

/// A maker of `run`'s spans for this process's exporter, if there is one.
pub fn assembler(run: &str) -> Option<Assembler> {
    let e = exporter()?;
    Some(Assembler::new(run, e.config.sampler.clone()))
}

/// Spans made from a run's events as they happen, sent as each ends: for a
/// run that keeps no checkpoints (a durable run's spans come from what it
/// checkpointed instead).
pub struct Live {
    assembler: Assembler,
    ended: Vec<spans::Ended>,
    exporter: &'static Exporter,
}

impl Live {
    /// `None` when traces are not exported.
    pub fn new() -> Option<Live> {
        let exporter = exporter()?;
        Some(Live {
            assembler: Assembler::new("", exporter.config.sampler.clone()),
            ended: Vec::new(),
            exporter,
        })
    }

    /// Follows an event. Ended spans are sent together, a run's at a time:
    /// when it ends, before it waits, or every [`LIVE_BATCH`] spans, so a
    /// batch of short runs wakes the sender once a run, not once a span.
    pub fn event(&mut self, event: &crate::run::trace::TraceEvent) {
        use crate::run::trace::EventKind;
        self.assembler.feed(event, &mut self.ended);
        let now = self.ended.len() >= LIVE_BATCH
            || matches!(
                event.kind,
                EventKind::FlowFinished(_)
                    | EventKind::TimerStarted { .. }
                    | EventKind::WaitStarted { .. }
                    | EventKind::RetryScheduled { .. }
            );
        if now && !self.ended.is_empty() {
            self.exporter
                .send(&event.run, std::mem::take(&mut self.ended), false);
        }
    }
}

/// The most ended spans a live run holds before it sends them.
pub const LIVE_BATCH: usize = 64;

impl Drop for Live {
    /// A run cut short (Ctrl-C) still sends what ended.
    fn drop(&mut self) {
        if !self.ended.is_empty() {
            let run = self.assembler.ids().run().to_string();
            self.exporter
                .send(&run, std::mem::take(&mut self.ended), false);
        }
    }
}
