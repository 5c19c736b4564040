//! End to end: the real `handoff` binary against the NWC simulator, over real
//! HTTP on ephemeral loopback ports. The simulator's own state is the judge of
//! what happened: which task was completed, with what, and how many times.
//!
//! Tasks appear after a number of polls, not after a delay, so nothing here
//! depends on how fast the machine is.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::common::{Sim, TOKEN, assert_no_token, config, gets_and_patches, stable, text};
use handoff::sim::shared::SimConfig;
use serde_json::{Value, json};

#[test]
fn the_task_appears_after_two_empty_polls_and_the_instance_resumes() {
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": 2 }));
    let out = sim.run(
        "flows/complete-nwc-task.yaml",
        TOKEN,
        &[&format!("instance_id={instance}"), "poll_interval=20ms"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_no_token(&out, TOKEN);
    insta::assert_snapshot!(stable(&text(&out.stdout), &sim.base));
    let requests = sim.requests();
    assert_eq!(
        gets_and_patches(&requests),
        (4, 1),
        "three polls, one read of the task, one PATCH"
    );
    assert!(requests.iter().all(|r| r["auth"] == "token ok"));
    let task = sim.task(&task);
    assert_eq!(
        (task["completions"].clone(), task["status"].clone()),
        (json!(1), json!("complete"))
    );
    assert_eq!(task["taskAssignments"][0]["outcome"], "Completed");
    let resumed = sim.instance_state(&instance);
    assert_eq!(resumed["status"], "completed");
    assert_eq!(resumed["outcome"], "Completed");
}

#[test]
fn pagination_finds_the_task_on_the_third_page() {
    let sim = Sim::start(SimConfig {
        page_size: 2,
        ..config()
    });
    sim.control(
        "POST",
        "/_sim/instances",
        json!({ "count": 4, "delay": "0s" }),
    );
    // Another assignee's task, which the filter must leave out.
    sim.instance(json!({ "delay": "0s", "assignee": "someone@contoso.com" }));
    let (instance, task) = sim.instance(json!({ "delay": "0s" }));
    let out = sim.run(
        "tests/files/find-by-assignee.yaml",
        TOKEN,
        &[&format!("instance_id={instance}")],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("pages = 3"), "{stdout}");
    assert!(stdout.contains("count = 5"), "{stdout}");
    let lists: Vec<String> = sim
        .requests()
        .iter()
        .filter(|r| r["method"] == "GET")
        .map(|r| r["path"].as_str().unwrap().to_string())
        .filter(|p| p.starts_with("/workflows/v2/tasks?"))
        .collect();
    assert_eq!(lists.len(), 3, "{lists:?}");
    assert!(
        lists[1].ends_with("&skip=2") && lists[2].ends_with("&skip=4"),
        "{lists:?}"
    );
    assert!(
        lists.iter().all(|p| p.contains("status=Active")),
        "the filters ride along: {lists:?}"
    );
    assert_eq!(sim.task(&task)["completions"], 1);
}

#[test]
fn a_wrong_token_fails_the_first_call_with_401_and_never_shows_the_token() {
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s" }));
    let wrong = "canary-wrong-token-77e0";
    let out = sim.run(
        "flows/complete-nwc-task.yaml",
        wrong,
        &[&format!("instance_id={instance}")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_no_token(&out, wrong);
    assert_no_token(&out, TOKEN);
    let stdout = stable(&text(&out.stdout), &sim.base);
    let last = stdout.lines().last().unwrap();
    assert!(
        last.contains("step `find_task`") && last.contains("401"),
        "{last}"
    );
    assert!(
        stdout.contains("hint: 401 means the token is missing, wrong or expired"),
        "{stdout}"
    );
    assert_eq!(sim.requests()[0]["auth"], "wrong token");
    assert_eq!(sim.task(&task)["completionAttempts"], 0);
}

#[test]
fn an_outcome_the_task_does_not_have_fails_before_anything_is_sent() {
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s" }));
    let out = sim.run(
        "flows/complete-nwc-task.yaml",
        TOKEN,
        &[&format!("instance_id={instance}"), "outcome=Complete"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = stable(&text(&out.stdout), &sim.base);
    assert!(!stdout.contains("→ PATCH"), "{stdout}");
    assert!(
        stdout.contains("outcome `Complete` is not one of task `")
            && stdout.contains("outcomes: `Completed`, `Canceled`")
            && stdout.contains("did you mean `Completed`? (nothing was sent)"),
        "{stdout}"
    );
    assert!(
        stdout.lines().last().unwrap().contains("step `complete`"),
        "{stdout}"
    );
    let task = sim.task(&task);
    assert_eq!(
        (
            task["completions"].clone(),
            task["completionAttempts"].clone()
        ),
        (json!(0), json!(0))
    );
    assert_eq!(sim.instance_state(&instance)["status"], "running");
}

/// The second run finds the task closed when it reads it, and sends nothing.
#[test]
fn a_second_completion_with_another_outcome_is_a_clear_conflict_and_sends_nothing() {
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s" }));
    let id = format!("instance_id={instance}");
    let first = sim.run("flows/complete-nwc-task.yaml", TOKEN, &[&id]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stdout));
    let second = sim.run(
        "flows/complete-nwc-task.yaml",
        TOKEN,
        &[&id, "outcome=Canceled"],
    );
    assert_eq!(second.status.code(), Some(1));
    let stdout = stable(&text(&second.stdout), &sim.base);
    assert!(!stdout.contains("→ PATCH"), "{stdout}");
    assert!(
        stdout.contains("is already complete with outcome `Completed`, not `Canceled`"),
        "{stdout}"
    );
    let task = sim.task(&task);
    assert_eq!(
        (
            task["completions"].clone(),
            task["completionAttempts"].clone()
        ),
        (json!(1), json!(1))
    );
    assert_eq!(
        sim.instance_state(&instance)["outcome"],
        "Completed",
        "the first outcome stands"
    );
}

#[test]
fn the_app_token_example_gets_a_token_from_client_credentials() {
    let sim = Sim::new();
    sim.control(
        "POST",
        "/_sim/instances",
        json!({ "count": 3, "delay": "0s" }),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(["--color", "never", "run", "flows/app-token.yaml"])
        .env("NWC_BASE_URL", &sim.base)
        .env("NWC_CLIENT_ID", "sim-client")
        .env("NWC_CLIENT_SECRET", "sim-secret")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("3 active task(s) for svc-worker@contoso.com"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("sim-app-") && !stdout.contains("sim-secret"),
        "{stdout}"
    );
    let requests = sim.requests();
    assert_eq!(
        requests[1]["auth"], "token ok",
        "the issued token is accepted"
    );
}

/// As a user would: `handoff sim` in one process, `handoff run` in another.
#[test]
fn sim_and_run_as_two_processes() {
    let mut sim = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args([
            "sim",
            "--port",
            "0",
            "--seed",
            "9",
            "--task-delay",
            "0s",
            "--instances",
            "1",
            "--no-legacy-task-patch",
        ])
        .env("HANDOFF_SIM_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sim.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    let first = next();
    let base = first
        .strip_prefix("handoff sim listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let instance = loop {
        let line = next();
        if let Some(rest) = line.trim().strip_prefix("instance ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(["--color", "never", "run", "flows/complete-nwc-task.yaml"])
        .args(["--set", &format!("instance_id={instance}")])
        .env("NWC_BASE_URL", &base)
        .env("NWC_TOKEN", TOKEN)
        .output()
        .unwrap();
    // The simulator logs each request on its stdout: the list, the task, then the PATCH.
    let mut request_line = || loop {
        let line = next();
        if line.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
            break line;
        }
    };
    let logged = [request_line(), request_line(), request_line()];
    let _ = sim.kill();
    let _ = sim.wait();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_no_token(&out, TOKEN);
    assert!(
        logged[0].contains("GET /workflows/v2/tasks?workflowInstanceId=")
            && logged[0].contains("→ 200 · token ok"),
        "{logged:?}"
    );
    assert!(
        logged[1].contains("GET /workflows/v2/tasks/") && logged[1].contains("→ 200 · token ok"),
        "{logged:?}"
    );
    assert!(
        logged[2].contains("PATCH /workflows/v2/tasks/")
            && logged[2].contains("/assignments/")
            && logged[2].contains("→ 204 · token ok"),
        "{logged:?}"
    );
    assert!(logged.iter().all(|l| !l.contains(TOKEN)));
}

/// Client credentials as a form, as some clients send them; the token it
/// issues then lists tasks. A wrong secret is a 401 that echoes nothing.
#[test]
fn the_token_endpoint_takes_a_form_and_its_token_works() {
    let sim = Sim::new();
    sim.instance(json!({ "delay": "0s" }));
    let (status, body, listed, wrong) = sim.rt.block_on(async {
        let client = crate::common::client();
        let token = |secret: &str| {
            client
                .post(format!("{}/authentication/v1/token", sim.base))
                .form(&[
                    ("client_id", "sim-client"),
                    ("client_secret", secret),
                    ("grant_type", "client_credentials"),
                ])
                .send()
        };
        let answer = token("sim-secret").await.unwrap();
        let status = answer.status().as_u16();
        let body: serde_json::Value = answer.json().await.unwrap();
        let listed = client
            .get(format!("{}/workflows/v2/tasks?status=active", sim.base))
            .bearer_auth(body["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        let wrong = token("not-the-secret").await.unwrap();
        let wrong = (wrong.status().as_u16(), wrong.text().await.unwrap());
        (status, body, listed, wrong)
    });
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(wrong.0, 401);
    assert!(!wrong.1.contains("not-the-secret"), "{}", wrong.1);
}

/// The reference flow against a simulator whose task-level route is off: a
/// task assigned to a person and to the service account is completed
/// through the service account's assignment; the person's is overridden.
#[test]
fn the_reference_flow_completes_the_service_accounts_assignment_without_the_legacy_route() {
    let sim = Sim::start(SimConfig {
        legacy_task_patch: false,
        ..config()
    });
    let created = sim.control(
        "POST",
        "/_sim/instances",
        json!({ "delay": "0s", "assignees": ["someone@contoso.com", "svc-worker@contoso.com"] }),
    );
    let instance = created["instances"][0]["id"].as_str().unwrap().to_string();
    let task = created["instances"][0]["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    let out = sim.run(
        "flows/complete-nwc-task.yaml",
        TOKEN,
        &[
            &format!("instance_id={instance}"),
            "assignee=svc-worker@contoso.com",
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let t = sim.task(&task);
    let assignments = t["taskAssignments"].as_array().unwrap();
    let by = |who: &str| {
        assignments
            .iter()
            .find(|a| a["assignee"] == who)
            .unwrap()
            .clone()
    };
    assert_eq!(by("svc-worker@contoso.com")["status"], "complete", "{t}");
    assert_eq!(by("svc-worker@contoso.com")["outcome"], "Completed", "{t}");
    assert_eq!(by("someone@contoso.com")["status"], "overridden", "{t}");
    assert_eq!(
        (t["completions"].clone(), t["completionAttempts"].clone()),
        (json!(1), json!(1))
    );
    let patches: Vec<Value> = sim
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert!(
        patches[0]["path"]
            .as_str()
            .unwrap()
            .contains("/assignments/")
    );
    assert_eq!(sim.instance_state(&instance)["status"], "completed");

    // The legacy route is really off: a task-level PATCH is a 404.
    let (instance, task) = sim.instance(json!({ "delay": "0s" }));
    let status = sim.rt.block_on(async {
        crate::common::client()
            .patch(format!("{}/workflows/v1/tasks/{task}", sim.base))
            .bearer_auth(TOKEN)
            .json(&json!({ "outcome": "Completed" }))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 404);
    assert_eq!(sim.instance_state(&instance)["status"], "running");
}

/// `--token-ttl`: an issued app token works until its lifetime has passed on
/// the simulator's clock, then gets 401.
#[test]
fn issued_app_tokens_expire() {
    let clock = Arc::new(handoff::run::clock::VirtualClock::fixed());
    let sim = Sim::start_clocked(
        SimConfig {
            token_ttl: std::time::Duration::from_secs(2),
            ..config()
        },
        clock.clone(),
    );
    let list = |token: &str| {
        sim.rt.block_on(async {
            crate::common::client()
                .get(format!("{}/workflows/v2/tasks", sim.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let answer: Value = sim.rt.block_on(async {
        crate::common::client()
            .post(format!("{}/authentication/v1/token", sim.base))
            .json(&json!({ "client_id": "sim-client", "client_secret": "sim-secret", "grant_type": "client_credentials" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(answer["expires_in"], 2, "{answer}");
    let token = answer["access_token"].as_str().unwrap().to_string();
    assert_eq!(list(&token), 200);
    clock.advance(std::time::Duration::from_millis(1999));
    assert_eq!(list(&token), 200);
    clock.advance(std::time::Duration::from_millis(1));
    assert_eq!(list(&token), 401, "expired at its lifetime");
}

/// Paused means an action failed, not "waiting on a task": it needs
/// `/resolve`. Retry runs it again; fail ends it. Terminate takes the task too.
#[test]
fn instance_statuses_follow_nwc() {
    let sim = Sim::new();
    let (waiting, _) = sim.instance(json!({ "delay": "0s" }));
    assert_eq!(sim.instance_state(&waiting)["status"], "running");
    let (paused, _) = sim.instance(json!({ "delay": "0s", "paused": true }));
    let state = sim.instance_state(&paused);
    assert_eq!(state["status"], "paused");
    assert!(state["actions"][0]["errorMessage"].is_string(), "{state}");
    let post = |path: String, body: Value| {
        sim.rt.block_on(async {
            crate::common::client()
                .post(format!("{}{path}", sim.base))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let resolve = |id: &str, kind: &str| {
        post(
            format!("/workflows/v1/instances/{id}/resolve"),
            json!({ "resolveType": kind, "message": "retried by the test" }),
        )
    };
    assert_eq!(
        resolve(&waiting, "1"),
        409,
        "a running instance has nothing to resolve"
    );
    assert_eq!(resolve(&paused, "1"), 204);
    assert_eq!(sim.instance_state(&paused)["status"], "running");
    let (failing, _) = sim.instance(json!({ "delay": "0s", "paused": true }));
    assert_eq!(resolve(&failing, "3"), 400);
    assert_eq!(resolve(&failing, "2"), 204);
    assert_eq!(sim.instance_state(&failing)["status"], "failed");
    let (ended, task) = sim.instance(json!({ "delay": "0s" }));
    assert_eq!(
        post(
            format!("/workflows/v1/instances/{ended}/terminate"),
            json!({})
        ),
        204
    );
    assert_eq!(sim.instance_state(&ended)["status"], "terminated");
    assert_eq!(sim.task(&task)["status"], "terminated");
}
