//! What the engine says to wherever a durable run is kept: a run's status,
//! each checkpoint as it goes ([`Checkpoints`]), and what the keeper answers
//! ([`Saved`]). The stores under [`crate::store`] implement it; the engine
//! never names one.

use serde::{Deserialize, Serialize};

use crate::run::clock::BoxFuture;
use crate::run::state::RunState;
use crate::run::trace::{Outcome, TraceEvent};

/// A durable run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurableStatus {
    /// In a timer, until `wake_at`.
    Waiting,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl DurableStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DurableStatus::Waiting => "waiting",
            DurableStatus::Running => "running",
            DurableStatus::Succeeded => "succeeded",
            DurableStatus::Failed => "failed",
            DurableStatus::Canceled => "canceled",
        }
    }

    pub fn parse(text: &str) -> Option<DurableStatus> {
        Some(match text {
            "waiting" => DurableStatus::Waiting,
            "running" => DurableStatus::Running,
            "succeeded" => DurableStatus::Succeeded,
            "failed" => DurableStatus::Failed,
            "canceled" => DurableStatus::Canceled,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            DurableStatus::Succeeded | DurableStatus::Failed | DurableStatus::Canceled
        )
    }
}

/// What the store says after a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Saved,
    /// Saved, and the run let go (see [`Progress::leaves`]): this process
    /// holds it no more.
    Released,
    /// The run was canceled meanwhile: the checkpoint was not applied, and
    /// the run should stop.
    Canceled,
    /// Another process holds the run now (this one's lease ran out): the
    /// checkpoint was not applied, and this process must stop.
    Lost,
}

/// Where a durable run's progress goes.
pub trait Checkpoints: Send + Sync {
    fn save<'a>(&'a self, progress: Progress<'a>) -> BoxFuture<'a, Result<Saved, String>>;
}

/// One checkpoint: the state, where the run is, and the events since the last.
pub struct Progress<'a> {
    pub state: &'a RunState,
    pub status: DurableStatus,
    /// The step the run is at: to run next, under way, or waiting in.
    pub step: Option<&'a str>,
    pub outcome: Option<&'a Outcome>,
    pub events: Vec<TraceEvent>,
    /// Only a `for_each`'s progress (and the event count) changed since the
    /// last checkpoint: the keeper need not write the whole state again.
    pub only_each: bool,
    /// The run leaves this process with this checkpoint (it waits as a row,
    /// for any worker to wake): the keeper may let go of its hold on the run
    /// in the same write, and says so in [`Saved::Released`].
    pub leaves: bool,
}
