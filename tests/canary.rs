//! The secret canary: every example flow and every failure path runs with a
//! token no output should ever contain, and everything the process wrote
//! (stdout, stderr, the JSONL trace file) is searched for it: raw, percent-
//! and form-encoded, base64 and base64url at every alignment, and its first
//! eleven characters, which a truncated excerpt would show.

mod common;

use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use common::{Sim, config};
use handoff::sim::SimConfig;
use serde_json::json;

/// `+`, `/` and `=` make every encoding differ from the raw text.
const CANARY: &str = "canary-7f3a+9c/1d=ee";

/// Every form the canary could leak in.
fn forms() -> Vec<String> {
    let mut out = vec![
        CANARY.to_string(),
        CANARY[..11].to_string(),
        CANARY
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D"),
        CANARY
            .replace('+', "%2b")
            .replace('/', "%2f")
            .replace('=', "%3d"),
    ];
    // Inside a longer encoded string, the canary's base64 depends on where it
    // starts; the middle of each alignment is fixed.
    for engine in [&STANDARD, &URL_SAFE] {
        for pad in 0..3 {
            let text = format!("{}{CANARY}", "x".repeat(pad));
            let encoded = engine.encode(text.as_bytes());
            let skip = (pad * 4).div_ceil(3) + 1;
            out.push(encoded[skip..encoded.len() - 3].to_string());
        }
    }
    out
}

/// A run's every output, with the trace file it wrote.
struct Written {
    name: String,
    code: Option<i32>,
    text: String,
}

fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Written {
    let dir = std::env::temp_dir().join(format!("handoff-canary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join(format!("{name}.jsonl"));
    let _ = std::fs::remove_file(&trace);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff"));
    cmd.args(["--color", "never"]).args(args);
    if args.first() == Some(&"run") {
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
    for run in runs {
        assert!(!run.text.is_empty(), "{} wrote nothing", run.name);
        for form in &forms {
            assert!(
                !run.text.contains(form.as_str()),
                "{}: the canary leaked as `{form}`",
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

    let codes: Vec<(&str, Option<i32>)> = runs.iter().map(|r| (r.name.as_str(), r.code)).collect();
    assert_eq!(
        codes,
        [
            ("reference", Some(0)),
            ("cancel-on-failure", Some(0)),
            ("app-token", Some(0)),
            ("401", Some(1)),
            ("timeout", Some(1)),
            ("template-errors", Some(1)),
            ("wrong-type-env", Some(2)),
            ("wrong-type-set", Some(2)),
            ("wrong-type-number", Some(2)),
        ]
    );
    let cancel = &runs[1].text;
    assert!(cancel.contains("\"outcome\":\"Canceled\""), "{cancel}");
    assert_clean(&runs);
    drop(wrong);
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
