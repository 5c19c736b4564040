//! handoff runs YAML *flow* files that automate a worker process against REST
//! APIs, such as completing the Nintex Workflow Cloud task a paused instance
//! waits on.
//!
//! The pipeline reads from the module names:
//!
//! ```text
//! source text ─raw──▶ nodes with spans ─analyze──▶ Flow ─engine──▶ RunResult { trace, outcome } ─report──▶ text / JSONL
//! ```
//!
//! - [`raw`] parses YAML into spanned nodes; [`analyze`] validates them into a
//!   [`flow::Flow`], reporting every problem as a [`diagnostic::Diagnostic`].
//! - [`engine`] runs a flow with an injected [`clock::Clock`] and
//!   [`transport::Transport`]; each step kind lives in its own file under
//!   [`steps`].
//! - [`trace`] is what a run did, as data; [`report`] renders it.
//! - [`mock`] scripts responses for dry runs; [`cli`] is the command line.

pub mod analyze;
pub mod cli;
pub mod clock;
pub mod console;
pub mod demo;
pub mod diagnostic;
pub mod engine;
pub mod fields;
pub mod flow;
pub mod inputs;
pub mod lint;
pub mod mock;
pub mod raw;
pub mod redact;
pub mod report;
pub mod retry;
pub mod sim;
pub mod source;
pub mod state;
pub mod steps;
pub mod template;
pub mod trace;
pub mod transport;
