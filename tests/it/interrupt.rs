//! Ctrl-C during a timer and during a request: the run stops at once, the
//! trace (terminal and file) ends with "stopped by Ctrl-C at step X" (and
//! what was in flight), and the exit code is 130. The test waits for the trace line that says the step began,
//! not for a length of time.

use std::process::{Child, Command, Stdio};

fn start(args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(["--color", "never"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the trace until a line contains `marker`, sends SIGINT, and returns
/// the exit code and the rest of the trace.
fn interrupt_at(child: Child, marker: &str) -> (Option<i32>, Vec<String>) {
    interrupt_after(child, marker, std::time::Duration::ZERO)
}

/// As [`interrupt_at`], with SIGINT sent `after` the marker was read (at
/// least): a span the run's own clock must then show.
fn interrupt_after(
    mut child: Child,
    marker: &str,
    after: std::time::Duration,
) -> (Option<i32>, Vec<String>) {
    let (mut seen, lines) = crate::common::read_until(&mut child, marker);
    // Time passing is the condition under test here, not a stand-in for an event.
    let read = std::time::Instant::now();
    while read.elapsed() < after {
        std::thread::park_timeout(after - read.elapsed());
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    seen.extend(lines.map(Result::unwrap));
    (child.wait().unwrap().code(), seen)
}

/// How long after the timer began Ctrl-C comes, in the timer test.
const GAP: std::time::Duration = std::time::Duration::from_millis(150);

#[test]
fn ctrl_c_during_a_timer_ends_the_trace_and_the_trace_file() {
    let dir = std::env::temp_dir().join(format!("handoff-interrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("trace.jsonl");
    let child = start(
        &[
            "run",
            "tests/files/long-timer.yaml",
            "--trace-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    let (code, lines) = interrupt_after(child, "wait (timer)", GAP);
    assert_eq!(code, Some(130), "{lines:#?}");
    let last = lines.last().unwrap();
    assert!(
        last.contains("■ interrupted: stopped by Ctrl-C at step `wait` · "),
        "{last}"
    );
    assert!(!lines.iter().any(|l| l.contains("never reached")));
    let trace = std::fs::read_to_string(&file).unwrap();
    let end: serde_json::Value = serde_json::from_str(trace.lines().last().unwrap()).unwrap();
    assert_eq!(end["event"], "flow_finished");
    assert_eq!(end["status"], "interrupted");
    assert_eq!(end["at_step"], "wait");
    // When Ctrl-C came, not when the last event was written.
    let before: serde_json::Value =
        serde_json::from_str(trace.lines().rev().nth(1).unwrap()).unwrap();
    // Ctrl-C came at least GAP after the timer began: an ending stamped
    // with the last event's time fails here.
    let gap = GAP.as_millis() as u64;
    assert!(
        end["elapsed_ms"].as_u64().unwrap() >= before["at_ms"].as_u64().unwrap() + gap,
        "{end} {before}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_during_a_request_that_hangs() {
    let base = crate::common::hanging_server();
    let child = start(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--set",
            "instance_id=i-1",
        ],
        &[
            ("NWC_BASE_URL", &base),
            ("NWC_TOKEN", "canary-interrupt-9d1e"),
        ],
    );
    let (code, lines) = interrupt_at(child, "→ GET ");
    assert_eq!(code, Some(130), "{lines:#?}");
    let last = lines.last().unwrap();
    assert!(
        last.contains("stopped by Ctrl-C at step `find_task` while GET "),
        "{last}"
    );
    assert!(last.contains("was in flight: the server may have acted on it"));
    assert!(!lines.iter().any(|l| l.contains("canary-interrupt")));
}

#[test]
fn ctrl_c_during_a_patch_says_it_may_have_taken_effect_and_a_rerun_is_safe() {
    // The list and the task answer; the PATCH never does.
    let api = crate::common::Loopback::start(|n, _| {
        if n == 0 {
            crate::common::json_answer(200, &serde_json::json!({ "tasks": [{ "id": "t-1" }] }))
        } else if n == 1 {
            crate::common::json_answer(
                200,
                &serde_json::json!({ "id": "t-1", "status": "active", "taskAssignments": [{ "id": "a-1", "status": "active" }] }),
            )
        } else {
            loop {
                std::thread::park();
            }
        }
    });
    let child = start(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--set",
            "instance_id=i-1",
        ],
        &[
            ("NWC_BASE_URL", &api.base),
            ("NWC_TOKEN", "canary-interrupt-9d1e"),
        ],
    );
    let (code, lines) = interrupt_at(child, "→ PATCH ");
    assert_eq!(code, Some(130), "{lines:#?}");
    let last = lines.last().unwrap();
    assert!(
        last.contains("stopped by Ctrl-C at step `complete` while PATCH "),
        "{last}"
    );
    assert!(
        last.contains("running the flow again is safe, as `patch_task` reads the task first"),
        "{last}"
    );
}
