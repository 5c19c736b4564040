//! `handoff diff`: two dry runs of the reference flow that part at the
//! decision (one gives up after two tries), and a trace against itself.

use crate::common::{handoff, scratch, text};

/// Dry-runs `flow` against a mock whose task never appears; its trace file.
fn trace(dir: &std::path::Path, flow: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let out = handoff(
        &[
            "run",
            flow.to_str().unwrap(),
            "--mock",
            "tests/files/never-found.mock.yaml",
            "--set",
            "instance_id=abc",
            "--quiet",
            "--trace-file",
            path.to_str().unwrap(),
        ],
        &[("NWC_TOKEN", "diff-test-token-1234")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    path
}

#[test]
fn two_runs_that_part_at_the_decision_show_it_first() {
    let dir = scratch("diff");
    let flow = std::path::Path::new("flows/complete-nwc-task.yaml");
    let early = dir.join("early.yaml");
    let source = std::fs::read_to_string(flow).unwrap();
    std::fs::write(
        &early,
        source.replace("\"tries >= max_tries\"", "\"tries >= 2\""),
    )
    .unwrap();
    let a = trace(&dir, flow, "a.jsonl");
    let b = trace(&dir, &early, "b.jsonl");
    let out = handoff(&["diff", a.to_str().unwrap(), b.to_str().unwrap()], &[]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("the runs part at event 15 at step `task_ready`"),
        "{said}"
    );
    assert!(said.contains("max_tries = 10"), "{said}");
    assert!(
        said.contains(": 50 steps, 10 GET, 45.0s on the run's clock, failed"),
        "{said}"
    );
    assert!(
        said.contains(": 10 steps, 2 GET, 5.0s on the run's clock, failed"),
        "{said}"
    );
    assert!(!said.contains("diff-test-token"));
    let out = handoff(
        &[
            "diff",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    );
    let json: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(json["same"], false);
    assert_eq!(json["first_difference"]["a"]["step"], "task_ready");
    assert_eq!(json["first_difference"]["a"]["event"], "decision_taken");
    assert_eq!(json["b"]["steps"], 10);
    // A trace against itself, and another run of the same flow: no difference.
    let again = trace(&dir, flow, "again.jsonl");
    let out = handoff(&["diff", a.to_str().unwrap(), again.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).starts_with("no difference: "));
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{}\n").unwrap();
    let out = handoff(&["diff", a.to_str().unwrap(), bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}
