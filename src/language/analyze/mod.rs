//! From raw YAML nodes to a validated [`Flow`], reporting every problem.
//!
//! The driver: it reads the file, walks the flow's top level, fields and
//! steps (each step kind parses its own body with the [`Analyzer`] helpers),
//! then runs the `graph`, `secrets`, `reach` and `responses` checks over
//! the result.
//!
//! This is the static half of handoff: `handoff check` stops here, and every
//! run starts here. It resolves `goto`s, compiles templates, checks that every
//! field a step touches is declared and of a fitting type, and warns about
//! steps that are never reached and loops with no way out.

mod graph;
pub mod reach;
mod responses;
mod secrets;
mod sources;

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::language::analyzer::{Analyzer, list};
use crate::language::diagnostic::{Diagnostic, did_you_mean};
use crate::language::fields::FieldDecl;
use crate::language::fields::FieldType;
use crate::language::fields::{ERROR_FIELD, WAIT_FIELD};
use crate::language::flow::{DEFAULT_MAX_STEPS, Flow, Step};
use crate::language::raw::{self, Node, NodeValue};
use crate::language::source::{Source, Span};
use crate::language::target::Target;
use crate::steps::{KINDS, StepKind};

/// A flow that loaded, with any warnings found on the way.
pub struct Checked {
    pub flow: Flow,
    pub warnings: Vec<Diagnostic>,
}

/// Loads and validates a flow. Errors and warnings come back together when
/// there is any error.
pub fn analyze(source: &Arc<Source>) -> Result<Checked, Vec<Diagnostic>> {
    analyze_workflow(source, None)
}

/// Loads and validates a flow; for an Arazzo document, the flow its
/// workflow `workflow` is (or the one `--workflow` names, or its only one).
pub fn analyze_workflow(
    source: &Arc<Source>,
    workflow: Option<&str>,
) -> Result<Checked, Vec<Diagnostic>> {
    let mut root = raw::parse(source).map_err(|d| vec![d])?;
    // From here on, diagnostics quote a copy with any literal secret masked:
    // found in the file as written, before an Arazzo document is lowered.
    let literals = crate::language::lint::literal_secrets(source, &root);
    let mut diagnostics = literals.warnings;
    let mut preloaded = Vec::new();
    if crate::language::arazzo::select::is_arazzo(&root) {
        root = match crate::language::arazzo::lower(&literals.shown, &root, workflow) {
            Ok(lowered) => {
                diagnostics.extend(lowered.warnings);
                preloaded = lowered.apis;
                lowered.root
            }
            Err(found) => {
                diagnostics.extend(found);
                return Err(diagnostics);
            }
        };
    }
    let flow = build(&literals.shown, &root, preloaded, &mut diagnostics).map(|mut flow| {
        flow.literal_secrets = literals.values;
        flow
    });
    match flow {
        Some(flow) if !diagnostics.iter().any(Diagnostic::is_error) => Ok(Checked {
            flow,
            warnings: diagnostics,
        }),
        _ => Err(diagnostics),
    }
}

/// Reads a file and analyses it. An unreadable file is a diagnostic too.
pub fn analyze_file(path: &str) -> Result<Checked, Vec<Diagnostic>> {
    let source = read_source(path).map_err(|d| vec![d])?;
    analyze(&source)
}

/// The largest file handoff reads: a flow, a mock or an input file. Real
/// flows are a few kilobytes.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

pub fn read_source(path: &str) -> Result<Arc<Source>, Diagnostic> {
    let cannot = |e: std::io::Error| {
        Diagnostic::error(format!(
            "cannot read `{path}`: {}",
            crate::language::source::io_reason(&e)
        ))
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let size = file.metadata().map_err(cannot)?.len();
    if size > MAX_FILE_BYTES {
        return Err(Diagnostic::error(format!(
            "`{path}` is {:.1} MB; handoff reads files of at most 1 MB",
            size as f64 / (1024.0 * 1024.0)
        )));
    }
    let mut bytes = Vec::new();
    // `take` guards against a file that grows while it is read.
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_FILE_BYTES + 1),
        &mut bytes,
    )
    .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Diagnostic::error(format!("`{path}` is larger than 1 MB")));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Diagnostic::error(format!("`{path}` is not UTF-8 text")))?;
    Ok(Source::new(path, text))
}

pub const TOP_KEYS: [&str; 10] = [
    "flow",
    "description",
    "title",
    "fields",
    "auth",
    "steps",
    "max_steps",
    "trigger",
    "schedule",
    "sources",
];
pub const STEP_KEYS: [&str; 5] = ["id", "goto", "on_error", "output", "description"];

fn build(
    source: &Arc<Source>,
    root: &Node,
    preloaded: Vec<(std::path::PathBuf, Arc<crate::language::openapi::Api>)>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Flow> {
    let env = crate::language::template::environment();
    if root.as_map().is_none() {
        let found = if matches!(root.value, NodeValue::Null) {
            "an empty document".to_string()
        } else {
            root.type_name().to_string()
        };
        diagnostics.push(
            Diagnostic::error(format!(
                "a flow is a mapping with `flow`, `fields` and `steps`, found {found}"
            ))
            .at(source, root.span)
            .help("start from `flows/complete-nwc-task.yaml`"),
        );
        return None;
    };
    let mut cx = Analyzer::new(source.clone(), &env, diagnostics);
    cx.preloaded = preloaded;
    let body = cx.body(root, "a flow", &TOP_KEYS, &["flow", "steps"])?;
    let name = body
        .get("flow")
        .and_then(|n| cx.string(n, "the flow's name"));
    let description = body
        .get("description")
        .and_then(|n| cx.string(n, "a description"));
    let title_node = body.get("title");
    let max_steps = match body.get("max_steps") {
        Some(n) => cx
            .positive_int(n, "`max_steps`")
            .unwrap_or(DEFAULT_MAX_STEPS),
        None => DEFAULT_MAX_STEPS,
    };
    if let Some(fields) = body.get("fields") {
        cx.fields = cx.field_decls(fields);
    }
    declare_error_field(&mut cx, body.get("steps"));
    declare_wait_field(&mut cx, body.get("steps"));
    cx.has_auth = body.get("auth").is_some();
    if let Some(node) = body.get("sources") {
        cx.sources = crate::language::analyze::sources::parse(&mut cx, node);
    }
    let title = title_node.and_then(|n| title(&mut cx, n));
    let steps_node = body.get("steps")?;
    let Some(step_nodes) = steps_node.as_seq() else {
        cx.error(
            steps_node.span,
            format!(
                "`steps` must be a list of steps, found {}",
                steps_node.type_name()
            ),
        );
        return None;
    };
    if step_nodes.is_empty() {
        cx.error(
            steps_node.span,
            "`steps` is empty: a flow needs at least one step",
        );
        return None;
    }
    collect_ids(&mut cx, step_nodes);
    let mut steps = Vec::new();
    for node in step_nodes {
        if let Some(step) = parse_step(&mut cx, node) {
            steps.push(step);
        }
    }
    if steps.len() != step_nodes.len() {
        return None;
    }
    let top_len = steps.len();
    let trigger = match body.get("trigger") {
        Some(node) => Some(crate::language::trigger::Trigger::parse(&mut cx, node)?),
        None => None,
    };
    let auth = match body.get("auth") {
        Some(node) => Some(crate::language::auth::Auth::parse(&mut cx, node)?),
        None => None,
    };
    let schedule = match body.get("schedule") {
        Some(node) => Some(crate::language::schedule::Schedule::parse(&mut cx, node)?),
        None => None,
    };
    let blocks = parse_blocks(&mut cx, &mut steps, auth.as_ref())?;
    let fields = std::mem::take(&mut cx.fields);
    secrets::check_secrets(&mut cx, &fields, &steps, auth.as_ref());
    responses::check_responses(&mut cx, &fields, &steps);
    let destinations = reach::check_reach(&mut cx, &fields, &steps, auth.as_ref());
    graph::check_graph(&mut cx, &steps, 0..top_len);
    for block in &blocks {
        graph::check_graph(&mut cx, &steps, block.steps.clone());
    }
    Some(Flow {
        name: name?,
        description,
        title,
        source: source.clone(),
        fields,
        steps,
        top_len,
        blocks,
        max_steps,
        env,
        literal_secrets: Vec::new(),
        trigger,
        schedule,
        auth,
        destinations,
    })
}

/// A run's title (`title: "instance {{ instance_id }}"`): a template over
/// the flow's inputs that are not secret, as the run page and the API show
/// it to anyone who may read runs.
fn title(cx: &mut Analyzer, node: &Node) -> Option<crate::language::template::Template> {
    let template = cx.template(node)?;
    let mut ok = true;
    for name in &template.reads {
        let Some(field) = cx.fields.get(name) else {
            continue;
        };
        if field.secret {
            cx.error_help(
                template.span,
                format!("`title` reads `{name}`, which is secret"),
                "a title is shown on the run page and by the API: name runs by inputs that are not secret",
            );
            ok = false;
        } else if !field.input {
            cx.error_help(
                template.span,
                format!("`title` reads `{name}`, which is not an input"),
                "a title is made when the run starts, from its inputs (`input: true`)",
            );
            ok = false;
        }
    }
    ok.then_some(template)
}

/// When a step has `on_error`, the flow gets an `error` field (json, null
/// until a failure is caught) to read what went wrong.
fn declare_error_field(cx: &mut Analyzer, steps: Option<&Node>) {
    fn any_on_error(steps: &Node) -> bool {
        steps.as_seq().is_some_and(|steps| {
            steps.iter().any(|s| {
                s.as_map().is_some_and(|m| {
                    m.iter().any(|(k, v)| match k.as_str() {
                        Some("on_error") => true,
                        // A block's steps catch into the item's own `error`.
                        Some("for_each") => v
                            .as_map()
                            .and_then(|b| b.iter().find(|(k, _)| k.as_str() == Some("steps")))
                            .is_some_and(|(_, steps)| any_on_error(steps)),
                        _ => false,
                    })
                })
            })
        })
    }
    let uses_on_error = steps.is_some_and(any_on_error);
    if !uses_on_error {
        return;
    }
    if let Some(decl) = cx.fields.get(ERROR_FIELD) {
        let span = decl.span;
        cx.error_help(
            span,
            format!("`{ERROR_FIELD}` is reserved: `on_error` puts the failure's details there"),
            "rename this field",
        );
        return;
    }
    cx.fields.insert(
        ERROR_FIELD.to_string(),
        FieldDecl {
            name: ERROR_FIELD.to_string(),
            ty: FieldType::Json,
            input: false,
            secret: false,
            env: None,
            allow_empty: false,
            default: Some(Value::Null),
            description: Some("what the last step caught by `on_error` failed with".to_string()),
            span: Span::new(0, 0),
        },
    );
}

/// Parses each `for_each`'s block once the flow's own steps are parsed:
/// its steps go after them, with ids of their own (unique in the flow, as
/// mocks and tests name steps by id), `goto`s that stay inside, and the
/// item's fields in scope. An item writes only its own fields.
fn parse_blocks(
    cx: &mut Analyzer,
    steps: &mut Vec<Step>,
    auth: Option<&crate::language::auth::Auth>,
) -> Option<Vec<crate::language::flow::Block>> {
    let mut blocks = Vec::new();
    let mut ids: HashMap<String, Span> = steps.iter().map(|s| (s.id.clone(), s.span)).collect();
    let mut locals_seen: IndexMap<String, FieldDecl> = IndexMap::new();
    let pending = std::mem::take(&mut cx.pending);
    let mut ok = true;
    for (index, block) in pending.into_iter().enumerate() {
        let Some(owner) = steps.iter().position(|s| s.kind.block() == Some(index)) else {
            continue;
        };
        let outer = cx.fields.clone();
        let mut locals: Vec<String> = block.locals.iter().map(|d| d.name.clone()).collect();
        if outer.contains_key(ERROR_FIELD) {
            locals.push(ERROR_FIELD.to_string());
        }
        for decl in &block.locals {
            if let Some(other) = locals_seen.get(&decl.name) {
                let d = Diagnostic::error(format!(
                    "`{}` is already a field of another `for_each`",
                    decl.name
                ))
                .at(&cx.source, decl.span)
                .also(other.span, "declared here")
                .help("the fields of a flow's blocks have names of their own: rename it");
                cx.push(d);
                ok = false;
            }
            locals_seen.insert(decl.name.clone(), decl.clone());
            cx.fields.insert(decl.name.clone(), decl.clone());
        }
        let nodes = block.steps.as_seq().unwrap_or_default();
        let start = steps.len();
        let saved_ids = std::mem::take(&mut cx.ids);
        for (k, node) in nodes.iter().enumerate() {
            let Some(id_node) = node
                .as_map()
                .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("id")))
                .map(|(_, v)| v)
            else {
                continue;
            };
            let Some(id) = id_node.as_str() else { continue };
            if let Some(first) = ids.get(id) {
                let (line, _) = cx.source.line_col(first.offset);
                cx.push(
                    Diagnostic::error(format!("step id `{id}` is used twice"))
                        .at(&cx.source, id_node.span)
                        .label(format!("first used on line {line}"))
                        .help("step ids are unique in the whole flow, blocks included: traces, mocks and tests name steps by id"),
                );
                ok = false;
                continue;
            }
            ids.insert(id.to_string(), id_node.span);
            cx.ids.insert(id.to_string(), start + k);
        }
        cx.in_block = true;
        cx.touched = Some(Default::default());
        let mut parsed = Vec::new();
        for node in nodes {
            if let Some(mut step) = parse_step(cx, node) {
                step.block = Some(blocks.len());
                parsed.push(step);
            }
        }
        cx.in_block = false;
        let touched = cx.touched.take().unwrap_or_default();
        cx.ids = saved_ids;
        if parsed.len() != nodes.len() {
            ok = false;
            cx.fields = outer;
            continue;
        }
        for step in &parsed {
            let written = step
                .kind
                .writes()
                .into_iter()
                .map(|(f, _)| f.to_string())
                .chain(step.output.values().cloned());
            for field in written {
                if !locals.contains(&field) {
                    cx.push(
                        Diagnostic::error(format!(
                            "step `{}` writes `{field}`, a field of the flow, from inside `for_each` `{}`",
                            step.id, steps[owner].id
                        ))
                        .at(&cx.source, step.span)
                        .label("items run side by side, so they write only their own fields")
                        .help("declare the field under the `for_each`'s `fields:`, and hand back what the flow needs through `result:`"),
                    );
                    ok = false;
                }
            }
        }
        let uses_auth = parsed.iter().any(|s| s.kind.uses_auth());
        let mut reads: std::collections::BTreeSet<String> = touched
            .into_iter()
            .filter(|n| outer.contains_key(n) && !locals.contains(n))
            .collect();
        if let Some(auth) = auth.filter(|_| uses_auth) {
            // The managed token's request reads its own fields.
            reads.extend(auth.reads().into_iter().filter(|k| outer.contains_key(k)));
        }
        let unrepeatable = parsed.iter().any(|s| s.kind.unrepeatable());
        let item = block.locals[0].name.clone();
        steps.extend(parsed);
        blocks.push(crate::language::flow::Block {
            owner,
            steps: start..steps.len(),
            item,
            locals,
            reads: reads.into_iter().collect(),
            unrepeatable,
        });
        cx.fields = outer;
    }
    // The items' fields are the flow's too, so a step's write finds its type.
    for (name, decl) in locals_seen {
        cx.fields.insert(name, decl);
    }
    ok.then_some(blocks)
}

/// When a step has `wait_for`, the flow gets a `wait` field (json, secret)
/// holding its resume URLs, set by handoff before the first step.
fn declare_wait_field(cx: &mut Analyzer, steps: Option<&Node>) {
    let waits = steps.and_then(Node::as_seq).is_some_and(|steps| {
        steps.iter().any(|s| {
            s.as_map()
                .is_some_and(|m| m.iter().any(|(k, _)| k.as_str() == Some("wait_for")))
        })
    });
    if !waits {
        return;
    }
    if let Some(decl) = cx.fields.get(WAIT_FIELD) {
        let span = decl.span;
        cx.error_help(
            span,
            format!("`{WAIT_FIELD}` is reserved: a flow that waits for signals reads its resume URLs there"),
            "rename this field",
        );
        return;
    }
    cx.fields.insert(
        WAIT_FIELD.to_string(),
        FieldDecl {
            name: WAIT_FIELD.to_string(),
            ty: FieldType::Json,
            input: false,
            secret: true,
            env: None,
            allow_empty: true,
            default: Some(Value::Null),
            description: Some(
                "the resume URLs of the flow's waits: `wait.url`, and `wait.urls.NAME` per signal"
                    .to_string(),
            ),
            span: Span::new(0, 0),
        },
    );
}

/// First pass over the steps: ids, so `goto` can point forward.
fn collect_ids(cx: &mut Analyzer, steps: &[Node]) {
    let mut first_seen: HashMap<String, Span> = HashMap::new();
    for (index, node) in steps.iter().enumerate() {
        let Some(entries) = node.as_map() else {
            continue;
        };
        let Some((_, id_node)) = entries.iter().find(|(k, _)| k.as_str() == Some("id")) else {
            continue;
        };
        let Some(id) = id_node.as_str() else { continue };
        if let Some(first) = first_seen.get(id) {
            let (line, _) = cx.source.line_col(first.offset);
            cx.push(
                Diagnostic::error(format!("step id `{id}` is used twice"))
                    .at(&cx.source, id_node.span)
                    .label(format!("first used on line {line}")),
            );
            continue;
        }
        first_seen.insert(id.to_string(), id_node.span);
        cx.ids.insert(id.to_string(), index);
    }
}

fn parse_step(cx: &mut Analyzer, node: &Node) -> Option<Step> {
    let Some(entries) = node.as_map() else {
        cx.error(
            node.span,
            format!(
                "a step must be a mapping with an `id` and a kind, found {}",
                node.type_name()
            ),
        );
        return None;
    };
    let mut id = None;
    let mut goto = None;
    let mut on_error = None;
    let mut output_node = None;
    let mut kind: Option<(&str, &Node, &Node)> = None;
    let mut ok = true;
    for (key, value) in entries {
        let Some(k) = key.as_str() else {
            cx.not_text(key, "a step key");
            ok = false;
            continue;
        };
        match k {
            "id" => id = Some(value),
            "goto" => goto = Some(value),
            "on_error" => on_error = Some(value),
            "output" => output_node = Some(value),
            "description" => {}
            _ if KINDS.contains(&k) => {
                if let Some((first, _, _)) = kind {
                    cx.error_help(
                        key.span,
                        format!(
                            "a step has exactly one kind, but this one has `{first}` and `{k}`"
                        ),
                        "split it into two steps",
                    );
                    ok = false;
                } else {
                    kind = Some((k, key, value));
                }
            }
            _ => {
                let kind_hint = did_you_mean(k, KINDS);
                let key_hint = did_you_mean(k, STEP_KEYS);
                if kind_hint.is_some()
                    || (kind.is_none()
                        && key_hint.is_none()
                        && !entries
                            .iter()
                            .any(|(k2, _)| k2.as_str().is_some_and(|s| KINDS.contains(&s))))
                {
                    let help =
                        kind_hint.unwrap_or_else(|| format!("the step kinds are {}", list(&KINDS)));
                    cx.error_help(key.span, format!("unknown step kind `{k}`"), help);
                } else {
                    let help = key_hint.unwrap_or_else(|| "a step has `id`, one kind, and optionally `goto`, `output` and `description`".to_string());
                    cx.error_help(key.span, format!("unknown key `{k}` in a step"), help);
                }
                ok = false;
            }
        }
    }
    let Some(id_node) = id else {
        cx.error(node.span, "this step has no `id`");
        return None;
    };
    let Some(id) = id_node.as_str().map(str::to_string) else {
        cx.error(
            id_node.span,
            format!("a step `id` must be text, found {}", id_node.type_name()),
        );
        return None;
    };
    if id == "end" {
        cx.error_help(
            id_node.span,
            "`end` is reserved: `goto: end` ends the run",
            "choose another id",
        );
        ok = false;
    }
    let Some((kind_name, kind_key, body)) = kind else {
        if ok {
            cx.error_help(
                node.span,
                format!("step `{id}` has no kind"),
                format!("add one of {}", list(&KINDS)),
            );
        }
        return None;
    };
    let kind = StepKind::parse(kind_name, cx, body);
    let goto = match goto {
        Some(g) if kind_name == "decision" => {
            cx.error_help(
                g.span,
                "a `decision` chooses its own target",
                "put `goto` in its branches",
            );
            None
        }
        Some(g) if matches!(kind_name, "fail" | "end") => {
            cx.error(
                g.span,
                format!("a `{kind_name}` step ends the run, so `goto` would never be followed"),
            );
            None
        }
        Some(g) => cx.target(g),
        None => None,
    };
    let output = match output_node {
        Some(n) => parse_output(cx, kind_name, kind_key, n),
        None => IndexMap::new(),
    };
    let on_error = match on_error {
        Some(n) if matches!(kind_name, "fail" | "end") => {
            cx.error(
                n.span,
                format!("a `{kind_name}` step cannot fail, so `on_error` would never be followed"),
            );
            None
        }
        Some(n) => parse_on_error(cx, n),
        None => None,
    };
    Some(Step {
        id,
        span: node.span,
        kind: kind?,
        goto,
        output,
        on_error,
        block: None,
    })
    .filter(|_| ok)
}

/// `on_error: STEP`, or `on_error: { goto: STEP }`.
fn parse_on_error(cx: &mut Analyzer, node: &Node) -> Option<Target> {
    if node.as_map().is_some() {
        let body = cx.body(node, "`on_error`", &["goto"], &["goto"])?;
        return body.get("goto").and_then(|g| cx.target(g));
    }
    cx.target(node)
}

fn parse_output(
    cx: &mut Analyzer,
    kind: &str,
    kind_key: &Node,
    node: &Node,
) -> IndexMap<String, String> {
    let mut out = IndexMap::new();
    let offered = StepKind::outputs(kind);
    let Some(entries) = node.as_map() else {
        cx.error(
            node.span,
            "`output` must map output names to fields, like `{ status: http_result }`",
        );
        return out;
    };
    if offered.is_empty() {
        cx.error(kind_key.span, format!("a `{kind}` step has no outputs"));
        return out;
    }
    for (key, value) in entries {
        let Some(name) = key.as_str() else {
            cx.not_text(key, "an output name");
            continue;
        };
        let Some((_, produced)) = offered.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = offered.iter().map(|(n, _)| *n).collect();
            let help = did_you_mean(name, names.iter().copied())
                .unwrap_or_else(|| format!("`{kind}` outputs {}", list(&names)));
            cx.error_help(key.span, format!("`{kind}` has no output `{name}`"), help);
            continue;
        };
        let accept = accepting(*produced);
        if let Some(field) = cx.field_ref(value, accept, &format!("output `{name}`")) {
            out.insert(name.to_string(), field);
        }
    }
    out
}

/// Field types that can hold a value of type `produced`.
fn accepting(produced: FieldType) -> &'static [FieldType] {
    match produced {
        FieldType::Number => &[FieldType::Number, FieldType::Text, FieldType::Json],
        FieldType::Text => &[FieldType::Text, FieldType::Json],
        FieldType::Boolean => &[FieldType::Boolean, FieldType::Text, FieldType::Json],
        FieldType::Headers => &[FieldType::Headers, FieldType::Json],
        FieldType::Json => &[FieldType::Json],
    }
}
