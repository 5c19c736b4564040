//! Who may call the worker: a bearer token for the API, an HMAC signature
//! for a flow's hook.
//!
//! Tokens are compared in constant time, through their SHA-256 digests so
//! that not even the length shows in the timing. A token is never logged
//! and never echoed: a refusal says what was wrong, not what was sent. A
//! token in the URL is refused even when it is right, because URLs end up
//! in logs and proxies.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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

    /// The run page's session cookie value: an HMAC of the token's digest,
    /// so the browser never holds the token itself. `None` without a token.
    pub fn session(&self) -> Option<String> {
        let digest = self.0?;
        Some(sign(&digest, b"handoff run page session v1"))
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
        let given = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
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
