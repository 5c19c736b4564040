//! One Arazzo workflow, lowered to the nodes of a handoff flow (see
//! [`crate::language::arazzo`]). Problems that are Arazzo's own (a missing
//! `stepId`, an action of an unknown type, an expression that names nothing)
//! are reported here, in Arazzo's words; the rest by the flow's analyser.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use indexmap::IndexMap;

use crate::language::analyzer::list;
use crate::language::arazzo::expr::{self, Expr, Names, Reference, RequestPart, Written, quote};
use crate::language::arazzo::select::{Selection, get, workflow_ids};
use crate::language::diagnostic::{Diagnostic, did_you_mean};
use crate::language::openapi::{Api, Scheme};
use crate::language::raw::{Node, NodeValue};
use crate::language::source::{Source, Span};

/// Inlined workflows nest at most this deep (a workflow that runs itself
/// is refused before).
const MAX_NESTING: usize = 8;

fn text(span: Span, value: impl Into<String>) -> Node {
    Node {
        span,
        value: NodeValue::Str(value.into()),
    }
}

fn map(span: Span, entries: Vec<(&str, Node)>) -> Node {
    Node {
        span,
        value: NodeValue::Map(
            entries
                .into_iter()
                .map(|(k, v)| (text(span, k), v))
                .collect(),
        ),
    }
}

fn owned_map(span: Span, entries: Vec<(String, Node)>) -> Node {
    Node {
        span,
        value: NodeValue::Map(
            entries
                .into_iter()
                .map(|(k, v)| (text(span, k), v))
                .collect(),
        ),
    }
}

fn seq(span: Span, items: Vec<Node>) -> Node {
    Node {
        span,
        value: NodeValue::Seq(items),
    }
}

fn int(span: Span, n: i64) -> Node {
    Node {
        span,
        value: NodeValue::Int(n),
    }
}

fn yes(span: Span) -> Node {
    Node {
        span,
        value: NodeValue::Bool(true),
    }
}

/// A field's declaration: its type, and its default when it has one.
fn declaration(span: Span, ty: &str, default: Option<Node>) -> Node {
    let mut entries = vec![("type", text(span, ty))];
    if let Some(d) = default {
        entries.push(("default", d));
    }
    map(span, entries)
}

fn null(span: Span) -> Node {
    Node {
        span,
        value: NodeValue::Null,
    }
}

/// A name templates can read: `find-pet` is `find_pet`.
fn mangle(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.chars().next().is_none_or(|c| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A lowered workflow: the flow's nodes, and the descriptions already read
/// (by the path the flow's `sources:` name), so none is read twice.
pub struct Lowered {
    pub root: Node,
    pub apis: Vec<(std::path::PathBuf, Arc<Api>)>,
    /// What the lowering accepted but would have the author write otherwise.
    pub warnings: Vec<Diagnostic>,
}

/// A workflow run before the chosen one (`dependsOn`): the names of its
/// inputs and outputs, and the prefix of its fields.
#[derive(Clone)]
struct Ran {
    fields: String,
    inputs: BTreeSet<String>,
    outputs: BTreeSet<String>,
}

/// What a step that calls an operation sends, as `$request`, `$url` and
/// `$method` read it: fields set after the call (`STEP__request_header`...).
#[derive(Clone)]
struct RequestShape {
    method: String,
    /// The path template (`/jobs/{jobId}`) and the field of the server.
    path: String,
    server: String,
    /// Headers that carry credentials (lower case): never read into fields.
    credentials: BTreeSet<String>,
    /// The field of each value sent, by part and name (headers lower case).
    kept: BTreeMap<(&'static str, String), String>,
    /// The field of the body, when it is not a structure.
    body: Option<String>,
}

/// A source description, as the lowering uses it.
struct SourceDesc {
    /// The handoff source's name (mangled).
    name: String,
    /// The path handoff reads it from, as the lowered flow writes it.
    path: String,
    api: Arc<Api>,
    /// Where it was read from, as the analyser will look for it.
    full: std::path::PathBuf,
    span: Span,
    /// Credentials the steps give, by scheme: the template and where.
    credentials: IndexMap<String, (String, Span)>,
}

/// Where a workflow's lowered steps go next, and how its names are made.
#[derive(Clone)]
struct Frame {
    workflow: String,
    /// Prefix of the fields (`place_order__` inside a step `place-order`).
    fields: String,
    /// Prefix of the step ids (`place-order/`).
    ids: String,
    /// Where a workflow that ends goes: `end`, or the step that ran it.
    on_end: String,
    /// Where a workflow that fails goes (the step that ran it), with the
    /// field that says why; `None`: the run fails.
    on_fail: Option<(String, String)>,
    depth: usize,
    /// The workflows being inlined, outermost first.
    chain: Vec<String>,
}

pub struct Lowering<'d> {
    source: Arc<Source>,
    root: &'d Node,
    selection: Selection,
    diagnostics: Vec<Diagnostic>,
    sources: Vec<SourceDesc>,
    fields: IndexMap<String, Node>,
    /// Each field's origin, for collisions of mangled names.
    field_origin: BTreeMap<String, String>,
    steps: Vec<Node>,
    /// Fields that carry credentials: declared secret.
    secret: BTreeSet<String>,
    /// Sources that did not load (reported once).
    failed_sources: Vec<String>,
    /// The workflows `dependsOn` ran first, by id.
    ran: Rc<BTreeMap<String, Ran>>,
    /// What the last `call` lowered sends.
    last_request: Option<Sent>,
}

/// A call's request as the lowering wrote it: each parameter (where, name,
/// template) that is not a credential, and the body.
struct Sent {
    shape: RequestShape,
    parts: Vec<(String, String, Node)>,
    body: Option<Node>,
}

/// The field a parameter's location is kept in (`cookie`s are not kept).
fn location_field(location: &str) -> Option<&'static str> {
    match location {
        "query" => Some("query"),
        "path" => Some("path"),
        "header" => Some("header"),
        _ => None,
    }
}

/// A parameter's value as the request writes it: text as it is, anything
/// else as JSON (`true`, not the template's `True`).
fn as_sent(field: &str) -> String {
    format!("({field} if {field} is string else ({field} | tojson))")
}

/// Whether a step's text reads what it sent (`$request`, `$url`, `$method`).
fn reads_request(node: &Node) -> bool {
    match &node.value {
        NodeValue::Str(s) => ["$request.", "$url", "$method"]
            .iter()
            .any(|w| s.contains(w)),
        NodeValue::Map(entries) => entries.iter().any(|(_, v)| reads_request(v)),
        NodeValue::Seq(items) => items.iter().any(reads_request),
        _ => false,
    }
}

/// The names one step's expressions read through.
struct StepNames<'a> {
    frame: &'a Frame,
    /// The step whose `$response` and `$statusCode` these are (its field prefix).
    current: Option<String>,
    /// For a step that runs a workflow: that workflow's frame, for `$outputs`.
    inner: Option<(&'a Frame, Option<String>)>,
    inputs: &'a BTreeSet<String>,
    steps: &'a BTreeMap<String, BTreeSet<String>>,
    outputs: &'a BTreeSet<String>,
    /// The request of the current step, when its expressions read it.
    request: Option<RequestShape>,
    ran: Rc<BTreeMap<String, Ran>>,
    /// Warnings for forms read loosely, taken by the lowering.
    notes: RefCell<Vec<String>>,
}

impl<'a> StepNames<'a> {
    fn new(frame: &'a Frame, known: &'a Known, ran: &Rc<BTreeMap<String, Ran>>) -> StepNames<'a> {
        StepNames {
            frame,
            current: None,
            inner: None,
            inputs: &known.inputs,
            steps: &known.steps,
            outputs: &known.outputs,
            request: None,
            ran: ran.clone(),
            notes: RefCell::new(Vec::new()),
        }
    }
}

impl Names for StepNames<'_> {
    fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut self.notes.borrow_mut())
    }

    fn read(&self, r: &Reference) -> Result<String, String> {
        let f = &self.frame.fields;
        if let Some(note) = &r.loose {
            self.notes.borrow_mut().push(note.clone());
        }
        let base = match &r.expr {
            Expr::Inputs(name) => {
                if !self.inputs.contains(name) {
                    let names: Vec<&str> = self.inputs.iter().map(String::as_str).collect();
                    let hint = did_you_mean(name, names.iter().copied())
                        .map(|h| format!(": {h}"))
                        .unwrap_or_default();
                    return Err(format!(
                        "`$inputs.{name}`: workflow `{}` has no input `{name}`{hint}",
                        self.frame.workflow
                    ));
                }
                format!("{f}{}", mangle(name))
            }
            Expr::StepOutput { step, name } => {
                let Some(outputs) = self.steps.get(step) else {
                    let ids: Vec<&str> = self.steps.keys().map(String::as_str).collect();
                    let hint = did_you_mean(step, ids.iter().copied())
                        .map(|h| format!(": {h}"))
                        .unwrap_or_default();
                    return Err(format!(
                        "`$steps.{step}`: workflow `{}` has no step `{step}`{hint}",
                        self.frame.workflow
                    ));
                };
                if !outputs.contains(name) {
                    let names: Vec<&str> = outputs.iter().map(String::as_str).collect();
                    return Err(format!(
                        "`$steps.{step}.outputs.{name}`: step `{step}` has no output `{name}`{}",
                        if names.is_empty() {
                            " (it has no outputs)".to_string()
                        } else {
                            format!(" (it has {})", list(&names))
                        }
                    ));
                }
                format!("{f}{}__{}", mangle(step), mangle(name))
            }
            Expr::StatusCode | Expr::ResponseBody | Expr::ResponseHeader(_) => {
                let step = match (&self.current, &self.inner) {
                    (Some(step), _) => step.clone(),
                    (None, Some((_, Some(last)))) => last.clone(),
                    _ => {
                        return Err(
                            "`$statusCode` and `$response` are a step's: a workflow's outputs read its steps' outputs"
                                .to_string(),
                        );
                    }
                };
                match &r.expr {
                    Expr::StatusCode => format!("{step}__response_status"),
                    Expr::ResponseBody => format!("{step}__response_body"),
                    Expr::ResponseHeader(h) => {
                        format!(
                            "({step}__response_headers[{}] | default(none))",
                            quote(&h.to_ascii_lowercase())
                        )
                    }
                    _ => unreachable!(),
                }
            }
            Expr::Outputs(name) => match &self.inner {
                Some((inner, _)) => format!("{}outputs__{}", inner.fields, mangle(name)),
                None if self.outputs.contains(name) => format!("{f}outputs__{}", mangle(name)),
                None => {
                    return Err(format!(
                        "`$outputs.{name}`: workflow `{}` has no output `{name}`",
                        self.frame.workflow
                    ));
                }
            },
            Expr::WorkflowOutput { workflow, name } | Expr::WorkflowInput { workflow, name } => {
                let Some(ran) = self.ran.get(workflow) else {
                    return Err(format!(
                        "`$workflows.{workflow}…`: workflow `{workflow}` does not run before this one: name it in `dependsOn`, or run it as a step (`workflowId: {workflow}`) and read `$steps.…`"
                    ));
                };
                let (kind, names, prefix) = match &r.expr {
                    Expr::WorkflowOutput { .. } => ("output", &ran.outputs, "outputs__"),
                    _ => ("input", &ran.inputs, ""),
                };
                if !names.contains(name) {
                    let known: Vec<&str> = names.iter().map(String::as_str).collect();
                    let hint = did_you_mean(name, known.iter().copied())
                        .map(|h| format!(": {h}"))
                        .unwrap_or_default();
                    return Err(format!(
                        "`$workflows.{workflow}`: workflow `{workflow}` has no {kind} `{name}`{hint}"
                    ));
                }
                format!("{}{prefix}{}", ran.fields, mangle(name))
            }
            Expr::SourceUrl(name) => {
                return Err(format!(
                    "`$sourceDescriptions.{name}.url` is a value only in `operationPath`"
                ));
            }
            Expr::ComponentsParameter(name) => {
                return Err(format!(
                    "`$components.parameters.{name}` is used as `reference:` in a step's `parameters`"
                ));
            }
            Expr::Request(..) | Expr::Url | Expr::Method => {
                let (Some(_), Some(shape)) = (&self.current, &self.request) else {
                    return Err(
                        "`$request`, `$url` and `$method` are what a step that calls an operation sent: read them in its criteria, outputs and actions"
                            .to_string(),
                    );
                };
                match &r.expr {
                    Expr::Method => quote(&shape.method),
                    Expr::Url => {
                        // The server, the path with its parameters filled
                        // in, and the query, as the call builds them.
                        let server = &shape.server;
                        let mut out = vec![format!(
                            "({server}[:-1] if {server} is endingwith('/') else {server})"
                        )];
                        let mut rest = shape.path.as_str();
                        while let Some(open) = rest.find('{') {
                            let Some(close) = rest[open..].find('}') else {
                                break;
                            };
                            out.push(quote(&rest[..open]));
                            let name = &rest[open + 1..open + close];
                            match shape.kept.get(&("path", name.to_string())) {
                                Some(field) => {
                                    out.push(format!("({} | urlencode)", as_sent(field)))
                                }
                                None => out.push(quote(&rest[open..open + close + 1])),
                            }
                            rest = &rest[open + close + 1..];
                        }
                        out.push(quote(rest));
                        let query: Vec<String> = shape
                            .kept
                            .iter()
                            .filter(|((part, _), _)| *part == "query")
                            .map(|((_, name), field)| {
                                format!("{} ~ '=' ~ ({} | urlencode)", quote(name), as_sent(field))
                            })
                            .collect();
                        if !query.is_empty() {
                            out.push(format!("'?' ~ {}", query.join(" ~ '&' ~ ")));
                        }
                        format!("({})", out.join(" ~ "))
                    }
                    Expr::Request(RequestPart::Body, _) => match &shape.body {
                        Some(field) => field.clone(),
                        None => {
                            return Err(
                                "`$request.body`: handoff keeps a body written as one value or template, not one built of parts"
                                    .to_string(),
                            );
                        }
                    },
                    Expr::Request(RequestPart::Header, name)
                        if shape.credentials.contains(&name.to_ascii_lowercase()) =>
                    {
                        return Err(format!(
                            "`$request.header.{name}` carries a credential, which handoff keeps out of fields"
                        ));
                    }
                    Expr::Request(part, name) => {
                        let key = match part {
                            RequestPart::Header => ("header", name.to_ascii_lowercase()),
                            RequestPart::Query => ("query", name.clone()),
                            _ => ("path", name.clone()),
                        };
                        shape
                            .kept
                            .get(&key)
                            .cloned()
                            .unwrap_or_else(|| "none".to_string())
                    }
                    _ => unreachable!(),
                }
            }
        };
        Ok(if r.pointer.is_empty() {
            base
        } else {
            format!("({base} | pointer({}))", quote(&r.pointer))
        })
    }
}

/// What one step's lowering needs to know of the workflow around it.
struct Known {
    inputs: BTreeSet<String>,
    /// Each step's outputs, by step id.
    steps: BTreeMap<String, BTreeSet<String>>,
    outputs: BTreeSet<String>,
    /// Step ids in order.
    order: Vec<String>,
}

impl<'d> Lowering<'d> {
    pub fn new(source: Arc<Source>, root: &'d Node, selection: Selection) -> Lowering<'d> {
        Lowering {
            source,
            root,
            selection,
            diagnostics: Vec::new(),
            sources: Vec::new(),
            fields: IndexMap::new(),
            field_origin: BTreeMap::new(),
            steps: Vec::new(),
            secret: BTreeSet::new(),
            failed_sources: Vec::new(),
            ran: Rc::new(BTreeMap::new()),
            last_request: None,
        }
    }

    fn warning(&mut self, span: Span, message: impl Into<String>) {
        let d = Diagnostic::warning(message).at(&self.source, span);
        self.push(d);
    }

    /// The warnings for what `names` read loosely, at `span`.
    fn notes(&mut self, span: Span, names: &dyn Names) {
        for note in names.take_notes() {
            self.warning(span, note);
        }
    }

    fn error(&mut self, span: Span, message: impl Into<String>) {
        let d = Diagnostic::error(message).at(&self.source, span);
        self.push(d);
    }

    fn error_help(&mut self, span: Span, message: impl Into<String>, help: impl Into<String>) {
        let d = Diagnostic::error(message).at(&self.source, span).help(help);
        self.push(d);
    }

    /// "there is no X `name`", with a did-you-mean or the names there are.
    fn unknown(&mut self, span: Span, what: &str, name: &str, there_are: &str, known: &[String]) {
        let names: Vec<&str> = known.iter().map(String::as_str).collect();
        let help = did_you_mean(name, names.iter().copied())
            .unwrap_or_else(|| format!("{there_are} {}", list(&names)));
        self.error_help(span, format!("{what} `{name}`"), help);
    }

    /// Once per place: a workflow's action, merged into each of its steps,
    /// is wrong once.
    fn push(&mut self, d: Diagnostic) {
        if !self
            .diagnostics
            .iter()
            .any(|o| o.severity == d.severity && o.message == d.message && o.span == d.span)
        {
            self.diagnostics.push(d);
        }
    }

    pub fn run(mut self, wanted: Option<&str>) -> Result<Lowered, Vec<Diagnostic>> {
        let root = self.root;
        let span = root.span;
        match get(root, "arazzo").and_then(Node::as_str) {
            Some(v) if v.starts_with("1.0.") || v.starts_with("1.1.") => {}
            Some(v) => {
                let at = get(root, "arazzo").map_or(span, |n| n.span);
                self.error_help(
                    at,
                    format!("Arazzo {v} is not a version handoff reads"),
                    "handoff reads Arazzo 1.0.x and 1.1.x",
                );
                return Err(self.diagnostics);
            }
            None => {
                self.error(
                    span,
                    "`arazzo:` names the specification's version, as text like `1.0.1`",
                );
                return Err(self.diagnostics);
            }
        }
        let Some(workflows) = get(root, "workflows").and_then(Node::as_seq) else {
            self.error(span, "an Arazzo document lists its `workflows`");
            return Err(self.diagnostics);
        };
        let ids = workflow_ids(root);
        let chosen = match wanted {
            Some(id) => match workflows
                .iter()
                .find(|w| get(w, "workflowId").and_then(Node::as_str) == Some(id))
            {
                Some(w) => w,
                None => {
                    let at = get(root, "workflows").map_or(span, |n| n.span);
                    self.unknown(
                        at,
                        "this document has no workflow",
                        id,
                        "its workflows are",
                        &ids,
                    );
                    return Err(self.diagnostics);
                }
            },
            None if workflows.len() == 1 => &workflows[0],
            None => {
                let names: Vec<&str> = ids.iter().map(String::as_str).collect();
                let at = get(root, "workflows").map_or(span, |n| n.span);
                self.error_help(
                    at,
                    format!(
                        "this document has {} workflows: say which one to run",
                        workflows.len()
                    ),
                    format!("pass `--workflow` with one of {}", list(&names)),
                );
                return Err(self.diagnostics);
            }
        };
        let id = get(chosen, "workflowId")
            .and_then(Node::as_str)
            .unwrap_or("workflow")
            .to_string();
        self.load_sources();
        // `dependsOn`: those workflows run first, each once, in order.
        let mut order = Vec::new();
        self.dependencies(chosen, &mut vec![id.clone()], &mut order);
        let first_of = |w: &Node, ids: &str| {
            get(w, "steps")
                .and_then(Node::as_seq)
                .and_then(|s| s.first())
                .and_then(|s| get(s, "stepId"))
                .and_then(Node::as_str)
                .map_or_else(|| "end".to_string(), |s| format!("{ids}{s}"))
        };
        for (k, (dep_id, dep)) in order.iter().enumerate() {
            let on_end = match order.get(k + 1) {
                Some((next, w)) => first_of(w, &format!("@{next}/")),
                None => first_of(chosen, ""),
            };
            let frame = Frame {
                workflow: dep_id.clone(),
                fields: format!("workflows__{}__", mangle(dep_id)),
                ids: format!("@{dep_id}/"),
                on_end,
                on_fail: None,
                depth: 0,
                chain: vec![dep_id.clone()],
            };
            let inputs = self.inputs(dep, &frame, true);
            let outputs = get(dep, "outputs")
                .and_then(Node::as_map)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, _)| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            self.workflow(dep, &frame, inputs.clone());
            Rc::make_mut(&mut self.ran).insert(
                dep_id.clone(),
                Ran {
                    fields: frame.fields.clone(),
                    inputs,
                    outputs,
                },
            );
        }
        let frame = Frame {
            workflow: id.clone(),
            fields: String::new(),
            ids: String::new(),
            on_end: "end".to_string(),
            on_fail: None,
            depth: 0,
            chain: vec![id.clone()],
        };
        let inputs = self.inputs(chosen, &frame, true);
        self.workflow(chosen, &frame, inputs);
        if self.diagnostics.iter().any(Diagnostic::is_error) {
            return Err(self.diagnostics);
        }
        let apis = self
            .sources
            .iter()
            .map(|s| (s.full.clone(), s.api.clone()))
            .collect();
        let warnings = std::mem::take(&mut self.diagnostics);
        Ok(Lowered {
            root: self.flow(chosen, &id),
            apis,
            warnings,
        })
    }

    /// The document's workflow `id`, or an error at `span` that names the
    /// ones it has.
    fn find_workflow(&mut self, id: &str, span: Span) -> Option<&'d Node> {
        let root = self.root;
        let found = get(root, "workflows")
            .and_then(Node::as_seq)
            .and_then(|ws| {
                ws.iter()
                    .find(|w| get(w, "workflowId").and_then(Node::as_str) == Some(id))
            });
        if found.is_none() {
            let ids = workflow_ids(root);
            self.unknown(
                span,
                "this document has no workflow",
                id,
                "its workflows are",
                &ids,
            );
        }
        found
    }

    /// The workflows `workflow` depends on, each after its own
    /// dependencies, each once; `path`: the chain that led here.
    fn dependencies(
        &mut self,
        workflow: &'d Node,
        path: &mut Vec<String>,
        order: &mut Vec<(String, &'d Node)>,
    ) {
        let Some(list_node) = get(workflow, "dependsOn") else {
            return;
        };
        let Some(items) = list_node.as_seq() else {
            self.error(list_node.span, "`dependsOn` lists workflow ids");
            return;
        };
        for item in items {
            let Some(dep) = item.as_str() else {
                self.error(item.span, "`dependsOn` lists workflow ids");
                continue;
            };
            if let Some(rest) = dep.strip_prefix("$sourceDescriptions.") {
                let source = rest.split('.').next().unwrap_or_default();
                if self.sources.iter().any(|s| s.name == mangle(source)) {
                    self.error(
                        item.span,
                        format!("source `{source}` is an OpenAPI description: it has no workflows to depend on"),
                    );
                } else {
                    self.error(
                        item.span,
                        "workflows of other Arazzo documents are not supported yet",
                    );
                }
                continue;
            }
            if path.iter().any(|p| p == dep) {
                self.error(
                    item.span,
                    format!(
                        "workflow `{dep}` would depend on itself: {} → {dep}",
                        path.join(" → ")
                    ),
                );
                continue;
            }
            if order.iter().any(|(o, _)| o == dep) {
                continue;
            }
            let Some(found) = self.find_workflow(dep, item.span) else {
                continue;
            };
            path.push(dep.to_string());
            self.dependencies(found, path, order);
            path.pop();
            order.push((dep.to_string(), found));
        }
    }

    /// The lowered flow's top level.
    fn flow(mut self, workflow: &Node, id: &str) -> Node {
        let span = workflow.span;
        let mut fields = std::mem::take(&mut self.fields);
        for name in &self.secret {
            if let Some(decl) = fields.get_mut(name)
                && let NodeValue::Map(entries) = &mut decl.value
                && !entries.iter().any(|(k, _)| k.as_str() == Some("secret"))
            {
                entries.push((text(span, "secret"), yes(span)));
            }
        }
        let mut sources = Vec::new();
        for s in &self.sources {
            let mut entries = vec![("openapi", text(s.span, s.path.clone()))];
            let server_field = format!("{}_url", s.name);
            entries.push(("server", text(s.span, format!("{{{{ {server_field} }}}}"))));
            if !s.credentials.is_empty() {
                let creds = s
                    .credentials
                    .iter()
                    .map(|(scheme, (t, at))| (scheme.clone(), text(*at, t.clone())))
                    .collect();
                entries.push(("credentials", owned_map(s.span, creds)));
            }
            sources.push((s.name.clone(), map(s.span, entries)));
        }
        let mut top = vec![("flow", text(span, id))];
        let description = get(workflow, "summary")
            .or_else(|| get(workflow, "description"))
            .and_then(Node::as_str);
        if let Some(d) = description {
            top.push(("description", text(span, d.trim())));
        }
        top.push(("fields", owned_map(span, fields.into_iter().collect())));
        if !sources.is_empty() {
            top.push(("sources", owned_map(span, sources)));
        }
        top.push(("steps", seq(span, self.steps)));
        map(span, top)
    }

    /// Reads `sourceDescriptions`: each OpenAPI one loaded, its server a
    /// field the operator sets (`NAME_URL`).
    fn load_sources(&mut self) {
        let Some(list_node) = get(self.root, "sourceDescriptions").and_then(Node::as_seq) else {
            let at = self.root.span;
            self.error(at, "an Arazzo document lists its `sourceDescriptions`");
            return;
        };
        let dir = std::path::Path::new(&self.source.name)
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        for node in list_node {
            let (Some(name), Some(url_node)) =
                (get(node, "name").and_then(Node::as_str), get(node, "url"))
            else {
                self.error(node.span, "a source description has a `name` and a `url`");
                continue;
            };
            let kind = get(node, "type")
                .and_then(Node::as_str)
                .unwrap_or("openapi");
            if kind != "openapi" {
                let at = get(node, "type").map_or(node.span, |n| n.span);
                self.error_help(
                    at,
                    format!("source `{name}` is of type `{kind}`, which handoff does not run yet"),
                    "handoff runs the operations of `openapi` sources",
                );
                continue;
            }
            let url = url_node.as_str().unwrap_or_default();
            let given = self
                .selection
                .sources
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, f)| f.clone());
            let path = match given {
                Some(file) => std::path::absolute(&file)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or(file),
                None if url.starts_with("http://") || url.starts_with("https://") => {
                    self.error_help(
                        url_node.span,
                        format!("source `{name}` is a URL, and handoff reads only local files"),
                        format!("download it and pass `--source {name}=FILE`"),
                    );
                    self.failed_sources.push(name.to_string());
                    continue;
                }
                None => url.strip_prefix("file://").unwrap_or(url).to_string(),
            };
            let full = crate::language::openapi::load::tidy(&dir.join(&path));
            let api = match Api::load(&full, &full.to_string_lossy()) {
                Ok(api) => Arc::new(api),
                Err(e) => {
                    let d = e.diagnostic(&self.source, url_node.span, format!("source `{name}`"));
                    self.diagnostics.push(d);
                    self.failed_sources.push(name.to_string());
                    continue;
                }
            };
            let mangled = mangle(name);
            let server = api.default_server().map(str::to_string);
            let env = format!("{}_URL", mangled.to_ascii_uppercase());
            let mut decl = vec![
                ("type", text(node.span, "text")),
                ("env", text(node.span, env)),
            ];
            if let Some(server) = server {
                decl.push(("default", text(node.span, server)));
            }
            decl.push((
                "description",
                text(
                    node.span,
                    format!("Where source `{name}`'s operations are sent."),
                ),
            ));
            self.declare(
                &format!("{mangled}_url"),
                &format!("source `{name}`"),
                map(node.span, decl),
                node.span,
            );
            self.sources.push(SourceDesc {
                name: mangled,
                path,
                api,
                full,
                span: node.span,
                credentials: IndexMap::new(),
            });
        }
    }

    /// Declares a field, once; two names that mangle alike are an error.
    fn declare(&mut self, name: &str, origin: &str, decl: Node, span: Span) {
        if let Some(other) = self.field_origin.get(name)
            && other != origin
        {
            let other = other.clone();
            self.error(
                span,
                format!("{origin} and {other} would both be field `{name}`: rename one"),
            );
            return;
        }
        self.field_origin
            .insert(name.to_string(), origin.to_string());
        self.fields.insert(name.to_string(), decl);
    }

    /// A workflow's `inputs` schema, with `$ref`s into `components/inputs`.
    fn resolve_schema<'n>(&mut self, node: &'n Node) -> Option<&'n Node>
    where
        'd: 'n,
    {
        let mut node = node;
        for _ in 0..16 {
            let Some(r) = get(node, "$ref").and_then(Node::as_str) else {
                return Some(node);
            };
            let Some(pointer) = r.strip_prefix('#') else {
                self.error(
                    node.span,
                    format!("`$ref: {r}` points outside this document"),
                );
                return None;
            };
            let mut at = self.root;
            for token in pointer.split('/').skip(1) {
                let token = token.replace("~1", "/").replace("~0", "~");
                match get(at, &token) {
                    Some(next) => at = next,
                    None => {
                        self.error(
                            node.span,
                            format!("`$ref: {r}` names nothing in this document"),
                        );
                        return None;
                    }
                }
            }
            node = at;
        }
        self.error(node.span, "`$ref`s go round in a circle");
        None
    }

    /// Declares a workflow's inputs as fields: the run's inputs at the top,
    /// fields the calling step sets when inlined.
    fn inputs(&mut self, workflow: &'d Node, frame: &Frame, top: bool) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let Some(schema) = get(workflow, "inputs") else {
            return names;
        };
        let Some(schema) = self.resolve_schema(schema) else {
            return names;
        };
        let required: BTreeSet<&str> = get(schema, "required")
            .and_then(Node::as_seq)
            .map(|r| r.iter().filter_map(Node::as_str).collect())
            .unwrap_or_default();
        let Some(props) = get(schema, "properties").and_then(Node::as_map) else {
            return names;
        };
        for (key, prop) in props {
            let Some(name) = key.as_str() else { continue };
            names.insert(name.to_string());
            let prop = self.resolve_schema(prop).unwrap_or(prop);
            let ty = match get(prop, "type").and_then(Node::as_str) {
                Some("string") => "text",
                Some("number" | "integer") => "number",
                Some("boolean") => "boolean",
                _ => "json",
            };
            let secret = get(prop, "format").and_then(Node::as_str) == Some("password")
                || matches!(
                    get(prop, "x-secret").map(|n| &n.value),
                    Some(NodeValue::Bool(true))
                );
            let default = get(prop, "default").cloned();
            let mut decl = Vec::new();
            let optional = !required.contains(name);
            let ty = if optional && default.is_none() {
                "json"
            } else {
                ty
            };
            decl.push(("type", text(key.span, ty)));
            if top {
                decl.push(("input", yes(key.span)));
            }
            if secret {
                decl.push(("secret", yes(key.span)));
            }
            match default {
                Some(d) => decl.push(("default", d)),
                None if optional || !top => decl.push(("default", null(key.span))),
                None => {}
            }
            if let Some(d) = get(prop, "description").and_then(Node::as_str) {
                decl.push(("description", text(key.span, d.trim())));
            }
            let field = format!("{}{}", frame.fields, mangle(name));
            self.declare(
                &field,
                &format!("input `{name}` of workflow `{}`", frame.workflow),
                map(key.span, decl),
                key.span,
            );
        }
        names
    }

    /// What the workflow's steps and outputs are named, before any is lowered.
    fn known(&mut self, workflow: &'d Node, inputs: BTreeSet<String>) -> Known {
        let mut known = Known {
            inputs,
            steps: BTreeMap::new(),
            outputs: BTreeSet::new(),
            order: Vec::new(),
        };
        for step in get(workflow, "steps")
            .and_then(Node::as_seq)
            .unwrap_or_default()
        {
            let Some(id) = get(step, "stepId").and_then(Node::as_str) else {
                continue;
            };
            let outs = get(step, "outputs")
                .and_then(Node::as_map)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, _)| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            known.steps.insert(id.to_string(), outs);
            known.order.push(id.to_string());
        }
        if let Some(outs) = get(workflow, "outputs").and_then(Node::as_map) {
            known.outputs = outs
                .iter()
                .filter_map(|(k, _)| k.as_str().map(str::to_string))
                .collect();
        }
        known
    }

    /// Lowers a workflow's steps; its inputs are declared already.
    fn workflow(&mut self, workflow: &'d Node, frame: &Frame, inputs: BTreeSet<String>) {
        let known = self.known(workflow, inputs);
        let steps = get(workflow, "steps")
            .and_then(Node::as_seq)
            .unwrap_or_default();
        if steps.is_empty() {
            self.error(
                workflow.span,
                format!("workflow `{}` has no `steps`", frame.workflow),
            );
            return;
        }
        // `@` is not in Arazzo's step ids: this cannot be one of them.
        let end_id = format!("{}@outputs", frame.ids);
        let has_outputs = !known.outputs.is_empty();
        let finish = if has_outputs {
            end_id.clone()
        } else {
            frame.on_end.clone()
        };
        let mut seen = BTreeSet::new();
        for (i, step) in steps.iter().enumerate() {
            let Some(id) = get(step, "stepId").and_then(Node::as_str) else {
                self.error(step.span, "a step has a `stepId`");
                continue;
            };
            if !seen.insert(id.to_string()) {
                let at = get(step, "stepId").map_or(step.span, |n| n.span);
                self.error(
                    at,
                    format!(
                        "step id `{id}` is used twice in workflow `{}`",
                        frame.workflow
                    ),
                );
                continue;
            }
            if id == "end" {
                let at = get(step, "stepId").map_or(step.span, |n| n.span);
                self.error(
                    at,
                    "`end` is a step id handoff keeps for itself: rename the step",
                );
                continue;
            }
            let next = match known.order.get(i + 1) {
                Some(n) => format!("{}{n}", frame.ids),
                None => finish.clone(),
            };
            self.step(workflow, step, id, &next, &finish, frame, &known);
        }
        if has_outputs {
            let names = StepNames::new(frame, &known, &self.ran);
            let outs = get(workflow, "outputs")
                .and_then(Node::as_map)
                .unwrap_or_default();
            let mut sets = Vec::new();
            for (key, value) in outs {
                let Some(name) = key.as_str() else { continue };
                let field = format!("{}outputs__{}", frame.fields, mangle(name));
                self.declare(
                    &field,
                    &format!("output `{name}` of workflow `{}`", frame.workflow),
                    declaration(key.span, "json", Some(null(key.span))),
                    key.span,
                );
                if let Some(v) = self.value(value, &names) {
                    sets.push((field, v));
                }
            }
            let span = get(workflow, "outputs").map_or(workflow.span, |n| n.span);
            let mut entries = vec![
                ("id", text(span, end_id)),
                ("set", owned_map(span, sets)),
                (
                    "description",
                    text(
                        span,
                        format!("the outputs of workflow `{}`", frame.workflow),
                    ),
                ),
            ];
            entries.push(("goto", text(span, frame.on_end.clone())));
            self.steps.push(map(span, entries));
        }
    }

    /// A value of the document (a literal, an expression, or a structure
    /// holding expressions) as a node the flow reads as a template.
    fn value(&mut self, node: &Node, names: &dyn Names) -> Option<Node> {
        match &node.value {
            NodeValue::Str(s) => {
                match expr::value(s, names).inspect(|_| self.notes(node.span, names)) {
                    Ok(Written::Expr(t) | Written::Text(t)) => Some(text(node.span, t)),
                    Ok(Written::Plain) => Some(node.clone()),
                    Err(message) => {
                        self.error(node.span, message);
                        None
                    }
                }
            }
            NodeValue::Map(entries) => {
                let mut out = Vec::new();
                for (k, v) in entries {
                    out.push((k.clone(), self.value(v, names)?));
                }
                Some(Node {
                    span: node.span,
                    value: NodeValue::Map(out),
                })
            }
            NodeValue::Seq(items) => {
                let mut out = Vec::new();
                for v in items {
                    out.push(self.value(v, names)?);
                }
                Some(Node {
                    span: node.span,
                    value: NodeValue::Seq(out),
                })
            }
            _ => Some(node.clone()),
        }
    }

    /// A list of criteria as one handoff condition (`true` when empty).
    fn criteria(&mut self, list_node: Option<&Node>, names: &dyn Names) -> Option<String> {
        let Some(list_node) = list_node else {
            return Some("true".to_string());
        };
        let Some(items) = list_node.as_seq() else {
            self.error(list_node.span, "criteria are a list of `condition`s");
            return None;
        };
        let mut parts = Vec::new();
        for item in items {
            let Some(condition) = get(item, "condition").and_then(Node::as_str) else {
                self.error(item.span, "a criterion has a `condition`");
                return None;
            };
            let at = get(item, "condition").map_or(item.span, |n| n.span);
            let kind_node = get(item, "type");
            let kind = match kind_node.map(|n| &n.value) {
                None => "simple".to_string(),
                Some(NodeValue::Str(s)) => s.clone(),
                Some(NodeValue::Map(_)) => {
                    let t = kind_node
                        .and_then(|n| get(n, "type"))
                        .and_then(Node::as_str)
                        .unwrap_or("");
                    let v = kind_node
                        .and_then(|n| get(n, "version"))
                        .and_then(Node::as_str)
                        .unwrap_or("");
                    if t == "jsonpath" && v == "draft-goessner-dispatch-jsonpath-00" {
                        // The draft's filters (`$[?(@.a == 1)]`) are RFC
                        // 9535's too; its script expressions are not, and
                        // fail to parse below.
                        self.warning(
                            kind_node.map_or(at, |n| n.span),
                            "JSONPath `draft-goessner-dispatch-jsonpath-00` is evaluated as RFC 9535 JSONPath, which handoff implements",
                        );
                    }
                    t.to_string()
                }
                _ => String::new(),
            };
            let context = get(item, "context").and_then(Node::as_str);
            let part = match kind.as_str() {
                "simple" => expr::condition(condition, names),
                "regex" | "jsonpath" => {
                    let Some(context) = context else {
                        self.error(item.span, format!("a `{kind}` criterion needs a `context`"));
                        return None;
                    };
                    let value = expr::parse(context.trim(), false).and_then(|(r, used)| {
                        if used == context.trim().len() {
                            names.read(&r)
                        } else {
                            Err(format!("`{context}` is not one runtime expression"))
                        }
                    });
                    value.and_then(|v| {
                        if kind == "regex" {
                            if let Err(e) = regex::Regex::new(
                                condition
                                    .strip_prefix('/')
                                    .and_then(|r| r.rsplit_once('/'))
                                    .map_or(condition, |(b, _)| b),
                            ) {
                                return Err(format!("invalid regular expression: {e}"));
                            }
                            Ok(format!("({v}) | matches({})", quote(condition)))
                        } else {
                            jsonpath_condition(condition, &v, names)
                        }
                    })
                }
                "xpath" => Err(
                    "`xpath` criteria are not supported yet: handoff reads JSON answers"
                        .to_string(),
                ),
                other => Err(format!(
                    "`{other}` is not a criterion type: use `simple`, `regex` or `jsonpath`"
                )),
            };
            self.notes(at, names);
            match part {
                Ok(p) => parts.push(if items.len() > 1 { format!("({p})") } else { p }),
                Err(message) => {
                    self.error(at, message);
                    return None;
                }
            }
        }
        Some(if parts.is_empty() {
            "true".to_string()
        } else {
            parts.join(" and ")
        })
    }

    /// The actions of a step (`onSuccess`, `onFailure`), then the
    /// workflow's of the same kind whose names the step does not reuse,
    /// each reference resolved into `components`.
    fn actions(
        &mut self,
        workflow: &'d Node,
        step: &'d Node,
        key: &str,
        workflow_key: &str,
        components: &str,
    ) -> Vec<&'d Node> {
        let mut out: Vec<&'d Node> = Vec::new();
        let mut names = BTreeSet::new();
        for (owner, k) in [(step, key), (workflow, workflow_key)] {
            for node in get(owner, k).and_then(Node::as_seq).unwrap_or_default() {
                let resolved = match get(node, "reference").and_then(Node::as_str) {
                    Some(r) => {
                        let prefix = format!("$components.{components}.");
                        let found = r.strip_prefix(&prefix).and_then(|name| {
                            get(self.root, "components")
                                .and_then(|c| get(c, components))
                                .and_then(|c| get(c, name))
                        });
                        match found {
                            Some(n) => n,
                            None => {
                                self.error(
                                    node.span,
                                    format!("`{r}` names no `components.{components}` entry"),
                                );
                                continue;
                            }
                        }
                    }
                    None => node,
                };
                let name = get(resolved, "name")
                    .and_then(Node::as_str)
                    .unwrap_or_default()
                    .to_string();
                if names.insert(name) {
                    out.push(resolved);
                }
            }
        }
        out
    }

    /// Lowers one step.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        workflow: &'d Node,
        step: &'d Node,
        id: &str,
        next: &str,
        finish: &str,
        frame: &Frame,
        known: &Known,
    ) {
        let span = step.span;
        let sid = format!("{}{id}", frame.ids);
        let f = format!("{}{}", frame.fields, mangle(id));
        let origin = format!("step `{id}` of workflow `{}`", frame.workflow);
        let target_count = ["operationId", "operationPath", "workflowId"]
            .iter()
            .filter(|k| get(step, k).is_some())
            .count();
        if target_count != 1 {
            if target_count == 0 && get(step, "x-operation").is_some() {
                self.error_help(span, format!("step `{id}` calls an `x-operation`, Redocly's extension, which handoff does not run"), "name an operation of a source description (`operationId` or `operationPath`)");
            } else {
                self.error(span, format!("step `{id}` names exactly one of `operationId`, `operationPath` and `workflowId`"));
            }
            return;
        }
        let why = format!("{f}__failure");
        self.declare(
            &why,
            &origin,
            declaration(span, "text", Some(text(span, ""))),
            span,
        );
        // Its actions, the workflow's merged in: read once, for what they
        // need kept (`$request`) and for their decisions below.
        let success_actions = self.actions(
            workflow,
            step,
            "onSuccess",
            "successActions",
            "successActions",
        );
        let failure_actions = self.actions(
            workflow,
            step,
            "onFailure",
            "failureActions",
            "failureActions",
        );
        // A step that runs a workflow: that workflow's steps, inlined.
        let mut inner_frame = None;
        let mut request_shape = None;
        let mut last_call = None;
        if let Some(wf_node) = get(step, "workflowId") {
            let Some(wf_id) = wf_node.as_str() else {
                self.error(wf_node.span, "`workflowId` is text");
                return;
            };
            if wf_id.starts_with('$') {
                self.error(
                    wf_node.span,
                    "workflows of other Arazzo documents are not supported yet",
                );
                return;
            }
            let Some(inner) = self.find_workflow(wf_id, wf_node.span) else {
                return;
            };
            if frame.chain.iter().any(|w| w == wf_id) || frame.depth >= MAX_NESTING {
                self.error(
                    wf_node.span,
                    format!(
                        "workflow `{wf_id}` would run itself: {} → {wf_id}",
                        frame.chain.join(" → ")
                    ),
                );
                return;
            }
            let mut chain = frame.chain.clone();
            chain.push(wf_id.to_string());
            let inner_f = Frame {
                workflow: wf_id.to_string(),
                fields: format!("{f}__"),
                ids: format!("{sid}/"),
                on_end: format!("{sid}.criteria"),
                on_fail: Some((format!("{sid}.failed"), why.clone())),
                depth: frame.depth + 1,
                chain,
            };
            last_call = get(inner, "steps")
                .and_then(Node::as_seq)
                .and_then(|s| s.last())
                .and_then(|s| get(s, "stepId"))
                .and_then(Node::as_str)
                .map(|last| format!("{}{}", inner_f.fields, mangle(last)));
            // The parameters set the inner workflow's inputs.
            let inner_inputs = self.inputs(inner, &inner_f, false);
            let names = StepNames::new(frame, known, &self.ran);
            let mut sets = Vec::new();
            for p in &self.parameters(workflow, step) {
                let Some(name) = get(p, "name").and_then(Node::as_str) else {
                    continue;
                };
                if !inner_inputs.contains(name) {
                    let names_list: Vec<&str> = inner_inputs.iter().map(String::as_str).collect();
                    let help = did_you_mean(name, names_list.iter().copied())
                        .unwrap_or_else(|| format!("its inputs are {}", list(&names_list)));
                    self.error_help(
                        p.span,
                        format!("workflow `{wf_id}` has no input `{name}`"),
                        help,
                    );
                    continue;
                }
                let Some(value) = get(p, "value") else {
                    self.error(p.span, "a parameter has a `value`");
                    continue;
                };
                if let Some(v) = self.value(value, &names) {
                    sets.push((format!("{}{}", inner_f.fields, mangle(name)), v));
                }
            }
            let first = format!(
                "{}/{}",
                sid,
                get(inner, "steps")
                    .and_then(Node::as_seq)
                    .and_then(|s| s.first())
                    .and_then(|s| get(s, "stepId"))
                    .and_then(Node::as_str)
                    .unwrap_or("")
            );
            let mut entries = vec![("id", text(span, sid.clone()))];
            if sets.is_empty() {
                entries.push(("log", text(span, format!("workflow `{wf_id}`"))));
            } else {
                entries.push(("set", owned_map(span, sets)));
            }
            entries.push(("goto", text(span, first)));
            if let Some(d) = get(step, "description").and_then(Node::as_str) {
                entries.push(("description", text(span, d.trim())));
            }
            self.steps.push(map(span, entries));
            self.workflow(inner, &inner_f, inner_inputs);
            inner_frame = Some(inner_f);
        } else {
            // A step that calls an operation.
            let Some(call) = self.call(workflow, step, id, frame, known, &f) else {
                return;
            };
            let sent = self.last_request.take();
            let keep = reads_request(step)
                || success_actions
                    .iter()
                    .chain(&failure_actions)
                    .any(|a| reads_request(a));
            self.declare(
                &format!("{f}__response_status"),
                &origin,
                declaration(span, "number", Some(int(span, 0))),
                span,
            );
            self.declare(
                &format!("{f}__response_headers"),
                &origin,
                declaration(span, "headers", None),
                span,
            );
            self.declare(
                &format!("{f}__response_body"),
                &origin,
                declaration(span, "json", Some(null(span))),
                span,
            );
            let mut entries = vec![("id", text(span, sid.clone())), ("call", call)];
            entries.push((
                "output",
                map(
                    span,
                    vec![
                        ("status", text(span, format!("{f}__response_status"))),
                        ("headers", text(span, format!("{f}__response_headers"))),
                        ("body", text(span, format!("{f}__response_body"))),
                    ],
                ),
            ));
            let after_call = if keep && sent.is_some() {
                format!("{sid}.request")
            } else {
                format!("{sid}.criteria")
            };
            entries.push(("goto", text(span, after_call)));
            entries.push(("on_error", text(span, format!("{sid}.error"))));
            if let Some(d) = get(step, "description").and_then(Node::as_str) {
                entries.push(("description", text(span, d.trim())));
            }
            self.steps.push(map(span, entries));
            // A request that fails (no answer, or an answer its description
            // does not allow) is a failure of the step, with why.
            self.steps.push(map(
                span,
                vec![
                    ("id", text(span, format!("{sid}.error"))),
                    (
                        "set",
                        owned_map(span, vec![(why.clone(), text(span, "{{ error.message }}"))]),
                    ),
                    ("goto", text(span, format!("{sid}.failed"))),
                ],
            ));
            // What was sent, for `$request`, `$url` and `$method`: the
            // same templates the call rendered, rendered again.
            if keep && let Some(mut sent) = sent {
                // One field per value sent: `set` writes scalars and
                // templates, and a value the step did not send is `none`.
                let mut sets: IndexMap<String, Node> = IndexMap::new();
                for (location, name, value) in sent.parts {
                    let Some(part) = location_field(&location) else {
                        continue;
                    };
                    if matches!(value.value, NodeValue::Map(_) | NodeValue::Seq(_)) {
                        continue;
                    }
                    let key = if part == "header" {
                        name.to_ascii_lowercase()
                    } else {
                        name
                    };
                    let field = format!("{f}__request_{part}__{}", mangle(&key));
                    sent.shape.kept.insert((part, key), field.clone());
                    sets.insert(field, value);
                }
                if let Some(body) = sent.body
                    && !matches!(body.value, NodeValue::Map(_) | NodeValue::Seq(_))
                {
                    let field = format!("{f}__request_body");
                    sent.shape.body = Some(field.clone());
                    sets.insert(field, body);
                }
                for field in sets.keys() {
                    self.declare(
                        field,
                        &origin,
                        declaration(span, "json", Some(null(span))),
                        span,
                    );
                }
                self.steps.push(map(
                    span,
                    vec![
                        ("id", text(span, format!("{sid}.request"))),
                        ("set", owned_map(span, sets.into_iter().collect())),
                        ("goto", text(span, format!("{sid}.criteria"))),
                    ],
                ));
                request_shape = Some(sent.shape);
            }
        }
        let mut names = StepNames::new(frame, known, &self.ran);
        if inner_frame.is_none() {
            names.current = Some(f.clone());
            names.request = request_shape;
        }
        names.inner = inner_frame.as_ref().map(|fr| (fr, last_call.clone()));
        // Success: the criteria (all of them), or else a 2xx answer.
        let criteria_node = get(step, "successCriteria");
        let condition = match criteria_node {
            Some(_) => self.criteria(criteria_node, &names),
            None if inner_frame.is_some() => Some("true".to_string()),
            None => Some(format!(
                "{f}__response_status >= 200 and {f}__response_status < 300"
            )),
        };
        let Some(condition) = condition else { return };
        let outputs: Vec<(&Node, &Node)> = get(step, "outputs")
            .and_then(Node::as_map)
            .map(|m| m.iter().map(|(k, v)| (k, v)).collect())
            .unwrap_or_default();
        let after_outputs = if success_actions.is_empty() {
            next.to_string()
        } else {
            format!("{sid}.on_success")
        };
        let retries = failure_actions
            .iter()
            .any(|a| get(a, "type").and_then(Node::as_str) == Some("retry"));
        let after_criteria = if outputs.is_empty() && !retries {
            after_outputs.clone()
        } else {
            format!("{sid}.outputs")
        };
        let cspan = criteria_node.map_or(span, |n| n.span);
        let unmet = criteria_node
            .and_then(Node::as_seq)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|c| get(c, "condition").and_then(Node::as_str))
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .map(|s| format!("its success criteria were not met: {s}"))
            .unwrap_or_else(|| {
                if inner_frame.is_some() {
                    "its workflow failed".to_string()
                } else {
                    format!("it was answered {{{{ {f}__response_status }}}}, not 2xx")
                }
            });
        self.steps.push(map(
            cspan,
            vec![
                ("id", text(cspan, format!("{sid}.criteria"))),
                (
                    "decision",
                    seq(
                        cspan,
                        vec![
                            map(
                                cspan,
                                vec![
                                    ("when", text(cspan, condition)),
                                    ("goto", text(cspan, after_criteria.clone())),
                                ],
                            ),
                            map(
                                cspan,
                                vec![("otherwise", text(cspan, format!("{sid}.unmet")))],
                            ),
                        ],
                    ),
                ),
            ],
        ));
        self.steps.push(map(
            cspan,
            vec![
                ("id", text(cspan, format!("{sid}.unmet"))),
                (
                    "set",
                    owned_map(cspan, vec![(why.clone(), text(cspan, unmet))]),
                ),
                ("goto", text(cspan, format!("{sid}.failed"))),
            ],
        ));
        let tries = format!("{f}__tries");
        if retries {
            self.declare(
                &tries,
                &origin,
                declaration(span, "number", Some(int(span, 0))),
                span,
            );
        }
        if after_criteria == format!("{sid}.outputs") {
            let ospan = get(step, "outputs").map_or(span, |n| n.span);
            let mut sets = Vec::new();
            for (key, value) in &outputs {
                let Some(name) = key.as_str() else { continue };
                let field = format!("{f}__{}", mangle(name));
                self.declare(
                    &field,
                    &format!("output `{name}` of step `{id}`"),
                    declaration(key.span, "json", Some(null(key.span))),
                    key.span,
                );
                if let Some(v) = self.value(value, &names) {
                    sets.push((field, v));
                }
            }
            if retries {
                // A step that succeeds starts its retries afresh next time.
                sets.push((tries.clone(), int(ospan, 0)));
            }
            self.steps.push(map(
                ospan,
                vec![
                    ("id", text(ospan, format!("{sid}.outputs"))),
                    ("set", owned_map(ospan, sets)),
                    ("goto", text(ospan, after_outputs.clone())),
                ],
            ));
        }
        if !success_actions.is_empty() {
            let branches = self.dispatch(
                &success_actions,
                &names,
                frame,
                finish,
                &sid,
                &f,
                false,
                next,
            );
            if let Some(branches) = branches {
                let aspan = get(step, "onSuccess").map_or(span, |n| n.span);
                self.steps.push(map(
                    aspan,
                    vec![
                        ("id", text(aspan, format!("{sid}.on_success"))),
                        ("decision", seq(aspan, branches)),
                    ],
                ));
            }
        }
        // Failure: the actions in order, then the workflow fails.
        let fspan = get(step, "onFailure").map_or(span, |n| n.span);
        let failed_end = format!("{sid}.fail");
        let branches = self
            .dispatch(
                &failure_actions,
                &names,
                frame,
                finish,
                &sid,
                &f,
                true,
                &failed_end,
            )
            .unwrap_or_default();
        if branches.len() > 1 {
            self.steps.push(map(
                fspan,
                vec![
                    ("id", text(fspan, format!("{sid}.failed"))),
                    ("decision", seq(fspan, branches)),
                ],
            ));
        } else {
            self.steps.push(map(
                fspan,
                vec![
                    ("id", text(fspan, format!("{sid}.failed"))),
                    (
                        "log",
                        text(fspan, format!("step `{id}` failed: {{{{ {why} }}}}")),
                    ),
                    ("goto", text(fspan, failed_end.clone())),
                ],
            ));
        }
        self.fail_step(&failed_end, fspan, frame, id, &why);
    }

    /// The end of a failed workflow: the run fails, or the calling step does.
    fn fail_step(&mut self, at: &str, span: Span, frame: &Frame, id: &str, why: &str) {
        match &frame.on_fail {
            None => self.steps.push(map(
                span,
                vec![
                    ("id", text(span, at)),
                    (
                        "fail",
                        text(
                            span,
                            format!(
                                "step `{id}` of workflow `{}` failed: {{{{ {why} }}}}",
                                frame.workflow
                            ),
                        ),
                    ),
                ],
            )),
            Some((target, outer_why)) => self.steps.push(map(
                span,
                vec![
                    ("id", text(span, at)),
                    (
                        "set",
                        owned_map(
                            span,
                            vec![(
                                outer_why.clone(),
                                text(
                                    span,
                                    format!(
                                        "workflow `{}` failed at step `{id}`: {{{{ {why} }}}}",
                                        frame.workflow
                                    ),
                                ),
                            )],
                        ),
                    ),
                    ("goto", text(span, target.clone())),
                ],
            )),
        }
    }

    /// Decision branches for actions, in order, then `otherwise`.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        actions: &[&'d Node],
        names: &StepNames,
        frame: &Frame,
        finish: &str,
        sid: &str,
        f: &str,
        failure: bool,
        otherwise: &str,
    ) -> Option<Vec<Node>> {
        let mut branches = Vec::new();
        let mut all_caught = false;
        for (k, action) in actions.iter().enumerate() {
            let span = action.span;
            let name = get(action, "name")
                .and_then(Node::as_str)
                .unwrap_or("action");
            let Some(kind) = get(action, "type").and_then(Node::as_str) else {
                self.error(span, format!("action `{name}` has no `type`"));
                return None;
            };
            let condition = self.criteria(get(action, "criteria"), names)?;
            if get(action, "workflowId").is_some() {
                let at = get(action, "workflowId").map_or(span, |n| n.span);
                self.error_help(
                    at,
                    format!(
                        "action `{name}` goes to a workflow, which handoff does not support yet"
                    ),
                    "run the workflow as a step (`workflowId:`) and `goto` that step",
                );
                return None;
            }
            let target = match (kind, get(action, "stepId").and_then(Node::as_str)) {
                ("end", _) if failure => format!("{sid}.fail"),
                ("end", _) => finish.to_string(),
                ("goto", Some(step)) => {
                    if !names.steps.contains_key(step) {
                        let ids: Vec<&str> = names.steps.keys().map(String::as_str).collect();
                        let help = did_you_mean(step, ids.iter().copied())
                            .unwrap_or_else(|| format!("its steps are {}", list(&ids)));
                        let at = get(action, "stepId").map_or(span, |n| n.span);
                        self.error_help(
                            at,
                            format!("workflow `{}` has no step `{step}`", frame.workflow),
                            help,
                        );
                        return None;
                    }
                    format!("{}{step}", frame.ids)
                }
                ("goto", None) => {
                    self.error(span, format!("`goto` action `{name}` needs a `stepId`"));
                    return None;
                }
                ("retry", Some(_)) => {
                    let at = get(action, "stepId").map_or(span, |n| n.span);
                    self.error_help(at, format!("`retry` action `{name}` runs step first, which handoff does not support yet"), "drop `stepId` to retry the step itself");
                    return None;
                }
                ("retry", None) if failure => {
                    let limit = match get(action, "retryLimit").map(|n| &n.value) {
                        None => 1,
                        Some(NodeValue::Int(n)) if *n >= 0 => *n,
                        Some(_) => {
                            self.error(span, "`retryLimit` is a whole number, 0 or more");
                            return None;
                        }
                    };
                    let after = match get(action, "retryAfter").map(|n| &n.value) {
                        None => 0.0,
                        Some(NodeValue::Int(n)) if *n >= 0 => *n as f64,
                        Some(NodeValue::Float(x)) if *x >= 0.0 => *x,
                        Some(_) => {
                            self.error(span, "`retryAfter` is a number of seconds, 0 or more");
                            return None;
                        }
                    };
                    let retry = format!("{sid}.retry.{}", k + 1);
                    let wait = format!("{sid}.wait.{}", k + 1);
                    let tries = format!("{f}__tries");
                    self.steps.push(map(
                        span,
                        vec![
                            ("id", text(span, retry.clone())),
                            (
                                "set",
                                owned_map(
                                    span,
                                    vec![(
                                        tries.clone(),
                                        text(span, format!("{{{{ {tries} + 1 }}}}")),
                                    )],
                                ),
                            ),
                            ("goto", text(span, wait.clone())),
                        ],
                    ));
                    // `Retry-After`, when the answer sends one, overrules `retryAfter`.
                    self.steps.push(map(
                        span,
                        vec![
                            ("id", text(span, wait)),
                            (
                                "timer",
                                map(
                                    span,
                                    vec![(
                                        "duration",
                                        text(
                                            span,
                                            format!(
                                                "{{{{ {f}__response_headers | retry_after({after}) }}}}"
                                            ),
                                        ),
                                    )],
                                ),
                            ),
                            ("goto", text(span, sid.to_string())),
                        ],
                    ));
                    let when = if condition == "true" {
                        format!("{tries} < {limit}")
                    } else {
                        format!("({condition}) and {tries} < {limit}")
                    };
                    branches.push(map(
                        span,
                        vec![("when", text(span, when)), ("goto", text(span, retry))],
                    ));
                    continue;
                }
                (other, _) => {
                    let allowed = if failure {
                        "`end`, `goto` or `retry`"
                    } else {
                        "`end` or `goto`"
                    };
                    let at = get(action, "type").map_or(span, |n| n.span);
                    self.error(
                        at,
                        format!(
                            "`{other}` is not a {} action: use {allowed}",
                            if failure { "failure" } else { "success" }
                        ),
                    );
                    return None;
                }
            };
            if condition == "true" {
                branches.push(map(span, vec![("otherwise", text(span, target))]));
                all_caught = true;
                break;
            }
            branches.push(map(
                span,
                vec![
                    ("when", text(span, condition)),
                    ("goto", text(span, target)),
                ],
            ));
        }
        if !all_caught {
            let span = actions.first().map_or(Span::new(0, 0), |a| a.span);
            branches.push(map(span, vec![("otherwise", text(span, otherwise))]));
        }
        Some(branches)
    }

    /// Workflow parameters, overridden by the step's (same `name` and
    /// `in`), each `reference` resolved into `components.parameters`.
    fn parameters(&mut self, workflow: &'d Node, step: &'d Node) -> Vec<Node> {
        let mut out: Vec<Node> = Vec::new();
        for owner in [workflow, step] {
            for p in get(owner, "parameters")
                .and_then(Node::as_seq)
                .unwrap_or_default()
            {
                let resolved = match get(p, "reference").and_then(Node::as_str) {
                    Some(r) => {
                        let found = r.strip_prefix("$components.parameters.").and_then(|name| {
                            get(self.root, "components")
                                .and_then(|c| get(c, "parameters"))
                                .and_then(|c| get(c, name))
                        });
                        let Some(found) = found else {
                            self.error(
                                p.span,
                                format!("`{r}` names no `components.parameters` entry"),
                            );
                            continue;
                        };
                        let mut copy = found.clone();
                        if let (Some(v), NodeValue::Map(entries)) =
                            (get(p, "value"), &mut copy.value)
                        {
                            entries.retain(|(k, _)| k.as_str() != Some("value"));
                            entries.push((text(v.span, "value"), v.clone()));
                        }
                        copy.span = p.span;
                        copy
                    }
                    None => p.clone(),
                };
                let key = |n: &Node| {
                    (
                        get(n, "name").and_then(Node::as_str).map(str::to_string),
                        get(n, "in").and_then(Node::as_str).map(str::to_string),
                    )
                };
                let k = key(&resolved);
                out.retain(|o| key(o) != k);
                out.push(resolved);
            }
        }
        out
    }

    /// The `call:` of a step that calls an operation.
    fn call(
        &mut self,
        workflow: &'d Node,
        step: &'d Node,
        id: &str,
        frame: &Frame,
        known: &Known,
        f: &str,
    ) -> Option<Node> {
        let span = step.span;
        let (source_index, op_id, at) = self.operation(step, id)?;
        let mut names = StepNames::new(frame, known, &self.ran);
        names.current = Some(f.to_string());
        let api = self.sources[source_index].api.clone();
        let op = api.operation(&op_id).and_then(Result::ok);
        let mut params = Vec::new();
        let mut headers = Vec::new();
        let mut parts = Vec::new();
        let mut credential_headers = BTreeSet::new();
        for p in &self.parameters(workflow, step) {
            let Some(name) = get(p, "name").and_then(Node::as_str) else {
                self.error(p.span, "a parameter has a `name`");
                continue;
            };
            let Some(value) = get(p, "value") else {
                self.error(p.span, format!("parameter `{name}` has no `value`"));
                continue;
            };
            let location = get(p, "in").and_then(Node::as_str);
            let Some(location) = location else {
                self.error(
                    p.span,
                    format!(
                        "parameter `{name}` needs `in` (`path`, `query`, `header` or `cookie`)"
                    ),
                );
                continue;
            };
            let Some(v) = self.value(value, &names) else {
                continue;
            };
            // A credential the operation's security declares goes to the
            // source's credentials, and what it reads becomes secret.
            if let Some(op) = &op
                && let Some(scheme) = credential_scheme(&api, op, name, location)
            {
                let template = match (&api.schemes[&scheme], v.as_str()) {
                    (Scheme::Bearer | Scheme::OAuth2, Some(t)) => {
                        t.strip_prefix("Bearer ").unwrap_or(t).to_string()
                    }
                    (_, Some(t)) => t.to_string(),
                    _ => {
                        self.error(value.span, format!("the credential `{name}` is text"));
                        continue;
                    }
                };
                for read in crate::language::paths::reads(&template, false) {
                    self.secret.insert(read[0].clone());
                }
                if location == "header" {
                    credential_headers.insert(name.to_ascii_lowercase());
                }
                let creds = &mut self.sources[source_index].credentials;
                match creds.get(&scheme) {
                    Some((other, _)) if *other != template => {
                        self.error_help(value.span, format!("scheme `{scheme}` is given another value than before"), "handoff sends one credential per scheme for a source: give every step the same");
                    }
                    Some(_) => {}
                    None => {
                        creds.insert(scheme, (template, value.span));
                    }
                }
                continue;
            }
            let declared = op.as_ref().is_some_and(|op| {
                op.params
                    .iter()
                    .any(|q| q.name == name && q.location.as_str() == location)
            });
            parts.push((location.to_string(), name.to_string(), v.clone()));
            if location == "header" && !declared {
                headers.push((name.to_string(), v));
            } else {
                params.push((name.to_string(), v));
            }
        }
        // Credentials no parameter gives come from the operator's
        // environment: `SOURCE_SCHEME`, a secret field.
        if let Some(op) = &op
            && !op.security.is_empty()
            && !op.security.iter().any(|alt| {
                alt.iter()
                    .all(|s| self.sources[source_index].credentials.contains_key(s))
            })
            && let Some(first) = op.security.iter().find(|alt| {
                alt.iter()
                    .all(|s| !matches!(api.schemes.get(s), Some(Scheme::Other(_)) | None))
            })
        {
            for scheme in first.clone() {
                let source = &self.sources[source_index];
                if source.credentials.contains_key(&scheme) {
                    continue;
                }
                let field = format!("{}_{}", source.name, mangle(&scheme));
                let env = field.to_ascii_uppercase();
                let decl = map(
                    at,
                    vec![
                        ("type", text(at, "text")),
                        ("secret", yes(at)),
                        ("env", text(at, env)),
                        (
                            "description",
                            text(
                                at,
                                format!(
                                    "The credential for `{scheme}`, which source `{}`'s operations declare.",
                                    source.name
                                ),
                            ),
                        ),
                    ],
                );
                self.declare(&field, &format!("the credential `{scheme}`"), decl, at);
                self.sources[source_index]
                    .credentials
                    .insert(scheme, (format!("{{{{ {field} }}}}"), at));
            }
        }
        let mut call = vec![(
            "operation",
            text(at, format!("{}.{op_id}", self.sources[source_index].name)),
        )];
        if !params.is_empty() {
            call.push(("params", owned_map(span, params)));
        }
        if !headers.is_empty() {
            call.push(("headers", owned_map(span, headers)));
        }
        let declared_type = op
            .as_ref()
            .and_then(|o| o.body.as_ref())
            .map(|b| b.content_type.clone());
        let mut sent_body = None;
        if let Some(body) = get(step, "requestBody") {
            let payload = get(body, "payload");
            let mut payload = match payload {
                Some(p) => self.value(p, &names)?,
                None => null(body.span),
            };
            for r in get(body, "replacements")
                .and_then(Node::as_seq)
                .unwrap_or_default()
            {
                let (Some(target), Some(value)) =
                    (get(r, "target").and_then(Node::as_str), get(r, "value"))
                else {
                    self.error(
                        r.span,
                        "a replacement has a `target` (a JSON pointer) and a `value`",
                    );
                    continue;
                };
                let v = self.value(value, &names)?;
                if let Err(message) = replace(&mut payload, target, v) {
                    let at = get(r, "target").map_or(r.span, |n| n.span);
                    self.error(at, message);
                }
            }
            if let Some(ct) = get(body, "contentType").and_then(Node::as_str) {
                let declared = op
                    .as_ref()
                    .and_then(|o| o.body.as_ref())
                    .map(|b| b.content_type.clone());
                if declared
                    .as_deref()
                    .is_some_and(|d| !d.eq_ignore_ascii_case(ct))
                {
                    let at = get(body, "contentType").map_or(body.span, |n| n.span);
                    self.error(
                        at,
                        format!(
                            "`{ct}` is not how `{op_id}` takes its body ({})",
                            declared.unwrap_or_default()
                        ),
                    );
                }
            }
            // The content type a body goes with, unless a header says.
            if !parts
                .iter()
                .any(|(l, n, _)| l == "header" && n.eq_ignore_ascii_case("content-type"))
                && let Some(ct) = get(body, "contentType")
                    .and_then(Node::as_str)
                    .map(str::to_string)
                    .or(declared_type)
            {
                parts.push(("header".into(), "content-type".into(), text(span, ct)));
            }
            sent_body = Some(payload.clone());
            call.push(("body", payload));
        }
        self.last_request = op.as_ref().map(|op| Sent {
            shape: RequestShape {
                method: op.method.to_ascii_uppercase(),
                path: op.path.clone(),
                server: format!("{}_url", self.sources[source_index].name),
                credentials: credential_headers,
                kept: BTreeMap::new(),
                body: None,
            },
            parts,
            body: sent_body,
        });
        call.push(("accept", text(span, "any")));
        Some(map(span, call))
    }

    /// The source and operation a step names (`operationId`, with or
    /// without `$sourceDescriptions.NAME.`, or `operationPath`).
    fn operation(&mut self, step: &Node, id: &str) -> Option<(usize, String, Span)> {
        if let Some(node) = get(step, "operationId") {
            let written = node.as_str().unwrap_or_default();
            if let Some(rest) = written.strip_prefix("$sourceDescriptions.") {
                let Some((source, op)) = rest.split_once('.') else {
                    self.error(node.span, format!("`{written}` names a source, then an operation: `$sourceDescriptions.NAME.operationId`"));
                    return None;
                };
                let index = self.source_index(source, node.span)?;
                return Some((index, op.to_string(), node.span));
            }
            let holding: Vec<usize> = (0..self.sources.len())
                .filter(|&i| self.sources[i].api.operation(written).is_some())
                .collect();
            // `cafe-api.listMenuItems`, as Redocly's Respect reads it.
            if holding.is_empty()
                && let Some((source, op)) = written.split_once('.')
                && let Some(index) = self.sources.iter().position(|s| s.name == mangle(source))
                && self.sources[index].api.operation(op).is_some()
            {
                self.warning(
                    node.span,
                    format!("`{written}` is read as `$sourceDescriptions.{source}.{op}`, which is how the specification writes it"),
                );
                return Some((index, op.to_string(), node.span));
            }
            return match (holding.as_slice(), self.sources.len()) {
                ([one], _) => Some((*one, written.to_string(), node.span)),
                ([], 1) => Some((0, written.to_string(), node.span)),
                ([], 0) => None,
                ([], _) => {
                    self.error(node.span, format!("no source has an operation `{written}`"));
                    None
                }
                (many, _) => {
                    let names: Vec<String> =
                        many.iter().map(|&i| self.sources[i].name.clone()).collect();
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    self.error_help(
                        node.span,
                        format!("`{written}` is an operation of {}", list(&names)),
                        "say which: `$sourceDescriptions.NAME.operationId`",
                    );
                    None
                }
            };
        }
        let node = get(step, "operationPath")?;
        let written = node.as_str().unwrap_or_default();
        let parsed = written
            .strip_prefix("{$sourceDescriptions.")
            .and_then(|r| r.split_once(".url}#"));
        // `NAME#/paths/…`, as Jentic's runner reads it.
        let loose = || {
            let (source, pointer) = written
                .strip_prefix("$sourceDescriptions.")
                .and_then(|r| r.split_once(".url#"))
                .or_else(|| written.split_once('#'))?;
            self.sources
                .iter()
                .any(|s| s.name == mangle(source))
                .then_some((source, pointer))
        };
        let parsed = match parsed {
            Some(p) => Some(p),
            None => {
                let found = loose();
                if let Some((source, _)) = found {
                    self.warning(
                        node.span,
                        format!("`{written}` is read as `{{$sourceDescriptions.{source}.url}}#…`, which is how the specification writes it"),
                    );
                }
                found
            }
        };
        let Some((source, pointer)) = parsed else {
            self.error(
                node.span,
                format!("`{written}` is not `{{$sourceDescriptions.NAME.url}}#/paths/…/method`"),
            );
            return None;
        };
        let index = self.source_index(source, node.span)?;
        let api = self.sources[index].api.clone();
        let pointer = percent_encoding::percent_decode_str(pointer)
            .decode_utf8_lossy()
            .into_owned();
        let found = api.files[0].value.pointer(&pointer);
        let Some(found) = found.filter(|v| v.is_object()) else {
            self.error(
                node.span,
                format!("`#{pointer}` names nothing in source `{source}`"),
            );
            return None;
        };
        let method = pointer.rsplit('/').next().unwrap_or_default();
        let path = pointer
            .strip_prefix("/paths/")
            .and_then(|p| p.rsplit_once('/'))
            .map(|(p, _)| p.replace("~1", "/").replace("~0", "~"));
        let unnamed = path.map(|p| format!("{} {p}", method.to_ascii_uppercase()));
        match found.get("operationId").and_then(serde_json::Value::as_str) {
            Some(op) => Some((index, op.to_string(), node.span)),
            None if unnamed.as_ref().is_some_and(|u| api.operation(u).is_some()) => {
                Some((index, unnamed.unwrap_or_default(), node.span))
            }
            None if found.get("get").is_some() || found.get("post").is_some() => {
                self.error_help(
                    node.span,
                    format!("`#{pointer}` is a path, not an operation (step `{id}`)"),
                    "end the pointer with the method: `…/get`",
                );
                None
            }
            None => {
                self.error(node.span, format!("the operation at `#{pointer}` has no `operationId`, and handoff calls operations by theirs"));
                None
            }
        }
    }

    fn source_index(&mut self, name: &str, span: Span) -> Option<usize> {
        if self.failed_sources.iter().any(|f| f == name) {
            return None;
        }
        let mangled = mangle(name);
        match self.sources.iter().position(|s| s.name == mangled) {
            Some(i) => Some(i),
            None => {
                let names: Vec<String> = self.sources.iter().map(|s| s.name.clone()).collect();
                self.unknown(span, "there is no source", name, "its sources are", &names);
                None
            }
        }
    }
}

/// The security scheme of the operation that a parameter carries, if any:
/// the `Authorization` header of an HTTP or OAuth2 scheme, or an API key's
/// own name and place.
fn credential_scheme(
    api: &Api,
    op: &crate::language::openapi::Operation,
    name: &str,
    location: &str,
) -> Option<String> {
    op.security.iter().flatten().find_map(|scheme_name| {
        let scheme = api.schemes.get(scheme_name)?;
        let matches = match scheme {
            Scheme::Bearer | Scheme::Basic | Scheme::OAuth2 => {
                location == "header" && name.eq_ignore_ascii_case("authorization")
            }
            Scheme::ApiKey {
                name: key,
                location: at,
            } => {
                at.as_str() == location
                    && if location == "header" {
                        key.eq_ignore_ascii_case(name)
                    } else {
                        key == name
                    }
            }
            _ => false,
        };
        matches.then(|| scheme_name.clone())
    })
}

/// Sets `value` at an RFC 6901 pointer inside a payload written as YAML.
fn replace(payload: &mut Node, target: &str, value: Node) -> Result<(), String> {
    if target.is_empty() {
        *payload = value;
        return Ok(());
    }
    let Some(rest) = target.strip_prefix('/') else {
        return Err(format!(
            "`{target}` is not a JSON pointer: it starts with `/`"
        ));
    };
    let mut at = payload;
    let tokens: Vec<String> = rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, token) in tokens.iter().enumerate() {
        let last = i + 1 == tokens.len();
        let span = at.span;
        at = match &mut at.value {
            NodeValue::Map(entries) => {
                let position = entries.iter().position(|(k, _)| k.as_str() == Some(token));
                match (position, last) {
                    (Some(p), true) => {
                        entries[p].1 = value;
                        return Ok(());
                    }
                    (Some(p), false) => &mut entries[p].1,
                    (None, true) => {
                        entries.push((text(span, token.clone()), value));
                        return Ok(());
                    }
                    (None, false) => {
                        return Err(format!("`{target}`: the payload has no `{token}`"));
                    }
                }
            }
            NodeValue::Seq(items) => {
                let index = if token == "-" && last {
                    items.len()
                } else {
                    token
                        .parse::<usize>()
                        .map_err(|_| format!("`{target}`: `{token}` is not an index of a list"))?
                };
                if last {
                    if index == items.len() {
                        items.push(value);
                    } else if index < items.len() {
                        items[index] = value;
                    } else {
                        return Err(format!("`{target}`: the list has {} items", items.len()));
                    }
                    return Ok(());
                }
                items
                    .get_mut(index)
                    .ok_or_else(|| format!("`{target}`: the list has no item {index}"))?
            }
            _ => {
                return Err(format!(
                    "`{target}`: the payload is not an object or a list there (a payload written as text cannot take replacements)"
                ));
            }
        };
    }
    Ok(())
}

/// A `jsonpath` criterion: the query (its `{$…}` parts filled in) asked of
/// a list holding the context, true when it selects anything.
fn jsonpath_condition(condition: &str, context: &str, names: &dyn Names) -> Result<String, String> {
    let query = match expr::embedded(condition, names)? {
        Written::Plain => {
            serde_json_path::JsonPath::parse(condition)
                .map_err(|e| format!("invalid JSONPath: {e}"))?;
            quote(condition)
        }
        Written::Text(t) | Written::Expr(t) => {
            // The query is built at run time; its pieces are joined as text.
            let mut parts = Vec::new();
            let mut rest = t.as_str();
            while let Some(open) = rest.find("{{ ") {
                if open > 0 {
                    parts.push(quote(&rest[..open]));
                }
                let close = rest[open..]
                    .find(" }}")
                    .map(|c| open + c)
                    .ok_or("unclosed expression")?;
                parts.push(format!("(({}) | tojson)", &rest[open + 3..close]));
                rest = &rest[close + 3..];
            }
            if !rest.is_empty() {
                parts.push(quote(rest));
            }
            format!("({})", parts.join(" ~ "))
        }
    };
    Ok(format!("([{context}] | jsonpath({query}) | length) > 0"))
}
