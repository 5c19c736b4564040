//! `handoff graph`: every example flow as Mermaid (snapshots), one as DOT,
//! and the path a run took, highlighted from its trace file.

use crate::common::{handoff, text};

#[test]
fn every_example_flow_draws_as_mermaid() {
    insta::glob!("../../flows", "*.yaml", |path| {
        if path.to_string_lossy().contains(".mock.") || path.to_string_lossy().contains(".test.") {
            return;
        }
        let out = handoff(&["graph", path.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        insta::assert_snapshot!(text(&out.stdout));
    });
}

#[test]
fn dot_draws_decisions_as_diamonds_and_on_error_dashed() {
    let out = handoff(
        &["graph", "flows/cancel-on-failure.yaml", "--format", "dot"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    insta::assert_snapshot!(text(&out.stdout));
}

#[test]
fn a_trace_highlights_the_path_and_where_the_run_ended() {
    let dir = crate::common::scratch("graph-trace");
    let trace = dir.join("run.jsonl");
    let out = handoff(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--mock",
            "tests/files/never-found.mock.yaml",
            "--set",
            "instance_id=abc",
            "--quiet",
            "--trace-file",
            trace.to_str().unwrap(),
        ],
        &[("NWC_TOKEN", "graph-test-token")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = handoff(
        &[
            "graph",
            "flows/complete-nwc-task.yaml",
            "--trace",
            trace.to_str().unwrap(),
        ],
        &[],
    );
    let chart = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // It polled and gave up: every step but `complete` was taken, and it ended failing at `give_up`.
    assert!(
        chart.contains("    class s0,s1,s2,s3,s4 taken\n"),
        "{chart}"
    );
    assert!(chart.contains("    class s6 failed\n"), "{chart}");
    assert!(
        !chart.contains("s5 taken") && !chart.contains(",s5"),
        "{chart}"
    );
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "not json\n").unwrap();
    let out = handoff(
        &[
            "graph",
            "flows/complete-nwc-task.yaml",
            "--trace",
            bad.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("line 1 of"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
