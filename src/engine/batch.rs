//! Many runs of one flow in one process (`handoff run --each`): one runtime,
//! one HTTP client and its connection pool, at most `jobs` runs at a time.
//! A run's failure never stops the others; a stop (Ctrl-C) starts no new
//! run and lets each run in flight end its current step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use futures_util::StreamExt;

use crate::clock::{Clock, SystemClock, VirtualClock};
use crate::engine::Engine;
use crate::flow::Flow;
use crate::mock::{Mock, MockTransport};
use crate::state::RunState;
use crate::trace::{Outcome, TraceEvent};
use crate::transport::Transport;

/// One run to make: its row's number (from 1) and its starting state.
pub struct Row {
    pub number: usize,
    pub state: RunState,
}

/// How one row's run ended.
pub struct Finished {
    pub row: usize,
    pub run_id: String,
    pub outcome: Outcome,
}

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
}

impl Batch<'_> {
    /// Runs every row, `jobs` at a time, handing each event to `events` and
    /// each ending to `finished` as they happen. Rows not started when the
    /// batch was stopped are left out.
    pub async fn run(
        &self,
        rows: Vec<Row>,
        events: &(dyn Fn(usize, &TraceEvent) + Sync),
        finished: &(dyn Fn(Finished) + Sync),
    ) {
        futures_util::stream::iter(rows)
            .take_while(|_| std::future::ready(!self.stop.load(Ordering::Relaxed)))
            .map(|row| async move {
                let number = row.number;
                let done = self.one(row, events).await;
                finished(Finished {
                    row: number,
                    run_id: done.0,
                    outcome: done.1,
                });
            })
            .buffer_unordered(self.jobs.max(1))
            .collect::<Vec<()>>()
            .await;
    }

    async fn one(
        &self,
        row: Row,
        events: &(dyn Fn(usize, &TraceEvent) + Sync),
    ) -> (String, Outcome) {
        let now = SystemTime::now();
        let run_id = crate::trace::new_run_id(now);
        let number = row.number;
        let mut observer = |e: &TraceEvent| events(number, e);
        let system = SystemClock::quiet(now);
        let virtual_clock = Arc::new(VirtualClock::new(now));
        let mock;
        let (clock, transport, dry_run): (&dyn Clock, &dyn Transport, bool) = match &self.route {
            Route::Real(t) => (&system, *t, false),
            Route::Dry(m) => {
                mock = MockTransport::new((*m).clone(), virtual_clock.clone());
                (&*virtual_clock, &mock, true)
            }
        };
        let engine = Engine {
            run_id: run_id.clone(),
            flow: self.flow,
            clock,
            transport,
            dry_run,
            durable: None,
            stop: Some(self.stop),
        };
        let result = engine.run(row.state, &mut observer).await;
        (run_id, result.outcome)
    }
}
