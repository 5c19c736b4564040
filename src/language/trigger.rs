//! A flow's `trigger:` section: how an external event (a webhook's JSON
//! body) becomes a run's inputs, under `handoff serve`.
//!
//! ```yaml
//! trigger:
//!   event: { id: text, instanceId: text, status: { enum: [passed, failed] } }
//!   inputs:
//!     instance_id: "{{ event.instanceId }}"
//!     outcome: "{{ 'Completed' if event.status == 'passed' else 'Canceled' }}"
//!   idempotency_key: "{{ event.id }}"
//!   signature: { secret_env: HANDOFF_HOOK_SECRET, header: X-Hub-Signature-256 }
//! ```
//!
//! Templates see `event` (the body) and `headers` (the request's headers,
//! lower-case names), nothing else: an event never reads the flow's fields.
//! Every event key a template reads is declared under `event:` with its type
//! ([`crate::language::event`]), and an event that does not fit starts no run.

use std::collections::BTreeMap;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::language::analyzer::{Analyzer, list};
use crate::language::event::EventShape;
use crate::language::raw::Node;
use crate::language::source::Span;
use crate::language::template::{Scope, Template};

/// What `trigger` takes, and its `signature`.
pub const KEYS: [&str; 4] = ["event", "inputs", "idempotency_key", "signature"];
pub const SIGNATURE_KEYS: [&str; 4] = ["secret_env", "header", "format", "tolerance"];

/// The names a trigger's templates may read.
const NAMES: [&str; 2] = ["event", "headers"];

/// The header a signature comes in unless the flow says otherwise (GitHub's).
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

#[derive(Debug)]
pub struct Trigger {
    /// The event's keys and their types.
    pub event: EventShape,
    /// Input field → the template that fills it from the event.
    pub inputs: IndexMap<String, Template>,
    /// Two events with the same key start one run.
    pub idempotency_key: Option<Template>,
    pub signature: Option<Signature>,
    pub span: Span,
}

/// The header a timestamped signature comes in unless the flow says otherwise.
pub const DEFAULT_TIMESTAMPED_HEADER: &str = "X-Signature";

/// How long a timestamped signature holds, unless the flow says otherwise.
pub const DEFAULT_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(300);

/// An HMAC-SHA256 of the raw body, with a secret shared with the sender.
#[derive(Debug, Clone)]
pub struct Signature {
    /// The header it comes in.
    pub header: String,
    /// The environment variable that holds the shared secret.
    pub secret_env: String,
    /// `sha256=<hex>` of the body (GitHub's form), or `t=…,v1=<hex>` of
    /// `t.body` (Stripe's and Slack's), which expires.
    pub timestamped: bool,
    /// How far a timestamped signature's time may be from the worker's.
    pub tolerance: std::time::Duration,
}

impl Trigger {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<Trigger> {
        let body = cx.body(node, "`trigger`", &KEYS, &["inputs"])?;
        let Some(event_node) = body.get("event") else {
            cx.error_help(
                node.span,
                "`trigger` needs `event:`, the event's keys and their types",
                "declare each key the trigger reads, such as `event: { instanceId: text, passed: boolean }`; an event that does not fit is refused with 422",
            );
            return None;
        };
        let event = EventShape::parse(cx, event_node)?;
        let inputs_node = body.get("inputs")?;
        let Some(entries) = inputs_node.as_map() else {
            cx.error(
                inputs_node.span,
                format!(
                    "`trigger.inputs` maps input fields to templates over `event`, found {}",
                    inputs_node.type_name()
                ),
            );
            return None;
        };
        let mut ok = true;
        let mut inputs = IndexMap::new();
        for (key, value) in entries {
            let Some(name) = key.as_str() else {
                cx.not_text(key, "`trigger.inputs`");
                ok = false;
                continue;
            };
            match cx.fields.get(name) {
                Some(f) if f.input => {}
                Some(_) => {
                    cx.error_help(
                        key.span,
                        format!("field `{name}` is not an input"),
                        "a trigger fills input fields: declare it with `input: true`",
                    );
                    ok = false;
                }
                None => {
                    let names: Vec<&str> = cx
                        .fields
                        .values()
                        .filter(|f| f.input)
                        .map(|f| f.name.as_str())
                        .collect();
                    cx.error_help(
                        key.span,
                        format!("the flow has no field `{name}`"),
                        crate::language::diagnostic::did_you_mean(name, names.iter().copied())
                            .unwrap_or_else(|| format!("its inputs are {}", list(&names))),
                    );
                    ok = false;
                }
            }
            match event_template(cx, value, &event) {
                Some(t) => {
                    inputs.insert(name.to_string(), t);
                }
                None => ok = false,
            }
        }
        let idempotency_key = match body.get("idempotency_key") {
            Some(n) => Some(event_template(cx, n, &event)?),
            None => None,
        };
        let signature = match body.get("signature") {
            Some(n) => Some(parse_signature(cx, n)?),
            None => None,
        };
        ok.then_some(Trigger {
            event,
            inputs,
            idempotency_key,
            signature,
            span: node.span,
        })
    }

    /// The inputs an event gives, as JSON, in the order the flow lists them.
    /// An error names the input whose template failed; it quotes no value.
    pub fn inputs(
        &self,
        env: &minijinja::Environment<'static>,
        event: &Value,
        headers: &BTreeMap<String, String>,
    ) -> Result<IndexMap<String, Value>, String> {
        let scope = scope(event, headers);
        let mut out = IndexMap::new();
        for (name, template) in &self.inputs {
            let value = template
                .render(env, &scope)
                .map_err(|e| format!("`trigger.inputs.{name}`: {e}"))?;
            out.insert(name.clone(), value);
        }
        Ok(out)
    }

    /// The event's idempotency key, when the trigger has one and it is not empty.
    pub fn key(
        &self,
        env: &minijinja::Environment<'static>,
        event: &Value,
        headers: &BTreeMap<String, String>,
    ) -> Result<Option<String>, String> {
        let Some(template) = &self.idempotency_key else {
            return Ok(None);
        };
        let value = template
            .render(env, &scope(event, headers))
            .map_err(|e| format!("`trigger.idempotency_key`: {e}"))?;
        let text = crate::language::fields::display_text(&value);
        Ok((!text.trim().is_empty()).then_some(text))
    }
}

fn scope(event: &Value, headers: &BTreeMap<String, String>) -> Arc<Scope> {
    let mut names = IndexMap::new();
    names.insert("event".to_string(), event.clone());
    names.insert(
        "headers".to_string(),
        serde_json::to_value(headers).unwrap_or_default(),
    );
    Scope::new(Arc::new(names))
}

/// A template that reads only `event` and `headers`, and of the event only
/// the keys `shape` declares.
fn event_template(cx: &mut Analyzer, node: &Node, shape: &EventShape) -> Option<Template> {
    let template = cx.template_over(
        node,
        &NAMES,
        "a trigger sees the event as `event` and its headers as `headers`, not the flow's fields",
    )?;
    shape
        .reads_declared(cx, &template, "event", "trigger.event")
        .then_some(template)
}

fn parse_signature(cx: &mut Analyzer, node: &Node) -> Option<Signature> {
    let body = cx.body(
        node,
        "`trigger.signature`",
        &SIGNATURE_KEYS,
        &["secret_env"],
    )?;
    let secret_env = cx.string(body.get("secret_env")?, "`secret_env`")?;
    if secret_env.is_empty()
        || !secret_env
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        cx.error(
            body.get("secret_env")?.span,
            "`secret_env` names an environment variable, such as `HANDOFF_HOOK_SECRET`",
        );
        return None;
    }
    let timestamped = match body.get("format") {
        None => false,
        Some(n) => match n.as_str() {
            Some("github") => false,
            Some("timestamped") => true,
            _ => {
                cx.error_help(
                    n.span,
                    "`format` is `github` or `timestamped`",
                    "`github`: `sha256=<hex>` of the body; `timestamped`: `t=<unix seconds>,v1=<hex>` of `t.body`, which a replay cannot reuse later",
                );
                return None;
            }
        },
    };
    let tolerance = match body.get("tolerance") {
        None => DEFAULT_TOLERANCE,
        Some(n) if !timestamped => {
            cx.error(n.span, "`tolerance` goes with `format: timestamped`");
            return None;
        }
        Some(n) => cx.duration(n)?,
    };
    let header = match body.get("header") {
        Some(n) => {
            let h = cx.string(n, "`header`")?;
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                cx.error(n.span, "`header` is a header name, such as `X-Signature`");
                return None;
            }
            h
        }
        None if timestamped => DEFAULT_TIMESTAMPED_HEADER.to_string(),
        None => DEFAULT_SIGNATURE_HEADER.to_string(),
    };
    Some(Signature {
        header,
        secret_env,
        timestamped,
        tolerance,
    })
}
