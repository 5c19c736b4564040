//! OpenTelemetry export from the real binary to a loopback collector that
//! decodes the OTLP protobuf (`opentelemetry-proto`): the span tree of each
//! run, ids derived from the run id (computed here from their definition),
//! W3C `traceparent` in (a hook's sender becomes the run's parent) and out (what the simulator
//! received names the request's span), and one trace with no duplicate span
//! across a SIGKILL. The canary scan covers every byte the collector got.

use std::collections::{HashMap, HashSet};

use crate::common::{Loopback, Served, Sim, TOKEN, assert_clean, flows, handoff, scratch, until};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A collector: answers every export `200`, keeps the bodies.
fn collector() -> Loopback {
    Loopback::start(|_, _| {
        (
            200,
            vec![("Content-Type".into(), "application/x-protobuf".into())],
            Vec::new(),
        )
    })
}

/// Every span the collector received, and the bytes it received.
fn received(c: &Loopback) -> (Vec<Span>, Vec<u8>) {
    let mut spans = Vec::new();
    let mut bytes = Vec::new();
    for seen in c.seen() {
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.target, "/v1/traces");
        assert!(
            seen.headers
                .iter()
                .any(|(n, v)| n == "content-type" && v == "application/x-protobuf"),
            "{:?}",
            seen.headers
        );
        let request =
            ExportTraceServiceRequest::decode(seen.body.as_slice()).expect("OTLP protobuf");
        for rs in request.resource_spans {
            let resource = rs.resource.unwrap();
            assert_eq!(
                attr(&resource.attributes, "service.name"),
                Some(json!("handoff-test"))
            );
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        bytes.extend_from_slice(&seen.body);
    }
    (spans, bytes)
}

fn attr(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<Value> {
    let kv = attributes.iter().find(|kv| kv.key == key)?;
    Some(match kv.value.as_ref()?.value.as_ref()? {
        Any::StringValue(s) => json!(s),
        Any::IntValue(n) => json!(n),
        Any::BoolValue(b) => json!(b),
        other => json!(format!("{other:?}")),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span id as handoff defines it: SHA-256 of a label, the run id and the
/// event's seq, first 8 bytes.
fn span_id(run: &str, seq: u64) -> String {
    let mut h = Sha256::new();
    h.update(b"handoff span\0");
    h.update(run.as_bytes());
    h.update([0]);
    h.update(seq.to_be_bytes());
    hex(&h.finalize()[..8])
}

fn sim_env(sim: &Sim) -> Vec<(&'static str, String)> {
    vec![
        ("NWC_BASE_URL", sim.base.clone()),
        ("NWC_TOKEN", TOKEN.to_string()),
        ("OTEL_SERVICE_NAME", "handoff-test".to_string()),
        ("HANDOFF_LOG", "info".to_string()),
    ]
}

fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn events(served: &Served, run: &str) -> Vec<Value> {
    let (_, _, trace) = served.call("GET", &format!("/v1/runs/{run}/trace"), &[], None);
    trace
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn finished(served: &Served, run: &str) -> bool {
    let (_, body) = served.json("GET", &format!("/v1/runs/{run}"), None);
    matches!(
        body["status"].as_str(),
        Some("succeeded" | "failed" | "canceled")
    )
}

/// The spans of one trace, checked as a tree: ids unique, one root, every
/// other span's parent in the trace, each id the one its opening event
/// derives. Returns the spans by id.
fn check_tree<'a>(
    spans: &'a [Span],
    run: &str,
    trace: &str,
    events: &[Value],
) -> HashMap<String, &'a Span> {
    let mine: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace).collect();
    let mut by_id = HashMap::new();
    for s in &mine {
        assert!(
            by_id.insert(hex(&s.span_id), *s).is_none(),
            "span {} sent twice",
            s.name
        );
    }
    // Every span opened by an event: the run (0), steps, requests.
    let mut opened: HashSet<String> = HashSet::from([span_id(run, 0)]);
    for e in events {
        if matches!(e["event"].as_str(), Some("step_started" | "request_sent")) {
            opened.insert(span_id(run, e["seq"].as_u64().unwrap()));
        }
    }
    let got: HashSet<String> = by_id.keys().cloned().collect();
    assert_eq!(
        got, opened,
        "a span for every step and request, and no other"
    );
    let root = &by_id[&span_id(run, 0)];
    for s in &mine {
        if s.span_id != root.span_id {
            assert!(
                by_id.contains_key(&hex(&s.parent_span_id)),
                "{} has no parent in the trace",
                s.name
            );
        }
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano, "{}", s.name);
    }
    by_id
}

#[test]
fn serve_exports_a_span_tree_per_run_and_carries_traceparent_both_ways() {
    let sim = Sim::new();
    let otlp = collector();
    let dir = scratch("otel-serve");
    let folder = flows(&dir, &["flows/complete-nwc-task.yaml"]);
    let db = dir.join("handoff.db");
    let env = sim_env(&sim);
    let served = Served::start_with(
        &folder,
        &db,
        &refs(&env),
        &["--otlp", &otlp.base, "--log-format", "json"],
    );
    assert!(
        served.log().contains("exporting traces to"),
        "{}",
        served.log()
    );

    // A run that polls once (a timer, so it is taken up again from the store).
    let (instance, _) = sim.instance(json!({ "delay": "0s", "after_polls": 1 }));
    let (code, body) = served.json(
        "POST",
        "/v1/flows/complete-nwc-task/runs",
        Some(json!({ "inputs": { "instance_id": instance, "poll_interval": "1s" } })),
    );
    assert_eq!(code, 201, "{body}");
    let run = body["id"].as_str().unwrap().to_string();
    // A run started by a hook whose sender is inside a trace of its own.
    let (other, _) = sim.instance(json!({ "delay": "0s", "after_polls": 0 }));
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let body =
        serde_json::to_vec(&json!({ "eventId": "e-1", "instanceId": other, "passed": true }))
            .unwrap();
    let (code, _, answer) = served.call(
        "POST",
        "/v1/hooks/complete-nwc-task",
        &[
            ("traceparent", parent),
            ("Content-Type", "application/json"),
        ],
        Some(&body),
    );
    assert_eq!(code, 201, "{answer}");
    let child: Value = serde_json::from_str(&answer).unwrap();
    let child = child["id"].as_str().unwrap().to_string();
    assert!(
        until(|| finished(&served, &run) && finished(&served, &child)),
        "{}",
        served.log()
    );
    let roots = || {
        let (spans, _) = received(&otlp);
        spans
            .iter()
            .filter(|s| {
                s.span_id == hex_bytes(&span_id(&run, 0))
                    || s.span_id == hex_bytes(&span_id(&child, 0))
            })
            .count()
    };
    assert!(until(|| roots() == 2), "both runs' spans arrive");
    let (spans, bytes) = received(&otlp);

    // The first run: its trace id is its run id.
    let trace = run.replace('-', "");
    let events_a = events(&served, &run);
    let tree = check_tree(&spans, &run, &trace, &events_a);
    let root = tree[&span_id(&run, 0)];
    assert_eq!(root.name, "complete-nwc-task");
    assert!(root.parent_span_id.is_empty());
    assert_eq!(
        attr(&root.attributes, "handoff.run.status"),
        Some(json!("succeeded"))
    );
    assert_eq!(root.status.as_ref().unwrap().code, 1, "OK");
    let mut timer = false;
    for e in &events_a {
        let seq = e["seq"].as_u64().unwrap();
        match e["event"].as_str().unwrap() {
            "step_started" => {
                let s = tree[&span_id(&run, seq)];
                assert_eq!(s.name, e["step"].as_str().unwrap());
                assert_eq!(s.parent_span_id, root.span_id, "a step's parent is the run");
                assert_eq!(
                    attr(&s.attributes, "handoff.step.kind"),
                    Some(e["kind"].clone())
                );
                if e["kind"] == "timer" {
                    timer = true;
                    let names: Vec<&str> = s.events.iter().map(|x| x.name.as_str()).collect();
                    assert_eq!(names, ["timer.started", "timer.waited"], "{}", s.name);
                }
            }
            "request_sent" => {
                let s = tree[&span_id(&run, seq)];
                assert_eq!(s.kind, 3, "CLIENT");
                assert_eq!(
                    attr(&s.attributes, "http.request.method"),
                    Some(e["method"].clone())
                );
                assert_eq!(attr(&s.attributes, "url.full"), Some(e["url"].clone()));
                let host = sim
                    .base
                    .trim_start_matches("http://")
                    .split(':')
                    .next()
                    .unwrap();
                assert_eq!(attr(&s.attributes, "server.address"), Some(json!(host)));
                let step = tree[&hex(&s.parent_span_id)];
                assert_eq!(
                    Some(step.name.as_str()),
                    e["step"].as_str(),
                    "a request's parent is its step"
                );
            }
            "response_received" => {
                // The answer lands on the request just sent.
                let sent = events_a
                    .iter()
                    .rev()
                    .find(|x| x["event"] == "request_sent" && x["seq"].as_u64().unwrap() < seq)
                    .unwrap();
                let s = tree[&span_id(&run, sent["seq"].as_u64().unwrap())];
                assert_eq!(
                    attr(&s.attributes, "http.response.status_code"),
                    Some(e["status"].clone())
                );
            }
            _ => {}
        }
    }
    assert!(timer, "the run polled");

    // The simulator got the request span's traceparent on each request.
    let sent: Vec<&Value> = events_a
        .iter()
        .filter(|e| e["event"] == "request_sent")
        .collect();
    let logged: Vec<Value> = sim
        .requests()
        .into_iter()
        .filter(|r| {
            r["traceparent"]
                .as_str()
                .is_some_and(|t| t.contains(&trace))
        })
        .collect();
    assert_eq!(logged.len(), sent.len(), "{logged:?}");
    for (r, e) in logged.iter().zip(&sent) {
        let want = format!(
            "00-{trace}-{}-01",
            span_id(&run, e["seq"].as_u64().unwrap())
        );
        assert_eq!(r["traceparent"], want.as_str());
    }

    // The hook's run joined the sender's trace, under the sender's span.
    let events_b = events(&served, &child);
    let tree = check_tree(
        &spans,
        &child,
        "4bf92f3577b34da6a3ce929d0e0e4736",
        &events_b,
    );
    let root = tree[&span_id(&child, 0)];
    assert_eq!(hex(&root.parent_span_id), "00f067aa0ba902b7");

    // The worker's JSON lines about a run name its trace.
    let log = served.log();
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["run"] == run.as_str())
        .expect("a line about the run");
    assert_eq!(line["trace_id"], trace.as_str());
    assert_clean(
        TOKEN,
        &[
            ("exported spans", &String::from_utf8_lossy(&bytes)),
            ("log", &log),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// kill -9 while NWC holds the PATCH; another process takes the run up.
/// Both processes' spans make one trace: none twice, none without its
/// parent, the PATCH the first process sent ended as cut short.
#[test]
fn a_run_killed_mid_request_continues_one_trace_without_duplicates() {
    let sim = Sim::new();
    let otlp = collector();
    let dir = scratch("otel-kill");
    let folder = flows(&dir, &["flows/complete-nwc-task.yaml"]);
    let db = dir.join("handoff.db");
    let env = sim_env(&sim);
    sim.control(
        "POST",
        "/_sim/faults",
        json!({ "method": "PATCH", "path": "/workflows/*", "delay": "600s" }),
    );
    let mut served = Served::start_with(&folder, &db, &refs(&env), &["--otlp", &otlp.base]);
    let (instance, _) = sim.instance(json!({ "delay": "0s", "after_polls": 0 }));
    let (code, body) = served.json(
        "POST",
        "/v1/flows/complete-nwc-task/runs",
        Some(json!({ "inputs": { "instance_id": instance } })),
    );
    assert_eq!(code, 201, "{body}");
    let run = body["id"].as_str().unwrap().to_string();
    // The simulator logs a request when it answers: the held PATCH shows
    // as the fault rule spent.
    let held = || {
        let faults = sim.control("GET", "/_sim/faults", json!(null));
        faults["faults"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["remaining"] == 0)
    };
    assert!(until(held), "{}", served.log());
    // The spans before the PATCH have gone out and are marked.
    assert!(until(|| received(&otlp).0.len() >= 4), "{}", served.log());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let marked = || {
        rt.block_on(async {
            use handoff::store::Store;
            let store = handoff::store::sqlite::SqliteStore::open(&db)
                .await
                .unwrap();
            store.load(&run).await.unwrap().unwrap().exported_seq
        })
    };
    assert!(until(|| marked() > 0));
    let before = received(&otlp).0.len();
    served.kill();
    let served = Served::start_with(&folder, &db, &refs(&env), &["--otlp", &otlp.base]);
    assert!(until(|| finished(&served, &run)), "{}", served.log());
    let trace = run.replace('-', "");
    assert!(
        until(|| received(&otlp)
            .0
            .iter()
            .any(|s| s.parent_span_id.is_empty() && hex(&s.trace_id) == trace)),
        "{:#?}\n{}\n{:#?}",
        received(&otlp)
            .0
            .iter()
            .map(|s| (s.name.clone(), hex(&s.span_id), hex(&s.parent_span_id)))
            .collect::<Vec<_>>(),
        served.log(),
        events(&served, &run)
            .iter()
            .map(|e| format!("{} {} {}", e["seq"], e["event"], e["step"]))
            .collect::<Vec<_>>()
    );
    let (spans, bytes) = received(&otlp);
    assert!(spans.len() > before, "the second process sent the rest");
    let evs = events(&served, &run);
    let tree = check_tree(&spans, &run, &trace, &evs);
    // The PATCH that was out at the kill ends where the run was resumed.
    let patch = evs
        .iter()
        .find(|e| e["event"] == "request_sent" && e["method"] == "PATCH")
        .unwrap();
    let span = tree[&span_id(&run, patch["seq"].as_u64().unwrap())];
    let status = span.status.as_ref().unwrap();
    assert_eq!(status.code, 2, "ERROR");
    assert!(
        status.message.starts_with("cut short"),
        "{}",
        status.message
    );
    assert_clean(
        TOKEN,
        &[
            ("exported spans", &String::from_utf8_lossy(&bytes)),
            ("log", &served.log()),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `run --dry-run --trace jsonl`: each line carries the trace and span ids
/// of the spans the collector received.
#[test]
fn a_dry_run_exports_its_spans_and_its_jsonl_lines_name_them() {
    let otlp = collector();
    let out = handoff(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--mock",
            "flows/complete-nwc-task.mock.yaml",
            "--set",
            "instance_id=inst-1",
            "--trace",
            "jsonl",
            "--otlp",
            &otlp.base,
        ],
        &[("NWC_TOKEN", TOKEN), ("OTEL_SERVICE_NAME", "handoff-test")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let run = lines[0]["run"].as_str().unwrap().to_string();
    let (spans, bytes) = received(&otlp);
    let trace = hex(&handoff::run::otel::ids::trace_id_of(&run));
    let tree = check_tree(&spans, &run, &trace, &lines);
    for l in &lines {
        assert_eq!(l["trace_id"], trace.as_str(), "{l}");
        let id = l["span_id"].as_str().unwrap();
        assert!(tree.contains_key(id), "{l}");
        if let Some(step) = l["step"].as_str()
            && l["event"] != "request_sent"
            && l["event"] != "response_received"
        {
            assert_eq!(tree[id].name, step, "{l}");
        }
    }
    assert_clean(
        TOKEN,
        &[
            ("exported spans", &String::from_utf8_lossy(&bytes)),
            ("stdout", &stdout),
            ("stderr", &stderr),
        ],
    );
}

/// A configuration handoff cannot honour is refused at once, naming the
/// variable and never a header's value.
#[test]
fn a_bad_otel_configuration_is_refused_without_showing_secrets() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            "http/protobuf",
        ),
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key-hunter2"),
            ],
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector")],
            "not an http:// or https:// URL",
        ),
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_TRACES_SAMPLER", "sometimes"),
            ],
            "OTEL_TRACES_SAMPLER",
        ),
    ];
    for (env, said) in cases {
        let out = handoff(
            &[
                "run",
                "flows/complete-nwc-task.yaml",
                "--dry-run",
                "--set",
                "instance_id=i",
            ],
            env,
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(said), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

/// A recording keeps its run's id, and a replay runs under it: the replay's
/// spans have the recorded run's trace and span ids, event for event.
#[test]
fn a_replay_of_a_recording_has_the_recorded_runs_ids() {
    let sim = Sim::new();
    let otlp = collector();
    let dir = scratch("otel-replay");
    let recording = dir.join("run.mock.yaml");
    let (instance, _) = sim.instance(json!({ "delay": "0s", "after_polls": 1 }));
    let env = [
        ("NWC_BASE_URL", sim.base.as_str()),
        ("NWC_TOKEN", TOKEN),
        ("OTEL_SERVICE_NAME", "handoff-test"),
    ];
    let ids = |out: &std::process::Output| -> Vec<(String, String, String)> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|l| {
                let s = |k: &str| l[k].as_str().unwrap_or_default().to_string();
                (s("event"), s("trace_id"), s("span_id"))
            })
            .collect()
    };
    let real = handoff(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--set",
            &format!("instance_id={instance}"),
            "--set",
            "poll_interval=0s",
            "--record",
            recording.to_str().unwrap(),
            "--trace",
            "jsonl",
            "--otlp",
            &otlp.base,
        ],
        &env,
    );
    let real = ids(&real);
    let replay = handoff(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--mock",
            recording.to_str().unwrap(),
            "--trace",
            "jsonl",
            "--otlp",
            &otlp.base,
        ],
        &env,
    );
    let replay = ids(&replay);
    assert!(
        real.iter().any(|(e, _, _)| e == "timer_started"),
        "{real:?}"
    );
    assert_eq!(replay, real);
    // The collector got each span twice, once a run, alike in ids.
    let (spans, bytes) = received(&otlp);
    let mut count: HashMap<String, usize> = HashMap::new();
    for s in &spans {
        *count.entry(hex(&s.span_id)).or_default() += 1;
    }
    assert!(count.values().all(|n| *n == 2), "{count:?}");
    assert_clean(
        TOKEN,
        &[
            ("exported spans", &String::from_utf8_lossy(&bytes)),
            ("recording", &std::fs::read_to_string(&recording).unwrap()),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
