//! handoff runs YAML *flow* files that automate a worker process against REST
//! APIs, such as completing the Nintex Workflow Cloud task a paused instance
//! waits on.
//!
//! The folders follow the path a flow takes:
//!
//! ```text
//! language/  source text ─raw──▶ nodes with spans ─analyze──▶ Flow
//! run/       what a run is given: inputs, state, clock, transport (or mock), retry, trace,
//!            redaction, and what a step runs against: its context and HTTP machinery
//! steps/     one file per step kind: its parser and what it does when run
//! engine/    runs a Flow: RunState in, trace events out, an Outcome at the end,
//!            and checkpoints out for a durable run
//! store/     where durable runs live between steps (SQLite or Postgres, secrets
//!            sealed), and the durable runner: created, checkpointed, resumed
//! serve/     the worker service: runs started by the API or a webhook, woken by a scheduler
//! sim/       a local NWC to run against
//! cli/       the command line, the live console and the trace reports
//! ```
//!
//! - [`language::raw`] parses YAML into spanned nodes; [`language::analyze`]
//!   validates them into a [`language::flow::Flow`], reporting every problem
//!   as a [`language::diagnostic::Diagnostic`]. Step kinds parse their own
//!   bodies with the [`language::analyzer`] helpers.
//! - [`engine`] runs a flow with an injected [`run::clock::Clock`] and
//!   [`run::transport::Transport`]; each step kind lives in its own file
//!   under [`steps`].
//! - [`run::trace`] is what a run did, as data; [`cli::report`] renders it.
//!
//! The modules are also reachable from the crate root (`handoff::language::analyze`,
//! `handoff::run::trace`, …), so paths stay short.

pub mod cli;
pub mod engine;
pub mod language;
pub mod run;
pub mod serve;
pub mod sim;
pub mod steps;
pub mod store;
