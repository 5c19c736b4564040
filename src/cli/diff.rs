//! `handoff diff TRACE_A TRACE_B`: where two runs of a flow part.
//!
//! The two JSONL traces are walked event by event, leaving out what differs
//! between any two runs (times, ids, latencies, heartbeats, a server's `Date`
//! header and the others a flow cannot read, and whether it was a dry run,
//! as a replay is), and the first event that differs is shown with the events
//! before it, from both sides, with the paths that differ in it (another
//! branch taken, another request, another value); `--all` lines the traces
//! up (Myers) and shows every place they part. A summary of each side follows. Exit 0 when the runs are
//! the same, 1 when they differ, 2 when a trace cannot be read, as `diff`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::cli::common::{Colors, EXIT_FAILED, EXIT_INVALID, EXIT_OK, OutputFormat, plural};
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

/// Where two facts differ, as paths (`fields.instance_id`) with both
/// values, at most `MAX_PATHS` of them.
fn differing(a: &Value, b: &Value) -> Vec<(String, Value, Value)> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<(String, Value, Value)>) {
        if out.len() >= MAX_PATHS || a == b {
            return;
        }
        let join = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let none = Value::Null;
                    walk(
                        &join(k),
                        x.get(k).unwrap_or(&none),
                        y.get(k).unwrap_or(&none),
                        out,
                    );
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    walk(&join(&i.to_string()), p, q, out);
                }
            }
            _ => out.push((path.to_string(), a.clone(), b.clone())),
        }
    }
    let mut out = Vec::new();
    walk("", a, b, &mut out);
    out
}

/// Paths named for one difference, at most.
const MAX_PATHS: usize = 12;

/// A value as one short line.
fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// One place where the runs part: the events of each side there.
struct Part {
    a: std::ops::Range<usize>,
    b: std::ops::Range<usize>,
}

/// Lines up the two traces (Myers, on the facts) and returns every place
/// they part.
fn parts(fa: &[String], fb: &[String]) -> Vec<Part> {
    similar::capture_diff_slices(similar::Algorithm::Myers, fa, fb)
        .into_iter()
        .filter_map(|op| match op {
            similar::DiffOp::Equal { .. } => None,
            similar::DiffOp::Delete {
                old_index,
                old_len,
                new_index,
            } => Some(Part {
                a: old_index..old_index + old_len,
                b: new_index..new_index,
            }),
            similar::DiffOp::Insert {
                old_index,
                new_index,
                new_len,
            } => Some(Part {
                a: old_index..old_index,
                b: new_index..new_index + new_len,
            }),
            similar::DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => Some(Part {
                a: old_index..old_index + old_len,
                b: new_index..new_index + new_len,
            }),
        })
        .collect()
}

/// The lines that show one side's events at a place they part.
fn side_lines(text: &mut String, name: &str, events: &[TraceEvent], colour: &str, style: Style) {
    let _ = writeln!(text, "  {name}:");
    if events.is_empty() {
        let _ = writeln!(text, "  {colour} (nothing here)");
    }
    for e in events {
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
}

/// "what differs: fields.outcome ("Completed" ≠ "Canceled")", for two events
/// of one kind.
fn what_differs(text: &mut String, x: &TraceEvent, y: &TraceEvent) -> Vec<Value> {
    let (fx, fy) = (fact(x), fact(y));
    if fx.get("event") != fy.get("event") {
        return Vec::new();
    }
    let paths = differing(&fx, &fy);
    if !paths.is_empty() {
        let named: Vec<String> = paths
            .iter()
            .map(|(p, a, b)| format!("`{p}` ({} ≠ {})", short(a), short(b)))
            .collect();
        let _ = writeln!(text, "  what differs: {}", named.join(", "));
    }
    paths
        .into_iter()
        .map(|(p, a, b)| json!({ "path": p, "a": a, "b": b }))
        .collect()
}

pub fn compare(
    a: &[TraceEvent],
    b: &[TraceEvent],
    names: (&str, &str),
    style: Style,
    all: bool,
) -> Compared {
    let first = (0..a.len().max(b.len())).find(|&i| match (a.get(i), b.get(i)) {
        (Some(x), Some(y)) => fact(x) != fact(y),
        _ => true,
    });
    let (sa, sb) = (summary(a), summary(b));
    let mut text = String::new();
    let mut differences = Vec::new();
    match first {
        None => {
            let _ = writeln!(
                text,
                "no difference: {}, the same on both sides",
                plural(a.len(), "event")
            );
        }
        Some(i) if !all => {
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
            side_lines(
                &mut text,
                names.0,
                a.get(i..=i).unwrap_or_default(),
                "-",
                style,
            );
            side_lines(
                &mut text,
                names.1,
                b.get(i..=i).unwrap_or_default(),
                "+",
                style,
            );
            if let (Some(x), Some(y)) = (a.get(i), b.get(i)) {
                differences.push(json!({
                    "event": i + 1,
                    "paths": what_differs(&mut text, x, y),
                }));
            }
            let _ = writeln!(
                text,
                "{}",
                style.dim("  (`--all` shows every place they part)")
            );
        }
        Some(_) => {
            let fa: Vec<String> = a.iter().map(|e| fact(e).to_string()).collect();
            let fb: Vec<String> = b.iter().map(|e| fact(e).to_string()).collect();
            let places = parts(&fa, &fb);
            let _ = writeln!(
                text,
                "{} the runs part in {}",
                style.bold("≠"),
                plural(places.len(), "place")
            );
            for part in &places {
                let at = |r: &std::ops::Range<usize>| {
                    if r.is_empty() {
                        format!("after event {}", r.start)
                    } else if r.len() == 1 {
                        format!("event {}", r.start + 1)
                    } else {
                        format!("events {}–{}", r.start + 1, r.end)
                    }
                };
                let step = a
                    .get(part.a.start)
                    .or(b.get(part.b.start))
                    .and_then(|e| e.step.clone())
                    .map_or_else(String::new, |s| format!(" (step `{s}`)"));
                let _ = writeln!(
                    text,
                    "{} {}: {} · {}: {}{step}",
                    style.bold("≠"),
                    names.0,
                    at(&part.a),
                    names.1,
                    at(&part.b)
                );
                side_lines(&mut text, names.0, &a[part.a.clone()], "-", style);
                side_lines(&mut text, names.1, &b[part.b.clone()], "+", style);
                let mut paths = Vec::new();
                if part.a.len() == part.b.len() {
                    for (x, y) in a[part.a.clone()].iter().zip(&b[part.b.clone()]) {
                        paths.extend(what_differs(&mut text, x, y));
                    }
                }
                differences.push(json!({
                    "a": { "from": part.a.start + 1, "events": part.a.len() },
                    "b": { "from": part.b.start + 1, "events": part.b.len() },
                    "paths": paths,
                }));
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
            "{name}: {}, {}, {:.1}s on the run's clock, {}: {}",
            plural(s["steps"].as_u64().unwrap_or(0) as usize, "step"),
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
        "differences": differences,
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
    /// Every place the runs part (the traces lined up, as `diff` does), not only the first.
    #[arg(long)]
    pub all: bool,
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
        args.all,
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
