//! The validated flow: what [`crate::language::analyze`] produces and the engine runs.
//!
//! By the time a [`Flow`] exists, every `goto` is resolved to an index, every
//! template is compiled, and every field a step reads or writes is declared.

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
    pub source: Arc<Source>,
    pub fields: IndexMap<String, FieldDecl>,
    pub steps: Vec<Step>,
    pub max_steps: u64,
    /// Where templates render. Owned by the flow, so runs share no global state.
    pub env: Environment<'static>,
    /// Credentials written into the file itself (see [`crate::language::lint`]): the
    /// trace masks them like any secret.
    pub literal_secrets: Vec<String>,
    /// How an external event starts a run (`handoff serve`'s hooks).
    pub trigger: Option<crate::language::trigger::Trigger>,
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
}

impl Flow {
    pub fn target_name(&self, target: Target) -> &str {
        match target {
            Target::Step(i) => &self.steps[i].id,
            Target::End => "end",
        }
    }

    /// Where control goes when a step finishes normally.
    pub fn next_after(&self, index: usize) -> Target {
        match self.steps[index].goto {
            Some(t) => t,
            None if index + 1 < self.steps.len() => Target::Step(index + 1),
            None => Target::End,
        }
    }
}
