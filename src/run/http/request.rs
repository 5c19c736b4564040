//! A step's request, as the HTTP step kinds build it: headers from fields and
//! literals, a JSON body whose strings are templates, and the managed token
//! sent along (and renewed once after a 401) when the step uses `auth:`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::language::analyzer::Analyzer;
use crate::language::fields::FieldType;
use crate::language::raw::{Node, NodeValue};
use crate::language::template::Template;
use crate::run::http::send::{Header, OutgoingBody, RequestUrl, Sending, status_error};
use crate::run::redact::MASK;
use crate::run::step::{StepCx, StepError};
use crate::run::trace::EventKind;
use crate::run::transport::HttpResponse;

/// Where a request's headers come from: a `headers` field, or literals.
#[derive(Debug)]
pub enum HeaderSource {
    Field(String),
    Literal(Vec<(String, Template)>),
}

/// `headers: header`, `headers: { Accept: … }`, or a list of both.
pub fn parse_headers(cx: &mut Analyzer, node: &Node) -> Option<Vec<HeaderSource>> {
    match &node.value {
        NodeValue::Str(_) => Some(vec![HeaderSource::Field(cx.field_ref(
            node,
            &[FieldType::Headers],
            "`headers`",
        )?)]),
        NodeValue::Map(entries) => {
            let mut out = Vec::new();
            for (k, v) in entries {
                let name = cx.string(k, "a header name")?;
                out.push((name, cx.template(v)?));
            }
            Some(vec![HeaderSource::Literal(out)])
        }
        NodeValue::Seq(items) => {
            let mut out = Vec::new();
            for item in items {
                out.extend(parse_headers(cx, item)?);
            }
            Some(out)
        }
        _ => {
            cx.error(
                node.span,
                "`headers` names a `headers` field, or maps header names to values",
            );
            None
        }
    }
}

impl StepCx<'_, '_> {
    /// Resolves header sources in order; a later header replaces an earlier one.
    pub fn headers(&mut self, sources: &[HeaderSource]) -> Result<Vec<Header>, StepError> {
        let mut out: Vec<Header> = Vec::new();
        let mut put = |h: Header| {
            out.retain(|o| !o.name.eq_ignore_ascii_case(&h.name));
            out.push(h);
        };
        for source in sources {
            match source {
                HeaderSource::Field(field) => {
                    let secret = self.state.secret.contains(field);
                    if let Some(Value::Object(map)) = self.state.get(field) {
                        for (name, value) in map {
                            put(Header {
                                name: name.clone(),
                                value: crate::language::fields::display_text(value),
                                secret,
                            });
                        }
                    }
                }
                HeaderSource::Literal(pairs) => {
                    for (name, template) in pairs {
                        let (value, secret) = self.render_text(template)?;
                        put(Header {
                            name: name.clone(),
                            value,
                            secret,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Sends a request, recording it and its response in the trace, and
    /// retries as the step's policy says. `repeatable`: sending it twice does
    /// no harm, so a timeout or a dropped connection may be retried. The
    /// answer may be at most `max_body` bytes.
    ///
    /// When the flow has `auth:` and the step uses it (and sets no
    /// `Authorization` of its own), the managed token goes along; a 401 gets
    /// one new token and one more try, which is safe even for a POST, as the
    /// server refused it before doing anything.
    #[allow(clippy::too_many_arguments)]
    pub async fn exchange(
        &mut self,
        method: &str,
        url: &RequestUrl,
        mut headers: Vec<Header>,
        body: Option<OutgoingBody>,
        sending: &Sending,
        repeatable: bool,
        max_body: usize,
    ) -> Result<HttpResponse, StepError> {
        let managed = self.flow.auth.is_some()
            && self.step.uses_auth
            && !headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("authorization"));
        if !managed {
            let carries = headers.iter().any(|h| h.secret)
                || body.as_ref().is_some_and(OutgoingBody::carries_secret);
            if carries {
                self.secret_may_go_to(url, false)?;
            }
            return self
                .send_recorded(method, url, headers, body, sending, repeatable, max_body)
                .await;
        }
        self.secret_may_go_to(url, true)?;
        let token = self.bearer(sending, None).await?;
        headers.push(Header {
            name: "Authorization".into(),
            value: format!("Bearer {token}"),
            secret: true,
        });
        let again = body.as_ref().map(|b| OutgoingBody {
            wire: b.wire.clone(),
            shown: b.shown.clone(),
        });
        let response = self
            .send_recorded(
                method,
                url,
                headers.clone(),
                body,
                sending,
                repeatable,
                max_body,
            )
            .await?;
        if response.status != 401 || !self.renewable() {
            return Ok(response);
        }
        self.emit(EventKind::Log {
            message: "the token was refused (401): getting a new one and sending once more".into(),
        });
        let renewed = self.bearer(sending, Some(&token)).await?;
        for h in &mut headers {
            if h.name == "Authorization" {
                h.value = format!("Bearer {renewed}");
            }
        }
        let response = self
            .send_recorded(method, url, headers, again, sending, repeatable, max_body)
            .await?;
        if response.status == 401 {
            let e = status_error(method, &url.shown, &response, &self.rec.redactor);
            return Err(StepError {
                message: format!("{}, even with a newly issued token", e.message),
                hint: Some("the token URL gives tokens that this API refuses: check the app's permissions, the client and the region in `base_url`".into()),
                ..e
            });
        }
        Ok(response)
    }

    /// A `GET` through [`StepCx::exchange`]: repeatable, no body.
    pub async fn get(
        &mut self,
        url: &RequestUrl,
        headers: &[HeaderSource],
        sending: &Sending,
        max_body: usize,
    ) -> Result<HttpResponse, StepError> {
        let headers = self.headers(headers)?;
        self.exchange("GET", url, headers, None, sending, true, max_body)
            .await
    }
}

/// A JSON body written in YAML, whose every string is a template.
#[derive(Debug)]
pub enum JsonTemplate {
    Leaf(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<JsonTemplate> {
        match &node.value {
            NodeValue::Seq(items) => {
                let parsed: Vec<Option<JsonTemplate>> =
                    items.iter().map(|i| JsonTemplate::parse(cx, i)).collect();
                Some(JsonTemplate::Array(
                    parsed.into_iter().collect::<Option<_>>()?,
                ))
            }
            NodeValue::Map(entries) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (k, v) in entries {
                    match (k.scalar_text(), JsonTemplate::parse(cx, v)) {
                        (Some(k), Some(v)) => out.push((k, v)),
                        _ => ok = false,
                    }
                }
                ok.then_some(JsonTemplate::Object(out))
            }
            _ => Some(JsonTemplate::Leaf(cx.template(node)?)),
        }
    }

    pub fn reads(&self, out: &mut BTreeSet<String>) {
        match self {
            JsonTemplate::Leaf(t) => out.extend(t.mentions.iter().cloned()),
            JsonTemplate::Array(items) => items.iter().for_each(|i| i.reads(out)),
            JsonTemplate::Object(entries) => entries.iter().for_each(|(_, v)| v.reads(out)),
        }
    }

    /// Renders for the wire, and for the trace with secret leaves masked.
    pub fn render(&self, cx: &mut StepCx) -> Result<(Value, Value), StepError> {
        Ok(match self {
            JsonTemplate::Leaf(t) => {
                let (value, secret) = cx.render(t)?;
                let shown = if secret {
                    Value::String(MASK.to_string())
                } else {
                    value.clone()
                };
                (value, shown)
            }
            JsonTemplate::Array(items) => {
                let (mut wire, mut shown) = (Vec::new(), Vec::new());
                for item in items {
                    let (w, s) = item.render(cx)?;
                    wire.push(w);
                    shown.push(s);
                }
                (Value::Array(wire), Value::Array(shown))
            }
            JsonTemplate::Object(entries) => {
                let (mut wire, mut shown) = (serde_json::Map::new(), serde_json::Map::new());
                for (k, v) in entries {
                    let (w, s) = v.render(cx)?;
                    wire.insert(k.clone(), w);
                    shown.insert(k.clone(), s);
                }
                (Value::Object(wire), Value::Object(shown))
            }
        })
    }
}
