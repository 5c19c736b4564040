//! Sending one request and recording it: URLs and bodies built for the wire
//! and for the trace, the retry loop, and an unhappy status or a transport
//! failure turned into a helpful error.
//!
//! A request is built twice from the same rendered parts: once for the wire,
//! and once for the trace, where every part that derives from a secret is
//! `***`. Data that goes into an error message (a URL, a server's answer) is
//! redacted before it is cut to an excerpt, so a secret across the cut cannot
//! leave a piece behind.

use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use crate::language::analyzer::{Analyzer, Body};
use crate::run::redact::{MASK, Redactor};
use crate::run::retry::{self, RetryPolicy};
use crate::run::step::{ErrorKind, StepCx, StepError};
use crate::run::trace::EventKind;
use crate::run::transport::{HttpRequest, HttpResponse, RequestBody, TransportError};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers whose values never appear in a trace, whatever their source or
/// direction: these names, and any name with one of [`CREDENTIAL_WORDS`].
const SENSITIVE_HEADERS: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "authentication-info",
    "proxy-authentication-info",
];
const CREDENTIAL_WORDS: [&str; 8] = [
    "token",
    "secret",
    "password",
    "api-key",
    "apikey",
    "session",
    "credential",
    "signature",
];

/// Whether a header carries a credential, by its name.
pub fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SENSITIVE_HEADERS.contains(&name.as_str())
        || CREDENTIAL_WORDS.iter().any(|w| name.contains(w))
        || name.ends_with("-key")
        || name.ends_with("-auth")
}

/// An answer as a step's `status`, `headers` and `body` outputs. A
/// credential in its headers (a session cookie) makes the whole headers
/// output secret.
pub fn write_answer(
    cx: &mut StepCx<'_, '_>,
    response: &HttpResponse,
    body: Value,
) -> Result<(), StepError> {
    let credentials = response
        .headers
        .iter()
        .any(|(n, _)| is_credential_header(n));
    let headers: serde_json::Map<String, Value> = response
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), Value::String(v.clone())))
        .collect();
    cx.output("status", Value::from(response.status))?;
    cx.output_tainted("headers", Value::Object(headers), credentials)?;
    cx.output("body", body)
}

/// A URL for the wire, and the same URL as the trace shows it.
#[derive(Debug, Clone)]
pub struct RequestUrl {
    pub wire: String,
    pub shown: String,
    /// `scheme://host:port` of `wire`, for where the token may go.
    pub origin: Option<String>,
    /// `wire` parsed, which the client then need not parse again.
    pub parsed: Option<reqwest::Url>,
}

impl RequestUrl {
    /// A URL given whole (a `nextLink`, say).
    pub fn whole(wire: String, shown: String) -> RequestUrl {
        let parsed = reqwest::Url::parse(&wire).ok();
        RequestUrl {
            origin: parsed.as_ref().and_then(origin_of),
            parsed,
            wire,
            shown,
        }
    }
}

/// `scheme://host:port`, the port spelled out even when it is the scheme's own.
pub fn origin_of(u: &reqwest::Url) -> Option<String> {
    Some(format!(
        "{}://{}:{}",
        u.scheme(),
        u.host_str()?.to_ascii_lowercase(),
        u.port_or_known_default()?
    ))
}

/// A request body for the wire, and as the trace shows it.
pub struct OutgoingBody {
    pub wire: RequestBody,
    pub shown: Value,
}

impl OutgoingBody {
    /// Whether it carries a secret: the trace shows it otherwise than it is
    /// sent, as only secrets are masked.
    pub fn carries_secret(&self) -> bool {
        match &self.wire {
            RequestBody::Json(v) => *v != self.shown,
            RequestBody::Text(t) => self.shown.as_str() != Some(t.as_str()),
            RequestBody::Form(pairs) => {
                let sent: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{}={}",
                            crate::run::transport::form_component(k),
                            crate::run::transport::form_component(v)
                        )
                    })
                    .collect();
                self.shown.as_str() != Some(sent.join("&").as_str())
            }
        }
    }
}

/// How a step sends its requests: a timeout for each attempt, and a retry
/// policy. Every HTTP step kind takes `timeout` and `retry`.
#[derive(Debug, Clone)]
pub struct Sending {
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Whether requests carry the run's W3C `traceparent` (when it has one).
    pub traceparent: bool,
}

pub const SENDING_KEYS: [&str; 3] = ["timeout", "retry", "traceparent"];

pub fn parse_sending(cx: &mut Analyzer, body: &Body) -> Option<Sending> {
    let timeout = match body.get("timeout") {
        Some(n) => cx.duration(n),
        None => Some(DEFAULT_TIMEOUT),
    };
    let retry = crate::run::retry::parse(cx, body.get("retry"));
    let traceparent = match body.get("traceparent") {
        Some(n) => cx.boolean(n),
        None => Some(true),
    };
    Some(Sending {
        timeout: timeout?,
        retry: retry?,
        traceparent: traceparent?,
    })
}

/// A request header with whether its value derives from a secret.
#[derive(Clone)]
pub struct Header {
    pub name: String,
    pub value: String,
    pub secret: bool,
}

impl StepCx<'_, '_> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send_recorded(
        &mut self,
        method: &str,
        url: &RequestUrl,
        headers: Vec<Header>,
        body: Option<OutgoingBody>,
        sending: &Sending,
        repeatable: bool,
        max_body: usize,
    ) -> Result<HttpResponse, StepError> {
        let mut shown = IndexMap::new();
        let mut wire = Vec::new();
        let has_accept = headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("accept"));
        for h in headers {
            let masked = h.secret || is_credential_header(&h.name);
            shown.insert(
                h.name.clone(),
                if masked {
                    MASK.to_string()
                } else {
                    h.value.clone()
                },
            );
            wire.push((h.name, h.value));
        }
        // What the transport would add, added here, so the trace shows the wire.
        let mut implied = Vec::new();
        if !has_accept {
            implied.push(("Accept", "application/json, application/problem+json"));
        }
        if let Some(b) = &body
            && !wire
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            implied.push(("Content-Type", b.wire.content_type()));
        }
        for (name, value) in implied {
            shown.insert(name.to_string(), value.to_string());
            wire.push((name.to_string(), value.to_string()));
        }
        let tracing = self.rec.listening();
        let (body, shown_body) = match body {
            Some(b) if self.rec.values() => {
                (Some(b.wire), Some(crate::run::trace::bounded(&b.shown)))
            }
            Some(b) => (Some(b.wire), None),
            None => (None, None),
        };
        // The run's trace context goes out unless the flow sets its own.
        let context = self.trace.filter(|_| {
            sending.traceparent
                && !wire
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case("traceparent"))
        });
        let mut request = HttpRequest {
            step: self.step.id.to_string(),
            method: method.to_string(),
            url: url.wire.clone(),
            parsed: url.parsed.clone(),
            shown_url: url.shown.clone(),
            headers: wire,
            body,
            timeout: sending.timeout,
            max_body,
        };
        let policy = &sending.retry;
        let mut attempt = 1;
        let mut shortages = 0u32;
        loop {
            if tracing {
                self.emit(EventKind::RequestSent {
                    method: method.to_string(),
                    url: request.shown_url.clone(),
                    headers: if self.rec.values() {
                        shown.clone()
                    } else {
                        IndexMap::new()
                    },
                    body: shown_body.clone(),
                    attempt: (attempt > 1).then_some(attempt),
                });
            }
            if let Some(c) = context {
                // This attempt's span: the one its `request_sent` opens.
                let value = c.traceparent(self.rec.seq());
                request.headers.retain(|(n, _)| n != "traceparent");
                request.headers.push(("traceparent".to_string(), value));
            }
            // Write-ahead: a request that is not idempotent is on record
            // before it can land, so a restart cannot lose it from the trace;
            // and an earlier step's answer is on record before any request
            // leaves, so a restart never sends again what was answered.
            let idempotent = matches!(
                method.to_ascii_uppercase().as_str(),
                "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
            );
            if let Some(ahead) = self.ahead
                && (!idempotent || self.rec.holds_answers())
            {
                if !idempotent {
                    self.state.unsettled = Some(crate::run::state::Unsettled {
                        seq: self.rec.seq(),
                        method: method.to_string(),
                        url: request.shown_url.clone(),
                    });
                }
                if let Err(why) = ahead.keep(self.state, self.rec).await {
                    self.state.unsettled = None;
                    return Err(StepError::new(format!(
                        "the {method} was not sent: it could not be put on record first ({why})"
                    )));
                }
            }
            let started = self.clock.elapsed();
            let result = self.transport.send(&request).await;
            self.state.unsettled = None;
            let last = attempt >= policy.attempts;
            let (reason, retry_after) = match result {
                Ok(response) => {
                    let duration_ms =
                        self.clock.elapsed().saturating_sub(started).as_millis() as u64;
                    self.record_response(&response, duration_ms);
                    let failure = retry::RetryOn::Status(response.status);
                    if response.is_success() || last || !policy.retries(failure, repeatable) {
                        return Ok(response);
                    }
                    let retry_after = response.header("retry-after").map(str::to_string);
                    (status_text(response.status), retry_after)
                }
                Err(TransportError::Local(cause)) => {
                    // Nothing was sent: wait for descriptors to come back,
                    // without spending one of the policy's attempts.
                    shortages += 1;
                    let wait = Duration::from_millis(50)
                        .saturating_mul(2u32.saturating_pow(shortages.min(16)))
                        .min(retry::LOCAL_WAIT);
                    self.emit(EventKind::RetryScheduled {
                        attempt,
                        attempts: policy.attempts,
                        reason: format!("this machine ran short: {}", self.data(&cause)),
                        wait_ms: wait.as_millis() as u64,
                        retry_after: None,
                    });
                    self.clock.sleep(wait).await;
                    continue;
                }
                Err(e) => {
                    let failure = retry::failure_of(&e);
                    match failure.filter(|f| policy.retries(*f, repeatable)) {
                        Some(_) if !last => (self.data(&e.to_string()), None),
                        _ => {
                            let mut error = transport_error(&request, &e, &self.rec.redactor);
                            if attempt > 1 {
                                error.message.push_str(&format!(
                                    " (attempt {attempt} of {})",
                                    policy.attempts
                                ));
                            } else if policy.attempts > 1
                                && policy.on.is_none()
                                && !repeatable
                                && matches!(
                                    failure,
                                    Some(retry::RetryOn::Timeout | retry::RetryOn::Reset)
                                )
                            {
                                error.message.push_str(" (not retried: the request may have reached the server, and sending it twice is not safe)");
                            }
                            return Err(error);
                        }
                    }
                }
            };
            let server_wait = retry_after
                .as_deref()
                .and_then(|v| retry::parse_retry_after(v, self.clock.now()));
            let seed = self.jitter_seed(attempt);
            let wait = policy.wait(attempt, server_wait, seed);
            self.emit(EventKind::RetryScheduled {
                attempt,
                attempts: policy.attempts,
                reason,
                wait_ms: wait.as_millis() as u64,
                retry_after,
            });
            self.clock.sleep(wait).await;
            attempt += 1;
        }
    }

    /// Jitter must differ between workers in real runs, and stay the same
    /// between dry runs so their traces can be compared.
    fn jitter_seed(&self, attempt: u32) -> u64 {
        let start = if self.clock.is_virtual() {
            0
        } else {
            self.clock
                .now()
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        };
        let step = self
            .step
            .id
            .bytes()
            .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        start ^ step.rotate_left(17) ^ u64::from(attempt)
    }

    fn record_response(&mut self, response: &HttpResponse, duration_ms: u64) {
        // A response that feeds a secret field (an app token, say) is secret
        // from the moment it arrives, not only once it is stored.
        let secret = self
            .step
            .output
            .values()
            .any(|f| self.state.secret.contains(f));
        let body = if self.fetching_token {
            token_answer_for_trace(response, &mut self.rec.redactor)
        } else if secret {
            if let Some(json) = response.json() {
                self.rec.redactor.add_received(&json);
            } else {
                self.rec
                    .redactor
                    .add_received(&Value::String(response.text().trim().to_string()));
            }
            (!response.body.is_empty()).then(|| Value::String(MASK.to_string()))
        } else if self.rec.values() {
            body_for_trace(response, &self.rec.redactor)
        } else {
            None
        };
        if !self.rec.listening() {
            return;
        }
        self.emit(EventKind::ResponseReceived {
            status: response.status,
            headers: if self.rec.values() {
                shown_headers(&response.headers)
            } else {
                IndexMap::new()
            },
            body,
            duration_ms,
        });
    }
}

/// Response headers as the trace shows them: credentials masked.
fn shown_headers(headers: &[(String, String)]) -> IndexMap<String, String> {
    headers
        .iter()
        .map(|(n, v)| {
            let v = if is_credential_header(n) {
                MASK.to_string()
            } else {
                v.clone()
            };
            (n.clone(), v)
        })
        .collect()
}

/// The largest answer kept as JSON in the trace; a larger one is an excerpt.
const TRACE_JSON_BYTES: usize = 64 * 1024;

/// The response body as the trace shows it: JSON when it is, else an excerpt
/// of the redacted text.
fn body_for_trace(response: &HttpResponse, redactor: &Redactor) -> Option<Value> {
    if response.body.is_empty() {
        return None;
    }
    if response.body.len() <= TRACE_JSON_BYTES
        && let Some(json) = response.json()
    {
        return Some(json);
    }
    // Only the head is shown: redact a head long enough to hold the
    // excerpt and any secret that starts inside it, not the whole body.
    let head_bytes = crate::run::trace::EXCERPT_CHARS * 4 + 4096;
    let head = &response.body[..response.body.len().min(head_bytes)];
    let shown = redactor.redact(&String::from_utf8_lossy(head));
    let cut: String = shown
        .chars()
        .take(crate::run::trace::EXCERPT_CHARS)
        .collect();
    if cut.len() == shown.len() && head.len() == response.body.len() {
        return Some(Value::String(cut));
    }
    Some(Value::String(format!(
        "{cut}… ({} bytes in all)",
        response.body.len()
    )))
}

/// The first `max` characters of already redacted text.
pub fn excerpt(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}… ({} bytes in all)", text.len())
}

fn transport_error(request: &HttpRequest, err: &TransportError, r: &Redactor) -> StepError {
    let target = format!("{} {}", request.method, request.shown_url);
    let kind = match err {
        TransportError::Timeout(_) => ErrorKind::Timeout,
        TransportError::Connect(_) => ErrorKind::Connect,
        TransportError::Reset(_) => ErrorKind::Reset,
        TransportError::TooLarge(_) => ErrorKind::Response,
        TransportError::NoScriptedResponse | TransportError::Other(_) => ErrorKind::Step,
        TransportError::Local(_) => ErrorKind::Connect,
    };
    let e = StepError::new(format!("{target}: {}", r.redact(&err.to_string()))).kind(kind);
    match err {
        TransportError::Timeout(_) => e.hint(
            "the server did not answer in time; raise the step's `timeout`, or check the server",
        ),
        TransportError::Connect(_) => e.hint("is the base URL right, and is the server up?"),
        TransportError::NoScriptedResponse => e.hint(format!(
            "add a response for step `{}` (or for `{} {}`) to the mock file",
            request.step,
            request.method,
            request.path()
        )),
        TransportError::Reset(_) => e.hint(
            "the server or a proxy closed the connection mid-answer; the request may have taken effect",
        ),
        TransportError::TooLarge(_) => e.hint(
            "handoff keeps at most 10 MB of an answer; `get_tasks` takes `max_bytes` for all its pages",
        ),
        TransportError::Local(_) => e.hint("the worker is out of open files or memory; raise its limits"),
        TransportError::Other(_) => e,
    }
}

/// An error for a status the step cannot accept, with the problem's detail
/// and a hint for the statuses people meet most. `url` is the shown URL; the
/// server's words are redacted, then cut.
pub fn status_error(method: &str, url: &str, response: &HttpResponse, r: &Redactor) -> StepError {
    let mut message = format!("{method} {url} answered {}", status_text(response.status));
    if (300..400).contains(&response.status) {
        let to = response
            .header("location")
            .map_or_else(|| "nowhere".to_string(), |l| excerpt(&r.redact(l), 200));
        return StepError::new(format!("{message}, a redirect to {to}"))
            .kind(ErrorKind::Status)
            .status(response.status)
            .hint("handoff never follows redirects, so a token or a completion cannot be sent somewhere else; point the base URL at where the API really is");
    }
    if let Some(problem) = response.json() {
        let title = problem.get("title").and_then(Value::as_str);
        let detail = problem.get("detail").and_then(Value::as_str);
        // "401 Unauthorized: Unauthorized: …" says nothing twice.
        let reason = reqwest::StatusCode::from_u16(response.status)
            .ok()
            .and_then(|s| s.canonical_reason());
        let title = title.filter(|t| Some(*t) != reason);
        let said = match (title, detail) {
            (Some(t), Some(d)) => format!("{t}: {d}"),
            (Some(t), None) | (None, Some(t)) => t.to_string(),
            _ => problem.to_string(),
        };
        message.push_str(&format!(": {}", excerpt(&r.redact(&said), 200)));
    } else if !response.body.is_empty() {
        message.push_str(&format!(
            ": {}",
            excerpt(&r.redact(response.text().trim()), 200)
        ));
    }
    let hint = match response.status {
        401 => Some(
            "401 means the token is missing, wrong or expired: check the token field and its environment variable",
        ),
        403 => Some("403 means the token is valid but lacks rights to this resource"),
        404 => Some("404: check the base URL and the id in the path"),
        409 => Some("409: the task was already completed, overridden or terminated"),
        429 => Some("429: too many requests; slow the loop down with a longer timer"),
        500..=599 => Some("the server failed; try again later"),
        _ => None,
    };
    let e = StepError::new(message)
        .kind(ErrorKind::Status)
        .status(response.status);
    match hint {
        Some(h) => e.hint(h),
        None => e,
    }
}

pub fn status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// `base` + `path` + an encoded query, for the wire and for the trace. In
/// the trace, a base that derives from a secret is `***` whole, and so is a
/// query value that does. An empty value is sent as `name=`, as written.
pub fn build_url(
    base: &str,
    base_secret: bool,
    path: &str,
    query: &[(String, String, bool)],
) -> Result<RequestUrl, StepError> {
    let joined = format!("{}{}", base.trim_end_matches('/'), path);
    let mut url = reqwest::Url::parse(&joined).map_err(|e| {
        let shown = if base_secret { MASK } else { joined.as_str() };
        StepError::new(format!("`{shown}` is not a valid URL: {e}"))
            .hint("the base URL needs a scheme, like `https://us.nintex.io`")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(StepError::new(format!(
            "`{}` is not an http or https URL",
            if base_secret { MASK } else { joined.as_str() }
        )));
    }
    let mut shown = url.clone();
    if !query.is_empty() {
        let mut wire = url.query_pairs_mut();
        let mut show = shown.query_pairs_mut();
        for (k, v, secret) in query {
            wire.append_pair(k, v);
            show.append_pair(k, if *secret { MASK } else { v });
        }
    }
    let shown = if base_secret {
        match shown.query() {
            Some(q) => format!("{MASK}?{q}"),
            None => MASK.to_string(),
        }
    } else {
        shown.to_string()
    };
    Ok(RequestUrl {
        origin: origin_of(&url),
        wire: url.to_string(),
        parsed: Some(url),
        shown,
    })
}

/// One path segment from data, such as a task id, percent-encoded so that it
/// cannot add, remove or climb segments. Ids that are empty, `.` or `..`
/// (which URL normalisation would remove or climb, encoded or not), or that
/// hold control characters, are refused. `what` names the option.
pub fn segment(text: &str, what: &str) -> Result<String, StepError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(StepError::new(format!("`{what}` is empty"))
            .hint("check that the id was found before using it"));
    }
    if trimmed == "." || trimmed == ".." || text.chars().any(char::is_control) {
        return Err(StepError::new(format!(
            "`{what}` is not a usable id: it is `.` or `..`, or holds a control character"
        ))
        .hint("an id from data goes into the URL's path, where it must not change the path"));
    }
    Ok(
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .replace("%2D", "-")
            .replace("%5F", "_")
            .replace("%2E", "."),
    )
}

/// A token answer as the trace shows it: the credentials in it masked (and
/// hunted from now on), the rest, such as `expires_in`, kept.
pub fn token_answer_for_trace(response: &HttpResponse, redactor: &mut Redactor) -> Option<Value> {
    if response.body.is_empty() {
        return None;
    }
    match response.json() {
        Some(Value::Object(mut map)) => {
            for key in crate::run::tokens::CREDENTIAL_KEYS {
                if let Some(v) = map.get_mut(key) {
                    redactor.add_secret_value(v);
                    *v = Value::String(MASK.to_string());
                }
            }
            Some(Value::Object(map))
        }
        // Not a token answer: nothing in it is kept, as it may still be one.
        _ => {
            redactor.add_received(&Value::String(response.text().trim().to_string()));
            Some(Value::String(MASK.to_string()))
        }
    }
}
