//! Test files, `FLOW.test.yaml`: named cases that dry-run a flow against
//! scripted responses and say what must come of it. `handoff test` runs them.
//!
//! ```yaml
//! flow: complete-nwc-task.yaml          # optional: FLOW.test.yaml tests FLOW.yaml
//! cases:
//!   - name: the task appears on the third poll
//!     set: { instance_id: 7c1e4b52-instance }
//!     env: { NWC_TOKEN: dry-run-token }
//!     mock: complete-nwc-task.mock.yaml  # or `responses:`, in the mock format
//!     expect:
//!       status: succeeded
//!       ended_at: complete
//!       fields: { tries: 3, http_result: 204 }
//!       requests:
//!         - { request: GET /workflows/v2/tasks, count: 3 }
//!         - { request: "PATCH /workflows/v2/tasks/*/assignments/*", count: 1, body: { outcome: Completed } }
//! ```
//!
//! A case sees only its own `env`, never the process's: a test passes or
//! fails the same on every machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::language::analyze::{analyze, read_source};
use crate::language::analyzer::list;
use crate::language::diagnostic::{Diagnostic, did_you_mean};
use crate::language::flow::Flow;
use crate::language::raw::Node;
use crate::language::source::{Source, Span};
use crate::run::mock::Mock;

pub struct TestFile {
    pub path: String,
    pub flow_path: String,
    pub flow: Flow,
    pub cases: Vec<Case>,
}

pub struct Case {
    pub name: String,
    pub set: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    pub mock: Mock,
    pub expect: Expect,
}

#[derive(Default)]
pub struct Expect {
    /// `succeeded`, `failed`, `interrupted` or `canceled`.
    pub status: Option<String>,
    pub ended_at: Option<String>,
    /// Text the ending's reason contains.
    pub reason: Option<String>,
    /// Field values at the end, in the order written.
    pub fields: Vec<(String, Value)>,
    pub requests: Vec<ExpectRequests>,
}

/// The requests that match a method and a path pattern: how many, and what
/// each one's body holds.
pub struct ExpectRequests {
    pub method: String,
    /// `*` stands for any text within one segment; with a `?`, the query is
    /// compared too.
    pub path: String,
    pub count: Option<u64>,
    /// A subset every matching body must hold.
    pub body: Option<Value>,
}

pub const FILE_KEYS: [&str; 3] = ["flow", "description", "cases"];
pub const CASE_KEYS: [&str; 8] = [
    "name",
    "description",
    "set",
    "env",
    "mock",
    "responses",
    "signals",
    "expect",
];
pub const EXPECT_KEYS: [&str; 5] = ["status", "ended_at", "reason", "fields", "requests"];
pub const REQUEST_KEYS: [&str; 3] = ["request", "count", "body"];
pub const STATUSES: [&str; 4] = ["succeeded", "failed", "interrupted", "canceled"];

/// The flow a test file tests when it does not say: `X.test.yaml` → `X.yaml`.
pub fn default_flow(path: &str) -> Option<String> {
    path.strip_suffix(".test.yaml")
        .map(|s| format!("{s}.yaml"))
        .or_else(|| path.strip_suffix(".test.yml").map(|s| format!("{s}.yml")))
}

pub fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".test.yaml") || name.ends_with(".test.yml")
}

/// Loads a test file and its flow, with every problem in either.
pub fn load(path: &str) -> Result<TestFile, Vec<Diagnostic>> {
    let source = read_source(path).map_err(|d| vec![d])?;
    load_text(path, &source)
}

/// [`load`], of a test file's text as given (an editor's): its flow is
/// read from disk, relative to `path`.
pub fn load_text(path: &str, source: &Arc<Source>) -> Result<TestFile, Vec<Diagnostic>> {
    let source = source.clone();
    let root = crate::language::raw::parse(&source).map_err(|d| vec![d])?;
    let mut problems = Vec::new();
    let Some(map) = root.as_map() else {
        return Err(vec![
            Diagnostic::error("a test file is a mapping with `cases`").at(&source, root.span),
        ]);
    };
    unknown_keys(&source, map, &FILE_KEYS, "a test file", &mut problems);
    let get = |key: &str| get(map, key);
    let flow_path = match get("flow") {
        Some(n) => match n.as_str() {
            Some(f) => relative_to(path, f),
            None => {
                problems
                    .push(Diagnostic::error("`flow` is the flow file's path").at(&source, n.span));
                return Err(problems);
            }
        },
        None => match default_flow(path) {
            Some(f) => f,
            None => {
                return Err(vec![
                    Diagnostic::error(format!(
                        "`{path}` names no flow, and is not called FLOW.test.yaml"
                    ))
                    .help("add `flow: FLOW.yaml`, or name the file after its flow"),
                ]);
            }
        },
    };
    let flow_source = read_source(&flow_path).map_err(|d| {
        vec![d.help(format!(
            "`{path}` tests `{flow_path}`; say another with `flow:`"
        ))]
    })?;
    let flow = match analyze(&flow_source) {
        Ok(checked) => checked.flow,
        Err(mut diags) => {
            diags.push(Diagnostic::error(format!(
                "`{path}` tests `{flow_path}`, which does not load"
            )));
            return Err(diags);
        }
    };
    let Some(items) = get("cases")
        .and_then(Node::as_seq)
        .filter(|s| !s.is_empty())
    else {
        problems.push(
            Diagnostic::error("a test file needs `cases`, a non-empty list").at(&source, root.span),
        );
        return Err(problems);
    };
    let mut cases = Vec::new();
    let mut names: Vec<(String, Span)> = Vec::new();
    for item in items {
        if let Some(case) = parse_case(&source, path, item, &flow, &mut problems) {
            if names.iter().any(|(n, _)| *n == case.name) {
                problems.push(
                    Diagnostic::error(format!("two cases are named `{}`", case.name))
                        .at(&source, item.span),
                );
            }
            names.push((case.name.clone(), item.span));
            cases.push(case);
        }
    }
    if problems.is_empty() {
        Ok(TestFile {
            path: path.to_string(),
            flow_path,
            flow,
            cases,
        })
    } else {
        Err(problems)
    }
}

fn get<'n>(map: &'n [(Node, Node)], key: &str) -> Option<&'n Node> {
    map.iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn unknown_keys(
    source: &Arc<Source>,
    map: &[(Node, Node)],
    keys: &[&str],
    what: &str,
    problems: &mut Vec<Diagnostic>,
) {
    for (k, _) in map {
        let name = k.as_str().unwrap_or("");
        if !keys.contains(&name) {
            problems.push(
                Diagnostic::error(format!("unknown key `{name}` in {what}"))
                    .at(source, k.span)
                    .help(
                        did_you_mean(name, keys.iter().copied())
                            .unwrap_or_else(|| format!("{what} has {}", list(keys))),
                    ),
            );
        }
    }
}

/// A path in a test file, relative to the file's folder.
fn relative_to(file: &str, path: &str) -> String {
    let p = Path::new(path);
    if p.is_absolute() {
        return path.to_string();
    }
    let dir = Path::new(file).parent().unwrap_or(Path::new(""));
    let joined: PathBuf = dir.join(p);
    joined.to_string_lossy().into_owned()
}

fn text_pairs(
    source: &Arc<Source>,
    node: Option<&Node>,
    what: &str,
    problems: &mut Vec<Diagnostic>,
) -> Vec<(String, String)> {
    let Some(node) = node else {
        return Vec::new();
    };
    let Some(map) = node.as_map() else {
        problems.push(
            Diagnostic::error(format!("`{what}` maps names to values")).at(source, node.span),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in map {
        match (k.scalar_text(), v.scalar_text()) {
            (Some(k), Some(v)) => out.push((k, v)),
            _ => problems.push(
                Diagnostic::error(format!("`{what}` values are text, numbers or booleans"))
                    .at(source, v.span),
            ),
        }
    }
    out
}

fn parse_case(
    source: &Arc<Source>,
    path: &str,
    node: &Node,
    flow: &Flow,
    problems: &mut Vec<Diagnostic>,
) -> Option<Case> {
    let Some(map) = node.as_map() else {
        problems.push(
            Diagnostic::error(
                "a case is a mapping with `name`, its inputs, responses and `expect`",
            )
            .at(source, node.span),
        );
        return None;
    };
    let before = problems.len();
    unknown_keys(source, map, &CASE_KEYS, "a case", problems);
    let name = match get(map, "name").and_then(Node::scalar_text) {
        Some(n) if !n.trim().is_empty() => n,
        _ => {
            problems.push(Diagnostic::error("a case needs a `name`").at(source, node.span));
            String::new()
        }
    };
    let set = text_pairs(source, get(map, "set"), "set", problems);
    for (field, _) in &set {
        if !flow.fields.get(field).is_some_and(|f| f.input) {
            // Point at the key itself.
            let span = get(map, "set")
                .and_then(Node::as_map)
                .and_then(|m| {
                    m.iter()
                        .find(|(k, _)| k.scalar_text().as_deref() == Some(field.as_str()))
                })
                .map_or(node.span, |(k, _)| k.span);
            problems.push(
                Diagnostic::error(format!(
                    "`set` names `{field}`, which is not an input of the flow"
                ))
                .at(source, span)
                .help_opt(
                    match flow.fields.get(field).and_then(|f| f.env.as_deref()) {
                        // A case is a caller: configuration comes from its `env:`.
                        Some(var) => Some(format!(
                            "`{field}` is configuration: give the case `env: {{ {var}: … }}`"
                        )),
                        None => did_you_mean(
                            field,
                            flow.fields
                                .values()
                                .filter(|f| f.input)
                                .map(|f| f.name.as_str()),
                        ),
                    },
                ),
            );
        }
    }
    let env = text_pairs(source, get(map, "env"), "env", problems);
    let mock = match (get(map, "mock"), get(map, "responses")) {
        (Some(m), None) => match m.as_str() {
            Some(file) => {
                let file = relative_to(path, file);
                match read_source(&file).map(|s| Mock::load(&s, flow)) {
                    Ok(Ok(mock)) => Some(mock),
                    Ok(Err(mut d)) => {
                        problems.append(&mut d);
                        None
                    }
                    Err(d) => {
                        problems.push(d);
                        None
                    }
                }
            }
            None => {
                problems.push(Diagnostic::error("`mock` is a mock file's path").at(source, m.span));
                None
            }
        },
        (None, Some(r)) => match Mock::from_node(source, r, flow) {
            Ok(mock) => Some(mock),
            Err(mut d) => {
                problems.append(&mut d);
                None
            }
        },
        (None, None) => Some(Mock::default()),
        (Some(_), Some(r)) => {
            problems.push(
                Diagnostic::error("a case has `mock` (a file) or `responses`, not both")
                    .at(source, r.span),
            );
            None
        }
    };
    // A case's own `signals` add to its mock's.
    let mock = match (mock, get(map, "signals")) {
        (Some(mut mock), Some(n)) => match Mock::signals_from_node(source, n, flow) {
            Ok(mut more) => {
                mock.signals.append(&mut more);
                Some(mock)
            }
            Err(mut d) => {
                problems.append(&mut d);
                None
            }
        },
        (mock, _) => mock,
    };
    let expect = match get(map, "expect") {
        Some(e) => parse_expect(source, e, flow, problems),
        None => {
            problems.push(
                Diagnostic::error(format!(
                    "case `{name}` has no `expect`: it would test nothing"
                ))
                .at(source, node.span)
                .help("say at least `expect: { status: succeeded }`"),
            );
            Expect::default()
        }
    };
    if problems.len() > before {
        return None;
    }
    Some(Case {
        name,
        set,
        env,
        mock: mock?,
        expect,
    })
}

fn parse_expect(
    source: &Arc<Source>,
    node: &Node,
    flow: &Flow,
    problems: &mut Vec<Diagnostic>,
) -> Expect {
    let mut expect = Expect::default();
    let Some(map) = node.as_map() else {
        problems.push(
            Diagnostic::error(format!("`expect` is a mapping with {}", list(&EXPECT_KEYS)))
                .at(source, node.span),
        );
        return expect;
    };
    unknown_keys(source, map, &EXPECT_KEYS, "`expect`", problems);
    if let Some(s) = get(map, "status") {
        match s.as_str() {
            Some(st) if STATUSES.contains(&st) => expect.status = Some(st.to_string()),
            _ => problems.push(
                Diagnostic::error(format!("`status` is one of {}", list(&STATUSES)))
                    .at(source, s.span),
            ),
        }
    }
    if let Some(s) = get(map, "ended_at") {
        match s.as_str() {
            Some(id) if flow.steps.iter().any(|st| st.id == id) => {
                expect.ended_at = Some(id.to_string())
            }
            Some(id) => {
                let ids: Vec<&str> = flow.steps.iter().map(|s| s.id.as_str()).collect();
                problems.push(
                    Diagnostic::error(format!(
                        "`ended_at: {id}`: flow `{}` has no step `{id}`",
                        flow.name
                    ))
                    .at(source, s.span)
                    .help(
                        did_you_mean(id, ids.iter().copied())
                            .unwrap_or_else(|| format!("its steps are {}", list(&ids))),
                    ),
                )
            }
            None => problems.push(
                Diagnostic::error("`ended_at` names one of the flow's steps, as text")
                    .at(source, s.span),
            ),
        }
    }
    expect.reason = get(map, "reason").and_then(Node::scalar_text);
    if let Some(f) = get(map, "fields") {
        match f.as_map() {
            Some(entries) => {
                for (k, v) in entries {
                    let name = k.as_str().unwrap_or("");
                    if flow.fields.contains_key(name) {
                        expect.fields.push((name.to_string(), v.to_json()));
                    } else {
                        problems.push(
                            Diagnostic::error(format!("the flow has no field `{name}`"))
                                .at(source, k.span)
                                .help_opt(did_you_mean(
                                    name,
                                    flow.fields.keys().map(String::as_str),
                                )),
                        );
                    }
                }
            }
            None => problems.push(
                Diagnostic::error("`fields` maps field names to the values they end with")
                    .at(source, f.span),
            ),
        }
    }
    if let Some(r) = get(map, "requests") {
        match r.as_seq() {
            Some(items) => {
                for item in items {
                    if let Some(e) = parse_requests(source, item, problems) {
                        expect.requests.push(e);
                    }
                }
            }
            None => problems.push(
                Diagnostic::error("`requests` is a list of `{ request, count, body }`")
                    .at(source, r.span),
            ),
        }
    }
    expect
}

fn parse_requests(
    source: &Arc<Source>,
    node: &Node,
    problems: &mut Vec<Diagnostic>,
) -> Option<ExpectRequests> {
    let Some(map) = node.as_map() else {
        problems.push(
            Diagnostic::error(
                "an expected request is a mapping: `{ request: GET /path, count: 1 }`",
            )
            .at(source, node.span),
        );
        return None;
    };
    unknown_keys(source, map, &REQUEST_KEYS, "an expected request", problems);
    let Some(r) = get(map, "request") else {
        problems.push(
            Diagnostic::error("an expected request needs `request`, a method and a path")
                .at(source, node.span),
        );
        return None;
    };
    let text = r.as_str().unwrap_or("");
    let mut parts = text.split_whitespace();
    let (method, path) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(p), None) if p.starts_with('/') => (m.to_ascii_uppercase(), p.to_string()),
        _ => {
            problems.push(
                Diagnostic::error("`request` is a method and a path, like `PATCH /workflows/v2/tasks/*/assignments/*`")
                    .at(source, r.span),
            );
            return None;
        }
    };
    let count = match get(map, "count") {
        Some(c) => match c.scalar_text().and_then(|t| t.parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => {
                problems.push(Diagnostic::error("`count` is a whole number").at(source, c.span));
                return None;
            }
        },
        None => None,
    };
    Some(ExpectRequests {
        method,
        path,
        count,
        body: get(map, "body").map(Node::to_json),
    })
}
