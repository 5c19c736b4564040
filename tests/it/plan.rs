//! `handoff plan`: the reference flow's worst case, worked out by hand
//! below, and a loop whose bound cannot be proven.

use crate::common::{handoff, scratch, text};

/// By hand, from flows/complete-nwc-task.yaml: `count` adds 1 to `tries`
/// (from 0) before `task_ready`, which leaves for `give_up` when
/// `tries >= max_tries` (10 by default). So round r sees tries = r, and
/// round 10 is the last: `find_task`, `read_id`, `count` and `task_ready`
/// run at most 10 times, `wait` (after the decision) at most 9. With
/// `complete` and `give_up` once each: 4 × 10 + 9 + 2 = 51 steps. Requests:
/// 10 lists, 1 PATCH, 1 GET of the task to pick the assignment, and 1 GET to
/// read it back after a 409: 12 GETs. Timers: 9 waits of `poll_interval`,
/// 5s by default, 45s.
#[test]
fn the_reference_flows_worst_case_is_worked_out() {
    let out = handoff(&["plan", "flows/complete-nwc-task.yaml"], &[]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(
        said.contains(
            "loop find_task → read_id → count → task_ready → wait → find_task: at most 10 rounds"
        ),
        "{said}"
    );
    assert!(
        said.contains("steps     at most 51 (max_steps: 1000)"),
        "{said}"
    );
    assert!(said.contains("at most 12 GET to us.nintex.io"), "{said}");
    assert!(said.contains("1 PATCH to us.nintex.io"), "{said}");
    assert!(
        said.contains("timers    at most 45s (9 × 5s at `wait`)"),
        "{said}"
    );
    let out = handoff(
        &["plan", "flows/complete-nwc-task.yaml", "--format", "json"],
        &[],
    );
    let plan: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(plan["loops"][0]["rounds"], 10);
    assert_eq!(plan["visits"]["find_task"], 10);
    assert_eq!(plan["visits"]["wait"], 9);
    assert_eq!(plan["steps"], 51);
    assert_eq!(plan["timer_ms"], 45_000);
}

#[test]
fn a_loop_with_no_counter_is_named_and_left_to_max_steps() {
    let dir = scratch("plan");
    let flow = dir.join("spin.yaml");
    std::fs::write(
        &flow,
        "flow: spin\nmax_steps: 50\nfields:\n  done: { type: boolean, default: false }\nsteps:\n  - id: look\n    timer: { duration: 1s }\n  - id: check\n    decision:\n      - when: \"done\"\n        goto: end\n      - otherwise: look\n",
    )
    .unwrap();
    let out = handoff(&["plan", flow.to_str().unwrap()], &[]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    assert!(
        said.contains("loop look → check → look: no bound proven"),
        "{said}"
    );
    assert!(said.contains("steps     at most 50 (max_steps)"), "{said}");
    assert!(said.contains("timers    unknown"), "{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_warns_when_the_worst_case_passes_max_steps() {
    let dir = scratch("plan-check");
    let flow = dir.join("tight.yaml");
    let source = std::fs::read_to_string("flows/complete-nwc-task.yaml").unwrap();
    std::fs::write(
        &flow,
        source.replacen("fields:", "max_steps: 40\n\nfields:", 1),
    )
    .unwrap();
    let out = handoff(&["check", flow.to_str().unwrap()], &[]);
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("in the worst case a run takes 51 steps, more than `max_steps: 40`"),
        "{said}"
    );
    let out = handoff(&["check", "flows/complete-nwc-task.yaml"], &[]);
    assert!(!text(&out.stderr).contains("worst case"));
    std::fs::remove_dir_all(&dir).unwrap();
}
