//! Several workers on one Postgres: the shared key,
//! a chaos run where workers are killed while 500 runs go on, a paused
//! worker fenced off from the run another took, and a database restart.
//!
//! They start their own throwaway cluster ([`crate::common::pg`]), or use
//! the one `HANDOFF_TEST_PG_URL` names; without Postgres on the machine they
//! are ignored, and `cargo test` says so at the end. Each test works in a
//! database of its own. The store's contract is in `store.rs`.

use std::time::{Duration, Instant};

use crate::common::{Served, Sim, TOKEN, scratch};
use serde_json::json;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

#[test]
#[cfg_attr(
    handoff_no_postgres,
    ignore = "needs Postgres: apt-get install postgresql (or name a cluster with HANDOFF_TEST_PG_URL and HANDOFF_TEST_PG_DIR)"
)]
fn every_worker_needs_the_same_store_key() {
    let (_turn, url) = crate::common::pg::database("keys");
    let check = |key: Option<&str>| {
        // `runs` opens the store as `serve` does, and exits.
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_handoff"));
        cmd.args(["--color", "never", "runs", "--store", &url]);
        cmd.env_remove("HANDOFF_STORE_KEY");
        if let Some(k) = key {
            cmd.env("HANDOFF_STORE_KEY", k);
        }
        cmd.output().unwrap()
    };
    let none = check(None);
    assert_eq!(none.status.code(), Some(1));
    let said = crate::common::text(&none.stderr);
    assert!(
        said.contains("every worker needs the same HANDOFF_STORE_KEY"),
        "{said}"
    );
    assert!(
        !said.contains("postgres@"),
        "no URL with credentials in errors: {said}"
    );
    assert_eq!(check(Some(KEY)).status.code(), Some(0));
    let other = check(Some("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="));
    assert_eq!(other.status.code(), Some(1));
    assert!(
        crate::common::text(&other.stderr)
            .contains("is not the key this store's other workers use")
    );
}

fn workers_env(sim: &Sim) -> Vec<(&'static str, String)> {
    vec![
        ("NWC_BASE_URL", sim.base.clone()),
        ("NWC_TOKEN", TOKEN.to_string()),
        ("HANDOFF_STORE_KEY", KEY.to_string()),
    ]
}

fn worker(flows: &std::path::Path, url: &str, env: &[(&'static str, String)]) -> Served {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Served::start_with(flows, std::path::Path::new(url), &pairs, &["--lease", "2s"])
}

/// How many runs have each status, from one worker's API.
fn statuses(served: &Served) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for status in ["waiting", "running", "succeeded", "failed", "canceled"] {
        let (_, body) = served.json("GET", &format!("/v1/runs?status={status}&limit=500"), None);
        out.insert(
            status.to_string(),
            body["runs"].as_array().map_or(0, Vec::len),
        );
    }
    out
}

/// How many runs have succeeded, from one worker's API.
fn succeeded(served: &Served) -> usize {
    let (_, body) = served.json("GET", "/v1/runs?status=succeeded&limit=500", None);
    body["runs"].as_array().map_or(0, Vec::len)
}

fn wait_for(deadline: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn flows_dir(name: &str) -> std::path::PathBuf {
    let dir = scratch(name);
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::copy(
        "flows/complete-nwc-task.yaml",
        flows.join("complete-nwc-task.yaml"),
    )
    .unwrap();
    flows
}

/// Three workers, 500 runs whose tasks appear over a few polls, and a worker
/// killed (SIGKILL) and replaced every second or so, eleven times, once
/// while PATCHes are held by the simulator after they took effect. Every
/// task is completed exactly once with its outcome, and every run succeeds.
#[test]
#[cfg_attr(
    handoff_no_postgres,
    ignore = "needs Postgres: apt-get install postgresql (or name a cluster with HANDOFF_TEST_PG_URL and HANDOFF_TEST_PG_DIR)"
)]
fn three_workers_lose_no_run_and_do_none_twice_while_killed() {
    let (_turn, url) = crate::common::pg::database("chaos");
    let sim = Sim::new();
    let env = workers_env(&sim);
    let flows = flows_dir("pg-chaos");
    let started = Instant::now();
    let mut workers: Vec<Served> = (0..3).map(|_| worker(&flows, &url, &env)).collect();
    let mut expected = Vec::new();
    for i in 0..500 {
        // Tasks appear over up to nine polls a second apart: the runs span the chaos.
        let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": i % 9 }));
        let outcome = if i % 3 == 0 { "Canceled" } else { "Completed" };
        let (code, body) = workers[i % 3].json(
            "POST",
            "/v1/flows/complete-nwc-task/runs",
            Some(json!({ "inputs": { "instance_id": instance, "outcome": outcome, "poll_interval": "1s" } })),
        );
        assert_eq!(code, 201, "{body}");
        expected.push((body["id"].as_str().unwrap().to_string(), task, outcome));
    }
    eprintln!("500 runs started at {:?}", started.elapsed());
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..11 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let victim = (rng % 3) as usize;
        if round == 2 {
            // PATCHes that take effect, then hang: the kill lands in between.
            sim.control(
                "POST",
                "/_sim/faults",
                json!({ "method": "PATCH", "times": 3, "delay": "30s", "apply": true }),
            );
            let held = wait_for(Duration::from_secs(20), || {
                let f = sim.control("GET", "/_sim/faults", json!(null));
                f["faults"][0]["remaining"].as_u64() == Some(0)
                    || f["faults"].as_array().is_some_and(Vec::is_empty)
            });
            assert!(held, "no PATCH was held");
            sim.control("DELETE", "/_sim/faults", json!(null));
            // Kill every worker holding one: all of them, to be sure.
            for w in &mut workers {
                w.kill();
            }
            workers = (0..3).map(|_| worker(&flows, &url, &env)).collect();
            continue;
        }
        // Pacing the chaos, not waiting for anything: a kill a second or so.
        std::thread::sleep(Duration::from_millis(900));
        workers[victim].kill();
        workers[victim] = worker(&flows, &url, &env);
    }
    eprintln!("chaos over at {:?}", started.elapsed());
    let done = wait_for(Duration::from_secs(120), || succeeded(&workers[0]) == 500);
    eprintln!("all succeeded at {:?}", started.elapsed());
    assert!(done, "not every run succeeded: {:?}", statuses(&workers[0]));
    let state = sim.control("GET", "/_sim/state", json!(null));
    let tasks = state["tasks"].as_array().unwrap();
    let mut resumed = 0;
    for (run, task, outcome) in &expected {
        let t = tasks.iter().find(|t| t["id"] == task.as_str()).unwrap();
        assert_eq!(t["completions"], 1, "task of run {run}: {t}");
        let got = t["taskAssignments"][0]["outcome"].as_str();
        assert_eq!(got, Some(*outcome), "run {run}");
        let (_, _, trace) = workers[0].call("GET", &format!("/v1/runs/{run}/trace"), &[], None);
        resumed += usize::from(trace.contains("\"event\":\"run_resumed\""));
        assert_eq!(
            trace.matches("\"event\":\"flow_finished\"").count(),
            1,
            "{trace}"
        );
    }
    // At least the three whose PATCH was held; a kill finds most runs
    // waiting in a timer, as rows with no lease, which need no taking over.
    assert!(
        resumed >= 3,
        "only {resumed} runs were taken over from a killed worker"
    );
    // Nothing unfinished, so nothing left claimed by a dead worker.
    let counts = statuses(&workers[0]);
    assert_eq!((counts["running"], counts["waiting"]), (0, 0), "{counts:?}");
    let _ = std::fs::remove_dir_all(flows.parent().unwrap());
}

/// A worker paused (SIGSTOP) past its lease while its PATCH hangs: another
/// takes the run over and finishes it. When the paused one goes on, its
/// checkpoint is fenced off: it writes nothing over the other's run.
#[test]
#[cfg_attr(
    handoff_no_postgres,
    ignore = "needs Postgres: apt-get install postgresql (or name a cluster with HANDOFF_TEST_PG_URL and HANDOFF_TEST_PG_DIR)"
)]
fn a_paused_worker_is_fenced_off_from_the_run_another_took() {
    let (_turn, url) = crate::common::pg::database("fence");
    let sim = Sim::new();
    let env = workers_env(&sim);
    let flows = flows_dir("pg-fence");
    let a = worker(&flows, &url, &env);
    let (instance, task) = sim.instance(json!({ "delay": "0s" }));
    // A's PATCH takes effect and then hangs.
    sim.control(
        "POST",
        "/_sim/faults",
        json!({ "method": "PATCH", "times": 1, "delay": "6s", "apply": true }),
    );
    let (code, body) = a.json(
        "POST",
        "/v1/flows/complete-nwc-task/runs",
        Some(json!({ "inputs": { "instance_id": instance } })),
    );
    assert_eq!(code, 201, "{body}");
    let run = body["id"].as_str().unwrap().to_string();
    assert!(wait_for(
        Duration::from_secs(20),
        || sim.task(&task)["completionAttempts"] == 1
    ));
    a.signal(nix::sys::signal::Signal::SIGSTOP);
    let b = worker(&flows, &url, &env);
    // B takes the run once A's lease (2 s) runs out, and finishes it.
    let finished = wait_for(Duration::from_secs(30), || {
        let (_, r) = b.json("GET", &format!("/v1/runs/{run}"), None);
        r["status"] == "succeeded"
    });
    assert!(finished, "{}", b.log());
    let (_, before) = b.json("GET", &format!("/v1/runs/{run}"), None);
    let (_, _, trace_before) = b.call("GET", &format!("/v1/runs/{run}/trace"), &[], None);
    assert!(trace_before.contains("its lease ran out"), "{trace_before}");
    a.signal(nix::sys::signal::Signal::SIGCONT);
    // A's PATCH answer comes; its checkpoint is refused, and it says so.
    assert!(
        wait_for(Duration::from_secs(30), || a
            .log()
            .contains("another process holds this run now")),
        "{}",
        a.log()
    );
    let (_, after) = b.json("GET", &format!("/v1/runs/{run}"), None);
    let (_, _, trace_after) = b.call("GET", &format!("/v1/runs/{run}/trace"), &[], None);
    assert_eq!(before, after, "the run is as B left it");
    assert_eq!(trace_before, trace_after, "A wrote no event");
    assert_eq!(sim.task(&task)["completions"], 1);
    let _ = std::fs::remove_dir_all(flows.parent().unwrap());
}

/// Postgres restarts while 100 runs wait in timers: `/healthz` fails while
/// it is down, the workers reconnect, and every run still finishes.
#[test]
#[cfg_attr(
    handoff_no_postgres,
    ignore = "needs Postgres: apt-get install postgresql (or name a cluster with HANDOFF_TEST_PG_URL and HANDOFF_TEST_PG_DIR)"
)]
fn runs_survive_a_database_restart() {
    let (_turn, url) = crate::common::pg::database("restart");
    let dir = crate::common::pg::cluster().dir.display().to_string();
    let sim = Sim::new();
    let env = workers_env(&sim);
    let flows = flows_dir("pg-restart");
    let workers: Vec<Served> = (0..2).map(|_| worker(&flows, &url, &env)).collect();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": 2 }));
        let (code, body) = workers[i % 2].json(
            "POST",
            "/v1/flows/complete-nwc-task/runs",
            Some(json!({ "inputs": { "instance_id": instance, "poll_interval": "1s" } })),
        );
        assert_eq!(code, 201, "{body}");
        tasks.push(task);
    }
    let pg = |what: &str| {
        let out = std::process::Command::new("scripts/pg.sh")
            .args([what, &dir])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", crate::common::text(&out.stderr));
    };
    // A database that takes connections and never answers: `/healthz`
    // still answers, and says so, within its budget rather than hanging.
    pg("freeze");
    let (code, _, body) = workers[0].call("GET", "/healthz", &[], None);
    pg("thaw");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("the store did not answer within 800 ms"),
        "{body}"
    );
    pg("stop");
    let (code, _, body) = workers[0].call("GET", "/healthz", &[], None);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"code\":\"store\""), "{body}");
    pg("restart");
    assert!(wait_for(Duration::from_secs(30), || workers[0]
        .call("GET", "/healthz", &[], None)
        .0
        == 200));
    let done = wait_for(Duration::from_secs(90), || succeeded(&workers[0]) == 100);
    assert!(
        done,
        "{:?}\n{}\n{}",
        statuses(&workers[0]),
        workers[0].log(),
        workers[1].log()
    );
    for task in &tasks {
        assert_eq!(sim.task(task)["completions"], 1);
    }
    let _ = std::fs::remove_dir_all(flows.parent().unwrap());
}

/// The slots each run was started for, from their traces (`slot` is an input).
fn slots_of_runs(served: &Served) -> Vec<String> {
    let (_, body) = served.json("GET", "/v1/runs?flow=tick&limit=500", None);
    let mut slots = Vec::new();
    for run in body["runs"].as_array().unwrap() {
        let id = run["id"].as_str().unwrap();
        let (_, _, trace) = served.call("GET", &format!("/v1/runs/{id}/trace"), &[], None);
        let started = trace
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "flow_started")
            .unwrap_or_else(|| panic!("run {id} has no start: {trace}"));
        slots.push(started["fields"]["slot"].as_str().unwrap().to_string());
    }
    slots.sort();
    slots
}

fn second(slot: &str) -> i64 {
    slot.parse::<jiff::Timestamp>().unwrap().as_second()
}

/// A flow every second, three workers on one Postgres, two of them killed
/// (SIGKILL) and replaced in turn: every slot from the first to the last
/// starts one run, none two. Then every worker is killed, and one started
/// after a few slots went by runs the latest missed slot once
/// (`catch_up: one`) and goes on, still starting no slot twice.
#[test]
#[cfg_attr(
    handoff_no_postgres,
    ignore = "needs Postgres: apt-get install postgresql (or name a cluster with HANDOFF_TEST_PG_URL and HANDOFF_TEST_PG_DIR)"
)]
fn a_schedule_starts_each_slot_once_across_three_workers_and_kills() {
    let (_turn, url) = crate::common::pg::database("schedule");
    let dir = scratch("pg-schedule");
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(
        flows.join("tick.yaml"),
        r#"
flow: tick
fields:
  slot: { type: text, input: true, default: "" }
schedule:
  cron: "* * * * * *"
  timezone: Europe/Berlin
  catch_up: one
  inputs: { slot: "{{ slot }}" }
steps:
  - id: say
    log: "slot {{ slot }}"
"#,
    )
    .unwrap();
    let env = vec![("HANDOFF_STORE_KEY", KEY.to_string())];
    let runs = |w: &Served| succeeded(w);
    let mut workers: Vec<Served> = (0..3).map(|_| worker(&flows, &url, &env)).collect();
    for round in 0..2 {
        let before = runs(&workers[2]);
        assert!(
            wait_for(Duration::from_secs(20), || runs(&workers[2]) >= before + 3),
            "round {round}: slots stopped starting runs"
        );
        // One of three killed mid-stream, and replaced: the others go on.
        workers[round].kill();
        workers[round] = worker(&flows, &url, &env);
    }
    let before = runs(&workers[2]);
    assert!(wait_for(Duration::from_secs(20), || runs(&workers[2]) >= before + 2));
    let live = slots_of_runs(&workers[2]);
    for mut w in workers.drain(..) {
        w.kill();
    }
    let first = second(&live[0]);
    let last = second(live.last().unwrap());
    let expected: Vec<i64> = (first..=last).collect();
    let got: Vec<i64> = live.iter().map(|s| second(s)).collect();
    assert_eq!(
        got, expected,
        "one run a slot, none missed, none twice: {live:?}"
    );

    // Down for a few slots: the downtime is the scenario, so the test waits it out.
    let down_until = std::time::SystemTime::now() + Duration::from_millis(3500);
    while std::time::SystemTime::now() < down_until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let again = worker(&flows, &url, &env);
    let total = live.len();
    assert!(wait_for(Duration::from_secs(20), || runs(&again) >= total + 3));
    let all = slots_of_runs(&again);
    let seconds: Vec<i64> = all.iter().map(|s| second(s)).collect();
    let mut unique = seconds.clone();
    unique.dedup();
    assert_eq!(unique, seconds, "no slot twice: {all:?}");
    let after: Vec<i64> = seconds.iter().copied().filter(|s| *s > last).collect();
    // The missed slots: only the latest of them ran, once, then each slot again.
    assert!(after.len() >= 3, "{all:?}");
    assert!(
        after[0] >= last + 3,
        "the first slots of the downtime were not caught up: {all:?}"
    );
    for pair in after[1..].windows(2) {
        assert_eq!(pair[1] - pair[0], 1, "{all:?}");
    }
    drop(again);
}
