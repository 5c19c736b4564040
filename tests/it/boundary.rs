//! Trust at the service boundary: what a caller who may start runs (the
//! API, a hook's sender, a batch row) can and cannot make the worker do.
//! Each test goes through the real binary against the simulator or a
//! loopback server, and every output is searched for the token.

use std::path::Path;

use crate::common::{
    Loopback, Served, Sim, TOKEN, assert_clean, flows, handoff, json_answer, scratch, text, until,
};
use serde_json::{Value, json};

/// A server that answers 200 to anything, to show what reached it.
fn elsewhere() -> Loopback {
    Loopback::start(|_, _| json_answer(200, &json!({ "tasks": [{ "id": "stolen" }] })))
}

fn serve_against(sim: &Sim, dir: &Path, files: &[&str]) -> Served {
    let flows = flows(dir, files);
    Served::start(
        &flows,
        &dir.join("handoff.db"),
        &[("NWC_BASE_URL", sim.base.as_str()), ("NWC_TOKEN", TOKEN)],
    )
}

fn post(served: &Served, path: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let body = body.to_string();
    let (code, _, text) = served.call("POST", path, headers, Some(body.as_bytes()));
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn a_request_cannot_set_configuration_so_cannot_steer_the_token() {
    let sim = Sim::new();
    let thief = elsewhere();
    let dir = scratch("boundary-inputs");
    let served = serve_against(
        &sim,
        &dir,
        &["flows/complete-nwc-task.yaml", "flows/callback-worker.yaml"],
    );
    // `base_url` and `token` are `env:` fields; `assignee` too: configuration.
    for (flow, field, inputs) in [
        (
            "complete-nwc-task",
            "base_url",
            json!({ "instance_id": "i-1", "base_url": thief.base }),
        ),
        (
            "complete-nwc-task",
            "token",
            json!({ "instance_id": "i-1", "token": "x-attacker-token-000" }),
        ),
        (
            "complete-nwc-task",
            "assignee",
            json!({ "instance_id": "i-1", "assignee": "me@evil.example" }),
        ),
        (
            "callback-worker",
            "base_url",
            json!({
                "instance_id": "i-1", "container": "c", "callback_url": format!("{}/cb", thief.base),
                "base_url": thief.base,
            }),
        ),
        (
            "callback-worker",
            "inspect_url",
            json!({
                "instance_id": "i-1", "container": "c", "callback_url": format!("{}/cb", sim.base),
                "inspect_url": thief.base,
            }),
        ),
    ] {
        let (code, problem) = post(
            &served,
            &format!("/v1/flows/{flow}/runs"),
            &json!({ "inputs": inputs }),
            &[],
        );
        assert_eq!(
            (code, problem["code"].as_str()),
            (422, Some("bad_inputs")),
            "{problem}"
        );
        let errors = problem["errors"].to_string();
        assert!(
            errors.contains(&format!("`{field}` is configuration")),
            "{field}: {errors}"
        );
    }
    let (_, listed) = served.json("GET", "/v1/runs", None);
    assert_eq!(
        listed["runs"].as_array().unwrap().len(),
        0,
        "no run started"
    );

    // A call-out naming another host as its callback: the run starts, and
    // the token goes nowhere but NWC. Neighbours: a userinfo trick, another
    // port on the same host, and a prefix of the NWC host.
    let sim_host = sim.base.trim_start_matches("http://").to_string();
    let thief_host = thief.base.trim_start_matches("http://").to_string();
    for (i, callback) in [
        format!("{}/workflows/v1/instances/x/callbacks/y", thief.base),
        format!("http://{sim_host}@{thief_host}/cb"),
        format!("{}.{}/cb", sim.base, "evil.example"),
        format!("{}/cb?next={}", thief.base, sim.base),
    ]
    .iter()
    .enumerate()
    {
        let event = json!({
            "instanceId": format!("inst-{i}"), "callbackUrl": callback, "startData": { "container": "c" }
        });
        let (code, run) = post(&served, "/v1/hooks/callback-worker", &event, &[]);
        assert_eq!(code, 201, "{run}");
        let id = run["id"].as_str().unwrap().to_string();
        assert!(until(|| served
            .json("GET", &format!("/v1/runs/{id}"), None)
            .1["status"]
            == "failed"));
    }
    assert!(
        thief.seen().is_empty(),
        "the other host saw {:?}",
        thief.seen()
    );
    let log = served.log();
    assert_clean(TOKEN, &[("serve's log", &log)]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_batch_row_sets_inputs_only_and_the_command_line_is_the_operators() {
    let thief = elsewhere();
    let dir = scratch("boundary-rows");
    let rows = dir.join("rows.csv");
    std::fs::write(
        &rows,
        format!(
            "instance_id,base_url\ni-1,{}\ni-2,{}\n",
            thief.base, thief.base
        ),
    )
    .unwrap();
    let env = [("NWC_BASE_URL", "http://127.0.0.1:9"), ("NWC_TOKEN", TOKEN)];
    let out = handoff(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--each",
            rows.to_str().unwrap(),
        ],
        &env,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("row 1 of"), "{stderr}");
    assert!(stderr.contains("row 2 of"), "{stderr}");
    assert!(
        stderr.contains("field `base_url` is configuration (read from $NWC_BASE_URL)"),
        "{stderr}"
    );
    // A JSON Lines row is held to the same rule.
    let jsonl = dir.join("rows.jsonl");
    std::fs::write(
        &jsonl,
        format!(
            "{}\n",
            json!({ "instance_id": "i-3", "token": "x-row-token-0000" })
        ),
    )
    .unwrap();
    let out2 = handoff(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--each",
            jsonl.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(out2.status.code(), Some(2));
    assert!(
        text(&out2.stderr).contains("field `token` is configuration"),
        "{}",
        text(&out2.stderr)
    );
    assert!(thief.seen().is_empty(), "{:?}", thief.seen());

    // The command line is the operator's: `--set base_url=` points a run at
    // a simulator, as `NWC_BASE_URL=` would.
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s" }));
    let out3 = handoff(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--set",
            &format!("instance_id={instance}"),
            "--set",
            &format!("base_url={}", sim.base),
        ],
        &[("NWC_TOKEN", TOKEN), ("NWC_BASE_URL", thief.base.as_str())],
    );
    assert_eq!(out3.status.code(), Some(0), "{}", text(&out3.stderr));
    assert_eq!(sim.task(&task)["completions"], 1);
    assert!(thief.seen().is_empty());
    for out in [&out, &out2, &out3] {
        assert_clean(
            TOKEN,
            &[
                ("stdout", &text(&out.stdout)),
                ("stderr", &text(&out.stderr)),
            ],
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_secret_a_step_builds_goes_only_where_the_operator_said() {
    let thief = elsewhere();
    let nwc = Loopback::start(|_, _| json_answer(200, &json!({ "ok": true })));
    let env = [("NWC_BASE_URL", nwc.base.as_str()), ("NWC_TOKEN", TOKEN)];
    let run_flow = |flow: &str, target: &str| {
        handoff(&["run", flow, "--set", &format!("target={target}")], &env)
    };
    let flows = [
        "tests/files/boundary/hand-built.yaml",
        "tests/files/boundary/hand-built-body.yaml",
    ];
    for flow in flows {
        for target in [
            format!("{}/collect", thief.base),
            format!(
                "{}@{}/x",
                nwc.base,
                thief.base.trim_start_matches("http://")
            ),
        ] {
            let out = run_flow(flow, &target);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{flow}: {stderr}");
            let all = format!("{}{stderr}", text(&out.stdout));
            assert!(all.contains("a secret goes only to"), "{flow}: {all}");
            assert_clean(TOKEN, &[("output", &all)]);
        }
    }
    assert!(thief.seen().is_empty(), "{:?}", thief.seen());
    // To the origin the operator configured, it goes.
    for flow in flows {
        let out = run_flow(flow, &format!("{}/ok", nwc.base));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    assert_eq!(nwc.seen().len(), 2);
}

#[test]
fn an_event_is_typed_and_text_that_looks_false_is_refused() {
    let sim = Sim::new();
    let dir = scratch("boundary-events");
    let served = serve_against(&sim, &dir, &["flows/complete-nwc-task.yaml"]);
    let (_, flows) = served.json("GET", "/v1/flows", None);
    let shape = &flows["flows"][0]["event"];
    assert_eq!(shape["properties"]["passed"]["type"], "boolean", "{flows}");
    assert_eq!(
        shape["required"],
        json!(["eventId", "instanceId", "passed"])
    );

    for (i, passed) in [
        json!("false"),
        json!("0"),
        json!("no"),
        json!("False"),
        json!(0),
        json!(null),
        json!([false]),
    ]
    .into_iter()
    .enumerate()
    {
        let event = json!({ "eventId": format!("e-{i}"), "instanceId": "i-1", "passed": passed });
        let (code, problem) = post(&served, "/v1/hooks/complete-nwc-task", &event, &[]);
        assert_eq!(
            (code, problem["code"].as_str()),
            (422, Some("bad_event")),
            "{passed}: {problem}"
        );
        assert!(
            problem["errors"][0]
                .as_str()
                .unwrap()
                .starts_with("`passed`"),
            "{problem}"
        );
    }
    let missing = json!({ "eventId": "e-m", "passed": true });
    let (code, problem) = post(&served, "/v1/hooks/complete-nwc-task", &missing, &[]);
    assert_eq!(code, 422);
    assert!(
        problem["errors"]
            .to_string()
            .contains("`instanceId` is missing"),
        "{problem}"
    );
    let (_, listed) = served.json("GET", "/v1/runs", None);
    assert_eq!(
        listed["runs"].as_array().unwrap().len(),
        0,
        "no run started"
    );

    // `false`, the boolean, cancels.
    let (instance, task) = sim.instance(json!({ "delay": "0s" }));
    let event = json!({ "eventId": "e-ok", "instanceId": instance, "passed": false });
    let (code, run) = post(&served, "/v1/hooks/complete-nwc-task", &event, &[]);
    assert_eq!(code, 201, "{run}");
    assert!(until(|| sim.task(&task)["completions"] == 1));
    assert_eq!(sim.task(&task)["taskAssignments"][0]["outcome"], "Canceled");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_idempotency_key_with_other_inputs_is_a_conflict() {
    let sim = Sim::new();
    let dir = scratch("boundary-idempotency");
    let served = serve_against(&sim, &dir, &["flows/complete-nwc-task.yaml"]);
    let (a, task_a) = sim.instance(json!({ "delay": "0s" }));
    let (b, task_b) = sim.instance(json!({ "delay": "0s" }));
    let hook = |instance: &str| {
        let event = json!({ "eventId": "inspection-1", "instanceId": instance, "passed": true });
        post(&served, "/v1/hooks/complete-nwc-task", &event, &[])
    };
    let (code, first) = hook(&a);
    assert_eq!(code, 201, "{first}");
    let (code, again) = hook(&a);
    assert_eq!((code, &again["id"]), (200, &first["id"]), "a retry replays");
    let (code, other) = hook(&b);
    assert_eq!(
        (code, other["code"].as_str()),
        (409, Some("idempotency_conflict")),
        "{other}"
    );

    // The API's `Idempotency-Key` likewise; the inputs' order does not matter.
    let key = [("Idempotency-Key", "batch-7")];
    let start = |inputs: &str| {
        let body = format!("{{\"inputs\": {inputs}}}");
        let (code, _, text) = served.call(
            "POST",
            "/v1/flows/complete-nwc-task/runs",
            &key,
            Some(body.as_bytes()),
        );
        (
            code,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };
    let (code, made) = start(&format!(r#"{{"instance_id": "{b}", "max_tries": 3}}"#));
    assert_eq!(code, 201, "{made}");
    let (code, same) = start(&format!(r#"{{"max_tries": 3, "instance_id": "{b}"}}"#));
    assert_eq!((code, &same["id"]), (200, &made["id"]));
    // One shape for both answers: the run, as `GET /v1/runs/{id}` shows it.
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&made), keys(&same), "{made} {same}");
    let (_, shown) = served.json("GET", made["url"].as_str().unwrap(), None);
    let mut shown_keys = keys(&shown);
    shown_keys.push("url".into());
    shown_keys.sort();
    assert_eq!(keys(&made), shown_keys, "{shown}");
    assert_eq!(made["flow_version"], same["flow_version"]);
    let (code, conflict) = start(&format!(r#"{{"instance_id": "{b}", "max_tries": 4}}"#));
    assert_eq!(
        (code, conflict["code"].as_str()),
        (409, Some("idempotency_conflict"))
    );

    assert!(until(
        || sim.task(&task_a)["completions"] == 1 && sim.task(&task_b)["completions"] == 1
    ));
    let (_, _, scrape) = served.call("GET", "/metrics", &[], None);
    assert!(
        scrape.contains("handoff_starts_refused_total{flow=\"complete-nwc-task\",code=\"idempotency_conflict\"} 2"),
        "{scrape}"
    );
    let log = served.log();
    assert_eq!(
        log.matches("warning: idempotency conflict on flow `complete-nwc-task`")
            .count(),
        2,
        "{log}"
    );
    assert_clean(TOKEN, &[("log", &log), ("metrics", &scrape)]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One request on a connection of its own (`Connection: close`): the
/// status and the body. A fresh connection, so no pooled one can have been
/// closed under it.
fn fresh(base: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `count` connections: a third idle, a third sending half a request's
/// headers and then nothing, a third sending whole headers and a body that
/// never comes.
fn flood(base: &str, count: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let mut held = Vec::new();
    for i in 0..count {
        if let Ok(mut s) =
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        {
            let start: &[u8] = match i % 3 {
                0 => b"",
                1 => b"POST /v1/flows/complete-nwc-task/runs HTTP/1.1\r\nHost: x\r\nContent-Le",
                _ => b"POST /v1/hooks/complete-nwc-task HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{",
            };
            let _ = s.write_all(start);
            held.push(s);
        }
    }
    held
}

/// The two floods run one at a time: each needs its connections made
/// within its server's deadline for a request, and two at once on two cores
/// slow each other's down.
static FLOODS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn metric(scrape: &str, name: &str) -> u64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {scrape}"))
}

fn run_to_the_end(sim: &Sim, served: &Served) -> (String, String) {
    let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": 2 }));
    let inputs =
        json!({ "inputs": { "instance_id": instance, "poll_interval": "1s" } }).to_string();
    let (code, made) = fresh(
        &served.base,
        "POST",
        "/v1/flows/complete-nwc-task/runs",
        &inputs,
    );
    assert_eq!(code, 201, "{made}");
    let id = serde_json::from_str::<Value>(&made).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ended = until(|| {
        let (_, run) = fresh(&served.base, "GET", &format!("/v1/runs/{id}"), "");
        run.contains("\"status\":\"succeeded\"") || run.contains("\"status\":\"failed\"")
    });
    assert!(ended, "{}", served.log());
    (id, task)
}

#[test]
fn idle_and_slow_connections_do_not_starve_the_worker() {
    let _one = FLOODS.lock().unwrap_or_else(|e| e.into_inner());
    let sim = Sim::new();
    let dir = scratch("boundary-flood");
    let flows = flows(&dir, &["flows/complete-nwc-task.yaml"]);
    let env = [("NWC_BASE_URL", sim.base.as_str()), ("NWC_TOKEN", TOKEN)];
    let served = Served::start_limited(&flows, &dir.join("handoff.db"), &env, &[], 1024);
    assert!(
        served
            .log()
            .contains("open files: 1024; connections: at most 768"),
        "{}",
        served.log()
    );

    let held = flood(&served.base, 2000);
    assert!(
        held.len() >= 1900,
        "only {} connections were made",
        held.len()
    );
    // While they are held: the health check answers, and a run completes.
    let (code, health) = fresh(&served.base, "GET", "/healthz", "");
    assert_eq!(code, 200, "{health}");
    let (id, task) = run_to_the_end(&sim, &served);
    let (_, run) = fresh(&served.base, "GET", &format!("/v1/runs/{id}"), "");
    assert!(run.contains("\"status\":\"succeeded\""), "{run}");
    assert_eq!(sim.task(&task)["completions"], 1);
    // Every flooding connection was accepted by now (the run's own requests
    // came after them); each one past the cap was shed, by eviction when a
    // newcomer needed its place, or by its deadline for a request when the
    // flood was slow. Which of the two depends on the machine's speed, so
    // the test counts both.
    let accepted = |scrape: &str| metric(scrape, "handoff_connections_accepted_total");
    let all_in =
        until(|| accepted(&fresh(&served.base, "GET", "/metrics", "").1) >= held.len() as u64);
    let (_, scrape) = fresh(&served.base, "GET", "/metrics", "");
    assert!(all_in, "{} made, {scrape}", held.len());
    assert_eq!(metric(&scrape, "handoff_open_files_limit"), 1024);
    assert!(
        metric(&scrape, "handoff_connections_open") <= 768,
        "{scrape}"
    );
    let evicted = metric(&scrape, "handoff_connections_evicted_total");
    let timed_out = metric(&scrape, "handoff_connections_timed_out_total");
    assert!(evicted > 0, "{scrape}");
    assert!(
        evicted + timed_out >= held.len() as u64 - 768,
        "{} made, {scrape}",
        held.len()
    );
    drop(held);
    assert_clean(TOKEN, &[("log", &served.log()), ("metrics", &scrape)]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn out_of_open_files_a_step_waits_and_the_run_goes_on() {
    let _one = FLOODS.lock().unwrap_or_else(|e| e.into_inner());
    let target = Loopback::start(|_, _| json_answer(200, &json!({ "ok": true })));
    let dir = scratch("boundary-emfile");
    let flows = flows(&dir, &["tests/files/boundary/ping.yaml"]);
    let env = [("NWC_BASE_URL", target.base.as_str())];
    // A cap above the limit (a misconfiguration): the connections take every
    // descriptor until their deadline for a request frees them.
    let args = ["--max-connections", "5000", "--header-timeout", "4s"];
    let served = Served::start_limited(&flows, &dir.join("handoff.db"), &env, &args, 1024);
    let (code, made) = fresh(&served.base, "POST", "/v1/flows/ping/runs", "{}");
    assert_eq!(code, 201, "{made}");
    let id = serde_json::from_str::<Value>(&made).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The run pings for four seconds at least: the flood lands meanwhile.
    let held = flood(&served.base, 1100);
    let held_count = held.len();
    let ended = until(|| {
        let (_, run) = fresh(&served.base, "GET", &format!("/v1/runs/{id}"), "");
        run.contains("\"status\":\"succeeded\"") || run.contains("\"status\":\"failed\"")
    });
    drop(held);
    assert!(ended, "{}", served.log());
    let (_, run) = fresh(&served.base, "GET", &format!("/v1/runs/{id}"), "");
    assert!(
        run.contains("\"status\":\"succeeded\""),
        "{run}\n{}",
        served.log()
    );
    let (_, trace) = fresh(&served.base, "GET", &format!("/v1/runs/{id}/trace"), "");
    let (_, scrape) = fresh(&served.base, "GET", "/metrics", "");
    assert!(
        trace.contains("this machine ran short: Too many open files"),
        "{} connections held\n{scrape}",
        held_count
    );
    assert_eq!(target.seen().len(), 40, "each ping sent once");
    assert!(
        metric(&scrape, "handoff_accept_errors_total") > 0,
        "{scrape}"
    );
    // Two thirds owed a request and were closed at their deadline; the
    // rest, whose bodies never came, at the body's.
    assert!(
        metric(&scrape, "handoff_connections_timed_out_total") >= 700,
        "{scrape}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs SQL against a SQLite store, as someone with the file would.
fn tamper(db: &Path, sql: &str) {
    let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.executescript(sys.argv[2])\nc.commit()\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(db)
        .arg(sql)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn what_a_store_holds_is_read_as_input() {
    let dir = scratch("boundary-store");
    let flows = flows(&dir, &["tests/files/long-timer.yaml"]);
    let db = dir.join("handoff.db");
    let mut served = Served::start(&flows, &db, &[]);
    let ids: Vec<String> = (0..3)
        .map(|_| {
            let (code, run) = served.json("POST", "/v1/flows/long-timer/runs", Some(json!({})));
            assert_eq!(code, 201, "{run}");
            run["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(until(|| ids.iter().all(|id| {
        served.json("GET", &format!("/v1/runs/{id}"), None).1["status"] == "waiting"
    })));
    assert_eq!(served.terminate(), Some(0));
    let odd = "rün-ïd-ÿ-\u{1F600}-with-more-than-thirteen-characters";
    // A: a timer at the end of time. B: an id of multi-byte characters, due
    // now. C: its flow's text changed behind its recorded version (a version
    // of its own, whose text is not what its name says).
    tamper(
        &db,
        &format!(
            "UPDATE runs SET wake_at_ms = 9223372036854775807, state = json_set(state, '$.wake_at_ms', 9223372036854775807) WHERE id = '{a}';
             UPDATE runs SET id = '{odd}', wake_at_ms = 0, state = json_set(state, '$.wake_at_ms', 0) WHERE id = '{b}';
             UPDATE events SET run_id = '{odd}' WHERE run_id = '{b}';
             INSERT INTO flow_versions (hash, source)
                 SELECT 'c-version', replace(source, 'never reached', 'edited in the store')
                 FROM flow_versions JOIN runs ON runs.flow_hash = flow_versions.hash WHERE runs.id = '{c}';
             UPDATE runs SET flow_hash = 'c-version' WHERE id = '{c}';",
            a = ids[0],
            b = ids[1],
            c = ids[2]
        ),
    );
    let store = db.to_str().unwrap();
    let list = handoff(&["runs", "--store", store], &[]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list.stderr));
    let listed = text(&list.stdout);
    assert!(
        listed.contains("until 9999-12-31T23:59:59.999Z"),
        "{listed}"
    );
    assert!(listed.contains(odd), "{listed}");
    let show = handoff(&["runs", "show", odd, "--store", store], &[]);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
    let show = handoff(&["runs", "show", &ids[0], "--store", store], &[]);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));

    // The run page and the API list them all.
    let served = Served::start(&flows, &db, &[]);
    for path in ["/", "/v1/runs", &format!("/runs/{}", ids[0])] {
        let (code, _, body) = served.call("GET", path, &[], None);
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (code, _, page) = served.call("GET", "/", &[], None);
    assert_eq!(code, 200);
    assert!(page.contains("rün-ïd-ÿ-\u{1F600}"), "{page}");
    drop(served);

    // Resuming: B goes on; A and C are refused, each with why, and not run.
    let resumed = handoff(&["resume", "--all", "--store", store], &[]);
    let said = format!("{}{}", text(&resumed.stdout), text(&resumed.stderr));
    assert!(
        !said.contains("panicked") && !said.contains("internal error"),
        "{said}"
    );
    assert!(
        said.contains(&format!("run `{}` has a damaged state in the store: its timer wakes at 9999-12-31T23:59:59.999Z", ids[0])),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "run `{}`'s stored flow is not the version it started with",
            ids[2]
        )),
        "{said}"
    );
    let status = |id: &str| {
        let out = handoff(
            &["runs", "show", id, "--store", store, "--trace", "jsonl"],
            &[],
        );
        text(&out.stdout)
    };
    assert!(
        status(odd).contains("\"status\":\"succeeded\""),
        "{}",
        status(odd)
    );
    assert!(!status(&ids[0]).contains("flow_finished"));
    assert!(!status(&ids[2]).contains("edited in the store"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The readers behind `runs`, `runs show`, `diff` and serve's API, over
/// extreme and pseudo-random stored values: a value or an error, never a
/// panic. `fuzz/fuzz_targets/read_back.rs` does the same from any bytes.
#[test]
fn stored_values_of_any_shape_are_read_without_panic() {
    use handoff::engine::checkpoint::DurableStatus;
    use handoff::store::{Lease, StoredRun};
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let texts = [
        String::new(),
        "ÿ".repeat(40),
        "\u{1F600}a\u{0301}\u{202E}\u{0}".to_string(),
        "flow: x\nsteps:\n  - id: a\n    end: ok\n".to_string(),
        r#"{"fields":{},"secret":[],"pc":99,"steps_taken":1,"visits":[],"recent":[7],"wake_at_ms":-1}"#.to_string(),
    ];
    let times = [
        i64::MIN,
        -1,
        0,
        1,
        handoff::run::clock::MAX_UNIX_MS,
        handoff::run::clock::MAX_UNIX_MS + 1,
        i64::MAX,
    ];
    for round in 0..2000 {
        let pick = |n: u64| &texts[(n % texts.len() as u64) as usize];
        let time = |n: u64| {
            if n.is_multiple_of(3) {
                times[(n / 3 % times.len() as u64) as usize]
            } else {
                n as i64
            }
        };
        let id = pick(next()).clone();
        let source = pick(next()).clone();
        let run = StoredRun {
            id: id.clone(),
            flow: id.clone(),
            flow_path: id.clone(),
            flow_hash: if round % 2 == 0 {
                handoff::store::flow_hash(&source)
            } else {
                id.clone()
            },
            flow_source: source,
            inputs: pick(next()).clone(),
            status: DurableStatus::Waiting,
            step: Some(id.clone()),
            wake_at_ms: Some(time(next())),
            steps_taken: next(),
            state: pick(next()).clone(),
            progress: (round % 3 == 0).then(|| pick(next()).clone()),
            waiting_for: (round % 4 == 0).then(|| pick(next()).clone()),
            signal: (round % 5 == 0).then(|| pick(next()).clone()),
            outcome: Some(pick(next()).clone()),
            created_ms: time(next()),
            updated_ms: time(next()),
            exported_seq: next(),
            title: (round % 6 == 0).then(|| pick(next()).clone()),
            lease: Some(Lease {
                owner: id.clone(),
                until_ms: time(next()),
            }),
        };
        let summary = handoff::serve::api::summary(&run);
        assert!(summary.is_object());
        let _ = handoff::store::durable::pinned_flow(&run);
        let shown = handoff::run::clock::rfc3339(handoff::run::clock::from_unix_ms(time(next())));
        assert_eq!(shown.len(), 24, "{shown}");
        let clipped = handoff::language::fields::clip(&id, (next() % 50) as usize);
        assert!(id.starts_with(clipped));
    }
    // Trace lines, whole and cut anywhere.
    let line = r#"{"seq":1,"at_ms":18446744073709551615,"time":"9999-12-31T23:59:59.999Z","run":"rün","step":"ÿ","event":"timer_started","duration_ms":18446744073709551615,"wake_at":"+999999-01-01T00:00:00Z"}"#;
    let style = handoff::cli::report::Style { color: false };
    for end in 0..=line.len() {
        let Some(cut) = line.get(..end) else { continue };
        if let Ok(event) = serde_json::from_str::<handoff::run::trace::TraceEvent>(cut) {
            let _ = handoff::cli::report::pretty(&event, style, None);
            let _ = handoff::cli::report::jsonl(&event);
        }
    }
}

#[test]
fn a_signed_hook_cannot_be_replayed() {
    const SECRET: &str = "stamp-secret-for-tests-77a1";
    let dir = scratch("boundary-stamped");
    let flows = flows(&dir, &["tests/files/boundary/stamped.yaml"]);
    let served = Served::start(&flows, &dir.join("handoff.db"), &[("STAMP_SECRET", SECRET)]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let send = |t: u64, body: &str| {
        let mac = handoff::serve::access::sign(SECRET.as_bytes(), format!("{t}.{body}").as_bytes());
        let header = format!("t={t},v1={}", mac.trim_start_matches("sha256="));
        let (code, _, text) = served.call(
            "POST",
            "/v1/hooks/stamped",
            &[("X-Signature", header.as_str())],
            Some(body.as_bytes()),
        );
        (
            code,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };
    let body = r#"{"note": "first"}"#;
    let (code, run) = send(now, body);
    assert_eq!(code, 201, "{run}");
    let (code, again) = send(now, body);
    assert_eq!(
        (code, again["code"].as_str()),
        (409, Some("replayed_signature")),
        "{again}"
    );
    // Signed correctly an hour ago, or an hour ahead: outside the window.
    for t in [now - 3600, now + 3600] {
        let (code, stale) = send(t, r#"{"note": "old"}"#);
        assert_eq!(
            (code, stale["code"].as_str()),
            (401, Some("stale_signature")),
            "{stale}"
        );
    }
    // A signature moved to a fresh time no longer matches.
    let mac = handoff::serve::access::sign(
        SECRET.as_bytes(),
        format!("{}.{body}", now - 3600).as_bytes(),
    );
    let moved = format!("t={now},v1={}", mac.trim_start_matches("sha256="));
    let (code, _, _) = served.call(
        "POST",
        "/v1/hooks/stamped",
        &[("X-Signature", moved.as_str())],
        Some(body.as_bytes()),
    );
    assert_eq!(code, 401);
    let (code, fresh) = send(now, r#"{"note": "second"}"#);
    assert_eq!(code, 201, "{fresh}");
    let (_, _, scrape) = served.call("GET", "/metrics", &[], None);
    assert!(
        scrape.contains(
            "handoff_starts_refused_total{flow=\"stamped\",code=\"replayed_signature\"} 1"
        ),
        "{scrape}"
    );
    assert!(
        scrape
            .contains("handoff_starts_refused_total{flow=\"stamped\",code=\"stale_signature\"} 2"),
        "{scrape}"
    );
    let (_, listed) = served.json("GET", "/v1/runs", None);
    assert_eq!(listed["runs"].as_array().unwrap().len(), 2);
    assert_clean(SECRET, &[("log", &served.log()), ("metrics", &scrape)]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sign_ins_are_limited_sessions_are_their_own_and_the_store_is_private() {
    use std::os::unix::fs::PermissionsExt;
    const API_TOKEN: &str = "api-token-for-boundary-tests-9f0e";
    let dir = scratch("boundary-sessions");
    let flows = flows(&dir, &["tests/files/long-timer.yaml"]);
    let db = dir.join("handoff.db");
    let served = Served::start_with(
        &flows,
        &db,
        &[("HANDOFF_API_TOKEN", API_TOKEN)],
        &["--behind-tls"],
    );
    // A sign-in answers with a redirect, which a client must not follow
    // here: the cookie is in the answer itself.
    let login = |token: &str| {
        use std::io::{Read, Write};
        let addr = served.base.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let body = format!("token={token}");
        let request = format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let code: u16 = answer.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let head = answer.split("\r\n\r\n").next().unwrap_or("");
        let headers: Vec<(String, String)> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (code, headers, answer)
    };
    let cookie_of = |headers: &[(String, String)]| {
        headers
            .iter()
            .find(|(n, _)| n == "set-cookie")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (code, first, _) = login(API_TOKEN);
    assert_eq!(code, 303);
    let (_, second, _) = login(API_TOKEN);
    let (a, b) = (cookie_of(&first), cookie_of(&second));
    assert!(
        a.contains("; Secure") && a.contains("HttpOnly") && a.contains("Max-Age=43200"),
        "{a}"
    );
    assert_ne!(a, b, "each sign-in gets its own session");
    assert!(!a.contains(API_TOKEN));
    for _ in 0..5 {
        assert_eq!(login("not-the-token-at-all").0, 401);
    }
    let (code, headers, _) = login(API_TOKEN);
    assert_eq!(
        code, 429,
        "the sixth try in a minute waits, even with the right token"
    );
    assert!(headers.iter().any(|(n, _)| n == "retry-after"));

    // The store and its WAL files are the owner's alone.
    let (code, _) = served.json("POST", "/v1/flows/long-timer/runs", Some(json!({})));
    assert_eq!(code, 401, "the API wants the token");
    // The scheme is case-insensitive (RFC 9110).
    for scheme in ["BEARER", "bearer", "bEaReR"] {
        let header = format!("{scheme} {API_TOKEN}");
        let (code, _, body) = served.call(
            "GET",
            "/v1/runs",
            &[("Authorization", header.as_str())],
            None,
        );
        assert_eq!(code, 200, "{scheme}: {body}");
    }
    let auth = format!("Bearer {API_TOKEN}");
    let (code, _, _) = served.call(
        "POST",
        "/v1/flows/long-timer/runs",
        &[("Authorization", auth.as_str())],
        Some(b"{}"),
    );
    assert_eq!(code, 201);
    for suffix in ["", "-wal", "-shm", ".key"] {
        let path = format!("{}{suffix}", db.display());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path} is {mode:o}");
    }
    assert_clean(API_TOKEN, &[("log", &served.log())]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn endless_files_stop_at_a_named_limit() {
    let diff = handoff(&["diff", "/dev/zero", "/dev/zero"], &[]);
    assert_eq!(diff.status.code(), Some(2));
    assert!(
        text(&diff.stderr).contains("cannot read `/dev/zero`: a line is longer than 16 MB"),
        "{}",
        text(&diff.stderr)
    );
    let rows = handoff(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--each",
            "/dev/zero",
            "--dry-run",
        ],
        &[("NWC_TOKEN", TOKEN)],
    );
    assert_eq!(rows.status.code(), Some(2));
    let said = text(&rows.stderr);
    assert!(said.contains("a line is longer than 1 MB"), "{said}");
    assert!(!said.contains("panicked"), "{said}");
}
