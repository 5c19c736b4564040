//! What a step runs against: the run's state, the clock and the transport,
//! the trace, and what it reads of its flow ([`FlowParts`]). Every step kind
//! returns a [`Next`] or a [`StepError`]; the helpers here render templates
//! and write fields the same way for all of them, secrets tracked.

use std::sync::Arc;

use indexmap::IndexMap;
use minijinja::Environment;
use serde_json::Value;

use crate::language::auth::Auth;
use crate::language::destinations::Destinations;
use crate::language::fields::FieldDecl;
use crate::language::target::Target;
use crate::language::template::{Scope, Template};
use crate::run::clock::Clock;
use crate::run::redact::MASK;
use crate::run::state::RunState;
use crate::run::trace::{EventKind, Recorder};
use crate::run::transport::Transport;

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
    /// Wait for a signal until then; the engine then runs the step again
    /// with the signal's data, or the timeout, in the state's `wait`.
    WaitFor {
        signal: String,
        until: std::time::SystemTime,
        timeout: std::time::Duration,
    },
    /// A `for_each` stopped starting items: the process shuts down, or its
    /// checkpoint was refused. The engine pauses the run there, or ends it.
    Pause,
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
    /// A request or an answer that breaks the operation's API description.
    Contract,
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
            ErrorKind::Contract => "contract",
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

/// What a step reads of its flow. The engine lends it from the
/// [`Flow`](crate::language::flow::Flow), which holds the steps, so a step
/// never names the type that holds it.
#[derive(Clone, Copy)]
pub struct FlowParts<'a> {
    pub fields: &'a IndexMap<String, FieldDecl>,
    /// Where templates render.
    pub env: &'a Environment<'static>,
    pub auth: Option<&'a Auth>,
    /// Where the flow's secrets may be sent.
    pub destinations: &'a Destinations,
    /// The steps' ids, in order: what a [`Target`] is called in the trace.
    pub step_ids: &'a [&'a str],
}

impl FlowParts<'_> {
    /// A target's name, as the trace shows it: a step's id, or `end`.
    pub fn target_name(&self, target: Target) -> &str {
        match target {
            Target::Step(i) => self.step_ids.get(i).copied().unwrap_or("?"),
            Target::End => "end",
        }
    }
}

/// The step that runs, as its kind's code sees it.
#[derive(Clone, Copy)]
pub struct Here<'a> {
    pub id: &'a str,
    /// The step's named outputs mapped to the fields that receive them.
    pub output: &'a IndexMap<String, String>,
    /// Whether the step sends the flow's managed token (`auth:`).
    pub uses_auth: bool,
    /// Where control goes when the step finishes normally.
    pub next: Target,
}

/// What a running step can see and touch.
pub struct StepCx<'a, 'r> {
    pub flow: FlowParts<'a>,
    pub step: Here<'a>,
    pub state: &'a mut RunState,
    pub clock: &'a dyn Clock,
    pub transport: &'a dyn Transport,
    pub rec: &'a mut Recorder<'r>,
    /// App tokens, shared with the other runs of a batch or a `serve`.
    pub tokens: &'a crate::run::tokens::TokenCache,
    /// Set while the managed token is fetched: its answer is a credential.
    pub fetching_token: bool,
    /// Runs the items of a `for_each`; absent inside an item.
    pub blocks: Option<&'a dyn Blocks>,
    /// Keeps the run's trace in its store before a request that is not
    /// idempotent goes out; absent in a run that is not durable, and in an
    /// item (whose block is checkpointed as a whole).
    pub ahead: Option<&'a dyn WriteAhead>,
    /// The run's trace context, when its requests carry a `traceparent`.
    pub trace: Option<&'a crate::run::otel::Context>,
}

/// Write-ahead for requests not safe to repeat: what the engine lends a
/// step so that a POST or PATCH is on record before it can land.
pub trait WriteAhead: Sync {
    /// Keeps `state` and the events so far; `Err` (why) when they could not
    /// be kept, and then the request must not go.
    fn keep<'a, 'r: 'a>(
        &'a self,
        state: &'a RunState,
        rec: &'a mut Recorder<'r>,
    ) -> crate::run::clock::BoxFuture<'a, Result<(), String>>;
}

/// What the engine lends a `for_each`: running one item of a block, and the
/// durable run's checkpoints between items.
pub trait Blocks: Sync {
    /// Whether the run is durable: its progress is checkpointed.
    fn durable(&self) -> bool;
    /// Whether the process shuts down: start no more items.
    fn stopping(&self) -> bool;
    /// Whether a step of the block sends a request not safe to send twice.
    fn unrepeatable(&self, block: usize) -> bool;
    /// An item's starting state: the flow's fields the block reads, copied
    /// from `outer`, the block's own fields empty, and the item.
    fn item_state(&self, block: usize, outer: &RunState, item: Value, secret: bool) -> RunState;
    /// Runs item `index_of.0` of `index_of.1` through the block's steps.
    fn run_item(
        &self,
        block: usize,
        index_of: (usize, usize),
        state: RunState,
        redactor: crate::run::redact::Redactor,
        listening: bool,
    ) -> crate::run::clock::BoxFuture<'_, ItemRun>;
    /// Saves the run's progress. `false`: the run must stop (canceled,
    /// taken over, or not kept), and the engine knows why.
    fn checkpoint<'a>(
        &'a self,
        state: &'a RunState,
        rec: &'a mut Recorder<'_>,
    ) -> crate::run::clock::BoxFuture<'a, bool>;
}

/// One item, run: its state at the end, its events (to forward into the
/// run's trace), the secrets it met, and why it failed, if it did.
pub struct ItemRun {
    pub index: usize,
    pub state: RunState,
    pub events: Vec<crate::run::trace::TraceEvent>,
    pub redactor: crate::run::redact::Redactor,
    pub failure: Option<StepError>,
}

impl StepCx<'_, '_> {
    pub fn emit(&mut self, kind: EventKind) {
        self.rec.emit(Some(self.step.id), kind);
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
        let value = template.render(self.flow.env, scope).map_err(|e| {
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
        Ok((crate::language::fields::display_text(&value), tainted))
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
            && decl.ty != crate::language::fields::FieldType::Json
            && !self.state.secret.contains(field);
        let quoted = shows.then(|| match &value {
            Value::Number(_) | Value::Bool(_) | Value::Null => Err(value.clone()),
            Value::String(s) if s.len() <= 1024 => Err(value.clone()),
            other => Ok(crate::language::fields::quote(other)),
        });
        let value = decl.ty.coerce(value).map_err(|e| {
            let got = quoted
                .map(|q| {
                    let q = q.unwrap_or_else(|v| crate::language::fields::quote(&v));
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
        if !self.rec.values() {
            // Spans show no field: numbered as if written, for the same ids.
            self.rec.skip();
            self.state.set(field, value);
            return Ok(());
        }
        let shown = if self.state.secret.contains(field) {
            Value::String(MASK.to_string())
        } else {
            crate::run::trace::bounded(&value)
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
                .map_or(Value::Null, crate::run::trace::bounded)
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
