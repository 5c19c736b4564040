//! End to end: the real `handoff` binary against the NWC simulator, over real
//! HTTP on ephemeral loopback ports. The simulator's own state is the judge of
//! what happened: which task was completed, with what, and how many times.
//!
//! Tasks appear after a number of polls, not after a delay, so nothing here
//! depends on how fast the machine is.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use handoff::clock::VirtualClock;
use handoff::sim::{self, SimConfig, SimServer};
use serde_json::{Value, json};

const TOKEN: &str = "canary-sim-token-5c1d";

/// A simulator on its own runtime, so the test thread can run the binary.
struct Sim {
    rt: tokio::runtime::Runtime,
    server: Option<SimServer>,
    base: String,
}

impl Sim {
    fn start(config: SimConfig) -> Sim {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt
            .block_on(sim::start(
                config,
                Arc::new(VirtualClock::fixed()),
                "127.0.0.1:0".parse().unwrap(),
            ))
            .unwrap();
        let base = server.base_url.clone();
        Sim {
            rt,
            server: Some(server),
            base,
        }
    }

    fn new() -> Sim {
        Sim::start(config())
    }

    /// Calls a control endpoint over HTTP.
    fn control(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let client = reqwest::Client::new();
            let request = match method {
                "POST" => client.post(url).json(&body),
                _ => client.get(url),
            };
            request.send().await.unwrap().json().await.unwrap()
        })
    }

    /// Starts one waiting instance; returns its id and its task's id.
    fn instance(&self, spec: Value) -> (String, String) {
        let created = self.control("POST", "/_sim/instances", spec);
        let first = &created["instances"][0];
        (
            first["id"].as_str().unwrap().to_string(),
            first["taskId"].as_str().unwrap().to_string(),
        )
    }

    fn task(&self, task_id: &str) -> Value {
        let state = self.control("GET", "/_sim/state", json!(null));
        state["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == task_id)
            .cloned()
            .unwrap()
    }

    fn instance_state(&self, id: &str) -> Value {
        let state = self.control("GET", "/_sim/state", json!(null));
        state["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["instanceId"] == id)
            .cloned()
            .unwrap()
    }

    fn requests(&self) -> Vec<Value> {
        let log = self.control("GET", "/_sim/requests", json!(null));
        log["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| !r["path"].as_str().unwrap().starts_with("/_sim/"))
            .cloned()
            .collect()
    }

    fn run(&self, flow: &str, token: &str, sets: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff"));
        cmd.args(["--color", "never", "run", flow])
            .env("NWC_BASE_URL", &self.base)
            .env("NWC_TOKEN", token);
        for set in sets {
            cmd.args(["--set", set]);
        }
        cmd.output().unwrap()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.stop());
        }
    }
}

fn config() -> SimConfig {
    SimConfig {
        token: TOKEN.to_string(),
        seed: 42,
        ..SimConfig::default()
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Real runs print real times and the simulator's port; nothing else varies.
fn stable(text: &str, base: &str) -> String {
    let text = text.replace(base, "http://sim");
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let line = match trimmed.split_once("s  ") {
            Some((time, rest)) if time.parse::<f64>().is_ok() => format!("  T  {rest}"),
            _ => line.to_string(),
        };
        // A response line ends with its real duration, when it took 1ms or more.
        let line = match line.rsplit_once("  (") {
            Some((head, tail))
                if tail
                    .strip_suffix(')')
                    .is_some_and(|d| handoff::clock::parse_duration(d).is_ok()) =>
            {
                head.to_string()
            }
            _ => line,
        };
        let line = match line.rfind(" · ") {
            Some(i) if handoff::clock::parse_duration(&line[i + " · ".len()..]).is_ok() => {
                format!("{} · T", &line[..i])
            }
            _ => line,
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn assert_no_token(out: &Output, token: &str) {
    for stream in [&out.stdout, &out.stderr] {
        assert!(!text(stream).contains(token), "the token leaked");
    }
}

fn gets_and_patches(requests: &[Value]) -> (usize, usize) {
    let count = |m: &str| requests.iter().filter(|r| r["method"] == m).count();
    (count("GET"), count("PATCH"))
}

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
