//! `handoff run`: one run of a flow, for real or dry, durable or not, with
//! its live trace; `--each` hands the rows to [`crate::cli::batch`].

use crate::cli::common::{
    Colors, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, TraceArg, exit_code, load_flow, load_mock,
    open_trace_file, print_diagnostics, trace_format,
};
use crate::cli::console::{Look, Printer, run_live};
use crate::cli::report::Style;
use crate::engine::Engine;
use crate::language::analyze::read_source;
use crate::language::diagnostic::Diagnostic;
use crate::run::clock::{Clock, SystemClock, VirtualClock};
use crate::run::inputs::{Inputs, initial_state};
use crate::run::mock::MockTransport;
use crate::run::transport::{ReqwestTransport, Transport};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub arazzo: crate::cli::common::ArazzoArgs,
    /// The flow file.
    pub flow: PathBuf,
    /// Set an input field: NAME=VALUE. Repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Read input fields from a JSON or YAML mapping.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Run on a virtual clock against scripted responses; no connection is opened.
    #[arg(long)]
    pub dry_run: bool,
    /// Scripted responses for a dry run (implies --dry-run).
    #[arg(long, value_name = "FILE")]
    pub mock: Option<PathBuf>,
    /// How the trace is printed.
    #[arg(long, value_enum, default_value_t = TraceArg::Pretty)]
    pub trace: TraceArg,
    /// Also write the trace to a file: JSONL for `.jsonl`/`.json`, else as --trace.
    #[arg(long, value_name = "PATH")]
    pub trace_file: Option<PathBuf>,
    /// Print only the final line (for cron); a --trace-file is still written whole.
    #[arg(long, short)]
    pub quiet: bool,
    /// Keep the run in the store, checkpointed as it goes, so `handoff resume` can go on
    /// after a crash.
    #[arg(long)]
    pub durable: bool,
    #[command(flatten)]
    pub store: crate::cli::runs::StoreArg,
    /// One run per row of FILE: JSON lines, or CSV with a header (`-` reads stdin).
    /// A row's keys are the flow's inputs; `--set` fills in what a row leaves out.
    /// With --durable, a rerun skips the rows whose run succeeded.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["input", "trace_file"])]
    pub each: Option<PathBuf>,
    /// With --each: runs at a time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: u32,
    /// With --each: requests in flight to one host, at most (default: --jobs), as `serve
    /// --max-inflight`; the rest wait their turn.
    #[arg(long, value_name = "N", requires = "each", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_inflight: Option<u32>,
    /// With --each: write the rows whose run did not succeed to this file, as JSON lines of the
    /// row's values, to run them again with `--each FILE` (secret inputs are left out).
    #[arg(long, value_name = "FILE.jsonl", requires = "each")]
    pub failed_rows: Option<PathBuf>,
    /// With --mock: every request must be the one the recording (`--record`) has, and no more.
    #[arg(long, requires = "mock")]
    pub strict: bool,
    /// Write every answer the run receives as a mock file, to replay the run offline with --mock.
    /// With --each, a folder: a file a row, `row-00042.mock.yaml`.
    #[arg(long, value_name = "FILE.mock.yaml", conflicts_with_all = ["mock", "dry_run"])]
    pub record: Option<PathBuf>,
    /// With --each: a JSONL trace file a run in this folder (`row-00042-<first input>.jsonl`).
    #[arg(long, value_name = "DIR", requires = "each")]
    pub trace_dir: Option<PathBuf>,
    /// With --each: at most this many requests a second, for the whole batch (`20` or `20/s`).
    #[arg(long, value_name = "N/s", value_parser = rate_arg, requires = "each")]
    pub rate: Option<f64>,
    /// Export the run's trace (each row's, with --each) as OpenTelemetry spans to this
    /// collector, over OTLP/HTTP: its base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` gives it
    /// (`/v1/traces` is added). The `OTEL_*` variables configure the rest, and alone turn it on.
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,
}

/// `20` or `20/s`: requests a second.
pub fn rate_arg(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches("/s");
    match number.parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Ok(n),
        _ => Err("a rate is requests a second, such as `20` or `20/s`".to_string()),
    }
}

pub async fn run_command(args: RunArgs, color: Colors) -> i32 {
    let flow = match load_flow(&args.flow, color) {
        Ok(flow) => flow,
        Err(code) => return code,
    };
    let mut inputs = match parse_inputs(&args) {
        Ok(i) => i,
        Err(diags) => {
            print_diagnostics(&diags, color);
            return EXIT_INVALID;
        }
    };
    // The mock first: a recording keeps its run's inputs, which a replay
    // uses unless `--input` gives a file of its own (`--set` wins over both).
    let mut mock = match &args.mock {
        Some(path) => match load_mock(&path.to_string_lossy(), &flow) {
            Ok(m) => Some(m),
            Err(diags) => {
                print_diagnostics(&diags, color);
                return EXIT_INVALID;
            }
        },
        None => None,
    };
    if inputs.file.is_none()
        && let Some((source, node)) = mock.as_ref().and_then(|m| m.inputs.clone())
    {
        let names: Vec<String> = node
            .as_map()
            .unwrap_or_default()
            .iter()
            .filter_map(|(k, _)| k.as_str().map(|k| format!("`{k}`")))
            .collect();
        eprintln!(
            "inputs from the recording `{}`: {} (`--set` changes one)",
            source.name,
            names.join(", ")
        );
        inputs.file = Some((source, node));
        inputs.file_by = crate::run::inputs::Giver::Operator;
        inputs.file_label = Some(format!("the recording `{}`", source_label(&args)));
    }
    let state = match initial_state(&flow, &inputs, &|var| std::env::var(var).ok()) {
        Ok(s) => s,
        Err(diags) => {
            print_diagnostics(&diags, color);
            return EXIT_INVALID;
        }
    };
    let recorded_run = mock.as_ref().and_then(|m| m.run.clone());
    let dry_run = args.dry_run || args.mock.is_some();
    if dry_run && args.durable {
        eprintln!("error: `--durable` keeps real runs; a dry run has nothing to resume");
        return EXIT_INVALID;
    }
    // In every mode: a short or plain-word placeholder garbles a dry run's
    // and a replay's output as surely as a real token's.
    print_diagnostics(&crate::run::inputs::secret_warnings(&flow, &state), color);
    let virtual_clock = Arc::new(VirtualClock::new(SystemTime::now()));
    let mut scripted = None;
    let system_clock = SystemClock::new();
    let (clock, transport): (&dyn Clock, Box<dyn Transport>) = if dry_run {
        let mock = mock.take().unwrap_or_default();
        scripted = Some(crate::run::signals::Scripted::new(mock.signals.clone()));
        (
            &*virtual_clock,
            Box::new({
                let replay = MockTransport::new(mock, virtual_clock.clone());
                if args.strict { replay.strict() } else { replay }
            }),
        )
    } else {
        match ReqwestTransport::new() {
            Ok(t) => (&system_clock, Box::new(t)),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_FAILED;
            }
        }
    };
    let file = match open_trace_file(args.trace_file.as_deref(), args.trace) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let look = Look {
        format: trace_format(args.trace),
        out: Style { color: color.out },
        err: Style { color: color.err },
        quiet: args.quiet,
    };
    let mut printer = Printer::new(look, file, dry_run);
    // A replay runs under the recorded run's id: the same trace and span ids.
    let run_id = recorded_run.unwrap_or_else(|| crate::run::trace::new_run_id(SystemTime::now()));
    let run_label = run_id.clone();
    let runs = if args.durable {
        match crate::cli::runs::open_store(&args.store.target()).await {
            Ok(runs) => Some(runs),
            Err(code) => return code,
        }
    } else {
        None
    };
    let checkpoints = runs.as_ref().map(|r| r.checkpoints(&run_id));
    let mut _held = None;
    if let (Some(runs), Some(checkpoints)) = (&runs, &checkpoints) {
        if let Err(e) = runs
            .create(
                &run_id,
                &flow,
                &state,
                SystemTime::now(),
                None,
                checkpoints.sealed(),
            )
            .await
        {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
        // This process holds the run while it lives; a resume waits for that.
        _held = Some(runs.hold(&run_id));
        eprintln!(
            "run {run_id} is durable: if it stops, `handoff resume {run_id}` goes on from its last step"
        );
    }
    let durable_id = args.durable.then(|| run_id.clone());
    let recording = args
        .record
        .as_ref()
        .map(|_| crate::run::record::Recording::new(&*transport));
    let sending: &dyn Transport = match &recording {
        Some(r) => r,
        None => &*transport,
    };
    let secrets_given = state.clone();
    let engine = Engine {
        run_id,
        flow: &flow,
        clock,
        transport: sending,
        dry_run,
        durable: checkpoints.as_ref().map(|c| crate::engine::Durable::new(c)),
        stop: None,
        tokens: None,
        traced: true,
        // A dry run's signals are the mock's; a durable run's come through its store.
        signals: match (&scripted, &runs) {
            (Some(s), _) => Some(s),
            (None, Some(r)) => Some(r),
            (None, None) => None,
        },
    };
    let result = run_live(&engine, state, &mut printer).await;
    if let (Some(path), Some(recording)) = (&args.record, &recording) {
        match &result {
            Some(r) => {
                // Every secret the run knew, those it received included.
                let redactor = crate::run::redact::Redactor::for_run(
                    &flow.literal_secrets,
                    &[&secrets_given, &r.state],
                );
                let text = recording.mock_text(
                    &run_label,
                    &flow.name,
                    &redactor,
                    &crate::run::inputs::recorded_inputs(&flow, &secrets_given),
                );
                match std::fs::write(path, text) {
                    Ok(()) => eprintln!(
                        "recorded the answers in `{}`; replay with `--mock {}`",
                        path.display(),
                        path.display()
                    ),
                    Err(e) => eprintln!(
                        "error: cannot write `{}`: {}",
                        path.display(),
                        crate::language::source::io_reason(&e)
                    ),
                }
            }
            // What it received may hold a secret it had not yet marked.
            None => eprintln!("the run was interrupted: no recording was written"),
        }
    }
    match result {
        Some(r) => exit_code(r.outcome.status),
        None => {
            if let Some(id) = durable_id {
                eprintln!("run {id} stopped; `handoff resume {id}` goes on from its last step");
            }
            EXIT_INTERRUPTED
        }
    }
}

/// The mock file's path, as given.
fn source_label(args: &RunArgs) -> String {
    args.mock
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn parse_inputs(args: &RunArgs) -> Result<Inputs, Vec<Diagnostic>> {
    // The command line is the operator's: it may set `env:` fields too.
    let mut inputs = Inputs {
        set: crate::run::inputs::parse_set(&args.set)?,
        set_by: crate::run::inputs::Giver::Operator,
        file_by: crate::run::inputs::Giver::Operator,
        ..Inputs::default()
    };
    if let Some(path) = &args.input {
        let source = read_source(&path.to_string_lossy()).map_err(|d| vec![d])?;
        let node = crate::run::inputs::parse_input_file(&source).map_err(|d| vec![d])?;
        inputs.file = Some((source, node));
    }
    Ok(inputs)
}
