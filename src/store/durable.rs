//! Durable runs: creating one in the store, checkpointing it as the engine
//! goes, and loading it again to resume. Secret values are sealed on the way
//! in and opened on the way out, so the store never holds one in clear; a
//! resumed run runs the flow's text it started with, whatever the file says
//! now. The CLI (`run --durable`, `resume`, `runs`) works through this.
//!
//! One process runs a run at a time: it holds a lease on the row, renewed
//! while it lives, and every checkpoint is fenced by it. `resume` takes a run
//! only when its lease ran out, or when its holder is known to be dead (a
//! process on this host that is gone, as after kill -9).

use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::engine::checkpoint::Checkpoints;
use crate::engine::checkpoint::Progress;
use crate::engine::checkpoint::Saved;
use crate::language::flow::Flow;
use crate::language::source::Source;
use crate::run::clock::BoxFuture;
use crate::run::clock::unix_ms;
use crate::run::state::RunState;
use crate::store::group::GroupCommit;
use crate::store::seal::{KeySource, Memo, Sealer};
use crate::store::sqlite::SqliteStore;
use crate::store::{
    Checkpoint, Claimed, Created, IdempotencyKey, Lease, NewRun, RunFilter, Store, StoredRun,
    flow_hash,
};

/// How long a claim on a run holds without renewal, unless `serve --lease` says.
pub const LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a checkpoint waits for a store that does not answer before the
/// run gives up (and is taken up again from its last checkpoint).
const STORE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// This process, as a lease names it: `host/pid/start`. The start time tells
/// a live process from a later one that got the same pid.
pub fn this_process() -> String {
    let pid = std::process::id();
    format!("{}/{pid}/{}", hostname(), start_time(pid).unwrap_or(0))
}

/// Whether the process a lease names is known to be gone: on this host, no
/// process with its pid and start time. A process elsewhere is not known.
pub fn is_gone(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, '/');
    let (Some(start), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if host != hostname() || !Path::new("/proc/self/stat").exists() {
        return false;
    }
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    // A zombie (killed, not yet reaped by its parent) runs nothing.
    start_time(pid) != Some(start) || is_zombie(pid)
}

/// Whether a process has died and waits only to be reaped (`Z`, or `X`).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|s| s == "Z" || s == "X")
        })
        .unwrap_or(false)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// A process's start time in clock ticks since boot (Linux `/proc`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count after its `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Renews a run's lease while it is held; stops renewing when dropped.
pub struct Held(tokio::task::JoinHandle<()>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A store, and the key that seals what goes into it.
pub struct DurableRuns {
    pub store: Arc<dyn Store>,
    sealer: Sealer,
    pub key: KeySource,
    /// This process, in the leases it takes.
    owner: String,
    /// How long its leases hold unless renewed.
    lease: std::time::Duration,
    /// Where checkpoints go: many runs' to a transaction.
    commits: GroupCommit,
}

/// A stored run made ready to go on: its pinned flow and its opened state.
pub struct Resumable {
    pub run: StoredRun,
    pub flow: Flow,
    pub state: RunState,
}

impl DurableRuns {
    /// Opens the SQLite store at `path`, with the key from `$HANDOFF_STORE_KEY`
    /// or the key file beside it (`PATH.key`).
    pub async fn open(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<DurableRuns, String> {
        let key_file = path.with_file_name(format!(
            "{}.key",
            path.file_name()
                .map_or("handoff.db".into(), |n| n.to_string_lossy())
        ));
        let (sealer, key) = Sealer::load(env, &key_file)?;
        let store = SqliteStore::open(path).await.map_err(|e| e.0)?;
        let store: Arc<dyn Store> = Arc::new(store);
        Ok(DurableRuns {
            commits: GroupCommit::new(store.clone()),
            store,
            sealer,
            key,
            owner: this_process(),
            lease: LEASE,
        })
    }

    /// Opens a store by what `--store` says: a Postgres URL, or a SQLite file.
    pub async fn open_target(
        target: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        pool_size: u32,
    ) -> Result<DurableRuns, String> {
        match target
            .to_str()
            .filter(|t| crate::store::postgres::is_url(t))
        {
            Some(url) => DurableRuns::open_postgres(url, env, pool_size).await,
            None => DurableRuns::open(target, env).await,
        }
    }

    /// Opens the Postgres store that several workers share. Every worker
    /// must be given the same `$HANDOFF_STORE_KEY`: there is no key file,
    /// and a worker with another key refuses to start.
    pub async fn open_postgres(
        url: &str,
        env: &dyn Fn(&str) -> Option<String>,
        pool_size: u32,
    ) -> Result<DurableRuns, String> {
        let Some(text) = env("HANDOFF_STORE_KEY").filter(|t| !t.trim().is_empty()) else {
            return Err("with a Postgres store, every worker needs the same HANDOFF_STORE_KEY (32 random bytes, base64: `openssl rand -base64 32`); it is not set".to_string());
        };
        let sealer = Sealer::from_key(&crate::store::seal::decode_key(&text)?);
        let store = crate::store::postgres::PgStore::open(url, pool_size)
            .await
            .map_err(|e| format!("{} ({})", e.0, crate::store::postgres::masked(url)))?;
        // The first worker seals a known text; the others must open it.
        const CHECK: &str = "handoff store key check";
        let sealed = sealer.seal(&Value::String(CHECK.into())).to_string();
        let agreed = store.agree("key_check", &sealed).await.map_err(|e| e.0)?;
        let opened = serde_json::from_str::<Value>(&agreed)
            .ok()
            .and_then(|v| sealer.unseal(&v).ok());
        if opened != Some(Value::String(CHECK.into())) {
            return Err("HANDOFF_STORE_KEY is not the key this store's other workers use: give every worker the same key".to_string());
        }
        let store: Arc<dyn Store> = Arc::new(store);
        Ok(DurableRuns {
            commits: GroupCommit::new(store.clone()),
            store,
            sealer,
            key: KeySource::Env,
            owner: this_process(),
            lease: LEASE,
        })
    }

    /// Leases that hold this long unless renewed (renewed every third).
    pub fn with_lease(mut self, lease: std::time::Duration) -> DurableRuns {
        self.lease = lease.max(std::time::Duration::from_millis(300));
        self
    }

    /// Records a new run, before its first step; with a key, unless a run
    /// with that key exists (then its id comes back).
    pub async fn create(
        &self,
        id: &str,
        flow: &Flow,
        state: &RunState,
        now: std::time::SystemTime,
        key: Option<IdempotencyKey>,
        sealed: &Memo,
    ) -> Result<Created, String> {
        let run = self.new_run(id, flow, state, now, key, sealed);
        self.store.create(&run).await.map_err(|e| e.0)
    }

    /// Records many runs of one flow in one transaction (a bulk start):
    /// each `(id, state, key, sealed)`; when any conflicts, none is kept.
    pub async fn create_many(
        &self,
        flow: &Flow,
        runs: Vec<NewRow<'_>>,
        now: std::time::SystemTime,
    ) -> Result<Vec<Created>, String> {
        let runs: Vec<NewRun> = runs
            .into_iter()
            .map(|(id, state, key, sealed)| self.new_run(&id, flow, state, now, key, sealed))
            .collect();
        self.store.create_many(&runs).await.map_err(|e| e.0)
    }

    /// A run as the store keeps it: inputs and state sealed, leased to this
    /// process. The inputs and the state seal a secret once between them, and
    /// into `sealed`, the memo the run's checkpoints go on with.
    fn new_run(
        &self,
        id: &str,
        flow: &Flow,
        state: &RunState,
        now: std::time::SystemTime,
        key: Option<IdempotencyKey>,
        sealed: &Memo,
    ) -> NewRun {
        let inputs = self.sealer.fields_json(
            flow.fields
                .values()
                .filter(|f| f.input || f.env.is_some())
                .filter_map(|f| Some((f.name.as_str(), state.get(&f.name)?))),
            |name| state.secret.contains(name),
            Some(sealed),
        );
        NewRun {
            id: id.to_string(),
            flow: flow.name.clone(),
            flow_path: flow.source.name.clone(),
            flow_source: flow.source.text.clone(),
            flow_hash: flow.source.hash().to_string(),
            inputs,
            title: title_of(flow, state),
            state: self.seal_state(state, Some(sealed)),
            created_ms: unix_ms(now),
            lease: self.lease(now),
            idempotency: key,
        }
    }

    fn lease(&self, now: std::time::SystemTime) -> Lease {
        Lease {
            owner: self.owner.clone(),
            until_ms: unix_ms(now + self.lease),
        }
    }

    /// Takes a stored run for this process: when no one holds it, its lease
    /// ran out, or its holder is gone. Says who holds it otherwise.
    pub async fn claim(&self, id: &str) -> Result<(), String> {
        let now = std::time::SystemTime::now();
        let lease = self.lease(now);
        let first = self
            .store
            .claim(id, &lease, unix_ms(now), None)
            .await
            .map_err(|e| e.0)?;
        let held = match first {
            Claimed::Taken => return Ok(()),
            Claimed::Unavailable => {
                return Err(format!(
                    "run `{id}` is not in the store, or has already ended"
                ));
            }
            Claimed::Held(held) => held,
        };
        if is_gone(&held.owner) {
            let again = self
                .store
                .claim(id, &lease, unix_ms(now), Some(&held.owner))
                .await
                .map_err(|e| e.0)?;
            if again == Claimed::Taken {
                return Ok(());
            }
        }
        let until = crate::run::clock::rfc3339(crate::run::clock::from_unix_ms(held.until_ms));
        Err(format!(
            "run `{id}` is being run by another process ({}); resume it once that process has stopped, or after its lease runs out at {until}",
            held.owner
        ))
    }

    /// Takes up to `limit` runs due now for this process (see
    /// [`Store::take_due`]), claimed in one write: as they were before.
    pub async fn take_due(&self, limit: u32) -> Result<Vec<StoredRun>, String> {
        let now = std::time::SystemTime::now();
        self.store
            .take_due(unix_ms(now), &self.lease(now), limit)
            .await
            .map_err(|e| e.0)
    }

    /// Keeps this process's lease on a run alive until the guard is dropped.
    pub fn hold(&self, id: &str) -> Held {
        let store = self.store.clone();
        let owner = self.owner.clone();
        let id = id.to_string();
        let period = self.lease;
        Held(tokio::spawn(async move {
            loop {
                tokio::time::sleep(period / 3).await;
                let lease = Lease {
                    owner: owner.clone(),
                    until_ms: unix_ms(std::time::SystemTime::now() + period),
                };
                // A lost lease shows at the next checkpoint, which stops the run.
                if !matches!(store.renew(&id, &lease).await, Ok(true)) {
                    return;
                }
            }
        }))
    }

    /// Where the engine hands this run's progress.
    pub fn checkpoints<'a>(&'a self, run_id: &str) -> RunCheckpoints<'a> {
        self.checkpoints_sealed(run_id, Memo::default())
    }

    /// [`Self::checkpoints`] for a run whose creation sealed its secrets
    /// into `sealed`: its first checkpoint writes them as sealed then.
    pub fn checkpoints_sealed<'a>(&'a self, run_id: &str, sealed: Memo) -> RunCheckpoints<'a> {
        RunCheckpoints {
            runs: self,
            run_id: run_id.to_string(),
            sealed,
        }
    }

    /// A stored run, with its flow re-read from the stored text and its
    /// secrets opened.
    pub async fn load(&self, id: &str) -> Result<Resumable, String> {
        let run = self
            .store
            .load(id)
            .await
            .map_err(|e| e.0)?
            .ok_or_else(|| format!("there is no run `{id}` in the store"))?;
        let flow = pinned_flow(&run)?;
        let state = self.open_state(&run, &flow)?;
        Ok(Resumable { run, flow, state })
    }

    /// A stored run's state, its secrets opened, checked against its flow:
    /// what a store holds is input, and a damaged row is refused, not run.
    pub fn open_state(&self, run: &StoredRun, flow: &Flow) -> Result<RunState, String> {
        let damaged =
            |why: &str| format!("run `{}` has a damaged state in the store: {why}", run.id);
        let mut state: RunState =
            serde_json::from_str(&run.state).map_err(|_| damaged("it is not a run's state"))?;
        let steps = flow.steps.len();
        if state.pc >= steps || state.in_flight.is_some_and(|i| i >= steps) {
            return Err(damaged("it is at a step its flow does not have"));
        }
        state.visits.resize(steps, 0);
        state.recent.retain(|&i| i < steps);
        if let Some(wake) = state.wake_at_ms {
            let latest = unix_ms(std::time::SystemTime::now())
                .saturating_add(crate::run::clock::MAX_TIMER.as_millis() as i64)
                .saturating_add(CLOCK_SLACK_MS);
            if !(0..=latest).contains(&wake) {
                return Err(damaged(&format!(
                    "its timer wakes at {}, and a timer waits at most {}",
                    crate::run::clock::rfc3339(crate::run::clock::from_unix_ms(wake)),
                    crate::run::clock::format_duration(crate::run::clock::MAX_TIMER)
                )));
            }
        }
        if let Some(progress) = &run.progress {
            // Newer than the state: the items that finished since it was written.
            #[derive(serde::Deserialize)]
            struct Between {
                last_seq: u64,
                each: Option<Box<crate::run::state::Each>>,
            }
            let between: Between = serde_json::from_str(progress)
                .map_err(|_| damaged("its progress through a list is not readable"))?;
            state.last_seq = state.last_seq.max(between.last_seq);
            state.each = between.each;
        }
        if let Some(each) = &mut state.each {
            self.unseal_each(each)?;
            if each.done.len() != each.total.div_ceil(64)
                || each.results.as_ref().is_some_and(|r| r.len() != each.total)
            {
                return Err(damaged("its progress through a list does not add up"));
            }
        }
        // A signal that came while the run waited: the run goes on with it.
        if let (Some(signal), Some(wait)) = (&run.signal, &mut state.wait)
            && run.waiting_for.as_deref() == Some(wait.key().as_str())
            && wait.outcome.is_none()
        {
            let sent: SentSignal = serde_json::from_str(signal)
                .map_err(|_| damaged("the signal it received is not readable"))?;
            wait.outcome = Some(crate::run::state::Waited::Signal {
                data: sent.data,
                via: sent.via,
            });
        }
        state.fields = Arc::new(self.sealer.unseal_fields(&state.fields)?);
        Ok(state)
    }

    /// The inputs a run was started with, its secrets opened: what a retry
    /// starts again with. Only for starting; never shown.
    pub fn inputs_of(&self, run: &StoredRun) -> Result<serde_json::Value, String> {
        let given: IndexMap<String, serde_json::Value> = serde_json::from_str(&run.inputs)
            .map_err(|_| format!("run `{}` has damaged inputs in the store", run.id))?;
        let opened = self.sealer.unseal_fields(&given)?;
        Ok(serde_json::Value::Object(opened.into_iter().collect()))
    }

    /// The key resume URLs are signed with, derived from the store's.
    pub fn resume_key(&self) -> [u8; 32] {
        self.sealer.resume_key()
    }

    /// This process, as its leases name it.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// A stored run's trace events, in order.
    pub async fn trace(&self, id: &str) -> Result<Vec<crate::run::trace::TraceEvent>, String> {
        let lines = self.store.events(id).await.map_err(|e| e.0)?;
        Ok(lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    pub async fn list(&self, filter: &RunFilter) -> Result<Vec<StoredRun>, String> {
        self.store.list(filter).await.map_err(|e| e.0)
    }

    fn seal_state(&self, state: &RunState, memo: Option<&Memo>) -> String {
        let each = state.each.as_ref().map(|e| Box::new(self.seal_each(e)));
        self.sealer.state_json(state, each, memo)
    }

    /// What changed between a `for_each`'s items: its progress, and the
    /// last event's number.
    fn seal_progress(&self, state: &RunState) -> String {
        let each = state.each.as_ref().map(|e| self.seal_each(e));
        serde_json::json!({ "last_seq": state.last_seq, "each": each }).to_string()
    }

    /// Results built from a secret are sealed like a secret field.
    fn seal_each(&self, each: &crate::run::state::Each) -> crate::run::state::Each {
        let mut sealed = each.clone();
        if each.results_secret
            && let Some(results) = &each.results
        {
            sealed.results = Some(vec![self.sealer.seal(&Value::Array(results.clone()))]);
        }
        sealed
    }

    fn unseal_each(&self, each: &mut crate::run::state::Each) -> Result<(), String> {
        if each.results_secret
            && let Some(results) = &mut each.results
            && let [sealed] = &results[..]
        {
            match self.sealer.unseal(sealed)? {
                Value::Array(opened) => *results = opened,
                _ => return Err("its sealed results are not a list".to_string()),
            }
        }
        Ok(())
    }
}

/// A signal as it waits in the store for its run.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SentSignal {
    pub data: Value,
    /// How it came: `api`, `url` or `cli`.
    pub via: String,
}

impl DurableRuns {
    /// Delivers a signal to wait `n` of `signal` of run `id`, by `via`.
    /// `Ok(false)`: the run does not wait for it (or has one already).
    pub async fn signal(
        &self,
        id: &str,
        signal: &str,
        n: u64,
        data: Value,
        via: &str,
    ) -> Result<bool, String> {
        let sent = serde_json::to_string(&SentSignal {
            data,
            via: via.to_string(),
        })
        .unwrap_or_default();
        let now = unix_ms(std::time::SystemTime::now());
        self.store
            .signal(id, &format!("{signal}#{n}"), &sent, now)
            .await
            .map_err(|e| e.0)
    }
}

/// A durable CLI run waits in place for its signal, reading its row now
/// and then: `handoff signal` writes it there, from another process.
impl crate::run::signals::Signals for DurableRuns {
    fn wait<'a>(
        &'a self,
        clock: &'a dyn crate::run::clock::Clock,
        run_id: &'a str,
        signal: &'a str,
        n: u64,
        until: std::time::SystemTime,
    ) -> BoxFuture<'a, Result<Option<crate::run::signals::Received>, String>> {
        Box::pin(async move {
            let key = format!("{signal}#{n}");
            loop {
                let run = self
                    .store
                    .load(run_id)
                    .await
                    .map_err(|e| e.0)?
                    .ok_or_else(|| format!("run `{run_id}` is gone from the store"))?;
                if run.waiting_for.as_deref() == Some(key.as_str())
                    && let Some(text) = &run.signal
                {
                    let sent: SentSignal = serde_json::from_str(text)
                        .map_err(|_| "the signal it received is not readable".to_string())?;
                    return Ok(Some((sent.data, sent.via)));
                }
                if run.status == crate::engine::checkpoint::DurableStatus::Canceled {
                    return Err("the run was canceled while it waited".to_string());
                }
                let left = until.duration_since(clock.now()).unwrap_or_default();
                if left.is_zero() {
                    return Ok(None);
                }
                clock.sleep(left.min(SIGNAL_POLL)).await;
            }
        })
    }

    fn url(&self, _run_id: &str, _signal: &str, _n: u64) -> Option<String> {
        None
    }
}

/// How often a durable CLI run that waits for a signal reads its row.
const SIGNAL_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// How far a clock may have moved between the worker that set a timer and
/// the one that reads it back.
const CLOCK_SLACK_MS: i64 = 24 * 3600 * 1000;

/// The flow a stored run started with, re-read from its stored text, which
/// must still be the version the run recorded.
pub fn pinned_flow(run: &StoredRun) -> Result<Flow, String> {
    if flow_hash(&run.flow_source) != run.flow_hash {
        return Err(format!(
            "run `{}`'s stored flow is not the version it started with ({}): the store was changed; not going on with it",
            run.id,
            crate::language::fields::clip(&run.flow_hash, 12)
        ));
    }
    let source = Source::new(run.flow_path.clone(), run.flow_source.clone());
    // An Arazzo document is the workflow the flow is named after; a flow
    // file has no workflows, and the name is not read.
    crate::language::analyze::analyze_workflow(&source, Some(&run.flow))
        .map(|checked| checked.flow)
        .map_err(|_| {
            format!(
                "run `{}` started with a version of `{}` that no longer loads",
                run.id, run.flow_path
            )
        })
}

/// A run to create: its id, state, idempotency key, and the memo its
/// checkpoints will seal with, which its creation seals into.
pub type NewRow<'a> = (String, &'a RunState, Option<IdempotencyKey>, &'a Memo);

/// One run's checkpoints, into its store.
pub struct RunCheckpoints<'a> {
    runs: &'a DurableRuns,
    run_id: String,
    /// Its secret values as its last checkpoint sealed them.
    sealed: Memo,
}

impl RunCheckpoints<'_> {
    /// Its secret values as sealed last, for [`DurableRuns::create`] to seal
    /// the run's first state with.
    pub fn sealed(&self) -> &Memo {
        &self.sealed
    }
}

impl Checkpoints for RunCheckpoints<'_> {
    fn save<'a>(&'a self, progress: Progress<'a>) -> BoxFuture<'a, Result<Saved, String>> {
        Box::pin(async move {
            let events = crate::run::jsonl::numbered(&progress.events);
            let point = Arc::new(Checkpoint {
                run_id: self.run_id.clone(),
                owner: self.runs.owner.clone(),
                status: progress.status,
                step: progress.step.map(str::to_string),
                // A wait for a signal wakes at its timeout, unless a signal comes first.
                wake_at_ms: progress.state.wake_at_ms.or_else(|| {
                    progress
                        .state
                        .wait
                        .as_ref()
                        .filter(|w| w.outcome.is_none())
                        .map(|w| w.until_ms)
                }),
                waiting_for: progress
                    .state
                    .wait
                    .as_ref()
                    .filter(|w| w.outcome.is_none())
                    .map(|w| w.key()),
                steps_taken: progress.state.steps_taken,
                state: (!progress.only_each)
                    .then(|| self.runs.seal_state(progress.state, Some(&self.sealed))),
                progress: progress
                    .only_each
                    .then(|| self.runs.seal_progress(progress.state)),
                outcome: progress
                    .outcome
                    .map(|o| serde_json::to_string(o).unwrap_or_default()),
                events,
                updated_ms: unix_ms(std::time::SystemTime::now()),
                release: progress.leaves,
            });
            // A store that is away (Postgres restarting, a lock held too
            // long) is waited for, with backoff: a checkpoint is never dropped.
            // The lease is renewed meanwhile, and a write that comes too late
            // is fenced off like any other.
            let mut pause = std::time::Duration::from_millis(50);
            let mut waited = std::time::Duration::ZERO;
            loop {
                match self.runs.commits.checkpoint(point.clone()).await {
                    Ok(saved) => return Ok(saved),
                    Err(e) if waited >= STORE_PATIENCE => return Err(e.0),
                    Err(_) => {
                        tokio::time::sleep(pause).await;
                        waited += pause;
                        pause = (pause * 2).min(std::time::Duration::from_secs(2));
                    }
                }
            }
        })
    }
}

/// The trace a stored run's spans belong to: the caller's, when a
/// `traceparent` started it, else its own (see [`crate::run::otel::ids`]).
pub fn trace_id(run: &StoredRun) -> [u8; 16] {
    let parent = serde_json::from_str::<serde_json::Value>(&run.state)
        .ok()
        .and_then(|state| {
            state
                .get("traceparent")
                .and_then(|t| t.as_str())
                .and_then(crate::run::otel::ids::Parent::parse)
        });
    crate::run::otel::ids::TraceIds::new(&run.id, parent).trace_id
}

/// A run's title: the flow's `title:` rendered over the run's starting
/// fields (inputs that are not secret, as `check` makes sure), as one line
/// of at most 200 characters. `None` without a title, or when it fails.
pub fn title_of(flow: &Flow, state: &RunState) -> Option<String> {
    let template = flow.title.as_ref()?;
    let scope = crate::language::template::Scope::new(state.fields.clone());
    let text = match template.render(&flow.env, &scope).ok()? {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!line.is_empty()).then(|| crate::language::fields::clip(&line, 200).to_string())
}
