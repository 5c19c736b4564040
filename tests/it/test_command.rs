//! `handoff test` through the real binary: the shipped flows' own cases
//! pass, a wrong expectation fails with what was expected and what
//! happened, an invalid file runs nothing, stored traces catch drift, and
//! JUnit XML comes out for CI.

use crate::common::{handoff, scratch, text};

#[test]
fn the_shipped_flows_cases_pass_with_their_stored_traces() {
    let out = handoff(&["test", "flows/", "--snapshot"], &[]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    for file in [
        "flows/app-token.test.yaml",
        "flows/approval.test.yaml",
        "flows/callback-worker.test.yaml",
        "flows/cancel-on-failure.test.yaml",
        "flows/complete-nwc-task.test.yaml",
        "flows/sweep-worker.test.yaml",
    ] {
        assert!(said.contains(file), "{said}");
    }
    assert!(said.contains(" 0 failed, in 6 file(s)"), "{said}");
    assert!(!said.contains('✘'), "{said}");
}

const WRONG: &str = r#"
flow: ../../flows/complete-nwc-task.yaml
cases:
  - name: expects the wrong things
    set: { instance_id: 7c1e4b52-instance }
    env: { NWC_TOKEN: canary-test-token-5a1f }
    mock: ../../flows/complete-nwc-task.mock.yaml
    expect:
      status: failed
      fields: { tries: 4, token: not-the-token }
      requests:
        - { request: GET /workflows/v2/tasks, count: 2 }
        - { request: "PATCH /workflows/v2/tasks/*/assignments/*", body: { outcome: Canceled } }
  - name: expects the right things
    set: { instance_id: 7c1e4b52-instance }
    env: { NWC_TOKEN: canary-test-token-5a1f }
    mock: ../../flows/complete-nwc-task.mock.yaml
    expect: { status: succeeded }
"#;

#[test]
fn a_wrong_expectation_fails_with_expected_and_actual_and_a_junit_report() {
    // Two levels below the repository, so the relative paths above resolve.
    let dir = std::path::Path::new("target").join(format!("test-command-{}", std::process::id()));
    let sub = dir.join("cases");
    std::fs::create_dir_all(&sub).unwrap();
    let file = sub.join("wrong.test.yaml");
    std::fs::write(&file, WRONG.replace("../../", "../../../")).unwrap();
    let junit = dir.join("junit.xml");
    let out = handoff(
        &[
            "test",
            file.to_str().unwrap(),
            "--report",
            &format!("junit={}", junit.display()),
        ],
        &[],
    );
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}{}", text(&out.stderr));
    assert!(said.contains("✘ expects the wrong things"), "{said}");
    assert!(said.contains("✔ expects the right things"), "{said}");
    assert!(
        said.contains("status: expected failed, got succeeded"),
        "{said}"
    );
    assert!(
        said.contains("field `tries`:\n        - `4`\n        + `3`"),
        "{said}"
    );
    assert!(
        said.contains("field `token` ends with another value (it is secret: neither is shown"),
        "{said}"
    );
    assert!(
        said.contains("requests `GET /workflows/v2/tasks`: expected 2, sent 3"),
        "{said}"
    );
    assert!(
        said.contains("at `$.outcome`:\n        - `Canceled`\n        + `Completed`"),
        "{said}"
    );
    assert!(said.contains("1 passed, 1 failed"), "{said}");
    let all = said + &text(&out.stderr);
    assert!(!all.contains("canary-test-token-5a1f") && !all.contains("not-the-token"));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(
        xml.contains(
            r#"<testsuites name="handoff test" tests="2" skipped="0" failures="1" errors="0">"#
        ),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="expects the right things""#),
        "{xml}"
    );
    assert!(!xml.contains("canary-test-token-5a1f"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_invalid_test_file_runs_nothing_and_says_where() {
    let dir = scratch("test-invalid");
    let flow = dir.join("f.yaml");
    std::fs::write(&flow, "flow: f\nsteps:\n  - id: done\n    end: ok\n").unwrap();
    let good = dir.join("a.test.yaml");
    std::fs::write(
        &good,
        "flow: f.yaml\ncases:\n  - name: ends\n    expect: { status: succeeded }\n",
    )
    .unwrap();
    let bad = dir.join("f.test.yaml");
    std::fs::write(
        &bad,
        "cases:\n  - name: typo\n    expect: { stauts: succeeded, ended_at: dome }\n",
    )
    .unwrap();
    let out = handoff(&["test", dir.to_str().unwrap()], &[]);
    let (said, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{said}{err}");
    assert!(said.is_empty(), "no case ran: {said}");
    assert!(err.contains("unknown key `stauts` in `expect`"), "{err}");
    assert!(err.contains("did you mean `status`?"), "{err}");
    assert!(err.contains("f.test.yaml:3:"), "{err}");
    assert!(err.contains("did you mean `done`?"), "{err}");
    assert!(err.contains("no case was run"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stored_trace_catches_drift_and_update_rewrites_it() {
    let dir = scratch("test-snapshot");
    for f in [
        "complete-nwc-task.yaml",
        "complete-nwc-task.mock.yaml",
        "complete-nwc-task.test.yaml",
    ] {
        std::fs::copy(format!("flows/{f}"), dir.join(f)).unwrap();
    }
    let traces = dir.join("complete-nwc-task.traces");
    std::fs::create_dir_all(&traces).unwrap();
    for entry in std::fs::read_dir("flows/complete-nwc-task.traces").unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), traces.join(entry.file_name())).unwrap();
    }
    let root = dir.to_str().unwrap();
    let out = handoff(&["test", root, "--snapshot"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    // The flow changes: it polls every 7 s instead of 5 s.
    let flow = dir.join("complete-nwc-task.yaml");
    let source = std::fs::read_to_string(&flow).unwrap();
    std::fs::write(&flow, source.replace("default: 5s", "default: 7s")).unwrap();
    let out = handoff(&["test", root, "--snapshot", "--case", "third poll"], &[]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("the trace differs from"), "{said}");
    assert!(said.contains("-   0.000s    waits 5s"), "{said}");
    assert!(said.contains("+   0.000s    waits 7s"), "{said}");
    // Without --snapshot, the expectations alone still hold.
    let out = handoff(&["test", root], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = handoff(&["test", root, "--update"], &[]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    // It says which trace files it wrote, and which of them changed.
    assert!(
        said.contains("the-task-appears-on-the-third-poll.trace` (changed)"),
        "{said}"
    );
    let out = handoff(&["test", root, "--snapshot"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let stored =
        std::fs::read_to_string(traces.join("the-task-appears-on-the-third-poll.trace")).unwrap();
    assert!(
        stored.contains("waits 7s") && !stored.contains("real"),
        "{stored}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An `ended_at` that names no step says which, and what it may have
/// meant; the right one passes, with a request pattern that has a query.
#[test]
fn ended_at_names_the_missing_step() {
    let dir = scratch("test-ended-at");
    let file = dir.join("typo.test.yaml");
    let cases = |ended_at: &str, query: &str| {
        format!(
            r#"
flow: {flows}/complete-nwc-task.yaml
cases:
  - name: the third poll
    set: {{ instance_id: 7c1e4b52-instance }}
    env: {{ NWC_TOKEN: test-token-8b2d41 }}
    mock: {flows}/complete-nwc-task.mock.yaml
    expect:
      status: succeeded
      ended_at: {ended_at}
      requests:
        - {{ request: "GET /workflows/v2/tasks?{query}", count: 3 }}
"#,
            flows = std::fs::canonicalize("flows").unwrap().display()
        )
    };
    std::fs::write(
        &file,
        cases("compelte", "workflowInstanceId=7c1e4b52-instance"),
    )
    .unwrap();
    let out = handoff(&["test", file.to_str().unwrap()], &[]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("`ended_at: compelte`: flow `complete-nwc-task` has no step `compelte`"),
        "{said}"
    );
    assert!(said.contains("did you mean `complete`?"), "{said}");
    std::fs::write(
        &file,
        cases("complete", "workflowInstanceId=7c1e4b52-instance"),
    )
    .unwrap();
    let out = handoff(&["test", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    std::fs::remove_dir_all(&dir).unwrap();
}
