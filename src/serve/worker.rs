//! The worker: every run is a task on one runtime while it takes steps, and
//! only a row while it waits. A timer ends the run's turn (the engine
//! checkpoints it as `waiting` with its `wake_at` and gives up its lease);
//! the scheduler wakes it when that time comes, in this process or, after a
//! restart, in the next one.
//!
//! The scheduler asks the store what is due: waiting runs whose `wake_at`
//! has passed, and running runs that nobody holds (this process was stopped
//! in the middle of them). It sleeps until the next `wake_at`, or until a run
//! is started or suspended here, and at least once a second.

use crate::serve::log::{Level, Log};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};

use crate::engine::checkpoint::Checkpoints;
use crate::engine::checkpoint::DurableStatus;
use crate::engine::checkpoint::Progress;
use crate::engine::checkpoint::Saved;
use crate::engine::{Durable, Engine};
use crate::language::flow::Flow;
use crate::run::clock::unix_ms;
use crate::run::clock::{BoxFuture, SystemClock};
use crate::run::otel::spans::Assembler;
use crate::run::state::RunState;
use crate::run::trace::{EventKind, RunStatus, TraceEvent};
use crate::run::transport::Transport;
use crate::serve::metrics::Metrics;
use crate::store::StoredRun;
use crate::store::durable::{DurableRuns, is_gone, pinned_flow};
use crate::store::seal::Memo;

/// How many due runs the scheduler takes at a time.
const BATCH: u32 = 256;
/// The longest the scheduler sleeps: runs another worker leaves behind are
/// found within this.
const POLL: Duration = Duration::from_secs(1);
/// The shortest: a run due but held elsewhere is not asked about in a loop.
const MIN_SLEEP: Duration = Duration::from_millis(10);

pub struct Worker {
    pub runs: DurableRuns,
    pub transport: Arc<dyn Transport>,
    pub metrics: Arc<Metrics>,
    /// Set on SIGTERM: runs stop at their next checkpoint, nothing new starts.
    pub stop: AtomicBool,
    /// Bumped after every checkpoint, for trace followers.
    pub changed: watch::Sender<u64>,
    /// Runs this process is running now, each with whether the scheduler
    /// took it again meanwhile (one that waits as a row is due before its
    /// turn has quite ended): such a run goes on once that turn has.
    active: Mutex<HashMap<String, bool>>,
    /// Flows by version (hash), so a waking run does not parse its flow again.
    pinned: Mutex<HashMap<String, Arc<Flow>>>,
    /// Something for the scheduler to look at: a run started or suspended.
    nudge: Notify,
    /// The last active run ended.
    idle: Notify,
    /// App tokens every run shares: one fetch per client, not one per run.
    tokens: crate::run::tokens::TokenCache,
    log: bool,
    /// Resume URLs for the runs' waits, and their check.
    pub resume: crate::serve::resume::ResumeUrls,
    /// When this process started: a timer set before then was set by a
    /// process that has since stopped.
    started_ms: i64,
    /// Where its lines go, as text or JSON.
    pub journal: Arc<Log>,
    /// Runs taking steps at once, at most (`--max-running`): a run beyond
    /// waits its turn, and the scheduler takes no more due runs than there
    /// are places, so thousands of retries cannot crowd out new runs.
    running: Option<Arc<tokio::sync::Semaphore>>,
}

/// The longest a run's turn waits for its spans to be exported and marked.
const EXPORT_WAIT: Duration = Duration::from_secs(2);

/// The worker's lines' target, for `HANDOFF_LOG`.
const WORKER: &str = "handoff::serve::worker";

/// How a run's turn begins.
pub enum Entry {
    /// Just created: its first step, and its secrets as its creation
    /// sealed them.
    Fresh(Arc<Flow>, Box<RunState>, Memo),
    /// From the store: a timer that is due, or a run left running.
    Stored,
    /// Due, and claimed for this process by the scheduler: as it was before.
    Taken(Box<StoredRun>),
}

impl Worker {
    pub fn new(
        runs: DurableRuns,
        transport: Arc<dyn Transport>,
        metrics: Arc<Metrics>,
        log: bool,
        resume: crate::serve::resume::ResumeUrls,
        journal: Arc<Log>,
        max_running: Option<usize>,
    ) -> Arc<Worker> {
        Arc::new(Worker {
            runs,
            transport,
            metrics,
            stop: AtomicBool::new(false),
            changed: watch::channel(0).0,
            active: Mutex::new(HashMap::new()),
            pinned: Mutex::new(HashMap::new()),
            nudge: Notify::new(),
            idle: Notify::new(),
            tokens: crate::run::tokens::TokenCache::default(),
            log,
            resume,
            started_ms: unix_ms(SystemTime::now()),
            journal,
            running: max_running.map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
        })
    }

    pub fn active(&self) -> usize {
        self.active.lock().map_or(0, |a| a.len())
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn say(&self, line: String) {
        if self.log {
            self.journal.info(WORKER, &line);
        }
    }

    /// A line about one run, which JSON logs name it, its flow and its
    /// trace in.
    pub fn say_run(&self, run: &str, flow: &str, trace: &[u8; 16], line: String) {
        if self.log {
            self.journal
                .line(Level::Info, WORKER, &line, Some((run, flow, trace)));
        }
    }

    /// A line an operator alerts on: written even with `--quiet`.
    pub fn warn(&self, line: String) {
        self.journal.warn(WORKER, &line);
    }

    /// Frees the runs that a process now gone (killed, say) still holds, so
    /// the scheduler takes them at once instead of when their leases run out.
    pub async fn adopt_orphans(&self) -> Result<usize, String> {
        let mut adopted = 0;
        let leases = self.runs.store.leases().await.map_err(|e| e.0)?;
        for (id, lease) in leases {
            if lease.owner != self.runs.owner()
                && is_gone(&lease.owner)
                && matches!(self.runs.store.release(&id, &lease.owner).await, Ok(true))
            {
                adopted += 1;
            }
        }
        Ok(adopted)
    }

    /// Starts a run's turn as a task, unless this process runs it already.
    /// `false` when the run is under way here already: a run the scheduler
    /// took goes on again once that turn ends.
    pub fn spawn(self: &Arc<Self>, id: String, entry: Entry) -> bool {
        {
            let Ok(mut active) = self.active.lock() else {
                return false;
            };
            if let Some(again) = active.get_mut(&id) {
                *again |= matches!(entry, Entry::Taken(_));
                return false;
            }
            active.insert(id.clone(), false);
        }
        let worker = self.clone();
        tokio::spawn(async move {
            // A place among the runs taking steps, when they are capped.
            let mut waited = false;
            let _place = match &worker.running {
                Some(places) => match places.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        waited = true;
                        places.clone().acquire_owned().await.ok()
                    }
                },
                None => None,
            };
            let entry = match entry {
                // A new run that waited its turn may have outlived its lease:
                // it is this process's to run only if it can claim it still.
                Entry::Fresh(..) | Entry::Taken(_)
                    if waited && worker.runs.claim(&id).await.is_err() =>
                {
                    Entry::Stored
                }
                e => e,
            };
            let parked = worker.turn(&id, entry).await;
            let (now_idle, again) = match worker.active.lock() {
                Ok(mut active) => {
                    let again = active.remove(&id).unwrap_or(false);
                    (active.is_empty(), again)
                }
                Err(_) => (true, false),
            };
            if again && !worker.stopping() {
                worker.spawn(id, Entry::Stored);
                return;
            }
            // A suspended run has a new wake_at; a finished one frees a place,
            // when places are counted. Otherwise the scheduler has nothing new
            // to look for (and a look is a query).
            if parked || worker.running.is_some() {
                worker.nudge.notify_one();
            }
            if now_idle {
                worker.idle.notify_waiters();
            }
        });
        true
    }

    /// One turn of a run: from its entry until it ends, waits in a timer, or
    /// stops for a shutdown. `true` when it was left for a later turn.
    async fn turn(self: &Arc<Self>, id: &str, entry: Entry) -> bool {
        let mut sealed = Memo::default();
        let (flow, state, created, durable_entry) = match entry {
            Entry::Fresh(flow, state, memo) => {
                self.metrics.runs_started.fetch_add(1, Ordering::Relaxed);
                sealed = memo;
                (flow, *state, SystemTime::now(), DurableEntry::Fresh)
            }
            Entry::Stored => match self.take(id).await {
                Some(taken) => taken,
                None => return false,
            },
            Entry::Taken(run) => match self.go_on(*run) {
                Some(taken) => taken,
                None => return false,
            },
        };
        let _held = self.runs.hold(id);
        let trace = crate::run::otel::ids::TraceIds::new(
            id,
            state
                .traceparent
                .as_deref()
                .and_then(crate::run::otel::ids::Parent::parse),
        )
        .trace_id;
        // Spans come from what is checkpointed; a stored run's from its
        // stored events first, after those exported before.
        let spans = match durable_entry {
            DurableEntry::Fresh => crate::run::otel::assembler(id),
            _ => self.spans_from_store(id).await,
        };
        let checkpoints = Notifying {
            inner: self.runs.checkpoints_sealed(id, sealed),
            changed: &self.changed,
            spans: spans.map(Mutex::new),
            run: id,
            canceled: AtomicBool::new(false),
            released: AtomicBool::new(false),
        };
        let clock = SystemClock::quiet(created);
        let (resumed, woken) = match durable_entry {
            DurableEntry::Fresh => (None, false),
            DurableEntry::Woken => (None, true),
            DurableEntry::WokenAfterRestart(why) => (Some(why), true),
            DurableEntry::Resumed(why) => (Some(why), false),
        };
        let engine = Engine {
            run_id: id.to_string(),
            flow: &flow,
            clock: &clock,
            transport: &*self.transport,
            dry_run: false,
            durable: Some(Durable {
                checkpoints: &checkpoints,
                resumed,
                suspend_timers: true,
                woken,
            }),
            stop: Some(&self.stop),
            tokens: Some(&self.tokens),
            traced: true,
            signals: Some(&self.resume),
        };
        let metrics = self.metrics.clone();
        let mut observe = move |event: &TraceEvent| {
            if matches!(event.kind, EventKind::StepFinished { .. }) {
                metrics.steps.fetch_add(1, Ordering::Relaxed);
            }
        };
        let result = engine.run(state, &mut observe).await;
        if result.paused {
            // The spans so far are marked exported before another worker
            // may take the run and make them again (bounded: a collector
            // that does not answer does not hold the run).
            if let Some(e) = crate::run::otel::exporter() {
                let _ = tokio::time::timeout(EXPORT_WAIT, e.flush()).await;
            }
            // Waiting as a row, or stopped for a shutdown: any worker may take
            // it (a wait's checkpoint let go of it already, where it could).
            if !checkpoints.released.load(Ordering::Relaxed) {
                let _ = self.runs.store.release(id, self.runs.owner()).await;
            }
            if self.stopping() {
                self.say(format!(
                    "run {id} paused for the shutdown; it goes on at the next start"
                ));
            }
            return true;
        }
        if checkpoints.canceled.load(Ordering::Relaxed) {
            // The store ended the trace in the cancel: its spans from there.
            self.export_stored(id).await;
        }
        let o = &result.outcome;
        let status = match o.status {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
            RunStatus::Interrupted => "stopped",
        };
        // The reason was redacted by the engine; it names steps, not values.
        self.say_run(
            id,
            &flow.name,
            &trace,
            format!("run {id} ({}) {status}: {}", flow.name, o.reason),
        );
        false
    }

    /// A stored run's spans: its stored events made into spans again, and
    /// those not exported before sent; what is still open is kept for the
    /// events to come. `None` when traces are not exported.
    async fn spans_from_store(&self, id: &str) -> Option<Assembler> {
        let mut assembler = crate::run::otel::assembler(id)?;
        let run = self.runs.store.load(id).await.ok().flatten()?;
        let events = self.runs.store.events(id).await.ok()?;
        assembler.quiet_through(run.exported_seq);
        let mut ended = Vec::new();
        for text in events {
            if let Ok(event) = serde_json::from_str::<TraceEvent>(&text) {
                assembler.feed(&event, &mut ended);
            }
        }
        if let Some(e) = crate::run::otel::exporter() {
            e.send(id, ended, true);
        }
        Some(assembler)
    }

    /// Cancels a run as `by` (`the API`, `the run page`): the store ends its
    /// trace, followers hear of it, its last spans go out, and the log has
    /// its line. `false` when it had already ended.
    pub async fn cancel(&self, run: &StoredRun, by: &str) -> Result<bool, String> {
        let now = unix_ms(SystemTime::now());
        if !self
            .runs
            .store
            .cancel(&run.id, now, by)
            .await
            .map_err(|e| e.0)?
        {
            return Ok(false);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        self.export_stored(&run.id).await;
        self.say_run(
            &run.id,
            &run.flow,
            &crate::store::durable::trace_id(run),
            format!("run {} ({}) canceled: canceled by {by}", run.id, run.flow),
        );
        Ok(true)
    }

    /// Exports what a stored run's trace holds beyond its mark: after a
    /// cancel ended it in the store.
    pub async fn export_stored(&self, id: &str) {
        let _ = self.spans_from_store(id).await;
    }

    /// Takes a stored run for this process: loads it, claims it, and says
    /// how it goes on. `None` when it is not this process's to run now.
    async fn take(&self, id: &str) -> Option<(Arc<Flow>, RunState, SystemTime, DurableEntry)> {
        let run = self.runs.store.load(id).await.ok()??;
        if run.status.is_finished() {
            return None;
        }
        if let Err(e) = self.runs.claim(id).await {
            self.say(format!("run {id} is not taken: {e}"));
            return None;
        }
        self.go_on(run)
    }

    /// How a run this process has claimed goes on, from the run as it was
    /// before the claim (its lease says who held it): its flow, its state,
    /// when it began, and why it goes on. `None` when it cannot.
    fn go_on(&self, run: StoredRun) -> Option<(Arc<Flow>, RunState, SystemTime, DurableEntry)> {
        let id = run.id.as_str();
        let why = match (&run.lease, run.status) {
            // Set before this process started: the one that set it stopped
            // meanwhile, and the trace says so where the run goes on.
            (None, DurableStatus::Waiting) if run.updated_ms < self.started_ms => {
                DurableEntry::WokenAfterRestart(
                    "woken from its wait by a worker started after it began waiting (the worker that set it stopped)"
                        .into(),
                )
            }
            (None, DurableStatus::Waiting) => DurableEntry::Woken,
            // Parked by this very process (and taken again by its scheduler
            // before the turn that parked it had let go of it).
            (Some(lease), DurableStatus::Waiting) if lease.owner == self.runs.owner() => {
                DurableEntry::Woken
            }
            (Some(lease), _) if lease.until_ms < unix_ms(SystemTime::now()) => {
                DurableEntry::Resumed(
                    "its lease ran out (the process running it stopped answering)".into(),
                )
            }
            _ => DurableEntry::Resumed("the worker was restarted".into()),
        };
        let flow = match self.pinned(&run) {
            Ok(f) => f,
            Err(e) => {
                self.say(format!("run {id} cannot go on: {e}"));
                return None;
            }
        };
        let state = match self.runs.open_state(&run, &flow) {
            Ok(s) => s,
            Err(e) => {
                self.say(format!("run {id} cannot go on: {e}"));
                return None;
            }
        };
        if let (DurableEntry::Woken | DurableEntry::WokenAfterRestart(_), Some(wake)) =
            (&why, run.wake_at_ms)
        {
            self.metrics
                .timer_lag(unix_ms(SystemTime::now()).saturating_sub(wake));
        }
        let created = crate::run::clock::from_unix_ms(run.created_ms);
        Some((flow, state, created, why))
    }

    /// The version of the flow a run started with, parsed once per version.
    pub fn pinned(&self, run: &StoredRun) -> Result<Arc<Flow>, String> {
        if let Some(flow) = self
            .pinned
            .lock()
            .ok()
            .and_then(|p| p.get(&run.flow_hash).cloned())
        {
            return Ok(flow);
        }
        let flow = Arc::new(pinned_flow(run)?);
        if let Ok(mut p) = self.pinned.lock() {
            p.insert(run.flow_hash.clone(), flow.clone());
        }
        Ok(flow)
    }

    /// Remembers a flow version this process already parsed.
    pub fn pin(&self, hash: &str, flow: Arc<Flow>) {
        if let Ok(mut p) = self.pinned.lock() {
            p.insert(hash.to_string(), flow);
        }
    }

    /// Tells the scheduler to look again: a run was created or changed.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Wakes runs when they are due, until the worker stops.
    pub async fn schedule(self: Arc<Self>) {
        loop {
            if self.stopping() {
                return;
            }
            let now = unix_ms(SystemTime::now());
            // No more due runs than there are places for them.
            let room = self
                .running
                .as_ref()
                .map_or(BATCH, |p| (p.available_permits() as u32).min(BATCH));
            if room == 0 {
                tokio::select! {
                    _ = self.nudge.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            let due = match self.runs.take_due(room).await {
                Ok(due) => due,
                Err(e) => {
                    self.say(format!("the scheduler cannot read the store: {e}"));
                    Vec::new()
                }
            };
            let full = due.len() as u32 == room;
            let mut spawned = 0;
            for run in due {
                spawned += usize::from(self.spawn(run.id.clone(), Entry::Taken(Box::new(run))));
            }
            // Full of runs under way here already: not a reason to look at once.
            if full && spawned > 0 {
                tokio::task::yield_now().await;
                continue;
            }
            let next = self.runs.store.next_wake().await.ok().flatten();
            let wait = next.map_or(POLL, |at| {
                Duration::from_millis(at.saturating_sub(now).max(0) as u64).clamp(MIN_SLEEP, POLL)
            });
            // Another worker's news (a shared store's NOTIFY) wakes it too.
            let news = self.runs.store.changes();
            let other = async {
                match &news {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.nudge.notified() => {}
                _ = other => {}
            }
        }
    }

    /// Stops: no run starts a new step; waits up to `grace` for the steps in
    /// flight to end and checkpoint. `false` when some did not end in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        self.nudge.notify_one();
        self.changed.send_modify(|n| *n += 1);
        let idle = async {
            loop {
                let notified = self.idle.notified();
                if self.active() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(grace, idle).await.is_ok()
    }
}

enum DurableEntry {
    Fresh,
    Woken,
    /// Woken from a wait that another process, since stopped, began.
    WokenAfterRestart(String),
    Resumed(String),
}

/// Where the exporter marks how far each run's spans went: the store, so
/// the next process to take a run begins after the mark.
pub struct StoreMarks(pub Arc<dyn crate::store::Store>);

impl crate::run::otel::export::Marks for StoreMarks {
    fn exported(&self, marks: Vec<(String, u64)>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.0.mark_exported(&marks).await;
        })
    }
}

/// Checkpoints that tell trace followers something changed, and make the
/// spans of what was kept.
struct Notifying<'a> {
    inner: crate::store::durable::RunCheckpoints<'a>,
    changed: &'a watch::Sender<u64>,
    /// The run's spans, when traces are exported.
    spans: Option<Mutex<Assembler>>,
    run: &'a str,
    /// A checkpoint found the run canceled.
    canceled: AtomicBool,
    /// The run's last checkpoint let go of it (it waits as a row).
    released: AtomicBool,
}

impl Checkpoints for Notifying<'_> {
    fn save<'a>(&'a self, mut progress: Progress<'a>) -> BoxFuture<'a, Result<Saved, String>> {
        Box::pin(async move {
            // Only what the store kept becomes spans: a span is never made
            // of events a process lost, so none is made twice.
            let events = self.spans.as_ref().map(|_| progress.events.clone());
            // Spans are marked exported before another worker may take the
            // run: it is let go of after they are flushed, not here.
            progress.leaves &= self.spans.is_none();
            let saved = self.inner.save(progress).await;
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
            match saved {
                Ok(Saved::Canceled) => self.canceled.store(true, Ordering::Relaxed),
                Ok(Saved::Released) => self.released.store(true, Ordering::Relaxed),
                _ => {}
            }
            if let (Ok(Saved::Saved | Saved::Released), Some(spans), Some(events)) =
                (&saved, &self.spans, events)
                && let Some(exporter) = crate::run::otel::exporter()
            {
                let mut ended = Vec::new();
                if let Ok(mut assembler) = spans.lock() {
                    for event in &events {
                        assembler.feed(event, &mut ended);
                    }
                }
                exporter.send(self.run, ended, true);
            }
            saved
        })
    }
}
