//! A run's inputs: `--set`, `--input`, the environment and defaults, turned
//! into the starting [`RunState`], or into every problem at once.
//!
//! Two rules protect the worker from its own operator. A required input or a
//! secret given as empty text (`--set instance_id=`, or an unset shell
//! variable, or `NWC_TOKEN=`) is refused, because an empty instance id widens
//! the task query to every instance. And an input file's values never reach a
//! diagnostic: its code frames show values of secret or unknown fields as
//! `*`, and a file that is not YAML at all shows only its punctuation.

use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::language::diagnostic::{Diagnostic, did_you_mean};
use crate::language::fields::FieldDecl;
use crate::language::flow::Flow;
use crate::language::raw::Node;
use crate::language::source::{Source, Span};
use crate::run::state::RunState;

/// Who gives a run its values. A caller (a request to `serve`, a hook's
/// event, a batch row, a test case's `set`) may set only `input: true`
/// fields. The operator (the command line's `--set` and `--input`) may also
/// set `env:` fields: it holds the environment anyway.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Giver {
    Operator,
    #[default]
    Caller,
}

/// Values for input fields, from `--set` and `--input`.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    /// `NAME=VALUE` pairs, in the order given; later ones win.
    pub set: Vec<(String, String)>,
    /// Who gave `set`.
    pub set_by: Giver,
    /// A JSON or YAML mapping, with the file it came from.
    pub file: Option<(Arc<Source>, Node)>,
    /// Who gave `file`.
    pub file_by: Giver,
    /// What errors call where `file` came from: "the input file" unless set
    /// (a request's inputs, under `handoff serve`).
    pub file_label: Option<String>,
}

/// Reads an input file. A YAML error is shown against a copy with every
/// value character starred out: the line it points at may hold a token.
pub fn parse_input_file(source: &Arc<Source>) -> Result<Node, Diagnostic> {
    crate::language::raw::parse(source).map_err(|mut d| {
        if d.source.is_some() {
            d.source = Some(Source::new(source.name.clone(), star_values(&source.text)));
        }
        d.message = "the input file is not valid YAML or JSON".to_string();
        d
    })
}

/// `--set` arguments, as pairs. An argument without `=`, or with a name that
/// is not a field name, is never echoed: it may be a value.
pub fn parse_set(args: &[String]) -> Result<Vec<(String, String)>, Vec<Diagnostic>> {
    let mut pairs = Vec::new();
    let mut problems = Vec::new();
    for (i, pair) in args.iter().enumerate() {
        match pair.split_once('=') {
            Some((name, value)) if is_name(name.trim()) => {
                pairs.push((name.trim().to_string(), value.to_string()));
            }
            Some(_) => problems.push(
                Diagnostic::error(format!(
                    "`--set` number {}: the part before `=` is not a field name",
                    i + 1
                ))
                .help("write `--set NAME=VALUE`, with a field name such as `instance_id`"),
            ),
            None => problems.push(
                Diagnostic::error(format!("`--set` number {} has no `=`", i + 1)).help(
                    "write `--set NAME=VALUE`; the argument is not shown, as it may be a secret",
                ),
            ),
        }
    }
    if problems.is_empty() {
        Ok(pairs)
    } else {
        Err(problems)
    }
}

/// A field name, short enough to be one: anything else may be a value.
fn is_name(name: &str) -> bool {
    crate::language::analyzer::is_identifier(name) && name.len() <= 64
}

/// Builds the starting state: `--set`, then `--input`, then the environment,
/// then defaults. Every problem is reported, each naming the field.
pub fn initial_state(
    flow: &Flow,
    inputs: &Inputs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<RunState, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let names = || flow.fields.keys().map(String::as_str);
    let settable = |name: &str, by: Giver| {
        flow.fields
            .get(name)
            .is_some_and(|f| f.caller_settable() || (by == Giver::Operator && f.env.is_some()))
    };
    for (name, _) in &inputs.set {
        if !flow.fields.contains_key(name) {
            problems.push(
                Diagnostic::error(format!("`--set {name}=…`: the flow has no field `{name}`"))
                    .help_opt(did_you_mean(name, names())),
            );
        } else if !settable(name, inputs.set_by) {
            problems.push(not_settable(flow, name, &format!("`--set {name}=…`: ")));
        }
    }
    let mut from_file: IndexMap<String, Value> = IndexMap::new();
    if let Some((source, node)) = &inputs.file {
        // Diagnostics point into a copy that shows no value that could be secret.
        let shown = Source::new(source.name.clone(), mask_input(flow, &source.text, node));
        match node.as_map() {
            Some(entries) => {
                for (k, v) in entries {
                    let name = k.scalar_text().unwrap_or_default();
                    if !flow.fields.contains_key(&name) {
                        problems.push(
                            Diagnostic::error(format!(
                                "the flow has no field `{}`",
                                shown_key(&name)
                            ))
                            .at(&shown, k.span)
                            .help_opt(did_you_mean(&name, names())),
                        );
                    } else if !settable(&name, inputs.file_by) {
                        problems.push(not_settable(flow, &name, "").at(&shown, k.span));
                    } else {
                        from_file.insert(name, v.to_json());
                    }
                }
            }
            None => problems.push(
                Diagnostic::error("an input file is a mapping of field names to values")
                    .at(&shown, node.span),
            ),
        }
    }
    let mut state = RunState {
        visits: vec![0; flow.steps.len()],
        ..RunState::default()
    };
    // The secrets given, so a quoted value in an error cannot show one.
    let mut secrets = crate::run::redact::Redactor::default();
    for field in flow.fields.values().filter(|f| f.secret) {
        let given = inputs
            .set
            .iter()
            .rev()
            .find(|(n, _)| n == &field.name)
            .map(|(_, v)| Value::String(v.clone()))
            .or_else(|| from_file.get(&field.name).cloned())
            .or_else(|| field.env.as_deref().and_then(env).map(Value::String));
        if let Some(v) = given {
            secrets.add_secret_value(&v);
        }
    }
    for field in flow.fields.values() {
        let from_set = inputs
            .set
            .iter()
            .rev()
            .find(|(n, _)| n == &field.name)
            .map(|(_, v)| v);
        // Text from the command line or the environment, or a value from the file.
        let given = if let Some(text) = from_set {
            Some((Err(text.clone()), format!("`--set {}`", field.name)))
        } else if let Some(v) = from_file.get(&field.name) {
            let label = inputs.file_label.as_deref().unwrap_or("the input file");
            Some((Ok(v.clone()), label.to_string()))
        } else {
            field
                .env
                .as_deref()
                .and_then(|var| env(var).map(|text| (Err(text), format!("${var}"))))
        };
        let value = match given {
            Some((raw, origin)) => {
                let empty = match &raw {
                    Err(text) => text.trim().is_empty(),
                    Ok(v) => is_empty(v),
                };
                if empty && refuses_empty(field) {
                    problems.push(empty_input(flow, field, &origin));
                    continue;
                }
                let coerced = match &raw {
                    Err(text) => field.ty.from_input(text, false),
                    Ok(v) => field.ty.coerce(v.clone()),
                };
                coerced.map_err(|e| {
                    // A value that is not secret is quoted, so the error says
                    // what was wrong; redacted, in case a secret was given
                    // there too. Quoted only then: most values fit.
                    let e = if field.secret {
                        e
                    } else {
                        let quoted = match &raw {
                            Err(text) => {
                                crate::language::fields::quote(&Value::String(text.clone()))
                            }
                            Ok(v) => crate::language::fields::quote(v),
                        };
                        format!("{e}: {}", secrets.redact(&quoted))
                    };
                    (e, origin)
                })
            }
            None => match &field.default {
                Some(default) => Ok(default.clone()),
                None if field.is_required() => {
                    problems.push(missing_input(flow, field, inputs.file_label.as_deref()));
                    continue;
                }
                None => Ok(field.ty.empty()),
            },
        };
        match value {
            Ok(v) => state.set(&field.name, v),
            Err((e, origin)) => problems.push(
                Diagnostic::error(format!(
                    "invalid value for `{}` from {origin}: {e}",
                    field.name
                ))
                .at(&flow.source, field.span)
                .label(format!("declared as {}", field.ty.name())),
            ),
        }
        if field.secret {
            state.secret.insert(field.name.clone());
        }
    }
    if problems.is_empty() {
        Ok(state)
    } else {
        Err(problems)
    }
}

/// A field the giver may not set: configuration, or no input at all.
fn not_settable(flow: &Flow, name: &str, prefix: &str) -> Diagnostic {
    match flow.fields.get(name).and_then(|f| f.env.as_deref()) {
        Some(var) => Diagnostic::error(format!(
            "{prefix}field `{name}` is configuration (read from ${var}), which a caller cannot set"
        ))
        .help("the operator sets it in the worker's environment; only `input: true` fields come from a request, an event, a row or a test case"),
        None => Diagnostic::error(format!("{prefix}field `{name}` is not an input")).help(format!(
            "declare it with `input: true` in `{}`",
            flow.source.name
        )),
    }
}

/// What the run was given that is not secret: its inputs, and the settings
/// from the environment (`base_url`). A recording keeps them so that its
/// replay needs none retyped and runs as the recorded run did.
pub fn recorded_inputs(flow: &Flow, state: &RunState) -> indexmap::IndexMap<String, Value> {
    flow.fields
        .values()
        .filter(|f| (f.input || f.env.is_some()) && !f.secret)
        .filter_map(|f| state.get(&f.name).map(|v| (f.name.clone(), v.clone())))
        .collect()
}

/// Warnings about the run's secrets: one too short to mask reliably, or a
/// plain word (`replay`), which masks that word wherever handoff writes it.
pub fn secret_warnings(flow: &Flow, state: &RunState) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for f in flow.fields.values().filter(|f| f.secret) {
        let Some(value) = state.get(&f.name).and_then(Value::as_str) else {
            continue;
        };
        if crate::run::redact::is_short(value) {
            out.push(
                Diagnostic::warning(format!(
                    "secret `{}` is shorter than {} characters",
                    f.name,
                    crate::run::redact::MIN_SECRET_LEN
                ))
                .at(&flow.source, f.span)
                .label("masked in data, but not hunted in handoff's own wording")
                .help("a value this short can match ordinary text; real tokens are longer, so check it is the right value (a placeholder like `dry-run-token-4821` is safe)"),
            );
        } else if crate::run::redact::is_word(value) {
            out.push(
                Diagnostic::warning(format!(
                    "secret `{}` is a plain word, so that word is masked wherever it appears",
                    f.name
                ))
                .at(&flow.source, f.span)
                .label("every occurrence in traces, logs and messages becomes ***")
                .help("real tokens mix letters, digits and signs; for a dry run or a replay, a placeholder like `dry-run-token-4821` keeps the output readable"),
            );
        }
    }
    out
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// Empty text is refused for a required input and for any secret, unless
/// the field says `allow_empty: true`.
fn refuses_empty(field: &FieldDecl) -> bool {
    !field.allow_empty && (field.is_required() || field.secret)
}

fn empty_input(flow: &Flow, field: &FieldDecl, origin: &str) -> Diagnostic {
    let why = if field.secret {
        "an empty secret cannot authenticate anything"
    } else {
        "an empty value can widen a query to every instance"
    };
    Diagnostic::error(format!("`{}` is empty (from {origin})", field.name))
        .at(&flow.source, field.span)
        .label(if field.secret { "secret" } else { "required" })
        .help(format!(
            "{why}; give it a value (is the shell variable set?), or declare the field with `allow_empty: true`"
        ))
}

/// `row`: where the inputs came from when not the command line (a batch's row).
fn missing_input(flow: &Flow, field: &FieldDecl, row: Option<&str>) -> Diagnostic {
    let how = match (&field.env, field.input, row) {
        (_, true, Some(_)) => format!(
            "give the row a value for `{0}`, or `--set {0}=VALUE` for every row",
            field.name
        ),
        (Some(var), true, None) => format!("pass `--set {}=VALUE` or set ${var}", field.name),
        (Some(var), false, _) => format!("set the environment variable ${var}"),
        _ => format!("pass `--set {}=VALUE`", field.name),
    };
    let from = row.map(|r| format!(" in {r}")).unwrap_or_default();
    Diagnostic::error(format!(
        "missing input `{}` ({}){from}",
        field.name,
        field.ty.name()
    ))
    .at(&flow.source, field.span)
    .label("required")
    .help(how)
}

/// A key from an input file, as a message shows it: only a plain name.
fn shown_key(name: &str) -> String {
    if is_name(name) {
        name.to_string()
    } else {
        "(a key that is not a field name)".to_string()
    }
}

/// The input file's text with the values of secret and unknown fields, and
/// keys that are not names, starred out. Byte offsets stay the same.
fn mask_input(flow: &Flow, text: &str, node: &Node) -> String {
    let mut spans: Vec<Span> = Vec::new();
    match node.as_map() {
        Some(entries) => {
            for (k, v) in entries {
                let name = k.scalar_text().unwrap_or_default();
                if !is_name(&name) {
                    spans.push(k.span);
                }
                let shown = flow.fields.get(&name).is_some_and(|f| !f.secret);
                if !shown {
                    spans.push(v.span);
                }
            }
        }
        None => spans.push(node.span),
    }
    let mut out = text.to_string();
    for span in spans {
        let end = span.end().min(text.len());
        if let Some(slice) = text.get(span.offset..end) {
            out.replace_range(span.offset..end, &star(slice));
        }
    }
    out
}

/// Every character but white space as `*`, byte for byte.
fn star(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_whitespace() {
                c.to_string()
            } else {
                "*".repeat(c.len_utf8())
            }
        })
        .collect()
}

/// Text that did not parse: only white space and structural punctuation
/// stay (`-` only as a list marker, so a token's dashes do not show).
fn star_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let marker = c == '-' && chars.peek().is_none_or(|n| n.is_whitespace());
        if c.is_whitespace() || "{}[],:\"'#".contains(c) || marker {
            out.push(c);
        } else {
            out.push_str(&"*".repeat(c.len_utf8()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_never_echoes_what_may_be_a_value() {
        let problems = parse_set(&["canary-7f3a+9c".to_string(), "x y=1".to_string()])
            .err()
            .unwrap();
        let text = crate::language::diagnostic::render_all(&problems, false);
        assert!(!text.contains("canary"), "{text}");
        assert!(!text.contains("x y"), "{text}");
        assert_eq!(
            parse_set(&["a=b=c".to_string()]).unwrap(),
            [("a".to_string(), "b=c".to_string())]
        );
    }

    #[test]
    fn starring_keeps_byte_offsets() {
        assert_eq!(star("ab é"), "** **");
        assert_eq!(star_values("{\"t\": \"x1\"}"), "{\"*\": \"**\"}");
        assert_eq!(star_values("- a-b\n-\n"), "- ***\n-\n");
    }
}
