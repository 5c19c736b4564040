//! A run's state as plain, serialisable data.
//!
//! Everything a run needs to go on from where it is: the field values, which
//! of them hold secrets, the current step and the counters. Nothing here
//! points into the engine, so a state can later be saved and resumed.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How many recent steps are kept to name a loop when the budget runs out.
const RECENT: usize = 64;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunState {
    /// Shared with a render's [`Scope`](crate::language::template::Scope), so a template
    /// reads the fields without copying them; a write copies only while a
    /// scope still holds them, which is never between steps.
    pub fields: Arc<IndexMap<String, Value>>,
    /// Fields whose value is secret: declared so, or derived from a secret.
    pub secret: BTreeSet<String>,
    /// The index of the step to run next.
    pub pc: usize,
    pub steps_taken: u64,
    /// How many times each step has started, by index.
    pub visits: Vec<u64>,
    /// The most recent step indexes, newest last.
    pub recent: VecDeque<usize>,
    /// In a timer until then (Unix milliseconds): a durable run resumes the wait.
    #[serde(default)]
    pub wake_at_ms: Option<i64>,
    /// How long the timer the run waits in lasts, to report it whole when
    /// the wait ends in another process.
    #[serde(default)]
    pub timer_ms: Option<u64>,
    /// The step whose request, not safe to send twice, was about to go out.
    #[serde(default)]
    pub in_flight: Option<usize>,
    /// The last trace event's number, so a resumed run numbers on from it.
    #[serde(default)]
    pub last_seq: u64,
}

impl RunState {
    pub fn enter(&mut self, index: usize) {
        self.steps_taken += 1;
        if let Some(v) = self.visits.get_mut(index) {
            *v += 1;
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(index);
    }

    /// The cycle that led back to `index`, oldest first, when there is one.
    pub fn loop_ending_at(&self, index: usize) -> Option<Vec<usize>> {
        let recent: Vec<usize> = self.recent.iter().copied().collect();
        let last = recent.iter().rposition(|&i| i == index)?;
        let prev = recent[..last].iter().rposition(|&i| i == index)?;
        Some(recent[prev..=last].to_vec())
    }

    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    pub fn set(&mut self, field: &str, value: Value) {
        Arc::make_mut(&mut self.fields).insert(field.to_string(), value);
    }

    /// What templates render in: every field by name, read lazily.
    pub fn scope(&self) -> Arc<crate::language::template::Scope> {
        crate::language::template::Scope::new(self.fields.clone())
    }
}
