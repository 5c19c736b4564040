//! Arazzo documents through the real binary: a retry replayed on the
//! virtual clock and bounded by `plan`, the NWC worker written as Arazzo
//! against the simulator, and the specification's own examples, whose
//! mistakes `check` finds in their files.

use serde_json::{Value, json};

use crate::common::{Sim, TOKEN, assert_clean, handoff, text};

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

/// The specification's examples (tests/arazzo/spec, from OAI/Arazzo-Specification):
/// what `check` says of each, as docs/arazzo.md's table lists.
#[test]
fn the_specifications_examples_check_as_the_table_says() {
    let check = |file: &str, extra: &[&str]| {
        let mut args = vec!["check", file];
        args.extend(extra);
        let out = handoff(&args, &[]);
        (
            out.status.code(),
            format!("{}{}", text(&out.stdout), text(&out.stderr)),
        )
    };
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "tests/arazzo/spec/pet-coupons.arazzo.yaml",
            &[],
            &[
                "`pet_coupons.findPetsByTags` has no parameter `pet_tags`",
                "`pet_coupons.getPetCoupons` has no parameter `pet_id`",
                "did you mean `petId`?",
                "3 errors",
            ],
        ),
        (
            "tests/arazzo/spec/FAPI-PAR.arazzo.yaml",
            &[],
            &["has no operation `PAR`", "did you mean `Par`?", "1 error"],
        ),
        (
            "tests/arazzo/spec/oauth.arazzo.yaml",
            &[],
            &[
                "lacks the required property `client_id`",
                "oauth.arazzo.yaml:60:13",
                "1 error",
            ],
        ),
        (
            "tests/arazzo/spec/LoginAndRetrievePets.arazzo.yaml",
            &[],
            &[
                "source `petStoreDescription` is a URL",
                "--source petStoreDescription=FILE",
                "1 error",
            ],
        ),
        (
            "tests/arazzo/spec/bnpl-arazzo.yaml",
            &["--source", "BnplApi=tests/arazzo/spec/bnpl-openapi.yaml"],
            &[
                "`$steps.authenticateCustomerAndAuthorizeLoan.outputs.redirectAuthToken`",
                "`$steps.retrieveFinalizedPaymentPlan.finalizedPaymentPlan`",
                "4 errors",
            ],
        ),
        (
            "tests/arazzo/spec/ExtendedParametersExample.arazzo.yaml",
            &[],
            &[
                "cannot read `tests/arazzo/spec/animals.yaml`: no such file",
                "1 error",
            ],
        ),
    ];
    for (file, extra, expected) in cases {
        let (code, said) = check(file, extra);
        assert_eq!(code, Some(2), "{file}: {said}");
        assert!(!said.contains("panicked"), "{file}: {said}");
        for e in *expected {
            assert!(said.contains(e), "{file}: `{e}` in\n{said}");
        }
    }
    // The handoff examples check clean.
    for file in [JOBS, "flows/complete-nwc-task.arazzo.yaml"] {
        let (code, said) = check(file, &[]);
        assert_eq!(code, Some(0), "{file}: {said}");
    }
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
