//! `call`: one operation of an API description under `sources:`, by its
//! `operationId`. The method, path and content type come from the document;
//! `check` holds the parameters and body against it, and at run time the
//! rendered request is validated before it is sent (nothing is sent when it
//! does not match) and the answer against the declared statuses and schema.

use std::sync::Arc;

use base64::Engine;
use serde_json::Value;

use crate::language::analyzer::{Analyzer, list};
use crate::language::diagnostic::{Diagnostic, did_you_mean};
use crate::language::fields::FieldType;
use crate::language::keys::{HEADERS, Key, RETRY, Shape, TIMEOUT, TRACEPARENT, names, opt, req};
use crate::language::openapi::schema::{Problem, coerce, types_of};
use crate::language::openapi::sources::{ApiSource, Credential};
use crate::language::openapi::{Api, In, Loc, Operation, Scheme};
use crate::language::raw::{Node, NodeValue};
use crate::language::source::Span;
use crate::language::template::{Template, TemplateKind};
use crate::run::http::request::{self, HeaderSource, JsonTemplate};
use crate::run::http::send::{self, OutgoingBody, Sending};
use crate::run::retry::Accepted;
use crate::run::step::{ErrorKind, Next, StepCx, StepError};
use crate::run::trace::EventKind;
use crate::run::transport::{MAX_BODY_BYTES, RequestBody};
use crate::steps::http::Accept;

pub const OUTPUTS: &[(&str, FieldType)] = &[
    ("status", FieldType::Number),
    ("headers", FieldType::Headers),
    ("body", FieldType::Json),
];

const MISMATCH: [&str; 2] = ["error", "warn"];

/// What `call` takes, in its long form (`call: source.operationId` is the short one).
pub const KEYS: &[Key] = &[
    req(
        "operation",
        Shape::Template,
        "`source.operationId`: the operation of a description under `sources:`.",
    ),
    opt(
        "params",
        Shape::Pairs,
        "The operation's parameters (path, query, header, cookie) by their own names.",
    ),
    opt(
        "body",
        Shape::Json,
        "The request body: YAML with templates in its strings, checked against the operation's schema.",
    ),
    HEADERS,
    TIMEOUT,
    RETRY,
    TRACEPARENT,
    opt(
        "accept",
        Shape::Accept,
        "Which statuses are success: `2xx` (the default), `any`, or a list such as `[200, 404]`.",
    ),
    opt(
        "on_mismatch",
        Shape::OneOf(&MISMATCH),
        "When the answer breaks the description: `error` (the default; `on_error` can catch it) or `warn`.",
    ),
    opt(
        "idempotency_key",
        Shape::Template,
        "Sent as `Idempotency-Key`: the server acts once per key, so the request may be sent again.",
    ),
];

#[derive(Debug)]
pub struct Call {
    pub source: Arc<ApiSource>,
    /// The operation's id in its document.
    pub operation: String,
    pub op: Arc<Operation>,
    /// `source.operationId`, as the trace, graph and plan name it.
    pub name: String,
    pub params: Vec<(String, Template)>,
    pub body: Option<JsonTemplate>,
    pub headers: Vec<HeaderSource>,
    pub sending: Sending,
    pub accept: Accept,
    pub warn_only: bool,
    pub idempotency_key: Option<Template>,
}

impl Call {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<Call> {
        let empty = Node {
            span: node.span,
            value: NodeValue::Map(Vec::new()),
        };
        let (op_node, body) = match &node.value {
            NodeValue::Str(_) => (node, None),
            _ => {
                let (keys, required) = names(KEYS);
                let body = cx.body(node, "`call`", &keys, &required)?;
                (body.get("operation")?, Some(body))
            }
        };
        let get = |k: &str| body.as_ref().and_then(|b| b.get(k));
        let name = cx.string(op_node, "`source.operationId`")?;
        let Some((source_name, op_id)) = name.split_once('.') else {
            cx.error_help(
                op_node.span,
                format!("`{name}` does not name a source: write `source.operationId`"),
                sources_help(cx),
            );
            return None;
        };
        if cx.sources_failed.iter().any(|s| s == source_name) {
            return None;
        }
        let Some(source) = cx.sources.get(source_name).cloned() else {
            let names: Vec<&str> = cx.sources.keys().map(String::as_str).collect();
            let help = did_you_mean(source_name, names.iter().copied())
                .unwrap_or_else(|| sources_help(cx));
            cx.error_help(
                op_node.span,
                format!("there is no source `{source_name}`"),
                help,
            );
            return None;
        };
        let api = source.api.clone();
        let op = match api.operation(op_id) {
            Some(Ok(op)) => op,
            Some(Err(message)) => {
                cx.push(Diagnostic::error(message).at(&cx.source, op_node.span));
                return None;
            }
            None => {
                let help = did_you_mean(op_id, api.operation_ids()).unwrap_or_else(|| {
                    let ids: Vec<&str> = api.operation_ids().take(12).collect();
                    format!("its operations include {}", list(&ids))
                });
                cx.error_help(
                    op_node.span,
                    format!("`{}` has no operation `{op_id}`", api.shown),
                    help,
                );
                return None;
            }
        };
        let mut ok = true;
        let mut params = Vec::new();
        let params_node = get("params").unwrap_or(&empty);
        match params_node.as_map() {
            Some(entries) => {
                for (k, v) in entries {
                    let Some(pname) = k.as_str() else {
                        cx.not_text(k, "a parameter name");
                        ok = false;
                        continue;
                    };
                    let Some(param) = op.params.iter().find(|p| p.name == pname) else {
                        let names: Vec<&str> = op.params.iter().map(|p| p.name.as_str()).collect();
                        let help =
                            did_you_mean(pname, names.iter().copied()).unwrap_or_else(|| {
                                if names.is_empty() {
                                    format!("`{name}` takes no parameters")
                                } else {
                                    format!("`{name}` takes {}", list(&names))
                                }
                            });
                        let d = Diagnostic::error(format!("`{name}` has no parameter `{pname}`"))
                            .at(&cx.source, k.span)
                            .help(help);
                        cx.push(noted(d, &api, &op.at, "the operation"));
                        ok = false;
                        continue;
                    };
                    let Some(t) = cx.template(v) else {
                        ok = false;
                        continue;
                    };
                    if let (TemplateKind::Literal(value), Some(schema)) = (&t.kind, &param.schema) {
                        let value = match value {
                            Value::String(s) => coerce(s, &types_of(&api, schema)),
                            other => other.clone(),
                        };
                        ok &= literal_fits(
                            cx,
                            &api,
                            schema,
                            &value,
                            v.span,
                            &format!("parameter `{pname}`"),
                        );
                    }
                    params.push((pname.to_string(), t));
                }
            }
            None => {
                cx.error(
                    params_node.span,
                    "`params` maps the operation's parameter names to values",
                );
                ok = false;
            }
        }
        for missing in op
            .params
            .iter()
            .filter(|p| p.required && !params.iter().any(|(n, _)| *n == p.name))
        {
            let d = Diagnostic::error(format!(
                "`{name}` needs the {} parameter `{}`",
                missing.location.as_str(),
                missing.name
            ))
            .at(&cx.source, op_node.span)
            .help(format!(
                "add it under `params:`, like `{}: \"{{{{ … }}}}\"`",
                missing.name
            ));
            cx.push(noted(d, &api, &missing.at, "declared required here"));
            ok = false;
        }
        let body_template = match (get("body"), &op.body) {
            (Some(n), Some(spec)) => {
                if let Some(schema) = &spec.schema {
                    ok &= body_fits(cx, &api, schema, n, "$");
                }
                JsonTemplate::parse(cx, n)
            }
            (Some(n), None) => {
                let d = Diagnostic::error(format!("`{name}` takes no request body"))
                    .at(&cx.source, n.span);
                cx.push(noted(d, &api, &op.at, "the operation"));
                ok = false;
                None
            }
            (None, Some(spec)) if spec.required => {
                let d = Diagnostic::error(format!("`{name}` needs a request body"))
                    .at(&cx.source, op_node.span)
                    .help("add `body:` with the properties its schema lists");
                cx.push(noted(d, &api, &spec.at, "declared required here"));
                ok = false;
                None
            }
            (None, _) => None,
        };
        if !source.covers(&op.security) {
            let wanted: Vec<String> = op
                .security
                .iter()
                .map(|alt| {
                    alt.iter()
                        .map(|s| {
                            let what = api.schemes.get(s).map(Scheme::describe).unwrap_or_default();
                            format!("`{s}` ({what})")
                        })
                        .collect::<Vec<_>>()
                        .join(" and ")
                })
                .collect();
            let d = Diagnostic::error(format!(
                "`{name}` needs credentials that source `{source_name}` does not give: {}",
                wanted.join(", or ")
            ))
            .at(&cx.source, op_node.span)
            .help(format!(
                "add them under `sources.{source_name}.credentials`, like `{}: \"{{{{ a_secret_field }}}}\"`",
                op.security.first().and_then(|a| a.first()).map_or("scheme", String::as_str)
            ));
            cx.push(noted(d, &api, &op.at, "the operation"));
            ok = false;
        }
        let headers = match get("headers") {
            Some(n) => request::parse_headers(cx, n),
            None => Some(Vec::new()),
        };
        let accept = match get("accept") {
            Some(n) => crate::steps::http::parse_accept(cx, n)?,
            None => Accept::Success,
        };
        let warn_only = match get("on_mismatch") {
            Some(n) => match cx.string(n, "`error` or `warn`")?.as_str() {
                "warn" => true,
                "error" => false,
                other => {
                    cx.error_help(
                        n.span,
                        format!("`on_mismatch` is `error` or `warn`, not `{other}`"),
                        did_you_mean(other, MISMATCH).unwrap_or_default(),
                    );
                    return None;
                }
            },
            None => false,
        };
        let idempotency_key = match get("idempotency_key") {
            Some(n) => Some(cx.template(n)?),
            None => None,
        };
        let mut sending = match &body {
            Some(b) => send::parse_sending(cx, b)?,
            None => Sending {
                timeout: send::DEFAULT_TIMEOUT,
                retry: crate::run::retry::parse(cx, None)?,
                traceparent: true,
            },
        };
        match &accept {
            Accept::Any => sending.retry.accepted = Accepted::All,
            Accept::Statuses(list) => sending.retry.accepted = Accepted::These(list.clone()),
            Accept::Success => {}
        }
        if !ok {
            return None;
        }
        Some(Call {
            op: op.clone(),
            operation: op_id.to_string(),
            name,
            source,
            params,
            body: if get("body").is_some() {
                Some(body_template?)
            } else {
                None
            },
            headers: headers?,
            sending,
            accept,
            warn_only,
            idempotency_key,
        })
    }

    pub fn op(&self) -> &Operation {
        &self.op
    }

    pub fn repeatable(&self) -> bool {
        matches!(
            self.op().method.as_str(),
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS"
        ) || self.idempotency_key.is_some()
    }

    /// The schemas of the answers the step takes as success (its `accept:`),
    /// where they declare one: what its `body` output can hold. The
    /// `default` answer counts when no 2xx one is declared.
    pub fn success_schemas(&self) -> Vec<Loc> {
        let responses = &self.op().responses;
        let success = |r: &crate::language::openapi::ResponseSpec| (200..300).any(|s| r.matches(s));
        let any_success = responses.iter().any(success);
        responses
            .iter()
            .filter(|r| match &self.accept {
                Accept::Success => success(r) || (r.status == "default" && !any_success),
                Accept::Any => true,
                Accept::Statuses(list) => list.iter().any(|s| r.matches(*s)),
            })
            .filter_map(|r| r.schema.clone())
            .collect()
    }

    /// Whether the flow's managed token goes along.
    pub fn uses_auth(&self) -> bool {
        self.op().security.iter().any(|alt| {
            alt.iter()
                .any(|s| matches!(self.source.credentials.get(s), Some(Credential::Managed)))
        })
    }

    pub fn reads(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for t in self.source.templates() {
            out.extend(t.mentions.iter().cloned());
        }
        for (_, t) in &self.params {
            out.extend(t.mentions.iter().cloned());
        }
        if let Some(b) = &self.body {
            b.reads(&mut out);
        }
        out
    }

    /// Templates that end up in the URL: the server, path and query parameters.
    pub fn url_templates(&self) -> Vec<&Template> {
        let op = self.op();
        std::iter::once(&self.source.server)
            .chain(self.params.iter().filter_map(|(n, t)| {
                op.params
                    .iter()
                    .any(|p| p.name == *n && matches!(p.location, In::Path | In::Query))
                    .then_some(t)
            }))
            .collect()
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        let api = &self.source.api;
        let op = self.op();
        cx.emit(EventKind::OperationCalled {
            operation: self.name.clone(),
            method: op.method.clone(),
            path: op.path.clone(),
        });
        let mut problems: Vec<Problem> = Vec::new();
        let mut path = op.path.clone();
        let mut query: Vec<(String, String, bool)> = Vec::new();
        let mut headers = cx.headers(&self.headers)?;
        let mut cookies: Vec<(String, String, bool)> = Vec::new();
        for (name, template) in &self.params {
            let Some(param) = op.params.iter().find(|p| p.name == *name) else {
                continue;
            };
            let (text, secret) = cx.render_text(template)?;
            if let Some(schema) = &param.schema {
                let value = coerce(&text, &types_of(api, schema));
                let found = api.check(schema, &value).map_err(StepError::new)?;
                problems.extend(found.into_iter().map(|p| Problem {
                    path: format!("params.{name}{}", p.path.trim_start_matches('$')),
                    message: p.message,
                }));
            }
            match param.location {
                In::Path => {
                    if secret {
                        return Err(StepError::new(format!(
                            "path parameter `{name}` is built from a secret, and URLs end up in logs and proxies"
                        )));
                    }
                    let segment = send::segment(&text, name)?;
                    path = path.replace(&format!("{{{name}}}"), &segment);
                }
                In::Query => query.push((name.clone(), text, secret)),
                In::Header => headers.push(send::Header {
                    name: name.clone(),
                    value: text,
                    secret,
                }),
                In::Cookie => cookies.push((name.clone(), text, secret)),
            }
        }
        let body = match (&self.body, &op.body) {
            (Some(t), spec) => {
                let (wire, shown) = t.render(cx)?;
                if let Some(schema) = spec.as_ref().and_then(|s| s.schema.as_ref()) {
                    let found = api.check(schema, &wire).map_err(StepError::new)?;
                    problems.extend(found.into_iter().map(|p| Problem {
                        path: format!("body{}", p.path.trim_start_matches('$')),
                        message: p.message,
                    }));
                }
                if spec.as_ref().is_some_and(|s| s.is_form()) {
                    Some(form_body(&wire, &shown)?)
                } else {
                    Some(OutgoingBody {
                        wire: RequestBody::Json(wire),
                        shown,
                    })
                }
            }
            (None, _) => None,
        };
        if !problems.is_empty() {
            let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(StepError::new(format!(
                "the request does not match `{}`, so nothing was sent: {}",
                self.name,
                listed.join("; ")
            ))
            .kind(ErrorKind::Contract)
            .hint(format!("see the operation in `{}`", api.shown)));
        }
        self.add_credentials(cx, &mut headers, &mut query, &mut cookies)?;
        if !cookies.is_empty() {
            let secret = cookies.iter().any(|c| c.2);
            let value = cookies
                .iter()
                .map(|(k, v, _)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            headers.push(send::Header {
                name: "Cookie".into(),
                value,
                secret,
            });
        }
        if let Some(t) = &self.idempotency_key {
            let (key, secret) = cx.render_text(t)?;
            if key.trim().is_empty() {
                return Err(StepError::new("`idempotency_key` is empty"));
            }
            headers.push(send::Header {
                name: "Idempotency-Key".to_string(),
                value: key,
                secret,
            });
        }
        let (server, server_secret) = cx.render_text(&self.source.server)?;
        let url = send::build_url(&server, server_secret, &path, &query)?;
        let response = cx
            .exchange(
                &op.method,
                &url,
                headers,
                body,
                &self.sending,
                self.repeatable(),
                MAX_BODY_BYTES,
            )
            .await?;
        let parsed = response.json();
        let body = parsed
            .clone()
            .unwrap_or_else(|| Value::String(response.text()));
        send::write_answer(cx, &response, body)?;
        let accepted = match &self.accept {
            Accept::Success => response.is_success(),
            Accept::Any => true,
            Accept::Statuses(list) => list.contains(&response.status),
        };
        if !accepted {
            let e = send::status_error(&op.method, &url.shown, &response, &cx.rec.redactor);
            return Err(e.hint(
                "list the statuses this step accepts with `accept: [200, 404]`, or `accept: any`",
            ));
        }
        let mismatch = match op.response_for(response.status) {
            None => Some(format!(
                "`{}` answered {}, a status its description does not declare",
                self.name, response.status
            )),
            Some(spec) => match (&spec.schema, &parsed) {
                (None, _) => None,
                (Some(_), None) if response.body.is_empty() => None,
                (Some(_), None) => Some(format!(
                    "`{}` answered {} with a body that is not JSON, where its description declares a JSON schema",
                    self.name, response.status
                )),
                (Some(schema), Some(body)) => {
                    let found = api.check(schema, body).map_err(StepError::new)?;
                    (!found.is_empty()).then(|| {
                        let listed: Vec<String> = found
                            .iter()
                            .map(|p| {
                                format!("`body{}` {}", p.path.trim_start_matches('$'), p.message)
                            })
                            .collect();
                        format!(
                            "the answer of `{}` ({}) does not match its description: {}",
                            self.name,
                            response.status,
                            listed.join("; ")
                        )
                    })
                }
            },
        };
        if let Some(message) = mismatch {
            if self.warn_only {
                cx.emit(EventKind::Log {
                    message: format!("warning: {message}"),
                });
            } else {
                return Err(StepError::new(message)
                    .kind(ErrorKind::Contract)
                    .status(response.status)
                    .hint("`on_mismatch: warn` lets the run go on; `on_error` can catch it"));
            }
        }
        Ok(Next::Continue)
    }

    fn add_credentials(
        &self,
        cx: &mut StepCx<'_, '_>,
        headers: &mut Vec<send::Header>,
        query: &mut Vec<(String, String, bool)>,
        cookies: &mut Vec<(String, String, bool)>,
    ) -> Result<(), StepError> {
        let op = self.op();
        let Some(alt) = op
            .security
            .iter()
            .find(|alt| alt.iter().all(|s| self.source.credentials.contains_key(s)))
        else {
            return Ok(());
        };
        for name in alt {
            let (Some(Credential::Value(t)), Some(scheme)) = (
                self.source.credentials.get(name),
                self.source.api.schemes.get(name),
            ) else {
                continue;
            };
            let (value, _) = cx.render_text(t)?;
            match scheme {
                Scheme::Bearer | Scheme::OAuth2 => headers.push(send::Header {
                    name: "Authorization".into(),
                    value: format!("Bearer {value}"),
                    secret: true,
                }),
                Scheme::Basic => headers.push(send::Header {
                    name: "Authorization".into(),
                    value: format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(value)
                    ),
                    secret: true,
                }),
                Scheme::ApiKey {
                    location: In::Query,
                    name,
                } => query.push((name.clone(), value, true)),
                Scheme::ApiKey {
                    location: In::Cookie,
                    name,
                } => cookies.push((name.clone(), value, true)),
                Scheme::ApiKey { name, .. } => headers.push(send::Header {
                    name: name.clone(),
                    value,
                    secret: true,
                }),
                Scheme::Other(_) => {}
            }
        }
        Ok(())
    }
}

/// A form body from the rendered object: each property a pair, as text; in
/// the trace, encoded, with a secret value as `***`.
fn form_body(wire: &Value, shown: &Value) -> Result<OutgoingBody, StepError> {
    let (Some(wire), Some(shown)) = (wire.as_object(), shown.as_object()) else {
        return Err(StepError::new(
            "a form body is a mapping of names to values",
        ));
    };
    let text = crate::language::fields::display_text;
    let pairs: Vec<(String, String)> = wire.iter().map(|(k, v)| (k.clone(), text(v))).collect();
    let shown: Vec<String> = shown
        .iter()
        .map(|(k, v)| {
            let value = match v.as_str() {
                Some(crate::run::redact::MASK) => crate::run::redact::MASK.to_string(),
                _ => crate::run::transport::form_component(&text(v)),
            };
            format!("{}={value}", crate::run::transport::form_component(k))
        })
        .collect();
    Ok(OutgoingBody {
        wire: RequestBody::Form(pairs),
        shown: Value::String(shown.join("&")),
    })
}

fn sources_help(cx: &Analyzer) -> String {
    if cx.sources.is_empty() {
        "name the API description under `sources:`, like `jobs: { openapi: apis/jobs.yaml }`"
            .to_string()
    } else {
        let names: Vec<&str> = cx.sources.keys().map(String::as_str).collect();
        format!("the flow's sources are {}", list(&names))
    }
}

/// Adds the document's place as a note, when it can be found.
fn noted(d: Diagnostic, api: &Api, loc: &Loc, label: &str) -> Diagnostic {
    match api.span(loc) {
        Some((source, span)) => d.note_at(&source, span, label),
        None => d,
    }
}

/// Checks a literal against the schema at `loc`; reports and returns false when it misses.
fn literal_fits(
    cx: &mut Analyzer,
    api: &Api,
    loc: &Loc,
    value: &Value,
    span: Span,
    what: &str,
) -> bool {
    let found = match api.check(loc, value) {
        Ok(found) => found,
        Err(message) => {
            cx.push(Diagnostic::error(message).at(&cx.source, span));
            return false;
        }
    };
    let Some(first) = found.first() else {
        return true;
    };
    let at = if first.path == "$" {
        String::new()
    } else {
        format!(" at `{}`", first.path)
    };
    let d = Diagnostic::error(format!("{what}{at} {}", first.message)).at(&cx.source, span);
    cx.push(noted(d, api, loc, "its schema"));
    false
}

/// An object schema's properties and required names, with the members of
/// its `allOf` merged in (through `$ref`s): what a body mapping is held to.
#[derive(Default)]
struct ObjectShape {
    required: Vec<String>,
    properties: Vec<(String, Loc)>,
    /// `additionalProperties: false` on the schema itself.
    closed: bool,
}

fn object_shape(api: &Api, loc: &Loc, depth: usize) -> ObjectShape {
    let mut shape = ObjectShape::default();
    let Ok((loc, schema)) = api.resolve(loc) else {
        return shape;
    };
    if depth > 16 {
        return shape;
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        shape.required.extend(
            required
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string),
        );
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for name in properties.keys() {
            shape.properties.push((
                name.clone(),
                Loc {
                    file: loc.file,
                    pointer: format!(
                        "{}/properties/{}",
                        loc.pointer,
                        crate::language::openapi::escape(name)
                    ),
                },
            ));
        }
    }
    shape.closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for i in 0..all.len() {
            let member = Loc {
                file: loc.file,
                pointer: format!("{}/allOf/{i}", loc.pointer),
            };
            let more = object_shape(api, &member, depth + 1);
            shape.required.extend(more.required);
            shape.properties.extend(more.properties);
        }
    }
    shape
}

/// Checks a body written in YAML against its schema where it can before
/// anything renders: missing required properties, properties the schema
/// forbids, and literal values of the wrong type or outside an enum.
fn body_fits(cx: &mut Analyzer, api: &Api, loc: &Loc, node: &Node, path: &str) -> bool {
    let Ok((loc, schema)) = api.resolve(loc) else {
        return true;
    };
    let schema = schema.clone();
    match &node.value {
        NodeValue::Map(entries) => {
            let mut ok = true;
            let keys: Vec<String> = entries
                .iter()
                .filter_map(|(k, _)| k.scalar_text())
                .collect();
            let shape = object_shape(api, &loc, 0);
            for r in &shape.required {
                if !keys.iter().any(|k| k == r) {
                    let d = Diagnostic::error(format!(
                        "the body at `{path}` lacks the required property `{r}`"
                    ))
                    .at(&cx.source, node.span);
                    cx.push(noted(d, api, &loc, "its schema"));
                    ok = false;
                }
            }
            for (k, v) in entries {
                let Some(key) = k.scalar_text() else { continue };
                match shape.properties.iter().find(|(name, _)| *name == key) {
                    Some((_, child)) => {
                        ok &= body_fits(cx, api, child, v, &format!("{path}.{key}"));
                    }
                    None if shape.closed => {
                        let names: Vec<&str> =
                            shape.properties.iter().map(|(n, _)| n.as_str()).collect();
                        let d = Diagnostic::error(format!(
                            "the body at `{path}` has `{key}`, which its schema does not allow"
                        ))
                        .at(&cx.source, k.span)
                        .help_opt(did_you_mean(&key, names.iter().copied()));
                        cx.push(noted(d, api, &loc, "its schema"));
                        ok = false;
                    }
                    None => {}
                }
            }
            ok
        }
        NodeValue::Seq(items) => {
            if schema.get("items").is_none() {
                return true;
            }
            let child = Loc {
                file: loc.file,
                pointer: format!("{}/items", loc.pointer),
            };
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                ok &= body_fits(cx, api, &child, item, &format!("{path}[{i}]"));
            }
            ok
        }
        NodeValue::Str(s) if s.contains("{{") || s.contains("{%") => true,
        _ => {
            let value = node.to_json();
            literal_fits(
                cx,
                api,
                &loc,
                &value,
                node.span,
                &format!("the body at `{path}`"),
            )
        }
    }
}
