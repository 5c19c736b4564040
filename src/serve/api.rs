//! The worker's HTTP API (JSON, under `/v1`), its hooks, `/healthz` and
//! `/metrics`. docs/serve.md has every route with a `curl` example.
//!
//! Errors are RFC 9457 problem documents with a stable `code`. No answer
//! quotes a secret: inputs are checked by the same code as `--set` (which
//! quotes only values that are not secret), run summaries show no field
//! values, and traces come from the store, redacted when they were written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::run::inputs::{Inputs, initial_state};
use crate::serve::access::{ApiToken, Denied, Refused, signature_ok, timestamped_ok};

/// How long a GitHub-form signature is remembered: it carries no time, so a
/// captured request could be sent again at any later time; within this
/// window, it starts no second run.
const SEEN_SIGNATURE_MS: i64 = 10 * 60 * 1000;
use crate::engine::checkpoint::DurableStatus;
use crate::language::source::Source;
use crate::serve::app::App;
use crate::serve::flows::Served;
use crate::serve::worker::{Entry, Worker};
use crate::store::seal::Memo;
use crate::store::{Created, IdempotencyKey, RunFilter, StoredRun};

/// The largest request body the API reads.
pub const MAX_BODY: usize = 1024 * 1024;
/// How long `/healthz` waits for the store: it answers within a second.
const HEALTH_BUDGET: Duration = Duration::from_millis(800);

/// The longest idempotency key kept.
const MAX_KEY: usize = 255;
/// How many runs a page lists, at most and by default.
const MAX_PAGE: u32 = 500;
const PAGE: u32 = 50;

/// The API's routes, and `pages` (the run page's) beside them, under one
/// body limit and one fallback.
pub fn router(app: Arc<App>, pages: Router<Arc<App>>) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/flows", get(list_flows))
        .route("/v1/flows/{flow}/runs", post(start_run))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(show_run))
        .route("/v1/runs/{id}/trace", get(trace))
        .route("/v1/runs/{id}/cancel", post(cancel))
        .route("/v1/runs/{id}/signals/{signal}", post(signal))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), guard));
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        // A resume URL is its own credential: signed, for one wait, once.
        .route("/v1/resume/{token}", post(resume))
        // A hook checks its own access: a signature, or the bearer token.
        .route("/v1/hooks/{flow}", post(hook))
        .merge(guarded)
        .merge(pages)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// A problem document: RFC 9457, with a `code` to branch on.
pub fn problem(status: u16, code: &str, detail: impl Into<String>) -> Response {
    problem_with(status, code, detail, json!({}))
}

fn problem_with(status: u16, code: &str, detail: impl Into<String>, extra: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "code": code,
        "detail": detail.into(),
    });
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    let mut r = respond(status.as_u16(), &body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn respond(status: u16, body: &Value) -> Response {
    let mut r = Response::new(Body::from(format!("{body}\n")));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn denied(d: Denied) -> Response {
    problem(401, "unauthorized", d.0)
}

async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let auth = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match app.token.check(auth, request.uri().query()) {
        Ok(()) => next.run(request).await,
        Err(d) => denied(d),
    }
}

async fn health(State(app): State<Arc<App>>) -> Response {
    if app.worker.stopping() {
        return problem(503, "stopping", "the worker is shutting down");
    }
    // A load balancer needs an answer, not a hang: a store that does not
    // answer in time counts as down.
    match tokio::time::timeout(HEALTH_BUDGET, app.worker.runs.store.ping()).await {
        Ok(Ok(())) => respond(200, &json!({ "status": "ok" })),
        Ok(Err(e)) => problem(503, "store", e.0),
        Err(_) => problem(
            503,
            "store",
            format!(
                "the store did not answer within {} ms",
                HEALTH_BUDGET.as_millis()
            ),
        ),
    }
}

/// Ready for new runs: not shutting down, the store answers in time, and
/// the flows are loaded. It needs no token, so it says how many flows, not
/// which (`GET /v1/flows` names them, with their versions).
async fn ready(State(app): State<Arc<App>>) -> Response {
    if app.worker.stopping() {
        return problem(503, "stopping", "the worker is shutting down");
    }
    match tokio::time::timeout(HEALTH_BUDGET, app.worker.runs.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return problem(503, "store", e.0),
        Err(_) => {
            return problem(
                503,
                "store",
                format!(
                    "the store did not answer within {} ms",
                    HEALTH_BUDGET.as_millis()
                ),
            );
        }
    }
    let loaded = app.loaded();
    if loaded.flows.by_name.is_empty() {
        return problem(503, "no_flows", "no flows are loaded");
    }
    respond(
        200,
        &json!({ "status": "ready", "store": "ok", "flows": loaded.flows.by_name.len() }),
    )
}

async fn not_found() -> Response {
    problem(404, "not_found", "no such route; see docs/serve.md")
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let counts = match app.worker.runs.store.counts().await {
        Ok(c) => c,
        Err(e) => return problem(503, "store", e.0),
    };
    let mut text = app.worker.metrics.render(&counts, app.worker.active());
    text.push_str(&schedule_metrics(&app));
    let mut r = Response::new(Body::from(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn list_flows(State(app): State<Arc<App>>) -> Response {
    let loaded = app.loaded();
    let flows: Vec<Value> = loaded
        .flows
        .by_name
        .values()
        .map(|s| {
            json!({
                "name": s.flow.name,
                "path": s.flow.source.name,
                "version": s.hash(),
                "hook": s.flow.trigger.is_some(),
                "event": s.flow.trigger.as_ref().map(|t| t.event.json_schema()),
                "schedule": schedule_json(&app, &s.flow),
                "inputs": s.flow.fields.values().filter(|f| f.input).map(|f| f.name.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    respond(200, &json!({ "flows": flows }))
}

/// Each schedule's next slot, last run and counts, in Prometheus' text format.
fn schedule_metrics(app: &App) -> String {
    use std::fmt::Write as _;
    let all = app.schedules.all();
    if all.is_empty() {
        return String::new();
    }
    let secs = |t: SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let mut out = String::new();
    out.push_str("# HELP handoff_schedule_next_slot_seconds The next slot of a scheduled flow, in Unix seconds.\n# TYPE handoff_schedule_next_slot_seconds gauge\n");
    for (flow, f) in &all {
        if let Some(next) = f.next {
            let _ = writeln!(
                out,
                "handoff_schedule_next_slot_seconds{{flow=\"{}\"}} {}",
                crate::serve::metrics::label(flow),
                secs(next)
            );
        }
    }
    out.push_str("# HELP handoff_schedule_last_slot_seconds The last slot this worker saw started, in Unix seconds.\n# TYPE handoff_schedule_last_slot_seconds gauge\n");
    for (flow, f) in &all {
        if let Some(last) = f.last_slot {
            let _ = writeln!(
                out,
                "handoff_schedule_last_slot_seconds{{flow=\"{}\"}} {}",
                crate::serve::metrics::label(flow),
                secs(last)
            );
        }
    }
    out.push_str("# HELP handoff_schedule_slots_total Slots this worker started a run for, or skipped while the last run went on.\n# TYPE handoff_schedule_slots_total counter\n");
    for (flow, f) in &all {
        let flow = crate::serve::metrics::label(flow);
        let _ = writeln!(
            out,
            "handoff_schedule_slots_total{{flow=\"{flow}\",result=\"started\"}} {}",
            f.fired
        );
        let _ = writeln!(
            out,
            "handoff_schedule_slots_total{{flow=\"{flow}\",result=\"skipped\"}} {}",
            f.skipped
        );
    }
    out
}

/// A flow's schedule as `GET /v1/flows` shows it.
fn schedule_json(app: &App, flow: &crate::language::flow::Flow) -> Value {
    let Some(s) = &flow.schedule else {
        return Value::Null;
    };
    let fired = app.schedules.get(&flow.name).unwrap_or_default();
    let time = |t: Option<SystemTime>| t.map(crate::run::clock::rfc3339);
    json!({
        "cron": s.pattern,
        "timezone": s.timezone,
        "overlap": if s.overlap == crate::language::schedule::Overlap::Skip { "skip" } else { "allow" },
        "catch_up": if s.catch_up == crate::language::schedule::CatchUp::One { "one" } else { "none" },
        "next": time(fired.next.or_else(|| s.next_after(SystemTime::now()))),
        "last_slot": time(fired.last_slot),
        "last_run": fired.last_run,
    })
}

fn served(app: &App, flow: &str) -> Result<Served, Box<Response>> {
    let loaded = app.loaded();
    loaded.flows.by_name.get(flow).cloned().ok_or_else(|| {
        Box::new({
            let names: Vec<&str> = loaded.flows.by_name.keys().map(String::as_str).collect();
            problem(
                404,
                "unknown_flow",
                format!(
                    "there is no flow `{}`; this worker serves {}",
                    shown(flow),
                    crate::language::analyzer::list(&names)
                ),
            )
        })
    })
}

/// A name from a URL, cut short and without control characters, to quote.
fn shown(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(64).collect()
}

fn idempotency_header(headers: &HeaderMap) -> Result<Option<String>, Box<Response>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(k) if !k.trim().is_empty() && k.len() <= MAX_KEY => Ok(Some(k.trim().to_string())),
        _ => Err(Box::new(problem(
            400,
            "bad_idempotency_key",
            format!("`Idempotency-Key` is 1 to {MAX_KEY} printable characters"),
        ))),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        // serde's message names a line and column, never the text there.
        Box::new(problem(
            400,
            "bad_json",
            format!(
                "the body is not JSON: {}",
                e.to_string().split(" at line").next().unwrap_or("")
            ),
        ))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    #[serde(default)]
    inputs: Option<Value>,
    /// A bulk start: many runs in one call, kept in one transaction.
    #[serde(default)]
    runs: Option<Vec<BulkItem>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkItem {
    #[serde(default)]
    inputs: Option<Value>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// The most runs one bulk start makes.
const MAX_BULK: usize = 1000;

async fn start_run(
    State(app): State<Arc<App>>,
    Path(flow): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let served = match served(&app, &flow) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let key = match idempotency_header(&headers) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let inputs = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        let value = match parse_json(&body) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        match serde_json::from_value::<StartBody>(value) {
            Ok(StartBody {
                inputs: None,
                runs: Some(items),
            }) => {
                if key.is_some() {
                    return problem(
                        422,
                        "bad_body",
                        "a bulk start gives each run its `idempotency_key`, not an `Idempotency-Key` header",
                    );
                }
                return start_many(&app, &served, items, traceparent(&headers)).await;
            }
            Ok(StartBody { inputs, runs: None }) => {
                inputs.unwrap_or(Value::Object(Default::default()))
            }
            _ => {
                return problem(
                    422,
                    "bad_body",
                    "the body is `{\"inputs\": {\"name\": value, …}}`, or `{\"runs\": [{\"inputs\": {…}, \"idempotency_key\": \"…\"}, …]}`",
                );
            }
        }
    };
    let key = key.map(|key| IdempotencyKey {
        scope: format!("api/{}", served.flow.name),
        key,
        fingerprint: None,
    });
    start(&app, &served, inputs, key, traceparent(&headers)).await
}

/// What makes two starts with one key the same start: their inputs. A
/// secret input counts by name, not value, so the store keeps no digest of
/// a secret.
fn inputs_fingerprint(flow: &crate::language::flow::Flow, inputs: &Value) -> String {
    let mut shown = inputs.clone();
    if let Value::Object(map) = &mut shown {
        for (name, value) in map.iter_mut() {
            if flow.fields.get(name).is_some_and(|f| f.secret) {
                *value = Value::String("***".into());
            }
        }
    }
    crate::store::fingerprint(&shown)
}

/// A run asked for: started, or the one its key started before.
pub enum Started {
    /// Its id and title.
    New(String, Option<String>),
    Existing(Box<StoredRun>),
}

/// Creates a run from inputs (a JSON object) and starts it; with a key
/// that names a run already, that run instead. An error is the answer to
/// give the caller.
pub async fn create_run(
    app: &App,
    served: &Served,
    inputs: Value,
    key: Option<IdempotencyKey>,
    traceparent: Option<String>,
    started_by: Option<String>,
) -> Result<Started, Box<Response>> {
    let (mut state, key) = prepare(app, served, inputs, key).map_err(Refusal::answer)?;
    state.traceparent = traceparent;
    state.started_by = started_by;
    let flow = &served.flow;
    let now = SystemTime::now();
    let id = crate::run::trace::new_run_id(now);
    let title = crate::store::durable::title_of(flow, &state);
    let sealed = Memo::default();
    match app
        .worker
        .runs
        .create(&id, flow, &state, now, key.clone(), &sealed)
        .await
    {
        Ok(Created::New) => {}
        Ok(Created::Conflict(_)) => return Err(conflict(app, flow, key.as_ref(), None)),
        Ok(Created::Existing(existing)) => {
            return match app.worker.runs.store.load(&existing).await {
                Ok(Some(run)) => Ok(Started::Existing(Box::new(run))),
                _ => Err(Box::new(problem(
                    503,
                    "store",
                    "the run for this key could not be read",
                ))),
            };
        }
        Err(e) => return Err(Box::new(problem(503, "store", e))),
    }
    app.worker.pin(served.hash(), flow.clone());
    app.worker.spawn(
        id.clone(),
        Entry::Fresh(flow.clone(), Box::new(state), sealed),
    );
    Ok(Started::New(id, title))
}

/// An idempotency conflict: counted, warned of, and the answer to give.
fn conflict(
    app: &App,
    flow: &crate::language::flow::Flow,
    key: Option<&IdempotencyKey>,
    index: Option<usize>,
) -> Box<Response> {
    app.worker
        .metrics
        .refused(&flow.name, "idempotency_conflict");
    let hash = key.map(IdempotencyKey::hash).unwrap_or_default();
    app.worker.warn(format!(
        "idempotency conflict on flow `{}`: key {}… was used before with other inputs; no run started",
        flow.name,
        crate::language::fields::clip(&hash, 12)
    ));
    let detail = "this idempotency key started a run with other inputs; use a new key for new work";
    Box::new(match index {
        None => problem(409, "idempotency_conflict", detail),
        Some(i) => problem_with(
            409,
            "idempotency_conflict",
            format!("run {i} of the list: {detail}; no run of the list started"),
            json!({ "index": i }),
        ),
    })
}

/// Starts many runs of one flow in one call: every one checked first (any
/// problem: `422` naming each, and none starts), then kept in one
/// transaction (a conflicting key: `409`, and none starts), then started.
/// A caller's W3C `traceparent`, when it is a valid one: the run's trace
/// joins the caller's. An invalid one is ignored, as the specification asks.
fn traceparent(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    crate::run::otel::ids::Parent::parse(value).map(|p| p.header())
}

async fn start_many(
    app: &App,
    served: &Served,
    items: Vec<BulkItem>,
    traceparent: Option<String>,
) -> Response {
    if items.is_empty() || items.len() > MAX_BULK {
        return problem(
            422,
            "bad_body",
            format!("a bulk start has 1 to {MAX_BULK} runs"),
        );
    }
    let mut prepared = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let key = match item.idempotency_key {
            Some(k) if k.trim().is_empty() || k.len() > MAX_KEY => {
                errors.push(json!({ "index": index, "errors": [format!("`idempotency_key` is 1 to {MAX_KEY} characters")] }));
                continue;
            }
            Some(k) => Some(IdempotencyKey {
                scope: format!("api/{}", served.flow.name),
                key: k.trim().to_string(),
                fingerprint: None,
            }),
            None => None,
        };
        let inputs = item.inputs.unwrap_or(Value::Object(Default::default()));
        match prepare(app, served, inputs, key) {
            Ok((mut state, key)) => {
                state.traceparent = traceparent.clone();
                prepared.push((state, key));
            }
            Err(refusal) if refusal.status == 503 => return *refusal.answer(),
            Err(refusal) => {
                let said = if refusal.errors.is_empty() {
                    vec![refusal.detail]
                } else {
                    refusal.errors
                };
                errors.push(json!({ "index": index, "errors": said }));
            }
        }
    }
    if !errors.is_empty() {
        return problem_with(
            422,
            "bad_inputs",
            format!(
                "{} of the list do not fit flow `{}`; no run of the list started",
                errors.len(),
                served.flow.name
            ),
            json!({ "errors": errors }),
        );
    }
    let flow = &served.flow;
    let now = SystemTime::now();
    let ids: Vec<String> = prepared
        .iter()
        .map(|_| crate::run::trace::new_run_id(now))
        .collect();
    // Each run's checkpoints go on from the sealing its creation did.
    let memos: Vec<Memo> = prepared.iter().map(|_| Memo::default()).collect();
    let rows = ids
        .iter()
        .zip(&prepared)
        .zip(&memos)
        .map(|((id, (state, key)), memo)| (id.clone(), state, key.clone(), memo))
        .collect();
    let results = match app.worker.runs.create_many(flow, rows, now).await {
        Ok(r) => r,
        Err(e) => return problem(503, "store", e),
    };
    if let Some(index) = results
        .iter()
        .position(|r| matches!(r, Created::Conflict(_)))
    {
        return *conflict(app, flow, prepared[index].1.as_ref(), Some(index));
    }
    app.worker.pin(served.hash(), flow.clone());
    let mut runs = Vec::with_capacity(results.len());
    let mut created = false;
    let started = ids.into_iter().zip(prepared).zip(memos).zip(results);
    for (((id, (state, _)), sealed), result) in started {
        match result {
            Created::Existing(existing) => runs.push(json!({
                "id": existing,
                "url": format!("/v1/runs/{existing}"),
                "replayed": true,
            })),
            _ => {
                created = true;
                runs.push(json!({ "id": id, "url": format!("/v1/runs/{id}"), "replayed": false }));
                app.worker
                    .spawn(id, Entry::Fresh(flow.clone(), Box::new(state), sealed));
            }
        }
    }
    respond(if created { 201 } else { 200 }, &json!({ "runs": runs }))
}

/// Why a start's inputs are refused: an answer for one start, or an entry
/// of a bulk start's `errors`.
struct Refusal {
    status: u16,
    code: &'static str,
    detail: String,
    errors: Vec<String>,
}

impl Refusal {
    fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    fn answer(self) -> Box<Response> {
        Box::new(if self.errors.is_empty() {
            problem(self.status, self.code, self.detail)
        } else {
            problem_with(
                self.status,
                self.code,
                self.detail,
                json!({ "errors": self.errors }),
            )
        })
    }
}

/// A start's inputs checked against the flow: its first state, and its key
/// with the inputs' fingerprint.
fn prepare(
    app: &App,
    served: &Served,
    inputs: Value,
    key: Option<IdempotencyKey>,
) -> Result<(crate::run::state::RunState, Option<IdempotencyKey>), Refusal> {
    if app.worker.stopping() {
        return Err(Refusal::new(
            503,
            "stopping",
            "the worker is shutting down; try again",
        ));
    }
    if !inputs.is_object() {
        return Err(Refusal::new(
            422,
            "bad_inputs",
            "`inputs` is an object of input field names to values",
        ));
    }
    let flow = &served.flow;
    let text = serde_json::to_string(&inputs).unwrap_or_default();
    let source = Source::new("the request's inputs", text);
    let env: &dyn Fn(&str) -> Option<String> = &*app.env;
    // Only a key's start needs its inputs' fingerprint.
    let key = key.map(|k| IdempotencyKey {
        fingerprint: Some(inputs_fingerprint(flow, &inputs)),
        ..k
    });
    // The inputs are JSON already: read as YAML would read them, without
    // parsing their text again (as `run --each` reads a row). Only inputs
    // with a problem are parsed, for the same errors as before.
    let quick = crate::language::raw::Node::from_json(&inputs).map(|node| Inputs {
        file: Some((source.clone(), node)),
        file_label: Some("the request".to_string()),
        ..Inputs::default()
    });
    if let Some(Ok(state)) = quick.map(|given| initial_state(flow, &given, env)) {
        return Ok((state, key));
    }
    let node = match crate::run::inputs::parse_input_file(&source) {
        Ok(n) => n,
        Err(_) => {
            return Err(Refusal::new(
                422,
                "bad_inputs",
                "`inputs` could not be read",
            ));
        }
    };
    let given = Inputs {
        file: Some((source, node)),
        file_label: Some("the request".to_string()),
        ..Inputs::default()
    };
    let state = match initial_state(flow, &given, env) {
        Ok(s) => s,
        Err(diagnostics) => {
            return Err(Refusal {
                errors: diagnostics.iter().map(|d| d.message.clone()).collect(),
                ..Refusal::new(
                    422,
                    "bad_inputs",
                    format!("the inputs do not fit flow `{}`", flow.name),
                )
            });
        }
    };
    Ok((state, key))
}

/// Creates a run from inputs and starts it, answering the caller: `201`
/// with the new run, or `200` with the run its key started before.
async fn start(
    app: &App,
    served: &Served,
    inputs: Value,
    key: Option<IdempotencyKey>,
    traceparent: Option<String>,
) -> Response {
    let (id, title) = match create_run(app, served, inputs, key, traceparent, None).await {
        Ok(Started::New(id, title)) => (id, title),
        Ok(Started::Existing(run)) => {
            let mut body = summary(&run);
            body["url"] = json!(format!("/v1/runs/{}", run.id));
            let mut r = respond(200, &body);
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return r;
        }
        Err(r) => return *r,
    };
    // The same shape as a replayed start's, and as `GET /v1/runs/{id}`'s:
    // a caller reads one answer, whichever it got.
    let now = crate::run::clock::rfc3339(SystemTime::now());
    let mut r = respond(
        201,
        &json!({
            "id": id,
            "flow": served.flow.name,
            "title": title,
            "flow_version": served.hash(),
            "status": "running",
            "step": null,
            "wake_at": null,
            "waiting_for": null,
            "steps_taken": 0,
            "outcome": null,
            "created": now,
            "updated": now,
            "url": format!("/v1/runs/{id}"),
        }),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/runs/{id}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn hook(
    State(app): State<Arc<App>>,
    Path(flow): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Access first: a caller who may not call learns nothing, not even
    // which flows exist.
    let loaded = app.loaded();
    let signature = loaded.flows.by_name.get(&flow).and_then(|s| {
        let sig = s.flow.trigger.as_ref()?.signature.as_ref()?;
        Some((sig, loaded.hook_secrets.get(&s.flow.name)?))
    });
    let mut replayed = false;
    match signature {
        Some((signature, secret)) => {
            // The signature is the credential; a URL must still carry none.
            if let Err(d) = ApiToken::none().check(None, uri.query()) {
                return denied(d);
            }
            let given = headers
                .get(signature.header.as_str())
                .and_then(|v| v.to_str().ok());
            let Some(sig) = given else {
                return problem(
                    401,
                    "unsigned",
                    format!("the event has no `{}` header", signature.header),
                );
            };
            let now_ms = crate::run::clock::unix_ms(SystemTime::now());
            // How long the signature is remembered: a timestamped one for
            // the window either side of its time, a GitHub one (no time) a while.
            let remember_ms = if signature.timestamped {
                let tolerance_s = signature.tolerance.as_secs() as i64;
                match timestamped_ok(secret, &body, sig, now_ms / 1000, tolerance_s) {
                    Ok(()) => {}
                    Err(Refused::Stale(d)) => {
                        app.worker.metrics.refused(&flow, "stale_signature");
                        let detail = format!("`{}`: {}", signature.header, d.0);
                        return problem(401, "stale_signature", detail);
                    }
                    Err(Refused::Bad(d)) => {
                        let detail = format!("`{}`: {}", signature.header, d.0);
                        return problem(401, "bad_signature", detail);
                    }
                }
                2 * tolerance_s.saturating_mul(1000)
            } else if signature_ok(secret, &body, sig) {
                SEEN_SIGNATURE_MS
            } else {
                return problem(
                    401,
                    "bad_signature",
                    format!(
                        "the `{}` header is not the body's signature",
                        signature.header
                    ),
                );
            };
            replayed = app.seen_signatures.seen(
                format!("{flow}\n{sig}").as_bytes(),
                now_ms,
                now_ms.saturating_add(remember_ms),
            );
        }
        None => {
            let auth = headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes);
            if let Err(d) = app.token.check(auth, uri.query()) {
                return denied(d);
            }
        }
    }
    let served = match served(&app, &flow) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(trigger) = &served.flow.trigger else {
        return problem(
            404,
            "no_trigger",
            format!(
                "flow `{}` has no `trigger:`, so it takes no events; start it with POST /v1/flows/{}/runs",
                served.flow.name, served.flow.name
            ),
        );
    };
    let event = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    // Header names lower-case; credentials never reach a template.
    let seen: BTreeMap<String, String> = headers
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            n != "authorization"
                && n != "cookie"
                && Some(n)
                    != trigger
                        .signature
                        .as_ref()
                        .map(|s| s.header.to_ascii_lowercase())
                        .as_deref()
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect();
    if let Err(errors) = trigger.event.check(&event) {
        return problem_with(
            422,
            "bad_event",
            format!(
                "the event does not fit flow `{}`'s `trigger.event`",
                served.flow.name
            ),
            json!({ "errors": errors }),
        );
    }
    let env = &served.flow.env;
    let inputs: IndexMap<String, Value> = match trigger.inputs(env, &event, &seen) {
        Ok(i) => i,
        Err(e) => {
            return problem(
                422,
                "bad_event",
                format!(
                    "the event does not fit flow `{}`'s trigger: {e}",
                    served.flow.name
                ),
            );
        }
    };
    let key = match trigger.key(env, &event, &seen) {
        Ok(Some(k)) => Some(k),
        Ok(None) => match idempotency_header(&headers) {
            Ok(k) => k,
            Err(r) => return *r,
        },
        Err(e) => {
            return problem(
                422,
                "bad_event",
                format!("the event's idempotency key: {e}"),
            );
        }
    };
    // A signed request seen before: with a key it finds its first run
    // (a sender's retry); without one it would start a second, so no.
    if replayed && key.is_none() {
        app.worker
            .metrics
            .refused(&served.flow.name, "replayed_signature");
        app.worker.warn(format!(
            "a signed event for flow `{}` was sent again with the same signature; no run started",
            served.flow.name
        ));
        return problem(
            409,
            "replayed_signature",
            "this signed request was received before; a new event needs a new signature",
        );
    }
    let key = key.map(|key| IdempotencyKey {
        scope: format!("hook/{}", served.flow.name),
        key,
        fingerprint: None,
    });
    let inputs = Value::Object(inputs.into_iter().collect());
    start(&app, &served, inputs, key, traceparent(&headers)).await
}

#[derive(Deserialize)]
struct ListQuery {
    flow: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    before: Option<String>,
    /// Text an id or an input holds.
    q: Option<String>,
}

async fn list_runs(
    State(app): State<Arc<App>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return problem(
            400,
            "bad_query",
            "the query takes `flow`, `status`, `q`, `limit` and `before`",
        );
    };
    let status = match q.status.as_deref().map(DurableStatus::parse) {
        None => None,
        Some(Some(s)) => Some(s),
        Some(None) => {
            return problem(
                400,
                "bad_query",
                "`status` is one of `waiting`, `running`, `succeeded`, `failed`, `canceled`",
            );
        }
    };
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let filter = RunFilter {
        status,
        flow: q.flow,
        unfinished: false,
        limit: Some(limit),
        before: q.before,
        search: q.q,
        oldest_first: false,
    };
    match app.worker.runs.list(&filter).await {
        Ok(runs) => {
            let next = (runs.len() as u32 == limit)
                .then(|| runs.last().map(|r| r.id.clone()))
                .flatten();
            let runs: Vec<Value> = runs.iter().map(summary).collect();
            respond(200, &json!({ "runs": runs, "next_before": next }))
        }
        Err(e) => problem(503, "store", e),
    }
}

/// A run as the API shows it: where it is and how it ended, no field values.
pub fn summary(run: &StoredRun) -> Value {
    let time = |ms: i64| crate::run::clock::rfc3339(crate::run::clock::from_unix_ms(ms));
    let outcome = run
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str::<Value>(o).ok());
    json!({
        "id": run.id,
        "flow": run.flow,
        "title": run.title,
        "flow_version": run.flow_hash,
        "status": run.status.as_str(),
        "step": run.step,
        "wake_at": run.wake_at_ms.filter(|_| run.status == DurableStatus::Waiting).map(time),
        // What it waits for: a signal's name, until `wake_at`.
        "waiting_for": run
            .waiting_for
            .as_deref()
            .filter(|_| run.status == DurableStatus::Waiting)
            .and_then(|w| w.split('#').next()),
        "steps_taken": run.steps_taken,
        "outcome": outcome,
        "created": time(run.created_ms),
        "updated": time(run.updated_ms),
    })
}

async fn load(app: &App, id: &str) -> Result<StoredRun, Box<Response>> {
    match app.worker.runs.store.load(id).await {
        Ok(Some(run)) => Ok(run),
        Ok(None) => Err(Box::new(problem(
            404,
            "unknown_run",
            format!("there is no run `{}`", shown(id)),
        ))),
        Err(e) => Err(Box::new(problem(503, "store", e.0))),
    }
}

async fn show_run(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match load(&app, &id).await {
        Ok(run) => respond(200, &summary(&run)),
        Err(r) => *r,
    }
}

async fn cancel(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let run = match load(&app, &id).await {
        Ok(run) => run,
        Err(r) => return *r,
    };
    match app.worker.cancel(&run, "the API").await {
        Ok(true) => match load(&app, &id).await {
            Ok(run) => respond(200, &summary(&run)),
            Err(r) => *r,
        },
        Ok(false) => problem(
            409,
            "finished",
            format!(
                "run `{}` has already ended: {}",
                run.id,
                run.status.as_str()
            ),
        ),
        Err(e) => problem(503, "store", e),
    }
}

/// `POST /v1/runs/{id}/signals/{signal}`: the API token's way to signal a
/// run that waits for `signal`.
async fn signal(
    State(app): State<Arc<App>>,
    Path((id, signal)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    deliver(&app, &id, &signal, None, &body, "api").await
}

/// `POST /v1/resume/{token}`: a resume URL, signed for one wait of one run.
/// A forged or altered one is refused before anything is read.
async fn resume(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    if let Err(d) = ApiToken::none().check(None, uri.query()) {
        return denied(d);
    }
    let Some(wait) = app.worker.resume.open(&token) else {
        app.worker.metrics.refused("resume", "bad_resume_url");
        return problem(
            403,
            "bad_resume_url",
            "this resume URL was not made by this worker's store, or was altered",
        );
    };
    deliver(&app, &wait.run, &wait.signal, Some(wait.n), &body, "url").await
}

/// Delivers a signal to the wait a run is in: to wait `n` (a resume URL's),
/// or to whichever wait for `signal` it is in (the API's). 404: no such run
/// or signal; 422: data that does not fit; 409: not waiting for it; 410: the
/// resume URL's wait is over (signalled, timed out, or the run ended).
async fn deliver(
    app: &App,
    id: &str,
    signal: &str,
    n: Option<u64>,
    body: &[u8],
    via: &str,
) -> Response {
    let run = match load(app, id).await {
        Ok(run) => run,
        Err(r) => return *r,
    };
    let flow = match app.worker.pinned(&run) {
        Ok(f) => f,
        Err(e) => return problem(409, "unrunnable", e),
    };
    let Some(shape) = flow.steps.iter().find_map(|s| match &s.kind {
        crate::steps::StepKind::WaitFor(w) if w.signal == signal => Some(&w.data),
        _ => None,
    }) else {
        return problem(
            404,
            "unknown_signal",
            format!(
                "flow `{}` waits for no signal `{}`",
                run.flow,
                shown(signal)
            ),
        );
    };
    let data = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match parse_json(body) {
            Ok(v) => v,
            Err(r) => return *r,
        }
    };
    if let Err(problems) = shape.check(&data) {
        return problem_with(
            422,
            "bad_signal",
            format!("the signal's data does not fit `{signal}`'s `data:`"),
            json!({ "problems": problems }),
        );
    }
    let gone = |why: &str| {
        problem(
            410,
            "wait_over",
            format!("this resume URL's wait is over: {why}"),
        )
    };
    if run.status.is_finished() {
        return match n {
            Some(_) => gone(&format!("the run has ended ({})", run.status.as_str())),
            None => problem(
                409,
                "finished",
                format!(
                    "run `{}` has already ended: {}",
                    run.id,
                    run.status.as_str()
                ),
            ),
        };
    }
    let current = run
        .waiting_for
        .as_deref()
        .filter(|_| run.status == DurableStatus::Waiting)
        .and_then(|w| w.split_once('#'))
        .filter(|(name, _)| *name == signal)
        .and_then(|(_, k)| k.parse::<u64>().ok());
    let ended: u64 = serde_json::from_str::<Value>(&run.state)
        .ok()
        .and_then(|s| s["waits"][signal].as_u64())
        .unwrap_or(0);
    let target = match (n, current) {
        (Some(n), Some(c)) if n == c => n,
        (Some(n), _) if n < ended => return gone("it was signalled or timed out"),
        (None, Some(c)) => c,
        _ => {
            return problem(
                409,
                "not_waiting",
                format!(
                    "run `{}` is not waiting for signal `{}` now ({})",
                    run.id,
                    shown(signal),
                    run.status.as_str()
                ),
            );
        }
    };
    match app.worker.runs.signal(id, signal, target, data, via).await {
        Ok(true) => {
            app.worker.nudge();
            app.worker.changed.send_modify(|n| *n = n.wrapping_add(1));
            respond(
                202,
                &json!({ "run": run.id, "signal": signal, "accepted": true }),
            )
        }
        // Someone was first: the wait has its signal.
        Ok(false) if n.is_some() => gone("it was signalled already"),
        Ok(false) => problem(
            409,
            "not_waiting",
            format!(
                "run `{}` has a signal `{}` already, or stopped waiting",
                run.id,
                shown(signal)
            ),
        ),
        Err(e) => problem(503, "store", e),
    }
}

#[derive(Deserialize)]
struct TraceQuery {
    #[serde(default)]
    follow: Option<String>,
}

/// The run's trace as JSON lines; with `?follow=true`, the answer stays
/// open and streams new events until the run ends.
async fn trace(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: Result<Query<TraceQuery>, QueryRejection>,
) -> Response {
    let run = match load(&app, &id).await {
        Ok(run) => run,
        Err(r) => return *r,
    };
    let Ok(Query(query)) = query else {
        return problem(400, "bad_query", "the query takes `follow`");
    };
    let follow = match query.follow {
        None => false,
        Some(f) if matches!(f.as_str(), "" | "1" | "true") => true,
        Some(f) if matches!(f.as_str(), "0" | "false") => false,
        Some(_) => return problem(400, "bad_query", "`follow` is `true` or `false`"),
    };
    let worker = app.worker.clone();
    let changed = worker.changed.subscribe();
    let start = Follow {
        worker,
        id: run.id,
        seq: 0,
        follow,
        changed,
        done: false,
        looked_again: false,
    };
    let stream = futures_util::stream::unfold(start, |mut f| async move {
        let chunk = f.next().await?;
        Some((Ok::<Bytes, std::io::Error>(chunk), f))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// Reads a trace from the store, and when following, waits for more.
struct Follow {
    worker: Arc<Worker>,
    id: String,
    seq: u64,
    follow: bool,
    changed: tokio::sync::watch::Receiver<u64>,
    done: bool,
    /// Read once more since the run was seen to have ended.
    looked_again: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.done {
                return None;
            }
            // Marked before reading, so a checkpoint written meanwhile is not missed.
            self.changed.borrow_and_update();
            let events = self
                .worker
                .runs
                .store
                .events_after(&self.id, self.seq)
                .await
                .ok()?;
            if let Some((last, _)) = events.last() {
                self.seq = *last;
                let mut text = String::new();
                for (_, e) in events {
                    text.push_str(&e);
                    text.push('\n');
                }
                return Some(Bytes::from(text));
            }
            let finished = match self.worker.runs.store.load(&self.id).await {
                Ok(Some(run)) => run.status.is_finished(),
                _ => true,
            };
            if !self.follow || finished || self.worker.stopping() {
                // A run's end and its last events are one transaction, which
                // may have landed between the read and the load: one more
                // read after seeing the end finds them.
                self.done = self.looked_again;
                self.looked_again = true;
                continue;
            }
            // Woken by the next checkpoint anywhere in this process; a run
            // another worker runs shows within a second.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.changed.changed()).await;
        }
    }
}
