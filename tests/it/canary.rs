//! The secret canary: every example flow and every failure path runs with a
//! token no output should ever contain, and everything the process wrote
//! (stdout, stderr, the JSONL trace file) is searched for it: raw, percent-
//! and form-encoded, base64 and base64url at every alignment, and its first
//! eleven characters, which a truncated excerpt would show.

use std::process::{Command, Output};

use crate::common::{Sim, config};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use handoff::sim::shared::SimConfig;
use serde_json::json;

/// `+`, `/` and `=` make every encoding differ from the raw text.
const CANARY: &str = "canary-7f3a+9c/1d=ee";

/// A session cookie the server sets: handoff never learns it is a secret,
/// so only the header's name can tell it to mask it.
const COOKIE: &str = "cookie-c4n4ry-5e6f+7a8b";

/// Every form the canary could leak in.
fn forms() -> Vec<String> {
    let mut out = forms_of(CANARY);
    out.extend(forms_of(COOKIE));
    out
}

/// The forms `shared/tools/secret-scan.py` looks for, and more: raw, upper
/// and lower case, reversed, hex, the first eleven characters, 8-character
/// pieces, percent-encoded both ways, base64 and base64url at every alignment.
fn forms_of(secret: &str) -> Vec<String> {
    let mut out = vec![
        secret.to_uppercase(),
        secret.chars().rev().collect(),
        secret.bytes().map(|b| format!("{b:02x}")).collect(),
        secret.bytes().map(|b| format!("{b:02X}")).collect(),
    ];
    for i in (0..secret.len().saturating_sub(8)).step_by(4) {
        out.push(secret[i..i + 8].to_string());
    }
    out.extend([
        secret.to_string(),
        secret[..11].to_string(),
        secret
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D"),
        secret
            .replace('+', "%2b")
            .replace('/', "%2f")
            .replace('=', "%3d"),
    ]);
    // Inside a longer encoded string, the canary's base64 depends on where it
    // starts; the middle of each alignment is fixed.
    for engine in [&STANDARD, &URL_SAFE] {
        for pad in 0..3 {
            let text = format!("{}{secret}", "x".repeat(pad));
            let encoded = engine.encode(text.as_bytes());
            let skip = (pad * 4).div_ceil(3) + 1;
            out.push(encoded[skip..encoded.len() - 3].to_string());
        }
    }
    out
}

/// Where the runs write their traces. Not named after the canary: paths show
/// in outputs (`diff` names its files), and `handoff-canary-7…` for a process
/// id starting with 7 holds the canary's first piece, `canary-7`.
fn leak_dir(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("handoff-leakcheck{what}-{}", std::process::id()))
}

/// A run's every output, with the trace file it wrote.
struct Written {
    name: String,
    code: Option<i32>,
    text: String,
}

fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Written {
    let dir = leak_dir("");
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join(format!("{name}.jsonl"));
    let _ = std::fs::remove_file(&trace);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff"));
    cmd.args(["--color", "never"]).args(args);
    if args.first() == Some(&"run") && !args.contains(&"--each") {
        cmd.args(["--trace-file", trace.to_str().unwrap()]);
    }
    let out: Output = cmd.envs(env.iter().copied()).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text.push_str(&std::fs::read_to_string(&trace).unwrap_or_default());
    Written {
        name: name.to_string(),
        code: out.status.code(),
        text,
    }
}

fn assert_clean(runs: &[Written]) {
    let forms = forms();
    let squashed = |t: &str| -> String {
        t.chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_lowercase()
    };
    for run in runs {
        assert!(!run.text.is_empty(), "{} wrote nothing", run.name);
        for (i, form) in forms.iter().enumerate() {
            // Never print the form itself: it is the secret, or a piece of it.
            assert!(
                !run.text.contains(form.as_str()),
                "{}: the canary leaked (form #{i})",
                run.name
            );
        }
        let all = squashed(&run.text);
        for secret in [CANARY, COOKIE] {
            assert!(
                !all.contains(&squashed(secret)),
                "{}: the canary leaked with its punctuation removed",
                run.name
            );
        }
        assert!(!run.text.contains("panicked"), "{}: {}", run.name, run.text);
    }
}

#[test]
fn the_examples_dry_run_without_leaking() {
    let token = [
        ("NWC_TOKEN", CANARY),
        ("NWC_CLIENT_ID", "client-1"),
        ("NWC_CLIENT_SECRET", CANARY),
    ];
    let mut runs = Vec::new();
    for (name, flow, extra) in [
        (
            "reference",
            "flows/complete-nwc-task",
            "instance_id=7c1e4b52-instance",
        ),
        (
            "cancel",
            "flows/cancel-on-failure",
            "instance_id=7c1e4b52-instance",
        ),
        ("app-token", "flows/app-token", "assignee=svc@contoso.com"),
    ] {
        let yaml = format!("{flow}.yaml");
        let mock = format!("{flow}.mock.yaml");
        for trace in ["pretty", "jsonl"] {
            runs.push(run(
                &format!("dry-{name}-{trace}"),
                &[
                    "run", &yaml, "--mock", &mock, "--set", extra, "--trace", trace,
                ],
                &token,
            ));
        }
    }
    assert!(
        runs.iter().all(|r| r.code == Some(0)),
        "every example succeeds"
    );
    assert_clean(&runs);
}

#[test]
fn real_runs_and_failures_against_the_simulator_never_leak() {
    let sim = Sim::start(SimConfig {
        token: CANARY.to_string(),
        client_secret: CANARY.to_string(),
        // The app tokens it issues are canaries too: managed tokens never show.
        issued_token_prefix: CANARY.to_string(),
        ..config()
    });
    let base = sim.base.clone();
    let env = |extra: &[(&'static str, &'static str)]| {
        let mut v = vec![
            ("NWC_BASE_URL", base.clone()),
            ("NWC_TOKEN", CANARY.to_string()),
        ];
        v.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        v
    };
    let as_refs = |v: &Vec<(&'static str, String)>| -> Vec<(&'static str, String)> { v.clone() };
    let mut runs = Vec::new();
    let mut go = |name: &str, args: &[&str], env: Vec<(&'static str, String)>| {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        runs.push(run(name, args, &pairs));
    };

    let (instance, _) = sim.instance(json!({ "delay": "0s", "after_polls": 1 }));
    let set = format!("instance_id={instance}");
    go(
        "reference",
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--set",
            &set,
            "--set",
            "poll_interval=10ms",
        ],
        as_refs(&env(&[])),
    );

    let (instance, _) = sim.instance(json!({ "delay": "0s" }));
    let set = format!("instance_id={instance}");
    let inspect = format!("inspect_url={base}/no-such-batch-service");
    go(
        "cancel-on-failure",
        &[
            "run",
            "flows/cancel-on-failure.yaml",
            "--set",
            &set,
            "--set",
            &inspect,
            "--trace",
            "jsonl",
        ],
        as_refs(&env(&[])),
    );

    go(
        "app-token",
        &["run", "flows/app-token.yaml"],
        env(&[
            ("NWC_CLIENT_ID", "sim-client"),
            ("NWC_CLIENT_SECRET", CANARY),
        ]),
    );

    // A batch of app runs sharing one managed token, each with its trace file.
    let rows_dir = leak_dir("-rows");
    std::fs::create_dir_all(&rows_dir).unwrap();
    let rows: String = (0..3)
        .map(|_| {
            format!(
                "{}\n",
                json!({ "instance_id": sim.instance(json!({ "delay": "0s" })).0 })
            )
        })
        .collect();
    let rows_file = rows_dir.join("rows.jsonl");
    std::fs::write(&rows_file, rows).unwrap();
    let traces = rows_dir.join("traces");
    go(
        "app-batch",
        &[
            "run",
            "tests/files/app-complete.yaml",
            "--each",
            rows_file.to_str().unwrap(),
            "--trace-dir",
            traces.to_str().unwrap(),
        ],
        env(&[
            ("NWC_CLIENT_ID", "sim-client"),
            ("NWC_CLIENT_SECRET", CANARY),
        ]),
    );
    let mut written = String::new();
    for entry in std::fs::read_dir(&traces).unwrap() {
        written.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert_eq!(written.matches("\"event\":\"flow_finished\"").count(), 3);

    // 401: the flow's token is the canary; the simulator wants another.
    let (instance, _) = sim.instance(json!({ "delay": "0s" }));
    let wrong = Sim::start(SimConfig {
        token: "the-right-one".into(),
        ..config()
    });
    let set = format!("instance_id={instance}");
    go(
        "401",
        &["run", "flows/complete-nwc-task.yaml", "--set", &set],
        vec![
            ("NWC_BASE_URL", wrong.base.clone()),
            ("NWC_TOKEN", CANARY.to_string()),
        ],
    );

    // The same refusal in a quiet batch, which builds no trace events: its
    // failures, grouped in the summary, are still redacted.
    let quiet_rows = rows_dir.join("quiet.jsonl");
    std::fs::write(
        &quiet_rows,
        format!(
            "{}\n{}\n",
            json!({ "instance_id": instance }),
            json!({ "instance_id": instance })
        ),
    )
    .unwrap();
    go(
        "401-quiet-batch",
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--each",
            quiet_rows.to_str().unwrap(),
            "--quiet",
        ],
        vec![
            ("NWC_BASE_URL", wrong.base.clone()),
            ("NWC_TOKEN", CANARY.to_string()),
        ],
    );

    sim.control(
        "POST",
        "/_sim/faults",
        json!({ "method": "GET", "path": "/workflows/v2/tasks", "times": 2, "delay": "400ms" }),
    );
    go(
        "timeout",
        &["run", "tests/files/short-timeout.yaml"],
        env(&[]),
    );

    go(
        "template-errors",
        &[
            "run",
            "tests/files/secret-template-errors.yaml",
            "--dry-run",
        ],
        env(&[]),
    );
    go(
        "wrong-type-env",
        &["run", "tests/files/secret-wrong-type.yaml"],
        env(&[("HANDOFF_PIN", CANARY)]),
    );
    go(
        "wrong-type-set",
        &[
            "run",
            "tests/files/secret-wrong-type.yaml",
            "--set",
            &format!("pin={CANARY}"),
        ],
        env(&[]),
    );
    go(
        "wrong-type-number",
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--set",
            "instance_id=i",
            "--set",
            &format!("max_tries={CANARY}"),
        ],
        env(&[]),
    );
    runs.push(Written {
        name: "app-batch trace files".into(),
        code: Some(0),
        text: written,
    });

    let codes: Vec<(&str, Option<i32>)> = runs.iter().map(|r| (r.name.as_str(), r.code)).collect();
    assert_eq!(
        codes,
        [
            ("reference", Some(0)),
            ("cancel-on-failure", Some(0)),
            ("app-token", Some(0)),
            ("app-batch", Some(0)),
            ("401", Some(1)),
            ("401-quiet-batch", Some(1)),
            ("timeout", Some(1)),
            ("template-errors", Some(1)),
            ("wrong-type-env", Some(2)),
            ("wrong-type-set", Some(2)),
            ("wrong-type-number", Some(2)),
            ("app-batch trace files", Some(0)),
        ]
    );
    let _ = std::fs::remove_dir_all(&rows_dir);
    let cancel = &runs[1].text;
    assert!(cancel.contains("\"outcome\":\"Canceled\""), "{cancel}");
    assert_clean(&runs);
    drop(wrong);
}

#[test]
fn values_derived_from_the_token_never_show() {
    let mut runs = Vec::new();
    for trace in ["pretty", "jsonl"] {
        runs.push(run(
            &format!("derived-{trace}"),
            &[
                "run",
                "tests/files/canary-derived.yaml",
                "--mock",
                "tests/files/canary-derived.mock.yaml",
                "--trace",
                trace,
            ],
            &[("NWC_TOKEN", CANARY)],
        ));
    }
    assert_clean(&runs);
    let pretty = &runs[0].text;
    assert_eq!(runs[0].code, Some(1), "{pretty}");
    // Each derived field shows as a mask, as does what `where` found with it.
    for field in [
        "tail", "back", "loud", "quiet", "chars", "b64", "url", "js", "task_id",
    ] {
        assert!(
            pretty.contains(&format!("{field} = ***")),
            "{field}: {pretty}"
        );
    }
    assert!(pretty.contains("log: ***"), "{pretty}");
    assert!(pretty.contains("echo?t=***"), "{pretty}");
    assert!(
        pretty.contains(r#"{"reversed":"***","chars":"***","plain":"ok"}"#),
        "{pretty}"
    );
    assert!(pretty.contains("✘ failed: ***"), "{pretty}");
    // A non-secret answer still shows (and `reply:` holds one reply).
    assert!(pretty.contains(r#"answer = {"ok":true}"#), "{pretty}");
}

#[test]
fn the_wire_echoes_cookies_redirects_and_cut_bodies_never_leak() {
    use crate::common::{Loopback, json_answer};
    let other = Loopback::start(|_, _| json_answer(200, &json!({})));
    let elsewhere = other.base.clone();
    let api = Loopback::start(move |_, seen| {
        let path = seen.target.split('?').next().unwrap_or("");
        if let Some(round) = path.strip_prefix("/cut/") {
            // The canary straddles the 200-character error excerpt, then
            // the 2,000-character trace excerpt, one offset per round.
            let round: usize = round.parse().unwrap_or(0);
            let offset = if round < 30 {
                185 + round
            } else {
                1985 + round - 30
            };
            let body = format!("{}{CANARY}{}", "x".repeat(offset), "y".repeat(3000));
            return (500, vec![], body.into_bytes());
        }
        match path {
            "/cookie" => (
                200,
                vec![
                    ("Set-Cookie".into(), format!("session={COOKIE}; HttpOnly")),
                    ("X-Session-Token".into(), COOKIE.into()),
                ],
                b"{}".to_vec(),
            ),
            "/moved" => (
                307,
                vec![("Location".into(), format!("{elsewhere}/?t={CANARY}"))],
                Vec::new(),
            ),
            // Echo what arrived: the target as encoded, and every header.
            _ => json_answer(
                200,
                &json!({ "target": seen.target, "headers": seen.headers }),
            ),
        }
    });
    let mut runs = Vec::new();
    for trace in ["pretty", "jsonl"] {
        runs.push(run(
            &format!("wire-{trace}"),
            &["run", "tests/files/canary-wire.yaml", "--trace", trace],
            &[("NWC_TOKEN", CANARY), ("NWC_BASE_URL", &api.base)],
        ));
    }
    assert_clean(&runs);
    for r in &runs {
        assert_eq!(r.code, Some(1), "{}", r.text);
        assert!(r.text.contains("a redirect to"), "{}", r.text);
    }
    assert_eq!(
        api.seen().len(),
        2 * (3 + 60 + 1),
        "no redirect was followed"
    );
    assert!(other.seen().is_empty());
    // The server really did get the token, in every place the flow put it.
    let first = &api.seen()[0];
    assert!(
        first.target.contains("key=canary-7f3a%2B9c%2F1d%3Dee"),
        "{first:?}"
    );
    assert!(
        first
            .headers
            .iter()
            .any(|(n, v)| n == "x-api-key" && v == CANARY)
    );
}

#[test]
fn input_diagnostics_never_show_values() {
    let dir = leak_dir("-inputs");
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let cases = [
        (
            "misspelt-neighbour",
            file(
                "a.json",
                format!("{{\"token\": \"{CANARY}\", \"instanse_id\": \"i-1\"}}"),
            ),
        ),
        (
            "unknown-key-holds-it",
            file(
                "b.yaml",
                format!("instance_id: i-1\ntoken: {CANARY}\nextra: {CANARY}\n"),
            ),
        ),
        (
            "yaml-error-on-its-line",
            file(
                "c.yaml",
                format!("instance_id: i-1\ntoken: \"{CANARY}\n  x: [\n"),
            ),
        ),
        ("not-a-mapping", file("d.yaml", format!("- {CANARY}\n"))),
    ];
    let mut runs = Vec::new();
    for (name, path) in &cases {
        runs.push(run(
            name,
            &["run", "tests/files/canary-inputs.yaml", "--input", path],
            &[],
        ));
    }
    runs.push(run(
        "set-without-equals",
        &["run", "tests/files/canary-inputs.yaml", "--set", CANARY],
        &[],
    ));
    runs.push(run(
        "set-value-as-name",
        &[
            "run",
            "tests/files/canary-inputs.yaml",
            "--set",
            &format!("{CANARY}=x"),
        ],
        &[],
    ));
    for r in &runs {
        assert_eq!(r.code, Some(2), "{}: {}", r.name, r.text);
    }
    assert_clean(&runs);
    // The frame still points at the right place.
    assert!(runs[0].text.contains("instanse_id"), "{}", runs[0].text);
    assert!(
        runs[0].text.contains("did you mean `instance_id`"),
        "{}",
        runs[0].text
    );
}

#[test]
fn the_canary_forms_find_what_they_should() {
    // The search itself must be able to fail: each encoding is caught.
    let forms = forms();
    let hit = |text: &str| forms.iter().any(|f| text.contains(f.as_str()));
    assert!(hit(&format!("Bearer {CANARY}")));
    assert!(hit(&STANDARD.encode(format!("user:{CANARY}"))));
    assert!(hit(&URL_SAFE.encode(format!("ab{CANARY}"))));
    assert!(hit("token=canary-7f3a%2B9c%2F1d%3Dee&x=1"));
    assert!(hit("{\"token\": \"canary-7f3a+9c…\"}"));
    assert!(!hit("Bearer ***"));
}

#[test]
fn the_run_store_never_holds_the_token_in_clear() {
    let sim = Sim::start(SimConfig {
        token: CANARY.to_string(),
        ..config()
    });
    let (instance, _) = sim.instance(json!({ "delay": "0s", "after_polls": 1 }));
    let dir = leak_dir("-store");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("handoff.db");
    let db = db.to_str().unwrap();
    let set = format!("instance_id={instance}");
    let env = [("NWC_BASE_URL", sim.base.as_str()), ("NWC_TOKEN", CANARY)];
    let mut runs = vec![run(
        "durable",
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--set",
            &set,
            "--set",
            "poll_interval=10ms",
            "--durable",
            "--store",
            db,
        ],
        &env,
    )];
    assert_eq!(runs[0].code, Some(0), "{}", runs[0].text);
    let id = runs[0]
        .text
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.split_whitespace().next())
        .unwrap()
        .to_string();
    for trace in ["pretty", "jsonl"] {
        runs.push(run(
            &format!("show-{trace}"),
            &["runs", "show", &id, "--trace", trace, "--store", db],
            &[],
        ));
    }
    runs.push(run("list", &["runs", "--store", db], &[]));
    // Everything on disk: the database and its write-ahead log, as bytes.
    // (Closing the store may fold the log into the database and empty it.)
    for file in ["handoff.db", "handoff.db-wal"] {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_default();
        if bytes.is_empty() && file.ends_with("-wal") {
            continue;
        }
        runs.push(Written {
            name: file.to_string(),
            code: Some(0),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    assert!(runs.iter().all(|r| r.code == Some(0)));
    assert!(runs[1].text.contains("token = ***"), "{}", runs[1].text);
    assert_clean(&runs);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_worker_service_never_shows_a_secret() {
    use crate::common::{Served, scratch, until};
    let sim = Sim::start(SimConfig {
        token: CANARY.to_string(),
        ..config()
    });
    let (instance, _) = sim.instance(json!({ "delay": "0s", "after_polls": 1 }));
    let dir = scratch("canary-serve");
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::copy(
        "tests/files/serve/inspection-done.yaml",
        flows.join("inspection-done.yaml"),
    )
    .unwrap();
    std::fs::copy(
        "flows/complete-nwc-task.yaml",
        flows.join("complete-nwc-task.yaml"),
    )
    .unwrap();
    let db = dir.join("handoff.db");
    // The NWC token, the API token and the hook's secret: all canaries.
    let env = [
        ("NWC_BASE_URL", sim.base.as_str()),
        ("NWC_TOKEN", CANARY),
        ("HANDOFF_API_TOKEN", COOKIE),
        ("HOOK_SECRET", CANARY),
    ];
    let served = Served::start(&flows, &db, &env);
    let bearer = format!("Bearer {COOKIE}");
    let auth = [("Authorization", bearer.as_str())];
    let mut answers = Vec::new();
    let mut call = |name: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str| {
        let (code, _, text) = served.call(method, path, headers, Some(body.as_bytes()));
        answers.push(Written {
            name: name.to_string(),
            code: Some(i32::from(code)),
            text,
        });
    };
    let event = json!({ "delivery": "c-1", "instance": instance, "result": "passed" }).to_string();
    let signature = handoff::serve::access::sign(CANARY.as_bytes(), event.as_bytes());
    call(
        "hook",
        "POST",
        "/v1/hooks/inspection-done",
        &[("X-Signature", &signature)],
        &event,
    );
    // A run that fails: its task never appears, and it gives up at once.
    let failing = json!({ "inputs": { "instance_id": "no-such-instance", "max_tries": 1 } });
    call(
        "start",
        "POST",
        "/v1/flows/complete-nwc-task/runs",
        &auth,
        &failing.to_string(),
    );
    // Refusals quote nothing they were given.
    let wrong = format!("Bearer {CANARY}");
    call(
        "wrong token",
        "GET",
        "/v1/runs",
        &[("Authorization", &wrong)],
        "",
    );
    call(
        "token in URL",
        "GET",
        &format!("/v1/runs?token={COOKIE}"),
        &[],
        "",
    );
    call(
        "bad signature",
        "POST",
        "/v1/hooks/inspection-done",
        &[("X-Signature", CANARY)],
        &event,
    );
    let secret_input = json!({ "inputs": { "instance_id": "x", "max_tries": CANARY } });
    call(
        "bad input",
        "POST",
        "/v1/flows/complete-nwc-task/runs",
        &auth,
        &secret_input.to_string(),
    );
    // Both runs have ended, read from one listing (two could straddle a change).
    assert!(until(|| {
        let (_, _, text) = served.call("GET", "/v1/runs", &auth, None);
        let runs: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        runs["runs"].as_array().is_some_and(|r| {
            r.len() == 2
                && r.iter()
                    .all(|run| matches!(run["status"].as_str(), Some("succeeded" | "failed")))
        })
    }));
    let (_, _, list) = served.call("GET", "/v1/runs", &auth, None);
    let runs: serde_json::Value = serde_json::from_str(&list).unwrap();
    let mut statuses = Vec::new();
    for run in runs["runs"].as_array().unwrap() {
        let id = run["id"].as_str().unwrap();
        statuses.push(run["status"].as_str().unwrap().to_string());
        for path in [format!("/v1/runs/{id}"), format!("/v1/runs/{id}/trace")] {
            let (code, _, text) = served.call("GET", &path, &auth, None);
            answers.push(Written {
                name: path,
                code: Some(i32::from(code)),
                text,
            });
        }
    }
    statuses.sort();
    assert_eq!(statuses, ["failed", "succeeded"], "{list}");
    for path in ["/v1/runs", "/v1/flows", "/metrics"] {
        let (code, _, text) = served.call("GET", path, &auth, None);
        answers.push(Written {
            name: path.to_string(),
            code: Some(i32::from(code)),
            text,
        });
    }
    let log = served.log();
    drop(served);
    answers.push(Written {
        name: "serve's log".to_string(),
        code: Some(0),
        text: log,
    });
    for file in ["handoff.db", "handoff.db-wal"] {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_default();
        if bytes.is_empty() {
            continue;
        }
        answers.push(Written {
            name: file.to_string(),
            code: Some(0),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    let codes: Vec<_> = answers.iter().take(6).map(|a| a.code).collect();
    assert_eq!(
        codes,
        [
            Some(201),
            Some(201),
            Some(401),
            Some(401),
            Some(401),
            Some(422)
        ]
    );
    assert_clean(&answers);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_recording_replays_the_run_and_holds_no_secret() {
    use crate::common::scratch;
    let sim = Sim::start(SimConfig {
        token: CANARY.to_string(),
        client_secret: COOKIE.to_string(),
        ..config()
    });
    // The task appears on the third poll, after a 503 with Retry-After.
    let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": 2 }));
    sim.control(
        "POST",
        "/_sim/faults",
        json!({ "method": "GET", "times": 1, "status": 503, "retry_after": "1" }),
    );
    let dir = scratch("record");
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let set = format!("instance_id={instance}");
    let env = [("NWC_BASE_URL", sim.base.as_str()), ("NWC_TOKEN", CANARY)];
    let flow = "flows/complete-nwc-task.yaml";
    let common_args = ["--set", &set, "--set", "poll_interval=100ms", "--quiet"];
    let recorded = run(
        "record",
        &[
            &["run", flow, "--record", &path("run.mock.yaml")][..],
            &common_args,
        ]
        .concat(),
        &env,
    );
    assert_eq!(recorded.code, Some(0), "{}", recorded.text);
    assert_eq!(sim.task(&task)["completions"], 1);
    // Offline: the same steps, branch and requests, from the recording alone.
    let replayed = run(
        "replay",
        &[
            &["run", flow, "--mock", &path("run.mock.yaml")][..],
            &common_args,
        ]
        .concat(),
        &[
            ("NWC_BASE_URL", sim.base.as_str()),
            ("NWC_TOKEN", "replay-placeholder-token"),
        ],
    );
    assert_eq!(replayed.code, Some(0), "{}", replayed.text);
    // `run` wrote each trace where its name says.
    let traces = leak_dir("");
    let trace = |name: &str| traces.join(name).to_str().unwrap().to_string();
    let diff = run(
        "diff",
        &["diff", &trace("record.jsonl"), &trace("replay.jsonl")],
        &[],
    );
    assert_eq!(diff.code, Some(0), "{}", diff.text);
    assert!(diff.text.starts_with("no difference: "), "{}", diff.text);
    // `--strict`: the same requests pass; another outcome in the PATCH body is named.
    let strict = |name: &str, extra: &[&str]| {
        run(
            name,
            &[
                &["run", flow, "--mock", &path("run.mock.yaml"), "--strict"][..],
                &common_args,
                extra,
            ]
            .concat(),
            &[
                ("NWC_BASE_URL", sim.base.as_str()),
                ("NWC_TOKEN", "replay-placeholder-token"),
            ],
        )
    };
    let same = strict("strict", &[]);
    assert_eq!(same.code, Some(0), "{}", same.text);
    let changed = strict("strict-changed", &["--set", "outcome=Canceled"]);
    assert_eq!(changed.code, Some(1), "{}", changed.text);
    assert!(
        changed
            .text
            .contains("strict replay: step `complete` sent a body that differs from the recording at `$.outcome`"),
        "{}",
        changed.text
    );
    // A changed flow: its list now filters by status too, and the strict replay says so.
    let source = std::fs::read_to_string(flow).unwrap();
    let extra = source.replacen(
        "      workflow_instance_id: \"{{ instance_id }}\"\n",
        "      workflow_instance_id: \"{{ instance_id }}\"\n      status: active\n",
        1,
    );
    assert_ne!(extra, source);
    std::fs::write(path("filtered.yaml"), extra).unwrap();
    let filtered = run(
        "strict-filtered",
        &[
            &[
                "run",
                &path("filtered.yaml"),
                "--mock",
                &path("run.mock.yaml"),
                "--strict",
            ][..],
            &common_args,
        ]
        .concat(),
        &[
            ("NWC_BASE_URL", sim.base.as_str()),
            ("NWC_TOKEN", "replay-placeholder-token"),
        ],
    );
    assert_eq!(filtered.code, Some(1), "{}", filtered.text);
    assert!(
        filtered
            .text
            .contains("strict replay: step `find_task` sent GET /workflows/v2/tasks?")
            && filtered
                .text
                .contains("&status=active, the recording has GET /workflows/v2/tasks?"),
        "{}",
        filtered.text
    );
    let mock = std::fs::read_to_string(path("run.mock.yaml")).unwrap();
    assert!(
        mock.contains("- status: 503") && mock.contains("retry-after: \"1\""),
        "{mock}"
    );

    // An app token the run received is masked in the recording, and the replay takes the mask.
    let recorded = run(
        "record-app-token",
        &[
            "run",
            "flows/app-token.yaml",
            "--record",
            &path("app.mock.yaml"),
            "--quiet",
        ],
        &[
            ("NWC_BASE_URL", sim.base.as_str()),
            ("NWC_CLIENT_ID", "sim-client"),
            ("NWC_CLIENT_SECRET", COOKIE),
        ],
    );
    assert_eq!(recorded.code, Some(0), "{}", recorded.text);
    let app = std::fs::read_to_string(path("app.mock.yaml")).unwrap();
    assert!(app.contains("access_token: \"***\""), "{app}");
    let replayed = run(
        "replay-app-token",
        &[
            "run",
            "flows/app-token.yaml",
            "--mock",
            &path("app.mock.yaml"),
            "--quiet",
        ],
        &[
            ("NWC_CLIENT_ID", "sim-client"),
            ("NWC_CLIENT_SECRET", "placeholder-secret"),
        ],
    );
    assert_eq!(replayed.code, Some(0), "{}", replayed.text);
    let files = ["run.mock.yaml", "app.mock.yaml"].map(|f| Written {
        name: f.to_string(),
        code: Some(0),
        text: std::fs::read_to_string(path(f)).unwrap(),
    });
    assert_clean(&files);
    assert_clean(&[recorded, replayed, diff, same, changed, filtered]);
    std::fs::remove_dir_all(&dir).unwrap();
}
