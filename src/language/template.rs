//! minijinja templates over the fields: compiled when a flow loads, rendered
//! while it runs.
//!
//! Every string in a step is a template. A string that is exactly one
//! `{{ expression }}` keeps the expression's native value (so `{{ tries + 1 }}`
//! is a number and `{{ body.tasks }}` a list); any other template renders to
//! text. Undefined names are errors, both here at load time and while running.
//!
//! Errors are formatted by [`describe_error`], never with minijinja's `{:#}`,
//! which would list the variables' values and so print secrets.
//!
//! Secrecy follows what a template *reads*, found twice: statically, by
//! [`scan`]ning the template's tags for every name it mentions (minijinja's own
//! `undeclared_variables` skips some positions, such as a slice's target), and
//! at render time, by a [`Scope`] that notes every field it is asked for.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use indexmap::IndexMap;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use crate::language::raw::{Node, NodeValue};
use crate::language::source::Span;

/// Caps the work one render may do, so a hostile template cannot spin forever.
const FUEL: u64 = 200_000;

/// The longest template handoff compiles. Real ones are a line or two.
pub const MAX_TEMPLATE_BYTES: usize = 32 * 1024;

/// The most operators, filters, lookups and calls one tag may chain. minijinja
/// compiles a chain recursively, so a long one (`1 + 1 + …` 5,000 times)
/// overflows the stack; it survives several thousand, so this leaves room.
pub const MAX_CHAIN: usize = 256;

/// `tojson(indent=…)` beyond this is refused: the indent is not charged to the
/// fuel until the text exists, so a huge one could fill memory first.
const MAX_JSON_INDENT: usize = 16;

/// The environment every flow template compiles and renders in.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(100);
    env.add_filter("b64encode", |s: String| {
        base64::engine::general_purpose::STANDARD.encode(s)
    });
    env.add_filter("tojson", tojson);
    env.add_filter("pointer", pointer);
    env.add_filter("jsonpath", jsonpath);
    env.add_filter("fold_case", fold_case);
    env.add_filter("matches", matches);
    env.add_filter("retry_after", retry_after);
    // A flow's data is JSON, so booleans, lists and mappings print as JSON
    // (`true`, `["a"]`), not as Python would (`True`, `['a']`).
    env.set_formatter(|out, state, value| {
        use minijinja::value::ValueKind;
        let json = match value.kind() {
            ValueKind::Bool => Some(if value.is_true() { "true" } else { "false" }.to_string()),
            ValueKind::Seq | ValueKind::Map => serde_json::to_string(value).ok(),
            _ => None,
        };
        match json {
            Some(text) => out.write_str(&text).map_err(|_| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "write failed")
            }),
            None => minijinja::escape_formatter(out, state, value),
        }
    });
    env
}

fn invalid(message: String) -> minijinja::Error {
    minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message)
}

fn as_json(value: &minijinja::Value) -> Result<Value, minijinja::Error> {
    serde_json::to_value(value).map_err(|_| invalid("the value is not JSON".to_string()))
}

/// `body | pointer('/0/id')`: the value at an RFC 6901 pointer, or none
/// where there is nothing (Arazzo's `$response.body#/0/id`).
fn pointer(value: &minijinja::Value, at: String) -> Result<minijinja::Value, minijinja::Error> {
    if !at.is_empty() && !at.starts_with('/') {
        return Err(invalid(format!(
            "`{at}` is not a JSON pointer: it starts with `/`"
        )));
    }
    let json = as_json(value)?;
    Ok(match json.pointer(&at) {
        Some(found) => to_template_value(found),
        None => minijinja::Value::from(()),
    })
}

/// `body | jsonpath('$.jobs[?@.state == "ready"]')`: the nodes an RFC 9535
/// query selects, as a list.
fn jsonpath(value: &minijinja::Value, query: String) -> Result<minijinja::Value, minijinja::Error> {
    let path = serde_json_path::JsonPath::parse(&query)
        .map_err(|e| invalid(format!("invalid JSONPath `{query}`: {e}")))?;
    let json = as_json(value)?;
    let nodes: Vec<Value> = path.query(&json).all().into_iter().cloned().collect();
    Ok(to_template_value(&Value::Array(nodes)))
}

/// `x | fold_case`: text in lower case, anything else as it is, so that
/// `a | fold_case == b | fold_case` compares text without regard to case.
fn fold_case(value: minijinja::Value) -> minijinja::Value {
    match value.as_str() {
        Some(text) => minijinja::Value::from(text.to_lowercase()),
        None => value,
    }
}

/// `status | matches('^2')`: whether a regular expression finds a match in
/// the value (text as it is, anything else as JSON). `/pattern/flags` takes
/// the flags `i`, `m`, `s` and `x`.
fn matches(value: &minijinja::Value, pattern: String) -> Result<bool, minijinja::Error> {
    let (body, flags) = match pattern
        .strip_prefix('/')
        .and_then(|rest| rest.rsplit_once('/'))
    {
        Some((body, flags)) if flags.chars().all(|c| "gimsuxy".contains(c)) => (body, flags),
        _ => (pattern.as_str(), ""),
    };
    // Compiled once: a poll loop renders the same criterion on every try.
    static COMPILED: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, regex::Regex>>,
    > = std::sync::LazyLock::new(Default::default);
    let cached = COMPILED.lock().ok().and_then(|c| c.get(&pattern).cloned());
    let regex = match cached {
        Some(r) => r,
        None => {
            let r = regex::RegexBuilder::new(body)
                .case_insensitive(flags.contains('i'))
                .multi_line(flags.contains('m'))
                .dot_matches_new_line(flags.contains('s'))
                .ignore_whitespace(flags.contains('x'))
                .size_limit(1 << 20)
                .build()
                .map_err(|e| invalid(format!("invalid regular expression `{pattern}`: {e}")))?;
            if let Ok(mut c) = COMPILED.lock() {
                // Patterns come from flow files: few. A flood is forgotten whole.
                if c.len() >= 256 {
                    c.clear();
                }
                c.insert(pattern.clone(), r.clone());
            }
            r
        }
    };
    let text = match value.as_str() {
        Some(t) => t.to_string(),
        None => serde_json::to_string(&as_json(value)?).unwrap_or_default(),
    };
    Ok(regex.is_match(&text))
}

/// `headers | retry_after(5)`: how long an answer's `Retry-After` asks to
/// wait, as a duration (`30s`), or `seconds` when it names no number of
/// seconds (an HTTP date waits `seconds` too: a template has no clock).
fn retry_after(headers: &minijinja::Value, seconds: f64) -> Result<String, minijinja::Error> {
    let json = as_json(headers)?;
    let asked = json.as_object().and_then(|map| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, v)| match v {
                Value::String(s) => s.trim().parse::<u64>().ok(),
                Value::Array(list) => list.first()?.as_str()?.trim().parse::<u64>().ok(),
                Value::Number(n) => n.as_u64(),
                _ => None,
            })
    });
    Ok(match asked {
        Some(s) => format!("{s}s"),
        None if seconds.is_finite() && seconds >= 0.0 => {
            format!("{}ms", (seconds * 1000.0).round() as u64)
        }
        None => return Err(invalid(format!("`{seconds}` is not a number of seconds"))),
    })
}

/// minijinja's `tojson`, with the indent bounded before any text is made.
fn tojson(
    value: &minijinja::Value,
    indent: Option<minijinja::Value>,
    kwargs: minijinja::value::Kwargs,
) -> Result<minijinja::Value, minijinja::Error> {
    let indent = match indent {
        Some(i) => Some(i),
        None => kwargs.get::<Option<minijinja::Value>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let width = match &indent {
        None => None,
        Some(v) if v.kind() == minijinja::value::ValueKind::Bool => v.is_true().then_some(2),
        Some(v) => Some(usize::try_from(v.clone())?),
    };
    let bad =
        |m: &str| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, m.to_string());
    let text = match width {
        Some(w) if w > MAX_JSON_INDENT => {
            return Err(bad("`tojson` indents by at most 16 spaces"));
        }
        Some(w) => {
            let pad = " ".repeat(w);
            let mut out = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            serde::Serialize::serialize(value, &mut ser)
                .map_err(|_| bad("cannot serialize to JSON"))?;
            String::from_utf8(out).map_err(|_| bad("cannot serialize to JSON"))?
        }
        None => serde_json::to_string(value).map_err(|_| bad("cannot serialize to JSON"))?,
    };
    Ok(minijinja::Value::from_safe_string(text))
}

#[derive(Debug, Clone)]
pub enum TemplateKind {
    /// No template syntax at all: the YAML value as written.
    Literal(Value),
    /// Renders to text.
    Text,
    /// One expression whose value is kept as it is.
    Expr(String),
}

/// A compiled template and what it reads.
#[derive(Debug, Clone)]
pub struct Template {
    pub source: String,
    pub span: Span,
    pub kind: TemplateKind,
    /// The top-level names it reads: field names, checked at load time.
    pub reads: BTreeSet<String>,
    /// Every name its tags mention outside attribute, filter and test
    /// positions, `reads` included: a superset, which is what secrecy needs.
    pub mentions: BTreeSet<String>,
    /// The filters and tests it uses, which minijinja checks only at run time.
    pub filters: BTreeSet<String>,
    pub tests: BTreeSet<String>,
    /// Compiled at its first render, then reused.
    compiled: Compiled,
    /// The expression in a shape handoff evaluates itself, when it is one.
    pub simple: Option<Box<crate::language::simple::Simple>>,
}

/// A template compiled once, in an environment of its own holding only it,
/// at its first render: parsing it again on every render was a large part
/// of a dry run's time. Clones of the template share it.
#[derive(Debug, Clone, Default)]
struct Compiled(Arc<OnceLock<Option<Environment<'static>>>>);

/// The name of the one template in a [`Compiled`] environment.
const COMPILED: &str = "t";
/// Where an expression's value is left: `{% set … %}` keeps it as a value.
const VALUE: &str = "__handoff_value";

/// A compile problem, with the span to point at.
pub struct TemplateError {
    pub message: String,
    pub span: Span,
}

impl Template {
    /// Compiles a YAML scalar as a template.
    pub fn compile(env: &Environment<'static>, node: &Node) -> Result<Template, TemplateError> {
        let text = match &node.value {
            NodeValue::Str(s) => s.clone(),
            NodeValue::Seq(_) | NodeValue::Map(_) => {
                return Err(TemplateError {
                    message: format!("expected text or a template, found {}", node.type_name()),
                    span: node.span,
                });
            }
            _ => {
                return Ok(Template {
                    source: node.scalar_text().unwrap_or_default(),
                    span: node.span,
                    kind: TemplateKind::Literal(node.to_json()),
                    reads: BTreeSet::new(),
                    mentions: BTreeSet::new(),
                    filters: BTreeSet::new(),
                    tests: BTreeSet::new(),
                    compiled: Compiled::default(),
                    simple: None,
                });
            }
        };
        Template::compile_str(env, node.span, &text)
    }

    pub fn compile_str(
        env: &Environment<'static>,
        span: Span,
        text: &str,
    ) -> Result<Template, TemplateError> {
        if !has_syntax(text) {
            return Ok(Template {
                source: text.to_string(),
                span,
                kind: TemplateKind::Literal(Value::String(text.to_string())),
                reads: BTreeSet::new(),
                mentions: BTreeSet::new(),
                filters: BTreeSet::new(),
                tests: BTreeSet::new(),
                compiled: Compiled::default(),
                simple: None,
            });
        }
        let scanned = scan(text, false).map_err(|message| TemplateError { message, span })?;
        let compiled = env
            .template_from_str(text)
            .map_err(|e| positioned(e, span))?;
        let reads = filter_globals(env, compiled.undeclared_variables(false));
        let mentions = scanned.mentions.union(&reads).cloned().collect();
        let kind = match single_expression(text) {
            Some(expr) if env.compile_expression(expr).is_ok() => {
                TemplateKind::Expr(expr.to_string())
            }
            _ => TemplateKind::Text,
        };
        let simple = match &kind {
            TemplateKind::Expr(expr) => crate::language::simple::Simple::parse(expr).map(Box::new),
            _ => None,
        };
        Ok(Template {
            source: text.to_string(),
            span,
            kind,
            reads,
            mentions,
            filters: scanned.filters,
            tests: scanned.tests,
            compiled: Compiled::default(),
            simple,
        })
    }

    /// Compiles a condition: a bare expression such as `tries >= max_tries`.
    pub fn compile_condition(
        env: &Environment<'static>,
        node: &Node,
    ) -> Result<Template, TemplateError> {
        let Some(text) = node.scalar_text() else {
            return Err(TemplateError {
                message: format!("expected a condition, found {}", node.type_name()),
                span: node.span,
            });
        };
        let expr = single_expression(&text).unwrap_or(&text).to_string();
        let scanned = scan(&expr, true).map_err(|message| TemplateError {
            message,
            span: node.span,
        })?;
        let compiled = env
            .compile_expression(&expr)
            .map_err(|e| positioned(e, node.span))?;
        let reads = filter_globals(env, compiled.undeclared_variables(false));
        let mentions = scanned.mentions.union(&reads).cloned().collect();
        Ok(Template {
            source: text.clone(),
            span: node.span,
            simple: crate::language::simple::Simple::parse(&expr).map(Box::new),
            kind: TemplateKind::Expr(expr),
            reads,
            mentions,
            filters: scanned.filters,
            tests: scanned.tests,
            compiled: Compiled::default(),
        })
    }

    /// This template's own compiled environment; `None` when it does not
    /// compile there (then each render compiles it, as before).
    fn compiled(&self, env: &Environment<'static>) -> Option<&Environment<'static>> {
        self.compiled
            .0
            .get_or_init(|| {
                let text = match &self.kind {
                    TemplateKind::Literal(_) => return None,
                    TemplateKind::Text => self.source.clone(),
                    TemplateKind::Expr(expr) => format!("{{% set {VALUE} = ({expr}) %}}"),
                };
                let mut own = env.clone();
                own.add_template_owned(COMPILED, text).ok()?;
                Some(own)
            })
            .as_ref()
    }

    pub fn is_literal(&self) -> bool {
        matches!(self.kind, TemplateKind::Literal(_))
    }

    /// Renders in a scope, which notes what the template read. The error
    /// text quotes no value, but may carry data: redact it before showing.
    pub fn render(&self, env: &Environment<'static>, scope: &Arc<Scope>) -> Result<Value, String> {
        let ctx = || minijinja::Value::from_dyn_object(scope.clone());
        match &self.kind {
            TemplateKind::Literal(v) => Ok(v.clone()),
            TemplateKind::Text => match self.compiled(env) {
                Some(own) => own.get_template(COMPILED).and_then(|t| t.render(ctx())),
                None => env.render_str(&self.source, ctx()),
            }
            .map(Value::String)
            .map_err(|e| describe_error(&e)),
            TemplateKind::Expr(expr) => {
                let value = match self.compiled(env) {
                    Some(own) => {
                        let t = own.get_template(COMPILED).map_err(|e| describe_error(&e))?;
                        let done = t.render_captured(ctx()).map_err(|e| describe_error(&e))?;
                        done.state()
                            .lookup(VALUE)
                            .unwrap_or(minijinja::Value::UNDEFINED)
                    }
                    None => env
                        .compile_expression(expr)
                        .map_err(|e| describe_error(&e))?
                        .eval(ctx())
                        .map_err(|e| describe_error(&e))?,
                };
                if value.is_undefined() {
                    return Err("undefined value".to_string());
                }
                serde_json::to_value(&value)
                    .map_err(|_| "the value cannot be represented as data".to_string())
            }
        }
    }
}

/// Filter names minijinja and handoff may offer, for "did you mean": each is
/// confirmed against the environment before it is suggested.
const FILTER_NAMES: [&str; 50] = [
    "abs",
    "attr",
    "b64encode",
    "batch",
    "bool",
    "capitalize",
    "chain",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
    "zip",
    "format",
];
const TEST_NAMES: [&str; 33] = [
    "boolean",
    "defined",
    "divisibleby",
    "endingwith",
    "eq",
    "equalto",
    "escaped",
    "even",
    "false",
    "filter",
    "float",
    "ge",
    "gt",
    "in",
    "integer",
    "iterable",
    "le",
    "lower",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "safe",
    "sameas",
    "sequence",
    "startingwith",
    "string",
    "test",
    "true",
    "undefined",
    "upper",
];

/// Which filter and test names an environment knows. minijinja keeps its
/// registry private and checks names only when rendering, so each name is
/// tried once on a throwaway render and the answer kept.
#[derive(Default)]
pub struct Known {
    filters: std::collections::HashMap<String, bool>,
    tests: std::collections::HashMap<String, bool>,
}

impl Known {
    pub fn filter(&mut self, env: &Environment<'static>, name: &str) -> bool {
        let expr = format!("none | {name}");
        probe(
            &mut self.filters,
            env,
            name,
            &expr,
            minijinja::ErrorKind::UnknownFilter,
        )
    }

    pub fn test(&mut self, env: &Environment<'static>, name: &str) -> bool {
        let expr = format!("none is {name}");
        probe(
            &mut self.tests,
            env,
            name,
            &expr,
            minijinja::ErrorKind::UnknownTest,
        )
    }

    /// The filters the environment offers, to suggest from.
    pub fn filter_names(&mut self, env: &Environment<'static>) -> Vec<&'static str> {
        FILTER_NAMES
            .into_iter()
            .filter(|n| self.filter(env, n))
            .collect()
    }

    /// The tests the environment offers, to suggest from.
    pub fn test_names(&mut self, env: &Environment<'static>) -> Vec<&'static str> {
        TEST_NAMES
            .into_iter()
            .filter(|n| self.test(env, n))
            .collect()
    }
}

fn probe(
    cache: &mut std::collections::HashMap<String, bool>,
    env: &Environment<'static>,
    name: &str,
    expr: &str,
    unknown: minijinja::ErrorKind,
) -> bool {
    if let Some(known) = cache.get(name) {
        return *known;
    }
    let known = match env.compile_expression(expr) {
        Ok(e) => !matches!(e.eval(()), Err(err) if err.kind() == unknown),
        Err(_) => false,
    };
    cache.insert(name.to_string(), known);
    known
}

/// What a template sees while it renders: the fields, converted only when
/// asked for, and for a `where` condition an item whose keys come first.
/// Every field asked for is noted, so the caller knows what was read.
#[derive(Debug)]
pub struct Scope {
    fields: Arc<IndexMap<String, Value>>,
    item: Option<minijinja::Value>,
    /// Fields read so far, by their index in `fields`, converted once each.
    /// A template reads a few: a list beats hashing the name again.
    read: Mutex<Vec<(usize, minijinja::Value)>>,
}

impl Scope {
    pub fn new(fields: Arc<IndexMap<String, Value>>) -> Arc<Scope> {
        Scope::with_item(fields, None)
    }

    pub fn with_item(
        fields: Arc<IndexMap<String, Value>>,
        item: Option<minijinja::Value>,
    ) -> Arc<Scope> {
        Arc::new(Scope {
            fields,
            item,
            read: Mutex::new(Vec::new()),
        })
    }

    /// The fields read so far.
    pub fn read(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.read_any(|name| {
            names.push(name.to_string());
            false
        });
        names
    }

    /// Whether any field read so far is one `pick` picks.
    pub fn read_any(&self, mut pick: impl FnMut(&str) -> bool) -> bool {
        let Ok(read) = self.read.lock() else {
            return false;
        };
        read.iter().any(|(i, _)| {
            self.fields
                .get_index(*i)
                .is_some_and(|(name, _)| pick(name))
        })
    }
}

impl Object for Scope {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, name: &str) -> Option<minijinja::Value> {
        if let Some(item) = &self.item {
            if name == "item" {
                return Some(item.clone());
            }
            if let Some(v) = item.get_attr(name).ok().filter(|v| !v.is_undefined()) {
                return Some(v);
            }
        }
        let mut read = self.read.lock().ok()?;
        let fields = &self.fields;
        let seen = read
            .iter()
            .find(|(i, _)| fields.get_index(*i).is_some_and(|(n, _)| n == name));
        if let Some((_, v)) = seen {
            return Some(v.clone());
        }
        let (index, _, value) = fields.get_full(name)?;
        let value = to_template_value(value);
        read.push((index, value.clone()));
        Some(value)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Empty
    }
}

/// A field's value as a template sees it: what minijinja's serde bridge
/// makes of it, with scalars (most reads: a counter, an id) made directly.
fn to_template_value(value: &Value) -> minijinja::Value {
    match value {
        Value::Null => minijinja::Value::from(()),
        Value::Bool(b) => minijinja::Value::from(*b),
        Value::String(s) => minijinja::Value::from(s.as_str()),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => minijinja::Value::from(u),
            (None, Some(i), _) => minijinja::Value::from(i),
            (None, None, Some(f)) => minijinja::Value::from(f),
            _ => minijinja::Value::from(minijinja::value::Serde(value)),
        },
        Value::Array(_) | Value::Object(_) => {
            minijinja::Value::from(minijinja::value::Serde(value))
        }
    }
}

/// What [`scan`] learns from a template's tags.
#[derive(Debug, Default)]
pub struct Scanned {
    pub mentions: BTreeSet<String>,
    /// Names used as filters (`| name`) and as tests (`is name`).
    pub filters: BTreeSet<String>,
    pub tests: BTreeSet<String>,
}

/// Reads a template's tags (or, with `whole`, the text as one expression)
/// without compiling it: the names it mentions, and whether any tag chains
/// more than [`MAX_CHAIN`] operators. Strings are skipped; names after `.`,
/// `|` or `is`, and keyword arguments, are not mentions.
pub fn scan(text: &str, whole: bool) -> Result<Scanned, String> {
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(format!(
            "this template is {} KB; a template may be at most {} KB",
            text.len().div_ceil(1024),
            MAX_TEMPLATE_BYTES / 1024
        ));
    }
    let mut out = Scanned::default();
    if whole {
        scan_tag(text, false, &mut out)?;
        return Ok(out);
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        let close = match (bytes[i], bytes[i + 1]) {
            (b'{', b'{') => "}}",
            (b'{', b'%') => "%}",
            (b'{', b'#') => {
                i = text[i + 2..]
                    .find("#}")
                    .map_or(bytes.len(), |j| i + 2 + j + 2);
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        let start = i + 2;
        let end = tag_end(text, start, close);
        scan_tag(&text[start..end], close == "%}", &mut out)?;
        i = end + 2;
    }
    Ok(out)
}

/// Where a tag opened at `start` closes, skipping quoted strings. It walks
/// bytes, and compares bytes: `i` may stand inside a multi-byte character,
/// but every index it returns is just before ASCII, so a char boundary.
fn tag_end(text: &str, start: usize, close: &str) -> usize {
    let bytes = text.as_bytes();
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'"' | b'\'') => i = skip_string(text, i, q),
            _ if bytes[i..].starts_with(close.as_bytes()) => return i,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The index just past a string literal opened at `i` (a char boundary,
/// or the end): an escape skips the whole character after the backslash.
fn skip_string(text: &str, i: usize, quote: u8) -> usize {
    let bytes = text.as_bytes();
    let mut j = i + 1;
    while j < bytes.len() && bytes[j] != quote {
        j += match bytes[j] {
            b'\\' => 1 + text[j + 1..].chars().next().map_or(0, char::len_utf8),
            _ => 1,
        };
    }
    (j + 1).min(bytes.len())
}

const OPERATOR_WORDS: [&str; 6] = ["and", "or", "not", "in", "if", "else"];
const LITERAL_WORDS: [&str; 6] = ["true", "false", "none", "True", "False", "None"];

/// `statement`: a `{% … %}` tag, whose first word is a keyword, not a name.
fn scan_tag(tag: &str, statement: bool, out: &mut Scanned) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let mut chain = 0usize;
    let mut prev = ""; // the previous significant token
    let mut before_prev = "";
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let (token, next) = if c == b'"' || c == b'\'' {
            ("\"\"", skip_string(tag, i, c))
        } else if c.is_ascii_digit() {
            let mut j = i;
            while j < bytes.len()
                && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_' || bytes[j] == b'.')
            {
                j += 1;
            }
            ("0", j)
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            (&tag[i..j], j)
        } else {
            let len = tag[i..].chars().next().map_or(1, char::len_utf8);
            (&tag[i..i + len], i + len)
        };
        let is_name = token
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
        if is_name {
            if OPERATOR_WORDS.contains(&token) || token == "is" {
                chain += 1;
            } else if LITERAL_WORDS.contains(&token) || (statement && prev.is_empty()) {
            } else {
                let after = tag[next..].trim_start();
                let kwarg = after.starts_with('=') && !after.starts_with("==");
                let named_op = prev == "."
                    || prev == "|"
                    || prev == "is"
                    || (prev == "not" && before_prev == "is");
                if !kwarg && !named_op {
                    out.mentions.insert(token.to_string());
                }
                if prev == "|" {
                    out.filters.insert(token.to_string());
                } else if prev == "is" || (prev == "not" && before_prev == "is") {
                    out.tests.insert(token.to_string());
                }
            }
        } else if matches!(
            token,
            "+" | "-" | "*" | "/" | "%" | "~" | "|" | "." | "[" | "(" | "=" | "<" | ">" | "!"
        ) {
            chain += 1;
        }
        if chain > MAX_CHAIN {
            return Err(format!(
                "this template chains more than {MAX_CHAIN} operators, filters or lookups in one tag; split it across `set` steps"
            ));
        }
        before_prev = prev;
        prev = token;
        i = next;
    }
    Ok(())
}

/// Text has template syntax when it opens a block, an expression or a comment.
fn has_syntax(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// `{{ expr }}` and nothing else: the inner expression.
fn single_expression(text: &str) -> Option<&str> {
    let t = text.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.trim_start_matches('-').trim_end_matches('-');
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

fn filter_globals(
    env: &Environment<'static>,
    names: impl IntoIterator<Item = String>,
) -> BTreeSet<String> {
    let globals: BTreeSet<&str> = env.globals().map(|(n, _)| n).collect();
    names
        .into_iter()
        .filter(|n| !globals.contains(n.as_str()))
        .collect()
}

/// minijinja's short error text: the kind and the detail, no values.
pub fn describe_error(err: &minijinja::Error) -> String {
    let mut msg = err.kind().to_string();
    if let Some(detail) = err.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    msg
}

/// A compile error, pointed at the scalar that holds the template. (The
/// precise range inside it needs minijinja's `debug` feature, which we leave
/// off because its alternate error form prints variable values.)
fn positioned(err: minijinja::Error, span: Span) -> TemplateError {
    TemplateError {
        message: format!("invalid template: {}", describe_error(&err)),
        span,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(text: &str) -> Template {
        let env = environment();
        Template::compile_str(&env, Span::new(0, text.len()), text)
            .ok()
            .unwrap()
    }

    fn scope(v: Value) -> Arc<Scope> {
        let Value::Object(map) = v else { panic!() };
        Scope::new(Arc::new(map.into_iter().collect()))
    }

    #[test]
    fn single_expressions_keep_their_type() {
        let env = environment();
        let ctx = scope(json!({"tries": 2, "xs": [1, 2]}));
        assert_eq!(
            compile("{{ tries + 1 }}").render(&env, &ctx).unwrap(),
            json!(3)
        );
        assert_eq!(
            compile("{{ xs }}").render(&env, &ctx).unwrap(),
            json!([1, 2])
        );
        assert_eq!(
            compile("n={{ tries }}").render(&env, &ctx).unwrap(),
            json!("n=2")
        );
        assert_eq!(compile("plain").render(&env, &ctx).unwrap(), json!("plain"));
    }

    #[test]
    fn reads_are_top_level_names_without_globals() {
        let t = compile("{{ a.b }}{% for i in range(3) %}{{ c }}{% endfor %}");
        assert_eq!(t.reads.into_iter().collect::<Vec<_>>(), vec!["a", "c"]);
    }

    #[test]
    fn undefined_names_fail_without_printing_values() {
        let env = environment();
        let ctx = scope(json!({"token": "hunter2"}));
        let err = compile("{{ token ~ missing }}")
            .render(&env, &ctx)
            .unwrap_err();
        assert!(err.contains("undefined"), "{err}");
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn slices_and_filters_are_mentions_and_reads() {
        for text in [
            "{{ token[1:] }}",
            "{{ token[::-1] }}",
            "{{ token[2:] | upper }}",
            "{{ token | list }}",
            "x{% set t = token %}{{ t }}",
        ] {
            let t = compile(text);
            assert!(t.mentions.contains("token"), "{text}: {:?}", t.mentions);
            let ctx = scope(json!({"token": "hunter2", "other": 1}));
            t.render(&environment(), &ctx).unwrap();
            assert_eq!(ctx.read(), ["token"], "{text}");
        }
        let t = compile("{{ a.token | default(x=1) }}{% if b is defined %}{% endif %}");
        assert_eq!(
            t.mentions.into_iter().collect::<Vec<_>>(),
            vec!["a", "b"],
            "attributes, filters, tests and keyword names are not mentions"
        );
    }

    #[test]
    fn long_chains_and_long_templates_are_refused_before_compiling() {
        let env = environment();
        for chain in [
            " + 1",
            " ~ 'a'",
            " and true",
            " | string",
            ".a",
            " if true else 1",
        ] {
            let text = format!("{{{{ x{} }}}}", chain.repeat(1_000));
            let err = Template::compile_str(&env, Span::new(0, 1), &text)
                .err()
                .unwrap();
            assert!(err.message.contains("chains more than"), "{}", err.message);
        }
        let fine = format!("{{{{ 1{} }}}}", " + 1".repeat(200));
        assert!(Template::compile_str(&env, Span::new(0, 1), &fine).is_ok());
        let long = "{{ 1 }}".repeat(6000);
        let err = Template::compile_str(&env, Span::new(0, 1), &long)
            .err()
            .unwrap();
        assert!(err.message.contains("at most 32 KB"), "{}", err.message);
    }

    #[test]
    fn scanning_never_slices_inside_a_character() {
        // From the fuzzer: a multi-byte character inside a tag, and after a
        // backslash in a string.
        for text in [
            "{{ 1 ~ \u{fffd} ~ 2 }}",
            "{{ '\\é' ~ x }}",
            "{{ \"\\\u{fffd}\" }}{% if é %}",
            "{{ 'unclosed \\",
            "{{ é",
        ] {
            let _ = scan(text, false);
            let _ = scan(text, true);
        }
        let crash = include_bytes!("../../tests/broken/fuzz_multibyte_in_tag.yaml");
        let _ = scan(&String::from_utf8_lossy(crash), false);
    }

    #[test]
    fn booleans_render_as_json() {
        let env = environment();
        let ctx = scope(json!({"done": false, "ok": true}));
        assert_eq!(
            compile("done={{ done }}, ok={{ ok }}")
                .render(&env, &ctx)
                .unwrap(),
            json!("done=false, ok=true")
        );
        assert_eq!(
            compile("{{ done }}").render(&env, &ctx).unwrap(),
            json!(false)
        );
        let ctx = scope(json!({"xs": ["a", 1], "m": {"k": "v"}}));
        assert_eq!(
            compile("{{ xs }} {{ m }}").render(&env, &ctx).unwrap(),
            json!(r#"["a",1] {"k":"v"}"#)
        );
    }

    #[test]
    fn tojson_indent_is_bounded() {
        let env = environment();
        let ctx = scope(json!({"xs": [1]}));
        let err = compile("{{ xs | tojson(indent=100000000) }}")
            .render(&env, &ctx)
            .unwrap_err();
        assert!(err.contains("at most 16"), "{err}");
        let ok = compile("{{ xs | tojson(indent=2) }}")
            .render(&env, &ctx)
            .unwrap();
        assert_eq!(ok, json!("[\n  1\n]"));
    }
}
