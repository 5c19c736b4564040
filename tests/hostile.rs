//! Hostile servers and inputs against the real binary, on loopback: redirects
//! of every kind to the same and to another origin, oversized and endless
//! pages, thousands of tasks, empty inputs that would widen a query, ids that
//! would change a path, and answers that try to paint the terminal.
//!
//! Every run is bounded: each child's peak memory (`getrusage`, as the kernel
//! counted it) stays under 500 MB and its CPU time under 10 s. Runs are one at
//! a time, so the CPU each one used is the difference around it.

#[path = "it/common/mod.rs"]
mod common;

use std::process::Output;
use std::sync::Mutex;
use std::time::Duration;

use common::{Answer, Loopback, json_answer, text};
use nix::sys::resource::{UsageWho, getrusage};
use serde_json::{Value, json};

const TOKEN: &str = "hostile-token-4b7c+1e/9a=";
const API_KEY: &str = "hostile-key-88d1-2f0e";
const MAX_RSS_MB: i64 = 500;
const MAX_CPU: Duration = Duration::from_secs(10);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn cpu_of_children() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let t = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
    };
    t(usage.user_time()) + t(usage.system_time())
}

/// Runs the binary, and checks the run stayed within memory and CPU bounds.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_capped(None, args, env)
}

/// With `data_mb`, the child's data segment is capped (`ulimit -d`): a run
/// whose memory grew past it fails to allocate, whatever else ran before.
fn run_capped(data_mb: Option<u64>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = cpu_of_children();
    let out = match data_mb {
        None => common::handoff(args, env),
        Some(mb) => std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -d {} && exec \"$0\" \"$@\"", mb * 1024))
            .arg(env!("CARGO_BIN_EXE_handoff"))
            .args(["--color", "never"])
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap(),
    };
    let cpu = cpu_of_children() - before;
    // For children, ru_maxrss is the largest any child reached, in KB.
    let peak_mb = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss() / 1024;
    eprintln!("{args:?}: {cpu:?} CPU, peak RSS so far {peak_mb} MB");
    assert!(peak_mb < MAX_RSS_MB, "{args:?} reached {peak_mb} MB");
    assert!(cpu < MAX_CPU, "{args:?} took {cpu:?} of CPU");
    for stream in [&out.stdout, &out.stderr] {
        let s = text(stream);
        assert!(
            !s.contains(TOKEN) && !s.contains(API_KEY),
            "a credential leaked"
        );
        assert!(
            !s.contains("panicked") && !s.contains("internal error"),
            "{s}"
        );
    }
    out
}

fn all_output(out: &Output) -> String {
    text(&out.stdout) + &text(&out.stderr)
}

fn tasks(n: usize, pad: usize) -> Value {
    let tasks: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "id": format!("task-{i}"),
                "assignee": format!("user{i}@contoso.com"),
                "status": "Active",
                "description": "x".repeat(pad),
            })
        })
        .collect();
    json!({ "tasks": tasks })
}

fn env(base: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NWC_BASE_URL", base.to_string()),
        ("NWC_TOKEN", TOKEN.to_string()),
        ("API_KEY", API_KEY.to_string()),
    ]
}

/// Runs a flow against a loopback server, with the token, the key and its base URL.
fn against(args: &[&str], api: &Loopback) -> Output {
    let vars = env(&api.base);
    run(args, &refs(&vars))
}

fn refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn redirect(status: u16, to: &str) -> Answer {
    (status, vec![("Location".into(), to.into())], Vec::new())
}

#[test]
fn redirects_are_never_followed_to_any_origin() {
    let elsewhere = Loopback::start(|_, _| json_answer(204, &json!(null)));
    for status in [301, 302, 303, 307, 308] {
        for other_origin in [true, false] {
            for on_patch in [false, true] {
                let target = if other_origin {
                    format!("{}/workflows/v1/tasks/t-1", elsewhere.base)
                } else {
                    "/moved".to_string()
                };
                let to = target.clone();
                let api = Loopback::start(move |n, _| {
                    if on_patch && n == 0 {
                        json_answer(200, &json!({ "tasks": [{ "id": "t-1" }] }))
                    } else {
                        redirect(status, &to)
                    }
                });
                let out = against(
                    &[
                        "run",
                        "tests/files/hostile/redirect.yaml",
                        "--set",
                        "instance_id=i-1",
                    ],
                    &api,
                );
                let said = all_output(&out);
                assert_eq!(out.status.code(), Some(1), "{status} {target}: {said}");
                assert!(
                    said.contains(&format!("a redirect to {target}")),
                    "{status}: {said}"
                );
                assert!(said.contains("never follows redirects"), "{said}");
                // Nothing was sent again, here or anywhere else.
                assert_eq!(api.seen().len(), if on_patch { 2 } else { 1 });
            }
        }
    }
    assert!(
        elsewhere.seen().is_empty(),
        "a request reached the other origin"
    );
}

#[test]
fn an_oversized_page_fails_within_the_budget() {
    let big = serde_json::to_vec(&tasks(12_000, 900)).unwrap();
    assert!(big.len() > 10 * 1024 * 1024);
    let api = Loopback::start(move |_, _| (200, vec![], big.clone()));
    let out = against(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--set",
            "instance_id=i-1",
        ],
        &api,
    );
    let said = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("`max_bytes` allows 10485760 bytes"), "{said}");
    assert_eq!(
        api.seen().len(),
        1,
        "no PATCH, no retry of a too-large page"
    );
}

#[test]
fn sixteen_large_pages_stay_within_memory() {
    let page = |n: usize, base: &str| {
        let mut body = tasks(700, 900);
        if n < 15 {
            body["nextLink"] = json!(format!("{base}/workflows/v2/tasks?skip={}", n + 1));
        }
        body
    };
    let base = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let b = base.clone();
    let api = Loopback::start(move |n, _| json_answer(200, &page(n, b.get().unwrap())));
    base.set(api.base.clone()).unwrap();
    let out = against(
        &[
            "run",
            "tests/files/hostile/pages.yaml",
            "--set",
            "instance_id=i-1",
            "--trace",
            "jsonl",
        ],
        &api,
    );
    let said = all_output(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert_eq!(api.seen().len(), 16);
    assert!(
        said.contains("\"field\":\"count\",\"value\":11200"),
        "{said}"
    );
    // The trace shows a list this size as an excerpt, not whole.
    let longest = text(&out.stdout).lines().map(str::len).max().unwrap();
    assert!(longest < 70 * 1024, "a trace line of {longest} bytes");
}

#[test]
fn a_long_poll_over_a_large_list_stays_flat() {
    // 20 polls of a 3 MB list: before the trace streamed, each poll kept
    // about 16 MB, so the run would pass the cap well before the end.
    let list = serde_json::to_vec(&tasks(800, 4000)).unwrap();
    assert!(list.len() > 3 * 1024 * 1024);
    let api = Loopback::start(move |_, _| (200, vec![], list.clone()));
    let vars = env(&api.base);
    let out = run_capped(
        Some(150),
        &[
            "run",
            "tests/files/hostile/poll.yaml",
            "--set",
            "instance_id=i-1",
            "--set",
            "rounds=20",
            "--trace",
            "jsonl",
        ],
        &refs(&vars),
    );
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    assert_eq!(api.seen().len(), 20);
}

/// Finds the last of 5,000 tasks within the CPU cap every hostile run gets.
/// That the cost grows linearly is measured, not asserted here: see
/// scripts/bench-scaling.py and docs/performance.md.
#[test]
fn where_finds_the_last_of_five_thousand_tasks_within_the_cpu_cap() {
    let list = tasks(5_000, 20);
    let api = Loopback::start(move |_, _| json_answer(200, &list));
    let out = against(
        &[
            "run",
            "tests/files/hostile/where.yaml",
            "--set",
            "instance_id=i-1",
            "--set",
            "wanted=user4999@contoso.com",
        ],
        &api,
    );
    let said = all_output(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("task_id = \"task-4999\""), "{said}");
}

/// Sixteen thousand renders that read a secret, each masked, within the
/// CPU cap. That each costs the same (the total is linear in the rounds) is
/// measured by scripts/bench-scaling.py, not asserted here.
#[test]
fn sixteen_thousand_renders_that_read_a_secret_are_masked_within_the_cpu_cap() {
    let out = run(
        &[
            "run",
            "tests/files/hostile/log-secret-length.yaml",
            "--dry-run",
        ],
        &[("NWC_TOKEN", TOKEN)],
    );
    let said = all_output(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert_eq!(said.matches("log: ***").count(), 16_000);
}

#[test]
fn templates_that_would_blow_up_are_refused() {
    let out = run(
        &["run", "tests/files/hostile/tojson-indent.yaml", "--dry-run"],
        &[],
    );
    let said = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("`tojson` indents by at most 16 spaces"),
        "{said}"
    );

    let dir = std::env::temp_dir().join(format!("handoff-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, expr, expect) in [
        ("sum", " + 1".repeat(20_000), "at most 32 KB"),
        ("concat", " ~ 'a'".repeat(4_000), "chains more than 256"),
        ("and", " and true".repeat(3_000), "chains more than 256"),
        ("filters", " | string".repeat(3_000), "chains more than 256"),
    ] {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "flow: long\nfields:\n  x: {{ type: json }}\nsteps:\n  - id: s\n    set: {{ x: \"{{{{ 1{expr} }}}}\" }}\n"
            ),
        )
        .unwrap();
        for command in ["check", "run"] {
            let out = run(&[command, path.to_str().unwrap()], &[]);
            let said = all_output(&out);
            assert_eq!(out.status.code(), Some(2), "{name}: {said}");
            assert!(said.contains(expect), "{name}: {said}");
            assert!(
                said.contains(&format!("{name}.yaml:6:")),
                "positioned: {said}"
            );
        }
    }
}

#[test]
fn an_empty_input_never_widens_the_task_query() {
    let api =
        Loopback::start(|_, _| json_answer(200, &json!({ "tasks": [{ "id": "someone-elses" }] })));
    let vars = env(&api.base);
    let dir = std::env::temp_dir().join(format!("handoff-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("inputs.json");
    std::fs::write(&input, r#"{"instance_id": "  "}"#).unwrap();
    for args in [
        vec!["--set", "instance_id="],
        vec!["--set", "instance_id= "],
        vec!["--input", input.to_str().unwrap()],
    ] {
        let mut all = vec!["run", "flows/complete-nwc-task.yaml"];
        all.extend(args);
        let out = run(&all, &refs(&vars));
        let said = all_output(&out);
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert!(said.contains("`instance_id` is empty"), "{said}");
    }
    // An empty secret is refused too.
    let mut empty_token = vars.clone();
    empty_token[1].1 = String::new();
    let out = run(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--set",
            "instance_id=i-1",
        ],
        &refs(&empty_token),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(all_output(&out).contains("`token` is empty (from $NWC_TOKEN)"));
    // A filter that may be empty is still refused when it renders empty.
    let out = run(
        &["run", "tests/files/hostile/optional-filter.yaml"],
        &refs(&vars),
    );
    let said = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("filter `workflow_instance_id` is empty, so the query would list every task"),
        "{said}"
    );
    assert!(
        api.seen().is_empty(),
        "a request was sent: {:?}",
        api.seen()
    );
}

#[test]
fn ids_cannot_change_the_patch_path() {
    for id in [".", "..", "", "  ", "a\u{1}b", "a\nb"] {
        let task = json!({ "tasks": [{ "id": id }] });
        let api = Loopback::start(move |_, _| json_answer(200, &task));
        let out = against(
            &[
                "run",
                "tests/files/hostile/redirect.yaml",
                "--set",
                "instance_id=i-1",
            ],
            &api,
        );
        let said = all_output(&out);
        assert_eq!(out.status.code(), Some(1), "{id:?}: {said}");
        assert!(said.contains("`task_id`"), "{said}");
        assert_eq!(api.seen().len(), 1, "{id:?}: only the list was sent");
    }
    // The task's id, and an assignment id as hostile, are one segment each.
    for (id, encoded) in [
        ("%2e%2e", "%252e%252e"),
        ("../../v2/x", "..%2F..%2Fv2%2Fx"),
        ("a/b?c#d", "a%2Fb%3Fc%23d"),
    ] {
        let list = json!({ "tasks": [{ "id": id }] });
        let task = json!({ "id": id, "status": "active", "taskAssignments": [{ "id": id, "status": "active" }] });
        let api = Loopback::start(move |n, _| match n {
            0 => json_answer(200, &list),
            1 => json_answer(200, &task),
            _ => (204, vec![], Vec::new()),
        });
        let out = against(
            &[
                "run",
                "tests/files/hostile/redirect.yaml",
                "--set",
                "instance_id=i-1",
            ],
            &api,
        );
        assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
        let seen = api.seen();
        assert_eq!(seen[1].target, format!("/workflows/v2/tasks/{encoded}"));
        assert_eq!(
            seen[2].target,
            format!("/workflows/v2/tasks/{encoded}/assignments/{encoded}")
        );
    }
}

#[test]
fn answers_cannot_paint_the_terminal() {
    let forged = "\r\u{1b}[2K\u{1b}[32m✔ succeeded: all done\u{1b}[0m\u{202e}";
    let api = Loopback::start(move |_, _| {
        (
            500,
            vec![("X-Note".into(), "fine".into())],
            forged.as_bytes().to_vec(),
        )
    });
    let vars = env(&api.base);
    let dir = std::env::temp_dir().join(format!("handoff-paint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for trace in ["pretty", "jsonl"] {
        // The trace file is written apart from stdout (in place, by a thread
        // of its own): it is checked the same.
        let file = dir.join(format!(
            "trace.{}",
            if trace == "jsonl" { "jsonl" } else { "txt" }
        ));
        let out = run(
            &[
                "run",
                "tests/files/hostile/redirect.yaml",
                "--set",
                "instance_id=i-1",
                "--trace",
                trace,
                "--trace-file",
                file.to_str().unwrap(),
            ],
            &refs(&vars),
        );
        assert_eq!(out.status.code(), Some(1));
        let said = all_output(&out);
        assert!(!said.contains(['\r', '\u{1b}', '\u{202e}']), "{said:?}");
        assert!(said.contains("✘ failed"), "{said}");
        let written = std::fs::read_to_string(&file).unwrap();
        assert!(
            !written.contains(['\r', '\u{1b}', '\u{202e}']),
            "{written:?}"
        );
        assert!(written.contains("failed"), "{written}");
        if trace == "jsonl" {
            // Escaped, not dropped: the line still says what came.
            assert!(written.contains("\\u202e"), "{written}");
            for line in written.lines() {
                serde_json::from_str::<serde_json::Value>(line).unwrap();
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_short_secret_is_warned_about_and_spares_handoff_wording() {
    // The server echoes the short token back in its 401.
    let api = Loopback::start(|_, _| {
        json_answer(
            401,
            &json!({ "title": "Unauthorized", "detail": "token wrong rejected" }),
        )
    });
    let out = common::handoff(
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--set",
            "instance_id=i-1",
        ],
        &[("NWC_BASE_URL", api.base.as_str()), ("NWC_TOKEN", "wrong")],
    );
    let said = all_output(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("secret `token` is shorter than 8 characters"),
        "{said}"
    );
    // Masked where it is data, the server's words…
    assert!(said.contains("Unauthorized: token *** rejected"), "{said}");
    // …but handoff's own hint keeps its words.
    assert!(
        said.contains("401 means the token is missing, wrong or expired"),
        "{said}"
    );
}

#[test]
fn a_proxy_from_the_environment_is_named_in_the_first_event() {
    let api = Loopback::start(|_, _| json_answer(200, &json!({ "tasks": [] })));
    let vars = env(&api.base);
    let mut vars = refs(&vars);
    // An https proxy does not route this http:// run, but it is what the run would use.
    vars.push(("HTTPS_PROXY", "http://user:pw-5ecret@127.0.0.1:9/"));
    let out = run(
        &[
            "run",
            "tests/files/hostile/optional-filter.yaml",
            "--set",
            "instance_id=i-1",
            "--trace",
            "jsonl",
        ],
        &vars,
    );
    let first = text(&out.stdout).lines().next().unwrap().to_string();
    assert!(
        first.contains(
            r#""route":"requests go through a proxy: $HTTPS_PROXY=http://***@127.0.0.1:9/"#
        ),
        "{first}"
    );
    assert!(!all_output(&out).contains("pw-5ecret"));
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
}
