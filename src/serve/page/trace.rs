//! A run's trace as an operator reads it: one block per step, what it sent
//! and what came back folded under it (method, URL, status, latency; the
//! headers and bodies behind a disclosure), retries and timer waits said as
//! such, a failure marked. Iterations of a loop that repeat (a poll that
//! found nothing, again and again) fold into one line that says how many,
//! how far apart and what each did, opened on demand.
//!
//! Everything shown comes from the stored events, which were redacted when
//! they were written; every text is escaped.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::run::trace::{EventKind, RunStatus, TraceEvent};
use crate::serve::page::html::esc;

/// A stretch of the trace: an event on its own, or a step's events.
enum Item<'a> {
    Line(&'a TraceEvent),
    Block(Block<'a>),
}

struct Block<'a> {
    step: &'a str,
    kind: &'a str,
    events: Vec<&'a TraceEvent>,
}

impl Block<'_> {
    fn at_ms(&self) -> u64 {
        self.events.first().map_or(0, |e| e.at_ms)
    }
}

/// The longest iteration, in steps, that folding looks for.
const MAX_PERIOD: usize = 24;
/// Iterations that must repeat before they fold.
const MIN_REPEATS: usize = 3;
/// Iterations a folded loop shows when opened, first and last, unless the
/// page is asked for all of them.
const SHOWN_ITERATIONS: usize = 10;

/// Splits the events into lines and step blocks.
fn items(events: &[TraceEvent]) -> Vec<Item<'_>> {
    let mut out: Vec<Item<'_>> = Vec::new();
    let mut open: Option<Block<'_>> = None;
    for e in events {
        let step = e.step.as_deref();
        match &e.kind {
            EventKind::StepStarted { kind } => {
                if let Some(b) = open.take() {
                    out.push(Item::Block(b));
                }
                open = Some(Block {
                    step: step.unwrap_or(""),
                    kind,
                    events: vec![e],
                });
            }
            // A durable run that went on at the step it waited in: the same block.
            EventKind::RunResumed { at_step, .. }
                if open.as_ref().is_some_and(|b| b.step == at_step) =>
            {
                if let Some(b) = &mut open {
                    b.events.push(e);
                }
            }
            _ if step.is_some() && open.as_ref().is_some_and(|b| Some(b.step) == step) => {
                if let Some(b) = &mut open {
                    b.events.push(e);
                }
                if matches!(e.kind, EventKind::StepFinished { .. })
                    && let Some(b) = open.take()
                {
                    out.push(Item::Block(b));
                }
            }
            _ if step.is_some() => {
                // A step's events with no start here (it started before a restart).
                if let Some(b) = open.take() {
                    out.push(Item::Block(b));
                }
                let done = matches!(e.kind, EventKind::StepFinished { .. });
                let b = Block {
                    step: step.unwrap_or(""),
                    kind: "",
                    events: vec![e],
                };
                if done {
                    out.push(Item::Block(b));
                } else {
                    open = Some(b);
                }
            }
            _ => {
                if let Some(b) = open.take() {
                    out.push(Item::Block(b));
                }
                out.push(Item::Line(e));
            }
        }
    }
    if let Some(b) = open {
        out.push(Item::Block(b));
    }
    out
}

/// What makes two items the same place in a loop: the step, for a block.
fn sign<'a>(item: &Item<'a>) -> Option<&'a str> {
    match item {
        Item::Block(b) => Some(b.step),
        Item::Line(_) => None,
    }
}

/// The loop that starts at `i`, if one does: `(period, repeats)`, the one
/// that covers the most items.
fn loop_at(items: &[Item<'_>], i: usize) -> Option<(usize, usize)> {
    sign(&items[i])?;
    let mut best: Option<(usize, usize)> = None;
    for period in 1..=MAX_PERIOD.min((items.len() - i) / MIN_REPEATS) {
        let same =
            |a: usize, b: usize| sign(&items[a]).is_some() && sign(&items[a]) == sign(&items[b]);
        let mut repeats = 1;
        while i + (repeats + 1) * period <= items.len()
            && (0..period).all(|k| same(i + k, i + repeats * period + k))
        {
            repeats += 1;
        }
        if repeats >= MIN_REPEATS && best.is_none_or(|(p, r)| repeats * period > p * r) {
            best = Some((period, repeats));
        }
    }
    best
}

/// The trace as HTML. `all`: a folded loop shows every iteration when opened.
pub fn render(events: &[TraceEvent], run: &str, all: bool) -> String {
    if events.is_empty() {
        return "<p class=\"dim\">Nothing yet.</p>".to_string();
    }
    let items = items(events);
    // The step a run ended at without succeeding (a `fail` step, say) is
    // marked as a failed step's block is.
    let failed_at = events.iter().rev().find_map(|e| match &e.kind {
        EventKind::FlowFinished(o) if o.status != RunStatus::Succeeded => o.at_step.as_deref(),
        _ => None,
    });
    let last_block = items.iter().rposition(|i| matches!(i, Item::Block(_)));
    let mut out = String::from("<ol class=\"trace\" id=\"trace\">");
    let mut i = 0;
    while i < items.len() {
        if let Some((period, repeats)) = loop_at(&items, i) {
            folded(
                &mut out,
                &items[i..i + period * repeats],
                period,
                repeats,
                run,
                all,
            );
            i += period * repeats;
            continue;
        }
        match &items[i] {
            Item::Block(b) if Some(i) == last_block && Some(b.step) == failed_at => {
                block(&mut out, b, true)
            }
            it => item(&mut out, it),
        }
        i += 1;
    }
    out.push_str("</ol>");
    out
}

fn item(out: &mut String, item: &Item<'_>) {
    match item {
        Item::Line(e) => line(out, e),
        Item::Block(b) => block(out, b, false),
    }
}

/// A loop's iterations, folded: how many, how far apart, what each did.
fn folded(
    out: &mut String,
    items: &[Item<'_>],
    period: usize,
    repeats: usize,
    run: &str,
    all: bool,
) {
    let starts: Vec<u64> = items
        .chunks(period)
        .map(|c| match &c[0] {
            Item::Block(b) => b.at_ms(),
            Item::Line(e) => e.at_ms,
        })
        .collect();
    let gaps: Vec<u64> = starts
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    let apart = match (gaps.iter().min(), gaps.iter().max()) {
        (Some(lo), Some(hi)) if hi - lo < 1000 => format!(", {} apart", seconds(*lo)),
        (Some(lo), Some(hi)) => format!(", {} to {} apart", seconds(*lo), seconds(*hi)),
        _ => String::new(),
    };
    let path: Vec<&str> = items[..period].iter().filter_map(sign).collect();
    // What each iteration did, counted: the same text every time reads once.
    let mut did: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (n, it) in items.iter().enumerate() {
        if let Item::Block(b) = it {
            for text in gist(b) {
                let entry = did.entry(text).or_insert((n, 0));
                entry.1 += 1;
            }
        }
    }
    let mut said: Vec<(usize, String)> = did
        .into_iter()
        .map(|(text, (first, count))| {
            if count == repeats {
                (first, text)
            } else {
                (first, format!("{text} ({count} times)"))
            }
        })
        .collect();
    said.sort();
    let first_seq = match &items[0] {
        Item::Block(b) => b.events[0].seq,
        Item::Line(e) => e.seq,
    };
    let _ = write!(
        out,
        "<li class=\"loop\"><details id=\"loop-{first_seq}\"><summary><b>Repeated {repeats} times</b>{apart}: {path}.{each}</summary><ol class=\"trace\">",
        path = esc(&path.join(" → ")),
        each = if said.is_empty() {
            String::new()
        } else {
            format!(
                " Each time: {}.",
                esc(&said
                    .into_iter()
                    .map(|(_, t)| t)
                    .collect::<Vec<_>>()
                    .join("; "))
            )
        },
    );
    let iterations: Vec<&[Item<'_>]> = items.chunks(period).collect();
    let shown = if all || repeats <= 2 * SHOWN_ITERATIONS {
        (0..repeats).collect::<Vec<_>>()
    } else {
        (0..SHOWN_ITERATIONS)
            .chain(repeats - SHOWN_ITERATIONS..repeats)
            .collect()
    };
    let mut last = None;
    for n in shown {
        if last.is_some_and(|l: usize| n > l + 1) {
            let _ = write!(
                out,
                "<li class=\"dim\">… {} more iterations: <a href=\"/runs/{}?all=true#loop-{first_seq}\">show every one</a></li>",
                n - last.unwrap_or(0) - 1,
                esc(run)
            );
        }
        let _ = write!(
            out,
            "<li class=\"iteration\"><span class=\"dim\">iteration {}</span><ol class=\"trace\">",
            n + 1
        );
        for it in iterations[n] {
            item(out, it);
        }
        out.push_str("</ol></li>");
        last = Some(n);
    }
    out.push_str("</ol></details></li>");
}

/// A block's deeds in a few words, for a loop's summary: its requests'
/// method and status, its decision's branch.
fn gist(b: &Block<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let mut method = None;
    for e in &b.events {
        match &e.kind {
            EventKind::RequestSent { method: m, .. } => method = Some(m.as_str()),
            EventKind::ResponseReceived { status, .. } => {
                out.push(format!(
                    "{} `{}` answered {status}",
                    method.unwrap_or("request"),
                    b.step
                ));
            }
            EventKind::DecisionTaken { branch, goto, .. } => {
                out.push(format!("`{}` took {branch} → {goto}", b.step));
            }
            EventKind::StepFailed { error_kind, .. } => {
                out.push(format!("`{}` failed ({error_kind})", b.step));
            }
            _ => {}
        }
    }
    out
}

fn seconds(ms: u64) -> String {
    crate::run::clock::format_duration(std::time::Duration::from_millis(ms))
}

fn at(e: &TraceEvent) -> String {
    format!("<span class=\"at\">{:.3}s</span>", e.at_ms as f64 / 1000.0)
}

/// Compact JSON, for a disclosure.
fn json(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn status_class(status: u16) -> &'static str {
    if (200..400).contains(&status) {
        "status-ok"
    } else {
        "status-bad"
    }
}

/// An event that is not a step's.
fn line(out: &mut String, e: &TraceEvent) {
    match &e.kind {
        EventKind::FlowStarted {
            flow,
            fields,
            route,
            started_by,
            ..
        } => {
            let _ = write!(
                out,
                "<li class=\"start\">{} started flow <b>{}</b>",
                at(e),
                esc(flow)
            );
            if let Some(by) = started_by {
                let _ = write!(out, ", as a {}", esc(by));
            }
            if let Some(route) = route {
                let _ = write!(out, ", through {}", esc(route));
            }
            if !fields.is_empty() {
                let _ = write!(
                    out,
                    "<details><summary>its fields</summary><pre>{}</pre></details>",
                    esc(&json(&serde_json::Value::Object(
                        fields.clone().into_iter().collect()
                    )))
                );
            }
            out.push_str("</li>");
        }
        EventKind::FlowFinished(o) => {
            let class = if o.status == RunStatus::Succeeded {
                "end ok"
            } else {
                "end failed"
            };
            let status = serde_json::to_value(o.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = write!(
                out,
                "<li class=\"{class}\" id=\"ending\">{} <b>{status}</b>{}: {} <span class=\"dim\">({} steps, {})</span></li>",
                at(e),
                o.at_step
                    .as_deref()
                    .map(|s| format!(" at <b>{}</b>", esc(s)))
                    .unwrap_or_default(),
                esc(&o.reason),
                o.steps_taken,
                seconds(o.elapsed_ms)
            );
        }
        EventKind::RunResumed { at_step, why, .. } => {
            let _ = write!(
                out,
                "<li class=\"resumed\">{} went on at <b>{}</b>: {}{}</li>",
                at(e),
                esc(at_step),
                esc(why),
                unsettled(&e.kind)
            );
        }
        _ => {
            let _ = write!(out, "<li>{} ", at(e));
            event(out, e);
            out.push_str("</li>");
        }
    }
}

/// What a resumed run says of a request that may have landed.
fn unsettled(kind: &EventKind) -> String {
    match kind {
        EventKind::RunResumed {
            unsettled: Some(u), ..
        } => format!(
            " <span class=\"status-bad\">In doubt: {} {} had been sent with no answer when the process stopped.</span>",
            esc(&u.method),
            esc(&u.url)
        ),
        _ => String::new(),
    }
}

/// A step's events under its heading.
fn block(out: &mut String, b: &Block<'_>, ended_here: bool) {
    let failed = ended_here
        || b.events.iter().any(|e| {
            matches!(
                &e.kind,
                EventKind::StepFailed {
                    handled_by: None,
                    ..
                }
            )
        });
    let next = b.events.iter().rev().find_map(|e| match &e.kind {
        EventKind::StepFinished { next } => Some(next.as_str()),
        EventKind::StepFailed {
            handled_by: Some(h),
            ..
        } => Some(h.as_str()),
        _ => None,
    });
    let first = b.events[0];
    let _ = write!(
        out,
        "<li class=\"block{}\" data-step=\"{}\" id=\"seq-{}\"><div class=\"block-head\">{} <b>{}</b> <span class=\"kind\">{}</span>{}</div><ul class=\"lines\">",
        if failed { " failed" } else { "" },
        esc(b.step),
        first.seq,
        at(first),
        esc(b.step),
        esc(b.kind),
        next.map(|n| format!(" → {}", esc(n))).unwrap_or_default()
    );
    let mut k = 0;
    while k < b.events.len() {
        let e = b.events[k];
        k += 1;
        match &e.kind {
            EventKind::StepStarted { .. } | EventKind::StepFinished { .. } => {}
            // Waiting heartbeats say nothing the timer's own lines do not.
            EventKind::TimerWaiting { .. } => {}
            EventKind::RequestSent { .. } => {
                // A request and its answer read as one line.
                let answer = b.events[k..]
                    .first()
                    .filter(|r| matches!(r.kind, EventKind::ResponseReceived { .. }));
                if answer.is_some() {
                    k += 1;
                }
                request(out, e, answer.copied());
            }
            EventKind::RunResumed { why, .. } => {
                let _ = write!(
                    out,
                    "<li class=\"resumed\">{} went on: {}{}</li>",
                    at(e),
                    esc(why),
                    unsettled(&e.kind)
                );
            }
            _ => {
                let failed = matches!(e.kind, EventKind::StepFailed { .. });
                let _ = write!(
                    out,
                    "<li{}>{} ",
                    if failed {
                        " class=\"error\" role=\"note\""
                    } else {
                        ""
                    },
                    at(e)
                );
                event(out, e);
                out.push_str("</li>");
            }
        }
    }
    out.push_str("</ul></li>");
}

/// A request, and its answer when one came.
fn request(out: &mut String, sent: &TraceEvent, answer: Option<&TraceEvent>) {
    let EventKind::RequestSent {
        method,
        url,
        headers,
        body,
        attempt,
    } = &sent.kind
    else {
        return;
    };
    let mut detail = serde_json::json!({ "request": { "headers": headers } });
    if let Some(body) = body {
        detail["request"]["body"] = body.clone();
    }
    let status = match answer.map(|a| &a.kind) {
        Some(EventKind::ResponseReceived {
            status,
            headers,
            body,
            duration_ms,
        }) => {
            detail["response"] = serde_json::json!({ "status": status, "headers": headers });
            if let Some(body) = body {
                detail["response"]["body"] = body.clone();
            }
            format!(
                " → <span class=\"{}\">{status}</span> <span class=\"dim\">· {duration_ms} ms</span>",
                status_class(*status)
            )
        }
        _ => " → <span class=\"status-bad\">no answer</span>".to_string(),
    };
    let code = match answer.map(|a| &a.kind) {
        Some(EventKind::ResponseReceived { status, .. }) => status.to_string(),
        _ => String::new(),
    };
    let _ = write!(
        out,
        "<li class=\"http\" data-method=\"{m}\" data-status=\"{code}\">{} <b>{m}</b> <span class=\"url\">{}</span>{status}{}\
         <details id=\"http-{}\"><summary>headers and bodies</summary><pre>{}</pre></details></li>",
        at(sent),
        esc(url),
        attempt
            .map(|a| format!(" <span class=\"dim\">(attempt {a})</span>"))
            .unwrap_or_default(),
        sent.seq,
        esc(&json(&detail)),
        m = esc(method),
    );
}

/// One event's words.
fn event(out: &mut String, e: &TraceEvent) {
    let text = match &e.kind {
        EventKind::OperationCalled {
            operation,
            method,
            path,
        } => format!(
            "operation <b>{}</b> ({} {})",
            esc(operation),
            esc(method),
            esc(path)
        ),
        EventKind::ResponseReceived {
            status,
            duration_ms,
            ..
        } => format!(
            "answered <span class=\"{}\">{status}</span> in {duration_ms} ms",
            status_class(*status)
        ),
        EventKind::FieldSet { field, value } => {
            format!(
                "<b>{}</b> = <span class=\"mono\">{}</span>",
                esc(field),
                esc(&clip(value))
            )
        }
        EventKind::DecisionTaken {
            branch,
            condition,
            goto,
            values,
        } => {
            let read: Vec<String> = values
                .iter()
                .map(|(k, v)| format!("{k} = {}", clip(v)))
                .collect();
            format!(
                "took <b>{}</b>{} → <b>{}</b>{}",
                esc(branch),
                condition
                    .as_deref()
                    .map(|c| format!(" (<span class=\"mono\">{}</span>)", esc(c)))
                    .unwrap_or_default(),
                esc(goto),
                if read.is_empty() {
                    String::new()
                } else {
                    format!(" <span class=\"dim\">with {}</span>", esc(&read.join(", ")))
                }
            )
        }
        EventKind::RetryScheduled {
            attempt,
            attempts,
            reason,
            wait_ms,
            retry_after,
        } => format!(
            "<span class=\"status-bad\">attempt {attempt} of {attempts} failed</span>: {}; tries again in {}{}",
            esc(reason),
            seconds(*wait_ms),
            retry_after
                .as_deref()
                .map(|r| format!(" (Retry-After: {})", esc(r)))
                .unwrap_or_default()
        ),
        EventKind::TimerStarted {
            duration_ms,
            wake_at,
        } => format!("waits {}, until {}", seconds(*duration_ms), esc(wake_at)),
        EventKind::TimerWaited { duration_ms } => format!("waited {}", seconds(*duration_ms)),
        EventKind::TimerWaiting { left_ms } => format!("still waiting, {} left", seconds(*left_ms)),
        EventKind::Log { message } => format!("log: {}", esc(message)),
        EventKind::StepFailed {
            kind,
            error,
            hint,
            error_kind,
            status,
            handled_by,
        } => format!(
            "<b>failed</b> ({}{}): {}{}{}",
            esc(if error_kind.is_empty() {
                kind
            } else {
                error_kind
            }),
            status.map(|s| format!(", status {s}")).unwrap_or_default(),
            esc(error),
            hint.as_deref()
                .map(|h| format!(" <span class=\"dim\">Hint: {}</span>", esc(h)))
                .unwrap_or_default(),
            handled_by
                .as_deref()
                .map(|h| format!("; handled by <b>{}</b>", esc(h)))
                .unwrap_or_default()
        ),
        EventKind::ItemStarted { index, of, item } => format!(
            "item {} of {of}: <span class=\"mono\">{}</span>",
            index + 1,
            esc(&clip(item))
        ),
        EventKind::ItemFinished {
            index,
            status,
            error,
            ..
        } => format!(
            "item {} {}{}",
            index + 1,
            esc(status),
            error
                .as_deref()
                .map(|e| format!(": {}", esc(e)))
                .unwrap_or_default()
        ),
        EventKind::WaitStarted { signal, until, .. } => format!(
            "waits for signal <b>{}</b>, until {}",
            esc(signal),
            esc(until)
        ),
        EventKind::SignalReceived { signal, data, via } => format!(
            "signal <b>{}</b> came{}: <span class=\"mono\">{}</span>",
            esc(signal),
            via.as_deref()
                .map(|v| format!(" by {}", esc(v)))
                .unwrap_or_default(),
            esc(&clip(data))
        ),
        EventKind::WaitTimedOut { signal } => {
            format!("no signal <b>{}</b> came in time", esc(signal))
        }
        EventKind::StepStarted { kind } => format!("step started ({})", esc(kind)),
        EventKind::StepFinished { next } => format!("→ {}", esc(next)),
        EventKind::RequestSent { method, url, .. } => {
            format!(
                "<b>{}</b> <span class=\"url\">{}</span>",
                esc(method),
                esc(url)
            )
        }
        EventKind::FlowStarted { flow, .. } => format!("started flow {}", esc(flow)),
        EventKind::FlowFinished(o) => esc(&o.reason),
        EventKind::RunResumed { why, .. } => format!("went on: {}", esc(why)),
    };
    out.push_str(&text);
}

/// A value in a line: text as it is, anything else as compact JSON, cut.
fn clip(value: &serde_json::Value) -> String {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(199).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ev(seq: u64, at_ms: u64, step: Option<&str>, kind: EventKind) -> TraceEvent {
        TraceEvent {
            seq,
            at_ms,
            time: Arc::from(""),
            run: Arc::from("r"),
            step: step.map(Arc::from),
            kind,
        }
    }

    /// A poll loop: `polls` times find nothing and wait 5 s, then find it.
    fn poll_loop(polls: u64) -> Vec<TraceEvent> {
        let mut events = vec![];
        let mut seq = 0;
        let mut at = 0;
        let mut push = |step: Option<&str>, kind: EventKind, at: u64| {
            seq += 1;
            events.push(ev(seq, at, step, kind));
        };
        for n in 0..=polls {
            let found = n == polls;
            for (step, kind) in [("find_task", "get_tasks"), ("task_ready", "decision")] {
                push(Some(step), EventKind::StepStarted { kind: kind.into() }, at);
                if step == "find_task" {
                    push(
                        Some(step),
                        EventKind::RequestSent {
                            method: "GET".into(),
                            url: "https://nwc.example/tasks".into(),
                            headers: Default::default(),
                            body: None,
                            attempt: None,
                        },
                        at,
                    );
                    push(
                        Some(step),
                        EventKind::ResponseReceived {
                            status: 200,
                            headers: Default::default(),
                            body: Some(serde_json::json!({ "tasks": [] })),
                            duration_ms: 12,
                        },
                        at,
                    );
                    push(
                        Some(step),
                        EventKind::StepFinished {
                            next: "task_ready".into(),
                        },
                        at,
                    );
                } else {
                    let goto = if found { "complete" } else { "wait" };
                    push(
                        Some(step),
                        EventKind::DecisionTaken {
                            branch: if found {
                                "when 1".into()
                            } else {
                                "otherwise".into()
                            },
                            condition: None,
                            goto: goto.into(),
                            values: Default::default(),
                        },
                        at,
                    );
                    push(
                        Some(step),
                        EventKind::StepFinished { next: goto.into() },
                        at,
                    );
                }
            }
            if !found {
                push(
                    Some("wait"),
                    EventKind::StepStarted {
                        kind: "timer".into(),
                    },
                    at,
                );
                push(
                    Some("wait"),
                    EventKind::StepFinished {
                        next: "find_task".into(),
                    },
                    at + 5000,
                );
                at += 5000;
            }
        }
        events
    }

    #[test]
    fn a_poll_loop_folds_into_one_line_that_says_what_each_time_did() {
        let events = poll_loop(47);
        let html = render(&events, "r", false);
        assert_eq!(html.matches("<li class=\"loop\">").count(), 1, "{html}");
        assert!(
            html.contains("<b>Repeated 47 times</b>, 5s apart: find_task → task_ready → wait."),
            "{html}"
        );
        assert!(
            html.contains(
                "Each time: GET `find_task` answered 200; `task_ready` took otherwise → wait."
            ),
            "{html}"
        );
        // Twenty iterations shown of 47, and a way to see them all.
        assert_eq!(html.matches("class=\"iteration\"").count(), 20);
        assert!(html.contains("… 27 more iterations"));
        let all = render(&events, "r", true);
        assert_eq!(all.matches("class=\"iteration\"").count(), 47);
        // The poll that found the task is not folded: it went elsewhere.
        let after = &html[html.rfind("</details></li>").unwrap()..];
        assert!(after.contains("→ <b>complete</b>"), "{after}");
    }

    #[test]
    fn a_short_loop_is_not_folded_and_requests_read_as_one_line() {
        let html = render(&poll_loop(2), "r", false);
        assert!(!html.contains("class=\"loop\""), "{html}");
        assert_eq!(html.matches("<li class=\"http\"").count(), 3);
        assert!(html.contains("data-status=\"200\""));
        assert!(
            html.contains(
                "<span class=\"status-ok\">200</span> <span class=\"dim\">· 12 ms</span>"
            )
        );
    }

    #[test]
    fn a_failure_is_marked_and_text_is_escaped() {
        let events = vec![
            ev(
                1,
                0,
                Some("complete"),
                EventKind::StepStarted {
                    kind: "patch_task".into(),
                },
            ),
            ev(
                2,
                0,
                Some("complete"),
                EventKind::StepFailed {
                    kind: "patch_task".into(),
                    error: "<script>alert(1)</script>".into(),
                    hint: None,
                    error_kind: "status".into(),
                    status: Some(409),
                    handled_by: None,
                },
            ),
        ];
        let html = render(&events, "r", false);
        assert!(
            html.contains("<li class=\"block failed\" data-step=\"complete\""),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
    }
}
