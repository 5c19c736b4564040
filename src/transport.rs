//! HTTP, injected: reqwest for real runs, scripted responses for dry runs.
//!
//! Steps build an [`HttpRequest`] and hand it to a [`Transport`]. What comes
//! back is plain data, so the engine and the trace never depend on how it was
//! fetched.

use std::time::Duration;

use serde_json::Value;

pub use crate::clock::BoxFuture;

/// A request as a step built it, before any redaction.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// The step that sends it; scripted responses can match on it.
    pub step: String,
    pub method: String,
    /// The full URL, query string included.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<RequestBody>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum RequestBody {
    Json(Value),
    Form(Vec<(String, String)>),
    Text(String),
}

impl RequestBody {
    pub fn content_type(&self) -> &'static str {
        match self {
            RequestBody::Json(_) => "application/json",
            RequestBody::Form(_) => "application/x-www-form-urlencoded",
            RequestBody::Text(_) => "text/plain; charset=utf-8",
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            RequestBody::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
            RequestBody::Form(pairs) => {
                let mut url = reqwest::Url::parse("http://x/").expect("static URL parses");
                url.query_pairs_mut().extend_pairs(pairs);
                url.query().unwrap_or("").as_bytes().to_vec()
            }
            RequestBody::Text(t) => t.as_bytes().to_vec(),
        }
    }
}

impl HttpRequest {
    /// The path and query, as a scripted response matches it.
    pub fn path(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(url) => url.path().to_string(),
            Err(_) => self.url.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why no response came back.
#[derive(Debug, Clone, PartialEq)]
pub enum TransportError {
    Timeout(Duration),
    Connect(String),
    /// The connection dropped after the request went out: the server may
    /// have acted on it.
    Reset(String),
    /// The body was larger than handoff keeps in memory.
    TooLarge(usize),
    /// A dry run with no scripted response for this request.
    NoScriptedResponse,
    Other(String),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Timeout(d) => {
                write!(f, "timed out after {}", crate::clock::format_duration(*d))
            }
            TransportError::Connect(m) => write!(f, "could not connect: {m}"),
            TransportError::Reset(m) => write!(f, "the connection dropped: {m}"),
            TransportError::TooLarge(limit) => {
                write!(f, "the response body is larger than {limit} bytes")
            }
            TransportError::NoScriptedResponse => {
                f.write_str("no scripted response matches this request")
            }
            TransportError::Other(m) => f.write_str(m),
        }
    }
}

pub trait Transport: Send + Sync {
    fn send<'a>(
        &'a self,
        request: &'a HttpRequest,
    ) -> BoxFuture<'a, Result<HttpResponse, TransportError>>;
}

/// Largest response body a step keeps.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// The real thing: reqwest over rustls, one connection pool per run.
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    pub fn new() -> Result<ReqwestTransport, String> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("handoff/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
        Ok(ReqwestTransport { client })
    }
}

impl Transport for ReqwestTransport {
    fn send<'a>(
        &'a self,
        request: &'a HttpRequest,
    ) -> BoxFuture<'a, Result<HttpResponse, TransportError>> {
        Box::pin(async move {
            let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
                TransportError::Other(format!("`{}` is not an HTTP method", request.method))
            })?;
            let mut builder = self
                .client
                .request(method, &request.url)
                .timeout(request.timeout);
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            if let Some(body) = &request.body {
                if !request
                    .headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                {
                    builder = builder.header("content-type", body.content_type());
                }
                builder = builder.body(body.to_bytes());
            }
            let mut response = builder
                .send()
                .await
                .map_err(|e| classify(&e, request.timeout))?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            if response
                .content_length()
                .is_some_and(|l| l as usize > MAX_BODY_BYTES)
            {
                return Err(TransportError::TooLarge(MAX_BODY_BYTES));
            }
            // Read in chunks so an endless body stops at the limit, not at OOM.
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| classify(&e, request.timeout))?
            {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(TransportError::TooLarge(MAX_BODY_BYTES));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(HttpResponse {
                status,
                headers,
                body,
            })
        })
    }
}

/// reqwest's error text includes the URL; ours is shown next to the redacted
/// request instead, so only the cause is kept.
fn classify(err: &reqwest::Error, timeout: Duration) -> TransportError {
    if err.is_timeout() {
        return TransportError::Timeout(timeout);
    }
    let mut cause = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if err.is_connect() {
        return TransportError::Connect(if cause.is_empty() {
            "connection failed".into()
        } else {
            cause
        });
    }
    if err.is_builder() {
        return TransportError::Other(format!("invalid request: {cause}"));
    }
    TransportError::Reset(if cause.is_empty() {
        "no complete answer came back".to_string()
    } else {
        cause
    })
}
