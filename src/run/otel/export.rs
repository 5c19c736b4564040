//! Sending spans to an OpenTelemetry collector: OTLP over HTTP, protobuf,
//! configured by the standard `OTEL_*` variables (or `--otlp URL`), off
//! unless configured.
//!
//! Spans queue in memory and go out in batches (every 200 ms, or 512 spans),
//! from one task, so a run never waits for the collector. A batch the
//! collector refuses for a passing reason (429, 502–504, no connection) is
//! sent again twice; then it is dropped with a warning, and counted. After
//! a batch is taken, the runs whose spans it held are marked as exported
//! up to the event that ended their last span ([`Marks`]): a durable run's
//! next process begins after the mark, so no span is sent twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::run::clock::BoxFuture;
use crate::run::otel::ids::Sampler;
use crate::run::otel::spans::{Ended, kv};

/// The most spans in one request.
const BATCH: usize = 512;
/// How long a span waits for others to go with it.
const LINGER: Duration = Duration::from_millis(200);
/// Tries per batch.
const TRIES: u32 = 3;

/// Where spans go and how they are labelled.
#[derive(Clone)]
pub struct Config {
    /// The traces URL, such as `http://localhost:4318/v1/traces`.
    pub endpoint: String,
    /// Sent with every export (an API key, say): never shown.
    headers: Vec<(String, String)>,
    pub service: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, beside `service.name`.
    resource: Vec<(String, String)>,
    pub sampler: Sampler,
    pub timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("endpoint", &shown_endpoint(&self.endpoint))
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("service", &self.service)
            .field("sampler", &self.sampler)
            .finish()
    }
}

impl Config {
    /// The configuration the environment (`env`) and `--otlp` give, or
    /// `None` when export is off: no endpoint, `OTEL_SDK_DISABLED=true`, or
    /// `OTEL_TRACES_EXPORTER=none`.
    pub fn from_env(
        flag: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Config>, String> {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match get("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER `{other}`: handoff exports traces with `otlp` (or `none`)"
                ));
            }
        }
        let endpoint = match (
            flag,
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(base), _, _) => traces_url(base),
            (None, Some(url), _) => url.trim().to_string(),
            (None, None, Some(base)) => traces_url(&base),
            (None, None, None) => return Ok(None),
        };
        match reqwest::Url::parse(&endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            _ => {
                return Err(format!(
                    "the OTLP endpoint `{}` is not an http:// or https:// URL",
                    shown_endpoint(&endpoint)
                ));
            }
        }
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(p) = get(var) {
                if p.trim() != "http/protobuf" {
                    return Err(format!(
                        "{var} `{}`: handoff exports OTLP over HTTP with protobuf (`http/protobuf`), not gRPC or JSON",
                        p.trim()
                    ));
                }
                break;
            }
        }
        let mut headers = Vec::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(text) = get(var) {
                for (name, value) in pairs(var, &text)? {
                    headers.retain(|(n, _): &(String, String)| !n.eq_ignore_ascii_case(&name));
                    headers.push((name, value));
                }
            }
        }
        for (name, value) in &headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(value).is_err()
            {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_HEADERS: `{name}` is not a valid header"
                ));
            }
        }
        let mut resource = match get("OTEL_RESOURCE_ATTRIBUTES") {
            Some(text) => pairs("OTEL_RESOURCE_ATTRIBUTES", &text)?,
            None => Vec::new(),
        };
        let named = resource
            .iter()
            .position(|(k, _)| k == "service.name")
            .map(|i| resource.remove(i).1);
        let service = get("OTEL_SERVICE_NAME")
            .map(|s| s.trim().to_string())
            .or(named)
            .unwrap_or_else(|| "handoff".to_string());
        let sampler = match get("OTEL_TRACES_SAMPLER") {
            Some(name) => Sampler::parse(&name, get("OTEL_TRACES_SAMPLER_ARG").as_deref())?,
            None => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        };
        let timeout = match get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| get("OTEL_EXPORTER_OTLP_TIMEOUT"))
        {
            Some(ms) => Duration::from_millis(ms.trim().parse::<u64>().map_err(|_| {
                format!(
                    "OTEL_EXPORTER_OTLP_TIMEOUT is a number of milliseconds, found `{}`",
                    ms.trim()
                )
            })?),
            None => Duration::from_secs(10),
        };
        Ok(Some(Config {
            endpoint,
            headers,
            service,
            resource,
            sampler,
            timeout,
        }))
    }

    /// The endpoint as it may be shown: without a password in it.
    pub fn shown(&self) -> String {
        shown_endpoint(&self.endpoint)
    }
}

/// A base URL's traces path, as the specification appends it.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim().trim_end_matches('/'))
}

fn shown_endpoint(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

/// `a=b,c=d`, each side percent-decoded, as the OTel variables write lists.
fn pairs(var: &str, text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in text.split(',').filter(|i| !i.trim().is_empty()) {
        let Some((name, value)) = item.split_once('=') else {
            // The item itself may be a secret: not shown.
            return Err(format!(
                "{var} is a list of `name=value` pairs, split by commas"
            ));
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s.trim())
                .decode_utf8_lossy()
                .into_owned()
        };
        out.push((decode(name), decode(value)));
    }
    Ok(out)
}

/// Remembers how far each run's spans have been exported.
pub trait Marks: Send + Sync {
    /// Runs and the seq of the last event whose spans were taken.
    fn exported(&self, marks: Vec<(String, u64)>) -> BoxFuture<'_, ()>;
}

enum Msg {
    Spans {
        run: String,
        spans: Vec<Ended>,
        /// Whether the run's mark is kept (a durable run's).
        mark: bool,
    },
    Flush(oneshot::Sender<()>),
}

/// The queue to the collector, and its sender task.
pub struct Exporter {
    pub config: Arc<Config>,
    tx: mpsc::UnboundedSender<Msg>,
    /// Spans sent and taken, and spans dropped after every try failed.
    pub exported: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
}

impl Exporter {
    /// Starts the sender task on the current runtime. `warn` says when a
    /// batch is dropped (the endpoint shown without a password).
    pub fn start(
        config: Config,
        marks: Option<Arc<dyn Marks>>,
        warn: Arc<dyn Fn(String) + Send + Sync>,
    ) -> Result<Exporter, String> {
        crate::run::transport::install_crypto();
        let client = crate::run::transport::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| format!("cannot start the OTLP client: {e}"))?;
        let config = Arc::new(config);
        let (tx, rx) = mpsc::unbounded_channel();
        let exported = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let sender = Sender {
            config: config.clone(),
            client,
            marks,
            warn,
            exported: exported.clone(),
            dropped: dropped.clone(),
        };
        tokio::spawn(sender.run(rx));
        Ok(Exporter {
            config,
            tx,
            exported,
            dropped,
        })
    }

    /// Queues a run's ended spans.
    pub fn send(&self, run: &str, spans: Vec<Ended>, mark: bool) {
        if spans.is_empty() {
            return;
        }
        let _ = self.tx.send(Msg::Spans {
            run: run.to_string(),
            spans,
            mark,
        });
    }

    /// Sends everything queued, and waits until it is sent or dropped.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

struct Sender {
    config: Arc<Config>,
    client: reqwest::Client,
    marks: Option<Arc<dyn Marks>>,
    warn: Arc<dyn Fn(String) + Send + Sync>,
    exported: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl Sender {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut spans: Vec<Span> = Vec::new();
        let mut marks: BTreeMap<String, u64> = BTreeMap::new();
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        let mut closed = false;
        while !closed {
            // Wait for the first span (or a flush), then linger for more.
            let mut deadline = None;
            loop {
                let msg = match deadline {
                    None => rx.recv().await,
                    Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                        Ok(m) => m,
                        Err(_) => break,
                    },
                };
                match msg {
                    None => {
                        closed = true;
                        break;
                    }
                    Some(Msg::Spans {
                        run,
                        spans: ended,
                        mark,
                    }) => {
                        if mark && let Some(last) = ended.iter().map(|e| e.closed_at).max() {
                            let m = marks.entry(run).or_default();
                            *m = (*m).max(last);
                        }
                        spans.extend(ended.into_iter().map(|e| e.span));
                        deadline.get_or_insert_with(|| tokio::time::Instant::now() + LINGER);
                        if spans.len() >= BATCH {
                            break;
                        }
                    }
                    Some(Msg::Flush(done)) => {
                        flushes.push(done);
                        break;
                    }
                }
            }
            while !spans.is_empty() {
                let take = spans.len().min(BATCH);
                let batch: Vec<Span> = spans.drain(..take).collect();
                let n = batch.len() as u64;
                if self.post(batch).await {
                    self.exported.fetch_add(n, Ordering::Relaxed);
                } else {
                    self.dropped.fetch_add(n, Ordering::Relaxed);
                }
            }
            // Marked even when dropped: sending those spans again later
            // would not bring back the ones between.
            if let Some(m) = &self.marks
                && !marks.is_empty()
            {
                m.exported(std::mem::take(&mut marks).into_iter().collect())
                    .await;
            }
            marks.clear();
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// One batch, tried up to [`TRIES`] times. True when the collector took it.
    async fn post(&self, spans: Vec<Span>) -> bool {
        let mut resource = vec![
            kv("service.name", self.config.service.as_str()),
            kv("service.version", env!("CARGO_PKG_VERSION")),
            kv("telemetry.sdk.name", "handoff"),
            kv("telemetry.sdk.language", "rust"),
        ];
        resource.extend(self.config.resource.iter().map(|(k, v)| kv(k, v.as_str())));
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: resource,
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "handoff".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let count = request.resource_spans[0].scope_spans[0].spans.len();
        let body = request.encode_to_vec();
        let mut why = String::new();
        for attempt in 1..=TRIES {
            let mut req = self
                .client
                .post(&self.config.endpoint)
                .header("content-type", "application/x-protobuf")
                .body(body.clone());
            for (name, value) in &self.config.headers {
                req = req.header(name.as_str(), value.as_str());
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => {
                    let status = r.status().as_u16();
                    why = format!("it answered {status}");
                    if !matches!(status, 429 | 502 | 503 | 504) {
                        break;
                    }
                }
                Err(e) if e.is_timeout() => {
                    why = format!(
                        "no answer within {}",
                        humantime::format_duration(self.config.timeout)
                    );
                }
                Err(e) if e.is_connect() => why = "the connection failed".into(),
                Err(_) => why = "the request failed".into(),
            }
            if attempt < TRIES {
                tokio::time::sleep(Duration::from_millis(250 * 4u64.pow(attempt - 1))).await;
            }
        }
        (self.warn)(format!(
            "the OTLP collector at {} did not take {count} spans ({why}); they were dropped",
            self.config.shown(),
        ));
        false
    }
}
