//! `handoff run --record FILE`: every answer a real run received, written as
//! a mock file, so that the run can be replayed offline as a dry run
//! (`--mock FILE`), on the virtual clock, step by step.
//!
//! A recording keeps, per step and in order, each answer's status, the
//! headers a flow can use (`Content-Type`, `Retry-After`, `Location`,
//! `ETag`, `Link`), its body and how long it took. A connection that failed
//! is kept as the error it was. Nothing secret goes in. No request header is
//! kept, and answers are redacted like the trace: a secret the run knew,
//! including one it received (an app token), becomes `***`, which a replay
//! takes as it would the value. A body longer than [`MAX_BODY`] is cut, with
//! a marker, and a replay that needs the rest fails on it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::{Value, json};

use crate::run::clock::BoxFuture;
use crate::run::redact::Redactor;
use crate::run::transport::{HttpRequest, HttpResponse, Transport, TransportError};

/// The longest body kept whole.
pub const MAX_BODY: usize = 1024 * 1024;

/// The answer headers a flow can read, and so a replay needs.
pub const KEPT_HEADERS: [&str; 5] = ["content-type", "retry-after", "location", "etag", "link"];

struct Recorded {
    step: String,
    method: String,
    /// Path and query, as the trace shows them (secrets masked).
    target: String,
    body: Option<Value>,
    answer: Result<HttpResponse, TransportError>,
    took: Duration,
}

/// A transport that keeps what came back.
pub struct Recording<'a> {
    inner: &'a dyn Transport,
    kept: Mutex<Vec<Recorded>>,
}

impl<'a> Recording<'a> {
    pub fn new(inner: &'a dyn Transport) -> Recording<'a> {
        Recording {
            inner,
            kept: Mutex::new(Vec::new()),
        }
    }

    /// The mock file's text: JSON, which a mock file may be, with every
    /// secret `redactor` knows masked.
    /// The mock file: the run's inputs that are not secret (a replay uses
    /// them unless told otherwise), then every answer.
    pub fn mock_text(
        &self,
        run: &str,
        flow: &str,
        redactor: &Redactor,
        inputs: &IndexMap<String, Value>,
    ) -> String {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        mock_text(&kept, run, flow, redactor, inputs)
    }
}

/// A recording made from a trace: its requests and the answers to them, as
/// the trace shows them (redacted, and a body over 64 KB as an excerpt,
/// which a replay cannot use). `handoff runs record ID` makes one from a
/// stored run.
pub fn from_events(
    flow: &str,
    events: &[crate::run::trace::TraceEvent],
    inputs: &IndexMap<String, Value>,
) -> String {
    use crate::run::trace::EventKind;
    let mut kept: Vec<Recorded> = Vec::new();
    // The request waiting for its answer, and when it went (on the run's clock).
    let mut pending: Option<(Recorded, u64)> = None;
    let failed = |r: Recorded, why: &str| Recorded {
        answer: Err(if why.contains("timed out") {
            TransportError::Timeout(Duration::ZERO)
        } else if why.contains("could not connect") {
            TransportError::Connect(String::new())
        } else {
            TransportError::Reset(String::new())
        }),
        ..r
    };
    for event in events {
        let step = event.step.clone().unwrap_or_default();
        match &event.kind {
            EventKind::RequestSent {
                method, url, body, ..
            } => {
                if let Some((r, _)) = pending.take() {
                    kept.push(failed(r, ""));
                }
                pending = Some((
                    Recorded {
                        step: step.to_string(),
                        method: method.clone(),
                        target: crate::run::mock::target_of(url),
                        body: body.clone(),
                        answer: Err(TransportError::Reset(String::new())),
                        took: Duration::ZERO,
                    },
                    event.at_ms,
                ));
            }
            EventKind::ResponseReceived {
                status,
                headers,
                body,
                duration_ms,
            } => {
                if let Some((r, _)) = pending.take() {
                    let bytes = match body {
                        Some(Value::String(text)) => text.clone().into_bytes(),
                        Some(v) => serde_json::to_vec(v).unwrap_or_default(),
                        None => Vec::new(),
                    };
                    kept.push(Recorded {
                        answer: Ok(HttpResponse::new(
                            *status,
                            headers
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                            bytes,
                        )),
                        took: Duration::from_millis(*duration_ms),
                        ..r
                    });
                }
            }
            EventKind::RetryScheduled { reason, .. } => {
                if let Some((r, at)) = pending.take() {
                    let took = Duration::from_millis(event.at_ms.saturating_sub(at));
                    kept.push(Recorded {
                        took,
                        ..failed(r, reason)
                    });
                }
            }
            EventKind::StepFailed { error, .. } => {
                if let Some((r, at)) = pending.take() {
                    let took = Duration::from_millis(event.at_ms.saturating_sub(at));
                    kept.push(Recorded {
                        took,
                        ..failed(r, error)
                    });
                }
            }
            _ => {}
        }
    }
    if let Some((r, _)) = pending.take() {
        kept.push(failed(r, ""));
    }
    // Already redacted when the trace was written.
    let run = events.first().map_or("", |e| &*e.run);
    mock_text(&kept, run, flow, &Redactor::default(), inputs)
}

fn mock_text(
    kept: &[Recorded],
    run: &str,
    flow: &str,
    redactor: &Redactor,
    inputs: &IndexMap<String, Value>,
) -> String {
    // A token answer is a credential whether or not the run held it in a
    // field (a managed `auth:` token never is): hunt it in every reply.
    let mut redactor = redactor.clone();
    for r in kept {
        if let Ok(response) = &r.answer {
            for credential in crate::run::tokens::credentials_in(&response.body) {
                redactor.add_secret_value(&credential);
            }
        }
    }
    let redactor = &redactor;
    let mut by_step: IndexMap<&str, Vec<Value>> = IndexMap::new();
    for r in kept {
        by_step
            .entry(r.step.as_str())
            .or_default()
            .push(reply(r, redactor));
    }
    let responses: Vec<Value> = by_step
        .into_iter()
        .map(|(step, replies)| json!({ "step": step, "replies": replies }))
        .collect();
    let mut mock = serde_json::Map::new();
    mock.insert(
        "description".into(),
        json!(format!("answers recorded from a real run of `{flow}`")),
    );
    if !run.is_empty() {
        // A replay takes the run's id, and so its trace and span ids.
        mock.insert("run".into(), json!(run));
    }
    if !inputs.is_empty() {
        let mut given = serde_json::Map::new();
        for (name, value) in inputs {
            let mut value = value.clone();
            redactor.redact_json(&mut value);
            given.insert(name.clone(), value);
        }
        mock.insert("inputs".into(), Value::Object(given));
    }
    mock.insert("responses".into(), Value::Array(responses));
    let mock = Value::Object(mock);
    // YAML, as a `.mock.yaml` file is; JSON only if the writer cannot.
    let text = serde_saphyr::to_string(&mock)
        .unwrap_or_else(|_| serde_json::to_string_pretty(&mock).unwrap_or_default());
    format!(
        "# Recorded by handoff: replay with `--mock` (the inputs below are used unless `--set` says otherwise).\n{}\n",
        text.trim_end()
    )
}

fn reply(r: &Recorded, redactor: &Redactor) -> Value {
    let delay = format!("{}ms", r.took.as_millis());
    // The request it answered, for `--strict`: no header, secrets masked.
    let mut expect = json!({ "method": r.method, "target": redactor.redact(&r.target) });
    if let Some(body) = &r.body {
        let mut body = body.clone();
        redactor.redact_json(&mut body);
        expect["body"] = body;
    }
    let response = match &r.answer {
        Ok(response) => response,
        Err(e) => {
            let error = match e {
                TransportError::Timeout(_) => "timeout",
                TransportError::Connect(_) => "refused",
                _ => "reset",
            };
            return json!({ "error": error, "delay": delay, "expect": expect });
        }
    };
    let mut out = serde_json::Map::new();
    out.insert("status".into(), json!(response.status));
    let headers: serde_json::Map<String, Value> = response
        .headers
        .iter()
        .filter(|(name, _)| KEPT_HEADERS.contains(&name.to_ascii_lowercase().as_str()))
        .map(|(name, value)| (name.to_ascii_lowercase(), json!(redactor.redact(value))))
        .collect();
    if !headers.is_empty() {
        out.insert("headers".into(), Value::Object(headers));
    }
    if !response.body.is_empty() {
        let cut = response.body.len() > MAX_BODY;
        match (cut, serde_json::from_slice::<Value>(&response.body)) {
            (false, Ok(mut body)) => {
                redactor.redact_json(&mut body);
                out.insert("body".into(), body);
            }
            _ => {
                let kept = &response.body[..response.body.len().min(MAX_BODY)];
                let mut text = redactor.redact(&String::from_utf8_lossy(kept));
                if cut {
                    text.push_str(&format!(
                        "\n[cut by handoff record: {} more bytes]",
                        response.body.len() - MAX_BODY
                    ));
                }
                out.insert("text".into(), json!(text));
            }
        }
    }
    out.insert("delay".into(), json!(delay));
    out.insert("expect".into(), expect);
    Value::Object(out)
}

impl Transport for Recording<'_> {
    fn send<'a>(
        &'a self,
        request: &'a HttpRequest,
    ) -> BoxFuture<'a, Result<HttpResponse, TransportError>> {
        Box::pin(async move {
            let started = Instant::now();
            let answer = self.inner.send(request).await;
            if let Ok(mut kept) = self.kept.lock() {
                kept.push(Recorded {
                    step: request.step.clone(),
                    method: request.method.clone(),
                    target: crate::run::mock::target_of(&request.shown_url),
                    body: request.body.as_ref().map(crate::run::mock::body_json),
                    answer: answer.clone(),
                    took: started.elapsed(),
                });
            }
            answer
        })
    }

    fn route(&self) -> Option<String> {
        self.inner.route()
    }
}
