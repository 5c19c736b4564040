//! The validated flow: what [`crate::analyze`] produces and the engine runs.
//!
//! By the time a [`Flow`] exists, every `goto` is resolved to an index, every
//! template is compiled, and every field a step reads or writes is declared.

use std::sync::Arc;

use indexmap::IndexMap;
use minijinja::Environment;
use serde_json::Value;

use crate::fields::FieldType;
use crate::source::{Source, Span};
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
    /// Credentials written into the file itself (see [`crate::lint`]): the
    /// trace masks them like any secret.
    pub literal_secrets: Vec<String>,
    /// How an external event starts a run (`handoff serve`'s hooks).
    pub trigger: Option<crate::trigger::Trigger>,
    /// How the NWC steps get their bearer token, when the flow says.
    pub auth: Option<crate::auth::Auth>,
    /// Where the flow's secrets may be sent.
    pub destinations: Destinations,
}

/// Where a flow's secrets may be sent: origins the operator named, never
/// values a caller chose (see [`crate::language::analyze::reach`]).
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    /// Text fields that stay configuration for the whole run: no caller
    /// sets them and no step writes them. Their values' origins are trusted.
    pub config: Vec<String>,
    /// Origins fixed by the text of the NWC steps' base URLs and the token URL.
    pub nwc_literal: Vec<String>,
    /// Origins fixed by the text of any step's URL.
    pub literal: Vec<String>,
}

impl Destinations {
    /// Whether the `base_url` field is configuration: then its origin is NWC's.
    pub fn nwc_field(&self) -> bool {
        self.config.iter().any(|f| f == "base_url")
    }
}

#[derive(Debug, Clone)]
pub struct FieldDecl {
    pub name: String,
    pub ty: FieldType,
    /// Set by whoever starts a run (a caller, or the command line);
    /// required unless there is a default.
    pub input: bool,
    pub secret: bool,
    /// Configuration: read from this environment variable. Only the
    /// operator sets it; see [`FieldDecl::caller_settable`].
    pub env: Option<String>,
    /// An empty value is accepted even when the field is required or secret.
    pub allow_empty: bool,
    pub default: Option<Value>,
    pub description: Option<String>,
    pub span: Span,
}

impl FieldDecl {
    /// Whether a caller (the API, a hook, a batch row, a test case) may set
    /// it. An `env:` field is the operator's configuration: only the
    /// command line, which is the operator's, may set it besides.
    pub fn caller_settable(&self) -> bool {
        self.input
    }

    pub fn is_required(&self) -> bool {
        (self.input || self.env.is_some()) && self.default.is_none()
    }
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

/// The field `on_error` fills with what went wrong: `step`, `kind`, `status`,
/// `message` and `hint`. Declared by the analyzer when a step has `on_error`.
pub const ERROR_FIELD: &str = "error";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Step(usize),
    /// `goto: end`: the run ends successfully.
    End,
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
