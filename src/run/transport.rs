//! HTTP, injected: reqwest for real runs, scripted responses for dry runs.
//!
//! Steps build an [`HttpRequest`] and hand it to a [`Transport`]. What comes
//! back is plain data, so the engine and the trace never depend on how it was
//! fetched.
//!
//! Redirects are never followed: a 3xx comes back as an answer, and the step
//! reports it with its `Location`. Following one could send the token, a
//! custom credential header or a completion to another server, and a PATCH
//! turned into a GET by a 303 would look like success.

use std::time::Duration;

use serde_json::Value;

use crate::run::clock::BoxFuture;

/// A request as a step built it, before any redaction.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// The step that sends it; scripted responses can match on it.
    pub step: String,
    pub method: String,
    /// The full URL, query string included.
    pub url: String,
    /// `url` parsed, when its sender has it: the client then need not parse
    /// it again (each parse was ~8 k instructions, four a request).
    pub parsed: Option<reqwest::Url>,
    /// The URL as traces and errors show it: parts from secrets masked.
    pub shown_url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<RequestBody>,
    pub timeout: Duration,
    /// The largest answer the step takes, in bytes.
    pub max_body: usize,
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

/// One name or value of a form body, encoded as the `url` crate encodes it:
/// letters, digits and `*-._` as they are, space as `+`, the rest `%XX`.
pub fn form_component(text: &str) -> String {
    const FORM: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'*')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_');
    percent_encoding::utf8_percent_encode(text, FORM)
        .to_string()
        .replace("%20", "+")
}

/// Query or form pairs (`a=1&b=x+y`), decoded: what [`form_component`] encodes.
pub fn decode_pairs(text: &str) -> Vec<(String, String)> {
    let mut url = reqwest::Url::parse("http://form.invalid/").expect("static URL parses");
    url.set_query(Some(text));
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
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
    /// The body as JSON, parsed at most once: the trace and the step both read it.
    parsed: std::sync::OnceLock<Option<Value>>,
}

/// A body as JSON: `None` when empty or not JSON.
fn parse(body: &[u8]) -> Option<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    serde_json::from_slice(body).ok()
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

    pub fn new(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> HttpResponse {
        HttpResponse {
            status,
            headers,
            body,
            parsed: Default::default(),
        }
    }

    /// The body as JSON, taken out of the response, when it was parsed
    /// already (for the trace): `None` when it was not.
    pub fn take_parsed(&mut self) -> Option<Option<Value>> {
        self.parsed.take()
    }

    /// The body as JSON, when it is JSON: the trace's parse of it taken
    /// out rather than copied, or the body parsed now.
    pub fn take_json(&mut self) -> Option<Value> {
        self.take_parsed().unwrap_or_else(|| parse(&self.body))
    }

    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        self.parsed.get_or_init(|| parse(&self.body)).clone()
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
    /// This machine ran short (open files, memory) before anything was sent:
    /// the worker's own fault, not the server's, and always worth waiting out.
    Local(String),
    Other(String),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Timeout(d) => {
                write!(
                    f,
                    "timed out after {}",
                    crate::run::clock::format_duration(*d)
                )
            }
            TransportError::Connect(m) => write!(f, "could not connect: {m}"),
            TransportError::Reset(m) => write!(f, "the connection dropped: {m}"),
            TransportError::TooLarge(limit) => {
                write!(f, "the response body is larger than {limit} bytes")
            }
            TransportError::NoScriptedResponse => {
                f.write_str("no scripted response matches this request")
            }
            TransportError::Local(m) => write!(f, "this machine ran short: {m}"),
            TransportError::Other(m) => f.write_str(m),
        }
    }
}

pub trait Transport: Send + Sync {
    fn send<'a>(
        &'a self,
        request: &'a HttpRequest,
    ) -> BoxFuture<'a, Result<HttpResponse, TransportError>>;

    /// What a run's first event should say about the route requests take,
    /// such as a proxy from the environment.
    fn route(&self) -> Option<String> {
        None
    }
}

/// Largest response body a step keeps.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// The real thing: reqwest over rustls, one connection pool per run.
pub struct ReqwestTransport {
    /// For `http://`: no trust store, so none is loaded.
    plain: reqwest::Client,
    /// For `https://`, built at the first such request: loading the system's
    /// certificates was a third of a short run's CPU, even when it made only
    /// plain-HTTP requests.
    tls: std::sync::OnceLock<Result<reqwest::Client, String>>,
    proxies: Option<String>,
}

/// The variables reqwest (like curl) takes proxies from.
const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

impl ReqwestTransport {
    pub fn new() -> Result<ReqwestTransport, String> {
        install_crypto();
        let plain = builder()
            .tls_certs_only([])
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
        Ok(ReqwestTransport {
            plain,
            tls: std::sync::OnceLock::new(),
            proxies: proxies_in_use(&|v| std::env::var(v).ok()),
        })
    }

    /// The client for a URL: the TLS one, built now if need be, for `https`.
    fn client_for(&self, url: &str) -> Result<&reqwest::Client, TransportError> {
        if !url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            return Ok(&self.plain);
        }
        self.tls
            .get_or_init(|| {
                builder()
                    .build()
                    .map_err(|e| format!("cannot start the HTTPS client: {e}"))
            })
            .as_ref()
            .map_err(|e| TransportError::Other(e.clone()))
    }
}

/// Chooses rustls's cryptography (ring) for the whole process, before any
/// HTTP client is built; calling it again does nothing.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Both clients' settings: who we are, and no redirect followed.
pub fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("handoff/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
}

/// The proxies the environment sets, without any password in them.
pub fn proxies_in_use(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let found: Vec<String> = PROXY_VARS
        .iter()
        .filter_map(|var| {
            let value = env(var).filter(|v| !v.trim().is_empty())?;
            let shown = match reqwest::Url::parse(value.trim()) {
                Ok(mut url) => {
                    if !url.username().is_empty() || url.password().is_some() {
                        let _ = url.set_username("***");
                        let _ = url.set_password(None);
                    }
                    url.to_string()
                }
                Err(_) => "(unparsable)".to_string(),
            };
            Some(format!("${var}={shown}"))
        })
        .collect();
    (!found.is_empty()).then(|| {
        let no_proxy = env("NO_PROXY")
            .or_else(|| env("no_proxy"))
            .map(|v| format!(", except $NO_PROXY={v}"))
            .unwrap_or_default();
        format!(
            "requests go through a proxy: {}{no_proxy}; on http:// URLs it sees every header, the token included",
            found.join(", ")
        )
    })
}

impl Transport for ReqwestTransport {
    fn route(&self) -> Option<String> {
        self.proxies.clone()
    }

    fn send<'a>(
        &'a self,
        request: &'a HttpRequest,
    ) -> BoxFuture<'a, Result<HttpResponse, TransportError>> {
        Box::pin(async move {
            let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
                TransportError::Other(format!("`{}` is not an HTTP method", request.method))
            })?;
            let client = self.client_for(&request.url)?;
            // Only the very URL the limits and the token's origin were
            // checked against goes out: a parse that says otherwise is not used.
            let builder = match &request.parsed {
                Some(url) if url.as_str() == request.url => client.request(method, url.clone()),
                _ => client.request(method, &request.url),
            };
            let mut builder = builder.timeout(request.timeout);
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
            let limit = request.max_body.min(MAX_BODY_BYTES);
            if response
                .content_length()
                .is_some_and(|l| l as usize > limit)
            {
                return Err(TransportError::TooLarge(limit));
            }
            // Read in chunks so an endless body stops at the limit, not at OOM.
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| classify(&e, request.timeout))?
            {
                if body.len() + chunk.len() > limit {
                    return Err(TransportError::TooLarge(limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(HttpResponse::new(status, headers, body))
        })
    }
}

/// Out of descriptors (EMFILE, ENFILE), buffers or memory: a shortage of
/// this machine's, which passes when other connections close.
pub fn is_local_shortage(e: &std::io::Error) -> bool {
    // Linux's numbers: ENOMEM 12, ENFILE 23, EMFILE 24, ENOBUFS 105.
    matches!(e.raw_os_error(), Some(12 | 23 | 24 | 105))
}

/// reqwest's error text includes the URL; ours is shown next to the redacted
/// request instead, so only the cause is kept.
fn classify(err: &reqwest::Error, timeout: Duration) -> TransportError {
    if err.is_timeout() {
        return TransportError::Timeout(timeout);
    }
    let mut cause = String::new();
    let mut local = false;
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    while let Some(s) = source {
        cause = s.to_string();
        local |= s
            .downcast_ref::<std::io::Error>()
            .is_some_and(is_local_shortage);
        source = s.source();
    }
    if local {
        return TransportError::Local(cause);
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

/// What a URL says of itself (its origin, its `host:port`), kept for the
/// last few URLs asked about on this thread: every request of every run asks
/// again about the same base URL, and parsing it each time showed in a batch's
/// profile. `what` tells the questions apart.
pub fn remembered(
    what: &'static str,
    url: &str,
    answer: impl FnOnce(&str) -> Option<String>,
) -> Option<String> {
    type Seen = Vec<(&'static str, String, Option<String>)>;
    thread_local! {
        static SEEN: std::cell::RefCell<Seen> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let kept = SEEN.with_borrow(|seen| {
        seen.iter()
            .find(|(w, u, _)| *w == what && u == url)
            .map(|(_, _, a)| a.clone())
    });
    if let Some(kept) = kept {
        return kept;
    }
    let found = answer(url);
    SEEN.with_borrow_mut(|seen| {
        if seen.len() >= 8 {
            seen.remove(0);
        }
        seen.push((what, url.to_string(), found.clone()));
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_in_use_is_named_without_its_password() {
        let env = |var: &str| match var {
            "HTTPS_PROXY" => Some("http://user:hunter2@proxy.corp:3128".to_string()),
            "NO_PROXY" => Some("localhost".to_string()),
            _ => None,
        };
        let note = proxies_in_use(&env).unwrap();
        assert!(
            note.contains("$HTTPS_PROXY=http://***@proxy.corp:3128/"),
            "{note}"
        );
        assert!(note.contains("except $NO_PROXY=localhost"), "{note}");
        assert!(
            !note.contains("hunter2") && !note.contains("user"),
            "{note}"
        );
        assert_eq!(proxies_in_use(&|_| None), None);
    }
}
