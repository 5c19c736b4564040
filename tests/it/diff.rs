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

/// A recording keeps the run's inputs that are not secret, as YAML, and a
/// replay uses them: no input retyped, no difference. Given another input,
/// `diff` names the field that differs, and `--all` shows every place.
#[test]
fn a_replay_needs_no_input_retyped_and_diff_names_what_differs() {
    const RECORD_TOKEN: &str = crate::common::TOKEN;
    let sim = crate::common::Sim::new();
    let (instance, _) = sim.instance(serde_json::json!({ "delay": "0s", "after_polls": 1 }));
    let dir = scratch("replay-inputs");
    let rec = dir.join("rec.mock.yaml");
    let real = dir.join("real.jsonl");
    let out = handoff(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--set",
            &format!("instance_id={instance}"),
            "--set",
            "outcome=Canceled",
            "--set",
            "poll_interval=1ms",
            "--record",
            rec.to_str().unwrap(),
            "--quiet",
            "--trace-file",
            real.to_str().unwrap(),
        ],
        &[("NWC_BASE_URL", &sim.base), ("NWC_TOKEN", RECORD_TOKEN)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let recording = std::fs::read_to_string(&rec).unwrap();
    assert!(recording.contains("\ninputs:\n"), "{recording}");
    assert!(recording.contains("outcome: Canceled"), "{recording}");
    assert!(
        !recording.trim_start_matches('#').contains("\"responses\""),
        "YAML, not JSON: {recording}"
    );
    crate::common::assert_clean(RECORD_TOKEN, &[("recording", &recording)]);
    let replay = |name: &str, sets: &[&str]| {
        let path = dir.join(name);
        let mut args = vec![
            "run",
            "flows/complete-nwc-task.yaml",
            "--mock",
            rec.to_str().unwrap(),
            "--quiet",
            "--trace-file",
            path.to_str().unwrap(),
        ];
        for s in sets {
            args.extend(["--set", s]);
        }
        let out = handoff(&args, &[("NWC_TOKEN", "replay-token-4821")]);
        (out.status.code(), text(&out.stderr), path)
    };
    let (code, said, same) = replay("same.jsonl", &[]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("inputs from the recording"), "{said}");
    let out = handoff(
        &["diff", real.to_str().unwrap(), same.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    // Another outcome: the first difference names the field.
    let (_, said, other) = replay("other.jsonl", &["outcome=Completed"]);
    let out = handoff(
        &["diff", real.to_str().unwrap(), other.to_str().unwrap()],
        &[],
    );
    let first = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{first}{said}");
    assert!(
        first.contains("what differs: `fields.outcome` (\"Canceled\" ≠ \"Completed\")"),
        "{first}"
    );
    let out = handoff(
        &[
            "diff",
            real.to_str().unwrap(),
            other.to_str().unwrap(),
            "--all",
        ],
        &[],
    );
    let all = text(&out.stdout);
    assert!(all.contains("the runs part in "), "{all}");
    let places = all.lines().filter(|l| l.starts_with("≠ ")).count();
    assert!(places >= 2, "every place, not only the first: {all}");
    assert!(all.contains("`fields.outcome`"), "{all}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A trace file named `.gz` is written gzip-compressed: the same events as a
/// plain one (`diff` reads both and finds no difference), a poll loop's
/// trace far smaller, no secret in it once decompressed. A compressed trace
/// cut off (a killed run) is read up to its last whole line; one whose bytes
/// are not gzip's is refused, saying why.
#[test]
fn a_gz_trace_file_holds_the_plain_ones_events_compressed_and_is_read_back() {
    use std::io::Read;
    const TOKEN: &str = "diff-test-token-1234";
    let dir = scratch("diff-gz");
    let flow = std::path::Path::new("flows/complete-nwc-task.yaml");
    let plain = trace(&dir, flow, "plain.jsonl");
    let packed = trace(&dir, flow, "packed.jsonl.gz");
    let bytes = std::fs::read(&packed).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "a gzip file");
    let mut unpacked = String::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_string(&mut unpacked)
        .unwrap();
    let plain_text = std::fs::read_to_string(&plain).unwrap();
    let kinds = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                (v["event"].to_string(), v["step"].to_string())
            })
            .collect()
    };
    assert_eq!(kinds(&unpacked), kinds(&plain_text));
    assert!(
        bytes.len() * 5 < plain_text.len(),
        "{} bytes compressed, {} plain",
        bytes.len(),
        plain_text.len()
    );
    crate::common::assert_clean(TOKEN, &[("the decompressed trace", &unpacked)]);
    let diff = |a: &std::path::Path, b: &std::path::Path| {
        handoff(
            &[
                "diff",
                a.to_str().unwrap(),
                b.to_str().unwrap(),
                "--format",
                "json",
            ],
            &[],
        )
    };
    let out = diff(&plain, &packed);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let json: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(json["b"]["steps"], 50);

    // Cut off in the middle: what it holds is read, and the runs part where it ends.
    let cut = dir.join("cut.jsonl.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = diff(&plain, &cut);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let steps = json["b"]["steps"].as_u64().unwrap();
    assert!(0 < steps && steps < 50, "{json}");

    // The gzip header, then bytes that are not a deflate stream.
    let corrupt = dir.join("corrupt.jsonl.gz");
    let mut broken = bytes[..10].to_vec();
    broken.extend(std::iter::repeat_n(0xff, 64));
    std::fs::write(&corrupt, &broken).unwrap();
    let out = diff(&plain, &corrupt);
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr);
    assert!(
        said.contains("cannot read `") && said.contains("corrupt.jsonl.gz"),
        "{said}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
