//! Resume URLs: a signed capability to signal one wait of one run, once.
//!
//! `{public_url}/v1/resume/{run}.{signal}.{n}.{mac}`, where the MAC is
//! HMAC-SHA256, under a key derived from the store's key, over the run, the
//! signal and which wait for it this is. Every worker on one store can check
//! it; nobody without the key can make one; and it names one wait, so once
//! that wait is over (signalled or timed out) the URL opens nothing. It
//! carries no expiry of its own: it expires with its wait.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::run::clock::{BoxFuture, Clock};
use crate::run::signals::{Received, Signals};

/// Where resume URLs point, and the key they are signed with.
pub struct ResumeUrls {
    key: [u8; 32],
    /// The worker's public address, as callers reach it: configuration.
    base: String,
}

/// The wait a resume URL is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeToken {
    pub run: String,
    pub signal: String,
    pub n: u64,
}

impl ResumeUrls {
    pub fn new(key: [u8; 32], base: &str) -> ResumeUrls {
        ResumeUrls {
            key,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    fn mac(&self, run: &str, signal: &str, n: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(format!("handoff resume\n{run}\n{signal}\n{n}").as_bytes());
        mac
    }

    /// A form's anti-forgery token for an action on one run, tied to the
    /// session (`session`: its nonce, or empty without one): the page that
    /// holds the form can send it, and another site cannot read it.
    pub fn form_token(&self, action: &str, run: &str, session: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(format!("handoff form\n{action}\n{run}\n{session}").as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    pub fn token(&self, run: &str, signal: &str, n: u64) -> String {
        let tag = self.mac(run, signal, n).finalize().into_bytes();
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag);
        format!("{run}.{signal}.{n}.{tag}")
    }

    /// The wait a token is for, when this store's key signed it.
    pub fn open(&self, token: &str) -> Option<ResumeToken> {
        let mut parts = token.split('.');
        let (run, signal, n, tag) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || run.len() > 64 || signal.len() > 128 {
            return None;
        }
        let n: u64 = n.parse().ok()?;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tag)
            .ok()?;
        self.mac(run, signal, n).verify_slice(&tag).ok()?;
        Some(ResumeToken {
            run: run.to_string(),
            signal: signal.to_string(),
            n,
        })
    }
}

impl Signals for ResumeUrls {
    /// Never asked: under `serve` a waiting run is a row, which a signal or
    /// its timeout wakes.
    fn wait<'a>(
        &'a self,
        _clock: &'a dyn Clock,
        _run_id: &'a str,
        _signal: &'a str,
        _n: u64,
        _until: std::time::SystemTime,
    ) -> BoxFuture<'a, Result<Option<Received>, String>> {
        Box::pin(async { Err("a run under `serve` waits as a row".to_string()) })
    }

    fn url(&self, run_id: &str, signal: &str, n: u64) -> Option<String> {
        Some(format!(
            "{}/v1/resume/{}",
            self.base,
            self.token(run_id, signal, n)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_only_as_made_and_only_under_its_key() {
        let urls = ResumeUrls::new([7; 32], "https://worker.contoso.com/");
        let token = urls.token("run-1", "approval", 0);
        let opened = urls.open(&token).unwrap();
        assert_eq!(
            (opened.run.as_str(), opened.signal.as_str(), opened.n),
            ("run-1", "approval", 0)
        );
        assert_eq!(
            urls.url("run-1", "approval", 0).unwrap(),
            format!("https://worker.contoso.com/v1/resume/{token}")
        );
        // Another wait, another run, another key: nothing opens.
        let other_wait = token.replacen(".0.", ".1.", 1);
        assert_eq!(urls.open(&other_wait), None);
        assert_eq!(urls.open(&token.replacen("run-1", "run-2", 1)), None);
        assert_eq!(ResumeUrls::new([8; 32], "x").open(&token), None);
        assert_eq!(urls.open("run-1.approval.0"), None);
        assert_eq!(urls.open(&format!("{token}.more")), None);
    }
}
