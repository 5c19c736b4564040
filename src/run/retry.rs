//! Retry policies for the HTTP step kinds: which failures are worth another
//! attempt, and how long to wait first.
//!
//! Waits grow exponentially up to a cap, shrink by a random share (the
//! jitter, so a fleet of workers does not retry in lockstep), and give way to
//! the server's `Retry-After` up to a cap of their own. The engine's clock does
//! the waiting, so a dry run replays a whole backoff in no time.
//!
//! A request that may have reached the server (a timeout, a dropped
//! connection) is retried by default only when sending it twice is harmless:
//! for idempotent methods, and for `patch_task`, which reads the task back
//! rather than completing it twice.

use std::time::{Duration, SystemTime};

use crate::language::analyzer::Analyzer;
use crate::language::raw::{Node, NodeValue};
use crate::run::transport::TransportError;

/// What went wrong with one attempt, as a policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// The connection was never made: the server saw nothing.
    Connect,
    /// No answer in time: the server may have acted.
    Timeout,
    /// The connection dropped before the answer was complete.
    Reset,
    Status(u16),
    /// `5xx`: any status of a class.
    Class(u16),
}

impl RetryOn {
    fn parse(text: &str) -> Option<RetryOn> {
        match text {
            "connect" => Some(RetryOn::Connect),
            "timeout" => Some(RetryOn::Timeout),
            "reset" => Some(RetryOn::Reset),
            _ if text.len() == 3 && text.ends_with("xx") => text[..1]
                .parse()
                .ok()
                .filter(|c| (1..=5).contains(c))
                .map(RetryOn::Class),
            _ => text
                .parse()
                .ok()
                .filter(|s| (100..=599).contains(s))
                .map(RetryOn::Status),
        }
    }

    fn matches(self, failure: RetryOn) -> bool {
        match (self, failure) {
            (RetryOn::Class(c), RetryOn::Status(s)) => s / 100 == c,
            (a, b) => a == b,
        }
    }
}

/// The failures retried when a step does not say: connection errors,
/// timeouts, and the statuses that mean "not now".
pub const DEFAULT_ON: [RetryOn; 7] = [
    RetryOn::Connect,
    RetryOn::Timeout,
    RetryOn::Reset,
    RetryOn::Status(429),
    RetryOn::Status(502),
    RetryOn::Status(503),
    RetryOn::Status(504),
];

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    pub attempts: u32,
    /// The wait before the first retry; it doubles each time.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Up to this share of each wait is taken off at random.
    pub jitter: f64,
    /// `None`: [`DEFAULT_ON`], less timeouts and resets for a request that is
    /// not safe to send twice.
    pub on: Option<Vec<RetryOn>>,
    /// The longest `Retry-After` honoured; a longer one waits this long.
    pub max_retry_after: Duration,
    /// Statuses the step takes as answers (an `http` step's `accept`):
    /// never retried.
    pub accepted: Accepted,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Accepted {
    /// Only 2xx; every other status is open to the policy.
    #[default]
    Success,
    /// `accept: any`.
    All,
    These(Vec<u16>),
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            jitter: 0.2,
            on: None,
            max_retry_after: Duration::from_secs(60),
            accepted: Accepted::Success,
        }
    }
}

impl RetryPolicy {
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Whether this failure is retried. `repeatable`: sending the request
    /// twice does no harm.
    pub fn retries(&self, failure: RetryOn, repeatable: bool) -> bool {
        if let RetryOn::Status(status) = failure {
            match &self.accepted {
                Accepted::All => return false,
                Accepted::These(list) if list.contains(&status) => return false,
                _ => {}
            }
        }
        match &self.on {
            Some(on) => on.iter().any(|o| o.matches(failure)),
            None => {
                DEFAULT_ON.contains(&failure)
                    && (repeatable || !matches!(failure, RetryOn::Timeout | RetryOn::Reset))
            }
        }
    }

    /// The wait before retry number `retry` (1 for the first retry).
    /// `retry_after` is the server's, already parsed.
    pub fn wait(&self, retry: u32, retry_after: Option<Duration>, seed: u64) -> Duration {
        if let Some(server) = retry_after {
            return server.min(self.max_retry_after);
        }
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        let base = self
            .backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff);
        let unit = (mix(seed) >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(1.0 - self.jitter * unit)
    }
}

/// splitmix64's finaliser: a well-spread number from any seed.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The longest wait between tries while this machine is short of open
/// files or memory. Such a shortage is retried however often it happens,
/// outside the step's `retry` policy, as nothing was sent: it never ends a run.
pub const LOCAL_WAIT: Duration = Duration::from_secs(10);

/// How a transport error reads to a policy; `None` is never retried.
pub fn failure_of(error: &TransportError) -> Option<RetryOn> {
    match error {
        TransportError::Connect(_) => Some(RetryOn::Connect),
        TransportError::Timeout(_) => Some(RetryOn::Timeout),
        TransportError::Reset(_) => Some(RetryOn::Reset),
        // Waited out apart from the policy: see `LOCAL_WAIT`.
        TransportError::Local(_)
        | TransportError::TooLarge(_)
        | TransportError::NoScriptedResponse
        | TransportError::Other(_) => None,
    }
}

/// `Retry-After`: seconds, or an HTTP date measured from `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

pub const KEYS: [&str; 6] = [
    "attempts",
    "backoff",
    "max_backoff",
    "jitter",
    "retry_on",
    "max_retry_after",
];

/// `retry: false`, `retry: 5` (attempts), or a mapping of [`KEYS`].
pub fn parse(cx: &mut Analyzer, node: Option<&Node>) -> Option<RetryPolicy> {
    let Some(node) = node else {
        return Some(RetryPolicy::default());
    };
    match &node.value {
        NodeValue::Bool(false) => return Some(RetryPolicy::none()),
        NodeValue::Bool(true) => return Some(RetryPolicy::default()),
        NodeValue::Int(_) => {
            let attempts = cx.positive_int(node, "`retry`")?;
            return Some(RetryPolicy {
                attempts: attempts.min(100) as u32,
                ..RetryPolicy::default()
            });
        }
        NodeValue::Map(_) => {}
        _ => {
            cx.error_help(
                node.span,
                format!("`retry` takes a mapping, a number of attempts or `false`, found {}", node.type_name()),
                "for example `retry: { attempts: 5, backoff: 2s, retry_on: [connect, timeout, 503] }`",
            );
            return None;
        }
    }
    let body = cx.body(node, "`retry`", &KEYS, &[])?;
    let mut policy = RetryPolicy::default();
    let mut ok = true;
    if let Some(n) = body.get("attempts") {
        match cx.positive_int(n, "`attempts`") {
            Some(a) if a <= 100 => policy.attempts = a as u32,
            Some(_) => {
                cx.error(n.span, "`attempts` is at most 100");
                ok = false;
            }
            None => ok = false,
        }
    }
    for (key, slot) in [
        ("backoff", &mut policy.backoff),
        ("max_backoff", &mut policy.max_backoff),
        ("max_retry_after", &mut policy.max_retry_after),
    ] {
        if let Some(n) = body.get(key) {
            match cx.duration(n) {
                Some(d) => *slot = d,
                None => ok = false,
            }
        }
    }
    if let Some(n) = body.get("jitter") {
        match &n.value {
            NodeValue::Float(f) if (0.0..=1.0).contains(f) => policy.jitter = *f,
            NodeValue::Int(0) => policy.jitter = 0.0,
            NodeValue::Int(1) => policy.jitter = 1.0,
            NodeValue::Bool(b) => policy.jitter = if *b { 0.2 } else { 0.0 },
            _ => {
                cx.error(
                    n.span,
                    "`jitter` is a share of the wait, from 0 to 1 (such as 0.2), or `false`",
                );
                ok = false;
            }
        }
    }
    if let Some(n) = body.get("retry_on") {
        match parse_on(cx, n) {
            Some(on) => policy.on = Some(on),
            None => ok = false,
        }
    }
    ok.then_some(policy)
}

fn parse_on(cx: &mut Analyzer, node: &Node) -> Option<Vec<RetryOn>> {
    let Some(items) = node.as_seq() else {
        cx.error(
            node.span,
            "`retry_on` is a list such as `[connect, timeout, reset, 429, 5xx]`",
        );
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        let text = match &item.value {
            NodeValue::Str(s) => s.clone(),
            NodeValue::Int(i) => i.to_string(),
            _ => String::new(),
        };
        match RetryOn::parse(&text) {
            Some(on) => out.push(on),
            None => {
                cx.error_help(
                    item.span,
                    format!("`retry_on` cannot name `{text}`"),
                    "use `connect`, `timeout`, `reset`, a status such as `503`, or a class such as `5xx`",
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_jitter_only_shortens() {
        let p = RetryPolicy {
            jitter: 0.0,
            max_backoff: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        let waits: Vec<u64> = (1..=5).map(|n| p.wait(n, None, 0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        let jittered = RetryPolicy::default();
        for seed in 0..100 {
            let w = jittered.wait(2, None, seed);
            assert!(
                w <= Duration::from_secs(2) && w >= Duration::from_millis(1600),
                "{w:?}"
            );
        }
        assert_ne!(jittered.wait(2, None, 1), jittered.wait(2, None, 2));
    }

    #[test]
    fn retry_after_wins_up_to_its_cap() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(7)), 0),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(600)), 0),
            Duration::from_secs(60)
        );
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn defaults_spare_requests_that_are_not_safe_to_repeat() {
        let p = RetryPolicy::default();
        assert!(p.retries(RetryOn::Timeout, true));
        assert!(!p.retries(RetryOn::Timeout, false));
        assert!(p.retries(RetryOn::Connect, false));
        assert!(p.retries(RetryOn::Status(503), false));
        assert!(!p.retries(RetryOn::Status(500), true));
        let explicit = RetryPolicy {
            on: Some(vec![RetryOn::Class(5), RetryOn::Timeout]),
            ..RetryPolicy::default()
        };
        assert!(explicit.retries(RetryOn::Status(500), false));
        assert!(explicit.retries(RetryOn::Timeout, false));
        assert!(!explicit.retries(RetryOn::Status(429), true));
        let accepting = RetryPolicy {
            accepted: Accepted::These(vec![503]),
            ..RetryPolicy::default()
        };
        assert!(!accepting.retries(RetryOn::Status(503), true));
        assert!(accepting.retries(RetryOn::Status(502), true));
    }
}
