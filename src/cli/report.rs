//! Renders a trace: `pretty` for people, `jsonl` for programs.
//!
//! Both are views of the same [`TraceEvent`]s; neither adds information the
//! trace does not hold, except the real elapsed time on the final line.

use std::time::Duration;

use serde_json::Value;

use crate::run::clock::format_duration;
use crate::run::http::send::{excerpt, status_text};
use crate::run::trace::{EventKind, Outcome, RunStatus, TraceEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFormat {
    Pretty,
    Jsonl,
}

/// ANSI styling that is a no-op when colour is off.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    pub fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    pub fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    pub fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    pub fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    pub fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    pub fn cyan(&self, t: &str) -> String {
        self.paint("36", t)
    }
}

/// One event as a line of JSON. JSON escapes control characters itself;
/// the characters that reorder text are escaped too, as a terminal may show
/// the line.
pub fn jsonl(event: &TraceEvent) -> String {
    let mut line = Vec::new();
    jsonl_append(event, &mut crate::run::jsonl::Lines::default(), &mut line);
    String::from_utf8(line).unwrap_or_default()
}

/// [`jsonl`], added to the end of `out`: a printer writes every event of its
/// run with one writer, into one buffer.
pub fn jsonl_append(event: &TraceEvent, lines: &mut crate::run::jsonl::Lines, out: &mut Vec<u8>) {
    let start = out.len();
    // Lines of ASCII alone (most) hold none of them.
    if !lines.write(event, out) || !out[start..].contains(&0xE2) {
        return;
    }
    let Ok(text) = std::str::from_utf8(&out[start..]) else {
        return;
    };
    if !text.contains(is_bidi) {
        return;
    }
    // They can only stand inside JSON strings, where `\uXXXX` means the same.
    let escaped: String = text
        .chars()
        .map(|c| {
            if is_bidi(c) {
                format!("\\u{:04x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect();
    out.truncate(start);
    out.extend_from_slice(escaped.as_bytes());
}

fn is_bidi(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One event as zero or more lines of text, each ending in a newline.
/// `real` is the wall-clock time so far, shown on the final line when given.
pub fn pretty(event: &TraceEvent, style: Style, real: Option<Duration>) -> String {
    let time = style.dim(&format!(
        "{:>9}",
        format!("{:.3}s", event.at_ms as f64 / 1000.0)
    ));
    let step = &*esc(event.step.as_deref().unwrap_or(""));
    let line = |text: String| format!("{time}    {text}\n");
    match &event.kind {
        EventKind::FlowStarted {
            flow,
            dry_run,
            fields,
            route,
            started_by,
            ..
        } => {
            let mode = if *dry_run { " (dry run)" } else { "" };
            let mut out = format!(
                "{} {}{}\n",
                style.bold("flow"),
                style.bold(&esc(flow)),
                style.dim(mode)
            );
            if !fields.is_empty() {
                let shown: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", value_text(v)))
                    .collect();
                out.push_str(&format!(
                    "{}  {}\n",
                    " ".repeat(9),
                    style.dim(&shown.join("  "))
                ));
            }
            if let Some(by) = started_by {
                out.push_str(&format!(
                    "{}  {}\n",
                    " ".repeat(9),
                    style.dim(&format!("started as a {}", esc(by)))
                ));
            }
            if let Some(route) = route {
                out.push_str(&format!(
                    "{}  {}\n",
                    " ".repeat(9),
                    style.yellow(&esc(route))
                ));
            }
            out
        }
        EventKind::RunResumed {
            at_step,
            why,
            unsettled,
        } => {
            let mut out = format!(
                "{}\n",
                style.yellow(&format!(
                    "↺ resumed at step `{}`: {}",
                    esc(at_step),
                    esc(why)
                ))
            );
            if let Some(u) = unsettled {
                out.push_str(&format!(
                    "{}\n",
                    style.yellow(&format!(
                        "  ⚠ {} {} (event {}) was sent before the restart; outcome unknown: it may have landed, and what follows settles it",
                        esc(&u.method),
                        esc(&u.url),
                        u.seq
                    ))
                ));
            }
            out
        }
        EventKind::StepStarted { kind } => format!(
            "{time}  {} {}\n",
            style.bold(step),
            style.dim(&format!("({})", esc(kind)))
        ),
        EventKind::OperationCalled {
            operation,
            method,
            path,
        } => line(style.cyan(&format!("⇢ {} ({method} {})", esc(operation), esc(path)))),
        EventKind::RequestSent {
            method,
            url,
            headers,
            body,
            attempt,
        } => {
            let again = attempt
                .map(|a| format!("  (attempt {a})"))
                .unwrap_or_default();
            let mut out = line(style.cyan(&format!("→ {method} {}{again}", esc(url))));
            for (name, value) in headers {
                out.push_str(&line(style.dim(&format!(
                    "  {}: {}",
                    esc(name),
                    esc(value)
                ))));
            }
            if let Some(b) = body {
                out.push_str(&line(
                    style.dim(&format!("  {}", excerpt(&value_text(b), 160))),
                ));
            }
            out
        }
        EventKind::RetryScheduled {
            attempt,
            attempts,
            reason,
            wait_ms,
            retry_after,
        } => {
            let after = retry_after
                .as_ref()
                .map(|r| format!(", Retry-After: {}", esc(r)))
                .unwrap_or_default();
            line(style.yellow(&format!(
                "↻ attempt {attempt} of {attempts}: {}; retrying in {}{after}",
                esc(reason),
                format_duration(Duration::from_millis(*wait_ms))
            )))
        }
        EventKind::ResponseReceived {
            status,
            body,
            duration_ms,
            ..
        } => {
            let mut text = format!("← {}", status_text(*status));
            if let Some(b) = body {
                text.push_str(&format!("  {}", excerpt(&value_text(b), 160)));
            }
            if *duration_ms > 0 {
                text.push_str(&style.dim(&format!(
                    "  ({})",
                    format_duration(Duration::from_millis(*duration_ms))
                )));
            }
            let painted = if (200..300).contains(status) {
                style.cyan(&text)
            } else {
                style.yellow(&text)
            };
            line(painted)
        }
        EventKind::FieldSet { field, value } => {
            line(format!("{field} = {}", excerpt(&value_text(value), 160)))
        }
        EventKind::DecisionTaken {
            branch,
            condition,
            goto,
            values,
        } => {
            let why = match condition {
                Some(c) => format!("{branch}: {}", esc(c)),
                None => branch.clone(),
            };
            let mut text = format!(
                "{} {}",
                style.bold(&format!("→ {}", esc(goto))),
                style.dim(&format!("[{why}]"))
            );
            if !values.is_empty() {
                let shown: Vec<String> = values
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", value_text(v)))
                    .collect();
                text.push_str(&style.dim(&format!("  with {}", shown.join(", "))));
            }
            line(text)
        }
        EventKind::TimerStarted {
            duration_ms,
            wake_at,
        } => line(format!(
            "waits {}, until {}",
            format_duration(Duration::from_millis(*duration_ms)),
            esc(wake_at)
        )),
        EventKind::TimerWaiting { left_ms } => line(style.dim(&format!(
            "still waiting, {} left",
            format_duration(Duration::from_millis(*left_ms))
        ))),
        EventKind::TimerWaited { .. } => String::new(),
        EventKind::Log { message } => line(format!("log: {}", esc(message))),
        EventKind::StepFinished { .. } => String::new(),
        EventKind::StepFailed {
            kind,
            error,
            hint,
            handled_by,
            ..
        } => {
            let mut out =
                line(style.red(&format!("✗ {step} ({}) failed: {}", esc(kind), esc(error))));
            if let Some(h) = hint {
                out.push_str(&line(style.dim(&format!("  hint: {}", esc(h)))));
            }
            if let Some(target) = handled_by {
                out.push_str(&line(
                    style.yellow(&format!("  → on_error: {}", esc(target))),
                ));
            }
            out
        }
        EventKind::ItemStarted { index, of, item } => line(style.bold(&format!(
            "┌ {step} item {} of {of}: {}",
            index + 1,
            excerpt(&value_text(item), 120)
        ))),
        EventKind::ItemFinished {
            index,
            status,
            result,
            error,
        } => {
            let tail = match (result, error) {
                (_, Some(e)) => style.red(&format!(": {}", esc(e))),
                (Some(r), None) => format!(" → {}", excerpt(&value_text(r), 120)),
                (None, None) => String::new(),
            };
            line(format!("└ {step} item {} {}{tail}", index + 1, esc(status)))
        }
        EventKind::WaitStarted {
            signal,
            timeout_ms,
            until,
        } => line(style.yellow(&format!(
            "⏸ waits for signal `{}`, at most {} (until {})",
            esc(signal),
            format_duration(Duration::from_millis(*timeout_ms)),
            esc(until)
        ))),
        EventKind::SignalReceived { signal, data, via } => {
            let via = via
                .as_ref()
                .map(|v| format!(" (via {})", esc(v)))
                .unwrap_or_default();
            line(style.green(&format!(
                "▶ signal `{}`{via}: {}",
                esc(signal),
                excerpt(&value_text(data), 160)
            )))
        }
        EventKind::WaitTimedOut { signal } => {
            line(style.yellow(&format!("⌛ no signal `{}` in time", esc(signal))))
        }
        EventKind::FlowFinished(outcome) => format!("{}\n", summary(outcome, style, real)),
    }
}

/// The final line: how the run ended and why, where, after how many tries,
/// and how long it took.
pub fn summary(outcome: &Outcome, style: Style, real: Option<Duration>) -> String {
    let head = match outcome.status {
        RunStatus::Succeeded => style.green(&style.bold("✔ succeeded")),
        RunStatus::Failed => style.red(&style.bold("✘ failed")),
        RunStatus::Interrupted => style.yellow(&style.bold("■ interrupted")),
        RunStatus::Canceled => style.yellow(&style.bold("■ canceled")),
    };
    let mut parts = vec![format!("{head}: {}", esc(&outcome.reason))];
    if let Some(branch) = &outcome.last_branch {
        let branch = esc(branch);
        match outcome.tries {
            Some(t) => parts.push(format!("{branch} on try {t}")),
            None => parts.push(branch.into_owned()),
        }
    }
    parts.push(if outcome.steps_taken == 1 {
        "1 step".to_string()
    } else {
        format!("{} steps", outcome.steps_taken)
    });
    let clock = format_duration(Duration::from_millis(outcome.elapsed_ms));
    match real {
        Some(r) => parts.push(format!(
            "{clock} virtual, {} real",
            format_duration(round_ms(r))
        )),
        None => parts.push(clock),
    }
    parts.join(" · ")
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().max(1) as u64)
}

/// A value as the pretty trace shows it: JSON (which escapes control
/// characters), but bare for the mask.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) if s == crate::run::redact::MASK => s.clone(),
        other => esc(&other.to_string()).into_owned(),
    }
}

/// Text from data, made safe for a terminal: control characters (a carriage
/// return or an escape sequence could paint a fake line over a real one) and
/// the characters that reorder text are shown as escapes, such as `\r` or
/// `\u{1b}`.
pub fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| (c.is_control() && c != '\t') || is_bidi(c);
    if !text.contains(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The largest trace file `diff` and `replay` read, and its longest line
/// (an event keeps at most 64 KB of a body, so real lines are far shorter).
const MAX_TRACE_BYTES: u64 = 512 * 1024 * 1024;
const MAX_TRACE_LINE: u64 = 16 * 1024 * 1024;

/// A JSONL trace file as read (`--trace-file run.jsonl`, or `run.jsonl.gz`,
/// known by its first bytes): its events, in order, less the heartbeats,
/// which say only that time passed.
pub fn read_trace(path: &std::path::Path) -> Result<Vec<TraceEvent>, String> {
    use std::io::{BufRead, Read};
    let cannot = |e: std::io::Error| {
        let why = match e.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => e.to_string(),
            _ => crate::language::source::io_reason(&e),
        };
        format!("cannot read `{}`: {why}", path.display())
    };
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(cannot)?);
    let gzip = file.fill_buf().map_err(cannot)?.starts_with(&[0x1f, 0x8b]);
    let mut bytes = Vec::new();
    // The limits count what the file holds once decompressed.
    let read = if gzip {
        let decoder = flate2::bufread::MultiGzDecoder::new(file);
        crate::run::bounded::Bounded::new(decoder, MAX_TRACE_LINE, MAX_TRACE_BYTES)
            .read_to_end(&mut bytes)
    } else {
        crate::run::bounded::Bounded::new(file, MAX_TRACE_LINE, MAX_TRACE_BYTES)
            .read_to_end(&mut bytes)
    };
    match read {
        Ok(_) => {}
        // Cut off while it was written (the run was killed): its whole lines
        // are what it holds, as with a plain file cut off after a line.
        Err(e) if gzip && e.kind() == std::io::ErrorKind::UnexpectedEof => {
            let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            bytes.truncate(whole);
        }
        Err(e) => return Err(cannot(e)),
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("cannot read `{}`: it is not UTF-8 text", path.display()))?;
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str::<TraceEvent>(line).map_err(|_| {
            format!(
                "line {} of `{}` is not a trace event; write traces with `--trace-file FILE.jsonl`",
                i + 1,
                path.display()
            )
        })?;
        // Heartbeats depend on the wall clock, not on what the run did.
        if !matches!(event.kind, EventKind::TimerWaiting { .. }) {
            events.push(event);
        }
    }
    if events.is_empty() {
        return Err(format!("`{}` has no trace events", path.display()));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::trace::EventKind;

    #[test]
    fn data_cannot_paint_over_the_terminal() {
        let forged = "oops\r\x1b[2K\x1b[32m✔ succeeded\x1b[0m\u{202e}";
        let event = TraceEvent {
            seq: 1,
            at_ms: 0,
            time: "".into(),
            run: "".into(),
            step: Some("s".into()),
            kind: EventKind::StepFailed {
                kind: "http".into(),
                error: forged.into(),
                hint: Some(forged.into()),
                error_kind: "status".into(),
                status: None,
                handled_by: None,
            },
        };
        for color in [false, true] {
            let text = pretty(&event, Style { color }, None);
            assert!(
                !text.contains('\r') && !text.contains('\u{202e}'),
                "{text:?}"
            );
            assert!(text.contains("oops\\r\\u{1b}[2K"), "{text:?}");
            // Only handoff's own colour codes remain: each opens a style or resets it.
            let escapes = text.matches('\x1b').count();
            assert_eq!(escapes, if color { 8 } else { 0 }, "{text:?}");
        }
        let log = TraceEvent {
            seq: 2,
            at_ms: 0,
            time: "".into(),
            run: "".into(),
            step: None,
            kind: EventKind::Log {
                message: "a\nb".into(),
            },
        };
        assert_eq!(
            pretty(&log, Style { color: false }, None).lines().count(),
            1
        );
    }
}
