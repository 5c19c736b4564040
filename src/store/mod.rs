//! The run store: where durable runs live between steps, and across crashes.
//!
//! A [`Store`] keeps one row per run (its flow, pinned by source and hash,
//! its inputs, status, current step, `wake_at`, step count and outcome) and
//! the run's trace events. The engine checkpoints as it goes: the state and
//! the events since the last checkpoint go in one transaction, and
//! [`group::GroupCommit`] puts many runs' checkpoints in one. The store never holds
//! a secret in clear: values are sealed by [`seal::Sealer`] before they reach
//! it, with a key the store does not keep.
//!
//! SQLite ([`sqlite::SqliteStore`]) is the embedded default; Postgres
//! ([`postgres::PgStore`]) is the store several workers share. [`durable`]
//! runs the engine against either: creates a run, hands it the
//! checkpoints, and loads it again to resume.

pub mod durable;
pub mod group;
pub mod postgres;
pub mod seal;
pub mod sql;
pub mod sqlite;

use crate::engine::checkpoint::{DurableStatus, Saved};
use crate::run::clock::BoxFuture;

/// A run as it is created.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub flow: String,
    /// Where the flow was read from, for people.
    pub flow_path: String,
    /// The flow's text: a resumed run runs this version, whatever the file says now.
    pub flow_source: String,
    pub flow_hash: String,
    /// The inputs as given, secret values sealed (JSON).
    pub inputs: String,
    /// The run's title, from the flow's `title:` (never a secret).
    pub title: Option<String>,
    /// The starting state, secret values sealed (JSON).
    pub state: String,
    pub created_ms: i64,
    /// The process that runs it first.
    pub lease: Lease,
    /// A start retried with the same key finds this run instead of making another.
    pub idempotency: Option<IdempotencyKey>,
}

/// What makes two starts the same start: a key, in a scope (a flow's API
/// starts, or its hook). The store keeps the key's hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub scope: String,
    pub key: String,
    /// A digest of what the start asked for (its inputs): the same key with
    /// other inputs is a conflict, not a replay. `None`: the key says it all.
    pub fingerprint: Option<String>,
}

impl IdempotencyKey {
    pub fn hash(&self) -> String {
        flow_hash(&format!("{}\n{}", self.scope, self.key))
    }

    /// What a create that found `run_id` under this key did: a replay when
    /// the fingerprints agree (or either is unknown), a conflict when not.
    pub fn found(&self, run_id: String, stored: Option<String>) -> Created {
        match (&self.fingerprint, stored) {
            (Some(asked), Some(kept)) if *asked != kept => Created::Conflict(run_id),
            _ => Created::Existing(run_id),
        }
    }
}

/// A digest of a start's inputs, the same whatever order their keys came in.
pub fn fingerprint(inputs: &serde_json::Value) -> String {
    fn canonical(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let sorted: std::collections::BTreeMap<&String, serde_json::Value> =
                    m.iter().map(|(k, v)| (k, canonical(v))).collect();
                serde_json::to_value(sorted).unwrap_or_default()
            }
            serde_json::Value::Array(a) => a.iter().map(canonical).collect(),
            other => other.clone(),
        }
    }
    flow_hash(&canonical(inputs).to_string())
}

/// What a create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New,
    /// A run with the same idempotency key exists: this one, not a new one.
    Existing(String),
    /// A run with the same key exists, started with other inputs: nothing
    /// was created, and the start is refused.
    Conflict(String),
}

/// What the engine writes after a step, in one transaction.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub run_id: String,
    /// The process writing it: the write is refused unless it holds the run.
    pub owner: String,
    pub status: DurableStatus,
    /// The step the run is at (to run next, or waiting in).
    pub step: Option<String>,
    pub wake_at_ms: Option<i64>,
    pub steps_taken: u64,
    /// The state, secret values sealed (JSON); `None` when only `progress`
    /// changed since the last checkpoint.
    pub state: Option<String>,
    /// A `for_each`'s progress, newer than the state's (JSON); `None`
    /// clears it, as the state then holds all.
    pub progress: Option<String>,
    /// The wait the run is in (`approval#0`), which a signal must name.
    /// Every checkpoint clears the signal column: the run has taken it.
    pub waiting_for: Option<String>,
    /// The outcome, when the run finished (JSON).
    pub outcome: Option<String>,
    /// The step's trace events, redacted, as JSON lines with their `seq`.
    pub events: Vec<(u64, String)>,
    pub updated_ms: i64,
    /// The run waits as a row from here: the write also lets go of the
    /// lease, as [`Store::release`] would, so that any worker may wake it.
    pub release: bool,
}

/// Who runs a run, and until when that claim holds unless renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub until_ms: i64,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    Taken,
    /// Someone else holds it.
    Held(Lease),
    /// It has finished, or it is not in the store.
    Unavailable,
}

/// A stored run.
#[derive(Debug, Clone)]
pub struct StoredRun {
    pub id: String,
    pub flow: String,
    pub flow_path: String,
    pub flow_source: String,
    pub flow_hash: String,
    pub inputs: String,
    pub status: DurableStatus,
    pub step: Option<String>,
    pub wake_at_ms: Option<i64>,
    pub steps_taken: u64,
    pub state: String,
    /// A `for_each`'s progress, newer than the state's.
    pub progress: Option<String>,
    /// The wait the run is in (`approval#0`).
    pub waiting_for: Option<String>,
    /// A signal for that wait, not yet taken: `{"data": …, "via": …}`.
    pub signal: Option<String>,
    pub outcome: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The seq of the last event whose OpenTelemetry spans were exported.
    pub exported_seq: u64,
    /// The run's title, from the flow's `title:`.
    pub title: Option<String>,
    pub lease: Option<Lease>,
}

/// Which runs a listing shows.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<DurableStatus>,
    pub flow: Option<String>,
    /// Only runs that are not finished.
    pub unfinished: bool,
    pub limit: Option<u32>,
    /// Only runs older than this one (ids sort by creation time): the next page.
    pub before: Option<String>,
    /// Only runs whose id, title or inputs hold this text, in any case: an
    /// instance id finds its run. Secret inputs are sealed, so never match.
    pub search: Option<String>,
    /// Oldest first, rather than newest first.
    pub oldest_first: bool,
}

impl RunFilter {
    /// The `LIKE` pattern of [`RunFilter::search`]: lower case, `%`, `_`
    /// and `\\` taken literally.
    pub fn search_pattern(&self) -> Option<String> {
        let text = self.search.as_deref()?.trim();
        if text.is_empty() {
            return None;
        }
        let mut pattern = String::from("%");
        for c in text.to_lowercase().chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        Some(pattern)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many runs there are, by flow and status.
pub type Counts = Vec<(String, DurableStatus, u64)>;

/// A run store. Every method is one short transaction.
pub trait Store: Send + Sync {
    /// Records a run, unless its idempotency key names one already.
    fn create<'a>(&'a self, run: &'a NewRun) -> BoxFuture<'a, Result<Created, StoreError>> {
        Box::pin(async move {
            let mut one = self.create_many(std::slice::from_ref(run)).await?;
            Ok(one.pop().unwrap_or(Created::New))
        })
    }
    /// Records runs in one transaction, each unless its key names a run
    /// already (a key given twice in the list names the first). When any
    /// conflicts (its key started a run with other inputs), none is kept;
    /// the results say which.
    fn create_many<'a>(
        &'a self,
        runs: &'a [NewRun],
    ) -> BoxFuture<'a, Result<Vec<Created>, StoreError>>;
    fn checkpoint<'a>(&'a self, point: &'a Checkpoint) -> BoxFuture<'a, Result<Saved, StoreError>>;
    /// Checkpoints of many runs in one transaction (group commit): what each
    /// [`Store::checkpoint`] would have answered, in order. The outer error
    /// says nothing was kept; an inner one, that this checkpoint was not.
    fn checkpoint_many<'a>(
        &'a self,
        points: &'a [&'a Checkpoint],
    ) -> BoxFuture<'a, Result<Vec<Result<Saved, StoreError>>, StoreError>> {
        Box::pin(async move {
            let mut saved = Vec::with_capacity(points.len());
            for p in points {
                saved.push(self.checkpoint(p).await);
            }
            Ok(saved)
        })
    }
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<StoredRun>, StoreError>>;
    /// Newest first.
    fn list<'a>(
        &'a self,
        filter: &'a RunFilter,
    ) -> BoxFuture<'a, Result<Vec<StoredRun>, StoreError>>;
    /// The run an idempotency key (its [`IdempotencyKey::hash`]) started, if any.
    fn keyed<'a>(&'a self, key_hash: &'a str) -> BoxFuture<'a, Result<Option<String>, StoreError>>;
    /// The run's trace events, in order, as JSON lines.
    fn events<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;
    /// The run's trace events numbered after `seq`, with their numbers.
    fn events_after<'a>(
        &'a self,
        id: &'a str,
        seq: u64,
    ) -> BoxFuture<'a, Result<Vec<(u64, String)>, StoreError>>;
    /// Marks an unfinished run canceled, and ends its trace with one
    /// `flow_finished` (canceled, `by` whom) in the same transaction. `false`
    /// when it was already finished or unknown. A worker still running it
    /// stops at its next checkpoint, whose events go in before the ending.
    fn cancel<'a>(
        &'a self,
        id: &'a str,
        now_ms: i64,
        by: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Delivers a signal to wait `wait` (`approval#0`) of a run: `true` when
    /// the run waits for it and has no signal for it yet. The run is due at
    /// once. Anything else changes nothing; the caller reads the run to say why.
    fn signal<'a>(
        &'a self,
        id: &'a str,
        wait: &'a str,
        signal: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Takes an unfinished run for `lease.owner`, when no one else holds it:
    /// its lease ran out, or its holder is `gone` (known to be dead).
    fn claim<'a>(
        &'a self,
        id: &'a str,
        lease: &'a Lease,
        now_ms: i64,
        gone: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Claimed, StoreError>>;
    /// The leases on unfinished runs, by run id: who holds what.
    fn leases(&self) -> BoxFuture<'_, Result<Vec<(String, Lease)>, StoreError>>;
    /// Gives up this owner's lease on a run, so that any worker may take it.
    fn release<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Takes up to `limit` runs due to go on, oldest wake first, for
    /// `lease.owner`: waiting with `wake_at` passed (and not held by another
    /// live lease), or running with no live holder. Claimed in one write, and
    /// returned as they were before it: their lease says who held them.
    fn take_due<'a>(
        &'a self,
        now_ms: i64,
        lease: &'a Lease,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<StoredRun>, StoreError>>;
    /// The earliest `wake_at` of a waiting run.
    fn next_wake(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>>;
    /// How many runs there are, by flow and status, in that order.
    fn counts(&self) -> BoxFuture<'_, Result<Counts, StoreError>>;
    /// Extends the lease of a run this owner holds. `false` when it does not.
    fn renew<'a>(
        &'a self,
        id: &'a str,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Whether the store answers, for `/healthz`.
    /// Notes, for each run, the seq of the last event whose spans the
    /// collector took; a mark never moves back.
    fn mark_exported<'a>(
        &'a self,
        marks: &'a [(String, u64)],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    /// Whether transactions write side by side (Postgres), or one holds the
    /// only writer while it lasts (SQLite): then a transaction begun ahead
    /// of time holds back the runs' checkpoints.
    fn writes_side_by_side(&self) -> bool {
        false
    }
    /// Notified when another process canceled a run or signalled one: a
    /// shared store's news, for the scheduler. `None` when only this process
    /// writes. (A new run is leased to the process that created it: news of
    /// it would only make the others look for nothing.)
    fn changes(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
}

/// A flow's version: SHA-256 of its text, hex.
/// The event that ends a canceled run's trace, as stored: numbered `seq`,
/// `at_ms` after the run was created.
pub fn canceled_ending(run: &StoredRun, seq: u64, now_ms: i64, by: &str) -> String {
    use crate::run::trace::{EventKind, Outcome, RunStatus, TraceEvent};
    let event = TraceEvent {
        seq,
        at_ms: u64::try_from(now_ms - run.created_ms).unwrap_or(0),
        time: crate::run::clock::rfc3339(
            std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(u64::try_from(now_ms).unwrap_or(0)),
        )
        .into(),
        run: run.id.as_str().into(),
        step: None,
        kind: EventKind::FlowFinished(Outcome {
            status: RunStatus::Canceled,
            at_step: run.step.clone(),
            reason: format!("canceled by {by}"),
            last_branch: None,
            tries: None,
            steps_taken: run.steps_taken,
            elapsed_ms: u64::try_from(now_ms - run.created_ms).unwrap_or(0),
        }),
    };
    crate::run::jsonl::to_string(&event)
}

pub fn flow_hash(text: &str) -> String {
    crate::language::source::sha256_hex(text)
}
