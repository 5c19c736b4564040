//! `handoff diff TRACE_A TRACE_B`: where two runs of a flow part.
//!
//! The two JSONL traces are walked event by event, leaving out what differs
//! between any two runs (times, ids, latencies, heartbeats, a server's `Date`
//! header and the others a flow cannot read, and whether it was a dry run,
//! as a replay is), and the first event that differs is shown with the events
//! before it, from both sides: another branch taken, another request,
//! another value. A summary of each side follows. Exit 0 when the runs are
//! the same, 1 when they differ, 2 when a trace cannot be read, as `diff`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::cli::common::{Colors, EXIT_FAILED, EXIT_INVALID, EXIT_OK, OutputFormat};
use crate::cli::report::Style;
use crate::run::trace::{EventKind, TraceEvent};
use std::path::PathBuf;

/// Events of context shown before the first difference.
const CONTEXT: usize = 3;

/// What of an event must be the same in two runs that behaved alike.
fn fact(event: &TraceEvent) -> Value {
    let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        let kind = map
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        // A replay is a dry run of a real one, and may go by another route.
        for key in [
            "dry_run",
            "route",
            "seq",
            "at_ms",
            "time",
            "run",
            "wake_at",
            "elapsed_ms",
            "left_ms",
        ] {
            map.remove(key);
        }
        // A timer's length is the flow's; how long a wait or an answer took is not.
        if kind != "timer_started" {
            map.remove("duration_ms");
        }
        if let Some(Value::Object(headers)) = map.get_mut("headers")
            && kind == "response_received"
        {
            // The headers a flow reads; the rest (`Date`, `Content-Length`) vary by transport.
            headers.retain(|name, _| {
                crate::run::record::KEPT_HEADERS.contains(&name.to_ascii_lowercase().as_str())
            });
        }
        // No headers and an empty set of them are the same.
        if map
            .get("headers")
            .is_some_and(|h| h.as_object().is_some_and(|h| h.is_empty()))
        {
            map.remove("headers");
        }
    }
    value
}

/// One side's summary: steps, requests by method, virtual time, the ending.
fn summary(events: &[TraceEvent]) -> Value {
    let mut steps = 0;
    let mut requests = std::collections::BTreeMap::<String, u64>::new();
    let mut ending = None;
    for e in events {
        match &e.kind {
            EventKind::StepStarted { .. } => steps += 1,
            EventKind::RequestSent { method, .. } => {
                *requests.entry(method.clone()).or_default() += 1
            }
            EventKind::FlowFinished(outcome) => ending = Some(outcome.clone()),
            _ => {}
        }
    }
    json!({
        "steps": steps,
        "requests": requests,
        "clock_ms": events.last().map_or(0, |e| e.at_ms),
        "status": ending.as_ref().map(|o| o.status),
        "reason": ending.as_ref().map(|o| o.reason.clone()),
    })
}

pub struct Compared {
    /// The index of the first event that differs, when any does.
    pub first: Option<usize>,
    pub text: String,
    pub json: Value,
}

pub fn compare(a: &[TraceEvent], b: &[TraceEvent], names: (&str, &str), style: Style) -> Compared {
    let first = (0..a.len().max(b.len())).find(|&i| match (a.get(i), b.get(i)) {
        (Some(x), Some(y)) => fact(x) != fact(y),
        _ => true,
    });
    let (sa, sb) = (summary(a), summary(b));
    let mut text = String::new();
    match first {
        None => {
            let _ = writeln!(
                text,
                "no difference: {} events, the same on both sides",
                a.len()
            );
        }
        Some(i) => {
            let step = a
                .get(i)
                .or(b.get(i))
                .and_then(|e| e.step.clone())
                .map_or_else(String::new, |s| format!(" at step `{s}`"));
            let _ = writeln!(
                text,
                "{} the runs part at event {}{step}",
                style.bold("≠"),
                i + 1
            );
            let from = i.saturating_sub(CONTEXT);
            if from < i {
                let _ = writeln!(text, "{}", style.dim("  the same before it:"));
                for e in &a[from..i] {
                    for line in crate::cli::report::pretty(e, style, None).lines() {
                        let _ = writeln!(text, "  {}", style.dim(line));
                    }
                }
            }
            for (name, side, colour) in [(names.0, a, "-"), (names.1, b, "+")] {
                let _ = writeln!(text, "  {name}:");
                match side.get(i) {
                    Some(e) => {
                        for line in crate::cli::report::pretty(e, style, None).lines() {
                            let line = format!("{colour} {line}");
                            let shown = if colour == "-" {
                                style.red(&line)
                            } else {
                                style.green(&line)
                            };
                            let _ = writeln!(text, "  {shown}");
                        }
                    }
                    None => {
                        let _ = writeln!(text, "  {colour} (the trace ends here)");
                    }
                }
            }
        }
    }
    for (name, s) in [(names.0, &sa), (names.1, &sb)] {
        let requests: Vec<String> = s["requests"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{v} {k}")).collect())
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "{name}: {} steps, {}, {:.1}s on the run's clock, {}: {}",
            s["steps"],
            if requests.is_empty() {
                "no requests".to_string()
            } else {
                requests.join(", ")
            },
            s["clock_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            s["status"].as_str().unwrap_or("no ending"),
            s["reason"].as_str().unwrap_or(""),
        );
    }
    let json = json!({
        "same": first.is_none(),
        "first_difference": first.map(|i| json!({
            "event": i + 1,
            "a": a.get(i),
            "b": b.get(i),
        })),
        "a": sa,
        "b": sb,
    });
    Compared { first, text, json }
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The first trace (JSONL, as `--trace-file run.jsonl` writes it).
    pub a: PathBuf,
    /// The second trace.
    pub b: PathBuf,
    /// Text for people, or JSON for scripts.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

pub fn diff_command(args: &DiffArgs, color: Colors) -> i32 {
    let (a, b) = match (
        crate::cli::report::read_trace(&args.a),
        crate::cli::report::read_trace(&args.b),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let names = (args.a.to_string_lossy(), args.b.to_string_lossy());
    let compared = crate::cli::diff::compare(
        &a,
        &b,
        (&names.0, &names.1),
        crate::cli::report::Style { color: color.out },
    );
    match args.format {
        OutputFormat::Text => print!("{}", compared.text),
        OutputFormat::Json => println!("{}", compared.json),
    }
    if compared.first.is_some() {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}
