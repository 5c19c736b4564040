//! `handoff schema`: a JSON Schema (draft 2020-12) of flow, mock and test
//! files, for yaml-language-server's completion and hover help.
//!
//! It is built from the lists the analyser checks against: every step
//! kind's [`Key`]s, the flow's, a field's and a step's keys, the mock and
//! test files' keys. A key the analyser takes and this module cannot
//! describe fails this module's tests, so the two cannot drift.

use serde_json::{Map, Value, json};

use crate::language::keys::{Body, Key, Shape};
use crate::steps::{KINDS, StepKind};

pub const SCHEMA_ID: &str = "https://handoff.dev/schema/handoff.schema.json";

/// The schema, as the committed `schema/handoff.schema.json` holds it.
pub fn schema() -> Value {
    let mut defs = Map::new();
    defs.insert("flow".into(), flow());
    defs.insert("field".into(), field());
    defs.insert("step".into(), step());
    defs.insert("auth".into(), auth());
    defs.insert("trigger".into(), trigger());
    defs.insert("retry".into(), retry());
    defs.insert("headers".into(), headers());
    defs.insert("template".into(), template());
    defs.insert("mock".into(), mock());
    defs.insert("response".into(), response());
    defs.insert("reply".into(), reply());
    defs.insert("tests".into(), tests());
    defs.insert("case".into(), case());
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "handoff",
        "description": "A handoff flow (`flow` and `steps`), a mock file (`responses`), or a test file (`cases`).",
        "anyOf": [
            { "$ref": "#/$defs/flow" },
            { "$ref": "#/$defs/mock" },
            { "$ref": "#/$defs/tests" },
        ],
        "$defs": defs,
    })
}

/// The description of a key outside the step kinds.
fn doc(section: &str, key: &str) -> Option<&'static str> {
    Some(match (section, key) {
        ("flow", "flow") => "The flow's name: what `handoff serve` routes by.",
        ("flow", "description") => "What the flow does, for people.",
        ("flow", "fields") => "Typed fields: inputs, secrets, and what the steps write.",
        ("flow", "auth") => {
            "How the NWC steps get their bearer token: `token`, or an app's `client_id` and `client_secret`."
        }
        ("flow", "steps") => "The steps, run in order unless a step says `goto`.",
        ("flow", "title") => {
            "How a run is named on the run page and by the API: a template over inputs that are not secret, such as `instance {{ instance_id }}`."
        }
        ("flow", "max_steps") => "The step budget: a run that takes more fails (default 1000).",
        ("flow", "trigger") => {
            "How an external event (a webhook) starts a run under `handoff serve`."
        }
        ("flow", "schedule") => {
            "When `handoff serve` starts a run on its own: a cron pattern in a time zone, each slot once."
        }
        ("flow", "sources") => {
            "API descriptions by name, for `call:` steps: an OpenAPI 3.0 or 3.1 file, its server and its credentials."
        }
        ("source", "openapi") => {
            "The OpenAPI document (YAML or JSON), relative to the flow file; sibling files its `$ref`s name are read too."
        }
        ("source", "server") => {
            "The URL its operations' paths go after: configuration (`env:` fields), never a caller's input. Default: the document's first absolute server."
        }
        ("source", "credentials") => {
            "The document's security schemes mapped to templates over secret fields, or `auth` for the flow's managed token."
        }
        ("schedule", "cron") => {
            "Five fields (`*/5 * * * *`: minute, hour, day, month, weekday), or six with seconds first."
        }
        ("schedule", "timezone") => "An IANA time zone, such as `Europe/Berlin` (default `UTC`).",
        ("schedule", "overlap") => {
            "`skip` (the default): no run for a slot while the flow's run from an earlier slot goes on; `allow`: run anyway."
        }
        ("schedule", "catch_up") => {
            "After downtime: `none` (the default) runs only slots to come; `one` runs the latest missed slot, once."
        }
        ("schedule", "inputs") => {
            "Input fields from the slot: templates over `slot`, its time in RFC 3339 (UTC)."
        }
        ("field", "type") => "`text`, `number`, `boolean`, `json` or `headers`.",
        ("field", "input") => {
            "Settable with `--set NAME=VALUE` or `--input FILE`; required unless it has a default."
        }
        ("field", "secret") => "Masked as `***` everywhere handoff writes.",
        ("field", "env") => "Read from this environment variable when not set as an input.",
        ("field", "allow_empty") => "Accept an empty value for a required input or a secret.",
        ("field", "default") => "The starting value; it must fit the type.",
        ("field", "description") => "For people.",
        ("step", "id") => "The step's name: what `goto`, traces and mocks use.",
        ("step", "goto") => "The step to go to next, or `end`.",
        ("step", "on_error") => {
            "The step to go to when this one fails; the flow gets an `error` field."
        }
        ("step", "output") => "The kind's named outputs, mapped to the fields that receive them.",
        ("step", "description") => "For people.",
        ("auth", "token") => "A personal access token; it must read a secret field.",
        ("auth", "client_id") => "An app's client id.",
        ("auth", "client_secret") => "An app's client secret; it must read a secret field.",
        ("auth", "token_url") => {
            "Where to get the app token (default: the `base_url` field + `/authentication/v1/token`)."
        }
        ("auth", "format") => "How the credentials are sent: `json` (the default) or `form`.",
        ("trigger", "event") => {
            "The event's keys and their types (`text`, `number`, `boolean`, `object`, `list`, or `enum`); an event that does not fit gets 422."
        }
        ("event key", "type") => {
            "`text`, `number`, `boolean`, `object` or `list`, strictly as JSON has them."
        }
        ("event key", "enum") => "The values allowed, exactly.",
        ("event key", "required") => {
            "Whether the event must have it (default true); `null` counts as missing."
        }
        ("event key", "description") => "For people, and for senders reading `GET /v1/flows`.",
        ("trigger", "inputs") => {
            "Input fields mapped to templates over `event` (the body) and `headers`."
        }
        ("trigger", "idempotency_key") => "Two events with the same key start one run.",
        ("trigger", "signature") => {
            "An HMAC-SHA256 of the raw body: `secret_env` names the shared secret's variable; `header` (default X-Hub-Signature-256)."
        }
        ("signature", "secret_env") => "The environment variable holding the shared secret.",
        ("signature", "format") => {
            "`github` (the default): `sha256=<hex>` of the body; `timestamped`: `t=<unix seconds>,v1=<hex>` of `t.body`, refused outside `tolerance`."
        }
        ("signature", "tolerance") => {
            "How far a timestamped signature's time may be from the worker's clock (default 5m)."
        }
        ("signature", "header") => {
            "The header the signature comes in (default X-Hub-Signature-256)."
        }
        ("retry", "attempts") => "Attempts in all, the first included (default 3).",
        ("retry", "backoff") => "The wait before the first retry; it doubles (default 1s).",
        ("retry", "max_backoff") => "The cap on one wait (default 30s).",
        ("retry", "jitter") => {
            "Up to this share of each wait is taken off at random (default 0.2)."
        }
        ("retry", "retry_on") => {
            "What is retried: `connect`, `timeout`, `reset`, statuses such as `429` or `5xx`."
        }
        ("retry", "max_retry_after") => "The longest `Retry-After` honoured (default 60s).",
        ("mock", "responses") => {
            "Scripted responses: each for a `step`, or for a `request` (a method and a path)."
        }
        ("mock", "description") => "What the mock plays.",
        ("mock", "run") => {
            "The id of the run a recording was made from: a replay runs under it, so its trace and span ids are the recorded run's."
        }
        ("mock", "inputs") => {
            "What a recorded run was given that is not secret: a replay's inputs unless `--input` gives others; `--set` changes one."
        }
        ("mock", "signals") | ("case", "signals") => {
            "Signals for the flow's `wait_for`s: `{ at: 2h, name, data }`, at times from the run's start."
        }
        ("signal", "at") => "When it comes, from the run's start on the virtual clock: `2h`.",
        ("signal", "name") => "The signal a `wait_for` of the flow waits for.",
        ("signal", "data") => "The signal's data, checked against the wait's `data:`.",
        ("response", "step") => "The step whose requests this answers.",
        ("response", "request") => {
            "A method and a path, such as `PATCH /workflows/v2/tasks/*/assignments/*`; it beats a step match."
        }
        ("response", "operation") => {
            "An operation of the flow's `sources:` (`jobs.getJob`): answers the `call:` steps that send it, and each reply must be one it declares."
        }
        ("response", "replies") => "Replies in order; the last one repeats.",
        ("response", "reply") => "One reply, repeated.",
        ("reply", "status") => "The status (default 200).",
        ("reply", "headers") => "Response headers.",
        ("reply", "body") => "A JSON body (YAML here).",
        ("reply", "text") => "A text body.",
        ("reply", "delay") => "How long the answer takes, on the virtual clock.",
        ("reply", "error") => "No answer: `timeout`, `refused` or `reset`.",
        ("reply", "expect") => "The request this reply answered (`--strict` checks it).",
        ("tests", "flow") => "The flow under test (default: FLOW.yaml for FLOW.test.yaml).",
        ("tests", "description") => "What the cases cover.",
        ("tests", "cases") => "The cases, each a dry run with what must come of it.",
        ("case", "name") => "The case's name, as the report shows it.",
        ("case", "description") => "For people.",
        ("case", "set") => "Inputs, as `--set`.",
        ("case", "env") => "The environment the case sees (and no other).",
        ("case", "mock") => "A mock file, relative to the test file.",
        ("case", "responses") => "Scripted responses, in the mock format.",
        ("case", "expect") => "What must come of the run.",
        ("expect", "status") => {
            "How the run ends: `succeeded`, `failed`, `interrupted` or `canceled`."
        }
        ("expect", "ended_at") => "The step the run ends at.",
        ("expect", "reason") => "Text the ending's reason contains.",
        ("expect", "fields") => "Field values at the end.",
        ("expect", "requests") => "The requests sent: `{ request: METHOD /path, count, body }`.",
        ("request", "request") => {
            "A method and a path pattern (`*` within one segment; with `?`, the query too)."
        }
        ("request", "count") => "Exactly this many were sent.",
        ("request", "body") => "Every matching request's body holds this.",
        _ => return None,
    })
}

/// `{ "description": …, …schema }` for a documented key.
fn described(section: &str, key: &str, schema: Value) -> Value {
    let mut schema = schema;
    if let (Some(d), Value::Object(map)) = (doc(section, key), &mut schema) {
        map.insert("description".into(), Value::String(d.into()));
    }
    schema
}

fn object(section: &str, keys: &[&str], required: &[&str], shape: &dyn Fn(&str) -> Value) -> Value {
    let properties: Map<String, Value> = keys
        .iter()
        .map(|k| (k.to_string(), described(section, k, shape(k))))
        .collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn template() -> Value {
    json!({ "type": ["string", "number", "boolean"], "description": "Text, or a minijinja template over the fields such as `{{ instance_id }}`." })
}

fn r(def: &str) -> Value {
    json!({ "$ref": format!("#/$defs/{def}") })
}

fn flow() -> Value {
    object(
        "flow",
        &crate::language::analyze::TOP_KEYS,
        &["flow", "steps"],
        &|k| match k {
            "flow" | "description" | "title" => json!({ "type": "string" }),
            "max_steps" => json!({ "type": "integer", "minimum": 1 }),
            "fields" => {
                json!({ "type": "object", "additionalProperties": r("field"), "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" } })
            }
            "auth" => r("auth"),
            "trigger" => r("trigger"),
            "schedule" => object(
                "schedule",
                &crate::language::schedule::KEYS,
                &["cron"],
                &|k| match k {
                    "overlap" => json!({ "enum": crate::language::schedule::OVERLAPS }),
                    "catch_up" => json!({ "enum": crate::language::schedule::CATCH_UPS }),
                    "inputs" => json!({ "type": "object", "additionalProperties": r("template") }),
                    _ => json!({ "type": "string" }),
                },
            ),
            "steps" => json!({ "type": "array", "items": r("step"), "minItems": 1 }),
            "sources" => json!({
                "type": "object",
                "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" },
                "additionalProperties": object(
                    "source",
                    &crate::language::openapi::sources::KEYS,
                    &["openapi"],
                    &|k| match k {
                        "credentials" => json!({ "type": "object", "additionalProperties": r("template") }),
                        "server" => r("template"),
                        _ => json!({ "type": "string" }),
                    },
                ),
            }),
            _ => json!({}),
        },
    )
}

fn field() -> Value {
    let types = crate::language::fields::TYPE_NAMES;
    json!({
        "anyOf": [
            { "enum": types, "description": "Short for `{ type: … }`." },
            object("field", &crate::language::fields::FIELD_KEYS, &["type"], &|k| match k {
                "type" => json!({ "enum": types }),
                "input" | "secret" | "allow_empty" => json!({ "type": "boolean" }),
                "env" | "description" => json!({ "type": "string" }),
                _ => json!({}),
            }),
        ]
    })
}

fn shape(s: Shape) -> Value {
    match s {
        Shape::Template => r("template"),
        Shape::NumberOrTemplate => json!({ "type": ["number", "string"] }),
        Shape::Field => json!({ "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" }),
        Shape::Bool => json!({ "type": "boolean" }),
        Shape::Count => json!({ "type": "integer", "minimum": 1 }),
        Shape::Duration => {
            json!({ "type": "string", "examples": ["5s", "30m", "1h 30m", "{{ poll_interval }}"] })
        }
        Shape::Size => json!({ "type": ["string", "integer"], "examples": ["512KB", "64MB"] }),
        Shape::Headers => r("headers"),
        Shape::Retry => r("retry"),
        Shape::Pairs => json!({ "type": "object", "additionalProperties": r("template") }),
        Shape::Json => json!({}),
        Shape::OneOf(words) => {
            let mut all: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            all.extend(words.iter().map(|w| w.to_ascii_lowercase()));
            all.dedup();
            json!({ "enum": all })
        }
        Shape::Accept => json!({
            "anyOf": [
                { "enum": ["2xx", "any"] },
                { "type": "array", "items": { "type": "integer", "minimum": 100, "maximum": 599 } },
            ]
        }),
        Shape::Steps => json!({ "type": "array", "items": r("step"), "minItems": 1 }),
        Shape::Step => json!({ "type": "string" }),
        Shape::Event => event_shape(),
        Shape::Fields => {
            json!({ "type": "object", "additionalProperties": r("field"), "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" } })
        }
        Shape::Tolerance => json!({
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*%$" },
            ],
            "examples": [3, "10%"]
        }),
    }
}

fn keys_object(keys: &[Key]) -> Value {
    let properties: Map<String, Value> = keys
        .iter()
        .map(|k| {
            let mut s = shape(k.shape);
            if let Value::Object(m) = &mut s {
                m.insert("description".into(), Value::String(k.doc.into()));
            }
            (k.name.to_string(), s)
        })
        .collect();
    let required: Vec<&str> = keys.iter().filter(|k| k.required).map(|k| k.name).collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn body(b: Body) -> Value {
    match b {
        Body::Keys(keys) => keys_object(keys),
        Body::Text => r("template"),
        Body::TextOrNull => json!({ "anyOf": [r("template"), { "type": "null" }] }),
        Body::TextOrKeys(keys) => json!({ "anyOf": [{ "type": "string" }, keys_object(keys)] }),
        Body::Assignments => json!({
            "type": "object",
            "additionalProperties": r("template"),
            "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" },
        }),
        Body::Branches => json!({
            "type": "array",
            "minItems": 1,
            "items": {
                "anyOf": [
                    {
                        "type": "object",
                        "properties": {
                            "when": { "type": "string", "description": "A condition, such as `tries >= max_tries`." },
                            "goto": { "type": "string", "description": "The step to go to, or `end`." },
                        },
                        "required": ["when", "goto"],
                        "additionalProperties": false,
                    },
                    {
                        "type": "object",
                        "properties": { "otherwise": { "type": "string", "description": "The step to go to when no branch holds; the last branch." } },
                        "required": ["otherwise"],
                        "additionalProperties": false,
                    },
                ]
            }
        }),
    }
}

/// A step: `id`, the common keys, and exactly one kind.
fn step() -> Value {
    let common = |k: &str| match k {
        "id" | "goto" | "on_error" | "description" => json!({ "type": "string" }),
        "output" => json!({ "type": "object", "additionalProperties": { "type": "string" } }),
        _ => json!({}),
    };
    let kinds: Vec<Value> = KINDS
        .iter()
        .filter_map(|kind| {
            let b = StepKind::body_of(kind)?;
            let mut properties: Map<String, Value> = crate::language::analyze::STEP_KEYS
                .iter()
                .map(|k| (k.to_string(), described("step", k, common(k))))
                .collect();
            let mut kind_schema = body(b);
            if let Value::Object(m) = &mut kind_schema {
                m.insert(
                    "description".into(),
                    Value::String(StepKind::doc(kind).into()),
                );
            }
            properties.insert(kind.to_string(), kind_schema);
            Some(json!({
                "type": "object",
                "title": kind,
                "properties": properties,
                "required": ["id", kind],
                "additionalProperties": false,
            }))
        })
        .collect();
    json!({ "oneOf": kinds })
}

fn auth() -> Value {
    let shape = |k: &str| match k {
        "format" => json!({ "enum": ["json", "form"] }),
        _ => r("template"),
    };
    let keys = crate::language::auth::KEYS;
    json!({
        "oneOf": [
            object("auth", &keys[..1], &["token"], &shape),
            object("auth", &keys[1..], &["client_id", "client_secret"], &shape),
        ]
    })
}

fn trigger() -> Value {
    object(
        "trigger",
        &crate::language::trigger::KEYS,
        &["event", "inputs"],
        &|k| match k {
            "event" => event_shape(),
            "inputs" => json!({ "type": "object", "additionalProperties": r("template") }),
            "idempotency_key" => r("template"),
            "signature" => object(
                "signature",
                &crate::language::trigger::SIGNATURE_KEYS,
                &["secret_env"],
                &|k| match k {
                    "format" => json!({ "enum": ["github", "timestamped"] }),
                    _ => json!({ "type": "string" }),
                },
            ),
            _ => json!({}),
        },
    )
}

/// An event's (or a signal's data's) keys and their types.
fn event_shape() -> Value {
    json!({
        "type": "object",
        "additionalProperties": {
            "anyOf": [
                { "enum": crate::language::event::TYPES },
                object("event key", &crate::language::event::KEY_KEYS, &[], &|k| match k {
                    "type" => json!({ "enum": crate::language::event::TYPES }),
                    "enum" => json!({ "type": "array", "items": { "type": ["string", "integer"] }, "minItems": 1 }),
                    "required" => json!({ "type": "boolean" }),
                    _ => json!({ "type": "string" }),
                }),
            ]
        }
    })
}

fn retry() -> Value {
    json!({
        "anyOf": [
            { "const": false, "description": "One attempt, no retry." },
            { "type": "integer", "minimum": 1, "description": "Attempts in all." },
            object("retry", &crate::run::retry::KEYS, &[], &|k| match k {
                "attempts" => json!({ "type": "integer", "minimum": 1 }),
                "jitter" => json!({ "type": "number", "minimum": 0, "maximum": 1 }),
                "retry_on" => json!({ "type": "array", "items": { "type": ["string", "integer"] } }),
                _ => json!({ "type": "string" }),
            }),
        ]
    })
}

fn headers() -> Value {
    let one = json!({
        "anyOf": [
            { "type": "string", "description": "A `headers` field." },
            { "type": "object", "additionalProperties": r("template"), "description": "Header names mapped to values." },
        ]
    });
    json!({ "anyOf": [one.clone(), { "type": "array", "items": one }] })
}

fn mock() -> Value {
    object(
        "mock",
        &["responses", "signals", "inputs", "run", "description"],
        &[],
        &|k| match k {
            "responses" => json!({ "type": "array", "items": r("response") }),
            "signals" => signals(),
            "inputs" => json!({ "type": "object" }),
            _ => json!({ "type": "string" }),
        },
    )
}

/// Scripted signals, in a mock or a case.
fn signals() -> Value {
    json!({
        "type": "array",
        "items": object("signal", &crate::run::mock::SIGNAL_KEYS, &["at", "name"], &|k| match k {
            "at" | "name" => json!({ "type": "string" }),
            _ => json!({}),
        }),
    })
}

fn reply_shape(k: &str) -> Value {
    match k {
        "status" => json!({ "type": "integer", "minimum": 100, "maximum": 599 }),
        "headers" => {
            json!({ "type": "object", "additionalProperties": { "type": ["string", "number"] } })
        }
        "text" | "delay" => json!({ "type": "string" }),
        "error" => json!({ "enum": ["timeout", "refused", "reset"] }),
        "expect" => json!({ "type": "object" }),
        _ => json!({}),
    }
}

fn response() -> Value {
    let mut keys: Vec<&str> = crate::run::mock::ENTRY_KEYS.to_vec();
    keys.extend(crate::run::mock::REPLY_KEYS);
    object("response", &keys, &[], &|k| match k {
        "step" | "request" | "operation" => json!({ "type": "string" }),
        "replies" => json!({ "type": "array", "items": r("reply"), "minItems": 1 }),
        "reply" => r("reply"),
        _ => described("reply", k, reply_shape(k)),
    })
}

fn reply() -> Value {
    object("reply", &crate::run::mock::REPLY_KEYS, &[], &reply_shape)
}

fn tests() -> Value {
    object(
        "tests",
        &crate::run::cases::FILE_KEYS,
        &["cases"],
        &|k| match k {
            "cases" => json!({ "type": "array", "items": r("case"), "minItems": 1 }),
            _ => json!({ "type": "string" }),
        },
    )
}

fn case() -> Value {
    object(
        "case",
        &crate::run::cases::CASE_KEYS,
        &["name", "expect"],
        &|k| match k {
            "set" | "env" => {
                json!({ "type": "object", "additionalProperties": { "type": ["string", "number", "boolean"] } })
            }
            "responses" => json!({ "type": "array", "items": r("response") }),
            "signals" => signals(),
            "expect" => object(
                "expect",
                &crate::run::cases::EXPECT_KEYS,
                &[],
                &|k| match k {
                    "status" => json!({ "enum": crate::run::cases::STATUSES }),
                    "ended_at" | "reason" => json!({ "type": "string" }),
                    "fields" => json!({ "type": "object" }),
                    "requests" => json!({
                        "type": "array",
                        "items": object("request", &crate::run::cases::REQUEST_KEYS, &["request"], &|k| match k {
                            "request" => json!({ "type": "string" }),
                            "count" => json!({ "type": "integer", "minimum": 0 }),
                            _ => json!({}),
                        }),
                    }),
                    _ => json!({}),
                },
            ),
            _ => json!({ "type": "string" }),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key the analyser takes outside the step kinds has a description
    /// here: a key added there and not here fails this test.
    #[test]
    fn every_key_is_described() {
        let sections: Vec<(&str, Vec<&str>)> = vec![
            ("flow", crate::language::analyze::TOP_KEYS.to_vec()),
            ("field", crate::language::fields::FIELD_KEYS.to_vec()),
            ("step", crate::language::analyze::STEP_KEYS.to_vec()),
            ("auth", crate::language::auth::KEYS.to_vec()),
            ("trigger", crate::language::trigger::KEYS.to_vec()),
            ("schedule", crate::language::schedule::KEYS.to_vec()),
            ("source", crate::language::openapi::sources::KEYS.to_vec()),
            (
                "signature",
                crate::language::trigger::SIGNATURE_KEYS.to_vec(),
            ),
            ("event key", crate::language::event::KEY_KEYS.to_vec()),
            ("retry", crate::run::retry::KEYS.to_vec()),
            ("response", crate::run::mock::ENTRY_KEYS.to_vec()),
            ("reply", crate::run::mock::REPLY_KEYS.to_vec()),
            ("signal", crate::run::mock::SIGNAL_KEYS.to_vec()),
            ("tests", crate::run::cases::FILE_KEYS.to_vec()),
            ("case", crate::run::cases::CASE_KEYS.to_vec()),
            ("expect", crate::run::cases::EXPECT_KEYS.to_vec()),
            ("request", crate::run::cases::REQUEST_KEYS.to_vec()),
        ];
        for (section, keys) in sections {
            for key in keys {
                assert!(
                    doc(section, key).is_some(),
                    "{section}.{key} has no description"
                );
            }
        }
        for kind in KINDS {
            assert!(StepKind::body_of(kind).is_some(), "{kind} has no body");
            assert!(!StepKind::doc(kind).is_empty(), "{kind} has no description");
            if let Some(Body::Keys(keys) | Body::TextOrKeys(keys)) = StepKind::body_of(kind) {
                for k in keys {
                    assert!(!k.doc.is_empty(), "{kind}.{} has no description", k.name);
                }
            }
        }
    }

    /// The auth schema splits `auth::KEYS` at `token`: the split must match.
    #[test]
    fn auth_keys_split_at_the_token() {
        assert_eq!(crate::language::auth::KEYS[0], "token");
        assert_eq!(
            &crate::language::auth::KEYS[1..3],
            ["client_id", "client_secret"]
        );
    }
}
