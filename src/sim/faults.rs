//! Fault injection: the next N requests that match a rule are answered badly
//! (a status with `Retry-After`, a delay, a broken body, a dropped
//! connection), so tests and users can rehearse what production does at night.
//!
//! A rule is armed through `POST /_sim/faults` and used up request by request.
//! With `apply`, the real handler runs first: the request takes effect, then
//! its answer is lost, which is how a worker ends up retrying a PATCH that
//! already succeeded.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sim::model::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFault {
    /// The answer's JSON is cut in half.
    Broken,
    /// The answer has no body at all.
    Empty,
    /// The connection closes with no answer at all.
    Drop,
    /// The headers and half the body go out, then the connection drops.
    Cut,
    /// A valid JSON answer of 16 MB, past what clients should keep.
    Huge,
}

/// A rule as `POST /_sim/faults` takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Matches any method when absent.
    pub method: Option<String>,
    /// A path, where `*` matches any run of characters. Matches any path when absent.
    pub path: Option<String>,
    #[serde(default = "one")]
    pub times: u32,
    pub status: Option<u16>,
    /// Sent as `Retry-After` as it is: seconds, or an HTTP date.
    pub retry_after: Option<String>,
    pub delay: Option<String>,
    pub body: Option<BodyFault>,
    /// Whether the request takes effect before the fault spoils its answer.
    /// Defaults to false with `status`, true otherwise.
    pub apply: Option<bool>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub id: u64,
    pub spec: FaultSpec,
    pub delay: Option<Duration>,
    pub remaining: u32,
}

impl Fault {
    pub fn new(id: u64, spec: FaultSpec) -> Result<Fault, Problem> {
        let delay = match &spec.delay {
            Some(text) => Some(
                crate::language::duration::parse_duration(text)
                    .map_err(|e| Problem::bad_request(format!("`delay`: {e}")))?,
            ),
            None => None,
        };
        if let Some(status) = spec.status
            && StatusCode::from_u16(status).is_err()
        {
            return Err(Problem::bad_request(format!(
                "`status` {status} is not an HTTP status"
            )));
        }
        if spec.status.is_none() && spec.delay.is_none() && spec.body.is_none() {
            return Err(Problem::bad_request(
                "a fault needs at least one of `status`, `delay` or `body`",
            ));
        }
        Ok(Fault {
            id,
            remaining: spec.times,
            delay,
            spec,
        })
    }

    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.remaining > 0
            && self
                .spec
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.spec.path.as_deref().is_none_or(|p| glob(p, path))
    }

    pub fn applies_request(&self) -> bool {
        self.spec.apply.unwrap_or(self.spec.status.is_none())
    }

    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "method": self.spec.method,
            "path": self.spec.path,
            "remaining": self.remaining,
            "status": self.spec.status,
            "retry_after": self.spec.retry_after,
            "delay": self.spec.delay,
            "body": self.spec.body.map(|b| format!("{b:?}").to_lowercase()),
            "apply": self.applies_request(),
        })
    }

    /// A short description for the request log.
    pub fn label(&self) -> String {
        let mut parts = vec![format!("fault {}", self.id)];
        if let Some(s) = self.spec.status {
            parts.push(s.to_string());
        }
        if let Some(d) = &self.spec.delay {
            parts.push(format!("delay {d}"));
        }
        if let Some(b) = self.spec.body {
            parts.push(format!("{b:?}").to_lowercase());
        }
        parts.join(" ")
    }

    /// Spoils an answer (the real one, or none when the request was not applied).
    pub async fn spoil(&self, answer: Option<Response<Body>>) -> Response<Body> {
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        let mut response = match (self.spec.status, answer) {
            (Some(status), _) => {
                let problem = Problem::new(
                    status,
                    "Injected fault",
                    "the simulator injected this answer",
                );
                crate::sim::answer::problem_response(&problem)
            }
            (None, Some(r)) => r,
            (None, None) => Response::new(Body::empty()),
        };
        if let Some(value) = self
            .spec
            .retry_after
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        match self.spec.body {
            None => response,
            Some(kind) => spoil_body(response, kind).await,
        }
    }
}

async fn spoil_body(response: Response<Body>, kind: BodyFault) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    // A body that was empty still needs something to break.
    let full = if bytes.is_empty() {
        Bytes::from_static(br#"{"tasks": [{"id": "cut-off"}]}"#)
    } else {
        bytes
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = match kind {
        BodyFault::Empty => Body::empty(),
        BodyFault::Broken => Body::from(full.slice(..full.len() / 2)),
        BodyFault::Huge => {
            const CHUNK: usize = 64 * 1024;
            const CHUNKS: usize = 256;
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            // Streamed, so the simulator never holds 16 MB itself.
            let open = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from_static(b"{\"tasks\": ["))
            });
            let padding =
                futures_util::stream::iter((0..CHUNKS).map(|_| Ok(Bytes::from(vec![b' '; CHUNK]))));
            let close = futures_util::stream::once(async { Ok(Bytes::from_static(b"]}")) });
            use futures_util::StreamExt;
            Body::from_stream(open.chain(padding).chain(close))
        }
        BodyFault::Drop => Body::from_stream(futures_util::stream::once(async {
            Err::<Bytes, _>(dropped())
        })),
        BodyFault::Cut => {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
            let half = full.slice(..full.len() / 2);
            // hyper sends what it has before it polls again; the pause makes
            // sure the half body is on the wire before the connection drops.
            let rest = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err::<Bytes, _>(dropped())
            });
            Body::from_stream(futures_util::StreamExt::chain(
                futures_util::stream::once(async { Ok(half) }),
                rest,
            ))
        }
    };
    if parts.status == StatusCode::NO_CONTENT {
        parts.status = StatusCode::OK;
    }
    Response::from_parts(parts, body)
}

fn dropped() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "injected: connection dropped",
    )
}

/// `*` matches any run of characters, `/` included.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob(
            "/workflows/v2/tasks/*",
            "/workflows/v2/tasks/a/assignments/b"
        ));
        assert!(glob("/workflows/*/tasks", "/workflows/v2/tasks"));
        assert!(!glob("/workflows/*/tasks", "/workflows/v2/tasks/x"));
        assert!(glob("*", "/anything"));
        assert!(!glob("/a*a", "/a"));
    }
}
