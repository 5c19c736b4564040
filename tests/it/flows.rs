//! One snapshot per case in `tests/flows/`: each case describes itself.
//!
//! A case file is a header (what the case is, its inputs, environment and
//! scripted responses), then `---`, then the flow. A header with `flow_file:`
//! (with `mock_file:`) runs a shipped example instead. Names say what must happen: `invalid_*`
//! cases must stop at static errors, `fail_*` runs must fail, all others must
//! succeed. Every case also proves that no secret reaches the output.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use handoff::cli::report::{self, Style};
use handoff::engine::Engine;
use handoff::language::analyze::analyze;
use handoff::language::diagnostic::render_all;
use handoff::language::raw::{self, Node};
use handoff::language::source::Source;
use handoff::run::inputs::{Inputs, initial_state};
use handoff::run::mock::{Mock, MockTransport};
use handoff::run::trace::RunStatus;

struct Case {
    header: Node,
    header_source: Arc<Source>,
    flow_source: Arc<Source>,
}

fn load_case(path: &std::path::Path) -> Case {
    let text = std::fs::read_to_string(path).unwrap();
    let name = format!(
        "tests/flows/{}",
        path.file_name().unwrap().to_string_lossy()
    );
    let (header_text, flow_text) = match text.find("\n---\n") {
        Some(i) => {
            // Blank out the header so the flow's line numbers match the file's.
            let blank = "\n".repeat(text[..i + 5].matches('\n').count());
            (
                text[..i + 1].to_string(),
                format!("{blank}{}", &text[i + 5..]),
            )
        }
        None => (text.clone(), String::new()),
    };
    let header_source = Source::new(name.clone(), header_text);
    let header = raw::parse(&header_source).unwrap();
    let flow_source = match get(&header, "flow_file").and_then(Node::as_str) {
        Some(file) => Source::new(file, std::fs::read_to_string(file).unwrap()),
        None => Source::new(name, flow_text),
    };
    Case {
        header,
        header_source,
        flow_source,
    }
}

fn get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    node.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn pairs(node: Option<&Node>) -> Vec<(String, String)> {
    node.and_then(Node::as_map)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.scalar_text().unwrap(), v.scalar_text().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs a case and returns what a user would see, plus whether it succeeded.
fn run_case(case: &Case) -> (String, Option<RunStatus>, Vec<String>) {
    let checked = match analyze(&case.flow_source) {
        Ok(c) => c,
        Err(diags) => return (render_all(&diags, false), None, Vec::new()),
    };
    let mut out = render_all(&checked.warnings, false);
    let flow = checked.flow;
    let inputs = Inputs {
        set: pairs(get(&case.header, "set")),
        ..Inputs::default()
    };
    let env = pairs(get(&case.header, "env"));
    let lookup = |var: &str| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone());
    let state = match initial_state(&flow, &inputs, &lookup) {
        Ok(s) => s,
        Err(diags) => return (out + &render_all(&diags, false), None, Vec::new()),
    };
    let mut secrets = secret_values(&state);
    let mock_file = get(&case.header, "mock_file").and_then(Node::as_str);
    let mock = match (get(&case.header, "responses"), mock_file) {
        (Some(node), _) => Mock::from_node(&case.header_source, node, &flow),
        (None, Some(file)) => Mock::load(
            &Source::new(file, std::fs::read_to_string(file).unwrap()),
            &flow,
        ),
        (None, None) => Ok(Mock::default()),
    }
    .unwrap_or_else(|d| panic!("{}", render_all(&d, false)));
    let clock = Arc::new(handoff::run::clock::VirtualClock::fixed());
    let transport = MockTransport::new(mock, clock.clone());
    let engine = Engine {
        run_id: "test-run".to_string(),
        flow: &flow,
        clock: &*clock,
        transport: &transport,
        dry_run: true,
        durable: None,
        stop: None,
        tokens: None,
        traced: true,
        signals: None,
    };
    let lines = Arc::new(Mutex::new(String::new()));
    let jsonl = Arc::new(Mutex::new((0usize, String::new())));
    let (sink, json_sink) = (lines.clone(), jsonl.clone());
    let mut observer = move |e: &handoff::run::trace::TraceEvent| {
        sink.lock()
            .unwrap()
            .push_str(&report::pretty(e, Style { color: false }, None));
        let mut j = json_sink.lock().unwrap();
        j.0 += 1;
        j.1.push_str(&(report::jsonl(e) + "\n"));
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(engine.run(state, &mut observer));
    out.push_str(&lines.lock().unwrap());
    // Values that became secret during the run (an app token) count too.
    secrets.extend(secret_values(&result.state));
    // The JSON form of the trace must be as clean as the text.
    let (count, jsonl) = std::mem::take(&mut *jsonl.lock().unwrap());
    out.push_str(&format!("\n# jsonl events: {count}\n"));
    assert_no_secret(&jsonl, &secrets);
    (out, Some(result.outcome.status), secrets)
}

/// The text leaves of every secret field, long enough to be meaningful.
fn secret_values(state: &handoff::run::state::RunState) -> Vec<String> {
    fn leaves(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) if s.len() >= 4 => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| leaves(v, out)),
            serde_json::Value::Object(m) => m.values().for_each(|v| leaves(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for field in &state.secret {
        if let Some(v) = state.fields.get(field) {
            leaves(v, &mut out);
        }
    }
    out
}

fn assert_no_secret(text: &str, secrets: &[String]) {
    let b64 = base64::engine::general_purpose::STANDARD;
    for (i, s) in secrets.iter().enumerate() {
        for (kind, form) in [
            ("raw", s.clone()),
            ("base64", b64.encode(s)),
            ("url-encoded", s.replace(' ', "%20")),
        ] {
            // Never print the secret itself, even when the test fails.
            assert!(!text.contains(&form), "secret #{i} leaked ({kind})");
        }
    }
}

#[test]
fn flows() {
    insta::glob!("../flows", "*.yaml", |path| {
        let case = load_case(path);
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        eprintln!("case {stem}");
        let (output, status, secrets) = run_case(&case);
        assert_no_secret(&output, &secrets);
        // Every credential in these cases starts so, app tokens handed out by
        // a mock included, which no field holds.
        assert!(
            !output.contains("canary-7f3a9c1d"),
            "{stem}: a canary credential leaked"
        );
        if stem.starts_with("invalid_") {
            assert_eq!(status, None, "{stem} should stop before running:\n{output}");
        } else if stem.starts_with("fail_") {
            assert_eq!(
                status,
                Some(RunStatus::Failed),
                "{stem} should fail:\n{output}"
            );
        } else {
            assert_eq!(
                status,
                Some(RunStatus::Succeeded),
                "{stem} should succeed:\n{output}"
            );
        }
        let description = get(&case.header, "description")
            .and_then(Node::as_str)
            .unwrap_or("")
            .to_string();
        insta::with_settings!({ description => description, omit_expression => true }, {
            insta::assert_snapshot!(output);
        });
    });
}

#[test]
fn a_long_timer_says_it_is_still_waiting_when_no_one_watches_a_terminal() {
    let source = Source::new(
        "heartbeat.yaml",
        "flow: heartbeat\nsteps:\n  - id: wait\n    timer: { duration: 30m }\n",
    );
    let flow = analyze(&source).ok().unwrap().flow;
    let state = initial_state(&flow, &Inputs::default(), &|_| None).unwrap();
    // The real clock beats every minute when stdout is not a terminal; the
    // virtual one can be told to, so the test is instant and exact.
    let clock = handoff::run::clock::VirtualClock::fixed()
        .with_heartbeat(std::time::Duration::from_secs(60));
    let transport = MockTransport::new(
        Mock::default(),
        Arc::new(handoff::run::clock::VirtualClock::fixed()),
    );
    let engine = Engine {
        run_id: "test-run".to_string(),
        flow: &flow,
        clock: &clock,
        transport: &transport,
        dry_run: true,
        durable: None,
        stop: None,
        tokens: None,
        traced: true,
        signals: None,
    };
    let mut beats = Vec::new();
    let mut observer = |e: &handoff::run::trace::TraceEvent| {
        if let handoff::run::trace::EventKind::TimerWaiting { left_ms } = e.kind {
            beats.push((e.at_ms, left_ms));
        }
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(engine.run(state, &mut observer));
    assert_eq!(result.outcome.status, RunStatus::Succeeded);
    assert_eq!(beats.len(), 29);
    assert_eq!(beats[0], (60_000, 29 * 60_000));
    assert_eq!(beats[28], (29 * 60_000, 60_000));
}
