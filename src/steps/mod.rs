//! Step kinds: one file each, behind the closed [`StepKind`] enum.
//!
//! Each kind has a `parse` (from YAML nodes, reporting problems through the
//! [`Analyzer`]) and a `run` (against a [`StepCx`], with the request
//! machinery of [`crate::run::http`]). Adding a kind means adding
//! a file and a variant; the compiler then points at every `match` that still
//! needs to handle it.

mod call;
mod decision;
mod deserialize_id;
mod end;
mod fail;
mod for_each;
mod get_tasks;
mod http;
mod log;
mod patch_task;
mod set;
mod set_header;
mod timer;
mod wait_for;

use std::collections::BTreeSet;

use crate::language::analyzer::Analyzer;
use crate::language::fields::FieldType;
use crate::language::raw::Node;
use crate::language::target::Target;
use crate::language::template::Template;
use crate::run::step::{Next, StepCx, StepError};

pub use call::Call;
pub use decision::Decision;
pub use deserialize_id::DeserializeId;
pub use end::End;
pub use fail::Fail;
pub use for_each::{ForEach, Tolerance};
pub use get_tasks::GetTasks;
pub use http::Http;
pub use log::Log;
pub use patch_task::PatchTask;
pub use set::Set;
pub use set_header::SetHeader;
pub use timer::Timer;
pub use wait_for::WaitFor;

/// Every kind's name, as written in a flow.
pub const KINDS: [&str; 14] = [
    "set_header",
    "get_tasks",
    "deserialize_id",
    "patch_task",
    "decision",
    "timer",
    "wait_for",
    "for_each",
    "set",
    "http",
    "call",
    "log",
    "fail",
    "end",
];

// Steps are built once per flow and never moved in a hot loop, so variant size does not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum StepKind {
    SetHeader(SetHeader),
    GetTasks(GetTasks),
    DeserializeId(DeserializeId),
    PatchTask(PatchTask),
    Decision(Decision),
    Timer(Timer),
    WaitFor(WaitFor),
    ForEach(ForEach),
    Set(Set),
    Http(Http),
    Call(Call),
    Log(Log),
    Fail(Fail),
    End(End),
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::SetHeader(_) => "set_header",
            StepKind::GetTasks(_) => "get_tasks",
            StepKind::DeserializeId(_) => "deserialize_id",
            StepKind::PatchTask(_) => "patch_task",
            StepKind::Decision(_) => "decision",
            StepKind::Timer(_) => "timer",
            StepKind::WaitFor(_) => "wait_for",
            StepKind::ForEach(_) => "for_each",
            StepKind::Set(_) => "set",
            StepKind::Http(_) => "http",
            StepKind::Call(_) => "call",
            StepKind::Log(_) => "log",
            StepKind::Fail(_) => "fail",
            StepKind::End(_) => "end",
        }
    }

    /// Parses the value under the kind's key. `None` means problems were reported.
    pub fn parse(kind: &str, cx: &mut Analyzer, body: &Node) -> Option<StepKind> {
        Some(match kind {
            "set_header" => StepKind::SetHeader(SetHeader::parse(cx, body)?),
            "get_tasks" => StepKind::GetTasks(GetTasks::parse(cx, body)?),
            "deserialize_id" => StepKind::DeserializeId(DeserializeId::parse(cx, body)?),
            "patch_task" => StepKind::PatchTask(PatchTask::parse(cx, body)?),
            "decision" => StepKind::Decision(Decision::parse(cx, body)?),
            "timer" => StepKind::Timer(Timer::parse(cx, body)?),
            "wait_for" => StepKind::WaitFor(WaitFor::parse(cx, body)?),
            "for_each" => StepKind::ForEach(ForEach::parse(cx, body)?),
            "set" => StepKind::Set(Set::parse(cx, body)?),
            "http" => StepKind::Http(Http::parse(cx, body)?),
            "call" => StepKind::Call(Call::parse(cx, body)?),
            "log" => StepKind::Log(Log::parse(cx, body)?),
            "fail" => StepKind::Fail(Fail::parse(cx, body)?),
            "end" => StepKind::End(End::parse(cx, body)?),
            _ => return None,
        })
    }

    /// What goes under a kind's name, as the analyser checks it and the JSON
    /// Schema describes it.
    pub fn body_of(kind: &str) -> Option<crate::language::keys::Body> {
        use crate::language::keys::Body;
        Some(match kind {
            "set_header" => Body::Keys(set_header::KEYS),
            "get_tasks" => Body::Keys(get_tasks::KEYS),
            "deserialize_id" => Body::Keys(deserialize_id::KEYS),
            "patch_task" => Body::Keys(patch_task::KEYS),
            "decision" => Body::Branches,
            "timer" => Body::Keys(timer::KEYS),
            "wait_for" => Body::Keys(wait_for::KEYS),
            "for_each" => Body::Keys(for_each::KEYS),
            "set" => Body::Assignments,
            "http" => Body::Keys(http::KEYS),
            "call" => Body::TextOrKeys(call::KEYS),
            "log" | "fail" => Body::Text,
            "end" => Body::TextOrNull,
            _ => return None,
        })
    }

    /// What a kind does, in a line, for editors' hover help.
    pub fn doc(kind: &str) -> &'static str {
        match kind {
            "set_header" => {
                "Adds a header to a `headers` field, such as `Authorization: Bearer …`."
            }
            "get_tasks" => {
                "Lists NWC tasks (`GET /workflows/v2/tasks`), following `nextLink` pages."
            }
            "deserialize_id" => {
                "Takes a property from the items of a JSON list, such as the task's id."
            }
            "patch_task" => {
                "Completes an NWC task with an outcome, through the service account's assignment."
            }
            "decision" => {
                "Ordered branches: the first `when` that holds is taken, else `otherwise`."
            }
            "timer" => "Waits a duration, or until a time; a dry run moves the virtual clock.",
            "wait_for" => {
                "Waits until another system signals the run, or a timeout; a waiting run costs no thread."
            }
            "for_each" => {
                "Runs a block of steps once per item of a list, some at a time, each item in fields of its own."
            }
            "set" => "Assigns fields from templates, each through its field's type.",
            "http" => "Any HTTP request.",
            "call" => {
                "One operation of an OpenAPI description under `sources:`, checked before it is sent."
            }
            "log" => "Writes a line to the trace.",
            "fail" => "Ends the run as failed, with this reason.",
            "end" => "Ends the run as succeeded, with an optional reason.",
            _ => "",
        }
    }

    /// The named outputs a kind offers to `output:`, with their types.
    pub fn outputs(kind: &str) -> &'static [(&'static str, FieldType)] {
        match kind {
            "get_tasks" => get_tasks::OUTPUTS,
            "deserialize_id" => deserialize_id::OUTPUTS,
            "patch_task" => patch_task::OUTPUTS,
            "http" => http::OUTPUTS,
            "call" => call::OUTPUTS,
            "for_each" => for_each::OUTPUTS,
            "wait_for" => wait_for::OUTPUTS,
            _ => &[],
        }
    }

    /// Targets other than the step's own `goto` (a decision's branches).
    pub fn branch_targets(&self) -> Vec<Target> {
        match self {
            StepKind::Decision(d) => d.targets(),
            StepKind::WaitFor(w) => vec![w.on_timeout],
            _ => Vec::new(),
        }
    }

    /// Whether control can fall through to the next step (or `goto`).
    pub fn continues(&self) -> bool {
        match self {
            StepKind::Fail(_) | StepKind::End(_) => false,
            StepKind::Decision(d) => d.otherwise.is_none(),
            _ => true,
        }
    }

    /// Fields the step writes from templates, with what those templates read:
    /// how secrecy spreads from field to field.
    pub fn writes(&self) -> Vec<(&str, BTreeSet<String>)> {
        match self {
            StepKind::SetHeader(s) => vec![(s.into.as_str(), s.reads())],
            StepKind::DeserializeId(s) => vec![(s.into.as_str(), s.reads())],
            StepKind::Set(s) => s.writes(),
            StepKind::ForEach(s) => vec![(s.item.as_str(), s.reads())],
            StepKind::WaitFor(s) => s.writes(),
            _ => Vec::new(),
        }
    }

    /// Whether the step sends a request that must not be sent twice: a
    /// durable run marks it in flight first, and does not re-send it after a
    /// restart.
    pub fn unrepeatable(&self) -> bool {
        match self {
            StepKind::Http(s) => !s.repeatable(),
            StepKind::Call(s) => !s.repeatable(),
            _ => false,
        }
    }

    /// Whether the step only reads and writes the run's own fields: it sends
    /// nothing, waits for nothing and ends nothing. A durable run need not
    /// checkpoint after it: a restart from the last checkpoint computes it
    /// again, and nothing outside the run saw it the first time.
    pub fn effect_free(&self) -> bool {
        matches!(
            self,
            StepKind::SetHeader(_)
                | StepKind::DeserializeId(_)
                | StepKind::Decision(_)
                | StepKind::Set(_)
                | StepKind::Log(_)
        )
    }

    /// Whether the step's only effect outside the run is the requests it
    /// sends. A durable run need not checkpoint after it: its answers are
    /// put on record before the run's next request leaves (or at its next
    /// checkpoint), so a restart never sends again what was answered.
    pub fn sends_requests(&self) -> bool {
        matches!(
            self,
            StepKind::GetTasks(_) | StepKind::PatchTask(_) | StepKind::Http(_) | StepKind::Call(_)
        )
    }

    /// Whether the step puts a durable run's held answers on record itself
    /// before anything it does reaches outside: at each request it sends
    /// (see [`StepKind::sends_requests`]), as it starts to wait, or as it ends
    /// the run. Before any other step (a `for_each`, whose items send on
    /// their own) the engine checkpoints them first.
    pub fn keeps_held_answers(&self) -> bool {
        self.effect_free()
            || self.sends_requests()
            || matches!(
                self,
                StepKind::Timer(_) | StepKind::WaitFor(_) | StepKind::Fail(_) | StepKind::End(_)
            )
    }

    /// Whether the step sends the flow's managed token (`auth:`).
    pub fn uses_auth(&self) -> bool {
        match self {
            StepKind::GetTasks(_) | StepKind::PatchTask(_) => true,
            StepKind::Http(s) => s.auth,
            StepKind::Call(s) => s.uses_auth(),
            _ => false,
        }
    }

    /// Templates that end up in a URL, unless the step explicitly allows secrets there.
    pub fn url_templates(&self) -> Vec<&Template> {
        match self {
            StepKind::GetTasks(s) => s.url_templates(),
            StepKind::PatchTask(s) => s.url_templates(),
            StepKind::Http(s) if !s.allow_secret_in_url => s.url_templates(),
            StepKind::Call(s) => s.url_templates(),
            _ => Vec::new(),
        }
    }

    /// Templates that decide which host a request goes to.
    pub fn origin_templates(&self) -> Vec<&Template> {
        match self {
            StepKind::GetTasks(s) => vec![&s.base_url],
            StepKind::PatchTask(s) => vec![&s.base_url],
            StepKind::Http(s) => vec![&s.url],
            StepKind::Call(s) => vec![&s.source.server],
            _ => Vec::new(),
        }
    }

    /// The block a `for_each` runs, by its index in the flow's blocks.
    pub fn block(&self) -> Option<usize> {
        match self {
            StepKind::ForEach(s) => Some(s.block),
            _ => None,
        }
    }

    /// Whether the step talks to NWC itself, where the managed token belongs.
    pub fn is_nwc(&self) -> bool {
        matches!(self, StepKind::GetTasks(_) | StepKind::PatchTask(_))
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        match self {
            StepKind::SetHeader(s) => s.run(cx).await,
            StepKind::GetTasks(s) => s.run(cx).await,
            StepKind::DeserializeId(s) => s.run(cx).await,
            StepKind::PatchTask(s) => s.run(cx).await,
            StepKind::Decision(s) => s.run(cx).await,
            StepKind::Timer(s) => s.run(cx).await,
            StepKind::ForEach(s) => s.run(cx).await,
            StepKind::WaitFor(s) => s.run(cx).await,
            StepKind::Set(s) => s.run(cx).await,
            StepKind::Http(s) => s.run(cx).await,
            StepKind::Call(s) => s.run(cx).await,
            StepKind::Log(s) => s.run(cx).await,
            StepKind::Fail(s) => s.run(cx).await,
            StepKind::End(s) => s.run(cx).await,
        }
    }
}
