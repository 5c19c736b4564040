//! Who may call the worker: a bearer token for the API, an HMAC signature
//! for a flow's hook, and the run page's expiring sessions.
//!
//! Tokens are compared in constant time, through their SHA-256 digests so
//! that not even the length shows in the timing. A token is never logged
//! and never echoed: a refusal says what was wrong, not what was sent. A
//! token in the URL is refused even when it is right, because URLs end up
//! in logs and proxies.

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long a run page session lasts.
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

/// Failed sign-ins one client may make in [`LOGIN_WINDOW_MS`].
pub const LOGIN_ATTEMPTS: u32 = 5;
pub const LOGIN_WINDOW_MS: i64 = 60_000;

/// Entries a bounded memory keeps before it forgets the oldest.
const MEMORY: usize = 100_000;

/// Query parameters that would carry a credential in the URL.
const URL_CREDENTIALS: [&str; 5] = ["access_token", "token", "api_key", "apikey", "key"];

/// The shortest API token `serve` accepts: one that cannot be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// The API's bearer token, as its digest.
#[derive(Clone)]
pub struct ApiToken(Option<[u8; 32]>);

/// Why a request was refused, in words safe to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub &'static str);

impl ApiToken {
    /// No token: only for a worker that listens on loopback.
    pub fn none() -> ApiToken {
        ApiToken(None)
    }

    pub fn new(token: &str) -> ApiToken {
        ApiToken(Some(Sha256::digest(token.as_bytes()).into()))
    }

    pub fn required(&self) -> bool {
        self.0.is_some()
    }

    /// A new run page session cookie value, `ISSUED.NONCE.MAC`: signed with
    /// the token's digest, so the browser never holds the token, each sign-in
    /// gets its own, and it expires. `None` without a token.
    pub fn session(&self, issued_ms: i64, nonce: &str) -> Option<String> {
        let digest = self.0?;
        let mac = sign(
            &digest,
            format!("handoff session v2\n{issued_ms}\n{nonce}").as_bytes(),
        );
        Some(format!(
            "{issued_ms}.{nonce}.{}",
            mac.trim_start_matches("sha256=")
        ))
    }

    /// The nonce of a session cookie value that this token signed and that
    /// has not expired at `now_ms`.
    pub fn session_ok(&self, value: &str, now_ms: i64) -> Option<String> {
        let mut parts = value.splitn(3, '.');
        let issued: i64 = parts.next()?.parse().ok()?;
        let nonce = parts.next()?;
        let given = parts.next()?;
        let alive = issued <= now_ms.saturating_add(60_000)
            && now_ms.saturating_sub(issued) < SESSION_TTL_MS;
        let expected = self.session(issued, nonce)?;
        (alive && same(value, &expected) && !given.is_empty()).then(|| nonce.to_string())
    }

    /// Checks a request's `Authorization` header and query string.
    pub fn check(&self, authorization: Option<&[u8]>, query: Option<&str>) -> Result<(), Denied> {
        if query.is_some_and(has_url_credential) {
            return Err(Denied(
                "a credential in the URL is refused: send the token in the `Authorization: Bearer` header",
            ));
        }
        let Some(expected) = &self.0 else {
            return Ok(());
        };
        let Some(header) = authorization else {
            return Err(Denied(
                "this API needs a token: send `Authorization: Bearer $HANDOFF_API_TOKEN`",
            ));
        };
        // The scheme is case-insensitive, and one or more spaces follow it (RFC 9110).
        let given = header
            .iter()
            .position(|b| *b == b' ')
            .filter(|&i| header[..i].eq_ignore_ascii_case(b"bearer"))
            .map(|i| header[i..].trim_ascii_start())
            .filter(|t| !t.is_empty())
            .ok_or(Denied(
                "the `Authorization` header takes `Bearer` and the token",
            ))?;
        let digest: [u8; 32] = Sha256::digest(given).into();
        if bool::from(digest.ct_eq(expected)) {
            Ok(())
        } else {
            Err(Denied("the token is not the worker's API token"))
        }
    }
}

/// Whether two secrets are equal, in constant time (through their digests,
/// so not even the length shows).
pub fn same(a: &str, b: &str) -> bool {
    let (x, y): ([u8; 32], [u8; 32]) = (
        Sha256::digest(a.as_bytes()).into(),
        Sha256::digest(b.as_bytes()).into(),
    );
    bool::from(x.ct_eq(&y))
}

fn has_url_credential(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        URL_CREDENTIALS.iter().any(|c| name.eq_ignore_ascii_case(c))
    })
}

/// Whether `header` (`sha256=<hex>`, or the bare hex) is the HMAC-SHA256 of
/// `body` with `secret`, compared in constant time.
pub fn signature_ok(secret: &[u8], body: &[u8], header: &str) -> bool {
    let hex = header.trim();
    let hex = hex.strip_prefix("sha256=").unwrap_or(hex);
    let Some(given) = from_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// Why a timestamped signature is refused: it does not match, or it is
/// outside its window (which an operator may alert on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Bad(Denied),
    Stale(Denied),
}

/// A timestamped signature, `t=UNIX_SECONDS,v1=HEX[,v1=HEX]`, as Stripe and
/// Slack sign: an HMAC-SHA256 of `t.body`, so a captured request cannot be
/// replayed once `tolerance_s` has passed.
pub fn timestamped_ok(
    secret: &[u8],
    body: &[u8],
    header: &str,
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), Refused> {
    let mut t = None;
    let mut macs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.trim().parse::<i64>().ok(),
            Some(("v1", v)) => macs.push(v.trim()),
            _ => {}
        }
    }
    let (Some(t), false) = (t, macs.is_empty()) else {
        return Err(Refused::Bad(Denied(
            "the signature header is `t=UNIX_SECONDS,v1=HEX`",
        )));
    };
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    if !macs.iter().any(|m| signature_ok(secret, &signed, m)) {
        return Err(Refused::Bad(Denied(
            "the signature does not match the body",
        )));
    }
    if now_s.saturating_sub(t).abs() > tolerance_s {
        return Err(Refused::Stale(Denied(
            "the signature's timestamp is outside the tolerance window: a replay, or a clock far off",
        )));
    }
    Ok(())
}

/// A bounded memory of keys with an expiry: seen signatures, revoked
/// sessions. At its size it forgets the entries closest to expiring.
#[derive(Default)]
pub struct Memory(Mutex<HashMap<[u8; 32], i64>>);

impl Memory {
    /// Remembers `key` until `until_ms`; whether it was already remembered.
    pub fn seen(&self, key: &[u8], now_ms: i64, until_ms: i64) -> bool {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let Ok(mut map) = self.0.lock() else {
            return false;
        };
        if map.get(&digest).is_some_and(|&until| until > now_ms) {
            return true;
        }
        if map.len() >= MEMORY {
            map.retain(|_, until| *until > now_ms);
            if map.len() >= MEMORY
                && let Some(oldest) = map.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        map.insert(digest, until_ms);
        false
    }

    /// Whether `key` is remembered now, without adding it.
    pub fn holds(&self, key: &[u8], now_ms: i64) -> bool {
        let digest: [u8; 32] = Sha256::digest(key).into();
        self.0
            .lock()
            .is_ok_and(|map| map.get(&digest).is_some_and(|&until| until > now_ms))
    }
}

/// Failed sign-ins by client, for a limit on guessing.
#[derive(Default)]
pub struct Attempts(Mutex<HashMap<std::net::IpAddr, (i64, u32)>>);

impl Attempts {
    /// How long `client` must wait before trying again, if it must.
    pub fn wait_ms(&self, client: std::net::IpAddr, now_ms: i64) -> Option<i64> {
        let map = self.0.lock().ok()?;
        let (start, count) = *map.get(&client)?;
        let left = start.saturating_add(LOGIN_WINDOW_MS).saturating_sub(now_ms);
        (count >= LOGIN_ATTEMPTS && left > 0).then_some(left)
    }

    pub fn failed(&self, client: std::net::IpAddr, now_ms: i64) {
        let Ok(mut map) = self.0.lock() else { return };
        if map.len() >= MEMORY {
            map.retain(|_, (start, _)| now_ms.saturating_sub(*start) < LOGIN_WINDOW_MS);
        }
        let entry = map.entry(client).or_insert((now_ms, 0));
        if now_ms.saturating_sub(entry.0) >= LOGIN_WINDOW_MS {
            *entry = (now_ms, 0);
        }
        entry.1 += 1;
    }
}

/// The signature a sender puts in the header, for docs and tests.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked_and_never_taken_from_the_url() {
        let token = ApiToken::new("a-long-api-token-123");
        assert!(
            token
                .check(Some(b"Bearer a-long-api-token-123"), None)
                .is_ok()
        );
        assert!(
            token
                .check(Some(b"Bearer a-long-api-token-124"), None)
                .is_err()
        );
        assert!(token.check(Some(b"a-long-api-token-123"), None).is_err());
        // The scheme is case-insensitive (RFC 9110); spaces may be several.
        for header in [
            &b"BEARER a-long-api-token-123"[..],
            b"bEaReR  a-long-api-token-123",
        ] {
            assert!(token.check(Some(header), None).is_ok());
        }
        assert!(
            token
                .check(Some(b"Basic a-long-api-token-123"), None)
                .is_err()
        );
        assert!(token.check(Some(b"Bearer "), None).is_err());
        assert!(
            token
                .check(Some(b"Bearera-long-api-token-123"), None)
                .is_err()
        );
        assert!(token.check(None, None).is_err());
        let in_url = token.check(
            Some(b"Bearer a-long-api-token-123"),
            Some("flow=x&access%5Ftoken=a-long-api-token-123"),
        );
        assert!(in_url.is_err(), "right, but in the URL");
        assert!(!in_url.unwrap_err().0.contains("a-long"));
        assert!(ApiToken::none().check(None, Some("status=waiting")).is_ok());
        assert!(ApiToken::none().check(None, Some("token=x")).is_err());
    }

    #[test]
    fn sessions_are_signed_per_sign_in_and_expire() {
        let token = ApiToken::new("a-long-api-token-123");
        let a = token.session(1_000, "n1").unwrap();
        let b = token.session(1_000, "n2").unwrap();
        assert_ne!(a, b, "each sign-in its own");
        assert_eq!(token.session_ok(&a, 2_000).as_deref(), Some("n1"));
        assert_eq!(
            token.session_ok(&a, 1_000 + SESSION_TTL_MS),
            None,
            "expired"
        );
        assert_eq!(
            ApiToken::new("another-long-token-456").session_ok(&a, 2_000),
            None
        );
        let forged = a.replacen("1000.", "9000.", 1);
        assert_eq!(token.session_ok(&forged, 9_500), None);
        assert_eq!(token.session_ok("garbage", 1), None);
    }

    #[test]
    fn a_timestamped_signature_holds_only_in_its_window() {
        let body = b"{\"id\":1}";
        let mac = sign(b"s3cret", b"1700000000.{\"id\":1}");
        let header = format!("t=1700000000,v1={}", mac.trim_start_matches("sha256="));
        assert!(timestamped_ok(b"s3cret", body, &header, 1_700_000_100, 300).is_ok());
        assert!(
            timestamped_ok(b"s3cret", body, &header, 1_700_000_301, 300).is_err(),
            "stale"
        );
        assert!(
            timestamped_ok(b"s3cret", body, &header, 1_699_999_600, 300).is_err(),
            "future"
        );
        assert!(timestamped_ok(b"other", body, &header, 1_700_000_000, 300).is_err());
        let moved = header.replace("t=1700000000", "t=1700000200");
        assert!(
            timestamped_ok(b"s3cret", body, &moved, 1_700_000_200, 300).is_err(),
            "t is signed"
        );
        assert!(timestamped_ok(b"s3cret", body, "v1=00", 0, 300).is_err());
    }

    #[test]
    fn memories_remember_until_expiry_and_stay_bounded() {
        let m = Memory::default();
        assert!(!m.seen(b"a", 0, 100));
        assert!(m.seen(b"a", 50, 100));
        assert!(!m.seen(b"a", 100, 200), "expired, then new");
        let tries = Attempts::default();
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        for _ in 0..LOGIN_ATTEMPTS {
            assert_eq!(tries.wait_ms(ip, 10), None);
            tries.failed(ip, 10);
        }
        assert_eq!(tries.wait_ms(ip, 10), Some(LOGIN_WINDOW_MS));
        assert_eq!(tries.wait_ms(ip, 10 + LOGIN_WINDOW_MS), None);
    }

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        let mac = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            mac,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(signature_ok(b"Jefe", b"what do ya want for nothing?", &mac));
        assert!(signature_ok(
            b"Jefe",
            b"what do ya want for nothing?",
            &mac[7..]
        ));
        assert!(!signature_ok(
            b"Jefe",
            b"what do ya want for nothing!",
            &mac
        ));
        assert!(!signature_ok(
            b"jefe",
            b"what do ya want for nothing?",
            &mac
        ));
        assert!(!signature_ok(b"Jefe", b"x", "sha256=zz"));
        assert!(!signature_ok(b"Jefe", b"x", ""));
    }
}
