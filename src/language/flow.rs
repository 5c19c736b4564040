//! The validated flow: what [`crate::language::analyze`] produces and the engine runs.
//!
//! By the time a [`Flow`] exists, every `goto` is resolved to an index, every
//! template is compiled, and every field a step reads or writes is declared.

use std::ops::Range;
use std::sync::Arc;

use indexmap::IndexMap;
use minijinja::Environment;

use crate::language::destinations::Destinations;
use crate::language::fields::FieldDecl;
use crate::language::source::{Source, Span};
use crate::language::target::Target;
use crate::steps::StepKind;

/// Default for `max_steps`: enough for a long poll loop, small enough to stop a
/// runaway one quickly.
pub const DEFAULT_MAX_STEPS: u64 = 1000;

pub struct Flow {
    pub name: String,
    pub description: Option<String>,
    /// How a run is named on the run page and by the API: a template over
    /// inputs that are not secret.
    pub title: Option<crate::language::template::Template>,
    pub source: Arc<Source>,
    pub fields: IndexMap<String, FieldDecl>,
    /// The flow's own steps first (`top_len` of them), then each block's.
    pub steps: Vec<Step>,
    /// How many of `steps` are the flow's own: control starts at the first
    /// and never enters a block except through its `for_each`.
    pub top_len: usize,
    /// The blocks of steps that `for_each` runs once per item.
    pub blocks: Vec<Block>,
    pub max_steps: u64,
    /// Where templates render. Owned by the flow, so runs share no global state.
    pub env: Environment<'static>,
    /// Credentials written into the file itself (see [`crate::language::lint`]): the
    /// trace masks them like any secret.
    pub literal_secrets: Vec<String>,
    /// How an external event starts a run (`handoff serve`'s hooks).
    pub trigger: Option<crate::language::trigger::Trigger>,
    /// When `handoff serve` starts a run on its own: cron slots.
    pub schedule: Option<crate::language::schedule::Schedule>,
    /// How the NWC steps get their bearer token, when the flow says.
    pub auth: Option<crate::language::auth::Auth>,
    /// Where the flow's secrets may be sent.
    pub destinations: Destinations,
}

#[derive(Debug)]
pub struct Step {
    pub id: String,
    pub span: Span,
    pub kind: StepKind,
    /// Where control goes after the step, when not the next one in the list.
    pub goto: Option<Target>,
    /// A step's named outputs mapped to the fields that receive them.
    pub output: IndexMap<String, String>,
    /// Where control goes when the step fails, instead of failing the run.
    pub on_error: Option<Target>,
    /// The block it belongs to, when it runs per item of a `for_each`.
    pub block: Option<usize>,
}

/// The steps a `for_each` runs once per item. Its steps' `goto`s stay inside
/// it, and `end` there ends the item, not the run.
#[derive(Debug)]
pub struct Block {
    /// The `for_each` step that runs it.
    pub owner: usize,
    /// Its steps' indexes in [`Flow::steps`].
    pub steps: Range<usize>,
    /// The field holding the item (`as:`).
    pub item: String,
    /// The fields an item owns: declared under the `for_each`, and `error`
    /// when a step of the block has `on_error`. Items write only these.
    pub locals: Vec<String>,
    /// The flow's fields the block reads: each item starts with a copy of
    /// these, not of every field (the list itself may be large).
    pub reads: Vec<String>,
    /// Whether a step of the block sends a request that is not safe to send
    /// twice: a durable run then notes each item before it starts.
    pub unrepeatable: bool,
}

/// A `call:` step and the operation it sends.
pub struct StepOperation<'a> {
    pub step: &'a str,
    /// `source.operationId`.
    pub name: &'a str,
    pub api: &'a crate::language::openapi::Api,
    /// The `operationId` in `api`.
    pub operation: &'a str,
}

impl Flow {
    pub fn target_name(&self, target: Target) -> &str {
        match target {
            Target::Step(i) => &self.steps[i].id,
            Target::End => "end",
        }
    }

    /// Where control goes when a step finishes normally: in a block, `End`
    /// is the end of the item.
    pub fn next_after(&self, index: usize) -> Target {
        let end = match self.steps[index].block {
            Some(b) => self.blocks[b].steps.end,
            None => self.top_len,
        };
        match self.steps[index].goto {
            Some(t) => t,
            None if index + 1 < end => Target::Step(index + 1),
            None => Target::End,
        }
    }

    /// The signals its `wait_for`s wait for, each once, in step order.
    pub fn signals(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for step in &self.steps {
            if let StepKind::WaitFor(w) = &step.kind
                && !out.contains(&w.signal.as_str())
            {
                out.push(&w.signal);
            }
        }
        out
    }

    /// Its `call:` steps: the step's id, the operation as the flow names it
    /// (`source.operationId`), its description, and its id there.
    pub fn operations(&self) -> Vec<StepOperation<'_>> {
        self.steps
            .iter()
            .filter_map(|step| match &step.kind {
                StepKind::Call(c) => Some(StepOperation {
                    step: &step.id,
                    name: &c.name,
                    api: &c.source.api,
                    operation: &c.operation,
                }),
                _ => None,
            })
            .collect()
    }

    /// The flow's own steps, without the blocks'.
    pub fn top(&self) -> &[Step] {
        &self.steps[..self.top_len]
    }
}
