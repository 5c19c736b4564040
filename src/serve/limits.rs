//! The worker's one HTTP client, shared by every run: its connection pool is
//! reused across runs, at most `--max-inflight` requests go to one host at a
//! time (the rest queue), and each answer is counted for `/metrics`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::serve::metrics::Metrics;
use crate::transport::{BoxFuture, HttpRequest, HttpResponse, Transport, TransportError};

pub struct Limited {
    inner: Box<dyn Transport>,
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    metrics: Arc<Metrics>,
}

impl Limited {
    pub fn new(inner: Box<dyn Transport>, per_host: usize, metrics: Arc<Metrics>) -> Limited {
        Limited {
            inner,
            per_host: per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn gate(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone()
    }
}

/// `host:port` of a URL, as the limit and the metrics count it.
fn host_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => "unknown".to_string(),
        },
        Err(_) => "unknown".to_string(),
    }
}

impl Transport for Limited {
    fn send<'a>(
        &'a self,
        request: &'a HttpRequest,
    ) -> BoxFuture<'a, Result<HttpResponse, TransportError>> {
        Box::pin(async move {
            let host = host_of(&request.url);
            let gate = self.gate(&host);
            // The semaphore is never closed, so acquiring only waits.
            let _permit = gate.acquire().await;
            let answer = self.inner.send(request).await;
            self.metrics
                .request(&host, answer.as_ref().ok().map(|r| r.status));
            answer
        })
    }

    fn route(&self) -> Option<String> {
        self.inner.route()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_counted_without_paths_or_credentials() {
        assert_eq!(
            host_of("https://user:pw@api.example/v2/tasks?x=1"),
            "api.example:443"
        );
        assert_eq!(host_of("http://127.0.0.1:8787/a"), "127.0.0.1:8787");
        assert_eq!(host_of("not a url"), "unknown");
    }
}
