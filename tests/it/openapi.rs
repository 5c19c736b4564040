//! `sources:` and `call:` through the real binary, against a loopback
//! service that `tests/files/openapi/jobs.yaml` describes: the request built
//! from the document, a body that renders invalid (nothing sent), and an
//! answer that breaks its schema (an error `on_error` can catch, or a
//! warning); what `check` holds a flow's reads against; and the run page.

use serde_json::{Value, json};

use crate::common::{Loopback, assert_clean, handoff, json_answer, text};

const JOBS_TOKEN: &str = "jobs-token-7f3a91c2e";
const FLOW: &str = "tests/files/openapi/jobs-flow.yaml";

fn run(flow: &str, base: &str, sets: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["run", flow, "--trace", "jsonl"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = handoff(&args, &[("JOBS_URL", base), ("JOBS_TOKEN", JOBS_TOKEN)]);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// A file of `tests/files/openapi/` that names `jobs.yaml` beside it, with
/// that path made absolute: the copy can be written anywhere.
fn with_jobs_yaml(file: &str) -> String {
    std::fs::read_to_string(file).unwrap().replace(
        "openapi: jobs.yaml",
        &format!(
            "openapi: {}/tests/files/openapi/jobs.yaml",
            env!("CARGO_MANIFEST_DIR")
        ),
    )
}

fn events(trace: &str) -> Vec<Value> {
    trace
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn job(state: &str) -> Value {
    json!({ "id": "job-1", "state": state, "finished_at": null, "result": { "passed": true } })
}

#[test]
fn a_call_sends_what_the_document_describes() {
    let server = Loopback::start(|n, _| match n {
        0 => json_answer(201, &job("queued")),
        1 => json_answer(200, &job("ready")),
        _ => json_answer(200, &json!({ "jobs": [job("ready")] })),
    });
    let base = format!("{}/v1", server.base);
    let (code, out, err) = run(FLOW, &base, &["container=C-42"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("POST", "/v1/jobs")
    );
    let header = |i: usize, name: &str| {
        seen[i]
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header(0, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        header(0, "authorization"),
        Some(format!("Bearer {JOBS_TOKEN}"))
    );
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        body,
        json!({ "container": "C-42", "kind": "inspection", "priority": 3 })
    );
    assert_eq!(
        (seen[1].method.as_str(), seen[1].target.as_str()),
        ("GET", "/v1/jobs/job-1?verbose=true")
    );
    assert_eq!(header(1, "x-request-id").as_deref(), Some("req-1"));
    assert_eq!(seen[2].target, "/v1/jobs?state=ready&limit=10");
    let called: Vec<String> = events(&out)
        .iter()
        .filter(|e| e["event"] == "operation_called")
        .map(|e| format!("{} {} {}", e["operation"], e["method"], e["path"]))
        .collect();
    assert_eq!(
        called,
        [
            r#""jobs.createJob" "POST" "/jobs""#,
            r#""jobs.getJob" "GET" "/jobs/{jobId}""#,
            r#""jobs.listJobs" "GET" "/jobs""#,
        ]
    );
    assert_clean(JOBS_TOKEN, &[("stdout", &out), ("stderr", &err)]);
}

#[test]
fn a_body_that_renders_invalid_sends_nothing() {
    let server = Loopback::start(|_, _| json_answer(201, &job("queued")));
    let base = format!("{}/v1", server.base);
    // `container` has `minLength: 1`: an empty one renders a body its schema refuses.
    let flow = crate::common::scratch("openapi-empty").join("flow.yaml");
    let text_of = with_jobs_yaml(FLOW).replace(
        "container: { type: text, input: true }",
        "container: { type: text, input: true, allow_empty: true }",
    );
    std::fs::write(&flow, text_of).unwrap();
    let (code, out, err) = run(flow.to_str().unwrap(), &base, &["container="]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(server.seen().is_empty(), "{:?}", server.seen());
    let failed = events(&out)
        .into_iter()
        .find(|e| e["event"] == "step_failed")
        .unwrap();
    assert_eq!(failed["step"], "create");
    assert_eq!(failed["error_kind"], "contract");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("nothing was sent"), "{error}");
    assert!(
        error.contains("`body.container` must be at least 1 characters long"),
        "{error}"
    );
    assert_clean(JOBS_TOKEN, &[("stdout", &out), ("stderr", &err)]);
}

#[test]
fn an_answer_that_breaks_its_schema_is_caught_or_warned() {
    let server = Loopback::start(
        |_, seen| match (seen.method.as_str(), seen.target.as_str()) {
            ("POST", _) => json_answer(201, &job("queued")),
            // `done` is not a state the document lists; `result` matches neither `oneOf`.
            (_, t) if t.starts_with("/v1/jobs/") => json_answer(
                200,
                &json!({ "id": "job-1", "state": "done", "result": { "passed": "yes" } }),
            ),
            _ => json_answer(200, &json!({ "jobs": [] })),
        },
    );
    let base = format!("{}/v1", server.base);
    let (code, out, err) = run(FLOW, &base, &["container=C-42"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    let failed = events(&out)
        .into_iter()
        .find(|e| e["event"] == "step_failed")
        .unwrap();
    assert_eq!(failed["step"], "read");
    assert_eq!(failed["error_kind"], "contract");
    assert_eq!(failed["status"], 200);
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("`body.state` must be one of `queued`, `running`, `ready`, `failed`"),
        "{error}"
    );
    assert!(
        error.contains("`body.result` matches none of the schemas its `oneOf` lists"),
        "{error}"
    );
    // The same answer with `on_mismatch: warn`: a warning in the trace, and the run goes on.
    let dir = crate::common::scratch("openapi-warn");
    let flow = dir.join("flow.yaml");
    let warned = with_jobs_yaml(FLOW).replace(
        "      operation: jobs.getJob\n",
        "      operation: jobs.getJob\n      on_mismatch: warn\n",
    );
    std::fs::write(&flow, warned).unwrap();
    let (code, out, err) = run(flow.to_str().unwrap(), &base, &["container=C-42"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        events(&out).iter().any(|e| e["event"] == "log"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("warning: the answer of `jobs.getJob` (200)"))),
        "{out}"
    );
    assert_eq!(server.seen().len(), 2 + 3);
}

#[test]
fn an_undeclared_status_is_a_contract_error_that_on_error_catches() {
    let server = Loopback::start(|_, _| json_answer(202, &json!({ "queued": true })));
    let dir = crate::common::scratch("openapi-status");
    let flow = dir.join("flow.yaml");
    std::fs::write(
        &flow,
        format!(
            r#"
flow: status
fields:
  jobs_url: {{ type: text, env: JOBS_URL }}
  jobs_token: {{ type: text, secret: true, env: JOBS_TOKEN }}
sources:
  jobs:
    openapi: {}/tests/files/openapi/jobs.yaml
    server: "{{{{ jobs_url }}}}"
    credentials: {{ bearerAuth: "{{{{ jobs_token }}}}" }}
steps:
  - id: create
    call:
      operation: jobs.createJob
      body: {{ container: C-1, kind: vetting }}
    on_error: caught
  - id: fine
    end: not caught
  - id: caught
    end: "caught {{{{ error.kind }}}}"
"#,
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let (code, out, err) = run(flow.to_str().unwrap(), &server.base, &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let finished = events(&out)
        .into_iter()
        .find(|e| e["event"] == "flow_finished")
        .unwrap();
    assert_eq!(finished["reason"], "caught contract", "{out}");
    assert_eq!(
        server.seen().len(),
        1,
        "sent once: a mismatch is not retried"
    );
}

#[test]
fn mocks_script_operations_and_a_drifted_reply_is_refused() {
    let env = [("JOBS_TOKEN", JOBS_TOKEN)];
    let dry = |mock: &str| {
        handoff(
            &[
                "run",
                FLOW,
                "--mock",
                mock,
                "--set",
                "container=C-1",
                "--trace",
                "jsonl",
            ],
            &env,
        )
    };
    let out = dry("tests/files/openapi/jobs-flow.mock.yaml");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let trace = text(&out.stdout);
    let answered: Vec<u64> = events(&trace)
        .iter()
        .filter(|e| e["event"] == "response_received")
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(answered, [201, 200, 200]);
    let out = dry("tests/files/openapi/drifted.mock.yaml");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for expected in [
        "`jobs.createJob` does not declare the status 202 this reply answers",
        "this reply does not match what `jobs.getJob` declares for 200",
        "lacks the required",
        "tests/files/openapi/jobs.yaml:28:23",
        "no `call:` step of the flow sends `jobs.getJobs`",
        "did you mean `jobs.getJob`?",
    ] {
        assert!(err.contains(expected), "{expected}\n{err}");
    }
    assert_clean(JOBS_TOKEN, &[("trace", &trace), ("stderr", &err)]);
}

#[test]
fn graph_and_plan_name_the_operations() {
    let graph = text(&handoff(&["graph", FLOW], &[]).stdout);
    assert!(graph.contains("jobs.getJob (GET /jobs/{jobId})"), "{graph}");
    let plan = text(&handoff(&["plan", FLOW], &[]).stdout);
    assert!(
        plan.contains("1 POST to jobs.createJob at jobs.example.com"),
        "{plan}"
    );
}

#[test]
fn public_descriptions_load_and_their_operations_check() {
    for flow in [
        "tests/apis/flows/museum.yaml",
        "tests/apis/flows/uspto.yaml",
        "tests/apis/flows/petstore.yaml",
    ] {
        let out = handoff(&["check", flow], &[]);
        assert_eq!(out.status.code(), Some(0), "{flow}: {}", text(&out.stderr));
    }
    // The museum's ticket types are an enum behind `allOf` and `$ref`s: a wrong one is caught.
    let dir = crate::common::scratch("openapi-museum");
    let wrong = std::fs::read_to_string("tests/apis/flows/museum.yaml")
        .unwrap()
        .replace(
            "openapi: ../museum.openapi.yaml",
            &format!(
                "openapi: {}/tests/apis/museum.openapi.yaml",
                env!("CARGO_MANIFEST_DIR")
            ),
        )
        .replace("ticketType: general", "ticketType: vip");
    let flow = dir.join("museum.yaml");
    std::fs::write(&flow, wrong).unwrap();
    let out = handoff(&["check", flow.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("must be one of `event`, `general`"), "{err}");
    assert!(err.contains("museum.openapi.yaml:"), "{err}");
    // What the flow reads of the answer goes through the same `allOf`: a
    // key it misses is a warning (the schema leaves the object open), a
    // value the enum does not list an error.
    let misread = std::fs::read_to_string(&flow)
        .unwrap()
        .replace("ticketType: vip", "ticketType: general")
        .replace("confirmationCode }}", "confirmationCod }}")
        .replace("ticketType == 'event'", "ticketType == 'vip'");
    std::fs::write(&flow, misread).unwrap();
    let out = handoff(&["check", flow.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("`confirmation` has no key `confirmationCod`")
            && err.contains("did you mean `confirmationCode`?"),
        "{err}"
    );
    assert!(
        err.contains("`confirmation.ticketType` is compared with \"vip\"")
            && err.contains("it is one of `event` and `general`"),
        "{err}"
    );
    assert!(err.contains("1 error, 1 warning"), "{err}");
}

/// A flow that reads the answers of `jobs.yaml`'s operations, beside the
/// document (by its absolute path).
fn reading_flow(dir: &std::path::Path, reads: &str) -> std::path::PathBuf {
    let flow = dir.join("reads.yaml");
    let text_of = format!(
        r#"flow: reads
fields:
  job_id: {{ type: text, input: true }}
  token: {{ type: text, secret: true, env: JOBS_TOKEN }}
  job: {{ type: json, default: null }}
  list: {{ type: json, default: null }}
  other: {{ type: json, default: null }}
  note: {{ type: text, default: "" }}
sources:
  jobs:
    openapi: {}/tests/files/openapi/jobs.yaml
    server: https://jobs.example.com/v1
    credentials: {{ bearerAuth: "{{{{ token }}}}" }}
steps:
  - id: read
    call: {{ operation: jobs.getJob, params: {{ jobId: "{{{{ job_id }}}}" }} }}
    output: {{ body: job }}
  - id: all
    call: {{ operation: jobs.listJobs, params: {{ state: ready }} }}
    output: {{ body: list }}
  - id: again
    call: {{ operation: jobs.getJob, params: {{ jobId: "{{{{ job_id }}}}" }} }}
    output: {{ body: other }}
  - id: mixed
    set: {{ other: "{{{{ job }}}}" }}
  - id: reads
    set:
      note: "{reads}"
"#,
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::write(&flow, text_of).unwrap();
    flow
}

#[test]
fn what_a_flow_reads_of_an_answer_is_held_against_its_schema() {
    let dir = crate::common::scratch("openapi-reads");
    // Keys of either `oneOf` branch, across a sibling file; items; an enum
    // value it lists; a loop's own name; and `other`, which a `set` fills
    // too, so it can hold anything.
    let fine = "{{ job.result.passed }} {{ job.result.code }} {{ job.finished_at }} \
        {{ list.jobs[0].state == 'ready' }} {{ 'failed' != job.state }} \
        {% for j in list.jobs %}{{ j.whatever }}{% endfor %} {{ other.anything }}";
    let flow = reading_flow(&dir, fine);
    let out = handoff(&["check", flow.to_str().unwrap()], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");

    let wrong = "{{ job.result.pased }} {{ list.jobs[0].ids }} {{ job.id.first }} \
        {{ job.state == 'done' }}";
    let flow = reading_flow(&dir, wrong);
    let out = handoff(&["check", flow.to_str().unwrap()], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for expected in [
        // Both branches close their objects: an error, with the document's place.
        "`job.result` has no key `pased` in the answer of `jobs.getJob`",
        "did you mean `passed`?",
        "jobs.yaml:101:9",
        // `Job` leaves its object open: a warning.
        "`list.jobs[0]` has no key `ids` in the answer of `jobs.listJobs`",
        "`job.id` is a string in the answer of `jobs.getJob`, so it has no `first`",
        "`job.state` is compared with \"done\", a value the answer of `jobs.getJob` does not list",
        "3 errors, 1 warning",
    ] {
        assert!(err.contains(expected), "{expected}\n{err}");
    }
}

#[test]
fn a_form_body_goes_as_a_form() {
    let server = Loopback::start(|_, _| json_answer(200, &json!([{ "patent": {} }])));
    let out = handoff(
        &[
            "run",
            "tests/apis/flows/uspto.yaml",
            "--set",
            "criteria=inventor:Lovelace",
        ],
        &[("USPTO_URL", &format!("{}/ds-api", server.base))],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("POST", "/ds-api/oa_citations/v1/records")
    );
    assert!(
        seen[0]
            .headers
            .iter()
            .any(|(n, v)| n == "content-type" && v.starts_with("application/x-www-form-urlencoded")),
        "{:?}",
        seen[0].headers
    );
    assert_eq!(
        String::from_utf8_lossy(&seen[0].body),
        "criteria=inventor%3ALovelace&start=0&rows=20"
    );
}

#[test]
fn the_run_page_names_the_operations() {
    let server = Loopback::start(|n, _| match n {
        0 => json_answer(201, &job("queued")),
        1 => json_answer(200, &job("ready")),
        _ => json_answer(200, &json!({ "jobs": [] })),
    });
    let base = format!("{}/v1", server.base);
    let dir = crate::common::scratch("openapi-page");
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    let flow = with_jobs_yaml(FLOW);
    std::fs::write(flows.join("jobs-check.yaml"), flow).unwrap();
    let served = crate::common::Served::start(
        &flows,
        &dir.join("handoff.db"),
        &[("JOBS_URL", &base), ("JOBS_TOKEN", JOBS_TOKEN)],
    );
    let (code, started) = served.json(
        "POST",
        "/v1/flows/jobs-check/runs",
        Some(json!({ "inputs": { "container": "C-42" } })),
    );
    assert_eq!(code, 201, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    assert!(
        crate::common::until(
            || served.json("GET", &format!("/v1/runs/{id}"), None).1["status"] == "succeeded"
        ),
        "{}",
        served.log()
    );
    let (code, _, page) = served.call("GET", &format!("/runs/{id}"), &[], None);
    assert_eq!(code, 200, "{page}");
    // The picture names each step's operation, and the timeline each call.
    let (picture, timeline) = page.split_once("</svg>").unwrap();
    for op in ["jobs.createJob", "jobs.getJob", "jobs.listJobs"] {
        assert!(picture.contains(op), "{op}:\n{picture}");
        assert!(timeline.contains(op), "{op}:\n{timeline}");
    }
    assert!(
        page.contains("operation <b>jobs.getJob</b> (GET /jobs/{jobId})"),
        "{page}"
    );
    assert_clean(JOBS_TOKEN, &[("page", &page), ("log", &served.log())]);
}

#[test]
fn test_files_script_operations_and_a_drifted_answer_stops_them() {
    let out = handoff(&["test", "tests/files/openapi/jobs-flow.test.yaml"], &[]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(said.contains("✔ 2 passed, 0 failed"), "{said}");

    // The refusal loses its required `message`: the file stops before any case runs.
    let dir = crate::common::scratch("openapi-test-file");
    for name in ["jobs-flow.yaml", "jobs-flow.mock.yaml"] {
        let text_of = with_jobs_yaml(&format!("tests/files/openapi/{name}"));
        std::fs::write(dir.join(name), text_of).unwrap();
    }
    let drifted = std::fs::read_to_string("tests/files/openapi/jobs-flow.test.yaml")
        .unwrap()
        .replace(
            "body: { code: taken, message: a job for C-42 is running }",
            "body: { code: taken }",
        );
    let file = dir.join("jobs-flow.test.yaml");
    std::fs::write(&file, drifted).unwrap();
    let out = handoff(&["test", file.to_str().unwrap()], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("jobs-flow.test.yaml:20:9"), "{err}");
    assert!(err.contains("`message`"), "{err}");
    assert!(err.contains("no case was run"), "{err}");
}
