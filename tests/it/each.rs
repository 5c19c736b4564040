//! `for_each` through the real binary: the shipped sweep worker against the
//! simulator and a loopback job-status API, 8 items at a time, killed
//! (SIGKILL) mid-sweep and resumed; and what a run says when its list is not
//! one it can go through.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Loopback, Sim, TOKEN, json_answer, text};

/// What the job-status API answers, and what it saw: at most how many
/// requests at once, and whether the first 8 were ever all in at once.
struct Jobs {
    server: Loopback,
    max_in_flight: Arc<AtomicUsize>,
    eight_at_once: Arc<AtomicBool>,
    /// Requests from this number on are held until `release`.
    held: Arc<(Mutex<bool>, Condvar)>,
    reached_hold: Arc<AtomicBool>,
}

const HOLD_FROM: usize = 400;

fn jobs(states: HashMap<String, &'static str>) -> Jobs {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let eight_at_once = Arc::new(AtomicBool::new(false));
    let first = Arc::new((Mutex::new(0usize), Condvar::new()));
    let held = Arc::new((Mutex::new(false), Condvar::new()));
    let reached_hold = Arc::new(AtomicBool::new(false));
    let (flight, max, eight, hold, reached) = (
        in_flight.clone(),
        max_in_flight.clone(),
        eight_at_once.clone(),
        held.clone(),
        reached_hold.clone(),
    );
    let server = Loopback::start(move |n, seen| {
        let now = flight.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(now, Ordering::SeqCst);
        if n < 8 {
            // The first eight wait for each other: only a worker that really
            // sends 8 at a time gets past this at once.
            let (count, all_in) = &*first;
            let mut c = count.lock().unwrap();
            *c += 1;
            all_in.notify_all();
            let (c, timeout) = all_in
                .wait_timeout_while(c, Duration::from_secs(10), |c| *c < 8)
                .unwrap();
            if !timeout.timed_out() && *c >= 8 {
                eight.store(true, Ordering::SeqCst);
            }
        }
        if n >= HOLD_FROM {
            reached.store(true, Ordering::SeqCst);
            let (released, cv) = &*hold;
            let r = released.lock().unwrap();
            let _r = cv.wait_while(r, |r| !*r).unwrap();
        }
        let id = seen.target.rsplit('/').next().unwrap_or_default();
        let state = states.get(id).copied().unwrap_or("unknown");
        flight.fetch_sub(1, Ordering::SeqCst);
        json_answer(200, &json!({ "state": state }))
    });
    Jobs {
        server,
        max_in_flight,
        eight_at_once,
        held,
        reached_hold,
    }
}

impl Jobs {
    fn release(&self) {
        let (released, cv) = &*self.held;
        *released.lock().unwrap() = true;
        cv.notify_all();
    }
}

fn handoff(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff"));
    cmd.args(["--color", "never"])
        .args(args)
        .envs(env.iter().copied());
    cmd
}

#[test]
fn the_sweep_completes_exactly_the_ready_tasks_8_at_a_time_and_once_across_a_kill() {
    let sim = Sim::new();
    let created = sim.control(
        "POST",
        "/_sim/instances",
        json!({ "count": 1000, "delay": "0s" }),
    );
    let created = created["instances"].as_array().unwrap().clone();
    assert_eq!(created.len(), 1000);
    // A third of the jobs are done, a third failed, a third still run.
    let mut states = HashMap::new();
    let mut want = HashMap::new();
    for (i, inst) in created.iter().enumerate() {
        let state = ["done", "failed", "running"][i % 3];
        states.insert(inst["id"].as_str().unwrap().to_string(), state);
        want.insert(inst["taskId"].as_str().unwrap().to_string(), state);
    }
    let jobs = jobs(states);
    let dir = crate::common::scratch("each-sweep");
    let db = dir.join("handoff.db");
    let env = [
        ("NWC_BASE_URL", sim.base.as_str()),
        ("NWC_TOKEN", TOKEN),
        ("JOBS_URL", jobs.server.base.as_str()),
    ];
    let mut child: Child = handoff(
        &[
            "run",
            "flows/sweep-worker.yaml",
            "--durable",
            "--store",
            db.to_str().unwrap(),
        ],
        &env,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (seen, _) = crate::common::read_until(&mut child, "sweep (for_each)");
    assert!(
        crate::common::until(|| jobs.reached_hold.load(Ordering::SeqCst)),
        "the sweep never got to item {HOLD_FROM}: {seen:#?}"
    );
    // Mid-sweep: some items done and checkpointed, up to 8 under way.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.split_whitespace().next())
        .filter(|id| id.len() == 36)
        .unwrap_or_else(|| panic!("no run id in: {err}"))
        .to_string();
    jobs.release();
    let before = jobs.server.seen().len();
    assert!(before >= HOLD_FROM, "{before}");

    let out = handoff(&["resume", &id, "--store", db.to_str().unwrap()], &[])
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(said.starts_with("↺ resumed at step `sweep`"), "{said}");
    assert!(
        said.contains("1000 tasks: 334 completed, 333 canceled, 333 left, 0 failed"),
        "{}",
        &said[said.len().saturating_sub(2000)..]
    );
    crate::common::assert_clean(
        TOKEN,
        &[
            ("the resumed run's output", &said),
            ("its errors", &text(&out.stderr)),
        ],
    );

    // Exactly the ready tasks are complete, each once, with its outcome.
    let state = sim.control("GET", "/_sim/state", json!(null));
    let tasks = state["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1000);
    for task in tasks {
        let id = task["id"].as_str().unwrap();
        let outcome = task["taskAssignments"][0]["outcome"].clone();
        match want[id] {
            "done" | "failed" => {
                assert_eq!(task["completions"], 1, "{task}");
                let expected = if want[id] == "done" {
                    "Completed"
                } else {
                    "Canceled"
                };
                assert_eq!(outcome, Value::from(expected), "{task}");
            }
            _ => {
                assert_eq!(task["status"], "active", "{task}");
                assert_eq!(task["completions"], 0, "{task}");
            }
        }
    }
    // Items that finished before the kill were not asked about again: only
    // those under way (8 at most) were.
    let asked = jobs.server.seen().len();
    assert!(
        (1000..=1008).contains(&asked),
        "{asked} job-status requests for 1000 items"
    );
    assert!(jobs.max_in_flight.load(Ordering::SeqCst) <= 8);
    assert!(
        jobs.eight_at_once.load(Ordering::SeqCst),
        "the first 8 job-status requests were never in flight together"
    );
}

fn dry(flow: &str, sets: &[&str]) -> (Option<i32>, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = crate::common::scratch(&format!("each-dry-{}", N.fetch_add(1, Ordering::SeqCst)));
    let path = dir.join("flow.yaml");
    std::fs::write(&path, flow).unwrap();
    let mut args = vec!["run", path.to_str().unwrap(), "--dry-run"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = handoff(&args, &[]).output().unwrap();
    (out.status.code(), text(&out.stdout) + &text(&out.stderr))
}

const COLLECT: &str = r#"
flow: collect
fields:
  rows: { type: json, input: true }
  key: { type: text, input: true, secret: true }
  results: json
  counts: json
  done: number
  failed: number
  not_run: number
steps:
  - id: each
    for_each:
      items: "{{ rows }}"
      as: row
      max_items: 6
      concurrency: 3
      tolerated_failures: 1
      fields:
        doubled: number
      steps:
        - id: double
          set: { doubled: "{{ row.n * 2 }}" }
        - id: odd
          decision:
            - when: "row.n == 5"
              goto: refuse
            - otherwise: end
        - id: refuse
          fail: "five is refused"
      result: "{{ 'big' if doubled > 4 else 'small' }}"
    output: { results: results, counts: counts, succeeded: done, failed: failed, not_run: not_run }
  - id: after
    log: "{{ done }} done"
"#;

#[test]
fn results_come_back_in_the_list_order_whatever_order_items_end_in() {
    let rows = r#"rows=[{"n":1},{"n":2},{"n":3},{"n":4}]"#;
    let (code, out) = dry(COLLECT, &[rows, "key=hunter2-secret-key"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(r#"results = ["small","small","big","big"]"#),
        "{out}"
    );
    assert!(out.contains(r#"counts = {"small":2,"big":2}"#), "{out}");
    assert!(out.contains("done = 4"), "{out}");
    // Four items, each framed in the trace.
    assert_eq!(out.matches("┌ each item").count(), 4, "{out}");
    assert_eq!(out.matches("└ each item").count(), 4, "{out}");
}

#[test]
fn past_the_tolerated_failures_no_more_items_start_and_the_step_fails() {
    let rows = r#"rows=[{"n":5},{"n":5},{"n":1},{"n":1},{"n":1},{"n":1}]"#;
    let (code, out) = dry(COLLECT, &[rows, "key=hunter2-secret-key"]);
    assert_eq!(code, Some(1), "{out}");
    // Three at a time: the first five's failure is tolerated, so a fourth
    // item starts in its place; the second's is not, so no more start, and
    // those under way finish.
    assert!(
        out.contains("2 of 6 items failed, more than `tolerated_failures: 1`; 2 were not run"),
        "{out}"
    );
    assert!(out.contains("not_run = 2"), "{out}");
    assert!(
        out.contains(r#"results = [null,null,"small","small",null,null]"#),
        "{out}"
    );
    assert_eq!(out.matches("┌ each item").count(), 4, "{out}");
    assert!(!out.contains("┌ each item 5"), "{out}");
}

#[test]
fn a_list_longer_than_max_items_runs_no_item() {
    let rows = format!(
        "rows=[{}]",
        (0..7)
            .map(|n| format!("{{\"n\":{n}}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (code, out) = dry(COLLECT, &[&rows, "key=hunter2-secret-key"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the list has 7 items, more than `max_items: 6`; no item was run"),
        "{out}"
    );
    assert!(!out.contains("┌ each item"), "{out}");
}

#[test]
fn items_built_from_a_secret_are_masked_in_every_event() {
    let flow = r#"
flow: secret-items
fields:
  key: { type: text, input: true, secret: true }
steps:
  - id: each
    for_each:
      items: "{{ [key, key ~ '-2'] }}"
      as: k
      steps:
        - id: say
          log: "item {{ k }}"
      result: "{{ k }}"
"#;
    let secret = "hunter2-secret-key";
    let (code, out) = dry(flow, &[&format!("key={secret}")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("┌ each item 1 of 2: ***"), "{out}");
    assert!(out.contains("└ each item 2 succeeded → ***"), "{out}");
    crate::common::assert_clean(secret, &[("the dry run's output", &out)]);
}

#[test]
fn a_list_that_is_not_one_fails_the_step_by_name() {
    let (code, out) = dry(COLLECT, &[r#"rows={"n":1}"#, "key=hunter2-secret-key"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("`items` must be a list, but `{{ rows }}` gave a mapping"),
        "{out}"
    );
}

#[test]
fn an_item_whose_post_was_in_flight_at_a_kill_is_in_doubt_and_not_sent_again() {
    // The second item's POST is held: the kill lands while it is in flight.
    let server = Loopback::holding(1, json_answer(201, &json!({ "ok": true })));
    let dir = crate::common::scratch("each-post");
    let db = dir.join("handoff.db");
    let env = [("TARGET", server.base.as_str())];
    let mut child = handoff(
        &[
            "run",
            "tests/files/durable/post-each.yaml",
            "--durable",
            "--store",
            db.to_str().unwrap(),
        ],
        &env,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // An item's events reach the trace when it is over: the first one's are there.
    let (seen, _) = crate::common::read_until(&mut child, "notify_each item 1 succeeded");
    assert!(
        crate::common::until(|| server.seen().len() == 2),
        "the second POST never came: {seen:#?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.split_whitespace().next())
        .filter(|id| id.len() == 36)
        .unwrap_or_else(|| panic!("no run id in: {err}"))
        .to_string();
    let out = handoff(&["resume", &id, "--store", db.to_str().unwrap()], &env)
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(
        said.contains(
            "└ notify_each item 2 failed: the process stopped while item 1 was under way"
        ),
        "{said}"
    );
    assert!(said.contains("✔ succeeded: 1 failed, 2 sent"), "{said}");
    let bodies: Vec<String> = server
        .seen()
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    assert_eq!(
        bodies,
        [r#"{"job":"a"}"#, r#"{"job":"b"}"#, r#"{"job":"c"}"#],
        "each POST once: the one in doubt was not sent again"
    );
}
