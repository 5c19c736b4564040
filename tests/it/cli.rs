//! The real binary, as scripts use it: whole stdout and stderr, and exit codes.

use std::process::{Command, Output};

const TOKEN: &str = "canary-7f3a9c1d-cli-token";

fn handoff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(args)
        .env("NWC_TOKEN", TOKEN)
        .env_remove("NWC_BASE_URL")
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    let s = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(!s.contains(TOKEN), "the token leaked");
    s
}

/// Real elapsed time is the one thing that changes from run to run.
fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r", [0-9.hms]+ real", ", [real time] real");
    // A dry run's virtual clock starts at the real time, so `until:` means what it says.
    s.add_filter(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", "[time]");
    s.set_omit_expression(true);
    s
}

#[test]
fn check_passes_on_the_shipped_examples() {
    let mut files: Vec<String> = std::fs::read_dir("flows")
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.sort();
    let args: Vec<&str> = std::iter::once("check")
        .chain(files.iter().map(String::as_str))
        .collect();
    let out = handoff(&args);
    assert_eq!(text(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
    settings().bind(|| insta::assert_snapshot!(text(&out.stdout)));
}

#[test]
fn dry_run_of_the_reference_flow_succeeds_on_the_third_poll() {
    let out = handoff(&[
        "run",
        "flows/complete-nwc-task.yaml",
        "--mock",
        "flows/complete-nwc-task.mock.yaml",
        "--set",
        "instance_id=7c1e4b52-instance",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert_eq!(text(&out.stderr), "");
    let last: Vec<&str> = stdout.lines().rev().take(9).collect();
    assert!(last[0].starts_with("✔ succeeded"), "{stdout}");
    assert!(last.iter().any(|l| l.contains("→ PATCH")), "{stdout}");
    settings().bind(|| insta::assert_snapshot!(stdout));
}

#[test]
fn a_task_that_never_appears_fails_on_the_give_up_path() {
    let out = handoff(&[
        "run",
        "flows/complete-nwc-task.yaml",
        "--mock",
        "tests/files/never-found.mock.yaml",
        "--set",
        "instance_id=inst-404",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap();
    let last = regex_free_real(last);
    assert_eq!(
        last,
        "✘ failed: no task for instance inst-404 after 10 tries · task_ready → give_up on try 10 · 50 steps · 45s virtual, [real time] real"
    );
}

fn regex_free_real(line: &str) -> String {
    match line.rfind(", ") {
        Some(i) if line.ends_with(" real") => format!("{}, [real time] real", &line[..i]),
        _ => line.to_string(),
    }
}

#[test]
fn three_mistakes_give_three_diagnostics_and_exit_2() {
    let out = handoff(&["check", "tests/files/three-mistakes.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("  × ").count(), 3, "{stderr}");
    settings().bind(|| insta::assert_snapshot!(stderr));
}

#[test]
fn run_refuses_an_invalid_flow_with_exit_2() {
    let out = handoff(&["run", "tests/files/bad-templates.yaml", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).contains("tests/files/bad-templates.yaml:9:10"));
}

#[test]
fn jsonl_trace_is_one_event_per_line_and_the_trace_file_matches() {
    let dir = std::env::temp_dir().join(format!("handoff-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("trace.jsonl");
    let out = handoff(&[
        "run",
        "flows/complete-nwc-task.yaml",
        "--mock",
        "flows/complete-nwc-task.mock.yaml",
        "--set",
        "instance_id=7c1e",
        "--trace",
        "jsonl",
        "--trace-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["event"], "flow_started");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "flow_finished");
    assert_eq!(last["status"], "succeeded");
    assert_eq!(last["tries"], 3);
    assert!(last["elapsed_ms"].as_u64().unwrap() >= 10_000);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(text(&std::fs::read(&file).unwrap()), stdout);
    // The verdict still reaches a person, on stderr.
    assert!(text(&out.stderr).starts_with("✔ succeeded"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usage_errors_exit_2() {
    let out = handoff(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    let out = handoff(&[
        "run",
        "flows/complete-nwc-task.yaml",
        "--set",
        "novalue",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(2));
    // The argument may be a secret typed without its name: it is never echoed.
    assert_eq!(
        text(&out.stderr).lines().take(2).collect::<Vec<_>>(),
        [
            "  × `--set` number 1 has no `=`",
            "  help: write `--set NAME=VALUE`; the argument is not shown, as it may be a secret"
        ]
    );
    assert!(!text(&out.stderr).contains("novalue"));
    let out = handoff(&["check", "no/such/flow.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "  × cannot read `no/such/flow.yaml`: no such file\n1 error, 0 warnings in 1 file(s)\n"
    );
}

#[test]
fn help_shows_an_example() {
    let out = handoff(&["run", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("Examples:"));
}

#[test]
fn inputs_come_from_a_file_and_set_wins_over_it() {
    let out = handoff(&[
        "run",
        "flows/complete-nwc-task.yaml",
        "--mock",
        "tests/files/never-found.mock.yaml",
        "--input",
        "tests/files/inputs.yaml",
        "--set",
        "max_tries=3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert_eq!(
        regex_free_real(stdout.lines().last().unwrap()),
        "✘ failed: no task for instance from-input-file after 3 tries · task_ready → give_up on try 3 · 15 steps · 2m virtual, [real time] real"
    );
}

/// The README's first command, shortened: the simulator in-process, the
/// shipped flow over real HTTP, and the instance read back at the end.
#[test]
fn demo_completes_the_task_and_shows_the_instance_resumed() {
    let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args([
            "--color",
            "never",
            "demo",
            "--task-delay",
            "0s",
            "--poll-interval",
            "10ms",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0]
            .starts_with("handoff demo · a local NWC simulator is listening on http://127.0.0.1:")
    );
    let end = &lines[lines.len() - 2..];
    assert!(
        end[0].contains("resumed: status completed, continued down the `Completed` branch"),
        "{stdout}"
    );
    assert_eq!(
        end[1],
        "  its task was found on poll 1 (0 empty, 10ms apart) and completed once through svc-worker@contoso.com's assignment"
    );
    // The demo's simulator has the legacy task-level route off.
    assert!(stdout.contains("/assignments/"), "{stdout}");
    assert!(stdout.contains("← 204 No Content"), "{stdout}");
}

#[test]
fn check_reports_every_mock_problem_at_once_and_takes_any_mock_name() {
    let out = handoff(&[
        "check",
        "flows/complete-nwc-task.yaml",
        "--mock",
        "tests/files/mocks/three-mistakes.yaml",
        "--mock",
        "flows/complete-nwc-task.mock.yaml",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for problem in [
        "unknown key `bdy` in a reply",
        "`request` is a method and a path",
        "`status` is a number from 100 to 599",
    ] {
        assert!(err.contains(problem), "{problem}: {err}");
    }
    assert!(err.contains("3 errors, 0 warnings in 3 file(s)"), "{err}");
    assert!(
        text(&out.stdout).contains(
            "ok  flows/complete-nwc-task.mock.yaml (mock for flows/complete-nwc-task.yaml"
        ),
        "{}",
        text(&out.stdout)
    );

    // A mock whose flow is not beside it says so, and how to name it.
    let out = handoff(&["check", "tests/files/mocks/orphan.mock.yaml"]);
    // A long message wraps, at a space: undo that to compare.
    let err = text(&out.stderr).replace("\n  │ ", " ");
    assert!(!err.contains("mocks/\n"), "a file name was broken: {err}");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("there is no flow `tests/files/mocks/orphan.yaml` next to it"),
        "{err}"
    );
    assert!(
        err.contains("handoff check FLOW --mock tests/files/mocks/orphan.mock.yaml"),
        "{err}"
    );
    // `--mock` goes with one flow: two real, valid flows are refused for that
    // reason alone, and nothing is checked.
    let out = handoff(&[
        "check",
        "flows/complete-nwc-task.yaml",
        "flows/app-token.yaml",
        "--mock",
        "flows/complete-nwc-task.mock.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: `--mock` checks mock files against one flow, but 2 files were given\n"
    );
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn quiet_prints_only_the_final_line_and_keeps_the_trace_file_whole() {
    let dir = std::env::temp_dir().join(format!("handoff-quiet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("trace.jsonl");
    let out = handoff(&[
        "run",
        "flows/complete-nwc-task.yaml",
        "--mock",
        "flows/complete-nwc-task.mock.yaml",
        "--set",
        "instance_id=7c1e",
        "--quiet",
        "--trace-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("✔ succeeded: reached the end after step `complete`"));
    assert_eq!(text(&out.stderr), "");
    let trace = std::fs::read_to_string(&file).unwrap();
    let events: Vec<serde_json::Value> = trace
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["event"], "flow_started");
    assert_eq!(events.last().unwrap()["event"], "flow_finished");
    // Every event carries the run's id and a wall-clock time.
    let run = events[0]["run"].as_str().unwrap().to_string();
    assert_eq!(run.len(), 36, "{run}");
    assert_eq!(&run[14..15], "7", "a UUIDv7: {run}");
    for e in &events {
        assert_eq!(e["run"], run.as_str());
        let time = e["time"].as_str().unwrap();
        assert!(
            humantime::parse_rfc3339_weak(time).is_ok() && time.ends_with('Z'),
            "{time}"
        );
    }
    let timers: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "timer_started")
        .collect();
    assert_eq!(timers.len(), 2);
    assert!(timers[0]["wake_at"].as_str().unwrap().ends_with('Z'));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn completions_and_the_man_page_are_printed() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = handoff(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        assert!(
            script.contains("handoff") && script.contains("serve"),
            "{shell}: {script}"
        );
    }
    let out = handoff(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let out = handoff(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq") || page.contains(".TH handoff"),
        "{page}"
    );
    assert!(page.contains("graph"), "{page}");
}

/// A placeholder secret that is short, or a plain word, masks ordinary
/// words everywhere (`NWC_TOKEN=replay` turned "strict replay" into
/// "strict ***"): warned of in every mode, dry runs and replays included.
#[test]
fn a_short_or_plain_word_secret_is_warned_of_in_every_mode() {
    let dry = |token: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .args([
                "run",
                "flows/complete-nwc-task.yaml",
                "--mock",
                "flows/complete-nwc-task.mock.yaml",
                "--set",
                "instance_id=7c1e4b52-instance",
            ])
            .env("NWC_TOKEN", token)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(
        dry("replay").contains("secret `token` is shorter than 8 characters"),
        "{}",
        dry("replay")
    );
    let word = dry("Passwords");
    assert!(
        word.contains("secret `token` is a plain word, so that word is masked wherever it appears"),
        "{word}"
    );
    assert_eq!(dry("replay-token-4821"), "");
}

/// `handoff check flows/` checks the folder's flows, mocks and test files,
/// as `test` and `serve` take a folder.
#[test]
fn check_takes_a_folder() {
    let out = handoff(&["check", "flows/"]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    for file in [
        "ok  flows/complete-nwc-task.yaml",
        "ok  flows/complete-nwc-task.mock.yaml",
        "ok  flows/complete-nwc-task.test.yaml",
        "ok  flows/complete-nwc-task.arazzo.yaml",
    ] {
        assert!(said.contains(file), "{file} in {said}");
    }
    let empty = std::env::temp_dir().join(format!("handoff-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = handoff(&["check", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("has no `*.yaml` or `*.yml` files"));
    std::fs::remove_dir_all(&empty).unwrap();
}

/// A reader that goes away (`handoff schema | head -c 10`) ends handoff
/// quietly, as it does `cat`: no "internal error".
#[test]
fn a_closed_pipe_ends_output_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(["schema"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The read end closed before anything is written: the first write fails.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), "");
}
