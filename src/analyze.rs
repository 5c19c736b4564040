//! From raw YAML nodes to a validated [`Flow`], reporting every problem.
//!
//! This is the static half of handoff: `handoff check` stops here, and every
//! run starts here. It resolves `goto`s, compiles templates, checks that every
//! field a step touches is declared and of a fitting type, and warns about
//! steps that are never reached and loops with no way out.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use minijinja::Environment;
use serde_json::Value;

use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::fields::{FieldType, TYPE_NAMES};
use crate::flow::{DEFAULT_MAX_STEPS, ERROR_FIELD, FieldDecl, Flow, Step, Target};
use crate::raw::{self, Node, NodeValue};
use crate::source::{Source, Span};
use crate::steps::{KINDS, StepKind};
use crate::template::Template;

/// A flow that loaded, with any warnings found on the way.
pub struct Checked {
    pub flow: Flow,
    pub warnings: Vec<Diagnostic>,
}

/// Loads and validates a flow. Errors and warnings come back together when
/// there is any error.
pub fn analyze(source: &Arc<Source>) -> Result<Checked, Vec<Diagnostic>> {
    let root = raw::parse(source).map_err(|d| vec![d])?;
    // From here on, diagnostics quote a copy with any literal secret masked.
    let literals = crate::lint::literal_secrets(source, &root);
    let mut diagnostics = literals.warnings;
    let flow = build(&literals.shown, &root, &mut diagnostics).map(|mut flow| {
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
    let cannot =
        |e: std::io::Error| Diagnostic::error(format!("cannot read `{path}`: {}", io_reason(&e)));
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

pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string().to_lowercase(),
    }
}

const TOP_KEYS: [&str; 5] = ["flow", "description", "fields", "steps", "max_steps"];
const FIELD_KEYS: [&str; 7] = [
    "type",
    "input",
    "secret",
    "env",
    "allow_empty",
    "default",
    "description",
];
const STEP_KEYS: [&str; 5] = ["id", "goto", "on_error", "output", "description"];

fn build(source: &Arc<Source>, root: &Node, diagnostics: &mut Vec<Diagnostic>) -> Option<Flow> {
    let env = crate::template::environment();
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
    let mut cx = Analyzer {
        source: source.clone(),
        env: &env,
        fields: IndexMap::new(),
        ids: IndexMap::new(),
        known: crate::template::Known::default(),
        diagnostics,
    };
    let body = cx.body(root, "a flow", &TOP_KEYS, &["flow", "steps"])?;
    let name = body
        .get("flow")
        .and_then(|n| cx.string(n, "the flow's name"));
    let description = body
        .get("description")
        .and_then(|n| cx.string(n, "a description"));
    let max_steps = match body.get("max_steps") {
        Some(n) => cx
            .positive_int(n, "`max_steps`")
            .unwrap_or(DEFAULT_MAX_STEPS),
        None => DEFAULT_MAX_STEPS,
    };
    if let Some(fields) = body.get("fields") {
        cx.fields = parse_fields(&mut cx, fields);
    }
    declare_error_field(&mut cx, body.get("steps"));
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
    let fields = std::mem::take(&mut cx.fields);
    check_secrets(&mut cx, &fields, &steps);
    check_graph(&mut cx, &steps);
    Some(Flow {
        name: name?,
        description,
        source: source.clone(),
        fields,
        steps,
        max_steps,
        env,
        literal_secrets: Vec::new(),
    })
}

fn parse_fields(cx: &mut Analyzer, node: &Node) -> IndexMap<String, FieldDecl> {
    let mut fields = IndexMap::new();
    let Some(entries) = node.as_map() else {
        cx.error(
            node.span,
            format!(
                "`fields` must be a mapping of field names to declarations, found {}",
                node.type_name()
            ),
        );
        return fields;
    };
    for (key, decl) in entries {
        let Some(name) = key.as_str() else {
            cx.not_text(key, "a field name");
            continue;
        };
        if !is_identifier(name) {
            cx.error_help(
                key.span,
                format!("`{name}` is not a valid field name"),
                "use letters, digits and `_`, starting with a letter or `_`, so templates can read it",
            );
            continue;
        }
        if fields.contains_key(name) {
            cx.error(key.span, format!("field `{name}` is declared twice"));
            continue;
        }
        if let Some(field) = parse_field(cx, name, key.span, decl) {
            fields.insert(name.to_string(), field);
        }
    }
    fields
}

fn parse_field(cx: &mut Analyzer, name: &str, span: Span, node: &Node) -> Option<FieldDecl> {
    // `name: text` is short for `name: { type: text }`.
    if let Some(ty_name) = node.as_str() {
        let ty = cx.field_type(node, ty_name)?;
        return Some(FieldDecl {
            name: name.to_string(),
            ty,
            input: false,
            secret: false,
            env: None,
            allow_empty: false,
            default: None,
            description: None,
            span,
        });
    }
    let body = cx.body(node, &format!("field `{name}`"), &FIELD_KEYS, &["type"])?;
    let ty_node = body.get("type")?;
    let ty = match ty_node.as_str() {
        Some(t) => cx.field_type(ty_node, t)?,
        None => {
            cx.error(
                ty_node.span,
                "`type` must be one of `text`, `number`, `boolean`, `json`, `headers`",
            );
            return None;
        }
    };
    let input = body
        .get("input")
        .and_then(|n| cx.boolean(n))
        .unwrap_or(false);
    let secret = body
        .get("secret")
        .and_then(|n| cx.boolean(n))
        .unwrap_or(false);
    let env = body
        .get("env")
        .and_then(|n| cx.string(n, "an environment variable name"));
    let allow_empty = body
        .get("allow_empty")
        .and_then(|n| cx.boolean(n))
        .unwrap_or(false);
    let description = body
        .get("description")
        .and_then(|n| cx.string(n, "a description"));
    let default = match body.get("default") {
        Some(n) => match ty.coerce_showing(n.to_json(), !secret) {
            Ok(v) => Some(v),
            Err(e) => {
                cx.error(
                    n.span,
                    format!(
                        "the default of `{name}` does not fit its type `{}`: {e}",
                        ty.name()
                    ),
                );
                None
            }
        },
        None => None,
    };
    Some(FieldDecl {
        name: name.to_string(),
        ty,
        input,
        secret,
        env,
        allow_empty,
        default,
        description,
        span,
    })
}

/// When a step has `on_error`, the flow gets an `error` field (json, null
/// until a failure is caught) to read what went wrong.
fn declare_error_field(cx: &mut Analyzer, steps: Option<&Node>) {
    let uses_on_error = steps.and_then(Node::as_seq).is_some_and(|steps| {
        steps.iter().any(|s| {
            s.as_map()
                .is_some_and(|m| m.iter().any(|(k, _)| k.as_str() == Some("on_error")))
        })
    });
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

/// Which fields can hold secrets, and whether any reaches a URL.
fn check_secrets(cx: &mut Analyzer, fields: &IndexMap<String, FieldDecl>, steps: &[Step]) {
    let mut secret: BTreeSet<String> = fields
        .values()
        .filter(|f| f.secret)
        .map(|f| f.name.clone())
        .collect();
    // Secrecy spreads through writes until nothing changes.
    loop {
        let before = secret.len();
        for step in steps {
            for (field, reads) in step.kind.writes() {
                if reads.iter().any(|r| secret.contains(r)) {
                    secret.insert(field.to_string());
                }
            }
        }
        if secret.len() == before {
            break;
        }
    }
    for field in fields
        .values()
        .filter(|f| !f.secret && secret.contains(&f.name))
    {
        cx.push(
            Diagnostic::warning(format!(
                "field `{}` receives a value built from a secret",
                field.name
            ))
            .at(&cx.source, field.span)
            .label("not marked secret")
            .help("add `secret: true`; handoff masks it either way, but the flow should say so"),
        );
    }
    for step in steps {
        for template in step.kind.url_templates() {
            if let Some(name) = template.mentions.iter().find(|r| secret.contains(*r)) {
                cx.push(
                    Diagnostic::error(format!("step `{}` puts secret field `{name}` into a URL", step.id))
                        .at(&cx.source, template.span)
                        .label("URLs end up in logs and proxies")
                        .help("send secrets in headers; an `http` step can opt in with `allow_secret_in_url: true`"),
                );
            }
        }
    }
}

/// Unreachable steps and loops that nothing leads out of.
fn check_graph(cx: &mut Analyzer, steps: &[Step]) {
    let n = steps.len();
    let edges: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut out = Vec::new();
            let mut push = |t: Target| {
                if let Target::Step(j) = t {
                    out.push(j);
                }
            };
            if steps[i].kind.continues() {
                match steps[i].goto {
                    Some(t) => push(t),
                    None if i + 1 < n => push(Target::Step(i + 1)),
                    None => {}
                }
            }
            steps[i]
                .kind
                .branch_targets()
                .into_iter()
                .for_each(&mut push);
            if let Some(t) = steps[i].on_error {
                push(t);
            }
            out
        })
        .collect();
    let exits_to_end: Vec<bool> = (0..n)
        .map(|i| {
            let s = &steps[i];
            matches!(
                s.kind,
                crate::steps::StepKind::Fail(_) | crate::steps::StepKind::End(_)
            ) || (s.kind.continues()
                && (s.goto == Some(Target::End) || (s.goto.is_none() && i + 1 == n)))
                || s.kind.branch_targets().contains(&Target::End)
                || s.on_error == Some(Target::End)
        })
        .collect();
    let mut seen = vec![false; n];
    let mut stack = vec![0];
    seen[0] = true;
    while let Some(i) = stack.pop() {
        for &j in &edges[i] {
            if !seen[j] {
                seen[j] = true;
                stack.push(j);
            }
        }
    }
    for (i, step) in steps.iter().enumerate() {
        if !seen[i] {
            cx.push(
                Diagnostic::warning(format!("step `{}` is never reached", step.id))
                    .at(&cx.source, step.span)
                    .help("nothing falls through or jumps to it; remove it or add a `goto`"),
            );
        }
    }
    for component in strongly_connected(&edges) {
        let cyclic = component.len() > 1 || edges[component[0]].contains(&component[0]);
        if !cyclic || !seen[component[0]] {
            continue;
        }
        let members: BTreeSet<usize> = component.iter().copied().collect();
        let leaves = component
            .iter()
            .any(|&i| exits_to_end[i] || edges[i].iter().any(|j| !members.contains(j)));
        if !leaves {
            let first = *members.iter().next().unwrap_or(&0);
            let names: Vec<&str> = members.iter().map(|&i| steps[i].id.as_str()).collect();
            // Nothing can leave: the run could only end by exhausting its
            // budget, which is never what the author meant.
            cx.push(
                Diagnostic::error(format!("the loop through {} has no exit", list(&names)))
                    .at(&cx.source, steps[first].span)
                    .help("add a `decision` that leaves the loop, or an `on_error`; otherwise only `max_steps` would stop it"),
            );
        }
    }
}

/// Kosaraju's algorithm, iterative so a huge flow cannot overflow the stack.
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut order = Vec::with_capacity(n);
    let mut visited = vec![false; n];
    for start in 0..n {
        if visited[start] {
            continue;
        }
        visited[start] = true;
        let mut stack = vec![(start, 0usize)];
        while let Some((node, next)) = stack.pop() {
            if next < edges[node].len() {
                stack.push((node, next + 1));
                let child = edges[node][next];
                if !visited[child] {
                    visited[child] = true;
                    stack.push((child, 0));
                }
            } else {
                order.push(node);
            }
        }
    }
    let mut reverse = vec![Vec::new(); n];
    for (i, outs) in edges.iter().enumerate() {
        for &j in outs {
            reverse[j].push(i);
        }
    }
    let mut assigned = vec![false; n];
    let mut components = Vec::new();
    for &start in order.iter().rev() {
        if assigned[start] {
            continue;
        }
        assigned[start] = true;
        let mut component = vec![start];
        let mut stack = vec![start];
        while let Some(node) = stack.pop() {
            for &prev in &reverse[node] {
                if !assigned[prev] {
                    assigned[prev] = true;
                    component.push(prev);
                    stack.push(prev);
                }
            }
        }
        components.push(component);
    }
    components
}

/// A name templates can read: letters, digits and `_`, not starting with a digit.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `a`, `b` and `c`.
pub fn list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        _ => format!(
            "{} and {}",
            quoted[..quoted.len() - 1].join(", "),
            quoted[quoted.len() - 1]
        ),
    }
}

/// The state of analysis that step parsers report into.
pub struct Analyzer<'a> {
    pub source: Arc<Source>,
    pub env: &'a Environment<'static>,
    pub fields: IndexMap<String, FieldDecl>,
    pub ids: IndexMap<String, usize>,
    known: crate::template::Known,
    diagnostics: &'a mut Vec<Diagnostic>,
}

/// A mapping whose keys were checked: unknown ones reported, required present.
pub struct Body<'n> {
    entries: &'n [(Node, Node)],
}

impl<'n> Body<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
}

impl<'a> Analyzer<'a> {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    pub fn error(&mut self, span: Span, message: impl Into<String>) {
        let d = Diagnostic::error(message).at(&self.source, span);
        self.push(d);
    }

    pub fn error_help(&mut self, span: Span, message: impl Into<String>, help: impl Into<String>) {
        let d = Diagnostic::error(message).at(&self.source, span).help(help);
        self.push(d);
    }

    /// Checks a mapping's keys; `None` when it is not a mapping or lacks a required key.
    pub fn body<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        keys: &[&str],
        required: &[&str],
    ) -> Option<Body<'n>> {
        let Some(entries) = node.as_map() else {
            self.error_help(
                node.span,
                format!("{what} must be a mapping, found {}", node.type_name()),
                format!("it takes {}", list(keys)),
            );
            return None;
        };
        let mut ok = true;
        for (key, _) in entries {
            match key.as_str() {
                Some(k) if keys.contains(&k) => {}
                Some(k) => {
                    let help = did_you_mean(k, keys.iter().copied())
                        .unwrap_or_else(|| format!("{what} takes {}", list(keys)));
                    self.error_help(key.span, format!("unknown key `{k}` in {what}"), help);
                }
                None => self.not_yaml_key(key, what, keys),
            }
        }
        for req in required {
            if !entries.iter().any(|(k, _)| k.as_str() == Some(req)) {
                self.error(node.span, format!("{what} needs `{req}`"));
                ok = false;
            }
        }
        ok.then_some(Body { entries })
    }

    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.error(
                    node.span,
                    format!("expected {what} as text, found {}", node.type_name()),
                );
                None
            }
        }
    }

    pub fn boolean(&mut self, node: &Node) -> Option<bool> {
        match node.value {
            NodeValue::Bool(b) => Some(b),
            _ => {
                self.error(
                    node.span,
                    format!("expected `true` or `false`, found {}", node.type_name()),
                );
                None
            }
        }
    }

    pub fn positive_int(&mut self, node: &Node, what: &str) -> Option<u64> {
        match node.value {
            NodeValue::Int(i) if i > 0 => Some(i as u64),
            _ => {
                self.error(
                    node.span,
                    format!("{what} must be a whole number above zero"),
                );
                None
            }
        }
    }

    /// A number of bytes: `1048576`, or text with a unit, `512KB` or `10MB`
    /// (binary: 1 KB is 1024 bytes).
    pub fn byte_size(&mut self, node: &Node, what: &str) -> Option<u64> {
        let text = node.scalar_text().unwrap_or_default();
        let t = text.trim().to_ascii_uppercase();
        let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => (&t[..i], t[i..].trim()),
            None => (t.as_str(), ""),
        };
        let scale = match unit {
            "" | "B" => Some(1u64),
            "KB" | "KIB" => Some(1024),
            "MB" | "MIB" => Some(1024 * 1024),
            "GB" | "GIB" => Some(1024 * 1024 * 1024),
            _ => None,
        };
        match (digits.parse::<u64>().ok(), scale) {
            (Some(n), Some(s)) if n > 0 => n.checked_mul(s).or_else(|| {
                self.error(node.span, format!("{what} is too large"));
                None
            }),
            _ => {
                self.error_help(
                    node.span,
                    format!("{what} must be a size above zero"),
                    "write bytes, like `1048576`, or a size like `512KB` or `10MB`",
                );
                None
            }
        }
    }

    pub fn duration(&mut self, node: &Node) -> Option<Duration> {
        let text = node.scalar_text().unwrap_or_default();
        match crate::clock::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(node.span, format!("invalid duration: {e}"));
                None
            }
        }
    }

    fn field_type(&mut self, node: &Node, name: &str) -> Option<FieldType> {
        let ty = FieldType::parse(name);
        if ty.is_none() {
            let help = did_you_mean(name, TYPE_NAMES)
                .unwrap_or_else(|| format!("the types are {}", list(&TYPE_NAMES)));
            self.error_help(node.span, format!("unknown field type `{name}`"), help);
        }
        ty
    }

    /// A key YAML did not read as text, in a mapping that takes `keys`.
    /// `on` is the usual one: `retry: { on: [503] }` means `retry_on`.
    fn not_yaml_key(&mut self, key: &Node, what: &str, keys: &[&str]) {
        let written = self.source.slice(key.span).trim().to_string();
        let suffixed = format!("_{written}");
        let meant = keys
            .iter()
            .find(|k| k.ends_with(&suffixed))
            .map(|k| k.to_string())
            .or_else(|| {
                did_you_mean(&written, keys.iter().copied())
                    .and_then(|h| h.split('`').nth(1).map(str::to_string))
            });
        match meant {
            Some(k) if matches!(key.value, NodeValue::Bool(_)) => self.error_help(
                key.span,
                format!("unknown key `{written}` in {what}"),
                format!("did you mean `{k}`? (YAML reads a bare `{written}` as a boolean, so it never names a key)"),
            ),
            _ => self.not_text(key, "a key"),
        }
    }

    /// Filters and tests a template uses that the environment does not
    /// offer: minijinja would only find them when the template renders.
    fn known_names(&mut self, template: &Template) -> bool {
        let mut ok = true;
        for name in &template.filters {
            if !self.known.filter(self.env, name) {
                let names = self.known.filter_names(self.env);
                let help = did_you_mean(name, names.iter().copied())
                    .unwrap_or_else(|| "the filters are listed in docs/language.md".to_string());
                self.error_help(template.span, format!("unknown filter `{name}`"), help);
                ok = false;
            }
        }
        for name in &template.tests {
            if !self.known.test(self.env, name) {
                let names = self.known.test_names(self.env);
                let help = did_you_mean(name, names.iter().copied())
                    .unwrap_or_else(|| "the tests are listed in docs/language.md".to_string());
                self.error_help(template.span, format!("unknown test `{name}`"), help);
                ok = false;
            }
        }
        ok
    }

    /// A template whose every name must be a declared field.
    pub fn template(&mut self, node: &Node) -> Option<Template> {
        match Template::compile(self.env, node) {
            Ok(t) if !self.known_names(&t) => None,
            Ok(t) => self.checked(t),
            Err(e) => {
                self.error(e.span, e.message);
                None
            }
        }
    }

    /// A condition such as `tries >= max_tries`.
    pub fn condition(&mut self, node: &Node) -> Option<Template> {
        let template = self.item_condition(node)?;
        self.checked(template)
    }

    /// A condition over an item whose names cannot be known ahead.
    pub fn item_condition(&mut self, node: &Node) -> Option<Template> {
        match Template::compile_condition(self.env, node) {
            Ok(t) => self.known_names(&t).then_some(t),
            Err(e) => {
                self.error(e.span, e.message);
                None
            }
        }
    }

    fn checked(&mut self, template: Template) -> Option<Template> {
        let mut ok = true;
        for name in &template.reads {
            if !self.fields.contains_key(name) {
                let help = did_you_mean(name, self.fields.keys().map(String::as_str))
                    .unwrap_or_else(|| {
                        let names: Vec<&str> = self.fields.keys().map(String::as_str).collect();
                        if names.is_empty() {
                            "declare it under `fields`".to_string()
                        } else {
                            format!("declare it under `fields`, or use one of {}", list(&names))
                        }
                    });
                let d = Diagnostic::error(format!(
                    "template reads `{name}`, which is not a declared field"
                ))
                .at(&self.source, template.span)
                .help(help);
                self.push(d);
                ok = false;
            }
        }
        ok.then_some(template)
    }

    /// A template whose literal value must fit a field's type.
    pub fn typed_template(&mut self, node: &Node, ty: FieldType, field: &str) -> Option<Template> {
        let template = self.template(node)?;
        if let crate::template::TemplateKind::Literal(v) = &template.kind
            && let Err(e) = ty.coerce(v.clone())
        {
            self.error(
                node.span,
                format!("`{field}` is a {} field: {e}", ty.name()),
            );
            return None;
        }
        Some(template)
    }

    /// A key that is not text. YAML 1.1 reads `on`, `off`, `yes`, `no`, `y`
    /// and `n` as booleans, which surprises everyone once.
    pub fn not_text(&mut self, key: &Node, what: &str) {
        let written = self.source.slice(key.span).trim().to_string();
        match key.value {
            NodeValue::Bool(_) => self.error_help(
                key.span,
                format!("{what} must be text, and YAML reads `{written}` as a boolean"),
                format!("quote it: `\"{written}\"`"),
            ),
            _ => self.error(key.span, format!("{what} must be text")),
        }
    }

    /// A reference to a declared field of one of the accepted types.
    pub fn field_ref(&mut self, node: &Node, accept: &[FieldType], what: &str) -> Option<String> {
        let Some(name) = node.as_str() else {
            self.error(
                node.span,
                format!("{what} names a field, found {}", node.type_name()),
            );
            return None;
        };
        let Some(decl) = self.fields.get(name) else {
            let help = did_you_mean(name, self.fields.keys().map(String::as_str))
                .unwrap_or_else(|| "declare it under `fields`".to_string());
            self.error_help(
                node.span,
                format!("{what} names `{name}`, which is not a declared field"),
                help,
            );
            return None;
        };
        if !accept.contains(&decl.ty) {
            let names: Vec<&str> = accept.iter().map(|t| t.name()).collect();
            let (declared, ty) = (decl.span, decl.ty);
            let mut d = Diagnostic::error(format!(
                "{what} needs a field of type {}, but `{name}` is `{}`",
                list(&names).replace(" and ", " or "),
                ty.name()
            ))
            .at(&self.source, node.span)
            .help(format!(
                "declare `{name}` with `type: {}`",
                accept[0].name()
            ));
            // The declaration is where the fix goes: point at it too.
            if declared.len > 0 {
                d = d.also(declared, format!("declared `{}` here", ty.name()));
            }
            self.push(d);
            return None;
        }
        Some(name.to_string())
    }

    /// A step id or `end`.
    pub fn target(&mut self, node: &Node) -> Option<Target> {
        let Some(name) = node.as_str() else {
            self.error(
                node.span,
                format!(
                    "`goto` names a step id or `end`, found {}",
                    node.type_name()
                ),
            );
            return None;
        };
        if name == "end" {
            return Some(Target::End);
        }
        match self.ids.get(name) {
            Some(&i) => Some(Target::Step(i)),
            None => {
                let help = did_you_mean(name, self.ids.keys().map(String::as_str).chain(["end"]))
                    .unwrap_or_else(|| "`goto` takes a step id, or `end`".to_string());
                self.error_help(node.span, format!("no step has the id `{name}`"), help);
                None
            }
        }
    }
}
