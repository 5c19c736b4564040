//! `http`: any request the named kinds do not cover, such as fetching an app
//! token or calling the system the worker waits on.

use serde_json::Value;

use crate::language::analyzer::Analyzer;
use crate::language::fields::FieldType;
use crate::language::keys::{HEADERS, Key, RETRY, Shape, TIMEOUT, TRACEPARENT, names, opt, req};
use crate::language::raw::{Node, NodeValue};
use crate::language::template::Template;
use crate::run::http::request::{self, HeaderSource, JsonTemplate};
use crate::run::http::send::{self, OutgoingBody, Sending};
use crate::run::redact::MASK;
use crate::run::retry::Accepted;
use crate::run::step::{Next, StepCx, StepError, shown_text};
use crate::run::transport::{MAX_BODY_BYTES, RequestBody, form_component};

pub const OUTPUTS: &[(&str, FieldType)] = &[
    ("status", FieldType::Number),
    ("headers", FieldType::Headers),
    ("body", FieldType::Json),
];

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// What `http` takes.
pub const KEYS: &[Key] = &[
    req("url", Shape::Template, "The whole URL."),
    opt(
        "method",
        Shape::OneOf(&METHODS),
        "The HTTP method (default GET).",
    ),
    opt(
        "query",
        Shape::Pairs,
        "Query parameters: names mapped to templates.",
    ),
    HEADERS,
    opt(
        "json",
        Shape::Json,
        "A JSON body: YAML with templates in its strings.",
    ),
    opt(
        "form",
        Shape::Pairs,
        "A form body (`application/x-www-form-urlencoded`).",
    ),
    opt("body", Shape::Template, "A raw text body."),
    TIMEOUT,
    RETRY,
    TRACEPARENT,
    opt(
        "accept",
        Shape::Accept,
        "Which statuses are success: `2xx` (the default), `any`, or a list such as `[200, 404]`.",
    ),
    opt(
        "allow_secret_in_url",
        Shape::Bool,
        "Let a secret into the URL, which logs and proxies see.",
    ),
    opt(
        "idempotency_key",
        Shape::Template,
        "Sent as `Idempotency-Key`: the server acts once per key, so the request may be sent again.",
    ),
    opt(
        "auth",
        Shape::Bool,
        "Send the flow's managed token (`auth:`), as the NWC steps do.",
    ),
];

#[derive(Debug)]
pub struct Http {
    pub method: String,
    pub url: Template,
    pub query: Vec<(String, Template)>,
    pub headers: Vec<HeaderSource>,
    pub body: Option<HttpBody>,
    pub sending: Sending,
    pub accept: Accept,
    pub allow_secret_in_url: bool,
    /// Sent as `Idempotency-Key`: the server acts once per key, so a request
    /// that is not otherwise safe to repeat may be sent again.
    pub idempotency_key: Option<Template>,
    /// Send the flow's managed token (`auth:`), as the NWC steps do.
    pub auth: bool,
}

#[derive(Debug)]
pub enum HttpBody {
    Json(JsonTemplate),
    Form(Vec<(String, Template)>),
    Raw(Template),
}

/// Which statuses count as success.
#[derive(Debug, Clone, PartialEq)]
pub enum Accept {
    /// 2xx, the default.
    Success,
    Any,
    Statuses(Vec<u16>),
}

impl Http {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<Http> {
        let (keys, required) = names(KEYS);
        let body = cx.body(node, "`http`", &keys, &required)?;
        let method = match body.get("method") {
            Some(n) => {
                let m = cx.string(n, "an HTTP method")?.to_ascii_uppercase();
                if !METHODS.contains(&m.as_str()) {
                    let help = crate::language::diagnostic::did_you_mean(&m, METHODS)
                        .unwrap_or_else(|| {
                            format!("use one of {}", crate::language::analyzer::list(&METHODS))
                        });
                    cx.error_help(n.span, format!("unknown HTTP method `{m}`"), help);
                    return None;
                }
                m
            }
            None => "GET".to_string(),
        };
        let url = body.get("url").and_then(|n| cx.template(n));
        let query = match body.get("query") {
            Some(n) => pairs(cx, n, "`query`"),
            None => Some(Vec::new()),
        };
        let headers = match body.get("headers") {
            Some(n) => request::parse_headers(cx, n),
            None => Some(Vec::new()),
        };
        let bodies: Vec<&str> = ["json", "form", "body"]
            .into_iter()
            .filter(|k| body.get(k).is_some())
            .collect();
        if bodies.len() > 1 {
            cx.error(
                node.span,
                format!(
                    "an `http` step sends one body, but this one has {}",
                    crate::language::analyzer::list(&bodies)
                ),
            );
            return None;
        }
        let request_body = match bodies.first() {
            Some(&"json") => Some(HttpBody::Json(JsonTemplate::parse(cx, body.get("json")?)?)),
            Some(&"form") => Some(HttpBody::Form(pairs(cx, body.get("form")?, "`form`")?)),
            Some(_) => Some(HttpBody::Raw(cx.template(body.get("body")?)?)),
            None => None,
        };
        let accept = match body.get("accept") {
            Some(n) => parse_accept(cx, n)?,
            None => Accept::Success,
        };
        let allow_secret_in_url = body
            .get("allow_secret_in_url")
            .map_or(Some(false), |n| cx.boolean(n))?;
        let idempotency_key = match body.get("idempotency_key") {
            Some(n) => Some(cx.template(n)?),
            None => None,
        };
        let auth = body.get("auth").map_or(Some(false), |n| cx.boolean(n))?;
        if auth && !cx.has_auth {
            cx.error_help(
                body.get("auth")?.span,
                "`auth: true` sends the flow's managed token, but the flow has no `auth:`",
                "add a top-level `auth:` with `token` or `client_id` and `client_secret`",
            );
            return None;
        }
        let mut sending = send::parse_sending(cx, &body)?;
        // A status the step accepts is an answer the flow wants, not a failure to retry.
        match &accept {
            Accept::Any => sending.retry.accepted = Accepted::All,
            Accept::Statuses(list) => sending.retry.accepted = Accepted::These(list.clone()),
            Accept::Success => {}
        }
        Some(Http {
            method,
            url: url?,
            query: query?,
            headers: headers?,
            body: request_body,
            sending,
            accept,
            auth,
            allow_secret_in_url,
            idempotency_key,
        })
    }

    /// Whether sending the request twice does no harm: an idempotent
    /// method, or a key that makes the server act once.
    pub fn repeatable(&self) -> bool {
        matches!(
            self.method.as_str(),
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS"
        ) || self.idempotency_key.is_some()
    }

    pub fn url_templates(&self) -> Vec<&Template> {
        std::iter::once(&self.url)
            .chain(self.query.iter().map(|(_, t)| t))
            .collect()
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        let (url, url_secret) = cx.render_text(&self.url)?;
        let query = cx.render_pairs(&self.query)?;
        if !self.allow_secret_in_url
            && let Some(key) = url_secret
                .then_some("url")
                .or_else(|| query.iter().find(|q| q.2).map(|q| q.0.as_str()))
        {
            return Err(StepError::new(format!(
                "`{key}` is built from a secret, and URLs end up in logs and proxies"
            ))
            .hint("send secrets in headers, or opt in with `allow_secret_in_url: true`"));
        }
        let url = send::build_url(&url, url_secret, "", &query)?;
        let body = match &self.body {
            None => None,
            Some(HttpBody::Json(j)) => {
                let (wire, shown) = j.render(cx)?;
                Some(OutgoingBody {
                    wire: RequestBody::Json(wire),
                    shown,
                })
            }
            Some(HttpBody::Form(pairs)) => {
                let rendered = cx.render_pairs(pairs)?;
                // Shown as sent: encoded, with a secret value as `***`.
                let shown: Vec<String> = rendered
                    .iter()
                    .map(|(k, v, secret)| {
                        let v = if *secret {
                            MASK.to_string()
                        } else {
                            form_component(v)
                        };
                        format!("{}={v}", form_component(k))
                    })
                    .collect();
                Some(OutgoingBody {
                    wire: RequestBody::Form(rendered.into_iter().map(|(k, v, _)| (k, v)).collect()),
                    shown: Value::String(shown.join("&")),
                })
            }
            Some(HttpBody::Raw(t)) => {
                let (text, secret) = cx.render_text(t)?;
                Some(OutgoingBody {
                    shown: Value::String(shown_text(text.clone(), secret)),
                    wire: RequestBody::Text(text),
                })
            }
        };
        let mut headers = cx.headers(&self.headers)?;
        if let Some(t) = &self.idempotency_key {
            let (key, secret) = cx.render_text(t)?;
            if key.trim().is_empty() {
                return Err(StepError::new("`idempotency_key` is empty")
                    .hint("build it from something that names this piece of work, such as the instance id"));
            }
            headers.retain(|h| !h.name.eq_ignore_ascii_case("idempotency-key"));
            headers.push(send::Header {
                name: "Idempotency-Key".to_string(),
                value: key,
                secret,
            });
        }
        // POST and PATCH may act twice if sent twice, unless a key makes them safe; see `retry`.
        let repeatable = self.repeatable();
        let response = cx
            .exchange(
                &self.method,
                &url,
                headers,
                body,
                &self.sending,
                repeatable,
                MAX_BODY_BYTES,
            )
            .await?;
        let parsed = response
            .json()
            .unwrap_or_else(|| Value::String(response.text()));
        send::write_answer(cx, &response, parsed)?;
        let accepted = match &self.accept {
            Accept::Success => response.is_success(),
            Accept::Any => true,
            Accept::Statuses(list) => list.contains(&response.status),
        };
        if !accepted {
            let e = send::status_error(&self.method, &url.shown, &response, &cx.rec.redactor);
            // A redirect keeps its own hint: handoff does not follow it.
            return Err(if (300..400).contains(&response.status) {
                e
            } else {
                e.hint(
                    "list the statuses this step accepts with `accept: [200, 404]`, or `accept: any`",
                )
            });
        }
        Ok(Next::Continue)
    }
}

fn pairs(cx: &mut Analyzer, node: &Node, what: &str) -> Option<Vec<(String, Template)>> {
    let Some(entries) = node.as_map() else {
        cx.error(
            node.span,
            format!("{what} maps names to values, found {}", node.type_name()),
        );
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (k, v) in entries {
        match (k.scalar_text(), cx.template(v)) {
            (Some(k), Some(v)) => out.push((k, v)),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

pub fn parse_accept(cx: &mut Analyzer, node: &Node) -> Option<Accept> {
    match &node.value {
        NodeValue::Str(s) if s == "any" => Some(Accept::Any),
        NodeValue::Str(s) if s == "2xx" => Some(Accept::Success),
        NodeValue::Int(i) if (100..600).contains(i) => Some(Accept::Statuses(vec![*i as u16])),
        NodeValue::Seq(items) => {
            let mut out = Vec::new();
            for item in items {
                match item.value {
                    NodeValue::Int(i) if (100..600).contains(&i) => out.push(i as u16),
                    _ => {
                        cx.error(item.span, "a status is a number from 100 to 599");
                        return None;
                    }
                }
            }
            Some(Accept::Statuses(out))
        }
        _ => {
            cx.error(
                node.span,
                "`accept` is `2xx` (the default), `any`, or a list of statuses",
            );
            None
        }
    }
}
