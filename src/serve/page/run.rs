//! One run's page, in the order an operator asks: what it sent and what
//! came back (or why nothing was sent), what it waits for and until when,
//! its inputs with secrets masked, how long it has taken; then its flow's
//! picture with the path taken, and its trace step by step.
//!
//! The inputs come from the store, where secret ones are sealed: a sealed
//! value, or a field the flow calls secret, shows as a mask and nothing else.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use crate::engine::checkpoint::DurableStatus;
use crate::engine::picture::Taken;
use crate::run::trace::{EventKind, TraceEvent};
use crate::serve::app::App;
use crate::serve::page::html::esc;
use crate::store::StoredRun;

#[derive(Deserialize, Default)]
pub(crate) struct RunQuery {
    /// Every iteration of a folded loop, not the first and last few.
    all: Option<String>,
}

/// Methods that change nothing: a run that sent only these sent no change.
fn safe(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// The outcome, first: the last change the run sent and its answer, or why
/// it sent none; as `(class, html)`.
fn outcome(run: &StoredRun, events: &[TraceEvent], now: i64) -> (&'static str, String) {
    // The last request that changes something: (its event, method, URL, answer).
    let mut sent: Option<(&TraceEvent, &str, &str, Option<u16>)> = None;
    for (k, e) in events.iter().enumerate() {
        if let EventKind::RequestSent { method, url, .. } = &e.kind
            && !safe(method)
        {
            let status = events[k + 1..].iter().take(4).find_map(|r| match &r.kind {
                EventKind::ResponseReceived { status, .. } if r.step == e.step => Some(*status),
                _ => None,
            });
            sent = Some((e, method, url, status));
        }
    }
    let reason = run
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str::<Value>(o).ok())
        .and_then(|o| o["reason"].as_str().map(str::to_string));
    let doubt = events.iter().rev().find_map(|e| match &e.kind {
        EventKind::StepFailed { error_kind, .. } if error_kind == "in_doubt" => e.step.clone(),
        _ => None,
    });
    let mut html = String::new();
    match sent {
        Some((e, method, url, status)) => {
            let _ = write!(
                html,
                "Sent <b>{}</b> <span class=\"url\">{}</span> in step <b>{}</b>",
                esc(method),
                esc(url),
                esc(e.step.as_deref().unwrap_or(""))
            );
            match status {
                Some(s) => {
                    let _ = write!(
                        html,
                        ": answered <span class=\"{}\" id=\"sent-status\">{s}{}</span>",
                        if (200..300).contains(&s) {
                            "status-ok"
                        } else {
                            "status-bad"
                        },
                        axum::http::StatusCode::from_u16(s)
                            .ok()
                            .and_then(|c| c.canonical_reason())
                            .map(|r| format!(" {r}"))
                            .unwrap_or_default()
                    );
                }
                None => html.push_str(": <span class=\"status-bad\">no answer came</span>"),
            }
            let _ = write!(html, " <span class=\"dim\">at {}</span>.", esc(&e.time));
        }
        None => html.push_str(match run.status {
            DurableStatus::Waiting | DurableStatus::Running => {
                "Nothing sent to change anything yet."
            }
            _ => "Nothing was sent to change anything.",
        }),
    }
    if let Some(step) = doubt {
        let _ = write!(
            html,
            " <span class=\"status-bad\">In doubt:</span> the process stopped while step <b>{}</b> had a request in flight; it may have reached the server, so it was not sent again.",
            esc(&step)
        );
    }
    let class = match run.status {
        DurableStatus::Succeeded => "ok",
        DurableStatus::Failed | DurableStatus::Canceled => "bad",
        _ => "wait",
    };
    match run.status {
        DurableStatus::Waiting => {
            if let Some(ms) = run.wake_at_ms {
                let what = crate::serve::page::list::waits_for(run)
                    .map(|s| format!("signal <code>{}</code>, or until ", esc(s)))
                    .unwrap_or_else(|| "until ".to_string());
                let _ = write!(
                    html,
                    "<br>Waiting at <b>{}</b> for {what}{} ({}).",
                    esc(run.step.as_deref().unwrap_or("")),
                    esc(&crate::serve::page::html::time(ms)),
                    crate::serve::page::html::countdown(ms, now)
                );
            }
        }
        DurableStatus::Running => {
            let _ = write!(
                html,
                "<br>Running step <b>{}</b>{}.",
                esc(run.step.as_deref().unwrap_or("")),
                if crate::serve::page::list::in_doubt(run, now) {
                    ", held by no live worker: it goes on when a worker takes it up"
                } else {
                    ""
                }
            );
        }
        _ => {
            if let Some(reason) = reason {
                let _ = write!(html, "<br>Ended {}: {}", run.status.as_str(), esc(&reason));
            }
        }
    }
    (class, html)
}

/// The inputs the run was started with, secrets masked.
fn inputs(run: &StoredRun, flow: Option<&crate::language::flow::Flow>) -> String {
    let given: indexmap::IndexMap<String, Value> =
        serde_json::from_str(&run.inputs).unwrap_or_default();
    if given.is_empty() {
        return "<p class=\"dim\" id=\"inputs\">None given: the flow's defaults.</p>".to_string();
    }
    let mut out = String::from(
        "<table id=\"inputs\"><thead><tr><th scope=\"col\">input</th><th scope=\"col\">value</th></tr></thead><tbody>",
    );
    for (name, value) in &given {
        let secret = crate::store::seal::Sealer::is_sealed(value)
            || flow.is_some_and(|f| f.fields.get(name).is_some_and(|d| d.secret));
        let shown = if secret {
            "<span class=\"secret\" title=\"secret: kept sealed, never shown\">•••••• (secret)</span>".to_string()
        } else {
            let text = match value {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            format!(
                "<span class=\"mono\">{}</span>",
                esc(crate::language::fields::clip(&text, 300))
            )
        };
        let _ = write!(
            out,
            "<tr data-input=\"{n}\"><td>{n}</td><td>{shown}</td></tr>",
            n = esc(name)
        );
    }
    out.push_str("</tbody></table>");
    out
}

pub(crate) async fn run_page(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
) -> Response {
    let run = match app.worker.runs.store.load(&id).await {
        Ok(Some(run)) => run,
        Ok(None) => {
            return crate::serve::page::html::problem(404, "No such run", "No run has this id.");
        }
        Err(e) => return crate::serve::page::html::problem(503, "Run", &e.0),
    };
    let events = app.worker.runs.trace(&run.id).await.unwrap_or_default();
    let now = crate::serve::page::html::now_ms();
    // Parsed once per flow version, as the worker does for its runs.
    let flow = app.worker.pinned(&run).ok();
    let mut taken = Taken::from_events(&events);
    if !run.status.is_finished() {
        // Where it is now: outlined, neither green nor red.
        taken.ended_at = run.step.clone();
        taken.status = None;
    }
    let id = esc(&run.id);
    let last_seq = events.last().map_or(0, |e| e.seq);
    let mut body = crate::serve::page::html::top(&app, Some(("/", "← runs")));
    let _ = write!(
        body,
        "<main id=\"main\" data-seq=\"{last_seq}\"><h1>{flow}{title} <span class=\"badge {status}\" id=\"status\">{status}</span></h1>",
        flow = esc(&run.flow),
        title = run
            .title
            .as_deref()
            .map(|t| format!(": <span id=\"title\">{}</span>", esc(t)))
            .unwrap_or_default(),
        status = run.status.as_str()
    );
    let mut actions = String::new();
    if !run.status.is_finished() {
        let _ = write!(
            actions,
            "<a href=\"/runs/{id}/cancel\" id=\"cancel\">Cancel this run…</a>"
        );
    }
    match crate::serve::page::actions::retried_as(&app, &run).await {
        Some(new) => {
            let _ = write!(
                actions,
                "Retried as run <a href=\"/runs/{n}\" class=\"mono\" id=\"retried-as\">{n}</a>",
                n = esc(&new)
            );
        }
        None if crate::serve::page::actions::retriable(&run) => {
            let _ = write!(
                actions,
                "<a href=\"/runs/{id}/retry\" id=\"retry\">Retry with the same inputs…</a>"
            );
        }
        None => {}
    }
    if !actions.is_empty() {
        let _ = write!(body, "<p class=\"actions\">{actions}</p>");
    }
    let (class, said) = outcome(&run, &events, now);
    let _ = write!(
        body,
        "<section aria-labelledby=\"outcome-h\"><h2 id=\"outcome-h\">Outcome</h2><p class=\"outcome {class}\" id=\"outcome\">{said}</p>"
    );
    body.push_str("<dl class=\"facts\">");
    let mut fact = |name: &str, html: String| {
        let _ = write!(body, "<dt>{}</dt><dd>{html}</dd>", esc(name));
    };
    fact("run", format!("<span class=\"mono\">{id}</span>"));
    fact(
        "started",
        esc(&crate::serve::page::html::time(run.created_ms)),
    );
    let elapsed = if run.status.is_finished() {
        run.updated_ms - run.created_ms
    } else {
        now - run.created_ms
    };
    fact(
        if run.status.is_finished() {
            "took"
        } else {
            "running for"
        },
        esc(&crate::run::clock::format_duration(
            std::time::Duration::from_millis(elapsed.max(0) as u64),
        )),
    );
    fact("steps taken", run.steps_taken.to_string());
    if let Some(by) = events.iter().find_map(|e| match &e.kind {
        EventKind::FlowStarted { started_by, .. } => started_by.clone(),
        _ => None,
    }) {
        // A retry names the run it retries: a link to it.
        let linked = match by
            .strip_prefix("retry of run ")
            .and_then(|rest| rest.split_once(','))
        {
            Some((old, rest)) => format!(
                "retry of run <a href=\"/runs/{o}\" class=\"mono\" id=\"retry-of\">{o}</a>,{}",
                esc(rest),
                o = esc(old)
            ),
            None => esc(&by),
        };
        fact("started as", linked);
    }
    body.push_str("</dl></section>");
    body.push_str("<section aria-labelledby=\"inputs-h\"><h2 id=\"inputs-h\">Inputs</h2>");
    body.push_str(&inputs(&run, flow.as_deref()));
    body.push_str("</section>");
    match &flow {
        Some(flow) => {
            body.push_str("<section aria-labelledby=\"flow-h\"><h2 id=\"flow-h\">Flow</h2><div class=\"diagram\">");
            body.push_str(&crate::serve::page::diagram::svg(flow, &taken));
            body.push_str("</div></section>");
        }
        None => {
            body.push_str("<p class=\"dim\">The flow this run started with no longer loads.</p>")
        }
    }
    body.push_str("<section aria-labelledby=\"trace-h\"><h2 id=\"trace-h\">Trace</h2>");
    let all = q.all.as_deref().is_some_and(|a| matches!(a, "1" | "true"));
    body.push_str(&crate::serve::page::trace::render(&events, &run.id, all));
    body.push_str("</section></main>");
    let live = format!("/runs/{}/live", run.id);
    crate::serve::page::html::page_with(
        200,
        run.title.as_deref().unwrap_or(&run.flow),
        &body,
        (!run.status.is_finished()).then_some(live.as_str()),
    )
}
