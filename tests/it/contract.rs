//! `apis/nwc-workflow.openapi.yaml` against the simulator, both ways: every
//! answer the simulator gives (success and failure, on every route it
//! serves) matches the description, and every request handoff's NWC steps
//! send is one the description declares. Then the reference completion
//! written with `call:` operations sends the same requests as the NWC steps.

use handoff::language::openapi::{Api, Operation};
use serde_json::{Value, json};

use crate::common::{Sim, TOKEN, config, scratch, text};

/// The description as the simulator serves it, loaded as a flow would,
/// from a folder of the test's own (`name`): two tests at once in one
/// folder each removed the other's file while it was read.
fn served_description(sim: &Sim, name: &str) -> Api {
    let (status, body) = call(sim, "GET", "/openapi.json", None, None);
    assert_eq!(status, 200);
    let path = scratch(name).join("nwc.openapi.json");
    std::fs::write(&path, body.to_string()).unwrap();
    let api = Api::load(&path, "nwc.openapi.json").unwrap_or_else(|e| panic!("{}", e.message));
    let file = std::fs::read_to_string("apis/nwc-workflow.openapi.yaml").unwrap();
    let ids: Vec<&str> = api.operation_ids().collect();
    assert!(
        ids.len() >= 9 && file.contains("x-evidence: guess"),
        "{ids:?}"
    );
    api
}

/// The operation a request is, by method and path template.
fn operation(api: &Api, method: &str, path: &str) -> std::sync::Arc<Operation> {
    let path = path.split('?').next().unwrap();
    let segments: Vec<&str> = path.split('/').collect();
    api.operation_ids()
        .map(|id| api.operation(id).unwrap().unwrap())
        .find(|op| {
            let template: Vec<&str> = op.path.split('/').collect();
            op.method == method
                && template.len() == segments.len()
                && template
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
        })
        .unwrap_or_else(|| panic!("the description has no operation for {method} {path}"))
}

fn call(
    sim: &Sim,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let url = if path.starts_with("http") {
        path.to_string()
    } else {
        format!("{}{path}", sim.base)
    };
    sim.rt.block_on(async {
        let client = crate::common::client();
        let mut request = client.request(method.parse().unwrap(), url);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text(&bytes)))
        };
        (status, value)
    })
}

/// Checks one answer: its status is declared, and its body matches the schema.
fn assert_answer_matches(api: &Api, method: &str, path: &str, status: u16, body: &Value) {
    let op = operation(api, method, path);
    let Some(declared) = op.response_for(status) else {
        panic!(
            "{} answered {status}, which the description does not declare",
            op.id
        )
    };
    if let (Some(schema), false) = (&declared.schema, body.is_null()) {
        let problems = api.check(schema, body).unwrap();
        assert!(
            problems.is_empty(),
            "{} {status}: {problems:?}\n{body}",
            op.id
        );
    }
}

#[test]
fn every_answer_of_the_simulator_matches_the_description() {
    let sim = Sim::start(handoff::sim::shared::SimConfig {
        page_size: 2,
        ..config()
    });
    let api = served_description(&sim, "contract-pages");
    sim.control(
        "POST",
        "/_sim/instances",
        json!({ "count": 5, "delay": "0s" }),
    );
    let (instance, task) = sim.instance(json!({ "delay": "0s" }));
    let (_, other_task) = sim.instance(json!({ "delay": "0s" }));
    let task_state = sim.task(&task);
    let assignment = task_state["taskAssignments"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = Some(TOKEN);
    let mut answers: Vec<(String, String, u16, Value)> = Vec::new();
    let mut ask = |method: &str, path: &str, body: Option<Value>, token: Option<&str>| {
        let (status, value) = call(&sim, method, path, body, token);
        answers.push((method.to_string(), path.to_string(), status, value.clone()));
        (status, value)
    };
    ask(
        "POST",
        "/authentication/v1/token",
        Some(
            json!({ "client_id": "sim-client", "client_secret": "sim-secret", "grant_type": "client_credentials" }),
        ),
        None,
    );
    ask(
        "POST",
        "/authentication/v1/token",
        Some(
            json!({ "client_id": "nobody", "client_secret": "wrong", "grant_type": "client_credentials" }),
        ),
        None,
    );
    ask(
        "GET",
        &format!("/workflows/v2/tasks?workflowInstanceId={instance}"),
        None,
        t,
    );
    // Pages: follow `nextLink` to the end.
    let (_, mut page) = ask("GET", "/workflows/v2/tasks?status=active", None, t);
    let mut pages = 1;
    while let Some(next) = page["nextLink"].as_str().map(str::to_string) {
        let base = sim.base.clone();
        page = ask("GET", next.trim_start_matches(&base), None, t).1;
        pages += 1;
    }
    assert!(pages >= 3, "{pages} pages");
    ask("GET", "/workflows/v2/tasks?from=not-a-date", None, t);
    ask("GET", "/workflows/v2/tasks", None, Some("wrong-token"));
    ask("GET", &format!("/workflows/v2/tasks/{task}"), None, t);
    ask("GET", "/workflows/v2/tasks/no-such-task", None, t);
    ask(
        "GET",
        &format!("/workflows/v2/instances/{instance}"),
        None,
        t,
    );
    ask("GET", "/workflows/v2/instances/no-such-instance", None, t);
    let complete = format!("/workflows/v2/tasks/{task}/assignments/{assignment}");
    ask("PATCH", &complete, Some(json!({ "outcome": "Nope" })), t);
    ask(
        "PATCH",
        &complete,
        Some(json!({ "outcome": "Completed" })),
        t,
    );
    ask(
        "PATCH",
        &complete,
        Some(json!({ "outcome": "Canceled" })),
        t,
    );
    ask(
        "PATCH",
        &format!("/workflows/v1/tasks/{other_task}"),
        Some(json!({ "outcome": "Completed" })),
        t,
    );
    ask(
        "PATCH",
        "/workflows/v2/tasks/no-such-task",
        Some(json!({ "outcome": "Completed" })),
        t,
    );
    let (_, started) = ask(
        "POST",
        "/workflows/v1/designs/design-1/instances",
        Some(json!({ "startData": { "container": "C-1" } })),
        t,
    );
    let started = started["id"].as_str().unwrap().to_string();
    ask(
        "POST",
        &format!("/workflows/v1/instances/{started}/resolve"),
        Some(json!({ "resolveType": "1", "message": "retry" })),
        t,
    );
    ask(
        "POST",
        &format!("/workflows/v1/instances/{started}/terminate"),
        None,
        t,
    );
    ask(
        "POST",
        "/workflows/v1/instances/no-such-instance/terminate",
        None,
        t,
    );
    let statuses: std::collections::BTreeSet<u16> = answers.iter().map(|a| a.2).collect();
    for wanted in [200, 201, 204, 400, 401, 404, 409] {
        assert!(statuses.contains(&wanted), "no {wanted} among {statuses:?}");
    }
    for (method, path, status, body) in &answers {
        assert_answer_matches(&api, method, path, *status, body);
    }
}

/// What a run sent, from its JSONL trace: method, path and query, body.
fn sent(trace: &str, base: &str) -> Vec<(String, String, Option<Value>)> {
    trace
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "request_sent")
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_string(),
                e["url"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches(base)
                    .to_string(),
                e.get("body").cloned(),
            )
        })
        .collect()
}

fn run_against(sim: &Sim, flow: &str, instance: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(["--color", "never", "run", flow, "--trace", "jsonl"])
        .args([
            "--set",
            &format!("instance_id={instance}"),
            "--set",
            "poll_interval=1s",
        ])
        .env("NWC_BASE_URL", &sim.base)
        .env("NWC_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn every_request_of_the_nwc_steps_is_one_the_description_declares() {
    let sim = Sim::new();
    let api = served_description(&sim, "contract-requests");
    let (instance, _) = sim.instance(json!({ "delay": "0s", "after_polls": 2 }));
    let trace = run_against(&sim, "flows/complete-nwc-task.yaml", &instance);
    let requests = sent(&trace, &sim.base);
    assert_eq!(requests.len(), 5, "{requests:?}");
    for (method, path, body) in &requests {
        let op = operation(&api, method, path);
        if let Some((_, query)) = path.split_once('?') {
            for (name, _) in url_pairs(query) {
                assert!(
                    op.params.iter().any(|p| p.name == name),
                    "{} has no parameter `{name}`",
                    op.id
                );
            }
        }
        if let (Some(body), Some(schema)) = (body, op.body.as_ref().and_then(|b| b.schema.as_ref()))
        {
            let problems = api.check(schema, body).unwrap();
            assert!(problems.is_empty(), "{}: {problems:?}", op.id);
        }
    }
    // Both ways: the answers the run got match too.
    for r in sim.requests() {
        assert!(r["status"].as_u64().is_some_and(|s| s < 300), "{r}");
    }
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_completion_written_with_call_sends_what_the_nwc_steps_send() {
    let by_steps = Sim::new();
    let (instance, task) = by_steps.instance(json!({ "delay": "0s", "after_polls": 1 }));
    let steps_trace = run_against(&by_steps, "flows/complete-nwc-task.yaml", &instance);
    // A simulator with the same seed makes the same ids.
    let by_call = Sim::new();
    let (same_instance, same_task) = by_call.instance(json!({ "delay": "0s", "after_polls": 1 }));
    assert_eq!((&instance, &task), (&same_instance, &same_task));
    let call_trace = run_against(
        &by_call,
        "tests/files/openapi/complete-with-call.yaml",
        &instance,
    );
    let docs = std::fs::read_to_string("docs/steps.md").unwrap();
    let file = std::fs::read_to_string("tests/files/openapi/complete-with-call.yaml").unwrap();
    assert!(
        docs.contains(&file),
        "docs/steps.md shows another flow than the one tested"
    );
    let steps_sent = sent(&steps_trace, &by_steps.base);
    let call_sent = sent(&call_trace, &by_call.base);
    assert_eq!(steps_sent.len(), 4, "{steps_sent:?}");
    assert_eq!(steps_sent, call_sent);
    assert!(
        call_trace.contains(r#""event":"operation_called","operation":"nwc.completeAssignment""#)
    );
    for sim in [&by_steps, &by_call] {
        let done = sim.task(&task);
        assert_eq!(done["completions"], 1);
        assert_eq!(done["taskAssignments"][0]["outcome"], "Completed");
    }
}
