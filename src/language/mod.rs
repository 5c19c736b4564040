//! The flow language: from a file's text to a validated [`flow::Flow`].
//!
//! ```text
//! source ─▶ raw (YAML nodes with spans) ─▶ analyze (with the analyzer helpers, and each
//!                                           step kind's parser) ─▶ flow
//! ```
//!
//! Beside the pipeline: [`diagnostic`] (the one error type of this half),
//! [`fields`] (declarations, types and coercion), [`target`] (where a `goto`
//! leads), [`destinations`] (where secrets may go), [`duration`] (`30m`), [`template`] (minijinja, with its limits
//! and secrecy scan), [`trigger`] (a webhook's event into inputs) with its [`event`] shape, [`schedule`] (cron slots in a time zone), [`paths`] (what a template reads by path, and tests for truth), [`auth`] (how NWC steps get a token), [`openapi`] (API descriptions that `call:` steps name) and [`lint`] (credentials written into a file).

pub mod analyze;
pub mod analyzer;
pub mod arazzo;
pub mod auth;
pub mod destinations;
pub mod diagnostic;
pub mod duration;
pub mod event;
pub mod fields;
pub mod flow;
pub mod keys;
pub mod lint;
pub mod openapi;
pub mod paths;
pub mod raw;
pub mod schedule;
pub mod simple;
pub mod source;
pub mod target;
pub mod template;
pub mod trigger;
