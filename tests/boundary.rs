//! Trust at the service boundary: what a caller who may start runs (the
//! API, a hook's sender, a batch row) can and cannot make the worker do.
//! Each test goes through the real binary against the simulator or a
//! loopback server, and every output is searched for the token.

mod common;

use std::path::{Path, PathBuf};

use common::{
    Loopback, Served, Sim, TOKEN, assert_clean, handoff, json_answer, scratch, text, until,
};
use serde_json::{Value, json};

fn flows(dir: &Path, files: &[&str]) -> PathBuf {
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    for file in files {
        let name = Path::new(file).file_name().unwrap();
        std::fs::copy(file, flows.join(name)).unwrap();
    }
    flows
}

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
fn a_hand_built_secret_header_goes_only_where_the_operator_said() {
    let thief = elsewhere();
    let nwc = Loopback::start(|_, _| json_answer(200, &json!({ "ok": true })));
    let env = [("NWC_BASE_URL", nwc.base.as_str()), ("NWC_TOKEN", TOKEN)];
    let run = |target: &str| {
        handoff(
            &[
                "run",
                "tests/files/boundary/hand-built.yaml",
                "--set",
                &format!("target={target}"),
            ],
            &env,
        )
    };
    for target in [
        format!("{}/collect", thief.base),
        format!(
            "{}@{}/x",
            nwc.base,
            thief.base.trim_start_matches("http://")
        ),
    ] {
        let out = run(&target);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let all = format!("{}{stderr}", text(&out.stdout));
        assert!(all.contains("a secret header goes only to"), "{all}");
        assert_clean(TOKEN, &[("output", &all)]);
    }
    assert!(thief.seen().is_empty(), "{:?}", thief.seen());
    // To the origin the operator configured, it goes.
    let out = run(&format!("{}/ok", nwc.base));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(nwc.seen().len(), 1);
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
