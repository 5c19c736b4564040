//! A run's trace events made into OpenTelemetry spans: one for the run, one
//! per step (and per `for_each` item), one per HTTP request, with the
//! semantic conventions' attributes. Retries, timers, decisions, waits,
//! signals and log lines become span events.
//!
//! Spans are made from the events alone, which are already redacted: what a
//! span says is what the trace says, and no more. A span is handed out once
//! it ends, with the seq of the event that ended it. The run's span ends
//! with the run; a step's span that a stopped process left open ends where
//! the run was resumed, marked as cut short.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, status::StatusCode};

use crate::run::otel::ids::{Parent, Sampler, TraceIds, Tracker};
use crate::run::trace::{EventKind, RunStatus, TraceEvent};

/// A span that has ended, and the seq of the event that ended it.
#[derive(Debug, Clone)]
pub struct Ended {
    pub span: Span,
    pub closed_at: u64,
}

/// An attribute's value.
pub enum Attr {
    Text(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for Attr {
    fn from(s: &str) -> Attr {
        Attr::Text(s.to_string())
    }
}
impl From<String> for Attr {
    fn from(s: String) -> Attr {
        Attr::Text(s)
    }
}
impl From<u64> for Attr {
    fn from(n: u64) -> Attr {
        Attr::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Attr {
    fn from(n: u32) -> Attr {
        Attr::Int(i64::from(n))
    }
}
impl From<u16> for Attr {
    fn from(n: u16) -> Attr {
        Attr::Int(i64::from(n))
    }
}
impl From<bool> for Attr {
    fn from(b: bool) -> Attr {
        Attr::Bool(b)
    }
}

pub fn kv(key: &str, value: impl Into<Attr>) -> KeyValue {
    let value = match value.into() {
        Attr::Text(s) => any_value::Value::StringValue(s),
        Attr::Int(n) => any_value::Value::IntValue(n),
        Attr::Bool(b) => any_value::Value::BoolValue(b),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

/// Makes one run's spans from its events, in order.
pub struct Assembler {
    ids: TraceIds,
    tracker: Tracker,
    /// The run's span, from `flow_started` (or the first event seen).
    run: Option<Span>,
    /// The spans open, by the seq that opened them, innermost last.
    open: Vec<(u64, Span)>,
    /// Spans that end at or before this seq were handed out already (by
    /// this process or an earlier one): they are made again, not handed out.
    quiet_through: u64,
    /// The last event's time, and its text: events of one millisecond
    /// share it, and it is read once.
    last_ns: u64,
    last_time: Option<std::sync::Arc<str>>,
    sampler: Sampler,
    /// Decided at the run's first event, when its parent is known.
    sampled: bool,
}

impl Assembler {
    /// For run `run`, whose spans are handed out when `sampler` says so.
    pub fn new(run: &str, sampler: Sampler) -> Assembler {
        Assembler {
            ids: TraceIds::new(run, None),
            tracker: Tracker::default(),
            run: None,
            open: Vec::new(),
            quiet_through: 0,
            last_ns: 0,
            last_time: None,
            sampler,
            sampled: false,
        }
    }

    /// Spans that ended by event `seq` were exported before: not again.
    pub fn quiet_through(&mut self, seq: u64) {
        self.quiet_through = seq;
    }

    pub fn ids(&self) -> &TraceIds {
        &self.ids
    }

    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// Follows one event; spans it ends go to `out`.
    pub fn feed(&mut self, event: &TraceEvent, out: &mut Vec<Ended>) {
        let same = self
            .last_time
            .as_ref()
            .is_some_and(|t| std::sync::Arc::ptr_eq(t, &event.time) || **t == *event.time);
        if !same {
            self.last_ns = time_ns(&event.time).unwrap_or(self.last_ns);
            self.last_time = Some(event.time.clone());
        }
        let ns = self.last_ns;
        let seq = self.tracker.follow(event);
        if self.run.is_none() {
            let parent = match &event.kind {
                EventKind::FlowStarted { traceparent, .. } => {
                    traceparent.as_deref().and_then(Parent::parse)
                }
                _ => None,
            };
            self.ids = TraceIds::new(&event.run, parent);
            self.sampled = self.sampler.sampled(&self.ids.trace_id, parent.as_ref());
            self.run = Some(self.span(0, parent.map(|p| p.span_id), "run", SpanKind::Internal, ns));
        }
        match &event.kind {
            EventKind::FlowStarted { flow, dry_run, .. } => {
                if let Some(run) = &mut self.run {
                    run.name = flow.clone();
                    run.start_time_unix_nano = ns;
                    run.attributes.extend([
                        kv("handoff.run.id", &*event.run),
                        kv("handoff.flow", flow.as_str()),
                        kv("handoff.dry_run", *dry_run),
                    ]);
                }
            }
            EventKind::RunResumed { why, unsettled, .. } => {
                // Whatever the stopped process had open ends here, cut short.
                while let Some((_, mut span)) = self.open.pop() {
                    span.end_time_unix_nano = ns.max(span.start_time_unix_nano);
                    span.status = Some(error(
                        "cut short: the process running it stopped; the run went on from its last checkpoint",
                    ));
                    self.hand_out(span, event.seq, out);
                }
                let mut attributes = vec![kv("handoff.why", why.as_str())];
                if let Some(u) = unsettled {
                    attributes.push(kv("handoff.unsettled", format!("{} {}", u.method, u.url)));
                }
                self.event_on_run("run.resumed", ns, attributes);
            }
            EventKind::StepStarted { kind } => {
                let parent = self.innermost_id();
                let name = event.step.as_deref().unwrap_or("step").to_string();
                let mut span = self.span(seq, Some(parent), &name, SpanKind::Internal, ns);
                span.attributes.extend([
                    kv("handoff.step", name.as_str()),
                    kv("handoff.step.kind", &**kind),
                ]);
                self.open.push((seq, span));
            }
            EventKind::ItemStarted { index, of, .. } => {
                let parent = self.innermost_id();
                let mut span = self.span(
                    seq,
                    Some(parent),
                    &format!("item {index}"),
                    SpanKind::Internal,
                    ns,
                );
                span.attributes
                    .extend([kv("handoff.item.index", *index), kv("handoff.item.of", *of)]);
                self.open.push((seq, span));
            }
            EventKind::OperationCalled {
                operation, path, ..
            } => {
                if let Some((_, span)) = self.open.last_mut() {
                    span.attributes.extend([
                        kv("handoff.operation", operation.as_str()),
                        kv("url.template", path.as_str()),
                    ]);
                }
            }
            EventKind::RequestSent {
                method,
                url,
                attempt,
                ..
            } => {
                self.end_request(event.seq, ns, Some("no answer came back"), out);
                let parent = self.innermost_id();
                let mut span = self.span(seq, Some(parent), method, SpanKind::Client, ns);
                span.attributes.extend([
                    kv("http.request.method", method.as_str()),
                    kv("url.full", url.as_str()),
                ]);
                if let Some((host, port)) = server_of(url) {
                    span.attributes.push(kv("server.address", host));
                    if let Some(port) = port {
                        span.attributes.push(kv("server.port", u64::from(port)));
                    }
                }
                if let Some(n) = attempt {
                    span.attributes
                        .push(kv("http.request.resend_count", n.saturating_sub(1)));
                }
                // Requests sit under their step, not on the step stack.
                self.open.push((seq, span));
            }
            EventKind::ResponseReceived {
                status,
                duration_ms,
                ..
            } => {
                if let Some((_, mut span)) = self.take_request() {
                    span.end_time_unix_nano = span.start_time_unix_nano + duration_ms * 1_000_000;
                    span.attributes
                        .push(kv("http.response.status_code", *status));
                    if *status >= 400 {
                        span.attributes.push(kv("error.type", status.to_string()));
                        span.status = Some(Status {
                            message: String::new(),
                            code: StatusCode::Error as i32,
                        });
                    }
                    self.hand_out(span, event.seq, out);
                }
            }
            // Not a span event: a run that writes no trace does not make them.
            EventKind::FieldSet { .. } => {}
            EventKind::DecisionTaken {
                branch,
                condition,
                goto,
                ..
            } => {
                let mut attributes = vec![
                    kv("handoff.branch", branch.as_str()),
                    kv("handoff.goto", goto.as_str()),
                ];
                if let Some(c) = condition {
                    attributes.push(kv("handoff.condition", c.as_str()));
                }
                self.event_on_innermost("decision", ns, attributes);
            }
            EventKind::RetryScheduled {
                attempt,
                attempts,
                reason,
                wait_ms,
                ..
            } => {
                self.end_request(event.seq, ns, Some(reason), out);
                self.event_on_innermost(
                    "retry",
                    ns,
                    vec![
                        kv("handoff.attempt", *attempt),
                        kv("handoff.attempts", *attempts),
                        kv("handoff.reason", reason.as_str()),
                        kv("handoff.wait_ms", *wait_ms),
                    ],
                );
            }
            EventKind::TimerStarted {
                duration_ms,
                wake_at,
            } => {
                self.event_on_innermost(
                    "timer.started",
                    ns,
                    vec![
                        kv("handoff.duration_ms", *duration_ms),
                        kv("handoff.wake_at", wake_at.as_str()),
                    ],
                );
            }
            EventKind::TimerWaited { duration_ms } => {
                self.event_on_innermost(
                    "timer.waited",
                    ns,
                    vec![kv("handoff.duration_ms", *duration_ms)],
                );
            }
            EventKind::TimerWaiting { .. } => {}
            EventKind::WaitStarted { signal, until, .. } => {
                self.event_on_innermost(
                    "wait.started",
                    ns,
                    vec![
                        kv("handoff.signal", signal.as_str()),
                        kv("handoff.until", until.as_str()),
                    ],
                );
            }
            EventKind::SignalReceived { signal, via, .. } => {
                let mut attributes = vec![kv("handoff.signal", signal.as_str())];
                if let Some(v) = via {
                    attributes.push(kv("handoff.via", v.as_str()));
                }
                self.event_on_innermost("signal.received", ns, attributes);
            }
            EventKind::WaitTimedOut { signal } => {
                self.event_on_innermost(
                    "wait.timed_out",
                    ns,
                    vec![kv("handoff.signal", signal.as_str())],
                );
            }
            EventKind::Log { message } => {
                self.event_on_innermost("log", ns, vec![kv("handoff.message", message.as_str())]);
            }
            EventKind::StepFinished { next } => {
                self.end_request(event.seq, ns, None, out);
                if let Some((_, mut span)) = self.open.pop() {
                    span.attributes.push(kv("handoff.next", next.as_str()));
                    span.end_time_unix_nano = ns;
                    self.hand_out(span, event.seq, out);
                }
            }
            EventKind::StepFailed {
                error: message,
                error_kind,
                status,
                handled_by,
                ..
            } => {
                self.end_request(event.seq, ns, Some(message), out);
                if let Some((_, mut span)) = self.open.pop() {
                    span.end_time_unix_nano = ns;
                    span.attributes.push(kv("error.type", error_kind.as_str()));
                    if let Some(s) = status {
                        span.attributes.push(kv("http.response.status_code", *s));
                    }
                    if let Some(h) = handled_by {
                        span.attributes.push(kv("handoff.handled_by", h.as_str()));
                    }
                    span.status = Some(error(message));
                    self.hand_out(span, event.seq, out);
                }
            }
            EventKind::ItemFinished {
                status,
                error: message,
                ..
            } => {
                self.end_request(event.seq, ns, None, out);
                if let Some((_, mut span)) = self.open.pop() {
                    span.end_time_unix_nano = ns;
                    span.attributes
                        .push(kv("handoff.item.status", status.as_str()));
                    if let Some(m) = message {
                        span.status = Some(error(m));
                    }
                    self.hand_out(span, event.seq, out);
                }
            }
            EventKind::FlowFinished(outcome) => {
                while let Some((_, mut span)) = self.open.pop() {
                    span.end_time_unix_nano = ns.max(span.start_time_unix_nano);
                    span.status = Some(error("the run ended while it was open"));
                    self.hand_out(span, event.seq, out);
                }
                if let Some(mut run) = self.run.take() {
                    run.end_time_unix_nano = ns.max(run.start_time_unix_nano);
                    let status = match outcome.status {
                        RunStatus::Succeeded => "succeeded",
                        RunStatus::Failed => "failed",
                        RunStatus::Interrupted => "interrupted",
                        RunStatus::Canceled => "canceled",
                    };
                    run.attributes.extend([
                        kv("handoff.run.status", status),
                        kv("handoff.steps_taken", outcome.steps_taken),
                    ]);
                    if let Some(step) = &outcome.at_step {
                        run.attributes.push(kv("handoff.ended_at", step.as_str()));
                    }
                    run.status = Some(if outcome.status == RunStatus::Succeeded {
                        Status {
                            message: String::new(),
                            code: StatusCode::Ok as i32,
                        }
                    } else {
                        error(&outcome.reason)
                    });
                    self.hand_out(run, event.seq, out);
                    // A run that ends has no more spans; the next event would be a new run.
                    self.run = Some(Span::default());
                }
            }
        }
    }

    fn span(&self, seq: u64, parent: Option<[u8; 8]>, name: &str, kind: SpanKind, ns: u64) -> Span {
        Span {
            trace_id: self.ids.trace_id.to_vec(),
            span_id: self.ids.span(seq).to_vec(),
            parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 0x100 | u32::from(self.sampled),
            name: name.to_string(),
            kind: kind as i32,
            start_time_unix_nano: ns,
            end_time_unix_nano: ns,
            ..Span::default()
        }
    }

    /// The id of the innermost open step or item, else the run's: read
    /// from the open spans, not hashed again.
    fn innermost_id(&self) -> [u8; 8] {
        let id = self
            .open
            .iter()
            .rev()
            .find(|(_, s)| s.kind != SpanKind::Client as i32)
            .map(|(_, s)| &s.span_id)
            .or(self.run.as_ref().map(|r| &r.span_id));
        match id.and_then(|id| <[u8; 8]>::try_from(id.as_slice()).ok()) {
            Some(id) => id,
            None => self.ids.span(0),
        }
    }

    fn take_request(&mut self) -> Option<(u64, Span)> {
        match self.open.last() {
            Some((_, s)) if s.kind == SpanKind::Client as i32 => self.open.pop(),
            _ => None,
        }
    }

    /// Ends a request still open without an answer.
    fn end_request(&mut self, seq: u64, ns: u64, why: Option<&str>, out: &mut Vec<Ended>) {
        if let Some((_, mut span)) = self.take_request() {
            span.end_time_unix_nano = ns.max(span.start_time_unix_nano);
            let why = why.unwrap_or("no answer came back");
            span.attributes.push(kv("error.type", "no_answer"));
            span.status = Some(error(why));
            self.hand_out(span, seq, out);
        }
    }

    fn event_on_innermost(&mut self, name: &str, ns: u64, attributes: Vec<KeyValue>) {
        let event = Event {
            time_unix_nano: ns,
            name: name.to_string(),
            attributes,
            dropped_attributes_count: 0,
        };
        match self
            .open
            .iter_mut()
            .rev()
            .find(|(_, s)| s.kind != SpanKind::Client as i32)
        {
            Some((_, span)) => span.events.push(event),
            None => {
                if let Some(run) = &mut self.run {
                    run.events.push(event);
                }
            }
        }
    }

    fn event_on_run(&mut self, name: &str, ns: u64, attributes: Vec<KeyValue>) {
        if let Some(run) = &mut self.run {
            run.events.push(Event {
                time_unix_nano: ns,
                name: name.to_string(),
                attributes,
                dropped_attributes_count: 0,
            });
        }
    }

    fn hand_out(&self, span: Span, closed_at: u64, out: &mut Vec<Ended>) {
        if self.sampled && closed_at > self.quiet_through {
            out.push(Ended { span, closed_at });
        }
    }
}

fn error(message: &str) -> Status {
    Status {
        message: message.to_string(),
        code: StatusCode::Error as i32,
    }
}

/// An RFC 3339 time as nanoseconds since the Unix epoch.
fn time_ns(time: &str) -> Option<u64> {
    let t: jiff::Timestamp = time.parse().ok()?;
    u64::try_from(t.as_nanosecond()).ok()
}

/// A URL's host and explicit port, read from its authority without a full
/// parse (the URL was built and checked before it was sent).
fn server_of(url: &str) -> Option<(String, Option<u16>)> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`.
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urls_server_is_its_host_and_explicit_port() {
        let cases = [
            (
                "http://127.0.0.1:8085/workflows/v2/tasks?x=1",
                Some(("127.0.0.1", Some(8085))),
            ),
            (
                "https://US.nintex.io/workflows",
                Some(("us.nintex.io", None)),
            ),
            (
                "https://user:***@api.example.com:8443",
                Some(("api.example.com", Some(8443))),
            ),
            ("http://[::1]:9000/x", Some(("::1", Some(9000)))),
            ("http://[::1]/x", Some(("::1", None))),
            ("https://host?q=a:b", Some(("host", None))),
            ("not a url", None),
            ("http:///path", None),
        ];
        for (url, want) in cases {
            let got = server_of(url);
            assert_eq!(got.as_ref().map(|(h, p)| (h.as_str(), *p)), want, "{url}");
        }
    }
}
