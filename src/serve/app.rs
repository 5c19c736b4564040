//! What every handler of `serve` shares: the worker, the flows, the API
//! token, the hook secrets and the memories of signatures, sessions and
//! sign-ins. The API ([`crate::serve::api`]) and the run page
//! ([`crate::serve::page`]) both take it; neither owns it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use crate::language::diagnostic::Diagnostic;
use crate::serve::access::ApiToken;
use crate::serve::flows::Flows;
use crate::serve::worker::Worker;

/// The flows folder as last loaded, with the hook secrets its flows name:
/// replaced whole by a reload (SIGHUP), never changed in place.
pub struct Loaded {
    pub flows: Flows,
    /// Hook signature secrets, by flow, read when the flows were loaded.
    pub hook_secrets: BTreeMap<String, Vec<u8>>,
}

impl Loaded {
    /// Reads and checks the folder, and the secrets its hooks need: every
    /// problem at once.
    pub fn load(dir: &std::path::Path, env: &Env) -> Result<Loaded, Vec<Diagnostic>> {
        let flows = Flows::load(dir)?;
        let problems = flows.check_env(&|v| env(v));
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut hook_secrets = BTreeMap::new();
        for served in flows.by_name.values() {
            if let Some(sig) = served
                .flow
                .trigger
                .as_ref()
                .and_then(|t| t.signature.as_ref())
                && let Some(secret) = env(&sig.secret_env)
            {
                hook_secrets.insert(served.flow.name.clone(), secret.into_bytes());
            }
        }
        Ok(Loaded {
            flows,
            hook_secrets,
        })
    }
}

/// Where settings and `env:` fields are read from: the process environment,
/// or a test's.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub struct App {
    pub worker: Arc<Worker>,
    /// The flows, as last loaded: see [`App::loaded`].
    pub loaded: RwLock<Arc<Loaded>>,
    /// The folder they are loaded from.
    pub flows_dir: std::path::PathBuf,
    pub token: ApiToken,
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
    /// The run page's event streams open now: capped, as each holds a connection.
    pub live_streams: std::sync::atomic::AtomicUsize,
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

impl App {
    /// The flows as loaded now. A request holds on to what it got, so a
    /// reload meanwhile changes nothing under it.
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .map_or_else(|e| e.into_inner().clone(), |l| l.clone())
    }

    /// Loads the flows folder again (SIGHUP): new runs start on the new
    /// versions; a run under way keeps the version it started with. A folder
    /// with a problem changes nothing, and the problems come back.
    pub fn reload(&self) -> Result<(Arc<Loaded>, Vec<Diagnostic>), Vec<Diagnostic>> {
        let fresh = Arc::new(Loaded::load(&self.flows_dir, &self.env)?);
        let warnings = fresh.flows.warnings.clone();
        match self.loaded.write() {
            Ok(mut l) => *l = fresh.clone(),
            Err(e) => *e.into_inner() = fresh.clone(),
        }
        Ok((fresh, warnings))
    }
}
