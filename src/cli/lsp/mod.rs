//! `handoff lsp`: the analyser in the editor, over the Language Server
//! Protocol on stdio.
//!
//! Built on `lsp-server` (rust-analyzer's transport: maintained, a plain
//! message loop with no async runtime; `tower-lsp` is unmaintained). Open
//! documents live here as the editor has them ([`text`]); diagnostics are
//! `check`'s, computed 25 ms after the last edit of a document (an edit
//! that comes sooner supersedes them); the other features read the flow's
//! YAML as written ([`outline`]), so they work while it has mistakes. A
//! mock file is checked against the flow beside it, and a rename in a flow
//! reaches its mock. A
//! request that fails, or panics, gets an error answer; the server goes on.
//! No field's value is ever shown: hovers say a field's type, whether it
//! is secret, an input or from the environment, never a default or value.

pub mod outline;
pub mod text;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lsp_server::{Connection, Message, Notification, Request, Response};
use serde_json::{Value, json};

use crate::cli::lsp::outline::{Outline, Use};
use crate::cli::lsp::text::Document;
use crate::language::diagnostic::{Diagnostic, Severity};
use crate::language::source::Source;

/// How long after an edit its diagnostics are computed: edits typed faster
/// are taken together.
const DEBOUNCE: Duration = Duration::from_millis(25);

pub fn lsp_command() -> i32 {
    let (connection, io) = Connection::stdio();
    let capabilities = json!({
        // Incremental: the editor sends the ranges it changed.
        "textDocumentSync": { "openClose": true, "change": 2 },
        "hoverProvider": true,
        "completionProvider": { "triggerCharacters": [" ", "{", ":"] },
        "definitionProvider": true,
        "referencesProvider": true,
        "renameProvider": { "prepareProvider": false },
        "documentSymbolProvider": true,
        "codeActionProvider": { "codeActionKinds": ["quickfix"] },
        "positionEncoding": "utf-16",
    });
    if let Err(e) = connection.initialize(capabilities) {
        eprintln!("error: the editor did not start the session: {e}");
        return crate::cli::common::EXIT_FAILED;
    }
    let mut server = Server::default();
    let code = server.serve(&connection);
    drop(connection);
    let _ = io.join();
    code
}

#[derive(Default)]
struct Server {
    documents: HashMap<String, Document>,
    /// Documents whose diagnostics are due, and when.
    due: HashMap<String, Instant>,
}

impl Server {
    fn serve(&mut self, connection: &Connection) -> i32 {
        loop {
            let wait = self
                .due
                .values()
                .min()
                .map(|at| at.saturating_duration_since(Instant::now()));
            let message = match wait {
                Some(w) => match connection.receiver.recv_timeout(w) {
                    Ok(m) => Some(m),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return 0,
                },
                None => match connection.receiver.recv() {
                    Ok(m) => Some(m),
                    Err(_) => return 0,
                },
            };
            match message {
                None => self.publish_due(connection),
                Some(Message::Request(request)) => {
                    match connection.handle_shutdown(&request) {
                        Ok(true) => return 0,
                        Ok(false) => {}
                        Err(_) => return 1,
                    }
                    let id = request.id.clone();
                    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.answer(&request)
                    }));
                    let response = match answer {
                        Ok(Ok(result)) => Response::new_ok(id, result),
                        Ok(Err(why)) => Response::new_err(id, -32602, why),
                        Err(_) => Response::new_err(
                            id,
                            -32603,
                            format!("handoff failed on `{}`; the server goes on", request.method),
                        ),
                    };
                    let _ = connection.sender.send(response.into());
                }
                Some(Message::Notification(n)) => {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.notified(connection, &n)
                    }));
                }
                Some(Message::Response(_)) => {}
            }
        }
    }

    fn notified(&mut self, connection: &Connection, n: &Notification) {
        let p = &n.params;
        let uri = p["textDocument"]["uri"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match n.method.as_str() {
            "textDocument/didOpen" => {
                let doc = Document {
                    text: p["textDocument"]["text"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    version: p["textDocument"]["version"].as_i64().unwrap_or(0),
                };
                self.documents.insert(uri.clone(), doc);
                // Opened: at once.
                self.due.insert(uri, Instant::now());
            }
            "textDocument/didChange" => {
                let Some(doc) = self.documents.get_mut(&uri) else {
                    return;
                };
                let changes = p["contentChanges"].as_array().cloned().unwrap_or_default();
                if doc.apply(&changes).is_err() {
                    // Out of step with the editor: say so rather than guess.
                    let _ = connection.sender.send(
                        Notification::new(
                            "window/logMessage".into(),
                            json!({ "type": 1, "message": format!("handoff: an edit of {uri} did not fit the text it had") }),
                        )
                        .into(),
                    );
                    return;
                }
                doc.version = p["textDocument"]["version"].as_i64().unwrap_or(doc.version);
                self.due.insert(uri, Instant::now() + DEBOUNCE);
            }
            "textDocument/didClose" => {
                self.documents.remove(&uri);
                self.due.remove(&uri);
                publish(connection, &uri, None, Vec::new());
            }
            _ => {}
        }
    }

    fn publish_due(&mut self, connection: &Connection) {
        let now = Instant::now();
        let ready: Vec<String> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(u, _)| u.clone())
            .collect();
        for uri in ready {
            self.due.remove(&uri);
            if let Some(doc) = self.documents.get(&uri) {
                let found = match flow_of_mock(&uri) {
                    Some(flow_uri) => {
                        mock_diagnostics(&uri, doc, self.text_of(&flow_uri).as_deref())
                    }
                    None if uri.ends_with(".test.yaml") => test_diagnostics(&uri, doc),
                    None => diagnostics(&uri, doc),
                };
                publish(connection, &uri, Some(doc.version), found);
            }
        }
    }

    /// A document's text: the editor's when it is open, else the file's.
    fn text_of(&self, uri: &str) -> Option<String> {
        match self.documents.get(uri) {
            Some(d) => Some(d.text.clone()),
            None => std::fs::read_to_string(uri.strip_prefix("file://")?).ok(),
        }
    }

    fn answer(&self, request: &Request) -> Result<Value, String> {
        let p = &request.params;
        let uri = p["textDocument"]["uri"].as_str().unwrap_or_default();
        let doc = self
            .documents
            .get(uri)
            .ok_or_else(|| format!("`{uri}` is not open"))?;
        let offset = || {
            doc.offset(&p["position"])
                .ok_or_else(|| "the position is not in the document".to_string())
        };
        let outline = || Outline::read(&doc.text);
        // In a mock, names are the flow's: its step ids after `step:`.
        if let Some(flow_uri) = flow_of_mock(uri).or_else(|| flow_of_test(uri)) {
            let flow = Outline::read(&self.text_of(&flow_uri).unwrap_or_default());
            return Ok(match request.method.as_str() {
                "textDocument/completion" => companion_completion(doc, &flow, offset()?),
                "textDocument/documentSymbol" | "textDocument/codeAction" => {
                    Value::Array(Vec::new())
                }
                _ => Value::Null,
            });
        }
        Ok(match request.method.as_str() {
            "textDocument/hover" => hover(doc, &outline(), offset()?),
            "textDocument/completion" => completion(doc, &outline(), offset()?),
            "textDocument/definition" => {
                let o = outline();
                match o.at(offset()?).and_then(|u| o.declaration(&u)) {
                    Some((s, e)) => json!({ "uri": uri, "range": doc.range(s, e) }),
                    None => Value::Null,
                }
            }
            "textDocument/references" => {
                let o = outline();
                match o.at(offset()?) {
                    Some(u) => Value::Array(
                        o.occurrences(&u)
                            .into_iter()
                            .map(|(s, e)| json!({ "uri": uri, "range": doc.range(s, e) }))
                            .collect(),
                    ),
                    None => Value::Null,
                }
            }
            "textDocument/rename" => {
                let mock_uri = mock_of_flow(uri);
                let test_uri = mock_uri
                    .as_deref()
                    .and_then(|m| m.strip_suffix(".mock.yaml"))
                    .map(|s| format!("{s}.test.yaml"));
                let mut edit = rename(uri, doc, &outline(), offset()?, p["newName"].as_str())?;
                let target = outline().at(offset()?);
                for companion in [&mock_uri, &test_uri].into_iter().flatten() {
                    let (Some(text), Some(target)) = (self.text_of(companion), &target) else {
                        continue;
                    };
                    let other = Document { text, version: 0 };
                    let new = p["newName"].as_str().unwrap_or_default();
                    let edits = companion_renames(&other, target, new);
                    if !edits.is_empty() {
                        edit["changes"][companion.as_str()] = Value::Array(edits);
                    }
                }
                edit
            }
            "textDocument/documentSymbol" => symbols(doc, &outline()),
            "textDocument/codeAction" => code_actions(uri, doc, p),
            other => return Err(format!("handoff lsp does not answer `{other}`")),
        })
    }
}

fn publish(connection: &Connection, uri: &str, version: Option<i64>, diagnostics: Vec<Value>) {
    let mut params = json!({ "uri": uri, "diagnostics": diagnostics });
    if let Some(v) = version {
        params["version"] = json!(v);
    }
    let _ = connection
        .sender
        .send(Notification::new("textDocument/publishDiagnostics".into(), params).into());
}

/// The flow a mock file plays for: `X.mock.yaml` beside `X.yaml`.
fn flow_of_mock(uri: &str) -> Option<String> {
    uri.strip_suffix(".mock.yaml").map(|s| format!("{s}.yaml"))
}

/// The flow a test file tests, by its name: `X.test.yaml` beside `X.yaml`.
fn flow_of_test(uri: &str) -> Option<String> {
    uri.strip_suffix(".test.yaml").map(|s| format!("{s}.yaml"))
}

/// A flow's mock file, by the same rule.
fn mock_of_flow(uri: &str) -> Option<String> {
    if uri.ends_with(".mock.yaml") || uri.ends_with(".test.yaml") {
        return None;
    }
    uri.strip_suffix(".yaml").map(|s| format!("{s}.mock.yaml"))
}

/// A mock's diagnostics, checked against its flow as `check` checks it.
fn mock_diagnostics(uri: &str, doc: &Document, flow: Option<&str>) -> Vec<Value> {
    let name = uri.rsplit('/').next().unwrap_or(uri);
    let flow_name = name.replace(".mock.yaml", ".yaml");
    let whole = |message: String| {
        vec![
            json!({ "range": doc.range(0, 0), "severity": 1, "source": "handoff", "message": message }),
        ]
    };
    let Some(flow_text) = flow else {
        return whole(format!("there is no flow `{flow_name}` next to this mock"));
    };
    let flow = match crate::language::analyze::analyze(&Source::new(
        flow_name.clone(),
        flow_text.to_string(),
    )) {
        Ok(checked) => checked.flow,
        Err(_) => {
            return whole(format!(
                "its flow `{flow_name}` does not load: `handoff check {flow_name}` shows why"
            ));
        }
    };
    let source = Source::new(name, doc.text.clone());
    match crate::run::mock::Mock::load(&source, &flow) {
        Ok(_) => Vec::new(),
        Err(found) => found
            .iter()
            // Only what is about this file; a note in the flow is not.
            .filter(|d| d.source.as_ref().is_none_or(|s| s.name == name))
            .map(|d| lsp_diagnostic(uri, doc, d))
            .collect(),
    }
}

/// A test file's diagnostics, as `handoff check` gives them (its flow, and
/// the mocks it names, read from disk beside it).
fn test_diagnostics(uri: &str, doc: &Document) -> Vec<Value> {
    let Some(path) = uri.strip_prefix("file://") else {
        return Vec::new();
    };
    let source = Source::new(path, doc.text.clone());
    match crate::run::cases::load_text(path, &source) {
        Ok(_) => Vec::new(),
        Err(found) => found
            .iter()
            .filter(|d| d.source.as_ref().is_some_and(|s| s.name == path))
            .map(|d| lsp_diagnostic(uri, doc, d))
            .collect(),
    }
}

/// In a mock or a test file: the flow's step ids as the value of `step:`
/// and `ended_at:`, its fields as keys of a `set:`, `fields:` or `inputs:`
/// mapping written on one line (`set: { tr`).
fn companion_completion(doc: &Document, flow: &Outline, offset: usize) -> Value {
    let before = &doc.text[..offset.min(doc.text.len())];
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    // What is being typed: a value (`key: va`) or a key (`{ ke`), after the
    // last `{` or `,` of the line.
    let cut = line.rfind(['{', ',']).map_or(0, |i| i + 1);
    let tail = &line[cut..];
    let word_before = |text: &str| -> String {
        text.trim_end()
            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let (is_value, key) = match tail.rfind(':') {
        Some(colon) => (true, word_before(&tail[..colon])),
        // A key of a mapping: the mapping's own key, before its `: {`.
        None => (
            false,
            line[..cut.saturating_sub(1)]
                .trim_end()
                .strip_suffix(':')
                .map(word_before)
                .unwrap_or_default(),
        ),
    };
    if is_value && (key == "step" || key == "ended_at") {
        return Value::Array(
            flow.steps
                .iter()
                .map(|s| json!({ "label": s.id, "kind": 18, "detail": s.kind.clone().unwrap_or_default() }))
                .collect(),
        );
    }
    if is_value || !["set", "fields", "inputs"].contains(&key.as_str()) {
        return Value::Array(Vec::new());
    }
    Value::Array(
        flow.fields
            .iter()
            .map(|f| {
                let secret = if f.secret { ", secret" } else { "" };
                json!({ "label": f.name, "kind": 5, "detail": format!("{}{secret}", f.ty) })
            })
            .collect(),
    )
}

/// Where a mock or a test file names a step (`step: X`, `ended_at: X`) or
/// a field (a key of `inputs:`, `set:` or `fields:`), at any depth.
fn companion_renames(other: &Document, target: &Use, new: &str) -> Vec<Value> {
    use crate::language::raw::{Node, NodeValue};
    fn walk(node: &Node, target: &Use, spans: &mut Vec<crate::language::source::Span>) {
        match &node.value {
            NodeValue::Map(entries) => {
                for (k, v) in entries {
                    match (k.as_str(), target) {
                        (Some("step" | "ended_at"), Use::Step(id))
                            if v.as_str() == Some(id.as_str()) =>
                        {
                            spans.push(v.span)
                        }
                        (Some("inputs" | "set" | "fields"), Use::Field(name)) => {
                            for (field, _) in v.as_map().unwrap_or_default() {
                                if field.as_str() == Some(name.as_str()) {
                                    spans.push(field.span);
                                }
                            }
                        }
                        _ => walk(v, target, spans),
                    }
                }
            }
            NodeValue::Seq(items) => items.iter().for_each(|n| walk(n, target, spans)),
            _ => {}
        }
    }
    let source = Source::new("companion", other.text.clone());
    let Ok(root) = crate::language::raw::parse(&source) else {
        return Vec::new();
    };
    let mut spans = Vec::new();
    walk(&root, target, &mut spans);
    spans
        .into_iter()
        .map(|s| json!({ "range": other.range(s.offset, s.end()), "newText": new }))
        .collect()
}

/// `check`'s diagnostics of a document, as LSP's.
pub fn diagnostics(uri: &str, doc: &Document) -> Vec<Value> {
    let name = uri.rsplit('/').next().unwrap_or(uri);
    // A mock or test file is checked against its flow by `check`; here only flows.
    if name.ends_with(".mock.yaml") || name.ends_with(".test.yaml") {
        return Vec::new();
    }
    let source = Source::new(name, doc.text.clone());
    let found = match crate::language::analyze::analyze(&source) {
        Ok(checked) => checked.warnings,
        Err(all) => all,
    };
    found.iter().map(|d| lsp_diagnostic(uri, doc, d)).collect()
}

fn lsp_diagnostic(uri: &str, doc: &Document, d: &Diagnostic) -> Value {
    let (start, end) = d.span.map_or((0, 0), |s| (s.offset, s.end()));
    let mut message = d.message.clone();
    if let Some(help) = &d.help {
        message.push_str(&format!("\nhelp: {help}"));
    }
    let severity = match d.severity {
        Severity::Error => 1,
        Severity::Warning => 2,
        Severity::Note => 3,
    };
    let mut out = json!({
        "range": doc.range(start, end),
        "severity": severity,
        "source": "handoff",
        "message": message,
    });
    if let Some(also) = &d.also {
        let related: Vec<Value> = also
            .places
            .iter()
            .map(|(span, label)| {
                json!({
                    "location": { "uri": uri, "range": doc.range(span.offset, span.end()) },
                    "message": label,
                })
            })
            .collect();
        if !related.is_empty() {
            out["relatedInformation"] = Value::Array(related);
        }
    }
    out
}

fn markdown(text: String) -> Value {
    json!({ "contents": { "kind": "markdown", "value": text } })
}

fn hover(doc: &Document, o: &Outline, offset: usize) -> Value {
    let inside = |(s, e): (usize, usize)| s <= offset && offset <= e;
    if let Some(step) = o.steps.iter().find(|s| s.kind_at.is_some_and(inside)) {
        let kind = step.kind.as_deref().unwrap_or_default();
        return markdown(format!("**{kind}**: {}", crate::steps::StepKind::doc(kind)));
    }
    if let Some(key) = o.keys.iter().find(|k| inside(k.at)) {
        return markdown(key.doc.clone());
    }
    match o.at(offset) {
        Some(Use::Field(name)) => match o.field(&name) {
            Some(f) => {
                let mut said = format!("field `{}`: {}", f.name, f.ty);
                if f.secret {
                    said.push_str(", **secret** (masked in every trace)");
                }
                if f.input {
                    said.push_str(", an input");
                }
                if let Some(env) = &f.env {
                    said.push_str(&format!(", from `${env}`"));
                }
                if let Some(d) = &f.description {
                    said.push_str(&format!("\n\n{d}"));
                }
                let reads = o.occurrences(&Use::Field(name)).len().saturating_sub(1);
                said.push_str(&format!("\n\nused in {reads} place(s) of this flow"));
                markdown(said)
            }
            None => Value::Null,
        },
        Some(Use::Step(id)) => match o.steps.iter().find(|s| s.id == id) {
            Some(s) => {
                let (line, _) = line_of(doc, s.at.0);
                markdown(format!(
                    "step `{}` ({}), line {}",
                    s.id,
                    s.kind.as_deref().unwrap_or("no kind yet"),
                    line + 1
                ))
            }
            None => Value::Null,
        },
        None => Value::Null,
    }
}

fn line_of(doc: &Document, offset: usize) -> (u64, u64) {
    let p = doc.position(offset);
    (
        p["line"].as_u64().unwrap_or(0),
        p["character"].as_u64().unwrap_or(0),
    )
}

fn completion(doc: &Document, o: &Outline, offset: usize) -> Value {
    let before = &doc.text[..offset.min(doc.text.len())];
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let item = |label: &str, kind: u8, detail: String, doc_text: Option<&str>| {
        let mut i = json!({ "label": label, "kind": kind, "detail": detail });
        if let Some(d) = doc_text {
            i["documentation"] = json!({ "kind": "markdown", "value": d });
        }
        i
    };
    // Inside an open `{{`: the flow's fields.
    let open = before.rfind("{{");
    let closed = before.rfind("}}");
    if open.is_some_and(|o| closed.is_none_or(|c| c < o)) {
        return Value::Array(
            o.fields
                .iter()
                .map(|f| {
                    let secret = if f.secret { ", secret" } else { "" };
                    item(
                        &f.name,
                        5,
                        format!("{}{secret}", f.ty),
                        f.description.as_deref(),
                    )
                })
                .collect(),
        );
    }
    let trimmed = line.trim_start().trim_start_matches("- ");
    // After `goto:`, `on_error:` or `otherwise:`: the steps, and `end`.
    if ["goto:", "on_error:", "otherwise:"]
        .iter()
        .any(|k| trimmed.starts_with(k))
    {
        let mut items: Vec<Value> = o
            .steps
            .iter()
            .map(|s| item(&s.id, 18, s.kind.clone().unwrap_or_default(), None))
            .collect();
        items.push(item("end", 14, "ends the run".into(), None));
        return Value::Array(items);
    }
    // A key: the step kinds and a step's keys, then the keys of the kind
    // the step at this place has.
    let mut items: Vec<Value> = crate::steps::KINDS
        .iter()
        .map(|k| {
            item(
                k,
                3,
                "step kind".into(),
                Some(crate::steps::StepKind::doc(k)),
            )
        })
        .collect();
    for k in crate::language::analyze::STEP_KEYS {
        items.push(item(k, 10, "step key".into(), None));
    }
    if let Some(step) = o
        .steps
        .iter()
        .find(|s| s.whole.0 <= offset && offset <= s.whole.1 + 1)
        && let Some(kind) = &step.kind
        && let Some(
            crate::language::keys::Body::Keys(keys) | crate::language::keys::Body::TextOrKeys(keys),
        ) = crate::steps::StepKind::body_of(kind)
    {
        for key in keys {
            items.push(item(key.name, 10, format!("{kind} key"), Some(key.doc)));
        }
    }
    Value::Array(items)
}

fn rename(
    uri: &str,
    doc: &Document,
    o: &Outline,
    offset: usize,
    new: Option<&str>,
) -> Result<Value, String> {
    let new = new.ok_or("the new name is missing")?;
    if !crate::language::analyzer::is_identifier(new) {
        return Err(format!(
            "`{new}` is not a name: letters, digits and `_`, not starting with a digit"
        ));
    }
    let target = o
        .at(offset)
        .ok_or("there is no step id or field here to rename")?;
    let edits: Vec<Value> = o
        .occurrences(&target)
        .into_iter()
        .map(|(s, e)| json!({ "range": doc.range(s, e), "newText": new }))
        .collect();
    Ok(json!({ "changes": { uri: edits } }))
}

fn symbols(doc: &Document, o: &Outline) -> Value {
    let mut out: Vec<Value> = o
        .steps
        .iter()
        .map(|s| {
            json!({
                "name": s.id,
                "detail": s.kind.clone().unwrap_or_default(),
                "kind": 12,
                "range": doc.range(s.whole.0, s.whole.1),
                "selectionRange": doc.range(s.at.0, s.at.1),
            })
        })
        .collect();
    out.extend(o.fields.iter().map(|f| {
        json!({
            "name": f.name,
            "detail": if f.secret { format!("{}, secret", f.ty) } else { f.ty.clone() },
            "kind": 8,
            "range": doc.range(f.at.0, f.at.1),
            "selectionRange": doc.range(f.at.0, f.at.1),
        })
    }));
    Value::Array(out)
}

/// A quick fix for each diagnostic in the range that says "did you mean":
/// the name in backticks it complains of, replaced by the one it suggests.
fn code_actions(uri: &str, doc: &Document, p: &Value) -> Value {
    let mut out = Vec::new();
    for d in p["context"]["diagnostics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let message = d["message"].as_str().unwrap_or_default();
        let Some(suggested) = message
            .split("did you mean `")
            .nth(1)
            .and_then(|rest| rest.split('`').next())
        else {
            continue;
        };
        let (Some(start), Some(end)) = (
            doc.offset(&d["range"]["start"]),
            doc.offset(&d["range"]["end"]),
        ) else {
            continue;
        };
        let here = &doc.text[start..end];
        // The first name in backticks in the message that stands in the range.
        let Some(wrong) = message
            .split('`')
            .skip(1)
            .step_by(2)
            .find(|w| !w.is_empty() && *w != suggested && here.contains(*w))
        else {
            continue;
        };
        let at = start + here.find(wrong).unwrap_or(0);
        out.push(json!({
            "title": format!("Change `{wrong}` to `{suggested}`"),
            "kind": "quickfix",
            "diagnostics": [d],
            "isPreferred": true,
            "edit": { "changes": { uri: [{ "range": doc.range(at, at + wrong.len()), "newText": suggested }] } },
        }));
    }
    Value::Array(out)
}
