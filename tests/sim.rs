//! End to end: the real `handoff` binary against the NWC simulator, over real
//! HTTP on ephemeral loopback ports. The simulator's own state is the judge of
//! what happened: which task was completed, with what, and how many times.
//!
//! Tasks appear after a number of polls, not after a delay, so nothing here
//! depends on how fast the machine is.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Sim, TOKEN, assert_no_token, config, gets_and_patches, stable, text};
use handoff::sim::SimConfig;
use serde_json::json;

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
        (3, 1),
        "three polls, one PATCH"
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
fn an_outcome_the_task_does_not_have_is_a_clear_400() {
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s" }));
    let out = sim.run(
        "flows/complete-nwc-task.yaml",
        TOKEN,
        &[&format!("instance_id={instance}"), "outcome=Approved"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = stable(&text(&out.stdout), &sim.base);
    assert!(stdout.contains("← 400 Bad Request"), "{stdout}");
    assert!(
        stdout
            .contains("outcome `Approved` is not one of the task's outcomes: Completed, Canceled"),
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
        (json!(0), json!(1))
    );
    assert_eq!(sim.instance_state(&instance)["status"], "running");
}

#[test]
fn a_second_completion_is_a_clear_409_and_the_task_stays_completed_once() {
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
    assert!(stdout.contains("← 409 Conflict"), "{stdout}");
    assert!(
        stdout.contains("is already complete with outcome `Completed`"),
        "{stdout}"
    );
    let task = sim.task(&task);
    assert_eq!(
        (
            task["completions"].clone(),
            task["completionAttempts"].clone()
        ),
        (json!(1), json!(2))
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
    // The simulator logs each request on its stdout: the list, then the PATCH.
    let mut request_line = || loop {
        let line = next();
        if line.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
            break line;
        }
    };
    let logged = [request_line(), request_line()];
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
        logged[1].contains("PATCH /workflows/v1/tasks/") && logged[1].contains("→ 204 · token ok"),
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
        let client = common::client();
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
