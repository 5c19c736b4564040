//! The helpers every parser of the flow language calls: the [`Analyzer`],
//! which collects diagnostics while it checks a node's shape, keys, types,
//! templates, field references and step targets. Step kinds parse their own
//! bodies with it (see [`crate::steps`]); [`crate::language::analyze`] drives it over a
//! whole flow.

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use minijinja::Environment;

use crate::language::diagnostic::{Diagnostic, did_you_mean};
use crate::language::fields::FieldDecl;
use crate::language::fields::{FieldType, TYPE_NAMES};
use crate::language::raw::{Node, NodeValue};
use crate::language::source::{Source, Span};
use crate::language::target::Target;
use crate::language::template::Template;

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
    /// The flow has an `auth:` section, which `http` steps may use.
    pub has_auth: bool,
    /// Set while a block's steps are parsed: a `for_each` cannot nest.
    pub in_block: bool,
    /// While a block is parsed, every name its templates and field
    /// references touch: what an item must be given of the flow's fields.
    pub touched: Option<std::collections::BTreeSet<String>>,
    /// The blocks `for_each` steps declared, parsed after the flow's own
    /// steps (see [`crate::language::analyze`]), in this order.
    pub pending: Vec<PendingBlock>,
    /// The API descriptions under `sources:`, by name, for `call:` steps.
    pub sources: IndexMap<String, std::sync::Arc<crate::language::openapi::sources::ApiSource>>,
    /// Sources whose description did not load (already reported).
    pub sources_failed: Vec<String>,
    /// With `sources:`, what each template reads by path, where it is: held
    /// against the response schemas of `call:` steps once all are parsed.
    pub readings: Vec<(Span, crate::language::paths::Reading)>,
    /// Descriptions read before the analysis (an Arazzo document's), by path.
    pub preloaded: Vec<(
        std::path::PathBuf,
        std::sync::Arc<crate::language::openapi::Api>,
    )>,
    known: crate::language::template::Known,
    diagnostics: &'a mut Vec<Diagnostic>,
}

/// A `for_each`'s block, waiting to be parsed once the flow's own steps are.
pub struct PendingBlock {
    /// The `steps:` list.
    pub steps: Node,
    /// The item's field (`as:`), then the block's own `fields:`.
    pub locals: Vec<FieldDecl>,
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
    /// An analyzer reporting into `diagnostics`, for a flow in `source`.
    pub fn new(
        source: Arc<Source>,
        env: &'a Environment<'static>,
        diagnostics: &'a mut Vec<Diagnostic>,
    ) -> Analyzer<'a> {
        Analyzer {
            source,
            env,
            fields: IndexMap::new(),
            ids: IndexMap::new(),
            has_auth: false,
            in_block: false,
            touched: None,
            pending: Vec::new(),
            sources: IndexMap::new(),
            sources_failed: Vec::new(),
            readings: Vec::new(),
            preloaded: Vec::new(),
            known: crate::language::template::Known::default(),
            diagnostics,
        }
    }

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
        match crate::language::duration::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(node.span, format!("invalid duration: {e}"));
                None
            }
        }
    }

    pub fn field_type(&mut self, node: &Node, name: &str) -> Option<FieldType> {
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
        if let Some(touched) = &mut self.touched {
            touched.extend(template.mentions.iter().cloned());
        }
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
            Ok(t) => {
                self.truth_tests(&t, false);
                self.checked(t)
            }
            Err(e) => {
                self.error(e.span, e.message);
                None
            }
        }
    }

    /// A template that may read only `names` (a trigger's `event`), not fields.
    pub fn template_over(&mut self, node: &Node, names: &[&str], help: &str) -> Option<Template> {
        let template = match Template::compile(self.env, node) {
            Ok(t) if !self.known_names(&t) => return None,
            Ok(t) => t,
            Err(e) => {
                self.error(e.span, e.message);
                return None;
            }
        };
        if let Some(stray) = template.reads.iter().find(|r| !names.contains(&r.as_str())) {
            let message = format!("template reads `{stray}`, which it cannot see here");
            self.error_help(template.span, message, help);
            return None;
        }
        Some(template)
    }

    /// A condition such as `tries >= max_tries`.
    pub fn condition(&mut self, node: &Node) -> Option<Template> {
        let template = self.item_condition(node)?;
        self.truth_tests(&template, true);
        self.checked(template)
    }

    /// Warns of each field a template tests for truth that may hold text:
    /// the text `"false"` is true. Numbers and booleans test plainly.
    fn truth_tests(&mut self, template: &Template, whole: bool) {
        let text = match &template.kind {
            crate::language::template::TemplateKind::Expr(e) if whole => e.clone(),
            crate::language::template::TemplateKind::Literal(_) => return,
            _ => template.source.clone(),
        };
        for path in crate::language::paths::truth_tests(&text, whole) {
            // `error.status` is handoff's own: a number, or null without an answer.
            if path[0] == crate::language::fields::ERROR_FIELD
                && path.get(1).is_some_and(|k| k == "status")
            {
                continue;
            }
            let why = match self.fields.get(&path[0]).map(|f| f.ty) {
                Some(FieldType::Text) => "it is a text field",
                Some(FieldType::Json) => "a JSON value may be text",
                _ => continue,
            };
            self.truth_warning(template.span, &path.join("."), why);
        }
    }

    /// `what` is tested for truth, and may be text.
    pub fn truth_warning(&mut self, span: Span, what: &str, why: &str) {
        let d = Diagnostic::warning(format!(
            "`{what}` is tested for truth, but {why}: the text \"false\" is true"
        ))
        .at(&self.source, span)
        .label("compare it explicitly")
        .help(format!(
            "write `{what} == true`, `{what} == 'passed'` or `{what} | length > 0`, whichever is meant"
        ));
        self.push(d);
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
        if ok && !self.sources.is_empty() {
            let reading = match &template.kind {
                crate::language::template::TemplateKind::Expr(e) => {
                    crate::language::paths::reading(e, true)
                }
                crate::language::template::TemplateKind::Text => {
                    crate::language::paths::reading(&template.source, false)
                }
                crate::language::template::TemplateKind::Literal(_) => Default::default(),
            };
            if !reading.paths.is_empty() {
                self.readings.push((template.span, reading));
            }
        }
        ok.then_some(template)
    }

    /// A template whose literal value must fit a field's type.
    pub fn typed_template(&mut self, node: &Node, ty: FieldType, field: &str) -> Option<Template> {
        let template = self.template(node)?;
        if let crate::language::template::TemplateKind::Literal(v) = &template.kind
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
        if let Some(touched) = &mut self.touched {
            touched.insert(name.to_string());
        }
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
                    .unwrap_or_else(|| {
                        if self.in_block {
                            "inside a `for_each`, `goto` names a step of the same block, or `end`, which ends the item".to_string()
                        } else {
                            "`goto` takes a step id, or `end`".to_string()
                        }
                    });
                self.error_help(node.span, format!("no step has the id `{name}`"), help);
                None
            }
        }
    }

    /// A `fields:` mapping: each name checked, each declaration parsed.
    pub fn field_decls(&mut self, node: &Node) -> IndexMap<String, FieldDecl> {
        let mut fields = IndexMap::new();
        let Some(entries) = node.as_map() else {
            self.error(
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
                self.not_text(key, "a field name");
                continue;
            };
            if !is_identifier(name) {
                self.error_help(
                    key.span,
                    format!("`{name}` is not a valid field name"),
                    "use letters, digits and `_`, starting with a letter or `_`, so templates can read it",
                );
                continue;
            }
            if fields.contains_key(name) {
                self.error(key.span, format!("field `{name}` is declared twice"));
                continue;
            }
            if let Some(field) = self.field_decl(name, key.span, decl) {
                fields.insert(name.to_string(), field);
            }
        }
        fields
    }

    fn field_decl(&mut self, name: &str, span: Span, node: &Node) -> Option<FieldDecl> {
        // `name: text` is short for `name: { type: text }`.
        if let Some(ty_name) = node.as_str() {
            let ty = self.field_type(node, ty_name)?;
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
        let body = self.body(
            node,
            &format!("field `{name}`"),
            &crate::language::fields::FIELD_KEYS,
            &["type"],
        )?;
        let ty_node = body.get("type")?;
        let ty = match ty_node.as_str() {
            Some(t) => self.field_type(ty_node, t)?,
            None => {
                self.error(
                    ty_node.span,
                    "`type` must be one of `text`, `number`, `boolean`, `json`, `headers`",
                );
                return None;
            }
        };
        let input = body
            .get("input")
            .and_then(|n| self.boolean(n))
            .unwrap_or(false);
        let secret = body
            .get("secret")
            .and_then(|n| self.boolean(n))
            .unwrap_or(false);
        let env = body
            .get("env")
            .and_then(|n| self.string(n, "an environment variable name"));
        let allow_empty = body
            .get("allow_empty")
            .and_then(|n| self.boolean(n))
            .unwrap_or(false);
        let description = body
            .get("description")
            .and_then(|n| self.string(n, "a description"));
        let default = match body.get("default") {
            Some(n) => match ty.coerce_showing(n.to_json(), !secret) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.error(
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
}
