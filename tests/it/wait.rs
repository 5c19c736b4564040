//! `wait_for` under `handoff serve`, through the real binary: the shipped
//! approval flow posts its resume URL to a loopback chat, waits as a row,
//! and is resumed by that URL, once; a forged URL, a used one and one whose
//! wait timed out are refused; the API signals by name; and a signal that
//! comes while no worker runs is taken at the next start.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::{Loopback, Served, json_answer, until};

/// A chat webhook that keeps what it is sent.
fn chat() -> Loopback {
    Loopback::start(|_, _| json_answer(200, &json!({ "ok": true })))
}

/// The resume URL's path in the chat message the run posted.
fn resume_path(chat: &Loopback, served: &Served) -> String {
    assert!(until(|| !chat.seen().is_empty()), "nothing was posted");
    let body: Value = serde_json::from_slice(&chat.seen()[0].body).unwrap();
    let text = body["text"].as_str().unwrap().to_string();
    let at = text
        .find(&served.base)
        .unwrap_or_else(|| panic!("no URL in {text}"));
    let url = text[at..].split_whitespace().next().unwrap();
    url.strip_prefix(&served.base).unwrap().to_string()
}

fn start(served: &Served, flow: &str, inputs: Value) -> String {
    let (status, run) = served.json(
        "POST",
        &format!("/v1/flows/{flow}/runs"),
        Some(json!({ "inputs": inputs })),
    );
    assert!(matches!(status, 200..=202), "{status} {run}");
    run["id"].as_str().unwrap().to_string()
}

fn run(served: &Served, id: &str) -> Value {
    served.json("GET", &format!("/v1/runs/{id}"), None).1
}

fn serve(dir: &Path, files: &[&str], env: &[(&str, &str)]) -> Served {
    let flows = crate::common::flows(dir, files);
    Served::start(&flows, &dir.join("handoff.db"), env)
}

#[test]
fn the_approval_is_resumed_by_its_url_once_and_a_forged_url_opens_nothing() {
    let chat = chat();
    let hook = format!("{}/hooks/approvals", chat.base);
    let dir = crate::common::scratch("wait-approval");
    let served = serve(&dir, &["flows/approval.yaml"], &[("CHAT_WEBHOOK", &hook)]);
    let id = start(&served, "approval", json!({ "request_id": "PR-1" }));
    let path = resume_path(&chat, &served);
    assert!(until(|| run(&served, &id)["status"] == "waiting"));
    let waiting = run(&served, &id);
    assert_eq!(waiting["waiting_for"], "approval", "{waiting}");
    assert!(waiting["wake_at"].is_string(), "{waiting}");

    // Altered in any way, the URL is refused before anything is read.
    let mut forged = path.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let (status, answer) = served.json(
        "POST",
        &forged,
        Some(json!({ "decision": "approve", "by": "eve" })),
    );
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["code"], "bad_resume_url");
    let other_run = path.replacen(&id, "01a00000-0000-7000-8000-000000000000", 1);
    assert_eq!(served.json("POST", &other_run, Some(json!({}))).0, 403);
    // Data that does not fit the wait's `data:` is refused, and changes nothing.
    let (status, answer) = served.json(
        "POST",
        &path,
        Some(json!({ "decision": "maybe", "by": "dana" })),
    );
    assert_eq!(status, 422, "{answer}");
    assert_eq!(run(&served, &id)["status"], "waiting");

    let (status, answer) = served.json(
        "POST",
        &path,
        Some(json!({ "decision": "approve", "by": "dana" })),
    );
    assert_eq!(status, 202, "{answer}");
    assert!(
        until(|| run(&served, &id)["status"] == "succeeded"),
        "{}",
        served.log()
    );
    let done = run(&served, &id);
    assert_eq!(
        done["outcome"]["reason"], "request PR-1 approved by dana",
        "{done}"
    );
    // Once: the wait is over.
    let (status, answer) = served.json(
        "POST",
        &path,
        Some(json!({ "decision": "reject", "by": "eve" })),
    );
    assert_eq!(status, 410, "{answer}");
    assert_eq!(answer["code"], "wait_over");
    // The API signals by name; a run that waits no more gets 409.
    let (status, answer) = served.json(
        "POST",
        &format!("/v1/runs/{id}/signals/approval"),
        Some(json!({ "decision": "approve", "by": "x" })),
    );
    assert_eq!(status, 409, "{answer}");
    let (status, _) = served.json(
        "POST",
        &format!("/v1/runs/{id}/signals/nothing"),
        Some(json!({})),
    );
    assert_eq!(status, 404);

    // The URL is a credential: no trace or log shows its signature (the run's
    // id and the signal's name in it are no secret).
    let (_, _, trace) = served.call("GET", &format!("/v1/runs/{id}/trace"), &[], None);
    assert!(trace.contains("\"event\":\"signal_received\""), "{trace}");
    assert!(trace.contains("\"via\":\"url\""), "{trace}");
    let signature = path.rsplit('.').next().unwrap();
    assert!(signature.len() >= 40, "{path}");
    crate::common::assert_clean(
        signature,
        &[("the trace", &trace), ("the log", &served.log())],
    );
}

#[test]
fn the_api_signals_a_waiting_run_by_name() {
    let chat = chat();
    let hook = format!("{}/hooks/approvals", chat.base);
    let dir = crate::common::scratch("wait-api");
    let served = serve(&dir, &["flows/approval.yaml"], &[("CHAT_WEBHOOK", &hook)]);
    let id = start(&served, "approval", json!({ "request_id": "PR-2" }));
    assert!(until(|| run(&served, &id)["status"] == "waiting"));
    let signal = format!("/v1/runs/{id}/signals/approval");
    let (status, answer) = served.json("POST", &signal, Some(json!({ "decision": "reject" })));
    assert_eq!(status, 422, "a missing key: {answer}");
    let (status, answer) = served.json(
        "POST",
        &signal,
        Some(json!({ "decision": "reject", "by": "lee" })),
    );
    assert_eq!(status, 202, "{answer}");
    assert!(
        until(|| run(&served, &id)["status"] == "succeeded"),
        "{}",
        served.log()
    );
    assert_eq!(
        run(&served, &id)["outcome"]["reason"],
        "request PR-2 rejected by lee"
    );
    // The resume URL of that wait was spent by the API's signal.
    let path = resume_path(&chat, &served);
    assert_eq!(
        served
            .json(
                "POST",
                &path,
                Some(json!({ "decision": "approve", "by": "x" }))
            )
            .0,
        410
    );
}

#[test]
fn a_resume_url_expires_with_its_wait() {
    let dir = crate::common::scratch("wait-expiry");
    let flow = dir.join("short.yaml");
    std::fs::write(
        &flow,
        r#"
flow: short
fields:
  hook: { type: text, env: CHAT_WEBHOOK }
steps:
  - id: ask
    http: { method: POST, url: "{{ hook }}", json: { text: "{{ wait.url }}" }, idempotency_key: short }
  - id: hold
    wait_for: { signal: go, timeout: 1s, on_timeout: late }
  - id: done
    end: in time
  - id: late
    end: too late
"#,
    )
    .unwrap();
    let chat = chat();
    let served = serve(
        &dir,
        &[flow.to_str().unwrap()],
        &[("CHAT_WEBHOOK", &chat.base)],
    );
    let id = start(&served, "short", json!({}));
    assert!(until(|| !chat.seen().is_empty()));
    let body: Value = serde_json::from_slice(&chat.seen()[0].body).unwrap();
    let url = body["text"].as_str().unwrap().to_string();
    let path = url.strip_prefix(&served.base).unwrap().to_string();
    // The scheduler wakes it at its timeout: the wait is over, and so is the URL.
    assert!(
        until(|| run(&served, &id)["status"] == "succeeded"),
        "{}",
        served.log()
    );
    assert_eq!(run(&served, &id)["outcome"]["reason"], "too late");
    let (status, answer) = served.json("POST", &path, Some(json!({})));
    assert_eq!(status, 410, "{answer}");
}

#[test]
fn a_signal_sent_while_no_worker_runs_is_taken_at_the_next_start() {
    let chat = chat();
    let hook = format!("{}/hooks/approvals", chat.base);
    let dir = crate::common::scratch("wait-down");
    let flows = crate::common::flows(&dir, &["flows/approval.yaml"]);
    let db = dir.join("handoff.db");
    let env = [("CHAT_WEBHOOK", hook.as_str())];
    let mut served = Served::start(&flows, &db, &env);
    let id = start(&served, "approval", json!({ "request_id": "PR-3" }));
    assert!(until(|| run(&served, &id)["status"] == "waiting"));
    served.kill();
    // With the worker down, `handoff signal` writes it into the store.
    let out = crate::common::handoff(
        &[
            "signal",
            &id,
            "approval",
            "--data",
            r#"{"decision": "approve", "by": "sam"}"#,
            "--store",
            db.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::common::text(&out.stderr)
    );
    let served = Served::start(&flows, &db, &env);
    assert!(
        until(|| run(&served, &id)["status"] == "succeeded"),
        "{}",
        served.log()
    );
    assert_eq!(
        run(&served, &id)["outcome"]["reason"],
        "request PR-3 approved by sam"
    );
    assert_eq!(chat.seen().len(), 1, "the question was asked once");
}

#[test]
fn a_durable_cli_run_killed_while_waiting_takes_its_signal_when_resumed() {
    let dir = crate::common::scratch("wait-cli");
    let db = dir.join("handoff.db");
    let flow = dir.join("hold.yaml");
    std::fs::write(
        &flow,
        r#"
flow: hold
fields:
  answer: { type: text, default: "" }
steps:
  - id: hold
    wait_for:
      signal: go
      timeout: 1h
      on_timeout: late
      data: { answer: text }
      set: { answer: "{{ data.answer }}" }
  - id: done
    end: "answer {{ answer }}"
  - id: late
    fail: too late
"#,
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args([
            "--color",
            "never",
            "run",
            flow.to_str().unwrap(),
            "--durable",
            "--store",
        ])
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (seen, _) = crate::common::read_until(&mut child, "waits for signal `go`");
    // The line shows as the wait starts; the store has it a moment later.
    let store = db.to_str().unwrap();
    assert!(crate::common::until(|| {
        let listed =
            crate::common::handoff(&["runs", "--status", "waiting", "--store", store], &[]);
        crate::common::text(&listed.stdout).contains("hold")
    }));
    child.kill().unwrap();
    child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id in {err} {seen:?}"))
        .to_string();
    // Data of the wrong shape is refused; the right one waits in the store.
    let signal = |data: &str| {
        let out = crate::common::handoff(
            &["signal", &id, "go", "--data", data, "--store", store],
            &[],
        );
        (out.status.code(), crate::common::text(&out.stderr))
    };
    let (code, said) = signal(r#"{"answer": 1}"#);
    assert_eq!(code, Some(2), "{said}");
    let (code, said) = signal(r#"{"answer": "yes"}"#);
    assert_eq!(code, Some(0), "{said}");
    let (code, said) = signal(r#"{"answer": "no"}"#);
    assert_eq!(code, Some(1), "one signal a wait: {said}");
    let out = crate::common::handoff(&["resume", &id, "--store", store], &[]);
    let said = crate::common::text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        crate::common::text(&out.stderr)
    );
    assert!(
        said.contains("▶ signal `go` (via cli): {\"answer\":\"yes\"}"),
        "{said}"
    );
    assert!(said.contains("✔ succeeded: answer yes"), "{said}");
}

#[test]
fn a_schedule_shows_its_next_slot_and_skips_a_slot_while_its_run_goes_on() {
    let dir = crate::common::scratch("wait-schedule");
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(
        flows.join("tick.yaml"),
        r#"
flow: tick
schedule:
  cron: "* * * * * *"
steps:
  - id: say
    log: tick
"#,
    )
    .unwrap();
    // Its run waits an hour: with `overlap: skip`, every later slot starts nothing.
    std::fs::write(
        flows.join("slow.yaml"),
        r#"
flow: slow
schedule:
  cron: "* * * * * *"
  overlap: skip
steps:
  - id: hold
    timer: { duration: 1h }
"#,
    )
    .unwrap();
    let served = Served::start(&flows, &dir.join("handoff.db"), &[]);
    let metric = |name: &str| -> u64 {
        let (_, _, text) = served.call("GET", "/metrics", &[], None);
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(until(|| metric(
        "handoff_schedule_slots_total{flow=\"tick\",result=\"started\"}"
    ) >= 2));
    assert!(until(|| metric(
        "handoff_schedule_slots_total{flow=\"slow\",result=\"skipped\"}"
    ) >= 2));
    let (_, body) = served.json("GET", "/v1/runs?flow=slow", None);
    assert_eq!(body["runs"].as_array().unwrap().len(), 1, "{body}");
    assert!(metric("handoff_schedule_next_slot_seconds{flow=\"tick\"}") > 1_700_000_000);
    let (_, flows) = served.json("GET", "/v1/flows", None);
    let tick = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "tick")
        .unwrap()
        .clone();
    assert_eq!(tick["schedule"]["cron"], "* * * * * *", "{tick}");
    assert!(tick["schedule"]["next"].is_string(), "{tick}");
    assert!(tick["schedule"]["last_run"].is_string(), "{tick}");
    assert!(served.log().contains("slot"), "{}", served.log());
}
