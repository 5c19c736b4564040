//! Scripted responses for dry runs: the `--mock` file.
//!
//! A mock file lists, for a step id or for a method and path, a *sequence* of
//! replies; each request takes the next one and the last one repeats. Replies
//! can be delayed on the virtual clock, or fail as a timeout or a refused
//! connection. A request nothing matches fails its step, and no connection is
//! ever opened.

use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::language::analyzer::list;
use crate::language::diagnostic::{Diagnostic, did_you_mean};
use crate::language::flow::Flow;
use crate::language::raw::{Node, NodeValue};
use crate::language::source::Source;
use crate::run::clock::BoxFuture;
use crate::run::clock::VirtualClock;
use crate::run::transport::{HttpRequest, HttpResponse, Transport, TransportError};

#[derive(Debug, Clone, Default)]
pub struct Mock {
    pub entries: Vec<Entry>,
    /// Signals for the flow's `wait_for`s, at times from the run's start.
    pub signals: Vec<crate::run::signals::ScriptedSignal>,
    /// The inputs a recording kept (never a secret): a replay's, unless
    /// `--set` or `--input` gives its own.
    pub inputs: Option<(Arc<Source>, Node)>,
    /// The id of the run a recording was made from: a replay runs under it,
    /// so its OpenTelemetry ids are the recorded run's.
    pub run: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub matcher: Matcher,
    pub replies: Vec<Reply>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    Step(String),
    /// An operation of the flow's `sources:` (`jobs.getJob`): the requests
    /// of the `call:` steps that send it.
    Operation {
        name: String,
        steps: Vec<String>,
    },
    /// A method and a path pattern, where `*` stands for any text within one segment.
    Request {
        method: String,
        path: String,
    },
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
    pub fault: Option<Fault>,
    /// The request this reply answered, as recorded: `--strict` checks it.
    pub expect: Option<Expected>,
}

/// A recorded request: its method, its target (path and query, secrets
/// masked) and its body; `***` in the recording stands for anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub method: String,
    pub target: String,
    pub body: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Timeout,
    Refused,
    Reset,
}

pub const ENTRY_KEYS: [&str; 5] = ["step", "request", "operation", "replies", "reply"];
pub const SIGNAL_KEYS: [&str; 3] = ["at", "name", "data"];
pub const REPLY_KEYS: [&str; 7] = [
    "status", "headers", "body", "text", "delay", "error", "expect",
];

impl Mock {
    /// Reads the `responses` list of a mock file or a test case's header.
    pub fn from_node(
        source: &Arc<Source>,
        node: &Node,
        flow: &Flow,
    ) -> Result<Mock, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        let mut entries = Vec::new();
        let Some(items) = node.as_seq() else {
            return Err(vec![
                Diagnostic::error(format!(
                    "`responses` is a list of scripted responses, found {}",
                    node.type_name()
                ))
                .at(source, node.span),
            ]);
        };
        for item in items {
            if let Some(e) = parse_entry(source, item, flow, &mut problems) {
                entries.push(e);
            }
        }
        if problems.is_empty() {
            Ok(Mock {
                entries,
                signals: Vec::new(),
                inputs: None,
                run: None,
            })
        } else {
            Err(problems)
        }
    }

    /// Reads a `signals` list: `{ at: 2h, name: approval, data: {…} }`,
    /// each naming a signal a `wait_for` of the flow waits for.
    pub fn signals_from_node(
        source: &Arc<Source>,
        node: &Node,
        flow: &Flow,
    ) -> Result<Vec<crate::run::signals::ScriptedSignal>, Vec<Diagnostic>> {
        let waited = flow.signals();
        let mut problems = Vec::new();
        let mut out = Vec::new();
        let Some(items) = node.as_seq() else {
            return Err(vec![
                Diagnostic::error(format!(
                    "`signals` is a list of `{{ at, name, data }}`, found {}",
                    node.type_name()
                ))
                .at(source, node.span),
            ]);
        };
        for item in items {
            let Some(map) = item.as_map() else {
                problems.push(
                    Diagnostic::error(
                        "a scripted signal is a mapping: `{ at: 2h, name: approval, data: {…} }`",
                    )
                    .at(source, item.span),
                );
                continue;
            };
            let mut at = None;
            let mut name = None;
            let mut data = Value::Object(Default::default());
            for (k, v) in map {
                match k.as_str() {
                    Some("at") => match crate::language::duration::parse_duration(
                        &v.scalar_text().unwrap_or_default(),
                    ) {
                        Ok(d) => at = Some(d),
                        Err(e) => problems
                            .push(Diagnostic::error(format!("`at`: {e}")).at(source, v.span)),
                    },
                    Some("name") => match v.as_str() {
                        Some(n) if waited.contains(&n) => name = Some(n.to_string()),
                        Some(n) => problems.push(
                            Diagnostic::error(format!(
                                "no `wait_for` of the flow waits for signal `{n}`"
                            ))
                            .at(source, v.span)
                            .help_opt(did_you_mean(n, waited.iter().copied())),
                        ),
                        None => problems.push(
                            Diagnostic::error("a signal's `name` is text").at(source, v.span),
                        ),
                    },
                    Some("data") => data = v.to_json(),
                    Some(other) => problems.push(
                        Diagnostic::error(format!("unknown key `{other}` in a scripted signal"))
                            .at(source, k.span)
                            .help(did_you_mean(other, SIGNAL_KEYS).unwrap_or_else(|| {
                                "a scripted signal has `at`, `name` and `data`".to_string()
                            })),
                    ),
                    None => {}
                }
            }
            match (at, name) {
                (Some(at), Some(name)) => {
                    out.push(crate::run::signals::ScriptedSignal { at, name, data })
                }
                (None, _) => problems.push(
                    Diagnostic::error("a scripted signal needs `at`: when it comes, such as `2h`")
                        .at(source, item.span),
                ),
                _ => {}
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }

    /// Loads a mock file: a mapping with `responses`.
    pub fn load(source: &Arc<Source>, flow: &Flow) -> Result<Mock, Vec<Diagnostic>> {
        let root = crate::language::raw::parse(source).map_err(|d| vec![d])?;
        let Some(entries) = root.as_map() else {
            return Err(vec![
                Diagnostic::error("a mock file is a mapping with a `responses` list")
                    .at(source, root.span),
            ]);
        };
        let mut responses = None;
        let mut signals = None;
        let mut inputs = None;
        let mut run = None;
        let mut problems = Vec::new();
        for (k, v) in entries {
            match k.as_str() {
                Some("responses") => responses = Some(v),
                Some("signals") => signals = Some(v),
                Some("inputs") if v.as_map().is_some() => inputs = Some((source.clone(), v.clone())),
                Some("inputs") => problems.push(
                    Diagnostic::error("`inputs` maps a flow's input fields to values")
                        .at(source, v.span),
                ),
                Some("description") => {}
                Some("run") => match v.as_str() {
                    Some(id) if !id.trim().is_empty() => run = Some(id.to_string()),
                    _ => problems.push(
                        Diagnostic::error("`run` is the id of the run a recording was made from")
                            .at(source, v.span),
                    ),
                },
                Some(other) => problems.push(
                    Diagnostic::error(format!("unknown key `{other}` in a mock file"))
                        .at(source, k.span)
                        .help(
                            did_you_mean(other, ["responses", "signals", "inputs", "run", "description"])
                                .unwrap_or_else(|| {
                                    "a mock file has `responses`, and optionally `signals`, `inputs`, `run` and `description`"
                                        .into()
                                }),
                        ),
                ),
                None => {}
            }
        }
        let signals = match signals.map(|n| Mock::signals_from_node(source, n, flow)) {
            Some(Ok(s)) => s,
            Some(Err(mut more)) => {
                problems.append(&mut more);
                Vec::new()
            }
            None => Vec::new(),
        };
        // Every problem at once: the file's own, then its entries'. A mock
        // of signals alone answers no request.
        let mock = match responses.map(|r| Mock::from_node(source, r, flow)) {
            Some(Ok(mock)) => mock,
            Some(Err(mut more)) => {
                problems.append(&mut more);
                Mock::default()
            }
            None if !signals.is_empty() => Mock::default(),
            None => {
                problems.push(
                    Diagnostic::error("a mock file needs `responses` (or `signals`)")
                        .at(source, root.span),
                );
                Mock::default()
            }
        };
        if problems.is_empty() {
            Ok(Mock {
                signals,
                inputs,
                run,
                ..mock
            })
        } else {
            Err(problems)
        }
    }

    /// Which entry answers a request: a method-and-path match is the more
    /// specific, so it beats a step match (a step may send several requests).
    fn find(&self, request: &HttpRequest) -> Option<usize> {
        let path = request.path();
        let by_request = self.entries.iter().position(|e| match &e.matcher {
            Matcher::Request {
                method,
                path: pattern,
            } => method.eq_ignore_ascii_case(&request.method) && path_matches(pattern, &path),
            Matcher::Step(_) | Matcher::Operation { .. } => false,
        });
        by_request
            .or_else(|| {
                self.entries.iter().position(|e| match &e.matcher {
                    Matcher::Operation { steps, .. } => steps.contains(&request.step),
                    _ => false,
                })
            })
            .or_else(|| {
                self.entries
                    .iter()
                    .position(|e| e.matcher == Matcher::Step(request.step.clone()))
            })
    }
}

/// One entry, every problem in it reported (`None` when there was any).
fn parse_entry(
    source: &Arc<Source>,
    node: &Node,
    flow: &Flow,
    problems: &mut Vec<Diagnostic>,
) -> Option<Entry> {
    let mut err = |n: &Node, m: String| problems.push(Diagnostic::error(m).at(source, n.span));
    let Some(map) = node.as_map() else {
        err(
            node,
            "a scripted response is a mapping with `step` or `request`, and `replies`".into(),
        );
        return None;
    };
    let get = |key: &str| {
        map.iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    };
    let before = problems.len();
    for (k, _) in map {
        let name = k.as_str().unwrap_or("");
        if !ENTRY_KEYS.contains(&name) && !REPLY_KEYS.contains(&name) {
            let help = did_you_mean(name, ENTRY_KEYS.iter().chain(REPLY_KEYS.iter()).copied())
                .unwrap_or_else(|| format!("a scripted response has {}", list(&ENTRY_KEYS)));
            problems.push(
                Diagnostic::error(format!("unknown key `{name}` in a scripted response"))
                    .at(source, k.span)
                    .help(help),
            );
        }
    }
    let matcher = match (get("step"), get("request"), get("operation")) {
        (None, None, Some(o)) => {
            let name = o.as_str().unwrap_or("");
            let ops = flow.operations();
            let steps: Vec<String> = ops
                .iter()
                .filter(|op| op.name == name)
                .map(|op| op.step.to_string())
                .collect();
            if steps.is_empty() {
                let mut names: Vec<&str> = ops.iter().map(|op| op.name).collect();
                names.dedup();
                problems.push(
                    Diagnostic::error(format!("no `call:` step of the flow sends `{name}`"))
                        .at(source, o.span)
                        .help(
                            did_you_mean(name, names.iter().copied()).unwrap_or_else(|| {
                                if names.is_empty() {
                                    "the flow has no `call:` steps".to_string()
                                } else {
                                    format!("its operations are {}", list(&names))
                                }
                            }),
                        ),
                );
                None
            } else {
                Some(Matcher::Operation {
                    name: name.to_string(),
                    steps,
                })
            }
        }
        (Some(s), None, None) => match s.as_str() {
            None => {
                problems.push(Diagnostic::error("`step` names a step id").at(source, s.span));
                None
            }
            Some(id) if !flow.steps.iter().any(|st| st.id == id) => {
                problems.push(
                    Diagnostic::error(format!("the flow has no step `{id}`"))
                        .at(source, s.span)
                        .help_opt(did_you_mean(id, flow.steps.iter().map(|s| s.id.as_str()))),
                );
                None
            }
            Some(id) => Some(Matcher::Step(id.to_string())),
        },
        (None, Some(r), None) => {
            let text = r.as_str().unwrap_or("");
            let mut parts = text.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(m), Some(p), None) if p.starts_with('/') => Some(Matcher::Request {
                    method: m.to_ascii_uppercase(),
                    path: p.to_string(),
                }),
                _ => {
                    problems.push(
                        Diagnostic::error(
                            "`request` is a method and a path, like `PATCH /workflows/v1/tasks/*`",
                        )
                        .at(source, r.span),
                    );
                    None
                }
            }
        }
        _ => {
            problems.push(
                Diagnostic::error(
                    "a scripted response names one of `step`, `request` or `operation`",
                )
                .at(source, node.span),
            );
            None
        }
    };
    let replies = match (get("replies"), get("reply")) {
        (Some(_), Some(one)) => {
            problems.push(
                Diagnostic::error("an entry has `replies` (a list) or `reply` (one), not both")
                    .at(source, one.span),
            );
            Vec::new()
        }
        (None, Some(one)) => parse_reply(source, one, problems).into_iter().collect(),
        (Some(list_node), None) => match list_node.as_seq().filter(|s| !s.is_empty()) {
            Some(items) => items
                .iter()
                .filter_map(|i| parse_reply(source, i, problems))
                .collect(),
            None => {
                problems.push(
                    Diagnostic::error("`replies` is a non-empty list").at(source, list_node.span),
                );
                Vec::new()
            }
        },
        // A single reply can stand in the entry itself.
        (None, None) => parse_reply_fields(source, map, problems)
            .into_iter()
            .collect(),
    };
    if problems.len() > before {
        return None;
    }
    let matcher = matcher?;
    let reply_nodes: Vec<&Node> = match (get("replies"), get("reply")) {
        (Some(l), _) => l.as_seq().map(|s| s.iter().collect()).unwrap_or_default(),
        (None, Some(one)) => vec![one],
        (None, None) => vec![node],
    };
    check_replies(source, flow, &matcher, &replies, &reply_nodes, problems);
    if problems.len() > before {
        return None;
    }
    Some(Entry { matcher, replies })
}

/// Replies for an operation's requests must be answers its description
/// declares: a scripted answer that drifts from the API is an error, so a
/// golden test cannot pass against an API that no longer exists.
fn check_replies(
    source: &Arc<Source>,
    flow: &Flow,
    matcher: &Matcher,
    replies: &[Reply],
    nodes: &[&Node],
    problems: &mut Vec<Diagnostic>,
) {
    let ops = flow.operations();
    let Some(op) = ops.iter().find(|op| match matcher {
        Matcher::Operation { name, .. } => op.name == name,
        Matcher::Step(id) => op.step == id,
        Matcher::Request { .. } => false,
    }) else {
        return;
    };
    let Some(Ok(operation)) = op.api.operation(op.operation) else {
        return;
    };
    for (reply, node) in replies.iter().zip(nodes) {
        if reply.fault.is_some() {
            continue;
        }
        let Some(declared) = operation.response_for(reply.status) else {
            problems.push(
                Diagnostic::error(format!(
                    "`{}` does not declare the status {} this reply answers",
                    op.name, reply.status
                ))
                .at(source, node.span)
                .help(format!(
                    "its statuses are {}",
                    operation
                        .responses
                        .iter()
                        .map(|r| format!("`{}`", r.status))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
            continue;
        };
        let (Some(schema), false) = (&declared.schema, reply.body.is_empty()) else {
            continue;
        };
        let Ok(body) = serde_json::from_slice::<Value>(&reply.body) else {
            problems.push(
                Diagnostic::error(format!(
                    "this reply's body is not JSON, where `{}` declares a JSON schema for {}",
                    op.name, reply.status
                ))
                .at(source, node.span),
            );
            continue;
        };
        match op.api.check(schema, &body) {
            Ok(found) if found.is_empty() => {}
            Ok(found) => {
                let listed: Vec<String> = found
                    .iter()
                    .map(|p| format!("`body{}` {}", p.path.trim_start_matches('$'), p.message))
                    .collect();
                let mut d = Diagnostic::error(format!(
                    "this reply does not match what `{}` declares for {}: {}",
                    op.name,
                    reply.status,
                    listed.join("; ")
                ))
                .at(source, node.span);
                if let Some((src, span)) = op.api.span(schema) {
                    d = d.note_at(&src, span, "the declared schema");
                }
                problems.push(d);
            }
            Err(message) => problems.push(Diagnostic::error(message).at(source, node.span)),
        }
    }
}

fn parse_reply(source: &Arc<Source>, node: &Node, problems: &mut Vec<Diagnostic>) -> Option<Reply> {
    let Some(map) = node.as_map() else {
        problems.push(
            Diagnostic::error("a reply is a mapping with `status`, `body`, …")
                .at(source, node.span),
        );
        return None;
    };
    let before = problems.len();
    for (k, _) in map {
        let name = k.as_str().unwrap_or("");
        if !REPLY_KEYS.contains(&name) {
            let help = did_you_mean(name, REPLY_KEYS)
                .unwrap_or_else(|| format!("a reply has {}", list(&REPLY_KEYS)));
            problems.push(
                Diagnostic::error(format!("unknown key `{name}` in a reply"))
                    .at(source, k.span)
                    .help(help),
            );
        }
    }
    let reply = parse_reply_fields(source, map, problems);
    reply.filter(|_| problems.len() == before)
}

fn parse_reply_fields(
    source: &Arc<Source>,
    map: &[(Node, Node)],
    problems: &mut Vec<Diagnostic>,
) -> Option<Reply> {
    let before = problems.len();
    let mut err =
        |n: &Node, m: &str| problems.push(Diagnostic::error(m.to_string()).at(source, n.span));
    let get = |key: &str| {
        map.iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    };
    let status = match get("status") {
        Some(n) => match n.value {
            NodeValue::Int(i) if (100..600).contains(&i) => i as u16,
            _ => {
                err(n, "`status` is a number from 100 to 599");
                200
            }
        },
        None => 200,
    };
    let mut headers = Vec::new();
    if let Some(h) = get("headers") {
        match h.as_map() {
            Some(entries) => {
                for (k, v) in entries {
                    // As over the wire: HTTP/2 and reqwest name headers in
                    // lower case, and a flow must not depend on the case.
                    headers.push((
                        k.scalar_text().unwrap_or_default().to_ascii_lowercase(),
                        v.scalar_text().unwrap_or_default(),
                    ));
                }
            }
            None => err(h, "`headers` maps names to values"),
        }
    }
    let body = match (get("body"), get("text")) {
        (Some(_), Some(t)) => {
            err(t, "a reply has `body` (JSON) or `text`, not both");
            Vec::new()
        }
        (Some(b), None) => {
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("content-type".into(), "application/json".into()));
            }
            serde_json::to_vec(&b.to_json()).unwrap_or_default()
        }
        (None, Some(t)) => match t.scalar_text() {
            Some(text) => text.into_bytes(),
            None => {
                err(t, "`text` is the raw body, as text");
                Vec::new()
            }
        },
        (None, None) => Vec::new(),
    };
    let delay = match get("delay") {
        Some(d) => crate::language::duration::parse_duration(&d.scalar_text().unwrap_or_default())
            .unwrap_or_else(|e| {
                err(d, &format!("invalid `delay`: {e}"));
                Duration::ZERO
            }),
        None => Duration::ZERO,
    };
    let fault = match get("error") {
        Some(e) => match e.as_str() {
            Some("timeout") => Some(Fault::Timeout),
            Some("refused") => Some(Fault::Refused),
            Some("reset") => Some(Fault::Reset),
            _ => {
                err(e, "`error` is `timeout`, `refused` or `reset`");
                None
            }
        },
        None => None,
    };
    let expect = match get("expect") {
        Some(e) => {
            let field = |key: &str| {
                e.as_map()?
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(key))
                    .map(|(_, v)| v)
            };
            match (
                field("method").and_then(Node::scalar_text),
                field("target").and_then(Node::scalar_text),
            ) {
                (Some(method), Some(target)) => Some(Expected {
                    method,
                    target,
                    body: field("body").map(Node::to_json),
                }),
                _ => {
                    err(
                        e,
                        "`expect` has the request's `method` and `target`, and may have its `body`",
                    );
                    None
                }
            }
        }
        None => None,
    };
    (problems.len() == before).then_some(Reply {
        status,
        headers,
        body,
        delay,
        fault,
        expect,
    })
}

/// Whether a path matches a pattern where `*` stands for any text within one segment.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
    let s: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    p.len() == s.len() && p.iter().zip(&s).all(|(p, s)| segment_matches(p, s))
}

fn segment_matches(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(after) = text.strip_prefix(prefix) else {
                return false;
            };
            (0..=after.len())
                .filter(|&i| after.is_char_boundary(i))
                .any(|i| segment_matches(rest, &after[i..]))
        }
    }
}

/// The dry-run transport: answers from a [`Mock`] on a virtual clock.
pub struct MockTransport {
    mock: Mock,
    clock: Arc<VirtualClock>,
    cursors: Mutex<Vec<usize>>,
    /// `--strict`: a request must be the one recorded, and no more are sent.
    strict: bool,
}

impl MockTransport {
    pub fn new(mock: Mock, clock: Arc<VirtualClock>) -> MockTransport {
        let cursors = Mutex::new(vec![0; mock.entries.len()]);
        MockTransport {
            mock,
            clock,
            cursors,
            strict: false,
        }
    }

    /// Replays a recording strictly: see `strict_check`.
    pub fn strict(mut self) -> MockTransport {
        self.strict = true;
        self
    }
}

/// `--strict`: the request a step sends must be the recorded one. The
/// error names what differs, never a value the run sent.
fn strict_check(request: &HttpRequest, reply: Option<&Reply>) -> Result<(), String> {
    let Some(reply) = reply else {
        return Err(format!(
            "strict replay: step `{}` sent a request the recording does not have",
            request.step
        ));
    };
    let Some(expected) = &reply.expect else {
        return Ok(());
    };
    if !expected.method.eq_ignore_ascii_case(&request.method) {
        return Err(format!(
            "strict replay: step `{}` sent {}, the recording has {}",
            request.step, request.method, expected.method
        ));
    }
    let target = target_of(&request.shown_url);
    if !target_matches(&expected.target, &target) {
        return Err(format!(
            "strict replay: step `{}` sent {} {target}, the recording has {} {}",
            request.step, request.method, expected.method, expected.target
        ));
    }
    let sent = request.body.as_ref().map(body_json);
    match (&expected.body, &sent) {
        (None, None) => Ok(()),
        (Some(e), Some(s)) => match first_difference(e, s, "$") {
            None => Ok(()),
            Some(at) => Err(format!(
                "strict replay: step `{}` sent a body that differs from the recording at `{at}`",
                request.step
            )),
        },
        _ => Err(format!(
            "strict replay: step `{}` sent {} body where the recording has {}",
            request.step,
            if sent.is_some() { "a" } else { "no" },
            if expected.body.is_some() {
                "one"
            } else {
                "none"
            }
        )),
    }
}

/// A URL's path and query.
pub fn target_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        Err(_) => url.to_string(),
    }
}

/// A request body as JSON, as a recording keeps it.
pub fn body_json(body: &crate::run::transport::RequestBody) -> Value {
    use crate::run::transport::RequestBody;
    match body {
        RequestBody::Json(v) => v.clone(),
        RequestBody::Form(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        ),
        RequestBody::Text(t) => Value::String(t.clone()),
    }
}

/// Whether `actual` fits `recorded`, where each `***` stands for any text.
/// A recorded path and query against a sent one: the path as written (a
/// `***` in it stands for anything), the query as its pairs, in any order
/// of names (the values of one name keep theirs).
fn target_matches(recorded: &str, actual: &str) -> bool {
    let (rp, rq) = recorded.split_once('?').unwrap_or((recorded, ""));
    let (ap, aq) = actual.split_once('?').unwrap_or((actual, ""));
    masked_matches(rp, ap) && same_query(rq, aq, masked_matches)
}

/// Whether two query strings hold the same pairs, whatever the order of
/// their names: each name's values in order, compared by `value`.
pub fn same_query(expected: &str, actual: &str, value: impl Fn(&str, &str) -> bool) -> bool {
    fn by_name(query: &str) -> std::collections::BTreeMap<&str, Vec<&str>> {
        let mut out: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.entry(k).or_default().push(v);
        }
        out
    }
    let (e, a) = (by_name(expected), by_name(actual));
    e.len() == a.len()
        && e.iter().all(|(k, vs)| {
            a.get(k).is_some_and(|ws| {
                vs.len() == ws.len() && vs.iter().zip(ws).all(|(v, w)| value(v, w))
            })
        })
}

fn masked_matches(recorded: &str, actual: &str) -> bool {
    let mut parts = recorded.split(crate::run::redact::MASK);
    let Some(first) = parts.next() else {
        return true;
    };
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    if parts.is_empty() {
        return rest.is_empty();
    }
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Where two JSON values first differ, as a path; `***` strings match anything.
fn first_difference(recorded: &Value, sent: &Value, at: &str) -> Option<String> {
    match (recorded, sent) {
        (Value::String(r), Value::String(s)) => (!masked_matches(r, s)).then(|| at.to_string()),
        (Value::String(r), other) if r == crate::run::redact::MASK && !other.is_null() => None,
        (Value::Object(r), Value::Object(s)) => {
            for (k, v) in r {
                let here = format!("{at}.{k}");
                match s.get(k) {
                    Some(w) => {
                        if let Some(d) = first_difference(v, w, &here) {
                            return Some(d);
                        }
                    }
                    None => return Some(here),
                }
            }
            s.keys()
                .find(|k| !r.contains_key(*k))
                .map(|k| format!("{at}.{k}"))
        }
        (Value::Array(r), Value::Array(s)) => {
            if r.len() != s.len() {
                return Some(at.to_string());
            }
            r.iter()
                .zip(s)
                .enumerate()
                .find_map(|(i, (a, b))| first_difference(a, b, &format!("{at}[{i}]")))
        }
        (r, s) => (r != s).then(|| at.to_string()),
    }
}

impl Transport for MockTransport {
    fn send<'a>(
        &'a self,
        request: &'a HttpRequest,
    ) -> BoxFuture<'a, Result<HttpResponse, TransportError>> {
        let result = (|| {
            let index = self
                .mock
                .find(request)
                .ok_or(TransportError::NoScriptedResponse)?;
            let entry = &self.mock.entries[index];
            let reply = {
                let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
                let n = cursors[index];
                cursors[index] += 1;
                if self.strict {
                    strict_check(request, entry.replies.get(n)).map_err(TransportError::Other)?;
                }
                &entry.replies[n.min(entry.replies.len() - 1)]
            };
            if reply.fault == Some(Fault::Timeout) || reply.delay >= request.timeout {
                self.clock.advance(request.timeout);
                return Err(TransportError::Timeout(request.timeout));
            }
            self.clock.advance(reply.delay);
            match reply.fault {
                Some(Fault::Refused) => {
                    return Err(TransportError::Connect("connection refused".into()));
                }
                Some(Fault::Reset) => {
                    return Err(TransportError::Reset("connection reset by peer".into()));
                }
                _ => {}
            }
            // The same byte budget as over the wire, so a dry run rehearses it.
            let limit = request.max_body.min(crate::run::transport::MAX_BODY_BYTES);
            if reply.body.len() > limit {
                return Err(TransportError::TooLarge(limit));
            }
            Ok(HttpResponse::new(
                reply.status,
                reply.headers.clone(),
                reply.body.clone(),
            ))
        })();
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn queries_compare_as_pairs_in_any_order_of_names() {
        let eq = |a: &str, b: &str| a == b;
        assert!(same_query("a=1&b=2", "b=2&a=1", eq));
        assert!(!same_query("a=1&b=2", "a=1", eq));
        assert!(
            !same_query("a=1&a=2", "a=2&a=1", eq),
            "one name's values keep their order"
        );
        assert!(!same_query("a=1", "a=1&c=3", eq));
        assert!(target_matches(
            "/tasks?workflowInstanceId=***&status=active",
            "/tasks?status=active&workflowInstanceId=7c1e"
        ));
        assert!(!target_matches(
            "/tasks?status=active",
            "/tasks?status=done"
        ));
    }

    use super::*;

    #[test]
    fn a_recording_masks_stand_for_any_text() {
        assert!(masked_matches("/tasks/abc", "/tasks/abc"));
        assert!(!masked_matches("/tasks/abc", "/tasks/abd"));
        assert!(masked_matches("/x?token=***&a=1", "/x?token=s3cr3t&a=1"));
        assert!(!masked_matches("/x?token=***&a=1", "/x?token=s3cr3t&a=2"));
        assert!(masked_matches("Bearer ***", "Bearer anything"));
        let recorded = serde_json::json!({ "outcome": "Completed", "secret": "***", "n": [1, 2] });
        let same = serde_json::json!({ "outcome": "Completed", "secret": "xyz", "n": [1, 2] });
        assert_eq!(first_difference(&recorded, &same, "$"), None);
        let other = serde_json::json!({ "outcome": "Canceled", "secret": "xyz", "n": [1, 2] });
        assert_eq!(
            first_difference(&recorded, &other, "$").as_deref(),
            Some("$.outcome")
        );
        let more =
            serde_json::json!({ "outcome": "Completed", "secret": "x", "n": [1, 2], "extra": 1 });
        assert_eq!(
            first_difference(&recorded, &more, "$").as_deref(),
            Some("$.extra")
        );
    }

    #[test]
    fn star_matches_within_one_segment() {
        assert!(path_matches(
            "/workflows/v1/tasks/*",
            "/workflows/v1/tasks/abc"
        ));
        assert!(!path_matches(
            "/workflows/v1/tasks/*",
            "/workflows/v1/tasks/abc/assignments/x"
        ));
        assert!(path_matches("/a/t-*-z", "/a/t-123-z"));
        assert!(!path_matches("/a/b", "/a/c"));
    }
}
