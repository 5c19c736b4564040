//! Network faults, injected by the simulator, against the real binary: what a
//! worker meets at night. Each test checks the run's verdict and the
//! simulator's own count of completions, which must never pass one.
//!
//! Timeouts and backoff in `tests/files/resilient.yaml` are test-sized, so no
//! test waits for real longer than a second.

use crate::common::{Sim, TOKEN, assert_no_token, gets_and_patches, text};
use serde_json::{Value, json};

const FLOW: &str = "tests/files/resilient.yaml";

fn setup() -> (Sim, String, String) {
    let sim = Sim::new();
    let (instance, task) = sim.instance(json!({ "delay": "0s" }));
    (sim, instance, task)
}

fn fault(sim: &Sim, spec: Value) {
    let armed = sim.control("POST", "/_sim/faults", spec);
    assert!(armed["id"].is_number(), "{armed}");
}

fn completions(sim: &Sim, task: &str) -> (u64, u64) {
    let t = sim.task(task);
    (
        t["completions"].as_u64().unwrap(),
        t["completionAttempts"].as_u64().unwrap(),
    )
}

#[test]
fn retry_after_on_503_is_honoured_up_to_its_cap_then_the_run_succeeds() {
    let (sim, instance, task) = setup();
    fault(
        &sim,
        json!({ "method": "GET", "path": "/workflows/v2/tasks", "times": 2, "status": 503, "retry_after": "1" }),
    );
    let out = sim.run(FLOW, TOKEN, &[&format!("instance_id={instance}")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "↻ attempt 1 of 4: 503 Service Unavailable; retrying in 100ms, Retry-After: 1"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("↻ attempt 2 of 4: 503 Service Unavailable"),
        "{stdout}"
    );
    // Three tries at the list, one read of the task, one PATCH.
    assert_eq!(gets_and_patches(&sim.requests()), (4, 1));
    assert_eq!(completions(&sim, &task), (1, 1));
}

#[test]
fn a_429_is_retried_and_the_token_never_shows() {
    let (sim, instance, task) = setup();
    fault(&sim, json!({ "method": "PATCH", "status": 429 }));
    let out = sim.run(FLOW, TOKEN, &[&format!("instance_id={instance}")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert_no_token(&out, TOKEN);
    assert!(text(&out.stdout).contains("↻ attempt 1 of 3: 429 Too Many Requests"));
    assert_eq!(
        completions(&sim, &task),
        (1, 1),
        "the 429 never reached the task"
    );
}

/// The PATCH takes effect, but its answer comes too late: the worker times
/// out, retries, meets a 409, reads the task back and sees its own outcome.
#[test]
fn a_patch_that_timed_out_after_completing_is_not_completed_twice() {
    let (sim, instance, task) = setup();
    fault(&sim, json!({ "method": "PATCH", "delay": "600ms" }));
    let out = sim.run(FLOW, TOKEN, &[&format!("instance_id={instance}")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("↻ attempt 1 of 3: timed out after 200ms"),
        "{stdout}"
    );
    assert!(stdout.contains("← 409 Conflict"), "{stdout}");
    assert!(
        stdout.contains("is already complete with outcome `Completed`: nothing to do"),
        "{stdout}"
    );
    assert!(stdout.contains("done_before = true"), "{stdout}");
    assert_eq!(
        completions(&sim, &task),
        (1, 2),
        "two PATCHes reached it; one completed it"
    );
    assert_eq!(sim.instance_state(&instance)["outcome"], "Completed");
}

#[test]
fn a_connection_dropped_after_the_patch_took_effect_is_recovered() {
    let (sim, instance, task) = setup();
    fault(&sim, json!({ "method": "PATCH", "body": "drop" }));
    let out = sim.run(FLOW, TOKEN, &[&format!("instance_id={instance}")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("↻ attempt 1 of 3: the connection dropped"),
        "{stdout}"
    );
    assert!(stdout.contains("nothing to do"), "{stdout}");
    assert_eq!(completions(&sim, &task), (1, 2));
}

#[test]
fn a_list_cut_off_mid_body_is_retried() {
    let (sim, instance, task) = setup();
    fault(
        &sim,
        json!({ "method": "GET", "path": "/workflows/v2/tasks", "body": "cut" }),
    );
    let out = sim.run(FLOW, TOKEN, &[&format!("instance_id={instance}")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("↻ attempt 1 of 4: the connection dropped"),
        "{stdout}"
    );
    assert_eq!(completions(&sim, &task), (1, 1));
}

#[test]
fn a_task_completed_by_someone_else_with_another_outcome_is_a_clear_conflict() {
    let (sim, instance, task) = setup();
    let theirs = sim.rt.block_on(async {
        crate::common::client()
            .patch(format!("{}/workflows/v1/tasks/{task}", sim.base))
            .bearer_auth(TOKEN)
            .json(&json!({ "outcome": "Canceled" }))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(theirs, 204);
    let out = sim.run(FLOW, TOKEN, &[&format!("instance_id={instance}")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert!(
        last.contains("step `complete` (patch_task) failed: task"),
        "{last}"
    );
    assert!(
        last.contains("is already complete with outcome `Canceled`, not `Completed`"),
        "{last}"
    );
    assert!(
        stdout.contains("handoff never completes a task twice"),
        "{stdout}"
    );
    // Seen closed when the step read the task: no PATCH was sent.
    assert!(!stdout.contains("→ PATCH"), "{stdout}");
    assert_eq!(completions(&sim, &task), (1, 1));
    assert_eq!(
        sim.instance_state(&instance)["outcome"],
        "Canceled",
        "theirs stands"
    );
}

/// Answers a flow cannot use end the run with a step error, not a panic,
/// and nothing is completed.
#[test]
fn unusable_answers_are_step_errors() {
    let cases = [
        ("broken", "without a JSON body"),
        ("empty", "without a JSON body"),
        ("huge", "the response body is larger than 10485760 bytes"),
    ];
    for (body, expected) in cases {
        let (sim, instance, task) = setup();
        fault(
            &sim,
            json!({ "method": "GET", "path": "/workflows/v2/tasks", "body": body }),
        );
        let out = sim.run(FLOW, TOKEN, &[&format!("instance_id={instance}")]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{body}: {stdout}{stderr}");
        assert!(!stderr.contains("panicked"), "{body}: {stderr}");
        let last = stdout.lines().last().unwrap();
        assert!(
            last.contains("step `find_task` (get_tasks) failed") && last.contains(expected),
            "{body}: {last}"
        );
        assert_eq!(completions(&sim, &task), (0, 0), "{body}");
    }
}

/// The contract's [guess] parts, set the other way: completion answers 200
/// with the task, and a finished task answers 400, not 409. The worker copes
/// with both, and a repeat run is still "nothing to do". The repeat uses the
/// legacy task-level form, which PATCHes without reading first, so the 400
/// really comes and is read back over HTTP.
#[test]
fn the_guessed_statuses_set_the_other_way() {
    let sim = Sim::start(handoff::sim::shared::SimConfig {
        complete_status: 200,
        conflict_status: 400,
        ..crate::common::config()
    });
    let (instance, task) = sim.instance(json!({ "delay": "0s" }));
    let set = format!("instance_id={instance}");
    let first = sim.run(FLOW, TOKEN, &[&set]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stdout));
    assert!(text(&first.stdout).contains("← 200 OK"));
    let dir = crate::common::scratch("guessed");
    let legacy = dir.join("legacy.yaml");
    let source = std::fs::read_to_string(FLOW).unwrap();
    std::fs::write(
        &legacy,
        source.replace(
            "      outcome: \"{{ outcome }}\"\n",
            "      outcome: \"{{ outcome }}\"\n      legacy_task_level: true\n",
        ),
    )
    .unwrap();
    let again = sim.run(legacy.to_str().unwrap(), TOKEN, &[&set]);
    let stdout = text(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("← 400 Bad Request"), "{stdout}");
    assert!(stdout.contains("nothing to do"), "{stdout}");
    assert!(
        stdout.contains("→ PATCH") && stdout.contains("/workflows/v1/tasks/"),
        "{stdout}"
    );
    assert_eq!(completions(&sim, &task), (1, 2));
    std::fs::remove_dir_all(&dir).unwrap();
}
