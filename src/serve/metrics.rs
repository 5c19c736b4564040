//! What `GET /metrics` reports, in the Prometheus text format: runs by flow
//! and status (counted in the store, so they survive restarts), and, since
//! this process started, steps taken, HTTP requests by host and status, and
//! how late timers woke.
//!
//! Labels are flow names, host names and status codes: never a URL, a
//! header or a value, so nothing secret can reach a scrape.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::checkpoint::DurableStatus;

/// Upper bounds of the timer lag histogram, in seconds.
const LAG_BUCKETS: [f64; 8] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Default)]
pub struct Metrics {
    pub steps: AtomicU64,
    pub runs_started: AtomicU64,
    /// (host, status or `error`) → requests.
    requests: Mutex<BTreeMap<(String, String), u64>>,
    /// The listening socket's connections.
    pub conns: std::sync::Arc<crate::serve::conns::ConnStats>,
    /// (flow, code) → starts refused for a reason an operator alerts on.
    refused: Mutex<BTreeMap<(String, &'static str), u64>>,
    lag: Mutex<Lag>,
}

#[derive(Default)]
struct Lag {
    buckets: [u64; LAG_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    pub fn request(&self, host: &str, status: Option<u16>) {
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((host.to_string(), status)).or_default() += 1;
        }
    }

    /// A start refused: `code` is the problem's code, such as
    /// `idempotency_conflict` or `replayed_signature`.
    pub fn refused(&self, flow: &str, code: &'static str) {
        if let Ok(mut r) = self.refused.lock() {
            *r.entry((flow.to_string(), code)).or_default() += 1;
        }
    }

    /// A timer woke `late_ms` after its `wake_at`.
    pub fn timer_lag(&self, late_ms: i64) {
        let seconds = late_ms.max(0) as f64 / 1000.0;
        if let Ok(mut lag) = self.lag.lock() {
            for (i, bound) in LAG_BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    lag.buckets[i] += 1;
                }
            }
            lag.count += 1;
            lag.sum += seconds;
        }
    }

    /// The text a scrape gets. `runs` comes from the store.
    pub fn render(&self, runs: &[(String, DurableStatus, u64)], active: usize) -> String {
        let mut out = String::new();
        family(
            &mut out,
            "handoff_runs",
            "gauge",
            "Runs in the store, by flow and status.",
        );
        for (flow, status, n) in runs {
            let _ = writeln!(
                out,
                "handoff_runs{{flow=\"{}\",status=\"{}\"}} {n}",
                label(flow),
                status.as_str()
            );
        }
        let single = [
            (
                "handoff_runs_active",
                "gauge",
                "Runs this process is running now.",
                active as u64,
            ),
            (
                "handoff_runs_started_total",
                "counter",
                "Runs started by this process.",
                self.runs_started.load(Ordering::Relaxed),
            ),
            (
                "handoff_steps_total",
                "counter",
                "Steps taken by this process.",
                self.steps.load(Ordering::Relaxed),
            ),
        ];
        let c = &self.conns;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let conns = [
            (
                "handoff_open_files_limit",
                "gauge",
                "The open-files limit (raised to the hard limit at start).",
                load(&c.fd_limit),
            ),
            (
                "handoff_connections_max",
                "gauge",
                "Connections held at once, at most.",
                load(&c.max_connections),
            ),
            (
                "handoff_connections_open",
                "gauge",
                "Connections open now.",
                c.open.load(Ordering::Relaxed) as u64,
            ),
            (
                "handoff_connections_accepted_total",
                "counter",
                "Connections accepted.",
                load(&c.accepted),
            ),
            (
                "handoff_connections_timed_out_total",
                "counter",
                "Connections closed for sending no request in time.",
                load(&c.timed_out),
            ),
            (
                "handoff_connections_evicted_total",
                "counter",
                "Idle connections closed to make room at the cap.",
                load(&c.evicted),
            ),
            (
                "handoff_connections_refused_total",
                "counter",
                "Connections turned away: at the cap, every one busy.",
                load(&c.refused),
            ),
            (
                "handoff_accept_errors_total",
                "counter",
                "Failed accepts (out of descriptors).",
                load(&c.accept_errors),
            ),
        ];
        for (name, kind, help, value) in single.into_iter().chain(conns) {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        family(
            &mut out,
            "handoff_http_requests_total",
            "counter",
            "Requests sent, by host and status (`error` when none came back).",
        );
        if let Ok(requests) = self.requests.lock() {
            for ((host, status), n) in requests.iter() {
                let _ = writeln!(
                    out,
                    "handoff_http_requests_total{{host=\"{}\",status=\"{status}\"}} {n}",
                    label(host)
                );
            }
        }
        family(
            &mut out,
            "handoff_starts_refused_total",
            "counter",
            "Starts refused, by flow and code: idempotency_conflict (a key reused with other inputs), replayed_signature, stale_signature.",
        );
        if let Ok(refused) = self.refused.lock() {
            for ((flow, code), n) in refused.iter() {
                let _ = writeln!(
                    out,
                    "handoff_starts_refused_total{{flow=\"{}\",code=\"{code}\"}} {n}",
                    label(flow)
                );
            }
        }
        family(
            &mut out,
            "handoff_timer_lag_seconds",
            "histogram",
            "How late timers woke after their wake_at.",
        );
        if let Ok(lag) = self.lag.lock() {
            for (bound, n) in LAG_BUCKETS.iter().zip(lag.buckets) {
                let _ = writeln!(
                    out,
                    "handoff_timer_lag_seconds_bucket{{le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "handoff_timer_lag_seconds_bucket{{le=\"+Inf\"}} {}",
                lag.count
            );
            let _ = writeln!(out, "handoff_timer_lag_seconds_sum {:.3}", lag.sum);
            let _ = writeln!(out, "handoff_timer_lag_seconds_count {}", lag.count);
        }
        out
    }
}

/// A metric family's header lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value, escaped as the text format wants.
pub fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_requests_and_lag() {
        let m = Metrics::default();
        m.steps.fetch_add(3, Ordering::Relaxed);
        m.request("api.example", Some(200));
        m.request("api.example", Some(200));
        m.request("api.example", None);
        m.timer_lag(20);
        m.timer_lag(2_000);
        let text = m.render(&[("a\"b".to_string(), DurableStatus::Waiting, 4)], 1);
        assert!(text.contains("handoff_runs{flow=\"a\\\"b\",status=\"waiting\"} 4\n"));
        assert!(text.contains("handoff_steps_total 3\n"));
        assert!(
            text.contains("handoff_http_requests_total{host=\"api.example\",status=\"200\"} 2\n")
        );
        assert!(
            text.contains("handoff_http_requests_total{host=\"api.example\",status=\"error\"} 1\n")
        );
        assert!(text.contains("handoff_timer_lag_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("handoff_timer_lag_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("handoff_timer_lag_seconds_count 2\n"));
    }
}
