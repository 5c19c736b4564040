//! Step kinds: one file each, behind the closed [`StepKind`] enum.
//!
//! Each kind has a `parse` (from YAML nodes, reporting problems through the
//! [`Analyzer`]) and a `run` (against a [`StepCx`]). Adding a kind means adding
//! a file and a variant; the compiler then points at every `match` that still
//! needs to handle it.

mod auth;
mod decision;
mod deserialize_id;
mod end;
mod fail;
mod get_tasks;
mod http;
mod log;
mod patch_task;
pub mod request;
mod set;
mod set_header;
mod timer;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use crate::analyzer::Analyzer;
use crate::clock::Clock;
use crate::fields::FieldType;
use crate::flow::{Flow, Step, Target};
use crate::raw::Node;
use crate::redact::MASK;
use crate::state::RunState;
use crate::template::{Scope, Template};
use crate::trace::{EventKind, Recorder};
use crate::transport::Transport;

pub use decision::Decision;
pub use deserialize_id::DeserializeId;
pub use end::End;
pub use fail::Fail;
pub use get_tasks::GetTasks;
pub use http::Http;
pub use log::Log;
pub use patch_task::PatchTask;
pub use set::Set;
pub use set_header::SetHeader;
pub use timer::Timer;

/// Every kind's name, as written in a flow.
pub const KINDS: [&str; 11] = [
    "set_header",
    "get_tasks",
    "deserialize_id",
    "patch_task",
    "decision",
    "timer",
    "set",
    "http",
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
    Set(Set),
    Http(Http),
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
            StepKind::Set(_) => "set",
            StepKind::Http(_) => "http",
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
            "set" => StepKind::Set(Set::parse(cx, body)?),
            "http" => StepKind::Http(Http::parse(cx, body)?),
            "log" => StepKind::Log(Log::parse(cx, body)?),
            "fail" => StepKind::Fail(Fail::parse(cx, body)?),
            "end" => StepKind::End(End::parse(cx, body)?),
            _ => return None,
        })
    }

    /// What goes under a kind's name, as the analyser checks it and the JSON
    /// Schema describes it.
    pub fn body_of(kind: &str) -> Option<crate::keys::Body> {
        use crate::keys::Body;
        Some(match kind {
            "set_header" => Body::Keys(set_header::KEYS),
            "get_tasks" => Body::Keys(get_tasks::KEYS),
            "deserialize_id" => Body::Keys(deserialize_id::KEYS),
            "patch_task" => Body::Keys(patch_task::KEYS),
            "decision" => Body::Branches,
            "timer" => Body::Keys(timer::KEYS),
            "set" => Body::Assignments,
            "http" => Body::Keys(http::KEYS),
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
            "set" => "Assigns fields from templates, each through its field's type.",
            "http" => "Any HTTP request.",
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
            _ => &[],
        }
    }

    /// Targets other than the step's own `goto` (a decision's branches).
    pub fn branch_targets(&self) -> Vec<Target> {
        match self {
            StepKind::Decision(d) => d.targets(),
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
            _ => Vec::new(),
        }
    }

    /// Whether the step sends a request that must not be sent twice: a
    /// durable run marks it in flight first, and does not re-send it after a
    /// restart.
    pub fn unrepeatable(&self) -> bool {
        match self {
            StepKind::Http(s) => !s.repeatable(),
            _ => false,
        }
    }

    /// Whether the step sends the flow's managed token (`auth:`).
    pub fn uses_auth(&self) -> bool {
        match self {
            StepKind::GetTasks(_) | StepKind::PatchTask(_) => true,
            StepKind::Http(s) => s.auth,
            _ => false,
        }
    }

    /// Templates that end up in a URL, unless the step explicitly allows secrets there.
    pub fn url_templates(&self) -> Vec<&Template> {
        match self {
            StepKind::GetTasks(s) => s.url_templates(),
            StepKind::PatchTask(s) => s.url_templates(),
            StepKind::Http(s) if !s.allow_secret_in_url => s.url_templates(),
            _ => Vec::new(),
        }
    }

    /// Templates that decide which host a request goes to.
    pub fn origin_templates(&self) -> Vec<&Template> {
        match self {
            StepKind::GetTasks(s) => vec![&s.base_url],
            StepKind::PatchTask(s) => vec![&s.base_url],
            StepKind::Http(s) => vec![&s.url],
            _ => Vec::new(),
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
            StepKind::Set(s) => s.run(cx).await,
            StepKind::Http(s) => s.run(cx).await,
            StepKind::Log(s) => s.run(cx).await,
            StepKind::Fail(s) => s.run(cx).await,
            StepKind::End(s) => s.run(cx).await,
        }
    }
}

/// What a step asks the engine to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// The step's `goto`, or the next step in the list.
    Continue,
    Goto(Target),
    /// Wait until then, then go on as `Continue`: the engine waits, so a
    /// durable run can be a row with `wake_at` meanwhile.
    WaitUntil(std::time::SystemTime),
    End(Option<String>),
    Fail(String),
}

/// What kind of failure a step met: what `on_error` hands the flow as
/// `error.kind`, so a flow can tell a timeout from a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server did not answer in time.
    Timeout,
    /// No connection could be made.
    Connect,
    /// The connection dropped mid-answer.
    Reset,
    /// The server answered a status the step does not accept.
    Status,
    /// The answer cannot be used: not JSON, the wrong shape, too large.
    Response,
    /// A template failed to render.
    Template,
    /// The task was already completed with another outcome.
    Conflict,
    /// Anything else the step checks: an empty id, a value of the wrong type.
    Step,
    /// The process stopped while a request that is not safe to repeat was in
    /// flight: it may have taken effect, and it is not sent again.
    InDoubt,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Reset => "reset",
            ErrorKind::Status => "status",
            ErrorKind::Response => "response",
            ErrorKind::Template => "template",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Step => "step",
            ErrorKind::InDoubt => "in_doubt",
        }
    }
}

/// A step that could not do its work. The message is redacted before it is
/// shown, but steps still avoid quoting values.
#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    pub kind: ErrorKind,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    pub message: String,
    pub hint: Option<String>,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> StepError {
        StepError {
            kind: ErrorKind::Step,
            status: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> StepError {
        self.hint = Some(hint.into());
        self
    }

    pub fn kind(mut self, kind: ErrorKind) -> StepError {
        self.kind = kind;
        self
    }

    pub fn status(mut self, status: u16) -> StepError {
        self.status = Some(status);
        self
    }
}

/// What a running step can see and touch.
pub struct StepCx<'a, 'r> {
    pub flow: &'a Flow,
    pub step: &'a Step,
    pub state: &'a mut RunState,
    pub clock: &'a dyn Clock,
    pub transport: &'a dyn Transport,
    pub rec: &'a mut Recorder<'r>,
    /// App tokens, shared with the other runs of a batch or a `serve`.
    pub tokens: &'a crate::tokens::TokenCache,
    /// Set while the managed token is fetched: its answer is a credential.
    pub fetching_token: bool,
}

impl StepCx<'_, '_> {
    pub fn emit(&mut self, kind: EventKind) {
        self.rec.emit(Some(&self.step.id), kind);
    }

    /// Whether a template mentions any field that holds a secret right now.
    pub fn mentions_secret(&self, template: &Template) -> bool {
        template
            .mentions
            .iter()
            .any(|r| self.state.secret.contains(r))
    }

    /// Renders a template; the flag says whether the result derives from a
    /// secret: the template read one while rendering, or mentions one.
    pub fn render(&mut self, template: &Template) -> Result<(Value, bool), StepError> {
        // What it reads, it mentions: the taint is the same either way.
        if let Some(value) = template
            .simple
            .as_ref()
            .and_then(|s| s.eval(&self.state.fields))
        {
            return Ok((value, self.mentions_secret(template)));
        }
        let scope = self.state.scope();
        self.render_in(template, &scope)
    }

    pub fn render_in(
        &mut self,
        template: &Template,
        scope: &Arc<Scope>,
    ) -> Result<(Value, bool), StepError> {
        let value = template.render(&self.flow.env, scope).map_err(|e| {
            StepError::new(format!(
                "template `{}` failed: {}",
                self.data(&template.source),
                self.data(&e)
            ))
            .kind(ErrorKind::Template)
        })?;
        let tainted =
            self.mentions_secret(template) || scope.read_any(|r| self.state.secret.contains(r));
        Ok((value, tainted))
    }

    pub fn render_text(&mut self, template: &Template) -> Result<(String, bool), StepError> {
        let (value, tainted) = self.render(template)?;
        Ok((crate::fields::display_text(&value), tainted))
    }

    /// Renders name → template pairs (a query, a form) to text, in order,
    /// each with whether it derives from a secret.
    pub fn render_pairs<K: ToString>(
        &mut self,
        pairs: &[(K, Template)],
    ) -> Result<Vec<(String, String, bool)>, StepError> {
        let mut out = Vec::with_capacity(pairs.len());
        for (name, template) in pairs {
            let (value, tainted) = self.render_text(template)?;
            out.push((name.to_string(), value, tainted));
        }
        Ok(out)
    }

    /// Data about to go into a message: every secret in it masked.
    pub fn data(&self, text: &str) -> String {
        self.rec.redactor.redact(text)
    }

    /// Writes a field, coercing to its type; a secret-derived value makes the
    /// field secret from then on. A secret field that receives a value not
    /// derived from a secret (an app token from a server) hunts it too.
    pub fn set_field(&mut self, field: &str, value: Value, tainted: bool) -> Result<(), StepError> {
        let decl = self
            .flow
            .fields
            .get(field)
            .ok_or_else(|| StepError::new(format!("field `{field}` is not declared")))?;
        // Quote what was got, unless it is secret; redacted, as it is data.
        // A JSON field takes anything, and a scalar is kept to quote only if
        // it fails: the loop's counter costs nothing here.
        let shows = !tainted
            && decl.ty != crate::fields::FieldType::Json
            && !self.state.secret.contains(field);
        let quoted = shows.then(|| match &value {
            Value::Number(_) | Value::Bool(_) | Value::Null => Err(value.clone()),
            Value::String(s) if s.len() <= 1024 => Err(value.clone()),
            other => Ok(crate::fields::quote(other)),
        });
        let value = decl.ty.coerce(value).map_err(|e| {
            let got = quoted
                .map(|q| {
                    let q = q.unwrap_or_else(|v| crate::fields::quote(&v));
                    format!(": {}", self.data(&q))
                })
                .unwrap_or_default();
            StepError::new(format!(
                "cannot write field `{field}` ({}): {e}{got}",
                decl.ty.name()
            ))
        })?;
        if tainted {
            self.state.secret.insert(field.to_string());
        } else if self.state.secret.contains(field) {
            self.rec.redactor.add_received(&value);
        }
        if !self.rec.listening() {
            self.state.set(field, value);
            return Ok(());
        }
        let shown = if self.state.secret.contains(field) {
            Value::String(MASK.to_string())
        } else {
            crate::trace::bounded(&value)
        };
        self.state.set(field, value);
        self.emit(EventKind::FieldSet {
            field: field.to_string(),
            value: shown,
        });
        Ok(())
    }

    /// Delivers a named output to the field `output:` maps it to, if any.
    pub fn output(&mut self, name: &str, value: Value) -> Result<(), StepError> {
        self.output_tainted(name, value, false)
    }

    /// An output that derives from a secret (or carries a credential).
    pub fn output_tainted(
        &mut self,
        name: &str,
        value: Value,
        tainted: bool,
    ) -> Result<(), StepError> {
        match self.step.output.get(name) {
            Some(field) => {
                let field = field.clone();
                self.set_field(&field, value, tainted)
            }
            None => Ok(()),
        }
    }

    /// A field's value for a trace: masked when secret, an excerpt when large.
    pub fn shown(&self, field: &str) -> Value {
        if self.state.secret.contains(field) {
            Value::String(MASK.to_string())
        } else {
            self.state
                .get(field)
                .map_or(Value::Null, crate::trace::bounded)
        }
    }
}

/// Text as a trace shows it: masked whole when it derives from a secret.
pub fn shown_text(text: String, tainted: bool) -> String {
    if tainted { MASK.to_string() } else { text }
}

/// minijinja-style truthiness for condition results.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}
