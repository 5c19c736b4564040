//! One HTTP client shared by many runs (`handoff serve`, `handoff run
//! --each`), with the limits a real tenant needs: at most N requests in
//! flight to one host (the rest queue), an optional rate for the whole
//! process, and a 429 with `Retry-After` that slows every run, not just
//! the one that got it. Each answer is reported, for metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::run::clock::BoxFuture;
use crate::run::transport::{HttpRequest, HttpResponse, Transport, TransportError};

/// Told of every answer: the host, and the status (`None` when none came).
pub type OnAnswer = Box<dyn Fn(&str, Option<u16>) + Send + Sync>;

/// The longest a 429's `Retry-After` holds every run back.
const MAX_HOLD: Duration = Duration::from_secs(60);

pub struct Limited {
    inner: Box<dyn Transport>,
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// The gap between two requests, from `--rate N/s`.
    every: Option<Duration>,
    /// When the next request may go: the rate's next slot, or the end of a 429's hold.
    next: tokio::sync::Mutex<Instant>,
    on_answer: Option<OnAnswer>,
}

impl Limited {
    pub fn new(inner: Box<dyn Transport>, per_host: usize) -> Limited {
        Limited {
            inner,
            per_host: per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
            every: None,
            next: tokio::sync::Mutex::new(Instant::now()),
            on_answer: None,
        }
    }

    /// At most `per_second` requests a second, for all runs together.
    pub fn rate(mut self, per_second: f64) -> Limited {
        if per_second > 0.0 {
            self.every = Some(Duration::from_secs_f64(1.0 / per_second));
        }
        self
    }

    pub fn on_answer(mut self, f: OnAnswer) -> Limited {
        self.on_answer = Some(f);
        self
    }

    fn gate(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone()
    }

    /// Waits for this request's turn: after any hold, and at the rate.
    async fn turn(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + self.every.unwrap_or_default();
            at
        };
        // tokio's timers tick once a millisecond: a sleep until now would
        // still wait for the next tick, a millisecond on every request.
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
    }

    /// A 429 asked to wait: no request goes before then.
    async fn hold(&self, wait: Duration) {
        let until = Instant::now() + wait.min(MAX_HOLD);
        let mut next = self.next.lock().await;
        if *next < until {
            *next = until;
        }
    }
}

/// `host:port` of a URL, as the limit and the metrics count it.
pub fn host_of(url: &str) -> String {
    // A batch's requests all go to one or two hosts: the answer is kept by
    // the URL's `scheme://authority`, which alone decides it.
    match authority_prefix(url) {
        Some(prefix) => crate::run::transport::remembered("host", prefix, |p| Some(parse_host(p)))
            .unwrap_or_else(|| parse_host(prefix)),
        None => parse_host(url),
    }
}

/// `scheme://authority` of a URL: up to the path, the query or the fragment.
fn authority_prefix(url: &str) -> Option<&str> {
    let start = url.find("://")? + 3;
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    Some(&url[..end])
}

fn parse_host(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => "unknown".to_string(),
        },
        Err(_) => "unknown".to_string(),
    }
}

/// A `Retry-After` in seconds (the HTTP-date form is left to the step's own retry).
fn retry_after(response: &HttpResponse) -> Option<Duration> {
    let seconds: u64 = response.header("retry-after")?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
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
            self.turn().await;
            let answer = self.inner.send(request).await;
            if let Ok(response) = &answer
                && response.status == 429
            {
                self.hold(retry_after(response).unwrap_or(Duration::from_secs(1)))
                    .await;
            }
            if let Some(f) = &self.on_answer {
                f(&host, answer.as_ref().ok().map(|r| r.status));
            }
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

    /// The kept answers are the parser's, whatever follows the authority,
    /// and a URL without one is parsed whole.
    #[test]
    fn host_of_agrees_with_parsing_each_url() {
        for url in [
            "http://127.0.0.1:8787/workflows/v2/tasks?x=1",
            "http://127.0.0.1:8787?x=/y",
            "http://127.0.0.1:8787#frag",
            "http://127.0.0.1:8787",
            "https://US.Nintex.io/a",
            "https://us.nintex.io:443/b",
            "https://user:pw@host.example/c",
            "http://[::1]:9000/d",
            "http://127.0.0.1:8787/workflows/v2/tasks/abc",
            "not a url",
            "mailto:x@y",
        ] {
            for _ in 0..2 {
                assert_eq!(host_of(url), parse_host(url), "{url}");
            }
        }
    }

    /// Answers 429 (Retry-After: 5) to the first request, 200 after; notes
    /// when, on tokio's clock, each request reached it.
    struct Busy(Mutex<Vec<Instant>>);

    impl Transport for Busy {
        fn send<'a>(
            &'a self,
            _: &'a HttpRequest,
        ) -> BoxFuture<'a, Result<HttpResponse, TransportError>> {
            Box::pin(async move {
                let mut seen = self.0.lock().unwrap();
                seen.push(Instant::now());
                let status = if seen.len() == 1 { 429 } else { 200 };
                Ok(HttpResponse::new(
                    status,
                    vec![("Retry-After".into(), "5".into())],
                    Vec::new(),
                ))
            })
        }
    }

    fn request(url: &str) -> HttpRequest {
        HttpRequest {
            step: "s".into(),
            method: "GET".into(),
            url: url.into(),
            parsed: None,
            shown_url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(1),
            max_body: 1024,
        }
    }

    #[test]
    fn a_429_holds_back_every_request_and_the_rate_spaces_them() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let busy = Arc::new(Busy(Mutex::new(Vec::new())));
            struct Shared(Arc<Busy>);
            impl Transport for Shared {
                fn send<'a>(
                    &'a self,
                    r: &'a HttpRequest,
                ) -> BoxFuture<'a, Result<HttpResponse, TransportError>> {
                    self.0.send(r)
                }
            }
            let limited = Limited::new(Box::new(Shared(busy.clone())), 8).rate(10.0);
            let start = Instant::now();
            // One run's request is refused; another run's, on another host, waits too.
            let first = limited.send(&request("http://a.example/x")).await.unwrap();
            assert_eq!(first.status, 429);
            let second = limited.send(&request("http://b.example/y")).await.unwrap();
            assert_eq!(second.status, 200);
            let third = limited.send(&request("http://b.example/z")).await.unwrap();
            assert_eq!(third.status, 200);
            let seen = busy.0.lock().unwrap().clone();
            assert_eq!(seen[0] - start, Duration::ZERO);
            assert_eq!(seen[1] - start, Duration::from_secs(5), "held by the 429");
            assert_eq!(seen[2] - seen[1], Duration::from_millis(100), "10 a second");
        });
    }

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
