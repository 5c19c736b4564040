//! The runs list: every run the store holds, newest first, found by its id,
//! title or an input, filtered by status and flow, sorted by age, status or
//! flow; counts per status; the scheduled flows above it. A waiting run long
//! past its wake time is marked late, and a running run no live worker holds
//! (its worker stopped, and none has taken it up yet) is marked in doubt.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use crate::engine::checkpoint::DurableStatus;
use crate::serve::app::App;
use crate::store::{RunFilter, StoredRun};

#[derive(Deserialize, Default, Clone)]
pub(crate) struct ListQuery {
    status: Option<String>,
    q: Option<String>,
    flow: Option<String>,
    sort: Option<String>,
}

/// How long past its wake time a waiting run is marked late on the list.
const LATE_MS: i64 = 60_000;

/// What a run waits for and until when (HTML), and whether it is late:
/// waiting, and its time passed more than [`LATE_MS`] ago without a worker
/// waking it (the worker is behind, or stopped).
fn waiting_until(run: &StoredRun, now: i64) -> (String, bool) {
    let Some(ms) = run
        .wake_at_ms
        .filter(|_| run.status == DurableStatus::Waiting)
    else {
        return (String::new(), false);
    };
    let what = waits_for(run)
        .map(|s| {
            format!(
                "signal <code>{}</code>, or ",
                crate::serve::page::html::esc(s)
            )
        })
        .unwrap_or_default();
    if now - ms > LATE_MS {
        (
            format!(
                "{what}{} <span class=\"mark\">late by {}</span>",
                crate::serve::page::html::time(ms),
                crate::serve::page::html::ago(now - ms)
            ),
            true,
        )
    } else {
        (
            format!("{what}{}", crate::serve::page::html::countdown(ms, now)),
            false,
        )
    }
}

/// A run marked running that no live worker holds: it was running when its
/// worker stopped, and it goes on when a worker takes it up again.
pub(crate) fn in_doubt(run: &StoredRun, now: i64) -> bool {
    run.status == DurableStatus::Running && run.lease.as_ref().is_none_or(|l| l.until_ms < now)
}

const STATUSES: [&str; 5] = ["waiting", "running", "succeeded", "failed", "canceled"];

/// The orders the list can be read in: `(value, label)`.
const SORTS: [(&str, &str); 4] = [
    ("newest", "newest first"),
    ("oldest", "oldest first"),
    ("status", "by status"),
    ("flow", "by flow"),
];

/// The list's address with some of its query changed.
fn href(q: &ListQuery) -> String {
    let mut pairs = Vec::new();
    for (name, value) in [
        ("status", &q.status),
        ("flow", &q.flow),
        ("q", &q.q),
        ("sort", &q.sort),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            pairs.push(format!(
                "{name}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
    }
    if pairs.is_empty() {
        "/".to_string()
    } else {
        format!("/?{}", pairs.join("&"))
    }
}

pub(crate) async fn runs_page(State(app): State<Arc<App>>, Query(q): Query<ListQuery>) -> Response {
    let esc = crate::serve::page::html::esc;
    let status = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(DurableStatus::parse);
    let search = q.q.clone().filter(|s| !s.trim().is_empty());
    let flow = q.flow.clone().filter(|s| !s.is_empty());
    let sort = q
        .sort
        .as_deref()
        .filter(|s| SORTS.iter().any(|(v, _)| v == s))
        .unwrap_or("newest");
    let filter = RunFilter {
        status,
        flow: flow.clone(),
        limit: Some(200),
        search: search.clone(),
        oldest_first: sort == "oldest",
        ..RunFilter::default()
    };
    let mut runs = match app.worker.runs.list(&filter).await {
        Ok(r) => r,
        Err(e) => {
            return crate::serve::page::html::problem(
                503,
                "Runs",
                &format!("The store cannot be read: {e}"),
            );
        }
    };
    // Stable: within a status or a flow, newest first still.
    match sort {
        "status" => runs.sort_by_key(|r| {
            STATUSES
                .iter()
                .position(|s| *s == r.status.as_str())
                .unwrap_or(STATUSES.len())
        }),
        "flow" => runs.sort_by(|a, b| a.flow.cmp(&b.flow)),
        _ => {}
    }
    let now = crate::serve::page::html::now_ms();
    // How many runs each status has, in the flow shown or in all: the filters say it.
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for (f, s, n) in app.worker.runs.store.counts().await.unwrap_or_default() {
        if flow.as_ref().is_none_or(|shown| *shown == f) {
            *counts.entry(s.as_str().to_string()).or_default() += n;
        }
    }
    let total: u64 = counts.values().sum();
    let mut body = crate::serve::page::html::top(&app, None);
    body.push_str(
        "<main id=\"main\"><h1>Runs</h1><nav class=\"filters\" aria-label=\"Runs by status\">",
    );
    let current = status.map(DurableStatus::as_str);
    let on = |yes: bool| {
        if yes {
            " class=\"on\" aria-current=\"page\""
        } else {
            ""
        }
    };
    let _ = write!(
        body,
        "<a href=\"{}\"{}>all <span class=\"count\">{total}</span></a>",
        esc(&href(&ListQuery {
            status: None,
            ..q.clone()
        })),
        on(current.is_none())
    );
    for s in STATUSES {
        let _ = write!(
            body,
            " <a href=\"{}\" id=\"filter-{s}\"{}>{s} <span class=\"count\">{}</span></a>",
            esc(&href(&ListQuery {
                status: Some(s.to_string()),
                ..q.clone()
            })),
            on(current == Some(s)),
            counts.get(s).copied().unwrap_or(0)
        );
    }
    body.push_str("</nav>");
    // Runs are known by what they are about: an instance id finds its run.
    let loaded = app.loaded();
    let mut flows = String::from("<option value=\"\">every flow</option>");
    for name in loaded.flows.by_name.keys() {
        let _ = write!(
            flows,
            "<option value=\"{n}\"{}>{n}</option>",
            if flow.as_deref() == Some(name.as_str()) {
                " selected"
            } else {
                ""
            },
            n = esc(name)
        );
    }
    let mut sorts = String::new();
    for (value, label) in SORTS {
        let _ = write!(
            sorts,
            "<option value=\"{value}\"{}>{label}</option>",
            if value == sort { " selected" } else { "" }
        );
    }
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/\" role=\"search\" class=\"search\">{}\
         <label for=\"q\">Find a run by its id, title or an input</label> <input type=\"search\" name=\"q\" id=\"q\" value=\"{}\" placeholder=\"7c1e…\"> \
         <label for=\"flow\">Flow</label> <select name=\"flow\" id=\"flow\">{flows}</select> \
         <label for=\"sort\">Order</label> <select name=\"sort\" id=\"sort\">{sorts}</select> \
         <button type=\"submit\" id=\"find\">Show</button></form>",
        current
            .map(|s| format!("<input type=\"hidden\" name=\"status\" value=\"{s}\">"))
            .unwrap_or_default(),
        esc(search.as_deref().unwrap_or(""))
    );
    schedules(&app, &mut body, now);
    if runs.is_empty() {
        body.push_str("<p class=\"dim\" id=\"no-runs\">No runs.</p>");
    } else {
        let sorted = |key: &str, label: &str| {
            format!(
                "<a href=\"{}\">{label}</a>",
                esc(&href(&ListQuery {
                    sort: Some(key.to_string()),
                    ..q.clone()
                }))
            )
        };
        let _ = write!(
            body,
            "<table id=\"runs\"><caption class=\"dim\">{} run{}, {}</caption><thead><tr><th scope=\"col\">run</th><th scope=\"col\">title</th><th scope=\"col\">{}</th><th scope=\"col\">{}</th><th scope=\"col\">step</th><th scope=\"col\">waiting until</th><th scope=\"col\">{}</th></tr></thead><tbody>",
            runs.len(),
            if runs.len() == 1 { "" } else { "s" },
            SORTS
                .iter()
                .find(|(v, _)| *v == sort)
                .map_or("", |(_, l)| l),
            sorted("flow", "flow"),
            sorted("status", "status"),
            sorted(if sort == "oldest" { "newest" } else { "oldest" }, "age"),
        );
        for run in &runs {
            let (wake, late) = waiting_until(run, now);
            let doubt = in_doubt(run, now);
            let _ = write!(
                body,
                "<tr class=\"run {status}{late}{doubt}\" data-run=\"{id}\"><td><a href=\"/runs/{id}\" class=\"mono\">{short}</a></td><td class=\"title\">{title}</td><td>{flow}</td><td class=\"status\">{status}{doubt_mark}</td><td>{step}</td><td>{wake}</td><td>{age}</td></tr>",
                id = esc(&run.id),
                short = esc(crate::language::fields::clip(&run.id, 13)),
                title = esc(run.title.as_deref().unwrap_or("")),
                late = if late { " late" } else { "" },
                doubt = if doubt { " in-doubt" } else { "" },
                doubt_mark = if doubt {
                    "<span class=\"mark\" title=\"Its worker stopped while it ran; it goes on when a worker takes it up.\">in doubt</span>"
                } else {
                    ""
                },
                flow = esc(&run.flow),
                status = run.status.as_str(),
                step = esc(run.step.as_deref().unwrap_or("")),
                age = crate::serve::page::html::ago(now.saturating_sub(run.created_ms)),
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</main>");
    crate::serve::page::html::page_with(200, "Runs", &body, Some("/live"))
}

/// The scheduled flows: each one's pattern, next slot and last run.
pub(crate) fn schedules(app: &App, body: &mut String, now: i64) {
    let loaded = app.loaded();
    let scheduled: Vec<_> = loaded
        .flows
        .by_name
        .values()
        .filter_map(|s| s.flow.schedule.as_ref().map(|sch| (&s.flow.name, sch)))
        .collect();
    if scheduled.is_empty() {
        return;
    }
    body.push_str("<table id=\"schedules\"><thead><tr><th>schedule</th><th>flow</th><th>next slot</th><th>last run</th></tr></thead><tbody>");
    for (flow, schedule) in scheduled {
        let fired = app.schedules.get(flow).unwrap_or_default();
        let next = fired
            .next
            .map(|t| {
                let ms = crate::run::clock::unix_ms(t);
                format!(
                    "{} (in {})",
                    crate::serve::page::html::time(ms),
                    crate::serve::page::html::ago(ms - now)
                )
            })
            .unwrap_or_default();
        let last = match &fired.last_run {
            Some(id) => format!(
                "<a href=\"/runs/{id}\">{}</a>",
                crate::serve::page::html::esc(crate::language::fields::clip(id, 13)),
                id = crate::serve::page::html::esc(id)
            ),
            None => String::new(),
        };
        let _ = write!(
            body,
            "<tr><td><code>{}</code> {}</td><td>{}</td><td>{}</td><td>{last}</td></tr>",
            crate::serve::page::html::esc(&schedule.pattern),
            crate::serve::page::html::esc(&schedule.timezone),
            crate::serve::page::html::esc(flow),
            crate::serve::page::html::esc(&next)
        );
    }
    body.push_str("</tbody></table>");
}

/// The signal a waiting run waits for, when it is in a `wait_for`.
pub(crate) fn waits_for(run: &crate::store::StoredRun) -> Option<&str> {
    run.waiting_for
        .as_deref()
        .filter(|_| run.status == DurableStatus::Waiting)
        .and_then(|w| w.split('#').next())
}

#[cfg(test)]
mod late_tests {
    use super::*;

    fn waiting(wake_at_ms: Option<i64>, status: DurableStatus) -> StoredRun {
        StoredRun {
            id: "r".into(),
            flow: "f".into(),
            flow_path: "f.yaml".into(),
            flow_source: String::new(),
            flow_hash: String::new(),
            inputs: "{}".into(),
            status,
            step: Some("wait".into()),
            wake_at_ms,
            steps_taken: 3,
            state: "{}".into(),
            progress: None,
            waiting_for: None,
            signal: None,
            outcome: None,
            created_ms: 0,
            updated_ms: 0,
            exported_seq: 0,
            title: None,
            lease: None,
        }
    }

    #[test]
    fn a_running_run_no_live_worker_holds_is_in_doubt() {
        let now = 10_000_000;
        let mut run = waiting(None, DurableStatus::Running);
        assert!(in_doubt(&run, now), "no lease at all");
        run.lease = Some(crate::store::Lease {
            owner: "w1".into(),
            until_ms: now - 1,
        });
        assert!(in_doubt(&run, now), "a lease that ran out");
        run.lease = Some(crate::store::Lease {
            owner: "w1".into(),
            until_ms: now + 30_000,
        });
        assert!(!in_doubt(&run, now), "a worker holds it");
        run.lease = None;
        run.status = DurableStatus::Waiting;
        assert!(
            !in_doubt(&run, now),
            "a waiting run is held by no one, rightly"
        );
    }

    #[test]
    fn a_waiting_run_long_past_its_time_is_late() {
        let now = 10_000_000;
        let (said, late) = waiting_until(
            &waiting(Some(now - 5 * 60_000), DurableStatus::Waiting),
            now,
        );
        assert!(late);
        assert!(said.contains("late by 5m"), "{said}");
        let (said, late) = waiting_until(&waiting(Some(now - 30_000), DurableStatus::Waiting), now);
        assert!(
            !late,
            "a moment late is the scheduler's ordinary lag: {said}"
        );
        let (said, late) = waiting_until(&waiting(Some(now + 60_000), DurableStatus::Waiting), now);
        assert!(
            !late && said.contains("data-until") && said.contains("in 1m"),
            "{said}"
        );
        // Not waiting: nothing to say.
        assert_eq!(
            waiting_until(&waiting(Some(now - 600_000), DurableStatus::Running), now),
            (String::new(), false)
        );
    }
}
