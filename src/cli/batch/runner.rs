//! Many runs of one flow in one process (`handoff run --each`): one runtime,
//! one HTTP client and its connection pool, at most `jobs` runs at a time.
//! A run's failure never stops the others; a stop (Ctrl-C) starts no new
//! run and lets each run in flight end its current step.
//!
//! A durable batch keeps each row's run in the store, keyed by the row's
//! inputs: run again, it skips the rows whose run succeeded, goes on with
//! those left unfinished, and runs the failed ones anew.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use futures_util::StreamExt;

use crate::engine::checkpoint::DurableStatus;
use crate::engine::{Durable, Engine};
use crate::language::flow::Flow;
use crate::run::clock::{Clock, SystemClock, VirtualClock};
use crate::run::mock::{Mock, MockTransport};
use crate::run::state::RunState;
use crate::run::trace::{Outcome, RunStatus, TraceEvent};
use crate::run::transport::Transport;
use crate::store::durable::DurableRuns;
use crate::store::seal::Memo;
use crate::store::{Created, IdempotencyKey};

/// One run to make: its row's number (from 1) and its starting state.
pub struct Row {
    pub number: usize,
    pub state: RunState,
    /// What makes two rows the same row, for a durable batch run again: a
    /// hash of its inputs.
    pub key: String,
}

/// How one row's run ended.
pub struct Finished {
    pub row: usize,
    pub run_id: String,
    pub outcome: Outcome,
    /// A durable batch run again: this row's run had already succeeded.
    pub skipped: bool,
}

/// The most times a durable batch runs a failed row anew.
const MAX_ATTEMPTS: u32 = 1000;

/// A durable batch's rows made in the store in one transaction.
const MADE_AT_ONCE: usize = 100;

/// Where the batch's runs send their requests.
pub enum Route<'a> {
    /// The real thing, shared by every run.
    Real(&'a dyn Transport),
    /// A dry run: each run has its own scripted responses and virtual clock.
    Dry(&'a Mock),
}

pub struct Batch<'a> {
    pub flow: &'a Flow,
    pub route: Route<'a>,
    /// Runs at a time.
    pub jobs: usize,
    /// Set to stop: no new run starts, and each run stops before its next step.
    pub stop: &'a AtomicBool,
    /// Where a durable batch keeps its runs.
    pub durable: Option<&'a DurableRuns>,
    /// `--record DIR`: each row's answers as `row-00042.mock.yaml` there.
    pub record: Option<&'a std::path::Path>,
    /// App tokens the real runs share (a dry run's clock is its own, so
    /// each dry run keeps its own tokens).
    pub tokens: crate::run::tokens::TokenCache,
    /// Whether the runs' events are read (`--trace jsonl`, `--trace-dir`).
    pub traced: bool,
}

impl Batch<'_> {
    /// Runs every row, `jobs` at a time, handing each event to `events` and
    /// each ending to `finished` as they happen. Rows not started when the
    /// batch was stopped are left out.
    pub async fn run(
        &self,
        rows: impl IntoIterator<Item = Row>,
        events: &(dyn Fn(usize, &TraceEvent) + Sync),
        finished: &(dyn Fn(Finished) + Sync),
    ) {
        let rows = futures_util::stream::iter(rows)
            .take_while(|_| std::future::ready(!self.stop.load(Ordering::Relaxed)));
        let Some(runs) = self.durable else {
            rows.map(|row| async move {
                // A dry run never waits: give the runtime its turn (Ctrl-C,
                // progress) between rows.
                tokio::task::yield_now().await;
                finished(self.one(row, events).await);
            })
            .buffer_unordered(self.jobs.max(1))
            .collect::<Vec<()>>()
            .await;
            return;
        };
        // A durable batch makes its rows' runs in the store a chunk at a
        // time: one transaction a chunk, not one a row.
        if runs.store.writes_side_by_side() {
            // The next chunk is made while this one's runs go on, so that no
            // run waits for a chunk's round trips: the channel holds a chunk.
            let (made_tx, mut made_rx) = tokio::sync::mpsc::channel::<Made>(MADE_AT_ONCE);
            let make = async move {
                let mut chunks = std::pin::pin!(rows.chunks(MADE_AT_ONCE));
                while let Some(chunk) = chunks.next().await {
                    for made in self.make(runs, chunk).await {
                        if made_tx.send(made).await.is_err() {
                            return;
                        }
                    }
                }
            };
            let made = futures_util::stream::poll_fn(|cx| made_rx.poll_recv(cx));
            futures_util::join!(make, self.run_made(runs, made, events, finished));
            return;
        }
        // One writer (SQLite): not ahead of time. A chunk's transaction only
        // goes on while a place for a run is free (`buffer_unordered` asks for
        // the next row only then), and one begun ahead would hold the store's
        // writer from the runs it waits for.
        let made = rows
            .chunks(MADE_AT_ONCE)
            .then(|chunk| self.make(runs, chunk))
            .flat_map(futures_util::stream::iter);
        self.run_made(runs, made, events, finished).await;
    }

    /// Runs the rows whose runs were made, `jobs` at a time, as they come.
    async fn run_made(
        &self,
        runs: &DurableRuns,
        made: impl futures_util::Stream<Item = Made>,
        events: &(dyn Fn(usize, &TraceEvent) + Sync),
        finished: &(dyn Fn(Finished) + Sync),
    ) {
        made.map(|made| async move {
            if let Some(done) = self.durable_one(runs, made, events).await {
                finished(done);
            }
        })
        .buffer_unordered(self.jobs.max(1))
        .collect::<Vec<()>>()
        .await;
    }

    /// The key of a row's `attempt`th run: a failed attempt leaves its key
    /// to its run, and the next attempt takes the next key.
    fn key(&self, row: &Row, attempt: u32) -> IdempotencyKey {
        IdempotencyKey {
            scope: format!("batch/{}", self.flow.name),
            key: format!("{}#{attempt}", row.key),
            // The key is a digest of the row's inputs already. With no
            // fingerprint, no row conflicts with a run kept under its key.
            fingerprint: None,
        }
    }

    /// Rows' runs made in the store in one call, under each row's first
    /// key: made, or the run already kept under it.
    async fn make(&self, runs: &DurableRuns, rows: Vec<Row>) -> Vec<Made> {
        let now = SystemTime::now();
        let ids: Vec<String> = rows
            .iter()
            .map(|_| crate::run::trace::new_run_id(now))
            .collect();
        // Each run's checkpoints go on from the sealing its creation did.
        let memos: Vec<Memo> = rows.iter().map(|_| Memo::default()).collect();
        let asked = rows
            .iter()
            .zip(&ids)
            .zip(&memos)
            .map(|((row, id), memo)| (id.clone(), &row.state, Some(self.key(row, 1)), memo))
            .collect();
        let created = runs.create_many(self.flow, asked, now).await;
        rows.into_iter()
            .zip(ids)
            .zip(memos)
            .enumerate()
            .map(|(k, ((row, id), sealed))| Made {
                first: match &created {
                    Ok(all) => Ok(all.get(k).cloned().unwrap_or(Created::New)),
                    Err(e) => Err(e.clone()),
                },
                row,
                id,
                now,
                sealed,
            })
            .collect()
    }

    async fn one(&self, row: Row, events: &(dyn Fn(usize, &TraceEvent) + Sync)) -> Finished {
        let now = SystemTime::now();
        let run_id = crate::run::trace::new_run_id(now);
        let number = row.number;
        let mut spans = crate::run::otel::Live::new();
        let mut observer = |e: &TraceEvent| {
            events(number, e);
            if let Some(s) = &mut spans {
                s.event(e);
            }
        };
        let system = SystemClock::quiet(now);
        let virtual_clock = Arc::new(VirtualClock::new(now));
        let mock;
        let mut scripted = None;
        let (clock, transport, dry_run): (&dyn Clock, &dyn Transport, bool) = match &self.route {
            Route::Real(t) => (&system, *t, false),
            Route::Dry(m) => {
                mock = MockTransport::new((*m).clone(), virtual_clock.clone());
                // Each row's run has the mock's signals to itself.
                scripted = Some(crate::run::signals::Scripted::new(m.signals.clone()));
                (&*virtual_clock, &mock, true)
            }
        };
        let recording = match (&self.route, self.record) {
            (Route::Real(t), Some(_)) => Some(crate::run::record::Recording::new(*t)),
            _ => None,
        };
        let transport: &dyn Transport = match &recording {
            Some(r) => r,
            None => transport,
        };
        let given = recording.as_ref().map(|_| row.state.clone());
        let engine = Engine {
            run_id: run_id.clone(),
            flow: self.flow,
            clock,
            transport,
            dry_run,
            durable: None,
            stop: Some(self.stop),
            tokens: (!dry_run).then_some(&self.tokens),
            traced: self.traced,
            signals: scripted
                .as_ref()
                .map(|s| s as &dyn crate::run::signals::Signals),
        };
        let result = engine.run(row.state, &mut observer).await;
        if let (Some(recording), Some(dir), Some(given)) = (&recording, self.record, &given) {
            self.write_recording(recording, dir, number, &run_id, given, &result);
        }
        Finished {
            row: number,
            run_id,
            outcome: result.outcome,
            skipped: false,
        }
    }

    /// Writes a row's recording, with every secret its run knew masked. An
    /// interrupted run is not recorded: what it received last may hold a
    /// secret it had not yet marked.
    fn write_recording(
        &self,
        recording: &crate::run::record::Recording<'_>,
        dir: &std::path::Path,
        number: usize,
        run_id: &str,
        given: &RunState,
        result: &crate::engine::RunResult,
    ) {
        if result.outcome.status == RunStatus::Interrupted {
            return;
        }
        let redactor = crate::run::redact::Redactor::for_run(
            &self.flow.literal_secrets,
            &[given, &result.state],
        );
        let path = dir.join(format!("row-{number:05}.mock.yaml"));
        if let Err(e) = std::fs::write(
            &path,
            recording.mock_text(
                run_id,
                &self.flow.name,
                &redactor,
                &crate::run::inputs::recorded_inputs(self.flow, given),
            ),
        ) {
            eprintln!(
                "warning: cannot write `{}`: {}",
                path.display(),
                crate::language::source::io_reason(&e)
            );
        }
    }

    /// A row of a durable batch: its run found by the row's key and skipped,
    /// gone on with, or made. `None` when the batch was stopped first.
    async fn durable_one(
        &self,
        runs: &DurableRuns,
        made: Made,
        events: &(dyn Fn(usize, &TraceEvent) + Sync),
    ) -> Option<Finished> {
        let Made {
            row,
            id: fresh_id,
            now,
            first,
            sealed,
        } = made;
        if self.stop.load(Ordering::Relaxed) {
            // Made with its chunk, never begun: canceled, so that no worker
            // takes it up, and the batch run again makes the row anew.
            if matches!(first, Ok(Created::New)) {
                let now_ms = crate::run::clock::unix_ms(SystemTime::now());
                let by = "the batch, stopped before this row's run began";
                let _ = runs.store.cancel(&fresh_id, now_ms, by).await;
            }
            return None;
        }
        let number = row.number;
        let ended = |run_id: String, reason: String| {
            Some(Finished {
                row: number,
                run_id,
                outcome: Outcome {
                    status: RunStatus::Failed,
                    at_step: None,
                    reason,
                    last_branch: None,
                    tries: None,
                    steps_taken: 0,
                    elapsed_ms: 0,
                },
                skipped: false,
            })
        };
        let mut resumed = None;
        let mut attempt = 1;
        let mut created = first;
        loop {
            match created {
                Ok(Created::New) => break,
                Ok(Created::Existing(id) | Created::Conflict(id)) => {
                    let stored = match runs.store.load(&id).await {
                        Ok(Some(r)) => r,
                        _ => return ended(id, "its run in the store cannot be read".into()),
                    };
                    match stored.status {
                        DurableStatus::Succeeded => {
                            let outcome = stored
                                .outcome
                                .as_deref()
                                .and_then(|o| serde_json::from_str::<Outcome>(o).ok());
                            return match outcome {
                                Some(outcome) => Some(Finished {
                                    row: number,
                                    run_id: id,
                                    outcome,
                                    skipped: true,
                                }),
                                None => ended(id, "its run in the store has no outcome".into()),
                            };
                        }
                        DurableStatus::Failed | DurableStatus::Canceled => {
                            attempt += 1;
                            if attempt > MAX_ATTEMPTS {
                                return ended(
                                    id,
                                    format!("the row's run failed {MAX_ATTEMPTS} times"),
                                );
                            }
                            created = runs
                                .create(
                                    &fresh_id,
                                    self.flow,
                                    &row.state,
                                    now,
                                    Some(self.key(&row, attempt)),
                                    &sealed,
                                )
                                .await;
                        }
                        DurableStatus::Running | DurableStatus::Waiting => {
                            resumed = Some(id);
                            break;
                        }
                    }
                }
                Err(e) => return ended(fresh_id, e),
            }
        }
        let (run_id, flow, state, why) = match resumed {
            None => (fresh_id, None, row.state, None),
            Some(id) => {
                if let Err(e) = runs.claim(&id).await {
                    return ended(id, e);
                }
                match runs.load(&id).await {
                    Ok(r) => (
                        id,
                        Some(r.flow),
                        r.state,
                        Some("the batch was run again".to_string()),
                    ),
                    Err(e) => return ended(id, e),
                }
            }
        };
        let _held = runs.hold(&run_id);
        // A memo seals a value again when it is not the one it remembers, so
        // a run taken up from the store may go on with it too.
        let checkpoints = runs.checkpoints_sealed(&run_id, sealed);
        let flow = flow.as_ref().unwrap_or(self.flow);
        let system = SystemClock::quiet(now);
        let Route::Real(transport) = &self.route else {
            return ended(run_id, "a dry run is not durable".into());
        };
        let mut spans = crate::run::otel::Live::new();
        let mut observer = |e: &TraceEvent| {
            events(number, e);
            if let Some(s) = &mut spans {
                s.event(e);
            }
        };
        let engine = Engine {
            run_id: run_id.clone(),
            flow,
            clock: &system,
            transport: *transport,
            dry_run: false,
            durable: Some(Durable {
                resumed: why,
                ..Durable::new(&checkpoints)
            }),
            stop: Some(self.stop),
            tokens: Some(&self.tokens),
            traced: true,
            // A durable row's run is signalled through the store.
            signals: Some(runs),
        };
        let result = engine.run(state, &mut observer).await;
        Some(Finished {
            row: number,
            run_id,
            outcome: result.outcome,
            skipped: false,
        })
    }
}

/// A durable row with its run made (or found) in the store.
struct Made {
    row: Row,
    /// The run's id, when its first key made one.
    id: String,
    /// When it was made: its run's clock starts there.
    now: SystemTime,
    first: Result<Created, String>,
    /// Its secrets as its creation sealed them.
    sealed: Memo,
}
