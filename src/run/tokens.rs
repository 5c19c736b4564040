//! App tokens, fetched once and shared: the cache behind a flow's `auth:`.
//!
//! Runs that use the same token URL and client share one entry, so a batch of
//! two thousand runs (or a `serve` process that lives for weeks) asks for a
//! token when the last one is about to expire, not once a run. Each entry has
//! its own async lock: while one run fetches, the others wait for its answer
//! instead of fetching too.
//!
//! Tokens live in memory only, never in the store: a resumed run fetches anew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Keys of a token answer that are credentials, wherever such an answer is
/// shown or kept.
pub const CREDENTIAL_KEYS: [&str; 3] = ["access_token", "refresh_token", "id_token"];

/// Every credential in a token answer's body, as JSON or as a form
/// (`access_token=…&expires_in=…`): what a redactor must hunt.
pub fn credentials_in(body: &[u8]) -> Vec<Value> {
    match serde_json::from_slice::<Value>(body) {
        Ok(answer) => CREDENTIAL_KEYS
            .iter()
            .filter_map(|k| answer.get(*k).cloned())
            .collect(),
        Err(_) => crate::run::transport::decode_pairs(&String::from_utf8_lossy(body))
            .into_iter()
            .filter(|(k, _)| CREDENTIAL_KEYS.contains(&k.as_str()))
            .map(|(_, v)| Value::String(v))
            .collect(),
    }
}

/// Renew this long before expiry at most, so a request never carries a token
/// that runs out on its way.
const MAX_MARGIN: Duration = Duration::from_secs(60);

/// A token and when to stop using it.
#[derive(Clone)]
pub struct Cached {
    pub token: String,
    /// When to fetch a new one: the expiry less a margin. `None` when the
    /// answer did not say: used until a 401.
    pub renew_at: Option<SystemTime>,
    /// How long it lives, as the answer said, for the trace.
    pub lifetime: Option<Duration>,
}

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("token", &"***")
            .field("renew_at", &self.renew_at)
            .finish()
    }
}

impl Cached {
    pub fn fresh(&self, now: SystemTime) -> bool {
        self.renew_at.is_none_or(|at| now < at)
    }
}

/// One slot per token URL and client.
pub type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<[u8; 32], Slot>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCache")
    }
}

impl TokenCache {
    /// The slot for a token URL and client. The key is a digest, so the
    /// client secret is not kept as a map key.
    pub fn slot(&self, token_url: &str, client_id: &str, client_secret: &str) -> Slot {
        let mut hash = Sha256::new();
        for part in [token_url, client_id, client_secret] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        let key: [u8; 32] = hash.finalize().into();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(key).or_default().clone()
    }
}

/// Reads a token answer: `access_token`, and its lifetime from `expires_in`
/// (relative, so clock skew does not matter), else `expires_at`, else the
/// JWT's `exp`. `None` when there is no token.
pub fn read_answer(answer: &Value, now: SystemTime) -> Option<Cached> {
    let token = answer.get("access_token")?.as_str()?.trim();
    if token.is_empty() {
        return None;
    }
    let expires = expires_in(answer)
        .map(|d| now + d)
        .or_else(|| {
            answer
                .get("expires_at")
                .and_then(Value::as_str)
                .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
        })
        .or_else(|| jwt_exp(token));
    let lifetime = expires.map(|e| e.duration_since(now).unwrap_or_default());
    let renew_at = expires.map(|e| e - margin(lifetime.unwrap_or_default()));
    Some(Cached {
        token: token.to_string(),
        renew_at,
        lifetime,
    })
}

/// A fifth of the lifetime, at most a minute: a 2 s token renews 0.4 s early.
fn margin(lifetime: Duration) -> Duration {
    (lifetime / 5).min(MAX_MARGIN)
}

fn expires_in(answer: &Value) -> Option<Duration> {
    let v = answer.get("expires_in")?;
    let secs = v
        .as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))?;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)))
}

/// The `exp` claim of a JWT, unverified: only to know when to renew.
fn jwt_exp(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn lifetime_from_expires_in_first() {
        let c = read_answer(
            &json!({"access_token": "t", "expires_in": 3600, "expires_at": "2001-01-01T00:00:00Z"}),
            at(0),
        )
        .unwrap();
        assert_eq!(c.renew_at, Some(at(3600 - 60)));
        assert!(c.fresh(at(3539)) && !c.fresh(at(3540)));
        let short = read_answer(&json!({"access_token": "t", "expires_in": "2"}), at(0)).unwrap();
        assert_eq!(
            short.renew_at,
            Some(at(2) - Duration::from_millis(400)),
            "a fifth of a short lifetime"
        );
    }

    #[test]
    fn lifetime_from_expires_at_then_jwt() {
        let c = read_answer(
            &json!({"access_token": "t", "expires_at": humantime::format_rfc3339(at(600)).to_string()}),
            at(0),
        )
        .unwrap();
        assert_eq!(c.lifetime, Some(Duration::from_secs(600)));
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"exp": 1_800_000_120u64}).to_string());
        let jwt = format!("eyJhbGciOiJub25lIn0.{claims}.sig");
        let c = read_answer(&json!({ "access_token": jwt }), at(0)).unwrap();
        assert_eq!(c.lifetime, Some(Duration::from_secs(120)));
        let forever = read_answer(&json!({"access_token": "opaque"}), at(0)).unwrap();
        assert!(forever.renew_at.is_none() && forever.fresh(at(1_000_000)));
        assert!(read_answer(&json!({"access_token": ""}), at(0)).is_none());
        assert!(read_answer(&json!({"token": "x"}), at(0)).is_none());
    }

    #[test]
    fn credentials_are_found_in_json_and_form_answers() {
        let json = br#"{"access_token":"a1","expires_in":60,"refresh_token":"r1"}"#;
        assert_eq!(credentials_in(json), [json!("a1"), json!("r1")]);
        let form = b"access_token=a%2B2&token_type=Bearer&expires_in=60";
        assert_eq!(credentials_in(form), [json!("a+2")]);
        assert!(credentials_in(b"{\"tasks\": []}").is_empty());
    }

    #[test]
    fn one_slot_per_url_and_client() {
        let cache = TokenCache::default();
        let a = cache.slot("https://x/t", "id", "s1");
        assert!(Arc::ptr_eq(&a, &cache.slot("https://x/t", "id", "s1")));
        assert!(!Arc::ptr_eq(&a, &cache.slot("https://x/t", "id", "s2")));
        assert!(!Arc::ptr_eq(&a, &cache.slot("https://y/t", "id", "s1")));
    }
}
