//! What a flow reads of an operation's answer, held against the answer's
//! declared schema: a template that reads `job.stat` when the response
//! schema says `state`, goes into a text as if it had keys, or compares
//! `job.state == 'don'` with an enum that lists `done`, is found by `check`.
//!
//! Only a field that `call` steps' bodies alone fill is held (a field set
//! by anything else, a caller or a default could hold anything). A key the
//! schema does not declare is an error where the schema closes its object
//! (`additionalProperties: false`), and a warning where it leaves it open:
//! servers do send undeclared keys, and a flow may rely on one.

use std::collections::BTreeSet;

use indexmap::IndexMap;
use serde_json::Value;

use crate::language::analyzer::{Analyzer, list};
use crate::language::diagnostic::{Diagnostic, did_you_mean};
use crate::language::fields::FieldDecl;
use crate::language::flow::Step;
use crate::language::openapi::{Api, Loc, escape};
use crate::language::paths::ITEM;
use crate::steps::StepKind;

/// Schemas nest through `$ref`s and combinators: past this depth a schema
/// is taken as open rather than walked further.
const MAX_DEPTH: usize = 16;

/// What one key of a value can be, by the schemas it may match.
#[derive(Default)]
struct Lookup {
    /// The key's schemas, where declared.
    found: Vec<Loc>,
    /// The schema says nothing against the key.
    open: bool,
    /// The schema forbids undeclared keys (`additionalProperties: false`).
    closed: bool,
    /// The keys that are declared, for did-you-mean.
    names: BTreeSet<String>,
    /// The value is not an object at all: the types it is declared as.
    not_object: BTreeSet<String>,
    /// Where the deciding schema is, for the note.
    at: Option<Loc>,
}

impl Lookup {
    fn open() -> Lookup {
        Lookup {
            open: true,
            ..Lookup::default()
        }
    }

    /// The value matches every part (`allOf`, and a schema's own keywords
    /// beside its combinators): one part that declares the key is enough,
    /// and one that forbids it closes the object.
    fn all(parts: Vec<Lookup>) -> Lookup {
        Lookup::merge(parts, true)
    }

    /// The value matches some part (`anyOf`, `oneOf`): one that declares
    /// the key, or lets anything through, is enough.
    fn any(parts: Vec<Lookup>) -> Lookup {
        Lookup::merge(parts, false)
    }

    fn merge(parts: Vec<Lookup>, all: bool) -> Lookup {
        let mut out = Lookup::default();
        let mut absent = Vec::new();
        for part in parts {
            if !part.found.is_empty() {
                out.found.extend(part.found);
            } else if part.open {
                out.open = true;
            } else {
                absent.push(part);
            }
        }
        if !out.found.is_empty() {
            out.open = false;
            return out;
        }
        if out.open && (!all || absent.is_empty()) {
            return Lookup::open();
        }
        out.open = false;
        out.closed = if all {
            absent.iter().any(|p| p.closed)
        } else {
            absent.iter().all(|p| p.closed)
        };
        for part in absent {
            out.names.extend(part.names);
            out.not_object.extend(part.not_object);
            if out.at.is_none() {
                out.at = part.at;
            }
        }
        out
    }
}

/// The schemas a field's value can have: one per success answer of each
/// `call` step that writes it.
struct Shaped<'s> {
    api: &'s Api,
    roots: Vec<Loc>,
    /// The operations, named as the flow names them.
    operations: Vec<String>,
}

pub fn check_responses(cx: &mut Analyzer, fields: &IndexMap<String, FieldDecl>, steps: &[Step]) {
    if cx.readings.is_empty() {
        return;
    }
    let shaped = shaped_fields(fields, steps);
    if shaped.is_empty() {
        return;
    }
    let readings = std::mem::take(&mut cx.readings);
    let mut said = BTreeSet::new();
    for (span, reading) in &readings {
        for path in &reading.paths {
            let Some(shape) = shaped.get(&path[0]) else {
                continue;
            };
            if let Some(d) = walk(shape, path, None)
                && said.insert((span.offset, d.message.clone()))
            {
                cx.push(d.at(&cx.source, *span));
            }
        }
        for (path, literal) in &reading.compared {
            let Some(shape) = shaped.get(&path[0]) else {
                continue;
            };
            if let Some(d) = walk(shape, path, Some(literal))
                && said.insert((span.offset, d.message.clone()))
            {
                cx.push(d.at(&cx.source, *span));
            }
        }
    }
    cx.readings = readings;
}

/// The fields written only by `call` bodies, with the schemas of the
/// answers that can fill them.
fn shaped_fields<'s>(
    fields: &IndexMap<String, FieldDecl>,
    steps: &'s [Step],
) -> IndexMap<String, Shaped<'s>> {
    let mut out: IndexMap<String, Shaped> = IndexMap::new();
    let mut spoiled = BTreeSet::new();
    for step in steps {
        for (field, _) in step.kind.writes() {
            spoiled.insert(field.to_string());
        }
        for (output, field) in &step.output {
            let StepKind::Call(call) = &step.kind else {
                spoiled.insert(field.clone());
                continue;
            };
            if output != "body" {
                spoiled.insert(field.clone());
                continue;
            }
            let api = call.source.api.as_ref();
            let roots = call.success_schemas();
            if roots.is_empty() {
                spoiled.insert(field.clone());
                continue;
            }
            let entry = out.entry(field.clone()).or_insert_with(|| Shaped {
                api,
                roots: Vec::new(),
                operations: Vec::new(),
            });
            if !std::ptr::eq(entry.api, api) {
                // Two descriptions: a pointer means something in each.
                spoiled.insert(field.clone());
            }
            entry.roots.extend(roots);
            if !entry.operations.contains(&call.name) {
                entry.operations.push(call.name.clone());
            }
        }
    }
    out.retain(|name, _| {
        !spoiled.contains(name)
            && fields.get(name).is_some_and(|f| {
                !f.input && f.env.is_none() && f.default.as_ref().is_none_or(Value::is_null)
            })
    });
    out
}

/// Walks `path` (its root is the field) through the schemas; a diagnostic
/// without a place when a step of it cannot be, or `literal` is not one of
/// the values the schema lists.
fn walk(shape: &Shaped, path: &[String], literal: Option<&String>) -> Option<Diagnostic> {
    let api = shape.api;
    let mut here = shape.roots.clone();
    for (depth, key) in path.iter().enumerate().skip(1) {
        let step = Lookup::any(here.iter().map(|loc| lookup(api, loc, key, 0)).collect());
        if !step.found.is_empty() {
            here = step.found;
            continue;
        }
        if step.open {
            return None;
        }
        let shown = path[..depth].join(".").replace(&format!(".{ITEM}"), "[0]");
        let from = answers(shape);
        let (d, note) = if !step.not_object.is_empty() && step.names.is_empty() {
            let types: Vec<&str> = step.not_object.iter().map(String::as_str).collect();
            let what = if key == ITEM {
                "an item".to_string()
            } else {
                format!("`{key}`")
            };
            (
                Diagnostic::error(format!(
                    "`{shown}` is {} in {from}, so it has no {what}",
                    a_type(&types)
                ))
                .help(if step.not_object.contains("array") {
                    format!("take an item (`{shown}[0]`), or go through them with `for_each`")
                } else {
                    format!("read `{shown}` itself")
                }),
                "declared here",
            )
        } else {
            let names: Vec<&str> = step.names.iter().map(String::as_str).collect();
            let help = did_you_mean(key, names.iter().copied()).unwrap_or_else(|| {
                if names.is_empty() {
                    "it declares no keys".to_string()
                } else {
                    format!("it declares {}", list(&names))
                }
            });
            let message = format!("`{shown}` has no key `{key}` in {from}");
            if step.closed {
                (
                    Diagnostic::error(message).help(help),
                    "its keys, and no others",
                )
            } else {
                (
                    Diagnostic::warning(message).help(format!(
                        "{help}{} the server sends `{key}` anyway, declare it in the description",
                        if help.ends_with('?') { " If" } else { "; if" }
                    )),
                    "its keys",
                )
            }
        };
        let d = d.label("read here");
        return Some(match step.at.as_ref().and_then(|l| api.span(l)) {
            Some((source, span)) => d.note_at(&source, span, note),
            None => d,
        });
    }
    let literal = literal?;
    let mut allowed = Vec::new();
    let mut at = None;
    for loc in &here {
        if !listed(api, loc, 0, &mut allowed, &mut at) {
            return None;
        }
    }
    if allowed.is_empty() || allowed.contains(literal) {
        return None;
    }
    let names: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let shown = path.join(".").replace(&format!(".{ITEM}"), "[0]");
    let help = did_you_mean(literal, names.iter().copied())
        .unwrap_or_else(|| format!("it is one of {}", list(&names)));
    let d = Diagnostic::error(format!(
        "`{shown}` is compared with \"{literal}\", a value {} does not list",
        answers(shape)
    ))
    .label("compared here")
    .help(help);
    Some(match at.and_then(|l: Loc| api.span(&l)) {
        Some((source, span)) => d.note_at(&source, span, "the values it can be"),
        None => d,
    })
}

/// `jobs.getJob's answer`, or the answers of several operations.
fn answers(shape: &Shaped) -> String {
    match shape.operations.as_slice() {
        [one] => format!("the answer of `{one}`"),
        many => {
            let names: Vec<String> = many.iter().map(|n| format!("`{n}`")).collect();
            format!("the answers of {}", names.join(" and "))
        }
    }
}

fn a_type(types: &[&str]) -> String {
    let words: Vec<String> = types
        .iter()
        .map(|t| match *t {
            "array" => "a list".to_string(),
            "integer" => "an integer".to_string(),
            "null" => "null".to_string(),
            other => format!("a {other}"),
        })
        .collect();
    words.join(" or ")
}

fn child(loc: &Loc, parts: &[&str]) -> Loc {
    let mut pointer = loc.pointer.clone();
    for p in parts {
        pointer.push('/');
        pointer.push_str(&escape(p));
    }
    Loc {
        file: loc.file,
        pointer,
    }
}

/// Where `key` can be under the schema at `loc`.
fn lookup(api: &Api, loc: &Loc, key: &str, depth: usize) -> Lookup {
    let Ok((loc, value)) = api.resolve(loc) else {
        return Lookup::open();
    };
    let Some(schema) = value.as_object().filter(|_| depth <= MAX_DEPTH) else {
        return Lookup::open();
    };
    let mut parts = vec![own(schema, &loc, key)];
    if let Some(Value::Array(members)) = schema.get("allOf") {
        for i in 0..members.len() {
            parts.push(lookup(
                api,
                &child(&loc, &["allOf", &i.to_string()]),
                key,
                depth + 1,
            ));
        }
    }
    for combinator in ["anyOf", "oneOf"] {
        if let Some(Value::Array(members)) = schema.get(combinator) {
            let branches = (0..members.len())
                .map(|i| {
                    lookup(
                        api,
                        &child(&loc, &[combinator, &i.to_string()]),
                        key,
                        depth + 1,
                    )
                })
                .collect();
            parts.push(Lookup::any(branches));
        }
    }
    Lookup::all(parts)
}

/// What a schema's own keywords (not its combinators) say of `key`.
fn own(schema: &serde_json::Map<String, Value>, loc: &Loc, key: &str) -> Lookup {
    let types = types_of(schema);
    let absent = |types: BTreeSet<String>| Lookup {
        not_object: types,
        at: Some(loc.clone()),
        ..Lookup::default()
    };
    if key == ITEM {
        if !types.is_empty() && !types.contains("array") {
            return absent(types);
        }
        return match schema.get("items") {
            Some(_) => Lookup {
                found: vec![child(loc, &["items"])],
                ..Lookup::default()
            },
            None => Lookup::open(),
        };
    }
    if !types.is_empty() && !types.contains("object") {
        return absent(types);
    }
    let closed = matches!(schema.get("additionalProperties"), Some(Value::Bool(false)))
        || matches!(
            schema.get("unevaluatedProperties"),
            Some(Value::Bool(false))
        );
    if let Some(Value::Object(props)) = schema.get("properties") {
        if props.contains_key(key) {
            return Lookup {
                found: vec![child(loc, &["properties", key])],
                ..Lookup::default()
            };
        }
        if !schema.contains_key("patternProperties") {
            if let Some(Value::Object(_)) = schema.get("additionalProperties") {
                return Lookup {
                    found: vec![child(loc, &["additionalProperties"])],
                    ..Lookup::default()
                };
            }
            if !matches!(schema.get("additionalProperties"), Some(Value::Bool(true))) {
                return Lookup {
                    closed,
                    names: props.keys().cloned().collect(),
                    at: Some(child(loc, &["properties"])),
                    ..Lookup::default()
                };
            }
        }
    } else if let Some(Value::Object(_)) = schema.get("additionalProperties")
        && !schema.contains_key("patternProperties")
    {
        return Lookup {
            found: vec![child(loc, &["additionalProperties"])],
            ..Lookup::default()
        };
    } else if closed {
        return Lookup {
            closed,
            at: Some(loc.clone()),
            ..Lookup::default()
        };
    }
    Lookup::open()
}

/// The `type`s a schema names (empty: any).
fn types_of(schema: &serde_json::Map<String, Value>) -> BTreeSet<String> {
    match schema.get("type") {
        Some(Value::String(t)) => [t.clone()].into(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// Adds the texts the schema at `loc` lists (`enum`, `const`) to `allowed`;
/// false when it lets other texts through too.
fn listed(
    api: &Api,
    loc: &Loc,
    depth: usize,
    allowed: &mut Vec<String>,
    at: &mut Option<Loc>,
) -> bool {
    let Ok((loc, value)) = api.resolve(loc) else {
        return false;
    };
    if depth > MAX_DEPTH {
        return false;
    }
    let Some(schema) = value.as_object() else {
        return false;
    };
    if let Some(Value::Array(values)) = schema.get("enum") {
        for v in values.iter().filter_map(Value::as_str) {
            if !allowed.iter().any(|a| a == v) {
                allowed.push(v.to_string());
            }
        }
        at.get_or_insert_with(|| child(&loc, &["enum"]));
        return true;
    }
    if let Some(Value::String(c)) = schema.get("const") {
        if !allowed.contains(c) {
            allowed.push(c.clone());
        }
        at.get_or_insert_with(|| child(&loc, &["const"]));
        return true;
    }
    for combinator in ["anyOf", "oneOf"] {
        if let Some(Value::Array(members)) = schema.get(combinator) {
            return (0..members.len()).all(|i| {
                listed(
                    api,
                    &child(&loc, &[combinator, &i.to_string()]),
                    depth + 1,
                    allowed,
                    at,
                )
            });
        }
    }
    if let Some(Value::Array(members)) = schema.get("allOf") {
        // Any member that lists values bounds the whole.
        return (0..members.len()).any(|i| {
            listed(
                api,
                &child(&loc, &["allOf", &i.to_string()]),
                depth + 1,
                allowed,
                at,
            )
        });
    }
    false
}
