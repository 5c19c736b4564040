//! What each step kind takes, as data: the analyser checks a step's keys
//! against it, and `handoff schema` describes it to editors. One list for
//! both, so the schema cannot drift from what `check` accepts.

/// The shape of a value, as much as a JSON Schema can say of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// A template (or plain text).
    Template,
    /// A template that renders to a number, or a number.
    NumberOrTemplate,
    /// The name of a field.
    Field,
    /// `true` or `false`.
    Bool,
    /// A whole number of at least 1.
    Count,
    /// A duration such as `30s`, or a template.
    Duration,
    /// A size such as `512KB`, or a number of bytes.
    Size,
    /// A `headers` field's name, literal headers, or a list of both.
    Headers,
    /// The retry policy.
    Retry,
    /// A mapping of names to templates.
    Pairs,
    /// Any YAML, with templates in its strings.
    Json,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// `2xx`, `any`, or a list of statuses.
    Accept,
    /// A list of steps.
    Steps,
    /// Field names mapped to declarations, as under the flow's `fields`.
    Fields,
    /// A count, or a percentage such as `10%`.
    Tolerance,
    /// A step id, or `end`.
    Step,
    /// Keys mapped to their types, as a trigger's `event:`.
    Event,
}

/// A key of a step kind's mapping.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub required: bool,
    pub shape: Shape,
    pub doc: &'static str,
}

pub const fn req(name: &'static str, shape: Shape, doc: &'static str) -> Key {
    Key {
        name,
        required: true,
        shape,
        doc,
    }
}

pub const fn opt(name: &'static str, shape: Shape, doc: &'static str) -> Key {
    Key {
        name,
        required: false,
        shape,
        doc,
    }
}

/// What goes under a step kind's name.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// A mapping of these keys.
    Keys(&'static [Key]),
    /// A template.
    Text,
    /// A template, or nothing.
    TextOrNull,
    /// A short form as text, or a mapping of these keys.
    TextOrKeys(&'static [Key]),
    /// A decision's branches: `{ when, goto }`, then `{ otherwise }`.
    Branches,
    /// Field names mapped to templates.
    Assignments,
}

/// The names of a body's keys, and the required ones, for `Analyzer::body`.
pub fn names(keys: &[Key]) -> (Vec<&'static str>, Vec<&'static str>) {
    (
        keys.iter().map(|k| k.name).collect(),
        keys.iter().filter(|k| k.required).map(|k| k.name).collect(),
    )
}

/// The keys every HTTP step kind takes.
pub const HEADERS: Key = opt(
    "headers",
    Shape::Headers,
    "A `headers` field, literal headers, or a list of both, applied in order.",
);
pub const TIMEOUT: Key = opt(
    "timeout",
    Shape::Duration,
    "How long to wait for an answer, per attempt (default 30s).",
);
pub const TRACEPARENT: Key = opt(
    "traceparent",
    Shape::Bool,
    "Send the step's W3C `traceparent` header when traces are exported or the run was started with one (default `true`).",
);
pub const RETRY: Key = opt(
    "retry",
    Shape::Retry,
    "The retry policy: a mapping, a number of attempts, or `false`.",
);
