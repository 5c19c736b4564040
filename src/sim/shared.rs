//! What every handler of the simulator shares: its settings, the clock, the
//! world behind its mutex, issued tokens, armed faults and the request log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::run::clock::Clock;
use crate::sim::faults::Fault;
use crate::sim::model::World;
use crate::sim::requests::RequestLog;

/// The simulator's settings. The \[guess\] parts of the contract are here.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// A personal access token the simulator accepts.
    pub token: String,
    pub client_id: String,
    pub client_secret: String,
    /// How long after an instance starts NWC creates its task.
    pub task_delay: Duration,
    pub page_size: usize,
    pub seed: u64,
    /// How far back a task list without `from` reaches.
    pub window: Duration,
    /// What a successful completion answers: 204 with no body, or 200 with the task.
    pub complete_status: u16,
    /// What completing a finished task answers: 409, or 400 as some clients saw.
    pub conflict_status: u16,
    /// Print one line per request to stdout.
    pub print_requests: bool,
    /// How long an issued app token is accepted.
    pub token_ttl: Duration,
    /// What every issued app token starts with (a test's canary, say).
    pub issued_token_prefix: String,
    /// Accept the task-level completion (`PATCH /workflows/v1/tasks/{id}`
    /// and `…/v2/tasks/{id}`), which current clients no longer send.
    pub legacy_task_patch: bool,
}

pub const DEFAULT_TOKEN: &str = "sim-token";

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            token: DEFAULT_TOKEN.to_string(),
            client_id: "sim-client".to_string(),
            client_secret: "sim-secret".to_string(),
            task_delay: Duration::from_secs(2),
            page_size: 50,
            seed: 1,
            window: Duration::from_secs(30 * 86_400),
            complete_status: 204,
            conflict_status: 409,
            print_requests: false,
            token_ttl: Duration::from_secs(3600),
            issued_token_prefix: "sim-app-".to_string(),
            legacy_task_patch: true,
        }
    }
}

/// What every handler shares.
pub struct Shared {
    pub config: SimConfig,
    pub clock: Arc<dyn Clock>,
    pub addr: SocketAddr,
    world: Mutex<World>,
    tokens: Mutex<HashMap<String, SystemTime>>,
    faults: Mutex<Vec<Fault>>,
    pub log: RequestLog,
    /// For call-outs to workers, built on the first one.
    client: std::sync::OnceLock<reqwest::Client>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A handler that panicked left consistent data: every change is one step.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// An empty world for a simulator listening on `addr`. The mutexes stay
    /// private: handlers go through the `lock_*` helpers, which share one
    /// policy for a poisoned lock.
    pub fn new(config: SimConfig, clock: Arc<dyn Clock>, addr: SocketAddr) -> Shared {
        Shared {
            world: Mutex::new(World::new(config.seed, config.window, config.page_size)),
            config,
            clock,
            addr,
            tokens: Mutex::default(),
            faults: Mutex::default(),
            log: RequestLog::default(),
            client: std::sync::OnceLock::new(),
        }
    }

    pub fn lock_world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    pub fn lock_tokens(&self) -> MutexGuard<'_, HashMap<String, SystemTime>> {
        lock(&self.tokens)
    }

    pub fn lock_faults(&self) -> MutexGuard<'_, Vec<Fault>> {
        lock(&self.faults)
    }

    pub fn client(&self) -> reqwest::Client {
        self.client
            .get_or_init(|| {
                crate::run::transport::install_crypto();
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap_or_default()
            })
            .clone()
    }

    /// Takes one use of the first armed fault that matches.
    pub fn take_fault(&self, method: &str, path: &str) -> Option<Fault> {
        let mut faults = self.lock_faults();
        let fault = faults.iter_mut().find(|f| f.matches(method, path))?;
        fault.remaining -= 1;
        Some(fault.clone())
    }
}
