//! Where a waiting run's signals come from, injected like the clock and the
//! transport: a mock's scripted signals on the virtual clock, the store for
//! a durable CLI run (`handoff signal`), and `serve`, where a waiting run is
//! a row until a signal or its timeout wakes it.
//!
//! A signal names one wait: the signal and which wait for it this is
//! (`approval#0`, then `approval#1` in a loop), so a resume URL made for
//! one wait can never resume a later one.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::run::clock::{BoxFuture, Clock};

/// A signal that came: its data, and how it came (`api`, `url`, `cli`, `mock`).
pub type Received = (Value, String);

pub trait Signals: Send + Sync {
    /// Waits for wait `n` of `signal` until `until`: its data, `None` at the
    /// timeout, or why it cannot wait.
    fn wait<'a>(
        &'a self,
        clock: &'a dyn Clock,
        run_id: &'a str,
        signal: &'a str,
        n: u64,
        until: SystemTime,
    ) -> BoxFuture<'a, Result<Option<Received>, String>>;

    /// The resume URL of wait `n` of `signal`, when this process can make one.
    fn url(&self, run_id: &str, signal: &str, n: u64) -> Option<String>;
}

/// One scripted signal: at a time from the run's start, with its data.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedSignal {
    pub at: Duration,
    pub name: String,
    pub data: Value,
}

/// A mock's signals, on the run's (virtual) clock. Each is delivered once,
/// to the first wait for its name that is under way at or after its time.
pub struct Scripted {
    signals: Vec<ScriptedSignal>,
    used: Mutex<Vec<bool>>,
}

impl Scripted {
    pub fn new(signals: Vec<ScriptedSignal>) -> Scripted {
        let used = Mutex::new(vec![false; signals.len()]);
        Scripted { signals, used }
    }
}

/// Where dry runs say a resume URL would be: a host that never resolves.
pub const DRY_RUN_URL: &str = "https://handoff.invalid/v1/resume";

impl Signals for Scripted {
    fn wait<'a>(
        &'a self,
        clock: &'a dyn Clock,
        _run_id: &'a str,
        signal: &'a str,
        _n: u64,
        until: SystemTime,
    ) -> BoxFuture<'a, Result<Option<Received>, String>> {
        Box::pin(async move {
            let now = clock.elapsed();
            let deadline = now + until.duration_since(clock.now()).unwrap_or_default();
            let next = {
                let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
                let found = self
                    .signals
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| !used[*i] && s.name == signal && s.at <= deadline)
                    .min_by_key(|(_, s)| s.at)
                    .map(|(i, s)| (i, s.clone()));
                if let Some((i, _)) = found {
                    used[i] = true;
                }
                found.map(|(_, s)| s)
            };
            match next {
                Some(s) => {
                    clock.sleep(s.at.saturating_sub(now)).await;
                    Ok(Some((s.data, "mock".to_string())))
                }
                None => {
                    clock.sleep(deadline.saturating_sub(now)).await;
                    Ok(None)
                }
            }
        })
    }

    fn url(&self, _run_id: &str, signal: &str, n: u64) -> Option<String> {
        Some(format!("{DRY_RUN_URL}/dry-run-{signal}-{n}"))
    }
}

/// A run nothing can signal: a plain real run keeps no row to signal.
pub struct Nowhere;

impl Signals for Nowhere {
    fn wait<'a>(
        &'a self,
        _clock: &'a dyn Clock,
        _run_id: &'a str,
        signal: &'a str,
        _n: u64,
        _until: SystemTime,
    ) -> BoxFuture<'a, Result<Option<Received>, String>> {
        Box::pin(async move {
            Err(format!(
                "nothing can signal `{signal}` to this run: run it with `--durable` (and `handoff signal`), under `handoff serve`, or as a dry run with scripted `signals:`"
            ))
        })
    }

    fn url(&self, _run_id: &str, _signal: &str, _n: u64) -> Option<String> {
        None
    }
}
