//! Arazzo documents through the real binary: a retry replayed on the
//! virtual clock and bounded by `plan`, the NWC worker written as Arazzo
//! against the simulator, every form of the language with its trace, and
//! the examples of the specification and of other runners, checked as
//! docs/arazzo.md's tables say and run on their own answers.

use serde_json::{Value, json};

use crate::common::{Served, Sim, TOKEN, assert_clean, handoff, scratch, text, until};

const JOBS: &str = "tests/arazzo/handoff/jobs.arazzo.yaml";

fn events(trace: &str) -> Vec<Value> {
    trace
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn dry(mock: &str) -> (Option<i32>, Vec<Value>, String) {
    let out = handoff(
        &[
            "run",
            JOBS,
            "--mock",
            mock,
            "--set",
            "container=C-42",
            "--set",
            "token=arazzo-token-3b9e2f",
            "--trace",
            "jsonl",
        ],
        &[("JOBS_URL", "https://jobs.example.com/v1")],
    );
    let said = text(&out.stdout);
    assert_clean(
        "arazzo-token-3b9e2f",
        &[("stdout", &said), ("stderr", &text(&out.stderr))],
    );
    (out.status.code(), events(&said), text(&out.stderr))
}

fn sent(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "request_sent")
        .map(|e| {
            format!(
                "{} {}",
                e["method"].as_str().unwrap(),
                e["url"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_retry_waits_on_the_virtual_clock_and_plan_bounds_it() {
    // Ready on the fourth poll: three retries, an hour apart.
    let (code, events, err) = dry("tests/arazzo/handoff/jobs.arazzo.mock.yaml");
    assert_eq!(code, Some(0), "{err}");
    let requests = sent(&events);
    assert_eq!(requests[0], "POST https://jobs.example.com/v1/jobs");
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.ends_with("/jobs/job-7"))
            .count(),
        4,
        "{requests:?}"
    );
    let body = events
        .iter()
        .find(|e| e["event"] == "request_sent")
        .map(|e| e["body"].clone())
        .unwrap();
    // The payload with its replacement, and the token as the source's credential.
    assert_eq!(
        body,
        json!({ "container": "C-42", "kind": "inspection", "priority": 3 })
    );
    let finished = events.last().unwrap();
    assert_eq!(finished["event"], "flow_finished");
    assert_eq!(finished["status"], "succeeded");
    let set = |field: &str| {
        events
            .iter()
            .rfind(|e| e["event"] == "field_set" && e["field"] == field)
            .map(|e| e["value"].clone())
    };
    // The workflow's outputs, one through a pointer, one through `.result.passed`.
    assert_eq!(set("outputs__state"), Some(json!("ready")));
    assert_eq!(set("outputs__passed"), Some(json!(true)));
    assert_eq!(finished["at_ms"], 3 * 3_600_000);

    // Never ready: `retryLimit: 24` retries, then the step, and the run, fail.
    let (code, events, err) = dry("tests/arazzo/handoff/never-ready.mock.yaml");
    assert_eq!(code, Some(1), "{err}");
    let polls = sent(&events)
        .iter()
        .filter(|r| r.ends_with("/jobs/job-7"))
        .count();
    assert_eq!(polls, 25);
    let finished = events.last().unwrap();
    assert_eq!(finished["at_ms"], 24 * 3_600_000);
    assert!(
        finished["reason"].as_str().unwrap().starts_with(
            "step `poll` of workflow `inspect` failed: its success criteria were not met"
        ),
        "{finished}"
    );

    let plan = handoff(&["plan", JOBS], &[]);
    let said = text(&plan.stdout);
    assert_eq!(plan.status.code(), Some(0), "{said}{}", text(&plan.stderr));
    assert!(said.contains("at most 25 rounds"), "{said}");
    assert!(said.contains("at most 25 GET to jobs.getJob"), "{said}");
    assert!(
        said.contains("timers    at most 24h (24 × 1h at `poll.wait.1`)"),
        "{said}"
    );
}

#[test]
fn the_nwc_worker_written_as_arazzo_completes_the_task_once() {
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": 0 }));
    let out = handoff(
        &[
            "run",
            "flows/complete-nwc-task.arazzo.yaml",
            "--set",
            &format!("instance_id={instance}"),
            "--trace",
            "jsonl",
        ],
        &[("NWC_URL", &sim.base), ("NWC_BEARER", TOKEN)],
    );
    let said = text(&out.stdout);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}{err}");
    let state = sim.task(&task);
    assert_eq!(
        state["taskAssignments"][0]["outcome"], "Completed",
        "{state}"
    );
    let patches = sim
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "PATCH")
        .count();
    assert_eq!(patches, 1);
    assert_clean(TOKEN, &[("stdout", &said), ("stderr", &err)]);
}

/// `check`'s summary in docs/arazzo.md's words: `clean`, `2 warnings`,
/// `1 error`, `3 errors, 1 warning`.
fn summary(code: Option<i32>, said: &str) -> String {
    let last = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if code == Some(0) && last.starts_with("ok ") {
        return "clean".to_string();
    }
    let words: Vec<&str> = last.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let (errors, warnings) = match words.as_slice() {
        [e, _, w, ..] => (
            e.parse::<usize>().unwrap_or(99),
            w.parse::<usize>().unwrap_or(99),
        ),
        _ => panic!("no summary in\n{said}"),
    };
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (0, w) => count(w, "warning"),
        (e, 0) => count(e, "error"),
        (e, w) => format!("{}, {}", count(e, "error"), count(w, "warning")),
    }
}

fn check(file: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["check", file];
    args.extend(extra);
    let out = handoff(&args, &[]);
    (
        out.status.code(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// Every Arazzo document under tests/arazzo (the specification's examples,
/// Redocly's and Jentic's fixtures, handoff's own) is a row of
/// docs/arazzo.md's tables, and `check` says of it what the row says.
#[test]
fn every_example_checks_as_docs_arazzo_md_says() {
    let docs = std::fs::read_to_string("docs/arazzo.md").unwrap();
    let mut rows = std::collections::BTreeMap::new();
    for line in docs.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, example, result, ..] = cells.as_slice()
            && let Some(path) = example.strip_prefix('`').and_then(|e| e.strip_suffix('`'))
            && std::path::Path::new("tests/arazzo").join(path).is_file()
        {
            rows.insert(path.to_string(), result.to_string());
        }
    }
    let mut documents = Vec::new();
    let mut stack = vec![std::path::PathBuf::from("tests/arazzo")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with("arazzo:")) {
                let shown = path.strip_prefix("tests/arazzo").unwrap();
                documents.push(shown.to_string_lossy().into_owned());
            }
        }
    }
    documents.sort();
    let listed: Vec<&String> = rows.keys().collect();
    assert_eq!(
        documents.iter().collect::<Vec<_>>(),
        listed,
        "docs/arazzo.md lists every Arazzo document under tests/arazzo, and no other"
    );
    assert!(documents.len() >= 50, "{documents:?}");
    for (path, expected) in &rows {
        let file = format!("tests/arazzo/{path}");
        let cafe = std::fs::read_to_string(&file)
            .unwrap()
            .contains("cafe.redocly.com");
        let extra: &[&str] = if cafe {
            &["--source", "cafe-api=tests/arazzo/redocly/cafe.yaml"]
        } else {
            &[]
        };
        let (code, said) = check(&file, extra);
        assert!(!said.contains("panicked"), "{file}: {said}");
        assert_eq!(
            code,
            Some(if expected.contains("error") { 2 } else { 0 }),
            "{file}: {said}"
        );
        assert_eq!(&summary(code, &said), expected, "{file}:\n{said}");
    }
}

/// What `check` says of some of them, in its own words.
#[test]
fn the_examples_mistakes_are_named_in_their_files() {
    let cafe = ["--source", "cafe-api=tests/arazzo/redocly/cafe.yaml"];
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "tests/arazzo/spec/pet-coupons.arazzo.yaml",
            &[],
            &[
                "`pet_coupons.findPetsByTags` has no parameter `pet_tags`",
                "`pet_coupons.getPetCoupons` has no parameter `pet_id`",
                "did you mean `petId`?",
            ],
        ),
        (
            "tests/arazzo/spec/FAPI-PAR.arazzo.yaml",
            &[],
            &["has no operation `PAR`", "did you mean `Par`?"],
        ),
        (
            "tests/arazzo/spec/oauth.arazzo.yaml",
            &[],
            &[
                "lacks the required property `client_id`",
                "oauth.arazzo.yaml:60:13",
            ],
        ),
        (
            "tests/arazzo/spec/LoginAndRetrievePets.arazzo.yaml",
            &[],
            &[
                "source `petStoreDescription` is a URL",
                "--source petStoreDescription=FILE",
            ],
        ),
        (
            "tests/arazzo/spec/bnpl-arazzo.yaml",
            &["--source", "BnplApi=tests/arazzo/spec/bnpl-openapi.yaml"],
            &[
                "`$steps.authenticateCustomerAndAuthorizeLoan.outputs.redirectAuthToken`",
                "`$steps.retrieveFinalizedPaymentPlan.finalizedPaymentPlan` is read as",
                "3 errors, 1 warning",
            ],
        ),
        (
            "tests/arazzo/spec/ExtendedParametersExample.arazzo.yaml",
            &[],
            &["cannot read `tests/arazzo/spec/animals.yaml`: no such file"],
        ),
        (
            "tests/arazzo/redocly/free-apis/free.arazzo.yaml",
            &[],
            &["step `get-first-post` calls an `x-operation`, Redocly's extension"],
        ),
        (
            "tests/arazzo/redocly/workflow-depends-on-not-found/workflow-depends-on-not-found.arazzo.yaml",
            &cafe,
            &["source `cafe-api` is an OpenAPI description: it has no workflows to depend on"],
        ),
        (
            "tests/arazzo/redocly/mask-input-secrets/mask-input-secrets.arazzo.yaml",
            &cafe,
            &["source `menu-from-cafe-api` is of type `arazzo`, which handoff does not run yet"],
        ),
        (
            "tests/arazzo/redocly/severity-error-level/severity-level.arazzo.yaml",
            &[],
            &[
                "the body at `$` lacks the required property `name`",
                "JSONPath `draft-goessner-dispatch-jsonpath-00` is evaluated as RFC 9535 JSONPath",
                "`cafe-api.listMenuItems` is read as `$sourceDescriptions.cafe-api.listMenuItems`",
            ],
        ),
        (
            "tests/arazzo/jentic/train/train.arazzo.yaml",
            &[],
            &[
                "`$inputs.create_booking_body`: workflow `Plan a Trip` has no input `create_booking_body`",
            ],
        ),
    ];
    for (file, extra, expected) in cases {
        let (code, said) = check(file, extra);
        assert!(!said.contains("panicked"), "{file}: {said}");
        for e in *expected {
            assert!(said.contains(e), "{file}: `{e}` in\n{said}");
        }
        assert!(code.is_some(), "{file}: {said}");
    }
    // The handoff examples check clean.
    for file in [JOBS, "flows/complete-nwc-task.arazzo.yaml"] {
        let (code, said) = check(file, &[]);
        assert_eq!(code, Some(0), "{file}: {said}");
    }
}

/// A run's pretty trace, with what changes from run to run (the real time,
/// the wall clock the virtual one starts at) blanked.
fn stable(trace: &str) -> String {
    let time = regex::Regex::new(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z").unwrap();
    let real = regex::Regex::new(r", [0-9.hms]+ real").unwrap();
    let out = time.replace_all(trace, "[time]");
    real.replace_all(&out, ", [real time] real").into_owned()
}

/// Each action type (`end`, `goto`, `retry`, on success and on failure,
/// first match winning, one by `reference`), each criteria type (simple,
/// regex, jsonpath) and each runtime expression form (`$inputs`, `$steps`,
/// `$workflows` of a `dependsOn`, `$statusCode`, `$response.body` with a
/// pointer and with `.name`, `$response.header`, `$request.path/query/header`,
/// `$url`, `$method`, `$components.parameters`, `$sourceDescriptions` in an
/// `operationPath`, `{$…}` inside text), through the real binary on scripted
/// answers, each trace kept as a snapshot.
#[test]
fn each_form_runs_as_its_trace_says() {
    const FORMS: &str = "tests/arazzo/handoff/forms.arazzo.yaml";
    const FORMS_TOKEN: &str = "forms-token-8c1d3f";
    let run = |mock: &str| {
        let out = handoff(
            &[
                "run",
                FORMS,
                "--workflow",
                "tour",
                "--mock",
                &format!("tests/arazzo/handoff/forms.{mock}.mock.yaml"),
                "--set",
                "workflows__prepare__container=C-42",
                "--set",
                "request=r1",
            ],
            &[("JOBS_BEARERAUTH", FORMS_TOKEN)],
        );
        let said = text(&out.stdout);
        assert_clean(
            FORMS_TOKEN,
            &[("stdout", &said), ("stderr", &text(&out.stderr))],
        );
        (out.status.code(), said)
    };
    // `retry` once (running), then `goto` by the last success action.
    let (code, ready) = run("ready");
    assert_eq!(code, Some(0), "{ready}");
    for line in [
        "look.wait.1 (timer)",
        "→ GET https://jobs.example.com/v1/jobs/job-9?verbose=true",
        "X-Request-Id: req-r1-C-42",
        "outputs__url = \"https://jobs.example.com/v1/jobs/job-9?verbose=true\"",
        "outputs__method = \"GET\"",
        "look__sent_id = \"job-9\"",
        "outputs__first = \"job-9\"",
        "outputs__container = \"C-42\"",
    ] {
        assert!(ready.contains(line), "`{line}` in\n{ready}");
    }
    insta::assert_snapshot!("forms_ready", stable(&ready));
    // A 404: the second failure action (`goto`) wins over the reference.
    let (code, lost) = run("lost");
    assert_eq!(code, Some(0), "{lost}");
    assert!(
        lost.contains("→ list [when 2: look__response_status == 404]"),
        "{lost}"
    );
    insta::assert_snapshot!("forms_lost", stable(&lost));
    // `end` on success: the first matching action, before the listing.
    let (code, broke) = run("broke");
    assert_eq!(code, Some(0), "{broke}");
    assert!(!broke.contains("jobs.listJobs"), "{broke}");
    insta::assert_snapshot!("forms_broke", stable(&broke));
    // Retries used up: the referenced `end` fails the run, after 4 looks.
    let (code, stuck) = run("stuck");
    assert_eq!(code, Some(1), "{stuck}");
    assert_eq!(
        stuck
            .matches("→ GET https://jobs.example.com/v1/jobs/job-9")
            .count(),
        4
    );
    insta::assert_snapshot!("forms_stuck", stable(&stuck));
}

/// Other runners' fixtures, run on the answers their own tests script.
#[test]
fn other_runners_examples_run_on_their_answers() {
    let run = |args: &[&str]| {
        let out = handoff(args, &[]);
        (out.status.code(), text(&out.stdout))
    };
    let (code, said) = run(&[
        "run",
        "tests/arazzo/jentic/sample_test/example_workflow.yaml",
        "--mock",
        "tests/arazzo/jentic/sample_test/example_workflow.mock.yaml",
        "--set",
        "name=test",
        "--set",
        "id=123",
    ]);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("outputs__result = \"Hello, test-123\""),
        "{said}"
    );
    for (workflow, mock, set, id) in [
        ("getCurrentComic", "current", None, "2639"),
        ("getComicById", "by-id", Some("comicId=614"), "614"),
    ] {
        let mock = format!("tests/arazzo/jentic/xkcd/{mock}.mock.yaml");
        let mut args = vec![
            "run",
            "tests/arazzo/jentic/xkcd/xkcd.arazzo.yaml",
            "--workflow",
            workflow,
            "--mock",
            &mock,
        ];
        if let Some(set) = set {
            args.extend(["--set", set]);
        }
        let (code, said) = run(&args);
        assert_eq!(code, Some(0), "{said}");
        assert!(said.contains(&format!("outputs__comicId = {id}")), "{said}");
        assert!(said.contains("outputs__date = null"), "{said}");
    }
    // The last of four spellings of Content-Type is sent, and read back.
    let (code, said) = run(&[
        "run",
        "tests/arazzo/redocly/case-insensitive-headers/case-insensitive-headers.arazzo.yaml",
        "--source",
        "cafe-api=tests/arazzo/redocly/cafe.yaml",
        "--mock",
        "tests/arazzo/redocly/case-insensitive-headers/answers.mock.yaml",
    ]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("ContenT-TypE: third"), "{said}");
    assert!(
        !said.contains("Type: first") && !said.contains("Type: second"),
        "{said}"
    );
    // A dependency that fails stops the workflow before its first step.
    let (code, said) = run(&[
        "run",
        "tests/arazzo/redocly/workflow-depends-on-failed/workflow-depends-on-failed.arazzo.yaml",
        "--source",
        "cafe-api=tests/arazzo/redocly/cafe.yaml",
        "--workflow",
        "workflow-with-failing-depends-on",
        "--mock",
        "tests/arazzo/redocly/workflow-depends-on-failed/answers.mock.yaml",
    ]);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("step `list-menu-items` of workflow `failing-dependency` failed"),
        "{said}"
    );
    assert!(!said.contains("list-menu-items-dependent (call)"), "{said}");
}

#[test]
fn a_credential_written_into_an_arazzo_document_is_masked_in_every_diagnostic() {
    const LITERAL: &str = "q7Zx83kdWv02mLp9";
    let dir = crate::common::scratch("arazzo-literal");
    let doc = std::fs::read_to_string(JOBS)
        .unwrap()
        .replace(
            "url: ../../files/openapi/jobs.yaml",
            &format!(
                "url: {}/tests/files/openapi/jobs.yaml",
                env!("CARGO_MANIFEST_DIR")
            ),
        )
        .replace(
            "value: Bearer {$inputs.token}",
            &format!("value: Bearer {LITERAL}"),
        );
    let file = dir.join("literal.arazzo.yaml");
    std::fs::write(&file, doc).unwrap();
    let out = handoff(&["check", file.to_str().unwrap()], &[]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("this looks like a literal bearer token"),
        "{said}"
    );
    assert!(
        said.contains("the credential for `bearerAuth` reads no secret field"),
        "{said}"
    );
    assert_clean(LITERAL, &[("check", &said)]);
}

/// The shipped `flows/` folder, as docs/serve.md serves it: the Arazzo
/// worker is one of its flows, named by its `workflowId`; a run of it,
/// killed with SIGKILL while it waits to retry, resumes from the store on
/// the version it started with and completes the task once.
#[test]
fn serve_runs_the_arazzo_worker_and_resumes_it_after_sigkill() {
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": 1 }));
    let dir = scratch("arazzo-serve");
    let db = dir.join("handoff.db");
    let env = [
        ("NWC_BASE_URL", sim.base.as_str()),
        ("NWC_TOKEN", TOKEN),
        ("NWC_URL", sim.base.as_str()),
        ("NWC_BEARER", TOKEN),
    ];
    let flows = std::path::Path::new("flows");
    let mut served = Served::start(flows, &db, &env);
    let (code, listed) = served.json("GET", "/v1/flows", None);
    assert_eq!(code, 200, "{listed}");
    let names: Vec<&str> = listed["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(names.contains(&"complete-nwc-task"), "{listed}");
    assert!(names.contains(&"complete-nwc-task-arazzo"), "{listed}");
    let (code, body) = served.json(
        "POST",
        "/v1/flows/complete-nwc-task-arazzo/runs",
        Some(json!({ "inputs": { "instance_id": instance } })),
    );
    assert_eq!(code, 201, "{body}");
    let run = body["id"].as_str().unwrap().to_string();
    // Waiting out `retryAfter` after the first empty list.
    let waiting = || {
        let (_, body) = served.json("GET", &format!("/v1/runs/{run}"), None);
        body["step"].as_str().is_some_and(|s| s.contains(".wait."))
    };
    assert!(until(waiting), "{}", served.log());
    served.kill();
    let served = Served::start(flows, &db, &env);
    let done = || {
        let (_, body) = served.json("GET", &format!("/v1/runs/{run}"), None);
        body["status"] == "succeeded"
    };
    assert!(until(done), "{}", served.log());
    let state = sim.task(&task);
    assert_eq!(
        state["taskAssignments"][0]["outcome"], "Completed",
        "{state}"
    );
    let patches = sim
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "PATCH")
        .count();
    assert_eq!(patches, 1);
    let (_, _, trace) = served.call("GET", &format!("/v1/runs/{run}/trace"), &[], None);
    assert_clean(TOKEN, &[("trace", &trace), ("log", &served.log())]);
}
