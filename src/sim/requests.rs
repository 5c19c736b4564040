//! The request log: what reached the simulator, in order, for
//! `GET /_sim/requests` and the line `handoff sim` prints per request.
//!
//! It records how a request authenticated, never with what: tokens and
//! secrets are masked out of paths and queries before anything is stored.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::Value;

/// Enough for a long test or a session of manual poking; older entries go.
const CAPACITY: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub seq: u64,
    pub method: String,
    /// Path and query, with secrets masked.
    pub path: String,
    pub status: u16,
    pub auth: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    pub micros: u64,
    /// The W3C `traceparent` the request carried: which span sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

#[derive(Default)]
pub struct RequestLog {
    total: AtomicU64,
    entries: Mutex<VecDeque<Entry>>,
}

impl RequestLog {
    pub fn next_seq(&self) -> u64 {
        self.total.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub fn push(&self, entry: Entry) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == CAPACITY {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    pub fn since(&self, seq: u64) -> Vec<Value> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<&Entry> = entries.iter().filter(|e| e.seq > seq).collect();
        out.sort_by_key(|e| e.seq);
        out.into_iter()
            .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
            .collect()
    }
}

const SENSITIVE: &[&str] = &["token", "secret", "password", "key", "code", "signature"];

/// Masks query parameters that carry credentials, and any simulator token.
pub fn mask(path_and_query: &str, token: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut out = path.to_string();
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if SENSITIVE.iter().any(|s| k.to_ascii_lowercase().contains(s)) => {
                    format!("{k}=***")
                }
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    if !token.is_empty() {
        out = out.replace(token, "***");
    }
    mask_app_tokens(&out)
}

/// Tokens the simulator issues all start with `sim-app-`.
fn mask_app_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("sim-app-") {
        out.push_str(&rest[..i]);
        out.push_str("***");
        let tail = &rest[i + "sim-app-".len()..];
        let end = tail
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn masks_credentials() {
        assert_eq!(
            mask("/x?access_token=abc&status=active", "t0k"),
            "/x?access_token=***&status=active"
        );
        assert_eq!(mask("/t0k/sim-app-00ff/y", "t0k"), "/***/***/y");
    }
}
