//! Durable runs survive kill -9: the real binary is killed at the worst
//! moments (during a timer, between a PATCH and its answer, during a POST),
//! then `handoff resume` goes on from the last checkpoint. The simulator or
//! a loopback server counts what really happened. Each kill waits for the
//! trace line that says the moment has come, never for a length of time,
//! and freezes the process (SIGSTOP) before it looks again and kills it, so
//! a slow test cannot let the moment pass unnoticed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::common::{Loopback, Sim, TOKEN, json_answer, text};
use serde_json::json;

/// A fresh store in its own folder.
fn store(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("handoff-durable-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("handoff.db")
}

fn handoff(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff"));
    cmd.args(["--color", "never"])
        .args(args)
        .envs(env.iter().copied());
    cmd
}

/// Starts a durable run and kills it (SIGKILL) once its trace shows `marker`
/// and `ready` says the moment has come (the server holds the request, the
/// store says `waiting`): a trace line is written just before what it
/// announces happens. Returns the run's id.
fn kill_at(cmd: Command, marker: &str, ready: impl Fn() -> bool) -> String {
    let (id, mut child) = kill_unreaped(cmd, marker, ready);
    child.wait().unwrap();
    id
}

/// As [`kill_at`], but the killed process is left a zombie (not reaped),
/// as a parent that has not yet waited for it leaves it.
fn kill_unreaped(mut cmd: Command, marker: &str, ready: impl Fn() -> bool) -> (String, Child) {
    let mut child: Child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (seen, _) = crate::common::read_until(&mut child, marker);
    assert!(until(&ready), "the moment to kill never came: {seen:#?}");
    // Frozen first, then looked at again: the kill lands in the moment the
    // test saw, however slowly the test itself runs.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    assert!(
        ready(),
        "the moment passed before the process was frozen: {seen:#?}"
    );
    child.kill().unwrap();
    let err = {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut s).unwrap();
        s
    };
    // "run ID is durable: …" names the run.
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.split_whitespace().next())
        .filter(|id| id.len() == 36)
        .unwrap_or_else(|| panic!("no run id in: {err}"))
        .to_string();
    (id, child)
}

/// Polls a condition on what others can observe, for up to 10 s.
fn until(ready: impl Fn() -> bool) -> bool {
    for _ in 0..2000 {
        if ready() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

fn resume(id: &str, db: &Path, env: &[(&str, &str)]) -> Output {
    handoff(&["resume", id, "--store", db.to_str().unwrap()], env)
        .output()
        .unwrap()
}

fn runs_command(db: &Path, action: &[&str]) -> Output {
    handoff(
        &[&["runs"][..], action, &["--store", db.to_str().unwrap()]].concat(),
        &[],
    )
    .output()
    .unwrap()
}

/// The runs in the store, as listed (while polling: the store may not be there yet).
fn runs(db: &Path) -> String {
    text(&runs_command(db, &[]).stdout)
}

/// What `handoff runs ACTION… --store DB` prints, which must succeed.
fn stored(db: &Path, action: &[&str]) -> String {
    let out = runs_command(db, action);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn killed_during_a_timer_it_resumes_and_completes_the_task_once() {
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": 1 }));
    let db = store("timer");
    let set = format!("instance_id={instance}");
    let env = [("NWC_BASE_URL", sim.base.as_str()), ("NWC_TOKEN", TOKEN)];
    let id = kill_at(
        handoff(
            &[
                "run",
                "flows/complete-nwc-task.yaml",
                "--set",
                &set,
                "--set",
                "poll_interval=2s",
                "--durable",
                "--store",
                db.to_str().unwrap(),
            ],
            &env,
        ),
        "waits 2s",
        || runs(&db).contains("  waiting  "),
    );
    assert!(
        runs(&db).contains(&format!("{id}  waiting")),
        "{}",
        runs(&db)
    );
    // The token comes back from the store, sealed there; nothing else is given.
    let out = resume(&id, &db, &[]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(said.starts_with("↺ resumed at step `wait`"), "{said}");
    assert!(said.contains("✔ succeeded"), "{said}");
    let state = sim.task(&task);
    assert_eq!(state["completions"], 1, "{state}");
    assert!(runs(&db).contains(&format!("{id}  succeeded")));
    // The stored trace has both lives of the run, in order.
    let shown = text(
        &handoff(&["runs", "show", &id, "--store", db.to_str().unwrap()], &[])
            .output()
            .unwrap()
            .stdout,
    );
    assert!(shown.contains("flow complete-nwc-task"), "{shown}");
    assert!(shown.contains("↺ resumed at step `wait`"), "{shown}");
    assert!(!shown.contains(TOKEN));
}

#[test]
fn killed_between_a_patch_and_its_answer_it_completes_once() {
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s" }));
    // The PATCH takes effect, and its answer is held back: the kill lands in between.
    sim.control(
        "POST",
        "/_sim/faults",
        json!({ "method": "PATCH", "times": 1, "delay": "5s", "apply": true }),
    );
    let db = store("patch");
    let set = format!("instance_id={instance}");
    let env = [("NWC_BASE_URL", sim.base.as_str()), ("NWC_TOKEN", TOKEN)];
    let id = kill_at(
        handoff(
            &[
                "run",
                "flows/complete-nwc-task.yaml",
                "--set",
                &set,
                "--durable",
                "--store",
                db.to_str().unwrap(),
            ],
            &env,
        ),
        "→ PATCH",
        || sim.task(&task)["completionAttempts"] == 1,
    );
    let out = resume(&id, &db, &[]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(
        said.contains("is already complete with outcome `Completed`: nothing to do"),
        "{said}"
    );
    // The resumed step reads the task first, finds it done, and sends no PATCH.
    assert!(!said.contains("→ PATCH"), "{said}");
    let state = sim.task(&task);
    assert_eq!(state["completions"], 1, "{state}");
    assert_eq!(state["completionAttempts"], 1, "{state}");
}

/// Runs a flow whose POST never gets an answer, kills it once the server
/// holds the POST, and resumes it against a server that now answers. What the
/// resumed run printed, and every request the server saw.
fn post_killed_and_resumed(flow: &str, name: &str) -> (String, Vec<crate::common::Seen>) {
    let server = Loopback::holding(0, json_answer(201, &json!({ "ok": true })));
    let db = store(name);
    let env = [("TARGET", server.base.as_str())];
    let id = kill_at(
        handoff(
            &["run", flow, "--durable", "--store", db.to_str().unwrap()],
            &env,
        ),
        "→ POST",
        || server.seen().len() == 1,
    );
    let out = resume(&id, &db, &env);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    (said, server.seen())
}

#[test]
fn a_post_in_flight_at_the_kill_is_in_doubt_and_never_sent_again() {
    let (said, seen) = post_killed_and_resumed("tests/files/durable/post.yaml", "post");
    assert!(
        said.contains("had a request in flight; it may have reached the server"),
        "{said}"
    );
    assert!(said.contains("→ on_error: unsure"), "{said}");
    assert!(said.contains("✔ succeeded: result: in_doubt"), "{said}");
    assert_eq!(seen.len(), 1, "the POST was not sent again");
}

#[test]
fn a_keyed_post_in_flight_at_the_kill_is_sent_again_with_its_key() {
    let (said, seen) = post_killed_and_resumed("tests/files/durable/post-keyed.yaml", "post-keyed");
    assert!(said.contains("✔ succeeded: result: sent"), "{said}");
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert!(
            request
                .headers
                .contains(&("idempotency-key".to_string(), "job-1".to_string()))
        );
    }
}

/// The stored trace of a run, as JSON events.
fn stored_events(id: &str, db: &Path) -> Vec<serde_json::Value> {
    stored(db, &["show", id, "--trace", "jsonl"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// How many times the events say `step` started.
fn started(events: &[serde_json::Value], step: &str) -> usize {
    events
        .iter()
        .filter(|e| e["event"] == "step_started" && e["step"] == step)
        .count()
}

/// Runs tests/files/durable/recompute.yaml against `server`, killed once the
/// server has seen `requests`: its id and its store.
fn recompute_killed_at(server: &Loopback, requests: usize, name: &str) -> (String, PathBuf) {
    let db = store(name);
    let env = [("TARGET", server.base.as_str())];
    let id = kill_at(
        handoff(
            &[
                "run",
                "tests/files/durable/recompute.yaml",
                "--durable",
                "--store",
                db.to_str().unwrap(),
            ],
            &env,
        ),
        "→ GET",
        || server.seen().len() == requests,
    );
    (id, db)
}

/// Resumes a run of recompute.yaml; what it said, checked to succeed.
fn recompute_resumed(id: &str, db: &Path, server: &Loopback) -> String {
    let out = resume(id, db, &[("TARGET", server.base.as_str())]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    said
}

/// The events' numbers run without a gap or a repeat, and the run resumed once.
fn one_trace(events: &[serde_json::Value]) {
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "run_resumed")
            .count(),
        1
    );
}

#[test]
fn steps_that_touch_nothing_outside_are_computed_again_after_a_kill() {
    // The first GET is held until the kill: `count` ran before it, on no checkpoint.
    let server = Loopback::holding(0, json_answer(200, &json!({ "n": 7 })));
    let (id, db) = recompute_killed_at(&server, 1, "recompute-first");
    let kept = stored_events(&id, &db);
    assert_eq!(started(&kept, "count"), 0, "{kept:#?}");
    let said = recompute_resumed(&id, &db, &server);
    // Counted again from the start, not twice: the first count was never kept.
    assert!(said.contains("label n7, tries 1"), "{said}");
    let targets: Vec<String> = server.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        ["/first", "/first", "/second?label=n7"],
        "{targets:?}"
    );
    let events = stored_events(&id, &db);
    for step in ["count", "look", "name", "check", "again"] {
        assert_eq!(started(&events, step), 1, "{step}: {events:#?}");
    }
    one_trace(&events);
}

#[test]
fn an_answer_is_on_record_before_the_next_request_leaves() {
    // The first GET is answered; the second is held until the kill.
    let server = Loopback::holding(1, json_answer(200, &json!({ "n": 7 })));
    let (id, db) = recompute_killed_at(&server, 2, "recompute-second");
    // What the store kept at the kill: the first GET's answer and the steps
    // after it, put on record before the second GET left, and that GET.
    let kept = stored_events(&id, &db);
    for step in ["count", "look", "name", "check", "again"] {
        assert_eq!(started(&kept, step), 1, "{step}: {kept:#?}");
    }
    assert!(
        kept.iter()
            .any(|e| e["event"] == "response_received" && e["step"] == "look"),
        "{kept:#?}"
    );
    let said = recompute_resumed(&id, &db, &server);
    assert!(said.contains("label n7, tries 1"), "{said}");
    // The answered GET was not sent again; the one the kill cut off was.
    let targets: Vec<String> = server.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        ["/first", "/second?label=n7", "/second?label=n7"],
        "{targets:?}"
    );
    // The cut-off step twice in the trace (before the kill and after), the rest once.
    let events = stored_events(&id, &db);
    for step in ["count", "look", "name", "check"] {
        assert_eq!(started(&events, step), 1, "{step}: {events:#?}");
    }
    assert_eq!(started(&events, "again"), 2, "{events:#?}");
    one_trace(&events);
}

/// Runs `flow` durably to its end, checked to succeed: the run's id, as
/// its first line on stderr names it.
fn run_durably(flow: &str, db: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = handoff(
        &[
            &["run", flow, "--durable", "--store", db.to_str().unwrap()][..],
            args,
        ]
        .concat(),
        env,
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.split_whitespace().next())
        .unwrap()
        .to_string()
}

/// The store's rows of events for a run, as `(seq, last_seq, last event)`:
/// one row a checkpoint, read as someone with the file would.
fn checkpoint_rows(db: &Path, id: &str) -> Vec<(u64, u64, String)> {
    let script = [
        "import sqlite3, sys, json",
        "c = sqlite3.connect(sys.argv[1])",
        "q = 'SELECT seq, last_seq, lines FROM events WHERE run_id = ? ORDER BY seq'",
        "for seq, last, lines in c.execute(q, (sys.argv[2],)):",
        "    e = json.loads(lines.splitlines()[-1])",
        "    print(seq, last, e['event'] + ' ' + (e.get('method') or e.get('status') or ''))",
    ]
    .join("\n");
    let out = Command::new("python3")
        .args(["-c", &script])
        .arg(db)
        .arg(id)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let seq = parts.next().unwrap().parse().unwrap();
            let last = parts.next().unwrap().parse().unwrap();
            (seq, last, parts.next().unwrap().to_string())
        })
        .collect()
}

/// The reference flow, its task there at once, is three checkpoints (as
/// docs/durable.md says): before `patch_task` reads the task, with the
/// list's answer; before the PATCH, write-ahead; and at the end.
#[test]
fn the_reference_flow_is_three_checkpoints() {
    let sim = Sim::new();
    let (instance, _) = sim.instance(json!({ "delay": "0s" }));
    let db = store("three");
    let set = format!("instance_id={instance}");
    let env = [("NWC_BASE_URL", sim.base.as_str()), ("NWC_TOKEN", TOKEN)];
    let id = run_durably(
        "flows/complete-nwc-task.yaml",
        &db,
        &["--set", &set, "--quiet"],
        &env,
    );
    let rows = checkpoint_rows(&db, &id);
    assert_eq!(
        rows,
        [
            (1, 18, "request_sent GET".to_string()),
            (19, 20, "request_sent PATCH".to_string()),
            (21, 24, "flow_finished succeeded".to_string()),
        ],
        "{rows:?}"
    );
}

#[test]
fn a_run_canceled_while_an_answer_is_on_its_way_sends_nothing_more() {
    // The first GET's answer waits for the test's word; the run is canceled meanwhile.
    let (go, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let server = Loopback::start(move |n, _| {
        if n == 0 {
            let _ = gate.lock().unwrap().recv();
        }
        json_answer(200, &json!({}))
    });
    let db = store("cancel-held");
    let mut child = handoff(
        &[
            "run",
            "tests/files/durable/cancel-held.yaml",
            "--durable",
            "--store",
            db.to_str().unwrap(),
        ],
        &[("TARGET", server.base.as_str())],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // "run ID is durable: …" names the run before its first step.
    let mut err = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let id = err
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            let id = l.strip_prefix("run ")?.split_whitespace().next()?;
            (id.len() == 36).then(|| id.to_string())
        })
        .expect("the run's id on stderr");
    assert!(until(|| server.seen().len() == 1));
    stored(&db, &["cancel", &id]);
    go.send(()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = text(&out.stdout);
    let targets: Vec<String> = server.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/first"], "{said}");
    assert!(said.contains("canceled"), "{said}");
    assert!(runs(&db).contains(&format!("{id}  canceled")), "{said}");
    let events = stored_events(&id, &db);
    assert!(
        !events.iter().any(|e| e["event"] == "step_failed"),
        "{events:#?}"
    );
}

/// Starts a durable run of `flow` and kills it once the store says it waits.
fn killed_while_waiting(flow: &Path, db: &Path) -> String {
    kill_at(
        handoff(
            &[
                "run",
                flow.to_str().unwrap(),
                "--set",
                "pause=2s",
                "--durable",
                "--store",
                db.to_str().unwrap(),
            ],
            &[],
        ),
        "waits 2s",
        || runs(db).contains("  waiting  "),
    )
}

#[test]
fn a_run_resumes_on_the_flow_version_it_started_with_and_can_be_canceled() {
    let dir = store("pinned");
    let flow = dir.with_file_name("wait.yaml");
    std::fs::copy("tests/files/durable/wait.yaml", &flow).unwrap();
    let db = dir;
    let id = killed_while_waiting(&flow, &db);
    // The file changes while the run waits; the run keeps its own version.
    let changed = std::fs::read_to_string(&flow)
        .unwrap()
        .replace("version A", "version B");
    std::fs::write(&flow, changed).unwrap();
    let out = resume(&id, &db, &[]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("log: version A"), "{said}");

    // A canceled run does not resume.
    let id = killed_while_waiting(&flow, &db);
    let out = handoff(
        &["runs", "cancel", &id, "--store", db.to_str().unwrap()],
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = resume(&id, &db, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("has already ended: canceled"));
    assert!(runs(&db).contains(&format!("{id}  canceled")));
}

#[test]
fn durable_runs_need_a_real_run() {
    let db = store("dry");
    let out = handoff(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--mock",
            "flows/complete-nwc-task.mock.yaml",
            "--set",
            "instance_id=i",
            "--durable",
            "--store",
            db.to_str().unwrap(),
        ],
        &[("NWC_TOKEN", "x")],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("`--durable` keeps real runs"));
    // Looking at a store that is not there creates nothing.
    for args in [vec!["runs"], vec!["resume", "--all"]] {
        let mut all = args.clone();
        all.extend(["--store", db.to_str().unwrap()]);
        let out = handoff(&all, &[]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains("there is no run store at"));
        assert!(!db.exists() && !db.with_file_name("handoff.db.key").exists());
    }
}

#[test]
fn a_run_is_never_resumed_beside_the_process_that_still_runs_it() {
    let db = store("leased");
    let mut original = handoff(
        &[
            "run",
            "tests/files/durable/wait.yaml",
            "--set",
            "pause=3s",
            "--durable",
            "--store",
            db.to_str().unwrap(),
        ],
        &[],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    assert!(until(|| runs(&db).contains("  waiting  ")), "{}", runs(&db));
    // Alive, but frozen: it holds the run however long the checks below take.
    let pid = nix::unistd::Pid::from_raw(original.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let id = runs(&db)
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    // Alive and holding it: a resume is refused, and runs nothing.
    let out = resume(&id, &db, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("is being run by another process"), "{err}");
    assert!(err.contains("once that process has stopped"), "{err}");
    assert_eq!(text(&out.stdout), "");
    // Once it is gone (kill -9, no chance to say so), the run is free at once.
    original.kill().unwrap();
    original.wait().unwrap();
    let out = resume(&id, &db, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("log: version A"));
}

#[test]
fn a_stored_run_is_recorded_from_its_trace_and_replays_the_same() {
    let sim = Sim::new();
    let (instance, _) = sim.instance(json!({ "delay": "0s", "after_polls": 1 }));
    let db = store("record");
    let dir = db.parent().unwrap().to_path_buf();
    let set = format!("instance_id={instance}");
    let env = [("NWC_BASE_URL", sim.base.as_str()), ("NWC_TOKEN", TOKEN)];
    let flow = "flows/complete-nwc-task.yaml";
    let args = [
        "--set",
        set.as_str(),
        "--set",
        "poll_interval=50ms",
        "--quiet",
    ];
    let id = run_durably(flow, &db, &args, &env);
    let mock = dir.join("run.mock.yaml");
    std::fs::write(&mock, stored(&db, &["record", &id])).unwrap();
    let real = dir.join("real.jsonl");
    std::fs::write(&real, stored(&db, &["show", &id, "--trace", "jsonl"])).unwrap();
    let replay = dir.join("replay.jsonl");
    let out = handoff(
        &[
            &["run", flow, "--mock", mock.to_str().unwrap(), "--strict"][..],
            &args,
            &["--trace-file", replay.to_str().unwrap()],
        ]
        .concat(),
        &env,
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = handoff(
        &["diff", real.to_str().unwrap(), replay.to_str().unwrap()],
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(!std::fs::read_to_string(&mock).unwrap().contains(TOKEN));
}

/// Resumed at once after kill -9, while the killed process is still a
/// zombie its parent has not reaped: it runs nothing, so its lease does not
/// stand in the way.
#[test]
fn a_run_resumes_at_once_while_its_killed_process_is_a_zombie() {
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": 1 }));
    let db = store("zombie");
    let set = format!("instance_id={instance}");
    let env = [("NWC_BASE_URL", sim.base.as_str()), ("NWC_TOKEN", TOKEN)];
    let (id, mut zombie) = kill_unreaped(
        handoff(
            &[
                "run",
                "flows/complete-nwc-task.yaml",
                "--set",
                &set,
                "--set",
                "poll_interval=2s",
                "--durable",
                "--store",
                db.to_str().unwrap(),
            ],
            &env,
        ),
        "waits 2s",
        || runs(&db).contains("  waiting  "),
    );
    // The killed process is dead and not reaped: a zombie, once the kernel
    // has torn it down (SIGKILL is delivered, not waited for).
    let state = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", zombie.id())).unwrap();
        stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert!(until(|| state() == "Z"), "{}", state());
    let out = resume(&id, &db, &[]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(said.contains("✔ succeeded"), "{said}");
    assert_eq!(sim.task(&task)["completions"], 1);
    zombie.wait().unwrap();
}
