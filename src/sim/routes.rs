//! The NWC side of the simulator: the paths a worker calls, answered as
//! `../shared/reference/nwc-tasks-api.md` describes them.
//!
//! The bearer check happens once, in `sim::observe`, before a handler runs.
//! Each handler takes the world's lock just long enough to read or change it,
//! and builds its answer after letting go.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Response, StatusCode, Uri, header};
use serde_json::{Value, json};

use crate::sim::answer::{json_response, json_text, problem_response};
use crate::sim::model::{InstanceSpec, Problem, TaskQuery, instance_json, task_json, timestamp};
use crate::sim::shared::Shared;

fn answer(result: Result<Response<Body>, Problem>) -> Response<Body> {
    result.unwrap_or_else(|p| problem_response(&p))
}

/// How a request authenticated, for the handler and for the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Missing,
    Wrong,
    Ok,
}

impl Auth {
    pub fn label(self) -> &'static str {
        match self {
            Auth::Missing => "no token",
            Auth::Wrong => "wrong token",
            Auth::Ok => "token ok",
        }
    }
}

pub fn classify(shared: &Shared, headers: &HeaderMap) -> Auth {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Auth::Missing;
    };
    let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return Auth::Wrong;
    };
    let token = token.trim();
    if token == shared.config.token {
        return Auth::Ok;
    }
    let now = shared.clock.now();
    match shared.lock_tokens().get(token) {
        Some(expires) if *expires > now => Auth::Ok,
        _ => Auth::Wrong,
    }
}

/// The 401 for a request that did not authenticate.
pub fn refusal(auth: Auth) -> Option<Problem> {
    match auth {
        Auth::Ok => None,
        Auth::Missing => Some(Problem::new(
            401,
            "Unauthorized",
            "the request has no `Authorization: Bearer …` header",
        )),
        Auth::Wrong => Some(Problem::new(
            401,
            "Unauthorized",
            "the bearer token is not valid or has expired",
        )),
    }
}

use crate::run::transport::decode_pairs;

/// `POST /authentication/v1/token`: client credentials, as JSON or a form.
pub async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    answer(issue_token(&shared, &headers, &body))
}

fn issue_token(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response<Body>, Problem> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let pairs: Vec<(String, String)> = if is_form {
        decode_pairs(&String::from_utf8_lossy(body))
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| (k, v.as_str().map(str::to_string).unwrap_or_default()))
                .collect(),
            _ => {
                return Err(Problem::bad_request(
                    "send client_id, client_secret and grant_type as JSON or as a form",
                ));
            }
        }
    };
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    if get("grant_type") != Some("client_credentials") {
        return Err(Problem::bad_request(
            "`grant_type` must be `client_credentials`",
        ));
    }
    if get("client_id") != Some(shared.config.client_id.as_str())
        || get("client_secret") != Some(shared.config.client_secret.as_str())
    {
        return Err(Problem::new(
            401,
            "Unauthorized",
            "unknown client or wrong client secret",
        ));
    }
    let now = shared.clock.now();
    let lifetime = shared.config.token_ttl;
    let expires = now + lifetime;
    let token = shared
        .lock_world()
        .ids
        .token(&shared.config.issued_token_prefix);
    shared.lock_tokens().insert(token.clone(), expires);
    Ok(json_response(
        200,
        &json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": if lifetime.subsec_nanos() == 0 { json!(lifetime.as_secs()) } else { json!(lifetime.as_secs_f64()) },
            "expires_at": timestamp(expires),
            "scope": "workflows tasks",
        }),
    ))
}

/// `POST /workflows/v1/designs/{id}/instances`.
pub async fn start_instance(
    State(shared): State<Arc<Shared>>,
    Path(design): Path<String>,
    body: Bytes,
) -> Response<Body> {
    answer((|| {
        let start_data = if body.is_empty() {
            json!({})
        } else {
            let value: Value = serde_json::from_slice(&body)
                .map_err(|_| Problem::bad_request("the body is not JSON"))?;
            value.get("startData").cloned().unwrap_or(json!({}))
        };
        let mut spec = InstanceSpec::new(shared.config.task_delay);
        spec.workflow_id = design;
        spec.start_data = start_data;
        let now = shared.clock.now();
        let (id, _) = shared.lock_world().start_instance(spec, now);
        Ok(json_response(201, &json!({ "id": id })))
    })())
}

/// `GET /workflows/v2/instances/{id}`.
pub async fn get_instance(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Response<Body> {
    answer((|| {
        let value = instance_json(shared.lock_world().instance(&id)?);
        Ok(json_response(200, &value))
    })())
}

/// `GET /workflows/v2/tasks`: filtered, windowed, paged by `nextLink`.
pub async fn list_tasks(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response<Body> {
    answer((|| {
        let pairs = decode_pairs(uri.query().unwrap_or(""));
        let query = TaskQuery::parse(&pairs)?;
        let now = shared.clock.now();
        let page = shared.lock_world().list_tasks(&query, now);
        // Built by hand from the tasks' cached JSON; see `Task::cached_json`.
        let mut body =
            String::with_capacity(page.tasks.iter().map(|t| t.len() + 1).sum::<usize>() + 64);
        body.push_str("{\"tasks\":[");
        for (i, task) in page.tasks.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(task);
        }
        body.push(']');
        if let Some(skip) = page.next_skip {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map_or_else(|| shared.addr.to_string(), str::to_string);
            let mut next = reqwest::Url::parse(&format!("http://{host}{}", uri.path()))
                .map_err(|_| Problem::bad_request("the Host header is not valid"))?;
            next.query_pairs_mut()
                .extend_pairs(pairs.iter().filter(|(k, _)| k != "skip"))
                .append_pair("skip", &skip.to_string());
            body.push_str(",\"nextLink\":");
            body.push_str(&Value::String(next.to_string()).to_string());
        }
        body.push('}');
        Ok(json_text(200, body))
    })())
}

/// `GET /workflows/v2/tasks/{id}`.
pub async fn get_task(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response<Body> {
    answer((|| {
        let now = shared.clock.now();
        let value = task_json(shared.lock_world().task(&id, now)?);
        Ok(json_response(200, &value))
    })())
}

/// `PATCH /workflows/v1/tasks/{id}` and `PATCH /workflows/v2/tasks/{id}`:
/// the task-level form, applied to the active assignment, unless the
/// simulator was started with `--no-legacy-task-patch`.
pub async fn complete_task(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    uri: Uri,
    body: Bytes,
) -> Response<Body> {
    if !shared.config.legacy_task_patch {
        return problem_response(&Problem::not_found(format!(
            "the simulator has no route for `PATCH {}`: task-level completion is off (--no-legacy-task-patch); complete through `/workflows/v2/tasks/{{id}}/assignments/{{assignmentId}}`",
            uri.path()
        )));
    }
    answer(complete(&shared, &id, None, &body))
}

/// The body of an instance call: JSON, or nothing.
fn json_body(body: &[u8]) -> Result<Value, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|_| Problem::bad_request("the body is not JSON"))
}

/// `POST /workflows/v1/instances/{id}/resolve` with `{"resolveType": "1"|"2", "message"}`.
pub async fn resolve_instance(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response<Body> {
    answer((|| {
        let value = json_body(&body)?;
        let kind = match value.get("resolveType") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(Problem::bad_request(
                    "the body needs `resolveType`: \"1\" or \"2\"",
                ));
            }
        };
        let now = shared.clock.now();
        shared.lock_world().resolve(&id, &kind, now)?;
        Ok(no_content())
    })())
}

/// `POST /workflows/v1/instances/{id}/terminate`.
pub async fn terminate_instance(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Response<Body> {
    answer((|| {
        let now = shared.clock.now();
        shared.lock_world().terminate(&id, now)?;
        Ok(no_content())
    })())
}

/// `POST /workflows/v1/instances/{id}/callbacks/{callbackId}` with
/// `{"outcome": "Completed"}`: the "Wait for callback" action goes on down
/// that branch. The route and body are this simulator's assumption.
pub async fn callback(
    State(shared): State<Arc<Shared>>,
    Path((id, callback_id)): Path<(String, String)>,
    body: Bytes,
) -> Response<Body> {
    answer((|| {
        let value = json_body(&body)?;
        let outcome = value
            .get("outcome")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Problem::bad_request("the callback needs `outcome`, the branch to take")
            })?;
        let now = shared.clock.now();
        shared
            .lock_world()
            .call_back(&id, &callback_id, outcome, now)?;
        Ok(no_content())
    })())
}

fn no_content() -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// `PATCH /workflows/v2/tasks/{id}/assignments/{aid}`.
pub async fn complete_assignment(
    State(shared): State<Arc<Shared>>,
    Path((id, aid)): Path<(String, String)>,
    body: Bytes,
) -> Response<Body> {
    answer(complete(&shared, &id, Some(&aid), &body))
}

fn complete(
    shared: &Shared,
    task_id: &str,
    assignment_id: Option<&str>,
    body: &[u8],
) -> Result<Response<Body>, Problem> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        Problem::bad_request("the body must be JSON such as {\"outcome\": \"Completed\"}")
    })?;
    let outcome = value
        .get("outcome")
        .and_then(Value::as_str)
        .ok_or_else(|| Problem::bad_request("the body has no `outcome`"))?;
    let now = shared.clock.now();
    let config = &shared.config;
    let mut world = shared.lock_world();
    world.complete(task_id, assignment_id, outcome, now, config.conflict_status)?;
    if config.complete_status == 204 {
        drop(world);
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        return Ok(r);
    }
    let task = task_json(world.task(task_id, now)?);
    drop(world);
    Ok(json_response(config.complete_status, &task))
}

pub async fn not_found(uri: Uri) -> Response<Body> {
    problem_response(&Problem::not_found(format!(
        "the simulator has no route for `{}`",
        uri.path()
    )))
}

/// The OpenAPI description of the part of NWC the simulator imitates
/// (`apis/nwc-workflow.openapi.yaml`), as JSON. Public, like NWC's token
/// endpoint: it holds no data.
pub async fn openapi() -> Response<Body> {
    static DOCUMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let yaml = include_str!("../../apis/nwc-workflow.openapi.yaml");
        serde_saphyr::from_str::<Value>(yaml)
            .map(|v| v.to_string())
            .unwrap_or_else(|e| json!({ "error": e.to_string() }).to_string())
    });
    json_text(200, DOCUMENT.clone())
}
