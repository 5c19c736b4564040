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

use std::collections::BTreeSet;

use base64::Engine as _;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use crate::raw::{Node, NodeValue};
use crate::source::Span;

/// Caps the work one render may do, so a hostile template cannot spin forever.
const FUEL: u64 = 200_000;

/// The environment every flow template compiles and renders in.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(100);
    env.add_filter("b64encode", |s: String| {
        base64::engine::general_purpose::STANDARD.encode(s)
    });
    env
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
}

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
            });
        }
        let compiled = env
            .template_from_str(text)
            .map_err(|e| positioned(e, span))?;
        let reads = filter_globals(env, compiled.undeclared_variables(false));
        let kind = match single_expression(text) {
            Some(expr) if env.compile_expression(expr).is_ok() => {
                TemplateKind::Expr(expr.to_string())
            }
            _ => TemplateKind::Text,
        };
        Ok(Template {
            source: text.to_string(),
            span,
            kind,
            reads,
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
        let compiled = env
            .compile_expression(&expr)
            .map_err(|e| positioned(e, node.span))?;
        let reads = filter_globals(env, compiled.undeclared_variables(false));
        Ok(Template {
            source: text.clone(),
            span: node.span,
            kind: TemplateKind::Expr(expr),
            reads,
        })
    }

    pub fn is_literal(&self) -> bool {
        matches!(self.kind, TemplateKind::Literal(_))
    }

    /// Renders against a context. The error text is safe to show.
    pub fn render(
        &self,
        env: &Environment<'static>,
        ctx: &minijinja::Value,
    ) -> Result<Value, String> {
        match &self.kind {
            TemplateKind::Literal(v) => Ok(v.clone()),
            TemplateKind::Text => env
                .render_str(&self.source, ctx.clone())
                .map(Value::String)
                .map_err(|e| describe_error(&e)),
            TemplateKind::Expr(expr) => {
                let compiled = env
                    .compile_expression(expr)
                    .map_err(|e| describe_error(&e))?;
                let value = compiled.eval(ctx.clone()).map_err(|e| describe_error(&e))?;
                if value.is_undefined() {
                    return Err("undefined value".to_string());
                }
                serde_json::to_value(&value)
                    .map_err(|_| "the value cannot be represented as data".to_string())
            }
        }
    }
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

    #[test]
    fn single_expressions_keep_their_type() {
        let env = environment();
        let ctx =
            minijinja::Value::from(minijinja::value::Serde(json!({"tries": 2, "xs": [1, 2]})));
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
        let ctx = minijinja::Value::from(minijinja::value::Serde(json!({"token": "hunter2"})));
        let err = compile("{{ token ~ missing }}")
            .render(&env, &ctx)
            .unwrap_err();
        assert!(err.contains("undefined"), "{err}");
        assert!(!err.contains("hunter2"));
    }
}
