//! The run page: a small read-only web view of what the worker is doing.
//!
//! `/` lists the runs (flow, status, step, waiting until, age), filtered by
//! status; `/runs/{id}` shows one run: its flow as an SVG diagram with the
//! path taken, and its trace as a timeline. Server-rendered HTML, a line of
//! JavaScript to refresh while runs are unfinished, no front-end build.
//!
//! Access is the API's: the bearer token in a header, or a session cookie
//! that `/login` sets once the token is given. The cookie is signed with the
//! token's digest and holds no token; each sign-in gets its own, it expires
//! after 12 hours, `/logout` revokes it, and it is `Secure` behind TLS. A
//! client gets five wrong tokens a minute. Pages show what the API shows:
//! the stored traces, redacted when they were written, and no field values
//! beyond them. Every text is HTML-escaped, and the Content Security Policy
//! runs no inline script: the refresh is a script file of this server's.

use std::fmt::Write;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use crate::engine::checkpoint::DurableStatus;
use crate::engine::picture::{Shape, Taken, layout};
use crate::language::flow::Flow;
use crate::run::trace::{EventKind, RunStatus, TraceEvent};
use crate::serve::app::App;
use crate::store::{RunFilter, StoredRun};

/// The session cookie's name.
pub const COOKIE: &str = "handoff_session";

/// The one script a page runs, served as a file so that the policy can
/// forbid inline scripts: an injected `<script>` would not run.
const REFRESH_JS: &str = "setTimeout(function(){location.reload()},2000);\n";

pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    let guarded = Router::new()
        .route("/", get(runs_page))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/cancel", get(cancel_form).post(cancel))
        .route_layer(axum::middleware::from_fn_with_state(app, guard));
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/assets/refresh.js", get(refresh_js))
        .merge(guarded)
}

/// Lets a request through with the bearer token or the session cookie;
/// otherwise answers the login form.
async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let by_header = bearer.is_some() && app.token.check(bearer, None).is_ok();
    if !app.token.required() || by_header || session_ok(&app, headers) {
        return next.run(request).await;
    }
    let mut r = page(401, "Sign in", &login_body(None));
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn session_ok(app: &App, headers: &HeaderMap) -> bool {
    session_nonce(app, headers).is_some()
}

/// The nonce of the request's live session, if it has one.
fn session_nonce(app: &App, headers: &HeaderMap) -> Option<String> {
    let now = now_ms();
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .filter_map(|(_, value)| app.token.session_ok(value, now))
        .find(|nonce| !app.revoked.holds(nonce.as_bytes(), now))
}

/// A cookie's attributes: HttpOnly, no script reads it; Strict, no other
/// site sends it; Secure behind TLS.
fn cookie(app: &App, value: &str, max_age_s: i64) -> Option<HeaderValue> {
    let secure = if app.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// The sign-out button, where there is anything to sign out of.
fn sign_out(app: &App) -> String {
    if app.token.required() {
        "<form method=\"post\" action=\"/logout\" class=\"sign-out\"><button type=\"submit\" id=\"sign-out\">Sign out</button></form>".into()
    } else {
        String::new()
    }
}

async fn refresh_js() -> Response {
    let mut r = Response::new(Body::from(REFRESH_JS));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    r
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let now = now_ms();
    if let Some(nonce) = session_nonce(&app, &headers) {
        app.revoked.seen(
            nonce.as_bytes(),
            now,
            now.saturating_add(crate::serve::access::SESSION_TTL_MS),
        );
    }
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/login"));
    if let Some(v) = cookie(&app, "", 0) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn login_form() -> Response {
    page(200, "Sign in", &login_body(None))
}

/// The token from the sign-in form's body.
fn form_token(body: &[u8]) -> String {
    crate::run::transport::decode_pairs(&String::from_utf8_lossy(body))
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
        .unwrap_or_default()
}

async fn login(
    State(app): State<Arc<App>>,
    extensions: axum::http::Extensions,
    body: Bytes,
) -> Response {
    let client = extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let now = now_ms();
    if let Some(wait) = app.attempts.wait_ms(client, now) {
        let mut r = page(
            429,
            "Sign in",
            &login_body(Some("Too many wrong tokens from here: wait a minute.")),
        );
        if let Ok(v) = HeaderValue::from_str(&(wait / 1000 + 1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let given = form_token(&body);
    let header = format!("Bearer {}", given.trim());
    if !app.token.required() || app.token.check(Some(header.as_bytes()), None).is_ok() {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::SEE_OTHER;
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/"));
        let nonce = crate::run::trace::new_run_id(SystemTime::now());
        if let Some(session) = app.token.session(now, &nonce)
            && let Some(v) = cookie(&app, &session, crate::serve::access::SESSION_TTL_MS / 1000)
        {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return r;
    }
    app.attempts.failed(client, now);
    page(
        401,
        "Sign in",
        &login_body(Some("That is not the worker's API token.")),
    )
}

fn login_body(error: Option<&str>) -> String {
    let mut out = String::from("<h1>handoff</h1>");
    if let Some(e) = error {
        let _ = write!(out, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    out.push_str(
        "<form method=\"post\" action=\"/login\" class=\"login\">\
         <label>API token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\" id=\"sign-in\">Sign in</button></form>\
         <p class=\"dim\">The token is the worker's <code>HANDOFF_API_TOKEN</code>. The page keeps a session cookie, not the token.</p>",
    );
    out
}

#[derive(Deserialize, Default)]
struct ListQuery {
    status: Option<String>,
    q: Option<String>,
}

/// How long past its wake time a waiting run is marked late on the list.
const LATE_MS: i64 = 60_000;

/// What a run waits for and until when, and whether it is late: waiting,
/// and its time passed more than [`LATE_MS`] ago without a worker waking
/// it (the worker is behind, or stopped).
fn waiting_until(run: &StoredRun, now: i64) -> (String, bool) {
    let Some(ms) = run
        .wake_at_ms
        .filter(|_| run.status == DurableStatus::Waiting)
    else {
        return (String::new(), false);
    };
    let what = waits_for(run)
        .map(|s| format!("signal `{s}`, or "))
        .unwrap_or_default();
    if now - ms > LATE_MS {
        (
            format!("{what}{} (late by {})", time(ms), ago(now - ms)),
            true,
        )
    } else {
        (format!("{what}{} (in {})", time(ms), ago(ms - now)), false)
    }
}

const STATUSES: [&str; 5] = ["waiting", "running", "succeeded", "failed", "canceled"];

async fn runs_page(State(app): State<Arc<App>>, Query(q): Query<ListQuery>) -> Response {
    let status = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(DurableStatus::parse);
    let search = q.q.clone().filter(|s| !s.trim().is_empty());
    let filter = RunFilter {
        status,
        limit: Some(200),
        search: search.clone(),
        ..RunFilter::default()
    };
    let runs = match app.worker.runs.list(&filter).await {
        Ok(r) => r,
        Err(e) => {
            return page(
                503,
                "Runs",
                &format!(
                    "<p class=\"error\">The store cannot be read: {}</p>",
                    esc(&e)
                ),
            );
        }
    };
    let now = now_ms();
    // How many runs each status has, over every flow: the filters say it.
    let mut counts: std::collections::BTreeMap<&str, u64> = Default::default();
    for (_, status, n) in app.worker.runs.store.counts().await.unwrap_or_default() {
        *counts.entry(status.as_str()).or_default() += n;
    }
    let total: u64 = counts.values().sum();
    let mut body = sign_out(&app);
    body.push_str("<h1>Runs</h1><nav class=\"filters\" aria-label=\"Runs by status\">");
    let current = status.map(DurableStatus::as_str);
    let _ = write!(
        body,
        "<a href=\"/\"{}>all <span class=\"count\">{total}</span></a>",
        if current.is_none() {
            " class=\"on\""
        } else {
            ""
        }
    );
    for s in STATUSES {
        let _ = write!(
            body,
            " <a href=\"/?status={s}\" id=\"filter-{s}\"{}>{s} <span class=\"count\">{}</span></a>",
            if current == Some(s) {
                " class=\"on\""
            } else {
                ""
            },
            counts.get(s).copied().unwrap_or(0)
        );
    }
    body.push_str("</nav>");
    // Runs are known by what they are about: an instance id finds its run.
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/\" role=\"search\" class=\"search\">{}<label for=\"q\">Find a run by its id, title or an input</label> <input type=\"search\" name=\"q\" id=\"q\" value=\"{}\" placeholder=\"7c1e…\"> <button type=\"submit\" id=\"find\">Find</button></form>",
        current
            .map(|s| format!("<input type=\"hidden\" name=\"status\" value=\"{s}\">"))
            .unwrap_or_default(),
        esc(search.as_deref().unwrap_or(""))
    );
    schedules(&app, &mut body, now);
    if runs.is_empty() {
        body.push_str("<p class=\"dim\" id=\"no-runs\">No runs.</p>");
    } else {
        body.push_str(
            "<table id=\"runs\"><thead><tr><th>run</th><th>title</th><th>flow</th><th>status</th><th>step</th><th>waiting until</th><th>age</th></tr></thead><tbody>",
        );
        for run in &runs {
            let (wake, late) = waiting_until(run, now);
            let _ = write!(
                body,
                "<tr class=\"run {status}{late}\" data-run=\"{id}\"><td><a href=\"/runs/{id}\">{short}</a></td><td class=\"title\">{title}</td><td>{flow}</td><td class=\"status\">{status}</td><td>{step}</td><td>{wake}</td><td>{age}</td></tr>",
                id = esc(&run.id),
                short = esc(crate::language::fields::clip(&run.id, 13)),
                title = esc(run.title.as_deref().unwrap_or("")),
                late = if late { " late" } else { "" },
                flow = esc(&run.flow),
                status = run.status.as_str(),
                step = esc(run.step.as_deref().unwrap_or("")),
                wake = esc(&wake),
                age = ago(now.saturating_sub(run.created_ms)),
            );
        }
        body.push_str("</tbody></table>");
    }
    let live = runs.iter().any(|r| !r.status.is_finished());
    page_with(200, "Runs", &body, live)
}

/// The anti-forgery token of a form that acts on `run`, for this request's session.
fn csrf(app: &App, headers: &HeaderMap, action: &str, run: &str) -> String {
    let session = session_nonce(app, headers).unwrap_or_default();
    app.worker.resume.form_token(action, run, &session)
}

/// Asks before it cancels: the run, what cancelling does, one button.
async fn cancel_form(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let run = match app.worker.runs.store.load(&id).await {
        Ok(Some(run)) => run,
        Ok(None) => return page(404, "No such run", "<p>No run has this id.</p>"),
        Err(e) => return page(503, "Run", &format!("<p class=\"error\">{}</p>", esc(&e.0))),
    };
    if run.status.is_finished() {
        return ended(&run);
    }
    let name = run.title.clone().unwrap_or_else(|| run.id.clone());
    let body = format!(
        "{}<p><a href=\"/runs/{id}\">← the run</a></p><h1>Cancel {name}?</h1>\
         <p>Run <code>{id}</code> of <code>{flow}</code> is {status}. Cancelled, it takes no further step, and its trace \
         ends with who cancelled it. A request it has already sent is not taken back.</p>\
         <form method=\"post\" action=\"/runs/{id}/cancel\"><input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
         <button type=\"submit\" id=\"confirm-cancel\">Cancel the run</button> <a href=\"/runs/{id}\">Keep it</a></form>",
        sign_out(&app),
        id = esc(&run.id),
        name = esc(&name),
        flow = esc(&run.flow),
        status = run.status.as_str(),
        token = esc(&csrf(&app, &headers, "cancel", &run.id)),
    );
    page(200, "Cancel a run", &body)
}

fn ended(run: &StoredRun) -> Response {
    page(
        409,
        "Run ended",
        &format!(
            "<p><a href=\"/runs/{id}\">← the run</a></p><p id=\"ended\">Run <code>{id}</code> has ended ({status}): there is nothing to cancel.</p>",
            id = esc(&run.id),
            status = run.status.as_str()
        ),
    )
}

/// Cancels a run from the page: only with the form's token, as the API
/// does, with the trace saying the run page did it.
async fn cancel(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let given = crate::run::transport::decode_pairs(&String::from_utf8_lossy(&body))
        .into_iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v)
        .unwrap_or_default();
    if !crate::serve::access::same(&given, &csrf(&app, &headers, "cancel", &id)) {
        return page(
            403,
            "Refused",
            "<p class=\"error\" id=\"refused\">This form did not come from this page: nothing was cancelled. Open the run and try again.</p>",
        );
    }
    let run = match app.worker.runs.store.load(&id).await {
        Ok(Some(run)) => run,
        Ok(None) => return page(404, "No such run", "<p>No run has this id.</p>"),
        Err(e) => return page(503, "Run", &format!("<p class=\"error\">{}</p>", esc(&e.0))),
    };
    match app.worker.cancel(&run, "the run page").await {
        Ok(true) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(v) = HeaderValue::from_str(&format!("/runs/{id}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Ok(false) => match app.worker.runs.store.load(&id).await {
            Ok(Some(now)) => ended(&now),
            _ => ended(&run),
        },
        Err(e) => page(503, "Run", &format!("<p class=\"error\">{}</p>", esc(&e))),
    }
}

async fn run_page(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let run = match app.worker.runs.store.load(&id).await {
        Ok(Some(run)) => run,
        Ok(None) => return page(404, "No such run", "<p>No run has this id.</p>"),
        Err(e) => return page(503, "Run", &format!("<p class=\"error\">{}</p>", esc(&e.0))),
    };
    let events = app.worker.runs.trace(&run.id).await.unwrap_or_default();
    // Parsed once per flow version, as the worker does for its runs.
    let flow = app.worker.pinned(&run).ok();
    let mut taken = Taken::from_events(&events);
    if !run.status.is_finished() {
        // Where it is now: outlined, neither green nor red.
        taken.ended_at = run.step.clone();
        taken.status = None;
    }
    let mut body = sign_out(&app);
    let _ = write!(
        body,
        "<p><a href=\"/\">← runs</a></p><h1>{flow}{title} <span class=\"badge {status}\" id=\"status\">{status}</span></h1>",
        flow = esc(&run.flow),
        title = run
            .title
            .as_deref()
            .map(|t| format!(": <span id=\"title\">{}</span>", esc(t)))
            .unwrap_or_default(),
        status = run.status.as_str()
    );
    if !run.status.is_finished() {
        let _ = write!(
            body,
            "<p><a href=\"/runs/{}/cancel\" id=\"cancel\">Cancel this run…</a></p>",
            esc(&run.id)
        );
    }
    body.push_str("<dl class=\"facts\">");
    let mut fact = |name: &str, value: String| {
        let _ = write!(body, "<dt>{}</dt><dd>{}</dd>", esc(name), esc(&value));
    };
    fact("run", run.id.clone());
    fact("step", run.step.clone().unwrap_or_default());
    if let Some(ms) = run
        .wake_at_ms
        .filter(|_| run.status == DurableStatus::Waiting)
    {
        if let Some(signal) = waits_for(&run) {
            fact("waits for", format!("signal `{signal}`"));
        }
        fact("waiting until", time(ms));
    }
    fact("steps taken", run.steps_taken.to_string());
    fact("started", time(run.created_ms));
    if let Some(reason) = run
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str::<Value>(o).ok())
        .and_then(|o| o["reason"].as_str().map(str::to_string))
    {
        fact("ended", reason);
    }
    body.push_str("</dl>");
    match &flow {
        Some(flow) => {
            body.push_str("<h2>Flow</h2><div class=\"diagram\">");
            body.push_str(&svg(flow, &taken));
            body.push_str("</div>");
        }
        None => {
            body.push_str("<p class=\"dim\">The flow this run started with no longer loads.</p>")
        }
    }
    body.push_str("<h2>Trace</h2>");
    body.push_str(&timeline(&events));
    page_with(200, &run.flow, &body, !run.status.is_finished())
}

/// The trace as a table: when, which step, what.
fn timeline(events: &[TraceEvent]) -> String {
    if events.is_empty() {
        return "<p class=\"dim\">Nothing yet.</p>".to_string();
    }
    let mut out = String::from(
        "<table id=\"trace\"><thead><tr><th>at</th><th>step</th><th>event</th><th>details</th></tr></thead><tbody>",
    );
    for e in events {
        let (name, details) = describe(e);
        let class = match &e.kind {
            EventKind::StepFailed { .. } => " class=\"failed\"",
            EventKind::FlowFinished(o) if o.status != RunStatus::Succeeded => " class=\"failed\"",
            EventKind::FlowFinished(_) => " class=\"ok\"",
            _ => "",
        };
        let _ = write!(
            out,
            "<tr{class}><td class=\"at\">{:.3}s</td><td>{}</td><td>{}</td><td class=\"details\">{}</td></tr>",
            e.at_ms as f64 / 1000.0,
            esc(e.step.as_deref().unwrap_or("")),
            esc(&name),
            esc(&details),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// An event's name and its details as compact JSON, cut to a readable length.
fn describe(e: &TraceEvent) -> (String, String) {
    // An operation reads as the API description names it.
    if let EventKind::OperationCalled {
        operation,
        method,
        path,
    } = &e.kind
    {
        return (
            "operation".to_string(),
            format!("{operation} ({method} {path})"),
        );
    }
    let mut value = serde_json::to_value(e).unwrap_or(Value::Null);
    let name = value["event"].as_str().unwrap_or("event").to_string();
    if let Value::Object(map) = &mut value {
        for key in ["seq", "at_ms", "time", "run", "step", "event"] {
            map.remove(key);
        }
    }
    let text = if value.as_object().is_some_and(|m| m.is_empty()) {
        String::new()
    } else {
        value.to_string()
    };
    let cut = if text.chars().count() > 400 {
        format!("{}…", text.chars().take(399).collect::<String>())
    } else {
        text
    };
    (name.replace('_', " "), cut)
}

const BOX_W: i32 = 300;
const BOX_H: i32 = 46;
const GAP: i32 = 30;
const LEFT: i32 = 20;
const TOP: i32 = 20;

/// The flow as SVG: steps in a column in flow order, the next step's arrow
/// straight down, other edges as arcs on the right (dashed for `on_error`),
/// the steps a run took filled, and the one it stopped at outlined.
pub fn svg(flow: &Flow, taken: &Taken) -> String {
    let (nodes, edges) = layout(flow);
    let row = |i: usize| TOP + i as i32 * (BOX_H + GAP);
    let end_y = row(nodes.len());
    let arcs = edges
        .iter()
        .filter(|e| e.to != Some(e.from + 1) && !(e.to.is_none() && e.from + 1 == nodes.len()))
        .count() as i32;
    let width = LEFT + BOX_W + 60 + arcs * 22 + 200;
    let height = end_y + BOX_H + TOP;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"diagram\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\">",
        esc(&flow.name)
    );
    out.push_str("<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#475569\"/></marker></defs>");
    let mut arc = 0;
    // Labels of the arcs leaving one step stack above its right edge.
    let mut labels_at = vec![0; nodes.len()];
    for edge in &edges {
        let from_y = row(edge.from) + BOX_H;
        let (to_y, straight) = match edge.to {
            Some(t) => (row(t), t == edge.from + 1),
            None => (end_y, edge.from + 1 == nodes.len()),
        };
        let dash = if edge.error {
            " stroke-dasharray=\"5,4\""
        } else {
            ""
        };
        let cx = LEFT + BOX_W / 2;
        if straight {
            let _ = write!(
                out,
                "<line x1=\"{cx}\" y1=\"{from_y}\" x2=\"{cx}\" y2=\"{to_y}\" stroke=\"#475569\"{dash} marker-end=\"url(#arrow)\"/>"
            );
            if let Some(label) = &edge.label {
                let _ = write!(
                    out,
                    "<text x=\"{}\" y=\"{}\" class=\"edge\">{}</text>",
                    cx + 6,
                    (from_y + to_y) / 2 + 4,
                    esc(label)
                );
            }
            continue;
        }
        arc += 1;
        let x = LEFT + BOX_W;
        let out_x = x + 20 + arc * 22;
        let y1 = row(edge.from) + BOX_H / 2;
        let y2 = match edge.to {
            Some(t) => row(t) + BOX_H / 2,
            None => end_y + BOX_H / 2,
        };
        let _ = write!(
            out,
            "<path d=\"M{x},{y1} H{out_x} V{y2} H{}\" fill=\"none\" stroke=\"#475569\"{dash} marker-end=\"url(#arrow)\"/>",
            if edge.to.is_none() {
                LEFT + BOX_W / 2 + 22
            } else {
                x
            }
        );
        if let Some(label) = &edge.label {
            let k = labels_at[edge.from];
            labels_at[edge.from] += 1;
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" class=\"edge\">{}</text>",
                x + 6,
                y1 - 4 - k * 13,
                esc(label)
            );
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let id = &flow.steps[i].id;
        let ended = taken.ended_at.as_deref() == Some(id.as_str());
        let (fill, stroke, width) = if ended {
            match taken.status {
                Some(RunStatus::Succeeded) => ("#dcfce7", "#15803d", 3),
                Some(_) => ("#fee2e2", "#b91c1c", 3),
                None => ("#fef9c3", "#a16207", 3),
            }
        } else if taken.steps.contains(id) {
            ("#dbeafe", "#1d4ed8", 2)
        } else {
            ("#ffffff", "#94a3b8", 1)
        };
        let y = row(i);
        let rx = match node.shape {
            Shape::Round | Shape::Stop => 20,
            Shape::Diamond => 2,
            Shape::Box => 6,
        };
        let class = if ended {
            "step current"
        } else if taken.steps.contains(id) {
            "step taken"
        } else {
            "step"
        };
        let _ = write!(
            out,
            "<g class=\"{class}\" data-step=\"{sid}\"><rect x=\"{LEFT}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"{rx}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{width}\"/>",
            sid = esc(id)
        );
        if node.shape == Shape::Diamond {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" class=\"kind\">◆</text>",
                LEFT + 10,
                y + 28
            );
        }
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" class=\"title\">{}</text>",
            LEFT + 28,
            y + 19,
            esc(&node.title)
        );
        if let Some(detail) = &node.detail {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" class=\"detail\">{}</text>",
                LEFT + 28,
                y + 36,
                esc(detail)
            );
        }
        out.push_str("</g>");
    }
    let _ = write!(
        out,
        "<g class=\"end\"><circle cx=\"{}\" cy=\"{}\" r=\"16\" fill=\"#f1f5f9\" stroke=\"#475569\"/><text x=\"{}\" y=\"{}\" class=\"detail\">end</text></g>",
        LEFT + BOX_W / 2,
        end_y + 18,
        LEFT + BOX_W / 2 - 10,
        end_y + 22
    );
    out.push_str("</svg>");
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn time(ms: i64) -> String {
    crate::run::clock::rfc3339(crate::run::clock::from_unix_ms(ms))
}

/// A span of milliseconds, roughly: `4s`, `3m`, `2h`, `5d`.
fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// HTML escaping for text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#0f172a}\
h1{font-size:20px}h2{font-size:16px;margin-top:28px}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e2e8f0;vertical-align:top}\
th{color:#475569;font-weight:600}.details{font:12px ui-monospace,monospace;word-break:break-all}\
.dim{color:#64748b}.error{color:#b91c1c}tr.failed td{background:#fef2f2}tr.ok td{background:#f0fdf4}\
.filters a{margin-right:8px}.filters a.on{font-weight:700}.count{color:#475569;font-size:12px}\
tr.late td{background:#fff7ed}tr.late td:nth-child(6){color:#9a3412;font-weight:600}.search{margin:12px 0}\
.badge{font-size:12px;padding:2px 8px;border-radius:10px;background:#e2e8f0;vertical-align:middle}\
.badge.succeeded{background:#dcfce7}.badge.failed{background:#fee2e2}.badge.waiting{background:#fef9c3}.badge.running{background:#dbeafe}\
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{color:#475569}dd{margin:0}\
svg text{font:12px system-ui,sans-serif;fill:#0f172a}svg text.detail{fill:#475569;font-size:11px}svg text.edge{fill:#64748b;font-size:11px}\
svg text.title{font-weight:600}.login label{display:block;margin:12px 0}.sign-out{float:right}";

fn page(status: u16, title: &str, body: &str) -> Response {
    page_with(status, title, body, false)
}

/// A whole page. `live`: it reloads itself every two seconds.
fn page_with(status: u16, title: &str, body: &str, live: bool) -> Response {
    let script = if live {
        "<script src=\"/assets/refresh.js\"></script>"
    } else {
        ""
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{} · handoff</title><style>{STYLE}</style></head><body>{body}{script}</body></html>",
        esc(title)
    );
    let mut r = Response::new(Body::from(html));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The scheduled flows: each one's pattern, next slot and last run.
fn schedules(app: &App, body: &mut String, now: i64) {
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
                format!("{} (in {})", time(ms), ago(ms - now))
            })
            .unwrap_or_default();
        let last = match &fired.last_run {
            Some(id) => format!(
                "<a href=\"/runs/{id}\">{}</a>",
                esc(crate::language::fields::clip(id, 13)),
                id = esc(id)
            ),
            None => String::new(),
        };
        let _ = write!(
            body,
            "<tr><td><code>{}</code> {}</td><td>{}</td><td>{}</td><td>{last}</td></tr>",
            esc(&schedule.pattern),
            esc(&schedule.timezone),
            esc(flow),
            esc(&next)
        );
    }
    body.push_str("</tbody></table>");
}

/// The signal a waiting run waits for, when it is in a `wait_for`.
fn waits_for(run: &crate::store::StoredRun) -> Option<&str> {
    run.waiting_for
        .as_deref()
        .filter(|_| run.status == DurableStatus::Waiting)
        .and_then(|w| w.split('#').next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn the_reference_flow_draws_with_its_path() {
        let checked =
            crate::language::analyze::analyze_file("flows/complete-nwc-task.yaml").unwrap();
        let flow = checked.flow;
        let mut taken = Taken::default();
        taken.steps.insert("find_task".into());
        taken.steps.insert("give_up".into());
        taken.ended_at = Some("give_up".into());
        taken.status = Some(RunStatus::Failed);
        let svg = svg(&flow, &taken);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        for step in &flow.steps {
            assert!(
                svg.contains(&format!("data-step=\"{}\"", step.id)),
                "{}",
                step.id
            );
        }
        assert!(svg.contains("<g class=\"step taken\" data-step=\"find_task\">"));
        assert!(svg.contains("<g class=\"step current\" data-step=\"give_up\"><rect x=\"20\" y=\"476\" width=\"300\" height=\"46\" rx=\"20\" fill=\"#fee2e2\""));
        assert!(svg.contains("<g class=\"step\" data-step=\"complete\">"));
        assert!(svg.contains("tries &gt;= max_tries"), "labels are escaped");
    }

    #[test]
    fn a_form_body_is_decoded() {
        assert_eq!(form_token(b"token=a%2Bb+c&x=1"), "a+b c");
    }
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
        assert!(!late && said.contains("(in "), "{said}");
        // Not waiting: nothing to say.
        assert_eq!(
            waiting_until(&waiting(Some(now - 600_000), DurableStatus::Running), now),
            (String::new(), false)
        );
    }
}
