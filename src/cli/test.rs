//! `handoff test`: runs the cases of `*.test.yaml` files as dry runs and
//! compares what happened with what they expect, like a test runner.
//!
//! Each case runs on a virtual clock against its scripted responses, with
//! only its own `env`. A failure shows expected and actual side by side; a
//! secret's value is never shown, expected or actual. `--snapshot` also
//! compares each case's whole trace with a stored `.trace` file (virtual
//! time only, so it is the same on every machine), and `--update` writes
//! them. `--report junit=FILE` writes JUnit XML for CI.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::cli::common::{Colors, EXIT_FAILED, EXIT_INVALID, EXIT_OK, print_diagnostics};
use crate::cli::report::{self, Style};
use crate::engine::Engine;
use crate::run::cases::{Case, ExpectRequests, TestFile};
use crate::run::clock::VirtualClock;
use crate::run::inputs::{Inputs, initial_state};
use crate::run::mock::{MockTransport, path_matches};
use crate::run::redact::MASK;
use crate::run::trace::{EventKind, TraceEvent};

#[derive(clap::Args, Debug)]
pub struct TestArgs {
    #[command(flatten)]
    pub arazzo: crate::cli::common::ArazzoArgs,
    /// Test files (`*.test.yaml`) or folders to search for them; the current folder by default.
    pub paths: Vec<PathBuf>,
    /// Also compare each case's whole trace with its stored `.trace` file.
    #[arg(long)]
    pub snapshot: bool,
    /// Write (or rewrite) the stored traces instead of comparing them; implies --snapshot.
    #[arg(long)]
    pub update: bool,
    /// Only the cases whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    pub case: Option<String>,
    /// Write a report: `junit=FILE` (JUnit XML, which CI systems read).
    #[arg(long, value_name = "FORMAT=FILE", value_parser = report_arg)]
    pub report: Option<PathBuf>,
}

fn report_arg(text: &str) -> Result<PathBuf, String> {
    match text.split_once('=') {
        Some(("junit", file)) if !file.is_empty() => Ok(PathBuf::from(file)),
        _ => Err("the report is `junit=FILE`".to_string()),
    }
}

/// What one case came to.
struct Ran {
    file: String,
    name: String,
    failures: Vec<String>,
    took: std::time::Duration,
    /// With `--update`: the trace file written, and whether it changed.
    wrote: Option<String>,
}

pub async fn test_command(args: TestArgs, colors: Colors) -> i32 {
    let style = Style { color: colors.out };
    let roots = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let mut files = Vec::new();
    for root in &roots {
        if root.is_dir() {
            find(root, &mut files);
        } else if root.exists() {
            files.push(root.clone());
        } else {
            eprintln!("error: `{}` does not exist", root.display());
            return EXIT_INVALID;
        }
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        eprintln!(
            "error: no test files (`*.test.yaml`) under {}",
            roots
                .iter()
                .map(|r| format!("`{}`", r.display()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return EXIT_INVALID;
    }
    // Every file is checked before any case runs, as a compiler would.
    let mut loaded = Vec::new();
    let mut invalid = false;
    for file in &files {
        match crate::run::cases::load(&file.to_string_lossy()) {
            Ok(t) => loaded.push(t),
            Err(diagnostics) => {
                invalid = true;
                print_diagnostics(&diagnostics, colors);
            }
        }
    }
    if invalid {
        eprintln!("error: a test file is invalid; no case was run");
        return EXIT_INVALID;
    }
    let started = Instant::now();
    let mut ran = Vec::new();
    for file in &loaded {
        println!("{}", style.bold(&file.path));
        for case in &file.cases {
            if args
                .case
                .as_deref()
                .is_some_and(|want| !case.name.contains(want))
            {
                continue;
            }
            let result = run_case(file, case, &args).await;
            if result.failures.is_empty() {
                println!("  {} {}", style.green("✔"), case.name);
                if let Some(wrote) = &result.wrote {
                    println!("      {}", style.dim(wrote));
                }
            } else {
                println!("  {} {}", style.red("✘"), case.name);
                for failure in &result.failures {
                    for line in failure.lines() {
                        println!("      {line}");
                    }
                }
            }
            ran.push(result);
        }
    }
    let failed = ran.iter().filter(|r| !r.failures.is_empty()).count();
    let passed = ran.len() - failed;
    println!();
    let summary = format!(
        "{passed} passed, {failed} failed, in {} file(s), {:.2}s",
        loaded.len(),
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        println!("{} {summary}", style.green("✔"));
    } else {
        println!("{} {summary}", style.red("✘"));
    }
    if let Some(path) = &args.report
        && let Err(e) = write_junit(path, &ran)
    {
        eprintln!("error: cannot write the report `{}`: {e}", path.display());
        return EXIT_INVALID;
    }
    if ran.is_empty() {
        eprintln!("error: no case matched `--case`");
        return EXIT_INVALID;
    }
    if failed == 0 { EXIT_OK } else { EXIT_FAILED }
}

/// Test files under a folder, skipping hidden folders and `target`.
fn find(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "node_modules" {
                find(&path, out);
            }
        } else if crate::run::cases::is_test_file(&path) {
            out.push(path);
        }
    }
}

/// What a run sent, as the trace shows it.
struct Sent {
    method: String,
    url: String,
    body: Option<Value>,
}

async fn run_case(file: &TestFile, case: &Case, args: &TestArgs) -> Ran {
    let started = Instant::now();
    let mut failures = Vec::new();
    let flow = &file.flow;
    let inputs = Inputs {
        set: case.set.clone(),
        ..Inputs::default()
    };
    let env = |var: &str| {
        case.env
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.clone())
    };
    let state = match initial_state(flow, &inputs, &env) {
        Ok(s) => s,
        Err(diagnostics) => {
            let text = crate::language::diagnostic::render_all(&diagnostics, false);
            failures.push(format!("the run could not start:\n{}", text.trim_end()));
            return Ran {
                file: file.path.clone(),
                name: case.name.clone(),
                failures,
                took: started.elapsed(),
                wrote: None,
            };
        }
    };
    let clock = Arc::new(VirtualClock::fixed());
    let transport = MockTransport::new(case.mock.clone(), clock.clone());
    let scripted = crate::run::signals::Scripted::new(case.mock.signals.clone());
    let engine = Engine {
        run_id: "test-run".to_string(),
        flow,
        clock: &*clock,
        transport: &transport,
        dry_run: true,
        durable: None,
        stop: None,
        tokens: None,
        traced: true,
        signals: Some(&scripted),
    };
    let mut trace = String::new();
    let mut sent = Vec::new();
    let plain = Style { color: false };
    let mut observer = |e: &TraceEvent| {
        trace.push_str(&report::pretty(e, plain, None));
        if let EventKind::RequestSent {
            method, url, body, ..
        } = &e.kind
        {
            sent.push(Sent {
                method: method.clone(),
                url: url.clone(),
                body: body.clone(),
            });
        }
    };
    let result = engine.run(state, &mut observer).await;
    let outcome = &result.outcome;
    let expect = &case.expect;
    let status = serde_json::to_value(outcome.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    if let Some(want) = &expect.status
        && *want != status
    {
        failures.push(format!(
            "status: expected {want}, got {status}: {}",
            outcome.reason
        ));
    }
    if let Some(want) = &expect.ended_at
        && outcome.at_step.as_deref() != Some(want.as_str())
    {
        failures.push(format!(
            "ended at: expected `{want}`, got {}",
            outcome
                .at_step
                .as_deref()
                .map_or("no step".to_string(), |s| format!("`{s}`"))
        ));
    }
    if let Some(want) = &expect.reason
        && !outcome.reason.contains(want.as_str())
    {
        failures.push(format!(
            "reason: expected it to contain {want:?}\n  - {want}\n  + {}",
            outcome.reason
        ));
    }
    for (name, want) in &expect.fields {
        let decl = &flow.fields[name];
        let secret = decl.secret || result.state.secret.contains(name);
        let want = decl
            .ty
            .coerce(want.clone())
            .unwrap_or_else(|_| want.clone());
        let got = result.state.get(name).cloned().unwrap_or(Value::Null);
        if secret && !same(&want, &got) {
            failures.push(format!(
                "field `{name}` ends with another value (it is secret: neither is shown, {MASK})"
            ));
        } else if !same(&want, &got) {
            failures.push(format!(
                "field `{name}`:\n  - {}\n  + {}",
                crate::language::fields::quote(&want),
                crate::language::fields::quote(&got)
            ));
        }
    }
    for want in &expect.requests {
        failures.extend(check_requests(want, &sent));
    }
    let mut wrote = None;
    if args.snapshot || args.update {
        let path = trace_path(&file.path, &case.name);
        if args.update {
            let before = std::fs::read_to_string(&path).ok();
            match path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&path, &trace))
            {
                Ok(()) => {
                    let how = match before {
                        None => "new",
                        Some(b) if b == trace => "unchanged",
                        Some(_) => "changed",
                    };
                    wrote = Some(format!("wrote `{}` ({how})", path.display()));
                }
                Err(e) => failures.push(format!("cannot write `{}`: {e}", path.display())),
            }
        } else {
            match std::fs::read_to_string(&path) {
                Ok(stored) if stored == trace => {}
                Ok(stored) => failures.push(format!(
                    "the trace differs from `{}` (`--update` takes the new one):\n{}",
                    path.display(),
                    line_diff(&stored, &trace)
                )),
                Err(_) => failures.push(format!(
                    "no stored trace `{}`: run with `--update` to write it",
                    path.display()
                )),
            }
        }
    }
    Ran {
        file: file.path.clone(),
        name: case.name.clone(),
        failures,
        took: started.elapsed(),
        wrote,
    }
}

/// Where a case's trace is stored: `FLOW.traces/<case>.trace` beside the test file.
pub fn trace_path(test_file: &str, case: &str) -> PathBuf {
    let base = test_file
        .strip_suffix(".test.yaml")
        .or_else(|| test_file.strip_suffix(".test.yml"))
        .unwrap_or(test_file);
    let slug: String = case
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    PathBuf::from(format!("{base}.traces")).join(format!("{slug}.trace"))
}

/// Equal as values: numbers by value (`3` is `3.0`), the rest as JSON.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Where `got` fails to hold `want`: `None` when every key of `want` is in
/// `got` with the same value, recursively.
fn holds(want: &Value, got: &Value, at: &str) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w.iter().find_map(|(k, v)| match g.get(k) {
            Some(x) => holds(v, x, &format!("{at}.{k}")),
            None => Some(format!("`{at}.{k}` is missing")),
        }),
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (v, x))| holds(v, x, &format!("{at}[{i}]"))),
        _ if same(want, got) => None,
        _ => Some(format!(
            "at `{at}`:\n  - {}\n  + {}",
            crate::language::fields::quote(want),
            crate::language::fields::quote(got)
        )),
    }
}

fn check_requests(want: &ExpectRequests, sent: &[Sent]) -> Vec<String> {
    let label = format!("{} {}", want.method, want.path);
    let matching: Vec<&Sent> = sent
        .iter()
        .filter(|s| {
            s.method.eq_ignore_ascii_case(&want.method) && target_matches(&want.path, &s.url)
        })
        .collect();
    let mut out = Vec::new();
    if let Some(count) = want.count
        && matching.len() as u64 != count
    {
        let seen: Vec<String> = sent
            .iter()
            .map(|s| format!("{} {}", s.method, target(&s.url)))
            .collect();
        out.push(format!(
            "requests `{label}`: expected {count}, sent {}\n  sent, in order: {}",
            matching.len(),
            if seen.is_empty() {
                "nothing".to_string()
            } else {
                seen.join(", ")
            }
        ));
    }
    if let Some(body) = &want.body {
        if matching.is_empty() && want.count != Some(0) {
            out.push(format!(
                "requests `{label}`: none was sent, so no body to check"
            ));
        }
        for (i, s) in matching.iter().enumerate() {
            let got = s.body.clone().unwrap_or(Value::Null);
            if let Some(why) = holds(body, &got, "$") {
                out.push(format!("body of `{label}` #{}: {why}", i + 1));
            }
        }
    }
    out
}

/// Path and query of a shown URL.
fn target(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        Err(_) => url.to_string(),
    }
}

fn target_matches(pattern: &str, url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    match pattern.split_once('?') {
        // The query's pairs in any order of names: `?a=1&b=2` is `?b=2&a=1`.
        Some((path, query)) => {
            path_matches(path, u.path())
                && crate::run::mock::same_query(query, u.query().unwrap_or(""), |p, v| p == v)
        }
        None => path_matches(pattern, u.path()),
    }
}

/// A unified diff of two traces, stored first.
fn line_diff(stored: &str, now: &str) -> String {
    crate::cli::unified::unified(stored, now, 2, ("stored", "this run"))
        .trim_end()
        .to_string()
}

fn write_junit(path: &Path, ran: &[Ran]) -> std::io::Result<()> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("handoff test");
    let mut files: Vec<&str> = ran.iter().map(|r| r.file.as_str()).collect();
    files.dedup();
    for file in files {
        let mut suite = TestSuite::new(file);
        for r in ran.iter().filter(|r| r.file == file) {
            let status = if r.failures.is_empty() {
                TestCaseStatus::success()
            } else {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(r.failures[0].lines().next().unwrap_or("failed"));
                s.set_description(r.failures.join("\n"));
                s
            };
            let mut case = TestCase::new(r.name.as_str(), status);
            case.set_classname(file);
            case.set_time(r.took);
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    let text = report
        .to_string()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    std::fs::write(path, text)
}
