//! What a run is given and keeps: its inputs and [`state::RunState`], what a
//! step runs against ([`step::StepCx`]) and how it sends [`http`] requests, the
//! injected edges ([`clock::Clock`], [`transport::Transport`], and the
//! [`mock`] transport for dry runs, and [`limits`] for a client many runs
//! share), the [`retry`] policy, and the [`trace`]
//! it writes, kept clean of secrets by [`redact`], and written as JSON by [`jsonl`], and as
//! OpenTelemetry spans by [`otel`];
//! [`bounded`] readers for the files and streams a run or a command reads.

pub mod bounded;
pub mod cases;
pub mod clock;
pub mod http;
pub mod inputs;
pub mod jsonl;
pub mod limits;
pub mod mock;
pub mod otel;
pub mod record;
pub mod redact;
pub mod retry;
pub mod signals;
pub mod state;
pub mod step;
pub mod tokens;
pub mod trace;
pub mod transport;
