//! `handoff serve`, the real binary, against the simulator and loopback
//! servers: runs started by the API and by a webhook, killed with SIGKILL at
//! the worst moments and started again, stopped with SIGTERM, and its access
//! rules. Every wait is for something observable (a log line, the store, the
//! simulator's state), never for a length of time.

use crate::common::{
    Loopback, Served, Sim, TOKEN, assert_clean, flows, json_answer, scratch, until,
};
use handoff::serve::access::sign;
use serde_json::{Value, json};

fn sim_env(sim: &Sim) -> Vec<(&'static str, String)> {
    vec![
        ("NWC_BASE_URL", sim.base.clone()),
        ("NWC_TOKEN", TOKEN.to_string()),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The runs the API lists with a status, up to 500.
fn runs_with(served: &Served, status: &str) -> Vec<Value> {
    let (code, body) = served.json("GET", &format!("/v1/runs?status={status}&limit=500"), None);
    assert_eq!(code, 200, "{body}");
    body["runs"].as_array().unwrap().clone()
}

fn start_run(served: &Served, flow: &str, inputs: Value) -> String {
    let (code, body) = served.json(
        "POST",
        &format!("/v1/flows/{flow}/runs"),
        Some(json!({ "inputs": inputs })),
    );
    assert_eq!(code, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// The outcome a task was completed with.
fn outcome(task: &Value) -> Option<&str> {
    task["taskAssignments"][0]["outcome"].as_str()
}

/// A run's stored trace, as text and as events.
fn trace_of(served: &Served, run: &str) -> (String, Vec<Value>) {
    let (_, _, trace) = served.call("GET", &format!("/v1/runs/{run}/trace"), &[], None);
    let events = trace
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (trace, events)
}

/// How many requests the simulator has matched against the one fault rule
/// set, which matches `times` requests in all (spent rules are dropped).
fn fault_hits(sim: &Sim, times: u64) -> u64 {
    let faults = sim.control("GET", "/_sim/faults", json!(null));
    let left: u64 = faults["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["remaining"].as_u64().unwrap())
        .sum();
    times - left
}

#[test]
fn two_hundred_runs_survive_sigkill_in_timers_requests_and_patches() {
    let sim = Sim::new();
    let dir = scratch("serve-chaos");
    let flows = flows(&dir, &["flows/complete-nwc-task.yaml"]);
    let db = dir.join("handoff.db");
    let env = sim_env(&sim);
    let env = env_refs(&env);
    // Every task list is held: the runs cannot get past their first request.
    sim.control(
        "POST",
        "/_sim/faults",
        json!({ "method": "GET", "path": "/workflows/v2/tasks*", "times": 200, "delay": "60s" }),
    );
    let mut served = Served::start(&flows, &db, &env);
    // Tasks appear after 2 to 6 polls; every third run cancels its task.
    let mut expected = Vec::new();
    for i in 0..200 {
        let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": i % 5 + 2 }));
        let outcome = if i % 3 == 0 { "Canceled" } else { "Completed" };
        let run = start_run(
            &served,
            "complete-nwc-task",
            json!({
                "instance_id": instance,
                "outcome": outcome,
                "poll_interval": "1s",
                "max_tries": 50,
            }),
        );
        expected.push((run, task, outcome));
    }

    // 1. Killed during `get_tasks`: 8 lists held by the simulator (the
    //    default --max-inflight), the other runs queued behind them.
    assert!(
        until(|| fault_hits(&sim, 200) >= 8),
        "the lists were not held"
    );
    served.kill();
    sim.control("DELETE", "/_sim/faults", json!(null));
    served = Served::start(&flows, &db, &env);

    // 2. Killed while runs wait in their timers.
    assert!(
        until(|| runs_with(&served, "waiting").len() >= 20),
        "{} waiting, {} succeeded\n{}",
        runs_with(&served, "waiting").len(),
        runs_with(&served, "succeeded").len(),
        served.log()
    );
    served.kill();
    served = Served::start(&flows, &db, &env);

    // 3. Killed between PATCHes that took effect and their answers.
    sim.control(
        "POST",
        "/_sim/faults",
        json!({ "method": "PATCH", "times": 3, "delay": "60s", "apply": true }),
    );
    assert!(until(|| fault_hits(&sim, 3) >= 2), "no PATCH was held");
    served.kill();
    sim.control("DELETE", "/_sim/faults", json!(null));
    served = Served::start(&flows, &db, &env);

    assert!(
        until(|| runs_with(&served, "succeeded").len() == 200),
        "not every run succeeded: {} waiting, {} running, {} failed\n{}",
        runs_with(&served, "waiting").len(),
        runs_with(&served, "running").len(),
        runs_with(&served, "failed").len(),
        served.log()
    );
    let state = sim.control("GET", "/_sim/state", json!(null));
    let tasks = state["tasks"].as_array().unwrap();
    let (mut resumed, mut found_done) = (0, 0);
    for (run, task, wanted) in &expected {
        let t = tasks.iter().find(|t| t["id"] == task.as_str()).unwrap();
        assert_eq!(t["completions"], 1, "task {task} of run {run}: {t}");
        assert_eq!(outcome(t), Some(*wanted), "task {task} of run {run}: {t}");
        let (_, _, trace) = served.call("GET", &format!("/v1/runs/{run}/trace"), &[], None);
        resumed += usize::from(trace.contains("\"event\":\"run_resumed\""));
        found_done += usize::from(trace.contains("with outcome `"));
        assert_eq!(
            trace.matches("\"event\":\"flow_finished\"").count(),
            1,
            "{trace}"
        );
    }
    assert!(
        resumed >= 3,
        "only {resumed} runs were caught mid-step by a kill"
    );
    // The PATCHes held at the kill had taken effect: their runs, resumed,
    // read the task, found it done, and sent no second PATCH.
    assert!(found_done >= 2, "{found_done} runs found their task done");
    let attempts: u64 = tasks
        .iter()
        .map(|t| t["completionAttempts"].as_u64().unwrap())
        .sum();
    assert_eq!(attempts, 200, "{attempts} completion attempts");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_post_in_flight_at_sigkill_is_in_doubt_and_never_sent_again() {
    let server = Loopback::holding(0, json_answer(201, &json!({ "ok": true })));
    let dir = scratch("serve-doubt");
    let flows = flows(&dir, &["tests/files/durable/post.yaml"]);
    let db = dir.join("handoff.db");
    let env = [("TARGET", server.base.as_str())];
    let mut served = Served::start(&flows, &db, &env);
    let run = start_run(&served, "post-once", json!({}));
    assert!(until(|| server.seen().len() == 1));
    served.kill();
    let served = Served::start(&flows, &db, &env);
    assert!(
        until(|| runs_with(&served, "succeeded").len() == 1),
        "{}",
        served.log()
    );
    let (_, body) = served.json("GET", &format!("/v1/runs/{run}"), None);
    assert_eq!(body["outcome"]["reason"], "result: in_doubt", "{body}");
    let (trace, events) = trace_of(&served, &run);
    assert!(
        trace.contains("\"why\":\"the worker was restarted\""),
        "{trace}"
    );
    assert!(trace.contains("\"error_kind\":\"in_doubt\""), "{trace}");
    assert_eq!(server.seen().len(), 1, "the POST was not sent again");
    // Written ahead: the POST the server held is in the trace, before the
    // restart, and the resumed run says it may have landed.
    let sent = events
        .iter()
        .position(|e| e["event"] == "request_sent" && e["method"] == "POST")
        .expect("the POST sent before the restart is on record");
    let resumed = events
        .iter()
        .position(|e| e["event"] == "run_resumed")
        .unwrap();
    assert!(sent < resumed, "{trace}");
    let unsettled = &events[resumed]["unsettled"];
    assert_eq!(unsettled["method"], "POST", "{trace}");
    assert_eq!(unsettled["seq"], events[sent]["seq"], "{trace}");
    let shown = crate::common::handoff(
        &["runs", "show", &run, "--store", db.to_str().unwrap()],
        &[],
    );
    let shown = crate::common::text(&shown.stdout);
    assert!(
        shown.contains("was sent before the restart; outcome unknown"),
        "{shown}"
    );
}

const HOOK_SECRET: &str = "hook-secret-for-tests-8d2e";

/// A hook call, signed with `secret` unless it is empty.
fn hook(served: &Served, body: &str, secret: &str) -> (u16, Value) {
    let signature = sign(secret.as_bytes(), body.as_bytes());
    let headers: Vec<(&str, &str)> = if secret.is_empty() {
        vec![]
    } else {
        vec![("X-Signature", signature.as_str())]
    };
    let (code, _, text) = served.call(
        "POST",
        "/v1/hooks/inspection-done",
        &headers,
        Some(body.as_bytes()),
    );
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn a_signed_event_starts_one_run_and_bad_events_start_none() {
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": 1 }));
    let dir = scratch("serve-hook");
    let flows = flows(&dir, &["tests/files/serve/inspection-done.yaml"]);
    let db = dir.join("handoff.db");
    let mut env = sim_env(&sim);
    env.push(("HOOK_SECRET", HOOK_SECRET.to_string()));
    let env = env_refs(&env);
    let served = Served::start(&flows, &db, &env);
    let count = || {
        let (_, body) = served.json("GET", "/v1/runs", None);
        body["runs"].as_array().unwrap().len()
    };

    let event = json!({ "delivery": "d-1", "instance": instance, "result": "passed" }).to_string();
    let (code, first) = hook(&served, &event, HOOK_SECRET);
    assert_eq!(code, 201, "{first}");
    // The sender retries the same delivery: the same run, not a second one.
    let (code, again) = hook(&served, &event, HOOK_SECRET);
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(count(), 1);

    let other = json!({ "delivery": "d-2", "instance": instance, "result": "passed" }).to_string();
    for (body, secret, status, code_name) in [
        (other.as_str(), "not-the-secret", 401, "bad_signature"),
        (other.as_str(), "", 401, "unsigned"),
        ("{\"delivery\": \"d-3\", ", HOOK_SECRET, 400, "bad_json"),
        (
            r#"{"delivery": "d-4", "instance": "x", "result": "passed", "tries": "many"}"#,
            HOOK_SECRET,
            422,
            "bad_event",
        ),
        (
            r#"{"delivery": "d-7", "instance": "x", "result": "PASSED"}"#,
            HOOK_SECRET,
            422,
            "bad_event",
        ),
        (
            r#"{"delivery": "d-5", "result": "passed"}"#,
            HOOK_SECRET,
            422,
            "bad_event",
        ),
        (
            r#"{"delivery": "d-6", "instance": "", "result": "passed"}"#,
            HOOK_SECRET,
            422,
            "bad_inputs",
        ),
    ] {
        let (code, problem) = hook(&served, body, secret);
        assert_eq!(
            (code, problem["code"].as_str()),
            (status, Some(code_name)),
            "{body}: {problem}"
        );
        assert!(problem["detail"].is_string(), "{problem}");
    }
    assert_eq!(count(), 1, "no bad event created a run");
    let (code, problem) = served.json("POST", "/v1/hooks/no-such-flow", Some(json!({})));
    assert_eq!(
        (code, problem["code"].as_str()),
        (404, Some("unknown_flow"))
    );

    let id = first["id"].as_str().unwrap().to_string();
    assert!(until(|| served
        .json("GET", &format!("/v1/runs/{id}"), None)
        .1["status"]
        == "succeeded"));
    let t = sim.task(&task);
    assert_eq!(
        (t["completions"].as_u64(), outcome(&t)),
        (Some(1), Some("Completed")),
        "{t}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_api_wants_its_token_in_the_header_and_nowhere_else() {
    const API_TOKEN: &str = "api-token-for-tests-51c0ffee";
    let dir = scratch("serve-auth");
    let flows = flows(&dir, &["tests/files/durable/post.yaml"]);
    let db = dir.join("handoff.db");
    let served = Served::start(
        &flows,
        &db,
        &[
            ("HANDOFF_API_TOKEN", API_TOKEN),
            ("TARGET", "http://127.0.0.1:9"),
        ],
    );
    let bearer = format!("Bearer {API_TOKEN}");
    let wrong = format!("Bearer {API_TOKEN}x");
    for (path, headers) in [
        ("/v1/runs", vec![]),
        ("/v1/runs", vec![("Authorization", wrong.as_str())]),
        ("/v1/runs", vec![("Authorization", API_TOKEN)]),
        (&*format!("/v1/runs?access_token={API_TOKEN}"), vec![]),
        (
            &*format!("/v1/runs?token={API_TOKEN}"),
            vec![("Authorization", bearer.as_str())],
        ),
        ("/metrics", vec![]),
    ] {
        let (code, answer_headers, body) = served.call("GET", path, &headers, None);
        assert_eq!(code, 401, "{path} {headers:?}: {body}");
        assert!(
            !body.contains(API_TOKEN) && !body.contains("51c0ffee"),
            "{body}"
        );
        assert!(
            answer_headers
                .iter()
                .any(|(n, v)| n == "www-authenticate" && v == "Bearer")
        );
    }
    let (code, _, body) = served.call("POST", "/v1/flows/post-once/runs", &[], Some(b"{}"));
    assert_eq!(code, 401, "{body}");
    // A hook without a signature rule needs the token too.
    let (code, _, body) = served.call("POST", "/v1/hooks/post-once", &[], Some(b"{}"));
    assert_eq!(code, 401, "{body}");
    let (code, _, body) = served.call("GET", "/v1/runs", &[("Authorization", &bearer)], None);
    assert_eq!(code, 200, "{body}");
    let (code, _, _) = served.call("GET", "/healthz", &[], None);
    assert_eq!(code, 200, "health needs no token");
    assert!(!served.log().contains(API_TOKEN));

    // Listening beyond loopback without a token is refused before it starts,
    // and so is a token too short to be one.
    let refused = |listen: &str, token: &str| {
        let store = db.to_str().unwrap();
        let args = [
            "serve",
            flows.to_str().unwrap(),
            "--listen",
            listen,
            "--store",
            store,
        ];
        let out = crate::common::handoff(&args, &[("HANDOFF_API_TOKEN", token)]);
        assert_eq!(out.status.code(), Some(2));
        crate::common::text(&out.stderr)
    };
    let said = refused("0.0.0.0:0", "");
    assert!(said.contains("needs an API token"), "{said}");
    let said = refused("127.0.0.1:0", "short");
    assert!(
        said.contains("shorter than 16 characters") && !said.contains("short`"),
        "{said}"
    );
}

#[test]
fn sigterm_stops_cleanly_and_a_run_resumes_on_the_version_it_started_with() {
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": 1 }));
    let dir = scratch("serve-version");
    let flows = flows(&dir, &["flows/complete-nwc-task.yaml"]);
    let db = dir.join("handoff.db");
    let env = sim_env(&sim);
    let env = env_refs(&env);
    // The first task list takes 5 s: SIGTERM arrives while it is in flight,
    // with room to spare on a loaded machine.
    sim.control(
        "POST",
        "/_sim/faults",
        json!({ "method": "GET", "path": "/workflows/v2/tasks*", "delay": "5s" }),
    );
    let mut served = Served::start(&flows, &db, &env);
    let run = start_run(
        &served,
        "complete-nwc-task",
        json!({ "instance_id": instance, "poll_interval": "2s" }),
    );
    assert!(until(|| fault_hits(&sim, 1) == 1));
    let (_, before) = served.json("GET", &format!("/v1/runs/{run}"), None);
    // The step in flight ends and is checkpointed; then the worker exits 0.
    assert_eq!(served.terminate(), Some(0), "{}", served.log());
    assert!(
        served
            .log()
            .contains("stopped; unfinished runs go on at the next start"),
        "{}",
        served.log()
    );
    let listed = crate::common::handoff(&["runs", "--store", db.to_str().unwrap()], &[]);
    let listed = crate::common::text(&listed.stdout);
    // Stopped after the list, before the next step: still running, at `read_id`.
    let line = listed.lines().find(|l| l.starts_with(&run)).unwrap_or("");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words.get(1..4),
        Some(&["running", "complete-nwc-task", "read_id"][..]),
        "{listed}"
    );

    // The file changes while the worker is down: the waiting run keeps its version.
    let file = flows.join("complete-nwc-task.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("outcome: \"{{ outcome }}\"", "outcome: Canceled"),
    )
    .unwrap();
    let served = Served::start(&flows, &db, &env);
    assert!(
        until(|| runs_with(&served, "succeeded").len() == 1),
        "{}",
        served.log()
    );
    let (_, after) = served.json("GET", &format!("/v1/runs/{run}"), None);
    assert_eq!(after["flow_version"], before["flow_version"]);
    let (_, _, trace) = served.call("GET", &format!("/v1/runs/{run}/trace"), &[], None);
    assert!(
        trace.contains("\"event\":\"run_resumed\",\"at_step\":\"read_id\""),
        "{trace}"
    );
    // The list before the stop; after it, the list that finds the task, the
    // read of the task and the PATCH.
    assert_eq!(
        trace.matches("\"event\":\"request_sent\"").count(),
        4,
        "{trace}"
    );
    let t = sim.task(&task);
    assert_eq!(
        (t["completions"].as_u64(), outcome(&t)),
        (Some(1), Some("Completed")),
        "{t}"
    );
    // A new run gets the new version.
    let (instance, task) = sim.instance(json!({ "delay": "0s" }));
    let second = start_run(
        &served,
        "complete-nwc-task",
        json!({ "instance_id": instance }),
    );
    assert!(
        until(|| runs_with(&served, "succeeded").len() == 2),
        "{}",
        served.log()
    );
    let (_, newer) = served.json("GET", &format!("/v1/runs/{second}"), None);
    assert_ne!(newer["flow_version"], before["flow_version"]);
    assert_eq!(outcome(&sim.task(&task)), Some("Canceled"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn runs_are_listed_paged_followed_and_canceled() {
    let sim = Sim::new();
    let dir = scratch("serve-api");
    let flows = flows(&dir, &["flows/complete-nwc-task.yaml"]);
    let db = dir.join("handoff.db");
    let env = sim_env(&sim);
    let env = env_refs(&env);
    let served = Served::start(&flows, &db, &env);
    // Tasks that never appear: the runs wait until canceled.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (instance, _) = sim.instance(json!({ "delay": "0s", "after_polls": 1000 }));
        ids.push(start_run(
            &served,
            "complete-nwc-task",
            json!({ "instance_id": instance, "poll_interval": "1h", "max_tries": 2 }),
        ));
    }
    assert!(until(|| runs_with(&served, "waiting").len() == 3));
    let (_, page) = served.json("GET", "/v1/runs?limit=2", None);
    assert_eq!(page["runs"].as_array().unwrap().len(), 2);
    let next = page["next_before"].as_str().unwrap();
    let (_, rest) = served.json("GET", &format!("/v1/runs?limit=2&before={next}"), None);
    let mut seen: Vec<String> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["runs"].as_array().unwrap())
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    seen.reverse();
    assert_eq!(seen, ids, "newest first, every run once");
    let waiting = &runs_with(&served, "waiting")[0];
    assert!(
        waiting["wake_at"].is_string() && waiting["step"] == "wait",
        "{waiting}"
    );

    // A follower, reading before the cancel, sees the run end when it is
    // canceled: the trace's one ending.
    let id = ids[0].clone();
    let base = served.base.clone();
    let (reading, first) = std::sync::mpsc::channel();
    let (ended, whole) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut answer = reqwest::get(format!("{base}/v1/runs/{id}/trace?follow=true"))
                .await
                .unwrap();
            let mut text = String::new();
            while let Ok(Some(chunk)) = answer.chunk().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                let _ = reading.send(());
            }
            let _ = ended.send(text);
        })
    });
    first
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the follower reads the trace so far");
    let (code, canceled) = served.json("POST", &format!("/v1/runs/{}/cancel", ids[0]), None);
    assert_eq!(
        (code, canceled["status"].as_str()),
        (200, Some("canceled")),
        "{canceled}"
    );
    let trace = whole
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the follower's stream ends with the run");
    let events: Vec<Value> = trace
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    assert!(trace.contains("\"event\":\"timer_started\""), "{trace}");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "flow_finished", "{trace}");
    assert_eq!(last["status"], "canceled", "{trace}");
    assert_eq!(last["reason"], "canceled by the API", "{trace}");
    assert_eq!(
        trace.matches("\"event\":\"flow_finished\"").count(),
        1,
        "{trace}"
    );
    assert!(
        until(|| served
            .log()
            .contains(&format!("run {} (complete-nwc-task) canceled", ids[0]))),
        "{}",
        served.log()
    );
    // `runs show` ends with the same closing line.
    let shown = crate::common::handoff(
        &["runs", "show", &ids[0], "--store", db.to_str().unwrap()],
        &[],
    );
    let shown = crate::common::text(&shown.stdout);
    let closing = shown.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    assert!(closing.contains("canceled by the API"), "{shown}");
    let (code, again) = served.json("POST", &format!("/v1/runs/{}/cancel", ids[0]), None);
    assert_eq!((code, again["code"].as_str()), (409, Some("finished")));
    for (path, code) in [
        ("/v1/runs/nope", 404),
        ("/v1/runs?status=sleeping", 400),
        ("/v1/flows/nope/runs", 405),
    ] {
        assert_eq!(served.json("GET", path, None).0, code, "{path}");
    }
    let (code, problem) = served.json(
        "POST",
        "/v1/flows/complete-nwc-task/runs",
        Some(json!({ "inputs": { "instance_id": "x", "max_tries": "lots" } })),
    );
    assert_eq!(code, 422, "{problem}");
    assert!(
        problem["errors"][0].as_str().unwrap().contains("max_tries"),
        "{problem}"
    );
    let (_, _, metrics) = served.call("GET", "/metrics", &[], None);
    assert!(
        metrics.contains("handoff_runs{flow=\"complete-nwc-task\",status=\"waiting\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("handoff_runs{flow=\"complete-nwc-task\",status=\"canceled\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "handoff_http_requests_total{{host=\"{}\",status=\"200\"}} 3",
            sim.base.trim_start_matches("http://")
        )),
        "{metrics}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn at_most_max_inflight_requests_go_to_one_host() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    // Each request is held until the test lets it go, so any beyond the
    // limit would be at the server together with the held ones.
    let released = Arc::new((Mutex::new(0usize), Condvar::new()));
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let server = {
        let (released, now, most) = (released.clone(), now.clone(), most.clone());
        Loopback::start(move |n, _| {
            let inside = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(inside, Ordering::SeqCst);
            let (lock, go) = &*released;
            let mut count = lock.lock().unwrap();
            while *count <= n {
                count = go.wait(count).unwrap();
            }
            now.fetch_sub(1, Ordering::SeqCst);
            json_answer(200, &json!({ "pong": n }))
        })
    };
    let dir = scratch("serve-inflight");
    let flows = flows(&dir, &["tests/files/serve/ping.yaml"]);
    let db = dir.join("handoff.db");
    let env = [("TARGET", server.base.as_str())];
    let served = Served::start_with(&flows, &db, &env, &["--max-inflight", "2"]);
    for _ in 0..6 {
        start_run(&served, "ping", json!({}));
    }
    for k in 0..6 {
        // Two are in flight (fewer at the end); then one is let go.
        assert!(
            until(|| server.seen().len() >= (k + 2).min(6)),
            "{}",
            served.log()
        );
        assert!(now.load(Ordering::SeqCst) <= 2);
        let (lock, go) = &*released;
        *lock.lock().unwrap() += 1;
        go.notify_all();
    }
    assert!(
        until(|| runs_with(&served, "succeeded").len() == 6),
        "{}",
        served.log()
    );
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "never more than --max-inflight"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The push pattern end to end: the simulator's instances play NAC's "Call a
/// web service – Wait for callback", POSTing to `serve`'s hook with the
/// worker's API token and a callback URL. `flows/callback-worker.yaml` asks
/// an inspection service (a loopback server here), then calls back with the
/// branch, and each instance continues down it. No task, no polling.
#[test]
fn nac_calls_the_worker_and_its_callback_moves_the_instance_on() {
    const API_TOKEN: &str = "api-token-for-callbacks-7e57";
    let sim = Sim::start(handoff::sim::shared::SimConfig {
        legacy_task_patch: false,
        ..crate::common::config()
    });
    let inspections = Loopback::start(|_, seen| {
        let passed = seen.target.ends_with("/c-ok");
        json_answer(200, &json!({ "passed": passed }))
    });
    let dir = scratch("serve-callback");
    let flows = flows(&dir, &["flows/callback-worker.yaml"]);
    let db = dir.join("handoff.db");
    let served = Served::start(
        &flows,
        &db,
        &[
            ("HANDOFF_API_TOKEN", API_TOKEN),
            ("NWC_BASE_URL", sim.base.as_str()),
            ("NWC_TOKEN", TOKEN),
            ("INSPECT_URL", inspections.base.as_str()),
        ],
    );
    let hook = format!("{}/v1/hooks/callback-worker", served.base);
    let call_out = |container: &str| {
        let created = sim.control(
            "POST",
            "/_sim/instances",
            json!({
                "callout": { "url": hook, "headers": { "Authorization": format!("Bearer {API_TOKEN}") } },
                "start_data": { "container": container },
            }),
        );
        created["instances"][0]["id"].as_str().unwrap().to_string()
    };
    let (ok, bad) = (call_out("c-ok"), call_out("c-bad"));
    let ended = |id: &str| sim.instance_state(id)["status"] == "completed";
    assert!(until(|| ended(&ok) && ended(&bad)), "{}", served.log());
    for (id, branch) in [(&ok, "Completed"), (&bad, "Canceled")] {
        let state = sim.instance_state(id);
        assert_eq!(state["outcome"], branch, "{state}");
        assert_eq!(state["callout"]["calledBack"], 1, "{state}");
        let answers = state["callout"]["answers"].as_array().unwrap();
        assert_eq!(
            answers.len(),
            1,
            "the hook took the call-out at once: {state}"
        );
        assert!(answers[0].as_str().unwrap().starts_with('2'), "{state}");
    }
    // The callbacks went with the NWC token, and nothing listed or PATCHed a task.
    let requests = sim.requests();
    let callbacks: Vec<&Value> = requests
        .iter()
        .filter(|r| r["path"].as_str().unwrap().contains("/callbacks/"))
        .collect();
    assert_eq!(callbacks.len(), 2, "{requests:?}");
    assert!(
        callbacks
            .iter()
            .all(|r| r["auth"] == "token ok" && r["status"] == 204)
    );
    assert!(
        requests.iter().all(|r| !r["path"]
            .as_str()
            .unwrap()
            .starts_with("/workflows/v2/tasks")),
        "{requests:?}"
    );
    // The instance moves on when the callback is answered; the run that sent
    // it records its ending just after: wait for both endings.
    let bearer = format!("Bearer {API_TOKEN}");
    let succeeded = || {
        let (code, _, listed) = served.call(
            "GET",
            "/v1/runs?status=succeeded",
            &[("Authorization", bearer.as_str())],
            None,
        );
        assert_eq!(code, 200, "{listed}");
        let listed: Value = serde_json::from_str(&listed).unwrap();
        listed["runs"].as_array().unwrap().len()
    };
    assert!(until(|| succeeded() == 2), "{}", served.log());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Forty runs of an app flow under one `serve` share its managed token:
/// the simulator sees one token request, however the runs interleave.
#[test]
fn runs_under_serve_share_one_app_token() {
    let sim = Sim::new();
    let dir = scratch("serve-app-token");
    let flows = flows(&dir, &["tests/files/app-complete.yaml"]);
    let db = dir.join("handoff.db");
    let served = Served::start(
        &flows,
        &db,
        &[
            ("NWC_BASE_URL", sim.base.as_str()),
            ("NWC_CLIENT_ID", "sim-client"),
            ("NWC_CLIENT_SECRET", "sim-secret"),
        ],
    );
    let created = sim.control(
        "POST",
        "/_sim/instances",
        json!({ "count": 40, "delay": "0s" }),
    );
    for i in created["instances"].as_array().unwrap() {
        start_run(&served, "app-complete", json!({ "instance_id": i["id"] }));
    }
    assert!(
        until(|| runs_with(&served, "succeeded").len() == 40),
        "{}",
        served.log()
    );
    let requests = sim.requests();
    let tokens = requests
        .iter()
        .filter(|r| r["path"] == "/authentication/v1/token")
        .count();
    assert_eq!(tokens, 1, "one token for all runs");
    let patches = requests.iter().filter(|r| r["method"] == "PATCH").count();
    assert_eq!(patches, 40);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The newcomer's case: kill -9 while NWC holds the PATCH that completes
/// the task (it lands, its answer never comes). The PATCH was put on record
/// before it went, so after the restart the trace shows it, says it may
/// have landed, and then shows how the resumed run settled it.
#[test]
fn a_patch_held_at_sigkill_stays_in_the_trace_and_is_settled_after() {
    let sim = Sim::new();
    let dir = scratch("serve-patch-ahead");
    let flows = flows(&dir, &["flows/complete-nwc-task.yaml"]);
    let db = dir.join("handoff.db");
    let env = sim_env(&sim);
    let env = env_refs(&env);
    sim.control(
        "POST",
        "/_sim/faults",
        json!({ "method": "PATCH", "path": "/workflows/*", "delay": "600s" }),
    );
    let mut served = Served::start(&flows, &db, &env);
    let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": 0 }));
    let run = start_run(
        &served,
        "complete-nwc-task",
        json!({ "instance_id": instance }),
    );
    // The PATCH has reached the simulator, which applied it and holds the answer.
    assert!(until(|| fault_hits(&sim, 1) == 1), "{}", served.log());
    served.kill();
    let served = Served::start(&flows, &db, &env);
    assert!(
        until(|| runs_with(&served, "succeeded").len() == 1),
        "{}",
        served.log()
    );
    assert_eq!(outcome(&sim.task(&task)), Some("Completed"));
    let (trace, events) = trace_of(&served, &run);
    let patches: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["event"] == "request_sent" && e["method"] == "PATCH")
        .map(|(i, _)| i)
        .collect();
    let resumed = events
        .iter()
        .position(|e| e["event"] == "run_resumed")
        .expect("the run was resumed");
    // One PATCH reached the simulator (it still holds its answer), and the
    // resumed run found the task complete, so it sent none again.
    assert_eq!(fault_hits(&sim, 1), 1);
    assert_eq!(
        patches.len(),
        1,
        "the trace has the PATCH the simulator holds: {trace}"
    );
    assert!(patches[0] < resumed, "{trace}");
    assert_eq!(events[resumed]["unsettled"]["method"], "PATCH", "{trace}");
    assert_eq!(
        events[resumed]["unsettled"]["seq"],
        events[patches[0]]["seq"]
    );
    assert!(
        events[resumed..].iter().any(|e| e["event"] == "log"
            && e["message"]
                .as_str()
                .unwrap_or("")
                .contains("already complete")),
        "{trace}"
    );
    assert_eq!(events.last().unwrap()["event"], "flow_finished");
    assert_eq!(events.last().unwrap()["status"], "succeeded");
    assert_clean(TOKEN, &[("trace", &trace)]);
}

/// serve.md's signing example, as written: the shipped
/// `flows/signed/inspection-done.yaml`, a body signed with the shared
/// secret as the page's `openssl` line signs it, posted to the hook; the run
/// completes the task once, and the same event again starts no second run.
#[test]
fn the_documented_signed_hook_completes_the_task() {
    const SECRET: &str = "docs-hook-secret-3f9a1c";
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": 0 }));
    let dir = scratch("serve-signed-docs");
    let db = dir.join("handoff.db");
    let mut env = sim_env(&sim);
    env.push(("HANDOFF_HOOK_SECRET", SECRET.to_string()));
    let env = env_refs(&env);
    let served = Served::start(std::path::Path::new("flows/signed"), &db, &env);
    let body = format!(r#"{{"eventId": "e-1", "instanceId": "{instance}", "passed": true}}"#);
    let signature = sign(SECRET.as_bytes(), body.as_bytes());
    let post = || {
        served.call(
            "POST",
            "/v1/hooks/inspection-done",
            &[("X-Signature", signature.as_str())],
            Some(body.as_bytes()),
        )
    };
    let (code, _, answer) = post();
    assert_eq!(code, 201, "{answer}");
    assert!(
        until(|| runs_with(&served, "succeeded").len() == 1),
        "{}",
        served.log()
    );
    assert_eq!(outcome(&sim.task(&task)), Some("Completed"));
    let (code, _, again) = post();
    assert_eq!(code, 200, "{again}");
    assert_eq!(runs_with(&served, "succeeded").len(), 1);
    assert_clean(SECRET, &[("log", &served.log())]);
}

/// A run waiting in its timer when the worker stops, woken by the next
/// worker, says so in its trace where it goes on.
#[test]
fn a_run_woken_after_a_restart_says_so() {
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": 1 }));
    let dir = scratch("serve-woken-restart");
    let flows = flows(&dir, &["flows/complete-nwc-task.yaml"]);
    let db = dir.join("handoff.db");
    let env = sim_env(&sim);
    let env = env_refs(&env);
    let mut served = Served::start(&flows, &db, &env);
    let run = start_run(
        &served,
        "complete-nwc-task",
        json!({ "instance_id": instance, "poll_interval": "2s" }),
    );
    assert!(until(|| runs_with(&served, "waiting").len() == 1));
    assert_eq!(served.terminate(), Some(0), "{}", served.log());
    let served = Served::start(&flows, &db, &env);
    assert!(
        until(|| runs_with(&served, "succeeded").len() == 1),
        "{}",
        served.log()
    );
    assert_eq!(outcome(&sim.task(&task)), Some("Completed"));
    let (trace, events) = trace_of(&served, &run);
    let timer = events
        .iter()
        .position(|e| e["event"] == "timer_started")
        .unwrap();
    let resumed = events
        .iter()
        .position(|e| e["event"] == "run_resumed")
        .expect("the trace says the run went on in another worker");
    assert!(timer < resumed, "{trace}");
    assert!(
        events[resumed]["why"]
            .as_str()
            .unwrap()
            .contains("woken from its wait by a worker started after it began waiting"),
        "{trace}"
    );
}

/// Runs that poll wake in the worker that parked them: each wait lets go of
/// its run in its checkpoint, the scheduler takes it again when it is due
/// (sometimes before the turn that parked it has quite ended), and no run
/// is lost, run twice, or said to have resumed after a restart.
#[test]
fn polling_runs_wake_in_their_worker_and_never_say_they_resumed() {
    let sim = Sim::new();
    let dir = scratch("serve-polls");
    let flows = flows(&dir, &["flows/complete-nwc-task.yaml"]);
    let db = dir.join("handoff.db");
    let env = sim_env(&sim);
    let env = env_refs(&env);
    let served = Served::start(&flows, &db, &env);
    let mut expected = Vec::new();
    for i in 0..40 {
        let polls = i % 4 + 1;
        let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": polls }));
        let run = start_run(
            &served,
            "complete-nwc-task",
            json!({ "instance_id": instance, "poll_interval": "1ms", "max_tries": 50 }),
        );
        expected.push((run, task, polls));
    }
    assert!(
        until(|| runs_with(&served, "succeeded").len() == expected.len()),
        "{}",
        served.log()
    );
    for (run, task, polls) in &expected {
        assert_eq!(sim.task(task)["completions"], 1, "{run}");
        let (trace, events) = trace_of(&served, run);
        assert!(!trace.contains("\"event\":\"run_resumed\""), "{trace}");
        let waited = events
            .iter()
            .filter(|e| e["event"] == "timer_started")
            .count();
        assert_eq!(waited as u64, *polls, "{trace}");
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{trace}");
    }
}

/// `--max-running 2`: five runs started at once, each held by the server in
/// its one request, have exactly two requests in flight; let go, all five
/// end, never more than two at a time.
#[test]
fn max_running_caps_the_runs_taking_steps_at_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let server = {
        let (gate, now, most) = (gate.clone(), now.clone(), most.clone());
        Loopback::start(move |_, _| {
            let inside = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(inside, Ordering::SeqCst);
            let (open, turn) = &*gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = turn.wait(open).unwrap();
            }
            drop(open);
            now.fetch_sub(1, Ordering::SeqCst);
            json_answer(201, &json!({ "ok": true }))
        })
    };
    let dir = scratch("serve-max-running");
    let flows = flows(&dir, &["tests/files/durable/post.yaml"]);
    let db = dir.join("handoff.db");
    let env = [("TARGET", server.base.as_str())];
    let served = Served::start_with(&flows, &db, &env, &["--max-running", "2"]);
    let runs: Vec<String> = (0..5)
        .map(|_| start_run(&served, "post-once", json!({})))
        .collect();
    // Two requests arrive and are held; the other three runs wait their turn.
    assert!(until(|| server.seen().len() == 2), "{}", served.log());
    let (_, waiting) = served.json("GET", "/v1/runs?status=running", None);
    assert_eq!(waiting["runs"].as_array().unwrap().len(), 5, "{waiting}");
    {
        let (open, turn) = &*gate;
        *open.lock().unwrap() = true;
        turn.notify_all();
    }
    assert!(
        until(|| runs_with(&served, "succeeded").len() == 5),
        "{}",
        served.log()
    );
    assert_eq!(server.seen().len(), 5, "each run sent its POST once");
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "never more than two at once"
    );
    for run in runs {
        let (_, body) = served.json("GET", &format!("/v1/runs/{run}"), None);
        assert_eq!(body["outcome"]["reason"], "result: sent", "{body}");
    }
}

/// `--threads N` runs the same runs on a runtime of N threads (two by
/// default; one is a runtime of another kind): each sends its request once
/// and ends, and no N below one is taken.
#[test]
fn runs_go_the_same_on_one_thread_or_several() {
    let dir = scratch("serve-threads");
    let flows = flows(&dir, &["tests/files/durable/post.yaml"]);
    for threads in ["1", "3"] {
        let server = Loopback::start(|_, _| json_answer(201, &json!({ "ok": true })));
        let db = dir.join(format!("handoff-{threads}.db"));
        let env = [("TARGET", server.base.as_str())];
        let served = Served::start_with(&flows, &db, &env, &["--threads", threads]);
        let list = json!({ "runs": (0..40).map(|_| json!({ "inputs": {} })).collect::<Vec<_>>() });
        let (code, made) = served.json("POST", "/v1/flows/post-once/runs", Some(list));
        assert_eq!(code, 201, "{made}");
        assert!(
            until(|| runs_with(&served, "succeeded").len() == 40),
            "{}",
            served.log()
        );
        assert_eq!(server.seen().len(), 40, "each run sent its POST once");
    }
    let refused =
        crate::common::handoff(&["serve", flows.to_str().unwrap(), "--threads", "0"], &[]);
    assert_eq!(refused.status.code(), Some(2));
    let said = crate::common::text(&refused.stderr);
    assert!(said.contains("--threads"), "{said}");
}

/// A run's secret is sealed once, when the run is made: its inputs, and its
/// state after its last checkpoint, hold the same sealed text, started alone
/// or in bulk, and neither holds the token.
#[test]
fn a_runs_token_is_sealed_once_from_its_start_to_its_end() {
    let sim = Sim::new();
    let (alone_at, _) = sim.instance(json!({ "delay": "0s" }));
    let (bulk_at, _) = sim.instance(json!({ "delay": "0s" }));
    let dir = scratch("serve-sealed-once");
    let flows = flows(&dir, &["flows/complete-nwc-task.yaml"]);
    let db = dir.join("handoff.db");
    let env = sim_env(&sim);
    let served = Served::start(&flows, &db, &env_refs(&env));
    let alone = start_run(
        &served,
        "complete-nwc-task",
        json!({ "instance_id": alone_at }),
    );
    let list = json!({ "runs": [{ "inputs": { "instance_id": bulk_at } }] });
    let (code, made) = served.json("POST", "/v1/flows/complete-nwc-task/runs", Some(list));
    assert_eq!(code, 201, "{made}");
    let bulk = made["runs"][0]["id"].as_str().unwrap().to_string();
    assert!(
        until(|| runs_with(&served, "succeeded").len() == 2),
        "{}",
        served.log()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for run in [alone, bulk] {
        let stored = rt.block_on(async {
            use handoff::store::Store;
            let store = handoff::store::sqlite::SqliteStore::open(&db)
                .await
                .unwrap();
            store.load(&run).await.unwrap().unwrap()
        });
        let inputs: Value = serde_json::from_str(&stored.inputs).unwrap();
        let state: Value = serde_json::from_str(&stored.state).unwrap();
        assert!(inputs["token"]["$sealed"].is_string(), "{inputs}");
        assert_eq!(state["fields"]["token"], inputs["token"], "{run}");
        assert_eq!(state["fields"]["http_result"], 204, "{state}");
        assert!(!stored.inputs.contains(TOKEN) && !stored.state.contains(TOKEN));
    }
}

/// A bulk start: many runs in one call, checked first and kept in one
/// transaction. Sent again, it starts nothing new; a bad item or a
/// conflicting key starts none of the list.
#[test]
fn a_bulk_start_makes_many_runs_in_one_call_or_none() {
    let server = Loopback::start(|_, _| json_answer(201, &json!({ "ok": true })));
    let dir = scratch("serve-bulk");
    let flows = flows(&dir, &["tests/files/durable/post.yaml"]);
    let db = dir.join("handoff.db");
    let env = [("TARGET", server.base.as_str())];
    let served = Served::start(&flows, &db, &env);
    let list = json!({ "runs": [
        { "inputs": {} },
        { "inputs": {}, "idempotency_key": "job-1" },
        { "inputs": {}, "idempotency_key": "job-2" },
    ]});
    let (code, made) = served.json("POST", "/v1/flows/post-once/runs", Some(list.clone()));
    assert_eq!(code, 201, "{made}");
    let runs = made["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r["replayed"] == false), "{made}");
    assert!(
        until(|| runs_with(&served, "succeeded").len() == 3),
        "{}",
        served.log()
    );
    assert_eq!(server.seen().len(), 3);
    // The keyed ones again: the same runs, nothing new.
    let keyed = json!({ "runs": [
        { "inputs": {}, "idempotency_key": "job-1" },
        { "inputs": {}, "idempotency_key": "job-2" },
    ]});
    let (code, again) = served.json("POST", "/v1/flows/post-once/runs", Some(keyed));
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["runs"][0]["id"], runs[1]["id"]);
    assert_eq!(again["runs"][1]["replayed"], true);
    // A bad item: 422 naming it, and no run of the list starts.
    let bad = json!({ "runs": [
        { "inputs": {} },
        { "inputs": { "result": "not an input" } },
    ]});
    let (code, problem) = served.json("POST", "/v1/flows/post-once/runs", Some(bad));
    assert_eq!(code, 422, "{problem}");
    assert_eq!(problem["errors"][0]["index"], 1, "{problem}");
    // A key that started a run with other inputs: 409 naming it, and none
    // of the list starts.
    let (_, listed) = served.json("GET", "/v1/runs?limit=500", None);
    let before = listed["runs"].as_array().unwrap().len();
    let clash = json!({ "runs": [
        { "inputs": { "job": 7 } },
        { "inputs": { "job": 2 }, "idempotency_key": "job-1" },
    ]});
    let (code, problem) = served.json("POST", "/v1/flows/post-once/runs", Some(clash));
    assert_eq!(code, 409, "{problem}");
    assert_eq!(problem["code"], "idempotency_conflict");
    assert_eq!(problem["index"], 1, "{problem}");
    let (_, listed) = served.json("GET", "/v1/runs?limit=500", None);
    assert_eq!(listed["runs"].as_array().unwrap().len(), before);
    // A header key with a list is refused.
    let (code, _, text) = served.call(
        "POST",
        "/v1/flows/post-once/runs",
        &[("Idempotency-Key", "k")],
        Some(br#"{"runs": [{"inputs": {}}]}"#),
    );
    assert_eq!(code, 422, "{text}");
    assert_eq!(runs_with(&served, "succeeded").len(), 3);
    assert_eq!(server.seen().len(), 3, "each run sent its POST once");
}
