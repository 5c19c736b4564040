//! Trace events as JSON, written by hand.
//!
//! A dry run writes three events a step, so this is the engine's hottest
//! path after the steps themselves. serde's derived form goes through
//! `#[serde(flatten)]`, which buffers every event's fields in a map before
//! writing them; here each field is written once, in order, and a string is
//! copied whole when it needs no escape (checked eight bytes at a time).
//!
//! The bytes are exactly serde_json's for the same event (a test compares
//! them for every kind), so traces, stored events and snapshots do not
//! change; serde's derive still reads them back. A JSON value inside an
//! event (a response's body) is written the same way, and so is a stored
//! state's fields ([`write_value`]).

use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::run::trace::{EventKind, Outcome, RunStatus, TraceEvent};

/// A key of handoff's own, plain ASCII, with the comma before it, as one
/// piece of text made at compile time: `,"seq":`.
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}

/// `event` as compact JSON: what the stores keep.
pub fn to_string(event: &TraceEvent) -> String {
    let mut out = Vec::with_capacity(256);
    let _ = write_event(event, &mut out);
    // Only whole `&str`s and ASCII were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Events as lines, each with its number: a checkpoint's, for the store.
/// One writer and one buffer for them all, so each line is allocated once,
/// at its length, and the shared `time` is written once. The lines leave
/// out the run's id: the row that holds them names the run, and the store
/// puts the id back as it reads them (see [`with_run`]).
pub fn numbered(events: &[TraceEvent]) -> Vec<(u64, String)> {
    let mut lines = Lines {
        runless: true,
        ..Lines::default()
    };
    let mut line = Vec::with_capacity(1024);
    events
        .iter()
        .map(|event| {
            line.clear();
            lines.write(event, &mut line);
            (
                event.seq,
                String::from_utf8(line.clone()).unwrap_or_default(),
            )
        })
        .collect()
}

/// Appends `event` as one line of compact JSON, without the newline. True
/// when the line may hold characters beyond ASCII (most lines hold none).
pub fn write_event(event: &TraceEvent, out: &mut Vec<u8>) -> bool {
    Lines::default().write(event, out)
}

/// Writes the events of a run, one after another. Their `time` and `run`
/// are shared texts (a dry run's events all have the same), written once
/// and then copied while they stay the same.
#[derive(Default)]
pub struct Lines {
    shared: Option<(Arc<str>, Arc<str>)>,
    /// `,"time":"…","run":"…"` as written, and whether it is beyond ASCII.
    written: Vec<u8>,
    wide: bool,
    /// Where `,"run":…` starts in `written`.
    run_at: usize,
    /// Lines without `run`, for a store (see [`numbered`]).
    runless: bool,
    /// When traces are exported: each line's `trace_id` and `span_id`, so a
    /// trace file and the tracing backend can be joined.
    ids: Option<
        Box<(
            crate::run::otel::ids::TraceIds,
            crate::run::otel::ids::Tracker,
        )>,
    >,
}

impl Lines {
    /// Lines that carry OpenTelemetry ids after `run`.
    pub fn with_ids() -> Lines {
        Lines {
            ids: Some(Box::new((
                crate::run::otel::ids::TraceIds::new("", None),
                Default::default(),
            ))),
            ..Lines::default()
        }
    }

    /// [`write_event`], for the next event of a run.
    pub fn write(&mut self, event: &TraceEvent, out: &mut Vec<u8>) -> bool {
        let mut o = Object::open(out);
        o.u64(key!("seq"), event.seq);
        o.u64(key!("at_ms"), event.at_ms);
        let same = self.shared.as_ref().is_some_and(|(time, run)| {
            Arc::ptr_eq(time, &event.time) && Arc::ptr_eq(run, &event.run)
        });
        if !same {
            self.written.clear();
            let mut shared = Object {
                out: &mut self.written,
                first: false,
                wide: false,
            };
            shared.str(key!("time"), &event.time);
            self.run_at = shared.out.len();
            shared.str(key!("run"), &event.run);
            self.wide = shared.wide;
            self.shared = Some((event.time.clone(), event.run.clone()));
        }
        let end = if self.runless {
            self.run_at
        } else {
            self.written.len()
        };
        o.out.extend_from_slice(&self.written[..end]);
        o.wide |= self.wide;
        if let Some(ids) = &mut self.ids {
            let (trace, tracker) = &mut **ids;
            let parent = match &event.kind {
                EventKind::FlowStarted { traceparent, .. } => Some(traceparent),
                _ if trace.run() != &*event.run => Some(&None),
                _ => None,
            };
            if let Some(parent) = parent {
                let parent = parent
                    .as_deref()
                    .and_then(crate::run::otel::ids::Parent::parse);
                *trace = crate::run::otel::ids::TraceIds::new(&event.run, parent);
            }
            let seq = tracker.follow(event);
            o.str(
                key!("trace_id"),
                &crate::run::otel::ids::hex(&trace.trace_id),
            );
            o.str(
                key!("span_id"),
                &crate::run::otel::ids::hex(&trace.span(seq)),
            );
        }
        rest(event, o)
    }
}

/// A stored line with its run's id put back, where [`numbered`] left it
/// out: after `time`, where every other writer puts it. A line that has it
/// (from before, or written another way) is returned as it is.
pub fn with_run(line: &str, run: &str) -> String {
    let Some(at) = runless_at(line) else {
        return line.to_string();
    };
    let mut out = String::with_capacity(line.len() + run.len() + 10);
    out.push_str(&line[..at]);
    out.push_str(",\"run\":");
    let mut quoted = Vec::with_capacity(run.len() + 2);
    write_str(&mut quoted, run);
    out.push_str(std::str::from_utf8(&quoted).unwrap_or("\"\""));
    out.push_str(&line[at..]);
    out
}

/// Where a line as [`numbered`] writes it would have its `run`: right
/// after `{"seq":N,"at_ms":N,"time":"…"`, when nothing named `run` follows.
fn runless_at(line: &str) -> Option<usize> {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let rest = line.strip_prefix("{\"seq\":")?;
    let n = digits(rest);
    let rest = rest[n..].strip_prefix(",\"at_ms\":")?;
    let m = digits(rest);
    let rest = rest[m..].strip_prefix(",\"time\":\"")?;
    // The closing quote: the first not escaped.
    let bytes = rest.as_bytes();
    let mut i = 0;
    while *bytes.get(i)? != b'"' {
        i += if bytes[i] == b'\\' { 2 } else { 1 };
    }
    let after = &rest[i + 1..];
    if n == 0 || m == 0 || after.starts_with(",\"run\":") {
        return None;
    }
    Some(line.len() - after.len())
}

/// Everything after `run`.
fn rest(event: &TraceEvent, mut o: Object<'_>) -> bool {
    if let Some(step) = &event.step {
        o.str(key!("step"), step);
    }
    o.str(key!("event"), event.kind.tag());
    match &event.kind {
        EventKind::RunResumed {
            at_step,
            why,
            unsettled,
        } => {
            o.str(key!("at_step"), at_step);
            o.str(key!("why"), why);
            if let Some(u) = unsettled {
                o.value(
                    key!("unsettled"),
                    &serde_json::to_value(u).unwrap_or_default(),
                );
            }
        }
        EventKind::FlowStarted {
            flow,
            dry_run,
            fields,
            route,
            traceparent,
            started_by,
        } => {
            o.str(key!("flow"), flow);
            o.bool(key!("dry_run"), *dry_run);
            o.values(key!("fields"), fields);
            o.opt_str(key!("route"), route.as_deref());
            o.opt_str(key!("traceparent"), traceparent.as_deref());
            o.opt_str(key!("started_by"), started_by.as_deref());
        }
        EventKind::StepStarted { kind } => o.str(key!("kind"), kind),
        EventKind::RequestSent {
            method,
            url,
            headers,
            body,
            attempt,
        } => {
            o.str(key!("method"), method);
            o.str(key!("url"), url);
            o.texts(key!("headers"), headers);
            if let Some(body) = body {
                o.value(key!("body"), body);
            }
            if let Some(attempt) = attempt {
                o.u64(key!("attempt"), u64::from(*attempt));
            }
        }
        EventKind::ResponseReceived {
            status,
            headers,
            body,
            duration_ms,
        } => {
            o.u64(key!("status"), u64::from(*status));
            if !headers.is_empty() {
                o.texts(key!("headers"), headers);
            }
            if let Some(body) = body {
                o.value(key!("body"), body);
            }
            o.u64(key!("duration_ms"), *duration_ms);
        }
        EventKind::FieldSet { field, value } => {
            o.str(key!("field"), field);
            o.value(key!("value"), value);
        }
        EventKind::DecisionTaken {
            branch,
            condition,
            goto,
            values,
        } => {
            o.str(key!("branch"), branch);
            o.opt_str(key!("condition"), condition.as_deref());
            o.str(key!("goto"), goto);
            o.values(key!("values"), values);
        }
        EventKind::RetryScheduled {
            attempt,
            attempts,
            reason,
            wait_ms,
            retry_after,
        } => {
            o.u64(key!("attempt"), u64::from(*attempt));
            o.u64(key!("attempts"), u64::from(*attempts));
            o.str(key!("reason"), reason);
            o.u64(key!("wait_ms"), *wait_ms);
            o.opt_str(key!("retry_after"), retry_after.as_deref());
        }
        EventKind::TimerStarted {
            duration_ms,
            wake_at,
        } => {
            o.u64(key!("duration_ms"), *duration_ms);
            o.str(key!("wake_at"), wake_at);
        }
        EventKind::TimerWaiting { left_ms } => o.u64(key!("left_ms"), *left_ms),
        EventKind::TimerWaited { duration_ms } => o.u64(key!("duration_ms"), *duration_ms),
        EventKind::Log { message } => o.str(key!("message"), message),
        EventKind::StepFinished { next } => o.str(key!("next"), next),
        EventKind::StepFailed {
            kind,
            error,
            hint,
            error_kind,
            status,
            handled_by,
        } => {
            o.str(key!("kind"), kind);
            o.str(key!("error"), error);
            o.opt_str(key!("hint"), hint.as_deref());
            o.str(key!("error_kind"), error_kind);
            if let Some(status) = status {
                o.u64(key!("status"), u64::from(*status));
            }
            o.opt_str(key!("handled_by"), handled_by.as_deref());
        }
        EventKind::ItemStarted { index, of, item } => {
            o.u64(key!("index"), *index);
            o.u64(key!("of"), *of);
            o.value(key!("item"), item);
        }
        EventKind::ItemFinished {
            index,
            status,
            result,
            error,
        } => {
            o.u64(key!("index"), *index);
            o.str(key!("status"), status);
            if let Some(result) = result {
                o.value(key!("result"), result);
            }
            o.opt_str(key!("error"), error.as_deref());
        }
        EventKind::WaitStarted {
            signal,
            timeout_ms,
            until,
        } => {
            o.str(key!("signal"), signal);
            o.u64(key!("timeout_ms"), *timeout_ms);
            o.str(key!("until"), until);
        }
        EventKind::SignalReceived { signal, data, via } => {
            o.str(key!("signal"), signal);
            o.value(key!("data"), data);
            o.opt_str(key!("via"), via.as_deref());
        }
        EventKind::WaitTimedOut { signal } => o.str(key!("signal"), signal),
        EventKind::OperationCalled {
            operation,
            method,
            path,
        } => {
            o.str(key!("operation"), operation);
            o.str(key!("method"), method);
            o.str(key!("path"), path);
        }
        EventKind::FlowFinished(outcome) => outcome_fields(&mut o, outcome),
    }
    o.close()
}

fn outcome_fields(o: &mut Object<'_>, outcome: &Outcome) {
    o.str(key!("status"), outcome.status.as_str());
    o.opt_str(key!("at_step"), outcome.at_step.as_deref());
    o.str(key!("reason"), &outcome.reason);
    o.opt_str(key!("last_branch"), outcome.last_branch.as_deref());
    if let Some(tries) = outcome.tries {
        o.u64(key!("tries"), tries);
    }
    o.u64(key!("steps_taken"), outcome.steps_taken);
    o.u64(key!("elapsed_ms"), outcome.elapsed_ms);
}

impl RunStatus {
    /// The status as the trace spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Canceled => "canceled",
        }
    }
}

/// A JSON object being written.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    /// Something beyond ASCII may have been written.
    wide: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object {
            out,
            first: true,
            wide: false,
        }
    }

    /// A key made by [`key!`]: its comma is left out when it comes first.
    fn key(&mut self, key: &'static str) {
        let key = if self.first { &key[1..] } else { key };
        self.first = false;
        self.out.extend_from_slice(key.as_bytes());
    }

    fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        self.wide |= string(self.out, value);
    }

    fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    fn u64(&mut self, key: &'static str, value: u64) {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn bool(&mut self, key: &'static str, value: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn value(&mut self, key: &'static str, value: &Value) {
        self.key(key);
        self.wide |= json_value(self.out, value);
    }

    fn values(&mut self, key: &'static str, map: &IndexMap<String, Value>) {
        self.key(key);
        let mut inner = Object::open(self.out);
        for (k, v) in map {
            inner.any_key(k);
            inner.wide |= json_value(inner.out, v);
        }
        self.wide |= inner.close();
    }

    fn texts(&mut self, key: &'static str, map: &IndexMap<String, String>) {
        self.key(key);
        let mut inner = Object::open(self.out);
        for (k, v) in map {
            inner.any_key(k);
            inner.wide |= string(inner.out, v);
        }
        self.wide |= inner.close();
    }

    /// A key that is data (a field's or a header's name): escaped.
    fn any_key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.wide |= string(self.out, key);
        self.out.push(b':');
    }

    fn close(self) -> bool {
        self.out.push(b'}');
        self.wide
    }
}

/// A JSON value, as serde_json writes it (compact, keys in their order),
/// for what is not a trace event: a run's fields in its stored state. True
/// when it may hold characters beyond ASCII.
pub fn write_value(out: &mut Vec<u8>, value: &Value) -> bool {
    json_value(out, value)
}

/// A JSON string, as serde_json writes it: a stored field's name.
pub fn write_str(out: &mut Vec<u8>, s: &str) -> bool {
    string(out, s)
}

/// A JSON value, as serde_json writes it: all by hand (a response body's
/// strings through [`string`]'s fast path) but numbers that are not
/// integers. True when it may hold characters beyond ASCII.
fn json_value(out: &mut Vec<u8>, value: &Value) -> bool {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::String(s) => return string(out, s),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
            } else if let Some(i) = n.as_i64() {
                out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
            } else {
                let _ = serde_json::to_writer(&mut *out, n);
            }
        }
        Value::Array(items) => {
            out.push(b'[');
            let mut wide = false;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                wide |= json_value(out, item);
            }
            out.push(b']');
            return wide;
        }
        Value::Object(map) => {
            out.push(b'{');
            let mut wide = false;
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                wide |= string(out, key);
                out.push(b':');
                wide |= json_value(out, item);
            }
            out.push(b'}');
            return wide;
        }
    }
    false
}

/// A JSON string. Most need no escape at all: those are found eight bytes
/// at a time and copied whole. True when it holds characters beyond ASCII.
fn string(out: &mut Vec<u8>, s: &str) -> bool {
    let bytes = s.as_bytes();
    let (plain, wide) = scan(bytes);
    if plain {
        // Most strings: room made once for all three parts.
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
    } else {
        out.push(b'"');
        escaped(out, bytes);
    }
    out.push(b'"');
    wide
}

/// Whether no byte needs an escape (no `"`, no `\`, no control character),
/// and whether any is beyond ASCII: eight bytes at a time, the last few
/// padded with spaces, which need none.
fn scan(bytes: &[u8]) -> (bool, bool) {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(LOW) & !x & HIGH;
    // A byte below 0x20, or equal to `"` or `\`. Bytes of 0x80 and up
    // (UTF-8) would set the high bit here: they are masked out first.
    let needs = |x: u64| {
        let ascii = !x & HIGH;
        let below = x.wrapping_sub(LOW * 0x20) & ascii;
        let quote = has_zero(x ^ (LOW * u64::from(b'"')));
        let backslash = has_zero(x ^ (LOW * u64::from(b'\\')));
        below | quote | backslash != 0
    };
    let mut high = 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        high |= x & HIGH;
        if needs(x) {
            return (false, bytes.iter().any(|&b| b >= 0x80));
        }
    }
    let rest = chunks.remainder();
    let mut word = [b' '; 8];
    word[..rest.len()].copy_from_slice(rest);
    let x = u64::from_le_bytes(word);
    high |= x & HIGH;
    (!needs(x), high != 0)
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::trace::Outcome;

    /// Strings that take every path: plain, each escape, control bytes at
    /// every position of an eight-byte word, UTF-8 (whose high bytes must
    /// not pass for control characters), and lengths around a word.
    fn strings() -> Vec<String> {
        let mut all: Vec<String> = [
            "",
            "a",
            "plain-text_7",
            "exactly8",
            "sixteen chars ok",
            "quote\"inside",
            "back\\slash",
            "new\nline\r\ttab",
            "\u{8}\u{c}\u{1}\u{1f}\u{7f}",
            "é ü → 日本 🎉",
            "\u{202e}bidi\u{2066}",
            "ÿÿÿÿÿÿÿÿ\u{80}\u{9f}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', 'é'] {
            for at in 0..17 {
                let mut s = "x".repeat(at);
                s.push(special);
                s.push_str(&"y".repeat(17 - at));
                all.push(s);
            }
        }
        all
    }

    fn events(text: &str) -> Vec<EventKind> {
        let t = || text.to_string();
        let map: IndexMap<String, Value> = [
            (t(), Value::from(t())),
            ("n".to_string(), Value::from(-3)),
            ("u".to_string(), Value::from(u64::MAX)),
            ("f".to_string(), Value::from(1.5e300)),
            ("z".to_string(), Value::from(0.1)),
            (
                "l".to_string(),
                serde_json::json!([1, {"k": [t(), null, true]}]),
            ),
            (
                "o".to_string(),
                serde_json::json!({ t(): { t(): [t(), -0.0, 2.5, [], {}] }, "e": {} }),
            ),
        ]
        .into_iter()
        .collect();
        let headers: IndexMap<String, String> =
            [(t(), t()), ("h".into(), "v".into())].into_iter().collect();
        let outcome = |some: bool| Outcome {
            status: RunStatus::Failed,
            at_step: some.then(t),
            reason: t(),
            last_branch: some.then(t),
            tries: some.then_some(4),
            steps_taken: 9,
            elapsed_ms: 10,
        };
        vec![
            EventKind::RunResumed {
                at_step: t(),
                why: t(),
                unsettled: Some(crate::run::state::Unsettled {
                    seq: 7,
                    method: t(),
                    url: t(),
                }),
            },
            EventKind::FlowStarted {
                flow: t(),
                dry_run: true,
                fields: map.clone(),
                route: Some(t()),
                traceparent: Some(t()),
                started_by: Some(t()),
            },
            EventKind::FlowStarted {
                flow: t(),
                dry_run: false,
                fields: IndexMap::new(),
                route: None,
                traceparent: None,
                started_by: None,
            },
            EventKind::StepStarted { kind: t().into() },
            EventKind::RequestSent {
                method: t(),
                url: t(),
                headers: headers.clone(),
                body: Some(Value::Object(map.clone().into_iter().collect())),
                attempt: Some(2),
            },
            EventKind::RequestSent {
                method: t(),
                url: t(),
                headers: IndexMap::new(),
                body: None,
                attempt: None,
            },
            EventKind::ResponseReceived {
                status: 404,
                headers: headers.clone(),
                body: Some(Value::from(t())),
                duration_ms: 3,
            },
            EventKind::ResponseReceived {
                status: 200,
                headers: IndexMap::new(),
                body: None,
                duration_ms: 0,
            },
            EventKind::FieldSet {
                field: t(),
                value: Value::from(t()),
            },
            EventKind::FieldSet {
                field: t(),
                value: Value::from(-0.0),
            },
            EventKind::DecisionTaken {
                branch: t(),
                condition: Some(t()),
                goto: t(),
                values: map.clone(),
            },
            EventKind::DecisionTaken {
                branch: t(),
                condition: None,
                goto: t(),
                values: IndexMap::new(),
            },
            EventKind::RetryScheduled {
                attempt: 1,
                attempts: 3,
                reason: t(),
                wait_ms: 5,
                retry_after: Some(t()),
            },
            EventKind::RetryScheduled {
                attempt: 1,
                attempts: 3,
                reason: t(),
                wait_ms: 5,
                retry_after: None,
            },
            EventKind::TimerStarted {
                duration_ms: 1,
                wake_at: t(),
            },
            EventKind::TimerWaiting { left_ms: 2 },
            EventKind::TimerWaited { duration_ms: 3 },
            EventKind::Log { message: t() },
            EventKind::StepFinished { next: t() },
            EventKind::StepFailed {
                kind: t(),
                error: t(),
                hint: Some(t()),
                error_kind: t(),
                status: Some(500),
                handled_by: Some(t()),
            },
            EventKind::StepFailed {
                kind: t(),
                error: t(),
                hint: None,
                error_kind: String::new(),
                status: None,
                handled_by: None,
            },
            EventKind::FlowFinished(outcome(true)),
            EventKind::FlowFinished(outcome(false)),
            EventKind::WaitStarted {
                signal: "approval".to_string(),
                timeout_ms: 259_200_000,
                until: "2025-06-05T00:00:00.000Z".to_string(),
            },
            EventKind::SignalReceived {
                signal: "approval".to_string(),
                data: serde_json::json!({ "decision": "approve" }),
                via: Some("url".to_string()),
            },
            EventKind::WaitTimedOut {
                signal: "approval".to_string(),
            },
            EventKind::OperationCalled {
                operation: "jobs.getJob".to_string(),
                method: "GET".to_string(),
                path: "/jobs/{jobId}".to_string(),
            },
            EventKind::ItemStarted {
                index: 3,
                of: 8,
                item: serde_json::json!({ "id": "t-3", "name": "a \"quoted\" name" }),
            },
            EventKind::ItemFinished {
                index: 3,
                status: "failed".to_string(),
                result: Some(serde_json::json!("left")),
                error: Some("step `ask` failed: 503".to_string()),
            },
        ]
    }

    /// The bytes are serde_json's, for every kind, every optional field
    /// present and absent, and strings that need every kind of escape.
    #[test]
    fn writes_what_serde_json_writes() {
        let mut compared = 0;
        let mut lines = Lines::default();
        let run: Arc<str> = "01a2202d-4dd1-779e-9531-c28d50b8af48".into();
        for text in strings() {
            let time: Arc<str> = text.as_str().into();
            for kind in events(&text) {
                for step in [None, Some(text.clone())] {
                    let event = TraceEvent {
                        seq: u64::MAX,
                        at_ms: 0,
                        time: time.clone(),
                        run: run.clone(),
                        step: step.map(Into::into),
                        kind: kind.clone(),
                    };
                    let mut ours = Vec::new();
                    let wide = write_event(&event, &mut ours);
                    let theirs = serde_json::to_string(&event).unwrap();
                    assert!(wide || theirs.is_ascii(), "{theirs}");
                    assert_eq!(String::from_utf8(ours).unwrap(), theirs);
                    // A writer that has written other events writes the same.
                    let mut again = Vec::new();
                    lines.write(&event, &mut again);
                    assert_eq!(String::from_utf8(again).unwrap(), theirs);
                    compared += 1;
                }
            }
        }
        assert!(compared > 2000, "{compared}");
    }

    #[test]
    fn numbered_lines_are_the_lines_one_at_a_time() {
        let run: Arc<str> = "01a2202d-4dd1-779e-9531-c28d50b8af48".into();
        let mut all = Vec::new();
        for (i, text) in strings().into_iter().enumerate() {
            let time: Arc<str> = if i % 3 == 0 {
                text.as_str().into()
            } else {
                "t".into()
            };
            for kind in events(&text) {
                all.push(TraceEvent {
                    seq: all.len() as u64 + 1,
                    at_ms: 0,
                    time: time.clone(),
                    run: run.clone(),
                    step: Some(text.clone().into()),
                    kind,
                });
            }
        }
        let alone: Vec<(u64, String)> = all.iter().map(|e| (e.seq, to_string(e))).collect();
        // Stored without the run's id, and read back with it, whatever
        // the time holds.
        let stored = numbered(&all);
        assert!(stored.iter().all(|(_, line)| !line.contains(&*run)));
        let read: Vec<(u64, String)> = stored
            .iter()
            .map(|(seq, line)| (*seq, with_run(line, &run)))
            .collect();
        assert_eq!(read, alone);
        // A line that names its run already is read as it is.
        for (_, line) in &alone {
            assert_eq!(&with_run(line, "another"), line);
        }
        // So is one written another way (keys in order, a cancel's ending).
        let sorted = serde_json::from_str::<serde_json::Value>(&alone[0].1)
            .unwrap()
            .to_string();
        assert_eq!(with_run(&sorted, "another"), sorted);
    }

    /// A value alone (a stored field) is written as serde_json writes it,
    /// at any depth, whatever its strings hold.
    #[test]
    fn a_value_is_written_as_serde_json_writes_it() {
        let all = strings();
        for text in &all {
            let value = serde_json::json!([
                text,
                { text: text, "n": [u64::MAX, i64::MIN, 0.25, 1e-7, null] },
                [[{ "deep": [text, false] }]],
                {},
                []
            ]);
            let mut ours = Vec::new();
            let wide = write_value(&mut ours, &value);
            let theirs = serde_json::to_string(&value).unwrap();
            assert_eq!(wide, !theirs.is_ascii(), "{theirs}");
            assert_eq!(String::from_utf8(ours).unwrap(), theirs);
        }
    }

    #[test]
    fn scan_agrees_with_a_byte_by_byte_check() {
        for text in strings() {
            for cut in 0..=text.len() {
                let bytes = &text.as_bytes()[cut..];
                let expected = (
                    !bytes.iter().any(|&b| needs_escape(b)),
                    bytes.iter().any(|&b| b >= 0x80),
                );
                assert_eq!(scan(bytes), expected, "{bytes:?}");
            }
        }
    }
}
