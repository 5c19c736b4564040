//! Several workers on one Postgres: the store's contract, the shared key,
//! a chaos run where workers are killed while 500 runs go on, a paused
//! worker fenced off from the run another took, and a database restart.
//!
//! They need a server: `HANDOFF_TEST_PG_URL` (and `HANDOFF_TEST_PG_DIR`,
//! the cluster's folder, for the restart). `.ci/run` starts a throwaway
//! cluster with `scripts/pg.sh` and sets both; without them, locally, each
//! test says it was skipped. Each test works in a database of its own.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Served, Sim, TOKEN, scratch};
use handoff::engine::checkpoint::DurableStatus;
use handoff::engine::checkpoint::Saved;
use handoff::store::postgres::PgStore;
use handoff::store::{Checkpoint, Claimed, Lease, NewRun, Store};
use serde_json::json;

/// The restart test stops the whole cluster: the others wait for it.
static CLUSTER: Mutex<()> = Mutex::new(());

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A database of this test's own, or `None` (said on stderr) without a server.
fn database(name: &str) -> Option<String> {
    let Ok(base) = std::env::var("HANDOFF_TEST_PG_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set HANDOFF_TEST_PG_URL (see .ci/run)"
        );
        eprintln!("skipped: HANDOFF_TEST_PG_URL is not set (`scripts/pg.sh start DIR` prints one)");
        return None;
    };
    let db = format!("handoff_{name}_{}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut conn)
            .await
            .unwrap();
    });
    let mut url = reqwest::Url::parse(&base).unwrap();
    url.set_path(&db);
    Some(url.to_string())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn new_run(id: &str, owner: &str, until_ms: i64) -> NewRun {
    NewRun {
        id: id.to_string(),
        flow: "f".into(),
        flow_path: "f.yaml".into(),
        flow_source: "flow: f".into(),
        flow_hash: handoff::store::flow_hash("flow: f"),
        inputs: "{}".into(),
        state: "{}".into(),
        created_ms: 1,
        lease: Lease {
            owner: owner.into(),
            until_ms,
        },
        idempotency: None,
    }
}

#[test]
fn the_store_keeps_the_contract_on_postgres() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(url) = database("contract") else {
        return;
    };
    rt().block_on(async {
        let store = PgStore::open(&url, 4).await.unwrap();
        // Opening again migrates nothing twice.
        let store2 = PgStore::open(&url, 4).await.unwrap();
        let key = handoff::store::IdempotencyKey {
            scope: "api/f".into(),
            key: "k1".into(),
            fingerprint: Some("inputs-1".into()),
        };
        let keyed = NewRun {
            idempotency: Some(key.clone()),
            ..new_run("a", "me", 1_000)
        };
        assert_eq!(
            store.create(&keyed).await.unwrap(),
            handoff::store::Created::New
        );
        assert_eq!(
            store2
                .create(&NewRun {
                    idempotency: Some(key.clone()),
                    ..new_run("b", "me", 1_000)
                })
                .await
                .unwrap(),
            handoff::store::Created::Existing("a".into())
        );
        assert!(store.load("b").await.unwrap().is_none());
        // The same key with other inputs: a conflict, and no second row.
        assert_eq!(
            store2
                .create(&NewRun {
                    idempotency: Some(handoff::store::IdempotencyKey {
                        fingerprint: Some("inputs-2".into()),
                        ..key
                    }),
                    ..new_run("b", "me", 1_000)
                })
                .await
                .unwrap(),
            handoff::store::Created::Conflict("a".into())
        );
        assert!(store.load("b").await.unwrap().is_none());
        store.create(&new_run("c", "me", 1_000)).await.unwrap();
        let wait = Checkpoint {
            run_id: "a".into(),
            owner: "me".into(),
            status: DurableStatus::Waiting,
            step: Some("wait".into()),
            wake_at_ms: Some(100),
            steps_taken: 1,
            state: "{}".into(),
            outcome: None,
            events: vec![(1, "e1".into()), (2, "e2".into())],
            updated_ms: 5,
        };
        assert_eq!(store.checkpoint(&wait).await.unwrap(), Saved::Saved);
        // Written again after a crash: the events are kept once.
        assert_eq!(store.checkpoint(&wait).await.unwrap(), Saved::Saved);
        assert_eq!(store.events("a").await.unwrap(), ["e1", "e2"]);
        assert_eq!(store.next_wake().await.unwrap(), Some(100));
        assert!(store.due(99, "me", 10).await.unwrap().is_empty());
        assert_eq!(store.due(100, "me", 10).await.unwrap(), ["a"]);
        assert!(
            store.due(100, "other", 10).await.unwrap().is_empty(),
            "held"
        );
        // The lease: another worker cannot take a held run or write to it…
        let other = Lease {
            owner: "other".into(),
            until_ms: 9_000,
        };
        assert!(matches!(
            store.claim("c", &other, 500, None).await.unwrap(),
            Claimed::Held(_)
        ));
        let theirs = Checkpoint {
            run_id: "c".into(),
            owner: "other".into(),
            ..wait.clone()
        };
        assert_eq!(store.checkpoint(&theirs).await.unwrap(), Saved::Lost);
        // …until it runs out; then the first owner is fenced off.
        assert_eq!(
            store.claim("c", &other, 2_000, None).await.unwrap(),
            Claimed::Taken
        );
        assert_eq!(store.checkpoint(&theirs).await.unwrap(), Saved::Saved);
        let mine = Checkpoint {
            run_id: "c".into(),
            ..wait.clone()
        };
        assert_eq!(
            store.checkpoint(&mine).await.unwrap(),
            Saved::Lost,
            "fenced"
        );
        assert!(
            !store
                .renew(
                    "c",
                    &Lease {
                        owner: "me".into(),
                        until_ms: 99_000
                    }
                )
                .await
                .unwrap()
        );
        assert!(store.cancel("c", 6).await.unwrap());
        assert_eq!(store.checkpoint(&theirs).await.unwrap(), Saved::Canceled);
        assert_eq!(store.counts().await.unwrap().len(), 2);
        store.ping().await.unwrap();
        assert!(store.changes().is_some());
    });
}

#[test]
fn every_worker_needs_the_same_store_key() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(url) = database("keys") else {
        return;
    };
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
    let said = common::text(&none.stderr);
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
    assert!(common::text(&other.stderr).contains("is not the key this store's other workers use"));
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
fn three_workers_lose_no_run_and_do_none_twice_while_killed() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(url) = database("chaos") else {
        return;
    };
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
fn a_paused_worker_is_fenced_off_from_the_run_another_took() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(url) = database("fence") else {
        return;
    };
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
fn runs_survive_a_database_restart() {
    let _cluster = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(url) = database("restart") else {
        return;
    };
    let Ok(dir) = std::env::var("HANDOFF_TEST_PG_DIR") else {
        eprintln!("skipped: HANDOFF_TEST_PG_DIR is not set, so the cluster cannot be restarted");
        return;
    };
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
        assert!(out.status.success(), "{}", common::text(&out.stderr));
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
