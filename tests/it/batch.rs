//! `handoff run --each`: many instances in one process, the real binary
//! against the simulator. Every check reads the simulator's state: each task
//! completed once, with its row's outcome.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common::{Sim, TOKEN, scratch, text, until};
use serde_json::{Value, json};

/// `count` waiting instances (tasks after `after_polls` polls): their ids and tasks' ids.
fn instances(sim: &Sim, count: usize, after_polls: u32) -> Vec<(String, String)> {
    let created = sim.control(
        "POST",
        "/_sim/instances",
        json!({ "count": count, "delay": "0s", "after_polls": after_polls }),
    );
    created["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["taskId"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn rows_file(dir: &std::path::Path, rows: &[Value]) -> PathBuf {
    let path = dir.join("rows.jsonl");
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// A rows file of one `instance_id` a row, for these instances.
fn instance_rows(dir: &std::path::Path, instances: &[(String, String)]) -> PathBuf {
    let rows: Vec<Value> = instances
        .iter()
        .map(|(instance, _)| json!({ "instance_id": instance }))
        .collect();
    rows_file(dir, &rows)
}

fn batch(sim: &Sim, rows: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff"));
    cmd.args([
        "--color",
        "never",
        "run",
        "flows/complete-nwc-task.yaml",
        "--each",
    ])
    .arg(rows)
    .args(args)
    .env("NWC_BASE_URL", &sim.base)
    .env("NWC_TOKEN", TOKEN);
    cmd
}

fn outcome(task: &Value) -> Option<&str> {
    task["taskAssignments"][0]["outcome"].as_str()
}

fn tasks(sim: &Sim) -> Vec<Value> {
    sim.control("GET", "/_sim/state", json!(null))["tasks"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn three_hundred_instances_are_completed_once_each() {
    let sim = Sim::new();
    let made = instances(&sim, 300, 1);
    let dir = scratch("batch-300");
    let rows: Vec<Value> = made
        .iter()
        .enumerate()
        .map(|(i, (instance, _))| {
            let outcome = if i % 4 == 0 { "Canceled" } else { "Completed" };
            json!({ "instance_id": instance, "outcome": outcome })
        })
        .collect();
    let file = rows_file(&dir, &rows);
    let trace_dir = dir.join("traces");
    let out = batch(
        &sim,
        &file,
        &[
            "--set",
            "poll_interval=10ms",
            "--jobs",
            "16",
            "--quiet",
            "--trace-dir",
            trace_dir.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(said.contains("300 runs in "), "{said}");
    assert!(said.contains(": 300 succeeded, 0 failed\n"), "{said}");
    let all = tasks(&sim);
    for (i, (_, task)) in made.iter().enumerate() {
        let t = all.iter().find(|t| t["id"] == task.as_str()).unwrap();
        assert_eq!(t["completions"], 1, "{t}");
        let wanted = if i % 4 == 0 { "Canceled" } else { "Completed" };
        assert_eq!(outcome(t), Some(wanted), "{t}");
    }
    // A trace a run, named by row and instance, each ending in its outcome.
    let first = trace_dir.join(format!("row-00001-{}.jsonl", made[0].0));
    let trace = std::fs::read_to_string(&first).unwrap();
    assert!(
        trace
            .lines()
            .last()
            .unwrap()
            .contains("\"event\":\"flow_finished\"")
    );
    assert_eq!(std::fs::read_dir(&trace_dir).unwrap().count(), 300);
    assert!(!trace.contains(TOKEN));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_row_stops_the_batch_before_anything_is_sent() {
    let sim = Sim::new();
    let made = instances(&sim, 3, 0);
    let dir = scratch("batch-bad");
    let csv = dir.join("rows.csv");
    std::fs::write(
        &csv,
        format!(
            "instance_id,max_tries\n{},3\n{},lots\n,3\n",
            made[0].0, made[1].0
        ),
    )
    .unwrap();
    let out = batch(&sim, &csv, &[]).output().unwrap();
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("invalid value for `max_tries` from row 2 of"),
        "{said}"
    );
    assert!(
        said.contains("missing input `instance_id` (text) in row 3 of"),
        "{said}"
    );
    assert!(said.contains("no run was started"), "{said}");
    assert!(sim.requests().is_empty(), "nothing was sent");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rows_whose_task_never_comes_fail_and_are_grouped() {
    let sim = Sim::new();
    let found = instances(&sim, 6, 0);
    let lost = instances(&sim, 4, 1_000_000);
    let dir = scratch("batch-lost");
    let rows: Vec<Value> = found
        .iter()
        .chain(&lost)
        .map(|(instance, _)| json!({ "instance_id": instance }))
        .collect();
    let file = rows_file(&dir, &rows);
    let failed_rows = dir.join("failed.jsonl");
    let out = batch(
        &sim,
        &file,
        &[
            "--set",
            "poll_interval=10ms",
            "--set",
            "max_tries=3",
            "--quiet",
            "--failed-rows",
            failed_rows.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let said = text(&out.stdout);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}{err}");
    // Quiet, it still says which rows failed: in a file to run again.
    assert!(
        err.contains(&format!(
            "4 rows that did not succeed written to `{}`",
            failed_rows.display()
        )),
        "{err}"
    );
    let again: Vec<Value> = std::fs::read_to_string(&failed_rows)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut want: Vec<Value> = lost
        .iter()
        .map(|(instance, _)| json!({ "instance_id": instance }))
        .collect();
    let mut got = again.clone();
    let key = |v: &Value| v["instance_id"].as_str().unwrap().to_string();
    want.sort_by_key(key);
    got.sort_by_key(key);
    assert_eq!(got, want);
    assert!(said.contains("10 runs in "), "{said}");
    assert!(said.contains(": 6 succeeded, 4 failed\n"), "{said}");
    assert!(
        said.contains("    4  at `give_up`: no task for instance … after … tries\n"),
        "{said}"
    );
    // Run again, without --quiet, on the failed rows alone: each says why.
    let out = batch(
        &sim,
        &failed_rows,
        &["--set", "poll_interval=10ms", "--set", "max_tries=3"],
    )
    .output()
    .unwrap();
    let said = text(&out.stdout);
    assert!(said.contains(": 0 succeeded, 4 failed\n"), "{said}");
    for (instance, _) in &lost {
        let line = format!("✘ failed: no task for instance {instance} after 3 tries");
        assert!(said.contains(&line), "{said}");
    }
    let all = tasks(&sim);
    for (_, task) in &found {
        let t = all.iter().find(|t| t["id"] == task.as_str()).unwrap();
        assert_eq!(t["completions"], 1, "{t}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A batch sent Ctrl-C once four completions are in flight: what it said.
fn interrupted(sim: &Sim, mut batch: Command) -> std::process::Output {
    let child = batch
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let patches = || {
        sim.requests()
            .iter()
            .filter(|r| r["method"] == "PATCH")
            .count()
    };
    assert!(until(|| patches() >= 4), "no completion was in flight");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn ctrl_c_stops_the_batch_between_steps_and_sends_nothing_twice() {
    let sim = Sim::new();
    let made = instances(&sim, 40, 0);
    // Completions take a second: Ctrl-C lands while some are in flight.
    sim.control(
        "POST",
        "/_sim/faults",
        json!({ "method": "PATCH", "times": 40, "delay": "1s", "apply": true }),
    );
    let dir = scratch("batch-int");
    let file = instance_rows(&dir, &made);
    let out = interrupted(&sim, batch(&sim, &file, &["--jobs", "4"]));
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{said}{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("stopping: no new runs"),
        "{}",
        text(&out.stderr)
    );
    assert!(said.contains("40 runs in "), "{said}");
    assert!(said.contains("not started"), "{said}");
    // The completions in flight ended; none was sent twice.
    let all = tasks(&sim);
    let attempts: Vec<u64> = all
        .iter()
        .map(|t| t["completionAttempts"].as_u64().unwrap())
        .collect();
    assert!(attempts.iter().all(|&a| a <= 1), "{attempts:?}");
    let done = attempts.iter().filter(|&&a| a == 1).count();
    assert!((4..40).contains(&done), "{done} completed");
    assert_eq!(said.matches("✔ succeeded").count(), done, "{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_cancels_a_durable_batchs_unbegun_runs_and_the_batch_run_again_finishes_each_once() {
    let dir = scratch("batch-durable-int");
    let db = dir.join("handoff.db");
    durable_batch_interrupted(&dir, db.to_str().unwrap());
}

/// The same on Postgres, where the batch makes its next chunk of runs while
/// the last one's go on: what was made ahead is canceled as well.
#[test]
#[cfg_attr(
    handoff_no_postgres,
    ignore = "needs Postgres: apt-get install postgresql (or name a cluster with HANDOFF_TEST_PG_URL and HANDOFF_TEST_PG_DIR)"
)]
fn on_postgres_ctrl_c_cancels_a_durable_batchs_unbegun_runs_and_the_batch_run_again_finishes_each_once()
 {
    let (_turn, url) = crate::common::pg::database("batch_int");
    durable_batch_interrupted(&scratch("batch-durable-int-pg"), &url);
}

/// A durable batch into `store`, sent Ctrl-C while runs are in flight and
/// others made and not begun, then run again to its end.
fn durable_batch_interrupted(dir: &std::path::Path, store: &str) {
    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let sim = Sim::new();
    // More rows than the batch makes in the store at once: some are made
    // and not yet begun when Ctrl-C lands.
    let made = instances(&sim, 250, 0);
    sim.control(
        "POST",
        "/_sim/faults",
        json!({ "method": "PATCH", "times": 8, "delay": "1s", "apply": true }),
    );
    let file = instance_rows(dir, &made);
    let durable = ["--durable", "--store", store];
    let mut first = batch(&sim, &file, &[&durable[..], &["--jobs", "4"]].concat());
    first.env("HANDOFF_STORE_KEY", KEY);
    let out = interrupted(&sim, first);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{said}{}", text(&out.stderr));
    assert!(said.contains("not started"), "{said}");
    let done = said.matches("✔ succeeded").count();
    let interrupted: usize = said
        .split(", ")
        .find_map(|part| part.strip_suffix(" interrupted")?.parse().ok())
        .unwrap_or(0);
    // A run in flight stopped between two steps and waits to be gone on
    // with; what was made and not begun is canceled, saying why.
    let listed = text(
        &crate::common::handoff(
            &["runs", "--store", store, "--limit", "1000"],
            &[("HANDOFF_STORE_KEY", KEY)],
        )
        .stdout,
    );
    assert_eq!(
        listed.matches("  running  ").count(),
        interrupted,
        "{said}{listed}"
    );
    assert!(!listed.contains("  waiting  "), "{listed}");
    assert_eq!(listed.matches("  succeeded  ").count(), done, "{listed}");
    let canceled: Vec<&str> = listed
        .lines()
        .filter(|l| l.contains("  canceled  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!canceled.is_empty(), "{listed}");
    let shown = text(
        &crate::common::handoff(
            &["runs", "show", canceled[0], "--store", store],
            &[("HANDOFF_STORE_KEY", KEY)],
        )
        .stdout,
    );
    assert!(
        shown.contains("stopped before this row's run began"),
        "{shown}"
    );
    assert!(!shown.contains("→ GET"), "{shown}");

    // Run again, it skips what succeeded and makes the rest anew: each
    // task completed once.
    let again = batch(&sim, &file, &[&durable[..], &["--jobs", "16"]].concat())
        .env("HANDOFF_STORE_KEY", KEY)
        .output()
        .unwrap();
    let said = text(&again.stdout);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{said}{}",
        text(&again.stderr)
    );
    assert!(
        said.contains(&format!(
            ": {} succeeded, 0 failed, {done} had already succeeded\n",
            250 - done
        )),
        "{said}"
    );
    for t in tasks(&sim) {
        assert_eq!(
            (t["completions"].as_u64(), t["completionAttempts"].as_u64()),
            (Some(1), Some(1)),
            "{t}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_storm_of_429s_slows_the_batch_and_every_task_is_still_completed_once() {
    let sim = Sim::new();
    let made = instances(&sim, 30, 0);
    sim.control(
        "POST",
        "/_sim/faults",
        json!({ "method": "GET", "times": 8, "status": 429, "retry_after": "1" }),
    );
    let dir = scratch("batch-429");
    let file = instance_rows(&dir, &made);
    let out = batch(&sim, &file, &["--quiet", "--rate", "200/s"])
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(said.contains(": 30 succeeded, 0 failed\n"), "{said}");
    let all = tasks(&sim);
    assert!(all.iter().all(|t| t["completions"] == 1), "{all:?}");
    let refused = sim.requests().iter().filter(|r| r["status"] == 429).count();
    assert_eq!(refused, 8);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_durable_batch_run_again_skips_what_succeeded_and_retries_what_failed() {
    let sim = Sim::new();
    let quick = instances(&sim, 4, 0);
    // Hidden for three polls: two in the first batch, one more in the second.
    let slow = instances(&sim, 2, 3);
    let dir = scratch("batch-durable");
    let rows: Vec<Value> = quick
        .iter()
        .chain(&slow)
        .map(|(instance, _)| json!({ "instance_id": instance }))
        .collect();
    let file = rows_file(&dir, &rows);
    let db = dir.join("handoff.db");
    let args = [
        "--durable",
        "--store",
        db.to_str().unwrap(),
        "--set",
        "poll_interval=10ms",
        "--set",
        "max_tries=2",
    ];
    let first = batch(&sim, &file, &args).output().unwrap();
    let said = text(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(1),
        "{said}{}",
        text(&first.stderr)
    );
    assert!(said.contains(": 4 succeeded, 2 failed\n"), "{said}");
    let again = batch(&sim, &file, &args).output().unwrap();
    let said = text(&again.stdout);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{said}{}",
        text(&again.stderr)
    );
    assert!(
        said.contains(": 2 succeeded, 0 failed, 4 had already succeeded\n"),
        "{said}"
    );
    assert_eq!(
        said.matches("already succeeded  (run ").count(),
        4,
        "{said}"
    );
    let all = tasks(&sim);
    for (_, task) in quick.iter().chain(&slow) {
        let t = all.iter().find(|t| t["id"] == task.as_str()).unwrap();
        assert_eq!(
            (t["completions"].as_u64(), t["completionAttempts"].as_u64()),
            (Some(1), Some(1)),
            "{t}"
        );
    }
    // The store holds both attempts of each slow row, and one run of each quick row.
    let listed = crate::common::handoff(
        &["runs", "--store", db.to_str().unwrap(), "--limit", "100"],
        &[],
    );
    let listed = text(&listed.stdout);
    assert_eq!(listed.matches(" succeeded ").count(), 6, "{listed}");
    assert_eq!(listed.matches(" failed ").count(), 2, "{listed}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_batch_records_a_mock_per_row_that_replays_the_row() {
    let sim = Sim::new();
    let made = instances(&sim, 3, 1);
    let dir = scratch("batch-record");
    let file = instance_rows(&dir, &made);
    let recorded = dir.join("recorded");
    let out = batch(
        &sim,
        &file,
        &[
            "--set",
            "poll_interval=10ms",
            "--quiet",
            "--record",
            recorded.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_dir(&recorded).unwrap().count(), 3);
    // Row 2, replayed offline and strictly, against its own recording.
    let mock = recorded.join("row-00002.mock.yaml");
    assert!(!std::fs::read_to_string(&mock).unwrap().contains(TOKEN));
    let set = format!("instance_id={}", made[1].0);
    let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args([
            "--color",
            "never",
            "run",
            "flows/complete-nwc-task.yaml",
            "--mock",
        ])
        .arg(&mock)
        .args([
            "--strict",
            "--quiet",
            "--set",
            &set,
            "--set",
            "poll_interval=10ms",
        ])
        .env("NWC_BASE_URL", &sim.base)
        .env("NWC_TOKEN", "replay-token-placeholder")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Five hundred runs of an app flow share its managed token. Tokens live 2 s
/// and `--rate` stretches the batch over at least 3 s, so the shared token
/// must be renewed on the way: a handful of token requests, never one a run.
/// The upper bound is worked out from the time the batch really took, so a
/// slow machine does not fail it.
#[test]
fn five_hundred_app_runs_share_a_handful_of_renewed_tokens() {
    let sim = Sim::start(handoff::sim::shared::SimConfig {
        token_ttl: std::time::Duration::from_secs(2),
        ..crate::common::config()
    });
    let made = instances(&sim, 500, 0);
    let dir = scratch("batch-tokens");
    let file = instance_rows(&dir, &made);
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args([
            "--color",
            "never",
            "run",
            "tests/files/app-complete.yaml",
            "--each",
        ])
        .arg(&file)
        .args(["--quiet", "--rate", "500/s", "--jobs", "16"])
        .env("NWC_BASE_URL", &sim.base)
        .env("NWC_CLIENT_ID", "sim-client")
        .env("NWC_CLIENT_SECRET", "sim-secret")
        .output()
        .unwrap();
    let took = started.elapsed();
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(said.contains(": 500 succeeded, 0 failed\n"), "{said}");
    let all = tasks(&sim);
    assert!(
        all.iter().all(|t| t["completions"] == 1),
        "a task not completed once"
    );
    let requests = sim.requests();
    let fetched = requests
        .iter()
        .filter(|r| r["path"] == "/authentication/v1/token")
        .count();
    // 500 × (list, read, PATCH) at 500 requests a second: at least 3 s, so
    // the token first fetched is renewed (1.6 s on) at least once.
    let renewals_possible = (took.as_secs_f64() / 1.6).ceil() as usize + 1;
    assert!(
        (2..=renewals_possible).contains(&fetched),
        "{fetched} token requests in {took:?}"
    );
    assert!(
        requests.iter().all(|r| r["auth"] != "wrong token"),
        "a request went with an expired or wrong token"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A dry batch never waits on anything, so nothing but the signal itself
/// can stop it: Ctrl-C halfway still gives the summary and exit 130.
#[test]
fn ctrl_c_stops_a_dry_batch_with_its_summary() {
    let dir = scratch("batch-dry-int");
    let path = dir.join("rows.jsonl");
    let rows: String = (0..20_000)
        .map(|i| format!("{{\"instance_id\": \"inst-{i}\"}}\n"))
        .collect();
    std::fs::write(&path, rows).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args([
            "--color",
            "never",
            "run",
            "flows/complete-nwc-task.yaml",
            "--each",
        ])
        .arg(&path)
        .args(["--mock", "flows/complete-nwc-task.mock.yaml"])
        .env("NWC_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Each row's line on stdout: the batch is under way at row 100.
    let (_, rest) = crate::common::read_until(&mut child, "row 100 ");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let said: Vec<String> = rest.map(Result::unwrap).collect();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let summary = said.last().cloned().unwrap_or_default();
    assert!(summary.starts_with("20000 runs in "), "{summary}");
    assert!(summary.contains("not started"), "{summary}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// On a terminal (a pseudo-terminal from `script`), the progress bar says
/// the count once: `3/3 done: …`, not `3/3 3/3 done: …`.
#[test]
fn the_progress_bar_says_its_count_once() {
    let sim = Sim::new();
    let rows: Vec<Value> = instances(&sim, 3, 3)
        .iter()
        .map(|(instance, _)| json!({ "instance_id": instance }))
        .collect();
    let dir = scratch("batch-bar");
    let file = rows_file(&dir, &rows);
    let command = format!(
        "{} --color never run flows/complete-nwc-task.yaml --each {} --set poll_interval=200ms",
        env!("CARGO_BIN_EXE_handoff"),
        file.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("NWC_BASE_URL", &sim.base)
        .env("NWC_TOKEN", TOKEN)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains(" 3/3 done: 3 succeeded, 0 failed"), "{said}");
    assert!(!said.contains("3/3 3/3"), "{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}
