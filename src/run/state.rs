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
    /// A request not idempotent (POST, PATCH) written to the store before
    /// it went out, and not answered yet: after a restart, it may have
    /// landed, and the resumed trace says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsettled: Option<Unsettled>,
    /// The last trace event's number, so a resumed run numbers on from it.
    #[serde(default)]
    pub last_seq: u64,
    /// The W3C `traceparent` the run was started with: its trace joins the
    /// caller's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Who started the run, when the trace should say so: a retry from the
    /// run page names the run it retries and who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// A `for_each` under way: which items finished, so a resumed run does
    /// not run them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub each: Option<Box<Each>>,
    /// A `wait_for` under way: the signal it waits for, until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Box<Wait>>,
    /// How many waits for each signal have ended: a resume URL names the
    /// wait it is for, so it cannot resume a later one.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub waits: std::collections::BTreeMap<String, u64>,
}

/// A `wait_for` under way.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Wait {
    pub signal: String,
    /// Which wait for this signal it is, from 0.
    pub n: u64,
    /// When it times out (Unix milliseconds).
    pub until_ms: i64,
    /// How it ended, once it has: what the step goes on with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Waited>,
}

impl Wait {
    /// The wait's name in a store and in a resume URL: `approval#0`.
    pub fn key(&self) -> String {
        format!("{}#{}", self.signal, self.n)
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Waited {
    /// The signal's data, and how it came: `api`, `url`, `cli` or `mock`.
    Signal {
        data: Value,
        via: String,
    },
    TimedOut,
}

/// A `for_each`'s progress through its items.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Each {
    /// The `for_each` step's id.
    pub step: String,
    /// How many items the list had.
    pub total: usize,
    /// The finished items, a bit each.
    pub done: Vec<u64>,
    pub succeeded: u64,
    pub failed: u64,
    /// Items noted as started before they did (their block sends what is
    /// not safe to send twice): after a restart, any not done is in doubt.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub running: BTreeSet<usize>,
    /// Each item's result, by index, when the flow collects them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<Value>>,
    /// A result was built from a secret: the results are sealed in a store.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub results_secret: bool,
    /// How many items gave each result, when it is text, a number or a boolean.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub counts: IndexMap<String, u64>,
}

impl Each {
    pub fn new(step: &str, total: usize, collect: bool) -> Each {
        Each {
            step: step.to_string(),
            total,
            done: vec![0; total.div_ceil(64)],
            results: collect.then(|| vec![Value::Null; total]),
            ..Each::default()
        }
    }

    pub fn is_done(&self, index: usize) -> bool {
        self.done
            .get(index / 64)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    /// Notes an item finished: with its result when it succeeded, and
    /// whether that derives from a secret (then it is counted as `mask`).
    pub fn finish(&mut self, index: usize, result: Result<(Value, bool), ()>, mask: &str) {
        if let Some(w) = self.done.get_mut(index / 64) {
            *w |= 1 << (index % 64);
        }
        self.running.remove(&index);
        match result {
            Ok((value, tainted)) => {
                self.succeeded += 1;
                self.results_secret |= tainted;
                let key = match &value {
                    _ if tainted => Some(mask.to_string()),
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                };
                if let Some(key) = key {
                    *self.counts.entry(key).or_insert(0) += 1;
                }
                if let Some(slot) = self.results.as_mut().and_then(|r| r.get_mut(index)) {
                    *slot = value;
                }
            }
            Err(()) => self.failed += 1,
        }
    }

    /// How many items finished.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed
    }
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

/// A request written ahead of sending: its event's number, method and URL
/// (as the trace shows it, secrets masked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unsettled {
    pub seq: u64,
    pub method: String,
    pub url: String,
}
