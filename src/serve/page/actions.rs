//! What an operator does from the run page: cancel an unfinished run, or
//! start a failed or canceled one again with the same inputs.
//!
//! Each is a page that asks first, then a form whose token is tied to the
//! session and the run (an HMAC under a key derived from the store's): a
//! post from another site, or without the token, is refused with 403 and
//! does nothing. Whoever acted is written into a trace: a cancel ends the
//! run's trace with it, and a retry's new run starts with it. A run is
//! retried once: posting again (a double click, a second operator) opens
//! the run the first retry started, as an idempotency key does in the API.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{Extensions, HeaderMap};
use axum::response::Response;

use crate::engine::checkpoint::DurableStatus;
use crate::serve::app::App;
use crate::store::{IdempotencyKey, StoredRun};

/// The anti-forgery token of a form that acts on `run`, for this request's session.
fn csrf(app: &App, headers: &HeaderMap, action: &str, run: &str) -> String {
    let session = crate::serve::page::session::session_nonce(app, headers).unwrap_or_default();
    app.worker.resume.form_token(action, run, &session)
}

/// Whether a form's post carries the token this page gave it.
fn forged(app: &App, headers: &HeaderMap, body: &Bytes, action: &str, run: &str) -> bool {
    let given = crate::serve::page::session::form_field(body, "csrf");
    !crate::serve::access::same(&given, &csrf(app, headers, action, run))
}

fn refused() -> Response {
    crate::serve::page::html::page(
        403,
        "Refused",
        "<main id=\"main\"><h1>Refused</h1><p class=\"error\" id=\"refused\" role=\"alert\">This form did not come from this page: nothing was done. Open the run and try again.</p></main>",
    )
}

fn client(extensions: &Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

async fn load(app: &App, id: &str) -> Result<StoredRun, Response> {
    match app.worker.runs.store.load(id).await {
        Ok(Some(run)) => Ok(run),
        Ok(None) => Err(crate::serve::page::html::problem(
            404,
            "No such run",
            "No run has this id.",
        )),
        Err(e) => Err(crate::serve::page::html::problem(503, "Run", &e.0)),
    }
}

/// The run a form's post acts on: only when the post carries this page's
/// token (403 otherwise, before the store is read).
async fn posted(
    app: &App,
    headers: &HeaderMap,
    body: &Bytes,
    action: &str,
    id: &str,
) -> Result<StoredRun, Response> {
    if forged(app, headers, body, action, id) {
        return Err(refused());
    }
    load(app, id).await
}

/// A confirmation: a heading, what the action does, one button.
fn confirm(
    app: &App,
    run: &StoredRun,
    action: &str,
    heading: &str,
    text: &str,
    token: &str,
) -> Response {
    let esc = crate::serve::page::html::esc;
    let name = run.title.clone().unwrap_or_else(|| run.id.clone());
    let id = esc(&run.id);
    let body = format!(
        "{top}<main id=\"main\"><h1>{heading} {name}?</h1>\
         <p>Run <code>{id}</code> of <code>{flow}</code> is {status}. {text}</p>\
         <form method=\"post\" action=\"/runs/{id}/{action}\"><input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
         <button type=\"submit\" id=\"confirm-{action}\">{heading} the run</button> <a href=\"/runs/{id}\">Keep it as it is</a></form></main>",
        top = crate::serve::page::html::top(app, Some((&format!("/runs/{}", run.id), "← the run"))),
        name = esc(&name),
        flow = esc(&run.flow),
        status = run.status.as_str(),
        token = esc(token),
    );
    crate::serve::page::html::page(200, &format!("{heading} a run"), &body)
}

/// The answer when a run is not in a state the action applies to (409).
fn not_now(run: &StoredRun, heading: &str, id_attr: &str, why: &str) -> Response {
    let id = crate::serve::page::html::esc(&run.id);
    crate::serve::page::html::page(
        409,
        heading,
        &format!(
            "<main id=\"main\"><h1>{heading}</h1><p><a href=\"/runs/{id}\">← the run</a></p><p id=\"{id_attr}\">Run <code>{id}</code> {}</p></main>",
            crate::serve::page::html::esc(why)
        ),
    )
}

fn ended(run: &StoredRun) -> Response {
    let why = format!(
        "has ended ({}): there is nothing to cancel.",
        run.status.as_str()
    );
    not_now(run, "Run ended", "ended", &why)
}

/// Asks before it cancels.
pub(crate) async fn cancel_form(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    ask(
        &app,
        &id,
        &headers,
        ("cancel", "Cancel"),
        "Cancelled, it takes no further step, and its trace ends with who cancelled it. A request it has already sent is not taken back.",
        |run| run.status.is_finished().then(|| ended(run)),
    )
    .await
}

/// Asks before `action` (its name and its button): the confirmation with
/// its form token, or why the run is not in a state for it (`refused`).
async fn ask(
    app: &App,
    id: &str,
    headers: &HeaderMap,
    (action, label): (&str, &str),
    says: &str,
    refused: fn(&StoredRun) -> Option<Response>,
) -> Response {
    let run = match load(app, id).await {
        Ok(run) => run,
        Err(r) => return r,
    };
    if let Some(answer) = refused(&run) {
        return answer;
    }
    confirm(
        app,
        &run,
        action,
        label,
        says,
        &csrf(app, headers, action, &run.id),
    )
}

/// Cancels a run from the page: only with the form's token, as the API
/// does, with the trace saying who did it.
pub(crate) async fn cancel(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Bytes,
) -> Response {
    let run = match posted(&app, &headers, &body, "cancel", &id).await {
        Ok(run) => run,
        Err(r) => return r,
    };
    let who = crate::serve::page::session::who(&app, &headers, client(&extensions));
    match app.worker.cancel(&run, &who).await {
        Ok(true) => crate::serve::page::html::see_other(&format!("/runs/{id}")),
        Ok(false) => match app.worker.runs.store.load(&id).await {
            Ok(Some(now)) => ended(&now),
            _ => ended(&run),
        },
        Err(e) => crate::serve::page::html::problem(503, "Run", &e),
    }
}

/// The key a run's retry is started under: one retry per run.
fn retry_key(run: &StoredRun) -> IdempotencyKey {
    IdempotencyKey {
        scope: format!("page/retry/{}", run.flow),
        key: run.id.clone(),
        fingerprint: None,
    }
}

/// The run a run's retry started, if it was retried.
pub(crate) async fn retried_as(app: &App, run: &StoredRun) -> Option<String> {
    if !retriable(run) {
        return None;
    }
    let key = retry_key(run).hash();
    app.worker.runs.store.keyed(&key).await.ok().flatten()
}

/// Whether a run can be started again: it ended without succeeding.
pub(crate) fn retriable(run: &StoredRun) -> bool {
    matches!(run.status, DurableStatus::Failed | DurableStatus::Canceled)
}

fn not_retriable(run: &StoredRun) -> Response {
    let why = format!(
        "is {}: only a failed or canceled run is started again.",
        run.status.as_str()
    );
    not_now(run, "Not retried", "not-retriable", &why)
}

/// Asks before it starts a run again.
pub(crate) async fn retry_form(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    ask(
        &app,
        &id,
        &headers,
        ("retry", "Retry"),
        "A new run of the flow as it is served now starts with the same inputs (secret ones too, from the store, never shown). This run stays as it is; the new run's trace says it is a retry of this one, and who asked.",
        |run| (!retriable(run)).then(|| not_retriable(run)),
    )
    .await
}

/// Starts a failed or canceled run again with its inputs: only with the
/// form's token; once per run.
pub(crate) async fn retry(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Bytes,
) -> Response {
    let run = match posted(&app, &headers, &body, "retry", &id).await {
        Ok(run) => run,
        Err(r) => return r,
    };
    if !retriable(&run) {
        return not_retriable(&run);
    }
    let loaded = app.loaded();
    let Some(served) = loaded.flows.by_name.get(&run.flow) else {
        return crate::serve::page::html::problem(
            409,
            "Not retried",
            &format!(
                "Flow `{}` is not served any more: nothing was started.",
                run.flow
            ),
        );
    };
    let inputs = match app.worker.runs.inputs_of(&run) {
        Ok(inputs) => inputs,
        Err(e) => return crate::serve::page::html::problem(503, "Not retried", &e),
    };
    let who = crate::serve::page::session::who(&app, &headers, client(&extensions));
    let key = retry_key(&run);
    let started = crate::serve::api::create_run(
        &app,
        served,
        inputs,
        Some(key),
        None,
        Some(format!("retry of run {}, by {who}", run.id)),
    )
    .await;
    match started {
        Ok(crate::serve::api::Started::New(new, _)) => {
            app.worker.say_run(
                &new,
                &run.flow,
                &crate::run::otel::ids::TraceIds::new(&new, None).trace_id,
                format!("started as a retry of run {}, by {who}", run.id),
            );
            crate::serve::page::html::see_other(&format!("/runs/{new}"))
        }
        Ok(crate::serve::api::Started::Existing(existing)) => {
            crate::serve::page::html::see_other(&format!("/runs/{}", existing.id))
        }
        Err(answer) => {
            // The API's problem, read back for a person: its detail and errors.
            let bytes = axum::body::to_bytes((*answer).into_body(), 64 * 1024)
                .await
                .unwrap_or_default();
            let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let mut text = problem["detail"]
                .as_str()
                .unwrap_or("the run could not be started")
                .to_string();
            for e in problem["errors"].as_array().into_iter().flatten() {
                if let Some(e) = e.as_str() {
                    text.push_str("; ");
                    text.push_str(e);
                }
            }
            crate::serve::page::html::problem(
                422,
                "Not retried",
                &format!("{text}. Nothing was started."),
            )
        }
    }
}
