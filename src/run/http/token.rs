//! The managed token behind a flow's `auth:`: what the NWC steps send as
//! `Authorization: Bearer …` when the flow does not build the header itself.
//!
//! A personal access token is read from its secret field. An app token is
//! fetched from the token URL with client credentials, kept in the shared
//! [`TokenCache`](crate::run::tokens::TokenCache), and fetched again shortly
//! before it expires or once after a 401. The fetch is an ordinary request in
//! the trace, with the client secret and the token masked.

use serde_json::{Map, Value};

use crate::language::auth::{Auth, TOKEN_PATH};
use crate::run::http::send::{self, OutgoingBody, RequestUrl, Sending};
use crate::run::redact::MASK;
use crate::run::step::{ErrorKind, StepCx, StepError};
use crate::run::trace::EventKind;
use crate::run::transport::RequestBody;

/// A token answer is small; anything larger is not one.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;

/// A URL's origin: scheme, host and port.
fn origin(url: &str) -> Option<String> {
    crate::run::transport::remembered("origin", url, |url| {
        reqwest::Url::parse(url)
            .ok()
            .as_ref()
            .and_then(crate::run::http::send::origin_of)
    })
}

impl StepCx<'_, '_> {
    /// A secret goes only where the operator said: never to a host a
    /// caller chose. The managed token (`managed`) goes only to NWC: the
    /// origin of the `base_url` field when it is configuration, of an app's
    /// token URL, and of the NWC steps' literal base URLs. A secret in a
    /// header or body the step builds may also go to the origin of any
    /// configuration field's value or of a URL written in the flow.
    /// Anything else fails before a byte is sent.
    pub fn secret_may_go_to(&mut self, url: &RequestUrl, managed: bool) -> Result<(), StepError> {
        let flow = self.flow;
        let places = flow.destinations;
        let mut trusted: Vec<String> = places.nwc_literal.clone();
        let add = |trusted: &mut Vec<String>, text: &str| {
            if let Some(o) = origin(text.trim())
                && !trusted.contains(&o)
            {
                trusted.push(o);
            }
        };
        if places.nwc_field()
            && let Some(base) = self.state.get("base_url").and_then(Value::as_str)
        {
            add(&mut trusted, base);
        }
        if let Some(Auth::Client(c)) = flow.auth
            && let Some(t) = &c.token_url
        {
            let (text, _) = self.render_text(t)?;
            add(&mut trusted, &text);
        }
        if !managed {
            for o in &places.literal {
                add(&mut trusted, o);
            }
            for field in &places.config {
                if let Some(v) = self.state.get(field).and_then(Value::as_str) {
                    add(&mut trusted, v);
                }
            }
        }
        if url.origin.as_ref().is_some_and(|o| trusted.contains(o)) {
            return Ok(());
        }
        let what = if managed {
            "the flow's token"
        } else {
            "a secret"
        };
        let to = origin(&url.shown).unwrap_or_else(|| "this URL".into());
        Err(if trusted.is_empty() {
            StepError::new(format!(
                "{what} goes only to an origin the flow's configuration names, and it names none: not sending it to {to}"
            ))
            .hint("declare `base_url` with `env:` (not `input: true`), or write the URL in the flow; nothing was sent")
        } else {
            StepError::new(format!(
                "{what} goes only to {}, not to {to}",
                trusted.join(" and ")
            ))
            .hint(if managed {
                "nothing was sent; a credential for another host configured in the flow goes in a header of the step's own"
            } else {
                "nothing was sent; a secret goes only to origins the operator named: `env:` fields that callers cannot set, and URLs written in the flow"
            })
        })
    }

    /// Whether a refused token can be replaced: only an app's can.
    pub fn renewable(&self) -> bool {
        matches!(self.flow.auth, Some(Auth::Client(_)))
    }

    /// The bearer token to send. `stale`: the token that was just refused,
    /// which is not handed out again.
    pub async fn bearer(
        &mut self,
        sending: &Sending,
        stale: Option<&str>,
    ) -> Result<String, StepError> {
        let flow = self.flow;
        let client = match &flow.auth {
            None => return Err(StepError::new("the flow has no `auth:`")),
            Some(Auth::Token { token, .. }) => {
                let (token, _) = self.render_text(token)?;
                let token = token.trim().to_string();
                if token.is_empty() {
                    return Err(StepError::new("`auth.token` is empty")
                        .hint("set the token's environment variable, or pass it with `--set`"));
                }
                self.rec.redactor.add_secret(&token);
                return Ok(token);
            }
            Some(Auth::Client(c)) => c,
        };
        let (client_id, _) = self.render_text(&client.client_id)?;
        let (secret, _) = self.render_text(&client.client_secret)?;
        if client_id.trim().is_empty() || secret.is_empty() {
            return Err(
                StepError::new("`auth.client_id` or `auth.client_secret` is empty")
                    .hint("set them (usually from the environment) before the run"),
            );
        }
        let token_url = match &client.token_url {
            Some(t) => {
                let (url, tainted) = self.render_text(t)?;
                if tainted {
                    return Err(StepError::new(
                        "`auth.token_url` is built from a secret, and URLs end up in logs",
                    ));
                }
                url
            }
            None => {
                let base = self
                    .state
                    .get("base_url")
                    .map(crate::language::fields::display_text)
                    .unwrap_or_default();
                format!("{}{TOKEN_PATH}", base.trim_end_matches('/'))
            }
        };
        let url = send::build_url(&token_url, false, "", &[])?;
        let slot = self.tokens.slot(&url.wire, &client_id, &secret);
        // Held while fetching: the runs that need the same token wait for this one.
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref()
            && c.fresh(self.clock.now())
            && stale != Some(c.token.as_str())
        {
            self.rec.redactor.add_secret(&c.token);
            return Ok(c.token.clone());
        }
        let (wire, shown) = credentials(&client_id, &secret, client.form);
        self.fetching_token = true;
        let answer = self
            .send_recorded(
                "POST",
                &url,
                Vec::new(),
                Some(OutgoingBody { wire, shown }),
                sending,
                true,
                MAX_TOKEN_ANSWER,
            )
            .await;
        self.fetching_token = false;
        let answer = answer.map_err(|e| StepError {
            message: format!("getting a token: {}", e.message),
            ..e
        })?;
        if !answer.is_success() {
            let e = send::status_error("POST", &url.shown, &answer, &self.rec.redactor);
            return Err(StepError {
                message: format!("getting a token: {}", e.message),
                hint: Some(
                    "check `auth.client_id` and `auth.client_secret`, and the token URL".into(),
                ),
                ..e
            });
        }
        let fresh = answer
            .json()
            .and_then(|json| crate::run::tokens::read_answer(&json, self.clock.now()))
            .ok_or_else(|| {
                StepError::new(format!(
                    "getting a token: POST {} answered no `access_token`",
                    url.shown
                ))
                .kind(ErrorKind::Response)
                .hint("a token URL answers JSON such as {\"access_token\": \"…\", \"expires_in\": 3600}")
            })?;
        self.rec.redactor.add_secret(&fresh.token);
        let lasts = match fresh.lifetime {
            Some(d) => format!(
                "valid for {}",
                humantime::format_duration(std::time::Duration::from_secs(d.as_secs().max(1)))
            ),
            None => "with no expiry given: kept until it is refused".to_string(),
        };
        self.emit(EventKind::Log {
            message: format!("got a new token, {lasts}"),
        });
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }
}

/// The credentials for the wire, and as the trace shows them.
fn credentials(client_id: &str, secret: &str, form: bool) -> (RequestBody, Value) {
    let pairs = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret),
    ];
    let shown: Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| {
            let v = if *k == "client_secret" { MASK } else { v };
            (k.to_string(), Value::String(v.to_string()))
        })
        .collect();
    let wire = if form {
        RequestBody::Form(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    } else {
        RequestBody::Json(Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect(),
        ))
    };
    (wire, Value::Object(shown))
}
