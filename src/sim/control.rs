//! Control endpoints, under `/_sim/`, outside the NWC paths: create waiting
//! instances, arm faults, read the state and the request log. They take no
//! token: the simulator is a local test double.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Response, Uri};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::run::transport::decode_pairs;
use crate::sim::answer::{json_response, problem_response};
use crate::sim::faults::{Fault, FaultSpec};
use crate::sim::model::{InstanceSpec, Problem, instance_json, task_json, timestamp};
use crate::sim::shared::Shared;

/// `POST /_sim/instances`. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInstances {
    count: Option<u32>,
    /// When NWC creates each task, after the start: `2s`, `0s`.
    delay: Option<String>,
    /// Task lists that still miss the task once it exists.
    after_polls: Option<u32>,
    assignee: Option<String>,
    assignees: Option<Vec<String>>,
    outcomes: Option<Vec<String>>,
    workflow_name: Option<String>,
    /// How long ago the instances started: `40d` puts them outside the 30-day window.
    age: Option<String>,
    start_data: Option<Value>,
    /// Paused on a failed action, needing `/resolve`, as NWC's default error handling does.
    paused: Option<bool>,
    /// "Call a web service – Wait for callback": no task; the instance calls
    /// this worker URL and waits on its callback.
    callout: Option<CalloutSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalloutSpec {
    url: String,
    /// Sent with the call-out, such as the worker's `Authorization`.
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

const MAX_NEW: u32 = 100_000;

fn parse_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Problem::bad_request(format!("the body: {e}")))
}

fn duration(key: &str, text: Option<&str>) -> Result<Option<std::time::Duration>, Problem> {
    text.map(|t| {
        crate::language::duration::parse_duration(t)
            .map_err(|e| Problem::bad_request(format!("`{key}`: {e}")))
    })
    .transpose()
}

pub async fn create_instances(State(shared): State<Arc<Shared>>, body: Bytes) -> Response<Body> {
    let result = (|| {
        let req: NewInstances = parse_body(&body)?;
        let count = req.count.unwrap_or(1);
        if count == 0 || count > MAX_NEW {
            return Err(Problem::bad_request(format!(
                "`count` must be 1 to {MAX_NEW}"
            )));
        }
        let mut spec = InstanceSpec::new(
            duration("delay", req.delay.as_deref())?.unwrap_or(shared.config.task_delay),
        );
        spec.after_polls = req.after_polls.unwrap_or(0);
        spec.age = duration("age", req.age.as_deref())?.unwrap_or_default();
        if let Some(a) = req.assignees.or(req.assignee.map(|a| vec![a])) {
            if a.is_empty() {
                return Err(Problem::bad_request("`assignees` cannot be empty"));
            }
            spec.assignees = a;
        }
        if let Some(o) = req.outcomes {
            if o.is_empty() {
                return Err(Problem::bad_request("`outcomes` cannot be empty"));
            }
            spec.outcomes = o;
        }
        if let Some(n) = req.workflow_name {
            spec.workflow_name = n;
        }
        if let Some(d) = req.start_data {
            spec.start_data = d;
        }
        spec.paused = req.paused.unwrap_or(false);
        let now = shared.clock.now();
        if let Some(callout) = req.callout {
            let url = reqwest::Url::parse(&callout.url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    Problem::bad_request("`callout.url` must be an http or https URL")
                })?;
            let headers: Vec<(String, String)> = callout.headers.into_iter().collect();
            let mut world = shared.lock_world();
            let mut created = Vec::new();
            let mut ids = Vec::new();
            for _ in 0..count {
                let (id, callback_id) =
                    world.start_callout(spec.clone(), url.to_string(), headers.clone(), now);
                created.push(json!({
                    "id": id,
                    "callbackUrl": format!("http://{}{}", shared.addr, crate::sim::callouts::callback_path(&id, &callback_id)),
                }));
                ids.push(id);
            }
            drop(world);
            crate::sim::callouts::call_out(shared.clone(), shared.client(), ids);
            return Ok(json_response(201, &json!({ "instances": created })));
        }
        let mut world = shared.lock_world();
        let mut created = Vec::new();
        for _ in 0..count {
            let (id, task_id) = world.start_instance(spec.clone(), now);
            let task = world.tasks.last().expect("just pushed");
            created.push(json!({
                "id": id,
                "taskId": task_id,
                "assignmentIds": task.assignments.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
                "taskAppearsAt": timestamp(task.created),
                "afterPolls": task.hidden_polls,
            }));
        }
        drop(world);
        Ok(json_response(201, &json!({ "instances": created })))
    })();
    result.unwrap_or_else(|p| problem_response(&p))
}

/// `GET /_sim/state`: every instance and task, tasks not yet created
/// included, with how often each was completed.
pub async fn state(State(shared): State<Arc<Shared>>) -> Response<Body> {
    json_response(200, &state_json(&shared))
}

pub fn state_json(shared: &Shared) -> Value {
    let now = shared.clock.now();
    let world = shared.lock_world();
    let instances: Vec<Value> = world.instances.iter().map(instance_json).collect();
    let tasks: Vec<Value> = world
        .tasks
        .iter()
        .map(|t| {
            let mut v = task_json(t);
            v["exists"] = Value::Bool(t.exists(now));
            v["hiddenPolls"] = json!(t.hidden_polls);
            v["completions"] = json!(t.completions);
            v["completionAttempts"] = json!(t.completion_attempts);
            v
        })
        .collect();
    drop(world);
    json!({ "instances": instances, "tasks": tasks, "requests": shared.log.total() })
}

pub async fn add_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> Response<Body> {
    let result = (|| {
        let spec: FaultSpec = serde_json::from_slice(&body)
            .map_err(|e| Problem::bad_request(format!("the fault: {e}")))?;
        let mut faults = shared.lock_faults();
        let id = faults.iter().map(|f| f.id).max().unwrap_or(0) + 1;
        let fault = Fault::new(id, spec)?;
        let value = fault.json();
        faults.push(fault);
        Ok(json_response(201, &value))
    })();
    result.unwrap_or_else(|p| problem_response(&p))
}

pub async fn list_faults(State(shared): State<Arc<Shared>>) -> Response<Body> {
    let faults: Vec<Value> = shared.lock_faults().iter().map(Fault::json).collect();
    json_response(200, &json!({ "faults": faults }))
}

pub async fn clear_faults(State(shared): State<Arc<Shared>>) -> Response<Body> {
    let cleared = std::mem::take(&mut *shared.lock_faults()).len();
    json_response(200, &json!({ "cleared": cleared }))
}

/// `GET /_sim/requests[?since=SEQ]`.
pub async fn requests(State(shared): State<Arc<Shared>>, uri: Uri) -> Response<Body> {
    let since = decode_pairs(uri.query().unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "since")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    json_response(200, &json!({ "requests": shared.log.since(since) }))
}

pub async fn health() -> Response<Body> {
    json_response(200, &json!({ "ok": true }))
}
