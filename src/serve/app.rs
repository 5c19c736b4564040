//! What every handler of `serve` shares: the worker, the flows, the API
//! token, the hook secrets and the memories of signatures, sessions and
//! sign-ins. The API ([`crate::serve::api`]) and the run page
//! ([`crate::serve::page`]) both take it; neither owns it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::serve::access::ApiToken;
use crate::serve::flows::Flows;
use crate::serve::worker::Worker;

/// Where settings and `env:` fields are read from: the process environment,
/// or a test's.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub struct App {
    pub worker: Arc<Worker>,
    pub flows: Flows,
    pub token: ApiToken,
    /// Hook signature secrets, by flow, read once at start.
    pub hook_secrets: BTreeMap<String, Vec<u8>>,
    /// Where `env:` fields are read from.
    pub env: Env,
    /// Hook signatures seen lately: one seen again starts no second run.
    pub seen_signatures: crate::serve::access::Memory,
    /// Run page sessions signed out before they expired.
    pub revoked: crate::serve::access::Memory,
    /// Failed sign-ins by client.
    pub attempts: crate::serve::access::Attempts,
    /// Cookies say `Secure`: the page is served over TLS (`--behind-tls`).
    pub secure_cookies: bool,
    /// What each `schedule:` did last and does next.
    pub schedules: Schedules,
}

/// What a schedule did last, and what it does next: for `GET /v1/flows`,
/// the run page and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Fired {
    pub next: Option<SystemTime>,
    pub last_slot: Option<SystemTime>,
    pub last_run: Option<String>,
    pub fired: u64,
    pub skipped: u64,
}

/// Each scheduled flow's [`Fired`], by flow name.
#[derive(Default)]
pub struct Schedules(Mutex<BTreeMap<String, Fired>>);

impl Schedules {
    pub fn get(&self, flow: &str) -> Option<Fired> {
        self.0.lock().ok()?.get(flow).cloned()
    }

    pub fn update(&self, flow: &str, f: impl FnOnce(&mut Fired)) {
        if let Ok(mut all) = self.0.lock() {
            f(all.entry(flow.to_string()).or_default());
        }
    }

    pub fn all(&self) -> BTreeMap<String, Fired> {
        self.0.lock().map(|a| a.clone()).unwrap_or_default()
    }
}
